"""Quality measures of one detected face and a pass flag, for the faces table.

Only faces that are large, sharp, well lit, in colour and roughly frontal should go into a
country's average face: a projection into the generator's latent space turns a blurred,
dark or turned face into a blurred, dark or turned latent. Each measure is kept as a number
in the output table, so a threshold can be changed later without recomputing anything;
`evaluate` applies one set of `QualityThresholds` and names the checks that failed.

Measures (`measure`):

  eye_distance  px between the eye centres in the original photo (the resolution the face
                really had, whatever size the aligned crop was resampled to)
  confidence    the detector's score, passed through (a probability for MTCNN)
  blur          variance of the Laplacian (3x3, 4-neighbour) of the grey aligned face, resized
                so its longer side is 128 px: detail at a fixed face scale
  luminance     mean Rec.601 luma (0.299 R + 0.587 G + 0.114 B, 0-255) of the central region
  dark_share    share of central-region pixels with luma <= 16 (crushed shadows)
  saturation    mean HSV saturation (max - min) / max, 0..1, over central-region pixels whose
                max channel is above 16 (the hue of near-black pixels is noise). The seed
                study's false positives were grey sculptures and paintings; a colour photo of
                skin has about 0.2-0.5, a greyscale one 0.
  yaw, pitch, roll  head pose in degrees from the five photo landmarks (`head_pose`)

The central region is the middle half of the aligned crop in each direction: on an
FFHQ-style or ArcFace-style crop it holds the eyes, nose, mouth and inner cheeks and little
background or hair.

Pose is rough by design; five points cannot give more. The model: the eye centres and mouth
corners lie in one plane, the nose tip stands NOSE_DEPTH eye distances in front of it, and
the camera is far away (orthographic).

  roll   angle of the eye line, image-left eye to image-right eye. Positive: the face is
         turned clockwise in the image (its image-right eye lower).
  yaw    after undoing roll, the nose tip's horizontal offset from the midline (the line
         through the eye midpoint and the mouth midpoint, at the nose's height), over the eye
         distance: offset / d = NOSE_DEPTH * tan(yaw). Positive: the nose points to the image's
         right (the person looks towards the image's right, i.e. turns to their own left).
  pitch  the nose tip's height between the eye line (0) and the mouth line (1) against its
         height on a frontal face, r0: r = r0 - NOSE_DEPTH / k * tan(pitch), with k the
         frontal eye-to-mouth distance over the eye distance. Positive: chin up (the nose tip
         rises towards the eyes).

r0 and k come from the ArcFace five-point alignment template (a mean frontal layout);
NOSE_DEPTH from the generic six-point head model common in head-pose tutorials (the nose tip
about 130 units in front of eye and mouth corners whose eye centres are about 300 apart).
Both estimates are exact for that model under pure yaw or pure pitch, and their errors grow
with combined turns, perspective and faces that differ from the mean. Expressions move the
mouth corners: a broad smile raises them and reads as chin down (skimage's smiling, frontal
astronaut gets pitch -27 from MTCNN's landmarks, yaw 3).

Bad pixels do not raise: an empty image gives NaN for the pixel measures, non-finite or
degenerate landmarks give NaN angles (and NaN eye distance where the eyes are not finite),
and a NaN measure fails its check in `evaluate` (nothing can be verified about it). A
constant image has blur 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Final

import cv2
import numpy as np
from numpy.typing import ArrayLike

from faceatlas.landmarks import as_landmarks

__all__ = [
    "CHECKS",
    "NOSE_DEPTH",
    "Quality",
    "QualityThresholds",
    "evaluate",
    "head_pose",
    "measure",
]

# Every name `evaluate` can return, in the order it reports them.
CHECKS: Final = (
    "small",
    "low_confidence",
    "blurry",
    "dark",
    "shadows",
    "greyscale",
    "yaw",
    "pitch",
    "roll",
)

# ArcFace (InsightFace) 112 px template: eyes, nose tip, mouth corners of a mean frontal face.
_TEMPLATE: Final = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
NOSE_DEPTH: Final = 0.43  # nose tip in front of the eye/mouth plane, in eye distances

_BLUR_SIZE: Final = 128
_CENTRAL: Final = 0.5  # side of the central region, as a share of the crop's side
_DARK_LEVEL: Final = 16.0  # luma or channel value, 0-255
_LUMA: Final = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Mouth closer to the eye line than this (in eye distances) leaves no midline to speak of.
_MIN_MOUTH_DROP: Final = 0.1


@dataclass(frozen=True, slots=True)
class QualityThresholds:
    """Limits for `evaluate`. A measure equal to its limit passes."""

    min_eye_distance: float = 20.0
    min_confidence: float = 0.9
    # Measured on 128 px FFHQ-framed crops (align.align_ffhq, MTCNN landmarks) of skimage's
    # astronaut and matplotlib's Grace Hopper photo: sharp they score about 550 and 1,870,
    # still 200 and 660 when shrunk to 20 px between the eyes and saved as JPEG; a Gaussian
    # blur of sigma 1 px brings them to 75 and 200, 1.5 px to 29 and 63, 2 px to 14 and 26.
    # So 30 rejects faces blurred past recognising detail and keeps small sharp ones. The
    # score grows with contrast squared: a flat, low-contrast face scores lower.
    min_blur: float = 30.0
    min_luminance: float = 40.0
    max_dark_share: float = 0.3
    min_saturation: float = 0.08
    max_yaw: float = 30.0
    max_pitch: float = 30.0
    # Alignment removes roll, so a tilted head is no problem as such; a large roll rather
    # hints at wrong landmarks (a face on its side, eyes swapped).
    max_roll: float = 45.0
    frontal_only: bool = True  # False: the yaw, pitch and roll checks are skipped

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "frontal_only":
                if not isinstance(value, bool):
                    raise ValueError(f"frontal_only must be a bool, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value!r}")
            # Detector scores are on the detector's own scale (dlib's margin can be negative).
            if value < 0 and f.name != "min_confidence":
                raise ValueError(f"{f.name} must be >= 0, got {value!r}")
        for name in ("max_dark_share", "min_saturation"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Quality:
    """The measures of one face (see the module docstring); NaN where not measurable."""

    eye_distance: float
    confidence: float
    blur: float
    luminance: float
    dark_share: float
    saturation: float
    yaw: float
    pitch: float
    roll: float


def measure(aligned_rgb: np.ndarray, lm5_in_photo: ArrayLike, confidence: float) -> Quality:
    """Measure one face: its aligned crop (uint8 RGB, H x W x 3), its five landmarks in the
    original photo, and the detector's score (passed through unchecked: MTCNN's is a
    probability, dlib's a margin; NaN, for a detector without one, fails its check).

    A wrong type or shape raises ValueError.
    """
    if not isinstance(aligned_rgb, np.ndarray) or aligned_rgb.dtype != np.uint8:
        raise ValueError(
            f"aligned_rgb must be a uint8 numpy array, got {type(aligned_rgb).__name__}"
        )
    if aligned_rgb.ndim != 3 or aligned_rgb.shape[2] != 3:
        raise ValueError(f"aligned_rgb must be H x W x 3 RGB, got shape {aligned_rgb.shape}")
    points = as_landmarks(lm5_in_photo)
    try:
        conf = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"confidence must be a number, got {confidence!r}") from None

    eye_distance = float(np.hypot(*(points[1] - points[0])))
    if not math.isfinite(eye_distance):
        eye_distance = math.nan  # an infinite distance must not pass as a large face
    yaw, pitch, roll = head_pose(points)
    if aligned_rgb.size == 0:
        nan = math.nan
        return Quality(eye_distance, conf, nan, nan, nan, nan, yaw, pitch, roll)

    luma = aligned_rgb.astype(np.float32) @ _LUMA
    centre = _central(aligned_rgb)
    centre_luma = centre.astype(np.float32) @ _LUMA
    return Quality(
        eye_distance=eye_distance,
        confidence=conf,
        blur=_blur(luma),
        luminance=float(centre_luma.mean()),
        dark_share=float(np.mean(centre_luma <= _DARK_LEVEL)),
        saturation=_saturation(centre),
        yaw=yaw,
        pitch=pitch,
        roll=roll,
    )


def evaluate(q: Quality, t: QualityThresholds) -> tuple[bool, list[str]]:
    """(passed, failed checks in CHECKS order). A NaN measure fails its check."""
    # Written as "not (value within limit)" so that NaN, which compares False, fails.
    failed = {
        "small": not q.eye_distance >= t.min_eye_distance,
        "low_confidence": not q.confidence >= t.min_confidence,
        "blurry": not q.blur >= t.min_blur,
        "dark": not q.luminance >= t.min_luminance,
        "shadows": not q.dark_share <= t.max_dark_share,
        "greyscale": not q.saturation >= t.min_saturation,
    }
    if t.frontal_only:
        failed["yaw"] = not abs(q.yaw) <= t.max_yaw
        failed["pitch"] = not abs(q.pitch) <= t.max_pitch
        failed["roll"] = not abs(q.roll) <= t.max_roll
    names = [name for name in CHECKS if failed.get(name, False)]
    return not names, names


def head_pose(lm5: ArrayLike) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from five landmarks; see the module docstring.

    Non-finite landmarks or coincident eyes give three NaNs; a mouth not below the eye line
    (after undoing roll) gives NaN yaw and pitch. A wrong shape raises ValueError.
    """
    points = as_landmarks(lm5)
    nan = math.nan
    if not np.all(np.isfinite(points)):
        return nan, nan, nan
    left_eye, right_eye, nose, left_mouth, right_mouth = points
    eye_vec = right_eye - left_eye
    d = float(np.hypot(*eye_vec))
    if d < 1e-6:
        return nan, nan, nan
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))

    # The face's own frame: x along the eye line, y perpendicular towards the mouth, in units
    # of the eye distance, origin at the eye midpoint.
    u = eye_vec / d
    v = np.array([-u[1], u[0]])
    origin = (left_eye + right_eye) / 2
    mouth = (left_mouth + right_mouth) / 2 - origin
    mouth_x, mouth_y = float(mouth @ u) / d, float(mouth @ v) / d
    nose_x, nose_y = float((nose - origin) @ u) / d, float((nose - origin) @ v) / d
    if mouth_y < _MIN_MOUTH_DROP:
        return nan, nan, roll
    height = nose_y / mouth_y  # 0 on the eye line, 1 on the mouth line
    offset = nose_x - height * mouth_x
    yaw = math.degrees(math.atan(offset / NOSE_DEPTH))
    pitch = math.degrees(math.atan((_FRONTAL_NOSE_HEIGHT - height) * _MOUTH_DROP / NOSE_DEPTH))
    return yaw, pitch, roll


