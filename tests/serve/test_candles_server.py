"""The candle server (``mmdata serve candles``) seen by a plain ``websockets`` client.

Every bar a client receives is compared with a reference computed here, independently of
:mod:`mmdata.candles`, from the trades the recorder wrote (``trades_ws_*.csv.gz``) or that a
test wrote itself: calendar arithmetic on :class:`datetime` for the interval a trade falls
in (1W from Monday 00:00 UTC), :class:`~decimal.Decimal` sums for the volumes, and the
trades' own text for the prices. Client messages are parsed with every JSON number kept as
its exact text (:class:`Num`), so ``"open": 60000.10`` must read back as ``60000.10``.

Three kinds of data root:

* ``recorded_data`` (session fixture): a few finished seconds per venue, for the symbol
  spellings and the default exchange;
* a *synthetic* root (:func:`synthetic_root`): a copied ledger plus a trades file and a
  ``live/live_trades.ndjson`` this module writes with chosen exchange times — three weeks of
  trades across every interval boundary, and trades appended while a client listens to
  cross a 1m/5m/1W boundary on demand;
* a root the real recorder writes on the simulator while the server runs (``recording``),
  for the throttling of live updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import gzip
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mmdata.serve.app import ServeOptions, Servers, start_servers
from mmdata.serve.candles import CandleOptions
from mmdata.serve.market import Market, MarketConfig, TradeFeed
from tests.serve.conftest import FS, gz_lines, http_get, recording, run, until
from tests.serve_process import mmdata_process

NAMES = ("1m", "5m", "15m", "1h", "4h", "1D", "1W")
VALID_TEXT = "Invalid interval: 10m. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W"
BAR_KEYS = {"time", "open", "high", "low", "close", "volume", "quoteVolume"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: 2024-01-01 was a Monday: every interval opens at its midnight.
MONDAY = datetime(2024, 1, 1, tzinfo=UTC)


# -- the reference -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trade:
    """One trade as recorded: receive order, exchange time, exact price and quantity text."""

    seq: int
    ts_ms: int
    price: str
    qty: str


def ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (integer arithmetic)."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def opening(ts_ms: int, name: str) -> datetime:
    """The open of the ``name`` interval holding ``ts_ms``, on the calendar (UTC)."""
    t = EPOCH + timedelta(milliseconds=ts_ms)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "1W":
        return day - timedelta(days=t.weekday())  # Monday 00:00
    if name == "1D":
        return day
    if name == "4h":
        return day.replace(hour=t.hour - t.hour % 4)
    if name == "1h":
        return day.replace(hour=t.hour)
    step = {"1m": 1, "5m": 5, "15m": 15}[name]
    return day.replace(hour=t.hour, minute=t.minute - t.minute % step)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def text(value: Decimal) -> str:
    return format(value, "f")


def fold(opens_at: datetime, minutes: list[list[Trade]]) -> dict[str, str]:
    """One candle from its minutes (oldest first, each in receive order): open of the first
    minute, close of the last, the first highest and lowest trade, exact sums."""
    seq = [t for minute in minutes for t in minute]
    high = low = seq[0]
    with localcontext() as ctx:
        ctx.prec = 200  # exact: far more digits than any price x quantity has
        volume = quote = Decimal(0)
        for t in seq:
            if Decimal(t.price) > Decimal(high.price):
                high = t
            if Decimal(t.price) < Decimal(low.price):
                low = t
            volume += Decimal(t.qty)
            quote += Decimal(t.price) * Decimal(t.qty)
    return {
        "time": iso(opens_at),
        "open": minutes[0][0].price,
        "high": high.price,
        "low": low.price,
        "close": minutes[-1][-1].price,
        "volume": text(volume),
        "quoteVolume": text(quote),
    }


def reference_bars(trades: Iterable[Trade], name: str) -> list[dict[str, str]]:
    """Every ``name`` candle with a trade, oldest first (minutes without trades have no bar)."""
    by_minute: dict[datetime, list[Trade]] = {}
    for t in trades:
        by_minute.setdefault(opening(t.ts_ms, "1m"), []).append(t)
    buckets: dict[datetime, list[list[Trade]]] = {}
    for minute in sorted(by_minute):
        buckets.setdefault(opening(ms(minute), name), []).append(by_minute[minute])
    return [fold(start, minutes) for start, minutes in sorted(buckets.items())]


def latest_states(trades: Sequence[Trade], name: str) -> list[dict[str, str] | None]:
    """``out[k]``: the newest ``name`` candle after the first ``k`` trades (receive order)."""
    out: list[dict[str, str] | None] = [None]
    by_minute: dict[datetime, list[Trade]] = {}
    newest: datetime | None = None
    for t in trades:
        minute = opening(t.ts_ms, "1m")
        by_minute.setdefault(minute, []).append(t)
        newest = minute if newest is None or minute > newest else newest
        start = opening(ms(newest), name)
        minutes = [by_minute[m] for m in sorted(by_minute) if opening(ms(m), name) == start]
        out.append(fold(start, minutes))
    return out


def read_trades(path: Path) -> list[Trade]:
    """The trades of a ``trades_ws_*.csv.gz`` (complete gzip members), in file order."""
    body = b"\n".join(gz_lines(path)).decode()
    return [
        Trade(int(r["recv_seq"]), int(r["event_time_ms"]), r["price"], r["qty"])
        for r in csv.DictReader(io.StringIO(body))
    ]


def stream_trades(data: Path, exchange: str) -> list[Trade]:
    """Every trade of the recorded days of a venue's stream."""
    out: list[Trade] = []
    for path in sorted((data / exchange / FS[exchange]).glob("*/trades_ws_*.csv.gz")):
        out += read_trades(path)
    return out


# -- what the client receives -----------------------------------------------------------------------


class Num(str):
    """A JSON number, as the exact text the server wrote."""


def parse(raw: str | bytes) -> Any:
    return json.loads(raw, parse_float=Num, parse_int=Num)


def bar_of(bar: dict[str, Any]) -> dict[str, str]:
    """A received bar as plain text values (numbers must be JSON numbers)."""
    assert set(bar) == BAR_KEYS, bar
    assert isinstance(bar["time"], str) and not isinstance(bar["time"], Num), bar
    for key in BAR_KEYS - {"time"}:
        assert isinstance(bar[key], Num), (key, bar)
    return {k: str(v) for k, v in bar.items()}


