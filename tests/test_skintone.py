"""Unit tests for faceatlas.skintone (ITA skin tone from pixels).

Faces are synthetic: a known CIELAB colour (turned into sRGB by an inverse written here)
painted over the skin regions of a frontal five-landmark layout, on a background of another
skin-like colour, so that pixels leaking in from outside the regions would show.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from faceatlas.skintone import (
    CATEGORIES,
    REGION_NAMES,
    SkinTone,
    category,
    ita,
    ita_from_lab,
    rgb_to_lab,
    skin_regions,
)

# A frontal face in a 240 x 240 image: eye distance 60 px, mouth 69 px below the eyes.
FACE = np.array([[90.0, 100.0], [150.0, 100.0], [120.0, 134.0], [95.0, 169.0], [145.0, 169.0]])
SIZE = 240
D65 = (0.95047, 1.0, 1.08883)

# One colour well inside each category: (L*, a*, b*); its ITA is atan((L - 50) / b).
INSIDE = {
    "very_light": (80.0, 8.0, 12.0),  # 68.2
    "light": (70.0, 10.0, 18.0),  # 48.0
    "intermediate": (62.0, 12.0, 17.5),  # 34.4
    "tan": (57.0, 13.0, 20.0),  # 19.3
    "brown": (46.0, 12.0, 22.0),  # -10.3
    "dark": (30.0, 10.0, 16.0),  # -51.3
}
BACKGROUND_LAB = (50.0, 30.0, 45.0)  # skin-like hue, ITA 0: a leak would pull towards it


def lab_to_rgb(lab: tuple[float, float, float]) -> np.ndarray:
    """CIELAB (D65) -> 8-bit sRGB, the textbook inverse, independent of the module."""
    lightness, a, b = lab
    fy = (lightness + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    delta = 6 / 29

    def finv(f: float) -> float:
        return f**3 if f > delta else 3 * delta**2 * (f - 4 / 29)

    xyz = np.array([finv(fx), finv(fy), finv(fz)]) * D65
    to_rgb = np.linalg.inv(
        [
            [0.4124564, 0.3575761, 0.1804375],
            [0.2126729, 0.7151522, 0.0721750],
            [0.0193339, 0.1191920, 0.9503041],
        ]
    )
    linear = np.clip(to_rgb @ xyz, 0, 1)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(srgb * 255).astype(np.uint8)


def analytic_ita(lab: tuple[float, float, float]) -> float:
    return math.degrees(math.atan((lab[0] - 50) / lab[2]))


def paint_face(
    lab: tuple[float, float, float],
    landmarks: np.ndarray = FACE,
    *,
    noise: float = 2.0,
    seed: int = 0,
    size: int = SIZE,
) -> np.ndarray:
    """Background colour everywhere, `lab` (plus RGB noise) over slightly grown regions."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = lab_to_rgb(BACKGROUND_LAB)
    mask = np.zeros((size, size), dtype=np.uint8)
    for region in skin_regions(landmarks):
        centre = region.mean(axis=0)
        grown = centre + (region - centre) * 1.1
        cv2.fillPoly(mask, [np.round(grown).astype(np.int32)], 1)
    rng = np.random.default_rng(seed)
    skin = lab_to_rgb(lab).astype(np.float64) + rng.normal(0, noise, (size, size, 3))
    inside = mask.astype(bool)
    image[inside] = np.clip(np.round(skin[inside]), 0, 255).astype(np.uint8)
    return image


def region_mask(landmarks: np.ndarray, which: int, size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(skin_regions(landmarks)[which]).astype(np.int32)], 1)
    return mask.astype(bool)


# -- rgb_to_lab -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rgb", "expected"),
    [
        ((255, 255, 255), (100.0, 0.0, 0.0)),
        ((0, 0, 0), (0.0, 0.0, 0.0)),
        ((255, 0, 0), (53.2408, 80.0925, 67.2032)),
        ((0, 255, 0), (87.7347, -86.1827, 83.1793)),
        ((0, 0, 255), (32.2970, 79.1875, -107.8602)),
        ((128, 128, 128), (53.5850, 0.0, 0.0)),
    ],
)
def test_rgb_to_lab_reference_values(rgb: tuple[int, int, int], expected: tuple) -> None:
    lab = rgb_to_lab(np.array(rgb, dtype=np.uint8))
    assert lab.shape == (3,)
    np.testing.assert_allclose(lab, expected, atol=2e-3)


