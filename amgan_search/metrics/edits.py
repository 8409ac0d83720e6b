"""Edit quality against synthetic ground truth: what the paper could not measure on real photos.

For test scenes drawn from seeds training never saw, every attribute and every value other than the
scene's own is a target; the renderer draws the same scene with that value, a pixel-exact truth.
- accuracy: the evaluation classifier reads the edited attribute as the target value;
- truth accuracy: the grader that is no network (`metrics.truth`, against renders of the test
  scene itself) reads the edited attribute as the target value; None for an attribute it does
  not read (it reads TRUTH_ATTRIBUTES);
- fidelity: mean L1 of the edit to the true render, against the unedited input's L1 to it
  (reduction = 1 - edit / input: 1 is perfect, 0 is no better than not editing);
- where the edit's L1 lies: its sum split over the truly changed pixels, the rest of garment | arms,
  and the outside (the three add up to the L1 of the edit);
- preservation: mean absolute change of the edit outside garment | arms of both renders (the
  renderer guarantees no attribute changes a pixel there), images in [0, 1];
- attention IoU: alpha > 0.5 against the truly changed region, the pixels where the input render
  and the target render differ by more than CHANGE_THRESHOLD in some channel (noise is seeded by the
  scene alone, so identical elsewhere), restricted to garment | arms of either render.
The condition uses the scene's true attributes (as the paper uses the data set's labels), so the
numbers grade the generator, not the query classifier.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from amgan_search.images import resize_batch, to_tensor

CHANGE_THRESHOLD = 8 / 255
# Where the edit's L1 lies: l1_edit_<part> for each; the parts add up to l1_edit.
L1_PARTS = ("changed", "rest_of_figure", "outside")
# Test scenes are seeded from a SeedSequence of the given seed: 63-bit seeds that the catalog's
# consecutive training seeds do not reach.
SEED_SALT = 0xED17
# The attributes the non-network grader reads (`metrics.truth.grade`'s keys).
TRUTH_ATTRIBUTES = ("color", "sleeve")


def test_seeds(n: int, seed: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence([SEED_SALT, seed]).generate_state(n, np.uint64)
            >> np.uint64(1)]


def evaluate_edits(manipulator, eval_classifier, n: int = 100, seed: int = 777, size: int = 64,
                   batch_size: int = 50, progress: bool = True) -> dict[str, Any]:
    """Per attribute and averaged: accuracy, fidelity (L1, reduction), preservation, IoU."""
    from tqdm import tqdm

    from amgan_search.metrics.truth import References
    from amgan_search.nets.classifier import classifier_input
    from amgan_search.synthetic import render, sample_scene

    schema = manipulator.schema
    scenes = [sample_scene(s, schema) for s in test_seeds(n, seed)]
    renders = [render(sc, size) for sc in scenes]
    x_all = to_tensor([r[0] for r in renders])
    cur = torch.as_tensor(np.stack([schema.encode(sc.attributes) for sc in scenes]))
    jobs = [(j, v) for j, a in enumerate(schema.attributes) for v in range(len(a.values))]
    sums: dict[str, dict[str, float]] = {a.name: {} for a in schema.attributes}
    refs: dict[int, References] = {}  # the truth grader's renders of each scene, drawn once
    for j, v in tqdm(jobs, desc="edits", disable=not progress, dynamic_ncols=True):
        attr = schema.attributes[j]
        rows = [i for i in range(n) if int(cur[i, j]) != v]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            truth, masks = zip(*(render(scenes[i].with_attributes(**{attr.name: attr.values[v]}),
                                        size) for i in chunk))
            x_true, x_in = to_tensor(truth), x_all[chunk]
            x_star, alpha = _edit(manipulator, x_in, cur[chunk], j, v, size)
            with torch.no_grad():
                pred = eval_classifier.predict(classifier_input(eval_classifier, x_star))[0][:, j]
            outside = torch.as_tensor(np.stack([
                ~(renders[i][1]["garment"] | renders[i][1]["arms"] | m["garment"] | m["arms"])
                for i, m in zip(chunk, masks)]))[:, None]
            _grade(sums[attr.name], x_in, x_true, x_star, alpha, float((pred.cpu() == v).sum()),
                   outside)
            if attr.name in TRUTH_ATTRIBUTES:
                _add(sums[attr.name], "truth_correct", _truth_hits(
                    x_star, [scenes[i] for i in chunk], chunk, refs, attr.name, attr.values[v]))
        for ref in refs.values():  # one job's fabric renders: the memory stays one per scene
            ref.forget_fabrics()
    per_attribute = {name: _averages(s) for name, s in sums.items()}
    for name, r in per_attribute.items():
        r["truth_accuracy"] = (sums[name].get("truth_correct", 0) / max(r["n_edits"], 1)
                               if name in TRUTH_ATTRIBUTES else None)
    keys = [key for key in next(iter(per_attribute.values()))
            if key not in ("n_edits", "truth_accuracy")]
    mean = {key: float(np.mean([r[key] for r in per_attribute.values()])) for key in keys}
    truth = [r["truth_accuracy"] for r in per_attribute.values() if r["truth_accuracy"] is not None]
    mean["truth_accuracy"] = float(np.mean(truth)) if truth else None
    return {"method": manipulator.config.get("method"), "n_scenes": n, "seed": seed, "size": size,
            "per_attribute": per_attribute, "mean": mean}


def _grade(s: dict, x_in, x_true, x_star, alpha, correct: float, outside) -> None:
    """Add one chunk's sums to s: inputs, true renders and edits [B,3,S,S], alpha [B,1,S,S], how
    many edits the judge read as the target, and the pixels outside garment | arms [B,1,S,S]."""
    inside = ~outside
    changed = ((x_in - x_true).abs().amax(1, keepdim=True) > CHANGE_THRESHOLD) & inside
    att = alpha > 0.5
    _add(s, "n", len(x_in))
    _add(s, "correct", correct)
    err = (x_star - x_true).abs().mean(1, keepdim=True)  # the pixel's L1, channels averaged
    _add(s, "l1_edit", float(err.mean((1, 2, 3)).sum()))
    _add(s, "l1_input", float((x_in - x_true).abs().mean(1, keepdim=True)
                              .mean((1, 2, 3)).sum()))  # the same sums as the edit's
    for part, region in zip(L1_PARTS, (changed, inside & ~changed, outside)):
        _add(s, f"l1_edit_{part}", float((err * region).mean((1, 2, 3)).sum()))
    out_px = outside.expand_as(x_in).flatten(1).sum(1).clamp_min(1)
    _add(s, "preservation", float(((x_star - x_in).abs() * outside).flatten(1).sum(1)
                                  .div(out_px).sum()))
    inter = (att & changed).flatten(1).sum(1).float()
    union = (att | changed).flatten(1).sum(1).float()
    _add(s, "iou", float(torch.where(union > 0, inter / union.clamp_min(1),
                                     torch.ones_like(union)).sum()))


def to_uint8(x) -> np.ndarray:
    """Images [B,3,S,S] in [0, 1] -> uint8 [B,S,S,3], as a catalog would store them."""
    return (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8) \
        .permute(0, 2, 3, 1).numpy()


def _truth_hits(x_star, scenes, keys, refs: dict, attribute: str, value: str) -> float:
    """How many edits [B,3,S,S] of these scenes the non-network grader reads as `value`;
    refs caches each scene's references under its key."""
    from amgan_search.metrics.truth import References, grade_with

    hits = 0
    for image, scene, key in zip(to_uint8(x_star), scenes, keys):
        if key not in refs:
            refs[key] = References(scene, image.shape[0])
        hits += grade_with(image, refs[key])[attribute] == value
    return float(hits)


