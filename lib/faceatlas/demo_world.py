"""The demo world: a synthetic collection whose true faces are known, and its score.

For each of 24 countries on six continents the bundled generator has a "true face", the
image of a centre latent drawn from the country code (`choose_centres`: the first draw
whose face the detector finds, roughly frontal, and unlike the countries before it, so
that every country can have faces and the score asks a fair question). Each
country's photos show people drawn around that centre (centre + 0.6 x noise), rendered,
upscaled and pasted on a textured background; some photos show no face, some two, some
are broken files. The metadata are YFCC100M lines placed at populated places of each
country. `make demo` serves the photos on 127.0.0.1, runs the whole pipeline and scores
it: is each country's characteristic face closer to its own true face than to any other
country's?
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Final

import numpy as np

from faceatlas import demo, synth

COUNTRIES: Final = tuple(
    [
        "NL",
        "DE",
        "FR",
        "ES",
        "IT",
        "PL",
        "SE",
        "GR",
        "US",
        "CA",
        "MX",
        "BR",
        "AR",
        "PE",
        "NG",
        "KE",
        "ZA",
        "EG",
        "IN",
        "CN",
        "JP",
        "ID",
        "TR",
        "AU",
    ]
)
HOSTILE_TITLE: Final = "<img src=x onerror=alert(1)>"


def _rng(*parts: object) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big"))


MIN_TRUE_DISTANCE: Final = 0.03  # mean squared pixel difference between two true faces


def choose_centres(countries: tuple[str, ...], tries: int = 200) -> dict[str, np.ndarray]:
    """A centre latent per country, drawn in a sequence seeded by the country code: the
    first whose face MTCNN finds (probability >= 0.95) with |yaw| and |pitch| under 15
    degrees, and whose image differs from every earlier country's by at least
    MIN_TRUE_DISTANCE."""
    from faceatlas.detect import DetectorOptions, make_detector
    from faceatlas.quality import head_pose
    from faceatlas.template_measure import landmarks_of

    detector = make_detector(DetectorOptions(min_face_size=40))
    chosen: dict[str, np.ndarray] = {}
    chosen_faces: list[np.ndarray] = []
    for cc in countries:
        for k in range(tries):
            z = demo.country_centre(cc) if k == 0 else demo.country_centre(f"{cc}#{k}")
            face_u8 = demo._faces_for([z])
            lm = landmarks_of(face_u8, detector, min_confidence=0.95)[0]
            if not np.isfinite(lm).all():
                continue
            yaw, pitch, _ = head_pose(lm)
            face = face_u8[0].astype(np.float32) / 255
            if abs(yaw) > 15 or abs(pitch) > 15:
                continue
            if any(((face - f) ** 2).mean() < MIN_TRUE_DISTANCE for f in chosen_faces):
                continue
            chosen[cc] = z
            chosen_faces.append(face)
            break
        else:
            raise RuntimeError(f"no usable true face for {cc} in {tries} draws")
    return chosen


def build(folder: str | Path, photos_per_country: int = 20, seed: int = 0,
          countries: tuple[str, ...] = COUNTRIES) -> dict:  # fmt: skip
    """Write FOLDER/metadata.txt (YFCC100M, 23 fields) and FOLDER/photos/<id>.jpg.

    Returns the world's truth: per photo its country and the number of faces drawn.
    """
    folder = Path(folder)
    photos_dir = folder / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    places: dict[str, list] = {}
    for lat, lon, cc in synth.places():
        if cc in countries:
            places.setdefault(cc, []).append((lat, lon, cc))
    missing = [c for c in countries if c not in places]
    if missing:
        raise ValueError(f"no populated places for {missing}")
    maker = synth.LineMaker(synth.SynthSpec(layout="23", seed=seed))
    truth = synth.Truth()
    lines, plan = [], []
    photo_id = 5_000_000
    for ci, cc in enumerate(countries):
        rng = _rng("world", seed, cc)
        users = [f"{rng.randint(10**7, 10**8 - 1)}@N0{ci % 9}" for _ in range(photos_per_country)]
        for i in range(photos_per_country):
            photo_id += 1
            # One prolific user per country (three photos): the one-user rule's case.
            user = users[0] if i < 3 else users[i]
            kind = ("none" if i % 9 == 4 else "broken" if i % 11 == 7
                    else "two" if i % 6 == 5 else "one")  # fmt: skip
            title = HOSTILE_TITLE if (ci, i) == (0, 1) else f"{cc} street portrait {i}"
            place = rng.choice(places[cc])
            lines.append(maker.make(photo_id, "kept", truth, place=place, nsid=user, title=title))
            plan.append((photo_id, cc, kind))
    (folder / "metadata.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    centres = choose_centres(countries)
    faces_wanted = [(pid, cc, k) for pid, cc, kind in plan for k in
                    range({"one": 1, "two": 2}.get(kind, 0))]  # fmt: skip
    rendered = demo._faces_for([demo.photo_latent(pid * 10 + k, cc, centre=centres[cc])
                                for pid, cc, k in faces_wanted])  # fmt: skip
    faces: dict[int, list[np.ndarray]] = {}
    for (pid, _cc, _k), face in zip(faces_wanted, rendered, strict=True):
        faces.setdefault(pid, []).append(face)
    for pid, cc, kind in plan:
        path = photos_dir / f"{pid}.jpg"
        img = demo.draw_photo(pid, cc, faces.get(pid))
        img.save(path, "JPEG", quality=90)
        if kind == "broken":  # cut mid-scan: the fetch stage must call it a decode_error
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    world = {
        "countries": list(countries),
        "photos": {str(p): [c, k] for p, c, k in plan},
        "photos_per_country": photos_per_country,
        "seed": seed,
        # float32 values as written, so the score regenerates the same true faces
        "centres": {cc: [float(v) for v in z] for cc, z in centres.items()},
    }
    (folder / "world.json").write_text(json.dumps(world, indent=1) + "\n", encoding="utf-8")
    return world


def score(render_dir: str | Path, world_dir: str | Path, random_faces: int = 200) -> dict:
    """Retrieval accuracy of the characteristic faces against the true faces.

    Each country's rendered all/all face is compared (mean squared pixel difference, in
    [0, 1] units) with every country's true face, the bundled generator's image of its
    centre; it counts when its own is the closest. Baseline: the mean distance from the
    characteristic faces to faces of random latents.
    """
    import torch
    from PIL import Image

    from faceatlas.gan import load

    world = json.loads((Path(world_dir) / "world.json").read_text())
    countries = tuple(world["countries"])
    G = load("dcgan64")
    with torch.no_grad():
        centres = torch.tensor([world["centres"][c] for c in countries], dtype=torch.float32)
        truth = ((G(centres).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
        z = torch.randn(random_faces, G.z_dim, generator=torch.Generator().manual_seed(99))
        rand = ((G(z).clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()
    render_dir = Path(render_dir)
    per_country = {}
    hits, own, base = 0, [], []
    for i, cc in enumerate(countries):
        path = render_dir / "faces" / f"{cc}AA.png"
        if not path.exists():
            per_country[cc] = {"rendered": False}
            continue
        face = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        d = ((truth - face) ** 2).mean(axis=(1, 2, 3))
        best = int(np.argmin(d))
        hits += best == i
        own.append(float(d[i]))
        base.append(float(((rand - face) ** 2).mean(axis=(1, 2, 3)).mean()))
        per_country[cc] = {"rendered": True, "closest": countries[best], "own_distance":
                           round(float(d[i]), 5), "nearest_other": round(float(
                               np.min(np.delete(d, i))), 5)}  # fmt: skip
    return {
        "retrieval_accuracy": round(hits / len(countries), 4),
        "countries": len(countries),
        "correct": hits,
        "mean_distance_own": round(float(np.mean(own)), 5) if own else None,
        "mean_distance_random_faces": round(float(np.mean(base)), 5) if base else None,
        "distance": "mean squared pixel difference in [0, 1], generator output at 64 px",
        "per_country": per_country,
    }
