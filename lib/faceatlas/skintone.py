"""Skin tone of a face from its pixels, without a model: the Individual Typology Angle (ITA).

The atlas reports who ends up in each country's average face. No ethnicity model ships with
the project (and labelling people by ethnicity from a photo is questionable anyway), so the
faces stage always records a colorimetric measure: ITA, the angle of a skin colour in the
CIELAB L*-b* plane, which dermatology uses to grade constitutive skin colour,

    ITA = atan((L* - 50) / b*) * 180 / pi        (degrees; higher is lighter)

with six conventional categories (Chardon et al. 1991; Del Bino & Bernerd 2013):

    very_light  ITA >= 55        tan     10 <= ITA < 28
    light       41 <= ITA < 55   brown  -30 <= ITA < 10
    intermediate 28 <= ITA < 41  dark          ITA < -30

Each lower bound is inclusive, so a value on a boundary takes the lighter category
(55 is very_light, -30 is brown).

Pipeline, per face:

1. `skin_regions` places three quadrilaterals from the five landmarks: the two cheeks below
   the eyes and outside the nose, and the forehead above the eyebrows. They are built in the
   face's own frame (eye line and its perpendicular), so they follow in-plane rotation and
   scale, and work on the original photo or an aligned crop alike.
2. The pixels inside them are converted sRGB -> linear RGB -> XYZ (D65) -> CIELAB by
   `rgb_to_lab` (IEC 61966-2-1 transfer curve and matrix, CIE 1976 L*a*b*).
3. Pixels that are not lit skin are dropped: near-black (L* < 10) and specular or clipped
   (L* > 95); achromatic or off-hue ones (chroma C* < 4, or hue angle outside -15..100
   degrees; skin sits in the red-yellow quadrant, while hair, glasses, background and
   greyscale photos do not); and shadows, L* more than 15 below the 75th percentile of what
   is left over all three regions (the lit skin), which keeps a shaded half of a face from
   pulling the result down.
4. Each region that keeps at least `min_pixels` pixels gives its median L* and median b*;
   the face's L* and b* are the medians of those across regions (with three regions, one
   region that is not skin but passes the filters, such as a blond fringe, is outvoted), and
   ITA is computed from them. The ITA of each pixel is not averaged: it is unstable where b*
   is small (it swings between -90 and +90 for dark, low-chroma pixels), while medians of
   L* and b* are robust and give a uniform patch exactly its own ITA.

ITA is computed with atan2(L* - 50, b*): equal to the formula above for b* > 0, tending to
+-90 as b* -> 0+, and beyond +-90 for b* <= 0 (a bluish colour), where it keeps the sign of
L* - 50 so that the category stays the intuitive one (very_light above L* = 50, dark below).

Caveats: photos are not calibrated. White balance, exposure and JPEG processing move L* and
b*, so ITA from Flickr photos is a rough proxy, comparable across large groups, not a
dermatological measurement of one person.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
from numpy.typing import ArrayLike

from faceatlas.landmarks import as_landmarks

__all__ = [
    "CATEGORIES",
    "REGION_NAMES",
    "SkinTone",
    "category",
    "ita",
    "ita_from_lab",
    "rgb_to_lab",
    "skin_regions",
]

# Lightest first, with the inclusive lower bound of each category in degrees.
CATEGORIES: Final = ("very_light", "light", "intermediate", "tan", "brown", "dark")
_LOWER_BOUNDS: Final = (55.0, 41.0, 28.0, 10.0, -30.0)

REGION_NAMES: Final = ("left_cheek", "right_cheek", "forehead")

# sRGB (IEC 61966-2-1) linear RGB -> XYZ, D65. Its row sums are the D65 white point, so
# white maps to a* = b* = 0 exactly.
_RGB_TO_XYZ: Final = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE: Final = _RGB_TO_XYZ.sum(axis=1)

# The sRGB decoding curve for every 8-bit value, once.
_CODES: Final = np.arange(256) / 255.0
_SRGB_TO_LINEAR: Final = np.where(
    _CODES <= 0.04045, _CODES / 12.92, ((_CODES + 0.055) / 1.055) ** 2.4
)

# CIE 1976: f(t) = t^(1/3) above (6/29)^3, a line below it that meets the cube root smoothly.
_DELTA: Final = 6.0 / 29.0

# Region layout in the face's frame. Origin: midpoint of the eye centres; s runs along the
# eye line (image-left to image-right), t perpendicular to it, towards the mouth. Horizontal
# offsets are in eye distances d. The cheeks' vertical extent is in eye-to-mouth distances h
# (so it follows pitch); the forehead's is in eye distances (it has no landmark of its own).
# On a frontal face (mouth about 1.15 d below the eyes, corners at +-0.41 d, nose tip about
# halfway down, nose wings at about +-0.3 d) the cheek boxes sit below the lower eyelid and
# the rims of glasses, outside the nose wings and above the nasolabial folds. The forehead
# box is a band just above the eyebrows: higher up, fringes and hats cover it too often.
_CHEEK_S: Final = (0.35, 0.70)
_CHEEK_T: Final = (0.35, 0.65)  # in h
_FOREHEAD_S: Final = (-0.35, 0.35)
_FOREHEAD_T: Final = (-0.70, -0.40)  # in d
# Eye-to-mouth distance over eye distance outside this range is not a face seen from the front
# (or the landmarks are in the wrong order).
_MOUTH_RATIO: Final = (0.3, 3.0)
# Coordinates beyond this are garbage, and would overflow the rasteriser's fixed point.
_MAX_COORD: Final = 1e6
_SUBPIXEL_BITS: Final = 4

# Pixel filters (CIELAB units and degrees); see the module docstring.
_MIN_L: Final = 10.0
_MAX_L: Final = 95.0
_MIN_CHROMA: Final = 4.0
_HUE_RANGE: Final = (-15.0, 100.0)
_LIT_PERCENTILE: Final = 75.0
_SHADOW_DROP: Final = 15.0

MIN_PIXELS: Final = 20


@dataclass(frozen=True, slots=True)
class SkinTone:
    """ITA of one face. `ita` is NaN and `category` None when `reason` says why not.

    reason: None when measured; "degenerate_landmarks" (non-finite, coincident eyes, mouth
    not below the eyes) or "too_few_skin_pixels" (no region kept `min_pixels` pixels, e.g. a
    tiny face, one at the edge of the photo, a greyscale photo, or one in deep shadow).
    pixels: pixels kept in the regions that count (all kept pixels when none counts).
    """

    ita: float
    category: str | None
    pixels: int
    reason: str | None = None


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65, 2-degree observer) of 8-bit sRGB values: uint8 (..., 3) -> float64 (..., 3).

    L* is in 0..100; a* and b* are unbounded (about -86..98 and -108..95 for sRGB).
    """
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a uint8 numpy array, got {type(rgb).__name__}")
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (..., 3), got {rgb.shape}")
    xyz = _SRGB_TO_LINEAR[rgb] @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _DELTA**3, np.cbrt(xyz), xyz / (3 * _DELTA**2) + 4.0 / 29.0)
    lab = np.empty(rgb.shape, dtype=np.float64)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def ita_from_lab(lightness: ArrayLike, b: ArrayLike) -> np.ndarray | float:
    """ITA in degrees of L* and b*, via atan2 (see the module docstring for b* <= 0).

    Scalars give a float, arrays an array. NaN in, NaN out.
    """
    # Adding 0.0 turns -0.0 into +0.0, so that b* = -0.0 at L* = 50 gives 0, not 180.
    out = np.degrees(np.arctan2(np.asarray(lightness, dtype=np.float64) - 50.0, np.add(b, 0.0)))
    return float(out) if out.ndim == 0 else out


