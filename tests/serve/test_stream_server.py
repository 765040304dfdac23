"""The channel stream server (``mmdata serve stream``) seen by a plain ``websockets`` client:
every message type and every error, price statistics equal to a reference computed from
the recorded trades with Decimal arithmetic, live trades equal to the trades file rows,
publishing (in process, over the token endpoint, refused), the portfolio re-send, the
HTTP routes, the connection limit and duplicate client ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.client
import io
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mmdata.candles import CandleAggregator
from mmdata.errors import ConfigError
from mmdata.serve.market import MarketConfig, Markets, TradeRow
from mmdata.serve.stream import StreamOptions, StreamServer, price_entry, publish, publish_sync
from tests.serve.conftest import FS, Feed, feed, gz_lines, http_get, live_raw, recording, run, until

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ENTRY_KEYS = [
    "exchange",
    "price",
    "change",
    "change_pct",
    "volume",
    "high",
    "low",
    "open",
    "close",
    "last_trade_ms",
]


# -- helpers ---------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def stream_server(data: Path, **options: Any) -> AsyncIterator[StreamServer]:
    """A stream server on a free port of 127.0.0.1 over ``data`` (``options``: StreamOptions)."""
    options.setdefault("port", 0)
    options.setdefault("price_update_interval_s", 0.2)
    markets = Markets(data, MarketConfig(poll_s=0.02))
    server = StreamServer(StreamOptions(**options), markets)
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.close(), 15)
        await markets.close()


def ws_url(server: StreamServer, path: str = "/ws", query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")


async def send(f: Feed, message: Any) -> None:
    await f.ws.send(message if isinstance(message, str | bytes) else orjson.dumps(message).decode())


def texts(f: Feed, start: int = 0) -> list[dict[str, Any]]:
    """The messages with every number as its exact text."""
    return [json.loads(raw, parse_float=str, parse_int=str) for raw in f.raw[start:]]


def of_type(f: Feed, kind: str) -> list[dict[str, Any]]:
    return [m for m in texts(f) if m["type"] == kind]


async def n_messages(f: Feed, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the feed holds ``n`` messages; all of them as exact text."""
    await until(lambda: len(f.raw) >= n or f.closed.is_set(), timeout, f"{n} messages")
    assert len(f.raw) >= n, f"closed ({f.close_code}) after {len(f.raw)} messages"
    return texts(f)


@dataclass(frozen=True)
class Row:
    seq: int
    ts_ms: int
    trade_id: str
    price: str
    qty: str
    side: str


def trades_file(stream_root: Path) -> list[Row]:
    """Every row of the stream's normalized trades files (``trades_ws_*.csv.gz``), in order."""
    rows: list[Row] = []
    for path in sorted(stream_root.glob("2*/trades_ws_*.csv.gz")):
        text = b"\n".join(gz_lines(path)).decode()
        for r in csv.DictReader(io.StringIO(text)):
            rows.append(
                Row(
                    int(r["recv_seq"]),
                    int(r["event_time_ms"]),
                    r["trade_id"],
                    r["price"],
                    r["qty"],
                    r["side"],
                )
            )
    return rows


def reference_entry(exchange: str, rows: list[Row], now_ms: int) -> dict[str, str | None]:
    """The ``price_update`` entry of ``rows`` at ``now_ms``, computed independently: the trades
    of the minutes from floor(now) − 23 h 59 min on, open = first trade of the first minute,
    close = last trade of the last minute, Decimal arithmetic (numbers as exact text)."""
    start = now_ms - now_ms % 60_000 - 1439 * 60_000
    minutes: dict[int, list[Row]] = {}
    for row in rows:
        minute = row.ts_ms - row.ts_ms % 60_000
        if minute >= start:
            minutes.setdefault(minute, []).append(row)
    last = str(rows[-1].ts_ms) if rows else None
    if not minutes:
        price = rows[-1].price if rows else None
        return dict(
            zip(ENTRY_KEYS, [exchange, price, None, None, "0", None, None, None, price, last], strict=True)
        )
    window = [r for m in sorted(minutes) for r in minutes[m]]
    first, final = minutes[min(minutes)][0], minutes[max(minutes)][-1]
    high = low = window[0]
    for r in window:
        if Decimal(r.price) > Decimal(high.price):
            high = r
        if Decimal(r.price) < Decimal(low.price):
            low = r
    with localcontext() as ctx:
        ctx.prec = 100
        volume = sum((Decimal(r.qty) for r in window), Decimal(0))
        change = Decimal(final.price) - Decimal(first.price)
        pct = (change * 100 / Decimal(first.price)).quantize(Decimal("0.0001"), ROUND_HALF_EVEN)

    def fmt(d: Decimal) -> str:
        return format(abs(d) if d.is_zero() else d, "f")

    values = [
        exchange,
        final.price,
        fmt(change),
        fmt(pct),
        format(volume, "f"),
        high.price,
        low.price,
        first.price,
        final.price,
        str(final.ts_ms) if final is rows[-1] else last,
    ]
    return dict(zip(ENTRY_KEYS, values, strict=True))


