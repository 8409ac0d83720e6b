"""The synthetic catalog: deterministic renders with true masks and exact attribute edits."""

import csv
import json
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from amgan_search.errors import UserError
from amgan_search.images import load_image
from amgan_search.schema import (DEFAULT_SCHEMA, HARD_SETTING, SYNTHETIC_COLORS,
                                 SYNTHETIC_NECKLINES, SYNTHETIC_SLEEVES, Schema, synthetic_schema)
from amgan_search.synthetic import (Scene, contact_sheet, load_scene_table, load_scenes, render,
                                    sample_scene, value_counts, write_catalog)

SLEEVES_LONG_TO_NONE = ("long", "three-quarter", "short", "sleeveless")


def test_render_is_a_pure_function_of_scene_and_size():
    scene = sample_scene(3)
    for size in (64, 128):
        a, masks_a = render(scene, size)
        b, masks_b = render(Scene.from_json(scene.to_json()), size)
        assert a.dtype == np.uint8 and a.shape == (size, size, 3)
        assert a.tobytes() == b.tobytes()
        for name in ("garment", "torso", "sleeves", "arms", "person"):
            assert masks_a[name].dtype == bool and masks_a[name].shape == (size, size)
            assert np.array_equal(masks_a[name], masks_b[name])
    assert render(sample_scene(4), 64)[0].tobytes() != render(scene, 64)[0].tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_masks_follow_the_sleeve_length(seed):
    base = sample_scene(seed)
    sleeves, arms = [], []
    for sleeve in SLEEVES_LONG_TO_NONE:
        _, m = render(base.with_attributes(sleeve=sleeve), 64)
        assert np.array_equal(m["garment"], m["torso"] | m["sleeves"])
        assert not (m["garment"] & ~m["person"]).any()
        assert m["torso"].sum() > 200  # the top is a large part of the picture
        sleeves.append(int(m["sleeves"].sum()))
        arms.append(int(m["arms"].sum()))
    assert sleeves[3] == 0  # sleeveless: no fabric on the arms
    assert sleeves[0] > sleeves[1] > sleeves[2] > 0
    assert arms[0] < arms[1] < arms[2] < arms[3]  # more skin as the sleeves shorten


@pytest.mark.parametrize("seed", range(8))
def test_an_edit_changes_only_garment_and_arms(seed):
    schema = synthetic_schema(["color", "sleeve", "pattern"])
    scene = sample_scene(seed, schema)
    rng = np.random.default_rng(seed)
    target = {"color": SYNTHETIC_COLORS[rng.integers(17)],
              "sleeve": SYNTHETIC_SLEEVES[rng.integers(4)]}
    for edit in ({"color": target["color"]}, {"sleeve": target["sleeve"]},
                 {"pattern": "checked"}, target):
        edited = scene.with_attributes(**edit)
        a, ma = render(scene, 64)
        b, mb = render(edited, 64)
        region = ma["garment"] | ma["arms"] | mb["garment"] | mb["arms"]
        changed = (a != b).any(axis=2)
        assert not (changed & ~region).any(), edit
        if edited != scene:
            assert changed.any()
    assert scene.with_attributes(color=scene.attributes["color"]) == scene


@pytest.mark.parametrize("seed", range(4))
def test_neckline_as_an_attribute_draws_the_cut_and_changes_only_the_top(seed):
    hard = synthetic_schema(HARD_SETTING)
    scene = sample_scene(seed, hard)
    assert set(scene.attributes) == set(HARD_SETTING)
    base, masks = render(scene, 64)
    cuts = {}
    for cut in SYNTHETIC_NECKLINES:
        image, m = render(scene.with_attributes(neckline=cut), 64)
        cuts[cut] = m["torso"].sum()
        changed = (image != base).any(axis=2)
        # the cut changes the top and what shows through it, never the arms or the background
        assert not (changed & ~(masks["person"] | m["person"])).any(), cut
        assert not (changed & (masks["arms"] & m["arms"] & ~(masks["torso"] | m["torso"]))).any()
    assert cuts["scoop"] < cuts["crew"]  # the scoop takes the most fabric away
    assert len(set(cuts.values())) == 3


