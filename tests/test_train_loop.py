"""The loop helpers both trainers share: random state, the run folder, its log."""

import json
import random

import numpy as np
import pytest
import torch

from amgan_search.errors import UserError
from amgan_search.images import preview_values
from amgan_search.train.loop import RunFolder, due, rng_state, set_rng_state, training_seconds


def _draws(np_rng=None):
    numpy = np_rng.random(3) if np_rng is not None else np.random.random(3)
    return torch.rand(3).tolist(), random.random(), numpy.tolist()


@pytest.mark.parametrize("own_generator", [True, False])
def test_random_state_saved_and_loaded_draws_the_same_numbers_again(tmp_path, own_generator):
    np_rng = np.random.default_rng(5) if own_generator else None
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    _draws(np_rng)
    torch.save(rng_state(np_rng), tmp_path / "state.pt")
    first = _draws(np_rng)
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True), np_rng)
    assert _draws(np_rng) == first


def test_a_resumed_log_drops_the_records_after_the_checkpoint(tmp_path):
    run = RunFolder(tmp_path)
    with run:
        run.open_log()
        for i in range(1, 6):
            run.log({"iter": i, "loss": 1.0 / i})
    run.trim_log(3)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [1, 2, 3]
    assert lines[0] == json.dumps({"iter": 1, "loss": 1.0})


def test_a_folder_that_does_not_write_leaves_no_file(tmp_path):
    run = RunFolder(tmp_path / "rank1", writes=False)
    with run:
        run.open_log()
        run.write_config({"seed": 0})
        run.log({"iter": 1})
        run.checkpoint(1, {"w": torch.zeros(1)}, {})
        run.save_samples(1, np.zeros((4, 4, 3), np.uint8))
    assert not (tmp_path / "rank1").exists()
    with pytest.raises(UserError, match="no checkpoint to resume from"):
        run.resume()


def test_periodic_actions_fall_on_multiples_and_on_the_last_step():
    assert [s for s in range(1, 8) if due(s, 3, 7)] == [3, 6, 7]


def test_preview_values_spread_over_the_values_first_and_last_included():
    assert preview_values(10, 4) == [0, 3, 6, 9]
    assert preview_values(2, 4) == [0, 1]


def test_training_seconds_add_up_a_run_and_its_resumes(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [{"iter": 50, "s_per_iter": 1.0}, {"iter": 100, "s_per_iter": 1.0},  # no `since`
               {"iter": 150, "since": 100, "s_per_iter": 0.5},
               {"iter": 200, "since": 100, "s_per_iter": 0.25}]
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert training_seconds(log, 200) == 100 * 1.0 + 100 * 0.25
    assert training_seconds(log, 150) == 100 * 1.0 + 50 * 0.5
    assert training_seconds(tmp_path / "missing.jsonl", 10) == 0
