"""The CNN+CAM classifier: embedder, class activation maps, training, resume, roles, CLI."""

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch.utils.data import Dataset

from amgan_search import checkpoint as ck
from amgan_search import registry
from amgan_search.errors import UserError
from amgan_search.images import save_image, to_uint8
from amgan_search.nets.classifier import (AttributeClassifier, classifier_digest,
                                          default_output_stride)
from amgan_search.registry import load_model, shipped_model
from amgan_search.schema import MISSING, Schema
from amgan_search.train.classifier import ClassifierConfig, train_classifier
from amgan_search.train.classifier_data import class_weights, top_confusions
from amgan_search.train.classifier_init import imagenet_weights_path, initialise

SCHEMA = Schema.from_dict({"color": ["red", "green", "blue"], "corner": ["tl", "tr", "bl", "br"]})
RGB = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
SIZE = 32


class Squares(Dataset):
    """Gray noise with one colored square in a corner: color and corner are the labels."""

    def __init__(self, n, seed=0, side=12, missing=0.0):
        g = np.random.default_rng(seed)
        self.side = side
        self.labels = np.stack([g.integers(0, 3, n), g.integers(0, 4, n)], 1).astype(np.int64)
        self.noise = g.integers(0, 2**31, n)
        # Missing corner labels exercise ignore_index; the image still has its square.
        self.corner = self.labels[:, 1].copy()
        self.labels[g.random(n) < missing, 1] = MISSING
        self.schema = SCHEMA

    def __len__(self):
        return len(self.labels)

    def box(self, i):
        corner, margin = self.corner[i], 2
        top = margin if corner in (0, 1) else SIZE - self.side - margin
        left = margin if corner in (0, 2) else SIZE - self.side - margin
        return top, left

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(int(self.noise[i]))
        img = 0.45 + 0.1 * torch.rand(3, SIZE, SIZE, generator=g)
        top, left = self.box(i)
        color = torch.tensor(RGB[self.labels[i, 0]]).view(3, 1, 1)
        img[:, top:top + self.side, left:left + self.side] = color
        return img, torch.from_numpy(self.labels[i].copy())


def tiny_config(out, **kw):
    base = dict(out=str(out), size=SIZE, epochs=1, batch_size=16, workers=0, progress=False,
                val_fraction=0.0, log_every=1)
    return ClassifierConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ResNet-18 CAM network trained 18 steps on colored squares (seed 0)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cls") / "cam"
    val = Squares(64, seed=100)
    summary = train_classifier(
        tiny_config(out, epochs=3, batch_size=32, lr=2e-3, seed=0),
        train_set=Squares(192, seed=0, missing=0.1), val_set=val, schema=SCHEMA)
    return out, summary, val


# -- the model surface ----------------------------------------------------------------------------

def test_output_stride_keeps_a_cam_map_of_at_least_8x8():
    assert default_output_stride(64) == 8 and default_output_stride(128) == 16
    assert default_output_stride(256) == 32 and default_output_stride(32) == 8
    assert default_output_stride(64, role="eval") == 16
    assert default_output_stride(128, role="eval") == 32
    for size in (64, 128):
        model = AttributeClassifier(SCHEMA, size=size).eval()
        assert model.features(torch.rand(1, 3, size, size)).shape[-1] >= 8


def test_embed_is_unit_norm_float32_even_under_bf16_autocast():
    model = AttributeClassifier(SCHEMA, size=SIZE).eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    e = model.embed(x)
    assert e.shape == (3, model.embed_dim) == (3, 512) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eb = model.embed(x)
    assert eb.dtype == torch.float32 and torch.allclose(eb.norm(dim=1), torch.ones(3), atol=1e-3)
    maps, pooled, logits = model.forward_all(x)
    assert torch.allclose(pooled, maps.mean(dim=(2, 3))) and [z.shape[1] for z in logits] == [3, 4]


def test_cam_shape_range_and_value_forms():
    model = AttributeClassifier(SCHEMA, size=SIZE).eval()
    x = torch.rand(4, 3, SIZE, SIZE)
    by_name = model.cam(x, "color", "blue")
    assert by_name.shape == (4, 1, SIZE, SIZE) and not by_name.requires_grad
    assert by_name.min() >= 0 and by_name.max() <= 1
    peaks = by_name.flatten(1).amax(1)
    assert torch.all((peaks == 1) | (peaks == 0))
    assert torch.equal(by_name, model.cam(x, 0, 2))
    per_sample = model.cam(x, "color", torch.tensor([2, 0, 2, 1]))
    assert torch.equal(per_sample[0], by_name[0]) and torch.equal(per_sample[2], by_name[2])
    with pytest.raises(UserError, match="unknown color value"):
        model.cam(x, "color", "mauve")
    with pytest.raises(UserError):
        model.cam(x, "color", torch.tensor([0, 1, 2, 3]))


