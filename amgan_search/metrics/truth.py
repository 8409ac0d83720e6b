"""A grader for the synthetic catalog that is not a network: it reads color and sleeve from the
pixels, using only the renderer's own drawing of the query scene.

An edit must keep the query scene's person, pose, lighting and background, so the renderer can
draw, for that scene, what every garment would look like. The references are noise-free renders
of the query scene (`render` at the image's size, noise 0), and the rule is:

- color: the core of the torso (the top on the torso under every sleeve length, eroded by one
  pixel, so no anti-aliased edge and no armhole) is read pixel by pixel. The shading at each pixel
  (lighting, folds, hem, edge line) is shade = (a render in gray) / gray. Each pixel votes for the
  nearest of: every named color times shade (silver also gets its metallic sheen, from a silver
  render), and the multicolor base (any of the three turquoises) times shade. For a patterned
  scene a color's pattern tones (base pushed darker or lighter, and their midpoint) count as that
  color. The read value: multicolor when the turquoise base holds at least MULTI_BASE of the core
  and other colors at least MULTI_REST (several distinct colors, as the renderer draws them);
  otherwise the named color with most votes if it holds at least MAJORITY of the core; otherwise
  None (no color; a top tinted over part of its area is not read as the tint).
- sleeve: the renderer's masks give, for each sleeve length, what the top covers (garment). The
  arm is cut into the zones between consecutive lengths (armholes and the short sleeve; short to
  three-quarter; three-quarter to long). At each zone pixel the image is compared with the
  sleeveless render (bare: skin, or whatever lies behind a loose sleeve; the scene's skin color
  under any of the renderer's limb shadings also counts as bare) and with the long render in the
  color just read (fabric); a pixel is bare when it is nearer a bare reference than the fabric
  one and within BARE_DISTANCE of it, otherwise covered, so a smear that is neither skin
  nor fabric counts as a sleeve still there. Pixels where the two references are closer than
  MIN_CONTRAST (a skin-coloured top) say nothing and are left out. The read value is the sleeve
  length whose covered/bare pattern agrees with the most zone pixels.

`grade(image, scene)` returns {"color": value or None, "sleeve": value or None}; a value of None
never equals a target. `References(scene, size)` + `grade_with(image, refs)` grade several edits
of one query scene without drawing it again. `grader_accuracy` measures the rule on true renders of unseen scenes.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import replace
from itertools import pairwise
from typing import Sequence

import numpy as np

from amgan_search.errors import UserError
from amgan_search.schema import SYNTHETIC_COLORS, SYNTHETIC_SLEEVES, synthetic_schema
from amgan_search.synthetic import GARMENT_RGB, MULTICOLOR_BASE, render, sample_scene
from amgan_search.synthetic.fabric import garment

# Shares of the torso core's pixel votes. The renderer's multicolor is about two thirds
# turquoise base and a third accents; a solid top wins nearly every vote.
MAJORITY = 0.5
MULTI_BASE, MULTI_REST = 0.4, 0.1
BARE_DISTANCE = 48.0  # RGB distance (0..255 units): sensor noise and JPEG stay well inside it
MIN_CONTRAST = 24.0  # bare against fabric references closer than this: the pixel says nothing
SKIN_SHADES = np.linspace(0.8, 1.1, 7)  # limbs: light +-6%, darker to the edges, the body 0.9
GRAY = np.asarray((124, 124, 126), np.float32)  # GARMENT_RGB["gray"]: no clipping under shading
SOLID_COLORS = tuple(c for c in SYNTHETIC_COLORS if c != "multicolor")
# Sleeve lengths from longest to none: each covers the zones of all shorter ones.
LENGTHS = ("long", "three-quarter", "short", "sleeveless")


def _draw(scene, size: int, **garment_values: str):
    """A noise-free render of the scene wearing these garment values: (float image, masks)."""
    values = {**garment(scene), **garment_values}
    image, masks = render(replace(scene, attribute_values=tuple(values.items()), noise=0.0), size)
    return image.astype(np.float32), masks


def _erode(mask: np.ndarray) -> np.ndarray:
    """A pixel stays when it and its four neighbours are in the mask."""
    m = np.pad(mask, 1, constant_values=False)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _color_tones(name: str, pattern: str) -> list[np.ndarray]:
    """The unshaded tones a top of this color shows: the base, plus the pattern's tones."""
    base = np.asarray(GARMENT_RGB[name], np.float32)
    if pattern == "solid":
        return [base]
    second = base * 0.6 if float(base.mean()) > 100 else base + (255 - base) * 0.42
    return [base, second, (base + second) / 2]


