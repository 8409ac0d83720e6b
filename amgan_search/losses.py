"""AMGAN's losses (paper, Sec. 3) and the disentangled embedding's (ADDE), as pure functions of
tensors.

D: L_adv (WGAN-GP) + lambda_cls L_cls on real images.
G: L_adv + lambda_cls L_cls + lambda_cyc L_cyc + lambda_a L_a + lambda_p L_p.
ADDE (`nets.adde`): per-chunk classification (`classification_loss`), label triplets per chunk and
on the whole embedding and the manipulation triplet (`triplet_loss`), the memory's consistency
with the encoder (`memory_consistency`) and its block-diagonal L1 (`off_block_l1`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from amgan_search.schema import MISSING

# The paper's weights; lambda_p is 10 on Shopping100k (avg-pool features only there).
LAMBDA_GP = 10.0
LAMBDA_CLS = 1.0
LAMBDA_CYC = 10.0
LAMBDA_A = 10.0
LAMBDA_P = 20.0


def d_adversarial(out_real: torch.Tensor, out_fake: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss: E[D(x*)] - E[D(x)]."""
    return out_fake.mean() - out_real.mean()


def g_adversarial(out_fake: torch.Tensor) -> torch.Tensor:
    """WGAN generator loss: -E[D(x*)]."""
    return -out_fake.mean()


def gradient_penalty(critic_fn: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP: E[(||grad_x D(x_hat)||_2 - 1)^2] at x_hat on the lines between real and fake.

    create_graph=True keeps the gradient differentiable, so the penalty's own backward reaches the
    critic's weights (a double backward).
    """
    if eps is None:
        eps = torch.rand(real.size(0), 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic_fn(x_hat)
    (grad,) = torch.autograd.grad(out, x_hat, grad_outputs=torch.ones_like(out),
                                  create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def classification_loss(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per attribute over the samples whose label is known, summed over attributes.

    Missing labels (-1) are ignored; an attribute missing in the whole batch contributes 0. The sum
    over attributes follows StarGAN's attribute loss (the paper does not say sum or mean).
    """
    total = logits[0].new_zeros(())
    for j, lg in enumerate(logits):
        y = labels[:, j].to(lg.device)
        known = y != MISSING
        if known.any():
            total = total + F.cross_entropy(lg[known].float(), y[known])
    return total


def cycle_loss(x: torch.Tensor, x_rec: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """L_cyc: L1 between x and G(G(x, m_target), m_original).

    `weight` [B, 1, H, W] (no gradient) weighs each pixel; the mean stays over every pixel, so a
    weight of ones is the paper's loss and a smaller region weighs less.
    """
    d = (x - x_rec).abs()
    return (d if weight is None else d * weight.detach()).mean()


def alpha_binary_loss(alpha: torch.Tensor) -> torch.Tensor:
    """mean(4 alpha (1 - alpha)): 1 for a half-open mask, 0 where alpha is 0 or 1."""
    return (4 * alpha * (1 - alpha)).mean()


def attention_loss(alpha: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """L_a: L1 between the attention mask alpha and a*, the CAM of the target value in [0, 1]."""
    if cam.shape[-2:] != alpha.shape[-2:]:
        cam = F.interpolate(cam, size=alpha.shape[-2:], mode="bilinear", align_corners=False)
    return (alpha - cam.detach()).abs().mean()


def mask_regularizer(alpha: torch.Tensor, tv_weight: float = 1.0) -> torch.Tensor:
    """GANimation's attention regulariser without CAM guidance: small masks, smooth masks.

    mean(alpha) keeps the mask from covering everything; the total variation (mean squared
    neighbour difference) keeps it smooth. Means rather than GANimation's sums, so the weight
    does not depend on the image size (our choice).
    """
    tv = ((alpha[..., 1:, :] - alpha[..., :-1, :]) ** 2).mean() + \
         ((alpha[..., :, 1:] - alpha[..., :, :-1]) ** 2).mean()
    return alpha.mean() + tv_weight * tv


def perceptual_loss(feats_fake: torch.Tensor, feats_ref: torch.Tensor, pooled_fake: torch.Tensor,
                    pooled_ref: torch.Tensor, use_conv5: bool = True,
                    mask: torch.Tensor | None = None, norm: str = "l1") -> torch.Tensor:
    """L_p between the CNN features of x* and of a reference image with the target attributes.

    conv5 maps and avg-pool features (avg-pool only when use_conv5 is False, as on Shopping100k).
    `mask` [B] (1 keep, 0 skip) drops samples without a reference; an all-zero mask gives 0 (still
    connected to the graph). The norm is our choice where the paper is silent: L1 by default.
    """
    def dist(a, b):
        d = (a.float() - b.detach().float())
        d = d.abs() if norm == "l1" else d ** 2
        return d.flatten(1).mean(1)

    per_sample = dist(pooled_fake, pooled_ref)
    if use_conv5:
        per_sample = per_sample + dist(feats_fake, feats_ref)
    if mask is None:
        return per_sample.mean()
    mask = mask.to(per_sample.dtype)
    return (per_sample * mask).sum() / mask.sum().clamp_min(1.0)


# -- ADDE ------------------------------------------------------------------------------------------

def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean(max(0, |a - p| - |a - n| + margin)) over the rows `mask` keeps (an empty mask: 0).

    Euclidean distances; on unit or fixed-norm embeddings they order pairs as the cosine does.
    """
    per_row = F.relu((anchor - positive).norm(dim=1) - (anchor - negative).norm(dim=1) + margin)
    if mask is None:
        return per_row.mean()
    mask = mask.to(per_row.dtype)
    return (per_row * mask).sum() / mask.sum().clamp_min(1.0)


def memory_consistency(chunk: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
    """The memory kept where the encoder puts the images of each value: mean squared distance of
    an image's chunk to its value's prototype (the prototype's part in that chunk)."""
    return ((chunk - prototype) ** 2).sum(dim=1).mean()


def off_block_l1(memory: torch.Tensor, off_block: torch.Tensor) -> torch.Tensor:
    """Mean absolute value of the memory's entries outside each prototype's own chunk."""
    return memory[off_block].abs().mean() if off_block.any() else memory.new_zeros(())
