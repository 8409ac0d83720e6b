"""The paper's whole comparison as one table: every method's accuracy, retrieval and edit quality,
each number with a 95% interval over queries (`comparison.json`, `comparison.md`,
`comparison.png`).

Inputs are records, so the table is a pure function of what the runs wrote:
- the benchmark's query records (`evaluate.benchmark`): one per (query image, edited attribute,
  target vector) and method, with each CNN grader's reading ("predicted"), the reading of the
  grader that is no network ("truth") and the ids retrieved;
- the edit records of each generator (`metrics.edits.evaluate_edits`): one per (scene, attribute,
  target value) with the L1s, preservation and attention IoU against the renderer's truth. `real`
  and `oracle` edit nothing a generator would, so they have none.
Intervals (`metrics.intervals`) resample whole query images for the benchmark's numbers and whole
scenes for the edits' numbers: the targets of one image, the edits of one scene, are not
independent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from amgan_search.metrics.intervals import NONE, interval, ratio_interval
from amgan_search.metrics.retrieval import WILDCARD, ranking_scores, record_readings, table_k
from amgan_search.schema import Schema

COMPARISON_JSON, COMPARISON_MD = "comparison.json", "comparison.md"
COMPARISON_PNG = "comparison.png"
TRUTH = "truth"  # the grader that is no network, beside the CNN graders' names
BOUNDS = {"real": "0.5", "oracle": "C2"}  # the floor and the ceiling: their lines in the plot


# -- intervals as JSON ---------------------------------------------------------------------------

def as_dict(iv) -> dict | None:
    """(estimate, low, high) -> {"estimate", "low", "high"}; None when there is no estimate."""
    return None if iv is None or iv[0] is None else dict(zip(("estimate", "low", "high"), iv))


class _Bootstrap:
    """The bootstrap settings every number of one table shares."""

    def __init__(self, n_boot: int = 1000, seed: int = 0, level: float = 0.95):
        self.kw = {"n_boot": n_boot, "seed": seed, "level": level}

    def mean(self, values, groups) -> dict | None:
        return as_dict(interval(values, groups=groups, **self.kw) if len(values) else NONE)

    def of(self, rows, statistic: Callable, groups) -> dict | None:
        return as_dict(interval(rows, statistic=statistic, groups=groups, **self.kw)
                       if len(rows) else NONE)

    def ratio(self, num, den, groups) -> dict | None:
        return as_dict(ratio_interval(num, den, groups=groups, **self.kw))


# -- accuracy of the edits -------------------------------------------------------------------------

def wanted_value(record: dict, schema: Schema) -> str:
    """The target value's name of the record's edited attribute."""
    j = schema.position(record["attribute"])
    return schema.attributes[j].values[int(record["target"][j])]


def _reading(record: dict, grader: str, schema: Schema) -> str | None:
    """The grader's reading of the record's edited attribute (None: not read, or unreadable);
    a CNN grader's through `record_readings`, which also reads the records of old runs."""
    if grader == TRUTH:
        return (record.get(TRUTH) or {}).get(record["attribute"])
    return record_readings(record, schema).get(grader)


def _reads(record: dict, grader: str, schema: Schema) -> bool:
    """Whether the grader reads the record's edited attribute at all. The truth grader names
    every attribute it reads, with null where an image is unreadable (a wrong reading); a CNN
    grader says null only for an attribute it was not trained on."""
    if grader == TRUTH:
        return record["attribute"] in (record.get(TRUTH) or {})
    return _reading(record, grader, schema) is not None


def _mean_over_attributes(n_attributes: int) -> Callable[[np.ndarray], float]:
    """rows [n, 2] of (correct, attribute number) -> the mean of the per-attribute accuracies
    (each attribute counts once, as in the paper's tables); NaN for a draw that lacks one."""
    def statistic(rows: np.ndarray) -> float:
        per = [rows[rows[:, 1] == a, 0] for a in range(n_attributes)]
        return float(np.mean([p.mean() for p in per])) if all(len(p) for p in per) else np.nan

    return statistic


