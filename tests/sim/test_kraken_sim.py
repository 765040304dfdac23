"""Simulated Kraken Spot WebSocket v2 + REST (``mmdata.sim.kraken``) against PROTOCOLS.md §B.

The market here is a small deterministic fake (:class:`FakeMarket`) that implements the
``Market`` protocol with scripted, seeded steps: inserts into the middle of the book,
deletes inside the window, bursts of better levels that push others out, trades that
sweep levels, thin sides, several changes to one price in one step, deep churn. Its
``book()`` / ``trades()`` / ``candles()`` are brute force, so they are the oracle.

Every frame the simulator sends is parsed with mmdata's own client parser, and book
frames are checked three ways: by ``ChecksumSync.kraken`` (the real client engine), by an
independent Decimal implementation of §B.3 written here, and against the exact frame
content the truncation rule (§B.2) demands, derived from the market by brute force.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mmdata.exchanges
from mmdata.book.sync import ChecksumMismatch, ChecksumSync, SyncState
from mmdata.sim.kraken import BOOK_DEPTHS, KrakenSession, KrakenSim
from mmdata.sim.model import (
    InstrumentSpec,
    LevelChange,
    MarketStep,
    OutFrame,
    RestResponse,
    SimTrade,
)
from mmdata.types import Ack, BookSnapshot, Instrument, Trade, Unknown, VenueStatus
from tests.sim.oracles import BruteMarketQueries, brute_candles

KRAKEN = mmdata.exchanges.get("kraken")
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
BTC = InstrumentSpec("BTC/USD", price_precision=1, qty_precision=8, start_price=450_000, levels=60)
ETH = InstrumentSpec("ETH/USD", price_precision=2, qty_precision=6, start_price=300_000, tick=5, levels=60)


# -- a deterministic fake market ------------------------------------------------------------------
class FakeMarket(BruteMarketQueries):
    """Implements ``mmdata.sim.model.Market`` with seeded scripted churn; brute-force queries."""

    def __init__(
        self,
        specs: Iterable[InstrumentSpec] = (BTC, ETH),
        *,
        seed: int = 1,
        start_ms: int = T0,
        past_trades: Mapping[str, list[SimTrade]] | None = None,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.start_ms = start_ms
        self.rng = random.Random(seed)
        self.bids: dict[str, dict[int, int]] = {}
        self.asks: dict[str, dict[int, int]] = {}
        self.uid: dict[str, int] = {}
        self.trade_log: dict[str, list[SimTrade]] = {}
        for sym, spec in self.specs.items():
            t = spec.tick
            # Every other tick is free, so inserts into the middle of the book are possible.
            self.bids[sym] = {spec.start_price - t * (2 * i + 1): self._qty() for i in range(spec.levels)}
            self.asks[sym] = {spec.start_price + t * (2 * i + 1): self._qty() for i in range(spec.levels)}
            self.uid[sym] = 1000
            self.trade_log[sym] = list((past_trades or {}).get(sym, []))
        self.next_trade_id = {
            s: (self.trade_log[s][-1].trade_id + 1 if self.trade_log[s] else 1) for s in self.specs
        }

    def _qty(self) -> int:
        return self.rng.randrange(1, 5_000_000_000)

    # -- Market protocol ------------------------------------------------------------------------
    def step(self, symbol: str, ts_ms: int) -> MarketStep:
        actions: list[Callable[[str, int], tuple[list[LevelChange], list[SimTrade]]]] = [
            self._insert_mid,
            self._insert_mid,
            self._delete_in_window,
            self._delete_in_window,
            self._change_qty,
            self._change_qty,
            self._push_out,
            self._deep,
            self._trade,
            self._same_price_twice,
            self._thin_or_refill,
        ]
        changes: list[LevelChange] = []
        trades: list[SimTrade] = []
        while not changes:
            changes, trades = self.rng.choice(actions)(symbol, ts_ms)
        return self.apply(symbol, ts_ms, changes, trades)

    # -- scripted steps -------------------------------------------------------------------------
    def apply(
        self, symbol: str, ts_ms: int, changes: list[LevelChange], trades: Iterable[SimTrade] = ()
    ) -> MarketStep:
        """Apply explicit changes (absolute quantities) as one step."""
        for ch in changes:
            side = self.bids[symbol] if ch.side == "bid" else self.asks[symbol]
            if ch.qty:
                side[ch.price] = ch.qty
            else:
                side.pop(ch.price, None)
        first = self.uid[symbol] + 1
        self.uid[symbol] += len(changes)
        trades = tuple(trades)
        self.trade_log[symbol].extend(trades)
        return MarketStep(symbol, ts_ms, first, self.uid[symbol], tuple(changes), trades)

    def _side(self, symbol: str, side: str) -> list[int]:
        """Prices best first."""
        if side == "bid":
            return sorted(self.bids[symbol], reverse=True)
        return sorted(self.asks[symbol])

    def _free_price(self, symbol: str, side: str, lo_rank: int, hi_rank: int) -> int | None:
        """A free price between the levels ranked ``lo_rank``..``hi_rank`` of ``side``."""
        prices = self._side(symbol, side)
        tick = self.specs[symbol].tick
        if len(prices) < 2:
            return None
        hi_rank = min(hi_rank, len(prices) - 1)
        for _ in range(8):
            rank = self.rng.randrange(lo_rank, max(lo_rank + 1, hi_rank))
            if rank + 1 >= len(prices):
                continue
            a, b = prices[rank], prices[rank + 1]
            gap = abs(a - b) // tick
            if gap >= 2:
                step = self.rng.randrange(1, gap)
                return a - step * tick if side == "bid" else a + step * tick
        return None

    def _insert_mid(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        side = self.rng.choice(["bid", "ask"])
        price = self._free_price(symbol, side, 0, 12)
        return ([LevelChange(side, price, self._qty())] if price else []), []  # type: ignore[arg-type]

    def _delete_in_window(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        side = self.rng.choice(["bid", "ask"])
        prices = self._side(symbol, side)
        if len(prices) < 3:
            return [], []
        n = self.rng.choice([1, 1, 1, 2, 3])
        picked = self.rng.sample(prices[: min(26, len(prices))], min(n, len(prices) - 1))
        return [LevelChange(side, p, 0) for p in picked], []  # type: ignore[arg-type]

    def _change_qty(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        side = self.rng.choice(["bid", "ask"])
        prices = self._side(symbol, side)
        if not prices:
            return [], []
        p = self.rng.choice(prices[:30])
        return [LevelChange(side, p, self._qty())], []  # type: ignore[arg-type]

    def _push_out(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        """Several new best levels on one side (pushes levels out of the window)."""
        side = self.rng.choice(["bid", "ask"])
        bids, asks = self._side(symbol, "bid"), self._side(symbol, "ask")
        tick = self.specs[symbol].tick
        if not bids or not asks:
            return [], []
        room = (asks[0] - bids[0]) // tick - 1
        if room < 1:
            # No room inside the spread: widen it by deleting the best level of the other side.
            other = "ask" if side == "bid" else "bid"
            top = asks[0] if other == "ask" else bids[0]
            return [LevelChange(other, top, 0)], []  # type: ignore[arg-type]
        count = self.rng.randrange(1, min(room, 4) + 1)
        if side == "bid":
            prices = [bids[0] + tick * (i + 1) for i in range(count)]
        else:
            prices = [asks[0] - tick * (i + 1) for i in range(count)]
        return [LevelChange(side, p, self._qty()) for p in prices], []  # type: ignore[arg-type]

    def _deep(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        """Churn far from the top only (changes nothing in a depth-25 window)."""
        side = self.rng.choice(["bid", "ask"])
        prices = self._side(symbol, side)
        if len(prices) < 40:
            tick = self.specs[symbol].tick
            worst = prices[-1] if prices else self.specs[symbol].start_price
            p = worst - 3 * tick if side == "bid" else worst + 3 * tick
            return [LevelChange(side, p, self._qty())], []  # type: ignore[arg-type]
        p = self.rng.choice(prices[30:])
        qty = self.rng.choice([0, self._qty()])
        return [LevelChange(side, p, qty)], []  # type: ignore[arg-type]

    def _trade(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        """A taker sweeping 1-3 levels: several trades in the same millisecond."""
        taker = self.rng.choice(["buy", "sell"])
        side = "ask" if taker == "buy" else "bid"
        book = self.asks[symbol] if side == "ask" else self.bids[symbol]
        prices = self._side(symbol, side)
        if len(prices) < 5:
            return [], []
        changes: list[LevelChange] = []
        trades: list[SimTrade] = []
        for i in range(self.rng.randrange(1, 4)):
            p = prices[i]
            full = i < 2 and self.rng.random() < 0.6
            qty = book[p] if full else self.rng.randrange(1, book[p])
            changes.append(LevelChange(side, p, 0 if full else book[p] - qty))  # type: ignore[arg-type]
            trades.append(SimTrade(self.next_trade_id[symbol], ts, p, qty, taker))  # type: ignore[arg-type]
            self.next_trade_id[symbol] += 1
            if not full:
                break
        return changes, trades

    def _same_price_twice(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        """Two changes to one visible price in one step (last one wins)."""
        side = self.rng.choice(["bid", "ask"])
        prices = self._side(symbol, side)
        if len(prices) < 3:
            return [], []
        p = self.rng.choice(prices[:8])
        if self.rng.random() < 0.5:
            seq = [LevelChange(side, p, self._qty()), LevelChange(side, p, 0)]  # type: ignore[arg-type]
        else:
            seq = [LevelChange(side, p, 0), LevelChange(side, p, self._qty())]  # type: ignore[arg-type]
        return seq, []

    def _thin_or_refill(self, symbol: str, ts: int) -> tuple[list[LevelChange], list[SimTrade]]:
        """Strip a side below depth 10/25 (forcing 'not full' books) or rebuild it deep."""
        side = self.rng.choice(["bid", "ask"])
        prices = self._side(symbol, side)
        tick = self.specs[symbol].tick
        if len(prices) > 30 and self.rng.random() < 0.3:
            keep = self.rng.choice([3, 8, 12, 20])
            return [LevelChange(side, p, 0) for p in prices[keep:]], []  # type: ignore[arg-type]
        if len(prices) < 60:
            worst = prices[-1] if prices else self.specs[symbol].start_price
            sign = -1 if side == "bid" else 1
            new = [worst + sign * tick * (2 * i + 2) for i in range(self.rng.randrange(5, 40))]
            return [LevelChange(side, p, self._qty()) for p in new if p > 0], []  # type: ignore[arg-type]
        return [], []


def past_trades(symbol: str, n: int, start_ms: int, *, seed: int = 7, spread_ms: int = 3) -> list[SimTrade]:
    """``n`` trades, many sharing a millisecond (gaps of 0..spread_ms ms)."""
    rng = random.Random(seed)
    out, ts, price = [], start_ms, 450_000
    for i in range(n):
        ts += rng.choice([0, 0, 0, 1, rng.randrange(0, spread_ms + 1)])
        price += rng.randrange(-20, 21)
        out.append(SimTrade(i + 1, ts, price, rng.randrange(1, 10**8), rng.choice(["buy", "sell"])))
    return out


# -- helpers ----------------------------------------------------------------------------------------
def parse_all(frames: Iterable[OutFrame]) -> list[Any]:
    """Every frame must parse with mmdata's Kraken adapter."""
    events: list[Any] = []
    for frame in frames:
        events.extend(KRAKEN.parse(frame.text))
    return events