def _template_ratios() -> tuple[float, float]:
    """(nose height between eye and mouth lines, eye-to-mouth over eye distance), frontal."""
    eyes = (_TEMPLATE[0] + _TEMPLATE[1]) / 2
    mouth = (_TEMPLATE[3] + _TEMPLATE[4]) / 2
    drop = mouth[1] - eyes[1]
    return (_TEMPLATE[2, 1] - eyes[1]) / drop, drop / (_TEMPLATE[1, 0] - _TEMPLATE[0, 0])


_FRONTAL_NOSE_HEIGHT, _MOUTH_DROP = _template_ratios()  # about 0.495 and 1.155


def _central(image: np.ndarray) -> np.ndarray:
    """The middle _CENTRAL share of the image in each direction, at least one pixel."""
    height, width = image.shape[:2]
    margin_y = int(height * (1 - _CENTRAL) / 2)
    margin_x = int(width * (1 - _CENTRAL) / 2)
    rows = slice(margin_y, max(height - margin_y, margin_y + 1))
    cols = slice(margin_x, max(width - margin_x, margin_x + 1))
    return image[rows, cols]


def _blur(luma: np.ndarray) -> float:
    height, width = luma.shape
    scale = _BLUR_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Area averaging when shrinking (no aliasing to pass for detail); bilinear when enlarging,
    # where area interpolation would copy pixels into blocks whose edges read as sharpness.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    grey = cv2.resize(luma, size, interpolation=interpolation)
    return float(cv2.Laplacian(grey, cv2.CV_32F).astype(np.float64).var())


def _saturation(pixels: np.ndarray) -> float:
    flat = pixels.reshape(-1, 3).astype(np.float32)
    top = flat.max(axis=1)
    lit = top > _DARK_LEVEL
    if not np.any(lit):
        return math.nan
    return float(np.mean((top[lit] - flat[lit].min(axis=1)) / top[lit]))