def test_cam_peaks_where_the_planted_evidence_is():
    model = AttributeClassifier(SCHEMA, size=SIZE).eval()
    planted = torch.zeros(3, 512, 4, 4)
    planted[:, 5, 0, 3] = 2.0   # channel 5 lights the top-right cell
    planted[:, 9, 3, 0] = 1.0   # channel 9 the bottom-left one
    model.features = lambda x: planted
    with torch.no_grad():
        model.heads[0].weight.zero_()
        model.heads[0].weight[0, 5] = 1.0    # red: channel 5
        model.heads[0].weight[1, 9] = 0.5    # green: channel 9
        model.heads[0].weight[2, 5] = -1.0   # blue: only negative evidence (on the garment, say)
    cam = model.cam(torch.zeros(3, 3, SIZE, SIZE), "color", torch.tensor([0, 1, 2]))
    red, green, blue = cam[0, 0], cam[1, 0], cam[2, 0]
    assert red.max() == 1 and red[:16, 16:].max() == 1 and red[16:, :16].max() == 0
    assert green.max() == 1 and green[16:, :16].max() == 1 and green[:16, 16:].max() == 0
    assert blue.max() == 0  # not turned into attention on everything else


# -- training -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cam_of_a_trained_network_finds_the_colored_square(trained):
    out, summary, val = trained
    assert summary["best"]["accuracy"]["color"] >= 0.8
    model = load_model(out, "classifier")
    x = torch.stack([val[i][0] for i in range(len(val))])
    cam = model.cam(x, "color", torch.from_numpy(val.labels[:, 0]))
    peak = cam.flatten(1).argmax(1)
    rows, cols = peak // SIZE, peak % SIZE
    quadrant = (rows >= SIZE // 2).long() * 2 + (cols >= SIZE // 2).long()
    # Chance is 0.25: the map for the true color must sit on the square most of the time.
    assert (quadrant == torch.from_numpy(val.corner)).float().mean() >= 0.6


@pytest.mark.slow
def test_training_lowers_the_loss(trained):
    out, _, _ = trained
    data = Squares(64, seed=5)
    x = torch.stack([data[i][0] for i in range(64)])
    y = torch.from_numpy(data.labels)

    def loss(model):
        with torch.no_grad():
            return sum(F.cross_entropy(z, y[:, j], ignore_index=MISSING)
                       for j, z in enumerate(model(x))).item()

    torch.manual_seed(0)
    fresh = AttributeClassifier(SCHEMA, size=SIZE, seed=0).eval()
    assert loss(load_model(out, "classifier")) < 0.5 * loss(fresh)
    logged = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
              if json.loads(line)["event"] == "train"]
    assert np.mean(logged[-3:]) < np.mean(logged[:3])


@pytest.mark.slow
def test_model_dir_records_what_the_model_is(trained):
    out, _, _ = trained
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "classifier" and config["role"] == "cam"
    assert (config["arch"], config["size"], config["output_stride"], config["seed"]) == ("resnet18", SIZE, 8, 0)
    assert config["schema"] == SCHEMA.to_dict() and config["init"] == "scratch"
    assert config["metrics"]["validation"]["accuracy"]["color"] is not None
    model = load_model(out, "classifier")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert classifier_digest(out) == hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()


def test_class_weights_favour_rare_values_and_average_one():
    labels = np.array([[0, 0]] * 9 + [[1, MISSING]])
    w = class_weights(labels, SCHEMA)
    assert w[0][1] == pytest.approx(3 * w[0][0]) and w[0][2] == 0
    assert (w[0][0] * 9 + w[0][1]) / 10 == pytest.approx(1.0)


@pytest.mark.slow
def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    data, val = Squares(32, seed=1), Squares(16, seed=2)
    kw = dict(train_set=data, val_set=val, schema=SCHEMA)
    whole = train_classifier(tiny_config(tmp_path / "a", epochs=2), **kw)
    killed = train_classifier(tiny_config(tmp_path / "b", epochs=2, max_steps=3), **kw)
    assert killed["stopped"] and killed["step"] == 3
    with pytest.raises(UserError, match="holds a training run already; resume it"):
        train_classifier(tiny_config(tmp_path / "b", epochs=2), **kw)
    resumed = train_classifier(tiny_config(tmp_path / "b", epochs=2, resume=True), **kw)
    assert whole["step"] == resumed["step"] == 4
    a, _ = ck.load_checkpoint(ck.latest_checkpoint(tmp_path / "a"))
    b, state = ck.load_checkpoint(ck.latest_checkpoint(tmp_path / "b"))
    assert state["step"] == 4
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-5), name


