"""Candle channels of the three adapters: subscribe builders, parsing, the ``closed`` rule.

Golden frames are PROTOCOLS.md §A.2 / §B.6 / §C.5 shapes (the Kraken snapshot is the one
Kraken's ohlc page shows); Binance is also checked against every ``@kline_1m`` frame of a
real capture, decoded independently with the standard ``json`` module.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges import get
from mmdata.exchanges.base import CandleCloser, StreamingExchange
from mmdata.exchanges.binance import BinanceSpot
from mmdata.exchanges.bitfinex import BitfinexV2
from mmdata.exchanges.kraken import KrakenV2
from mmdata.store.capture import open_capture
from mmdata.types import Ack, Candle, VenueStatus
from tests.conftest import BINANCE_4


def candle(open_ms: int, close: str = "1", *, symbol: str = "BTC/USD", closed: bool = False) -> Candle:
    return Candle("kraken", symbol, "1m", open_ms, "1", "2", "0.5", close, "3", None, 4, closed)


# -- the shared rule -----------------------------------------------------------------------------------
def test_closer_update_rule() -> None:
    closer = CandleCloser()
    assert closer.update(candle(0)) == [candle(0)]
    assert closer.update(candle(0, "1.5")) == [candle(0, "1.5")]
    # A later interval closes the running candle (as last seen), then opens the new one.
    assert closer.update(candle(60_000)) == [candle(0, "1.5", closed=True), candle(60_000)]
    # An update older than the running candle is already superseded.
    assert closer.update(candle(0, "9")) == [candle(0, "9", closed=True)]
    assert closer.update(candle(60_000, "2")) == [candle(60_000, "2")]


def test_closer_snapshot_sorts_and_closes_all_but_newest_per_symbol() -> None:
    closer = CandleCloser()
    got = closer.snapshot([candle(120_000), candle(0), candle(60_000, symbol="ETH/USD"), candle(60_000)])
    assert got == [
        candle(0, closed=True),
        candle(60_000, closed=True),
        candle(120_000),
        candle(60_000, symbol="ETH/USD"),
    ]
    # The snapshot's newest candle is the running one for later updates.
    assert closer.update(candle(180_000)) == [candle(120_000, closed=True), candle(180_000)]
    assert closer.snapshot([]) == []


@pytest.mark.parametrize("name", ["binance", "kraken", "bitfinex"])
def test_adapters_are_streaming_exchanges(name: str) -> None:
    adapter = get(name)
    assert isinstance(adapter, StreamingExchange)
    assert {"1m", "5m", "15m", "1h", "1D", "1W"} <= set(adapter.candle_intervals)


# -- Binance -------------------------------------------------------------------------------------------
def test_binance_subscribe_builders() -> None:
    b = BinanceSpot(ws_base="ws://127.0.0.1:9/")
    assert b.live_url() == "ws://127.0.0.1:9/stream"
    assert b.candle_streams(["BTC/USDT", "ethusdt", "btcusdt"], "1W") == [
        "btcusdt@kline_1w",
        "ethusdt@kline_1w",
    ]
    assert b.candle_subscribe_messages(["BTC/USDT", "ethusdt"], "1m") == [
        '{"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":1}'
    ]
    assert b.candle_unsubscribe_messages(["BTCUSDT"], "1D") == [
        '{"method":"UNSUBSCRIBE","params":["btcusdt@kline_1d"],"id":2}'
    ]
    assert b.trade_subscribe_messages(["BTCUSDT"]) == [
        '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":3}'
    ]
    assert b.book_subscribe_messages(["BTCUSDT"], 1000) == [
        '{"method":"SUBSCRIBE","params":["btcusdt@depth@100ms"],"id":4}'
    ]
    assert b.trade_unsubscribe_messages(["BTCUSDT"])[0].startswith('{"method":"UNSUBSCRIBE"')
    assert b.book_unsubscribe_messages(["BTCUSDT"], 1000)[0].startswith('{"method":"UNSUBSCRIBE"')
    assert b.min_send_interval_s >= 0.2  # 5 incoming messages a second closes the connection


@pytest.mark.parametrize("interval", ["2m", "1d", "1w", "", "1 m"])
def test_binance_rejects_unknown_intervals(interval: str) -> None:
    with pytest.raises(ConfigError, match="klines"):
        BinanceSpot().candle_subscribe_messages(["BTCUSDT"], interval)


@pytest.mark.parametrize(
    ("wire", "name"), [("1m", "1m"), ("4h", "4h"), ("1d", "1D"), ("1w", "1W"), ("1M", "1M")]
)
def test_binance_kline_interval_gets_the_mmdata_name(wire: str, name: str) -> None:
    frame = (
        '{"e":"kline","E":1,"s":"BNBBTC","k":{"t":0,"T":59999,"s":"BNBBTC","i":"' + wire + '","f":100,'
        '"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":true,'
        '"q":"1.0000","V":"500","Q":"0.500","B":"123456"}}'
    )
    [event] = BinanceSpot().parse(frame)
    assert isinstance(event, Candle)
    assert (event.interval, event.open, event.high, event.low, event.close) == (
        name,
        "0.0010",
        "0.0025",
        "0.0015",
        "0.0020",
    )
    assert event.closed is True and event.quote_volume == "1.0000" and event.trades == 100


def test_binance_real_klines_keep_wire_text(real_capture: Callable[[str], Path]) -> None:
    """Every real ``@kline_1m`` frame (two running klines in this capture): exact text, ``closed`` = ``x``."""
    binance = BinanceSpot()
    seen: dict[str, int] = defaultdict(int)
    with open_capture(real_capture(BINANCE_4)) as capture:
        for record in capture:
            if record.kind != "ws_recv" or "@kline_" not in record.data:
                continue
            k = json.loads(record.data)["data"]["k"]
            [event] = binance.parse(record.data)
            assert event == Candle(
                "binance",
                k["s"],
                "1m",
                k["t"],
                k["o"],
                k["h"],
                k["l"],
                k["c"],
                k["v"],
                k["q"],
                k["n"],
                k["x"],
            )
            seen[k["s"]] += 1
    assert seen == {"NKNUSDT": 1, "LRCBTC": 1}


# -- Kraken --------------------------------------------------------------------------------------------
# Kraken's own ohlc snapshot example (docs.kraken.com/api/docs/websocket-v2/ohlc).
KRAKEN_SNAPSHOT = (
    '{"channel":"ohlc","type":"snapshot","timestamp":"2023-10-04T16:26:01.806315597Z","data":['
    '{"symbol":"ALGO/USD","open":0.09875,"high":0.09875,"low":0.09875,"close":0.09875,"trades":1,'
    '"volume":201.86015,"vwap":0.09875,"interval_begin":"2023-10-04T15:25:00.000000000Z","interval":5,'
    '"timestamp":"2023-10-04T15:30:00.000000Z"},'
    '{"symbol":"ALGO/USD","open":0.09875,"high":0.0988,"low":0.09875,"close":0.09875,"trades":13,'
    '"volume":16255.46368,"vwap":0.09879,"interval_begin":"2023-10-04T15:30:00.000000000Z","interval":5,'
    '"timestamp":"2023-10-04T15:35:00.000000Z"}]}'
)


def kraken_update(begin: str, close: str, trades: int, interval: int = 5) -> str:
    return (
        '{"channel":"ohlc","type":"update","timestamp":"2023-10-04T15:36:00.000000Z","data":[{"symbol":"ALGO/USD",'
        f'"open":0.09875,"high":0.0990,"low":0.09875,"close":{close},"trades":{trades},"volume":1.0e2,'
        f'"vwap":0.0988,"interval_begin":"{begin}","interval":{interval},"timestamp":"2023-10-04T15:40:00.000000Z"'
        "}]}"
    )


def test_kraken_subscribe_builders() -> None:
    k = KrakenV2(ws_base="ws://127.0.0.1:9/v2")
    assert k.live_url() == "ws://127.0.0.1:9/v2"
    assert k.candle_subscribe_messages(["btc/usd", "ETH-USD"], "1h") == [
        '{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD","ETH/USD"],"interval":60,'
        '"snapshot":true},"req_id":4}'
    ]
    assert k.candle_unsubscribe_messages(["BTC/USD"], "1W") == [
        '{"method":"unsubscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":10080},"req_id":4}'
    ]
    assert k.trade_subscribe_messages(["BTC/USD"]) == [
        '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":3}'
    ]
    first = k.book_subscribe_messages(["BTC/USD"], 25)
    assert [json.loads(m)["params"]["channel"] for m in first] == ["instrument", "book"]
    again = k.book_subscribe_messages(["ETH/USD"], 25)  # instrument once per connection
    assert [json.loads(m)["params"] for m in again] == [
        {"channel": "book", "symbol": ["ETH/USD"], "depth": 25, "snapshot": True}
    ]
    assert json.loads(k.book_unsubscribe_messages(["ETH/USD"], 25)[0])["method"] == "unsubscribe"
    assert json.loads(k.trade_unsubscribe_messages(["ETH/USD"])[0])["method"] == "unsubscribe"
    with pytest.raises(ConfigError, match="ohlc"):
        k.candle_subscribe_messages(["BTC/USD"], "2h")
    with pytest.raises(ConfigError, match="depth"):
        k.book_subscribe_messages(["BTC/USD"], 20)


def test_kraken_snapshot_then_updates() -> None:
    k = KrakenV2()
    older, running = k.parse(KRAKEN_SNAPSHOT)
    assert older == Candle(
        "kraken",
        "ALGO/USD",
        "5m",
        1696433100000,
        "0.09875",
        "0.09875",
        "0.09875",
        "0.09875",
        "201.86015",
        None,
        1,
        True,
    )
    assert running == Candle(
        "kraken",
        "ALGO/USD",
        "5m",
        1696433400000,
        "0.09875",
        "0.0988",
        "0.09875",
        "0.09875",
        "16255.46368",
        None,
        13,
        False,
    )
    # Same interval: the running candle, wire text as sent (1.0e2 stays 1.0e2).
    [same] = k.parse(kraken_update("2023-10-04T15:30:00.000000000Z", "0.0989", 14))
    assert (same.open_time_ms, same.close, same.volume, same.trades, same.closed) == (
        1696433400000,
        "0.0989",
        "1.0e2",
        14,
        False,
    )
    # The next interval: the previous candle, as last seen, is closed first.
    closed, new = k.parse(kraken_update("2023-10-04T15:35:00.000000000Z", "0.0991", 1))
    assert closed == Candle(**{**_fields(same), "closed": True})
    assert (new.open_time_ms, new.close, new.closed) == (1696433700000, "0.0991", False)


def _fields(c: Candle) -> dict[str, object]:
    return {name: getattr(c, name) for name in Candle.__slots__}


@pytest.mark.parametrize(
    ("minutes", "name"), [(1, "1m"), (60, "1h"), (240, "4h"), (1440, "1D"), (10080, "1W")]
)
def test_kraken_interval_names(minutes: int, name: str) -> None:
    [c] = KrakenV2().parse(kraken_update("2023-10-04T15:30:00Z", "1", 1, minutes))
    assert c.interval == name and c.open_time_ms == 1696433400000


def test_kraken_ohlc_acks() -> None:
    k = KrakenV2()
    ok = (
        '{"method":"subscribe","result":{"channel":"ohlc","interval":5,"snapshot":true,"symbol":"ALGO/USD"},'
        '"success":true,"time_in":"2023-10-04T16:26:01.1Z","time_out":"2023-10-04T16:26:01.2Z"}'
    )
    assert k.parse(ok) == [Ack("kraken", "ohlc", "ALGO/USD", True, raw=ok)]
    refused = (
        '{"error":"Currency pair not supported X/Y","method":"subscribe","req_id":4,"success":false,'
        '"symbol":"X/Y"}'
    )
    assert k.parse(refused) == [
        Ack("kraken", "ohlc", "X/Y", False, "Currency pair not supported X/Y", raw=refused)
    ]


@pytest.mark.parametrize(
    "frame",
    [
        kraken_update("2023-10-04T15:30:00Z", "1", 1, 7),  # no such interval
        kraken_update("yesterday", "1", 1),
        kraken_update("2023-10-04T15:30:00Z", "1", -1),
        kraken_update("2023-10-04T15:30:00Z", '"x"', 1).replace('"symbol":"ALGO/USD",', ""),
        '{"channel":"ohlc","type":"partial","data":[]}',
        '{"channel":"ohlc","type":"update","data":{}}',
        '{"channel":"ohlc","type":"update","data":[[1,2]]}',
    ],
)
def test_kraken_bad_ohlc_frames_raise(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        KrakenV2().parse(frame)


# -- Bitfinex ------------------------------------------------------------------------------------------
SUBSCRIBED = '{"event":"subscribed","channel":"candles","chanId":343351,"key":"trade:1m:tBTCUSD"}'
# [MTS, OPEN, CLOSE, HIGH, LOW, VOLUME], newest first.
BFX_SNAPSHOT = (
    "[343351,[[1574698260000,7379.785503,7383.8,7388.3,7379.785503,1.68829482],"
    "[1574698200000,7379.1,7379.785503,7380,7379,5e-7]]]"
)


def test_bitfinex_subscribe_builders() -> None:
    bfx = BitfinexV2(ws_base="ws://127.0.0.1:9/ws/2")
    assert bfx.live_url() == "ws://127.0.0.1:9/ws/2"
    assert bfx.candle_subscribe_messages(["BTC/USD", "tETHUSD"], "1W") == [
        '{"event":"subscribe","channel":"candles","key":"trade:7D:tBTCUSD"}',
        '{"event":"subscribe","channel":"candles","key":"trade:7D:tETHUSD"}',
    ]
    assert bfx.trade_subscribe_messages(["AVAX/USD"]) == [
        '{"event":"subscribe","channel":"trades","symbol":"tAVAX:USD"}'
    ]
    first = bfx.book_subscribe_messages(["BTC/USD"], 25)
    assert first[0] == '{"event":"conf","flags":196608}'
    assert json.loads(first[1]) == {
        "event": "subscribe",
        "channel": "book",
        "symbol": "tBTCUSD",
        "prec": "P0",
        "freq": "F0",
        "len": "25",
    }
    assert len(bfx.book_subscribe_messages(["ETH/USD"], 25)) == 1  # conf once per connection
    with pytest.raises(ConfigError, match="4h"):  # Bitfinex has 3h and 6h, no 4h
        bfx.candle_subscribe_messages(["BTC/USD"], "4h")
    with pytest.raises(ConfigError, match="depth"):
        bfx.book_subscribe_messages(["BTC/USD"], 10)


def test_bitfinex_unsubscribe_uses_the_channel_ids_learnt() -> None:
    bfx = BitfinexV2()
    assert bfx.candle_unsubscribe_messages(["tBTCUSD"], "1m") == []  # nothing subscribed yet
    bfx.parse(SUBSCRIBED)
    bfx.parse('{"event":"subscribed","channel":"trades","chanId":5,"symbol":"tBTCUSD"}')
    bfx.parse('{"event":"subscribed","channel":"book","chanId":6,"symbol":"tBTCUSD","len":"25"}')
    assert bfx.candle_unsubscribe_messages(["tBTCUSD"], "5m") == []
    assert bfx.candle_unsubscribe_messages(["tBTCUSD"], "1m") == ['{"event":"unsubscribe","chanId":343351}']
    assert bfx.trade_unsubscribe_messages(["BTC/USD"]) == ['{"event":"unsubscribe","chanId":5}']
    assert bfx.book_unsubscribe_messages(["BTC/USD"], 25) == ['{"event":"unsubscribe","chanId":6}']
    [ack] = bfx.parse('{"event":"unsubscribed","status":"OK","chanId":343351}')
    assert (ack.channel, ack.symbol, ack.ok) == ("candles", "tBTCUSD", True)  # type: ignore[union-attr]
    assert bfx.candle_unsubscribe_messages(["tBTCUSD"], "1m") == []
    with pytest.raises(ExchangeProtocolError, match="unknown channel"):
        bfx.parse("[343351,[1574698320000,1,1,1,1,1]]")


def test_bitfinex_snapshot_open_close_high_low_order() -> None:
    bfx = BitfinexV2()
    bfx.parse(SUBSCRIBED)
    older, running = bfx.parse(BFX_SNAPSHOT)
    # Wire order OPEN, CLOSE, HIGH, LOW; the snapshot comes newest first, events oldest first.
    assert older == Candle(
        "bitfinex",
        "tBTCUSD",
        "1m",
        1574698200000,
        "7379.1",
        "7380",
        "7379",
        "7379.785503",
        "5e-7",
        None,
        None,
        True,
    )
    high, low = "7388.3", "7379.785503"
    assert running == Candle(
        "bitfinex",
        "tBTCUSD",
        "1m",
        1574698260000,
        "7379.785503",
        high,
        low,
        "7383.8",
        "1.68829482",
        None,
        None,
        False,
    )
    [update] = bfx.parse("[343351,[1574698260000,7379.785503,7384,7388.3,7379.785503,1.7]]")
    assert (update.close, update.volume, update.closed) == ("7384", "1.7", False)  # type: ignore[union-attr]
    closed, new = bfx.parse("[343351,[1574698320000,7384,7385,7386,7383,0.25]]")
    assert closed == Candle(**{**_fields(update), "closed": True})  # type: ignore[arg-type]
    assert (new.open, new.close, new.high, new.low, new.closed) == ("7384", "7385", "7386", "7383", False)  # type: ignore[union-attr]
    assert bfx.parse("[343351,[]]") == []
    assert bfx.parse('[343351,"hb"]') == [VenueStatus("bitfinex", "heartbeat", symbol="tBTCUSD")]


def test_bitfinex_week_and_other_keys() -> None:
    bfx = BitfinexV2()
    bfx.parse('{"event":"subscribed","channel":"candles","chanId":9,"key":"trade:7D:tETHUSD"}')
    [c] = bfx.parse("[9,[1574294400000,1,2,3,0.5,10]]")
    assert (c.symbol, c.interval) == ("tETHUSD", "1W")  # type: ignore[union-attr]
    # Funding candles and unknown timeframes are not followed: acknowledged, data unknown.
    [ack] = bfx.parse('{"event":"subscribed","channel":"candles","chanId":10,"key":"trade:1m:fUSD:p30"}')
    assert ack == Ack("bitfinex", "candles", None, True, channel_id=10, raw=ack.raw)  # type: ignore[union-attr]
    assert type(bfx.parse("[10,[1,2,3,4,5,6]]")[0]).__name__ == "Unknown"


@pytest.mark.parametrize(
    "frame",
    [
        "[343351,[1574698320000,null,7385,7386,7383,0.25]]",
        "[343351,[1574698320000,7384,7385,7386]]",
        "[343351,[1574698320000.5,7384,7385,7386,7383,0.25]]",
        '[343351,[["x",1,1,1,1,1]]]',
    ],
)
def test_bitfinex_bad_candle_frames_raise(frame: str) -> None:
    bfx = BitfinexV2()
    bfx.parse(SUBSCRIBED)
    with pytest.raises(ExchangeProtocolError):
        bfx.parse(frame)