def test_a_neckline_outside_the_schema_is_the_scene_drawn_cut():
    # The same seed under color,sleeve and under the harder setting: the cut of the first is the
    # scene's own nuisance `neckline`, the second draws it as an attribute value.
    plain = sample_scene(11)
    assert "neckline" not in plain.attributes
    image, m_plain = render(plain, 64)
    labelled = Scene(attribute_values=(*plain.attribute_values, ("neckline", plain.neckline)),
                     **{k: v for k, v in vars(plain).items() if k != "attribute_values"})
    same, m_labelled = render(labelled, 64)
    assert np.array_equal(m_plain["torso"], m_labelled["torso"])
    assert same.tobytes() == image.tobytes()
    other = next(c for c in SYNTHETIC_NECKLINES if c != plain.neckline)
    assert render(labelled.with_attributes(neckline=other), 64)[0].tobytes() != image.tobytes()


def test_with_attributes_rejects_unknown_names_and_values():
    scene = sample_scene(0)
    with pytest.raises(UserError, match="valid: color, sleeve"):
        scene.with_attributes(collar="round")
    with pytest.raises(UserError, match="valid: long, three-quarter, short, sleeveless"):
        scene.with_attributes(sleeve="cap")
    assert scene.with_attributes(sleeve="short").attributes["sleeve"] == "short"


def test_all_17_colors_are_told_apart_by_mean_garment_color():
    # Nearest centroid on the mean RGB of the garment, centroids and tests on disjoint scenes.
    def means(seeds):
        out = np.zeros((len(SYNTHETIC_COLORS), len(seeds), 3))
        for i, color in enumerate(SYNTHETIC_COLORS):
            for j, seed in enumerate(seeds):
                image, m = render(sample_scene(seed).with_attributes(color=color), 48)
                out[i, j] = image[m["garment"]].mean(0)
        return out

    centroids = means(range(12)).mean(1)
    test = means(range(100, 112))
    dist = ((test[:, :, None, :] - centroids[None, None]) ** 2).sum(-1)
    predicted = dist.argmin(-1)
    truth = np.arange(len(SYNTHETIC_COLORS))[:, None]
    assert (predicted == truth).mean() >= 0.95
    assert (predicted[:-1] == truth[:-1]).mean() >= 0.99  # the 16 named hues, multicolor aside
    gaps = np.sqrt(((centroids[:, None] - centroids[None]) ** 2).sum(-1))
    assert gaps[~np.eye(len(gaps), dtype=bool)].min() > 30  # a clear margin between every pair


def test_scene_json_round_trip_and_bad_json():
    scene = sample_scene(np.random.default_rng(5), synthetic_schema(["color", "sleeve", "pattern"]))
    again = Scene.from_json(scene.to_json())
    assert again == scene and hash(again) == hash(scene)
    assert set(scene.attributes) == {"color", "sleeve", "pattern"}
    with pytest.raises(UserError):
        Scene.from_json("{not json")
    broken = json.loads(scene.to_json())
    del broken["skin"]
    with pytest.raises(UserError, match="missing fields"):
        Scene.from_json(json.dumps(broken))


