"""`render`: a scene painted back to front, one painter per layer, with the region masks.

The layers, in drawing order: background, long hair, trousers, neck and the body under the top,
the top on the torso (fabric, pattern, shading and folds), head and hair, arm skin and hands,
sleeves; then sensor noise. JPEG compression happens only when a catalog writes the file (at
`scene.jpeg_quality`). Every painter draws on one `Canvas`, which tracks what stays visible of
the tracked parts, so the masks come out of the same pass as the pixels.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from amgan_search.errors import UserError
from amgan_search.synthetic.canvas import (Canvas, Segment, coverage, ellipse, pixel_centers,
                                           smooth_field)
from amgan_search.synthetic.fabric import fabric, garment, sheen
from amgan_search.synthetic.scene import Scene


def render(scene: Scene, size: int = 128) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw the scene: uint8 HxWx3 image and boolean HxW masks (a pure function of scene, size).

    Masks: garment (= torso | sleeves), torso (the top on the torso), sleeves (the top on the
    arms), arms (visible arm skin, shoulder to wrist), hands, person. A pixel belongs to a mask
    when any of its area shows that part, so every pixel an attribute edit can change lies in
    garment | arms of the two renders.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise UserError(f"render: size must be an integer >= 16, got {size!r}")
    fig = _Figure(scene, int(size))
    canvas = Canvas(_background(scene, fig.size), fig.u, fig.v,
                    ("torso", "sleeves", "arms", "hands"))
    _paint_long_hair(canvas, fig)
    _paint_trousers(canvas, fig)
    torso = _paint_body(canvas, fig)
    _paint_top(canvas, fig, torso)
    _paint_head(canvas, fig)
    arms = _paint_arms(canvas, fig)
    _paint_sleeves(canvas, fig, arms)
    return _add_noise(canvas.image, scene, fig.size), _masks(canvas)


class _Figure:
    """The scene in figure units: pixel grid, body measurements, lighting, the top and its folds.

    Figure coordinates: origin at the base of the neck, y down, about image heights.
    """

    def __init__(self, scene: Scene, size: int):
        self.scene, self.size = scene, size
        self.attrs = garment(scene)
        s = scene.scale
        self.px = s * size  # pixels per figure unit
        c = pixel_centers(size)
        ox, oy = 0.5 + scene.x, 0.5 + scene.y - 0.16 * s
        self.u = ((c - ox) / s)[None, :].astype(np.float32)  # 1 x W
        self.v = ((c - oy) / s)[:, None].astype(np.float32)  # H x 1

        # Body measurements (figure units). The paper's data is real photos; these proportions
        # are our choice, loosely a fashion croquis cut at the thighs.
        self.S = S = scene.shoulder_width  # half widths: shoulders, waist W, hips H
        self.L = scene.torso_length
        b = scene.build
        self.W = S * (0.62 + 0.2 * b) * 0.9
        self.H = S * (0.72 + 0.16 * b)
        self.neck_hw = 0.028 * (0.8 + 0.25 * b)
        self.slope = 0.28  # shoulder line drop per unit out from the neck
        self.r_up, self.r_fore, self.r_hand = 0.029 * b, 0.023 * b, 0.024 * (0.5 + 0.5 * b)
        self.upper_len, self.fore_len = 0.165 * (0.9 + 0.1 * b) + 0.01, 0.15
        self.head_rv = 0.074 * scene.head_size
        self.head_ru = 0.062 * scene.head_size
        self.head_cv = -scene.neck_length - self.head_rv * 0.75
        # Shoulder joints (left, right), where the arms hang from the shoulder line.
        self.joints = [(side * (S - 0.6 * self.r_up),
                        self.slope * (S - 0.6 * self.r_up - self.neck_hw) + 0.85 * self.r_up)
                       for side in (-1, 1)]
        # Long and three-quarter sleeves hang looser than short ones.
        self.loose = 0.015 if self.attrs["sleeve"] in ("long", "three-quarter") else 0.013

        self.skin = np.asarray(scene.skin, np.float32)
        self.hair = np.asarray(scene.hair_color, np.float32)
        self.light = np.float32(0.06 * scene.light)
        self.fold_waves, self.fold_amp = _fold_waves(scene)

    def skin_color(self, across):
        """Skin lit from the side, darker toward a limb's edges (across in -1..1)."""
        return self.skin * (1.0 + self.light * across - 0.10 * across * across)[..., None]

    def shoulder_v(self, U):
        """The shoulder line's height at U: it drops with `slope` out from the neck."""
        return self.slope * np.maximum(np.abs(U) - self.neck_hw, 0)

    def cloth(self, U, V):
        """The top's color field (pattern included) and its folds at these coordinates."""
        folds = sum(np.sin(U * ku + V * kv + p) for ku, kv, p in self.fold_waves) * self.fold_amp
        return fabric(self.attrs, U, V, self.px, self.scene.seed), folds


