import numpy as np
import pytest
import torch

from amgan_search.errors import UserError
from amgan_search.schema import DEFAULT_SCHEMA, MISSING, Schema, synthetic_schema


def test_default_schema_is_deepfashion_synthesis_shaped():
    assert DEFAULT_SCHEMA.names == ["color", "sleeve"]
    assert DEFAULT_SCHEMA.n_values == 17 + 4
    assert DEFAULT_SCHEMA.n_attributes == 2
    assert DEFAULT_SCHEMA.condition_dim == 23
    assert DEFAULT_SCHEMA.offsets == [0, 17]


def test_encode_decode_round_trip_with_missing():
    s = synthetic_schema(["color", "sleeve", "pattern"])
    idx = s.encode({"color": "navy", "pattern": "dotted"})
    assert idx.tolist() == [13, MISSING, 2]
    assert s.decode(idx) == {"color": "navy", "sleeve": None, "pattern": "dotted"}


def test_unknown_names_and_values_list_the_valid_ones():
    with pytest.raises(UserError, match="valid: red, blue"):
        DEFAULT_SCHEMA.encode({"color": "teal"})
    with pytest.raises(UserError, match="valid: color, sleeve"):
        DEFAULT_SCHEMA.attribute("collar")
    with pytest.raises(UserError):
        synthetic_schema(["fabric"])


def test_condition_is_value_onehots_then_mask_vector():
    s = DEFAULT_SCHEMA
    targets = torch.tensor([[0, 3], [16, 0]])
    m = s.condition(targets, torch.tensor([1, 0]))
    assert m.shape == (2, 23)
    assert m[0, 0] == 1 and m[0, 17 + 3] == 1 and m[0, 21:].tolist() == [0, 1]
    assert m[1, 16] == 1 and m[1, 17] == 1 and m[1, 21:].tolist() == [1, 0]
    assert m[:, :21].sum(1).tolist() == [2, 2]


def test_missing_value_is_an_all_zero_block():
    m = DEFAULT_SCHEMA.onehot(np.array([[MISSING, 2]]))
    assert m[0, :17].sum() == 0 and m[0, 17 + 2] == 1


def test_dict_round_trip():
    s = synthetic_schema(["color", "sleeve", "pattern"])
    assert Schema.from_dict(s.to_dict()) == s


def test_edit_targets_become_positions_and_value_indices():
    s = synthetic_schema(["color", "sleeve", "pattern"])
    assert s.targets({"pattern": "checked", "color": "red", "sleeve": None}) == {2: 3, 0: 0}
    with pytest.raises(UserError, match="unknown sleeve value 'elbow'; valid: long"):
        s.targets({"sleeve": "elbow"})
    with pytest.raises(UserError, match="unknown attribute 'collar'"):
        s.targets({"collar": "round"})