def test_sample_scene_draws_values_uniformly_and_keeps_the_person_across_schemas():
    counts = Counter(sample_scene(s).attributes["sleeve"] for s in range(800))
    assert set(counts) == set(SYNTHETIC_SLEEVES)
    assert min(counts.values()) > 150  # 200 expected each
    assert sample_scene(1).attributes.keys() == set(DEFAULT_SCHEMA.names)
    a = sample_scene(9)
    b = sample_scene(9, synthetic_schema(["color", "sleeve", "pattern"]))
    assert a.skin == b.skin and a.left_elbow == b.left_elbow and a.seed == b.seed
    with pytest.raises(UserError):
        sample_scene(0, Schema.from_dict({"collar": ["round"]}))


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_catalog_is_deterministic_balanced_and_rerenderable(tmp_path):
    a = write_catalog(tmp_path / "a", 40, seed=7, size=32, progress=False)
    b = write_catalog(tmp_path / "b", 40, seed=7, size=32, progress=False)
    c = write_catalog(tmp_path / "c", 40, seed=8, size=32, progress=False)
    files_a = _files(a)
    assert files_a == _files(b)
    assert files_a != _files(c)
    # No leftovers: nothing but the catalogs and their writers' lock files (kept, as filelock does).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.lock", ".b.lock", ".c.lock", "a", "b", "c"]

    with open(a / "catalog.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "path", "split", "color", "sleeve", "scene"]
    assert json.loads((a / "schema.json").read_text()) == DEFAULT_SCHEMA.to_dict()
    for name in ("color", "sleeve"):
        counts = Counter(r[name] for r in rows)
        assert max(counts.values()) - min(counts.values()) <= 1
    assert Counter(r["split"] for r in rows) == {"train": 36, "test": 4}
    assert len({(r["color"], r["sleeve"]) for r in rows}) > 25  # combinations vary

    scenes = load_scenes(a)
    table = load_scene_table(a)
    assert [row.id for row in table] == list(range(40))
    for row, scene in zip(rows[:5], scenes[:5]):
        assert scene.attributes == {"color": row["color"], "sleeve": row["sleeve"]}
        assert np.array_equal(load_image(a / row["path"]), render(scene, 32)[0])


def test_a_process_pool_writes_the_same_bytes(tmp_path):
    one = write_catalog(tmp_path / "one", 24, seed=1, size=32, progress=False, workers=1)
    two = write_catalog(tmp_path / "two", 24, seed=1, size=32, progress=False, workers=2,
                        fmt="png")
    assert _files(one) == _files(two)


def test_write_catalog_jpg_and_pattern(tmp_path):
    out = write_catalog(tmp_path / "j", 12, seed=2, size=32, fmt="jpg",
                        attributes=("color", "sleeve", "pattern"), progress=False)
    table = load_scene_table(out)
    assert all(row.path.endswith(".jpg") for row in table)
    assert load_image(out / table[0].path).shape == (32, 32, 3)
    assert json.loads((out / "schema.json").read_text())["pattern"][0] == "solid"


def test_write_catalog_refuses_bad_input(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    for overwrite in (False, True):  # a folder it did not write is never replaced
        with pytest.raises(UserError, match="files this tool did not write"):
            write_catalog(tmp_path / "full", 4, size=32, progress=False, overwrite=overwrite)
    assert (tmp_path / "full" / "keep.txt").exists()
    with pytest.raises(UserError, match="positive|whole number in 1"):
        write_catalog(tmp_path / "zero", 0, progress=False)
    with pytest.raises(UserError, match="unknown synthetic attribute"):
        write_catalog(tmp_path / "bad", 4, attributes=("color", "collar"), progress=False)
    with pytest.raises(UserError, match="format"):
        write_catalog(tmp_path / "bad", 4, fmt="gif", progress=False)
    assert not (tmp_path / "zero").exists() and not (tmp_path / "bad").exists()


def test_value_counts_list_every_value_of_the_catalog_attributes(tmp_path):
    out = write_catalog(tmp_path / "c", 10, seed=4, size=32, attributes=("sleeve",),
                        test_fraction=0.2, progress=False)
    counts = value_counts(load_scene_table(out))
    assert list(counts) == ["split", "sleeve"]
    assert counts["split"] == {"train": 8, "test": 2}
    assert list(counts["sleeve"]) == list(SYNTHETIC_SLEEVES)
    assert sorted(counts["sleeve"].values()) == [2, 2, 3, 3]


def test_contact_sheet_has_a_row_per_value(tmp_path):
    scenes = [sample_scene(s) for s in range(40)]
    out = contact_sheet(scenes, tmp_path / "sheet.png", per_row=3, size=24)
    sheet = load_image(out)
    values = {s.attributes["color"] for s in scenes} | {s.attributes["sleeve"] for s in scenes}
    assert sheet.shape[0] == 24 * len(values)


def test_cli_synth_and_sheet(tmp_path):
    from amgan_search.cli.main import cli

    runner = CliRunner()
    out = tmp_path / "cat"
    result = runner.invoke(cli, ["catalog", "synth", str(out), "--n", "34", "--size", "32",
                                 "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "34 images" in result.output and "train 31, test 3" in result.output
    assert "red 2" in result.output and "sleeveless" in result.output
    result = runner.invoke(cli, ["catalog", "sheet", str(out), "--out", str(tmp_path / "s.png"),
                                 "--size", "24"])
    assert result.exit_code == 0, result.output
    assert load_image(tmp_path / "s.png").shape[0] == 24 * (17 + 4)

    for args in (["--n", "0"], ["--attributes", "color,collar"], ["--format", "gif"], []):
        result = runner.invoke(cli, ["catalog", "synth", str(out), "--size", "32", "--n", "4",
                                     *args])
        assert result.exit_code == 2, (args, result.output)
        # One error line: ours ("error:"), or click's own below its usage line ("Error:").
        errors = [x for x in result.output.splitlines() if x.lower().startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "--force" in result.output  # the CLI names its flag; the library does not
