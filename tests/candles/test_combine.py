"""``mmdata.candles.combine`` (pure): source choice, mismatches with tolerances, gaps, for any interval."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.candles import INTERVALS, InvalidInterval
from mmdata.candles.combine import (
    GapRange,
    Mismatch,
    Tolerance,
    combine_candles,
    find_gaps,
    traded,
)
from mmdata.errors import ConfigError
from mmdata.types import Candle

MIN = 60_000
HOUR = 60 * MIN
T0 = 1_795_000_000_000 // HOUR * HOUR  # an hour boundary (2026-11-17 ...)


def candle(
    t: int,
    *,
    o: str = "60000.02",
    h: str = "60001.5",
    low: str = "59999",
    c: str = "60000.5",
    v: str = "2.5",
    n: int | None = 3,
    interval: str = "1m",
) -> Candle:
    return Candle("binance", "BTCUSDT", interval, t, o, h, low, c, v, None, n, True)


# ------------------------------------------------------------------------------------ mismatches

ALTERED = {
    "open": {"o": "60000.03"},
    "high": {"h": "60001.6"},
    "low": {"low": "59998.99"},
    "close": {"c": "60000.4"},
    "volume": {"v": "2.6"},
}


@pytest.mark.parametrize("field", list(ALTERED))
def test_an_altered_local_field_is_a_mismatch_naming_it_and_the_local_candle_still_wins(field: str) -> None:
    local = candle(T0, **ALTERED[field])  # type: ignore[arg-type]
    result = combine_candles([local], {T0}, [candle(T0)], "1m", T0, T0 + MIN)
    assert result.mismatches == (
        Mismatch(
            T0,
            field,
            getattr(local, field),
            getattr(candle(T0), field),
            result.mismatches[0].relative_difference,
        ),
    )
    assert Decimal(result.mismatches[0].relative_difference) > 0
    assert [(r.source, getattr(r, field)) for r in result.rows] == [("local", getattr(local, field))]


def test_the_same_decimal_in_another_spelling_is_equal() -> None:
    local = candle(T0, o="60000.0200", h="60001.50000000", low="59999.00", c="6.00005E+4", v="2.50")
    assert combine_candles([local], {T0}, [candle(T0)], "1m", T0, T0 + MIN).mismatches == ()


def test_values_within_the_tolerance_are_not_flagged_and_the_bound_is_exact() -> None:
    # volume: default 1e-8 relative (Bitfinex volumes are float JSON numbers)
    near = combine_candles([candle(T0, v="2.500000001")], {T0}, [candle(T0)], "1m", T0, T0 + MIN)
    assert near.mismatches == ()
    far = combine_candles([candle(T0, v="2.5001")], {T0}, [candle(T0)], "1m", T0, T0 + MIN)
    assert [m.field for m in far.mismatches] == ["volume"]
    # prices: exact by default; with price_rel, |a - b| <= rel * max(|a|, |b|) is equal (exactly)
    tol = Tolerance(price_rel=0.5)
    remote = candle(T0, o="1")
    at_bound = combine_candles([candle(T0, o="2")], {T0}, [remote], "1m", T0, T0 + MIN, tolerance=tol)
    assert at_bound.mismatches == ()  # |2 - 1| = 0.5 * 2
    beyond = combine_candles([candle(T0, o="2.0000001")], {T0}, [remote], "1m", T0, T0 + MIN, tolerance=tol)
    assert [(m.field, m.relative_difference) for m in beyond.mismatches] == [("open", "0.500000")]
    exact = combine_candles([candle(T0, o="60000.02000001")], {T0}, [candle(T0)], "1m", T0, T0 + MIN)
    assert [m.field for m in exact.mismatches] == ["open"]
    strict = combine_candles(
        [candle(T0, v="2.500000001")],
        {T0},
        [candle(T0)],
        "1m",
        T0,
        T0 + MIN,
        tolerance=Tolerance(volume_rel=0),
    )
    assert [m.field for m in strict.mismatches] == ["volume"]


def test_trade_counts_and_quote_volumes_are_not_compared() -> None:
    local = Candle("binance", "BTCUSDT", "1m", T0, "1", "1", "1", "1", "2", "2", 5, True)
    remote = Candle("binance", "BTCUSDT", "1m", T0, "1", "1", "1", "1", "2", "999", 1, True)
    assert combine_candles([local], {T0}, [remote], "1m", T0, T0 + MIN).mismatches == ()


def test_unreadable_numbers_mismatch_unless_identical_text() -> None:
    got = combine_candles([candle(T0, c="n/a")], {T0}, [candle(T0)], "1m", T0, T0 + MIN).mismatches
    assert [(m.field, m.relative_difference) for m in got] == [("close", "")]


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan")])
def test_a_bad_tolerance_is_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="tolerance"):
        Tolerance(price_rel=bad)


# --------------------------------------------------------------------------------- the series


def test_local_wins_only_when_complete_and_the_series_is_continuous() -> None:
    local = [candle(T0 + i * MIN, c=f"{i}.5") for i in (0, 1, 3)]
    remote = [
        candle(T0, c="100"),
        candle(T0 + MIN, c="101"),
        candle(T0 + 2 * MIN, c="102", n=None),  # no count (Bitfinex)
        candle(T0 + 3 * MIN, c="103"),
        candle(T0 + 4 * MIN, v="0", c="104"),  # quiet on the exchange
    ]
    complete = {T0, T0 + 3 * MIN, T0 + 5 * MIN}  # minute 1's local candle is partial
    result = combine_candles(local, complete, remote, "1m", T0, T0 + 6 * MIN)
    assert [(r.open_time_ms - T0, r.source, r.close, r.volume, r.trades) for r in result.rows] == [
        (0, "local", "0.5", "2.5", 3),
        (MIN, "exchange", "101", "2.5", 3),
        (2 * MIN, "exchange", "102", "2.5", None),
        (3 * MIN, "local", "3.5", "2.5", 3),
        (4 * MIN, "empty", "3.5", "0", 0),  # volume 0 on the exchange: nobody traded
        (5 * MIN, "empty", "3.5", "0", 0),  # complete, no local candle, no exchange candle
    ]
    empty = result.rows[4]
    assert empty.open == empty.high == empty.low == empty.close == "3.5"  # flat at the previous close
    assert [m.field for m in result.mismatches] == ["close", "close"]  # minutes 0 and 3
    assert result.sources() == {"local": 2, "exchange": 2, "empty": 2}


def test_a_complete_local_candle_without_exchange_candle_is_kept_without_mismatch() -> None:
    result = combine_candles([candle(T0)], {T0}, [], "1m", T0, T0 + MIN)
    assert [r.source for r in result.rows] == ["local"] and result.mismatches == ()


def test_empty_rows_before_any_close_have_no_price_unless_an_earlier_candle_gives_one() -> None:
    rows = combine_candles([], set(), [candle(T0 + 2 * MIN, c="7")], "1m", T0, T0 + 4 * MIN).rows
    assert [(r.source, r.close) for r in rows] == [
        ("empty", None),
        ("empty", None),
        ("exchange", "7"),
        ("empty", "7"),
    ]
    assert rows[0].volume == "0" and rows[0].open is None
    seeded = combine_candles([], set(), [candle(T0 - 5 * MIN, c="6")], "1m", T0, T0 + MIN).rows
    assert [(r.source, r.close) for r in seeded] == [("empty", "6")]


@pytest.mark.parametrize("name", list(INTERVALS))
def test_every_interval_gets_one_row_per_aligned_open_time(name: str) -> None:
    iv = INTERVALS[name]
    first = iv.floor(T0) + iv.ms  # aligned (1W: a Monday)
    opens = [first + i * iv.ms for i in range(4)]
    local = [candle(t, interval=name, c=str(i)) for i, t in enumerate(opens) if i != 2]
    remote = [candle(t, interval=name) for t in opens]
    # an unaligned start begins at the next open; the end is exclusive
    result = combine_candles(local, set(opens[:2]), remote, name, first - 1, opens[-1] + 1)
    assert [r.open_time_ms for r in result.rows] == [*opens]
    assert [r.source for r in result.rows] == ["local", "local", "exchange", "exchange"]
    assert combine_candles(local, set(opens), remote, name, first + 1, first + iv.ms).rows == ()
    gaps = find_gaps(local, set(opens[:2]), remote, name, first, opens[-1] + iv.ms)
    assert gaps == [
        GapRange(opens[2], opens[3], 1, 3, "not recorded"),  # no local candle, not complete
        GapRange(opens[3], opens[3] + iv.ms, 1, 3, "partial"),  # a local candle, not complete
    ]
    if name == "1W":
        assert (first // 86_400_000 - 4) % 7 == 0  # 1970-01-05 was a Monday


def test_bad_intervals_are_refused() -> None:
    with pytest.raises(InvalidInterval):
        combine_candles([], set(), [], "2m", T0, T0 + MIN)
    with pytest.raises(ValueError, match="not '5m'"):
        combine_candles([candle(T0)], {T0}, [], "5m", T0, T0 + 5 * MIN)


# ----------------------------------------------------------------------------------------- gaps


def hours(n: int, *, quiet: Collection[int] = (), missing: Collection[int] = ()) -> list[Candle]:
    """Exchange 1m candles of ``n`` hours from T0: ``quiet`` minutes have volume 0, ``missing`` none."""
    return [
        candle(T0 + i * MIN, v="0" if i in quiet else f"{i % 7 + 1}.25", n=0 if i in quiet else i % 5 + 1)
        for i in range(60 * n)
        if i not in missing
    ]


def test_gaps_find_a_removed_hour_exactly_and_nothing_on_the_intact_day() -> None:
    quiet = {60, 61, 75, 118, 119, 130}  # the hour's first two and last two minutes are quiet
    missing = {90}  # and the exchange lists no candle for minute 90 (Bitfinex style)
    remote = hours(3, quiet=quiet, missing=missing)
    traded_minutes = [c.open_time_ms for c in remote if traded(c)]
    complete = {T0 + i * MIN for i in range(180)}  # recorded all along
    intact = [candle(t) for t in traded_minutes]
    assert find_gaps(intact, complete, remote, "1m", T0, T0 + 3 * HOUR) == []
    removed = [c for c in intact if not T0 + HOUR <= c.open_time_ms < T0 + 2 * HOUR]
    hole = [c for c in remote if T0 + HOUR <= c.open_time_ms < T0 + 2 * HOUR and traded(c)]
    gaps = find_gaps(removed, complete, remote, "1m", T0, T0 + 3 * HOUR)
    assert gaps == [
        GapRange(
            T0 + 62 * MIN,  # the hour's first minute with exchange trades
            T0 + 118 * MIN,  # ... to the end of its last
            len(hole),  # 60 - 4 quiet - 1 quiet inside - 1 without candle = 54
            sum(c.trades or 0 for c in hole),
            "no local trades",
        )
    ]
    assert len(hole) == 54


def test_gaps_outside_coverage_are_not_recorded_and_reasons_split_ranges() -> None:
    remote = hours(1)
    complete = {T0 + i * MIN for i in range(10, 50)}  # recorded minutes 10..49
    local = [candle(T0 + i * MIN) for i in range(9, 51) if i not in (20, 21)]  # 9 and 50: partial
    gaps = find_gaps(local, complete, remote, "1m", T0, T0 + HOUR)
    assert [(g.start_ms - T0, g.end_ms - T0, g.intervals, g.reason) for g in gaps] == [
        (0, 9 * MIN, 9, "not recorded"),
        (9 * MIN, 10 * MIN, 1, "partial"),
        (20 * MIN, 22 * MIN, 2, "no local trades"),
        (50 * MIN, 51 * MIN, 1, "partial"),
        (51 * MIN, 60 * MIN, 9, "not recorded"),
    ]
    # with the coverage, an interval it overlaps without local trades is partial, not unrecorded
    cover = [(T0 + 8 * MIN + 30_000, T0 + 50 * MIN + 30_000)]
    with_cov = find_gaps(local[1:], complete, remote, "1m", T0, T0 + HOUR, coverage=cover)
    assert [(g.start_ms - T0, g.reason) for g in with_cov] == [
        (0, "not recorded"),
        (8 * MIN, "partial"),
        (20 * MIN, "no local trades"),
        (50 * MIN, "partial"),
        (51 * MIN, "not recorded"),
    ]


def test_a_complete_local_candle_splits_a_gap_even_on_a_quiet_exchange_minute() -> None:
    remote = hours(1, quiet={5})
    local = [candle(T0 + 5 * MIN)]  # recorded trades where the exchange saw none (a mismatch)
    gaps = find_gaps(local, {T0 + i * MIN for i in range(60)}, remote, "1m", T0, T0 + 10 * MIN)
    assert [(g.start_ms - T0, g.end_ms - T0) for g in gaps] == [(0, 5 * MIN), (6 * MIN, 10 * MIN)]
    unknown = [candle(T0, n=None), candle(T0 + MIN)]
    assert [g.exchange_trades for g in find_gaps([], set(), unknown, "1m", T0, T0 + 2 * MIN)] == [None]


# ------------------------------------------------------------------------------------ property

minute_sets = st.sets(st.integers(min_value=0, max_value=47), max_size=48)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["1m", "5m", "1h", "1W"]),
    local=minute_sets,
    complete=minute_sets,
    remote=minute_sets,
    quiet=minute_sets,
    offset=st.integers(min_value=0, max_value=3),
)
def test_rows_and_gaps_partition_the_range(
    *, name: str, local: set[int], complete: set[int], remote: set[int], quiet: set[int], offset: int
) -> None:
    iv = INTERVALS[name]
    base = iv.floor(T0) + offset * iv.ms
    n = 48
    at = [base + i * iv.ms for i in range(n)]
    locals_ = [candle(at[i], interval=name, c=f"{i}.5") for i in sorted(local)]
    remotes = [candle(at[i], interval=name, v="0" if i in quiet else f"{i}.1", n=i) for i in sorted(remote)]
    full = {at[i] for i in complete}
    result = combine_candles(locals_, full, remotes, name, base, base + n * iv.ms)
    gaps = find_gaps(locals_, full, remotes, name, base, base + n * iv.ms)

    # exactly one row per interval, in order; every complete local candle wins
    assert [r.open_time_ms for r in result.rows] == at
    won = local & complete
    exchange_traded = remote - quiet
    for i, row in enumerate(result.rows):
        if i in won:
            assert (row.source, row.close) == ("local", f"{i}.5")
        elif i in exchange_traded:
            assert (row.source, row.volume) == ("exchange", f"{i}.1")
        else:
            assert (row.source, row.volume, row.trades) == ("empty", "0", 0)
    assert {m.open_time_ms for m in result.mismatches} <= {at[i] for i in won & remote}

    # gaps, complete-local and no-exchange-trade intervals partition the range
    gap_of: dict[int, int] = {}
    for k, g in enumerate(gaps):
        assert g.start_ms < g.end_ms and (k == 0 or gaps[k - 1].end_ms <= g.start_ms)
        inside = [i for i in range(n) if g.start_ms <= at[i] < g.end_ms]
        assert inside and inside[0] in exchange_traded and inside[-1] in exchange_traded  # tight ends
        assert not set(inside) & won  # a complete local candle is never inside a gap
        members = [i for i in inside if i in exchange_traded]
        assert g.intervals == len(members) and g.exchange_trades == sum(members)
        for i in members:
            gap_of[i] = k
    in_gap = set(gap_of)
    no_trade = set(range(n)) - exchange_traded - won
    assert in_gap | won | no_trade == set(range(n))
    assert not (in_gap & won) and not (in_gap & no_trade) and not (won & no_trade)
    assert in_gap == exchange_traded - won
    assert all(Decimal(r.volume) >= 0 for r in result.rows)
