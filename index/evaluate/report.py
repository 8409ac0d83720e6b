"""A benchmark run's report: summary.json (the metrics per method), summary.md and topk.png.

summary.json: {"ks", "table_k", "index", "gallery" (items searched), "db", "split", "limit",
"graders" ({name: shipped name or folder}), "schema", "protocol", "methods": {method: {"queries",
"kept", "topk": {k: acc}, "top<table_k>_per_attribute": {attribute: acc}, "adde_ndcg": {k: ADDE's
NDCG}, "ndcg": {k: our graded NDCG} (`metrics.retrieval` has both formulas), "mrr",
"matches_per_target", "classification": {grader: {attribute: acc or null, "average"}}, "truth":
{attribute: acc or null, "average"} or null}}}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from amgan_search.metrics.retrieval import WILDCARD, method_metrics, table_k
from amgan_search.schema import Schema

SUMMARY_JSON, SUMMARY_MD, TOPK_PNG = "summary.json", "summary.md", "topk.png"


def summarise(records: list[dict], searcher, schema: Schema, ks: Sequence[int],
              config=None) -> dict:
    """The metrics per method from the query records, against the searcher's gallery.

    `config` (a BenchmarkConfig, or None: the default protocol) orders the methods, chooses the
    gallery and the missing-label rule, and records the run's settings.
    """
    from amgan_search.index.evaluate.benchmark import PROTOCOL, gallery_where, grader_sources

    ks = list(ks)
    protocol = {**PROTOCOL, **config.protocol()} if config else dict(PROTOCOL)
    mask = searcher.allowed(gallery_where(protocol["gallery"]))
    ids, labels = searcher.ids, searcher.labels
    if mask is not None:
        ids, labels = [i for i, keep in zip(ids, mask) if keep], labels[mask]
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    order = [m.name for m in config.methods] if config else list(by_method)
    methods = {name: method_metrics(by_method[name], ids, labels, schema, ks,
                                    protocol.get("missing", WILDCARD),
                                    protocol.get("own", "exclude"))
               for name in order if by_method.get(name)}
    graders = grader_sources(config.graders) if config else {}
    for name, entry in methods.items():
        # the run's graders first, in their order; a grader only older records name after them
        c = entry["classification"]
        entry["classification"] = {g: c[g] for g in [*graders, *c] if g in c}
        entry["truth"] = truth_accuracy(by_method[name], schema)
        # whether any grader read the method's images (vector-only methods make none)
        entry["edits"] = any("predicted" in r for r in by_method[name])
    intervals = interval_table(records, ids, labels, schema, ks, list(graders) or
                               list(dict.fromkeys(g for e in methods.values()
                                                  for g in e["classification"])),
                               protocol, list(methods))
    return {
        "ks": ks,
        "table_k": table_k(ks),
        "index": str(searcher.dir),
        "gallery": len(ids),
        "db": config.db if config else None,
        "split": config.split if config else None,
        "limit": config.limit if config else None,
        "graders": graders,
        "schema": schema.to_dict(),
        "protocol": protocol,
        "methods": methods,
        "intervals": intervals,
    }


def interval_table(records, ids, labels, schema: Schema, ks, graders, protocol: dict,
                   order) -> dict:
    """Every method's accuracy and retrieval with 95% intervals (`index.evaluate.table`: a seeded
    percentile bootstrap over query images)."""
    from amgan_search.index.evaluate.table import comparison_table

    return comparison_table(records, {}, schema, ks, graders, gallery_ids=ids,
                            gallery_labels=labels, methods=order,
                            missing=protocol.get("missing", WILDCARD),
                            own_item=protocol.get("own", "exclude"))


def truth_accuracy(records: Sequence[dict], schema: Schema) -> dict | None:
    """Per manipulated attribute: how often the non-network grader read the target value (the
    records' "truth"); None for an attribute it does not read, and None in all when some record
    has no reading (a catalog that is not synthetic). `average`: over the attributes read."""
    if not records or any("truth" not in r for r in records):
        return None
    out: dict[str, float | None] = {}
    for j, attr in enumerate(schema.attributes):
        mine = [r for r in records if r["attribute"] == attr.name]
        read = [r for r in mine if attr.name in r["truth"]]
        out[attr.name] = (float(np.mean([r["truth"][attr.name] == attr.values[r["target"][j]]
                                         for r in mine]))
                          if mine and len(read) == len(mine) else None)
    values = [v for v in out.values() if v is not None]
    out["average"] = float(np.mean(values)) if values else None
    return out


def _pct(v, none: str = "-") -> str:
    return none if v is None else f"{100 * v:.2f}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _acc(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def summary_markdown(summary: dict) -> str:
    """The paper's tables (accuracy of edits per grader, top-k accuracy, top-k per attribute)
    and NDCG@k / MRR with the chance level beside them."""
    names = list(summary["schema"])
    pr = summary.get("protocol") or {}
    edited = pr.get("edit_attributes") or names
    split = summary.get("split")
    queries = (f"a random sample of {pr['sample']} {split} images (seed {pr['sample_seed']})"
               if pr.get("sample") else
               f"the first {summary['limit']} {split} images" if summary.get("limit") else
               f"every {split} image")
    ks = summary["ks"]
    tk = summary["table_k"]
    methods = summary["methods"]
    gallery = "the test split" if pr.get("gallery") == "test" else "the whole catalog"
    changed = ("every attribute" if edited == names else
               f"{', '.join(edited)} (of {', '.join(names)})")
    lines = [f"# Benchmark: {summary.get('db')} ({summary.get('split')} split) against {summary['index']}",
             "", (f"Gallery: {summary['gallery']:,} items ({gallery}). Queries: {queries}, each "
                  f"changing one value of {changed}; kept: those whose target vector some gallery "
                  "item other than the query's own has; a hit has the whole target vector; a "
                  f"missing label in a target is {pr.get('missing', 'wildcard')!r}."), ""]
    lines += grader_table(methods, edited)
    lines += ["", "## Top-k retrieval accuracy", "",
              "| method | queries | kept | " + " | ".join(f"top-{k}" for k in ks) + " |",
              "|---" * (len(ks) + 3) + "|"]
    for m, e in methods.items():
        lines.append(f"| {m} | {e['queries']} | {e['kept']} | "
                     + " | ".join(_acc(e["topk"][str(k)]) for k in ks) + " |")
    lines += ["", "## NDCG@k and MRR, with the chance level", "",
              "ADDE's NDCG@k: relevance = the fraction of the target's attributes a result matches, "
              "over the DCG of k perfect results. Graded NDCG@k (ours): gain 2^n - 1 for n "
              "attributes matched, over the gallery's best ordering.", "",
              "| method | matches per target | MRR | "
              + " | ".join(f"ADDE's NDCG@{k}" for k in ks) + " | "
              + " | ".join(f"graded NDCG@{k}" for k in ks) + " |",
              "|---" * (2 * len(ks) + 3) + "|"]
    for m, e in methods.items():
        if "ndcg" in e:
            adde = e.get("adde_ndcg") or {}
            lines.append(f"| {m} | {_num(e['matches_per_target'])} | {_acc(e['mrr'])} | "
                         + " | ".join(_acc(adde.get(str(k))) for k in ks) + " | "
                         + " | ".join(_acc(e["ndcg"][str(k)]) for k in ks) + " |")
    lines += ["", f"## Top-{tk} retrieval accuracy per edited attribute", "",
              "| method | " + " | ".join(edited) + " |", "|---" * (len(edited) + 1) + "|"]
    for m, e in methods.items():
        per = e[f"top{tk}_per_attribute"]
        lines.append(f"| {m} | " + " | ".join(_acc(per.get(a)) for a in edited) + " |")
    if summary.get("intervals"):
        from amgan_search.index.evaluate.table import interval_sections

        iv = summary["intervals"]["interval"]
        lines += ["", "# With 95% intervals", "",
                  (f"Every number: estimate [{100 * iv['level']:.0f}% interval], a {iv['method']} "
                   f"({iv['n_boot']} draws, seed {iv['seed']}); accuracies as fractions."), "",
                  *interval_sections(summary["intervals"])]
    return "\n".join(lines) + "\n"


def grader_table(methods: dict, edited: list[str]) -> list[str]:
    """The accuracy of the edits (%), one row per method and grader: each CNN grader's, then the
    grader that is no network's ("truth"). "-": the grader does not read the attribute; "n/a":
    no truth reading (a catalog that is not synthetic)."""
    title = ("## Accuracy of edits per grader (%; truth: the grader that is no network, "
             "synthetic catalogs only; methods that make no image have no row)")
    lines = [title, "", "| method | grader | " + " | ".join(edited) + " | average |",
             "|---" * (len(edited) + 3) + "|"]
    for m, e in methods.items():
        if not e.get("classification") and e.get("truth") is None and e.get("edits") is False:
            continue
        for grader, acc in (e.get("classification") or {}).items():
            cells = [_pct(acc.get(a)) for a in edited] + [_pct(acc.get("average"))]
            lines.append(f"| {m} | {grader} | " + " | ".join(cells) + " |")
        t = e.get("truth")
        cells = ([_pct(t.get(a)) for a in edited] + [_pct(t.get("average"))] if t
                 else ["n/a"] * (len(edited) + 1))
        lines.append(f"| {m} | truth | " + " | ".join(cells) + " |")
    return lines


def plot_topk(summary: dict, path: Path) -> None:
    """Top-k curves per method, like the paper's Fig. 4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amgan_search.io import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=120)
    for name, e in summary["methods"].items():
        ks = [k for k in summary["ks"] if e["topk"][str(k)] is not None]
        ax.plot(ks, [e["topk"][str(k)] for k in ks], marker="o", label=name)
    ax.set_xlabel("k")
    ax.set_ylabel("top-k retrieval accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_outputs(out: Path, summary: dict) -> None:
    """summary.json, summary.md and topk.png in the run folder, each written atomically."""
    from amgan_search.io import write_json, write_text

    write_json(out / SUMMARY_JSON, summary)
    write_text(out / SUMMARY_MD, summary_markdown(summary))
    plot_topk(summary, out / TOPK_PNG)
