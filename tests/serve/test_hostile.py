"""Hostile requests against the real relay and REST servers, over loopback.

The servers run on an event loop in a background thread (``start_servers`` on port 0 with
the default host) over a copy of the recorded days. Beside the data root lies ``secret/``:
a complete stream folder and a password file, the target of every traversal below. Inside
the root lie folders whose names look like what a traversal collapses to (``etcpasswd``,
``..secret``, ``%2e%2e``), a lower-case twin of a symbol and an unknown exchange's folder.

Every hostile value of every query parameter (relay ``/ws?exchange=&symbol=&from=&snapshot=``,
REST ``/snapshot?exchange=&symbol=&levels=``) must get a JSON ``{"error": ...}`` with a 4xx
status — plain HTTP from the REST server, the HTTP answer to the WebSocket handshake from
the relay — never a 500, a traceback or data from outside the data root, and the server must
keep serving. Requests a client library would not send (raw bytes, spaces, over-long lines,
duplicate headers) go through raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from mmdata.serve.app import ServeOptions, Servers, start_servers
from mmdata.serve.params import MAX_VALUE_CHARS

T = TypeVar("T")

#: Seconds any single network wait may take.
TIMEOUT = 5.0
#: Text of the files outside the data root: it must never appear in an answer.
SECRET = "TOP-SECRET-c0ffee"
VALID = "exchange=kraken&symbol=BTCUSD"
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


# -- the servers ---------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """ERROR records of the server side (websockets, asyncio, mmdata): a 500 or a crashed task."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_LOGGERS = ("websockets", "asyncio", "mmdata")


class Running:
    """``start_servers`` on an event loop in a background thread, for blocking test clients."""

    def __init__(self, options: ServeOptions) -> None:
        self.errors = ErrorLog()
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self.errors)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="hostile-serve", daemon=True)
        self.thread.start()
        try:
            self.servers: Servers = self.run(start_servers(options))
        except BaseException:
            self._stop_loop()
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 3 * TIMEOUT) -> T:
        """Run ``coro`` on the servers' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def relay_port(self) -> int:
        assert self.servers.relay is not None
        return self.servers.relay.port

    @property
    def rest_port(self) -> int:
        assert self.servers.rest is not None
        return self.servers.rest.port

    @contextlib.contextmanager
    def no_server_errors(self) -> Iterator[None]:
        """Fail when the block made the server side log an error (a 500, a crashed handler)."""
        before = len(self.errors.records)
        yield
        new = self.errors.records[before:]
        assert not new, [r.getMessage() for r in new]

    def hub_roots(self) -> list[Path]:
        """The stream folder of every hub the servers started."""

        async def roots() -> list[Path]:
            return [hub.stream.root for hub in self.servers.hubs.hubs.values()]

        return self.run(roots())

    def close(self) -> None:
        try:
            self.run(self._shutdown(), 30)
        finally:
            self._stop_loop()

    async def _shutdown(self) -> None:
        await self.servers.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()
        for name in _LOGGERS:
            logging.getLogger(name).removeHandler(self.errors)


@dataclass
class Site:
    """A data root, the secret beside it and the servers running on it."""

    base: Path
    data: Path
    secret: Path
    servers: Running


def build_root(recorded: Path, base: Path) -> tuple[Path, Path]:
    """``base/data`` (the recorded streams and look-alike folders) and ``base/secret`` beside it."""
    data = base / "data"
    shutil.copytree(recorded, data)
    stream = recorded / "kraken" / "BTCUSD"
    secret = base / "secret"
    # A complete stream outside the data root: data/kraken/../../secret/BTCUSD and
    # data/../secret/BTCUSD both land here.
    shutil.copytree(stream, secret / "BTCUSD")
    (secret / "passwd").write_text(f"root:x:0:0:{SECRET}\n")
    (secret / "BTCUSD" / "SECRET.txt").write_text(SECRET)
    # Names a traversal collapses to, inside the root (empty: a 404 if resolved at all).
    for name in ("etcpasswd", "..secret", "%2e%2e"):
        (data / "kraken" / name).mkdir()
    (data / "binance" / "btcusdt").mkdir()  # a case twin of BTCUSDT: BtcUsdt is ambiguous
    shutil.copytree(stream, data / "coinbase" / "BTCUSD")  # an unknown exchange's folder
    return data, secret


@pytest.fixture(scope="module")
def site(recorded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("hostile")
    data, secret = build_root(recorded_data, base)
    running = Running(
        ServeOptions(data, relay_port=0, rest_port=0, max_connections=50, max_message_bytes=1024)
    )
    try:
        yield Site(base, data, secret, running)
    finally:
        running.close()


# -- clients ---------------------------------------------------------------------------------------


@dataclass
class Answer:
    """An HTTP answer (``status`` 0: the server closed the connection without one)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def get(port: int, target: str, method: str = "GET") -> Answer:
    """One request with http.client (which refuses control characters and non-ASCII)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def send_raw(port: int, request: bytes, *, eof: bool = False) -> Answer:
    """Send raw bytes; read one answer (a 101 head, or a head and its Content-Length body), or
    until the server closes. ``eof``: half-close after sending (a request that never ends)."""
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while not _complete(buf):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
    if not buf:
        return Answer(0, {}, b"")
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*$")


def _complete(buf: bytes) -> bool:
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    if head.startswith(b"HTTP/1.1 101 "):
        return True
    length = _CONTENT_LENGTH.search(head)
    return length is not None and len(body) >= int(length.group(1))


def raw_get(target: bytes, *extra_headers: bytes, method: bytes = b"GET") -> bytes:
    """A request as bytes, the target and headers exactly as given."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *extra_headers, b"", b""]
    return b"\r\n".join(lines)


