"""Tests of the simulated Bitfinex v2 venue (``mmdata.sim.bitfinex``, PROTOCOLS.md §C).

The market is a small deterministic fake (:class:`FakeMarket`) implementing the
``Market`` protocol: a seeded script of level updates, inserts, deletes, sweeps by
trades and phases in which a side shrinks below the subscribed length or grows past
it (so levels are pushed out of and pulled into the window), with a tiny-priced pair
whose prices print in exponent form (``7e-7``). Its history answers are brute force.

Every frame the simulator sends is fed, in order, to mmdata's own client side (the
Bitfinex adapter and ``ChecksumSync.bitfinex``) *and* to an independent checker written
here from PROTOCOLS.md §C.2–§C.3: a book over the raw JSON number tokens
(``parse_float=str, parse_int=str``) with the reference checksum code.
"""

from __future__ import annotations

import functools
import json
import random
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.book.sync import ChecksumMismatch, ChecksumSync, SyncState
from mmdata.exchanges import get
from mmdata.sim.bitfinex import (
    INFO_MESSAGES,
    OB_CHECKSUM,
    SEQ_ALL,
    TIMESTAMP,
    BitfinexSession,
    BitfinexSim,
)
from mmdata.sim.model import (
    InstrumentSpec,
    LevelChange,
    MarketStep,
    OutFrame,
    RestResponse,
    SimCandle,
    SimTrade,
    js_number_text,
)
from mmdata.types import Ack, BookChecksum, BookDiff, BookSnapshot, SequenceBreak, Trade, VenueStatus
from tests.sim.oracles import BruteMarketQueries, brute_candles

START_MS = 1_700_000_000_000
BTC = InstrumentSpec("tBTCUSD", price_precision=1, qty_precision=8, start_price=300_000, tick=1)
# 1 unit = 1e-10: prices around 0.0000011, many below 1e-6 (exponent text).
XRP = InstrumentSpec("tXRPBTC", price_precision=10, qty_precision=2, start_price=10_050, tick=10)
AVAX = InstrumentSpec("tAVAX:USD", price_precision=3, qty_precision=4, start_price=25_000, tick=1)
ALL_FLAGS = OB_CHECKSUM | SEQ_ALL | TIMESTAMP


# -- the fake market -------------------------------------------------------------------------------
class FakeMarket(BruteMarketQueries):
    """A deterministic ``Market``: seeded random book script + scripted pushes, brute-force history."""

    def __init__(
        self,
        specs: Sequence[InstrumentSpec] = (BTC, XRP),
        *,
        seed: int = 7,
        levels: int = 60,
        past_trades: int = 3000,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.start_ms = START_MS
        self.rng = random.Random(seed)
        self.bids: dict[str, dict[int, int]] = {}
        self.asks: dict[str, dict[int, int]] = {}
        self.uid: dict[str, int] = {}
        self.steps: dict[str, int] = {}
        self.trade_log: dict[str, list[SimTrade]] = {}
        for spec in specs:
            sym = spec.symbol
            self.bids[sym] = {
                spec.start_price - spec.tick * (1 + 2 * i): self._qty(spec) for i in range(levels)
            }
            self.asks[sym] = {
                spec.start_price + spec.tick * (1 + 2 * i): self._qty(spec) for i in range(levels)
            }
            self.uid[sym] = 1000
            self.steps[sym] = 0
            self.trade_log[sym] = self._past(spec, past_trades)

    # Market protocol ----------------------------------------------------------------------
    def step(self, symbol: str, ts_ms: int) -> MarketStep:
        """One scripted random step (level churn, phases of thin/deep books, trade sweeps)."""
        spec = self.specs[symbol]
        rng = self.rng
        k = self.steps[symbol]
        target = (300, 40, 12, 90, 26, 150, 3)[(k // 120) % 7]
        changes: list[LevelChange] = []
        trades: list[tuple[int, int, str]] = []
        while not changes:
            for _ in range(rng.choice((1, 1, 1, 2, 3, 5))):
                self._random_op(spec, target, changes, trades)
        return self._commit(symbol, ts_ms, changes, trades)

    # scripted pushes --------------------------------------------------------------------------
    def push(
        self,
        symbol: str,
        ts_ms: int,
        changes: Iterable[tuple[str, int, int]],
        trades: Iterable[tuple[int, int, str]] = (),
    ) -> MarketStep:
        """A step of explicit ``(side, price, qty)`` changes and ``(price, qty, side)`` trades."""
        out = []
        for side, price, qty in changes:
            book = self.bids[symbol] if side == "bid" else self.asks[symbol]
            if qty:
                book[price] = qty
            else:
                book.pop(price, None)
            out.append(LevelChange("bid" if side == "bid" else "ask", price, qty))
        return self._commit(symbol, ts_ms, out, list(trades))

    # internals ----------------------------------------------------------------------------------
    def _commit(
        self,
        symbol: str,
        ts_ms: int,
        changes: list[LevelChange],
        trades: list[tuple[int, int, str]],
    ) -> MarketStep:
        first = self.uid[symbol] + 1
        self.uid[symbol] += len(changes)
        self.steps[symbol] += 1
        log = self.trade_log[symbol]
        made = []
        for price, qty, side in trades:
            trade = SimTrade(log[-1].trade_id + 1 if log else 1, ts_ms, price, qty, side)
            log.append(trade)
            made.append(trade)
        return MarketStep(symbol, ts_ms, first, self.uid[symbol], tuple(changes), tuple(made))

    def _qty(self, spec: InstrumentSpec) -> int:
        rng = self.rng
        scale = 10**spec.qty_precision
        kind = rng.random()
        if kind < 0.15:
            return rng.choice((205_000, 10_000, 1, 5000)) * scale  # round amounts: "205000"
        if kind < 0.2:
            return rng.randint(1, 9)  # tiny amounts: "1e-8" for 8 decimals
        return rng.randint(1, 50 * scale)

    def _change(self, symbol: str, side: str, price: int, qty: int, out: list[LevelChange]) -> None:
        book = self.bids[symbol] if side == "bid" else self.asks[symbol]
        if qty:
            book[price] = qty
        else:
            book.pop(price, None)
        out.append(LevelChange("bid" if side == "bid" else "ask", price, qty))

    def _random_op(
        self,
        spec: InstrumentSpec,
        target: int,
        changes: list[LevelChange],
        trades: list[tuple[int, int, str]],
    ) -> None:
        rng = self.rng
        sym = spec.symbol
        tick = spec.tick
        side = rng.choice(("bid", "ask"))
        bids, asks = self.bids[sym], self.asks[sym]
        book = bids if side == "bid" else asks
        op = rng.random()
        if op < 0.08 and bids and asks:
            # A taker sweeps 1-3 levels of this side.
            taker = "buy" if side == "ask" else "sell"
            for price in sorted(book, reverse=side == "bid")[: rng.randint(1, 3)]:
                take = rng.randint(1, book[price])
                trades.append((price, take, taker))
                self._change(sym, side, price, book[price] - take, changes)
            return
        if op < 0.7 and len(book) < target:
            # Below the phase's depth: insert levels, near the top or deep.
            for _ in range(1 if len(book) > target - 20 else 8):
                best_bid = max(bids) if bids else None
                best_ask = min(asks) if asks else None
                spread = rng.randint(-3, 3 * len(book) + 3)
                if side == "bid":
                    top = best_bid if best_bid is not None else (best_ask or spec.start_price) - tick
                    price = top - tick * spread
                    if best_ask is not None and price >= best_ask:
                        price = best_ask - tick
                else:
                    top = best_ask if best_ask is not None else (best_bid or spec.start_price) + tick
                    price = top + tick * spread
                    if best_bid is not None and price <= best_bid:
                        price = best_bid + tick
                if price > 0 and price not in book and price not in (asks if side == "bid" else bids):
                    self._change(sym, side, price, self._qty(spec), changes)
            return
        if not book:
            return
        ordered = sorted(book, reverse=side == "bid")
        index = min(int(rng.expovariate(1 / 12)), len(ordered) - 1)
        price = ordered[index]
        if op < 0.8 and len(book) <= target:
            self._change(sym, side, price, self._qty(spec), changes)
        elif len(book) > target + 20:
            # Far above the phase's depth: delete several levels.
            for price in rng.sample(ordered, min(len(ordered), 6)):
                self._change(sym, side, price, 0, changes)
        else:
            self._change(sym, side, price, 0, changes)
            if rng.random() < 0.1:
                # The same price twice in one step: back again.
                self._change(sym, side, price, self._qty(spec), changes)

    def _past(self, spec: InstrumentSpec, count: int) -> list[SimTrade]:
        rng = self.rng
        out: list[SimTrade] = []
        ts = START_MS - 3 * 86_400_000
        for i in range(count):
            gap = rng.random()
            if gap < 0.1:
                ts += 0  # several trades in one ms
            elif gap < 0.12:
                ts += rng.randint(1, 4) * 3_600_000  # quiet hours: empty candles
            else:
                ts += rng.randint(1, 120_000)
            if ts >= START_MS:
                break
            price = spec.start_price + spec.tick * rng.randint(-300, 300)
            out.append(
                SimTrade(
                    i + 1, ts, price, rng.randint(1, 10**spec.qty_precision), rng.choice(("buy", "sell"))
                )
            )
        return out


# -- independent checker (PROTOCOLS.md §C.2-§C.3, reference code) ----------------------------------
def bfx_checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += [bids[i][0], bids[i][1]]
        if i < len(asks):
            parts += [asks[i][0], asks[i][1]]
    c = zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF
    return c - (1 << 32) if c & 0x80000000 else c


def raw(text: str) -> Any:
    return json.loads(text, parse_float=str, parse_int=str)


@dataclass
class RawBook:
    """A book keyed by raw price tokens; amounts kept as sent (asks negative)."""

    length: int
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)

    def sorted_bids(self) -> list[tuple[str, str]]:
        return sorted(self.bids.items(), key=lambda kv: -Decimal(kv[0]))

    def sorted_asks(self) -> list[tuple[str, str]]:
        return sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))


