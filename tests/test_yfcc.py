"""Unit tests for faceatlas.yfcc (row layouts, splitting and typed parsing of fields)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from yfcc_lines import BASE

from faceatlas import synth
from faceatlas.synth import SynthSpec
from faceatlas.yfcc import (
    FIELDS_23,
    FIELDS_25,
    license_code,
    parse_float,
    parse_int,
    parse_taken,
    parse_uploaded,
    split_lines,
)

NOW = np.datetime64("2020-01-01T00:00:00", "us")

VALUES = {
    **BASE,
    "line_number": "17",
    "photo_id": "4514321773",
    "photo_hash": "0f8c1e2d3a4b5c6d7e8f90a1b2c3d4e5",
    "capture_device": "Canon+EOS+400D+DIGITAL",
    "title": "caf%C3%A9",
    "description": "",
    "machine_tags": "",
    "page_url": "http://www.flickr.com/photos/12345678@N00/4514321773/",
    "download_url": "http://farm5.staticflickr.com/1234/4514321773_abc.jpg",
}


def _line(names: tuple[str, ...], **overrides: str) -> bytes:
    values = {**VALUES, **overrides}
    return "\t".join(values[n] for n in names).encode()


def _bin(values: list[bytes | str | None]) -> pa.Array:
    return pa.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], pa.binary())


# ---------------------------------------------------------------------------------------------
# Layouts and split_lines
# ---------------------------------------------------------------------------------------------


def test_layouts_have_the_documented_shape() -> None:
    assert len(FIELDS_23) == 23
    assert len(FIELDS_25) == 25
    assert FIELDS_25[:3] == ("line_number", "photo_id", "photo_hash")
    assert FIELDS_25[3:] == FIELDS_23[1:]
    assert FIELDS_23[0] == "photo_id"
    assert FIELDS_23[-1] == "marker"


def test_split_lines_same_names_same_values_across_layouts() -> None:
    sp = split_lines(_bin([_line(FIELDS_23), _line(FIELDS_25)]))
    assert sp.n_fields.tolist() == [23, 25]
    assert sp.layout_ok.tolist() == [True, True]
    for name in FIELDS_23:
        got = sp.field(name).to_pylist()
        assert got == [VALUES[name].encode()] * 2, name


def test_split_lines_fields_only_in_the_25_layout_are_null_in_23() -> None:
    sp = split_lines(_bin([_line(FIELDS_23), _line(FIELDS_25)]))
    assert sp.field("line_number").to_pylist() == [None, b"17"]
    assert sp.field("photo_hash").to_pylist() == [None, VALUES["photo_hash"].encode()]


def test_split_lines_unknown_field_name_is_all_null() -> None:
    sp = split_lines(_bin([_line(FIELDS_23), _line(FIELDS_25)]))
    assert sp.field("no_such_field").to_pylist() == [None, None]


@pytest.mark.parametrize("count", [0, 1, 5, 22, 24, 26, 30])
def test_split_lines_wrong_field_count_gives_null_for_every_field(count: int) -> None:
    fields = [f"f{i}" for i in range(max(count, 1))]
    bad = "\t".join(fields[:count]).encode() if count else b""
    sp = split_lines(_bin([_line(FIELDS_23), bad, _line(FIELDS_25)]))
    assert sp.layout_ok.tolist() == [True, False, True]
    assert sp.n_fields[1] == max(count, 1)  # an empty line is one empty field
    for name in FIELDS_25:
        col = sp.field(name).to_pylist()
        assert col[1] is None, name
    assert sp.field("photo_id").to_pylist() == [b"4514321773", None, b"4514321773"]


def test_split_lines_null_line_is_one_empty_field() -> None:
    sp = split_lines(pa.array([None, _line(FIELDS_23)], pa.binary()))
    assert sp.n_fields.tolist() == [1, 23]
    assert sp.field("marker").to_pylist() == [None, b"0"]


@pytest.mark.parametrize("names", [FIELDS_23, FIELDS_25], ids=["23", "25"])
def test_split_lines_drops_trailing_carriage_return(names: tuple[str, ...]) -> None:
    crlf = _line(names) + b"\r"
    sp = split_lines(_bin([crlf, _line(names)]))
    assert sp.n_fields.tolist() == [len(names)] * 2
    assert sp.field("marker").to_pylist() == [b"0", b"0"]
    assert sp.field("original_extension").to_pylist() == [b"jpg", b"jpg"]


def test_split_lines_only_one_trailing_carriage_return_and_not_inner_ones() -> None:
    line = _line(FIELDS_23, title="a\rb")
    sp = split_lines(_bin([line]))
    assert sp.field("title").to_pylist() == [b"a\rb"]


def test_split_lines_string_input() -> None:
    sp = split_lines(pa.array([_line(FIELDS_25).decode()], pa.string()))
    assert sp.field("photo_id").to_pylist() == [b"4514321773"]


def test_field_with_row_subset() -> None:
    lines = [
        _line(FIELDS_23, photo_id="1"),
        _line(FIELDS_25, photo_id="2"),
        b"short\tline",
        _line(FIELDS_23, photo_id="4"),
    ]
    sp = split_lines(_bin(lines))
    rows = np.array([3, 2, 1])
    assert sp.field("photo_id", rows).to_pylist() == [b"4", None, b"2"]
    assert sp.field("line_number", rows).to_pylist() == [None, None, b"17"]
    assert sp.field("photo_id", np.array([], dtype=np.int64)).to_pylist() == []


def test_split_lines_synthetic_mixed_file() -> None:
    spec = SynthSpec(lines=400, layout="mixed", seed=3, broken={"field_count": 20, "bad_id": 20})
    lines, _ = synth.generate(spec)
    sp = split_lines(_bin(lines))
    counts = set(sp.n_fields.tolist())
    assert {23, 25} <= counts
    ids = sp.field("photo_id").to_pylist()
    for i, (line, nf, pid) in enumerate(zip(lines, sp.n_fields.tolist(), ids, strict=True)):
        fields = line.split("\t")
        assert nf == len(fields)
        if nf == 23:
            assert pid == fields[0].encode()
        elif nf == 25:
            assert pid == fields[1].encode()
            assert sp.field("line_number", np.array([i])).to_pylist() == [fields[0].encode()]
        else:
            assert pid is None
        if nf in (23, 25):
            assert sp.field("marker", np.array([i])).to_pylist() == [fields[-1].encode()]
            assert sp.field("user_id", np.array([i])).to_pylist() == [fields[nf - 22].encode()]
    # The ids of lines that were not broken on purpose are the generator's running ids.
    good = [int(p) for p in ids if p is not None and p.isdigit() and int(p) >= spec.first_id]
    assert len(good) >= 350


# ---------------------------------------------------------------------------------------------
# parse_int / parse_float
# ---------------------------------------------------------------------------------------------


def test_parse_int() -> None:
    raw = _bin(
        ["123", "", "12a", "-5", "+5", " 5", "0", "999999999999999999",
         "1234567890123456789", None, "007", "1e9", "1.0"]
    )  # fmt: skip
    vals, has, ok = parse_int(raw)
    assert ok.tolist() == [True, False, False, False, False, False, True, True,
                           False, False, True, False, False]  # fmt: skip
    assert has.tolist() == [True, False, True, True, True, True, True, True,
                            True, False, True, True, True]  # fmt: skip
    assert vals[0] == 123
    assert vals[6] == 0
    assert vals[7] == 999_999_999_999_999_999
    assert vals[10] == 7
    assert vals.dtype == np.int64


def test_parse_int_rejects_19_digit_and_longer_ids() -> None:
    _, has, ok = parse_int(_bin(["9" * 19, "1" + "0" * 18, "1" * 25]))
    assert has.all()
    assert not ok.any()


def test_parse_int_empty_array() -> None:
    vals, has, ok = parse_int(pa.array([], pa.binary()))
    assert len(vals) == len(has) == len(ok) == 0


def test_parse_float() -> None:
    raw = _bin(
        ["48.858370", "-74.0", "", "east", "1e3", ".5", "1.", "nan", "inf", "1.2.3", None,
         "+2", "-0", "2.5E-1"]
    )  # fmt: skip
    vals, has, ok = parse_float(raw)
    assert ok.tolist() == [True, True, False, False, True, True, True, False, False,
                           False, False, True, True, True]  # fmt: skip
    assert has.tolist() == [True, True, False, True, True, True, True, True, True,
                            True, False, True, True, True]  # fmt: skip
    expected = {0: 48.85837, 1: -74.0, 4: 1000.0, 5: 0.5, 6: 1.0, 11: 2.0, 12: 0.0, 13: 0.25}
    for i, v in expected.items():
        assert vals[i] == pytest.approx(v), i
    assert np.isnan(vals[~ok]).all()
    assert vals.dtype == np.float64


# ---------------------------------------------------------------------------------------------
# parse_uploaded / parse_taken
# ---------------------------------------------------------------------------------------------


def test_parse_uploaded() -> None:
    raw = _bin(
        ["1275264358", "", "1000", "abc", "1072915200", "1072915199", None,
         str(int(dt.datetime(2020, 1, 3, tzinfo=dt.UTC).timestamp())), "-5"]
    )  # fmt: skip
    ts, bogus = parse_uploaded(raw, NOW)
    assert ts.type == pa.timestamp("us", tz="UTC")
    values = ts.to_pylist()
    assert values[0] == dt.datetime(2010, 5, 31, 0, 5, 58, tzinfo=dt.UTC)
    assert values[4] == dt.datetime(2004, 1, 1, tzinfo=dt.UTC)  # Flickr's first day is fine
    assert [values[i] for i in (1, 2, 3, 5, 6, 7, 8)] == [None] * 7
    # Empty or missing: unknown, not bogus. Before 2004, after now, not a number: bogus.
    assert bogus.tolist() == [False, False, True, True, False, True, False, True, True]


def test_parse_uploaded_within_a_day_after_now_is_fine() -> None:
    in_12h = int((NOW - np.datetime64("1970-01-01", "us")) / np.timedelta64(1, "s")) + 12 * 3600
    ts, bogus = parse_uploaded(_bin([str(in_12h)]), NOW)
    assert not bogus[0]
    assert ts.to_pylist()[0] == dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)


def test_parse_uploaded_huge_epoch_is_bogus_not_wrapped() -> None:
    # 18448014073710 s is about year 586,000; times 10**6 it overflows int64 and wraps to
    # 2010-03-31 01:46:40.448384.
    ts, bogus = parse_uploaded(_bin(["18448014073710"]), NOW)
    assert ts.to_pylist() == [None]
    assert bogus.tolist() == [True]


def _uploaded(values: list[str]) -> pa.Array:
    ts, _ = parse_uploaded(_bin(values), NOW)
    return ts


def test_parse_taken() -> None:
    up = "1275264358"  # 2010-05-31 00:05:58 UTC
    rows = [
        ("2010-05-31 00:05:58.0", up),  # fine
        ("4501-01-01 00:00:00.0", up),  # broken camera
        ("", up),  # unknown
        ("garbage", up),
        ("2010-06-01 00:05:59.0", up),  # more than a day after the upload
        ("2010-06-01 00:05:00.0", up),  # less than a day after: clock zones differ
        ("1800-01-01 00:00:00.0", up),  # before photography
        ("1826-01-01 00:00:00.0", up),  # the first photograph's year is allowed
        ("2019-12-31 23:00:00.0", ""),  # unknown upload: compared with now
        ("2020-01-03 00:00:00.0", ""),  # unknown upload, after now + 1 day
        ("2010-05-31 00:05:58", up),  # without fraction
        (None, up),
    ]
    taken, bogus = parse_taken(_bin([r[0] for r in rows]), _uploaded([r[1] for r in rows]), NOW)
    assert taken.type == pa.timestamp("us")
    values = taken.to_pylist()
    assert values[0] == dt.datetime(2010, 5, 31, 0, 5, 58)
    assert values[5] == dt.datetime(2010, 6, 1, 0, 5)
    assert values[7] == dt.datetime(1826, 1, 1)
    assert values[8] == dt.datetime(2019, 12, 31, 23)
    assert values[10] == dt.datetime(2010, 5, 31, 0, 5, 58)
    for i in (1, 2, 3, 4, 6, 9, 11):
        assert values[i] is None, i
    assert bogus.tolist() == [False, True, False, True, True, False, True, False, False,
                              True, False, False]  # fmt: skip


def test_parse_taken_4501_is_null_and_bogus() -> None:
    taken, bogus = parse_taken(_bin(["4501-01-01 00:00:00.0"]), _uploaded(["1275264358"]), NOW)
    assert taken.to_pylist() == [None]
    assert bogus.tolist() == [True]


def test_parse_taken_with_bogus_upload_uses_now() -> None:
    # The upload time is bogus (null), so a 2015 date is compared with now, not with 1970.
    taken, bogus = parse_taken(_bin(["2015-01-01 00:00:00.0"]), _uploaded(["1000"]), NOW)
    assert taken.to_pylist() == [dt.datetime(2015, 1, 1)]
    assert bogus.tolist() == [False]


def test_parse_taken_invalid_utf8_is_bogus_not_an_exception() -> None:
    taken, bogus = parse_taken(
        pa.array([b"2010-05-31 00:05:58.0", b"\xff2010"], pa.binary()),
        _uploaded(["1275264358", "1275264358"]),
        NOW,
    )
    assert taken.to_pylist() == [dt.datetime(2010, 5, 31, 0, 5, 58), None]
    assert bogus.tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# license_code
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://creativecommons.org/licenses/by/2.0/", "by"),
        ("http://creativecommons.org/licenses/by-sa/2.0/", "by-sa"),
        ("http://creativecommons.org/licenses/by-nd/2.0/", "by-nd"),
        ("http://creativecommons.org/licenses/by-nc/2.0/", "by-nc"),
        ("http://creativecommons.org/licenses/by-nc-sa/2.0/", "by-nc-sa"),
        ("http://creativecommons.org/licenses/by-nc-nd/2.0/", "by-nc-nd"),
        ("https://creativecommons.org/licenses/by/4.0/", "by"),
        ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0"),
        ("https://creativecommons.org/publicdomain/mark/1.0/", "pdm"),
        ("junk", None),
        ("", None),
        (None, None),
        ("http://example.com/", None),
        ("http://creativecommons.org/licenses/", None),
    ],
)
def test_license_code(url: str | None, code: str | None) -> None:
    out = license_code(_bin(["http://creativecommons.org/licenses/by/2.0/", url]))
    assert out.to_pylist() == ["by", code]


def test_license_code_column() -> None:
    urls = [url for _, url in synth.LICENSES]
    out = license_code(_bin(urls))
    assert out.to_pylist() == ["by", "by-sa", "by-nd", "by-nc", "by-nc-sa", "by-nc-nd"]
    assert pa.types.is_string(out.type)
