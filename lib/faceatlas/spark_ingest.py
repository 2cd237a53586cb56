"""The ingest stage on Spark: a thin adapter around ingest.ingest_batch.

Local input files are cut into splits that the tasks read themselves (splitread.py: bzip2
block splitting with libbz2, far faster than Hadoop's Java codec); other URIs (hdfs://,
s3a://, ...) go through Spark's text source. Either way every task runs the plain-Python
core on Arrow batches inside mapInArrow, writes its kept photos and quarantined lines as
Parquet into staging folders (partwrite.py) and hands back only its counts by outcome.
The driver adds them up into the accounting and moves both tables into place only when
the job has succeeded, so a re-run replaces them whole: same rows, no duplicates.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from faceatlas import __version__, ingest_record, schemas
from faceatlas.ingest import IngestOptions, accounting
from faceatlas.ingest_record import InputFile
from faceatlas.partwrite import write_empty
from faceatlas.splitread import Split, local_path, plan_splits
from faceatlas.storage import HadoopFS, normalize_root, parse_size, table_path, write_stats

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """A problem with the job's input or settings, reported without a Java stack trace."""


@dataclass(frozen=True)
class _Staging:
    """Where a run's tasks write, before the driver moves the finished tables into place."""

    photos: str
    quarantine: str
    tag: str = ""  # starts every file name: an incremental run's batch id, so it can be undone


class _TableSink:
    """Collects a task's rows of one table and writes them as Parquet files.

    Rows are held until FLUSH_ROWS (a 32 MB bzip2 split keeps about 125k photos), so a
    task writes one file per partition rather than one tiny file per batch. File names
    come from the task's split and a sequence number: a retried attempt rewrites them.
    """

    FLUSH_ROWS = 400_000

    def __init__(
        self, base: str, task_key: str, partition_cols=(), sort_cols=(), dictionary_cols=()
    ) -> None:
        self.base, self.task_key = base, task_key
        self.partition_cols, self.sort_cols = partition_cols, sort_cols
        self.dictionary_cols = dictionary_cols
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.seq = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.pending.append(table)
            self.rows += table.num_rows
            if self.rows >= self.FLUSH_ROWS:
                self.flush()

    def flush(self) -> None:
        from faceatlas.partwrite import write_partitioned

        if self.pending:
            stem = f"part-{self.task_key}-{self.seq:03d}"
            write_partitioned(pa.concat_tables(self.pending), self.base, self.partition_cols,
                              stem, self.sort_cols, self.dictionary_cols)  # fmt: skip
        self.pending, self.rows, self.seq = [], 0, self.seq + 1


def _run_task(
    line_batches: Iterator[tuple[pa.Array, pa.Array | str]],
    opts: IngestOptions,
    staging: _Staging,
    task_key: str,
) -> Iterator[pa.RecordBatch]:
    """The task body for both readers: the core per batch, rows to Parquet, then the
    task's counts as the only thing handed back to Spark."""
    from faceatlas.ingest import counts_batch, ingest_batch

    photos = _TableSink(staging.photos, task_key, schemas.PHOTOS_PARTITIONS, ["photo_id"],
                        schemas.PHOTOS_DICTIONARY)  # fmt: skip
    quarantine = _TableSink(staging.quarantine, task_key)  # kept in line order
    t0, counts = time.time(), Counter()
    for lines, sources in line_batches:
        result = ingest_batch(lines, sources, opts)
        photos.add(result.photos)
        quarantine.add(result.quarantine)
        counts.update(result.counts)
    photos.flush()
    quarantine.flush()
    if counts:
        n, dt = sum(counts.values()), time.time() - t0
        kinds = Counter()
        for (kind, _), v in counts.items():
            kinds[kind] += v
        log.warning(
            "ingest task %s: %d lines in %.1f s (%.0f lines/s): %s",
            task_key, n, dt, n / max(dt, 1e-9), dict(kinds),
        )  # fmt: skip
    yield counts_batch(counts)


def _lines_fn(opts: IngestOptions, staging: _Staging):
    """mapInArrow over (value, source_file) rows from Spark's text source."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        key = f"{staging.tag}t{TaskContext.get().partitionId():05d}"
        yield from _run_task(((b.column(0), b.column(1)) for b in batches), opts, staging, key)

    return run


def _splits_fn(opts: IngestOptions, staging: _Staging, batch_lines: int):
    """mapInArrow over split rows (split_id, path, start, end, size): a task reads its own."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from faceatlas.splitread import iter_line_batches

        for batch in batches:
            for row in batch.to_pylist():
                split = Split(row["path"], row["start"], row["end"], row["size"])
                source = "file://" + split.path
                lines = ((arr, source) for arr in iter_line_batches(split, batch_lines))
                key = f"{staging.tag}s{row['split_id']:05d}"
                yield from _run_task(lines, opts, staging, key)

    return run


