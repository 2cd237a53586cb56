"""The fetch stage on Spark: select the photos, fetch them in tasks, keep one row each.

The driver picks the photos asked for (all, or --per-country / --countries / --limit in
a reproducible hash order), drops those the images table already settles (ok rows, and
failures not named in --retry-failed), and range-partitions the rest by country into
tasks of about --photos-per-task photos. Each task runs fetch.run_batches with one
Fetcher per Python worker (kept across tasks, so connections and DNS answers are reused)
and writes its rows straight into ROOT/images/ every few hundred photos, each file under
a hidden name and then renamed, so a file is either whole or absent.

Exactly once, even after kills: a killed run leaves only whole files, and the next run
skips what they hold, so it resumes instead of starting over. The rare duplicate (a task
attempt that died after writing some rows and was retried, a speculative attempt, a
retried failure whose old row is still there) is removed by `repair`, which runs after a
fetch whenever duplicates are possible (and so also after a run that was killed before its
own repair): per photo it keeps the ok row, else the newest, and rewrites the few files
that hold the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from faceatlas import __version__, schemas
from faceatlas.fetch import (
    IMAGE_TABLE_STATUSES,
    ImageOptions,
    TemplateError,
    UrlTemplate,
    run_batches,
)
from faceatlas.httpfetch import FetchOptions
from faceatlas.partwrite import filesystem, write_empty, write_partitioned
from faceatlas.storage import HadoopFS, normalize_root, table_path, write_stats

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A problem with the job's input or settings, reported without a Java stack trace."""


@dataclass(frozen=True)
class FetchJob:
    """Everything a fetch run needs besides the data root."""

    fetch: FetchOptions = field(default_factory=FetchOptions)
    image: ImageOptions = field(default_factory=ImageOptions)
    per_country: int | None = None
    countries: tuple[str, ...] = ()
    limit: int | None = None
    seed: int = 0
    url_template: str | None = None
    retry_failed: tuple[str, ...] = ()
    photos_per_task: int = 1000
    flush_rows: int = 500

    def settings(self) -> dict:
        d = asdict(self)
        d["fetch"].pop("user_agent", None)
        return d

    def settings_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:16]


# -- tasks ----------------------------------------------------------------------------
_FETCHERS: dict[str, object] = {}  # one Fetcher per Python worker and settings
_FETCHERS_LOCK = threading.Lock()


def _worker_fetcher(opts: FetchOptions, limits_dir: str):
    from faceatlas.hostlimit import HostLimiter
    from faceatlas.httpfetch import Fetcher

    key = f"{limits_dir}|{opts!r}"
    with _FETCHERS_LOCK:
        f = _FETCHERS.get(key)
        if f is None:
            limiter = HostLimiter(limits_dir, opts.host_connections, opts.host_rate)
            f = _FETCHERS[key] = Fetcher(opts, limiter)
    return f


