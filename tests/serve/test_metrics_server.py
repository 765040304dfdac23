"""The metrics server through real WebSocket clients on loopback.

* **Values.** Every metric the server sends equals a reference built here, independently,
  with pandas from the same trades: ``resample(rule).last()`` closes, reindexed on the
  window's grid and forward-filled, ``np.log(...).diff()``, ``std(ddof=1) * sqrt(periods)``
  and ``Series.corr`` — on a synthetic market (correlated symbols, quiet minutes, a symbol
  that starts late, a window longer than the data) and on the recorded days.
* **Live.** With the real recorder writing on the simulator, messages come every second and
  change as trades arrive: the running (partial) candle counts.
* **Protocol and errors.** Every message and every refusal; hostile query values (the relay's
  list, tests/serve/test_hostile.py) get a 4xx JSON, never a 5xx or a path outside the root;
  10,000 malformed client messages leave the server serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlencode

import numpy as np
import orjson
import pandas as pd
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from mmdata.candles import INTERVALS, Interval
from mmdata.candles.metrics import YEAR_MS, CloseSeries
from mmdata.serve.market import MarketConfig, Markets
from mmdata.serve.metrics import MetricsOptions, MetricsServer, _Series, compute_metric
from mmdata.serve.params import MAX_VALUE_CHARS
from tests.serve.conftest import ENVELOPE, FS, Feed, feed, gz_lines, http_get, recording, run, until
from tests.serve.test_hostile import (
    HOSTILE,
    SECRET,
    TOO_LONG_QUERY,
    UPGRADE,
    Answer,
    ErrorLog,
    assert_json_error,
    assert_printable_ascii,
    build_root,
    get,
    raw_get,
    send_raw,
    ws_open,
    ws_refused,
)

T = TypeVar("T")
MINUTE = 60_000
DAY_MS = 86_400_000
LOGGERS = ("websockets", "asyncio", "mmdata")
HEADER = "recv_seq,recv_time_ns,event_time_ms,trade_id,price,qty,side"


# -- synthetic recorded data ---------------------------------------------------------------------


def write_trades(data: Path, exchange: str, fs: str, trades: list[tuple[int, str]]) -> Path:
    """Day folders ``<data>/<exchange>/<fs>/<YYYYMMDD>/trades_ws_<fs>_<YYYYMMDD>.csv.gz`` holding
    ``(event_time_ms, price text)`` trades, in the recorder's column order (recv_seq from 1)."""
    root = data / exchange / fs
    by_day: dict[str, list[str]] = {}
    for seq, (ts, price) in enumerate(trades, start=1):
        label = datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y%m%d")
        side = "buy" if seq % 3 else "sell"
        by_day.setdefault(label, []).append(
            f"{seq},{ts * 1_000_000 + 5},{ts},{1000 + seq},{price},0.01,{side}"
        )
    for label, rows in by_day.items():
        day = root / label
        day.mkdir(parents=True, exist_ok=True)
        path = day / f"trades_ws_{fs}_{label}.csv.gz"
        path.write_bytes(gzip.compress(("\n".join([HEADER, *rows]) + "\n").encode()))
    return root


