"""Our ResNet is torchvision's: same names, shapes, initial weights and outputs, so every state dict
written with a torchvision trunk loads unchanged; and the query path no longer imports torchvision."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from amgan_search.nets.classifier import ARCHS, OUTPUT_STRIDES, AttributeClassifier
from amgan_search.nets.resnet import resnet
from amgan_search.schema import DEFAULT_SCHEMA

torchvision = pytest.importorskip("torchvision")

DILATIONS = ([False, False, False], [False, False, True], [False, True, True])


def _pair(arch, dilate, seed=0, device="cpu"):
    with torch.device(device):  # "meta": shapes and layout without the cost of drawing weights
        torch.manual_seed(seed)
        theirs = getattr(torchvision.models, arch)(weights=None, replace_stride_with_dilation=dilate)
        torch.manual_seed(seed)
        ours = resnet(arch, replace_stride_with_dilation=dilate)
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_same_parameter_names_shapes_and_layout_as_torchvision(arch):
    for dilate in DILATIONS if arch in ("resnet50", "resnet101") else DILATIONS[:1]:
        ours, theirs = _pair(arch, dilate, device="meta")
        mine, ref = ours.state_dict(), theirs.state_dict()
        assert list(mine) == list(ref)
        assert all(mine[k].shape == v.shape for k, v in ref.items())
        # The stride/dilation layout that the output stride relies on.
        for a, b in zip(ours.modules(), theirs.modules()):
            assert type(a).__name__ == type(b).__name__
            if isinstance(a, torch.nn.Conv2d):
                assert (a.stride, a.dilation, a.padding) == (b.stride, b.dilation, b.padding)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_a_seeded_model_starts_from_torchvision_s_initial_weights(arch):
    ours, theirs = _pair(arch, DILATIONS[0])
    mine = ours.state_dict()
    for name, tensor in theirs.state_dict().items():
        assert torch.equal(mine[name], tensor), name  # same draws in the same order


@pytest.mark.parametrize("arch, dilate", [("resnet18", DILATIONS[0]), ("resnet34", DILATIONS[0]),
                                          ("resnet50", DILATIONS[2])])
def test_identical_outputs_for_the_same_weights(arch, dilate):
    ours, theirs = _pair(arch, dilate, seed=3)
    # Trained-looking BN statistics, so the comparison is not of an identity BN.
    with torch.no_grad():
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(2, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def _torchvision_trunk(arch, output_stride):
    """The classifier's trunk as it was built from torchvision before our own definitions."""
    unstrided = {32: [], 16: ["layer4"], 8: ["layer3", "layer4"]}[output_stride]
    builder = getattr(torchvision.models, arch)
    if arch in ("resnet50", "resnet101"):
        return builder(weights=None, replace_stride_with_dilation=[
            False, "layer3" in unstrided, "layer4" in unstrided])
    net = builder(weights=None)
    for name in unstrided:
        getattr(net, name)[0].conv1.stride = (1, 1)
        getattr(net, name)[0].downsample[0].stride = (1, 1)
    return net


@pytest.mark.parametrize("output_stride", OUTPUT_STRIDES)
def test_the_classifier_trunk_reads_torchvision_weights_and_answers_the_same(output_stride):
    reference = _torchvision_trunk("resnet18", output_stride).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    model = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32,
                                output_stride=output_stride).eval()
    model.backbone.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    b = reference
    with torch.no_grad():
        want = b.layer4(b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(
            (x - model.mean) / model.std))))))))
        assert torch.equal(model.features(x), want)


def test_the_shipped_classifiers_load_strictly():
    from amgan_search.registry import load_model, shipped_model

    for name in ("classifier-cam", "classifier-eval"):
        model = load_model(shipped_model(name), "classifier")  # strict: every name must fit
        assert model.features(torch.rand(1, 3, model.size, model.size)).ndim == 4


@pytest.mark.slow
def test_a_cold_query_imports_neither_torchvision_nor_dynamo(tmp_path):
    """A query in a fresh process: edit, embed, search; then which heavy modules it loaded."""
    from amgan_search.index.build import build_from_vectors
    from amgan_search.index.embed import load_embedder
    from amgan_search.index.index_dir import item_records
    import pandas as pd

    embedder = load_embedder(None, device="cpu")
    rng = np.random.default_rng(0)
    v = rng.standard_normal((20, embedder.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    labels = np.zeros((20, len(DEFAULT_SCHEMA.attributes)), dtype=np.int64)
    items = pd.DataFrame({"id": [str(i) for i in range(20)], "path": [f"{i}.png" for i in range(20)],
                          "split": "train"})
    build_from_vectors(tmp_path / "idx", v, labels, item_records(items, labels, DEFAULT_SCHEMA),
                       DEFAULT_SCHEMA, embedder.meta(), index_type="flat")
    photo = tmp_path / "photo.png"
    from amgan_search.images import save_image

    save_image(photo, rng.integers(0, 256, (40, 30, 3)).astype(np.uint8))
    script = (
        "import json, sys\n"
        "from amgan_search.cli.main import cli\n"
        f"try: cli(['query', {str(photo)!r}, '--index', {str(tmp_path / 'idx')!r}, '--color', 'red',"
        " '--json', '--device', 'cpu'])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "heavy = sorted({m.split('.')[0] if not m.startswith('torch.') else '.'.join(m.split('.')[:2])"
        " for m in sys.modules if m.split('.')[0] in ('torchvision', 'sympy')"
        " or m.startswith(('torch._dynamo', 'torch._inductor'))})\n"
        "print('HEAVY', json.dumps(heavy))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.split("HEAVY", 1)[0])["results"]
    assert json.loads(out.stdout.rsplit("HEAVY", 1)[1]) == []
