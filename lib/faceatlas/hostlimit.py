"""Per-host politeness limits shared by every Python process of a job on one machine.

A Spark executor runs one Python worker process per core, each with its own threads, so
"at most K connections and R requests/s to a host" cannot be a counter in one process.
The processes share files in one folder instead (one folder per job and machine):

- K slot files per host. A request holds an exclusive `flock` on one of them while it is
  in flight. The kernel drops a dead process's locks, so a killed worker never leaks a
  slot; there is no lock server to start or to outlive the job.
- One schedule file per host with two doubles, under its own `flock`: the earliest time
  the next request may start (spacing 1/R) and a pause-until time that a 429's
  Retry-After sets, so one throttled request holds back every thread of every process.

Times are CLOCK_MONOTONIC, which all processes of one machine share.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_SCHED = struct.Struct("<dd")  # next_start, paused_until


class HostLimitTimeoutError(Exception):
    """The caller's deadline passed while it waited for a slot or its turn."""

    def __init__(self, message: str, throttled: bool = False) -> None:
        super().__init__(message)
        self.throttled = throttled  # the host is paused (Retry-After) past the deadline


@dataclass
class _Host:
    slot_fds: list[int]
    sched_fd: int
    held: set[int] = field(default_factory=set)  # slots this process holds now
    lock: threading.Lock = field(default_factory=threading.Lock)
    local: threading.Semaphore | None = None  # this process's share, so threads queue here
    # The threads of one process share sched_fd, and flock excludes only other open files,
    # not other threads on the same one: without this lock two threads could read the same
    # next_start and both start then (and one's LOCK_UN would free the other's lock).
    sched_lock: threading.Lock = field(default_factory=threading.Lock)


class HostLimiter:
    """At most `max_connections` requests in flight and `rate` starts/s per host.

    `rate` <= 0 means no rate limit (pauses from Retry-After still apply). All limiters
    created with the same `directory` and settings, in any process, share the limits.
    """

    def __init__(self, directory: str, max_connections: int, rate: float = 0.0) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not rate >= 0:  # also refuses NaN, which `rate < 0` would let through
            raise ValueError(f"rate must be >= 0, got {rate}")
        self.directory = directory
        self.max_connections = max_connections
        self.rate = rate
        os.makedirs(directory, mode=0o700, exist_ok=True)
        # The folder's name is predictable: refuse one that another user planted.
        st = os.stat(directory)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise PermissionError(f"{directory} is not a private folder of this user")
        self._hosts: dict[str, _Host] = {}
        self._lock = threading.Lock()

    def _host(self, host: str) -> _Host:
        h = self._hosts.get(host)
        if h is not None:
            return h
        with self._lock:
            h = self._hosts.get(host)
            if h is None:
                stem = os.path.join(self.directory, hashlib.sha1(host.encode()).hexdigest()[:16])
                flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
                slots = [os.open(f"{stem}.slot{i}", flags, 0o600)
                         for i in range(self.max_connections)]  # fmt: skip
                sched = os.open(f"{stem}.sched", flags, 0o600)
                h = _Host(slots, sched, local=threading.Semaphore(self.max_connections))
                self._hosts[host] = h
        return h

    @contextmanager
    def request(self, host: str, deadline: float) -> Iterator[None]:
        """Hold a connection slot for `host` and wait for its turn to start a request.

        `deadline` is a time.monotonic() value; raises HostLimitTimeoutError if it passes first.
        """
        h = self._host(host)
        if not h.local.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise HostLimitTimeoutError(f"no connection slot for {host} before the deadline")
        slot = -1
        try:
            slot = self._take_slot(h, deadline)
            start, late, paused = self._reserve_start(h, deadline)
            if late:
                # Throttled only when a pause (Retry-After) is the cause; a turn past the
                # deadline under our own rate limit is a plain timeout, not a 429.
                raise HostLimitTimeoutError(
                    f"{host} {'paused' if paused else 'rate-limited'} past the deadline",
                    throttled=paused,
                )
            wait = start - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            yield
        finally:
            if slot >= 0:
                with h.lock:
                    fcntl.flock(h.slot_fds[slot], fcntl.LOCK_UN)
                    h.held.discard(slot)
            h.local.release()

    def _take_slot(self, h: _Host, deadline: float) -> int:
        n = self.max_connections
        pause = 0.0005
        while True:
            first = random.randrange(n)  # spread processes over the slots
            with h.lock:
                for k in range(n):
                    i = (first + k) % n
                    if i in h.held:
                        continue
                    try:
                        fcntl.flock(h.slot_fds[i], fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    h.held.add(i)
                    return i
            # Every slot is held by another process: poll, backing off to 20 ms.
            if time.monotonic() + pause > deadline:
                raise HostLimitTimeoutError("no connection slot before the deadline")
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.02)

    @contextmanager
    def _schedule(self, h: _Host) -> Iterator[tuple[float, float]]:
        """Hold the host's schedule (threads: sched_lock; processes: flock) and yield
        (next_start, paused_until); write back with _write_schedule inside the block."""
        with h.sched_lock:
            fcntl.flock(h.sched_fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(h.sched_fd, _SCHED.size, 0)
                yield _SCHED.unpack(raw) if len(raw) == _SCHED.size else (0.0, 0.0)
            finally:
                fcntl.flock(h.sched_fd, fcntl.LOCK_UN)

    @staticmethod
    def _write_schedule(h: _Host, next_start: float, paused_until: float) -> None:
        os.pwrite(h.sched_fd, _SCHED.pack(next_start, paused_until), 0)

    def _reserve_start(self, h: _Host, deadline: float) -> tuple[float, bool, bool]:
        """Book the earliest start this host's schedule allows. Returns (start, late,
        paused): late when the start is after `deadline` (then nothing is booked), paused
        when a pause lasts past the deadline."""
        with self._schedule(h) as (next_start, paused_until):
            now = time.monotonic()
            start = max(now, paused_until, next_start if self.rate > 0 else now)
            # A caller that will give up must not book its turn: otherwise every caller
            # that gives up pushes next_start another 1/R out, the schedule runs away and
            # every later request times out too.
            late = start > now and start > deadline
            if self.rate > 0 and not late:
                self._write_schedule(h, start + 1.0 / self.rate, paused_until)
            return start, late, paused_until > deadline

    def pause(self, host: str, seconds: float) -> None:
        """Hold back every new request to `host` for `seconds` (a 429's Retry-After)."""
        h = self._host(host)
        with self._schedule(h) as (next_start, paused_until):
            until = max(paused_until, time.monotonic() + seconds)
            self._write_schedule(h, next_start, until)

    def close(self) -> None:
        with self._lock:
            for h in self._hosts.values():
                for fd in (*h.slot_fds, h.sched_fd):
                    os.close(fd)
            self._hosts.clear()
