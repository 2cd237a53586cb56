"""The fetch stage's core: which photos to fetch, from which URL, and the images rows.

Plain Python over dicts and Arrow tables; spark_fetch.py runs it inside Spark tasks.

Every photo asked for gets exactly one row in ROOT/images/ with one status from
IMAGE_TABLE_STATUSES: the network outcomes of httpfetch (bad_url, blocked_address,
dns_error, connection_error, timeout, too_many_redirects, unavailable, too_large,
http_404, http_403, http_410, http_429, http_5xx, http_other, internal_error) and, for a
body that arrived, the content checks of imagecheck (not_image, decode_error,
too_many_pixels); ok means the bytes decoded and are stored in the row.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import pyarrow as pa

from faceatlas import schemas
from faceatlas.httpfetch import FETCH_STATUSES, Fetched, Fetcher
from faceatlas.imagecheck import IMAGE_STATUSES, CheckedImage, check_image

log = logging.getLogger(__name__)

IMAGE_TABLE_STATUSES = tuple(dict.fromkeys((*FETCH_STATUSES, *IMAGE_STATUSES)))
FAILED_STATUSES = tuple(s for s in IMAGE_TABLE_STATUSES if s != "ok")


# -- selection ------------------------------------------------------------------------
def selection_key(photo_id: int, seed: int = 0) -> str:
    """The reproducible pseudo-random order of --per-country and --limit: the first 16
    hex digits of SHA-256("seed:photo_id"). spark_fetch computes the same in Spark SQL."""
    return hashlib.sha256(f"{seed}:{photo_id}".encode()).hexdigest()[:16]


def parse_statuses(text: str | Iterable[str]) -> tuple[str, ...]:
    """Failure statuses from a comma-separated list; 'all' means every failure."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item == "all":
            out.extend(FAILED_STATUSES)
        elif item in FAILED_STATUSES:
            out.append(item)
        else:
            raise ValueError(
                f"unknown failure status {item!r}; choose from all, {', '.join(FAILED_STATUSES)}"
            )
    return tuple(dict.fromkeys(out))


# -- URL templates --------------------------------------------------------------------
class TemplateError(ValueError):
    """A URL template that cannot work (unknown column, bad slice, stray brace)."""


# Short names for photos columns, so the AWS mirror's layout reads as documented.
COLUMN_ALIASES = {"hash": "photo_hash", "id": "photo_id"}
# Slice bounds are optional signed integers; a lone "-" is not one.
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\[(-?\d+)?:(-?\d+)?\])?\}")
# Characters that stay as they are when a value is put into a URL; the rest (spaces,
# non-ASCII, quotes, angle brackets) are percent-encoded.
# `?`, `#` and `%` are encoded too, so a value cannot start a query or a fragment or forge an
# escape.
_URL_SAFE = ":/@!$&'()*+,;=~-._"


