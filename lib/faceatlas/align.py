"""Face alignment: a photo and five landmarks in, a square face crop in a generator's geometry out.

A generator can only reproduce faces framed the way its training faces were, so every face is
warped to that framing before it is described or projected. Two framings:

- `align_ffhq` follows the procedure NVIDIA used to build FFHQ (`recreate_aligned_images` in
  the ffhq-dataset script), for generators trained on FFHQ. An oriented square, the "quad",
  comes from the eye centres and mouth corners (`ffhq_quad`). The photo is shrunk with LANCZOS
  by an integer factor when the quad is over twice the output size (per axis), cropped to the
  quad plus a border, reflect-padded where the quad leaves the photo (the pad is blurred and
  faded toward the median colour so that it reads as background rather than a mirrored face),
  resampled bilinearly onto a transform_size square and LANCZOS-resized to output_size.
- `align_template` maps the five landmarks onto a `Template`'s five points with the
  least-squares similarity (Umeyama), for generators with their own crop (e.g. a 64x64 DCGAN).
  `ffhq_template` gives FFHQ's framing as a template: the output positions of an ideal frontal
  face's landmarks under `align_ffhq`.

Conventions: images are uint8 H x W x 3 RGB; landmarks are (5, 2) float (x, y) pixel positions
in MTCNN's order (image-left eye, image-right eye, nose tip, image-left and image-right mouth
corner), where (x, y) is the centre of pixel column x, row y. The published script adds 0.5 to
reach Pillow's continuous coordinates, in which pixel i spans [i, i + 1); so do we.

Where we depart from the published script (outputs agree within about one grey level):
- The quad is a square, so Pillow's QUAD map is affine: cv2.warpAffine (bilinear, 1/32-pixel
  weights) does it. Where an unpadded quad leaves the photo, Pillow cuts to black at the edge
  and OpenCV fades to black over one pixel.
- Only the cropped region is shrunk: Pillow's resize with a box reads the neighbours outside
  the box, so this equals shrinking the whole photo and then cropping, and is much faster on
  a large photo with a small face.
- The pad's Gaussian blur is OpenCV's, with scipy's radius (4 sigma) and border rule.
- `transform_size=None` warps straight to output_size: the LANCZOS shrink then brings the quad
  to exactly output_size whenever it is larger, and the warp is a rotation at scale 1. This is
  many times faster than a 4096-pixel intermediate and avoids aliasing, at the cost of a
  little softness (a bilinear resampling at 1:1 blurs by up to half a pixel). Its shrink maps
  pixel centres exactly, so it also lacks the published shrink's sub-pixel shift. Measured on
  the 2-core project machine, a 500x375 photo: 540 ms at the defaults (1024 via 4096), 37 ms
  for 256 via 1024, 8 ms for 256 direct; `align_template` to 64 px takes 1 ms.

Errors: malformed arguments (wrong types, shapes, sizes) raise ValueError. Landmarks or pixels
that cannot be aligned raise `AlignmentError` (a ValueError) with a reason, which the caller
records as a dropped face: an empty image, non-finite landmarks, eyes less than 1 px apart,
the mouth less than 0.1 eye distances below the eye line (mouth above the eyes, or the two
eyes swapped; measured in the face's own frame, so rotated faces pass), or a crop that misses
the photo entirely.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "TEMPLATE_DIR",
    "AlignmentError",
    "Template",
    "align_ffhq",
    "align_template",
    "ffhq_quad",
    "ffhq_template",
    "load_template",
    "quad_from_landmarks5",
    "similarity_transform",
]

TEMPLATE_DIR: Final = Path(__file__).with_name("templates")

# Below this eye distance (px) the eye line has no trustworthy direction, and FFHQ's pad width
# (0.3 x the quad size, at least 1.2 eye distances) would round to zero.
_MIN_EYE_DISTANCE: Final = 1.0
# How far the mouth midpoint must lie below the eye line, in eye distances, measured
# perpendicular to the eye line. A frontal face has about 1.15; at or below zero the mouth is
# above the eyes or the eyes are swapped, and the quad's orientation becomes meaningless.
_MIN_MOUTH_DROP: Final = 0.1

# An ideal frontal face in eye distances, eye midpoint at the origin, y down. Proportions of
# the widely used 112x112 five-point ArcFace template (insightface), made symmetric: mouth
# width 0.828, mouth 1.155 and nose tip 0.571 below the eye line.
_IDEAL_FACE: Final = np.array(
    [[-0.5, 0.0], [0.5, 0.0], [0.0, 0.5715], [-0.4141, 1.1546], [0.4141, 1.1546]]
)

_BORDER_MODES: Final = {
    "reflect": cv2.BORDER_REFLECT_101,
    "replicate": cv2.BORDER_REPLICATE,
    "constant": cv2.BORDER_CONSTANT,
}
# align_template box-averages (INTER_AREA) first when the face shrinks below this scale:
# bilinear sampling alone would skip source pixels and alias.
_AREA_BELOW_SCALE: Final = 0.8
_TEMPLATE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class AlignmentError(ValueError):
    """These landmarks or pixels cannot be aligned; the message says why."""


# -- FFHQ --------------------------------------------------------------------------------
def ffhq_quad(
    eye_left: np.ndarray, eye_right: np.ndarray, mouth_left: np.ndarray, mouth_right: np.ndarray
) -> np.ndarray:
    """FFHQ's oriented crop square as (4, 2) float64 corners c-x-y, c-x+y, c+x+y, c+x-y (top-left,
    bottom-left, bottom-right, top-right for an upright face).

    Raises AlignmentError when the points give no orientation (x has zero length)."""
    el, er = _point(eye_left, "eye_left"), _point(eye_right, "eye_right")
    ml, mr = _point(mouth_left, "mouth_left"), _point(mouth_right, "mouth_right")
    eye_avg = (el + er) * 0.5
    eye_to_eye = er - el
    eye_to_mouth = (ml + mr) * 0.5 - eye_avg
    # The horizontal axis blends the eye line with the eye-to-mouth direction turned a quarter
    # turn, so both cues set the roll.
    x = np.array([eye_to_eye[0] + eye_to_mouth[1], eye_to_eye[1] - eye_to_mouth[0]])
    length = math.hypot(*x)
    if not (math.isfinite(length) and length > 0.0):
        raise AlignmentError("the landmarks give the face no orientation")
    x *= max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8) / length
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_from_landmarks5(lm5: np.ndarray) -> np.ndarray:
    """`ffhq_quad` of our five landmarks (points 0, 1, 3 and 4), after the degeneracy checks."""
    lm = _landmarks(lm5)
    return ffhq_quad(lm[0], lm[1], lm[3], lm[4])


def align_ffhq(
    image: np.ndarray,
    lm5: np.ndarray,
    output_size: int = 1024,
    transform_size: int | None = 4096,
    enable_padding: bool = True,
) -> np.ndarray:
    """FFHQ-aligned (output_size, output_size, 3) uint8 crop of the face at `lm5`.

    transform_size=None warps straight to output_size (see the module docstring)."""
    img = _image(image)
    _check_size("output_size", output_size)
    if transform_size is not None:
        _check_size("transform_size", transform_size)
        if transform_size < output_size:
            raise ValueError(f"transform_size {transform_size} is below output_size {output_size}")
    quad = quad_from_landmarks5(lm5)
    qsize = math.hypot(*(quad[3] - quad[0]))
    h, w = img.shape[:2]

    # Shrink: (rw, rh) is the shrunk photo's size, (sx, sy) the shrink per axis.
    rw, rh, sx, sy = w, h, 1.0, 1.0
    if transform_size is not None and (shrink := math.floor(qsize / output_size * 0.5)) > 1:
        # As published: the size is rounded and quad / shrink ignores the half-pixel offset,
        # which moves the face by a fraction of an output pixel (0.16 px seen at shrink 2).
        rw, rh = max(int(np.rint(w / shrink)), 1), max(int(np.rint(h / shrink)), 1)
        sx, sy = w / rw, h / rh
        quad, qsize = quad / shrink, qsize / shrink
    elif transform_size is None and (shrink := qsize / output_size) > 1.0:
        rw, rh, sx, sy = max(int(w / shrink), 1), max(int(h / shrink), 1), shrink, shrink
        quad, qsize = (quad + 0.5) / shrink - 0.5, float(output_size)

    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0, x1, y1 = _bounds(quad)
    x0, y0 = max(x0 - border, 0), max(y0 - border, 0)
    x1, y1 = min(x1 + border, rw), min(y1 + border, rh)
    if x1 <= x0 or y1 <= y0:
        raise AlignmentError("the face's crop lies outside the image")
    if sx > 1.0:
        box = (x0 * sx, y0 * sy, min(x1 * sx, w), min(y1 * sy, h))
        img = np.asarray(
            Image.fromarray(img).resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS, box=box)
        )
    else:
        img = img[y0:y1, x0:x1]
    quad = quad - (x0, y0)

    if enable_padding:
        h, w = img.shape[:2]
        bx0, by0, bx1, by1 = _bounds(quad)
        pad = (max(border - bx0, 0), max(border - by0, 0), max(bx1 - w + border, 0),
               max(by1 - h + border, 0))  # fmt: skip
        if max(pad) > border - 4:
            # At least one pixel, where the published script would divide by zero.
            least = max(int(np.rint(qsize * 0.3)), 1)
            pad = tuple(max(p, least) for p in pad)
            img = _blur_pad(img, pad, qsize)
            quad = quad + pad[:2]

    size = output_size if transform_size is None else transform_size
    out = cv2.warpAffine(
        np.ascontiguousarray(img),
        _quad_map(quad, size),
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    if size > output_size:
        out = np.array(
            Image.fromarray(out).resize((output_size, output_size), Image.Resampling.LANCZOS)
        )
    return out


def ffhq_template(size: int = 256) -> Template:
    """FFHQ's framing as a template: where `align_ffhq(..., output_size=size)` puts the five
    landmarks of an ideal frontal face (`_IDEAL_FACE`): its quad, mapped onto the output."""
    _check_size("size", size)
    face = _IDEAL_FACE * 100.0
    to_output = cv2.invertAffineTransform(_quad_map(quad_from_landmarks5(face), size))
    points = face @ to_output[:, :2].T + to_output[:, 2]
    source = (
        "computed by faceatlas.align.ffhq_template: the FFHQ quad of a symmetric frontal face "
        "with the 112x112 ArcFace template's proportions (mouth width 0.828, mouth drop 1.155, "
        "nose drop 0.571 eye distances), mapped to output pixel centres"
    )
    return Template(f"ffhq{size}", size, points, source)


def _quad_map(quad: np.ndarray, size: int) -> np.ndarray:
    """2x3 map from output pixel index to input pixel index that sends the output square's
    outer edges to the quad (Pillow's QUAD with corners quad + 0.5, for a parallelogram)."""
    a = np.column_stack([(quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size])
    return np.column_stack([a, quad[0] + a @ (0.5, 0.5)])


def _blur_pad(img: np.ndarray, pad: tuple[int, ...], qsize: float) -> np.ndarray:
    """Reflect-pad by (left, top, right, bottom), blur the pad and fade it to the median colour."""
    left, top, right, bottom = pad
    out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101)
    out = out.astype(np.float32)
    h, w = out.shape[:2]
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    # 0 at the photo's edge, 1 at the pad's outer edge, negative inside the photo.
    into_x = 1.0 - np.minimum(xs / left, (w - 1 - xs) / right)
    into_y = 1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom)
    mask = np.maximum(into_x[None, :], into_y[:, None])[:, :, None]
    sigma = qsize * 0.02
    radius = int(4.0 * sigma + 0.5)
    if radius > 0:
        k = 2 * radius + 1
        blurred = cv2.GaussianBlur(out, (k, k), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
        out += (blurred - out) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    out += (np.median(out, axis=(0, 1)) - out) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -- templates ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Template:
    """Where a generator's training crops put the five landmarks: `points` (5, 2) in pixel
    centres of a size x size output, read-only float64. `source` says how they were measured."""

    name: str
    size: int
    points: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"template name must be a non-empty string, got {self.name!r}")
        _check_size("template size", self.size)
        object.__setattr__(self, "size", int(self.size))
        if not isinstance(self.source, str):
            raise ValueError(f"template source must be a string, got {self.source!r}")
        points = np.array(self.points, dtype=np.float64)
        if points.shape != (5, 2):
            raise ValueError(f"template points must be 5 (x, y) pairs, got {self.points!r}")
        try:
            _landmarks(points)
        except AlignmentError as e:
            raise ValueError(f"template {self.name!r} is not a plausible face: {e}") from None
        points.setflags(write=False)
        object.__setattr__(self, "points", points)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return (self.name, self.size, self.source) == (other.name, other.size, other.source) and (
            np.array_equal(self.points, other.points)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.size, self.points.tobytes(), self.source))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Template:
        """From a dict with name, size, points ([[x, y], ...]) and optionally source."""
        if not isinstance(data, Mapping) or not {"name", "size", "points"} <= data.keys():
            raise ValueError("a template needs the keys name, size and points")
        return cls(data["name"], data["size"], data["points"], data.get("source", ""))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "points": self.points.tolist(),
            "source": self.source,
        }


