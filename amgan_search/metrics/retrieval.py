"""The paper's two metrics: classification accuracy of edits and top-k retrieval accuracy.

Pure functions of arrays and query records; the resumable runner that produces the records for
every method over a catalog's test split is `amgan_search.index.evaluate.benchmark`.

Protocol (DESIGN "Metrics"): for every test image, every attribute (or those chosen to edit: the
harder setting edits two of four) and every target value other than its current one, the query is
embed(G(x, target)); the gallery is the indexed catalog without the query's own item; the target
vector is the input's attributes with that one value replaced. A query is kept only if some
gallery item has the whole target vector (every attribute of the index, edited or not); it is a
hit at k if some item among its top k has the whole target vector.

Beside top-k, over the same kept queries, two NDCG@k, each under its own name:
- ADDE's NDCG@k ("adde_ndcg"), ADDE's formula: a result's relevance is the fraction of the
  target's attributes it matches (0 to 1), DCG@k = sum over ranks i = 1..k of rel_i / log2(i + 1),
  divided by the DCG of k perfect results (sum of 1 / log2(i + 1)), not by the gallery's best
  ordering.
- Graded NDCG@k ("ndcg"), ours: relevance = the number of target attributes matched, gain
  2^rel - 1, divided by the same sum over the gallery's relevances sorted best first (so a query
  with few near matches is not penalised for what the gallery lacks).
In both the query's own item is neither a result nor part of the ideal ordering, unless the
protocol keeps it in the gallery (ADDE's).
- MRR: the mean of 1 / (rank of the first result with the whole target vector), 0 when none is
  within the searched depth.
- The chance level: how many gallery items (the query's own excluded) have the whole target vector.
A missing entry (-1) in a target vector is a wildcard (matches anything, the default) or, with
missing="value" (ADDE's), a value of its own that only a missing label matches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import MISSING, Schema

DEFAULT_KS = (1, 5, 10, 20, 30, 50)
TABLE_K = 30  # the paper's per-attribute retrieval table is at top-30


WILDCARD, VALUE = "wildcard", "value"
MISSING_RULES = (WILDCARD, VALUE)


def relevance(target: Sequence[int], labels: np.ndarray, missing: str = WILDCARD) -> np.ndarray:
    """Graded relevance of gallery rows [N, M] -> [N]: how many target attributes each matches.

    A missing target entry is matched by every row (wildcard: the paper is silent, and requiring
    "unknown" would reward missing labels) or only by missing labels (value, ADDE's rule).
    """
    if missing not in MISSING_RULES:
        raise UserError(f"missing labels are {' or '.join(MISSING_RULES)}, got {missing!r}")
    target = np.asarray(target, dtype=np.int64)
    same = np.asarray(labels, dtype=np.int64) == target
    if missing == WILDCARD:
        same |= target == MISSING
    return same.sum(axis=1)


def target_matches(target: Sequence[int], labels: np.ndarray, missing: str = WILDCARD) -> np.ndarray:
    """Gallery rows that have the whole target vector (relevance = every attribute)."""
    return relevance(target, labels, missing) == len(target)


def dcg(rels: Sequence[int], k: int) -> float:
    """sum over ranks i = 1..k of (2^rel_i - 1) / log2(i + 1)."""
    rels = np.asarray(rels, dtype=np.float64)[:k]
    return float(np.sum((2.0 ** rels - 1.0) / np.log2(np.arange(2, len(rels) + 2))))


def ndcg(ranked_rels: Sequence[int], gallery_rels: Sequence[int], k: int) -> float:
    """DCG@k of the ranking over DCG@k of the gallery's ideal ordering (0 when that is 0)."""
    ideal = dcg(np.sort(np.asarray(gallery_rels))[::-1], k)
    return dcg(ranked_rels, k) / ideal if ideal > 0 else 0.0


def adde_ndcg(ranked_rels: Sequence[int], n_attributes: int, k: int) -> float:
    """ADDE's NDCG@k: sum of (matched fraction) / log2(i + 1) over the top k, over the same sum
    for k perfect results."""
    rels = np.asarray(ranked_rels, dtype=np.float64)[:k] / n_attributes
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return float(np.sum(rels * discounts[:len(rels)]) / np.sum(discounts))


def ranking_scores(targets: np.ndarray, retrieved: Sequence[Sequence], gallery_ids: Sequence,
                   gallery_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                   own_ids: Sequence | None = None, missing: str = WILDCARD) -> dict[str, np.ndarray]:
    """Per query [Q]: kept, hits [Q, len(ks)], ndcg and adde_ndcg [Q, len(ks)], rr (reciprocal
    rank of the first exact match, 0 for none) and matches (gallery items with the whole target
    vector).

    `retrieved[q]` lists gallery ids best first; `own_ids[q]` (or None) is the query's own item,
    which is neither a gallery item nor a result (dropped before cutting at k); ids outside the
    gallery are dropped the same way.
    """
    targets = np.asarray(targets, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    row_of = {str(i): r for r, i in enumerate(gallery_ids)}
    ks = list(ks)
    q_n, m = len(targets), gallery_labels.shape[1]
    out = {"kept": np.zeros(q_n, dtype=bool), "hits": np.zeros((q_n, len(ks)), dtype=bool),
           "ndcg": np.zeros((q_n, len(ks))), "adde_ndcg": np.zeros((q_n, len(ks))),
           "rr": np.zeros(q_n), "matches": np.zeros(q_n, np.int64)}
    cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for q, target in enumerate(targets):
        key = tuple(target.tolist())
        if key not in cache:
            rel = relevance(target, gallery_labels, missing)
            cache[key] = rel, np.bincount(rel, minlength=m + 1)
        rel, counts = cache[key]
        own = None if own_ids is None or own_ids[q] is None else str(own_ids[q])
        own_row = row_of.get(own) if own is not None else None
        if own_row is not None:  # the own item leaves the gallery: the ideal ordering too
            counts = counts.copy()
            counts[rel[own_row]] -= 1
        out["matches"][q] = counts[m]
        out["kept"][q] = counts[m] > 0
        if not out["kept"][q]:
            continue
        ranked = rel[[row_of[str(i)] for i in retrieved[q] if str(i) != own and str(i) in row_of]]
        exact = np.flatnonzero(ranked == m)
        first = int(exact[0]) + 1 if len(exact) else None
        out["rr"][q] = 1.0 / first if first else 0.0
        if first is not None:
            out["hits"][q] = [first <= k for k in ks]
        ideal = np.repeat(np.arange(m, -1, -1), counts[::-1])
        for j, k in enumerate(ks):
            out["ndcg"][q, j] = ndcg(ranked, ideal[:k], k)
            out["adde_ndcg"][q, j] = adde_ndcg(ranked, m, k)
    return out


def retrieval_hits(targets: np.ndarray, retrieved: Sequence[Sequence], gallery_ids: Sequence,
                   gallery_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                   own_ids: Sequence | None = None,
                   missing: str = WILDCARD) -> tuple[np.ndarray, np.ndarray]:
    """(kept [Q] bool, hits [Q, len(ks)] bool) for queries with target vectors [Q, M]
    (`ranking_scores`' first two)."""
    scores = ranking_scores(targets, retrieved, gallery_ids, gallery_labels, ks, own_ids, missing)
    return scores["kept"], scores["hits"]


def topk_accuracy(kept: np.ndarray, hits: np.ndarray, ks: Sequence[int]) -> dict[int, float | None]:
    """Fraction of kept queries with a hit at each k (None when no query is kept)."""
    n = int(np.sum(kept))
    return {int(k): (float(hits[kept, j].mean()) if n else None) for j, k in enumerate(ks)}


def classification_accuracy(predicted: Sequence, targets: np.ndarray, attributes: Sequence[int],
                            schema: Schema) -> dict[str, float | None]:
    """Per manipulated attribute: how often a grader read the target value.

    `predicted[q]` is the grader's reading of query q's manipulated attribute: a value name, a
    value index of `schema` (the records of old), or None (not read: a grader that does not know
    the attribute). An attribute is None when no query manipulates it or the grader read none of
    its queries; where it read some, a None counts as wrong. `average` is the mean over the
    attributes with an accuracy (each counts once, as in the paper's tables).
    """
    targets = np.asarray(targets, dtype=np.int64)
    attributes = np.asarray(attributes, dtype=np.int64)
    out: dict[str, float | None] = {}
    for j, attr in enumerate(schema.attributes):
        sel = np.flatnonzero(attributes == j)
        reads = [_value_name(predicted[q], attr.values) for q in sel]
        if not any(r is not None for r in reads):
            out[attr.name] = None
            continue
        wanted = [attr.values[int(targets[q, j])] for q in sel]
        out[attr.name] = float(np.mean([r == w for r, w in zip(reads, wanted)]))
    values = [v for v in out.values() if v is not None]
    out["average"] = float(np.mean(values)) if values else None
    return out


def _value_name(reading, values: Sequence[str]) -> str | None:
    """A reading as a value name: names stay, indices of old are looked up, None stays None."""
    if reading is None or isinstance(reading, str):
        return reading
    return values[int(reading)]


def record_readings(record: dict, schema: Schema) -> dict[str, str | None]:
    """A benchmark record's CNN readings {grader: value name or None} of its manipulated
    attribute. Records of old held one grader's value index (an int) or None: read as
    {"eval": name} and {}."""
    predicted = record.get("predicted")
    if predicted is None:
        return {}
    if isinstance(predicted, dict):
        return dict(predicted)
    attr = schema.attribute(record["attribute"])
    return {"eval": attr.values[int(predicted)]}


def grader_accuracy(records: Sequence[dict], schema: Schema) -> dict[str, dict]:
    """{grader: `classification_accuracy`} over query records, for every grader some record
    names (in the records' order). A record without a grader's entry (a run resumed from records
    of other graders) is left out of that grader's accuracy rather than counted wrong."""
    readings = [record_readings(r, schema) for r in records]
    graders = list(dict.fromkeys(g for read in readings for g in read))
    out = {}
    for g in graders:
        mine = [(r, read[g]) for r, read in zip(records, readings) if g in read]
        out[g] = classification_accuracy(
            [p for _, p in mine], np.array([r["target"] for r, _ in mine], dtype=np.int64),
            [schema.position(r["attribute"]) for r, _ in mine], schema)
    return out


def query_targets(labels: np.ndarray, schema: Schema, attributes: Sequence[int] | None = None
                  ) -> list[tuple[int, int, np.ndarray]]:
    """Every (attribute, target value, target vector) for one input's labels [M]; only the
    attribute positions `attributes` are manipulated when given (None: every attribute)."""
    out = []
    for j, attr in enumerate(schema.attributes):
        if attributes is not None and j not in attributes:
            continue
        for v in range(len(attr.values)):
            if v == labels[j]:
                continue
            target = labels.copy()
            target[j] = v
            out.append((j, v, target))
    return out


def parse_ks(spec: str | Sequence[int]) -> list[int]:
    """"50,1,5" (or integers) -> the sorted distinct k of the top-k curve, each at least 1."""
    try:
        ks = sorted({int(k) for k in (spec.split(",") if isinstance(spec, str) else spec)})
    except ValueError:
        raise UserError(f"expected comma-separated integers, got {spec!r}") from None
    if not ks or ks[0] < 1:
        raise UserError(f"values must be at least 1, got {spec!r}")
    return ks


def table_k(ks: Sequence[int]) -> int:
    """The k of the per-attribute table: the paper's top-30 when measured, else the largest k."""
    return TABLE_K if TABLE_K in ks else max(ks)


def method_metrics(records: Sequence[dict], gallery_ids: Sequence, gallery_labels: np.ndarray,
                   schema: Schema, ks: Sequence[int], missing: str = WILDCARD,
                   own: str = "exclude") -> dict:
    """The metrics of one method from its query records ({query, attribute, target, predicted,
    retrieved}): queries, kept, top-k accuracy, top-k per attribute at `table_k`, NDCG@k, MRR,
    the chance level, and the classification accuracy per CNN grader (`grader_accuracy`; {}
    when no grader read the edits). `own` "keep": the query's own item stays in the gallery
    (ADDE's protocol)."""
    ks = list(ks)
    targets = np.array([r["target"] for r in records], dtype=np.int64)
    attrs = np.array([schema.names.index(r["attribute"]) for r in records], dtype=np.int64)
    own_ids = [r["query"] for r in records] if own == "exclude" else None
    scores = ranking_scores(targets, [r["retrieved"] for r in records], gallery_ids,
                            gallery_labels, ks, own_ids, missing)
    kept, hits = scores["kept"], scores["hits"]
    per_attr_k = table_k(ks)
    col = ks.index(per_attr_k)
    per_attr = {}
    for j, a in enumerate(schema.names):
        sel = kept & (attrs == j)
        per_attr[a] = float(hits[sel, col].mean()) if sel.any() else None
    any_kept = bool(kept.any())
    entry = {
        "queries": len(records),
        "kept": int(kept.sum()),
        "topk": {str(k): v for k, v in topk_accuracy(kept, hits, ks).items()},
        f"top{per_attr_k}_per_attribute": per_attr,
        "ndcg": {str(k): float(scores["ndcg"][kept, j].mean()) if any_kept else None
                 for j, k in enumerate(ks)},
        "adde_ndcg": {str(k): float(scores["adde_ndcg"][kept, j].mean()) if any_kept else None
                      for j, k in enumerate(ks)},
        "mrr": float(scores["rr"][kept].mean()) if any_kept else None,
        "matches_per_target": float(scores["matches"][kept].mean()) if any_kept else None,
    }
    entry["classification"] = grader_accuracy(records, schema)
    return entry
