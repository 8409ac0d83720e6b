"""How the query path runs: fp32 stays bit for bit the plain networks, bf16 runs and agrees, "auto"
falls back to fp32 without native bf16, compilation falls back with one warning line, and the
thread policy gives each role its count."""

import numpy as np
import pytest
import torch

from amgan_search import device
from amgan_search.device import (FastPath, compile_paths, default_threads, resolve_precision,
                                 set_torch_threads)
from amgan_search.editors import Manipulator
from amgan_search.errors import UserError
from amgan_search.index.embed import Embedder
from amgan_search.nets.amgan import EditNet
from amgan_search.nets.classifier import AttributeClassifier
from amgan_search.schema import DEFAULT_SCHEMA

SIZE = 32


def _models(precision="fp32"):
    """An untrained editor and embedder (a seeded ResNet-18 at 32 px, a small generator)."""
    torch.manual_seed(0)
    classifier = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=SIZE).eval()
    net = EditNet(DEFAULT_SCHEMA.condition_dim, conv_dim=8, repeat_num=1, upsample="resize").eval()
    editor = Manipulator(net.requires_grad_(False), DEFAULT_SCHEMA, SIZE,
                         classifier.requires_grad_(False), {}, precision=precision)
    torch.manual_seed(0)
    own = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=SIZE).eval().requires_grad_(False)
    return editor, Embedder(own, size=SIZE, dim=own.embed_dim, digest="untrained", precision=precision)


def _photo(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (45, 37, 3)).astype(np.uint8)


# -- choosing the precision -----------------------------------------------------------------------

def test_auto_is_bf16_only_with_native_bf16(monkeypatch):
    monkeypatch.setattr(device, "native_bf16", lambda d="cpu": False)
    assert resolve_precision("auto") == resolve_precision(None) == "fp32"
    monkeypatch.setattr(device, "native_bf16", lambda d="cpu": True)
    assert resolve_precision("auto") == "bf16"
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    with pytest.raises(UserError, match="unknown precision 'fp16'; valid: auto, fp32, bf16"):
        resolve_precision("fp16")


def test_emulated_bf16_is_not_native_on_x86(monkeypatch):
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 CPU flags")
    # oneDNN says yes on any AVX-512 CPU; only AVX512_BF16 or AMX count.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not device.native_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert device.native_bf16("cpu")


# -- fp32: the plain networks, bit for bit --------------------------------------------------------

def test_fp32_runs_the_networks_themselves_bit_for_bit():
    editor, embedder = _models("fp32")
    plain_editor, plain_embedder = _models("fp32")
    x = torch.rand(2, 3, SIZE, SIZE)
    c = DEFAULT_SCHEMA.condition(torch.zeros(2, 2, dtype=torch.long), 0)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(editor._generate(x, c, None),
                                                     plain_editor.net(x, c)))
        assert torch.equal(editor.predict(x), plain_editor.classifier.predict(x)[0])
        assert torch.equal(embedder.fast(x), plain_embedder.model.embed(x))
    edited, masks = editor.edit(_photo(), color="red")
    again, _ = plain_editor.edit(_photo(), color="red")
    assert np.array_equal(edited, again)


def test_switching_back_to_fp32_restores_the_plain_layout_and_results():
    editor, embedder = _models("fp32")
    before = embedder.embed_image(_photo())
    edited, _ = editor.edit(_photo(), color="blue")
    editor.use_precision("bf16"), embedder.use_precision("bf16")
    assert editor.net.G.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    editor.use_precision("fp32"), embedder.use_precision("fp32")
    assert all(p.is_contiguous() for p in embedder.model.parameters())
    assert np.array_equal(embedder.embed_image(_photo()), before)
    assert np.array_equal(editor.edit(_photo(), color="blue")[0], edited)


# -- bf16: runs anywhere (autocast), agrees with fp32 ---------------------------------------------

def test_bf16_edit_and_embedding_run_and_stay_close_to_fp32():
    editor32, embedder32 = _models("fp32")
    editor16, embedder16 = _models("bf16")
    assert (editor16.precision, embedder16.precision) == ("bf16", "bf16")
    edited32, masks32 = editor32.edit(_photo(1), color="red", sleeve="long")
    edited16, masks16 = editor16.edit(_photo(1), color="red", sleeve="long")
    assert edited16.shape == edited32.shape and edited16.dtype == np.uint8
    assert set(masks16) == set(masks32)
    assert np.abs(edited16.astype(int) - edited32).mean() < 3  # of 255
    v32, v16 = embedder32.embed_image(edited32), embedder16.embed_image(edited32)
    assert v16.dtype == np.float32 and np.allclose(np.linalg.norm(v16, axis=1), 1, atol=1e-5)
    assert float((v32 * v16).sum()) > 0.99  # cosine of the fp32 and bf16 embeddings
    x = torch.rand(1, 3, SIZE, SIZE)
    assert embedder16.fast(x).dtype == torch.float32


