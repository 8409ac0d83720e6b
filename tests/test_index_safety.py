"""Index folders lose nothing and never answer silently wrong.

A build never writes over what it did not make; writers lock and readers see one version; every
file is checked against its sha256 and index.json field by field; killed writers leave nothing
behind after the next run. The two randomized tests kill `index build` / `index add` at seeded
random moments, and run two `index add` at once while a reader loops.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.index import index_dir, search
from amgan_search.index.build import add_items, build_index
from amgan_search.index.embed import load_embedder
from amgan_search.index.index_dir import FILES, INFO, VERSIONS, current
from amgan_search.index.search import Searcher
from amgan_search.integrity import SUMS, write_sums
from amgan_search.outputs import MARKER, kind_of
from builders import assert_refused, make_catalog, make_classifier, run

BIN = [sys.executable, "-m", "amgan_search.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
QUIET = ("--workers", "0", "--batch-size", "4", "--device", "cpu", "--quiet")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    db = make_catalog(root, n=24)
    cam = make_classifier(root / "embedder")
    emb = load_embedder(cam, device="cpu")
    index = root / "index"
    build_index(db, index, emb, workers=0, progress=False)
    more = make_catalog(root / "more", n=40)  # the same 24 items (same seed), then 16 new ones
    return SimpleNamespace(root=root, db=db, cam=cam, emb=emb, index=index, more=more,
                           image=root / "catalog" / "img" / "0.png")


def copy_index(world, dest: Path) -> Path:
    shutil.copytree(world.index, dest)
    return dest





def answers(index: Path, k: int = 3) -> list[list[str]]:
    """The ids each of the first 24 items' stored vectors finds: an index's answers."""
    searcher = Searcher(index, use_gpu=False)
    vectors = np.asarray(searcher.embeddings()[:24], dtype=np.float32)
    rows, _ = searcher.search(vectors, k=k)
    return [[searcher.ids[r] for r in row] for row in rows]


def build_args(world, out, *extra):
    return ("index", "build", "--db", world.db, "--out", out, "--embedder", world.cam, *QUIET, *extra)


# ---------------------------------------------------------------- outputs (row 1)

@pytest.mark.parametrize("case", ["unmarked", "catalog", "catalog-parent", "cwd"])
def test_build_never_writes_over_what_it_did_not_make(world, tmp_path, monkeypatch, case):
    notes = tmp_path / "p" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    out, needle = {"unmarked": (notes.parent, "did not write"),
                   "catalog": (world.root / "catalog", "holds the input"),
                   "catalog-parent": (world.root, "holds the input"),
                   "cwd": (Path("."), "current folder")}[case]
    monkeypatch.chdir(notes.parent if case == "cwd" else tmp_path)
    before = sorted(p.name for p in Path(out).resolve().iterdir())
    assert_refused(run(*build_args(world, out)), needle, alone=True)
    assert sorted(p.name for p in Path(out).resolve().iterdir()) == before
    assert notes.read_text() == "mine"


def test_an_index_is_replaced_only_with_force_and_readers_keep_the_old_one(world, tmp_path):
    index = copy_index(world, tmp_path / "index")
    first = current(index)
    assert_refused(run(*build_args(world, index)), "already", "pass --force", alone=True)
    assert current(index).number == first.number == 1
    result = run(*build_args(world, index, "--force"))
    assert result.exit_code == 0, result.output
    assert current(index).number == 2 and Searcher(index, use_gpu=False).count == 24
    assert index_dir.read_faiss(first).ntotal == 24  # a reader that resolved version 1 still can


def test_a_new_index_carries_its_marker_its_sums_and_index_json_on_top(world):
    assert kind_of(world.index) == "index"
    assert json.loads((world.index / MARKER).read_text())["kind"] == "index"
    version = world.index / VERSIONS / "1"
    assert (world.index / INFO).read_bytes() == (version / INFO).read_bytes()
    sums = (version / SUMS).read_text().split()
    assert sorted(sums[1::2]) == sorted(FILES)
    # cli/options.schema_in reads DIR/index.json for the query's attribute flags
    assert json.loads((world.index / INFO).read_text())["schema"]["color"] == ["red", "green", "blue"]


def test_the_demo_replaces_only_its_own_default_index(world, tmp_path):
    from amgan_search.index.demo import ensure_index

    index = copy_index(world, tmp_path / "default")
    ensure_index(world.db, index, world.emb, 4, 0, log=lambda _: None)
    assert current(index).number == 1  # the same catalog and embedder: reused
    other = load_embedder(make_classifier(tmp_path / "other", seed=1), device="cpu")
    ensure_index(world.db, index, other, 4, 0, log=lambda _: None)
    assert current(index).number == 2  # its own index over another embedder: rebuilt
    with pytest.raises(UserError, match="another catalog"):
        ensure_index(world.more, index, other, 4, 0, log=lambda _: None)
    assert current(index).number == 2


# ---------------------------------------------------------------- writers lock, readers see one version (rows 3, 15)

def test_two_adds_at_once_keep_both_batches(world, tmp_path):
    index = copy_index(world, tmp_path / "index")
    start = threading.Barrier(2)
    added = {}

    def add(name, ids):
        start.wait()
        added[name] = add_items(index, world.more, world.emb, ids=ids, workers=0, progress=False)

    threads = [threading.Thread(target=add, args=(n, [f"item{i}" for i in ids]))
               for n, ids in (("a", range(24, 30)), ("b", range(30, 36)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert added == {"a": 6, "b": 6}
    searcher = Searcher(index, use_gpu=False)
    assert searcher.count == 36 and sorted(searcher.ids) == sorted(f"item{i}" for i in range(36))
    assert current(index).number == 3 and len(searcher.info["added"]) == 2


def test_a_reader_whose_version_vanished_loads_the_current_one(world, tmp_path, monkeypatch):
    index = copy_index(world, tmp_path / "index")
    real = search.current
    raced = []

    def resolve_then_two_writers_switch(folder):
        version = real(folder)
        if not raced:  # after this reader resolved version 1, two adds switch to 2, then to 3
            raced.append(version.number)
            add_items(folder, world.more, world.emb, ids=["item24"], workers=0, progress=False)
            add_items(folder, world.more, world.emb, ids=["item25"], workers=0, progress=False)
        return version

    monkeypatch.setattr(search, "current", resolve_then_two_writers_switch)
    searcher = Searcher(index, use_gpu=False)
    assert raced == [1] and not (index / VERSIONS / "1").exists()
    assert searcher.version.number == 3 and searcher.count == 26


def test_an_index_written_before_versions_loads_and_add_converts_it(world, tmp_path):
    flat = flatten(copy_index(world, tmp_path / "flat"))
    assert kind_of(flat) == "index" and Searcher(flat, use_gpu=False).count == 24
    legacy = current(flat)
    assert legacy.number is None and legacy.folder == flat
    assert add_items(flat, world.more, world.emb, ids=["item24"], workers=0, progress=False) == 1
    assert current(flat).number == 1 and (flat / MARKER).is_file()
    assert index_dir.read_labels(legacy).shape == (24, 2)  # the old files stay for one switch
    converted = Searcher(flat, use_gpu=False)
    assert converted.ids == [f"item{i}" for i in range(25)]
    assert np.array_equal(converted.embeddings()[:24], index_dir.read_embeddings(legacy))
    add_items(flat, world.more, world.emb, ids=["item25"], workers=0, progress=False)
    assert not (flat / "index.faiss").exists() and Searcher(flat, use_gpu=False).count == 26


def flatten(index: Path) -> Path:
    """An index as written before versions: the five files in the folder, no sums, no marker."""
    version = current(index).folder
    for name in FILES:
        shutil.copyfile(version / name, index / name)
    shutil.rmtree(index / VERSIONS)
    (index / MARKER).unlink()
    info = json.loads((index / INFO).read_text())
    del info["version"]
    (index / INFO).write_text(json.dumps(info))
    return index


# ---------------------------------------------------------------- integrity (row 6)

def flip(path: Path, at: float = 0.5, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    data[i:i + n] = bytes(b ^ 0xFF for b in data[i:i + n])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", FILES)
def test_a_damaged_file_is_refused_naming_it(world, tmp_path, name):
    index = copy_index(world, tmp_path / "index")
    flip(current(index).folder / name, at=0.9)  # e.g. an overwritten vector near index.faiss' end
    with pytest.raises(UserError) as err:
        Searcher(index, use_gpu=False)
    message = str(err.value)
    assert "\n" not in message and name in message and "damaged" in message


def test_query_on_a_damaged_index_is_one_line_and_sums_cannot_be_dropped(world, tmp_path):
    index = copy_index(world, tmp_path / "index")
    version = current(index).folder
    flip(version / "index.faiss", at=0.9)
    assert_refused(run("query", world.image, "--index", index, "--no-edit", "--device", "cpu"),
            "index.faiss", "damaged", alone=True)
    (version / SUMS).unlink()
    assert_refused(run("index", "info", index), "SHA256SUMS", "missing", alone=True)


# ---------------------------------------------------------------- inconsistent index.json (row 11)

def rewrite_info(index: Path, change) -> None:
    """Edit the current version's index.json (and its copy on top), sums rewritten to match."""
    version = current(index).folder
    info = json.loads((version / INFO).read_text())
    change(info)
    for path in (version / INFO, index / INFO):
        path.write_text(json.dumps(info))
    write_sums(version, FILES)


