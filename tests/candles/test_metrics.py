"""Tests of :mod:`mmdata.candles.metrics` against a pandas/numpy reference.

Candles come from random trades through :class:`~mmdata.candles.CandleAggregator` (sparse:
intervals without trades have no candle). The reference, on the same candles, is pandas
alone: the window's grid is ``pd.date_range`` ending at the running candle's open (the week's
Monday for ``1W``), closes are ``Series.reindex(grid, method="ffill")``, returns
``np.log(closes).diff()``, volatility ``std(ddof=1) * sqrt(365 * 86_400_000 / interval_ms)``
and correlation ``Series.corr``. A metric is None exactly where pandas says NaN.
"""

from __future__ import annotations

import math
import random
import warnings
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.candles import INTERVALS, CandleAggregator, Interval
from mmdata.candles.metrics import (
    MAX_WINDOW_MS,
    YEAR_MS,
    CloseSeries,
    annualised_volatility,
    correlation,
    grid,
    grid_closes,
    log_returns,
    parse_window,
)
from tests.candles.test_aggregate import DAY_MS, MINUTE_MS, Trade, ms_of, trade_streams

EPOCH = pd.Timestamp(0, tz="UTC")
ONE_MS = pd.Timedelta(milliseconds=1)
REL, ABS = 1e-9, 1e-12  # pytest.approx tolerances
names = st.sampled_from(list(INTERVALS))


def candles(trades: list[Trade], interval: Interval) -> list[tuple[int, float]]:
    """``(open_ms, close)`` of every candle of the trades, oldest first."""
    agg = CandleAggregator()
    for trade in trades:
        agg.add(trade.ts, trade.price, trade.qty)
    return [(bar.open_ms, float(bar.close)) for bar in agg.bars(interval, 10**6)]


def running_open(interval: Interval, now_ms: int) -> pd.Timestamp:
    """The open of the candle holding ``now_ms``, by pandas alone."""
    moment = EPOCH + pd.Timedelta(milliseconds=now_ms)
    if interval.name == "1W":
        return moment.normalize() - pd.Timedelta(days=moment.day_of_week)
    return moment.floor(pd.Timedelta(milliseconds=interval.ms))


def pandas_grid(interval: Interval, now_ms: int, window_ms: int) -> pd.DatetimeIndex:
    return pd.date_range(
        end=running_open(interval, now_ms),
        periods=window_ms // interval.ms + 1,
        freq=pd.Timedelta(milliseconds=interval.ms),
    )


def pandas_closes(pairs: list[tuple[int, float]], points: pd.DatetimeIndex) -> pd.Series:
    closes = pd.Series(
        [c for _, c in pairs],
        index=pd.to_datetime(np.array([o for o, _ in pairs], dtype=np.int64), unit="ms", utc=True),
        dtype=np.float64,
    )
    return closes.reindex(points, method="ffill")


def pandas_returns(closes: pd.Series) -> pd.Series:
    returns: pd.Series = np.log(closes).diff().iloc[1:]
    return returns


def pandas_volatility(returns: pd.Series, interval: Interval) -> float:
    return float(returns.std(ddof=1)) * math.sqrt(365 * 86_400_000 / interval.ms)


def pandas_corr(a: pd.Series, b: pd.Series) -> float:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(a.corr(b))


def assert_metric(value: float | None, expected: float) -> None:
    if math.isnan(expected):
        assert value is None
    else:
        assert value is not None
        assert value == pytest.approx(expected, rel=REL, abs=ABS)


