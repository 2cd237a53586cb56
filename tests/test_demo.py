"""The demo's stand-in for Flickr: drawn photos for the fetch sample, served on 127.0.0.1."""

from __future__ import annotations

import urllib.request

from photos_table import write_photos
from PIL import Image

from faceatlas.demo import serve_folder, write_demo_photos
from faceatlas.fetch import selection_key


def test_draws_the_photos_fetch_will_ask_for_and_serves_them(tmp_path):
    records = [dict(photo_id=i, country=cc, continent="EU")
               for i in range(1, 31) for cc in ["NL" if i % 2 else "DE"]]  # fmt: skip
    write_photos(tmp_path / "root", records)
    drawn, missing = write_demo_photos(tmp_path / "root", tmp_path / "www", per_country=4,
                                       seed=5, missing_every=3)  # fmt: skip
    assert drawn + missing == 8
    assert missing == 2
    expected = set()
    for cc in ("NL", "DE"):
        ids = [r["photo_id"] for r in records if r["country"] == cc]
        expected |= set(sorted(ids, key=lambda p: selection_key(p, 5))[:4])
    files = {int(p.stem) for p in (tmp_path / "www").glob("*.jpg")}
    assert len(files) == drawn and files < expected
    some = sorted(files)[0]
    with Image.open(tmp_path / "www" / f"{some}.jpg") as im:
        assert im.format == "JPEG" and im.size == (500, 375)

    with serve_folder(tmp_path / "www") as port:
        url = f"http://127.0.0.1:{port}/{some}.jpg"
        body = urllib.request.urlopen(url, timeout=5).read()
    assert body == (tmp_path / "www" / f"{some}.jpg").read_bytes()
