"""Benchmark: the faces stage's core (detect + align + attributes) per detector, per core.

Prints figures, never passes or fails on them:
- the test set: N photos of 500x375 (JPEG, quality 90), each with one real-looking face
  pasted at a random size (60-200 px wide), place and tilt on a smooth noisy background,
  and how many of them the default detector (MTCNN, with the stage's default policy)
  finds exactly one face in, at the planted place;
- for each detector (mtcnn, haar with MTCNN landmarks, haar with dlib landmarks, dlib) and
  for MTCNN with the costlier alignments (ffhq 256, ffhq 1024, template at 1024), in this
  process on one thread: photos/s and faces/s per core (CPU time), photos/s of wall time,
  the model load time, and the share of each step of `faces.process_photo` (decode, detect,
  align, quality, attributes, encode) in its wall time;
- a CPU floor before each run and after the last: one core decoding one of the photos to
  RGB (the stage's first step), photos/s (this host's speed drifts within minutes);
- optionally the whole stage through Spark local[N] (`spark_faces.run_faces`, default
  settings), once cold (new Python workers load the models) and once more on the same
  session: photos/s per core for the whole call and for its work phase, and step shares.

The faces come from packages, so nothing is downloaded: `skimage.data.astronaut()`,
matplotlib's `grace_hopper.jpg` (both public domain) and 64x64 samples of the DCGAN bundled
with gan-face-generate, upscaled 4x. The photos are written to bench-data/faces/photos/ for
a look.

    python bench/bench_faces.py [--photos 60] [--seed 1] [--configs mtcnn,dlib] [--no-spark]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / "bench-data" / "faces"
H, W = 375, 500  # the YFCC100M mirror's photos: longest edge 500 px
FACE_WIDTH = (60.0, 200.0)  # planted face box width, pixels
MAX_TILT = 10.0  # degrees either way
JPEG_QUALITY = 90
DCGAN_UPSCALE = 4
WARMUP = 3

# name -> (DetectorOptions arguments, FaceOptions arguments)
CONFIGS: dict[str, tuple[dict, dict]] = {
    "mtcnn": ({"detector": "mtcnn"}, {}),
    "haar+mtcnn": ({"detector": "haar"}, {}),
    "haar+dlib": ({"detector": "haar", "haar_landmarks": "dlib"}, {}),
    "dlib": ({"detector": "dlib"}, {}),
    "mtcnn ffhq 256": ({"detector": "mtcnn"}, {"align": "ffhq", "size": 256}),
    "mtcnn ffhq 1024": ({"detector": "mtcnn"}, {"align": "ffhq", "size": 1024}),
    "mtcnn template 1024": ({"detector": "mtcnn"}, {"size": 1024}),
}


# -- the photos ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """A face picture to paste: its pixels, the face's box in them, and a soft paste mask."""

    name: str
    rgb: np.ndarray
    box: tuple[float, float, float, float]  # x, y, width, height (MTCNN's box)
    mask: np.ndarray  # float32 in [0, 1], same height and width as rgb


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _locate(rgb: np.ndarray, detector) -> tuple[float, float, float, float] | None:
    """The box of the one confident face in `rgb`, or None. The picture is padded with grey
    first: MTCNN misses a face that fills the whole frame (the DCGAN's samples)."""
    h, w = rgb.shape[:2]
    py, px = h // 2, w // 2
    canvas = np.full((h + 2 * py, w + 2 * px, 3), 128, np.uint8)
    canvas[py : py + h, px : px + w] = rgb
    found = [f for f in detector.detect(canvas) if f.confidence >= 0.9]
    if len(found) != 1:
        return None
    x, y, bw, bh = found[0].box
    return (x - px, y - py, bw, bh)


def _ellipse_mask(shape: tuple[int, int], box: tuple[float, ...], grow: tuple[float, float],
                  feather: float) -> np.ndarray:  # fmt: skip
    """An ellipse around the box (half-axes `grow` x the box's size), blurred at the edge and
    zero at the picture's border, so that no hard edge of the source shows."""
    h, w = shape
    x, y, bw, bh = box
    mask = np.zeros((h, w), np.float32)
    centre = (round(x + bw / 2), round(y + bh / 2))
    axes = (round(bw * grow[0]), round(bh * grow[1]))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    edge = max(2, int(feather * min(bw, bh)))
    mask[:edge] = mask[-edge:] = 0
    mask[:, :edge] = mask[:, -edge:] = 0
    return cv2.GaussianBlur(mask, (0, 0), edge / 2)


