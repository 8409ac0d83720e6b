"""`amgan-search compare` and its table, on hand-made records with known answers: a gallery of
seven items, two query images, three methods (real, amgan, oracle) and amgan's edit records."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.index.evaluate.compare import models as compare_models, run as compare_run
from amgan_search.index.evaluate.table import comparison_table, fmt, write_comparison
from amgan_search.schema import Schema
from builders import assert_refused, run

SCHEMA = Schema.from_dict({"color": ["red", "green", "blue", "white"], "sleeve": ["long", "short"]})
# The gallery: the two query images are in it (and never their own results).
GALLERY = {"q1": [0, 0], "q2": [1, 1], "g1": [1, 0], "g2": [0, 1], "g3": [2, 0], "g4": [2, 1],
           "g5": [1, 0]}
IDS, LABELS = list(GALLERY), np.array(list(GALLERY.values()))
# (query, attribute, target, what amgan retrieves, cam's reading, indep's, the truth grader's)
QUERIES = [
    ("q1", "color", [1, 0], ["q1", "g2", "g1", "g5"], "green", "green", "green"),
    ("q1", "color", [3, 0], ["g3"], "red", "white", None),  # white: no gallery item, not kept
    ("q1", "sleeve", [0, 1], ["g2", "g4"], "short", None, "short"),
    ("q2", "color", [0, 1], ["g3", "g4", "g1"], "red", "red", "red"),
    ("q2", "sleeve", [1, 0], ["g5", "g1"], "short", None, "long"),
]
OWN = {"q1": {"color": "red", "sleeve": "long"}, "q2": {"color": "green", "sleeve": "short"}}


def _exact(target):
    """Gallery ids with the whole target vector, the query's own excluded later."""
    return [i for i, lab in GALLERY.items() if list(lab) == list(target)]


def benchmark_records() -> list[dict]:
    records = []
    for q, attr, target, found, cam, indep, truth in QUERIES:
        value = SCHEMA.attribute(attr).values[target[SCHEMA.position(attr)]]
        base = {"query": q, "attribute": attr, "target": target}
        records.append({**base, "method": "real", "retrieved": ["g3"] if q == "q1" else ["g4"],
                        "predicted": {"cam": OWN[q][attr], "indep": OWN[q][attr] if attr == "color"
                                      else None}, "truth": dict(OWN[q])})
        records.append({**base, "method": "amgan", "retrieved": found,
                        "predicted": {"cam": cam, "indep": indep}, "truth": {attr: truth}})
        records.append({**base, "method": "oracle", "retrieved": _exact(target) + ["g3"],
                        "predicted": {"cam": value, "indep": value if attr == "color" else None},
                        "truth": {attr: value}})
    for r in records:  # what the benchmark writes beside them
        r["relevance"] = [int((LABELS[IDS.index(i)] == np.array(r["target"])).sum())
                          for i in r["retrieved"]]
    return records


EDITS = [  # scene 0: two edits, scene 1: two edits
    {"scene": 0, "attribute": "color", "source": "red", "target": "green", "l1_edit": 0.1,
     "l1_input": 0.4, "preservation": 0.01, "iou": 0.5},
    {"scene": 0, "attribute": "sleeve", "source": "long", "target": "short", "l1_edit": 0.2,
     "l1_input": 0.4, "preservation": 0.02, "iou": 0.7},
    {"scene": 1, "attribute": "color", "source": "blue", "target": "red", "l1_edit": 0.3,
     "l1_input": 0.6, "preservation": 0.03, "iou": 0.1},
    {"scene": 1, "attribute": "sleeve", "source": "short", "target": "long", "l1_edit": 0.0,
     "l1_input": 0.2, "preservation": 0.04, "iou": 0.3},
]


def table(**kw) -> dict:
    return comparison_table(benchmark_records(), {"amgan": EDITS}, SCHEMA, [1, 5, 10, 30],
                            ["cam", "indep"], gallery_ids=IDS, gallery_labels=LABELS,
                            methods=["real", "amgan", "oracle"], **kw)


