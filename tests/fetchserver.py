"""A real, configurable, hostile HTTP/1.1 server on 127.0.0.1 for testing an image fetcher.

Usage::

    with FetchServer() as srv:
        url = srv.route("/a.jpg", Resp(500), Resp(body=jpeg_bytes()))
        ...  # first GET gets a 500, every later one the JPEG
        assert srv.count("/a.jpg") == 2

Routes match the request path *without* its query string (``/a.jpg?x=1`` is served by the
``/a.jpg`` route); a route registered with a ``?`` in it matches that exact target first.
Every request is recorded (``srv.requests``) with its TCP connection id, so tests can check
connection reuse, concurrency (``srv.max_in_flight``) and the headers the client sent.

Hostile behaviours (all per response, see ``Resp``): delay before the status line, drip the
body slowly, chunked encoding, a lying Content-Length, hang forever, close after responding.
``stop()`` interrupts all of them and returns promptly.

Only the standard library is used for the server; the image helpers use Pillow.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import select
import socket
import socketserver
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = [
    "FetchServer",
    "Record",
    "Resp",
    "bomb_png",
    "jpeg_bytes",
    "png_bytes",
]

# Granularity of the loops that wait for stop() or a client disconnect.
_TICK = 0.05


@dataclass
class Resp:
    """One canned response. Defaults: 200, empty image/jpeg body with a true Content-Length."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "image/jpeg"
    # Extra headers; a Content-Type / Content-Length given here replaces the automatic one.
    headers: dict[str, str] = field(default_factory=dict)
    # Seconds to wait before the status line (aborted, without a response, by stop()).
    delay: float = 0.0
    chunked: bool = False
    chunk_size: int = 65536
    # If > 0: sleep this long between chunk_size pieces of the body (also when not chunked).
    drip: float = 0.0
    # Claimed Content-Length (a lie when != len(body)); None = the real length. Ignored when
    # chunked. A lying response always closes the connection afterwards, as framing is broken.
    content_length: int | None = None
    # Close the connection after this response and say so ("Connection: close").
    close: bool = False
    # Read the request, then send nothing until the server stops or the client disconnects.
    hang: bool = False

    @classmethod
    def redirect(cls, location: str, code: int = 302, **kw: Any) -> Resp:
        """A redirect to ``location`` (absolute URL or path) with a tiny HTML body."""
        headers = {"Location": location, **kw.pop("headers", {})}
        kw.setdefault("body", b"<html><body>moved</body></html>")
        kw.setdefault("content_type", "text/html")
        return cls(status=code, headers=headers, **kw)

    @classmethod
    def error(cls, status: int = 500, **kw: Any) -> Resp:
        """An error page (text/html) with the given status."""
        kw.setdefault("body", f"<html><body>error {status}</body></html>".encode())
        kw.setdefault("content_type", "text/html")
        return cls(status=status, **kw)

    @classmethod
    def retry_after(cls, seconds: int | str = 1, status: int = 429, **kw: Any) -> Resp:
        """A throttling answer (429 by default) carrying a Retry-After header."""
        headers = {"Retry-After": str(seconds), **kw.pop("headers", {})}
        return cls.error(status, headers=headers, **kw)


@dataclass
class Record:
    """One request as the server saw it. ``t_end`` stays None until the handler is done."""

    path: str  # without the query string
    query: str  # without the "?"
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    t_start: float  # time.monotonic() when the request head had been read
    t_end: float | None
    conn_id: int  # 1, 2, ... per accepted TCP connection (not reset by reset())
    method: str = "GET"


_NOT_FOUND = Resp.error(404, body=b"<html><body>not found</body></html>")