def test_rgb_to_lab_agrees_with_opencv_on_float_images() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ours = rgb_to_lab(rgb)
    theirs = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    # OpenCV's float path interpolates tables for the sRGB curve and the cube root (measured:
    # at most 0.32 apart, 0.09 on average), so the comparison is looser than the references.
    np.testing.assert_allclose(ours, theirs, atol=0.4)
    assert np.abs(ours - theirs).mean() < 0.15


def test_rgb_to_lab_keeps_leading_shape() -> None:
    assert rgb_to_lab(np.zeros((2, 3, 4, 3), dtype=np.uint8)).shape == (2, 3, 4, 3)
    assert rgb_to_lab(np.zeros((0, 3), dtype=np.uint8)).shape == (0, 3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 4, 3), dtype=np.float32), np.zeros((4, 4), dtype=np.uint8), [[1, 2, 3]]],
)
def test_rgb_to_lab_rejects_bad_arguments(bad: object) -> None:
    with pytest.raises(ValueError):
        rgb_to_lab(bad)  # type: ignore[arg-type]


def test_lab_to_rgb_helper_round_trips() -> None:
    for lab in (*INSIDE.values(), BACKGROUND_LAB):
        np.testing.assert_allclose(rgb_to_lab(lab_to_rgb(lab)), lab, atol=0.5)


# -- ita_from_lab and category ------------------------------------------------------------
def test_ita_from_lab_matches_the_formula_for_positive_b() -> None:
    for lightness, b in [(80, 12), (30, 16), (50, 5), (99, 0.5)]:
        assert ita_from_lab(lightness, b) == pytest.approx(
            math.degrees(math.atan((lightness - 50) / b))
        )


def test_ita_from_lab_near_and_below_zero_b() -> None:
    assert ita_from_lab(70, 0.0) == pytest.approx(90.0)
    assert ita_from_lab(30, 0.0) == pytest.approx(-90.0)
    assert ita_from_lab(70, 1e-9) == pytest.approx(90.0)
    # Bluish: beyond +-90, keeping the side of L* = 50, so categories stay intuitive.
    assert ita_from_lab(70, -5.0) > 90
    assert category(ita_from_lab(70, -5.0)) == "very_light"
    assert category(ita_from_lab(30, -5.0)) == "dark"
    assert ita_from_lab(50, -0.0) == 0.0
    assert math.isnan(ita_from_lab(math.nan, 10.0))
    np.testing.assert_allclose(
        ita_from_lab(np.array([80.0, 30.0]), np.array([30.0, 20.0])), [45, -45]
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (90.0, "very_light"),
        (55.0, "very_light"),
        (54.999, "light"),
        (41.0, "light"),
        (40.999, "intermediate"),
        (28.0, "intermediate"),
        (27.999, "tan"),
        (10.0, "tan"),
        (9.999, "brown"),
        (-30.0, "brown"),
        (-30.001, "dark"),
        (-90.0, "dark"),
        (math.inf, "very_light"),
        (-math.inf, "dark"),
    ],
)
def test_category_boundaries_lower_bound_inclusive(value: float, expected: str) -> None:
    assert category(value) == expected


def test_category_of_nan_raises() -> None:
    with pytest.raises(ValueError, match="NaN"):
        category(math.nan)


