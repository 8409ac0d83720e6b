"""Edit quality against synthetic ground truth: what the paper could not measure on real photos.

For test scenes drawn from seeds training never saw, every attribute of the editor and every value
other than the scene's own is a target; the renderer draws the same scene with that value, a
pixel-exact truth. `evaluate_edits` grades each such edit and keeps one record per edit; the
summary per attribute is computed from the records (`summarize`), so a caller can recompute it
from a records file, or regroup the edits (by source value, by scene).

Per edit (a record):
- predicted: each CNN grader's reading of the edited attribute (`nets.classifier.read_attribute`:
  graders read attributes by name, so one of another schema grades too; None when it does not
  read that attribute); truth: the reading of the grader that is no network (`metrics.truth`,
  against renders of the test scene itself; it reads TRUTH_ATTRIBUTES): None for an attribute it
  does not read, and where it reads no value (a miss);
- l1_edit, l1_input: mean L1 of the edit, and of the unedited input, to the true render;
- l1_edit_changed, l1_edit_rest_of_figure, l1_edit_outside: where the edit's L1 lies, its sum split
  over the truly changed pixels, the rest of garment | arms, and the outside (they add up to
  l1_edit);
- preservation: mean absolute change of the edit outside garment | arms of both renders (the
  renderer guarantees no attribute changes a pixel there), images in [0, 1];
- iou: alpha > 0.5 against the truly changed region, the pixels where the input render and the
  target render differ by more than CHANGE_THRESHOLD in some channel (noise is seeded by the scene
  alone, so identical elsewhere), restricted to garment | arms of either render (1 when both are
  empty).
Per attribute (and their mean over attributes): accuracy {grader: share of edits it reads as the
target; None when it does not read the attribute}, truth accuracy (None for an attribute outside
TRUTH_ATTRIBUTES), the means of the floats above (iou as attention_iou), and fidelity
reduction 1 - sum(l1_edit) / sum(l1_input) (1 is perfect, 0 is no better than not editing).

The condition uses the scene's true attributes (as the paper uses the data set's labels), so the
numbers grade the generator, not the query classifier. Scenes may be drawn with more attributes
than the editor's (`scene_attributes`: the harder setting's patterned tops and visible necklines);
the edits stay over the editor's attributes. By default the editor edits the render shrunk to its
size and is graded on its output scaled back; `at_size` grades at the catalog's resolution, the
shopper's: scenes rendered at that size, the edit composed into the full photo the way the query
path composes it (`editors.edit_photos`), so pixels the attention leaves alone keep full detail.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from amgan_search.errors import UserError
from amgan_search.images import resize_batch, to_tensor, to_uint8
from amgan_search.schema import Schema, synthetic_schema

CHANGE_THRESHOLD = 8 / 255
# Where the edit's L1 lies: l1_edit_<part> for each; the parts add up to l1_edit.
L1_PARTS = ("changed", "rest_of_figure", "outside")
# The floats of a record, each the mean of its own edit: what `summarize` averages.
RECORD_FLOATS = ("l1_edit", "l1_input", *(f"l1_edit_{p}" for p in L1_PARTS), "preservation", "iou")
# The keys of a record, in order.
RECORD_KEYS = ("scene", "attribute", "source", "target", "predicted", "truth", *RECORD_FLOATS)
# Test scenes are seeded from a SeedSequence of the given seed: 63-bit seeds that the catalog's
# consecutive training seeds do not reach.
SEED_SALT = 0xED17
# The attributes the non-network grader reads (`metrics.truth.grade`'s keys).
TRUTH_ATTRIBUTES = ("color", "sleeve")


def is_records_file(path) -> bool:
    """Whether `path` holds records `evaluate_edits` wrote (a JSON line with a record's keys
    first), so a rerun replaces its own records file and nothing else."""
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and set(RECORD_KEYS) <= set(record)


def test_seeds(n: int, seed: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence([SEED_SALT, seed]).generate_state(n, np.uint64)
            >> np.uint64(1)]


def scene_schema(schema: Schema, scene_attributes: Sequence[str] | None = None) -> Schema:
    """The schema test scenes are drawn with: the editor's own (None), or the renderer's
    attributes `scene_attributes` in the renderer's order (`schema.synthetic_schema`), which must
    include the editor's; those keep the editor's values, so every scene's labels encode."""
    if scene_attributes is None:
        return schema
    drawn = synthetic_schema(list(scene_attributes))
    missing = [name for name in schema.names if name not in drawn.names]
    if missing:
        raise UserError(f"scene attributes must include the model's ({', '.join(schema.names)}); "
                        f"{missing[0]!r} is missing")
    return Schema.from_dict({a.name: schema.attribute(a.name).values if a.name in schema.names
                             else a.values for a in drawn.attributes})


