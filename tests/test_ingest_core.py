"""Unit tests for faceatlas.ingest's core (`ingest_batch`, no Spark), against synth's truth."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from yfcc_lines import BASE, make_line

from faceatlas import schemas, synth
from faceatlas.ingest import (
    DEFAULT_DENY_TAGS,
    FILTER_REASONS,
    LICENSE_PRESETS,
    QUARANTINE_REASONS,
    BatchResult,
    IngestOptions,
    accounting,
    counts_batch,
    expand_licenses,
    ingest_batch,
)
from faceatlas.synth import SynthSpec, Truth

CONTINENTS = {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
SOURCE = "file.txt"

WINDHOEK = ("-22.56", "17.08")
NEW_YORK = ("40.7128", "-74.0060")
PACIFIC = ("0", "-150")


def at(lat_lon: tuple[str, str], layout: int = 23, **overrides: str | bytes) -> bytes:
    return make_line(layout, latitude=lat_lon[0], longitude=lat_lon[1], **overrides)


def run(lines: list[bytes], opts: IngestOptions | None = None) -> BatchResult:
    return ingest_batch(pa.array(lines, pa.binary()), SOURCE, opts or IngestOptions())


def check_schemas(result: BatchResult) -> None:
    assert result.photos.schema == schemas.PHOTOS
    assert result.quarantine.schema == schemas.QUARANTINE_INGEST


def check_accounting(result: BatchResult, n_lines: int) -> None:
    c = result.counts
    kept = sum(v for (k, _), v in c.items() if k == "kept")
    filtered = sum(v for (k, _), v in c.items() if k == "filtered")
    quarantined = sum(v for (k, _), v in c.items() if k == "quarantine")
    videos = sum(v for (k, _), v in c.items() if k == "video")
    assert set(k for k, _ in c) <= {"kept", "filtered", "quarantine", "video"}
    assert kept + filtered + quarantined + videos == n_lines
    assert result.photos.num_rows == kept
    assert result.quarantine.num_rows == quarantined


# ---------------------------------------------------------------------------------------------
# Synthetic files with a known truth
# ---------------------------------------------------------------------------------------------

N_SPECIAL = 15


def _spec(layout: str, lines: int = 2000, seed: int = 11, **kw) -> SynthSpec:
    return SynthSpec(
        lines=lines,
        layout=layout,
        broken={k: N_SPECIAL for k in synth.BROKEN_KINDS},
        filtered={k: N_SPECIAL for k in synth.FILTER_KINDS},
        seed=seed,
        **kw,
    )


_CACHE: dict[str, tuple[list[str], Truth, BatchResult]] = {}


def synth_run(layout: str) -> tuple[list[str], Truth, BatchResult]:
    if layout not in _CACHE:
        lines, truth = synth.generate(_spec(layout))
        arr = pa.array([line.encode() for line in lines], pa.binary())
        _CACHE[layout] = (lines, truth, ingest_batch(arr, SOURCE, IngestOptions()))
    return _CACHE[layout]


LAYOUTS = ["23", "25", "mixed"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_counts_match_truth_exactly(layout: str) -> None:
    lines, truth, result = synth_run(layout)
    assert isinstance(result.counts, Counter)
    assert result.counts == truth.counts
    assert sum(result.counts.values()) == len(lines) == truth.lines
    for kind in synth.BROKEN_KINDS:
        assert result.counts[("quarantine", kind)] == N_SPECIAL
    for kind in synth.FILTER_KINDS:
        assert result.counts[("filtered", kind)] == N_SPECIAL


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_accounting_and_row_counts(layout: str) -> None:
    lines, truth, result = synth_run(layout)
    check_accounting(result, len(lines))
    assert result.photos.num_rows == truth.counts[("kept", "kept")]
    quarantined = sum(v for (k, _), v in truth.counts.items() if k == "quarantine")
    assert result.quarantine.num_rows == quarantined
    reasons = Counter(result.quarantine.column("reason").to_pylist())
    assert reasons == {k: N_SPECIAL for k in synth.BROKEN_KINDS}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_kept_ids_equal_truth(layout: str) -> None:
    _, truth, result = synth_run(layout)
    ids = result.photos.column("photo_id").to_pylist()
    assert ids == list(truth.country)  # same ids, in line order
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_geocoded_country_matches_truth(layout: str) -> None:
    _, truth, result = synth_run(layout)
    ids = result.photos.column("photo_id").to_pylist()
    countries = result.photos.column("country").to_pylist()
    assert len(ids) > 500
    hits = sum(truth.country[i] == c for i, c in zip(ids, countries, strict=True))
    assert hits >= 0.99 * len(ids)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_continents_are_valid_and_never_null(layout: str) -> None:
    _, _, result = synth_run(layout)
    continents = result.photos.column("continent")
    assert continents.null_count == 0
    assert set(continents.to_pylist()) <= CONTINENTS
    assert len(set(continents.to_pylist())) >= 5  # places are spread over the world


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_schemas(layout: str) -> None:
    _, _, result = synth_run(layout)
    check_schemas(result)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_synth_kept_rows_are_parsed(layout: str) -> None:
    _, truth, result = synth_run(layout)
    p = result.photos
    assert p.column("source_file").to_pylist() == [SOURCE] * p.num_rows
    assert set(p.column("marker").to_pylist()) == {0}
    codes = p.column("license_code").to_pylist()
    ids = p.column("photo_id").to_pylist()
    assert codes == [truth.license[i] for i in ids]
    assert p.column("accuracy").to_pylist() == [truth.accuracy[i] for i in ids]
    assert p.column("user_id").null_count == 0
    assert p.column("uploaded_at").null_count == 0
    assert not any(p.column("uploaded_at_bogus").to_pylist())
    # Synth makes about 1% of taken dates 4501-01-01: null and flagged, never otherwise.
    taken = p.column("taken_at").to_pylist()
    bogus = p.column("taken_at_bogus").to_pylist()
    assert [t is None for t in taken] == bogus
    assert 0 < sum(bogus) < 0.05 * len(bogus)
    lnum = p.column("line_number")
    if layout == "23":
        assert lnum.null_count == p.num_rows
        assert p.column("photo_hash").null_count == p.num_rows
    elif layout == "25":
        assert lnum.null_count == 0
        assert p.column("photo_hash").null_count == 0
    else:
        assert 0 < lnum.null_count < p.num_rows


def test_synth_quarantine_rows_hold_their_lines() -> None:
    lines, _, result = synth_run("mixed")
    q = result.quarantine
    raw = q.column("raw_line").to_pylist()
    assert set(raw) <= set(lines)
    assert q.column("raw_length").to_pylist() == [len(r.encode()) for r in raw]
    assert q.column("source_file").to_pylist() == [SOURCE] * q.num_rows


def test_synth_string_input_gives_the_same_result() -> None:
    lines, _, result = synth_run("25")
    again = ingest_batch(pa.array(lines, pa.string()), SOURCE, IngestOptions())
    assert again.counts == result.counts
    assert again.photos.equals(result.photos)
    assert again.quarantine.equals(result.quarantine)


def test_determinism_same_batch_twice() -> None:
    lines, truth = synth.generate(_spec("mixed", lines=800, seed=5))
    arr = pa.array([line.encode() for line in lines], pa.binary())
    opts = IngestOptions(now="2020-01-01T00:00:00")
    a = ingest_batch(arr, SOURCE, opts)
    b = ingest_batch(arr, SOURCE, opts)
    assert a.counts == b.counts == truth.counts
    assert a.photos.equals(b.photos)
    assert a.quarantine.equals(b.quarantine)
    assert a.photos.num_rows > 0


# ---------------------------------------------------------------------------------------------
# A single good line, fully parsed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [23, 25])
def test_good_line_parsed_fields(layout: int) -> None:
    result = run([make_line(layout)])
    check_schemas(result)
    assert result.counts == Counter({("kept", "kept"): 1})
    row = result.photos.to_pylist()[0]
    assert row["photo_id"] == 123456
    assert row["line_number"] == (7 if layout == 25 else None)
    assert row["photo_hash"] == (BASE["photo_hash"] if layout == 25 else None)
    assert row["user_id"] == "12345678@N00"
    assert row["user_nickname"] == "some user"
    assert row["title"] == "Eiffel Tower, café"
    assert row["capture_device"] == "Canon EOS 400D"
    assert row["user_tags"] == ["paris", "eiffel tower"]
    assert row["machine_tags"] == ["vision:outdoor=0962"]
    assert row["taken_at"] == dt.datetime(2010, 5, 31, 0, 5, 58)
    assert row["uploaded_at"] == dt.datetime(2010, 5, 31, 0, 5, 58, tzinfo=dt.UTC)
    assert row["taken_at_bogus"] is False
    assert row["uploaded_at_bogus"] is False
    assert row["latitude"] == pytest.approx(48.85837)
    assert row["longitude"] == pytest.approx(2.294481)
    assert row["accuracy"] == 16
    assert row["server_id"] == 1234
    assert row["farm_id"] == 5
    assert row["license_name"] == "Attribution License"
    assert row["license_code"] == "by"
    assert row["marker"] == 0
    assert row["country"] == "FR"
    assert row["continent"] == "EU"
    assert row["country_name"] == "France"
    assert row["place_km"] < 10
    assert row["far_from_place"] is False
    assert row["source_file"] == SOURCE
    assert result.quarantine.num_rows == 0


def test_sources_can_be_an_array() -> None:
    lines = [make_line(photo_id="1"), make_line(photo_id="x"), make_line(photo_id="3")]
    sources = pa.array(["a.txt", "b.txt", "c.txt"])
    result = ingest_batch(pa.array(lines, pa.binary()), sources, IngestOptions())
    assert result.photos.column("source_file").to_pylist() == ["a.txt", "c.txt"]
    assert result.quarantine.column("source_file").to_pylist() == ["b.txt"]


def test_missing_optional_numbers_are_null_not_quarantined() -> None:
    result = run([make_line(accuracy="", server_id="", farm_id="")])
    assert result.counts == Counter({("kept", "kept"): 1})
    row = result.photos.to_pylist()[0]
    assert (row["accuracy"], row["server_id"], row["farm_id"]) == (None, None, None)


# ---------------------------------------------------------------------------------------------
# Quarantine, one reason at a time
# ---------------------------------------------------------------------------------------------

QUARANTINE_CASES = {
    "field_count_22": (make_line(23).rsplit(b"\t", 1)[0], "field_count",
                       "need 23 or 25 tab-separated fields", None),
    "field_count_24": (make_line(23) + b"\tx", "field_count",
                       "need 23 or 25 tab-separated fields", None),
    "bad_id": (make_line(photo_id="12x"), "bad_id", "photo_id", None),
    "bad_id_negative": (make_line(photo_id="-5"), "bad_id", "photo_id", None),
    "bad_id_empty_25": (make_line(25, photo_id=""), "bad_id", "photo_id", None),
    "bad_line_number": (make_line(25, line_number="x7"), "bad_id", "line_number", 123456),
    "bad_marker": (make_line(marker="2"), "bad_marker", "", 123456),
    "bad_marker_empty": (make_line(25, marker=""), "bad_marker", "", 123456),
    "latitude_95": (make_line(latitude="95"), "bad_coordinates", "out of range", 123456),
    "longitude_181": (make_line(longitude="-181.5"), "bad_coordinates", "out of range",
                      123456),
    "longitude_east": (make_line(longitude="east"), "bad_coordinates", "not a number", 123456),
    "only_longitude": (make_line(latitude=""), "bad_coordinates", "one of longitude/latitude",
                       123456),
    "only_latitude": (make_line(25, longitude=""), "bad_coordinates",
                      "one of longitude/latitude", 123456),
    "title_escape": (make_line(title="broken%G1title"), "bad_encoding", "title", 123456),
    "title_cut_escape": (make_line(25, title="cut%E"), "bad_encoding", "title", 123456),
    "title_bad_utf8": (make_line(title="%C3%28+x"), "bad_encoding", "title", 123456),
    "description_escape": (make_line(description="x%"), "bad_encoding", "description",
                           123456),
    "tag_escape": (make_line(user_tags="ok,b%G1d"), "bad_encoding", "user_tags", 123456),
    "accuracy_street": (make_line(accuracy="street"), "bad_number", "accuracy", 123456),
    "server_id": (make_line(server_id="12a"), "bad_number", "server_id", 123456),
    "farm_id": (make_line(25, farm_id="-1"), "bad_number", "farm_id", 123456),
}  # fmt: skip


@pytest.mark.parametrize(
    ("line", "reason", "detail", "photo_id"),
    list(QUARANTINE_CASES.values()),
    ids=list(QUARANTINE_CASES),
)
def test_quarantine_reason(line: bytes, reason: str, detail: str, photo_id: int | None) -> None:
    assert reason in QUARANTINE_REASONS
    good = make_line(photo_id="999")
    result = run([good, line, good])
    check_schemas(result)
    assert result.counts == Counter({("kept", "kept"): 2, ("quarantine", reason): 1})
    assert result.photos.column("photo_id").to_pylist() == [999, 999]
    (row,) = result.quarantine.to_pylist()
    assert row["reason"] == reason
    assert row["detail"] == detail
    assert row["photo_id"] == photo_id
    assert row["raw_line"] == line.decode()
    assert row["raw_length"] == len(line)
    assert row["source_file"] == SOURCE


def test_all_quarantine_reasons_in_one_batch() -> None:
    lines = [case[0] for case in QUARANTINE_CASES.values()]
    result = run(lines)
    check_accounting(result, len(lines))
    q = result.quarantine
    assert q.column("reason").to_pylist() == [case[1] for case in QUARANTINE_CASES.values()]
    assert q.column("detail").to_pylist() == [case[2] for case in QUARANTINE_CASES.values()]
    assert q.column("raw_line").to_pylist() == [line.decode() for line in lines]


def test_quarantine_raw_line_is_truncated_to_raw_limit() -> None:
    line = make_line(title="x" * 5000, marker="9")
    assert len(line) > 2048
    result = run([line])
    (row,) = result.quarantine.to_pylist()
    assert row["reason"] == "bad_marker"
    assert row["raw_length"] == len(line)
    assert row["raw_line"] == line[:2048].decode()
    assert len(row["raw_line"].encode()) == 2048

    result = run([line], IngestOptions(raw_limit=100))
    (row,) = result.quarantine.to_pylist()
    assert row["raw_line"] == line[:100].decode()
    assert row["raw_length"] == len(line)


def test_quarantine_raw_line_cut_inside_a_multibyte_character() -> None:
    line = make_line(photo_id="1", title="café") + b"\textra"  # 24 fields
    cut = line.index("é".encode()) + 1  # between the two bytes of 'é'
    result = run([line], IngestOptions(raw_limit=cut))
    (row,) = result.quarantine.to_pylist()
    assert row["raw_line"] == line[: cut - 1].decode() + "\ufffd"
    assert row["raw_length"] == len(line)


def test_invalid_utf8_in_a_text_field_is_bad_encoding() -> None:
    line = make_line(title=b"bad\xffbyte")
    result = run([line, make_line()])
    assert result.counts == Counter({("kept", "kept"): 1, ("quarantine", "bad_encoding"): 1})
    (row,) = result.quarantine.to_pylist()
    assert row["detail"] == "title"
    assert isinstance(row["raw_line"], str)
    assert row["raw_line"] == line.decode("utf-8", errors="replace")
    assert "bad\ufffdbyte" in row["raw_line"]
    assert row["raw_length"] == len(line)
    result.quarantine.validate(full=True)


@pytest.mark.parametrize(
    "name",
    ["user_nickname", "description", "user_tags", "machine_tags", "user_id", "page_url",
     "download_url", "secret", "original_extension"],
)  # fmt: skip
def test_invalid_utf8_in_other_fields_is_bad_encoding(name: str) -> None:
    result = run([make_line(**{name: b"\xfe\xff"})])
    assert result.counts == Counter({("quarantine", "bad_encoding"): 1})
    assert result.quarantine.column("detail").to_pylist() == [name]


def test_invalid_utf8_in_photo_hash_is_bad_encoding() -> None:
    result = run([make_line(25, photo_hash=b"\xc3\x28")])
    assert result.counts == Counter({("quarantine", "bad_encoding"): 1})
    assert result.quarantine.column("detail").to_pylist() == ["photo_hash"]


def test_invalid_utf8_marker_is_bad_marker_not_an_exception() -> None:
    result = run([make_line(marker=b"\xff"), make_line()])
    assert result.counts == Counter({("kept", "kept"): 1, ("quarantine", "bad_marker"): 1})


def test_invalid_utf8_license_url_is_bad_encoding_not_an_exception() -> None:
    result = run([make_line(license_url=b"http://creativecommons.org/\xff/"), make_line()])
    assert result.counts == Counter({("kept", "kept"): 1, ("quarantine", "bad_encoding"): 1})
    assert result.quarantine.column("detail").to_pylist() == ["license_url"]


def test_invalid_utf8_date_taken_does_not_fail_the_batch() -> None:
    result = run([make_line(date_taken=b"\xff2010-05-31"), make_line(photo_id="2")])
    assert sum(result.counts.values()) == 2
    assert 2 in result.photos.column("photo_id").to_pylist()
    # Either quarantined, or kept with a null, bogus date.
    if result.counts[("kept", "kept")] == 2:
        row = result.photos.to_pylist()[0]
        assert row["taken_at"] is None
        assert row["taken_at_bogus"] is True
    else:
        assert result.counts[("quarantine", "bad_encoding")] == 1


def test_invalid_utf8_date_uploaded_is_bogus() -> None:
    result = run([make_line(date_uploaded=b"\xff12")])
    assert result.counts == Counter({("kept", "kept"): 1})
    row = result.photos.to_pylist()[0]
    assert row["uploaded_at"] is None
    assert row["uploaded_at_bogus"] is True


@pytest.mark.parametrize("name", ["accuracy", "server_id", "farm_id"])
def test_numbers_too_big_for_int32_are_not_wrapped(name: str) -> None:
    result = run([make_line(**{name: "4294967297"})])
    if result.counts == Counter({("quarantine", "bad_number"): 1}):
        return
    assert result.photos.column(name).to_pylist() in ([None], [4294967297])


# ---------------------------------------------------------------------------------------------
# Outcome order: the first matching outcome wins
# ---------------------------------------------------------------------------------------------

ORDER_CASES = {
    "field_count_before_bad_id": (make_line(photo_id="x") + b"\ty", ("quarantine", "field_count")),
    "bad_id_before_marker": (make_line(photo_id="x", marker="7"), ("quarantine", "bad_id")),
    "marker_before_video": (make_line(marker="2", latitude="95"), ("quarantine", "bad_marker")),
    "video_before_coordinates": (make_line(marker="1", latitude="95"), ("video", "video")),
    "video_before_encoding": (make_line(marker="1", title="%G1"), ("video", "video")),
    "not_geotagged_before_encoding": (
        make_line(latitude="", longitude="", title="%G1"), ("filtered", "not_geotagged")),
    "coordinates_before_encoding": (
        make_line(latitude="x", title="%G1"), ("quarantine", "bad_coordinates")),
    "zero_before_encoding": (
        make_line(latitude="0", longitude="0", title="%G1"), ("filtered", "zero_coordinates")),
    "encoding_before_number": (
        make_line(title="%G1", accuracy="street"), ("quarantine", "bad_encoding")),
    "number_before_license": (
        make_line(accuracy="street", license_url="http://creativecommons.org/licenses/by-nc/2.0/"),
        ("quarantine", "bad_number")),
    "license_before_accuracy": (
        make_line(accuracy="1", license_url="http://creativecommons.org/licenses/by-nc/2.0/"),
        ("filtered", "license")),
    "accuracy_before_holiday": (
        make_line(accuracy="1", user_tags="vacation"), ("filtered", "accuracy")),
    "holiday_before_far": (at(PACIFIC, user_tags="vacation"), ("filtered", "holiday_tag")),
}  # fmt: skip


@pytest.mark.parametrize(("line", "outcome"), list(ORDER_CASES.values()), ids=list(ORDER_CASES))
def test_first_outcome_wins(line: bytes, outcome: tuple[str, str]) -> None:
    opts = IngestOptions(licenses=expand_licenses(["reuse"]), min_accuracy=5, max_place_km=100.0)
    result = run([line], opts)
    assert result.counts == Counter({outcome: 1})


def test_outcome_reasons_are_the_documented_ones() -> None:
    assert set(synth.BROKEN_KINDS) == set(QUARANTINE_REASONS)
    assert set(synth.FILTER_KINDS) <= set(FILTER_REASONS)


# ---------------------------------------------------------------------------------------------
# Videos, zero and missing coordinates
# ---------------------------------------------------------------------------------------------


def test_videos_are_counted_never_kept_or_quarantined() -> None:
    lines = [
        make_line(marker="1", photo_id="1"),
        make_line(marker="1", photo_id="2", latitude="", longitude=""),
        make_line(marker="1", photo_id="3", longitude="east"),
        make_line(25, marker="1", photo_id="4", accuracy="street"),
        make_line(marker="0", photo_id="5"),
    ]
    result = run(lines)
    assert result.counts == Counter({("video", "video"): 4, ("kept", "kept"): 1})
    assert result.photos.column("photo_id").to_pylist() == [5]
    assert result.quarantine.num_rows == 0


@pytest.mark.parametrize(("lat", "lon"), [("0", "0"), ("0.0", "-0.000"), ("-0", "0.0")])
def test_zero_coordinates_are_filtered(lat: str, lon: str) -> None:
    result = run([make_line(latitude=lat, longitude=lon), make_line(photo_id="2")])
    assert result.counts == Counter({("filtered", "zero_coordinates"): 1, ("kept", "kept"): 1})
    assert result.photos.column("photo_id").to_pylist() == [2]
    assert result.quarantine.num_rows == 0


def test_zero_on_one_axis_is_kept() -> None:
    result = run([make_line(latitude="0", longitude="9.5")])  # Gulf of Guinea
    assert result.counts == Counter({("kept", "kept"): 1})


@pytest.mark.parametrize("layout", [23, 25])
def test_empty_coordinates_are_not_geotagged(layout: int) -> None:
    result = run([make_line(layout, latitude="", longitude="", accuracy="")])
    assert result.counts == Counter({("filtered", "not_geotagged"): 1})
    assert result.photos.num_rows == 0
    assert result.quarantine.num_rows == 0


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_synth() -> tuple[pa.Array, Truth]:
    """A file of ordinary lines only (kept, not geotagged, videos)."""
    lines, truth = synth.generate(SynthSpec(lines=2000, layout="mixed", seed=21))
    return pa.array([line.encode() for line in lines], pa.binary()), truth


def test_license_allow_list_removes_exactly_the_other_licences(
    plain_synth: tuple[pa.Array, Truth],
) -> None:
    arr, truth = plain_synth
    reuse = expand_licenses(["reuse"])
    result = ingest_batch(arr, SOURCE, IngestOptions(licenses=reuse))
    expected = [i for i, code in truth.license.items() if code in reuse]
    dropped = [i for i, code in truth.license.items() if code not in reuse]
    assert 0 < len(expected) < len(truth.license)
    assert result.photos.column("photo_id").to_pylist() == expected
    assert result.counts[("filtered", "license")] == len(dropped)
    assert set(result.photos.column("license_code").to_pylist()) <= set(reuse)
    check_accounting(result, len(arr))


def test_license_allow_list_drops_unknown_licences() -> None:
    opts = IngestOptions(licenses=("by",))
    result = run([make_line(license_url="junk"), make_line(license_url="")], opts)
    assert result.counts == Counter({("filtered", "license"): 2})
    result = run([make_line(license_url="junk")])  # no allow-list: kept
    assert result.counts == Counter({("kept", "kept"): 1})
    assert result.photos.column("license_code").to_pylist() == [None]


@pytest.mark.parametrize("minimum", [1, 10, 16])
def test_min_accuracy_against_truth(plain_synth: tuple[pa.Array, Truth], minimum: int) -> None:
    arr, truth = plain_synth
    result = ingest_batch(arr, SOURCE, IngestOptions(min_accuracy=minimum))
    expected = [i for i, acc in truth.accuracy.items() if acc >= minimum]
    assert result.photos.column("photo_id").to_pylist() == expected
    assert result.counts[("filtered", "accuracy")] == len(truth.accuracy) - len(expected)
    assert min(result.photos.column("accuracy").to_pylist()) >= minimum


def test_min_accuracy_drops_missing_accuracy() -> None:
    opts = IngestOptions(min_accuracy=1)
    result = run([make_line(accuracy=""), make_line(photo_id="2", accuracy="1")], opts)
    assert result.counts == Counter({("filtered", "accuracy"): 1, ("kept", "kept"): 1})
    assert result.photos.column("photo_id").to_pylist() == [2]


def test_deny_tags_whole_tags_and_words_of_tags() -> None:
    lines = [
        make_line(photo_id="1", user_tags="summer+vacation"),
        make_line(photo_id="2", user_tags="beach,vacation"),
        make_line(photo_id="3", user_tags="tripod"),
        make_line(photo_id="4", user_tags="Holiday"),
        make_line(photo_id="5", user_tags="roadtrips,untravelled"),
        make_line(photo_id="6", user_tags="my+TRIP+to+rome"),
        make_line(photo_id="7", user_tags=""),
        make_line(photo_id="8", user_tags="vacation", machine_tags="trip"),
    ]
    result = run(lines)
    assert result.photos.column("photo_id").to_pylist() == [3, 5, 7]
    assert result.counts == Counter({("filtered", "holiday_tag"): 5, ("kept", "kept"): 3})
    assert result.photos.column("user_tags").to_pylist()[0] == ["tripod"]


def test_deny_tags_only_user_tags_not_machine_tags() -> None:
    result = run([make_line(user_tags="", machine_tags="trip")])
    assert result.counts == Counter({("kept", "kept"): 1})


def test_deny_tags_custom_and_disabled() -> None:
    lines = [make_line(photo_id="1", user_tags="vacation"),
             make_line(photo_id="2", user_tags="old+bridge")]  # fmt: skip
    result = run(lines, IngestOptions(deny_tags=()))
    assert result.photos.column("photo_id").to_pylist() == [1, 2]
    result = run(lines, IngestOptions(deny_tags=("bridge",)))
    assert result.photos.column("photo_id").to_pylist() == [1]
    assert "vacation" in DEFAULT_DENY_TAGS
    assert "trip" in DEFAULT_DENY_TAGS


def test_max_place_km_drops_the_middle_of_the_pacific() -> None:
    lines = [at(PACIFIC, photo_id="1"), at(NEW_YORK, photo_id="2"), make_line(photo_id="3")]
    result = run(lines, IngestOptions(max_place_km=100.0))
    assert result.counts == Counter({("filtered", "far_from_place"): 1, ("kept", "kept"): 2})
    assert result.photos.column("photo_id").to_pylist() == [2, 3]
    assert not any(result.photos.column("far_from_place").to_pylist())


def test_far_from_place_flag_without_max_place_km() -> None:
    lines = [at(PACIFIC, photo_id="1"), at(NEW_YORK, photo_id="2")]
    result = run(lines)
    assert result.counts == Counter({("kept", "kept"): 2})
    rows = result.photos.to_pylist()
    assert rows[0]["far_from_place"] is True
    assert rows[0]["place_km"] > 100
    assert rows[1]["far_from_place"] is False
    assert rows[1]["place_km"] < 50
    # far_km moves the flag's threshold.
    result = run(lines, IngestOptions(far_km=1e5))
    assert result.photos.column("far_from_place").to_pylist() == [False, False]


# ---------------------------------------------------------------------------------------------
# Namibia and North America: "NA" is a code, not a missing value
# ---------------------------------------------------------------------------------------------


def test_namibia_and_north_america(tmp_path: Path) -> None:
    lines = [at(WINDHOEK, photo_id="1"), at(NEW_YORK, photo_id="2", layout=25)]
    result = run(lines)
    rows = result.photos.to_pylist()
    assert (rows[0]["country"], rows[0]["continent"]) == ("NA", "AF")
    assert rows[0]["country_name"] == "Namibia"
    assert (rows[1]["country"], rows[1]["continent"]) == ("US", "NA")
    assert result.photos.column("country").null_count == 0
    assert result.photos.column("continent").null_count == 0

    out = tmp_path / "photos"
    pq.write_to_dataset(result.photos, str(out), partition_cols=list(schemas.PHOTOS_PARTITIONS))
    assert (out / "continent=AF" / "country=NA").is_dir()
    assert (out / "continent=NA" / "country=US").is_dir()
    df = pd.read_parquet(out).sort_values("photo_id").reset_index(drop=True)
    assert df["photo_id"].tolist() == [1, 2]
    assert not df["country"].isna().any()
    assert not df["continent"].isna().any()
    assert [str(v) for v in df["country"]] == ["NA", "US"]
    assert [str(v) for v in df["continent"]] == ["AF", "NA"]
    assert all(isinstance(v, str) for v in df["country"].tolist())
    assert all(isinstance(v, str) for v in df["continent"].tolist())


# ---------------------------------------------------------------------------------------------
# counts_batch: what a task hands back to the driver
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_counts_batch_round_trips_the_counts(layout: str) -> None:
    lines, truth, result = synth_run(layout)
    batch = counts_batch(result.counts)
    assert batch.schema == schemas.INGEST_COUNTS
    got = Counter()
    for row in batch.to_pylist():
        got[(row["kind"], row["reason"])] += row["n"]
    assert got == truth.counts
    assert sum(batch.column("n").to_pylist()) == len(lines)
    assert accounting(got)["lines_read"] == len(lines)


def test_counts_batch_of_nothing_is_empty() -> None:
    batch = counts_batch(Counter())
    assert batch.num_rows == 0 and batch.schema == schemas.INGEST_COUNTS


def test_accounting_rejects_undocumented_outcomes() -> None:
    with pytest.raises(AssertionError, match="outside the documented sets"):
        accounting(Counter({("quarantine", "made_up"): 1}))
    acct = accounting(Counter({("kept", "kept"): 3, ("filtered", "license"): 2,
                               ("quarantine", "bad_id"): 1, ("video", "video"): 4}))  # fmt: skip
    assert acct["lines_read"] == 10
    assert acct["filtered"]["license"] == 2 and acct["filtered"]["not_geotagged"] == 0
    assert acct["quarantined_total"] == 1 and acct["videos"] == 4


# ---------------------------------------------------------------------------------------------
# expand_licenses
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["reuse"], ("by", "by-sa", "cc0", "pdm")),
        (["noncommercial"], LICENSE_PRESETS["noncommercial"]),
        (["by,by-sa"], ("by", "by-sa")),
        (["by", "by-nc"], ("by", "by-nc")),
        (["by, BY-SA ,,"], ("by", "by-sa")),
        (["reuse", "by", "cc0,by-nc"], ("by", "by-sa", "cc0", "pdm", "by-nc")),
        (["by,by", "by"], ("by",)),
        (["all"], None),
        (["ALL"], None),
        ([""], None),
        ([], None),
        (None, None),
    ],
)
def test_expand_licenses(values: list[str] | None, expected: tuple[str, ...] | None) -> None:
    assert expand_licenses(values) == expected


@pytest.mark.parametrize("typo", ["by-nx", "cc-by", "reuse,bx"])
def test_expand_licenses_rejects_unknown_codes(typo: str) -> None:
    # A typo would otherwise filter out every photo without a word.
    with pytest.raises(ValueError, match="unknown licence"):
        expand_licenses([typo])


def test_expand_licenses_reuse_preset_is_commercial_and_adaptable() -> None:
    reuse = expand_licenses(["reuse"])
    assert reuse is not None
    assert not any("nc" in code.split("-") or "nd" in code.split("-") for code in reuse)


# ---------------------------------------------------------------------------------------------
# Empty batch, options
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", [pa.binary(), pa.string()])
def test_empty_batch(typ: pa.DataType) -> None:
    result = ingest_batch(pa.array([], typ), SOURCE, IngestOptions())
    check_schemas(result)
    assert result.photos.num_rows == 0
    assert result.quarantine.num_rows == 0
    assert result.counts == Counter()


def test_options_settings_hash_ignores_now() -> None:
    a = IngestOptions(now="2020-01-01")
    b = IngestOptions(now="2021-01-01")
    c = IngestOptions(min_accuracy=5)
    assert a.settings_hash() == b.settings_hash()
    assert a.settings_hash() != c.settings_hash()
    assert "now" not in a.settings()
    assert a.now64() == np.datetime64("2020-01-01T00:00:00", "us")
