"""Models and training runs: never destroyed, never silently wrong.

Exports never write over the run they read, a run is continued only when asked and by one training
at a time, every weights file is checked against its recorded sha256 (so damage is a one-line error,
never an all-black edit or a wrong class), config.json values and numeric flags are checked field by
field, and a training killed at any moment leaves its last checkpoint loadable and resumable.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import assert_refused, make_catalog, make_classifier, run
from amgan_search import checkpoint as ckpt
from amgan_search import registry
from amgan_search.errors import UserError
from amgan_search.integrity import SUMS
from amgan_search.io import read_json, write_json, writer_lock
from amgan_search.outputs import MARKER, kind_of

TINY = ["--size", "32", "--batch-size", "4", "--n-critic", "2", "--g-conv-dim", "8",
        "--g-repeat-num", "1", "--d-conv-dim", "8", "--d-repeat-num", "3", "--sample-every", "1000",
        "--log-every", "1", "--workers", "0", "--threads", "1", "--device", "cpu", "--no-bf16"]
# io's temporary names: `.NAME.PID.XXXX.tmp` and `.NAME.PID.old`
LEFTOVER = re.compile(r"^\..+\.\d+\.(?:.*\.tmp|old)$")





def train_args(world, out, *extra):
    return ["train", "amgan", "--db", world["db"], "--classifier", world["cam"], "--out", out,
            *TINY, *extra]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny catalog, a tiny CNN+CAM classifier, an AMGAN run planned for 6 iterations stopped
    at 4 (so it can resume), and its export."""
    root = tmp_path_factory.mktemp("safety")
    db = make_catalog(root)
    cam = make_classifier(root / "cam")
    world = {"root": root, "db": db, "cam": cam, "run": root / "run", "gan": root / "gan"}
    torch.set_num_threads(1)
    result = run(*train_args(world, world["run"], "--iters", "6", "--stop-at", "4",
                             "--ckpt-every", "2"))
    assert result.exit_code == 0, result.output
    result = run("train", "export", world["run"], "--out", world["gan"])
    assert result.exit_code == 0, result.output
    return world


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def damage(path: Path, n: int = 16, seed: int = 0, at: float = 0.5) -> None:
    """Flip `n` bytes of a file from fraction `at` of its length on (past the safetensors header)."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    for i in range(start, start + n):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def copy_run(world, tmp_path) -> Path:
    return Path(shutil.copytree(world["run"], tmp_path / "run"))


# -- row 2: `train export` never writes over what it did not make ------------------------------

def test_export_into_the_run_or_its_parent_is_refused_and_the_run_still_resumes(world, tmp_path):
    run_dir = copy_run(world, tmp_path)
    before = files_of(run_dir)
    assert_refused(run("train", "export", run_dir, "--out", run_dir), "holds the input")
    assert_refused(run("train", "export", run_dir, "--out", tmp_path), "holds the input")
    assert files_of(run_dir) == before
    resumed = run(*train_args(world, run_dir, "--iters", "6", "--ckpt-every", "2", "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000006"


def test_export_replaces_a_model_folder_only_with_force_and_keeps_its_card(world, tmp_path):
    out = tmp_path / "m"
    assert run("train", "export", world["run"], "--out", out).exit_code == 0
    assert kind_of(out) == "model" and (out / MARKER).is_file() and (out / SUMS).is_file()
    (out / "MODEL_CARD.md").write_text("how it was made\n")
    assert_refused(run("train", "export", world["run"], "--out", out), "--force")
    replaced = run("train", "export", world["run"], "--out", out, "--step", "2", "--force")
    assert replaced.exit_code == 0, replaced.output
    assert read_json(out / "config.json")["iterations"] == 2
    assert (out / "MODEL_CARD.md").read_text() == "how it was made\n"
    registry.load_model(out, "editor", device="cpu")


def test_export_into_a_folder_of_other_files_is_refused(world, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("x")
    assert_refused(run("train", "export", world["run"], "--out", tmp_path / "p"),
                    "files this tool did not write")
    assert (tmp_path / "p" / "notes.txt").read_text() == "x"
    assert_refused(run("train", "export", world["run"], "--out", world["root"] / "run" / ".."),
                    "holds the input")


# -- row 5: an existing run is continued only when asked, by one training at a time --------------

def test_training_into_an_existing_run_without_resume_is_refused_and_changes_nothing(world,
                                                                                      tmp_path):
    assert kind_of(world["run"]) == "run" and (world["run"] / MARKER).is_file()
    run_dir = copy_run(world, tmp_path)
    before = files_of(run_dir)
    result = run(*train_args(world, run_dir, "--iters", "2", "--ckpt-every", "1"))
    assert_refused(result, str(run_dir), "holds a training run already", "--resume")
    classifier = run("train", "classifier", "--db", world["db"], "--out", run_dir, "--size", "32",
                     "--device", "cpu", "--workers", "0", "--quiet")
    assert_refused(classifier, "holds a training run already", "--resume")
    assert files_of(run_dir) == before


def test_a_fresh_run_takes_only_a_new_or_empty_folder(world, tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "notes.txt").write_text("x")
    assert_refused(run(*train_args(world, tmp_path / "p", "--iters", "1")),
                    "files this tool did not write")
    assert_refused(run(*train_args(world, world["gan"], "--iters", "1")), "holds a model")
    assert_refused(run(*train_args(world, world["root"], "--iters", "1")), "holds the input")
    monkeypatch.chdir(tmp_path / "p")
    assert_refused(run(*train_args(world, ".", "--iters", "1")), "current folder")
    assert os.listdir(tmp_path / "p") == ["notes.txt"]


def test_a_run_killed_before_its_first_checkpoint_starts_again(world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "run"}))
    (out / "log.jsonl").write_text(json.dumps({"iter": 1, "since": 0}) + "\n")
    result = run(*train_args(world, out, "--iters", "2", "--ckpt-every", "2"))
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["iter"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_second_training_of_one_run_fails_at_once(world, tmp_path):
    run_dir = copy_run(world, tmp_path).resolve()
    with writer_lock(run_dir):  # the first training, still writing
        started = time.monotonic()
        result = run(*train_args(world, run_dir, "--iters", "6", "--ckpt-every", "2", "--resume"))
        assert_refused(result, "another command is writing it")
        assert time.monotonic() - started < 30  # no waiting for the first to finish
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000004"


def test_pruning_never_removes_the_newest_checkpoint(tmp_path):
    newest = 0
    for step in (1000, 2000, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {}, keep=2)
        newest = max(newest, step)
        latest = ckpt.latest_checkpoint(tmp_path)
        assert latest.name == f"step-{newest:07d}"  # the newest, whatever came last
        assert ckpt.load_checkpoint(latest)[1]["step"] == newest
    # step 2 was pruned by step 4 (keep 2); the later steps are left alone
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert names == ["step-0000003", "step-0000004", "step-0001000", "step-0002000"]


# -- row 6: damaged weights are a one-line error naming the file ---------------------------------

def _image(world) -> Path:
    return world["root"] / "catalog" / "img" / "4.png"


def test_random_bytes_over_the_generator_are_refused_not_an_all_black_edit(world, tmp_path):
    gan = Path(shutil.copytree(world["gan"], tmp_path / "gan"))
    weights = gan / ckpt.WEIGHTS
    data = bytearray(weights.read_bytes())
    start = len(data) // 3
    data[start:start + len(data) // 3] = np.random.default_rng(0).bytes(len(data) // 3)
    weights.write_bytes(bytes(data))
    result = run("edit", _image(world), "--color", "red", "--model", gan, "--out", tmp_path / "o")
    assert_refused(result, str(weights), "damaged")
    assert not (tmp_path / "o").exists()


def test_sixteen_flipped_bytes_in_a_classifier_are_refused_not_a_wrong_class(world, tmp_path):
    cam = Path(shutil.copytree(world["cam"], tmp_path / "cam"))
    damage(cam / ckpt.WEIGHTS)
    assert_refused(run("classify", _image(world), "--classifier", cam),
                    str(cam / ckpt.WEIGHTS), "damaged")


def test_edit_notices_a_damaged_classifier_through_the_sha256_its_config_records(world, tmp_path):
    cam = Path(shutil.copytree(world["cam"], tmp_path / "cam"))
    gan = Path(shutil.copytree(world["gan"], tmp_path / "gan"))
    config = read_json(gan / "config.json")
    config["classifier"]["path"] = str(cam)
    write_json(gan / "config.json", config)
    ckpt.record_sums(gan, ckpt.MODEL_FILES)
    assert registry.load_model(gan, "editor", device="cpu").classifier is not None
    damage(cam / ckpt.WEIGHTS)
    (cam / SUMS).unlink()  # a classifier folder without digests of its own: the record catches it
    result = run("edit", _image(world), "--color", "red", "--model", gan, "--out", tmp_path / "o")
    assert_refused(result, str(gan / "config.json"), str(cam / ckpt.WEIGHTS))
    # another classifier in its place is refused the same way
    make_classifier(cam, seed=3)
    with pytest.raises(UserError, match="another classifier"):
        registry.load_model(gan, "editor", device="cpu")


def test_damaged_checkpoints_are_refused_and_resume_says_which_file(world, tmp_path):
    run_dir = copy_run(world, tmp_path)
    latest = ckpt.latest_checkpoint(run_dir)
    damage(latest / ckpt.STATE, at=0.6)
    with pytest.raises(UserError, match="state.pt: damaged"):
        ckpt.load_checkpoint(latest)
    result = run(*train_args(world, run_dir, "--iters", "6", "--ckpt-every", "2", "--resume"))
    assert_refused(result, str(latest / ckpt.STATE), "damaged")


def test_folders_written_before_digests_still_load_and_the_checksum_command_records_them(
        world, tmp_path):
    gan = Path(shutil.copytree(world["gan"], tmp_path / "gan"))
    (gan / SUMS).unlink()
    (gan / MARKER).unlink()
    registry.load_model(gan, "editor", device="cpu")  # unchecked, as before
    assert_refused(run("model", "checksum", gan, "--check"), "SHA256SUMS: missing")
    result = run("model", "checksum", gan)
    assert result.exit_code == 0 and "SHA256SUMS written" in result.output, result.output
    assert kind_of(gan) == "model" and (gan / MARKER).is_file()
    assert run("model", "checksum", gan, "--check").output.strip().endswith("verified")
    damage(gan / ckpt.WEIGHTS)
    assert_refused(run("model", "checksum", gan, "--check"), "model.safetensors", "damaged")
    assert_refused(run("model", "checksum", gan), "damaged")  # never records damage as good


def test_the_checksum_command_records_nothing_for_weights_that_do_not_load(world, tmp_path):
    cam = Path(shutil.copytree(world["cam"], tmp_path / "cam"))
    (cam / SUMS).unlink()
    (cam / ckpt.WEIGHTS).write_bytes((cam / ckpt.WEIGHTS).read_bytes()[:1000])
    assert_refused(run("model", "checksum", cam), "corrupt")
    assert not (cam / SUMS).exists()


@pytest.mark.parametrize("name", sorted(registry.SHIPPED))
def test_every_shipped_model_is_recorded_and_verifies(name):
    folder = registry.SHIPPED_DIR / name
    assert (folder / SUMS).is_file(), f"{folder}: run amgan-search model checksum {folder}"
    assert registry.checksum_model(folder, check=True) == "verified"
    assert "model checksum" in (folder / "MODEL_CARD.md").read_text()


def test_the_shipped_amgan_records_the_shipped_classifier_cam():
    config = read_json(registry.SHIPPED_DIR / "amgan" / "config.json")
    assert config["classifier"]["sha256"] == ckpt.weights_sha256(
        registry.SHIPPED_DIR / "classifier-cam")


# -- row 12: model config.json values checked field by field ---------------------------------------

AMGAN_BAD = [("size", "abc"), ("size", -5), ("size", [64]), ("size", True), ("size", 30),
             ("conv_dim", 0), ("repeat_num", 1.5), ("c_dim", 99), ("attention", "spatial"),
             ("upsample", "bicubic"), ("att_conv_dim", "8"), ("schema", "abc"),
             ("schema", {"color": []}), ("schema", {"color": ["red", "red"]}),
             ("classifier", "cam"), ("classifier", {"path": 3}), ("kind", "amgan2")]
CLASSIFIER_BAD = [("size", "abc"), ("size", -5), ("size", [64]), ("arch", "resnet9"),
                  ("output_stride", 7), ("output_stride", "8"), ("role", None), ("schema", None)]


def _with(folder: Path, tmp_path: Path, key: str, value) -> Path:
    out = Path(shutil.copytree(folder, tmp_path / "m"))
    config = read_json(out / "config.json")
    config[key] = value
    write_json(out / "config.json", config)
    ckpt.record_sums(out, ckpt.MODEL_FILES)  # a consistent folder: only the value is wrong
    return out


@pytest.mark.parametrize("key,value", AMGAN_BAD)
def test_bad_amgan_config_values_are_one_line_naming_file_and_field(world, tmp_path, key, value):
    gan = _with(world["gan"], tmp_path, key, value)
    with pytest.raises(UserError) as err:
        registry.load_model(gan, "editor", device="cpu")
    message = str(err.value)
    assert "\n" not in message
    if key == "kind":
        assert f"{gan}: holds a 'amgan2' model, not a 'amgan' model" in message
    else:
        assert str(gan / "config.json") in message and key in message


@pytest.mark.parametrize("key,value", CLASSIFIER_BAD)
def test_bad_classifier_config_values_are_one_line_naming_file_and_field(world, tmp_path, key,
                                                                         value):
    cam = _with(world["cam"], tmp_path, key, value)
    assert_refused(run("classify", _image(world), "--classifier", cam),
                    str(cam / "config.json"), key)


def test_edit_with_a_bad_model_config_is_one_line(world, tmp_path):
    gan = _with(world["gan"], tmp_path, "size", -5)
    result = run("edit", _image(world), "--color", "red", "--model", gan, "--out", tmp_path / "o")
    assert_refused(result, str(gan / "config.json"), "'size'")


# -- row 14: numeric flags, at the command line and in the configurations ------------------------

AMGAN_FLAGS = [("--lr", "-1"), ("--lr", "0"), ("--lr", "nan"), ("--iters", "0"),
               ("--batch-size", "0"), ("--size", "8"), ("--size", "100000"), ("--seed", "-1"),
               ("--lambda-p", "-1"), ("--n-critic", "0"), ("--d-repeat-num", "2"),
               ("--threads", "0"), ("--workers", "-1"), ("--ckpt-every", "0"),
               ("--stop-at", "0"), ("--g-conv-dim", "0")]


@pytest.mark.parametrize("flag,value", AMGAN_FLAGS)
def test_out_of_range_training_flags_are_one_line(world, tmp_path, flag, value):
    result = run("train", "amgan", "--db", world["db"], "--out", tmp_path / "r", flag, value)
    assert_refused(result, flag.lstrip("-").replace("-", "_") if value == "nan" else flag)
    assert not (tmp_path / "r").exists()


def test_an_unknown_augmentation_policy_is_one_line(world, tmp_path):
    result = run("train", "amgan", "--db", world["db"], "--out", tmp_path / "r",
                 "--diff-augment", "translation,color")
    assert_refused(result, "diff_augment policy 'color'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value", [("--size", "100000"), ("--epochs", "0"), ("--lr", "-1"),
                                        ("--seed", "-1"), ("--val-fraction", "1"),
                                        ("--batch-size", "0"), ("--weight-decay", "-0.1")])
def test_out_of_range_classifier_flags_are_one_line(world, tmp_path, flag, value):
    result = run("train", "classifier", "--db", world["db"], "--out", tmp_path / "r", flag, value)
    assert_refused(result, flag)


def test_export_step_must_not_be_negative(world, tmp_path):
    assert_refused(run("train", "export", world["run"], "--out", tmp_path / "m", "--step", "-1"),
                    "--step")


@pytest.mark.parametrize("field,value", [("lr", -1), ("lr", float("nan")), ("size", "abc"),
                                         ("seed", -1), ("lambda_p", -1.0), ("beta1", 1.0),
                                         ("batch_size", 2.5), ("threads", 0), ("iters", True)])
def test_library_callers_get_the_same_checks(field, value):
    from amgan_search.train.classifier import ClassifierConfig
    from amgan_search.train.config import AmganConfig

    with pytest.raises(UserError, match=field):
        AmganConfig(**{field: value})
    if field in ("lr", "size", "seed", "batch_size"):
        with pytest.raises(UserError, match=field):
            ClassifierConfig(**{field: value}, device="cpu").resolved()


def test_the_command_line_ranges_are_the_configurations():
    from amgan_search.cli import train as cli_train
    from amgan_search.train.checks import SEED_MAX, TRAIN_SIZES

    assert (cli_train.SIZE.min, cli_train.SIZE.max) == TRAIN_SIZES
    assert (cli_train.SEED.min, cli_train.SEED.max) == (0, SEED_MAX)


# -- devices: one line ------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["nonsense", "cuda:7"])
def test_unknown_or_missing_devices_are_one_line(world, tmp_path, device):
    if device.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    # the last --device given is the one click takes
    assert_refused(run(*train_args(world, tmp_path / "r", "--iters", "1", "--device", device)),
                    device)
    assert_refused(run("train", "classifier", "--db", world["db"], "--out", tmp_path / "c",
                        "--device", device), device)
    with pytest.raises(UserError, match=re.escape(repr(device))):
        registry.load_model(world["cam"], "classifier", device=device)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


# -- kill -9 at a random moment of training ------------------------------------------------------

def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if LEFTOVER.match(p.name)]


def _reference(world, out: Path, **kw):
    """The same run as the command line's, in this process."""
    from amgan_search.train.amgan import train_amgan
    from amgan_search.train.config import AmganConfig

    return train_amgan(AmganConfig(
        db=str(world["db"]), classifier=str(world["cam"]), out=str(out), size=32, iters=8,
        batch_size=4, n_critic=2, g_conv_dim=8, g_repeat_num=1, d_conv_dim=8, d_repeat_num=3,
        sample_every=1000, ckpt_every=1, log_every=1, workers=0, threads=1, device="cpu",
        bf16=False, progress=False, **kw))


