"""The non-network grader reads color over the whole garment and sleeve from the garment's own
fabric against skin along the whole arm, from the renderer's own drawing of the query scene: true
renders and true edits read right, and hand-made edits that only look half done are refused
(a patch, a band, a tint, sleeves left in the old color; a stripe, a rim, rows or a ring of
fabric left on a bared arm; paint, a smear or another color on a covered one)."""

import os

import numpy as np
import pytest

from amgan_search.errors import UserError
from amgan_search.metrics.truth import (
    References,
    _erode,
    _jpeg,
    grade,
    grade_with,
    grader_accuracy,
    main,
)
from amgan_search.schema import SYNTHETIC_COLORS, SYNTHETIC_SLEEVES, synthetic_schema
from amgan_search.synthetic import (
    GARMENT_RGB,
    MULTICOLOR_ACCENTS,
    MULTICOLOR_BASE,
    arm_axis,
    render,
    sample_scene,
)

SEED = 50_123  # far from the catalogs' scenes
HARD = synthetic_schema(("color", "sleeve", "pattern", "neckline"))
# Scenes per adversarial kind, half solid, half patterned. The sweep of 20 + 20 per kind:
# TRUTH_TEST_SCENES=40 .venv/bin/python -m pytest tests/test_truth_grader.py -k refused
N_SCENES = int(os.environ.get("TRUTH_TEST_SCENES", 8))


def _scene(**values):
    return sample_scene(SEED).with_attributes(**values)


# ------------------------------------------------------------------ true renders and true edits


@pytest.mark.parametrize("size", [64, 128])
def test_the_scene_rerendered_with_every_color_reads_that_color(size):
    query = _scene(color="blue", sleeve="short")
    refs = References(query, size)
    for color in SYNTHETIC_COLORS:
        image = render(query.with_attributes(color=color), size)[0]
        assert grade_with(image, refs) == {"color": color, "sleeve": "short"}, color


@pytest.mark.parametrize("size", [64, 128])
def test_the_scene_rerendered_with_every_sleeve_reads_that_sleeve(size):
    for query_sleeve in ("long", "sleeveless"):
        query = _scene(color="red", sleeve=query_sleeve)
        refs = References(query, size)
        for sleeve in SYNTHETIC_SLEEVES:
            image = render(query.with_attributes(sleeve=sleeve), size)[0]
            assert grade_with(image, refs) == {"color": "red", "sleeve": sleeve}, sleeve


def test_the_grader_reads_true_renders_and_true_edits_of_unseen_scenes():
    # On 500 scenes, python -m amgan_search.metrics.truth --n 500 --seed 50000 [--size 128]
    # [--jpeg], every cell measured 0.998-1.000
    # (docs/results/truth-grader.md); here 60 other scenes, JPEG
    # as a catalog stores them, with the bar of 0.98 (color) and 0.95 (sleeve).
    result = grader_accuracy(n=60, seed=51_000, size=64, jpeg=True)
    for row in ("true", "color edit", "sleeve edit"):
        assert result[row]["color"] >= 0.98, (row, result)
        assert result[row]["sleeve"] >= 0.95, (row, result)


def test_the_grader_reads_the_harder_setting_patterned_tops_and_every_neckline():
    # python -m amgan_search.metrics.truth --n 500 --seed 50000 --attributes
    # color,sleeve,pattern,neckline [--size 128] [--jpeg] measured 0.988-1.000 in every cell
    # (0.988: color edits, 64 px, JPEG; docs/results/truth-grader.md); here 30 other scenes.
    result = grader_accuracy(n=30, seed=61_000, size=64, jpeg=True,
                             attributes=("color", "sleeve", "pattern", "neckline"))
    for row in ("true", "color edit", "sleeve edit"):
        assert result[row]["color"] >= 0.98, (row, result)
        assert result[row]["sleeve"] >= 0.95, (row, result)


def test_a_garment_painted_another_color_whole_reads_that_color():
    query = _scene(color="blue", sleeve="long")
    image, masks = render(query, 64)
    painted = image.copy()
    painted[masks["garment"]] = GARMENT_RGB["orange"]  # flat paint, torso and sleeves
    assert grade(painted, query)["color"] == "orange"
    painted[masks["garment"]] = MULTICOLOR_BASE[0]  # one turquoise is not several colors
    assert grade(painted, query)["color"] is None
    stripes = masks["garment"] & (np.arange(64)[:, None] % 3 == 0)  # a third of the rows
    painted[stripes] = MULTICOLOR_ACCENTS[0]
    assert grade(painted, query)["color"] == "multicolor"


