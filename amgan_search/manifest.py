"""The data sets the project knows (`data_manifest.csv` at the repository root) and a file checker."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from amgan_search.errors import UserError

MANIFEST = Path(__file__).resolve().parents[1] / "data_manifest.csv"
COLUMNS = ("name", "format", "files", "sha256", "images", "attributes", "license", "source")

OK, PRESENT, MISSING, MISMATCH = "ok", "present (no known sha256)", "missing", "sha256 mismatch"


@dataclass(frozen=True)
class DataSet:
    name: str
    format: str
    files: tuple[str, ...]
    sha256: tuple[str | None, ...]  # None where no checksum is known (G2.h5 has none published)
    images: int | None
    attributes: str
    license: str
    source: str


def load_manifest(path: str | Path = MANIFEST) -> dict[str, DataSet]:
    """data_manifest.csv -> {name: DataSet}, in file order."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (the data manifest lives at the repository root)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing column {missing[0]!r}")
        out = {}
        for row in reader:
            files = tuple(x.strip() for x in row["files"].split(";") if x.strip())
            sums = tuple(None if s.strip() in ("", "unknown") else s.strip().lower()
                         for s in row["sha256"].split(";"))
            if len(sums) != len(files):
                raise UserError(f"{path}:{reader.line_num}: {len(files)} files but {len(sums)} sha256 entries")
            images = row["images"].strip()
            out[row["name"]] = DataSet(
                name=row["name"], format=row["format"], files=files, sha256=sums,
                images=int(images) if images else None, attributes=row["attributes"],
                license=row["license"], source=row["source"],
            )
    return out


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(name: str, root: str | Path, manifest: str | Path = MANIFEST) -> list[tuple[str, str]]:
    """[(file, status)] for each file of data set `name` under `root`: ok, present, missing, mismatch.

    Only files with a known checksum are hashed, so a 15 GB G2.h5 is checked for presence only.
    """
    sets = load_manifest(manifest)
    if name not in sets:
        raise UserError(f"unknown data set {name!r}; known: {', '.join(sets)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder")
    results = []
    for file, expected in zip(sets[name].files, sets[name].sha256):
        path = root / file
        if not path.is_file():
            status = MISSING
        elif expected is None:
            status = PRESENT
        else:
            status = OK if sha256_file(path) == expected else MISMATCH
        results.append((file, status))
    return results


def failures(results: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(f, s) for f, s in results if s in (MISSING, MISMATCH)]


def describe(ds: DataSet) -> str:
    """Three lines for `data list`: size, attributes and license; files; where to get it."""
    images = f"{ds.images:,} images" if ds.images else "any size"
    return (f"{ds.name}: {images}; {ds.attributes}; license: {ds.license}\n"
            f"    files: {', '.join(ds.files)}\n"
            f"    source: {ds.source}")


def verify_report(name: str, root: str | Path,
                  manifest: str | Path = MANIFEST) -> tuple[str, str | None]:
    """(one line per file with its status, what is wrong or None) for data set `name` under `root`."""
    results = verify(name, root, manifest=manifest)
    width = max(len(f) for f, _ in results)
    table = "\n".join(f"{file:<{width}}  {status}" for file, status in results)
    bad = failures(results)
    if not bad:
        return table, None
    return table, (f"{root}: {len(bad)} of {len(results)} {name} files missing or mismatched "
                   f"({', '.join(f'{f}: {s}' for f, s in bad)})")
