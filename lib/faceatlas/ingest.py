"""The ingest stage's core: raw YFCC100M lines in, kept photos + quarantine + counts out.

Plain Python over Arrow columns, no Spark: `ingest_batch` is what every Spark task runs on
each batch of lines (see spark_ingest.py), and what the unit tests call directly.

Every line gets exactly one outcome, decided in this order (cheapest first, so the full
parse and the geocoder only see lines that can still be kept):

  quarantine field_count      not 23 or 25 tab-separated fields
  quarantine bad_id           photo id (or line number) is not an integer
  quarantine bad_marker       marker is not 0 (photo) or 1 (video)
  video                       marker 1
  filtered   not_geotagged    no longitude and no latitude
  quarantine bad_coordinates  one of them missing, not a number, or out of range
  filtered   zero_coordinates exactly (0, 0)
  quarantine bad_encoding     a text field has a broken %XX escape or is not UTF-8
  quarantine bad_number       accuracy, server or farm id present but not an integer
  filtered   license          licence not in the allow-list
  filtered   accuracy         geotag accuracy below the minimum (or missing)
  filtered   holiday_tag      a user tag (or a word of one) is on the deny-list
  filtered   far_from_place   nearest populated place farther than --max-place-km
  kept
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceatlas import schemas
from faceatlas.geocode import place_index
from faceatlas.urlcodec import url_decode, url_decode_list, utf8_or_mask
from faceatlas.yfcc import (
    license_code,
    parse_float,
    parse_int,
    parse_taken,
    parse_uploaded,
    split_lines,
)

QUARANTINE_REASONS = (
    "field_count",
    "bad_id",
    "bad_marker",
    "bad_coordinates",
    "bad_encoding",
    "bad_number",
)
FILTER_REASONS = (
    "not_geotagged",
    "zero_coordinates",
    "license",
    "accuracy",
    "holiday_tag",
    "far_from_place",
)
DEFAULT_DENY_TAGS = (
    "travel",
    "travels",
    "traveling",
    "travelling",
    "vacation",
    "vacations",
    "holiday",
    "holidays",
    "trip",
    "roadtrip",
    "tourist",
    "tourists",
    "tourism",
    "sightseeing",
)
# Licence presets for --license. "reuse": Creative Commons terms that allow commercial
# reuse and adaptation (the licences a published atlas of derived faces can rely on).
LICENSE_PRESETS: dict[str, tuple[str, ...]] = {
    "reuse": ("by", "by-sa", "cc0", "pdm"),
    "noncommercial": ("by", "by-sa", "by-nc", "by-nc-sa", "cc0", "pdm"),
}
LICENSE_CODES = ("by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd", "cc0", "pdm")
INT32_MAX = 2**31 - 1
TEXT_FIELDS = ("user_nickname", "capture_device", "title", "description", "license_name")
# Fields stored as they are (not URL-encoded in the files), still checked to be UTF-8.
PLAIN_FIELDS = ("user_id", "photo_hash", "page_url", "download_url", "license_url", "secret",
                "original_secret", "original_extension")  # fmt: skip


@dataclass(frozen=True)
class IngestOptions:
    """What the user can set about which photos are kept."""

    licenses: tuple[str, ...] | None = None  # allowed licence codes; None: all
    min_accuracy: int | None = None  # Flickr accuracy level 1..16
    deny_tags: tuple[str, ...] = DEFAULT_DENY_TAGS
    max_place_km: float | None = None  # drop points this far from any populated place
    far_km: float = 50.0  # flag (not drop) points farther than this
    raw_limit: int = 2048  # bytes of a quarantined line that are kept
    now: str = field(default="", compare=False)  # upper bound for dates; default: today

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("now")
        return d

    def settings_hash(self) -> str:
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def now64(self) -> np.datetime64:
        return np.datetime64(self.now or "now", "us")


def expand_licenses(values: Sequence[str] | None) -> tuple[str, ...] | None:
    """Licence allow-list from codes, comma lists and presets; None means all."""
    if not values:
        return None
    out: list[str] = []
    for v in values:
        for part in v.split(","):
            part = part.strip().lower()
            if not part or part == "all":
                continue
            if part not in LICENSE_PRESETS and part not in LICENSE_CODES:
                choices = ", ".join((*LICENSE_CODES, *LICENSE_PRESETS, "all"))
                raise ValueError(f"unknown licence {part!r}; choose from {choices}")
            out.extend(LICENSE_PRESETS.get(part, (part,)))
    return tuple(dict.fromkeys(out)) or None


@dataclass
class BatchResult:
    photos: pa.Table  # schemas.PHOTOS
    quarantine: pa.Table  # schemas.QUARANTINE_INGEST
    counts: Counter  # (kind, reason) -> lines; kind in kept/quarantine/filtered/video


class _Outcome:
    """Assigns each row its first outcome; `open` is the rows still undecided."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.kind = np.full(n, "", dtype=object)
        self.reason = np.full(n, "", dtype=object)
        self.detail = np.full(n, "", dtype=object)
        self.open = np.ones(n, dtype=bool)

    def set(
        self,
        mask: np.ndarray,
        kind: str,
        reason: str,
        detail: str = "",
        rows: np.ndarray | None = None,
    ) -> None:
        """Decide the still-open rows where `mask` holds (`mask` indexes `rows` if given)."""
        if rows is not None:
            full = np.zeros(self.n, dtype=bool)
            full[rows] = mask
            mask = full
        m = mask & self.open
        self.open[m] = False
        self.kind[m] = kind
        self.reason[m] = reason
        self.detail[m] = detail

    def counts(self) -> Counter:
        return Counter(zip(self.kind.tolist(), self.reason.tolist(), strict=True))