@dataclass(frozen=True)
class UrlTemplate:
    """A URL built from a photo's columns: `{col}` or a slice `{col[a:b]}`.

    Example, the AWS copy of YFCC100M:
    https://BUCKET.s3.amazonaws.com/data/images/{hash[0:3]}/{hash[3:6]}/{hash}.jpg
    `{{` and `}}` are literal braces.
    """

    text: str
    parts: tuple  # str literals and (column, start, stop) fields

    @classmethod
    def parse(cls, text: str, columns: Iterable[str]) -> UrlTemplate:
        known = set(columns)
        parts: list = []
        pos = 0
        lit: list[str] = []
        while pos < len(text):
            ch = text[pos]
            if text.startswith("{{", pos) or text.startswith("}}", pos):
                lit.append(ch)
                pos += 2
                continue
            if ch == "}":
                raise TemplateError(f"stray '}}' at {pos} in {text!r}")
            if ch != "{":
                lit.append(ch)
                pos += 1
                continue
            m = _FIELD.match(text, pos)
            if not m:
                raise TemplateError(f"bad field at {pos} in {text!r}: use {{col}} or {{col[a:b]}}")
            name = COLUMN_ALIASES.get(m.group(1), m.group(1))
            if name not in known:
                raise TemplateError(
                    f"unknown column {m.group(1)!r} in URL template; photos columns: "
                    + ", ".join(sorted(known))
                )
            start = int(m.group(2)) if m.group(2) else None
            stop = int(m.group(3)) if m.group(3) else None
            if lit:
                parts.append("".join(lit))
                lit = []
            parts.append((name, start, stop))
            pos = m.end()
        if lit:
            parts.append("".join(lit))
        if not any(isinstance(p, tuple) for p in parts):
            raise TemplateError(f"URL template {text!r} uses no column")
        return cls(text, tuple(parts))

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p[0] for p in self.parts if isinstance(p, tuple)))

    def render(self, row: Mapping[str, object]) -> str:
        """The URL for one row; raises TemplateError when a column it needs is empty."""
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            name, start, stop = p
            value = row.get(name)
            if value is None or value == "":
                raise TemplateError(f"column {name} is empty")
            text = str(value)[start:stop]
            if not text:
                raise TemplateError(f"slice [{start}:{stop}] of column {name} is empty")
            out.append(quote(text, safe=_URL_SAFE))
        return "".join(out)


def url_for(row: Mapping[str, object], template: UrlTemplate | None) -> str:
    """The URL to fetch for a photos row; raises TemplateError when there is none."""
    if template is not None:
        return template.render(row)
    url = row.get("download_url")
    if not url:
        raise TemplateError("no download_url")
    return str(url)


# -- rows -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageOptions:
    max_pixels: int = 40_000_000
    resize: int | None = None  # longest edge after resizing; None keeps the size
    jpeg_quality: int = 90
    resample: str = "area"  # a key of imagecheck.RESAMPLE

    def __post_init__(self) -> None:
        # Checked here, at startup, not by the first download in a worker thread.
        from faceatlas.imagecheck import RESAMPLE

        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.resize is not None and self.resize < 1:
            raise ValueError(f"resize must be >= 1, got {self.resize}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(RESAMPLE)}")


def image_row(
    row: Mapping[str, object],
    url: str | None,
    fetched: Fetched | None,
    checked: CheckedImage | None,
    run_id: str,
    fallback: tuple[str, str] | None = None,
) -> dict:
    """One images row from what happened; `fallback` = (status, detail) when no request
    was made (e.g. no URL could be built)."""
    out = {
        "photo_id": row["photo_id"],
        "url": url,
        "country": row.get("country"),
        "continent": row.get("continent"),
        "run_id": run_id,
        "fetched_at": datetime.now(UTC),
    }
    if fetched is None:
        assert fallback is not None
        out.update(status=fallback[0], detail=fallback[1], attempts=0, seconds=0.0)
        return out
    out.update(
        final_url=fetched.final_url,
        http_status=fetched.http_status,
        attempts=fetched.attempts,
        download_bytes=fetched.download_bytes,
        content_type=fetched.content_type,
        seconds=fetched.seconds,
        status=fetched.status,
        detail=fetched.detail or None,
    )
    if checked is not None:
        out.update(
            status=checked.status,
            detail=checked.detail or None,
            orig_width=checked.orig_width,
            orig_height=checked.orig_height,
        )
        if checked.status == "ok":
            out.update(
                image=checked.data,
                image_bytes=len(checked.data or b""),
                format=checked.format,
                width=checked.width,
                height=checked.height,
                sha256=checked.sha256,
            )
    return out


def rows_to_table(rows: list[dict]) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in schemas.IMAGES}
    return pa.table(cols, schema=schemas.IMAGES)


