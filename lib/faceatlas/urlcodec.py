"""Vectorised URL decoding (`+` is a space, `%XX` a byte) of whole Arrow columns.

YFCC100M stores every text field URL-encoded. Decoding value by value in Python would cost
more than the rest of the ingest stage together, so this works on the column's byte buffer
with numpy: one pass finds the escapes, one mask drops their hex digits, and new offsets
come from a cumulative sum. Invalid escapes and invalid UTF-8 are reported per row rather
than raised, so that the caller can quarantine the row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HEX = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def binary_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0 as int64, data bytes) of a binary or string array; nulls as ''."""
    arr = pc.fill_null(arr, "" if pa.types.is_string(arr.type) else b"")
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    bufs = arr.buffers()
    offs = np.frombuffer(bufs[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    if n == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.uint8)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offs - offs[0], data[offs[0] : offs[-1]]


def from_buffers(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A large_binary array from int64 offsets and a byte array."""
    n = len(offsets) - 1
    return pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [None, pa.py_buffer(np.ascontiguousarray(offsets, np.int64)), pa.py_buffer(data)],
    )


def utf8_or_mask(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Cast binary to large_string; rows that are not valid UTF-8 become null and are flagged."""
    n = len(arr)
    try:
        return arr.cast(pa.large_string()), np.zeros(n, dtype=bool)
    except pa.ArrowInvalid:
        pass
    # Rare path: find the offending rows one by one (only rows with non-ASCII bytes).
    bad = np.zeros(n, dtype=bool)
    values = arr.to_pylist()
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            bad[i] = True
    fixed = pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr)
    return fixed.cast(pa.large_string()), bad


def url_decode(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """URL-decode every value of a binary/string array.

    Returns (large_string array, bad) where bad[i] is True when row i held a broken escape
    (a `%` not followed by two hex digits) or decoded to invalid UTF-8; such rows are null.
    """
    offs, data = binary_buffers(arr)
    n = len(offs) - 1
    if n == 0:
        return pa.array([], pa.large_string()), np.zeros(0, dtype=bool)
    pct = np.flatnonzero(data == 0x25)
    plus = data == 0x2B
    if pct.size == 0 and not plus.any():
        return utf8_or_mask(from_buffers(offs, data.copy()))
    d = data.copy()
    d[plus] = 0x20
    bad = np.zeros(n, dtype=bool)
    if pct.size:
        row = np.searchsorted(offs, pct, side="right") - 1
        end = offs[row + 1]
        inside = pct + 2 < end
        i1 = np.minimum(pct + 1, len(d) - 1)
        i2 = np.minimum(pct + 2, len(d) - 1)
        h1 = _HEX[d[i1]]
        h2 = _HEX[d[i2]]
        ok = inside & (h1 >= 0) & (h2 >= 0)
        bad[row[~ok]] = True
        good = pct[ok]
        d[good] = (h1[ok] * 16 + h2[ok]).astype(np.uint8)
        keep = np.ones(len(d), dtype=bool)
        keep[good + 1] = False
        keep[good + 2] = False
        removed = np.concatenate(([0], np.cumsum(~keep)))
        offs = offs - removed[offs]
        d = d[keep]
    out, bad_utf8 = utf8_or_mask(from_buffers(offs, d))
    bad |= bad_utf8
    if bad.any():
        out = pc.if_else(pa.array(bad), pa.scalar(None, pa.large_string()), out)
    return out, bad


def url_decode_list(arr: pa.Array, sep: str = ",") -> tuple[pa.Array, np.ndarray]:
    """Split each value on `sep`, URL-decode the parts, drop empty parts.

    Tags in YFCC100M are comma-separated and each tag is URL-encoded (a comma inside a tag
    is %2C), so splitting must come before decoding.
    """
    n = len(arr)
    lists = pc.split_pattern(pc.fill_null(arr, b""), sep)
    flat = lists.flatten()
    parent = pc.list_parent_indices(lists).to_numpy()
    decoded, bad_flat = url_decode(flat)
    bad = np.zeros(n, dtype=bool)
    if bad_flat.any():
        bad[parent[bad_flat]] = True
    nonempty = (pc.binary_length(flat).to_numpy(zero_copy_only=False) > 0) & ~bad_flat
    counts = np.bincount(parent[nonempty], minlength=n)
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int32)
    values = decoded.filter(pa.array(nonempty)).cast(pa.string())
    return pa.ListArray.from_arrays(pa.array(offsets), values), bad
