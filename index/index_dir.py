"""The index folder: one version of the index at a time, switched by one atomic rename.

  DIR/
    .amgan-search.json      the marker: this folder is an index (`outputs.mark`)
    index.json              a copy of the current version's index.json, which names it
                            ("version": n); replacing it (one rename) is what switches versions
    versions/<n>/           the files of version n, written under a temporary name, then renamed:
      index.faiss           the FAISS index over L2-normalised embeddings, inner product (= cosine)
      embeddings.npy        the same vectors as float16, row-aligned, so `add` never re-embeds
      labels.npy            int64 [n, M] attribute indices, row-aligned (-1 missing)
      items.db              SQLite table `items`: row (= FAISS id), id, path, split, category, ...;
                            table `files`: row, size, mtime_ns of each item's image file then
      index.json            embedder path and digest, dimension, type and parameters, count,
                            build time, schema, db path and the checksum its header held then,
                            recall@10 against exact search, version
      SHA256SUMS            the sha256 of the five files above, checked when they are read

A reader resolves the current version once (`current`) and reads every file from it, so it sees
the old index or the new one, never a mix. A writer (holding `io.writer_lock(DIR)`) writes version
n+1 beside n, switches, and keeps n, so a reader that resolved n just before the switch still
finds its files; older versions go. Indexes written before versions (the five files directly in
DIR, no "version" in index.json, no sums) still load; writing to one adds versions/1 beside them.

An index records what it was built from, so a catalog that changes under it is noticed: the
catalog DB's checksum (`db_checksum`, in index.json) and each item image's size and modification
time (the `files` table). `index/search.Searcher` compares them, the DB's when it loads, the images'
of every result it returns, and says in one line that the index is stale (`StaleIndex`). Size and
mtime, not sums: a stat costs microseconds where reading 10,000 images back costs seconds, and
any rewrite (`catalog synth --force`, a re-render, an edit) sets a new mtime.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from amgan_search import db_checksum
from amgan_search.errors import UserError
from amgan_search.index.faiss_index import check_params, import_faiss, is_count
from amgan_search.integrity import verify, write_sums
from amgan_search.io import atomic_dir, atomic_path, read_json, remove_stale, write_json
from amgan_search.outputs import MARKER, kind_of, mark
from amgan_search.schema import Schema

INDEX_FILE = "index.faiss"
EMBEDDINGS = "embeddings.npy"
LABELS = "labels.npy"
ITEMS_DB = "items.db"
INFO = "index.json"
VERSIONS = "versions"
FILES = (INDEX_FILE, EMBEDDINGS, LABELS, ITEMS_DB, INFO)

META_COLUMNS = ("id", "path", "split", "category", "gender")
# index.json keys write_index_dir sets itself; the rest (timing, recall, added...) travel as `extra`.
OWN_KEYS = ("format", "type", "params", "metric", "dim", "count", "embedder", "schema", "db",
            "db_checksum", "created", "version")
FILES_TABLE = "files"  # in items.db: row, size, mtime_ns of each item's image file at build time

INCOMPLETE = "no such file (the index is incomplete; rebuild it)"


class StaleIndex(UserError):
    """The catalog the index was built from changed since (or its DB is damaged): results would
    name images whose attributes the index does not know."""


def file_identity(path: str | None) -> tuple[int, int] | None:
    """(size, mtime_ns) of the file an item path names (`G2.h5` of `G2.h5#7`); None when there is
    none to stat."""
    from amgan_search.sources import image_file

    if not path:
        return None
    try:
        st = os.stat(image_file(str(path)))
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


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
                    extra: Mapping[str, Any] | None = None, started: float | None = None,
                    identities: Sequence[tuple[int, int] | None] | None = None) -> dict:
    """Write the files as a new version of the index `out` and make it current; index.json's
    contents. The caller holds `io.writer_lock(out)`; `started` (perf_counter) adds the total time.
    `identities`: each record's image file as it was embedded (`file_identity`; None: stat them
    now), what a later reader compares to notice a changed catalog.

    `out` must be missing, empty or an index (anything else is refused: never written over).
    """
    if index.ntotal != len(vectors) or len(vectors) != len(labels) or len(labels) != len(records):
        raise UserError(f"{out}: index ({index.ntotal}), vectors ({len(vectors)}), labels "
                        f"({len(labels)}) and items ({len(records)}) disagree")
    out = Path(out)
    fresh = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    if not fresh and not is_index(out):
        raise UserError(f"{out}: holds something other than an index; choose another folder")
    number = 1 if fresh else _last_number(out) + 1
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
        "db_checksum": db_seal(db),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: v for k, v in dict(extra or {}).items() if k not in OWN_KEYS},
        "version": number,
    }
    if identities is None:
        identities = [file_identity(r.get("path")) for r in records]
    files = (index, vectors, labels, records, identities, schema, info, started)
    if fresh:  # the whole folder appears at once, marker included
        with atomic_dir(out) as tmp:
            _write_version(tmp / VERSIONS / str(number), *files)
            _switch(tmp, number)
            mark(tmp, "index")
        return info
    remove_stale(out)
    previous = _pointed(out)
    if not (out / MARKER).is_file():
        mark(out, "index")  # an index written before markers
    with atomic_dir(out / VERSIONS / str(number)) as tmp:
        _write_version(tmp, *files)
    _switch(out, number)
    _prune(out, keep={number, previous})
    return info


def is_index(folder: Path) -> bool:
    """Whether a folder is an index: its marker, or its files (also when a copy lost the marker)."""
    return kind_of(folder) == "index" or ((folder / INFO).is_file() and (folder / VERSIONS).is_dir())


def db_seal(db: str | Path | None) -> str | None:
    """The checksum a catalog DB's header holds (hex), None without a sealed DB: what an index
    records of the DB it was built from."""
    if db is None or not Path(db).is_file():
        return None
    stored = db_checksum.stored(db)
    return None if stored is None else stored.hex()


def _write_version(folder: Path, index, vectors, labels, records, identities, schema, info,
                   started) -> None:
    """The five files and their sums, into a folder not yet renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    import_faiss().write_index(index, str(folder / INDEX_FILE))
    np.save(folder / EMBEDDINGS, np.asarray(vectors, dtype=np.float16))
    np.save(folder / LABELS, np.asarray(labels, dtype=np.int64))
    _write_items(folder / ITEMS_DB, records, identities, schema)
    if started is not None:
        info.setdefault("timing", {})["total_s"] = round(time.perf_counter() - started, 3)
    write_json(folder / INFO, info)
    write_sums(folder, FILES)