def _fold_waves(scene: Scene):
    """Fabric folds: three plane waves (u and v frequency, phase) and their amplitude."""
    rng_fold = np.random.default_rng([scene.seed, 2])
    fold_k = rng_fold.uniform(25, 60, 3)
    fold_dir = rng_fold.uniform(-0.6, 0.6, 3) + np.array([0.0, 0.0, math.pi / 2])
    fold_phase = rng_fold.uniform(0, 2 * math.pi, 3)
    fold_uv = [(float(k * math.cos(d)), float(k * math.sin(d)), float(p))
               for k, d, p in zip(fold_k, fold_dir, fold_phase)]
    return fold_uv, np.float32(0.015 * scene.folds)


# --------------------------------------------------------------------------- layers


def _background(scene: Scene, size: int) -> np.ndarray:
    """The studio backdrop: flat, a linear gradient, or a smooth texture between two colors."""
    rng_bg = np.random.default_rng([scene.seed, 1])
    c = pixel_centers(size)
    c1 = np.asarray(scene.background_colors[0], np.float32)
    c2 = np.asarray(scene.background_colors[1], np.float32)
    if scene.background == "gradient":
        a = math.radians(scene.background_angle)
        g = (c - 0.5)[None, :] * math.cos(a) + (c - 0.5)[:, None] * math.sin(a)
        t = np.clip(g * 1.2 + 0.5, 0, 1).astype(np.float32)
    elif scene.background == "texture":
        field = 0.6 * smooth_field(rng_bg, size, 5) + 0.4 * smooth_field(rng_bg, size, 17)
        t = np.clip(field * 0.5 + 0.5, 0, 1)
    else:
        t = np.zeros((size, size), np.float32)
    return c1 + t[..., None] * (c2 - c1)


def _paint_long_hair(canvas: Canvas, fig: _Figure) -> None:
    """Long hair, behind everything else of the figure."""
    scene, head_cv, head_rv = fig.scene, fig.head_cv, fig.head_rv
    if scene.hair_length > 0.2:
        hair_end = head_cv + head_rv * (0.2 + 2.4 * scene.hair_length)
        hair_hw = fig.head_ru * (1.08 + 0.3 * scene.hair_length)
        sl, Ub, Vb = canvas.box(-hair_hw - 0.02, hair_hw + 0.02, head_cv - 0.01, hair_end + 0.03)
        back = np.maximum(np.abs(Ub) - hair_hw, np.maximum(head_cv - Vb, Vb - hair_end))
        back = np.minimum(back, ellipse(Ub, Vb, 0, hair_end, hair_hw, 0.02))
        canvas.draw("hair", coverage(back, fig.px), fig.hair * 0.85, sl)


