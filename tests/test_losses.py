import pytest
import torch

from amgan_search.losses import (alpha_binary_loss, attention_loss, classification_loss,
                                 cycle_loss, d_adversarial, g_adversarial, gradient_penalty,
                                 mask_regularizer, perceptual_loss)


def test_wgan_terms_are_differences_of_critic_means():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert d_adversarial(real, fake).item() == pytest.approx(-1.0 - 2.0)
    assert g_adversarial(fake).item() == pytest.approx(1.0)


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    torch.manual_seed(0)
    w = torch.randn(1, 3, 4, 4)
    critic = lambda x: (x * w).flatten(1).sum(1)  # noqa: E731 - gradient is w everywhere
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)


def test_gradient_penalty_reaches_the_critic_weights():
    w = torch.full((1, 2, 2, 2), 0.7, requires_grad=True)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), torch.rand(3, 2, 2, 2),
                          torch.rand(3, 2, 2, 2))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    n = w.detach().norm()
    assert torch.allclose(w.grad, 2 * (n - 1) * w.detach() / n, atol=1e-5)


def test_classification_loss_ignores_missing_labels():
    logits = [torch.tensor([[2.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])]
    labels = torch.tensor([[0, -1], [-1, -1]])
    expected = torch.nn.functional.cross_entropy(logits[0][:1], torch.tensor([0]))
    assert classification_loss(logits, labels).item() == pytest.approx(expected.item())
    # changing the logits of missing samples changes nothing
    logits[0][1] = torch.tensor([9.0, -9.0, 3.0])
    logits[1][:] = 100.0
    assert classification_loss(logits, labels).item() == pytest.approx(expected.item())


def test_classification_loss_sums_attributes():
    logits = [torch.zeros(2, 4), torch.zeros(2, 2)]
    labels = torch.tensor([[1, 0], [3, 1]])
    assert classification_loss(logits, labels).item() == pytest.approx(
        torch.log(torch.tensor(4.0)).item() + torch.log(torch.tensor(2.0)).item())


def test_cycle_loss_is_zero_on_identity_and_l1_otherwise():
    x = torch.rand(2, 3, 8, 8)
    assert cycle_loss(x, x.clone()).item() == 0.0
    assert cycle_loss(x, x + 0.25).item() == pytest.approx(0.25)


def test_attention_loss_is_l1_to_the_cam_and_does_not_train_the_cam():
    alpha = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]], requires_grad=True)
    cam = torch.tensor([[[[1.0, 1.0], [0.0, 0.25]]]], requires_grad=True)
    loss = attention_loss(alpha, cam)
    assert loss.item() == pytest.approx((1 + 0 + 0.5 + 0.25) / 4)
    loss.backward()
    assert cam.grad is None and alpha.grad is not None


def test_attention_loss_resizes_a_coarser_cam():
    alpha = torch.full((1, 1, 8, 8), 0.5)
    assert attention_loss(alpha, torch.full((1, 1, 2, 2), 0.5)).item() == pytest.approx(0.0)


def test_mask_regularizer_prefers_small_smooth_masks():
    zeros, ones = torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    checker = (torch.arange(64).view(8, 8) % 2).float()[None, None]
    assert mask_regularizer(zeros).item() == 0.0
    assert mask_regularizer(ones).item() == pytest.approx(1.0)
    assert mask_regularizer(checker).item() > mask_regularizer(torch.full_like(checker, 0.5)).item()


def test_perceptual_loss_masks_samples_without_reference():
    f_fake, f_ref = torch.zeros(2, 4, 2, 2), torch.ones(2, 4, 2, 2)
    p_fake, p_ref = torch.zeros(2, 4), torch.ones(2, 4)
    f_ref[1] = 7.0
    p_ref[1] = 7.0
    assert perceptual_loss(f_fake, f_ref, p_fake, p_ref).item() == pytest.approx((2 + 14) / 2)
    mask = torch.tensor([1.0, 0.0])
    assert perceptual_loss(f_fake, f_ref, p_fake, p_ref, mask=mask).item() == pytest.approx(2.0)
    assert perceptual_loss(f_fake, f_ref, p_fake, p_ref, use_conv5=False,
                           mask=mask).item() == pytest.approx(1.0)
    assert perceptual_loss(f_fake, f_ref, p_fake, p_ref, mask=torch.zeros(2)).item() == 0.0
    assert perceptual_loss(f_fake, f_ref, p_fake, p_ref, norm="l2",
                           mask=torch.tensor([0.0, 1.0])).item() == pytest.approx(2 * 49)


def test_a_weighted_cycle_counts_only_the_weighted_pixels_over_every_pixel():
    x = torch.zeros(1, 3, 2, 2)
    rec = torch.ones(1, 3, 2, 2)
    assert cycle_loss(x, rec).item() == 1.0
    w = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    assert cycle_loss(x, rec, w).item() == pytest.approx(0.25)
    assert cycle_loss(x, rec, torch.ones(1, 1, 2, 2)).item() == 1.0


def test_the_alpha_binary_term_is_one_half_open_and_zero_at_the_ends():
    assert alpha_binary_loss(torch.full((1, 1, 2, 2), 0.5)).item() == pytest.approx(1.0)
    assert alpha_binary_loss(torch.tensor([[[[0.0, 1.0]]]])).item() == 0.0
