"""Readers of the data sets a catalog can be imported from, each turned into records and a Schema.

- DeepFashion-Synthesis (`dfs.py`): `G2.h5` + `language_original.mat` + `ind.mat` (FashionGAN's release).
- Shopping100k (`shopping100k.py`), in the layout the public code reads: `imgs_{train,test}.txt`,
  `labels_{train,test}.txt` (one-hot blocks joined), `attr_num.txt`.
- Any catalog (`csv.py`): a folder of images and a CSV (id, path, one column per attribute, optional
  split, category, gender); the synthetic renderer writes this layout plus `schema.json`.

Every reader checks its input fully before anything is written, and says which file and line is bad.
This module holds what the readers share: the record types, the checks, the dispatch and the counts.
"""

from __future__ import annotations

import re
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

def check_attribute_names(names: Sequence[str], where: str) -> None:
    """Attribute names are non-empty, unpadded, unique and not a reserved column."""
    seen = set()
    for name in names:
        if not name or name != name.strip():
            raise UserError(f"{where}: attribute name {name!r} is empty or has surrounding spaces")
        if name in RESERVED:
            raise UserError(f"{where}: {name!r} cannot be an attribute name (reserved column)")
        if name in seen:
            raise UserError(f"{where}: attribute {name!r} appears twice")
        seen.add(name)


def check_relative(rel: str, where: str) -> None:
    """Catalog image paths stay inside the catalog folder: no absolute paths, no `..`."""
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise UserError(f"{where}: image path {rel!r} is absolute; paths are relative to the catalog folder")
    if ".." in re.split(r"[\\/]", rel):
        raise UserError(f"{where}: image path {rel!r} leaves the catalog folder (..)")


def check_image_files(root: Path, records: list[Record], where: Path) -> None:
    """Every record's image file exists under `root`; `where` names the list that points to them."""
    missing = [r.path for r in records if not (root / r.path).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UserError(f"{where}: image {root / missing[0]} does not exist{more}")


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
    "DFS_SLEEVES", "FORMATS", "GENDER", "H5_ROW", "RESERVED", "SPLITS", "DfsLabels", "Record",
    "Source", "check_attribute_names", "check_g2", "check_image_files", "check_relative",
    "empty_counts", "hash_split", "read_attr_num", "read_attribute_spec", "read_csv_catalog",
    "read_deepfashion_synthesis", "read_dfs_labels", "read_g2_image", "read_g2_row",
    "read_shopping100k", "read_source", "sort_splits", "source_counts",
]
