"""The DeepFashion-Synthesis reader (amgan_search.sources.dfs): the real label files, and G2.h5 and
.mat files written here in the real layout, with the bad inputs a user can hand them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from amgan_search.catalog import import_catalog
from amgan_search.errors import UserError
from amgan_search.sources import (DFS_COLORS, read_deepfashion_synthesis, read_dfs_labels,
                                  read_source)

REAL_DFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepfashion-synthesis"
needs_real = pytest.mark.skipif(not (REAL_DFS / "language_original.mat").is_file(),
                                reason="../shared/data/deepfashion-synthesis is absent")

N_DFS = 78_979


# ---------------------------------------------------------------------------------------------
# DeepFashion-Synthesis: the real label files
# ---------------------------------------------------------------------------------------------

@needs_real
@pytest.mark.slow
def test_real_labels_counts_names_and_split():
    source = read_deepfashion_synthesis(REAL_DFS, require_images=False)
    records = source.records
    assert len(records) == N_DFS
    assert source.schema.to_dict() == {
        "color": ["red", "blue", "white", "pink", "orange", "black", "brown", "green", "purple",
                  "yellow", "khaki", "gray", "beige", "unknown", "silver", "olive", "multicolor"],
        "sleeve": ["long", "short", "sleeveless", "unspecified"],
    }
    assert Counter(r.split for r in records) == {"train": 70_000, "test": 8_979}
    sleeve = Counter(r.attributes["sleeve"] for r in records)
    assert sleeve == {"long": 32_185, "short": 18_605, "sleeveless": 27_560, "unspecified": 629}
    color = Counter(r.attributes["color"] for r in records)
    assert color == {
        "red": 2907, "blue": 6715, "white": 12663, "pink": 3442, "orange": 687, "black": 12590,
        "brown": 841, "green": 1563, "purple": 1198, "yellow": 1174, "khaki": 651, "gray": 7345,
        "beige": 1218, "unknown": 1, "silver": 34, "olive": 24, "multicolor": 25926,
    }
    # Category and gender are kept (the perceptual loss's reference shares them).
    assert Counter(r.gender for r in records) == {"female": 74_075, "male": 4_904}
    categories = Counter(r.category for r in records)
    assert len(categories) == 19 and categories["Dress"] == 23_209 and categories["Tee"] == 12_244
    # Row 0 is DeepFashion's first blouse; its sentence agrees with its labels (1-based labels read right).
    first = records[0]
    assert first.id == "00000" and first.path == "G2.h5#0"
    assert first.extra["name"] == "img/Sheer_Pleated-Front_Blouse/img_00000001.jpg"
    assert first.category == "Blouse"
    assert first.attributes == {"color": "blue", "sleeve": "long"}
    assert "blue" in first.extra["sentence"] and "long" in first.extra["sentence"]


@needs_real
def test_real_labels_agree_with_the_sentences():
    """Color names were matched from the sentences: a named color should mostly appear in its sentence."""
    labels = read_dfs_labels(REAL_DFS)
    for k, name in enumerate(DFS_COLORS):
        if name in ("unknown", "multicolor"):
            continue
        rows = np.flatnonzero(labels.color == k)[:200]
        said = np.mean([name in labels.sentences[i] for i in rows])
        assert said > 0.5, (name, said)


@needs_real
def test_real_split_uses_one_based_indices():
    ind = scipy.io.loadmat(str(REAL_DFS / "ind.mat"))
    labels = read_dfs_labels(REAL_DFS)
    first_test = int(ind["test_ind"].ravel()[0])
    assert labels.split[first_test - 1] == "test"
    first_train = int(ind["train_ind"].ravel()[0])
    assert labels.split[first_train - 1] == "train"
    assert labels.split[first_train - 2] == "test"  # train_ind starts at 258: rows 1..257 are test


# ---------------------------------------------------------------------------------------------
# DeepFashion-Synthesis: the image side, on G2.h5 files written in the real layout
# ---------------------------------------------------------------------------------------------

H, W = 12, 8  # not square, so a transposed read has the wrong shape


def pattern(seed: int) -> np.ndarray:
    """An asymmetric image: a red square top-left, a green stripe along the bottom, grey elsewhere."""
    img = np.full((H, W, 3), 0.5, dtype=np.float32)
    img[:4, :3] = (1.0, 0.0, 0.0)
    img[-2:, :] = (0.0, 1.0, 0.0)
    img[5, 4] = (seed % 7) / 7.0  # one pixel that tells rows apart
    return img


def write_g2(path: Path, n: int, rows: dict[int, np.ndarray], shape=None, keys=("ih", "ih_mean")):
    """Write G2.h5 as the real file stores it: ih = image - mean, (N, 3, W, H), chunked per image."""
    mean = np.full((3, W, H), 0.25, dtype=np.float32)
    with h5py.File(path, "w") as f:
        ih = f.create_dataset(keys[0], shape=shape or (n, 3, W, H), dtype="float32",
                              chunks=(1, 3, W, H) if shape is None else None)
        for i, img in rows.items():
            ih[i] = img.transpose(2, 1, 0) - mean  # (H, W, C) -> (C, W, H)
        f.create_dataset(keys[1], data=mean)
        f.create_dataset("b_", shape=(n, 1, W, H), dtype="uint8", chunks=(1, 1, W, H))


def write_small_mats(folder: Path, color, sleeve, cate, gender, train, test):
    """language_original.mat and ind.mat in the real layout: (N, 1) columns, cells, 1-based rows."""
    n = len(color)
    cells = np.empty((n, 1), dtype=object)
    sentences = np.empty((n, 1), dtype=object)
    for i in range(n):
        cells[i, 0] = np.array([f"img/Item_{i}/img_{i:08d}.jpg"])
        sentences[i, 0] = np.array([f"sentence {i}"])
    scipy.io.savemat(str(folder / "language_original.mat"), {
        "color_": np.asarray(color, dtype=np.uint8).reshape(-1, 1),
        "sleeve_": np.asarray(sleeve, dtype=np.float64).reshape(-1, 1),  # writers differ in dtype
        "cate_new": np.asarray(cate, dtype=np.uint8).reshape(-1, 1),
        "gender_": np.asarray(gender, dtype=np.uint8).reshape(-1, 1),
        "nameList": cells, "engJ": sentences, "img_root": "img/",
    })
    scipy.io.savemat(str(folder / "ind.mat"), {
        "train_ind": np.asarray(train, dtype=np.int32).reshape(-1, 1),
        "test_ind": np.asarray(test, dtype=np.int32).reshape(-1, 1),
    })


@pytest.fixture
def small_dfs(tmp_path):
    folder = tmp_path / "dfs"
    folder.mkdir()
    write_small_mats(folder, color=[1, 17, 3, 1, 14, 2], sleeve=[1, 2, 3, 4, 1, 2],
                     cate=[2, 16, 19, 1, 13, 2], gender=[0, 1, 0, 0, 1, 0],
                     train=[3, 4, 5, 6], test=[1, 2])
    write_g2(folder / "G2.h5", 6, {i: pattern(i) for i in range(6)})
    return folder


def test_small_mats_import_labels_split_and_images(small_dfs, tmp_path):
    cat = import_catalog("deepfashion-synthesis", small_dfs, tmp_path / "c.db", progress=False)
    items = cat.items()
    assert list(items["id"]) == ["00000", "00001", "00002", "00003", "00004", "00005"]
    assert list(items["color"]) == ["red", "multicolor", "white", "red", "unknown", "blue"]
    assert list(items["sleeve"]) == ["long", "short", "sleeveless", "unspecified", "long", "short"]
    assert list(items["category"]) == ["Blouse", "Dress", "Romper", "Blazer", "Tee", "Blouse"]
    assert list(items["gender"]) == ["female", "male", "female", "female", "male", "female"]
    assert list(items["split"]) == ["test", "test", "train", "train", "train", "train"]
    assert cat.labels(items).tolist() == [[0, 0], [16, 1], [2, 2], [0, 3], [13, 0], [1, 1]]
    for i in range(6):
        img = cat.read_image(f"G2.h5#{i}")
        expected = np.round(np.clip(pattern(i), 0, 1) * 255).astype(np.uint8)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, expected)
    img = cat.read_image("G2.h5#2")
    assert tuple(img[0, 0]) == (255, 0, 0)            # red square top-left
    assert tuple(img[0, W - 1]) != (255, 0, 0)        # ... not top-right (a flip fails here)
    assert tuple(img[H - 1, W // 2]) == (0, 255, 0)   # green stripe at the bottom
    assert tuple(img[0, W // 2 + 1]) != (0, 255, 0)   # ... not at the top


def test_g2_file_that_does_not_fit_is_refused(small_dfs):
    g2 = small_dfs / "G2.h5"
    write_g2(g2, 5, {})  # one row short of the labels
    with pytest.raises(UserError, match="G2.h5.*5 images but the labels have 6"):
        read_deepfashion_synthesis(small_dfs)
    write_g2(g2, 6, {}, keys=("images", "ih_mean"))
    with pytest.raises(UserError, match="G2.h5.*'ih' and 'ih_mean'"):
        read_deepfashion_synthesis(small_dfs)
    write_g2(g2, 6, {}, shape=(6, W, H))
    with pytest.raises(UserError, match="G2.h5.*shape"):
        read_deepfashion_synthesis(small_dfs)
    g2.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="G2.h5.*HDF5"):
        read_deepfashion_synthesis(small_dfs)
    g2.unlink()
    with pytest.raises(UserError, match="G2.h5: no such file"):
        read_deepfashion_synthesis(small_dfs)
    # Labels alone still read (what info-like checks need).
    assert len(read_deepfashion_synthesis(small_dfs, require_images=False).records) == 6


def test_attribute_names_do_not_apply_to_deepfashion_synthesis(small_dfs):
    with pytest.raises(UserError, match="attribute names a, b do not apply to deepfashion-synthesis "
                                        r"\(its attributes are color, sleeve\)") as caught:
        read_source("deepfashion-synthesis", small_dfs, attributes=["a", "b"])
    assert "--" not in str(caught.value)  # a library message names values, not CLI flags


def test_bad_label_files_are_refused(tmp_path):
    write_small_mats(tmp_path, color=[0, 1], sleeve=[1, 1], cate=[1, 1], gender=[0, 0],
                     train=[1], test=[2])  # color 0: the file is 1-based, 0 is invalid
    with pytest.raises(UserError, match="language_original.mat: color_ holds values outside 1..17"):
        read_dfs_labels(tmp_path)
    write_small_mats(tmp_path, color=[1, 1, 1], sleeve=[1, 1, 1], cate=[1, 1, 1], gender=[0, 0, 0],
                     train=[1], test=[2])
    with pytest.raises(UserError, match="ind.mat: 1 of 3 rows are in neither"):
        read_dfs_labels(tmp_path)
    write_small_mats(tmp_path, color=[1, 1], sleeve=[1, 1], cate=[1, 1], gender=[0, 0],
                     train=[1, 2], test=[2])
    with pytest.raises(UserError, match="ind.mat: test_ind repeats a row or overlaps"):
        read_dfs_labels(tmp_path)
    (tmp_path / "ind.mat").write_bytes(b"garbage")
    with pytest.raises(UserError, match="ind.mat: not a readable .mat file"):
        read_dfs_labels(tmp_path)


@needs_real
@pytest.mark.slow
def test_full_import_with_real_labels_and_a_sparse_g2(tmp_path):
    """All 78,979 rows, with the real .mat files; G2.h5 is chunked so only written rows take space."""
    folder = tmp_path / "dfs"
    folder.mkdir()
    for name in ("language_original.mat", "ind.mat"):
        (folder / name).symlink_to(REAL_DFS / name)
    write_g2(folder / "G2.h5", N_DFS, {0: pattern(0), N_DFS - 1: pattern(3)})
    assert (folder / "G2.h5").stat().st_size < 2_000_000
    cat = import_catalog("deepfashion-synthesis", folder, tmp_path / "dfs.db", progress=False)
    assert cat.count() == N_DFS and cat.count("train") == 70_000 and cat.count("test") == 8_979
    counts = cat.counts()
    assert counts["all"]["values"]["sleeve"] == {"long": 32_185, "short": 18_605,
                                                 "sleeveless": 27_560, "unspecified": 629}
    assert counts["all"]["values"]["color"]["multicolor"] == 25_926
    assert counts["all"]["values"]["color"]["unknown"] == 1
    assert sum(counts["test"]["values"]["color"].values()) == 8_979
    np.testing.assert_array_equal(cat.read_image(f"G2.h5#{N_DFS - 1}"),
                                  np.round(pattern(3) * 255).astype(np.uint8))
    # The reference image for a target vector of the same category and gender.
    ids = cat.matching({"color": "red", "sleeve": "long"}, category="Blouse", gender="female", limit=5)
    assert len(ids) == 5
    rows = cat.lookup(ids)
    assert set(rows["color"]) == {"red"} and set(rows["sleeve"]) == {"long"}
    assert set(rows["category"]) == {"Blouse"}