def open_session(sim: KrakenSim, now_ms: int = T0) -> KrakenSession:
    session = sim.accept("/v2", now_ms)
    assert isinstance(session, KrakenSession)
    parse_all(session.on_open(now_ms))
    return session


def send(session: KrakenSession, request: dict[str, Any], now_ms: int = T0) -> list[OutFrame]:
    frames = session.on_text(json.dumps(request), now_ms)
    parse_all(frames)
    return frames


def subscribe_book(
    session: KrakenSession, symbols: list[str], depth: int | None = None, req_id: int | None = 2, **extra: Any
) -> list[OutFrame]:
    params: dict[str, Any] = {"channel": "book", "symbol": symbols, **extra}
    if depth is not None:
        params["depth"] = depth
    request: dict[str, Any] = {"method": "subscribe", "params": params}
    if req_id is not None:
        request["req_id"] = req_id
    return send(session, request)


def units(text: Decimal, precision: int) -> int:
    value = text.scaleb(precision)
    assert value == value.to_integral_value(), (text, precision)
    return int(value)


def decimal_checksum(
    asks: Iterable[tuple[Decimal, Decimal]], bids: Iterable[tuple[Decimal, Decimal]], pp: int, qp: int
) -> int:
    """PROTOCOLS.md §B.3 reference implementation, on Decimals (independent of mmdata.book)."""

    def fmt(v: Decimal, prec: int) -> str:
        return f"{v:.{prec}f}".replace(".", "").lstrip("0")

    a = sorted(asks, key=lambda lv: lv[0])[:10]
    b = sorted(bids, key=lambda lv: lv[0], reverse=True)[:10]
    s = "".join(fmt(p, pp) + fmt(q, qp) for p, q in a)
    s += "".join(fmt(p, pp) + fmt(q, qp) for p, q in b)
    return zlib.crc32(s.encode()) & 0xFFFFFFFF