class RawChecker:
    """Reads frames as raw JSON tokens; keeps books per chanId; checks every ``cs``."""

    def __init__(self) -> None:
        self.books: dict[str, RawBook] = {}
        self.symbols: dict[str, str] = {}
        self.cs: list[tuple[str, int, int]] = []  # (symbol, venue value, our value)

    def feed(self, text: str) -> None:
        msg = raw(text)
        if isinstance(msg, dict):
            if msg.get("event") == "subscribed" and msg["channel"] == "book":
                self.books[msg["chanId"]] = RawBook(int(msg["len"]))
                self.symbols[msg["chanId"]] = msg["symbol"]
            elif msg.get("event") == "unsubscribed":
                self.books.pop(msg["chanId"], None)
            return
        book = self.books.get(msg[0])
        if book is None:
            return
        body = msg[1]
        if isinstance(body, list) and body and isinstance(body[0], list):
            book.bids.clear()
            book.asks.clear()
            for price, count, amount in body:
                assert 1 <= int(count) <= 5
                (book.asks if amount.startswith("-") else book.bids)[price] = amount
        elif isinstance(body, list) and body:
            price, count, amount = body
            if count == "0":
                assert amount in ("1", "-1")
                side = book.bids if amount == "1" else book.asks
                assert price in side, f"delete of a level the client does not hold: {text}"
                del side[price]
            else:
                assert 1 <= int(count) <= 5
                (book.asks if amount.startswith("-") else book.bids)[price] = amount
            assert len(book.bids) <= book.length and len(book.asks) <= book.length
        elif body == "cs":
            ours = bfx_checksum(book.sorted_bids()[:25], book.sorted_asks()[:25])
            self.cs.append((self.symbols[msg[0]], int(msg[2]), ours))


