"""Kraken Spot WebSocket v2 adapter (``mmdata.exchanges.kraken``): PROTOCOLS.md §B.

Golden frames are the examples quoted in PROTOCOLS.md (Kraken docs and real frames of
the k2 capture) where one exists; frames marked *synthetic* follow the documented shape.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.book.checksum import kraken_v2_checksum
from mmdata.book.sync import ChecksumMismatch, ChecksumSync, SyncState
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges.base import Exchange
from mmdata.exchanges.kraken import BOOK_DEPTHS, MAX_FRAME_CHARS, KrakenV2
from mmdata.types import (
    Ack,
    BookDiff,
    BookSnapshot,
    Event,
    Instrument,
    Trade,
    Unknown,
    VenueStatus,
)
from tests.vectors import KRAKEN_GUIDE_ASKS, KRAKEN_GUIDE_BIDS, MATIC_ASKS, MATIC_BIDS

KRAKEN_BOOK10 = "kraken_btcusd_book10_2023.capture.jsonl.gz"

# -- golden frames (PROTOCOLS.md §B, verbatim unless marked synthetic) ------------------------------
MATIC_SNAPSHOT = (
    '{"channel":"book","type":"snapshot","data":[{"symbol":"MATIC/USD",'
    '"bids":[{"price":0.5666,"qty":4831.75496356},{"price":0.5665,"qty":6658.22734739},'
    '{"price":0.5664,"qty":18724.91513344},{"price":0.5663,"qty":11563.92544914},'
    '{"price":0.5662,"qty":14006.65365711},{"price":0.5661,"qty":17454.85679807},'
    '{"price":0.566,"qty":18097.1547},{"price":0.5659,"qty":33644.89175666},'
    '{"price":0.5658,"qty":148.3464},{"price":0.5657,"qty":606.70854372}],'
    '"asks":[{"price":0.5668,"qty":4410.79769741},{"price":0.5669,"qty":4655.40412487},'
    '{"price":0.567,"qty":49844.89424998},{"price":0.5671,"qty":24306.41678},'
    '{"price":0.5672,"qty":29783.25223475},{"price":0.5673,"qty":57234.71239278},'
    '{"price":0.5674,"qty":45065.04744},{"price":0.5675,"qty":5912.76380354},'
    '{"price":0.5676,"qty":42514.92434778},{"price":0.5677,"qty":36304.0847022}],'
    '"checksum":2439117997,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)
MATIC_UPDATE = (
    '{"channel":"book","type":"update","data":[{"symbol":"MATIC/USD",'
    '"bids":[{"price":0.5657,"qty":1098.3947558}],"asks":[],'
    '"checksum":2114181697,"timestamp":"2023-10-06T17:35:55.440295Z"}]}'
)
MATIC_TS = 1696613755440  # 2023-10-06T17:35:55.440295Z, microseconds truncated
# Synthetic: the instrument frame that carries the MATIC/USD precisions pinned by the example (4/8).
MATIC_INSTRUMENT = (
    '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"MATIC/USD",'
    '"base":"MATIC","quote":"USD","status":"online","qty_precision":8,"price_precision":4}]}}'
)

STATUS_FRAME = (
    '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",'
    '"api_version":"v2","connection_id":17408390984690501469}]}'
)
INSTRUMENT_FRAME = (
    '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{"symbol":"BTC/USD",'
    '"base":"BTC","quote":"USD","status":"online","qty_precision":8,"qty_increment":1e-08,'
    '"price_precision":1,"cost_precision":5,"marginable":true,"has_index":true,'
    '"ws_display_price_precision":1,"cost_min":0.5,"margin_initial":0.1,"position_limit_long":350,'
    '"position_limit_short":250,"tick_size":0.1,"price_increment":0.1,"qty_min":5e-05}]}}'
)
BOOK_ACK = (
    '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"ALGO/USD"},'
    '"success":true,"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z"}'
)
TRADE_DOC = (
    '{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell","price":0.5117,'
    '"qty":40.0,"ord_type":"market","trade_id":4665906,"timestamp":"2023-09-25T07:49:37.708706Z"}]}'
)
TRADE_REAL = (
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"sell","price":78500.6,'
    '"qty":0.00035522,"ord_type":"market","trade_id":105995616,"timestamp":"2026-08-26T11:55:58.096474Z"}]}'
)
PONG = (
    '{"method":"pong","req_id":101,"time_in":"2023-09-24T14:10:23.799685Z",'
    '"time_out":"2023-09-24T14:10:23.799703Z"}'
)
HEARTBEAT = '{"channel":"heartbeat"}'

# Frames of the other two venues, verbatim from PROTOCOLS.md §A and §C.
FOREIGN_FRAMES = [
    '{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}',
    '{"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":1672515782136,"m":true,"M":true}',
    '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}',
    '{"result":null,"id":1}',
    '{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}',
    '{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","btcusdt@depth"],"id":1}',
    '{"event":"info","version":2,"serverId":"083bd8d4-aca7-4690-a573-eabfc8103de8","platform":{"status":1}}',
    '{"event":"subscribed","channel":"book","chanId":10092,"symbol":"tETHUSD","prec":"P0","freq":"F0",'
    '"len":"25","subId":123,"pair":"ETHUSD"}',
    '{"event":"subscribed","channel":"trades","chanId":232959,"symbol":"tBFTUSD","pair":"BFTUSD"}',
    '{"event":"pong","ts":1511545528111,"cid":1234}',
    '{"event":"conf","status":"OK","flags":65536}',
    "[81757,[0.0000011,12,266122.94]]",
    '[81757,"cs",-1175357890]',
    '[6959,"hb",3603,1569715249702]',
    '[89,"te",[382489563,1564617600709,0.00705845,10087.98969503],18,1564617600784]',
]


@pytest.fixture
def kraken() -> KrakenV2:
    return KrakenV2()


def one(events: list[Event]) -> Event:
    assert len(events) == 1, events
    return events[0]


def ms(text: str) -> int:
    """Reference conversion of an RFC 3339 time to epoch ms (microseconds truncated)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def capture_frames(path: Path) -> list[str]:
    """Received frames of a capture, read with plain json (independently of mmdata.store)."""
    frames = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        assert header["exchange"] == "kraken"
        for line in fh:
            rec = json.loads(line)
            if rec["kind"] == "ws_recv":
                frames.append(rec["data"])
    return frames


