import pytest
import torch

from amgan_search.nets.amgan import (Discriminator, EditNet, Generator, SpatialAttention,
                                     attention_crop, crop_boxes)


def test_generator_shapes_and_the_attention_blend():
    torch.manual_seed(0)
    G = Generator(c_dim=7, conv_dim=8, repeat_num=1)
    x, c = torch.rand(2, 3, 32, 32), torch.rand(2, 7)
    x_star, alpha, z = G(x, c)
    assert x_star.shape == (2, 3, 32, 32) and alpha.shape == (2, 1, 32, 32) and z.shape == x.shape
    assert 0 <= alpha.min() and alpha.max() <= 1 and 0 <= z.min() and z.max() <= 1
    assert torch.allclose(x_star, alpha * z + (1 - alpha) * x, atol=1e-6)


def test_generator_without_attention_regenerates_everything():
    G = Generator(c_dim=5, conv_dim=8, repeat_num=1, attention=False)
    x_star, alpha, z = G(torch.rand(1, 3, 16, 16), torch.rand(1, 5))
    assert torch.equal(x_star, z) and torch.equal(alpha, torch.ones_like(alpha))


def test_an_alpha_given_from_outside_replaces_the_head():
    G = Generator(c_dim=5, conv_dim=8, repeat_num=1, attention=False)
    x = torch.rand(1, 3, 16, 16)
    alpha = torch.zeros(1, 1, 16, 16)
    alpha[..., :8, :] = 1
    x_star, a, z = G(x, torch.rand(1, 5), alpha=alpha)
    assert torch.equal(a, alpha)
    assert torch.equal(x_star[..., 8:, :], x[..., 8:, :])  # outside the mask: the input itself
    assert torch.allclose(x_star[..., :8, :], z[..., :8, :])


@pytest.mark.parametrize("upsample", ["deconv", "resize"])
def test_both_up_samplings_give_the_input_size(upsample):
    G = Generator(c_dim=5, conv_dim=8, repeat_num=1, upsample=upsample)
    x_star, alpha, _ = G(torch.rand(2, 3, 20, 20), torch.rand(2, 5))
    assert x_star.shape == (2, 3, 20, 20) and alpha.shape == (2, 1, 20, 20)
    kinds = {type(m) for m in G.modules()}
    assert (torch.nn.ConvTranspose2d in kinds) == (upsample == "deconv")
    assert (torch.nn.Upsample in kinds) == (upsample == "resize")
    with pytest.raises(ValueError):
        Generator(c_dim=5, conv_dim=8, repeat_num=1, upsample="bicubic")


@pytest.mark.parametrize("attention", ["generator", "none", "separate", "cam"])
def test_editnet_variants(attention):
    net = EditNet(c_dim=6, conv_dim=8, repeat_num=1, attention=attention, att_conv_dim=4,
                  upsample="resize")
    x, c = torch.rand(2, 3, 16, 16), torch.rand(2, 6)
    cam = torch.rand(2, 1, 16, 16) if attention == "cam" else None
    x_star, alpha, _ = net(x, c, alpha=cam)
    assert x_star.shape == x.shape and alpha.shape == (2, 1, 16, 16)
    if attention == "cam":
        assert torch.equal(alpha, cam)
        with pytest.raises(ValueError):
            net(x, c)
    assert (net.A is not None) == (attention == "separate")
    x_star.mean().backward()


def test_spatial_attention_is_a_mask():
    a = SpatialAttention(c_dim=4, conv_dim=4)(torch.rand(3, 3, 16, 16), torch.rand(3, 4))
    assert a.shape == (3, 1, 16, 16) and 0 <= a.min() and a.max() <= 1


