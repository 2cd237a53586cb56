"""Tests for faceatlas.hostlimit: per-host limits shared by the processes of one machine.

Every cross-process property is checked with real, separate processes (multiprocessing's
"spawn" context, so no lock or file descriptor is inherited from pytest), each creating
its own HostLimiter on the same folder. Children write what they saw as JSON; times are
time.monotonic(), which every process of the machine shares (CLOCK_MONOTONIC).

Timing bounds are deliberately generous (the test machine is small and loaded): each
one only has to separate "the limit held" from "there was no limit".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from faceatlas import hostlimit
from faceatlas.hostlimit import HostLimiter, HostLimitTimeoutError

CTX = multiprocessing.get_context("spawn")
HOST = "photos.example:443"


# -- code run in the child processes (module level, so "spawn" can import it) -------------
def _requests_child(
    directory: str,
    k: int,
    rate: float,
    threads: list[tuple[str, int]],
    hold: float,
    deadline_s: float,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    out: str,
) -> None:
    """One thread per (host, n): n requests one after another, each held `hold` seconds.

    Writes [{"host", "enter", "exit"} | {"host", "error", "throttled"}] to `out`.
    """
    lim = HostLimiter(directory, k, rate)
    results: list[dict] = []
    lock = threading.Lock()

    def run(host: str, n: int) -> None:
        for _ in range(n):
            try:
                with lim.request(host, time.monotonic() + deadline_s):
                    enter = time.monotonic()
                    time.sleep(hold)
                    leave = time.monotonic()
                rec = {"host": host, "enter": enter, "exit": leave}
            except HostLimitTimeoutError as e:
                rec = {"host": host, "error": str(e), "throttled": e.throttled}
            with lock:
                results.append(rec)

    workers = [threading.Thread(target=run, args=spec) for spec in threads]
    ready.set()
    go.wait(30)
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    Path(out).write_text(json.dumps(results))


def _hold_child(directory: str, k: int, host: str, n: int, hold: float, ready: str) -> None:
    """Take `n` slots of `host` at once, create the file `ready`, then hold them `hold` s."""
    lim = HostLimiter(directory, k)
    with contextlib.ExitStack() as stack:
        for _ in range(n):
            stack.enter_context(lim.request(host, time.monotonic() + 10))
        Path(ready).write_text(str(time.monotonic()))
        time.sleep(hold)


def _paused_child(
    directory: str,
    host: str,
    short_deadline_s: float,
    ready: multiprocessing.synchronize.Event,
    go: multiprocessing.synchronize.Event,
    out: str,
) -> None:
    """After `go`: one request with a short deadline (expected to be refused at once), then
    one with a long deadline (expected to wait for the pause to pass)."""
    lim = HostLimiter(directory, 4)
    ready.set()
    go.wait(30)
    res: dict = {}
    t0 = time.monotonic()
    try:
        with lim.request(host, t0 + short_deadline_s):
            res["short_entered"] = time.monotonic()
    except HostLimitTimeoutError as e:
        res["short_error"] = {"throttled": e.throttled, "after": time.monotonic() - t0}
    with lim.request(host, time.monotonic() + 10):
        res["long_entered"] = time.monotonic()
    Path(out).write_text(json.dumps(res))


# -- helpers ------------------------------------------------------------------------------
@pytest.fixture
def procs() -> Iterator[list[multiprocessing.process.BaseProcess]]:
    """Processes a test started; any still alive at the end are killed."""
    started: list[multiprocessing.process.BaseProcess] = []
    yield started
    for p in started:
        if p.is_alive():
            p.kill()
        p.join(10)


def _start(procs: list, target, *args) -> multiprocessing.process.BaseProcess:
    p = CTX.Process(target=target, args=args, daemon=True)
    p.start()
    procs.append(p)
    return p


def _run_children(
    procs: list, tmp_path: Path, specs: list[list[tuple[str, int]]], k: int, rate: float = 0.0,
    hold: float = 0.05, deadline_s: float = 20.0,
) -> list[dict]:  # fmt: skip
    """Start one process per spec, release them together, return all their records."""
    directory = str(tmp_path / "lim")
    go = CTX.Event()
    readies, outs = [], []
    for i, threads in enumerate(specs):
        ready, out = CTX.Event(), str(tmp_path / f"out{i}.json")
        _start(procs, _requests_child, directory, k, rate, threads, hold, deadline_s, ready, go,
               out)  # fmt: skip
        readies.append(ready)
        outs.append(out)
    for ready in readies:
        assert ready.wait(30), "a child process did not start"
    go.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return [rec for out in outs for rec in json.loads(Path(out).read_text())]


def _max_overlap(recs: list[dict]) -> int:
    """The most intervals [enter, exit) open at one time."""
    events = sorted([(r["enter"], 1) for r in recs] + [(r["exit"], -1) for r in recs])
    most = now = 0
    for _, step in events:  # at equal times an exit (-1) sorts before an enter
        now += step
        most = max(most, now)
    return most


def _wait_file(path: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path.name} never appeared"
        time.sleep(0.01)


# -- connection slots ---------------------------------------------------------------------
def test_at_most_k_in_flight_across_processes(procs, tmp_path: Path) -> None:
    k = 3
    specs = [[(HOST, 3)] * 4 for _ in range(3)]  # 3 processes x 4 threads x 3 requests
    recs = _run_children(procs, tmp_path, specs, k)
    assert len(recs) == 36
    assert not [r for r in recs if "error" in r]
    # Each process alone may run k at once, so 3 processes without a shared limit reach 3k.
    assert _max_overlap(recs) <= k
    assert _max_overlap(recs) == k  # 12 threads want in: the limit, not demand, bound it


def test_different_hosts_do_not_share_slots(procs, tmp_path: Path) -> None:
    k = 2
    a, b = "a.example:80", "b.example:80"
    specs = [[(a, 3)] * 3 + [(b, 3)] * 3 for _ in range(2)]
    recs = _run_children(procs, tmp_path, specs, k)
    assert len(recs) == 36
    assert not [r for r in recs if "error" in r]
    on_a = [r for r in recs if r["host"] == a]
    on_b = [r for r in recs if r["host"] == b]
    assert _max_overlap(on_a) == k
    assert _max_overlap(on_b) == k
    assert _max_overlap(recs) > k  # a's requests did not take b's slots


def test_waiting_for_a_slot_past_the_deadline(procs, tmp_path: Path) -> None:
    directory = str(tmp_path / "lim")
    ready = tmp_path / "ready"
    _start(procs, _hold_child, directory, 1, HOST, 1, 30.0, str(ready))
    _wait_file(ready)
    lim = HostLimiter(directory, 1)
    t0 = time.monotonic()
    with pytest.raises(HostLimitTimeoutError) as info, lim.request(HOST, t0 + 0.3):
        pytest.fail("got a slot that another process holds")
    waited = time.monotonic() - t0
    assert info.value.throttled is False
    assert 0.2 <= waited < 2.0  # it waited for the slot, up to about the deadline
    # Another host is not held up by the busy one.
    with lim.request("other.example:80", time.monotonic() + 1):
        pass
    lim.close()


def test_threads_of_one_process_wait_for_a_slot_until_the_deadline(tmp_path: Path) -> None:
    lim = HostLimiter(str(tmp_path / "lim"), 1)
    with lim.request(HOST, time.monotonic() + 1):
        errors: list[HostLimitTimeoutError] = []

        def other() -> None:
            try:
                with lim.request(HOST, time.monotonic() + 0.2):
                    pass
            except HostLimitTimeoutError as e:
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join(5)
    assert len(errors) == 1 and errors[0].throttled is False
    with lim.request(HOST, time.monotonic() + 1):  # the slot was given back
        pass
    lim.close()


def test_killed_process_does_not_leak_its_slots(procs, tmp_path: Path) -> None:
    k = 2
    directory = str(tmp_path / "lim")
    ready = tmp_path / "ready"
    child = _start(procs, _hold_child, directory, k, HOST, k, 60.0, str(ready))
    _wait_file(ready)
    lim = HostLimiter(directory, k)
    with pytest.raises(HostLimitTimeoutError), lim.request(HOST, time.monotonic() + 0.1):
        pytest.fail("got a slot while another process holds all of them")
    child.kill()  # SIGKILL: no finally, no unlock; the kernel drops its flocks
    child.join(10)
    assert child.exitcode == -9
    with contextlib.ExitStack() as stack:
        for _ in range(k):
            stack.enter_context(lim.request(HOST, time.monotonic() + 2))
        # All k are ours now, and the limit still holds.
        with pytest.raises(HostLimitTimeoutError), lim.request(HOST, time.monotonic() + 0.1):
            pytest.fail("got more than k slots")
    lim.close()


# -- rate and pauses ----------------------------------------------------------------------
@pytest.mark.slow
def test_rate_spaces_starts_across_processes(procs, tmp_path: Path) -> None:
    rate = 8.0
    specs = [[(HOST, 2)] * 2 for _ in range(3)]  # 12 starts from 3 processes
    recs = _run_children(procs, tmp_path, specs, k=8, rate=rate, hold=0.01)
    assert not [r for r in recs if "error" in r]
    starts = sorted(r["enter"] for r in recs)
    n = len(starts)
    assert n == 12
    # Without the shared schedule all 12 would start within a few ms.
    assert starts[-1] - starts[0] >= (n - 1) / rate * 0.9
    for s in starts:
        assert sum(1 for t in starts if s <= t < s + 1.0) <= rate + 1


def test_pause_in_one_process_holds_back_another(procs, tmp_path: Path) -> None:
    directory = str(tmp_path / "lim")
    out = tmp_path / "out.json"
    ready, go = CTX.Event(), CTX.Event()
    child = _start(procs, _paused_child, directory, HOST, 0.5, ready, go, str(out))
    assert ready.wait(30)
    lim = HostLimiter(directory, 4)
    pause = 1.0
    t_pause = time.monotonic()
    lim.pause(HOST, pause)
    go.set()
    child.join(30)
    assert child.exitcode == 0
    res = json.loads(out.read_text())
    # The short deadline ends inside the pause: refused at once, not after waiting.
    assert "short_entered" not in res
    assert res["short_error"]["throttled"] is True
    assert res["short_error"]["after"] < 0.25
    # The long one waited for the pause to pass, and not much longer.
    assert t_pause + pause <= res["long_entered"] < t_pause + pause + 1.5
    # The pause is over: this process starts at once.
    t0 = time.monotonic()
    with lim.request(HOST, t0 + 1):
        assert time.monotonic() - t0 < 0.25
    lim.close()


class _SlowReadOs:
    """The os module, but pread dawdles: widens the read-then-write window of the schedule."""

    def __getattr__(self, name: str):
        return getattr(os, name)

    @staticmethod
    def pread(fd: int, n: int, offset: int) -> bytes:
        data = os.pread(fd, n, offset)
        time.sleep(0.02)
        return data


def test_rate_spaces_starts_of_threads_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The threads of a process share the schedule file's descriptor, which flock does not
    keep apart: without a lock in the process they would book the same start."""
    monkeypatch.setattr(hostlimit, "os", _SlowReadOs())
    rate = 10.0
    lim = HostLimiter(str(tmp_path / "lim"), 8, rate)
    # The booked starts, not the wake-ups: a thread that wakes late on a loaded machine
    # (66 and 120 ms seen in CI) must not look like a double booking.
    booked: list[float] = []
    mine = threading.local()
    reserve = lim._reserve_start

    def recording(*args, **kwargs):
        out = reserve(*args, **kwargs)
        booked.append(out[0])
        mine.start = out[0]
        return out

    monkeypatch.setattr(lim, "_reserve_start", recording)
    woke: list[tuple[float, float]] = []  # (this thread's booked start, when it went)
    go = threading.Event()

    def one() -> None:
        go.wait(5)
        with lim.request(HOST, time.monotonic() + 5):
            woke.append((mine.start, time.monotonic()))

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    assert len(booked) == 5 and len(woke) == 5
    gaps = [b - a for a, b in itertools.pairwise(sorted(booked))]
    assert min(gaps) >= 0.99 / rate, gaps  # one booked start each, not several at once
    assert all(went >= start - 1e-3 for start, went in woke), woke  # each waits its turn
    lim.close()


