"""An AMGAN run's configuration: presets, and bad values named in the error."""

import pytest

from amgan_search.errors import UserError
from amgan_search.train.config import PRESETS, AmganConfig


def test_presets_fill_the_method_and_bad_values_are_user_errors():
    assert AmganConfig(method="stargan").attention == "none"
    assert AmganConfig(method="cam-as-mask").attention == "cam"
    assert AmganConfig(method="amgan", use_dc=False).use_dc is False
    with pytest.raises(UserError, match="unknown method"):
        AmganConfig(method="cyclegan")
    with pytest.raises(UserError, match="size 48 must be divisible"):
        AmganConfig(size=48)
    with pytest.raises(UserError, match="iters must be at least 1, got 0"):
        AmganConfig(iters=0)
    with pytest.raises(UserError, match="g_upsample must be one of"):
        AmganConfig(g_upsample="bicubic")
    with pytest.raises(UserError, match="unknown conditional_critic 'dI'"):
        AmganConfig(conditional_critic="dI")
    with pytest.raises(UserError, match="'dc' needs D_C, which method 'no-dc'"):
        AmganConfig(method="no-dc", conditional_critic="dc")


def test_the_up_sampling_default_has_one_source():
    """The net built unless told, the training configuration and the CLI's flag all take
    nets.UPSAMPLE; a config.json that records none means nets.UNRECORDED_UPSAMPLE."""
    import torch

    from amgan_search.cli.train import train_amgan as amgan
    from amgan_search.nets import UNRECORDED_UPSAMPLE, UPSAMPLE, UPSAMPLINGS
    from amgan_search.nets.amgan import EditNet

    flag = next(p for p in amgan.params if p.name == "g_upsample")
    assert flag.default == AmganConfig().g_upsample == UPSAMPLE == "resize"
    assert list(flag.type.choices) == list(UPSAMPLINGS)
    kinds = {type(m) for m in EditNet(5, conv_dim=8, repeat_num=1).modules()}
    assert torch.nn.Upsample in kinds and torch.nn.ConvTranspose2d not in kinds
    old = EditNet.from_config({"c_dim": 5, "conv_dim": 8, "repeat_num": 1, "attention": "none"})
    assert torch.nn.ConvTranspose2d in {type(m) for m in old.modules()}
    assert UNRECORDED_UPSAMPLE == "deconv"


def test_cli_methods_match_the_presets():
    from amgan_search.cli.train import METHODS
    from amgan_search.cli.train import CONDITIONAL_CRITICS as CLI_CRITICS
    from amgan_search.cli.train import CYCLE_REGIONS as CLI_CYCLE_REGIONS
    from amgan_search.train.config import CONDITIONAL_CRITICS, CYCLE_REGIONS

    assert list(METHODS) == list(PRESETS)
    assert list(CLI_CRITICS) == list(CONDITIONAL_CRITICS)
    assert list(CLI_CYCLE_REGIONS) == list(CYCLE_REGIONS)
