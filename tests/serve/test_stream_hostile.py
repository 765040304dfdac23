"""Hostile clients against the stream server, over loopback.

The server runs on an event loop in a background thread over a copy of the recorded days,
laid out by :func:`tests.serve.test_hostile.build_root`: beside the data root lies
``secret/`` (a complete stream and a password file), inside it folders named like what a
traversal collapses to. Every hostile value as ``client_id``, ``exchange`` or publish token
(query and header) must get a 4xx JSON answer or a normal connection, and inside a
``subscribe`` an ``error`` message — never a 5xx, a traceback, a logged server error or a
stream outside the data root. Ten thousand malformed messages from one client leave the
server healthy, and another client still gets correct data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, unquote_to_bytes

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from mmdata.serve.market import MarketConfig, Markets
from mmdata.serve.stream import StreamOptions, StreamServer
from tests.serve.test_hostile import (
    HOSTILE,
    SECRET,
    UPGRADE,
    Answer,
    ErrorLog,
    assert_clean,
    assert_json_error,
    build_root,
    get,
    raw_get,
    send_raw,
)
from tests.serve.test_stream_server import ENTRY_KEYS, parse_ms, reference_entry, trades_file

T = TypeVar("T")
TIMEOUT = 5.0
TOKEN = "hostile-test-token"
_LOGGERS = ("websockets", "asyncio", "mmdata")


class Running:
    """A :class:`StreamServer` on an event loop in a background thread."""

    def __init__(self, data: Path, options: StreamOptions) -> None:
        self.errors = ErrorLog()
        for name in _LOGGERS:
            logging.getLogger(name).addHandler(self.errors)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="stream-hostile", daemon=True)
        self.thread.start()
        self.markets = Markets(data, MarketConfig(poll_s=0.02))
        self.server = StreamServer(options, self.markets)
        self.run(self.server.start())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 3 * TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any) -> Any:
        """``fn()`` on the server's loop (its state is only touched there)."""

        async def go() -> Any:
            return fn()

        return self.run(go())

    @property
    def port(self) -> int:
        return self.server.port

    def new_errors(self, before: int) -> list[str]:
        return [r.getMessage() for r in self.errors.records[before:]]

    def close(self) -> None:
        try:
            self.run(self._shutdown(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()
            for name in _LOGGERS:
                logging.getLogger(name).removeHandler(self.errors)

    async def _shutdown(self) -> None:
        await self.server.close()
        await self.markets.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_default_executor()


@dataclass
class Site:
    data: Path
    secret: Path
    running: Running


@pytest.fixture(scope="module")
def site(recorded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data, secret = build_root(recorded_data, tmp_path_factory.mktemp("stream-hostile"))
    running = Running(
        data, StreamOptions(port=0, max_connections=50, publish_token=TOKEN, price_update_interval_s=0.2)
    )
    try:
        yield Site(data, secret, running)
    finally:
        running.close()


def ws_open(site: Site, target: str, **kwargs: Any) -> ClientConnection:
    url = f"ws://127.0.0.1:{site.running.port}{target}"
    ws: ClientConnection = connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT, **kwargs)
    return ws


def recv(ws: ClientConnection) -> dict[str, Any]:
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, str), message  # every server message is a text frame
    for needle in (SECRET, "Traceback", "root:x:0"):
        assert needle not in message, message
    parsed: dict[str, Any] = json.loads(message)
    return parsed


def assert_healthy(site: Site, before: int) -> None:
    """No server-side error was logged, /health answers, every channel is healthy, and every
    stream the server opened is a folder inside the data root."""
    assert not site.running.new_errors(before)
    answer = get(site.running.port, "/health")
    assert answer.status == 200 and answer.json()["ok"] is True
    status = get(site.running.port, "/websocket/status").json()
    assert all(h["is_healthy"] for h in status["stream_health"].values()), status
    root = site.data.resolve()
    roots = site.running.call(lambda: [m.stream.root for m in site.running.markets.markets.values()])
    for path in roots:
        assert path.resolve().parent.parent == root, path


def refused_or_connected(site: Site, target: str, statuses: tuple[int, ...]) -> dict[str, Any] | None:
    """The ``connected`` message of a handshake the server accepted, or None after checking
    that it refused it with a JSON error of one of ``statuses``."""
    try:
        with ws_open(site, target) as ws:
            return recv(ws)
    except InvalidStatus as exc:
        resp = exc.response
        headers = {k.lower(): v for k, v in resp.headers.raw_items()}
        answer = Answer(resp.status_code, headers, bytes(resp.body or b""))
        text = assert_json_error(answer, statuses)
        assert text.isascii() and text.isprintable(), text
        return None


# -- ten thousand malformed messages ------------------------------------------------------------------
def malformed(n: int, seed: int) -> Iterator[str | bytes]:
    """``n`` messages, each of which must get exactly one ``error`` reply."""
    rnd = random.Random(seed)
    junk_chars = '{}[]":,0123456789abcxyz \\/\t\n.-+eE\u00e9\u4e2d\U0001f600'
    wrong = [None, True, 1, -2.5, [], {}, [1, "a"], {"a": 1}, "", "x" * 70]

    def junk_text(k: int) -> str:
        return "".join(rnd.choices(junk_chars, k=k))

    def bad_symbol() -> Any:
        return rnd.choice(
            [
                rnd.choice(wrong),
                "../" + junk_text(5),
                "BTC.USDT",
                "$(id)",
                "\u00e9" * rnd.randint(1, 30),
                "A" * rnd.randint(65, 200),
                "NOPE" + str(rnd.randint(0, 99)),
            ]
        )

    makers: list[Callable[[], str | bytes]] = [
        lambda: rnd.randbytes(rnd.randint(0, 300)),  # binary frames
        lambda: junk_text(rnd.randint(0, 200)),
        lambda: orjson.dumps(rnd.choice([1, "ping", None, [1, 2], 3.5, True, []])).decode(),
        lambda: orjson.dumps({"type": rnd.choice([None, 1, [], {}, False])}).decode(),
        lambda: orjson.dumps({"type": junk_text(rnd.randint(1, 20)) + "?"}).decode(),
        lambda: orjson.dumps(
            {"type": "subscribe", "channel": rnd.choice([*wrong, junk_text(8), "trade"])}
        ).decode(),
        lambda: orjson.dumps(
            {
                "type": "subscribe",
                "channel": rnd.choice(["price_updates", "trades"]),
                "symbols": rnd.choice([bad_symbol(), [bad_symbol()], ["BTCUSDT", bad_symbol()]]),
            }
        ).decode(),
        lambda: orjson.dumps(
            {
                "type": "subscribe",
                "channel": "price_updates",
                "symbols": ["BTCUSDT"],
                "exchange": rnd.choice(
                    [*[w for w in wrong if w is not None], "ftx", "../binance", "binance/"]
                ),
            }
        ).decode(),
        lambda: orjson.dumps({"type": "unsubscribe", "channel": rnd.choice([1, None, "x", []])}).decode(),
        lambda: orjson.dumps(
            {
                "type": "unsubscribe",
                "channel": "trades",
                "symbols": rnd.choice([True, 1, -2.5, {}, [1, "a"], "x"]),
            }
        ).decode(),
        # Large but allowed (< 4096 bytes), and deeply nested.
        lambda: orjson.dumps({"type": "subscribe", "channel": "c" * rnd.randint(1000, 3900)}).decode(),
        lambda: "[" * 2000 + "]" * 2000,
        lambda: (junk_text(250) * 16)[: rnd.randint(3000, 4000)],
    ]
    for _ in range(n):
        message = rnd.choice(makers)()
        if isinstance(message, str) and len(message.encode()) > 4096:
            message = message.encode()[:4000].decode("utf-8", "ignore")
        yield message


def test_ten_thousand_malformed_messages_leave_the_server_healthy(site: Site, recorded_data: Path) -> None:
    before = len(site.running.errors.records)
    errors_before = site.running.call(lambda: site.running.server.errors_sent)
    messages = list(malformed(10_000, seed=20241219))
    assert sum(isinstance(m, bytes) for m in messages) > 500
    with ws_open(site, "/ws?client_id=junk") as ws:
        assert recv(ws)["type"] == "connected"
        for start in range(0, len(messages), 500):
            batch = messages[start : start + 500]
            for message in batch:
                ws.send(message)
            for message in batch:
                reply = recv(ws)
                assert reply["type"] == "error" and set(reply) == {"type", "error", "timestamp"}, (
                    message,
                    reply,
                )
                assert reply["error"].isascii() and reply["error"].isprintable(), reply
        ws.send('{"type":"ping"}')
        assert recv(ws)["type"] == "pong"  # the same connection still works
    assert site.running.call(lambda: site.running.server.errors_sent) - errors_before == 10_000
    assert_healthy(site, before)

    # Another client still gets correct data.
    rows = trades_file(recorded_data / "binance" / "BTCUSDT")
    with ws_open(site, "/ws?client_id=after") as ws:
        assert recv(ws)["type"] == "connected"
        ws.send(
            orjson.dumps({"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"]}).decode()
        )
        assert recv(ws)["type"] == "subscribed"
        for _ in range(3):
            raw = ws.recv(timeout=TIMEOUT)
            update = json.loads(raw, parse_float=str, parse_int=str)
            assert update["type"] == "price_update"
            entry = update["symbols"]["BTCUSDT"]
            assert list(entry) == ENTRY_KEYS
            assert entry == reference_entry("binance", rows, parse_ms(update["timestamp"]))


