"""The paper's metrics: the pure top-k rule on a hand-built gallery, and the benchmark end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.index.benchmark import BenchmarkConfig, parse_methods, run_benchmark
from amgan_search.metrics.retrieval import (classification_accuracy, parse_ks, query_targets,
                                            retrieval_hits, target_matches, topk_accuracy)
from amgan_search.schema import Schema

SCHEMA = Schema.from_dict({"color": ["red", "green", "blue"], "sleeve": ["long", "short"]})

# gallery: id -> (color, sleeve)
GALLERY = {"a": (0, 0), "b": (0, 1), "c": (1, 0), "d": (2, 1), "e": (1, 0)}


def test_hit_needs_the_whole_target_vector_within_k():
    ids, labels = list(GALLERY), np.array(list(GALLERY.values()))
    targets = np.array([[1, 0],    # c, e have it
                        [0, 1],    # only b
                        [2, 0]])   # nobody: dropped
    retrieved = [["a", "b", "c", "e"],   # first hit at rank 3
                 ["b", "a"],             # hit at rank 1
                 ["a", "b"]]
    kept, hits = retrieval_hits(targets, retrieved, ids, labels, ks=[1, 2, 3])
    assert kept.tolist() == [True, True, False]
    assert hits.tolist() == [[False, False, True], [True, True, True], [False, False, False]]
    assert topk_accuracy(kept, hits, [1, 2, 3]) == {1: 0.5, 2: 0.5, 3: 1.0}


def test_own_item_is_neither_gallery_nor_result():
    ids, labels = list(GALLERY), np.array(list(GALLERY.values()))
    # target (red, long): only "a" has it. When "a" is the query's own item, no gallery item
    # other than itself has the target, so the query is dropped.
    kept, _ = retrieval_hits(np.array([[0, 0]]), [["a"]], ids, labels, ks=[1], own_ids=["a"])
    assert kept.tolist() == [False]
    # target (green, long): c and e. Query's own item "c" listed first is dropped before the cut,
    # so "e" moves up to rank 1; without own-item exclusion "c" itself would have been the hit.
    kept, hits = retrieval_hits(np.array([[1, 0], [1, 0]]), [["c", "a", "e"], ["c", "a", "e"]],
                                ids, labels, ks=[1, 2], own_ids=["c", None])
    assert kept.tolist() == [True, True]
    assert hits.tolist() == [[False, True], [True, True]]


def test_missing_target_entries_constrain_nothing():
    labels = np.array(list(GALLERY.values()))
    assert target_matches([2, -1], labels).tolist() == [False, False, False, True, False]
    assert target_matches([-1, 0], labels).sum() == 3


def test_every_other_value_of_every_attribute_is_a_query():
    queries = query_targets(np.array([1, 0]), SCHEMA)
    assert [(j, v) for j, v, _ in queries] == [(0, 0), (0, 2), (1, 1)]
    assert [t.tolist() for _, _, t in queries] == [[0, 0], [2, 0], [1, 1]]


def test_classification_accuracy_per_attribute_and_average():
    targets = np.array([[0, 0], [2, 0], [1, 1], [1, 1]])
    attributes = [0, 0, 1, 1]
    predicted = [0, 1, 1, 0]  # the manipulated attribute's predicted value
    acc = classification_accuracy(predicted, targets, attributes, SCHEMA)
    assert acc == {"color": 0.5, "sleeve": 0.5, "average": 0.5}
    acc = classification_accuracy([0, 2, 1, 1], targets, attributes, SCHEMA)
    assert acc["average"] == 1.0


def test_bad_method_and_k_specs():
    with pytest.raises(UserError, match="unknown method 'gan'"):
        parse_methods("real,gan")
    with pytest.raises(UserError, match="appears twice"):
        parse_methods("real,real")
    with pytest.raises(UserError, match="comma-separated integers"):
        parse_ks("1,x")
    assert parse_ks("50,1,5") == [1, 5, 50]


def test_the_cli_names_the_flag_of_a_bad_method_or_k(tmp_path):
    """The library names the value; the benchmark command adds the flag it came from."""
    from click.testing import CliRunner

    from amgan_search.cli.main import cli

    base = ["benchmark", "--db", str(tmp_path / "x.db"), "--index", str(tmp_path), "--out",
            str(tmp_path / "out")]
    result = CliRunner().invoke(cli, base + ["--k", "1,x"])
    assert result.exit_code == 2
    assert "error: --k: expected comma-separated integers, got '1,x'" in result.output
    result = CliRunner().invoke(cli, base + ["--methods", "real,gan"])
    assert result.exit_code == 2 and "error: --methods: unknown method 'gan'" in result.output


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from builders import make_classifier, tiny_world

    world = tiny_world(tmp_path_factory.mktemp("bench"))
    return {**world, "eval": make_classifier(world["root"] / "eval", 5, "eval")}


def _run(bench, out, methods):
    return run_benchmark(BenchmarkConfig(
        db=str(bench["db"]), index=str(bench["index"]), out=str(out),
        methods=parse_methods(methods), ks=[1, 5, 10], eval_classifier=str(bench["eval"]),
        batch_size=4, device="cpu", progress=False))


def test_benchmark_writes_four_outputs_and_resumes(bench, tmp_path):
    from amgan_search.index.search import Searcher

    out = tmp_path / "run"
    summary = _run(bench, out, f"real,tiny={bench['gan']}")
    for name in ("queries.jsonl", "summary.json", "summary.md", "topk.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    lines = (out / "queries.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    # 6 test items x ((3 - 1) colors + (2 - 1) sleeves) = 18 queries per method
    assert len(records) == 36 and summary["methods"]["real"]["queries"] == 18
    for r in records:
        assert r["query"] not in r["retrieved"] and len(r["retrieved"]) == 10
    # the summary agrees with the pure metric on the records
    searcher = Searcher(bench["index"], use_gpu=False)
    real = [r for r in records if r["method"] == "real"]
    kept, hits = retrieval_hits(np.array([r["target"] for r in real]), [r["retrieved"] for r in real],
                                searcher.ids, searcher.labels, [1, 5, 10], [r["query"] for r in real])
    assert summary["methods"]["real"]["kept"] == int(kept.sum())
    assert summary["methods"]["real"]["topk"]["10"] == pytest.approx(hits[kept, 2].mean())
    assert set(summary["methods"]["tiny"]["classification"]) == {"color", "sleeve", "average"}
    md = (out / "summary.md").read_text()
    assert "| tiny |" in md and "top-10" in md

    # a kill mid-run: half the records and a cut line remain; a rerun finishes the rest
    (out / "queries.jsonl").write_text("\n".join(lines[:20]) + "\n" + lines[20][:15])
    again = _run(bench, out, f"real,tiny={bench['gan']}")
    resumed = (out / "queries.jsonl").read_text().splitlines()
    assert resumed[:20] == lines[:20] and len(resumed) == 36
    keys = {(r["query"], r["method"], r["attribute"], tuple(r["target"]))
            for r in map(json.loads, resumed)}
    assert len(keys) == 36
    assert again["methods"] == summary["methods"]


def test_benchmark_refuses_to_mix_runs(bench, tmp_path):
    out = tmp_path / "run"
    _run(bench, out, "real")
    with pytest.raises(UserError, match="another limit"):
        run_benchmark(BenchmarkConfig(db=str(bench["db"]), index=str(bench["index"]), out=str(out),
                                      methods=parse_methods("real"), ks=[1, 5, 10], limit=2,
                                      eval_classifier=None, device="cpu", progress=False))


def test_oracle_needs_a_synthetic_catalog(bench, tmp_path):
    with pytest.raises(UserError, match="oracle method needs a synthetic catalog"):
        _run(bench, tmp_path / "o", "oracle")


def test_oracle_edits_are_the_true_renders(tmp_path):
    """On a synthetic catalog the oracle query is the scene re-rendered with the target value."""

    import torch

    from amgan_search.catalog import import_catalog
    from amgan_search.checkpoint import save_model_dir
    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA
    from amgan_search.synthetic import write_catalog

    folder = write_catalog(tmp_path / "synth", n=30, size=32, progress=False, test_fraction=0.2, workers=1)
    db = tmp_path / "synth.db"
    import_catalog("synthetic", folder, db, progress=False)
    torch.manual_seed(0)
    model = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32)
    save_model_dir(tmp_path / "cam", model.config, model.state_dict())
    build_index(db, tmp_path / "index", load_embedder(tmp_path / "cam", device="cpu"), workers=0,
                progress=False)
    summary = run_benchmark(BenchmarkConfig(
        db=str(db), index=str(tmp_path / "index"), out=str(tmp_path / "run"),
        methods=parse_methods("real,oracle"), ks=[1, 5, 30], limit=2, eval_classifier=None,
        device="cpu", progress=False))
    # 2 inputs x (16 colors + 3 sleeves) targets each
    assert summary["methods"]["oracle"]["queries"] == 38 == summary["methods"]["real"]["queries"]
    records = [json.loads(l) for l in (tmp_path / "run" / "queries.jsonl").read_text().splitlines()]
    real = {(r["query"], r["attribute"], tuple(r["target"])): r["retrieved"] for r in records
            if r["method"] == "real"}
    oracle = {(r["query"], r["attribute"], tuple(r["target"])): r["retrieved"] for r in records
              if r["method"] == "oracle"}
    assert real.keys() == oracle.keys()
    # the unedited query retrieves the same list for every target; the true edits do not
    assert len({tuple(v) for v in oracle.values()}) > len({tuple(v) for v in real.values()})
