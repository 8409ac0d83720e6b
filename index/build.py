"""Building an index from a catalog DB, adding items to one, and the sharded torchrun build.

Under torchrun every rank embeds a contiguous shard of the catalog and (for IVF types) fills a copy
of one trained index with it; rank 0 merges the shards into one index and writes it. Ranks exchange
through a scratch folder beside the output, so it must be on a file system they share.

A build claims its output first (`outputs.claim_dir`: never a folder holding its inputs or files
it did not write; an existing index only with `force`). A build and an add hold the index's
writer lock for their whole read-modify-write, so a second writer waits and then works on what
the first one wrote: nothing is lost. The next build of a target removes what killed builds of it
left behind (their temporary folders and the shard scratch folder).
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from amgan_search.device import barrier, rank_and_world
from amgan_search.errors import UserError
from amgan_search.index.faiss_index import (check_index_type, choose_index_type, import_faiss,
                                            index_params, make_index, set_search_params,
                                            training_sample, tune_search)
from amgan_search.index.index_dir import (OWN_KEYS, check_embedder, current, file_identity,
                                          item_records, read_embeddings, read_faiss,
                                          read_identities, read_items, read_labels,
                                          write_index_dir)
from amgan_search.io import atomic_path, remove_stale, writer_lock
from amgan_search.schema import Schema

SHARDED_TYPES = ("ivf", "ivfpq")  # types whose shards fill copies of one trained index and merge


def run_build(db: str | Path, out: str | Path, embedder_path: str | Path | None = None,
              device: str | None = None, **options) -> dict | None:
    """`index build` as one call: join torchrun's process group when launched under it, load the
    embedder on this process's device, build, leave the group. index.json's contents on rank 0."""
    from amgan_search.device import init_distributed, teardown_distributed
    from amgan_search.index.embed import load_embedder

    _, _, chosen, started = init_distributed(device)
    try:
        return build_index(db, out, load_embedder(embedder_path, device=str(chosen)), **options)
    finally:
        teardown_distributed(started)


def build_index(db: str | Path, out: str | Path, embedder, index_type: str = "auto",
                batch_size: int = 128, workers: int = 2, memory_budget_mb: float | None = None,
                progress: bool = True, seed: int = 0, force: bool = False) -> dict | None:
    """Embed every catalog item and write the index directory; returns index.json's contents.

    `out` must be new, empty, or (with `force`) an index, which then gets the new index as its
    next version. Under torch.distributed each rank embeds its shard (see the module docstring);
    ranks other than 0 return None.
    """
    check_index_type(index_type)
    import_faiss()
    out = Path(out)
    rank, _ = rank_and_world()
    claim_output(out, db, embedder, force)
    with writer_lock(out) if rank == 0 else nullcontext():
        if rank == 0:
            claim_output(out, db, embedder, force)  # again: a build that held the lock may have made it
            remove_leftovers(out)
        return _embed_and_write(db, out, embedder, index_type, batch_size, workers,
                                memory_budget_mb, progress, seed)


def claim_output(out: Path, db: str | Path, embedder, force: bool) -> None:
    """Refuse an output folder that holds the catalog, the embedder or anything but an index."""
    from amgan_search.catalog import Catalog
    from amgan_search.outputs import claim_dir

    root = Catalog.open(db).root
    claim_dir(out, "index", force, inputs=[db, root, getattr(embedder, "path", None)])


def remove_leftovers(out: Path) -> None:
    """What killed builds of `out` left: temporary folders (of dead processes) and shard scratch.
    Called under the writer lock, so no live build of `out` is using the scratch folder."""
    remove_stale(out)
    shutil.rmtree(_scratch(out), ignore_errors=True)


def _scratch(out: Path) -> Path:
    return out.parent / f".{out.name}.shards"


def _embed_and_write(db, out: Path, embedder, index_type: str, batch_size: int, workers: int,
                     memory_budget_mb, progress: bool, seed: int) -> dict | None:
    from torch.utils.data import Subset

    from amgan_search.index.embed import catalog_dataset, embed_dataset, shard_bounds

    rank, world = rank_and_world()
    t0 = time.perf_counter()
    dataset, items = catalog_dataset(db, embedder.size)
    if len(items) == 0:
        raise UserError(f"{db}: the catalog has no items to index")
    lo, hi = shard_bounds(len(items), rank, world)
    shard = embed_dataset(embedder, Subset(dataset, range(lo, hi)), batch_size, workers,
                          progress=progress and rank == 0,
                          desc="embedding" if world == 1 else f"embedding (rank {rank}/{world})")
    embed_s = time.perf_counter() - t0
    timing = {"embed_s": round(embed_s, 3), "images_per_s": round((hi - lo) / max(embed_s, 1e-9), 1)}
    extra = {"timing": timing, "world_size": world, "embedder_batch_size": batch_size}
    build = _Build(db, out, embedder, items, index_type, memory_budget_mb, extra, seed, t0)
    if world == 1:
        return build.write(shard)
    return _merge_shards(build, shard, rank, world)


class _Build:
    """What the last step of a build needs: the catalog rows, the options and the clock."""

    def __init__(self, db, out: Path, embedder, items, index_type: str, memory_budget_mb,
                 extra: dict, seed: int, t0: float):
        self.db, self.out, self.embedder, self.items = db, out, embedder, items
        self.index_type, self.memory_budget_mb = index_type, memory_budget_mb
        self.extra, self.seed, self.t0 = extra, seed, t0

    def kind_and_params(self) -> tuple[str, dict]:
        n, dim = len(self.items), self.embedder.dim
        kind = (choose_index_type(n, dim, self.memory_budget_mb) if self.index_type == "auto"
                else self.index_type)
        return kind, index_params(kind, n, dim, self.memory_budget_mb)

    def write(self, vectors: np.ndarray, index=None, params: dict | None = None) -> dict:
        """Tune and write the index over all vectors (`index` already filled, or None to fill one)."""
        schema, labels, items = _catalog_meta(self.db, self.items)
        extra = self.extra if params is None else {**self.extra, "params": params}
        return build_from_vectors(self.out, vectors, labels, item_records(items, labels, schema),
                                  schema, self.embedder.meta(), self.index_type,
                                  self.memory_budget_mb, self.db, extra, self.seed, index=index,
                                  started=self.t0)


def build_from_vectors(out: str | Path, vectors: np.ndarray, labels: np.ndarray, records,
                       schema: Schema, embedder_meta: Mapping[str, Any], index_type: str = "auto",
                       memory_budget_mb: float | None = None, db: str | Path | None = None,
                       extra: Mapping[str, Any] | None = None, seed: int = 0, index=None,
                       progress: bool = True, started: float | None = None) -> dict:
    """Train (if needed), fill, tune and write an index over row-aligned vectors and metadata.

    `index` may be passed already trained and filled (the sharded build merges it first);
    `started` (perf_counter) adds the whole build's time to index.json.
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
                           embedder_meta, db, extra, started=started)


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


