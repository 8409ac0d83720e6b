"""Can the generator draw the edits at all, or is it never asked to?
python experiments/supervised_probe.py MODEL CATALOG STEPS [SCENE_ATTRIBUTES]
trains a fresh generator of MODEL's architecture (widths, blocks, attention head, schema; seed 0)
on the training scenes of the synthetic CATALOG (the scenes its run trained on) with one loss, the
mean L1 of the composed edit x* = alpha*z + (1-alpha)*x to the true edit the renderer draws: a
pairing no real data set has, so this is a bound on what the architecture can learn, not a method.
Each step takes 16 photos, each with one attribute of the editor and a target value other than its
own, both uniform (Adam, lr 1e-4, betas 0.5/0.999: the trainer's). At each of STEPS (comma
separated, e.g. 500,1700: 1,700 is the G updates of 8,500 AMGAN iterations at n_critic 5) the 50
test scenes of evaluate-edits (seed 777) are edited and graded by the truth and the shipped
evaluation classifier; records and table go to docs/results/experiments/supervised-STEP.jsonl.gz / .md, and
one row per step to supervised_probe.jsonl. The weights are kept in runs/e16/supervised/ (not
shipped)."""
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from amgan_search.images import to_tensor
from amgan_search.io import atomic_path, write_text
from amgan_search.metrics.edits import evaluate_edits, markdown_table, scene_schema, summarize
from amgan_search.nets.amgan import EditNet
from amgan_search.registry import load_graders, load_model
from amgan_search.synthetic import render
from amgan_search.synthetic.catalog import load_scene_table
from experiment import RESULTS, append_row, arguments, write_records  # this folder's scripts
from sleeve_directions import shortens

SEED, TEST_SEED, N_TEST, BATCH = 0, 777, 50, 16
KEEP = Path("runs/e16/supervised")


def batch(rng: np.random.Generator, scenes: list, schema, size: int):
    """16 training photos, each with one attribute set to another value: (x, condition, truth)."""
    picks = rng.choice(len(scenes), BATCH)
    photos, truths, targets, attributes = [], [], [], []
    for i in picks:
        scene = scenes[i]
        j = int(rng.integers(len(schema.attributes)))
        attr = schema.attributes[j]
        own = attr.values.index(scene.attributes[attr.name])
        v = int(rng.choice([k for k in range(len(attr.values)) if k != own]))
        labels = schema.encode({a: scene.attributes[a] for a in schema.names})
        labels[j] = v
        photos.append(render(scene, size)[0])
        truths.append(render(scene.with_attributes(**{attr.name: attr.values[v]}), size)[0])
        targets.append(labels)
        attributes.append(j)
    condition = torch.cat([schema.condition(torch.as_tensor(t[None]), j)
                           for t, j in zip(targets, attributes)])
    return to_tensor(photos), condition, to_tensor(truths)


def grade(model, graders, step: int, scene_attributes) -> dict:
    """evaluate-edits on the 50 test scenes; records and table written; the summary row."""
    results = evaluate_edits(model, graders, n=N_TEST, seed=TEST_SEED, size=model.size,
                             progress=False, scene_attributes=scene_attributes)
    name = f"supervised-{step}"
    write_records(name, results["records"])
    write_text(RESULTS / f"{name}.md", markdown_table(results))
    row = {"step": step, "truth_score": round(results["truth_score"], 3)}
    for part, keep in (("color", lambda r: r["attribute"] == "color"),
                       ("sleeve", lambda r: r["attribute"] == "sleeve"),
                       ("sleeve, shorter", shortens),
                       ("sleeve, longer", lambda r: r["attribute"] == "sleeve" and not shortens(r))):
        rs = [r for r in results["records"] if keep(r)]
        (summary,) = summarize(rs)["per_attribute"].values()  # one attribute per part
        row[part] = {"edits": len(rs), "truth": round(summary["truth_accuracy"], 3),
                     "eval": round(summary["accuracy"]["eval"], 3)}
    for a in ("color", "sleeve"):
        row[f"{a} fidelity"] = round(results["per_attribute"][a]["fidelity_reduction"], 3)
    row["preservation"] = round(results["mean"]["preservation"], 4)
    return row


def main(model_dir: str, catalog: str, steps: list[int], scene_attributes) -> None:
    model = load_model(model_dir, "editor", "cpu")  # its architecture, schema and query classifier
    schema, size = model.schema, model.size
    scenes = [row.scene for row in load_scene_table(catalog) if row.split == "train"]
    scene_schema(schema, scene_attributes)  # the scenes must carry the editor's attributes
    torch.manual_seed(SEED)
    net = EditNet.from_config(model.config)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.5, 0.999))
    rng = np.random.default_rng(SEED)
    graders = load_graders("eval")
    KEEP.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for step in range(1, max(steps) + 1):
        x, condition, truth = batch(rng, scenes, schema, size)
        x_star, _, _ = net(x, condition)
        loss = (x_star - truth).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step} L1 {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
        if step in steps:
            with atomic_path(KEEP / f"step-{step}.safetensors") as tmp:
                save_file(net.state_dict(), str(tmp))
            model.net.load_state_dict(net.state_dict())  # the editor's own copy, in eval mode
            row = {"model": model_dir, "catalog": catalog, "scenes": scene_attributes,
                   **grade(model, graders, step, scene_attributes)}
            append_row("supervised_probe.jsonl", row)


if __name__ == "__main__":
    args = arguments(__doc__, 3, 4)
    torch.set_num_threads(1)
    main(args[0], args[1], [int(s) for s in args[2].split(",")],
         args[3].split(",") if len(args) > 3 else None)
