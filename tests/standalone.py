"""A real Spark standalone cluster on 127.0.0.1 for tests: a master and N workers started
with the spark-daemon.sh that ships inside the pyspark package (pip's pyspark has no
start-master.sh), each worker with its own cores, memory, work folder and web UI.

`standalone_cluster` stops every daemon it started, and kills whatever a daemon left
behind (executor JVMs, Python workers), whatever happens in the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyspark

MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
SPARK_HOME = Path(pyspark.__file__).parent
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


@dataclass
class Cluster:
    home: Path
    env: dict[str, str]
    port: int
    web_port: int
    worker_web_ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def daemon(self, action: str, cls: str, instance: int, *args: str) -> None:
        subprocess.run(
            ["bash", str(SPARK_HOME / "sbin" / "spark-daemon.sh"), action, cls, str(instance),
             *args],
            env=self.env, check=action == "start", capture_output=True, timeout=60,
        )  # fmt: skip

    def pid(self, cls: str, instance: int) -> int | None:
        f = self.home / "pids" / f"spark-faceatlas-test-{cls}-{instance}.pid"
        return int(f.read_text()) if f.exists() else None

    def alive_workers(self) -> int:
        try:
            return int(get_json(f"http://127.0.0.1:{self.web_port}/json/")["aliveworkers"])
        except OSError:
            return 0

    def wait_workers(self, n: int, timeout: float = 90.0) -> None:
        deadline = time.time() + timeout
        while self.alive_workers() != n:
            if time.time() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in (self.home / "logs").glob("*"))
                raise TimeoutError(f"{self.alive_workers()} of {n} workers alive\n{logs}")
            time.sleep(0.5)

    def kill_worker(self, instance: int) -> list[int]:
        """SIGKILL a worker and everything it started (a machine lost): return the pids."""
        pid = self.pid(WORKER, instance)
        assert pid is not None, f"worker {instance} has no pid file"
        return kill_tree(pid)

    def submit(
        self, script: Path, args: list[str], log: Path, conf: dict[str, str]
    ) -> subprocess.Popen:
        """spark-submit SCRIPT ARGS to this cluster in client mode; output goes to `log`."""
        cmd = [str(SPARK_SUBMIT), "--master", self.url]
        for k, v in conf.items():
            cmd += ["--conf", f"{k}={v}"]
        env = dict(self.env, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
        with open(log, "wb") as out:
            return subprocess.Popen([*cmd, str(script), *args], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def kill_tree(pid: int) -> list[int]:
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    psutil.wait_procs(procs, timeout=10)
    return [p.pid for p in procs]


@contextlib.contextmanager
def standalone_cluster(
    home: Path, workers: int = 2, cores: int = 1, memory: str = "1g"
) -> Iterator[Cluster]:
    """Start a master and `workers` workers on 127.0.0.1; stop them all on the way out.

    A killed worker is noticed at once (its connections close), not after the heartbeat
    timeout, which stays at Spark's 60 s: a shorter one drops live workers of a busy
    two-core machine."""
    for sub in ("logs", "pids", "work"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOG_DIR=str(home / "logs"),
        SPARK_PID_DIR=str(home / "pids"),
        SPARK_WORKER_DIR=str(home / "work"),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_IDENT_STRING="faceatlas-test",
    )
    cluster = Cluster(home, env, free_port(), free_port())
    started: list[tuple[str, int]] = []
    try:
        cluster.daemon("start", MASTER, 1, "--host", "127.0.0.1", "--port", str(cluster.port),
                       "--webui-port", str(cluster.web_port))  # fmt: skip
        started.append((MASTER, 1))
        for i in range(1, workers + 1):
            web = free_port()
            cluster.worker_web_ports.append(web)
            cluster.daemon("start", WORKER, i, cluster.url, "--host", "127.0.0.1",
                           "--cores", str(cores), "--memory", memory, "--webui-port", str(web),
                           "--work-dir", str(home / "work" / f"w{i}"))  # fmt: skip
            started.append((WORKER, i))
        cluster.wait_workers(workers)
        yield cluster
    finally:
        pids = [cluster.pid(cls, i) for cls, i in started]
        for cls, i in reversed(started):
            cluster.daemon("stop", cls, i)
        for pid in pids:  # whatever a stop left running, and its executors
            with contextlib.suppress(psutil.NoSuchProcess):
                if pid is not None and "java" in psutil.Process(pid).name():
                    kill_tree(pid)
