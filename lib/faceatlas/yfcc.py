"""The YFCC100M metadata format: its two row layouts and typed parsing of its fields.

The original files have 23 tab-separated fields; the AWS copy has 25 (line number, photo
id, photo hash, then the original fields from user NSID on). Lines are told apart by their
field count, so a file may even mix the two. Everything here works on whole Arrow columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceatlas.urlcodec import utf8_or_mask

FIELDS_23: tuple[str, ...] = (
    "photo_id",
    "user_id",
    "user_nickname",
    "date_taken",
    "date_uploaded",
    "capture_device",
    "title",
    "description",
    "user_tags",
    "machine_tags",
    "longitude",
    "latitude",
    "accuracy",
    "page_url",
    "download_url",
    "license_name",
    "license_url",
    "server_id",
    "farm_id",
    "secret",
    "original_secret",
    "original_extension",
    "marker",
)
FIELDS_25: tuple[str, ...] = ("line_number", "photo_id", "photo_hash", *FIELDS_23[1:])
LAYOUTS: dict[int, tuple[str, ...]] = {23: FIELDS_23, 25: FIELDS_25}

# Flickr opened in 2004; an upload time outside [FIRST_UPLOAD, now] is not real.
FIRST_UPLOAD = np.datetime64("2004-01-01T00:00:00", "us")
# The first photograph is from 1826; anything earlier on a camera clock is a default value.
FIRST_TAKEN = np.datetime64("1826-01-01T00:00:00", "us")
_DAY = np.timedelta64(1, "D")

_INT_RE = r"^[0-9]{1,18}$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"


@dataclass
class SplitLines:
    """Lines split on tabs, with each named field fetchable for any subset of rows."""

    n_fields: np.ndarray  # fields per line
    flat: pa.Array  # every field of every line, in order (binary)
    starts: np.ndarray  # index in `flat` of each line's first field

    @property
    def layout_ok(self) -> np.ndarray:
        return (self.n_fields == 23) | (self.n_fields == 25)

    def field(self, name: str, rows: np.ndarray | None = None) -> pa.Array:
        """Raw bytes of field `name` for `rows` (indices; all rows when None).

        Null where the line's layout lacks the field or has the wrong field count.
        """
        nf = self.n_fields if rows is None else self.n_fields[rows]
        st = self.starts if rows is None else self.starts[rows]
        idx = np.full(len(nf), -1, dtype=np.int64)
        for count, names in LAYOUTS.items():
            if name in names:
                sel = nf == count
                idx[sel] = st[sel] + names.index(name)
        mask = idx < 0
        return self.flat.take(pa.array(idx, mask=mask))


def split_lines(lines: pa.Array) -> SplitLines:
    """Split each line on tabs (a trailing carriage return is dropped first)."""
    lines = pc.fill_null(lines.cast(pa.binary()), b"")
    if pc.any(pc.ends_with(lines, b"\r")).as_py():  # rare: only files with CRLF endings
        lines = pc.replace_substring_regex(lines, r"\r$", b"")
    lists = pc.split_pattern(lines, "\t")
    offs = lists.offsets.to_numpy()
    n_fields = np.diff(offs)
    return SplitLines(n_fields=n_fields, flat=lists.flatten(), starts=offs[:-1].astype(np.int64))


def _matches(raw: pa.Array, pattern: str) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(raw, pattern), False).to_numpy(
        zero_copy_only=False
    )


def present(raw: pa.Array) -> np.ndarray:
    """True where a field holds a non-empty value."""
    return pc.fill_null(pc.binary_length(raw), 0).to_numpy(zero_copy_only=False) > 0


def parse_int(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, present, valid): unsigned decimal integers of up to 18 digits."""
    has = present(raw)
    ok = _matches(raw, _INT_RE)
    vals = pc.if_else(pa.array(ok), raw, b"0").cast(pa.string()).cast(pa.int64())
    return vals.to_numpy(zero_copy_only=False), has, ok


def parse_float(raw: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, present, valid): decimal numbers; NaN where not valid."""
    has = present(raw)
    ok = _matches(raw, _FLOAT_RE)
    vals = pc.if_else(pa.array(ok), raw, b"nan").cast(pa.string()).cast(pa.float64())
    return vals.to_numpy(zero_copy_only=False), has, ok


def parse_uploaded(raw: pa.Array, now: np.datetime64) -> tuple[pa.Array, np.ndarray]:
    """Upload time, given as Unix seconds. (timestamps, bogus) where bogus values are null."""
    secs, has, ok = parse_int(raw)
    ok &= secs < 2**40  # beyond that the conversion to microseconds would overflow
    ts = np.where(ok, secs, 0).astype("datetime64[s]").astype("datetime64[us]")
    good = ok & (ts >= FIRST_UPLOAD) & (ts <= now + _DAY)
    bogus = has & ~good
    return pa.array(ts, pa.timestamp("us", tz="UTC"), mask=~good), bogus


def parse_taken(
    raw: pa.Array, uploaded: pa.Array, now: np.datetime64
) -> tuple[pa.Array, np.ndarray]:
    """Date taken, `YYYY-MM-DD HH:MM:SS[.f]` on the camera's clock.

    Bogus when it does not parse, is before 1826, or is more than a day after the upload
    (after now when the upload time is unknown), e.g. the 4501-01-01 of broken cameras.
    """
    has = present(raw)
    text, _ = utf8_or_mask(raw)  # not UTF-8: cannot be a date, so null and bogus below
    text = pc.utf8_slice_codeunits(text, 0, 19)
    ts = pc.strptime(text, format="%Y-%m-%d %H:%M:%S", unit="us", error_is_null=True)
    t = ts.to_numpy(zero_copy_only=False)
    up = uploaded.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    limit = np.where(np.isnat(up), now, up) + _DAY
    with np.errstate(invalid="ignore"):
        good = ~np.isnat(t) & (t >= FIRST_TAKEN) & (t <= limit)
    bogus = has & ~good
    return pa.array(t, pa.timestamp("us"), mask=~good), bogus


def license_code(license_url: pa.Array) -> pa.Array:
    """Short licence code from its URL: by, by-sa, by-nc-nd, ..., cc0, pdm; null if unknown."""
    text = pc.fill_null(license_url.cast(pa.string()), "")
    cc = pc.struct_field(pc.extract_regex(text, r"/licenses/(?P<c>[a-z-]+)/"), [0])
    zero = pc.match_substring(text, "/publicdomain/zero/")
    mark = pc.match_substring(text, "/publicdomain/mark/")
    out = pc.if_else(zero, "cc0", pc.if_else(mark, "pdm", cc))
    return pc.if_else(pc.equal(out, ""), pa.scalar(None, pa.string()), out)
