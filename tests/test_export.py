"""`train export`: a classifier run's best model ships as fp16 and loads back as the same model."""

import torch
from click.testing import CliRunner
from safetensors import safe_open

from amgan_search import checkpoint as ck
from amgan_search.cli.main import cli
from amgan_search.nets.classifier import AttributeClassifier
from amgan_search.registry import load_model
from amgan_search.schema import DEFAULT_SCHEMA


def test_classifier_export_is_fp16_and_predicts_like_the_run(tmp_path):
    torch.manual_seed(0)
    model = AttributeClassifier(DEFAULT_SCHEMA, arch="resnet18", size=32).eval()
    ck.save_model_dir(tmp_path / "run", model.config, model.state_dict())
    result = CliRunner().invoke(cli, ["train", "export", str(tmp_path / "run"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    with safe_open(str(tmp_path / "m" / ck.WEIGHTS), "pt") as f:
        assert f.get_tensor("heads.0.weight").dtype == torch.float16
    shipped = load_model(tmp_path / "m", "classifier")
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(shipped.predict(x)[0], model.predict(x)[0])
    assert (tmp_path / "run" / ck.WEIGHTS).stat().st_size > 1.9 * (tmp_path / "m" / ck.WEIGHTS).stat().st_size


def test_exporting_a_folder_that_is_no_run_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["train", "export", str(tmp_path / "empty"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and result.output.startswith("error:") and result.output.count("\n") == 1
