"""AMGAN's networks: the generator with an attention head, D_I and D_C, and the D_C crop.

The generator is StarGAN's (itself CycleGAN's ResNet generator) with a second output head: an image
z (tanh) and a one-channel attention mask alpha (sigmoid), combined as x* = alpha*z + (1-alpha)*x.
The discriminators are StarGAN's PatchGAN critic with an attribute-classification head. `EditNet`
puts the variants the paper compares behind one call: attention from the generator (AMGAN,
GANimation), none (StarGAN), a separate attention network (SaGAN), or an attention given from
outside (the ablation that uses the CAM itself as alpha).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amgan_search.nets import UNRECORDED_UPSAMPLE, UPSAMPLE, UPSAMPLINGS

ATTENTIONS = ("generator", "none", "separate", "cam")


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(dim, affine=True, track_running_stats=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, 1, 1, bias=False),
            nn.InstanceNorm2d(dim, affine=True, track_running_stats=False),
        )

    def forward(self, x):
        return x + self.main(x)


def _tile(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Concatenate the condition, tiled over the image, to the channels: [B, 3+N+M, H, W]."""
    c = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.size(2), x.size(3))
    return torch.cat([x, c], dim=1)


def _up(dim: int, upsample: str) -> list[nn.Module]:
    if upsample == "deconv":
        return [nn.ConvTranspose2d(dim, dim // 2, 4, 2, 1, bias=False)]
    if upsample == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(dim, dim // 2, 3, 1, 1, bias=False)]
    raise ValueError(f"upsample must be one of {UPSAMPLINGS}, not {upsample!r}")


def _encoder_decoder(in_dim: int, conv_dim: int, repeat_num: int,
                     upsample: str = UPSAMPLE) -> tuple[nn.Sequential, int]:
    """7x7 conv, two stride-2 down-samplings, residual blocks, two up-samplings (StarGAN's G)."""
    layers = [nn.Conv2d(in_dim, conv_dim, 7, 1, 3, bias=False),
              nn.InstanceNorm2d(conv_dim, affine=True), nn.ReLU(inplace=True)]
    dim = conv_dim
    for _ in range(2):
        layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False),
                   nn.InstanceNorm2d(dim * 2, affine=True), nn.ReLU(inplace=True)]
        dim *= 2
    layers += [ResidualBlock(dim) for _ in range(repeat_num)]
    for _ in range(2):
        layers += _up(dim, upsample) + [nn.InstanceNorm2d(dim // 2, affine=True),
                                        nn.ReLU(inplace=True)]
        dim //= 2
    return nn.Sequential(*layers), dim


class Generator(nn.Module):
    """G(x, m) -> (x*, alpha, z); x, x* and z in [0, 1] (the network works in [-1, 1] inside)."""

    def __init__(self, c_dim: int, conv_dim: int = 64, repeat_num: int = 6, attention: bool = True,
                 upsample: str = UPSAMPLE):
        super().__init__()
        self.attention = attention
        self.body, dim = _encoder_decoder(3 + c_dim, conv_dim, repeat_num, upsample)
        self.img_head = nn.Conv2d(dim, 3, 7, 1, 3, bias=False)
        self.att_head = nn.Conv2d(dim, 1, 7, 1, 3, bias=False) if attention else None

    def forward(self, x, c, alpha=None):
        """`alpha` given from outside (SaGAN's network, the CAM) replaces the attention head."""
        h = self.body(_tile(x * 2 - 1, c))
        z = (torch.tanh(self.img_head(h)) + 1) / 2
        if alpha is None:
            alpha = torch.sigmoid(self.att_head(h)) if self.att_head is not None else None
        if alpha is None:  # StarGAN: the whole image is regenerated
            return z, torch.ones_like(z[:, :1]), z
        return alpha * z + (1 - alpha) * x, alpha, z


class SpatialAttention(nn.Module):
    """SaGAN's spatial attention network: a separate, smaller encoder-decoder, (x, m) -> alpha."""

    def __init__(self, c_dim: int, conv_dim: int = 32, repeat_num: int = 1,
                 upsample: str = UPSAMPLE):
        super().__init__()
        self.body, dim = _encoder_decoder(3 + c_dim, conv_dim, repeat_num, upsample)
        self.head = nn.Conv2d(dim, 1, 7, 1, 3, bias=False)

    def forward(self, x, c):
        return torch.sigmoid(self.head(self.body(_tile(x * 2 - 1, c))))


class EditNet(nn.Module):
    """The generator side of one method: `forward(x, m, alpha=None) -> (x*, alpha, z)`.

    attention: "generator" (AMGAN, GANimation: G's own head), "none" (StarGAN), "separate"
    (SaGAN: `A`, a SpatialAttention), "cam" (alpha must be passed in: the CAM-as-mask ablation).
    upsample: see UPSAMPLINGS (both networks use it).
    """

    def __init__(self, c_dim: int, conv_dim: int = 64, repeat_num: int = 6,
                 attention: str = "generator", att_conv_dim: int | None = None,
                 upsample: str = UPSAMPLE):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
        self.attention = attention
        self.G = Generator(c_dim, conv_dim, repeat_num, attention=attention == "generator",
                           upsample=upsample)
        self.A = (SpatialAttention(c_dim, att_conv_dim or max(conv_dim // 2, 4), upsample=upsample)
                  if attention == "separate" else None)

    @classmethod
    def from_config(cls, config: dict) -> "EditNet":
        """The network a trained model's config.json describes (without its weights)."""
        return cls(config["c_dim"], config["conv_dim"], config["repeat_num"], config["attention"],
                   config.get("att_conv_dim"), config.get("upsample", UNRECORDED_UPSAMPLE))

    def forward(self, x, c, alpha=None):
        if self.attention == "separate":
            alpha = self.A(x, c)
        elif self.attention == "cam" and alpha is None:
            raise ValueError("the cam attention needs alpha (the classifier's CAM) passed in")
        elif self.attention in ("generator", "none"):
            alpha = None
        return self.G(x, c, alpha=alpha)


class Discriminator(nn.Module):
    """PatchGAN critic (WGAN) plus an attribute classifier over all N values.

    `repeat_num` stride-2 convolutions take image_size to image_size / 2**repeat_num; the critic
    head gives a patch map there and the classification head one N-vector per image, split into
    one logits vector per attribute when `value_counts` is given.

    With `conditional`, the critic is also told the attribute values it judges the image under
    (a projection critic, Miyato & Koyama 2018, per patch): each patch's score gains the inner
    product of its features with an embedding of the N-hot values. Our option; the paper's
    critics are unconditional. The embedding starts at zero: the critic the paper trains.
    """

    def __init__(self, image_size: int, c_dim: int, conv_dim: int = 64, repeat_num: int = 6,
                 value_counts: Sequence[int] | None = None, conditional: bool = False):
        super().__init__()
        if image_size % 2 ** repeat_num:
            raise ValueError(f"image size {image_size} is not divisible by 2**{repeat_num}")
        layers, dim = [nn.Conv2d(3, conv_dim, 4, 2, 1), nn.LeakyReLU(0.01)], conv_dim
        for _ in range(1, repeat_num):
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.01)]
            dim *= 2
        self.main = nn.Sequential(*layers)
        self.src = nn.Conv2d(dim, 1, 3, 1, 1, bias=False)
        self.cls = nn.Conv2d(dim, c_dim, image_size // 2 ** repeat_num, bias=False)
        # [N, dim]; zeros, drawn from no random stream, so the other weights stay the paper's.
        self.embed = nn.Parameter(torch.zeros(c_dim, dim)) if conditional else None
        self.value_counts = list(value_counts) if value_counts is not None else [c_dim]
        if sum(self.value_counts) != c_dim:
            raise ValueError(f"value counts {self.value_counts} do not add up to c_dim {c_dim}")

    def forward(self, x, values=None):
        """x in [0, 1] (and, for a conditional critic, `values`: [B, N] the N-hot attribute values
        it is judged under) -> (patch critic map [B,1,h,w], logits [B, n_values] per attribute)."""
        h = self.main(x * 2 - 1)
        logits = self.cls(h).flatten(1)
        return self._score(h, values), list(torch.split(logits, self.value_counts, dim=1))

    def critic(self, x, values=None):
        """The critic head alone (for the gradient penalty)."""
        return self._score(self.main(x * 2 - 1), values)

    def _score(self, h, values):
        if self.embed is None:
            return self.src(h)
        if values is None:
            raise ValueError("a conditional critic needs the attribute values it judges under")
        e = values.to(h.dtype) @ self.embed.to(h.dtype)
        return self.src(h) + (h * e[:, :, None, None]).sum(1, keepdim=True)


def crop_boxes(alpha: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Per sample: (top, left, bottom, right) of the largest connected region of alpha > max/2.

    Connected components run on the CPU with scipy.ndimage.label (4-connectivity): the masks are
    small and the boxes are not differentiated through. An empty mask gives the whole image.
    """
    from scipy import ndimage

    a = alpha.detach().float().cpu().numpy()[:, 0]
    boxes = []
    for m in a:
        h, w = m.shape
        top = m.max()
        labels, n = ndimage.label(m > 0.5 * top) if top > 0 else (None, 0)
        if n == 0:
            boxes.append((0, 0, h, w))
            continue
        sizes = np.bincount(labels.ravel())[1:]
        rows, cols = np.nonzero(labels == 1 + int(np.argmax(sizes)))
        boxes.append((int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1))
    return boxes


def crop_resize(x: torch.Tensor, boxes, out_size: int) -> torch.Tensor:
    """Crop each sample with its box and resize to out_size x out_size (differentiable in x)."""
    return torch.cat([
        F.interpolate(x[i:i + 1, :, top:bottom, left:right], size=(out_size, out_size),
                      mode="bilinear", align_corners=False)
        for i, (top, left, bottom, right) in enumerate(boxes)
    ])


def attention_crop(alpha, x, x_star, out_size: int):
    """D_C's input: x and x* cropped to the box of alpha's largest region above half its maximum.

    Returns (x crops, x* crops, boxes); both crops use the same box, taken from alpha of x*.
    """
    boxes = crop_boxes(alpha)
    return crop_resize(x, boxes, out_size), crop_resize(x_star, boxes, out_size), boxes