# ---------------------------------------------------------------- the sharded build

def _merge_shards(build: _Build, shard: np.ndarray, rank: int, world: int) -> dict | None:
    """Gather the shards' vectors on rank 0, fill and merge the IVF parts, write on rank 0."""
    scratch = _scratch(build.out)
    if rank == 0:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    barrier()
    with atomic_path(scratch / f"vectors-{rank}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, shard)
    barrier()
    kind, params = build.kind_and_params()
    sharded = kind in SHARDED_TYPES
    vectors = None
    if rank == 0:
        vectors = np.concatenate([np.load(scratch / f"vectors-{r}.npy") for r in range(world)])
        if sharded:
            _train_once(scratch, kind, params, vectors, build.seed)
    barrier()
    if sharded:
        _fill_part(scratch, shard, len(build.items), rank, world)
    barrier()
    try:
        if rank == 0:
            index = _merged(scratch, world) if sharded else None
            return build.write(vectors, index=index, params=params if sharded else None)
        return None
    finally:
        barrier()
        if rank == 0:
            shutil.rmtree(scratch, ignore_errors=True)


def _train_once(scratch: Path, kind: str, params: dict, vectors: np.ndarray, seed: int) -> None:
    # One quantizer for all: trained once on the same seeded sample a 1-process build uses.
    faiss = import_faiss()
    trained = make_index(kind, vectors.shape[1], params)
    trained.train(training_sample(vectors, params, seed))
    faiss.write_index(trained, str(scratch / "trained.tmp"))
    os.replace(scratch / "trained.tmp", scratch / "trained.faiss")


def _fill_part(scratch: Path, shard: np.ndarray, n: int, rank: int, world: int) -> None:
    """This rank's vectors, under their global row ids, in a copy of the trained index."""
    from amgan_search.index.embed import shard_bounds

    faiss = import_faiss()
    lo, hi = shard_bounds(n, rank, world)
    part = faiss.read_index(str(scratch / "trained.faiss"))
    part.add_with_ids(np.ascontiguousarray(shard, dtype=np.float32), np.arange(lo, hi, dtype=np.int64))
    faiss.write_index(part, str(scratch / f"part-{rank}.tmp"))
    os.replace(scratch / f"part-{rank}.tmp", scratch / f"part-{rank}.faiss")


def _merged(scratch: Path, world: int):
    faiss = import_faiss()
    index = faiss.read_index(str(scratch / "part-0.faiss"))
    for r in range(1, world):
        # ids are already global rows, so nothing is added to them (add_id=0).
        index.merge_from(faiss.read_index(str(scratch / f"part-{r}.faiss")), 0)
    return index


# ---------------------------------------------------------------- adding items

def add_items(index_dir: str | Path, db: str | Path, embedder, ids: Sequence[str] | None = None,
              batch_size: int = 128, workers: int = 2, progress: bool = True) -> int:
    """Embed catalog items not yet in the index (optionally only `ids`) and add them; returns how many.

    Holds the index's writer lock from reading it to switching to the new version: a second
    `add` waits, then adds only what is still missing, so both batches are kept.
    """
    index_dir = Path(index_dir)
    check_embedder(current(index_dir).info, embedder, index_dir)  # refuse before waiting
    with writer_lock(index_dir):
        return _add(current(index_dir), index_dir, db, embedder, ids, batch_size, workers, progress)


def _add(version, index_dir: Path, db, embedder, ids, batch_size: int, workers: int,
         progress: bool) -> int:
    from amgan_search.index.embed import catalog_dataset, embed_dataset

    info = version.info
    check_embedder(info, embedder, index_dir)
    old = read_items(version)
    _, items = catalog_dataset(db, embedder.size)
    positions = _new_positions(db, items, set(old["id"].astype(str)), ids)
    if not positions:
        return 0
    index = read_faiss(version)
    vectors = np.asarray(read_embeddings(version), dtype=np.float32)
    labels = read_labels(version)
    dataset, new_items = catalog_dataset(db, embedder.size, positions)
    schema, new_labels, new_items = _catalog_meta(db, new_items)
    if schema.to_dict() != info["schema"]:
        raise UserError(f"{db}: its attribute schema differs from the index's ({index_dir})")
    start = time.perf_counter()
    new_vectors = embed_dataset(embedder, dataset, batch_size, workers, progress)
    index.add(new_vectors)
    added = item_records(new_items, new_labels, schema, len(old))
    records = old.to_dict("records") + added
    set_search_params(index, info["type"], info["params"])
    extra = {k: v for k, v in info.items() if k not in OWN_KEYS}
    extra["added"] = list(info.get("added", [])) + [
        {"count": len(positions), "seconds": round(time.perf_counter() - start, 3),
         "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    write_index_dir(index_dir, index, info["type"], info["params"],
                    np.concatenate([vectors, new_vectors]), np.concatenate([labels, new_labels]),
                    records, schema, info["embedder"], info.get("db") or db, extra,
                    identities=_identities(version, added))
    return len(positions)


def _identities(version, added: list[dict]) -> list | None:
    """The image files' identities of an index after `add`: the old rows' as recorded when they
    were embedded (a file changed since stays noticed), the new rows' now; None for an index
    written before they were recorded (all are taken now)."""
    old = read_identities(version)
    if old is None:
        return None
    return ([tuple(i) if i[0] >= 0 else None for i in old.tolist()]
            + [file_identity(r.get("path")) for r in added])


def _new_positions(db, items, have: set[str], ids: Sequence[str] | None) -> list[int]:
    """Catalog row positions of items not in the index (only `ids` when given; unknown ids refused)."""
    catalog_ids = items["id"].astype(str).tolist()
    wanted = None
    if ids is not None:
        wanted = {str(i) for i in ids}
        unknown = sorted(wanted - set(catalog_ids))
        if unknown:
            raise UserError(f"{db}: no item with id {unknown[0]!r}" +
                            (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    return [i for i, item_id in enumerate(catalog_ids)
            if item_id not in have and (wanted is None or item_id in wanted)]