def check_entry(entry: dict[str, Any], want: dict[str, str | None]) -> None:
    assert list(entry) == ENTRY_KEYS, entry
    assert entry == want


# -- messages and errors ---------------------------------------------------------------------------
def test_connected_ping_and_every_error(recorded_data: Path) -> None:
    too_many = [f"S{i}" for i in range(101)]
    bad: list[tuple[Any, str]] = [
        ("not json", "Invalid message format"),
        ("[1, 2]", "Invalid message format"),
        ("{}", "Invalid message format"),
        ('"ping"', "Invalid message format"),
        ({"type": 5}, "Invalid message format"),
        (b'{"type":"ping"}', "Invalid message format: send JSON in text frames"),
        ({"type": "fly"}, "Unknown message type: fly. Valid: ping, subscribe, unsubscribe"),
        (
            {"type": "subscribe", "channel": "x"},
            "Unknown channel: x. Valid: price_updates, trades, signals, trade_executed, portfolio",
        ),
        (
            {"type": "unsubscribe", "channel": "prices"},
            "Unknown channel: prices. Valid: price_updates, trades, signals, trade_executed, portfolio",
        ),
        (
            {"type": "subscribe", "symbols": ["BTCUSDT"]},
            "Invalid message format: channel must be a string. "
            "Valid: price_updates, trades, signals, trade_executed, portfolio",
        ),
        (
            {"type": "subscribe", "channel": "trades", "symbols": "BTCUSDT"},
            "Invalid message format: symbols must be a list of strings",
        ),
        (
            {"type": "subscribe", "channel": "trades", "symbols": [1]},
            "Invalid message format: symbols must be a list of strings",
        ),
        (
            {"type": "subscribe", "channel": "trades", "symbols": ["NOPE"]},
            "Invalid symbol: NOPE. no recorded data for binance NOPE",
        ),
        (
            {"type": "subscribe", "channel": "trades", "symbols": ["../secret"]},
            "Invalid symbol: ../secret. symbol '../secret' is not a symbol "
            "(letters and digits, optional / - :)",
        ),
        (
            {"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"], "exchange": "ftx"},
            "Invalid exchange: ftx. Valid: binance, bitfinex, kraken",
        ),
        (
            {"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"], "exchange": 7},
            "Invalid message format: exchange must be a string",
        ),
        (
            {"type": "subscribe", "channel": "price_updates", "symbols": too_many},
            "Too many symbols: at most 100 per channel",
        ),
        (
            {"type": "subscribe", "channel": "price_updates"},
            'symbols is required for price_updates, e.g. ["BTCUSDT"]',
        ),
        (
            {"type": "subscribe", "channel": "portfolio", "symbols": ["BTCUSDT"]},
            "portfolio has no symbols: subscribe without them",
        ),
        (
            {"type": "subscribe", "channel": "signals", "symbols": ["BTC.USDT"]},
            "Invalid symbol: BTC.USDT. A symbol is letters and digits, optional / - :",
        ),
        (
            {"type": "subscribe", "channel": "trades", "symbols": ["x" * 65]},
            "Invalid symbol: " + "x" * 40 + ".... A symbol is 1 to 64 printable ASCII characters "
            "(BTCUSDT, BTC/USD, tBTCUSD)",
        ),
    ]

    async def go() -> None:
        async with (
            stream_server(recorded_data) as server,
            feed(ws_url(server, query="client_id=tester-1")) as f,
        ):
            hello = (await n_messages(f, 1))[0]
            assert hello["type"] == "connected" and hello["client_id"] == "tester-1"
            assert ISO_MS.match(hello["timestamp"])
            await send(f, {"type": "ping"})
            for message, _ in bad:
                await send(f, message)
            await send(f, {"type": "ping"})
            got = await n_messages(f, len(bad) + 3)
            assert got[1]["type"] == "pong" and set(got[1]) == {"type", "timestamp"}
            assert ISO_MS.match(got[1]["timestamp"])
            for (message, want), reply in zip(bad, got[2:-1], strict=True):
                assert reply["type"] == "error" and set(reply) == {"type", "error", "timestamp"}, message
                assert reply["error"] == want, message
                assert ISO_MS.match(reply["timestamp"])
            assert got[-1]["type"] == "pong"  # still open after every bad message

            # A label names one stream per channel; a stream has one label.
            start = len(f.raw)
            await send(
                f,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["BTCUSD"],
                    "exchange": "kraken",
                },
            )
            await send(
                f,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["BTCUSD"],
                    "exchange": "bitfinex",
                },
            )
            await send(
                f,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["BTC/USD"],
                    "exchange": "kraken",
                },
            )
            await send(f, {"type": "subscribe", "channel": "signals"})
            await send(f, {"type": "unsubscribe", "channel": "signals", "symbols": ["BTCUSDT"]})
            await until(lambda: len(f.raw) >= start + 6, what="replies")
            replies = texts(f, start)
            assert [m["type"] for m in replies] == [
                "subscribed",
                "price_update",
                "error",
                "error",
                "subscribed",
                "error",
            ], replies
            assert replies[2]["error"] == (
                "Symbol BTCUSD is already subscribed on kraken in price_updates: unsubscribe it first"
            )
            assert replies[3]["error"] == "Symbol BTC/USD names the stream already subscribed as BTCUSD"
            assert (
                replies[5]["error"] == "Subscribed to every message of signals: unsubscribe without symbols"
            )
            assert server.errors_sent == len(bad) + 3

    run(go())