def est(iv):
    return None if iv is None else iv["estimate"]


def _dcg(rels):
    return sum((2 ** r - 1) / math.log2(i + 2) for i, r in enumerate(rels))


def _ndcg(ranked, gallery_rels):
    return _dcg(ranked) / _dcg(sorted(gallery_rels, reverse=True))


def test_accuracy_by_every_grader_and_by_the_truth_grader():
    t = table()
    amgan = t["methods"]["amgan"]
    # cam: color green ok, white read as red, red ok -> 2/3; sleeve short ok, long read short -> 1/2
    cam = amgan["accuracy"]["cam"]
    assert est(cam["color"]) == pytest.approx(2 / 3) and est(cam["sleeve"]) == pytest.approx(0.5)
    assert est(cam["mean"]) == pytest.approx((2 / 3 + 0.5) / 2)
    # indep reads no sleeve: only color counts, and the mean is color's
    indep = amgan["accuracy"]["indep"]
    assert "sleeve" not in indep and est(indep["color"]) == 1.0 and est(indep["mean"]) == 1.0
    # truth: white unread counts as wrong (2/3); sleeve 2/2
    truth = amgan["truth_accuracy"]
    assert est(truth["color"]) == pytest.approx(2 / 3) and est(truth["sleeve"]) == 1.0
    assert est(truth["mean"]) == pytest.approx(5 / 6)
    # the floor reads the query's own values, never a target; the ceiling reads every target
    assert est(t["methods"]["real"]["accuracy"]["cam"]["mean"]) == 0.0
    assert est(t["methods"]["real"]["truth_accuracy"]["mean"]) == 0.0
    assert est(t["methods"]["oracle"]["accuracy"]["cam"]["mean"]) == 1.0
    assert est(t["methods"]["oracle"]["truth_accuracy"]["mean"]) == 1.0


def test_unreadable_edits_are_wrong_for_the_truth_grader_and_unread_attributes_left_out():
    from amgan_search.index.evaluate.table import _Bootstrap, accuracy

    records = [{"query": "q1", "attribute": "color", "target": [1, 0],
                "predicted": {"cam": None}, "truth": {"color": None}},
               {"query": "q2", "attribute": "sleeve", "target": [1, 0],
                "predicted": {"cam": "long"}, "truth": {"sleeve": "long"}}]
    truth = accuracy(records, SCHEMA, "truth", _Bootstrap(n_boot=50))
    assert est(truth["color"]) == 0.0 and est(truth["sleeve"]) == 1.0 and est(truth["mean"]) == 0.5
    cam = accuracy(records, SCHEMA, "cam", _Bootstrap(n_boot=50))
    assert "color" not in cam and est(cam["mean"]) == 1.0
    assert accuracy(records, SCHEMA, "indep", _Bootstrap(n_boot=50)) is None


def test_retrieval_numbers_over_the_kept_queries():
    t = table()
    amgan = t["methods"]["amgan"]
    assert amgan["records"] == 5 and amgan["kept"] == 4 and amgan["queries"] == 2
    # first exact match at ranks 2 (own q1 dropped), 1, none, 1
    assert est(amgan["topk"]["1"]) == 0.5 and est(amgan["topk"]["5"]) == 0.75
    assert est(amgan["mrr"]) == pytest.approx((1 / 2 + 1 + 0 + 1) / 4)
    # NDCG@30 by hand: relevance = attributes of the target matched, the ideal over the gallery
    # without the query's own item.
    def gallery_rels(q, target):
        return [int((np.array(lab) == np.array(target)).sum()) for i, lab in GALLERY.items()
                if i != q]

    expected = np.mean([
        _ndcg([0, 2, 2], gallery_rels("q1", [1, 0])),
        _ndcg([2, 1], gallery_rels("q1", [0, 1])),
        _ndcg([0, 1, 0], gallery_rels("q2", [0, 1])),  # blue long, blue short, green long
        _ndcg([2, 2], gallery_rels("q2", [1, 0])),
    ])
    assert est(amgan["ndcg@30"]) == pytest.approx(expected)
    real, oracle = t["methods"]["real"], t["methods"]["oracle"]
    assert est(real["topk"]["30"]) == 0.0 and est(real["mrr"]) == 0.0
    assert est(oracle["topk"]["1"]) == 1.0 and est(oracle["mrr"]) == 1.0
    # chance: matches per kept target 2, 1, 1, 2 among the 6 others; random top-30 holds them all
    assert t["matches_per_target"] == 1.5 and t["chance_top30"] == 1.0
    assert t["queries"] == 2 and t["edit_scenes"] == 2 and t["gallery"] == 7


