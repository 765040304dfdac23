"""Venue history REST (``mmdata.exchanges.history``) without sockets.

Parsers are checked on the documented example rows (PROTOCOLS.md §A.5, §B.7, §C.6) and on
malformed bodies. Pagination is checked with hypothesis against the simulator's sans-I/O
REST handlers (``BinanceSim.rest`` / ``KrakenSim.rest`` / ``BitfinexSim.rest`` over a
``SyntheticMarket``): over random ranges and small page limits the concatenated rows must
equal the market's own trades / candles exactly. Hand-written fake venues cover what the
simulator does not produce: thousands of trades in one millisecond, Kraken's ``last`` not
advancing or repeating a trade, an empty page mid-range, body rate limits.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.candles import INTERVALS
from mmdata.errors import ConfigError, ExchangeError, ExchangeProtocolError, RateLimited
from mmdata.exchanges.history import (
    HISTORY_INTERVALS,
    HistoryVenue,
    Pager,
    candle_pager,
    history_venue,
    kraken_pair,
    parse_binance_agg_trades,
    parse_binance_klines,
    parse_bitfinex_candles,
    parse_bitfinex_trades,
    parse_kraken_ohlc,
    parse_kraken_trades,
    trade_pager,
)
from mmdata.sim.binance import BinanceSim
from mmdata.sim.bitfinex import BitfinexSim
from mmdata.sim.kraken import KrakenSim
from mmdata.sim.market import SyntheticMarket, default_specs
from mmdata.sim.model import RestResponse, SimCandle
from mmdata.types import Candle, HttpRequest, Trade

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z: the live market starts here
VENUES = ("binance", "kraken", "bitfinex")
SIM_SYMBOL = {"binance": "BTCUSDT", "kraken": "BTC/USD", "bitfinex": "tBTCUSD"}
USER_SYMBOL = {"binance": "btc/usdt", "kraken": "XBT/USD", "bitfinex": "BTC/USD"}
BASE = "http://sim.test"


# -- the simulator, driven in-process ----------------------------------------------------------------
class SimVenue:
    """One venue simulator over a one-day synthetic past plus ten live minutes of steps."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.market = SyntheticMarket(
            default_specs(exchange, [SIM_SYMBOL[exchange]]), seed=3, start_ms=T0, past_days=1
        )
        self.symbol = self.market.symbols()[0]
        now = T0
        for _ in range(3000):  # live steps: several trades may share one millisecond
            now += 200
            self.market.step(self.symbol, now)
        self.last_trade_ms = now
        self.now_ms = now + 90_500  # a few closed minutes without trades, and a running one
        self.sim: BinanceSim | KrakenSim | BitfinexSim
        if exchange == "binance":
            self.sim = BinanceSim(self.market, weight_limit=10**9)
        elif exchange == "kraken":
            self.sim = KrakenSim(self.market)
        else:
            self.sim = BitfinexSim(self.market)
        spec = self.market.specs[self.symbol]
        self.price_scale = Decimal(10) ** -spec.price_precision
        self.qty_scale = Decimal(10) ** -spec.qty_precision
        trades = self.market.trades(self.symbol, limit=10**7)
        per_ms: dict[int, int] = {}
        for t in trades:
            per_ms[t.ts_ms] = per_ms.get(t.ts_ms, 0) + 1
        self.max_trades_per_ms = max(per_ms.values())

    def answer(self, request: HttpRequest) -> RestResponse:
        parts = urlsplit(request.url)
        assert f"{parts.scheme}://{parts.netloc}" == BASE
        query = dict(request.params)
        assert len(query) == len(request.params), "a parameter sent twice"
        return self.sim.rest(parts.path, query, self.now_ms)


@functools.cache
def sim_venue(exchange: str) -> SimVenue:
    return SimVenue(exchange)


def drive(
    pager: Pager, answer: Callable[[HttpRequest], RestResponse], check: Callable[[list[Any], int], None]
) -> list[Any]:
    """Run ``pager`` to the end; after every page ``check(rows so far, done_ms)``."""
    rows: list[Any] = []
    done_ms = pager.done_ms
    sent = pager.requests
    while (request := pager.next_request()) is not None:
        assert pager.next_request() is request  # the same request until it is fed
        sent += 1
        assert pager.requests == sent
        assert sent < 20_000, "pager does not end"
        response = answer(request)
        assert response.status == 200, response.body
        rows += pager.feed(response.body)
        assert pager.done_ms >= done_ms
        done_ms = pager.done_ms
        check(rows, done_ms)
    assert pager.done
    return rows


def dense(candles: Sequence[SimCandle], interval_ms: int, end_ms: int) -> list[SimCandle]:
    """A candle for every interval from the first traded one to ``end_ms`` (flat when empty)."""
    if not candles:
        return []
    by_open = {c.open_ms: c for c in candles}
    out: list[SimCandle] = []
    prev = candles[0].close
    for open_ms in range(candles[0].open_ms, end_ms, interval_ms):
        c = by_open.get(open_ms) or SimCandle(open_ms, interval_ms, prev, prev, prev, prev, 0, 0, 0, -1, -1)
        prev = c.close
        out.append(c)
    return out


