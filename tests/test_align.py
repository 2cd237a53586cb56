"""Tests for faceatlas.align: FFHQ alignment against Pillow/scipy references of the published
procedure, template alignment, invariance to the face's rotation and scale, and bad input.

Test pictures are rendered analytically from a smooth colour pattern defined in face
coordinates (eye distance 1, eye midpoint at the origin, y down), so a rotated or scaled copy
of a face is a fresh rendering, not a resampled image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from faceatlas.align import (
    AlignmentError,
    Template,
    align_ffhq,
    align_template,
    ffhq_quad,
    ffhq_template,
    load_template,
    quad_from_landmarks5,
    similarity_transform,
)

# A slightly irregular face, in face coordinates (see the module docstring).
FACE = np.array([[-0.5, 0.0], [0.5, 0.02], [0.03, 0.6], [-0.4, 1.15], [0.42, 1.13]])
EYE_PX = 80.0  # eye distance of the unscaled test face, in pixels


def _pattern(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth colour waves plus dark eyes and mouth, as uint8 RGB."""
    waves = [
        128 + 70 * np.sin(2 * np.pi * (0.35 * u + 0.20 * v) + 0.3),
        120 + 60 * np.sin(2 * np.pi * (-0.25 * u + 0.40 * v) + 1.1),
        130 + 65 * np.cos(2 * np.pi * (0.30 * u - 0.30 * v)),
    ]
    features = 90 * (
        np.exp(-((u + 0.5) ** 2 + v**2) / (2 * 0.12**2))
        + np.exp(-((u - 0.5) ** 2 + v**2) / (2 * 0.12**2))
        + np.exp(-((u / 0.3) ** 2 + ((v - 1.14) / 0.08) ** 2) / 2)
    )
    rgb = np.stack([w - features for w in waves], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _rotation(angle_deg: float) -> np.ndarray:
    a = math.radians(angle_deg)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def _render(
    shape: tuple[int, int], centre: tuple[float, float], scale: float = 1.0, angle: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The pattern with the face's eye midpoint at `centre`, eye distance EYE_PX * scale, turned
    by `angle` degrees; returns the picture and its five landmarks."""
    k, rot = EYE_PX * scale, _rotation(angle)
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    d = np.stack([xs - centre[0], ys - centre[1]], axis=-1) / k
    face_coords = d @ rot  # rot is orthogonal: d @ rot == (rot.T @ d) per pixel
    return _pattern(face_coords[..., 0], face_coords[..., 1]), np.asarray(centre) + k * FACE @ rot.T


def _blobs(shape: tuple[int, int], points: np.ndarray, sigma: float) -> np.ndarray:
    """Black picture with a bright isotropic Gaussian spot at each point."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    spots = sum(np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return np.repeat(np.clip(np.rint(250 * spots), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def _centroid(img: np.ndarray, near: np.ndarray, radius: float) -> np.ndarray:
    grey = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    weight = grey * (np.hypot(xs - near[0], ys - near[1]) <= radius)
    return np.array([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _similar(points: np.ndarray, angle: float, scale: float, shift: tuple[float, float]):
    return points @ (scale * _rotation(angle)).T + np.asarray(shift)


# -- references written from the published description -----------------------------------
def _published_quad(eye_left, eye_right, mouth_left, mouth_right) -> np.ndarray:
    """The quad exactly as the project's notes (shared/ENVIRONMENT.md) state it."""
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = (mouth_left + mouth_right) * 0.5 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x)
    x = x * max(2.0 * np.hypot(*eye_to_eye), 1.8 * np.hypot(*eye_to_mouth))
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + 0.1 * eye_to_mouth
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _published_align(img, lm5, output_size, transform_size, enable_padding=True) -> np.ndarray:
    """The published steps with Pillow, numpy and scipy, on the whole photo."""
    quad = _published_quad(lm5[0], lm5[1], lm5[3], lm5[4])
    qsize = np.hypot(*(quad[3] - quad[0]))
    pic = Image.fromarray(img)

    def box(q):
        return np.floor(q.min(0)).astype(int), np.ceil(q.max(0)).astype(int)

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        new = (int(np.rint(pic.width / shrink)), int(np.rint(pic.height / shrink)))
        pic = pic.resize(new, Image.Resampling.LANCZOS)
        quad, qsize = quad / shrink, qsize / shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    lo, hi = box(quad)
    lo, hi = np.maximum(lo - border, 0), np.minimum(hi + border, pic.size)
    pic = pic.crop((lo[0], lo[1], hi[0], hi[1]))
    quad = quad - lo
    lo, hi = box(quad)
    pad = np.concatenate([np.maximum(border - lo, 0), np.maximum(hi - pic.size + border, 0)])
    if enable_padding and pad.max() > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        arr = np.pad(
            np.asarray(pic, dtype=np.float32),
            ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)),
            "reflect",
        )
        h, w = arr.shape[:2]
        yy, xx = np.ogrid[:h, :w]
        fx = 1.0 - np.minimum(xx / pad[0], (w - 1 - xx) / pad[2])
        fy = 1.0 - np.minimum(yy / pad[1], (h - 1 - yy) / pad[3])
        mask = np.maximum(fx, fy)[..., None]
        sigma = qsize * 0.02
        arr += (scipy.ndimage.gaussian_filter(arr, [sigma, sigma, 0]) - arr) * np.clip(
            mask * 3.0 + 1.0, 0.0, 1.0
        )
        arr += (np.median(arr, axis=(0, 1)) - arr) * np.clip(mask, 0.0, 1.0)
        pic = Image.fromarray(np.uint8(np.clip(np.rint(arr), 0, 255)))
        quad = quad + pad[:2]
    data = tuple((quad + 0.5).flatten())
    pic = pic.transform(
        (transform_size, transform_size), Image.Transform.QUAD, data, Image.Resampling.BILINEAR
    )
    if output_size < transform_size:
        pic = pic.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return np.asarray(pic)


# -- the quad ------------------------------------------------------------------------------
def test_ffhq_quad_matches_published_formula():
    rng = np.random.default_rng(1)
    for _ in range(500):
        el = rng.uniform(0, 2000, 2)
        er = el + rng.uniform(-300, 300, 2)
        ml, mr = rng.uniform(0, 2000, (2, 2))
        want = _published_quad(el, er, ml, mr)
        if not np.isfinite(want).all():
            continue
        np.testing.assert_allclose(ffhq_quad(el, er, ml, mr), want, rtol=0, atol=1e-9)


def test_quad_from_landmarks5_uses_eyes_and_mouth_corners():
    lm = _similar(FACE, 10.0, 90.0, (300.0, 200.0))
    quad = quad_from_landmarks5(lm)
    assert quad.dtype == np.float64 and quad.shape == (4, 2)
    np.testing.assert_allclose(quad, _published_quad(lm[0], lm[1], lm[3], lm[4]), atol=1e-9)
    moved_nose = lm.copy()
    moved_nose[2] += (25.0, -10.0)
    np.testing.assert_array_equal(quad_from_landmarks5(moved_nose), quad)


def test_quad_is_an_upright_square_for_an_upright_face():
    quad = quad_from_landmarks5(_similar(FACE, 0.0, 100.0, (500.0, 500.0)))
    sides = np.diff(np.vstack([quad, quad[:1]]), axis=0)
    np.testing.assert_allclose(np.hypot(*sides.T), np.hypot(*sides[0]), rtol=1e-12)
    assert abs(sides[0] @ sides[1]) < 1e-6 * (sides[0] @ sides[0])
    # c-x-y is the top-left corner and c+x+y the bottom-right one.
    assert quad[0, 0] < quad[2, 0] and quad[0, 1] < quad[2, 1]


# -- FFHQ alignment against the references --------------------------------------------------
@pytest.mark.parametrize("transform_size", [256, 1024])
def test_align_ffhq_matches_pillow_quad_transform(transform_size):
    img, lm = _render((640, 640), (320.0, 300.0), angle=12.0)
    got = align_ffhq(img, lm, output_size=256, transform_size=transform_size)
    quad = ffhq_quad(lm[0], lm[1], lm[3], lm[4])
    ref = Image.fromarray(img).transform(
        (transform_size, transform_size),
        Image.Transform.QUAD,
        tuple((quad + 0.5).flatten()),
        Image.Resampling.BILINEAR,
    )
    ref = np.asarray(ref.resize((256, 256), Image.Resampling.LANCZOS))
    assert got.shape == (256, 256, 3) and got.dtype == np.uint8
    assert _mad(got, ref) < 1.0


def test_align_ffhq_matches_published_procedure_with_padding():
    # The face sits in the top-left corner, so the quad leaves the photo on two sides. Noise
    # gives the pad's blur something to do (without the blur the difference is about 5).
    img, lm = _render((400, 500), (110.0, 95.0), angle=-8.0)
    noise = np.random.default_rng(3).integers(-60, 61, img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    got = align_ffhq(img, lm, output_size=256, transform_size=512)
    assert _mad(got, _published_align(img, lm, 256, 512)) < 1.0
    assert got[:8, :8].min() > 0  # the pad, not black, fills the corner

    bare = align_ffhq(img, lm, output_size=256, transform_size=512, enable_padding=False)
    assert bare[:8, :8].max() == 0
    assert _mad(bare, _published_align(img, lm, 256, 512, enable_padding=False)) < 1.0


def test_align_ffhq_matches_published_procedure_with_shrink():
    # qsize is about 620 px for output 128: the photo is shrunk by 2 first.
    img, lm = _render((900, 900), (450.0, 420.0), scale=150 / EYE_PX, angle=5.0)
    quad = quad_from_landmarks5(lm)
    assert math.floor(np.hypot(*(quad[3] - quad[0])) / 128 * 0.5) == 2
    got = align_ffhq(img, lm, output_size=128, transform_size=512)
    assert _mad(got, _published_align(img, lm, 128, 512)) < 1.0


def test_align_ffhq_default_sizes():
    img, lm = _render((480, 480), (240.0, 220.0))
    out = align_ffhq(img, lm)
    assert out.shape == (1024, 1024, 3) and out.dtype == np.uint8
    assert _mad(out, _published_align(img, lm, 1024, 4096)) < 1.0


# -- geometry of the outputs ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("transform_size", "scale", "tolerance"),
    # At 3.2 the published integer shrink (by 2) moves the face by about 0.16 px.
    [(None, 1.0, 0.05), (None, 3.2, 0.05), (1024, 1.0, 0.05), (1024, 3.2, 0.3)],
)
def test_ffhq_puts_an_ideal_face_on_the_ffhq_template(transform_size, scale, tolerance):
    template = load_template("ffhq256")
    # Any similarity image of the template points is an ideal frontal face.
    lm = _similar(template.points - 128.0, 25.0, 1.3 * scale, (400.0 * scale, 380.0 * scale))
    size = int(800 * scale)
    img = _blobs((size, size), lm, sigma=6.0 * scale)
    out = align_ffhq(img, lm, output_size=256, transform_size=transform_size)
    for point in template.points:
        assert np.hypot(*(_centroid(out, point, 14.0) - point)) < tolerance


def test_ffhq_template_file_matches_the_geometry():
    assert load_template("ffhq256").size == 256
    np.testing.assert_allclose(
        load_template("ffhq256").points, ffhq_template(256).points, atol=1e-3
    )
    # The eyes sit level, the face is centred, the mouth below the nose below the eyes.
    p = ffhq_template(1024).points
    assert p[0, 1] == pytest.approx(p[1, 1]) and (p[0, 0] + p[1, 0]) / 2 == pytest.approx(511.5)
    assert p[0, 1] < p[2, 1] < p[3, 1]


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.6, 5.0, 10.0])
def test_template_alignment_puts_landmarks_on_template_points(factor):
    # factor: face size in the photo / in the template (above 1.25 takes the INTER_AREA path)
    template = Template("t96", 96, [[33, 40], [63, 40], [48, 57], [36, 73], [60, 73]], "test")
    size = int(160 * factor) + 40
    lm = _similar(template.points - 48.0, -17.0, factor, (size / 2, size / 2))
    m = similarity_transform(lm, template.points)
    np.testing.assert_allclose(lm @ m[:, :2].T + m[:, 2], template.points, atol=1e-9)
    out = align_template(_blobs((size, size), lm, sigma=3.0 * factor), lm, template)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    for point in template.points:
        assert np.hypot(*(_centroid(out, point, 9.0) - point)) < 0.3