def test_edit_quality_from_the_edit_records_and_dashes_for_real_and_oracle():
    t = table()
    amgan = t["methods"]["amgan"]
    assert est(amgan["fidelity_reduction"]) == pytest.approx(1 - 0.6 / 1.6)
    assert est(amgan["preservation"]) == pytest.approx(0.025)
    assert est(amgan["attention_iou"]) == pytest.approx(0.4)
    assert amgan["scenes"] == 2 and amgan["edits"] == 4
    for m in ("real", "oracle"):
        assert t["methods"][m]["fidelity_reduction"] is None


def _intervals(obj):
    if isinstance(obj, dict) and "estimate" in obj:
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _intervals(v)


def test_every_interval_is_present_and_ordered():
    t = table()
    found = list(_intervals(t["methods"]))
    assert len(found) > 40
    for iv in found:
        assert iv["low"] is not None and iv["low"] <= iv["estimate"] <= iv["high"], iv
    # two query images resampled: amgan's top-1 draws are 0/2, 1/2... (q2 alone: 1/2, q1 alone:
    # 1/2): 0.5 always; cam's color accuracy ranges over whole queries' 1/2 and 1.
    assert fmt(t["methods"]["amgan"]["topk"]["1"]) == "0.500 [0.500, 0.500]"
    cam = t["methods"]["amgan"]["accuracy"]["cam"]["color"]
    assert cam["low"] == 0.5 and cam["high"] == 1.0
    assert table() == t  # seeded: the same numbers every time


def test_write_comparison_md_json_png(tmp_path):
    run = {"step": 500, "iters": 10000, "sample": 2, "sample_seed": 0, "edit_seed": 777,
           "commands": ["amgan-search compare --step 500"]}
    t = table(run=run)
    write_comparison(tmp_path, t)
    md = (tmp_path / "comparison.md").read_text()
    for m in ("real", "amgan", "oracle"):
        assert f"| {m} |" in md
    assert "iteration 500 of the 10000 planned" in md and "2 query images" in md
    assert "2 synthetic scenes" in md and "amgan-search compare --step 500" in md
    assert "1.5 gallery items match" in md
    assert f"| amgan | {fmt(t['methods']['amgan']['fidelity_reduction'])} |" in md
    assert "| real | - | - | - |" in md
    assert json.loads((tmp_path / "comparison.json").read_text())["methods"]["amgan"]["kept"] == 4
    from PIL import Image

    assert Image.open(tmp_path / "comparison.png").size[0] > 300


# -- the command ---------------------------------------------------------------------------------


def fake_checkpoint(run_dir: Path, *steps: int) -> None:
    """Checkpoint folders the step logic reads (no weights inside: nothing loads them)."""
    root = run_dir / "checkpoints"
    for step in steps:
        (root / f"step-{step:07d}").mkdir(parents=True)
        for name in ("model.safetensors", "state.pt"):
            (root / f"step-{step:07d}" / name).write_bytes(b"x")
    (root / "latest").write_text(f"step-{max(steps):07d}\n")