class References:
    """What the renderer draws for the query scene: masks per sleeve length, shading, sheen.

    Drawn once per query scene (six renders at the image's size); `grade_with` reuses them for
    every edit of that scene.
    """

    def __init__(self, scene, size: int):
        self.scene, self.size = scene, size
        self.garment = garment(scene)
        drawn = {s: _draw(scene, size, sleeve=s, color="gray", pattern="solid")
                 for s in LENGTHS}
        self.covered = {s: m["garment"] for s, (_, m) in drawn.items()}
        core = np.logical_and.reduce([m["torso"] for _, m in drawn.values()])
        self.core = _erode(core)
        sleeve = self.garment["sleeve"]
        self.shade = drawn[sleeve][0][self.core] / GRAY  # [P, 3]
        silver, _ = _draw(scene, size, sleeve=sleeve, color="silver", pattern="solid")
        self.sheen = silver[self.core] - np.asarray(GARMENT_RGB["silver"]) * self.shade
        self.bare = drawn["sleeveless"][0]
        self.skin = np.asarray(scene.skin, np.float32)
        self._fabric: dict[str, np.ndarray] = {}

    def fabric(self, color: str) -> np.ndarray:
        """The long-sleeved render in this color: what a covered arm pixel looks like."""
        if color not in self._fabric:
            self._fabric[color] = _draw(self.scene, self.size, sleeve="long", color=color)[0]
        return self._fabric[color]

    def forget_fabrics(self) -> None:
        """Drop the fabric renders drawn so far (one per colour read): a caller grading many
        scenes keeps its memory to the fixed references."""
        self._fabric.clear()


def read_color(image: np.ndarray, ref: References) -> str | None:
    """The color the torso's pixels vote for (module docstring), or None."""
    pixels = image[ref.core].astype(np.float32)  # [P, 3]
    if len(pixels) == 0:
        return None
    pattern = ref.garment["pattern"]
    dists = []
    for name in SOLID_COLORS:
        preds = [tone * ref.shade for tone in _color_tones(name, pattern)]
        if name == "silver":
            preds = [p + ref.sheen for p in preds] + preds
        dists.append(np.min([np.linalg.norm(pixels - p, axis=1) for p in preds], axis=0))
    turquoise = [np.asarray(b, np.float32) * ref.shade for b in MULTICOLOR_BASE]
    dists.append(np.min([np.linalg.norm(pixels - p, axis=1) for p in turquoise], axis=0))
    votes = np.bincount(np.argmin(np.stack(dists), axis=0), minlength=len(dists)) / len(pixels)
    base_share = votes[-1]
    if base_share >= MULTI_BASE and 1 - base_share >= MULTI_REST:
        return "multicolor"
    top = int(np.argmax(votes[:-1]))
    return SOLID_COLORS[top] if votes[top] >= MAJORITY else None


