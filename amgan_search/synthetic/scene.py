"""Scenes: the garment attributes and every nuisance parameter of one synthetic photo.

`sample_scene(seed)` draws the nuisance first (so a seed gives the same person under any schema),
then the attribute values; `scene.with_attributes(...)` is the same photo with another garment,
the pixel-exact target of an attribute edit. The palettes here are the renderer's colors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import DEFAULT_SCHEMA, SYNTHETIC_ATTRIBUTES, SYNTHETIC_NECKLINES, Schema

SCENE_VERSION = 1
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
NECKLINES = SYNTHETIC_NECKLINES  # the nuisance cut when neckline is not in the schema


def _rgb(values) -> tuple[int, int, int]:
    return tuple(int(round(float(c))) for c in values)


@dataclass(frozen=True)
class Scene:
    """One synthetic catalog photo: garment attributes plus every nuisance parameter.

    `attributes` are the values of the scene's schema; a renderer attribute outside it is
    nuisance (pattern solid; the neckline the `neckline` field; color and sleeve drawn from
    `seed`). With neckline in the schema, its attribute value is the cut drawn.
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