def category(ita_degrees: float) -> str:
    """The ITA category of an angle in degrees (lower bounds inclusive). NaN raises ValueError."""
    value = float(ita_degrees)
    if math.isnan(value):
        raise ValueError("ITA is NaN: no category (check SkinTone.reason)")
    for name, bound in zip(CATEGORIES, _LOWER_BOUNDS, strict=False):
        if value >= bound:
            return name
    return CATEGORIES[-1]


def skin_regions(lm5: ArrayLike) -> list[np.ndarray]:
    """Left cheek, right cheek and forehead (REGION_NAMES order) as (4, 2) float64 corner arrays.

    lm5: (5, 2) landmarks (x, y) in pixels, in the project's order (eyes, nose, mouth corners).
    Corners are (x, y) in the same pixel frame and may lie outside the image. Degenerate
    landmarks (non-finite, coincident eyes, mouth not below the eye line, absurd coordinates)
    give an empty list. A wrong shape raises ValueError.
    """
    points = as_landmarks(lm5)
    if not np.all(np.isfinite(points)) or np.abs(points).max() > _MAX_COORD:
        return []
    left_eye, right_eye, _nose, left_mouth, right_mouth = points
    eye_vec = right_eye - left_eye
    d = float(np.hypot(*eye_vec))
    if d < 1e-6:
        return []
    u = eye_vec / d
    v = np.array([-u[1], u[0]])  # u turned 90 degrees towards +y: "down" on an upright face
    origin = (left_eye + right_eye) / 2
    h = float(((left_mouth + right_mouth) / 2 - origin) @ v)
    if not _MOUTH_RATIO[0] * d <= h <= _MOUTH_RATIO[1] * d:
        return []

    def box(s: tuple[float, float], t: tuple[float, float], t_unit: float) -> np.ndarray:
        corners = [(s[0], t[0]), (s[1], t[0]), (s[1], t[1]), (s[0], t[1])]
        return np.array([origin + a * d * u + b * t_unit * v for a, b in corners])

    left_cheek_s = (-_CHEEK_S[1], -_CHEEK_S[0])
    return [
        box(left_cheek_s, _CHEEK_T, h),
        box(_CHEEK_S, _CHEEK_T, h),
        box(_FOREHEAD_S, _FOREHEAD_T, d),
    ]


