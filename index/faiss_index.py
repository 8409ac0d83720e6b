"""FAISS itself: which index type, its parameters, training, and tuning search against exact search.

Index type (`auto`), chosen from the catalog size n, the dimension d and an optional memory budget:
  n < 50,000                          flat: exact search is a few ms a query at this size
  n >= 50,000                         ivf: IVF-Flat, nlist ~ 4 sqrt(n); trains in seconds on a sample,
                                      fills in shards and merges (`merge_from`), which HNSW cannot
  float32 vectors (n*d*4 bytes, plus
  10% for lists) over the budget      ivfpq: IVF-PQ with d/4 (or fewer) one-byte sub-quantizers
HNSW is there on request (`--index-type hnsw`): the best recall per query time in memory, but its
build is the slowest on few cores and it does not shard.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np

from amgan_search.errors import UserError

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
FLAT_MAX_ITEMS = 50_000
RECALL_TARGET = 0.95  # approximate types tune nprobe / efSearch at build time up to this recall@10
RECALL_SAMPLE = 1000

FAISS_MISSING = ("FAISS is not installed: pip install 'amgan-search[cpu]' "
                 "(or 'amgan-search[gpu]' on a machine with a CUDA GPU)")


def import_faiss():
    """The faiss module, or a one-line UserError naming the extra that provides it."""
    try:
        import faiss
    except ImportError:
        raise UserError(FAISS_MISSING) from None
    return faiss


def gpu_count() -> int:
    """GPUs FAISS can use (0 on faiss-cpu)."""
    faiss = import_faiss()
    # faiss-cpu has no get_num_gpus on some builds; without a GPU, GPU calls can fail silently.
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


# ---------------------------------------------------------------- index type and parameters

def choose_index_type(n: int, dim: int, memory_budget_mb: float | None = None) -> str:
    """`auto`: flat below 50k items, IVF above, IVF-PQ when float32 vectors overflow the budget."""
    if memory_budget_mb is not None and n * dim * 4 * 1.1 > memory_budget_mb * 2**20:
        return "ivfpq"
    return "flat" if n < FLAT_MAX_ITEMS else "ivf"


def _nlist(n: int) -> int:
    # faiss wants >= 39 training points per centroid; 4 sqrt(n) is its usual rule of thumb.
    target = 4 * math.sqrt(n)
    nlist = 2 ** max(0, round(math.log2(max(target, 1))))
    return int(max(1, min(nlist, n // 39)))


def _pq_m(n: int, dim: int, memory_budget_mb: float | None) -> int:
    """Sub-quantizers (bytes a vector): the most that fit the budget, at most d/4, dividing d."""
    cap = max(1, dim // 4)
    if memory_budget_mb is not None:
        # 8 bytes of id per vector ride along with the code in the inverted lists.
        cap = min(cap, max(1, int(memory_budget_mb * 2**20 / max(n, 1)) - 8))
    m = cap
    while dim % m:
        m -= 1
    return m


# What each type needs to be searched: a loaded index.json is checked against it field by field.
SEARCH_PARAMS = {"flat": (), "hnsw": ("M", "efConstruction", "efSearch"), "ivf": ("nlist", "nprobe"),
                 "ivfpq": ("nlist", "m", "nbits", "nprobe")}


def is_count(value) -> bool:
    """A positive integer (JSON's true is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_params(kind, params, where) -> None:
    """Refuse a loaded index's type or parameters that it cannot be searched with (one line)."""
    if kind not in SEARCH_PARAMS:
        raise UserError(f"{where}: \"type\" is {kind!r}; valid: {', '.join(SEARCH_PARAMS)}")
    if not isinstance(params, dict):
        raise UserError(f"{where}: \"params\" must be an object, got {params!r}")
    for key in SEARCH_PARAMS[kind]:
        if not is_count(params.get(key)):
            got = "nothing" if key not in params else repr(params[key])
            raise UserError(f"{where}: a {kind} index needs \"params\".{key} as a positive integer, "
                            f"got {got}")


def check_index_type(kind: str) -> str:
    """`kind` itself, or a UserError listing the index types."""
    if kind not in INDEX_TYPES:
        raise _unknown_type(kind)
    return kind


def _unknown_type(kind: str) -> UserError:
    return UserError(f"unknown index type {kind!r}; valid: {', '.join(INDEX_TYPES)}")


def index_params(kind: str, n: int, dim: int, memory_budget_mb: float | None = None) -> dict:
    """Build and search parameters of an index type for n vectors of dimension `dim`."""
    if kind == "flat":
        return {}
    if kind == "hnsw":
        return {"M": 32, "efConstruction": 80, "efSearch": 64}
    if kind == "ivf":
        return {"nlist": _nlist(n), "nprobe": 8}
    if kind == "ivfpq":
        # 8-bit codebooks want 256 x 39 training points; tiny catalogs get smaller ones.
        nbits = int(max(1, min(8, math.floor(math.log2(max(n, 2) / 39)) if n >= 78 else 1)))
        return {"nlist": _nlist(n), "m": _pq_m(n, dim, memory_budget_mb), "nbits": nbits, "nprobe": 8}
    raise _unknown_type(kind)


def make_index(kind: str, dim: int, params: Mapping[str, Any]):
    """An empty (untrained) inner-product index of that type."""
    faiss = import_faiss()
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params["M"], ip)
        index.hnsw.efConstruction = params["efConstruction"]
        return index
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, params["nlist"], params["m"], params["nbits"], ip)
    # Unit vectors: spherical k-means keeps centroids on the sphere, where inner product ranks right.
    index.cp.spherical = True
    index.cp.seed = 1234
    # 10 k-means rounds (faiss's default is 25): the centroids only route queries, and nprobe is
    # tuned afterwards against exact search, so extra rounds buy little for their minutes at 1M.
    index.cp.niter = 10
    return index


