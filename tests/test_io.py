"""JSON-lines records, plain and gzip-compressed: how results are kept small in the repository."""

from __future__ import annotations

import gzip
import json

import pytest

from amgan_search.errors import UserError
from amgan_search.io import JsonlWriter, jsonl_exists, packed, read_jsonl, write_jsonl

RECORDS = [{"query": str(i), "hit": i % 2 == 0} for i in range(5)]


def test_compressed_records_read_as_the_plain_file_and_appends_after_them(tmp_path):
    plain = tmp_path / "queries.jsonl"
    write_jsonl(plain, RECORDS[:3])
    with open(plain, "rb") as f, gzip.open(packed(plain), "wb") as z:
        z.write(f.read())
    plain.unlink()
    assert packed(plain).name == "queries.jsonl.gz" and jsonl_exists(plain)
    assert read_jsonl(plain) == read_jsonl(packed(plain)) == RECORDS[:3]
    # a resumed run appends to the plain file; a reader sees both, the compressed ones first
    with JsonlWriter(plain, compact=True) as writer:
        writer.write(RECORDS[3:])
    assert read_jsonl(plain) == RECORDS


def test_a_writer_with_nothing_to_add_leaves_no_empty_file_beside_the_compressed_one(tmp_path):
    plain = tmp_path / "queries.jsonl"
    write_jsonl(plain, RECORDS)
    with open(plain, "rb") as f, gzip.open(packed(plain), "wb") as z:
        z.write(f.read())
    plain.unlink()
    with JsonlWriter(plain) as writer:
        writer.write([])
    assert not plain.exists() and read_jsonl(plain) == RECORDS


def test_records_replaced_where_they_are_kept_compressed_are_written_compressed(tmp_path):
    plain = tmp_path / "edits.jsonl"
    write_jsonl(packed(plain), [])  # a compressed file alone: the results' form
    packed(plain).write_bytes(gzip.compress(b'{"old": 1}\n'))
    write_jsonl(plain, RECORDS)
    assert not plain.exists() and read_jsonl(plain) == RECORDS
    first = packed(plain).read_bytes()
    write_jsonl(plain, RECORDS)
    assert packed(plain).read_bytes() == first  # no time or name in the header: the same bytes
    assert gzip.decompress(first).decode() == "".join(json.dumps(r) + "\n" for r in RECORDS)


def test_a_damaged_compressed_file_is_refused_in_one_line(tmp_path):
    plain = tmp_path / "queries.jsonl"
    packed(plain).write_bytes(gzip.compress(b'{"a": 1}\n' * 1000)[:60])
    with pytest.raises(UserError, match="queries.jsonl.gz: damaged compressed records"):
        read_jsonl(plain)
