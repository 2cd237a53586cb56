"""Benchmark: the fetch stage against img2dataset, same URLs, same resize, same machine.

Prints figures, never passes or fails on them:
- a CPU floor before and after each run: one core decoding and resizing one of the JPEGs
  with Pillow, images/s (this host's speed drifts by up to 2x within minutes);
- `faceatlas fetch` in Spark local[N]: images/s and images/s per core for the whole command,
  for the stage (as _stats/fetch.json measures it) and for its fetch phase alone, with
  validation only and with a resize to 256 px;
- img2dataset 1.47.0 (installed on first use into its own virtual environment) on the same
  URL list with the same resize, whole run; and the ratio ours / img2dataset.

The images (about 500x375 JPEGs) are served from 127.0.0.1 by nginx (Debian's nginx-light,
one worker process so the clients get most of the CPU), or, without nginx, by a Python
server with Nagle disabled. All traffic stays on 127.0.0.1.

    python bench/bench_fetch.py [--images 5000] [--distinct N] [--runs 1] [--cores 2]
                                [--skip-img2dataset]
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / "bench-data" / "fetch"
I2D_VENV = HERE.parent / "bench-data" / "img2dataset-venv"
I2D_VERSION = "1.47.0"


# -- images and server ------------------------------------------------------------------
def _draw(args: tuple[int, str]) -> int:
    """One synthetic photo: smooth gradients, shapes and some noise, like a real scene."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    i, path = args
    rng = np.random.default_rng(i)
    h, w = 375, 500
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-0.4, 0.4, (3, 2))
    img = np.stack([base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)], axis=-1)
    img += rng.normal(0, 6, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(10, 200), y0 + rng.integers(10, 150)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    im = im.filter(ImageFilter.GaussianBlur(1.2))
    im.save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_images(n: int, distinct: int | None = None) -> Path:
    """n URLs' files; with `distinct`, image i >= distinct is a hard link to i % distinct, so
    a run of 100k photos does not first draw (and store) 100k JPEGs."""
    folder = WORK / "www" / "img"
    folder.mkdir(parents=True, exist_ok=True)
    drawn = min(n, distinct or n)
    todo = [(i, str(folder / f"{i}.jpg")) for i in range(drawn)
            if not (folder / f"{i}.jpg").exists()]  # fmt: skip
    if todo:
        print(f"drawing {len(todo):,} JPEGs of 500x375 into {folder} (cached for later runs)")
        with ProcessPoolExecutor() as pool:
            list(pool.map(_draw, todo, chunksize=64))
    for i in range(drawn, n):
        if not (folder / f"{i}.jpg").exists():
            os.link(folder / f"{i % drawn}.jpg", folder / f"{i}.jpg")
    sizes = [os.path.getsize(folder / f"{i}.jpg") for i in range(n)]
    print(f"{n:,} images, mean {sum(sizes) / n / 1024:.0f} KiB")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """nginx when installed, else a Python server; serves WORK/www on 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None
        self.kind = "nginx" if shutil.which("nginx") else "python"

    def __enter__(self) -> Server:
        root = WORK / "www"
        if self.kind == "nginx":
            conf_dir = WORK / "nginx"
            (conf_dir / "logs").mkdir(parents=True, exist_ok=True)
            conf = conf_dir / "nginx.conf"
            conf.write_text(
                f"worker_processes 1;\ndaemon off;\npid {conf_dir}/nginx.pid;\n"
                f"error_log {conf_dir}/logs/error.log;\n"
                "events { worker_connections 4096; }\n"
                "http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;\n"
                f"  server {{ listen 127.0.0.1:{self.port}; root {root}; }} }}\n"
            )
            cmd = ["nginx", "-p", str(conf_dir), "-c", str(conf)]
        else:
            cmd = [sys.executable, str(HERE / "bench_fetch.py"), "--serve", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.kind} did not start: {self.proc.stderr.read().decode()}")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/img/{i}.jpg"


def serve_python(port: int) -> None:
    import functools
    import http.server

    class Handler(http.server.SimpleHTTPRequestHandler):
        disable_nagle_algorithm = True
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Handler, directory=str(WORK / "www"))

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 1024  # img2dataset opens 64 connections at once

    Server(("127.0.0.1", port), handler).serve_forever()


def run_group(
    cmd: list[str], env: dict | None = None, timeout: float = 900
) -> subprocess.CompletedProcess:
    """Run a tool in its own process group and kill the whole group if it overruns: a
    Spark JVM, its Python workers or img2dataset's pool must not outlive the run."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"{cmd[0]} ran past {timeout:.0f} s") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# -- the CPU floor ------------------------------------------------------------------------
def cpu_floor(sample: Path, seconds: float = 1.5) -> float:
    """Images/s of one core decoding and resizing one JPEG to 256 px with Pillow."""
    from PIL import Image

    data = sample.read_bytes()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        with Image.open(io.BytesIO(data)) as im:
            im.resize((256, 192), Image.Resampling.BOX)
        n += 1
    return n / (time.perf_counter() - t0)


# -- ours -------------------------------------------------------------------------------
def write_photos(root: Path, server: Server, n: int) -> None:
    import pyarrow as pa

    from faceatlas import schemas
    from faceatlas.partwrite import write_partitioned

    shutil.rmtree(root / "photos", ignore_errors=True)
    places = [("NL", "EU"), ("DE", "EU"), ("US", "NA"), ("BR", "SA"), ("JP", "AS")]
    cols = {f.name: [None] * n for f in schemas.PHOTOS}
    cols["photo_id"] = list(range(1, n + 1))
    cols["download_url"] = [server.url(i) for i in range(n)]
    cols["country"] = [places[i % 5][0] for i in range(n)]
    cols["continent"] = [places[i % 5][1] for i in range(n)]
    write_partitioned(pa.table(cols, schema=schemas.PHOTOS), str(root / "photos"),
                      schemas.PHOTOS_PARTITIONS, "part-bench")  # fmt: skip


def run_ours(root: Path, server: Server, cores: int, resize: int | None) -> dict:
    shutil.rmtree(root / "images", ignore_errors=True)
    (root / "_stats" / "fetch.json").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "faceatlas", "fetch", "--data", str(root),
           "--allow-host", f"127.0.0.1:{server.port}", "--master", f"local[{cores}]",
           "--jpeg-quality", "95"]  # fmt: skip
    if resize:
        cmd += ["--resize", str(resize)]
    t0 = time.time()
    proc = run_group(cmd)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"faceatlas fetch failed:\n{proc.stderr[-3000:]}")
    stats = json.loads((root / "_stats" / "fetch.json").read_text())
    return {"wall": wall, "stage": stats["seconds"], "phase": stats["fetch_seconds"],
            "ok": stats["counts"]["ok"], "rows": stats["fetched"],
            "counts": {k: v for k, v in stats["counts"].items() if v}}  # fmt: skip


