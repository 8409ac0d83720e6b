"""Shopping100k, in the layout the public attribute-manipulation code reads: `imgs_{train,test}.txt`
(image paths), `labels_{train,test}.txt` (one-hot blocks joined, one block per attribute) and
`attr_num.txt` (values per attribute); optional `attributes.json` names the attributes and values."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import Schema
from amgan_search.sources import (CATEGORY, GENDER, Record, Source, check_attribute_names,
                                  check_image_files, check_relative, read_attribute_spec)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # a trailing blank line is not a row
        lines.pop()
    return lines


def read_attr_num(path: Path) -> list[int]:
    tokens = " ".join(_read_lines(path)).replace(",", " ").split()
    try:
        counts = [int(t) for t in tokens]
    except ValueError:
        raise UserError(f"{path}: expected whole numbers (values per attribute)") from None
    if not counts or min(counts) < 1:
        raise UserError(f"{path}: expected one positive count per attribute")
    return counts


def _shopping_schema(folder: Path, counts: list[int], attributes: Sequence[str] | None) -> Schema:
    """Names given by the caller or in attributes.json; without them attr0.. with values v0.."""
    sidecar, attr_num = folder / "attributes.json", folder / "attr_num.txt"
    if sidecar.is_file():
        spec = read_attribute_spec(sidecar, allow_empty=True)
        if [len(v) for v in spec.values()] != counts:
            raise UserError(f"{sidecar}: value counts {[len(v) for v in spec.values()]} "
                            f"differ from attr_num.txt {counts}")
        if attributes and list(attributes) != list(spec):
            raise UserError(f"{sidecar}: names {list(spec)} differ from the attribute names given "
                            f"{list(attributes)}")
        names, values = list(spec), [list(v) for v in spec.values()]
        for name, vals in zip(names, values):
            if len(set(vals)) != len(vals):
                raise UserError(f"{sidecar}: attribute {name!r} repeats a value")
    else:
        if attributes and len(attributes) != len(counts):
            raise UserError(f"{attr_num}: {len(counts)} attributes, but {len(attributes)} attribute "
                            f"names given ({', '.join(attributes)})")
        names = list(attributes) if attributes else [f"attr{j}" for j in range(len(counts))]
        values = [[f"v{k}" for k in range(c)] for c in counts]
    check_attribute_names(names, str(sidecar if sidecar.is_file() else attr_num))
    return Schema.from_dict(dict(zip(names, values)))


def _parse_labels(line: str, where: str, schema: Schema, bounds: np.ndarray) -> dict[str, str | None]:
    """One line of labels_*.txt (0/1 values, one one-hot block per attribute) -> values by name."""
    width = int(bounds[-1])
    tokens = line.split()
    joined = "".join(tokens)
    if len(tokens) != width or len(joined) != width:
        raise UserError(f"{where}: {len(tokens)} values, expected {width} "
                        f"(the sum of attr_num.txt) of 0 or 1")
    bits = np.frombuffer(joined.encode("ascii", "replace"), dtype=np.uint8) - ord("0")
    if (bits > 1).any():
        raise UserError(f"{where}: values must be 0 or 1")
    values: dict[str, str | None] = {}
    for j, attr in enumerate(schema.attributes):
        ones = np.flatnonzero(bits[bounds[j]:bounds[j + 1]])
        if len(ones) > 1:
            raise UserError(f"{where}: attribute {attr.name!r} has "
                            f"{len(ones)} values set; a one-hot block has at most one")
        values[attr.name] = attr.values[ones[0]] if len(ones) else None
    return values


def _read_split(folder: Path, split: str, schema: Schema, bounds: np.ndarray,
                seen: dict[str, str]) -> list[Record]:
    """imgs_<split>.txt + labels_<split>.txt -> records; `seen` (path -> where) spans both splits."""
    imgs_path, labels_path = folder / f"imgs_{split}.txt", folder / f"labels_{split}.txt"
    imgs, label_lines = _read_lines(imgs_path), _read_lines(labels_path)
    if len(imgs) != len(label_lines):
        raise UserError(f"{labels_path}: {len(label_lines)} lines but {imgs_path.name} has {len(imgs)}")
    records = []
    for lineno, (rel, line) in enumerate(zip(imgs, label_lines), start=1):
        rel = rel.strip()
        where = f"{imgs_path}:{lineno}"
        if not rel:
            raise UserError(f"{where}: empty image path")
        check_relative(rel, where)
        if rel in seen:
            raise UserError(f"{where}: {rel} is listed twice (first in {seen[rel]})")
        seen[rel] = where
        values = _parse_labels(line, f"{labels_path}:{lineno}", schema, bounds)
        records.append(Record(
            id=rel, split=split, attributes=values, path=rel,
            category=values.get(CATEGORY), gender=values.get(GENDER), origin=where,
        ))
    return records


def read_shopping100k(folder: str | Path, attributes: Sequence[str] | None = None,
                      image_root: str | Path | None = None, check_images: bool = True) -> Source:
    """The split folder of Shopping100k -> records; image paths are relative to `image_root`.

    Public code keeps the split files and the images apart (file_root, img_root); without
    `image_root` the images are looked for beside the split files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder (expected imgs_*.txt, labels_*.txt, attr_num.txt)")
    counts = read_attr_num(folder / "attr_num.txt")
    schema = _shopping_schema(folder, counts, attributes)
    root = Path(image_root) if image_root is not None else folder
    if not root.is_dir():
        raise UserError(f"{root}: no such image folder")
    bounds = np.cumsum([0] + counts)
    seen: dict[str, str] = {}
    records = [r for split in ("train", "test") for r in _read_split(folder, split, schema, bounds, seen)]
    if check_images:
        check_image_files(root, records, folder / "imgs_*.txt")
    return Source("shopping100k", root.resolve(), schema, records)
