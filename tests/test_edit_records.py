"""evaluate_edits' per-edit records, several CNN graders, the harder setting's scenes, and grading
at the catalog's resolution (`at_size`), with the `evaluate-edits` options that reach them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amgan_helpers import TinyClassifier
from amgan_search.editors import IdentityEditor, edit_photos
from amgan_search.errors import UserError
from amgan_search.metrics.edits import (RECORD_FLOATS, RECORD_KEYS, evaluate_edits,
                                        markdown_table, scene_schema, summarize)
from amgan_search.metrics.edits import test_seeds as scene_seeds  # not a test: no test_ name
from amgan_search.schema import HARD_SETTING, Schema
from builders import assert_refused, make_classifier, make_manipulator, run

# The tiny manipulator's schema (builders.COLORS, builders.SLEEVES): 2 + 1 edits per scene.
TINY = Schema.from_dict({"color": ["red", "green", "blue"], "sleeve": ["long", "short"]})
# evaluate_edits(tiny manipulator, n=3, seed=11, size=48, batch_size=4) per attribute, computed by
# the code before records existed (one float32 sum per chunk): the old path must still give them.
OLD_NUMBERS = {
    "color": {"n_edits": 6, "l1_edit": 0.13583283374706903, "l1_input": 0.065730436394612,
              "fidelity_reduction": -1.0665134935602438, "l1_edit_changed": 0.05381550888220469,
              "l1_edit_rest_of_figure": 0.0018342570401728153,
              "l1_edit_outside": 0.0801830564936002, "preservation": 0.10052918394406636,
              "attention_iou": 0.1616942659020424, "truth_accuracy": 0.0},
    "sleeve": {"n_edits": 3, "l1_edit": 0.11869708200295766, "l1_input": 0.019714885701735813,
               "fidelity_reduction": -5.020683244057909, "l1_edit_changed": 0.016012705241640408,
               "l1_edit_rest_of_figure": 0.024670008569955826, "l1_edit_outside": 0.07801437129577,
               "preservation": 0.09889268378416698, "attention_iou": 0.07176427294810613,
               "truth_accuracy": 0.0},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny manipulator and a classifier of its schema, as model folders and loaded."""
    from amgan_search.registry import load_model

    root = tmp_path_factory.mktemp("tiny")
    cam = make_classifier(root / "cam")
    gan = make_manipulator(root / "gan", cam)
    return {"root": root, "cam": cam, "gan": gan,
            "judge": load_model(str(cam), "classifier", "cpu"),
            "editor": load_model(str(gan), "editor", "cpu")}


class _Seen(IdentityEditor):
    """No edit, keeping every input it was given."""

    def __init__(self, schema):
        super().__init__(schema)
        self.inputs = []

    def edit_batch(self, x, labels, attribute, target, items=None):
        self.inputs.append(x.clone())
        return super().edit_batch(x, labels, attribute, target)


def test_old_numbers_are_unchanged_without_at_size(tiny):
    result = evaluate_edits(tiny["editor"], {}, n=3, seed=11, size=48, batch_size=4,
                            progress=False)
    for name, old in OLD_NUMBERS.items():
        new = result["per_attribute"][name]
        for key, value in old.items():
            assert new[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, key)
    assert (result["size"], result["at_size"], result["graders"]) == (48, None, [])