def expected_candles(v: SimVenue, interval: str, start: int, end: int) -> list[tuple[Any, ...]]:
    iv = INTERVALS[interval]
    stop = min(end, iv.floor(v.now_ms))
    every = v.market.candles(v.symbol, iv.ms, 0, stop, limit=10**7)
    if v.exchange != "bitfinex":  # Binance and Kraken list empty intervals as flat rows
        every = dense(every, iv.ms, stop)
    ps, qs = v.price_scale, v.qty_scale
    trades = v.exchange != "bitfinex"
    return [
        (
            c.open_ms,
            c.open * ps,
            c.high * ps,
            c.low * ps,
            c.close * ps,
            c.volume * qs,
            c.trades if trades else None,
        )
        for c in every
        if start <= c.open_ms < stop
    ]


def candle_key(c: Candle) -> tuple[Any, ...]:
    return (
        c.open_time_ms,
        Decimal(c.open),
        Decimal(c.high),
        Decimal(c.low),
        Decimal(c.close),
        Decimal(c.volume),
        c.trades,
    )


def trade_key(t: Trade) -> tuple[Any, ...]:
    return (t.trade_id, t.ts_ms, Decimal(t.price), Decimal(t.qty), t.side)


def expected_trades(v: SimVenue, start: int, end: int) -> list[tuple[Any, ...]]:
    trades = v.market.trades(v.symbol, start_ms=start, end_ms=end, limit=10**7)
    return [(t.trade_id, t.ts_ms, t.price * v.price_scale, t.qty * v.qty_scale, t.side) for t in trades]


# -- pagination properties against the simulator ------------------------------------------------------
# Ranges start anywhere from an hour before the synthetic past (the "listing") to the live
# minutes; lengths are short enough that a page limit of 1 still finishes quickly.
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("exchange", VENUES)
@SETTINGS
@given(data=st.data())
def test_trade_pages_equal_the_market(exchange: str, data: st.DataObject) -> None:
    v = sim_venue(exchange)
    past = v.market.past_start_ms
    start = data.draw(
        st.one_of(
            st.integers(past - HOUR, past + HOUR),  # around the first trade
            st.integers(past, v.last_trade_ms),
            st.integers(T0 - 2 * MIN, v.last_trade_ms),  # the busy live minutes
        ),
        label="start",
    )
    end = start + data.draw(st.integers(1, 3 * HOUR), label="length")
    smallest = v.max_trades_per_ms + 1 if exchange == "bitfinex" else 1  # see test_bitfinex_...
    limit = data.draw(st.integers(smallest, 50), label="limit")
    venue = history_venue(exchange, BASE)
    pager = trade_pager(venue, USER_SYMBOL[exchange], start, end, limit=limit)
    want = expected_trades(v, start, end)

    def check(rows: list[Trade], done_ms: int) -> None:
        got = [trade_key(t) for t in rows]
        assert got == want[: len(got)]  # in order, nothing repeated or skipped so far
        assert all(w[1] >= done_ms for w in want[len(got) :])  # done_ms promises the rest are newer

    rows = drive(pager, v.answer, check)
    assert [trade_key(t) for t in rows] == want
    assert pager.done_ms == end
    assert {(t.exchange, t.symbol) for t in rows} <= {(exchange, SIM_SYMBOL[exchange])}


@pytest.mark.parametrize("exchange", VENUES)
@SETTINGS
@given(data=st.data())
def test_candle_pages_equal_the_market(exchange: str, data: st.DataObject) -> None:
    v = sim_venue(exchange)
    venue = history_venue(exchange, BASE)
    interval = data.draw(st.sampled_from(["1m", "5m", "15m", "1h"]), label="interval")
    iv = INTERVALS[interval]
    window = venue.ohlc_window_start(interval, v.now_ms)
    lowest = v.market.past_start_ms - 3 * HOUR if window is None else max(window, 0)
    start = data.draw(st.integers(lowest, v.now_ms), label="start")
    end = start + data.draw(st.integers(1, 8 * HOUR), label="length")  # may reach past now: clipped
    limit = data.draw(st.integers(1, 50), label="limit")
    pager = candle_pager(venue, USER_SYMBOL[exchange], interval, start, end, now_ms=v.now_ms, limit=limit)
    want = expected_candles(v, interval, start, end)

    def check(rows: list[Candle], done_ms: int) -> None:
        got = [candle_key(c) for c in rows]
        assert got == want[: len(got)]
        assert all(w[0] >= done_ms for w in want[len(got) :])

    rows = drive(pager, v.answer, check)
    assert [candle_key(c) for c in rows] == want
    assert all(c.closed and c.interval == interval and c.open_time_ms + iv.ms <= v.now_ms for c in rows)
    assert pager.done_ms == max(start, min(end, iv.floor(v.now_ms)))
    if exchange == "kraken":
        assert pager.requests <= 1  # OHLC has no pages: one answer holds the whole window


def test_the_property_sees_empty_candles_and_many_trades_per_millisecond() -> None:
    """The hypothesis ranges above do cover the interesting cases."""
    v = sim_venue("binance")
    rows = expected_candles(v, "1m", v.market.past_start_ms, v.now_ms)
    assert any(r[5] == 0 for r in rows)  # flat rows of empty minutes
    assert v.max_trades_per_ms >= 3


