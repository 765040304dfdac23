"""Trades → 1-minute candles → higher intervals, with exact decimal arithmetic (pure).

Theory of operation
-------------------
:class:`CandleAggregator` keeps one :class:`Bar` per minute that had a trade, keyed by the
minute's open time. A trade goes into the minute of its **exchange time**; within a
candle, ``open`` is the first trade *received* and ``close`` the last (the order trades
are fed in: ``recv_seq`` order for recorded data). Minutes without trades have no bar, so
no price is ever invented: a chart shows a gap, and ``bars()`` returns only intervals with
trades (pandas: ``resample(...).agg(...)`` with the empty bins dropped).

Higher intervals (5m … 1W, see :mod:`mmdata.candles.intervals`) are merged from the 1m
bars, never from trades: open of the first minute, close of the last, max/min, summed
volumes. Closed higher bars are cached; the running one is kept as the merge of its
finished minutes plus the current minute, so an update costs one merge, not a re-scan
of up to 10,080 minutes. A late trade (older minute) drops the affected cache entries.

Prices keep the trade's own text (``high`` is the text of the highest trade); volumes
and quote volumes are exact :class:`~decimal.Decimal` sums. :meth:`Bar.json` writes them
as JSON *numbers* whose text is that exact decimal (no float round trip).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow
from typing import Final

from mmdata.candles.intervals import INTERVALS, Interval, iso_time

__all__ = ["Bar", "CandleAggregator", "decimal_text", "json_number", "parse_decimal"]

#: Significant digits accepted in a price or quantity.
MAX_DIGITS: Final = 40
#: Wide enough that every sum of accepted prices × quantities is exact (a product spans at most
#: 1e61 … 1e-138, 200 digits, plus one digit per tenfold more trades); Inexact is trapped
#: so that a rounding could never pass silently.
_CTX: Final = Context(prec=400, traps=[Inexact, Overflow, InvalidOperation])
_ZERO: Final = Decimal(0)
_ONE_MINUTE: Final = INTERVALS["1m"]
_JSON_NUMBER: Final = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def parse_decimal(text: str) -> Decimal:
    """A finite decimal from ``text`` within what markets quote (ValueError otherwise).

    At most :data:`MAX_DIGITS` significant digits and a magnitude between 1e-30 and 1e30
    (or zero): every sum and product of such numbers is exact in the 200-digit context, so
    a volume is never rounded and a hostile ``1e-999999999`` cannot overflow it.
    """
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    if not value:
        return _ZERO  # "0E-999999999" is zero: its exponent must not reach the sums' text
    if not -30 <= value.adjusted() <= 30:
        raise ValueError(f"number out of range (1e-30 .. 1e30): {text[:40]!r}")
    if len(value.as_tuple().digits) > MAX_DIGITS:
        raise ValueError(f"more than {MAX_DIGITS} significant digits: {text[:40]!r}")
    return value


def decimal_text(value: Decimal) -> str:
    """Plain (never exponent) text of an exact decimal: ``0.00000010``, not ``1.0E-7``."""
    return format(value, "f")


def json_number(text: str) -> bytes:
    """``text`` as a JSON number literal with the same exact value (ValueError: not a number)."""
    parse_decimal(text)
    raw = text.encode()
    if _JSON_NUMBER.fullmatch(raw):
        return raw
    return decimal_text(Decimal(text)).encode()  # e.g. "+1" or ".5": same value, JSON spelling


class Bar:
    """One OHLCV candle under construction or finished (mutable; :meth:`copy` to keep one)."""

    __slots__ = ("close", "hi", "high", "lo", "low", "open", "open_ms", "quote_volume", "trades", "volume")

    def __init__(self, open_ms: int, price: str, price_d: Decimal) -> None:
        self.open_ms = open_ms
        self.open = self.high = self.low = self.close = price
        self.hi = self.lo = price_d
        self.volume = _ZERO
        self.quote_volume = _ZERO
        self.trades = 0

    def add(self, price: str, price_d: Decimal, qty_d: Decimal) -> None:
        """Fold one trade in (after the ones already in); nothing changes if it raises."""
        volume = _CTX.add(self.volume, qty_d)
        quote = _CTX.add(self.quote_volume, _CTX.multiply(price_d, qty_d))
        if price_d > self.hi:
            self.hi, self.high = price_d, price
        if price_d < self.lo:
            self.lo, self.low = price_d, price
        self.close = price
        self.volume, self.quote_volume = volume, quote
        self.trades += 1

    def merge(self, later: Bar) -> None:
        """Fold in a bar that comes after this one (a later minute)."""
        if later.hi > self.hi:
            self.hi, self.high = later.hi, later.high
        if later.lo < self.lo:
            self.lo, self.low = later.lo, later.low
        self.close = later.close
        self.volume = _CTX.add(self.volume, later.volume)
        self.quote_volume = _CTX.add(self.quote_volume, later.quote_volume)
        self.trades += later.trades

    def copy(self, open_ms: int | None = None) -> Bar:
        """An independent copy (optionally re-labelled with another open time)."""
        out = Bar.__new__(Bar)
        out.open_ms = self.open_ms if open_ms is None else open_ms
        out.open, out.high, out.low, out.close = self.open, self.high, self.low, self.close
        out.hi, out.lo = self.hi, self.lo
        out.volume, out.quote_volume, out.trades = self.volume, self.quote_volume, self.trades
        return out

    def same_as(self, other: Bar | None) -> bool:
        """Same interval and same values (an update would tell a client nothing new)."""
        return (
            other is not None
            and self.open_ms == other.open_ms
            and self.trades == other.trades
            and self.close == other.close
            and self.high == other.high
            and self.low == other.low
            and self.volume == other.volume
        )

    def json(self) -> bytes:
        """``{"time","open","high","low","close","volume","quoteVolume"}`` with exact numbers."""
        return b"".join(
            (
                b'{"time":"',
                iso_time(self.open_ms).encode(),
                b'","open":',
                json_number(self.open),
                b',"high":',
                json_number(self.high),
                b',"low":',
                json_number(self.low),
                b',"close":',
                json_number(self.close),
                b',"volume":',
                decimal_text(self.volume).encode(),
                b',"quoteVolume":',
                decimal_text(self.quote_volume).encode(),
                b"}",
            )
        )

    def __repr__(self) -> str:
        return (
            f"Bar({iso_time(self.open_ms)} o={self.open} h={self.high} l={self.low} c={self.close} "
            f"v={decimal_text(self.volume)} qv={decimal_text(self.quote_volume)} n={self.trades})"
        )


class CandleAggregator:
    """1m bars of one symbol from its trades, and every higher interval merged from them."""

    def __init__(self, max_minutes: int | None = None) -> None:
        #: Keep at most this many minute bars (the oldest go first); None keeps all.
        self.max_minutes = max_minutes
        self._minutes: dict[int, Bar] = {}
        self._keys: list[int] = []  # sorted minute open times
        self._closed: dict[str, dict[int, Bar]] = {name: {} for name in INTERVALS if name != "1m"}
        # Per higher interval: (interval open, minute the prefix stops before, merged prefix).
        self._prefix: dict[str, tuple[int, int, Bar | None]] = {}
        self.trades = 0
        self.rejected = 0

    # -- input --------------------------------------------------------------------------
    def add(self, ts_ms: int, price: str, qty: str) -> int:
        """Fold in one trade at exchange time ``ts_ms``; the minute it landed in.

        ValueError (counted in :attr:`rejected`, nothing changed) for a price that is not
        a positive finite decimal or a quantity that is negative or not a number.
        """
        try:
            price_d = parse_decimal(price)
            qty_d = parse_decimal(qty)
        except ValueError:
            self.rejected += 1
            raise
        if price_d <= 0 or qty_d < 0:
            self.rejected += 1
            raise ValueError(f"price must be > 0 and qty >= 0, got {price!r} {qty!r}")
        minute = ts_ms - ts_ms % 60_000
        bar = self._minutes.get(minute)
        fresh = bar is None
        if bar is None:
            bar = Bar(minute, price, price_d)
        try:
            bar.add(price, price_d, qty_d)  # first: if it raises, nothing has changed
        except ArithmeticError:
            self.rejected += 1
            raise ValueError(f"trade sums out of exact range: {price[:40]!r} {qty[:40]!r}") from None
        keys = self._keys
        if fresh:
            self._minutes[minute] = bar
            if not keys or minute > keys[-1]:
                keys.append(minute)
            else:
                bisect.insort(keys, minute)
                self._late(minute)
            if self.max_minutes is not None and len(keys) > self.max_minutes:
                self._trim(len(keys) - self.max_minutes)
        elif minute != keys[-1]:
            self._late(minute)
        self.trades += 1
        return minute

    def _late(self, minute: int) -> None:
        """A minute before the newest changed: drop what was merged from it."""
        for name, closed in self._closed.items():
            start = INTERVALS[name].floor(minute)
            closed.pop(start, None)
            prefix = self._prefix.get(name)
            if prefix is not None and prefix[0] == start:
                del self._prefix[name]

    def _trim(self, n: int) -> None:
        for key in self._keys[:n]:
            del self._minutes[key]
        del self._keys[:n]
        first = self._keys[0] if self._keys else 0
        for name, closed in self._closed.items():
            # Any bar that held a dropped minute is recomputed from the kept ones when asked:
            # a bar never depends on whether it was read before the trim.
            for start in [k for k in closed if k < first]:
                del closed[start]
            prefix = self._prefix.get(name)
            if prefix is not None and prefix[0] < first:
                del self._prefix[name]

    # -- output -------------------------------------------------------------------------
    @property
    def one_minute_count(self) -> int:
        """How many 1m bars are held."""
        return len(self._keys)

    @property
    def last_minute(self) -> int | None:
        """Open time of the newest minute with a trade."""
        return self._keys[-1] if self._keys else None

    def minutes(self, start_ms: int | None = None, end_ms: int | None = None) -> Iterator[Bar]:
        """The 1m bars (live objects: do not change them) opening in ``[start_ms, end_ms)``."""
        keys = self._keys
        lo = 0 if start_ms is None else bisect.bisect_left(keys, start_ms)
        hi = len(keys) if end_ms is None else bisect.bisect_left(keys, end_ms)
        minutes = self._minutes
        for i in range(lo, hi):
            yield minutes[keys[i]]

    def span(self, start_ms: int, end_ms: int) -> Bar | None:
        """The merge of every minute opening in ``[start_ms, end_ms)`` (None: no trade)."""
        out: Bar | None = None
        for bar in self.minutes(start_ms, end_ms):
            if out is None:
                out = bar.copy(start_ms)
            else:
                out.merge(bar)
        return out

    def bar(self, interval: Interval, open_ms: int) -> Bar | None:
        """The ``interval`` bar opening at ``open_ms`` (a copy; None: no trade in it)."""
        if interval.ms == 60_000:
            found = self._minutes.get(open_ms)
            return None if found is None else found.copy()
        last = self._keys[-1] if self._keys else None
        if last is None:
            return None
        end = open_ms + interval.ms
        closed = self._closed[interval.name]
        if last >= end:
            cached = closed.get(open_ms)
            if cached is None:
                cached = self.span(open_ms, end)
                if cached is None:
                    return None
                closed[open_ms] = cached
            return cached.copy()
        if open_ms > last:
            return None
        # The running interval: merged finished minutes + the newest minute.
        prefix = self._prefix.get(interval.name)
        if prefix is None or prefix[0] != open_ms or prefix[1] > last:
            prefix = (open_ms, last, self.span(open_ms, last))
        elif prefix[1] < last:
            # New minutes since: fold the ones between the old stop and the newest in.
            merged = prefix[2].copy() if prefix[2] is not None else None
            for bar in self.minutes(prefix[1], last):
                if merged is None:
                    merged = bar.copy(open_ms)
                else:
                    merged.merge(bar)
            prefix = (open_ms, last, merged)
        self._prefix[interval.name] = prefix
        head = prefix[2]
        newest = self._minutes[last]
        if head is None:
            return newest.copy(open_ms)
        out = head.copy()
        out.merge(newest)
        return out

    def latest(self, interval: Interval) -> Bar | None:
        """The newest ``interval`` bar (the running one: a partial candle)."""
        last = self.last_minute
        return None if last is None else self.bar(interval, interval.floor(last))

    def bars(self, interval: Interval, count: int, *, until_ms: int | None = None) -> list[Bar]:
        """The newest ``count`` bars with trades (oldest first), opening at or before ``until_ms``."""
        keys = self._keys
        hi = len(keys)
        if until_ms is not None:
            hi = bisect.bisect_right(keys, interval.floor(until_ms) + interval.ms - 1)
        opens: list[int] = []
        while hi > 0 and len(opens) < count:
            start = interval.floor(keys[hi - 1])
            opens.append(start)
            hi = bisect.bisect_left(keys, start, 0, hi)
        out: list[Bar] = []
        for start in reversed(opens):
            bar = self.bar(interval, start)
            if bar is not None:
                out.append(bar)
        return out
