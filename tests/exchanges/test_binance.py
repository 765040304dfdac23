"""Binance Spot adapter (PROTOCOLS.md §A): golden frames, URLs, REST, real captures, robustness."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.book.sync import NeedSnapshot, SequenceSync, SyncState
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges import get
from mmdata.exchanges.base import Exchange
from mmdata.exchanges.binance import (
    MAX_FRAME_CHARS,
    BinanceSpot,
    snapshot_weight,
)
from mmdata.store.capture import open_capture
from mmdata.types import (
    Ack,
    BookDiff,
    BookSnapshot,
    Candle,
    Event,
    HttpRequest,
    Trade,
    Unknown,
    VenueStatus,
)

BINANCE_4 = "binance_4symbols_2021.capture.jsonl.gz"
BINANCE_BTCUSDT = "binance_btcusdt_20240808.capture.jsonl.gz"

# -- golden frames: PROTOCOLS.md §A.1–A.3 verbatim where it quotes one, else real capture frames --
DEPTH = (
    '{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,'
    '"b":[["0.0024","10"]],"a":[["0.0026","100"]]}'
)
TRADE = (
    '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",'
    '"T":1672515782136,"m":true,"M":true}'
)
AGG_TRADE = (
    '{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100",'
    '"f":100,"l":105,"T":1672515782136,"m":true,"M":true}'
)
PARTIAL_DEPTH = '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}'
SHUTDOWN = '{"e":"serverShutdown","E":1770123456789}'
SNAPSHOT_BODY = (
    '{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}'
)
# Real frames (binance_4symbols_2021 capture).
REAL_DEPTH = (
    '{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512568,"s":"NKNUSDT",'
    '"U":499869753,"u":499869754,"b":[["0.35170000","4265.00000000"]],"a":[["0.35290000","10968.00000000"]]}}'
)
REAL_AGG_TRADE = (
    '{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1633998523963,"s":"NKNUSDT","a":15683430,'
    '"p":"0.35280000","q":"58.00000000","f":19862790,"l":19862790,"T":1633998523963,"m":false,"M":true}}'
)
REAL_KLINE = (
    '{"stream":"nknusdt@kline_1m","data":{"e":"kline","E":1633998523963,"s":"NKNUSDT","k":{"t":1633998480000,'
    '"T":1633998539999,"s":"NKNUSDT","i":"1m","f":19862761,"L":19862790,"o":"0.35270000","c":"0.35280000",'
    '"h":"0.35280000","l":"0.35220000","v":"25877.00000000","n":30,"x":false,"q":"9116.04600000",'
    '"V":"58.00000000","Q":"20.46240000","B":"0"}}}'
)
REAL_BOOK_TICKER = (
    '{"stream":"nknusdt@bookTicker","data":{"u":499869768,"s":"NKNUSDT","b":"0.35210000",'
    '"B":"672.00000000","a":"0.35260000","A":"3199.00000000"}}'
)
REAL_TRADE = (  # binance_btcusdt_20240808 capture shape (current format, no b/a order ids)
    '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255405,"s":"BTCUSDT","t":3737125542,'
    '"p":"61837.64000000","q":"0.00100000","T":1723161255404,"m":false,"M":true}}'
)

# Other venues' frames (PROTOCOLS.md §B, §C verbatim).
FOREIGN_FRAMES = [
    '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online","api_version":"v2",'
    '"connection_id":17408390984690501469}]}',
    '{"channel":"heartbeat"}',
    '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
    '"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],'
    '"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":78500.6,'
    '"qty":0.00035522,"ord_type":"market","trade_id":105995616,"timestamp":"2026-08-26T11:55:58.096474Z"}]}',
    '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"ALGO/USD"},'
    '"success":true,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z"}',
    '{"method":"pong","req_id":101,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.2Z"}',
    '{"event":"info","version":2,"serverId":"083bd8d4-aca7-4690-a573-eabfc8103de8","platform":{"status":1}}',
    '{"event":"info","code":20051,"msg":"Stop/Restart Websocket Server (please reconnect)"}',
    '{"event":"subscribed","channel":"book","chanId":10092,"symbol":"tETHUSD","prec":"P0","freq":"F0",'
    '"len":"25","subId":123,"pair":"ETHUSD"}',
    '{"event":"error","msg":"subscription failed","code":10300}',
    '{"event":"conf","status":"OK","flags":65536}',
    '{"event":"pong","ts":1511545528111,"cid":1234}',
    "[6959,[219.11,3,-18.10913638],45,1564617601214]",
    '[6959,"hb",3603,1569715249702]',
    "[81757,[0.0000011,12,266122.94]]",
    '[81757,"cs",-1175357890]',
    '[89,"te",[382489563,1564617600709,0.00705845,10087.98969503],18,1564617600784]',
]


@pytest.fixture
def binance() -> BinanceSpot:
    return BinanceSpot()


def _combined(stream: str, payload: str) -> str:
    return f'{{"stream":"{stream}","data":{payload}}}'


def _parse_or_reject(adapter: BinanceSpot, frame: Any) -> list[Event] | None:
    """The robustness contract: events, or ExchangeProtocolError naming Binance; nothing else."""
    try:
        events = adapter.parse(frame)
    except ExchangeProtocolError as exc:
        assert exc.exchange == "binance"
        assert len(exc.frame) <= 512
        return None
    assert isinstance(events, list) and events
    for event in events:
        assert isinstance(event, BookDiff | Trade | Candle | VenueStatus | Ack | Unknown)
        if isinstance(event, BookDiff):
            assert type(event.first_id) is int and type(event.last_id) is int and type(event.ts_ms) is int
            assert type(event.bids) is list and type(event.asks) is list and type(event.symbol) is str
            assert event.first_id <= event.last_id
            assert event.raw is frame
        elif isinstance(event, Trade):
            assert type(event.price) is str and type(event.qty) is str and type(event.symbol) is str
            assert type(event.trade_id) is int and type(event.ts_ms) is int and event.side in ("buy", "sell")
            assert event.raw is frame
        elif isinstance(event, Candle):
            assert (
                type(event.open_time_ms) is int and type(event.trades) is int and type(event.closed) is bool
            )
            assert all(type(v) is str for v in (event.open, event.high, event.low, event.close, event.volume))
    return events


# -- protocol, names, symbols -------------------------------------------------------------------
def test_is_an_exchange_and_registered(binance: BinanceSpot) -> None:
    assert isinstance(binance, Exchange)
    assert binance.name == "binance"
    assert binance.ws_base == "wss://stream.binance.com:9443"
    assert binance.rest_base == "https://api.binance.com"
    fresh = get("binance", ws_base="ws://127.0.0.1:9/", rest_base="http://127.0.0.1:8/")
    assert isinstance(fresh, BinanceSpot)
    assert fresh.ws_base == "ws://127.0.0.1:9"
    assert fresh.rest_base == "http://127.0.0.1:8"
    assert get("binance") is not get("binance")


@pytest.mark.parametrize(
    ("text", "symbol"),
    [
        ("btc/usdt", "BTCUSDT"),
        ("BTCUSDT", "BTCUSDT"),
        ("  eth-btc ", "ETHBTC"),
        ("bnb_usdt", "BNBUSDT"),
        ("BTC USDT", "BTCUSDT"),
        ("1000satsusdt", "1000SATSUSDT"),
        ("ab", "AB"),
        ("A" * 20, "A" * 20),
    ],
)
def test_normalize_symbol(binance: BinanceSpot, text: str, symbol: str) -> None:
    assert binance.normalize_symbol(text) == symbol


@pytest.mark.parametrize(
    "text", ["", " ", "B", "/", "BTC:USDT", "BTC$USDT", "ÄBC", "A" * 21, "btc\nusdt", "BTC.USDT"]
)
def test_normalize_symbol_rejects(binance: BinanceSpot, text: str) -> None:
    with pytest.raises(ConfigError, match="BTCUSDT"):
        binance.normalize_symbol(text)


@pytest.mark.parametrize("text", [None, 5, b"BTCUSDT"])
def test_normalize_symbol_rejects_non_text(binance: BinanceSpot, text: Any) -> None:
    with pytest.raises(ConfigError):
        binance.normalize_symbol(text)


def test_symbol_fs(binance: BinanceSpot) -> None:
    assert binance.symbol_fs("BTCUSDT") == "BTCUSDT"
    assert binance.symbol_fs("BTC/USDT") == "BTCUSDT"


# -- URLs and subscriptions ---------------------------------------------------------------------
def test_ws_url_one_symbol(binance: BinanceSpot) -> None:
    assert binance.ws_url(["btc/usdt"]) == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
    )
    assert binance.ws_url("BTCUSDT") == binance.ws_url(["BTCUSDT"])  # a lone str is one symbol


def test_ws_url_many_symbols_deduplicated_in_order(binance: BinanceSpot) -> None:
    url = binance.ws_url(["NKNUSDT", "blzeth", "nkn/usdt"])
    assert url == (
        "wss://stream.binance.com:9443/stream?streams="
        "nknusdt@depth@100ms/nknusdt@trade/blzeth@depth@100ms/blzeth@trade"
    )


def test_ws_url_base_override() -> None:
    adapter = BinanceSpot(ws_base="ws://127.0.0.1:8765/", rest_base="http://127.0.0.1:8080//")
    assert adapter.ws_url(["ETHBTC"]) == "ws://127.0.0.1:8765/stream?streams=ethbtc@depth@100ms/ethbtc@trade"
    assert adapter.rest_base == "http://127.0.0.1:8080"


def test_ws_url_stream_limit(binance: BinanceSpot) -> None:
    symbols = [f"S{i:04d}" for i in range(513)]
    url = binance.ws_url(symbols[:512])  # 1024 streams: the documented maximum
    assert len(url.split("streams=", 1)[1].split("/")) == 1024
    with pytest.raises(ConfigError, match="1024"):
        binance.ws_url(symbols)


@pytest.mark.parametrize("symbols", [[], ["BTCUSDT", "x"]])
def test_ws_url_bad_symbols(binance: BinanceSpot, symbols: list[str]) -> None:
    with pytest.raises(ConfigError):
        binance.ws_url(symbols)


def test_subscribe_messages_empty(binance: BinanceSpot) -> None:
    assert binance.subscribe_messages(["BTCUSDT", "ETHBTC"], 20) == []


# -- golden frames ------------------------------------------------------------------------------
def test_depth_update_raw(binance: BinanceSpot) -> None:
    [event] = binance.parse(DEPTH)
    assert type(event) is BookDiff
    assert event == BookDiff(
        exchange="binance",
        symbol="BNBBTC",
        bids=[["0.0024", "10"]],
        asks=[["0.0026", "100"]],
        ts_ms=1672515782136,
        first_id=157,
        last_id=160,
        checksum=None,
        raw=DEPTH,
        seq=None,
    )


def test_depth_update_combined(binance: BinanceSpot) -> None:
    frame = _combined("bnbbtc@depth@100ms", DEPTH)
    [event] = binance.parse(frame)
    assert event == BookDiff(
        "binance", "BNBBTC", [["0.0024", "10"]], [["0.0026", "100"]], 1672515782136, 157, 160, None, frame
    )
    [real] = binance.parse(REAL_DEPTH)
    assert real == BookDiff(
        "binance",
        "NKNUSDT",
        [["0.35170000", "4265.00000000"]],
        [["0.35290000", "10968.00000000"]],
        1633998512568,
        499869753,
        499869754,
        None,
        REAL_DEPTH,
    )


def test_depth_update_empty_sides_and_equal_ids(binance: BinanceSpot) -> None:
    frame = '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":7,"u":7,"b":[],"a":[]}'
    [event] = binance.parse(frame)
    assert (event.bids, event.asks, event.first_id, event.last_id) == ([], [], 7, 7)


def test_fast_built_events_are_ordinary_frozen_events(binance: BinanceSpot) -> None:
    [diff] = binance.parse(DEPTH)
    [trade] = binance.parse(TRADE)
    assert type(diff) is BookDiff and type(trade) is Trade
    with pytest.raises(dataclasses.FrozenInstanceError):
        diff.symbol = "X"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        trade.price = "1"  # type: ignore[misc]
    assert dataclasses.asdict(diff)["first_id"] == 157
    assert dataclasses.replace(trade, qty="5").qty == "5"
    assert repr(diff).startswith("BookDiff(exchange='binance'")
    assert trade == Trade("binance", "BNBBTC", 1672515782136, "0.001", "100", "sell", 12345, TRADE)


def test_trade_buyer_maker_means_taker_sold(binance: BinanceSpot) -> None:
    [event] = binance.parse(TRADE)
    assert event == Trade(
        exchange="binance",
        symbol="BNBBTC",
        ts_ms=1672515782136,
        price="0.001",
        qty="100",
        side="sell",
        trade_id=12345,
        raw=TRADE,
        snapshot=False,
        seq=None,
    )
    buy = TRADE.replace('"m":true', '"m":false')
    [event] = binance.parse(buy)
    assert event.side == "buy"  # type: ignore[union-attr]


def test_trade_real_combined(binance: BinanceSpot) -> None:
    [event] = binance.parse(REAL_TRADE)
    assert event == Trade(
        "binance", "BTCUSDT", 1723161255404, "61837.64000000", "0.00100000", "buy", 3737125542, REAL_TRADE
    )


def test_agg_trade(binance: BinanceSpot) -> None:
    [event] = binance.parse(AGG_TRADE)
    assert event == Trade("binance", "BNBBTC", 1672515782136, "0.001", "100", "sell", 12345, AGG_TRADE)
    [real] = binance.parse(REAL_AGG_TRADE)
    assert real == Trade(
        "binance", "NKNUSDT", 1633998523963, "0.35280000", "58.00000000", "buy", 15683430, REAL_AGG_TRADE
    )


def test_kline(binance: BinanceSpot) -> None:
    [event] = binance.parse(REAL_KLINE)
    assert event == Candle(
        exchange="binance",
        symbol="NKNUSDT",
        interval="1m",
        open_time_ms=1633998480000,
        open="0.35270000",
        high="0.35280000",
        low="0.35220000",
        close="0.35280000",
        volume="25877.00000000",
        quote_volume="9116.04600000",
        trades=30,
        closed=False,
    )
    closed = REAL_KLINE.replace('"x":false', '"x":true')
    assert binance.parse(closed)[0].closed is True  # type: ignore[union-attr]


@pytest.mark.parametrize("frame", [SHUTDOWN, _combined("!serverShutdown", SHUTDOWN)])
def test_server_shutdown(binance: BinanceSpot, frame: str) -> None:
    assert binance.parse(frame) == [VenueStatus("binance", "reconnect", "serverShutdown")]


@pytest.mark.parametrize(
    "frame",
    [
        REAL_BOOK_TICKER,
        '{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}',
        _combined("!bookTicker", '{"u":1,"s":"BNBUSDT","b":"1","B":"1","a":"2","A":"1"}'),
        _combined("bnbbtc@depth5", PARTIAL_DEPTH),
        _combined("bnbbtc@depth20@100ms", PARTIAL_DEPTH),
        PARTIAL_DEPTH,
        '{"e":"24hrMiniTicker","E":1672515782136,"s":"BNBBTC","c":"0.0025","o":"0.0010","h":"0.0025",'
        '"l":"0.0010","v":"10000","q":"18"}',
        _combined(
            "btcusdt@avgPrice", '{"e":"avgPrice","E":1693907033000,"s":"BTCUSDT","i":"5m","w":"25776.86"}'
        ),
        _combined("!miniTicker@arr", '[{"e":"24hrMiniTicker","E":1,"s":"BNBBTC","c":"1"}]'),
    ],
)
def test_unused_binance_frames_are_unknown(binance: BinanceSpot, frame: str) -> None:
    assert binance.parse(frame) == [Unknown("binance", frame)]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"result":null,"id":1}', "id=1"),
        ('{"result":["btcusdt@aggTrade"],"id":3}', "id=3"),
        ('{"result":true,"id":"abc-1"}', "id=abc-1"),
        ('{"result":null,"id":null}', "id=None"),
    ],
)
def test_request_answers_are_acks(binance: BinanceSpot, frame: str, message: str) -> None:
    assert binance.parse(frame) == [Ack("binance", "request", None, True, message=message, raw=frame)]


@pytest.mark.parametrize(
    ("frame", "code", "msg"),
    [
        ('{"code": 0, "msg": "Unknown property","id": 1}', 0, "Unknown property"),
        (
            '{"code": 1, "msg": "Invalid value type: expected Boolean"}',
            1,
            "Invalid value type: expected Boolean",
        ),
        (
            '{"error":{"code":2,"msg":"Invalid request: request ID must be an unsigned integer"},"id":null}',
            2,
            "Invalid request: request ID must be an unsigned integer",
        ),
    ],
)
def test_error_answers(binance: BinanceSpot, frame: str, code: int, msg: str) -> None:
    assert binance.parse(frame) == [VenueStatus("binance", "error", msg, code)]


BAD_BINANCE_FRAMES = [
    DEPTH.replace('"U":157', '"U":"157"'),
    DEPTH.replace('"U":157', '"U":true'),
    DEPTH.replace('"u":160', '"u":160.0'),
    DEPTH.replace('"U":157', '"U":161'),  # U > u
    DEPTH.replace('"E":1672515782136,', ""),
    DEPTH.replace('"E":1672515782136', '"E":null'),
    DEPTH.replace('"b":[["0.0024","10"]]', '"b":{"0.0024":"10"}'),
    DEPTH.replace('"a":[["0.0026","100"]]', '"a":null'),
    DEPTH.replace('"s":"BNBBTC"', '"s":5'),
    TRADE.replace('"m":true', '"m":"true"'),
    TRADE.replace('"p":"0.001"', '"p":0.001'),
    TRADE.replace('"t":12345', '"t":"12345"'),
    TRADE.replace('"T":1672515782136,', ""),
    AGG_TRADE.replace('"a":12345,', ""),
    REAL_KLINE.replace('"n":30', '"n":"30"'),
    REAL_KLINE.replace('"x":false', '"x":0'),
    REAL_KLINE.replace('"i":"1m"', '"i":1'),
    REAL_KLINE.replace('"q":"9116.04600000"', '"q":9116.046'),
    '{"stream":"nknusdt@kline_1m","data":{"e":"kline","E":1,"s":"NKNUSDT","k":[1,2]}}',
    '{"e":5,"E":1}',
    '{"e":"24hrTicker"}',
    '{"e":"24hrTicker","E":"1"}',
    '{"stream":5,"data":' + DEPTH + "}",
    '{"stream":null,"data":' + DEPTH + "}",
    '{"stream":"bnbbtc@depth@100ms","data":"x"}',
    '{"stream":"bnbbtc@depth@100ms","data":[1]}',
    '{"stream":"bnbbtc@depth@100ms","data":{"u":1}}',
    '{"stream":"bnbbtc@depth5","data":{"lastUpdateId":"1","bids":[],"asks":[]}}',
    '{"stream":"bnbbtc@trade"}',
    '{"result":null}',
    '{"result":null,"id":1.5}',
    '{"result":null,"id":[1]}',
    '{"code":"1","msg":"x"}',
    '{"code":1,"msg":null}',
    '{"error":"x","id":1}',
    '{"u":"1","s":"BNBUSDT","b":"1","B":"1","a":"2","A":"1"}',
    '{"lastUpdateId":160,"bids":[],"asks":{}}',
    "{}",
    '{"data":{"e":"depthUpdate"}}',
]


@pytest.mark.parametrize("frame", BAD_BINANCE_FRAMES)
def test_malformed_binance_frames_raise(binance: BinanceSpot, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        binance.parse(frame)
    assert info.value.exchange == "binance"
    assert info.value.frame == frame[:512]


@pytest.mark.parametrize("frame", FOREIGN_FRAMES)
def test_other_venues_frames_raise(binance: BinanceSpot, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        binance.parse(frame)


# -- robustness ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frame",
    ["", " ", "1", "-0", "1e400", "null", "true", '"depthUpdate"', "[]", "[1,2]", "nan", "{", "}", "{}{}"],
)
def test_json_scalars_and_junk_raise(binance: BinanceSpot, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        binance.parse(frame)


@pytest.mark.parametrize("frame", [None, 5, 1.5, ["x"]])
def test_non_text_frames_raise(binance: BinanceSpot, frame: Any) -> None:
    with pytest.raises(ExchangeProtocolError):
        binance.parse(frame)


@pytest.mark.parametrize("frame", [DEPTH, REAL_DEPTH, TRADE, REAL_KLINE, REAL_BOOK_TICKER, SHUTDOWN])
def test_every_truncation_raises(binance: BinanceSpot, frame: str) -> None:
    for end in range(len(frame)):
        with pytest.raises(ExchangeProtocolError):
            binance.parse(frame[:end])


def test_oversized_frame_rejected_before_decoding(binance: BinanceSpot) -> None:
    huge = (
        '{"stream":"btcusdt@depth@100ms","data":' + DEPTH[:-1] + ',"x":"' + "9" * (10 * 1024 * 1024) + '"}}'
    )
    with pytest.raises(ExchangeProtocolError, match="exceeds") as info:
        binance.parse(huge)
    assert len(info.value.frame) == 512
    # The limit is inclusive: whitespace padding to exactly MAX_FRAME_CHARS still parses.
    padded = DEPTH + " " * (MAX_FRAME_CHARS - len(DEPTH))
    assert binance.parse(padded)[0].last_id == 160  # type: ignore[union-attr]
    with pytest.raises(ExchangeProtocolError, match="exceeds"):
        binance.parse(padded + " ")


@pytest.mark.parametrize(
    "frame",
    [
        DEPTH.replace("BNBBTC", "\ud800"),  # lone surrogate: not encodable as UTF-8
        "\ud83d" + DEPTH,
        "\ufeff" + DEPTH,  # byte-order mark
        DEPTH.replace("BNBBTC", "BNB\x00BTC"),
        "\x00" * 64,
        bytes(range(256)).decode("latin-1"),
        "\x1f\x8b\x08\x00" + "\xff" * 20,  # gzip bytes read as text
        DEPTH.encode("utf-16").decode("latin-1"),
    ],
)
def test_non_utf8_ish_text(binance: BinanceSpot, frame: str) -> None:
    _parse_or_reject(binance, frame)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"stream":"!ticker@arr","data":' + "[" * 10_000 + "]" * 10_000 + "}",
        DEPTH.replace('"b":[["0.0024","10"]]', '"b":' + "[" * 5_000 + "]" * 5_000),
    ],
)
def test_deep_nesting(binance: BinanceSpot, frame: str) -> None:
    _parse_or_reject(binance, frame)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
_binance_keys = st.sampled_from(
    ["e", "E", "s", "U", "u", "b", "a", "t", "p", "q", "T", "m", "k", "i", "x", "n"]
)
_binance_kinds = st.sampled_from(
    ["depthUpdate", "trade", "aggTrade", "kline", "serverShutdown", "24hrTicker"]
)
# Values of the right type for some field often enough to reach the success paths too.
_field_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.lists(st.lists(st.text(max_size=6), max_size=2), max_size=2)
)


@st.composite
def _binance_shaped(draw: st.DrawFn) -> str:
    payload: dict[str, Any] = draw(st.dictionaries(_binance_keys, _field_values, max_size=16))
    payload["e"] = draw(_binance_kinds | _field_values)
    if draw(st.booleans()):
        payload["k"] = draw(st.dictionaries(_binance_keys, _field_values, max_size=16))
    frame: Any = payload
    if draw(st.booleans()):
        stream = draw(st.sampled_from(["btcusdt@depth@100ms", "x@bookTicker", "a@depth5", "!ticker@arr"]))
        frame = {"stream": stream, "data": payload}
    return json.dumps(frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_hypothesis_junk_text(frame: str) -> None:
    _parse_or_reject(BinanceSpot(), frame)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json_values)
def test_hypothesis_any_json(value: Any) -> None:
    _parse_or_reject(BinanceSpot(), json.dumps(value))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_binance_shaped())
def test_hypothesis_binance_shaped_payloads(frame: str) -> None:
    _parse_or_reject(BinanceSpot(), frame)


_VALID_PAYLOADS = {
    "depthUpdate": DEPTH,
    "trade": TRADE,
    "aggTrade": AGG_TRADE,
    "kline": json.dumps(json.loads(REAL_KLINE)["data"]),
}


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(_VALID_PAYLOADS)), st.data())
def test_hypothesis_one_field_mutated(kind: str, data: st.DataObject) -> None:
    """Valid payloads with one field replaced or removed: events of the right types, or rejected."""
    payload = json.loads(_VALID_PAYLOADS[kind])
    target = payload["k"] if kind == "kline" and data.draw(st.booleans()) else payload
    key = data.draw(st.sampled_from(sorted(target)))
    if data.draw(st.booleans()):
        del target[key]
    else:
        target[key] = data.draw(_field_values)
    frame = json.dumps(payload)
    if data.draw(st.booleans()):
        frame = _combined(f"bnbbtc@{kind}", frame)
    _parse_or_reject(BinanceSpot(), frame)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=len(REAL_DEPTH)))
def test_hypothesis_spliced_real_frame(junk: bytes, at: int) -> None:
    frame = REAL_DEPTH[:at] + junk.decode("latin-1") + REAL_DEPTH[at:]
    _parse_or_reject(BinanceSpot(), frame)


# -- REST snapshots -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("limit", "weight"),
    [(1, 5), (100, 5), (101, 25), (500, 25), (501, 50), (1000, 50), (1001, 250), (5000, 250)],
)
def test_snapshot_weight(limit: int, weight: int) -> None:
    assert snapshot_weight(limit) == weight


@pytest.mark.parametrize("limit", [0, -1, 5001])
def test_snapshot_weight_out_of_range(limit: int) -> None:
    with pytest.raises(ConfigError):
        snapshot_weight(limit)


def test_snapshot_request_default_is_deepest(binance: BinanceSpot) -> None:
    request = binance.snapshot_request("btc/usdt", 20)
    assert request == HttpRequest(
        "GET", "https://api.binance.com/api/v3/depth", (("symbol", "BTCUSDT"), ("limit", "5000")), 250
    )
    assert binance.snapshot_request("BTCUSDT", 20_000).params[1] == ("limit", "5000")


def test_snapshot_request_smaller_limit_option() -> None:
    adapter = BinanceSpot(rest_base="http://127.0.0.1:8080/", snapshot_limit=100)
    assert adapter.snapshot_request("ETHBTC", 20) == HttpRequest(
        "GET", "http://127.0.0.1:8080/api/v3/depth", (("symbol", "ETHBTC"), ("limit", "100")), 5
    )
    assert adapter.snapshot_request("ETHBTC", 700).params[1] == ("limit", "700")
    assert adapter.snapshot_request("ETHBTC", 700).weight == 50


@pytest.mark.parametrize("limit", [0, 5001])
def test_bad_snapshot_limit_option(limit: int) -> None:
    with pytest.raises(ConfigError):
        BinanceSpot(snapshot_limit=limit)


def test_parse_snapshot(binance: BinanceSpot) -> None:
    snap = binance.parse_snapshot("bnb/btc", SNAPSHOT_BODY)
    assert snap == BookSnapshot(
        exchange="binance",
        symbol="BNBBTC",
        bids=[["4.00000000", "431.00000000"]],
        asks=[["4.00000200", "12.00000000"]],
        ts_ms=None,
        update_id=1027024,
        checksum=None,
        raw=SNAPSHOT_BODY,
    )


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ('{"code":-1121,"msg":"Invalid symbol."}', "Invalid symbol"),
        ('{"code":-1003,"msg":"Too much request weight used; current limit is 6000."}', "request weight"),
        ('{"bids":[],"asks":[]}', "lastUpdateId"),
        ('{"lastUpdateId":"1","bids":[],"asks":[]}', "lastUpdateId"),
        ('{"lastUpdateId":1,"bids":{},"asks":[]}', "lastUpdateId"),
        ("[]", "not an object"),
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("", "not JSON"),
    ],
)
def test_parse_snapshot_rejects(binance: BinanceSpot, body: str, match: str) -> None:
    with pytest.raises(ExchangeProtocolError, match=match):
        binance.parse_snapshot("BTCUSDT", body)


@pytest.mark.parametrize(
    ("url", "symbol"),
    [
        ("https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000", "NKNUSDT"),
        ("http://127.0.0.1:8080/api/v3/depth?limit=5000&symbol=btcusdt", "BTCUSDT"),
        ("https://api.binance.com/api/v3/depth?limit=1000", None),
        ("https://api.binance.com/api/v3/klines?symbol=BTCUSDT&interval=1m", None),
        ("https://api.binance.com/api/v3/depth?symbol=%24%24", None),
        ("http://[::1/api/v3/depth?symbol=BTCUSDT", None),
        ("", None),
    ],
)
def test_rest_symbol(binance: BinanceSpot, url: str, symbol: str | None) -> None:
    assert binance.rest_symbol(url) == symbol


def test_new_sync_engine(binance: BinanceSpot) -> None:
    engine = binance.new_sync_engine("btc/usdt", 20)
    assert isinstance(engine, SequenceSync)
    assert engine.symbol == "BTCUSDT"
    assert engine.exchange == "binance"
    assert engine.state is SyncState.CONNECTING


# -- real captures ------------------------------------------------------------------------------
def _expected_kind(frame: str) -> str:
    """Independent classification of a Binance frame with the standard json module."""
    doc = json.loads(frame)
    data = doc["data"] if "stream" in doc else doc
    kind = data.get("e")
    return {
        "depthUpdate": "BookDiff",
        "trade": "Trade",
        "aggTrade": "Trade",
        "kline": "Candle",
        None: "Unknown",  # bookTicker
    }[kind]


def _check_fields(event: Event, frame: str) -> None:
    """The parsed event carries exactly the wire values (independent json decode)."""
    doc = json.loads(frame)
    data = doc["data"] if "stream" in doc else doc
    if isinstance(event, BookDiff):
        assert (event.symbol, event.first_id, event.last_id, event.ts_ms) == (
            data["s"],
            data["U"],
            data["u"],
            data["E"],
        )
        assert event.bids == data["b"] and event.asks == data["a"]
    elif isinstance(event, Trade):
        trade_id = data["t"] if data["e"] == "trade" else data["a"]
        assert (event.symbol, event.trade_id, event.ts_ms, event.price, event.qty) == (
            data["s"],
            trade_id,
            data["T"],
            data["p"],
            data["q"],
        )
        assert event.side == ("sell" if data["m"] else "buy")
    elif isinstance(event, Candle):
        assert (event.symbol, event.interval, event.open_time_ms, event.close) == (
            data["s"],
            data["k"]["i"],
            data["k"]["t"],
            data["k"]["c"],
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (BINANCE_4, {"BookDiff": 177, "Unknown": 84, "Trade": 2, "Candle": 2}),
        (BINANCE_BTCUSDT, {"BookDiff": 3451, "Unknown": 28040, "Trade": 9757}),
    ],
)
def test_real_capture_every_frame_parses(real_capture: Any, name: str, expected: dict[str, int]) -> None:
    adapter = BinanceSpot()
    parsed: Counter[str] = Counter()
    independent: Counter[str] = Counter()
    with open_capture(real_capture(name)) as capture:
        for record in capture:
            if record.kind != "ws_recv":
                continue
            [event] = adapter.parse(record.data)
            if not isinstance(event, Candle):  # the one event type without raw
                assert event.raw is record.data
            _check_fields(event, record.data)
            parsed[type(event).__name__] += 1
            independent[_expected_kind(record.data)] += 1
        assert capture.bad_lines == 0
    assert parsed == independent
    assert parsed == expected


def test_real_capture_url_is_ours(real_capture: Any) -> None:
    """The BTCUSDT recording subscribed exactly the streams ws_url builds."""
    with open_capture(real_capture(BINANCE_BTCUSDT)) as capture:
        opened = next(record for record in capture if record.kind == "ws_open")
        assert opened.url == BinanceSpot().ws_url(capture.header.symbols)


def _replay(path: Path) -> tuple[dict[str, Any], Counter[str], dict[str, tuple[int, int]]]:
    """Drive one SequenceSync per symbol through a capture.

    NeedSnapshot(first_id=U) is answered with the first REST record of that symbol in the
    capture (wherever it sits) whose lastUpdateId >= U. Returns the engines, trade counts per
    symbol and (matched, mismatched) best-level checks against @bookTicker frames.
    """
    adapter = BinanceSpot()
    with open_capture(path) as capture:
        records = list(capture)
    snapshots: dict[str, list[BookSnapshot]] = defaultdict(list)
    for record in records:
        if record.kind == "rest":
            symbol = adapter.rest_symbol(record.url)
            assert symbol is not None, record.url
            snapshots[symbol].append(adapter.parse_snapshot(symbol, record.data))

    engines: dict[str, Any] = {}
    trades: Counter[str] = Counter()
    tops: dict[str, dict[int, tuple[Any, Any]]] = defaultdict(dict)  # symbol -> u -> best bid/ask

    def feed(engine: Any, event: BookDiff | BookSnapshot) -> None:
        pending = list(engine.receive(event))
        while pending:
            output = pending.pop(0)
            if isinstance(output, NeedSnapshot):
                assert output.first_id is not None
                answer = next((s for s in snapshots[output.symbol] if s.update_id >= output.first_id), None)
                if answer is not None:
                    pending.extend(engine.receive(answer))

    tickers: list[dict[str, Any]] = []
    for record in records:
        if record.kind != "ws_recv":
            continue
        for event in adapter.parse(record.data):
            if isinstance(event, BookDiff):
                engine = engines.get(event.symbol)
                if engine is None:
                    engine = engines[event.symbol] = adapter.new_sync_engine(event.symbol, 20)
                feed(engine, event)
                if engine.state is SyncState.SYNCED and engine.update_id == event.last_id:
                    tops[event.symbol][event.last_id] = (engine.book.best_bid(), engine.book.best_ask())
            elif isinstance(event, Trade):
                trades[event.symbol] += 1
            elif isinstance(event, Unknown) and "bookTicker" in record.data:
                tickers.append(json.loads(record.data)["data"])

    checks: dict[str, tuple[int, int]] = {}
    for symbol, by_id in tops.items():
        matched = mismatched = 0
        for ticker in tickers:
            if ticker["s"] == symbol and ticker["u"] in by_id:
                bid, ask = by_id[ticker["u"]]
                if bid == (ticker["b"], ticker["B"]) and ask == (ticker["a"], ticker["A"]):
                    matched += 1
                else:
                    mismatched += 1
        checks[symbol] = (matched, mismatched)
    return engines, trades, checks


def test_real_capture_4symbols_sync(real_capture: Any) -> None:
    engines, trades, checks = _replay(real_capture(BINANCE_4))
    assert sorted(engines) == ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]
    stats = [engine.stats for engine in engines.values()]
    assert all(engine.state is SyncState.SYNCED for engine in engines.values())
    assert sum(s.snapshots for s in stats) == 4
    assert sum(s.diffs_applied for s in stats) == 172
    assert sum(s.gaps for s in stats) == 0
    assert sum(s.resyncs for s in stats) == 0
    assert sum(s.crossed_states for s in stats) == 0
    assert sum(trades.values()) == 2
    assert all(mismatched == 0 for _, mismatched in checks.values())


def test_real_capture_btcusdt_sync(real_capture: Any) -> None:
    engines, trades, checks = _replay(real_capture(BINANCE_BTCUSDT))
    assert list(engines) == ["BTCUSDT"]
    engine = engines["BTCUSDT"]
    assert engine.state is SyncState.SYNCED
    assert engine.stats.snapshots == 1
    assert engine.stats.diffs_applied == 3449
    assert engine.stats.gaps == 0
    assert engine.stats.resyncs == 0
    assert engine.stats.crossed_states == 0
    assert trades == {"BTCUSDT": 9757}
    # PROTOCOLS.md §A.4: best bid/ask price and qty equal the @bookTicker of the same u, 564/564.
    assert checks["BTCUSDT"] == (564, 0)
