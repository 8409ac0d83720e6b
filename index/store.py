"""The FAISS index over a catalog: build, add, load, search, and the item metadata beside it.

An index directory, written as a whole under a temporary name and renamed into place:
  index.faiss      the FAISS index over L2-normalised embeddings, inner product (= cosine)
  embeddings.npy   the same vectors as float16, row-aligned, so `add` and exact re-search never re-embed
  labels.npy       int64 [n, M] attribute indices, row-aligned (-1 missing): the metrics' gallery labels
  items.db         SQLite table `items`: row (= FAISS id), id, path, split, category, gender, attributes
  index.json       embedder path and digest, dimension, type and parameters, count, build time, schema,
                   db path, and recall@10 against exact search for the approximate types

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

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from amgan_search.checkpoint import atomic_dir, atomic_path, read_json, write_json
from amgan_search.errors import UserError
from amgan_search.schema import Schema

INDEX_FILE = "index.faiss"
EMBEDDINGS = "embeddings.npy"
LABELS = "labels.npy"
ITEMS_DB = "items.db"
INFO = "index.json"

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf", "ivfpq")
FLAT_MAX_ITEMS = 50_000
RECALL_TARGET = 0.95  # approximate types tune nprobe / efSearch at build time up to this recall@10
RECALL_SAMPLE = 1000
META_COLUMNS = ("id", "path", "split", "category", "gender")

FAISS_MISSING = ("FAISS is not installed: pip install 'amgan-search[cpu]' "
                 "(or 'amgan-search[gpu]' on a machine with a CUDA GPU)")


def import_faiss():
    """The faiss module, or a one-line UserError naming the extra that provides it."""
    try:
        import faiss
    except ImportError:
        raise UserError(FAISS_MISSING) from None
    return faiss


def default_index_dir() -> Path:
    """Where `amgan-search demo` writes its index and `query` looks first ($AMGAN_SEARCH_HOME/index/default)."""
    home = os.environ.get("AMGAN_SEARCH_HOME") or "~/.cache/amgan-search"
    return Path(home).expanduser() / "index" / "default"


def gpu_count() -> int:
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


def index_params(kind: str, n: int, dim: int, memory_budget_mb: float | None = None) -> dict:
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
    raise UserError(f"unknown index type {kind!r}; valid: {', '.join(INDEX_TYPES)}")


def make_index(kind: str, dim: int, params: Mapping[str, Any]):
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


# ---------------------------------------------------------------- writing and reading the directory

def _items_records(items, labels: np.ndarray, schema: Schema, start_row: int = 0) -> list[dict]:
    """Metadata rows: META_COLUMNS that exist plus the attribute value names from the labels."""
    records = []
    cols = [c for c in META_COLUMNS if c in items.columns]
    for i, rec in enumerate(items[cols].to_dict("records")):
        out = {"row": start_row + i}
        for c in cols:
            v = rec[c]
            out[c] = None if (v is None or (isinstance(v, float) and math.isnan(v))) else (
                v.item() if hasattr(v, "item") else v)
        out.update(schema.decode(labels[i]))
        records.append(out)
    return records


def write_index_dir(out: str | Path, index, kind: str, params: Mapping[str, Any],
                    vectors: np.ndarray, labels: np.ndarray, records: Sequence[Mapping[str, Any]],
                    schema: Schema, embedder_meta: Mapping[str, Any], db: str | Path | None,
                    extra: Mapping[str, Any] | None = None) -> dict:
    """All files of an index directory, under a temporary name, renamed into place when complete."""
    import sqlite_utils

    faiss = import_faiss()
    if index.ntotal != len(vectors) or len(vectors) != len(labels) or len(labels) != len(records):
        raise UserError(f"{out}: index ({index.ntotal}), vectors ({len(vectors)}), labels "
                        f"({len(labels)}) and items ({len(records)}) disagree")
    info = {
        "format": 1,
        "type": kind,
        "params": dict(params),
        "metric": "inner_product",
        "dim": int(vectors.shape[1]),
        "count": int(len(vectors)),
        "embedder": dict(embedder_meta),
        "schema": schema.to_dict(),
        "db": str(Path(db).resolve()) if db is not None else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **dict(extra or {}),
    }
    with atomic_dir(out) as tmp:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        np.save(tmp / EMBEDDINGS, np.asarray(vectors, dtype=np.float16))
        np.save(tmp / LABELS, np.asarray(labels, dtype=np.int64))
        db_ = sqlite_utils.Database(str(tmp / ITEMS_DB))
        columns = {"row": int, "id": str, "path": str, "split": str, "category": str, "gender": str}
        columns.update({name: str for name in schema.names})
        db_["items"].create(columns, pk="row")
        db_["items"].insert_all(records, batch_size=10_000, alter=True)
        db_["items"].create_index(["id"])
        db_.conn.close()
        write_json(tmp / INFO, info)
    return info


def load_info(index_dir: str | Path) -> dict:
    """index.json of an index directory, with a one-line error when it is not an index."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such index directory")
    info = read_json(index_dir / INFO)
    for key in ("type", "dim", "count", "schema", "embedder"):
        if key not in info:
            raise UserError(f"{index_dir / INFO}: not an index description (no {key!r})")
    return info