UPGRADE = (
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Sec-WebSocket-Key: " + WS_KEY,
    b"Sec-WebSocket-Version: 13",
)


def ws_refused(port: int, target: str) -> Answer:
    """A WebSocket handshake the relay must refuse: its HTTP answer."""
    with (
        pytest.raises(InvalidStatus) as err,
        connect(f"ws://127.0.0.1:{port}{target}", open_timeout=TIMEOUT, close_timeout=TIMEOUT),
    ):
        pass  # pragma: no cover - the handshake is refused
    resp = err.value.response
    return Answer(resp.status_code, {k.lower(): v for k, v in resp.headers.raw_items()}, resp.body or b"")


def ws_open(port: int, target: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}{target}", open_timeout=TIMEOUT, close_timeout=TIMEOUT)


def first_message(port: int, target: str) -> dict[str, Any]:
    """Connect to the relay, return its first message, leave."""
    with ws_open(port, target) as ws:
        return json.loads(ws.recv(timeout=TIMEOUT))


# -- checks ----------------------------------------------------------------------------------------


def assert_clean(answer: Answer, *, busy_ok: bool = False) -> None:
    """No traceback, no secret, never a 5xx (but a 503 "busy" where ``busy_ok``)."""
    text = bytes(answer.body).decode("utf-8", "replace")
    for needle in ("Traceback", 'File "', SECRET, "root:x:0"):
        assert needle not in text, text
    assert not 500 <= answer.status < 600 or (busy_ok and answer.status == 503), answer


def assert_json_error(answer: Answer, statuses: tuple[int, ...] = (400, 404, 414)) -> str:
    """A JSON ``{"error": text}`` with one of ``statuses``; returns the text."""
    assert_clean(answer, busy_ok=503 in statuses)
    assert answer.status in statuses, answer
    assert answer.headers.get("content-type") == "application/json", answer
    doc = answer.json()
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert isinstance(doc["error"], str) and doc["error"], doc
    return doc["error"]


def assert_printable_ascii(text: str) -> None:
    assert text.isascii() and text.isprintable(), repr(text)


def assert_unavailable(port: int, target: str) -> None:
    """The relay accepted the handshake of a stream without data: one ``unavailable`` status, 1013."""
    with ws_open(port, target) as ws:
        msg = json.loads(ws.recv(timeout=TIMEOUT))
        assert msg["type"] == "status" and msg["data"]["status"] == "unavailable", msg
        assert SECRET not in json.dumps(msg)
        closed = drain_until_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1013, closed


def assert_inside(site: Site) -> None:
    """Every stream a server opened is a folder inside the data root."""
    root = site.data.resolve()
    for path in site.servers.hub_roots():
        assert path.resolve().is_relative_to(root), path
        assert path.resolve().parent.parent == root, path


def assert_serving(site: Site) -> None:
    """Both servers still answer (cheap: /health of each)."""
    for port in (site.servers.relay_port, site.servers.rest_port):
        answer = get(port, "/health")
        assert answer.status == 200 and answer.json()["ok"] is True


def assert_valid_requests_work(site: Site) -> None:
    """A real snapshot from the REST server and a real subscription from the relay."""
    answer = get(site.servers.rest_port, f"/snapshot?{VALID}&levels=3")
    assert answer.status == 200, answer
    book = answer.json()
    assert book["exchange"] == "kraken" and book["state"] in ("SYNCED", "STOPPED")
    assert 0 < len(book["bids"]) <= 3 and 0 < len(book["asks"]) <= 3
    msg = first_message(site.servers.relay_port, f"/ws?{VALID}")
    assert msg["type"] == "status" and msg["data"]["status"] == "subscribed", msg


# -- hostile values ----------------------------------------------------------------------------------

