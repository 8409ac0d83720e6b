"""A grader for the synthetic catalog that is not a network: it reads color and sleeve from the
pixels of the whole garment, using only the renderer's own drawing of the query scene.

An edit must keep the query scene's person, pose, lighting and background, so the renderer can
draw, for that scene, what every garment would look like. The references are noise-free renders
of the query scene at the image's size, one set per sleeve length (long, three-quarter, short,
sleeveless). The renderer paints a pixel of the top as (what lies under it) + (its light) x (the
fabric's color), light being coverage times shading: a gray and a black render give both per
pixel and channel, so the top in any named color c is predicted as under + light x c, exactly,
at folds, hems, cuffs, edges and where a sleeve crosses the torso (silver with or without its
sheen, from a silver render; on a patterned top c with the scene's pattern layout, from the
pattern drawn in gray). Multicolor is predicted by its palette: the three turquoise bases, the
six accents and the blend of any base with any accent. A pixel's distance to a color is to that
color's nearest prediction under the sleeve lengths that cover the pixel.

Sleeve. The arm is cut into zones between consecutive lengths (armholes and the short sleeve;
short to three-quarter; three-quarter to long), and each zone across the arm's length into
slices SLICE_PX pixels thick (`synthetic.arm_axis`). A zone pixel's fabric fraction t is its
projection on the line from its bare reference (0: the sleeveless render, i.e. the arm's skin in
its own light, or where a loose sleeve showed what lies behind the arm, also the scene's skin in
any limb light) to its nearest prediction of the garment's fabric (1: the color read on the
torso, a pattern's two tones anywhere on the sleeve, multicolor's palette). Only pixels whose
two references differ by MIN_CONTRAST tell; a zone with fewer than MIN_TELLING of them is
silent. Read one way, a zone is bare (fabric) when its pixels' median distance off the line is
at most OFF_LINE, their mean t (weighted by the line's squared length) within TINT of 0 (of 1),
every slice of MIN_TELLING or more pixels within SLICE_TINT of it, and at most STRAY of the
pixels half way to the other end or further; a patterned fabric must also show its second tone
in about the share its layout draws there (within TONE). The ways: the line as drawn, its
fabric GAIN darker or lighter, and the line's two ends drawn softened, as the catalog stores
them (JPEG at the scene's quality) and blurred as a generator draws them (SOFTEN; there within
OFF_SOFTENED of the line). The zone is bare (fabric) when a way reads it so, unless a way that
fits its pixels at least as closely finds them a blend (mean t between 1/3 and 2/3). A zone
read bare or fabric that is, read the same way against the query's own top, the old sleeve
left in place (when the color read is not the query's) is "old". The read sleeve is the one
length whose zones are fabric (or silent) where it covers the arm and bare (or silent) where it
does not; None when no length, or more than one, fits. So a sleeve is read shorter only when
the band it bares is skin along its whole length, and longer only when the arm is covered, over
all of the length it covers, by fabric of the garment's own color in the scene's light.

Color. The candidate is the color the most pixels of the torso core (the top on the torso under
every sleeve length, eroded by one pixel) are nearest to, if at least MAJORITY of them (a
multicolor accent as near as named white or yellow counts as those). The garment is the top on
the torso and the sleeve zones of the length read, or, when none is read, of the query's own
length (a color edit's target keeps the query's sleeves), its pixels with at least MIN_LIGHT of
light. The garment is matched to the candidate drawn
one way, the one whose predictions lie nearest (median): as drawn, GAIN darker or lighter, or
softened as above. A pixel votes for the candidate X when X's prediction is nearer than every
other color's and, if X is not the query's color, than the query's own top (the old color left
in place; pixels of an "old" zone never vote). X is read when at least GARMENT_SHARE of the
garment votes for it and, if X is not the query's color, the garment lies on average at least
TOWARD of the way from the query's top to X (both drawn that way): a patch, a band, the sleeves
or the outline left in the old color, or a tint of the garment toward X (one of 70% is
refused) do not pass; another color over less than 1 - GARMENT_SHARE of the garment may.
Multicolor is matched by its palette in any layout (the renderer's is the scene's own; an
edit's cannot know it), and read when it passes the vote with at least MULTI_BASE of the
garment nearest a base and at least MULTI_REST nearest an accent (several colors, as the
renderer draws them). Otherwise None.

A color edit that also changes the sleeve cleanly is read over the sleeves it shows, and its
sleeve reading shows the change.

`grade(image, scene)` returns {"color": value or None, "sleeve": value or None}; a value of None
never equals a target. `References(scene, size)` + `grade_with(image, refs)` grade several edits
of one query scene without drawing it again. `grader_accuracy` measures the rule on true renders
and true edits of unseen scenes; tests/test_truth_grader.py holds the edits it refuses.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from amgan_search.errors import UserError
from amgan_search.schema import SYNTHETIC_COLORS, SYNTHETIC_SLEEVES, synthetic_schema
from amgan_search.synthetic import (GARMENT_RGB, MULTICOLOR_ACCENTS, MULTICOLOR_BASE, arm_axis,
                                    render, sample_scene)
from amgan_search.synthetic.fabric import garment

# Sleeve zones. Each bound lies between what true renders and true edits of unseen scenes show
# (raw and JPEG, 64 and 128 px) and what the refused edits of tests/test_truth_grader.py show.
MIN_CONTRAST = 24.0  # RGB distance (0..255) between bare and fabric below which a pixel is mute
MIN_TELLING = 3  # telling pixels a zone (or a slice) needs to count
SLICE_PX = 2.0  # slice thickness along the arm, pixels
TINT = 0.15  # a bare (fabric) zone's mean fabric fraction within this of 0 (of 1)
SLICE_TINT = 0.5  # ... every slice's within this
STRAY = 0.1  # ... and at most this share of its pixels half way to the other end or further
OFF_LINE = 24.0  # median RGB distance of a zone's pixels off the line from bare to fabric
OFF_SOFTENED = 12.0  # ... off the softened renders' line (true renders, JPEG'd: below 8)
SOFTEN = (0.5, 0.8, 1.2)  # Gaussian blurs (pixels at 64 px) the zones are also read under
TONE = 0.25  # a patterned sleeve's mean tone (0 base, 1 second) off its layout's by at most this
SKIN_SHADES = np.linspace(0.8, 1.1, 7)  # limbs: light +-6%, darker to the edges, the body 0.9
# Color.
MAJORITY = 0.5  # share of the torso core's votes that makes a color the candidate
MIN_LIGHT = 0.5  # light (coverage x shading) of a garment pixel the color rule reads
GARMENT_SHARE = 0.85  # share of the garment's pixels that must vote for its color
TOWARD = 0.9  # mean fraction of the way from the query's top to the color read
GAIN = 0.1  # the garment (a sleeve) may be this much darker or lighter than drawn
MULTI_BASE, MULTI_REST = 0.4, 0.05  # the renderer: about two thirds base; small dots, JPEG: less
# Two solid colors give each pixel's light and what lies under the top (neither clips when shaded).
GRAY, BLACK = "gray", "black"
SOLID_COLORS = tuple(c for c in SYNTHETIC_COLORS if c != "multicolor")
# Sleeve lengths from longest to none: each covers the zones of all shorter ones.
LENGTHS = ("long", "three-quarter", "short", "sleeveless")
# Multicolor's palette: the bases, the accents, and each base's blend with each accent.
_BASES = np.asarray(MULTICOLOR_BASE, np.float32)
_ACCENTS = np.asarray(MULTICOLOR_ACCENTS, np.float32)
# Named colors that an accent matches within MIN_CONTRAST (yellow, white): those accents and
# those colors do not compete with each other.
_TWINS = {name: [j for j, a in enumerate(_ACCENTS)
                 if np.linalg.norm(a - np.asarray(GARMENT_RGB[name], np.float32)) < MIN_CONTRAST]
          for name in SOLID_COLORS}
_TWINNED = {j for js in _TWINS.values() for j in js}


def _draw(scene, size: int, **garment_values: str):
    """A noise-free render of the scene wearing these garment values: (float image, masks)."""
    values = {**garment(scene), **garment_values}
    image, masks = render(replace(scene, attribute_values=tuple(values.items()), noise=0.0), size)
    return image.astype(np.float32), masks


def _erode(mask: np.ndarray) -> np.ndarray:
    """A pixel stays when it and its four neighbours are in the mask."""
    m = np.pad(mask, 1, constant_values=False)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _second_tone(base: np.ndarray) -> np.ndarray:
    """A pattern's second tone (the renderer's rule): light colors darker, dark ones lighter."""
    return base * 0.6 if float(base.mean()) > 100 else base + (255 - base) * 0.42


@dataclass
class _Length:
    """One sleeve length's references over the grader's pixels [P, 3]."""

    covered: np.ndarray  # [P] the top shows at the pixel at this length
    light: np.ndarray  # coverage x shading per channel
    under: np.ndarray  # what the top is painted over
    sheen: np.ndarray  # silver's highlight
    source: np.ndarray  # the query's own top at this length
    cover: np.ndarray | None  # [P, 1] a patterned top's share of its second tone, None if solid

    def solid(self, rgb) -> np.ndarray:
        return np.clip(self.under + self.light * np.asarray(rgb, np.float32), 0, 255)

    def patterned(self, rgb) -> np.ndarray:
        """The top in this named color with the scene's own pattern layout."""
        base = np.asarray(rgb, np.float32)
        return self.solid(base + self.cover * (_second_tone(base) - base))