def test_oversized_frame_closes_1009(recorded_data: Path) -> None:
    async def go() -> None:
        async with stream_server(recorded_data) as server, feed(ws_url(server)) as f:
            await send(f, {"type": "ping", "pad": "x" * 4000})  # allowed: under 4096 bytes
            await f.wait_for(lambda m: m["type"] == "pong")
            await send(f, {"type": "ping", "pad": "x" * 5000})
            assert await f.wait_closed() == 1009

    run(go())


# -- price updates ---------------------------------------------------------------------------------
def test_price_updates_equal_reference_from_trades_files(recorded_data: Path) -> None:
    rows = {e: trades_file(recorded_data / e / FS[e]) for e in FS}
    assert all(len(r) > 3 for r in rows.values()), {e: len(r) for e, r in rows.items()}

    async def go() -> None:
        async with (
            stream_server(recorded_data) as server,
            feed(ws_url(server, query="client_id=p1")) as a,
            feed(ws_url(server, query="client_id=p2&exchange=kraken")) as b,
            feed(ws_url(server, query="client_id=p3")) as c,
        ):
            await send(a, {"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"]})
            await send(
                a,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["BTC/USD"],
                    "exchange": "kraken",
                },
            )
            await send(
                a,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["BTC/USD"],
                    "exchange": "bitfinex",
                },
            )
            await send(b, {"type": "subscribe", "channel": "price_updates", "symbols": ["BTC/USD", "btcusd"]})
            await send(c, {"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"]})
            await until(lambda: len(of_type(a, "price_update")) >= 5, what="price updates for a")
            await until(lambda: len(of_type(c, "price_update")) >= 3, what="price updates for c")
            got = texts(a)
            acks = [m for m in got if m["type"] in ("subscribed", "error")]
            assert [(m["type"], m.get("exchange"), m.get("symbols")) for m in acks] == [
                ("subscribed", "binance", ["BTCUSDT"]),
                ("subscribed", "kraken", ["BTC/USD"]),
                ("error", None, None),  # BTC/USD is taken by kraken in this channel
            ], acks
            assert acks[2]["error"].startswith("Symbol BTC/USD is already subscribed on kraken")
            b_ack = next(m for m in texts(b) if m["type"] in ("subscribed", "error"))
            assert (
                b_ack["type"] == "error"
                and "names the stream already subscribed as BTC/USD" in b_ack["error"]
            )
            updates = of_type(a, "price_update")
            # Right after the first ack: only BTCUSDT; from the second on: both.
            assert list(updates[0]["symbols"]) == ["BTCUSDT"]
            both = [u for u in updates if len(u["symbols"]) == 2]
            assert len(both) >= 3 and updates[updates.index(both[0]) :] == both
            for update in both:
                assert set(update) == {"type", "symbols", "timestamp"}
                assert ISO_MS.match(update["timestamp"])
                assert list(update["symbols"]) == ["BTC/USD", "BTCUSDT"]  # sorted by the client's text
                now_ms = parse_ms(update["timestamp"])
                check_entry(update["symbols"]["BTCUSDT"], reference_entry("binance", rows["binance"], now_ms))
                check_entry(update["symbols"]["BTC/USD"], reference_entry("kraken", rows["kraken"], now_ms))
            stamps = [u["timestamp"] for u in updates]
            assert stamps == sorted(stamps)
            for update in of_type(c, "price_update"):
                assert list(update["symbols"]) == ["BTCUSDT"]
                check_entry(
                    update["symbols"]["BTCUSDT"],
                    reference_entry("binance", rows["binance"], parse_ms(update["timestamp"])),
                )
            # a and c share no subscription set; two identical sets share one message
            await send(
                b,
                {
                    "type": "subscribe",
                    "channel": "price_updates",
                    "symbols": ["tBTCUSD"],
                    "exchange": "bitfinex",
                },
            )
            await until(lambda: len(of_type(b, "price_update")) >= 2, what="price updates for b")
            for update in of_type(b, "price_update"):
                check_entry(
                    update["symbols"]["tBTCUSD"],
                    reference_entry("bitfinex", rows["bitfinex"], parse_ms(update["timestamp"])),
                )
            health = server.status()["stream_health"]["price_updates"]
            assert health["is_healthy"] and health["error_count"] == 0 and ISO_MS.match(health["last_update"])

    run(go())