# -- img2dataset ----------------------------------------------------------------------------
I2D_DRIVER = """
import json, sys, time
from img2dataset import download

if __name__ == "__main__":  # img2dataset's worker processes re-import this file
    urls, out, procs, threads, size, dist = sys.argv[1:7]
    t0 = time.time()
    download(url_list=urls, input_format="txt", output_folder=out, output_format="parquet",
             processes_count=int(procs), thread_count=int(threads), image_size=int(size),
             resize_mode="keep_ratio_largest", resize_only_if_bigger=True, encode_quality=95,
             encode_format="jpg", timeout=10, retries=0, enable_wandb=False,
             distributor=dist, number_sample_per_shard=%d)
    print(json.dumps({"seconds": time.time() - t0}))
"""


def ensure_img2dataset() -> Path:
    python = I2D_VENV / "bin" / "python"
    if python.exists():
        ok = subprocess.run([str(python), "-c", "import img2dataset"], capture_output=True,
                            env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
        if ok.returncode == 0:
            return python
    print(f"installing img2dataset {I2D_VERSION} into {I2D_VENV} (once; about 20 s)")
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(I2D_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"img2dataset=={I2D_VERSION}"],
                   check=True)  # fmt: skip
    print(f"  took {time.time() - t0:.0f} s")
    return python


