"""Atomic writes, writer locks and JSON files: every file the project writes goes through here.

A file is written under a temporary name beside its destination and renamed into place only when
complete, so a killed command never leaves a half-written file where a reader looks. The temporary
name carries the writer's process id (`.NAME.PID.XXXX.tmp`), so the next write of the same target
removes what a killed writer left behind once that process is gone. Writers of one target take
its lock (`.NAME.lock` beside it, through filelock), so two of them never interleave. JSON-lines
logs append whole lines and flush them, and their reader drops a last line a kill cut short;
finished ones may be kept gzip-compressed (`packed`), and the reader reads both.

Where a regular file is expected, as an input or as an output to replace, a FIFO, a device or a
socket is refused (`check_regular`): reading one can block forever, and renaming over one replaces
something that was never a file of ours. A lock that cannot be created fails at once. JSON from
outside (a request, a server's answer) is parsed within a size and a nesting depth (`parse_json`).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import stat
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from amgan_search.errors import UserError


def _default_mode() -> int:
    """The mode a plain open() would give (mkstemp makes files private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a pid a later process reuses keeps its leftovers a while)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders that killed writers of `path` left beside it.

    Only names this module makes for `path` (`.NAME.PID.XXXX.tmp`, `.NAME.PID.old`) whose process
    is gone are removed; a live writer's, and anything else, are left alone. Returns what went.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.(?:[^/]*\.tmp|old)$")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in siblings:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid() or _alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_regular(path: str | os.PathLike, missing_ok: bool = True) -> None:
    """Refuse, in one line, a path where a regular file is expected that is a folder, a FIFO, a
    device or a socket (following links); a missing one passes when `missing_ok`."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if missing_ok:
            return
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder, not a file")
    kind = next((name for test, name in _KINDS if test(mode)), None)
    if kind is not None:
        raise UserError(f"{path}: is {kind}, not a regular file")


def _check_replaceable(path: Path) -> None:
    """An output path may be missing, a regular file or a link (the link is replaced, never what
    it points to); a FIFO, device or socket is never renamed over."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        return
    check_regular(path)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def check_parents(path: str | os.PathLike) -> None:
    """A file standing where one of `path`'s folders must be (`a.db/x.db`) is one line, not the
    OSError making that folder would raise."""
    path = Path(path)
    existing = next((p for p in path.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{path}: {existing} is a file, not a folder")


def make_parent(path: Path) -> None:
    """Create the folder `path` goes in (a file in its way is one line)."""
    check_parents(path)
    path.parent.mkdir(parents=True, exist_ok=True)


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """An OSError while writing the temporary file names the destination, not the temporary."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename).name.startswith(_temp_prefix(path)):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        if exc.filename is None and exc.errno is not None:  # e.g. a full disk while writing
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    make_parent(path)
    _check_replaceable(path)
    remove_stale(path)
    with _named(path):
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _named(path):
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
    make_parent(path)
    remove_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _default_mode() | 0o111)  # mkdtemp makes it private, 0700
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{os.getpid()}.old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def writer_lock(target: str | os.PathLike, timeout: float = -1) -> Iterator[None]:
    """Hold the lock of `target` (`.NAME.lock` beside it) while writing it.

    A second writer waits for the first (`timeout` -1: as long as it takes), so nothing is lost
    between them; with a timeout it gives up with a one-line error instead. The lock is the
    kernel's (flock), so a killed holder releases it at once. A lock file that cannot be created
    (a read-only place, /proc) is a one-line error at once: filelock would retry it forever.
    """
    from filelock import FileLock, Timeout

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.lock"
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:
        raise UserError(f"{target}: cannot be locked for writing ({path}: "
                        f"{exc.strerror or exc})") from None
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise UserError(f"{target}: another command is writing it; try again when it is done") from None
    try:
        yield
    finally:
        lock.release()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    check_regular(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def as_named(value: Any) -> Any:
    """A recorded value as what it names now, for comparing a run's record with a rerun's:
    records keep paths as the user gave them (no machine's folders in a shipped or published
    file), so a string naming an existing file or folder is compared as its resolved path
    (`data/x.db` and its absolute path are one file); dicts and lists value by value."""
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    if isinstance(value, dict):
        return {k: as_named(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_named(v) for v in value]
    return value


def parse_json(text: str | bytes, where: str, max_bytes: int, max_depth: int = 32) -> Any:
    """JSON from outside (a request's field, a server's answer) within `max_bytes` and
    `max_depth` levels of nesting, else a one-line UserError naming `where`: deep nesting would
    exhaust the parser's recursion, and a size without bound the memory."""
    if len(text) > max_bytes:
        raise UserError(f"{where}: over the {max_bytes:,}-byte limit")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{where}: not valid JSON (not UTF-8)") from None
    if json_depth(text) > max_depth:
        raise UserError(f"{where}: nested deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{where}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of [ and { in JSON text, strings skipped (C-speed regexes: answers
    carry megabytes of base64 pictures in strings)."""
    depth = deepest = 0
    for b in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if b in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def packed(path: str | os.PathLike) -> Path:
    """NAME.jsonl.gz beside NAME.jsonl: where a finished record file is kept gzip-compressed (how
    results stay small in the repository)."""
    path = Path(path)
    return path if path.suffix == ".gz" else path.with_name(path.name + ".gz")


def jsonl_exists(path: str | os.PathLike) -> bool:
    """Whether a JSON-lines file holds records as it is or compressed (`packed`)."""
    return Path(path).is_file() or packed(path).is_file()


def read_jsonl(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file ([] when missing), up to a last line a kill cut short;
    `repair` also cuts that partial line from the file, so appending resumes on a clean line.
    The records of its compressed copy (`packed`) come first: a rerun appends to the plain file."""
    path = Path(path)
    records = []
    if packed(path).is_file():
        try:
            with gzip.open(packed(path), "rb") as f:
                records = _read_lines(f)[0]
        except (EOFError, OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise UserError(f"{packed(path)}: damaged compressed records ({e})") from None
    if path == packed(path) or not path.is_file():
        return records
    with path.open("rb") as f:
        plain, good_bytes = _read_lines(f)
    if repair and good_bytes != path.stat().st_size:
        with path.open("r+b") as f:
            f.truncate(good_bytes)
    return records + plain


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Replace a JSON-lines file with `records`, compressed where it is kept compressed (a `.gz`
    path, or `packed` present and the plain file not), so a rerun keeps results as small."""
    path = Path(path)
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    if path != packed(path) and (path.is_file() or not packed(path).is_file()):
        with atomic_path(path) as tmp:
            tmp.write_bytes(text)
        return
    with atomic_path(packed(path)) as tmp, tmp.open("wb") as f:
        # mtime 0 and no name in the header: the same records give the same bytes
        with gzip.GzipFile(fileobj=f, mode="wb", filename="", mtime=0) as z:
            z.write(text)


def _read_lines(f) -> tuple[list[dict], int]:
    """JSON lines up to the first partial or broken one, and the bytes they take."""
    records, good_bytes = [], 0
    for line in f:
        try:
            if not line.endswith(b"\n"):
                raise ValueError("partial line")
            records.append(json.loads(line))
            good_bytes += len(line)
        except ValueError:
            break
    return records, good_bytes


class JsonlWriter:
    """Appends JSON lines; `durable` also fsyncs each batch, so a kill loses at most that batch.
    The file is opened at the first record: a run with nothing left to add leaves no empty file
    beside a compressed one (`packed`)."""

    def __init__(self, path: str | os.PathLike, durable: bool = False, compact: bool = False):
        self.path, self.f = Path(path), None
        self.durable = durable
        self.separators = (",", ":") if compact else None

    def write(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, separators=self.separators) + "\n" for r in records)
        if not lines:
            return
        if self.f is None:
            self.f = self.path.open("a", encoding="utf-8")
        self.f.write(lines)
        self.f.flush()
        if self.durable:
            os.fsync(self.f.fileno())

    def close(self) -> None:
        if self.f is not None:
            self.f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
