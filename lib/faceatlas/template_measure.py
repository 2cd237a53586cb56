"""Measure a generator's landmark template: where its faces put their eyes, nose and mouth.

`--align template` maps each detected face onto these mean landmark positions, so that the
aligned crop looks like the generator's own output and its inversion starts in the right
place. We draw samples from the generator's prior, show each to the detector the faces
stage uses (upscaled and pasted on a plain background, because MTCNN is not built for
64 px faces filling the frame), map the landmarks back to the generator's pixels and
average them. The result is stored as lib/faceatlas/templates/<name>.json with how it
was measured; `faceatlas measure-template` re-runs it (the template of the bundled
DCGAN was made with the defaults below).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from faceatlas.align import TEMPLATE_DIR, Template
from faceatlas.detect import DetectorOptions, make_detector, select_faces

log = logging.getLogger(__name__)

UPSCALE = 4
CANVAS = (600, 800)  # height, width of the plain background the face is pasted on


def dcgan64_sampler(seed: int) -> Callable[[int], np.ndarray]:
    """Samples of the bundled DCGAN (z ~ N(0, 1), 100-d), uint8 RGB 64x64."""
    import torch

    from faceatlas.gan.dcgan import load_bundled

    net = load_bundled()
    gen = torch.Generator().manual_seed(seed)

    def sample(n: int) -> np.ndarray:
        with torch.no_grad():
            z = torch.randn(n, 100, generator=gen)
            img = net(z)  # [-1, 1], NCHW
        out = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return out.permute(0, 2, 3, 1).numpy()

    return sample


SAMPLERS: dict[str, Callable[[int], Callable[[int], np.ndarray]]] = {"dcgan64": dcgan64_sampler}


def landmarks_of(faces: np.ndarray, detector, min_confidence: float = 0.9) -> np.ndarray:
    """(N, 5, 2) landmarks in the faces' own pixels, NaN where no face was found."""
    import cv2

    n, h, w = faces.shape[:3]
    out = np.full((n, 5, 2), np.nan)
    big_h, big_w = h * UPSCALE, w * UPSCALE
    y0, x0 = (CANVAS[0] - big_h) // 2, (CANVAS[1] - big_w) // 2
    for i, face in enumerate(faces):
        canvas = np.full((*CANVAS, 3), 128, np.uint8)
        canvas[y0 : y0 + big_h, x0 : x0 + big_w] = cv2.resize(
            face, (big_w, big_h), interpolation=cv2.INTER_CUBIC
        )
        kept, _ = select_faces(detector.detect(canvas), "largest", 8.0, min_confidence)
        if kept:
            # Back to the small image's pixel centres: x_small = (x_big + 0.5) / k - 0.5.
            lm = kept[0].landmarks - (x0, y0)
            out[i] = (lm + 0.5) / UPSCALE - 0.5
    return out


def measure(name: str, samples: int = 400, seed: int = 0, batch: int = 50) -> dict:
    """The template of a bundled generator, with the statistics of the measurement."""
    if name not in SAMPLERS:
        raise ValueError(f"no sampler for {name!r}; known: {', '.join(SAMPLERS)}")
    sample = SAMPLERS[name](seed)
    detector = make_detector(DetectorOptions(min_face_size=40))
    found = []
    size = 0
    for start in range(0, samples, batch):
        faces = sample(min(batch, samples - start))
        size = faces.shape[1]
        found.append(landmarks_of(faces, detector))
        log.warning("template %s: %d/%d samples measured", name, start + len(faces), samples)
    lms = np.concatenate(found)
    ok = np.isfinite(lms).all(axis=(1, 2))
    if ok.sum() < max(10, samples // 4):
        raise RuntimeError(f"the detector found only {ok.sum()} of {samples} faces")
    good = lms[ok]
    # Drop the worst 5 % by distance to the median shape: a few samples are half-formed
    # faces whose landmarks would pull the mean.
    med = np.median(good, axis=0)
    dist = np.sqrt(((good - med) ** 2).sum(axis=2)).mean(axis=1)
    keep = dist <= np.quantile(dist, 0.95)
    points = good[keep].mean(axis=0)
    source = (
        f"faceatlas measure-template {name} --samples {samples} --seed {seed}: mean MTCNN "
        f"landmarks of {int(keep.sum())} of {samples} samples (z ~ N(0, 1); {int(ok.sum())} "
        f"detected at {UPSCALE}x on a plain {CANVAS[1]}x{CANVAS[0]} background; the 5 % "
        "farthest from the median shape left out)"
    )
    template = Template(name, size, points, source)
    return {
        **template.to_json(),
        "std": good[keep].std(axis=0).tolist(),
        "detected": int(ok.sum()),
        "samples": samples,
    }


def write(result: dict, path: Path | None = None) -> Path:
    path = path or TEMPLATE_DIR / f"{result['name']}.json"
    data = {**result, "points": [[round(v, 4) for v in p] for p in result["points"]],
            "std": [[round(v, 4) for v in p] for p in result["std"]]}  # fmt: skip
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path
