"""Integrity: each weights and index file has its sha256 recorded beside it and checked on load.

A folder the project writes (a model, an index, a checkpoint) gets `SHA256SUMS`, in the format of
coreutils' `sha256sum` ("<hex>  <name>" a line), so `sha256sum -c SHA256SUMS` checks it too. A
loader verifies the files it reads against it, so a damaged file is a one-line error naming it,
never a silently wrong answer. sha256 reads about 1-2 GB/s on one core: the shipped models (tens
of MB) cost tens of milliseconds, a small part of a cold query (several seconds).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from amgan_search.errors import UserError

SUMS = "SHA256SUMS"


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sums(folder: str | os.PathLike, names: Iterable[str]) -> dict[str, str]:
    """Record the sha256 of `names` (files inside `folder`) in folder/SHA256SUMS; returns them.

    Written atomically, so it also serves a folder already in place; on a folder being written,
    call it before the rename, so the sums and the files appear together."""
    from amgan_search.io import write_text

    folder = Path(folder)
    sums = {name: file_sha256(folder / name) for name in sorted(names)}
    write_text(folder / SUMS, "".join(f"{h}  {name}\n" for name, h in sums.items()))
    return sums


def read_sums(folder: str | os.PathLike) -> dict[str, str] | None:
    """{name: sha256} from folder/SHA256SUMS; None when the folder has none (written before)."""
    path = Path(folder) / SUMS
    if not path.is_file():
        return None
    sums = {}
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name:
            raise UserError(f"{path}: line {n} is not '<sha256>  <file name>'")
        sums[name.lstrip("*")] = digest.lower()
    return sums


def verify(folder: str | os.PathLike, names: Iterable[str], required: bool = False) -> bool:
    """Check `names` in `folder` against its SHA256SUMS; a mismatch is a one-line UserError.

    Returns False when the folder records no sums (a folder written before they were recorded),
    unless `required`, which refuses it. A name the sums do not list is refused too: the files a
    loader reads must all be covered."""
    folder = Path(folder)
    sums = read_sums(folder)
    if sums is None:
        if required:
            raise UserError(f"{folder / SUMS}: missing; the folder's files cannot be checked")
        return False
    for name in names:
        if name not in sums:
            raise UserError(f"{folder / SUMS}: records no sha256 for {name}")
        if not (folder / name).is_file():
            raise UserError(f"{folder / name}: no such file")
        if file_sha256(folder / name) != sums[name]:
            raise UserError(f"{folder / name}: damaged (its sha256 differs from the one in {SUMS})")
    return True