class DecimalClient:
    """An independent §B.2/§B.3 client: Decimal book, apply in order, truncate, checksum."""

    def __init__(self, depth: int, pp: int, qp: int) -> None:
        self.depth, self.pp, self.qp = depth, pp, qp
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.checked = 0

    def feed(self, text: str) -> tuple[int, int]:
        """Apply a book frame; return (frame checksum, local checksum)."""
        msg = json.loads(text, parse_float=Decimal, parse_int=Decimal)
        (item,) = msg["data"]
        if msg["type"] == "snapshot":
            self.bids, self.asks = {}, {}
        for side, levels in ((self.bids, item["bids"]), (self.asks, item["asks"])):
            for level in levels:
                assert set(level) == {"price", "qty"}
                if level["qty"] == 0:
                    side.pop(level["price"], None)
                else:
                    side[level["price"]] = level["qty"]
        self.bids = dict(sorted(self.bids.items(), reverse=True)[: self.depth])
        self.asks = dict(sorted(self.asks.items())[: self.depth])
        self.checked += 1
        local = decimal_checksum(self.asks.items(), self.bids.items(), self.pp, self.qp)
        return int(item["checksum"]), local

    def window(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The book in integer units, best first."""
        bids = [(units(p, self.pp), units(q, self.qp)) for p, q in sorted(self.bids.items(), reverse=True)]
        asks = [(units(p, self.pp), units(q, self.qp)) for p, q in sorted(self.asks.items())]
        return bids, asks


def book_frames(frames: list[OutFrame], symbol: str) -> list[OutFrame]:
    return [f for f in frames if f.kind in ("snapshot", "diff") and f.symbol == symbol]


def levels_of(frame: OutFrame) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
    item = json.loads(frame.text, parse_float=Decimal, parse_int=Decimal)["data"][0]
    return (
        [(lv["price"], lv["qty"]) for lv in item["bids"]],
        [(lv["price"], lv["qty"]) for lv in item["asks"]],
    )


def to_units(levels: list[tuple[Decimal, Decimal]], spec: InstrumentSpec) -> set[tuple[int, int]]:
    return {(units(p, spec.price_precision), units(q, spec.qty_precision)) for p, q in levels}


def text_units(levels: list[tuple[str, str]], spec: InstrumentSpec) -> list[tuple[int, int]]:
    """Wire text levels (as ``LocalOrderBook`` holds them) → integer units, order kept."""
    return [
        (units(Decimal(p), spec.price_precision), units(Decimal(q), spec.qty_precision)) for p, q in levels
    ]


def expected_update(
    old: list[tuple[int, int]], new: list[tuple[int, int]], full_side: list[tuple[int, int]]
) -> set[tuple[int, int]]:
    """What §B.2 demands for one side: new/changed levels in the new window, 0 for vanished ones."""
    old_map, new_map = dict(old), dict(new)
    market = dict(full_side)
    want = {(p, q) for p, q in new if old_map.get(p) != q}
    want |= {(p, 0) for p in old_map if p not in new_map and p not in market}
    return want


# -- connection -------------------------------------------------------------------------------------
def test_accept_only_v2() -> None:
    sim = KrakenSim(FakeMarket())
    assert isinstance(sim.accept("/v2", T0), KrakenSession)
    assert isinstance(sim.accept("/v2?foo=1", T0), KrakenSession)
    for path in ("/", "/v1", "/ws", "/v2/book"):
        answer = sim.accept(path, T0)
        assert isinstance(answer, RestResponse) and answer.status == 404
    assert sim.name == "kraken"
    assert list(sim.symbols()) == ["BTC/USD", "ETH/USD"]


def test_status_frame_on_open() -> None:
    sim = KrakenSim(FakeMarket())
    a, b = open_session(sim), open_session(sim)
    (frame,) = a.on_open(T0)
    msg = json.loads(frame.text)
    assert frame.kind == "status"
    assert list(msg) == ["channel", "type", "data"]
    assert msg["channel"] == "status" and msg["type"] == "update"
    (data,) = msg["data"]
    assert list(data) == ["version", "system", "api_version", "connection_id"]
    assert data["version"] == "2.0.10" and data["system"] == "online" and data["api_version"] == "v2"
    assert type(data["connection_id"]) is int and 2**53 < data["connection_id"] < 2**64
    assert a.connection_id != b.connection_id
    (event,) = KRAKEN.parse(frame.text)
    assert isinstance(event, VenueStatus) and event.kind == "status"


def test_status_fault_hook() -> None:
    session = open_session(KrakenSim(FakeMarket()))
    frame = session.status_frame("maintenance", T0)
    assert frame.kind == "status"
    assert json.loads(frame.text)["data"][0]["system"] == "maintenance"
    (event,) = KRAKEN.parse(frame.text)
    assert isinstance(event, VenueStatus) and event.kind == "maintenance"
    assert KRAKEN.parse(session.status_frame("online", T0).text)[0].kind == "status"
    with pytest.raises(ValueError, match="system"):
        session.status_frame("sleeping", T0)


def test_ping_pong() -> None:
    session = open_session(KrakenSim(FakeMarket()))
    (frame,) = send(session, {"method": "ping", "req_id": 101}, T0 + 5)
    assert frame.kind == "pong"
    assert json.loads(frame.text) == {
        "method": "pong",
        "req_id": 101,
        "time_in": "2023-11-14T22:13:20.005000Z",
        "time_out": "2023-11-14T22:13:20.005000Z",
    }
    (no_id,) = send(session, {"method": "ping"})
    assert "req_id" not in json.loads(no_id.text)
    assert KRAKEN.parse(frame.text)[0].kind == "pong"


# -- instrument -------------------------------------------------------------------------------------
def test_instrument_subscription() -> None:
    session = open_session(KrakenSim(FakeMarket()))
    ack, snap = send(session, {"method": "subscribe", "params": {"channel": "instrument"}, "req_id": 1})
    assert json.loads(ack.text) == {
        "method": "subscribe",
        "req_id": 1,
        "result": {"channel": "instrument", "snapshot": True},
        "success": True,
        "time_in": "2023-11-14T22:13:20.000000Z",
        "time_out": "2023-11-14T22:13:20.000000Z",
    }
    msg = json.loads(snap.text)
    assert msg["channel"] == "instrument" and msg["type"] == "snapshot"
    assert isinstance(msg["data"]["assets"], list)
    pairs = {p["symbol"]: p for p in msg["data"]["pairs"]}
    assert set(pairs) == {"BTC/USD", "ETH/USD"}
    for pair in pairs.values():
        assert set(pair) == {
            "symbol", "base", "quote", "status", "qty_precision", "qty_increment", "price_precision",
            "price_increment", "cost_precision", "qty_min", "cost_min", "marginable", "has_index",
        }  # fmt: skip
    btc, eth = pairs["BTC/USD"], pairs["ETH/USD"]
    assert (btc["base"], btc["quote"], btc["status"]) == ("BTC", "USD", "online")
    assert (btc["price_precision"], btc["qty_precision"]) == (1, 8)
    assert '"qty_increment":1e-08' in snap.text and '"price_increment":0.1' in snap.text
    assert eth["price_increment"] == 0.05 and eth["qty_increment"] == 1e-06
    events = KRAKEN.parse(snap.text)
    assert {(e.symbol, e.price_precision, e.qty_precision) for e in events if isinstance(e, Instrument)} == {
        ("BTC/USD", 1, 8),
        ("ETH/USD", 2, 6),
    }
    (again,) = send(session, {"method": "subscribe", "params": {"channel": "instrument"}})
    assert json.loads(again.text)["error"] == "Already subscribed"
    (unsub,) = send(session, {"method": "unsubscribe", "params": {"channel": "instrument"}})
    assert json.loads(unsub.text)["success"] is True
    quiet = send(session, {"method": "subscribe", "params": {"channel": "instrument", "snapshot": False}})
    assert len(quiet) == 1


# -- book subscription ------------------------------------------------------------------------------
def test_book_ack_per_symbol_then_snapshots() -> None:
    market = FakeMarket()
    session = open_session(KrakenSim(market))
    frames = subscribe_book(session, ["BTC/USD", "ETH/USD"], depth=25, req_id=7)
    assert [f.kind for f in frames] == ["ack", "ack", "snapshot", "snapshot"]
    for frame, symbol in zip(frames[:2], ["BTC/USD", "ETH/USD"], strict=True):
        assert frame.text == (
            '{"method":"subscribe","req_id":7,"result":{"channel":"book","depth":25,"snapshot":true,'
            f'"symbol":"{symbol}"}},"success":true,"time_in":"2023-11-14T22:13:20.000000Z",'
            '"time_out":"2023-11-14T22:13:20.000000Z"}'
        )
        (ack,) = KRAKEN.parse(frame.text)
        assert isinstance(ack, Ack) and ack.ok and ack.symbol == symbol and ack.depth == 25
    for frame, spec in zip(frames[2:], [BTC, ETH], strict=True):
        msg = json.loads(frame.text, parse_float=Decimal, parse_int=Decimal)
        assert list(msg) == ["channel", "type", "data"]
        (item,) = msg["data"]
        assert list(item) == ["symbol", "bids", "asks", "checksum", "timestamp"]
        assert item["timestamp"] == "2023-11-14T22:13:20.000000Z"
        bids, asks = market.book(spec.symbol)
        got_bids, got_asks = levels_of(frame)
        assert sorted(to_units(got_bids, spec), reverse=True) == bids[:25]
        assert sorted(to_units(got_asks, spec)) == asks[:25]
        assert [units(p, spec.price_precision) for p, _ in got_bids] == [
            p for p, _ in bids[:25]
        ]  # best first
        assert [units(p, spec.price_precision) for p, _ in got_asks] == [p for p, _ in asks[:25]]
        levels = (
            [(lv["price"], lv["qty"]) for lv in item["asks"]],
            [(lv["price"], lv["qty"]) for lv in item["bids"]],
        )
        assert int(item["checksum"]) == decimal_checksum(*levels, spec.price_precision, spec.qty_precision)
        (snap,) = KRAKEN.parse(frame.text)
        assert isinstance(snap, BookSnapshot) and snap.symbol == spec.symbol


def test_book_defaults_and_number_format() -> None:
    market = FakeMarket(seed=3)
    session = open_session(KrakenSim(market))
    ack, snap = subscribe_book(session, ["BTC/USD"], req_id=None)
    assert json.loads(ack.text)["result"] == {
        "channel": "book",
        "depth": 10,
        "snapshot": True,
        "symbol": "BTC/USD",
    }
    assert "req_id" not in json.loads(ack.text)
    bids, asks = levels_of(snap)
    assert len(bids) == len(asks) == 10
    # JSON numbers, printed like Kraken's floats: no quotes, no trailing zeros.
    assert '"price":"' not in snap.text and '"qty":"' not in snap.text
    raw = json.loads(snap.text, parse_float=str, parse_int=str)["data"][0]
    for level in raw["bids"] + raw["asks"]:
        for text in level.values():
            assert not ("." in text and text.endswith("0")) and not text.endswith(".")
    # snapshot=false: the ack only, updates follow as usual.
    other = open_session(KrakenSim(market))
    (only_ack,) = subscribe_book(other, ["ETH/USD"], snapshot=False)
    assert json.loads(only_ack.text)["result"]["snapshot"] is False


def test_book_number_text_examples() -> None:
    spec = InstrumentSpec("BTC/USD", 1, 8, start_price=450_000, levels=3)
    market = FakeMarket([spec])
    market.bids["BTC/USD"] = {450_000: 80_000_000, 449_995: 5, 449_990: 100_000_000}
    market.asks["BTC/USD"] = {450_001: 123_456_789}
    session = open_session(KrakenSim(market))
    _, snap = subscribe_book(session, ["BTC/USD"])
    assert (
        '"bids":[{"price":45000,"qty":0.8},{"price":44999.5,"qty":0.00000005},{"price":44999,"qty":1}]'
        in snap.text
    )
    assert '"asks":[{"price":45000.1,"qty":1.23456789}]' in snap.text


def _sub(params: dict[str, Any]) -> dict[str, Any]:
    return {"method": "subscribe", "params": params, "req_id": 4}


BTC_BOOK: dict[str, Any] = {"channel": "book", "symbol": ["BTC/USD"]}


@pytest.mark.parametrize(
    ("request_", "error", "symbol"),
    [
        (_sub({"channel": "book", "symbol": ["BTC/XYZ"]}), "Currency pair not supported BTC/XYZ", "BTC/XYZ"),
        (_sub({"channel": "trade", "symbol": ["XBT/USD"]}), "Currency pair not supported XBT/USD", "XBT/USD"),
        (_sub({**BTC_BOOK, "depth": 27}), "Subscription depth not supported", None),
        (_sub({**BTC_BOOK, "depth": "10"}), "Subscription depth not supported", None),
        (_sub({"channel": "ticker", "symbol": ["BTC/USD"]}), "Unsupported channel ticker", None),
        (_sub({"channel": "book", "symbol": "BTC/USD"}), "Symbol field must be an array of strings", None),
        (_sub({**BTC_BOOK, "snapshot": 1}), "Snapshot field must be a boolean", None),
        ({"method": "subscribe", "req_id": 4}, "Params field must be an object", None),
        ({"method": "add_order", "params": {}, "req_id": 4}, "Unsupported event", None),
    ],
)
def test_request_errors(request_: dict[str, Any], error: str, symbol: str | None) -> None:
    session = open_session(KrakenSim(FakeMarket()))
    (frame,) = send(session, request_, T0 + 1)
    msg = json.loads(frame.text)
    want = {
        "error": error,
        "method": request_["method"],
        "req_id": 4,
        "success": False,
        "time_in": "2023-11-14T22:13:20.001000Z",
        "time_out": "2023-11-14T22:13:20.001000Z",
    }
    if symbol is not None:
        want["symbol"] = symbol
    assert msg == want
    assert list(msg) == sorted(msg)  # the venue's key order
    (event,) = KRAKEN.parse(frame.text)
    assert isinstance(event, Ack | VenueStatus | Unknown)  # other methods' answers are Unknown
    if isinstance(event, Ack):
        assert not event.ok and event.message == error
    assert not session.subscribed


@settings(max_examples=300, deadline=None)
@given(units_=st.integers(0, 10**20), precision=st.integers(0, 12))
def test_fast_quantity_text_is_trimmed_text(units_: int, precision: int) -> None:
    from mmdata.sim.kraken import _qty_text
    from mmdata.sim.model import trimmed_text

    assert _qty_text(units_, precision, 10**precision) == trimmed_text(units_, precision)


@pytest.mark.parametrize("text", ["{", "not json", "[1,2]", '"ping"'])
def test_malformed_json(text: str) -> None:
    session = open_session(KrakenSim(FakeMarket()))
    (frame,) = session.on_text(text, T0)
    msg = json.loads(frame.text)
    assert msg == {
        "error": "Malformed request",
        "success": False,
        "time_in": "2023-11-14T22:13:20.000000Z",
        "time_out": "2023-11-14T22:13:20.000000Z",
    }
    (event,) = KRAKEN.parse(frame.text)
    assert isinstance(event, VenueStatus) and event.kind == "error"


def test_mixed_symbols_one_ack_each_and_repeat() -> None:
    session = open_session(KrakenSim(FakeMarket()))
    frames = subscribe_book(session, ["BTC/USD", "NOPE/USD", "BTC/USD"], depth=10, req_id=9)
    assert [f.kind for f in frames] == ["ack", "ack", "snapshot"]
    ok, bad = (json.loads(f.text) for f in frames[:2])
    assert ok["success"] is True and ok["result"]["symbol"] == "BTC/USD"
    assert bad == {
        "error": "Currency pair not supported NOPE/USD",
        "method": "subscribe",
        "req_id": 9,
        "success": False,
        "symbol": "NOPE/USD",
        "time_in": "2023-11-14T22:13:20.000000Z",
        "time_out": "2023-11-14T22:13:20.000000Z",
    }
    (again,) = subscribe_book(session, ["BTC/USD"], depth=25, req_id=10)
    assert json.loads(again.text)["error"] == "Already subscribed"
    assert json.loads(again.text)["symbol"] == "BTC/USD"


def test_unsubscribe_and_resubscribe() -> None:
    market = FakeMarket(seed=5)
    sim = KrakenSim(market)
    session = open_session(sim)
    subscribe_book(session, ["BTC/USD"], depth=25)
    (ack,) = send(
        session, {"method": "unsubscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}, "req_id": 3}
    )
    assert json.loads(ack.text) == {
        "method": "unsubscribe",
        "req_id": 3,
        "result": {"channel": "book", "depth": 25, "symbol": "BTC/USD"},
        "success": True,
        "time_in": "2023-11-14T22:13:20.000000Z",
        "time_out": "2023-11-14T22:13:20.000000Z",
    }
    assert KRAKEN.parse(ack.text)[0].ok
    for i in range(50):
        assert session.on_step(market.step("BTC/USD", T0 + i)) == []
    (missing,) = send(
        session, {"method": "unsubscribe", "params": {"channel": "book", "symbol": ["BTC/USD"]}}
    )
    assert json.loads(missing.text)["error"] == "Subscription Not Found"
    _, snap = subscribe_book(session, ["BTC/USD"], depth=10)
    bids, asks = market.book("BTC/USD")
    got_bids, got_asks = levels_of(snap)
    assert sorted(to_units(got_bids, BTC), reverse=True) == bids[:10]
    assert sorted(to_units(got_asks, BTC)) == asks[:10]


# -- the heart: book updates ------------------------------------------------------------------------
def _scripted() -> tuple[FakeMarket, KrakenSim, KrakenSession, DecimalClient]:
    spec = InstrumentSpec("BTC/USD", 1, 8, start_price=450_000, levels=20)
    market = FakeMarket([spec], seed=11)
    sim = KrakenSim(market)
    session = open_session(sim)
    client = DecimalClient(10, 1, 8)
    _, snap = subscribe_book(session, ["BTC/USD"], depth=10)
    client.feed(snap.text)
    return market, sim, session, client


def _step(
    market: FakeMarket, session: KrakenSession, client: DecimalClient, changes: list[LevelChange]
) -> OutFrame | None:
    frames = session.on_step(market.apply("BTC/USD", T0 + 10, changes))
    parse_all(frames)
    if not frames:
        return None
    (frame,) = frames
    sent, local = client.feed(frame.text)
    assert sent == local
    bids, asks = market.book("BTC/USD")
    assert client.window() == (bids[:10], asks[:10])
    return frame


def test_insert_into_full_window_pushes_out_silently() -> None:
    market, _, session, client = _scripted()
    bids = [p for p, _ in market.book("BTC/USD")[0]]
    tenth = bids[9]
    frame = _step(market, session, client, [LevelChange("bid", bids[0] - 1, 77)])  # between 1st and 2nd
    assert frame is not None
    got_bids, got_asks = levels_of(frame)
    assert to_units(got_bids, BTC) == {(bids[0] - 1, 77)} and got_asks == []
    # The 10th bid left the window but is still in the market: no qty 0 for it.
    assert all(units(p, 1) != tenth for p, _ in got_bids)
    assert tenth in market.bids["BTC/USD"]


def test_delete_inside_window_sends_zero_and_refill() -> None:
    market, _, session, client = _scripted()
    asks = [p for p, _ in market.book("BTC/USD")[1]]
    frame = _step(market, session, client, [LevelChange("ask", asks[3], 0)])
    assert frame is not None
    _, got_asks = levels_of(frame)
    refill = (asks[10], market.asks["BTC/USD"][asks[10]])
    assert to_units(got_asks, BTC) == {(asks[3], 0), refill}


def test_change_beyond_window_sends_nothing() -> None:
    market, _, session, client = _scripted()
    bids = [p for p, _ in market.book("BTC/USD")[0]]
    assert _step(market, session, client, [LevelChange("bid", bids[15], 5)]) is None
    assert _step(market, session, client, [LevelChange("bid", bids[14], 0)]) is None
    assert _step(market, session, client, [LevelChange("bid", bids[9] - 1, 9)]) is None  # just past the edge
    # Insert then delete the same visible-range price in one step: no net change, no frame.
    assert (
        _step(
            market, session, client, [LevelChange("bid", bids[2] - 1, 9), LevelChange("bid", bids[2] - 1, 0)]
        )
        is None
    )
    # A visible level "changed" to the quantity it already has: nothing to say.
    assert (
        _step(market, session, client, [LevelChange("bid", bids[0], market.bids["BTC/USD"][bids[0]])]) is None
    )
    # Same price twice, last wins.
    frame = _step(market, session, client, [LevelChange("bid", bids[1], 0), LevelChange("bid", bids[1], 42)])
    assert frame is not None and to_units(levels_of(frame)[0], BTC) == {(bids[1], 42)}


def test_insert_and_delete_in_one_step_then_thin_side() -> None:
    market, _, session, client = _scripted()
    bids = [p for p, _ in market.book("BTC/USD")[0]]
    # Insert a better bid (pushes #10 out) and delete #4 (pulls #10 back): #10 stays, nothing for it.
    frame = _step(
        market, session, client, [LevelChange("bid", bids[0] + 1, 5), LevelChange("bid", bids[3], 0)]
    )
    assert frame is not None
    assert to_units(levels_of(frame)[0], BTC) == {(bids[0] + 1, 5), (bids[3], 0)}
    # Strip the side to 4 levels: every vanished visible level gets qty 0, nothing can refill.
    now = [p for p, _ in market.book("BTC/USD")[0]]
    frame = _step(market, session, client, [LevelChange("bid", p, 0) for p in now[4:]])
    assert frame is not None
    assert to_units(levels_of(frame)[0], BTC) == {(p, 0) for p in now[4:10]}
    # A thin side takes any insert, however deep.
    frame = _step(market, session, client, [LevelChange("bid", now[3] - 100, 3)])
    assert frame is not None and to_units(levels_of(frame)[0], BTC) == {(now[3] - 100, 3)}
    # Empty the side entirely, then rebuild it.
    rest = [p for p, _ in market.book("BTC/USD")[0]]
    assert _step(market, session, client, [LevelChange("bid", p, 0) for p in rest]) is not None
    assert client.bids == {}
    frame = _step(market, session, client, [LevelChange("bid", 440_000 - i, 1 + i) for i in range(12)])
    assert frame is not None and len(levels_of(frame)[0]) == 10


@pytest.mark.parametrize("depth", [10, 25])
def test_thousands_of_steps_verify_everywhere(depth: int) -> None:
    """ChecksumSync and an independent Decimal client verify every frame; frames are exactly §B.2."""
    market = FakeMarket(seed=depth)
    sim = KrakenSim(market)
    session = open_session(sim)
    other = open_session(sim)  # a second client at the other depth shares the mirror
    other_depth = 25 if depth == 10 else 10
    frames = send(session, {"method": "subscribe", "params": {"channel": "instrument"}, "req_id": 1})
    frames += subscribe_book(session, ["BTC/USD", "ETH/USD"], depth=depth)
    other_snapshot = book_frames(subscribe_book(other, ["BTC/USD"], depth=other_depth), "BTC/USD")[0]
    engines = {s: ChecksumSync.kraken(s, depth) for s in ("BTC/USD", "ETH/USD")}
    clients = {s.symbol: DecimalClient(depth, s.price_precision, s.qty_precision) for s in (BTC, ETH)}
    other_client = DecimalClient(other_depth, 1, 8)
    other_client.feed(other_snapshot.text)

    def feed(frame: OutFrame) -> None:
        for event in KRAKEN.parse(frame.text):
            symbol = getattr(event, "symbol", None)
            if symbol in engines:
                outputs = engines[symbol].receive(event)
                assert not any(isinstance(o, ChecksumMismatch) for o in outputs), frame.text
        if frame.kind in ("snapshot", "diff"):
            assert frame.symbol is not None
            sent, local = clients[frame.symbol].feed(frame.text)
            assert sent == local, frame.text

    for frame in frames:
        feed(frame)
    windows = {s: tuple(side[:depth] for side in market.book(s)) for s in engines}
    stats = {"updates": 0, "silent": 0, "pushed_out": 0, "vanished": 0, "refills": 0, "trades": 0}
    for i in range(3000):
        symbol = "BTC/USD" if i % 3 else "ETH/USD"
        spec = market.specs[symbol]
        step = market.step(symbol, T0 + 37 * i)
        out = session.on_step(step)
        for frame in out:
            feed(frame)
        full_bids, full_asks = market.book(symbol)
        new = (full_bids[:depth], full_asks[:depth])
        old = windows[symbol]
        diffs = [f for f in out if f.kind == "diff"]
        want_bids = expected_update(old[0], new[0], full_bids)
        want_asks = expected_update(old[1], new[1], full_asks)
        if not want_bids and not want_asks:
            assert diffs == []
            stats["silent"] += 1
        else:
            (frame,) = diffs
            got_bids, got_asks = levels_of(frame)
            assert len(got_bids) == len(to_units(got_bids, spec))  # one entry per price
            assert to_units(got_bids, spec) == want_bids
            assert to_units(got_asks, spec) == want_asks
            stats["updates"] += 1
            for o, n, full in ((old[0], new[0], full_bids), (old[1], new[1], full_asks)):
                gone = {p for p, _ in o} - {p for p, _ in n}
                market_prices = {p for p, _ in full}
                stats["pushed_out"] += len(gone & market_prices)
                stats["vanished"] += len(gone - market_prices)
                if gone - market_prices and len(n) == depth:
                    stats["refills"] += 1
        windows[symbol] = new
        assert clients[symbol].window() == new
        eng_bids, eng_asks = engines[symbol].book.top()
        assert text_units(eng_bids, spec) == new[0] and text_units(eng_asks, spec) == new[1]
        stats["trades"] += len(step.trades)
        if symbol == "BTC/USD":
            for frame in other.on_step(step):
                sent, local = other_client.feed(frame.text)
                assert sent == local
            assert other_client.window() == (full_bids[:other_depth], full_asks[:other_depth])
    for symbol, engine in engines.items():
        assert engine.state is SyncState.SYNCED
        assert engine.stats.checksum_mismatches == 0
        assert engine.stats.checksums_verified == clients[symbol].checked
    assert engines["BTC/USD"].stats.checksums_verified > 1000
    # Every kind of event actually happened, many times.
    assert stats["updates"] > 1500 and stats["silent"] > 50, stats
    assert stats["pushed_out"] > 100 and stats["vanished"] > 300 and stats["refills"] > 100, stats


def test_two_sessions_different_depths_share_nothing_visible() -> None:
    market = FakeMarket(seed=42)
    sim = KrakenSim(market)
    sessions = {d: open_session(sim) for d in BOOK_DEPTHS[:3]}
    clients = {}
    for depth, session in sessions.items():
        frames = subscribe_book(session, ["BTC/USD"], depth=depth)
        clients[depth] = DecimalClient(depth, 1, 8)
        clients[depth].feed(book_frames(frames, "BTC/USD")[0].text)
    late = None
    for i in range(1500):
        step = market.step("BTC/USD", T0 + i)
        for depth, session in sessions.items():
            for frame in session.on_step(step):
                sent, local = clients[depth].feed(frame.text)
                assert sent == local
            assert clients[depth].window() == tuple(side[:depth] for side in market.book("BTC/USD"))
        if i == 700:  # a session joining mid-stream gets the current book
            late = open_session(sim)
            frames = subscribe_book(late, ["BTC/USD"], depth=10)
            late_client = DecimalClient(10, 1, 8)
            late_client.feed(book_frames(frames, "BTC/USD")[0].text)
        if late is not None and i > 700:
            for frame in late.on_step(step):
                late_client.feed(frame.text)
            assert late_client.window() == tuple(side[:10] for side in market.book("BTC/USD"))


def test_market_disagreeing_with_steps_is_resynced() -> None:
    """If the book moved without a step this session saw, the next refill resyncs the window."""
    market, _, session, client = _scripted()
    bids = [p for p, _ in market.book("BTC/USD")[0]]
    for p in bids[5:9]:  # changes no session ever hears about ...
        del market.bids["BTC/USD"][p]
    market.uid["BTC/USD"] += 4  # ... as if a step had been lost
    frame = _step(market, session, client, [LevelChange("bid", bids[2], 0)])  # checks the window too
    assert frame is not None
    got = to_units(levels_of(frame)[0], BTC)
    assert {(p, 0) for p in [bids[2], *bids[5:9]]} <= got


def test_corrupt_next_checksum_detected_by_checksum_sync() -> None:
    market = FakeMarket(seed=4)
    session = open_session(KrakenSim(market))
    frames = send(session, {"method": "subscribe", "params": {"channel": "instrument"}})
    frames += subscribe_book(session, ["BTC/USD"], depth=10)
    engine = ChecksumSync.kraken("BTC/USD", 10)
    client = DecimalClient(10, 1, 8)
    mismatches: list[int] = []
    corrupted_at = None
    n = 0
    for frame in frames:
        for event in KRAKEN.parse(frame.text):
            if getattr(event, "symbol", None) == "BTC/USD":
                engine.receive(event)
        if frame.kind == "snapshot":
            client.feed(frame.text)
    assert engine.state is SyncState.SYNCED
    for i in range(300):
        if i == 100:
            session.corrupt_next_checksum("BTC/USD")
            corrupted_at = n
        for frame in session.on_step(market.step("BTC/USD", T0 + i)):
            if frame.kind != "diff":
                continue
            sent, local = client.feed(frame.text)
            if sent != local:
                mismatches.append(n)
                assert sent == (local + 1) % 2**32
            if corrupted_at is not None and n == corrupted_at:
                outputs = [o for e in KRAKEN.parse(frame.text) for o in engine.receive(e)]
                assert any(isinstance(o, ChecksumMismatch) for o in outputs)
            n += 1
    assert mismatches == [corrupted_at]


# -- trades -----------------------------------------------------------------------------------------
def test_trade_channel_updates_and_snapshot() -> None:
    market = FakeMarket(seed=8, past_trades={"BTC/USD": past_trades("BTC/USD", 120, T0 - 60_000)})
    session = open_session(KrakenSim(market))
    params = {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True}
    ack, snap = send(session, {"method": "subscribe", "params": params, "req_id": 5})
    assert json.loads(ack.text)["result"] == {"channel": "trade", "snapshot": True, "symbol": "BTC/USD"}
    events = KRAKEN.parse(snap.text)
    assert [e.trade_id for e in events] == list(range(71, 121))
    assert all(isinstance(e, Trade) and e.snapshot for e in events)
    plain = open_session(KrakenSim(market))
    (only,) = send(plain, {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}})
    assert json.loads(only.text)["result"] == {"channel": "trade", "snapshot": False, "symbol": "BTC/USD"}
    seen: list[int] = []
    for i in range(600):
        step = market.step("BTC/USD", T0 + 10 * i)
        frames = [f for f in plain.on_step(step) if f.kind == "trade"]
        if not step.trades:
            assert frames == []
            continue
        (frame,) = frames
        msg = json.loads(frame.text, parse_float=Decimal, parse_int=Decimal)
        assert msg["channel"] == "trade" and msg["type"] == "update"
        for item, trade in zip(msg["data"], step.trades, strict=True):
            assert list(item) == ["symbol", "side", "price", "qty", "ord_type", "trade_id", "timestamp"]
            assert item["side"] == trade.side and item["trade_id"] == trade.trade_id
            assert units(item["price"], 1) == trade.price and units(item["qty"], 8) == trade.qty
            assert item["ord_type"] in ("market", "limit")
        parsed = KRAKEN.parse(frame.text)
        assert [e.ts_ms for e in parsed] == [t.ts_ms for t in step.trades]
        seen += [e.trade_id for e in parsed]
    assert len(seen) > 30 and seen == sorted(seen) and len(set(seen)) == len(seen)


# -- heartbeat --------------------------------------------------------------------------------------
def test_heartbeat_timing() -> None:
    market = FakeMarket(seed=2)
    session = open_session(KrakenSim(market))
    assert all(session.on_tick(T0 + t) == [] for t in range(0, 5000, 100))  # not subscribed
    send(session, {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}, T0 + 5000)
    beats = [t for t in range(5100, 9100, 100) if session.on_tick(T0 + t)]
    assert beats == [6000, 7000, 8000, 9000]
    # Any other frame resets the clock: a trade at 9500 → next heartbeat at 10500.
    while True:
        step = market.step("BTC/USD", T0 + 9500)
        if step.trades:
            break
    assert session.on_step(step)
    beats = [t for t in range(9600, 12100, 100) if session.on_tick(T0 + t)]
    assert beats == [10500, 11500]
    (frame,) = session.on_tick(T0 + 12500)
    assert frame.text == '{"channel":"heartbeat"}' and frame.kind == "heartbeat"
    assert KRAKEN.parse(frame.text)[0].kind == "heartbeat"
    send(
        session, {"method": "unsubscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}, T0 + 13000
    )
    assert all(session.on_tick(T0 + t) == [] for t in range(13000, 16000, 100))


# -- REST -------------------------------------------------------------------------------------------
NOW = T0 + 30 * 60_000 + 12_345


def rest_market() -> FakeMarket:
    # ~3 trades per second over 14 hours before NOW, with quiet minutes and same-ms bursts.
    trades: list[SimTrade] = []
    rng = random.Random(3)
    ts, price, tid = NOW - 14 * 3_600_000, 450_000, 1
    while ts < NOW:
        ts += rng.choice([0, 0, 1, 200, 300, 900, 61_000 if rng.random() < 0.01 else 350])
        if ts >= NOW:
            break
        price += rng.randrange(-15, 16)
        trades.append(SimTrade(tid, ts, price, rng.randrange(1, 10**8), rng.choice(["buy", "sell"])))
        tid += 1
    return FakeMarket([BTC], past_trades={"BTC/USD": trades})


def rest_json(sim: KrakenSim, path: str, query: dict[str, str], now_ms: int = NOW) -> Any:
    answer = sim.rest(path, query, now_ms)
    assert answer.status == 200
    return json.loads(answer.body)


def test_ohlc_720_most_recent_and_last() -> None:
    market = rest_market()
    sim = KrakenSim(market)
    body = rest_json(sim, "/0/public/OHLC", {"pair": "BTC/USD", "interval": "1", "since": "0"})
    assert body["error"] == [] and set(body["result"]) == {"BTCUSD", "last"}
    rows = body["result"]["BTCUSD"]
    assert len(rows) == 720
    current = NOW // 60_000 * 60_000
    assert rows[-1][0] == current // 1000 and rows[0][0] == current // 1000 - 719 * 60
    assert [r[0] for r in rows] == list(range(rows[0][0], rows[-1][0] + 60, 60))
    assert body["result"]["last"] == rows[-2][0]
    candles = {c.open_ms // 1000: c for c in brute_candles(market.trade_log["BTC/USD"], 60_000)}
    prev_close = None
    for row in rows:
        assert len(row) == 8 and type(row[0]) is int and type(row[7]) is int
        assert all(type(v) is str for v in row[1:7])
        c = candles.get(row[0])
        if c is None:
            assert row[1] == row[2] == row[3] == row[4] == row[5] == prev_close and row[6] == "0.00000000"
            assert row[7] == 0
            continue
        assert row[1:5] == [f"{Decimal(v).scaleb(-1):.1f}" for v in (c.open, c.high, c.low, c.close)]
        vwap = Decimal(c.quote_volume) / Decimal(c.volume)
        assert abs(Decimal(row[5]) - vwap.scaleb(-1)) <= Decimal("0.05")
        assert row[6] == f"{Decimal(c.volume).scaleb(-8):.8f}" and row[7] == c.trades
        prev_close = row[4]
    assert any(row[7] == 0 for row in rows)  # quiet minutes are there, flat
    # since only filters (time > since); the current candle is always last.
    since = rows[700][0]
    tail = rest_json(sim, "/0/public/OHLC", {"pair": "XBTUSD", "interval": "1", "since": str(since)})
    assert tail["result"]["XBTUSD"] == rows[701:]
    future = rest_json(sim, "/0/public/OHLC", {"pair": "BTCUSD", "since": str(NOW // 1000 + 999)})
    assert future["result"]["BTCUSD"] == rows[-1:]
    hourly = rest_json(sim, "/0/public/OHLC", {"pair": "BTC/USD", "interval": "60"})["result"]
    assert hourly["BTCUSD"][-1][0] == NOW // 3_600_000 * 3600
    assert 14 <= len(hourly["BTCUSD"]) <= 16  # the pair only traded for 14 hours


def test_ohlc_errors() -> None:
    sim = KrakenSim(rest_market())
    for query in ({"pair": "BTC/USD", "interval": "2"}, {"pair": "BTC/USD", "interval": "x"}):
        assert rest_json(sim, "/0/public/OHLC", query) == {"error": ["EGeneral:Invalid arguments"]}
    for pair in ("BTC/XYZ", "", "XBT/USD"):
        assert rest_json(sim, "/0/public/OHLC", {"pair": pair}) == {"error": ["EQuery:Unknown asset pair"]}
    assert sim.rest("/0/public/Nope", {}, NOW).status == 404


def test_trades_default_and_rows() -> None:
    market = rest_market()
    sim = KrakenSim(market)
    body = rest_json(sim, "/0/public/Trades", {"pair": "BTCUSD"})
    rows = body["result"]["BTCUSD"]
    everything = market.trade_log["BTC/USD"]
    assert len(rows) == 1000 and [r[6] for r in rows] == [t.trade_id for t in everything[-1000:]]
    raw = json.loads(
        sim.rest("/0/public/Trades", {"pair": "BTC/USD", "count": "3"}, NOW).body, parse_float=str
    )
    for row, trade in zip(raw["result"]["BTCUSD"], everything[-3:], strict=True):
        assert row[:2] == [f"{Decimal(trade.price).scaleb(-1):.1f}", f"{Decimal(trade.qty).scaleb(-8):.8f}"]
        assert row[2] == f"{Decimal(trade.ts_ms).scaleb(-3):.3f}"
        assert row[3] == ("b" if trade.side == "buy" else "s") and row[4] in ("m", "l") and row[5] == ""
    last = raw["result"]["last"]
    assert type(last) is str and int(last) // 1_000_000 == everything[-1].ts_ms
    for query in ({"count": "0"}, {"count": "1001"}, {"count": "x"}, {"since": "abc"}):
        err = rest_json(sim, "/0/public/Trades", {"pair": "BTC/USD", **query})
        assert err["error"][0].startswith("EGeneral:Invalid arguments")
    assert rest_json(sim, "/0/public/Trades", {"pair": "ETH/USD"}) == {"error": ["EQuery:Unknown asset pair"]}


@settings(max_examples=25, deadline=None)
@given(counts=st.lists(st.integers(1, 1000), min_size=1, max_size=6), seed=st.integers(0, 50))
def test_trades_paging_returns_every_trade_once(counts: list[int], seed: int) -> None:
    trades = past_trades("BTC/USD", 700, T0 - 10_000, seed=seed, spread_ms=2)
    market = FakeMarket([BTC], past_trades={"BTC/USD": trades})
    sim = KrakenSim(market)
    got: list[int] = []
    since = "0"
    for i in range(2000):
        count = counts[i % len(counts)]
        body = rest_json(
            sim, "/0/public/Trades", {"pair": "BTC/USD", "since": since, "count": str(count)}, T0
        )
        rows = body["result"]["BTCUSD"]
        assert len(rows) <= count
        got += [r[6] for r in rows]
        if not rows:
            assert body["result"]["last"] == since
            break
        since = body["result"]["last"]
    assert got == [t.trade_id for t in trades]


def test_trades_since_seconds_and_live_trades() -> None:
    market = rest_market()
    sim = KrakenSim(market)
    cut = NOW - 600_000
    body = rest_json(sim, "/0/public/Trades", {"pair": "BTC/USD", "since": str(cut // 1000)})
    rows = body["result"]["BTCUSD"]
    want = [t.trade_id for t in market.trade_log["BTC/USD"] if t.ts_ms >= cut // 1000 * 1000][:1000]
    assert [r[6] for r in rows] == want
    frac = rest_json(sim, "/0/public/Trades", {"pair": "BTC/USD", "since": f"{cut / 1000:.3f}"})
    assert frac["result"]["BTCUSD"][0][6] == next(
        t.trade_id for t in market.trade_log["BTC/USD"] if t.ts_ms >= cut
    )
    # Live trades from market steps show up too, after the past ones.
    last = market.trade_log["BTC/USD"][-1].trade_id
    for i in range(200):
        market.step("BTC/USD", NOW + i)
    newest = rest_json(sim, "/0/public/Trades", {"pair": "BTC/USD", "count": "5"}, NOW + 300)["result"][
        "BTCUSD"
    ]
    assert newest[-1][6] == market.trade_log["BTC/USD"][-1].trade_id > last
