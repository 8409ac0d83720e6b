"""Differentiable augmentation of what the critics see: our option, none in the paper.

DiffAugment (Zhao et al., NeurIPS 2020) puts the same kind of random transformation T in front
of the critic for real images and for edits, in D's update and in G's, so D learns D(T(x)) and
G is paid through D(T(x*)). Here it is aimed at L_cls: the generator's sleeve edits are
adversarial examples for D's classification head (docs/experiments.md: the head reads them
as the target more often than the true edits). Smears tuned to the pixels a head sees in one
place and at one sharpness may not survive a head that sees every image shifted, partly hidden
or blurred; a sleeve taken away truly does.

Each policy is drawn independently per image:
- translation: a shift of up to 1/8 of the side each way, the border filled with 0 (mid grey for
  images in [-1, 1]); DiffAugment's.
- cutout: a square of 1/4 of the side set to 0. DiffAugment hides 1/2; ours is smaller so that a
  head trained on real photos still sees an arm most of the time (its labels are the photo's).
- blur: a Gaussian blur of sigma drawn from [0, 1] px at 64 px (scaled with the side): a low
  pass that leaves a garment's shape and colour and takes away the fine stripes a smear is made
  of. Not DiffAugment's; no colour transform, since colour is an attribute the head must read.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout", "blur")
TRANSLATION = 1 / 8
CUTOUT = 1 / 4
BLUR_SIGMA_AT_64 = 1.0


def diff_augment(x: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """x [B, C, H, W] through each transform of `policy`, in the order of POLICIES."""
    for name in POLICIES:
        if name in policy:
            x = _TRANSFORMS[name](x)
    return x


def translate(x: torch.Tensor, ratio: float = TRANSLATION) -> torch.Tensor:
    """Each image shifted by a whole number of pixels, up to `ratio` of its side each way."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    # out[i, j] = x[i - dy, j - dx], read from x padded by (sh, sw) with zeros.
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy + sh
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx + sw
    padded = F.pad(x, (sw, sw, sh, sh)).permute(0, 2, 3, 1)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = CUTOUT) -> torch.Tensor:
    """Each image with one square of `ratio` of its side set to 0, anywhere it fits or overlaps."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(-(ch // 2), h - ch // 2 + 1, (b, 1, 1), device=x.device)
    left = torch.randint(-(cw // 2), w - cw // 2 + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


def blur(x: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Each image blurred by a separable Gaussian of sigma uniform in [0, max_sigma] px."""
    b, c, h, w = x.shape
    if max_sigma is None:
        max_sigma = BLUR_SIGMA_AT_64 * h / 64
    radius = max(1, math.ceil(3 * max_sigma))
    sigma = torch.rand(b, 1, device=x.device) * max_sigma
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype).view(1, -1)
    # sigma near 0: all weight on the centre tap (the image unchanged).
    k = torch.exp(-t ** 2 / (2 * sigma.clamp_min(1e-3).to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)      # [B*C, taps]
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, k.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, k.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


_TRANSFORMS = {"translation": translate, "cutout": cutout, "blur": blur}