def load_template(name: str) -> Template:
    """The template stored as TEMPLATE_DIR/<name>.json."""
    if not isinstance(name, str) or not _TEMPLATE_NAME.fullmatch(name):
        raise ValueError(f"bad template name {name!r}")
    # Through importlib.resources, so the templates are found when the package is imported
    # from a zip (spark-submit --py-files) as well as from a folder.
    folder = importlib.resources.files("faceatlas") / "templates"
    entry = folder / f"{name}.json"
    if not entry.is_file():
        known = sorted(e.name[:-5] for e in folder.iterdir() if e.name.endswith(".json"))
        raise ValueError(f"unknown template {name!r}; known: {', '.join(known) or 'none'}")
    return Template.from_json(json.loads(entry.read_text(encoding="utf-8")))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking src (N, 2) onto dst (N, 2),
    as a 2x3 float64 matrix; never a reflection (Umeyama 1991).

    Raises AlignmentError for non-finite points or src points that all coincide."""
    s, d = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != 2 or s.shape != d.shape or len(s) < 2:
        raise ValueError(f"src and dst must both be (N, 2) with N >= 2, got {s.shape}, {d.shape}")
    if not (np.isfinite(s).all() and np.isfinite(d).all()):
        raise AlignmentError("points are not finite")
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum()) / len(s)
    if var_s == 0.0:
        raise AlignmentError("source points coincide")
    u, sv, vt = np.linalg.svd(dc.T @ sc / len(s))
    # If the best orthogonal map is a reflection, flip its weakest axis instead.
    flip = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rotation = (u * flip) @ vt
    scale = float(sv @ flip) / var_s
    return np.column_stack([scale * rotation, mu_d - scale * rotation @ mu_s])


def align_template(
    image: np.ndarray, lm5: np.ndarray, template: Template, border_mode: str = "reflect"
) -> np.ndarray:
    """(size, size, 3) uint8 crop whose landmarks best match `template.points` (similarity fit).

    border_mode: "reflect" (mirror without repeating the edge pixel), "replicate" or "constant"
    (black) for output pixels that fall outside the photo."""
    if border_mode not in _BORDER_MODES:
        raise ValueError(
            f"border_mode must be one of {', '.join(_BORDER_MODES)}, got {border_mode!r}"
        )
    if not isinstance(template, Template):
        raise ValueError(f"template must be a Template, got {type(template).__name__}")
    img = _image(image)
    m = similarity_transform(_landmarks(lm5), template.points)
    scale = math.hypot(m[0, 0], m[1, 0])
    if scale < 1e-12:
        raise AlignmentError("the landmarks do not fit the template")
    # The photo region the output samples, widened by the interpolation footprint (3 output
    # pixels) and clipped to the photo.
    inv = cv2.invertAffineTransform(m)
    size, margin = template.size, 3.0 / scale
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5] * 2])
    lo = np.floor((corners @ inv[:, :2].T + inv[:, 2]).min(axis=0) - margin)
    hi = np.ceil((corners @ inv[:, :2].T + inv[:, 2]).max(axis=0) + margin)
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), img.shape[1]), min(int(hi[1]), img.shape[0])
    if x1 <= x0 or y1 <= y0:
        raise AlignmentError("the face's crop lies outside the image")
    if scale < _AREA_BELOW_SCALE:
        img, m = _area_shrink(img[y0:y1, x0:x1], m, scale, (x0, y0))
    return cv2.warpAffine(
        img,
        m,
        (template.size, template.size),
        flags=cv2.INTER_CUBIC if scale > 1.0 else cv2.INTER_LINEAR,
        borderMode=_BORDER_MODES[border_mode],
        borderValue=(0, 0, 0),
    )


def _area_shrink(
    region: np.ndarray, m: np.ndarray, scale: float, origin: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Box-average `region` (the photo from `origin` on) down to the output's scale; returns it
    with the map `m` rewritten for it. The region is clipped to the photo, so border modes
    still mirror at the photo's own edges."""
    h, w = region.shape[:2]
    x0, y0 = origin
    nw, nh = max(round(w * scale), 1), max(round(h * scale), 1)
    small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    # photo pixel x -> small pixel (x - x0 + 0.5) * sx - 0.5, likewise y
    to_small = np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5],
                         [0.0, 0.0, 1.0]])  # fmt: skip
    return small, (np.vstack([m, (0.0, 0.0, 1.0)]) @ np.linalg.inv(to_small))[:2]


