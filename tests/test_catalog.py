"""The catalog DB, the torch dataset over it and the catalog CLI, on tiny catalogs written here."""

from __future__ import annotations

import json
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from amgan_search.catalog import Catalog, import_catalog
from amgan_search.dataset import CatalogImages
from amgan_search.errors import UserError
from amgan_search.images import save_image
from builders import run

torch.set_num_threads(1)

SCHEMA = {"color": ["red", "blue", "green"], "sleeve": ["long", "short", "sleeveless"]}
RGB = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 200, 20)}
ITEMS = [  # id, split, color, sleeve
    ("s0", "train", "red", "long"),
    ("s1", "train", "blue", "short"),
    ("s2", "train", "red", "long"),
    ("s3", "test", "green", "sleeveless"),
    ("s4", "test", "red", "long"),
    ("s5", "train", "blue", "long"),
]


def garment(color: str, h: int = 40, w: int = 30) -> np.ndarray:
    """A white frame with a colored block: a stand-in for a rendered top."""
    img = np.full((h, w, 3), 255, np.uint8)
    img[8:32, 6:24] = RGB[color]
    return img


def write_synthetic(folder: Path, items=ITEMS) -> Path:
    """The synthetic renderer's output layout: catalog.csv + schema.json + images."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schema.json").write_text(json.dumps(SCHEMA))
    lines = ["id,path,split,color,sleeve,scene"]
    for item_id, split, color, sleeve in items:
        save_image(folder / "images" / f"{item_id}.png", garment(color))
        scene = json.dumps({"seed": int(item_id[1:]), "color": color}).replace('"', '""')
        lines.append(f'{item_id},images/{item_id}.png,{split},{color},{sleeve},"{scene}"')
    (folder / "catalog.csv").write_text("\n".join(lines) + "\n")
    return folder


def files(folder: Path) -> list[str]:
    """What a folder holds, less the writers' lock files (`.NAME.lock`: kept, as filelock keeps them)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture
def synth_db(tmp_path) -> Path:
    src = write_synthetic(tmp_path / "synth")
    import_catalog("synthetic", src, tmp_path / "catalog.db", progress=False)
    return tmp_path / "catalog.db"


def test_synthetic_import_round_trip(synth_db, tmp_path):
    cat = Catalog.open(synth_db)
    assert cat.format == "synthetic"
    assert cat.root == (tmp_path / "synth").resolve()
    assert cat.schema.to_dict() == SCHEMA  # schema.json's order, not sorted
    items = cat.items()
    assert list(items.columns) == ["id", "path", "split", "color", "sleeve", "category", "gender", "scene"]
    assert list(items["id"]) == [i[0] for i in ITEMS]
    assert items["category"].isna().all()
    # The scene stays available so evaluations can re-render an item with an attribute changed.
    assert json.loads(items["scene"].iloc[3]) == {"seed": 3, "color": "green"}
    assert cat.labels(items).tolist() == [[0, 0], [1, 1], [0, 0], [2, 2], [0, 0], [1, 0]]
    assert list(cat.items("test")["id"]) == ["s3", "s4"]
    assert cat.count() == 6 and cat.count("train") == 4 and cat.count("test") == 2
    np.testing.assert_array_equal(cat.read_image(items["path"].iloc[1]), garment("blue"))
    # Reopened in another process (pickled), the same answers.
    clone = pickle.loads(pickle.dumps(cat))
    assert clone.items().equals(items)


def test_matching_finds_whole_target_vectors(synth_db):
    cat = Catalog.open(synth_db)
    assert cat.matching({"color": "red", "sleeve": "long"}) == ["s0", "s2", "s4"]
    assert cat.matching({"color": "red", "sleeve": "long"}, split="train") == ["s0", "s2"]
    assert cat.matching({"color": "red", "sleeve": "long"}, limit=1) == ["s0"]
    assert cat.matching({"color": "blue", "sleeve": "sleeveless"}) == []
    assert cat.matching(np.array([1, 0])) == ["s5"]  # value indices work too
    assert cat.matching({"color": "blue"}) == ["s1", "s5"]  # an attribute left out is free
    assert cat.matching({"color": "red", "sleeve": "long"}, category="tee") == []
    with pytest.raises(UserError, match="unknown color value 'navy'"):
        cat.matching({"color": "navy", "sleeve": "long"})
    with pytest.raises(UserError, match="unknown attribute 'fit'"):
        cat.matching({"fit": "slim"})
    # The whole-vector lookup is an index search, not a table scan.
    plan = " ".join(str(r) for r in cat.conn.execute(
        'EXPLAIN QUERY PLAN SELECT id FROM items WHERE "color" = ? AND "sleeve" = ?', ["red", "long"]))
    assert "USING INDEX" in plan or "USING COVERING INDEX" in plan


