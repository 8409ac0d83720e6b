"""The synthetic catalog: a deterministic renderer of a person wearing a top, with ground truth.

A `Scene` holds the garment attributes (the DeepFashion-Synthesis schema: color, sleeve, and the
optional pattern) and every nuisance parameter a model must preserve (body, pose, skin, hair,
trousers, background, framing, fabric shading, noise, JPEG quality). `render(scene, size)` is a
pure function of (scene, size) and also returns the region masks, so any attribute edit has a
pixel-exact target (`scene.with_attributes(...)`) and a true region.

The figure is drawn with signed distance functions in figure units (about the image height at
scale 1) and composited front to back with one-pixel anti-aliased edges, so one code path serves
64x64 and 128x128. Randomness inside `render` (noise, background texture, fabric folds, the
multicolor layout) comes from generators seeded by `scene.seed` alone, never by the attributes:
two renders that differ only in attributes are identical outside garment | arms.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from .errors import UserError
from .schema import DEFAULT_SCHEMA, SYNTHETIC_ATTRIBUTES, Schema, synthetic_schema

SCENE_VERSION = 1
FORMATS = ("png", "jpg")
MASKS = ("garment", "torso", "sleeves", "arms", "hands", "person")

# Garment base colors. Chosen so that every pair stays apart in mean RGB after shading (at most
# about +-10%) and noise: the light neutrals are spread by lightness and tint (white > beige, a
# warm yellowish light; silver a cool mid-light grey with a metallic highlight; gray darker and
# flat; khaki darker and greener than beige), brown and olive differ in green, navy and black in
# blue. The paper's data set leaves its 14th color unnamed; navy stands in.
GARMENT_RGB = {
    "red": (200, 28, 38),
    "blue": (38, 96, 214),
    "white": (246, 246, 243),
    "pink": (242, 140, 184),
    "orange": (245, 128, 22),
    "black": (24, 24, 27),
    "brown": (118, 66, 32),
    "green": (36, 150, 62),
    "purple": (122, 48, 164),
    "yellow": (246, 214, 40),
    "khaki": (182, 164, 104),
    "gray": (124, 124, 126),
    "beige": (228, 208, 172),
    "navy": (22, 34, 98),
    "silver": (168, 174, 186),
    "olive": (104, 118, 34),
}
# Multicolor: blocks or stripes cycling base, base, accent, base, base, accent. A mixture of
# hues averages to grey, where gray already sits, so the base (about two thirds of the area) is
# always a turquoise, a hue no named color has: mean garment RGB stays apart from every named
# color's while the accents still make it several colors.
MULTICOLOR_BASE = ((18, 168, 178), (30, 190, 165), (20, 150, 200))
MULTICOLOR_ACCENTS = ((225, 45, 150), (250, 205, 35), (250, 250, 250), (245, 105, 85),
                      (130, 70, 210), (160, 215, 50))
SKIN_RGB = ((246, 216, 196), (228, 184, 152), (196, 146, 108), (156, 106, 74), (104, 68, 48))
HAIR_RGB = ((22, 18, 16), (60, 38, 24), (110, 72, 40), (170, 120, 60), (220, 190, 120),
            (140, 40, 20), (150, 150, 150))
TROUSERS_RGB = ((46, 66, 108), (70, 96, 140), (32, 32, 36), (104, 104, 110), (168, 150, 112),
                (226, 222, 212), (86, 62, 44), (60, 70, 50))
BACKGROUNDS = ("flat", "gradient", "texture")
NECKLINES = ("crew", "v", "scoop")


def _rgb(values) -> tuple[int, int, int]:
    return tuple(int(round(float(c))) for c in values)


@dataclass(frozen=True)
class Scene:
    """One synthetic catalog photo: garment attributes plus every nuisance parameter.

    `attributes` are the values of the scene's schema; a renderer attribute outside it is
    nuisance (pattern solid; color and sleeve drawn from `seed`).
    """

    attribute_values: tuple[tuple[str, str], ...]  # (name, value) in schema order
    seed: int  # noise, background texture, fabric folds, multicolor layout
    # framing
    x: float  # horizontal offset of the figure, image widths
    y: float  # vertical offset, image heights
    scale: float
    # body
    shoulder_width: float  # half width, figure units
    torso_length: float
    build: float  # girth of limbs and waist
    head_size: float
    neck_length: float
    skin: tuple[int, int, int]
    hair_color: tuple[int, int, int]
    hair_length: float  # 0 short ... 1 past the shoulders
    # pose, degrees: shoulder = arm out from vertical, elbow = forearm bent toward the body
    left_shoulder: float
    left_elbow: float
    right_shoulder: float
    right_elbow: float
    # clothes other than the top, and the top's cut
    trousers: tuple[int, int, int]
    neckline: str
    # lighting and camera
    light: float  # -1 lit from the left ... 1 from the right
    folds: float  # fabric fold strength
    background: str
    background_colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    background_angle: float  # degrees, gradient direction
    noise: float  # Gaussian noise sigma in 0..255 units
    jpeg_quality: int

    @property
    def attributes(self) -> dict[str, str]:
        return dict(self.attribute_values)

    def with_attributes(self, **values: str) -> "Scene":
        """The same scene (person, pose, background, noise) with these attributes changed."""
        current = self.attributes
        for name, value in values.items():
            if name not in current:
                raise UserError(
                    f"scene has no attribute {name!r}; valid: {', '.join(current)}"
                )
            if value not in SYNTHETIC_ATTRIBUTES[name]:
                valid = ", ".join(SYNTHETIC_ATTRIBUTES[name])
                raise UserError(f"unknown {name} value {value!r}; valid: {valid}")
        current.update(values)
        return replace(self, attribute_values=tuple(current.items()))

    def to_json(self) -> str:
        d = asdict(self)
        d["attributes"] = dict(d.pop("attribute_values"))
        return json.dumps({"version": SCENE_VERSION, **d}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"scene: not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.pop("version", None) != SCENE_VERSION:
            raise UserError(f"scene: not a version-{SCENE_VERSION} scene object")
        expected = {f.name for f in fields(cls)} - {"attribute_values"} | {"attributes"}
        if set(d) != expected:
            missing, extra = sorted(expected - set(d)), sorted(set(d) - expected)
            raise UserError(f"scene: missing fields {missing}, unknown fields {extra}")
        attrs = d.pop("attributes")
        if not isinstance(attrs, dict):
            raise UserError("scene: attributes must be an object of name -> value")
        for name, value in attrs.items():
            if name not in SYNTHETIC_ATTRIBUTES or value not in SYNTHETIC_ATTRIBUTES[name]:
                raise UserError(f"scene: unknown attribute {name}={value!r}")
        if d["background"] not in BACKGROUNDS or d["neckline"] not in NECKLINES:
            raise UserError(f"scene: unknown background {d['background']!r} "
                            f"or neckline {d['neckline']!r}")
        try:
            return cls(
                attribute_values=tuple(attrs.items()),
                skin=_rgb(d.pop("skin")),
                hair_color=_rgb(d.pop("hair_color")),
                trousers=_rgb(d.pop("trousers")),
                background_colors=tuple(_rgb(c) for c in d.pop("background_colors")),
                seed=int(d.pop("seed")),
                jpeg_quality=int(d.pop("jpeg_quality")),
                neckline=str(d.pop("neckline")),
                background=str(d.pop("background")),
                **{k: float(v) for k, v in d.items()},
            )
        except (TypeError, ValueError) as exc:
            raise UserError(f"scene: bad field value ({exc})") from None


def _check_schema(schema: Schema) -> None:
    for a in schema.attributes:
        known = SYNTHETIC_ATTRIBUTES.get(a.name)
        if known is None:
            raise UserError(
                f"unknown synthetic attribute {a.name!r}; valid: {', '.join(SYNTHETIC_ATTRIBUTES)}"
            )
        unknown = [v for v in a.values if v not in known]
        if unknown:
            raise UserError(
                f"unknown {a.name} value {unknown[0]!r}; valid: {', '.join(known)}"
            )


def _pick(rng: np.random.Generator, table) -> tuple:
    return table[int(rng.integers(len(table)))]


def _lerp_table(table, t: float) -> tuple[int, int, int]:
    pos = t * (len(table) - 1)
    i = min(int(pos), len(table) - 2)
    f = pos - i
    return _rgb(np.add(np.multiply(table[i], 1 - f), np.multiply(table[i + 1], f)))


def sample_scene(seed_or_rng: int | np.random.Generator, schema: Schema | None = None) -> Scene:
    """A random scene: nuisance first (so a seed gives the same person under any schema), then
    attribute values uniformly from the schema (default: color and sleeve)."""
    rng = (seed_or_rng if isinstance(seed_or_rng, np.random.Generator)
           else np.random.default_rng(int(seed_or_rng)))
    schema = DEFAULT_SCHEMA if schema is None else schema
    _check_schema(schema)
    u = rng.uniform

    def background_color() -> tuple[int, int, int]:
        # Mostly light studio colors, some mid tones: catalog photos are rarely dark.
        base = u(0.55, 0.97) if u() < 0.8 else u(0.3, 0.6)
        tint = rng.normal(0, 0.07, 3)
        return _rgb(np.clip((base + tint) * 255, 0, 255))

    c1 = background_color()
    c2 = _rgb(np.clip(np.add(c1, rng.normal(0, 40, 3)), 0, 255))
    nuisance = dict(
        seed=int(rng.integers(2**31)),
        x=round(u(-0.06, 0.06), 4),
        y=round(u(-0.04, 0.04), 4),
        scale=round(u(1.15, 1.35), 4),
        shoulder_width=round(u(0.12, 0.158), 4),
        torso_length=round(u(0.30, 0.37), 4),
        build=round(u(0.85, 1.2), 4),
        head_size=round(u(0.88, 1.12), 4),
        neck_length=round(u(0.035, 0.06), 4),
        skin=_lerp_table(SKIN_RGB, u()),
        hair_color=_pick(rng, HAIR_RGB),
        hair_length=round(u(), 4),
        left_shoulder=round(u(6, 32), 2),
        left_elbow=round(u(-20, 110), 2),
        right_shoulder=round(u(6, 32), 2),
        right_elbow=round(u(-20, 110), 2),
        trousers=_pick(rng, TROUSERS_RGB),
        neckline=_pick(rng, NECKLINES),
        light=round(u(-1, 1), 4),
        folds=round(u(0.3, 1.0), 4),
        background=_pick(rng, BACKGROUNDS),
        background_colors=(c1, c2),
        background_angle=round(u(0, 360), 2),
        noise=round(u(0.8, 4.0), 3),
        jpeg_quality=int(rng.integers(70, 96)),
    )
    attrs = tuple((a.name, a.values[int(rng.integers(len(a.values)))]) for a in schema.attributes)
    return Scene(attribute_values=attrs, **nuisance)


# --------------------------------------------------------------------------- geometry helpers


@lru_cache(maxsize=8)
def _pixel_centers(size: int) -> np.ndarray:
    return ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)


@lru_cache(maxsize=16)
def _upsampler(size: int, k: int) -> np.ndarray:
    """size x k linear interpolation weights: a k-point smooth field -> size pixels."""
    pos = np.clip(_pixel_centers(size) * (k - 1), 0, k - 1)
    lo = np.minimum(pos.astype(int), k - 2)
    f = pos - lo
    w = np.zeros((size, k), np.float32)
    w[np.arange(size), lo] = 1 - f
    w[np.arange(size), lo + 1] = f
    return w


def _smooth_field(rng: np.random.Generator, size: int, k: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: k x k Gaussian values interpolated to size x size."""
    w = _upsampler(size, k)
    return (w @ rng.standard_normal((k, k)).astype(np.float32) @ w.T) / 1.2


