"""Tests for faceatlas.fetch: selection keys, failure statuses, URL templates, images rows,
and fetch_rows / run_batches end to end against the real test server (fetchserver.py)."""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from fetchserver import FetchServer, Resp, bomb_png, jpeg_bytes, png_bytes
from PIL import Image

from faceatlas import fetch as fetch_mod
from faceatlas import schemas
from faceatlas.fetch import (
    FAILED_STATUSES,
    IMAGE_TABLE_STATUSES,
    ImageOptions,
    TemplateError,
    UrlTemplate,
    fetch_rows,
    image_row,
    parse_statuses,
    rows_to_table,
    run_batches,
    selection_key,
    url_for,
)
from faceatlas.hostlimit import HostLimiter
from faceatlas.httpfetch import Fetched, Fetcher, FetchOptions
from faceatlas.imagecheck import check_image

COLUMNS = [f.name for f in schemas.PHOTOS]
HASH = "0123456789abcdef0123456789abcdef"  # 32 hex digits, like YFCC100M's photo_hash


# -- selection ----------------------------------------------------------------------------
def test_selection_key() -> None:
    key = selection_key(123, seed=7)
    assert key == hashlib.sha256(b"7:123").hexdigest()[:16]
    assert len(key) == 16 and int(key, 16) >= 0
    assert selection_key(123, 7) == key  # deterministic
    assert selection_key(123, 8) != key  # the seed changes the order
    assert selection_key(124, 7) != key
    assert selection_key(123) == hashlib.sha256(b"0:123").hexdigest()[:16]


# -- failure statuses ---------------------------------------------------------------------
def test_parse_statuses() -> None:
    assert "ok" not in FAILED_STATUSES
    assert set(FAILED_STATUSES) == set(IMAGE_TABLE_STATUSES) - {"ok"}
    assert parse_statuses("all") == FAILED_STATUSES
    assert parse_statuses(" http_404 , TIMEOUT ") == ("http_404", "timeout")
    assert parse_statuses(["decode_error", " not_image"]) == ("decode_error", "not_image")
    assert parse_statuses("timeout,,timeout,") == ("timeout",)
    assert parse_statuses("") == ()
    both = parse_statuses("timeout,all")
    assert both[0] == "timeout" and sorted(both) == sorted(FAILED_STATUSES)  # no repeats


@pytest.mark.parametrize("text", ["ok", "http_999", "timeout,nope", ["all", "OK"]])
def test_parse_statuses_refuses_unknown(text) -> None:
    with pytest.raises(ValueError) as info:
        parse_statuses(text)
    message = str(info.value)
    assert "all" in message and "http_404" in message and "too_many_pixels" in message


# -- URL templates ------------------------------------------------------------------------
def _render(template: str, **row) -> str:
    return UrlTemplate.parse(template, COLUMNS).render(row)


def test_template_aws_layout() -> None:
    t = UrlTemplate.parse(
        "https://b.s3.amazonaws.com/data/images/{hash[0:3]}/{hash[3:6]}/{hash}.jpg", COLUMNS
    )
    assert t.columns == ("photo_hash",)
    assert t.render({"photo_hash": HASH, "photo_id": 1}) == (
        f"https://b.s3.amazonaws.com/data/images/012/345/{HASH}.jpg"
    )


def test_template_fields_aliases_and_slices() -> None:
    assert _render("http://h/{photo_hash[0:3]}/x", photo_hash=HASH) == "http://h/012/x"
    assert _render("http://h/{photo_id}.jpg", photo_id=42) == "http://h/42.jpg"
    assert _render("http://h/{id}.jpg", photo_id=42) == "http://h/42.jpg"
    assert _render("http://h/{hash[-4:]}", photo_hash=HASH) == "http://h/cdef"
    assert _render("http://h/{hash[:-28]}", photo_hash=HASH) == "http://h/0123"
    assert _render("http://h/{hash[-6:-3]}", photo_hash=HASH) == "http://h/abc"
    assert _render("http://h/{hash[:]}", photo_hash=HASH) == f"http://h/{HASH}"
    t = UrlTemplate.parse("http://h/{id}/{hash}/{photo_id}/{secret}", COLUMNS)
    assert t.columns == ("photo_id", "photo_hash", "secret")  # in order, once each


def test_template_literal_braces() -> None:
    assert _render("http://h/{{x}}/{id}", photo_id=5) == "http://h/{x}/5"
    assert _render("http://h/{{{id}}}", photo_id=5) == "http://h/{5}"


