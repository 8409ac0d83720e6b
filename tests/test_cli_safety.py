"""The command line never destroys and never shows a traceback: edit's outputs never collide,
outputs that cannot be made, devices that are not there and numbers out of range are each one
line and exit 2, before any work, and an output file is replaced only by what the command writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amgan_search.errors import UserError
from builders import assert_refused, run, tiny_world

LINUX_PROC = sys.platform.startswith("linux") and Path("/proc/self").exists()



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = tiny_world(tmp_path_factory.mktemp("safety"))
    (world["root"] / "a_file").write_text("a file where a folder would go\n")
    return {**world, "file": world["root"] / "a_file"}


@pytest.fixture(autouse=True)
def _own_home(tmp_path, monkeypatch):
    # A demo that got past its checks would render into the user's cache: never from a test.
    monkeypatch.setenv("AMGAN_SEARCH_HOME", str(tmp_path / "home"))


def _picture(path: Path, width: int, height: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


# ---------------------------------------------------------------- edit's output names (row 4)

def test_edit_inputs_sharing_a_stem_each_get_their_own_files(world, tmp_path):
    # Three sizes, so each output shows which input it came from: edits keep the input's size.
    sizes = {"good.png": (32, 32), "sub/good.png": (40, 30), "good.jpg": (24, 36)}
    inputs = [_picture(tmp_path / name, w, h, i) for i, (name, (w, h)) in enumerate(sizes.items())]
    out = tmp_path / "D"
    result = run("edit", *inputs, "--color", "red", "--model", world["gan"], "--out", out)
    assert result.exit_code == 0, result.output
    mapping = dict(line.split(" -> ") for line in result.output.splitlines())
    assert len(set(mapping.values())) == 3
    for src, (w, h) in zip(inputs, sizes.values()):
        edited = Path(mapping[str(src)])
        assert edited.parent == out and Image.open(edited).size == (w, h)
        assert Image.open(str(edited).replace("_edit.png", "_mask.png")).size == (w, h)
    assert sorted(p.name for p in out.iterdir()) == [
        "good-2_edit.png", "good-2_mask.png", "good-3_edit.png", "good-3_mask.png",
        "good_edit.png", "good_mask.png"]


def test_edit_never_writes_over_one_of_its_inputs(world, tmp_path):
    out = tmp_path / "D"
    photo = _picture(out / "g.png", 32, 32, 0)
    earlier = _picture(out / "g_edit.png", 20, 20, 1)  # also an input: must survive
    before = earlier.read_bytes()
    result = run("edit", photo, earlier, "--color", "red", "--model", world["gan"], "--out", out)
    assert result.exit_code == 0, result.output
    assert earlier.read_bytes() == before
    assert f"{photo} -> {out / 'g-2_edit.png'}" in result.output


def test_edit_replaces_its_own_pngs_and_refuses_any_other_file(world, tmp_path):
    out = tmp_path / "D"
    photo = _picture(tmp_path / "x.png", 32, 32, 0)
    args = ("edit", photo, "--color", "red", "--model", world["gan"], "--out", out)
    assert run(*args).exit_code == 0
    assert run(*args).exit_code == 0  # a rerun replaces its PNGs
    (out / "x_mask.png").write_text("my notes\n")
    assert_refused(run(*args), "x_mask.png", "not a PNG")
    assert (out / "x_mask.png").read_text() == "my notes\n"


def test_query_out_replaces_only_pngs(world, tmp_path):
    out = tmp_path / "Q"
    out.mkdir()
    (out / "edited.png").write_text("mine\n")
    (out / "notes.txt").write_text("notes\n")
    args = ("query", world["image"], "--index", world["index"], "--model", world["gan"],
            "--color", "red", "--device", "cpu", "--out", out)
    assert_refused(run(*args), "edited.png", "not a PNG")
    assert (out / "edited.png").read_text() == "mine\n"
    (out / "edited.png").unlink()
    assert run(*args).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["contact.png", "edited.png", "mask.png",
                                                      "notes.txt"]


def test_query_save_never_writes_over_the_query_photo(world, tmp_path):
    from amgan_search.images import load_image
    from amgan_search.index.retrieve import Retriever

    photo = _picture(tmp_path / "edited.png", 32, 32, 0)  # the user's photo, named like an output
    before = photo.read_bytes()
    retriever = Retriever(world["index"], model=world["gan"], device="cpu")
    result = retriever.query(load_image(photo), {"color": "red"}, k=2)
    with pytest.raises(UserError, match="is an input"):
        retriever.save(result, tmp_path, inputs=[photo])
    assert photo.read_bytes() == before


def test_an_output_name_that_is_a_link_is_refused_and_its_target_kept(world, tmp_path):
    # A link is never a file the tool wrote: neither it nor what it points to is replaced.
    target = _picture(tmp_path / "elsewhere" / "mine.png", 32, 32, 0)
    before = target.read_bytes()
    out = tmp_path / "D"
    out.mkdir()
    (out / "4_edit.png").symlink_to(target)
    assert_refused(run("edit", world["image"], "--color", "red", "--model", world["gan"],
                       "--out", out), "4_edit.png", "is a link")
    assert target.read_bytes() == before and (out / "4_edit.png").is_symlink()


# ---------------------------------------------------------------- output paths (row 7)

def _output_cases(w, out):
    """Each command with an output path `out`; models that do not exist, so an output check
    that came after loading (or after the work) would name the model, not `out`."""
    missing = w["root"] / "no-such-model"
    return {
        "edit": ("edit", w["image"], "--color", "red", "--model", missing, "--out", out),
        "query": ("query", w["image"], "--index", w["index"], "--model", missing, "--color", "red",
                  "--device", "cpu", "--out", out),
        "benchmark": ("benchmark", "--db", w["db"], "--index", w["index"], "--out", out,
                      "--methods", "real", "--eval-classifier", "none", "--device", "cpu"),
        "demo": ("demo", "--out", out, "--device", "cpu"),
        "evaluate-edits --out": ("evaluate-edits", "--model", missing, "--out", f"{out}.md"),
        "evaluate-edits --grid": ("evaluate-edits", "--model", missing, "--grid", f"{out}.png"),
        "evaluate-classifier --cam-sheet": ("evaluate-classifier", "--classifier", missing,
                                            "--cam-sheet", f"{out}.png"),
    }


@pytest.mark.parametrize("command", ["edit", "query", "benchmark", "demo", "evaluate-edits --out",
                                     "evaluate-edits --grid", "evaluate-classifier --cam-sheet"])
def test_an_output_under_a_file_is_one_line_before_any_work(world, command):
    args = _output_cases(world, world["file"] / "sub")[command]
    assert_refused(run(*args), "a_file", "is a file")


@pytest.mark.parametrize("command", ["edit", "query", "benchmark", "demo", "evaluate-edits --out"])
def test_an_empty_output_path_is_refused_not_taken_for_the_current_folder(world, command):
    args = [a if a not in ("", ".md") else "" for a in _output_cases(world, "")[command]]
    assert_refused(run(*args), "empty path")


@pytest.mark.skipif(not LINUX_PROC, reason="/proc is Linux's")
@pytest.mark.parametrize("command", ["edit", "query", "benchmark", "demo",
                                     "evaluate-edits --out", "evaluate-classifier --cam-sheet"])
def test_an_output_the_system_refuses_is_one_line(world, command):
    args = _output_cases(world, Path("/proc/amgan-search-x"))[command]
    assert_refused(run(*args), "/proc/amgan-search-x", "cannot be written")
    assert not Path("/proc/amgan-search-x").exists()


def test_edit_out_refused_after_the_names_are_checked_is_still_one_line(world, tmp_path):
    # The probe at parse time passes (a folder that can be made); the edit's own names decide.
    out = tmp_path / "D"
    (out / "4_edit.png").mkdir(parents=True)
    assert_refused(run("edit", world["image"], "--color", "red", "--model", world["gan"],
                       "--out", out), "4_edit.png", "is a folder")


def test_output_files_are_replaced_only_by_what_the_command_writes(world, tmp_path):
    readme, picture = tmp_path / "README.md", tmp_path / "notes.png"
    readme.write_text("# mine\n")
    picture.write_text("not a picture\n")
    base = ("evaluate-edits", "--model", world["gan"], "--eval-classifier", world["cam"], "--n", 2,
            "--size", 32, "--device", "cpu")
    assert_refused(run(*base, "--out", readme), "README.md")
    assert_refused(run(*base, "--grid", picture), "notes.png", "not a PNG")
    assert_refused(run("evaluate-classifier", "--classifier", world["cam"], "--cam-scenes", 0,
                       "--cam-sheet", picture), "notes.png", "not a PNG")
    assert readme.read_text() == "# mine\n" and picture.read_text() == "not a picture\n"
    assert_refused(run(*base, "--out", tmp_path / "same", "--grid", tmp_path / "same"), "both")
    table = tmp_path / "edits.md"
    for _ in range(2):  # its own table is replaced on a rerun
        result = run(*base, "--out", table)
        assert result.exit_code == 0, result.output
    assert table.read_text().startswith("Edit quality of `")


def test_benchmark_and_demo_refuse_a_folder_of_other_files(world, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("notes\n")
    assert_refused(run("benchmark", "--db", world["db"], "--index", world["index"], "--out", folder,
                       "--methods", "real", "--eval-classifier", "none", "--device", "cpu"),
                   "notes.txt")
    assert_refused(run("demo", "--out", folder, "--device", "cpu"), "notes.txt")
    page = tmp_path / "page"
    page.mkdir()
    (page / "report.html").write_text("<p>my own report</p>\n")  # one of the demo's names
    assert_refused(run("demo", "--out", page, "--device", "cpu"), "not written by the demo")
    assert (page / "report.html").read_text() == "<p>my own report</p>\n"
    assert not (tmp_path / "home").exists()  # refused before rendering anything


# ---------------------------------------------------------------- devices (row 13)

def _device_cases(w, device, out):
    return {
        "edit": ("edit", w["image"], "--color", "red", "--model", w["gan"], "--out", out,
                 "--device", device),
        "query": ("query", w["image"], "--index", w["index"], "--no-edit", "--device", device),
        "evaluate-edits": ("evaluate-edits", "--model", w["gan"], "--eval-classifier", w["cam"],
                           "--n", 2, "--size", 32, "--device", device),
        "benchmark": ("benchmark", "--db", w["db"], "--index", w["index"], "--out", out,
                      "--methods", "real", "--eval-classifier", "none", "--device", device),
        "demo": ("demo", "--out", out, "--device", device),
        "index build": ("index", "build", "--db", w["db"], "--out", out, "--embedder", w["cam"],
                        "--device", device),
        "index add": ("index", "add", "--index", w["index"], "--db", w["db"], "--device", device),
    }


def _missing_gpu() -> str:
    import torch

    return f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: never there


@pytest.mark.parametrize("device", ["nonsense", "CPU", "cuda:-1", "missing-gpu", "meta", "mps"])
@pytest.mark.parametrize("command", ["edit", "query", "evaluate-edits", "benchmark", "demo",
                                     "index build", "index add"])
def test_a_device_that_is_not_there_is_one_line_before_any_work(world, tmp_path, command, device):
    import torch

    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    device = _missing_gpu() if device == "missing-gpu" else device
    out = tmp_path / "out"
    assert_refused(run(*_device_cases(world, device, out)[command]), "device", device)
    assert not out.exists() and not (tmp_path / "home").exists()


@pytest.mark.skipif("__import__('torch').cuda.is_available()", reason="this machine has a GPU")
def test_cuda_on_a_machine_without_a_gpu_is_one_line(world, tmp_path):
    for args in _device_cases(world, "cuda", tmp_path / "out").values():
        assert_refused(run(*args), "'cuda'", "0 CUDA device")


def test_auto_and_cpu_are_accepted(world, tmp_path):
    for device in ("auto", "cpu"):
        result = run("query", world["image"], "--index", world["index"], "--no-edit", "--json",
                     "-k", 1, "--device", device)
        assert result.exit_code == 0, result.output


# ---------------------------------------------------------------- numbers (row 14)

NUMBERS = [
    ("classify", "--batch-size", "0"),
    ("classify", "--batch-size", "-3"),  # was: exit 0 and no output at all
    ("evaluate-classifier", "--seed", "-1"),
    ("evaluate-classifier", "--cam-scenes", "-1"),
    ("evaluate-edits", "--n", "0"),
    ("evaluate-edits", "--n", "-5"),
    ("evaluate-edits", "--size", "8"),
    ("evaluate-edits", "--size", "100000"),
    ("evaluate-edits", "--seed", "-1"),
    ("benchmark", "--limit", "0"),
    ("benchmark", "--batch-size", "0"),
    ("benchmark", "--workers", "-1"),
    ("benchmark", "--workers", "100000"),
    ("benchmark", "--k", "0"),
    ("benchmark", "--k", "1,abc"),
    ("benchmark", "--k", "100000000000000000000"),  # was: a traceback, and a poisoned run.json
    ("demo", "--n", "10"),
    ("demo", "--n", "100000000"),
    ("demo", "-k", "0"),
    ("demo", "--workers", "100000"),
    ("query", "-k", "0"),
    ("query", "-k", "100000"),
]


def _number_args(w, out, command, flag, value):
    base = {
        "classify": ("classify", w["image"], "--classifier", w["cam"]),
        "evaluate-classifier": ("evaluate-classifier", "--classifier", w["cam"], "--cam-scenes", 2),
        "evaluate-edits": ("evaluate-edits", "--model", w["gan"], "--eval-classifier", w["cam"],
                           "--n", 2, "--size", 32, "--device", "cpu"),
        "benchmark": ("benchmark", "--db", w["db"], "--index", w["index"], "--out", out,
                      "--methods", "real", "--eval-classifier", "none", "--device", "cpu",
                      "--workers", 0, "--quiet"),
        "demo": ("demo", "--out", out, "--device", "cpu"),
        "query": ("query", w["image"], "--index", w["index"], "--no-edit", "--device", "cpu"),
    }[command]
    return (*base, flag, value)


@pytest.mark.parametrize("command,flag,value", NUMBERS)
def test_numbers_out_of_range_are_one_line(world, tmp_path, command, flag, value):
    out = tmp_path / "out"
    assert_refused(run(*_number_args(world, out, command, flag, value)), flag.lstrip("-"))
    assert not out.exists() and not (tmp_path / "home").exists()


def test_evaluate_edits_refuses_scenes_that_cannot_fit_in_memory(world):
    assert_refused(run("evaluate-edits", "--model", world["gan"], "--n", 1_000_000, "--size", 1024),
                   "GiB", "lower --n or --size")


def test_evaluate_classifier_refuses_a_split_with_no_items(world):
    assert_refused(run("evaluate-classifier", "--classifier", world["cam"], "--cam-scenes", 0,
                       "--db", world["db"], "--split", "nosuch"), "nosuch", "train, test")
    result = run("evaluate-classifier", "--classifier", world["cam"], "--cam-scenes", 0,
                 "--db", world["db"], "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.output)["accuracy"]
    assert accuracy["n"] == 6
    for name, share in accuracy["accuracy"].items():
        correct, labelled = accuracy["counts"][name]
        assert share == correct / labelled
        low, high = accuracy["interval"][name]
        assert low <= share <= high
        confusion = np.array(accuracy["confusion"][name])
        assert (np.trace(confusion), confusion.sum()) == (correct, labelled)