def _paint_trousers(canvas: Canvas, fig: _Figure) -> None:
    """Trousers from the waist down, under the top's hem, with a seam between the legs."""
    L, W, H = fig.L, fig.W, fig.H
    waist_v, crotch = L - 0.05, L + 0.10
    sl, Ub, Vb = canvas.box(-H * 1.05 - 0.02, H * 1.05 + 0.02, waist_v - 0.02, 10.0)
    legs_hw = np.interp(Vb[:, 0], [waist_v, L, 1.5], [W * 1.02, H, H * 1.04])
    trousers = np.maximum(np.abs(Ub) - legs_hw.astype(np.float32)[:, None], waist_v - Vb)
    gap = np.maximum(np.abs(Ub) - 0.004 - 0.08 * (Vb - crotch), crotch - Vb)  # between the legs
    trousers = np.maximum(trousers, -gap)
    seam = 0.25 * np.exp(-(np.abs(Ub) / 0.012) ** 2) * (Vb > crotch)
    tr_shade = 1.0 + fig.light * Ub / H - 0.12 * (Ub / H) ** 2 - seam
    canvas.draw("trousers", coverage(trousers, fig.px),
                np.asarray(fig.scene.trousers, np.float32) * tr_shade[..., None], sl)


class _Torso(NamedTuple):
    """The torso's pixel box, its coordinates and signed distance, for the top drawn over it."""

    box: tuple
    U: np.ndarray
    V: np.ndarray
    sdf: np.ndarray
    across: np.ndarray  # -1 left edge ... 1 right edge
    hem_v: np.ndarray


def _paint_body(canvas: Canvas, fig: _Figure) -> _Torso:
    """Neck and the body under the top (it shows at the neckline and the armholes)."""
    S, L, W, H, neck_hw, px = fig.S, fig.L, fig.W, fig.H, fig.neck_hw, fig.px
    sl, Ub, Vb = canvas.box(-neck_hw - 0.02, neck_hw + 0.02, fig.head_cv - 0.02, 0.07)
    neck = np.maximum(np.abs(Ub) - neck_hw, np.maximum(fig.head_cv - Vb, Vb - 0.05))
    canvas.draw("neck", coverage(neck, px), fig.skin_color(Ub / neck_hw * 0.6) * 0.93, sl)
    torso_box, Ub, Vb = canvas.box(-S - 0.02, S + 0.02, -0.02, L + 0.05)
    hem_v = L + 0.012 * (Ub / H) ** 2
    side_hw = np.interp(Vb[:, 0], [0.0, 0.3 * L, 0.65 * L, L], [S, S * 0.96, W, H])
    side_hw = side_hw.astype(np.float32)[:, None]
    torso = np.maximum(np.abs(Ub) - side_hw, np.maximum(fig.shoulder_v(Ub) - Vb, Vb - hem_v))
    across_torso = np.clip(Ub / side_hw, -1, 1)
    canvas.draw("body", coverage(torso, px), fig.skin_color(across_torso) * 0.9, torso_box)
    return _Torso(torso_box, Ub, Vb, torso, across_torso, hem_v)


def _paint_top(canvas: Canvas, fig: _Figure, torso: _Torso) -> None:
    """The top on the torso: the body's outline less the neckline (and the armholes)."""
    Ub, Vb, neck_hw, r_up, px = torso.U, torso.V, fig.neck_hw, fig.r_up, fig.px
    if fig.attrs["neckline"] == "crew":
        neck_cut = ellipse(Ub, Vb, 0, -0.004, neck_hw * 1.35, 0.028)
    elif fig.attrs["neckline"] == "scoop":
        neck_cut = ellipse(Ub, Vb, 0, -0.01, neck_hw * 1.9, 0.06)
    else:  # v: a wedge pointing down
        depth, half = 0.075, neck_hw * 1.5
        norm = math.hypot(1.0, depth / half)
        neck_cut = np.maximum((Vb - depth + np.abs(Ub) * depth / half) / norm, -0.02 - Vb)
    shirt = np.maximum(torso.sdf, -neck_cut)
    if fig.attrs["sleeve"] == "sleeveless":
        # Armholes: the top ends in a strap and the shoulder is bare.
        for ju, jv in fig.joints:
            hole = ellipse(Ub, Vb, ju + math.copysign(0.3 * r_up, ju), jv + 0.3 * r_up,
                           r_up * 1.75, r_up * 2.3)
            shirt = np.maximum(shirt, -hole)

    # Modest shading keeps each color's mean apart from its neighbours'; a darker hem and an
    # inner edge line separate the top from skin and trousers at 64x64.
    fabric_field, folds = fig.cloth(Ub, Vb)
    hem = np.clip(1 - (torso.hem_v - Vb) * px / 2.0, 0, 1) * (Vb > 0.5 * fig.L)
    edge = coverage(shirt + 1.2 / px, px)
    across_torso = torso.across
    shade = (1.0 + fig.light * across_torso - 0.09 * across_torso ** 4 + folds) \
        * (1 - 0.12 * hem) * (0.8 + 0.2 * edge)
    top = fabric_field * shade[..., None]
    if fig.attrs["color"] == "silver":
        top = top + sheen(across_torso - 0.35 * fig.scene.light)[..., None]
    canvas.draw("torso", coverage(shirt, px), top, torso.box)


