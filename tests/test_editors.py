import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from amgan_helpers import SCHEMA, TinyClassifier, TinyImages, tiny_config
from amgan_search import checkpoint as ckpt
from amgan_search.editors import IdentityEditor, OracleEditor
from amgan_search.errors import UserError
from amgan_search.registry import load_model
from amgan_search.train.amgan import train_amgan


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny models trained 2 iterations: AMGAN and the CAM-as-mask ablation, with a saved classifier."""
    from amgan_search.nets.classifier import AttributeClassifier

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    clf = AttributeClassifier(SCHEMA, arch="resnet18", size=32)
    ckpt.save_model_dir(root / "clf", clf.config, clf.state_dict())
    out = {}
    for method in ("amgan", "cam-as-mask"):
        cfg = tiny_config(root, method=method, iters=2, classifier=str(root / "clf"))
        torch.manual_seed(0)
        out[method] = train_amgan(cfg, dataset=TinyImages(), classifier=TinyClassifier())
    out["clf"] = root / "clf"
    return out


def _image(h=50, w=37, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_edit_returns_the_input_size_and_a_mask_per_attribute(models):
    m = load_model(models["amgan"], "editor")
    assert m.schema == SCHEMA and m.size == 32
    image = _image()
    edited, masks = m.edit(image, color="blue", sleeve="short")
    assert edited.shape == image.shape and edited.dtype == np.uint8
    assert list(masks) == ["color", "sleeve"]  # applied in schema order
    for mask in masks.values():
        assert mask.shape == image.shape[:2] and mask.dtype == np.float32
        assert 0 <= mask.min() and mask.max() <= 1
    assert not np.array_equal(edited, image)


def test_the_combined_mask_is_the_maximum_of_masks_in_zero_to_one(models):
    from amgan_search.editors import combine_masks

    m = load_model(models["amgan"], "editor")
    _, masks = m.edit(_image(), color="blue", sleeve="short")
    combined = combine_masks(masks)
    assert combined.dtype == np.uint8 and combined.shape == (50, 37)
    expected = np.maximum(masks["color"], masks["sleeve"]) * 255
    assert np.abs(combined.astype(float) - expected).max() <= 0.5 + 1e-3
    # a mask of another shape or with a third axis is refused, never dropped or reduced
    for wrong in ({"a": np.ones((50, 37)), "b": np.ones((10, 10))}, {"a": np.ones((50, 37, 1))}):
        with pytest.raises(ValueError, match="float HxW masks of one shape"):
            combine_masks(wrong)
    assert combine_masks({}) is None
    # the scale is declared, not guessed from the values: anything above 1 is clipped to 1
    assert combine_masks({"a": np.full((2, 2), 255.0)}).max() == 255


def test_edit_batch_at_the_model_size(models):
    m = load_model(models["amgan"], "editor", classifier=TinyClassifier())
    x = torch.rand(3, 3, 32, 32)
    x_star, alpha = m.edit_batch(x, torch.tensor([[0, 0], [1, 1], [2, 0]]), 0,
                                 torch.tensor([1, 2, 0]))
    assert x_star.shape == x.shape and alpha.shape == (3, 1, 32, 32)
    assert torch.allclose(x_star, alpha * m.net.G(x, m.schema.condition(
        torch.tensor([[1, 0], [2, 1], [0, 0]]), 0))[2] + (1 - alpha) * x, atol=1e-5)


def test_region_specific_editing_confines_the_change_to_the_region_mask(models):
    # CAM as alpha: the region (sleeve=short's attention above 0.9) is never empty.
    # The stand-in classifier's CAM is the region: seeded to one whose sleeve=short region overlaps
    # color's attention, whatever ran before.
    torch.manual_seed(3)
    m = load_model(models["cam-as-mask"], "editor", classifier=TinyClassifier())
    image = _image(40, 40, seed=1)
    free, _ = m.edit(image, color="green")
    confined, masks = m.edit(image, only_region="sleeve=short", color="green")
    region = masks["region"]
    assert 0 < (region > 0).mean() < 0.9
    changed = np.abs(confined.astype(int) - image).max(2) > 0
    assert changed.any()
    assert not changed[region == 0].any()
    assert (np.abs(free.astype(int) - image).max(2) > 0).sum() > changed.sum()
    assert np.all(masks["color"] <= region + 1e-6)


def test_bad_targets_and_regions_are_user_errors(models):
    m = load_model(models["amgan"], "editor", classifier=TinyClassifier())
    with pytest.raises(UserError, match="valid: red, blue, green"):
        m.edit(_image(), color="mauve")
    with pytest.raises(UserError, match="unknown attribute"):
        m.edit(_image(), pattern="striped")
    with pytest.raises(UserError):
        m.edit(_image(), only_region="elbows", color="red")
    with pytest.raises(UserError):
        m.edit(_image())


def test_a_classifier_of_another_schema_is_refused(models):
    from amgan_search.schema import DEFAULT_SCHEMA

    with pytest.raises(UserError, match="differ"):
        load_model(models["amgan"], "editor", classifier=TinyClassifier(DEFAULT_SCHEMA))


# -- one batch interface for every editor ------------------------------------------------------

def _scenes(schema, n=3, size=32):
    from amgan_search.images import to_tensor
    from amgan_search.synthetic import render, sample_scene

    scenes = {f"item{i}": sample_scene(10 + i, schema) for i in range(n)}
    x = to_tensor([render(sc, size)[0] for sc in scenes.values()])
    labels = torch.as_tensor(np.stack([schema.encode(sc.attributes) for sc in scenes.values()]))
    return scenes, x, labels


def test_every_editor_answers_the_same_call(models):
    scenes, x, labels = _scenes(SCHEMA)
    target = torch.tensor([2, 2, 2])
    for editor in (IdentityEditor(SCHEMA), OracleEditor(scenes, SCHEMA),
                   load_model(models["amgan"], "editor", classifier=TinyClassifier())):
        x_star, alpha = editor.edit_batch(x, labels, 0, target, items=list(scenes))
        assert x_star.shape == x.shape and alpha.shape == (3, 1, 32, 32)
        assert 0 <= x_star.min() and x_star.max() <= 1 and 0 <= alpha.min() and alpha.max() <= 1


def test_the_identity_editor_changes_nothing():
    x = torch.rand(2, 3, 16, 16)
    x_star, alpha = IdentityEditor().edit_batch(x, torch.zeros(2, 2), 1, torch.tensor(1))
    assert torch.equal(x_star, x) and not alpha.any()


def test_the_oracle_edit_is_the_scene_rendered_with_the_target_value():
    from amgan_search.images import to_tensor
    from amgan_search.schema import DEFAULT_SCHEMA
    from amgan_search.synthetic import render

    scenes, x, labels = _scenes(DEFAULT_SCHEMA, n=2)
    oracle = OracleEditor(scenes, DEFAULT_SCHEMA)
    sleeve = DEFAULT_SCHEMA.position("sleeve")
    values = [v for v in range(4) if v not in labels[:, sleeve].tolist()][:1] * 2
    x_star, alpha = oracle.edit_batch(x, labels, sleeve, torch.tensor(values), items=list(scenes))
    truth = to_tensor([render(sc.with_attributes(sleeve=DEFAULT_SCHEMA.attributes[sleeve]
                                                 .values[values[0]]), 32)[0]
                       for sc in scenes.values()])
    assert torch.equal(x_star, truth)
    # alpha: exactly the pixels the true edit changed, never the whole picture
    assert torch.equal(alpha.bool()[:, 0], (truth != x).any(1)) and 0 < alpha.mean() < 0.5
    with pytest.raises(ValueError, match="needs items"):
        oracle.edit_batch(x, labels, sleeve, torch.tensor(values))
    with pytest.raises(UserError, match="no scene"):
        oracle.edit_batch(x, labels, sleeve, torch.tensor(values), items=["item0", "elsewhere"])


def test_the_oracle_needs_a_synthetic_catalog(tmp_path):
    from types import SimpleNamespace

    catalog = SimpleNamespace(root=tmp_path, format="csv", path=tmp_path / "c.db", schema=SCHEMA)
    with pytest.raises(UserError, match="oracle method needs a synthetic catalog"):
        OracleEditor.from_catalog(catalog)


def test_edit_command_writes_edit_and_mask(models, tmp_path):
    from amgan_search.cli.main import cli
    from amgan_search.images import load_image, save_image

    save_image(tmp_path / "top.png", _image(45, 30))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["edit", str(tmp_path / "top.png"), "--color", "red",
                                      "--set", "sleeve=long", "--out", str(out),
                                      "--model", str(models["amgan"])])
    assert result.exit_code == 0, result.output
    assert load_image(out / "top_edit.png").shape == (45, 30, 3)
    assert load_image(out / "top_mask.png").shape == (45, 30, 3)


def test_edit_command_offers_the_model_schemas_attributes(models):
    from amgan_search.cli.main import cli

    result = CliRunner().invoke(cli, ["edit", "--model", str(models["amgan"]), "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    # the model's values; --pattern stays (from the synthetic schema) and --set reaches any
    assert "--color VALUE Target color: red, blue, green." in text
    assert "--sleeve VALUE Target sleeve: long, short." in text and "--pattern VALUE" in text


@pytest.mark.parametrize("args, message", [
    (["--color", "mauve"], "unknown color value 'mauve'; valid: red, blue, green"),
    (["--pattern", "striped"], "unknown attribute 'pattern'"),
    (["--set", "sleeve"], "expected attribute=value"),
    (["--color", "red", "--only-region", "elbows"], "unknown region"),
    ([], "no target given"),
])
def test_edit_command_bad_values_exit_2_with_one_line(models, tmp_path, args, message):
    from amgan_search.cli.main import cli
    from amgan_search.images import save_image

    save_image(tmp_path / "a.png", _image())
    result = CliRunner().invoke(cli, ["edit", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                                      "--model", str(models["amgan"]), *args])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1


# -- edit quality against the renderer's truth ------------------------------------------------

class _Oracle:
    """Edits by rendering the truth: the metrics' exact reference."""

    def __init__(self, schema, n, seed, size, identity=False, invert=False):
        from amgan_search.images import to_tensor
        from amgan_search.metrics.edits import test_seeds
        from amgan_search.synthetic import render, sample_scene

        self.schema, self.size, self.config = schema, size, {"method": "oracle"}
        self.identity, self.invert = identity, invert
        self.scenes = [sample_scene(s, schema) for s in test_seeds(n, seed)]
        self.x = to_tensor([render(s, size)[0] for s in self.scenes])

    def edit_batch(self, x, labels, attribute, target):
        from amgan_search.images import to_tensor
        from amgan_search.synthetic import render

        if self.identity:
            return x.clone(), torch.zeros_like(x[:, :1])
        if self.invert:
            return 1 - x, torch.ones_like(x[:, :1])
        outs, alphas = [], []
        name = self.schema.attributes[attribute].name
        for row, t in zip(x, target):
            i = next(k for k in range(len(self.x)) if torch.equal(self.x[k], row))
            img, masks = render(self.scenes[i].with_attributes(
                **{name: self.schema.attributes[attribute].values[int(t)]}), self.size)
            truth = to_tensor(img)[0]
            inside = torch.as_tensor(masks["garment"] | masks["arms"] |
                                     render(self.scenes[i], self.size)[1]["garment"] |
                                     render(self.scenes[i], self.size)[1]["arms"])
            alphas.append((((truth - row).abs().amax(0) > 8 / 255) & inside).float()[None])
            outs.append(truth)
        return torch.stack(outs), torch.stack(alphas)


