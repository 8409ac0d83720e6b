"""What an AMGAN iteration reads: the seed's batches, L_p's references, the targets."""

import numpy as np
import pytest
import torch

from amgan_search.errors import UserError
from amgan_search.train.batches import DataOrder, ReferencePicker, sample_targets


def test_reference_image_has_the_target_attributes_else_the_target_value_else_none():
    labels = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [2, 0]])
    picker = ReferencePicker(labels)
    rng = np.random.default_rng(0)
    target = np.array([[1, 1], [2, 1], [0, 0]])
    for _ in range(10):
        idx = picker.pick(target, 0, rng)
        assert idx[0] in (2, 3)        # whole vector (1, 1)
        assert idx[1] == 4             # no (2, 1): the manipulated attribute's value 2
        assert idx[2] == 0
    assert picker.pick(np.array([[3, 1]]), 0, rng)[0] == -1   # value 3 exists nowhere


def test_reference_matches_category_and_gender_where_the_data_has_them():
    labels = np.array([[0, 0], [0, 0], [1, 0]])
    picker = ReferencePicker(labels, np.array(["tee|f", "tee|m", "tee|m"]))
    rng = np.random.default_rng(0)
    # the input item 2 is a men's tee: the reference for (0, 0) is item 1, not item 0
    assert all(picker.pick(np.array([[0, 0]]), 0, rng, source=np.array([2]))[0] == 1
               for _ in range(10))


def test_targets_differ_from_the_current_value():
    labels = torch.tensor([[0, 1], [2, 0], [-1, 1]] * 50)
    trg = sample_targets(labels, 0, 3)
    assert torch.equal(trg[:, 1], labels[:, 1])
    known = labels[:, 0] != -1
    assert (trg[known, 0] != labels[known, 0]).all()
    assert ((trg[:, 0] >= 0) & (trg[:, 0] < 3)).all()
    assert set(trg[~known, 0].tolist()) == {0, 1, 2}


def test_data_order_is_the_seeds_sharded_and_resumable():
    a = DataOrder(10, 2, seed=3, rank=0, world=2)
    b = DataOrder(10, 2, seed=3, rank=1, world=2)
    ea, eb = a.batches(0), b.batches(0)
    assert ea.shape == eb.shape == (2, 2)
    assert not set(ea.ravel()) & set(eb.ravel())
    it = iter(DataOrder(10, 2, seed=3))
    seq = [next(it).tolist() for _ in range(7)]
    again = DataOrder(10, 2, seed=3, epoch=1, pos=1)
    assert next(iter(again)).tolist() == seq[6]
    with pytest.raises(UserError):
        DataOrder(3, 2, seed=0, world=2)