def test_pause_only_extends(tmp_path: Path) -> None:
    lim = HostLimiter(str(tmp_path / "lim"), 2)
    lim.pause(HOST, 0.6)
    lim.pause(HOST, 0.1)  # a shorter pause does not cut the longer one short
    t0 = time.monotonic()
    with lim.request(HOST, t0 + 5):
        assert time.monotonic() - t0 >= 0.45
    lim.close()


def test_rate_wait_past_the_deadline_is_not_booked(tmp_path: Path) -> None:
    """A caller whose turn comes after its deadline gives up at once, is not "throttled"
    (no Retry-After paused the host), and leaves the schedule as it found it: otherwise
    every caller that gives up would push the next start further out, without end."""
    lim = HostLimiter(str(tmp_path / "lim"), 8, rate=2.0)  # starts 0.5 s apart
    with lim.request(HOST, time.monotonic() + 1):
        first = time.monotonic()
    for _ in range(5):
        t0 = time.monotonic()
        with pytest.raises(HostLimitTimeoutError) as info, lim.request(HOST, t0 + 0.1):
            pytest.fail("started before its turn")
        assert info.value.throttled is False
        assert time.monotonic() - t0 < 0.1
    with lim.request(HOST, time.monotonic() + 5):
        second = time.monotonic()
    assert first + 0.45 <= second < first + 1.2  # not first + 6 x 0.5 s
    lim.close()


# -- arguments and housekeeping -----------------------------------------------------------
@pytest.mark.parametrize(
    ("k", "rate"), [(0, 0.0), (-1, 0.0), (1, -1.0), (1, -0.001), (1, math.nan)]
)
def test_bad_arguments(tmp_path: Path, k: int, rate: float) -> None:
    with pytest.raises(ValueError):
        HostLimiter(str(tmp_path / "lim"), k, rate)


def test_creates_its_folder_and_reopens_after_close(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    lim = HostLimiter(str(directory), 2)
    assert directory.is_dir()
    assert os.stat(directory).st_mode & 0o777 == 0o700
    with lim.request(HOST, time.monotonic() + 1):
        pass
    lim.close()
    with lim.request(HOST, time.monotonic() + 1):  # opens its files again
        pass
    lim.close()