# -- skin_regions -------------------------------------------------------------------------
def _face_frame(points: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Points in the face's frame: (along the eye line, towards the mouth) in eye distances."""
    eye_vec = landmarks[1] - landmarks[0]
    d = np.hypot(*eye_vec)
    u = eye_vec / d
    v = np.array([-u[1], u[0]])
    rel = points - (landmarks[0] + landmarks[1]) / 2
    return np.stack([rel @ u, rel @ v], axis=-1) / d


def test_regions_sit_on_cheeks_and_forehead_of_a_frontal_face() -> None:
    regions = skin_regions(FACE)
    assert len(regions) == len(REGION_NAMES) == 3
    left, right, forehead = (_face_frame(r, FACE) for r in regions)
    mouth_drop = _face_frame(FACE[3:], FACE)[:, 1].mean()
    nose = _face_frame(FACE[2], FACE)
    for cheek in (left, right):
        assert cheek[:, 1].min() > 0.2  # below the lower eyelid
        assert cheek[:, 1].max() < mouth_drop  # above the mouth
        assert np.abs(cheek[:, 0]).min() > 0.25  # clear of the nose
        assert np.abs(cheek[:, 0]).max() < 0.9  # inside the face
    assert left[:, 0].max() < nose[0] < right[:, 0].min()
    assert forehead[:, 1].max() < -0.3  # above the eyebrows
    assert forehead[:, 1].min() > -1.0
    assert np.abs(forehead[:, 0]).max() < 0.5


def test_regions_follow_rotation_scale_and_translation() -> None:
    angle = math.radians(35.0)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    centre = np.array([120.0, 120.0])

    def move(points: np.ndarray) -> np.ndarray:
        return (points - centre) @ rotation.T * 1.7 + centre + (13.0, -7.0)

    for original, moved in zip(skin_regions(FACE), skin_regions(move(FACE)), strict=True):
        np.testing.assert_allclose(moved, move(original), atol=1e-9)


@pytest.mark.parametrize(
    "landmarks",
    [
        np.full((5, 2), np.nan),
        FACE * [1, 1] + [[0, 0], [0, 0], [np.inf, 0], [0, 0], [0, 0]],
        np.repeat(FACE[:1], 5, axis=0),  # everything on one point
        FACE[[1, 0, 2, 4, 3]],  # mirrored order: the mouth comes out above the eyes
        FACE * [1, 0],  # all on one line
        FACE * 1e7,
    ],
)
def test_degenerate_landmarks_give_no_regions(landmarks: np.ndarray) -> None:
    assert skin_regions(landmarks) == []
    tone = ita(paint_face(INSIDE["tan"]), landmarks)
    assert math.isnan(tone.ita)
    assert (tone.category, tone.pixels, tone.reason) == (None, 0, "degenerate_landmarks")


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.zeros(10), [["a", "b"]] * 5])
def test_skin_regions_rejects_wrong_shapes(bad: object) -> None:
    with pytest.raises(ValueError, match="landmarks"):
        skin_regions(bad)  # type: ignore[arg-type]


# -- ita -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CATEGORIES)
def test_each_category_is_recovered(name: str) -> None:
    lab = INSIDE[name]
    assert category(analytic_ita(lab)) == name
    tone = ita(paint_face(lab), FACE)
    assert tone.reason is None
    assert tone.category == name
    assert tone.ita == pytest.approx(analytic_ita(lab), abs=1.0)
    assert tone.pixels > 500


def test_rotated_and_scaled_face_gives_the_same_result() -> None:
    lab = INSIDE["intermediate"]
    matrix = cv2.getRotationMatrix2D((120.0, 120.0), -40.0, 0.8)
    image = cv2.warpAffine(
        paint_face(lab),
        matrix,
        (SIZE, SIZE),
        flags=cv2.INTER_LINEAR,
        borderValue=tuple(int(c) for c in lab_to_rgb(BACKGROUND_LAB)),
    )
    landmarks = np.c_[FACE, np.ones(5)] @ matrix.T
    tone = ita(image, landmarks)
    assert tone.category == "intermediate"
    assert tone.ita == pytest.approx(analytic_ita(lab), abs=1.0)


def test_shadow_over_most_of_the_cheeks_moves_the_result_little() -> None:
    lab = INSIDE["light"]
    lit = paint_face(lab)
    shaded = lit.copy()
    # A cast shadow over the lower 60 % of both cheeks (rows from 40 % of their height down),
    # so that a median over each cheek alone would be a shadow value.
    cheek_top, cheek_bottom = (skin_regions(FACE)[0][:, 1].min(), skin_regions(FACE)[0][:, 1].max())
    rows = slice(int(cheek_top + 0.4 * (cheek_bottom - cheek_top)), SIZE)
    shaded[rows] = (shaded[rows] * 0.5).astype(np.uint8)

    base, result = ita(lit, FACE), ita(shaded, FACE)
    assert result.category == base.category == "light"
    assert result.ita == pytest.approx(base.ita, abs=1.0)
    assert result.pixels < 0.8 * base.pixels  # the shadow was dropped, not averaged in

    # The test has teeth: the median of each region, unfiltered, moves a lot.
    medians = np.array(
        [np.median(rgb_to_lab(shaded[region_mask(FACE, i)]), axis=0) for i in range(3)]
    )
    unfiltered = ita_from_lab(np.median(medians[:, 0]), np.median(medians[:, 2]))
    assert abs(unfiltered - base.ita) > 10


def test_one_cheek_in_deep_shade_is_left_out() -> None:
    lab = INSIDE["tan"]
    image = paint_face(lab)
    image[region_mask(FACE, 1)] = (image[region_mask(FACE, 1)] * 0.35).astype(np.uint8)
    tone = ita(image, FACE)
    assert tone.category == "tan"
    assert tone.ita == pytest.approx(analytic_ita(lab), abs=1.0)


