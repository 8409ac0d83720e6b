"""The renderer's drawing primitives: figure coordinates, signed distances, one-pixel
anti-aliased coverage, and the canvas that composites parts front to back."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np


@lru_cache(maxsize=8)
def pixel_centers(size: int) -> np.ndarray:
    return ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)


@lru_cache(maxsize=16)
def _upsampler(size: int, k: int) -> np.ndarray:
    """size x k linear interpolation weights: a k-point smooth field -> size pixels."""
    pos = np.clip(pixel_centers(size) * (k - 1), 0, k - 1)
    lo = np.minimum(pos.astype(int), k - 2)
    f = pos - lo
    w = np.zeros((size, k), np.float32)
    w[np.arange(size), lo] = 1 - f
    w[np.arange(size), lo + 1] = f
    return w


def smooth_field(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: k x k Gaussian values interpolated to size x size."""
    w = _upsampler(size, k)
    return (w @ rng.standard_normal((k, k)).astype(np.float32) @ w.T) / 1.2


class Segment:
    """Distance to a segment a->b and the unclipped position along it (figure units)."""

    def __init__(self, u, v, a, b):
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = math.hypot(dx, dy)
        self.direction = (dx / length, dy / length)
        self.length = length
        pu, pv = u - a[0], v - a[1]
        self.t = pu * self.direction[0] + pv * self.direction[1]  # along, unclipped
        h = np.clip(self.t, 0, length)
        self.h = h / length
        self.distance = np.hypot(pu - h * self.direction[0], pv - h * self.direction[1])


def ellipse(u, v, cu, cv, ru, rv):
    # Scaled-circle approximation of the ellipse distance: exact enough for a one-pixel ramp.
    return (np.hypot((u - cu) / ru, (v - cv) / rv) - 1.0) * min(ru, rv)


def coverage(sdf, px_per_unit: float):
    """Fraction of a pixel inside the shape: a one-pixel linear ramp across the edge."""
    return np.clip(0.5 - sdf * px_per_unit, 0.0, 1.0)


class Canvas:
    """Front-to-back painter that also tracks how much of each part stays visible per pixel.

    Parts are drawn inside a pixel box around them (most of a part's SDF would be computed on
    background otherwise): `box` maps a figure-coordinate rectangle to pixel slices and the
    figure coordinates of their pixel centers.
    """

    def __init__(self, background: np.ndarray, u: np.ndarray, v: np.ndarray,
                 tracked: Sequence[str]):
        self.image = background
        self.u, self.v = u, v  # 1 x W and H x 1 figure coordinates of pixel centers
        shape = background.shape[:2]
        self.visible = {name: np.zeros(shape, np.float32) for name in tracked}
        self.person = np.zeros(shape, np.float32)  # union of everything drawn

    def box(self, u0: float, u1: float, v0: float, v1: float):
        """(slices, U, V) for the pixels whose centers lie in [u0, u1] x [v0, v1]."""
        cols = np.searchsorted(self.u[0], (u0, u1))
        rows = np.searchsorted(self.v[:, 0], (v0, v1))
        sl = (slice(int(rows[0]), int(rows[1])), slice(int(cols[0]), int(cols[1])))
        U, V = self.u[:, sl[1]], self.v[sl[0], :]
        return sl, np.broadcast_to(U, (V.shape[0], U.shape[1])), \
            np.broadcast_to(V, (V.shape[0], U.shape[1]))

    def draw(self, part: str, cover: np.ndarray, color, sl=(slice(None), slice(None))) -> None:
        if cover.size == 0:
            return
        # image*(1-c) + color*c (not image + c*(color-image)): full cover gives exactly `color`
        # and no cover exactly the old pixel, whatever lies beneath, so edits stay local.
        c = cover[..., None]
        self.image[sl] = self.image[sl] * (1 - c) + color * c
        keep = 1 - cover
        for vis in self.visible.values():
            vis[sl] *= keep
        if part in self.visible:
            self.visible[part][sl] += cover
        self.person[sl] = 1 - (1 - self.person[sl]) * keep
