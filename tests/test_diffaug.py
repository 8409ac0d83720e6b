import json

import numpy as np
import pytest
import torch

from amgan_helpers import SCHEMA, TinyClassifier, TinyImages, tiny_config
from amgan_search.errors import UserError
from amgan_search.train import trainer as trainer_module
from amgan_search.train.amgan import train_amgan
from amgan_search.train.config import AmganConfig
from amgan_search.train.diffaug import blur, cutout, diff_augment, translate
from amgan_search.train.loop import RUN_CONFIG
from amgan_search.train.trainer import AmganTrainer


def _images(b=6, side=32):
    torch.manual_seed(3)
    return torch.rand(b, 3, side, side) * 2 - 1


def _shift_of(out, x, most):
    """The (dy, dx) with out[i, j] = x[i - dy, j - dx] inside and 0 on the border, else None."""
    h, w = x.shape[-2:]
    for dy in range(-most, most + 1):
        for dx in range(-most, most + 1):
            moved = torch.zeros_like(x)
            moved[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
                x[:, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
            if torch.equal(out, moved):
                return dy, dx
    return None


def test_translation_shifts_each_image_by_whole_pixels_within_an_eighth_of_its_side():
    x = _images()
    torch.manual_seed(0)
    out = translate(x)
    shifts = [_shift_of(out[i], x[i], 4) for i in range(len(x))]
    assert None not in shifts
    assert len(set(shifts)) > 1  # each image its own draw


def test_cutout_zeroes_one_square_of_a_quarter_side_and_leaves_the_rest():
    x = _images()
    torch.manual_seed(0)
    out = cutout(x)
    for i in range(len(x)):
        hole = (out[i] == 0).all(0)
        rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        assert int(hole.sum()) == len(rows) * len(cols)
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole])


def test_blur_keeps_flat_colour_and_takes_away_fine_stripes():
    flat = torch.full((2, 3, 32, 32), 0.4)
    assert torch.allclose(blur(flat, 1.0), flat, atol=1e-6)
    stripes = torch.ones(4, 3, 32, 32)
    stripes[..., ::2] = -1
    torch.manual_seed(0)
    out = blur(stripes, 1.0)
    assert out.abs().mean() < stripes.abs().mean()
    assert torch.allclose(blur(stripes, 1e-4), stripes, atol=1e-5)  # sigma near 0: unchanged


def test_the_policies_compose_and_pass_gradients_back():
    x = _images().requires_grad_(True)
    assert diff_augment(x, ()) is x
    diff_augment(x, ("translation", "cutout", "blur")).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_a_config_names_known_policies_only():
    assert AmganConfig(diff_augment=["blur"]).diff_augment == ("blur",)
    with pytest.raises(UserError, match="unknown diff_augment policy 'color'"):
        AmganConfig(diff_augment=("color",))
    with pytest.raises(UserError, match="must be a list"):
        AmganConfig(diff_augment="blur")


def test_the_critics_see_what_the_transform_returns_in_both_updates(tmp_path, monkeypatch):
    """With a transform that shows the critics only grey, photos and edits look alike to them:
    D's adversarial terms are 0, and G's is the critics' score of grey, whatever G drew."""
    seen = []

    def grey(x, policy):
        seen.append((tuple(x.shape), tuple(policy)))
        return torch.zeros_like(x)

    monkeypatch.setattr(trainer_module, "diff_augment", grey)
    data = TinyImages()
    x = torch.stack([data[i][0] for i in range(4)])
    y = torch.stack([data[i][1] for i in range(4)])
    torch.manual_seed(0)
    trainer = AmganTrainer(tiny_config(tmp_path, diff_augment=("cutout",)), SCHEMA,
                           TinyClassifier())
    d = trainer.d_step(x, y, 0)
    assert d["D/adv"] == 0 and d["DC/adv"] == 0
    assert {shape[-1] for shape, _ in seen} == {32, 16} and {p for _, p in seen} == {("cutout",)}
    g = trainer.g_step(x, y, 1, reference=lambda trg, a: (x, torch.ones(4)))
    with torch.no_grad():
        zeros = torch.zeros(4, 3, 32, 32)
        want = -trainer.D(zeros)[0].mean() - trainer.DC(zeros[..., :16, :16])[0].mean()
    assert g["G/adv"] == pytest.approx(want.item(), rel=1e-5)


def test_a_run_with_every_policy_trains_and_records_them(tmp_path):
    cfg = tiny_config(tmp_path, diff_augment=("translation", "cutout", "blur"), ckpt_every=2)
    torch.manual_seed(0)
    out = train_amgan(cfg, dataset=TinyImages(), classifier=TinyClassifier())
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(v) for v in last.values())
    saved = json.loads((out / RUN_CONFIG).read_text())
    assert saved["diff_augment"] == ["translation", "cutout", "blur"]
    assert json.loads((out / "config.json").read_text())["train_config"] == saved