def test_bitfinex_refuses_a_millisecond_fuller_than_a_page_on_the_sim() -> None:
    v = sim_venue("bitfinex")
    per_ms = Counter(t.ts_ms for t in v.market.trades(v.symbol, limit=10**7))
    busiest, count = per_ms.most_common(1)[0]
    assert count == v.max_trades_per_ms
    pager = trade_pager(
        history_venue("bitfinex", BASE), "BTC/USD", busiest, busiest + 5, limit=v.max_trades_per_ms
    )
    request = pager.next_request()
    assert request is not None
    with pytest.raises(
        ExchangeProtocolError, match=f"more than {v.max_trades_per_ms} trades in one millisecond"
    ):
        pager.feed(v.answer(request).body)


# -- documented example rows ---------------------------------------------------------------------------
def test_binance_kline_example_row() -> None:
    body = (
        '[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",'
        '1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]'
    )  # a weekly kline: open Monday 2017-07-03, close time one week later - 1 ms
    [candle] = parse_binance_klines(body, "BTCUSDT", "1W", now_ms=1499644800000)
    assert candle == Candle(
        "binance", "BTCUSDT", "1W", 1499040000000, "0.01634790", "0.80000000", "0.01575800",
        "0.01577100", "148976.11427815", "2434.19055334", 308, True,
    )  # fmt: skip
    [running] = parse_binance_klines(body, "BTCUSDT", "1W", now_ms=1499644799999)
    assert not running.closed


def test_binance_agg_trade_example_row() -> None:
    body = (
        '[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,'
        '"m":true,"M":true}]'
    )
    assert parse_binance_agg_trades(body, "BTCUSDT") == [
        Trade("binance", "BTCUSDT", 1498793709153, "0.01633102", "4.70443515", "sell", 26129)
    ]
    assert parse_binance_agg_trades(body.replace('"m":true', '"m":false'), "BTCUSDT")[0].side == "buy"


def test_kraken_ohlc_example() -> None:
    body = (
        '{"error":[],"result":{"XXBTZUSD":[[1688671140,"30306.0","30306.0","30306.0","30306.0","30306.0",'
        '"0.00000000",0],[1688671200,"30306.1","30306.2","30305.7","30305.7","30306.1","3.39243896",23]],'
        '"last":1688671140}}'
    )
    committed, running = parse_kraken_ohlc(body, "BTC/USD", "1m")
    assert committed == Candle(
        "kraken",
        "BTC/USD",
        "1m",
        1688671140000,
        "30306.0",
        "30306.0",
        "30306.0",
        "30306.0",
        "0.00000000",
        None,
        0,
        True,
    )
    assert running == Candle(
        "kraken",
        "BTC/USD",
        "1m",
        1688671200000,
        "30306.1",
        "30306.2",
        "30305.7",
        "30305.7",
        "3.39243896",
        None,
        23,
        False,
    )  # the last entry is the running candle (§B.7); vwap is not kept


def test_kraken_trades_example() -> None:
    body = (
        '{"error":[],"result":{"XXBTZUSD":[["30243.40000","0.34507674",1688669597.8277369,"b","m","",61044952],'
        '["30243.30000","0.00100000",1688669597.9999999,"s","l","",61044953]],"last":"1688671969993150842"}}'
    )
    trades, last = parse_kraken_trades(body, "BTC/USD")
    assert last == "1688671969993150842"
    assert trades == [
        Trade("kraken", "BTC/USD", 1688669597827, "30243.40000", "0.34507674", "buy", 61044952),
        # floor(time * 1000) with Decimal: a float would give 1688669598000
        Trade("kraken", "BTC/USD", 1688669597999, "30243.30000", "0.00100000", "sell", 61044953),
    ]


def test_bitfinex_example_rows_keep_number_text() -> None:
    candles = parse_bitfinex_candles("[[1700000040000,30000.5,30001,30002.25,29999,1.5e-7]]", "tBTCUSD", "1m")
    assert candles == [
        Candle(
            "bitfinex",
            "tBTCUSD",
            "1m",
            1700000040000,
            "30000.5",
            "30002.25",
            "29999",
            "30001",
            "1.5e-7",
            None,
            None,
            True,
        )
    ]  # OPEN, CLOSE, HIGH, LOW on the wire
    trades = parse_bitfinex_trades(
        "[[401,1700000000000,-0.01,30000.4],[402,1700000000001,7e-7,30000.5]]", "tBTCUSD"
    )
    assert trades == [
        Trade("bitfinex", "tBTCUSD", 1700000000000, "30000.4", "0.01", "sell", 401),
        Trade("bitfinex", "tBTCUSD", 1700000000001, "30000.5", "7e-7", "buy", 402),
    ]


# -- malformed bodies and venue errors -----------------------------------------------------------------
KLINE = '[1700000040000,"1.0","1.0","1.0","1.0","2.0",1700000099999,"2.0",1,"0","0","0"]'
AGG = '{"a":1,"p":"1.0","q":"2.0","f":1,"l":1,"T":1700000000000,"m":false,"M":true}'
OHLC_ROW = '[1700000040,"1.0","1.0","1.0","1.0","1.0","2.0",1]'
KTRADE = '["1.0","2.0",1700000000.5,"b","m","",7]'


