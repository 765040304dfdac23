"""Tests of the Bitfinex WebSocket v2 adapter (PROTOCOLS.md §C).

Golden frames are the examples quoted in PROTOCOLS.md where it gives them; the real
captures are read in place from the shared fixtures (skipped when absent) and their
expected counts are computed here with plain ``json``, independently of the adapter.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.book.checksum import bitfinex_checksum
from mmdata.book.sync import ChecksumSync, GapDetected, SyncEngine, SyncState
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges import get
from mmdata.exchanges.base import Exchange
from mmdata.exchanges.bitfinex import (
    MAX_FRAME_CHARS,
    OB_CHECKSUM,
    SEQ_ALL,
    TIMESTAMP,
    BitfinexV2,
)
from mmdata.store.capture import open_capture
from mmdata.types import (
    Ack,
    BookChecksum,
    BookDiff,
    BookSnapshot,
    Candle,
    Event,
    SequenceBreak,
    Trade,
    Unknown,
    VenueStatus,
)
from tests.conftest import BITFINEX_7, BITFINEX_VECTOR

EX = "bitfinex"

# -- frames quoted in PROTOCOLS.md §C ---------------------------------------------------
INFO = (
    '{"event":"info","version":2,"serverId":"083bd8d4-aca7-4690-a573-eabfc8103de8","platform":{"status":1}}'
)
CONF_OK = '{"event":"conf","status":"OK","flags":65536}'
SUB_BOOK = (
    '{"event":"subscribed","channel":"book","chanId":10092,"symbol":"tETHUSD","prec":"P0",'
    '"freq":"F0","len":"25","subId":123,"pair":"ETHUSD"}'
)
SUB_TRADES = '{"event":"subscribed","channel":"trades","chanId":232959,"symbol":"tBFTUSD","pair":"BFTUSD"}'
UNSUB = '{"event":"unsubscribed","status":"OK","chanId":10092}'
PONG = '{"event":"pong","ts":1511545528111,"cid":1234}'

XRP_SUB = (
    '{"event":"subscribed","channel":"book","chanId":81757,"symbol":"tXRPBTC","prec":"P0",'
    '"freq":"F0","len":"25","pair":"XRPBTC"}'
)
XRP_SNAPSHOT = (
    "[81757,[[0.0000011,13,271510.49],[0.00000109,4,500793.10790141],[0.00000108,5,776367.43],"
    "[0.00000107,1,23329.54842056],[0.00000106,3,116868.87735849],[0.00000105,3,205000],"
    "[0.00000103,3,227308.25386407],[0.00000102,2,105000],[0.00000101,1,2970],[0.000001,2,21000],"
    "[7e-7,1,10000],[6.6e-7,1,10000],[6e-7,1,100000],[4.9e-7,1,10000],[2.5e-7,1,2000],[6e-8,1,100000],"
    "[5e-8,1,200000],[1e-8,4,640000],[0.00000111,1,-4847.13],[0.00000112,7,-528102.69042633],"
    "[0.00000113,5,-302397.07],[0.00000114,3,-339088.93],[0.00000126,4,-245944.06],[0.00000127,1,-5000],"
    "[0.0000013,1,-5000],[0.00000134,1,-8249.18938656],[0.00000136,1,-13161.25184766],[0.00000145,1,-2914],"
    "[0.0000015,3,-54448.5],[0.00000152,2,-5538.54849594],[0.00000153,1,-62691.75475079],"
    "[0.00000159,1,-2914],[0.0000016,1,-52631.10296831],[0.00000164,1,-4000],[0.00000166,1,-3831.46784605],"
    "[0.00000171,1,-14575.17730379],[0.00000174,1,-3124.81815395],[0.0000018,1,-18000],"
    "[0.00000182,1,-16000],[0.00000186,1,-4000],[0.00000189,1,-10000.686624],[0.00000191,1,-14500],"
    "[0.00000193,1,-2422]]]"
)
XRP_UPDATE = "[81757,[0.0000011,12,266122.94]]"
XRP_CS = '[81757,"cs",-1175357890]'

# Real frames with SEQ_ALL + TIMESTAMP (tardis-node, §C.1).
TARDIS_TE = '[89,"te",[382489563,1564617600709,0.00705845,10087.98969503],18,1564617600784]'
TARDIS_BOOK = "[6959,[219.11,3,-18.10913638],45,1564617601214]"
TARDIS_HB = '[6959,"hb",3603,1569715249702]'

# Frames of the other two venues (PROTOCOLS.md §A.2, §B.2, §B.4).
FOREIGN = [
    '{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,'
    '"b":[["0.0024","10"]],"a":[["0.0026","100"]]}',
    '{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}',
    '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",'
    '"T":1672515782136,"m":true,"M":true}',
    '{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":2,"b":[],"a":[]}}',
    '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"ALGO/USD"},'
    '"success":true,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z"}',
    '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
    '"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],'
    '"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":78500.6,'
    '"qty":0.00035522,"ord_type":"market","trade_id":105995616,"timestamp":"2026-08-26T11:55:58.096474Z"}]}',
    '{"channel":"heartbeat"}',
]


def conf(flags: int) -> str:
    return json.dumps({"event": "conf", "status": "OK", "flags": flags})


def subscribed(chan_id: int, channel: str, symbol: str | None = None, **extra: Any) -> str:
    msg: dict[str, Any] = {"event": "subscribed", "channel": channel, "chanId": chan_id}
    if symbol is not None:
        msg["symbol"] = symbol
    msg.update(extra)
    return json.dumps(msg)


def adapter(flags: int | None = None, *frames: str) -> BitfinexV2:
    """An adapter that has seen the conf answer (when flags given) and the given frames."""
    ad = BitfinexV2()
    if flags is not None:
        ad.parse(conf(flags))
    for frame in frames:
        ad.parse(frame)
    return ad


def primed() -> BitfinexV2:
    """SEQ_ALL adapter with a book (1), trades (2) and ticker (3) channel on tBTCUSD."""
    return adapter(
        SEQ_ALL,
        subscribed(1, "book", "tBTCUSD", prec="P0", freq="F0", len="25"),
        subscribed(2, "trades", "tBTCUSD"),
        subscribed(3, "ticker", "tBTCUSD"),
    )


def one(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


# -- construction, symbols, subscriptions ------------------------------------------------
def test_defaults_and_protocol() -> None:
    ad = BitfinexV2()
    assert isinstance(ad, Exchange)
    assert ad.name == "bitfinex"
    assert ad.ws_base == "wss://api-pub.bitfinex.com/ws/2"
    assert ad.rest_base == "https://api-pub.bitfinex.com"
    assert ad.ws_url(["tBTCUSD"]) == "wss://api-pub.bitfinex.com/ws/2"
    custom = BitfinexV2(ws_base="ws://127.0.0.1:9000/ws/2", rest_base="http://127.0.0.1:9001")
    assert custom.ws_url([]) == "ws://127.0.0.1:9000/ws/2"
    assert custom.rest_base == "http://127.0.0.1:9001"


def test_registry_returns_fresh_instances() -> None:
    a = get("bitfinex", ws_base="ws://x")
    b = get("Bitfinex")
    assert isinstance(a, BitfinexV2) and isinstance(b, BitfinexV2)
    assert a is not b
    assert a.ws_base == "ws://x"


def test_rest_side_is_unused() -> None:
    ad = BitfinexV2()
    assert ad.snapshot_request("tBTCUSD", 25) is None
    assert ad.rest_symbol("https://api-pub.bitfinex.com/v2/book/tBTCUSD/P0") is None
    with pytest.raises(ExchangeProtocolError) as info:
        ad.parse_snapshot("tBTCUSD", "[]")
    assert info.value.exchange == EX


def test_symbol_fs() -> None:
    ad = BitfinexV2()
    assert ad.symbol_fs("tBTCUSD") == "tBTCUSD"
    assert ad.symbol_fs("tAVAX:USD") == "tAVAXUSD"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tBTCUSD", "tBTCUSD"),
        ("BTC/USD", "tBTCUSD"),
        ("btcusd", "tBTCUSD"),
        ("BTC-USD", "tBTCUSD"),
        ("btc_usd", "tBTCUSD"),
        (" eth/usd ", "tETHUSD"),
        ("TRXUSD", "tTRXUSD"),
        ("AVAX/USD", "tAVAX:USD"),
        ("avax-usd", "tAVAX:USD"),
        ("tAVAX:USD", "tAVAX:USD"),
        ("TESTBTC/TESTUSD", "tTESTBTC:TESTUSD"),
        ("tTESTBTC:TESTUSD", "tTESTBTC:TESTUSD"),
        ("BTC:USD", "tBTCUSD"),
    ],
)
def test_normalize_symbol(text: str, expected: str) -> None:
    assert BitfinexV2().normalize_symbol(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "BTC",
        "BTCUSDT",
        "tbtcusd",
        "BTC/",
        "/USD",
        "BTC/USD/EUR",
        "BTC USD!",
        "ビット/USD",
        "t",
        "x" * 100,
    ],
)
def test_normalize_symbol_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError, match="BTC/USD"):
        BitfinexV2().normalize_symbol(text)


@pytest.mark.parametrize("text", ["fUSD", "fBTC", "fUST"])
def test_normalize_symbol_rejects_funding(text: str) -> None:
    with pytest.raises(ConfigError, match="funding"):
        BitfinexV2().normalize_symbol(text)


def test_subscribe_messages_default() -> None:
    msgs = BitfinexV2().subscribe_messages(["BTC/USD", "tAVAX:USD"], 25)
    assert msgs == [
        '{"event":"conf","flags":196608}',
        '{"event":"subscribe","channel":"book","symbol":"tBTCUSD","prec":"P0","freq":"F0","len":"25"}',
        '{"event":"subscribe","channel":"trades","symbol":"tBTCUSD"}',
        '{"event":"subscribe","channel":"book","symbol":"tAVAX:USD","prec":"P0","freq":"F0","len":"25"}',
        '{"event":"subscribe","channel":"trades","symbol":"tAVAX:USD"}',
    ]
    assert OB_CHECKSUM | SEQ_ALL == 196608


@pytest.mark.parametrize(
    ("checksum", "seq_all", "flags"),
    [(True, True, 196608), (True, False, 131072), (False, True, 65536), (False, False, 0)],
)
def test_subscribe_conf_flags(checksum: bool, seq_all: bool, flags: int) -> None:
    ad = BitfinexV2(checksum=checksum, seq_all=seq_all, prec="P2")
    msgs = ad.subscribe_messages(["tBTCUSD"], 100)
    assert json.loads(msgs[0]) == {"event": "conf", "flags": flags}
    assert json.loads(msgs[1]) == {
        "event": "subscribe",
        "channel": "book",
        "symbol": "tBTCUSD",
        "prec": "P2",
        "freq": "F0",
        "len": "100",
    }


@pytest.mark.parametrize("depth", [1, 25, 100, 250])
def test_subscribe_valid_depths(depth: int) -> None:
    msgs = BitfinexV2().subscribe_messages(["tBTCUSD"], depth)
    assert json.loads(msgs[1])["len"] == str(depth)


@pytest.mark.parametrize("depth", [0, 10, 24, 50, 500, -25])
def test_subscribe_rejects_depth(depth: int) -> None:
    with pytest.raises(ConfigError, match="depth"):
        BitfinexV2().subscribe_messages(["tBTCUSD"], depth)


def test_subscribe_channel_limit() -> None:
    ad = BitfinexV2()
    pairs = [f"tA{i:02d}USD" for i in range(16)]
    assert len(ad.subscribe_messages(pairs[:15], 25)) == 31
    with pytest.raises(ConfigError, match="30 channel subscriptions per connection"):
        ad.subscribe_messages(pairs, 25)


def test_subscribe_dedupes_and_validates_symbols() -> None:
    ad = BitfinexV2()
    assert len(ad.subscribe_messages(["BTC/USD", "tBTCUSD", "btcusd"], 25)) == 3
    with pytest.raises(ConfigError):
        ad.subscribe_messages(["fUSD"], 25)
    with pytest.raises(ConfigError):
        ad.subscribe_messages([], 25)


@pytest.mark.parametrize("prec", ["R0", "P5", "p0", ""])
def test_constructor_rejects_precision(prec: str) -> None:
    with pytest.raises(ConfigError, match="prec"):
        BitfinexV2(prec=prec)


def test_new_sync_engine() -> None:
    engine = BitfinexV2().new_sync_engine("BTC/USD", 100)
    assert isinstance(engine, ChecksumSync)
    assert engine.symbol == "tBTCUSD"
    assert engine.depth == 100
    assert engine.state is SyncState.CONNECTING


# -- events -------------------------------------------------------------------------------
def test_info_greeting() -> None:
    assert BitfinexV2().parse(INFO) == [VenueStatus(EX, "info", "API version 2")]


def test_info_platform_maintenance() -> None:
    frame = '{"event":"info","version":2,"serverId":"x","platform":{"status":0}}'
    assert BitfinexV2().parse(frame) == [VenueStatus(EX, "maintenance", "platform in maintenance")]


@pytest.mark.parametrize(
    ("code", "kind"),
    [(20051, "reconnect"), (20060, "maintenance"), (20061, "resume"), (5000, "info")],
)
def test_info_codes(code: int, kind: str) -> None:
    frame = json.dumps({"event": "info", "code": code, "msg": "Stop/Restart Websocket Server"})
    assert BitfinexV2().parse(frame) == [VenueStatus(EX, kind, "Stop/Restart Websocket Server", code)]


def test_conf_ok_sets_flags() -> None:
    ad = BitfinexV2()
    assert ad.parse(CONF_OK) == [Ack(EX, "conf", None, True, "flags 65536", raw=CONF_OK)]
    ad.parse(subscribed(5, "book", "tBTCUSD", len="25"))
    diff = one(ad.parse("[5,[100,1,2],7]"))
    assert isinstance(diff, BookDiff)
    assert diff.seq == 7


def test_conf_refused() -> None:
    frame = '{"event":"conf","status":"FAILED","flags":65536}'
    ack = one(BitfinexV2().parse(frame))
    assert ack == Ack(EX, "conf", None, False, "conf refused: status FAILED, flags 65536", raw=frame)


def test_subscribed_book() -> None:
    assert BitfinexV2().parse(SUB_BOOK) == [
        Ack(EX, "book", "tETHUSD", True, "", depth=25, channel_id=10092, raw=SUB_BOOK)
    ]


def test_subscribed_trades() -> None:
    assert BitfinexV2().parse(SUB_TRADES) == [
        Ack(EX, "trades", "tBFTUSD", True, "", depth=None, channel_id=232959, raw=SUB_TRADES)
    ]


def test_unsubscribed_forgets_channel() -> None:
    ad = adapter(None, SUB_BOOK)
    assert ad.parse(UNSUB) == [Ack(EX, "book", "tETHUSD", True, "unsubscribed", channel_id=10092, raw=UNSUB)]
    with pytest.raises(ExchangeProtocolError, match="unknown channel"):
        ad.parse("[10092,[100,1,2]]")


def test_unsubscribed_unknown_channel() -> None:
    ack = one(BitfinexV2().parse(UNSUB))
    assert ack == Ack(EX, "", None, True, "unsubscribed", channel_id=10092, raw=UNSUB)


def test_error_event() -> None:
    frame = '{"event":"error","msg":"subscribe: dup","code":10301,"channel":"book","symbol":"tBTCUSD"}'
    assert BitfinexV2().parse(frame) == [Ack(EX, "book", "tBTCUSD", False, "10301 subscribe: dup", raw=frame)]
    bare = '{"event":"error","msg":"Unknown event","code":10000}'
    assert BitfinexV2().parse(bare) == [Ack(EX, "", None, False, "10000 Unknown event", raw=bare)]


def test_pong_and_auth() -> None:
    assert BitfinexV2().parse(PONG) == [VenueStatus(EX, "pong")]
    auth = '{"event":"auth","status":"OK","chanId":0,"userId":1}'
    assert BitfinexV2().parse(auth) == [Unknown(EX, auth)]


# -- book channel -------------------------------------------------------------------------
def test_book_snapshot_golden() -> None:
    ad = adapter(None, XRP_SUB)
    snap = one(ad.parse(XRP_SNAPSHOT))
    assert isinstance(snap, BookSnapshot)
    assert (snap.exchange, snap.symbol, snap.ts_ms, snap.checksum, snap.seq) == (
        EX,
        "tXRPBTC",
        None,
        None,
        None,
    )
    assert snap.raw == XRP_SNAPSHOT
    assert len(snap.bids) == 18 and len(snap.asks) == 25
    assert tuple(snap.bids[0]) == ("0.0000011", "271510.49")
    assert tuple(snap.bids[5]) == ("0.00000105", "205000")
    assert tuple(snap.asks[0]) == ("0.00000111", "4847.13")
    assert tuple(snap.asks[-1]) == ("0.00000193", "2422")


def test_e_notation_text_survives() -> None:
    snap = one(adapter(None, XRP_SUB).parse(XRP_SNAPSHOT))
    assert isinstance(snap, BookSnapshot)
    prices = [level[0] for level in snap.bids]
    assert prices[10:13] == ["7e-7", "6.6e-7", "6e-7"]
    assert prices[-1] == "1e-8"
    assert ("0.000001", "21000") in [tuple(level) for level in snap.bids]


def test_empty_book_snapshot() -> None:
    snap = one(adapter(None, XRP_SUB).parse("[81757,[]]"))
    assert snap == BookSnapshot(EX, "tXRPBTC", [], [], None, raw="[81757,[]]")


@pytest.mark.parametrize(
    ("frame", "bids", "asks"),
    [
        (XRP_UPDATE, (("0.0000011", "266122.94"),), ()),
        ("[81757,[0.00000111,2,-4800.5]]", (), (("0.00000111", "4800.5"),)),
        ("[81757,[0.0000011,0,1]]", (("0.0000011", "0"),), ()),
        ("[81757,[0.00000111,0,-1]]", (), (("0.00000111", "0"),)),
        ("[81757,[7e-7,1,1e-8]]", (("7e-7", "1e-8"),), ()),
    ],
)
def test_book_update_golden(frame: str, bids: tuple[Any, ...], asks: tuple[Any, ...]) -> None:
    diff = one(adapter(None, XRP_SUB).parse(frame))
    assert diff == BookDiff(EX, "tXRPBTC", bids, asks, None, raw=frame)


def test_checksum_frame() -> None:
    assert adapter(None, XRP_SUB).parse(XRP_CS) == [
        BookChecksum(EX, "tXRPBTC", -1175357890, None, raw=XRP_CS)
    ]


def test_book_heartbeat() -> None:
    assert adapter(None, XRP_SUB).parse('[81757,"hb"]') == [VenueStatus(EX, "heartbeat", symbol="tXRPBTC")]


def test_book_with_seq_and_timestamp() -> None:
    ad = adapter(SEQ_ALL | TIMESTAMP, subscribed(6959, "book", "tETHUSD", prec="P0", len="25"))
    diff = one(ad.parse(TARDIS_BOOK))
    assert diff == BookDiff(
        EX, "tETHUSD", (), (("219.11", "18.10913638"),), 1564617601214, raw=TARDIS_BOOK, seq=45
    )
    events = ad.parse(TARDIS_HB)
    assert events == [
        SequenceBreak(EX, 46, 3603),
        VenueStatus(EX, "heartbeat", symbol="tETHUSD", seq=3603),
    ]
    cs = ad.parse('[6959,"cs",-12345,3604,1569715249703]')
    assert cs == [
        BookChecksum(
            EX, "tETHUSD", -12345, 1569715249703, raw='[6959,"cs",-12345,3604,1569715249703]', seq=3604
        )
    ]


def test_timestamp_without_seq() -> None:
    ad = adapter(TIMESTAMP, subscribed(6959, "book", "tETHUSD", len="25"))
    diff = one(ad.parse("[6959,[219.11,3,5],1564617601214]"))
    assert isinstance(diff, BookDiff)
    assert (diff.ts_ms, diff.seq) == (1564617601214, None)


def test_appended_fields_are_tolerated() -> None:
    # "Never hardcode array lengths" (§C.1): fields beyond the flags' ones are ignored.
    ad = adapter(SEQ_ALL, XRP_SUB)
    diff = one(ad.parse("[81757,[0.0000011,12,266122.94,99],1,42]"))
    assert isinstance(diff, BookDiff)
    assert diff.bids == (("0.0000011", "266122.94"),)
    assert diff.seq == 1


def test_raw_books_refused() -> None:
    ad = adapter(SEQ_ALL, subscribed(9, "book", "tBTCUSD", prec="R0", len="25"))
    with pytest.raises(ExchangeProtocolError, match="raw books not supported"):
        ad.parse("[9,[[123,100,1],[124,101,-1]],1]")
    with pytest.raises(ExchangeProtocolError, match="raw books not supported"):
        ad.parse("[9,[125,100,1],2]")
    # The frames were counted: no break on the next one.
    assert ad.parse('[9,"hb",3]') == [VenueStatus(EX, "heartbeat", symbol="tBTCUSD", seq=3)]


# -- trades channel -----------------------------------------------------------------------
def test_trades_snapshot() -> None:
    ad = adapter(None, SUB_TRADES)
    frame = (
        "[232959,[[669899159,1618665870435,166.391496,0.076989],"
        "[669899158,1618665870435,-6961.461304,0.076985]]]"
    )
    assert ad.parse(frame) == [
        Trade(EX, "tBFTUSD", 1618665870435, "0.076989", "166.391496", "buy", 669899159, frame, True),
        Trade(EX, "tBFTUSD", 1618665870435, "0.076985", "6961.461304", "sell", 669899158, frame, True),
    ]
    assert ad.parse("[232959,[]]") == []


def test_trade_te_with_seq_and_timestamp() -> None:
    ad = adapter(SEQ_ALL | TIMESTAMP, subscribed(89, "trades", "tBTCUSD"))
    assert ad.parse(TARDIS_TE) == [
        Trade(
            EX,
            "tBTCUSD",
            1564617600709,
            "10087.98969503",
            "0.00705845",
            "buy",
            382489563,
            TARDIS_TE,
            False,
            18,
        )
    ]


def test_trade_te_sell_and_tu_unknown() -> None:
    ad = adapter(None, SUB_TRADES)
    te = '[232959,"te",[401597395,1574694475039,-0.005,7244.9]]'
    assert ad.parse(te) == [Trade(EX, "tBFTUSD", 1574694475039, "7244.9", "0.005", "sell", 401597395, te)]
    tu = '[232959,"tu",[401597395,1574694475039,-0.005,7244.9]]'
    assert ad.parse(tu) == [Unknown(EX, tu)]
    assert ad.parse('[232959,"hb"]') == [VenueStatus(EX, "heartbeat", symbol="tBFTUSD")]


def test_ticker_unknown_and_candles_parsed_with_sequence() -> None:
    ad = adapter(
        SEQ_ALL,
        subscribed(232949, "ticker", "tBFTUSD", pair="BFTUSD"),
        subscribed(77, "candles", key="trade:1m:tBTCUSD"),
    )
    ticker = (
        "[232949,[0.068965,60157.36709703,0.0774,48578.50804052,0.001969,0.0262,"
        "0.076989,101459.39453471,0.0828,0.068961],1]"
    )
    assert ad.parse(ticker) == [Unknown(EX, ticker)]
    candle = "[77,[1574698260000,7379.785503,7383.8,7388.3,7379.785503,1.68829482],2]"
    assert ad.parse(candle) == [
        Candle(EX, "tBTCUSD", "1m", 1574698260000, "7379.785503", "7388.3", "7379.785503", "7383.8",
               "1.68829482", None, None, False)
    ]  # fmt: skip
    assert ad.parse('[77,"hb",3]') == [VenueStatus(EX, "heartbeat", symbol="tBTCUSD", seq=3)]
    # A candle frame with a skipped sequence number reports the break first.
    [brk, _] = ad.parse("[77,[1574698260000,7379.785503,7383.8,7388.3,7379.785503,1.7],5]")
    assert brk == SequenceBreak(EX, 4, 5)


def test_candles_subscribed_takes_symbol_from_key() -> None:
    frame = '{"event":"subscribed","channel":"candles","chanId":343351,"key":"trade:1m:tBTCUSD"}'
    assert BitfinexV2().parse(frame) == [
        Ack(EX, "candles", "tBTCUSD", True, "", channel_id=343351, raw=frame)
    ]


# -- sequence numbers ---------------------------------------------------------------------
def test_contiguous_sequence_has_no_break() -> None:
    ad = primed()
    out: list[Event] = []
    out += ad.parse("[1,[[100,1,1],[101,1,-1]],1]")
    out += ad.parse('[2,"te",[5,1000,1,100],2]')
    out += ad.parse("[3,[1,2,3,4,5,6,7,8,9,10],3]")
    out += ad.parse('[1,"hb",4]')
    out += ad.parse("[1,[100,2,3],5]")
    assert not any(isinstance(e, SequenceBreak) for e in out)
    assert [getattr(e, "seq", None) for e in out] == [1, 2, None, 4, 5]


def test_skipped_sequence_yields_break_first() -> None:
    ad = primed()
    ad.parse("[1,[[100,1,1],[101,1,-1]],1]")
    ad.parse("[1,[100,1,2],2]")
    events = ad.parse("[1,[100,1,3],4]")
    assert events[0] == SequenceBreak(EX, 3, 4)
    assert isinstance(events[1], BookDiff) and events[1].seq == 4
    assert len(events) == 2
    # Counting continues from the frame that broke.
    assert len(ad.parse("[1,[100,1,4],5]")) == 1


def test_repeated_sequence_is_a_break() -> None:
    ad = primed()
    ad.parse("[1,[],1]")
    events = ad.parse("[1,[],1]")
    assert events[0] == SequenceBreak(EX, 2, 1)


def test_first_sequence_sets_the_base() -> None:
    ad = primed()
    assert len(ad.parse('[1,"hb",17]')) == 1
    assert len(ad.parse('[1,"hb",18]')) == 1


def test_skipped_sequence_resyncs_every_book_engine() -> None:
    ad = adapter(
        SEQ_ALL | OB_CHECKSUM,
        subscribed(1, "book", "tBTCUSD", len="25"),
        subscribed(2, "book", "tETHUSD", len="25"),
    )
    engines: dict[str, SyncEngine] = {s: ad.new_sync_engine(s, 25) for s in ("tBTCUSD", "tETHUSD")}
    outputs = []
    for frame in ("[1,[[100,1,1],[101,1,-1]],1]", "[2,[[10,1,1],[11,1,-1]],2]", '[1,"hb",4]'):
        outputs += route(frame, ad, engines)
    gaps = [o for o in outputs if isinstance(o, GapDetected)]
    assert sorted(g.symbol for g in gaps) == ["tBTCUSD", "tETHUSD"]
    assert all((g.expected, g.got) == (3, 4) for g in gaps)
    assert all(e.state is SyncState.RESYNCING and e.stats.gaps == 1 for e in engines.values())


def test_heartbeat_before_subscribed_answer() -> None:
    # Real capture: [232954,"hb",139] arrives before chanId 232954's "subscribed".
    ad = primed()
    ad.parse('[1,"hb",138]')
    assert ad.parse('[232954,"hb",139]') == [VenueStatus(EX, "heartbeat", seq=139)]
    assert len(ad.parse('[1,"hb",140]')) == 1


def test_unknown_channel_data_counts_but_raises() -> None:
    ad = primed()
    ad.parse('[1,"hb",1]')
    with pytest.raises(ExchangeProtocolError, match="unknown channel id 999") as info:
        ad.parse("[999,[100,1,1],2]")
    assert info.value.exchange == EX
    assert info.value.frame == "[999,[100,1,1],2]"
    assert len(ad.parse('[1,"hb",3]')) == 1


def test_break_on_an_unusable_frame_is_reported_by_the_next() -> None:
    ad = primed()
    ad.parse('[1,"hb",1]')
    with pytest.raises(ExchangeProtocolError):
        ad.parse("[999,[100,1,1],5]")
    events = ad.parse('[1,"hb",6]')
    assert events[0] == SequenceBreak(EX, 2, 6)


def test_malformed_frame_counts_as_lost() -> None:
    # A book frame we cannot read is a lost update: the next frame reports a break.
    ad = primed()
    ad.parse('[1,"hb",1]')
    with pytest.raises(ExchangeProtocolError):
        ad.parse("[1,[100,{},1],2]")
    events = ad.parse('[1,"hb",3]')
    assert events[0] == SequenceBreak(EX, 2, 3)


# -- checksums through the sync engine ----------------------------------------------------
def route(frame: str, ad: BitfinexV2, engines: dict[str, SyncEngine]) -> list[Any]:
    """Parse one frame and feed its events to the engines: breaks to all, the rest by symbol."""
    outputs: list[Any] = []
    for event in ad.parse(frame):
        if isinstance(event, SequenceBreak):
            for engine in engines.values():
                outputs += engine.receive(event)
            continue
        symbol = getattr(event, "symbol", None)
        if symbol in engines:
            outputs += engines[symbol].receive(event)
    return outputs


def test_xrpbtc_checksum_vector() -> None:
    ad = adapter(OB_CHECKSUM)
    engines = {"tXRPBTC": ad.new_sync_engine("tXRPBTC", 25)}
    for frame in (XRP_SUB, XRP_SNAPSHOT, XRP_UPDATE, XRP_CS):
        route(frame, ad, engines)
    engine = engines["tXRPBTC"]
    assert engine.stats.diffs_applied == 1
    assert engine.stats.checksums_verified == 1
    assert engine.stats.checksum_mismatches == 0
    assert engine.state is SyncState.SYNCED
    assert engine.book.bids.best() == ("0.0000011", "266122.94")


def test_simple_checksum_vector() -> None:
    ad = adapter(OB_CHECKSUM, subscribed(7, "book", "tBTCUSD", prec="P0", len="25"))
    snap = one(ad.parse("[7,[[6000,1,1],[5900,1,2],[6100,1,-3],[6200,1,-4]]]"))
    assert isinstance(snap, BookSnapshot)
    assert [tuple(x) for x in snap.bids] == [("6000", "1"), ("5900", "2")]
    assert [tuple(x) for x in snap.asks] == [("6100", "3"), ("6200", "4")]
    assert bitfinex_checksum(snap.bids, snap.asks) == 1756193398
    engines = {"tBTCUSD": ad.new_sync_engine("tBTCUSD", 25)}
    engines["tBTCUSD"].receive(snap)
    route('[7,"cs",1756193398]', ad, engines)
    assert engines["tBTCUSD"].stats.checksums_verified == 1
    route('[7,"cs",1756193399]', ad, engines)
    assert engines["tBTCUSD"].stats.checksum_mismatches == 1


# -- real captures ------------------------------------------------------------------------
def recv_frames(path: Path) -> list[str]:
    with open_capture(path) as reader:
        return [rec.data for rec in reader if rec.kind == "ws_recv"]


def expected_kinds(frames: list[str]) -> tuple[Counter[str], list[int]]:
    """Event kinds the frames should give, counted with plain json (independent of the adapter)."""
    counts: Counter[str] = Counter()
    channels: dict[int, str] = {}
    seqs: list[int] = []
    flags = 0
    for frame in frames:
        msg = json.loads(frame)
        if isinstance(msg, dict):
            if msg["event"] == "subscribed":
                channels[msg["chanId"]] = msg["channel"]
                counts["Ack"] += 1
            elif msg["event"] == "conf":
                flags = msg["flags"]
                counts["Ack"] += 1
            else:
                counts["VenueStatus"] += 1
            continue
        if flags & SEQ_ALL:
            seqs.append(msg[-1])
        channel, body = channels.get(msg[0]), msg[1]
        if body == "hb":
            counts["VenueStatus"] += 1
        elif body == "cs":
            counts["BookChecksum"] += 1
        elif channel == "book":
            counts["BookSnapshot" if not body or isinstance(body[0], list) else "BookDiff"] += 1
        elif channel == "trades":
            counts["Trade"] += len(body) if isinstance(body, list) else int(body == "te")
            counts["Unknown"] += int(body == "tu")
        else:
            counts["Unknown"] += 1
    return counts, seqs


@pytest.mark.parametrize("name", [BITFINEX_7, BITFINEX_VECTOR])
def test_real_capture_parses(real_capture: Any, name: str) -> None:
    frames = recv_frames(real_capture(name))
    expected, expected_seqs = expected_kinds(frames)
    ad = BitfinexV2()
    got: Counter[str] = Counter()
    for frame in frames:
        wire_seq = json.loads(frame)[-1] if expected_seqs and frame.startswith("[") else None
        for event in ad.parse(frame):
            got[type(event).__name__] += 1
            assert getattr(event, "raw", frame) == frame
            assert getattr(event, "seq", wire_seq) == wire_seq
    assert got == expected
    assert "SequenceBreak" not in got
    if name == BITFINEX_7:
        assert expected_seqs == list(range(1, 1671))
        assert got["BookSnapshot"] == 7 and got["BookDiff"] == 1593 and got["BookChecksum"] == 0
    else:
        assert (got["BookSnapshot"], got["BookDiff"], got["BookChecksum"]) == (1, 1, 1)


def replay(path: Path) -> dict[str, SyncEngine]:
    """Feed a capture through the adapter into one engine per subscribed book."""
    ad = BitfinexV2()
    engines: dict[str, SyncEngine] = {}
    for frame in recv_frames(path):
        events = ad.parse(frame)
        for event in events:
            if isinstance(event, Ack) and event.channel == "book" and event.symbol and event.ok:
                engines.setdefault(event.symbol, ad.new_sync_engine(event.symbol, event.depth or 25))
        for event in events:
            if isinstance(event, SequenceBreak):
                for engine in engines.values():
                    engine.receive(event)
            elif (symbol := getattr(event, "symbol", None)) in engines:
                engines[symbol].receive(event)
    return engines


def test_real_7pairs_sync(real_capture: Any) -> None:
    engines = replay(real_capture(BITFINEX_7))
    assert len(engines) == 7
    assert sum(e.stats.snapshots for e in engines.values()) == 7
    assert sum(e.stats.diffs_applied for e in engines.values()) == 1593
    assert sum(e.stats.gaps for e in engines.values()) == 0
    assert sum(e.stats.checksums_verified + e.stats.checksum_mismatches for e in engines.values()) == 0
    assert all(e.state is SyncState.SYNCED for e in engines.values())
    assert sum(e.stats.crossed_states for e in engines.values()) == 0


def test_real_xrpbtc_vector_sync(real_capture: Any) -> None:
    engines = replay(real_capture(BITFINEX_VECTOR))
    assert list(engines) == ["tXRPBTC"]
    stats = engines["tXRPBTC"].stats
    assert (stats.diffs_applied, stats.checksums_verified, stats.checksum_mismatches, stats.gaps) == (
        1,
        1,
        0,
        0,
    )


# -- robustness ---------------------------------------------------------------------------
def parse_or_protocol_error(ad: BitfinexV2, frame: str) -> None:
    try:
        events = ad.parse(frame)
    except ExchangeProtocolError as exc:
        assert exc.exchange == EX
        assert len(exc.frame) <= 512
        return
    assert isinstance(events, list)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_junk_text(text: str) -> None:
    parse_or_protocol_error(primed(), text)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.sampled_from(["hb", "cs", "te", "tu", "-1", "0"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 2, 3, 4, 999]), st.lists(_json_values, max_size=4))
def test_junk_on_known_channels(chan: int, rest: list[Any]) -> None:
    parse_or_protocol_error(primed(), json.dumps([chan, *rest]))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        ["info", "conf", "subscribed", "unsubscribed", "error", "pong", "auth", "other", 5, None]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "chanId",
                "channel",
                "symbol",
                "len",
                "prec",
                "code",
                "msg",
                "status",
                "flags",
                "platform",
                "version",
            ]
        ),
        _json_values,
        max_size=6,
    ),
)
def test_junk_events(event: Any, fields: dict[str, Any]) -> None:
    parse_or_protocol_error(primed(), json.dumps({"event": event, **fields}))


@pytest.mark.parametrize(
    "frame",
    [XRP_SNAPSHOT, XRP_UPDATE, XRP_CS, TARDIS_TE, TARDIS_BOOK, SUB_BOOK, INFO, CONF_OK],
)
def test_every_prefix_of_real_frames(frame: str) -> None:
    ad = adapter(
        SEQ_ALL | TIMESTAMP,
        XRP_SUB,
        subscribed(89, "trades", "tBTCUSD"),
        subscribed(6959, "book", "tETHUSD", len="25"),
    )
    for end in range(len(frame)):
        parse_or_protocol_error(ad, frame[:end])


@pytest.mark.parametrize("frame", FOREIGN)
def test_frames_of_other_venues(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        primed().parse(frame)


def test_huge_frame() -> None:
    frame = "[1,[" + ",".join(["[1,1,1]"] * (10 * 1024 * 1024 // 8)) + "]]"
    assert len(frame) > MAX_FRAME_CHARS
    with pytest.raises(ExchangeProtocolError, match="exceeds") as info:
        primed().parse(frame)
    assert len(info.value.frame) == 512


@pytest.mark.parametrize(
    "frame",
    [
        "\udcff\udcfe",
        "\x00\x00",
        "\ufeff[1,[]]",
        '[1,["\ud800",1,1]]',
        '[1,[1,"\udcff",1]]',
        "ÿþ[",
        "[1,[100,1,2]]\x00",
    ],
)
def test_non_utf8_ish_text(frame: str) -> None:
    parse_or_protocol_error(primed(), frame)


@pytest.mark.parametrize(
    "frame",
    ["1", "-1.5", "null", "true", '"hb"', "NaN", "Infinity", "-Infinity", "[]", "{}", "[1]", "", " "],
)
def test_json_scalars_and_empties(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        primed().parse(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000 + "]" * 100_000,
        "[1," + "[" * 100_000 + "]" * 100_000 + "]",
        '{"event":' + "[" * 50_000 + "]" * 50_000 + "}",
    ],
)
def test_deeply_nested(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        primed().parse(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "[1,[100,1,NaN],1]",
        '[1,"cs",1.5,1]',
        '[1,"cs",-12,"x"]',
        "[1,[100,1],1]",
        "[1,[[100,1,1],[101,1]],1]",
        '[2,"te",[1,2,3],1]',
        '[2,"te",[1,2,[3],4],1]',
        "[2,[1,2,3,4],1]",
        '[1,"te",[1,2,3,4],1]',
        '[2,"cs",5,1]',
        '[1,"xx",5,1]',
        "[1,5,1]",
        '["a",[],1]',
        "[1.5,[],1]",
        "[[1],[],1]",
        "[1,[]]",
        '[1,"hb"]',
        '{"event":"subscribed","channel":"book","chanId":"x"}',
        '{"event":"subscribed","channel":"book","chanId":5}',
        '{"event":"subscribed","channel":[5],"chanId":5}',
        '{"event":"info","code":"abc"}',
        '{"event":"unknown"}',
        '{"no":"event"}',
    ],
)
def test_malformed_frames_raise(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        primed().parse(frame)
    assert info.value.frame == frame


@pytest.mark.parametrize("frame", ['[81757,"cs"]', '[81757,"te"]', "[81757]"])
def test_missing_payload_without_flags(frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        adapter(None, XRP_SUB).parse(frame)


def test_subscribed_trades_without_symbol() -> None:
    with pytest.raises(ExchangeProtocolError, match="without symbol"):
        BitfinexV2().parse('{"event":"subscribed","channel":"trades","chanId":5}')


def test_normalize_symbol_rejects_non_text() -> None:
    with pytest.raises(ConfigError):
        BitfinexV2().normalize_symbol(123)  # type: ignore[arg-type]
