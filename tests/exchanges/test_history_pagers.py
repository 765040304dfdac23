"""The venue history pagers (``mmdata.exchanges.history``), without sockets.

Each pager is driven against the simulator's sans-I/O REST handler (``BinanceSim.rest`` …)
over a synthetic market's deterministic past: hypothesis picks the range and the page size,
and the concatenated pages must hold every trade / candle of the range exactly once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.errors import ConfigError, ExchangeError, ExchangeProtocolError, RateLimited
from mmdata.exchanges.history import candle_pager, history_venue, kraken_pair, trade_pager
from mmdata.sim.binance import BinanceSim
from mmdata.sim.bitfinex import BitfinexSim
from mmdata.sim.kraken import KrakenSim
from mmdata.sim.market import SyntheticMarket, default_specs

MIN = 60_000
HOUR = 60 * MIN
NOW = 1_795_000_000_000 // MIN * MIN + 12_345  # mid-minute
SYMBOLS = {"binance": "BTCUSDT", "kraken": "BTC/USD", "bitfinex": "tBTCUSD"}
_SIMS: dict[str, Any] = {}


def sim(exchange: str) -> Any:
    if exchange not in _SIMS:
        market = SyntheticMarket(
            default_specs(exchange, [SYMBOLS[exchange]]), seed=7, start_ms=NOW, past_days=1
        )
        if exchange == "binance":
            _SIMS[exchange] = BinanceSim(market, weight_limit=10**12)
        else:
            _SIMS[exchange] = {"kraken": KrakenSim, "bitfinex": BitfinexSim}[exchange](market)
    return _SIMS[exchange]


def drive(exchange: str, pager: Any) -> list[Any]:
    venue_sim = sim(exchange)
    rows: list[Any] = []
    for _ in range(100_000):
        request = pager.next_request()
        if request is None:
            return rows
        answer = venue_sim.rest(urlsplit(request.url).path, dict(request.params), NOW)
        assert answer.status == 200, answer.body
        before = pager.done_ms
        rows += pager.feed(answer.body)
        assert pager.done_ms >= before
    raise AssertionError("pager never finished")


def truth_trades(exchange: str, start: int, end: int) -> list[Any]:
    market = sim(exchange).market
    return market.trades(SYMBOLS[exchange], start_ms=start, end_ms=end, limit=10**7)


ranges = st.tuples(
    st.integers(min_value=NOW - 20 * HOUR, max_value=NOW - 2 * HOUR),
    st.integers(min_value=1, max_value=3 * HOUR),
)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("exchange", ["binance", "kraken", "bitfinex"])
@SETTINGS
@given(span=ranges, limit=st.integers(min_value=1, max_value=40))
def test_trade_pages_hold_every_trade_of_the_range_once(
    exchange: str, span: tuple[int, int], limit: int
) -> None:
    start, length = span
    end = start + length
    truth = truth_trades(exchange, start, end)
    venue = history_venue(exchange)
    pager = trade_pager(venue, SYMBOLS[exchange], start, end, limit=limit)
    if exchange == "bitfinex":
        # Bitfinex pages by millisecond: a millisecond holding `limit` trades cannot be paged past
        per_ms: dict[int, int] = {}
        for t in truth:
            per_ms[t.ts_ms] = per_ms.get(t.ts_ms, 0) + 1
        if per_ms and max(per_ms.values()) >= limit:
            try:
                got = drive(exchange, pager)
            except ExchangeProtocolError as exc:
                assert "one millisecond" in str(exc)
                return
        else:
            got = drive(exchange, pager)
    else:
        got = drive(exchange, pager)
    assert [t.trade_id for t in got] == [t.trade_id for t in truth]
    assert [t.ts_ms for t in got] == [t.ts_ms for t in truth]
    assert [t.side for t in got] == [t.side for t in truth]
    spec = default_specs(exchange, [SYMBOLS[exchange]])[0]
    for g, t in zip(got, truth, strict=True):
        assert Decimal(g.price) == Decimal(t.price).scaleb(-spec.price_precision)
        assert Decimal(g.qty) == Decimal(t.qty).scaleb(-spec.qty_precision)
    assert pager.done and pager.done_ms == end


@pytest.mark.parametrize("exchange", ["binance", "bitfinex"])
@SETTINGS
@given(
    span=ranges, limit=st.integers(min_value=1, max_value=30), interval=st.sampled_from(["1m", "5m", "1h"])
)
def test_candle_pages_equal_one_big_page(
    exchange: str, span: tuple[int, int], limit: int, interval: str
) -> None:
    start, length = span
    end = start + length
    venue = history_venue(exchange)
    small = drive(
        exchange, candle_pager(venue, SYMBOLS[exchange], interval, start, end, now_ms=NOW, limit=limit)
    )
    big = drive(exchange, candle_pager(venue, SYMBOLS[exchange], interval, start, end, now_ms=NOW))
    assert small == big
    opens = [c.open_time_ms for c in small]
    assert opens == sorted(set(opens))
    assert all(
        start <= t < end and t + {"1m": MIN, "5m": 5 * MIN, "1h": HOUR}[interval] <= NOW for t in opens
    )
    # every interval with trades is there, with the market's own values
    step = {"1m": MIN, "5m": 5 * MIN, "1h": HOUR}[interval]
    first = -(-start // step) * step
    market = sim(exchange).market
    traded = {
        c.open_ms
        for c in market.candles(SYMBOLS[exchange], step, first, end, limit=10**6)
        if c.open_ms + step <= NOW  # the running candle is never returned
    }
    assert traded <= set(opens)
    assert {c.open_time_ms for c in small if Decimal(c.volume) != 0} == traded


def test_kraken_ohlc_serves_its_720_newest_candles_and_never_the_running_one() -> None:
    venue = history_venue("kraken")
    window = venue.ohlc_window_start("1m", NOW)
    assert window == NOW // MIN * MIN - 719 * MIN
    assert window is not None
    with pytest.raises(ConfigError, match="720 most recent"):
        candle_pager(venue, "BTC/USD", "1m", window - MIN, NOW, now_ms=NOW)
    got = drive("kraken", candle_pager(venue, "BTC/USD", "1m", window, NOW + HOUR, now_ms=NOW))
    opens = [c.open_time_ms for c in got]
    assert opens[0] == window and opens[-1] == NOW // MIN * MIN - MIN  # the running minute is dropped
    assert opens == list(range(window, NOW // MIN * MIN, MIN))
    assert (
        venue.ohlc_window_start("1m", NOW) is not None
        and history_venue("binance").ohlc_window_start("1m", NOW) is None
    )


@pytest.mark.parametrize(
    ("exchange", "interval"), [("kraken", "1W"), ("bitfinex", "1W"), ("bitfinex", "4h"), ("binance", "3m")]
)
def test_intervals_a_venue_cannot_align_are_refused(exchange: str, interval: str) -> None:
    with pytest.raises(ConfigError, match="supported"):
        candle_pager(history_venue(exchange), SYMBOLS[exchange], interval, 0, NOW, now_ms=NOW)


def test_kraken_pair_spelling() -> None:
    assert (
        kraken_pair("BTC/USD") == "XBTUSD"
        and kraken_pair("DOGE/EUR") == "XDGEUR"
        and kraken_pair("ETH/USD") == "ETHUSD"
    )


def test_documented_example_rows_keep_their_exact_text() -> None:
    binance = candle_pager(
        history_venue("binance"), "BTCUSDT", "1W", 1499040000000, 1499644800000, now_ms=NOW
    )
    binance.next_request()
    (kline,) = binance.feed(
        '[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",'
        '1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]'
    )
    assert (kline.open, kline.high, kline.low, kline.close, kline.volume, kline.trades) == (
        "0.01634790",
        "0.80000000",
        "0.01575800",
        "0.01577100",
        "148976.11427815",
        308,
    )
    agg = trade_pager(history_venue("binance"), "BTCUSDT", 1498793709000, 1498793710000)
    agg.next_request()
    (trade,) = agg.feed(
        '[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true}]'
    )
    assert (trade.trade_id, trade.price, trade.qty, trade.side, trade.ts_ms) == (
        26129,
        "0.01633102",
        "4.70443515",
        "sell",
        1498793709153,
    )
    kraken = trade_pager(history_venue("kraken"), "BTC/USD", 1688669597000, 1688669598000)
    kraken.next_request()
    (kt,) = kraken.feed(
        '{"error":[],"result":{"XXBTZUSD":[["30243.40000","0.34507674",1688669597.8277369,"b","m","",61044952]],'
        '"last":"1688671969993150842"}}'
    )
    assert (kt.price, kt.qty, kt.ts_ms, kt.side, kt.trade_id) == (
        "30243.40000",
        "0.34507674",
        1688669597827,
        "buy",
        61044952,
    )
    bfx = candle_pager(
        history_venue("bitfinex"), "tBTCUSD", "1m", 1700000000000 // MIN * MIN, NOW, now_ms=NOW
    )
    bfx.next_request()
    (bc,) = bfx.feed(f"[[{1700000000000 // MIN * MIN},37000.5,37010,37020.25,36990,1.2e-7]]")
    assert (bc.open, bc.close, bc.high, bc.low, bc.volume) == (
        "37000.5",
        "37010",
        "37020.25",
        "36990",
        "1.2e-7",
    )
    bt = trade_pager(history_venue("bitfinex"), "tBTCUSD", 1700000000000, 1700000001000)
    bt.next_request()
    (t1, t2) = bt.feed("[[1,1700000000001,-0.50,37000.10],[2,1700000000002,0.25,37000.2]]")
    assert (t1.side, t1.qty, t1.price, t2.side, t2.qty) == ("sell", "0.50", "37000.10", "buy", "0.25")


@pytest.mark.parametrize(
    ("exchange", "kind", "body", "error"),
    [
        ("binance", "candles", "not json", ExchangeProtocolError),
        ("binance", "candles", '{"code":-1121,"msg":"Invalid symbol."}', ExchangeError),
        ("binance", "candles", '[[1,"x","1","1","1","1",2,"1",3]]', ExchangeProtocolError),
        ("binance", "trades", '[{"a":1,"p":"1","q":"1","T":5}]', ExchangeProtocolError),
        ("kraken", "trades", '{"error":["EAPI:Rate limit exceeded"]}', RateLimited),
        ("kraken", "trades", '{"error":["EGeneral:Too many requests"]}', RateLimited),
        ("kraken", "trades", '{"error":["EQuery:Unknown asset pair"]}', ExchangeError),
        ("kraken", "candles", '{"error":[],"result":{"last":1}}', ExchangeProtocolError),
        (
            "kraken",
            "trades",
            '{"error":[],"result":{"X":[["1","1","nan?","b","m","",1]],"last":"5"}}',
            ExchangeProtocolError,
        ),
        ("bitfinex", "candles", '["error",10020,"limit: invalid"]', ExchangeError),
        ("bitfinex", "trades", "[[1,2,NaN,3]]", ExchangeProtocolError),
        ("bitfinex", "trades", "[[1,2]]", ExchangeProtocolError),
    ],
)
def test_malformed_or_refused_answers_raise_clear_errors(
    exchange: str, kind: str, body: str, error: type[Exception]
) -> None:
    venue = history_venue(exchange)
    if kind == "candles":
        start = venue.ohlc_window_start("1m", NOW) or 0
        pager = candle_pager(venue, SYMBOLS[exchange], "1m", start, NOW, now_ms=NOW)
    else:
        pager = trade_pager(venue, SYMBOLS[exchange], 0, NOW)
    pager.next_request()
    with pytest.raises(error) as info:
        pager.feed(body)
    assert exchange in str(info.value)


def test_a_full_bitfinex_page_in_one_millisecond_cannot_be_paged_past() -> None:
    pager = trade_pager(history_venue("bitfinex"), "tBTCUSD", 1000, 2000, limit=2)
    pager.next_request()
    assert len(pager.feed("[[1,1500,1,10],[2,1500,1,10]]")) == 2
    request = pager.next_request()
    assert request is not None and ("start", "1500") in request.params
    with pytest.raises(ExchangeProtocolError, match="one millisecond"):
        pager.feed("[[1,1500,1,10],[2,1500,1,10]]")


def test_kraken_trades_stop_when_last_does_not_advance() -> None:
    pager = trade_pager(history_venue("kraken"), "BTC/USD", 0, NOW)
    pager.next_request()
    pager.feed('{"error":[],"result":{"X":[["1","1",1.5,"b","m","",1]],"last":"1500000001"}}')
    assert pager.next_request() is not None
    assert pager.feed('{"error":[],"result":{"X":[],"last":"1500000001"}}') == []
    assert pager.done and pager.next_request() is None
