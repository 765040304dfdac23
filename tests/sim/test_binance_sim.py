"""Simulated Binance Spot (PROTOCOLS.md §A) driven by a small deterministic fake market.

Every frame is parsed with mmdata's own Binance adapter; books are rebuilt both with
:class:`mmdata.book.SequenceSync` and with an independent dict model written here.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdata.book.sync import GapDetected, NeedSnapshot, SequenceSync, SyncState
from mmdata.errors import ExchangeProtocolError
from mmdata.exchanges import get
from mmdata.sim.binance import BinanceSession, BinanceSim, fixed8
from mmdata.sim.model import (
    InstrumentSpec,
    LevelChange,
    MarketStep,
    OutFrame,
    RestResponse,
    SimTrade,
)
from mmdata.types import Ack, BookDiff, Trade, VenueStatus
from tests.sim.oracles import BruteMarketQueries

# 2023-11-14T22:13:20Z: a 100 ms and 1 s boundary but not a minute one, which keeps window maths honest.
START_MS = 1_700_000_000_000


# -- a deterministic fake Market --------------------------------------------------------------------
class FakeMarket(BruteMarketQueries):
    """Implements the ``Market`` protocol with a seeded random book around a fixed mid."""

    def __init__(self, seed: int = 7) -> None:
        self.start_ms = START_MS
        self.specs: Mapping[str, InstrumentSpec] = {
            "BTCUSDT": InstrumentSpec("BTCUSDT", 2, 5, 6_183_763),
            "ETHBTC": InstrumentSpec("ETHBTC", 6, 4, 52_000),  # 0.052000, qty 4 decimals
        }
        self.rng = random.Random(seed)
        self.bids: dict[str, dict[int, int]] = {}
        self.asks: dict[str, dict[int, int]] = {}
        self.uid: dict[str, int] = {}
        self.trade_log: dict[str, list[SimTrade]] = {}
        for n, (symbol, spec) in enumerate(self.specs.items()):
            mid = spec.start_price
            self.bids[symbol] = {mid - k: self.rng.randint(1, 10**6) for k in range(1, 21)}
            self.asks[symbol] = {mid + k: self.rng.randint(1, 10**6) for k in range(1, 21)}
            self.uid[symbol] = 5_000 * (n + 1)
            # A synthetic past: 250 trades over ~3 h before START_MS, several sharing a millisecond.
            ts = START_MS - 4 * 3_600_000
            log = []
            for trade_id in range(1, 251):
                ts += self.rng.choice((0, 0, 1, 17, 999, 30_000, 45_000, 61_000, 90_000))
                price = mid + self.rng.randint(-30, 30)
                log.append(
                    SimTrade(
                        trade_id, ts, price, self.rng.randint(1, 10**6), self.rng.choice(("buy", "sell"))
                    )
                )
            self.trade_log[symbol] = log

    # Market protocol ---------------------------------------------------------------------------------
    def step(self, symbol: str, ts_ms: int) -> MarketStep:
        rng = self.rng
        mid = self.specs[symbol].start_price
        bids = self.bids[symbol]
        asks = self.asks[symbol]
        changes: list[LevelChange] = []
        for _ in range(rng.randint(1, 4)):
            side: Literal["bid", "ask"] = "bid" if rng.random() < 0.5 else "ask"
            book = bids if side == "bid" else asks
            price = mid - rng.randint(1, 30) if side == "bid" else mid + rng.randint(1, 30)
            qty = 0 if price in book and rng.random() < 0.35 else rng.randint(1, 5 * 10**6)
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)  # removing an absent level happens on Binance too
            changes.append(LevelChange(side, price, qty))
        trades: list[SimTrade] = []
        if rng.random() < 0.3:
            taker: Literal["buy", "sell"] = "buy" if rng.random() < 0.5 else "sell"
            book, side = (asks, "ask") if taker == "buy" else (bids, "bid")
            if book:
                best = min(book) if side == "ask" else max(book)
                take = rng.randint(1, book[best])
                left = book[best] - take
                if left:
                    book[best] = left
                else:
                    del book[best]
                changes.append(LevelChange(side, best, left))
                trade = SimTrade(self.trade_log[symbol][-1].trade_id + 1, ts_ms, best, take, taker)
                self.trade_log[symbol].append(trade)
                trades.append(trade)
        first = self.uid[symbol] + 1
        self.uid[symbol] += len(changes)
        return MarketStep(symbol, ts_ms, first, self.uid[symbol], tuple(changes), tuple(trades))


ADAPTER = get("binance")


def parse(frame: OutFrame) -> list[Any]:
    return ADAPTER.parse(frame.text)


def text8(units: int, precision: int) -> str:
    """Independent 8-decimal formatting through Decimal."""
    return f"{Decimal(units).scaleb(-precision):.8f}"


def market_text(market: FakeMarket, symbol: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    spec = market.specs[symbol]
    bids, asks = market.book(symbol)
    pp, qp = spec.price_precision, spec.qty_precision
    return (
        [(text8(p, pp), text8(q, qp)) for p, q in bids],
        [(text8(p, pp), text8(q, qp)) for p, q in asks],
    )


def session(sim: BinanceSim, path: str, now_ms: int = START_MS) -> BinanceSession:
    accepted = sim.accept(path, now_ms)
    assert isinstance(accepted, BinanceSession), accepted
    return accepted


def body(resp: RestResponse) -> Any:
    return json.loads(resp.body)


# -- numbers ------------------------------------------------------------------------------------------
@given(st.integers(min_value=0, max_value=10**18), st.integers(min_value=0, max_value=8))
def test_fixed8_matches_decimal(units: int, precision: int) -> None:
    assert fixed8(units, precision) == text8(units, precision)


@given(
    st.integers(min_value=0, max_value=8),
    st.integers(min_value=0, max_value=8),
    st.lists(st.tuples(st.integers(1, 10**14), st.integers(0, 10**14)), min_size=1, max_size=6),
)
def test_wire_numbers_match_decimal(pp: int, qp: int, levels: list[tuple[int, int]]) -> None:
    """Trade and diff numbers (the cached hot-path formatter) equal Decimal's 8-decimal text."""
    market = FakeMarket()
    market.specs = {"ABCUSDT": InstrumentSpec("ABCUSDT", pp, qp, 100)}
    s = session(BinanceSim(market), "/ws/abcusdt@trade/abcusdt@depth@100ms")
    for k in range(2):  # the second pass reads the cache
        changes = tuple(LevelChange("bid", p, q) for p, q in levels)
        trades = tuple(SimTrade(n, START_MS, p, q, "buy") for n, (p, q) in enumerate(levels))
        frames = s.on_step(MarketStep("ABCUSDT", START_MS, 1, len(levels), changes, trades))
        assert [(e.price, e.qty) for f in frames for e in parse(f)] == [
            (text8(p, pp), text8(q, qp)) for p, q in levels
        ]
        (diff,) = s.on_tick(START_MS + 100 + k * 100)
        final = dict(levels)  # last change per price wins
        expected = sorted(final.items(), reverse=True)
        assert parse(diff)[0].bids == [[text8(p, pp), text8(q, qp)] for p, q in expected]