class _Segment:
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


def _ellipse(u, v, cu, cv, ru, rv):
    # Scaled-circle approximation of the ellipse distance: exact enough for a one-pixel ramp.
    return (np.hypot((u - cu) / ru, (v - cv) / rv) - 1.0) * min(ru, rv)


def _coverage(sdf, px_per_unit: float):
    """Fraction of a pixel inside the shape: a one-pixel linear ramp across the edge."""
    return np.clip(0.5 - sdf * px_per_unit, 0.0, 1.0)


class _Canvas:
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


# --------------------------------------------------------------------------- fabric


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
    return _coverage(d, px)


def _fabric(attrs: dict, u, v, px: float, seed: int) -> np.ndarray:
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
    return _coverage(d * period, px), np.mod(row + col, 2).astype(np.intp)


# --------------------------------------------------------------------------- render


def _garment(scene: Scene) -> dict[str, str]:
    """Every garment attribute the renderer knows. One outside the scene's schema is nuisance:
    pattern is solid (the schema's default look), color and sleeve come from the scene seed."""
    rng = np.random.default_rng([scene.seed, 5])
    drawn = {name: values[int(rng.integers(len(values)))]
             for name, values in SYNTHETIC_ATTRIBUTES.items()}
    drawn["pattern"] = "solid"
    return {**drawn, **scene.attributes}