# -- construction, symbols, subscriptions ----------------------------------------------------------
def test_defaults_and_overrides() -> None:
    k = KrakenV2()
    assert (k.name, k.ws_base, k.rest_base) == ("kraken", "wss://ws.kraken.com/v2", "https://api.kraken.com")
    k2 = KrakenV2(ws_base="ws://127.0.0.1:9000/v2", rest_base="http://127.0.0.1:9001")
    assert (k2.ws_base, k2.rest_base) == ("ws://127.0.0.1:9000/v2", "http://127.0.0.1:9001")
    assert KrakenV2().ws_base == "wss://ws.kraken.com/v2"  # overrides do not leak into the class
    assert isinstance(k, Exchange)


def test_registry_builds_fresh_instances() -> None:
    from mmdata.exchanges import get

    a = get("Kraken", ws_base="ws://x/v2")
    b = get("kraken")
    assert isinstance(a, KrakenV2) and isinstance(b, KrakenV2) and a is not b
    assert a.ws_base == "ws://x/v2" and b.ws_base == "wss://ws.kraken.com/v2"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BTC/USD", "BTC/USD"),
        (" btc/usd ", "BTC/USD"),
        ("BTC-USD", "BTC/USD"),
        ("btc_usd", "BTC/USD"),
        ("XBT/USD", "BTC/USD"),
        ("xbt-eur", "BTC/EUR"),
        ("ETH/XBT", "ETH/BTC"),
        ("XDG/USD", "DOGE/USD"),
        ("MATIC/USD", "MATIC/USD"),
        ("eth2.s/eth", "ETH2.S/ETH"),
        ("1INCH/USD", "1INCH/USD"),
        ("btc / usd", "BTC/USD"),
        ("ABCDEFGHIJKLMNOP/USD", "ABCDEFGHIJKLMNOP/USD"),
    ],
)
def test_normalize_symbol(kraken: KrakenV2, text: str, expected: str) -> None:
    assert kraken.normalize_symbol(text) == expected
    assert kraken.normalize_symbol(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "/USD",
        "BTC/",
        "BTC/USD/EUR",
        "BTC-USD_EUR",
        "BTC USD",
        "BTC/U$D",
        "BTC/ÜSD",
        "ABCDEFGHIJKLMNOPQ/USD",
    ],
)
def test_normalize_symbol_rejects(kraken: KrakenV2, text: str) -> None:
    with pytest.raises(ConfigError):
        kraken.normalize_symbol(text)


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("BTCUSD", "BTC/USD"),
        ("xbtusd", "BTC/USD"),
        ("ETHEUR", "ETH/EUR"),
        ("SOLUSDT", "SOL/USDT"),
        ("FOO", "BTC/USD"),
    ],
)
def test_normalize_symbol_without_separator_says_how(kraken: KrakenV2, text: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match="write") as info:
        kraken.normalize_symbol(text)
    assert f"'{suggestion}'" in str(info.value)


def test_normalize_symbol_rejects_non_text(kraken: KrakenV2) -> None:
    with pytest.raises(ConfigError):
        kraken.normalize_symbol(None)  # type: ignore[arg-type]


def test_ws_url_and_symbol_fs(kraken: KrakenV2) -> None:
    assert kraken.ws_url(["BTC/USD", "ETH/USD"]) == "wss://ws.kraken.com/v2"
    assert KrakenV2(ws_base="ws://sim/v2").ws_url([]) == "ws://sim/v2"
    assert kraken.symbol_fs("BTC/USD") == "BTCUSD"


def test_subscribe_messages_exact(kraken: KrakenV2) -> None:
    assert kraken.subscribe_messages(["btc-usd", "ETH/USD"], 25) == [
        '{"method":"subscribe","params":{"channel":"instrument","snapshot":true},"req_id":1}',
        '{"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD","ETH/USD"],"depth":25,'
        '"snapshot":true},"req_id":2}',
        '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"],"snapshot":false},'
        '"req_id":3}',
    ]