def test_fixed8_examples_and_refusals() -> None:
    assert fixed8(6_183_763, 2) == "61837.63000000"
    assert fixed8(0, 5) == "0.00000000"
    assert fixed8(-42, 1) == "-4.20000000"
    with pytest.raises(ValueError, match="8 decimals"):
        fixed8(1, 9)


def test_instrument_with_more_than_8_decimals_is_refused() -> None:
    market = FakeMarket()
    market.specs = {"XUSDT": InstrumentSpec("XUSDT", 9, 2, 1)}
    with pytest.raises(ValueError, match="at most 8 decimals"):
        BinanceSim(market)


# -- handshake ----------------------------------------------------------------------------------------
def test_accept_combined_and_raw() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/stream?streams=btcusdt@depth@100ms/btcusdt@trade/ethbtc@aggTrade/ethbtc@depth")
    assert s.combined and s.streams == [
        "btcusdt@depth@100ms",
        "btcusdt@trade",
        "ethbtc@aggTrade",
        "ethbtc@depth",
    ]
    raw = session(sim, "/ws/btcusdt@depth")
    assert not raw.combined and raw.streams == ["btcusdt@depth"]
    assert session(sim, "/ws").streams == []
    assert session(sim, "/stream?streams=btcusdt%40trade").streams == ["btcusdt@trade"]
    assert sim.symbols() == ["BTCUSDT", "ETHBTC"]
    assert sim.name == "binance"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/stream?streams=dogeusdt@trade", 400, -1121),
        ("/ws/dogeusdt@depth", 400, -1121),
        ("/stream?streams=btcusdt@kline_1w", 400, -1100),  # weekly klines are not served
        ("/stream?streams=BTCUSDT@trade", 400, -1100),  # stream names are lowercase (§A.1)
        ("/stream?streams=btcusdt@depth@250ms", 400, -1100),
        ("/stream?streams=" + "/".join(f"btcusdt@trade{i}" for i in range(3)), 400, -1100),
        ("/nope", 404, None),
    ],
)
def test_accept_refusals(path: str, status: int, code: int | None) -> None:
    sim = BinanceSim(FakeMarket())
    resp = sim.accept(path, START_MS)
    assert isinstance(resp, RestResponse)
    assert resp.status == status
    if code is not None:
        doc = body(resp)
        assert doc["code"] == code and isinstance(doc["msg"], str)


def test_accept_more_than_1024_streams() -> None:
    market = FakeMarket()
    market.specs = {f"S{i}USDT": InstrumentSpec(f"S{i}USDT", 2, 2, 100) for i in range(600)}
    sim = BinanceSim(market)
    names = [f"s{i}usdt@{kind}" for i in range(600) for kind in ("trade", "depth")]
    ok = sim.accept("/stream?streams=" + "/".join(names[:1024]), START_MS)
    assert isinstance(ok, BinanceSession)
    refused = sim.accept("/stream?streams=" + "/".join(names[:1025]), START_MS)
    assert isinstance(refused, RestResponse) and refused.status == 400
    assert body(refused)["code"] == -1101


# -- frames -------------------------------------------------------------------------------------------
STEP = MarketStep(
    "BTCUSDT",
    START_MS + 5,
    101,
    105,
    (
        LevelChange("bid", 6_183_700, 51_200),
        LevelChange("ask", 6_183_764, 0),
        LevelChange("bid", 6_183_700, 77),  # same price again: last change wins
        LevelChange("bid", 6_183_762, 1),
        LevelChange("ask", 6_183_800, 100_000),
    ),
    (
        SimTrade(9001, START_MS + 4, 6_183_764, 12_345, "buy"),
        SimTrade(9002, START_MS + 5, 6_183_762, 5, "sell"),
    ),
)
STEP2 = MarketStep(
    "BTCUSDT", START_MS + 50, 106, 107, (LevelChange("ask", 6_183_800, 3), LevelChange("bid", 6_183_600, 9))
)