def ita(image: np.ndarray, lm5: ArrayLike, *, min_pixels: int = MIN_PIXELS) -> SkinTone:
    """Measure the ITA of the face whose landmarks are `lm5` in `image` (uint8 RGB, H x W x 3).

    min_pixels: kept pixels a region needs to count. A cheek covers about 0.12 d^2 and the
    forehead 0.21 d^2 (d the eye distance in pixels), so with the default of 20 the regions of
    faces from about d = 13 px can count.
    Never raises for bad pixels or landmarks (see SkinTone.reason); a wrong type or shape, or
    min_pixels < 1, raises ValueError.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {image.shape}")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    regions = skin_regions(lm5)
    if not regions:
        return SkinTone(math.nan, None, 0, "degenerate_landmarks")

    labs = [rgb_to_lab(_region_pixels(image, region)) for region in regions]
    keeps = [_skin_like(lab) for lab in labs]
    pooled = np.concatenate([lab[keep, 0] for lab, keep in zip(labs, keeps, strict=True)])
    if pooled.size:
        # Shadows are judged against the lit skin of the whole face, so a cheek that lies
        # entirely in shadow drops out instead of counting as darker skin.
        floor = np.percentile(pooled, _LIT_PERCENTILE) - _SHADOW_DROP
        keeps = [keep & (lab[:, 0] >= floor) for lab, keep in zip(labs, keeps, strict=True)]
    counted = [lab[keep] for lab, keep in zip(labs, keeps, strict=True) if keep.sum() >= min_pixels]
    if not counted:
        return SkinTone(math.nan, None, int(sum(k.sum() for k in keeps)), "too_few_skin_pixels")
    # The median across regions outvotes one region that is not skin but looks like it
    # (a blond fringe on the forehead, a tinted lens over a cheek).
    lightness = float(np.median([np.median(lab[:, 0]) for lab in counted]))
    b = float(np.median([np.median(lab[:, 2]) for lab in counted]))
    angle = float(ita_from_lab(lightness, b))
    return SkinTone(angle, category(angle), sum(len(lab) for lab in counted), None)


def _skin_like(lab: np.ndarray) -> np.ndarray:
    """Mask of pixels that are neither near-black, specular, achromatic nor off-hue."""
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    hue = np.degrees(np.arctan2(b, a))
    return (
        (lightness >= _MIN_L)
        & (lightness <= _MAX_L)
        & (np.hypot(a, b) >= _MIN_CHROMA)
        & (hue >= _HUE_RANGE[0])
        & (hue <= _HUE_RANGE[1])
    )


def _region_pixels(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The (N, 3) pixels inside the polygon (clipped to the image; none when outside it)."""
    height, width = image.shape[:2]
    x0, y0 = np.maximum(np.floor(region.min(axis=0)).astype(int), 0)
    x1 = min(int(np.ceil(region[:, 0].max())) + 1, width)
    y1 = min(int(np.ceil(region[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return np.empty((0, 3), dtype=np.uint8)
    # Rasterise only the polygon's bounding box: a face is small next to the photo.
    mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    corners = np.round((region - (x0, y0)) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(mask, [corners], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    return image[y0:y1, x0:x1][mask.astype(bool)]
