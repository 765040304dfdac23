"""Tests of :class:`mmdata.candles.CandleAggregator` against pandas ``resample``.

The reference is independent of the aggregator: a DataFrame of the trades indexed by
``pd.to_datetime(ts, unit="ms", utc=True)``, binned with
``resample(interval.pandas_rule, label="left", closed="left")``; per bin the first/last row
(open/close *text*), max/min price (by value, through an exact rank), exact Decimal sums of
qty and price×qty, and the count. Empty bins (count 0) are dropped: the aggregator must give
exactly the non-empty ones.

Trade order. Candles are merged from minutes in time order, and within a minute trades keep
the order they were fed in. For a stream whose times never go back that is pandas on the
data as fed. With late trades the reference first sorts the rows *stably by minute*
(arrival order kept inside a minute) and bins on the minute: pandas itself would re-sort
exact timestamps. That pandas keeps row order within a bin is checked on every bin (its
``first``/``last`` rows are the two ends of the bin's contiguous range of rows).
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mmdata.candles import INTERVALS, Bar, CandleAggregator, Interval, iso_time

MINUTE_MS = 60_000
DAY_MS = 86_400_000
ONE_MINUTE = INTERVALS["1m"]
EPOCH = pd.Timestamp(0, tz="UTC")
ONE_MS = pd.Timedelta(milliseconds=1)
#: The reference's arithmetic: wide, and any rounding at all is an error (so it is exact).
EXACT = decimal.Context(
    prec=2000,
    Emax=decimal.MAX_EMAX,
    Emin=decimal.MIN_EMIN,
    traps=[decimal.Inexact, decimal.Overflow, decimal.Underflow, decimal.InvalidOperation],
)
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
BAR_KEYS = ["time", "open", "high", "low", "close", "volume", "quoteVolume"]


def ms_of(text: str) -> int:
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# -- trade streams ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    ts: int
    price: str
    qty: str


def spellings(value: Decimal) -> list[str]:
    """Texts of exactly ``value`` the way venues write numbers (trailing zeros, ``1e-7``, …)."""
    plain = format(value, "f")
    norm = value.normalize()
    digits = "".join(map(str, norm.as_tuple().digits))
    exponent = int(norm.as_tuple().exponent) + len(digits) - 1
    fraction = "." + digits[1:] if len(digits) > 1 else ""
    texts = [
        plain,
        plain + ("000" if "." in plain else ".000"),  # trailing zeros: "67234.50000"
        format(norm, "e"),  # "1e-7", "6.72345e+4" (Bitfinex sends floats like these)
        format(norm, "E"),
        f"{digits[0]}{fraction}e{exponent:+03d}",  # "1e-07": a float's repr
        "+" + plain,
        "00" + plain,
    ]
    if plain.startswith("0."):
        texts.append(plain[1:])  # ".5"
    if "." not in plain:
        texts.append(plain + ".")  # "5."
    return texts


def spell(value: Decimal, choice: int) -> str:
    texts = spellings(value)
    return texts[choice % len(texts)]


# Strategies are built once: building them per draw would dominate the run time.
positive_values = st.one_of(
    st.builds(lambda m, e: Decimal(m).scaleb(e), st.integers(1, 10**9), st.integers(-12, 3)),
    st.sampled_from([Decimal("67234.50"), Decimal("0.00000001"), Decimal("1E-7"), Decimal(100)]),
)
spelling_choices = st.integers(0, 15)
price_texts = st.builds(spell, positive_values, spelling_choices)
qty_texts = st.one_of(
    price_texts,
    st.sampled_from(["0", "0.00000000", "0E-8", "0.00000001", "1e-7", "1.5", "2"]),
)
ANCHORS = [
    0,  # the epoch, a Thursday
    4 * DAY_MS,  # 1970-01-05, the first Monday
    -3 * DAY_MS,  # 1969-12-29, a Monday before the epoch
    ms_of("2023-12-31T23:59:59.999"),  # Sunday night, year end; 2024-01-01 is a Monday
    ms_of("2024-02-28T23:59:00"),  # into a leap day
    ms_of("2024-02-29T23:59:59"),  # out of a leap day
    ms_of("2024-10-27T23:59:59.999"),  # Sunday 23:59:59.999 → Monday 00:00
    ms_of("2021-05-19T03:59:59.999"),  # a 4h edge
    ms_of("2100-02-28T23:59:59.999"),  # 2100 is not a leap year
]
starts = st.builds(
    lambda anchor, offset: anchor + offset,
    st.sampled_from(ANCHORS),
    st.one_of(st.sampled_from([0, -1, 1, -MINUTE_MS, MINUTE_MS - 1]), st.integers(-8 * DAY_MS, 8 * DAY_MS)),
)
gaps = st.one_of(
    st.just(0),
    st.integers(0, 999),
    st.integers(0, 3 * MINUTE_MS),
    st.integers(0, 8 * 3_600_000),
    st.integers(0, 3 * DAY_MS),
)
names = st.sampled_from(list(INTERVALS))
name_masks = st.integers(0, 2 ** len(INTERVALS) - 1)  # which intervals to read
picks = st.integers(0, 10**6)
edge_sides = st.sampled_from([0, 1])  # on the boundary, or 1 ms before it
late_backs = st.one_of(st.integers(0, 5 * MINUTE_MS), st.integers(0, 3 * DAY_MS))


def masked(mask: int) -> list[Interval]:
    return [interval for bit, interval in enumerate(INTERVALS.values()) if mask >> bit & 1]


class Code:
    """Choices unpacked from one big integer (one draw per trade keeps generation cheap)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def take(self, n: int) -> int:
        """A choice in ``[0, n)``; 0 when the code has shrunk away."""
        self.code, choice = divmod(self.code, n)
        return choice

    def value(self, pool: list[Decimal]) -> Decimal:
        if self.take(2):
            return pool[self.take(len(pool))]
        return Decimal(self.take(10**9) + 1).scaleb(self.take(16) - 12)