@dataclass
class Client:
    """A plain ``websockets`` client that reads everything in the background, with the
    monotonic time each message arrived."""

    ws: ClientConnection
    raw: list[bytes] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    #: Binary frames received (the candle server sends text frames only).
    binary: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    task: asyncio.Task[None] | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    self.binary += 1
                data = message.encode() if isinstance(message, str) else message
                self.raw.append(data)
                self.messages.append(parse(data))
                self.times.append(now)
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._new.set()

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(orjson.dumps(message).decode() if isinstance(message, dict) else message)

    async def wait_for(
        self,
        check: Callable[[dict[str, Any]], bool],
        *,
        start: int = 0,
        timeout: float = 10.0,
        what: str = "message",
    ) -> int:
        """Index of the first message from ``start`` on for which ``check`` is true."""
        deadline = time.monotonic() + timeout
        seen = start
        while True:
            for i in range(seen, len(self.messages)):
                if check(self.messages[i]):
                    return i
            seen = max(seen, len(self.messages))
            if self.closed.is_set():
                raise AssertionError(f"{what}: connection closed ({self.close_code}) before it came")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not received within {timeout} s (last {self.messages[-3:]})")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def ask(self, message: dict[str, Any] | str | bytes, timeout: float = 10.0) -> dict[str, Any]:
        """Send one message; the server's answer to it (updates that arrive meanwhile skipped)."""
        start = len(self.messages)
        await self.send(message)
        i = await self.wait_for(lambda m: m.get("type") != "update", start=start, timeout=timeout)
        return self.messages[i]

    async def subscribe(self, symbol: str, interval: str, **extra: Any) -> dict[str, Any]:
        answer = await self.ask({"type": "subscribe", "symbol": symbol, "interval": interval, **extra})
        assert answer["type"] == "initial", answer
        return answer

    def updates(self, interval: str | None = None, symbol: str | None = None) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages
            if m["type"] == "update"
            and (interval is None or m["interval"] == interval)
            and (symbol is None or m["symbol"] == symbol)
        ]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@contextlib.asynccontextmanager
async def client(port: int, path: str = "/", **kwargs: Any) -> AsyncIterator[Client]:
    ws = await asyncio.wait_for(
        connect(f"ws://127.0.0.1:{port}{path}", open_timeout=10, close_timeout=2, max_size=None, **kwargs), 15
    )
    c = Client(ws)
    c.task = asyncio.create_task(c._read())
    try:
        yield c
    finally:
        await c.close()
    assert c.binary == 0, "a binary frame from the candle server"


