"""The catalog index: build, search, add, refusals, the auto type, and the sharded torchrun build."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.index import faiss_index, index_dir
from amgan_search.index.build import add_items, build_index
from amgan_search.index.embed import load_embedder, shard_bounds
from amgan_search.index.retrieve import Retriever
from amgan_search.index.search import Searcher
from builders import index_from_vectors, make_catalog, make_classifier


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    db = make_catalog(root)
    emb_dir = make_classifier(root / "embedder")
    out = root / "index"
    info = build_index(db, out, load_embedder(emb_dir, device="cpu"), workers=0, progress=False)
    return {"root": root, "db": db, "embedder": emb_dir, "index": out, "info": info}


def test_round_trip_finds_each_item_itself_first(tiny):
    searcher = Searcher(tiny["index"], use_gpu=False)
    emb = searcher.embedder(device="cpu")
    assert searcher.count == 24 and tiny["info"]["type"] == "flat"
    from amgan_search.catalog import Catalog
    from amgan_search.images import fit_square, to_tensor

    catalog = Catalog.open(tiny["db"])
    items = catalog.items()
    x = to_tensor([fit_square(catalog.read_image(p), emb.size)[0] for p in items["path"]])
    rows, scores = searcher.search(emb(x), k=3)
    assert [searcher.ids[r] for r in rows[:, 0]] == items["id"].tolist()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-3)
    # the stored float16 embeddings re-search to the same first neighbours
    rows16, _ = searcher.search(np.asarray(searcher.embeddings(), dtype=np.float32), k=1)
    assert rows16[:, 0].tolist() == list(range(24))
    hit = searcher.results(rows[:1], scores[:1])[0][0]
    assert hit.rank == 1 and hit.id == "item0" and hit.attributes == {"color": "red", "sleeve": "long"}
    assert Path(hit.path).is_file() and hit.as_dict()["split"] == hit.metadata["split"]


def test_where_filter_and_own_item_exclusion(tiny):
    searcher = Searcher(tiny["index"], use_gpu=False)
    vectors = np.asarray(searcher.embeddings()[:4], dtype=np.float32)
    rows, _ = searcher.search(vectors, k=5, where={"color": "blue"}, exclude_rows=[0, 1, 2, 3])
    assert all(searcher.items["color"][r] == "blue" for r in rows.ravel())
    assert all(r not in (q,) for q, row in enumerate(rows) for r in row)
    # fewer matches than k: padded with -1, never a non-matching item
    rows, _ = searcher.search(vectors[:1], k=10, where={"color": "red", "sleeve": "short", "split": "train"})
    found = [r for r in rows[0] if r >= 0]
    assert sorted(searcher.ids[r] for r in found) == ["item15", "item21", "item3", "item9"]
    assert (rows[0][len(found):] == -1).all()
    with pytest.raises(UserError, match="unknown field 'colour'"):
        searcher.search(vectors, k=2, where={"colour": "red"})


def test_add_puts_new_items_in_without_rebuild(tmp_path, tiny):
    emb = load_embedder(tiny["embedder"], device="cpu")
    db_small = make_catalog(tmp_path / "a", ids=range(12))
    out = tmp_path / "index"
    build_index(db_small, out, emb, workers=0, progress=False)
    db_full = make_catalog(tmp_path / "b", ids=range(16))  # same images (same seed) plus 4 new
    assert add_items(out, db_full, emb, ids=["item13"], workers=0, progress=False) == 1
    assert add_items(out, db_full, emb, workers=0, progress=False) == 3
    assert add_items(out, db_full, emb, workers=0, progress=False) == 0
    searcher = Searcher(out, use_gpu=False)
    assert searcher.count == 16 and searcher.ids[12] == "item13"
    assert len(searcher.info["added"]) == 2
    rows, _ = searcher.search(np.asarray(searcher.embeddings()[12:16], dtype=np.float32), k=1)
    assert rows[:, 0].tolist() == [12, 13, 14, 15]
    with pytest.raises(UserError, match="no item with id 'nope'"):
        add_items(out, db_full, emb, ids=["nope"], workers=0, progress=False)


def test_refuses_another_embedder(tmp_path, tiny):
    other = load_embedder(make_classifier(tmp_path / "other", seed=1), device="cpu")
    with pytest.raises(UserError, match="not this one"):
        Retriever(tiny["index"], embedder=other)
    with pytest.raises(UserError, match="not this one"):
        add_items(tiny["index"], tiny["db"], other, workers=0, progress=False)


@pytest.mark.parametrize("damage", ["missing", "garbage", "json"])
def test_missing_or_corrupt_index_is_one_line_error(tmp_path, tiny, damage):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny["index"], broken)
    faiss_file = index_dir.current(broken).folder / index_dir.INDEX_FILE
    if damage == "missing":
        faiss_file.unlink()
    elif damage == "garbage":
        faiss_file.write_bytes(b"\x00not a faiss index" * 10)
    else:
        (broken / index_dir.INFO).write_text("{ nope")
    with pytest.raises(UserError) as err:
        Searcher(broken, use_gpu=False)
    assert "\n" not in str(err.value) and str(broken) in str(err.value)


def test_missing_faiss_names_the_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    with pytest.raises(UserError) as err:
        Searcher(tiny["index"], use_gpu=False)
    assert "pip install 'amgan-search[cpu]'" in str(err.value) and "[gpu]" in str(err.value)


def test_auto_index_type_by_size_and_memory():
    assert faiss_index.choose_index_type(1_000, 512) == "flat"
    assert faiss_index.choose_index_type(49_999, 2048) == "flat"
    assert faiss_index.choose_index_type(50_000, 512) == "ivf"
    assert faiss_index.choose_index_type(2_000_000, 512) == "ivf"
    # 1M x 512 float32 = 2 GiB: over a 1 GiB budget -> PQ codes, sized to fit it
    assert faiss_index.choose_index_type(1_000_000, 512, memory_budget_mb=1024) == "ivfpq"
    params = faiss_index.index_params("ivfpq", 1_000_000, 512, memory_budget_mb=64)
    assert 512 % params["m"] == 0 and 1_000_000 * (params["m"] + 8) <= 64 * 2**20
    assert faiss_index.index_params("ivf", 1_000_000, 512)["nlist"] == 4096


def test_approximate_index_records_recall_against_exact(tmp_path):
    import pandas as pd

    from amgan_search.schema import DEFAULT_SCHEMA

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    v = (centers[rng.integers(0, 20, 2000)] + 0.3 * rng.normal(size=(2000, 32))).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.zeros((2000, 2), dtype=np.int64)
    items = pd.DataFrame({"id": [str(i) for i in range(2000)], "path": "x", "split": "train"})
    info = index_from_vectors(tmp_path / "ivf", v, labels, items, DEFAULT_SCHEMA, index_type="ivf",
                              digest="d")
    assert info["type"] == "ivf" and info["recall"]["recall@10"] >= faiss_index.RECALL_TARGET
    assert info["recall"]["tuning"][-1]["nprobe"] == info["params"]["nprobe"]
    searcher = Searcher(tmp_path / "ivf", use_gpu=False)
    assert faiss_index.faiss_nprobe(searcher.index) == info["params"]["nprobe"]


def test_shard_bounds_cover_rows_in_order():
    for n, world in [(10, 3), (2, 4), (0, 2), (7, 1)]:
        spans = [shard_bounds(n, r, world) for r in range(world)]
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_build_the_same_index(tmp_path):
    """Each rank embeds half the catalog and fills a copy of one trained IVF; rank 0 merges."""
    db = make_catalog(tmp_path, n=80)
    emb_dir = make_classifier(tmp_path / "embedder")
    one, two = tmp_path / "one", tmp_path / "two"
    emb = load_embedder(emb_dir, device="cpu")
    build_index(db, one, emb, index_type="ivf", workers=0, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "amgan_search.cli.main", "index", "build", "--db", str(db), "--out", str(two),
           "--embedder", str(emb_dir), "--index-type", "ivf", "--workers", "0", "--quiet",
           "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = Searcher(one, use_gpu=False), Searcher(two, use_gpu=False)
    assert b.info["world_size"] == 2 and b.count == a.count == 80
    assert b.ids == a.ids
    assert np.allclose(np.asarray(a.embeddings(), np.float32), np.asarray(b.embeddings(), np.float32),
                       atol=2e-3)
    queries = np.asarray(a.embeddings(), dtype=np.float32)
    rows_a, _ = a.search(queries, k=5)
    rows_b, _ = b.search(queries, k=5)
    assert (rows_a[:, 0] == np.arange(80)).all()
    assert (rows_a == rows_b).mean() > 0.98  # float noise between batch sizes may swap a near tie
    assert not list(tmp_path.glob(".two.shards"))