class References:
    """What the renderer draws for the query scene, per sleeve length: light, what lies under
    the top, silver's sheen, the query's own top; the bare arms; the zones and slices.

    Drawn once per query scene (sixteen renders at the image's size, twenty for a patterned
    top, and four more per color read, `softened`), kept only over the pixels some sleeve
    length's top covers; `grade_with` reuses them for every edit of that scene.
    """

    def __init__(self, scene, size: int):
        self.scene, self.size = scene, size
        self.garment = garment(scene)
        solid = {"pattern": "solid"}
        drawn = {s: [_draw(scene, size, sleeve=s, color=c, **solid) for c in (GRAY, BLACK)]
                 for s in LENGTHS}
        self.where = np.logical_or.reduce([drawn[s][0][1]["garment"] for s in LENGTHS])
        w = self.where
        self.lengths: dict[str, _Length] = {}
        gray_rgb = np.asarray(GARMENT_RGB[GRAY], np.float32)
        black_rgb = np.asarray(GARMENT_RGB[BLACK], np.float32)
        for s, ((gray, masks), (black, _)) in drawn.items():
            light = (gray[w] - black[w]) / (gray_rgb - black_rgb)
            under = black[w] - light * black_rgb
            silver = _draw(scene, size, sleeve=s, color="silver", **solid)[0][w]
            sheen = silver - (under + light * np.asarray(GARMENT_RGB["silver"], np.float32))
            source = _draw(scene, size, sleeve=s)[0][w]
            cover = None
            if self.garment["pattern"] != "solid":  # the layout, from the pattern drawn in gray
                field = (_draw(scene, size, sleeve=s, color=GRAY)[0][w] - under) \
                    / np.maximum(light, 1e-3)
                cover = np.clip(((gray_rgb - field) / (gray_rgb - _second_tone(gray_rgb)))
                                .mean(axis=1, keepdims=True), 0, 1)
            self.lengths[s] = _Length(masks["garment"][w], light, under, sheen, source, cover)
        self.bare = drawn["sleeveless"][0][0][w]  # outside the sleeveless top: skin, background
        core = np.logical_and.reduce([drawn[s][0][1]["torso"] for s in LENGTHS])
        self.core = _erode(core)[w]
        self.skin = np.asarray(scene.skin, np.float32)
        # Where a loose sleeve bared shows what lies behind the arm, skin painted there is bare
        # too (a sleeve removed by painting the arm a little wide); on the arm itself only its
        # own light is.
        self.behind = _skin_distance(self.bare, self.skin) >= MIN_CONTRAST
        cov = {s: self.lengths[s].covered for s in LENGTHS}
        self.zones = [cov[a] & ~cov[b] for a, b in pairwise(LENGTHS)]  # zones[k]: LENGTHS[k]'s
        side, position = arm_axis(scene, size)
        self.side = side[w].astype(np.int64)
        self.along = position[w] * (scene.scale * size)  # pixels from the shoulder joint

        self._softened: dict[str, list[dict[str, np.ndarray]]] = {}

    def softened(self, color: str) -> list[dict[str, np.ndarray]]:
        """The query scene in this color at each sleeve length, as a catalog stores it (JPEG at
        the scene's quality) and blurred as a generator draws it (SOFTEN, in pixels at 64 px),
        over the grader's pixels: one {length: pixels} per way, drawn when first asked for."""
        if color not in self._softened:
            drawn = {s: _draw(self.scene, self.size, color=color, sleeve=s)[0] for s in LENGTHS}
            ways = [{s: _jpeg(im.astype(np.uint8), self.scene.jpeg_quality)
                     for s, im in drawn.items()}]
            for sigma in SOFTEN:
                sigma = sigma * self.size / 64
                ways.append({s: gaussian_filter(im, (sigma, sigma, 0)) for s, im in drawn.items()})
            # kept as uint8 (a quarter of float32's memory; the renders are whole numbers and a
            # blur's rounding moves a pixel by half a unit)
            self._softened[color] = [{s: np.clip(im[self.where] + 0.5, 0, 255).astype(np.uint8)
                                      for s, im in way.items()} for way in ways]
        return self._softened[color]

    def forget_fabrics(self) -> None:
        """Drop the softened renders drawn so far (one set per color read): a caller grading
        many scenes keeps its memory to the fixed references."""
        self._softened.clear()


