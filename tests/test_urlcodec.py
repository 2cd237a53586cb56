"""Unit tests for faceatlas.urlcodec (vectorised URL decoding of Arrow columns)."""

from __future__ import annotations

import random
import re
from urllib.parse import quote_plus, unquote_plus

import numpy as np
import pyarrow as pa
import pytest

from faceatlas.urlcodec import url_decode, url_decode_list, utf8_or_mask


def _bin(values: list[bytes | str | None]) -> pa.Array:
    return pa.array([v.encode("utf-8") if isinstance(v, str) else v for v in values], pa.binary())


def _decode(values: list[bytes | str | None]) -> tuple[list[str | None], list[bool]]:
    out, bad = url_decode(_bin(values))
    assert isinstance(bad, np.ndarray)
    assert bad.dtype == bool
    assert len(out) == len(values) == len(bad)
    return out.to_pylist(), bad.tolist()


# ---------------------------------------------------------------------------------------------
# url_decode
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a+b", "a b"),
        ("+++", "   "),
        ("%2B", "+"),
        ("1%2B1", "1+1"),
        ("%2C", ","),
        ("a%2Cb%2Cc", "a,b,c"),
        ("%25", "%"),
        ("%2541", "%41"),  # decoded once, never twice
        ("%41%42", "AB"),
        ("%4a%4A", "JJ"),  # lower- and upper-case hex digits
        ("caf%C3%A9", "café"),
        ("%E6%9D%B1%E4%BA%AC", "東京"),
        ("%F0%9F%98%80", "😀"),
        ("caf\u00e9+ok", "café ok"),  # raw (unescaped) UTF-8 passes through
        ("plain", "plain"),
    ],
)
def test_url_decode_single_values(raw: str, expected: str) -> None:
    out, bad = _decode([raw])
    assert out == [expected]
    assert bad == [False]


def test_url_decode_output_type_is_large_string() -> None:
    out, _ = url_decode(_bin(["a%20b", "c"]))
    assert out.type == pa.large_string()
    out, _ = url_decode(_bin(["no", "escapes"]))  # the fast path
    assert out.type == pa.large_string()


def test_url_decode_empty_and_null_values() -> None:
    # binary_buffers documents nulls as ''; neither is an error.
    out, bad = _decode(["", None, "a+b", None, ""])
    assert out == ["", "", "a b", "", ""]
    assert bad == [False] * 5


def test_url_decode_all_null_and_empty_array() -> None:
    out, bad = _decode([None, None])
    assert out == ["", ""]
    assert bad == [False, False]
    out, bad = url_decode(pa.array([], pa.binary()))
    assert len(out) == 0
    assert out.type == pa.large_string()
    assert bad.shape == (0,)


def test_url_decode_string_input() -> None:
    out, bad = url_decode(pa.array(["a+b", "%C3%A9", None, "x"], pa.string()))
    assert out.to_pylist() == ["a b", "é", "", "x"]
    assert not bad.any()


def test_url_decode_mix_of_rows_only_some_need_decoding() -> None:
    values = ["plain", "a+b", "", "x%2Cy", "untouched", "caf%C3%A9", "z"]
    out, bad = _decode(values)
    assert out == ["plain", "a b", "", "x,y", "untouched", "café", "z"]
    assert bad == [False] * len(values)


@pytest.mark.parametrize(
    "broken",
    [
        "%G1",
        "x%1G",
        "abc%",  # trailing %
        "abc%E",  # one hex digit, then end of value
        "%",
        "%%41",
        "%+1",  # '+' is not a hex digit
        "ok%zz",
    ],
)
def test_url_decode_broken_escape_flags_only_that_row(broken: str) -> None:
    values = ["a+b", broken, "caf%C3%A9", "%41"]
    out, bad = _decode(values)
    assert bad == [False, True, False, False]
    assert out == ["a b", None, "café", "A"]


def test_url_decode_escape_does_not_cross_into_next_row() -> None:
    # Row 0 ends in '%4' and row 1 starts with '1': together they would read '%41'.
    out, bad = _decode(["ab%4", "1c", "d%", "41", "e%4", "1"])
    assert bad == [True, False, True, False, True, False]
    assert out == [None, "1c", None, "41", None, "1"]


def test_url_decode_split_utf8_sequence_across_rows_is_bad_in_both() -> None:
    # '%C3' and '%A9' each decode to half of 'é': both rows are invalid UTF-8 on their own.
    out, bad = _decode(["ok", "%C3", "%A9", "fine"])
    assert bad == [False, True, True, False]
    assert out == ["ok", None, None, "fine"]


def test_url_decode_invalid_utf8_after_decoding() -> None:
    out, bad = _decode(["good", "%C3%28", "x+y", "%FF", "%C3%A9"])
    assert bad == [False, True, False, True, False]
    assert out == ["good", None, "x y", None, "é"]