def fake_model(folder: Path, method: str, step: int) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "amgan", "method": method,
                                                    "iterations": step}))
    (folder / "model.safetensors").write_bytes(b"x")


def compare_args(tmp_path, *more):
    return ("compare", "--train-db", tmp_path / "train.db", "--db", tmp_path / "test.db",
            "--index", tmp_path / "index", "--runs", tmp_path / "runs", "--out", tmp_path / "out",
            *more)


def test_no_train_names_the_methods_without_a_checkpoint(tmp_path):
    fake_checkpoint(tmp_path / "runs" / "stargan", 500)
    result = run(*compare_args(tmp_path, "--methods", "stargan,amgan,sagan", "--no-train"))
    assert_refused(result, "iteration 500", "amgan, sagan")
    assert "stargan" not in result.output.split("for", 1)[1]
    assert not (tmp_path / "out" / "comparison.md").exists()


def test_a_run_past_the_step_without_its_checkpoint_is_refused(tmp_path):
    fake_checkpoint(tmp_path / "runs" / "stargan", 1500, 2000)
    fake_checkpoint(tmp_path / "runs" / "amgan", 500)
    result = run(*compare_args(tmp_path, "--methods", "stargan,amgan", "--step", "500"))
    assert_refused(result, "iteration 500", "stargan (at 2000)")


def test_unknown_method_is_one_line(tmp_path):
    assert_refused(run(*compare_args(tmp_path, "--methods", "amgan,nope")), "nope")


def _config(tmp_path, **kw) -> compare_models.CompareConfig:
    return compare_models.CompareConfig(train_db="t.db", db="d.db", index="i",
                                     runs=str(tmp_path / "runs"), out=str(tmp_path / "out"), **kw)


def test_the_default_step_is_the_largest_every_method_has(tmp_path):
    runs = tmp_path / "runs"
    fake_checkpoint(runs / "stargan", 1500, 2000)
    fake_checkpoint(runs / "amgan", 1000, 1500)
    fake_model(runs / "models" / "amgan-2000", "amgan", 2000)  # exported before its checkpoint went
    config = _config(tmp_path, methods=["stargan", "amgan"])
    assert compare_models.plan(config) == (2000, [])
    # a method with nothing yet: the smallest step every other has, and it trains to it
    config = _config(tmp_path, methods=["stargan", "amgan", "sagan"])
    assert compare_models.plan(config) == (1500, ["sagan"])
    # nothing anywhere: the planned iterations
    assert compare_models.plan(_config(tmp_path, methods=["ganimation"], iters=300)) == (300,
                                                                                      ["ganimation"])


def _validated(run_dir: Path, scores: dict[int, float]) -> None:
    """A run's log.jsonl with one validation record per iteration (and a training record)."""
    records = [{"event": "train", "iter": 1}] + [
        {"event": "validation", "iter": i, "score": s, "per_attribute": {}}
        for i, s in scores.items()]
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_checkpoint_best_is_the_truths_best_evaluable_one_up_to_the_step(tmp_path):
    runs = tmp_path / "runs"
    fake_checkpoint(runs / "amgan", 1500, 2000)
    fake_model(runs / "models" / "amgan-500", "amgan", 500)
    fake_model(runs / "models" / "amgan-1000", "amgan", 1000)
    _validated(runs / "amgan", {500: 0.3, 1000: 0.5, 1500: 0.4, 2000: 0.9})
    config = _config(tmp_path, methods=["amgan"], pick="best")
    assert compare_models.best_step(config, "amgan", 1500) == 1000  # 2000 is past the budget
    assert compare_models.best_step(config, "amgan", 2000) == 2000
    _validated(runs / "amgan", {500: 0.3, 1000: 0.5, 1500: 0.5, 2000: 0.9})
    assert compare_models.best_step(config, "amgan", 1500) == 1500  # a tie: the later
    # a checkpoint neither kept nor exported cannot be picked, however it scored
    _validated(runs / "amgan", {250: 0.99, 500: 0.3})
    assert compare_models.best_step(config, "amgan", 1500) == 500
    with pytest.raises(UserError, match="no checkpoint up to iteration 400"):
        compare_models.best_step(config, "amgan", 400)
    with pytest.raises(UserError, match="no validation records"):
        _validated(runs / "amgan", {})
        compare_models.best_step(config, "amgan", 1500)
    with pytest.raises(UserError, match="unknown checkpoint pick"):
        _config(tmp_path, methods=["amgan"], pick="last").check()