def _nearest_skin(p: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """The scene's skin under the renderer's limb shading nearest to each pixel."""
    d = np.stack([np.linalg.norm(p - k * skin, axis=1) for k in SKIN_SHADES])
    return SKIN_SHADES[d.argmin(axis=0)][:, None] * skin


def _skin_distance(p: np.ndarray, skin: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - _nearest_skin(p, skin), axis=1)


def _to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The point of each segment a->b nearest to p (all [P, 3])."""
    ab = b - a
    t = np.einsum("pc,pc->p", p - a, ab) / np.maximum(np.einsum("pc,pc->p", ab, ab), 1e-6)
    return a + np.clip(t, 0, 1)[:, None] * ab


def _named_points(name: str, length: _Length, p: np.ndarray, layout: bool = True) -> list:
    """Candidate predictions of a named color at each pixel: its shaded color (on a patterned
    top, with the scene's pattern layout, or with `layout` False anywhere on the segment to its
    pattern tone) and, for silver, the same with its sheen."""
    base = np.asarray(GARMENT_RGB[name], np.float32)
    if length.cover is None:
        a = length.solid(base)
    elif layout:
        a = length.patterned(base)
    else:
        a = _to_segment(p, length.solid(base), length.solid(_second_tone(base)))
    if name == "silver":
        return [a, np.clip(a + length.sheen, 0, 255)]
    return [a]


def _multi_points(length: _Length, p: np.ndarray) -> tuple[list, list]:
    """Multicolor's predictions at each pixel: (the bases, the accents and the base-accent
    blends, each nearest point), the blends listed per accent."""
    bases = [length.solid(b) for b in _BASES]
    accents = [length.solid(a) for a in _ACCENTS]
    blends = [[_to_segment(p, b, a) for b in bases] for a in accents]
    return bases, [[a, *bl] for a, bl in zip(accents, blends)]


class _Reading:
    """Every color's distance from each pixel, and its nearest prediction, over the lengths that
    cover the pixel."""

    def __init__(self, p: np.ndarray, ref: References):
        self.p = p
        n = len(p)
        names = (*SOLID_COLORS, "multicolor")
        self.dist = {name: np.full(n, np.inf, np.float32) for name in names}
        self.near = {name: np.zeros_like(p) for name in names}
        self.light = {name: np.zeros(n, np.float32) for name in names}  # at the nearest
        self.base_dist = np.full(n, np.inf, np.float32)
        self.accent_dist = np.full((len(_ACCENTS), n), np.inf, np.float32)
        self.source = np.zeros_like(p)
        self.source_dist = np.full(n, np.inf, np.float32)  # the query's own top
        for length in ref.lengths.values():
            self._cov, self._light = length.covered, length.light.mean(axis=1)
            for name in SOLID_COLORS:
                for q in _named_points(name, length, p):
                    self._nearer(name, q)
            bases, accents = _multi_points(length, p)
            for q in bases:
                self.base_dist = np.minimum(self.base_dist, self._nearer("multicolor", q))
            for j, (q, *blends) in enumerate(accents):
                self.accent_dist[j] = np.minimum(self.accent_dist[j],
                                                 self._nearer("multicolor", q))
                for q in blends:
                    self._nearer("multicolor", q)
            d = self._distance(length.source)
            better = d < self.source_dist
            self.source_dist[better] = d[better]
            self.source[better] = length.source[better]

    def _distance(self, q: np.ndarray) -> np.ndarray:
        """Each pixel's distance to q, where the current length covers it (else inf)."""
        return np.where(self._cov, np.linalg.norm(self.p - q, axis=1), np.inf)

    def _nearer(self, name: str, q: np.ndarray) -> np.ndarray:
        """Keep q as `name`'s prediction where it is the nearest yet; its distances."""
        d = self._distance(q)
        better = d < self.dist[name]
        self.dist[name][better] = d[better]
        self.near[name][better] = q[better]
        self.light[name][better] = self._light[better]
        return d

    def rival(self, name: str) -> np.ndarray:
        """The distance to the nearest color other than `name` (twins left out)."""
        if name == "multicolor":
            twins = {c for c in SOLID_COLORS if _TWINS[c]}
            return np.min([self.dist[c] for c in SOLID_COLORS if c not in twins], axis=0)
        others = [self.dist[c] for c in SOLID_COLORS if c != name]
        # multicolor competes with its bases and accents, not the blends between them: those
        # run through much of the color space (turquoise to violet passes near blue)
        kept = [j for j in range(len(_ACCENTS)) if j not in _TWINS[name]]
        others.append(np.minimum(self.base_dist, self.accent_dist[kept].min(axis=0)))
        return np.min(others, axis=0)

    def nearest(self) -> np.ndarray:
        """Index into SYNTHETIC_COLORS' order (named colors, then multicolor) of each pixel's
        nearest color; a white or yellow pixel is white or yellow, not a multicolor accent."""
        # multicolor by its bases and accents: the blends between them run through much of
        # the color space (a pixel of a darker khaki lies near turquoise-to-coral)
        untwinned = np.minimum.reduce([self.base_dist, *(
            self.accent_dist[j] for j in range(len(_ACCENTS)) if j not in _TWINNED)])
        return np.argmin(np.stack([*(self.dist[n] for n in SOLID_COLORS), untwinned]), axis=0)