# -- hostile parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("key", list(HOSTILE))
def test_hostile_client_id_and_exchange_parameters(site: Site, key: str) -> None:
    value = HOSTILE[key]
    before = len(site.running.errors.records)
    for name in ("client_id", "exchange"):
        query = f"{name}={value}"
        hello = refused_or_connected(site, f"/ws?{query}", (400, 414))
        if hello is None:
            continue
        assert hello["type"] == "connected"
        decoded = parse_qs(query, keep_blank_values=True).get(name, [""])[-1]
        if name == "client_id":
            assert decoded and hello["client_id"] == decoded
            assert decoded.isascii() and decoded.isprintable() and len(decoded) <= 64
        else:
            assert decoded == "", decoded  # only an empty exchange (the default) is accepted
    assert_healthy(site, before)


@pytest.mark.parametrize("key", list(HOSTILE))
def test_hostile_publish_tokens(site: Site, key: str) -> None:
    value = HOSTILE[key]
    before = len(site.running.errors.records)
    assert refused_or_connected(site, f"/publish?token={value}", (400, 401, 414)) is None
    for header in (b"Authorization: Bearer " + unquote_to_bytes(value), b"Authorization: " + value.encode()):
        answer = send_raw(site.running.port, raw_get(b"/publish", *UPGRADE, header))
        assert_clean(answer)
        # 0: websockets closes without an answer on a header it cannot parse (a NUL, a bare CR).
        assert answer.status in (0, 400, 401, 414), answer
        if answer.status:
            assert_json_error(answer, (400, 401, 414))
    assert_healthy(site, before)