def accuracy(records: Sequence[dict], schema: Schema, grader: str, boot: _Bootstrap) -> dict | None:
    """{attribute: interval, "mean": interval} of how often `grader` read the target value.

    An attribute the grader never reads in these records (`_reads`: a CNN grader without that
    attribute) is left out; where it reads some, a null reading counts as wrong. None when the
    grader read nothing at all.
    """
    attributes = [a for a in schema.names if any(
        r["attribute"] == a and _reads(r, grader, schema) for r in records)]
    if not attributes:
        return None
    mine = [r for r in records if r["attribute"] in attributes]
    correct = np.array([_reading(r, grader, schema) == wanted_value(r, schema) for r in mine],
                       float)
    which = np.array([attributes.index(r["attribute"]) for r in mine], float)
    queries = np.array([str(r["query"]) for r in mine])
    out = {a: boot.mean(correct[which == i], queries[which == i])
           for i, a in enumerate(attributes)}
    out["mean"] = boot.of(np.column_stack([correct, which]), _mean_over_attributes(len(attributes)),
                          queries)
    return out


# -- retrieval -------------------------------------------------------------------------------------

def chance_topk(matches: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """Per target: the chance that k results drawn at random from `gallery` items, `matches` of
    which have the whole target vector, hold one of them (1 - C(g - m, k) / C(g, k))."""
    none = np.ones(len(matches))
    for i in range(k):
        none *= np.clip((gallery - matches - i) / np.maximum(gallery - i, 1), 0, 1)
    return 1 - none


def retrieval(records: Sequence[dict], gallery_ids: Sequence, gallery_labels: np.ndarray,
              ks: Sequence[int], boot: _Bootstrap, missing: str = WILDCARD,
              own_item: str = "exclude") -> dict:
    """Top-k accuracy for every k, both NDCGs (ADDE's and our graded one) and MRR at the table's
    k, over the kept queries (some gallery item other than the query's own has the target
    vector), and the chance level. `own_item` "keep": the query's own item stays in the gallery
    (ADDE's protocol)."""
    ks = list(ks)
    tk = table_k(ks)
    targets = np.array([r["target"] for r in records], dtype=np.int64).reshape(len(records), -1)
    own = [str(r["query"]) for r in records]
    scores = ranking_scores(targets, [r["retrieved"] for r in records], gallery_ids,
                            gallery_labels, ks, own if own_item == "exclude" else None, missing)
    kept = scores["kept"]
    queries = np.array(own)[kept]
    in_gallery = {str(i) for i in gallery_ids} if own_item == "exclude" else set()
    size = len(gallery_ids) - np.array([q in in_gallery for q in own], dtype=np.int64)
    matches = scores["matches"][kept]
    return {
        "records": len(records),
        "kept": int(kept.sum()),
        "topk": {str(k): boot.mean(scores["hits"][kept, j].astype(float), queries)
                 for j, k in enumerate(ks)},
        f"ndcg@{tk}": boot.mean(scores["ndcg"][kept, ks.index(tk)], queries),
        f"adde_ndcg@{tk}": boot.mean(scores["adde_ndcg"][kept, ks.index(tk)], queries),
        "mrr": boot.mean(scores["rr"][kept], queries),
        "matches_per_target": float(matches.mean()) if len(matches) else None,
        f"chance_top{tk}": (float(chance_topk(matches, size[kept], tk).mean())
                            if len(matches) else None),
    }


# -- edit quality ----------------------------------------------------------------------------------

def edit_quality(records: Sequence[dict], boot: _Bootstrap) -> dict:
    """Fidelity reduction (1 - sum L1 edit / sum L1 input), preservation and attention IoU of a
    generator's edit records, resampled by scene; None each without records."""
    if not records:
        return {"edits": 0, "scenes": 0, "fidelity_reduction": None, "preservation": None,
                "attention_iou": None}
    scenes = np.array([str(r["scene"]) for r in records])
    column = {key: np.array([float(r[key]) for r in records])
              for key in ("l1_edit", "l1_input", "preservation", "iou")}
    return {
        "edits": len(records),
        "scenes": len(set(scenes.tolist())),
        "fidelity_reduction": boot.ratio(column["l1_input"] - column["l1_edit"],
                                         column["l1_input"], scenes),
        "preservation": boot.mean(column["preservation"], scenes),
        "attention_iou": boot.mean(column["iou"], scenes),
    }


# -- the table -------------------------------------------------------------------------------------

def method_order(benchmark_records: Sequence[dict], edit_records_by_method: Mapping) -> list[str]:
    """Methods in the order they first appear in the benchmark, then those with edits only."""
    order = list(dict.fromkeys(r["method"] for r in benchmark_records))
    return order + [m for m in edit_records_by_method if m not in order]


def method_entry(records: Sequence[dict], edits: Sequence[dict] | None, schema: Schema,
                 ks: Sequence[int], graders: Sequence[str], gallery: tuple, boot: _Bootstrap,
                 missing: str = WILDCARD, own_item: str = "exclude") -> dict:
    """One method's row: accuracy by every grader and the truth grader, retrieval, edit quality."""
    entry = {"queries": len({str(r["query"]) for r in records}),
             "accuracy": {g: accuracy(records, schema, g, boot) for g in graders},
             "truth_accuracy": accuracy(records, schema, TRUTH, boot)}
    if records:
        entry.update(retrieval(records, *gallery, ks, boot, missing, own_item))
    entry.update(edit_quality(edits or [], boot))
    entry["has_edits"] = edits is not None
    return entry


def comparison_table(benchmark_records: Sequence[dict],
                     edit_records_by_method: Mapping[str, Sequence[dict]],
                     schema: Schema, ks: Sequence[int], graders: Sequence[str], *,
                     gallery_ids: Sequence, gallery_labels: np.ndarray,
                     methods: Sequence[str] | None = None, missing: str = WILDCARD,
                     own_item: str = "exclude", run: Mapping | None = None, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """Every method's numbers, each {"estimate", "low", "high"} (None where not measured).

    `schema` is the index's (the records' target vectors are in its order); `gallery_ids` and
    `gallery_labels` are the index's items, what the queries searched; `run` (the step, the
    settings, the commands) is kept as it is for the report.
    """
    boot = _Bootstrap(n_boot, seed, level)
    by_method: dict[str, list[dict]] = {}
    for r in benchmark_records:
        by_method.setdefault(r["method"], []).append(r)
    names = list(methods) if methods is not None else method_order(benchmark_records,
                                                                   edit_records_by_method)
    gallery = (list(gallery_ids), np.asarray(gallery_labels))
    rows = {m: method_entry(by_method.get(m, []), edit_records_by_method.get(m), schema, ks,
                            graders, gallery, boot, missing, own_item) for m in names}
    first = next((e for e in rows.values() if e.get("matches_per_target") is not None), {})
    tk = table_k(ks)
    scenes = {str(r["scene"]) for recs in edit_records_by_method.values() for r in recs}
    return {
        "ks": list(ks), "table_k": tk, "graders": list(graders), "schema": schema.to_dict(),
        "interval": {"level": level, "n_boot": n_boot, "seed": seed,
                     "method": "percentile bootstrap; benchmark numbers resample query images, "
                               "edit numbers resample scenes"},
        "queries": len({str(r["query"]) for r in benchmark_records}),
        "attributes": sorted({r["attribute"] for r in benchmark_records}, key=schema.names.index),
        "edit_scenes": len(scenes),
        "gallery": len(gallery[0]),
        "matches_per_target": first.get("matches_per_target"),
        f"chance_top{tk}": first.get(f"chance_top{tk}"),
        "run": dict(run or {}),
        "methods": rows,
    }


# -- comparison.md -------------------------------------------------------------------------------

def fmt(iv: dict | None, digits: int = 3) -> str:
    """ "estimate [low, high]", or '-' where there is none."""
    if iv is None:
        return "-"
    ends = [iv.get("low"), iv.get("high")]
    inner = ", ".join("?" if e is None else f"{e:.{digits}f}" for e in ends)
    return f"{iv['estimate']:.{digits}f} [{inner}]"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [_row(head), "|" + "---|" * len(head), *(_row(r) for r in rows), ""]


def _accuracy_section(table: dict, grader: str, title: str) -> list[str]:
    key = (lambda e: e["truth_accuracy"]) if grader == TRUTH else (lambda e: e["accuracy"][grader])
    attrs = list(dict.fromkeys(a for e in table["methods"].values() for a in (key(e) or {})
                               if a != "mean"))
    if not attrs:
        return []
    # a method that makes no image the grader could read (a vector-only one) has no row
    rows = [[m, *(fmt((key(e) or {}).get(a)) for a in attrs + ["mean"])]
            for m, e in table["methods"].items() if key(e) is not None]
    return [f"## {title}", "", *_table(["method", *attrs, "mean"], rows)]


def _retrieval_section(table: dict) -> list[str]:
    ks, tk = table["ks"], table["table_k"]
    rows = [[m, f"{e['kept']} of {e['records']}" if "kept" in e else "-",
             *(fmt(e.get("topk", {}).get(str(k))) for k in ks),
             fmt(e.get(f"adde_ndcg@{tk}")), fmt(e.get(f"ndcg@{tk}")), fmt(e.get("mrr"))]
            for m, e in table["methods"].items()]
    return ["## Retrieval", "", ("Over the kept queries: those whose target vector some gallery "
                                 "item other than the query's own has. ADDE's NDCG: relevance = "
                                 "the fraction of the target's attributes matched, over k perfect "
                                 "results; graded NDCG (ours): gain 2^n - 1 for n attributes "
                                 "matched, over the gallery's best ordering."), "",
            *_table(["method", "kept queries", *(f"top-{k}" for k in ks),
                     f"ADDE's NDCG@{tk}", f"graded NDCG@{tk}", "MRR"], rows)]


def _edit_section(table: dict) -> list[str]:
    rows = [[m, *(fmt(e.get(key), 4 if key == "preservation" else 3) for key in
                  ("fidelity_reduction", "preservation", "attention_iou"))]
            for m, e in table["methods"].items()]
    return ["## Edit quality against the renderer's truth", "",
            ("Fidelity reduction = 1 - sum L1(edit, true edit) / sum L1(input, true edit) (1: "
             "the true edit, 0: no better than not editing); preservation = mean change outside "
             "the figure (lower is better); attention IoU = mask > 0.5 against the truly changed "
             "pixels. `real` and `oracle` are no generator: '-'."), "",
            *_table(["method", "fidelity reduction", "preservation", "attention IoU"], rows)]


def _iteration_line(run: Mapping, step) -> str:
    budget = (f"iteration {step if step is not None else '?'}"
              + (f" of the {run['iters']} planned" if run.get("iters") else ""))
    if run.get("pick") == "best":
        picks = ", ".join(f"{m} {s}" for m, s in (run.get("picked") or {}).items())
        return (f"Every generator at the checkpoint the truth's validation scores best up to "
                f"{budget} (iterations = D updates; G every n_critic): {picks}.")
    return f"Every generator evaluated at {budget} (iterations = D updates; G every n_critic)."


def _setting_lines(table: dict) -> list[str]:
    run, tk, iv = table.get("run") or {}, table["table_k"], table["interval"]
    step = run.get("step")
    chance = table.get(f"chance_top{tk}")
    matches = table.get("matches_per_target")
    return [
        _iteration_line(run, step),
        f"Queries: {table['queries']} query images"
        + (f" (a random sample of the test split, seed {run.get('sample_seed', 0)})"
           if run.get("sample") else "")
        + f", each of {', '.join(table.get('attributes', []))} edited toward every other value (a hit "
        "must match every attribute of the target); "
        f"gallery: {table['gallery']:,} items. "
        f"Edit quality: {table['edit_scenes']} synthetic scenes"
        + (f" (seed {run['edit_seed']})" if run.get("edit_seed") is not None else "") + ".",
        (f"Chance level: {'-' if matches is None else f'{matches:.1f}'} gallery items match a "
         f"target vector on average (random top-{tk}: "
         f"{'-' if chance is None else f'{chance:.3f}'})."),
        (f"Every number: estimate [{100 * iv['level']:.0f}% interval], a {iv['method']} "
         f"({iv['n_boot']} draws, seed {iv['seed']})."),
    ]


def interval_sections(table: dict) -> list[str]:
    """The accuracy (the truth's, then each CNN grader's) and retrieval sections, with their
    intervals: what a benchmark's report shows of a table without edit records."""
    lines = _accuracy_section(table, TRUTH, "Accuracy of the edits by the grader that is no "
                                            "network (truth)")
    for g in table["graders"]:
        lines += _accuracy_section(table, g, f"Accuracy of the edits by the CNN grader `{g}`")
    return lines + _retrieval_section(table)


def comparison_markdown(table: dict) -> str:
    run = table.get("run") or {}
    lines = ["# Comparison of the methods", "", *(f"- {line}" for line in _setting_lines(table)),
             ""]
    lines += interval_sections(table) + _edit_section(table)
    if run.get("commands"):
        lines += ["## Commands", "", "```", *run["commands"], "```", ""]
    return "\n".join(lines)


# -- comparison.png --------------------------------------------------------------------------------

def headline_metrics(table: dict) -> list[tuple[str, Callable[[dict], dict | None]]]:
    """(panel title, the interval of a method's entry) for every panel of the plot."""
    tk = table["table_k"]
    panels = [("truth accuracy", lambda e: (e.get("truth_accuracy") or {}).get("mean"))]
    panels += [(f"{g} accuracy", lambda e, g=g: (e["accuracy"].get(g) or {}).get("mean"))
               for g in table["graders"]]
    panels += [(f"top-{tk}", lambda e: (e.get("topk") or {}).get(str(tk))),
               (f"NDCG@{tk}", lambda e: e.get(f"ndcg@{tk}")),
               ("MRR", lambda e: e.get("mrr")),
               ("fidelity reduction", lambda e: e.get("fidelity_reduction"))]
    return panels


def plot_comparison(table: dict, path: Path) -> None:
    """One panel per headline metric: the methods down, the estimate with its interval across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amgan_search.io import atomic_path

    panels = headline_metrics(table)
    names = list(table["methods"])
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 0.3 * len(names) * rows + 1.2 * rows),
                             dpi=110, squeeze=False)
    for ax, (title, get) in zip(axes.ravel(), panels):
        _panel(ax, title, [get(table["methods"][m]) for m in names], names)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _panel(ax, title: str, ivs: Sequence[dict | None], names: Sequence[str]) -> None:
    y = np.arange(len(names))[::-1]
    for yi, iv, name in zip(y, ivs, names):
        if iv is None:
            continue
        if name in BOUNDS:  # the floor and the ceiling, drawn across so the methods read between
            ax.axvline(iv["estimate"], color=BOUNDS[name], linestyle=":", linewidth=1)
        lo = iv["low"] if iv["low"] is not None else iv["estimate"]
        hi = iv["high"] if iv["high"] is not None else iv["estimate"]
        ax.errorbar(iv["estimate"], yi, xerr=[[iv["estimate"] - lo], [hi - iv["estimate"]]],
                    fmt="o", color="C0", capsize=3, markersize=4)
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)


def write_comparison(out: str | Path, table: dict) -> None:
    """comparison.json, comparison.md and comparison.png in `out`, each written atomically."""
    from amgan_search.io import write_json, write_text

    out = Path(out)
    write_json(out / COMPARISON_JSON, table)
    write_text(out / COMPARISON_MD, comparison_markdown(table))
    plot_comparison(table, out / COMPARISON_PNG)
