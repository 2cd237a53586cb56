"""The ingest stage on real Spark (local[2]) and through spark-submit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from faceatlas import synth
from faceatlas.ingest import IngestOptions, accounting
from faceatlas.spark_ingest import IngestError, run_ingest

pytestmark = [pytest.mark.spark]

BROKEN = {k: 4 for k in synth.BROKEN_KINDS}
FILTERED = {k: 3 for k in synth.FILTER_KINDS}


def _write_inputs(folder: Path) -> synth.Truth:
    """Three files: 23 fields in .bz2, 25 fields plain, mixed layouts in .bz2."""
    total = synth.Truth()
    specs = [
        ("a_orig.txt.bz2", "23", 1_500, 11, 1_000_000),
        ("b_aws.txt", "25", 1_200, 12, 2_000_000),
        ("c_mixed.bz2", "mixed", 1_300, 13, 3_000_000),
    ]
    for name, layout, n, seed, first in specs:
        spec = synth.SynthSpec(lines=n, layout=layout, broken=BROKEN, filtered=FILTERED,
                               seed=seed, first_id=first)  # fmt: skip
        truth = synth.write(folder / name, spec)
        total.counts.update(truth.counts)
        total.country.update(truth.country)
    return total


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("ingest")
    truth = _write_inputs(base / "in")
    root = base / "root"
    stats = run_ingest(spark, [str(base / "in" / "*")], str(root), IngestOptions())
    return truth, root, stats


def _photos(spark, root: Path):
    return spark.read.parquet(str(root / "photos"))


def test_accounting_matches_truth(ingested):
    truth, root, stats = ingested
    on_disk = json.loads((root / "_stats" / "ingest.json").read_text())
    assert on_disk["lines_read"] == truth.lines == 4_000
    assert on_disk == {**on_disk, **{k: stats[k] for k in ("lines_read", "photos_kept")}}
    # lines read = kept + filtered (by reason) + quarantined (by reason) + videos
    parts = (on_disk["photos_kept"] + on_disk["videos"] + sum(on_disk["filtered"].values())
             + sum(on_disk["quarantined"].values()))  # fmt: skip
    assert parts == on_disk["lines_read"]
    assert on_disk == {**on_disk, **accounting(truth.counts)}
    assert on_disk["quarantined"] == {k: 3 * 4 for k in synth.BROKEN_KINDS}


def test_photos_table(spark, ingested):
    truth, root, stats = ingested
    photos = _photos(spark, root)
    rows = photos.select("photo_id", "country", "continent", "line_number").collect()
    ids = [r["photo_id"] for r in rows]
    assert len(ids) == len(set(ids)) == stats["photos_kept"]
    assert set(ids) == set(truth.country)
    agree = sum(truth.country[r["photo_id"]] == r["country"] for r in rows)
    assert agree / len(rows) >= 0.99
    assert {r["continent"] for r in rows} <= {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
    # 25-field rows carry their line number, 23-field rows do not.
    with_line = Counter(r["line_number"] is not None for r in rows)
    assert with_line[True] > 0 and with_line[False] > 0
    # Partitioned by continent, then country.
    dirs = {p.relative_to(root / "photos").parts[:2] for p in (root / "photos").rglob("*.parquet")}
    assert all(a.startswith("continent=") and b.startswith("country=") for a, b in dirs)


def test_quarantine_table(ingested):
    _, root, stats = ingested
    q = pq.read_table(root / "quarantine" / "ingest").to_pandas()
    assert len(q) == stats["quarantined_total"]
    assert Counter(q["reason"]) == {k: 12 for k in synth.BROKEN_KINDS}
    assert q["raw_line"].notna().all() and (q["raw_length"] > 0).all()
    assert {Path(s).name for s in q["source_file"]} == {"a_orig.txt.bz2", "b_aws.txt",
                                                         "c_mixed.bz2"}  # fmt: skip


def test_rerun_replaces_tables_without_duplicates(spark, ingested, tmp_path):
    _, root, _ = ingested
    before = sorted(r["photo_id"] for r in _photos(spark, root).select("photo_id").collect())
    (root / "photos.__tmp_deadbeef").mkdir()  # what a killed run leaves behind
    inputs = [str(Path(root).parent / "in" / "*")]
    run_ingest(spark, inputs, str(root), IngestOptions())
    after = sorted(r["photo_id"] for r in _photos(spark, root).select("photo_id").collect())
    assert after == before
    assert not [p for p in root.iterdir() if ".__tmp_" in p.name or ".__old_" in p.name]


def test_split_sizes_and_readers_agree(spark, tmp_path):
    spec = synth.SynthSpec(lines=6_000, layout="mixed", broken=BROKEN, seed=5)
    synth.write(tmp_path / "one.bz2", spec)
    results = {}
    for label, split, reader in (("one split", "64m", "auto"), ("tiny splits", "16k", "auto"),
                                 ("hadoop codec", "16k", "spark")):  # fmt: skip
        spark.conf.set("spark.sql.files.maxPartitionBytes", split)
        root = tmp_path / label.replace(" ", "_")
        stats = run_ingest(spark, [str(tmp_path / "one.bz2")], str(root), IngestOptions(),
                           reader=reader)  # fmt: skip
        table = pd.read_parquet(root / "photos").sort_values("photo_id").reset_index(drop=True)
        table = table.drop(columns=["source_file"])
        results[label] = (stats["lines_read"], stats["photos_kept"], table)
    spark.conf.set("spark.sql.files.maxPartitionBytes", "32m")
    base = results["one split"]
    assert base[0] == 6_000
    for label, (lines, kept, table) in results.items():
        assert (lines, kept) == base[:2], label
        pd.testing.assert_frame_equal(table, base[2], check_categorical=False, obj=label)


def test_namibia_and_north_america_stay_strings(spark, tmp_path):
    line = ("{id}\t1@N00\tnick\t2010-01-01 10:00:00.0\t1262340000\t\tt\t\t\t\t{lon}\t{lat}\t"
            "16\thttp://p/\thttp://d/{id}.jpg\tAttribution+License\t"
            "http://creativecommons.org/licenses/by/2.0/\t1\t1\tab\tcd\tjpg\t0")  # fmt: skip
    text = "\n".join([line.format(id=1, lon=17.08, lat=-22.56), line.format(id=2, lon=-74.0,
                                                                           lat=40.71)])  # fmt: skip
    (tmp_path / "na.txt").write_text(text + "\n")
    run_ingest(spark, [str(tmp_path / "na.txt")], str(tmp_path / "root"), IngestOptions())
    rows = {r["photo_id"]: r for r in _photos(spark, tmp_path / "root").collect()}
    assert (rows[1]["country"], rows[1]["continent"]) == ("NA", "AF")
    assert (rows[2]["country"], rows[2]["continent"]) == ("US", "NA")
    df = pd.read_parquet(tmp_path / "root" / "photos")
    assert df["country"].astype(str).tolist().count("NA") == 1
    assert not df[["country", "continent"]].isna().any().any()


def test_missing_input_is_a_clear_error(spark, tmp_path):
    with pytest.raises(IngestError, match="input not found"):
        run_ingest(spark, [str(tmp_path / "nope.bz2")], str(tmp_path / "root"), IngestOptions())
    with pytest.raises(IngestError, match="no input files"):
        (tmp_path / "empty_dir").mkdir()
        run_ingest(spark, [str(tmp_path / "empty_dir")], str(tmp_path / "r2"), IngestOptions())


def test_empty_file_gives_empty_tables(spark, tmp_path):
    (tmp_path / "empty.bz2").write_bytes(__import__("bz2").compress(b""))
    stats = run_ingest(spark, [str(tmp_path / "empty.bz2")], str(tmp_path / "root"),
                       IngestOptions())  # fmt: skip
    assert stats["lines_read"] == 0 and stats["photos_kept"] == 0
    assert (tmp_path / "root" / "photos" / "_SUCCESS").exists()
    # Empty tables still carry their schema, for the stages that read them.
    photos = _photos(spark, tmp_path / "root")
    assert photos.count() == 0
    assert {"photo_id", "country", "continent", "title"} <= set(photos.columns)
    q = spark.read.parquet(str(tmp_path / "root" / "quarantine" / "ingest"))
    assert q.count() == 0 and "reason" in q.columns


@pytest.mark.slow
def test_spark_submit_local2(tmp_path):
    synth.write(tmp_path / "in.bz2", synth.SynthSpec(lines=3_000, layout="mixed",
                                                       broken=BROKEN, seed=9))  # fmt: skip
    spark_submit = Path(sys.executable).with_name("spark-submit")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    job = Path(__file__).resolve().parents[1] / "jobs" / "ingest.py"
    proc = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         str(job), str(tmp_path / "in.bz2"), "--data", str(tmp_path / "root")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "root" / "_stats" / "ingest.json").read_text())
    assert stats["lines_read"] == 3_000
    assert stats["quarantined_total"] == 4 * len(synth.BROKEN_KINDS)
    # The session helper took spark-submit's master instead of its own local[*] default.
    assert stats["spark_master"] == "local[2]"
    assert len(pd.read_parquet(tmp_path / "root" / "photos")) == stats["photos_kept"]


@pytest.mark.slow
def test_cli_reports_bad_input_with_exit_code_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "faceatlas", "ingest", str(tmp_path / "missing.bz2"),
         "--data", str(tmp_path / "root"), "--master", "local[1]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "input not found" in proc.stderr
    assert "Traceback" not in proc.stderr