def test_hostile_values_inside_messages(site: Site) -> None:
    before = len(site.running.errors.records)
    # Every value fits a frame (4096 bytes): the longer ones are cut to 3000 characters.
    values = sorted({v[:3000] for raw in HOSTILE.values() for v in (raw, unquote(raw))})
    sent = 0
    with ws_open(site, "/ws?client_id=hostile-messages") as ws:
        assert recv(ws)["type"] == "connected"
        for value in values:
            for channel in ("price_updates", "trades"):
                messages: list[dict[str, Any]] = [
                    {"type": "subscribe", "channel": channel, "symbols": [value]},
                    {"type": "subscribe", "channel": channel, "symbols": [value], "exchange": "kraken"},
                    {"type": "subscribe", "channel": channel, "symbols": ["BTCUSDT"], "exchange": value},
                    {"type": "subscribe", "channel": value, "symbols": ["BTCUSDT"]},
                    {"type": value},
                ]
                for message in messages:
                    ws.send(orjson.dumps(message).decode())
                    reply = recv(ws)
                    sent += 1
                    assert reply["type"] == "error", (message, reply)
                    assert reply["error"].isascii() and reply["error"].isprintable(), reply
            # A publish-channel filter is only a name to compare with: refused or kept, never a path.
            ws.send(orjson.dumps({"type": "subscribe", "channel": "signals", "symbols": [value]}).decode())
            reply = recv(ws)
            assert reply["type"] in ("error", "subscribed"), reply
            if reply["type"] == "subscribed":
                assert reply["symbols"] == [value]
        ws.send(orjson.dumps({"type": "unsubscribe", "channel": "signals"}).decode())
        assert recv(ws)["type"] == "unsubscribed"
    with ws_open(site, "/publish", additional_headers={"Authorization": f"Bearer {TOKEN}"}) as pub:
        for value in values:
            for message in ({"channel": value, "data": {"x": 1}}, {"channel": "signals", "data": value}):
                pub.send(orjson.dumps(message).decode())
                reply = recv(pub)
                assert reply["type"] == "error" and reply["error"].isascii(), reply
    assert_healthy(site, before)
    assert sent > 300