GAP_RANGES = (1, 1000, 3 * MINUTE_MS + 1, 8 * 3_600_000 + 1, 3 * DAY_MS + 1)
QTY_TEXTS = ("0", "0.00000000", "0E-8", "0.00000001", "1e-7", "1.5", "2")
INTERVAL_LIST = list(INTERVALS.values())
trade_codes = st.integers(0, 2**160 - 1)


@st.composite
def trade_streams(
    draw: st.DrawFn, *, late: bool = False, min_size: int = 1, max_size: int = 40
) -> list[Trade]:
    """Trades with non-decreasing times (or, with ``late``, some going back), often on edges.

    Kinds of step: a gap (0 ms, under 1 s, 3 min, 8 h or 3 days), the next boundary of some
    interval or 1 ms before it, and with ``late`` a trade into an older minute (one that
    has trades, or any time up to 3 days back, even before the first trade).
    """
    pool = draw(st.lists(positive_values, min_size=1, max_size=5))  # repeated prices: ties
    now = draw(starts)
    out: list[Trade] = []
    size = draw(st.integers(min_size, max_size))
    for code in draw(st.lists(trade_codes, min_size=size, max_size=size)):
        c = Code(code)
        ts = now
        kind = c.take(3 if late else 2)
        if kind == 0:
            ts = now = now + c.take(GAP_RANGES[c.take(len(GAP_RANGES))])
        elif kind == 1:
            interval = INTERVAL_LIST[c.take(len(INTERVAL_LIST))]
            ts = now = max(now, interval.floor(now) + interval.ms - c.take(2))
        elif out:
            ts = (
                out[c.take(len(out))].ts
                if c.take(2)
                else now - c.take((5 * MINUTE_MS, 3 * DAY_MS)[c.take(2)])
            )
        price = spell(c.value(pool), c.take(16))
        choice = c.take(len(QTY_TEXTS) + 1)
        qty = QTY_TEXTS[choice] if choice < len(QTY_TEXTS) else spell(c.value(pool), c.take(16))
        out.append(Trade(ts, price, qty))
    return out


# -- the pandas reference ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefBar:
    open_ms: int
    open: str
    close: str
    high: Decimal
    low: Decimal
    highs: frozenset[str]  # texts of the trades at the high (any of them may be shown)
    lows: frozenset[str]
    volume: Decimal
    quote_volume: Decimal
    trades: int


