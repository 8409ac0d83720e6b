"""Catalogs lose nothing and never read outside themselves.

`catalog import` replaces a file only when it is a catalog DB and takes the DB's lock; `catalog
synth` writes a marked folder and replaces only a synthetic catalog, when asked; CSV columns SQLite
cannot hold side by side, item paths leading out of the catalog, unreadable images, a damaged DB and
out-of-range numbers are each one line. The randomized test kills `catalog import` at seeded random
moments: the previous DB still answers the same, a rerun completes, and nothing temporary is left.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from amgan_search import db_checksum
from amgan_search.catalog import Catalog, import_catalog
from amgan_search.dataset import CatalogImages
from amgan_search.errors import UserError
from amgan_search.images import save_image
from amgan_search.io import writer_lock
from amgan_search.outputs import MARKER, kind_of
from amgan_search.synthetic import write_catalog
from builders import assert_refused, run

BIN = [sys.executable, "-m", "amgan_search.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
COLORS = ("red", "green", "blue")





def write_csv_catalog(folder: Path, n: int = 6, header: str = "id,path,split,color",
                      rows: list[str] | None = None) -> Path:
    """A folder of n small noisy PNGs and items.csv over them (row i: line i + 2)."""
    rng = np.random.default_rng(0)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        save_image(folder / "img" / f"{i}.png", rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    if rows is None:
        rows = [f"item{i},img/{i}.png,{'test' if i % 3 == 0 else 'train'},{COLORS[i % 3]}"
                for i in range(n)]
    (folder / "items.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder / "items.csv"


def leftovers(folder: Path, name: str) -> list[str]:
    """Temporary files beside `name` (the lock file `.NAME.lock` is kept, as filelock keeps it)."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(f".{name}.") and p.name != f".{name}.lock")


def answers(db: Path):
    """What a reader sees in a DB: its rows, counts and a matching lookup."""
    cat = Catalog.open(db)
    return (cat.items().to_dict("records"), cat.counts(), cat.matching({"color": "red"}))


# ---------------------------------------------------------------------------------------------
# The DB file: replaced only when it is a catalog DB; writers lock (row 7)
# ---------------------------------------------------------------------------------------------

def test_import_replaces_a_catalog_db_and_refuses_any_other_file(tmp_path):
    src = write_csv_catalog(tmp_path / "cat")
    db = tmp_path / "c.db"
    import_catalog("csv", write_csv_catalog(tmp_path / "small", n=3), db, progress=False)
    import_catalog("csv", src, db, progress=False)  # a catalog DB by a catalog DB: replaced
    assert Catalog.open(db).count() == 6

    notes = tmp_path / "notes.db"
    notes.write_text("my notes\n")
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    other_bytes = other.read_bytes()
    for target, kept in ((notes, b"my notes\n"), (other, other_bytes), (src, src.read_bytes())):
        assert_refused(run("catalog", "import", "--format", "csv", src, "--db", target, "--quiet"),
                        str(target), "is not a catalog DB")
        assert target.read_bytes() == kept
    assert_refused(run("catalog", "import", "--format", "csv", src, "--db", tmp_path / "cat",
                        "--quiet"), "is a folder")
    assert leftovers(tmp_path, "notes.db") == [] and leftovers(tmp_path, "c.db") == []


def test_a_db_path_under_a_file_is_one_line(tmp_path):
    src = write_csv_catalog(tmp_path / "cat")
    (tmp_path / "a.db").write_text("a file\n")
    for db in (tmp_path / "a.db" / "x.db", tmp_path / "a.db" / "sub" / "x.db"):
        assert_refused(run("catalog", "import", "--format", "csv", src, "--db", db, "--quiet"),
                        "a.db is a file, not a folder")
        with pytest.raises(UserError, match="a.db is a file, not a folder"):
            import_catalog("csv", src, db, progress=False)
    assert (tmp_path / "a.db").read_text() == "a file\n"


@pytest.mark.slow
def test_two_imports_to_one_db_run_in_turn(tmp_path):
    src = write_csv_catalog(tmp_path / "cat")
    db = tmp_path / "c.db"
    done = threading.Event()

    def second_writer():
        import_catalog("csv", src, db, progress=False)
        done.set()

    with writer_lock(db):  # a first import holding the DB
        thread = threading.Thread(target=second_writer)
        thread.start()
        assert not done.wait(1.5), "the second import did not wait for the lock"
        assert not db.exists()
    thread.join(60)
    assert done.is_set() and Catalog.open(db).count() == 6