@pytest.mark.parametrize("change,needle", [
    (lambda i: i.update(type="ivf", params={"nlist": 4}), "nprobe"),
    (lambda i: i.update(embedder=None), '"embedder"'),
    (lambda i: i.update(count=25), "index.json says 25"),
    (lambda i: i.update(dim="abc"), '"dim"'),
    (lambda i: i.update(type="lsh"), '"type"'),
    (lambda i: i.update(schema={"color": "red"}), '"schema"'),
    (lambda i: i.update(schema={"color": ["red", "green", "blue"]}), "labels.npy"),
    (lambda i: i.update(params=[1]), '"params"'),
])
def test_an_inconsistent_index_json_is_one_line(world, tmp_path, change, needle):
    index = copy_index(world, tmp_path / "index")
    rewrite_info(index, change)
    with pytest.raises(UserError) as err:
        Searcher(index, use_gpu=False)
    assert "\n" not in str(err.value) and needle in str(err.value), str(err.value)
    assert_refused(run("query", world.image, "--index", index, "--no-edit", "--device", "cpu"), needle,
                   alone=True)


def test_a_bad_version_pointer_and_a_damaged_labels_header_are_one_line(world, tmp_path):
    index = copy_index(world, tmp_path / "index")
    (index / INFO).write_text(json.dumps({**current(index).info, "version": 7}))
    assert_refused(run("index", "info", index), "versions/7", "no such folder", alone=True)
    flat = flatten(copy_index(world, tmp_path / "flat"))  # no sums: the reader itself must cope
    labels = flat / "labels.npy"
    labels.write_bytes(labels.read_bytes()[:10] + b"{'descr': '<i8', 'shape': (" + b"\x00" * 40)
    with pytest.raises(UserError, match="labels.npy: corrupt array file"):
        Searcher(flat, use_gpu=False)