def test_combined_frames_exact_text_and_parse() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/stream?streams=btcusdt@depth@100ms/btcusdt@trade/btcusdt@aggTrade")
    frames = s.on_step(STEP)
    assert [f.kind for f in frames] == ["trade"] * 4 and {f.symbol for f in frames} == {"BTCUSDT"}
    assert frames[0].text == (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000005,"s":"BTCUSDT","t":9001,'
        '"p":"61837.64000000","q":"0.12345000","T":1700000000004,"m":false,"M":true}}'
    )
    assert frames[1].text == (
        '{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1700000000005,"s":"BTCUSDT","a":9001,'
        '"p":"61837.64000000","q":"0.12345000","f":9001,"l":9001,"T":1700000000004,"m":false,"M":true}}'
    )
    events = [e for f in frames for e in parse(f)]
    assert all(isinstance(e, Trade) for e in events)
    assert [(e.trade_id, e.side, e.price, e.qty) for e in events] == [
        (9001, "buy", "61837.64000000", "0.12345000"),
        (9001, "buy", "61837.64000000", "0.12345000"),
        (9002, "sell", "61837.62000000", "0.00005000"),
        (9002, "sell", "61837.62000000", "0.00005000"),
    ]
    assert s.on_tick(START_MS + 60) == []  # same 100 ms window as the subscription
    assert s.on_step(STEP2) == []  # no trades: nothing now
    (diff,) = s.on_tick(START_MS + 100)
    assert diff.kind == "diff" and diff.symbol == "BTCUSDT"
    assert diff.text == (
        '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000100,"s":"BTCUSDT",'
        '"U":101,"u":107,"b":[["61837.62000000","0.00001000"],["61837.00000000","0.00077000"],'
        '["61836.00000000","0.00009000"]],"a":[["61837.64000000","0.00000000"],["61838.00000000","0.00003000"]]}}'
    )
    (event,) = parse(diff)
    assert isinstance(event, BookDiff)
    assert (event.first_id, event.last_id, event.ts_ms) == (101, 107, START_MS + 100)
    assert event.bids[1] == ["61837.00000000", "0.00077000"]
    assert s.on_tick(START_MS + 200) == []  # nothing pending: no empty diff
    # The next batch carries only its own changes, from U = previous u + 1.
    s.on_step(MarketStep("BTCUSDT", START_MS + 250, 108, 108, (LevelChange("bid", 6_183_762, 0),)))
    (diff,) = s.on_tick(START_MS + 300)
    assert '"U":108,"u":108,"b":[["61837.62000000","0.00000000"]],"a":[]}}' in diff.text


def test_raw_mode_bare_payloads() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/ws/btcusdt@trade/btcusdt@depth@100ms")
    trade = s.on_step(STEP)[0]
    assert trade.text.startswith('{"e":"trade","E":1700000000005,"s":"BTCUSDT","t":9001,')
    (diff,) = s.on_tick(START_MS + 100)
    assert diff.text.startswith('{"e":"depthUpdate","E":1700000000100,"s":"BTCUSDT","U":101,"u":105,')
    assert isinstance(parse(diff)[0], BookDiff) and isinstance(parse(trade)[0], Trade)
    # SET_PROPERTY combined switches the wrapper on for the pending stream too.
    s.on_text('{"method":"SET_PROPERTY","params":["combined",true],"id":1}', START_MS + 150)
    s.on_step(STEP2)
    (diff,) = s.on_tick(START_MS + 200)
    assert diff.text.startswith('{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate"')


def test_depth_1000ms_cadence_and_symbol_routing() -> None:
    market = FakeMarket()
    sim = BinanceSim(market)
    s = session(sim, "/stream?streams=btcusdt@depth/ethbtc@depth@100ms")
    flushes: dict[str, list[int]] = defaultdict(list)
    for k in range(1, 31):
        now = START_MS + k * 100
        for symbol in ("BTCUSDT", "ETHBTC"):
            for frame in s.on_step(market.step(symbol, now)):
                assert frame.kind == "trade"
        for frame in s.on_tick(now):
            stream = json.loads(frame.text)["stream"]
            flushes[stream].append(now)
    assert flushes["ethbtc@depth@100ms"] == [START_MS + k * 100 for k in range(1, 31)]
    assert flushes["btcusdt@depth"] == [START_MS + 1000, START_MS + 2000, START_MS + 3000]


def test_shutdown_frame_both_modes() -> None:
    sim = BinanceSim(FakeMarket())
    combined = session(sim, "/stream?streams=btcusdt@trade").shutdown_frame(1_770_123_456_789)
    raw = session(sim, "/ws/btcusdt@trade").shutdown_frame(1_770_123_456_789)
    assert raw.text == '{"e":"serverShutdown","E":1770123456789}'
    assert combined.text == '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1770123456789}}'
    for frame in (raw, combined):
        (status,) = parse(frame)
        assert isinstance(status, VenueStatus) and status.kind == "reconnect"


# -- live requests --------------------------------------------------------------------------------------
def ask(s: BinanceSession, request: Any, now_ms: int) -> Any:
    text = request if isinstance(request, str) else json.dumps(request)
    (frame,) = s.on_text(text, now_ms)
    assert frame.kind == "ack"
    parse(frame)  # must be a frame mmdata's adapter understands
    return json.loads(frame.text)