@contextlib.asynccontextmanager
async def candle_server(data: Path, *, poll_s: float = 0.01, **options: Any) -> AsyncIterator[Servers]:
    """The candle server alone on a free port of 127.0.0.1 (``options``: CandleOptions fields)."""
    servers = await start_servers(
        ServeOptions(
            data,
            relay_port=None,
            rest_port=None,
            market=MarketConfig(poll_s=poll_s),
            candles=CandleOptions(port=0, **options),
        )
    )
    try:
        yield servers
    finally:
        # Streams are read from server start (preload): let those reads finish before closing
        # (see test_close_while_a_stream_loads_leaves_no_file_open).
        for market in list(servers.markets.markets.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(market.ready.wait(), 20)
        await asyncio.wait_for(servers.close(), 15)


def port_of(servers: Servers) -> int:
    assert servers.candles is not None
    return servers.candles.port


def market_of(servers: Servers, exchange: str) -> Market:
    (market,) = [m for (venue, _fs), m in servers.markets.markets.items() if venue == exchange]
    return market


async def read_up_to(market: Market, seq: int, timeout: float = 10.0) -> None:
    """Wait until the server's market has read the trade ``seq``."""
    await until(lambda: market.feed.last_seq >= seq, timeout, f"the server to read trade {seq}")


# -- a data root written by the test -------------------------------------------------------------------


def price_text(cents: int) -> str:
    """One spelling per value (``42000``, ``42000.5``, ``42000.05``): the text the venue sent."""
    whole, frac = divmod(cents, 100)
    if frac == 0:
        return str(whole)
    return f"{whole}.{frac // 10}" if frac % 10 == 0 else f"{whole}.{frac:02d}"


def qty_text(sats: int) -> str:
    return f"{sats // 10**8}.{sats % 10**8:08d}"


#: Instants on both sides of every interval boundary at once (Sunday -> Monday midnight) and
#: of 4h / 1h / 15m / 5m / 1m boundaries.
EDGES = [
    MONDAY - timedelta(milliseconds=1),
    MONDAY,
    MONDAY + timedelta(hours=4) - timedelta(milliseconds=1),
    MONDAY + timedelta(hours=4),
    MONDAY + timedelta(hours=5, minutes=15) - timedelta(milliseconds=1),
    MONDAY + timedelta(hours=5, minutes=15),
    MONDAY + timedelta(hours=5, minutes=20, seconds=59, milliseconds=999),
    MONDAY + timedelta(hours=5, minutes=21),
    MONDAY - timedelta(days=7),
    MONDAY - timedelta(days=7, milliseconds=1),
]


def synthetic_trades(count: int, seed: int = 7) -> list[Trade]:
    """``count`` trades over three weeks around :data:`MONDAY` (plus :data:`EDGES`), in receive
    order, some of them late (an exchange time before the previous trade's, another minute)."""
    rng = random.Random(seed)
    span = ms(MONDAY + timedelta(days=9)) - ms(MONDAY - timedelta(days=12))
    times = sorted(ms(MONDAY - timedelta(days=12)) + rng.randrange(span) for _ in range(count))
    times += [ms(e) for e in EDGES]
    times.sort()
    for i in range(5, len(times) - 1, 97):  # late trades: swapped with the next one
        times[i], times[i + 1] = times[i + 1], times[i]
    cents = 4_200_000
    out = []
    for seq, ts in enumerate(times, start=1):
        cents = max(100, cents + rng.randrange(-500, 501))
        sats = rng.choice([1, 10, rng.randrange(1, 10**8), rng.randrange(10**8, 10**10)])
        out.append(Trade(seq, ts, price_text(cents), qty_text(sats)))
    return out


def csv_row(t: Trade) -> str:
    return f"{t.seq},{t.seq * 1000},{t.ts_ms},{t.seq + 500},{t.price},{t.qty},buy\n"


def live_row(t: Trade) -> bytes:
    row = {
        "recv_seq": t.seq,
        "recv_time_ns": t.seq * 1000,
        "exchange": "kraken",
        "symbol": "BTC/USD",
        "event_time_ms": t.ts_ms,
        "trade_id": t.seq + 500,
        "price": t.price,
        "qty": t.qty,
        "side": "sell",
    }
    return orjson.dumps(row) + b"\n"


def synthetic_root(recorded: Path, base: Path, history: Sequence[Trade], live: Sequence[Trade] = ()) -> Path:
    """A data root with one kraken stream: the recorded day's ledger (for the exchange and
    symbol), ``history`` as its trades file and ``live`` in ``live/live_trades.ndjson``."""
    src = next(p for p in sorted((recorded / "kraken" / FS["kraken"]).iterdir()) if p.name.isdigit())
    data = base / "data"
    day = data / "kraken" / FS["kraken"] / src.name
    day.mkdir(parents=True)
    (ledger,) = src.glob("events_*.csv.gz")
    shutil.copy(ledger, day / ledger.name)
    body = "recv_seq,recv_time_ns,event_time_ms,trade_id,price,qty,side\n" + "".join(map(csv_row, history))
    (day / f"trades_ws_{FS['kraken']}_{src.name}.csv.gz").write_bytes(gzip.compress(body.encode()))
    (day.parent / "live").mkdir()
    (day.parent / "live" / "live_trades.ndjson").write_bytes(b"".join(map(live_row, live)))
    return data


def append_live(data: Path, trades: Iterable[Trade]) -> None:
    with open(data / "kraken" / FS["kraken"] / "live" / "live_trades.ndjson", "ab") as f:
        f.write(b"".join(map(live_row, trades)))


THREE_WEEKS = synthetic_trades(6000)
#: The newest exchange time of :data:`THREE_WEEKS`.
NEWEST_MS = max(t.ts_ms for t in THREE_WEEKS)


@functools.cache
def weeks_reference(name: str) -> list[dict[str, str]]:
    """:func:`reference_bars` of :data:`THREE_WEEKS` (computed once per process)."""
    return reference_bars(THREE_WEEKS, name)


@pytest.fixture
def three_weeks() -> list[Trade]:
    return THREE_WEEKS


@pytest.fixture
def weeks_root(recorded_data: Path, tmp_path: Path, three_weeks: list[Trade]) -> Path:
    """Three weeks of synthetic kraken trades: most in the trades file, the newest 500 live."""
    return synthetic_root(recorded_data, tmp_path, three_weeks[:-500], three_weeks[-500:])


@pytest.fixture
def small_root(recorded_data: Path, tmp_path: Path) -> Path:
    """A few synthetic kraken trades (a server on it starts at once)."""
    return synthetic_root(recorded_data, tmp_path, synthetic_trades(20))


# -- initial answers -------------------------------------------------------------------------------------


def test_reference_agrees_with_pandas_resample(three_weeks: list[Trade]) -> None:
    """The reference's interval arithmetic checked once against pandas (bins and volumes)."""
    frame = pd.DataFrame(
        {"qty": [Decimal(t.qty) for t in three_weeks]},
        index=pd.to_datetime([t.ts_ms for t in three_weeks], unit="ms", utc=True),
    ).sort_index()
    rules = {"1m": "1min", "5m": "5min", "15m": "15min", "1h": "1h", "4h": "4h", "1D": "1D", "1W": "W-MON"}
    for name, rule in rules.items():
        grouped = frame["qty"].resample(rule, label="left", closed="left")
        sums = grouped.sum()[grouped.count() > 0]
        want = [(iso(ts.to_pydatetime()), text(v)) for ts, v in zip(sums.index, sums, strict=True)]
        got = [(b["time"], b["volume"]) for b in weeks_reference(name)]
        assert got == want, name
    weeks = weeks_reference("1W")
    assert [b["time"][:10] for b in weeks] == ["2023-12-18", "2023-12-25", "2024-01-01", "2024-01-08"]


def test_initial_bars_of_every_interval_equal_the_reference(
    weeks_root: Path, three_weeks: list[Trade]
) -> None:
    """1m … 1W over three weeks of trades (history file + live file, late trades, every
    boundary): the newest ``initialBars`` bars (default 100, 0, 1, 5000), exact text."""

    async def main() -> dict[tuple[str, Any], list[dict[str, Any]]]:
        got: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        async with candle_server(weeks_root) as servers, client(port_of(servers)) as c:
            for name in NAMES:
                for count in (None, 0, 1, 5000):
                    extra = {} if count is None else {"initialBars": count}
                    answer = await c.subscribe("BTC/USD", name, **extra)
                    assert set(answer) == {"type", "exchange", "symbol", "interval", "bars"}, set(answer)
                    assert (answer["exchange"], answer["symbol"], answer["interval"]) == (
                        "kraken",
                        "BTC/USD",
                        name,
                    )
                    got[name, count] = answer["bars"]
        return got

    got = run(main())
    for name in NAMES:
        want = weeks_reference(name)
        for count, n in ((None, 100), (0, 0), (1, 1), (5000, 5000)):
            bars = [bar_of(b) for b in got[name, count]]
            assert bars == (want[-n:] if n else []), (name, count)
    assert len(weeks_reference("1m")) > 5000  # the 5000 cap was reached
    # Sparse bars: only intervals with trades, so times jump over empty minutes.
    minutes = [b["time"] for b in weeks_reference("1m")]
    assert len(minutes) < (ms(MONDAY + timedelta(days=9)) - ms(MONDAY - timedelta(days=12))) // 60_000
    weekly = [bar_of(b) for b in got["1W", 5000]]
    assert [b["time"] for b in weekly] == [
        "2023-12-18T00:00:00.000Z",
        "2023-12-25T00:00:00.000Z",
        "2024-01-01T00:00:00.000Z",
        "2024-01-08T00:00:00.000Z",
    ]
    # The trade at Sunday 23:59:59.999 closes the old week, the one at Monday 00:00 opens the new.
    sunday, monday = (next(t for t in three_weeks if t.ts_ms == ms(e)) for e in EDGES[:2])
    assert weekly[1]["close"] == sunday.price and weekly[2]["open"] == monday.price


@pytest.mark.parametrize(
    ("exchange", "symbol"),
    [
        ("binance", "BTC/USDT"),
        ("binance", "BTCUSDT"),
        ("binance", "btcusdt"),
        ("kraken", "BTC/USD"),
        ("kraken", "BTCUSD"),
        ("kraken", "btc/usd"),
        ("bitfinex", "BTC/USD"),
        ("bitfinex", "tBTCUSD"),
        ("bitfinex", "BTCUSD"),
    ],
)
def test_symbol_spellings_answer_the_recorded_stream_and_echo_the_spelling(
    recorded_data: Path, exchange: str, symbol: str
) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with candle_server(recorded_data) as servers, client(port_of(servers)) as c:
            first = await c.subscribe(symbol, "1m", exchange=exchange)
            shouted = await c.subscribe(symbol, "1W", exchange=f" {exchange.upper()} ")
            return first, shouted, market_of(servers, exchange).stream.symbol_fs

    first, shouted, folder = run(main())
    assert folder == FS[exchange]
    trades = stream_trades(recorded_data, exchange)
    assert trades
    assert first["symbol"] == symbol and first["exchange"] == exchange and first["interval"] == "1m"
    assert [bar_of(b) for b in first["bars"]] == reference_bars(trades, "1m")
    assert shouted["symbol"] == symbol and shouted["exchange"] == exchange
    assert [bar_of(b) for b in shouted["bars"]] == reference_bars(trades, "1W")


def test_default_exchange(recorded_data: Path, weeks_root: Path) -> None:
    """Without ``exchange``: the server's option, else the only recorded venue, else binance."""

    async def main() -> None:
        async with candle_server(recorded_data) as servers, client(port_of(servers)) as c:
            assert (await http_get(port_of(servers), "/health")).json["default_exchange"] == "binance"
            answer = await c.subscribe("BTC/USDT", "1m")
            assert answer["exchange"] == "binance" and answer["symbol"] == "BTC/USDT"
            assert [bar_of(b) for b in answer["bars"]] == reference_bars(
                stream_trades(recorded_data, "binance"), "1m"
            )
            error = await c.ask({"type": "subscribe", "symbol": "BTC/USD", "interval": "1m"})
            assert error["type"] == "error" and error["message"].startswith("Invalid symbol: BTC/USD."), error
            assert "binance" in error["message"]
        async with (
            candle_server(recorded_data, default_exchange="Kraken") as servers,
            client(port_of(servers)) as c,
        ):
            assert (await http_get(port_of(servers), "/health")).json["default_exchange"] == "kraken"
            answer = await c.subscribe("BTC/USD", "5m")
            assert answer["exchange"] == "kraken"
            assert [bar_of(b) for b in answer["bars"]] == reference_bars(
                stream_trades(recorded_data, "kraken"), "5m"
            )
            answer = await c.subscribe("BTC/USD", "5m", exchange="bitfinex")  # the message wins
            assert answer["exchange"] == "bitfinex"
        async with candle_server(weeks_root) as servers, client(port_of(servers)) as c:
            assert (await http_get(port_of(servers), "/health")).json["default_exchange"] == "kraken"
            assert (await c.subscribe("BTC/USD", "1D"))["exchange"] == "kraken"

    run(main())


# -- every message and every error ---------------------------------------------------------------------

ERRORS: list[Any] = [
    # (message as sent, the error text or its start)
    pytest.param("not json", "Invalid message format", id="non-json"),
    pytest.param("", "Invalid message format", id="empty"),
    pytest.param("[1, 2]", "Invalid message format", id="array"),
    pytest.param('"subscribe"', "Invalid message format", id="string"),
    pytest.param("42", "Invalid message format", id="number"),
    pytest.param("null", "Invalid message format", id="null"),
    pytest.param("{}", "Invalid message format", id="no-type"),
    pytest.param('{"type": 1}', "Invalid message format", id="type-number"),
    pytest.param('{"type": null}', "Invalid message format", id="type-null"),
    pytest.param('{"type": ["ping"]}', "Invalid message format", id="type-list"),
    pytest.param('{"type": "ping"', "Invalid message format", id="truncated"),
    pytest.param({"type": "subscribe", "interval": "1m"}, "Invalid message format", id="no-symbol"),
    pytest.param(
        {"type": "subscribe", "symbol": 5, "interval": "1m"}, "Invalid message format", id="symbol-int"
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "", "interval": "1m"}, "Invalid message format", id="symbol-empty"
    ),
    pytest.param(
        {"type": "subscribe", "symbol": ["BTC/USD"], "interval": "1m"},
        "Invalid message format",
        id="symbol-list",
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "exchange": 7, "interval": "1m"},
        "Invalid message format",
        id="exchange-int",
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "exchange": "", "interval": "1m"},
        "Invalid message format",
        id="exchange-empty",
    ),
    pytest.param({"type": "subscribe", "symbol": "BTC/USD"}, "Invalid message format", id="no-interval"),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "interval": 1}, "Invalid message format", id="interval-int"
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "interval": "10m"}, VALID_TEXT, id="interval-10m"
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "interval": "1d"},
        "Invalid interval: 1d. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W",
        id="interval-lower-d",
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "interval": "1M"},
        "Invalid interval: 1M. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W",
        id="interval-1M",
    ),
    pytest.param(
        {"type": "hello"}, "Unknown message type: hello. Valid: subscribe, unsubscribe, ping", id="unknown"
    ),
    pytest.param({"type": "PING"}, "Unknown message type: PING", id="case"),
    pytest.param({"type": ""}, "Unknown message type: ", id="type-empty"),
    pytest.param(
        {"type": "subscribe", "symbol": "ETH/USD", "interval": "1m"},
        "Invalid symbol: ETH/USD.",
        id="unrecorded",
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTC/USD", "exchange": "coinbase", "interval": "1m"},
        "Invalid symbol: BTC/USD.",
        id="unknown-exchange",
    ),
    pytest.param(
        {"type": "subscribe", "symbol": "BTCUSDT", "exchange": "kraken", "interval": "1m"},
        "Invalid symbol: BTCUSDT.",
        id="other-venues-symbol",
    ),
    *(
        pytest.param(
            {"type": "subscribe", "symbol": "BTC/USD", "interval": "1m", "initialBars": bad},
            "Invalid initialBars: must be an integer from 0 to 5000",
            id=f"initialBars-{bad!r}",
        )
        for bad in (-1, 5001, 1.5, 100.0, "100", True, None, [5], {"n": 5})
    ),
    pytest.param(
        '{"type":"subscribe","symbol":"BTC/USD","interval":"1m","initialBars":1000000000000000000000000000000}',
        "Invalid initialBars: must be an integer from 0 to 5000",
        id="initialBars-10**30",
    ),
    pytest.param(
        {"type": "unsubscribe", "symbol": "BTC/USD", "interval": "1m"},
        "Not subscribed: BTC/USD 1m",
        id="not-subscribed",
    ),
    pytest.param(
        {"type": "unsubscribe", "symbol": "BTC/USD", "interval": "2h"},
        "Invalid interval: 2h.",
        id="unsub-interval",
    ),
    pytest.param({"type": "unsubscribe", "interval": "1m"}, "Invalid message format", id="unsub-no-symbol"),
]


