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

A folder replaced with `force` keeps what the tool did not make there (`carry_over`: a user's
notes in a catalog folder, a model card). Output files are claimed the same way (`claim_file`): a
command writes a file where nothing is, or over a file of its own kind that it made (a catalog DB,
a PNG that records the command that wrote it, a table with its signature), never over one of its
inputs, a link, a FIFO or a device, or anyone else's file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable, Iterable

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


def claim_file(path: str | os.PathLike, is_same_kind: Callable[[Path], bool], kind: str,
               inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Check that the file `path` may be written: missing, or what this command writes
    (`is_same_kind(path)`, e.g. a catalog DB replaced by a catalog DB, a PNG that records the
    command that wrote it) and none of its `inputs`; else refuse. A link, a FIFO or a device is
    never the tool's: refused before anything reads it (a FIFO would block the read)."""
    from amgan_search.io import check_regular

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; name a file")
    if any(given is not None and Path(given).resolve() == path.resolve() for given in inputs):
        raise UserError(f"{path}: is an input of this command; choose another file name")
    if path.is_symlink():
        raise UserError(f"{path}: is a link, not {_a(kind)}; choose another file name")
    check_regular(path)
    if path.exists() and not is_same_kind(path):
        raise UserError(f"{path}: exists and is not {_a(kind)}; choose another file name")
    return path.resolve()


def claim_pngs(paths: Iterable[str | os.PathLike], made_by: str,
               inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Claim output PNGs: each missing, or a PNG the command `made_by` wrote (it records its
    maker, `images.save_image`), and none of the command's `inputs`."""
    from amgan_search.images import made_by_any

    inputs = list(inputs)
    for path in paths:
        claim_file(path, made_by_any(made_by), f"PNG image written by `{made_by}`", inputs)


# io's temporary names (`.NAME.PID.XXXX.tmp`, `.NAME.PID.old`): a killed writer's, never kept.
_TEMPORARY = re.compile(r"^\..+\.\d+\.(?:[^/]*\.tmp|old)$")


def carry_over(old: str | os.PathLike, new: str | os.PathLike,
               made: Callable[[str], bool]) -> list[str]:
    """Copy into the folder `new` (being written, not yet renamed into place) every file and
    folder of `old` that the tool did not make (`made(relative path)` False) and `new` does not
    hold, links as links: what `force` replaces is only the tool's. A FIFO, device or socket
    there cannot be carried: refused. Returns what was kept."""
    from amgan_search.io import check_regular

    old, new = Path(old), Path(new)
    kept: list[str] = []
    if not old.is_dir() or old.is_symlink():
        return kept
    for top, dirs, files in os.walk(old):
        rel_top = Path(top).relative_to(old)
        for name in sorted(dirs + files):
            rel = (rel_top / name).as_posix()
            source, target = old / rel, new / rel
            if _TEMPORARY.match(name) or made(rel) or os.path.lexists(target):
                continue  # the tool's, or a folder the new one holds too: looked into below
            target.parent.mkdir(parents=True, exist_ok=True)
            if name in dirs and not source.is_symlink():
                shutil.copytree(source, target, symlinks=True)
                dirs.remove(name)
            else:
                if not source.is_symlink():
                    check_regular(source)
                shutil.copy2(source, target, follow_symlinks=False)
            kept.append(rel)
    return kept