def test_subscribe_unsubscribe_list() -> None:
    market = FakeMarket()
    sim = BinanceSim(market)
    s = session(sim, "/stream?streams=btcusdt@trade")
    now = START_MS
    assert ask(
        s, {"method": "SUBSCRIBE", "params": ["ethbtc@aggTrade", "btcusdt@depth@100ms"], "id": 1}, now
    ) == {
        "result": None,
        "id": 1,
    }
    reply = ask(s, {"method": "LIST_SUBSCRIPTIONS", "id": "list3"}, now + 300)
    assert reply == {"result": ["btcusdt@trade", "ethbtc@aggTrade", "btcusdt@depth@100ms"], "id": "list3"}
    (frame,) = s.on_text('{"method":"LIST_SUBSCRIPTIONS","id":3}', now + 600)
    (ack,) = parse(frame)
    assert isinstance(ack, Ack) and ack.ok
    s.on_step(STEP)
    assert [f.symbol for f in s.on_tick(now + 700)] == ["BTCUSDT"]
    assert (
        ask(
            s,
            {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade", "btcusdt@depth@100ms"], "id": 2},
            now + 900,
        )["result"]
        is None
    )
    assert s.on_step(STEP) == []  # neither trade nor depth of BTCUSDT any more
    assert s.on_tick(now + 1000) == []
    assert ask(s, {"method": "LIST_SUBSCRIPTIONS", "id": None}, now + 1200) == {
        "result": ["ethbtc@aggTrade"],
        "id": None,
    }
    assert ask(s, {"method": "GET_PROPERTY", "params": ["combined"], "id": 9}, now + 1500) == {
        "result": True,
        "id": 9,
    }
    assert not s.must_close


@pytest.mark.parametrize(
    ("request_text", "code", "msg_start", "reply_id"),
    [
        (
            '{"method":"SUBSCRIBE","params":["dogeusdt@trade"],"id":7}',
            2,
            "Invalid request: invalid stream",
            7,
        ),
        (
            '{"method":"SUBSCRIBE","params":["btcusdt@kline_1w"],"id":7}',
            2,
            "Invalid request: invalid stream",
            7,
        ),
        ('{"method":"SUBSCRIBE","params":"btcusdt@trade","id":7}', 2, "Invalid request", 7),
        ('{"method":"SUBSCRIB","params":[],"id":1}', 2, "Invalid request: unknown variant `SUBSCRIB`", None),
        ('{"params":[],"id":1}', 2, "Invalid request: missing field `method`", None),
        (
            '{"method":"SUBSCRIBE","params":[]}',
            2,
            "Invalid request: request ID must be an unsigned integer",
            None,
        ),
        ('{"method":"SUBSCRIBE","params":[],"id":1.5}', 2, "Invalid request: request ID", None),
        ('{"method":"SUBSCRIBE","params":[],"id":"no-dash"}', 2, "Invalid request: request ID", None),
        ("not json", 3, "Invalid JSON", None),
        ("[1]", 2, "Invalid request", None),
        ('{"method":"GET_PROPERTY","params":["color"],"id":4}', 0, "Unknown property", 4),
        (
            '{"method":"SET_PROPERTY","params":["combined","yes"],"id":5}',
            1,
            "Invalid value type: expected Boolean",
            5,
        ),
        (
            '{"method":"SET_PROPERTY","params":[1],"id":5}',
            2,
            "Invalid request: property name must be a string",
            5,
        ),
    ],
)
def test_request_errors(request_text: str, code: int, msg_start: str, reply_id: Any) -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/stream?streams=btcusdt@trade")
    (frame,) = s.on_text(request_text, START_MS)
    doc = json.loads(frame.text)
    assert set(doc) == {"error", "id"} and doc["id"] == reply_id
    assert doc["error"]["code"] == code and doc["error"]["msg"].startswith(msg_start)
    (status,) = parse(frame)
    assert isinstance(status, VenueStatus) and status.kind == "error" and status.code == code
    assert s.streams == ["btcusdt@trade"]  # a refused request changes nothing


def test_unknown_variant_position_like_serde() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/ws")
    (frame,) = s.on_text('{"method":"FOO","id":1}', START_MS)
    assert json.loads(frame.text)["error"]["msg"].endswith("at line 1 column 15")


def test_subscribe_beyond_1024_streams_is_refused() -> None:
    market = FakeMarket()
    market.specs = {f"S{i}USDT": InstrumentSpec(f"S{i}USDT", 2, 2, 100) for i in range(520)}
    sim = BinanceSim(market)
    s = session(sim, "/ws")
    names = [f"s{i}usdt@{kind}" for i in range(520) for kind in ("trade", "depth")]
    assert ask(s, {"method": "SUBSCRIBE", "params": names[:1024], "id": 1}, START_MS)["result"] is None
    assert ask(s, {"method": "SUBSCRIBE", "params": names[:10], "id": 2}, START_MS + 1000)["result"] is None
    reply = ask(s, {"method": "SUBSCRIBE", "params": names[1024:1025], "id": 3}, START_MS + 2000)
    assert reply["error"]["code"] == 2 and len(s.streams) == 1024


def test_rate_limit_six_messages_in_a_second() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/ws")
    list_subs = '{"method":"LIST_SUBSCRIPTIONS","id":1}'
    # Five per second for three seconds is within the limit.
    for k in range(15):
        assert s.on_text(list_subs, START_MS + k * 200)
        assert not s.must_close
    # Then six within one second: the sixth is not answered and the session must close.
    base = START_MS + 10_000
    for k in range(5):
        assert s.on_text(list_subs, base + k * 100)
    assert not s.must_close
    assert s.on_text(list_subs, base + 999) == []
    assert s.must_close and "5 incoming messages per second" in s.close_reason


def test_ping_pong_frames_count_too() -> None:
    sim = BinanceSim(FakeMarket())
    s = session(sim, "/ws")
    for k in range(3):
        assert not s.count_incoming(START_MS + k)  # pings / pongs reported by the server
    s.on_text('{"method":"LIST_SUBSCRIPTIONS","id":1}', START_MS + 10)
    s.on_text('{"method":"LIST_SUBSCRIPTIONS","id":1}', START_MS + 20)
    assert not s.must_close
    assert s.count_incoming(START_MS + 30) and s.must_close


# -- book sync: mmdata's SequenceSync and an independent model --------------------------------------
class Client:
    """A recording client: one session, one SequenceSync per symbol, snapshot answers delayed."""

    def __init__(self, sim: BinanceSim, path: str, now: int, delay: int, snapshot_first: bool) -> None:
        self.session = session(sim, path, now)
        self.delay = delay
        self.engines = {sym: SequenceSync(sym) for sym in ("BTCUSDT", "ETHBTC")}
        self.due: list[tuple[int, str]] = []  # (step index to answer at, symbol)
        self.raw_diffs: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.trades: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
        self.snapshots: dict[str, list[int]] = defaultdict(list)
        self.gaps: list[GapDetected] = []
        if snapshot_first:  # a snapshot taken before the stream's first diff
            self.due = [(-1, sym) for sym in self.engines]

    def feed(self, frames: list[OutFrame], index: int) -> None:
        for frame in frames:
            for event in parse(frame):
                if isinstance(event, Trade):
                    self.trades[event.symbol].append(
                        (int(event.trade_id), event.price, event.qty, event.side)
                    )
                elif isinstance(event, BookDiff):
                    doc = json.loads(frame.text)
                    self.raw_diffs[event.symbol].append(doc.get("data", doc))
                    self.handle(self.engines[event.symbol].receive(event), index)

    def handle(self, outputs: Any, index: int) -> None:
        for out in outputs:
            if isinstance(out, NeedSnapshot):
                self.due.append((index + self.delay, out.symbol))
            elif isinstance(out, GapDetected):
                self.gaps.append(out)

    def answer_snapshots(self, sim: BinanceSim, index: int, now: int) -> None:
        ready = [d for d in self.due if d[0] <= index]
        self.due = [d for d in self.due if d[0] > index]
        for _, symbol in ready:
            resp = sim.rest("/api/v3/depth", {"symbol": symbol, "limit": "5000"}, now)
            assert resp.status == 200
            snap = ADAPTER.parse_snapshot(symbol, resp.body)
            assert snap.update_id is not None
            self.snapshots[symbol].append(snap.update_id)
            self.handle(self.engines[symbol].receive(snap), index)


def run_market(seed: int, n_steps: int = 1200) -> tuple[FakeMarket, list[Client]]:
    market = FakeMarket(seed)
    sim = BinanceSim(market, weight_limit=10**9)
    rng = random.Random(seed + 1)
    plans = {  # join step -> (path, snapshot delay in steps, snapshot before first diff)
        0: ("/stream?streams=btcusdt@depth@100ms/ethbtc@depth@100ms/btcusdt@trade/ethbtc@trade", 0, False),
        3: ("/ws/btcusdt@depth@100ms/ethbtc@depth@100ms", 5, False),
        40: ("/stream?streams=btcusdt@depth@100ms/ethbtc@depth@100ms", 17, False),
        41: ("/stream?streams=btcusdt@depth@100ms/ethbtc@depth@100ms", 0, True),
        333: ("/ws/btcusdt@depth/ethbtc@depth", 60, False),
        777: ("/stream?streams=btcusdt@depth@100ms/ethbtc@depth@100ms", 1, False),
    }
    clients: list[Client] = []
    now = START_MS
    next_tick = now + 100
    for index in range(n_steps):
        now += rng.choice((0, 3, 10, 25, 40, 70))
        while now >= next_tick:
            for client in clients:
                client.feed(client.session.on_tick(next_tick), index)
                client.answer_snapshots(sim, index, next_tick)
                # Right after a 100 ms flush a synced @depth@100ms client holds the market's book.
                if "@100ms" in client.session.streams[0]:
                    for symbol, engine in client.engines.items():
                        if engine.state is SyncState.SYNCED:
                            assert engine.book.top() == market_text(market, symbol)
            next_tick += 100
        if index in plans:
            path, delay, snapshot_first = plans[index]
            clients.append(Client(sim, path, now, delay, snapshot_first))
        symbol = rng.choice(("BTCUSDT", "BTCUSDT", "ETHBTC"))
        step = market.step(symbol, now)
        for client in clients:
            client.feed(client.session.on_step(step), index)
            client.answer_snapshots(sim, index, now)  # some snapshots land mid-batch (overlap case)
    end = next_tick + 1000  # flush everything, 100 ms and 1000 ms streams alike
    for client in clients:
        client.feed(client.session.on_tick(end), n_steps)
        client.answer_snapshots(sim, n_steps + 10**6, end)
        client.feed(client.session.on_tick(end + 1000), n_steps)
    return market, clients


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sequence_sync_ends_synced_and_equal(seed: int) -> None:
    market, clients = run_market(seed)
    for client in clients:
        assert client.gaps == []
        for symbol, engine in client.engines.items():
            assert engine.state is SyncState.SYNCED, (client.session, symbol, engine.stats)
            assert engine.stats.gaps == 0 and engine.stats.crossed_states == 0
            assert engine.book.top() == market_text(market, symbol)
            assert engine.update_id == market.update_id(symbol)


@pytest.mark.parametrize("seed", [4, 5])
def test_independent_update_id_continuity_and_book(seed: int) -> None:
    """U/u rules of §A.4 checked directly on the wire JSON, and a dict book rebuilt from it."""
    _, clients = run_market(seed)
    for client in clients:
        for symbol, diffs in client.raw_diffs.items():
            for prev, cur in itertools.pairwise(diffs):
                assert cur["U"] == prev["u"] + 1
            for diff in diffs:
                assert diff["U"] <= diff["u"] and diff["s"] == symbol
                prices = [b[0] for b in diff["b"]]
                assert prices == sorted(prices, key=Decimal, reverse=True) and len(set(prices)) == len(prices)
                prices = [a[0] for a in diff["a"]]
                assert prices == sorted(prices, key=Decimal) and len(set(prices)) == len(prices)
            # Every snapshot is bridged: the first diff with u > L has U <= L + 1.
            for last_id in client.snapshots[symbol]:
                later = [d for d in diffs if d["u"] > last_id]
                if later and last_id >= diffs[0]["U"] - 1:
                    assert later[0]["U"] <= last_id + 1 <= later[0]["u"]
    # Rebuild one client's books with plain dicts from a fresh snapshot and its later diffs.
    market2 = FakeMarket(seed + 100)
    sim = BinanceSim(market2)
    s = session(sim, "/stream?streams=btcusdt@depth@100ms")
    now = START_MS
    diffs = []
    snapshot = None
    for index in range(400):
        now += 20
        s_step = market2.step("BTCUSDT", now)
        s.on_step(s_step)
        if index == 37:  # mid-batch: pending changes older and newer than lastUpdateId
            snapshot = body(sim.rest("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "1000"}, now))
        diffs += [json.loads(f.text)["data"] for f in s.on_tick(now)]
    diffs += [json.loads(f.text)["data"] for f in s.on_tick(now + 100)]
    assert snapshot is not None
    book = {"b": dict(snapshot["bids"]), "a": dict(snapshot["asks"])}
    last = snapshot["lastUpdateId"]
    applied = 0
    for diff in diffs:
        if diff["u"] <= last:
            continue
        assert diff["U"] <= last + 1 <= diff["u"]
        if not applied:  # taken mid-batch, the snapshot falls strictly inside the first diff
            assert diff["U"] < last + 1
        for side in ("b", "a"):
            for price, qty in diff[side]:
                if Decimal(qty) == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
        last = diff["u"]
        applied += 1
    assert applied > 10 and last == market2.update_id("BTCUSDT")
    bids, asks = market_text(market2, "BTCUSDT")
    assert sorted(book["b"].items(), key=lambda kv: -Decimal(kv[0])) == bids
    assert sorted(book["a"].items(), key=lambda kv: Decimal(kv[0])) == asks


def test_trades_on_stream_are_every_live_trade_once() -> None:
    market, clients = run_market(9, n_steps=600)
    first = clients[0]  # joined before the first step, subscribed to both trade streams
    for symbol, spec in market.specs.items():
        pp, qp = spec.price_precision, spec.qty_precision
        live = [
            (t.trade_id, text8(t.price, pp), text8(t.qty, qp), t.side)
            for t in market.trade_log[symbol]
            if t.trade_id > 250
        ]
        assert live and first.trades[symbol] == live


# -- REST -----------------------------------------------------------------------------------------------
def test_depth_snapshot_shape_limit_and_weight() -> None:
    market = FakeMarket()
    sim = BinanceSim(market)
    resp = sim.rest("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "5"}, START_MS)
    assert resp.status == 200 and resp.headers["X-MBX-USED-WEIGHT-1M"] == "5"
    doc = body(resp)
    assert doc["lastUpdateId"] == 5_000
    bids, asks = market_text(market, "BTCUSDT")
    assert [tuple(level) for level in doc["bids"]] == bids[:5]
    assert [tuple(level) for level in doc["asks"]] == asks[:5]
    assert doc["bids"][0] == ["61837.62000000", text8(market.bids["BTCUSDT"][6_183_762], 5)]
    snap = ADAPTER.parse_snapshot("BTCUSDT", resp.body)
    assert snap.update_id == 5_000
    expected_weight = 5
    for limit, weight in (("100", 5), ("101", 25), ("500", 25), ("1000", 50), ("1001", 250), ("9999", 250)):
        expected_weight += weight
        resp = sim.rest("/api/v3/depth", {"symbol": "ETHBTC", "limit": limit}, START_MS + 1)
        assert resp.status == 200 and resp.headers["X-MBX-USED-WEIGHT-1M"] == str(expected_weight)
    assert len(body(resp)["bids"]) == 20  # limit > 5000 serves what there is, up to 5000
    default = body(sim.rest("/api/v3/depth", {"symbol": "ETHBTC"}, START_MS + 2))
    assert default["asks"][0] == ["0.05200100", text8(market.asks["ETHBTC"][52_001], 4)]


def test_weights_429_and_minute_reset() -> None:
    sim = BinanceSim(FakeMarket(), weight_limit=60)
    minute = (START_MS // 60_000 + 1) * 60_000
    now = minute + 10_500
    calls = [
        ("/api/v3/depth", {"symbol": "BTCUSDT"}, 5),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"}, 7),
        ("/api/v3/aggTrades", {"symbol": "BTCUSDT"}, 11),
        ("/api/v3/ping", {}, 12),
        ("/api/v3/time", {}, 13),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "500"}, 38),
        ("/api/v3/depth", {"symbol": "NOPE"}, 43),  # refused requests cost their weight too
    ]
    for path, query, used in calls:
        resp = sim.rest(path, query, now)
        assert resp.headers["X-MBX-USED-WEIGHT-1M"] == str(used), path
    assert body(sim.rest("/api/v3/ping", {}, now)) == {}
    assert body(sim.rest("/api/v3/time", {}, now)) == {"serverTime": now}
    resp = sim.rest("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "1000"}, now)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "50"  # ceil(49.5 s) to the next minute
    assert body(resp)["code"] == -1003 and "60 request weight per 1 MINUTE" in body(resp)["msg"]
    assert sim.rest("/api/v3/ping", {}, now + 1000).status == 429  # still over in this minute
    resp = sim.rest("/api/v3/ping", {}, minute + 60_000)
    assert resp.status == 200 and resp.headers["X-MBX-USED-WEIGHT-1M"] == "1"


@pytest.mark.parametrize(
    ("path", "query", "status", "code"),
    [
        ("/api/v3/depth", {}, 400, -1102),
        ("/api/v3/depth", {"symbol": ""}, 400, -1102),
        ("/api/v3/depth", {"symbol": "btcusdt"}, 400, -1100),
        ("/api/v3/depth", {"symbol": "DOGEUSDT"}, 400, -1121),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "ten"}, 400, -1100),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "0"}, 400, -1130),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "-5"}, 400, -1100),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "depth": "5"}, 400, -1104),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "symbolStatus": "HALT"}, 400, -1220),
        ("/api/v3/depth", {"symbol": "BTCUSDT", "symbolStatus": "TRADING"}, 200, None),
        ("/api/v3/klines", {"symbol": "BTCUSDT"}, 400, -1102),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1s"}, 400, -1120),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1M"}, 400, -1120),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "startTime": "x"}, 400, -1100),
        ("/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "timeZone": "8"}, 400, -1130),
        ("/api/v3/aggTrades", {"symbol": "BTCUSDT", "fromId": "1.5"}, 400, -1100),
        ("/api/v3/aggTrades", {"symbol": "ETHUSDT"}, 400, -1121),
        ("/api/v3/aggTrades", {}, 400, -1102),
        ("/api/v3/historicalTrades", {"symbol": "BTCUSDT"}, 404, None),
        ("/api/v1/depth", {"symbol": "BTCUSDT"}, 404, None),
    ],
)
def test_rest_errors(path: str, query: dict[str, str], status: int, code: int | None) -> None:
    sim = BinanceSim(FakeMarket())
    resp = sim.rest(path, query, START_MS)
    assert resp.status == status
    if code is not None:
        doc = body(resp)
        assert set(doc) == {"code", "msg"} and doc["code"] == code and doc["msg"]
        assert "X-MBX-USED-WEIGHT-1M" in resp.headers
    if code is not None and path == "/api/v3/depth":
        with pytest.raises(ExchangeProtocolError, match="refused"):
            ADAPTER.parse_snapshot("BTCUSDT", resp.body)


