"""An HTTP client for fetching many photos from a web that cannot be trusted.

Plain Python (http.client, threads); no Spark. What it guarantees per URL:

- Only http and https, no credentials, and only public addresses (netguard), checked on
  the resolved address before connecting and again for every redirect; the connection
  goes to the address that was checked (no second DNS lookup to rebind).
- Never sends cookies or credentials: each request carries only Host, User-Agent,
  Accept and Accept-Encoding: identity.
- A hard deadline per URL, whatever the server does: a watchdog thread shuts the socket
  down when it passes, which also ends a read stuck on a server that drips one byte at a
  time (socket timeouts alone would not: each byte resets them).
- Bodies are streamed and cut at a byte cap; a Content-Length over the cap is refused
  before reading.
- Retries with exponential backoff and full jitter for connection errors, timeouts, 429
  and 5xx, honouring Retry-After (which also pauses the whole host, see hostlimit), up
  to a bound and never past the deadline; no retry for other statuses.
- Connections are kept alive and reused, per (host, port, address), within one process;
  per-host limits across processes come from hostlimit.HostLimiter.

Statuses of a fetch (the image checks add their own, see fetch.py):
  ok                   200 and a complete body within the cap
  bad_url              not http(s), no host, credentials in the URL, a bad redirect target
  blocked_address      resolves to a private, loopback, link-local, multicast or reserved
                       address (also after a redirect), and the host is not allowed
  dns_error            the name does not resolve
  connection_error     refused, reset or closed early, after the retries
  timeout              connect or read timeout after the retries, or the deadline passed
  too_many_redirects   more redirects than allowed, or a redirect loop
  unavailable          redirected to the host's "photo unavailable" placeholder
  too_large            Content-Length or body over the byte cap
  http_404, http_403, http_410   the server says the photo is not there (no retry)
  http_429             still throttled after the retries
  http_5xx             still failing after the retries
  http_other           any other status (e.g. 204, 206, 400, 401, a 3xx without Location)
  internal_error       a bug in faceatlas (logged with its traceback; please report it)
"""

from __future__ import annotations

import contextlib
import email.utils
import heapq
import http.client
import itertools
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urljoin

from faceatlas import __version__
from faceatlas.hostlimit import HostLimiter, HostLimitTimeoutError
from faceatlas.netguard import AddressGuard, RefusedError, Target, parse_target

FETCH_STATUSES = (
    "ok", "bad_url", "blocked_address", "dns_error", "connection_error", "timeout",
    "too_many_redirects", "unavailable", "too_large", "http_404", "http_403", "http_410",
    "http_429", "http_5xx", "http_other", "internal_error",
)  # fmt: skip

log = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_FINAL = {404: "http_404", 403: "http_403", 410: "http_410"}
_READ_CHUNK = 1 << 16
# What http.client will not put on a request line (it also needs ASCII).
_BAD_PATH_CHAR = re.compile(r"[\x00-\x20\x7f]")
_DNS_TTL = 300.0
# A failed lookup is remembered only briefly: one resolver hiccup must not fail a host's
# photos for minutes.
_DNS_FAIL_TTL = 10.0
# The longest pause a Retry-After can impose on a host (a far-future date or a huge number
# would otherwise stop that host for the rest of the job).
MAX_RETRY_AFTER = 3600.0

T = TypeVar("T")
Connector = Callable[[tuple[str, int], float], socket.socket]


