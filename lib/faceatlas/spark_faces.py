"""The faces stage on Spark: every ok image not processed yet, through faces.process_photo.

The driver takes the images table's ok rows, drops the photos that ROOT/face_photos/
already records (so a re-run resumes and never repeats work), adds each photo's user from
the photos table, and spreads the rest evenly over tasks of about --photos-per-task photos.
Each task loads the models once per Python worker, processes its photos one by one and
every --flush-rows photos writes three things, each as whole files (runfiles): the face
rows to ROOT/faces/, the unprocessable photos to ROOT/quarantine/faces/, and last the
per-photo outcomes to ROOT/face_photos/, the ledger that marks those photos done. Only
counts travel back to the driver. After a retried task or an interrupted run, `repair`
keeps one row per face and per photo.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from faceatlas import __version__, runfiles, schemas
from faceatlas.faces import STEPS, FaceOptions, get_models, process_photo
from faceatlas.partwrite import write_partitioned
from faceatlas.storage import HadoopFS, normalize_root, table_path, write_stats

log = logging.getLogger(__name__)

PHOTO_STATUSES = ("faces", "no_face", "quarantined")


class FacesError(RuntimeError):
    """A faces run cannot start (no images table, bad settings): exit code 2."""


@dataclass(frozen=True)
class FacesJob:
    faces: FaceOptions = field(default_factory=FaceOptions)
    limit: int | None = None  # at most this many photos (in photo_id order) per run
    photos_per_task: int = 200
    flush_rows: int = 100

    def settings(self) -> dict:
        return {"faces": self.faces.settings(), "limit": self.limit}

    def settings_hash(self) -> str:
        blob = json.dumps(self.settings(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# The tables this stage writes, with the key that must be unique in each.
def _tables(root: str) -> dict[str, tuple[str, pa.Schema, str]]:
    return {
        "faces": (table_path(root, "faces"), schemas.FACES, "face_id"),
        "quarantine": (
            table_path(root, "quarantine", "faces"),
            schemas.QUARANTINE_FACES,
            "photo_id",
        ),
        "face_photos": (table_path(root, "face_photos"), schemas.FACE_PHOTOS, "photo_id"),
    }


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows],
                                schema=schema)  # fmt: skip


def _task_fn(job: FacesJob, root: str, run_id: str):
    tables = _tables(root)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part, attempt = ctx.partitionId(), ctx.taskAttemptId()
        stem = runfiles.part_stem(run_id, part, attempt)
        seq = itertools.count()
        models = get_models(job.faces)
        counts: Counter = Counter()
        pending: dict[str, list[dict]] = {"faces": [], "quarantine": [], "face_photos": []}
        t0, done = time.monotonic(), 0

        def flush() -> None:
            n = next(seq)
            # The ledger goes last: a photo counts as done only once its faces are on disk.
            for name in ("faces", "quarantine", "face_photos"):
                path, schema, key = tables[name]
                if pending[name]:
                    write_partitioned(_table(pending[name], schema), path,
                                      schemas.FACES_PARTITIONS, f"{stem}-{n:04d}",
                                      sort_cols=(key,))  # fmt: skip
                    pending[name] = []

        for batch in batches:
            for row in batch.to_pylist():
                r = process_photo(row, models, run_id)
                pending["faces"] += r.faces
                pending["face_photos"].append(r.outcome)
                counts[f"photos:{r.outcome['status']}"] += 1
                counts["faces"] += len(r.faces)
                counts["faces_passed"] += sum(f["quality_pass"] for f in r.faces)
                for why in r.outcome["dropped"]:
                    counts[f"dropped:{why}"] += 1
                for f in r.faces:
                    for check in f["quality_failed"]:
                        counts[f"failed:{check}"] += 1
                if r.quarantine is not None:
                    pending["quarantine"].append(r.quarantine)
                    counts[f"quarantine:{r.quarantine['reason']}"] += 1
                for step, s in r.seconds.items():
                    counts[f"seconds:{step}"] += round(s * 1e6)
                done += 1
                if len(pending["face_photos"]) >= job.flush_rows:
                    flush()
        flush()
        if done:
            log.warning("faces task %d done: %d photos in %.1f s, %d faces", part, done,
                        time.monotonic() - t0, counts["faces"])  # fmt: skip
        yield runfiles.counts_batch(counts)

    return run


def _repair_all(spark, root: str, run_id: str) -> int:
    """Repair each table whose files could hold duplicates; returns rows removed."""
    removed = 0
    for path, schema, key in _tables(root).values():
        files, _ = runfiles.data_files(path)
        clean = [run_id]
        if runfiles.may_have_duplicates(path, files, run_id):
            # Run ids start with their start time: the newest run's row wins.
            removed += runfiles.repair(spark, path, schemas.spark_ddl(schema), key,
                                       ("run_id",), lambda r: (r["run_id"],))  # fmt: skip
            clean += runfiles.runs_in(files)
        runfiles.mark_clean(path, clean)
    return removed


def run_faces(spark, root: str, job: FacesJob) -> dict:
    """Process every ok image not yet in face_photos; returns the run's stats."""
    from pyspark.sql import functions as F

    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    images_path = table_path(root, "images")
    if not fs.exists(images_path):
        raise FacesError(f"no images table at {images_path}: run `faceatlas fetch` first")
    # Load the models on the driver first: a missing model or template is a clear error
    # here, not a task failure repeated on every executor.
    try:
        get_models(job.faces)
    except (FileNotFoundError, ValueError) as e:
        raise FacesError(f"cannot load the face models: {e}") from None
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    images = spark.read.schema(schemas.spark_ddl(schemas.IMAGES)).parquet(images_path)
    ok = images.where(F.col("status") == "ok").select("photo_id")
    ledger_path = table_path(root, "face_photos")
    if runfiles.data_files(ledger_path)[0]:
        done = spark.read.schema(schemas.spark_ddl(schemas.FACE_PHOTOS)).parquet(ledger_path)
        todo_ids = ok.join(done.select("photo_id"), "photo_id", "left_anti")
    else:
        todo_ids = ok
    todo_ids = todo_ids.distinct()
    if job.limit is not None:
        todo_ids = todo_ids.orderBy("photo_id").limit(job.limit)
    todo_ids = todo_ids.cache()
    n_todo = todo_ids.count()
    n_ok = ok.count()
    log.warning("faces: %d ok images, %d to process (run %s)", n_ok, n_todo, run_id)

    counts: Counter = Counter()
    t_work = time.time()
    if n_todo:
        photos_path = table_path(root, "photos")
        rows = images.where(F.col("status") == "ok").join(todo_ids, "photo_id", "left_semi")
        rows = rows.select("photo_id", "image", "country", "continent")
        if fs.exists(photos_path):
            users = spark.read.schema(schemas.spark_ddl(schemas.PHOTOS)).parquet(photos_path)
            rows = rows.join(users.select("photo_id", "user_id"), "photo_id", "left")
        else:
            rows = rows.withColumn("user_id", F.lit(None).cast("string"))
        # A whole number of waves, as in the fetch stage.
        cores = max(1, spark.sparkContext.defaultParallelism)
        n_parts = math.ceil(math.ceil(n_todo / job.photos_per_task) / cores) * cores
        rows = rows.repartition(min(n_parts, n_todo), "photo_id")
        stop = threading.Event()
        runfiles.progress_thread(spark, stop, "faces")
        try:
            result = rows.mapInArrow(_task_fn(job, root, run_id),
                                     schemas.spark_ddl(schemas.TASK_COUNTS)).collect()  # fmt: skip
        finally:
            stop.set()
        for r in result:
            counts[r["key"]] += r["n"]
    todo_ids.unpersist()
    work_seconds = time.time() - t_work
    removed = _repair_all(spark, root, run_id)

    processed = sum(counts[f"photos:{s}"] for s in PHOTO_STATUSES)
    if processed != n_todo:
        raise FacesError(f"internal: {n_todo} photos to process but {processed} came back")
    seconds = time.time() - t0
    cores = spark.sparkContext.defaultParallelism
    step_seconds = {s: counts[f"seconds:{s}"] / 1e6 for s in STEPS}
    step_total = sum(step_seconds.values()) or 1.0
    stats = {
        "stage": "faces",
        "version": __version__,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "work_seconds": round(work_seconds, 3),
        "ok_images": n_ok,
        "already_processed": n_ok - n_todo if job.limit is None else None,
        "processed": processed,
        "photos": {s: counts[f"photos:{s}"] for s in PHOTO_STATUSES},
        "faces": counts["faces"],
        "faces_passed": counts["faces_passed"],
        "dropped": _prefixed(counts, "dropped:"),
        "failed_checks": _prefixed(counts, "failed:"),
        "quarantine": _prefixed(counts, "quarantine:"),
        "step_seconds": {k: round(v, 3) for k, v in step_seconds.items()},
        "step_share": {k: round(v / step_total, 3) for k, v in step_seconds.items()},
        "photos_per_second_per_core": round(processed / max(work_seconds, 1e-9) / cores, 2),
        "duplicates_removed": removed,
        "settings": job.settings(),
        "settings_hash": job.settings_hash(),
        "spark_master": spark.sparkContext.master,
        "cores": cores,
        "output": table_path(root, "faces"),
    }
    write_stats(fs, root, "faces", stats)
    log.warning(
        "faces: %d photos processed in %.1f s: %d with faces, %d without, %d quarantined; "
        "%d faces (%d pass the quality checks)",
        processed, seconds, stats["photos"]["faces"], stats["photos"]["no_face"],
        stats["photos"]["quarantined"], stats["faces"], stats["faces_passed"],
    )  # fmt: skip
    return stats


def _prefixed(counts: Counter, prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}
