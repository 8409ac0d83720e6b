"""Checkpoints picked by the truth, never by a network the generator trained against.

A GAN's losses are read by networks (D's classification head, the CNN of the perceptual loss),
and a generator can please them with edits a person rejects. On a synthetic catalog the truth is
known, so a run can grade its own checkpoints against it: at every checkpoint the generator edits
`val_scenes` scenes drawn from VAL_SEED (never the test scenes of `evaluate-edits`, seed 777, nor
a catalog's consecutive seeds), every attribute toward every other value, and `metrics.edits`
grades the edits with the grader that is no network and against the renderer's true edits.

The score (our choice; the paper picks no checkpoint) is `metrics.edits.truth_score`: the mean,
over the attributes that grader reads, of (truth accuracy + fidelity reduction clipped to
[0, 1]) / 2. Accuracy alone would reward an edit that repaints the whole photo; fidelity (how much
nearer the true edit than the input the edit ends) penalises every pixel changed that the truth
did not change. Both are in [0, 1], and a checkpoint that edits nothing scores 0.
`evaluate-edits --seed 4242 --n 32 --graders none` grades an exported snapshot the same way, and
`train validation RUN` prints a run's records (`run_validation`, `validation_table`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from amgan_search.io import read_json, read_jsonl
from amgan_search.schema import Schema, synthetic_schema
from amgan_search.train.loop import LOG

# The validation scenes' seed (`metrics.edits.test_seeds`): not the test scenes' 777.
VAL_SEED = 4242
# The run's best checkpoint by the score, as a model folder the editors load.
BEST = "best"


def check_validation(schema: Schema, scene_attributes: Sequence[str] | None) -> None:
    """A UserError unless the renderer can draw scenes of this schema: its attributes are the
    renderer's, with the renderer's values (a synthetic catalog's)."""
    from amgan_search.editors import check_sub_schema
    from amgan_search.metrics.edits import TRUTH_ATTRIBUTES

    try:  # the scenes' attributes are the renderer's and hold the model's, with its values
        check_sub_schema(schema, synthetic_schema(list(scene_attributes or schema.names)))
    except UserError as exc:
        raise UserError(f"validation grades against the synthetic renderer, and this catalog's "
                        f"attributes are not its: {exc}") from None
    if not set(schema.names) & set(TRUTH_ATTRIBUTES):
        raise UserError(f"validation needs an attribute the truth grader reads "
                        f"({', '.join(TRUTH_ATTRIBUTES)}); the catalog has "
                        f"{', '.join(schema.names)}")


def validation_record(results: Mapping[str, Any]) -> dict:
    """`evaluate_edits`'s results -> what a run logs of them: the score and, per attribute, the
    truth accuracy, fidelity reduction and preservation."""
    return {"score": round(results["truth_score"], 5), "scenes": results["n_scenes"],
            "seed": results["seed"], "per_attribute": {
                name: {"truth_accuracy": r["truth_accuracy"],
                       "fidelity_reduction": round(r["fidelity_reduction"], 5),
                       "preservation": round(r["preservation"], 5)}
                for name, r in results["per_attribute"].items()}}


def validate(net, schema: Schema, size: int, classifier, method: str, n: int,
             scene_attributes: Sequence[str] | None = None, seed: int = VAL_SEED) -> dict:
    """Grade a generator being trained (an `EditNet`, DDP-wrapped or not, left as it was) on n
    validation scenes; `validation_record` of the result. Torch's random state is restored
    afterwards, so a run that validates draws the same batches as one that does not."""
    from amgan_search.editors import Manipulator
    from amgan_search.metrics.edits import evaluate_edits

    net = getattr(net, "module", net)
    device = next(net.parameters()).device
    editor = Manipulator(copy.deepcopy(net).float(), schema, size, classifier, {"method": method},
                         str(device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        results = evaluate_edits(editor, {}, n=n, seed=seed, size=size, progress=False,
                                 scene_attributes=scene_attributes)
    return validation_record(results)


def run_validation(run_dir: str | Path) -> tuple[list[dict], int | None]:
    """A run's validation records from its log.jsonl, one per checkpoint in iteration order (a
    resumed run's newest record of an iteration), and the step its best/ model holds (None: no
    best/ yet). A UserError when the run logged none (trained without --val-scenes)."""
    run = Path(run_dir)
    log = run / LOG
    if not log.is_file():
        raise UserError(f"{run}: no log.jsonl (not a training run directory)")
    by_step = {r["iter"]: r for r in read_jsonl(log) if r.get("event") == "validation"}
    if not by_step:
        raise UserError(f"{run}: no validation records (train amgan --val-scenes N logs them)")
    return [by_step[k] for k in sorted(by_step)], picked_by(run).get("step")


def picked_by(run_dir: str | Path) -> dict:
    """What the run's best/ model records of its pick (step, score, ...); {} without best/."""
    path = Path(run_dir) / BEST / ckpt.CONFIG
    return (read_json(path).get("picked_by") or {}) if path.is_file() else {}


def validation_table(records: Sequence[Mapping], best_step: int | None) -> str:
    """Markdown: per checkpoint the score and, per attribute, truth accuracy / fidelity
    reduction / preservation; the best/ checkpoint in bold."""
    names = list(records[0]["per_attribute"])
    head = ["iteration", "score"] + [f"{n}: truth / fidelity / preservation" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        cells = [str(r["iter"]), f"{r['score']:.3f}"] + [
            "{truth_accuracy:.3f} / {fidelity_reduction:.3f} / {preservation:.4f}".format(
                **r["per_attribute"][n]) if n in r["per_attribute"] else "-" for n in names]
        if r["iter"] == best_step:
            cells[:2] = [f"**{c}**" for c in cells[:2]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