def render(scene: Scene, size: int = 128) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw the scene: uint8 HxWx3 image and boolean HxW masks (a pure function of scene, size).

    Masks: garment (= torso | sleeves), torso (the top on the torso), sleeves (the top on the
    arms), arms (visible arm skin, shoulder to wrist), hands, person. A pixel belongs to a mask
    when any of its area shows that part, so every pixel an attribute edit can change lies in
    garment | arms of the two renders.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise UserError(f"render: size must be an integer >= 16, got {size!r}")
    size = int(size)
    attrs = _garment(scene)
    color, sleeve = attrs["color"], attrs["sleeve"]
    s = scene.scale
    px = s * size  # pixels per figure unit

    # Figure coordinates: origin at the base of the neck, y down, about image heights.
    c = _pixel_centers(size)
    ox, oy = 0.5 + scene.x, 0.5 + scene.y - 0.16 * s
    u = ((c - ox) / s)[None, :].astype(np.float32)
    v = ((c - oy) / s)[:, None].astype(np.float32)
    U = np.broadcast_to(u, (size, size))
    V = np.broadcast_to(v, (size, size))

    # Body measurements (figure units). The paper's data is real photos; these proportions are
    # our choice, loosely a fashion croquis cut at the thighs.
    S = scene.shoulder_width
    L = scene.torso_length
    b = scene.build
    W = S * (0.62 + 0.2 * b) * 0.9
    H = S * (0.72 + 0.16 * b)
    neck_hw = 0.028 * (0.8 + 0.25 * b)
    slope = 0.28  # shoulder line drop per unit out from the neck
    r_up, r_fore, r_hand = 0.029 * b, 0.023 * b, 0.024 * (0.5 + 0.5 * b)
    upper_len, fore_len = 0.165 * (0.9 + 0.1 * b) + 0.01, 0.15
    head_rv = 0.074 * scene.head_size
    head_ru = 0.062 * scene.head_size
    head_cv = -scene.neck_length - head_rv * 0.75
    skin = np.asarray(scene.skin, np.float32)
    light = np.float32(0.06 * scene.light)

    def skin_color(across):
        """Skin lit from the side, darker toward a limb's edges (across in -1..1)."""
        return skin * (1.0 + light * across - 0.10 * across * across)[..., None]

    # ---- background
    rng_bg = np.random.default_rng([scene.seed, 1])
    c1 = np.asarray(scene.background_colors[0], np.float32)
    c2 = np.asarray(scene.background_colors[1], np.float32)
    if scene.background == "gradient":
        a = math.radians(scene.background_angle)
        g = (c - 0.5)[None, :] * math.cos(a) + (c - 0.5)[:, None] * math.sin(a)
        t = np.clip(g * 1.2 + 0.5, 0, 1).astype(np.float32)
    elif scene.background == "texture":
        field = 0.6 * _smooth_field(rng_bg, size, 5) + 0.4 * _smooth_field(rng_bg, size, 17)
        t = np.clip(field * 0.5 + 0.5, 0, 1)
    else:
        t = np.zeros((size, size), np.float32)
    canvas = _Canvas(c1 + t[..., None] * (c2 - c1), u, v, ("torso", "sleeves", "arms", "hands"))

    # ---- long hair, behind everything else of the figure
    hair = np.asarray(scene.hair_color, np.float32)
    if scene.hair_length > 0.2:
        hair_end = head_cv + head_rv * (0.2 + 2.4 * scene.hair_length)
        hair_hw = head_ru * (1.08 + 0.3 * scene.hair_length)
        sl, Ub, Vb = canvas.box(-hair_hw - 0.02, hair_hw + 0.02, head_cv - 0.01, hair_end + 0.03)
        back = np.maximum(np.abs(Ub) - hair_hw, np.maximum(head_cv - Vb, Vb - hair_end))
        back = np.minimum(back, _ellipse(Ub, Vb, 0, hair_end, hair_hw, 0.02))
        canvas.draw("hair", _coverage(back, px), hair * 0.85, sl)

    # ---- trousers, under the top's hem
    waist_v, crotch = L - 0.05, L + 0.10
    sl, Ub, Vb = canvas.box(-H * 1.05 - 0.02, H * 1.05 + 0.02, waist_v - 0.02, 10.0)
    legs_hw = np.interp(Vb[:, 0], [waist_v, L, 1.5], [W * 1.02, H, H * 1.04])
    trousers = np.maximum(np.abs(Ub) - legs_hw.astype(np.float32)[:, None], waist_v - Vb)
    gap = np.maximum(np.abs(Ub) - 0.004 - 0.08 * (Vb - crotch), crotch - Vb)  # between the legs
    trousers = np.maximum(trousers, -gap)
    seam = 0.25 * np.exp(-(np.abs(Ub) / 0.012) ** 2) * (Vb > crotch)
    tr_shade = 1.0 + light * Ub / H - 0.12 * (Ub / H) ** 2 - seam
    canvas.draw("trousers", _coverage(trousers, px),
                np.asarray(scene.trousers, np.float32) * tr_shade[..., None], sl)

    # ---- neck and the body under the top (shows at the neckline and the armholes)
    sl, Ub, Vb = canvas.box(-neck_hw - 0.02, neck_hw + 0.02, head_cv - 0.02, 0.07)
    neck = np.maximum(np.abs(Ub) - neck_hw, np.maximum(head_cv - Vb, Vb - 0.05))
    canvas.draw("neck", _coverage(neck, px), skin_color(Ub / neck_hw * 0.6) * 0.93, sl)
    shoulder_v = slope * np.maximum(np.abs(U) - neck_hw, 0)  # full frame: sleeves use it too
    torso_box, Ub, Vb = canvas.box(-S - 0.02, S + 0.02, -0.02, L + 0.05)
    hem_v = L + 0.012 * (Ub / H) ** 2
    side_hw = np.interp(Vb[:, 0], [0.0, 0.3 * L, 0.65 * L, L], [S, S * 0.96, W, H])
    side_hw = side_hw.astype(np.float32)[:, None]
    torso = np.maximum(np.abs(Ub) - side_hw, np.maximum(shoulder_v[torso_box] - Vb, Vb - hem_v))
    across_torso = np.clip(Ub / side_hw, -1, 1)
    canvas.draw("body", _coverage(torso, px), skin_color(across_torso) * 0.9, torso_box)

    # ---- the top on the torso
    if scene.neckline == "crew":
        neck_cut = _ellipse(Ub, Vb, 0, -0.004, neck_hw * 1.35, 0.028)
    elif scene.neckline == "scoop":
        neck_cut = _ellipse(Ub, Vb, 0, -0.01, neck_hw * 1.9, 0.06)
    else:  # v: a wedge pointing down
        depth, half = 0.075, neck_hw * 1.5
        norm = math.hypot(1.0, depth / half)
        neck_cut = np.maximum((Vb - depth + np.abs(Ub) * depth / half) / norm, -0.02 - Vb)
    shirt = np.maximum(torso, -neck_cut)
    joints = [(side * (S - 0.6 * r_up), slope * (S - 0.6 * r_up - neck_hw) + 0.85 * r_up)
              for side in (-1, 1)]
    if sleeve == "sleeveless":
        # Armholes: the top ends in a strap and the shoulder is bare.
        for ju, jv in joints:
            hole = _ellipse(Ub, Vb, ju + math.copysign(0.3 * r_up, ju), jv + 0.3 * r_up,
                            r_up * 1.75, r_up * 2.3)
            shirt = np.maximum(shirt, -hole)

    rng_fold = np.random.default_rng([scene.seed, 2])
    fold_k = rng_fold.uniform(25, 60, 3)
    fold_dir = rng_fold.uniform(-0.6, 0.6, 3) + np.array([0.0, 0.0, math.pi / 2])
    fold_phase = rng_fold.uniform(0, 2 * math.pi, 3)
    fold_uv = [(float(k * math.cos(d)), float(k * math.sin(d)), float(p))
               for k, d, p in zip(fold_k, fold_dir, fold_phase)]
    fold_amp = np.float32(0.015 * scene.folds)

    def cloth(Ub, Vb):
        """The top's color field (pattern included) and its folds at these coordinates."""
        folds = sum(np.sin(Ub * ku + Vb * kv + p) for ku, kv, p in fold_uv) * fold_amp
        return _fabric(attrs, Ub, Vb, px, scene.seed), folds

    # Modest shading keeps each color's mean apart from its neighbours'; a darker hem and an
    # inner edge line separate the top from skin and trousers at 64x64.
    fabric, folds = cloth(Ub, Vb)
    hem = np.clip(1 - (hem_v - Vb) * px / 2.0, 0, 1) * (Vb > 0.5 * L)
    edge = _coverage(shirt + 1.2 / px, px)
    shade = (1.0 + light * across_torso - 0.09 * across_torso ** 4 + folds) \
        * (1 - 0.12 * hem) * (0.8 + 0.2 * edge)
    top = fabric * shade[..., None]
    if color == "silver":
        top = top + _sheen(across_torso - 0.35 * scene.light)[..., None]
    canvas.draw("torso", _coverage(shirt, px), top, torso_box)

    # ---- head and the hair on it
    sl, Ub, Vb = canvas.box(-head_ru * 1.2 - 0.02, head_ru * 1.2 + 0.02,
                            head_cv - head_rv * 1.2 - 0.02, head_cv + head_rv + 0.02)
    canvas.draw("head", _coverage(_ellipse(Ub, Vb, 0, head_cv, head_ru, head_rv), px),
                skin_color(np.clip(Ub / head_ru, -1, 1)), sl)
    cap = _ellipse(Ub, Vb, 0, head_cv - 0.1 * head_rv, head_ru * 1.1, head_rv * 1.02)
    hairline = head_cv - head_rv * (0.25 + 0.35 * np.clip(1 - (Ub / head_ru) ** 2, 0, 1))
    canvas.draw("hair", _coverage(np.maximum(cap, Vb - hairline), px), hair, sl)

    # ---- arms: skin, hands, then the sleeves over both arms
    cut = {"long": upper_len + fore_len, "three-quarter": upper_len + 0.5 * fore_len,
           "short": 0.5 * upper_len}.get(sleeve)
    # Long and three-quarter sleeves hang looser than short ones.
    loose = 0.015 if sleeve in ("long", "three-quarter") else 0.013
    sleeves = []
    for side, (ju, jv), a_sh, a_el in ((-1, joints[0], scene.left_shoulder, scene.left_elbow),
                                       (1, joints[1], scene.right_shoulder, scene.right_elbow)):
        a1, a2 = math.radians(a_sh), math.radians(a_sh - a_el)
        elbow = (ju + side * upper_len * math.sin(a1), jv + upper_len * math.cos(a1))
        wrist = (elbow[0] + side * fore_len * math.sin(a2), elbow[1] + fore_len * math.cos(a2))
        hand_c = (wrist[0] + side * 0.75 * r_hand * math.sin(a2),
                  wrist[1] + 0.75 * r_hand * math.cos(a2))
        pad = r_up + loose + r_hand + 0.02
        us, vs = (ju, elbow[0], hand_c[0]), (jv, elbow[1], hand_c[1])
        box, Ub, Vb = canvas.box(min(us) - pad, max(us) + pad, min(vs) - pad, max(vs) + pad)
        up = _Segment(Ub, Vb, (ju, jv), elbow)
        fo = _Segment(Ub, Vb, elbow, wrist)
        r_u = r_up + (r_fore * 1.05 - r_up) * up.h  # tapered limbs
        r_f = r_fore * (1.05 - 0.2 * fo.h)
        d_up, d_fo = up.distance - r_u, fo.distance - r_f
        across = np.clip(np.where(d_up < d_fo, up.distance / r_u, fo.distance / r_f), 0, 1)
        canvas.draw("arms", _coverage(np.minimum(d_up, d_fo), px), skin_color(across * side), box)
        hand = _ellipse(Ub, Vb, hand_c[0], hand_c[1], r_hand * 0.9, r_hand * 1.15)
        canvas.draw("hands", _coverage(hand, px), skin * np.float32(0.97), box)
        if cut is None:
            continue

        # The sleeve: the arm's fabric tube, cut perpendicular to the arm at the sleeve length,
        # and not above the shoulder line (no puff).
        s_up = np.maximum(up.distance - (r_u + loose), up.t - cut)
        s_up = np.maximum(s_up, shoulder_v[box] - 0.006 - Vb)
        if cut > upper_len:
            s_fo = np.maximum(fo.distance - (r_f + loose), fo.t - (cut - upper_len))
            tube = np.minimum(s_up, s_fo)
            first = s_up < s_fo
            across = np.where(first, up.distance / (r_u + loose), fo.distance / (r_f + loose))
            to_cut = np.where(first, cut - up.t, cut - upper_len - fo.t)
        else:
            tube, across, to_cut = s_up, up.distance / (r_u + loose), cut - up.t
        across = np.clip(across, 0, 1)
        cuff = np.clip(1 - to_cut * px / 1.6, 0, 1)  # hem line at the sleeve's end
        inner = _coverage(tube + 1.0 / px, px)
        fabric, folds = cloth(Ub, Vb)
        shade = (1.0 + light * across * side - 0.14 * across ** 2 + folds) \
            * (1 - 0.2 * cuff) * (0.8 + 0.2 * inner)
        color_field = fabric * shade[..., None]
        if color == "silver":
            color_field = color_field + _sheen(across * side - 0.35 * scene.light)[..., None]
        sleeves.append((_coverage(tube, px), color_field, box))
    for cover, color_field, box in sleeves:
        canvas.draw("sleeves", cover, color_field, box)

    # ---- sensor noise, from the scene seed only
    rng_noise = np.random.default_rng([scene.seed, 4])
    noise = rng_noise.standard_normal((size, size, 3), dtype=np.float32) * np.float32(scene.noise)
    image = np.clip(canvas.image + noise + 0.5, 0, 255).astype(np.uint8)

    masks = {name: vis > 0 for name, vis in canvas.visible.items()}
    masks["garment"] = masks["torso"] | masks["sleeves"]
    masks["person"] = canvas.person > 0
    return image, masks