def test_the_report_names_each_methods_pick():
    from amgan_search.index.evaluate.table import _iteration_line

    line = _iteration_line({"pick": "best", "picked": {"amgan": 4500, "stargan": 5000},
                            "iters": 10000}, 5000)
    assert "best up to iteration 5000 of the 10000 planned" in line
    assert "amgan 4500, stargan 5000" in line
    assert _iteration_line({"pick": "step", "iters": 10000}, 5000).startswith(
        "Every generator evaluated at iteration 5000 of the 10000 planned")


def test_the_training_settings_are_the_drivers_and_the_cam_family_trains_against_the_cam():
    assert [m for m in compare_models.COMPARED if compare_models.needs_cam(m)] == [
        "amgan", "no-dc", "no-perceptual", "no-attention-loss", "cam-as-mask"]
    assert compare_run._flags({"ckpt_every": 500, "bf16": False}) == "--ckpt-every 500 --no-bf16"
    drive = Path(__file__).resolve().parents[1] / "runs" / "compare" / "drive.sh"
    if drive.is_file():  # the background driver's flags, where this checkout has it
        text = drive.read_text()
        train = {k: v for k, v in compare_models.TRAIN.items() if k != "ckpt_every"}
        for flag in (compare_run._flags(train) + " " + compare_run._flags(compare_models.CAM_TRAIN)
                     ).replace("--", "\n--").split("\n")[1:]:
            assert flag.strip() in text, flag
        assert f"CHUNK:-{compare_models.TRAIN['ckpt_every']}" in text


@pytest.mark.slow
def test_the_whole_command_on_exported_models_with_the_evaluations_stubbed(tmp_path, monkeypatch):
    """Everything but the benchmark's and the edits' own work (other modules, tested there)."""
    import pandas as pd

    from builders import index_from_vectors

    runs = tmp_path / "runs"
    fake_model(runs / "models" / "amgan-500", "amgan", 500)
    (runs / "classifier-cam").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (runs / "classifier-cam" / name).write_text("{}")
    vectors = np.eye(len(IDS), 8, dtype=np.float32)
    items = pd.DataFrame({"id": IDS, "path": "x.png", "split": "test"})
    index_from_vectors(tmp_path / "index", vectors, LABELS, items, SCHEMA)

    def benchmark(config, models, spec):
        assert spec == f"cam={runs / 'classifier-cam'}"
        assert list(models) == ["amgan"] and models["amgan"] == runs / "models" / "amgan-500"
        out = Path(config.out) / "benchmark" / "queries.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in benchmark_records()))
        return out

    calls = []
    monkeypatch.setattr(compare_run, "benchmark", benchmark)
    monkeypatch.setattr(compare_run, "_load_graders", lambda spec, device: {"cam": None})
    monkeypatch.setattr(compare_run, "_evaluate_edits",
                        lambda config, model, graders: calls.append(model) or EDITS)
    args = compare_args(tmp_path, "--methods", "amgan", "--no-train", "--quiet")
    result = run(*args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "benchmark", "compare.json", "comparison.json", "comparison.md", "comparison.png", "edits"]
    md = (out / "comparison.md").read_text()
    assert "iteration 500 of the 10000 planned" in md and "--step 500" in md
    assert "| real |" in md and "| oracle |" in md
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["run"]["step"] == 500 and saved["graders"] == ["cam"]
    assert saved["methods"]["amgan"]["edits"] == 4 and len(calls) == 1
    assert len((out / "edits" / "amgan.jsonl").read_text().splitlines()) == 4
    # a rerun keeps the edit records of the same settings, compressed as results are kept
    assert run(*args).exit_code == 0 and len(calls) == 1
    records = out / "edits" / "amgan.jsonl"
    records.with_suffix(".jsonl.gz").write_bytes(gzip.compress(records.read_bytes()))
    records.unlink()
    assert run(*args).exit_code == 0 and len(calls) == 1
    assert json.loads((out / "comparison.json").read_text())["methods"] == saved["methods"]
    # ... and another step is refused: its benchmark records would mix with these
    fake_model(runs / "models" / "amgan-1000", "amgan", 1000)
    other = compare_args(tmp_path, "--methods", "amgan", "--no-train", "--step", "1000")
    assert_refused(run(*other), "compare.json", "another step")