def floor8(value: Decimal) -> str:
    return f"{value.quantize(Decimal('1e-8'), rounding='ROUND_FLOOR'):.8f}"


def expected_klines(
    trades: list[SimTrade], interval: int, first: int, newest: int, *, pp: int, qp: int
) -> list[list[Any]]:
    """Brute force, formatted with Decimal: one row per interval in ``[first, newest]`` from the
    first trade on; an interval without trades repeats the previous close with no volume."""
    buckets: dict[int, list[SimTrade]] = defaultdict(list)
    for t in trades:
        buckets[t.ts_ms - t.ts_ms % interval].append(t)
    rows = []
    for open_ms in range(first - first % interval, newest + 1, interval):
        ts = sorted(buckets.get(open_ms, []), key=lambda t: t.trade_id)
        if not ts:
            before = [t for t in trades if t.ts_ms < open_ms]
            if not before:
                continue  # before the symbol's first trade: no kline
            close = text8(max(before, key=lambda t: t.trade_id).price, pp)
            zero = "0.00000000"
            rows.append(
                [open_ms, close, close, close, close, zero, open_ms + interval - 1, zero, 0, zero, zero, "0"]
            )
            continue
        value = [Decimal(t.price).scaleb(-pp) * Decimal(t.qty).scaleb(-qp) for t in ts]
        rows.append(
            [
                open_ms,
                text8(ts[0].price, pp),
                text8(max(t.price for t in ts), pp),
                text8(min(t.price for t in ts), pp),
                text8(ts[-1].price, pp),
                text8(sum(t.qty for t in ts), qp),
                open_ms + interval - 1,
                floor8(sum(value, Decimal(0))),
                len(ts),
                text8(sum(t.qty for t in ts if t.side == "buy"), qp),
                floor8(sum((v for v, t in zip(value, ts, strict=True) if t.side == "buy"), Decimal(0))),
                "0",
            ]
        )
    return rows


