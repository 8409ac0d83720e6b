"""Readers of the data sets a catalog can be imported from, each turned into records and a Schema.

- DeepFashion-Synthesis (`dfs.py`): `G2.h5` + `language_original.mat` + `ind.mat` (FashionGAN's release).
- Shopping100k (`shopping100k.py`), in the layout the public code reads: `imgs_{train,test}.txt`,
  `labels_{train,test}.txt` (one-hot blocks joined), `attr_num.txt`.
- Any catalog (`csv.py`): a folder of images and a CSV (id, path, one column per attribute, optional
  split, category, gender); the synthetic renderer writes this layout plus `schema.json`.

Every reader checks its input fully before anything is written, and says which file and line is bad.
This module holds what the readers share: the record types, the checks, the dispatch and the counts.

Item paths stay inside the catalog: every path is resolved (symlinks followed) and refused when the
file it names lies outside the root, at import and again at every read (`resolve_inside`), so
neither a `..`, an absolute path nor a symlink in a CSV or a hand-edited DB opens another file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from amgan_search.errors import UserError
from amgan_search.schema import Schema

FORMATS = ("synthetic", "deepfashion-synthesis", "shopping100k", "csv")
SPLITS = ("train", "val", "test")

# Columns of the items table that are not attributes; an attribute may not take one of these names,
# except `category` and `gender`, which, when a data set has them as attributes (Shopping100k has
# both), are the same column.
RESERVED = ("id", "path", "split")
CATEGORY, GENDER = "category", "gender"
# SQLite's own names for a table's row number: a column of that name would hide it, and the
# catalog orders its items by it.
ROWID_NAMES = ("rowid", "oid", "_rowid_")


@dataclass
class Record:
    """One catalog item: attribute values by name (None: missing) and where its image is."""

    id: str
    split: str
    attributes: dict[str, str | None]
    path: str  # relative to the source root, or `file.h5#row`
    category: str | None = None
    gender: str | None = None
    extra: dict[str, str | None] = field(default_factory=dict)
    origin: str = ""  # where it was read (`file:line`), for messages about this row

    def where(self, fallback: object) -> str:
        return self.origin or f"{fallback}: item {self.id!r}"


@dataclass
class Source:
    """What a reader found: the schema, the records, and the folder image paths resolve against."""

    format: str
    root: Path
    schema: Schema
    records: list[Record]
    extra_columns: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Checks shared by the readers
# ---------------------------------------------------------------------------------------------

def sql_fold(name: str) -> str:
    """A column name as SQLite compares them: ASCII letters without case, everything else as is."""
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def check_column_names(names: Sequence[str], where: str) -> None:
    """Columns SQLite can hold side by side: no two equal ignoring case, none named like the rowid."""
    seen: dict[str, str] = {}
    for name in names:
        key = sql_fold(name)
        if key in ROWID_NAMES:
            raise UserError(f"{where}: a column cannot be named {name!r} "
                            f"(SQLite's name for the row number)")
        if key in seen:
            raise UserError(f"{where}: columns {seen[key]!r} and {name!r} differ only in case; "
                            f"SQLite column names ignore case, so rename one")
        seen[key] = name


def check_attribute_names(names: Sequence[str], where: str) -> None:
    """Attribute names are non-empty, unpadded, unique and not a reserved column (ignoring case)."""
    for name in names:
        if not name or name != name.strip():
            raise UserError(f"{where}: attribute name {name!r} is empty or has surrounding spaces")
        if sql_fold(name) in RESERVED:
            raise UserError(f"{where}: {name!r} cannot be an attribute name (reserved column)")
        if sql_fold(name) in (CATEGORY, GENDER) and name not in (CATEGORY, GENDER):
            # `category`/`gender` attributes share the column of that name; another case would not.
            raise UserError(f"{where}: attribute {name!r} differs from the column "
                            f"{sql_fold(name)!r} only in case; name it {sql_fold(name)!r}")
    if len(set(names)) != len(names):
        twice = next(n for n in names if list(names).count(n) > 1)
        raise UserError(f"{where}: attribute {twice!r} appears twice")
    check_column_names(names, where)


def check_relative(rel: str, where: str) -> None:
    """Catalog image paths stay inside the catalog folder: no absolute paths, no `..`."""
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise UserError(f"{where}: image path {rel!r} is absolute; paths are relative to the catalog folder")
    if ".." in re.split(r"[\\/]", rel):
        raise UserError(f"{where}: image path {rel!r} leaves the catalog folder (..)")


def resolve_inside(root: Path, rel: str, where: str) -> Path:
    """The file `rel` names under `root` (resolved: `..` and symlinks followed), or a UserError when
    that file lies outside `root`. `root` must be resolved already."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"{where}: image path {rel!r} leads outside the catalog folder {root}")
    return path


