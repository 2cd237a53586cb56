"""Unit tests for faceatlas.partwrite (Hive-partitioned Parquet with deterministic names)."""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from faceatlas.partwrite import filesystem, write_partitioned

PARTS = ["continent", "country"]
GROUPS = [("EU", "FR"), ("EU", "DE"), ("NA", "US"), ("NA", "NA"), ("AF", "NA"), ("AS", "JP")]


def _table(n: int = 300, seed: int = 1) -> pa.Table:
    """Shuffled rows over GROUPS, unique photo ids, some nulls in a body column."""
    rng = random.Random(seed)
    ids = rng.sample(range(10**6, 10**7), n)
    groups = [GROUPS[i % len(GROUPS)] for i in range(n)]
    rng.shuffle(groups)
    return pa.table(
        {
            "photo_id": pa.array(ids, pa.int64()),
            "continent": pa.array([g[0] for g in groups], pa.string()),
            "title": pa.array([None if i % 7 == 0 else f"t{i}" for i in range(n)], pa.string()),
            "country": pa.array([g[1] for g in groups], pa.string()),
            "lat": pa.array([rng.uniform(-90, 90) for _ in range(n)], pa.float64()),
        }
    )


def _files(base: Path) -> list[str]:
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


def _rows(table: pa.Table) -> list[tuple]:
    cols = ["photo_id", "continent", "country", "title", "lat"]
    return sorted(zip(*(table.column(c).to_pylist() for c in cols), strict=True))


# ---------------------------------------------------------------------------------------------
# layout and content
# ---------------------------------------------------------------------------------------------


def test_layout_counts_and_file_content(tmp_path):
    table = _table()
    base = tmp_path / "photos"
    written = write_partitioned(table, str(base), PARTS, "s00003-0", ["photo_id"])

    expected_files = sorted(f"continent={a}/country={b}/s00003-0.parquet" for a, b in GROUPS)
    assert _files(base) == expected_files
    assert sorted(os.path.relpath(p, base) for p, _ in written) == expected_files
    assert all(os.path.isabs(p) for p, _ in written)
    assert sum(n for _, n in written) == table.num_rows

    by_group: dict[tuple[str, str], list[tuple]] = {}
    for row in table.to_pylist():
        key = (row.pop("continent"), row.pop("country"))
        by_group.setdefault(key, []).append(tuple(row.values()))
    for path, n in written:
        f = pq.read_table(path)
        assert f.num_rows == n
        assert f.column_names == ["photo_id", "title", "lat"]  # no partition columns
        continent, country = (p.split("=", 1)[1] for p in Path(path).relative_to(base).parts[:2])
        got = [tuple(r.values()) for r in f.to_pylist()]
        assert got == sorted(by_group[(continent, country)])  # the group's rows, by photo_id


def test_rows_sorted_by_sort_cols_within_each_file(tmp_path):
    written = write_partitioned(_table(), str(tmp_path), PARTS, "s1", ["photo_id"])
    for path, _ in written:
        ids = pq.read_table(path).column("photo_id").to_pylist()
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


def test_read_back_with_pyarrow_dataset(tmp_path):
    table = _table()
    write_partitioned(table, str(tmp_path), PARTS, "s1", ["photo_id"])
    back = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert back.num_rows == table.num_rows
    for c in PARTS:
        assert pa.types.is_string(back.schema.field(c).type)
        assert back.column(c).null_count == 0
    assert _rows(back) == _rows(table)
    countries = set(back.column("country").to_pylist())
    assert "NA" in countries
    assert "NA" in set(back.column("continent").to_pylist())


def test_read_back_with_pandas(tmp_path):
    table = _table()
    write_partitioned(table, str(tmp_path), PARTS, "s1", ["photo_id"])
    df = pd.read_parquet(str(tmp_path))
    assert len(df) == table.num_rows
    for c in PARTS:
        values = df[c].astype(str)
        assert not df[c].isna().any()
        assert set(values) == {g[PARTS.index(c)] for g in GROUPS}
    got = sorted(
        zip(df["photo_id"], df["continent"].astype(str), df["country"].astype(str), strict=True)
    )
    want = sorted(
        zip(
            table.column("photo_id").to_pylist(),
            table.column("continent").to_pylist(),
            table.column("country").to_pylist(),
            strict=True,
        )
    )
    assert got == want
    na_na = df[(df["continent"].astype(str) == "NA") & (df["country"].astype(str) == "NA")]
    assert len(na_na) == table.num_rows // len(GROUPS)


def test_single_group_and_one_partition_column(tmp_path):
    table = pa.table({"k": ["x"] * 3, "v": [3, 1, 2]})
    written = write_partitioned(table, str(tmp_path), ["k"], "only", ["v"])
    assert written == [(f"{tmp_path}/k=x/only.parquet", 3)]
    assert pq.read_table(written[0][0]).column("v").to_pylist() == [1, 2, 3]


def test_returns_groups_in_partition_order(tmp_path):
    written = write_partitioned(_table(), str(tmp_path), PARTS, "s", ["photo_id"])
    keys = [tuple(Path(p).relative_to(tmp_path).parts[:2]) for p, _ in written]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys)) == len(GROUPS)


# ---------------------------------------------------------------------------------------------
# determinism: retried and concurrent tasks
# ---------------------------------------------------------------------------------------------