def _paint_head(canvas: Canvas, fig: _Figure) -> None:
    """The head and the hair on it."""
    head_ru, head_rv, head_cv = fig.head_ru, fig.head_rv, fig.head_cv
    sl, Ub, Vb = canvas.box(-head_ru * 1.2 - 0.02, head_ru * 1.2 + 0.02,
                            head_cv - head_rv * 1.2 - 0.02, head_cv + head_rv + 0.02)
    canvas.draw("head", coverage(ellipse(Ub, Vb, 0, head_cv, head_ru, head_rv), fig.px),
                fig.skin_color(np.clip(Ub / head_ru, -1, 1)), sl)
    cap = ellipse(Ub, Vb, 0, head_cv - 0.1 * head_rv, head_ru * 1.1, head_rv * 1.02)
    hairline = head_cv - head_rv * (0.25 + 0.35 * np.clip(1 - (Ub / head_ru) ** 2, 0, 1))
    canvas.draw("hair", coverage(np.maximum(cap, Vb - hairline), fig.px), fig.hair, sl)


class _Arm(NamedTuple):
    """One arm's pixel box and its upper-arm and forearm segments with their tapered radii."""

    side: int  # -1 left, 1 right
    box: tuple
    U: np.ndarray
    V: np.ndarray
    up: Segment
    fo: Segment
    r_u: np.ndarray
    r_f: np.ndarray


def _skeleton(fig: _Figure):
    """Per arm (left, right): side, shoulder joint, elbow, wrist and hand centre (figure units)."""
    scene, r_hand, upper_len, fore_len = fig.scene, fig.r_hand, fig.upper_len, fig.fore_len
    for side, (ju, jv), a_sh, a_el in ((-1, fig.joints[0], scene.left_shoulder, scene.left_elbow),
                                       (1, fig.joints[1], scene.right_shoulder, scene.right_elbow)):
        a1, a2 = math.radians(a_sh), math.radians(a_sh - a_el)
        elbow = (ju + side * upper_len * math.sin(a1), jv + upper_len * math.cos(a1))
        wrist = (elbow[0] + side * fore_len * math.sin(a2), elbow[1] + fore_len * math.cos(a2))
        hand_c = (wrist[0] + side * 0.75 * r_hand * math.sin(a2),
                  wrist[1] + 0.75 * r_hand * math.cos(a2))
        yield side, (ju, jv), elbow, wrist, hand_c