@dataclass(frozen=True)
class FetchOptions:
    connect_timeout: float = 5.0  # seconds to open a connection
    read_timeout: float = 10.0  # seconds of silence allowed while reading
    deadline: float = 30.0  # seconds for the whole URL: retries, redirects and all
    attempts: int = 3  # tries per URL for retryable failures (1 = no retry)
    backoff: float = 0.5  # the first retry waits up to this long (full jitter), then x2
    backoff_max: float = 8.0
    max_bytes: int = 20 << 20  # body cap
    max_redirects: int = 5
    threads: int = 32  # concurrent requests per process
    host_connections: int = 32  # K: requests in flight per host, shared on a machine
    host_rate: float = 0.0  # R: request starts per second per host (0 = no limit)
    allow_hosts: tuple[str, ...] = ()  # host or host:port allowed to be non-public
    unavailable_marker: str = "photo_unavailable"  # Flickr redirects gone photos there
    user_agent: str = f"faceatlas/{__version__} (research photo fetcher)"

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("attempts", "max_bytes", "threads", "host_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_redirects < 0 or self.host_rate < 0 or self.backoff < 0:
            raise ValueError("max_redirects, host_rate and backoff must be >= 0")


@dataclass(frozen=True, slots=True)
class Fetched:
    """What happened to one URL. `body` is set only when status is ok."""

    url: str
    status: str
    detail: str = ""
    http_status: int | None = None
    attempts: int = 0  # requests sent, redirects included
    body: bytes | None = None
    download_bytes: int | None = None  # body bytes received (also for too_large)
    final_url: str | None = None  # set when redirected
    content_type: str | None = None
    seconds: float = 0.0


class _DeadlineError(Exception):
    pass


class _RetryableError(Exception):
    def __init__(self, status: str, detail: str, http_status: int | None = None,
                 retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(detail)
        self.status, self.detail = status, detail
        self.http_status, self.retry_after = http_status, retry_after


class _FinalError(Exception):
    def __init__(self, status: str, detail: str, http_status: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.http_status = status, detail, http_status


class Watchdog:
    """One thread that shuts sockets down when their deadline passes."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, socket.socket] = {}
        self._ids = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
        self._thread.start()

    def arm(self, sock: socket.socket, deadline: float) -> int:
        token = next(self._ids)
        with self._cv:
            self._armed[token] = sock
            heapq.heappush(self._heap, (deadline, token))
            if self._heap[0][1] == token:
                self._cv.notify()
        return token

    def disarm(self, token: int) -> None:
        with self._cv:
            self._armed.pop(token, None)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def _run(self) -> None:
        with self._cv:
            while not self._closed:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed in time
                if not self._heap:
                    self._cv.wait()
                    continue
                due, token = self._heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    self._cv.wait(delay)
                    continue
                heapq.heappop(self._heap)
                sock = self._armed.pop(token)
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)


class _Conn(http.client.HTTPConnection):
    """An HTTP(S) connection to a checked address, sending the URL's host name."""

    def __init__(self, target: Target, ip: str, timeout: float, connector: Connector,
                 ssl_context: ssl.SSLContext | None) -> None:  # fmt: skip
        super().__init__(target.host, target.port, timeout=timeout)
        self.ip, self.connector, self.ssl_context = ip, connector, ssl_context
        self.scheme = target.scheme

    def connect(self) -> None:
        sock = self.connector((self.ip, self.port), self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                assert self.ssl_context is not None
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _create_connection(address: tuple[str, int], timeout: float) -> socket.socket:
    return socket.create_connection(address, timeout=timeout)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    # str.isdigit() is true for "²" or "١" too (headers are read as Latin-1), and float()
    # refuses those.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Fetcher:
    """Fetches URLs under FetchOptions; thread-safe; one per process is enough."""

    def __init__(
        self,
        opts: FetchOptions,
        limiter: HostLimiter,
        guard: AddressGuard | None = None,
        connector: Connector | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.opts = opts
        self.limiter = limiter
        self.guard = guard or AddressGuard(opts.allow_hosts)
        self.connector = connector or _create_connection
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.watchdog = Watchdog()
        self._idle: dict[tuple[str, str, int, str], list[_Conn]] = {}
        self._dns: dict[tuple[str, int], tuple[float, list[str] | RefusedError]] = {}
        self._lock = threading.Lock()

    # -- public -----------------------------------------------------------------------
    def fetch(self, url: str) -> Fetched:
        t0 = time.monotonic()
        deadline = t0 + self.opts.deadline
        state = {"attempts": 0, "final_url": None}
        try:
            body, ctype, status_code = self._follow(url, deadline, state)
            return Fetched(url, "ok", "", status_code, state["attempts"], body, len(body),
                           state["final_url"], ctype, time.monotonic() - t0)  # fmt: skip
        except _FinalError as e:
            return Fetched(url, e.status, e.detail, e.http_status, state["attempts"], None,
                           state.get("download_bytes"), state["final_url"], None,
                           time.monotonic() - t0)  # fmt: skip
        except Exception as e:  # a bug here must not sink a job of millions of photos
            log.exception("internal error fetching %s", url[:200])
            return Fetched(url, "internal_error", f"{type(e).__name__}: {e}"[:500],
                           None, state["attempts"], seconds=time.monotonic() - t0)  # fmt: skip

    def fetch_many(
        self, items: Iterable[T], url_of: Callable[[T], str],
        work: Callable[[T, Fetched], object] | None = None,
    ) -> Iterator[tuple[T, Fetched, object]]:  # fmt: skip
        """Fetch every item's URL with `threads` requests in flight; yields as they finish.

        `work(item, fetched)` runs in the same worker thread after the fetch (e.g. the image
        check), so CPU work overlaps other threads' network waits.
        """
        n = self.opts.threads

        def one(item: T) -> tuple[T, Fetched, object]:
            f = self.fetch(url_of(item))
            return item, f, (work(item, f) if work else None)

        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="fetch") as pool:
            pending: set[Future] = set()
            it = iter(items)
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * n:
                    try:
                        pending.add(pool.submit(one, next(it)))
                    except StopIteration:
                        exhausted = True
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()

    def close(self) -> None:
        self.watchdog.close()
        with self._lock:
            for conns in self._idle.values():
                for c in conns:
                    c.close()
            self._idle.clear()

    # -- redirects and retries ----------------------------------------------------------
    def _follow(self, url: str, deadline: float, state: dict) -> tuple[bytes, str | None, int]:
        seen = {url}
        current = url
        for _ in range(self.opts.max_redirects + 1):
            try:
                target = parse_target(current)
            except RefusedError as e:
                raise _FinalError(e.status, e.detail) from None
            if not target.path.isascii() or _BAD_PATH_CHAR.search(target.path):
                # http.client would refuse such a path only after connecting (InvalidURL or
                # UnicodeEncodeError); a Location header can carry any Latin-1 character.
                raise _FinalError("bad_url", f"unsendable path in {current[:200]!r}")
            result = self._with_retries(target, deadline, state)
            if isinstance(result, tuple):
                return result
            location = result  # a redirect
            try:
                nxt = _join(current, location)
            except ValueError as e:
                # urljoin raises on e.g. "http://[::1/x" (unbalanced bracket).
                raise _FinalError("bad_url", f"bad Location {location[:200]!r}: {e}") from None
            if self.opts.unavailable_marker and self.opts.unavailable_marker in nxt:
                state["final_url"] = nxt
                raise _FinalError("unavailable", f"redirected to {nxt[:200]}", None)
            if nxt in seen:
                raise _FinalError("too_many_redirects", f"redirect loop at {nxt[:200]}")
            seen.add(nxt)
            current = nxt
            state["final_url"] = nxt
        raise _FinalError("too_many_redirects", f"more than {self.opts.max_redirects} redirects")

    def _with_retries(self, target: Target, deadline: float, state: dict):
        tries = 0
        while True:
            tries += 1
            try:
                return self._once(target, deadline, state)
            except _DeadlineError:
                detail = f"deadline of {self.opts.deadline:g} s passed"
                raise _FinalError("timeout", detail) from None
            except _RetryableError as e:
                wait_s = random.uniform(0, min(self.opts.backoff_max,
                                               self.opts.backoff * 2 ** (tries - 1)))  # fmt: skip
                if e.retry_after is not None:
                    pause = min(e.retry_after, MAX_RETRY_AFTER)
                    self.limiter.pause(target.host_port, pause)
                    wait_s = max(wait_s, pause)
                if tries >= self.opts.attempts or time.monotonic() + wait_s >= deadline:
                    raise _FinalError(e.status, e.detail, e.http_status) from None
                time.sleep(wait_s)

    # -- one request --------------------------------------------------------------------
    def _addresses(self, target: Target) -> list[str]:
        key = (target.host, target.port)
        now = time.monotonic()
        hit = self._dns.get(key)
        if hit is None or hit[0] < now:
            try:
                value: list[str] | RefusedError = self.guard.addresses(target)
            except RefusedError as e:
                value = e
            ttl = _DNS_FAIL_TTL if isinstance(value, RefusedError) else _DNS_TTL
            hit = (now + ttl, value)
            self._dns[key] = hit
        if isinstance(hit[1], RefusedError):
            raise _FinalError(hit[1].status, hit[1].detail)
        return hit[1]

    def _once(self, target: Target, deadline: float, state: dict):
        """One request: the body on 200, a Location on a redirect; raises otherwise."""
        ip = self._addresses(target)[0]
        key = (target.scheme, target.host, target.port, ip)
        try:
            with self.limiter.request(target.host_port, deadline):
                state["attempts"] += 1
                return self._exchange(key, target, ip, deadline, state)
        except HostLimitTimeoutError as e:
            if e.throttled:
                raise _FinalError("http_429", str(e)) from None
            raise _DeadlineError(str(e)) from None

    def _exchange(self, key, target: Target, ip: str, deadline: float, state: dict):
        opts = self.opts
        conn = self._checkout(key)
        reused = conn is not None
        for fresh_try in (0, 1):
            if conn is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _DeadlineError()
                conn = _Conn(target, ip, min(opts.connect_timeout, remaining), self.connector,
                             self.ssl_context if target.scheme == "https" else None)  # fmt: skip
                try:
                    conn.connect()
                except TimeoutError:
                    conn.close()
                    self._check_deadline(deadline)
                    raise _RetryableError("timeout", "connect timeout") from None
                except ssl.SSLError as e:
                    conn.close()
                    raise _FinalError("connection_error", f"TLS: {e}") from None
                except OSError as e:
                    conn.close()
                    self._check_deadline(deadline)
                    raise _RetryableError("connection_error", f"connect: {e}") from None
            token = self.watchdog.arm(conn.sock, deadline)
            keep = False
            try:
                conn.sock.settimeout(opts.read_timeout)
                try:
                    conn.request("GET", target.path, headers=self._headers())
                    resp = conn.getresponse()
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError, http.client.BadStatusLine) as e:  # fmt: skip
                    self._check_deadline(deadline)
                    if reused and fresh_try == 0:
                        # The server closed an idle keep-alive connection: not the photo's
                        # fault, so try once more on a new connection without counting it.
                        conn.close()
                        conn, reused = None, False
                        continue
                    raise _RetryableError("connection_error", f"no response: {e}") from None
                outcome, keep = self._handle(resp, target, deadline, state)
            except TimeoutError:
                self._check_deadline(deadline)
                raise _RetryableError("timeout", f"no data for {opts.read_timeout:g} s") from None
            except (OSError, http.client.HTTPException) as e:
                self._check_deadline(deadline)
                raise _RetryableError("connection_error", f"{type(e).__name__}: {e}") from None
            finally:
                self.watchdog.disarm(token)
                if keep:
                    self._checkin(key, conn)
                elif conn is not None:  # None: the stale-connection path closed it already
                    conn.close()
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        raise AssertionError("unreachable")

    def _handle(self, resp: http.client.HTTPResponse, target: Target, deadline: float,
                state: dict):  # fmt: skip
        """Read or discard the response. Returns (outcome, connection reusable), where the
        outcome is (body, content type, status), a redirect's Location, or an exception
        for the caller to raise once the connection is back in the pool."""
        code = resp.status
        if code == 200:
            body = self._read_body(resp, deadline, state)
            return (body, resp.getheader("Content-Type"), code), not resp.will_close
        reusable = self._drain(resp)
        if code in _REDIRECTS:
            location = resp.getheader("Location")
            if not location:
                return _FinalError("http_other", f"HTTP {code} without Location", code), reusable
            return location, reusable
        if code in _FINAL:
            return _FinalError(_FINAL[code], f"HTTP {code}", code), reusable
        if code == 429 or 500 <= code <= 599:
            status = "http_429" if code == 429 else "http_5xx"
            ra = parse_retry_after(resp.getheader("Retry-After"))
            return _RetryableError(status, f"HTTP {code}", code, ra), reusable
        return _FinalError("http_other", f"HTTP {code}", code), reusable

    def _read_body(self, resp: http.client.HTTPResponse, deadline: float, state: dict) -> bytes:
        cap = self.opts.max_bytes
        if resp.length is not None and resp.length > cap:
            state["download_bytes"] = 0
            raise _FinalError("too_large", f"Content-Length {resp.length} > {cap}", 200)
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = resp.read1(_READ_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > cap:
                state["download_bytes"] = total
                raise _FinalError("too_large", f"body over {cap} bytes", 200)
        if time.monotonic() > deadline:
            raise _DeadlineError()
        if resp.length:  # http.client counts down what is still owed
            raise http.client.IncompleteRead(b"", resp.length)
        if not resp.isclosed():
            # read1() stops at Content-Length without marking the response done, and
            # http.client will not send on the connection until it is.
            resp.read()
        return b"".join(parts)

    @staticmethod
    def _drain(resp: http.client.HTTPResponse) -> bool:
        """Read a small error body so the connection can be reused; close if large."""
        if resp.length is not None and resp.length <= _READ_CHUNK:
            resp.read()
            return not resp.will_close
        return False

    @staticmethod
    def _check_deadline(deadline: float) -> None:
        if time.monotonic() >= deadline:
            raise _DeadlineError()

    def _headers(self) -> dict[str, str]:
        return {
            "User-Agent": self.opts.user_agent,
            "Accept": "image/jpeg,image/png,image/webp,image/*;q=0.8,*/*;q=0.1",
        }

    def _checkout(self, key) -> _Conn | None:
        with self._lock:
            conns = self._idle.get(key)
            return conns.pop() if conns else None

    def _checkin(self, key, conn: _Conn) -> None:
        with self._lock:
            conns = self._idle.setdefault(key, [])
            if len(conns) < self.opts.host_connections:
                conns.append(conn)
                return
        conn.close()


def _join(base: str, location: str) -> str:
    return urljoin(base, location.strip())