def limits_dir_for(app_id: str) -> str:
    """The folder whose lock files the Python workers of one job on one machine share."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", app_id)[:100]
    return os.path.join(tempfile.gettempdir(), f"faceatlas-hosts-{safe}")


def _task_fn(
    job: FetchJob, template: UrlTemplate | None, images_path: str, run_id: str, limits_dir: str
):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        # The task attempt id, unique in the application: a resubmitted stage numbers its
        # attempts from 0 again, and its files must not overwrite the first attempt's.
        part, attempt = ctx.partitionId(), ctx.taskAttemptId()
        rows = [r for b in batches for r in b.to_pylist()]
        if not rows:
            return
        fetcher = _worker_fetcher(job.fetch, limits_dir)
        seq = itertools.count()
        stem = f"part-{run_id}-{part:05d}-{attempt}"

        def write(table: pa.Table) -> None:
            write_partitioned(table, images_path, schemas.IMAGES_PARTITIONS,
                              f"{stem}-{next(seq):04d}", sort_cols=("photo_id",))  # fmt: skip

        p = run_batches(rows, fetcher, job.image, template, run_id, write,
                        f"task {part}", flush_rows=job.flush_rows)  # fmt: skip
        yield p.counts_batch()

    return run


# -- the images table -----------------------------------------------------------------
def _data_files(images_path: str) -> tuple[list[str], list[str]]:
    """(visible Parquet files, leftover hidden temporary files) under the table."""
    fs, base = filesystem(images_path)
    info = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    data, temps = [], []
    for i in info:
        if i.type != pafs.FileType.File:
            continue
        name = i.base_name
        if name.startswith(".") and name.endswith(".tmp"):
            temps.append(i.path)
        elif name.endswith(".parquet") and not name.startswith((".", "_")):
            data.append(i.path)
    return data, temps


def read_images(spark, images_path: str):
    return spark.read.schema(schemas.spark_ddl(schemas.IMAGES)).parquet(images_path)


def _rewrite_without(file_uri: str, photo_ids: set[int]) -> int:
    """Drop rows of `photo_ids` from one Parquet file (deleted when nothing is left)."""
    fs, path = filesystem(file_uri)
    table = pq.read_table(path, filesystem=fs)
    keep = pc.invert(pc.is_in(table.column("photo_id"), pa.array(sorted(photo_ids), pa.int64())))
    kept = table.filter(keep)
    removed = table.num_rows - kept.num_rows
    if kept.num_rows == 0:
        fs.delete_file(path)
    elif removed:
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        pq.write_table(kept, tmp, filesystem=fs, compression="snappy")
        fs.move(tmp, path)
    return removed


def repair(spark, images_path: str) -> int:
    """Keep one row per photo: the ok one, else the newest. Returns rows removed."""
    from pyspark.sql import functions as F

    files, temps = _data_files(images_path)
    fs, _ = filesystem(images_path)
    for t in temps:  # a killed writer's half-written file
        fs.delete_file(t)
    if not files:
        return 0
    df = read_images(spark, images_path).select(
        "photo_id", "status", "fetched_at", F.col("_metadata.file_path").alias("file")
    )
    dup_ids = df.groupBy("photo_id").count().where("count > 1").select("photo_id")
    rows = df.join(dup_ids, "photo_id").collect()
    if not rows:
        return 0
    by_photo: dict[int, list] = defaultdict(list)
    for r in rows:
        by_photo[r["photo_id"]].append(r)
    losers: dict[str, set[int]] = defaultdict(set)
    for pid, rs in by_photo.items():
        rs.sort(key=lambda r: (r["status"] == "ok", r["fetched_at"], r["file"]), reverse=True)
        for r in rs[1:]:
            losers[r["file"]].add(pid)
    removed = sum(_rewrite_without(f, ids) for f, ids in sorted(losers.items()))
    log.warning("fetch: removed %d duplicate rows from %d files", removed, len(losers))
    return removed


# part-RUN-PARTITION-TASKATTEMPTID-SEQ.parquet
_PART_NAME = re.compile(r"^part-(\d{8}T\d{6}-[0-9a-f]{6})-(\d{5})-(\d+)-\d{4}\.parquet$")
_CLEAN_RUNS = "_clean_runs.json"


def _may_have_duplicates(
    images_path: str, files: Sequence[str], job: FetchJob, current_run: str
) -> bool:
    """Whether `repair` has anything to look for (it costs a pass over the table).

    Duplicates come only from a retried task (two attempt ids for one partition of a run), a
    retried failure (--retry-failed) or a run that was interrupted before its own repair;
    a run that did neither leaves none. `current_run` is the run that just finished: it
    counts as clean unless one of its partitions was written by two attempts.
    """
    if job.retry_failed:
        return True
    fs, base = filesystem(images_path)
    clean = {current_run, *_read_json(fs, f"{base}/{_CLEAN_RUNS}").get("runs", [])}
    attempts: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in files:
        m = _PART_NAME.match(f.rsplit("/", 1)[-1])
        if m is None:
            continue
        if m.group(1) not in clean:
            return True
        attempts[m.group(1), m.group(2)].add(m.group(3))
    return any(len(a) > 1 for a in attempts.values())


def _runs_in(files: Sequence[str]) -> list[str]:
    names = (_PART_NAME.match(f.rsplit("/", 1)[-1]) for f in files)
    return sorted({m.group(1) for m in names if m})


def _mark_clean(images_path: str, run_ids: Sequence[str]) -> None:
    """Record that every row of these runs has been through repair (or needed none)."""
    fs, base = filesystem(images_path)
    fs.create_dir(base, recursive=True)
    path = f"{base}/{_CLEAN_RUNS}"
    runs = sorted({*_read_json(fs, path).get("runs", []), *run_ids})
    tmp = f"{base}/.{_CLEAN_RUNS}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps({"runs": runs}).encode())
    fs.move(tmp, path)


def _read_json(fs: pafs.FileSystem, path: str) -> dict:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


# -- planning -------------------------------------------------------------------------
def select_photos(spark, photos_path: str, job: FetchJob, template: UrlTemplate | None = None):
    """The photos asked for, with the columns the tasks need and the order key `_key`."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    photos = spark.read.schema(schemas.spark_ddl(schemas.PHOTOS)).parquet(photos_path)
    cols = ["photo_id", "country", "continent", "download_url"]
    if template is not None:
        cols += template.columns
    df = photos.select(*dict.fromkeys(cols))
    if job.countries:
        df = df.where(F.col("country").isin(list(job.countries)))
    # The same key as fetch.selection_key, in SQL.
    key = F.substring(
        F.sha2(F.concat(F.lit(f"{job.seed}:"), F.col("photo_id").cast("string")), 256), 1, 16
    )
    df = df.withColumn("_key", key)
    if job.per_country is not None:
        w = Window.partitionBy("country").orderBy("_key", "photo_id")
        df = df.withColumn("_rank", F.row_number().over(w))
        df = df.where(F.col("_rank") <= job.per_country).drop("_rank")
    if job.limit is not None:
        df = df.orderBy("_key", "photo_id").limit(job.limit)
    return df


