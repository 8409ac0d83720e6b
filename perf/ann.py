"""The `auto` index at catalog scale: recall@30 against exact search, and queries/s against exact.

Vectors: a clustered Gaussian mixture on the unit sphere (dim 512, the ResNet-18 embedding size),
so neighbours exist the way they do among garment embeddings; the queries are fresh draws from the
same mixture, not indexed vectors. The index is built the way `index build` builds it (the same
type choice, training sample, and nprobe tuned at build time to recall@10 >= 0.95 on catalog
vectors), then measured on the held-out queries. Exact baselines: faiss IndexFlatIP and plain numpy
(a matrix product and argpartition), both batched.

Target (the issue): recall@30 >= 0.95 at >= 20x the exact queries/s.

    python perf/ann.py [--tiny] [--n 1000000] [--json]
"""

from __future__ import annotations

import json
import time

import numpy as np


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, spread: float = 1.0,
                      centers: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(unit vectors [n, dim] float32, the cluster centers). Generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    if centers is None:
        centers = rng.standard_normal((clusters, dim), dtype=np.float32)
        centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    # per-dimension noise of spread/sqrt(dim): a point's distance to its center ~ spread
    scale = spread / np.sqrt(dim)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        x = centers[rng.integers(0, len(centers), stop - start)]
        x = x + scale * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, centers


def numpy_topk(xb: np.ndarray, xq: np.ndarray, k: int, batch: int = 100) -> np.ndarray:
    rows = np.empty((len(xq), k), dtype=np.int64)
    for s in range(0, len(xq), batch):
        scores = xq[s:s + batch] @ xb.T
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1)
        rows[s:s + batch] = np.take_along_axis(part, order, axis=1)
    return rows


def run(tiny: bool = False, n: int | None = None, dim: int = 512, queries: int | None = None,
        k: int = 30) -> list[dict]:
    import faiss

    from amgan_search.index import faiss_index as store

    n = n or (20_000 if tiny else 1_000_000)
    nq = queries or (200 if tiny else 1000)
    dim = 64 if tiny else dim
    clusters = max(10, n // 250)
    t = time.perf_counter()
    xb, centers = clustered_vectors(n, dim, clusters, seed=0)
    xq, _ = clustered_vectors(nq, dim, clusters, seed=1, centers=centers)
    gen_s = time.perf_counter() - t

    kind = store.choose_index_type(n, dim)
    if kind == "flat":  # tiny sizes: measure the type auto picks at catalog scale
        kind = "ivf"
    params = store.index_params(kind, n, dim)
    t = time.perf_counter()
    index = store.make_index(kind, dim, params)
    index.train(store.training_sample(xb, params))
    index.add(xb)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    tuning = store.tune_search(index, kind, params, xb)
    tune_s = time.perf_counter() - t

    t = time.perf_counter()
    _, found = index.search(xq, k)
    ann_s = time.perf_counter() - t

    flat = faiss.IndexFlatIP(dim)
    flat.add(xb)
    t = time.perf_counter()
    _, truth = flat.search(xq, k)
    flat_s = time.perf_counter() - t
    del flat
    nq_np = min(nq, 200)  # numpy is the slowest; a subset gives its rate
    t = time.perf_counter()
    np_rows = numpy_topk(xb, xq[:nq_np], k)
    np_s = time.perf_counter() - t

    recall = store.recall_at(found, truth, k)
    ann_qps, flat_qps, np_qps = nq / ann_s, nq / flat_s, nq_np / np_s
    note = (f"n={n:,} dim={dim} clusters={clusters}; {kind} {json.dumps(params)}; "
            f"build {build_s:.1f} s, tune {tune_s:.1f} s, data {gen_s:.1f} s; "
            f"build-time recall@10 {tuning['recall@10']}")
    return [
        {"measure": f"{kind} recall@{k} vs exact", "value": round(recall, 4), "unit": "",
         "baseline": "target", "baseline_value": 0.95, "ratio": round(recall / 0.95, 3), "note": note},
        {"measure": f"{kind} queries/s", "value": round(ann_qps, 1), "unit": "q/s",
         "baseline": "faiss IndexFlatIP", "baseline_value": round(flat_qps, 1),
         "ratio": round(ann_qps / flat_qps, 2)},
        {"measure": f"{kind} queries/s", "value": round(ann_qps, 1), "unit": "q/s",
         "baseline": "numpy exact", "baseline_value": round(np_qps, 1),
         "ratio": round(ann_qps / np_qps, 2)},
        {"measure": "numpy exact agrees with faiss exact (recall@30)",
         "value": round(store.recall_at(np_rows, truth[:nq_np], k), 4), "unit": ""},
    ]


if __name__ == "__main__":  # `python -m perf.ann`, or the script: reach the package
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from perf.run import standalone

    standalone(run, __doc__.splitlines()[0], n="vectors in the index")