def synthetic_market(now_ms: int, seed: int = 7) -> dict[str, list[tuple[int, str]]]:
    """Three symbols over ~9 hours ending 20 minutes before ``now_ms`` (exchange times in
    receive order, prices as 2-decimal text):

    * ``AAAUSDT`` and ``BBBUSDT`` share a random factor (correlated); about one minute in six
      has no trade (forward fill), several trades per minute otherwise;
    * ``CCCUSDT`` starts 4 hours later than the others, trades every 7–20 minutes, and is
      silent for 2 hours in the middle.
    """
    rng = np.random.default_rng(seed)
    end = now_ms - now_ms % MINUTE - 20 * MINUTE
    start = end - 9 * 60 * MINUTE
    minutes = np.arange(start, end, MINUTE)
    common = np.cumsum(rng.normal(0, 1.5e-3, minutes.size))
    out: dict[str, list[tuple[int, str]]] = {}
    for name, level, beta in (("AAAUSDT", 30_000.0, 1.0), ("BBBUSDT", 2_000.0, 0.7)):
        idio = np.cumsum(rng.normal(0, 5e-4, minutes.size))
        rows: list[tuple[int, str]] = []
        for i, t0 in enumerate(minutes):
            if rng.random() < 1 / 6:
                continue
            offsets = np.sort(rng.integers(0, MINUTE, rng.integers(1, 5)))
            for off in offsets:
                noise = rng.normal(0, 2e-4)
                price = level * math.exp(beta * common[i] + idio[i] + noise)
                rows.append((int(t0 + off), f"{price:.2f}"))
        out[name] = rows
    rows = []
    t = start + 4 * 60 * MINUTE + 123
    price = 5.0
    while t < end:
        if not start + 6 * 60 * MINUTE <= t < start + 8 * 60 * MINUTE:
            price *= math.exp(rng.normal(0, 2e-3))
            rows.append((t, f"{price:.4f}"))
        t += int(rng.integers(7, 21)) * MINUTE + int(rng.integers(0, 1000))
    out["CCCUSDT"] = rows
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[tuple[int, str]]]]:
    """A data root with the synthetic market under binance (read-only)."""
    data = tmp_path_factory.mktemp("metrics") / "data"
    market = synthetic_market(time.time_ns() // 1_000_000)
    for fs, trades in market.items():
        write_trades(data, "binance", fs, trades)
    return data, market


# -- the pandas reference -----------------------------------------------------------------------


def reference_returns(
    trades: list[tuple[int, str]], interval: Interval, as_of_ms: int, window_ms: int
) -> pd.Series:
    """Log returns on the window's grid, from trades in receive order (pandas, independently)."""
    prices = pd.Series(
        [float(p) for _t, p in trades], index=pd.to_datetime([t for t, _p in trades], unit="ms"), dtype=float
    )
    closes = prices.resample(interval.pandas_rule, label="left", closed="left").last().dropna()
    n = window_ms // interval.ms
    grid = pd.to_datetime(as_of_ms - interval.ms * np.arange(n, -1, -1, dtype=np.int64), unit="ms")
    on_grid = closes.reindex(closes.index.union(grid)).ffill().reindex(grid)
    log_closes = cast(pd.Series, np.log(on_grid))  # a ufunc on a Series is a Series
    return log_closes.diff().iloc[1:]


def reference_volatility(returns: pd.Series, interval: Interval) -> float | None:
    if returns.count() < 2:
        return None
    return float(returns.std(ddof=1) * math.sqrt(365 * DAY_MS / interval.ms))


def reference_correlation(a: pd.Series, b: pd.Series) -> float | None:
    if (a.notna() & b.notna()).sum() < 2:
        return None
    value = a.corr(b)
    return None if math.isnan(value) else float(value)


def approx(value: float | None) -> Any:
    return None if value is None else pytest.approx(value, rel=1e-9, abs=1e-15)


# -- running the server -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def metrics_server(data: Path, **options: Any) -> AsyncIterator[MetricsServer]:
    """A metrics server on a free loopback port over ``data`` (``options``: MetricsOptions)."""
    markets = Markets(data, MarketConfig(poll_s=0.02))
    server = MetricsServer(MetricsOptions(port=0, **options), markets)
    await server.start()
    try:
        yield server
    finally:
        await asyncio.wait_for(server.close(), 15)
        await markets.close()


def url(server: MetricsServer, path: str = "/metrics", **params: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}?{urlencode(params)}"


def metrics(f: Feed) -> list[dict[str, Any]]:
    return [m for m in f.messages if m["type"] == "metric"]


async def first_metric(server: MetricsServer, **params: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Subscribe; the first metric message and everything received up to it."""
    async with feed(url(server, **params)) as f:
        msg = await f.wait_for(lambda m: m["type"] == "metric", 20, "a metric message")
        return msg, list(f.messages)


def check_envelope(msg: dict[str, Any], exchange: str, symbol: str) -> None:
    assert set(msg) == ENVELOPE, msg
    assert msg["exchange"] == exchange and msg["symbol"] == symbol, msg
    assert isinstance(msg["ts_ms"], int) and isinstance(msg["data"], dict), msg


# -- 1. values equal the pandas reference ----------------------------------------------------------


CASES = [
    pytest.param("1m", "3h", "volatility", "AAAUSDT", id="1m-3h-vol"),
    pytest.param("1m", "1d", "volatility", "AAAUSDT", id="1m-1d-vol-short-history"),
    pytest.param("1m", "8h", "volatility", "CCCUSDT", id="1m-8h-vol-sparse-ffill"),
    pytest.param("5m", "6h", "volatility", "BBBUSDT", id="5m-6h-vol"),
    pytest.param("1h", "2d", "volatility", "CCCUSDT", id="1h-2d-vol"),
    pytest.param("1m", "4h", "correlation", "AAAUSDT,BBBUSDT", id="1m-4h-corr"),
    pytest.param("1m", "180d", "correlation", "AAAUSDT,BBBUSDT", id="1m-180d-corr-seed-window"),
    pytest.param("5m", "1d", "correlation", "AAAUSDT,CCCUSDT", id="5m-1d-corr-late-start"),
    pytest.param("15m", "12h", "correlation", "BBBUSDT,CCCUSDT", id="15m-12h-corr"),
    pytest.param("1h", "1d", "correlation", "CCCUSDT,AAAUSDT,BBBUSDT", id="1h-1d-corr-matrix"),
]


@pytest.mark.parametrize(("interval_name", "window", "metric", "symbols"), CASES)
def test_metric_equals_the_pandas_reference_on_synthetic_trades(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
    interval_name: str,
    window: str,
    metric: str,
    symbols: str,
) -> None:
    data, market = synthetic

    async def main() -> dict[str, Any]:
        async with metrics_server(data) as server:
            msg, before = await first_metric(
                server,
                exchange="binance",
                symbols=symbols,
                interval=interval_name,
                window=window,
                metric=metric,
            )
            assert [m["type"] for m in before] == ["status", "metric"], before
            return msg

    msg = run(main())
    names = symbols.split(",")
    interval = INTERVALS[interval_name]
    check_envelope(msg, "binance", symbols)
    d = msg["data"]
    window_ms = {"3h": 3, "1d": 24, "8h": 8, "6h": 6, "2d": 48, "4h": 4, "180d": 180 * 24, "12h": 12}[
        window
    ] * 3_600_000
    n = window_ms // interval.ms
    assert d["metric"] == metric and d["symbols"] == names and d["interval"] == interval_name
    assert d["window_ms"] == window_ms and d["intervals"] == n
    as_of = d["as_of_ms"]
    assert as_of == interval.floor(msg["ts_ms"]) or as_of == interval.floor(msg["ts_ms"]) - interval.ms
    assert d["start_ms"] == as_of - n * interval.ms
    returns = {s: reference_returns(market[s], interval, as_of, window_ms) for s in names}
    for entry, name in zip(d["by_symbol"], names, strict=True):
        r = returns[name]
        assert entry["symbol"] == entry["venue_symbol"] == name
        assert entry["points"] == int(r.count())
        assert entry["coverage"] == pytest.approx(r.count() / n, rel=1e-12)
        first = market[name][0][0]
        assert entry["first_candle_ms"] == interval.floor(first)
        assert entry["last_candle_ms"] == interval.floor(max(t for t, _p in market[name]))
        assert entry["last_price"] == market[name][-1][1]  # exact text of the last trade
        assert entry["last_trade_ms"] == market[name][-1][0]
        if metric == "volatility":
            assert entry["value"] == approx(reference_volatility(r, interval))
    if metric == "volatility":
        r = returns[names[0]]
        assert d["value"] == approx(reference_volatility(r, interval))
        assert d["value"] is not None and d["points"] == int(r.count())
        periods = 365 * DAY_MS / interval.ms
        assert d["periods_per_year"] == pytest.approx(periods) and d["annualisation"] == pytest.approx(
            math.sqrt(periods)
        )
    else:
        a, b = returns[names[0]], returns[names[1]]
        assert d["value"] is not None
        assert d["value"] == approx(reference_correlation(a, b))
        assert d["points"] == int((a.notna() & b.notna()).sum())
        for i, x in enumerate(names):
            for j, y in enumerate(names):
                want = 1.0 if i == j else reference_correlation(returns[x], returns[y])
                assert d["matrix"][i][j] == approx(want), (x, y)
    assert d["coverage"] == pytest.approx(d["points"] / n, rel=1e-12)
    # The window is longer than the data wherever the first candle is after the grid's start.
    short = any(e["first_candle_ms"] > d["start_ms"] for e in d["by_symbol"])
    assert (d["coverage"] < 1) == short


def test_correlated_symbols_correlate_and_quiet_minutes_are_forward_filled(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    """Sanity of the synthetic market itself (the reference could be wrong the same way)."""
    data, market = synthetic

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        async with metrics_server(data) as server:
            corr, _ = await first_metric(server, exchange="binance", symbols="AAAUSDT,BBBUSDT", window="1d")
            long, _ = await first_metric(server, exchange="binance", symbols="AAAUSDT", window="1d")
            return corr, long

    corr, long = run(main())
    assert corr["data"]["metric"] == "correlation" and corr["data"]["value"] > 0.4
    d = long["data"]
    span = max(t for t, _ in market["AAAUSDT"]) - market["AAAUSDT"][0][0]
    assert d["metric"] == "volatility" and d["coverage"] < 0.5  # 9 hours of data in a 1-day window
    # Forward fill: every grid return after the first candle is defined, quiet minutes included.
    assert d["points"] == (d["as_of_ms"] - d["by_symbol"][0]["first_candle_ms"]) // MINUTE
    assert d["points"] > span // MINUTE


@pytest.mark.parametrize(
    ("exchange", "symbol"), [("binance", "BTCUSDT"), ("kraken", "BTC/USD"), ("bitfinex", "BTC/USD")]
)
@pytest.mark.parametrize("interval_name", ["1m", "5m"])
def test_volatility_of_the_recorded_days_equals_the_reference(
    recorded_data: Path, exchange: str, symbol: str, interval_name: str
) -> None:
    async def main() -> dict[str, Any]:
        async with metrics_server(recorded_data) as server:
            msg, _ = await first_metric(
                server, exchange=exchange, symbols=symbol, interval=interval_name, window="2h"
            )
            return msg

    msg = run(main())
    check_envelope(msg, exchange, symbol)
    (path,) = (recorded_data / exchange / FS[exchange]).glob("2*/trades_ws_*.csv.gz")
    rows = [line.decode().split(",") for line in gz_lines(path)[1:]]
    trades = [(int(r[2]), r[-3]) for r in rows]
    assert trades, "the recorded day has trades"
    interval = INTERVALS[interval_name]
    d = msg["data"]
    r = reference_returns(trades, interval, d["as_of_ms"], 2 * 3_600_000)
    assert d["points"] == int(r.count())
    assert d["value"] == approx(reference_volatility(r, interval))
    assert d["by_symbol"][0]["last_price"] == trades[-1][1]
    assert (
        d["by_symbol"][0]["venue_symbol"]
        == {"binance": "BTCUSDT", "kraken": "BTC/USD", "bitfinex": "tBTCUSD"}[exchange]
    )


def test_compute_metric_equals_the_reference_on_a_month_of_minutes() -> None:
    """The pure function on a dense 30-day series with holes, against pandas."""
    rng = np.random.default_rng(3)
    interval = INTERVALS["1m"]
    now = 1_780_000_123_456
    window = 30 * DAY_MS
    n = window // MINUTE
    opens = interval.floor(now) - MINUTE * np.arange(n + 500, -1, -1, dtype=np.int64)
    keep = rng.random(opens.size) > 0.2
    opens = opens[keep]
    a = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, opens.size)))
    b = a * np.exp(rng.normal(0, 1e-3, opens.size))
    got = compute_metric("correlation", interval, window, now, [(opens, a), (opens, b)])
    trades_a = [(int(t), repr(float(p))) for t, p in zip(opens, a, strict=True)]
    trades_b = [(int(t), repr(float(p))) for t, p in zip(opens, b, strict=True)]
    ra = reference_returns(trades_a, interval, interval.floor(now), window)
    rb = reference_returns(trades_b, interval, interval.floor(now), window)
    assert got["intervals"] == n and got["points"] == n  # data before the window: full coverage
    assert got["value"] == approx(reference_correlation(ra, rb))
    vol = compute_metric("volatility", interval, window, now, [(opens, a)])
    assert vol["value"] == approx(reference_volatility(ra, interval)) and vol["coverage"] == 1.0
    with pytest.raises(ValueError, match="metric"):
        compute_metric("beta", interval, DAY_MS, now, [(opens, a)])
    with pytest.raises(ValueError, match="correlation"):
        compute_metric("correlation", interval, DAY_MS, now, [(opens, a)])


def test_constant_and_empty_series_give_null_values() -> None:
    interval = INTERVALS["1m"]
    now = 1_780_000_000_000
    opens = np.array([interval.floor(now) - 10 * MINUTE], dtype=np.int64)
    flat = np.array([5.0])
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    got = compute_metric("correlation", interval, 3_600_000, now, [(opens, flat), empty])
    assert got["value"] is None and got["points"] == 0 and got["matrix"] == [[None, None], [None, None]]
    assert got["by_symbol"][0]["points"] == 10 and got["by_symbol"][1] == {"points": 0, "coverage": 0.0}
    vol = compute_metric("volatility", interval, 3_600_000, now, [(opens, flat)])
    assert vol["value"] == 0.0 and vol["points"] == 10  # no move: zero volatility, not undefined


# -- 2. live: the partial candle, every second --------------------------------------------------


def test_live_metrics_every_second_follow_the_running_candle(tmp_path: Path) -> None:
    """The recorder writes live trades; a few older candles come from a day folder written
    beside its own. Each second brings a message; the value moves within one minute."""
    data = tmp_path / "data"

    async def main() -> tuple[list[dict[str, Any]], list[float]]:
        async with recording(data, "binance", rate=3.0) as rec:
            live = rec.root / "live" / "live_trades.ndjson"

            def first_trade() -> bool:
                return live.exists() and b"\n" in live.read_bytes()

            await until(first_trade, 20, "a live trade")
            first = orjson.loads(live.read_bytes().split(b"\n", 1)[0])
            assert first["recv_seq"] > 3  # the three history rows below stay below the live ones
            price = float(first["price"])
            now = time.time_ns() // 1_000_000
            yesterday = datetime.fromtimestamp(now / 1000, UTC) - timedelta(days=1)
            label = yesterday.strftime("%Y%m%d")
            rows = [
                (now - now % MINUTE - k * MINUTE + 500, f"{price * (1 + k / 1000):.2f}") for k in (3, 2, 1)
            ]
            day = rec.root / label
            day.mkdir()
            body = [HEADER] + [f"{i},{t * 1_000_000},{t},{i},{p},0.5,buy" for i, (t, p) in enumerate(rows, 1)]
            (day / f"trades_ws_BTCUSDT_{label}.csv.gz").write_bytes(
                gzip.compress(("\n".join(body) + "\n").encode())
            )
            async with (
                metrics_server(data) as server,
                feed(url(server, exchange="binance", symbols="BTCUSDT", window="10m")) as f,
            ):
                arrivals: list[float] = []
                seen = 0

                def got_enough() -> bool:
                    nonlocal seen
                    while seen < len(f.messages):
                        if f.messages[seen]["type"] == "metric":
                            arrivals.append(time.monotonic())
                        seen += 1
                    return len(arrivals) >= 7

                await until(got_enough, 30, "seven metric messages")
                return metrics(f), arrivals

    msgs, arrivals = run(main(), timeout=80)
    assert len(msgs) >= 7
    gaps = np.diff(arrivals[1:])  # the first message comes at once, then one per tick
    assert 0.5 < float(np.median(gaps)) < 2.0, gaps
    # Messages change as trades arrive, inside one running minute: the partial candle counts.
    by_minute: dict[int, set[tuple[Any, Any]]] = {}
    for m in msgs:
        d = m["data"]
        entry = d["by_symbol"][0]
        assert d["value"] is not None and d["points"] >= 3
        by_minute.setdefault(d["as_of_ms"], set()).add((d["value"], entry["last_price"]))
        if entry["last_candle_ms"] == d["as_of_ms"]:
            assert entry["last_trade_ms"] >= d["as_of_ms"]
    assert max(len(v) for v in by_minute.values()) >= 2, by_minute
    assert len({m["ts_ms"] for m in msgs}) == len(msgs)


# -- 3. protocol -------------------------------------------------------------------------------------


def test_status_then_metric_then_ticks_share_one_computation(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        async with metrics_server(data, update_interval_s=0.2) as server:
            q = {"exchange": "binance", "window": "6h", "metric": "correlation"}
            async with (
                feed(url(server, symbols="AAAUSDT,BBBUSDT", **q)) as a,
                feed(url(server, symbols="aaausdt,BBB/USDT", **q)) as b,
                feed(url(server, path="/", symbols="AAAUSDT,BBBUSDT", **q)) as c,
            ):
                for f in (a, b, c):
                    await f.wait_for(lambda m: len(metrics(f)) >= 6, 20, "six metrics")  # noqa: B023
                health = (await http_get(server.port, "/health")).json
            idle = (await http_get(server.port, "/health")).json
            return a.messages, b.messages, health, idle

    a, b, health, idle = run(main())
    status = a[0]
    check_envelope(status, "binance", "AAAUSDT,BBBUSDT")
    assert status["type"] == "status"
    assert status["data"] == {
        "status": "subscribed",
        "message": status["data"]["message"],
        "metric": "correlation",
        "symbols": ["AAAUSDT", "BBBUSDT"],
        "venue_symbols": ["AAAUSDT", "BBBUSDT"],
        "interval": "1m",
        "window_ms": 6 * 3_600_000,
        "update_interval_s": 0.2,
    }
    assert {m["type"] for m in a[1:]} == {"metric"}
    # Replies echo the client's spelling; the numbers are the same computation.
    check_envelope(b[1], "binance", "aaausdt,BBB/USDT")
    assert b[1]["data"]["symbols"] == ["aaausdt", "BBB/USDT"]
    assert [e["venue_symbol"] for e in b[1]["data"]["by_symbol"]] == ["AAAUSDT", "BBBUSDT"]
    assert b[-1]["data"]["value"] == a[-1]["data"]["value"]
    (group,) = health["subscriptions"]
    assert (
        group["clients"] == 3
        and group["metric"] == "correlation"
        and group["symbols"] == ["AAAUSDT", "BBBUSDT"]
    )
    # Data that does not change is computed once (twice if a minute turned), yet sent every tick.
    assert 1 <= group["computations"] <= 2 < len(a)
    assert health["connections"] == 3 and health["ok"] is True and health["server"] == "metrics"
    assert {s["symbol"] for s in health["series"]} == {"AAAUSDT", "BBBUSDT"}
    assert health["ticks"] >= 5
    # When the last client leaves, the group and its series go.
    assert idle["subscriptions"] == [] and idle["series"] == [] and idle["connections"] == 0


def test_ping_pong_and_junk_gets_an_error_status_without_a_close(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> list[dict[str, Any]]:
        async with metrics_server(data, update_interval_s=5) as server:
            async with feed(url(server, symbols="AAAUSDT", window="1h")) as f:
                await f.wait_for(lambda m: m["type"] == "metric")
                for text in (
                    '{"type":"ping"}',
                    '{"type":"ping","id":42}',
                    '{"type":"ping","id":"a\\u0000b"}',
                ):
                    await f.ws.send(text)
                for junk in ("hello", "[1,2]", '{"type":"subscribe","symbol":"X"}', b"\x00\xff", "{"):
                    await f.ws.send(junk)
                await f.wait_for(
                    lambda m: sum(x["type"] == "status" for x in f.messages) >= 6, what="5 errors"
                )
                await f.ws.send('{"type":"ping","id":7}')
                await f.wait_for(lambda m: m["type"] == "pong" and m["data"].get("id") == 7)
                assert f.ws.close_code is None
            return f.messages

    msgs = run(main())
    pongs = [m for m in msgs if m["type"] == "pong"]
    assert [p["data"] for p in pongs] == [{}, {"id": 42}, {"id": "a?b"}, {"id": 7}]
    for m in pongs:
        check_envelope(m, "binance", "AAAUSDT")
    errors = [m["data"] for m in msgs if m["type"] == "status" and m["data"]["status"] == "error"]
    assert len(errors) == 5
    assert "not JSON" in errors[0]["message"] and "not a JSON object" in errors[1]["message"]
    assert "unknown type 'subscribe'" in errors[2]["message"]
    assert all('{"type": "ping"}' in e["message"] for e in errors)


def test_default_exchange_is_the_only_recorded_one_or_the_option(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]], tmp_path: Path
) -> None:
    data, _market = synthetic
    kraken = tmp_path / "kraken-only"
    write_trades(kraken, "kraken", "ETHUSD", [(time.time_ns() // 1_000_000 - 3 * MINUTE, "3000.5")])

    async def main() -> list[Any]:
        out: list[Any] = []
        async with metrics_server(kraken) as server:
            msg, _ = await first_metric(server, symbols="ETH/USD")
            out.append(msg)
        async with metrics_server(data) as server:  # only binance recorded
            msg, _ = await first_metric(server, symbols="AAAUSDT")
            out.append(msg)
        async with metrics_server(data, default_exchange="kraken") as server:
            out.append((await http_get(server.port, "/metrics?symbols=AAAUSDT")).json)
        return out

    from_kraken, from_binance, refused = run(main())
    check_envelope(from_kraken, "kraken", "ETH/USD")
    assert (
        from_kraken["data"]["value"] == 0.0 and from_kraken["data"]["by_symbol"][0]["last_price"] == "3000.5"
    )
    check_envelope(from_binance, "binance", "AAAUSDT")
    assert refused == {"error": "no recorded data for kraken AAAUSDT"}


def test_a_folder_without_trades_is_unavailable_1013(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "binance" / "EMPTYUSDT" / "20260101").mkdir(parents=True)  # a day folder, no trades yet
    (data / "binance" / "BAREUSDT").mkdir(parents=True)  # not even a day: not a recorded stream

    async def main() -> tuple[list[dict[str, Any]], int | None]:
        async with metrics_server(data) as server:
            with pytest.raises(InvalidStatus) as bare:
                async with connect(url(server, symbols="BAREUSDT")):
                    pass
            assert bare.value.response.status_code == 404
        async with metrics_server(data) as server, feed(url(server, symbols="EMPTYUSDT")) as f:
            code = await f.wait_closed()
            return f.messages, code

    msgs, code = run(main())
    assert [m["data"]["status"] for m in msgs] == ["subscribed", "unavailable"]
    assert "no recorded trades" in msgs[1]["data"]["message"] and code == 1013


# -- 4. refusals -------------------------------------------------------------------------------------

VALID = "exchange=binance&symbols=AAAUSDT,BBBUSDT&interval=1m&window=1h&metric=correlation"

REFUSALS = [
    ("symbols=", 400, "symbols is required"),
    ("exchange=binance", 400, "symbols is required"),
    ("symbols=AAAUSDT,,BBBUSDT", 400, "symbols must be comma-separated symbols without empty items"),
    ("symbols=AAAUSDT,", 400, "symbols must be comma-separated"),
    ("symbols=AAAUSDT&metric=beta", 400, "metric must be correlation or volatility, not 'beta'"),
    ("symbols=AAAUSDT&metric=Volatility", 400, "metric must be correlation or volatility"),
    ("symbols=AAAUSDT&metric=correlation", 400, "correlation takes 2 to 8 symbols, got 1"),
    ("symbols=" + ",".join("ABCDEFGHI"), 400, "correlation takes 2 to 8 symbols, got 9"),
    ("symbols=AAAUSDT&interval=10m", 400, "Invalid interval: 10m. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W"),
    ("symbols=AAAUSDT&interval=1d", 400, "Invalid interval: 1d. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W"),
    ("symbols=AAAUSDT&window=forever", 400, "window must be a number with a unit"),
    ("symbols=AAAUSDT&window=-5d", 400, "window must be a number with a unit"),
    ("symbols=AAAUSDT&window=4000d", 400, "window must be at most 10 years"),
    ("symbols=AAAUSDT&window=1m", 400, "window must span at least 2 intervals of 1m, got 1m"),
    ("symbols=AAAUSDT&window=90m&interval=1h", 400, "window must span at least 2 intervals of 1h, got 90m"),
    ("symbols=AAAUSDT&window=1000d", 400, "window 1000d is 1440000 intervals of 1m; at most 600000"),
    ("symbols=AAAUSDT&exchange=coinbase", 400, "unknown exchange 'coinbase'"),
    ("symbols=ZZZUSDT", 404, "no recorded data for binance ZZZUSDT"),
    ("symbols=AAAUSDT,ZZZUSDT", 404, "no recorded data for binance ZZZUSDT"),
    ("symbols=AAAUSDT&exchange=kraken", 404, "no recorded data for kraken AAAUSDT"),
    ("symbols=AAA/USDT,aaausdt", 400, "symbols must name different streams"),
    ("symbols=AAAUSDT&window=" + "9" * 65, 400, f"window is too long (at most {MAX_VALUE_CHARS} characters)"),
]


@pytest.fixture(scope="module")
def running(recorded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A metrics server in a background thread over the hostile root (recorded streams, the
    secret beside the root, look-alike folders) plus the synthetic market."""
    base = tmp_path_factory.mktemp("metrics-hostile")
    data, _secret = build_root(recorded_data, base)
    for fs, trades in synthetic_market(time.time_ns() // 1_000_000).items():
        write_trades(data, "binance", fs, trades)
    srv = Running(data, max_connections=50, max_message_bytes=1024)
    try:
        yield srv
    finally:
        srv.close()


class Running:
    """A MetricsServer on an event loop in a background thread, for blocking test clients."""

    def __init__(self, data: Path, **options: Any) -> None:
        self.data = data
        self.errors = ErrorLog()
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self.errors)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="metrics-serve", daemon=True)
        self.thread.start()
        self.markets = Markets(data, MarketConfig(poll_s=0.05))
        self.server = MetricsServer(MetricsOptions(port=0, **options), self.markets)
        self.run(self.server.start())
        self.port = self.server.port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @contextlib.contextmanager
    def no_server_errors(self) -> Iterator[None]:
        before = len(self.errors.records)
        yield
        new = self.errors.records[before:]
        assert not new, [r.getMessage() for r in new]

    def health(self) -> dict[str, Any]:
        answer = get(self.port, "/health")
        assert answer.status == 200 and answer.json()["ok"] is True
        return dict(answer.json())

    def market_roots(self) -> list[Path]:
        async def roots() -> list[Path]:
            return [m.stream.root for m in self.markets.markets.values()]

        return self.run(roots())

    def close(self) -> None:
        async def shutdown() -> None:
            await self.server.close()
            await self.markets.close()

        try:
            self.run(shutdown(), 30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self.errors)


def first_message(port: int, target: str) -> dict[str, Any]:
    with ws_open(port, target) as ws:
        return dict(json.loads(ws.recv(timeout=5)))


def assert_inside(running: Running) -> None:
    root = running.data.resolve()
    for path in running.market_roots():
        assert path.resolve().parent.parent == root, path


@pytest.mark.parametrize(("query", "status", "text"), REFUSALS, ids=[q for q, _s, _t in REFUSALS])
def test_bad_subscriptions_get_a_json_4xx_before_the_upgrade(
    running: Running, query: str, status: int, text: str
) -> None:
    with running.no_server_errors():
        answer = ws_refused(running.port, f"/metrics?{query}")
        error = assert_json_error(answer, (status,))
        assert error.startswith(text), error
        assert_printable_ascii(error)
        plain = get(running.port, f"/metrics?{query}")  # the same answer without the upgrade
        assert (plain.status, plain.body) == (answer.status, answer.body)


@pytest.mark.parametrize(
    ("target", "method", "status", "text"),
    [
        ("/metrics?" + VALID, "GET", 426, "this is a WebSocket endpoint"),
        ("/metric?" + VALID, "GET", 404, "unknown path"),
        ("/ws?" + VALID, "GET", 404, "unknown path"),
        ("/metrics/../health", "GET", 404, "unknown path"),
        ("/metrics%00?" + VALID, "GET", 404, "unknown path"),
        ("/metrics?" + VALID, "POST", 405, "only GET"),
        ("/health", "DELETE", 405, "only GET"),
    ],
)
def test_paths_and_methods(running: Running, target: str, method: str, status: int, text: str) -> None:
    with running.no_server_errors():
        answer = get(running.port, target, method)
        assert text in assert_json_error(answer, (status,))
        if status == 405:
            assert answer.headers.get("allow") == "GET"


def test_health(running: Running) -> None:
    health = running.health()
    assert {"ok", "server", "uptime_s", "connections", "subscriptions", "series", "ticks", "tick_ms"} <= set(
        health
    )
    assert health["server"] == "metrics" and health["update_interval_s"] == 1.0


HOSTILE_BASE = {
    "exchange": "kraken",
    "symbols": "BTCUSD",
    "interval": "1m",
    "window": "1h",
    "metric": "volatility",
}


def hostile_query(name: str, value: str) -> str:
    params = {**HOSTILE_BASE, name: value}
    return "&".join(f"{k}={v}" for k, v in params.items())


@pytest.mark.parametrize(
    ("name", "key"), [pytest.param(n, k, id=f"{k}={n}") for n in HOSTILE_BASE for k in HOSTILE]
)
def test_hostile_values_get_a_json_4xx(running: Running, name: str, key: str) -> None:
    target = "/metrics?" + hostile_query(name, HOSTILE[key])
    with running.no_server_errors():
        # (/etc/passwd is reduced to the empty etcpasswd folder inside the root: not a recorded
        # stream, so 404 like every other unknown symbol.)
        answer = ws_refused(running.port, target)
        text = assert_json_error(answer, (414,) if key in TOO_LONG_QUERY else (400, 404))
        assert_printable_ascii(text)
        assert SECRET not in text
        assert_inside(running)
        running.health()


@pytest.mark.parametrize(
    ("query", "ok"),
    [
        ("symbols=..%2Fsecret&symbols=BTCUSD&exchange=kraken", True),  # the last value wins
        ("symbols=BTCUSD&symbols=..%2Fsecret&exchange=kraken", False),
        ("exchange=kraken&exchange=..&symbols=BTCUSD", False),
        ("exchange=kraken&symbols=BTCUSD&evil=..%2F..%2Fsecret", True),  # unknown names are ignored
        ("exchange=kraken&symbols=BTCUSD&evil=%00", False),  # ... but must be printable ASCII
        ("exchange=kraken&symbols=BTCUSD&interval=&window=&metric=", True),  # empty: the default
        ("exchange=KRAKEN&symbols=btc-usd", True),
        ("exchange=kraken&symbols=BTCUSD" + "&k=v" * 20, False),
        ("e" * 2000 + "=1", False),
    ],
)
def test_repeated_and_unknown_fields(running: Running, query: str, ok: bool) -> None:
    with running.no_server_errors():
        if ok:
            msg = first_message(running.port, f"/metrics?{query}")
            assert msg["data"]["status"] == "subscribed", msg
        else:
            answer = ws_refused(running.port, f"/metrics?{query}")
            assert_printable_ascii(assert_json_error(answer, (400, 414)))
        assert_inside(running)


@pytest.mark.parametrize(
    "target",
    [
        b"/metrics?exchange=kraken&symbols=BTC%00USD",
        b"/metrics?exchange=kraken&symbols=BTC\x00USD",
        b"/metrics?exchange=kraken&symbols=BTC\x1b[2JUSD",
        b"/metrics?exchange=kraken&symbols=BTCUSD&interval=1\x7fm",
        b"/metrics?exchange=kraken&symbols=..\\..\\secret",
        b"/metrics?exchange=kraken&symbols=" + b"%41" * 300,
        b"/metrics?exchange=kraken&symbols=BTC\xc3\xa9USD",
    ],
)
def test_raw_control_and_non_ascii_bytes_are_refused(running: Running, target: bytes) -> None:
    with running.no_server_errors():
        answer: Answer = send_raw(running.port, raw_get(target, *UPGRADE))
        assert answer.status == 0 or 400 <= answer.status < 500, answer
        if answer.status:
            assert_printable_ascii(assert_json_error(answer, (400, 404)))
        running.health()


# -- 5. limits and abuse -----------------------------------------------------------------------------


def test_connection_limit_503_with_retry_after(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> tuple[int, dict[str, str], bytes, dict[str, Any]]:
        async with metrics_server(data, max_connections=2, update_interval_s=5) as server:
            target = url(server, symbols="AAAUSDT", window="1h")
            async with feed(target) as a, feed(target) as b:
                for f in (a, b):
                    await f.wait_for(lambda m: m["type"] == "metric")
                with pytest.raises(InvalidStatus) as err:
                    async with connect(target, open_timeout=5):
                        pass  # pragma: no cover
                resp = err.value.response
                headers = {k.lower(): v for k, v in resp.headers.raw_items()}
            async with feed(target) as c:  # room again
                await c.wait_for(lambda m: m["type"] == "metric")
            health = (await http_get(server.port, "/health")).json
            return resp.status_code, headers, bytes(resp.body or b""), health

    status, headers, body, health = run(main())
    assert status == 503 and headers["retry-after"].isdigit()
    assert headers["content-type"] == "application/json"
    assert orjson.loads(body) == {"error": "too many connections (at most 2); retry later"}
    assert health["refused"] == 1


def test_oversized_client_frame_closes_1009_and_others_keep_their_metrics(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> tuple[int | None, int]:
        async with metrics_server(data, max_message_bytes=256, update_interval_s=0.2) as server:
            target = url(server, symbols="AAAUSDT", window="1h")
            async with feed(target) as big, feed(target) as other:
                await big.wait_for(lambda m: m["type"] == "metric")
                await big.ws.send("x" * 200)  # under the limit: an error status, no close
                await big.wait_for(lambda m: m["type"] == "status" and m["data"]["status"] == "error")
                await big.ws.send("x" * 257)
                code = await big.wait_closed()
                before = len(metrics(other))
                await other.wait_for(lambda m: len(metrics(other)) > before + 2, what="more metrics")
                return code, len(metrics(other))

    code, n = run(main())
    assert code == 1009 and n > 3


def test_ten_thousand_malformed_messages_leave_the_server_serving(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic
    junk = [
        "",
        "null",
        "{",
        "[]",
        '{"type":1}',
        '{"type":"subscribe","symbols":"../../secret"}',
        "\x00\x01\x02",
        "é" * 100,
        '{"type":"ping"' + "}" * 50,
        "9" * 1000,
    ]

    async def main() -> tuple[int, int, dict[str, Any], dict[str, Any]]:
        async with metrics_server(data, update_interval_s=0.2) as server:
            target = url(server, symbols="AAAUSDT,BBBUSDT", window="2h")
            async with feed(target) as abuser:
                await abuser.wait_for(lambda m: m["type"] == "metric")
                for i in range(10_000):
                    message: str | bytes = junk[i % len(junk)]
                    if i % 7 == 0:
                        message = bytes([i % 256]) * (i % 50 + 1)  # binary frames too
                    await abuser.ws.send(message)

                def errors() -> int:
                    return sum(
                        1 for m in abuser.messages if m["type"] == "status" and m["data"]["status"] == "error"
                    )

                await until(lambda: errors() == 10_000, 30, "10,000 error statuses")
                assert abuser.ws.close_code is None
                async with feed(target) as other:
                    msg = await other.wait_for(
                        lambda m: m["type"] == "metric", 10, "a metric for another client"
                    )
                n_metrics = len(metrics(abuser))
                last = metrics(abuser)[-1]["ts_ms"]
                await abuser.wait_for(
                    lambda m: m["type"] == "metric" and m["ts_ms"] > last, 10, "more metrics"
                )
                health = (await http_get(server.port, "/health")).json
            return errors(), n_metrics, msg, health

    errors, n_metrics, msg, health = run(main(), timeout=90)
    assert errors == 10_000 and n_metrics >= 1
    assert msg["data"]["value"] is not None
    assert health["ok"] is True and health["subscriptions"][0]["clients"] == 1


class FullBuffer:
    """A server-side transport that says 2 MiB are waiting (a client that stopped reading)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport

    def get_write_buffer_size(self) -> int:
        return 2 << 20

    def write(self, data: bytes) -> None:
        self.transport.write(data)


def test_a_client_far_behind_is_dropped_1008_and_others_keep_their_metrics(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> tuple[list[dict[str, Any]], int | None, int]:
        async with metrics_server(data, update_interval_s=0.1) as server:
            target = url(server, symbols="AAAUSDT", window="1h")
            async with feed(target) as slow, feed(target) as other:
                for f in (slow, other):
                    await f.wait_for(lambda m: m["type"] == "metric")
                (group,) = server._groups.values()
                (view,) = group.views.values()
                (client,) = [c for c in view.clients if c.ws.remote_address == slow.ws.local_address]
                client.transport = FullBuffer(client.transport)
                code = await slow.wait_closed()
                last = metrics(other)[-1]["ts_ms"]
                await other.wait_for(
                    lambda m: m["type"] == "metric" and m["ts_ms"] > last, what="more metrics"
                )
                return slow.messages, code, len(view.clients)

    messages, code, left = run(main())
    assert code == 1008 and left == 1
    dropped = messages[-1]
    assert dropped["type"] == "status" and dropped["data"]["status"] == "dropped"
    assert "2097152 bytes waiting" in dropped["data"]["message"]


def test_close_releases_the_market_listeners(
    synthetic: tuple[Path, dict[str, list[tuple[int, str]]]],
) -> None:
    data, _market = synthetic

    async def main() -> tuple[int, int]:
        markets = Markets(data, MarketConfig(poll_s=0.02))
        server = MetricsServer(MetricsOptions(port=0, update_interval_s=0.1), markets)
        await server.start()
        async with feed(url(server, symbols="AAAUSDT,BBBUSDT", interval="5m", window="1d")) as f:
            await f.wait_for(lambda m: m["type"] == "metric")
            during = sum(len(m.listeners) for m in markets.markets.values())
            await server.close()
            code = await f.wait_closed()
        assert code == 1001
        after = sum(len(m.listeners) for m in markets.markets.values())
        await markets.close()
        return during, after

    during, after = run(main())
    assert during == 2 and after == 0


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="update_interval_s"):
        MetricsOptions(update_interval_s=0)
    with pytest.raises(ValueError, match="Invalid interval"):
        MetricsOptions(default_interval="2m")
    with pytest.raises(ValueError, match="window"):
        MetricsOptions(default_window="soon")


def test_close_series_incremental_update_equals_a_rebuild(tmp_path: Path) -> None:
    """The listener path (late candles included) leaves the same series as a fresh build."""
    now = time.time_ns() // 1_000_000
    base = now - now % MINUTE - 50 * MINUTE
    history = [(base + k * MINUTE + 1_000, f"{100 + k}.5") for k in range(0, 30, 2)]
    data = tmp_path / "data"
    root = write_trades(data, "binance", "XYZUSDT", history)
    live = root / "live"
    live.mkdir()
    (live / "live_trades.ndjson").write_bytes(b"")

    async def main() -> tuple[list[tuple[int, float]], list[tuple[int, float]], dict[str, Any]]:
        async with (
            metrics_server(data, update_interval_s=0.1) as server,
            feed(url(server, symbols="XYZUSDT", interval="5m", window="2h")) as f,
        ):
            await f.wait_for(lambda m: m["type"] == "metric")
            seq = len(history)
            # New minutes, a late trade in an old (closed) 5m candle, and a brand-new old minute.
            later = [
                (base + 40 * MINUTE + 5, "140.25"),
                (base + 3 * MINUTE + 7, "99.75"),
                (base + 41 * MINUTE, "141"),
            ]
            with open(live / "live_trades.ndjson", "ab") as fh:
                for ts, price in later:
                    seq += 1
                    row = {
                        "recv_seq": seq,
                        "recv_time_ns": ts * 1_000_000,
                        "event_time_ms": ts,
                        "trade_id": seq,
                        "price": price,
                        "qty": "1",
                        "side": "buy",
                    }
                    fh.write(orjson.dumps(row) + b"\n")
            await f.wait_for(
                lambda m: m["type"] == "metric" and m["data"]["by_symbol"][0]["last_price"] == "141"
            )
            (series,) = server._series.values()
            got = list(zip(series.closes.opens.tolist(), series.closes.closes.tolist(), strict=True))
            market = next(iter(server.markets.markets.values()))
            fresh = CloseSeries(
                (b.open_ms, float(b.close)) for b in market.candles.bars(INTERVALS["5m"], 10_000)
            )
            want = list(zip(fresh.opens.tolist(), fresh.closes.tolist(), strict=True))
            return got, want, f.messages[-1]

    got, want, last = run(main())
    assert got == want and len(got) > 5
    late = INTERVALS["5m"].floor(base + 3 * MINUTE + 7)
    assert late in dict(got)
    assert last["data"]["value"] is not None


def test_trades_that_arrive_while_the_history_is_built_are_applied_after_it(tmp_path: Path) -> None:
    now = time.time_ns() // 1_000_000
    base = now - now % MINUTE - 30 * MINUTE
    data = tmp_path / "data"
    write_trades(data, "binance", "XYZUSDT", [(base + k * MINUTE, f"{10 + k}") for k in range(20)])

    async def main() -> tuple[list[tuple[int, float]], int]:
        markets = Markets(data, MarketConfig(poll_s=0.02))
        market = markets.get(markets.resolve("binance", "XYZUSDT"))
        await asyncio.wait_for(market.ready.wait(), 10)
        series = _Series(market, INTERVALS["5m"])
        task = asyncio.ensure_future(series.build())
        await asyncio.sleep(0)  # build() took its snapshot of the bars and is in the thread
        late = [(base + 25 * MINUTE, "99"), (base + 2 * MINUTE + 1, "7")]  # a new minute, a late trade
        changed = {market.candles.add(ts, price, "1") for ts, price in late}
        series.on_trades(market, [], changed)
        assert not series.built.is_set() and len(series.closes) == 0
        await task
        series.close()
        await markets.close()
        return list(
            zip(series.closes.opens.tolist(), series.closes.closes.tolist(), strict=True)
        ), series.version

    got, version = run(main())
    minutes = {base + k * MINUTE: float(10 + k) for k in range(20)}
    minutes[base + 2 * MINUTE] = 7.0  # received last in its minute: the minute's close
    minutes[base + 25 * MINUTE] = 99.0
    want: dict[int, float] = {}
    for minute in sorted(minutes):  # a 5m candle closes with its last minute
        want[INTERVALS["5m"].floor(minute)] = minutes[minute]
    assert got == sorted(want.items()) and version == 1


def test_periods_per_year_uses_365_days() -> None:
    assert YEAR_MS == 365 * DAY_MS
    got = compute_metric(
        "volatility",
        INTERVALS["1W"],
        30 * 7 * DAY_MS,
        1_780_000_000_000,
        [(np.array([1_700_000_000_000], dtype=np.int64), np.array([1.0]))],
    )
    assert got["periods_per_year"] == pytest.approx(365 / 7)
