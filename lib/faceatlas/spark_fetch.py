"""The fetch stage on Spark: select the photos, fetch them in tasks, keep one row each.

The driver picks the photos asked for (all, or --per-country / --countries / --limit in
a reproducible hash order), drops those the images table already settles (ok rows, and
failures not named in --retry-failed), and cuts the rest into tasks of about
--photos-per-task photos, country by country (task_slots: no sampling pass over the
input). Each task runs fetch.run_batches with one Fetcher per Python worker (kept across
tasks, so connections and DNS answers are reused) and writes its rows straight into
ROOT/images/ every few hundred photos, each file under a hidden name and then renamed, so
a file is either whole or absent.

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
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from faceatlas import __version__, runfiles, schemas
from faceatlas.fetch import (
    IMAGE_TABLE_STATUSES,
    ImageOptions,
    TemplateError,
    UrlTemplate,
    run_batches,
)
from faceatlas.httpfetch import FetchOptions
from faceatlas.partwrite import write_empty, write_partitioned
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
        part, attempt = ctx.partitionId(), ctx.taskAttemptId()
        rows = [r for b in batches for r in b.to_pylist()]
        if not rows:
            return
        fetcher = _worker_fetcher(job.fetch, limits_dir)
        seq = itertools.count()
        stem = runfiles.part_stem(run_id, part, attempt)

        def write(table: pa.Table) -> None:
            write_partitioned(table, images_path, schemas.IMAGES_PARTITIONS,
                              f"{stem}-{next(seq):04d}", sort_cols=("photo_id",))  # fmt: skip

        p = run_batches(rows, fetcher, job.image, template, run_id, write,
                        f"task {part}", flush_rows=job.flush_rows)  # fmt: skip
        yield p.counts_batch()

    return run


# -- the images table -----------------------------------------------------------------
def read_images(spark, images_path: str):
    return spark.read.schema(schemas.spark_ddl(schemas.IMAGES)).parquet(images_path)


def repair(spark, images_path: str) -> int:
    """Keep one row per photo: the ok one, else the newest. Returns rows removed."""
    return runfiles.repair(
        spark, images_path, schemas.spark_ddl(schemas.IMAGES), "photo_id",
        ("status", "fetched_at"), lambda r: (r["status"] == "ok", r["fetched_at"]),
    )  # fmt: skip


def _may_have_duplicates(images_path: str, files: Sequence[str], job: FetchJob, run_id: str):
    """--retry-failed leaves the old row beside the new one; else see runfiles."""
    return bool(job.retry_failed) or runfiles.may_have_duplicates(images_path, files, run_id)


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


def task_slots(todo_by_country: Mapping[str | None, int], n_parts: int):
    """The task (0..n_parts-1) of each row to fetch, as a column, without a sampling pass.

    Countries are laid end to end in code order, each taking as many rows as it has to
    fetch; a row's place inside its country comes from its hash key (uniform on [0, 1)), and
    the line is cut into n_parts equal lengths. So a task holds a run of neighbouring
    countries (one or two where countries are big: few small files per flush), a big country
    spreads over many tasks, and every task gets about the same number of rows. Needs the
    `country` and `_key` columns of select_photos."""
    from pyspark.sql import functions as F

    order = sorted(todo_by_country, key=lambda c: (c is None, c or ""))
    starts, total = {}, 0
    for c in order:
        starts[c] = total
        total += todo_by_country[c]
    if total == 0:
        return F.lit(0)
    # Country codes are two letters: "" stands for a null country.
    country = F.coalesce(F.col("country"), F.lit(""))

    def per_country(values: Mapping[str | None, int]):
        return F.create_map(*[v for c in order for v in (F.lit(c or ""), F.lit(float(values[c])))])

    start, length = per_country(starts), per_country(todo_by_country)
    unit = F.conv(F.substring(F.col("_key"), 1, 8), 16, 10).cast("double") / float(1 << 32)
    place = start[country] + unit * length[country]
    return F.least(F.floor(place * n_parts / total), F.lit(n_parts - 1)).cast("int")


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
    files, _ = runfiles.data_files(images_path)
    had_files = bool(files)
    if files:
        done = read_images(spark, images_path).where(
            (F.col("status") == "ok") | ~F.col("status").isin(list(job.retry_failed))
        )
        asked = asked.join(
            done.select("photo_id", F.lit(True).alias("_done")).distinct(), "photo_id", "left"
        )
    else:
        asked = asked.withColumn("_done", F.lit(None).cast("boolean"))
    # One job counts both, per country; the selection is cheap to recompute for the tasks.
    by_country = (
        asked.groupBy("country")
        .agg(F.count("*").alias("asked"), F.count("_done").alias("done"))
        .collect()
    )
    n_asked = sum(r["asked"] for r in by_country)
    todo_by_country = {r["country"]: r["asked"] - r["done"] for r in by_country}
    n_todo = sum(todo_by_country.values())
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
        slot = task_slots(todo_by_country, n_parts)
        parts = todo.repartitionById(n_parts, slot).drop("_key")
        limits_dir = limits_dir_for(spark.sparkContext.applicationId)
        fn = _task_fn(job, template, images_path, run_id, limits_dir)
        stop = threading.Event()
        runfiles.progress_thread(spark, stop, "fetch")
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
    files, _ = runfiles.data_files(images_path)
    removed = 0
    clean = [run_id]
    if _may_have_duplicates(images_path, files, job, run_id):
        removed = repair(spark, images_path)
        clean += runfiles.runs_in(files)  # every run's rows have now been through repair
        files, _ = runfiles.data_files(images_path)  # repair may have deleted some
    runfiles.mark_clean(images_path, clean)

    empty_marker = table_path(images_path, "part-empty.parquet")
    if not files:
        write_empty(images_path, schemas.IMAGES)
    elif len(files) > 1 and fs.exists(empty_marker):
        fs.delete(empty_marker)
    if not had_files and not removed:
        table = {s: n for s, n in counts.items() if n}  # the table holds this run's rows only
    else:
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