# -- a client: adapter + sync engines + checker ----------------------------------------------------
class Client:
    """One connection fed through mmdata's adapter and engines and the independent checker."""

    def __init__(self, sim: BitfinexSim, now_ms: int = START_MS, flags: int = OB_CHECKSUM | SEQ_ALL) -> None:
        session = sim.accept("/ws/2", now_ms)
        assert isinstance(session, BitfinexSession)
        self.session = session
        self.adapter = get("bitfinex")
        self.checker = RawChecker()
        self.engines: dict[str, ChecksumSync] = {}
        self.texts: list[str] = []
        self.events: list[Any] = []
        self.outputs: list[Any] = []
        self.chan: dict[tuple[str, str], int] = {}
        self.feed(session.on_open(now_ms))
        if flags:
            self.send({"event": "conf", "flags": flags}, now_ms)

    def feed(self, frames: Iterable[OutFrame]) -> list[OutFrame]:
        frames = list(frames)
        for frame in frames:
            text = frame.text
            self.texts.append(text)
            self.checker.feed(text)
            for event in self.adapter.parse(text):
                self.events.append(event)
                kind = type(event)
                if kind is SequenceBreak:
                    for engine in self.engines.values():
                        self.outputs += engine.receive(event)
                elif kind in (BookSnapshot, BookDiff, BookChecksum):
                    self.outputs += self.engines[event.symbol].receive(event)
                elif kind is Ack and event.channel in ("book", "trades") and event.ok:
                    self.chan[(event.channel, event.symbol)] = event.channel_id
                    if event.channel == "book":
                        engine = self.engines.setdefault(event.symbol, ChecksumSync.bitfinex(event.symbol))
                        self.outputs += engine.receive(event)
        return frames

    def send(self, msg: Any, now_ms: int = START_MS) -> list[OutFrame]:
        text = msg if isinstance(msg, str) else json.dumps(msg)
        return self.feed(self.session.on_text(text, now_ms))

    def subscribe_book(self, symbol: str, length: int = 25, now_ms: int = START_MS) -> list[OutFrame]:
        msg = {"event": "subscribe", "channel": "book", "symbol": symbol, "prec": "P0", "freq": "F0"}
        msg["len"] = str(length)
        return self.send(msg, now_ms)

    def subscribe_trades(self, symbol: str, now_ms: int = START_MS) -> list[OutFrame]:
        return self.send({"event": "subscribe", "channel": "trades", "symbol": symbol}, now_ms)

    def step(self, step: MarketStep) -> list[OutFrame]:
        return self.feed(self.session.on_step(step))

    def tick(self, now_ms: int) -> list[OutFrame]:
        return self.feed(self.session.on_tick(now_ms))

    def breaks(self) -> list[SequenceBreak]:
        return [e for e in self.events if type(e) is SequenceBreak]


# The brute-force windows format the same levels step after step: memoize the model's formatter.
_js = functools.lru_cache(maxsize=1 << 16)(js_number_text)


def expected_window(market: FakeMarket, symbol: str, length: int) -> tuple[list[tuple[str, str]], ...]:
    spec = market.specs[symbol]
    bids, asks = market.book(symbol)
    pp, qp = spec.price_precision, spec.qty_precision
    return (
        [(_js(p, pp), _js(q, qp)) for p, q in bids[:length]],
        [(_js(p, pp), _js(q, qp)) for p, q in asks[:length]],
    )


def assert_window(client: Client, market: FakeMarket, symbol: str, length: int) -> None:
    engine = client.engines[symbol]
    assert engine.state is SyncState.SYNCED
    want_bids, want_asks = expected_window(market, symbol, length)
    got_bids, got_asks = engine.book.top()
    assert got_bids == want_bids
    assert got_asks == want_asks


def events(frames: Iterable[OutFrame]) -> list[dict[str, Any]]:
    return [json.loads(f.text) for f in frames]


def seq_of(text: str) -> tuple[int, int | None]:
    """(SEQ, MTS-or-None) of an array frame sent with SEQ_ALL (| TIMESTAMP)."""
    msg = json.loads(text)
    at = 2 if isinstance(msg[1], list) or msg[1] == "hb" else 3
    return msg[at], (msg[at + 1] if len(msg) > at + 1 else None)


# -- connection, conf, ping ------------------------------------------------------------------------
def test_accept_only_ws2_and_info_greeting() -> None:
    sim = BitfinexSim(FakeMarket())
    refused = sim.accept("/ws/1", START_MS)
    assert isinstance(refused, RestResponse) and refused.status == 404
    assert isinstance(sim.accept("/ws", START_MS), RestResponse)
    s1 = sim.accept("/ws/2", START_MS)
    s2 = sim.accept("/ws/2?foo=bar", START_MS)
    assert isinstance(s1, BitfinexSession) and isinstance(s2, BitfinexSession)
    (info1,) = s1.on_open(START_MS)
    (info2,) = s2.on_open(START_MS)
    msg = json.loads(info1.text)
    assert list(msg) == ["event", "version", "serverId", "platform"]
    assert msg["event"] == "info" and msg["version"] == 2 and msg["platform"] == {"status": 1}
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", msg["serverId"])
    assert json.loads(info2.text)["serverId"] != msg["serverId"]
    # Deterministic: a fresh simulator gives the same ids in the same order.
    again = BitfinexSim(FakeMarket()).accept("/ws/2", 0)
    assert isinstance(again, BitfinexSession)
    assert again.on_open(0)[0].text == info1.text
    (status,) = get("bitfinex").parse(info1.text)
    assert isinstance(status, VenueStatus) and status.kind == "info"


def test_conf_ping_and_unknown_events() -> None:
    client = Client(BitfinexSim(FakeMarket()), flags=0)
    (conf,) = client.send({"event": "conf", "flags": ALL_FLAGS})
    assert json.loads(conf.text) == {"event": "conf", "status": "OK", "flags": ALL_FLAGS}
    assert client.session.flags == ALL_FLAGS
    (pong,) = client.send({"event": "ping", "cid": 1234}, 1511545528111)
    assert conf.kind == "ack" and pong.kind == "pong"
    assert json.loads(pong.text) == {"event": "pong", "ts": 1511545528111, "cid": 1234}
    for bad in ('{"event":"dance"}', "not json", "[1,2]", '{"event":"conf","flags":"x"}'):
        (err,) = client.send(bad)
        body = json.loads(err.text)
        assert body["event"] == "error" and body["code"] == 10000
    assert client.events[-1].ok is False  # the adapter reads it as a refused Ack


