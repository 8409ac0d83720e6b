"""The disentangled attribute embedding (ADDE): one chunk per attribute and a rest chunk, an
attribute memory whose arithmetic moves a query's chunk onto the target value, and its training
run, export and loading."""

import numpy as np
from pathlib import Path

import pytest
import torch
from torch import nn

from amgan_search.errors import UserError
from amgan_search.losses import memory_consistency, off_block_l1, triplet_loss
from amgan_search.nets.adde import DisentangledEncoder
from amgan_search.schema import Schema

SCHEMA = Schema.from_dict({"color": ["red", "green", "blue"], "sleeve": ["long", "short"]})


class Trunk(nn.Module):
    """A stand-in for the classifier: `pooled` is a fixed linear map of the flattened image."""

    size, embed_dim = 8, 16

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 16)

    def pooled(self, x):
        return self.proj(x.flatten(1))


def _encoder(rest="trunk", rest_weight=0.5):
    torch.manual_seed(0)
    return DisentangledEncoder(Trunk(), SCHEMA, chunk_dim=4, hidden=8, rest=rest,
                               rest_weight=rest_weight)


def test_every_chunk_of_the_embedding_has_its_weights_norm():
    enc = _encoder(rest_weight=0.5)
    f = enc.from_pooled(torch.randn(5, 16))
    assert f.shape == (5, 2 * 4 + 16) and enc.embed_dim == 24
    for block, w in zip(enc.blocks(), (1.0, 1.0, 0.5)):
        assert torch.allclose(f[:, block].norm(dim=1), torch.full((5,), w), atol=1e-5)
    assert torch.allclose(enc.embed(torch.rand(5, 3, 8, 8)).norm(dim=1), torch.ones(5), atol=1e-5)


def test_without_a_rest_chunk_the_embedding_is_the_attribute_chunks_alone():
    enc = _encoder(rest="none")
    assert enc.embed_dim == 8 and enc.from_pooled(torch.randn(2, 16)).shape == (2, 8)


def test_memory_arithmetic_moves_a_chunk_at_its_prototype_onto_the_new_values():
    enc = _encoder()
    f = enc.from_pooled(torch.randn(3, 16))
    with torch.no_grad():  # prototypes: red at the first row's colour chunk, blue elsewhere
        enc.memory.weight.zero_()
        enc.memory.weight[0, enc.block(0)] = f[0, enc.block(0)]
        enc.memory.weight[2, enc.block(0)] = torch.nn.functional.normalize(torch.ones(4), dim=0)
    out = enc.manipulate(f[:1], 0, torch.tensor([2]), old=torch.tensor([0]))
    assert torch.allclose(out[0, enc.block(0)], enc.memory.weight[2, enc.block(0)], atol=1e-5)
    # the other chunks are kept
    assert torch.allclose(out[0, enc.block(1)], f[0, enc.block(1)], atol=1e-5)
    assert torch.allclose(out[0, enc.block(2)], f[0, enc.block(2)], atol=1e-5)


def test_set_mode_replaces_the_changed_chunk_by_the_prototype_and_keeps_the_rest():
    enc = _encoder()
    f = enc.from_pooled(torch.randn(4, 16))
    with torch.no_grad():
        enc.memory.weight.normal_()
    out = enc.manipulate(f, 1, torch.tensor(1), mode="set")
    proto = torch.nn.functional.normalize(enc.memory.weight[4, enc.block(1)], dim=0)  # sleeve "short": row 3 + 1
    assert torch.allclose(out[:, enc.block(1)], proto.expand(4, -1), atol=1e-5)
    assert torch.allclose(out[:, enc.block(0)], f[:, enc.block(0)], atol=1e-5)


def test_off_block_marks_every_memory_entry_outside_its_own_chunk():
    enc = _encoder()
    mask = enc.off_block()
    assert mask.shape == (5, 24)
    assert not mask[0:3, 0:4].any() and mask[0:3, 4:].all()
    assert not mask[3:5, 4:8].any() and mask[3:5, :4].all() and mask[3:5, 8:].all()
    memory = torch.zeros(5, 24)
    memory[~mask] = 5.0
    assert off_block_l1(memory, mask) == 0
    memory[0, 10] = 2.0
    assert off_block_l1(memory, mask) > 0