def test_edit_quality_of_the_true_render_is_perfect_and_of_no_edit_is_nil():
    from amgan_search.metrics.edits import evaluate_edits, markdown_table
    from amgan_search.schema import DEFAULT_SCHEMA

    judge = TinyClassifier(DEFAULT_SCHEMA)
    graders = {"judge": judge}
    oracle = evaluate_edits(_Oracle(DEFAULT_SCHEMA, 2, 5, 32), graders, n=2, seed=5, size=32,
                            progress=False)
    m = oracle["mean"]
    assert m["fidelity_reduction"] == pytest.approx(1.0) and m["l1_edit"] == 0.0
    assert m["preservation"] == 0.0 and m["attention_iou"] == pytest.approx(1.0)
    assert m["l1_input"] > 0
    assert oracle["per_attribute"]["color"]["n_edits"] == 2 * 16
    assert oracle["per_attribute"]["sleeve"]["n_edits"] == 2 * 3
    nothing = evaluate_edits(_Oracle(DEFAULT_SCHEMA, 2, 5, 32, identity=True), graders, n=2,
                             seed=5, size=32, progress=False)["mean"]
    assert nothing["fidelity_reduction"] == pytest.approx(0.0)
    assert nothing["preservation"] == 0.0 and nothing["attention_iou"] == 0.0
    # Not editing leaves the whole error on the pixels the true edit changes (nearly: changes
    # below the threshold count as the rest of the figure) and none outside.
    assert nothing["l1_edit_outside"] == 0.0
    assert nothing["l1_edit_changed"] > 10 * nothing["l1_edit_rest_of_figure"]
    # The three parts of the edit's L1 add up to it.
    inverted = evaluate_edits(_Oracle(DEFAULT_SCHEMA, 2, 5, 32, invert=True), graders, n=2,
                              seed=5, size=32, progress=False)["per_attribute"]
    for r in [nothing, *inverted.values()]:
        parts = [r[f"l1_edit_{p}"] for p in ("changed", "rest_of_figure", "outside")]
        assert sum(parts) == pytest.approx(r["l1_edit"], rel=1e-5)
    assert all(r[f"l1_edit_{p}"] > 0 for r in inverted.values()
               for p in ("changed", "rest_of_figure", "outside"))
    table = markdown_table(oracle)
    assert "| color |" in table and "| **mean** |" in table
    # The grader that is no network reads the true edits as their targets and no edit as none.
    assert oracle["per_attribute"]["color"]["truth_accuracy"] >= 0.9
    assert oracle["per_attribute"]["sleeve"]["truth_accuracy"] == 1.0
    assert oracle["mean"]["truth_accuracy"] >= 0.95 and "| truth accuracy |" in table
    assert nothing["truth_accuracy"] == 0.0


