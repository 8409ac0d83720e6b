"""The paper's two metrics: classification accuracy of edits and top-k retrieval accuracy.

Pure functions of arrays and query records; the resumable runner that produces the records for
every method over a catalog's test split is `amgan_search.index.benchmark`.

Protocol (DESIGN "Metrics"): for every test image, every attribute and every target value other
than its current one, the query is embed(G(x, target)); the gallery is the indexed catalog without
the query's own item; the target vector is the input's attributes with that one value replaced.
A query is kept only if some gallery item has the whole target vector; it is a hit at k if some
item among its top k has the whole target vector.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import MISSING, Schema

DEFAULT_KS = (1, 5, 10, 20, 30, 50)
TABLE_K = 30  # the paper's per-attribute retrieval table is at top-30


def target_matches(target: Sequence[int], labels: np.ndarray) -> np.ndarray:
    """Gallery rows that have the whole target vector.

    A missing entry (-1) in the target, which only an input with an unknown value produces,
    constrains nothing: the paper is silent, and requiring "unknown" would reward missing labels.
    """
    target = np.asarray(target, dtype=np.int64)
    known = target != MISSING
    return np.all(labels[:, known] == target[known], axis=1)


def retrieval_hits(targets: np.ndarray, retrieved: Sequence[Sequence], gallery_ids: Sequence,
                   gallery_labels: np.ndarray, ks: Sequence[int] = DEFAULT_KS,
                   own_ids: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(kept [Q] bool, hits [Q, len(ks)] bool) for queries with target vectors [Q, M].

    `retrieved[q]` lists gallery ids best first; `own_ids[q]` (or None) is the query's own item,
    which is neither a gallery item for the kept rule nor a result (dropped before cutting at k).
    """
    targets = np.asarray(targets, dtype=np.int64)
    gallery_labels = np.asarray(gallery_labels, dtype=np.int64)
    row_of = {str(i): r for r, i in enumerate(gallery_ids)}
    ks = list(ks)
    kept = np.zeros(len(targets), dtype=bool)
    hits = np.zeros((len(targets), len(ks)), dtype=bool)
    cache: dict[tuple, np.ndarray] = {}
    for q, target in enumerate(targets):
        key = tuple(target.tolist())
        if key not in cache:
            cache[key] = target_matches(target, gallery_labels)
        match = cache[key]
        own = None if own_ids is None or own_ids[q] is None else str(own_ids[q])
        own_row = row_of.get(own) if own is not None else None
        n_match = int(match.sum()) - (1 if own_row is not None and match[own_row] else 0)
        kept[q] = n_match > 0
        if not kept[q]:
            continue
        ranked = [row_of[str(i)] for i in retrieved[q] if str(i) != own and str(i) in row_of]
        first = next((rank for rank, r in enumerate(ranked, start=1) if match[r]), None)
        if first is not None:
            hits[q] = [first <= k for k in ks]
    return kept, hits


def topk_accuracy(kept: np.ndarray, hits: np.ndarray, ks: Sequence[int]) -> dict[int, float | None]:
    """Fraction of kept queries with a hit at each k (None when no query is kept)."""
    n = int(np.sum(kept))
    return {int(k): (float(hits[kept, j].mean()) if n else None) for j, k in enumerate(ks)}


def classification_accuracy(predicted: Sequence[int], targets: np.ndarray, attributes: Sequence[int],
                            schema: Schema) -> dict[str, float | None]:
    """Per manipulated attribute: how often the evaluation classifier says the target value.

    `average` is the mean over attributes (each attribute counts once, as in the paper's tables).
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    attributes = np.asarray(attributes, dtype=np.int64)
    wanted = targets[np.arange(len(targets)), attributes] if len(targets) else np.zeros(0, np.int64)
    out: dict[str, float | None] = {}
    for j, name in enumerate(schema.names):
        sel = attributes == j
        out[name] = float(np.mean(predicted[sel] == wanted[sel])) if sel.any() else None
    values = [v for v in out.values() if v is not None]
    out["average"] = float(np.mean(values)) if values else None
    return out


def query_targets(labels: np.ndarray, schema: Schema) -> list[tuple[int, int, np.ndarray]]:
    """Every (attribute, target value, target vector) for one input's labels [M]."""
    out = []
    for j, attr in enumerate(schema.attributes):
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
                   schema: Schema, ks: Sequence[int]) -> dict:
    """Both metrics of one method from its query records ({query, attribute, target, predicted,
    retrieved}): queries, kept, top-k accuracy, top-k per attribute at `table_k`, and the
    classification accuracy when every record has a prediction."""
    ks = list(ks)
    targets = np.array([r["target"] for r in records], dtype=np.int64)
    attrs = np.array([schema.names.index(r["attribute"]) for r in records], dtype=np.int64)
    kept, hits = retrieval_hits(targets, [r["retrieved"] for r in records], gallery_ids,
                                gallery_labels, ks, [r["query"] for r in records])
    per_attr_k = table_k(ks)
    col = ks.index(per_attr_k)
    per_attr = {}
    for j, a in enumerate(schema.names):
        sel = kept & (attrs == j)
        per_attr[a] = float(hits[sel, col].mean()) if sel.any() else None
    entry = {
        "queries": len(records),
        "kept": int(kept.sum()),
        "topk": {str(k): v for k, v in topk_accuracy(kept, hits, ks).items()},
        f"top{per_attr_k}_per_attribute": per_attr,
    }
    preds = [r.get("predicted") for r in records]
    if all(p is not None for p in preds):
        entry["classification"] = classification_accuracy(preds, targets, attrs, schema)
    return entry