def test_counts_per_split_and_value(synth_db):
    counts = Catalog.open(synth_db).counts()
    assert list(counts) == ["train", "test", "all"]
    assert counts["train"]["items"] == 4 and counts["all"]["items"] == 6
    assert counts["train"]["values"]["color"] == {"red": 2, "blue": 2, "green": 0}
    assert counts["test"]["values"]["sleeve"] == {"long": 1, "short": 0, "sleeveless": 1}
    assert counts["all"]["missing"] == {"color": 0, "sleeve": 0}


def test_missing_values_and_lookup(tmp_path):
    folder = tmp_path / "cat"
    save_image(folder / "a.png", garment("red"))
    save_image(folder / "b.png", garment("blue"))
    (folder / "items.csv").write_text(
        "id,path,split,color,sleeve,gender\na,a.png,train,red,,female\nb,b.png,test,blue,long,male\n")
    cat = import_catalog("csv", folder / "items.csv", tmp_path / "c.db", progress=False)
    items = cat.items()
    assert items["sleeve"].iloc[0] is None
    assert cat.labels(items).tolist() == [[1, -1], [0, 0]]  # sorted values: blue, red
    assert cat.matching({"sleeve": None}) == ["a"]
    assert cat.matching({"color": "blue"}, gender="male") == ["b"]
    assert cat.counts()["all"]["missing"]["sleeve"] == 1
    assert list(cat.lookup(["b", "a"])["id"]) == ["b", "a"]
    with pytest.raises(UserError, match="no item with id 'zz'"):
        cat.lookup(["zz"])


def test_failed_import_leaves_the_existing_db_intact(synth_db, tmp_path):
    before = synth_db.read_bytes()
    bad = write_synthetic(tmp_path / "bad")
    (bad / "images" / "s2.png").unlink()
    with pytest.raises(UserError, match="s2.png does not exist"):
        import_catalog("synthetic", bad, synth_db, progress=False)
    assert synth_db.read_bytes() == before
    assert Catalog.open(synth_db).count() == 6
    assert files(tmp_path) == ["bad", "catalog.db", "synth"]  # no temp left


def test_a_write_that_fails_midway_leaves_no_db(tmp_path, monkeypatch):
    import sqlite_utils.db

    src = write_synthetic(tmp_path / "synth")

    def broken_index(*args, **kwargs):
        raise RuntimeError("disk full")


    monkeypatch.setattr(sqlite_utils.db.Table, "create_index", broken_index)
    with pytest.raises(RuntimeError, match="disk full"):
        import_catalog("synthetic", src, tmp_path / "new.db", progress=False)
    assert not (tmp_path / "new.db").exists()
    assert files(tmp_path) == ["synth"]


def test_open_refuses_what_is_not_a_catalog(tmp_path):
    with pytest.raises(UserError, match="no such catalog DB"):
        Catalog.open(tmp_path / "nothing.db")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UserError, match="junk.db: not a catalog DB"):
        Catalog.open(tmp_path / "junk.db")
    conn = sqlite3.connect(tmp_path / "other.db")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="other.db: not a catalog DB"):
        Catalog.open(tmp_path / "other.db")


# ---------------------------------------------------------------------------------------------
# CatalogImages
# ---------------------------------------------------------------------------------------------

