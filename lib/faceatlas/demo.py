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


def draw_photo(photo_id: int, country: str, size: tuple[int, int] = (500, 375)) -> Image.Image:
    """A recognisable placeholder: a colour from the photo id, the country code written on."""
    h = hashlib.sha256(str(photo_id).encode()).digest()
    img = Image.new("RGB", size, (h[0], h[1], h[2]))
    draw = ImageDraw.Draw(img)
    draw.ellipse((size[0] // 3, size[1] // 4, 2 * size[0] // 3, 3 * size[1] // 4),
                 fill=(h[3], h[4], h[5]))  # fmt: skip
    draw.text((10, 10), f"{country} {photo_id}", fill=(255, 255, 255))
    return img


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
    for cc, ids in sorted(by_country.items()):
        for pid in sorted(ids, key=lambda p: selection_key(p, seed))[:per_country]:
            if missing_every and (drawn + missing) % missing_every == missing_every - 1:
                missing += 1
                continue
            path = out / f"{pid}.jpg"
            if not path.exists():
                draw_photo(pid, cc).save(path, "JPEG", quality=85)
            drawn += 1
    return drawn, missing