@pytest.mark.slow
def test_evaluate_edits_command_on_a_tiny_synthetic_model(tmp_path):
    from amgan_search.cli.evaluate import evaluate_edits
    from amgan_search.nets.classifier import AttributeClassifier
    from amgan_search.schema import DEFAULT_SCHEMA

    torch.manual_seed(0)
    clf = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32, role="eval")
    ckpt.save_model_dir(tmp_path / "eval", clf.config, clf.state_dict())
    cfg = tiny_config(tmp_path, method="stargan", iters=2, classifier=str(tmp_path / "eval"))
    model = train_amgan(cfg, dataset=TinyImages(schema=DEFAULT_SCHEMA), classifier=None)
    args = ["--model", str(model), "--eval-classifier", str(tmp_path / "eval"), "--n", "2",
            "--size", "32", "--out", str(tmp_path / "table.md")]
    result = CliRunner().invoke(evaluate_edits, args + ["--grid", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    assert "| sleeve | 6 |" in result.output and (tmp_path / "table.md").is_file()
    # 2 scenes wide; the input, then truth, edit and mask for 3 colors and 3 sleeves.
    assert np.asarray(Image.open(tmp_path / "grid.png")).shape == (32 * 19, 32 * 2, 3)
    as_json = CliRunner().invoke(evaluate_edits, args + ["--json"])
    import json

    data = json.loads(as_json.output[as_json.output.index("{"):])
    # StarGAN regenerates the whole picture: its attention covers everything, so its IoU is the
    # changed fraction of the image and no pixel outside the garment is guaranteed to survive.
    assert data["method"] == "stargan" and 0 < data["mean"]["attention_iou"] < 0.5
    assert set(data["per_attribute"]["sleeve"]) >= {"accuracy", "truth_accuracy"}
    assert 0 <= data["mean"]["truth_accuracy"] <= 1 and "| truth accuracy |" in result.output
    assert data["mean"]["preservation"] > 0


def test_a_model_written_before_the_upsampling_was_recorded_loads_as_deconv(models, tmp_path):
    config, tensors = ckpt.load_model_dir(models["amgan"], kind="amgan")
    assert config["upsample"] == "resize"
    old = tmp_path / "old"
    ckpt.save_model_dir(old, {k: v for k, v in config.items() if k != "upsample"}, tensors)
    with pytest.raises(UserError, match="do not fit"):  # resize weights under a deconv net
        load_model(old, "editor", device="cpu", classifier=TinyClassifier())
    deconv = tiny_config(tmp_path, iters=1, g_upsample="deconv", out=str(tmp_path / "deconv"))
    config, tensors = ckpt.load_model_dir(
        train_amgan(deconv, dataset=TinyImages(), classifier=TinyClassifier()), kind="amgan")
    ckpt.save_model_dir(old, {k: v for k, v in config.items() if k != "upsample"}, tensors)
    m = load_model(old, "editor", device="cpu", classifier=TinyClassifier())
    assert any(isinstance(mod, torch.nn.ConvTranspose2d) for mod in m.net.modules())