def test_the_triplet_loss_is_zero_once_the_positive_is_nearer_by_the_margin():
    a = torch.tensor([[1.0, 0.0]])
    near, far = torch.tensor([[0.9, 0.1]]), torch.tensor([[-1.0, 0.0]])
    assert triplet_loss(a, near, far, 0.2) == 0
    assert triplet_loss(a, far, near, 0.2) > 0
    assert triplet_loss(a, far, near, 0.2, mask=torch.tensor([False])) == 0
    assert memory_consistency(a, a) == 0 and memory_consistency(a, far) > 0


def test_a_manipulation_names_a_known_mode():
    enc = _encoder()
    with pytest.raises(ValueError):
        enc.manipulate(enc.from_pooled(torch.randn(1, 16)), 0, torch.tensor(1), mode="swap")
    with pytest.raises(ValueError):
        DisentangledEncoder(Trunk(), SCHEMA, rest="other")


# -- the training run ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny catalog, a tiny classifier as the trunk, and an ADDE run trained on it."""
    from builders import make_catalog, make_classifier

    from amgan_search.train.adde import AddeConfig, train_adde

    root = tmp_path_factory.mktemp("adde")
    db = make_catalog(root, n=48)
    cam = make_classifier(root / "cam")
    config = AddeConfig(db=str(db), out=str(root / "run"), encoder=str(cam), encoder_epochs=2,
                        epochs=3, batch_size=16, progress=False)
    return {"root": root, "db": db, "cam": cam, "config": config, "model": train_adde(config)}


def test_a_run_keeps_a_checkpoint_per_epoch_and_the_initialised_memory_at_the_stage_change(run):
    from amgan_search.checkpoint import checkpoint_steps

    out = run["root"] / "run"
    assert sorted(s for s, _ in checkpoint_steps(out / "checkpoints")) == [1, 2, 3, 4, 5]
    assert run["model"]["memory"] == "trained" and run["model"]["epochs"] == 5
    records = [line for line in (out / "log.jsonl").read_text().splitlines() if line]
    assert len(records) == 5 and '"stage": 2' in records[-1] and "manip_top10" in records[-1]


def test_an_exported_model_loads_as_an_embedder_and_its_initialised_memory_is_the_mean_chunk(run):
    from amgan_search.index.embed import load_embedder
    from amgan_search.train.adde import init_memory
    from amgan_search.train.export import export_run

    root = run["root"]
    model = export_run(root / "run", root / "init", step=2)
    assert model["memory"] == "initialised" and model["epochs"] == 2
    export_run(root / "run", root / "adde")
    embedder = load_embedder(root / "adde", device="cpu")
    assert embedder.dim == embedder.model.embed_dim == 2 * 64 + 512
    v = embedder(torch.rand(2, 3, 32, 32))
    assert v.shape == (2, embedder.dim) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    # the initialised memory is each value's mean chunk over the training images
    enc = load_embedder(root / "init", device="cpu").model
    pooled = torch.randn(6, 512)
    labels = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1]])
    init_memory(enc, pooled, labels)
    f = enc.from_pooled(pooled)
    assert torch.allclose(enc.memory.weight[0, enc.block(0)], f[:2, enc.block(0)].mean(0), atol=1e-5)


def test_a_resume_with_another_setting_is_refused_naming_it(run):
    from dataclasses import replace

    from amgan_search.train.adde import train_adde

    with pytest.raises(UserError, match="margin"):
        train_adde(replace(run["config"], margin=0.5, resume=True))