def _candidate(reading: _Reading, ref: References) -> str | None:
    """The color most of the torso core is nearest to, if at least MAJORITY of it."""
    votes = reading.nearest()[ref.core]
    if len(votes) == 0:
        return None
    names = (*SOLID_COLORS, "multicolor")
    counts = np.bincount(votes, minlength=len(names)) / len(votes)
    top = int(np.argmax(counts))
    return names[top] if counts[top] >= MAJORITY else None


def _line(p: np.ndarray, bare: np.ndarray, cloth: np.ndarray):
    """Each pixel's fabric fraction t on the line from bare (0) to cloth (1), the line's squared
    length (t's weight) and the pixel's distance off the line."""
    line = cloth - bare
    weight = np.einsum("pc,pc->p", line, line)
    t = np.einsum("pc,pc->p", p - bare, line) / np.maximum(weight, 1e-6)
    return t, weight, np.linalg.norm(p - bare - t[:, None] * line, axis=1)


def _fabric_points(name: str, exact: bool):
    """A color's predictions as a function of (length, pixels): the query's own top (`exact`),
    a pattern's tones anywhere (a new sleeve's layout is not in the photo), multicolor's
    palette."""
    def points(length: _Length, p: np.ndarray) -> list:
        if exact:
            return [length.source]
        if name == "multicolor":
            bases, accents = _multi_points(length, p)
            return bases + [q for qs in accents for q in qs]
        return _named_points(name, length, p, layout=False)
    return points