# ---------------------------------------------------------------------------------------------
# `catalog synth`: a marked folder, replaced only when asked; numbers in range (rows 1, 14)
# ---------------------------------------------------------------------------------------------

def test_synth_marks_its_folder_and_replaces_only_a_synthetic_catalog(tmp_path, monkeypatch):
    out = tmp_path / "synth"
    args = ("catalog", "synth", out, "--n", 3, "--size", 16, "--workers", 1)
    assert run(*args).exit_code == 0
    assert kind_of(out) == "catalog" and (out / MARKER).is_file()
    before = (out / "catalog.csv").read_bytes()
    assert_refused(run(*args, "--seed", 1), "holds a catalog already", "--force")
    assert (out / "catalog.csv").read_bytes() == before
    for flag in ("--force", "--overwrite"):  # one flag, two names
        assert run(*args, "--seed", 1, flag).exit_code == 0
        assert (out / "catalog.csv").read_bytes() != before and kind_of(out) == "catalog"

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    assert_refused(run("catalog", "synth", mine, "--n", 3, "--size", 16, "--force"),
                    "files this tool did not write")
    assert (mine / "notes.txt").read_text() == "keep\n" and sorted(os.listdir(mine)) == ["notes.txt"]
    monkeypatch.chdir(tmp_path)
    assert_refused(run("catalog", "synth", ".", "--n", 3, "--size", 16, "--force"),
                    "the current folder")
    assert_refused(run("catalog", "synth", mine / "notes.txt" / "sub", "--n", 3, "--size", 16),
                    "notes.txt is a file, not a folder")


@pytest.mark.parametrize("args, needle", [
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--size", "100000"], "--size"),
    (["--size", "8"], "--size"),
    (["--n", "0"], "--n"),
    (["--n", "2000000"], "--n"),
    (["--test-fraction", "1"], "--test-fraction"),
    (["--workers", "0"], "--workers"),
])
def test_synth_numbers_out_of_range_are_one_line(tmp_path, args, needle):
    assert_refused(run("catalog", "synth", tmp_path / "s", "--n", "3", "--size", "16", *args),
                    needle)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kwargs, needle", [
    ({"seed": -1}, "seed"), ({"size": 100000}, "image size"), ({"size": 16.0}, "image size"),
    ({"n": 0}, "number of images"), ({"n": True}, "number of images"),
])
def test_write_catalog_checks_its_numbers_too(tmp_path, kwargs, needle):
    with pytest.raises(UserError, match=needle):
        write_catalog(tmp_path / "s", **{"n": 3, "size": 16, "progress": False, **kwargs})
    assert not (tmp_path / "s").exists()


def test_cli_limits_are_the_library_limits():
    from amgan_search.cli import synthetic as cli_synth
    from amgan_search.synthetic import catalog as lib

    assert (cli_synth.MAX_N, cli_synth.MAX_SEED, cli_synth.MIN_SIZE, cli_synth.MAX_SIZE) == \
        (lib.MAX_N, lib.MAX_SEED, lib.MIN_SIZE, lib.MAX_SIZE)


# ---------------------------------------------------------------------------------------------
# CSV columns SQLite cannot hold side by side (row 8)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, cells, named", [
    ("id,path,split,color,ID", ",x", ("'id'", "'ID'")),
    ("id,path,split,color,Path", ",x", ("'path'", "'Path'")),
    ("id,path,split,color,Split", ",x", ("'split'", "'Split'")),
    ("id,path,split,color,Color", ",x", ("'color'", "'Color'")),
    ("id,path,split,color,Category", ",x", ("'category'", "'Category'")),
    ("id,path,split,color,rowid", ",7", ("'rowid'",)),
])
def test_csv_columns_equal_ignoring_case_are_one_line(tmp_path, header, cells, named):
    rows = [f"item{i},img/{i}.png,train,{COLORS[i % 3]}{cells}" for i in range(3)]
    src = write_csv_catalog(tmp_path / "cat", n=3, header=header, rows=rows)
    line = assert_refused(run("catalog", "import", "--format", "csv", src, "--db",
                               tmp_path / "c.db", "--quiet"), "items.csv", *named)
    assert "OperationalError" not in line
    assert not (tmp_path / "c.db").exists()