def _skin_distance(img: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """RGB distance to the skin color under the renderer's range of limb shading."""
    return np.min([np.linalg.norm(img - k * skin, axis=2) for k in SKIN_SHADES], axis=0)


def read_sleeve(image: np.ndarray, ref: References, color: str | None) -> str | None:
    """The sleeve length whose covered and bare zones agree with most arm pixels, or None."""
    fabric = ref.fabric(color if color is not None else ref.garment["color"])
    img = image.astype(np.float32)
    # Bare: the sleeveless picture there, or the scene's skin in any light (a loose sleeve is
    # wider than the arm, so a sleeve painted over with skin shows skin where the truth shows
    # what lies behind the arm).
    d_bare = np.minimum(np.linalg.norm(img - ref.bare, axis=2), _skin_distance(img, ref.skin))
    d_fabric = np.linalg.norm(img - fabric, axis=2)
    bare = (d_bare < d_fabric) & (d_bare < BARE_DISTANCE)
    telling = np.linalg.norm(ref.bare - fabric, axis=2) >= MIN_CONTRAST
    # zones[k]: covered by LENGTHS[k] and not by the next shorter length
    zones = [ref.covered[a] & ~ref.covered[b] & telling for a, b in pairwise(LENGTHS)]
    n_bare = np.asarray([int((bare & z).sum()) for z in zones])
    n_covered = np.asarray([int((~bare & z).sum()) for z in zones])
    if n_bare.sum() + n_covered.sum() == 0:
        return None
    # LENGTHS[i] covers zones i.. (long covers all three, sleeveless none)
    agree = [int(n_covered[i:].sum() + n_bare[:i].sum()) for i in range(len(LENGTHS))]
    return LENGTHS[int(np.argmax(agree))]


def _checked(image: np.ndarray, size: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or image.shape[:2] != (size, size):
        raise UserError(f"grade: expected a uint8 {size}x{size}x3 image, got {image.dtype} "
                        f"{image.shape}")
    return image


def grade(image: np.ndarray, scene, size: int | None = None) -> dict[str, str | None]:
    """Read color and sleeve of an edited image of `scene` (module docstring has the rule).

    The references are drawn at `size`, by default the image's side; the image must be that size.
    """
    side = np.shape(image)[0] if size is None else int(size)
    image = _checked(image, side)
    return grade_with(image, References(scene, side))


def grade_with(image: np.ndarray, ref: References) -> dict[str, str | None]:
    """`grade` against references already drawn (several images of one query scene)."""
    image = _checked(image, ref.size)
    color = read_color(image, ref)
    return {"color": color, "sleeve": read_sleeve(image, ref, color)}


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The image as a JPEG catalog stores it (the catalog writes JPEG at scene.jpeg_quality)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def grader_accuracy(n: int = 500, seed: int = 50_000, size: int = 64, jpeg: bool = False,
                    attributes: Sequence[str] = ("color", "sleeve")) -> dict[str, dict[str, float]]:
    """Accuracy of `grade` on n unseen scenes (seeds seed..seed+n-1, random values of
    `attributes`: the harder setting's four draw patterned tops and every neckline).

    Rows: "true" (the scene's own render read as its own values), "color edit" and "sleeve edit"
    (the scene re-rendered with one attribute changed to a random other value, graded against
    the query scene: the changed attribute must read as the target, the other as kept).
    """
    rng = np.random.default_rng([seed, 0x7247])
    hits = {row: {"color": 0, "sleeve": 0} for row in ("true", "color edit", "sleeve edit")}
    for i in range(n):
        scene = sample_scene(seed + i, synthetic_schema(attributes))
        ref = References(scene, size)
        values = scene.attributes
        others = {a: [v for v in vals if v != values[a]]
                  for a, vals in (("color", SYNTHETIC_COLORS), ("sleeve", SYNTHETIC_SLEEVES))}
        targets = {a: others[a][int(rng.integers(len(others[a])))] for a in others}
        cases = {"true": scene,
                 "color edit": scene.with_attributes(color=targets["color"]),
                 "sleeve edit": scene.with_attributes(sleeve=targets["sleeve"])}
        for row, shown in cases.items():
            image = render(shown, size)[0]
            if jpeg:
                image = _jpeg(image, scene.jpeg_quality)
            read = grade_with(image, ref)
            for attr in ("color", "sleeve"):
                hits[row][attr] += read[attr] == shown.attributes[attr]
    return {row: {a: h / n for a, h in r.items()} for row, r in hits.items()}


def _table(result: dict[str, dict[str, float]]) -> str:
    lines = ["| image | color | sleeve |", "| --- | --- | --- |"]
    lines += [f"| {row} | {r['color']:.3f} | {r['sleeve']:.3f} |" for row, r in result.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m amgan_search.metrics.truth",
        description="Accuracy of the non-network grader on true renders of unseen scenes.")
    parser.add_argument("--n", type=int, default=500, help="number of scenes")
    parser.add_argument("--seed", type=int, default=50_000, help="first scene seed")
    parser.add_argument("--size", type=int, default=64, help="render side in pixels")
    parser.add_argument("--jpeg", action="store_true",
                        help="grade the images as a JPEG catalog stores them")
    parser.add_argument("--attributes", default="color,sleeve",
                        help="attributes the scenes draw (color,sleeve,pattern,neckline: the "
                             "harder setting)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.size < 16 or args.seed < 0:
        parser.error("--n must be >= 1, --size >= 16, --seed >= 0")
    try:
        attributes = synthetic_schema([a.strip() for a in args.attributes.split(",")]).names
        if not {"color", "sleeve"} <= set(attributes):
            raise UserError("--attributes must include color and sleeve (what the grader reads)")
    except UserError as exc:
        parser.error(str(exc))
    result = grader_accuracy(args.n, args.seed, args.size, args.jpeg, attributes)
    print(f"non-network grader, {args.n} scenes from seed {args.seed}, {args.size} px, "
          f"attributes {','.join(attributes)}{', JPEG' if args.jpeg else ''}")
    print(_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