def _sheen(across):
    """Silver's metallic highlight: a bright band along the lit side of a cylinder."""
    return np.float32(70.0) * np.clip(1 - np.abs(across) / 0.45, 0, 1) ** 2


# --------------------------------------------------------------------------- catalogs

CATALOG_CSV = "catalog.csv"
SCHEMA_JSON = "schema.json"
SETTINGS_JSON = "synthetic.json"


class SceneRow(NamedTuple):
    id: int
    path: str
    split: str
    scene: Scene


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n value indices in 0..k-1, each count within 1 of the others, in shuffled order."""
    return rng.permutation(np.arange(n) % k)


def catalog_scenes(n: int, seed: int = 0, attributes: Sequence[str] = ("color", "sleeve"),
                   test_fraction: float = 0.1) -> list[tuple[str, Scene]]:
    """The (split, scene) rows `write_catalog` renders: balanced values, deterministic split."""
    schema = synthetic_schema(attributes)
    rng = np.random.default_rng([seed, 0])
    # One independent shuffle per attribute keeps every count balanced while the combinations
    # vary; each item's nuisance comes from its own generator, so rows can render in any order.
    columns = [_balanced(rng, n, len(a.values)) for a in schema.attributes]
    n_test = int(round(n * test_fraction))
    test = np.zeros(n, bool)
    test[rng.permutation(n)[:n_test]] = True
    rows = []
    for i in range(n):
        scene = sample_scene(np.random.default_rng([seed, 1, i]), schema)
        attrs = tuple((a.name, a.values[int(col[i])]) for a, col in zip(schema.attributes, columns))
        rows.append(("test" if test[i] else "train", replace(scene, attribute_values=attrs)))
    return rows


def _image_name(i: int, fmt: str) -> str:
    return f"images/{i:06d}.{fmt}"


def _render_chunk(task) -> int:
    """Worker: render and write one chunk of rows (top level so a process pool can pickle it)."""
    from .images import save_image

    root, size, fmt, items = task
    for i, scene in items:
        image, _ = render(scene, size)
        # zlib level 1: three times faster than the default on noisy renders, 15% larger.
        save_image(Path(root) / _image_name(i, fmt), image, quality=scene.jpeg_quality,
                   compress_level=1)
    return len(items)


def _default_workers(n: int) -> int:
    # Below a few hundred images a pool costs more to start than it saves.
    if n < 300:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, cores or 1)


def write_catalog(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 128,
                  attributes: Sequence[str] = ("color", "sleeve"), fmt: str = "png",
                  test_fraction: float = 0.1, progress: bool = True, overwrite: bool = False,
                  workers: int | None = None) -> Path:
    """Render n scenes into OUT_DIR: images/, catalog.csv, schema.json, synthetic.json.

    The directory is built beside OUT_DIR under a temporary name and renamed into place, so a
    reader never sees half a catalog. Same arguments -> byte-identical files.
    """
    from .checkpoint import atomic_dir, write_json

    out = Path(out_dir)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise UserError(f"{out}: the number of images must be a positive integer, got {n!r}")
    if fmt not in FORMATS:
        raise UserError(f"{out}: unknown image format {fmt!r}; valid: {', '.join(FORMATS)}")
    if not 0.0 <= test_fraction < 1.0:
        raise UserError(f"{out}: test fraction must be in [0, 1), got {test_fraction}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise UserError(f"{out}: image size must be an integer >= 16, got {size!r}")
    try:
        schema = synthetic_schema(list(attributes))
    except UserError as exc:
        raise UserError(f"{out}: {exc}") from None
    if not schema.attributes:
        raise UserError(f"{out}: no attributes given; valid: {', '.join(SYNTHETIC_ATTRIBUTES)}")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty; overwrite (--overwrite) replaces it")

    rows = catalog_scenes(int(n), seed, schema.names, test_fraction)
    workers = _default_workers(n) if workers is None else max(1, int(workers))
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        items = list(enumerate(scene for _, scene in rows))
        chunk = max(16, min(256, len(items) // (workers * 8) or 1))
        tasks = [(str(tmp), int(size), fmt, items[k:k + chunk])
                 for k in range(0, len(items), chunk)]
        from tqdm import tqdm

        with tqdm(total=len(items), unit="img", desc="render", file=sys.stderr,
                  disable=not progress) as bar:
            if workers == 1:
                for task in tasks:
                    bar.update(_render_chunk(task))
            else:
                import multiprocessing as mp

                # forkserver: workers start clean even if the parent holds threads (torch).
                method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
                with mp.get_context(method).Pool(workers) as pool:
                    for done in pool.imap_unordered(_render_chunk, tasks):
                        bar.update(done)
        _write_table(tmp / CATALOG_CSV, schema, rows, fmt)
        write_json(tmp / SCHEMA_JSON, schema.to_dict())
        write_json(tmp / SETTINGS_JSON, {
            "n": int(n), "seed": int(seed), "size": int(size), "attributes": schema.names,
            "format": fmt, "test_fraction": float(test_fraction), "scene_version": SCENE_VERSION,
        })
    return out


def _write_table(path: Path, schema: Schema, rows, fmt: str) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "path", "split", *schema.names, "scene"])
        for i, (split, scene) in enumerate(rows):
            attrs = scene.attributes
            writer.writerow([i, _image_name(i, fmt), split, *(attrs[a] for a in schema.names),
                             scene.to_json()])


def load_scene_table(catalog_dir: str | os.PathLike) -> list[SceneRow]:
    """The rows of a synthetic catalog's catalog.csv, in order, with their scenes."""
    path = Path(catalog_dir) / CATALOG_CSV
    if not path.is_file():
        raise UserError(f"{path}: no such file (not a synthetic catalog directory?)")
    rows = []
    csv.field_size_limit(1 << 20)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"id", "path", "split", "scene"} - set(reader.fieldnames or ())
        if missing:
            raise UserError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for line, row in enumerate(reader, start=2):
            try:
                scene = Scene.from_json(row["scene"])
                rows.append(SceneRow(int(row["id"]), row["path"], row["split"], scene))
            except UserError as exc:
                raise UserError(f"{path}: line {line}: {exc}") from None
            except ValueError:
                raise UserError(
                    f"{path}: line {line}: id {row['id']!r} is not an integer") from None
    return rows