# ---------------------------------------------------------------- leftovers of killed writers (policy 6)

def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("writer", ["build", "add"])
def test_the_next_write_removes_what_killed_writers_left(world, tmp_path, writer):
    index = copy_index(world, tmp_path / "index")
    gone, alive = dead_pid(), subprocess.Popen(["sleep", "60"])
    folders = [tmp_path / f".index.{gone}.abcd.tmp", index / VERSIONS / f".2.{gone}.efgh.tmp"]
    if writer == "build":
        folders.append(tmp_path / ".index.shards")  # a killed torchrun build's scratch folder
    left = [*folders, index / f".index.json.{gone}.ijkl.tmp"]
    kept = tmp_path / f".index.{alive.pid}.mnop.tmp"  # a live writer's: not ours to remove
    try:
        for folder in [*folders, kept]:
            folder.mkdir()
            (folder / "part").write_text("partial")
        left[-1].write_text("partial")
        if writer == "build":
            build_index(world.db, index, world.emb, workers=0, progress=False, force=True)
        else:
            assert add_items(index, world.more, world.emb, ids=["item30"], workers=0,
                             progress=False) == 1
        assert [p for p in left if p.exists()] == [] and kept.is_dir()
    finally:
        alive.kill()
        alive.wait()


# ---------------------------------------------------------------- randomized: kill -9, concurrent writers

def leftovers(index: Path) -> list[str]:
    """Temporary names beside the index, in it and among its versions (the lock file is kept)."""
    found = [p for p in index.parent.iterdir() if p.name.startswith(f".{index.name}.")
             and p.name != f".{index.name}.lock"]
    found += [p for p in index.iterdir() if p.name not in (MARKER, INFO, VERSIONS)]
    found += [p for p in (index / VERSIONS).iterdir() if not p.name.isdigit()]
    return sorted(str(p) for p in found)


