"""Atomic writes and JSON files: every file the project writes goes through here.

A file is written under a temporary name beside its destination and renamed into place only when
complete, so a killed command never leaves a half-written file where a reader looks. JSON-lines
logs append whole lines and flush them, and their reader drops a last line a kill cut short.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from amgan_search.errors import UserError


def _default_mode() -> int:
    """The mode a plain open() would give (mkstemp makes files private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `path`; on success it replaces `path`.

    A directory cannot be renamed over a non-empty one, so the old one is first moved aside and
    removed after the swap: a reader sees either the old directory or the new one, complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode() | 0o111)  # mkdtemp makes it private, 0700
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file ([] when missing), up to a last line a kill cut short;
    `repair` also cuts that partial line from the file, so appending resumes on a clean line."""
    path = Path(path)
    if not path.is_file():
        return []
    records, good_bytes = [], 0
    with path.open("rb") as f:
        for line in f:
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("partial line")
                records.append(json.loads(line))
                good_bytes += len(line)
            except ValueError:
                break
    if repair and good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records


class JsonlWriter:
    """Appends JSON lines; `durable` also fsyncs each batch, so a kill loses at most that batch."""

    def __init__(self, path: str | os.PathLike, durable: bool = False, compact: bool = False):
        self.f = Path(path).open("a", encoding="utf-8")
        self.durable = durable
        self.separators = (",", ":") if compact else None

    def write(self, records: Iterable[dict]) -> None:
        for r in records:
            self.f.write(json.dumps(r, separators=self.separators) + "\n")
        self.f.flush()
        if self.durable:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