def _progress_thread(spark, stop: threading.Event, every: float = 15.0) -> threading.Thread:
    """Logs the driver's view while tasks run: tasks finished of the active stages."""

    def loop() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not stop.wait(every):
            for sid in tracker.getActiveStageIds():
                info = tracker.getStageInfo(sid)
                if info is not None:
                    log.warning(
                        "fetch: stage %d: %d/%d tasks done, %d running",
                        sid, info.numCompletedTasks, info.numTasks, info.numActiveTasks,
                    )  # fmt: skip

    t = threading.Thread(target=loop, name="fetch-progress", daemon=True)
    t.start()
    return t


def run_fetch(spark, root: str, job: FetchJob) -> dict:
    """Fetch the photos asked for into ROOT/images; return the stats (also in _stats)."""
    from pyspark.sql import functions as F

    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    photos_path = table_path(root, "photos")
    images_path = table_path(root, "images")
    if not fs.exists(photos_path):
        raise FetchError(f"no photos table at {photos_path}: run `faceatlas ingest` first")
    template = None
    if job.url_template:
        try:
            template = UrlTemplate.parse(job.url_template, [f.name for f in schemas.PHOTOS])
        except TemplateError as e:
            raise FetchError(str(e)) from None
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    asked = select_photos(spark, photos_path, job, template)
    files, _ = _data_files(images_path)
    if files:
        done = read_images(spark, images_path).where(
            (F.col("status") == "ok") | ~F.col("status").isin(list(job.retry_failed))
        )
        asked = asked.join(
            done.select("photo_id", F.lit(True).alias("_done")).distinct(), "photo_id", "left"
        )
    else:
        asked = asked.withColumn("_done", F.lit(None).cast("boolean"))
    # One job counts both; the selection is cheap to recompute for the tasks.
    row = asked.agg(F.count("*").alias("asked"), F.count("_done").alias("done")).collect()[0]
    n_asked, n_todo = row["asked"], row["asked"] - row["done"]
    todo = asked.where(F.col("_done").isNull()).drop("_done")
    log.warning("fetch: %d photos asked for, %d already settled, %d to fetch (run %s)",
                n_asked, n_asked - n_todo, n_todo, run_id)  # fmt: skip

    counts: Counter[str] = Counter()
    download_bytes = image_bytes = 0
    photo_seconds = 0.0
    t_fetch = time.time()
    if n_todo:
        # A whole number of waves: with 3 tasks on 2 cores the third runs alone at the end.
        cores = max(1, spark.sparkContext.defaultParallelism)
        n_parts = math.ceil(math.ceil(n_todo / job.photos_per_task) / cores) * cores
        n_parts = min(n_parts, n_todo)
        parts = todo.repartitionByRange(n_parts, "country", "_key").drop("_key")
        limits_dir = limits_dir_for(spark.sparkContext.applicationId)
        fn = _task_fn(job, template, images_path, run_id, limits_dir)
        stop = threading.Event()
        _progress_thread(spark, stop)
        try:
            result = parts.mapInArrow(fn, schemas.spark_ddl(schemas.FETCH_COUNTS)).collect()
        finally:
            stop.set()
        for r in result:
            counts[r["status"]] += r["n"]
            download_bytes += r["download_bytes"]
            image_bytes += r["image_bytes"]
            photo_seconds += r["seconds"]
    fetch_seconds = time.time() - t_fetch
    files, _ = _data_files(images_path)
    removed = 0
    clean = [run_id]
    if _may_have_duplicates(images_path, files, job, run_id):
        removed = repair(spark, images_path)
        clean += _runs_in(files)  # every run's rows have now been through repair
        files, _ = _data_files(images_path)  # repair may have deleted some
    _mark_clean(images_path, clean)

    empty_marker = table_path(images_path, "part-empty.parquet")
    if not files:
        write_empty(images_path, schemas.IMAGES)
    elif len(files) > 1 and fs.exists(empty_marker):
        fs.delete(empty_marker)
    table = {r["status"]: r["count"] for r in
             read_images(spark, images_path).groupBy("status").count().collect()}  # fmt: skip

    seconds = time.time() - t0
    n_fetched = sum(counts.values())
    cores = spark.sparkContext.defaultParallelism
    stats = {
        "stage": "fetch",
        "version": __version__,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "fetch_seconds": round(fetch_seconds, 3),
        "photos": n_asked,
        "already_settled": n_asked - n_todo,
        "fetched": n_fetched,
        "counts": {s: counts.get(s, 0) for s in IMAGE_TABLE_STATUSES},
        "download_bytes": download_bytes,
        "image_bytes": image_bytes,
        "images_per_second": round(n_fetched / max(seconds, 1e-9), 1),
        "images_per_second_per_core": round(n_fetched / max(seconds, 1e-9) / cores, 1),
        "mean_seconds_per_photo": round(photo_seconds / max(n_fetched, 1), 4),
        "duplicates_removed": removed,
        "table_counts": dict(sorted(table.items())),
        "settings": job.settings(),
        "settings_hash": job.settings_hash(),
        "spark_master": spark.sparkContext.master,
        "cores": cores,
        "output": images_path,
    }
    if n_fetched != n_todo:
        raise FetchError(f"internal: {n_todo} photos to fetch but {n_fetched} rows came back")
    write_stats(fs, root, "fetch", stats)
    log.warning(
        "fetch: %d photos asked, %d fetched in %.1f s (%.1f/s): %s",
        n_asked, n_fetched, seconds, stats["images_per_second"],
        ", ".join(f"{k} {v}" for k, v in counts.most_common()) or "nothing to do",
    )  # fmt: skip
    return stats


def parse_countries(values: Sequence[str]) -> tuple[str, ...]:
    out = []
    for v in values:
        for c in v.split(","):
            c = c.strip().upper()
            if c and not re.fullmatch(r"[A-Z]{2}", c):
                raise FetchError(f"--countries wants ISO alpha-2 codes like NL,DE; got {c!r}")
            if c:
                out.append(c)
    return tuple(dict.fromkeys(out))
