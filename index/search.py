"""A loaded index: FAISS search, the `where` filter on the metadata, and results joined with it.

What the index was built from is checked (`index_dir`): the catalog DB when the index loads
(damaged, or imported again since: one line naming it), each result's image file before the result
is returned (changed or gone since: the index is stale, one line naming the file). A `where` filter
names only fields the catalog fills and values an item holds; anything else is one line naming
what it can filter on, never a filter that silently matches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.index.faiss_index import gpu_count, import_faiss, set_search_params
from amgan_search.index.index_dir import (StaleIndex, Version, check_embedder, current,
                                          db_seal, file_identity, plain, read_embeddings,
                                          read_faiss, read_identities, read_items, read_labels,
                                          version_number)
from amgan_search.schema import Schema


@dataclass(frozen=True)
class Hit:
    """One result of a query: its rank (from 1), the item's id, the cosine score, its attributes by
    name, its image path as the catalog records it, and the catalog's metadata columns among
    split, category and gender that the catalog has."""
    rank: int
    id: Any
    score: float
    attributes: dict[str, Any]
    path: str | None
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The shape `query --json` and the server answer with: the metadata beside the rest."""
        return {"rank": self.rank, "id": self.id, "score": self.score,
                "attributes": self.attributes, "path": self.path, **self.metadata}


