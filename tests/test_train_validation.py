"""Checkpoints graded by the truth during training (`train.validation`): the score on hand-made
summaries, the refusals, and a run that validates: its log, its best/ model, resume, export."""

import json

import pytest
import torch
from click.testing import CliRunner

from amgan_helpers import TinyClassifier, TinyImages, tiny_config
from amgan_search import checkpoint as ckpt
from amgan_search.errors import UserError
from amgan_search.io import read_json
from amgan_search.schema import Schema, synthetic_schema
from amgan_search.train.amgan import train_amgan
from amgan_search.train.export import export_run
from amgan_search.metrics.edits import truth_score
from amgan_search.train.validation import check_validation

SYNTH = synthetic_schema(["color", "sleeve"])


def _summary(**rows):
    return {"per_attribute": {name: {"truth_accuracy": acc, "fidelity_reduction": fid}
                              for name, (acc, fid) in rows.items()}}


def test_the_score_averages_truth_accuracy_and_clipped_fidelity_over_the_graded_attributes():
    assert truth_score(_summary(color=(1.0, 1.0), sleeve=(1.0, 1.0))) == 1.0
    # fidelity below 0 (further from the truth than the input) counts as 0, above 1 as 1
    assert truth_score(_summary(color=(0.5, -0.3))) == pytest.approx(0.25)
    assert truth_score(_summary(color=(0.5, 0.4), sleeve=(0.0, 2.0))) == pytest.approx(
        ((0.5 + 0.4) / 2 + (0.0 + 1.0) / 2) / 2)
    # an attribute the truth grader does not read is left out; none read at all scores 0
    assert truth_score(_summary(color=(0.8, 0.2), pattern=(None, 0.9))) == pytest.approx(0.5)
    assert truth_score(_summary(pattern=(None, 0.9))) == 0.0


def test_validation_refuses_a_catalog_the_renderer_cannot_draw():
    check_validation(SYNTH, None)
    check_validation(SYNTH, ["color", "sleeve", "pattern", "neckline"])
    with pytest.raises(UserError, match="not its"):
        check_validation(Schema.from_dict({"color": ["red", "blue", "green"]}), None)
    with pytest.raises(UserError, match="not its"):
        check_validation(SYNTH, ["color", "pattern"])  # the scenes must hold the model's sleeve
    with pytest.raises(UserError, match="truth grader reads"):
        check_validation(synthetic_schema(["pattern"]), None)


def _train(tmp_path, **kw):
    cfg = tiny_config(tmp_path, iters=4, ckpt_every=2, **kw)
    torch.manual_seed(0)  # the same frozen classifier in every run
    return train_amgan(cfg, dataset=TinyImages(schema=SYNTH),
                       classifier=TinyClassifier(schema=SYNTH))


def _validations(run):
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
            if r.get("event") == "validation"]


@pytest.mark.slow
def test_a_validating_run_logs_every_checkpoint_keeps_the_best_and_trains_the_same(tmp_path):
    run = _train(tmp_path / "a", val_scenes=2)
    records = _validations(run)
    assert [r["iter"] for r in records] == [2, 4]
    for r in records:
        assert set(r["per_attribute"]) == {"color", "sleeve"} and r["scenes"] == 2
        assert 0.0 <= r["score"] <= 1.0
    best = read_json(run / "best" / "config.json")
    top = max(records, key=lambda r: r["score"])  # the first of equal scores stays
    assert best["picked_by"]["step"] == top["iter"] == best["iterations"]
    assert best["picked_by"]["score"] == top["score"]
    ckpt.load_model_dir(run / "best", "amgan")  # a complete model folder, its sums verified

    # Validation draws nothing from the run's random streams: the weights equal a run without it.
    plain = _train(tmp_path / "b")
    a = ckpt.load_weights(run / "model.safetensors")
    b = ckpt.load_weights(plain / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (plain / "best").exists() and not _validations(plain)

    # export --best writes that model elsewhere, saying where it came from
    model = export_run(run, tmp_path / "picked", best=True)
    assert model["picked_by"]["step"] == top["iter"]
    assert model["exported_from"]["checkpoint"] == "best"
    with pytest.raises(UserError, match="no best checkpoint"):
        export_run(plain, tmp_path / "none", best=True)

    # `train validation` reads the records back: a row per checkpoint, the best/ one in bold
    from amgan_search.cli.main import cli

    shown = CliRunner().invoke(cli, ["train", "validation", str(run)])
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].strip("|* ") for row in rows] == ["2", "4"]
    assert [row.startswith("| **") for row in rows] == [r["iter"] == top["iter"] for r in records]
    assert f"{records[1]['score']:.3f}" in rows[1]
    shown = CliRunner().invoke(cli, ["train", "validation", "--json", str(run)])
    assert [json.loads(line) for line in shown.output.splitlines()] == [
        {"run": str(run), **r} for r in records]
    refused = CliRunner().invoke(cli, ["train", "validation", str(plain)])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1
    assert "no validation records" in refused.output


def test_a_resumed_run_compares_against_the_best_of_its_earlier_invocations(tmp_path):
    run = _train(tmp_path, val_scenes=2, stop_at=2)
    first = read_json(run / "best" / "config.json")["picked_by"]
    assert first["step"] == 2
    run = _train(tmp_path, val_scenes=2, resume=True)
    records = _validations(run)
    assert [r["iter"] for r in records] == [2, 4]
    best = read_json(run / "best" / "config.json")["picked_by"]
    assert best["score"] == max(r["score"] for r in records)
    assert best["step"] == (4 if records[1]["score"] > records[0]["score"] else 2)


def test_the_command_refuses_validation_on_a_catalog_the_renderer_cannot_draw(tmp_path):
    from amgan_search.cli.main import cli
    from builders import make_catalog

    db = make_catalog(tmp_path / "cat")  # three colours of its own: not the renderer's values
    result = CliRunner().invoke(cli, [
        "train", "amgan", "--db", str(db), "--out", str(tmp_path / "run"), "--method", "stargan",
        "--size", "32", "--iters", "2", "--val-scenes", "2"])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "validation grades against" in result.output
    assert not (tmp_path / "run" / "checkpoints").exists()