def test_a_resumed_run_continues_to_the_same_model(run, tmp_path):
    import shutil
    from dataclasses import replace

    from amgan_search.checkpoint import load_weights
    from amgan_search.train.adde import train_adde

    out = tmp_path / "cut"
    shutil.copytree(run["root"] / "run", out)
    for name in ("config.json", "model.safetensors", "SHA256SUMS"):
        (out / name).unlink()
    for step in (4, 5):
        shutil.rmtree(out / "checkpoints" / f"step-{step:07d}")
    (out / "checkpoints" / "latest").write_text("step-0000003\n")
    train_adde(replace(run["config"], out=str(out), resume=True))
    a, b = load_weights(out / "model.safetensors"), load_weights(run["root"] / "run" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k]) for k in a)


# -- methods: an editor of pixels and a space of vectors -------------------------------------

def test_method_names_and_folders_parse_to_their_kinds(run):
    from amgan_search.index.methods import parse_methods

    root = run["root"]
    methods = parse_methods(f"real,oracle,amgan,prototype,adde,hybrid,mine={root / 'run'}")
    kinds = {m.name: m.kind for m in methods}
    assert kinds["real"] == "real" and kinds["amgan"] == "editor" and kinds["adde"] == "feature"
    assert kinds["prototype"] == "prototype" and kinds["hybrid"] == "hybrid"
    assert kinds["mine"] == "feature"
    with pytest.raises(UserError, match="unknown method"):
        parse_methods("nonsense")
    with pytest.raises(UserError, match="a hybrid is"):
        parse_methods(f"x={root / 'run'}+{root / 'run'}")
    (mixed,) = parse_methods(f"h=amgan+{root / 'run'}")  # a shipped name in a hybrid's pair
    assert mixed.kind == "hybrid" and mixed.encoder_path == str((root / "run").resolve())
    assert Path(mixed.editor_path).name == "amgan"
    with pytest.raises(UserError, match="is no model folder"):
        parse_methods(f"h=nonsense+{root / 'run'}")


def test_prototype_arithmetic_moves_a_query_onto_the_new_values_mean(tmp_path):
    import pandas as pd
    from builders import index_from_vectors

    from amgan_search.index.search import Searcher
    from amgan_search.index.spaces import PrototypeSpace

    rng = np.random.default_rng(0)
    labels = np.array([[c, s] for c in range(3) for s in range(2) for _ in range(5)])
    means = rng.normal(size=(3, 8)) * 3
    vectors = means[labels[:, 0]] + rng.normal(size=(30, 8)) * 0.1
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = pd.DataFrame({"id": [f"i{k}" for k in range(30)], "path": [""] * 30,
                          "split": ["train"] * 30})
    index_from_vectors(tmp_path / "idx", vectors.astype(np.float32), labels, items, SCHEMA)
    space = PrototypeSpace(Searcher(tmp_path / "idx"), embedder=None)
    q = space.manipulate(vectors[:1].astype(np.float32), labels[:1], 0, np.array([2]))
    rows, _ = space.searcher.search(q, 5)
    assert (space.searcher.labels[rows[0], 0] == 2).all()
    assert (space.read(vectors[:6].astype(np.float32))[:, 0] == labels[:6, 0]).all()


@pytest.fixture(scope="module")
def world(run):
    """The tiny catalog indexed with its classifier, a tiny GAN and the trained ADDE model."""
    from builders import make_manipulator

    from amgan_search.index.build import build_index
    from amgan_search.index.embed import load_embedder
    from amgan_search.train.export import export_run

    root = run["root"]
    build_index(run["db"], root / "index", load_embedder(run["cam"], device="cpu"), workers=0,
                progress=False)
    if not (root / "model").is_dir():
        export_run(root / "run", root / "model")
    return {**run, "index": root / "index", "gan": make_manipulator(root / "gan", run["cam"]),
            "adde": root / "model"}