def to_ms(index: pd.DatetimeIndex) -> list[int]:
    return [int(v) for v in (index - EPOCH) // ONE_MS]


def reference_rows(trades: Sequence[Trade]) -> tuple[list[Trade], pd.DatetimeIndex]:
    """The trades in candle order, with the times pandas should bin them on."""
    index = pd.DatetimeIndex(
        pd.to_datetime(np.array([t.ts for t in trades], dtype=np.int64), unit="ms", utc=True)
    )
    if index.is_monotonic_increasing:
        return list(trades), index
    minutes = index.floor("1min")
    order = np.argsort(minutes.to_numpy(), kind="stable")
    return [trades[int(i)] for i in order], pd.DatetimeIndex(minutes[order])


@dataclass(slots=True)
class Reference:
    """Per interval, the non-empty pandas bins of a trade list (plus the rows they came from)."""

    rows: list[Trade]
    prices: list[Decimal]
    bars: list[RefBar]
    first: list[int]  # row position of each bar's first trade
    last: list[int]


def ref_bar(
    rows: list[Trade],
    prices: list[Decimal],
    levels: list[Decimal],
    *,
    open_ms: int,
    first: int,
    last: int,
    stats: Any,
) -> RefBar:
    """One bin of rows ``first…last`` from its pandas aggregates (high/low as ranks into ``levels``)."""
    high, low = levels[int(stats["high"])], levels[int(stats["low"])]
    span = range(first, last + 1)
    return RefBar(
        open_ms=open_ms,
        open=rows[first].price,
        close=rows[last].price,
        high=high,
        low=low,
        highs=frozenset(rows[p].price for p in span if prices[p] == high),
        lows=frozenset(rows[p].price for p in span if prices[p] == low),
        volume=stats["volume"],
        quote_volume=stats["quote_volume"],
        trades=int(stats["count"]),
    )


def references(trades: Sequence[Trade], names: Sequence[str] = tuple(INTERVALS)) -> dict[str, Reference]:
    """pandas ``resample`` OHLCV of ``trades`` at each named interval (empty bins dropped)."""
    if not trades:
        return {name: Reference([], [], [], [], []) for name in names}
    rows, index = reference_rows(trades)
    prices = [Decimal(t.price) for t in rows]
    levels = sorted(set(prices))
    rank = {value: k for k, value in enumerate(levels)}  # exact max/min on ints
    with decimal.localcontext(EXACT):
        qtys = [Decimal(t.qty) for t in rows]
        frame = pd.DataFrame(
            {
                "pos": np.arange(len(rows)),
                "rank": [rank[p] for p in prices],
                "qty": np.array(qtys, dtype=object),
                "qv": np.array([p * q for p, q in zip(prices, qtys, strict=True)], dtype=object),
            },
            index=index,
        )
        out: dict[str, Reference] = {}
        for name in names:
            bins = frame.resample(INTERVALS[name].pandas_rule, label="left", closed="left")
            pos, ranks = bins["pos"], bins["rank"]
            count = pos.count()
            full = count.to_numpy() > 0
            columns = {
                "first": pos.first().to_numpy()[full],
                "last": pos.last().to_numpy()[full],
                "count": count.to_numpy()[full],
                "high": ranks.max().to_numpy()[full],
                "low": ranks.min().to_numpy()[full],
                "volume": bins["qty"].sum().to_numpy()[full],
                "quote_volume": bins["qv"].sum().to_numpy()[full],
            }
            ref = out[name] = Reference(rows, prices, [], [], [])
            for k, open_ms in enumerate(to_ms(pd.DatetimeIndex(count.index[full]))):
                stats = {column: values[k] for column, values in columns.items()}
                first, last = int(stats["first"]), int(stats["last"])
                # The rows of a bin are contiguous (sorted by time); pandas kept their order
                # only if its first and last rows are the ends of that range.
                assert last - first + 1 == int(stats["count"])
                ref.bars.append(
                    ref_bar(rows, prices, levels, open_ms=open_ms, first=first, last=last, stats=stats)
                )
                ref.first.append(first)
                ref.last.append(last)
    return out


def reference(trades: Sequence[Trade], interval: Interval) -> Reference:
    """pandas ``resample`` OHLCV of ``trades`` at ``interval``."""
    return references(trades, [interval.name])[interval.name]


def running_reference(ref: Reference) -> list[RefBar]:
    """For a stream in time order: the bin of trade ``k`` over trades ``0…k`` (the running candle)."""
    n = len(ref.rows)
    bin_of = np.zeros(n, dtype=np.int64)
    for b, (first, last) in enumerate(zip(ref.first, ref.last, strict=True)):
        bin_of[first : last + 1] = b
    levels = sorted(set(ref.prices))
    rank = {value: k for k, value in enumerate(levels)}
    ranks = np.array([rank[p] for p in ref.prices], dtype=np.int64)
    highs, lows = ranks.copy(), ranks.copy()
    for first, last in zip(ref.first, ref.last, strict=True):
        highs[first : last + 1] = np.maximum.accumulate(ranks[first : last + 1])
        lows[first : last + 1] = np.minimum.accumulate(ranks[first : last + 1])
    with decimal.localcontext(EXACT):
        qtys = [Decimal(t.qty) for t in ref.rows]
        cum_qty = np.cumsum(np.array([Decimal(0), *qtys], dtype=object))
        cum_qv = np.cumsum(
            np.array([Decimal(0), *(p * q for p, q in zip(ref.prices, qtys, strict=True))], dtype=object)
        )
        out = []
        for k in range(n):
            b = int(bin_of[k])
            first = ref.first[b]
            stats = {
                "high": highs[k],
                "low": lows[k],
                "volume": cum_qty[k + 1] - cum_qty[first],
                "quote_volume": cum_qv[k + 1] - cum_qv[first],
                "count": k - first + 1,
            }
            out.append(
                ref_bar(
                    ref.rows,
                    ref.prices,
                    levels,
                    open_ms=ref.bars[b].open_ms,
                    first=first,
                    last=k,
                    stats=stats,
                )
            )
    return out


def span_reference(trades: Sequence[Trade], start_ms: int, end_ms: int) -> RefBar | None:
    """The merge of the minutes opening in ``[start_ms, end_ms)``, labelled ``start_ms`` (pandas)."""
    if not trades:
        return None
    index = pd.DatetimeIndex(
        pd.to_datetime(np.array([t.ts for t in trades], dtype=np.int64), unit="ms", utc=True)
    )
    minutes = np.array(to_ms(index.floor("1min")), dtype=np.int64)
    order = np.argsort(minutes, kind="stable")
    rows = [trades[int(i)] for i in order if start_ms <= minutes[int(i)] < end_ms]
    if not rows:
        return None
    prices = [Decimal(t.price) for t in rows]
    levels = sorted(set(prices))
    with decimal.localcontext(EXACT):
        qtys = pd.Series([Decimal(t.qty) for t in rows], dtype=object)
        qv = pd.Series([p * q for p, q in zip(prices, qtys, strict=True)], dtype=object)
        stats = {
            "high": levels.index(max(prices)),
            "low": levels.index(min(prices)),
            "volume": qtys.sum(),
            "quote_volume": qv.sum(),
            "count": len(rows),
        }
    return ref_bar(rows, prices, levels, open_ms=start_ms, first=0, last=len(rows) - 1, stats=stats)


# -- comparing --------------------------------------------------------------------------------


def assert_bar(bar: Bar | None, ref: RefBar) -> None:
    assert bar is not None, ref
    assert bar.open_ms == ref.open_ms, (bar, ref)
    assert (bar.open, bar.close) == (ref.open, ref.close), (bar, ref)
    assert (Decimal(bar.high), Decimal(bar.low)) == (ref.high, ref.low), (bar, ref)
    assert (bar.hi, bar.lo) == (ref.high, ref.low)
    assert bar.high in ref.highs and bar.low in ref.lows, (bar, ref)
    assert (bar.volume, bar.quote_volume, bar.trades) == (ref.volume, ref.quote_volume, ref.trades), ref


def assert_bars(bars: Sequence[Bar], refs: Sequence[RefBar]) -> None:
    assert [b.open_ms for b in bars] == [r.open_ms for r in refs]
    for bar, ref in zip(bars, refs, strict=True):
        assert_bar(bar, ref)


def assert_json(bar: Bar) -> None:
    """Valid strict JSON whose numbers are exactly the bar's decimals (and its texts when they are JSON)."""
    raw = bar.json()
    orjson.loads(raw)  # a strict RFC 8259 parser accepts it

    def no_constants(name: str) -> object:
        raise AssertionError(f"not JSON: {name}")

    parsed = json.loads(raw, parse_float=Decimal, parse_int=Decimal, parse_constant=no_constants)
    assert list(parsed) == BAR_KEYS
    assert parsed["time"] == iso_time(bar.open_ms)
    for key, text in (("open", bar.open), ("high", bar.high), ("low", bar.low), ("close", bar.close)):
        assert parsed[key] == Decimal(text)
    assert parsed["volume"] == bar.volume and parsed["quoteVolume"] == bar.quote_volume
    texts = json.loads(raw, parse_float=str, parse_int=str)
    for key, text in (("open", bar.open), ("high", bar.high), ("low", bar.low), ("close", bar.close)):
        if JSON_NUMBER.fullmatch(text):
            assert texts[key] == text  # the trade's own text, trailing zeros included
    for key in ("volume", "quoteVolume"):
        assert "e" not in texts[key].lower()  # plain decimal text, never an exponent


def snapshot(agg: CandleAggregator) -> list[str]:
    """Everything a client could read, as text (to tell that nothing changed)."""
    out = [repr(b) + str(b.trades) for b in agg.minutes()]
    for interval in INTERVALS.values():
        out.append(repr(agg.latest(interval)))
        out.extend(repr(b) for b in agg.bars(interval, 10**6))
    out.append(f"{agg.trades} {agg.one_minute_count} {agg.last_minute}")
    return out


def compare_all(agg: CandleAggregator, refs: dict[str, Reference], extra_times: Sequence[int] = ()) -> None:
    """Every read of ``agg`` against the pandas references of the trades it holds."""
    for name, interval in INTERVALS.items():
        ref = refs[name].bars
        if interval is ONE_MINUTE:
            assert_bars(list(agg.minutes()), ref)
            assert agg.one_minute_count == len(ref)
            assert agg.last_minute == (ref[-1].open_ms if ref else None)
        assert_bars(agg.bars(interval, len(ref) + 3), ref)
        for count in sorted({0, 1, 2, len(ref) - 1, len(ref)}):
            assert_bars(agg.bars(interval, count), ref[-count:] if count > 0 else [])
        if ref:
            assert_bar(agg.latest(interval), ref[-1])
        else:
            assert agg.latest(interval) is None
        opens = {r.open_ms for r in ref}
        for r in ref:
            assert_bar(agg.bar(interval, r.open_ms), r)
            for empty in (r.open_ms - interval.ms, r.open_ms + interval.ms):
                if empty not in opens:
                    assert agg.bar(interval, empty) is None
        for until in extra_times:
            older = [r for r in ref if r.open_ms <= until]
            assert_bars(agg.bars(interval, 3, until_ms=until), older[-3:])
        # Bars handed out are copies: changing them changes nothing inside.
        for bar in agg.bars(interval, len(ref)):
            bar.add("1", Decimal(1), Decimal(1))
            bar.merge(bar.copy())
        assert_bars(agg.bars(interval, len(ref) + 3), ref)


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=120)
@given(trades=trade_streams(), data=st.data())
@example(
    trades=[
        Trade(ms_of("2024-10-27T23:59:59.999"), "67234.50", "0.00000001"),
        Trade(ms_of("2024-10-28T00:00:00"), "1e-7", "1e-7"),
        Trade(ms_of("2024-10-28T00:00:00"), "67234.5", "2"),
    ],
    data=None,
).via("a week edge: Sunday 23:59:59.999 then Monday 00:00")
def test_time_ordered_streams_equal_pandas_resample(trades: list[Trade], data: st.DataObject | None) -> None:
    refs = references(trades)
    running = {name: running_reference(ref) for name, ref in refs.items()}
    agg = CandleAggregator()
    for k, trade in enumerate(trades):
        minute = agg.add(trade.ts, trade.price, trade.qty)
        assert minute == running["1m"][k].open_ms
        # Ask for the running candle after some trades only: the cached prefix must catch up.
        ask = list(INTERVALS.values()) if data is None else masked(data.draw(name_masks))
        for interval in ask:
            assert_bar(agg.latest(interval), running[interval.name][k])
    lo, hi = trades[0].ts, trades[-1].ts
    assert agg.trades == len(trades)
    compare_all(agg, refs, extra_times=[lo - 1, lo, (lo + hi) // 2, hi, hi + 7 * DAY_MS])
    for interval in INTERVALS.values():
        for bar in agg.bars(interval, 10**6):
            assert_json(bar)


@settings(max_examples=80)
@given(trades=trade_streams(late=True), data=st.data())
def test_late_trades_equal_pandas_on_minute_ordered_rows(trades: list[Trade], data: st.DataObject) -> None:
    agg = CandleAggregator()
    checkpoint = data.draw(st.integers(0, len(trades) - 1))
    for k, trade in enumerate(trades):
        agg.add(trade.ts, trade.price, trade.qty)
        # Fill the caches (closed bars, running prefixes) between adds, so that late trades
        # must drop them: latest() and older bars of a few intervals.
        for interval in masked(data.draw(name_masks)):
            agg.latest(interval)
            older = trades[data.draw(picks) % (k + 1)].ts
            agg.bar(interval, interval.floor(older))
        if k == checkpoint:
            assert agg.trades == k + 1
            compare_all(agg, references(trades[: k + 1]))
    assert agg.trades == len(trades)
    compare_all(agg, references(trades))


@settings(max_examples=80)
@given(trades=trade_streams(late=True, max_size=25), data=st.data())
def test_span_merges_the_minutes_of_a_range(trades: list[Trade], data: st.DataObject) -> None:
    agg = CandleAggregator()
    for trade in trades:
        agg.add(trade.ts, trade.price, trade.qty)
    lo, hi = min(t.ts for t in trades), max(t.ts for t in trades)
    minutes = reference(trades, ONE_MINUTE).bars
    for _ in range(3):
        start = data.draw(st.integers(lo - 2 * MINUTE_MS, hi + MINUTE_MS))
        end = start + data.draw(st.one_of(st.integers(0, 3 * MINUTE_MS), st.integers(0, hi - lo + MINUTE_MS)))
        expected = span_reference(trades, start, end)
        got = agg.span(start, end)
        if expected is None:
            assert got is None
        else:
            assert_bar(got, expected)
        # minutes() is the same range of 1m bars.
        in_range = [r for r in minutes if start <= r.open_ms < end]
        assert_bars(list(agg.minutes(start, end)), in_range)


def test_pandas_keeps_row_order_within_a_bin() -> None:
    """The reference's own assumption, on purpose: first/last follow rows, not values."""
    index = pd.to_datetime([0, 0, 59_999, 60_000, 60_000], unit="ms", utc=True)
    frame = pd.DataFrame({"v": [5, 3, 9, 1, 7]}, index=index)
    out = frame.resample("1min", label="left", closed="left")["v"].agg(["first", "last"])
    assert out.to_numpy().tolist() == [[5, 9], [1, 7]]


# -- max_minutes ------------------------------------------------------------------------------


@settings(max_examples=60)
@given(trades=trade_streams(max_size=30), keep=st.integers(1, 12), data=st.data())
def test_max_minutes_keeps_the_newest_minutes(trades: list[Trade], keep: int, data: st.DataObject) -> None:
    """Every read equals pandas on the trades of the kept minutes, whatever was read before."""
    agg = CandleAggregator(max_minutes=keep)
    for k, trade in enumerate(trades):
        agg.add(trade.ts, trade.price, trade.qty)
        for interval in masked(data.draw(name_masks)):  # cached bars and prefixes, then trims
            agg.latest(interval)
            agg.bar(interval, interval.floor(trades[data.draw(picks) % (k + 1)].ts))
    kept_minutes = {r.open_ms for r in reference(trades, ONE_MINUTE).bars[-keep:]}
    kept = [t for t in trades if ONE_MINUTE.floor(t.ts) in kept_minutes]
    assert agg.trades == len(trades)
    assert agg.one_minute_count == len(kept_minutes)
    compare_all(agg, references(kept))


def test_max_minutes_trims_the_oldest_and_drops_older_late_trades() -> None:
    agg = CandleAggregator(max_minutes=2)
    for minute in (0, 1, 2):
        agg.add(minute * MINUTE_MS, str(minute + 1), "1")
    assert [b.open_ms for b in agg.minutes()] == [MINUTE_MS, 2 * MINUTE_MS]
    agg.add(0, "9", "1")  # older than everything kept: trimmed at once
    assert [b.open_ms for b in agg.minutes()] == [MINUTE_MS, 2 * MINUTE_MS]
    assert [b.close for b in agg.minutes()] == ["2", "3"]


@pytest.mark.parametrize("interval", ["5m", "1W"])
def test_trimmed_bar_does_not_depend_on_earlier_reads(interval: str) -> None:
    """A bar overlapping trimmed minutes is made of the kept ones, cached or not."""
    wide = INTERVALS[interval]

    def run(read_first: bool) -> tuple[Bar | None, Bar | None]:
        agg = CandleAggregator(max_minutes=3)
        for minute, price in ((0, "1"), (1, "2"), (5, "3")):
            agg.add(minute * MINUTE_MS, price, "1")
        if read_first:
            agg.bar(wide, wide.floor(0))
            agg.latest(wide)
        agg.add(6 * MINUTE_MS, "4", "1")  # trims minute 0
        return agg.bar(wide, wide.floor(0)), agg.latest(wide)

    assert repr(run(read_first=True)) == repr(run(read_first=False))


# -- rejected input ---------------------------------------------------------------------------

BAD_INPUTS = [
    ("NaN", "1"),
    ("nan", "1"),
    ("sNaN", "1"),
    ("Infinity", "1"),
    ("-inf", "1"),
    ("abc", "1"),
    ("", "1"),
    ("1e", "1"),
    ("1,5", "1"),
    ("0x10", "1"),
    ("\u22121", "1"),  # a Unicode minus
    ("0", "1"),
    ("0.000", "1"),
    ("-0", "1"),
    ("-1", "1"),
    ("1", "-1"),
    ("1", "-0.00000001"),
    ("1", "NaN"),
    ("1", "abc"),
    ("1", "Infinity"),
    ("1", ""),
    # Beyond what parse_decimal accepts (1e-30 … 1e30, 40 significant digits): such numbers
    # could overflow the decimal context or make a sum inexact.
    ("1e999999999", "1"),
    ("1", "1e999999999"),
    ("1e-999999999", "1"),
    ("1e31", "1"),
    ("1", "1e-31"),
    ("1", "1e-250"),
    ("1." + "0" * 40, "1"),
]


@pytest.mark.parametrize(("price", "qty"), BAD_INPUTS)
@pytest.mark.parametrize("where", ["new minute", "newest minute", "older minute", "empty"])
def test_rejected_input_raises_and_changes_nothing(price: str, qty: str, where: str) -> None:
    agg = CandleAggregator()
    if where != "empty":
        agg.add(ms_of("2024-02-29T23:58:30"), "100", "1")
        agg.add(ms_of("2024-02-29T23:59:59.999"), "101.5", "0.25")
        for interval in INTERVALS.values():
            agg.latest(interval)  # fill the caches
    ts = {
        "new minute": ms_of("2024-03-01T00:00:00"),
        "newest minute": ms_of("2024-02-29T23:59:00"),
        "older minute": ms_of("2024-02-29T23:58:00"),
        "empty": 0,
    }[where]
    before = snapshot(agg)
    with pytest.raises(ValueError):
        agg.add(ts, price, qty)
    assert agg.rejected == 1
    assert snapshot(agg) == before


@pytest.mark.parametrize(
    "text",
    ["1e30", "9.99e30", "1e-30", "1." + "0" * 39, "0." + "0" * 29 + "1", "1234567890." + "1234567890" * 3],
)
def test_numbers_at_the_accepted_limits(text: str) -> None:
    agg = CandleAggregator()
    agg.add(0, text, text)
    agg.add(1, "1", text)
    bar = agg.latest(ONE_MINUTE)
    assert bar is not None
    with decimal.localcontext(EXACT):
        value = Decimal(text)
        assert (bar.volume, bar.quote_volume) == (value + value, value * value + value)
    assert_json(bar)


def test_accepted_extremes_never_raise_from_the_sums() -> None:
    agg = CandleAggregator()
    for _ in range(100):
        agg.add(0, "1e30", "1e30")
    tiny = "1." + "0" * 38 + "1e-30"  # 40 significant digits
    before = snapshot(agg)
    try:
        agg.add(1, tiny, tiny)
    except ValueError:
        assert snapshot(agg) == before
        return
    bar = agg.latest(ONE_MINUTE)
    assert bar is not None
    with decimal.localcontext(EXACT):
        assert bar.quote_volume == 100 * Decimal("1e60") + Decimal(tiny) * Decimal(tiny)


def test_a_zero_quantity_cannot_blow_up_the_json() -> None:
    agg = CandleAggregator()
    try:
        agg.add(0, "1", "0E-999999999")  # the minute's first trade: the volume is that zero
    except ValueError:
        return
    bar = agg.latest(ONE_MINUTE)
    assert bar is not None and len(bar.json()) < 1000


# -- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "1e-7",
        "1E-7",
        "1e-07",
        "+1",
        ".5",
        "5.",
        "00.5",
        "1E+2",
        "67234.50",
        "0.00000001",
        "1_000",
        " 7 ",
        "\u0661\u0662",
    ],
)
def test_json_numbers_are_exact_for_any_decimal_text(text: str) -> None:
    agg = CandleAggregator()
    agg.add(ms_of("2024-02-29T12:00:00"), text, "0.5")
    agg.add(ms_of("2024-02-29T12:00:01"), "1", text)
    for interval in INTERVALS.values():
        bar = agg.latest(interval)
        assert bar is not None
        assert bar.open == text
        assert_json(bar)
        parsed = json.loads(bar.json(), parse_float=Decimal, parse_int=Decimal)
        assert parsed["time"] == iso_time(interval.floor(ms_of("2024-02-29T12:00:00")))
        with decimal.localcontext(EXACT):
            assert parsed["volume"] == Decimal("0.5") + Decimal(text)
            assert parsed["quoteVolume"] == Decimal(text) * Decimal("0.5") + Decimal(text)


