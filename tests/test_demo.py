"""`amgan-search demo`: from nothing to a report with the shipped models, and reuse on a rerun."""

import json

import pytest
from click.testing import CliRunner

from amgan_search.cli.main import cli


@pytest.mark.slow
def test_demo_writes_a_report_and_reuses_what_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("AMGAN_SEARCH_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    args = ["demo", "--out", str(out), "--n", "60", "-k", "5", "--workers", "0"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text())
    names = [e["name"] for e in report["examples"]]
    assert names == ["one-attribute", "two-attributes", "region-specific", "no-edit"]
    for example in report["examples"]:
        assert len(example["results"]) == 5
        assert (out / example["contact_sheet"]).is_file()
        assert (example["edit"] is None) == (example["name"] == "no-edit")
    html = (out / "report.html").read_text()
    assert "only on sleeves" in html and html.count("<table>") == 4
    index = tmp_path / "home" / "index" / "default" / "index.json"
    built = index.stat().st_mtime_ns
    second = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert second.exit_code == 0, second.output
    assert index.stat().st_mtime_ns == built  # the index was reused, not rebuilt
    assert "rendering" not in second.output and "building" not in second.output