#: Query-encoded hostile values, each refused whatever parameter carries it.
HOSTILE = {
    "dotdot": "../secret",
    "dotdot-deep": "../../secret/BTCUSD",
    "dotdot-encoded": "..%2F..%2Fsecret",
    "dotdot-double-encoded": "..%252F..%252Fsecret",
    "dots-encoded": "%2e%2e%2f%2e%2e%2fsecret",
    "dots-only": "%2E%2E",
    "dot": ".",
    "absolute": "/etc/passwd",
    "absolute-encoded": "%2Fetc%2Fpasswd%00",
    "absolute-secret": "%2Ftmp%2Fsecret%2FBTCUSD%2F..",
    "nul": "BTC%00USD",
    "nul-only": "%00",
    "backslash": "..%5C..%5Csecret",
    "backslash-literal": "..\\..\\secret",
    "newline": "BTC%0AUSD",
    "crlf-header": "BTC%0D%0ASet-Cookie:%20pwn=1",
    "tab": "BTC%09USD",
    "del": "BTC%7FUSD",
    "e-acute": "BTC%C3%A9USD",
    "overlong-utf8-slash": "..%C0%AF..%C0%AFsecret",
    "invalid-utf8": "BTC%FFUSD",
    "lone-surrogate": "%ED%A0%80",
    "fullwidth-digit": "%EF%BC%95",
    "ellipsis": "%E2%80%A6",
    "too-long-65": "A" * (MAX_VALUE_CHARS + 1),
    "too-long-1000": "B" * 1000,
    "too-long-5000": "C" * 5000,
    "semicolon": "tail;rm%20-rf%20/",
    "shell": "$(id)",
    "space": "%20",
    "plus-space": "+",
    "ampersand-encoded": "x%26exchange%3Dkraken",
    "glob": "*",
    "secret-folder": "secret",
}

#: Hostile values that make the query string longer than 1024 characters: 414.
TOO_LONG_QUERY = {"too-long-1000", "too-long-5000"}


def hostile_query(base: dict[str, str], name: str, value: str) -> str:
    params = {**base, name: value}
    return "&".join(f"{k}={v}" for k, v in params.items())


RELAY_BASE = {"exchange": "kraken", "symbol": "BTCUSD", "from": "tail", "snapshot": "1"}
REST_BASE = {"exchange": "kraken", "symbol": "BTCUSD", "levels": "5"}


def cases(base: dict[str, str]) -> list[Any]:
    return [pytest.param(name, key, id=f"{name}={key}") for name in base for key in HOSTILE]


def check_refusal(site: Site, answer: Answer, key: str) -> None:
    text = assert_json_error(answer, (414,) if key in TOO_LONG_QUERY else (400, 404))
    assert_printable_ascii(text)
    assert_inside(site)
    assert_serving(site)


@pytest.mark.parametrize(("name", "key"), cases(REST_BASE))
def test_rest_refuses_hostile_values(site: Site, name: str, key: str) -> None:
    with site.servers.no_server_errors():
        answer = get(site.servers.rest_port, "/snapshot?" + hostile_query(REST_BASE, name, HOSTILE[key]))
        check_refusal(site, answer, key)


#: (parameter, value) naming a folder inside the root that holds no data (``/etc/passwd`` ->
#: ``etcpasswd``): the relay accepts the handshake, then says ``unavailable`` and closes (1013).
EMPTY_FOLDER = {("symbol", "absolute")}


@pytest.mark.parametrize(("name", "key"), cases(RELAY_BASE))
def test_relay_refuses_hostile_values(site: Site, name: str, key: str) -> None:
    target = "/ws?" + hostile_query(RELAY_BASE, name, HOSTILE[key])
    with site.servers.no_server_errors():
        if (name, key) in EMPTY_FOLDER:
            assert_unavailable(site.servers.relay_port, target)
            assert_inside(site)
            assert_serving(site)
        else:
            check_refusal(site, ws_refused(site.servers.relay_port, target), key)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        pytest.param("", 400, id="no-query"),
        pytest.param("exchange=&symbol=BTCUSD", 400, id="empty-exchange"),
        pytest.param("exchange=kraken&symbol=", 400, id="empty-symbol"),
        pytest.param("exchange=kraken", 400, id="no-symbol"),
        pytest.param("symbol=BTCUSD", 400, id="no-exchange"),
        pytest.param("exchange=coinbase&symbol=BTCUSD", 400, id="unknown-exchange-with-a-folder"),
        pytest.param("exchange=secret&symbol=BTCUSD", 400, id="exchange-named-like-the-secret"),
        pytest.param("exchange=..&symbol=secret", 400, id="exchange-dotdot"),
        pytest.param("exchange=kraken%2F..&symbol=BTCUSD", 400, id="exchange-kraken-dotdot"),
        pytest.param("exchange=KRAKEN%00&symbol=BTCUSD", 400, id="exchange-case-nul"),
        pytest.param("exchange=binance&symbol=BTCUSD", 404, id="symbol-of-another-exchange"),
        pytest.param("exchange=kraken&symbol=tBTCUSD", 404, id="symbol-of-bitfinex"),
        pytest.param("exchange=binance&symbol=BtcUsdt", 404, id="case-variant-ambiguous"),
        pytest.param("exchange=kraken&symbol=ETHUSD", 404, id="unrecorded-symbol"),
        pytest.param("exchange=kraken&symbol=secret", 404, id="secret-is-not-listed"),
        pytest.param("exchange=kraken&symbol=..secret", 400, id="dotdot-folder-exists"),
        pytest.param("exchange=kraken&symbol=%252e%252e", 400, id="percent-folder-exists"),
        pytest.param("exchange=kraken&symbol=BTCUSD&symbol=..%2Fsecret", 400, id="repeated-last-hostile"),
        pytest.param("exchange=kraken&exchange=..&symbol=BTCUSD", 400, id="repeated-exchange"),
        pytest.param("&".join(f"k{i}=v" for i in range(17)), 400, id="17-fields"),
        pytest.param(VALID + "&k=v" * 100, 400, id="100-fields"),
        pytest.param(VALID + "&" * 20, 400, id="20-empty-fields"),
        pytest.param("%ZZ=%GG&exchange=kraken&symbol=BT%", 400, id="broken-percent-escapes"),
        pytest.param(VALID + "&x=%00", 400, id="unknown-name-hostile-value"),
        pytest.param("e" * 2000 + "=1", 414, id="long-key"),
        pytest.param("exchange=kraken&symbol=" + "B" * 1001, 400, id="value-1001-query-1024"),
        pytest.param("exchange=kraken&symbol=" + "B" * 1002, 414, id="value-1002-query-1025"),
    ],
)
def test_both_servers_refuse_bad_streams(site: Site, query: str, status: int) -> None:
    with site.servers.no_server_errors():
        rest = get(site.servers.rest_port, f"/snapshot?{query}")
        relay = ws_refused(site.servers.relay_port, f"/ws?{query}")
        for answer in (rest, relay):
            assert_printable_ascii(assert_json_error(answer, (status,)))
        assert rest.body == relay.body  # one check for both servers
        assert_inside(site)
        assert_serving(site)