# -- subscriptions and errors ----------------------------------------------------------------------
def test_book_subscribe_answer_and_snapshot_shape() -> None:
    market = FakeMarket((BTC, XRP, AVAX))
    client = Client(BitfinexSim(market))
    answer, snapshot = client.send(
        {"event": "subscribe", "channel": "book", "symbol": "tXRPBTC", "prec": "P0", "len": "25", "subId": 7}
    )
    msg = json.loads(answer.text)
    assert list(msg) == ["event", "channel", "chanId", "symbol", "prec", "freq", "len", "subId", "pair"]
    assert msg["symbol"] == "tXRPBTC" and msg["pair"] == "XRPBTC" and msg["len"] == "25"
    assert (msg["prec"], msg["freq"], msg["subId"]) == ("P0", "F0", 7)
    assert snapshot.kind == "snapshot" and snapshot.symbol == "tXRPBTC"
    chan, levels, seq = raw(snapshot.text)
    assert chan == str(msg["chanId"]) and seq == "1"
    bids = [lv for lv in levels if not lv[2].startswith("-")]
    asks = [lv for lv in levels if lv[2].startswith("-")]
    assert levels == bids + asks  # bids first
    assert len(bids) == len(asks) == 25
    assert [Decimal(b[0]) for b in bids] == sorted((Decimal(b[0]) for b in bids), reverse=True)
    assert [Decimal(a[0]) for a in asks] == sorted(Decimal(a[0]) for a in asks)
    want_bids, want_asks = expected_window(market, "tXRPBTC", 25)
    assert [(b[0], b[2]) for b in bids] == want_bids
    assert [(a[0], a[2][1:]) for a in asks] == want_asks
    assert any("e-" in b[0] for b in bids)  # exponent text reached the wire
    # A colon pair keeps its colon in "pair"; the default len is 25.
    answer, _ = client.send({"event": "subscribe", "channel": "book", "symbol": "tAVAX:USD"})
    msg = json.loads(answer.text)
    assert (msg["pair"], msg["len"], msg["prec"]) == ("AVAX:USD", "25", "P0")
    # Legacy "pair" spelling and a symbol without the "t".
    answer, _ = client.send({"event": "subscribe", "channel": "trades", "pair": "BTCUSD"})
    assert json.loads(answer.text)["symbol"] == "tBTCUSD"
    answer, _ = client.send({"event": "subscribe", "channel": "trades", "symbol": "XRPBTC"})
    assert json.loads(answer.text)["symbol"] == "tXRPBTC"


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"channel": "book", "symbol": "tNOPE"}, 10001),
        ({"channel": "trades"}, 10001),
        ({"channel": "book", "symbol": "tBTCUSD", "prec": "P1"}, 10011),
        ({"channel": "book", "symbol": "tBTCUSD", "prec": "R0"}, 10011),
        ({"channel": "book", "symbol": "tBTCUSD", "len": "30"}, 10012),
        ({"channel": "book", "symbol": "tBTCUSD", "len": "abc"}, 10012),
        ({"channel": "book", "symbol": "tBTCUSD", "freq": "F1"}, 10300),
        ({"channel": "ticker", "symbol": "tBTCUSD"}, 10300),
        ({"channel": "bogus", "symbol": "tBTCUSD"}, 10302),
    ],
)
def test_subscribe_errors(request_: dict[str, Any], code: int) -> None:
    client = Client(BitfinexSim(FakeMarket()))
    (err,) = client.send({"event": "subscribe", **request_})
    body = json.loads(err.text)
    assert body["event"] == "error" and body["code"] == code and body["msg"]
    assert client.session._channels == {}
    (ack,) = [e for e in client.events if isinstance(e, Ack)][-1:]
    assert not ack.ok


def test_duplicate_limit_unsubscribe_and_unique_channel_ids() -> None:
    specs = [InstrumentSpec(f"tC{i:02d}USD", 2, 4, 10_000 + i) for i in range(16)]
    market = FakeMarket(specs, levels=5, past_trades=10)
    client = Client(BitfinexSim(market))
    client.subscribe_book("tC00USD")
    (dup,) = client.subscribe_book("tC00USD", 100)
    assert json.loads(dup.text)["code"] == 10301
    client.subscribe_trades("tC00USD")
    (dup,) = client.subscribe_trades("tC00USD")
    assert json.loads(dup.text)["code"] == 10301
    for spec in specs[1:15]:
        client.subscribe_book(spec.symbol)
        client.subscribe_trades(spec.symbol)
    assert len(client.session._channels) == 30
    (full,) = client.subscribe_book("tC15USD")
    assert json.loads(full.text)["code"] == 10305
    ids = list(client.chan.values())
    assert len(set(ids)) == 30
    # Unsubscribe frees a slot; a new subscription never reuses an id.
    chan = client.chan[("book", "tC03USD")]
    (unsub,) = client.send({"event": "unsubscribe", "chanId": chan})
    assert json.loads(unsub.text) == {"event": "unsubscribed", "status": "OK", "chanId": chan}
    (err,) = client.send({"event": "unsubscribe", "chanId": chan})
    assert json.loads(err.text)["code"] == 10401
    answer, _snapshot = client.subscribe_book("tC15USD")
    assert json.loads(answer.text)["chanId"] not in ids
    # No data for the unsubscribed channel.
    frames = client.step(market.push("tC03USD", START_MS + 1, [("bid", 10_003, 99)]))
    assert frames == []
    # Another connection numbers its channels differently.
    other = Client(BitfinexSim(market))
    other.subscribe_book("tC00USD")
    other.subscribe_book("tC01USD")
    a, b = other.chan[("book", "tC00USD")], other.chan[("book", "tC01USD")]
    assert a != b