def test_subscribe_messages_shape(kraken: KrakenV2) -> None:
    for depth in BOOK_DEPTHS:
        inst, book, trade = (json.loads(m) for m in kraken.subscribe_messages(["XBT/USD", "BTC/USD"], depth))
        assert inst == {
            "method": "subscribe",
            "params": {"channel": "instrument", "snapshot": True},
            "req_id": 1,
        }
        assert book["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": depth, "snapshot": True}
        assert trade["params"] == {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": False}
    # A bare string is one symbol, not a sequence of one-letter symbols.
    assert json.loads(kraken.subscribe_messages("btc/usd", 10)[1])["params"]["symbol"] == ["BTC/USD"]


@pytest.mark.parametrize("depth", [0, 5, 20, 50, 1001, -10, True, 10.0, "10"])
def test_subscribe_messages_bad_depth(kraken: KrakenV2, depth: Any) -> None:
    with pytest.raises(ConfigError, match="10, 25, 100, 500, 1000"):
        kraken.subscribe_messages(["BTC/USD"], depth)
    with pytest.raises(ConfigError, match="10, 25, 100, 500, 1000"):
        kraken.new_sync_engine("BTC/USD", depth)


def test_subscribe_messages_bad_symbols(kraken: KrakenV2) -> None:
    with pytest.raises(ConfigError):
        kraken.subscribe_messages([], 10)
    with pytest.raises(ConfigError, match="BTC/USD"):
        kraken.subscribe_messages(["BTCUSD"], 10)


def test_rest_side_is_absent(kraken: KrakenV2) -> None:
    assert kraken.snapshot_request("BTC/USD", 10) is None
    assert kraken.rest_symbol("https://api.kraken.com/0/public/Depth?pair=XBTUSD") is None
    with pytest.raises(ExchangeProtocolError, match="WebSocket") as info:
        kraken.parse_snapshot("BTC/USD", '{"error":[],"result":{}}')
    assert info.value.exchange == "kraken"
    assert info.value.frame == '{"error":[],"result":{}}'


def test_new_sync_engine(kraken: KrakenV2) -> None:
    engine = kraken.new_sync_engine("xbt/usd", 25)
    assert isinstance(engine, ChecksumSync)
    assert engine.symbol == "BTC/USD"
    assert (engine.exchange, engine.depth, engine.truncate) == ("kraken", 25, True)
    assert engine.state is SyncState.CONNECTING
    assert kraken.new_sync_engine("BTC/USD", 10) is not kraken.new_sync_engine("BTC/USD", 10)


# -- golden frames: book ---------------------------------------------------------------------------
def test_book_snapshot_golden(kraken: KrakenV2) -> None:
    event = one(kraken.parse(MATIC_SNAPSHOT))
    assert event == BookSnapshot(
        "kraken", "MATIC/USD", MATIC_BIDS, MATIC_ASKS, MATIC_TS, checksum=2439117997, raw=MATIC_SNAPSHOT
    )
    assert event.update_id is None and event.seq is None
    assert event.raw is MATIC_SNAPSHOT


def test_book_update_golden(kraken: KrakenV2) -> None:
    event = one(kraken.parse(MATIC_UPDATE))
    assert type(event) is BookDiff
    assert (event.exchange, event.symbol) == ("kraken", "MATIC/USD")
    assert list(event.bids) == [("0.5657", "1098.3947558")]
    assert list(event.asks) == []
    assert (event.ts_ms, event.checksum, event.first_id, event.last_id) == (MATIC_TS, 2114181697, None, None)
    assert event.raw == MATIC_UPDATE


def test_book_real_update_keeps_number_text(kraken: KrakenV2) -> None:
    frame = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[],"asks":[{"price":29431.1,'
        '"qty":0.0},{"price":29433.3,"qty":0.8},{"price":29430.6,"qty":0.001}],"checksum":3547452596,'
        '"timestamp":"2023-07-30T15:29:58.343415Z"}]}'
    )
    event = one(kraken.parse(frame))
    assert type(event) is BookDiff
    assert list(event.asks) == [("29431.1", "0.0"), ("29433.3", "0.8"), ("29430.6", "0.001")]
    assert (event.ts_ms, event.checksum) == (1690730998343, 3547452596)


def test_book_number_text_variants(kraken: KrakenV2) -> None:
    """Integers, exponents, trailing zeros and JSON strings all come through as their text."""
    frame = (
        '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[{"price":100,"qty":0},'
        '{"price":"0.10000000","qty":"7e-7"},{"price":1E+2,"qty":1.50}],"asks":[{"price":5e-05,"qty":4.0}],'
        '"checksum":0}]}'
    )
    event = one(kraken.parse(frame))
    assert list(event.bids) == [("100", "0"), ("0.10000000", "7e-7"), ("1E+2", "1.50")]  # type: ignore[union-attr]
    assert list(event.asks) == [("5e-05", "4.0")]  # type: ignore[union-attr]
    assert event.ts_ms is None and event.checksum == 0  # type: ignore[union-attr]


def test_book_snapshot_without_timestamp_and_several_elements(kraken: KrakenV2) -> None:
    """Synthetic: `data` normally holds one element; each element becomes its own event."""
    frame = (
        '{"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":1.5,"qty":2}],'
        '"asks":[],"checksum":4294967295},{"symbol":"ETH/USD","bids":[],"asks":[{"price":3,"qty":4}],'
        '"checksum":7,"timestamp":"2023-10-06T17:35:55Z"}]}'
    )
    first, second = kraken.parse(frame)
    # An empty side is an empty sequence (the shared empty tuple: nothing allocated).
    assert first == BookSnapshot(
        "kraken", "BTC/USD", [("1.5", "2")], (), None, checksum=4294967295, raw=frame
    )
    assert second == BookSnapshot("kraken", "ETH/USD", (), [("3", "4")], 1696613755000, checksum=7, raw=frame)


# -- golden frames: trades -------------------------------------------------------------------------
def test_trade_doc_golden(kraken: KrakenV2) -> None:
    assert kraken.parse(TRADE_DOC) == [
        Trade("kraken", "MATIC/USD", 1695628177708, "0.5117", "40.0", "sell", 4665906, TRADE_DOC, False)
    ]


def test_trade_real_golden(kraken: KrakenV2) -> None:
    assert kraken.parse(TRADE_REAL) == [
        Trade("kraken", "BTC/USD", 1787745358096, "78500.6", "0.00035522", "sell", 105995616, TRADE_REAL)
    ]


def test_trade_snapshot_batch(kraken: KrakenV2) -> None:
    """Synthetic snapshot of two trades (same schema as updates, §B.4), one with string numbers."""
    frame = (
        '{"channel":"trade","type":"snapshot","data":[{"symbol":"BTC/USD","side":"buy","price":29430.3,'
        '"qty":0.01,"ord_type":"limit","trade_id":1,"timestamp":"2023-07-30T15:29:58.000999Z"},'
        '{"symbol":"BTC/USD","side":"sell","price":"29430.2","qty":"1e-08","ord_type":"market",'
        '"trade_id":2,"timestamp":"2023-07-30T15:29:59.999999Z"}]}'
    )
    assert kraken.parse(frame) == [
        Trade("kraken", "BTC/USD", 1690730998000, "29430.3", "0.01", "buy", 1, frame, True),
        Trade("kraken", "BTC/USD", 1690730999999, "29430.2", "1e-08", "sell", 2, frame, True),
    ]


# -- golden frames: instrument, status, heartbeat, acks, pong, errors, others ------------------------
def test_instrument_golden(kraken: KrakenV2) -> None:
    assert kraken.parse(INSTRUMENT_FRAME) == [Instrument("kraken", "BTC/USD", 1, 8)]
    assert kraken.parse(MATIC_INSTRUMENT) == [Instrument("kraken", "MATIC/USD", 4, 8)]


def test_instrument_many_pairs_and_update(kraken: KrakenV2) -> None:
    frame = (
        '{"channel":"instrument","type":"update","data":{"assets":[{"id":"BTC","status":"enabled"}],'
        '"pairs":[{"symbol":"BTC/USD","price_precision":1,"qty_precision":8},'
        '{"symbol":"ETH/BTC","price_precision":5,"qty_precision":8}]}}'
    )
    assert kraken.parse(frame) == [
        Instrument("kraken", "BTC/USD", 1, 8),
        Instrument("kraken", "ETH/BTC", 5, 8),
    ]
    assets_only = '{"channel":"instrument","type":"update","data":{"assets":[]}}'
    assert kraken.parse(assets_only) == []


def test_status_golden(kraken: KrakenV2) -> None:
    assert kraken.parse(STATUS_FRAME) == [VenueStatus("kraken", "status", "online")]
    for system in ("maintenance", "cancel_only", "post_only"):
        frame = f'{{"channel":"status","type":"update","data":[{{"version":"2.0.10","system":"{system}"}}]}}'
        assert kraken.parse(frame) == [VenueStatus("kraken", "maintenance", system)]


def test_heartbeat_and_pong(kraken: KrakenV2) -> None:
    assert kraken.parse(HEARTBEAT) == [VenueStatus("kraken", "heartbeat")]
    assert kraken.parse(PONG) == [VenueStatus("kraken", "pong")]
    assert kraken.parse('{"method":"pong","req_id":1,"success":true}') == [VenueStatus("kraken", "pong")]


def test_book_ack_golden(kraken: KrakenV2) -> None:
    assert kraken.parse(BOOK_ACK) == [Ack("kraken", "book", "ALGO/USD", True, "", depth=10, raw=BOOK_ACK)]


def test_instrument_and_trade_acks(kraken: KrakenV2) -> None:
    inst = (
        '{"method":"subscribe","result":{"channel":"instrument","snapshot":true},"success":true,'
        '"time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z","req_id":1}'
    )
    assert kraken.parse(inst) == [Ack("kraken", "instrument", None, True, raw=inst)]
    trade = (
        '{"method":"subscribe","result":{"channel":"trade","snapshot":false,"symbol":"BTC/USD",'
        '"warnings":["a warning","another"]},"success":true,"req_id":3}'
    )
    assert kraken.parse(trade) == [Ack("kraken", "trade", "BTC/USD", True, "a warning; another", raw=trade)]


def test_unsubscribe_ack(kraken: KrakenV2) -> None:
    frame = (
        '{"method":"unsubscribe","result":{"channel":"book","depth":25,"symbol":"BTC/USD"},"success":true}'
    )
    assert kraken.parse(frame) == [Ack("kraken", "book", "BTC/USD", True, depth=25, raw=frame)]


def test_failed_ack_without_result(kraken: KrakenV2) -> None:
    frame = (
        '{"error":"Currency pair not supported BTC/USDX","method":"subscribe","req_id":2,"success":false,'
        '"symbol":"BTC/USDX","time_in":"2023-10-06T17:35:55.219022Z","time_out":"2023-10-06T17:35:55.219067Z"}'
    )
    assert kraken.parse(frame) == [
        Ack("kraken", "book", "BTC/USDX", False, "Currency pair not supported BTC/USDX", raw=frame)
    ]
    foreign_req = '{"error":"Exceeded msg rate","method":"subscribe","req_id":99,"success":false}'
    assert kraken.parse(foreign_req) == [Ack("kraken", "", None, False, "Exceeded msg rate", raw=foreign_req)]
    odd_req = '{"error":"x","method":"subscribe","req_id":[2],"success":false}'
    assert kraken.parse(odd_req) == [Ack("kraken", "", None, False, "x", raw=odd_req)]
    dict_error = '{"error":{"code":1},"method":"unsubscribe","success":false}'
    # A non-string error is kept as JSON (its numbers were decoded as text).
    assert kraken.parse(dict_error) == [Ack("kraken", "", None, False, '{"code": "1"}', raw=dict_error)]


def test_failed_ack_with_result(kraken: KrakenV2) -> None:
    frame = (
        '{"method":"subscribe","result":{"channel":"book","depth":7,"symbol":"BTC/USD"},'
        '"success":false,"error":"Invalid depth"}'
    )
    assert kraken.parse(frame) == [
        Ack("kraken", "book", "BTC/USD", False, "Invalid depth", depth=7, raw=frame)
    ]


def test_error_without_method(kraken: KrakenV2) -> None:
    assert kraken.parse('{"error":"Exceeded msg rate"}') == [
        VenueStatus("kraken", "error", "Exceeded msg rate")
    ]
    assert kraken.parse('{"Error":"Exceeded msg rate"}') == [
        VenueStatus("kraken", "error", "Exceeded msg rate")
    ]


@pytest.mark.parametrize(
    "frame",
    [
        '{"channel":"ticker","type":"snapshot","data":[{"symbol":"ALGO/USD","bid":0.10025,"bid_qty":740.0,'
        '"ask":0.10036,"ask_qty":1361.44813783,"last":0.10035,"volume":997038.98383185,"vwap":0.10148,'
        '"low":0.09979,"high":0.10285,"change":-0.00017,"change_pct":-0.17}]}',
        '{"channel":"level3","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[],"asks":[],"checksum":1}]}',
        '{"channel":"executions","type":"update","data":[]}',
        '{"method":"add_order","result":{"order_id":"X"},"success":true,"req_id":7}',
    ],
)
def test_unused_kraken_frames_are_unknown(kraken: KrakenV2, frame: str) -> None:
    assert kraken.parse(frame) == [Unknown("kraken", frame)]


# -- malformed Kraken-shaped frames ----------------------------------------------------------------
BAD_FRAMES = [
    '{"channel":"book","type":"partial","data":[]}',
    '{"channel":"book","type":"update","data":{}}',
    '{"channel":"book","type":"update"}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":{},"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":"","checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[]}]}',
    '{"channel":"book","type":"update","data":[{"symbol":null,"bids":[],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":-1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":1.5}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":4294967296}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":"12a"}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":true}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":1,"timestamp":5}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[],"asks":[],"checksum":1,"timestamp":"no"}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[{"price":1}],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[["1","2"]],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[5],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[{"price":NaN,"qty":1}],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[{"symbol":"X/Y","bids":[{"price":Infinity,"qty":1}],"asks":[],"checksum":1}]}',
    '{"channel":"book","type":"update","data":[7]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"X/Y","side":"b","price":1,"qty":1,"trade_id":1,'
    '"timestamp":"2023-07-30T15:29:58.343415Z"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"X/Y","side":"buy","price":1,"qty":1,"trade_id":-1,'
    '"timestamp":"2023-07-30T15:29:58.343415Z"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"X/Y","side":"buy","price":1,"qty":1,"trade_id":1}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"X/Y","side":"buy","price":[1],"qty":1,"trade_id":1,'
    '"timestamp":"2023-07-30T15:29:58.343415Z"}]}',
    '{"channel":"trade","type":"update","data":[{"symbol":"X/Y","side":["buy"],"price":1,"qty":1,"trade_id":1,'
    '"timestamp":"2023-07-30T15:29:58.343415Z"}]}',
    '{"channel":"trade","type":"rubbish","data":[]}',
    '{"channel":"instrument","type":"snapshot","data":[]}',
    '{"channel":"instrument","type":"snapshot","data":{"pairs":{}}}',
    '{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"X/Y","price_precision":1.5,"qty_precision":8}]}}',
    '{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"X/Y","price_precision":1000000000,'
    '"qty_precision":8}]}}',
    '{"channel":"instrument","type":"snapshot","data":{"pairs":[{"symbol":"X/Y","price_precision":1}]}}',
    '{"channel":"instrument","type":"other","data":{"pairs":[]}}',
    '{"channel":"status","type":"update","data":[{"version":"2.0.10"}]}',
    '{"channel":"status","type":"update","data":{"system":"online"}}',
    '{"channel":"ticker"}',
    '{"channel":{"x":7},"type":"update","data":[]}',
    '{"channel":null,"type":"update","data":[]}',
    '{"method":"subscribe","result":{"channel":"book"}}',
    '{"method":"subscribe","result":{"channel":"book"},"success":"yes"}',
    '{"method":"subscribe","result":{"symbol":"X/Y"},"success":true}',
    '{"method":"subscribe","result":[],"success":true}',
    '{"method":"subscribe","success":true}',
    '{"method":"subscribe","result":{"channel":"book","depth":-10},"success":true}',
    '{"method":"subscribe","result":{"channel":"book","symbol":["X/Y"]},"success":true}',
    '{"method":"subscribe","success":false,"symbol":["X/Y"]}',
    '{"method":[5],"success":true}',
    '{"method":"ping","req_id":3}',
    '{"error":{"code":1,"msg":"x"}}',
    "{}",
]


@pytest.mark.parametrize("frame", BAD_FRAMES)
def test_malformed_kraken_frames(kraken: KrakenV2, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        kraken.parse(frame)
    assert info.value.exchange == "kraken"
    assert info.value.frame == frame[:512]
    assert info.value.__cause__ is None  # the mapped exception does not drag a traceback chain along


# -- timestamps ------------------------------------------------------------------------------------
def trade_at(timestamp: str) -> str:
    return (
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,'
        f'"trade_id":1,"timestamp":"{timestamp}"}}]}}'
    )


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2023-10-06T17:35:55.440295Z", 1696613755440),
        ("2023-10-06T17:35:55.440999Z", 1696613755440),  # truncated, not rounded
        ("2023-10-06T17:35:55.999999Z", 1696613755999),
        ("2023-10-06T17:35:55.000000Z", 1696613755000),
        ("2023-10-06T17:35:55Z", 1696613755000),
        ("2023-10-06T17:35:55.4Z", 1696613755400),
        ("2023-10-06T17:35:55.123456789Z", 1696613755123),
        ("2023-10-06T19:35:55.440295+02:00", 1696613755440),
        ("2023-10-06T17:35:55.440295", 1696613755440),
        ("1970-01-01T00:00:00.000000Z", 0),
        ("2024-02-29T23:59:59.999999Z", 1709251199999),
    ],
)
def test_timestamps(kraken: KrakenV2, timestamp: str, expected: int) -> None:
    assert one(kraken.parse(trade_at(timestamp))).ts_ms == expected  # type: ignore[union-attr]
    assert ms(timestamp) == expected


@pytest.mark.parametrize(
    "timestamp",
    [
        "",
        "yesterday",
        "2023-13-06T17:35:55.440295Z",
        "2023-10-06T17:35:55.4x0295Z",
        "2023-10-06T25:35:55.440295Z",
        "2023-10-06T17:35:55.44029٥Z",
        "2023-10-06T17:35:55.٤40295Z",
    ],
)
def test_bad_timestamps(kraken: KrakenV2, timestamp: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        kraken.parse(trade_at(timestamp))


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)))
def test_timestamps_match_reference(dt: datetime) -> None:
    text = dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    expected = (dt.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert one(KrakenV2().parse(trade_at(text))).ts_ms == expected  # type: ignore[union-attr]


def test_timestamp_cache_survives_many_seconds(kraken: KrakenV2) -> None:
    start = datetime(2023, 7, 30, tzinfo=UTC)
    for i in range(0, 6000 * 7, 7):  # more distinct seconds than the cache holds
        dt = start + timedelta(seconds=i, microseconds=i % 1_000_000)
        text = dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert one(kraken.parse(trade_at(text))).ts_ms == ms(text)  # type: ignore[union-attr]


# -- checksums through parser + engine (PROTOCOLS.md §B.3) ----------------------------------------
def snapshot_frame(
    symbol: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]], checksum: int
) -> str:
    """A book snapshot frame with the levels written as JSON numbers (their text verbatim)."""

    def levels(side: list[tuple[str, str]]) -> str:
        return ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in side)

    return (
        f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{symbol}","bids":[{levels(bids)}],'
        f'"asks":[{levels(asks)}],"checksum":{checksum}}}]}}'
    )