def parse_ms(stamp: str) -> int:
    """Milliseconds since the epoch of a ``...T..:..:..mmmZ`` timestamp."""
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000 + 0.5)


def _trade(ts_ms: int, price: str, qty: str = "1", seq: int = 1) -> TradeRow:
    return TradeRow(seq, ts_ms * 1_000_000, ts_ms, str(seq), price, qty, "buy")


def test_price_entry_window_and_nulls() -> None:
    now = 1_800_000_000_000 + 30_123  # 30 s into a minute
    start = now - now % 60_000 - 1439 * 60_000
    candles = CandleAggregator()
    assert json.loads(price_entry("kraken", candles, None, now)) == {
        "exchange": "kraken",
        "price": None,
        "change": None,
        "change_pct": None,
        "volume": 0,
        "high": None,
        "low": None,
        "open": None,
        "close": None,
        "last_trade_ms": None,
    }
    old = _trade(start - 1, "100.50", "2")  # one ms before the window's first minute
    candles.add(old.ts_ms, old.price, old.qty)
    entry = json.loads(price_entry("kraken", candles, old, now), parse_float=str, parse_int=str)
    assert entry["price"] == entry["close"] == "100.50" and entry["volume"] == "0"
    assert entry["open"] is None and entry["change"] is None and entry["last_trade_ms"] == str(old.ts_ms)
    rows = [
        _trade(start, "200.0", "0.10", 2),  # the first minute of the window
        _trade(start + 5, "190.00", "0.20", 3),
        _trade(now - 1000, "210", "0.30", 4),
        _trade(now - 500, "199.99", "0.000001", 5),
    ]
    for r in rows:
        candles.add(r.ts_ms, r.price, r.qty)
    entry = json.loads(price_entry("kraken", candles, rows[-1], now), parse_float=str, parse_int=str)
    assert entry == {
        "exchange": "kraken",
        "price": "199.99",
        "change": "-0.01",
        "change_pct": "-0.0050",
        "volume": "0.600001",
        "high": "210",
        "low": "190.00",
        "open": "200.0",
        "close": "199.99",
        "last_trade_ms": str(now - 500),
    }
    flat = CandleAggregator()
    flat.add(now, "5.0", "1")
    flat.add(now, "5.00", "1")
    entry = json.loads(price_entry("binance", flat, _trade(now, "5.00"), now), parse_float=str)
    assert entry["change"] == "0.00" and entry["change_pct"] == "0.0000"  # never -0


