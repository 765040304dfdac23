"""Hostile input against the real candle server, over loopback.

Two sides:

* **Messages**: every field of ``subscribe`` / ``unsubscribe`` (``symbol``, ``exchange``,
  ``interval``, ``initialBars``, ``type``) with traversal attempts (``../``, ``%2F``,
  ``%252F``, absolute paths), NUL and control bytes, non-ASCII, 65 / 1,000 / 5,000
  characters; and a storm of 10,000 malformed frames from one client (random bytes, JSON
  junk, wrong types, deep nesting, long strings, binary frames). Each gets one ``error``
  message whose text is short printable ASCII, never a traceback or anything from outside
  the data root, and the server keeps serving everyone else.
* **HTTP**: the handshake's path, method, headers and raw malformed requests (the cases of
  tests/serve/test_hostile.py) get a 4xx JSON or no answer, never a 5xx.

The server runs over a copy of the recorded days with ``secret/`` beside the data root (a
complete stream and a password file: the target of every traversal) and look-alike folders
inside it (:func:`tests.serve.test_hostile.build_root`).
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from mmdata.serve.app import ServeOptions
from mmdata.serve.candles import CandleOptions
from tests.serve.conftest import run, until
from tests.serve.test_candles_server import (
    Client,
    append_live,
    bar_of,
    candle_server,
    client,
    latest_states,
    market_of,
    port_of,
    read_up_to,
    reference_bars,
    synthetic_root,
    synthetic_trades,
)
from tests.serve.test_hostile import (
    MALFORMED,
    METHODS,
    PATHS,
    SECRET,
    TIMEOUT,
    UPGRADE,
    Running,
    assert_clean,
    assert_json_error,
    assert_printable_ascii,
    build_root,
    drain_until_closed,
    get,
    raw_get,
    send_raw,
    ws_refused,
)

#: Frames up to this size are read (larger: close 1009); room for the 5,000-character values.
MAX_BYTES = 16_384
#: Longest error text: the fixed words plus a truncated echo of the client's text.
MAX_ERROR_CHARS = 200


@pytest.fixture(scope="module")
def site(recorded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    """The candle server alone over the hostile data root, on a loop in a background thread."""
    data, _secret = build_root(recorded_data, tmp_path_factory.mktemp("candles-hostile"))
    running = Running(
        ServeOptions(
            data,
            relay_port=None,
            rest_port=None,
            candles=CandleOptions(port=0, max_message_bytes=MAX_BYTES, max_connections=50),
        )
    )
    try:
        yield running, data
    finally:
        running.close()


def candle_port(running: Running) -> int:
    assert running.servers.candles is not None
    return running.servers.candles.port


def ws_open(port: int, path: str = "/") -> ClientConnection:
    return connect(f"ws://127.0.0.1:{port}{path}", open_timeout=TIMEOUT, close_timeout=TIMEOUT, max_size=None)


def answer_of(ws: ClientConnection, message: dict[str, Any] | str | bytes) -> dict[str, Any]:
    ws.send(orjson.dumps(message).decode() if isinstance(message, dict) else message)
    reply = json.loads(ws.recv(timeout=TIMEOUT))
    assert isinstance(reply, dict)
    return reply


def assert_error(reply: dict[str, Any], max_chars: int = MAX_ERROR_CHARS) -> str:
    """An ``error`` message with a short printable-ASCII text that leaks nothing."""
    assert reply.get("type") == "error" and set(reply) == {"type", "message"}, reply
    text = reply["message"]
    assert isinstance(text, str) and text, reply
    assert_printable_ascii(text)
    assert len(text) <= max_chars, f"{len(text)} characters: {text[:80]}..."
    for needle in ("Traceback", 'File "', SECRET, "root:x:0"):  # never the files' contents
        assert needle not in text, text
    return text


def assert_inside(running: Running, data: Path) -> None:
    """Every stream the server opened is a folder of the data root."""

    async def roots() -> list[Path]:
        return [m.stream.root for m in running.servers.markets.markets.values()]

    root = data.resolve()
    for path in running.run(roots()):
        assert path.resolve().parent.parent == root, path


def assert_serving(running: Running) -> None:
    """/health answers and a real subscription gets the recorded bars."""
    port = candle_port(running)
    answer = get(port, "/health")
    assert answer.status == 200 and answer.json()["ok"] is True
    with ws_open(port) as ws:
        reply = answer_of(
            ws, {"type": "subscribe", "exchange": "kraken", "symbol": "BTC/USD", "interval": "1m"}
        )
        assert reply["type"] == "initial" and reply["bars"], reply


# -- hostile message fields ----------------------------------------------------------------------------

#: Raw values (not URL-encoded: these travel inside JSON).
HOSTILE: dict[str, str] = {
    "dotdot": "../secret",
    "dotdot-deep": "../../secret/BTCUSD",
    "dotdot-symbol": "../BTCUSD",
    "dotdot-encoded": "..%2F..%2Fsecret",
    "dotdot-double-encoded": "..%252F..%252Fsecret",
    "dots-encoded": "%2e%2e%2f%2e%2e%2fsecret",
    "dot": ".",
    "dotdot-only": "..",
    "slash": "/",
    "absolute-secret": "/tmp/secret/BTCUSD",
    "absolute-encoded": "%2Fetc%2Fpasswd%00",
    "nul": "BTC\x00USD",
    "nul-only": "\x00",
    "backslash": "..\\..\\secret",
    "windows-drive": "C:\\secret",
    "newline": "BTC\nUSD",
    "crlf": "BTC\r\nSet-Cookie: pwn=1",
    "escape": "BTC\x1b[2JUSD",
    "bell": "\x07\x07",
    "del": "BTC\x7fUSD",
    "e-acute": "BTCéUSD",
    "rtl-override": "\u202eDSUCTB",
    "fullwidth": "ＢＴＣＵＳＤ",
    "emoji": "\U0001f680",
    "too-long-65": "A" * 65,
    "too-long-1000": "B" * 1000,
    "too-long-5000": "C" * 5000,
    "shell": "$(id)",
    "glob": "*",
    "secret-folder": "secret",
    "dotdot-folder": "..secret",
    "percent-folder": "%2e%2e",
}

#: Values that name a folder *inside* the root which holds no recorded day (build_root made
#: them: ``/etc/passwd`` collapses to ``etcpasswd``).
EMPTY_FOLDERS = {"/etc/passwd": "absolute", "etcpasswd": "folder-name", "ETC-PASSWD": "case-and-dash"}


BASE = {"type": "subscribe", "exchange": "kraken", "symbol": "BTC/USD", "interval": "1m", "initialBars": 5}


def field_cases() -> list[Any]:
    out = []
    for name in ("symbol", "exchange", "interval"):
        for key, value in HOSTILE.items():
            marks: list[pytest.MarkDecorator] = []
            out.append(pytest.param(name, value, id=f"{name}={key}", marks=marks))
    return out


@pytest.mark.parametrize(("name", "value"), field_cases())
def test_hostile_field_values_get_an_error(site: tuple[Running, Path], name: str, value: str) -> None:
    """A hostile value in any field of subscribe and unsubscribe: one ``error`` each, nothing
    opened outside the root, and the server keeps serving."""
    running, data = site
    with running.no_server_errors(), ws_open(candle_port(running)) as ws:
        assert_error(answer_of(ws, {**BASE, name: value}))
        unsub = {k: v for k, v in BASE.items() if k != "initialBars"} | {"type": "unsubscribe", name: value}
        assert_error(answer_of(ws, unsub))
        assert answer_of(ws, {"type": "ping"}) == {"type": "pong"}
    assert_inside(running, data)
    assert_serving(running)


@pytest.mark.parametrize("symbol", [pytest.param(s, id=key) for s, key in EMPTY_FOLDERS.items()])
def test_symbol_of_an_empty_folder_inside_the_root_is_invalid(
    site: tuple[Running, Path], symbol: str
) -> None:
    running, data = site
    with running.no_server_errors(), ws_open(candle_port(running)) as ws:
        reply = answer_of(ws, {**BASE, "symbol": symbol})
        assert SECRET not in json.dumps(reply)
        assert_inside(running, data)
        assert_error(reply)


@pytest.mark.parametrize(
    "value",
    [*HOSTILE.values(), "5", "-1", "5001", "1e3", "0x10", "NaN", "Infinity", "", " 5", "五"],
    ids=[*HOSTILE, "digits", "minus", "over", "exp", "hex", "nan", "inf", "empty", "space", "cjk"],
)
def test_hostile_initial_bars_get_the_fixed_error(site: tuple[Running, Path], value: str) -> None:
    running, _data = site
    with running.no_server_errors(), ws_open(candle_port(running)) as ws:
        reply = answer_of(ws, {**BASE, "initialBars": value})
        assert assert_error(reply) == "Invalid initialBars: must be an integer from 0 to 5000"


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_message_type_is_echoed_safely(site: tuple[Running, Path], value: str) -> None:
    running, _data = site
    with running.no_server_errors(), ws_open(candle_port(running)) as ws:
        text = assert_error(answer_of(ws, {**BASE, "type": value}))
        assert text.startswith("Unknown message type: ") and text.endswith(
            ". Valid: subscribe, unsubscribe, ping"
        ), text
        echo = text[len("Unknown message type: ") : -len(". Valid: subscribe, unsubscribe, ping")]
        assert len(echo) <= 43, echo  # 40 characters and "..."


def test_hostile_query_strings_on_the_handshake_are_ignored(site: tuple[Running, Path]) -> None:
    """The candle server takes no query parameters: a hostile one opens a plain connection
    that serves by messages only."""
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        for query in ("?symbol=..%2F..%2Fsecret", "?exchange=%00&interval=%252F", "?" + "x" * 900):
            with ws_open(port, "/" + query) as ws:
                assert answer_of(ws, {"type": "ping"}) == {"type": "pong"}
        assert_serving(running)


# -- HTTP ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_hostile_paths_are_404(site: tuple[Running, Path], path: str) -> None:
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        for query in ("", "?symbol=..%2Fsecret"):
            assert "unknown path" in assert_json_error(get(port, path + query), (404,))
        assert "unknown path" in assert_json_error(ws_refused(port, path), (404,))
    assert_serving(running)


@pytest.mark.parametrize("method", METHODS)
def test_other_methods_get_405_or_nothing(site: tuple[Running, Path], method: str) -> None:
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        for target in ("/", "/ws", "/health", "/../../etc/passwd"):
            answer = send_raw(port, raw_get(target.encode(), *UPGRADE, method=method.encode()))
            assert_clean(answer)
            assert answer.status in (0, 405), answer
            if answer.status == 405:
                assert answer.headers.get("allow") == "GET"
                assert_json_error(answer, (405,))
        body = raw_get(b"/", b"Content-Length: 5", method=method.encode()) + b"hello"
        assert send_raw(port, body).status == 0  # a body: websockets drops the connection
    assert_serving(running)


@pytest.mark.parametrize(("request_bytes", "eof"), MALFORMED)
def test_malformed_http_is_dropped_or_4xx(
    site: tuple[Running, Path], request_bytes: bytes, eof: bool
) -> None:
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        answer = send_raw(port, request_bytes.replace(b"/PATH", b"/"), eof=eof)
        assert_clean(answer)
        assert answer.status == 0 or 400 <= answer.status < 500, answer
    assert_serving(running)


def test_header_floods_and_long_request_lines_are_4xx(site: tuple[Running, Path]) -> None:
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        for request, status in (
            (raw_get(b"/?x=" + b"A" * 10_000, *UPGRADE), 414),
            (raw_get(b"/", b"X-Big: " + b"B" * 10_000, *UPGRADE), 431),
            (raw_get(b"/health", *(b"X-H%d: 1" % i for i in range(300))), 431),
        ):
            answer = send_raw(port, request)
            assert_clean(answer)
            assert answer.status == status, answer
        for junk in (b"Connection: keep-alive", b"Connection: close", b"Upgrade: h2c"):
            answer = send_raw(port, raw_get(b"/", junk))
            assert "WebSocket" in assert_json_error(answer, (426,))
        # Two Connection headers (one says Upgrade): a handshake or a 4xx, never a 5xx.
        answer = send_raw(port, raw_get(b"/", b"Connection: keep-alive", *UPGRADE))
        assert answer.status == 101 or 400 <= answer.status < 500, answer
    assert_serving(running)


def test_health_ignores_hostile_queries(site: tuple[Running, Path]) -> None:
    running, _data = site
    port = candle_port(running)
    for target in ("/health?../../etc/passwd", "/health/ws-stats?%00=%00", "/health?" + "%41" * 300):
        answer = get(port, target)
        assert answer.status == 200 and answer.headers["content-type"] == "application/json", answer
        assert_clean(answer)


def test_oversized_frames_close_1009(site: tuple[Running, Path]) -> None:
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors():
        for frame in ("x" * (MAX_BYTES + 1), b"\x00" * (MAX_BYTES + 1)):
            with ws_open(port) as ws:
                ws.send(frame)
                closed = drain_until_closed(ws)
                assert closed.rcvd is not None and closed.rcvd.code == 1009, closed
        assert_serving(running)


# -- 10,000 malformed messages ---------------------------------------------------------------------------


def junk_messages(count: int, limit: int, seed: int = 11) -> list[str | bytes]:
    """``count`` malformed frames of at most ``limit`` bytes, each worth one ``error``."""
    rng = random.Random(seed)
    printable = string.ascii_letters + string.digits + string.punctuation + " "

    def word(n: int) -> str:
        return "".join(rng.choice(printable) for _ in range(n))

    def json_value(depth: int = 0) -> Any:
        kind = rng.randrange(7 if depth < 4 else 4)
        if kind == 0:
            return rng.randrange(-(10**12), 10**12)
        if kind == 1:
            return rng.random() * 10 ** rng.randrange(-5, 30)
        if kind == 2:
            return word(rng.randrange(0, 20))
        if kind == 3:
            return rng.choice([None, True, False])
        if kind in (4, 5):
            return [json_value(depth + 1) for _ in range(rng.randrange(4))]
        return {word(3): json_value(depth + 1) for _ in range(rng.randrange(3))}

    def wrong_types() -> dict[str, Any]:
        msg: dict[str, Any] = {
            "type": rng.choice(["subscribe", "unsubscribe"]),
            "symbol": "BTC/USD",
            "exchange": "kraken",
            "interval": "1m",
        }
        field = rng.choice(["symbol", "exchange", "interval", "initialBars", "type"])
        if field == "initialBars":
            msg["type"] = "subscribe"
            msg[field] = rng.choice([-1, 5001, 1.5, "7", None, True, [1], {"n": 1}])
        elif field == "type":
            msg[field] = rng.choice([None, 1, 2.5, True, [], {}, ["ping"]])
        else:
            msg[field] = rng.choice([None, 0, 1.5, False, [], {}, ["BTC/USD"], {"x": 1}, ""])
        return msg

    def long_string() -> dict[str, Any]:
        size = rng.randrange(limit // 2, limit - 200)
        field = rng.choice(["symbol", "exchange", "interval", "type"])
        msg: dict[str, Any] = {
            "type": "subscribe",
            "symbol": "BTC/USD",
            "exchange": "kraken",
            "interval": "1m",
        }
        msg[field] = word(size)
        return msg

    def deep() -> str:
        n = rng.choice([50, 500, 1024, 1025, 2000])
        if rng.random() < 0.5:
            inner = "[" * n + "]" * n  # an array, or deeper than the parser allows
            return inner if len(inner) <= limit else "[" * (limit - 10)
        nested = '{"a":' * 300 + "1" + "}" * 300
        return '{"type":"subscribe","symbol":' + nested + ',"interval":"1m"}'

    out: list[str | bytes] = []
    for i in range(count):
        kind = i % 8
        if kind == 0:  # random bytes as text
            frame: str | bytes = rng.randbytes(rng.randrange(1, 200)).decode("latin-1")
        elif kind == 1:  # random bytes as a binary frame
            frame = rng.randbytes(rng.randrange(1, 300))
        elif kind == 2:  # JSON that is not an object
            frame = orjson.dumps(rng.choice([[json_value()], word(10), rng.randrange(100), None])).decode()
        elif kind == 3:
            frame = orjson.dumps(wrong_types()).decode()
        elif kind == 4:  # unknown types, unknown symbols and intervals, not subscribed
            frame = orjson.dumps(
                rng.choice(
                    [
                        {"type": word(rng.randrange(1, 60))},
                        {"type": "subscribe", "symbol": word(8), "interval": "1m", "exchange": "kraken"},
                        {"type": "subscribe", "symbol": "BTC/USD", "interval": word(3), "exchange": "kraken"},
                        {"type": "unsubscribe", "symbol": "BTC/USD", "interval": "5m", "exchange": "kraken"},
                    ]
                )
            ).decode()
        elif kind == 5:
            frame = orjson.dumps(long_string()).decode()
        elif kind == 6:
            frame = deep()
        else:  # truncated or broken JSON, as text or as binary
            good = orjson.dumps({"type": "subscribe", "symbol": "BTC/USD", "interval": "1m"})
            broken = good[: rng.randrange(1, len(good) - 1)]
            frame = broken if rng.random() < 0.5 else broken.decode() + "\x00"
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        assert size <= limit, (kind, size)
        out.append(frame)
    return out


async def servers_health(port: int) -> dict[str, Any]:
    answer = await asyncio.to_thread(get, port, "/health")
    assert answer.status == 200
    doc = answer.json()
    assert isinstance(doc, dict)
    return doc


def test_ten_thousand_malformed_messages(recorded_data: Path, tmp_path: Path) -> None:
    """One client sends 10,000 malformed frames in bursts while another listens: every frame
    gets one printable ``error``, the server stays healthy, the listener's updates are right,
    and a fresh subscription after the storm is right too."""
    trades = synthetic_trades(50)  # and the 10 EDGES: 40 in the file, 20 written during the storm
    assert len(trades) == 60
    data = synthetic_root(recorded_data, tmp_path, trades[:40])
    junk = junk_messages(10_000, 4096)

    async def main() -> tuple[Client, Client, dict[str, Any], dict[str, Any]]:
        async with candle_server(data, throttle_s=0.2) as servers:
            port = port_of(servers)
            assert servers.candles is not None
            async with client(port) as listener, client(port) as storm:
                await listener.subscribe("BTC/USD", "1m")
                market = market_of(servers, "kraken")
                for i in range(0, len(junk), 500):  # bursts, replies read meanwhile
                    for frame in junk[i : i + 500]:
                        await storm.ws.send(frame)
                    if i // 500 < 20:
                        append_live(data, trades[40 + i // 500 : 41 + i // 500])
                    await asyncio.sleep(0)
                await until(lambda: len(storm.messages) >= len(junk), 60, "10,000 replies")
                await read_up_to(market, trades[59].seq)
                health = await servers_health(port)
                assert await storm.ask({"type": "ping"}) == {"type": "pong"}
                final = latest_states(trades, "1m")[-1]
                await listener.wait_for(
                    lambda m: m["type"] == "update" and bar_of(m["bar"]) == final, what="the final update"
                )
                async with client(port) as late:
                    fresh = await late.subscribe("BTC/USD", "5m", initialBars=5000)
                assert servers.candles.errors_sent == len(junk)
                return listener, storm, health, fresh

    listener, storm, health, fresh = run(main(), timeout=120)
    replies = storm.messages[: len(junk)]
    assert len(storm.messages) == len(junk) + 1  # and the pong
    for reply in replies:
        # Printable ASCII; long only where 'Invalid interval' echoes a long interval (see
        # Interval echoes: the storm's intervals are printable, its lengths are checked there).
        assert_error(reply, max_chars=4096)
    assert health["ok"] is True and health["connections"] == 2
    latest = latest_states(trades, "1m")
    k = 0
    for update in listener.updates():
        k = next(i for i in range(k, len(latest)) if latest[i] == bar_of(update["bar"]))
    assert [bar_of(b) for b in fresh["bars"]] == reference_bars(trades, "5m")


def test_invalid_utf8_text_frame_closes_1007_and_others_keep_going(site: tuple[Running, Path]) -> None:
    """A text frame that is not UTF-8 breaks the WebSocket protocol: websockets closes with
    1007 before the server sees it; nobody else notices."""
    running, _data = site
    port = candle_port(running)
    with running.no_server_errors(), ws_open(port) as bystander, ws_open(port) as bad:
        bad.send(b"\xff\xfe{", text=True)  # bytes sent as a text frame: not checked by the client
        closed = drain_until_closed(bad)
        assert closed.rcvd is not None and closed.rcvd.code == 1007, closed
        assert answer_of(bystander, {"type": "ping"}) == {"type": "pong"}
    assert_serving(running)
