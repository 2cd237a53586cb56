"""Checks that the hostile test server in fetchserver.py behaves as it claims.

Uses only raw sockets and http.client, so a bug in the fetcher under test cannot hide one here.
"""

from __future__ import annotations

import http.client
import io
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from fetchserver import FetchServer, Resp, bomb_png, jpeg_bytes, png_bytes
from PIL import Image


@pytest.fixture
def srv() -> Iterator[FetchServer]:
    with FetchServer() as server:
        yield server
    assert server.errors == []


def _conn(srv: FetchServer, timeout: float = 5.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", srv.port, timeout=timeout)


def _get(
    srv: FetchServer, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = _conn(srv)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def _raw_exchange(srv: FetchServer, path: str, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """Send one GET on a fresh socket and read until the server closes: (head, body)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {srv.host_port}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_addresses(srv: FetchServer) -> None:
    assert srv.port > 0
    assert srv.host_port == f"127.0.0.1:{srv.port}"
    assert srv.url("/x.jpg") == f"http://127.0.0.1:{srv.port}/x.jpg"
    assert srv.route("/y.jpg", Resp()) == srv.url("/y.jpg")


def test_content_length_and_keep_alive(srv: FetchServer) -> None:
    body = jpeg_bytes()
    srv.route("/a.jpg", Resp(body=body))
    conn = _conn(srv)
    try:
        for _ in range(2):
            conn.request("GET", "/a.jpg")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Length") == str(len(body))
            assert resp.getheader("Content-Type") == "image/jpeg"
            assert resp.read() == body
    finally:
        conn.close()
    assert srv.wait_idle()
    recs = srv.requests
    assert [r.path for r in recs] == ["/a.jpg", "/a.jpg"]
    assert recs[0].conn_id == recs[1].conn_id
    assert srv.connections == 1
    assert srv.count("/a.jpg") == 2
    assert all(r.t_end is not None and r.t_end >= r.t_start for r in recs)


def test_response_sequence_last_repeats(srv: FetchServer) -> None:
    srv.route("/s", Resp.error(500), Resp(body=b"ok"))
    statuses = []
    for _ in range(3):
        resp, body = _get(srv, "/s")
        statuses.append((resp.status, body))
    assert statuses[0][0] == 500
    assert statuses[1:] == [(200, b"ok"), (200, b"ok")]
    assert srv.count("/s") == 3
    assert srv.connections == 3


def test_query_matches_path_and_is_recorded(srv: FetchServer) -> None:
    srv.route("/q.jpg", Resp(body=b"plain"))
    srv.route("/q.jpg?special=1", Resp(body=b"exact"))
    assert _get(srv, "/q.jpg?x=1&y=2")[1] == b"plain"
    assert _get(srv, "/q.jpg?special=1")[1] == b"exact"
    first = srv.requests[0]
    assert (first.path, first.query, first.method) == ("/q.jpg", "x=1&y=2", "GET")
    assert srv.count("/q.jpg") == 2


def test_unknown_path_404(srv: FetchServer) -> None:
    resp, body = _get(srv, "/nope")
    assert resp.status == 404
    assert resp.getheader("Content-Type") == "text/html"
    assert b"not found" in body
    assert srv.count("/nope") == 1


def test_head_has_length_but_no_body(srv: FetchServer) -> None:
    srv.route("/h", Resp(body=b"12345"))
    conn = _conn(srv)
    try:
        conn.request("HEAD", "/h")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == "5"
        assert resp.read() == b""
        conn.request("GET", "/h")  # the connection is still in sync
        assert conn.getresponse().read() == b"12345"
    finally:
        conn.close()
    assert srv.connections == 1


def test_delay(srv: FetchServer) -> None:
    srv.route("/slow", Resp(body=b"z", delay=0.25))
    t0 = time.monotonic()
    resp, body = _get(srv, "/slow")
    assert time.monotonic() - t0 >= 0.25
    assert (resp.status, body) == (200, b"z")


def test_drip_timing(srv: FetchServer) -> None:
    srv.route("/drip", Resp(body=b"abcd", chunk_size=1, drip=0.1))
    conn = _conn(srv)
    try:
        t0 = time.monotonic()
        conn.request("GET", "/drip")
        resp = conn.getresponse()
        t_head = time.monotonic() - t0
        body = resp.read()
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    assert body == b"abcd"
    assert t_head < 0.1  # the head and first piece come at once; the gaps are in the body
    assert 0.3 <= elapsed < 1.0


def test_chunked_reassembles(srv: FetchServer) -> None:
    body = bytes(range(256)) * 800 + b"tail"  # 204804 bytes: not a multiple of the chunk size
    srv.route("/c", Resp(body=body, chunked=True, chunk_size=7000))
    resp, got = _get(srv, "/c")
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("Content-Length") is None
    assert got == body


def test_chunked_wire_format(srv: FetchServer) -> None:
    srv.route("/cw", Resp(body=b"hello world", chunked=True, chunk_size=5, close=True))
    head, body = _raw_exchange(srv, "/cw")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"5\r\nhello\r\n5\r\n worl\r\n1\r\nd\r\n0\r\n\r\n"


def test_lying_content_length(srv: FetchServer) -> None:
    srv.route("/lie", Resp(body=b"only-this", content_length=10**9))
    t0 = time.monotonic()
    head, body = _raw_exchange(srv, "/lie")
    assert time.monotonic() - t0 < 2.0  # the server closes; it does not leave the client hanging
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: 1000000000" in head
    assert body == b"only-this"


def test_lying_content_length_http_client(srv: FetchServer) -> None:
    srv.route("/lie2", Resp(body=b"short", content_length=100))
    conn = _conn(srv)
    try:
        conn.request("GET", "/lie2")
        resp = conn.getresponse()
        assert resp.getheader("Content-Length") == "100"
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert info.value.partial == b"short"
    finally:
        conn.close()


def test_close_sends_header_and_closes(srv: FetchServer) -> None:
    srv.route("/bye", Resp(body=b"b", close=True))
    head, body = _raw_exchange(srv, "/bye")  # returns only because the server closed
    assert b"Connection: close" in head
    assert body == b"b"


def test_hang_and_prompt_stop() -> None:
    server = FetchServer().start()
    server.route("/hang", Resp(hang=True))
    outcome: list[bytes | str] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                outcome.append(sock.recv(100))
            except OSError as exc:
                outcome.append(type(exc).__name__)

    t = threading.Thread(target=client, daemon=True)
    t.start()
    assert server.wait_requests(1, timeout=2)
    time.sleep(0.2)
    assert outcome == []  # nothing was sent: the client is still blocked
    assert server.in_flight == 1
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.5
    t.join(timeout=2)
    assert outcome in ([b""], ["ConnectionResetError"])  # EOF, never a response
    assert server.errors == []
    assert server.requests[0].t_end is not None


def test_hang_ends_when_client_leaves(srv: FetchServer) -> None:
    srv.route("/hang", Resp(hang=True))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        assert srv.wait_requests(1, timeout=2)
    assert srv.wait_idle(timeout=1.0)  # the handler noticed the EOF and gave up


def test_stop_interrupts_delay_drip_and_idle_keep_alive() -> None:
    server = FetchServer().start()
    server.route("/delay", Resp(delay=30))
    server.route("/drip", Resp(body=b"x" * 100, chunk_size=1, drip=1.0))
    server.route("/ok", Resp(body=b"ok"))
    idle = _conn(server)
    idle.request("GET", "/ok")
    assert idle.getresponse().read() == b"ok"  # this connection now idles in keep-alive
    socks = []
    for path in ("/delay", "/drip"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    assert server.wait_requests(3, timeout=2)
    time.sleep(0.1)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.5
    for s in socks:
        s.close()
    idle.close()
    assert server.errors == []


def test_redirect_and_extra_headers(srv: FetchServer) -> None:
    srv.route("/old", Resp.redirect("/new", code=301, headers={"Set-Cookie": "s=1"}))
    srv.route("/busy", Resp.retry_after(3))
    resp, _ = _get(srv, "/old")
    assert resp.status == 301
    assert resp.getheader("Location") == "/new"
    assert resp.getheader("Set-Cookie") == "s=1"
    resp, _ = _get(srv, "/busy")
    assert (resp.status, resp.getheader("Retry-After")) == (429, "3")


def test_request_headers_recorded_lower_case(srv: FetchServer) -> None:
    srv.route("/h", Resp())
    _get(srv, "/h", headers={"Cookie": "a=b", "X-Custom-Thing": "Yes", "User-Agent": "t/1"})
    rec = srv.requests[0]
    assert rec.headers["cookie"] == "a=b"
    assert rec.headers["x-custom-thing"] == "Yes"
    assert rec.headers["user-agent"] == "t/1"
    assert all(k == k.lower() for k in rec.headers)


def test_max_in_flight_and_reset(srv: FetchServer) -> None:
    srv.route("/d", Resp(body=b"d", delay=0.3))
    results: list[int] = []

    def fetch() -> None:
        results.append(_get(srv, "/d")[0].status)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert results == [200, 200]
    assert srv.max_in_flight >= 2
    assert srv.connections == 2
    assert len({r.conn_id for r in srv.requests}) == 2

    assert srv.wait_idle()
    srv.reset()
    assert (srv.requests, srv.connections, srv.max_in_flight, srv.count("/d")) == ([], 0, 0, 0)
    assert _get(srv, "/d")[1] == b"d"  # routes survive reset
    assert srv.max_in_flight == 1
    assert srv.requests[0].conn_id == 3  # connection ids keep counting


def test_client_disconnect_mid_response_is_quiet(
    srv: FetchServer, capfd: pytest.CaptureFixture[str]
) -> None:
    srv.route("/big", Resp(body=b"y" * 2_000_000, chunk_size=1000, drip=0.001))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
    assert srv.wait_idle(timeout=2.0)
    assert srv.errors == []
    assert capfd.readouterr().err == ""


def test_jpeg_helper() -> None:
    data = jpeg_bytes(80, 30)
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.size, img.mode) == ("JPEG", (80, 30), "RGB")
    with Image.open(io.BytesIO(jpeg_bytes(exif_orientation=6))) as img:
        assert img.size == (64, 48)
        assert img.getexif()[0x0112] == 6


def test_png_helper() -> None:
    with Image.open(io.BytesIO(png_bytes(33, 17))) as img:
        assert (img.format, img.size) == ("PNG", (33, 17))


def test_bomb_png_is_small_and_huge() -> None:
    data = bomb_png()
    assert len(data) < 200_000
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind, width, height, depth, colour = struct.unpack(">I4sIIBB", data[8:26])
    assert (length, kind, width, height, depth, colour) == (13, b"IHDR", 20000, 20000, 1, 0)

    # Walk the chunks: CRCs right, and the IDAT stream inflates (in pieces) to exactly
    # height rows of 1 filter byte + 2500 bytes, all zero. Nothing large is ever held.
    pos, kinds, inflated, nonzero = 8, [], 0, False
    inflater = zlib.decompressobj()
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert zlib.crc32(kind + payload) == crc
        kinds.append(kind)
        if kind == b"IDAT":
            buf = payload
            while buf:
                out = inflater.decompress(buf, 1 << 20)
                inflated += len(out)
                nonzero = nonzero or out.count(0) != len(out)
                buf = inflater.unconsumed_tail
        pos += 12 + n
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]
    assert inflater.eof
    assert inflated == 20000 * 2501
    assert not nonzero
    # Pillow reads only the header and refuses it as a decompression bomb.
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
