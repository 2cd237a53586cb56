"""The faces stage's core: one photo's bytes in, its face rows and one outcome row out.

Per photo: decode, detect, apply the per-photo policy, then per kept face align it for the
generator, measure its quality on a fixed-size FFHQ-style crop (so the numbers do not
depend on the generator's alignment or size), place the skin regions and compute the ITA,
and (batched over the photo's faces) predict gender and age, and ethnicity when the user
supplied a model. Plain Python: no Spark here (spark_faces.py is the adapter).

Nothing raises for bad data: undecodable bytes become a quarantined outcome with a reason,
a face that cannot be aligned is dropped with a reason, and an unexpected exception in one
photo becomes `internal_error` with its traceback logged, so one photo never fails a task.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Final

import numpy as np

from faceatlas.detect import DetectorOptions, Face, get_detector, select_faces
from faceatlas.quality import QualityThresholds

log = logging.getLogger(__name__)

ALIGNMENTS: Final = ("ffhq", "template")
STEPS: Final = ("decode", "detect", "align", "quality", "attributes", "encode")
QUALITY_SIZE: Final = 128  # the crop every quality measure and the ITA are taken from
MAX_PIXELS: Final = 40_000_000  # as the fetch stage's default cap


@dataclass(frozen=True)
class FaceOptions:
    detector: DetectorOptions = field(default_factory=DetectorOptions)
    policy: str = "all"  # all faces, or the largest one per photo
    min_eye_distance: float = 8.0  # pixels in the photo; smaller faces are not kept
    min_confidence: float = 0.9  # applies to probabilities (mtcnn, haar+mtcnn) only
    align: str = "template"  # ffhq, or template (see `template`)
    template: str = "dcgan64"  # the bundled generator's landmark template
    size: int | None = None  # aligned face size; None: the template's, or 1024 for ffhq
    quality: QualityThresholds = field(default_factory=QualityThresholds)
    young_below: float = 30.0
    ethnicity_model: str | None = None

    def __post_init__(self) -> None:
        if self.policy not in ("all", "largest"):
            raise ValueError(f"policy must be all or largest, got {self.policy!r}")
        if self.align not in ALIGNMENTS:
            raise ValueError(f"align must be one of {ALIGNMENTS}, got {self.align!r}")
        if self.size is not None and not 8 <= self.size <= 4096:
            raise ValueError(f"size must be in 8..4096, got {self.size}")
        if self.min_eye_distance < 0 or not 0 <= self.min_confidence <= 1:
            raise ValueError("min_eye_distance must be >= 0 and min_confidence in [0, 1]")
        if not 0 < self.young_below < 120:
            raise ValueError("young_below must be an age in years")

    @property
    def alignment_name(self) -> str:
        return "ffhq" if self.align == "ffhq" else f"template:{self.template}"

    def settings(self) -> dict:
        return asdict(self)


@dataclass
class PhotoResult:
    faces: list[dict]
    outcome: dict  # a FACE_PHOTOS row
    quarantine: dict | None  # a QUARANTINE_FACES row, when the photo could not be processed
    seconds: Counter  # per step


class Models:
    """What a worker loads once: the detector, the attribute models, the template."""

    def __init__(self, opts: FaceOptions) -> None:
        from faceatlas.align import Template, load_template
        from faceatlas.attributes import EthnicityModel, get_age_gender

        self.opts = opts
        self.detector = get_detector(opts.detector)
        self.age_gender = get_age_gender()
        self.ethnicity = EthnicityModel(opts.ethnicity_model) if opts.ethnicity_model else None
        self.template = None
        if opts.align == "template":
            t = load_template(opts.template)
            if opts.size is not None and opts.size != t.size:
                # Same geometry at another size: scale about pixel centres.
                k = opts.size / t.size
                t = Template(t.name, opts.size, (t.points + 0.5) * k - 0.5, t.source)
            self.template = t
        self.size = self.template.size if self.template else (opts.size or 1024)

    def align(self, rgb: np.ndarray, lm5: np.ndarray) -> np.ndarray:
        from faceatlas.align import align_ffhq, align_template

        if self.template is None:
            # Straight to the output size unless it is large: FFHQ's 4096 px intermediate
            # only pays off for the 1024 px crops of an FFHQ network.
            ts = 4096 if self.size >= 512 else None
            return align_ffhq(rgb, lm5, output_size=self.size, transform_size=ts)
        return align_template(rgb, lm5, self.template)


_MODELS: dict[FaceOptions, Models] = {}


def get_models(opts: FaceOptions) -> Models:
    """Models per process and settings: a Spark Python worker loads them once."""
    m = _MODELS.get(opts)
    if m is None:
        m = _MODELS[opts] = Models(opts)
    return m


def decode(data: bytes) -> np.ndarray:
    """RGB uint8 pixels of a JPEG/PNG/WebP; ValueError when they cannot be had."""
    import cv2

    if not data:
        raise ValueError("empty image bytes")
    buf = np.frombuffer(data, np.uint8)
    # The fetch stage already applied EXIF orientation to what it stored; a stray
    # orientation tag must not rotate the pixels a second time.
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise ValueError("OpenCV cannot decode these bytes")
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:
        raise ValueError(f"{bgr.shape[1]}x{bgr.shape[0]} is over {MAX_PIXELS} pixels")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_png(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def process_photo(row: dict, models: Models, run_id: str) -> PhotoResult:
    """All faces of one images row (photo_id, image, user_id, country, continent)."""
    seconds: Counter = Counter()
    t_start = time.perf_counter()
    base = {"photo_id": row["photo_id"], "country": row.get("country"),
            "continent": row.get("continent"), "run_id": run_id}  # fmt: skip
    try:
        t = time.perf_counter()
        try:
            rgb = decode(row.get("image") or b"")
        except ValueError as e:
            seconds["decode"] += time.perf_counter() - t
            return _quarantined(base, "decode_error", str(e), seconds, t_start)
        seconds["decode"] += time.perf_counter() - t
        faces, outcome = _faces_of(rgb, row, models, base, seconds)
    except MemoryError:
        raise
    except Exception as e:
        log.error("faces: photo %s failed:\n%s", row.get("photo_id"), traceback.format_exc())
        return _quarantined(base, "internal_error", f"{type(e).__name__}: {e}"[:300], seconds,
                            t_start)  # fmt: skip
    outcome["seconds"] = time.perf_counter() - t_start
    return PhotoResult(faces, outcome, None, seconds)


def _quarantined(base: dict, reason: str, detail: str, seconds: Counter, t0: float):
    outcome = {**base, "status": "quarantined", "reason": reason, "detail": detail,
               "detected": 0, "faces": 0, "dropped": [],
               "seconds": time.perf_counter() - t0,
               "processed_at": datetime.now(UTC)}  # fmt: skip
    quarantine = {**base, "reason": reason, "detail": detail}
    return PhotoResult([], outcome, quarantine, seconds)


def _faces_of(rgb, row, models: Models, base: dict, seconds: Counter):
    from faceatlas.align import AlignmentError, align_ffhq
    from faceatlas.attributes import age_group, fairface_bin
    from faceatlas.quality import evaluate, measure
    from faceatlas.skintone import ita

    opts = models.opts
    t = time.perf_counter()
    found = models.detector.detect(rgb)
    probability = models.detector.name in ("mtcnn", "haar+mtcnn")
    kept, dropped = select_faces(found, opts.policy, opts.min_eye_distance,
                                 opts.min_confidence if probability else None)  # fmt: skip
    seconds["detect"] += time.perf_counter() - t

    aligned: list[tuple[Face, np.ndarray, np.ndarray]] = []
    for f in kept:
        t = time.perf_counter()
        try:
            out = models.align(rgb, f.landmarks)
            crop = align_ffhq(rgb, f.landmarks, output_size=QUALITY_SIZE, transform_size=None)
        except AlignmentError:
            dropped.append("align_failed")
            continue
        finally:
            seconds["align"] += time.perf_counter() - t
        aligned.append((f, out, crop))

    rows = []
    t = time.perf_counter()
    lms = [f.landmarks for f, _, _ in aligned]
    ag = models.age_gender.predict(rgb, lms) if lms else []
    eth = models.ethnicity.predict(rgb, lms) if (models.ethnicity and lms) else [None] * len(lms)
    seconds["attributes"] += time.perf_counter() - t
    now = datetime.now(UTC)
    for i, ((f, out, crop), a, e) in enumerate(zip(aligned, ag, eth, strict=True)):
        t = time.perf_counter()
        q = measure(crop, f.landmarks, f.confidence)
        thresholds = opts.quality
        passed, failed = evaluate(q, thresholds if probability else _no_confidence(thresholds))
        seconds["quality"] += time.perf_counter() - t
        t = time.perf_counter()
        skin = ita(rgb, f.landmarks)
        seconds["attributes"] += time.perf_counter() - t
        t = time.perf_counter()
        png = encode_png(out)
        seconds["encode"] += time.perf_counter() - t
        rows.append({
            **base,
            "face_id": f"{row['photo_id']}-{i}",
            "user_id": row.get("user_id"),
            "detector": f.detector,
            "box": [float(v) for v in f.box],
            "landmarks": [float(v) for v in f.landmarks.reshape(-1)],
            "confidence": f.confidence,
            "eye_distance": f.eye_distance,
            "blur": q.blur, "luminance": q.luminance, "dark_share": q.dark_share,
            "saturation": q.saturation, "yaw": q.yaw, "pitch": q.pitch, "roll": q.roll,
            "quality_pass": passed,
            "quality_failed": failed,
            "aligned": png,
            "aligned_size": int(out.shape[0]),
            "alignment": opts.alignment_name,
            "gender": a.gender, "p_female": a.p_female, "age": a.age,
            "age_group": age_group(a.age, opts.young_below),
            "age_bin": fairface_bin(a.age),
            "ita": skin.ita, "skin_tone": skin.category, "skin_pixels": skin.pixels,
            "ethnicity": e[0] if e else None, "ethnicity_p": e[1] if e else None,
            "processed_at": now,
        })  # fmt: skip
    outcome = {**base, "status": "faces" if rows else "no_face", "reason": None, "detail": None,
               "detected": len(found), "faces": len(rows), "dropped": dropped,
               "processed_at": now}  # fmt: skip
    return rows, outcome


def _no_confidence(t: QualityThresholds) -> QualityThresholds:
    """The thresholds without the confidence check, for detectors that give no probability."""
    from dataclasses import replace

    return replace(t, min_confidence=0.0)