# -- live trades and unsubscribing -----------------------------------------------------------------
def test_live_trades_equal_trades_file_and_unsubscribe_stops_delivery(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def go() -> tuple[list[dict[str, Any]], list[Row]]:
        async with recording(data, "binance", rate=3.0) as rec:
            await until(lambda: len(trades_file(rec.root)) > 0, 20, "a trade on disk")
            async with (
                stream_server(data) as server,
                feed(ws_url(server, query="client_id=a")) as a,
                feed(ws_url(server, query="client_id=b")) as b,
            ):
                for f in (a, b):
                    await send(f, {"type": "subscribe", "channel": "trades", "symbols": ["BTC/USDT"]})
                    await send(f, {"type": "subscribe", "channel": "price_updates", "symbols": ["BTCUSDT"]})
                await until(lambda: len(of_type(b, "trade")) >= 3, 20, "trades for b")
                await send(b, {"type": "unsubscribe", "channel": "trades", "symbols": ["BTC/USDT"]})
                ack = await b.wait_for(lambda m: m["type"] == "unsubscribed")
                assert ack["channel"] == "trades" and ack["symbols"] == ["BTC/USDT"]
                cut = b.messages.index(ack)
                seen = len(of_type(a, "trade"))
                await until(lambda: len(of_type(a, "trade")) >= seen + 3, 20, "more trades for a")
                assert not [m for m in b.messages[cut:] if m["type"] == "trade"]
                await send(b, {"type": "unsubscribe", "channel": "price_updates"})
                ack = await b.wait_for(
                    lambda m: m["type"] == "unsubscribed" and m["channel"] == "price_updates"
                )
                assert ack["symbols"] == []
                cut = b.messages.index(ack)
                seen = len(of_type(a, "price_update"))
                await until(lambda: len(of_type(a, "price_update")) >= seen + 3, 10, "price updates for a")
                assert not [m for m in b.messages[cut:] if m["type"] in ("trade", "price_update")]

                await rec.finish()
                last = orjson.loads(live_raw(rec.root, "live_trades")[-1])["recv_seq"]
                await a.wait_for(
                    lambda m: m["type"] == "trade" and m["recv_seq"] == last, 15, "the last trade"
                )
                rows = trades_file(rec.root)
                assert rows[-1].seq == last
                # The statistics after the last trade equal the trades file's.
                await until(
                    lambda: (
                        sum(
                            u["symbols"]["BTCUSDT"]["last_trade_ms"] == str(rows[-1].ts_ms)
                            for u in of_type(a, "price_update")
                        )
                        >= 2
                    ),
                    10,
                    "price updates with the last trade",
                )
                final = of_type(a, "price_update")[-1]
                check_entry(
                    final["symbols"]["BTCUSDT"],
                    reference_entry("binance", rows, parse_ms(final["timestamp"])),
                )
                assert server.status()["stream_health"]["trades"]["is_healthy"]
                return of_type(a, "trade"), rows

    trades, rows = run(go(), timeout=90)
    for m in trades:
        assert list(m) == [
            "type",
            "channel",
            "exchange",
            "symbol",
            "trade_id",
            "price",
            "qty",
            "side",
            "ts_ms",
            "recv_seq",
            "timestamp",
        ]
        assert (m["channel"], m["exchange"], m["symbol"]) == ("trades", "binance", "BTC/USDT")
        assert ISO_MS.match(m["timestamp"])
    got = [
        (int(m["recv_seq"]), int(m["ts_ms"]), m["trade_id"], m["price"], m["qty"], m["side"]) for m in trades
    ]
    want = [(r.seq, r.ts_ms, r.trade_id, r.price, r.qty, r.side) for r in rows if r.seq >= got[0][0]]
    assert got == want  # every trade from the first one received, once, in order, exact text
    assert len(got) >= 6


# -- publishing ------------------------------------------------------------------------------------
TOKEN = "s3cret-token"


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    """A handshake the server must refuse: status, headers (lower-case), JSON body."""
    with pytest.raises(InvalidStatus) as err:
        async with connect(url, open_timeout=10, **kwargs):
            pass  # pragma: no cover - refused
    resp = err.value.response
    headers = {k.lower(): v for k, v in resp.headers.raw_items()}
    assert headers.get("content-type") == "application/json"
    return resp.status_code, headers, orjson.loads(resp.body or b"{}")


def test_publish_in_process_and_over_the_token_endpoint(recorded_data: Path) -> None:
    async def go() -> None:
        async with (
            stream_server(recorded_data, publish_token=TOKEN) as server,
            feed(ws_url(server, query="client_id=all")) as everything,
            feed(ws_url(server, query="client_id=eth")) as eth,
            feed(ws_url(server, query="client_id=exec")) as executed,
        ):
            await send(everything, {"type": "subscribe", "channel": "signals"})
            await send(eth, {"type": "subscribe", "channel": "signals", "symbols": ["ETH/USDT"]})
            await send(executed, {"type": "subscribe", "channel": "trade_executed"})
            for f in (everything, eth, executed):
                ack = await f.wait_for(lambda m: m["type"] == "subscribed")
                assert set(ack) == {"type", "channel", "symbols", "timestamp"}
            assert eth.messages[-1]["symbols"] == ["ETH/USDT"]

            n = server.publish(
                "signals", {"signal_type": "BUY", "symbol": "BTCUSDT", "price": Decimal("60000.10")}
            )
            assert n == 1
            n = server.publish("signals", {"signal_type": "SELL", "symbol": "ETHUSDT", "timestamp": "mine"})
            assert n == 2
            assert server.publish("signals", {"signal_type": "HOLD"}) == 2  # no symbol: every subscriber
            got = [m for m in await _wait_n(everything, "signal", 3)]
            assert got[0] == {
                "type": "signal",
                "signal_type": "BUY",
                "symbol": "BTCUSDT",
                "price": "60000.10",
                "channel": "signals",
                "timestamp": got[0]["timestamp"],
            }
            assert ISO_MS.match(got[0]["timestamp"])
            assert got[1]["timestamp"] == "mine" and got[2]["signal_type"] == "HOLD"
            assert [m["signal_type"] for m in await _wait_n(eth, "signal", 2)] == ["SELL", "HOLD"]

            for channel, payload in (("trades", {}), ("price_updates", {}), ("nope", {}), ("signals", [1])):
                with pytest.raises(ValueError, match=r"Unknown channel|JSON object"):
                    server.publish(channel, payload)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="not JSON"):
                server.publish("signals", {"x": object()})

            # Over the network: the client function, header or ?token=.
            base = f"ws://127.0.0.1:{server.port}"
            assert (
                await publish(base, TOKEN, "trade_executed", {"order_id": "o-1", "qty": Decimal("0.5")}) == 1
            )
            trade = (await _wait_n(executed, "trade_executed", 1))[0]
            assert (
                trade["order_id"] == "o-1" and trade["qty"] == "0.5" and trade["channel"] == "trade_executed"
            )
            assert (
                await asyncio.to_thread(
                    publish_sync, base + "/publish", TOKEN, "signals", {"signal_type": "X"}
                )
                == 2
            )
            async with connect(ws_url(server, "/publish", f"token={TOKEN}")) as pub:
                big = {"signal_type": "BIG", "blob": "y" * 100_000}  # a publisher may send large frames
                for message in (
                    {"channel": "signals", "data": big},
                    {"type": "ping"},
                    "junk",
                    {"channel": "price_updates", "data": {}},
                    {"channel": "signals", "data": [1]},
                    {"type": "shout", "channel": "signals", "data": {}},
                ):
                    await pub.send(message if isinstance(message, str) else orjson.dumps(message).decode())
                replies = [orjson.loads(await asyncio.wait_for(pub.recv(), 10)) for _ in range(6)]
            assert replies[0] == {
                "type": "published",
                "channel": "signals",
                "delivered": 2,
                "timestamp": replies[0]["timestamp"],
            }
            assert replies[1]["type"] == "pong"
            assert [r.get("error") for r in replies[2:]] == [
                "Invalid message format",
                "Unknown channel: price_updates. Publish to one of: signals, trade_executed, portfolio",
                "Invalid message format: data must be a JSON object",
                "Unknown message type: shout. Valid: publish, ping",
            ]
            assert (await _wait_n(everything, "signal", 5))[-1]["blob"] == "y" * 100_000

            # Refused: missing, wrong or malformed tokens.
            status, headers, body = await refused(ws_url(server, "/publish"))
            assert (
                status == 401
                and "token is required" in body["error"]
                and "bearer" in headers["www-authenticate"].lower()
            )
            status, _, body = await refused(ws_url(server, "/publish", "token=wrong"))
            assert (status, body) == (401, {"error": "wrong token"})
            status, _, body = await refused(
                ws_url(server, "/publish", f"token={TOKEN}"),
                additional_headers={"Authorization": "Bearer nope"},
            )
            assert status == 401  # the header wins over the query
            status, _, _ = await refused(
                ws_url(server, "/publish"), additional_headers={"Authorization": TOKEN}
            )
            assert status == 401  # not a Bearer header
            with pytest.raises(ConfigError, match="401"):
                await publish(base, "wrong", "signals", {})
            with pytest.raises(ConfigError, match="Unknown channel"):
                await publish(base, TOKEN, "trades", {})
            assert server.published == {"signals": 5, "trade_executed": 1, "portfolio": 0}

        # No token configured: publishing over the network is off (403, says how to enable it).
        async with stream_server(recorded_data) as server:
            status, _, body = await refused(ws_url(server, "/publish", "token=anything"))
            assert (
                status == 403
                and "--publish-token" in body["error"]
                and "MMDATA_PUBLISH_TOKEN" in body["error"]
            )
            with pytest.raises(ConfigError, match="403"):
                await publish(f"ws://127.0.0.1:{server.port}", "anything", "signals", {})

    run(go(), timeout=60)