# -- the book stream: every checksum, every step ---------------------------------------------------
@pytest.mark.parametrize(("length", "steps"), [(25, 3000), (100, 2000), (1, 800), (250, 800)])
def test_book_stream_verifies_every_checksum(length: int, steps: int) -> None:
    market = FakeMarket(seed=length)
    client = Client(BitfinexSim(market))
    for symbol in market.specs:
        client.subscribe_book(symbol, length)
        client.subscribe_trades(symbol)
    cs_frames = 0
    rng = random.Random(length)
    ts = START_MS
    for i in range(steps):
        ts += rng.randint(1, 400)
        symbol = "tXRPBTC" if i % 3 else "tBTCUSD"
        frames = client.step(market.step(symbol, ts))
        cs_frames += sum(f.kind == "checksum" for f in frames)
        if i % 50 == 0:
            client.tick(ts)
        assert_window(client, market, symbol, length)
    assert not client.breaks()
    # The client verified every checksum and agreed with each one.
    verified = sum(e.stats.checksums_verified for e in client.engines.values())
    assert verified == cs_frames > steps // 4
    assert all(e.stats.checksum_mismatches == 0 for e in client.engines.values())
    assert not [o for o in client.outputs if isinstance(o, ChecksumMismatch)]
    # The independent raw-token checksum agrees on every cs frame too.
    assert len(client.checker.cs) == cs_frames
    assert all(venue == ours for _, venue, ours in client.checker.cs)
    # Exponent-form prices appeared, never Python float text.
    xrp_text = "\n".join(t for t in client.texts if t.startswith(f"[{client.chan[('book', 'tXRPBTC')]},"))
    assert re.search(r"[\[,]\d(\.\d+)?e-7,", xrp_text)
    assert "e-0" not in xrp_text and ".0," not in "".join(client.texts) and ".0]" not in "".join(client.texts)
    # Trades went through as Trade events, te once per trade (tu is not a second Trade).
    live = [e for e in client.events if isinstance(e, Trade) and not e.snapshot]
    assert len(live) == len({(e.symbol, e.trade_id) for e in live}) > 0


def test_window_push_out_and_pull_in_frames() -> None:
    market = FakeMarket((XRP,), levels=3, past_trades=0)
    market.bids["tXRPBTC"] = {11_000: 100, 10_900: 200}
    market.asks["tXRPBTC"] = {11_100: 300}
    client = Client(BitfinexSim(market))
    _, snapshot = client.subscribe_book("tXRPBTC", 1)
    chan = client.chan[("book", "tXRPBTC")]
    assert raw(snapshot.text)[1] == [["0.0000011", "4", "1"], ["0.00000111", "2", "-3"]]
    # A better bid pushes the old best out of the len-1 window: delete first, then add.
    frames = client.step(market.push("tXRPBTC", START_MS + 1, [("bid", 11_050, 2050000)]))
    assert [f.text for f in frames][:2] == [
        f"[{chan},[0.0000011,0,1],2]",
        f"[{chan},[0.000001105,3,20500],3]",
    ]
    assert frames[2].kind == "checksum"
    # It goes away: the old best comes back into the window.
    frames = client.step(market.push("tXRPBTC", START_MS + 2, [("bid", 11_050, 0)]))
    assert [f.text for f in frames][:2] == [f"[{chan},[0.000001105,0,1],5]", f"[{chan},[0.0000011,4,1],6]"]
    # A change outside the window sends nothing, not even a checksum.
    assert client.step(market.push("tXRPBTC", START_MS + 3, [("bid", 10_900, 5)])) == []
    # Asks: amount -1 on delete; an empty side is fine.
    frames = client.step(market.push("tXRPBTC", START_MS + 4, [("ask", 11_100, 0)]))
    assert frames[0].text == f"[{chan},[0.00000111,0,-1],8]"
    assert client.checker.cs[-1][1] == client.checker.cs[-1][2]
    assert_window(client, market, "tXRPBTC", 1)


changes_strategy = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from(("bid", "ask")), st.integers(1, 40), st.sampled_from((0, 0, 1, 7, 500, 10**9))
        ),
        min_size=1,
        max_size=6,
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=changes_strategy, length=st.sampled_from((1, 25)), late=st.integers(0, 40))
def test_window_matches_brute_force_for_any_script(
    script: list[list[tuple[str, int, int]]], length: int, late: int
) -> None:
    """Any sequence of changes (crossing books, repeats, empty sides): two sessions, one late."""
    spec = InstrumentSpec("tTESTBTC:TESTUSD", 9, 3, 20)
    market = FakeMarket((spec,), levels=0, past_trades=0)
    sim = BitfinexSim(market)
    first = Client(sim)
    first.subscribe_book(spec.symbol, length)
    second: Client | None = None
    for i, changes in enumerate(script):
        if i == late:
            second = Client(sim)
            second.subscribe_book(spec.symbol, 25 if length == 1 else 1)
        # Bids at prices 1..20, asks at 21..40 would keep the book uncrossed; any is allowed.
        step = market.push(spec.symbol, START_MS + i, [(s, p * 10, q) for s, p, q in changes])
        for client in (first, second):
            if client is not None:
                client.step(step)
                engine = client.engines[spec.symbol]
                book = client.checker.books[str(client.chan[("book", spec.symbol)])]
                want_bids, want_asks = expected_window(market, spec.symbol, book.length)
                assert [(p, a) for p, a in book.sorted_bids()] == want_bids
                assert [(p, a[1:]) for p, a in book.sorted_asks()] == want_asks
                assert engine.stats.checksum_mismatches == 0
    for client in (first, second):
        if client is not None:
            assert all(venue == ours for _, venue, ours in client.checker.cs)


def test_sessions_share_the_mirror_join_late_and_resume() -> None:
    """Several sessions, lengths, late joins, a gap with no subscriber (mirror reload)."""
    market = FakeMarket(seed=3)
    sim = BitfinexSim(market)
    a = Client(sim)
    a.subscribe_book("tBTCUSD", 25)
    b: Client | None = None
    ts = START_MS
    for i in range(600):
        ts += 50
        step = market.step("tBTCUSD", ts)
        a.step(step)
        if i == 100:
            b = Client(sim)
            b.subscribe_book("tBTCUSD", 100)
        elif b is not None:
            b.step(step)
            assert_window(b, market, "tBTCUSD", 100)
        assert_window(a, market, "tBTCUSD", 25)
    # Nobody follows tXRPBTC for a while, then a client subscribes: reload from the market.
    for _ in range(50):
        market.step("tXRPBTC", ts)
    c = Client(sim)
    c.subscribe_book("tXRPBTC", 25)
    assert_window(c, market, "tXRPBTC", 25)
    for _ in range(100):
        ts += 10
        c.step(market.step("tXRPBTC", ts))
        assert_window(c, market, "tXRPBTC", 25)
    # Steps c never saw are caught up exactly at the next one.
    for _ in range(30):
        a.step(market.step("tBTCUSD", ts))
    d_steps = [market.step("tXRPBTC", ts) for _ in range(20)]
    c.step(d_steps[-1])
    assert_window(c, market, "tXRPBTC", 25)
    assert c.step(d_steps[-1]) == []  # a step delivered twice changes nothing
    assert c.engines["tXRPBTC"].stats.checksum_mismatches == 0
    for client in (a, c):
        assert all(venue == ours for _, venue, ours in client.checker.cs)