def test_template_percent_encodes_values() -> None:
    value = "a b/é?x&y=z:w"
    # `?`, `#` and `%` are encoded: a value cannot start a query or fragment or forge an escape.
    assert _render("http://h/{title}", title=value) == "http://h/a%20b/%C3%A9%3Fx&y=z:w"
    assert _render("http://h/{title}", title="50%#top") == "http://h/50%25%23top"
    assert _render("http://h/{title}", title='<"q">') == "http://h/%3C%22q%22%3E"


def test_template_unknown_column_lists_columns() -> None:
    with pytest.raises(TemplateError) as info:
        UrlTemplate.parse("http://h/{nope}.jpg", COLUMNS)
    message = str(info.value)
    assert "nope" in message and "photo_hash" in message and "download_url" in message


@pytest.mark.parametrize(
    "template",
    [
        "http://h/}{id}",  # stray }
        "http://h/{id}}",
        "http://h/{id",  # unclosed
        "http://h/{}",
        "http://h/{ id }",
        "http://h/{1id}",
        "http://h/{id[0]}",
        "http://h/{id[a:b]}",
        "http://h/{id[0:3:1]}",
        "http://h/{hash[-:3]}",  # a lone sign is no bound
        "http://h/{hash[:-]}",
        "http://h/a.jpg",  # no field at all
        "http://h/{{id}}",  # only literal braces
        "",
    ],
)
def test_template_syntax_errors(template: str) -> None:
    with pytest.raises(TemplateError):
        UrlTemplate.parse(template, COLUMNS)


def test_template_empty_values_fail_at_render() -> None:
    t = UrlTemplate.parse("http://h/{hash[0:3]}/{hash}", COLUMNS)
    for row in ({"photo_hash": ""}, {"photo_hash": None}, {}):
        with pytest.raises(TemplateError, match="empty"):
            t.render(row)
    with pytest.raises(TemplateError, match="slice"):
        _render("http://h/{hash[40:50]}", photo_hash=HASH)


def test_url_for() -> None:
    row = {"photo_id": 3, "photo_hash": HASH, "download_url": "http://farm1/x.jpg"}
    assert url_for(row, None) == "http://farm1/x.jpg"
    assert url_for(row, UrlTemplate.parse("http://m/{hash}", COLUMNS)) == f"http://m/{HASH}"
    for bad in ({"photo_id": 3}, {"photo_id": 3, "download_url": None},
                {"photo_id": 3, "download_url": ""}):  # fmt: skip
        with pytest.raises(TemplateError):
            url_for(bad, None)


# -- rows ---------------------------------------------------------------------------------
PHOTO = {"photo_id": 9, "country": "FR", "continent": "EU", "download_url": "http://h/9.jpg"}


def test_image_row_ok_and_failures_make_an_images_table() -> None:
    body = jpeg_bytes(40, 30)
    fetched = Fetched("http://h/9.jpg", "ok", "", 200, 1, body, len(body), None, "image/jpeg",
                      0.25)  # fmt: skip
    ok = image_row(PHOTO, "http://h/9.jpg", fetched, check_image(body), "run1")
    not_found = image_row(
        {**PHOTO, "photo_id": 10}, "http://h/10.jpg",
        Fetched("http://h/10.jpg", "http_404", "HTTP 404", 404, 1, seconds=0.1), None, "run1",
    )  # fmt: skip
    html = b"<html>nope</html>"
    not_image = image_row(
        {**PHOTO, "photo_id": 11}, "http://h/11.jpg",
        Fetched("http://h/11.jpg", "ok", "", 200, 2, html, len(html), None, "image/jpeg", 0.1),
        check_image(html), "run1",
    )  # fmt: skip
    bad_url = image_row({"photo_id": 12}, None, None, None, "run1", ("bad_url", "no url"))

    table = rows_to_table([ok, not_found, not_image, bad_url])
    assert table.schema == schemas.IMAGES
    rows = table.to_pylist()
    assert [r["photo_id"] for r in rows] == [9, 10, 11, 12]
    assert [r["status"] for r in rows] == ["ok", "http_404", "not_image", "bad_url"]

    r = rows[0]
    assert r["image"] == body  # nothing to change: the bytes as served
    assert r["sha256"] == hashlib.sha256(r["image"]).hexdigest()
    assert (r["width"], r["height"], r["orig_width"], r["orig_height"]) == (40, 30, 40, 30)
    assert (r["format"], r["image_bytes"], r["download_bytes"]) == ("jpeg", len(body), len(body))
    assert (r["http_status"], r["attempts"], r["content_type"]) == (200, 1, "image/jpeg")
    assert r["detail"] is None and r["seconds"] == 0.25
    assert (r["country"], r["continent"], r["run_id"]) == ("FR", "EU", "run1")
    assert isinstance(r["fetched_at"], datetime) and r["fetched_at"].tzinfo is not None
    assert abs((datetime.now(UTC) - r["fetched_at"]).total_seconds()) < 60

    for r in rows[1:]:
        assert r["image"] is None and r["sha256"] is None and r["width"] is None
        assert r["detail"]
    assert rows[1]["http_status"] == 404
    assert rows[2]["download_bytes"] == len(html) and rows[2]["attempts"] == 2
    assert (rows[3]["attempts"], rows[3]["seconds"], rows[3]["url"]) == (0, 0.0, None)
    assert rows[3]["detail"] == "no url" and rows[3]["country"] is None