def test_catalog_images_items_labels_and_tensors(synth_db):
    ds = CatalogImages(synth_db, split="train", size=32)
    assert len(ds) == 4 and list(ds.items["id"]) == ["s0", "s1", "s2", "s5"]
    assert ds.labels.tolist() == [[0, 0], [1, 1], [0, 0], [1, 0]]
    image, labels = ds[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == [1, 1]
    assert 0.0 <= image.min() and image.max() <= 1.0
    # fit_square keeps the 40x30 aspect ratio: white padding left and right, blue in the middle.
    assert torch.all(image[:, :, 0] == 1.0) and torch.all(image[:, :, -1] == 1.0)
    centre = image[:, 16, 16] * 255
    assert centre[2] > 180 and centre[0] < 60


def test_catalog_images_in_dataloader_workers(synth_db):
    ds = pickle.loads(pickle.dumps(CatalogImages(synth_db, size=16)))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batches = list(loader)
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.shape == (6, 3, 16, 16)
    assert labels.tolist() == ds.labels.tolist()
    np.testing.assert_allclose(images[3].numpy(), ds[3][0].numpy())


def test_augmentation_cannot_change_a_label(synth_db):
    torch.manual_seed(0)
    plain = CatalogImages(synth_db, size=64)
    aug = CatalogImages(synth_db, size=64, augment=True)
    changed = 0
    for i in range(len(plain)):
        for _ in range(4):
            image, labels = aug[i]
            assert image.shape == (3, 64, 64)
            assert labels.tolist() == plain.labels[i].tolist()
            changed += int(not torch.equal(image, plain[i][0]))
            # No color jitter: every non-white pixel keeps the garment's color (bilinear edges aside).
            px = (image.permute(1, 2, 0).reshape(-1, 3) * 255).numpy()
            garment_px = px[(np.abs(px - 255).max(1) > 60)]
            color = plain.items["color"].iloc[i]
            dominant = np.median(garment_px, axis=0)
            assert np.abs(dominant - RGB[color]).max() < 8
            # The block is moved a little, never cut off: same amount of garment within 8% scale.
            assert 0.8 < len(garment_px) / (np.abs((plain[i][0].permute(1, 2, 0).reshape(-1, 3)
                                                    * 255).numpy() - 255).max(1) > 60).sum() < 1.25
    assert changed > 0


def test_catalog_images_read_g2_rows(tmp_path):
    """The DataLoader path for DeepFashion-Synthesis: h5 rows opened lazily per worker."""
    import h5py
    import scipy.io

    folder = tmp_path / "dfs"
    folder.mkdir()
    n = 4
    cells = np.empty((n, 1), dtype=object)
    for i in range(n):
        cells[i, 0] = np.array([f"img/x/{i}.jpg"])
    scipy.io.savemat(str(folder / "language_original.mat"), {
        "color_": np.array([[1], [2], [3], [1]], np.uint8), "sleeve_": np.array([[1], [2], [3], [4]], np.uint8),
        "cate_new": np.ones((n, 1), np.uint8), "gender_": np.zeros((n, 1), np.uint8), "nameList": cells})
    scipy.io.savemat(str(folder / "ind.mat"), {"train_ind": np.array([[1], [2], [3]], np.int32),
                                               "test_ind": np.array([[4]], np.int32)})
    img = np.zeros((n, 16, 8, 3), np.float32)  # (N, H, W, C)
    img[:, :4, :4, 0] = 1.0  # red top-left
    with h5py.File(folder / "G2.h5", "w") as f:
        f["ih"] = img.transpose(0, 3, 2, 1) - 0.1  # (N, 3, W, H), mean removed
        f["ih_mean"] = np.full((3, 8, 16), 0.1, np.float32)
    import_catalog("deepfashion-synthesis", folder, tmp_path / "d.db", progress=False)
    ds = CatalogImages(tmp_path / "d.db", split="train", size=16)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    images, labels = next(iter(loader))
    assert labels.tolist() == [[0, 0], [1, 1], [2, 2]]
    # 16x8 fit into 16x16: white bands left and right, the red corner at the picture's top-left.
    assert torch.all(images[:, :, :, 0] == 1.0)
    assert images[0, 0, 1, 5] > 0.9 and images[0, 1, 1, 5] < 0.1
    assert images[0, 0, 14, 9] < 0.1
    with pytest.raises(UserError, match=r"G2.h5: row 4 out of range \(4 images\)"):
        ds.catalog.read_image("G2.h5#4")
    assert ds.catalog.resolve("G2.h5#2") == Path(f"{(folder / 'G2.h5').resolve()}#2")  # row kept
    # A catalog folder that moved: the root can be given when opening.
    with pytest.raises(UserError, match="nowhere/G2.h5: no such file"):
        Catalog.open(tmp_path / "d.db", root=tmp_path / "nowhere").read_image("G2.h5#0")
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert Catalog.open(tmp_path / "d.db", root=moved).read_image("G2.h5#0").shape == (16, 8, 3)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_import_and_info(tmp_path):
    src = write_synthetic(tmp_path / "synth")
    db = tmp_path / "c.db"
    result = run("catalog", "import", "--format", "synthetic", src, "--db", db, "--quiet")
    assert result.exit_code == 0, result.output
    assert "6 items (train 4, test 2)" in result.output
    result = run("catalog", "info", "--db", db)
    assert result.exit_code == 0, result.output
    assert "synthetic catalog, 6 items" in result.output
    assert "sleeveless" in result.output
    result = run("catalog", "info", "--db", db, "--json")
    info = json.loads(result.output)
    assert info["counts"]["train"]["values"]["color"]["red"] == 2
    assert info["schema"] == SCHEMA


@pytest.mark.parametrize("args, message", [
    (["catalog", "info", "--db", "{tmp}/none.db"], "none.db: no such catalog DB"),
    (["catalog", "import", "--format", "csv", "{tmp}/missing", "--db", "{tmp}/c.db"],
     "missing: no such file or folder"),
    (["catalog", "import", "--format", "synthetic", "{tmp}/bad", "--db", "{tmp}/c.db"], "catalog.csv:2"),
    (["catalog", "import", "--format", "shopping100k", "{tmp}/bad", "--db", "{tmp}/c.db"],
     "attr_num.txt: no such file"),
    (["catalog", "import", "--format", "deepfashion-synthesis", "{tmp}/bad", "--db", "{tmp}/c.db"],
     "language_original.mat: no such file"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "schema.json").write_text(json.dumps(SCHEMA))
    (bad / "items.csv").write_text("id,path,color\n")
    (bad / "catalog.csv").write_text("id,path,split,color,sleeve\na,/abs.png,train,red,long\n")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message.split(":")[0] in lines[0]
    assert "Traceback" not in result.output
    if "synthetic" in args:
        assert "is absolute" in lines[0]
    assert not (tmp_path / "c.db").exists()


REAL_DFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepfashion-synthesis"


@pytest.mark.slow
@pytest.mark.skipif(not (REAL_DFS / "ind.mat").is_file(), reason="../shared data absent")
def test_cli_info_counts_real_labels_without_g2():
    result = run("catalog", "info", "--format", "deepfashion-synthesis", REAL_DFS, "--json")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)["counts"]
    assert counts["train"]["items"] == 70_000 and counts["test"]["items"] == 8_979
    assert counts["all"]["values"]["sleeve"] == {"long": 32_185, "short": 18_605,
                                                 "sleeveless": 27_560, "unspecified": 629}
    assert counts["all"]["values"]["color"]["multicolor"] == 25_926


def test_cli_formats_are_the_readers_formats():
    from amgan_search.cli import catalog as catalog_cli
    from amgan_search.sources import FORMATS

    assert catalog_cli.FORMATS == FORMATS


def test_cli_info_text_lists_every_value_per_split(synth_db):
    result = run("catalog", "info", "--db", synth_db)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"{synth_db}: synthetic catalog, 6 items",
        "  train 4, test 2",
        "color:             train      test       all",
        "  red                  2         1         3",
        "  blue                 2         0         2",
        "  green                0         1         1",
        "sleeve:            train      test       all",
        "  long                 3         1         4",
        "  short                1         0         1",
        "  sleeveless           0         1         1",
    ]


def test_cli_info_counts_match_the_db(tmp_path):
    src = write_synthetic(tmp_path / "synth")
    assert run("catalog", "import", "--format", "synthetic", src, "--db", tmp_path / "c.db",
               "--quiet").exit_code == 0
    from_db = json.loads(run("catalog", "info", "--db", tmp_path / "c.db", "--json").stdout)
    from_src = json.loads(run("catalog", "info", "--format", "synthetic", src, "--json").stdout)
    assert from_db["counts"] == from_src["counts"]
    result = run("catalog", "info")
    assert result.exit_code == 2 and "give either --db DB, or --format FORMAT SRC" in result.stderr
