"""Resume is resume: a run goes on only with the configuration it was started with (every field
that changes what it computes), or refuses naming the fields; a complete checkpoint is always
found, also when a kill left it without the `latest` pointer, so no fresh run writes over it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from builders import assert_refused, make_catalog, make_classifier, run

TINY = ["--size", "32", "--batch-size", "4", "--n-critic", "2", "--g-conv-dim", "8",
        "--g-repeat-num", "1", "--d-conv-dim", "8", "--d-repeat-num", "3", "--sample-every", "1000",
        "--log-every", "1", "--workers", "0", "--threads", "1", "--device", "cpu", "--no-bf16"]



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny catalog and classifier, and an AMGAN run planned for 6 iterations stopped at 2."""
    root = tmp_path_factory.mktemp("resume")
    world = {"db": make_catalog(root), "cam": make_classifier(root / "cam"), "run": root / "run"}
    result = run(*train(world, world["run"], "--iters", 6, "--stop-at", 2, "--ckpt-every", 2))
    assert result.exit_code == 0, result.output
    return world


def train(world, out, *extra):
    return ["train", "amgan", "--db", world["db"], "--classifier", world["cam"], "--out", out,
            *TINY, *extra]


def copy_run(world, tmp_path) -> Path:
    return Path(shutil.copytree(world["run"], tmp_path / "run"))


# ---------------------------------------------------------------- row 3: the pointer lost

def test_a_checkpoint_whose_latest_pointer_a_kill_lost_is_found(world, tmp_path):
    run_dir = copy_run(world, tmp_path)
    (run_dir / "checkpoints" / "latest").unlink()
    (run_dir / ckpt.WEIGHTS).unlink()  # a kill between the checkpoint's rename and the rest
    assert ckpt.latest_checkpoint(run_dir) == run_dir / "checkpoints" / "step-0000002"
    before = (run_dir / "checkpoints" / "step-0000002" / ckpt.WEIGHTS).read_bytes()
    fresh = run(*train(world, run_dir, "--iters", 6, "--ckpt-every", 2, "--seed", 7))
    assert_refused(fresh, "holds a training run already", "--resume")
    assert (run_dir / "checkpoints" / "step-0000002" / ckpt.WEIGHTS).read_bytes() == before
    resumed = run(*train(world, run_dir, "--iters", 6, "--stop-at", 4, "--ckpt-every", 2,
                         "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000004"


def test_the_newest_complete_checkpoint_wins_over_a_stale_pointer(tmp_path):
    for step in (2, 4):
        ckpt.save_checkpoint(tmp_path, step, {"w": ckpt_tensor(step)}, {})
    (tmp_path / "checkpoints" / "latest").write_text("step-0000002\n")  # killed before the update
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"
    (tmp_path / "checkpoints" / "step-0000006").mkdir()  # a folder without its files: not one
    assert ckpt.latest_checkpoint(tmp_path).name == "step-0000004"


def ckpt_tensor(step: int):
    import torch

    return torch.full((2,), float(step))


# ---------------------------------------------------------------- row 7: another configuration

@pytest.mark.parametrize("change", [("--iters", 8, "iters (6 -> 8)"),
                                    ("--lr", "0.0002", "lr (0.0001 -> 0.0002)"),
                                    ("--lambda-cls", 2, "lambda_cls (1.0 -> 2.0)"),
                                    ("--seed", 3, "seed (0 -> 3)")])
def test_resuming_with_another_schedule_loss_weight_or_seed_is_refused_naming_it(
        world, tmp_path, change):
    flag, value, named = change
    run_dir = copy_run(world, tmp_path)
    before = (run_dir / "train_config.json").read_text()
    args = {"--iters": 6, flag: value}
    result = run(*train(world, run_dir, *[x for kv in args.items() for x in kv],
                        "--ckpt-every", 2, "--resume"))
    assert_refused(result, "cannot resume with another", named)
    assert (run_dir / "train_config.json").read_text() == before
    assert ckpt.latest_checkpoint(run_dir).name == "step-0000002"


def test_resuming_with_other_bookkeeping_goes_on(world, tmp_path):
    run_dir = copy_run(world, tmp_path)
    other = run(*train(world, run_dir, "--iters", 6, "--stop-at", 3, "--ckpt-every", 1,
                       "--log-every", 3, "--resume"))
    assert other.exit_code == 0, other.output
    assert json.loads((run_dir / "train_config.json").read_text())["iters"] == 6


def test_a_classifier_resumes_only_with_its_learning_rate(tmp_path):
    from amgan_search.train.classifier import ClassifierConfig, train_classifier

    db = make_catalog(tmp_path)
    config = dict(db=str(db), out=str(tmp_path / "cls"), size=32, epochs=2, batch_size=8,
                  max_steps=1, workers=0, device="cpu", progress=False, checkpoint_every=1)
    train_classifier(ClassifierConfig(**config))
    with pytest.raises(UserError, match=r"cannot resume with another lr \(0.001 -> 0.01\)"):
        train_classifier(ClassifierConfig(**config, lr=0.01, resume=True))
