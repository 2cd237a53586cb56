"""Incremental ingest: new metadata files in a folder are ingested once and appended; a
re-run with nothing new does no work; a run cut off while moving its files is undone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from faceatlas import ingest_record, synth
from faceatlas.ingest import IngestOptions
from faceatlas.ingest_record import InputFile, RecordError
from faceatlas.spark_ingest import IngestError, run_ingest


def _file(folder: Path, name: str, seed: int, first_id: int, lines: int = 300) -> synth.Truth:
    spec = synth.SynthSpec(lines=lines, layout="25", seed=seed, first_id=first_id,
                           broken={"bad_coordinates": 2}, filtered={})  # fmt: skip
    return synth.write(folder / name, spec)


def _photo_ids(root: Path) -> list[int]:
    return (
        ds.dataset(root / "photos", format="parquet", partitioning="hive")
        .to_table(columns=["photo_id"])["photo_id"]
        .to_pylist()
    )


def _quarantined(root: Path) -> int:
    return ds.dataset(root / "quarantine" / "ingest", format="parquet").count_rows()


def _record(root: Path) -> dict:
    return json.loads((root / "_state" / "ingest_files.json").read_text())


def test_plan_sorts_files_into_new_done_and_changed():
    record = ingest_record.committed(ingest_record.empty_record(), "b1",
                                     [InputFile("/in/a", 10, 100.0), InputFile("/in/b", 20, 200.0)],
                                     "h1", {"lines_read": 5}, replace=True)  # fmt: skip
    listing = [InputFile("/in/a", 10, 100.0), InputFile("/in/b", 21, 250.0),
               InputFile("/in/c", 5, 300.0)]  # fmt: skip
    plan = ingest_record.plan(listing, record, "h1")
    assert [f.path for f in plan.new] == ["/in/c"]
    assert [f.path for f in plan.done] == ["/in/a"]
    assert [f.path for f in plan.changed] == ["/in/b"]
    with pytest.raises(RecordError, match="other settings"):
        ingest_record.plan(listing, record, "h2")
    # A record round-trips through its text; a foreign one is refused.
    assert ingest_record.parse(ingest_record.dumps(record)) == record
    with pytest.raises(RecordError):
        ingest_record.parse('{"version": 99}')
    assert ingest_record.parse(None)["files"] == {}


def test_committed_appends_or_replaces():
    a, b = InputFile("/in/a", 1, 1.0), InputFile("/in/b", 2, 2.0)
    first = ingest_record.committed(ingest_record.empty_record(), "b1", [a], "h", {}, False)
    pending = ingest_record.with_pending(first, "b2", [b])
    assert ingest_record.pending_batch(pending) == "b2"
    second = ingest_record.committed(pending, "b2", [b], "h", {}, replace=False)
    assert set(second["files"]) == {"/in/a", "/in/b"} and second["pending"] is None
    assert [x["batch"] for x in second["batches"]] == ["b1", "b2"]
    full = ingest_record.committed(second, "b3", [b], "h", {}, replace=True)
    assert set(full["files"]) == {"/in/b"} and len(full["batches"]) == 1


@pytest.mark.spark
def test_new_files_are_ingested_once_and_appended(spark, tmp_path):
    inbox, root = tmp_path / "inbox", tmp_path / "root"
    inbox.mkdir()
    t1 = _file(inbox, "part-0001.txt", 1, 1_000_000)
    opts = IngestOptions(deny_tags=())

    s1 = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert s1["files_ingested"] == 1 and not s1["nothing_new"]
    first = _photo_ids(root)
    assert len(first) == s1["photos_kept"] > 0

    t2 = _file(inbox, "part-0002.txt", 2, 2_000_000)
    s2 = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert s2["incremental"] and s2["files_ingested"] == 1 and s2["files_already"] == 1
    assert s2["lines_read"] == t2.lines  # only the new file was read
    ids = _photo_ids(root)
    assert len(ids) == len(set(ids)) == s1["photos_kept"] + s2["photos_kept"]
    assert set(first) < set(ids)
    assert _quarantined(root) == s1["quarantined_total"] + s2["quarantined_total"] == 4
    assert set(_record(root)["files"]) == {str(inbox / "part-0001.txt"),
                                           str(inbox / "part-0002.txt")}  # fmt: skip

    s3 = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert s3["nothing_new"] and s3["lines_read"] == 0 and s3["files_already"] == 2
    assert sorted(_photo_ids(root)) == sorted(ids)

    # A file rewritten after it was ingested is reported and left alone.
    path = inbox / "part-0001.txt"
    path.write_bytes(path.read_bytes() + path.read_bytes()[:200])
    s4 = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert s4["files_changed"] == [str(path)] and s4["nothing_new"]
    assert sorted(_photo_ids(root)) == sorted(ids)

    # Other filters cannot be mixed in; a full run rebuilds and starts a new record.
    with pytest.raises(IngestError, match="other settings"):
        run_ingest(spark, [str(inbox)], str(root), IngestOptions(), incremental=True)
    assert t1.lines == 300


@pytest.mark.spark
def test_a_run_cut_off_while_moving_is_undone(spark, tmp_path, monkeypatch):
    from faceatlas.storage import HadoopFS

    inbox, root = tmp_path / "inbox", tmp_path / "root"
    inbox.mkdir()
    _file(inbox, "a.txt", 1, 1_000_000)
    opts = IngestOptions(deny_tags=())
    run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    before = _photo_ids(root)
    _file(inbox, "b.txt", 2, 2_000_000)

    moved = {"n": 0}
    real_rename = HadoopFS.rename

    def dying_rename(self, src, dst):  # the driver dies after moving one file
        if "/photos/" in dst and "part-b" in dst:
            if moved["n"] == 1:
                raise KeyboardInterrupt("driver killed")
            moved["n"] += 1
        return real_rename(self, src, dst)

    monkeypatch.setattr(HadoopFS, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    monkeypatch.setattr(HadoopFS, "rename", real_rename)
    assert _record(root)["pending"] is not None
    assert len(_photo_ids(root)) > len(before)  # half a batch is in the table

    again = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert again["files_ingested"] == 1
    ids = _photo_ids(root)
    assert len(ids) == len(set(ids)) == len(before) + again["photos_kept"]
    assert _record(root)["pending"] is None


@pytest.mark.spark
def test_full_run_then_incremental_and_a_lost_record(spark, tmp_path):
    inbox, root = tmp_path / "inbox", tmp_path / "root"
    inbox.mkdir()
    _file(inbox, "a.txt", 1, 1_000_000)
    opts = IngestOptions(deny_tags=())
    full = run_ingest(spark, [str(inbox / "*.txt")], str(root), opts)
    assert not full["incremental"] and str(inbox / "a.txt") in _record(root)["files"]
    again = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert again["nothing_new"]
    # Without a record, an incremental run is a full one: it replaces, never appends.
    shutil.rmtree(root / "_state")
    _file(inbox, "b.txt", 2, 2_000_000)
    rebuilt = run_ingest(spark, [str(inbox)], str(root), opts, incremental=True)
    assert not rebuilt["incremental"] and rebuilt["files_ingested"] == 2
    ids = _photo_ids(root)
    assert len(ids) == len(set(ids)) == rebuilt["photos_kept"]
    assert os.path.exists(root / "_state" / "ingest_files.json")