def to_ms(points: pd.DatetimeIndex) -> list[int]:
    return [int(v) for v in (points - EPOCH) // ONE_MS]


@st.composite
def windows(draw: st.DrawFn, trades: list[Trade]) -> tuple[Interval, int, int]:
    """An interval, a ``now`` around the trades and a window of 2…60 intervals (plus a bit)."""
    interval = INTERVALS[draw(names)]
    lo, hi = min(t.ts for t in trades), max(t.ts for t in trades)
    now = draw(st.integers(lo - 3 * interval.ms, hi + 3 * interval.ms))
    window = draw(st.integers(2, 60)) * interval.ms + draw(st.integers(0, interval.ms - 1))
    return interval, now, window


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=150)
@given(a=trade_streams(max_size=30), b=trade_streams(max_size=30), data=st.data())
def test_metrics_equal_pandas_on_the_same_candles(
    a: list[Trade], b: list[Trade], data: st.DataObject
) -> None:
    interval, now, window = data.draw(windows(a + b))
    points = pandas_grid(interval, now, window)
    assert grid(interval, now, window).tolist() == to_ms(points)
    results = []
    for trades in (a, b):
        pairs = candles(trades, interval)
        series = CloseSeries(pairs)
        closes = series.window_closes(interval, now, window)
        expected = pandas_closes(pairs, points)
        np.testing.assert_array_equal(closes, expected.to_numpy())  # forward fill: no arithmetic
        returns = log_returns(closes)
        expected_returns = pandas_returns(expected)
        assert returns.tolist() == pytest.approx(expected_returns.tolist(), nan_ok=True, rel=REL, abs=ABS)
        assert_metric(annualised_volatility(returns, interval), pandas_volatility(expected_returns, interval))
        results.append((returns, expected_returns))
    (ra, pa), (rb, pb) = results
    assert_metric(correlation(ra, rb), pandas_corr(pa, pb))
    assert_metric(correlation(ra, ra), pandas_corr(pa, pa))


@settings(max_examples=100)
@given(
    a=st.lists(st.sampled_from([1.0, 2.0, 4.0, 8.0, 100.0, 100.5]), min_size=1, max_size=12), data=st.data()
)
def test_metrics_on_few_price_levels(a: list[float], data: st.DataObject) -> None:
    """Flat and geometric runs of closes (zero or constant returns): the degenerate cases."""
    b = data.draw(st.lists(st.sampled_from([1.0, 2.0, 4.0, 3.0]), min_size=len(a), max_size=len(a)))
    interval = INTERVALS["1m"]
    pairs_a = [(k * MINUTE_MS, c) for k, c in enumerate(a)]
    pairs_b = [(k * MINUTE_MS, c) for k, c in enumerate(b) if data.draw(st.booleans())]  # sparse
    window = (len(a) + 1) * MINUTE_MS
    now = len(a) * MINUTE_MS - 1
    points = pandas_grid(interval, now, window)
    ra = log_returns(CloseSeries(pairs_a).window_closes(interval, now, window))
    rb = log_returns(CloseSeries(pairs_b).window_closes(interval, now, window))
    pa, pb = pandas_returns(pandas_closes(pairs_a, points)), pandas_returns(pandas_closes(pairs_b, points))
    assert_metric(annualised_volatility(ra, interval), pandas_volatility(pa, interval))
    assert_metric(annualised_volatility(rb, interval), pandas_volatility(pb, interval))
    assert_metric(correlation(ra, rb), pandas_corr(pa, pb))


@settings(max_examples=100)
@given(trades=trade_streams(late=True, max_size=30), name=names)
def test_close_series_follows_the_aggregator_through_late_trades(trades: list[Trade], name: str) -> None:
    """Setting the changed candle after each trade (as a server would) keeps the series exact."""
    interval = INTERVALS[name]
    agg = CandleAggregator()
    series = CloseSeries()
    for trade in trades:
        start = interval.floor(agg.add(trade.ts, trade.price, trade.qty))
        bar = agg.bar(interval, start)
        assert bar is not None
        series.set(start, float(bar.close))
    bars = agg.bars(interval, 10**6)
    assert series.opens.tolist() == [b.open_ms for b in bars]
    assert series.closes.tolist() == [float(b.close) for b in bars]
    assert len(series) == len(bars)


opens = st.integers(-50, 50).map(lambda k: k * MINUTE_MS)
closes = st.floats(0.01, 1e6, allow_nan=False)


@settings(max_examples=200)
@given(
    initial=st.dictionaries(opens, closes, max_size=20), ops=st.lists(st.tuples(opens, closes), max_size=40)
)
def test_close_series_set_is_a_sorted_mapping(
    initial: dict[int, float], ops: list[tuple[int, float]]
) -> None:
    items = list(initial.items())
    random.Random(len(items)).shuffle(items)  # any order in
    series = CloseSeries(items)
    model = dict(initial)
    for open_ms, close in ops:  # appends, replacing the last, late inserts and replaces
        series.set(open_ms, close)
        model[open_ms] = close
        assert series.opens.tolist() == sorted(model)
        assert series.closes.tolist() == [model[k] for k in sorted(model)]
    assert len(series) == len(model)