# -- sequence numbers, timestamps, heartbeats ------------------------------------------------------
def test_seq_all_contiguous_across_channels_and_heartbeats() -> None:
    market = FakeMarket(seed=11)
    client = Client(BitfinexSim(market), flags=ALL_FLAGS)
    for symbol in market.specs:
        client.subscribe_book(symbol, 25)
        client.subscribe_trades(symbol)
    ts = START_MS
    times: dict[str, int] = {}
    for i in range(400):
        ts += 20_000 if i % 40 == 0 else 37  # silent stretches: heartbeats due
        frames = client.step(market.step("tBTCUSD" if i % 2 else "tXRPBTC", ts))
        frames += client.tick(ts)
        for f in frames:
            times[f.text] = ts
    arrays = [t for t in client.texts if t.startswith("[")]
    seqs = [seq_of(t) for t in arrays]
    assert [s for s, _ in seqs] == list(range(1, len(arrays) + 1))
    assert all(mts is not None for _, mts in seqs)
    assert all(mts == times[t] for t, (_, mts) in zip(arrays, seqs, strict=True) if t in times)
    heartbeats = [e for e in client.events if isinstance(e, VenueStatus) and e.kind == "heartbeat"]
    assert len(heartbeats) >= 4 and all(e.seq is not None for e in heartbeats)
    kinds = {json.loads(t)[1] for t in arrays if isinstance(json.loads(t)[1], str)}
    assert kinds == {"hb", "cs", "te", "tu"}
    assert not client.breaks()