# ---------------------------------------------------------------------------------------------
# Item paths stay inside the catalog, at import and at every read (row 9)
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def outside(tmp_path) -> Path:
    """A real image outside the catalog folder, which no read may return."""
    path = tmp_path / "outside" / "secret.png"
    save_image(path, np.zeros((24, 24, 3), np.uint8))
    return path


def test_import_refuses_paths_leading_out_naming_the_row(tmp_path, outside):
    rows = [f"item{i},img/{i}.png,train,red" for i in range(3)]
    cases = {
        "../../../../etc/passwd": "leaves the catalog folder",
        "../outside/secret.png": "leaves the catalog folder",
        str(outside): "is absolute",
        "img/link.png": "leads outside the catalog folder",  # a symlink out
    }
    src = write_csv_catalog(tmp_path / "cat", n=3, rows=rows)
    (tmp_path / "cat" / "img" / "link.png").symlink_to(outside)
    for bad, message in cases.items():
        src.write_text("id,path,split,color\n" + "\n".join([*rows, f"evil,{bad},train,red"]) + "\n")
        assert_refused(run("catalog", "import", "--format", "csv", src, "--db", tmp_path / "c.db",
                            "--quiet"), "items.csv:5", message)
        assert not (tmp_path / "c.db").exists()
    # A symlink that stays inside the catalog is an ordinary item.
    (tmp_path / "cat" / "img" / "again.png").symlink_to(tmp_path / "cat" / "img" / "0.png")
    src.write_text("id,path,split,color\n" + "\n".join([*rows, "twin,img/again.png,train,red"]) + "\n")
    assert import_catalog("csv", src, tmp_path / "c.db", progress=False).count() == 4


def test_reads_never_open_a_file_outside_the_catalog(tmp_path, outside, monkeypatch):
    import amgan_search.images

    src = write_csv_catalog(tmp_path / "cat", n=4)
    db = tmp_path / "c.db"
    import_catalog("csv", src, db, progress=False)
    # After the import: one image becomes a symlink out, and the DB is edited by hand (re-sealed,
    # as a DB written before checksums would pass) to hold a `..` and an absolute path.
    (tmp_path / "cat" / "img" / "1.png").unlink()
    (tmp_path / "cat" / "img" / "1.png").symlink_to(outside)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE items SET path = '../outside/secret.png' WHERE id = 'item2'")
    conn.execute("UPDATE items SET path = ? WHERE id = 'item3'", [str(outside)])
    conn.commit()
    conn.close()
    db_checksum.seal(db)

    opened = []
    real_load = amgan_search.images.load_image
    monkeypatch.setattr(amgan_search.images, "load_image",
                        lambda path: opened.append(Path(path)) or real_load(path))
    cat = Catalog.open(db)
    assert cat.read_image("img/0.png").shape == (24, 24, 3)
    for path in ("img/1.png", "../outside/secret.png", str(outside), "../../../../etc/passwd"):
        with pytest.raises(UserError, match=r"c.db: image path .* leads outside the catalog folder"):
            cat.read_image(path)
        with pytest.raises(UserError, match="leads outside"):
            cat.resolve(path)
    dataset = CatalogImages(db, size=16)
    dataset[0]
    for i in (1, 2, 3):
        with pytest.raises(UserError, match="leads outside the catalog folder"):
            dataset[i]
    assert opened and all(p.is_relative_to((tmp_path / "cat").resolve()) for p in opened)


# ---------------------------------------------------------------------------------------------
# Images are decoded at import; a bad one met later is one line (row 9)
# ---------------------------------------------------------------------------------------------

