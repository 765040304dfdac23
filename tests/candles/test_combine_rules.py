"""``mmdata.candles.combine``: the join's rules (source choice, mismatches, gaps), without I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.candles.combine import Tolerance, combine_candles, find_gaps
from mmdata.types import Candle

MIN = 60_000
T0 = 1_795_000_000_000 // MIN * MIN


def candle(
    t: int, *, o: str = "100", h: str = "101", low: str = "99", c: str = "100.5", v: str = "2"
) -> Candle:
    return Candle("binance", "BTCUSDT", "1m", t, o, h, low, c, v, None, 3, True)


@pytest.mark.parametrize("field", ["open", "high", "low", "close", "volume"])
def test_an_altered_field_is_flagged_by_name(field: str) -> None:
    base = candle(T0)
    altered = {
        "open": candle(T0, o="100.01"),
        "high": candle(T0, h="101.5"),
        "low": candle(T0, low="98"),
        "close": candle(T0, c="100.6"),
        "volume": candle(T0, v="2.5"),
    }[field]
    result = combine_candles([altered], {T0}, [base], "1m", T0, T0 + MIN)
    assert [(m.open_time_ms, m.field) for m in result.mismatches] == [(T0, field)]
    assert result.rows[0].source == "local"


def test_equal_decimals_in_other_spellings_and_values_within_tolerance_are_not_flagged() -> None:
    local = candle(T0, o="100.0000", h="101.00", c="100.50000000", v="2.000000001")
    result = combine_candles([local], {T0}, [candle(T0)], "1m", T0, T0 + MIN)
    assert result.mismatches == ()  # volume within the default 1e-8
    loose = combine_candles(
        [candle(T0, c="100.6")], {T0}, [candle(T0)], "1m", T0, T0 + MIN, tolerance=Tolerance(price_rel=0.01)
    )
    assert loose.mismatches == ()
    strict = combine_candles(
        [candle(T0, v="2.1")], {T0}, [candle(T0)], "1m", T0, T0 + MIN, tolerance=Tolerance(volume_rel=0)
    )
    assert [m.field for m in strict.mismatches] == ["volume"]


def test_incomplete_local_candles_give_way_to_the_exchange_and_quiet_minutes_are_flat() -> None:
    local = [candle(T0, c="1"), candle(T0 + MIN, c="2")]
    remote = [candle(T0, c="9"), candle(T0 + MIN, c="8"), candle(T0 + 3 * MIN, v="0")]
    result = combine_candles(local, {T0}, remote, "1m", T0, T0 + 4 * MIN)
    assert [(r.source, r.close) for r in result.rows] == [
        ("local", "1"),
        ("exchange", "8"),  # the local candle of this minute is incomplete
        ("empty", "8"),  # nobody traded: flat at the previous close
        ("empty", "8"),  # volume 0 on the exchange counts as no trade
    ]
    assert [m.field for m in result.mismatches] == ["close"]
    assert result.rows[2].volume == "0"


def test_gaps_name_their_reason_and_merge_across_quiet_minutes() -> None:
    remote = [candle(T0 + i * MIN) for i in range(10) if i != 4]  # minute 4: no exchange trade
    local = [candle(T0 + i * MIN) for i in (0, 1, 8)]
    complete = {T0 + i * MIN for i in range(7)}  # the recorder saw minutes 0..6
    gaps = find_gaps(local, complete, remote, "1m", T0, T0 + 10 * MIN)
    assert [(g.start_ms - T0, g.end_ms - T0, g.intervals, g.reason) for g in gaps] == [
        (2 * MIN, 7 * MIN, 4, "no local trades"),  # minutes 2, 3, 5, 6 (4 is quiet)
        (7 * MIN, 8 * MIN, 1, "not recorded"),
        (8 * MIN, 9 * MIN, 1, "partial"),
        (9 * MIN, 10 * MIN, 1, "not recorded"),
    ]
    assert find_gaps(local, complete, [candle(T0), candle(T0 + MIN)], "1m", T0, T0 + 2 * MIN) == []


minutes = st.sets(st.integers(min_value=0, max_value=59), max_size=60)


@settings(max_examples=200, deadline=None)
@given(local=minutes, remote=minutes, complete=minutes, quiet=minutes)
def test_one_row_per_interval_and_gaps_partition_the_range(
    local: set[int], remote: set[int], complete: set[int], quiet: set[int]
) -> None:
    locals_ = [candle(T0 + i * MIN, c=str(i)) for i in sorted(local)]
    remotes = [candle(T0 + i * MIN, v="0" if i in quiet else "1") for i in sorted(remote)]
    full = {T0 + i * MIN for i in complete}
    result = combine_candles(locals_, full, remotes, "1m", T0, T0 + 60 * MIN)
    assert [r.open_time_ms for r in result.rows] == [T0 + i * MIN for i in range(60)]
    traded = {i for i in remote if i not in quiet}
    for i, row in enumerate(result.rows):
        if i in local and i in complete:
            assert row.source == "local" and row.close == str(i)
        elif i in traded:
            assert row.source == "exchange"
        else:
            assert row.source == "empty" and row.volume == "0"
    gaps = find_gaps(locals_, full, remotes, "1m", T0, T0 + 60 * MIN)
    in_gaps = {(t - T0) // MIN for g in gaps for t in range(g.start_ms, g.end_ms, MIN)} & traded
    assert in_gaps == {i for i in traded if not (i in local and i in complete)}
    assert sum(g.intervals for g in gaps) == len(in_gaps)
    assert all(Decimal(r.volume) >= 0 for r in result.rows)
