"""The Shopping100k reader (amgan_search.sources.shopping100k) on split files written here, with
the bad inputs a user can hand it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.images import save_image
from amgan_search.sources import read_shopping100k

# ---------------------------------------------------------------------------------------------
# Shopping100k
# ---------------------------------------------------------------------------------------------

def write_shopping(folder: Path, train_labels: list[str], test_labels: list[str],
                   attr_num: str = "3\n2\n4\n", images: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attr_num.txt").write_text(attr_num)
    for split, labels in (("train", train_labels), ("test", test_labels)):
        paths = [f"Images/{split}_{i}.jpg" for i in range(len(labels))]
        (folder / f"imgs_{split}.txt").write_text("\n".join(paths) + "\n")
        (folder / f"labels_{split}.txt").write_text("\n".join(labels) + "\n")
        if images:
            for p in paths:
                save_image(folder / p, np.full((6, 4, 3), 200, np.uint8))


GOOD_TRAIN = ["1 0 0 0 1 0 0 0 1", "0 1 0 1 0 1 0 0 0", "0 0 0 0 1 0 0 1 0"]  # third: first block missing
GOOD_TEST = ["0 0 1 1 0 0 0 0 0"]  # last block missing


def test_shopping100k_reads_one_hot_blocks_and_missing_values(tmp_path):
    write_shopping(tmp_path / "s", GOOD_TRAIN, GOOD_TEST)
    source = read_shopping100k(tmp_path / "s")
    assert source.schema.to_dict() == {"attr0": ["v0", "v1", "v2"], "attr1": ["v0", "v1"],
                                       "attr2": ["v0", "v1", "v2", "v3"]}
    got = [(r.id, r.split, r.attributes) for r in source.records]
    assert got == [
        ("Images/train_0.jpg", "train", {"attr0": "v0", "attr1": "v1", "attr2": "v3"}),
        ("Images/train_1.jpg", "train", {"attr0": "v1", "attr1": "v0", "attr2": "v0"}),
        ("Images/train_2.jpg", "train", {"attr0": None, "attr1": "v1", "attr2": "v2"}),
        ("Images/test_0.jpg", "test", {"attr0": "v2", "attr1": "v0", "attr2": None}),
    ]


def test_shopping100k_names_from_option_or_sidecar(tmp_path):
    write_shopping(tmp_path / "s", GOOD_TRAIN, GOOD_TEST, attr_num="3 2 4")  # space-separated
    source = read_shopping100k(tmp_path / "s", attributes=["collar", "gender", "color"])
    assert source.schema.names == ["collar", "gender", "color"]
    assert source.records[0].gender == "v1"  # an attribute named gender is the gender field
    (tmp_path / "s" / "attributes.json").write_text(json.dumps(
        {"collar": ["round", "v", "polo"], "gender": ["men", "women"],
         "color": ["red", "blue", "green", "black"]}))
    source = read_shopping100k(tmp_path / "s")
    assert source.records[0].attributes == {"collar": "round", "gender": "women", "color": "black"}
    with pytest.raises(UserError, match="attributes.json: names .* differ from the attribute names given"):
        read_shopping100k(tmp_path / "s", attributes=["a", "b", "c"])
    (tmp_path / "s" / "attributes.json").write_text(json.dumps({"collar": ["a"], "color": ["b", "c"]}))
    with pytest.raises(UserError, match="attributes.json: value counts"):
        read_shopping100k(tmp_path / "s")


@pytest.mark.parametrize("train, test, message", [
    (GOOD_TRAIN[:2], GOOD_TEST, None),  # fixed below: imgs has 3 lines, labels 2
    (["1 1 0 0 1 0 0 0 1"], GOOD_TEST, r"labels_train.txt:1: attribute 'attr0' has 2 values set"),
    (["1 0 0 0 1 0 0 0"], GOOD_TEST, r"labels_train.txt:1: 8 values, expected 9"),
    (GOOD_TRAIN, ["0 0 1 1 0 0 0 0 2"], r"labels_test.txt:1: values must be 0 or 1"),
    (GOOD_TRAIN, ["0 0 1 1 0 0 0 0 00"], r"labels_test.txt:1: 9 values, expected 9"),
])
def test_shopping100k_bad_labels_name_file_and_line(tmp_path, train, test, message):
    write_shopping(tmp_path / "s", train, test)
    if message is None:
        (tmp_path / "s" / "imgs_train.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
        message = r"labels_train.txt: 2 lines but imgs_train.txt has 3"
    with pytest.raises(UserError, match=message):
        read_shopping100k(tmp_path / "s")


def test_shopping100k_other_bad_input(tmp_path):
    write_shopping(tmp_path / "s", GOOD_TRAIN, GOOD_TEST, images=False)
    with pytest.raises(UserError, match=r"imgs_train.txt:1: image .*train_0.jpg does not exist and 3 more"):
        read_shopping100k(tmp_path / "s")
    write_shopping(tmp_path / "s", GOOD_TRAIN, GOOD_TEST)
    with pytest.raises(UserError, match="attr_num.txt: 3 attributes, but 2 attribute names given"):
        read_shopping100k(tmp_path / "s", attributes=["a", "b"])
    with pytest.raises(UserError, match="'id' cannot be an attribute name"):
        read_shopping100k(tmp_path / "s", attributes=["id", "b", "c"])
    (tmp_path / "s" / "attr_num.txt").write_text("3\nx\n")
    with pytest.raises(UserError, match="attr_num.txt: expected whole numbers"):
        read_shopping100k(tmp_path / "s")
    (tmp_path / "s" / "attr_num.txt").unlink()
    with pytest.raises(UserError, match="attr_num.txt: no such file"):
        read_shopping100k(tmp_path / "s")


def test_shopping100k_images_elsewhere(tmp_path):
    write_shopping(tmp_path / "split", GOOD_TRAIN, GOOD_TEST, images=False)
    write_shopping(tmp_path / "data", GOOD_TRAIN, GOOD_TEST)  # the images live here
    source = read_shopping100k(tmp_path / "split", image_root=tmp_path / "data")
    assert source.root == (tmp_path / "data").resolve()