def load_sources(n_dcgan: int, seed: int) -> tuple[list[Source], list[Source], int]:
    """The two package photos, and `n_dcgan` DCGAN faces MTCNN finds on their own (with the
    number of samples it did not)."""
    import matplotlib.cbook
    from skimage import data

    from faceatlas.detect import DetectorOptions, get_detector
    from faceatlas.template_measure import dcgan64_sampler

    det = get_detector(DetectorOptions())
    grace = cv2.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    photos = []
    for name, rgb in (("astronaut", data.astronaut()),
                      ("grace_hopper", cv2.cvtColor(grace, cv2.COLOR_BGR2RGB))):  # fmt: skip
        box = _locate(rgb, det)
        if box is None:
            raise RuntimeError(f"MTCNN finds no single face in {name}")
        # Face and hair, not the shoulders: the ellipse is taller than wide.
        photos.append(Source(name, rgb, box, _ellipse_mask(rgb.shape[:2], box, (0.8, 0.9),
                                                           0.15)))  # fmt: skip
    dcgan: list[Source] = []
    rejected = 0
    sample = dcgan64_sampler(seed)
    while len(dcgan) < n_dcgan:
        for face in sample(max(8, n_dcgan - len(dcgan) + 4)):
            size = face.shape[0] * DCGAN_UPSCALE
            big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
            box = _locate(big, det)
            if box is None:
                rejected += 1
                continue
            # The sample is a tight crop: keep nearly all of it, fade only its border.
            mask = _ellipse_mask(big.shape[:2], (0, 0, size, size), (0.62, 0.62), 0.06)
            dcgan.append(Source(f"dcgan{len(dcgan)}", big, box, mask))
            if len(dcgan) == n_dcgan:
                break
    return photos, dcgan, rejected


