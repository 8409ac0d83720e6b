"""The top's fabric: which garment the renderer draws, and its unshaded color field (solid,
multicolor, stripes, dots, checks) in figure coordinates."""

from __future__ import annotations

import math

import numpy as np

from amgan_search.schema import SYNTHETIC_ATTRIBUTES
from amgan_search.synthetic.canvas import coverage
from amgan_search.synthetic.scene import GARMENT_RGB, MULTICOLOR_ACCENTS, MULTICOLOR_BASE, Scene


def _band_index(w, width: float, k: int, px: float):
    """Bands of `width` along coordinate w cycling through k colors: (index, next index, blend)."""
    t = w / width
    i = np.floor(t)
    f = t - i
    near_next = f >= 0.5
    other = np.where(near_next, i + 1, i - 1)
    d = np.where(near_next, 1 - f, f) * width * px  # pixels to the nearest band edge
    blend = np.clip(0.5 - d, 0, 1)
    return np.mod(i, k).astype(np.intp), np.mod(other, k).astype(np.intp), blend


def _stripes(w, period: float, duty: float, px: float):
    """Coverage of stripes of `duty` * period along w (anti-aliased)."""
    f = np.mod(w / period, 1.0)
    d = (np.abs(f - 0.5) - duty / 2) * period  # negative inside the stripe
    return coverage(d, px)


def fabric(attrs: dict, u, v, px: float, seed: int) -> np.ndarray:
    """The garment's unshaded color field HxWx3 in figure coordinates (pattern included)."""
    rng = np.random.default_rng([seed, 3])
    # Every draw happens whatever the attributes are, so the layout of a pattern is the same
    # scene property under any edit.
    angle = rng.uniform(-0.5, 0.5)
    vertical = rng.random() < 0.35
    layout = rng.integers(4)  # multicolor without a pattern: bands, split, diagonal, stripes
    base_idx = rng.integers(len(MULTICOLOR_BASE))
    accent_idx = rng.choice(len(MULTICOLOR_ACCENTS), 2, replace=False)
    block_width = rng.uniform(0.06, 0.09)
    stripe_period = rng.uniform(0.05, 0.07)
    dot_period = rng.uniform(0.06, 0.08)
    check_period = rng.uniform(0.07, 0.09)
    offset = rng.uniform(0, 1, 2).astype(np.float32)

    color, pattern = attrs["color"], attrs["pattern"]
    along = v * np.float32(math.cos(angle)) + u * np.float32(math.sin(angle))
    across = u * np.float32(math.cos(angle)) - v * np.float32(math.sin(angle))
    stripe_w = across if vertical else along

    if color == "multicolor":
        base = MULTICOLOR_BASE[base_idx]
        a1, a2 = (MULTICOLOR_ACCENTS[i] for i in accent_idx)
        palette = np.asarray([base, base, a1, base, base, a2], np.float32)
        if pattern == "striped" or (pattern == "solid" and layout == 3):
            idx, other, blend = _band_index(stripe_w + offset[0], stripe_period / 2, 6, px)
        elif pattern == "checked":
            iu, _, _ = _band_index(across + offset[0], check_period / 2, 6, px)
            iv, _, _ = _band_index(along + offset[1], check_period / 2, 6, px)
            idx = np.mod(iu + iv, 6)
            other, blend = idx, np.zeros_like(u)
        elif pattern == "dotted":  # base ground, dots alternating the two accents
            blend, parity = _dots(u, v, dot_period, offset, px)
            idx = np.zeros(u.shape, np.intp)
            other = 2 + 3 * parity
        else:  # solid: color blocks
            w = {0: along, 1: across, 2: (along + across) * 0.7071}[int(min(layout, 2))]
            idx, other, blend = _band_index(w + offset[0] * block_width, block_width, 6, px)
        return palette[idx] * (1 - blend[..., None]) + palette[other] * blend[..., None]

    base = np.asarray(GARMENT_RGB[color], np.float32)
    # The pattern's second tone is the base pushed in lightness (darker for light colors,
    # lighter for dark ones), so a striped red stays red on average.
    lightness = float(base.mean())
    second = base * 0.6 if lightness > 100 else base + (255 - base) * 0.42
    if pattern == "solid":
        return np.broadcast_to(base, u.shape + (3,))
    if pattern == "striped":
        cover = _stripes(stripe_w + offset[0], stripe_period, 0.34, px)
    elif pattern == "dotted":
        cover, _ = _dots(u, v, dot_period, offset, px)
    else:  # checked: gingham, the crossing of two stripe sets is darkest
        cover = 0.5 * (_stripes(across + offset[0], check_period, 0.5, px)
                       + _stripes(along + offset[1], check_period, 0.5, px))
    return base + cover[..., None] * (second - base)


def _dots(u, v, period: float, offset, px: float):
    """Coverage of dots on a staggered lattice (every other row shifted half a period), and
    each lattice cell's parity (0/1) for alternating dot colors."""
    tv = v / period + offset[1]
    row = np.floor(tv)
    tu = u / period + offset[0] + 0.5 * np.mod(row, 2)
    col = np.floor(tu)
    d = np.hypot(tu - col - 0.5, tv - row - 0.5) - 0.22
    return coverage(d * period, px), np.mod(row + col, 2).astype(np.intp)


def garment(scene: Scene) -> dict[str, str]:
    """Every garment attribute the renderer knows. One outside the scene's schema is nuisance:
    pattern is solid (the schema's default look), the neckline is the scene's own drawn cut, color
    and sleeve come from the scene seed."""
    rng = np.random.default_rng([scene.seed, 5])
    drawn = {name: values[int(rng.integers(len(values)))]
             for name, values in SYNTHETIC_ATTRIBUTES.items()}
    drawn["pattern"] = "solid"
    drawn["neckline"] = scene.neckline
    return {**drawn, **scene.attributes}


def sheen(across):
    """Silver's metallic highlight: a bright band along the lit side of a cylinder."""
    return np.float32(70.0) * np.clip(1 - np.abs(across) / 0.45, 0, 1) ** 2
