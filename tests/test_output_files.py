"""Every output file is claimed like output folders are, and outputs that cannot be locked fail
at once: a command writes a file where nothing is, or over a file of its own kind that it made,
never over an input, a catalog's files or a user's file; a folder replaced with --force keeps what
the tool did not make; a lock that cannot be created is one line, never an endless retry; a FIFO
or a device is refused where a regular file is expected, before anything reads it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amgan_search.errors import UserError
from builders import assert_refused, run

LINUX_PROC = sys.platform.startswith("linux") and Path("/proc/self").exists()



def within(seconds: float, fn, *args):
    """fn(*args) in a thread: (returned or raised, True) or (None, False) when it still runs after
    `seconds` (a command that would block forever fails the test instead of hanging it)."""
    box = {}

    def target():
        try:
            box["out"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["out"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    return box.get("out"), not thread.is_alive()


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A 20-image synthetic catalog (32 px)."""
    out = tmp_path_factory.mktemp("outputs") / "C"
    result = run("catalog", "synth", out, "--n", 20, "--seed", 1, "--size", 32, "--workers", 1)
    assert result.exit_code == 0, result.output
    return out


def fingerprint(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- row 1: catalog sheet --out

def test_sheet_never_writes_over_the_catalogs_own_files(catalog):
    before = fingerprint(catalog)
    for target in ("catalog.csv", "schema.json", "images/000001.png"):
        assert_refused(run("catalog", "sheet", catalog, "--out", catalog / target),
                       target, "not a PNG image written by `catalog sheet`")
    assert fingerprint(catalog) == before
    result = run("catalog", "import", "--format", "synthetic", catalog, "--db",
                 catalog.parent / "c.db", "--quiet")
    assert result.exit_code == 0, result.output


def test_sheet_never_writes_over_a_users_photo_or_text_at_the_default_name(catalog, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save("sheet.png")  # the user's photo
    photo = Path("sheet.png").read_bytes()
    assert_refused(run("catalog", "sheet", catalog), "sheet.png", "not a PNG image")
    assert Path("sheet.png").read_bytes() == photo
    Path("notes.txt").write_text("mine\n")
    assert_refused(run("catalog", "sheet", catalog, "--out", "notes.txt"), "notes.txt")
    assert Path("notes.txt").read_text() == "mine\n"


def test_sheet_replaces_a_sheet_it_wrote(catalog, tmp_path):
    out = tmp_path / "s.png"
    assert run("catalog", "sheet", catalog, "--out", out).exit_code == 0
    first = out.stat().st_mtime_ns
    result = run("catalog", "sheet", catalog, "--out", out, "--per-row", 2)
    assert result.exit_code == 0, result.output
    assert out.stat().st_mtime_ns != first


def test_an_edit_never_replaces_a_png_another_command_or_the_user_made(tmp_path):
    from builders import tiny_world

    w = tiny_world(tmp_path / "w")
    out = tmp_path / "D"
    out.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(out / "4_edit.png")  # a PNG, not edit's
    before = (out / "4_edit.png").read_bytes()
    assert_refused(run("edit", w["image"], "--color", "red", "--model", w["gan"], "--out", out),
                   "4_edit.png", "not a PNG image written by `edit`")
    assert (out / "4_edit.png").read_bytes() == before


# ---------------------------------------------------------------- row 2: synth --force

def test_synth_force_keeps_the_files_the_user_added(tmp_path):
    out = tmp_path / "C"
    assert run("catalog", "synth", out, "--n", 20, "--seed", 1, "--size", 32,
               "--workers", 1).exit_code == 0
    (out / "my-notes.txt").write_text("x\n")
    (out / "images" / "my-photo.png").write_bytes(b"not even a png")
    (out / "mine").mkdir()
    (out / "mine" / "a.txt").write_text("a\n")
    result = run("catalog", "synth", out, "--n", 10, "--seed", 2, "--size", 32, "--workers", 1,
                 "--force")
    assert result.exit_code == 0, result.output
    assert (out / "my-notes.txt").read_text() == "x\n"
    assert (out / "images" / "my-photo.png").read_bytes() == b"not even a png"
    assert (out / "mine" / "a.txt").read_text() == "a\n"
    # what the renderer made is replaced: 10 images now, not the 20 of the first render
    assert sorted(p.name for p in (out / "images").iterdir() if p.name != "my-photo.png") == [
        f"{i:06d}.png" for i in range(10)]


# ---------------------------------------------------------------- row 12: outputs that cannot be locked

@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_a_lock_that_cannot_be_created_is_one_line_at_once():
    from amgan_search.io import writer_lock

    def lock():
        with writer_lock("/proc/amgan-search-x.db"):
            return "locked"

    got, finished = within(10, lock)
    assert finished, "writer_lock retried a lock file it cannot create"
    assert isinstance(got, UserError) and "cannot be locked" in str(got), got


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_catalog_import_to_proc_fails_at_once_in_one_line(catalog):
    got = subprocess.run([sys.executable, "-m", "amgan_search.cli.main", "catalog", "import",
                          "--format", "synthetic", str(catalog), "--db", "/proc/x.db", "--quiet"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert got.returncode == 2 and got.stderr.count("\n") == 1, got.stderr
    assert "/proc/x.db: cannot be locked" in got.stderr


@pytest.mark.skipif(not LINUX_PROC, reason="needs Linux /proc")
def test_training_into_proc_says_why_not_another_writer(tmp_path):
    from builders import make_catalog

    db = make_catalog(tmp_path)
    result, finished = within(60, run, "train", "amgan", "--db", db, "--out", "/proc/r",
                              "--iters", 1, "--size", 32, "--device", "cpu")
    assert finished
    assert result.exit_code == 2 and "another command is writing it" not in result.output


# ---------------------------------------------------------------- special files

@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_as_a_catalog_db_to_write(catalog, fifo):
    result, finished = within(30, run, "catalog", "import", "--format", "synthetic", catalog,
                              "--db", fifo, "--quiet")
    assert finished, "the import blocked reading a FIFO"
    assert_refused(result, str(fifo), "FIFO")
    assert fifo.exists() and not fifo.is_file()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("command", ["catalog info", "query", "sheet over it"])
def test_a_fifo_is_refused_where_a_file_is_read(catalog, fifo, command, tmp_path):
    args = {"catalog info": ("catalog", "info", "--db", fifo),
            "query": ("query", fifo, "--index", tmp_path, "--no-edit"),
            "sheet over it": ("catalog", "sheet", catalog, "--out", fifo)}[command]
    result, finished = within(30, run, *args)
    assert finished, f"{command} blocked on a FIFO"
    assert_refused(result, "FIFO")


def test_writes_never_rename_over_a_fifo(fifo):
    from amgan_search.io import write_text

    got, finished = within(10, write_text, fifo, "x")
    assert finished and isinstance(got, UserError) and "FIFO" in str(got)
    assert not fifo.is_file()
