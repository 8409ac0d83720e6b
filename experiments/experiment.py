"""What the experiment scripts beside this one share: where their records live, their command
line, the rows they append. Run each as `python experiments/NAME.py` from the repository root."""
import json
import sys
from pathlib import Path

from amgan_search.io import JsonlWriter, jsonl_exists, packed, read_jsonl, write_jsonl

# The records and rows docs/experiments.md cites.
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "experiments"


def arguments(doc: str, least: int, most: int | None = None) -> list[str]:
    """The script's arguments; its docstring on -h/--help, or on a wrong count (exit status 1)."""
    argv = sys.argv[1:]
    if argv[:1] in (["-h"], ["--help"]):
        print(doc)
        sys.exit(0)
    if len(argv) < least or (most is not None and len(argv) > most):
        sys.exit(doc)
    return argv


def records(name: str) -> list[dict]:
    """The `evaluate-edits` records of RESULTS/NAME.jsonl (kept as NAME.jsonl.gz)."""
    path = RESULTS / f"{name}.jsonl"
    if not jsonl_exists(path):
        sys.exit(f"{packed(path)}: no such records file (write it with evaluate-edits --records)")
    return read_jsonl(path)


def write_records(name: str, rows: list[dict]) -> Path:
    """RESULTS/NAME.jsonl.gz: an experiment's per-edit records, compressed as results are kept."""
    path = packed(RESULTS / f"{name}.jsonl")
    write_jsonl(path, rows)
    return path


def append_row(name: str, row: dict) -> None:
    """Print one result row and append it to RESULTS/NAME (a few lines a run: kept plain)."""
    print(json.dumps(row), flush=True)
    with JsonlWriter(RESULTS / name) as out:
        out.write([row])