def test_one_record_per_edit_and_the_summary_is_computed_from_them(tiny):
    colorblind = TinyClassifier(Schema.from_dict({"color": ["red", "green", "blue"]}))
    graders = {"judge": tiny["judge"], "colorblind": colorblind}
    result = evaluate_edits(tiny["editor"], graders, n=3, seed=4, size=32, batch_size=2,
                            progress=False)
    records = result["records"]
    assert len(records) == 3 * ((3 - 1) + (2 - 1))
    assert all(tuple(r) == RECORD_KEYS for r in records)
    assert sorted({r["scene"] for r in records}) == [0, 1, 2]
    for i in range(3):  # each scene: every value but its own, once
        for name, values in TINY.to_dict().items():
            mine = [r for r in records if r["scene"] == i and r["attribute"] == name]
            assert len({r["source"] for r in mine}) == 1
            assert sorted(r["target"] for r in mine) == sorted(set(values) - {mine[0]["source"]})
    # A grader reads by name: one without sleeve reads no sleeve edit, and has no sleeve accuracy.
    assert all(r["predicted"]["colorblind"] is None for r in records if r["attribute"] == "sleeve")
    assert all(r["predicted"]["colorblind"] in TINY.attribute("color").values
               for r in records if r["attribute"] == "color")
    per = result["per_attribute"]
    assert per["sleeve"]["accuracy"]["colorblind"] is None
    assert result["mean"]["accuracy"]["colorblind"] == per["color"]["accuracy"]["colorblind"]
    assert result["graders"] == ["judge", "colorblind"]
    # The summary, recomputed from the records (through JSON, as a records file holds them).
    again = summarize(json.loads(json.dumps(records)))
    assert again == {"per_attribute": per, "mean": result["mean"]}
    color = [r for r in records if r["attribute"] == "color"]
    assert per["color"]["fidelity_reduction"] == pytest.approx(
        1 - sum(r["l1_edit"] for r in color) / sum(r["l1_input"] for r in color))
    assert per["color"]["accuracy"]["judge"] == pytest.approx(
        np.mean([r["predicted"]["judge"] == r["target"] for r in color]))
    assert per["color"]["attention_iou"] == pytest.approx(np.mean([r["iou"] for r in color]))
    for r in records:  # where the edit's L1 lies adds up to it, edit by edit
        assert sum(r[f"l1_edit_{p}"] for p in ("changed", "rest_of_figure", "outside")) == \
            pytest.approx(r["l1_edit"], rel=1e-5)
    table = markdown_table(result)
    assert "| accuracy (judge) | accuracy (colorblind) | truth accuracy |" in table
    head, rule, row = table.splitlines()[2:5]
    assert head.count("|") == rule.count("|") == row.count("|") == 11  # 10 columns
    assert "| sleeve | 3 |" in table and "| n/a |" in table


def test_no_edit_has_no_fidelity_gain_and_changes_nothing():
    result = evaluate_edits(IdentityEditor(TINY), {}, n=2, seed=1, size=32, progress=False)
    assert result["method"] is None and len(result["records"]) == 2 * 3
    for r in result["records"]:
        assert r["l1_edit"] == r["l1_input"] > 0 and r["preservation"] == 0.0
        assert r["l1_edit_outside"] == 0.0 and r["iou"] in (0.0, 1.0)
    for summary in [*result["per_attribute"].values(), result["mean"]]:
        assert summary["fidelity_reduction"] == 0.0 and summary["preservation"] == 0.0
        assert summary["accuracy"] == {} and summary["truth_accuracy"] == 0.0


def test_scenes_of_the_harder_setting_are_drawn_with_patterns_and_necklines():
    from amgan_search.images import to_tensor
    from amgan_search.synthetic import render, sample_scene

    editor = _Seen(TINY)
    result = evaluate_edits(editor, {}, n=4, seed=3, size=32, progress=False,
                            scene_attributes=HARD_SETTING)
    assert result["scene_attributes"] == list(HARD_SETTING)
    assert {r["attribute"] for r in result["records"]} == {"color", "sleeve"}  # edits: the model's
    assert len(result["records"]) == 4 * 3
    drawn = scene_schema(TINY, HARD_SETTING)
    assert drawn.attribute("color").values == TINY.attribute("color").values  # labels encode
    scenes = [sample_scene(s, drawn) for s in scene_seeds(4, 3)]
    assert {sc.attributes["pattern"] for sc in scenes} != {"solid"}
    assert len({sc.attributes["neckline"] for sc in scenes}) > 1
    # What the editor was given are those scenes' renders.
    seen = {x.numpy().tobytes() for batch in editor.inputs for x in batch}
    for sc in scenes:
        assert to_tensor(render(sc, 32)[0])[0].numpy().tobytes() in seen
    assert "scenes drawn with color, sleeve, pattern, neckline" in markdown_table(result)


def test_scene_attributes_must_hold_the_models_and_be_the_renderers():
    with pytest.raises(UserError, match="'sleeve' is missing"):
        scene_schema(TINY, ["color", "pattern"])
    with pytest.raises(UserError, match="unknown synthetic attribute 'collar'"):
        scene_schema(TINY, ["color", "sleeve", "collar"])
    assert scene_schema(TINY, None) is TINY


def test_at_size_keeps_the_photo_where_nothing_is_edited():
    result = evaluate_edits(IdentityEditor(TINY), {}, n=2, seed=2, size=32, at_size=128,
                            progress=False)
    assert result["size"] == 128 and result["at_size"] == 128
    assert all(r["preservation"] == 0.0 and r["l1_edit"] == r["l1_input"]
               for r in result["records"])
    assert "128x128, composed at the catalog's resolution" in markdown_table(result)