def instrument_frame(symbol: str, price_precision: int, qty_precision: int) -> str:
    return (
        '{"channel":"instrument","type":"snapshot","data":{"assets":[],"pairs":[{'
        f'"symbol":"{symbol}","price_precision":{price_precision},"qty_precision":{qty_precision}}}]}}}}'
    )


def test_guide_checksum_direct() -> None:
    assert kraken_v2_checksum(KRAKEN_GUIDE_ASKS, KRAKEN_GUIDE_BIDS, 1, 8) == 3310070434


@pytest.mark.parametrize("float_normalized", [False, True])
def test_guide_checksum_through_parser_and_engine(kraken: KrakenV2, float_normalized: bool) -> None:
    def norm(side: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(p, str(float(q))) for p, q in side] if float_normalized else side

    frame = snapshot_frame("BTC/USD", norm(KRAKEN_GUIDE_BIDS), norm(KRAKEN_GUIDE_ASKS), 3310070434)
    engine = kraken.new_sync_engine("BTC/USD", 10)
    for event in kraken.parse(instrument_frame("BTC/USD", 1, 8)) + kraken.parse(frame):
        engine.receive(event)
    snap = one(kraken.parse(frame))
    assert kraken_v2_checksum(snap.asks, snap.bids, 1, 8) == 3310070434  # type: ignore[union-attr]
    assert (engine.stats.checksums_verified, engine.stats.checksum_mismatches) == (1, 0)
    assert engine.state is SyncState.SYNCED