def _kraken(rows: str, last: str = '"1700000000500000001"') -> str:
    return f'{{"error":[],"result":{{"XXBTZUSD":[{rows}],"last":{last}}}}}'


def _klines(body: str) -> object:
    return parse_binance_klines(body, "BTCUSDT", "1m")


def _agg(body: str) -> object:
    return parse_binance_agg_trades(body, "BTCUSDT")


def _ohlc(body: str) -> object:
    return parse_kraken_ohlc(body, "BTC/USD", "1m")


def _ktrades(body: str) -> object:
    return parse_kraken_trades(body, "BTC/USD")


def _bcandles(body: str) -> object:
    return parse_bitfinex_candles(body, "tBTCUSD", "1m")


def _btrades(body: str) -> object:
    return parse_bitfinex_trades(body, "tBTCUSD")


MALFORMED: list[tuple[Callable[[str], object], str]] = [
    (_klines, "not json"),
    (_klines, '{"a":1}'),
    (_klines, "[[1700000040000]]"),
    (_klines, f"[{KLINE.replace('1700000040000', '1700000040001')}]"),  # not on a minute boundary
    (_klines, f"[{KLINE.replace('1700000099999', '1700000100000')}]"),  # close time of another interval
    (_klines, "[" + KLINE.replace('"2.0"', "2.0", 1) + "]"),  # volume as a JSON number
    (_klines, "[" + KLINE.replace('"1.0"', '"abc"', 1) + "]"),
    (_klines, "[" + KLINE.replace('"2.0"', '"-2.0"', 1) + "]"),
    (_klines, "[" + KLINE.replace(",1,", ",-1,") + "]"),
    (_klines, "[" * 100_000),
    (_agg, "[" + AGG.replace('"m":false', '"m":"no"') + "]"),
    (_agg, "[" + AGG.replace('"a":1', '"a":"1"') + "]"),
    (_agg, "[" + AGG.replace('"T"', '"t"') + "]"),
    (_agg, "[1]"),
    (_agg, "[" + AGG.replace('"1.0"', '"NaN"') + "]"),
    (_ohlc, '{"error":[],"result":{"XXBTZUSD":[],"XETHZUSD":[],"last":1}}'),
    (_ohlc, '{"error":[],"result":[]}'),
    (_ohlc, '{"error":[]}'),
    (_ohlc, _kraken(OHLC_ROW.replace(",1]", "]"))),
    (_ohlc, _kraken(OHLC_ROW.replace("1700000040", "1700000041"))),
    (_ohlc, _kraken(OHLC_ROW.replace("1700000040", "1700000040.0"))),
    (_ohlc, _kraken(OHLC_ROW.replace('"2.0"', "NaN"))),
    (_ohlc, '{"error":"EQuery:Unknown asset pair"}'),
    (_ktrades, _kraken(KTRADE.replace('"b"', '"x"'))),
    (_ktrades, _kraken(KTRADE.replace(",7]", "]"))),  # no trade id
    (_ktrades, _kraken(KTRADE.replace("1700000000.5", "-1700000000.5"))),
    (_ktrades, _kraken(KTRADE.replace("1700000000.5", "1e999999999"))),
    (_ktrades, _kraken(KTRADE.replace("1700000000.5", "Infinity"))),
    (_ktrades, _kraken(KTRADE, last='"17x"')),
    (_ktrades, "[]"),
    (_bcandles, '{"a":1}'),
    (_bcandles, "[[1700000040000,1,2,3]]"),
    (_bcandles, '[[1700000040000,"x",1,1,1,1]]'),
    (_bcandles, "[[1700000040000,1,1,1,1,-1]]"),
    (_bcandles, "[[1700000040000.5,1,1,1,1,1]]"),
    (_btrades, "[[1,1700000000000,1]]"),
    (_btrades, "[[1,1700000000000,1,-5]]"),
    (_btrades, "[[-1,1700000000000,1,5]]"),
    (_btrades, "[[1,1700000000000,1,1e99999]]"),
    (_btrades, "[null]"),
]


@pytest.mark.parametrize(("parse", "body"), MALFORMED)
def test_malformed_bodies_raise_protocol_errors(parse: Callable[[str], object], body: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        parse(body)
    exc = info.value
    assert exc.exchange in VENUES
    assert exc.exchange in str(exc) and "malformed" in str(exc)


def test_well_formed_variants_of_the_malformed_bodies_parse() -> None:
    """The bodies above fail because of their one defect, not because the base row is bad."""
    assert len(_klines(f"[{KLINE}]")) == 1  # type: ignore[arg-type]
    assert len(_agg(f"[{AGG}]")) == 1  # type: ignore[arg-type]
    assert len(_ohlc(_kraken(OHLC_ROW))) == 1  # type: ignore[arg-type]
    assert len(_ktrades(_kraken(KTRADE))[0]) == 1  # type: ignore[index]
    assert len(_bcandles("[[1700000040000,1,1,1,1,1]]")) == 1  # type: ignore[arg-type]
    assert len(_btrades("[[1,1700000000000,1,5]]")) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("parse", "body", "message"),
    [
        (_klines, '{"code":-1121,"msg":"Invalid symbol."}', "Invalid symbol"),
        (_agg, '{"code":-1100,"msg":"Illegal characters found in parameter \'fromId\'"}', "fromId"),
        (_ohlc, '{"error":["EQuery:Unknown asset pair"]}', "Unknown asset pair"),
        (_ktrades, '{"error":["EGeneral:Invalid arguments"]}', "Invalid arguments"),
        (_bcandles, '["error",10020,"limit: invalid"]', "limit: invalid"),
        (_btrades, '["error",10001,"symbol: invalid"]', "symbol: invalid"),
    ],
)
def test_venue_errors(parse: Callable[[str], object], body: str, message: str) -> None:
    with pytest.raises(ExchangeError, match=message) as info:
        parse(body)
    assert not isinstance(info.value, (ExchangeProtocolError, RateLimited))


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (_ohlc, '{"error":["EAPI:Rate limit exceeded"]}'),
        (_ktrades, '{"error":["EGeneral:Too many requests"]}'),
        (_btrades, '["error",11010,"ratelimit: error"]'),
    ],
)
def test_rate_limits_in_a_body(parse: Callable[[str], object], body: str) -> None:
    with pytest.raises(RateLimited) as info:
        parse(body)
    assert info.value.status == 429