def _deny_mask(tags: pa.Array, deny: Iterable[str]) -> np.ndarray:
    """Rows with a tag, or a space-separated word of a tag, on the deny-list."""
    n = len(tags)
    deny = list(deny)
    if not deny or n == 0:
        return np.zeros(n, dtype=bool)
    flat = pc.utf8_lower(tags.flatten())
    parent = pc.list_parent_indices(tags).to_numpy()
    words = pc.split_pattern(flat, " ")
    word_parent = parent[pc.list_parent_indices(words).to_numpy()]
    hit_tag = pc.is_in(flat, value_set=pa.array(deny)).to_numpy(zero_copy_only=False)
    hit_word = pc.is_in(words.flatten(), value_set=pa.array(deny)).to_numpy(zero_copy_only=False)
    out = np.zeros(n, dtype=bool)
    out[parent[hit_tag]] = True
    out[word_parent[hit_word]] = True
    return out


def _truncate_raw(lines: pa.Array, limit: int) -> pa.Array:
    out = []
    for v in pc.binary_slice(lines.cast(pa.binary()), 0, limit).to_pylist():
        out.append(None if v is None else v.decode("utf-8", errors="replace"))
    return pa.array(out, pa.string())


def ingest_batch(lines: pa.Array, sources: pa.Array | str, opts: IngestOptions) -> BatchResult:
    """Classify, parse and geocode one batch of raw metadata lines (binary or string)."""
    n = len(lines)
    if isinstance(sources, str):
        sources = pa.array([sources] * n, pa.string())
    sp = split_lines(lines)
    out = _Outcome(n)

    # Cheap structural checks on every line.
    out.set(~sp.layout_ok, "quarantine", "field_count", "need 23 or 25 tab-separated fields")
    ids, _, id_ok = parse_int(sp.field("photo_id"))
    out.set(~id_ok, "quarantine", "bad_id", "photo_id")
    lnum, _, lnum_ok = parse_int(sp.field("line_number"))
    out.set((sp.n_fields == 25) & ~lnum_ok, "quarantine", "bad_id", "line_number")
    marker = sp.field("marker")  # compared as bytes: the line may not be UTF-8
    is_photo = pc.fill_null(pc.equal(marker, b"0"), False).to_numpy(zero_copy_only=False)
    is_video = pc.fill_null(pc.equal(marker, b"1"), False).to_numpy(zero_copy_only=False)
    out.set(~is_photo & ~is_video, "quarantine", "bad_marker")
    out.set(is_video, "video", "video")

    lon, lon_has, lon_ok = parse_float(sp.field("longitude"))
    lat, lat_has, lat_ok = parse_float(sp.field("latitude"))
    out.set(~lon_has & ~lat_has, "filtered", "not_geotagged")
    out.set(~lon_has | ~lat_has, "quarantine", "bad_coordinates", "one of longitude/latitude")
    out.set(~lon_ok | ~lat_ok, "quarantine", "bad_coordinates", "not a number")
    with np.errstate(invalid="ignore"):
        in_range = (np.abs(lon) <= 180) & (np.abs(lat) <= 90)
    out.set(~in_range, "quarantine", "bad_coordinates", "out of range")
    out.set((lon == 0) & (lat == 0), "filtered", "zero_coordinates")

    # Full parse, only of the lines that can still be kept.
    rows = np.flatnonzero(out.open)
    cols: dict[str, pa.Array] = {}
    for name in TEXT_FIELDS:
        cols[name], bad = url_decode(sp.field(name, rows))
        out.set(bad, "quarantine", "bad_encoding", name, rows)
    for name in ("user_tags", "machine_tags"):
        cols[name], bad = url_decode_list(sp.field(name, rows))
        out.set(bad, "quarantine", "bad_encoding", name, rows)
    for name in PLAIN_FIELDS:
        cols[name], bad = utf8_or_mask(sp.field(name, rows))
        out.set(bad, "quarantine", "bad_encoding", name, rows)
    numbers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in ("accuracy", "server_id", "farm_id"):
        v, has, ok = parse_int(sp.field(name, rows))
        ok &= v <= INT32_MAX  # stored as int32
        out.set(has & ~ok, "quarantine", "bad_number", name, rows)
        numbers[name] = (v, ok)

    # User filters.
    lic = license_code(cols["license_url"])
    if opts.licenses is not None:
        allowed = pc.fill_null(pc.is_in(lic, value_set=pa.array(list(opts.licenses))), False)
        out.set(~allowed.to_numpy(zero_copy_only=False), "filtered", "license", "", rows)
    acc, acc_ok = numbers["accuracy"]
    if opts.min_accuracy is not None:
        out.set(~acc_ok | (acc < opts.min_accuracy), "filtered", "accuracy", "", rows)
    if opts.deny_tags:
        deny = _deny_mask(cols["user_tags"], opts.deny_tags)
        out.set(deny, "filtered", "holiday_tag", "", rows)

    # Geocode what is left; `sub` are the kept rows' positions within `rows`.
    sub = np.flatnonzero(out.open[rows])
    geo = place_index().lookup(lat[rows[sub]], lon[rows[sub]])
    if opts.max_place_km is not None:
        too_far = geo["place_km"] > opts.max_place_km
        out.set(too_far, "filtered", "far_from_place", "", rows[sub])
        sub = sub[~too_far]
        geo = {k: v[~too_far] for k, v in geo.items()}
    keep = rows[sub]
    out.set(np.ones(len(keep), bool), "kept", "kept", "", keep)

    now = opts.now64()
    uploaded, up_bogus = parse_uploaded(sp.field("date_uploaded", keep), now)
    taken, taken_bogus = parse_taken(sp.field("date_taken", keep), uploaded, now)
    sub_idx = pa.array(sub, pa.int64())
    photo_cols = {name: arr.take(sub_idx) for name, arr in cols.items()}
    for name, (v, ok) in numbers.items():
        photo_cols[name] = pa.array(v[sub].astype(np.int32), mask=~ok[sub])
    photo_cols |= {
        "photo_id": pa.array(ids[keep]),
        "line_number": pa.array(lnum[keep], mask=~lnum_ok[keep]),
        "taken_at": taken,
        "taken_at_bogus": pa.array(taken_bogus),
        "uploaded_at": uploaded,
        "uploaded_at_bogus": pa.array(up_bogus),
        "longitude": pa.array(lon[keep]),
        "latitude": pa.array(lat[keep]),
        "license_code": lic.take(sub_idx),
        "marker": pa.array(np.zeros(len(keep), np.int8)),
        "far_from_place": pa.array(geo["place_km"] > opts.far_km),
        "source_file": sources.take(pa.array(keep, pa.int64())),
    }
    for name in ("place", "admin1", "place_km", "country_name", "country", "continent"):
        photo_cols[name] = pa.array(geo[name])
    photos = pa.table(
        [photo_cols[f.name].cast(f.type) for f in schemas.PHOTOS], schema=schemas.PHOTOS
    )

    q = np.flatnonzero(out.kind == "quarantine")
    q_idx = pa.array(q, pa.int64())
    q_lines = lines.take(q_idx).cast(pa.binary())
    quarantine = pa.table(
        {
            "source_file": sources.take(q_idx).cast(pa.string()),
            "reason": pa.array(out.reason[q], pa.string()),
            "detail": pa.array(out.detail[q], pa.string()),
            "photo_id": pa.array(ids[q], pa.int64(), mask=~id_ok[q]),
            "raw_length": pc.binary_length(q_lines).cast(pa.int64()),
            "raw_line": _truncate_raw(q_lines, opts.raw_limit),
        },
        schema=schemas.QUARANTINE_INGEST,
    )
    return BatchResult(photos=photos, quarantine=quarantine, counts=out.counts())


