"""The bad-input suite: odd-but-valid images work; everything else is one line, exit 2, no damage.

Every case goes through the real command line in a subprocess-free CliRunner (so a traceback would
show in the output) and checks the three promises: exit status 2, a single `error:` line, and that
what existed before (an index, a catalog DB, a checkpoint) still loads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from builders import assert_refused, make_catalog, run

BIN = [sys.executable, "-m", "amgan_search.cli.main"]




def _odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    files = {}
    rgba = np.dstack([rgb, np.full((40, 30), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(files.setdefault("alpha", folder / "alpha.png"))
    Image.fromarray(rgb).convert("P").save(files.setdefault("palette", folder / "palette.png"))
    Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)).save(files.setdefault("16bit", folder / "16bit.png"))
    Image.fromarray(rgb[..., 0], "L").save(files.setdefault("gray", folder / "gray.png"))
    Image.fromarray(rgb).convert("CMYK").save(files.setdefault("cmyk", folder / "cmyk.jpg"))
    exif_img = Image.fromarray(rgb)
    exif = exif_img.getexif()
    exif[0x0112] = 8
    exif_img.save(files.setdefault("exif", folder / "exif.jpg"), exif=exif)
    return files


@pytest.mark.slow
def test_odd_but_valid_images_are_classified_and_searched(world, tmp_path):
    files = _odd_images(tmp_path)
    result = run("classify", *files.values(), "--classifier", world["cam"], "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [Path(o["path"]).name for o in out] == [p.name for p in files.values()]
    for path in files.values():
        result = run("query", path, "--index", world["index"], "--no-edit", "--json", "-k", 2,
                     "--device", "cpu")
        assert result.exit_code == 0, (path, result.output)


def test_an_exif_rotated_photo_is_edited_in_its_displayed_orientation(world, tmp_path):
    files = _odd_images(tmp_path)
    result = run("edit", files["exif"], "--color", "blue", "--model", world["gan"],
                 "--out", tmp_path / "edits")
    assert result.exit_code == 0, result.output
    edited = Image.open(tmp_path / "edits" / "exif_edit.png")
    assert edited.size == (40, 30)  # 30x40 stored, rotated 90 degrees by its EXIF tag


def _bad_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    files = {"zero": folder / "zero.png", "text": folder / "notes.jpg",
             "truncated": folder / "truncated.png", "bomb": folder / "bomb.png",
             "directory": folder / "a-folder.png"}
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not a photo\n")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        files["truncated"])
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:300])
    before, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        Image.new("1", (50_000, 50_000)).save(files["bomb"])
    finally:
        Image.MAX_IMAGE_PIXELS = before
    files["directory"].mkdir()
    return files


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zero", "text", "truncated", "bomb", "directory"])
def test_broken_images_are_refused_by_every_command(world, tmp_path, kind):
    path = _bad_images(tmp_path)[kind]
    assert_refused(run("classify", path, "--classifier", world["cam"]), path.name)
    assert_refused(run("query", path, "--index", world["index"], "--no-edit", "--device", "cpu"),
                   path.name)
    assert_refused(run("edit", path, "--color", "red", "--model", world["gan"],
                       "--out", tmp_path / "o"), path.name)


def test_unknown_attribute_names_and_values(world):
    assert_refused(run("query", world["image"], "--index", world["index"], "--color", "teal"),
                   "teal", "valid:")
    assert_refused(run("query", world["image"], "--index", world["index"], "--set", "collar=round"),
                   "collar")
    assert_refused(run("edit", world["image"], "--color", "teal", "--model", world["gan"],
                       "--out", world["root"] / "o"), "teal")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
@pytest.mark.parametrize("name", ["index.faiss", "index.json", "items.db"])
def test_an_index_folder_with_a_missing_or_corrupted_file(world, tmp_path, damage, name):
    import shutil

    from amgan_search.index.index_dir import current

    broken = tmp_path / "index"
    shutil.copytree(world["index"], broken)
    target = current(broken).folder / name  # the current version's file, where readers look
    assert target.exists(), sorted(p.name for p in target.parent.iterdir())
    if damage == "missing":
        target.unlink()
    else:
        target.write_bytes(b"\x00garbage\x00" * 10)
    assert_refused(run("query", world["image"], "--index", broken, "--no-edit", "--device", "cpu"),
                   name if name != "items.db" or damage == "missing" else "")


def _csv_catalog(folder: Path, rows: list[str]) -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(folder / "img" / "a.png")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("rows,needle", [
    (["id,color", "a,red"], "path"),
    (["id,path,color", "a,img/a.png,red", "a,img/a.png,blue"], "duplicate"),
    (["id,path,color", "a,../outside.png,red"], "outside.png"),
    (["id,path,color", "a,/etc/passwd,red"], "/etc/passwd"),
])
def test_bad_catalog_csvs_leave_the_existing_db_intact(world, tmp_path, rows, needle):
    from amgan_search.catalog import Catalog

    db = tmp_path / "catalog.db"
    db.write_bytes(Path(world["db"]).read_bytes())
    before = Catalog.open(db).count()
    folder = _csv_catalog(tmp_path / "csv", rows)
    assert_refused(run("catalog", "import", "--format", "csv", folder, "--db", db), needle)
    assert Catalog.open(db).count() == before


def _kill_when(cmd: list[str], ready, timeout: float = 120) -> None:
    """Start cmd, SIGKILL it as soon as ready() is true (or it ends)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline and not ready():
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_index_build_killed_part_way_keeps_the_old_index(world, tmp_path):
    import shutil

    from amgan_search.index.search import Searcher

    index = tmp_path / "index"
    shutil.copytree(world["index"], index)
    db = make_catalog(tmp_path / "big", n=150)
    parent = index.parent
    started = lambda: any(p.name.startswith(".index.") for p in parent.iterdir())  # noqa: E731
    _kill_when([*BIN, "index", "build", "--db", str(db), "--out", str(index), "--embedder",
                str(world["cam"]), "--workers", "0", "--batch-size", "4", "--device", "cpu"],
               started)
    # Killed at whatever point it reached: the folder holds the old index or the finished new
    # one (a fast machine may finish first), whole either way, never a mix.
    searcher = Searcher(index, use_gpu=False)
    assert searcher.count in (24, 150)
    result = run("query", world["image"], "--index", index, "--no-edit", "--json", "-k", 1,
                 "--device", "cpu")
    assert result.exit_code == 0 and json.loads(result.output)["results"][0]["score"] > 0.99