def _write_items(path: Path, records: Sequence[Mapping[str, Any]],
                 identities: Sequence[tuple[int, int] | None], schema: Schema) -> None:
    import sqlite_utils

    db = sqlite_utils.Database(str(path))
    columns = {"row": int, "id": str, "path": str, "split": str, "category": str, "gender": str}
    columns.update({name: str for name in schema.names})
    db["items"].create(columns, pk="row")
    db["items"].insert_all(records, batch_size=10_000, alter=True)
    db["items"].create_index(["id"])
    db[FILES_TABLE].create({"row": int, "size": int, "mtime_ns": int}, pk="row")
    db[FILES_TABLE].insert_all(({"row": row, "size": ident[0], "mtime_ns": ident[1]}
                                for row, ident in enumerate(identities) if ident is not None),
                               batch_size=10_000)
    db.conn.close()


def _switch(out: Path, number: int) -> None:
    """Make version `number` current: its index.json copied over DIR/index.json, one rename."""
    with atomic_path(out / INFO) as tmp:
        shutil.copyfile(out / VERSIONS / str(number) / INFO, tmp)


def _numbers(out: Path) -> list[int]:
    folder = out / VERSIONS
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def _last_number(out: Path) -> int:
    """The highest version number written (0: none), so a new one never reuses a folder."""
    return max([0, *_numbers(out)])


def _pointed(out: Path) -> int | None:
    """The version DIR/index.json names now (0: files directly in DIR; None: unreadable)."""
    try:
        number = json.loads((out / INFO).read_text()).get("version", 0)
    except (OSError, ValueError, AttributeError):
        return None
    return number if isinstance(number, int) else None