class Progress:
    """A task's running count by status, logged every `every` seconds and at the end."""

    def __init__(self, label: str, total: int, every: float = 15.0) -> None:
        self.label, self.total, self.every = label, total, every
        # status -> [photos, download bytes, image bytes, seconds], as in FETCH_COUNTS
        self.sums: dict[str, list] = {}
        self.t0 = self.last = time.monotonic()

    @property
    def counts(self) -> Counter[str]:
        return Counter({k: v[0] for k, v in self.sums.items()})

    @property
    def download_bytes(self) -> int:
        return sum(v[1] for v in self.sums.values())

    @property
    def image_bytes(self) -> int:
        return sum(v[2] for v in self.sums.values())

    def add(self, row: dict) -> None:
        s = self.sums.setdefault(row["status"], [0, 0, 0, 0.0])
        s[0] += 1
        s[1] += row.get("download_bytes") or 0
        s[2] += row.get("image_bytes") or 0
        s[3] += row.get("seconds") or 0.0
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.log("running")

    def counts_batch(self) -> pa.RecordBatch:
        """The counts as a FETCH_COUNTS batch, one row per status."""
        statuses = sorted(self.sums)
        cols = list(zip(*(self.sums[k] for k in statuses), strict=True)) or [()] * 4
        return pa.record_batch([pa.array(statuses, pa.string()), *cols],
                               schema=schemas.FETCH_COUNTS)  # fmt: skip

    def log(self, what: str) -> None:
        done = sum(v[0] for v in self.sums.values())
        dt = max(time.monotonic() - self.t0, 1e-9)
        log.warning(
            "fetch %s %s: %d/%d photos in %.1f s (%.1f/s), %s",
            self.label, what, done, self.total, dt, done / dt,
            ", ".join(f"{k} {v}" for k, v in self.counts.most_common()),
        )  # fmt: skip


def fetch_rows(
    rows: list[dict],
    fetcher: Fetcher,
    image_opts: ImageOptions,
    template: UrlTemplate | None,
    run_id: str,
) -> Iterator[dict]:
    """Fetch and check every row's photo; yields one images row per input row, in the
    order they finish."""
    requests: list[tuple[dict, str]] = []
    for row in rows:
        try:
            requests.append((row, url_for(row, template)))
        except TemplateError as e:
            yield image_row(row, None, None, None, run_id, ("bad_url", str(e)))

    # The image checks run here, in the one consuming thread, not in the fetch threads: a
    # task owns one core, and decoding in 32 threads at once costs about a fifth more CPU
    # per photo (GIL hand-offs, cache thrash) while the network needs none of it.
    for (row, url), fetched, _ in fetcher.fetch_many(requests, lambda it: it[1]):
        checked, check_seconds = None, 0.0
        if fetched.status == "ok" and fetched.body is not None:
            t0 = time.monotonic()
            checked = check_image(fetched.body, max_pixels=image_opts.max_pixels,
                                  resize_max=image_opts.resize,
                                  jpeg_quality=image_opts.jpeg_quality,
                                  resample=image_opts.resample)  # fmt: skip
            check_seconds = time.monotonic() - t0
        out = image_row(row, url, fetched, checked, run_id)
        # `seconds` covers fetch and checks: a resize can take longer than the download.
        out["seconds"] += check_seconds
        yield out


def run_batches(
    rows: list[dict],
    fetcher: Fetcher,
    image_opts: ImageOptions,
    template: UrlTemplate | None,
    run_id: str,
    write: Callable[[pa.Table], None],
    label: str,
    flush_rows: int = 500,
    flush_seconds: float = 30.0,
    flush_bytes: int = 128 << 20,
) -> Progress:
    """Fetch `rows`, handing finished rows to `write` in tables of a bounded size (so a
    killed task loses at most one batch of work); returns the task's progress counts."""
    progress = Progress(label, len(rows))
    pending: list[dict] = []
    pending_bytes = 0
    last = time.monotonic()
    for out in fetch_rows(rows, fetcher, image_opts, template, run_id):
        progress.add(out)
        pending.append(out)
        pending_bytes += out.get("image_bytes") or 0
        now = time.monotonic()
        if (
            len(pending) >= flush_rows
            or pending_bytes >= flush_bytes
            or (now - last >= flush_seconds)
        ):
            write(rows_to_table(pending))
            pending, pending_bytes, last = [], 0, now
    if pending:
        write(rows_to_table(pending))
    progress.log("done")
    return progress