class Searcher:
    """A loaded index: FAISS search, metadata joins and the `where` filter. Load once, search often.

    Every file comes from one version of the index (`index_dir.current`), each checked against its
    sha256, so a writer switching versions meanwhile is never seen half-way.
    """

    def __init__(self, index_dir: str | Path, use_gpu: bool | None = None):
        self.dir = Path(index_dir)
        seen = version_number(self.dir)
        try:
            index = self._load(current(self.dir))
        except UserError:
            # Two writers may have switched versions while this loaded, removing the one it had
            # resolved: then load the version current now, once. A damaged index fails again.
            if version_number(self.dir) == seen:
                raise
            index = self._load(current(self.dir))
        if use_gpu is None:
            use_gpu = gpu_count() > 0
        if use_gpu and self.kind != "hnsw":  # HNSW has no GPU version
            faiss = import_faiss()
            index = faiss.index_cpu_to_all_gpus(index)
        self.index = index
        self.ids = self.items["id"].tolist()
        self._row_of = {str(i): r for r, i in enumerate(self.ids)}
        self.check_catalog()

    def _load(self, version: Version):
        """Read one version's files into self; returns its FAISS index (on the CPU)."""
        self.version = version
        self.info = version.info
        self.schema = Schema.from_dict(self.info["schema"])
        self.kind = self.info["type"]
        index = read_faiss(version)
        set_search_params(index, self.kind, self.info.get("params", {}))
        self.items = read_items(version)
        self.labels = read_labels(version)
        self.identities = read_identities(version)
        self._fields = None
        # Mapped now, read when used: the mapping outlives a later version switch.
        self._embeddings = read_embeddings(version, mmap=True)
        self._check_files_agree(index)
        return index

    def _check_files_agree(self, index) -> None:
        n, dim, m = self.info["count"], self.info["dim"], self.schema.n_attributes
        where = self.version.folder
        found = {"index.faiss": (index.ntotal, index.d), "items.db": (len(self.items), None),
                 "labels.npy": self.labels.shape, "embeddings.npy": self._embeddings.shape}
        want = {"index.faiss": (n, dim), "items.db": (n, None), "labels.npy": (n, m),
                "embeddings.npy": (n, dim)}
        for name, shape in found.items():
            if tuple(shape) != want[name]:
                got = " x ".join(str(s) for s in shape if s is not None)
                expect = " x ".join(str(s) for s in want[name] if s is not None)
                raise UserError(f"{where / name}: holds {got}, but index.json says {expect} "
                                "(the index's files disagree; rebuild it)")
        if self.labels.dtype != np.int64 or self._embeddings.dtype != np.float16:
            raise UserError(f"{where}: labels.npy must be int64 and embeddings.npy float16, got "
                            f"{self.labels.dtype} and {self._embeddings.dtype}; rebuild the index")

    @property
    def count(self) -> int:
        return int(self.info["count"])

    def embeddings(self) -> np.ndarray:
        """The stored float16 vectors, memory-mapped (exact re-search without re-embedding)."""
        return self._embeddings

    def row_of(self, item_id) -> int:
        """Row of an item id, or -1 when the item is not in the index."""
        return self._row_of.get(str(item_id), -1)

    def embedder(self, device: str | None = None):
        """The embedder the index was built with, loaded and checked against its digest."""
        from amgan_search.index.embed import index_embedder

        return index_embedder(self.dir, device=device, info=self.info)

    def check_embedder(self, embedder) -> None:
        check_embedder(self.info, embedder, self.dir)

    # -- the catalog behind the index --------------------------------------------------------------

    def _db(self) -> Path | None:
        db = self.info.get("db")
        return Path(db) if db and Path(db).is_file() else None

    def check_catalog(self) -> None:
        """The catalog DB the index was built from, where it is still there: damaged, or
        imported again since the build (its header's checksum differs), is one line naming it."""
        from amgan_search import db_checksum

        db = self._db()
        if db is None:
            return
        if db_checksum.verify(db) is False:
            raise StaleIndex(f"{db}: damaged catalog DB (its checksum does not match its "
                             f"contents), the catalog of the index {self.dir}; import it again")
        recorded = self.info.get("db_checksum")
        if recorded is not None and db_seal(db) != recorded:
            raise StaleIndex(f"{self.dir}: stale: its catalog DB {db} changed since the index was "
                             "built; rebuild the index (`amgan-search index build --force`)")

    def open_catalog(self):
        """The catalog DB the index was built from, opened (None when it is not there), checked
        again: an image reader that meets a damaged DB names it."""
        from amgan_search.catalog import Catalog

        db = self._db()
        if db is None:
            return None
        self.check_catalog()
        return Catalog.open(db, check=False)

    def check_fresh(self, rows: np.ndarray) -> None:
        """Each row's image file as it was when embedded (size and mtime), else `StaleIndex`
        naming the first that changed or went: its attributes are no longer what the index
        holds. Rows without a record (an index written before, a path that never was a file
        here) pass."""
        if self.identities is None:
            return
        paths = self.items["path"] if "path" in self.items.columns else None
        for r in np.unique(np.asarray(rows)[np.asarray(rows) >= 0]):
            recorded = self.identities[int(r)]
            if recorded[0] < 0 or paths is None:
                continue
            path = paths.iloc[int(r)]
            now = file_identity(path)
            if now != tuple(int(v) for v in recorded):
                what = "is gone" if now is None else "changed"
                raise StaleIndex(f"{self.dir}: stale: the catalog image {path} {what} since the "
                                 "index was built; rebuild the index (`amgan-search index build "
                                 "--force`)")

    # -- the where filter ------------------------------------------------------------------------

    def filter_fields(self) -> list[str]:
        """Metadata fields a `where` filter can name: the columns at least one item fills (a
        catalog without genders has an empty gender column, which nothing could match)."""
        if self._fields is None:
            self._fields = [c for c in self.items.columns
                            if c != "row" and self.items[c].notna().any()]
        return self._fields

    def allowed(self, where: Mapping[str, str] | None) -> np.ndarray | None:
        """Boolean row mask for `key=value` filters (all must hold), None for no filter. A field the
        catalog does not fill, or a value no item holds, is a UserError naming what there is."""
        if not where:
            return None
        mask = np.ones(len(self.items), dtype=bool)
        fields = self.filter_fields()
        for key, value in where.items():
            if key not in fields:
                raise UserError(f"--where: unknown field {key!r}; valid: {', '.join(fields)}")
            column = self.items[key].astype(str).to_numpy()
            match = column == str(value)
            if not match.any():
                values = sorted(set(self.items[key].dropna().astype(str)))
                shown = ", ".join(values[:20]) + (f" (and {len(values) - 20} more)"
                                                  if len(values) > 20 else "")
                raise UserError(f"--where: no item has {key} {str(value)!r}; values: {shown}")
            mask &= match
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

    def results(self, rows: np.ndarray, scores: np.ndarray) -> list[list[Hit]]:
        """Join rows with the metadata: per query, its `Hit`s in rank order; a row whose image
        changed since the index was built is `StaleIndex` (`check_fresh`)."""
        self.check_fresh(rows)
        out = []
        names = self.schema.names
        extra = [c for c in ("split", "category", "gender") if c in self.items.columns]
        for r_row, s_row in zip(rows, scores):
            hits = []
            for rank, (r, s) in enumerate(zip(r_row, s_row), start=1):
                if r < 0:
                    break
                item = self.items.iloc[int(r)]
                hits.append(Hit(rank=rank, id=plain(item["id"]), score=round(float(s), 6),
                                attributes={a: plain(item[a]) for a in names},
                                path=plain(item.get("path")),
                                metadata={c: plain(item[c]) for c in extra}))
            out.append(hits)
        return out