def test_rows_to_table_empty() -> None:
    table = rows_to_table([])
    assert table.num_rows == 0 and table.schema == schemas.IMAGES


# -- end to end against the test server ---------------------------------------------------
@pytest.fixture
def srv() -> Iterator[FetchServer]:
    with FetchServer() as server:
        yield server
    assert server.errors == []


@pytest.fixture
def fetcher(srv: FetchServer, tmp_path: Path) -> Iterator[Fetcher]:
    f = Fetcher(
        FetchOptions(allow_hosts=(srv.host_port,), backoff=0.01, deadline=3),
        HostLimiter(str(tmp_path / "lim"), 8),
    )
    yield f
    f.close()
    f.limiter.close()


def _photo(photo_id: int, url: str | None) -> dict:
    countries = [("FR", "EU"), ("JP", "AS"), ("BR", "SA")]
    country, continent = countries[photo_id % 3]
    return {"photo_id": photo_id, "download_url": url, "country": country,
            "continent": continent, "photo_hash": f"{photo_id:032x}"}  # fmt: skip


def _serve_cases(srv: FetchServer) -> tuple[list[dict], dict[int, tuple[str, bytes | None]]]:
    """Photo rows, and per photo_id the expected status and the body served."""
    good = jpeg_bytes(64, 48, color=(10, 200, 30))
    rotated = jpeg_bytes(64, 48, exif_orientation=6)
    png = png_bytes(50, 20)
    full = jpeg_bytes(80, 60, color=(250, 10, 10))
    truncated = full[: len(full) // 2]
    bomb = bomb_png()
    html = b"<html><body>this photo is no longer available</body></html>"
    cases = {
        1: ("/good.jpg", Resp(body=good), "ok"),
        2: ("/rotated.jpg", Resp(body=rotated), "ok"),
        3: ("/pic.png", Resp(body=png, content_type="image/png"), "ok"),
        4: ("/page.jpg", Resp(body=html), "not_image"),  # 200, image/jpeg
        5: ("/cut.jpg", Resp(body=truncated), "decode_error"),  # true Content-Length of the cut
        6: ("/bomb.png", Resp(body=bomb, content_type="image/png"), "too_many_pixels"),
        7: ("/gone.jpg", None, "http_404"),  # no route: the server's 404
    }
    rows, expect = [], {}
    for pid, (path, resp, status) in cases.items():
        if resp is not None:
            srv.route(path, resp)
        rows.append(_photo(pid, srv.url(path)))
        expect[pid] = (status, resp.body if resp is not None else None)
    rows.append(_photo(8, None))  # no download_url
    expect[8] = ("bad_url", None)
    return rows, expect


def _check_carried(out: list[dict], rows: list[dict]) -> dict[int, dict]:
    """Exactly one output row per input row, with its photo_id, country and continent."""
    assert sorted(r["photo_id"] for r in out) == sorted(r["photo_id"] for r in rows)
    by_id = {r["photo_id"]: r for r in out}
    for row in rows:
        got = by_id[row["photo_id"]]
        assert (got["country"], got["continent"]) == (row["country"], row["continent"])
        assert got["run_id"] == "r1"
    return by_id


def test_fetch_rows_end_to_end(srv: FetchServer, fetcher: Fetcher) -> None:
    rows, expect = _serve_cases(srv)
    out = list(fetch_rows(rows, fetcher, ImageOptions(), None, "r1"))
    by_id = _check_carried(out, rows)
    assert {pid: r["status"] for pid, r in by_id.items()} == {
        pid: status for pid, (status, _) in expect.items()
    }
    table = rows_to_table(out)
    assert table.schema == schemas.IMAGES
    by_id = {r["photo_id"]: r for r in table.to_pylist()}  # every column, null when unset

    for pid, r in by_id.items():
        status, served = expect[pid]
        if status == "ok":
            assert r["image"] and r["sha256"] == hashlib.sha256(r["image"]).hexdigest()
            assert r["image_bytes"] == len(r["image"])
            assert r["download_bytes"] == len(served) and r["http_status"] == 200
        else:
            assert r["image"] is None and r["sha256"] is None and r["format"] is None
            assert r["detail"]

    # Untouched bytes where nothing had to change.
    assert by_id[1]["image"] == expect[1][1]
    assert (by_id[1]["width"], by_id[1]["height"], by_id[1]["format"]) == (64, 48, "jpeg")
    assert by_id[3]["image"] == expect[3][1] and by_id[3]["format"] == "png"
    assert (by_id[3]["width"], by_id[3]["height"]) == (50, 20)
    assert by_id[3]["content_type"] == "image/png"
    # EXIF orientation 6: stored upright (turned a quarter), no EXIF left to apply again.
    r = by_id[2]
    assert (r["width"], r["height"]) == (48, 64)
    assert (r["orig_width"], r["orig_height"]) == (64, 48)
    with Image.open(io.BytesIO(r["image"])) as im:
        assert im.size == (48, 64) and im.getexif().get(0x0112) in (None, 1)
    # Content failures: the body arrived (status 200) but is no usable image.
    assert by_id[4]["content_type"] == "image/jpeg" and by_id[4]["http_status"] == 200
    assert by_id[5]["download_bytes"] == len(expect[5][1])
    assert (by_id[6]["orig_width"], by_id[6]["orig_height"]) == (20000, 20000)
    assert (by_id[7]["http_status"], by_id[7]["attempts"]) == (404, 1)  # no retry of a 404
    # No URL: no request at all.
    r = by_id[8]
    assert (r["attempts"], r["url"], r["http_status"]) == (0, None, None)
    assert len(srv.requests) == 7
    assert srv.count("/good.jpg") == 1


def test_fetch_rows_with_template_and_resize(srv: FetchServer, fetcher: Fetcher) -> None:
    def path(pid: int) -> str:
        h = f"{pid:032x}"
        return f"/img/{h[-3:]}/{h[1:]}.jpg"

    srv.route(path(1), Resp(body=jpeg_bytes(64, 48)))
    srv.route(path(2), Resp(body=jpeg_bytes(64, 48, exif_orientation=6)))
    srv.route(path(3), Resp(body=jpeg_bytes(20, 10)))
    template = UrlTemplate.parse(srv.url("/img/{hash[-3:]}/{hash[1:]}.jpg"), COLUMNS)
    rows = [_photo(i, None) for i in (1, 2, 3)]  # no download_url: the template is used
    rows.append({**_photo(4, None), "photo_hash": None})  # the template has nothing to use
    out = list(fetch_rows(rows, fetcher, ImageOptions(resize=32), template, "r1"))
    _check_carried(out, rows)
    by_id = {r["photo_id"]: r for r in rows_to_table(out).to_pylist()}
    assert [by_id[i]["status"] for i in (1, 2, 3, 4)] == ["ok", "ok", "ok", "bad_url"]
    assert by_id[4]["attempts"] == 0 and "empty" in by_id[4]["detail"]
    assert by_id[1]["url"] == srv.url(path(1)) == srv.url("/img/001/" + "0" * 30 + "1.jpg")

    expected = {1: (32, 24, 64, 48), 2: (24, 32, 64, 48), 3: (20, 10, 20, 10)}
    for pid, (w, h, ow, oh) in expected.items():
        r = by_id[pid]
        assert (r["width"], r["height"], r["orig_width"], r["orig_height"]) == (w, h, ow, oh)
        assert r["format"] == "jpeg"
        with Image.open(io.BytesIO(r["image"])) as im:
            assert im.format == "JPEG" and im.size == (w, h)
        assert r["sha256"] == hashlib.sha256(r["image"]).hexdigest()
    assert by_id[1]["image_bytes"] != by_id[1]["download_bytes"]  # re-encoded
    assert len(srv.requests) == 3


def test_fetch_rows_seconds_include_the_check(
    srv: FetchServer, fetcher: Fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_check(data: bytes, **kw):
        time.sleep(0.3)
        return check_image(data, **kw)

    monkeypatch.setattr(fetch_mod, "check_image", slow_check)
    url = srv.route("/a.jpg", Resp(body=jpeg_bytes()))
    (out,) = fetch_rows([_photo(1, url)], fetcher, ImageOptions(), None, "r1")
    assert out["status"] == "ok"
    assert out["seconds"] >= 0.3


def test_run_batches(srv: FetchServer, fetcher: Fetcher) -> None:
    good = jpeg_bytes(32, 32)
    srv.route("/ok.jpg", Resp(body=good))
    srv.route("/page.jpg", Resp(body=b"<html></html>"))
    rows = []
    for pid in range(10):
        kind = ("/ok.jpg", "/ok.jpg", "/page.jpg", "/missing.jpg", None)[pid % 5]
        rows.append(_photo(pid, srv.url(f"{kind}?p={pid}") if kind else None))
    tables: list[pa.Table] = []
    progress = run_batches(rows, fetcher, ImageOptions(), None, "r1", tables.append,
                           label="t", flush_rows=3)  # fmt: skip
    assert tables and all(t.num_rows <= 3 for t in tables)
    assert sum(t.num_rows for t in tables) == 10
    assert all(t.schema == schemas.IMAGES for t in tables)
    out = [r for t in tables for r in t.to_pylist()]
    _check_carried(out, rows)
    counts = Counter(r["status"] for r in out)
    assert counts == {"ok": 4, "not_image": 2, "http_404": 2, "bad_url": 2}
    assert progress.counts == counts
    assert progress.total == 10
    assert progress.image_bytes == 4 * len(good)
    assert progress.download_bytes == sum(r["download_bytes"] or 0 for r in out)
    # What a Spark task hands back: the same sums, per status.
    batch = {r["status"]: r for r in progress.counts_batch().to_pylist()}
    assert batch.keys() == counts.keys()
    for status, r in batch.items():
        rows_s = [x for x in out if x["status"] == status]
        assert r["n"] == len(rows_s)
        assert r["download_bytes"] == sum(x["download_bytes"] or 0 for x in rows_s)
        assert r["image_bytes"] == sum(x["image_bytes"] or 0 for x in rows_s)


def test_run_batches_flushes_by_bytes(srv: FetchServer, fetcher: Fetcher) -> None:
    body = jpeg_bytes(32, 32)
    url = srv.route("/ok.jpg", Resp(body=body))
    tables: list[pa.Table] = []
    rows = [_photo(i, f"{url}?{i}") for i in range(4)]
    run_batches(rows, fetcher, ImageOptions(), None, "r1", tables.append, label="t",
                flush_bytes=len(body))  # fmt: skip
    assert [t.num_rows for t in tables] == [1, 1, 1, 1]


def test_run_batches_without_rows_writes_nothing(fetcher: Fetcher) -> None:
    tables: list[pa.Table] = []
    progress = run_batches([], fetcher, ImageOptions(), None, "r1", tables.append, label="t")
    assert tables == [] and sum(progress.counts.values()) == 0


def test_repair_is_needed_only_after_retries_or_unrepaired_runs(tmp_path):
    """A run's own files need no repair unless a partition was written by two task
    attempts; an older run that never recorded itself as clean, or --retry-failed, does."""
    from faceatlas.runfiles import mark_clean
    from faceatlas.spark_fetch import FetchJob, _may_have_duplicates

    images = str(tmp_path / "images")
    run, old = "20261122T010000-abcdef", "20261121T010000-123456"

    def name(r: str, part: int, tid: int, seq: int = 0) -> str:
        return f"{images}/country=NL/part-{r}-{part:05d}-{tid}-{seq:04d}.parquet"

    job = FetchJob()
    one_each = [name(run, 0, 7), name(run, 0, 7, 1), name(run, 1, 8)]
    assert not _may_have_duplicates(images, one_each, job, run)
    assert _may_have_duplicates(images, [*one_each, name(run, 1, 12)], job, run)
    assert _may_have_duplicates(images, [name(old, 0, 3), *one_each], job, run)
    mark_clean(images, [old])
    assert not _may_have_duplicates(images, [name(old, 0, 3), *one_each], job, run)
    assert _may_have_duplicates(images, one_each, FetchJob(retry_failed=("timeout",)), run)