def test_template_ffhq256_agrees_with_align_ffhq_on_an_ideal_face():
    template = load_template("ffhq256")
    lm = _similar(template.points - 128.0, -20.0, 1.6, (400.0, 380.0))
    ys, xs = np.mgrid[0:800, 0:800].astype(np.float64)
    img = _pattern(xs / 120.0, ys / 120.0)
    assert _mad(align_template(img, lm, template), align_ffhq(img, lm, 256, None)) < 0.5


# -- invariance to rotation and scale -------------------------------------------------------
COPIES = [(20.0, 1.0), (0.0, 0.6), (0.0, 1.5), (-35.0, 1.3)]
TEMPLATE = Template(
    "test128", 128, 64.0 + 36.0 * (FACE - (0.0, 0.55)) @ _rotation(3.0).T, "test face"
)


def _copy(angle: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    size = int(760 * scale)
    return _render((size, size), (size / 2, size / 2 - 20 * scale), scale=scale, angle=angle)


@pytest.mark.parametrize(("angle", "scale"), COPIES)
@pytest.mark.parametrize("transform_size", [None, 1024])
def test_ffhq_alignment_ignores_rotation_and_scale(angle, scale, transform_size):
    base = align_ffhq(*_copy(0.0, 1.0), output_size=256, transform_size=transform_size)
    other = align_ffhq(*_copy(angle, scale), output_size=256, transform_size=transform_size)
    assert _mad(base, other) < 0.75  # a 1 px landmark shift gives about 1.0


@pytest.mark.parametrize(("angle", "scale"), COPIES)
def test_template_alignment_ignores_rotation_and_scale(angle, scale):
    base = align_template(*_copy(0.0, 1.0), TEMPLATE)
    other = align_template(*_copy(angle, scale), TEMPLATE)
    assert _mad(base, other) < 0.75  # a 1 px landmark shift gives about 1.0


# -- similarity transform -------------------------------------------------------------------
def test_similarity_transform_recovers_an_exact_similarity():
    rng = np.random.default_rng(7)
    for _ in range(50):
        src = rng.uniform(-100, 100, (5, 2))
        angle, scale, shift = rng.uniform(-180, 180), rng.uniform(0.1, 5), rng.uniform(-50, 50, 2)
        m = similarity_transform(src, _similar(src, angle, scale, shift))
        np.testing.assert_allclose(m[:, :2], scale * _rotation(angle), atol=1e-9)
        np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_similarity_transform_is_the_least_squares_fit():
    rng = np.random.default_rng(8)
    src = rng.uniform(0, 200, (7, 2))
    dst = _similar(src, 30.0, 0.7, (5.0, -3.0)) + rng.normal(0, 4.0, src.shape)
    # Rotation + scale is linear in (a, b): x' = a x - b y + tx, y' = b x + a y + ty.
    rows = [[x, -y, 1, 0] for x, y in src] + [[y, x, 0, 1] for x, y in src]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), dst.T.reshape(-1), rcond=None)[0]
    want = np.array([[a, -b, tx], [b, a, ty]])
    np.testing.assert_allclose(similarity_transform(src, dst), want, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [4.0, 9.0]])
    m = similarity_transform(src, src * (-1.0, 1.0))
    assert np.linalg.det(m[:, :2]) >= 0
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])