def evaluate_edits(manipulator, graders: Mapping[str, Any], n: int = 100, seed: int = 777,
                   size: int = 64, batch_size: int = 50, progress: bool = True,
                   scene_attributes: Sequence[str] | None = None,
                   at_size: int | None = None) -> dict[str, Any]:
    """Grade every edit of n test scenes (see the module docstring): the records and, per
    attribute and averaged, accuracy per grader, truth accuracy, fidelity, preservation, IoU.

    `manipulator`: any `editors.Editor` with a schema (size None: it edits at the render size);
    `graders`: {name: classifier} (`registry.load_graders`; {} for none); `scene_attributes`: the
    attributes the scenes are drawn with (None: the editor's); `at_size`: render and grade at this
    size instead of `size`, the edit composed into the full-size photo.
    """
    from tqdm import tqdm

    from amgan_search.editors import edit_photos
    from amgan_search.metrics.truth import References
    from amgan_search.synthetic import render, sample_scene

    schema = manipulator.schema
    if schema is None:
        raise ValueError("evaluate_edits: the editor needs a schema (the attributes it edits)")
    drawn = scene_schema(schema, scene_attributes)
    size = int(at_size or size)  # the render size: the catalog's with at_size
    scenes = [sample_scene(s, drawn) for s in test_seeds(n, seed)]
    renders = [render(sc, size) for sc in scenes]
    x_all = to_tensor([r[0] for r in renders])
    # The condition holds only the editor's attributes; the others are part of the scene.
    cur = torch.as_tensor(np.stack([schema.encode({a: sc.attributes[a] for a in schema.names})
                                    for sc in scenes]))
    jobs = [(j, v) for j, a in enumerate(schema.attributes) for v in range(len(a.values))]
    records: list[dict[str, Any]] = []
    refs: dict[int, References] = {}  # the truth grader's renders of each scene, drawn once
    for j, v in tqdm(jobs, desc="edits", disable=not progress, dynamic_ncols=True):
        attr = schema.attributes[j]
        rows = [i for i in range(n) if int(cur[i, j]) != v]
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            truth, masks = zip(*(render(scenes[i].with_attributes(**{attr.name: attr.values[v]}),
                                        size) for i in chunk))
            x_true, x_in = to_tensor(truth), x_all[chunk]
            target = torch.full((len(chunk),), v, dtype=torch.long)
            if at_size:
                x_star, alpha = edit_photos(manipulator, [renders[i][0] for i in chunk],
                                            cur[chunk], j, target)
            else:
                x_star, alpha = _edit(manipulator, x_in, cur[chunk], j, v, size)
            outside = torch.as_tensor(np.stack([
                ~(renders[i][1]["garment"] | renders[i][1]["arms"] | m["garment"] | m["arms"])
                for i, m in zip(chunk, masks)]))[:, None]
            graded = _grade(x_in, x_true, x_star, alpha, outside)
            predicted = _read_graders(graders, x_star, attr.name)
            truth_read = (_truth_reads(x_star, [scenes[i] for i in chunk], chunk, refs, attr.name)
                          if attr.name in TRUTH_ATTRIBUTES else [None] * len(chunk))
            for k, i in enumerate(chunk):
                records.append({
                    "scene": i, "attribute": attr.name, "source": scenes[i].attributes[attr.name],
                    "target": attr.values[v],
                    "predicted": {name: reads[k] for name, reads in predicted.items()},
                    "truth": truth_read[k], **{key: graded[key][k] for key in RECORD_FLOATS}})
        for ref in refs.values():  # one job's fabric renders: the memory stays one per scene
            ref.forget_fabrics()
    summary = summarize(records, schema.names, list(graders))
    return {"method": (getattr(manipulator, "config", None) or {}).get("method"),
            "n_scenes": n, "seed": seed, "size": size, "at_size": at_size,
            "scene_attributes": drawn.names, "graders": list(graders), **summary,
            "truth_score": truth_score(summary), "records": records}


def truth_score(summary: Mapping[str, Any]) -> float:
    """One number for the edits by the truth alone, what a training run picks checkpoints by
    (`train.validation`): the mean, over the attributes the truth grader reads, of (truth
    accuracy + fidelity reduction clipped to [0, 1]) / 2; 0 when it reads none. Accuracy alone
    would reward an edit that repaints the whole photo; fidelity penalises every pixel changed
    that the true edit leaves alone."""
    parts = [(r["truth_accuracy"] + min(max(r["fidelity_reduction"], 0.0), 1.0)) / 2
             for r in summary["per_attribute"].values() if r.get("truth_accuracy") is not None]
    return float(np.mean(parts)) if parts else 0.0