def training_sample(vectors: np.ndarray, params: Mapping[str, Any], seed: int = 0) -> np.ndarray:
    """Rows that train the IVF quantizer: 39 to 64 per list, a seeded choice so shards agree."""
    n = len(vectors)
    nlist = int(params.get("nlist", 1))
    size = min(n, 64 * nlist, max(39 * nlist, 131_072))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def set_search_params(index, kind: str, params: Mapping[str, Any]) -> None:
    """Apply the tuned nprobe / efSearch to a loaded index."""
    faiss = import_faiss()
    if kind in ("ivf", "ivfpq"):
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params["efSearch"])


def faiss_nprobe(index) -> int | None:
    """nprobe of an IVF index (None for other types)."""
    faiss = import_faiss()
    try:
        return int(faiss.extract_index_ivf(index).nprobe)
    except (RuntimeError, TypeError):
        return None


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k rows (the reference for recall)."""
    faiss = import_faiss()
    _, rows = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32),
                        np.ascontiguousarray(vectors, dtype=np.float32), k,
                        metric=faiss.METRIC_INNER_PRODUCT)
    return rows


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that the approximate top-k holds."""
    k = min(k, truth.shape[1])
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist())) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k) if hits else 1.0


def tune_search(index, kind: str, params: dict, vectors: np.ndarray, k: int = 10,
                target: float = RECALL_TARGET, sample: int = RECALL_SAMPLE, seed: int = 0) -> dict:
    """Raise nprobe / efSearch until recall@k against exact search reaches `target` on a sample.

    The sample queries are catalog vectors themselves (the index holds them, so each finds itself;
    exact search does too, so recall is still a fair comparison). Returns the measured table.
    """
    if kind == "flat":
        return {"recall@10": 1.0, "exact": True}
    n = len(vectors)
    rows = np.sort(np.random.default_rng(seed + 1).choice(n, size=min(n, sample), replace=False))
    queries = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    k = min(k, n)
    truth = exact_topk(vectors, queries, k)
    name = "efSearch" if kind == "hnsw" else "nprobe"
    if kind == "hnsw":
        grid = [16, 32, 64, 128, 256, 512, 1024]
    else:
        grid = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if p < params["nlist"]]
        grid.append(params["nlist"])
    table, best = [], None
    for value in grid:
        params[name] = value
        set_search_params(index, kind, params)
        start = time.perf_counter()
        _, found = index.search(queries, k)
        seconds = time.perf_counter() - start
        r = recall_at(found, truth, k)
        table.append({name: value, "recall@10": round(r, 4), "ms_per_query": round(1000 * seconds / len(queries), 4)})
        if r >= target:
            best = value
            break
        # PQ codes cap recall below the target: stop once more probing no longer helps.
        if kind == "ivfpq" and len(table) > 1 and r - table[-2]["recall@10"] < 0.002:
            best = value
            break
    params[name] = best if best is not None else grid[-1]
    set_search_params(index, kind, params)
    chosen = next(t for t in table if t[name] == params[name])
    return {"recall@10": chosen["recall@10"], "sample": len(queries), "target": target,
            "tuning": table}