@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHBTC"])
def test_klines_equal_brute_force(symbol: str) -> None:
    market = FakeMarket(3)
    sim = BinanceSim(market, weight_limit=10**9)
    spec = market.specs[symbol]
    pp, qp = spec.price_precision, spec.qty_precision
    trades = market.trade_log[symbol]
    now = START_MS + 5_000
    m = 60_000

    def klines(**query: str) -> list[list[Any]]:
        resp = sim.rest("/api/v3/klines", {"symbol": symbol, **query}, now)
        assert resp.status == 200, resp.body
        return body(resp)  # type: ignore[no-any-return]

    def expected(interval: int, first: int, newest: int) -> list[list[Any]]:
        return expected_klines(trades, interval, first, newest, pp=pp, qp=qp)

    for name, interval in (("1m", m), ("5m", 5 * m), ("1h", 60 * m), ("1d", 1440 * m)):
        # Neither start nor end: the most recent `limit` intervals up to now (the running one included).
        newest = now // interval * interval
        assert klines(interval=name, limit="1000") == expected(interval, newest - 999 * interval, newest)
        assert klines(interval=name, limit="3") == expected(interval, newest - 2 * interval, newest)
    everything = expected(m, trades[0].ts_ms, now)
    assert len(everything) > 200 and sum(row[8] == 0 for row in everything) > 20  # empty minutes filled
    assert sum(row[8] for row in everything) == len(trades)
    one_m = {row[0]: n for n, row in enumerate(everything)}
    t10 = everything[10][0]
    # Only startTime: the oldest `limit` from startTime (klines open at or after it).
    assert klines(interval="1m", startTime=str(t10 - 30_000), limit="7") == everything[10:17]
    # A startTime before the first trade: klines start with the first trade's interval.
    assert klines(interval="1m", startTime=str(trades[0].ts_ms - 3_600_000), limit="5") == everything[:5]
    # Only endTime: the most recent up to endTime (open time <= endTime).
    t30 = everything[30][0]
    assert klines(interval="1m", endTime=str(t30 + 59_999), limit="20") == everything[11:31]
    assert klines(interval="1m", endTime=str(t30), limit="1000") == everything[:31]  # history starts there
    # Both: the range, capped by limit, oldest first; an endTime in the future stops at now.
    t25 = everything[25][0]
    assert klines(interval="1m", startTime=str(t10), endTime=str(t25)) == everything[10:26]
    assert klines(interval="1m", startTime=str(t10), endTime=str(t25), limit="4") == everything[10:14]
    assert klines(interval="1m", startTime=str(t25), endTime=str(t10)) == []
    assert (
        klines(interval="1m", startTime=str(now // m * m - 3 * m), endTime=str(now + 10 * m))
        == everything[-4:]
    )
    assert klines(interval="1m", startTime=str(now + m)) == []
    assert klines(interval="5m") == expected(5 * m, now // (5 * m) * 5 * m - 499 * 5 * m, now)  # default 500
    assert len(one_m) == len(everything) and all(len(row) == 12 for row in everything)


def test_aggtrades_paging_and_windows() -> None:
    market = FakeMarket(5)
    sim = BinanceSim(market, weight_limit=10**9)
    now = START_MS
    for _ in range(300):  # add live trades to the past ones
        now += 37
        market.step("BTCUSDT", now)
    log = market.trade_log["BTCUSDT"]
    assert len(log) > 280

    def agg(**query: str) -> list[dict[str, Any]]:
        resp = sim.rest("/api/v3/aggTrades", {"symbol": "BTCUSDT", **query}, now)
        assert resp.status == 200 and resp.headers["X-MBX-USED-WEIGHT-1M"]
        return body(resp)  # type: ignore[no-any-return]

    seen: list[int] = []
    from_id = 0
    while True:
        rows = agg(fromId=str(from_id), limit="37")
        if not rows:
            break
        assert len(rows) <= 37
        seen += [r["a"] for r in rows]
        from_id = rows[-1]["a"] + 1
    assert seen == [t.trade_id for t in log]  # every trade exactly once, in order
    t = log[100]
    (row,) = agg(fromId=str(t.trade_id), limit="1")
    assert row == {
        "a": t.trade_id,
        "p": text8(t.price, 2),
        "q": text8(t.qty, 5),
        "f": t.trade_id,
        "l": t.trade_id,
        "T": t.ts_ms,
        "m": t.side == "sell",
        "M": True,
    }
    # startTime and endTime are both inclusive.
    lo, hi = log[40].ts_ms, log[90].ts_ms
    assert [r["a"] for r in agg(startTime=str(lo), endTime=str(hi), limit="1000")] == [
        x.trade_id for x in log if lo <= x.ts_ms <= hi
    ]
    # Only startTime: oldest first from it; only endTime / nothing: the most recent, ascending.
    assert [r["a"] for r in agg(startTime=str(lo), limit="5")] == [x.trade_id for x in log if x.ts_ms >= lo][
        :5
    ]
    assert [r["a"] for r in agg(endTime=str(hi), limit="5")] == [x.trade_id for x in log if x.ts_ms <= hi][
        -5:
    ]
    assert [r["a"] for r in agg()] == [x.trade_id for x in log][-500:]
    assert len(agg(limit="5000")) == min(1000, len(log))


def test_klines_without_taker_fields_reads_trades_only_for_the_candle() -> None:
    """SimCandle has no taker-buy volumes: the simulator sums the candle's own trades."""
    market = FakeMarket(11)
    sim = BinanceSim(market)
    calls: list[dict[str, Any]] = []
    original = market.trades

    def spy(symbol: str, **kwargs: Any) -> list[SimTrade]:
        calls.append(kwargs)
        return original(symbol, **kwargs)

    market.trades = spy  # type: ignore[method-assign]
    query = {"symbol": "ETHBTC", "interval": "1h", "startTime": str(START_MS - 5 * 3_600_000)}
    rows = body(sim.rest("/api/v3/klines", query, START_MS))
    traded = [row for row in rows if row[8]]
    assert len(traded) >= 2 and len(traded) == len(calls) < len(rows)  # filled-in klines read nothing
    assert [c["limit"] for c in calls] == [row[8] for row in traded]  # exactly the candle's trades
    # Finished minutes are remembered: the same hours again, or as minutes, read no trades.
    calls.clear()
    assert body(sim.rest("/api/v3/klines", query, START_MS + 1)) == rows
    minutes = {**query, "interval": "1m", "limit": "1000"}
    assert sum(row[8] for row in body(sim.rest("/api/v3/klines", minutes, START_MS + 1))) == 250
    assert calls == []