def summarize(records: Sequence[Mapping[str, Any]], attributes: Sequence[str] | None = None,
              graders: Sequence[str] | None = None) -> dict[str, dict]:
    """Records of `evaluate_edits` -> {"per_attribute": {name: summary}, "mean": summary over the
    attributes}. `attributes` and `graders` default to those the records name, in their order."""
    if attributes is None:
        attributes = list(dict.fromkeys(r["attribute"] for r in records))
    if graders is None:
        graders = list(dict.fromkeys(g for r in records for g in r["predicted"]))
    per_attribute = {name: _attribute_summary(name, [r for r in records
                                                     if r["attribute"] == name], graders)
                     for name in attributes}
    rows = list(per_attribute.values())
    mean: dict[str, Any] = {"accuracy": {g: _mean_known([r["accuracy"][g] for r in rows])
                                         for g in graders}}
    for key in ("l1_edit", "l1_input", "fidelity_reduction", *(f"l1_edit_{p}" for p in L1_PARTS),
                "preservation", "attention_iou"):
        mean[key] = float(np.mean([r[key] for r in rows])) if rows else 0.0
    mean["truth_accuracy"] = _mean_known([r["truth_accuracy"] for r in rows])
    return {"per_attribute": per_attribute, "mean": mean}


def _attribute_summary(name: str, records: Sequence[Mapping[str, Any]],
                       graders: Sequence[str]) -> dict:
    """One attribute's edits -> n_edits, accuracy {grader: share}, the records' means, fidelity
    reduction from the summed L1s, truth accuracy (None where no edit has a truth reading)."""
    k = max(len(records), 1)
    total = {key: sum(r[key] for r in records) for key in RECORD_FLOATS}
    return {
        "n_edits": len(records),
        "accuracy": {g: _hits([r["predicted"].get(g) for r in records], records) for g in graders},
        "l1_edit": total["l1_edit"] / k,
        "l1_input": total["l1_input"] / k,
        "fidelity_reduction": 1 - total["l1_edit"] / max(total["l1_input"], 1e-12),
        **{f"l1_edit_{part}": total[f"l1_edit_{part}"] / k for part in L1_PARTS},
        "preservation": total["preservation"] / k,
        "attention_iou": total["iou"] / k,
        # None reads no value ("no color": a miss); only an attribute it never reads has none.
        "truth_accuracy": (_hits([r["truth"] for r in records], records, always=True)
                           if name in TRUTH_ATTRIBUTES else None),
    }


def _hits(reads: Sequence[str | None], records: Sequence[Mapping[str, Any]],
          always: bool = False) -> float | None:
    """The share of edits read as their target (0 without edits); None when every read is None
    (a CNN grader that does not know the attribute) unless `always`."""
    if not always and records and all(read is None for read in reads):
        return None
    return sum(read == r["target"] for read, r in zip(reads, records)) / max(len(records), 1)