def run_img2dataset(python: Path, server: Server, n: int, cores: int, resize: int,
                    distributor: str) -> dict:  # fmt: skip
    out = WORK / "img2dataset-out"
    shutil.rmtree(out, ignore_errors=True)  # it skips shards that already have stats
    urls = WORK / "urls.txt"
    urls.write_text("".join(server.url(i) + "\n" for i in range(n)))
    driver = WORK / "i2d_driver.py"
    driver.write_text(I2D_DRIVER % max(250, n // (4 * cores)))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYSPARK_PYTHON": str(python)}
    t0 = time.time()
    proc = run_group([str(python), str(driver), str(urls), str(out), str(cores), "32",
                      str(resize), distributor], env=env)  # fmt: skip
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"img2dataset failed:\n{proc.stderr[-3000:]}")
    ok = total = 0
    for f in glob.glob(str(out / "*_stats.json")):
        s = json.loads(Path(f).read_text())
        ok += s["successes"]
        total += s["count"]
    return {"wall": wall, "ok": ok, "rows": total}


# -- main ---------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument(
        "--distinct", type=int, help="draw only N JPEGs; the other URLs serve copies of them"
    )
    ap.add_argument("--skip-img2dataset", action="store_true")
    ap.add_argument("--skip-ours", action="store_true")
    ap.add_argument("--skip-validate", action="store_true", help="only the resize run of ours")
    ap.add_argument("--img2dataset-distributor", choices=("multiprocessing", "pyspark"),
                    default="multiprocessing")  # fmt: skip
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_python(args.serve)
        return 0

    n, cores = args.images, args.cores
    folder = make_images(n, args.distinct)
    python = None if args.skip_img2dataset else ensure_img2dataset()
    root = WORK / "root"
    rows: list[tuple[str, dict, float, float]] = []
    with Server() as server:
        print(f"server: {server.kind} on 127.0.0.1:{server.port}; {os.cpu_count()} cores, "
              f"clients use {cores}")  # fmt: skip
        write_photos(root, server, n)
        for run in range(args.runs):
            plan = []
            if not args.skip_ours and not args.skip_validate:
                plan.append(("faceatlas fetch, validate only",
                             lambda: run_ours(root, server, cores, None)))  # fmt: skip
            if not args.skip_ours:
                plan.append((f"faceatlas fetch, resize {args.resize}",
                             lambda: run_ours(root, server, cores, args.resize)))  # fmt: skip
            if python is not None:
                plan.append((f"img2dataset {I2D_VERSION} ({args.img2dataset_distributor}), "
                             f"resize {args.resize}",
                             lambda: run_img2dataset(python, server, n, cores, args.resize,
                                                     args.img2dataset_distributor)))  # fmt: skip
            for name, fn in plan:
                before = cpu_floor(folder / "0.jpg")
                result = fn()
                after = cpu_floor(folder / "0.jpg")
                rows.append((f"{name} [run {run + 1}]", result, before, after))
                print(f"  {name} [run {run + 1}]: {json.dumps(result)}")
                if result["ok"] != n:
                    print(f"WARNING: {name}: {result['ok']} of {n} images ok")

    print()
    print(f"{'run':<58} {'ok':>6} {'wall s':>7} {'img/s':>7} {'/core':>6} "
          f"{'stage/core':>10} {'phase/core':>10} {'floor':>11}")  # fmt: skip
    for name, r, before, after in rows:
        stage = f"{r['ok'] / r['stage'] / cores:.0f}" if "stage" in r else "-"
        phase = f"{r['ok'] / r['phase'] / cores:.0f}" if "phase" in r else "-"
        print(f"{name:<58} {r['ok']:>6} {r['wall']:>7.1f} {r['ok'] / r['wall']:>7.0f} "
              f"{r['ok'] / r['wall'] / cores:>6.0f} {stage:>10} {phase:>10} "
              f"{before:>5.0f}/{after:<5.0f}")  # fmt: skip
    ours = [r for name, r, _, _ in rows if name.startswith("faceatlas fetch, resize")]
    theirs = [r for name, r, _, _ in rows if name.startswith("img2dataset")]
    if ours and theirs:
        best_ours = max(r["ok"] / r["wall"] for r in ours)
        best_ours_stage = max(r["ok"] / r["stage"] for r in ours)
        best_theirs = max(r["ok"] / r["wall"] for r in theirs)
        print(f"\nratio ours / img2dataset, resize {args.resize}, best runs: whole command "
              f"{best_ours / best_theirs:.2f}; stage (as _stats/fetch.json times it) "
              f"{best_ours_stage / best_theirs:.2f}")  # fmt: skip
    print(
        "img/s per core = images ok / wall seconds / client cores; the server shares the "
        "machine. floor = one core decoding+resizing one JPEG, images/s, before/after."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
