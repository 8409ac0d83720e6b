"""CSV catalogs (and the synthetic renderer's output): a CSV of id, path, one column per attribute,
optional split, category, gender and extra columns; optional `schema.json` beside it.

Read in three steps: parse (the CSV and schema.json as they are), check (header, attribute columns,
every row), build (the Schema and the records).
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from amgan_search.errors import UserError
from amgan_search.schema import Schema
from amgan_search.sources import (CATEGORY, GENDER, SPLITS, Record, Source, check_attribute_names,
                                  check_column_names, check_image_files, check_relative,
                                  read_attribute_spec)

# Columns with a meaning of their own; any other column is an attribute or an extra.
STANDARD = ("id", "path", "split", CATEGORY, GENDER)


def hash_split(item_id: str, test_percent: int = 10) -> str:
    """A deterministic train/test split by a hash of the id: the same id lands in the same split
    whatever else the catalog holds (our choice where a CSV has no split column)."""
    h = int.from_bytes(hashlib.sha256(item_id.encode("utf-8")).digest()[:8], "big")
    return "test" if h % 100 < test_percent else "train"


def _natural_key(value: str):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value) if t]


@dataclass
class _Table:
    """A parsed CSV: its path, stripped header, and (line number, row with stripped keys) pairs."""

    path: Path
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]


# -- parse --------------------------------------------------------------------------------------

def _read_schema_spec(schema_path: Path) -> dict[str, list[str]] | None:
    """schema.json beside the CSV, checked; None when there is none."""
    if not schema_path.is_file():
        return None
    spec = read_attribute_spec(schema_path)
    check_attribute_names(list(spec), str(schema_path))
    return spec


def _read_table(path: Path) -> _Table:
    """The CSV's rows, each with as many cells as the header has columns."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = []
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise UserError(f"{path}:{reader.line_num}: {len(header)} columns expected")
                rows.append((reader.line_num, {k.strip(): v for k, v in row.items()}))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    return _Table(path, [h.strip() for h in header], rows)


# -- check --------------------------------------------------------------------------------------

def _attribute_columns(table: _Table, attributes: Sequence[str] | None,
                       spec: dict | None, schema_path: Path) -> list[str]:
    """The attribute columns: `attributes`, else schema.json's keys, else every non-standard column."""
    path, header = table.path, table.header
    if "" in header:
        raise UserError(f"{path}: column {header.index('') + 1} of the header has no name")
    if len(set(header)) != len(header):
        twice = next(h for h in header if header.count(h) > 1)
        raise UserError(f"{path}: column {twice!r} appears twice in the header")
    # `ID` beside `id` (or `Category` beside the category column every catalog has) would be one
    # column to SQLite, which ignores case in column names.
    check_column_names(list(dict.fromkeys([CATEGORY, GENDER, *header])), str(path))
    for required in ("id", "path"):
        if required not in header:
            raise UserError(f"{path}: missing required column {required!r} (header: {', '.join(header)})")
    if attributes:
        names = list(attributes)
    elif spec is not None:
        names = list(spec)
    else:
        names = [h for h in header if h not in STANDARD]
    check_attribute_names(names, str(path))
    for name in names:
        if name not in header:
            raise UserError(f"{path}: missing attribute column {name!r}")
        if spec is not None and name not in spec:
            raise UserError(f"{schema_path}: has no attribute {name!r}")
    if not names:
        raise UserError(f"{path}: no attribute columns")
    return names


def _cell(row: dict, key: str) -> str:
    return (row.get(key) or "").strip()


def _check_rows(table: _Table, names: list[str], spec: dict | None,
                schema_path: Path) -> dict[str, set[str]]:
    """Check every row (ids, paths, splits, values); return the values found per attribute."""
    path, has_split = table.path, "split" in table.header
    seen: dict[str, int] = {}
    found: dict[str, set[str]] = {n: set() for n in names}
    for lineno, row in table.rows:
        for key in ("id", "path"):
            if not _cell(row, key):
                raise UserError(f"{path}:{lineno}: empty {key!r}")
        item_id = _cell(row, "id")
        if item_id in seen:
            raise UserError(f"{path}:{lineno}: duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = lineno
        check_relative(_cell(row, "path"), f"{path}:{lineno}")
        if has_split and _cell(row, "split") not in SPLITS:
            raise UserError(f"{path}:{lineno}: split {_cell(row, 'split')!r} "
                            f"is not one of {', '.join(SPLITS)}")
        for name in names:
            value = _cell(row, name)
            if value:
                if spec is not None and value not in spec[name]:
                    raise UserError(f"{path}:{lineno}: {name} value {value!r} is not in {schema_path.name} "
                                    f"({', '.join(spec[name])})")
                found[name].add(value)
    if not table.rows:
        raise UserError(f"{path}: no rows")
    return found


# -- build --------------------------------------------------------------------------------------

def _build_schema(path: Path, names: list[str], spec: dict | None, found: dict[str, set[str]]) -> Schema:
    """Value order from schema.json when there is one, else the values found in natural order."""
    if spec is not None:
        return Schema.from_dict({n: spec[n] for n in names})
    empty = [n for n in names if not found[n]]
    if empty:
        raise UserError(f"{path}: attribute column {empty[0]!r} has no values")
    return Schema.from_dict({n: sorted(found[n], key=_natural_key) for n in names})


def _build_records(table: _Table, names: list[str], extras: list[str]) -> list[Record]:
    has_split = "split" in table.header
    records = []
    for lineno, row in table.rows:
        values = {n: (_cell(row, n) or None) for n in names}
        item_id = _cell(row, "id")
        records.append(Record(
            id=item_id,
            split=_cell(row, "split") if has_split else hash_split(item_id),
            attributes=values,
            path=_cell(row, "path").replace("\\", "/"),
            category=values[CATEGORY] if CATEGORY in names else (_cell(row, CATEGORY) or None),
            gender=values[GENDER] if GENDER in names else (_cell(row, GENDER) or None),
            extra={k: (row.get(k) if row.get(k) != "" else None) for k in extras},
            origin=f"{table.path}:{lineno}",
        ))
    return records


def read_csv_catalog(path: str | Path, attributes: Sequence[str] | None = None,
                     check_images: bool = True) -> Source:
    """A CSV (or a folder holding catalog.csv) of id, path, attributes... -> records.

    The attribute columns are `attributes` when given, else the keys of `schema.json` beside the
    CSV, else every column that is not id/path/split/category/gender. Value order comes from
    schema.json when there is one, else sorted (natural order). Other columns are kept as extras.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "catalog.csv"
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    folder = path.parent
    schema_path = folder / "schema.json"
    spec = _read_schema_spec(schema_path)
    table = _read_table(path)
    names = _attribute_columns(table, attributes, spec, schema_path)
    found = _check_rows(table, names, spec, schema_path)
    schema = _build_schema(path, names, spec, found)
    extras = [h for h in table.header if h not in STANDARD and h not in names]
    records = _build_records(table, names, extras)
    if check_images:
        check_image_files(folder, records, path)
    return Source("csv", folder.resolve(), schema, records, extras)