def image_file(path: str) -> str:
    """The file part of an item path: `G2.h5` of `G2.h5#7`, else the path itself."""
    m = H5_ROW.match(path)
    return m["file"] if m else path


def check_image_files(root: Path, records: list[Record], where: Path) -> None:
    """Every record's image file exists inside `root`; `where` names the list that points to them."""
    root = Path(root).resolve()
    missing = []
    for r in records:
        file = resolve_inside(root, image_file(r.path), r.where(where))
        if not file.is_file():
            missing.append((r, file))
    if missing:
        r, file = missing[0]
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{r.where(where)}: image {file} does not exist{more}")


def check_images_decode(source: Source, where: str | Path, progress: bool = True) -> None:
    """Decode every item's image, so an import names the rows a later read would fail on.

    A G2.h5 row is a raw array, not an encoded image: reading one proves nothing about the others,
    except the last row, whose bytes end the dataset, so a file cut short fails there. That row is
    read per HDF5 file instead of every row (which would read the whole, many-gigabyte, file).
    """
    from tqdm import tqdm

    root = Path(source.root).resolve()
    files, last_rows = [], {}  # last_rows: HDF5 file -> (row, record) of its highest row
    for r in source.records:
        m = H5_ROW.match(r.path)
        if m is None:
            files.append(r)
        elif int(m["row"]) >= last_rows.get(m["file"], (-1, r))[0]:
            last_rows[m["file"]] = (int(m["row"]), r)
    bad: list[tuple[str, str]] = []  # (row, problem)
    todo = [*files, *(r for _, r in last_rows.values())]
    for r in tqdm(todo, desc="check images", unit="img", file=sys.stderr, disable=not progress,
                  leave=False):
        try:
            file = resolve_inside(root, image_file(r.path), r.where(where))
        except UserError as exc:
            bad.append((r.where(where), str(exc).removeprefix(f"{r.where(where)}: ")))
            continue
        try:
            _decode(file, r.path)
        except UserError as exc:
            bad.append((r.where(where), str(exc)))
    if bad:
        others = ", ".join(row for row, _ in bad[1:4]) + (", ..." if len(bad) > 4 else "")
        more = f" (and {len(bad) - 1} more bad images: {others})" if len(bad) > 1 else ""
        raise UserError(f"{bad[0][0]}: {bad[0][1]}{more}")


def _decode(file: Path, path: str):
    from amgan_search.images import load_image

    m = H5_ROW.match(path)
    return load_image(file) if m is None else read_g2_image(file, int(m["row"]))


def read_item_image(root: Path, path: str, where: str):
    """An item's image as uint8 HxWx3: a file inside `root` (resolved), or row i of an HDF5 file."""
    return _decode(resolve_inside(root, image_file(path), where), path)


def read_attribute_spec(path: Path, allow_empty: bool = False) -> dict[str, list[str]]:
    """A `{"attribute": ["value", ...], ...}` JSON file (schema.json, attributes.json), checked."""
    from amgan_search.io import read_json

    spec = read_json(path)
    ok = isinstance(spec, dict) and all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in spec.values())
    if ok and not allow_empty:  # no attribute without values, and at least one attribute
        ok = bool(spec) and all(spec.values())
    if not ok:
        raise UserError(f"{path}: expected {{\"attribute\": [\"value\", ...], ...}}")
    return spec


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------