def writing(index: Path) -> bool:
    """Whether a writer has started writing a new version of the index (its temporary folder)."""
    return any(p.name.startswith(".") for p in (index / VERSIONS).iterdir())


def kill_at_random_moments(cmds: list[list[str]], indexes: list[Path], rng) -> list[float]:
    """Start every command at once and kill -9 each at its own random moment: the first anywhere
    in its first 4 s (start-up, embedding), the others 0-500 ms after it starts writing its new
    version (a small index writes in about that long). Returns the delays drawn."""
    delays = [rng.uniform(0, 4)] + [rng.uniform(0, 0.5) for _ in cmds[1:]]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True) for cmd in cmds]
    started = time.monotonic()
    kill_at = [started + delays[0]] + [None] * (len(cmds) - 1)
    while any(proc.poll() is None for proc in procs):
        now = time.monotonic()
        for i, proc in enumerate(procs):
            if kill_at[i] is None and writing(indexes[i]):
                kill_at[i] = now + delays[i]
            if proc.poll() is None and kill_at[i] is not None and now >= kill_at[i]:
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.005)
    return delays


@pytest.mark.slow
@pytest.mark.parametrize("command", ["build", "add"])
def test_kill_9_at_a_random_moment_keeps_the_previous_index(world, tmp_path, command):
    """Killed anywhere (mostly while it writes), the index answers as before or as after; a rerun
    completes and leaves no temporary names behind."""
    rng = random.Random(f"kill-{command}")

    def cmd(index):
        if command == "build":  # the same catalog again
            return [*BIN, *map(str, build_args(world, index, "--force"))]
        return [*BIN, "index", "add", "--index", str(index), "--db", str(world.more), *QUIET]

    def rerun(index):
        if command == "build":
            build_index(world.db, index, world.emb, batch_size=4, workers=0, progress=False,
                        force=True)
        else:
            add_items(index, world.more, world.emb, batch_size=4, workers=0, progress=False)

    before = answers(world.index)
    reference = copy_index(world, tmp_path / "reference")
    rerun(reference)
    after = answers(reference)
    indexes = [copy_index(world, tmp_path / f"index{i}") for i in range(3)]
    delays = kill_at_random_moments([cmd(index) for index in indexes], indexes, rng)
    for index, delay in zip(indexes, delays):
        finished = current(index).number == 2  # else still version 1: the kill came first
        assert answers(index) == (after if finished else before), delay
        rerun(index)
        assert answers(index) == after, delay
        assert Searcher(index, use_gpu=False).count == Searcher(reference, use_gpu=False).count
        assert leftovers(index) == [], delay


@pytest.mark.slow
def test_two_adds_at_the_same_moment_keep_both_batches_while_readers_never_fail(world, tmp_path):
    """Two indexes, each with two `index add` of different seeded batches started together; a
    reader loads and searches them over and over meanwhile."""
    rng = random.Random("two-adds")
    indexes = [copy_index(world, tmp_path / f"index{i}") for i in range(2)]
    procs = []
    for index in indexes:
        new = [f"item{i}" for i in range(24, 40)]
        rng.shuffle(new)
        for batch in (new[:8], new[8:]):
            procs.append(subprocess.Popen(
                [*BIN, "index", "add", "--index", str(index), "--db", str(world.more), "--ids",
                 ",".join(batch), *QUIET], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True))
            time.sleep(rng.uniform(0, 0.3))
    reads, counts = 0, set()
    while any(p.poll() is None for p in procs):
        for index in indexes:
            searcher = Searcher(index, use_gpu=False)  # must never fail, never see a mix
            rows, _ = searcher.search(np.asarray(searcher.embeddings()[:4], np.float32), k=2)
            assert rows[:, 0].tolist() == [0, 1, 2, 3]
            counts.add(searcher.count)
            reads += 1
        time.sleep(0.01)
    for proc in procs:
        out, err = proc.communicate()
        assert proc.returncode == 0 and "added 8 items" in out, err[-2000:]
    for index in indexes:
        final = Searcher(index, use_gpu=False)
        assert final.count == 40 and sorted(final.ids) == sorted(f"item{i}" for i in range(40))
        assert current(index).number == 3 and leftovers(index) == []
    assert reads > 0 and counts <= {24, 32, 40}