def _nearest(ref: References, points, p: np.ndarray) -> np.ndarray:
    """The prediction nearest to each p, over `points` and the lengths that cover the pixel."""
    best = np.full(len(p), np.inf, np.float32)
    near = np.zeros_like(p)
    for length in ref.lengths.values():
        for q in points(length, p):
            d = np.where(length.covered, np.linalg.norm(p - q, axis=1), np.inf)
            better = d < best
            best[better], near[better] = d[better], q[better]
    return near


def _nearest_of(p: np.ndarray, images: list) -> np.ndarray:
    """Per pixel, the nearest of these images' values."""
    d = np.stack([np.linalg.norm(p - q, axis=1) for q in images])
    return np.stack(images)[d.argmin(axis=0), np.arange(len(p))]


class _Arms:
    """The sleeve zones read against one fabric: the color read on the torso (a pattern's tones
    or multicolor's palette anywhere), or the query's own top left in place (`exact`)."""

    def __init__(self, reading: _Reading, ref: References, color: str, exact: bool = False):
        self.reading, self.ref, self.color, self.exact = reading, ref, color, exact
        p = reading.p
        bare = np.where(ref.behind[:, None] & (_skin_distance(p, ref.skin) <
                                               np.linalg.norm(p - ref.bare, axis=1))[:, None],
                        _nearest_skin(p, ref.skin), ref.bare)
        points = _fabric_points(color, exact)
        fabric = _nearest(ref, points, p)
        # a sleeve a little darker or lighter than drawn is still the garment's fabric
        self.lines = [_line(p, bare, gain * fabric) for gain in (1, 1 - GAIN, 1 + GAIN)]
        self.telling = np.linalg.norm(_nearest(ref, points, ref.bare) - ref.bare,
                                      axis=1) >= MIN_CONTRAST
        self.slices = np.floor(ref.along / SLICE_PX).astype(np.int64) * 3 + ref.side

    def state(self, k: int) -> str:
        """Zone k: "bare", "fabric", "neither" or "silent" (module docstring)."""
        zone = self.ref.zones[k]
        z = zone & self.telling
        if z.sum() < MIN_TELLING:
            return "silent"
        read = [_state(*line, z, self.slices) for line in self.lines]
        read = [(off, "neither" if state == "fabric" and not self._pattern_kept(k, z) else state,
                 mean) for off, state, mean in read]
        # JPEG and a generator's blur spread a thin sleeve into the skin around it: the zone
        # is also read against the scene's renders softened the same way, bare (a shorter
        # length) and covered; the line the pixels lie closest to decides
        p = self.reading.p
        for way in self.ref.softened(self.color):
            drawn = {s: im.astype(np.float32) for s, im in way.items()}
            line = _line(p, _nearest_of(p, [drawn[s] for s in LENGTHS[k + 1:]]),
                         _nearest_of(p, [drawn[s] for s in LENGTHS[:k + 1]]))
            zj = zone & (line[1] >= MIN_CONTRAST ** 2)
            if zj.sum() >= MIN_TELLING:
                read.append(_state(*line, zj, self.slices, OFF_SOFTENED))
        # A zone is bare (fabric) when some way of drawing it reads so, unless a way that fits
        # its pixels at least as closely finds them a blend of the two (a translucent sleeve);
        # pixels beyond an end (a sleeve drawn flatter or wider) say nothing against it.
        passing = [r for r in read if r[1] != "neither"]
        if not passing:
            return "neither"
        off, state, _ = min(passing)
        blended = any(o <= off and 1 / 3 <= mean <= 2 / 3 for o, _, mean in read)
        return "neither" if blended else state

    def _pattern_kept(self, k: int, z: np.ndarray) -> bool:
        """A patterned fabric's tones in about the share its layout draws there (a sleeve of
        the pattern's second tone alone, or of a gray near it, is not the garment's fabric)."""
        length = self.ref.lengths[LENGTHS[k]]
        if self.exact or self.color == "multicolor" or length.cover is None:
            return True
        base = np.asarray(GARMENT_RGB[self.color], np.float32)
        a, b = length.solid(base)[z], length.solid(_second_tone(base))[z]
        ab = b - a
        tone = np.clip(np.einsum("pc,pc->p", self.reading.p[z] - a, ab)
                       / np.maximum(np.einsum("pc,pc->p", ab, ab), 1e-6), 0, 1)
        return abs(float(tone.mean()) - float(length.cover[z].mean())) <= TONE


