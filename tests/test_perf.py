"""The performance benchmarks (perf/) run end to end in their tiny mode, so the scripts cannot rot."""

import math

import pytest

from perf.run import SUITE, format_table, main


@pytest.mark.slow
def test_every_benchmark_runs_tiny_and_reports_ratios_against_a_same_run_baseline(capsys, tmp_path):
    import json

    out = tmp_path / "rows.json"
    assert main(["--tiny", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert {r["benchmark"] for r in rows} == set(SUITE)
    for r in rows:
        assert r["value"] is not None and r["measure"]
        if r.get("ratio") is not None:
            assert math.isfinite(r["ratio"]) and r["ratio"] > 0 and r.get("baseline")
    for name in SUITE:  # every benchmark compares against something measured in the same run
        assert any(r.get("ratio") is not None for r in rows if r["benchmark"] == name), name
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:2] == ["benchmark", "measure"]


def test_table_formats_units_and_ratios():
    text = format_table([{"benchmark": "b", "measure": "m", "value": 2.0, "unit": "s",
                          "baseline": "base", "baseline_value": 4.0, "ratio": 0.5}])
    assert "2 s" in text and "0.50x" in text