def _spoil_images(folder: Path) -> None:
    """Image 2 cut short (a truncated PNG), image 4 not an image at all."""
    png = (folder / "img" / "2.png").read_bytes()
    (folder / "img" / "2.png").write_bytes(png[: len(png) * 2 // 3])
    (folder / "img" / "4.png").write_text("this is not an image\n")


def test_import_decodes_every_image_and_names_the_bad_rows(tmp_path):
    src = write_csv_catalog(tmp_path / "cat")
    _spoil_images(tmp_path / "cat")
    result = run("catalog", "import", "--format", "csv", src, "--db", tmp_path / "c.db")
    line = assert_refused(result, "items.csv:4", "2.png", "items.csv:6")
    assert "1 more bad images" in line and not (tmp_path / "c.db").exists()
    assert "check images" in result.stderr  # the progress bar, on stderr
    result = run("catalog", "import", "--format", "csv", src, "--db", tmp_path / "c.db",
                 "--no-check-images", "--quiet")
    assert result.exit_code == 0, result.output
    with pytest.raises(UserError, match=r"2.png: unreadable image"):
        Catalog.open(tmp_path / "c.db").read_image("img/2.png")
    with pytest.raises(UserError, match=r"4.png: not an image file"):
        CatalogImages(tmp_path / "c.db", size=16)[4]


@pytest.mark.slow
def test_a_bad_image_in_dataloader_workers_is_one_line_from_index_build(tmp_path):
    from builders import make_classifier

    src = write_csv_catalog(tmp_path / "cat", n=8)
    _spoil_images(tmp_path / "cat")
    db = tmp_path / "c.db"
    import_catalog("csv", src, db, progress=False, check_images=False)
    cam = make_classifier(tmp_path / "cam")
    result = run("index", "build", "--db", db, "--out", tmp_path / "index", "--embedder", cam,
                 "--workers", 2, "--batch-size", 2, "--device", "cpu", "--quiet")
    line = assert_refused(result, ".png")
    assert "unreadable image" in line or "not an image" in line
    assert "DataLoader" not in result.output and "worker" not in line
    assert not (tmp_path / "index").exists()


# ---------------------------------------------------------------------------------------------
# A damaged DB is one line on every open (row 10)
# ---------------------------------------------------------------------------------------------

def _flip(path: Path, offset: int, rng: random.Random, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + n):
        data[i] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))


def _colour_rows(folder: Path, n: int) -> Path:
    """A CSV catalog of n rows over 6 images, colours in turn: big enough to damage mid-file."""
    return write_csv_catalog(folder, n=n, rows=[f"item{i},img/{i % 6}.png,train,{COLORS[i % 3]}"
                                                  for i in range(n)])