def _zone_states(reading: _Reading, ref: References, fabric: str) -> list[str]:
    """Each sleeve zone's state against the garment's fabric, or "old": the query's own sleeve
    left in place in the old color (read against the query's top itself, so a color near the
    skin's, or one the target's palette shares, is not taken for bare arms or new fabric)."""
    arms, own = _Arms(reading, ref, fabric), None
    states = []
    for k in range(len(ref.zones)):
        state = arms.state(k)
        if state in ("bare", "fabric") and fabric != ref.garment["color"]:
            own = own or _Arms(reading, ref, ref.garment["color"], exact=True)
            if own.state(k) == "fabric":
                state = "old"
        states.append(state)
    return states


def _state(t: np.ndarray, weight: np.ndarray, off: np.ndarray, z: np.ndarray,
           slices: np.ndarray, off_line: float = OFF_LINE) -> tuple[float, str, float]:
    """A zone's pixels z -> (their median distance off the line, "bare" (fabric fraction 0),
    "fabric" (1) or "neither", their mean fabric fraction): within `off_line` of the line from
    bare to fabric, the weighted mean within TINT of the end, every slice within SLICE_TINT, at
    most STRAY of the pixels half way to the other end or further. Beyond `off_line` the
    distance is inf: the line does not fit."""
    median_off = float(np.median(off[z]))
    if median_off > off_line:
        return np.inf, "neither", np.nan
    _, inverse, counts = np.unique(slices[z], return_inverse=True, return_counts=True)
    w, tz = weight[z], t[z]
    per_slice = (np.bincount(inverse, weights=w * tz) / np.bincount(inverse, weights=w))[
        counts >= MIN_TELLING]  # a slice of one or two pixels: JPEG decides it
    mean = float((w * tz).sum() / w.sum())
    # stray pixels are those half way to the other end or further (a sleeve drawn a pixel
    # wider than the render's is not less of a sleeve)
    if abs(mean) <= TINT and (np.abs(per_slice) <= SLICE_TINT).all() \
            and (tz >= 0.5).mean() <= STRAY:
        return median_off, "bare", mean
    if abs(mean - 1) <= TINT and (np.abs(per_slice - 1) <= SLICE_TINT).all() \
            and (tz <= 0.5).mean() <= STRAY:
        return median_off, "fabric", mean
    return median_off, "neither", mean