def counts_batch(counts: Counter) -> pa.RecordBatch:
    """(kind, reason) -> lines as an INGEST_COUNTS batch, sorted for reproducibility."""
    items = sorted(counts.items())
    return pa.RecordBatch.from_arrays(
        [
            pa.array([k for (k, _), _ in items], pa.string()),
            pa.array([r for (_, r), _ in items], pa.string()),
            pa.array([n for _, n in items], pa.int64()),
        ],
        schema=schemas.INGEST_COUNTS,
    )


def accounting(counts: dict[tuple[str, str], int]) -> dict:
    """The stats' accounting block from (kind, reason) -> lines.

    lines_read = photos_kept + videos + filtered (by reason) + quarantined (by reason);
    an outcome outside the documented sets is a bug and raises.
    """
    by = Counter(counts)
    known = {("kept", "kept"), ("video", "video")}
    known |= {("filtered", r) for r in FILTER_REASONS}
    known |= {("quarantine", r) for r in QUARANTINE_REASONS}
    unknown = set(by) - known
    if unknown:
        raise AssertionError(f"outcomes outside the documented sets: {sorted(unknown)}")
    filtered = {r: by[("filtered", r)] for r in FILTER_REASONS}
    quarantined = {r: by[("quarantine", r)] for r in QUARANTINE_REASONS}
    return {
        "lines_read": sum(by.values()),
        "photos_kept": by[("kept", "kept")],
        "videos": by[("video", "video")],
        "filtered": filtered,
        "filtered_total": sum(filtered.values()),
        "quarantined": quarantined,
        "quarantined_total": sum(quarantined.values()),
    }
