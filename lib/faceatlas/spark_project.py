"""The projection stage on Spark: faces that passed the quality checks, into latents.

The driver loads the generator once to learn its identity (content hash) and alignment,
takes the faces with `quality_pass` aligned the way the generator expects, drops those
that already have a latent for the same generator hash and projection settings (so a
re-run resumes), and spreads the rest over tasks. Each task loads the generator (and the
discriminator when the loss needs it) once per Python worker, on the GPU Spark assigned
to the task when there is one (`spark.task.resource.gpu.amount`), else on the CPU, and
projects its faces in batches of --batch, writing each batch's rows to ROOT/latents/ as
whole files. Faces whose alignment does not match the generator are counted, not
projected.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from faceatlas import __version__, runfiles, schemas
from faceatlas.partwrite import write_partitioned
from faceatlas.project import ProjectOptions, project, resolve_space
from faceatlas.storage import HadoopFS, normalize_root, table_path, write_stats

log = logging.getLogger(__name__)

_CARRIED = ("face_id", "photo_id", "user_id", "gender", "age_group", "age_bin", "skin_tone",
            "country", "continent")  # fmt: skip


class ProjectError(RuntimeError):
    """A projection run cannot start: exit code 2."""


@dataclass(frozen=True)
class ProjectJob:
    generator: str = "dcgan64"
    options: ProjectOptions = field(default_factory=ProjectOptions)
    device: str = "auto"  # auto (the task's GPU, else CPU), cpu, cuda
    limit: int | None = None
    faces_per_task: int = 256
    torch_threads: int = 1  # per Python worker on the CPU: one core per task


# -- per worker ---------------------------------------------------------------------------
_LOADED: dict[tuple[str, str], tuple] = {}
_LOCK = threading.Lock()


def _device(wanted: str) -> str:
    import torch

    if wanted == "cpu" or not torch.cuda.is_available():
        if wanted == "cuda":
            raise RuntimeError("--device cuda, but torch sees no CUDA device here")
        return "cpu"
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            return f"cuda:{gpus.addresses[0]}"
    except Exception:  # outside a task, or a cluster without resource scheduling
        pass
    return "cuda:0"


def _networks(spec: str, device: str, need_d: bool):
    from faceatlas.gan import load, load_discriminator

    with _LOCK:
        key = (spec, device)
        if key not in _LOADED:
            G = load(spec, device)
            D = load_discriminator(spec, device) if need_d else None
            _LOADED[key] = (G, D)
        return _LOADED[key]


def _decode_png(data: bytes) -> np.ndarray:
    import cv2

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("undecodable aligned face")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _task_fn(job: ProjectJob, latents_path: str, run_id: str, generator_hash: str,
             settings_hash: str, loss_needs_d: bool):  # fmt: skip
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import torch
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part, attempt = ctx.partitionId(), ctx.taskAttemptId()
        stem = runfiles.part_stem(run_id, part, attempt)
        seq = itertools.count()
        device = _device(job.device)
        if device == "cpu":
            torch.set_num_threads(job.torch_threads)
        G, D = _networks(job.generator, device, loss_needs_d)
        counts: Counter = Counter()
        rows = [r for b in batches for r in b.to_pylist()]
        t0 = time.monotonic()
        for start in range(0, len(rows), job.options.batch):
            chunk = rows[start : start + job.options.batch]
            faces, keep = [], []
            for r in chunk:
                try:
                    faces.append(_decode_png(r["aligned"]))
                    keep.append(r)
                except ValueError:
                    counts["skipped:bad_aligned"] += 1
            results = project(G, faces, [r["face_id"] for r in keep], job.options, D, device)
            now = datetime.now(UTC)
            out = []
            for r, p in zip(keep, results, strict=True):
                out.append({**{c: r.get(c) for c in _CARRIED},
                            "generator": job.generator, "generator_hash": generator_hash,
                            "space": p.space, "latent": p.latent.reshape(-1).tolist(),
                            "latent_shape": list(p.latent.shape), "loss_kind": p.loss_kind,
                            "loss": p.loss, "steps": p.steps, "psnr": p.psnr, "ssim": p.ssim,
                            "settings_hash": settings_hash, "device": device,
                            "run_id": run_id, "projected_at": now})  # fmt: skip
                counts["projected"] += 1
                counts["steps"] += p.steps
                counts[f"loss:{p.loss_kind}"] += 1
                counts["psnr_x1000"] += round(p.psnr * 1000)
            if out:
                table = pa.Table.from_pylist(
                    [{f.name: o.get(f.name) for f in schemas.LATENTS} for o in out],
                    schema=schemas.LATENTS,
                )
                write_partitioned(table, latents_path, schemas.LATENTS_PARTITIONS,
                                  f"{stem}-{next(seq):04d}", sort_cols=("face_id",))  # fmt: skip
            log.warning("project task %d: %d/%d faces in %.1f s on %s", part,
                        min(start + len(chunk), len(rows)), len(rows), time.monotonic() - t0,
                        device)  # fmt: skip
        yield runfiles.counts_batch(counts)

    return run


# -- the driver ---------------------------------------------------------------------------
def run_project(spark, root: str, job: ProjectJob) -> dict:
    from pyspark.sql import functions as F

    from faceatlas.gan import GeneratorError, load, load_discriminator

    root = normalize_root(root)
    t0 = time.time()
    fs = HadoopFS(spark)
    faces_path = table_path(root, "faces")
    latents_path = table_path(root, "latents")
    if not fs.exists(faces_path):
        raise ProjectError(f"no faces table at {faces_path}: run `faceatlas faces` first")
    try:
        G = load(job.generator)
        space = resolve_space(G, job.options.space)
        has_d = (
            job.options.loss in ("auto", "disc")
            and not job.options.vgg_weights
            and (load_discriminator(job.generator) is not None)
        )
    except (GeneratorError, ValueError, FileNotFoundError) as e:
        raise ProjectError(str(e)) from None
    if job.options.loss == "disc" and not has_d:
        raise ProjectError(f"loss disc, but {job.generator} has no discriminator")
    generator_hash = G.identity
    settings_hash = job.options.settings_hash()
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]

    faces = spark.read.schema(schemas.spark_ddl(schemas.FACES)).parquet(faces_path)
    passed = faces.where(F.col("quality_pass"))
    usable = passed.where(F.col("alignment") == G.alignment)
    n_passed, n_usable = passed.count(), usable.count()
    if n_passed and not n_usable:
        raise ProjectError(
            f"none of the {n_passed} faces is aligned for {job.generator} (it wants "
            f"{G.alignment}); re-run `faceatlas faces` with the matching --align"
        )
    todo = usable
    if runfiles.data_files(latents_path)[0]:
        done = spark.read.schema(schemas.spark_ddl(schemas.LATENTS)).parquet(latents_path)
        done = done.where((F.col("generator_hash") == generator_hash)
                          & (F.col("settings_hash") == settings_hash))  # fmt: skip
        todo = todo.join(done.select("face_id"), "face_id", "left_anti")
    if job.limit is not None:
        todo = todo.orderBy("face_id").limit(job.limit)
    todo = todo.select(*_CARRIED, "aligned").cache()
    n_todo = todo.count()
    log.warning("project: %d faces pass, %d aligned for %s, %d to project (run %s)",
                n_passed, n_usable, job.generator, n_todo, run_id)  # fmt: skip

    counts: Counter = Counter()
    t_work = time.time()
    if n_todo:
        cores = max(1, spark.sparkContext.defaultParallelism)
        n_parts = math.ceil(math.ceil(n_todo / job.faces_per_task) / cores) * cores
        parts = todo.repartition(min(n_parts, n_todo), "face_id")
        stop = threading.Event()
        runfiles.progress_thread(spark, stop, "project")
        try:
            fn = _task_fn(job, latents_path, run_id, generator_hash, settings_hash, has_d)
            result = parts.mapInArrow(fn, schemas.spark_ddl(schemas.TASK_COUNTS)).collect()
        finally:
            stop.set()
        for r in result:
            counts[r["key"]] += r["n"]
    todo.unpersist()
    work_seconds = time.time() - t_work

    files, _ = runfiles.data_files(latents_path)
    removed, clean = 0, [run_id]
    if runfiles.may_have_duplicates(latents_path, files, run_id):
        # One row per face, generator and settings: the newest run's.
        removed = runfiles.repair(spark, latents_path, schemas.spark_ddl(schemas.LATENTS),
                                  ("face_id", "generator_hash", "settings_hash"), ("run_id",),
                                  lambda r: (r["run_id"],))  # fmt: skip
        clean += runfiles.runs_in(files)
    if files or n_todo:
        runfiles.mark_clean(latents_path, clean)

    projected = counts["projected"]
    skipped = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("skipped:")}
    if projected + sum(skipped.values()) != n_todo:
        raise ProjectError(f"internal: {n_todo} faces to project, {projected} came back")
    seconds = time.time() - t0
    cores = spark.sparkContext.defaultParallelism
    stats = {
        "stage": "project",
        "version": __version__,
        "run_id": run_id,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "work_seconds": round(work_seconds, 3),
        "generator": job.generator,
        "generator_hash": generator_hash,
        "generator_alignment": G.alignment,
        "space": space,
        "faces_passed": n_passed,
        "faces_aligned_for_generator": n_usable,
        "projected": projected,
        "skipped": skipped,
        "loss_kinds": {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("loss:")},
        "mean_steps": round(counts["steps"] / projected, 1) if projected else None,
        "mean_psnr": round(counts["psnr_x1000"] / 1000 / projected, 2) if projected else None,
        "faces_per_second": round(projected / max(work_seconds, 1e-9), 3),
        "duplicates_removed": removed,
        "settings": {
            **job.options.settings(),
            "batch": job.options.batch,
            "device": job.device,
        },
        "settings_hash": settings_hash,
        "spark_master": spark.sparkContext.master,
        "cores": cores,
        "pid": os.getpid(),
        "output": latents_path,
    }
    write_stats(fs, root, "project", stats)
    log.warning("project: %d faces projected in %.1f s (mean PSNR %s dB)", projected, seconds,
                stats["mean_psnr"])  # fmt: skip
    return stats


def summary_json(stats: dict) -> str:
    keys = ("generator", "generator_hash", "space", "faces_passed",
            "faces_aligned_for_generator", "projected", "skipped", "loss_kinds", "mean_steps",
            "mean_psnr", "seconds")  # fmt: skip
    return json.dumps({k: stats[k] for k in keys}, indent=2)