def _length(states: list[str]) -> str | None:
    """The one length whose covered zones are fabric and uncovered ones bare (silent fits
    both); None when none or several fit."""
    fits = [s for i, s in enumerate(LENGTHS)
            if all(st in ("fabric", "silent") for st in states[i:])
            and all(st in ("bare", "silent") for st in states[:i])]
    return fits[0] if len(fits) == 1 else None


def _matched(reading: _Reading, ref: References, name: str, garment_px: np.ndarray):
    """Over the garment's pixels: each one's distance to the color's prediction, that
    prediction, and the query's own top drawn the same way, under the one way of drawing the
    garment fits best (the smallest median distance): the prediction as drawn, GAIN darker or
    lighter (multicolor: its palette, in any layout), or the scene in that color softened as a
    catalog stores it or a generator draws it (JPEG and blur move a garment's edges and a fine
    pattern's pixels off the exact prediction)."""
    p = reading.p[garment_px]
    ways = []  # per way: per length (covered, prediction, the query's own top)
    if name == "multicolor":
        ways.append([(np.ones(len(p), bool), reading.near[name][garment_px],
                      reading.source[garment_px])])
    else:
        for gain in (1, 1 - GAIN, 1 + GAIN):
            ways.append([(length.covered[garment_px], gain * q[garment_px],
                          length.source[garment_px])
                         for length in ref.lengths.values()
                         for q in _named_points(name, length, reading.p)])
    for way, own in zip(ref.softened(name), ref.softened(ref.garment["color"])):
        ways.append([(ref.lengths[s].covered[garment_px], drawn[garment_px].astype(np.float32),
                      own[s][garment_px].astype(np.float32)) for s, drawn in way.items()])
    best = None
    for way in ways:
        dist = np.full(len(p), np.inf, np.float32)
        target, source = np.zeros_like(p), np.zeros_like(p)
        for covered, q, own in way:
            d = np.where(covered, np.linalg.norm(p - q, axis=1), np.inf)
            better = d < dist
            dist[better], target[better], source[better] = d[better], q[better], own[better]
        if best is None or np.median(dist) < np.median(best[0]):
            best = dist, target, source
    return best