def test_training_resumes_the_runs_with_their_settings(tmp_path, monkeypatch):
    """The configs compare hands the trainers: the runs' settings, the CAM for the AMGAN family,
    resume where a checkpoint exists (the trainers themselves stubbed)."""
    import amgan_search.train.amgan as amgan_trainer
    import amgan_search.train.classifier as classifier_trainer
    import amgan_search.train.export as exporter

    seen = {}
    monkeypatch.setattr(amgan_trainer, "train_amgan", lambda c: seen.setdefault(c.method, c))
    monkeypatch.setattr(classifier_trainer, "train_classifier",
                        lambda c: seen.setdefault("cam", c.resolved()))
    monkeypatch.setattr(exporter, "export_run", lambda run, out, step=None: seen.setdefault(
        "export", (Path(run).name, Path(out).name)))
    config = _config(tmp_path, methods=["stargan", "amgan"], step=1000, progress=False)
    fake_checkpoint(tmp_path / "runs" / "amgan", 500)
    # The amgan run began with its own values (another ckpt_every, another device): kept on resume.
    (tmp_path / "runs" / "amgan" / "train_config.json").write_text(json.dumps(
        {"db": "t.db", "iters": 10000, "ckpt_every": 250, "device": "cpu", "stop_at": 500,
         "method": "amgan", "lambda_p": 10.0}))
    compare_models.ensure_cam(config, log=lambda line: None)
    assert seen["export"] == ("cls-cam", "classifier-cam")
    cam = seen["cam"]
    assert (cam.db, cam.out, cam.role, cam.arch, cam.size, cam.epochs, cam.seed, cam.workers,
            cam.checkpoint_every, cam.resume) == ("t.db", str(tmp_path / "runs" / "cls-cam"),
                                                  "cam", "resnet18", 64, 3, 0, 0, 100, False)
    for method in ("stargan", "amgan"):
        compare_models.train_method(config, method, 1000)
    s, a = seen["stargan"], seen["amgan"]
    assert (s.classifier, s.resume, a.resume) == (None, False, True)
    assert a.classifier == str(tmp_path / "runs" / "classifier-cam")
    for c in (s, a):
        assert (c.db, c.size, c.iters, c.stop_at, c.sample_every, c.seed, c.workers,
                c.threads, c.bf16, c.device) == ("t.db", 64, 10000, 1000, 1000, 0, 0, 1, False,
                                                 "auto")
    assert a.out == str(tmp_path / "runs" / "amgan")
    # every checkpoint graded by the truth on scenes of the evaluation's kind
    assert (s.val_scenes, a.val_scenes) == (32, 32)
    assert s.val_scene_attributes == tuple(config.scene_attributes)
    assert (s.ckpt_every, s.lambda_p, a.ckpt_every, a.lambda_p) == (500, 20.0, 250, 10.0)
    # a run planned for other iterations is another comparison's
    with pytest.raises(UserError, match="planned for 10000 iterations, not 500"):
        compare_models.train_method(_config(tmp_path, methods=["amgan"], iters=500), "amgan", 500)


