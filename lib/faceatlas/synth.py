"""Synthetic YFCC100M metadata files, with a known truth, for tests, the demo and benchmarks.

Lines look like the real thing (field lengths, URL-encoded text with `+` and `%XX`, both
row layouts), and each line is generated for a chosen outcome, so the expected accounting
of the ingest stage is known exactly. Geotagged photos are placed within about 100 m of a
populated place from reverse_geocoder's own table, so their expected country is known.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote_plus

import reverse_geocoder

from faceatlas.ingest import QUARANTINE_REASONS

# Outcome categories the generator can produce, named like the ingest stage's reasons.
BROKEN_KINDS = QUARANTINE_REASONS
FILTER_KINDS = ("zero_coordinates", "holiday_tag")

LICENSES = (
    ("Attribution License", "http://creativecommons.org/licenses/by/2.0/"),
    ("Attribution-ShareAlike License", "http://creativecommons.org/licenses/by-sa/2.0/"),
    ("Attribution-NoDerivs License", "http://creativecommons.org/licenses/by-nd/2.0/"),
    ("Attribution-NonCommercial License", "http://creativecommons.org/licenses/by-nc/2.0/"),
    (
        "Attribution-NonCommercial-ShareAlike License",
        "http://creativecommons.org/licenses/by-nc-sa/2.0/",
    ),
    (
        "Attribution-NonCommercial-NoDerivs License",
        "http://creativecommons.org/licenses/by-nc-nd/2.0/",
    ),
)
_WORD_TEXT = (
    "the a of and street old city bridge market river church park sunset beach garden house "
    "night light morning view square tower museum station festival family friends portrait "
    "smile girl boy woman man people face kids wedding party summer winter spring autumn "
    "snow rain café über señora naïve straße piñata São Zürich Kraków Ålesund 東京 北京 Москва"
)
_WORDS = tuple(_WORD_TEXT.split())
_DEVICES = ("Canon EOS 400D DIGITAL", "NIKON D70", "Apple iPhone 4", "SONY DSC-W55",
            "Panasonic DMC-FZ8", "")  # fmt: skip
_HOLIDAY = ("vacation", "travel", "holiday", "trip", "tourist")


@dataclass
class Truth:
    """What the ingest stage must find in a generated file."""

    counts: Counter = field(default_factory=Counter)  # (kind, reason) -> lines
    country: dict[int, str] = field(default_factory=dict)  # kept photo id -> expected cc
    license: dict[int, str] = field(default_factory=dict)  # kept photo id -> licence code
    accuracy: dict[int, int] = field(default_factory=dict)  # kept photo id -> accuracy

    @property
    def lines(self) -> int:
        return sum(self.counts.values())


@dataclass
class SynthSpec:
    lines: int = 10_000
    layout: str = "25"  # "23", "25" or "mixed" (per line)
    geotagged: float = 0.5  # share of photos with coordinates (about 48% in YFCC100M)
    videos: float = 0.01
    broken: dict[str, int] = field(default_factory=dict)  # kind -> lines, see BROKEN_KINDS
    filtered: dict[str, int] = field(default_factory=dict)  # kind -> lines, see FILTER_KINDS
    seed: int = 0
    first_id: int = 1_000_000


_PLACES: list[tuple[float, float, str]] | None = None


def places() -> list[tuple[float, float, str]]:
    """(lat, lon, cc) of every place in reverse_geocoder's bundled table."""
    global _PLACES
    if _PLACES is None:
        path = Path(reverse_geocoder.__file__).with_name("rg_cities1000.csv")
        with open(path, newline="", encoding="utf-8") as f:
            _PLACES = [(float(r["lat"]), float(r["lon"]), r["cc"]) for r in csv.DictReader(f)]
    return _PLACES


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _enc(s: str) -> str:
    return quote_plus(s, safe="")


