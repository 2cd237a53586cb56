"""The pipeline on a real Spark standalone cluster (a master and two one-core workers on
127.0.0.1, driven through spark-submit): its tables equal those of the local-mode run of
the same input, and a worker killed in the middle of the faces stage costs nothing but
time: Spark reschedules the lost tasks and every photo is recorded exactly once."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
from conftest import SMALL_WORLD
from standalone import free_port, get_json, standalone_cluster

pytestmark = [pytest.mark.spark, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
# Differ between any two runs by design: when, how long, which run, which port served it.
VOLATILE = {"url", "final_url", "seconds", "fetched_at", "processed_at", "projected_at",
            "run_id"}  # fmt: skip
KEYS = {"photos": ["photo_id"], "images": ["photo_id"], "faces": ["face_id"],
        "face_photos": ["photo_id"], "latents": ["face_id"]}  # fmt: skip


def submit_conf(ui_port: int) -> dict[str, str]:
    return {"spark.executor.memory": "900m", "spark.executor.cores": "1",
            "spark.driver.memory": "1g", "spark.ui.port": str(ui_port),
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4"}  # fmt: skip


def table(root: Path, name: str) -> pd.DataFrame:
    df = ds.dataset(root / name, format="parquet", partitioning="hive").to_table().to_pandas()
    df = df.drop(columns=[c for c in df.columns if c in VOLATILE])
    return df.sort_values(KEYS[name]).reset_index(drop=True)[sorted(df.columns)]


def _floats(values: list) -> bool:
    first = next((v for v in values if v is not None), None)
    return isinstance(first, float) or (isinstance(first, np.ndarray) and first.dtype.kind == "f")


def assert_same_table(a: pd.DataFrame, b: pd.DataFrame, name: str, float_tol: float) -> None:
    assert list(a.columns) == list(b.columns), name
    assert len(a) == len(b) and len(a) > 0, (name, len(a), len(b))
    for col in a.columns:
        x, y = a[col].tolist(), b[col].tolist()
        if _floats(x):
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
                assert u.shape == v.shape and np.allclose(u, v, atol=float_tol, equal_nan=True), (
                    name, col, i, np.nanmax(np.abs(u - v)))  # fmt: skip
        else:
            as_lists = [[list(v) if isinstance(v, np.ndarray) else v for v in c] for c in (x, y)]
            assert as_lists[0] == as_lists[1], (name, col)


def tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with standalone_cluster(tmp_path_factory.mktemp("cluster"), workers=2) as c:
        yield c


def test_pipeline_on_a_standalone_cluster_equals_local_mode(cluster, small_world, tmp_path):
    local, _ = small_world
    root = tmp_path / "root"
    log = tmp_path / "submit.log"
    proc = cluster.submit(REPO / "jobs" / "demo.py",
                          ["--data", str(root), "--world", f"{local}-world", *SMALL_WORLD],
                          log, submit_conf(free_port()))  # fmt: skip
    assert proc.wait(timeout=900) == 0, tail(log)
    assert "retrieval accuracy" in log.read_text()

    apps = get_json(f"http://127.0.0.1:{cluster.web_port}/json/")["completedapps"]
    assert apps and apps[-1]["name"].startswith("faceatlas")  # it ran on this cluster
    stats = (root / "_stats" / "faces.json").read_text()
    assert cluster.url in stats
    for name in ("photos", "images", "faces", "face_photos"):
        assert_same_table(table(root, name), table(local, name), name, float_tol=1e-4)
    # Projection sums in a different order on one-core executors than in local[2].
    assert_same_table(table(root, "latents"), table(local, "latents"), "latents", 5e-3)


def _faces_executor_port(ui: str) -> int | None:
    """The web port of a worker running a task of the faces stage's main stage (the one with
    a task per few photos, not a planning one), once that stage has finished a task."""
    try:
        app = get_json(f"{ui}/api/v1/applications")[0]["id"]
        stages = get_json(f"{ui}/api/v1/applications/{app}/stages?status=active")
        faces = [s for s in stages if "spark_faces" in s["name"] and s["numTasks"] >= 5]
        # One task done, and enough left that the victim is never idle when it dies.
        if not faces or not 1 <= faces[0]["numCompleteTasks"] <= faces[0]["numTasks"] - 3:
            return None
        for e in get_json(f"{ui}/api/v1/applications/{app}/executors"):
            if e["id"] != "driver" and e["activeTasks"] > 0:
                return int(e["executorLogs"]["stdout"].split("//", 1)[1].split("/")[0]
                           .rsplit(":", 1)[1])  # fmt: skip
    except (OSError, IndexError, KeyError, ValueError):
        return None
    return None


def test_killing_a_worker_in_the_faces_stage_loses_nothing(cluster, small_world, tmp_path):
    local, _ = small_world
    root = tmp_path / "root"
    shutil.copytree(local, root)
    for gone in ("faces", "face_photos", "quarantine/faces", "latents"):
        shutil.rmtree(root / gone, ignore_errors=True)
    ui_port = free_port()
    log = tmp_path / "submit.log"
    # Three photos a task: 7 tasks of a second or more, so the kill lands in a running task
    # with others done and others still to come.
    proc = cluster.submit(REPO / "jobs" / "faces.py",
                          ["--data", str(root), "--photos-per-task", "3"],
                          log, submit_conf(ui_port))  # fmt: skip
    killed, deadline = None, time.time() + 600
    while killed is None and proc.poll() is None and time.time() < deadline:
        port = _faces_executor_port(f"http://127.0.0.1:{ui_port}")
        if port is not None:
            victim = cluster.worker_web_ports.index(port) + 1
            killed = cluster.kill_worker(victim)
        time.sleep(0.2)
    assert killed, "never saw a faces task running: " + tail(log)
    assert proc.wait(timeout=900) == 0, tail(log)
    text = log.read_text()
    assert "Lost executor" in text, tail(log)
    assert re.search(r"Starting task \d+\.1 in stage", text), tail(log)  # a second attempt
    assert cluster.alive_workers() == 1

    faces, photos = table(root, "faces"), table(root, "face_photos")
    assert not faces["face_id"].duplicated().any() and not photos["photo_id"].duplicated().any()
    images = table(root, "images")
    assert set(photos["photo_id"]) == set(images.loc[images["status"] == "ok", "photo_id"])
    assert_same_table(faces, table(local, "faces"), "faces", float_tol=1e-4)
    assert_same_table(photos, table(local, "face_photos"), "face_photos", float_tol=1e-4)