@pytest.mark.slow
def test_resume_to_more_epochs_continues_the_step_count(tmp_path):
    data, val = Squares(32, seed=1), Squares(16, seed=2)
    kw = dict(train_set=data, val_set=val, schema=SCHEMA)
    train_classifier(tiny_config(tmp_path, epochs=1), **kw)
    before, _ = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    summary = train_classifier(tiny_config(tmp_path, epochs=3, resume=True), **kw)
    assert summary["step"] == 6 and summary["epoch"] == 3
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "train"]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5, 6]
    after, _ = ck.load_checkpoint(ck.latest_checkpoint(tmp_path))
    assert not torch.equal(before["heads.0.weight"], after["heads.0.weight"])
    with pytest.raises(UserError, match="cannot resume with another arch"):
        train_classifier(tiny_config(tmp_path, epochs=4, arch="resnet34", resume=True), **kw)


@pytest.mark.slow
def test_the_eval_classifier_is_another_model(tmp_path, trained, monkeypatch):
    cam_dir, _, _ = trained
    train_classifier(tiny_config(tmp_path / "eval", role="eval"),
                     train_set=Squares(32, seed=3), val_set=Squares(16, seed=4), schema=SCHEMA)
    monkeypatch.setattr(registry, "SHIPPED_DIR", tmp_path / "models")
    shutil.copytree(tmp_path / "eval", tmp_path / "models" / "classifier-eval")
    shutil.copytree(cam_dir, tmp_path / "models" / "classifier-cam")
    cam = load_model(shipped_model("classifier-cam"), "classifier")
    ev = load_model(shipped_model("classifier-eval"), "classifier")
    assert (cam.config["role"], ev.config["role"]) == ("cam", "eval")
    assert cam.config["seed"] != ev.config["seed"]
    assert (cam.config["arch"], ev.config["arch"]) == ("resnet18", "resnet34")
    assert len(ev.backbone.layer3) > len(cam.backbone.layer3)
    assert classifier_digest(tmp_path / "eval") != classifier_digest(cam_dir)


# -- initialisation -------------------------------------------------------------------------------

def test_imagenet_init_loads_the_hub_cache_file_and_skips_fc(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path, url = imagenet_weights_path("resnet18")
    assert path == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth" and url.endswith(path.name)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    reference["conv1.weight"].fill_(0.125)
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    model = AttributeClassifier(SCHEMA, size=SIZE)
    heads = model.heads.state_dict()
    assert initialise(model, "imagenet") == "imagenet:resnet18-f37072fd.pth"
    assert torch.equal(model.backbone.conv1.weight, reference["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, reference["layer4.1.bn2.running_var"])
    assert all(torch.equal(v, model.heads.state_dict()[k]) for k, v in heads.items())


@pytest.mark.slow
def test_init_from_one_of_our_checkpoints(trained):
    out, _, _ = trained
    model = AttributeClassifier(SCHEMA, size=SIZE, seed=7)
    assert initialise(model, str(out)) == f"dir:{out}"
    assert torch.equal(model.heads[0].weight, load_model(out, "classifier").heads[0].weight)


# -- command line ---------------------------------------------------------------------------------

def _cli():
    from amgan_search.cli.main import cli
    return cli


def test_missing_imagenet_file_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        _cli(), ["train", "classifier", "--db", str(tmp_path / "none.db"), "--init", "imagenet",
                 "--out", str(tmp_path / "run")], env={"TORCH_HOME": str(tmp_path / "th")})
    assert result.exit_code == 2
    expected = tmp_path / "th" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in result.output and "download" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_classify_json_agrees_with_the_model(tmp_path, trained):
    out, _, _ = trained
    data = Squares(3, seed=9)
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        save_image(p, to_uint8(data[i][0]))
        paths.append(str(p))
    result = CliRunner().invoke(_cli(), ["classify", *paths, "--classifier", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["path"] for r in rows] == paths
    model = load_model(out, "classifier")
    from amgan_search.images import load_image, to_tensor
    indices, probs = model.predict(to_tensor([load_image(p) for p in paths]))
    for r, idx, prob in zip(rows, indices.tolist(), probs.tolist()):
        assert list(r["attributes"]) == ["color", "corner"]
        for a, i, p in zip(SCHEMA.attributes, idx, prob):
            assert r["attributes"][a.name] == {"value": a.values[i], "probability": round(p, 4)}
    text = CliRunner().invoke(_cli(), ["classify", paths[0], "--classifier", str(out)])
    assert text.exit_code == 0 and text.output.startswith(f"{paths[0]}: color=")
    missing = CliRunner().invoke(
        _cli(), ["classify", str(tmp_path / "nope.png"), "--classifier", str(out)])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_top_confusions_names_the_commonest_misreadings_first():
    values = ("long", "three-quarter", "short")
    confusion = [[90, 7, 1],
                 [5, 95, 0],
                 [0, 2, 98]]
    assert top_confusions(confusion, values) == ("long read as three-quarter 7, "
                                                 "three-quarter read as long 5")
    assert top_confusions([[3, 0], [0, 4]], ("a", "b")) == "none"