def test_at_size_composes_the_model_size_edit_into_the_full_photo():
    """x* = up(alpha) up(z) + (1 - up(alpha)) x at the photo's size: hand-made alpha and z."""

    class Half:
        size, schema = 16, TINY

        def edit_batch(self, x, labels, attribute, target, items=None):
            alpha = torch.zeros_like(x[:, :1])
            alpha[..., :, :8] = 0.25  # the left half a quarter edited, the right half untouched
            return torch.full_like(x, 0.5), alpha

    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    x_star, alpha = edit_photos(Half(), photos, torch.zeros(2, 2, dtype=torch.long), 0,
                                torch.zeros(2, dtype=torch.long))
    assert x_star.shape == (2, 3, 64, 64) and alpha.shape == (2, 1, 64, 64)
    got = (x_star * 255).round().numpy().transpose(0, 2, 3, 1)
    photo = np.stack(photos).astype(np.float64)
    # The right half, away from the mask's edge, keeps the photo's every pixel.
    assert np.array_equal(got[:, :, 36:], photo[:, :, 36:])
    # The left half: a quarter of mid gray over three quarters of the photo.
    expected = 0.25 * 128 + 0.75 * photo[:, :, :28]
    assert np.abs(got[:, :, :28] - expected).max() <= 1.0
    assert torch.allclose(alpha[..., :28], torch.tensor(0.25))
    assert torch.all(alpha[..., 36:] == 0)


def test_at_size_with_a_model_edits_at_its_size_and_grades_at_the_photos(tiny):
    result = evaluate_edits(tiny["editor"], {"judge": tiny["judge"]}, n=2, seed=6, size=32,
                            at_size=64, progress=False)
    assert result["size"] == 64 and len(result["records"]) == 2 * 3
    assert all(set(r["predicted"]) == {"judge"} for r in result["records"])
    assert all(np.isfinite([r[k] for k in RECORD_FLOATS]).all() for r in result["records"])


# -- the command -------------------------------------------------------------------------------

def _run(*args):
    return run("evaluate-edits", *args)


@pytest.mark.slow
def test_command_writes_records_and_prints_the_summary_without_them(tiny, tmp_path):
    records = tmp_path / "edits.jsonl"
    base = ("--model", tiny["gan"], "--graders", f"mine={tiny['cam']},other={tiny['cam']}",
            "--n", 2, "--size", 32, "--scene-attributes", "color,sleeve,pattern", "--device", "cpu")
    for _ in range(2):  # its own records file is replaced on a rerun
        result = _run(*base, "--records", records, "--json")
        assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert "records" not in summary and summary["graders"] == ["mine", "other"]
    assert summary["scene_attributes"] == ["color", "sleeve", "pattern"]
    assert set(summary["per_attribute"]["color"]["accuracy"]) == {"mine", "other"}
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(lines) == 2 * 3 and tuple(lines[0]) == RECORD_KEYS
    assert summarize(lines)["mean"] == summary["mean"]
    table = _run(*base)
    assert "| accuracy (mine) | accuracy (other) | truth accuracy |" in table.output


def test_command_refuses_what_it_did_not_write_and_contradictions(tiny, tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"mine": 1}\n')
    base = ("--model", tiny["gan"], "--graders", "none", "--n", 2, "--size", 32, "--device", "cpu")
    assert_refused(_run(*base, "--records", notes), "notes.jsonl")
    assert notes.read_text() == '{"mine": 1}\n'
    assert_refused(_run(*base, "--records", tmp_path / "a", "--out", tmp_path / "a"), "both")
    assert_refused(_run(*base, "--eval-classifier", tiny["cam"]), "--graders")
    assert_refused(_run(*base, "--at-size", 64), "--size", "--at-size")
    assert_refused(_run(*base, "--scene-attributes", "color,pattern"), "--scene-attributes",
                   "sleeve")
    assert_refused(_run("--model", tiny["gan"], "--graders", "nowhere", "--n", 2), "nowhere")


def test_the_old_eval_classifier_option_still_names_one_grader(tiny):
    result = _run("--model", tiny["gan"], "--eval-classifier", tiny["cam"], "--n", 2,
                  "--at-size", 32, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "deprecated" in result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["graders"] == ["eval"] and summary["at_size"] == 32 and summary["size"] == 32