@pytest.mark.parametrize(
    "value",
    [
        *("-1", "0", "5001", "1e3", "0x10", "%205", "5%20", "+5", "%2B5", "1_000", "5.0", "NaN", "inf"),
        *("%D9%A3", "%C2%B2", "9" * 60, "9" * MAX_VALUE_CHARS, "1" + "0" * 20, "0" * 22 + "5001"),
    ],
)
def test_rest_levels_must_be_a_small_integer(site: Site, value: str) -> None:
    with site.servers.no_server_errors():
        answer = get(site.servers.rest_port, f"/snapshot?{VALID}&levels={value}")
        text = assert_json_error(answer, (400,))
        assert text.startswith("levels "), text
        assert_serving(site)


@pytest.mark.parametrize(("value", "count"), [("", None), ("1", 1), ("0005", 5), ("5000", None)])
def test_rest_levels_within_range_answer(site: Site, value: str, count: int | None) -> None:
    answer = get(site.servers.rest_port, f"/snapshot?{VALID}&levels={value}")
    assert answer.status == 200, answer
    book = answer.json()
    if count is not None:
        assert len(book["bids"]) == count and len(book["asks"]) == count


@pytest.mark.parametrize(
    "query",
    [
        "from=START",
        "from=end",
        "from=tail;rm",
        "from=tail%00",
        "from=Tail",
        "from=tail%20",
        "from=..%2Ftail",
        "from=-1",
        "snapshot=maybe",
        "snapshot=2",
        "snapshot=-1",
        "snapshot=yes%00",
        "snapshot=%20",
        "snapshot=on",
        "from=start&snapshot=maybe",
    ],
)
def test_relay_refuses_bad_from_and_snapshot(site: Site, query: str) -> None:
    with site.servers.no_server_errors():
        answer = ws_refused(site.servers.relay_port, f"/ws?{VALID}&{query}")
        text = assert_json_error(answer, (400,))
        assert text.startswith(("from ", "snapshot ")), text
        assert_serving(site)


@pytest.mark.parametrize(
    "query",
    [
        "exchange=KRAKEN&symbol=btc-usd",
        "exchange=%20kraken%20&symbol=BTC%2FUSD",
        "exchange=kraken&symbol=BTC:USD&from=&snapshot=",
        "exchange=kraken&symbol=BTCUSD&snapshot=TRUE",
        "exchange=kraken&symbol=BTCUSD&snapshot=No&from=tail",
        "exchange=binance&symbol=BTCUSDT",
        "exchange=bitfinex&symbol=TBTCUSD",
        "symbol=..%2Fsecret&symbol=BTCUSD&exchange=kraken",  # the last value wins
        "exchange=kraken&symbol=BTCUSD&evil=..%2F..%2Fsecret",  # unknown names are ignored
    ],
)
def test_relay_tolerated_spellings_subscribe_inside_the_root(site: Site, query: str) -> None:
    with site.servers.no_server_errors():
        msg = first_message(site.servers.relay_port, f"/ws?{query}")
        assert msg["type"] == "status" and msg["data"]["status"] == "subscribed", msg
        assert_inside(site)