# -- fakes for what the simulator does not do ----------------------------------------------------------
class FakeTrades:
    """A venue holding ``trades`` [(id, ms)] that answers Binance, Kraken or Bitfinex trade requests."""

    def __init__(
        self, trades: list[tuple[int, int]], *, kraken_inclusive: bool = False, repeat: int = 0
    ) -> None:
        self.trades = sorted(trades, key=lambda t: (t[1], t[0]))
        self.kraken_inclusive = kraken_inclusive  # repeat the trade at `since` (a boundary repeat)
        self.repeat = repeat  # Kraken: also repeat this many trades before `since`
        self.empty_after: int | None = None  # Kraken: empty pages once this many were served
        self.served = 0

    def answer(self, request: HttpRequest) -> RestResponse:
        q = dict(request.params)
        path = urlsplit(request.url).path
        if path == "/api/v3/aggTrades":
            limit = int(q["limit"])
            if "fromId" in q:
                rows = [t for t in self.trades if t[0] >= int(q["fromId"])]
            else:
                rows = [t for t in self.trades if int(q["startTime"]) <= t[1] <= int(q["endTime"])]
            body = json.dumps(
                [
                    {"a": i, "p": "1.5", "q": "0.1", "f": i, "l": i, "T": ms, "m": False, "M": True}
                    for i, ms in rows[:limit]
                ]
            )
            return RestResponse(200, body)
        if path.endswith("/hist"):
            start, end, limit = int(q["start"]), int(q["end"]), int(q["limit"])
            rows = [t for t in self.trades if start <= t[1] <= end][:limit]
            return RestResponse(200, json.dumps([[i, ms, -0.25, 2.5] for i, ms in rows]))
        assert path == "/0/public/Trades"
        since, count = int(q["since"]), int(q["count"])
        # ids as ns times: trade i of ms `ms` is at ms * 10**6 + i (unique, ordered)
        stamps = [(ms * 1_000_000 + i % 1000, i, ms) for i, ms in self.trades]
        first = next(
            (k for k, s in enumerate(stamps) if s[0] > since or (self.kraken_inclusive and s[0] == since)),
            len(stamps),
        )
        rows2 = stamps[max(0, first - self.repeat) :][:count]
        last = rows2[-1][0] if rows2 else since
        if self.empty_after is not None and self.served >= self.empty_after:
            rows2 = []  # and a "last" that moves on: the empty page alone must end the paging
            last = since + 1
        self.served += len(rows2)
        text = ",".join(f'["2.5","0.25",{ms // 1000}.{ms % 1000:03d},"s","l","",{i}]' for _, i, ms in rows2)
        return RestResponse(200, f'{{"error":[],"result":{{"XXBTZUSD":[{text}],"last":"{last}"}}}}')


def _ids(rows: Sequence[Any]) -> list[int]:
    return [int(t.trade_id) for t in rows]


def _opens(rows: Sequence[Any]) -> list[int]:
    return [int(c.open_time_ms) for c in rows]


def _fixed(body: str, request: HttpRequest) -> RestResponse:
    del request
    return RestResponse(200, body)


def _no_check(rows: list[Any], done_ms: int) -> None:
    del rows, done_ms


def crowded() -> list[tuple[int, int]]:
    """A few trades, 2500 in one millisecond, a few more."""
    ms = T0 + 5000
    return [(1, T0), (2, T0 + 1)] + [(3 + i, ms) for i in range(2500)] + [(2503, ms + 1), (2504, ms + 9000)]


def test_binance_many_trades_in_one_millisecond_cross_pages() -> None:
    fake = FakeTrades(crowded())
    pager = trade_pager(history_venue("binance", BASE), "BTCUSDT", T0 + 1, T0 + 9000)
    rows = drive(pager, fake.answer, _no_check)
    assert _ids(rows) == list(range(2, 2504))  # 2504 is at the end (exclusive): not returned
    assert pager.requests == 3
    assert rows[0].side == "buy"