def test_heartbeat_after_15_silent_seconds_per_channel() -> None:
    market = FakeMarket(seed=5)
    client = Client(BitfinexSim(market), flags=SEQ_ALL)
    client.subscribe_book("tBTCUSD")
    client.subscribe_trades("tXRPBTC")
    book = client.chan[("book", "tBTCUSD")]
    trades = client.chan[("trades", "tXRPBTC")]
    assert client.tick(START_MS + 14_999) == []
    hb = client.tick(START_MS + 15_000)
    assert [f.text for f in hb] == [f'[{book},"hb",3]', f'[{trades},"hb",4]']
    assert {f.kind for f in hb} == {"heartbeat"}
    # Book activity keeps its channel quiet; the trades channel still beats every 15 s.
    ts = START_MS + 15_000
    beats = []
    while ts < START_MS + 60_000:
        ts += 1000
        client.step(market.push("tBTCUSD", ts, [("bid", BTC.start_price - 1, ts // 1000 % 1000 + 1)]))
        beats += [json.loads(f.text)[0] for f in client.tick(ts)]
    assert beats == [trades, trades, trades]
    assert not client.breaks()


# -- trades ----------------------------------------------------------------------------------------
def test_trades_snapshot_and_te_tu() -> None:
    market = FakeMarket(seed=9)
    client = Client(BitfinexSim(market))
    answer, snapshot = client.subscribe_trades("tXRPBTC")
    assert json.loads(answer.text) == {
        "event": "subscribed",
        "channel": "trades",
        "chanId": client.chan[("trades", "tXRPBTC")],
        "symbol": "tXRPBTC",
        "pair": "XRPBTC",
    }
    rows = raw(snapshot.text)[1]
    newest = market.trade_log["tXRPBTC"][-30:][::-1]
    assert [int(r[0]) for r in rows] == [t.trade_id for t in newest]
    assert [r[2] for r in rows] == [
        ("-" if t.side == "sell" else "") + js_number_text(t.qty, 2) for t in newest
    ]
    assert [r[3] for r in rows] == [js_number_text(t.price, 10) for t in newest]
    snap_events = [e for e in client.events if isinstance(e, Trade)]
    assert len(snap_events) == 30 and all(e.snapshot for e in snap_events)
    step = market.push(
        "tXRPBTC",
        START_MS + 5,
        [("ask", XRP.start_price + XRP.tick, 0)],
        [(11_000, 150, "buy"), (9_000, 7, "sell")],
    )
    frames = client.step(step)
    chan = client.chan[("trades", "tXRPBTC")]
    t1, t2 = step.trades
    assert [f.text for f in frames] == [
        f'[{chan},"te",[{t1.trade_id},{START_MS + 5},1.5,0.0000011],2]',
        f'[{chan},"tu",[{t1.trade_id},{START_MS + 5},1.5,0.0000011],3]',
        f'[{chan},"te",[{t2.trade_id},{START_MS + 5},-0.07,9e-7],4]',
        f'[{chan},"tu",[{t2.trade_id},{START_MS + 5},-0.07,9e-7],5]',
    ]
    assert [f.kind for f in frames] == ["trade", "other", "trade", "other"]
    live = [e for e in client.events if isinstance(e, Trade) and not e.snapshot]
    assert [(e.side, e.price, e.qty) for e in live] == [("buy", "0.0000011", "1.5"), ("sell", "9e-7", "0.07")]


# -- faults: corrupted checksum, maintenance -------------------------------------------------------
def test_corrupt_next_checksum_is_detected_once() -> None:
    market = FakeMarket(seed=21)
    client = Client(BitfinexSim(market))
    client.subscribe_book("tBTCUSD")
    client.subscribe_book("tXRPBTC")
    ts = START_MS
    for _ in range(20):
        ts += 10
        client.step(market.step("tBTCUSD", ts))
    client.session.corrupt_next_checksum("tBTCUSD")
    # Steps of another symbol leave the pending corruption alone.
    while not any(f.kind == "checksum" for f in client.step(market.step("tXRPBTC", ts))):
        pass
    while not any(f.kind == "checksum" for f in client.step(market.step("tBTCUSD", ts))):
        pass
    mismatches = [o for o in client.outputs if isinstance(o, ChecksumMismatch)]
    assert [m.symbol for m in mismatches] == ["tBTCUSD"]
    bad = [(s, v, o) for s, v, o in client.checker.cs if v != o]
    assert len(bad) == 1 and bad[0][0] == "tBTCUSD"
    assert client.engines["tBTCUSD"].state is SyncState.RESYNCING
    # What the engine asks for: resubscribe. Afterwards everything verifies again.
    client.send({"event": "unsubscribe", "chanId": client.chan[("book", "tBTCUSD")]})
    client.subscribe_book("tBTCUSD")
    for _ in range(50):
        ts += 10
        client.step(market.step("tBTCUSD", ts))
    assert_window(client, market, "tBTCUSD", 25)
    assert client.engines["tBTCUSD"].stats.checksum_mismatches == 1
    assert len([1 for s, v, o in client.checker.cs if v != o]) == 1


def test_info_frames_and_maintenance_pause() -> None:
    market = FakeMarket(seed=4)
    sim = BitfinexSim(market)
    client = Client(sim)
    client.subscribe_book("tBTCUSD")
    client.subscribe_trades("tBTCUSD")
    other = Client(sim)  # not in maintenance: keeps the shared mirror moving
    other.subscribe_book("tBTCUSD", 100)
    session = client.session
    for code in (20051, 20060, 20061):
        frame = session.info_frame(code, START_MS)
        assert frame.kind == "info"
        assert json.loads(frame.text) == {"event": "info", "code": code, "msg": INFO_MESSAGES[code]}
    with pytest.raises(ValueError, match="20099"):
        session.info_frame(20099, START_MS)
    (status,) = get("bitfinex").parse(session.info_frame(20060, START_MS).text)
    assert status.kind == "maintenance" and session.paused
    client.feed([session.info_frame(20060, START_MS)])
    ts = START_MS
    for _ in range(40):
        ts += 100
        step = market.push(
            "tBTCUSD", ts, [("bid", BTC.start_price - 1, ts % 977 + 1)], [(BTC.start_price + 1, 5, "buy")]
        )
        assert client.step(step) == []
        assert other.step(step)
    # A subscription made during maintenance is answered; its snapshot waits for the end.
    answer = client.subscribe_book("tXRPBTC") + client.subscribe_trades("tXRPBTC")
    assert [f.kind for f in answer] == ["ack", "ack"]
    assert client.step(market.step("tXRPBTC", ts)) == []
    # Heartbeats still flow.
    assert {f.kind for f in client.tick(ts + 20_000)} == {"heartbeat"}
    client.feed([session.info_frame(20061, ts)])
    assert not session.paused
    step = market.step("tBTCUSD", ts + 20_001)
    frames = client.step(step)
    other.step(step)
    assert "snapshot" not in {f.kind for f in frames}
    assert_window(client, market, "tBTCUSD", 25)
    assert_window(other, market, "tBTCUSD", 100)
    frames = client.step(market.step("tXRPBTC", ts + 20_002))
    assert frames[0].kind == "snapshot"
    assert [f.kind for f in frames if f.kind == "trade"] == ["trade"]  # the trades snapshot
    assert raw(frames[-1].text)[1][0][0] == str(market.trade_log["tXRPBTC"][-1].trade_id)
    assert_window(client, market, "tXRPBTC", 25)
    assert all(venue == ours for _, venue, ours in client.checker.cs)
    assert not client.breaks()


# -- REST ------------------------------------------------------------------------------------------
def rest(sim: BitfinexSim, path: str, now_ms: int = START_MS, **query: Any) -> Any:
    answer = sim.rest(path, {k: str(v) for k, v in query.items()}, now_ms)
    assert answer.status == 200, answer.body
    return raw(answer.body)


def candle_row(c: SimCandle, spec: InstrumentSpec) -> list[str]:
    pp, qp = spec.price_precision, spec.qty_precision
    return [
        str(c.open_ms),
        js_number_text(c.open, pp),
        js_number_text(c.close, pp),
        js_number_text(c.high, pp),
        js_number_text(c.low, pp),
        js_number_text(c.volume, qp),
    ]


def test_rest_candles_order_sort_limit_and_paging() -> None:
    market = FakeMarket(seed=13)
    sim = BitfinexSim(market)
    now = START_MS + 60_000
    trades = market.trade_log["tXRPBTC"]
    every = [candle_row(c, XRP) for c in brute_candles(trades, 60_000, 0, now + 1)]
    assert len(every) > 500
    # Default: the newest 100, newest first; OPEN, CLOSE, HIGH, LOW, VOLUME.
    rows = rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now)
    assert rows == every[::-1][:100]
    assert any(r[1] != r[2] for r in rows) and any("e-" in r[4] for r in rows + every)
    assert rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, sort=1, limit=5) == every[:5]
    start, end = int(every[200][0]), int(every[260][0])
    window = [r for r in every if start <= int(r[0]) <= end]  # both ends inclusive
    assert (
        rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, start=start, end=end, sort=1, limit=1000)
        == window
    )
    assert (
        rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, start=start, end=end, limit=1000) == window[::-1]
    )
    assert (
        rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, start=start, end=end, limit=7) == window[::-1][:7]
    )
    # Paging back with end = oldest MTS - 1 returns every candle exactly once.
    got: list[list[str]] = []
    end_ms = now
    while True:
        page = rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, end=end_ms, limit=333)
        if not page:
            break
        got += page
        end_ms = int(page[-1][0]) - 1
    assert got == every[::-1]
    # Forward with sort=1 and start = newest MTS + 1.
    got, start_ms = [], 0
    while page := rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, start=start_ms, sort=1, limit=1000):
        got += page
        start_ms = int(page[-1][0]) + 1
    assert got == every
    # Longer timeframes; 1W and 7D are the same candles; /last is one row.
    hours = [candle_row(c, XRP) for c in brute_candles(trades, 3_600_000, 0, now + 1)]
    assert rest(sim, "/v2/candles/trade:1h:tXRPBTC/hist", now, limit=10000) == hours[::-1]
    weeks = rest(sim, "/v2/candles/trade:1W:tXRPBTC/hist", now)
    assert weeks == rest(sim, "/v2/candles/trade:7D:tXRPBTC/hist", now)
    assert weeks == [candle_row(c, XRP) for c in brute_candles(trades, 7 * 86_400_000, 0, now + 1)][::-1]
    assert rest(sim, "/v2/candles/trade:1m:tXRPBTC/last", now) == every[-1]
    assert rest(sim, "/v2/candles/trade:1m:tXRPBTC/last", now, end=int(every[10][0])) == every[10]
    assert rest(sim, "/v2/candles/trade:1m:tNOPE/hist", now) == []
    assert rest(sim, "/v2/candles/trade:1m:tXRPBTC/hist", now, end=1000) == []


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/v2/candles/trade:2m:tBTCUSD/hist", {}, "time_interval"),
        ("/v2/candles/trade:1M:tBTCUSD/hist", {}, "time_interval"),
        ("/v2/candles/funding:1m:tBTCUSD/hist", {}, "key"),
        ("/v2/candles/trade:1m:tBTCUSD/all", {}, "section"),
        ("/v2/candles/trade:1m:tBTCUSD/hist", {"limit": "x"}, "limit"),
        ("/v2/candles/trade:1m:tBTCUSD/hist", {"limit": "0"}, "limit"),
        ("/v2/candles/trade:1m:tBTCUSD/hist", {"sort": "2"}, "sort"),
        ("/v2/trades/tBTCUSD/hist", {"start": "soon"}, "start"),
        ("/v2/trades/tBTCUSD/hist", {"end": "-5"}, "end"),
        ("/v2/book/tBTCUSD/P0", {"len": "7"}, "len"),
        ("/v2/book/tBTCUSD/P2", {}, "precision"),
    ],
)
def test_rest_bad_parameters(path: str, query: dict[str, str], name: str) -> None:
    answer = BitfinexSim(FakeMarket(past_trades=50)).rest(path, query, START_MS)
    assert answer.status == 500
    assert json.loads(answer.body) == ["error", 10020, f"{name}: invalid"]