@pytest.mark.slow
def test_a_real_run_trains_to_the_step_and_exports_there(tmp_path):
    """Two iterations of StarGAN (no classifier needed) trained to the step, each checkpoint
    graded by the truth, and exported."""
    from amgan_search.catalog import import_catalog
    from amgan_search.synthetic import write_catalog

    folder = write_catalog(tmp_path / "synth", n=24, size=64, progress=False, test_fraction=0.2,
                           workers=1)  # 19 training items: one batch of 16
    db = tmp_path / "synth.db"
    import_catalog("synthetic", folder, db, progress=False)
    config = compare_models.CompareConfig(train_db=str(db), db=str(db), index="i",
                                       runs=str(tmp_path / "runs"), out=str(tmp_path / "out"),
                                       methods=["stargan"], iters=2, step=2, progress=False,
                                       scene_attributes=("color", "sleeve"))
    step, behind = compare_models.plan(config)
    assert (step, behind) == (2, ["stargan"])
    picked = compare_models.prepare_models(config, step, behind, log=lambda line: None)
    assert picked == {"stargan": 2}
    model = json.loads((compare_models.model_dir(config, "stargan", 2) / "config.json").read_text())
    assert model["method"] == "stargan" and model["iterations"] == 2
    assert model["exported_from"]["checkpoint"] == "step-0000002"
    best = json.loads((tmp_path / "runs" / "stargan" / "best" / "config.json").read_text())
    assert best["picked_by"]["step"] == 2 and best["picked_by"]["scenes"] == 32
    # Now the step is there: nothing to train, the model is kept.
    assert compare_models.plan(config) == (2, [])
    assert compare_models.prepare_models(config, 2, [], log=lambda line: None) == picked
    # the truth's best up to the step is its only validated checkpoint here
    config.pick = "best"
    assert compare_models.prepare_models(config, 2, [], log=lambda line: None) == picked


def test_also_benchmarks_a_method_beside_them_as_it_is(tmp_path, monkeypatch):
    """--also: a feature-space method gets its row of retrieval beside the trained methods, with no
    training and no edits of its own; the command line that repeats the comparison names it."""
    import pandas as pd

    from builders import index_from_vectors

    runs = tmp_path / "runs"
    fake_model(runs / "models" / "amgan-500", "amgan", 500)
    (runs / "classifier-cam").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (runs / "classifier-cam" / name).write_text("{}")
    index_from_vectors(tmp_path / "index", np.eye(len(IDS), 8, dtype=np.float32), LABELS,
                       pd.DataFrame({"id": IDS, "path": "x.png", "split": "test"}), SCHEMA)
    seen = {}

    def benchmark(config, models, spec):
        seen["also"] = config.also
        records = benchmark_records()
        records += [{**r, "method": "prototype", "predicted": {}, "truth": {}}
                    for r in records if r["method"] == "oracle"]
        out = Path(config.out) / "benchmark" / "queries.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
        return out

    monkeypatch.setattr(compare_run, "benchmark", benchmark)
    monkeypatch.setattr(compare_run, "_load_graders", lambda spec, device: {"cam": None})
    monkeypatch.setattr(compare_run, "_evaluate_edits", lambda config, model, graders: EDITS)
    result = run(*compare_args(tmp_path, "--methods", "amgan", "--also", "prototype",
                               "--no-train", "--quiet"))
    assert result.exit_code == 0, result.output
    assert seen["also"] == "prototype"
    out = tmp_path / "out"
    md = (out / "comparison.md").read_text()
    assert "| prototype |" in md and "--also prototype" in md
    assert sorted(p.name for p in (out / "edits").iterdir()) == ["amgan.json", "amgan.jsonl"]
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["methods"]["prototype"]["topk"] == saved["methods"]["oracle"]["topk"]
    assert not saved["methods"]["prototype"]["has_edits"]
    assert_refused(run(*compare_args(tmp_path, "--methods", "amgan", "--also", "amgan")),
                   "already compared")
