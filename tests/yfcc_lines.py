"""Hand-written YFCC100M metadata lines for the unit tests."""

from __future__ import annotations

import hashlib

from faceatlas.yfcc import FIELDS_23, FIELDS_25

# A good photo near the Eiffel Tower; tests override single fields.
BASE: dict[str, str] = {
    "line_number": "7",
    "photo_id": "123456",
    "photo_hash": hashlib.md5(b"123456").hexdigest(),
    "user_id": "12345678@N00",
    "user_nickname": "some+user",
    "date_taken": "2010-05-31 00:05:58.0",
    "date_uploaded": "1275264358",
    "capture_device": "Canon+EOS+400D",
    "title": "Eiffel+Tower%2C+caf%C3%A9",
    "description": "a+photo",
    "user_tags": "paris,eiffel+tower",
    "machine_tags": "vision%3Aoutdoor%3D0962",
    "longitude": "2.294481",
    "latitude": "48.858370",
    "accuracy": "16",
    "page_url": "http://www.flickr.com/photos/12345678@N00/123456/",
    "download_url": "http://farm5.staticflickr.com/1234/123456_abcdef0123.jpg",
    "license_name": "Attribution+License",
    "license_url": "http://creativecommons.org/licenses/by/2.0/",
    "server_id": "1234",
    "farm_id": "5",
    "secret": "abcdef0123",
    "original_secret": "0123abcdef",
    "original_extension": "jpg",
    "marker": "0",
}


def make_line(layout: int = 23, **overrides: str | bytes) -> bytes:
    """One metadata line (no newline) as bytes; overrides may be str or raw bytes."""
    values = {**BASE, **overrides}
    names = FIELDS_23 if layout == 23 else FIELDS_25
    parts = [values[n] if isinstance(values[n], bytes) else values[n].encode() for n in names]
    return b"\t".join(parts)