def resolve_inputs(inputs: Sequence[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """Split inputs into local files (path, size) that tasks read themselves, and other
    URIs (hdfs://, s3a://, ...) left to Spark's text source. Globs and folders expand."""
    local: list[tuple[str, int]] = []
    remote: list[str] = []
    for item in inputs:
        path = local_path(item)
        if path is None:
            remote.append(item)
            continue
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise IngestError(f"input not found: {item}")
        for m in matches:
            if os.path.isdir(m):
                for dirpath, dirnames, filenames in os.walk(m):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
                    for name in sorted(filenames):
                        if not name.startswith((".", "_")):
                            f = os.path.join(dirpath, name)
                            local.append((f, os.path.getsize(f)))
            else:
                local.append((m, os.path.getsize(m)))
    if not local and not remote:
        raise IngestError(f"no input files in {list(inputs)}")
    return list(dict.fromkeys(local)), remote


READERS = ("auto", "spark")


def read_and_parse(
    spark, inputs: Sequence[str], opts: IngestOptions, staging: _Staging, reader: str = "auto"
):
    """The INGEST_COUNTS DataFrame of all inputs; its tasks write the tables to `staging`.

    reader "auto": local files through splitread, other URIs through Spark's text source;
    "spark": everything through Spark's text source (Hadoop codecs).
    """
    if reader not in READERS:
        raise IngestError(f"unknown reader {reader!r}; choose from {READERS}")
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    ddl = schemas.spark_ddl(schemas.INGEST_COUNTS)
    if reader == "spark":
        local, remote = [], list(inputs)
    else:
        local, remote = resolve_inputs(inputs)
    parts = []
    if local:
        split_bytes = parse_size(spark.conf.get("spark.sql.files.maxPartitionBytes", "128m"))
        splits = plan_splits(local, split_bytes, spark.sparkContext.defaultParallelism)
        rows = [(i, s.path, s.start, s.end, s.size) for i, s in enumerate(splits)]
        rdd = spark.sparkContext.parallelize(rows, len(rows))
        df = spark.createDataFrame(
            rdd, "split_id INT, path STRING, start BIGINT, end BIGINT, size BIGINT"
        )
        batch_lines = int(spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"))
        parts.append(df.mapInArrow(_splits_fn(opts, staging, max(batch_lines, 1000)), ddl))
    if remote:
        try:
            text = spark.read.text(remote)
        except AnalysisException as e:
            raise IngestError(f"cannot read input: {e}") from None
        cols = [F.col("value"), F.col("_metadata.file_path").alias("source_file")]
        parts.append(text.select(*cols).mapInArrow(_lines_fn(opts, staging), ddl))
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


RECORD = ("_state", "ingest_files.json")


def list_inputs(fs: HadoopFS, inputs: Sequence[str], reader: str = "auto") -> list[InputFile]:
    """Every input file with its size and time: local files as the tasks will read them,
    other URIs (and everything with reader "spark") through the Hadoop filesystem."""
    local, remote = ([], list(inputs)) if reader == "spark" else resolve_inputs(inputs)
    files = [InputFile(path, size, os.path.getmtime(path)) for path, size in local]
    for uri in remote:
        found = fs.list_files(uri)
        if not found:
            raise IngestError(f"input not found: {uri}")
        files += [InputFile(path, size, mtime) for path, size, mtime in found]
    return files


def _undo_pending(fs: HadoopFS, record: dict, tables: Sequence[str]) -> dict:
    """Delete the files an interrupted incremental run had begun to move into the tables."""
    batch = ingest_record.pending_batch(record)
    if batch is None:
        return record
    gone = 0
    for table in tables:
        for path, _, _ in fs.list_files(table) if fs.exists(table) else []:
            if path.rsplit("/", 1)[-1].startswith(f"part-b{batch}-"):
                fs.delete(path)
                gone += 1
    log.warning("ingest: batch %s was cut off while moving into the tables: %d of its files "
                "deleted; its inputs are ingested again", batch, gone)  # fmt: skip
    return {**record, "pending": None}


def run_ingest(
    spark,
    inputs: Sequence[str],
    root: str,
    opts: IngestOptions,
    reader: str = "auto",
    incremental: bool = False,
) -> dict:
    """Ingest metadata files into ROOT/photos and ROOT/quarantine/ingest; return the stats.

    A full run replaces both tables with the rows of `inputs`. An incremental run ingests
    only the input files the record (ingest_record.py) does not hold, and appends."""
    if not inputs:
        raise IngestError("no input files given")
    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    photos_path = table_path(root, "photos")
    q_path = table_path(root, "quarantine", "ingest")
    record_path = table_path(root, *RECORD)
    for path in (photos_path, q_path):
        fs.clean_temp_siblings(path)
    listing = list_inputs(fs, inputs, reader)
    settings_hash = opts.settings_hash()
    try:
        record = ingest_record.parse(fs.read_text_atomic(record_path))
    except ingest_record.RecordError as e:
        if incremental:
            raise IngestError(str(e)) from None
        record = ingest_record.empty_record()  # a full run writes a new one
    append = incremental and bool(record["files"]) and fs.exists(photos_path)
    if incremental and not append:
        log.warning("ingest: no record of files already ingested into %s: a full ingest of "
                    "the inputs, recorded for the next incremental run", root)  # fmt: skip
    planned = None
    if append:
        record = _undo_pending(fs, record, (photos_path, q_path))
        try:
            planned = ingest_record.plan(listing, record, settings_hash)
        except ingest_record.RecordError as e:
            raise IngestError(str(e)) from None
        for f in planned.changed:
            log.warning("ingest: %s changed after it was ingested (size or time): not "
                        "ingested again; a full ingest rebuilds the tables", f.path)  # fmt: skip
    files = planned.new if planned else listing
    batch = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + uuid.uuid4().hex[:6]

    if planned is not None and not files:
        acct = accounting(Counter())
        log.warning("ingest: nothing new: all %d input files were ingested before (%d changed "
                    "since, left alone)", len(planned.done), len(planned.changed))  # fmt: skip
    else:
        acct = _ingest_files(spark, fs, inputs if planned is None else [f.path for f in files],
                             opts, reader, photos_path, q_path, record_path, record, batch,
                             files if planned is not None else None)  # fmt: skip
        summary = {k: acct[k] for k in ("lines_read", "photos_kept", "quarantined_total")}
        record = ingest_record.committed(record, batch, files, settings_hash, summary,
                                         replace=planned is None)  # fmt: skip
        fs.write_text_atomic(record_path, ingest_record.dumps(record))

    seconds = time.time() - t0
    stats = {
        "stage": "ingest",
        "version": __version__,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "lines_per_second": round(acct["lines_read"] / max(seconds, 1e-9), 1),
        "inputs": list(inputs),
        "incremental": planned is not None,
        "batch": batch if files else None,
        "files_ingested": len(files),
        "files_already": len(planned.done) if planned else 0,
        "files_changed": [f.path for f in planned.changed] if planned else [],
        "nothing_new": planned is not None and not files,
        "settings": opts.settings(),
        "settings_hash": settings_hash,
        "reader": reader,
        "spark_master": spark.sparkContext.master,
        "outputs": {"photos": photos_path, "quarantine": q_path},
        **acct,
    }
    write_stats(fs, root, "ingest", stats)
    if files:
        log.warning(
            "ingest: %d files, %d lines, %d photos kept, %d filtered, %d quarantined, "
            "%d videos, %.1f s", len(files), acct["lines_read"], acct["photos_kept"],
            acct["filtered_total"], acct["quarantined_total"], acct["videos"], seconds,
        )  # fmt: skip
    return stats


def _ingest_files(
    spark,
    fs: HadoopFS,
    inputs: Sequence[str],
    opts: IngestOptions,
    reader: str,
    photos_path: str,
    q_path: str,
    record_path: str,
    record: dict,
    batch: str,
    appended: list[InputFile] | None,
) -> dict:
    """Parse `inputs` into staging tables, then move them into place: as whole new tables
    (appended None), or file by file into the existing ones. Returns the accounting."""
    tag = f"b{batch}-" if appended is not None else ""
    staging = _Staging(fs.temp_sibling(photos_path), fs.temp_sibling(q_path), tag)
    try:
        rows = read_and_parse(spark, inputs, opts, staging, reader).collect()
        counts = Counter()
        for r in rows:
            counts[(r["kind"], r["reason"])] += int(r["n"])
        acct = accounting(counts)
        if appended is not None:
            # Marked pending first: a run cut off while moving is undone by the next one.
            pending = ingest_record.with_pending(record, batch, appended)
            fs.write_text_atomic(record_path, ingest_record.dumps(pending))
            for path, final in ((staging.photos, photos_path), (staging.quarantine, q_path)):
                if fs.exists(path):
                    fs.move_files(path, final)
                fs.delete(path)
            return acct
        for path, schema in ((staging.photos, schemas.PHOTOS),
                             (staging.quarantine, schemas.QUARANTINE_INGEST)):  # fmt: skip
            if not fs.exists(path):  # nothing kept, or nothing quarantined: an empty table
                write_empty(path, schema)
            fs.write_text(table_path(path, "_SUCCESS"), "")
        # The old record goes before the old tables do: a run cut off in between leaves no
        # record, and the next incremental run starts over with a full ingest.
        fs.write_text_atomic(record_path, ingest_record.dumps(ingest_record.empty_record()))
        fs.replace(staging.photos, photos_path)
        fs.replace(staging.quarantine, q_path)
        return acct
    except BaseException:
        fs.delete(staging.photos)
        fs.delete(staging.quarantine)
        raise