async def _wait_n(f: Feed, kind: str, n: int) -> list[dict[str, Any]]:
    await until(lambda: len(of_type(f, kind)) >= n, 10, f"{n} {kind} messages")
    return of_type(f, kind)


def test_portfolio_is_resent_at_its_interval(recorded_data: Path) -> None:
    async def go() -> None:
        async with (
            stream_server(recorded_data, portfolio_update_interval_s=0.25) as server,
            feed(ws_url(server)) as early,
        ):
            await send(early, {"type": "subscribe", "channel": "portfolio_update"})  # the seed's alias
            ack = await early.wait_for(lambda m: m["type"] == "subscribed")
            assert ack["channel"] == "portfolio"
            assert (
                server.publish(
                    "portfolio_update", {"equity": Decimal("1000.50"), "positions": {"BTC": "0.1"}}
                )
                == 1
            )
            updates = await _wait_n(early, "portfolio_update", 4)
            for u in updates:
                assert set(u) == {"type", "channel", "timestamp", "data"} and u["channel"] == "portfolio"
                assert u["data"] == {"equity": "1000.50", "positions": {"BTC": "0.1"}}
            stamps = [u["timestamp"] for u in updates]
            assert stamps == sorted(stamps) and len(set(stamps)) >= 3  # re-sent, each with its time
            async with feed(ws_url(server)) as late:
                await send(late, {"type": "subscribe", "channel": "portfolio"})
                got = await n_messages(late, 3)
                assert [m["type"] for m in got] == ["connected", "subscribed", "portfolio_update"]
                assert got[2]["data"]["equity"] == "1000.50"
            await send(early, {"type": "unsubscribe", "channel": "portfolio"})
            ack = await early.wait_for(lambda m: m["type"] == "unsubscribed")
            cut = early.messages.index(ack)
            server.publish("portfolio", {"equity": 1})
            await asyncio.sleep(0.6)  # two re-send intervals: nothing may come
            assert not [m for m in early.messages[cut:] if m["type"] == "portfolio_update"]
            assert server.status()["stream_health"]["portfolio"]["is_healthy"]

    run(go())