def _prune(out: Path, keep: set) -> None:
    """Remove versions other than `keep` (the current and the previous one, which a reader may
    have resolved just before the switch) and what killed writers left in versions/."""
    folder = out / VERSIONS
    for entry in folder.iterdir():
        if entry.name.isdigit() and int(entry.name) not in keep:
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.name.startswith("."):  # .N.PID.XXXX.tmp: removed once its writer is gone
            remove_stale(folder / entry.name[1:].split(".", 1)[0])
    if 0 not in keep:  # the files of an index written before versions
        for name in FILES[:-1]:
            (out / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Version:
    """One version of an index: the folder holding its files, its checked index.json, its number
    (None for an index written before versions, whose files sit in its folder without sums)."""

    folder: Path
    info: dict
    number: int | None

    def file(self, name: str) -> Path:
        """The path of one of its files, checked against its recorded sha256 (one-line errors)."""
        path = self.folder / name
        if not path.is_file():
            raise UserError(f"{path}: {INCOMPLETE}")
        verify(self.folder, [name], required=self.number is not None)
        return path


def current(index_dir: str | Path) -> Version:
    """The version of the index that is current now, resolved once: read every file from it."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise UserError(f"{index_dir}: no such index directory")
    top = read_json(index_dir / INFO)
    number = top.get("version") if isinstance(top, dict) else None
    if number is None:
        return Version(index_dir, check_info(top, index_dir / INFO), None)
    if not is_count(number):
        raise UserError(f"{index_dir / INFO}: \"version\" must be a positive integer, got {number!r}")
    folder = index_dir / VERSIONS / str(number)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder, though {INFO} names it (the index is incomplete; "
                        "rebuild it)")
    unchecked = Version(folder, {}, number)
    return Version(folder, check_info(read_json(unchecked.file(INFO)), folder / INFO), number)


def version_number(index_dir: str | Path) -> int | None:
    """The number of the current version as DIR/index.json names it now (None: unreadable)."""
    return _pointed(Path(index_dir))


def load_info(index_dir: str | Path) -> dict:
    """index.json of the current version, checked field by field (one-line errors)."""
    return current(index_dir).info


def check_info(info, where: Path) -> dict:
    """index.json's fields, each of the right type and range, or a one-line error naming it."""
    if not isinstance(info, dict):
        raise UserError(f"{where}: not an index description (not a JSON object)")
    for key in ("type", "dim", "count", "schema", "embedder"):
        if key not in info:
            raise UserError(f"{where}: not an index description (no {key!r})")
    check_params(info["type"], info.get("params", {}), where)
    if not is_count(info["dim"]):
        raise UserError(f"{where}: \"dim\" must be a positive integer, got {info['dim']!r}")
    count = info["count"]
    if not (is_count(count) or (count == 0 and type(count) is int)):
        raise UserError(f"{where}: \"count\" must be a whole number, got {count!r}")
    embedder = info["embedder"]
    if not isinstance(embedder, dict) or not isinstance(embedder.get("digest"), str):
        raise UserError(f"{where}: \"embedder\" must be an object with a \"digest\" string, "
                        f"got {embedder!r}")
    if not isinstance(embedder.get("path"), (str, type(None))):
        raise UserError(f"{where}: \"embedder\".path must be a string or null")
    schema = info["schema"]
    if not (isinstance(schema, dict) and schema and all(
            isinstance(values, list) and values and all(isinstance(v, str) for v in values)
            for values in schema.values())):
        raise UserError(f"{where}: \"schema\" must map each attribute to a list of value names")
    if info.get("metric", "inner_product") != "inner_product":
        raise UserError(f"{where}: \"metric\" must be \"inner_product\", got {info['metric']!r}")
    if not isinstance(info.get("db"), (str, type(None))):
        raise UserError(f"{where}: \"db\" must be a path or null, got {info['db']!r}")
    return info


def _version(where) -> Version:
    return where if isinstance(where, Version) else current(where)


def read_faiss(where: Version | str | Path):
    """The FAISS index of a version (or of an index folder's current one), checked."""
    faiss = import_faiss()
    path = _version(where).file(INDEX_FILE)
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise UserError(f"{path}: corrupt or unreadable FAISS index ({first[:160]})") from None


def _read_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError, MemoryError) as exc:
        first = (str(exc).splitlines() or ["unreadable"])[0]
        raise UserError(f"{path}: corrupt array file ({first[:160]})") from None


def read_embeddings(where: Version | str | Path, mmap: bool = False) -> np.ndarray:
    """The stored float16 vectors [n, d] (memory-mapped with `mmap`: exact re-search, no re-embedding)."""
    return _read_npy(_version(where).file(EMBEDDINGS), mmap)


def read_labels(where: Version | str | Path) -> np.ndarray:
    """The int64 attribute labels [n, M], row-aligned with the index."""
    return _read_npy(_version(where).file(LABELS))


def read_items(where: Version | str | Path):
    """The metadata table as a DataFrame in row order."""
    import sqlite3

    import pandas as pd

    path = _version(where).file(ITEMS_DB)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return pd.read_sql_query("SELECT * FROM items ORDER BY row", conn)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
        raise UserError(f"{path}: corrupt item metadata ({exc})") from None


def read_identities(where: Version | str | Path) -> np.ndarray | None:
    """[n, 2] int64: the size and mtime_ns each row's image file had when it was embedded, -1
    where none was recorded; None for an index written before they were."""
    import sqlite3

    version = _version(where)
    path = version.file(ITEMS_DB)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master")}
            if FILES_TABLE not in tables:
                return None
            rows = conn.execute(f"SELECT row, size, mtime_ns FROM {FILES_TABLE}").fetchall()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: corrupt item metadata ({exc})") from None
    out = np.full((int(version.info["count"]), 2), -1, dtype=np.int64)
    for row, size, mtime in rows:
        if 0 <= row < len(out):
            out[row] = size, mtime
    return out


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
    if info.get("version"):
        lines.append(f"version: {info['version']}")
    recall = info.get("recall", {})
    if recall and not recall.get("exact"):
        lines.append(f"recall@10 vs exact: {recall.get('recall@10')} on {recall.get('sample')} queries")
    for a in info.get("added", []):
        lines.append(f"added: {a['count']} items at {a['when']}")
    return "\n".join(lines)
