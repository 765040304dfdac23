"""Local candles joined with exchange candles: one continuous series, mismatches, gaps. Pure.

Inputs are :class:`~mmdata.types.Candle` lists for one symbol and interval: ``local`` (built
from recorded trades), ``remote`` (the exchange's), and ``complete``: the open times whose
whole interval the recorder saw (its trade stream connected, no sequence gap). Nothing here
reads a file; :mod:`mmdata.history.local` and :mod:`mmdata.history.join` do.

Rules (docs/history.md):

======================  =================================================================
source ``local``        a local candle exists and its interval is complete
source ``exchange``     otherwise, the exchange candle has trades (volume > 0)
source ``empty``        nobody traded: flat at the previous row's close, volume ``0``
                        (open/high/low/close null before the first known close)
mismatch                a ``local`` row whose exchange candle exists and differs: open,
                        high, low, close as decimals beyond ``price_rel``, volume beyond
                        ``volume_rel`` (relative). Trade counts are not compared.
gap                     an interval with exchange trades and no ``local`` row, reason
                        ``no local trades`` (complete, yet no recorded trade), ``partial``
                        (a local candle of an incomplete interval) or ``not recorded``
======================  =================================================================

Gap intervals with the same reason are merged into one range when only intervals without
exchange trades lie between them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from mmdata.candles.aggregate import parse_decimal
from mmdata.candles.intervals import INTERVALS, Interval, InvalidInterval
from mmdata.types import Candle

__all__ = [
    "FIELDS",
    "CombineResult",
    "CombinedRow",
    "GapRange",
    "Mismatch",
    "Tolerance",
    "combine_candles",
    "find_gaps",
]

#: Fields compared between a local and an exchange candle.
FIELDS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Relative tolerances: ``|a - b| <= rel * max(|a|, |b|)``; 0 means exact decimal equality."""

    price_rel: float = 0.0
    volume_rel: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("price_rel", "volume_rel"):
            value = getattr(self, name)
            if not (value >= 0 and value != float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass(frozen=True, slots=True)
class CombinedRow:
    """One interval of the combined series (exact decimal text; OHLC None before any close)."""

    open_time_ms: int
    open: str | None
    high: str | None
    low: str | None
    close: str | None
    volume: str
    trades: int | None
    source: str


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One field of a complete local candle that differs from the exchange's."""

    open_time_ms: int
    field: str
    local: str
    exchange: str
    relative_difference: str


@dataclass(frozen=True, slots=True)
class CombineResult:
    """The continuous series and the mismatches found on the way."""

    rows: tuple[CombinedRow, ...]
    mismatches: tuple[Mismatch, ...]


@dataclass(frozen=True, slots=True)
class GapRange:
    """``[start_ms, end_ms)``: ``intervals`` intervals with exchange trades and no complete local
    candle; ``exchange_trades`` their trade count when the venue gives counts."""

    start_ms: int
    end_ms: int
    intervals: int
    exchange_trades: int | None
    reason: str


def _interval(name: str) -> Interval:
    interval = INTERVALS.get(name)
    if interval is None:
        raise InvalidInterval(f"unknown interval {name!r}")
    return interval


def _index(candles: Iterable[Candle], start: int, end: int) -> dict[int, Candle]:
    return {c.open_time_ms: c for c in candles if start <= c.open_time_ms < end}


def traded(candle: Candle | None) -> bool:
    """The candle holds at least one trade (volume > 0)."""
    if candle is None:
        return False
    try:
        return parse_decimal(candle.volume) != 0
    except ValueError:
        return True  # unreadable volume: count it as trading, never hide a gap


def _differs(a: str, b: str, rel: float) -> Decimal | None:
    """The relative difference when beyond ``rel``, else None."""
    x, y = parse_decimal(a), parse_decimal(b)
    if x == y:
        return None
    scale = max(abs(x), abs(y))
    diff = abs(x - y) / scale if scale else Decimal(0)
    return diff if diff > Decimal(repr(rel)) else None


def _compare(local: Candle, remote: Candle, tolerance: Tolerance) -> list[Mismatch]:
    out: list[Mismatch] = []
    for name in FIELDS:
        a, b = getattr(local, name), getattr(remote, name)
        rel = tolerance.volume_rel if name == "volume" else tolerance.price_rel
        try:
            diff = _differs(a, b, rel)
        except ValueError:
            diff = None if a == b else Decimal("NaN")
        if diff is not None:
            out.append(Mismatch(local.open_time_ms, name, a, b, str(diff)))
    return out


def combine_candles(  # noqa: PLR0917 - the join's inputs, in the order of the docs
    local: Iterable[Candle],
    complete: Collection[int],
    remote: Iterable[Candle],
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    tolerance: Tolerance | None = None,
) -> CombineResult:
    """One row per interval of ``[start_ms, end_ms)`` (see the module docstring)."""
    iv = _interval(interval)
    tol = tolerance if tolerance is not None else Tolerance()
    start = iv.floor(start_ms)
    mine = _index(local, start, end_ms)
    theirs = _index(remote, start, end_ms)
    rows: list[CombinedRow] = []
    mismatches: list[Mismatch] = []
    last_close: str | None = None
    t = start
    while t < end_ms:
        own = mine.get(t)
        other = theirs.get(t)
        if own is not None and t in complete:
            row = _row(own, "local")
            if other is not None:
                mismatches += _compare(own, other, tol)
        elif traded(other):
            assert other is not None
            row = _row(other, "exchange")
        else:
            row = CombinedRow(t, last_close, last_close, last_close, last_close, "0", 0, "empty")
        rows.append(row)
        last_close = row.close if row.close is not None else last_close
        t = iv.next_open_ms(t)
    return CombineResult(tuple(rows), tuple(mismatches))


def _row(c: Candle, source: str) -> CombinedRow:
    return CombinedRow(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.trades, source)


def find_gaps(  # noqa: PLR0917 - the join's inputs, in the order of the docs
    local: Iterable[Candle],
    complete: Collection[int],
    remote: Iterable[Candle],
    interval: str,
    start_ms: int,
    end_ms: int,
) -> list[GapRange]:
    """Merged ranges where the exchange traded and no complete local candle exists."""
    iv = _interval(interval)
    start = iv.floor(start_ms)
    mine = _index(local, start, end_ms)
    theirs = sorted(_index(remote, start, end_ms).values(), key=lambda c: c.open_time_ms)
    out: list[GapRange] = []
    for c in theirs:
        if not traded(c):
            continue  # quiet on the exchange: nothing to miss, and it does not split a gap
        t = c.open_time_ms
        own = mine.get(t)
        if own is not None and t in complete:
            last = out[-1] if out else None
            if last is not None:
                out.append(GapRange(-1, -1, 0, None, ""))  # a barrier: the next gap starts anew
            continue
        if t in complete:
            reason = "no local trades"
        elif own is not None:
            reason = "partial"
        else:
            reason = "not recorded"
        end = iv.next_open_ms(t)
        prev = out[-1] if out else None
        if prev is not None and prev.reason == reason:
            trades = (
                None if prev.exchange_trades is None or c.trades is None else prev.exchange_trades + c.trades
            )
            out[-1] = GapRange(prev.start_ms, end, prev.intervals + 1, trades, reason)
        else:
            out.append(GapRange(t, end, 1, c.trades, reason))
    return [g for g in out if g.start_ms >= 0]


def merge_gaps(gaps: Sequence[GapRange]) -> list[GapRange]:
    """``gaps`` sorted by start (already merged by :func:`find_gaps`)."""
    return sorted(gaps, key=lambda g: g.start_ms)
