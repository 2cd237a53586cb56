"""The demo's stand-in for Flickr: photos served from 127.0.0.1 for the fetch stage.

The bundled sample's download URLs point at Flickr, which a demo (and a test machine)
cannot reach. `make demo` instead draws one small JPEG per sampled photo, serves the
folder on 127.0.0.1 and runs the fetch stage with a URL template and --allow-host for that
server. A few photos are left out on purpose so the demo shows failures accounted for.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
from PIL import Image, ImageDraw

from faceatlas.fetch import selection_key


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    disable_nagle_algorithm = True  # else ~40 ms per keep-alive request
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: str | Path) -> Iterator[int]:
    """Serve `folder` over HTTP on 127.0.0.1 (a free port, yielded) until the block ends."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="demo-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


# The demo world: each country has a true face, the generator's image of a centre latent
# drawn from the country code; its photos show faces drawn around that centre. Later stages
# can then be scored against the truth. Every NO_FACE_EVERY-th photo shows no face.
FACE_SPREAD = 0.6
NO_FACE_EVERY = 7


def country_centre(country: str, z_dim: int = 100) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(f"centre:{country}".encode()).digest()[:8], "big")
    return np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32)


def photo_latent(photo_id: int, country: str, z_dim: int = 100,
                 centre: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A face of `country`: its centre (country_centre unless given) plus spread noise."""
    seed = int.from_bytes(hashlib.sha256(f"photo:{photo_id}".encode()).digest()[:8], "big")
    noise = np.random.default_rng(seed).standard_normal(z_dim).astype(np.float32)
    base = country_centre(country, z_dim) if centre is None else centre
    return base + FACE_SPREAD * noise


def draw_photo(photo_id: int, country: str,
               faces: np.ndarray | list[np.ndarray] | None = None,
               size: tuple[int, int] = (500, 375)) -> Image.Image:  # fmt: skip
    """A placeholder photo: a textured background from the photo id, the country code
    written on, and each of `faces` (uint8 RGB) pasted at 3x side by side at a position
    drawn from the id; an ellipse when there is none."""
    h = hashlib.sha256(str(photo_id).encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "big"))
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    base = np.array([h[0], h[1], h[2]], np.float32)
    slope = rng.uniform(-0.25, 0.25, (3, 2))
    bg = base + np.stack([slope[c, 0] * x + slope[c, 1] * y for c in range(3)], -1)
    bg += rng.normal(0, 8, bg.shape)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    if faces is None or len(faces) == 0:
        draw.ellipse((size[0] // 3, size[1] // 4, 2 * size[0] // 3, 3 * size[1] // 4),
                     fill=(h[3], h[4], h[5]))  # fmt: skip
    else:
        faces = [faces] if isinstance(faces, np.ndarray) and faces.ndim == 3 else list(faces)
        k = 3 if len(faces) == 1 else 2
        bigs = [Image.fromarray(f).resize((f.shape[1] * k, f.shape[0] * k),
                                          Image.Resampling.BICUBIC) for f in faces]  # fmt: skip
        width = sum(b.width for b in bigs) + 20 * (len(bigs) - 1)
        x0 = 20 + h[6] % max(1, size[0] - width - 40)
        y0 = 20 + h[7] % max(1, size[1] - bigs[0].height - 40)
        for b in bigs:
            img.paste(b, (x0, y0))
            x0 += b.width + 20
    draw.text((10, 10), f"{country} {photo_id}", fill=(255, 255, 255))
    return img


@functools.cache
def _bundled_generator():
    """Loaded once per process: choosing the demo world's true faces renders one latent at
    a time, and reading the weights for each cost more than the rendering."""
    from faceatlas.gan.dcgan import load_bundled

    return load_bundled()


def _faces_for(latents: list[np.ndarray]) -> np.ndarray:
    """The bundled generator's images of these latents, uint8 RGB."""
    import torch

    net = _bundled_generator()
    out = []
    with torch.no_grad():
        for start in range(0, len(latents), 64):
            z = torch.from_numpy(np.stack(latents[start : start + 64]))
            img = ((net(z).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            out.append(img.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 64, 64, 3), np.uint8)


def write_demo_photos(root: str | Path, folder: str | Path, per_country: int, seed: int = 0,
                      missing_every: int = 10) -> tuple[int, int]:  # fmt: skip
    """Draw JPEGs for the photos `fetch --per-country N --seed S` will ask for, as
    FOLDER/<photo_id>.jpg; every `missing_every`-th is left out. Returns (drawn, missing)."""
    table = pads.dataset(Path(root) / "photos", format="parquet", partitioning="hive").to_table(
        columns=["photo_id", "country"]
    )
    by_country: dict[str, list[int]] = {}
    for pid, cc in zip(table.column("photo_id").to_pylist(), table.column("country").to_pylist(),
                       strict=True):  # fmt: skip
        by_country.setdefault(cc, []).append(pid)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    drawn = missing = 0
    todo: list[tuple[int, str]] = []
    for cc, ids in sorted(by_country.items()):
        for pid in sorted(ids, key=lambda p: selection_key(p, seed))[:per_country]:
            if missing_every and (drawn + missing) % missing_every == missing_every - 1:
                missing += 1
                continue
            if not (out / f"{pid}.jpg").exists():
                todo.append((pid, cc))
            drawn += 1
    with_face = [(pid, cc) for pid, cc in todo if pid % NO_FACE_EVERY]
    faces = dict(zip(with_face, _faces_for([photo_latent(p, c) for p, c in with_face]),
                     strict=True))  # fmt: skip
    for pid, cc in todo:
        draw_photo(pid, cc, faces.get((pid, cc))).save(out / f"{pid}.jpg", "JPEG", quality=90)
    return drawn, missing
