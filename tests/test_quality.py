"""Unit tests for faceatlas.quality (face quality measures, pose from five landmarks, checks).

Images are synthetic textures; landmarks come from a small 3D face model (the one the module
assumes) seen from known angles, so the pose estimates can be checked against the truth.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import cv2
import numpy as np
import pytest

from faceatlas.quality import (
    CHECKS,
    NOSE_DEPTH,
    Quality,
    QualityThresholds,
    evaluate,
    head_pose,
    measure,
)

# A symmetric frontal face in eye distances: eyes, nose tip, mouth corners, as (x, y, z) with
# y towards the mouth and z towards the camera. Heights follow the ArcFace template.
MODEL = np.array(
    [
        [-0.5, 0.0, 0.0],
        [0.5, 0.0, 0.0],
        [0.0, 0.5715, NOSE_DEPTH],
        [-0.41, 1.1546, 0.0],
        [0.41, 1.1546, 0.0],
    ]
)


def landmarks(
    yaw: float = 0.0,
    pitch: float = 0.0,
    roll: float = 0.0,
    eye_distance: float = 60.0,
    centre: tuple[float, float] = (250.0, 200.0),
) -> np.ndarray:
    """Orthographic image of MODEL turned by yaw (nose to image right is +), pitch (chin up
    is +), then roll (clockwise in the image is +), in pixels."""
    ya, pi, ro = (math.radians(a) for a in (yaw, pitch, roll))
    turn_yaw = np.array(
        [[math.cos(ya), 0, math.sin(ya)], [0, 1, 0], [-math.sin(ya), 0, math.cos(ya)]]
    )
    # Chin up: the nose (z > 0) moves towards the eyes (smaller y).
    turn_pitch = np.array(
        [[1, 0, 0], [0, math.cos(pi), -math.sin(pi)], [0, math.sin(pi), math.cos(pi)]]
    )
    flat = (MODEL @ turn_yaw.T @ turn_pitch.T)[:, :2]
    in_plane = np.array([[math.cos(ro), -math.sin(ro)], [math.sin(ro), math.cos(ro)]])
    return flat @ in_plane.T * eye_distance + centre


def texture(size: int = 256, seed: int = 0) -> np.ndarray:
    """A sharp, bright, colourful texture: skin-like base colour, blobs and fine noise."""
    rng = np.random.default_rng(seed)
    base = np.array([200.0, 150.0, 120.0])
    blobs = cv2.resize(rng.normal(0, 25, (16, 16, 3)), (size, size), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 20, (size, size, 1))
    return np.clip(base + blobs + fine, 0, 255).astype(np.uint8)


GOOD = dict(lm5=landmarks(), confidence=0.99)


def quality(image: np.ndarray, lm5: np.ndarray | None = None, confidence: float = 0.99) -> Quality:
    return measure(image, landmarks() if lm5 is None else lm5, confidence)


def failed(q: Quality, t: QualityThresholds | None = None) -> list[str]:
    return evaluate(q, t or QualityThresholds())[1]


# -- a good face ------------------------------------------------------------------------
def test_sharp_bright_colourful_frontal_face_passes() -> None:
    q = quality(texture())
    assert evaluate(q, QualityThresholds()) == (True, [])
    assert q.eye_distance == pytest.approx(60.0)
    assert q.confidence == pytest.approx(0.99)
    assert 150 < q.luminance < 180
    assert q.dark_share == 0.0
    assert 0.2 < q.saturation < 0.6
    assert (q.yaw, q.pitch, q.roll) == pytest.approx((0.0, 0.0, 0.0), abs=0.05)


# -- blur ---------------------------------------------------------------------------------
def test_blur_falls_as_the_face_gets_blurrier_and_blurry_fires() -> None:
    sharp = texture()
    scores = [quality(sharp).blur]
    for sigma in (1.0, 2.0, 4.0, 8.0):
        scores.append(quality(cv2.GaussianBlur(sharp, (0, 0), sigma)).blur)
    assert all(a > b for a, b in itertools.pairwise(scores))
    assert "blurry" not in failed(quality(sharp))
    assert "blurry" in failed(quality(cv2.GaussianBlur(sharp, (0, 0), 8.0)))


def test_blur_is_measured_at_a_fixed_face_scale() -> None:
    # The same face cropped at 512 or 256 px scores the same: both are resized to 128 first.
    large = cv2.GaussianBlur(texture(512), (0, 0), 1.5)
    small = cv2.resize(large, (256, 256), interpolation=cv2.INTER_AREA)
    assert quality(large).blur == pytest.approx(quality(small).blur, rel=0.05)
    # A small crop enlarged to the same size has less detail, and scores far lower.
    tiny = cv2.resize(texture(32), (256, 256), interpolation=cv2.INTER_LINEAR)
    assert quality(tiny).blur < quality(texture(256)).blur / 5


# -- light and colour ---------------------------------------------------------------------
def test_dark_image_fires_dark() -> None:
    dark = (texture().astype(np.float64) * 0.15).astype(np.uint8)
    q = quality(dark)
    assert q.luminance < 40
    assert "dark" in failed(q)


def test_crushed_shadows_fire_shadows_but_not_dark() -> None:
    image = texture()
    image[64:192, 64:140] = 5  # 59 % of the central region black, the rest bright
    q = quality(image)
    assert q.dark_share == pytest.approx(76 / 128, abs=0.01)
    assert "shadows" in failed(q)
    assert "dark" not in failed(q)


def test_grey_image_fires_greyscale_and_a_colourful_one_does_not() -> None:
    colour = texture()
    grey = np.repeat(cv2.cvtColor(colour, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert quality(grey).saturation == 0.0
    assert "greyscale" in failed(quality(grey))
    assert "greyscale" not in failed(quality(colour))


def test_chroma_noise_in_near_black_pixels_does_not_count_as_colour() -> None:
    # A greyscale photo whose deep shadows carry a little chroma noise, as after JPEG: the
    # saturation of a pixel like (3, 9, 5) is 0.67, which would otherwise read as colour.
    rng = np.random.default_rng(5)
    image = np.repeat(cv2.cvtColor(texture(), cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    pick = rng.random(image.shape[:2]) < 0.25
    image[pick] = rng.integers(0, 13, (int(pick.sum()), 3))
    q = quality(image)
    assert q.dark_share < 0.3
    assert q.saturation == 0.0
    assert failed(q) == ["greyscale"]


def test_luminance_and_colour_use_the_central_region_only() -> None:
    image = texture()
    image[:, :40] = 0  # dark background at the crop's edge
    image[:40] = (0, 0, 255)
    q, clean = quality(image), quality(texture())
    assert q.luminance == pytest.approx(clean.luminance)
    assert q.dark_share == clean.dark_share
    assert q.saturation == pytest.approx(clean.saturation)


def test_luma_is_rec601() -> None:
    for rgb, luma in [((255, 0, 0), 76.245), ((0, 255, 0), 149.685), ((0, 0, 255), 29.07)]:
        assert quality(np.full((64, 64, 3), rgb, dtype=np.uint8)).luminance == pytest.approx(
            luma, abs=1e-3
        )


# -- pose -------------------------------------------------------------------------------------
def test_roll_of_rotated_landmarks() -> None:
    for angle in (15.0, -15.0, 40.0):
        yaw, pitch, roll = head_pose(landmarks(roll=angle))
        assert roll == pytest.approx(angle, abs=1e-9)
        assert (yaw, pitch) == pytest.approx((0.0, 0.0), abs=0.05)


def test_yaw_grows_with_a_sideways_nose_and_its_sign() -> None:
    base = landmarks(roll=20.0)
    along_eyes = (base[1] - base[0]) / np.linalg.norm(base[1] - base[0])
    yaws = []
    for shift in (0.0, 3.0, 6.0, 12.0, 24.0, 48.0):
        moved = base.copy()
        moved[2] += shift * along_eyes  # towards the image-right eye
        yaws.append(head_pose(moved)[0])
    assert yaws[0] == pytest.approx(0.0, abs=0.05)
    assert all(a < b for a, b in itertools.pairwise(yaws))
    assert yaws[1] > 0
    mirrored = base.copy()
    mirrored[2] -= 12.0 * along_eyes
    assert head_pose(mirrored)[0] == pytest.approx(-yaws[3])


@pytest.mark.parametrize("angle", [-60.0, -30.0, -10.0, 10.0, 30.0, 60.0])
def test_pose_of_the_model_turned_by_a_known_angle(angle: float) -> None:
    yaw, pitch, roll = head_pose(landmarks(yaw=angle, roll=25.0))
    assert yaw == pytest.approx(angle, abs=0.5)
    assert (pitch, roll) == pytest.approx((0.0, 25.0), abs=0.5)
    yaw, pitch, roll = head_pose(landmarks(pitch=angle, roll=-25.0))
    assert pitch == pytest.approx(angle, abs=0.5)
    assert (yaw, roll) == pytest.approx((0.0, -25.0), abs=0.5)


def test_pose_is_scale_and_position_free() -> None:
    near = head_pose(landmarks(yaw=20, pitch=-10, roll=5, eye_distance=200, centre=(900, 40)))
    far = head_pose(landmarks(yaw=20, pitch=-10, roll=5, eye_distance=12, centre=(30, 30)))
    assert near == pytest.approx(far, abs=1e-6)


def test_turned_faces_fail_pose_checks_unless_frontal_only_is_off() -> None:
    image = texture()
    for kwargs, check in [({"yaw": 45}, "yaw"), ({"pitch": -40}, "pitch"), ({"roll": 60}, "roll")]:
        q = quality(image, landmarks(**kwargs))
        assert failed(q) == [check]
        assert evaluate(q, QualityThresholds(frontal_only=False)) == (True, [])


# -- degenerate input ---------------------------------------------------------------------
def test_empty_image_gives_nan_and_fails_pixel_checks() -> None:
    q = quality(np.zeros((0, 0, 3), dtype=np.uint8))
    for name in ("blur", "luminance", "dark_share", "saturation"):
        assert math.isnan(getattr(q, name))
    assert failed(q) == ["blurry", "dark", "shadows", "greyscale"]


def test_constant_images_do_not_crash() -> None:
    grey = quality(np.full((100, 80, 3), 128, dtype=np.uint8))
    assert grey.blur == 0.0 and grey.saturation == 0.0 and grey.dark_share == 0.0
    assert failed(grey) == ["blurry", "greyscale"]
    black = quality(np.zeros((100, 80, 3), dtype=np.uint8))
    assert black.luminance == 0.0 and black.dark_share == 1.0 and math.isnan(black.saturation)
    assert failed(black) == ["blurry", "dark", "shadows", "greyscale"]
    one = quality(np.full((1, 1, 3), (200, 100, 50), dtype=np.uint8))
    assert one.luminance == pytest.approx(0.299 * 200 + 0.587 * 100 + 0.114 * 50, abs=1e-3)
    assert one.blur == 0.0


def test_odd_shapes_are_measured() -> None:
    for shape in ((3, 500, 3), (500, 2, 3), (7, 9, 3)):
        q = quality(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
        assert math.isfinite(q.blur) and math.isfinite(q.luminance)


@pytest.mark.parametrize(
    ("points", "expect_roll"),
    [
        (np.full((5, 2), np.nan), False),
        (np.repeat(landmarks()[:1], 5, axis=0), False),  # coincident eyes
        (landmarks()[[0, 1, 2, 0, 1]], True),  # mouth on the eye line
        (landmarks()[[1, 0, 2, 4, 3]], True),  # mirrored: the mouth comes out above
    ],
)
def test_degenerate_landmarks_give_nan_pose(points: np.ndarray, expect_roll: bool) -> None:
    yaw, pitch, roll = head_pose(points)
    assert math.isnan(yaw) and math.isnan(pitch)
    assert math.isfinite(roll) == expect_roll
    problems = failed(quality(texture(), points))
    assert {"yaw", "pitch"} <= set(problems)
    assert evaluate(quality(texture(), points), QualityThresholds(frontal_only=False))[1] == [
        p for p in problems if p not in ("yaw", "pitch", "roll")
    ]


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_landmarks_fail_small_and_nan_confidence_fails(value: float) -> None:
    points = landmarks()
    points[1, 0] = value
    q = quality(texture(), points, confidence=math.nan)
    assert math.isnan(q.eye_distance) and math.isnan(q.confidence)
    assert failed(q) == ["small", "low_confidence", "yaw", "pitch", "roll"]
    assert failed(q, QualityThresholds(frontal_only=False)) == ["small", "low_confidence"]


# -- thresholds -----------------------------------------------------------------------------
def test_small_and_low_confidence() -> None:
    q = quality(texture(), landmarks(eye_distance=15.0), confidence=0.5)
    assert failed(q) == ["small", "low_confidence"]


def test_scores_on_other_scales_pass_through() -> None:
    # dlib's HOG score is a margin, not a probability: kept as it is.
    assert quality(texture(), confidence=2.5).confidence == 2.5
    q = quality(texture(), confidence=-0.4)
    assert q.confidence == -0.4
    assert failed(q) == ["low_confidence"]
    assert failed(q, QualityThresholds(min_confidence=-1.0)) == []


def test_a_measure_equal_to_its_limit_passes() -> None:
    q = quality(texture())
    at_limits = QualityThresholds(
        min_eye_distance=q.eye_distance,
        min_confidence=q.confidence,
        min_blur=q.blur,
        min_luminance=q.luminance,
        max_dark_share=q.dark_share,
        min_saturation=q.saturation,
        max_yaw=abs(q.yaw),
        max_pitch=abs(q.pitch),
        max_roll=abs(q.roll),
    )
    assert evaluate(q, at_limits) == (True, [])


def test_every_check_can_fire_and_they_come_in_order() -> None:
    q = Quality(
        eye_distance=5,
        confidence=0.1,
        blur=1,
        luminance=3,
        dark_share=0.9,
        saturation=0.01,
        yaw=80,
        pitch=-80,
        roll=170,
    )
    assert evaluate(q, QualityThresholds()) == (False, list(CHECKS))


@pytest.mark.parametrize(
    "bad",
    [
        {"min_eye_distance": -1},
        {"min_blur": math.nan},
        {"max_yaw": math.inf},
        {"min_confidence": math.nan},
        {"max_dark_share": 2.0},
        {"min_saturation": "0.1"},
        {"frontal_only": 1},
        {"max_roll": True},
    ],
)
def test_bad_thresholds_raise(bad: dict) -> None:
    with pytest.raises(ValueError):
        QualityThresholds(**bad)


def test_thresholds_are_frozen_with_the_documented_defaults() -> None:
    t = QualityThresholds()
    assert (t.min_eye_distance, t.min_confidence, t.min_luminance) == (20, 0.9, 40)
    assert (t.max_dark_share, t.min_saturation, t.max_yaw, t.max_pitch) == (0.3, 0.08, 30, 30)
    assert t.frontal_only is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.min_blur = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("image", "lm5", "confidence", "match"),
    [
        (np.zeros((8, 8, 3), dtype=np.float32), GOOD["lm5"], 0.9, "uint8"),
        (np.zeros((8, 8), dtype=np.uint8), GOOD["lm5"], 0.9, "H x W x 3"),
        (np.zeros((8, 8, 4), dtype=np.uint8), GOOD["lm5"], 0.9, "H x W x 3"),
        (np.zeros((8, 8, 3), dtype=np.uint8), GOOD["lm5"][:4], 0.9, "landmarks"),
        (np.zeros((8, 8, 3), dtype=np.uint8), GOOD["lm5"], None, "confidence"),
        (np.zeros((8, 8, 3), dtype=np.uint8), GOOD["lm5"], "high", "confidence"),
    ],
)
def test_measure_rejects_bad_arguments(
    image: np.ndarray, lm5: np.ndarray, confidence: float, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        measure(image, lm5, confidence)
