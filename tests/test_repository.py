"""What the repository keeps: results that stay small, and no folder of the machine that wrote
them in any shipped file, document or result record."""

from __future__ import annotations

import gzip
import json
import re
import struct
from pathlib import Path

import pytest

from builders import ROOT, tracked

# 15 MB held every result until the feature-space comparison, whose per-query records (six runs,
# 5.1 MB compressed, docs/results/feature-space) every table of docs/feature-space.md is computed
# from; the limit keeps the next addition a decision.
DOCS_LIMIT = 20 * 2**20
# A record file longer than this is kept gzip-compressed (NAME.jsonl.gz, `io.packed`); the rows
# files the experiments append to, one line a run, stay plain and short.
PLAIN_RECORD_LINES = 500


def test_docs_stay_under_20_mb_in_the_tree():
    size = sum(path.stat().st_size for path in tracked("docs"))
    assert 0 < size < DOCS_LIMIT, f"docs/ holds {size / 2**20:.1f} MB"


def test_long_record_files_in_docs_are_kept_compressed():
    long = [str(path.relative_to(ROOT)) for path in tracked("docs/*.jsonl")
            if sum(1 for _ in path.open("rb")) > PLAIN_RECORD_LINES]
    assert long == [], "gzip -9n them (the tools read NAME.jsonl.gz as NAME.jsonl)"


# An absolute path into a person's or a machine's own folders. System paths a command names on
# purpose (/usr/bin/chromium, /etc/passwd in a test of refusals, /proc in a test) are not these.
MACHINE_PATH = re.compile(rb"(?<![\w.~-])(?:/(?:home|Users|root|work|tmp|private|mnt|scratch)/"
                          rb"|[A-Za-z]:\\\\?Users\\)")


def _text_of(path: Path) -> bytes:
    """What a reader of the file sees: gzip-compressed records decompressed, a safetensors
    file's header (its metadata), anything else as it is."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".safetensors":
        (size,) = struct.unpack("<Q", data[:8])
        return data[8:8 + size]
    return data


@pytest.mark.slow
def test_no_machine_path_in_any_tracked_file_outside_the_tests():
    """Shipped models' config.json, results' run.json, summary.json, compare.json and records keep
    paths as the user gave them (relative to where the command ran), never a machine's folders."""
    found = []
    for path in tracked("."):
        if path.relative_to(ROOT).parts[0] == "tests":
            continue  # tests name folders of their own (tmp_path) to check how they are handled
        for number, line in enumerate(_text_of(path).splitlines(), start=1):
            if MACHINE_PATH.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line[:120]!r}")
    assert found == [], "\n".join(found[:20])


def test_the_machine_path_check_sees_what_it_must(tmp_path):
    for line in (b'"db": "/work/main/data/eval.db"', b"path: /home/ada/x.png", b'"C:\\Users\\ada"',
                 b"loading /tmp/amgan-x/index"):
        assert MACHINE_PATH.search(line), line
    for line in (b'"db": "data/eval.db"', b"/usr/bin/chromium", b"GET /api/items/{id}/image",
                 b"runs/work/x", b"~/work/x"):
        assert not MACHINE_PATH.search(line), line
    packed = tmp_path / "r.jsonl.gz"
    packed.write_bytes(gzip.compress(json.dumps({"model": "/root/m"}).encode()))
    assert MACHINE_PATH.search(_text_of(packed))