def test_url_decode_invalid_raw_utf8_without_escapes() -> None:
    # No '%' and no '+' anywhere: the fast path must still check UTF-8.
    out, bad = _decode([b"ok", b"\xff", b"caf\xc3\xa9"])
    assert bad == [False, True, False]
    assert out == ["ok", None, "café"]


def test_url_decode_many_broken_rows_keep_neighbours_intact() -> None:
    values = []
    expected_bad = []
    for i in range(200):
        if i % 7 == 3:
            values.append(f"row{i}%G{i % 10}")
            expected_bad.append(True)
        elif i % 7 == 5:
            values.append(f"row{i}%")
            expected_bad.append(True)
        else:
            values.append(f"row+{i}%2C%C3%A9")
            expected_bad.append(False)
    out, bad = _decode(values)
    assert bad == expected_bad
    for i, (o, b) in enumerate(zip(out, bad, strict=True)):
        assert o == (None if b else f"row {i},é")


@pytest.mark.parametrize(("start", "length"), [(1, 3), (0, 2), (2, 3), (4, 1), (3, 0)])
def test_url_decode_sliced_arrays(start: int, length: int) -> None:
    values = ["%41+", "b+c", "%C3%A9%2C", "zz%21", "tail%2B"]
    expected = ["A ", "b c", "é,", "zz!", "tail+"]
    arr = _bin(values).slice(start, length)
    out, bad = url_decode(arr)
    assert out.to_pylist() == expected[start : start + length]
    assert bad.tolist() == [False] * length


def test_url_decode_sliced_array_flags_relative_rows() -> None:
    values = ["%G1", "ok+1", "bad%", "fine%21", "%C3%28"]
    arr = _bin(values).slice(1, 3)
    out, bad = url_decode(arr)
    assert bad.tolist() == [False, True, False]
    assert out.to_pylist() == ["ok 1", None, "fine!"]


def test_url_decode_sliced_array_without_escapes() -> None:
    arr = _bin(["skip%41", "one", "two", "skip+"]).slice(1, 2)
    out, bad = url_decode(arr)
    assert out.to_pylist() == ["one", "two"]
    assert not bad.any()


def test_url_decode_sliced_array_with_nulls() -> None:
    arr = _bin(["x%41", None, "a+b", None, "%C3%A9"]).slice(1, 4)
    out, bad = url_decode(arr)
    assert out.to_pylist() == ["", "a b", "", "é"]
    assert not bad.any()


# Ranges of code points for random text: ASCII, Latin-1, Cyrillic, CJK, emoji.
_RANGES = ((0x20, 0x7E), (0xA0, 0xFF), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0x1F600, 0x1F64F))


def _random_text(rng: random.Random, max_len: int = 10) -> str:
    chars = []
    for _ in range(rng.randint(0, max_len)):
        lo, hi = rng.choice(_RANGES)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


def _random_encoded(rng: random.Random) -> str:
    """A value as YFCC100M might hold it: quoted pieces, some raw pieces, some lower-case hex."""
    pieces = []
    for _ in range(rng.randint(0, 4)):
        text = _random_text(rng)
        r = rng.random()
        if r < 0.6:
            piece = quote_plus(text, safe=rng.choice(("", "/", ",:")))
        elif r < 0.8:
            piece = text.replace("%", "")  # raw text; '+' in it still means a space
        else:
            piece = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quote_plus(text))
        pieces.append(piece)
    return "".join(pieces)


def test_url_decode_matches_unquote_plus_on_random_values() -> None:
    rng = random.Random(20240531)
    values = [_random_encoded(rng) for _ in range(3000)]
    assert any("%" in v for v in values)
    assert any("+" in v for v in values)
    out, bad = _decode(values)
    assert not any(bad)
    assert out == [unquote_plus(v) for v in values]


def test_url_decode_round_trips_quote_plus_of_random_text() -> None:
    rng = random.Random(7)
    texts = [_random_text(rng, 20) for _ in range(3000)]
    out, bad = _decode([quote_plus(t) for t in texts])
    assert not any(bad)
    assert out == texts


def test_url_decode_matches_unquote_plus_on_random_sliced_batches() -> None:
    rng = random.Random(99)
    values = [_random_encoded(rng) for _ in range(1000)]
    arr = _bin(values)
    for _ in range(20):
        start = rng.randrange(len(values))
        length = rng.randrange(len(values) - start + 1)
        out, bad = url_decode(arr.slice(start, length))
        assert not bad.any()
        assert out.to_pylist() == [unquote_plus(v) for v in values[start : start + length]]


_BROKEN_ANYWHERE = ("%G1", "%1G", "%zz", "%C3%28", "%%41", "%-1")
_BROKEN_AT_END = ("%", "%4", "%E")


