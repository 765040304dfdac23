"""A seeded synthetic market: live order books and trades, plus a deterministic past.

:class:`SyntheticMarket` is the simulator's default source (ARCHITECTURE.md §6). It is pure
(no clock, no I/O): the server calls :meth:`SyntheticMarket.step` with the time and hands the
resulting :class:`~mmdata.sim.model.MarketStep` to every venue session, which turns it into
wire frames (Binance ``depthUpdate`` ``U``/``u`` = ``first_id``/``last_id``, PROTOCOLS.md §A.2;
Kraken ``book`` updates with checksums, §B.2-B.3; Bitfinex ``[chanId,[price,count,amount]]``
with ``cs`` frames, §C.2-C.3). REST endpoints read :meth:`~SyntheticMarket.book`,
:meth:`~SyntheticMarket.trades` and :meth:`~SyntheticMarket.candles` (§A.3, §A.5, §B.7, §C.6).

Theory of operation
-------------------
Everything is an integer: prices in ``10**-price_precision`` units, quantities in
``10**-qty_precision`` units. Every random choice is derived from ``(seed, symbol, purpose)``
through a stable hash (BLAKE2b, never Python's salted ``hash()``) feeding :class:`random.Random`
instances, so the same seed and the same sequence of calls give identical output, and one
symbol's activity never perturbs another's.

*Live book.* Each side keeps ``spec.levels`` levels in a sorted list of keys (bid key =
price, ask key = -price, so both sides are ascending with the best level last) plus a
``price -> qty`` dict. A step is one event, drawn as::

    15 %  trade      a taker consumes the best opposite level partially, whole, or 2-3 levels;
                     one to three SimTrades per consumed level (several maker orders), each
                     level's new qty (or 0) in ``changes``; emptied levels refilled deep
    8 %   drift      the mid moves 1-2 ticks, mean-reverting to ``start_price``: the opposite
                     levels in the way are removed first, new levels added on the advancing
                     side, then both sides trimmed / refilled deep; the book never crosses
    17 %  add        a level inside the spread or in a gap near the top; deepest level trimmed
    7 %   remove     a level near the top; a new deep level refills the side
    53 %  qty        a level near the top (quadratic bias to the best) gets a new quantity

Adds outnumber removals so the top of the book stays dense (an add that finds no gap falls
back to a qty change). :meth:`~SyntheticMarket.top` reads the best N levels in O(N) for
venues that send a bounded depth (Kraken, Bitfinex).

Every change consumes one update id (``first_id = previous last_id + 1``); a ``(side,
price)`` appears at most once per step, so a venue may turn a step into one diff message.

*Trades* have contiguous ids per symbol: the synthetic past first, then the live trades
(kept in memory, at most ``live_trades_cap`` = :data:`LIVE_TRADES_CAP` (2,000,000) per symbol;
beyond it the oldest are dropped in chunks, their ids no longer served by :meth:`trades`
while the 1-minute candles they built are kept).

*The past* covers ``past_days`` days of whole minutes before ``start_ms`` (aligned down to
the minute). At construction each symbol gets per-minute trade counts (0 to ~16, many empty
minutes) and a per-minute price path, a log random walk generated backwards so that it ends
at ``start_price``. Trade ids come from prefix sums of the counts; the trades of one minute
are regenerated on demand from a random stream keyed by ``(seed, symbol)`` and addressed by
the minute (keyed BLAKE2b blocks: cheaper than seeding a Mersenne Twister per minute), with
timestamps strictly inside the minute and non-decreasing, prices around the path. Nothing of
the past is stored beyond counts, prefix sums, the path and caches (1-minute candles, the
8192 most recently regenerated minutes). A first query spanning all 30 days regenerates
every minute once (~0.3 s per symbol); later ones read the cached candles.

*Candles* are built from those same trades: 1-minute candles of the past are cached once
computed, live minutes are accumulated as trades happen (the running candle included),
longer multiples of a minute are aggregated from them (buckets aligned to the epoch), other
intervals are built straight from :meth:`trades`. Buckets without trades are omitted.

Sample (a buyer takes the whole best ask, 60000.02, and a deep ask refills the side)::

    MarketStep(symbol='BTCUSDT', ts_ms=1700000000150, first_id=260328108, last_id=260328109,
               changes=(LevelChange(side='ask', price=6000002, qty=0),
                        LevelChange(side='ask', price=6000329, qty=167)),
               trades=(SimTrade(trade_id=6561997, ts_ms=1700000000150, price=6000002,
                                qty=2404, side='buy'),))
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from typing import Final

from mmdata.errors import ConfigError
from mmdata.exchanges import get as get_exchange
from mmdata.sim.model import (
    BookSide,
    InstrumentSpec,
    LevelChange,
    MarketStep,
    SimCandle,
    SimTrade,
    TakerSide,
)

__all__ = ["LIVE_TRADES_CAP", "MINUTE_MS", "SyntheticMarket", "default_specs"]

MINUTE_MS: Final = 60_000
#: Live trades kept per symbol; older ones are dropped (their candles stay).
LIVE_TRADES_CAP: Final = 2_000_000

_SIDES: Final[tuple[BookSide, BookSide]] = ("bid", "ask")
_TAKERS: Final[tuple[TakerSide, TakerSide]] = ("buy", "sell")
_TOP: Final = 25  # "near the top" = among the best 25 levels
_MINUTE_CACHE: Final = 8192  # regenerated past minutes kept per symbol
_PAST_SIGMA: Final = 0.0005  # per-minute volatility of the past path (~2 % a day)
_unpack_u16: Final = struct.Struct("<32H").unpack

# A minute's raw trades: (ts_ms, price, qty, taker_is_buy).
_RawTrade = tuple[int, int, int, bool]
# A 1-minute candle: open, high, low, close, volume, quote_volume, trades, first_id, last_id.
_Bar = tuple[int, int, int, int, int, int, int, int, int]


def _stable_int(*parts: object) -> int:
    """64-bit hash of ``parts`` that is the same in every process (unlike ``hash()``)."""
    data = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _level_notional(symbol: str) -> tuple[int, int]:
    """Typical value of one level as a fraction (num, den) of the quote currency."""
    upper = symbol.upper()
    if upper.endswith(("BTC", "ETH")):
        return 1, 5  # 0.2 BTC / ETH
    return 2000, 1


class _Symbol:
    """One instrument's whole state: live book, live trades, the past's skeleton, caches."""

    __slots__ = (
        "agg_cache",
        "bar_cache",
        "counts",
        "cur_bar",
        "cur_minute",
        "keys",
        "last_ts",
        "levels",
        "live",
        "live_bars",
        "live_cap",
        "live_first_id",
        "live_ts",
        "minute_cache",
        "minute_key",
        "name",
        "next_id",
        "past_end",
        "past_end_id",
        "past_first_id",
        "past_start",
        "path",
        "prefix",
        "qty",
        "qty_unit",
        "rnd",
        "spec",
        "start_price",
        "tick",
        "trade_unit",
        "update_id",
    )

    def __init__(self, spec: InstrumentSpec, seed: int, start_ms: int, past_days: int, cap: int) -> None:
        sym = spec.symbol
        self.spec = spec
        self.name = sym
        self.tick = spec.tick
        self.levels = spec.levels
        self.start_price = spec.start_price
        num, den = _level_notional(sym)
        scale = 10 ** (spec.price_precision + spec.qty_precision)
        self.qty_unit = max(1, num * scale // (den * spec.start_price))
        self.trade_unit = max(1, self.qty_unit // 8)
        self.live_cap = cap

        self._build_past(seed, start_ms, past_days)
        self.live: list[SimTrade] = []
        self.live_ts: list[int] = []
        self.live_first_id = self.past_end_id
        self.next_id = self.past_end_id
        self.live_bars: dict[int, list[int]] = {}
        self.cur_minute = -1
        self.cur_bar: list[int] = []
        self.last_ts = start_ms

        rng = random.Random(_stable_int(seed, sym, "live"))
        self.rnd = rng.random
        self.update_id = 1001 + _stable_int(seed, sym, "update-id") % 1_000_000_000
        self.keys: tuple[list[int], list[int]] = ([], [])
        self.qty: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._build_book()

    # ----------------------------------------------------------------- construction

    def _build_past(self, seed: int, start_ms: int, past_days: int) -> None:
        sym = self.name
        n = past_days * 1440
        self.past_end = start_ms - start_ms % MINUTE_MS
        self.past_start = self.past_end - n * MINUTE_MS
        self.past_first_id = 1_000_000 + _stable_int(seed, sym, "trade-id") % 99_000_000
        self.minute_key = _stable_int(seed, sym, "minute").to_bytes(8, "big")
        rnd = random.Random(_stable_int(seed, sym, "past")).random

        # Counts: an hourly activity level times a skewed draw, so some minutes are empty.
        counts = [0] * n
        activity = 1.0
        for i in range(n):
            if i % 60 == 0:
                activity = 0.4 + 1.1 * rnd()
            counts[i] = int(11.0 * activity * rnd() * rnd())
        prefix = [0] * (n + 1)
        total = 0
        for i, c in enumerate(counts):
            total += c
            prefix[i + 1] = total

        # Price path walked backwards from start_price: path[i] is the price at minute i's open.
        tick = self.tick
        start = self.start_price
        path = [0] * (n + 1)
        path[n] = start
        # Multiplicative steps with uniform noise of standard deviation _PAST_SIGMA; only
        # IEEE-exact operations (no exp/log), so every platform computes the same path.
        step = _PAST_SIGMA * math.sqrt(12.0)
        x = float(start)
        for i in range(n - 1, -1, -1):
            x *= 1.0 + step * (rnd() - 0.5)
            p = round(x / tick) * tick
            path[i] = p if p >= tick else tick
        self.counts = counts
        self.prefix = prefix
        self.path = path
        self.past_end_id = self.past_first_id + total
        self.minute_cache: dict[int, list[_RawTrade]] = {}
        self.bar_cache: dict[int, _Bar] = {}
        self.agg_cache: dict[tuple[int, int], SimCandle | None] = {}

    def _build_book(self) -> None:
        rnd = self.rnd
        tick = self.tick
        best_bid = self.start_price // tick * tick
        best_bid = max(best_bid, tick)
        best_ask = best_bid + tick * (2 if rnd() < 0.3 else 1)
        for s, first in ((0, best_bid), (1, best_ask)):
            keys = self.keys[s]
            book = self.qty[s]
            price = first
            while len(keys) < self.levels and price > 0:
                keys.append(price if s == 0 else -price)
                book[price] = self._rand_qty()
                step = tick * (1 + self._gap())
                price = price - step if s == 0 else price + step
            keys.sort()

    # ----------------------------------------------------------------- random shapes

    def _rand_qty(self) -> int:
        r = self.rnd()
        return 1 + int(self.qty_unit * (0.05 + 3.0 * r * r * r))

    def _gap(self) -> int:
        g = self.rnd()
        if g < 0.65:
            return 0
        if g < 0.85:
            return 1
        return 2 + int(self.rnd() * 3)

    # ----------------------------------------------------------------- live events

    def step(self, ts: int) -> MarketStep:
        ts = ts if ts > self.last_ts else self.last_ts
        self.last_ts = ts
        changes: list[LevelChange] = []
        trades: tuple[SimTrade, ...] = ()
        r = self.rnd()
        if r < 0.15:
            trades = self._trade(ts, changes)
        elif r < 0.23:
            self._drift(changes)
        elif r < 0.40:
            self._add(changes)
        elif r < 0.47:
            self._remove(changes)
        if not changes:
            self._change_qty(changes)
        first = self.update_id + 1
        self.update_id += len(changes)
        return MarketStep(self.name, ts, first, self.update_id, tuple(changes), trades)

    def _change_qty(self, changes: list[LevelChange]) -> None:
        rnd = self.rnd
        s = 0 if rnd() < 0.5 else 1
        keys = self.keys[s]
        n = len(keys)
        if n == 0:
            self._refill(s, changes, None)
            return
        u = rnd()
        key = keys[n - 1 - int(u * u * (n if n < _TOP else _TOP))]
        price = key if s == 0 else -key
        book = self.qty[s]
        old = book[price]
        v = rnd()
        if v < 0.35:
            new = old + 1 + int(old * 0.5 * rnd())
        elif v < 0.7:
            new = old - 1 - int(old * 0.5 * rnd())
        else:
            new = self._rand_qty()
        new = new if new > 1 else 1
        if new == old:
            new = old + 1
        book[price] = new
        changes.append(LevelChange(_SIDES[s], price, new))

    def _add(self, changes: list[LevelChange]) -> None:
        rnd = self.rnd
        tick = self.tick
        s = 0 if rnd() < 0.5 else 1
        keys = self.keys[s]
        other = self.keys[1 - s]
        n = len(keys)
        if n == 0 or not other:
            return
        best = keys[-1]
        limit = -other[-1]  # the opposite best, in this side's key space
        if rnd() < 0.4 and limit - best > tick:
            free = (limit - best) // tick - 1
            key = best + tick * (1 + int(rnd() * (free if free < 2 else 2)))
            keys.append(key)
        else:
            if n < 2:
                return
            u = rnd()
            idx = n - 1 - int(u * u * (n - 1 if n - 1 < _TOP else _TOP))
            hi = keys[idx]
            free = (hi - keys[idx - 1]) // tick - 1
            if free <= 0:
                return
            key = hi - tick * (1 + int(rnd() * free))
            keys.insert(idx, key)
        price = key if s == 0 else -key
        qty = self._rand_qty()
        self.qty[s][price] = qty
        changes.append(LevelChange(_SIDES[s], price, qty))
        self._trim(s, changes)

    def _remove(self, changes: list[LevelChange]) -> None:
        rnd = self.rnd
        s = 0 if rnd() < 0.5 else 1
        keys = self.keys[s]
        n = len(keys)
        if n < 2:
            return
        u = rnd()
        idx = n - 1 - int(u * u * (n if n < _TOP else _TOP))
        key = keys.pop(idx)
        price = key if s == 0 else -key
        del self.qty[s][price]
        changes.append(LevelChange(_SIDES[s], price, 0))
        # Refill below the removed key too, so a re-added deep level is a new price.
        self._refill(s, changes, key if idx == 0 else None)

    def _drift(self, changes: list[LevelChange]) -> None:
        rnd = self.rnd
        tick = self.tick
        bids, asks = self.keys
        if not bids or not asks:
            return
        dev = (bids[-1] - self.start_price) / self.start_price
        bias = dev * 10.0
        bias = -0.4 if bias < -0.4 else (0.4 if bias > 0.4 else bias)
        s = 0 if rnd() < 0.5 - bias else 1  # the side that advances: bids when the mid rises
        o = 1 - s
        d = 1 if rnd() < 0.8 else 2
        d = min(d, self.levels)
        keys = self.keys[s]
        other = self.keys[o]
        best = keys[-1]
        target = best + d * tick
        if s == 1 and -target <= tick:
            return  # asks may not fall to zero
        # Opposite levels in the way go first, so applying changes in order never crosses.
        obook = self.qty[o]
        oname = _SIDES[o]
        while other and -other[-1] <= target:
            okey = other.pop()
            oprice = okey if o == 0 else -okey
            del obook[oprice]
            changes.append(LevelChange(oname, oprice, 0))
        book = self.qty[s]
        name = _SIDES[s]
        for j in range(1, d + 1):
            if j < d and rnd() < 0.4:
                continue
            key = best + j * tick
            keys.append(key)
            price = key if s == 0 else -key
            qty = self._rand_qty()
            book[price] = qty
            changes.append(LevelChange(name, price, qty))
        if not other or -other[-1] - target > 2 * tick:
            okey = -(target + tick)
            other.append(okey)
            oprice = okey if o == 0 else -okey
            qty = self._rand_qty()
            obook[oprice] = qty
            changes.append(LevelChange(oname, oprice, qty))
        self._trim(s, changes)
        self._trim(o, changes)
        self._refill(o, changes, None)

    def _trade(self, ts: int, changes: list[LevelChange]) -> tuple[SimTrade, ...]:
        rnd = self.rnd
        t = 0 if rnd() < 0.5 else 1
        o = 1 - t  # a buyer takes asks, a seller takes bids
        keys = self.keys[o]
        book = self.qty[o]
        n = len(keys)
        if n == 0:
            return ()
        u = rnd()
        full = 0 if u < 0.65 else (1 if u < 0.9 else 2 + int(rnd() * 2))
        full = full if full < n else n - 1
        partial = full == 0 or rnd() < 0.5
        name = _SIDES[o]
        taker = _TAKERS[t]
        out: list[SimTrade] = []
        for _ in range(full):
            key = keys.pop()
            price = key if o == 0 else -key
            self._fill(price, book.pop(price), ts, taker, out)
            changes.append(LevelChange(name, price, 0))
        if partial:
            key = keys[-1]
            price = key if o == 0 else -key
            qty = book[price]
            if qty >= 2:
                u = rnd()
                fill = 1 + int((qty - 1) * 0.9 * u * u)
                book[price] = qty - fill
                self._fill(price, fill, ts, taker, out)
                changes.append(LevelChange(name, price, qty - fill))
        if full:
            self._refill(o, changes, None)
        return tuple(out)

    def _fill(self, price: int, qty: int, ts: int, taker: TakerSide, out: list[SimTrade]) -> None:
        """Trades for ``qty`` taken at one level: 1-3 maker orders."""
        rnd = self.rnd
        r = rnd()
        parts = 1 if r < 0.7 else (2 if r < 0.9 else 3)
        parts = parts if parts < qty else qty
        remaining = qty
        for j in range(parts):
            q = remaining if j == parts - 1 else 1 + int(rnd() * (remaining - (parts - j)))
            remaining -= q
            trade = SimTrade(self.next_id, ts, price, q, taker)
            self.next_id += 1
            out.append(trade)
            self._record(trade)

    def _record(self, trade: SimTrade) -> None:
        """Keep a live trade and fold it into its running 1-minute candle."""
        ts = trade.ts_ms
        price = trade.price
        qty = trade.qty
        minute = ts - ts % MINUTE_MS
        if minute != self.cur_minute:
            bar = [price, price, price, price, qty, price * qty, 1, trade.trade_id, trade.trade_id]
            self.live_bars[minute] = bar
            self.cur_minute = minute
            self.cur_bar = bar
        else:
            bar = self.cur_bar
            if price > bar[1]:
                bar[1] = price
            elif price < bar[2]:
                bar[2] = price
            bar[3] = price
            bar[4] += qty
            bar[5] += price * qty
            bar[6] += 1
            bar[8] = trade.trade_id
        live = self.live
        live.append(trade)
        self.live_ts.append(ts)
        if len(live) > self.live_cap:
            drop = len(live) - self.live_cap + self.live_cap // 16
            del live[:drop]
            del self.live_ts[:drop]
            self.live_first_id += drop

    def _trim(self, s: int, changes: list[LevelChange]) -> None:
        keys = self.keys[s]
        book = self.qty[s]
        name = _SIDES[s]
        while len(keys) > self.levels:
            key = keys.pop(0)
            price = key if s == 0 else -key
            del book[price]
            changes.append(LevelChange(name, price, 0))

    def _refill(self, s: int, changes: list[LevelChange], below: int | None) -> None:
        """Add deep levels until the side has ``levels`` again (bids stay above zero)."""
        keys = self.keys[s]
        book = self.qty[s]
        name = _SIDES[s]
        tick = self.tick
        while len(keys) < self.levels:
            if keys:
                deep = keys[0]
            else:
                other = self.keys[1 - s]
                deep = -other[-1] if other else (self.start_price if s == 0 else -self.start_price)
            if below is not None and below < deep:
                deep = below
            key = deep - tick * (1 + self._gap())
            if s == 0 and key <= 0:
                return
            keys.insert(0, key)
            price = key if s == 0 else -key
            qty = self._rand_qty()
            book[price] = qty
            changes.append(LevelChange(name, price, qty))

    # ----------------------------------------------------------------- the past

    def minute(self, i: int) -> list[_RawTrade]:
        """Raw trades of past minute ``i``, regenerated from its own seed (cached)."""
        cached = self.minute_cache.get(i)
        if cached is not None:
            return cached
        n = self.counts[i]
        out: list[_RawTrade] = []
        if n:
            # The minute's random stream: keyed BLAKE2b blocks of 32 uniform 16-bit values,
            # three per trade (time offset, side + price noise, size); cheaper than seeding
            # a Mersenne Twister per minute, and addressable by minute.
            key = self.minute_key
            v: tuple[int, ...] = ()
            for block in range((3 * n + 31) // 32):
                data = (i * 4 + block).to_bytes(8, "little")
                v += _unpack_u16(hashlib.blake2b(data, key=key, digest_size=64).digest())
            m0 = self.past_start + i * MINUTE_MS + 1
            p0 = self.path[i]
            dp = self.path[i + 1] - p0
            tick = self.tick
            unit = self.trade_unit
            offsets = sorted([v[k] * (MINUTE_MS - 1) >> 16 for k in range(0, 3 * n, 3)])
            k = 1
            for off in offsets:
                a = v[k]
                price = (p0 + dp * off // MINUTE_MS) // tick * tick + tick * ((a & 0x7FFF) % 5 - 2)
                price = price if price > tick else tick
                r = v[k + 1] / 65536.0
                out.append((m0 + off, price, 1 + int(unit * (0.1 + 4.0 * r * r * r)), a >= 0x8000))
                k += 3
        if len(self.minute_cache) >= _MINUTE_CACHE:
            for old in list(self.minute_cache)[: _MINUTE_CACHE // 2]:
                del self.minute_cache[old]
        self.minute_cache[i] = out
        return out

    def past_bar(self, i: int) -> _Bar | None:
        """1-minute candle of past minute ``i`` (None when it had no trades), cached."""
        if self.counts[i] == 0:
            return None
        bar = self.bar_cache.get(i)
        if bar is None:
            raw = self.minute(i)
            high = low = raw[0][1]
            vol = quote = 0
            for _, price, qty, _ in raw:
                if price > high:
                    high = price
                elif price < low:
                    low = price
                vol += qty
                quote += price * qty
            first = self.past_first_id + self.prefix[i]
            bar = (raw[0][1], high, low, raw[-1][1], vol, quote, len(raw), first, first + len(raw) - 1)
            self.bar_cache[i] = bar
        return bar

    def minute_bar(self, minute_ms: int) -> Sequence[int] | None:
        """1-minute candle opening at ``minute_ms`` (past or live), None without trades."""
        if minute_ms < self.past_end:
            i = (minute_ms - self.past_start) // MINUTE_MS
            return self.past_bar(i) if i >= 0 else None
        return self.live_bars.get(minute_ms)

    # ----------------------------------------------------------------- trade queries

    def id_at(self, ts: int) -> int:
        """The first trade id whose timestamp is ``>= ts`` (next id if none)."""
        if ts <= self.past_start:
            return self.past_first_id
        if ts < self.past_end:
            i = (ts - self.past_start) // MINUTE_MS
            base = self.past_first_id + self.prefix[i]
            if self.counts[i]:
                for j, raw in enumerate(self.minute(i)):
                    if raw[0] >= ts:
                        return base + j
                return base + self.counts[i]
            return base
        return self.live_first_id + bisect_left(self.live_ts, ts)

    def materialize(self, lo: int, hi: int) -> list[SimTrade]:
        """Trades with ids in ``[lo, hi)`` that are still served, ascending."""
        out: list[SimTrade] = []
        a, b = max(lo, self.past_first_id), min(hi, self.past_end_id)
        if a < b:
            first = self.past_first_id
            prefix = self.prefix
            i = bisect_right(prefix, a - first) - 1
            tid = a
            while tid < b:
                base = first + prefix[i]
                raw = self.minute(i)
                for j in range(tid - base, min(len(raw), b - base)):
                    ts, price, qty, buy = raw[j]
                    out.append(SimTrade(base + j, ts, price, qty, "buy" if buy else "sell"))
                tid = min(b, base + len(raw))
                i += 1
        a, b = max(lo, self.live_first_id), min(hi, self.next_id)
        if a < b:
            out.extend(self.live[a - self.live_first_id : b - self.live_first_id])
        return out


class SyntheticMarket:
    """Seeded synthetic market implementing :class:`mmdata.sim.model.Market`.

    ``specs`` are the instruments (venue spelling); ``start_ms`` is when the live market
    starts (steps before it are clamped to it); ``past_days`` days of synthetic 1-minute
    history precede it. ``live_trades_cap`` bounds the live trades kept per symbol.
    Unknown symbols raise :class:`KeyError`.
    """

    def __init__(
        self,
        specs: Sequence[InstrumentSpec],
        *,
        seed: int = 0,
        start_ms: int,
        past_days: int = 30,
        live_trades_cap: int = LIVE_TRADES_CAP,
    ) -> None:
        if past_days < 0:
            raise ConfigError(f"past_days must be >= 0, got {past_days}")
        if live_trades_cap < 16:
            raise ConfigError(f"live_trades_cap must be >= 16, got {live_trades_cap}")
        by_symbol: dict[str, InstrumentSpec] = {}
        for spec in specs:
            _check_spec(spec)
            if spec.symbol in by_symbol:
                raise ConfigError(f"instrument {spec.symbol!r} given twice")
            by_symbol[spec.symbol] = spec
        self.specs: Mapping[str, InstrumentSpec] = by_symbol
        self.start_ms = start_ms
        self.seed = seed
        self.past_days = past_days
        self._state = {
            sym: _Symbol(spec, seed, start_ms, past_days, live_trades_cap) for sym, spec in by_symbol.items()
        }
        end = start_ms - start_ms % MINUTE_MS
        #: First millisecond of the synthetic past (a minute boundary).
        self.past_start_ms = end - past_days * 1440 * MINUTE_MS

    def symbols(self) -> list[str]:
        """The instruments' symbols, in the order given."""
        return list(self.specs)

    # ----------------------------------------------------------------- live book

    def step(self, symbol: str, ts_ms: int) -> MarketStep:
        """Advance ``symbol`` by one event at ``ts_ms`` (clamped to be >= start_ms and >= the
        previous step's time, so trade timestamps never decrease)."""
        return self._state[symbol].step(ts_ms)

    def book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Full current book ``(bids, asks)``, best first, ``(price, qty)`` units."""
        st = self._state[symbol]
        bid_keys, ask_keys = st.keys
        bq, aq = st.qty
        return [(k, bq[k]) for k in reversed(bid_keys)], [(-k, aq[-k]) for k in reversed(ask_keys)]

    def top(self, symbol: str, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``depth`` (>= 1) levels per side, best first; O(depth), no sorting."""
        st = self._state[symbol]
        if depth <= 0:
            return [], []
        bid_keys, ask_keys = st.keys
        bq, aq = st.qty
        bids = [(k, bq[k]) for k in reversed(bid_keys[-depth:])]
        asks = [(-k, aq[-k]) for k in reversed(ask_keys[-depth:])]
        return bids, asks

    def update_id(self, symbol: str) -> int:
        """Book update id of the current state (Binance ``lastUpdateId``)."""
        return self._state[symbol].update_id

    # ----------------------------------------------------------------- trades

    def trade_id_range(self, symbol: str) -> tuple[int, int]:
        """``(first, next)``: ids served are ``first <= id < next`` (past, then kept live trades)."""
        st = self._state[symbol]
        return st.past_first_id, st.next_id

    def trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[SimTrade]:
        """Trades (past and live) with ``start_ms <= ts < end_ms`` and ``id >= from_id``.

        Ascending by id, the first ``limit`` matches; with ``newest_first`` the newest
        ``limit`` matches, newest first (descending ids). Live trades beyond the kept
        ``live_trades_cap`` are no longer returned.
        """
        st = self._state[symbol]
        if limit <= 0:
            return []
        lo = st.past_first_id
        if start_ms is not None:
            lo = max(lo, st.id_at(start_ms))
        if from_id is not None:
            lo = max(lo, from_id)
        hi = st.next_id
        if end_ms is not None:
            hi = min(hi, st.id_at(end_ms))
        if lo >= hi:
            return []
        spans = ((lo, min(hi, st.past_end_id)), (max(lo, st.live_first_id), hi))
        segments = [(a, b) for a, b in spans if a < b]
        out: list[SimTrade] = []
        if not newest_first:
            for a, b in segments:
                out += st.materialize(a, min(b, a + limit - len(out)))
                if len(out) >= limit:
                    break
            return out
        for a, b in reversed(segments):
            part = st.materialize(max(a, b - (limit - len(out))), b)
            part.reverse()
            out += part
            if len(out) >= limit:
                break
        return out

    # ----------------------------------------------------------------- candles

    def candles(
        self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, *, limit: int = 1000
    ) -> list[SimCandle]:
        """Candles whose open is in ``[start_ms, end_ms)`` (aligned to ``interval_ms`` from
        the epoch), oldest first, at most ``limit``, built from the same trades ``trades()``
        returns (the still-running candle included; buckets without trades omitted)."""
        if interval_ms <= 0:
            raise ConfigError(f"candle interval must be > 0 ms, got {interval_ms}")
        st = self._state[symbol]
        if limit <= 0:
            return []
        iv = interval_ms
        # Buckets past the newest trade's minute hold nothing (live bars outlive dropped trades).
        data_end = st.cur_minute + MINUTE_MS if st.cur_minute >= 0 else st.past_end
        lo = max(-(-start_ms // iv) * iv, st.past_start // iv * iv)
        hi = min(end_ms, data_end)
        if iv % MINUTE_MS:
            return self._candles_from_trades(st, iv, lo, hi, limit)
        out: list[SimCandle] = []
        past_end = st.past_end
        for b in range(lo, hi, iv):
            if b + iv <= past_end:
                key = (iv, b)
                if key in st.agg_cache:
                    candle = st.agg_cache[key]
                else:
                    candle = _merge_bars(st, b, iv)
                    st.agg_cache[key] = candle
            else:
                candle = _merge_bars(st, b, iv)
            if candle is not None:
                out.append(candle)
                if len(out) >= limit:
                    break
        return out

    def _candles_from_trades(self, st: _Symbol, iv: int, lo: int, hi: int, limit: int) -> list[SimCandle]:
        """Candles for intervals that are not whole minutes (e.g. Binance ``1s``)."""
        out: list[SimCandle] = []
        if lo >= hi:
            return out
        tid = st.id_at(lo)
        stop = st.id_at(-(-hi // iv) * iv)
        bar: list[int] = []
        bucket = -1
        while tid < stop:
            chunk = self.trades(st.name, from_id=tid, end_ms=-(-hi // iv) * iv, limit=5000)
            if not chunk:
                break
            for t in chunk:
                b = t.ts_ms - t.ts_ms % iv
                if b != bucket:
                    if bar:
                        out.append(_candle(bucket, iv, bar))
                        if len(out) >= limit:
                            return out
                    bucket = b
                    bar = [t.price, t.price, t.price, t.price, 0, 0, 0, t.trade_id, 0]
                bar[1] = max(bar[1], t.price)
                bar[2] = min(bar[2], t.price)
                bar[3] = t.price
                bar[4] += t.qty
                bar[5] += t.price * t.qty
                bar[6] += 1
                bar[8] = t.trade_id
            tid = chunk[-1].trade_id + 1
        if bar:
            out.append(_candle(bucket, iv, bar))
        return out[:limit]


def _candle(open_ms: int, iv: int, bar: Sequence[int]) -> SimCandle:
    return SimCandle(open_ms, iv, bar[0], bar[1], bar[2], bar[3], bar[4], bar[5], bar[6], bar[7], bar[8])


def _merge_bars(st: _Symbol, b: int, iv: int) -> SimCandle | None:
    """Aggregate the 1-minute candles of bucket ``[b, b + iv)``."""
    first: Sequence[int] | None = None
    high = low = close = vol = quote = count = last_id = 0
    get = st.minute_bar
    for m in range(b, b + iv, MINUTE_MS):
        bar = get(m)
        if bar is None:
            continue
        if first is None:
            first = bar
            high, low = bar[1], bar[2]
        else:
            high = max(high, bar[1])
            low = min(low, bar[2])
        close = bar[3]
        vol += bar[4]
        quote += bar[5]
        count += bar[6]
        last_id = bar[8]
    if first is None:
        return None
    return SimCandle(b, iv, first[0], high, low, close, vol, quote, count, first[7], last_id)


def _check_spec(spec: InstrumentSpec) -> None:
    if spec.tick < 1 or spec.levels < 1 or spec.price_precision < 0 or spec.qty_precision < 0:
        raise ConfigError(f"invalid instrument {spec.symbol!r}: tick, levels >= 1 and precisions >= 0")
    if spec.start_price < 2 * spec.tick:
        raise ConfigError(f"invalid instrument {spec.symbol!r}: start_price must be at least two ticks")


# (symbol, price_precision, qty_precision, start_price in units, levels)
_DEFAULTS: Final[dict[str, tuple[tuple[str, int, int, int, int], ...]]] = {
    "binance": (
        ("BTCUSDT", 2, 5, 6_000_000, 200),
        ("ETHUSDT", 2, 4, 300_000, 200),
        ("SOLUSDT", 2, 3, 15_000, 200),
        ("BNBUSDT", 2, 3, 60_000, 200),
        ("XRPUSDT", 4, 1, 5_000, 200),
        ("DOGEUSDT", 5, 0, 15_000, 200),
    ),
    "kraken": (
        ("BTC/USD", 1, 8, 600_000, 200),
        ("ETH/USD", 2, 8, 300_000, 200),
        ("SOL/USD", 2, 8, 15_000, 200),
        ("XRP/USD", 5, 8, 50_000, 200),
        ("DOGE/USD", 7, 8, 1_500_000, 200),
        ("ETH/BTC", 5, 8, 5_000, 200),
    ),
    "bitfinex": (
        ("tBTCUSD", 0, 8, 60_000, 200),
        ("tETHUSD", 1, 8, 30_000, 200),
        ("tSOLUSD", 2, 8, 15_000, 200),
        ("tXRPUSD", 5, 8, 50_000, 200),
        ("tDOGE:USD", 5, 8, 15_000, 200),
        # ~0.0000011 BTC with 8 decimals: bids below 1e-6 print in exponent form (7e-7), which
        # Bitfinex checksums depend on (PROTOCOLS.md §C.3); too few ticks for more levels.
        ("tXRPBTC", 8, 2, 110, 25),
    ),
}
# Precisions for symbols without a table entry: (price_precision, qty_precision).
_FALLBACK: Final = {"binance": (4, 2), "kraken": (4, 8), "bitfinex": (4, 8)}


def default_specs(exchange: str, symbols: Sequence[str] | None = None) -> list[InstrumentSpec]:
    """Instruments for ``exchange`` in its own spelling, tick and precisions.

    Without ``symbols``, the venue's built-in list (BTC, ETH, SOL, ... pairs). Requested
    symbols are normalized with the venue adapter (``btc/usdt`` → ``BTCUSDT``); those not in
    the list get fallback precisions and a start price derived from the symbol's hash
    (nothing is looked up on the network). Raises ConfigError for an unknown venue or a
    symbol the venue cannot spell.
    """
    venue = exchange.strip().lower()
    adapter = get_exchange(venue)  # ConfigError for an unknown venue
    table = {row[0]: row for row in _DEFAULTS[venue]}
    if symbols is None:
        wanted = list(table)
    else:
        if isinstance(symbols, str):
            symbols = [symbols]
        wanted = list(dict.fromkeys(adapter.normalize_symbol(s) for s in symbols))
    out: list[InstrumentSpec] = []
    for sym in wanted:
        row = table.get(sym)
        if row is None:
            pp, qp = _FALLBACK[venue]
            start = (10 + _stable_int(venue, sym, "start") % 990) * 10**pp
            row = (sym, pp, qp, start, 200)
        _, pp, qp, start, levels = row
        out.append(InstrumentSpec(sym, pp, qp, start, tick=1, levels=levels))
    return out
