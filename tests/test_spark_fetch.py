"""The fetch stage on real Spark (local mode) against a hostile server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from fetchserver import FetchServer, Resp, bomb_png, jpeg_bytes, png_bytes
from photos_table import write_photos

from faceatlas.fetch import ImageOptions, selection_key
from faceatlas.httpfetch import FetchOptions
from faceatlas.spark_fetch import FetchError, FetchJob, run_fetch, task_slots

pytestmark = [pytest.mark.spark]

COUNTRIES = [("NL", "EU"), ("DE", "EU"), ("US", "NA"), ("NA", "AF"), ("BR", "SA")]
JPEG = jpeg_bytes(120, 90)
PNG = png_bytes(40, 30)


def _images(root: Path):
    """The images table as pandas, read the way a user would (partition folders)."""
    return ds.dataset(root / "images", format="parquet", partitioning="hive").to_table().to_pandas()


def _job(srv: FetchServer, **kw) -> FetchJob:
    fetch = dict(allow_hosts=(srv.host_port,), backoff=0.05, deadline=2.0, read_timeout=1.0,
                 max_bytes=200_000, threads=8)  # fmt: skip
    fetch.update(kw.pop("fetch", {}))
    kw.setdefault("photos_per_task", 20)
    kw.setdefault("flush_rows", 7)
    return FetchJob(fetch=FetchOptions(**fetch), **kw)


def _hostile_routes(srv: FetchServer) -> dict[str, str]:
    """Route one path per hostile case; returns path -> expected status."""
    cases = {
        "good": ([Resp(body=JPEG)], "ok"),
        "png": ([Resp(body=PNG, content_type="image/png")], "ok"),
        "missing": ([Resp.error(404)], "http_404"),
        "flaky": ([Resp.error(500), Resp(body=JPEG)], "ok"),
        "throttled": ([Resp.retry_after(1), Resp(body=JPEG)], "ok"),
        "html": ([Resp(body=b"<html><body>gone</body></html>" * 5)], "not_image"),
        "truncated": ([Resp(body=JPEG[: len(JPEG) // 2])], "decode_error"),
        "bomb": ([Resp(body=bomb_png(), content_type="image/png")], "too_many_pixels"),
        "declared_big": ([Resp(body=JPEG, content_length=10**9)], "too_large"),
        "chunked_big": ([Resp(body=JPEG + b"\0" * 300_000, chunked=True)], "too_large"),
        "metadata": (
            [Resp.redirect("http://169.254.169.254/latest/meta-data/")],
            "blocked_address",
        ),
        "private": ([Resp.redirect("http://10.0.0.1/x.jpg")], "blocked_address"),
        "loop": ([Resp.redirect("/loop2")], "too_many_redirects"),
        "drip": ([Resp(body=JPEG[:100], drip=0.4, chunk_size=1)], "timeout"),
        "hang": ([Resp(hang=True)], "timeout"),
    }
    srv.route("/loop2", Resp.redirect("/loop"))
    expected = {}
    for name, (responses, status) in cases.items():
        path = "/loop" if name == "loop" else f"/{name}"
        srv.route(path, *responses)
        expected[path] = status
    return expected


@pytest.fixture()
def server():
    with FetchServer() as srv:
        yield srv


def test_every_hostile_case_gets_its_status_once(spark, server, tmp_path):
    expected = _hostile_routes(server)
    records, want = [], {}
    pid = 1000
    for i, (path, status) in enumerate(sorted(expected.items())):
        cc, cont = COUNTRIES[i % len(COUNTRIES)]
        records.append(dict(photo_id=pid, download_url=server.url(path), country=cc,
                            continent=cont))  # fmt: skip
        want[pid] = status
        pid += 1
    for j in range(30):  # plenty of good photos, one path each, in every country
        cc, cont = COUNTRIES[j % len(COUNTRIES)]
        server.route(f"/ok/{j}.jpg", Resp(body=JPEG))
        records.append(dict(photo_id=pid, download_url=server.url(f"/ok/{j}.jpg"),
                            country=cc, continent=cont))  # fmt: skip
        want[pid] = "ok"
        pid += 1
    records.append(dict(photo_id=pid, download_url="ftp://127.0.0.1/x.jpg", country="NL",
                        continent="EU"))  # fmt: skip
    want[pid] = "bad_url"
    records.append(dict(photo_id=pid + 1, download_url=None, country="DE", continent="EU"))
    want[pid + 1] = "bad_url"
    write_photos(tmp_path, records)

    t0 = time.monotonic()
    stats = run_fetch(spark, str(tmp_path), _job(server))
    elapsed = time.monotonic() - t0

    df = _images(tmp_path)
    assert sorted(df.photo_id) == sorted(want), "exactly one row per photo asked for"
    got = dict(zip(df.photo_id, df.status, strict=True))
    assert got == want
    assert stats["photos"] == stats["fetched"] == len(want)
    assert {k: v for k, v in stats["counts"].items() if v} == dict(Counter(want.values()))
    assert stats["table_counts"] == dict(sorted(Counter(want.values()).items()))

    ok = df[df.status == "ok"]
    assert all(hashlib.sha256(b).hexdigest() == h for b, h in zip(ok.image, ok.sha256,
                                                                  strict=True))  # fmt: skip
    jpegs = ok[ok.format == "jpeg"]
    assert all(bytes(b) == JPEG for b in jpegs.image)  # no resize asked: bytes as served
    assert set(ok.format) == {"jpeg", "png"}
    assert df[df.status != "ok"].image.isna().all()
    assert set(zip(df.country, df.continent, strict=True)) <= set(COUNTRIES)
    assert (tmp_path / "images" / "continent=AF" / "country=NA").is_dir()  # Namibia stays NA
    # Retries and redirects are counted; a refused redirect never became a request.
    by_id = df.set_index("photo_id")
    flaky = next(p for p, s in want.items() if s == "ok" and by_id.url[p].endswith("/flaky"))
    assert by_id.attempts[flaky] == 2
    metadata = next(p for p in want if by_id.url[p].endswith("/metadata"))
    assert by_id.attempts[metadata] == 1 and by_id.final_url[metadata].startswith("http://169")
    # The dripping and hanging servers cost their deadline, not the task's life.
    assert elapsed < 60

    # Stats on disk match what was returned.
    on_disk = json.loads((tmp_path / "_stats" / "fetch.json").read_text())
    assert on_disk["counts"] == stats["counts"]


def test_rerun_skips_settled_photos_and_retry_failed_replaces_rows(spark, server, tmp_path):
    ids = list(range(1, 41))
    for i in ids:
        server.route(f"/p/{i}.jpg", Resp(body=JPEG) if i % 4 else Resp.error(404))
    records = [
        dict(photo_id=i, download_url=server.url(f"/p/{i}.jpg"), country=COUNTRIES[i % 5][0],
             continent=COUNTRIES[i % 5][1])
        for i in ids
    ]  # fmt: skip
    write_photos(tmp_path, records)

    first = run_fetch(spark, str(tmp_path), _job(server))
    assert first["counts"]["ok"] == 30 and first["counts"]["http_404"] == 10
    seen = len(server.requests)

    again = run_fetch(spark, str(tmp_path), _job(server))
    assert again["fetched"] == 0 and again["already_settled"] == 40
    assert len(server.requests) == seen, "a re-run must not request settled photos"

    for i in ids:  # the missing photos come back
        server.route(f"/p/{i}.jpg", Resp(body=JPEG))
    retried = run_fetch(spark, str(tmp_path), _job(server, retry_failed=("http_404",)))
    assert retried["fetched"] == 10 and retried["counts"]["ok"] == 10
    assert retried["duplicates_removed"] == 10
    df = _images(tmp_path)
    assert sorted(df.photo_id) == ids
    assert set(df.status) == {"ok"}
    assert len(server.requests) == seen + 10


def test_per_country_limit_and_countries_follow_the_hash_order(spark, server, tmp_path):
    records = []
    for i in range(1, 161):
        cc, cont = COUNTRIES[i % 4]
        records.append(dict(photo_id=i * 7919, download_url=server.url(f"/s/{i}"),
                            country=cc, continent=cont))  # fmt: skip
    write_photos(tmp_path, records)
    stats = run_fetch(spark, str(tmp_path / ""), _job(server, per_country=6, seed=3,
                                                       countries=("NL", "US", "NA")))  # fmt: skip
    df = _images(tmp_path)
    expected = []
    for cc in ("NL", "US", "NA"):
        ids = [r["photo_id"] for r in records if r["country"] == cc]
        expected += sorted(ids, key=lambda p: selection_key(p, 3))[:6]
    assert sorted(df.photo_id) == sorted(expected)
    assert stats["photos"] == 18
    assert set(df.status) == {"http_404"}  # no such routes: what matters is who was asked

    # --limit takes the first N of the same order, across countries.
    root2 = tmp_path / "second"
    write_photos(root2, records)
    run_fetch(spark, str(root2), _job(server, limit=5, seed=3))
    df2 = _images(root2)
    firsts = sorted((r["photo_id"] for r in records), key=lambda p: selection_key(p, 3))[:5]
    assert sorted(df2.photo_id) == sorted(firsts)


def test_url_template_points_at_a_mirror(spark, server, tmp_path):
    hashes = {i: hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 6)}
    for h in hashes.values():
        server.route(f"/data/images/{h[:3]}/{h[3:6]}/{h}.jpg", Resp(body=JPEG))
    records = [dict(photo_id=i, photo_hash=h, download_url="http://unused.invalid/",
                    country="NL", continent="EU") for i, h in hashes.items()]  # fmt: skip
    write_photos(tmp_path, records)
    template = f"http://{server.host_port}/data/images/{{hash[0:3]}}/{{hash[3:6]}}/{{hash}}.jpg"
    stats = run_fetch(spark, str(tmp_path), _job(server, url_template=template,
                                                 image=ImageOptions(resize=64)))  # fmt: skip
    assert stats["counts"]["ok"] == 5
    df = _images(tmp_path)
    assert (df[["width", "height"]].max(axis=1) == 64).all()
    assert sorted(r.path for r in server.requests) == sorted(
        f"/data/images/{h[:3]}/{h[3:6]}/{h}.jpg" for h in hashes.values()
    )

    with pytest.raises(FetchError, match="unknown column"):
        run_fetch(spark, str(tmp_path), _job(server, url_template="http://x/{nope}.jpg"))


def test_task_slots_cut_countries_in_order_into_even_tasks(spark):
    """Skewed countries (and a null one) go to tasks of near-equal size, in country order,
    so a task writes into a few neighbouring country folders (here at most three)."""
    from pyspark.sql import functions as F

    sizes = {"US": 3000, "NL": 700, "DE": 90, "JP": 7, None: 40}
    rows, pid = [], 0
    for c, n in sizes.items():
        for _ in range(n):
            pid += 1
            rows.append((pid, c, selection_key(pid)))
    df = spark.createDataFrame(rows, "photo_id long, country string, _key string")
    n_parts = 8
    parts = df.repartitionById(n_parts, task_slots(sizes, n_parts))
    got = parts.select("photo_id", "country", F.spark_partition_id().alias("p")).collect()
    assert sorted(r["photo_id"] for r in got) == list(range(1, pid + 1))
    per_task = Counter(r["p"] for r in got)
    assert sorted(per_task) == list(range(n_parts))
    even = pid / n_parts
    assert all(abs(n - even) < 0.15 * even for n in per_task.values()), per_task
    # Countries in code order (null last): a task's countries never interleave with the next's.
    rank = {c: i for i, c in enumerate(sorted(sizes, key=lambda c: (c is None, c or "")))}
    span = {p: (min(rank[r["country"]] for r in got if r["p"] == p),
                max(rank[r["country"]] for r in got if r["p"] == p)) for p in per_task}  # fmt: skip
    for p in range(n_parts - 1):
        assert span[p][1] <= span[p + 1][0], span
    assert all(hi - lo <= 2 for lo, hi in span.values()), span
    # The US alone (78 % of the rows) spreads over most tasks.
    us_tasks = {r["p"] for r in got if r["country"] == "US"}
    assert len(us_tasks) >= 5


def test_missing_photos_table_is_a_clear_error(spark, tmp_path):
    with pytest.raises(FetchError, match="run `faceatlas ingest` first"):
        run_fetch(spark, str(tmp_path), FetchJob())


# -- kills ------------------------------------------------------------------------------
def _cli(root: Path, srv: FetchServer, master: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "faceatlas", "fetch", "--data", str(root), "--master", master,
           "--allow-host", srv.host_port, "--threads", "4", "--flush-rows", "5",
           "--photos-per-task", "40", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip


def _data_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "images").rglob("part-*.parquet"))


def _ids_in(files: list[Path]) -> list[int]:
    if not files:
        return []
    return ds.dataset([str(f) for f in files], format="parquet").to_table(
        columns=["photo_id"]).column("photo_id").to_pylist()  # fmt: skip


def _wait_for_files(root: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while len(_data_files(root)) < n:
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < end, "no files written in time"
        time.sleep(0.05)


def _slow_photos(srv: FetchServer, root: Path, n: int) -> list[int]:
    ids = list(range(1, n + 1))
    for i in ids:
        srv.route(f"/k/{i}.jpg", Resp(body=JPEG, delay=0.03))
    write_photos(root, [dict(photo_id=i, download_url=srv.url(f"/k/{i}.jpg"),
                             country=COUNTRIES[i % 5][0], continent=COUNTRIES[i % 5][1])
                        for i in ids])  # fmt: skip
    return ids


@pytest.mark.slow
def test_killed_driver_resumes_without_duplicates_or_losses(server, tmp_path):
    ids = _slow_photos(server, tmp_path, 240)
    proc = _cli(tmp_path, server, "local[2]")
    try:
        _wait_for_files(tmp_path, proc, 4)
        # The driver, its JVM and the Python workers, at once, as if the machine died.
        # (PySpark's daemon puts its workers in a process group of their own.)
        for pgid in _descendant_groups(proc.pid):
            os.killpg(pgid, signal.SIGKILL)
    finally:
        proc.wait()
    committed = _ids_in(_data_files(tmp_path))
    assert 0 < len(committed) < len(ids)
    assert len(committed) == len(set(committed))

    rerun = _cli(tmp_path, server, "local[2]")
    _out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-3000:]
    stats = json.loads((tmp_path / "_stats" / "fetch.json").read_text())
    assert stats["already_settled"] == len(committed)
    assert stats["fetched"] == len(ids) - len(committed)

    df = _images(tmp_path)
    assert sorted(df.photo_id) == ids, "every photo exactly once"
    assert set(df.status) == {"ok"}
    # Resumed, not restarted: what the killed run had committed was not fetched again.
    for pid in committed:
        assert server.count(f"/k/{pid}.jpg") == 1


def _processes() -> dict[int, tuple[int, int, bytes]]:
    """pid -> (parent pid, process group, command line) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(stat[1]), int(stat[2]), cmd)
    return out