def test_close_series_grows_past_its_first_capacity() -> None:
    rng = random.Random(7)
    keys = list(range(3000))
    rng.shuffle(keys)
    series = CloseSeries([(k, float(k)) for k in keys[:1500]])  # capacity 3000
    model = {k: float(k) for k in keys[:1500]}
    for k in keys[1500:]:  # inserts anywhere, then appends past the capacity
        series.set(k, -float(k))
        model[k] = -float(k)
    for k in range(3000, 7000):
        series.set(k, 1.0)
        model[k] = 1.0
    assert series.opens.tolist() == sorted(model)
    assert series.closes.tolist() == [model[k] for k in sorted(model)]


@settings(max_examples=200)
@given(
    initial=st.dictionaries(opens, closes, min_size=1, max_size=30),
    cut=st.integers(-60, 60).map(lambda k: k * MINUTE_MS),
    name=st.sampled_from(["1m", "5m"]),
    data=st.data(),
)
def test_drop_before_keeps_the_forward_fill_anchor(
    initial: dict[int, float], cut: int, name: str, data: st.DataObject
) -> None:
    interval = INTERVALS[name]
    series = CloseSeries(initial.items())
    before = [(o, c) for o, c in sorted(initial.items())]
    series.drop_before(cut)
    anchor = max((o for o in initial if o <= cut), default=None)
    kept = [(o, c) for o, c in before if anchor is None or o >= anchor]
    assert list(zip(series.opens.tolist(), series.closes.tolist(), strict=True)) == kept
    # Any window starting at or after the cut reads the same closes as before the drop.
    n = data.draw(st.integers(2, 40))
    first = interval.floor(cut) + (interval.ms if interval.floor(cut) < cut else 0)
    now = first + n * interval.ms + data.draw(st.integers(0, 20 * interval.ms))
    window = n * interval.ms
    assert grid(interval, now, window)[0] >= cut
    full = CloseSeries(before)
    np.testing.assert_array_equal(
        series.window_closes(interval, now, window), full.window_closes(interval, now, window)
    )
    # It keeps working: appends and inserts after the drop.
    series.set(10**6 * MINUTE_MS, 1.0)
    series.set(cut, 2.0)
    model = dict(kept) | {10**6 * MINUTE_MS: 1.0, cut: 2.0}
    assert series.opens.tolist() == sorted(model)


def test_drop_before_examples() -> None:
    series = CloseSeries([(0, 1.0), (60_000, 2.0), (120_000, 3.0)])
    series.drop_before(0)
    assert series.opens.tolist() == [0, 60_000, 120_000]
    series.drop_before(90_000)  # keeps 60_000: it fills 90_000's grid point
    assert series.opens.tolist() == [60_000, 120_000]
    series.drop_before(120_000)  # a candle opens exactly there: the older one is not needed
    assert series.opens.tolist() == [120_000]
    series.drop_before(10**9)
    assert series.opens.tolist() == [120_000] and series.closes.tolist() == [3.0]
    empty = CloseSeries()
    empty.drop_before(0)
    assert len(empty) == 0


# -- small functions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("180d", 180 * DAY_MS),
        ("12h", 12 * 3_600_000),
        ("90m", 90 * MINUTE_MS),
        ("3600s", 3_600_000),
        ("500ms", 500),
        ("2w", 14 * DAY_MS),
        ("1000", 1000),
        (" 30d\n", 30 * DAY_MS),
        ("3650d", MAX_WINDOW_MS),
        ("521w", 521 * 7 * DAY_MS),
        ("1", 1),
    ],
)
def test_parse_window_accepts(text: str, ms: int) -> None:
    assert parse_window(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "",
        "d",
        "0",
        "0d",
        "01d",
        "-1d",
        "1.5h",
        "1D",
        "1H",
        "1y",
        "1 d",
        "1dd",
        "10000000000",
        "\uff11d",  # a full-width digit
        "3651d",
        "522w",
        "87601h",
        "1e3",
        "x" * 1000,
    ],
)
def test_parse_window_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_window(text)
    assert len(str(info.value)) < 200  # the echo of a long text is cut