def _background(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    base = rng.uniform(40, 215, 3)
    slope = rng.uniform(-0.25, 0.25, (3, 2))
    img = np.stack([base[c] + slope[c, 0] * (x - W / 2) + slope[c, 1] * (y - H / 2)
                    for c in range(3)], axis=-1)  # fmt: skip
    # Blotches at a larger scale than the pixel noise, like an out-of-focus scene: mostly
    # light and shade, a little colour.
    coarse = rng.normal(0, 14, (6, 8, 1)) + rng.normal(0, 4, (6, 8, 3))
    blotch = cv2.resize(coarse.astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC)
    return img + blotch + rng.normal(0, 5, img.shape).astype(np.float32)


def compose(i: int, src: Source, seed: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """Photo `i`: `src`'s face scaled, tilted and placed at random; (RGB, planted box)."""
    rng = np.random.default_rng([seed, i])
    rgb, mask, (bx, by, bw, bh) = src.rgb, src.mask, src.box
    if rng.random() < 0.5:
        rgb, mask, bx = rgb[:, ::-1], mask[:, ::-1], rgb.shape[1] - bx - bw
    s = rng.uniform(*FACE_WIDTH) / bw
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(np.ascontiguousarray(rgb), None, fx=s, fy=s, interpolation=interp)
    mask = cv2.resize(np.ascontiguousarray(mask), None, fx=s, fy=s, interpolation=interp)
    fw, fh = bw * s, bh * s
    centre = ((bx + bw / 2) * s, (by + bh / 2) * s)
    margin = 4.0
    dst = (rng.uniform(fw / 2 + margin, W - fw / 2 - margin),
           rng.uniform(fh / 2 + margin, H - fh / 2 - margin))  # fmt: skip
    m = cv2.getRotationMatrix2D(centre, rng.uniform(-MAX_TILT, MAX_TILT), 1.0)
    m[:, 2] += (dst[0] - centre[0], dst[1] - centre[1])
    face = cv2.warpAffine(rgb, m, (W, H), flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.warpAffine(mask, m, (W, H), flags=cv2.INTER_LINEAR)[..., None]
    out = _background(rng) * (1 - alpha) + face * alpha
    out += rng.normal(0, 2, out.shape)  # sensor noise over the face too
    box = (dst[0] - fw / 2, dst[1] - fh / 2, fw, fh)
    return np.clip(out, 0, 255).astype(np.uint8), box


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])  # fmt: skip
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def make_photos(n: int, seed: int) -> tuple[list[bytes], list[tuple[float, ...]], list[str]]:
    """N JPEGs: every fourth face is the astronaut, every fourth Grace Hopper, the rest
    DCGAN samples (each used once while they last)."""
    n_dcgan = max(1, n - 2 * ((n + 3) // 4))
    photos, dcgan, rejected = load_sources(n_dcgan, seed)
    print(f"sources: astronaut, grace_hopper, {len(dcgan)} DCGAN samples ({rejected} more "
          "sampled but not found by MTCNN on their own, so not used)")  # fmt: skip
    folder = WORK / "photos"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    blobs, boxes, names, k = [], [], [], 0
    for i in range(n):
        if i % 4 < 2:
            src = photos[i % 4]
        else:
            src, k = dcgan[k % len(dcgan)], k + 1
        rgb, box = compose(i, src, seed)
        blob = jpeg(rgb)
        (folder / f"{i:04d}_{src.name}.jpg").write_bytes(blob)
        blobs.append(blob)
        boxes.append(box)
        names.append(src.name)
    print(f"{n} photos of {W}x{H}, mean {sum(map(len, blobs)) / n / 1024:.0f} KiB, in {folder}")
    return blobs, boxes, names


def verify(blobs: list[bytes], boxes: list[tuple[float, ...]], names: list[str]) -> Counter:
    """Per photo: does the default detector, with the stage's default policy, keep exactly
    one face, overlapping the planted one?"""
    from faceatlas.detect import get_detector, select_faces
    from faceatlas.faces import FaceOptions, decode

    opts = FaceOptions()
    det = get_detector(opts.detector)
    verdicts: Counter = Counter()
    for blob, box, name in zip(blobs, boxes, names, strict=True):
        kept, _ = select_faces(det.detect(decode(blob)), opts.policy, opts.min_eye_distance,
                               opts.min_confidence)  # fmt: skip
        if not kept:
            verdict = "none"
        elif len(kept) > 1:
            verdict = "several"
        elif _iou(kept[0].box, box) < 0.3:
            verdict = "elsewhere"
        else:
            verdict = "one"
        verdicts[verdict] += 1
        if verdict != "one":
            verdicts[f"{verdict}:{'dcgan' if name.startswith('dcgan') else name}"] += 1
    return verdicts


# -- the CPU floor ------------------------------------------------------------------------
def cpu_floor(blob: bytes, seconds: float = 1.0) -> float:
    """Photos/s of one core decoding one of the photos to RGB, as `faces.decode` does."""
    from faceatlas.faces import decode

    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        decode(blob)
        n += 1
    return n / (time.process_time() - t0)


# -- one process, one thread --------------------------------------------------------------
def run_config(name: str, blobs: list[bytes]) -> dict:
    from faceatlas import faces
    from faceatlas.detect import DetectorOptions

    det_kw, face_kw = CONFIGS[name]
    opts = faces.FaceOptions(detector=DetectorOptions(**det_kw), **face_kw)
    t0 = time.perf_counter()
    models = faces.get_models(opts)
    load = time.perf_counter() - t0

    def row(i: int) -> dict:
        return {"photo_id": i, "image": blobs[i], "country": "NL", "continent": "EU"}

    for i in range(min(WARMUP, len(blobs))):
        faces.process_photo(row(i), models, "bench")
    steps: Counter = Counter()
    statuses: Counter = Counter()
    n_faces = one_face = 0
    in_photo = 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(len(blobs)):
        r = faces.process_photo(row(i), models, "bench")
        steps.update(r.seconds)
        statuses[r.outcome["status"]] += 1
        n_faces += len(r.faces)
        one_face += len(r.faces) == 1
        in_photo += r.outcome["seconds"]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = len(blobs)
    share = {s: steps[s] / in_photo for s in faces.STEPS}
    share["other"] = max(0.0, 1 - sum(share.values()))
    return {"config": name, "photos": n, "faces": n_faces, "one_face": one_face,
            "statuses": dict(statuses), "load_s": load, "cpu_s": cpu, "wall_s": wall,
            "photos_per_s_core": n / cpu, "faces_per_s_core": n_faces / cpu,
            "photos_per_s_wall": n / wall, "ms_per_photo_cpu": 1000 * cpu / n,
            "share": share}  # fmt: skip


# -- Spark ------------------------------------------------------------------------------
def write_images(root: Path, blobs: list[bytes]) -> None:
    import pyarrow as pa

    from faceatlas import schemas
    from faceatlas.partwrite import write_partitioned

    shutil.rmtree(root, ignore_errors=True)
    places = [("NL", "EU"), ("DE", "EU"), ("US", "NA"), ("BR", "SA"), ("JP", "AS")]
    n = len(blobs)
    cols = {f.name: [None] * n for f in schemas.IMAGES}
    cols.update(photo_id=list(range(1, n + 1)), status=["ok"] * n, image=blobs,
                image_bytes=[len(b) for b in blobs], format=["jpeg"] * n, width=[W] * n,
                height=[H] * n, country=[places[i % 5][0] for i in range(n)],
                continent=[places[i % 5][1] for i in range(n)])  # fmt: skip
    write_partitioned(pa.table(cols, schema=schemas.IMAGES), str(root / "images"),
                      schemas.IMAGES_PARTITIONS, "part-bench")  # fmt: skip


def run_spark(blobs: list[bytes], cores: int, runs: int) -> list[dict]:
    from faceatlas.spark_faces import FacesJob, run_faces
    from faceatlas.spark_session import spark_session

    t0 = time.perf_counter()
    spark = spark_session("bench-faces", f"local[{cores}]")
    print(f"Spark local[{cores}] session started in {time.perf_counter() - t0:.1f} s")
    out = []
    try:
        for run in range(runs):
            root = WORK / "spark-root"
            write_images(root, blobs)
            t0 = time.perf_counter()
            stats = run_faces(spark, str(root), FacesJob())
            wall = time.perf_counter() - t0
            n = stats["processed"]
            label = "cold" if run == 0 else "warm"
            out.append({"config": f"spark local[{cores}], {label}", "photos": n,
                        "faces": stats["faces"], "wall_s": wall,
                        "work_s": stats["work_seconds"], "cores": cores,
                        "photos_per_s_core": n / wall / cores,
                        "ms_per_photo": 1000 * sum(stats["step_seconds"].values()) / max(n, 1),
                        "work_photos_per_s_core": n / stats["work_seconds"] / cores,
                        "share": dict(stats["step_share"]),
                        "statuses": stats["photos"]})  # fmt: skip
            # How much of the work phase's core-seconds went into process_photo itself
            # (the rest: worker start, model loading, Arrow transfer, writing, idle cores).
            busy = sum(stats["step_seconds"].values()) / (stats["work_seconds"] * cores)
            print(f"  spark run {run + 1} ({label}): {n} photos, {stats['faces']} faces in "
                  f"{wall:.1f} s (work phase {stats['work_seconds']:.1f} s, of which "
                  f"{100 * busy:.0f}% of core time in process_photo)")  # fmt: skip
    finally:
        spark.stop()
    return out


# -- main ---------------------------------------------------------------------------------
def _table(rows: list[dict], floors: list[float]) -> None:
    from faceatlas.faces import STEPS

    steps = (*STEPS, "other")
    head = (f"{'run':<26} {'faces':>7} {'load s':>6} {'ph/s/core':>9} {'faces/s/c':>9} "
            f"{'ph/s wall':>9} {'ms/photo':>8} " + " ".join(f"{s[:6]:>6}" for s in steps)
            + f" {'floor':>11}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        share = " ".join(f"{100 * r['share'][s]:>5.1f}%" if s in r["share"] else f"{'-':>6}"
                         for s in steps)  # fmt: skip
        faces = f"{r['faces']}/{r['photos']}"
        if "cpu_s" in r:
            i = r["floor_index"]
            print(f"{r['config']:<26} {faces:>7} {r['load_s']:>6.1f} "
                  f"{r['photos_per_s_core']:>9.2f} {r['faces_per_s_core']:>9.2f} "
                  f"{r['photos_per_s_wall']:>9.2f} {r['ms_per_photo_cpu']:>8.0f} {share} "
                  f"{floors[i]:>5.0f}/{floors[i + 1]:<5.0f}")  # fmt: skip
        else:
            print(f"{r['config']:<26} {faces:>7} {'-':>6} {r['photos_per_s_core']:>9.2f} "
                  f"{r['faces'] / r['wall_s'] / r['cores']:>9.2f} "
                  f"{r['photos'] / r['wall_s']:>9.2f} {r['ms_per_photo']:>8.0f} {share} "
                  f"{'-':>11}")  # fmt: skip
            print(f"{'  work phase only':<26} {'':>7} {'':>6} "
                  f"{r['work_photos_per_s_core']:>9.2f} "
                  f"{r['faces'] / r['work_s'] / r['cores']:>9.2f} "
                  f"{r['photos'] / r['work_s']:>9.2f}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", type=int, default=60, help="photos in the set (default 60)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated, of: {', '.join(CONFIGS)} (default all)")  # fmt: skip
    ap.add_argument("--spark", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the whole stage through Spark (default on)")  # fmt: skip
    ap.add_argument("--cores", type=int, default=2, help="Spark local[N] (default 2)")
    ap.add_argument("--spark-runs", type=int, default=2, help="Spark runs (default 2)")
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    if args.photos < 1 or args.cores < 1 or args.spark_runs < 1:
        ap.error("--photos, --cores and --spark-runs must be >= 1")

    # One thread: these figures are per core. The attribute models' onnxruntime sessions
    # are single-threaded already; dlib is too.
    cv2.setNumThreads(1)
    print(f"{os.cpu_count()} cores on this machine; in-process runs use one thread")
    t0 = time.perf_counter()
    blobs, boxes, names = make_photos(args.photos, args.seed)
    verdicts = verify(blobs, boxes, names)
    print(f"built and checked in {time.perf_counter() - t0:.1f} s; default detector (mtcnn) "
          f"keeps exactly one face, at the planted place, in {verdicts['one']} of "
          f"{args.photos} photos")  # fmt: skip
    misses = {k: v for k, v in verdicts.items() if ":" in k}
    if misses:
        print(f"  the others: {json.dumps(misses)}")

    from faceatlas.detect import DetectorError

    floors = [cpu_floor(blobs[0])]
    rows, skipped = [], []
    for name in configs:
        try:
            r = run_config(name, blobs)
        except DetectorError as e:
            skipped.append(f"{name}: {e}")
            print(f"  {name}: skipped ({e})")
            continue
        r["floor_index"] = len(floors) - 1
        floors.append(cpu_floor(blobs[0]))
        rows.append(r)
        print(f"  {name}: {r['faces']} faces in {r['photos']} photos, "
              f"{r['photos_per_s_core']:.2f} photos/s per core ({r['cpu_s']:.1f} s CPU, "
              f"{r['wall_s']:.1f} s wall)")  # fmt: skip
    if args.spark:
        rows += run_spark(blobs, args.cores, args.spark_runs)

    print()
    _table(rows, floors)
    print(
        f"\n{os.cpu_count()} cores. ph/s/core: photos / CPU seconds of this process "
        "(Spark: / wall seconds / cores); faces = faces kept / photos; ms/photo: CPU ms "
        "(Spark: wall ms in process_photo's steps, in the workers). load s: building the "
        "models; those built earlier in the process (the check's MTCNN, the attribute "
        "models) are reused. Step shares: of the time in process_photo (other = outside "
        "its timed steps); Spark's are of the steps' sum. floor = one core decoding a "
        "photo to RGB, photos/s, before/after the run."
    )
    if skipped:
        print("skipped: " + "; ".join(skipped))
    result = {"cores": os.cpu_count(), "photos": args.photos, "seed": args.seed,
              "verified_one_face": verdicts["one"], "verdicts": dict(verdicts),
              "floors": floors, "runs": rows}  # fmt: skip
    (WORK / "results.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
