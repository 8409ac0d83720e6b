"""The index folder: its files, written as a whole under a temporary name and renamed into place.

  index.faiss      the FAISS index over L2-normalised embeddings, inner product (= cosine)
  embeddings.npy   the same vectors as float16, row-aligned, so `add` and exact re-search never re-embed
  labels.npy       int64 [n, M] attribute indices, row-aligned (-1 missing): the metrics' gallery labels
  items.db         SQLite table `items`: row (= FAISS id), id, path, split, category, gender, attributes
  index.json       embedder path and digest, dimension, type and parameters, count, build time, schema,
                   db path, and recall@10 against exact search for the approximate types
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.index.faiss_index import import_faiss
from amgan_search.io import atomic_dir, read_json, write_json
from amgan_search.schema import Schema

INDEX_FILE = "index.faiss"
EMBEDDINGS = "embeddings.npy"
LABELS = "labels.npy"
ITEMS_DB = "items.db"
INFO = "index.json"

META_COLUMNS = ("id", "path", "split", "category", "gender")
# index.json keys write_index_dir sets itself; the rest (timing, recall, added...) travel as `extra`.
OWN_KEYS = ("format", "type", "params", "metric", "dim", "count", "embedder", "schema", "db", "created")

INCOMPLETE = "no such file (the index is incomplete; rebuild it)"


def default_index_dir() -> Path:
    """Where `amgan-search demo` writes its index and `query` looks first ($AMGAN_SEARCH_HOME/index/default)."""
    home = os.environ.get("AMGAN_SEARCH_HOME") or "~/.cache/amgan-search"
    return Path(home).expanduser() / "index" / "default"


def default_or_given(index_dir: str | Path | None) -> Path:
    """`index_dir`, or the default index when None (a one-line error saying how to make one)."""
    if index_dir is not None:
        return Path(index_dir)
    index_dir = default_index_dir()
    if not (index_dir / INFO).is_file():
        raise UserError(f"{index_dir}: no default index; run `amgan-search demo` or "
                        "`amgan-search index build --db CATALOG.db --out DIR` and pass --index DIR")
    return index_dir


def plain(v):
    """A metadata cell as a plain Python value: NaN and None -> None, numpy scalars unwrapped."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def item_records(items, labels: np.ndarray, schema: Schema, start_row: int = 0) -> list[dict]:
    """Metadata rows: META_COLUMNS that exist plus the attribute value names from the labels."""
    records = []
    cols = [c for c in META_COLUMNS if c in items.columns]
    for i, rec in enumerate(items[cols].to_dict("records")):
        out = {"row": start_row + i}
        out.update({c: plain(rec[c]) for c in cols})
        out.update(schema.decode(labels[i]))
        records.append(out)
    return records


# ---------------------------------------------------------------- writing

def write_index_dir(out: str | Path, index, kind: str, params: Mapping[str, Any],
                    vectors: np.ndarray, labels: np.ndarray, records: Sequence[Mapping[str, Any]],
                    schema: Schema, embedder_meta: Mapping[str, Any], db: str | Path | None,
                    extra: Mapping[str, Any] | None = None) -> dict:
    """All files of an index directory, under a temporary name, renamed into place when complete."""
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
        _write_items(tmp / ITEMS_DB, records, schema)
        write_json(tmp / INFO, info)
    return info


def _write_items(path: Path, records: Sequence[Mapping[str, Any]], schema: Schema) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(str(path))
    columns = {"row": int, "id": str, "path": str, "split": str, "category": str, "gender": str}
    columns.update({name: str for name in schema.names})
    db["items"].create(columns, pk="row")
    db["items"].insert_all(records, batch_size=10_000, alter=True)
    db["items"].create_index(["id"])
    db.conn.close()


def rewrite_info(index_dir: str | Path, info: Mapping[str, Any]) -> None:
    """Replace index.json of a complete index (atomically), e.g. to add the whole build's time."""
    write_json(Path(index_dir) / INFO, info)


# ---------------------------------------------------------------- reading

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
    """The FAISS index of an index directory (one-line error when missing or corrupt)."""
    faiss = import_faiss()
    path = Path(index_dir) / INDEX_FILE
    if not path.is_file():
        raise UserError(f"{path}: {INCOMPLETE}")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise UserError(f"{path}: corrupt or unreadable FAISS index ({first[:160]})") from None


def _read_npy(path: Path, mmap: bool = False) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path}: {INCOMPLETE}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: corrupt array file ({str(exc).splitlines()[0][:160]})") from None


def read_embeddings(index_dir: str | Path, mmap: bool = False) -> np.ndarray:
    """The stored float16 vectors [n, d] (memory-mapped with `mmap`: exact re-search, no re-embedding)."""
    return _read_npy(Path(index_dir) / EMBEDDINGS, mmap)


def read_labels(index_dir: str | Path) -> np.ndarray:
    """The int64 attribute labels [n, M], row-aligned with the index."""
    return _read_npy(Path(index_dir) / LABELS)


def read_items(index_dir: str | Path):
    """The metadata table as a DataFrame in row order."""
    import sqlite3

    import pandas as pd

    path = Path(index_dir) / ITEMS_DB
    if not path.is_file():
        raise UserError(f"{path}: {INCOMPLETE}")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return pd.read_sql_query("SELECT * FROM items ORDER BY row", conn)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise UserError(f"{path}: corrupt item metadata ({exc})") from None


# ---------------------------------------------------------------- checking and describing

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
        "schema: " + "; ".join(f"{k} ({len(v)})" for k, v in schema.items()),
        f"db: {info.get('db')}",
        f"built: {info.get('created')}   timing: {json.dumps(info.get('timing', {}))}",
    ]
    recall = info.get("recall", {})
    if recall and not recall.get("exact"):
        lines.append(f"recall@10 vs exact: {recall.get('recall@10')} on {recall.get('sample')} queries")
    for a in info.get("added", []):
        lines.append(f"added: {a['count']} items at {a['when']}")
    return "\n".join(lines)
