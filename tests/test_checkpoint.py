import pytest
import torch

from amgan_search import checkpoint as ck
from amgan_search.errors import UserError
from amgan_search.io import atomic_dir, read_json


def test_model_dir_round_trip_and_fp16_storage(tmp_path):
    w = {"a": torch.randn(3, 3), "n": torch.tensor([5])}
    ck.save_model_dir(tmp_path / "m", {"kind": "classifier"}, w, half=True)
    config, loaded = ck.load_model_dir(tmp_path / "m", kind="classifier")
    assert config == {"kind": "classifier"}
    assert loaded["a"].dtype == torch.float32 and torch.allclose(loaded["a"], w["a"], atol=1e-2)
    with pytest.raises(UserError, match="not a 'amgan'"):
        ck.load_model_dir(tmp_path / "m", kind="amgan")


def test_corrupt_weights_and_missing_dir_are_user_errors(tmp_path):
    ck.save_model_dir(tmp_path / "m", {"kind": "x"}, {"a": torch.ones(2)})
    (tmp_path / "m" / ck.WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        ck.load_model_dir(tmp_path / "m")
    with pytest.raises(UserError, match="no such model directory"):
        ck.load_model_dir(tmp_path / "nope")


def test_checkpoints_rotate_and_latest_points_at_a_complete_one(tmp_path):
    for step in (1, 2, 3):
        ck.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))},
                           {"rng": torch.get_rng_state(), "note": "x"}, keep=2)
    latest = ck.latest_checkpoint(tmp_path)
    assert latest.name == "step-0000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000003"]
    tensors, state = ck.load_checkpoint(latest)
    assert tensors["w"].tolist() == [3.0, 3.0] and state["step"] == 3 and state["note"] == "x"


def test_failed_write_leaves_the_old_directory(tmp_path):
    ck.save_model_dir(tmp_path / "m", {"kind": "old"}, {"a": torch.ones(1)})
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert read_json(tmp_path / "m" / ck.CONFIG) == {"kind": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


class Evil:
    """Any class: unpickling it would run arbitrary code paths."""


def test_state_loading_refuses_pickled_objects(tmp_path):
    torch.save({"x": Evil()}, tmp_path / "state.pt")
    with pytest.raises(UserError, match="unsafe"):
        ck.load_state(tmp_path / "state.pt")