def test_json_example() -> None:
    agg = CandleAggregator()
    agg.add(ms_of("2024-10-24T10:00:05"), "67234.50", "0.00100000")
    agg.add(ms_of("2024-10-24T10:00:59.999"), "67230.1", "1e-7")
    bar = agg.latest(INTERVALS["1h"])
    assert bar is not None
    assert bar.json() == (
        b'{"time":"2024-10-24T10:00:00.000Z","open":67234.50,"high":67234.50,"low":67230.1,'
        b'"close":67230.1,"volume":0.00100010,"quoteVolume":67.2412230100}'
    )


# -- small API points -------------------------------------------------------------------------


def test_empty_aggregator() -> None:
    agg = CandleAggregator()
    assert agg.last_minute is None and agg.one_minute_count == 0 and agg.trades == agg.rejected == 0
    assert list(agg.minutes()) == []
    assert agg.span(0, 10**12) is None
    for interval in INTERVALS.values():
        assert agg.latest(interval) is None
        assert agg.bar(interval, 0) is None
        assert agg.bars(interval, 10) == []


def test_add_returns_the_minute_and_bars_count_is_bounded() -> None:
    agg = CandleAggregator()
    assert agg.add(-1, "1", "1") == -MINUTE_MS
    assert agg.add(ms_of("2024-02-29T23:59:59.999"), "2", "1") == ms_of("2024-02-29T23:59:00")
    assert agg.bars(ONE_MINUTE, 0) == [] and agg.bars(ONE_MINUTE, -1) == []
    assert [b.open_ms for b in agg.bars(ONE_MINUTE, 1)] == [ms_of("2024-02-29T23:59:00")]
    assert agg.bars(ONE_MINUTE, 5, until_ms=-MINUTE_MS - 1) == []
    assert [b.open_ms for b in agg.bars(ONE_MINUTE, 5, until_ms=-MINUTE_MS)] == [-MINUTE_MS]


