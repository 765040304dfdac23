"""The net boundary: whatever the URL or the peer does, only MMDataError subclasses come out.

Bad URLs, refused ports and peers speaking garbage (raw loopback TCP servers) are thrown
at HttpClient.send, ws.connect and WsConnection.recv.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from mmdata.errors import ConnectionFailed, ConnectionLost, HttpError, MMDataError
from mmdata.net.http import HttpClient
from mmdata.net.ws import WsConfig, connect
from mmdata.types import HttpRequest
from tests.net.test_http import closed_port
from tests.net.test_ws import handshake_then, run, tcp_server

WS = WsConfig(open_timeout_s=2.0, close_timeout_s=0.1, max_frame_bytes=1000)


class RawHttpServer:
    """Loopback TCP server answering every connection with the same raw bytes, then closing."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.02)  # lets the accept loop notice `done`
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                conn.sendall(self.payload)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def raw_http(request: pytest.FixtureRequest) -> Iterator[RawHttpServer]:
    server = RawHttpServer(request.param)
    yield server
    server.close()


def client(**kwargs: Any) -> HttpClient:
    return HttpClient(sleep=lambda _: None, rng=random.Random(0), **{"retries": 1, **kwargs})


# -- HTTP ---------------------------------------------------------------------------------

BAD_HTTP_URLS = [
    "",
    "not a url",
    "http://",
    "ftp://127.0.0.1/",
    "http://[::1",
    "http://127.0.0.1:99999/",
    "ws://127.0.0.1/",
]


@pytest.mark.parametrize("url", BAD_HTTP_URLS)
def test_http_bad_urls_raise_http_error(url: str) -> None:
    with client() as http, pytest.raises(HttpError):
        http.send(HttpRequest("GET", url))


def test_http_bad_method_raises_http_error() -> None:
    with client() as http, pytest.raises(HttpError):
        http.send(HttpRequest("G ET\r\n", f"http://127.0.0.1:{closed_port()}/"))


def test_http_refused_port_raises_connection_failed() -> None:
    with client() as http, pytest.raises(ConnectionFailed):
        http.send(HttpRequest("GET", f"http://127.0.0.1:{closed_port()}/"))


@pytest.mark.parametrize(
    "raw_http",
    [
        pytest.param(b"", id="closed-without-reply"),
        pytest.param(b"garbage\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", id="truncated-body"),
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", id="bad-chunk"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 5\r\n\r\nnotgz", id="bad-gzip"
        ),
        pytest.param(b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", id="status-999"),
        pytest.param(b"HTTP/1.1 302 Found\r\nLocation: /\r\nContent-Length: 0\r\n\r\n", id="redirect-loop"),
    ],
    indirect=True,
)
def test_http_garbage_responses_raise_mmdata_errors(raw_http: RawHttpServer) -> None:
    with client() as http, pytest.raises(MMDataError) as caught:
        http.send(HttpRequest("GET", raw_http.url))
    assert isinstance(caught.value, ConnectionFailed | HttpError)


@pytest.mark.parametrize(
    "raw_http",
    [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=bogus\r\nContent-Length: 3\r\n\r\n\xff\xfeA"],
    indirect=True,
)
def test_http_undecodable_body_is_text_not_an_exception(raw_http: RawHttpServer) -> None:
    with client() as http:
        assert http.send(HttpRequest("GET", raw_http.url)).text.endswith("A")


class ExplodingSession(requests.Session):
    """A session whose transport fails in a way no mapping anticipated."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        raise KeyError("surprise")


def test_http_unforeseen_exception_is_still_mapped() -> None:
    with ExplodingSession() as session, client(session=session) as http, pytest.raises(HttpError) as caught:
        http.send(HttpRequest("GET", "http://127.0.0.1:1/"))
    assert isinstance(caught.value.__cause__, KeyError)


# -- WebSocket ------------------------------------------------------------------------------

BAD_WS_URLS = [
    "",
    "http://127.0.0.1/",
    "ws://",
    "ws://[::1",
    "ws://127.0.0.1:99999/",
    "not a url",
]


@pytest.mark.parametrize("url", BAD_WS_URLS)
def test_ws_bad_urls_raise_connection_failed(url: str) -> None:
    async def body() -> None:
        with pytest.raises(ConnectionFailed):
            await connect(url, WS)

    run(body())


def test_ws_refused_port_raises_connection_failed() -> None:
    async def body() -> None:
        with pytest.raises(ConnectionFailed):
            await connect(f"ws://127.0.0.1:{closed_port()}/", WS)

    run(body())


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"", id="closed-without-reply"),
        pytest.param(b"garbage\r\n\r\n", id="not-http"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", id="not-upgraded"),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", id="101-without-headers"),
    ],
)
def test_ws_garbage_handshakes_raise_connection_failed(reply: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    async def body() -> None:
        async with tcp_server(answer) as port:
            with pytest.raises(ConnectionFailed):
                await connect(f"ws://127.0.0.1:{port}/", WS)

    run(body())


def test_ws_rejected_handshake_raises_connection_failed() -> None:
    def reject(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "go away\n")

    async def handler(ws: ServerConnection) -> None:
        raise AssertionError("never reached")

    async def body() -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=reject) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            with pytest.raises(ConnectionFailed):
                await connect(f"ws://127.0.0.1:{port}/", WS)

    run(body())


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(b"\xff\xff\xff\xff", None, id="invalid-opcode"),
        pytest.param(b"\x81\x85abcd12345", None, id="masked-server-frame"),
        pytest.param(b"\x81\x7e\x07\xd0" + b"a" * 2000, None, id="frame-over-max-size"),
        pytest.param(b"\x88\x02\x03\xe8", 1000, id="close-frame"),
    ],
)
def test_ws_garbage_frames_raise_connection_lost(frames: bytes, code: int | None) -> None:
    async def body() -> None:
        async with tcp_server(handshake_then(frames)) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/", WS)
            with pytest.raises(ConnectionLost) as caught:
                await ws.recv()
            assert caught.value.code == code
            await ws.close()

    run(body())


def test_ws_invalid_utf8_text_is_replaced_not_fatal() -> None:
    async def body() -> None:
        async with tcp_server(handshake_then(b"\x81\x03\xff\xfeA")) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/", WS)
            assert await ws.recv() == "\ufffd\ufffdA"
            await ws.close()

    run(body())