@pytest.mark.parametrize(("message", "error"), ERRORS)
def test_errors(small_root: Path, message: dict[str, Any] | str, error: str) -> None:
    """Each bad message gets one ``error`` ``{type, message}``; the connection stays usable."""

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with candle_server(small_root) as servers, client(port_of(servers)) as c:
            answer = await c.ask(message)
            pong = await c.ask({"type": "ping"})
            assert servers.candles is not None and servers.candles.errors_sent == 1
            return answer, pong

    answer, pong = run(main())
    assert answer["type"] == "error" and set(answer) == {"type", "message"}, answer
    assert answer["message"].startswith(error), answer
    assert answer["message"].isascii() and answer["message"].isprintable(), answer
    assert pong == {"type": "pong"}


def test_invalid_interval_text_is_the_seeds(small_root: Path) -> None:
    async def main() -> dict[str, Any]:
        async with candle_server(small_root) as servers, client(port_of(servers)) as c:
            return await c.ask({"type": "subscribe", "symbol": "BTC/USD", "interval": "10m"})

    assert run(main()) == {"type": "error", "message": VALID_TEXT}


def test_ping_subscribe_unsubscribe_and_no_more_updates(recorded_data: Path, tmp_path: Path) -> None:
    trades = synthetic_trades(40)  # and the 10 EDGES
    assert len(trades) == 50
    data = synthetic_root(recorded_data, tmp_path, trades[:40])

    async def main() -> None:
        async with candle_server(data, throttle_s=0.1) as servers, client(port_of(servers)) as c:
            assert await c.ask({"type": "ping"}) == {"type": "pong"}
            assert await c.ask('{"type":"ping","extra":[1,2,{"x":null}]}') == {"type": "pong"}
            assert c.raw[-1] == b'{"type":"pong"}'
            await c.subscribe("BTC/USD", "1m")
            await c.subscribe("BTC/USD", "5m")
            append_live(data, trades[40:42])
            await c.wait_for(lambda m: m["type"] == "update" and m["interval"] == "1m", what="a 1m update")
            await c.wait_for(lambda m: m["type"] == "update" and m["interval"] == "5m", what="a 5m update")
            answer = await c.ask({"type": "unsubscribe", "symbol": "BTC/USD", "interval": "1m"})
            assert answer == {
                "type": "unsubscribed",
                "exchange": "kraken",
                "symbol": "BTC/USD",
                "interval": "1m",
            }
            n1 = len(c.updates("1m"))
            n5 = len(c.updates("5m"))
            append_live(data, trades[42:50])
            await until(lambda: len(c.updates("5m")) > n5, what="the 5m room's next update")
            await asyncio.sleep(0.3)  # three throttle periods: a 1m update would be here
            assert len(c.updates("1m")) == n1
            again = await c.ask({"type": "unsubscribe", "symbol": "BTC/USD", "interval": "1m"})
            assert again == {"type": "error", "message": "Not subscribed: BTC/USD 1m"}
            assert servers.candles is not None and set(servers.candles.rooms) == {"kraken:BTC/USD:5m"}
            # The last 5m update is the candle of every trade written.
            assert bar_of(c.updates("5m")[-1]["bar"]) == latest_states(trades, "5m")[-1]

    run(main())


