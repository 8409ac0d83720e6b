"""Output folders: a command never deletes or replaces a file or folder it did not make.

Every folder the project writes as a whole (an index, a model, a training run, a synthetic
catalog) carries a small marker file, `.amgan-search.json`, naming its kind. Before writing, a
command claims its output:
- a folder that does not exist, or an empty one, is the command's to write;
- a folder holding the same kind (its marker, or for folders written before markers existed, the
  files that kind always has) is replaced only when the caller asks for it (`force`);
- anything else is refused: a non-empty folder of another kind or of no kind, the current folder,
  a folder that holds one of the command's inputs, or a parent of one.
Refusals are `OutputExists` (the same kind, not forced) or `UserError`, each one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from amgan_search.errors import UserError

MARKER = ".amgan-search.json"
KINDS = ("index", "model", "run", "catalog")
# What each kind always holds: how folders written before the marker existed are recognised.
SIGNATURES = {
    "index": ("index.json", "versions"),
    "model": ("config.json", "model.safetensors"),
    "run": ("train_config.json",),
    "catalog": ("catalog.csv", "schema.json"),
}


# An index written before versions held its files directly in the folder.
_FLAT_INDEX = ("index.json", "index.faiss")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


class OutputExists(UserError):
    """The output is a folder of the same kind that the caller did not ask to replace."""

    def __init__(self, path: Path, kind: str):
        super().__init__(f"{path}: holds {_a(kind)} already; it is replaced only when asked to")
        self.path, self.kind = path, kind


def kind_of(folder: str | os.PathLike) -> str | None:
    """The kind a folder's marker names, else the kind its files show, else None."""
    folder = Path(folder)
    try:
        marked = json.loads((folder / MARKER).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        marked = None
    if marked in KINDS:
        return marked
    # A run folder also holds config.json + model.safetensors (its final model): check it first.
    for kind in ("run", "index", "catalog", "model"):
        if all((folder / name).exists() for name in SIGNATURES[kind]):
            return kind
    if all((folder / name).exists() for name in _FLAT_INDEX):
        return "index"
    return None


def mark(folder: str | os.PathLike, kind: str) -> None:
    """Write the marker into a folder being written (before it is renamed into place)."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    (Path(folder) / MARKER).write_text(json.dumps({"kind": kind, "format": 1}) + "\n")


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def claim_dir(path: str | os.PathLike, kind: str, force: bool = False,
              inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that `path` may be written as a `kind` folder; returns it resolved, or refuses."""
    path = Path(path)
    where = path.resolve()
    if where == Path.cwd().resolve():
        raise UserError(f"{path}: the current folder cannot be an output folder; name a new one")
    for given in inputs:
        if given is not None and _is_within(Path(given).resolve(), where):
            raise UserError(f"{path}: holds the input {given}; choose another output folder")
    if not path.exists() and not path.is_symlink():
        return where
    if not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; choose another output folder")
    if not any(path.iterdir()):
        return where
    found = kind_of(path)
    if found == kind:
        if not force:
            raise OutputExists(path, kind)
        return where
    what = _a(found) if found else "files this tool did not write"
    raise UserError(f"{path}: holds {what}, not {_a(kind)}; choose another output folder")


def claim_file(path: str | os.PathLike, is_same_kind, kind: str) -> Path:
    """Check that the file `path` may be written: missing, or what this command writes
    (`is_same_kind(path)`, e.g. a catalog DB replaced by a catalog DB); else refuse."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; name a file for the {kind}")
    if path.exists() and not is_same_kind(path):
        raise UserError(f"{path}: exists and is not a {kind}; choose another file name")
    return path.resolve()