class LineMaker:
    def __init__(self, spec: SynthSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.places = places()
        self.line_no = 0
        # Pools of encoded text: drawing from them keeps generation fast (2M lines/minute).
        rng = self.rng
        self.titles = [_enc(_text(rng, 1, 6)) for _ in range(4000)]
        self.descriptions = [_enc(_text(rng, 0, 30)) for _ in range(4000)]
        self.tags = [_enc(_text(rng, 1, 2)) for _ in range(4000)]

    def make(self, photo_id: int, kind: str, truth: Truth,
             place: tuple[float, float, str] | None = None, nsid: str | None = None,
             title: str | None = None) -> str:  # fmt: skip
        """One line of outcome `kind`; `place`, `nsid` and `title` (plain text) fix those
        fields instead of drawing them (the demo world places its photos itself)."""
        rng = self.rng
        layout = self.spec.layout
        if layout == "mixed":
            layout = rng.choice(("23", "25"))
        nsid = nsid or f"{rng.randint(10_000_000, 99_999_999)}@N{rng.randint(0, 8):02d}"
        uploaded = rng.randint(1_104_537_600, 1_417_392_000)  # 2005 .. 2014
        t = time.gmtime(uploaded - rng.randint(3600, 3 * 365 * 86400))
        taken = time.strftime("%Y-%m-%d %H:%M:%S.0", t)
        if rng.random() < 0.01:
            taken = "4501-01-01 00:00:00.0"  # broken cameras: kept, flagged bogus
        lic_name, lic_url = rng.choice(LICENSES)
        server, farm = rng.randint(1, 9999), rng.randint(1, 9)
        secret = f"{rng.getrandbits(40):010x}"
        tags = rng.sample(self.tags, rng.randint(0, 12))
        if kind == "holiday_tag":
            word = rng.choice(_HOLIDAY)
            tags.append(_enc(word if rng.random() < 0.5 else "summer " + word))
        lat = lon = ""
        acc = ""
        cc = None
        geotagged = kind in ("kept", "holiday_tag", "bad_encoding", "bad_number", "bad_marker",
                             "bad_coordinates", "zero_coordinates", "video_geo")  # fmt: skip
        if geotagged:
            plat, plon, cc = place or rng.choice(self.places)
            lat = f"{plat + rng.uniform(-0.001, 0.001):.6f}"
            lon = f"{plon + rng.uniform(-0.001, 0.001):.6f}"
            acc = str(rng.randint(1, 16))
        if kind == "zero_coordinates":
            lat, lon = "0", "0"
        marker = "1" if kind.startswith("video") else "0"
        title = _enc(title) if title is not None else rng.choice(self.titles)
        desc = rng.choice(self.descriptions) if rng.random() < 0.6 else ""
        fields = [
            str(photo_id), nsid, _enc(f"user {nsid[:4]}"), taken, str(uploaded),
            _enc(rng.choice(_DEVICES)), title, desc, ",".join(tags),
            "", lon, lat, acc, f"http://www.flickr.com/photos/{nsid}/{photo_id}/",
            f"http://farm{farm}.staticflickr.com/{server}/{photo_id}_{secret}.jpg",
            _enc(lic_name), lic_url, str(server), str(farm), secret,
            f"{rng.getrandbits(40):010x}", "jpg", marker,
        ]  # fmt: skip
        if rng.random() < 0.05:
            fields[9] = "vision%3Aoutdoor%3D0962,vision%3Asky%3D0758"
        # Breakage, one kind per line.
        if kind == "bad_id":
            fields[0] = rng.choice((f"{photo_id}x", "", "-5", "1e9"))
        elif kind == "bad_marker":
            fields[22] = rng.choice(("2", "", "photo"))
        elif kind == "bad_coordinates":
            choice = rng.randrange(4)
            if choice == 0:
                fields[11] = "95.123"
            elif choice == 1:
                fields[10] = "-181.5"
            elif choice == 2:
                fields[10] = "east"
            else:
                fields[11] = ""
        elif kind == "bad_encoding":
            fields[6] = rng.choice(("broken%G1title", "cut%E", "%C3%28+invalid+utf8"))
        elif kind == "bad_number":
            fields[12] = "street"
        self.line_no += 1
        if layout == "25":
            h = hashlib.md5(str(photo_id).encode()).hexdigest()
            fields = [str(self.line_no), fields[0], h, *fields[1:]]
        if kind == "field_count":
            cut = rng.choice((5, 22, len(fields) - 1))
            fields = fields[:cut] if rng.random() < 0.8 else [*fields, "x"]
        if kind == "kept":
            truth.country[photo_id] = cc
            truth.license[photo_id] = lic_url.split("/")[4]
            truth.accuracy[photo_id] = int(acc)
        return "\t".join(fields)


def _outcome(kind: str) -> tuple[str, str]:
    if kind in BROKEN_KINDS:
        return ("quarantine", kind)
    if kind in FILTER_KINDS or kind == "not_geotagged":
        return ("filtered", kind)
    if kind.startswith("video"):
        return ("video", "video")
    return ("kept", "kept")


def plan(spec: SynthSpec) -> list[str]:
    """The kind of every line, in a shuffled order."""
    rng = random.Random(spec.seed + 1)
    special = [k for k, c in {**spec.broken, **spec.filtered}.items() for _ in range(c)]
    unknown = set(spec.broken) - set(BROKEN_KINDS) | set(spec.filtered) - set(FILTER_KINDS)
    if unknown:
        raise ValueError(f"unknown line kinds: {sorted(unknown)}")
    rest = spec.lines - len(special)
    if rest < 0:
        raise ValueError("more broken and filtered lines than lines")
    kinds = special
    for _ in range(rest):
        r = rng.random()
        if r < spec.videos:
            kinds.append("video_geo" if rng.random() < spec.geotagged else "video")
        elif rng.random() < spec.geotagged:
            kinds.append("kept")
        else:
            kinds.append("not_geotagged")
    rng.shuffle(kinds)
    return kinds


def iter_lines(spec: SynthSpec, truth: Truth) -> Iterator[str]:
    """Lines (without newlines) one by one, filling in `truth` as they go."""
    maker = LineMaker(spec)
    for i, kind in enumerate(plan(spec)):
        truth.counts[_outcome(kind)] += 1
        yield maker.make(spec.first_id + i, kind, truth)


def generate(spec: SynthSpec) -> tuple[list[str], Truth]:
    """Lines (without newlines) and the truth about them."""
    truth = Truth()
    return list(iter_lines(spec, truth)), truth


def write(path: str | os.PathLike, spec: SynthSpec, chunk_lines: int = 20_000) -> Truth:
    """Write a metadata file (bzip2-compressed when the name ends in .bz2), streaming, so
    that millions of lines need no more memory than their truth."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    truth = Truth()
    compress = path.suffix == ".bz2"
    with bz2.open(tmp, "wb", compresslevel=9) if compress else open(tmp, "wb") as out:
        chunk: list[str] = []
        for line in iter_lines(spec, truth):
            chunk.append(line)
            if len(chunk) >= chunk_lines:
                out.write(("\n".join(chunk) + "\n").encode("utf-8"))
                chunk = []
        if chunk:
            out.write(("\n".join(chunk) + "\n").encode("utf-8"))
    tmp.replace(path)
    return truth