def arm_axis(scene: Scene, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Where each pixel lies along the arm nearer to it, as the sleeves are cut: (side HxW int8,
    -1 left / 1 right; position HxW float32, figure units from the shoulder joint along the upper
    arm, then the upper arm's length plus the distance along the forearm). A sleeve of length
    `cut` covers the positions below `cut`: the grader slices a sleeve across its length with it."""
    fig = _Figure(scene, int(size))
    shape = (fig.size, fig.size)
    U, V = np.broadcast_to(fig.u, shape), np.broadcast_to(fig.v, shape)
    side_map = np.zeros(shape, np.int8)
    position = np.zeros(shape, np.float32)
    nearest = np.full(shape, np.inf, np.float32)
    for side, joint, elbow, wrist, _ in _skeleton(fig):
        up, fo = Segment(U, V, joint, elbow), Segment(U, V, elbow, wrist)
        d_up, d_fo = up.distance - fig.r_up, fo.distance - fig.r_fore
        d = np.minimum(d_up, d_fo)
        closer = d < nearest
        side_map[closer] = side
        position[closer] = np.where(d_up < d_fo, up.t, fig.upper_len + fo.t)[closer]
        nearest = np.minimum(nearest, d)
    return side_map, position


def _paint_arms(canvas: Canvas, fig: _Figure) -> list[_Arm]:
    """Arm skin and hands on both sides; the arms' geometry, for the sleeves."""
    r_up, r_fore, r_hand = fig.r_up, fig.r_fore, fig.r_hand
    arms = []
    for side, (ju, jv), elbow, wrist, hand_c in _skeleton(fig):
        pad = r_up + fig.loose + r_hand + 0.02
        us, vs = (ju, elbow[0], hand_c[0]), (jv, elbow[1], hand_c[1])
        box, Ub, Vb = canvas.box(min(us) - pad, max(us) + pad, min(vs) - pad, max(vs) + pad)
        up = Segment(Ub, Vb, (ju, jv), elbow)
        fo = Segment(Ub, Vb, elbow, wrist)
        r_u = r_up + (r_fore * 1.05 - r_up) * up.h  # tapered limbs
        r_f = r_fore * (1.05 - 0.2 * fo.h)
        d_up, d_fo = up.distance - r_u, fo.distance - r_f
        across = np.clip(np.where(d_up < d_fo, up.distance / r_u, fo.distance / r_f), 0, 1)
        canvas.draw("arms", coverage(np.minimum(d_up, d_fo), fig.px),
                    fig.skin_color(across * side), box)
        hand = ellipse(Ub, Vb, hand_c[0], hand_c[1], r_hand * 0.9, r_hand * 1.15)
        canvas.draw("hands", coverage(hand, fig.px), fig.skin * np.float32(0.97), box)
        arms.append(_Arm(side, box, Ub, Vb, up, fo, r_u, r_f))
    return arms


def _paint_sleeves(canvas: Canvas, fig: _Figure, arms: list[_Arm]) -> None:
    """The sleeves over both arms: the arm's fabric tube, cut perpendicular to the arm at the
    sleeve length, and not above the shoulder line (no puff)."""
    upper_len, loose, px = fig.upper_len, fig.loose, fig.px
    cut = {"long": upper_len + fig.fore_len, "three-quarter": upper_len + 0.5 * fig.fore_len,
           "short": 0.5 * upper_len}.get(fig.attrs["sleeve"])
    if cut is None:
        return
    for side, box, Ub, Vb, up, fo, r_u, r_f in arms:
        s_up = np.maximum(up.distance - (r_u + loose), up.t - cut)
        s_up = np.maximum(s_up, fig.shoulder_v(Ub) - 0.006 - Vb)
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
        inner = coverage(tube + 1.0 / px, px)
        fabric_field, folds = fig.cloth(Ub, Vb)
        shade = (1.0 + fig.light * across * side - 0.14 * across ** 2 + folds) \
            * (1 - 0.2 * cuff) * (0.8 + 0.2 * inner)
        color_field = fabric_field * shade[..., None]
        if fig.attrs["color"] == "silver":
            color_field = color_field + sheen(across * side - 0.35 * fig.scene.light)[..., None]
        canvas.draw("sleeves", coverage(tube, px), color_field, box)


def _add_noise(image: np.ndarray, scene: Scene, size: int) -> np.ndarray:
    """Sensor noise, from the scene seed only; then the uint8 picture."""
    rng_noise = np.random.default_rng([scene.seed, 4])
    noise = rng_noise.standard_normal((size, size, 3), dtype=np.float32) * np.float32(scene.noise)
    return np.clip(image + noise + 0.5, 0, 255).astype(np.uint8)


def _masks(canvas: Canvas) -> dict[str, np.ndarray]:
    """A part's mask: the pixels where any of it stays visible; garment and person are unions."""
    masks = {name: vis > 0 for name, vis in canvas.visible.items()}
    masks["garment"] = masks["torso"] | masks["sleeves"]
    masks["person"] = canvas.person > 0
    return masks