def test_similarity_transform_bad_input():
    with pytest.raises(ValueError, match="N >= 2"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="N >= 2"):
        similarity_transform(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(AlignmentError, match="coincide"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
    with pytest.raises(AlignmentError, match="finite"):
        similarity_transform(np.full((3, 2), np.nan), np.zeros((3, 2)))


# -- templates ------------------------------------------------------------------------------
def test_template_json_round_trip_and_validation():
    t = ffhq_template(64)
    again = Template.from_json(t.to_json())
    assert again == t and hash(again) == hash(t)
    assert isinstance(t.to_json()["points"], list) and t.to_json()["size"] == 64
    with pytest.raises(ValueError):
        t.points[0, 0] = 1.0  # read-only
    with pytest.raises(ValueError, match="points"):
        Template("x", 64, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="size"):
        Template("x", 0, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="keys"):
        Template.from_json({"name": "x", "size": 64})
    with pytest.raises(ValueError, match="plausible face"):
        Template("x", 64, t.points[[1, 0, 2, 3, 4]])  # eyes swapped


@pytest.mark.parametrize("name", ["../templates/ffhq256", "", "no such template", ".hidden"])
def test_load_template_refuses_bad_names(name):
    with pytest.raises(ValueError, match="template"):
        load_template(name)


def test_load_template_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="ffhq256"):
        load_template("nonexistent")


# -- bad input ------------------------------------------------------------------------------
def _degenerate() -> dict[str, np.ndarray]:
    good = _similar(FACE, 0.0, 80.0, (200.0, 150.0))
    eyes_together, nan, flipped, swapped = (good.copy() for _ in range(4))
    eyes_together[1] = eyes_together[0] + 0.2
    nan[2, 1] = np.nan
    flipped[[3, 4], 1] -= 200.0  # the mouth well above the eyes
    swapped[[0, 1]] = swapped[[1, 0]]
    return {"coincide": eyes_together, "finite": nan, "below": flipped, "swapped": swapped}


@pytest.mark.parametrize("case", ["coincide", "finite", "below", "swapped"])
def test_degenerate_landmarks_raise_alignment_error(case):
    lm = _degenerate()[case]
    img = np.full((300, 400, 3), 128, np.uint8)
    match = "below" if case == "swapped" else case
    with pytest.raises(AlignmentError, match=match):
        align_ffhq(img, lm, 64, None)
    with pytest.raises(AlignmentError, match=match):
        align_template(img, lm, TEMPLATE)
    with pytest.raises(ValueError):  # AlignmentError is a ValueError
        quad_from_landmarks5(lm)


def test_empty_image_and_face_outside_raise_alignment_error():
    lm = _similar(FACE, 0.0, 80.0, (200.0, 150.0))
    with pytest.raises(AlignmentError, match="empty"):
        align_ffhq(np.zeros((0, 10, 3), np.uint8), lm)
    with pytest.raises(AlignmentError, match="outside"):
        align_ffhq(np.zeros((300, 400, 3), np.uint8), lm + 5000.0, 64, None)
    with pytest.raises(AlignmentError, match="outside"):
        align_template(np.zeros((300, 400, 3), np.uint8), lm + 5000.0, TEMPLATE)
    # Partly outside is fine: the border mode fills the rest.
    img = np.full((300, 400, 3), 200, np.uint8)
    out = align_template(img, lm - (200.0, 0.0), TEMPLATE, border_mode="constant")
    assert out.shape == (128, 128, 3) and out[:, :10].max() == 0 and out[:60, -10:].min() == 200
    assert align_template(img, lm - (200.0, 0.0), TEMPLATE).min() == 200


def test_bad_arguments_raise_value_error():
    img, lm = _render((300, 300), (150.0, 120.0))
    for bad_image in (img[..., 0], img.astype(np.float32), img.tolist()):
        with pytest.raises(ValueError, match="uint8"):
            align_ffhq(bad_image, lm, 64, None)
    with pytest.raises(ValueError, match="shape"):
        align_ffhq(img, lm[:4], 64, None)
    with pytest.raises(ValueError, match="output_size"):
        align_ffhq(img, lm, 0, None)
    with pytest.raises(ValueError, match="transform_size"):
        align_ffhq(img, lm, 256, 128)
    with pytest.raises(ValueError, match="border_mode"):
        align_template(img, lm, TEMPLATE, border_mode="wrap")
    with pytest.raises(ValueError, match="Template"):
        align_template(img, lm, "ffhq256")
    with pytest.raises(ValueError, match="pair"):
        ffhq_quad([0, 0, 0], [1, 0], [0, 1], [1, 1])


def test_inputs_are_left_untouched_and_outputs_are_fresh():
    img, lm = _render((300, 300), (150.0, 120.0))
    img_before, lm_before = img.copy(), lm.copy()
    outs = [align_ffhq(img, lm, 64, None), align_ffhq(img, lm, 64, 256)]
    outs.append(align_template(img, lm, TEMPLATE))
    np.testing.assert_array_equal(img, img_before)
    np.testing.assert_array_equal(lm, lm_before)
    for out in outs:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert out.flags.writeable and not np.shares_memory(out, img)
