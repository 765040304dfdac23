"""Local candles joined with exchange candles: one continuous series, mismatches, gaps (pure).

The inputs are :class:`~mmdata.types.Candle` lists of one symbol and one interval (any of
:data:`~mmdata.candles.intervals.INTERVALS`):

* ``local`` — built from the recorder's trades (:func:`mmdata.history.local.local_candles`);
* ``complete`` — the open times of the intervals the recorder saw whole (its trade stream
  connected from the interval's open to a little after its end, no sequence gap near it);
  a complete interval without a local candle means "recorded, and nobody traded";
* ``remote`` — the exchange's candles (:mod:`mmdata.history.store`).

Nothing here reads a file. Numbers are compared as exact decimals
(:func:`~mmdata.candles.aggregate.parse_decimal`): ``60000.02000000`` equals ``60000.02``.

Rules
-----

=========================  ===================================================================
intervals                  every interval whose open time lies in ``[start_ms, end_ms)``,
                           aligned like the interval (``1W`` on Monday): one row each
exchange "traded"          an exchange candle exists with volume > 0 (volume ``0``, or no
                           candle at all — Bitfinex omits quiet intervals — means no trade;
                           an unreadable volume counts as traded, so no gap is ever hidden)
source ``local``           a local candle exists and its open time is in ``complete``:
                           the local candle wins, whatever the exchange says
source ``exchange``        otherwise, when the exchange traded: the exchange candle
source ``empty``           otherwise (nobody traded): open = high = low = close = the previous
                           row's close, volume ``0``, trades ``0``; before any known close
                           (nothing earlier in the range or in the inputs) the prices are None
mismatch                   a ``local`` row with an exchange candle, per field of open, high,
                           low, close (relative tolerance ``price_rel``, default 0 = exact) and
                           volume (``volume_rel``, default 1e-8): ``|a - b| > rel * max(|a|,
                           |b|)``, exact decimal arithmetic. Only OHLCV: trade counts, quote
                           volumes and the time of the candles are not compared (venues count
                           trades differently: Binance klines count trades, its aggTrades and
                           the recorder's stream aggregate them)
gap interval               the exchange traded and there is no ``local`` row
gap reason                 ``no local trades``: complete, yet no local candle (trades lost or
                           removed); ``partial``: a local candle of an incomplete interval, or
                           (when ``coverage`` is given) an interval that overlaps the
                           recorder's coverage without being complete; ``not recorded``:
                           neither (the recorder was not connected)
gap range                  consecutive gap intervals with the same reason, merged; intervals
                           in which nobody traded do not split a range, a ``local`` row or a
                           different reason does. ``intervals`` counts the gap intervals only
=========================  ===================================================================

So every interval of the range is exactly one of: a ``local`` row, a gap interval (inside
exactly one :class:`GapRange`), or an interval in which the exchange did not trade.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Final

from mmdata.candles.aggregate import decimal_text, parse_decimal
from mmdata.candles.intervals import Interval, parse_interval
from mmdata.errors import ConfigError
from mmdata.types import Candle

__all__ = [
    "FIELDS",
    "GAP_REASONS",
    "SOURCES",
    "CombineResult",
    "CombinedRow",
    "GapRange",
    "Mismatch",
    "Tolerance",
    "combine_candles",
    "find_gaps",
    "traded",
]

#: Fields compared between a local and an exchange candle (OHLCV; trade counts are not).
FIELDS: Final = ("open", "high", "low", "close", "volume")
#: Values of :attr:`CombinedRow.source`.
SOURCES: Final = ("local", "exchange", "empty")
#: Values of :attr:`GapRange.reason`.
GAP_REASONS: Final = ("not recorded", "no local trades", "partial")

# Wide enough that differences and products of accepted numbers (40 digits, 1e-30..1e30) and a
# tolerance are exact: the comparison never rounds.
_EXACT: Final = Context(prec=200)
# The relative difference shown in a report: a few significant digits are enough to read.
_SHOWN: Final = Context(prec=6)
_ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Relative tolerances of the mismatch check: ``|a - b| <= rel * max(|a|, |b|)`` is equal.

    ``price_rel`` applies to open, high, low and close (default 0: exact decimal equality);
    ``volume_rel`` to the volume (default 1e-8: Bitfinex sends volumes as floating-point JSON
    numbers, so a sum of exact trade quantities may differ in the last digits).
    """

    price_rel: float = 0.0
    volume_rel: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("price_rel", "volume_rel"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ConfigError(f"tolerance {name} must be a finite number >= 0, got {value!r}")

    def rel(self, field: str) -> Decimal:
        """The tolerance of ``field`` as an exact decimal (``1e-8`` → ``Decimal("1E-8")``)."""
        value = self.volume_rel if field == "volume" else self.price_rel
        return Decimal(repr(float(value)))  # the shortest text of the float: what the user typed


@dataclass(frozen=True, slots=True)
class CombinedRow:
    """One interval of the combined series: exact decimal text, ``source`` one of :data:`SOURCES`.

    ``open``/``high``/``low``/``close`` are None only for ``empty`` rows before any known close;
    ``trades`` is None when the chosen candle has no count (Bitfinex).
    """

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
    """One field of a complete local candle that differs from the exchange's beyond the tolerance.

    ``relative_difference`` is ``|a - b| / max(|a|, |b|)`` to 6 significant digits (empty when a
    value is not a number: the texts differ).
    """

    open_time_ms: int
    field: str
    local: str
    exchange: str
    relative_difference: str


@dataclass(frozen=True, slots=True)
class CombineResult:
    """The continuous series (one row per interval) and the mismatches found on the way."""

    rows: tuple[CombinedRow, ...]
    mismatches: tuple[Mismatch, ...]

    def sources(self) -> dict[str, int]:
        """Row count per source."""
        counts = dict.fromkeys(SOURCES, 0)
        for row in self.rows:
            counts[row.source] += 1
        return counts


@dataclass(frozen=True, slots=True)
class GapRange:
    """``[start_ms, end_ms)``: ``intervals`` intervals in which the exchange traded and the local
    data has no complete candle, all for ``reason`` (one of :data:`GAP_REASONS`).

    ``exchange_trades`` sums the exchange candles' trade counts (None when a candle has none).
    The range may hold quiet intervals (no exchange trade) between its gap intervals.
    """

    start_ms: int
    end_ms: int
    intervals: int
    exchange_trades: int | None
    reason: str


def traded(candle: Candle | None) -> bool:
    """The exchange candle holds a trade: volume > 0 (an unreadable volume counts as traded)."""
    if candle is None:
        return False
    try:
        return parse_decimal(candle.volume) != 0
    except ValueError:
        return True  # never hide a gap behind a value we cannot read


def _opens(iv: Interval, start_ms: int, end_ms: int) -> list[int]:
    """Open times in ``[start_ms, end_ms)``, aligned like the interval."""
    t = iv.floor(start_ms)
    if t < start_ms:
        t = iv.next_open_ms(t)
    out: list[int] = []
    while t < end_ms:
        out.append(t)
        t = iv.next_open_ms(t)
    return out


def _index(candles: Iterable[Candle], iv: Interval, side: str) -> dict[int, Candle]:
    """Candles by open time (a later duplicate replaces an earlier one)."""
    out: dict[int, Candle] = {}
    for c in candles:
        if c.interval != iv.name:
            raise ValueError(f"{side} candle at {c.open_time_ms} is {c.interval!r}, not {iv.name!r}")
        out[c.open_time_ms] = c
    return out


def _relative(a: Decimal, b: Decimal) -> Decimal:
    scale = max(abs(a), abs(b))
    return _SHOWN.divide(abs(_EXACT.subtract(a, b)), scale) if scale else _ZERO


def _compare(local: Candle, remote: Candle, tolerance: Tolerance) -> list[Mismatch]:
    out: list[Mismatch] = []
    for name in FIELDS:
        a_text: str = getattr(local, name)
        b_text: str = getattr(remote, name)
        try:
            a, b = parse_decimal(a_text), parse_decimal(b_text)
        except ValueError:
            if a_text != b_text:  # not numbers: only identical texts are equal
                out.append(Mismatch(local.open_time_ms, name, a_text, b_text, ""))
            continue
        if a == b:
            continue
        diff = abs(_EXACT.subtract(a, b))
        allowed = _EXACT.multiply(tolerance.rel(name), max(abs(a), abs(b)))
        if diff > allowed:
            out.append(Mismatch(local.open_time_ms, name, a_text, b_text, decimal_text(_relative(a, b))))
    return out


def _seed_close(
    mine: dict[int, Candle], complete: Collection[int], theirs: dict[int, Candle], first: int
) -> str | None:
    """The close of the newest input candle before the range (an ``empty`` row's flat price)."""
    best: tuple[int, str] | None = None
    for t, c in mine.items():
        if t < first and t in complete and (best is None or t > best[0]):
            best = (t, c.close)
    for t, c in theirs.items():
        if t < first and traded(c) and (best is None or t > best[0]):
            best = (t, c.close)
    return best[1] if best is not None else None


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
    """One row per interval of ``[start_ms, end_ms)`` and the mismatches (rules: module docstring).

    Raises :class:`~mmdata.candles.intervals.InvalidInterval` for an unknown interval name and
    ValueError for a candle of another interval.
    """
    iv = parse_interval(interval)
    tol = tolerance if tolerance is not None else Tolerance()
    mine = _index(local, iv, "local")
    theirs = _index(remote, iv, "exchange")
    opens = _opens(iv, start_ms, end_ms)
    last_close = _seed_close(mine, complete, theirs, opens[0]) if opens else None
    rows: list[CombinedRow] = []
    mismatches: list[Mismatch] = []
    for t in opens:
        own = mine.get(t)
        other = theirs.get(t)
        if own is not None and t in complete:
            row = _row(own, "local")
            if other is not None:
                mismatches += _compare(own, other, tol)
        elif other is not None and traded(other):
            row = _row(other, "exchange")
        else:
            row = CombinedRow(t, last_close, last_close, last_close, last_close, "0", 0, "empty")
        rows.append(row)
        if row.close is not None:
            last_close = row.close
    return CombineResult(tuple(rows), tuple(mismatches))


def _row(c: Candle, source: str) -> CombinedRow:
    return CombinedRow(c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.trades, source)


def _overlaps(t: int, end: int, coverage: Sequence[tuple[int, int]]) -> bool:
    return any(s < end and e > t for s, e in coverage)


def find_gaps(  # noqa: PLR0917 - the join's inputs, in the order of the docs
    local: Iterable[Candle],
    complete: Collection[int],
    remote: Iterable[Candle],
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    coverage: Sequence[tuple[int, int]] | None = None,
) -> list[GapRange]:
    """Merged ranges where the exchange traded and no complete local candle exists, oldest first.

    ``coverage`` (optional: the recorder's connected ms ranges,
    :func:`mmdata.history.local.local_coverage`) tells ``partial`` from ``not recorded`` for
    intervals without local trades. Rules: module docstring.
    """
    iv = parse_interval(interval)
    mine = _index(local, iv, "local")
    theirs = _index(remote, iv, "exchange")
    spans = sorted(coverage) if coverage is not None else []
    out: list[GapRange] = []
    open_range = False  # the last range of ``out`` may still grow
    for t in _opens(iv, start_ms, end_ms):
        own = mine.get(t)
        if own is not None and t in complete:
            open_range = False  # a local row ends any range
            continue
        other = theirs.get(t)
        if other is None or not traded(other):
            continue  # nobody traded: nothing to miss, and it does not split a range
        end = iv.next_open_ms(t)
        if t in complete:
            reason = "no local trades"
        elif own is not None or _overlaps(t, end, spans):
            reason = "partial"
        else:
            reason = "not recorded"
        last = out[-1] if out else None
        if open_range and last is not None and last.reason == reason:
            count = (
                None
                if last.exchange_trades is None or other.trades is None
                else last.exchange_trades + other.trades
            )
            out[-1] = GapRange(last.start_ms, end, last.intervals + 1, count, reason)
        else:
            out.append(GapRange(t, end, 1, other.trades, reason))
            open_range = True
    return out
