"""No load without a check: a folder marked as the tool's that lacks its SHA256SUMS is refused, not
loaded unchecked; every weights file carries the sha256 of its tensor data in its own metadata;
`model checksum` records sums only over weights that match what records their checksum (that
digest, or the registry's record of the shipped model a folder copies) and says what it checked;
weights nothing records are recorded only when the user says they trust them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from amgan_search import checkpoint as ckpt
from amgan_search import registry
from amgan_search.errors import UserError
from amgan_search.integrity import SUMS
from amgan_search.outputs import MARKER
from builders import assert_refused, make_classifier, run



def flip_weights(path: Path, n: int = 2000, seed: int = 0) -> None:
    """Flip one bit in each of `n` bytes of the tensor data (the header left readable)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    for i in np.random.default_rng(seed).choice(np.arange(start, len(data)), n, replace=False):
        data[i] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "good.png"
    Image.fromarray(np.full((48, 40, 3), 180, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- row 4

@pytest.fixture
def unsummed_shipped_copy(tmp_path) -> Path:
    """A copy of the shipped AMGAN, its SHA256SUMS deleted and 2,000 weight bytes flipped."""
    copy = Path(shutil.copytree(registry.SHIPPED_DIR / "amgan", tmp_path / "amgan"))
    (copy / SUMS).unlink()
    flip_weights(copy / ckpt.WEIGHTS)
    assert (copy / MARKER).is_file()
    return copy


def test_a_marked_model_without_its_sums_is_refused_not_used_to_edit(unsummed_shipped_copy,
                                                                      photo, tmp_path):
    result = run("edit", photo, "--color", "red", "--model", unsummed_shipped_copy,
                 "--out", tmp_path / "o")
    assert_refused(result, str(unsummed_shipped_copy / SUMS), "missing", "model checksum")
    assert not (tmp_path / "o").exists()


def test_model_checksum_never_records_sums_over_a_damaged_copy_of_a_shipped_model(
        unsummed_shipped_copy):
    result = run("model", "checksum", unsummed_shipped_copy)
    assert_refused(result, "damaged", "the shipped amgan's")
    assert not (unsummed_shipped_copy / SUMS).exists()
    # even when told to trust the weights: the registry's record says they are not the shipped ones
    assert_refused(run("model", "checksum", unsummed_shipped_copy, "--trust-unsummed"), "damaged")


def test_model_checksum_records_an_intact_copy_of_a_shipped_model_and_says_why(tmp_path):
    copy = Path(shutil.copytree(registry.SHIPPED_DIR / "classifier-cam", tmp_path / "cam"))
    (copy / SUMS).unlink()
    result = run("model", "checksum", copy)
    assert result.exit_code == 0, result.output
    assert "SHA256SUMS written" in result.output and "shipped classifier-cam's" in result.output
    assert registry.checksum_model(copy, check=True) == "verified"


# ---------------------------------------------------------------- the weights' own record

def test_every_weights_file_records_the_digest_of_its_data(tmp_path):
    cam = make_classifier(tmp_path / "cam")
    recorded, actual = ckpt.data_digests(cam / ckpt.WEIGHTS)
    assert recorded is not None and recorded == actual
    flip_weights(cam / ckpt.WEIGHTS, n=1)
    recorded_after, actual_after = ckpt.data_digests(cam / ckpt.WEIGHTS)
    assert recorded_after == recorded and actual_after != recorded


def test_an_unmarked_folder_without_sums_is_still_checked_by_its_weights_record(tmp_path):
    cam = make_classifier(tmp_path / "cam")
    (cam / SUMS).unlink()
    (cam / MARKER).unlink()  # as a folder written before markers and sums
    registry.load_model(cam, "classifier")  # intact: loads
    flip_weights(cam / ckpt.WEIGHTS, n=1)
    with pytest.raises(UserError, match="metadata records"):
        registry.load_model(cam, "classifier")
    assert_refused(run("model", "checksum", cam), "damaged", "metadata records")
    assert not (cam / SUMS).exists()


def test_weights_nothing_vouches_for_are_recorded_only_when_trusted(tmp_path):
    from safetensors.torch import load_file, save_file

    cam = make_classifier(tmp_path / "cam")
    weights = cam / ckpt.WEIGHTS
    save_file(load_file(str(weights)), str(weights))  # as written before the digest existed
    (cam / SUMS).unlink()
    (cam / MARKER).unlink()
    refused = run("model", "checksum", cam)
    assert_refused(refused, "nothing records its checksum", "--trust-unsummed")
    assert not (cam / SUMS).exists()
    trusted = run("model", "checksum", cam, "--trust-unsummed")
    assert trusted.exit_code == 0, trusted.output
    assert "as they are" in trusted.output and (cam / SUMS).is_file() and (cam / MARKER).is_file()


def test_a_checkpoint_records_its_data_digest_too(tmp_path):
    ckpt.save_checkpoint(tmp_path, 3, {"w": torch.arange(4.0)}, {"x": 1})
    latest = ckpt.latest_checkpoint(tmp_path)
    assert ckpt.check_data_digest(latest / ckpt.WEIGHTS)