def _averages(s: dict) -> dict[str, float]:
    """One attribute's sums -> its means per edit (fidelity reduction from the summed L1s)."""
    k = max(s.get("n", 0), 1)
    return {
        "n_edits": int(s.get("n", 0)),
        "accuracy": s.get("correct", 0) / k,
        "l1_edit": s.get("l1_edit", 0) / k,
        "l1_input": s.get("l1_input", 0) / k,
        "fidelity_reduction": 1 - s.get("l1_edit", 0) / max(s.get("l1_input", 0), 1e-12),
        **{f"l1_edit_{part}": s.get(f"l1_edit_{part}", 0) / k for part in L1_PARTS},
        "preservation": s.get("preservation", 0) / k,
        "attention_iou": s.get("iou", 0) / k,
    }


def _add(d: dict, key: str, value: float) -> None:
    d[key] = d.get(key, 0.0) + value


def _edit(manipulator, x, labels, attribute, value, size):
    """The manipulator at its own size; results back at the render size."""
    x_star, alpha = manipulator.edit_batch(resize_batch(x, manipulator.size), labels, attribute,
                                           torch.full((x.size(0),), value, dtype=torch.long))
    return resize_batch(x_star.float().cpu(), size), resize_batch(alpha.float().cpu(), size)


def edit_grid(manipulator, n: int = 6, seed: int = 777, size: int = 64,
              values_per_attribute: int = 3) -> np.ndarray:
    """A picture of the test edits, uint8 [H, W, 3]: one column per scene, rows the input, then for
    a few target values of each attribute the true edit, the model's edit and its attention mask
    (targets equal to a scene's own value show the truth unchanged, as a check of preservation)."""
    from amgan_search.images import preview_values, tile_rows
    from amgan_search.synthetic import render, sample_scene

    schema = manipulator.schema
    scenes = [sample_scene(s, schema) for s in test_seeds(n, seed)]
    x = to_tensor([render(sc, size)[0] for sc in scenes])
    cur = torch.as_tensor(np.stack([schema.encode(sc.attributes) for sc in scenes]))
    rows = [x]
    for j, attr in enumerate(schema.attributes):
        for v in preview_values(len(attr.values), values_per_attribute):
            truth = to_tensor([render(sc.with_attributes(**{attr.name: attr.values[v]}), size)[0]
                               for sc in scenes])
            x_star, alpha = _edit(manipulator, x, cur, j, v, size)
            rows += [truth, x_star, alpha.expand(-1, 3, -1, -1)]
    return tile_rows(rows)


def markdown_table(results: dict[str, Any]) -> str:
    """One row per attribute and the mean."""
    head = ("| attribute | edits | accuracy | truth accuracy | L1 edit | L1 input "
            "| fidelity reduction | preservation | attention IoU |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    items = list(results["per_attribute"].items()) + [("**mean**", results["mean"])]
    for name, r in items:
        truth = r.get("truth_accuracy")
        truth = "n/a" if truth is None else f"{truth:.3f}"
        rows.append(f"| {name} | {r.get('n_edits', '')} | {r['accuracy']:.3f} | {truth} "
                    f"| {r['l1_edit']:.4f} "
                    f"| {r['l1_input']:.4f} | {r['fidelity_reduction']:.3f} "
                    f"| {r['preservation']:.4f} | {r['attention_iou']:.3f} |")
    title = (f"Edit quality of `{results['method']}` on {results['n_scenes']} synthetic test "
             f"scenes (seed {results['seed']}, {results['size']}x{results['size']})\n\n")
    return title + head + "\n".join(rows) + "\n"
