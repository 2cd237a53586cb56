"""The files that a stage's tasks write straight into a table, and keeping them exactly once.

Stages whose tasks do slow work per row (fetch, faces) write their rows from the tasks, a
few hundred at a time, as whole files named

    part-RUN-PARTITION-TASKATTEMPTID-SEQ.parquet

(hidden name first, then a rename), so a killed run leaves only whole files and the next
run resumes from them. Duplicates come only from a retried task (two attempt ids for one
partition of a run) or from a run that died before checking itself; `repair` removes
them, and a ledger of clean runs (`_clean_runs.json`) lets the next run skip that pass
when no duplicate is possible.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from faceatlas import schemas
from faceatlas.partwrite import filesystem

log = logging.getLogger(__name__)

PART_NAME = re.compile(r"^part-(\d{8}T\d{6}-[0-9a-f]{6})-(\d{5})-(\d+)-\d{4}\.parquet$")
CLEAN_RUNS = "_clean_runs.json"


def part_stem(run_id: str, partition: int, attempt_id: int) -> str:
    """The name of a task's files, without the sequence number and extension.

    `attempt_id` is Spark's task attempt id, unique in the application: a resubmitted
    stage numbers its attempts from 0 again, and its files must not overwrite the first.
    """
    return f"part-{run_id}-{partition:05d}-{attempt_id}"


def data_files(path: str) -> tuple[list[str], list[str]]:
    """(visible Parquet files, leftover hidden temporary files) under a table."""
    fs, base = filesystem(path)
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


def attempts_by_partition(files: Sequence[str]) -> dict[tuple[str, str], set[str]]:
    """(run, partition) -> the task attempt ids that wrote files for it."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for f in files:
        m = PART_NAME.match(f.rsplit("/", 1)[-1])
        if m:
            out[m.group(1), m.group(2)].add(m.group(3))
    return out


def runs_in(files: Sequence[str]) -> list[str]:
    return sorted({run for run, _ in attempts_by_partition(files)})


def may_have_duplicates(path: str, files: Sequence[str], current_run: str) -> bool:
    """Whether `repair` has anything to look for (it costs a pass over the table).

    `current_run` is the run that just finished: it counts as clean unless one of its
    partitions was written by two attempts; any other run must be in the ledger.
    """
    fs, base = filesystem(path)
    clean = {current_run, *read_json(fs, f"{base}/{CLEAN_RUNS}").get("runs", [])}
    attempts = attempts_by_partition(files)
    if any(run not in clean for run, _ in attempts):
        return True
    return any(len(a) > 1 for a in attempts.values())


def mark_clean(path: str, run_ids: Sequence[str]) -> None:
    """Record that every row of these runs has been through repair (or needed none)."""
    fs, base = filesystem(path)
    fs.create_dir(base, recursive=True)
    ledger = f"{base}/{CLEAN_RUNS}"
    runs = sorted({*read_json(fs, ledger).get("runs", []), *run_ids})
    tmp = f"{base}/.{CLEAN_RUNS}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(json.dumps({"runs": runs}).encode())
    fs.move(tmp, ledger)


def read_json(fs: pafs.FileSystem, path: str) -> dict:
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode())


def _key_column(table: pa.Table, key: Sequence[str]) -> pa.ChunkedArray:
    """The key of each row: the column itself, or its columns joined with '|'."""
    if len(key) == 1:
        return table.column(key[0])
    parts = [pc.cast(table.column(k), pa.string()) for k in key]
    return pc.binary_join_element_wise(*parts, "|")


def rewrite_without(file_uri: str, key: str | Sequence[str], ids: set) -> int:
    """Drop the rows whose key (a column, or columns joined with '|') is in `ids` from one
    Parquet file (deleted when nothing is left). Returns the rows removed."""
    keys = (key,) if isinstance(key, str) else tuple(key)
    fs, path = filesystem(file_uri)
    table = pq.read_table(path, filesystem=fs)
    column = _key_column(table, keys)
    keep = pc.invert(pc.is_in(column, pa.array(sorted(ids), column.type)))
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


def repair(spark, path: str, ddl: str, key: str | Sequence[str], rank_cols: Sequence[str],
           rank: Callable[[dict], tuple]) -> int:  # fmt: skip
    """Keep one row per key (a column, or several): the one with the highest `rank(row)`
    (over `rank_cols`, then the file name); rewrite the few files that hold the others.
    Returns the rows removed.
    """
    from pyspark.sql import functions as F

    keys = (key,) if isinstance(key, str) else tuple(key)
    files, temps = data_files(path)
    fs, _ = filesystem(path)
    for t in temps:  # a killed writer's half-written file
        fs.delete_file(t)
    if not files:
        return 0
    df = spark.read.schema(ddl).parquet(path)
    k = F.col(keys[0]) if len(keys) == 1 else F.concat_ws("|", *[F.col(c) for c in keys])
    df = df.select(k.alias("_key"), *dict.fromkeys(rank_cols),
                   F.col("_metadata.file_path").alias("_file"))  # fmt: skip
    dup_keys = df.groupBy("_key").count().where("count > 1").select("_key")
    rows = [r.asDict() for r in df.join(dup_keys, "_key").collect()]
    if not rows:
        return 0
    by_key: dict[object, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[r["_key"]].append(r)
    losers: dict[str, set] = defaultdict(set)
    for kv, rs in by_key.items():
        rs.sort(key=lambda r: (*rank(r), r["_file"]), reverse=True)
        for r in rs[1:]:
            losers[r["_file"]].add(kv)
    removed = sum(rewrite_without(f, keys, ids) for f, ids in sorted(losers.items()))
    log.warning("%s: removed %d duplicate rows from %d files", path, removed, len(losers))
    return removed


def counts_batch(counts: dict[str, int]) -> pa.RecordBatch:
    """A task's counts as the one batch it hands back (key, n), keys sorted."""
    keys = sorted(counts)
    return pa.RecordBatch.from_pydict(
        {"key": keys, "n": [int(counts[k]) for k in keys]}, schema=schemas.TASK_COUNTS
    )


def progress_thread(spark, stop: threading.Event, label: str, every: float = 15.0):
    """Logs the driver's view while tasks run: tasks finished of the active stages."""

    def loop() -> None:
        tracker = spark.sparkContext.statusTracker()
        while not stop.wait(every):
            for sid in tracker.getActiveStageIds():
                info = tracker.getStageInfo(sid)
                if info is not None:
                    log.warning(
                        "%s: stage %d: %d/%d tasks done, %d running",
                        label, sid, info.numCompletedTasks, info.numTasks, info.numActiveTasks,
                    )  # fmt: skip

    t = threading.Thread(target=loop, name=f"{label}-progress", daemon=True)
    t.start()
    return t