def _shut(sock: socket.socket) -> None:
    """Shut both directions: wakes a thread blocked on the socket and sends the peer EOF."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _AbortError(Exception):
    """Raised inside a handler to drop the connection without (finishing) a response."""


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: FetchServer

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Keep stderr quiet; unexpected handler exceptions are kept for tests to inspect.
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (ConnectionError, TimeoutError)):
            self.owner._note_error(exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    # Without TCP_NODELAY a keep-alive Python server stalls ~40 ms per request (delayed ACK).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "fetchserver/1"
    sys_version = ""
    server: _HTTPServer
    conn_id: int

    # -- connection lifetime ---------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.conn_id = self.server.owner._open_conn(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass
        finally:
            self.server.owner._close_conn(self.connection)

    def handle(self) -> None:
        # A client that vanishes mid-response, or stop() shutting the socket, is not an error.
        try:
            super().handle()
        except (ConnectionError, TimeoutError):
            pass
        except (OSError, ValueError):
            if not self.server.owner._stopping.is_set():
                raise

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- requests ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        rec = Record(
            path=split.path or "/",
            query=split.query,
            headers=headers,
            t_start=time.monotonic(),
            t_end=None,
            conn_id=self.conn_id,
            method=self.command,
        )
        resp = owner._begin(rec, self.path)
        try:
            self._respond(resp, head)
        except _AbortError:
            self.close_connection = True
        finally:
            owner._end(rec)

    def _respond(self, resp: Resp, head: bool) -> None:
        stop = self.server.owner._stopping
        if resp.hang:
            self._hang()
            raise _AbortError
        if resp.delay > 0 and stop.wait(resp.delay):
            raise _AbortError

        status = resp.status
        bodyless = 100 <= status < 200 or status in (204, 304)
        body = b"" if bodyless else resp.body
        extra = {k.lower() for k in resp.headers}
        lying = False

        self.send_response(status)
        if resp.content_type is not None and "content-type" not in extra:
            self.send_header("Content-Type", resp.content_type)
        if resp.chunked and not bodyless:
            self.send_header("Transfer-Encoding", "chunked")
        elif "content-length" not in extra and (not bodyless or resp.content_length is not None):
            length = len(body) if resp.content_length is None else resp.content_length
            lying = length != len(body)
            self.send_header("Content-Length", str(length))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if resp.close:
            self.send_header("Connection", "close")
        self.end_headers()  # flushes the head in one write

        if not head and not bodyless:
            self._send_body(body, resp)
        if resp.close or lying:
            self.close_connection = True

    def _send_body(self, body: bytes, resp: Resp) -> None:
        stop = self.server.owner._stopping
        size = max(1, resp.chunk_size)
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        for i, piece in enumerate(pieces):
            if i and resp.drip > 0 and stop.wait(resp.drip):
                raise _AbortError
            if resp.chunked:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            else:
                self.wfile.write(piece)
        if resp.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _hang(self) -> None:
        """Wait, sending nothing, until stop() or until the client closes its end."""
        stop = self.server.owner._stopping
        sock = self.connection
        while not stop.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], _TICK)
                if readable and not sock.recv(1, socket.MSG_PEEK):
                    return  # EOF: the client gave up
            except (OSError, ValueError):
                return
            if readable:
                stop.wait(_TICK)  # pipelined bytes keep it readable; do not spin


class FetchServer:
    """Threaded HTTP/1.1 test server on 127.0.0.1:<random port>. Thread-safe."""

    host: ClassVar[str] = "127.0.0.1"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._routes: dict[str, list[Resp]] = {}
        self._served: dict[str, int] = {}  # route key -> responses handed out so far
        self._records: list[Record] = []
        self._errors: list[BaseException] = []
        self._socks: set[socket.socket] = set()
        self._conn_seq = 0
        self._connections = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.not_found: Resp = _NOT_FOUND  # served for paths without a route

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FetchServer:
        if self._httpd is not None:
            raise RuntimeError("FetchServer already started")
        self._stopping = threading.Event()
        httpd = _HTTPServer((self.host, 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        # A short poll interval so that stop() -> shutdown() returns quickly.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _TICK},
            name=f"fetchserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; interrupts hanging, delayed and dripping handlers. Idempotent."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        # Wake handlers blocked reading the next keep-alive request (or writing to a stuck peer).
        with self._cond:
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)
        if thread is not None:
            thread.join(timeout=1.0)
        # Give handler threads a moment to leave so tests do not overlap; they are daemons.
        with self._cond:
            self._cond.wait_for(lambda: not self._socks, timeout=0.5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FetchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FetchServer not started")
        return int(self._httpd.server_address[1])

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://{self.host_port}{path}"

    # -- configuration --------------------------------------------------------------------------
    def route(self, path: str, *responses: Resp) -> str:
        """Serve ``responses`` in turn for ``path`` (last one repeats); returns its URL.

        Registering a path again replaces its sequence and starts it over.
        """
        if not responses:
            raise ValueError("route() needs at least one Resp")
        with self._cond:
            self._routes[path] = list(responses)
            self._served[path] = 0
        return self.url(path)

    def reset(self) -> None:
        """Forget records, errors and counters; routes (and where each sequence is) stay."""
        with self._cond:
            self._records.clear()
            self._errors.clear()
            self._connections = 0
            self._max_in_flight = self._in_flight

    # -- observations ---------------------------------------------------------------------------
    @property
    def requests(self) -> list[Record]:
        """Snapshot of the records, in arrival order (records of live requests still update)."""
        with self._cond:
            return list(self._records)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start (or reset)."""
        with self._cond:
            return self._connections

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Peak number of requests being handled at once, over all connections."""
        with self._cond:
            return self._max_in_flight

    @property
    def errors(self) -> list[BaseException]:
        """Unexpected exceptions in handlers (instead of tracebacks on stderr); should be []."""
        with self._cond:
            return list(self._errors)

    def count(self, path: str) -> int:
        """Requests seen for ``path`` (compared without query string)."""
        with self._cond:
            return sum(1 for r in self._records if r.path == path)

    def wait_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests have arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._records) >= n, timeout=timeout)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no request is being handled (every t_end set); False on timeout.

        A client can have read the last byte a moment before the handler finishes its
        bookkeeping, so call this before asserting on t_end, in_flight or reset().
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    # -- called by handler threads ---------------------------------------------------------
    def _open_conn(self, sock: socket.socket) -> int:
        with self._cond:
            self._conn_seq += 1
            self._connections += 1
            self._socks.add(sock)
            conn_id = self._conn_seq
        if self._stopping.is_set():  # accepted just as stop() ran: do not linger
            _shut(sock)
        return conn_id

    def _close_conn(self, sock: socket.socket) -> None:
        with self._cond:
            self._socks.discard(sock)
            self._cond.notify_all()

    def _begin(self, rec: Record, target: str) -> Resp:
        with self._cond:
            self._records.append(rec)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._cond.notify_all()
            key = target if target in self._routes else rec.path
            seq = self._routes.get(key)
            if seq is None:
                return self.not_found
            i = self._served[key]
            self._served[key] = i + 1
            return seq[min(i, len(seq) - 1)]

    def _end(self, rec: Record) -> None:
        with self._cond:
            rec.t_end = time.monotonic()
            self._in_flight -= 1
            self._cond.notify_all()

    def _note_error(self, exc: BaseException) -> None:
        with self._cond:
            self._errors.append(exc)


# -- image helpers ----------------------------------------------------------------------------


def jpeg_bytes(
    width: int = 64,
    height: int = 48,
    color: tuple[int, int, int] = (200, 120, 80),
    quality: int = 90,
    exif_orientation: int | None = None,
) -> bytes:
    """A solid-colour RGB JPEG; with ``exif_orientation`` it carries that EXIF Orientation tag
    (the stored pixel size stays width x height)."""
    from PIL import Image

    img = Image.new("RGB", (width, height), color)
    kw: dict[str, Any] = {"quality": quality}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation  # Orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def png_bytes(
    width: int = 64, height: int = 48, color: tuple[int, int, int] = (80, 160, 240)
) -> bytes:
    """A solid-colour RGB PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=4)
def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid all-black 1-bit greyscale PNG of width x height that is only tens of KB.

    A decompression bomb: 20000x20000 is 400 Mpx, ~50 MB of raw scanlines. The IDAT stream is
    compressed incrementally so building it never holds the raw image in memory. Cached.
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte "None" + packed 1-bit pixels
    rows_per_feed = max(1, (1 << 20) // len(row))  # feed ~1 MB at a time
    comp = zlib.compressobj(9)
    parts: list[bytes] = []
    left = height
    while left > 0:
        n = min(rows_per_feed, left)
        parts.append(comp.compress(row * n))
        left -= n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey, no interlace
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        ]
    )
