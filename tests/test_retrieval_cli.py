"""`amgan-search index|query|benchmark` from the command line: outputs, files, and clean refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from amgan_search.cli.main import cli


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from builders import make_catalog, make_classifier, make_manipulator

    root = tmp_path_factory.mktemp("cli")
    db = make_catalog(root)
    cam = make_classifier(root / "cam")
    result = invoke("index", "build", "--db", db, "--out", root / "index", "--embedder", cam,
                    "--workers", 0, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    return {"root": root, "db": db, "cam": cam, "index": root / "index",
            "gan": make_manipulator(root / "gan", cam),
            "image": root / "catalog" / "img" / "4.png"}


def test_build_prints_summary_and_info_reads_it(setup):
    result = invoke("index", "info", setup["index"])
    assert result.exit_code == 0
    assert "type: flat" in result.output and "items: 24" in result.output
    meta = json.loads(invoke("index", "info", setup["index"], "--json").output)
    assert meta["count"] == 24 and meta["schema"]["color"] == ["red", "green", "blue"]
    assert meta["embedder"]["path"] == str(setup["cam"].resolve())


def test_query_json_unedited_finds_the_item_itself(setup):
    result = invoke("query", setup["image"], "--index", setup["index"], "--no-edit", "--json",
                    "-k", 3, "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["targets"] == {} and out["edited"] is None
    assert [r["rank"] for r in out["results"]] == [1, 2, 3]
    first = out["results"][0]
    assert first["id"] == "item4" and first["score"] == pytest.approx(1.0, abs=1e-3)
    assert first["attributes"] == {"color": "green", "sleeve": "short"}


def test_query_edits_and_writes_contact_sheet(setup, tmp_path):
    from amgan_search.images import load_image

    result = invoke("query", setup["image"], "--index", setup["index"], "--model", setup["gan"],
                    "--color", "blue", "--json", "--out", tmp_path / "q", "-k", 4,
                    "--where", "sleeve=long", "--device", "cpu")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["targets"] == {"color": "blue"}
    assert Path(out["edited"]).is_file()
    assert len(out["results"]) == 4 and all(r["attributes"]["sleeve"] == "long" for r in out["results"])
    sheet = load_image(tmp_path / "q" / "contact.png")
    # first row query, edit, mask; then the 4 results on one row of 128-px tiles + captions
    assert sheet.shape[0] == 2 * (128 + 30) and sheet.shape[1] == 4 * 128
    assert load_image(tmp_path / "q" / "mask.png").shape[:2] == (32, 32)


def test_query_table_output(setup):
    result = invoke("query", setup["image"], "--index", setup["index"], "--no-edit", "-k", 2,
                    "--device", "cpu")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[1].split()[:4] == ["rank", "id", "score", "attributes"]
    assert lines[2].split()[:2] == ["1", "item4"]


@pytest.mark.parametrize("args, message, usage", [
    (["--color", "purple"], "unknown color value 'purple'; valid: red, green, blue", False),
    (["--pattern", "striped"], "unknown attribute 'pattern'; valid: color, sleeve", False),
    (["--where", "colour=red", "--no-edit"], "unknown field 'colour'", False),
    (["--colour", "red"], "No such option", True),
    (["--where", "nonsense", "--no-edit"], "expected KEY=VALUE", True),
    (["-k", "0", "--no-edit"], "Invalid value for '-k'", True),
])
def test_bad_flags_and_values_exit_2(setup, args, message, usage):
    result = invoke("query", setup["image"], "--index", setup["index"], *args, "--device", "cpu")
    assert result.exit_code == 2
    assert message in result.output
    # our errors are one line; click's own usage errors carry its usage header
    assert (result.output.startswith("Usage:") if usage
            else len(result.output.strip().splitlines()) == 1)


def test_no_default_index_says_how_to_make_one(setup, tmp_path):
    result = invoke("query", setup["image"], "--color", "red", env={"AMGAN_SEARCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "amgan-search demo" in result.output and len(result.output.strip().splitlines()) == 1


def test_help_lists_the_chosen_index_attributes(tmp_path):
    import pandas as pd

    from amgan_search.schema import Schema
    from builders import index_from_vectors

    schema = Schema.from_dict({"fabric": ["denim", "silk"]})
    v = np.eye(4, 8, dtype=np.float32)
    labels = np.array([[0], [1], [0], [1]])
    items = pd.DataFrame({"id": list("abcd"), "path": "x.png", "split": "train"})
    index_from_vectors(tmp_path / "idx", v, labels, items, schema)
    result = invoke("query", "--index", tmp_path / "idx", "--help")
    assert result.exit_code == 0
    assert "--fabric" in result.output and "denim, silk" in result.output
    assert "--color" in result.output  # the synthetic attributes are always offered


def test_corrupt_index_is_one_line_error(setup, tmp_path):
    import shutil

    from amgan_search.index.index_dir import current

    broken = tmp_path / "broken"
    shutil.copytree(setup["index"], broken)
    (current(broken).folder / "index.faiss").write_bytes(b"junk")
    for args in (["index", "info", broken],
                 ["query", setup["image"], "--index", broken, "--no-edit"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "index.faiss: damaged" in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_build_and_add_refusals(setup, tmp_path):
    from builders import make_classifier

    result = invoke("index", "build", "--db", setup["db"], "--out", tmp_path / "x", "--index-type", "lsh")
    assert result.exit_code == 2 and "lsh" in result.output
    other = make_classifier(tmp_path / "other", seed=3)
    result = invoke("index", "add", "--index", setup["index"], "--db", setup["db"], "--embedder", other,
                    "--device", "cpu")
    assert result.exit_code == 2 and "not this one" in result.output
    result = invoke("index", "add", "--index", setup["index"], "--db", setup["db"], "--device", "cpu",
                    "--workers", 0, "--quiet")
    assert result.exit_code == 0 and "nothing to add" in result.output
    result = invoke("index", "build", "--db", tmp_path / "none.db", "--out", tmp_path / "y",
                    "--embedder", setup["cam"], "--device", "cpu")
    assert result.exit_code == 2 and "no such catalog DB" in result.output


def test_benchmark_command(setup, tmp_path):
    result = invoke("benchmark", "--db", setup["db"], "--index", setup["index"], "--methods", "real",
                    "--k", "1,5", "--out", tmp_path / "b", "--eval-classifier", "none", "--limit", 2,
                    "--workers", 0, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "| real |" in result.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["methods"]["real"]["queries"] == 6 and summary["ks"] == [1, 5]
    result = invoke("benchmark", "--db", setup["db"], "--index", setup["index"], "--methods", "real,bogus",
                    "--out", tmp_path / "c")
    assert result.exit_code == 2 and "unknown method 'bogus'" in result.output


def test_key_value_pairs_keep_each_commands_error():
    import click

    from amgan_search.cli.options import parse_pairs
    from amgan_search.errors import UserError

    assert parse_pairs([" gender = female", "a=b=c"], "--where") == {"gender": "female", "a": "b=c"}
    with pytest.raises(click.BadParameter, match="expected KEY=VALUE, got '=x'"):
        parse_pairs(["=x"], "--where")
    edit_error = "{flag} {pair!r}: expected attribute=value"
    with pytest.raises(UserError, match="^--set 'sleeve': expected attribute=value$"):
        parse_pairs(["sleeve"], "--set", error=edit_error)
    assert parse_pairs(["color=red"], "--set", error=edit_error) == {"color": "red"}


def test_attribute_flags_come_from_the_schema_the_arguments_name(tmp_path):
    """The shape `edit` can take: flags from --model's config.json, clashing names left to --set."""
    import click

    from amgan_search.cli.options import (AttributeCommand, offered_attributes, option_value,
                                          schema_in)

    (tmp_path / "config.json").write_text(json.dumps({"schema": {"fabric": ["denim", "silk"],
                                                                 "set": ["a", "b"]}}))

    @click.command(cls=AttributeCommand, attributes=lambda args: offered_attributes(
        schema_in(Path(option_value(args, "--model") or ".") / "config.json")))
    @click.option("--model")
    @click.option("--set", "sets", multiple=True)
    def edit(model, sets, attribute_flags):
        click.echo(json.dumps(attribute_flags))

    result = CliRunner().invoke(edit, ["--model", str(tmp_path), "--sleeve", "long", "--fabric", "silk"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"fabric": "silk", "sleeve": "long"}
    assert list(json.loads(result.output)) == ["fabric", "sleeve"]  # schema order
    help_text = CliRunner().invoke(edit, ["--model", str(tmp_path), "--help"]).output
    assert "--fabric" in help_text and "denim, silk" in help_text and "--color" in help_text
    assert help_text.count("--set") == 1  # the attribute named "set" gets no flag of its own