def test_index_build_failing_mid_write_keeps_the_old_index(world, tmp_path, monkeypatch):
    import shutil

    from amgan_search.index import build, index_dir, search

    index = tmp_path / "index"
    shutil.copytree(world["index"], index)
    db = make_catalog(tmp_path / "big", n=30)

    def dies_after_the_faiss_file(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill would, after index.faiss and before index.json

    monkeypatch.setattr(index_dir, "write_json", dies_after_the_faiss_file)
    with pytest.raises(KeyboardInterrupt):
        build.build_index(db, index, _embedder(world["cam"]), workers=0, progress=False,
                          force=True)
    monkeypatch.undo()
    assert search.Searcher(index, use_gpu=False).count == 24
    for folder in (tmp_path, index, index / "versions"):  # no temporary leftovers anywhere
        assert [p.name for p in folder.iterdir()
                if p.name.startswith(".") and p.name.endswith(".tmp")] == []


def _embedder(path):
    from amgan_search.index.embed import load_embedder

    return load_embedder(path, device="cpu")


@pytest.mark.slow
def test_classifier_training_killed_part_way_resumes(world, tmp_path):
    from amgan_search.checkpoint import latest_checkpoint, load_checkpoint

    out = tmp_path / "cls"
    cmd = [*BIN, "train", "classifier", "--db", str(world["db"]), "--out", str(out), "--arch",
           "resnet18", "--size", "32", "--epochs", "40", "--batch-size", "4", "--workers", "0",
           "--checkpoint-every", "2", "--quiet", "--device", "cpu"]
    _kill_when(cmd, lambda: latest_checkpoint(out) is not None)
    saved = latest_checkpoint(out)
    assert saved is not None
    _, state = load_checkpoint(saved)  # the checkpoint a killed run left loads
    resumed = subprocess.run([*cmd, "--resume", "--max-steps", str(state["step"] + 2)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _, after = load_checkpoint(latest_checkpoint(out))
    assert after["step"] == state["step"] + 2