def test_binance_trade_requests() -> None:
    fake = FakeTrades(crowded())
    pager = trade_pager(history_venue("binance", BASE), "BTC/USDT", T0, T0 + 10_000, limit=1000)
    first = pager.next_request()
    assert first == HttpRequest(
        "GET",
        f"{BASE}/api/v3/aggTrades",
        (("symbol", "BTCUSDT"), ("startTime", str(T0)), ("endTime", str(T0 + 9999)), ("limit", "1000")),
        weight=4,
    )
    rows = pager.feed(fake.answer(first).body)
    assert _ids(rows) == list(range(1, 1001))
    assert pager.done_ms == T0 + 5000  # more trades of that millisecond may follow
    second = pager.next_request()
    assert second is not None
    assert second.params == (("symbol", "BTCUSDT"), ("fromId", "1001"), ("limit", "1000"))
    assert second.weight == 4


def test_bitfinex_many_trades_in_one_millisecond_cross_pages() -> None:
    trades = [(1, T0), (2, T0 + 1)] + [(3 + i, T0 + 2) for i in range(30)] + [(33, T0 + 3), (34, T0 + 50)]
    fake = FakeTrades(trades)
    pager = trade_pager(history_venue("bitfinex", BASE), "BTC/USD", T0, T0 + 50, limit=40)
    rows = drive(pager, fake.answer, _no_check)
    assert _ids(rows) == list(range(1, 34))
    for limit in range(31, 40):  # every page boundary inside the crowded millisecond
        pager = trade_pager(history_venue("bitfinex", BASE), "BTC/USD", T0, T0 + 51, limit=limit)
        assert _ids(drive(pager, fake.answer, _no_check)) == list(range(1, 35))
    assert rows[0] == Trade("bitfinex", "tBTCUSD", T0, "2.5", "0.25", "sell", 1)


@pytest.mark.parametrize("limit", [10, 30])
def test_bitfinex_full_page_in_one_millisecond_cannot_page(limit: int) -> None:
    fake = FakeTrades([(1, T0)] + [(2 + i, T0 + 2) for i in range(30)] + [(40, T0 + 3)])
    pager = trade_pager(history_venue("bitfinex", BASE), "BTC/USD", T0, T0 + 9, limit=limit)
    with pytest.raises(
        ExchangeProtocolError, match=f"more than {limit} trades in one millisecond: cannot page"
    ):
        drive(pager, fake.answer, _no_check)
    assert pager.done_ms <= T0 + 2  # never claims the crowded millisecond