def _snapshot(base: Path) -> dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for p in base.rglob("*") if p.is_file()}


def test_same_stem_twice_gives_the_same_files(tmp_path):
    table = _table()
    first = write_partitioned(table, str(tmp_path), PARTS, "s00007-0", ["photo_id"])
    snap = _snapshot(tmp_path)
    # a retried task: same rows in another order, same stem
    shuffled = table.take(pa.array(random.Random(5).sample(range(table.num_rows), table.num_rows)))
    second = write_partitioned(shuffled, str(tmp_path), PARTS, "s00007-0", ["photo_id"])
    assert second == first
    assert _snapshot(tmp_path) == snap  # same names, byte-identical content, no extras
    back = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert back.num_rows == table.num_rows  # no duplicates


def test_no_hidden_temp_files_left(tmp_path):
    write_partitioned(_table(), str(tmp_path), PARTS, "s1", ["photo_id"])
    write_partitioned(_table(), str(tmp_path), PARTS, "s1", ["photo_id"])
    names = [p.name for p in tmp_path.rglob("*")]
    assert names
    assert not [n for n in names if n.startswith(".")]
    assert not [n for n in names if n.endswith(".tmp")]


def test_different_stem_adds_files_beside(tmp_path):
    a = _table(120, seed=1)
    b = _table(90, seed=2)
    wa = write_partitioned(a, str(tmp_path), PARTS, "s00001-0", ["photo_id"])
    snap_a = _snapshot(tmp_path)
    wb = write_partitioned(b, str(tmp_path), PARTS, "s00002-0", ["photo_id"])
    files = _files(tmp_path)
    assert len(files) == len(wa) + len(wb)
    assert sum(f.endswith("s00001-0.parquet") for f in files) == len(wa)
    assert sum(f.endswith("s00002-0.parquet") for f in files) == len(wb)
    after = _snapshot(tmp_path)
    assert {k: after[k] for k in snap_a} == snap_a  # the first task's files are untouched
    back = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert _rows(back) == sorted(_rows(a) + _rows(b))


# ---------------------------------------------------------------------------------------------
# unsafe partition values, empty tables
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "a/b", "", None, "..", ".", "a b", "x=y", "/abs"])
@pytest.mark.parametrize("column", PARTS)
def test_unsafe_partition_value_raises(tmp_path, bad, column):
    base = tmp_path / "base"
    base.mkdir()
    outside_before = sorted(str(p) for p in tmp_path.rglob("*") if base not in p.parents)
    table = _table(30)
    values = table.column(column).to_pylist()
    values[4] = bad
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, pa.string())
    )
    with pytest.raises(ValueError, match="partition value"):
        write_partitioned(table, str(base), PARTS, "s1", ["photo_id"])
    outside_after = sorted(str(p) for p in tmp_path.rglob("*") if base not in p.parents)
    assert outside_after == outside_before  # nothing escaped the base folder
    for p in base.rglob("*"):
        assert p.resolve().is_relative_to(base.resolve())
        if p.is_dir():  # only folders of the groups before the bad one, with plain values
            assert re.fullmatch(r"(continent|country)=[A-Za-z0-9_-]+", p.name), p


def test_safe_partition_values_are_accepted(tmp_path):
    table = pa.table({"k": ["a_b-C9", "Z", "0"], "v": [1, 2, 3]})
    written = write_partitioned(table, str(tmp_path), ["k"], "s", ["v"])
    assert sorted(os.path.relpath(p, tmp_path) for p, _ in written) == [
        "k=0/s.parquet",
        "k=Z/s.parquet",
        "k=a_b-C9/s.parquet",
    ]


def test_empty_table_writes_nothing(tmp_path):
    empty = _table().slice(0, 0)
    base = tmp_path / "base"
    assert write_partitioned(empty, str(base), PARTS, "s1", ["photo_id"]) == []
    assert not base.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# filesystem
# ---------------------------------------------------------------------------------------------


def test_filesystem_plain_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = filesystem("out/photos")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == os.path.join(str(tmp_path), "out", "photos")
    fs, path = filesystem("/abs/out")
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == "/abs/out"


@pytest.mark.parametrize("uri", ["file:/abs/out/photos", "file:///abs/out/photos"])
def test_filesystem_file_uris(uri):
    fs, path = filesystem(uri)
    assert isinstance(fs, pafs.LocalFileSystem)
    assert path == "/abs/out/photos"


def test_write_through_file_uri(tmp_path):
    table = _table(60)
    for uri in (f"file:{tmp_path}/a", f"file://{tmp_path}/b"):
        written = write_partitioned(table, uri, PARTS, "s1", ["photo_id"])
        assert sum(n for _, n in written) == 60
        assert all(p.startswith(str(tmp_path)) for p, _ in written)
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")


def test_no_partitions_and_no_sort_keeps_row_order(tmp_path):
    table = pa.table({"photo_id": [3, None, 1], "reason": ["b", "a", "c"]})
    written = write_partitioned(table, str(tmp_path / "q"), (), "part-s00001-000")
    assert written == [(str(tmp_path / "q" / "part-s00001-000.parquet"), 3)]
    back = pq.read_table(written[0][0])
    assert back.column("photo_id").to_pylist() == [3, None, 1]
