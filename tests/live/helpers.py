"""Shared bits of the live-stream tests: venues, fast settings, polling, REST oracles."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from mmdata.net.ws import WsConfig
from mmdata.types import Candle, Trade
from tests.live.simthread import SimThread

_T = TypeVar("_T")

#: (exchange, symbol in the venue's spelling) per venue.
VENUES = [("binance", "BTCUSDT"), ("kraken", "BTC/USD"), ("bitfinex", "tBTCUSD")]
#: Reconnect quickly: the tests drop connections on purpose.
FAST = WsConfig(backoff_base_s=0.05, backoff_cap_s=0.2, open_timeout_s=5.0)
#: Simulated time per real time: a 1-minute candle closes every second.
SPEED = 60.0


def wait_for(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def gather(
    take: Callable[[float | None], list[_T]], done: Callable[[list[_T]], bool], timeout: float
) -> list[_T]:
    """Call ``take`` (a ``get_*_updates``) until ``done(items)`` or ``timeout`` s pass."""
    items: list[_T] = []
    end = time.monotonic() + timeout
    while not done(items):
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {len(items)} items after {timeout} s")
        items += take(min(left, 0.2))
    return items


def kraken_float(text: str) -> str:
    """A REST fixed-decimal string as Kraken's socket prints the same number (JSON float)."""
    return format(Decimal(text).normalize(), "f")


def assert_candles_equal_rest(sim: SimThread, symbol: str, candles: list[Candle]) -> None:
    """Each candle equals the simulator's REST candle of its interval, exact text."""
    exchange = sim.exchange
    if exchange == "binance":
        first, last = min(c.open_time_ms for c in candles), max(c.open_time_ms for c in candles)
        rows = sim.rest(
            "/api/v3/klines", symbol=symbol, interval="1m", startTime=first, endTime=last, limit=1000
        )
        by_open = {row[0]: row for row in rows}
        for c in candles:
            row = by_open[c.open_time_ms]
            assert (c.open, c.high, c.low, c.close, c.volume, c.quote_volume, c.trades) == (
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[7],
                row[8],
            ), c
    elif exchange == "kraken":
        pair = symbol.replace("/", "")
        rows = sim.rest("/0/public/OHLC", pair=pair, interval=1)["result"][pair]
        by_open = {row[0] * 1000: row for row in rows}
        for c in candles:
            row = by_open[c.open_time_ms]
            # REST: fixed-decimal strings; the socket: the same numbers as JSON floats.
            assert (c.open, c.high, c.low, c.close, c.volume) == tuple(
                kraken_float(x) for x in (row[1], row[2], row[3], row[4], row[6])
            ), c
            assert c.trades == row[7]
    else:
        body = sim.rest_text(f"/v2/candles/trade:1m:{symbol}/hist", limit=1000)
        by_open = {int(row[0]): row for row in json.loads(body, parse_float=str, parse_int=str)}
        for c in candles:
            _, open_, close, high, low, volume = by_open[c.open_time_ms]
            assert (c.open, c.close, c.high, c.low, c.volume) == (open_, close, high, low, volume), c


def assert_trades_equal_rest(sim: SimThread, symbol: str, trades: list[Trade]) -> None:
    """Each trade is in the simulator's REST trade history, same id, time, side and exact text."""
    exchange = sim.exchange
    first, last = trades[0], trades[-1]
    if exchange == "binance":
        rows = sim.rest("/api/v3/aggTrades", symbol=symbol, fromId=first.trade_id, limit=1000)
        by_id: dict[Any, Any] = {row["a"]: row for row in rows}
        for t in trades:
            row = by_id[t.trade_id]
            assert (t.price, t.qty, t.ts_ms, t.side) == (
                row["p"],
                row["q"],
                row["T"],
                "sell" if row["m"] else "buy",
            )
    elif exchange == "kraken":
        pair = symbol.replace("/", "")
        rows = sim.rest("/0/public/Trades", pair=pair, since=str(first.ts_ms * 1_000_000))["result"][pair]
        by_id = {row[6]: row for row in rows}
        for t in trades:
            price, volume, when, side, _, _, _ = by_id[t.trade_id]
            assert (t.price, t.qty) == (kraken_float(price), kraken_float(volume))
            assert t.ts_ms == int(Decimal(str(when)) * 1000) and t.side == ("buy" if side == "b" else "sell")
    else:
        body = sim.rest_text(
            f"/v2/trades/{symbol}/hist", start=first.ts_ms, end=last.ts_ms, limit=10000, sort=1
        )
        by_id = {int(row[0]): row for row in json.loads(body, parse_float=str, parse_int=str)}
        for t in trades:
            _, mts, amount, price = by_id[int(t.trade_id)]
            assert (t.price, int(mts)) == (price, t.ts_ms)
            assert amount == (t.qty if t.side == "buy" else "-" + t.qty)