def test_matic_checksums_through_parser_and_engine(kraken: KrakenV2) -> None:
    engine = kraken.new_sync_engine("MATIC/USD", 10)
    for event in kraken.parse(MATIC_INSTRUMENT):
        assert engine.receive(event) == ()
    snap = one(kraken.parse(MATIC_SNAPSHOT))
    assert kraken_v2_checksum(snap.asks, snap.bids, 4, 8) == 2439117997  # type: ignore[union-attr]
    outputs = engine.receive(snap)
    assert not any(isinstance(o, ChecksumMismatch) for o in outputs)
    assert engine.state is SyncState.SYNCED
    assert engine.stats.checksums_verified == 1

    outputs = engine.receive(one(kraken.parse(MATIC_UPDATE)))
    assert not any(isinstance(o, ChecksumMismatch) for o in outputs)
    assert (engine.stats.checksums_verified, engine.stats.checksum_mismatches) == (2, 0)
    assert engine.stats.diffs_applied == 1
    bids, asks = engine.book.top(10)
    assert bids[-1] == ("0.5657", "1098.3947558")
    assert kraken_v2_checksum(asks, bids, 4, 8) == 2114181697


def test_matic_checksum_needs_the_right_precision(kraken: KrakenV2) -> None:
    engine = kraken.new_sync_engine("MATIC/USD", 10)
    engine.receive(Instrument("kraken", "MATIC/USD", 5, 8))
    outputs = engine.receive(one(kraken.parse(MATIC_SNAPSHOT)))
    assert any(isinstance(o, ChecksumMismatch) for o in outputs)
    assert engine.stats.checksum_mismatches == 1