def _color(reading: _Reading, ref: References, name: str | None, garment_px: np.ndarray,
           old: np.ndarray) -> str | None:
    """`name` if the garment's pixels show it (module docstring), else None."""
    if name is None or not garment_px.any():
        return None
    rival = reading.rival(name)[garment_px]
    dist, target, source = _matched(reading, ref, name, garment_px)
    if name != ref.garment["color"]:  # nearer the target than the old color left in place
        rival = np.minimum(rival, reading.source_dist[garment_px])
    votes = (dist <= rival) & ~old[garment_px]
    if votes.mean() < GARMENT_SHARE:
        return None
    if name == "multicolor":  # several colors: a base and accents, as the renderer draws them
        base, accent = reading.base_dist[garment_px], reading.accent_dist.min(axis=0)[garment_px]
        bases = votes & (base <= accent)
        return name if bases.mean() >= MULTI_BASE and (votes & ~bases).mean() >= MULTI_REST \
            else None
    if name != ref.garment["color"]:
        line = target - source
        toward = np.einsum("pc,pc->", reading.p[garment_px] - source, line) \
            / max(np.einsum("pc,pc->", line, line), 1e-6)
        if toward < TOWARD:
            return None
    return name


def grade_with(image: np.ndarray, ref: References) -> dict[str, str | None]:
    """`grade` against references already drawn (several images of one query scene)."""
    image = _checked(image, ref.size)
    reading = _Reading(image[ref.where].astype(np.float32), ref)
    candidate = _candidate(reading, ref)
    states = _zone_states(reading, ref, candidate or ref.garment["color"])
    sleeve = _length(states)
    # the garment whose color is read: the top on the torso and the sleeves of the length read,
    # or, when none is, of the query's own (a color edit's target keeps the query's sleeves)
    covers = LENGTHS.index(sleeve if sleeve is not None else ref.garment["sleeve"])
    garment_px = ref.lengths["sleeveless"].covered.copy()
    old = np.zeros_like(garment_px)  # the old sleeve left in place: votes against the color
    for zone, state in zip(ref.zones[covers:], states[covers:]):
        garment_px |= zone
        if state == "old":
            old |= zone
    if candidate is not None:
        garment_px &= reading.light[candidate] >= MIN_LIGHT
    return {"color": _color(reading, ref, candidate, garment_px, old), "sleeve": sleeve}


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