def read_faiss(index_dir: str | Path):
    faiss = import_faiss()
    path = Path(index_dir) / INDEX_FILE
    if not path.is_file():
        raise UserError(f"{path}: no such file (the index is incomplete; rebuild it)")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise UserError(f"{path}: corrupt or unreadable FAISS index ({first[:160]})") from None


def _read_npy(path: Path, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: no such file (the index is incomplete; rebuild it)")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: corrupt array file ({str(exc).splitlines()[0][:160]})") from None


def read_items(index_dir: str | Path):
    """The metadata table as a DataFrame in row order."""
    import sqlite3

    import pandas as pd

    path = Path(index_dir) / ITEMS_DB
    if not path.is_file():
        raise UserError(f"{path}: no such file (the index is incomplete; rebuild it)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return pd.read_sql_query("SELECT * FROM items ORDER BY row", conn)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise UserError(f"{path}: corrupt item metadata ({exc})") from None


# ---------------------------------------------------------------- building from a catalog

def _dist() -> tuple[int, int]:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def _catalog_meta(db: str | Path, items):
    """(schema, labels [n, M], items with paths made absolute) from the catalog DB."""
    from amgan_search.catalog import Catalog

    catalog = Catalog.open(db)
    labels = np.asarray(catalog.labels(items), dtype=np.int64)
    items = items.copy()
    if "path" in items.columns:
        items["path"] = [str(resolve_item_path(catalog, db, p)) for p in items["path"]]
    return catalog.schema, labels, items


def resolve_item_path(catalog, db: str | Path, path: str) -> Path:
    """A catalog path as a file path a reader can open from anywhere."""
    for name in ("resolve", "resolve_path", "image_path"):
        fn = getattr(catalog, name, None)
        if callable(fn):
            return Path(fn(path))
    p = Path(path)
    if p.is_absolute():
        return p
    root = getattr(catalog, "root", None)
    return (Path(root) if root is not None else Path(db).resolve().parent) / p


def build_from_vectors(out: str | Path, vectors: np.ndarray, labels: np.ndarray, records,
                       schema: Schema, embedder_meta: Mapping[str, Any], index_type: str = "auto",
                       memory_budget_mb: float | None = None, db: str | Path | None = None,
                       extra: Mapping[str, Any] | None = None, seed: int = 0, index=None,
                       progress: bool = True) -> dict:
    """Train (if needed), fill, tune and write an index over row-aligned vectors and metadata.

    `index` may be passed already trained and filled (the sharded build merges it first).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    if n == 0:
        raise UserError(f"{db or out}: the catalog has no items to index")
    kind = choose_index_type(n, dim, memory_budget_mb) if index_type == "auto" else index_type
    params = index_params(kind, n, dim, memory_budget_mb)
    start = time.perf_counter()
    if index is None:
        index = make_index(kind, dim, params)
        if not index.is_trained:
            index.train(training_sample(vectors, params, seed))
        index.add(vectors)
    else:
        params = dict(params, **(extra or {}).get("params", {}))
    fill_s = time.perf_counter() - start
    recall = tune_search(index, kind, params, vectors, seed=seed)
    extra = {k: v for k, v in dict(extra or {}).items() if k != "params"}
    extra.setdefault("timing", {})["index_s"] = round(fill_s, 3)
    extra["index_type_requested"] = index_type
    extra["memory_budget_mb"] = memory_budget_mb
    extra["recall"] = recall
    return write_index_dir(out, index, kind, params, vectors, labels, records, schema,
                           embedder_meta, db, extra)


def build_index(db: str | Path, out: str | Path, embedder, index_type: str = "auto",
                batch_size: int = 128, workers: int = 2, memory_budget_mb: float | None = None,
                progress: bool = True, seed: int = 0) -> dict | None:
    """Embed every catalog item and write the index directory; returns index.json's contents.

    Under torch.distributed (torchrun), every rank embeds a contiguous shard and (for IVF types)
    fills a copy of one trained index with it; rank 0 merges the shards into one index and writes
    it. Ranks exchange through a scratch folder beside `out`, so `out` must be on a file system
    they share. Other ranks return None.
    """
    from torch.utils.data import Subset

    from .embed import catalog_dataset, embed_dataset, shard_bounds

    if index_type not in INDEX_TYPES:
        raise UserError(f"unknown index type {index_type!r}; valid: {', '.join(INDEX_TYPES)}")
    import_faiss()
    out = Path(out)
    rank, world = _dist()
    t0 = time.perf_counter()
    dataset, items = catalog_dataset(db, embedder.size)
    n = len(items)
    if n == 0:
        raise UserError(f"{db}: the catalog has no items to index")
    lo, hi = shard_bounds(n, rank, world)
    shard = embed_dataset(embedder, Subset(dataset, range(lo, hi)), batch_size, workers,
                          progress=progress and rank == 0,
                          desc="embedding" if world == 1 else f"embedding (rank {rank}/{world})")
    embed_s = time.perf_counter() - t0
    timing = {"embed_s": round(embed_s, 3), "images_per_s": round((hi - lo) / max(embed_s, 1e-9), 1)}
    extra = {"timing": timing, "world_size": world, "embedder_batch_size": batch_size}

    if world == 1:
        schema, labels, items = _catalog_meta(db, items)
        info = build_from_vectors(out, shard, labels, _items_records(items, labels, schema), schema,
                                  embedder.meta(), index_type, memory_budget_mb, db, extra, seed)
        info["timing"]["total_s"] = round(time.perf_counter() - t0, 3)
        write_json(out / INFO, info)
        return info
    return _merge_shards(db, out, embedder, items, shard, rank, world, index_type,
                         memory_budget_mb, extra, seed, t0)


def _merge_shards(db, out: Path, embedder, items, shard: np.ndarray, rank: int, world: int,
                  index_type: str, memory_budget_mb, extra: dict, seed: int, t0: float):
    import shutil

    faiss = import_faiss()
    scratch = out.parent / f".{out.name}.shards"
    if rank == 0:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    _barrier()
    with atomic_path(scratch / f"vectors-{rank}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, shard)
    _barrier()
    n, dim = len(items), embedder.dim
    kind = choose_index_type(n, dim, memory_budget_mb) if index_type == "auto" else index_type
    params = index_params(kind, n, dim, memory_budget_mb)
    sharded = kind in ("ivf", "ivfpq")
    vectors = None
    if rank == 0:
        vectors = np.concatenate([np.load(scratch / f"vectors-{r}.npy") for r in range(world)])
        if sharded:
            # One quantizer for all: trained once on the same seeded sample a 1-process build uses.
            trained = make_index(kind, dim, params)
            trained.train(training_sample(vectors, params, seed))
            faiss.write_index(trained, str(scratch / "trained.tmp"))
            os.replace(scratch / "trained.tmp", scratch / "trained.faiss")
    _barrier()
    if sharded:
        from .embed import shard_bounds

        lo, hi = shard_bounds(n, rank, world)
        part = faiss.read_index(str(scratch / "trained.faiss"))
        part.add_with_ids(np.ascontiguousarray(shard, dtype=np.float32),
                          np.arange(lo, hi, dtype=np.int64))
        faiss.write_index(part, str(scratch / f"part-{rank}.tmp"))
        os.replace(scratch / f"part-{rank}.tmp", scratch / f"part-{rank}.faiss")
    _barrier()
    info = None
    try:
        if rank == 0:
            index = None
            if sharded:
                index = faiss.read_index(str(scratch / "part-0.faiss"))
                for r in range(1, world):
                    # ids are already global rows, so nothing is added to them (add_id=0).
                    index.merge_from(faiss.read_index(str(scratch / f"part-{r}.faiss")), 0)
            schema, labels, items = _catalog_meta(db, items)
            info = build_from_vectors(out, vectors, labels, _items_records(items, labels, schema),
                                      schema, embedder.meta(), index_type, memory_budget_mb, db,
                                      {**extra, "params": params} if sharded else extra, seed,
                                      index=index)
            info["timing"]["total_s"] = round(time.perf_counter() - t0, 3)
            write_json(out / INFO, info)
    finally:
        _barrier()
        if rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)
    return info


def add_items(index_dir: str | Path, db: str | Path, embedder, ids: Sequence[str] | None = None,
              batch_size: int = 128, workers: int = 2, progress: bool = True) -> int:
    """Embed catalog items not yet in the index (optionally only `ids`) and add them; returns how many."""
    from .embed import catalog_dataset, embed_dataset

    index_dir = Path(index_dir)
    info = load_info(index_dir)
    check_embedder(info, embedder, index_dir)
    index = read_faiss(index_dir)
    vectors = np.asarray(_read_npy(index_dir / EMBEDDINGS), dtype=np.float32)
    labels = _read_npy(index_dir / LABELS)
    old = read_items(index_dir)
    have = set(old["id"].astype(str))
    dataset, items = catalog_dataset(db, embedder.size)
    catalog_ids = items["id"].astype(str).tolist()
    wanted = None
    if ids is not None:
        wanted = {str(i) for i in ids}
        unknown = sorted(wanted - set(catalog_ids))
        if unknown:
            raise UserError(f"{db}: no item with id {unknown[0]!r}" +
                            (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    positions = [i for i, item_id in enumerate(catalog_ids)
                 if item_id not in have and (wanted is None or item_id in wanted)]
    if not positions:
        return 0
    dataset, new_items = catalog_dataset(db, embedder.size, positions)
    schema, new_labels, new_items = _catalog_meta(db, new_items)
    if schema.to_dict() != info["schema"]:
        raise UserError(f"{db}: its attribute schema differs from the index's ({index_dir})")
    start = time.perf_counter()
    new_vectors = embed_dataset(embedder, dataset, batch_size, workers, progress)
    index.add(new_vectors)
    records = old.to_dict("records") + _items_records(new_items, new_labels, schema, len(old))
    kind = info["type"]
    set_search_params(index, kind, info["params"])
    extra = {k: v for k, v in info.items()
             if k not in ("format", "type", "params", "metric", "dim", "count", "embedder", "schema",
                          "db", "created")}
    extra["added"] = list(info.get("added", [])) + [
        {"count": len(positions), "seconds": round(time.perf_counter() - start, 3),
         "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    write_index_dir(index_dir, index, kind, info["params"],
                    np.concatenate([vectors, new_vectors]), np.concatenate([labels, new_labels]),
                    records, schema, info["embedder"], info.get("db") or db, extra)
    return len(positions)


def check_embedder(info: Mapping[str, Any], embedder, where: str | Path) -> None:
    """Refuse an embedder other than the one the index was built with: its vectors are not comparable."""
    want = info["embedder"].get("digest")
    if embedder.digest != want:
        raise UserError(
            f"{where}: built with embedder {info['embedder'].get('path') or 'shipped classifier-cam'} "
            f"(digest {str(want)[:12]}), not this one (digest {str(embedder.digest)[:12]}); "
            "rebuild the index with `amgan-search index build`")


def describe(info: Mapping[str, Any]) -> str:
    """index.json as a few lines for `index info`."""
    schema = info["schema"]
    emb = info["embedder"]
    lines = [
        f"type: {info['type']} {json.dumps(info.get('params', {}))}",
        f"items: {info['count']:,}   dim: {info['dim']}   metric: {info.get('metric', 'inner_product')}",
        f"embedder: {emb.get('path') or 'shipped classifier-cam'} (digest {str(emb.get('digest'))[:12]})",
        f"schema: " + "; ".join(f"{k} ({len(v)})" for k, v in schema.items()),
        f"db: {info.get('db')}",
        f"built: {info.get('created')}   timing: {json.dumps(info.get('timing', {}))}",
    ]
    recall = info.get("recall", {})
    if recall and not recall.get("exact"):
        lines.append(f"recall@10 vs exact: {recall.get('recall@10')} on {recall.get('sample')} queries")
    for a in info.get("added", []):
        lines.append(f"added: {a['count']} items at {a['when']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- searching

class Searcher:
    """A loaded index: FAISS search, metadata joins and the `where` filter. Load once, search often."""

    def __init__(self, index_dir: str | Path, use_gpu: bool | None = None):
        self.dir = Path(index_dir)
        self.info = load_info(self.dir)
        self.schema = Schema.from_dict(self.info["schema"])
        self.kind = self.info["type"]
        index = read_faiss(self.dir)
        set_search_params(index, self.kind, self.info.get("params", {}))
        self.items = read_items(self.dir)
        self.labels = _read_npy(self.dir / LABELS)
        n = self.info["count"]
        if not (index.ntotal == n == len(self.items) == len(self.labels)) or index.d != self.info["dim"]:
            raise UserError(f"{self.dir}: index files disagree (index {index.ntotal} x {index.d}, "
                            f"items {len(self.items)}, labels {len(self.labels)}, index.json {n}); rebuild it")
        if use_gpu is None:
            use_gpu = gpu_count() > 0
        if use_gpu and self.kind != "hnsw":  # HNSW has no GPU version
            faiss = import_faiss()
            index = faiss.index_cpu_to_all_gpus(index)
        self.index = index
        self.ids = self.items["id"].tolist()
        self._row_of = {str(i): r for r, i in enumerate(self.ids)}

    @property
    def count(self) -> int:
        return int(self.info["count"])

    def embeddings(self) -> np.ndarray:
        """The stored float16 vectors, memory-mapped (exact re-search without re-embedding)."""
        return _read_npy(self.dir / EMBEDDINGS, mmap=True)

    def row_of(self, item_id) -> int:
        """Row of an item id, or -1 when the item is not in the index."""
        return self._row_of.get(str(item_id), -1)

    def embedder(self, device: str | None = None):
        """The embedder the index was built with, loaded and checked against its digest."""
        from .embed import load_embedder

        emb = load_embedder(self.info["embedder"].get("path"), device=device)
        self.check_embedder(emb)
        return emb

    def check_embedder(self, embedder) -> None:
        check_embedder(self.info, embedder, self.dir)

    def allowed(self, where: Mapping[str, str] | None) -> np.ndarray | None:
        """Boolean row mask for `key=value` filters (all must hold), None for no filter."""
        if not where:
            return None
        mask = np.ones(len(self.items), dtype=bool)
        for key, value in where.items():
            if key not in self.items.columns or key == "row":
                valid = [c for c in self.items.columns if c != "row"]
                raise UserError(f"--where: unknown field {key!r}; valid: {', '.join(valid)}")
            mask &= self.items[key].astype(str).to_numpy() == str(value)
        return mask

    def search(self, vectors: np.ndarray, k: int, where: Mapping[str, str] | None = None,
               exclude_rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and scores [B, k] (-1 / -inf past the end), filtered by `where`, each query's
        `exclude_rows[i]` (its own item, -1 for none) dropped. Filtering searches more, then cuts."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.info["dim"]:
            raise UserError(f"{self.dir}: query vectors must be [B, {self.info['dim']}], "
                            f"got {list(vectors.shape)}")
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        b, n = len(vectors), self.count
        mask = self.allowed(where)
        exclude = np.full(b, -1, dtype=np.int64) if exclude_rows is None else np.asarray(exclude_rows)
        rows_out = np.full((b, k), -1, dtype=np.int64)
        scores_out = np.full((b, k), -np.inf, dtype=np.float32)
        todo = np.arange(b)
        fetch = min(n, k + 1 if mask is None else max(4 * k, k + 16))
        while len(todo):
            scores, rows = self.index.search(vectors[todo], fetch)
            unfinished = []
            for j, q in enumerate(todo):
                keep = rows[j] >= 0
                keep &= rows[j] != exclude[q]
                if mask is not None:
                    keep &= mask[np.clip(rows[j], 0, None)]
                r, s = rows[j][keep][:k], scores[j][keep][:k]
                rows_out[q, :len(r)], scores_out[q, :len(r)] = r, s
                if len(r) < k and fetch < n:
                    unfinished.append(q)
            todo = np.asarray(unfinished, dtype=np.int64)
            fetch = min(n, fetch * 4)
        return rows_out, scores_out

    def results(self, rows: np.ndarray, scores: np.ndarray) -> list[list[dict]]:
        """Join rows with the metadata: per query, [{rank, id, score, attributes, path, ...}]."""
        out = []
        names = self.schema.names
        extra = [c for c in ("split", "category", "gender") if c in self.items.columns]
        for r_row, s_row in zip(rows, scores):
            hits = []
            for rank, (r, s) in enumerate(zip(r_row, s_row), start=1):
                if r < 0:
                    break
                item = self.items.iloc[int(r)]
                hits.append({
                    "rank": rank,
                    "id": _plain(item["id"]),
                    "score": round(float(s), 6),
                    "attributes": {a: _plain(item[a]) for a in names},
                    "path": _plain(item.get("path")),
                    **{c: _plain(item[c]) for c in extra},
                })
            out.append(hits)
        return out


def _plain(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


# ---------------------------------------------------------------- the query pipeline

class QueryResult:
    """One query: the input, its edit and attention mask (None unedited), targets and results."""

    def __init__(self, image, edited, mask, targets, results):
        self.image, self.edited, self.mask = image, edited, mask
        self.targets, self.results = targets, results


class Retriever:
    """image -> G(x, targets) -> embed -> FAISS top-k -> metadata. Loads everything once (warm path)."""

    def __init__(self, index_dir: str | Path, model: str | Path | None = None, device: str | None = None,
                 searcher: Searcher | None = None, embedder=None, manipulator=None):
        self.searcher = searcher if searcher is not None else Searcher(index_dir)
        self.device = device
        self.embedder = embedder if embedder is not None else self.searcher.embedder(device=device)
        self.searcher.check_embedder(self.embedder)
        self._model = model
        self._manipulator = manipulator

    @property
    def schema(self) -> Schema:
        return self.searcher.schema

    @property
    def manipulator(self):
        """Loaded on the first edit, so unedited searches never pay for the generator."""
        if self._manipulator is None:
            from amgan_search.manipulate import Manipulator

            self._manipulator = Manipulator.load(self._model, device=self.device)
        return self._manipulator

    def validate(self, targets: Mapping[str, str]) -> dict[str, str]:
        """Attribute names and values checked against the index's schema (UserError lists the valid ones)."""
        for name, value in targets.items():
            self.schema.attribute(name).index(value)
        return dict(targets)

    def embed_image(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 -> [1, d], through the same square fit the catalog images had."""
        from amgan_search.images import fit_square, to_tensor

        return self.embedder(to_tensor(fit_square(image, self.embedder.size)[0]))

    def edit(self, image: np.ndarray, targets: Mapping[str, str], only_region: str | None = None):
        """(edited uint8, combined attention mask uint8 HxW or None)."""
        manipulator = self.manipulator
        for name, value in targets.items():
            manipulator.schema.attribute(name).index(value)
        edited, masks = manipulator.edit(image, only_region=only_region, **targets)
        return np.asarray(edited, dtype=np.uint8), combine_masks(masks)

    def query(self, image: np.ndarray, targets: Mapping[str, str] | None = None, k: int = 10,
              where: Mapping[str, str] | None = None, edit: bool = True,
              only_region: str | None = None) -> QueryResult:
        targets = self.validate(targets or {})
        edited = mask = None
        if edit and targets:
            edited, mask = self.edit(image, targets, only_region)
        elif only_region and edit:
            raise UserError("--only-region: needs a target attribute to edit")
        vectors = self.embed_image(edited if edited is not None else image)
        rows, scores = self.searcher.search(vectors, k, where=where)
        results = self.searcher.results(rows, scores)[0]
        return QueryResult(image, edited, mask, targets if edited is not None else {}, results)

    def read_result_image(self, path: str) -> np.ndarray | None:
        """A result's catalog image (through the catalog DB when it is there), None if unreadable."""
        from amgan_search.images import load_image

        try:
            db = self.searcher.info.get("db")
            if db and Path(db).is_file():
                if getattr(self, "_catalog", None) is None:
                    from amgan_search.catalog import Catalog

                    self._catalog = Catalog.open(db)
                return self._catalog.read_image(path)
            return load_image(path)
        except UserError:
            return None

    def save(self, result: QueryResult, out: str | Path) -> str | None:
        """Write edited.png, mask.png and contact.png into `out`; the edited image's path (or None)."""
        from amgan_search.images import save_image

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        edited_path = None
        if result.edited is not None:
            edited_path = str((out / "edited.png").resolve())
            save_image(edited_path, result.edited)
        if result.mask is not None:
            save_image(out / "mask.png", result.mask)
        thumbs = [(self.read_result_image(r["path"]) if r.get("path") else None,
                   f"#{r['rank']} {r['id']} {r['score']:.3f}\n" +
                   " ".join(str(v) for v in r["attributes"].values()))
                  for r in result.results]
        sheet = contact_sheet(result.image, result.edited, result.mask, thumbs, result.targets)
        save_image(out / "contact.png", sheet)
        return edited_path


def combine_masks(masks) -> np.ndarray | None:
    """The manipulator's masks (dict of HxW in [0,1] or uint8) -> one uint8 HxW: their maximum."""
    if not masks:
        return None
    arrays = []
    for m in (masks.values() if isinstance(masks, Mapping) else masks):
        a = m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)
        a = np.squeeze(a).astype(np.float32)
        if a.ndim == 3:
            a = a.max(axis=-1 if a.shape[-1] in (1, 3) else 0)
        arrays.append(a / 255.0 if a.max() > 1.0 else a)
    shape = arrays[0].shape
    arrays = [a for a in arrays if a.shape == shape]
    return (np.clip(np.max(arrays, axis=0), 0, 1) * 255 + 0.5).astype(np.uint8)


def contact_sheet(query: np.ndarray, edited: np.ndarray | None, mask: np.ndarray | None,
                  thumbs: Sequence[tuple[np.ndarray | None, str]], targets: Mapping[str, str],
                  tile: int = 128, columns: int = 5) -> np.ndarray:
    """One PNG: query, edit and mask on the first row, the top-k below, each captioned."""
    from PIL import Image, ImageDraw

    from amgan_search.images import fit_square

    caption_h = 30
    first = [(query, "query")]
    if edited is not None:
        first.append((edited, "edit: " + " ".join(f"{k}={v}" for k, v in targets.items())))
    if mask is not None:
        first.append((np.repeat(mask[..., None], 3, axis=2), "attention mask"))
    rows = [first] + [list(thumbs[i:i + columns]) for i in range(0, len(thumbs), columns)]
    width = max(len(r) for r in rows) * tile
    sheet = Image.new("RGB", (width, len(rows) * (tile + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for y, row in enumerate(rows):
        for x, (image, caption) in enumerate(row):
            left, top = x * tile, y * (tile + caption_h)
            if image is None:
                draw.rectangle([left + 4, top + 4, left + tile - 4, top + tile - 4], fill=(220, 220, 220))
                draw.text((left + 8, top + tile // 2), "unreadable", fill=(0, 0, 0))
            else:
                sheet.paste(Image.fromarray(fit_square(np.asarray(image, dtype=np.uint8), tile)[0]),
                            (left, top))
            for i, line in enumerate(caption.split("\n")[:2]):
                draw.text((left + 3, top + tile + 2 + 13 * i), line[:24], fill=(0, 0, 0))
    return np.asarray(sheet)