# -- the real capture --------------------------------------------------------------------------------
def expected_event_counts(frames: list[str]) -> Counter[str]:
    """What the parser must produce, computed from the JSON alone."""
    counts: Counter[str] = Counter()
    for frame in frames:
        msg = json.loads(frame)
        channel = msg.get("channel")
        if channel == "book":
            counts["BookSnapshot" if msg["type"] == "snapshot" else "BookDiff"] += len(msg["data"])
        elif channel == "trade":
            counts["Trade"] += len(msg["data"])
        elif channel == "instrument":
            counts["Instrument"] += len(msg["data"]["pairs"])
        elif channel in ("status", "heartbeat") or msg.get("method") == "pong":
            counts["VenueStatus"] += len(msg.get("data", [0]))
        elif msg.get("method") in ("subscribe", "unsubscribe"):
            counts["Ack"] += 1
        else:
            counts["Unknown"] += 1
    return counts


def test_real_capture_parses(kraken: KrakenV2, real_capture: Any) -> None:
    frames = capture_frames(real_capture(KRAKEN_BOOK10))
    counts: Counter[str] = Counter()
    levels = 0
    for frame in frames:
        events = kraken.parse(frame)
        for event in events:
            counts[type(event).__name__] += 1
            if isinstance(event, BookSnapshot | BookDiff):
                assert event.raw is frame
                assert event.symbol == "BTC/USD"
                levels += len(event.bids) + len(event.asks)
    assert counts == expected_event_counts(frames)
    assert counts == Counter(BookDiff=509, BookSnapshot=1, VenueStatus=1, Instrument=1, Ack=1)
    wire_levels = sum(
        len(d["bids"]) + len(d["asks"])
        for f in frames
        if (m := json.loads(f)).get("channel") == "book"
        for d in m["data"]
    )
    assert levels == wire_levels