def test_the_benchmark_runs_every_kind_of_method_and_reads_only_the_images_there_are(world, tmp_path):
    from amgan_search.index.evaluate.benchmark import BenchmarkConfig, run_benchmark
    from amgan_search.index.methods import parse_methods
    from amgan_search.io import read_jsonl

    spec = (f"real,prototype,adde={world['adde']},gan={world['gan']},"
            f"hybrid={world['gan']}+{world['adde']}")
    summary = run_benchmark(BenchmarkConfig(
        db=str(world["db"]), index=str(world["index"]), out=str(tmp_path / "bench"),
        methods=parse_methods(spec), ks=[1, 5], limit=3, graders="none", progress=False))
    records = read_jsonl(tmp_path / "bench" / "queries.jsonl")
    by = {}
    for r in records:
        by.setdefault(r["method"], []).append(r)
    assert set(by) == {"real", "prototype", "adde", "gan", "hybrid"}
    # vector-only methods have no picture to read; the others are read by the truth-less graders
    assert not any("predicted" in r or "truth" in r for m in ("prototype", "adde") for r in by[m])
    assert summary["methods"]["adde"]["edits"] is False
    assert summary["methods"]["gan"]["edits"] is True and by["gan"][0]["predicted"] == {}
    # the ADDE index was built beside the base index, once, and holds the same items
    siblings = [p for p in world["index"].parent.iterdir() if p.name.startswith("index.")]
    assert len(siblings) == 1
    for name in ("adde", "hybrid", "prototype"):
        assert 0 <= summary["methods"][name]["adde_ndcg"]["5"] <= 1


def test_a_query_is_answered_by_the_method_asked_for(world):
    from amgan_search.images import load_image
    from amgan_search.index.retrieve import Retriever

    photo = load_image(world["root"] / "catalog" / "img" / "4.png")
    adde = Retriever(world["index"], method=f"mine={world['adde']}", device="cpu", progress=False)
    result = adde.query(photo, {"color": "blue"}, k=4)
    assert result.method == "mine" and result.edited is None and result.targets == {"color": "blue"}
    assert len(result.results) == 4
    with pytest.raises(UserError, match="edits no pixels"):
        adde.query(photo, {"color": "blue"}, only_region="sleeves")
    real = Retriever(world["index"], method="real", device="cpu", progress=False)
    assert real.query(photo, {"color": "blue"}).targets == {}
    hybrid = Retriever(world["index"], method=f"h={world['gan']}+{world['adde']}", device="cpu",
                       progress=False)
    shown = hybrid.query(photo, {"color": "blue"}, k=2)
    assert shown.edited is not None and shown.edited.shape == photo.shape
    with pytest.raises(UserError, match="oracle"):
        Retriever(world["index"], method="oracle", device="cpu")


def test_the_residual_rest_is_what_the_values_the_chunks_read_do_not_explain():
    enc = _encoder(rest="residual")
    pooled = torch.randn(12, 16)
    labels = torch.tensor([[i % 3, i % 2] for i in range(12)])
    enc.set_rest_means(pooled, labels)
    mean = pooled.mean(0)
    red = pooled[labels[:, 0] == 0].mean(0) - mean
    short = pooled[labels[:, 1] == 1].mean(0) - mean
    rest = enc.from_pooled(pooled[:1], torch.tensor([[0, 1]]))[0, enc.block(2)]
    expected = torch.nn.functional.normalize(pooled[0] - mean - red - short, dim=0) * 0.5
    assert torch.allclose(rest, expected, atol=1e-5)
    # without labels, the values the chunks read are taken out
    read = enc.predict(enc.from_pooled(pooled[:1], torch.tensor([[0, 1]])))
    assert torch.allclose(enc.from_pooled(pooled[:1]), enc.from_pooled(pooled[:1], read), atol=1e-5)


def test_a_run_in_progress_exports_as_what_it_is_never_as_another_kind(run, tmp_path):
    import shutil

    from amgan_search.train.export import export_run

    cut = tmp_path / "cut"
    shutil.copytree(run["root"] / "run", cut)
    for name in ("config.json", "model.safetensors", "SHA256SUMS"):
        (cut / name).unlink()
    with pytest.raises(UserError, match="no model yet"):
        export_run(cut, tmp_path / "m")
    assert export_run(cut, tmp_path / "m", step=3)["kind"] == "adde"