def read_source(fmt: str, src: str | Path, attributes: Sequence[str] | None = None,
                image_root: str | Path | None = None, check_images: bool = True) -> Source:
    """Read any supported format; `attributes` names attributes (Shopping100k) or picks CSV columns.

    `check_images=False` reads the labels alone (G2.h5 not needed, image files not looked for),
    for counting a data set before its images are at hand; an import always checks them.
    """
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")
    if fmt == "deepfashion-synthesis":
        if attributes:
            raise UserError(f"attribute names {', '.join(attributes)} do not apply to "
                            f"deepfashion-synthesis (its attributes are color, sleeve)")
        return read_deepfashion_synthesis(src, require_images=check_images)
    if fmt == "shopping100k":
        return read_shopping100k(src, attributes=attributes, image_root=image_root,
                                 check_images=check_images)
    if fmt == "synthetic":
        folder = src if src.is_dir() else src.parent
        if not (folder / "schema.json").is_file():
            raise UserError(f"{folder / 'schema.json'}: no such file (a synthetic catalog has one)")
        source = read_csv_catalog(src, attributes=attributes, check_images=check_images)
        source.format = "synthetic"
        return source
    if fmt == "csv":
        return read_csv_catalog(src, attributes=attributes, check_images=check_images)
    raise UserError(f"unknown catalog format {fmt!r}; valid: {', '.join(FORMATS)}")


# ---------------------------------------------------------------------------------------------
# Counts (shared with the catalog DB's `Catalog.counts`)
# ---------------------------------------------------------------------------------------------

def sort_splits(splits: Iterable[str]) -> list[str]:
    """Split names in the order train, val, test, then any other by name."""
    order = {s: i for i, s in enumerate(SPLITS)}
    return sorted(splits, key=lambda s: (order.get(s, len(order)), s))


def empty_counts(schema: Schema, splits: Sequence[str]) -> dict:
    """{split or "all": {"items": 0, "values": {attr: {value: 0}}, "missing": {attr: 0}}}."""
    return {s: {"items": 0,
                "values": {a.name: {v: 0 for v in a.values} for a in schema.attributes},
                "missing": {a.name: 0 for a in schema.attributes}}
            for s in [*splits, "all"]}


def source_counts(source: Source) -> dict:
    """Counts of a source's records, shaped like `Catalog.counts()` (per split and "all")."""
    result = empty_counts(source.schema, sort_splits({r.split for r in source.records}))
    for r in source.records:
        for key in (r.split, "all"):
            result[key]["items"] += 1
            for name, value in r.attributes.items():
                if value is None:
                    result[key]["missing"][name] += 1
                else:
                    result[key]["values"][name][value] += 1
    return result


# The readers import Record, Source and the checks above from this module, so they come last.
from amgan_search.sources.csv import hash_split, read_csv_catalog  # noqa: E402
from amgan_search.sources.dfs import (  # noqa: E402
    DFS_CATEGORIES,
    DFS_COLORS,
    DFS_FILES,
    DFS_GENDERS,
    DFS_SCHEMA,
    DFS_SLEEVES,
    H5_ROW,
    DfsLabels,
    check_g2,
    read_deepfashion_synthesis,
    read_dfs_labels,
    read_g2_image,
    read_g2_row,
)
from amgan_search.sources.shopping100k import read_attr_num, read_shopping100k  # noqa: E402

__all__ = [
    "CATEGORY", "DFS_CATEGORIES", "DFS_COLORS", "DFS_FILES", "DFS_GENDERS", "DFS_SCHEMA",
    "DFS_SLEEVES", "FORMATS", "GENDER", "H5_ROW", "RESERVED", "ROWID_NAMES", "SPLITS", "DfsLabels",
    "Record", "Source", "check_attribute_names", "check_column_names", "check_g2",
    "check_image_files", "check_images_decode", "check_relative", "empty_counts", "hash_split",
    "image_file", "read_attr_num", "read_attribute_spec", "read_csv_catalog",
    "read_deepfashion_synthesis", "read_dfs_labels", "read_g2_image", "read_g2_row",
    "read_item_image", "read_shopping100k", "read_source", "resolve_inside", "sort_splits",
    "source_counts", "sql_fold",
]