# -- argument checks ---------------------------------------------------------------------
def _image(image: np.ndarray) -> np.ndarray:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):  # fmt: skip
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image)
        raise ValueError(f"image must be a uint8 H x W x 3 RGB array, got {what}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise AlignmentError("empty image")
    return np.ascontiguousarray(image)


def _landmarks(lm5: np.ndarray) -> np.ndarray:
    """(5, 2) float64 landmarks that can be aligned, else AlignmentError with the reason."""
    lm = np.asarray(lm5, dtype=np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"landmarks must have shape (5, 2), got {lm.shape}")
    if not np.isfinite(lm).all():
        raise AlignmentError("landmarks are not finite")
    eye_to_eye = lm[1] - lm[0]
    eye_distance = math.hypot(*eye_to_eye)
    if eye_distance < _MIN_EYE_DISTANCE:
        raise AlignmentError(f"the eyes coincide ({eye_distance:.2g} px apart)")
    eye_to_mouth = (lm[3] + lm[4] - lm[0] - lm[1]) * 0.5
    drop = (eye_to_eye[0] * eye_to_mouth[1] - eye_to_eye[1] * eye_to_mouth[0]) / eye_distance**2
    if drop < _MIN_MOUTH_DROP:
        raise AlignmentError(
            f"the mouth is not below the eyes ({drop:.2f} eye distances below the eye line)"
        )
    return lm


def _point(p: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(p, dtype=np.float64)
    if v.shape != (2,):
        raise ValueError(f"{name} must be an (x, y) pair, got shape {v.shape}")
    return v


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    """Integer bounding box (floor of the minima, ceil of the maxima), as the script rounds."""
    lo, hi = np.floor(quad.min(axis=0)), np.ceil(quad.max(axis=0))
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])