def test_rest_trades_default_sort_limit_and_paging() -> None:
    market = FakeMarket(seed=17)
    sim = BitfinexSim(market)
    trades = market.trade_log["tBTCUSD"]

    def row(t: SimTrade) -> list[str]:
        amount = js_number_text(t.qty, 8)
        return [
            str(t.trade_id),
            str(t.ts_ms),
            "-" + amount if t.side == "sell" else amount,
            js_number_text(t.price, 1),
        ]

    rows = rest(sim, "/v2/trades/tBTCUSD/hist")
    assert rows == [row(t) for t in trades[::-1][:120]]
    assert any(r[2].startswith("-") for r in rows) and any(not r[2].startswith("-") for r in rows)
    assert rest(sim, "/v2/trades/tBTCUSD/hist", sort=1, limit=10) == [row(t) for t in trades[:10]]
    lo, hi = trades[100].ts_ms, trades[400].ts_ms
    inside = [row(t) for t in trades if lo <= t.ts_ms <= hi]
    assert rest(sim, "/v2/trades/tBTCUSD/hist", start=lo, end=hi, sort=1, limit=10000) == inside
    # Forward paging, start = last MTS (inclusive) + dedupe by id: every trade exactly once.
    seen: dict[str, list[str]] = {}
    start = 0
    while True:
        page = rest(sim, "/v2/trades/tBTCUSD/hist", start=start, sort=1, limit=97)
        new = [r for r in page if r[0] not in seen]
        if not new:
            break
        seen.update((r[0], r) for r in new)
        start = int(page[-1][1])
    assert list(seen.values()) == [row(t) for t in trades]
    # Backward paging with end = oldest MTS - 1 when a page does not end inside a millisecond.
    got: list[list[str]] = []
    end = START_MS
    while page := rest(sim, "/v2/trades/tBTCUSD/hist", end=end, limit=89):
        got += page
        end = int(page[-1][1]) - 1
    ids = [int(r[0]) for r in got]
    assert len(ids) == len(set(ids))
    # Disjoint [start, end] windows partition the trades.
    parts: list[list[str]] = []
    for hour in range(START_MS - 3 * 86_400_000, START_MS, 3_600_000):
        parts += rest(sim, "/v2/trades/tBTCUSD/hist", start=hour, end=hour + 3_599_999, sort=1, limit=10000)
    assert parts == [row(t) for t in trades]
    assert rest(sim, "/v2/trades/tNOPE/hist") == []


def test_rest_limit_is_clamped_to_10000() -> None:
    market = FakeMarket(past_trades=20)
    calls: list[int] = []
    original = market.trades

    def spy(symbol: str, **kw: Any) -> list[SimTrade]:
        calls.append(kw["limit"])
        return original(symbol, **kw)

    market.trades = spy  # type: ignore[method-assign]
    rest(BitfinexSim(market), "/v2/trades/tBTCUSD/hist", limit=50_000)
    assert calls == [10_000]


def test_rest_book_pairs_status_and_unknown_routes() -> None:
    market = FakeMarket((BTC, XRP, AVAX))
    sim = BitfinexSim(market)
    rows = rest(sim, "/v2/book/tXRPBTC/P0", len=1)
    want_bids, want_asks = expected_window(market, "tXRPBTC", 1)
    assert [(r[0], r[2]) for r in rows] == [want_bids[0], (want_asks[0][0], "-" + want_asks[0][1])]
    assert len(rest(sim, "/v2/book/tBTCUSD/P0")) == 50
    assert rest(sim, "/v2/book/tNOPE/P0") == []
    assert rest(sim, "/v2/conf/pub:list:pair:exchange") == [["BTCUSD", "XRPBTC", "AVAX:USD"]]
    assert rest(sim, "/v2/platform/status") == ["1"]
    # Colon symbols inside the candle key.
    hours = brute_candles(market.trade_log["tAVAX:USD"], 3_600_000, 0, START_MS + 1)
    assert (
        rest(sim, "/v2/candles/trade:1h:tAVAX:USD/hist", limit=1000)
        == [candle_row(c, AVAX) for c in hours][::-1]
    )
    assert sim.rest("/v2/tickers", {}, START_MS).status == 404
    assert sim.rest("/v2/trades/tBTCUSD", {}, START_MS).status == 404
    assert sim.symbols() == ["tBTCUSD", "tXRPBTC", "tAVAX:USD"] and sim.name == "bitfinex"