def test_too_many_subscriptions(small_root: Path) -> None:
    async def main() -> None:
        async with candle_server(small_root, max_subscriptions=3) as servers, client(port_of(servers)) as c:
            for name in NAMES[:3]:
                await c.subscribe("BTC/USD", name, initialBars=1)
            answer = await c.ask({"type": "subscribe", "symbol": "BTC/USD", "interval": "1W"})
            assert answer == {"type": "error", "message": "Too many subscriptions: at most 3 per connection"}
            again = await c.subscribe("BTC/USD", "1m", initialBars=2)  # a room it is in: answered
            assert len(again["bars"]) == 2
            await c.ask({"type": "unsubscribe", "symbol": "BTC/USD", "interval": "5m"})
            assert (await c.subscribe("BTC/USD", "1W"))["interval"] == "1W"
            async with client(port_of(servers)) as other:  # the limit is per connection
                for name in NAMES[3:6]:
                    await other.subscribe("BTC/USD", name, initialBars=0)

    run(main())


def test_spellings_are_separate_rooms_and_echoed_in_updates(recorded_data: Path, tmp_path: Path) -> None:
    trades = synthetic_trades(30)
    data = synthetic_root(recorded_data, tmp_path, trades[:20])

    async def main() -> None:
        async with candle_server(data, throttle_s=0.1) as servers, client(port_of(servers)) as c:
            await c.subscribe("BTC/USD", "1m")
            await c.subscribe("btcusd", "1m", exchange="KRAKEN")
            assert servers.candles is not None
            assert set(servers.candles.rooms) == {"kraken:BTC/USD:1m", "kraken:btcusd:1m"}
            append_live(data, trades[20:])
            final = latest_states(trades, "1m")[-1]
            for symbol in ("BTC/USD", "btcusd"):

                def done(symbol: str = symbol) -> bool:
                    got = c.updates("1m", symbol)
                    return bool(got) and bar_of(got[-1]["bar"]) == final

                await until(done, what=f"{symbol}'s last update")
                update = c.updates("1m", symbol)[-1]
                assert set(update) == {"type", "exchange", "symbol", "interval", "bar"}
                assert update["exchange"] == "kraken"

    run(main())


# -- HTTP -------------------------------------------------------------------------------------------------


def test_health_and_ws_stats_with_subscriptions(weeks_root: Path, three_weeks: list[Trade]) -> None:
    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        async with candle_server(weeks_root, throttle_s=0.05) as servers:
            port = port_of(servers)
            await asyncio.wait_for(market_of(servers, "kraken").ready.wait(), 20)  # preloaded
            empty = (await http_get(port, "/health/ws-stats")).json
            async with client(port) as a, client(port) as b, client(port) as c:
                await a.subscribe("BTC/USD", "1m")
                await b.subscribe("BTC/USD", "1m")
                await b.subscribe("BTC/USD", "1h")
                await c.ask({"type": "ping"})
                before = (await http_get(port, "/health/ws-stats")).json
                new = Trade(10**6, NEWEST_MS + 60_000, "1.5", "2")
                append_live(weeks_root, [new])
                await a.wait_for(lambda m: m["type"] == "update", what="an update")
                await b.wait_for(lambda m: m["type"] == "update" and m["interval"] == "1h", what="an update")
                health = await http_get(port, "/health?x=../..")
                assert health.status == 200 and health.headers["content-type"] == "application/json"
                after = (await http_get(port, "/health/ws-stats")).json
            return empty, before, after, health.json

    empty, before, after, health = run(main())
    minutes = len(weeks_reference("1m"))
    # No client yet, the recorded stream read at start.
    assert empty["connections"] == 0
    assert empty["broadcaster"] == {"totalRooms": 0, "totalClients": 0, "rooms": []}
    assert empty["aggregator"]["oneMinuteCandlesCount"] == minutes
    assert [m["symbol"] for m in empty["aggregator"]["markets"]] == ["BTC/USD"]
    assert health["ok"] is True and health["server"] == "candles"
    assert health["connections"] == 3 and health["rooms"] == 2 and health["default_exchange"] == "kraken"
    assert isinstance(health["uptime_s"], float | int)
    for doc in (before, after):
        assert set(doc) == {"connections", "broadcaster", "aggregator"}
        assert doc["connections"] == 3
        rooms = {r["key"]: r for r in doc["broadcaster"]["rooms"]}
        assert set(rooms) == {"kraken:BTC/USD:1m", "kraken:BTC/USD:1h"}
        assert doc["broadcaster"]["totalRooms"] == 2 and doc["broadcaster"]["totalClients"] == 3
        assert (
            rooms["kraken:BTC/USD:1m"]["clientCount"] == 2 and rooms["kraken:BTC/USD:1h"]["clientCount"] == 1
        )
        assert all(r["hasCandle"] is True for r in rooms.values())
        (market,) = doc["aggregator"]["markets"]
        assert market["exchange"] == "kraken" and market["symbol"] == "BTC/USD"
        assert market["rejectedTrades"] == 0 and market["badRows"] == 0 and market["source"] == "live"
    assert before["aggregator"]["oneMinuteCandlesCount"] == minutes
    assert before["aggregator"]["markets"][0]["trades"] == len(three_weeks)
    assert after["aggregator"]["oneMinuteCandlesCount"] == minutes + 1  # a new minute
    assert after["aggregator"]["markets"][0]["trades"] == len(three_weeks) + 1
    assert after["aggregator"]["markets"][0]["lastTradeMs"] == NEWEST_MS + 60_000
    for key, room in {r["key"]: r for r in before["broadcaster"]["rooms"]}.items():
        assert room["lastBroadcast"] is None, key
    now_ms = time.time_ns() // 1_000_000
    for room in after["broadcaster"]["rooms"]:
        assert isinstance(room["lastBroadcast"], int) and abs(room["lastBroadcast"] - now_ms) < 60_000, room


