"""Tests of :mod:`mmdata.candles.intervals` against pandas.

Every interval's ``floor`` must be the label pandas gives a timestamp under
``resample(interval.pandas_rule, label="left", closed="left")``, and independently the
epoch-aligned ``Timestamp.floor`` (the Monday of the week for ``1W``). Timestamps span
1900…2200 so that pre-epoch times (before the first Monday, 1970-01-05), leap days and
year ends are covered.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mmdata.candles import INTERVALS, VALID_INTERVALS, Interval, InvalidInterval, iso_time, parse_interval

EPOCH = pd.Timestamp(0, tz="UTC")
ONE_MS = pd.Timedelta(milliseconds=1)
DAY_MS = 86_400_000


def ms_of(text: str) -> int:
    """Milliseconds since the epoch of an ISO UTC time (integer arithmetic)."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def stamp(ts_ms: int) -> pd.Timestamp:
    return EPOCH + pd.Timedelta(milliseconds=ts_ms)


def to_ms(moment: pd.Timestamp) -> int:
    return int((moment - EPOCH) // ONE_MS)


def pandas_floor(interval: Interval, ts_ms: int) -> int:
    """The open of the interval holding ``ts_ms``, computed by pandas alone."""
    moment = stamp(ts_ms)
    if interval.name == "1W":
        return to_ms(moment.normalize() - pd.Timedelta(days=moment.day_of_week))
    return to_ms(moment.floor(pd.Timedelta(milliseconds=interval.ms)))


def resample_label(interval: Interval, ts_ms: int) -> int:
    """The label pandas' resample gives the bin holding ``ts_ms``."""
    series = pd.Series([1], index=pd.DatetimeIndex([stamp(ts_ms)]))
    labels = series.resample(interval.pandas_rule, label="left", closed="left").sum().index
    assert len(labels) == 1
    return to_ms(labels[0])


# Boundaries worth hitting exactly: epoch (Thursday), first Monday, pre-epoch Monday,
# year ends, leap days (2000 is a leap year, 2100 is not), a Sunday night, 4h edges.
BOUNDARIES = [
    0,
    4 * DAY_MS,
    -3 * DAY_MS,
    ms_of("1969-12-31T23:59:59.999"),
    ms_of("2024-01-01T00:00:00"),
    ms_of("2024-02-29T00:00:00"),
    ms_of("2024-03-01T00:00:00"),
    ms_of("2000-02-29T00:00:00"),
    ms_of("2100-03-01T00:00:00"),
    ms_of("2024-10-27T23:59:59.999"),
    ms_of("2024-10-28T00:00:00"),
    ms_of("2021-05-19T04:00:00"),
    ms_of("1900-01-01T00:00:00"),
]
timestamps = st.one_of(
    st.builds(
        lambda base, delta: base + delta,
        st.sampled_from(BOUNDARIES),
        st.sampled_from([-60_001, -60_000, -1, 0, 1, 59_999, 60_000]),
    ),
    st.integers(ms_of("1900-01-01T00:00:00"), ms_of("2200-01-01T00:00:00")),
)
intervals = st.sampled_from(list(INTERVALS.values()))


def test_names_lengths_and_rules() -> None:
    assert list(INTERVALS) == ["1m", "5m", "15m", "1h", "4h", "1D", "1W"]
    assert VALID_INTERVALS == "1m, 5m, 15m, 1h, 4h, 1D, 1W"
    assert [i.minutes for i in INTERVALS.values()] == [1, 5, 15, 60, 240, 1440, 10080]
    for name, interval in INTERVALS.items():
        assert interval.name == name
        assert interval.ms == interval.minutes * 60_000
        # pandas agrees on the length of every fixed rule (W-MON is a week).
        rule_length = pd.Timedelta(7, "D") if name == "1W" else pd.Timedelta(interval.pandas_rule)
        assert rule_length == pd.Timedelta(milliseconds=interval.ms)


@pytest.mark.parametrize("name", list(INTERVALS))
def test_parse_interval_accepts_exact_names(name: str) -> None:
    assert parse_interval(name) is INTERVALS[name]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("10m", "10m"),
        ("1d", "1d"),
        ("1w", "1w"),
        ("1H", "1H"),
        ("1M", "1M"),
        ("", ""),
        (" 1m", " 1m"),
        ("1m ", "1m "),
        ("60", "60"),
        (None, "None"),
        (1, "1"),
        (b"1m", "b'1m'"),
        (["1m"], "['1m']"),
    ],
)
def test_parse_interval_rejects_with_the_seed_message(text: object, shown: str) -> None:
    with pytest.raises(InvalidInterval) as info:
        parse_interval(text)
    assert str(info.value) == f"Invalid interval: {shown}. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W"
    assert isinstance(info.value, ValueError)


def test_the_seed_example_message() -> None:
    with pytest.raises(ValueError, match=r"^Invalid interval: 10m\. Valid: 1m, 5m, 15m, 1h, 4h, 1D, 1W$"):
        parse_interval("10m")


@settings(max_examples=200)
@given(interval=intervals, ts_ms=timestamps)
@example(interval=INTERVALS["1W"], ts_ms=ms_of("2024-10-27T23:59:59.999"))  # Sunday night
@example(interval=INTERVALS["1W"], ts_ms=ms_of("2024-10-28T00:00:00"))  # Monday 00:00
@example(interval=INTERVALS["1W"], ts_ms=4 * DAY_MS - 1)  # before the first Monday
@example(interval=INTERVALS["1W"], ts_ms=0)  # the epoch, a Thursday
def test_floor_is_the_pandas_bin(interval: Interval, ts_ms: int) -> None:
    start = interval.floor(ts_ms)
    assert start == pandas_floor(interval, ts_ms)
    assert start == resample_label(interval, ts_ms)
    assert start <= ts_ms < interval.next_open_ms(ts_ms) == start + interval.ms
    assert interval.floor(start) == start
    assert interval.floor(start + interval.ms - 1) == start
    assert interval.floor(start - 1) == start - interval.ms


def test_weeks_open_on_monday() -> None:
    week = INTERVALS["1W"]
    for ts_ms in BOUNDARIES:
        opened = stamp(week.floor(ts_ms))
        assert opened.day_of_week == 0 and opened == opened.normalize()  # Monday 00:00:00.000
    assert week.floor(0) == -3 * DAY_MS  # 1969-12-29, the Monday before the epoch
    assert week.floor(4 * DAY_MS) == 4 * DAY_MS
    assert week.floor(ms_of("2024-10-27T23:59:59.999")) == ms_of("2024-10-21T00:00:00")
    assert week.next_open_ms(ms_of("2024-10-27T23:59:59.999")) == ms_of("2024-10-28T00:00:00")


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (ms_of("2024-02-29T23:59:59.999"), "2024-02-29T23:59:59.999Z"),
        (ms_of("2024-10-24T10:00:00"), "2024-10-24T10:00:00.000Z"),
        (ms_of("2100-03-01T00:00:00"), "2100-03-01T00:00:00.000Z"),
    ],
)
def test_iso_time_examples(ts_ms: int, text: str) -> None:
    assert iso_time(ts_ms) == text


@settings(max_examples=200)
@given(ts_ms=timestamps)
def test_iso_time_is_pandas_isoformat(ts_ms: int) -> None:
    expected = stamp(ts_ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert iso_time(ts_ms) == expected


def test_interval_is_immutable() -> None:
    with pytest.raises(AttributeError):
        INTERVALS["1m"].ms = 1  # type: ignore[misc]
