"""The readers: DeepFashion-Synthesis on its real label files, Shopping100k and CSV catalogs on files
written here, each with the bad inputs a user can hand them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from amgan_search.catalog import import_catalog
from amgan_search.datasets import (
    DFS_COLORS, hash_split, read_csv_catalog, read_deepfashion_synthesis,
    read_dfs_labels, read_shopping100k,
)
from amgan_search.errors import UserError
from amgan_search.images import save_image

REAL_DFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepfashion-synthesis"
needs_real = pytest.mark.skipif(not (REAL_DFS / "language_original.mat").is_file(),
                                reason="../shared/data/deepfashion-synthesis is absent")

N_DFS = 78_979


# ---------------------------------------------------------------------------------------------
# DeepFashion-Synthesis: the real label files
# ---------------------------------------------------------------------------------------------

@needs_real
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
    with pytest.raises(UserError, match="attributes.json: names .* differ from --attributes"):
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
    with pytest.raises(UserError, match=r"imgs_\*.txt: image .*train_0.jpg does not exist and 3 more"):
        read_shopping100k(tmp_path / "s")
    write_shopping(tmp_path / "s", GOOD_TRAIN, GOOD_TEST)
    with pytest.raises(UserError, match="--attributes names 2 attributes but .*attr_num.txt has 3"):
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


# ---------------------------------------------------------------------------------------------
# CSV catalogs
# ---------------------------------------------------------------------------------------------

def write_csv_catalog(folder: Path, rows: list[dict], header: list[str] | None = None,
                      images: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = header or list(rows[0])
    lines = [",".join(header)] + [",".join(str(r.get(h, "")) for h in header) for r in rows]
    path = folder / "items.csv"
    path.write_text("\n".join(lines) + "\n")
    if images:
        for r in rows:
            p = r.get("path", "")
            if p and not p.startswith("/") and ".." not in p:
                save_image(folder / p, np.full((5, 7, 3), 100, np.uint8))
    return path


ROWS = [
    {"id": "a", "path": "img/a.png", "color": "red", "sleeve": "long", "category": "tee"},
    {"id": "b", "path": "img/b.png", "color": "blue", "sleeve": "", "category": "top"},
    {"id": "c", "path": "img/c.png", "color": "item10", "sleeve": "short", "category": ""},
    {"id": "d", "path": "img/d.png", "color": "item9", "sleeve": "long", "category": "tee"},
]


def test_csv_catalog_schema_from_values_and_hash_split(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    source = read_csv_catalog(path)
    # Sorted (natural order: item9 before item10); an empty cell is a missing value.
    assert source.schema.to_dict() == {"color": ["blue", "item9", "item10", "red"],
                                       "sleeve": ["long", "short"]}
    by_id = {r.id: r for r in source.records}
    assert by_id["b"].attributes == {"color": "blue", "sleeve": None}
    assert by_id["a"].category == "tee" and by_id["c"].category is None
    assert all(r.split == hash_split(r.id) for r in source.records)
    assert source.root == (tmp_path / "cat").resolve()


def test_hash_split_is_deterministic_and_about_ninety_ten():
    splits = [hash_split(f"item-{i}") for i in range(2000)]
    assert splits == [hash_split(f"item-{i}") for i in range(2000)]
    assert 0.07 < splits.count("test") / 2000 < 0.13


def test_csv_catalog_schema_json_fixes_order_and_values(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", [{**r, "split": "train"} for r in ROWS[:2]])
    (tmp_path / "cat" / "schema.json").write_text(json.dumps(
        {"sleeve": ["short", "long"], "color": ["red", "green", "blue"]}))
    source = read_csv_catalog(path)
    assert source.schema.to_dict() == {"sleeve": ["short", "long"], "color": ["red", "green", "blue"]}
    assert [r.split for r in source.records] == ["train", "train"]
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    with pytest.raises(UserError, match=r"items.csv:4: color value 'item10' is not in schema.json"):
        read_csv_catalog(path)


def test_csv_catalog_attribute_option_keeps_other_columns_as_extras(tmp_path):
    rows = [{**r, "brand": "acme"} for r in ROWS]
    source = read_csv_catalog(write_csv_catalog(tmp_path / "cat", rows), attributes=["color"])
    assert source.schema.names == ["color"]
    assert source.extra_columns == ["sleeve", "brand"]
    assert source.records[0].extra == {"sleeve": "long", "brand": "acme"}


@pytest.mark.parametrize("change, message", [
    (lambda rows, header: (rows, [h for h in header if h != "id"]), "missing required column 'id'"),
    (lambda rows, header: (rows, [h for h in header if h != "path"]), "missing required column 'path'"),
    (lambda rows, header: (rows + [{**rows[0]}], header), r"items.csv:6: duplicate id 'a' \(first on line 2\)"),
    (lambda rows, header: ([{**rows[0], "id": ""}] + rows[1:], header), r"items.csv:2: empty 'id'"),
    (lambda rows, header: ([{**rows[0], "path": ""}] + rows[1:], header), r"items.csv:2: empty 'path'"),
    (lambda rows, header: ([{**rows[0], "path": "/etc/passwd"}] + rows[1:], header), r"items.csv:2: .* is absolute"),
    (lambda rows, header: ([{**rows[0], "path": "img/../../x.png"}] + rows[1:], header), r"items.csv:2: .* leaves the catalog folder"),
    (lambda rows, header: ([{**rows[0], "split": "dev"}] + rows[1:], header + ["split"]), r"items.csv:2: split 'dev'"),
])
def test_csv_catalog_bad_input(tmp_path, change, message):
    rows, header = change([dict(r) for r in ROWS], list(ROWS[0]))
    if "split" in header:
        rows = [{"split": "train", **r} for r in rows]
    path = write_csv_catalog(tmp_path / "cat", rows, header=header)
    with pytest.raises(UserError, match=message):
        read_csv_catalog(path)


def test_csv_catalog_missing_image_and_other_file_problems(tmp_path):
    path = write_csv_catalog(tmp_path / "cat", ROWS)
    (tmp_path / "cat" / "img" / "c.png").unlink()
    with pytest.raises(UserError, match=r"items.csv: image .*c.png does not exist"):
        read_csv_catalog(path)
    path.write_text("id,path,color\na,img/a.png,red,extra\n")
    with pytest.raises(UserError, match=r"items.csv:2: 3 columns expected"):
        read_csv_catalog(path)
    path.write_text("id,path\na,img/a.png\n")
    with pytest.raises(UserError, match="no attribute columns"):
        read_csv_catalog(path)
    path.write_text("id,path,color\n")
    with pytest.raises(UserError, match="items.csv: no rows"):
        read_csv_catalog(path)
    with pytest.raises(UserError, match="catalog.csv: no such file"):
        read_csv_catalog(tmp_path / "cat")