def _command(world, out: Path, *extra) -> list[str]:
    args = train_args(world, out, "--iters", "8", "--ckpt-every", "1", *extra)
    return [sys.executable, "-m", "amgan_search.cli.main", *map(str, args)]


def _kill_at_random(cmd: list[str], log: Path, rng: random.Random, done: int = 0) -> int:
    """Start the command and kill -9 it once a random iteration after `done` (the iterations
    the run has already) is logged, or during start-up, plus a random few milliseconds; returns
    its exit status (0 when it finished first)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = rng.randint(done, 8)
    deadline = time.monotonic() + 120
    if records == done:
        records = 0
        time.sleep(rng.uniform(0, 3))
    while records and proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.read_text().count("\n") >= records:
            break
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    proc.kill()
    return proc.wait()


@pytest.mark.slow
def test_kill_9_of_training_at_a_random_moment_loses_nothing(world, tmp_path):
    torch.set_num_threads(1)
    reference = ckpt.load_weights(_reference(world, tmp_path / "ref") / ckpt.WEIGHTS)
    previous = _reference(world, tmp_path / "previous", stop_at=3)  # a run with a model already
    rng = random.Random(20240613)
    for trial in range(3):
        out = tmp_path / f"trial{trial}"
        from_previous = rng.random() < 0.5
        if from_previous:
            shutil.copytree(previous, out)
        status = _kill_at_random(_command(world, out, *(["--resume"] if from_previous else [])),
                                 out / "log.jsonl", rng, done=3 if from_previous else 0)
        latest = ckpt.latest_checkpoint(out) if out.exists() else None
        if latest is not None:
            ckpt.load_checkpoint(latest)  # the last complete checkpoint loads
        if from_previous:
            registry.load_model(out, "editor", device="cpu")  # the previous (or the new) model
        if status != 0:  # the rerun: the same command, in this process (torch loads once)
            again = run(*_command(world, out, *(["--resume"] if latest else []))[3:])
            assert again.exit_code == 0, (trial, again.output[-2000:])
        weights = ckpt.load_weights(out / ckpt.WEIGHTS)
        assert all(torch.equal(weights[k], reference[k]) for k in reference), trial
        registry.load_model(out, "editor", device="cpu")
        assert _leftovers(tmp_path) == [], trial
