"""The ingest stage on Spark: a thin adapter around ingest.ingest_batch.

Spark reads the metadata files as text (plain or .bz2, which Hadoop's codec splits; any
Hadoop filesystem; globs), every task runs the plain-Python core on Arrow batches through
mapInArrow, and one persisted result feeds three outputs: the accounting, ROOT/photos/
and ROOT/quarantine/ingest/. Both tables are written beside their final place and moved
in only when complete, so a re-run replaces them whole: same rows, no duplicates.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pyarrow as pa

from faceatlas import __version__, schemas
from faceatlas.ingest import FILTER_REASONS, QUARANTINE_REASONS, IngestOptions
from faceatlas.storage import HadoopFS, normalize_root, table_path, write_stats

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """A problem with the job's input or settings, reported without a Java stack trace."""


def _batches_fn(opts: IngestOptions):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from faceatlas.ingest import ingest_batch, to_ingest_out

        t0, totals = time.time(), Counter()
        for batch in batches:
            result = ingest_batch(batch.column(0), batch.column(1), opts)
            totals.update({k[0]: v for k, v in result.counts.items()})
            yield to_ingest_out(result)
        if totals:
            lines = sum(totals.values())
            log.warning(
                "ingest task: %d lines in %.1f s (%.0f lines/s): %s",
                lines, time.time() - t0, lines / max(time.time() - t0, 1e-9), dict(totals),
            )  # fmt: skip

    return run


def accounting(counts: dict[tuple[str, str], int]) -> dict:
    """The stats' accounting block; lines_read must equal the sum of the parts."""
    by = Counter()
    for (kind, reason), n in counts.items():
        by[(kind, reason)] += n
    filtered = {r: by.get(("filtered", r), 0) for r in FILTER_REASONS}
    quarantined = {r: by.get(("quarantine", r), 0) for r in QUARANTINE_REASONS}
    unknown = {k for k in by if k[0] not in ("kept", "video", "filtered", "quarantine")}
    unknown |= {k for k in by if k[0] == "filtered" and k[1] not in FILTER_REASONS}
    unknown |= {k for k in by if k[0] == "quarantine" and k[1] not in QUARANTINE_REASONS}
    if unknown:
        raise AssertionError(f"outcomes outside the documented sets: {sorted(unknown)}")
    kept = by.get(("kept", "kept"), 0)
    videos = by.get(("video", "video"), 0)
    return {
        "lines_read": sum(by.values()),
        "photos_kept": kept,
        "videos": videos,
        "filtered": filtered,
        "filtered_total": sum(filtered.values()),
        "quarantined": quarantined,
        "quarantined_total": sum(quarantined.values()),
    }


def run_ingest(
    spark,
    inputs: Sequence[str],
    root: str,
    opts: IngestOptions,
) -> dict:
    """Ingest metadata files into ROOT/photos and ROOT/quarantine/ingest; return the stats."""
    from pyspark import StorageLevel
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    if not inputs:
        raise IngestError("no input files given")
    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    try:
        text = spark.read.text(list(inputs))
    except AnalysisException as e:
        raise IngestError(f"cannot read input: {e}") from None
    lines = text.select(F.col("value"), F.col("_metadata.file_path").alias("source_file"))
    out = lines.mapInArrow(_batches_fn(opts), schemas.spark_ddl(schemas.INGEST_OUT))
    out = out.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = out.groupBy("kind", "reason").agg(F.sum("n").alias("n")).collect()
        counts = {(r["kind"], r["reason"]): int(r["n"]) for r in rows}
        acct = accounting(counts)

        photos_path = table_path(root, "photos")
        tmp = fs.temp_sibling(photos_path)
        photo_cols = [f.name for f in schemas.PHOTOS]
        (
            out.where(F.col("kind") == "kept")
            .select(*photo_cols)
            .write.mode("overwrite")
            .partitionBy(*schemas.PHOTOS_PARTITIONS)
            .parquet(tmp)
        )
        fs.replace(tmp, photos_path)

        q_path = table_path(root, "quarantine", "ingest")
        tmp = fs.temp_sibling(q_path)
        q_cols = [f.name for f in schemas.QUARANTINE_INGEST]
        (
            out.where(F.col("kind") == "quarantine")
            .select(*q_cols)
            .repartition(1)
            .write.mode("overwrite")
            .parquet(tmp)
        )
        fs.replace(tmp, q_path)
    finally:
        out.unpersist()

    seconds = time.time() - t0
    stats = {
        "stage": "ingest",
        "version": __version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "lines_per_second": round(acct["lines_read"] / max(seconds, 1e-9), 1),
        "inputs": list(inputs),
        "settings": opts.settings(),
        "settings_hash": opts.settings_hash(),
        "outputs": {"photos": photos_path, "quarantine": q_path},
        **acct,
    }
    write_stats(fs, root, "ingest", stats)
    log.warning(
        "ingest: %d lines, %d photos kept, %d filtered, %d quarantined, %d videos, %.1f s",
        acct["lines_read"], acct["photos_kept"], acct["filtered_total"],
        acct["quarantined_total"], acct["videos"], seconds,
    )  # fmt: skip
    return stats