@pytest.mark.parametrize(
    "query",
    [
        "exchange=KRAKEN&symbol=btc-usd",
        "symbol=..%2Fsecret&symbol=BTCUSD&exchange=kraken",
        "exchange=kraken&symbol=BTCUSD&evil=..%2F..%2Fsecret",
        "exchange=kraken&symbol=BTCUSD&levels=",
    ],
)
def test_rest_tolerated_spellings_answer_from_inside_the_root(site: Site, query: str) -> None:
    with site.servers.no_server_errors():
        answer = get(site.servers.rest_port, f"/snapshot?{query}")
        assert answer.status == 200 and answer.json()["exchange"] == "kraken"
        assert_clean(answer)
        assert_inside(site)


@pytest.mark.parametrize("symbol", ["/etc/passwd", "%2Fetc%2Fpasswd", "etc-passwd", "ETCPASSWD"])
def test_folder_without_data_is_404_on_rest_and_unavailable_on_the_relay(site: Site, symbol: str) -> None:
    """``/etc/passwd`` collapses to the (empty) ``etcpasswd`` folder *inside* the root: no data."""
    with site.servers.no_server_errors():
        answer = get(site.servers.rest_port, f"/snapshot?exchange=kraken&symbol={symbol}")
        assert "no recorded" in assert_json_error(answer, (404,))
        assert_unavailable(site.servers.relay_port, f"/ws?exchange=kraken&symbol={symbol}")
        assert_inside(site)
        assert any(p.name == "etcpasswd" for p in site.servers.hub_roots())


# -- the path part -------------------------------------------------------------------------------------

PATHS = [
    "/../../etc/passwd",
    "/../secret/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/..%2F..%2Fsecret%2Fpasswd",
    "/snapshot/../health",
    "/snapshot/..%2F..%2Fsecret",
    "/health/../../secret/passwd",
    "/ws/../snapshot",
    "/./snapshot",
    "/snapshot/",
    "/SNAPSHOT",
    "/snapshot%00",
    "/snapshot%2F",
    "//etc/passwd",
    "/secret/BTCUSD/SECRET.txt",
    "/data/kraken/BTCUSD",
    "/kraken/BTCUSD",
    "/" + "a" * 3000,
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("server", ["rest", "relay"])
def test_path_traversal_in_the_path_is_404(site: Site, server: str, path: str) -> None:
    port = site.servers.rest_port if server == "rest" else site.servers.relay_port
    with site.servers.no_server_errors():
        for query in ("", f"?{VALID}"):
            answer = get(port, path + query)
            assert "unknown path" in assert_json_error(answer, (404,))
        if server == "relay":
            answer = ws_refused(port, path + f"?{VALID}")
            assert "unknown path" in assert_json_error(answer, (404,))
        assert_serving(site)


# -- raw requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["rest", "relay"])
@pytest.mark.parametrize(
    "target",
    [
        pytest.param(b"/PATH?exchange=kraken&symbol=BTC%00USD", id="encoded-nul"),
        pytest.param(b"/PATH?exchange=kraken&symbol=BTC\x00USD", id="literal-nul"),
        pytest.param(b"/PATH?exchange=kraken&symbol=BTC\x1b[2JUSD", id="literal-escape"),
        pytest.param(b"/PATH?exchange=kr\x7faken&symbol=BTCUSD", id="literal-del"),
        pytest.param(b"/PATH?exchange=kraken&symbol=..\\..\\secret", id="literal-backslash"),
        pytest.param(b"/PATH?exchange=kraken&symbol=C:\\secret", id="windows-drive"),
        pytest.param(b"/PATH?exchange=kraken&symbol=" + b"%41" * 300, id="encoded-too-long"),
    ],
)
def test_raw_control_bytes_in_the_target_get_json_400(site: Site, server: str, target: bytes) -> None:
    port, path = (
        (site.servers.rest_port, b"/snapshot") if server == "rest" else (site.servers.relay_port, b"/ws")
    )
    with site.servers.no_server_errors():
        answer = send_raw(port, raw_get(target.replace(b"/PATH", path), *UPGRADE))
        assert_printable_ascii(assert_json_error(answer, (400, 404)))
        assert_serving(site)


MALFORMED = [
    pytest.param(raw_get(b"/PATH?exchange=kraken&symbol=BTC\xc3\xa9USD"), False, id="literal-utf8"),
    pytest.param(raw_get(b"/PATH?exchange=kraken&symbol=BTC\xffUSD"), False, id="literal-ff"),
    pytest.param(raw_get(b"/PATH?exchange=kraken&symbol=\xc0\xaf"), False, id="literal-overlong"),
    pytest.param(raw_get(b"/PATH?exchange=kraken&symbol=BTC USD"), False, id="space-in-target"),
    pytest.param(raw_get(b"/PATH?exchange=kraken&symbol=a b c d"), False, id="spaces-in-target"),
    pytest.param(b"GET /PATH?" + VALID.encode() + b" HTTP/2.0\r\nHost: x\r\n\r\n", False, id="http2"),
    pytest.param(b"GET /PATH?" + VALID.encode() + b"\r\n\r\n", False, id="http09"),
    pytest.param(b"GET\r\n\r\n", False, id="method-only"),
    pytest.param(b"\r\n\r\n", False, id="empty-line"),
    pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, True, id="tls-hello"),
    pytest.param(b"GET /PATH?exchange=kraken", True, id="truncated"),
    pytest.param(b"GET /PATH HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n", False, id="header-no-colon"),
    pytest.param(
        b"GET /PATH?" + VALID.encode() + b" HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        False,
        id="chunked",
    ),
    pytest.param(raw_get(b"/PATH?" + VALID.encode(), method=b"G\xc3\x89T"), False, id="non-ascii-method"),
]


