"""What the repository keeps: results that stay small."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS_LIMIT = 15 * 2**20
# A record file longer than this is kept gzip-compressed (NAME.jsonl.gz, `io.packed`); the rows
# files the experiments append to, one line a run, stay plain and short.
PLAIN_RECORD_LINES = 500


def tracked(*patterns: str) -> list[Path]:
    """The files git tracks (as they are in the working tree) under ROOT."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", *patterns], cwd=ROOT, check=True,
                             capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_docs_stay_under_15_mb_in_the_tree():
    size = sum(path.stat().st_size for path in tracked("docs"))
    assert 0 < size < DOCS_LIMIT, f"docs/ holds {size / 2**20:.1f} MB"


def test_long_record_files_in_docs_are_kept_compressed():
    long = [str(path.relative_to(ROOT)) for path in tracked("docs/*.jsonl")
            if sum(1 for _ in path.open("rb")) > PLAIN_RECORD_LINES]
    assert long == [], "gzip -9n them (the tools read NAME.jsonl.gz as NAME.jsonl)"