def test_url_decode_random_broken_escapes_flag_exactly_those_rows() -> None:
    rng = random.Random(12345)
    values = []
    broken = []
    for _ in range(3000):
        v = _random_encoded(rng)
        r = rng.random()
        if r < 0.15:
            pos = rng.randint(0, len(v))
            # Insert between whole escapes/characters only: step back over a partial escape.
            while pos > 0 and "%" in v[max(0, pos - 2) : pos]:
                pos -= 1
            v = v[:pos] + rng.choice(_BROKEN_ANYWHERE) + v[pos:]
            broken.append(True)
        elif r < 0.25:
            v = v + rng.choice(_BROKEN_AT_END)
            broken.append(True)
        else:
            broken.append(False)
        values.append(v)
    out, bad = _decode(values)
    assert bad == broken
    for v, o, b in zip(values, out, bad, strict=True):
        assert o == (None if b else unquote_plus(v))


# ---------------------------------------------------------------------------------------------
# url_decode_list
# ---------------------------------------------------------------------------------------------


def test_url_decode_list_splits_then_decodes_and_drops_empty_parts() -> None:
    out, bad = url_decode_list(_bin(["a,b%2Cc,,d+e"]))
    assert out.to_pylist() == [["a", "b,c", "d e"]]
    assert bad.tolist() == [False]


def test_url_decode_list_type() -> None:
    out, _ = url_decode_list(_bin(["a,b"]))
    assert out.type == pa.list_(pa.string())


def test_url_decode_list_empty_and_null() -> None:
    out, bad = url_decode_list(_bin(["", None, ",", ",,,"]))
    assert out.to_pylist() == [[], [], [], []]
    assert bad.tolist() == [False] * 4


def test_url_decode_list_many_rows() -> None:
    values = ["x", "", "summer+vacation,trip", None, "%E6%9D%B1%E4%BA%AC,caf%C3%A9,", "a%2C%2Cb"]
    out, bad = url_decode_list(_bin(values))
    assert out.to_pylist() == [
        ["x"],
        [],
        ["summer vacation", "trip"],
        [],
        ["東京", "café"],
        ["a,,b"],
    ]
    assert not bad.any()


@pytest.mark.parametrize("broken_tag", ["%G1", "tag%", "%C3%28", "t%E"])
def test_url_decode_list_bad_escape_in_one_tag_flags_that_row(broken_tag: str) -> None:
    values = ["a,b", f"ok,{broken_tag},fine", "c%2Cd", ""]
    out, bad = url_decode_list(_bin(values))
    assert bad.tolist() == [False, True, False, False]
    lists = out.to_pylist()
    assert lists[0] == ["a", "b"]
    assert lists[2] == ["c,d"]
    assert lists[3] == []
    # The broken tag itself is never emitted as a decoded value.
    assert all(t is not None for t in lists[1])
    assert broken_tag not in lists[1]


def test_url_decode_list_sliced_input() -> None:
    arr = _bin(["skip,%G1", "a,b+c", "", "d%2Ce,f", "skip%"]).slice(1, 3)
    out, bad = url_decode_list(arr)
    assert out.to_pylist() == [["a", "b c"], [], ["d,e", "f"]]
    assert not bad.any()


def test_url_decode_list_matches_python_reference() -> None:
    rng = random.Random(4)
    values = []
    for _ in range(1000):
        tags = [quote_plus(_random_text(rng, 6)) for _ in range(rng.randint(0, 5))]
        values.append(",".join(tags))
    out, bad = url_decode_list(_bin(values))
    assert not bad.any()
    expected = [[unquote_plus(p) for p in v.split(",") if p] for v in values]
    assert out.to_pylist() == expected


# ---------------------------------------------------------------------------------------------
# utf8_or_mask
# ---------------------------------------------------------------------------------------------


def test_utf8_or_mask_valid_input_is_untouched() -> None:
    arr = pa.array([b"ok", b"caf\xc3\xa9", None, b""], pa.binary())
    out, bad = utf8_or_mask(arr)
    assert out.type == pa.large_string()
    assert out.to_pylist() == ["ok", "café", None, ""]
    assert bad.tolist() == [False] * 4


def test_utf8_or_mask_invalid_rows_become_null_and_flagged() -> None:
    arr = pa.array(
        [b"ok", b"\xff", None, b"caf\xc3\xa9", b"\xc3\x28", b"tail\xe6\x9d", b"fine"], pa.binary()
    )
    out, bad = utf8_or_mask(arr)
    assert out.type == pa.large_string()
    assert bad.tolist() == [False, True, False, False, True, True, False]
    assert out.to_pylist() == ["ok", None, None, "café", None, None, "fine"]


def test_utf8_or_mask_sliced_input() -> None:
    arr = pa.array([b"\xff", b"a", b"\xfe", b"b", b"\xfd"], pa.binary()).slice(1, 3)
    out, bad = utf8_or_mask(arr)
    assert bad.tolist() == [False, True, False]
    assert out.to_pylist() == ["a", None, "b"]