@pytest.mark.parametrize("server", ["rest", "relay"])
@pytest.mark.parametrize(("request_bytes", "eof"), MALFORMED)
def test_malformed_http_is_dropped_or_4xx(site: Site, server: str, request_bytes: bytes, eof: bool) -> None:
    """websockets parses the request before ``process_request``: a request it cannot parse gets
    no answer at all (the connection is closed) — acceptable, as long as it is never a 5xx."""
    port, path = (
        (site.servers.rest_port, b"/snapshot") if server == "rest" else (site.servers.relay_port, b"/ws")
    )
    with site.servers.no_server_errors():
        answer = send_raw(port, request_bytes.replace(b"/PATH", path), eof=eof)
        assert_clean(answer)
        assert answer.status == 0 or 400 <= answer.status < 500, answer
        assert_serving(site)


@pytest.mark.parametrize(
    "target", [b"?exchange=kraken&symbol=BTC\rUSD", b"?exchange=kr\taken&symbol=BTC\t\rUSD"]
)
def test_literal_tab_and_cr_in_the_target_are_dropped_by_urlsplit(site: Site, target: bytes) -> None:
    """urllib.parse.urlsplit removes tab, CR and LF anywhere in a URL (CPython bpo-43882) before
    the servers see the query: ``BTC<CR>USD`` names BTCUSD, inside the root — answered, not refused."""
    with site.servers.no_server_errors():
        answer = send_raw(site.servers.rest_port, raw_get(b"/snapshot" + target))
        assert answer.status == 200 and answer.json()["exchange"] == "kraken", answer
        answer = send_raw(site.servers.relay_port, raw_get(b"/ws" + target, *UPGRADE))
        assert answer.status == 101, answer
        assert_inside(site)
        assert_serving(site)


@pytest.mark.parametrize("server", ["rest", "relay"])
def test_over_long_request_line_gets_414(site: Site, server: str) -> None:
    port = site.servers.rest_port if server == "rest" else site.servers.relay_port
    with site.servers.no_server_errors():
        answer = send_raw(port, raw_get(b"/snapshot?" + VALID.encode() + b"&x=" + b"A" * 10_000))
        assert_clean(answer)
        assert answer.status == 414, answer
        answer = send_raw(port, raw_get(b"/snapshot?" + VALID.encode(), b"X-Big: " + b"B" * 10_000))
        assert_clean(answer)
        assert answer.status == 431, answer
        answer = send_raw(port, raw_get(b"/health", *(b"X-H%d: 1" % i for i in range(300))))
        assert_clean(answer)
        assert answer.status == 431, answer
        assert_valid_requests_work(site)


def test_header_injection_through_a_value_is_refused(site: Site) -> None:
    answer = get(site.servers.rest_port, "/snapshot?exchange=kraken%0D%0ASet-Cookie:%20pwn=1&symbol=BTCUSD")
    assert_json_error(answer, (400,))
    assert "set-cookie" not in answer.headers
    answer = send_raw(
        site.servers.rest_port, raw_get(b"/snapshot?exchange=kraken&symbol=BTC\rSet-Cookie:pwn=1")
    )
    assert_json_error(answer, (400,))
    assert "set-cookie" not in answer.headers


def test_relay_without_upgrade_gets_426_json(site: Site) -> None:
    answer = get(site.servers.relay_port, f"/ws?{VALID}")
    assert "WebSocket" in assert_json_error(answer, (426,))


def test_relay_handshake_with_two_connection_headers_is_not_a_500(site: Site) -> None:
    request = raw_get(
        f"/ws?{VALID}".encode(),
        b"Connection: keep-alive",
        b"Connection: Upgrade",
        *UPGRADE[1:],
    )
    answer = send_raw(site.servers.relay_port, request)
    assert_serving(site)
    assert answer.status == 101 or 400 <= answer.status < 500, answer


def test_two_connection_headers_with_a_hostile_query_get_400(site: Site) -> None:
    """The same two headers with a hostile query are refused before the header is read (400)."""
    request = raw_get(
        b"/ws?exchange=kraken&symbol=..%2Fsecret",
        b"Connection: keep-alive",
        b"Connection: Upgrade",
        *UPGRADE[1:],
    )
    with site.servers.no_server_errors():
        assert_json_error(send_raw(site.servers.relay_port, request), (400,))


# -- methods -------------------------------------------------------------------------------------------

METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "FOO"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("server", ["rest", "relay"])
def test_other_methods_are_never_a_5xx(site: Site, server: str, method: str) -> None:
    port, path = (
        (site.servers.rest_port, "/snapshot") if server == "rest" else (site.servers.relay_port, "/ws")
    )
    with site.servers.no_server_errors():
        for target in (f"{path}?{VALID}", f"{path}?exchange=kraken&symbol=..%2Fsecret", "/../../etc/passwd"):
            answer = send_raw(port, raw_get(target.encode(), *UPGRADE, method=method.encode()))
            assert_clean(answer)
            assert answer.status in (0, 200, 400, 404, 405, 426), answer
        # A request body: websockets takes none and drops the connection without an answer.
        body = raw_get(f"{path}?{VALID}".encode(), b"Content-Length: 5", method=method.encode()) + b"hello"
        assert send_raw(port, body).status == 0
        assert_valid_requests_work(site)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_relay_handshake_with_another_method_is_405(site: Site, method: str) -> None:
    answer = send_raw(
        site.servers.relay_port, raw_get(f"/ws?{VALID}".encode(), *UPGRADE, method=method.encode())
    )
    assert_clean(answer)
    assert answer.status == 405 and answer.headers.get("allow") == "GET", answer


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_rest_answers_other_methods_with_405(site: Site, method: str) -> None:
    answer = get(site.servers.rest_port, f"/snapshot?{VALID}", method=method)
    assert_json_error(answer, (405,))


# -- echoes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("%1B[31mkey%07=%00", id="control-key"),
        pytest.param("%C3%A9%E2%80%AEkey=%FF%FE", id="non-ascii-key-bad-utf8"),
        pytest.param("%C3%A9key=" + "v" * 65, id="non-ascii-key-too-long"),
        pytest.param("exchange=%3Cscript%3Ealert(1)%3C/script%3E&symbol=BTCUSD", id="markup-exchange"),
        pytest.param("exchange=kraken&symbol=%22%27%5C%60", id="quotes-symbol"),
        pytest.param("exchange=kr%1Baken&symbol=BTCUSD", id="escape-in-exchange"),
        pytest.param("exchange=kraken&symbol=" + "Z" * 40, id="symbol-40"),
    ],
)
def test_error_text_is_printable_ascii(site: Site, query: str) -> None:
    for answer in (
        get(site.servers.rest_port, f"/snapshot?{query}"),
        ws_refused(site.servers.relay_port, f"/ws?{query}"),
    ):
        text = assert_json_error(answer)
        assert_printable_ascii(text)
        assert all(32 <= b < 127 for b in answer.body), answer.body


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("exchange=" + "x" * 41 + "&symbol=BTCUSD", id="exchange-41"),
        pytest.param("exchange=kraken&symbol=" + "Z" * 50, id="symbol-50"),
        pytest.param("exchange=kraken&symbol=A" + "/" * 60, id="symbol-slashes"),
        pytest.param("k" * 41 + "=" + "v" * 65, id="key-41-too-long"),
    ],
)
def test_truncated_echo_is_printable_ascii(site: Site, query: str) -> None:
    text = assert_json_error(get(site.servers.rest_port, f"/snapshot?{query}"))
    assert_printable_ascii(text)


# -- after the storm ----------------------------------------------------------------------------------


def test_a_storm_of_hostile_requests_leaves_both_servers_serving(site: Site) -> None:
    """Every hostile value at once, interleaved with raw junk, then real requests."""
    with site.servers.no_server_errors():
        for value in HOSTILE.values():
            for name in RELAY_BASE:
                answer = get(site.servers.relay_port, "/ws?" + hostile_query(RELAY_BASE, name, value))
                assert_json_error(answer, (400, 404, 414, 426))  # 426: the empty etcpasswd folder
            for name in REST_BASE:
                answer = get(site.servers.rest_port, "/snapshot?" + hostile_query(REST_BASE, name, value))
                assert_json_error(answer)
            send_raw(site.servers.rest_port, b"GET /snapshot?\xff\xfe HTTP/1.1\r\n\r\n")
        # Half-open clients that never finish their request must not block others.
        idle = [
            socket.create_connection(("127.0.0.1", site.servers.rest_port), timeout=TIMEOUT) for _ in range(5)
        ]
        try:
            for sock in idle:
                sock.sendall(b"GET /snapshot?exchange=kraken")
            assert_valid_requests_work(site)
        finally:
            for sock in idle:
                sock.close()
        assert_inside(site)
        assert_valid_requests_work(site)


# -- limits ----------------------------------------------------------------------------------------------


@pytest.fixture
def tight(recorded_data: Path, tmp_path: Path) -> Iterator[Running]:
    """Servers with two relay connections at most and 256-byte client frames."""
    data, _secret = build_root(recorded_data, tmp_path)
    running = Running(ServeOptions(data, relay_port=0, rest_port=0, max_connections=2, max_message_bytes=256))
    try:
        yield running
    finally:
        running.close()


def relay_health(running: Running) -> dict[str, Any]:
    answer = get(running.relay_port, "/health")
    assert answer.status == 200
    return answer.json()


