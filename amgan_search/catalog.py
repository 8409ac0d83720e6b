"""The catalog DB: one SQLite file (through sqlite-utils) holding a catalog's schema, items and splits.

Tables:
- `metadata(key, value)`: format, root (absolute folder that image paths resolve against),
  source, created, extra_columns (JSON), amgan_search version;
- `attributes(position, name)` and `attribute_values(attribute, position, value)`: the schema in order;
- `items(id, path, split, <one column per attribute: the value name or NULL>, category, gender,
  <extra columns of the source>)`, indexed on split, on each attribute, and on the whole attribute
  vector (+ category, gender) so that "items whose attributes equal this vector" is an index lookup.

The DB is written under a temporary name and renamed into place, holding its lock (two imports run
in turn), and replaces only a catalog DB: a failed import leaves an existing DB untouched. Its
checksum, kept in its own header (`db_checksum`), is checked by `Catalog.open`: a damaged DB is one
line naming it. Readers open it read-only, one connection per process, so DataLoader workers can
share it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from amgan_search import __version__, db_checksum
from amgan_search.errors import UserError
from amgan_search.io import atomic_path, check_parents, check_regular, writer_lock
from amgan_search.outputs import claim_file
from amgan_search.schema import MISSING, Schema
from amgan_search.sources import (CATEGORY, GENDER, Source, check_column_names, check_images_decode,
                                  empty_counts, image_file, read_item_image, read_source,
                                  resolve_inside, sort_splits, source_counts)

ITEMS, METADATA, ATTRIBUTES, VALUES = "items", "metadata", "attributes", "attribute_values"


def _q(name: str) -> str:
    """Quote an SQL identifier (attribute names come from user files)."""
    return '"' + name.replace('"', '""') + '"'


def item_columns(schema: Schema, extra_columns: Sequence[str] = ()) -> list[str]:
    """Columns of the items table in order; an attribute named category/gender is that column."""
    cols = ["id", "path", "split", *schema.names]
    for c in (CATEGORY, GENDER, *extra_columns):
        if c not in cols:
            cols.append(c)
    return cols


def write_catalog_db(source: Source, db_path: str | os.PathLike, src: str | os.PathLike | None = None,
                     progress: bool = True) -> None:
    """Write `source` as a catalog DB at `db_path`, atomically."""
    import sqlite_utils
    from tqdm import tqdm

    schema = source.schema
    columns = item_columns(schema, source.extra_columns)
    check_column_names(columns, str(src if src is not None else db_path))
    with atomic_path(db_path) as tmp:
        conn = sqlite3.connect(str(tmp))
        try:
            # The file is temporary until renamed: a failed write discards it whole, so no rollback
            # journal is needed, and none is left behind by a killed import.
            conn.execute("PRAGMA journal_mode=OFF")
            db = sqlite_utils.Database(conn)
            db[METADATA].create({"key": str, "value": str}, pk="key")
            db[ATTRIBUTES].create({"position": int, "name": str}, pk="position")
            db[VALUES].create({"attribute": str, "position": int, "value": str},
                              pk=("attribute", "position"))
            db[ITEMS].create({c: str for c in columns}, pk="id", not_null={"path", "split"})
            meta = {
                "format": source.format,
                "root": str(Path(source.root).resolve()),
                "source": str(Path(src).resolve()) if src is not None else "",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "extra_columns": json.dumps(list(source.extra_columns)),
                "version": __version__,
            }
            with conn:
                db[METADATA].insert_all({"key": k, "value": v} for k, v in meta.items())
                db[ATTRIBUTES].insert_all(
                    {"position": i, "name": a.name} for i, a in enumerate(schema.attributes))
                db[VALUES].insert_all(
                    {"attribute": a.name, "position": k, "value": v}
                    for a in schema.attributes for k, v in enumerate(a.values))

                def rows():
                    for r in tqdm(source.records, desc="catalog import", unit="item",
                                  disable=not progress, leave=False):
                        row = {"id": r.id, "path": r.path, "split": r.split,
                               CATEGORY: r.category, GENDER: r.gender, **r.extra}
                        row.update(r.attributes)
                        yield row

                db[ITEMS].insert_all(rows(), batch_size=2000)
            table = db[ITEMS]
            table.create_index(["split"])
            for name in schema.names:
                table.create_index([name])
            vector = list(dict.fromkeys([*schema.names, CATEGORY, GENDER]))
            table.create_index(vector, index_name="idx_items_vector")
            conn.execute("ANALYZE")
        finally:
            conn.close()
        db_checksum.seal(tmp)


def import_catalog(fmt: str, src: str | os.PathLike, db_path: str | os.PathLike,
                   attributes: Sequence[str] | None = None, progress: bool = True,
                   image_root: str | os.PathLike | None = None,
                   check_images: bool = True) -> "Catalog":
    """Read a data set (`fmt`: synthetic, deepfashion-synthesis, shopping100k, csv) into a catalog DB.

    `check_images` decodes every image first, naming the rows whose image cannot be read; without
    it only their presence is checked. An existing `db_path` is replaced only by a catalog DB.
    """
    db_path = Path(db_path)
    check_parents(db_path)
    with writer_lock(db_path):
        claim_file(db_path, is_catalog_db, "catalog DB")
        source = read_source(fmt, src, attributes=attributes, image_root=image_root)
        if check_images:
            check_images_decode(source, src, progress=progress)
        write_catalog_db(source, db_path, src=src, progress=progress)
    return Catalog.open(db_path)


def is_catalog_db(path: str | os.PathLike) -> bool:
    """Whether `path` is a catalog DB, damaged or not (its tables are listed on the first page,
    which damage elsewhere leaves readable): what an import may replace."""
    try:
        if not db_checksum.is_sqlite(path):
            return False
        with closing(_connect_ro(path)) as conn:
            tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except (OSError, sqlite3.DatabaseError):
        return False
    return {ITEMS, METADATA, ATTRIBUTES, VALUES} <= tables


def _connect_ro(path: str | os.PathLike) -> sqlite3.Connection:
    # Read-only: many processes read one catalog while nothing writes to it.
    return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True,
                           check_same_thread=False)


class Catalog:
    """A catalog DB opened read-only. Picklable: a copy in another process opens its own connection
    without checking the file again (the process that pickled it did)."""

    def __init__(self, path: str | os.PathLike, root: str | os.PathLike | None = None,
                 check: bool = True):
        self.path = Path(path)
        self._root_override = Path(root) if root is not None else None
        self._root_resolved: Path | None = None
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        self._load_header(check)

    @classmethod
    def open(cls, db_path: str | os.PathLike, root: str | os.PathLike | None = None,
             check: bool = True) -> "Catalog":
        """Open a catalog DB; `root` overrides where image paths resolve (the catalog folder moved);
        `check` verifies the file's checksum (a damaged DB is a UserError naming it)."""
        return cls(db_path, root=root, check=check)

    def __reduce__(self):
        return (Catalog, (str(self.path), self._root_override, False))

    # -- connection and header -----------------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = _connect_ro(self.path)
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def _reading(self):
        """Damage the checksum cannot show (a DB written before it existed) is one line too."""
        import pandas as pd  # pandas raises its own DatabaseError for sqlite3's

        try:
            yield
        except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:
            raise UserError(f"{self.path}: damaged catalog DB ({str(exc).splitlines()[0]}); "
                            f"import it again") from None

    def _rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self._reading():
            return self.conn.execute(sql, list(params)).fetchall()

    def _load_header(self, check: bool) -> None:
        if not self.path.exists():
            raise UserError(f"{self.path}: no such catalog DB (create one with `amgan-search catalog import`)")
        check_regular(self.path)  # a FIFO would block the checksum's read
        if not db_checksum.is_sqlite(self.path):
            raise UserError(f"{self.path}: not a catalog DB")
        if check and db_checksum.verify(self.path) is False:
            raise UserError(f"{self.path}: damaged catalog DB (its checksum does not match its "
                            f"contents); import it again")
        try:
            meta = dict(self.conn.execute(f"SELECT key, value FROM {METADATA}").fetchall())
            extra_columns = json.loads(meta.get("extra_columns", "[]"))
            attrs = self.conn.execute(f"SELECT name FROM {ATTRIBUTES} ORDER BY position").fetchall()
            values = self.conn.execute(
                f"SELECT attribute, value FROM {VALUES} ORDER BY attribute, position").fetchall()
            self.conn.execute(f"SELECT id, path, split FROM {ITEMS} LIMIT 1").fetchall()
        except (sqlite3.DatabaseError, ValueError):  # ValueError: extra_columns not JSON
            raise UserError(f"{self.path}: not a catalog DB") from None
        if "format" not in meta or "root" not in meta or not attrs:
            raise UserError(f"{self.path}: not a catalog DB (no format, root or attributes)")
        by_attr: dict[str, list[str]] = {}
        for attribute, value in values:
            by_attr.setdefault(attribute, []).append(value)
        self.meta = meta
        self.schema = Schema.from_dict({name: by_attr.get(name, []) for (name,) in attrs})
        self.extra_columns = extra_columns
        self.columns = item_columns(self.schema, self.extra_columns)

    @property
    def root(self) -> Path:
        return self._root_override or Path(self.meta["root"])

    @property
    def format(self) -> str:
        return self.meta["format"]

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- items ---------------------------------------------------------------------------------

    def _query(self, sql: str, params: Sequence = ()):
        import pandas as pd

        with self._reading():
            df = pd.read_sql_query(sql, self.conn, params=list(params))
        # NULL -> None (not NaN) in every text column, so a missing value reads the same everywhere.
        return df.astype(object).where(df.notna(), None)[self.columns]

    def items(self, split: str | None = None):
        """Items as a DataFrame (id, path, split, attributes, category, gender, extras), import order."""
        cols = ", ".join(_q(c) for c in self.columns)
        if split is None:
            return self._query(f"SELECT {cols} FROM {ITEMS} ORDER BY rowid")
        return self._query(f"SELECT {cols} FROM {ITEMS} WHERE split = ? ORDER BY rowid", [split])

    def lookup(self, ids: Sequence[str]):
        """Rows for `ids`, in that order (unknown ids -> UserError)."""
        import pandas as pd

        ids = [str(i) for i in ids]
        cols = ", ".join(_q(c) for c in self.columns)
        frames = []
        for start in range(0, len(ids), 500):  # SQLite limits the number of bound parameters
            chunk = ids[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            frames.append(self._query(f"SELECT {cols} FROM {ITEMS} WHERE id IN ({marks})", chunk))
        found = pd.concat(frames) if frames else self._query(f"SELECT {cols} FROM {ITEMS} LIMIT 0")
        found = found.set_index("id", drop=False)
        unknown = [i for i in ids if i not in found.index]
        if unknown:
            raise UserError(f"{self.path}: no item with id {unknown[0]!r}")
        return found.loc[ids].reset_index(drop=True)

    def labels(self, df) -> np.ndarray:
        """Attribute value indices [n, M] int64 of the rows of `df`, -1 where missing."""
        import pandas as pd

        out = np.full((len(df), self.schema.n_attributes), MISSING, dtype=np.int64)
        for j, attr in enumerate(self.schema.attributes):
            column = df[attr.name]
            codes = pd.Categorical(column, categories=list(attr.values)).codes.astype(np.int64)
            bad = (codes == MISSING) & column.notna().to_numpy()
            if bad.any():
                value = column[bad].iloc[0]
                attr.index(value)  # raises a UserError listing the valid values
            out[:, j] = codes
        return out

    def count(self, split: str | None = None) -> int:
        if split is None:
            return self._rows(f"SELECT COUNT(*) FROM {ITEMS}")[0][0]
        return self._rows(f"SELECT COUNT(*) FROM {ITEMS} WHERE split = ?", [split])[0][0]

    def splits(self) -> list[str]:
        return sort_splits(s for (s,) in self._rows(f"SELECT DISTINCT split FROM {ITEMS}"))

    def counts(self) -> dict:
        """{split or "all": {"items": n, "values": {attr: {value: n}}, "missing": {attr: n}}}."""
        result = empty_counts(self.schema, self.splits())
        for split, n in self._rows(f"SELECT split, COUNT(*) FROM {ITEMS} GROUP BY split"):
            result[split]["items"] = n
            result["all"]["items"] += n
        for attr in self.schema.attributes:
            col = _q(attr.name)
            for split, value, n in self._rows(
                    f"SELECT split, {col}, COUNT(*) FROM {ITEMS} GROUP BY split, {col}"):
                if value is not None and value not in attr.values:
                    raise UserError(f"{self.path}: damaged catalog DB ({attr.name} value "
                                    f"{value!r} is not one of its values); import it again")
                for key in (split, "all"):
                    if value is None:
                        result[key]["missing"][attr.name] += n
                    else:
                        result[key]["values"][attr.name][value] += n
        return result

    def summary(self) -> str:
        """One line: items per split and values per attribute."""
        splits = ", ".join(f"{s} {self.count(s):,}" for s in self.splits())
        attrs = ", ".join(f"{a.name} ({len(a.values)})" for a in self.schema.attributes)
        return f"{self.count():,} items ({splits}); attributes {attrs}"

    def matching(self, target, category: str | None = None, gender: str | None = None,
                 split: str | None = None, limit: int | None = None) -> list[str]:
        """Ids of items whose attributes equal `target`, in import order.

        `target` is {attribute: value name} or a vector of value indices [M]; an attribute left out
        of the dict is not constrained, None (or -1) asks for a missing value. The perceptual loss's
        reference image is drawn from these (same category and gender where the data has them).
        """
        if not isinstance(target, Mapping):
            target = self.schema.decode(list(np.asarray(target).ravel()))
        where, params = [], []
        for name, value in target.items():
            attr = self.schema.attribute(name)
            if value is None:
                where.append(f"{_q(name)} IS NULL")
            else:
                attr.index(value)
                where.append(f"{_q(name)} = ?")
                params.append(value)
        for col, value in ((CATEGORY, category), (GENDER, gender), ("split", split)):
            if value is not None:
                where.append(f"{_q(col)} = ?")
                params.append(value)
        sql = f"SELECT id FROM {ITEMS}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [i for (i,) in self._rows(sql, params)]

    # -- images --------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self._root_resolved is None:
            self._root_resolved = self.root.resolve()
        return self._root_resolved

    def resolve(self, path: str) -> Path:
        """An item path made absolute (`/data/G2.h5#i` for `G2.h5#i`); a path whose file lies
        outside the root (`..`, absolute, a symlink out) is a UserError, so no read leaves it."""
        file = resolve_inside(self._root(), image_file(path), str(self.path))
        return Path(f"{file}{path[len(image_file(path)):]}")  # the `#i` of an HDF5 row kept

    def read_image(self, path: str) -> np.ndarray:
        """An item's image as uint8 HxWx3: a file under the root, or row i of an HDF5 (`G2.h5#i`)."""
        return read_item_image(self._root(), path, str(self.path))

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r}, format={self.format!r}, items={self.count()})"


# -- `catalog info`: counts of a catalog DB, or of a data set's labels before any import -------

def catalog_info(db_path: str | os.PathLike | None = None, fmt: str | None = None,
                 src: str | os.PathLike | None = None,
                 attributes: Sequence[str] | None = None) -> tuple[str, dict]:
    """(title, report) for a catalog DB, or for `src` read as `fmt` without its images. The report
    holds where the counts come from, the schema as a dict and `Catalog.counts()`."""
    if db_path is not None:
        cat = Catalog.open(db_path)
        header = {"db": str(cat.path), "format": cat.format, "root": str(cat.root),
                  "created": cat.meta.get("created")}
        title = f"{cat.path}: {cat.format} catalog"
        schema, counts = cat.schema, cat.counts()
    else:
        source = read_source(fmt, src, attributes=attributes, check_images=False)
        header = {"src": str(src), "format": fmt, "root": str(source.root)}
        title = f"{src}: {fmt} labels (images not checked)"
        schema, counts = source.schema, source_counts(source)
    return title, {**header, "schema": schema.to_dict(), "counts": counts}
