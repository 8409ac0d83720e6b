"""The paper's metrics: the pure top-k rule on a hand-built gallery, and the benchmark end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.index.evaluate.benchmark import BenchmarkConfig, run_benchmark
from amgan_search.index.methods import parse_methods
from amgan_search.metrics.retrieval import (classification_accuracy, dcg, method_metrics, ndcg,
                                            parse_ks, query_targets, ranking_scores, relevance,
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


def test_ndcg_and_mrr_by_hand():
    """Target (green, long); relevance = attributes matched: a 1, b 0, c 2, d 0, e 2."""
    ids, labels = list(GALLERY), np.array(list(GALLERY.values()))
    assert relevance([1, 0], labels).tolist() == [1, 0, 2, 0, 2]
    # DCG@3 of a, b, c = (2^1-1)/log2(2) + 0/log2(3) + (2^2-1)/log2(4) = 1 + 0 + 1.5 = 2.5
    assert dcg([1, 0, 2], 3) == pytest.approx(2.5)
    # ideal c, e, a: 3/1 + 3/log2(3) + 1/log2(4) = 3 + 1.8927893 + 0.5 = 5.3927893
    assert ndcg([1, 0, 2], [1, 0, 2, 0, 2], 3) == pytest.approx(2.5 / 5.3927893)
    s = ranking_scores(np.array([[1, 0]]), [["a", "b", "c", "e"]], ids, labels, ks=[1, 3])
    assert s["ndcg"][0].tolist() == pytest.approx([1 / 3, 2.5 / 5.3927893])  # @1: 1 / 3
    assert s["rr"][0] == pytest.approx(1 / 3) and s["matches"][0] == 2  # first exact match: c at 3


def test_own_item_leaves_the_ideal_ordering_and_the_ranking():
    ids, labels = list(GALLERY), np.array(list(GALLERY.values()))
    # own item c dropped: ranking a (1), e (2); the gallery's relevances left: e 2, a 1, b 0, d 0.
    # DCG@2 = 1 + 3/log2(3) = 2.8927893; IDCG@2 = 3 + 1/log2(3) = 3.6309298
    s = ranking_scores(np.array([[1, 0]]), [["c", "a", "e"]], ids, labels, ks=[2], own_ids=["c"])
    assert s["ndcg"][0, 0] == pytest.approx(2.8927893 / 3.6309298)
    assert s["rr"][0] == pytest.approx(0.5) and s["matches"][0] == 1
    # no exact match within the searched depth: reciprocal rank 0, NDCG still grades a
    s = ranking_scores(np.array([[1, 0]]), [["a", "b"]], ids, labels, ks=[2])
    assert s["rr"][0] == 0.0 and s["ndcg"][0, 0] == pytest.approx(1 / (3 + 3 / np.log2(3)))


def test_missing_label_as_a_wildcard_or_a_value():
    labels = np.array([(1, 0), (1, 1), (1, -1), (0, -1)])
    # the target (green, missing sleeve): a wildcard matches every green; a value only green-missing
    assert relevance([1, -1], labels).tolist() == [2, 2, 2, 1]
    assert relevance([1, -1], labels, "value").tolist() == [1, 1, 2, 1]
    assert target_matches([1, -1], labels, "value").tolist() == [False, False, True, False]
    with pytest.raises(UserError, match="wildcard or value"):
        relevance([1, -1], labels, "any")


def test_method_metrics_report_ndcg_mrr_and_the_chance_level():
    ids, labels = ["p", "q", "r", "s"], np.array([(1, 0), (1, 1), (1, -1), (0, -1)])
    records = [{"query": "s", "attribute": "color", "target": [1, -1], "predicted": None,
                "retrieved": ["q", "r", "p"]}]
    wild = method_metrics(records, ids, labels, SCHEMA, [1, 3])
    value = method_metrics(records, ids, labels, SCHEMA, [1, 3], missing="value")
    # wildcard: p, q, r all exact (3 matches), q first: rr 1, every ranked relevance ideal
    assert (wild["matches_per_target"], wild["mrr"], wild["ndcg"]) == (3.0, 1.0, {"1": 1.0, "3": 1.0})
    # value: only r (rank 2) exact; rels q 1, r 2, p 1 against the ideal r, p, q
    assert value["matches_per_target"] == 1.0 and value["mrr"] == 0.5
    assert value["topk"] == {"1": 0.0, "3": 1.0}
    assert value["ndcg"]["1"] == pytest.approx(1 / 3)
    dcg3, idcg3 = 1 + 3 / np.log2(3) + 1 / 2, 3 + 1 / np.log2(3) + 1 / 2
    assert value["ndcg"]["3"] == pytest.approx(dcg3 / idcg3)


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
        methods=parse_methods(methods), ks=[1, 5, 10], graders=f"eval={bench['eval']}",
        batch_size=4, device="cpu", progress=False))


@pytest.mark.slow
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
    assert set(summary["methods"]["tiny"]["classification"]["eval"]) == {"color", "sleeve", "average"}
    assert all(set(r["predicted"]) == {"eval"} for r in records)
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

    # the records kept compressed, as results are in the repository: read as they were
    import gzip
    (out / "queries.jsonl.gz").write_bytes(gzip.compress((out / "queries.jsonl").read_bytes()))
    (out / "queries.jsonl").unlink()
    assert _run(bench, out, f"real,tiny={bench['gan']}")["methods"] == summary["methods"]
    assert not (out / "queries.jsonl").exists()


def _run_with(bench, out, **protocol):
    return run_benchmark(BenchmarkConfig(
        db=str(bench["db"]), index=str(bench["index"]), out=str(out), methods=parse_methods("real"),
        ks=[1, 5, 10], graders="none", batch_size=4, device="cpu", progress=False, **protocol))


def test_run_json_keeps_paths_as_given_and_a_rerun_may_name_them_otherwise(bench, tmp_path,
                                                                           monkeypatch):
    """No machine's folders in a published run.json: the paths as the user gave them; a rerun
    that names the same files another way (relative here, absolute there) resumes."""
    monkeypatch.chdir(bench["db"].parent)
    out = tmp_path / "run"
    first = _run_with(bench, out)
    run = json.loads((out / "run.json").read_text())
    assert run["db"] == str(bench["db"]) and run["index"] == str(bench["index"])
    records = _records(out)
    again = run_benchmark(BenchmarkConfig(
        db=bench["db"].name, index=str(bench["index"].relative_to(bench["db"].parent)),
        out=str(out), methods=parse_methods("real"), ks=[1, 5, 10], graders="none",
        batch_size=4, device="cpu", progress=False))
    assert again["methods"] == first["methods"] and _records(out) == records  # resumed: all done
    assert json.loads((out / "run.json").read_text())["db"] == bench["db"].name


def _records(out):
    return [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]


def test_benchmark_ndcg_and_mrr_agree_with_the_recorded_relevances(bench, tmp_path):
    from amgan_search.index.search import Searcher

    out = tmp_path / "run"
    summary = _run_with(bench, out)
    records = _records(out)
    searcher = Searcher(bench["index"], use_gpu=False)
    for r in records:  # the recorded relevance: target attributes each result matches
        rows = [searcher.row_of(i) for i in r["retrieved"]]
        assert r["relevance"] == relevance(r["target"], searcher.labels[rows]).tolist()
    real = summary["methods"]["real"]
    s = ranking_scores(np.array([r["target"] for r in records]), [r["retrieved"] for r in records],
                       searcher.ids, searcher.labels, [1, 5, 10], [r["query"] for r in records])
    kept = s["kept"]
    assert real["ndcg"]["10"] == pytest.approx(s["ndcg"][kept, 2].mean())
    assert real["mrr"] == pytest.approx(s["rr"][kept].mean())
    # a hit at 1 has reciprocal rank 1; no exact match within 10 has 0
    assert real["topk"]["1"] <= real["mrr"] <= real["topk"]["10"]
    # 24 items, 4 of each (color, sleeve): a target has 4 matches, 3 when the own item is one
    assert 3 <= real["matches_per_target"] <= 4
    assert summary["protocol"] == {"gallery": "all", "sample": None, "sample_seed": 0,
                                   "missing": "wildcard", "own": "exclude",
                                   "edit_attributes": None}
    assert "NDCG@10" in (out / "summary.md").read_text()


def test_benchmark_test_gallery_searches_only_the_test_split(bench, tmp_path):
    from amgan_search.catalog import Catalog

    summary = _run_with(bench, tmp_path / "run", gallery="test")
    test_ids = set(Catalog.open(str(bench["db"])).items("test")["id"].astype(str))
    records = _records(tmp_path / "run")
    assert summary["gallery"] == len(test_ids) == 6
    # 6 test items, the own item excluded: 5 results however deep the search
    assert all(set(r["retrieved"]) <= test_ids and len(r["retrieved"]) == 5 for r in records)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["gallery"] == "test"


def test_benchmark_seeded_sample_of_queries(bench, tmp_path):
    from amgan_search.catalog import Catalog
    from amgan_search.index.evaluate.benchmark import query_rows

    rows = query_rows(6, None, 3, seed=1)
    assert rows == query_rows(6, None, 3, seed=1) and len(set(rows)) == 3 and rows == sorted(rows)
    assert {tuple(query_rows(6, None, 3, seed)) for seed in range(5)} != {tuple(rows)}
    assert query_rows(6, 2, None, 0) == [0, 1] and query_rows(6, None, 9, 0) == list(range(6))
    _run_with(bench, tmp_path / "run", sample=3, sample_seed=1)
    ids = Catalog.open(str(bench["db"])).items("test")["id"].astype(str).tolist()
    assert {r["query"] for r in _records(tmp_path / "run")} == {ids[i] for i in rows}
    assert len(_records(tmp_path / "run")) == 3 * 3  # 3 images x 3 targets each
    with pytest.raises(UserError, match="replaces the limit"):
        _run_with(bench, tmp_path / "other", sample=3, limit=2)


def test_summary_counts_missing_labels_by_the_run_rule(tmp_path):
    """The summary scores a missing label by the recorded rule (a stand-in searcher: no index)."""
    from types import SimpleNamespace

    from amgan_search.index.evaluate.report import summarise

    labels = np.array([(1, 0), (1, 1), (1, -1), (0, -1)])
    searcher = SimpleNamespace(ids=["p", "q", "r", "s"], labels=labels, dir=tmp_path, count=4,
                               allowed=lambda where: None)
    records = [{"query": "s", "method": "real", "attribute": "color", "target": [1, -1],
                "predicted": None, "retrieved": ["q", "r", "p"]}]
    config = SimpleNamespace(methods=parse_methods("real"), db="x.db", split="test", limit=None,
                             graders="none",
                             protocol=lambda: {"gallery": "all", "sample": None, "sample_seed": 0,
                                               "missing": "value"})
    assert summarise(records, searcher, SCHEMA, [1, 3], config)["methods"]["real"]["mrr"] == 0.5
    assert summarise(records, searcher, SCHEMA, [1, 3])["methods"]["real"]["mrr"] == 1.0


@pytest.mark.parametrize("choice", [{"gallery": "test"}, {"sample": 3}, {"sample_seed": 5},
                                    {"missing": "value"}])
def test_a_resumed_run_refuses_other_protocol_choices(bench, tmp_path, choice):
    out = tmp_path / "run"
    _run_with(bench, out, sample=3) if "sample_seed" in choice else _run_with(bench, out)
    key = next(iter(choice))
    base = {"sample": 3} if key == "sample_seed" else {}
    with pytest.raises(UserError, match=f"another {key} "):
        _run_with(bench, out, **base, **choice)


def test_the_cli_records_the_protocol_and_refuses_sample_with_limit(bench, tmp_path):
    from click.testing import CliRunner

    from builders import assert_refused

    from amgan_search.cli.main import cli

    base = ["benchmark", "--db", str(bench["db"]), "--index", str(bench["index"]), "--methods",
            "real", "--k", "1,5", "--eval-classifier", "none", "--workers", "0", "--quiet"]
    assert_refused(CliRunner().invoke(cli, base + ["--out", str(tmp_path / "a"), "--sample", "3",
                                                   "--limit", "2"]), "--sample", "--limit")
    result = CliRunner().invoke(cli, base + ["--out", str(tmp_path / "b"), "--gallery", "test",
                                             "--missing", "value", "--sample", "2",
                                             "--sample-seed", "7"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert {k: run[k] for k in ("gallery", "sample", "sample_seed", "missing")} == {
        "gallery": "test", "sample": 2, "sample_seed": 7, "missing": "value"}
    assert "the test split" in result.output and "random sample of 2" in result.output
    help_text = CliRunner().invoke(cli, ["benchmark", "--help"]).output
    assert "ADDE" in help_text and "--gallery" in help_text and "--missing" in help_text


def test_a_run_from_before_the_protocol_options_resumes_with_the_defaults(bench, tmp_path):
    out = tmp_path / "run"
    _run_with(bench, out)
    run = json.loads((out / "run.json").read_text())
    old = {k: v for k, v in run.items() if k not in ("gallery", "sample", "sample_seed", "missing")}
    (out / "run.json").write_text(json.dumps(old))
    _run_with(bench, out)  # the defaults are what such a run did: no refusal
    with pytest.raises(UserError, match="another missing"):
        (out / "run.json").write_text(json.dumps(old))
        _run_with(bench, out, missing="value")


def test_benchmark_refuses_to_mix_runs(bench, tmp_path):
    out = tmp_path / "run"
    _run(bench, out, "real")
    with pytest.raises(UserError, match="another limit"):
        run_benchmark(BenchmarkConfig(db=str(bench["db"]), index=str(bench["index"]), out=str(out),
                                      methods=parse_methods("real"), ks=[1, 5, 10], limit=2,
                                      graders="none", device="cpu", progress=False))


def test_no_truth_grading_on_a_catalog_that_is_not_synthetic(bench, tmp_path):
    summary = _run(bench, tmp_path / "r", "real")
    assert summary["methods"]["real"]["truth"] is None
    assert all("truth" not in r for r in _records(tmp_path / "r"))
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "| real | truth | n/a | n/a | n/a |" in md


def test_oracle_needs_a_synthetic_catalog(bench, tmp_path):
    with pytest.raises(UserError, match="oracle method needs a synthetic catalog"):
        _run(bench, tmp_path / "o", "oracle")


@pytest.mark.slow
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
        methods=parse_methods("real,oracle"), ks=[1, 5, 30], limit=2, graders="none",
        device="cpu", progress=False))
    # 2 inputs x (16 colors + 3 sleeves) targets each
    assert summary["methods"]["oracle"]["queries"] == 38 == summary["methods"]["real"]["queries"]
    records = [json.loads(line) for line in (tmp_path / "run" / "queries.jsonl").read_text().splitlines()]
    real = {(r["query"], r["attribute"], tuple(r["target"])): r["retrieved"] for r in records
            if r["method"] == "real"}
    oracle = {(r["query"], r["attribute"], tuple(r["target"])): r["retrieved"] for r in records
              if r["method"] == "oracle"}
    assert real.keys() == oracle.keys()
    # the unedited query retrieves the same list for every target; the true edits do not
    assert len({tuple(v) for v in oracle.values()}) > len({tuple(v) for v in real.values()})
    # The grader that is no network reads every query against its own scene: the true edits
    # as their targets, the unedited queries as not the target.
    assert all(set(r["truth"]) == {"color", "sleeve"} for r in records)
    truth = {m: summary["methods"][m]["truth"] for m in ("real", "oracle")}
    assert truth["oracle"]["color"] >= 0.9 and truth["oracle"]["sleeve"] >= 0.9
    assert truth["real"] == {"color": 0.0, "sleeve": 0.0, "average": 0.0}
    by_hand = np.mean([r["truth"]["color"] == DEFAULT_SCHEMA.attributes[0].values[r["target"][0]]
                       for r in records if r["method"] == "oracle" and r["attribute"] == "color"])
    assert truth["oracle"]["color"] == by_hand
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "## Accuracy of edits per grader" in md
    assert f"| oracle | truth | {100 * truth['oracle']['color']:.2f} |" in md