def test_kraken_trade_requests_and_paging() -> None:
    fake = FakeTrades([(i, T0 + i // 3) for i in range(1, 100)])
    pager = trade_pager(history_venue("kraken", BASE), "BTC/USD", T0 + 1, T0 + 20, limit=7)
    first = pager.next_request()
    assert first is not None
    assert first.url == f"{BASE}/0/public/Trades"
    assert first.params == (("pair", "XBTUSD"), ("since", str((T0 + 1) * 1_000_000 - 1)), ("count", "7"))
    rows: list[Any] = list(pager.feed(fake.answer(first).body))
    second = pager.next_request()
    assert second is not None
    assert dict(second.params)["since"] == str((T0 + 3) * 1_000_000 + 9)  # the answer's "last", verbatim
    rows += pager.feed(fake.answer(second).body)
    rows += drive(pager, fake.answer, _no_check)
    assert _ids(rows) == [i for i in range(1, 100) if T0 + 1 <= T0 + i // 3 < T0 + 20]


def test_kraken_repeated_trade_at_the_boundary_is_dropped() -> None:
    fake = FakeTrades([(i, T0 + i // 4) for i in range(1, 60)], kraken_inclusive=True)
    pager = trade_pager(history_venue("kraken", BASE), "BTC/USD", T0, T0 + 100, limit=5)
    rows = drive(pager, fake.answer, _no_check)
    assert _ids(rows) == list(range(1, 60))


def test_kraken_repeated_older_trades_are_dropped() -> None:
    fake = FakeTrades([(i, T0 + i // 4) for i in range(1, 60)], repeat=6)
    pager = trade_pager(history_venue("kraken", BASE), "BTC/USD", T0, T0 + 100, limit=9)
    rows = drive(pager, fake.answer, _no_check)
    assert _ids(rows) == list(range(1, 60))


def test_short_pages_end_the_paging() -> None:
    fake = FakeTrades([(i, T0 + i) for i in range(1, 6)])
    pager = trade_pager(history_venue("binance", BASE), "BTCUSDT", T0, T0 + HOUR, limit=10)
    assert _ids(drive(pager, fake.answer, _no_check)) == [1, 2, 3, 4, 5]
    assert pager.requests == 1 and pager.done_ms == T0 + HOUR
    pager = trade_pager(history_venue("bitfinex", BASE), "BTCUSD", T0, T0 + HOUR, limit=10)
    assert _ids(drive(pager, fake.answer, _no_check)) == [1, 2, 3, 4, 5]
    assert pager.requests == 1
    for exchange, body in (
        ("bitfinex", "[[1700000040000,1,1,1,1,1]]"),
        ("binance", "[" + KLINE + "]"),
    ):
        pager = candle_pager(
            history_venue(exchange, BASE),
            USER_SYMBOL[exchange],
            "1m",
            T0,
            T0 + HOUR,
            now_ms=T0 + 2 * HOUR,
            limit=5,
        )
        rows = drive(pager, functools.partial(_fixed, body), _no_check)
        assert _opens(rows) == [1700000040000]
        assert pager.requests == 1 and pager.done_ms == T0 + HOUR


def test_kraken_last_not_advancing_ends_the_pager() -> None:
    venue = history_venue("kraken", BASE)
    pager = trade_pager(venue, "BTC/USD", T0, T0 + HOUR, limit=1000)
    request = pager.next_request()
    assert request is not None
    since = dict(request.params)["since"]
    body = _kraken(KTRADE.replace("1700000000.5", "1700000000.001"), last=f'"{since}"')
    assert _ids(pager.feed(body)) == [7]
    assert pager.done and pager.next_request() is None and pager.done_ms == T0 + HOUR


def test_empty_page_mid_range_ends_the_pager() -> None:
    fake = FakeTrades([(i, T0 + i) for i in range(1, 30)])
    fake.empty_after = 10  # the venue answers an empty page after ten trades
    pager = trade_pager(history_venue("kraken", BASE), "BTC/USD", T0, T0 + 100, limit=5)
    rows = drive(pager, fake.answer, _no_check)
    assert _ids(rows) == list(range(1, 11))
    assert pager.requests == 3 and pager.done_ms == T0 + 100

    venue = history_venue("bitfinex", BASE)
    pager = candle_pager(venue, "BTC/USD", "1m", T0 - T0 % MIN, T0 + HOUR, now_ms=T0 + 2 * HOUR, limit=2)
    pages = iter(["[[1699999980000,1,1,1,1,1],[1700000040000,2,2,2,2,2]]", "[]"])
    rows2 = drive(pager, lambda _r: RestResponse(200, next(pages)), _no_check)
    assert [c.open_time_ms for c in rows2] == [1699999980000, 1700000040000]
    assert pager.requests == 2 and pager.done_ms == T0 + HOUR


def test_a_failed_feed_changes_nothing() -> None:
    """A rate limit (or garbage) in a 200 body: the caller resends the same request."""
    pager = trade_pager(history_venue("kraken", BASE), "BTC/USD", T0, T0 + HOUR, limit=2)
    request = pager.next_request()
    assert request is not None
    with pytest.raises(RateLimited):
        pager.feed('{"error":["EAPI:Rate limit exceeded"]}')
    with pytest.raises(ExchangeProtocolError):
        pager.feed("<html>busy</html>")
    assert pager.next_request() is request and pager.requests == 1 and pager.done_ms == T0
    rows = pager.feed(_kraken(KTRADE, last='"1700000000500000001"'))
    assert _ids(rows) == [7] and pager.done_ms == T0 + 500
    with pytest.raises(RuntimeError):
        pager.feed("[]")  # nothing was asked


def test_candles_only_closed_and_requests() -> None:
    venue = history_venue("binance", BASE)
    now = T0 + 30_000  # the minute opening at T0 - 20 s is running
    pager = candle_pager(venue, "BTC/USDT", "1m", T0 - 5 * MIN, T0 + HOUR, now_ms=now, limit=1000)
    request = pager.next_request()
    assert request == HttpRequest(
        "GET",
        f"{BASE}/api/v3/klines",
        (
            ("symbol", "BTCUSDT"),
            ("interval", "1m"),
            ("startTime", str(T0 - 5 * MIN)),
            ("endTime", str(T0 - 20_000 - 1)),  # clipped to the running minute's open
            ("limit", "1000"),
        ),
        weight=2,
    )
    opens = [T0 - 20_000 - k * MIN for k in (2, 1, 0)]
    body = (
        "["
        + ",".join(
            KLINE.replace("1700000040000", str(o)).replace("1700000099999", str(o + MIN - 1)) for o in opens
        )
        + "]"
    )
    rows = pager.feed(body)  # a venue clock ahead of ours may send the running kline: never returned
    assert _opens(rows) == opens[:2]
    assert pager.done and pager.done_ms == T0 - 20_000


def test_bitfinex_candle_request() -> None:
    pager = candle_pager(history_venue("bitfinex", BASE), "avax/usd", "1D", 0, 86_400_000 * 3, now_ms=T0)
    request = pager.next_request()
    assert request is not None
    assert request.url == f"{BASE}/v2/candles/trade:1D:tAVAX:USD/hist"
    assert request.params == (
        ("start", "0"),
        ("end", str(86_400_000 * 3 - 1)),
        ("limit", "10000"),
        ("sort", "1"),
    )


# -- Kraken's 720-entry OHLC window --------------------------------------------------------------------
def test_kraken_ohlc_window_start() -> None:
    venue = history_venue("kraken")
    now = T0  # 22:13:20 UTC
    assert venue.ohlc_window_start("1m", now) == T0 - T0 % MIN - 719 * MIN
    assert venue.ohlc_window_start("1h", now) == T0 - T0 % HOUR - 719 * HOUR
    assert history_venue("binance").ohlc_window_start("1m", now) is None
    assert history_venue("bitfinex").ohlc_window_start("1m", now) is None
    with pytest.raises(ConfigError, match="1W"):
        venue.ohlc_window_start("1W", now)


def test_kraken_candle_pager_refuses_ranges_older_than_the_window() -> None:
    venue = history_venue("kraken", BASE)
    window = venue.ohlc_window_start("5m", T0)
    assert window is not None
    with pytest.raises(ConfigError, match=r"720 most recent 5m candles.*Trades"):
        candle_pager(venue, "BTC/USD", "5m", window - 1, T0, now_ms=T0)
    pager = candle_pager(venue, "BTC/USD", "5m", window, T0, now_ms=T0)
    request = pager.next_request()
    assert request is not None
    assert request.url == f"{BASE}/0/public/OHLC"
    assert request.params == (("pair", "XBTUSD"), ("interval", "5"), ("since", str(window // 1000 - 1)))


def test_kraken_window_moved_on_raises() -> None:
    """The venue's clock is an interval ahead: its window no longer holds our start."""
    venue = history_venue("kraken", BASE)
    now = T0 - T0 % MIN
    window = venue.ohlc_window_start("1m", now)
    assert window is not None
    pager = candle_pager(venue, "BTC/USD", "1m", window, now, now_ms=now)
    assert pager.next_request() is not None
    rows = ",".join(OHLC_ROW.replace("1700000040", str(window // 1000 + 60 * k)) for k in range(1, 721))
    with pytest.raises(ExchangeError, match="window moved on"):
        pager.feed(_kraken(rows))
    # an answer whose window still holds the start is used; its running row is dropped
    rows = ",".join(OHLC_ROW.replace("1700000040", str(window // 1000 + 60 * k)) for k in range(720))
    got = pager.feed(_kraken(rows))
    assert _opens(got) == [window + k * MIN for k in range(719)]
    assert pager.done and pager.done_ms == now


def test_kraken_venue_clock_behind_ours() -> None:
    """The venue's running candle opens before our end: it is neither returned nor covered."""
    venue = history_venue("kraken", BASE)
    now = T0 - T0 % MIN
    pager = candle_pager(venue, "BTC/USD", "1m", now - 10 * MIN, now, now_ms=now)
    assert pager.next_request() is not None
    rows = ",".join(OHLC_ROW.replace("1700000040", str(now // 1000 - 60 * k)) for k in range(12, 0, -1))
    got = pager.feed(_kraken(rows))
    assert _opens(got) == [now - k * MIN for k in range(10, 1, -1)]
    assert pager.done and pager.done_ms == now - MIN


# -- configuration ----------------------------------------------------------------------------------
def test_history_venues() -> None:
    binance = history_venue("Binance")
    assert (binance.exchange, binance.rest_base) == ("binance", "https://api.binance.com")
    assert (binance.candle_page_limit, binance.trade_page_limit) == (1000, 1000)
    kraken = history_venue("kraken", "http://127.0.0.1:9/0/")
    assert kraken.rest_base == "http://127.0.0.1:9"
    assert (kraken.candle_page_limit, kraken.trade_page_limit) == (720, 1000)
    assert kraken.min_request_interval_s == {"candles": 1.0, "trades": 1.0}
    bitfinex = history_venue("bitfinex", "https://api-pub.bitfinex.com/v2")
    assert bitfinex.rest_base == "https://api-pub.bitfinex.com"
    assert (bitfinex.candle_page_limit, bitfinex.trade_page_limit) == (10000, 10000)
    assert bitfinex.min_request_interval_s == {"candles": 1.0, "trades": 2.0}
    assert binance.interval_param("1D") == "1d" and binance.interval_param("1W") == "1w"
    assert kraken.interval_param("4h") == "240"
    assert isinstance(binance, HistoryVenue)
    assert kraken_pair("doge/usd") == "XDGUSD" and kraken_pair("BTC/EUR") == "XBTEUR"
    with pytest.raises(ConfigError, match="unknown exchange"):
        history_venue("nyse")


@pytest.mark.parametrize(
    ("exchange", "interval"), [("kraken", "1W"), ("bitfinex", "4h"), ("bitfinex", "1W"), ("binance", "2h")]
)
def test_unsupported_intervals(exchange: str, interval: str) -> None:
    venue = history_venue(exchange)
    with pytest.raises(ConfigError, match="supported: " + ", ".join(HISTORY_INTERVALS[exchange])):
        venue.interval_param(interval)
    with pytest.raises(ConfigError):
        candle_pager(venue, USER_SYMBOL[exchange], interval, T0 - HOUR, T0, now_ms=T0)


@pytest.mark.parametrize(
    ("start", "end", "limit"),
    [
        (T0, T0, None),
        (T0, T0 - 1, None),
        (-1, T0, None),
        (T0, T0 + 1, 0),
        (T0, T0 + 1, 1001),
        (T0, T0 + 1.0, None),
    ],
)
def test_bad_ranges_and_limits(start: int, end: int, limit: int | None) -> None:
    venue = history_venue("binance")
    with pytest.raises(ConfigError):
        trade_pager(venue, "BTCUSDT", start, end, limit=limit)
    with pytest.raises(ConfigError):
        candle_pager(venue, "BTCUSDT", "1m", start, end, now_ms=T0 + HOUR, limit=limit)


def test_a_range_with_no_closed_candle_needs_no_request() -> None:
    pager = candle_pager(history_venue("bitfinex"), "BTC/USD", "1h", T0, T0 + HOUR, now_ms=T0 + 1000)
    assert pager.next_request() is None and pager.done and pager.done_ms == T0
