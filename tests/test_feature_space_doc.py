"""docs/feature-space.md's tables are what their commands print from the shipped records: each
table follows a comment naming the `experiments/method_table.py` arguments that make it."""

from __future__ import annotations

import re
import shlex
import sys

from builders import ROOT

DOC = ROOT / "docs" / "feature-space.md"
MARK = re.compile(r"<!-- python experiments/method_table.py (.+?) -->")


def tables() -> list[tuple[list[str], str]]:
    """(arguments, the table that follows) for every marked table of the doc."""
    lines = DOC.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        found = MARK.fullmatch(line.strip())
        if found:
            rows = []
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            out.append((shlex.split(found.group(1)), "\n".join(rows)))
    return out


def test_every_table_of_the_doc_is_its_commands_output_over_the_shipped_records():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        from method_table import table
    finally:
        sys.path.pop(0)
    found = tables()
    assert len(found) >= 4
    for arguments, text in found:
        runs = [(spec.partition("=")[0], ROOT / spec.partition("=")[2]) for spec in arguments]
        for _, folder in runs:
            assert (folder / "queries.jsonl.gz").is_file(), f"{folder}: its per-query records"
        assert text == table(runs), arguments
