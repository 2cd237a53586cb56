"""Tests of faceatlas.httpfetch against the hostile HTTP server in fetchserver.py.

All traffic goes to 127.0.0.1. Every Fetcher here is built with a fake resolver, so a host
name is never looked up for real, and with a recording connector, so a test can prove that
no connection was attempted to an address that must not be contacted. A few behaviours that
FetchServer cannot produce (dripping headers or a TLS handshake, an unannounced close of an
idle keep-alive connection, a body delimited by the close) come from RawServer below.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from fetchserver import FetchServer, Record, Resp, jpeg_bytes, png_bytes

from faceatlas import httpfetch
from faceatlas.hostlimit import HostLimiter
from faceatlas.httpfetch import FETCH_STATUSES, Fetched, Fetcher, FetchOptions, parse_retry_after
from faceatlas.netguard import AddressGuard

JPEG = jpeg_bytes()
PNG = png_bytes()
SENT_HEADERS = {"host", "user-agent", "accept", "accept-encoding"}


# -- rig ------------------------------------------------------------------------------------


@dataclass
class Rig:
    fetcher: Fetcher
    limiter: HostLimiter
    connects: list[tuple[str, int]] = field(default_factory=list)  # connector calls
    resolves: list[str] = field(default_factory=list)  # fake resolver calls

    def fetch(self, url: str) -> Fetched:
        return self.fetcher.fetch(url)

    def timed(self, url: str) -> tuple[Fetched, float]:
        t0 = time.monotonic()
        f = self.fetcher.fetch(url)
        return f, time.monotonic() - t0


MakeRig = Callable[..., Rig]


@pytest.fixture
def srv() -> Iterator[FetchServer]:
    with FetchServer() as server:
        yield server
    assert server.errors == []


# Loading the CA store takes ~60 ms; one context serves every Fetcher of the run.
SSL_CONTEXT = ssl.create_default_context()


@pytest.fixture
def make(request: pytest.FixtureRequest, tmp_path) -> Iterator[MakeRig]:
    """make(k=8, rate=0.0, resolve={name: ip or [ips]}, allow=(...), limits=dir, **options).

    Without `allow`, only the `srv` fixture's host:port is allowed (and srv is started).
    """
    rigs: list[Rig] = []

    def factory(
        k: int = 8,
        rate: float = 0.0,
        resolve: dict[str, str | list[str]] | None = None,
        allow: tuple[str, ...] | None = None,
        limits: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **options,
    ) -> Rig:
        options.setdefault("deadline", 2.0)
        options.setdefault("connect_timeout", 1.0)
        options.setdefault("read_timeout", 1.0)
        options.setdefault("backoff", 0.01)
        if allow is None:
            allow = (request.getfixturevalue("srv").host_port,)
        opts = FetchOptions(allow_hosts=allow, **options)
        limiter = HostLimiter(limits or str(tmp_path / f"limits{len(rigs)}"), k, rate)
        rig = Rig(None, limiter)  # type: ignore[arg-type]

        def resolver(host: str, port: int, *args, **kwargs) -> list:
            rig.resolves.append(host)
            ips = (resolve or {}).get(host)
            if ips is None:
                raise socket.gaierror(socket.EAI_NONAME, "fake resolver: no such name")
            ips = [ips] if isinstance(ips, str) else ips
            return [
                (socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, port))
                for ip in ips
            ]  # fmt: skip

        def connector(address: tuple[str, int], timeout: float) -> socket.socket:
            rig.connects.append(address)
            return socket.create_connection(address, timeout=timeout)

        guard = AddressGuard(opts.allow_hosts, resolver=resolver)
        rig.fetcher = Fetcher(
            opts, limiter, guard=guard, connector=connector, ssl_context=ssl_context or SSL_CONTEXT
        )
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        rig.fetcher.close()
        rig.limiter.close()


def starts(srv: FetchServer, path: str | None = None) -> list[Record]:
    return [r for r in srv.requests if path is None or r.path == path]


def free_port() -> int:
    """A local port with nothing listening on it (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RawServer:
    """A bare TCP server on 127.0.0.1; `handler(server, sock)` runs per connection."""

    def __init__(self, handler: Callable[[RawServer, socket.socket], None]) -> None:
        self.handler = handler
        self.stop = threading.Event()
        self.closed = threading.Event()  # set by handlers that close on their own
        self.connections = 0
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(16)
        self._lsock.settimeout(0.05)
        self.port = self._lsock.getsockname()[1]
        self.host_port = f"127.0.0.1:{self.port}"
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{self.host_port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                sock, _ = self._lsock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
            self.track(sock)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self._threads.append(t)
            t.start()

    def track(self, sock: socket.socket) -> None:
        """Have close() shut `sock` down (a wrapped socket replaces the one accepted)."""
        with self._lock:
            self._socks.append(sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            sock.settimeout(5.0)
            self.handler(self, sock)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        self.stop.set()
        self._accepter.join(2.0)
        self._lsock.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(2.0)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def drip(server: RawServer, sock: socket.socket, data: bytes, interval: float) -> None:
    for i in range(len(data)):
        sock.sendall(data[i : i + 1])
        if server.stop.wait(interval):
            return


# -- success ------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "ctype"), [(JPEG, "image/jpeg"), (PNG, "image/png")])
def test_good_image(make: MakeRig, srv: FetchServer, body: bytes, ctype: str) -> None:
    url = srv.route("/photo", Resp(body=body, content_type=ctype))
    rig = make()
    f = rig.fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("ok", 200, 1)
    assert f.body == body
    assert f.download_bytes == len(body)
    assert f.content_type == ctype
    assert f.url == url
    assert f.final_url is None
    assert f.detail == ""
    assert 0 < f.seconds < 2.0
    assert srv.count("/photo") == 1
    assert rig.connects == [("127.0.0.1", srv.port)]


def test_query_string_is_sent(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/q.jpg", Resp(body=JPEG)) + "?size=m&x=%20y"
    f = make().fetch(url)
    assert f.status == "ok"
    assert srv.requests[0].query == "size=m&x=%20y"


def test_exact_cap_is_ok(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/cap.jpg", Resp(body=b"\xff" * 1000))
    f = make(max_bytes=1000).fetch(url)
    assert (f.status, f.download_bytes) == ("ok", 1000)


def test_chunked_body(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/c.jpg", Resp(body=JPEG, chunked=True, chunk_size=100))
    rig = make()
    for _ in range(3):
        f = rig.fetch(url)
        assert (f.status, f.attempts, f.body) == ("ok", 1, JPEG)
    assert srv.connections == 1


def test_close_delimited_body(make: MakeRig) -> None:
    """No Content-Length, no chunking: the body ends when the server closes."""

    def handler(server: RawServer, sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
        sock.sendall(PNG)

    with RawServer(handler) as raw:
        f = make(allow=(raw.host_port,)).fetch(raw.url("/p.png"))
    assert (f.status, f.attempts, f.body, f.content_type) == ("ok", 1, PNG, "image/png")


def test_only_minimal_headers_sent(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/h.jpg", Resp(body=JPEG))
    rig = make(user_agent="faceatlas-test/1")
    assert rig.fetch(url).status == "ok"
    (rec,) = srv.requests
    assert set(rec.headers) == SENT_HEADERS
    assert rec.headers["host"] == srv.host_port
    assert rec.headers["user-agent"] == "faceatlas-test/1"
    assert rec.headers["accept-encoding"] == "identity"
    assert rec.method == "GET"


# -- keep-alive -----------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp(body=JPEG))
    missing = srv.url("/missing.jpg")
    srv.route("/r", Resp.redirect("/a.jpg"))
    srv.route("/flaky", Resp.error(500), Resp(body=JPEG))
    rig = make()
    for _ in range(10):
        assert rig.fetch(url).status == "ok"
    assert rig.fetch(missing).status == "http_404"  # error body drained, connection kept
    assert rig.fetch(url).status == "ok"
    assert rig.fetch(srv.url("/r")).status == "ok"
    assert rig.fetch(srv.url("/flaky")).status == "ok"
    assert srv.connections == 1
    assert len(rig.connects) == 1
    assert {r.conn_id for r in srv.requests} == {srv.requests[0].conn_id}
    assert len(srv.requests) == 16


def test_large_error_body_closes_connection(make: MakeRig, srv: FetchServer) -> None:
    big = srv.route("/big404", Resp.error(404, body=b"x" * 200_000))
    url = srv.route("/a.jpg", Resp(body=JPEG))
    rig = make()
    f = rig.fetch(big)
    assert (f.status, f.http_status, f.attempts) == ("http_404", 404, 1)
    assert rig.fetch(url).status == "ok"
    assert srv.connections == 2


def test_connection_close_is_honoured(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp(body=JPEG, close=True))
    rig = make()
    for _ in range(3):
        assert rig.fetch(url).status == "ok"
    assert srv.connections == 3


def test_stale_keep_alive_connection_is_replaced(make: MakeRig) -> None:
    """A server that closes an idle keep-alive connection without saying so: the next
    fetch tries once more on a fresh connection, without counting an attempt."""

    def handler(server: RawServer, sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(JPEG)}\r\n\r\n".encode()
            + JPEG
        )
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        server.closed.set()

    with RawServer(handler) as raw:
        rig = make(allow=(raw.host_port,), attempts=1)
        assert rig.fetch(raw.url("/a.jpg")).status == "ok"
        assert raw.closed.wait(5)
        time.sleep(0.05)  # let the FIN reach the client
        f = rig.fetch(raw.url("/a.jpg"))
        assert (f.status, f.attempts, f.body) == ("ok", 1, JPEG)
        assert raw.connections == 2
        assert len(rig.connects) == 2


# -- statuses without retry -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (404, "http_404"),
        (403, "http_403"),
        (410, "http_410"),
        (400, "http_other"),
        (401, "http_other"),
        (204, "http_other"),
        (206, "http_other"),
        (304, "http_other"),
        (418, "http_other"),
    ],
)
def test_final_http_status(make: MakeRig, srv: FetchServer, code: int, status: str) -> None:
    url = srv.route("/x.jpg", Resp.error(code))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.http_status, f.attempts) == (status, code, 1)
    assert f.body is None
    assert srv.count("/x.jpg") == 1


# -- retries --------------------------------------------------------------------------------


def test_500_then_ok(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.error(500), Resp(body=JPEG))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.http_status, f.attempts, f.body) == ("ok", 200, 2, JPEG)
    assert srv.count("/a.jpg") == 2


def test_503_exhausts_attempts(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.error(503))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("http_5xx", 503, 3)
    assert f.body is None
    assert srv.count("/a.jpg") == 3


def test_attempts_one_means_no_retry(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.error(502), Resp(body=JPEG))
    f = make(attempts=1).fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("http_5xx", 502, 1)
    assert srv.count("/a.jpg") == 1


def test_backoff_doubles_up_to_max(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    bounds: list[float] = []

    def uniform(a: float, b: float) -> float:
        bounds.append(b)
        return 0.0

    monkeypatch.setattr(httpfetch.random, "uniform", uniform)
    url = srv.route("/a.jpg", Resp.error(500))
    f = make(attempts=6, backoff=0.1, backoff_max=0.5).fetch(url)
    assert (f.status, f.attempts) == ("http_5xx", 6)
    assert bounds[:5] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_429_retry_after_seconds(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.retry_after(1), Resp(body=JPEG))
    f = make(attempts=3, deadline=5.0).fetch(url)
    assert (f.status, f.http_status, f.attempts, f.body) == ("ok", 200, 2, JPEG)
    first, second = starts(srv, "/a.jpg")
    assert second.t_start - first.t_start >= 1.0 - 0.02


def record_pauses(rig: Rig, monkeypatch) -> list[tuple[str, float]]:
    calls: list[tuple[str, float]] = []
    real_pause = rig.limiter.pause

    def pause(host: str, seconds: float) -> None:
        calls.append((host, seconds))
        real_pause(host, seconds)

    monkeypatch.setattr(rig.limiter, "pause", pause)
    return calls


def test_429_retry_after_http_date(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    # A date 30 s ahead, past the deadline: no retry, and the host is paused for ~30 s.
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    url = srv.route("/a.jpg", Resp.retry_after(when), Resp(body=JPEG))
    rig = make(attempts=3, deadline=3.0)
    pauses = record_pauses(rig, monkeypatch)
    f, took = rig.timed(url)
    assert (f.status, f.http_status, f.attempts) == ("http_429", 429, 1)
    assert took < 1.5
    ((host, seconds),) = pauses
    assert host == srv.host_port
    assert 27 <= seconds <= 30


def test_503_retry_after_is_honoured_too(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    url = srv.route("/a.jpg", Resp.retry_after(30, status=503), Resp(body=JPEG))
    rig = make(attempts=3, deadline=3.0)
    pauses = record_pauses(rig, monkeypatch)
    f, took = rig.timed(url)
    assert (f.status, f.http_status, f.attempts) == ("http_5xx", 503, 1)
    assert took < 1.5
    assert pauses == [(srv.host_port, 30.0)]
    assert srv.count("/a.jpg") == 1


def test_429_pauses_other_urls_of_the_host(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    a = srv.route("/a.jpg", Resp.retry_after(1), Resp(body=JPEG))
    b = srv.route("/b.jpg", Resp(body=PNG, content_type="image/png"))
    rig = make(attempts=3, deadline=5.0)
    paused = threading.Event()
    pause_calls: list[tuple[str, float, float]] = []
    real_pause = rig.limiter.pause

    def pause(host: str, seconds: float) -> None:
        pause_calls.append((host, seconds, time.monotonic()))
        real_pause(host, seconds)
        paused.set()

    monkeypatch.setattr(rig.limiter, "pause", pause)
    result: dict[str, Fetched] = {}
    t = threading.Thread(target=lambda: result.setdefault("a", rig.fetch(a)))
    t.start()
    assert paused.wait(5)
    fb = rig.fetch(b)  # requested right after the 429
    t.join(5)
    assert (fb.status, fb.attempts, fb.body) == ("ok", 1, PNG)
    assert (result["a"].status, result["a"].attempts) == ("ok", 2)
    ((host, seconds, t_pause),) = pause_calls
    assert (host, seconds) == (srv.host_port, 1.0)
    (rb,) = starts(srv, "/b.jpg")
    assert rb.t_start >= t_pause + 1.0


def test_retry_after_past_deadline_gives_up_at_once(make: MakeRig, srv: FetchServer) -> None:
    a = srv.route("/a.jpg", Resp.retry_after(30), Resp(body=JPEG))
    b = srv.route("/b.jpg", Resp(body=JPEG))
    rig = make(attempts=5, deadline=3.0)
    f, took = rig.timed(a)
    assert (f.status, f.http_status, f.attempts) == ("http_429", 429, 1)
    assert took < 1.5
    # The whole host is paused now: another URL of it is not even requested.
    g, took = rig.timed(b)
    assert (g.status, g.attempts) == ("http_429", 0)
    assert took < 1.5
    assert srv.count("/b.jpg") == 0
    assert srv.count("/a.jpg") == 1


def test_429_still_throttled_after_retries(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.error(429))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("http_429", 429, 3)
    assert srv.count("/a.jpg") == 3


def test_deadline_covers_retries(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    # Jitter at its maximum: waits of 0.3, 0.6, then 1.2 s, which would pass the deadline.
    monkeypatch.setattr(httpfetch.random, "uniform", lambda a, b: b)
    url = srv.route("/a.jpg", Resp.error(500))
    f, took = make(attempts=10, backoff=0.3, deadline=1.5).timed(url)
    assert (f.status, f.http_status, f.attempts) == ("http_5xx", 500, 3)
    assert took < 1.5 + 1.0
    assert srv.count("/a.jpg") == 3


def test_deadline_cuts_a_slow_retry(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp.error(500, delay=0.4))
    f, took = make(attempts=10, deadline=1.0, read_timeout=5.0).timed(url)
    assert f.status == "timeout"
    assert 2 <= f.attempts <= 3
    assert took < 1.0 + 1.0


# -- timeouts -------------------------------------------------------------------------------


def test_dripping_body_hits_deadline(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/drip.jpg", Resp(body=b"y" * 100, chunk_size=1, drip=0.2))
    f, took = make(deadline=1.0, read_timeout=5.0, attempts=3).timed(url)
    assert (f.status, f.attempts, f.body) == ("timeout", 1, None)
    assert took < 1.0 + 1.0
    assert srv.count("/drip.jpg") == 1


def test_dripping_chunked_body_hits_deadline(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/drip.jpg", Resp(body=b"y" * 100, chunk_size=1, drip=0.2, chunked=True))
    f, took = make(deadline=0.5, read_timeout=5.0, attempts=3).timed(url)
    assert (f.status, f.attempts, f.body) == ("timeout", 1, None)
    assert took < 0.5 + 1.0


def test_hanging_server_hits_deadline(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/hang.jpg", Resp(hang=True))
    f, took = make(deadline=0.5, read_timeout=5.0, attempts=3).timed(url)
    assert (f.status, f.attempts) == ("timeout", 1)
    assert took < 0.5 + 1.0
    assert srv.count("/hang.jpg") == 1


def test_read_timeout_is_retried(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/hang.jpg", Resp(hang=True))
    f, took = make(deadline=4.0, read_timeout=0.2, attempts=2).timed(url)
    assert (f.status, f.attempts) == ("timeout", 2)
    assert "no data" in f.detail
    assert took < 4.0 + 1.0
    assert srv.count("/hang.jpg") == 2


def test_dripping_headers_hit_deadline(make: MakeRig) -> None:
    def handler(server: RawServer, sock: socket.socket) -> None:
        read_head(sock)
        drip(server, sock, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100, 0.1)

    with RawServer(handler) as raw:
        rig = make(allow=(raw.host_port,), deadline=0.5, read_timeout=5.0)
        f, took = rig.timed(raw.url("/a.jpg"))
    assert (f.status, f.attempts) == ("timeout", 1)
    assert took < 0.5 + 1.0


def test_dripping_tls_handshake_hits_deadline(make: MakeRig) -> None:
    """A server that answers a TLS ClientHello one byte at a time. Each byte would reset a
    per-recv timeout; the handshake still ends at the deadline (connect_timeout is longer)."""

    def handler(server: RawServer, sock: socket.socket) -> None:
        # A handshake record header announcing 16 KiB, then its body, slowly.
        drip(server, sock, b"\x16\x03\x03\x40\x00" + b"\x00" * 60, 0.1)

    with RawServer(handler) as raw:
        rig = make(allow=(raw.host_port,), deadline=0.5, connect_timeout=5.0, read_timeout=5.0)
        f, took = rig.timed(raw.url("/a.jpg", scheme="https"))
    assert f.status == "timeout"
    assert f.attempts == 1
    assert took < 0.5 + 1.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for a self-signed 127.0.0.1 cert."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    key, cert = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=cert)


def tls_handler(server_ctx: ssl.SSLContext, body: bytes, drip_s: float = 0.0):
    """Serves `body` over TLS, keep-alive, to every request; drips it if drip_s > 0."""

    def handler(server: RawServer, sock: socket.socket) -> None:
        with server_ctx.wrap_socket(sock, server_side=True) as tsock:
            server.track(tsock)
            while read_head(tsock):
                head = "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"
                head += f"Content-Length: {len(body)}\r\n\r\n"
                tsock.sendall(head.encode())
                if drip_s:
                    drip(server, tsock, body, drip_s)
                    return
                tsock.sendall(body)

    return handler


def test_https_ok_and_kept_alive(make: MakeRig, tls) -> None:
    server_ctx, client_ctx = tls
    with RawServer(tls_handler(server_ctx, JPEG)) as raw:
        rig = make(allow=(raw.host_port,), ssl_context=client_ctx)
        for _ in range(3):
            f = rig.fetch(raw.url("/a.jpg", scheme="https"))
            assert (f.status, f.attempts, f.body) == ("ok", 1, JPEG)
        assert raw.connections == 1


def test_https_untrusted_certificate(make: MakeRig, tls) -> None:
    server_ctx, _ = tls
    with RawServer(tls_handler(server_ctx, JPEG)) as raw:
        rig = make(allow=(raw.host_port,), attempts=3)  # the default CA store
        f = rig.fetch(raw.url("/a.jpg", scheme="https"))
    assert (f.status, f.attempts, f.body) == ("connection_error", 1, None)  # no retry
    assert "TLS" in f.detail


def test_https_dripping_body_hits_deadline(make: MakeRig, tls) -> None:
    server_ctx, client_ctx = tls
    with RawServer(tls_handler(server_ctx, b"z" * 100, drip_s=0.1)) as raw:
        rig = make(allow=(raw.host_port,), ssl_context=client_ctx, deadline=0.5,
                   read_timeout=5.0)  # fmt: skip
        f, took = rig.timed(raw.url("/a.jpg", scheme="https"))
    assert (f.status, f.attempts, f.body) == ("timeout", 1, None)
    assert took < 0.5 + 1.0


# -- broken bodies and the byte cap ---------------------------------------------------------


def test_truncated_body_is_never_ok(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/t.jpg", Resp(body=JPEG[: len(JPEG) // 2], content_length=len(JPEG)))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.attempts, f.body) == ("connection_error", 3, None)
    assert srv.count("/t.jpg") == 3
    assert srv.connections == 3  # a lying response closes its connection


def test_truncated_then_good(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/t.jpg", Resp(body=JPEG[:100], content_length=len(JPEG)), Resp(body=JPEG))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.attempts, f.body) == ("ok", 2, JPEG)


def test_content_length_over_cap_is_not_read(make: MakeRig, srv: FetchServer) -> None:
    # 4 MiB dripped at 64 KiB per 0.5 s: reading it would take half a minute.
    url = srv.route("/big.jpg", Resp(body=b"\xff" * (4 << 20), drip=0.5))
    f, took = make(max_bytes=1 << 20, deadline=3.0, attempts=3).timed(url)
    assert (f.status, f.http_status, f.attempts) == ("too_large", 200, 1)
    assert f.download_bytes == 0
    assert f.body is None
    assert took < 2.0
    assert srv.count("/big.jpg") == 1


def test_content_length_lie_over_cap(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/big.jpg", Resp(body=JPEG, content_length=10**12))
    f = make(max_bytes=1 << 20, attempts=3).fetch(url)
    assert (f.status, f.attempts, f.download_bytes) == ("too_large", 1, 0)


def test_chunked_body_over_cap(make: MakeRig, srv: FetchServer) -> None:
    cap = 100_000
    url = srv.route("/big.jpg", Resp(body=b"\xff" * (1 << 20), chunked=True, chunk_size=16384))
    rig = make(max_bytes=cap, attempts=3)
    f = rig.fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("too_large", 200, 1)
    assert f.body is None
    assert f.download_bytes is not None
    assert cap < f.download_bytes <= cap + 65536
    assert srv.count("/big.jpg") == 1


def test_close_delimited_body_over_cap(make: MakeRig) -> None:
    cap = 50_000

    def handler(server: RawServer, sock: socket.socket) -> None:
        read_head(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n")
        sock.sendall(b"\xff" * (1 << 20))

    with RawServer(handler) as raw:
        f = make(allow=(raw.host_port,), max_bytes=cap).fetch(raw.url("/big.jpg"))
    assert (f.status, f.attempts) == ("too_large", 1)
    assert f.download_bytes is not None
    assert cap < f.download_bytes <= cap + 65536


# -- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_to_image(make: MakeRig, srv: FetchServer, code: int) -> None:
    target = srv.route("/img.jpg", Resp(body=JPEG))
    url = srv.route("/r", Resp.redirect(target, code=code))
    f = make().fetch(url)
    assert (f.status, f.http_status, f.attempts, f.body) == ("ok", 200, 2, JPEG)
    assert f.final_url == target
    assert f.url == url
    assert [r.path for r in srv.requests] == ["/r", "/img.jpg"]


@pytest.mark.parametrize(
    ("location", "final_path"),
    [("/img.jpg", "/img.jpg"), ("img.jpg", "/dir/img.jpg"), ("../img.jpg", "/img.jpg")],
)
def test_relative_redirect(make: MakeRig, srv: FetchServer, location: str, final_path: str) -> None:
    srv.route(final_path, Resp(body=JPEG))
    url = srv.route("/dir/r", Resp.redirect(location))
    f = make().fetch(url)
    assert (f.status, f.attempts) == ("ok", 2)
    assert f.final_url == srv.url(final_path)


def test_attempts_count_redirects_and_retries(make: MakeRig, srv: FetchServer) -> None:
    target = srv.route("/img.jpg", Resp.error(503), Resp(body=JPEG))
    url = srv.route("/r", Resp.redirect("/img.jpg"))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.attempts, f.final_url, f.body) == ("ok", 3, target, JPEG)
    assert [r.path for r in srv.requests] == ["/r", "/img.jpg", "/img.jpg"]


def test_redirect_chain_within_limit(make: MakeRig, srv: FetchServer) -> None:
    for i in range(3):
        srv.route(f"/c{i}", Resp.redirect(f"/c{i + 1}"))
    srv.route("/c3", Resp(body=JPEG))
    f = make(max_redirects=3).fetch(srv.url("/c0"))
    assert (f.status, f.attempts, f.final_url) == ("ok", 4, srv.url("/c3"))


def test_redirect_chain_over_limit(make: MakeRig, srv: FetchServer) -> None:
    for i in range(10):
        srv.route(f"/c{i}", Resp.redirect(f"/c{i + 1}"))
    f = make(max_redirects=3).fetch(srv.url("/c0"))
    assert (f.status, f.attempts) == ("too_many_redirects", 4)
    assert [r.path for r in srv.requests] == ["/c0", "/c1", "/c2", "/c3"]


def test_no_redirects_allowed(make: MakeRig, srv: FetchServer) -> None:
    srv.route("/img.jpg", Resp(body=JPEG))
    url = srv.route("/r", Resp.redirect("/img.jpg"))
    f = make(max_redirects=0).fetch(url)
    assert (f.status, f.attempts) == ("too_many_redirects", 1)
    assert srv.count("/img.jpg") == 0


def test_redirect_loop(make: MakeRig, srv: FetchServer) -> None:
    a = srv.route("/la", Resp.redirect("/lb"))
    srv.route("/lb", Resp.redirect(a))
    f = make(max_redirects=10).fetch(a)
    assert (f.status, f.attempts) == ("too_many_redirects", 2)
    assert "loop" in f.detail
    assert [r.path for r in srv.requests] == ["/la", "/lb"]


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/x",
        "http://192.168.1.1:8080/x",
        "http://[::1]/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
        "http://127.0.0.1:{other}/x",  # loopback, but not the allowed port
        "http://localhost:{port}/x",  # the allowed server by another name
        "http://metadata.test/computeMetadata/v1/",
    ],
)
def test_redirect_to_blocked_address(make: MakeRig, srv: FetchServer, location: str) -> None:
    location = location.format(port=srv.port, other=free_port())
    url = srv.route("/r", Resp.redirect(location))
    rig = make(resolve={"localhost": "127.0.0.1", "metadata.test": "169.254.169.254"})
    f = rig.fetch(url)
    assert (f.status, f.attempts) == ("blocked_address", 1)
    assert rig.connects == [("127.0.0.1", srv.port)]  # nothing else was even tried
    assert srv.count("/r") == 1


@pytest.mark.parametrize(
    "location",
    [
        "ftp://127.0.0.1/x.jpg",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/x",
        "javascript:alert(1)",
        "http://user:pw@127.0.0.1:{port}/x.jpg",
        "http://127.0.0.1:notaport/x",
        "http://[::1/x",  # unbalanced bracket
        "/a b.jpg",  # a space cannot go on the request line
        "/caf\xe9.jpg",  # not ASCII (a Location is read as Latin-1)
        "/x\x01.jpg",
    ],
)
def test_redirect_to_bad_url(make: MakeRig, srv: FetchServer, location: str) -> None:
    srv.route("/x.jpg", Resp(body=JPEG))
    url = srv.route("/r", Resp.redirect(location.format(port=srv.port)))
    rig = make()
    f = rig.fetch(url)
    assert (f.status, f.attempts) == ("bad_url", 1)
    assert rig.connects == [("127.0.0.1", srv.port)]
    assert srv.count("/r") == 1
    assert srv.count("/x.jpg") == 0


def test_redirect_without_location(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/r", Resp.error(302))
    f = make().fetch(url)
    assert (f.status, f.http_status, f.attempts) == ("http_other", 302, 1)


def test_redirect_to_unavailable_placeholder(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/r", Resp.redirect("https://s.example/images/en-us/photo_unavailable.png"))
    rig = make()
    f = rig.fetch(url)
    assert (f.status, f.attempts) == ("unavailable", 1)
    assert rig.resolves == []
    assert rig.connects == [("127.0.0.1", srv.port)]


def test_relative_redirect_to_unavailable_placeholder(make: MakeRig, srv: FetchServer) -> None:
    srv.route("/photo_unavailable.gif", Resp(body=b"GIF89a"))
    url = srv.route("/r", Resp.redirect("/photo_unavailable.gif"))
    f = make().fetch(url)
    assert (f.status, f.attempts) == ("unavailable", 1)
    assert srv.count("/photo_unavailable.gif") == 0


# -- no cookies, no credentials -------------------------------------------------------------


def test_never_sends_cookies(make: MakeRig, srv: FetchServer) -> None:
    srv.route("/c1", Resp.redirect("/c2", headers={"Set-Cookie": "sid=abc; Path=/"}))
    srv.route("/c2", Resp(body=JPEG, headers={"Set-Cookie": "sid2=def; Path=/"}))
    rig = make()
    assert rig.fetch(srv.url("/c1")).status == "ok"
    assert rig.fetch(srv.url("/c1")).status == "ok"
    assert rig.fetch(srv.url("/c2")).status == "ok"
    recs = srv.requests
    assert [r.path for r in recs] == ["/c1", "/c2", "/c1", "/c2", "/c2"]
    for rec in recs:
        assert set(rec.headers) == SENT_HEADERS
        assert "cookie" not in rec.headers
        assert "authorization" not in rec.headers


@pytest.mark.parametrize("userinfo", ["user:pass@", "user@", ":pass@", "user:@"])
def test_credentials_in_url_refused(make: MakeRig, srv: FetchServer, userinfo: str) -> None:
    srv.route("/a.jpg", Resp(body=JPEG))
    rig = make()
    f = rig.fetch(f"http://{userinfo}{srv.host_port}/a.jpg")
    assert (f.status, f.attempts) == ("bad_url", 0)
    assert rig.connects == []
    assert srv.requests == []


# -- bad URLs, DNS, connection errors -------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a.jpg",
        "file:///etc/passwd",
        "data:image/png;base64,AAAA",
        "127.0.0.1/a.jpg",
        "",
        "http://",
        "http:///a.jpg",
        "http://127.0.0.1:abc/a.jpg",
        "http://127.0.0.1:99999/a.jpg",
        "http://[::1/a.jpg",
    ],
)
def test_bad_url(make: MakeRig, url: str) -> None:
    rig = make()
    f = rig.fetch(url)
    assert (f.status, f.attempts, f.http_status, f.body) == ("bad_url", 0, None, None)
    assert rig.connects == []
    assert rig.resolves == []


def test_dns_error(make: MakeRig) -> None:
    rig = make(allow=("photos.invalid",))
    f = rig.fetch("http://photos.invalid/a.jpg")
    assert (f.status, f.attempts) == ("dns_error", 0)
    assert rig.resolves == ["photos.invalid"]
    assert rig.connects == []


def test_host_name_resolved_once_and_sent_as_host(make: MakeRig, srv: FetchServer) -> None:
    srv.route("/a.jpg", Resp(body=JPEG))
    name = f"photos.test:{srv.port}"
    rig = make(resolve={"photos.test": "127.0.0.1"}, allow=(name,))
    for _ in range(2):
        f = rig.fetch(f"http://{name}/a.jpg")
        assert (f.status, f.body) == ("ok", JPEG)
    assert rig.resolves == ["photos.test"]
    assert rig.connects == [("127.0.0.1", srv.port)]
    assert [r.headers["host"] for r in srv.requests] == [name, name]


@pytest.mark.parametrize(
    "ips", ["10.1.2.3", "127.0.0.1", ["93.184.216.34", "192.168.0.7"], "::ffff:127.0.0.1"]
)
def test_name_resolving_to_private_address(make: MakeRig, ips) -> None:
    rig = make(resolve={"evil.test": ips})
    f = rig.fetch("http://evil.test/a.jpg")
    assert (f.status, f.attempts) == ("blocked_address", 0)
    assert rig.connects == []


def test_connection_refused(make: MakeRig) -> None:
    port = free_port()
    rig = make(allow=(f"127.0.0.1:{port}",), attempts=3)
    f = rig.fetch(f"http://127.0.0.1:{port}/a.jpg")
    assert (f.status, f.attempts, f.http_status) == ("connection_error", 3, None)
    assert rig.connects == [("127.0.0.1", port)] * 3


def test_blocked_without_allow_list(make: MakeRig, srv: FetchServer) -> None:
    url = srv.route("/a.jpg", Resp(body=JPEG))
    rig = make(allow=())
    f = rig.fetch(url)
    assert (f.status, f.attempts) == ("blocked_address", 0)
    assert rig.connects == []
    assert srv.requests == []


# -- hostile header values and internal errors ----------------------------------------------


@pytest.mark.parametrize("value", ["soon", "-1", "1.5", "\xb2", "Mon, 99 Foo 2020"])
def test_garbage_retry_after(make: MakeRig, srv: FetchServer, value: str) -> None:
    url = srv.route("/a.jpg", Resp.retry_after(value), Resp(body=JPEG))
    f = make(attempts=3).fetch(url)
    assert (f.status, f.attempts) == ("ok", 2)


def test_internal_error_is_contained(make: MakeRig, srv: FetchServer, caplog) -> None:
    url = srv.route("/a.jpg", Resp(body=JPEG))
    rig = make()

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    rig.fetcher._read_body = boom  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="faceatlas.httpfetch"):
        f = rig.fetch(url)
    assert (f.status, f.attempts, f.body) == ("internal_error", 1, None)
    assert "RuntimeError: kaboom" in f.detail
    assert "internal error fetching" in caplog.text
    del rig.fetcher._read_body
    assert rig.fetch(url).status == "ok"
    assert srv.connections == 2  # the connection of the failed exchange was not pooled


def test_internal_error_before_any_request(make: MakeRig, srv: FetchServer, monkeypatch) -> None:
    def boom(url: str):
        raise RuntimeError("parse bug")

    monkeypatch.setattr(httpfetch, "parse_target", boom)
    f = make().fetch(srv.url("/a.jpg"))
    assert (f.status, f.attempts) == ("internal_error", 0)
    assert srv.requests == []


def test_every_status_is_declared(make: MakeRig, srv: FetchServer) -> None:
    srv.route("/a.jpg", Resp(body=JPEG))
    srv.route("/b.jpg", Resp.error(404))
    rig = make()
    for url in (srv.url("/a.jpg"), srv.url("/b.jpg"), "ftp://x/"):
        assert rig.fetch(url).status in FETCH_STATUSES


# -- fetch_many -----------------------------------------------------------------------------


def _mixed_routes(srv: FetchServer, n: int, delay: float = 0.0) -> dict[str, str]:
    """n URLs: good, 404, or 500-then-good; returns url -> expected status."""
    expected: dict[str, str] = {}
    for i in range(n):
        kind = i % 3
        if kind == 0:
            url = srv.route(f"/good{i}.jpg", Resp(body=JPEG, delay=delay))
            expected[url] = "ok"
        elif kind == 1:
            url = srv.url(f"/gone{i}.jpg")
            expected[url] = "http_404"
        else:
            url = srv.route(f"/flaky{i}.jpg", Resp.error(500, delay=delay), Resp(body=JPEG))
            expected[url] = "ok"
    return expected


def test_fetch_many_mixed(make: MakeRig, srv: FetchServer) -> None:
    expected = _mixed_routes(srv, 200, delay=0.005)
    rig = make(threads=4, k=8, attempts=3)
    worked: list[tuple[str, str]] = []
    lock = threading.Lock()

    def work(item: tuple[int, str], f: Fetched) -> int:
        with lock:
            worked.append((item[1], f.status))
        return item[0] * 10

    items = list(enumerate(expected))
    out = list(rig.fetcher.fetch_many(iter(items), lambda it: it[1], work))
    assert sorted(item for item, _, _ in out) == items  # each exactly once
    for (i, url), f, res in out:
        assert f.url == url
        assert f.status == expected[url], (url, f)
        assert res == i * 10
        if "/flaky" in url:
            assert f.attempts == 2
        else:
            assert f.attempts == 1
        if f.status == "ok":
            assert f.body == JPEG
    assert sorted(worked) == sorted((url, expected[url]) for url in expected)
    assert 2 <= srv.max_in_flight <= 4
    assert len(srv.requests) == 200 + 200 // 3


def test_fetch_many_without_work_and_empty(make: MakeRig, srv: FetchServer) -> None:
    rig = make(threads=2)
    assert list(rig.fetcher.fetch_many([], str)) == []
    url = srv.route("/a.jpg", Resp(body=JPEG))
    out = list(rig.fetcher.fetch_many([url] * 5, str))
    assert [(u, f.status, w) for u, f, w in out] == [(url, "ok", None)] * 5


def test_fetch_many_host_limit(make: MakeRig, srv: FetchServer) -> None:
    expected = _mixed_routes(srv, 60, delay=0.02)
    rig = make(threads=8, k=2, attempts=3)
    out = list(rig.fetcher.fetch_many(list(expected), str))
    assert sorted(u for u, _, _ in out) == sorted(expected)
    assert all(f.status == expected[u] for u, f, _ in out)
    assert srv.max_in_flight == 2


def test_host_limit_shared_between_fetchers(make: MakeRig, srv: FetchServer, tmp_path) -> None:
    """Two Fetchers (as two worker processes would) on one limits folder share K."""
    for i in range(40):
        srv.route(f"/s{i}.jpg", Resp(body=JPEG, delay=0.02))
    limits = str(tmp_path / "shared")
    rigs = [make(threads=4, k=2, limits=limits) for _ in range(2)]
    results: list[list] = [[], []]

    def run(j: int) -> None:
        urls = [srv.url(f"/s{i}.jpg") for i in range(j, 40, 2)]
        results[j] = list(rigs[j].fetcher.fetch_many(urls, str))

    threads = [threading.Thread(target=run, args=(j,)) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(f.status == "ok" for r in results for _, f, _ in r)
    assert sum(len(r) for r in results) == 40
    assert srv.max_in_flight <= 2


def test_rate_limit(make: MakeRig, srv: FetchServer) -> None:
    rate = 20.0
    for i in range(30):
        srv.route(f"/r{i}.jpg", Resp(body=JPEG))
    rig = make(threads=8, k=8, rate=rate, deadline=10.0)
    out = list(rig.fetcher.fetch_many([srv.url(f"/r{i}.jpg") for i in range(30)], str))
    assert all(f.status == "ok" for _, f, _ in out)
    t = sorted(r.t_start for r in srv.requests)
    assert len(t) == 30
    assert t[-1] - t[0] >= (30 - 1) / rate * 0.9
    most = max(sum(1 for x in t if s <= x < s + 1.0) for s in t)
    assert most <= rate + 1


# -- parse_retry_after ----------------------------------------------------------------------


def test_parse_retry_after_seconds() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after("0") == 0.0


def test_parse_retry_after_http_date() -> None:
    now = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after(date, now=now - 30) == pytest.approx(30.0)
    assert parse_retry_after(date, now=now + 30) == 0.0  # in the past
    future = email.utils.formatdate(time.time() + 100, usegmt=True)
    assert 98 <= (parse_retry_after(future) or 0) <= 100.5


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-1", "1.5", "1e3", "0x10", "\xb2", "\xb9\xb2", "Mon, 99 Foo 2020"],
)
def test_parse_retry_after_garbage(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_options_validation() -> None:
    for bad in (
        {"deadline": 0},
        {"connect_timeout": -1},
        {"read_timeout": 0},
        {"attempts": 0},
        {"max_bytes": 0},
        {"threads": 0},
        {"host_connections": 0},
        {"max_redirects": -1},
        {"host_rate": -1},
        {"backoff": -0.1},
    ):
        with pytest.raises(ValueError):
            FetchOptions(**bad)