def test_a_non_skin_forehead_is_outvoted_by_the_cheeks() -> None:
    image = paint_face(INSIDE["very_light"])
    # A blond fringe: as light and as yellow as skin can be, so no pixel filter removes it.
    image[region_mask(FACE, 2)] = lab_to_rgb((72.0, 4.0, 38.0))
    tone = ita(image, FACE)
    assert tone.category == "very_light"
    assert tone.ita == pytest.approx(analytic_ita(INSIDE["very_light"]), abs=1.0)


@pytest.mark.parametrize(
    "intruder",
    [
        (97.0, 3.0, 6.0),  # specular highlight: skin-coloured but nearly white
        (58.0, -20.0, -10.0),  # teal scarf or glasses frame: off the skin hues
        (60.0, 1.0, 2.0),  # grey hair: achromatic
    ],
)
def test_highlights_and_non_skin_colours_are_ignored(intruder: tuple) -> None:
    lab = INSIDE["tan"]
    image = paint_face(lab)
    rng = np.random.default_rng(3)
    for which in range(3):
        ys, xs = np.nonzero(region_mask(FACE, which))
        # Most of every region: a median alone would land on the intruder.
        pick = rng.random(len(ys)) < 0.65
        image[ys[pick], xs[pick]] = lab_to_rgb(intruder)
    tone = ita(image, FACE)
    assert tone.category == "tan"
    assert tone.ita == pytest.approx(analytic_ita(lab), abs=1.0)


def test_greyscale_photo_has_no_skin_pixels() -> None:
    grey = cv2.cvtColor(paint_face(INSIDE["light"]), cv2.COLOR_RGB2GRAY)
    tone = ita(np.repeat(grey[..., None], 3, axis=2), FACE)
    assert math.isnan(tone.ita)
    assert (tone.category, tone.pixels, tone.reason) == (None, 0, "too_few_skin_pixels")


@pytest.mark.parametrize(
    ("image", "landmarks"),
    [
        (np.zeros((0, 0, 3), dtype=np.uint8), FACE),  # empty image
        (np.zeros((SIZE, SIZE, 3), dtype=np.uint8), FACE),  # black
        (np.full((SIZE, SIZE, 3), 255, dtype=np.uint8), FACE),  # blown out
        (paint_face(INSIDE["tan"]), FACE + 5000),  # face outside the image
        (paint_face(INSIDE["tan"]), (FACE - 120) / 12 + 120),  # eyes 5 px apart
    ],
)
def test_too_few_skin_pixels(image: np.ndarray, landmarks: np.ndarray) -> None:
    tone = ita(image, landmarks)
    assert math.isnan(tone.ita)
    assert tone.category is None
    assert tone.reason == "too_few_skin_pixels"
    assert tone.pixels < 20 * 3


def test_face_partly_outside_the_image_still_measures() -> None:
    lab = INSIDE["brown"]
    # The forehead is cut off by the top edge; the cheeks remain.
    tone = ita(paint_face(lab, FACE - [0, 80])[: SIZE - 40], FACE - [0, 80])
    assert tone.category == "brown"
    assert tone.ita == pytest.approx(analytic_ita(lab), abs=1.0)


def test_min_pixels_decides_whether_a_small_face_counts() -> None:
    small = (FACE - 120) / 4 + 120  # eyes 15 px apart
    image = paint_face(INSIDE["tan"], small, noise=0.0)
    assert ita(image, small).category == "tan"
    assert ita(image, small, min_pixels=5000).reason == "too_few_skin_pixels"


def test_ita_rejects_bad_arguments() -> None:
    image = paint_face(INSIDE["tan"])
    with pytest.raises(ValueError, match="uint8"):
        ita(image.astype(np.float32), FACE)
    with pytest.raises(ValueError, match="H x W x 3"):
        ita(image[..., 0], FACE)
    with pytest.raises(ValueError, match="landmarks"):
        ita(image, FACE[:4])
    with pytest.raises(ValueError, match="min_pixels"):
        ita(image, FACE, min_pixels=0)


def test_skintone_is_a_plain_record() -> None:
    tone = ita(paint_face(INSIDE["dark"]), FACE)
    assert isinstance(tone, SkinTone)
    assert isinstance(tone.ita, float) and isinstance(tone.pixels, int)