# -- HTTP, limits, duplicate client ids, options ---------------------------------------------------
def _request(port: int, method: str, target: str) -> tuple[int, dict[str, str], Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, orjson.loads(resp.read())
    finally:
        conn.close()


def test_status_health_routes_and_limits(recorded_data: Path) -> None:
    async def go() -> None:
        async with stream_server(recorded_data, max_connections=2, ping_interval_s=7) as server:
            port = server.port
            async with feed(ws_url(server, query="client_id=one")) as one, feed(ws_url(server)) as two:
                hello = await two.wait_for(lambda m: m["type"] == "connected")
                assert re.fullmatch(
                    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", hello["client_id"]
                )
                await one.wait_for(lambda m: m["type"] == "connected")
                status, headers, body = await refused(ws_url(server, query="client_id=three"))
                assert status == 503 and headers["retry-after"] == "5" and "at most 2" in body["error"]
                answer = await http_get(port, "/websocket/status")
                assert answer.status == 200
                doc = answer.json
                assert set(doc) == {
                    "enabled",
                    "active_connections",
                    "max_connections",
                    "ping_interval",
                    "price_update_interval",
                    "portfolio_update_interval",
                    "stream_health",
                }
                assert (doc["enabled"], doc["active_connections"], doc["max_connections"]) == (True, 2, 2)
                assert (
                    doc["ping_interval"],
                    doc["price_update_interval"],
                    doc["portfolio_update_interval"],
                ) == (
                    7,
                    0.2,
                    5.0,
                )
                assert list(doc["stream_health"]) == [
                    "price_updates",
                    "trades",
                    "signals",
                    "trade_executed",
                    "portfolio",
                ]
                for health in doc["stream_health"].values():
                    assert set(health) == {
                        "last_update",
                        "error_count",
                        "recovery_attempts",
                        "is_healthy",
                        "started_at",
                    }
                    assert health["is_healthy"] is True and health["error_count"] == 0
                    assert ISO_MS.match(health["started_at"])
                answer = await http_get(port, "/health")
                assert (
                    answer.status == 200 and answer.json["ok"] is True and answer.json["server"] == "stream"
                )
                assert answer.json["connections"] == 2 and answer.json["refused"] == 1
            await until(lambda: server.connections == 0, what="clients gone")
            async with feed(ws_url(server)) as again:
                await again.wait_for(lambda m: m["type"] == "connected")  # room again
            for target, want in (
                ("/nope", 404),
                ("/ws/../etc", 404),
                ("/ws?client_id=x", 426),
                ("/publish", 403),
            ):
                answer = await http_get(port, target)
                assert answer.status == want and "error" in answer.json, (target, answer)
            for method in ("POST", "PUT", "DELETE"):
                for path in ("/ws", "/publish", "/websocket/status", "/health"):
                    status, headers, body = await asyncio.to_thread(_request, port, method, path)
                    assert (status, headers["allow"]) == (405, "GET") and "error" in body
            for query, text in (
                ("client_id=" + "x" * 65, "too long"),
                ("client_id=a%00b", "printable"),
                ("exchange=ftx", "unknown exchange"),
            ):
                status, _, body = await refused(ws_url(server, query=query))
                assert status == 400 and text in body["error"], (query, body)

    run(go())


def test_duplicate_client_id_replaces_the_older_connection(recorded_data: Path) -> None:
    async def go() -> None:
        async with stream_server(recorded_data) as server, feed(ws_url(server, query="client_id=dup")) as old:
            await send(old, {"type": "subscribe", "channel": "signals"})
            await old.wait_for(lambda m: m["type"] == "subscribed")
            assert server.publish("signals", {"n": 1}) == 1
            async with feed(ws_url(server, query="client_id=dup")) as new:
                await new.wait_for(lambda m: m["type"] == "connected" and m["client_id"] == "dup")
                assert await old.wait_closed() == 4000
                assert old.ws.close_reason == "replaced by a newer connection with the same client_id"
                assert server.publish("signals", {"n": 2}) == 0  # the old subscription went with it
                await send(new, {"type": "subscribe", "channel": "signals"})
                await new.wait_for(lambda m: m["type"] == "subscribed")
                assert server.publish("signals", {"n": 3}) == 1
                await until(lambda: server.connections == 1, what="one connection")
                assert list(server.clients) == ["dup"] and server.replaced == 1
            await until(lambda: not server.clients, what="no client")

    run(go())


def test_options_from_env_and_disabled_server(recorded_data: Path) -> None:
    opts = StreamOptions.from_env(
        {
            "WEBSOCKET_ENABLED": "false",
            "WEBSOCKET_PING_INTERVAL": "15",
            "WEBSOCKET_PRICE_UPDATE_INTERVAL": "1.5",
            "WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL": "10",
            "WEBSOCKET_MAX_CONNECTIONS": "250",
            "MMDATA_PUBLISH_TOKEN": "tok",
            "MMDATA_EXCHANGE": "kraken",
        },
        port=9000,
        publish_token=None,  # not given on the command line: the environment's stays
    )
    assert (opts.enabled, opts.ping_interval_s, opts.price_update_interval_s) == (False, 15, 1.5)
    assert (opts.portfolio_update_interval_s, opts.max_connections, opts.publish_token) == (10, 250, "tok")
    assert (opts.default_exchange, opts.port) == ("kraken", 9000)
    defaults = StreamOptions.from_env({})
    assert (defaults.enabled, defaults.port, defaults.max_connections, defaults.ping_interval_s) == (
        True,
        8000,
        1000,
        30,
    )
    assert (
        defaults.price_update_interval_s,
        defaults.portfolio_update_interval_s,
        defaults.publish_token,
    ) == (3, 5, None)
    for env in (
        {"WEBSOCKET_ENABLED": "maybe"},
        {"WEBSOCKET_PING_INTERVAL": "soon"},
        {"WEBSOCKET_PRICE_UPDATE_INTERVAL": "0"},
        {"WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL": "nan"},
        {"WEBSOCKET_MAX_CONNECTIONS": "-5"},
    ):
        with pytest.raises(ConfigError, match=next(iter(env))):
            StreamOptions.from_env(env)
    with pytest.raises(ConfigError, match="unknown stream option"):
        StreamOptions.from_env({}, colour="red")

    async def go() -> None:
        markets = Markets(recorded_data)
        with pytest.raises(ConfigError, match="WEBSOCKET_ENABLED"):
            await StreamServer(StreamOptions(port=0, enabled=False), markets).start()
        with pytest.raises(ConfigError, match="unknown default exchange"):
            await StreamServer(StreamOptions(port=0, default_exchange="ftx"), markets).start()
        server = StreamServer(StreamOptions(port=0, default_exchange="Kraken"), markets)
        await server.start()
        try:
            assert server.health()["default_exchange"] == "kraken"
            async with feed(ws_url(server)) as f:
                await send(f, {"type": "subscribe", "channel": "trades", "symbols": ["BTC/USD"]})
                ack = await f.wait_for(lambda m: m["type"] in ("subscribed", "error"))
                assert ack == {**ack, "type": "subscribed", "exchange": "kraken", "symbols": ["BTC/USD"]}
        finally:
            await server.close()
            await markets.close()
        assert server._tasks == [] and all(
            t.done() for t in asyncio.all_tasks() if t.get_name().startswith("stream-")
        )

    run(go())
