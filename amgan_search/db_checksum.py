"""A checksum of an SQLite file kept in the file itself, for files written once and then only read
(the catalog DB).

The first 8 bytes of the sha256 of the file, taken with the two 4-byte header fields SQLite leaves
to applications zeroed (user_version at offset 60, application_id at offset 68), are stored in those
same fields. No second file has to be kept in step with the DB, and any later change to it (damage,
or an edit by hand) shows. SQLite gives the two fields no meaning of its own.

Why not `PRAGMA quick_check`: it reads every page as well, so it costs about as much, but it checks
the pages' structure, not the bytes inside rows, where most damage lands (a text value that is no
longer UTF-8 fails only when that row is read). tests/test_catalog_safety.py
(`test_quick_check_misses_damage_the_checksum_finds`) flips 16 bytes at seeded places mid-file and
counts what each notices.
"""

from __future__ import annotations

import hashlib
import os

SQLITE_MAGIC = b"SQLite format 3\x00"
UNSEALED = bytes(8)  # a file written before the checksum existed: nothing to compare


def is_sqlite(path: str | os.PathLike) -> bool:
    """Whether the file starts as every SQLite database file does."""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def _seal_of(path: str | os.PathLike) -> tuple[bytes, bytes]:
    """(the checksum stored in the file's header, the checksum of its contents)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        head = bytearray(f.read(100))
        stored = bytes(head[60:64] + head[68:72])
        head[60:64] = head[68:72] = bytes(4)
        h.update(head)
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return stored, h.digest()[:8]


def seal(path: str | os.PathLike) -> None:
    """Store the checksum of an SQLite file just written (and closed) in its header."""
    _, digest = _seal_of(path)
    with open(path, "r+b") as f:
        f.seek(60)
        f.write(digest[:4])
        f.seek(68)
        f.write(digest[4:])


def stored(path: str | os.PathLike) -> bytes | None:
    """The checksum kept in the file's header (None when it has none): what an index records of
    the DB it was built from, so a DB imported again since is noticed without reading it whole."""
    with open(path, "rb") as f:
        head = f.read(100)
    value = head[60:64] + head[68:72]
    return None if value == UNSEALED or len(value) < 8 else value


def verify(path: str | os.PathLike) -> bool | None:
    """True when the file matches its checksum, False when it changed, None when it has none."""
    stored, contents = _seal_of(path)
    if stored == UNSEALED:
        return None
    return stored == contents