@pytest.mark.slow
def test_a_db_damaged_mid_file_is_one_line_on_every_open(tmp_path):
    src = _colour_rows(tmp_path / "cat", 60)
    good = tmp_path / "good.db"
    import_catalog("csv", src, good, progress=False)
    rng = random.Random(13)
    size = good.stat().st_size
    for trial in range(6):
        db = tmp_path / f"bad{trial}.db"
        db.write_bytes(good.read_bytes())
        _flip(db, rng.randrange(size // 4, 3 * size // 4), rng)
        with pytest.raises(UserError, match=rf"bad{trial}.db: damaged catalog DB"):
            Catalog.open(db)
        with pytest.raises(UserError, match="damaged catalog DB"):
            CatalogImages(db, size=16)
        assert_refused(run("catalog", "info", "--db", db), f"bad{trial}.db", "damaged")
    # A damaged catalog DB is still one: a new import may replace it.
    import_catalog("csv", src, db, progress=False)
    assert answers(db) == answers(good)


@pytest.mark.slow
def test_index_build_over_a_db_damaged_mid_file_is_one_line(tmp_path):
    """The case that was found: 16 bytes flipped in the middle, then `index build`."""
    src = _colour_rows(tmp_path / "cat", 60)
    db = tmp_path / "mid.db"
    import_catalog("csv", src, db, progress=False)
    _flip(db, db.stat().st_size // 2, random.Random(3))
    assert_refused(run("index", "build", "--db", db, "--out", tmp_path / "i", "--quiet",
                        "--device", "cpu"), "mid.db: damaged catalog DB")
    assert not (tmp_path / "i").exists()


def test_a_db_without_a_checksum_still_fails_in_one_line(tmp_path):
    """A DB written before checksums existed: damage SQLite meets while reading is one line too."""
    src = _colour_rows(tmp_path / "cat", 300)
    good = tmp_path / "good.db"
    import_catalog("csv", src, good, progress=False)
    rng = random.Random(5)
    size, failures = good.stat().st_size, 0
    for trial in range(20):
        db = tmp_path / "old.db"
        data = bytearray(good.read_bytes())
        data[60:64] = data[68:72] = bytes(4)  # no checksum
        db.write_bytes(bytes(data))
        _flip(db, rng.randrange(size // 8, size - 16), rng)
        try:  # it may answer (the damage missed what is read): never with an sqlite3 error
            cat = Catalog.open(db)
            cat.items(), cat.counts(), cat.matching({"color": "red"}), cat.count("train")
        except UserError as exc:
            failures += 1
            assert "old.db" in str(exc) and "\n" not in str(exc)
    assert failures > 0


def test_quick_check_misses_damage_the_checksum_finds(tmp_path):
    """Why the DB carries a checksum rather than running SQLite's own quick check when opened."""
    src = write_csv_catalog(tmp_path / "cat", n=400, header="id,path,split,color,note", rows=[
        f"item{i},img/{i % 6}.png,train,{COLORS[i % 3]},note number {i} about this item"
        for i in range(400)])
    good = tmp_path / "good.db"
    import_catalog("csv", src, good, progress=False)
    rng = random.Random(7)
    data, size = good.read_bytes(), good.stat().st_size
    noticed = {"quick_check": 0, "checksum": 0}
    trials = 40
    for _ in range(trials):
        db = tmp_path / "flipped.db"
        db.write_bytes(data)
        _flip(db, rng.randrange(size // 4, 3 * size // 4), rng)
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            noticed["quick_check"] += conn.execute("PRAGMA quick_check").fetchall() != [("ok",)]
        except sqlite3.DatabaseError:
            noticed["quick_check"] += 1
        finally:
            conn.close()
        noticed["checksum"] += db_checksum.verify(db) is False
    assert noticed["checksum"] == trials
    # About half here, where index pages are a large share of the file; fewer on a large DB.
    assert noticed["quick_check"] < trials, noticed


def test_the_checksum_covers_the_whole_file(tmp_path):
    src = write_csv_catalog(tmp_path / "cat")
    db = tmp_path / "c.db"
    import_catalog("csv", src, db, progress=False)
    assert db_checksum.verify(db) is True
    data = bytearray(db.read_bytes())
    assert data[60:64] + data[68:72] != bytes(8)  # sealed
    data[-1] ^= 1
    db.write_bytes(bytes(data))
    assert db_checksum.verify(db) is False


# ---------------------------------------------------------------------------------------------
# `kill -9` of `catalog import` at seeded random moments
# ---------------------------------------------------------------------------------------------

def _import_cmd(src: Path, db: Path) -> list[str]:
    return [*BIN, "catalog", "import", "--format", "synthetic", str(src), "--db", str(db), "--quiet"]


@pytest.mark.slow
def test_kill_9_of_import_at_random_moments(tmp_path):
    """Whatever moment the import dies at, the DB is the old one or the new one, whole; the next
    import completes and removes what the killed one left."""
    old = write_catalog(tmp_path / "old", 12, seed=1, size=16, progress=False, workers=1)
    db = tmp_path / "c.db"
    import_catalog("synthetic", old, db, progress=False)
    before = answers(db)
    # The new catalog: the old one's images under many more rows, so the import has a while to die in.
    new = tmp_path / "new"
    shutil.copytree(old, new)  # a symlink to the old images would lead outside: refused
    lines = (old / "catalog.csv").read_text().splitlines()
    (new / "catalog.csv").write_text("\n".join(
        [lines[0], *(f"n{k}-{line}" for k in range(150) for line in lines[1:])]) + "\n")

    start = time.monotonic()
    subprocess.run(_import_cmd(new, tmp_path / "timing.db"), env=ENV, check=True)
    whole = time.monotonic() - start
    states = {old: before, new: answers(tmp_path / "timing.db")}
    rng = random.Random(2024)
    current = old
    for trial in range(4):
        target = new if current == old else old
        proc = subprocess.Popen(_import_cmd(target, db), env=ENV, stderr=subprocess.DEVNULL)
        if trial == 0:  # once while the new DB is being written, the other times at any moment
            deadline = time.monotonic() + 120
            while not leftovers(tmp_path, "c.db") and proc.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
        else:
            time.sleep(rng.uniform(0, whole))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert answers(db) in (states[current], states[target])  # the old DB or the new, whole
        if trial == 0:  # killed while writing: its temporary DB is there, until the next import
            assert leftovers(tmp_path, "c.db"), "the import was not killed while writing"
        subprocess.run(_import_cmd(target, db), env=ENV, check=True)
        assert answers(db) == states[target]
        assert leftovers(tmp_path, "c.db") == []
        assert not [p for p in tmp_path.iterdir() if p.name.endswith("-journal")]
        current = target