def test_parse_window_names_the_forms() -> None:
    with pytest.raises(ValueError, match=r"ms s m h d w"):
        parse_window("1y")
    with pytest.raises(ValueError, match=r"10 years"):
        parse_window("3651d")


@pytest.mark.parametrize("name", list(INTERVALS))
def test_grid_needs_two_intervals(name: str) -> None:
    interval = INTERVALS[name]
    now = ms_of("2024-02-29T12:34:56.789")
    for window in (0, 1, interval.ms, 2 * interval.ms - 1):
        with pytest.raises(ValueError, match=name):
            grid(interval, now, window)
    points = grid(interval, now, 2 * interval.ms)
    assert points.tolist() == to_ms(pandas_grid(interval, now, 2 * interval.ms))
    assert len(points) == 3 and points[-1] == interval.floor(now)


def test_weekly_grid_is_on_mondays() -> None:
    points = grid(INTERVALS["1W"], ms_of("2024-10-27T23:59:59.999"), 5 * 7 * DAY_MS)
    assert [str((EPOCH + pd.Timedelta(milliseconds=int(p))).date()) for p in points] == [
        "2024-09-16",
        "2024-09-23",
        "2024-09-30",
        "2024-10-07",
        "2024-10-14",
        "2024-10-21",
    ]


def test_grid_closes_forward_fills_and_is_nan_before_the_first() -> None:
    got = grid_closes(np.array([10, 30]), np.array([1.0, 3.0]), np.array([0, 10, 20, 30, 40]))
    np.testing.assert_array_equal(got, [np.nan, 1.0, 1.0, 3.0, 3.0])


def test_volatility_and_correlation_edges() -> None:
    one_minute = INTERVALS["1m"]
    nan = np.nan
    assert annualised_volatility(np.array([]), one_minute) is None
    assert annualised_volatility(np.array([0.1, nan, nan]), one_minute) is None
    assert annualised_volatility(np.array([0.0, 0.0, nan]), one_minute) == 0.0
    expected = float(np.std([0.1, -0.1], ddof=1)) * math.sqrt(YEAR_MS / 60_000)
    assert annualised_volatility(np.array([nan, 0.1, -0.1]), one_minute) == pytest.approx(
        expected, rel=REL, abs=ABS
    )
    assert correlation(np.array([0.1]), np.array([0.2])) is None
    assert correlation(np.array([0.1, 0.2, nan]), np.array([nan, 0.2, 0.3])) is None  # one pair
    assert correlation(np.array([0.0, 0.0, 0.0]), np.array([0.1, 0.2, 0.3])) is None  # flat side
    assert correlation(np.array([0.1, 0.2, 0.4]), np.array([1.0, 2.0, 4.0])) == pytest.approx(1.0)
    assert correlation(np.array([0.1, 0.2, 0.4]), np.array([-1.0, -2.0, -4.0])) == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    for _ in range(200):  # rounding never pushes r outside [-1, 1]
        x = rng.normal(size=5)
        r = correlation(x, x * 3.0 + 1.0)
        assert r is not None and -1.0 <= r <= 1.0


def test_log_returns_are_nan_where_a_close_is_missing() -> None:
    got = log_returns(np.array([np.nan, 1.0, math.e, math.e]))
    assert got.tolist() == pytest.approx([np.nan, 1.0, 0.0], nan_ok=True)


def test_candles_of_a_window_example() -> None:
    """A worked example: three sparse minutes, a 5-minute window on 1m."""
    agg = CandleAggregator()
    start = ms_of("2024-02-29T23:55:00")
    for minute, price in ((0, "100"), (2, "110"), (3, "99")):
        agg.add(start + minute * MINUTE_MS + 5, price, "1")
    series = CloseSeries((b.open_ms, float(Decimal(b.close))) for b in agg.bars(INTERVALS["1m"], 10))
    closes = series.window_closes(INTERVALS["1m"], start + 4 * MINUTE_MS + 30_000, 5 * MINUTE_MS)
    np.testing.assert_array_equal(closes, [np.nan, 100.0, 100.0, 110.0, 99.0, 99.0])