def test_sleeves_painted_over_with_skin_read_bare_arms():
    query = _scene(color="green", sleeve="long")
    image, masks = render(query, 64)
    painted = image.copy()
    painted[masks["sleeves"]] = query.skin
    assert grade(painted, query)["sleeve"] in ("short", "sleeveless")
    # with the armholes bare too (the true sleeveless picture there), it reads sleeveless
    bare, bare_masks = render(query.with_attributes(sleeve="sleeveless"), 64)
    cut = masks["garment"] & ~bare_masks["garment"]
    painted[cut] = bare[cut]
    assert grade(painted, query)["sleeve"] == "sleeveless"


def test_a_softened_true_edit_still_reads_right():
    # A generator's edit is blurred and a little darker or lighter; that is not a wrong sleeve.
    from scipy.ndimage import gaussian_filter

    query = _scene(color="navy", sleeve="short")
    refs = References(query, 64)
    for sleeve in ("long", "sleeveless"):
        true, masks = render(query.with_attributes(sleeve=sleeve), 64)
        blurred = gaussian_filter(true.astype(float), (0.8, 0.8, 0))
        assert grade_with(blurred.round().astype(np.uint8), refs)["sleeve"] == sleeve
        darker = np.where(masks["garment"][..., None], true * 0.9, true)
        assert grade_with(darker.round().astype(np.uint8), refs)["sleeve"] == sleeve


def test_grade_refuses_what_is_not_a_square_uint8_picture():
    query = _scene()
    image = render(query, 64)[0]
    with pytest.raises(UserError):
        grade(image[:, :60], query)
    with pytest.raises(UserError):
        grade(image.astype(np.float32), query)
    with pytest.raises(UserError):
        grade(image, query, size=128)


def test_references_drawn_once_grade_every_edit_of_the_query_alike():
    query = _scene(color="khaki", sleeve="three-quarter")
    refs = References(query, 64)
    for values in ({"color": "olive"}, {"sleeve": "sleeveless"}, {}):
        image = render(query.with_attributes(**values), 64)[0]
        assert grade_with(image, refs) == grade(image, query)
        refs.forget_fabrics()  # what a caller grading many scenes does: the same readings
        assert grade_with(image, refs) == grade(image, query)
    with pytest.raises(UserError):
        grade_with(render(query, 128)[0], refs)


def test_the_entry_point_prints_a_table(capsys):
    assert main(["--n", "2", "--seed", "50000"]) == 0
    out = capsys.readouterr().out
    assert "| true |" in out and "| sleeve edit |" in out


# ------------------------------------------------------------------ edits that must be refused
# Each kind makes, from the renderer's own image and masks of a query scene, an edit that looks
# half done: (image, the query it edits, attribute, the values it must not be read as).


