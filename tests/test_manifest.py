"""data_manifest.csv and `data verify`: existence and sha256 of each data set's files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from amgan_search.cli.main import cli
from amgan_search.errors import UserError
from amgan_search.manifest import (MISMATCH, MISSING, OK, PRESENT, describe, failures,
                                   load_manifest, verify, verify_report)

REAL_DFS = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepfashion-synthesis"


def test_manifest_lists_the_known_data_sets():
    sets = load_manifest()
    assert list(sets) == ["deepfashion-synthesis", "shopping100k", "synthetic"]
    dfs = sets["deepfashion-synthesis"]
    assert dfs.files == ("G2.h5", "language_original.mat", "ind.mat")
    assert dfs.sha256 == (None,
                          "7f5a836f3360c6ad64a251de2e5359ded048934b68401ca3092ff39de509cb71",
                          "2a3f53dcd4ada077706923cc9f988f94d0b5a8c6f4e755725f55c714dcc6fcd4")
    assert dfs.images == 78_979 and "research" in dfs.license
    assert sets["synthetic"].license == "MIT" and sets["synthetic"].images is None
    assert "catalog synth" in sets["synthetic"].source
    assert sets["shopping100k"].format == "shopping100k"


@pytest.fixture
def small_manifest(tmp_path):
    good, bad = b"good contents", b"expected contents"
    path = tmp_path / "manifest.csv"
    path.write_text(
        "name,format,files,sha256,images,attributes,license,source\n"
        f"toy,csv,good.bin;bad.bin;free.bin;absent.bin,"
        f"{hashlib.sha256(good).hexdigest()};{hashlib.sha256(bad).hexdigest()};unknown;unknown,"
        "3,color(2),MIT,here\n")
    root = tmp_path / "data"
    root.mkdir()
    (root / "good.bin").write_bytes(good)
    (root / "bad.bin").write_bytes(b"something else")
    (root / "free.bin").write_bytes(b"anything")
    return path, root


def test_verify_reports_each_file(small_manifest):
    manifest, root = small_manifest
    results = verify("toy", root, manifest=manifest)
    assert results == [("good.bin", OK), ("bad.bin", MISMATCH), ("free.bin", PRESENT),
                       ("absent.bin", MISSING)]
    assert failures(results) == [("bad.bin", MISMATCH), ("absent.bin", MISSING)]
    with pytest.raises(UserError, match="unknown data set 'nope'"):
        verify("nope", root, manifest=manifest)
    with pytest.raises(UserError, match="no such folder"):
        verify("toy", root / "missing", manifest=manifest)


def test_verify_report_lines_up_the_files_and_names_what_is_wrong(small_manifest):
    manifest, root = small_manifest
    table, problem = verify_report("toy", root, manifest=manifest)
    assert table.splitlines() == ["good.bin    ok", "bad.bin     sha256 mismatch",
                                  "free.bin    present (no known sha256)", "absent.bin  missing"]
    assert problem == f"{root}: 2 of 4 toy files missing or mismatched (bad.bin: sha256 mismatch, " \
                      "absent.bin: missing)"
    (root / "absent.bin").write_bytes(b"now here")
    (root / "bad.bin").write_bytes(b"expected contents")
    assert verify_report("toy", root, manifest=manifest)[1] is None


def test_describe_gives_size_files_and_source(small_manifest):
    toy = load_manifest(small_manifest[0])["toy"]
    assert describe(toy) == ("toy: 3 images; color(2); license: MIT\n"
                             "    files: good.bin, bad.bin, free.bin, absent.bin\n    source: here")


def test_manifest_with_misaligned_checksums_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("name,format,files,sha256,images,attributes,license,source\nx,csv,a;b,unknown,,,,\n")
    with pytest.raises(UserError, match="m.csv:2: 2 files but 1 sha256"):
        load_manifest(path)


@pytest.mark.skipif(not (REAL_DFS / "ind.mat").is_file(), reason="../shared data absent")
def test_cli_verify_on_the_real_label_files():
    """The real .mat files match their published sha256; G2.h5 is not here, so the check fails."""
    result = CliRunner().invoke(cli, ["data", "verify", "deepfashion-synthesis", "--root", str(REAL_DFS)])
    assert "language_original.mat  ok" in result.stdout
    assert "ind.mat                ok" in result.stdout
    assert "G2.h5                  missing" in result.stdout
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "1 of 3 deepfashion-synthesis files missing" in lines[0]


def test_cli_verify_good_and_bad_folders(tmp_path):
    good = tmp_path / "synth"
    good.mkdir()
    (good / "catalog.csv").write_text("id,path\n")
    (good / "schema.json").write_text("{}")
    result = CliRunner().invoke(cli, ["data", "verify", "synthetic", "--root", str(good)])
    assert result.exit_code == 0, result.output
    assert "catalog.csv  present" in result.stdout

    bad = tmp_path / "dfs"
    bad.mkdir()
    for name in ("G2.h5", "language_original.mat", "ind.mat"):
        (bad / name).write_bytes(b"not the real file")
    result = CliRunner().invoke(cli, ["data", "verify", "deepfashion-synthesis", "--root", str(bad)])
    assert result.exit_code == 2
    assert "G2.h5                  present" in result.stdout
    assert "language_original.mat  sha256 mismatch" in result.stdout
    assert result.stderr.strip().count("\n") == 0 and "2 of 3" in result.stderr

    result = CliRunner().invoke(cli, ["data", "verify", "imagenet", "--root", str(bad)])
    assert result.exit_code == 2 and "unknown data set 'imagenet'" in result.stderr


def test_cli_data_list():
    result = CliRunner().invoke(cli, ["data", "list"])
    assert result.exit_code == 0
    assert "deepfashion-synthesis: 78,979 images" in result.stdout
    assert "shopping100k" in result.stdout and "synthetic" in result.stdout