# -- the retriever passes the choice on -----------------------------------------------------------

@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """A 60-item index of the fp32 embeddings of random photos, with the untrained embedder's digest."""
    import pandas as pd

    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.index_dir import item_records

    _, embedder = _models("fp32")
    photos = [_photo(seed) for seed in range(60)]
    vectors = np.concatenate([embedder.embed_image(p) for p in photos])
    labels = np.zeros((60, len(DEFAULT_SCHEMA.attributes)), dtype=np.int64)
    items = pd.DataFrame({"id": [str(i) for i in range(60)], "path": [f"{i}.png" for i in range(60)],
                          "split": "train"})
    out = tmp_path_factory.mktemp("precision") / "index"
    build_from_vectors(out, vectors, labels, item_records(items, labels, DEFAULT_SCHEMA),
                       DEFAULT_SCHEMA, embedder.meta(), index_type="flat", progress=False)
    return out


def _retriever(index, precision):
    from amgan_search.index.retrieve import Retriever

    editor, embedder = _models("fp32")
    return Retriever(index, embedder=embedder, manipulator=editor, precision=precision)


def test_the_retriever_sets_the_precision_of_its_networks(index):
    r = _retriever(index, "bf16")
    assert (r.precision, r.manipulator.precision) == ("bf16", "bf16")
    r32 = _retriever(index, "fp32")
    assert (r32.precision, r32.manipulator.precision) == ("fp32", "fp32")
    a, b = r.query(_photo(3), {"color": "red"}, k=5), r32.query(_photo(3), {"color": "red"}, k=5)
    assert len(a.results) == len(b.results) == 5
    with pytest.raises(UserError, match="unknown precision"):
        _retriever(index, "half")


def test_a_failed_compilation_falls_back_with_one_warning_line(index, monkeypatch):
    r = _retriever(index, "fp32")
    before = r.query(_photo(4), {"color": "red"}, k=5).results

    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("C++ compiler not found\nmore detail")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    lines = []
    assert r.compile(progress=lines.append) is False and r.compiled is False
    assert lines[0].startswith("compiling the classifier reading the photo (1/3)")
    assert lines[-1] == ("warning: torch.compile failed on the classifier reading the photo "
                         "(RuntimeError: C++ compiler not found); running uncompiled")
    assert all(p.compiled is None for p in (r.manipulator._read, r.manipulator._generate,
                                              r.embedder.fast))
    assert r.query(_photo(4), {"color": "red"}, k=5).results == before


@pytest.mark.slow
def test_compiled_embedder_is_what_runs_after_warm_up_and_agrees(index, monkeypatch):
    """The embedder alone (compiling all three networks takes minutes on a shared CPU)."""
    _, embedder = _models("fp32")
    want = embedder.embed_image(_photo(5))
    assert compile_paths(embedder.compile_steps(), progress=lambda line: None)
    monkeypatch.setattr(FastPath, "stance", "fail_on_recompile")  # a miss would raise
    got = embedder.embed_image(_photo(5))
    assert float((want * got).sum()) > 0.9999
    monkeypatch.setattr(FastPath, "stance", "eager_on_recompile")
    assert embedder(torch.rand(3, 3, SIZE, SIZE)).shape == (3, embedder.dim)  # uncompiled size


# -- threads --------------------------------------------------------------------------------------

def test_thread_policy_per_role(monkeypatch):
    monkeypatch.setattr(device, "available_cores", lambda: 2)
    assert default_threads("query") == default_threads("serve") == 1
    assert default_threads("build", workers=2) == 1 and default_threads("build") == 2
    monkeypatch.setattr(device, "available_cores", lambda: 16)
    assert default_threads("query") == 4 and default_threads("serve") == 15
    assert default_threads("build", workers=2) == 14
    monkeypatch.setenv("WORLD_SIZE", "2")  # two torchrun ranks share the cores
    assert default_threads("build", workers=2) == 6


def test_set_threads_takes_the_argument_then_the_environment_then_the_policy(monkeypatch):
    monkeypatch.setattr(device, "available_cores", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert set_torch_threads(3) == 3 == torch.get_num_threads()
    assert set_torch_threads(None, "query") == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_torch_threads(None, "build", workers=2) == 2
    with pytest.raises(UserError, match="threads must be at least 1"):
        set_torch_threads(0)