def _descendant_groups(root_pid: int) -> set[int]:
    procs = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    groups, stack = {root_pid}, [root_pid]
    while stack:
        for child in children.get(stack.pop(), []):
            groups.add(procs[child][1])
            stack.append(child)
    return groups


def _python_workers(driver_pid: int) -> list[int]:
    """pids of PySpark worker processes (forks of pyspark.daemon) under a driver."""
    procs = _processes()
    groups = _descendant_groups(driver_pid)
    return [
        pid
        for pid, (ppid, pgid, cmd) in procs.items()
        if pgid in groups and b"pyspark.daemon" in cmd and ppid in procs
        and b"pyspark.daemon" in procs[ppid][2]  # a worker, not the daemon itself
    ]  # fmt: skip


@pytest.mark.slow
def test_killed_python_workers_are_retried_and_rows_stay_unique(server, tmp_path):
    ids = _slow_photos(server, tmp_path, 240)
    proc = _cli(tmp_path, server, "local[2,4]")  # up to 4 attempts per task
    try:
        _wait_for_files(tmp_path, proc, 2)
        workers = _python_workers(proc.pid)
        assert workers, "no PySpark worker found to kill"
        for w in workers:
            os.kill(w, signal.SIGKILL)
        _out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert "Lost task" in err.decode(), "Spark saw the killed tasks and retried them"
    stats = json.loads((tmp_path / "_stats" / "fetch.json").read_text())
    # The killed attempts had written files; their retries fetched the same photos again.
    assert stats["duplicates_removed"] > 0
    df = _images(tmp_path)
    assert sorted(df.photo_id) == ids, "every photo exactly once"
    assert set(df.status) == {"ok"}