def _queries(sleeve: str, n: int = N_SCENES) -> list:
    """n unseen scenes with this sleeve, the first half solid tops, the rest patterned (a
    multicolor top made red: the kinds recolor or keep a named color)."""
    out = []
    for i in range(n):
        scene = sample_scene(54_000 + i, HARD)
        color = scene.attributes["color"]
        out.append(scene.with_attributes(
            sleeve=sleeve, color="red" if color == "multicolor" else color,
            pattern="solid" if i < n // 2 else ("striped", "dotted", "checked")[i % 3]))
    return out


def _other_color(query, i: int) -> str:
    colors = [c for c in SYNTHETIC_COLORS if c not in (query.attributes["color"], "multicolor")]
    return colors[(7 * i) % len(colors)]


def _bare(query, size):
    return render(query.with_attributes(sleeve="sleeveless"), size)[0]


def _rows(mask, keep):
    return mask & keep(np.arange(mask.shape[0])[:, None])


def _eroded(mask, times):
    for _ in range(times):
        mask = _erode(mask)
    return mask


SHORTER = ("three-quarter", "short", "sleeveless")  # what a long sleeve edited shorter reads
LONGER = ("three-quarter", "long")  # what a short sleeve edited longer reads


def skin_stripe_with_a_fabric_rim(query, i, size):
    """The issue's: a skin stripe painted along each arm, a 1 px (at 64) rim of fabric left."""
    image, masks = render(query, size)
    stripe = _eroded(masks["sleeves"], size // 64)
    image[stripe] = _bare(query, size)[stripe]
    return image, query, "sleeve", SHORTER


def two_of_three_sleeve_rows_bare(query, i, size):
    """The issue's: two of every three rows of the sleeves bare, the third still fabric."""
    image, masks = render(query, size)
    rows = _rows(masks["sleeves"], lambda y: y % 3 != 0)
    image[rows] = _bare(query, size)[rows]
    return image, query, "sleeve", SHORTER


def skin_tint_over_the_sleeves(query, i, size):
    """The issue's: a translucent tint, 70% skin and 30% fabric, over the sleeves."""
    image, masks = render(query, size)
    s = masks["sleeves"]
    image[s] = (0.7 * _bare(query, size)[s] + 0.3 * image[s]).round().astype(np.uint8)
    return image, query, "sleeve", SHORTER


def flat_gray_paint_over_the_arm(query, i, size):
    """The issue's: short -> long by flat gray paint over the arm (a top that is not gray)."""
    grayish = query.attributes["color"] in ("gray", "silver", "white", "black")
    query = query.with_attributes(sleeve="short", color="red" if grayish else query.attributes[
        "color"])
    image, masks = render(query, size)
    arm = render(query.with_attributes(sleeve="long"), size)[1]["sleeves"] & ~masks["garment"]
    image[arm] = GARMENT_RGB["gray"]
    return image, query, "sleeve", LONGER


def rainbow_smear_over_the_arm(query, i, size):
    """The issue's: short -> long by a 50% rainbow smear over the arm."""
    query = query.with_attributes(sleeve="short")
    image, masks = render(query, size)
    arm = render(query.with_attributes(sleeve="long"), size)[1]["sleeves"] & ~masks["garment"]
    rainbow = np.random.default_rng(i).integers(0, 256, (size, 1, 3)).repeat(size, axis=1)
    image[arm] = (0.5 * image[arm] + 0.5 * rainbow[arm]).round().astype(np.uint8)
    return image, query, "sleeve", LONGER


def _recolored(query, i, size, region):
    """The query with the target color's true render pasted over region(masks)."""
    color = _other_color(query, i)
    image, masks = render(query, size)
    target = render(query.with_attributes(color=color), size)[0]
    where = region(masks)
    image[where] = target[where]
    return image, query, "color", (color,)


def torso_core_recolored_sleeves_left(query, i, size):
    """The issue's: only the core of the torso recolored, the long sleeves in the old color."""
    return _recolored(query, i, size, lambda m: _erode(m["torso"]))


def band_over_the_middle_of_the_core(query, i, size):
    """The issue's: a band over the middle ~62% of the torso core's rows."""
    def band(m):
        core = _erode(m["torso"])
        rows = np.nonzero(core.any(axis=1))[0]
        low, high = rows[0] + 0.19 * len(rows), rows[0] + 0.81 * len(rows)
        return _rows(core, lambda y: (y >= low) & (y <= high))
    return _recolored(query, i, size, band)


def whole_torso_recolored_sleeves_left(query, i, size):
    """All of the torso recolored, the long sleeves in the old color."""
    return _recolored(query, i, size, lambda m: m["torso"])


def garment_recolored_but_its_outline(query, i, size):
    """The garment recolored but its outline: the old color on its two outer full pixels."""
    return _recolored(query, i, size, lambda m: _eroded(m["garment"], 3 * size // 64))


def left_half_recolored(query, i, size):
    """The left half of the garment recolored."""
    def half(m):
        cols = np.nonzero(m["garment"].any(axis=0))[0]
        return m["garment"] & (np.arange(size)[None, :] < (cols[0] + cols[-1]) / 2)
    return _recolored(query, i, size, half)


def dither_of_target_and_source(query, i, size):
    """Every other pixel of the garment recolored (a checkerboard)."""
    yy, xx = np.mgrid[:size, :size]
    return _recolored(query, i, size, lambda m: m["garment"] & ((yy + xx) % 2 == 0))


def tint_toward_the_target(query, i, size):
    """The whole garment tinted 70% toward the target color."""
    color = _other_color(query, i)
    image, masks = render(query, size)
    target = render(query.with_attributes(color=color), size)[0]
    g = masks["garment"]
    image[g] = (0.7 * target[g] + 0.3 * image[g]).round().astype(np.uint8)
    return image, query, "color", (color,)


def multicolor_torso_sleeves_left(query, i, size):
    """A multicolor torso (the true render's), the long sleeves in the old color."""
    image, masks = render(query, size)
    target = render(query.with_attributes(color="multicolor"), size)[0]
    image[masks["torso"]] = target[masks["torso"]]
    return image, query, "color", ("multicolor",)


def two_named_colors_in_stripes(query, i, size):
    """Stripes of two named colors are not the renderer's multicolor (always turquoise-based)."""
    image, masks = render(query, size)
    image[masks["garment"]] = GARMENT_RGB["red"]
    image[_rows(masks["garment"], lambda y: y % 6 < 2)] = GARMENT_RGB["blue"]
    return image, query, "color", ("multicolor",)


def a_neighbouring_color(query, i, size):
    """The nearest named color painted for the target: olive for brown, black for navy..."""
    twins = {"brown": "olive", "olive": "brown", "navy": "black", "black": "navy",
             "beige": "silver", "silver": "beige", "khaki": "gray", "gray": "khaki"}
    target = [c for c in twins if c != query.attributes["color"]][i % (len(twins) - 1)]
    return render(query.with_attributes(color=twins[target]), size)[0], query, "color", (target,)


def random_pixels_over_the_garment(query, i, size):
    """Noise for a garment: no color at all."""
    image, masks = render(query, size)
    g = masks["garment"]
    image[g] = np.random.default_rng(i).integers(0, 256, (int(g.sum()), 3))
    return image, query, "color", tuple(SYNTHETIC_COLORS)


def half_of_the_band_bared(query, i, size):
    """long -> three-quarter with only the half of the forearm band next to the cut bared."""
    image, masks = render(query, size)
    target, target_masks = render(query.with_attributes(sleeve="three-quarter"), size)
    band = masks["garment"] & ~target_masks["garment"]
    position = arm_axis(query, size)[1]
    near = band & (position < np.median(position[band]))
    image[near] = target[near]
    return image, query, "sleeve", ("three-quarter",)


def _shortened_but(query, size, left):
    """long -> short with the fabric left where left(band, position along the arm in pixels)."""
    image, masks = render(query, size)
    target, target_masks = render(query.with_attributes(sleeve="short"), size)
    band = masks["garment"] & ~target_masks["garment"]
    kept = left(band, arm_axis(query, size)[1] * query.scale * size)
    target[kept] = image[kept]
    return target, query, "sleeve", ("short",)


def a_fabric_ring_left_across_the_band(query, i, size):
    """long -> short with a ring of fabric, 3 px (at 64) across the arm, left in the band."""
    return _shortened_but(query, size, lambda band, position: band & (
        np.abs(position - np.median(position[band])) < 1.5 * size / 64))


def the_cuff_left_at_the_wrist(query, i, size):
    """long -> short with the last 3 px (at 64) of the sleeve left at the wrist."""
    return _shortened_but(query, size, lambda band, position: band & (
        position > position[band].max() - 3 * size / 64))


def arm_painted_the_background(query, i, size):
    """long -> short with the bared arm painted the backdrop's color (no arm at all), on a
    backdrop unlike the skin."""
    query = query.with_attributes(sleeve="long")
    target, target_masks = render(query.with_attributes(sleeve="short"), size)
    band = render(query, size)[1]["garment"] & ~target_masks["garment"]
    backdrop = np.asarray((40, 160, 60) if np.mean(query.skin) > 120 else (230, 230, 240))
    target[band] = backdrop
    return target, query, "sleeve", ("short",)


def sleeves_of_another_color(query, i, size):
    """short -> long with sleeves of another color (the true render's, in that color)."""
    query = query.with_attributes(sleeve="short")
    image, masks = render(query, size)
    other, other_masks = render(query.with_attributes(sleeve="long",
                                                      color=_other_color(query, i)), size)
    arm = other_masks["sleeves"] & ~masks["garment"]
    image[arm] = other[arm]
    return image, query, "sleeve", LONGER


def _lengthened(query, size):
    """short -> long: (the short query, its image, the true long one, the arm the edit covers,
    the position along the arm in pixels)."""
    query = query.with_attributes(sleeve="short")
    image, masks = render(query, size)
    target, target_masks = render(query.with_attributes(sleeve="long"), size)
    position = arm_axis(query, size)[1] * query.scale * size
    return query, image, target, target_masks["garment"] & ~masks["garment"], position


def a_half_transparent_sleeve(query, i, size):
    """short -> long with the new sleeve 60% fabric, 40% skin."""
    query, image, target, arm, _ = _lengthened(query, size)
    image[arm] = (0.6 * target[arm] + 0.4 * image[arm]).round().astype(np.uint8)
    return image, query, "sleeve", LONGER


def fabric_on_two_of_three_rows(query, i, size):
    """short -> long with the new sleeve on two rows of every three, skin on the third."""
    query, image, target, arm, _ = _lengthened(query, size)
    rows = _rows(arm, lambda y: y % 3 != 0)
    image[rows] = target[rows]
    return image, query, "sleeve", LONGER


def a_skin_gap_across_the_new_sleeve(query, i, size):
    """short -> long with a band of skin 3 px (at 64) across the new sleeve at the elbow."""
    query, image, target, arm, position = _lengthened(query, size)
    gap = arm & (np.abs(position - np.median(position[arm])) < 1.5 * size / 64)
    target[gap] = image[gap]
    return target, query, "sleeve", ("long",)


def lengthened_to_three_quarter_only(query, i, size):
    """short -> long that stops at three-quarter: the true three-quarter render."""
    query = query.with_attributes(sleeve="short")
    return render(query.with_attributes(sleeve="three-quarter"), size)[0], query, "sleeve", (
        "long",)


ISSUE_KINDS = [skin_stripe_with_a_fabric_rim, two_of_three_sleeve_rows_bare,
               skin_tint_over_the_sleeves, flat_gray_paint_over_the_arm,
               rainbow_smear_over_the_arm, torso_core_recolored_sleeves_left,
               band_over_the_middle_of_the_core]
OWN_KINDS = [whole_torso_recolored_sleeves_left, garment_recolored_but_its_outline,
             left_half_recolored, dither_of_target_and_source, tint_toward_the_target,
             multicolor_torso_sleeves_left, two_named_colors_in_stripes, a_neighbouring_color,
             random_pixels_over_the_garment, half_of_the_band_bared,
             a_fabric_ring_left_across_the_band, the_cuff_left_at_the_wrist,
             arm_painted_the_background, sleeves_of_another_color, a_half_transparent_sleeve,
             fabric_on_two_of_three_rows, a_skin_gap_across_the_new_sleeve,
             lengthened_to_three_quarter_only]


def _fooled(kind, size, n=N_SCENES, jpeg=False) -> list:
    """The scenes whose edit of this kind the grader reads as a refused value."""
    fooled, refs = [], {}
    for i, query in enumerate(_queries("long", n)):
        image, query, attribute, refused = kind(query, i, size)
        if jpeg:
            image = _jpeg(image, query.jpeg_quality)
        key = query.to_json()
        refs.setdefault(key, References(query, size))
        read = grade_with(image, refs[key])[attribute]
        if read in refused:
            fooled.append((query.seed, query.attributes, read))
    return fooled


@pytest.mark.parametrize("kind", ISSUE_KINDS + OWN_KINDS, ids=lambda k: k.__name__)
def test_an_edit_half_done_is_refused(kind):
    assert _fooled(kind, 64) == []


@pytest.mark.parametrize("kind", ISSUE_KINDS, ids=lambda k: k.__name__)
def test_the_issue_s_edits_are_refused_at_128_px(kind):
    assert _fooled(kind, 128, n=4) == []


def test_half_done_edits_stored_as_jpeg_are_still_mostly_refused():
    # JPEG at a catalog's quality (70-95) blurs a 1 px rim or rows of a 64 px sleeve toward a
    # whole sleeve or a bare arm: a few pass. Here 1 of 100 edits (fabric on two rows of three);
    # with TRUTH_TEST_SCENES=40 (10 + 10 scenes per kind) 2 of 500 (the rim).
    kinds, n = ISSUE_KINDS + OWN_KINDS, N_SCENES // 2
    fooled = sum(len(_fooled(kind, 64, n=n, jpeg=True)) for kind in kinds)
    assert fooled <= 0.02 * n * len(kinds), fooled
