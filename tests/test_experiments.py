"""The experiment scripts (experiments/): each answers --help with its docstring, refuses a wrong
command line with it, and the two that read records run on the compressed ones the repository
keeps (docs/results/experiments/NAME.jsonl.gz)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPTS = sorted(p.stem for p in EXPERIMENTS.glob("*.py") if p.stem != "experiment")
RECORDS = EXPERIMENTS.parent / "docs" / "results" / "experiments"


def script(name: str, *args: str, monkeypatch) -> int:
    """Run experiments/NAME.py as `python experiments/NAME.py ARGS` would; its exit status."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # the scripts import each other
    monkeypatch.setattr(sys, "argv", [f"experiments/{name}.py", *args])
    try:
        runpy.run_path(str(EXPERIMENTS / f"{name}.py"), run_name="__main__")
    except SystemExit as stop:
        return 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
    return 0


def test_every_script_is_covered():
    assert SCRIPTS == ["alpha_probe", "d_probe", "dc_probe", "method_table", "paired",
                       "rest_chunk", "sleeve_directions", "supervised_probe", "z_probe"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_answers_help_with_its_docstring(name, monkeypatch, capsys):
    assert script(name, "--help", monkeypatch=monkeypatch) == 0
    first = (EXPERIMENTS / f"{name}.py").read_text().split('"""')[1].splitlines()[0]
    assert first in capsys.readouterr().out


@pytest.mark.parametrize("name", ["d_probe", "dc_probe", "method_table", "paired", "rest_chunk",
                                  "sleeve_directions", "supervised_probe", "z_probe"])
def test_each_script_refuses_too_few_arguments_with_its_usage(name, monkeypatch, capsys):
    assert script(name, monkeypatch=monkeypatch) == 1


def test_sleeve_directions_reads_the_compressed_records(monkeypatch, capsys):
    assert (RECORDS / "amgan-8500.jsonl.gz").is_file() and not (RECORDS / "amgan-8500.jsonl").exists()
    assert script("sleeve_directions", "amgan-8500", monkeypatch=monkeypatch) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| amgan")]
    assert [row.split(" | ")[1] for row in rows] == ["shorter (fabric away)", "longer (fabric added)"]
    # every edit counted once: the fractions of a row add up to 1
    for row in rows:
        assert sum(float(x) for x in row.strip("| ").split(" | ")[3:]) == pytest.approx(1, abs=0.003)


def test_paired_compares_two_runs_on_the_same_edits(monkeypatch, capsys):
    assert script("paired", "amgan-8500", "amgan-8500", monkeypatch=monkeypatch) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| amgan")]
    assert len(rows) == 3 and all("+0.000 [+0.000, +0.000]" in row for row in rows)