def load_scenes(catalog_dir: str | os.PathLike) -> list[Scene]:
    """The scenes of a synthetic catalog in catalog.csv row order."""
    return [row.scene for row in load_scene_table(catalog_dir)]


def contact_sheet(source: str | os.PathLike | Sequence[Scene], out_png: str | os.PathLike,
                  per_row: int = 8, size: int = 64) -> Path:
    """One row per attribute value (labelled attribute=value) of images having that value.

    `source` is a catalog directory (its image files are shown, JPEG artefacts and all) or a
    list of scenes (rendered at `size`).
    """
    from PIL import Image, ImageDraw

    from .images import load_image, save_image

    if per_row < 1:
        raise UserError(f"{out_png}: per_row must be at least 1, got {per_row}")
    if size < 16:
        raise UserError(f"{out_png}: thumbnail size must be at least 16, got {size}")
    if isinstance(source, (str, os.PathLike)):
        root = Path(source)
        table = load_scene_table(root)
        scenes = [row.scene for row in table]

        def picture(k: int) -> np.ndarray:
            return load_image(root / table[k].path)
    else:
        scenes = list(source)

        def picture(k: int) -> np.ndarray:
            return render(scenes[k], size)[0]
    if not scenes:
        raise UserError(f"{out_png}: no scenes to draw")
    names = list(scenes[0].attributes)
    rows = [(name, value) for name in names for value in SYNTHETIC_ATTRIBUTES[name]
            if any(s.attributes.get(name) == value for s in scenes)]
    font = _font(max(10, size // 5))
    label_w = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(
        f"{n}={v}", font=font)) for n, v in rows)
    sheet = Image.new("RGB", (label_w + per_row * size, len(rows) * size), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (name, value) in enumerate(rows):
        draw.text((4, r * size + size // 2), f"{name}={value}", fill=(0, 0, 0), font=font,
                  anchor="lm")
        chosen = [k for k, s in enumerate(scenes) if s.attributes.get(name) == value][:per_row]
        for col, k in enumerate(chosen):
            img = Image.fromarray(picture(k))
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            sheet.paste(img, (label_w + col * size, r * size))
    out = Path(out_png)
    save_image(out, np.asarray(sheet))
    return out


def _font(px: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()