def test_same_as() -> None:
    agg = CandleAggregator()
    agg.add(0, "1", "1")
    bar = agg.latest(ONE_MINUTE)
    assert bar is not None
    assert bar.same_as(bar.copy()) and not bar.same_as(None)
    assert not bar.same_as(bar.copy(open_ms=MINUTE_MS))
    agg.add(1, "1", "0")
    changed = agg.latest(ONE_MINUTE)
    assert changed is not None and not bar.same_as(changed)


# -- a state machine: adds in any order, reads in between ------------------------------------


class AggregatorMachine(RuleBasedStateMachine):
    """Random adds (forward, on edges, late, rejected) with reads checked against pandas."""

    def __init__(self) -> None:
        super().__init__()
        self.agg = CandleAggregator()
        self.trades: list[Trade] = []
        self.now = ANCHORS[6] - 2 * MINUTE_MS

    def _add(self, ts: int, price: str, qty: str) -> None:
        minute = self.agg.add(ts, price, qty)
        assert minute <= ts < minute + MINUTE_MS and minute % MINUTE_MS == 0
        self.trades.append(Trade(ts, price, qty))

    @rule(gap=gaps, price=price_texts, qty=qty_texts)
    def forward(self, gap: int, price: str, qty: str) -> None:
        self.now += gap
        self._add(self.now, price, qty)

    @rule(name=names, before=edge_sides, price=price_texts)
    def on_edge(self, name: str, before: int, price: str) -> None:
        self.now = max(self.now, (INTERVALS[name].floor(self.now) + INTERVALS[name].ms) - before)
        self._add(self.now, price, "1")

    @precondition(lambda self: bool(self.trades))
    @rule(back=late_backs, price=price_texts, qty=qty_texts)
    def late(self, back: int, price: str, qty: str) -> None:
        self._add(self.now - back, price, qty)

    @rule(bad=st.sampled_from(BAD_INPUTS), back=st.integers(0, DAY_MS))
    def rejected(self, bad: tuple[str, str], back: int) -> None:
        before = snapshot(self.agg)
        with pytest.raises(ValueError):
            self.agg.add(self.now - back, *bad)
        assert snapshot(self.agg) == before

    @rule(name=names)
    def read_latest(self, name: str) -> None:
        interval = INTERVALS[name]
        ref = reference(self.trades, interval).bars
        if ref:
            assert_bar(self.agg.latest(interval), ref[-1])
        else:
            assert self.agg.latest(interval) is None

    @precondition(lambda self: bool(self.trades))
    @rule(name=names, pick=picks, count=st.integers(1, 4))
    def read_old(self, name: str, pick: int, count: int) -> None:
        interval = INTERVALS[name]
        ref = reference(self.trades, interval).bars
        chosen = ref[pick % len(ref)]
        assert_bar(self.agg.bar(interval, chosen.open_ms), chosen)
        older = [r for r in ref if r.open_ms <= chosen.open_ms]
        assert_bars(self.agg.bars(interval, count, until_ms=chosen.open_ms), older[-count:])

    @invariant()
    def counts(self) -> None:
        assert self.agg.trades == len(self.trades)
        assert self.agg.last_minute == (
            ONE_MINUTE.floor(max(t.ts for t in self.trades)) if self.trades else None
        )


AggregatorMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30)
TestAggregatorMachine = AggregatorMachine.TestCase
