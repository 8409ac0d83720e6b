"""The one model loader: shipped names, directories, the classifier an AMGAN records."""

import shutil
from pathlib import Path

import pytest
import torch

from amgan_helpers import SCHEMA
from amgan_search import registry
from amgan_search.checkpoint import CONFIG, MODEL_FILES, WEIGHTS, record_sums, save_model_dir
from amgan_search.editors import Manipulator
from amgan_search.errors import UserError
from amgan_search.io import read_json, write_json
from amgan_search.nets.amgan import EditNet
from amgan_search.nets.classifier import AttributeClassifier


def _classifier(path, seed=0, role="cam"):
    torch.manual_seed(seed)
    model = AttributeClassifier(SCHEMA, arch="resnet18", size=32, role=role, seed=seed)
    save_model_dir(path, model.config, model.state_dict())
    return path


def _editor(path, classifier=None):
    """A tiny untrained AMGAN directory, as the trainer's export writes one."""
    config = {"kind": "amgan", "method": "amgan", "schema": SCHEMA.to_dict(), "size": 32,
              "c_dim": SCHEMA.condition_dim, "conv_dim": 8, "repeat_num": 1,
              "attention": "generator", "upsample": "resize",
              "classifier": {"path": str(classifier) if classifier else None}}
    torch.manual_seed(0)
    net = EditNet.from_config(config)
    save_model_dir(path, config, {f"net.{k}": v for k, v in net.state_dict().items()})
    return path


def _edit_config(path, config):
    """Change a model's config.json by hand, its digests recorded again (a consistent folder)."""
    write_json(path / CONFIG, config)
    record_sums(path, MODEL_FILES)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A shipped-models folder of our own: classifier-cam (seed 0), classifier-eval (seed 1), amgan."""
    root = tmp_path / "models"
    _classifier(root / "classifier-cam", seed=0)
    _classifier(root / "classifier-eval", seed=1, role="eval")
    _editor(root / "amgan")
    monkeypatch.setattr(registry, "SHIPPED_DIR", root)
    monkeypatch.chdir(tmp_path)
    return root


def test_shipped_names_and_directories(shipped, tmp_path):
    assert registry.load_model(None, "classifier").config["seed"] == 0
    assert registry.load_model("eval", "classifier").config["seed"] == 1
    assert registry.load_model(shipped / "classifier-eval", "classifier").config["seed"] == 1
    editor = registry.load_model(None, "editor", device="cpu")
    assert isinstance(editor, Manipulator) and editor.size == 32 and editor.schema == SCHEMA
    assert registry.load_model("amgan", "editor", device="cpu").config == editor.config


def test_a_directory_named_like_a_shipped_model_wins_over_it(shipped, tmp_path):
    _classifier(tmp_path / "eval", seed=7)
    assert registry.load_model("eval", "classifier").config["seed"] == 7
    # a Path is always a directory
    with pytest.raises(UserError, match="no such model directory"):
        registry.load_model(Path("cam"), "classifier")


def test_an_amgan_loads_the_classifier_its_config_records_when_it_is_here(shipped, tmp_path):
    own = _editor(tmp_path / "gan", classifier=_classifier(tmp_path / "clf", seed=5))
    assert registry.load_model(own, "editor", device="cpu").classifier.config["seed"] == 5
    shutil.rmtree(tmp_path / "clf")  # gone: the shipped classifier-cam reads the queries
    assert registry.load_model(own, "editor", device="cpu").classifier.config["seed"] == 0


def test_bad_models_are_user_errors(shipped, tmp_path):
    with pytest.raises(UserError, match="unknown model kind"):
        registry.load_model(None, "generator")
    with pytest.raises(UserError, match="holds a 'classifier' model, not a 'amgan' model"):
        registry.load_model(shipped / "classifier-cam", "editor", device="cpu")
    broken = _editor(tmp_path / "broken")
    config = read_json(broken / CONFIG)
    _edit_config(broken, {k: v for k, v in config.items() if k != "c_dim"})
    with pytest.raises(UserError, match="no 'c_dim' entry"):
        registry.load_model(broken, "editor", device="cpu")
    _edit_config(broken, {**config, "conv_dim": 16})
    with pytest.raises(UserError, match=f"{WEIGHTS}: weights do not fit the config"):
        registry.load_model(broken, "editor", device="cpu")
    from amgan_search.schema import DEFAULT_SCHEMA

    with pytest.raises(UserError, match="differ from the model's"):
        registry.load_model(shipped / "amgan", "editor", device="cpu",
                            classifier=AttributeClassifier(DEFAULT_SCHEMA, size=32))
    with pytest.raises(UserError, match="no such model directory"):
        registry.load_model(tmp_path / "nowhere", "editor")


def test_model_config_reads_no_weights(shipped):
    (shipped / "amgan" / WEIGHTS).unlink()
    assert registry.model_config(shipped / "amgan", "editor")["size"] == 32
    with pytest.raises(UserError, match="is not in"):
        registry.model_config("amgan", "editor")