def wait_for(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def drain_until_closed(ws: ClientConnection) -> ConnectionClosed:
    """Read until the server closes the connection; the ConnectionClosed it raised."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            return exc
        except TimeoutError:
            pytest.fail("the server did not close the connection")


def test_oversized_client_frame_closes_with_1009_and_others_keep_streaming(tight: Running) -> None:
    with tight.no_server_errors():
        port = tight.relay_port
        with ws_open(port, f"/ws?{VALID}") as bystander, ws_open(port, f"/ws?{VALID}") as big:
            assert json.loads(bystander.recv(timeout=TIMEOUT))["data"]["status"] == "subscribed"
            big.send("x" * 200)  # under the limit: read and ignored
            big.send("x" * 257)
            closed = drain_until_closed(big)
            assert closed.rcvd is not None and closed.rcvd.code == 1009, closed
            # The other client is still connected and answered.
            assert bystander.ping().wait(TIMEOUT)
            bystander.send("still here")
            wait_for(lambda: relay_health(tight)["connections"] == 1, "the closed client to be counted out")
            msg = first_message(port, f"/ws?{VALID}")
            assert msg["data"]["status"] == "subscribed"
            assert bystander.ping().wait(TIMEOUT)


def test_binary_oversized_frame_also_closes_with_1009(tight: Running) -> None:
    with tight.no_server_errors(), ws_open(tight.relay_port, f"/ws?{VALID}") as ws:
        ws.send(b"\x00" * 10_000)
        closed = drain_until_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1009, closed


def test_third_client_is_refused_then_accepted_after_one_leaves(tight: Running) -> None:
    port = tight.relay_port
    with (
        tight.no_server_errors(),
        ws_open(port, f"/ws?{VALID}") as first,
        ws_open(port, "/ws?exchange=binance&symbol=BTCUSDT") as second,
    ):
        wait_for(lambda: relay_health(tight)["connections"] == 2, "two connections")
        answer = ws_refused(port, f"/ws?{VALID}")
        assert "too many connections" in assert_json_error(answer, (503,))
        assert answer.headers.get("retry-after", "").isdigit(), answer.headers
        # The REST server and /health are not relay connections: still answered.
        assert get(tight.rest_port, f"/snapshot?{VALID}&levels=1").status == 200
        assert relay_health(tight)["refused"] >= 1
        first.close()
        wait_for(lambda: relay_health(tight)["connections"] == 1, "the first client to leave")
        msg = first_message(port, f"/ws?{VALID}")
        assert msg["data"]["status"] == "subscribed"
        assert second.ping().wait(TIMEOUT)


def test_many_handshakes_at_once_never_exceed_the_limit(tight: Running) -> None:
    """Eight clients at once against max_connections=2: refused with 503 or closed with 1013."""
    port = tight.relay_port
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8, timeout=TIMEOUT)
    hold = threading.Event()

    def client() -> None:
        barrier.wait()
        try:
            with ws_open(port, f"/ws?{VALID}") as ws:
                try:
                    ws.recv(timeout=TIMEOUT)
                except ConnectionClosed as exc:
                    outcome = f"closed {exc.rcvd.code if exc.rcvd else None}"
                else:
                    outcome = "open"
                    hold.wait(TIMEOUT)
        except InvalidStatus as exc:
            outcome = f"http {exc.response.status_code}"
        with lock:
            results.append(outcome)

    with tight.no_server_errors():
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: len(results) >= 6, "six refusals")
        assert relay_health(tight)["connections"] <= 2
        hold.set()
        for t in threads:
            t.join(2 * TIMEOUT)
        assert len(results) == 8
        assert results.count("open") <= 2, results
        assert all(r in ("open", "http 503", "closed 1013") for r in results), results
        wait_for(lambda: relay_health(tight)["connections"] == 0, "everyone to leave")
        assert first_message(port, f"/ws?{VALID}")["data"]["status"] == "subscribed"


# -- bind address ------------------------------------------------------------------------------------------


def test_default_host_listens_on_loopback_only(site: Site) -> None:
    assert ServeOptions(site.data).host == "127.0.0.1"
    servers = site.servers.servers
    for srv in (servers.relay, servers.rest):
        assert srv is not None and srv.server is not None
        addresses = [sock.getsockname() for sock in srv.server.sockets]
        assert addresses and all(addr[0] == "127.0.0.1" for addr in addresses), addresses
    assert all("://127.0.0.1:" in url for url in servers.urls().values())


def test_the_secret_beside_the_root_is_a_real_stream(site: Site) -> None:
    """The traversal target would be served if a path reached it: the refusals above are real."""
    from mmdata.serve.sources import LiveSource, newest_day

    assert LiveSource.available(site.secret / "BTCUSD") and newest_day(site.secret / "BTCUSD") is not None
    assert (site.data / "kraken" / ".." / ".." / "secret" / "BTCUSD").resolve() == (
        site.secret / "BTCUSD"
    ).resolve()
    assert (site.data / ".." / "secret" / "passwd").read_text().startswith("root:")