def run_engines(
    kraken: KrakenV2, frames: list[str], symbols: list[str], depth: int
) -> tuple[dict[str, Any], list[int]]:
    """Frames → adapter → one engine per symbol; returns the engines and the frame indexes of mismatches."""
    engines = {s: kraken.new_sync_engine(s, depth) for s in symbols}
    mismatch_frames = []
    for index, frame in enumerate(frames):
        for event in kraken.parse(frame):
            engine = engines.get(getattr(event, "symbol", None))  # type: ignore[arg-type]
            if engine is None:
                continue
            for output in engine.receive(event):
                if isinstance(output, ChecksumMismatch):
                    mismatch_frames.append(index)
    return engines, mismatch_frames


def test_real_capture_sync(real_capture: Any) -> None:
    path = real_capture(KRAKEN_BOOK10)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        header = json.loads(fh.readline())
    frames = capture_frames(path)
    engines, mismatches = run_engines(KrakenV2(), frames, header["symbols"], header["depth"])
    engine = engines["BTC/USD"]
    assert mismatches == []
    assert engine.stats.snapshots == 1
    assert engine.stats.diffs_applied == 509
    assert engine.stats.checksums_verified == 510
    assert engine.stats.checksum_mismatches == 0
    assert engine.stats.checksums_unverified == 0
    assert engine.stats.gaps == 0
    assert engine.stats.crossed_states == 0
    assert engine.state is SyncState.SYNCED
    assert engine.book.depth() == (10, 10)


def test_real_capture_through_store_reader(real_capture: Any) -> None:
    """Same result when the frames come from mmdata's own capture reader."""
    from mmdata.store.capture import open_capture

    with open_capture(real_capture(KRAKEN_BOOK10)) as reader:
        frames = [r.data for r in reader if r.kind == "ws_recv"]
        symbols = list(reader.header.symbols)
        depth = reader.header.extra["depth"]
    engines, mismatches = run_engines(KrakenV2(), frames, symbols, depth)
    assert mismatches == []
    assert engines["BTC/USD"].stats.checksums_verified == 510


def test_real_capture_corrupted_level_gives_one_mismatch(real_capture: Any) -> None:
    frames = capture_frames(real_capture(KRAKEN_BOOK10))
    kraken = KrakenV2()
    # Find an update (past the first hundred) whose first non-zero level is still in the book after it.
    engines, _ = run_engines(kraken, frames[:0], ["BTC/USD"], 10)
    engine = engines["BTC/USD"]
    target = None
    updates_seen = 0
    for index, frame in enumerate(frames):
        events = kraken.parse(frame)
        for event in events:
            if getattr(event, "symbol", None) == "BTC/USD":
                engine.receive(event)
        msg = json.loads(frame, parse_float=str, parse_int=str)
        if msg.get("channel") != "book" or msg["type"] != "update":
            continue
        updates_seen += 1
        if updates_seen < 100:
            continue
        item = msg["data"][0]
        for side_name, side in (("bids", engine.book.bids), ("asks", engine.book.asks)):
            prices = [lv["price"] for lv in item[side_name]]
            for level in item[side_name]:
                if (
                    Decimal(level["qty"]) != 0
                    and prices.count(level["price"]) == 1
                    and side.get(level["price"])
                ):
                    target = (index, level["price"], level["qty"])
                    break
            if target:
                break
        if target:
            break
    assert target is not None
    index, price, qty = target
    old = f'{{"price":{price},"qty":{qty}}}'
    new = f'{{"price":{price},"qty":{Decimal(qty) + Decimal("0.00000001")}}}'
    assert frames[index].count(old) == 1
    corrupted = [*frames[:index], frames[index].replace(old, new), *frames[index + 1 :]]

    engines, mismatches = run_engines(KrakenV2(), corrupted, ["BTC/USD"], 10)
    stats = engines["BTC/USD"].stats
    assert mismatches == [index]
    assert stats.checksum_mismatches == 1
    # Everything before the corrupted frame verified: the snapshot plus every earlier update.
    earlier_updates = sum(1 for f in frames[:index] if '"channel":"book","type":"update"' in f)
    assert stats.checksums_verified == 1 + earlier_updates
    assert engines["BTC/USD"].state is SyncState.RESYNCING


# -- robustness: parse returns events or raises ExchangeProtocolError, nothing else ---------------
def parse_or_protocol_error(kraken: KrakenV2, frame: Any) -> list[Event] | None:
    try:
        events = kraken.parse(frame)
    except ExchangeProtocolError as exc:
        assert exc.exchange == "kraken"
        return None
    assert isinstance(events, list)
    return events


