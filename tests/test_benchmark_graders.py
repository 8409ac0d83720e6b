"""The benchmark's harder setting and its CNN graders: an index of four attributes, a generator of
two (edited through `editors.for_schema`), queries restricted to the edited attributes, a hit only
with the whole four-attribute target, and each grader's reading of every edit by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amgan_search.editors import SubSchemaEditor, check_sub_schema, for_schema
from amgan_search.errors import UserError
from amgan_search.index.evaluate.benchmark import BenchmarkConfig, run_benchmark
from amgan_search.index.methods import parse_methods
from amgan_search.metrics.retrieval import (classification_accuracy, grader_accuracy,
                                            method_metrics, query_targets, record_readings)
from amgan_search.schema import DEFAULT_SCHEMA, HARD_SETTING, Schema, synthetic_schema

HARD = synthetic_schema(HARD_SETTING)
N_QUERIES = 2  # test images per method: 2 x (16 colors + 3 sleeves) color/sleeve queries


def _classifier(path, schema, role="eval", seed=0):
    from amgan_search.checkpoint import save_model_dir
    from amgan_search.nets.classifier import AttributeClassifier

    torch.manual_seed(seed)
    model = AttributeClassifier(schema, arch="resnet18", size=32, role=role, seed=seed)
    save_model_dir(path, model.config, model.state_dict())
    return path


def _generator(path, classifier_dir, schema=DEFAULT_SCHEMA):
    """A tiny untrained AMGAN-shaped editor of `schema` (the generators' color and sleeve)."""
    from amgan_search.checkpoint import save_model_dir
    from amgan_search.nets.amgan import EditNet

    torch.manual_seed(0)
    net = EditNet(schema.condition_dim, conv_dim=4, repeat_num=1, attention="generator",
                  upsample="deconv")  # the config records none: what that means
    config = {"kind": "amgan", "method": "amgan", "schema": schema.to_dict(), "size": 32,
              "c_dim": schema.condition_dim, "conv_dim": 4, "repeat_num": 1,
              "attention": "generator", "classifier": {"path": str(classifier_dir)}}
    save_model_dir(path, config, {f"net.{k}": v for k, v in net.state_dict().items()})
    return path


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    """A synthetic catalog labelled with all four attributes, its index, a generator of color and
    sleeve, a grader of the four attributes and one of the two."""
    from builders import make_classifier, make_manipulator

    from amgan_search.catalog import import_catalog
    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder
    from amgan_search.synthetic import write_catalog

    root = tmp_path_factory.mktemp("hard")
    folder = write_catalog(root / "synth", n=30, size=32, attributes=HARD_SETTING,
                           test_fraction=0.2, progress=False, workers=1)
    db = root / "synth.db"
    import_catalog("synthetic", folder, db, progress=False)
    embedder = _classifier(root / "embedder", HARD, role="cam", seed=1)
    build_index(db, root / "index", load_embedder(embedder, device="cpu"), workers=0,
                progress=False)
    cam2 = _classifier(root / "cam2", DEFAULT_SCHEMA, role="cam", seed=2)
    # builders' tiny world: colors red, green, blue, not the synthetic ones
    other = make_manipulator(root / "other", make_classifier(root / "other-cam"))
    return {"root": root, "db": db, "index": root / "index",
            "gan": _generator(root / "gan", cam2), "other": other,
            "four": _classifier(root / "four", HARD, seed=3),
            "two": _classifier(root / "two", DEFAULT_SCHEMA, seed=4)}


def _config(hard, out, methods="real", **kw):
    kw = {"graders": f"four={hard['four']},two={hard['two']}", "limit": N_QUERIES, **kw}
    return BenchmarkConfig(db=str(hard["db"]), index=str(hard["index"]), out=str(out),
                           methods=parse_methods(methods), ks=[1, 5], batch_size=8, device="cpu",
                           progress=False, **kw)


def _records(out):
    return [json.loads(line) for line in (out / "queries.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def harder_run(hard, tmp_path_factory):
    """real and the two-attribute generator, editing color and sleeve of the four-attribute index."""
    out = tmp_path_factory.mktemp("run") / "b"
    summary = run_benchmark(_config(hard, out, f"real,gan={hard['gan']}",
                                    edit_attributes=["sleeve", "color"]))
    return {"out": out, "summary": summary, "records": _records(out)}


# -- the runner ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_queries_change_only_the_edit_attributes_and_keep_the_other_two(hard, harder_run):
    from amgan_search.index.search import Searcher

    records, searcher = harder_run["records"], Searcher(hard["index"], use_gpu=False)
    for method in ("real", "gan"):
        mine = [r for r in records if r["method"] == method]
        assert len(mine) == N_QUERIES * (16 + 3)
        assert {r["attribute"] for r in mine} == {"color", "sleeve"}
    for r in records:
        own = searcher.labels[searcher.row_of(r["query"])].tolist()
        j = HARD.position(r["attribute"])
        assert len(r["target"]) == 4 and r["target"][j] != own[j]
        assert [t for k, t in enumerate(r["target"]) if k != j] == \
            [o for k, o in enumerate(own) if k != j]  # pattern and neckline stay the query's
    run = json.loads((harder_run["out"] / "run.json").read_text())
    assert run["edit_attributes"] == ["color", "sleeve"]  # the schema's order, whatever given
    assert run["graders"] == {"four": str(hard["four"]), "two": str(hard["two"])}  # as given
    assert harder_run["summary"]["protocol"]["edit_attributes"] == ["color", "sleeve"]


@pytest.mark.slow
def test_records_hold_each_graders_reading_by_name(harder_run):
    for r in harder_run["records"]:
        values = HARD.attribute(r["attribute"]).values
        assert set(r["predicted"]) == {"four", "two"}
        assert all(v in values for v in r["predicted"].values())  # names, both read color/sleeve
        assert set(r["truth"]) == {"color", "sleeve"}  # a synthetic catalog: the truth grader too


@pytest.mark.slow
def test_classification_per_grader_is_the_share_of_readings_that_name_the_target(harder_run):
    for method in ("real", "gan"):
        mine = [r for r in harder_run["records"] if r["method"] == method]
        acc = harder_run["summary"]["methods"][method]["classification"]
        assert list(acc) == ["four", "two"]
        for grader in ("four", "two"):
            for name in ("color", "sleeve"):
                j = HARD.position(name)
                rows = [r for r in mine if r["attribute"] == name]
                by_hand = np.mean([r["predicted"][grader] == HARD.attributes[j].values[r["target"][j]]
                                   for r in rows])
                assert acc[grader][name] == pytest.approx(by_hand)
            assert acc[grader]["pattern"] is None and acc[grader]["neckline"] is None
            assert acc[grader]["average"] == pytest.approx(
                (acc[grader]["color"] + acc[grader]["sleeve"]) / 2)


def _four_attribute_csv_catalog(root, n=48, size=32):
    """A CSV catalog of builders' colors and sleeves plus pattern and neckline (24 combinations,
    each twice): every target vector has matches, so hits are counted at all."""
    from builders import COLORS, RGB, SLEEVES

    from amgan_search.catalog import import_catalog
    from amgan_search.images import save_image

    rng = np.random.default_rng(0)
    folder = root / "four"
    (folder / "img").mkdir(parents=True)
    rows = ["id,path,color,sleeve,pattern,neckline,split"]
    for i in range(n):
        c = i % 24
        color, sleeve = COLORS[c % 3], SLEEVES[(c // 3) % 2]
        pattern, neckline = ("solid", "striped")[(c // 6) % 2], ("crew", "v")[c // 12]
        img = rng.integers(0, 256, (size, size, 3)).astype(np.uint8)
        img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = RGB[color]
        if pattern == "striped":
            img[size // 4: 3 * size // 4: 4, size // 4: 3 * size // 4] = 255
        img[size // 4:(size // 2 if sleeve == "short" else 7 * size // 8), : size // 4] = RGB[color]
        save_image(folder / "img" / f"{i}.png", img)
        rows.append(f"item{i},img/{i}.png,{color},{sleeve},{pattern},{neckline},"
                    f"{'test' if i % 4 == 0 else 'train'}")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    (folder / "schema.json").write_text(json.dumps({
        "color": list(COLORS), "sleeve": list(SLEEVES), "pattern": ["solid", "striped"],
        "neckline": ["crew", "v"]}))
    import_catalog("csv", folder, root / "four.db", progress=False)
    return root / "four.db"


@pytest.mark.slow
def test_a_hit_has_all_four_attributes_of_the_target(tmp_path):
    """builders' two-attribute generator on a four-attribute index: top-k recomputed from the
    index's labels, a result a hit only when it matches all four columns of the target."""
    from builders import make_classifier, make_manipulator

    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.search import Searcher

    db = _four_attribute_csv_catalog(tmp_path)
    cam = make_classifier(tmp_path / "cam")
    build_index(db, tmp_path / "index", load_embedder(cam, device="cpu"), workers=0, progress=False)
    gan = make_manipulator(tmp_path / "gan", cam)
    summary = run_benchmark(BenchmarkConfig(
        db=str(db), index=str(tmp_path / "index"), out=str(tmp_path / "b"),
        methods=parse_methods(f"real,gan={gan}"), ks=[1, 5], limit=4, graders="none",
        edit_attributes=["color", "sleeve"], batch_size=8, device="cpu", progress=False))
    records, searcher = _records(tmp_path / "b"), Searcher(tmp_path / "index", use_gpu=False)
    assert len(records) == 2 * 4 * (2 + 1)
    loose = 0  # results that match the edited attributes but not the whole target
    for method in ("real", "gan"):
        mine = [r for r in records if r["method"] == method]
        hits = {1: 0, 5: 0}
        for r in mine:
            labels = searcher.labels[[searcher.row_of(i) for i in r["retrieved"]]]
            exact = (labels == r["target"]).all(axis=1)
            loose += int(((labels[:, :2] == r["target"][:2]).all(axis=1) & ~exact).sum())
            assert r["relevance"] == (labels == r["target"]).sum(axis=1).tolist()
            for k in hits:
                hits[k] += bool(exact[:k].any())
        entry = summary["methods"][method]
        assert entry["kept"] == len(mine)  # each combination is in the catalog twice
        assert entry["topk"] == {str(k): pytest.approx(h / len(mine)) for k, h in hits.items()}
    assert loose > 0  # some results had the right color and sleeve and were no hit


@pytest.mark.slow
def test_summary_markdown_has_a_row_per_grader_and_the_truth(harder_run):
    md = (harder_run["out"] / "summary.md").read_text()
    assert "| method | grader | color | sleeve | average |" in md
    for method in ("real", "gan"):
        for grader in ("four", "two", "truth"):
            assert f"| {method} | {grader} | " in md
    assert "changing one value of color, sleeve (of color, sleeve, pattern, neckline)" in md
    assert "matches per target" in md and "NDCG@5" in md


@pytest.mark.slow
def test_a_grader_that_lacks_an_attribute_reads_null_there(hard, tmp_path):
    """Every attribute edited (real only): the two-attribute grader reads no pattern, neckline."""
    summary = run_benchmark(_config(hard, tmp_path / "b", graders=f"two={hard['two']}", limit=1))
    records = _records(tmp_path / "b")
    assert {r["attribute"] for r in records} == set(HARD.names)
    assert all(r["predicted"] == {"two": None} for r in records
               if r["attribute"] in ("pattern", "neckline"))
    assert all(r["predicted"]["two"] is not None for r in records
               if r["attribute"] in ("color", "sleeve"))
    acc = summary["methods"]["real"]["classification"]["two"]
    assert acc["pattern"] is None and acc["neckline"] is None and acc["color"] is not None
    assert summary["protocol"]["edit_attributes"] is None


# -- refusals --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_unknown_edit_attributes_are_refused_listing_the_valid_ones(hard, tmp_path):
    with pytest.raises(UserError, match="unknown attribute to edit 'collar'; the index's: "
                                        "color, sleeve, pattern, neckline"):
        run_benchmark(_config(hard, tmp_path / "b", edit_attributes=["color", "collar"]))


@pytest.mark.slow
def test_a_method_that_cannot_edit_an_edit_attribute_is_refused_before_anything_runs(hard, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(UserError, match="method 'gan' cannot edit pattern, neckline"):
        run_benchmark(_config(hard, out, f"real,gan={hard['gan']}"))
    assert not (out / "run.json").exists() and not (out / "queries.jsonl").exists()


@pytest.mark.slow
def test_a_model_whose_values_differ_from_the_index_is_refused_in_one_line(hard, tmp_path):
    with pytest.raises(UserError, match=r"other: the model's color values \(red, green, blue\) "
                                        r"differ from the index's") as err:
        run_benchmark(_config(hard, tmp_path / "b", f"other={hard['other']}",
                              edit_attributes=["color"]))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_rerun_with_other_edit_attributes_or_graders_is_refused(hard, harder_run, tmp_path):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(harder_run["out"], out)
    with pytest.raises(UserError, match="another edit_attributes"):
        run_benchmark(_config(hard, out, f"real,gan={hard['gan']}", edit_attributes=["color"]))
    with pytest.raises(UserError, match="another graders"):
        run_benchmark(_config(hard, out, f"real,gan={hard['gan']}", graders=f"four={hard['four']}",
                              edit_attributes=["color", "sleeve"]))
    # the same run resumes: nothing left to do, the same summary
    again = run_benchmark(_config(hard, out, f"real,gan={hard['gan']}",
                                  edit_attributes=["color", "sleeve"]))
    assert again["methods"] == harder_run["summary"]["methods"]


# -- for_schema ------------------------------------------------------------------------------------

class _Recorder:
    """An editor of its own schema that records what it is asked and returns x."""

    size = 32

    def __init__(self, schema):
        self.schema, self.calls = schema, []

    def edit_batch(self, x, labels, attribute, target, items=None):
        self.calls.append((labels.tolist(), attribute, torch.as_tensor(target).tolist(), items))
        return x, torch.zeros_like(x[:, :1])


# the index's order is color, sleeve, pattern, neckline; this model has neckline before color
INNER = Schema.from_dict({"neckline": list(HARD.attribute("neckline").values),
                          "color": list(HARD.attribute("color").values)})


def test_for_schema_hands_the_model_its_own_columns_and_attribute_position():
    inner = _Recorder(INNER)
    editor = for_schema(inner, HARD)
    assert isinstance(editor, SubSchemaEditor)
    assert editor.schema == HARD and editor.size == 32
    labels = torch.tensor([[3, 1, 2, 0], [5, 0, 1, 2]])  # color, sleeve, pattern, neckline
    x = torch.rand(2, 3, 8, 8)
    x_star, _ = editor.edit_batch(x, labels, HARD.position("color"), torch.tensor([7, 9]),
                                  items=["a", "b"])
    assert torch.equal(x_star, x)
    # neckline is the model's first column, color its second; color is its attribute 1
    assert inner.calls == [([[0, 3], [2, 5]], 1, [7, 9], ["a", "b"])]
    editor.edit_batch(x, labels, HARD.position("neckline"), torch.tensor(1))
    assert inner.calls[-1][:2] == ([[0, 3], [2, 5]], 0)


def test_for_schema_refuses_an_attribute_the_model_lacks():
    editor = for_schema(_Recorder(INNER), HARD)
    with pytest.raises(UserError, match="cannot edit 'sleeve'; it edits neckline, color"):
        editor.edit_batch(torch.rand(1, 3, 8, 8), torch.zeros(1, 4, dtype=torch.long),
                          HARD.position("sleeve"), torch.tensor([0]))


def test_for_schema_is_the_editor_itself_on_the_same_schema_and_refuses_no_sub_schema():
    same = _Recorder(HARD)
    assert for_schema(same, HARD) is same
    with pytest.raises(UserError, match="the model's attribute 'collar' is not one of the index's"):
        for_schema(_Recorder(Schema.from_dict({"collar": ["round", "square"]})), HARD)
    reordered = Schema.from_dict({"sleeve": list(reversed(HARD.attribute("sleeve").values))})
    with pytest.raises(UserError, match="sleeve values .* differ from the index's"):
        check_sub_schema(reordered, HARD)


# -- the summary's readings ------------------------------------------------------------------------

def test_old_records_with_an_int_prediction_read_as_the_eval_grader():
    schema = Schema.from_dict({"color": ["red", "green", "blue"], "sleeve": ["long", "short"]})
    old = {"attribute": "color", "target": [2, 0], "predicted": 2}
    assert record_readings(old, schema) == {"eval": "blue"}
    assert record_readings({**old, "predicted": None}, schema) == {}
    new = {"attribute": "sleeve", "target": [2, 1], "predicted": {"eval": "long", "x": None}}
    acc = grader_accuracy([old, new], schema)
    assert acc["eval"] == {"color": 1.0, "sleeve": 0.0, "average": 0.5}
    assert acc["x"] == {"color": None, "sleeve": None, "average": None}  # x read neither


def test_classification_accuracy_takes_names_and_counts_a_null_among_readings_as_wrong():
    schema = Schema.from_dict({"color": ["red", "green", "blue"], "sleeve": ["long", "short"]})
    targets = np.array([[0, 0], [2, 0], [1, 1], [1, 1]])
    acc = classification_accuracy(["red", None, None, None], targets, [0, 0, 1, 1], schema)
    assert acc == {"color": 0.5, "sleeve": None, "average": 0.5}


def test_a_hit_needs_the_unedited_attributes_too():
    """Hand-made: target (red, long, striped, v); b matches color and sleeve only, c all four."""
    ids = ["q", "b", "c"]
    labels = np.array([[1, 0, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1]])
    schema = Schema.from_dict({"color": ["red", "green"], "sleeve": ["long", "short"],
                               "pattern": ["solid", "striped"], "neckline": ["crew", "v"]})
    record = {"query": "q", "method": "m", "attribute": "color", "target": [0, 0, 1, 1],
              "predicted": {}, "retrieved": ["b", "c"]}
    m = method_metrics([record], ids, labels, schema, [1, 2])
    assert m["topk"] == {"1": 0.0, "2": 1.0} and m["mrr"] == 0.5
    assert m["matches_per_target"] == 1.0 and m["classification"] == {}
    # query_targets restricted to the edited attributes: color and sleeve of the four
    assert [(j, v) for j, v, _ in query_targets(labels[0], schema, [0, 1])] == [(0, 0), (1, 1)]


# -- the command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from builders import make_classifier, tiny_world

    w = tiny_world(tmp_path_factory.mktemp("world"))
    return {**w, "eval": make_classifier(w["root"] / "eval", 5, "eval")}


def _invoke(world, out, *args):
    from click.testing import CliRunner

    from amgan_search.cli.main import cli

    base = ["benchmark", "--db", str(world["db"]), "--index", str(world["index"]), "--out",
            str(out), "--methods", "real", "--k", "1,5", "--limit", "2", "--workers", "0",
            "--quiet", "--device", "cpu"]
    return CliRunner().invoke(cli, base + [str(a) for a in args])


@pytest.mark.slow
def test_the_command_takes_graders_and_edit_attributes(world, tmp_path):
    result = _invoke(world, tmp_path / "b", "--graders", f"judge={world['eval']},none",
                     "--edit-attributes", "sleeve")
    assert result.exit_code == 0, result.output
    records = _records(tmp_path / "b")
    assert records and all(r["attribute"] == "sleeve" and set(r["predicted"]) == {"judge"}
                           for r in records)
    assert "| real | judge |" in result.output
    help_text = _invoke(world, tmp_path / "h", "--help").output
    assert "--graders" in help_text and "--edit-attributes" in help_text
    assert "--eval-classifier" not in help_text  # the deprecated alias is hidden


@pytest.mark.slow
def test_the_old_eval_classifier_option_names_one_grader_eval(world, tmp_path):
    from builders import assert_refused

    result = _invoke(world, tmp_path / "b", "--eval-classifier", world["eval"])
    assert result.exit_code == 0, result.output
    assert "deprecated" in result.output
    assert all(set(r["predicted"]) == {"eval"} for r in _records(tmp_path / "b"))
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["graders"] == {"eval": str(world["eval"])}
    result = _invoke(world, tmp_path / "c", "--eval-classifier", "none")
    assert result.exit_code == 0 and all(r["predicted"] == {} for r in _records(tmp_path / "c"))
    assert_refused(_invoke(world, tmp_path / "d", "--eval-classifier", "none", "--graders", "eval"),
                   "--eval-classifier", "--graders")
    assert_refused(_invoke(world, tmp_path / "e", "--graders", "bogus"),
                   "--graders: unknown grader 'bogus'")
    assert_refused(_invoke(world, tmp_path / "f", "--graders", "none", "--edit-attributes", "collar"),
                   "unknown attribute to edit 'collar'", "color, sleeve")