def test_discriminators_shapes_d_i_and_d_c():
    counts = [3, 2]
    D_I = Discriminator(64, 5, conv_dim=8, repeat_num=5, value_counts=counts)
    D_C = Discriminator(32, 5, conv_dim=8, repeat_num=3, value_counts=counts)
    src, cls = D_I(torch.rand(2, 3, 64, 64))
    assert src.shape == (2, 1, 2, 2) and [c.shape for c in cls] == [(2, 3), (2, 2)]
    src, cls = D_C(torch.rand(2, 3, 32, 32))
    assert src.shape == (2, 1, 4, 4) and [c.shape for c in cls] == [(2, 3), (2, 2)]
    assert len(D_C.main) == len(D_I.main) - 4  # two fewer conv (+activation) layers
    assert torch.equal(D_I.critic(torch.zeros(1, 3, 64, 64)), D_I(torch.zeros(1, 3, 64, 64))[0])
    with pytest.raises(ValueError):
        Discriminator(48, 5, repeat_num=5)


def test_a_conditional_critic_scores_an_image_by_the_values_it_is_told():
    torch.manual_seed(0)
    plain = Discriminator(32, 5, conv_dim=8, repeat_num=3, value_counts=[3, 2])
    told = Discriminator(32, 5, conv_dim=8, repeat_num=3, value_counts=[3, 2], conditional=True)
    told.load_state_dict(plain.state_dict(), strict=False)
    x = torch.rand(2, 3, 32, 32)
    a, b = torch.tensor([[1., 0, 0, 1, 0]] * 2), torch.tensor([[0., 1, 0, 0, 1]] * 2)
    # At zero (its start) the embedding adds nothing: the paper's critic.
    assert torch.equal(told(x, a)[0], plain(x)[0]) and torch.equal(told(x, b)[0], plain(x)[0])
    torch.nn.init.normal_(told.embed)
    assert not torch.allclose(told(x, a)[0], told(x, b)[0])
    assert torch.equal(told.critic(x, a), told(x, a)[0])
    assert torch.equal(told(x, a)[1][0], plain(x)[1][0])  # the classification head is untouched
    with pytest.raises(ValueError, match="needs the attribute values"):
        told(x)


def test_the_dc_crop_covers_the_largest_region_of_alpha_above_half_its_maximum():
    alpha = torch.zeros(1, 1, 32, 32)
    alpha[0, 0, 2:6, 3:5] = 0.8        # small region, the maximum
    alpha[0, 0, 10:20, 12:30] = 0.5    # large region, above 0.4 = half the maximum
    alpha[0, 0, 25:31, 0:31] = 0.3     # largest region, but below half the maximum
    assert crop_boxes(alpha) == [(10, 12, 20, 30)]
    x = torch.rand(1, 3, 32, 32)
    x_star = torch.rand(1, 3, 32, 32)
    cx, cs, boxes = attention_crop(alpha, x, x_star, 16)
    assert cx.shape == cs.shape == (1, 3, 16, 16)
    expected = torch.nn.functional.interpolate(x[:, :, 10:20, 12:30], size=(16, 16),
                                               mode="bilinear", align_corners=False)
    assert torch.allclose(cx, expected)


def test_the_dc_crop_of_an_empty_or_flat_mask_is_the_whole_image():
    alpha = torch.zeros(2, 1, 16, 16)
    alpha[1] = 0.7
    assert crop_boxes(alpha) == [(0, 0, 16, 16), (0, 0, 16, 16)]


def test_the_dc_crop_passes_gradients_to_x_star():
    alpha = torch.zeros(1, 1, 16, 16)
    alpha[..., 4:8, 4:8] = 1
    x_star = torch.rand(1, 3, 16, 16, requires_grad=True)
    _, cs, _ = attention_crop(alpha, torch.rand(1, 3, 16, 16), x_star, 8)
    cs.sum().backward()
    assert x_star.grad[..., 4:8, 4:8].abs().sum() > 0 and x_star.grad[..., 10:, :].abs().sum() == 0


def test_edit_net_from_a_model_config():
    config = {"c_dim": 7, "conv_dim": 8, "repeat_num": 1, "attention": "separate",
              "att_conv_dim": 4, "upsample": "resize"}
    net = EditNet.from_config(config)
    assert net.attention == "separate" and net.A is not None
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    # configs written before the up-sampling was recorded: transposed convolutions
    old = EditNet.from_config({k: v for k, v in config.items() if k != "upsample"})
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in old.modules())