@pytest.mark.parametrize("frame", FOREIGN_FRAMES)
def test_foreign_frames_rejected(kraken: KrakenV2, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError) as info:
        kraken.parse(frame)
    assert info.value.frame == frame[:512]


@pytest.mark.parametrize(
    "frame",
    ["1", "-1.5", "null", "true", "false", '"text"', "[]", "[1,2]", "NaN", "Infinity", "-Infinity", "",
     " ", "{", "}", "[", "{}}", '{"channel":"heartbeat"} x', '{"channel":"heartbeat"}{"channel":"heartbeat"}',
     "\x00", "\ufeff" + HEARTBEAT, "\udcff\udcfe", '{"channel":"heartbeat"\udcff}', "\ud800"],
)  # fmt: skip
def test_scalars_and_junk_rejected(kraken: KrakenV2, frame: str) -> None:
    with pytest.raises(ExchangeProtocolError):
        kraken.parse(frame)


def test_surrogates_inside_strings_are_just_text(kraken: KrakenV2) -> None:
    assert kraken.parse('{"channel":"heartbeat","x":"\\udcff\udcff"}') == [VenueStatus("kraken", "heartbeat")]


@pytest.mark.parametrize("frame", [b'{"channel":"heartbeat"}', bytearray(b"{}"), None, 5, ["{}"]])
def test_non_text_rejected(kraken: KrakenV2, frame: Any) -> None:
    with pytest.raises(ExchangeProtocolError, match="text"):
        kraken.parse(frame)


def test_huge_frames(kraken: KrakenV2) -> None:
    ten_mb = '{"channel":"book","type":"update","data":[{"symbol":"' + "X" * (10 * 1024 * 1024) + '"}]}'
    with pytest.raises(ExchangeProtocolError, match="exceeds") as info:
        kraken.parse(ten_mb)
    assert len(info.value.frame) == 512
    just_fits = HEARTBEAT + " " * (MAX_FRAME_CHARS - len(HEARTBEAT))
    assert kraken.parse(just_fits) == [VenueStatus("kraken", "heartbeat")]
    with pytest.raises(ExchangeProtocolError):
        kraken.parse(just_fits + " ")


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deep_nesting(kraken: KrakenV2, depth: int) -> None:
    for frame in (
        "[" * depth + "]" * depth,
        "[" * depth,
        '{"a":' * depth + "1" + "}" * depth,
        '{"channel":"book","type":"update","data":' + "[" * depth + "]" * depth + "}",
    ):
        with pytest.raises(ExchangeProtocolError):
            kraken.parse(frame)


@pytest.mark.parametrize(
    "frame", [MATIC_SNAPSHOT, MATIC_UPDATE, TRADE_DOC, INSTRUMENT_FRAME, BOOK_ACK, STATUS_FRAME, PONG]
)
def test_every_truncation_rejected(kraken: KrakenV2, frame: str) -> None:
    for end in range(len(frame)):
        with pytest.raises(ExchangeProtocolError):
            kraken.parse(frame[:end])


def test_truncations_of_real_frames(kraken: KrakenV2, real_capture: Any) -> None:
    frames = capture_frames(real_capture(KRAKEN_BOOK10))
    for frame in frames[:6]:
        for end in range(len(frame)):
            with pytest.raises(ExchangeProtocolError):
                kraken.parse(frame[:end])


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_junk_text(frame: str) -> None:
    parse_or_protocol_error(KrakenV2(), frame)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_junk_bytes_as_text(data: bytes) -> None:
    parse_or_protocol_error(KrakenV2(), data.decode("utf-8", "surrogateescape"))
    parse_or_protocol_error(KrakenV2(), data.decode("latin-1"))


KEYS = st.sampled_from(
    ["channel", "type", "data", "symbol", "bids", "asks", "price", "qty", "checksum", "timestamp", "method",
     "result", "success", "error", "Error", "req_id", "depth", "pairs", "side", "trade_id", "system",
     "price_precision", "qty_precision", "warnings"]
) | st.text(max_size=5)  # fmt: skip
WORDS = st.sampled_from(
    ["book", "trade", "instrument", "status", "heartbeat", "ticker", "snapshot", "update", "subscribe",
     "unsubscribe", "pong", "buy", "sell", "online", "BTC/USD", "2023-10-06T17:35:55.440295Z", "123", "-1"]
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | WORDS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json(value: Any) -> None:
    parse_or_protocol_error(KrakenV2(), json.dumps(value))


def replace_leaf(value: Any, path: list[int], new: Any) -> Any:
    """``value`` with the leaf chosen by ``path`` (indexes into container items) replaced by ``new``."""
    if not path or not isinstance(value, dict | list) or not value:
        return new
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    key, child = items[path[0] % len(items)]
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[key] = replace_leaf(child, path[1:], new)
    return copy


GOLDEN = [MATIC_SNAPSHOT, MATIC_UPDATE, TRADE_DOC, TRADE_REAL, INSTRUMENT_FRAME, STATUS_FRAME, BOOK_ACK, PONG]


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOLDEN), st.lists(st.integers(0, 50), max_size=6), JSON)
def test_mutated_golden_frames(frame: str, path: list[int], new: Any) -> None:
    value = json.loads(frame, parse_float=Decimal)
    mutated = json.dumps(replace_leaf(value, path, new), default=str)
    parse_or_protocol_error(KrakenV2(), mutated)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(GOLDEN), st.integers(0, 5000), st.text(max_size=3))
def test_spliced_golden_frames(frame: str, position: int, junk: str) -> None:
    position %= len(frame) + 1
    parse_or_protocol_error(KrakenV2(), frame[:position] + junk + frame[position:])