def raw_http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf or len(buf.partition(b"\r\n\r\n")[2]) < _length(buf):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(buf: bytes) -> int:
    for line in buf.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_http_errors_are_json(small_root: Path) -> None:
    async def main() -> None:
        async with candle_server(small_root, max_connections=2) as servers:
            port = port_of(servers)
            for path in ("/nope", "/health/", "/ws/x", "/metrics"):
                answer = await http_get(port, path)
                assert answer.status == 404 and answer.headers["content-type"] == "application/json"
                assert "unknown path" in answer.json["error"]
            for path in ("/", "/ws", "/?symbol=BTC/USD"):
                answer = await http_get(port, path)
                assert answer.status == 426 and "WebSocket" in answer.json["error"], answer
            status, headers, body = await asyncio.to_thread(
                raw_http, port, b"POST /health HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert status == 405 and headers["allow"] == "GET" and "error" in orjson.loads(body)
            async with client(port) as a, client(port, "/ws") as b:
                await a.ask({"type": "ping"})
                await b.ask({"type": "ping"})
                with pytest.raises(InvalidStatus) as refused:
                    async with client(port):
                        pass  # pragma: no cover - refused
                resp = refused.value.response
                assert resp.status_code == 503 and resp.headers["Retry-After"].isdigit()
                assert "too many connections" in orjson.loads(resp.body or b"{}")["error"]
                assert (await http_get(port, "/health")).json["connections"] == 2  # /health still answers
            assert servers.candles is not None and servers.candles.refused == 1
            await until(
                lambda: servers.candles is not None and not servers.candles.clients, what="clients gone"
            )
            async with client(port) as again:
                assert await again.ask({"type": "ping"}) == {"type": "pong"}

    run(main())


def test_frame_over_max_message_bytes_closes_1009(small_root: Path) -> None:
    async def main() -> None:
        async with candle_server(small_root, max_message_bytes=512) as servers:
            port = port_of(servers)
            async with client(port) as bystander, client(port) as big:
                await bystander.subscribe("BTC/USD", "1m", initialBars=1)
                pad = " " * (512 - len('{"type":"ping"}'))
                assert await big.ask('{"type":"ping"}' + pad) == {"type": "pong"}  # exactly the limit
                await big.send('{"type":"ping"}' + pad + " ")
                await asyncio.wait_for(big.closed.wait(), 10)
                assert big.close_code == 1009
                async with client(port) as binary:
                    await binary.send(b"\x00" * 513)
                    await asyncio.wait_for(binary.closed.wait(), 10)
                    assert binary.close_code == 1009
                assert await bystander.ask({"type": "ping"}) == {"type": "pong"}

    run(main())


# -- live updates ------------------------------------------------------------------------------------------


def states_index(states: list[dict[str, str] | None], bar: dict[str, str], after: int = 0) -> int:
    """The first k >= ``after`` whose state is ``bar`` (AssertionError: none is)."""
    for k in range(after, len(states)):
        if states[k] == bar:
            return k
    raise AssertionError(f"{bar} is no candle of the recorded trades (from prefix {after} on)")


def check_room(
    messages: list[dict[str, Any]], times: list[float], states: list[dict[str, str] | None]
) -> int:
    """One room's messages on one connection: an ``initial`` first, then updates at least
    0.8 s apart (the 1/s throttle, with scheduling slack), each a candle of the trades
    recorded up to then, each newer than the one before and never a repeat. The number of
    updates."""
    assert messages and messages[0]["type"] == "initial", messages[:1]
    bars = messages[0]["bars"]
    k = states_index(states, bar_of(bars[-1])) if bars else 0
    last_sent: dict[str, str] | None = None
    last_time: float | None = None
    for msg, at in zip(messages[1:], times[1:], strict=True):
        assert msg["type"] == "update", msg
        bar = bar_of(msg["bar"])
        assert bar != last_sent, "an update repeated the previous one"
        k = states_index(states, bar, k)
        if last_time is not None:
            assert at - last_time >= 0.8, f"two updates of one room {at - last_time:.3f} s apart"
        last_sent, last_time = bar, at
    return len(messages) - 1


def room_messages(c: Client, interval: str) -> tuple[list[dict[str, Any]], list[float]]:
    picked = [
        (m, t)
        for m, t in zip(c.messages, c.times, strict=True)
        if m["type"] in ("initial", "update") and m["interval"] == interval
    ]
    return [m for m, _ in picked], [t for _, t in picked]


def test_live_updates_while_recording(tmp_path: Path) -> None:
    """The real recorder writes trades; three clients in the 1m room, one in the 5m room:
    updates arrive, at most one per second per room, only on change, each equal to the
    candle of the trades recorded up to then; identical bytes for every client of a room;
    after the recorder stops, the last update is the final candle of the trades file."""
    data = tmp_path / "data"

    async def main() -> tuple[list[Client], Path]:
        async with recording(data, "binance", rate=4.0) as rec:
            live = rec.root / "live" / "live_trades.ndjson"
            await until(lambda: live.is_file() and live.stat().st_size > 0, 20, "live trades")
            async with candle_server(data) as servers:
                port = port_of(servers)
                async with client(port) as a, client(port) as b, client(port) as c, client(port) as d:
                    for x in (a, b, c):
                        await x.subscribe("BTCUSDT", "1m")
                    await d.subscribe("BTCUSDT", "5m")
                    await until(
                        lambda: len(a.updates()) >= 3 and len(d.updates()) >= 3, 20, "3 updates per room"
                    )
                    await rec.finish()
                    market = market_of(servers, "binance")
                    want = stream_trades(data, "binance")[-1].seq
                    await read_up_to(market, want)
                    await asyncio.sleep(1.5)  # a throttled last update goes out within a second
                    return [a, b, c, d], rec.root

    clients, _root = run(main(), timeout=60)
    a, b, c, d = clients
    trades = stream_trades(data, "binance")
    for x, name in ((a, "1m"), (b, "1m"), (c, "1m"), (d, "5m")):
        states = latest_states(trades, name)
        messages, times = room_messages(x, name)
        assert check_room(messages, times, states) >= 2
        last = messages[-1]["bar"] if messages[-1]["type"] == "update" else messages[-1]["bars"][-1]
        assert bar_of(last) == states[-1], "the last update is not the final candle"
    # One room, one frame: every client got the same bytes from the moment all had joined.
    raws = [[r for r, m in zip(x.raw, x.messages, strict=True) if m["type"] == "update"] for x in (a, b, c)]
    n = min(map(len, raws))
    assert n >= 2 and raws[0][-n:] == raws[1][-n:] == raws[2][-n:]
    assert all(m["interval"] == "5m" for m in d.updates()) and all(m["interval"] == "1m" for m in a.updates())


def test_initial_precedes_updates_and_nothing_is_lost_between(tmp_path: Path) -> None:
    """Subscribing and unsubscribing over and over while trades flow: on every subscription
    the ``initial`` comes first and no update goes back before the state it showed."""
    data = tmp_path / "data"

    async def main() -> list[Client]:
        async with recording(data, "kraken", rate=6.0) as rec:
            live = rec.root / "live" / "live_trades.ndjson"
            await until(lambda: live.is_file() and live.stat().st_size > 0, 20, "live trades")
            async with candle_server(data, throttle_s=0.2) as servers:
                port = port_of(servers)
                async with client(port) as steady, client(port) as hopper:
                    await steady.subscribe("BTC/USD", "1m")
                    for keep in (False, True):  # every room joined and left, then joined to the end
                        for name in NAMES:
                            await hopper.subscribe("BTC/USD", name)
                            await asyncio.sleep(0.15)
                            if not keep:
                                await hopper.ask(
                                    {"type": "unsubscribe", "symbol": "BTC/USD", "interval": name}
                                )
                    await rec.finish()
                    market = market_of(servers, "kraken")
                    want = stream_trades(data, "kraken")[-1].seq
                    await read_up_to(market, want)
                    await asyncio.sleep(0.5)
                    return [steady, hopper]

    steady, hopper = run(main(), timeout=60)
    trades = stream_trades(data, "kraken")
    assert len(steady.updates()) >= 3
    # Split the hopper's messages into subscriptions (initial … until unsubscribed).
    sessions: list[tuple[str, list[dict[str, Any]]]] = []
    open_rooms: dict[str, list[dict[str, Any]]] = {}
    for m in hopper.messages:
        if m["type"] == "initial":
            assert m["interval"] not in open_rooms
            open_rooms[m["interval"]] = [m]
            sessions.append((m["interval"], open_rooms[m["interval"]]))
        elif m["type"] == "update":
            assert m["interval"] in open_rooms, "an update before its initial, or after unsubscribed"
            open_rooms[m["interval"]].append(m)
        elif m["type"] == "unsubscribed":
            del open_rooms[m["interval"]]
    assert len(sessions) == 14 and set(open_rooms) == set(NAMES)
    states = {name: latest_states(trades, name) for name in NAMES}
    for name, msgs in sessions:
        bars = msgs[0]["bars"]
        assert bars, "the stream had trades before the subscription"
        k = states_index(states[name], bar_of(bars[-1]))
        for update in msgs[1:]:
            k = states_index(states[name], bar_of(update["bar"]), k)
    for name, msgs in open_rooms.items():  # still joined at the end: they saw the last trade
        last = msgs[-1]["bar"] if msgs[-1]["type"] == "update" else msgs[-1]["bars"][-1]
        assert bar_of(last) == states[name][-1], name


def test_interval_boundaries_bring_a_new_time(recorded_data: Path, tmp_path: Path) -> None:
    """Trades written with chosen exchange times: Sunday 23:59 -> Monday 00:00 opens a new
    candle in every interval at once; 00:01 a new 1m candle inside the running 5m and 1W; a
    late trade into a finished candle changes no running candle (no update), and shows in
    the next ``initial``."""
    sunday = MONDAY - timedelta(minutes=2)
    history = [Trade(i + 1, ms(sunday) + i * 1000, price_text(4_200_000 + i), "0.5") for i in range(70)]
    data = synthetic_root(recorded_data, tmp_path, history[:60], history[60:70])

    def at(moment: datetime, seq: int, cents: int, qty: str = "0.25") -> Trade:
        return Trade(seq, ms(moment), price_text(cents), qty)

    script = [
        [at(MONDAY - timedelta(seconds=5), 100, 4_100_000)],  # same minute, new low
        [at(MONDAY, 101, 4_300_000)],  # every interval opens
        [at(MONDAY + timedelta(seconds=30), 102, 4_310_050, "1.00000001")],
        [at(MONDAY + timedelta(minutes=1), 103, 4_290_000)],  # new 1m; 5m .. 1W go on
        [at(MONDAY + timedelta(minutes=4, seconds=59, milliseconds=999), 104, 4_280_000)],
        [at(MONDAY + timedelta(minutes=5), 105, 4_270_000)],  # new 1m and 5m; 15m .. 1W go on
    ]
    late = at(MONDAY - timedelta(seconds=1), 106, 1_000_000, "7")  # into the old week
    sentinel = at(MONDAY + timedelta(minutes=5, seconds=1), 107, 4_270_100)

    async def main() -> tuple[Client, dict[str, Any], list[int]]:
        async with candle_server(data, throttle_s=0.05) as servers, client(port_of(servers)) as c:
            for name in NAMES:
                await c.subscribe("BTC/USD", name)
            market = market_of(servers, "kraken")
            marks: list[int] = []
            for step in script:
                append_live(data, step)
                await read_up_to(market, step[-1].seq)
                await until(lambda: len(c.updates("1m")) == len(marks) + 1, what="the step's 1m update")
                await asyncio.sleep(0.15)  # the other rooms' updates of this step
                marks.append(len(c.messages))
            append_live(data, [late])
            await read_up_to(market, late.seq)
            await asyncio.sleep(0.3)
            quiet = len(c.messages)
            append_live(data, [sentinel])
            await until(lambda: len(c.updates("1m")) == len(script) + 1, what="the sentinel's update")
            assert quiet == marks[-1], f"a late trade into a finished candle sent {c.messages[marks[-1] :]}"
            again = await c.subscribe("BTC/USD", "1W")
            return c, again, marks

    c, again, marks = run(main())
    trades = history[:70] + [t for step in script for t in step]
    for i in range(len(script)):
        upto = trades[: 70 + i + 1]
        for name in NAMES:
            step_updates = [
                m
                for m in c.messages[(marks[i - 1] if i else 0) : marks[i]]
                if m["type"] == "update" and m["interval"] == name
            ]
            want = latest_states(upto, name)[-1]
            assert want is not None
            assert [bar_of(m["bar"]) for m in step_updates] == [want], (i, name)
    stepped = [m for m in c.messages[: marks[-1]] if m["type"] == "update"]
    times = {name: [m["bar"]["time"] for m in stepped if m["interval"] == name] for name in NAMES}
    assert times["1m"] == [
        "2023-12-31T23:59:00.000Z",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:01:00.000Z",
        "2024-01-01T00:04:00.000Z",
        "2024-01-01T00:05:00.000Z",
    ]
    assert times["5m"] == [
        "2023-12-31T23:55:00.000Z",
        *["2024-01-01T00:00:00.000Z"] * 4,
        "2024-01-01T00:05:00.000Z",
    ]
    assert times["1W"] == ["2023-12-25T00:00:00.000Z", *["2024-01-01T00:00:00.000Z"] * 5]
    for name in ("15m", "1h", "4h", "1D"):
        assert times[name][0] < "2024" and set(times[name][1:]) == {"2024-01-01T00:00:00.000Z"}, name
    # The late trade: in the next initial's old week, never sent as an update.
    assert [bar_of(b) for b in again["bars"]] == reference_bars([*trades, late, sentinel], "1W")
    assert bar_of(again["bars"][0])["low"] == "10000"


def test_updates_are_throttled_to_one_per_second_with_the_newest_candle(
    recorded_data: Path, tmp_path: Path
) -> None:
    """A trade every 40 ms for 3.5 s into two rooms: about one update per second per room,
    each the candle of a prefix of the trades, the last one the final candle."""
    trades = synthetic_trades(120, seed=3)
    start = MONDAY + timedelta(hours=2)
    flow = [Trade(t.seq, ms(start) + i * 700, t.price, t.qty) for i, t in enumerate(trades)]
    data = synthetic_root(recorded_data, tmp_path, flow[:20])

    async def main() -> tuple[Client, Client, float]:
        async with (
            candle_server(data) as servers,
            client(port_of(servers)) as a,
            client(port_of(servers)) as b,
        ):
            await a.subscribe("BTC/USD", "1m")
            await a.subscribe("BTC/USD", "15m")
            await b.subscribe("BTC/USD", "1m")
            began = time.monotonic()
            for t in flow[20:110]:
                append_live(data, [t])
                await asyncio.sleep(0.04)
            market = market_of(servers, "kraken")
            await read_up_to(market, flow[109].seq)
            await asyncio.sleep(1.3)
            return a, b, time.monotonic() - began

    a, b, elapsed = run(main())
    written = flow[:110]
    for name in ("1m", "15m"):
        messages, times = room_messages(a, name)
        n = check_room(messages, times, latest_states(written, name))
        assert 2 <= n <= elapsed + 1, (n, elapsed)  # one at once, then at most one per second
        assert bar_of(messages[-1]["bar"]) == latest_states(written, name)[-1]
    assert [r for r, m in zip(b.raw, b.messages, strict=True) if m["type"] == "update"] == [
        r for r, m in zip(a.raw, a.messages, strict=True) if m["type"] == "update" and m["interval"] == "1m"
    ]


def test_slow_client_is_closed_1008_and_others_keep_going(weeks_root: Path) -> None:
    """A client that stops reading: once its unsent bytes pass ``drop_bytes`` it is closed with
    1008; nobody waits for it."""

    async def main() -> None:
        async with candle_server(weeks_root, drop_bytes=1 << 16) as servers:
            port = port_of(servers)
            async with client(port) as fine:
                ws = await connect(f"ws://127.0.0.1:{port}", max_size=None, max_queue=1, close_timeout=2)
                try:
                    sub = orjson.dumps(
                        {"type": "subscribe", "symbol": "BTC/USD", "interval": "1m", "initialBars": 5000}
                    )
                    assert servers.candles is not None
                    candles = servers.candles
                    for _ in range(200):  # ~700 KB each, not read: the kernel's buffers fill up
                        await ws.send(sub.decode())
                        await asyncio.sleep(0.01)
                        if any(x.closing for x in candles.clients):
                            break
                    assert any(x.closing for x in candles.clients), "140 MB unread and still not dropped"
                    assert await fine.ask({"type": "ping"}) == {"type": "pong"}  # nobody waited
                    with pytest.raises(ConnectionClosed) as closed:
                        while True:  # now read: the bytes sent, then the close frame
                            await asyncio.wait_for(ws.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                    assert closed.value.rcvd.reason == "client too slow"
                finally:
                    await ws.close()
                await until(lambda: len(candles.clients) == 1, 10, "the slow client gone")
                assert await fine.ask({"type": "ping"}) == {"type": "pong"}

    run(main(), timeout=60)


# -- life cycle --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_close_while_a_stream_loads_leaves_no_file_open(
    weeks_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Servers closed while the preload still reads a stream (a slow disk: the read waits
    0.3 s before it starts) must leave no file of the data root open."""
    original = TradeFeed.start

    def slow_start(self: TradeFeed) -> list[Any]:
        time.sleep(0.3)
        return original(self)

    monkeypatch.setattr(TradeFeed, "start", slow_start)
    feeds: list[TradeFeed] = []

    async def main() -> None:
        servers = await start_servers(
            ServeOptions(weeks_root, relay_port=None, rest_port=None, candles=CandleOptions(port=0))
        )
        feeds.extend(m.feed for m in servers.markets.markets.values())
        await servers.close()

    try:
        run(main())  # asyncio.run waits for the executor's threads: the slow read has ended
        assert feeds, "the stream was not preloaded"
        root = str(weeks_root.resolve())
        still_open = []
        for fd in Path("/proc/self/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith(root):
                    still_open.append(target)
        assert not still_open, still_open
    finally:
        for feed in feeds:  # the leaked file, closed here so that it warns nowhere else
            feed.close()


# -- the command line --------------------------------------------------------------------------------------

LISTENING = r"(relay|rest|candles) listening on (\S+)"


def test_cli_serve_candles_and_watch_candles(recorded_data: Path) -> None:
    """``mmdata serve candles --port 0 -e kraken`` as a process answers /health and a subscribe
    without an exchange; ``mmdata watch candles --json -n 2`` prints the initial and the pong."""
    args = ["serve", "candles", "--port", "0", "--data-dir", str(recorded_data), "-e", "kraken"]
    with mmdata_process(args, r"candles listening on ws://127\.0\.0\.1:(\d+)") as (_proc, found):
        port = int(found[0].group(1))

        async def main() -> tuple[dict[str, Any], dict[str, Any]]:
            health = (await http_get(port, "/health")).json
            async with client(port) as c:
                return health, await c.subscribe("BTC/USD", "1h")

        health, answer = run(main())
        watch = subprocess.run(
            [
                sys.executable,
                *("-m", "mmdata", "watch", "candles", "--json", "-n", "2", "-e", "kraken", "-s", "BTC/USD"),
                *("--interval", "5m", "--port", str(port), "--send", '{"type":"ping"}'),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    kraken = stream_trades(recorded_data, "kraken")
    assert health["ok"] is True and health["server"] == "candles" and health["default_exchange"] == "kraken"
    assert answer["exchange"] == "kraken"
    assert [bar_of(b) for b in answer["bars"]] == reference_bars(kraken, "1h")
    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert len(lines) == 2, lines
    initial, pong = (parse(line) for line in lines)
    assert initial["type"] == "initial" and initial["exchange"] == "kraken" and initial["symbol"] == "BTC/USD"
    assert [bar_of(b) for b in initial["bars"]] == reference_bars(kraken, "5m")
    assert pong == {"type": "pong"}
    assert "2 messages" in watch.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_all_without_candles(recorded_data: Path) -> None:
    """``serve all --no-candles``: relay and REST listen, the candle port stays closed, and the
    start-up text never mentions candles."""
    base = ["serve", "all", "--data-dir", str(recorded_data), "--relay-port", "0", "--rest-port", "0"]
    base += ["--no-metrics", "--no-stream"]  # the other servers of issue 7 have their own tests
    spare = free_port()
    with mmdata_process([*base, "--no-candles", "--candles-port", str(spare)], LISTENING, count=2) as (
        proc,
        found,
    ):
        assert {m.group(1) for m in found} == {"relay", "rest"}
        assert proc.stderr is not None
        rest: list[str] = []
        for _ in range(40):
            line = proc.stderr.readline()
            rest.append(line)
            if "Ctrl-C stops" in line:
                break
        assert any("serve all: Ctrl-C stops" in line for line in rest), rest
        assert not any("candles" in line for line in rest), rest
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", spare), timeout=2):
            pass  # pragma: no cover - nothing listens there