def _mean_known(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _read_graders(graders: Mapping[str, Any], x_star, attribute: str) -> dict[str, list]:
    """{grader: its reading of `attribute` on each edit (None: it does not read it)}."""
    from amgan_search.nets.classifier import read_attribute

    with torch.no_grad():
        return {name: read_attribute(g, x_star, attribute) for name, g in graders.items()}


def _grade(x_in, x_true, x_star, alpha, outside) -> dict[str, list[float]]:
    """Each edit's RECORD_FLOATS: inputs, true renders and edits [B,3,S,S], alpha [B,1,S,S] and
    the pixels outside garment | arms [B,1,S,S] -> {name: one float per edit}."""
    inside = ~outside
    changed = ((x_in - x_true).abs().amax(1, keepdim=True) > CHANGE_THRESHOLD) & inside
    att = alpha > 0.5
    err = (x_star - x_true).abs().mean(1, keepdim=True)  # the pixel's L1, channels averaged
    out = {"l1_edit": err.mean((1, 2, 3)),
           "l1_input": (x_in - x_true).abs().mean(1, keepdim=True).mean((1, 2, 3))}
    for part, region in zip(L1_PARTS, (changed, inside & ~changed, outside)):
        out[f"l1_edit_{part}"] = (err * region).mean((1, 2, 3))
    out_px = outside.expand_as(x_in).flatten(1).sum(1).clamp_min(1)
    out["preservation"] = ((x_star - x_in).abs() * outside).flatten(1).sum(1).div(out_px)
    inter = (att & changed).flatten(1).sum(1).float()
    union = (att | changed).flatten(1).sum(1).float()
    out["iou"] = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return {key: [float(v) for v in values.tolist()] for key, values in out.items()}


def _truth_reads(x_star, scenes, keys, refs: dict, attribute: str) -> list[str]:
    """The non-network grader's reading of `attribute` on edits [B,3,S,S] of these scenes;
    refs caches each scene's references under its key."""
    from amgan_search.metrics.truth import References, grade_with

    reads = []
    for image, scene, key in zip(to_uint8(x_star), scenes, keys):
        if key not in refs:
            refs[key] = References(scene, image.shape[0])
        reads.append(grade_with(image, refs[key])[attribute])
    return reads


def _edit(manipulator, x, labels, attribute, value, size):
    """The manipulator at its own size (an editor of any size: the render's); results back at
    the render size."""
    own = manipulator.size or size
    x_star, alpha = manipulator.edit_batch(resize_batch(x, own), labels, attribute,
                                           torch.full((x.size(0),), value, dtype=torch.long))
    return resize_batch(x_star.float().cpu(), size), resize_batch(alpha.float().cpu(), size)


def edit_grid(manipulator, n: int = 6, seed: int = 777, size: int = 64,
              values_per_attribute: int = 3, scene_attributes: Sequence[str] | None = None,
              at_size: int | None = None) -> np.ndarray:
    """A picture of the test edits, uint8 [H, W, 3]: one column per scene, rows the input, then for
    a few target values of each attribute the true edit, the model's edit and its attention mask
    (targets equal to a scene's own value show the truth unchanged, as a check of preservation).
    The scenes and edits are those of `evaluate_edits` with the same arguments."""
    from amgan_search.editors import edit_photos
    from amgan_search.images import preview_values, tile_rows
    from amgan_search.synthetic import render, sample_scene

    schema = manipulator.schema
    size = int(at_size or size)
    scenes = [sample_scene(s, scene_schema(schema, scene_attributes)) for s in test_seeds(n, seed)]
    photos = [render(sc, size)[0] for sc in scenes]
    x = to_tensor(photos)
    cur = torch.as_tensor(np.stack([schema.encode({a: sc.attributes[a] for a in schema.names})
                                    for sc in scenes]))
    rows = [x]
    for j, attr in enumerate(schema.attributes):
        for v in preview_values(len(attr.values), values_per_attribute):
            truth = to_tensor([render(sc.with_attributes(**{attr.name: attr.values[v]}), size)[0]
                               for sc in scenes])
            x_star, alpha = (edit_photos(manipulator, photos, cur, j,
                                         torch.full((n,), v, dtype=torch.long)) if at_size
                             else _edit(manipulator, x, cur, j, v, size))
            rows += [truth, x_star, alpha.expand(-1, 3, -1, -1)]
    return tile_rows(rows)


def markdown_table(results: dict[str, Any]) -> str:
    """One row per attribute and the mean: an accuracy column per CNN grader, then the truth
    grader's ("n/a": the grader does not read that attribute)."""
    graders = list(results.get("graders", ()))
    head = ("| attribute | edits | " + "".join(f"accuracy ({g}) | " for g in graders)
            + "truth accuracy | L1 edit | L1 input | fidelity reduction | preservation "
            "| attention IoU |\n|" + "---|" * (8 + len(graders)) + "\n")
    rows = []
    items = list(results["per_attribute"].items()) + [("**mean**", results["mean"])]
    for name, r in items:
        reads = [r["accuracy"].get(g) for g in graders] + [r.get("truth_accuracy")]
        cells = "".join(f"{_share(a)} | " for a in reads)
        rows.append(f"| {name} | {r.get('n_edits', '')} | {cells}{r['l1_edit']:.4f} "
                    f"| {r['l1_input']:.4f} | {r['fidelity_reduction']:.3f} "
                    f"| {r['preservation']:.4f} | {r['attention_iou']:.3f} |")
    size = results["size"]
    where = (f"{size}x{size}, composed at the catalog's resolution" if results.get("at_size")
             else f"{size}x{size}")
    drawn = results.get("scene_attributes") or list(results["per_attribute"])
    drawn = ("" if drawn == list(results["per_attribute"])
             else f", scenes drawn with {', '.join(drawn)}")
    title = (f"Edit quality of `{results['method']}` on {results['n_scenes']} synthetic test "
             f"scenes (seed {results['seed']}, {where}{drawn})\n\n")
    score = (f"\nScore by the truth (what `train amgan --val-scenes` picks checkpoints by): "
             f"{results['truth_score']:.4f}\n" if "truth_score" in results else "")
    return title + head + "\n".join(rows) + "\n" + score


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
