"""The trading window: overlapping day windows, partial-day windows, DST days, knob validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdata.errors import ConfigError
from mmdata.record.window import TradingWindow, day_label

BERLIN = ZoneInfo("Europe/Berlin")
D = date(2026, 5, 12)


def _berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_defaults_overlap_around_midnight() -> None:
    w = TradingWindow()
    assert (w.tz, w.start_hhmm, w.end_hhmm, w.end_day_offset) == ("Europe/Berlin", "00:00", "00:15", 1)
    assert w.active_days(_berlin(2026, 5, 12, 23, 59)) == [D]
    assert w.active_days(_berlin(2026, 5, 13, 0, 5)) == [D, D + timedelta(days=1)]
    assert w.active_days(_berlin(2026, 5, 13, 0, 15)) == [D + timedelta(days=1)]  # end is exclusive
    assert w.active_days(_berlin(2026, 5, 13, 0, 0)) == [D, D + timedelta(days=1)]  # start is inclusive
    start, end = w.bounds(D)
    assert start == _berlin(2026, 5, 12, 0, 0) and end == _berlin(2026, 5, 13, 0, 15)
    assert start.tzinfo is UTC and end.tzinfo is UTC
    assert end - start == timedelta(hours=24, minutes=15)
    t = _berlin(2026, 5, 12, 23, 59).timestamp()  # epoch seconds work the same
    assert w.active_days(t) == [D]
    assert w.next_boundary(t) == _berlin(2026, 5, 13, 0, 0)
    assert w.next_boundary(_berlin(2026, 5, 13, 0, 0)) == _berlin(2026, 5, 13, 0, 15)
    assert w.next_start(t) == (D + timedelta(days=1), _berlin(2026, 5, 13, 0, 0))
    assert w.day_label(D) == day_label(D) == "20260512"


def test_a_window_that_does_not_cover_the_day() -> None:
    w = TradingWindow(start_hhmm="09:00", end_hhmm="17:30", end_day_offset=0)
    assert w.active_days(_berlin(2026, 5, 12, 8, 59)) == []
    assert w.active_days(_berlin(2026, 5, 12, 9, 0)) == [D]
    assert w.active_days(_berlin(2026, 5, 12, 17, 29, 59)) == [D]
    assert w.active_days(_berlin(2026, 5, 12, 17, 30)) == []
    assert w.next_start(_berlin(2026, 5, 12, 8, 0)) == (D, _berlin(2026, 5, 12, 9, 0))
    assert w.next_start(_berlin(2026, 5, 12, 9, 0)) == (D + timedelta(days=1), _berlin(2026, 5, 13, 9, 0))
    assert w.next_start(_berlin(2026, 5, 12, 20, 0)) == (D + timedelta(days=1), _berlin(2026, 5, 13, 9, 0))
    assert w.next_boundary(_berlin(2026, 5, 12, 12, 0)) == _berlin(2026, 5, 12, 17, 30)
    assert w.next_boundary(_berlin(2026, 5, 12, 18, 0)) == _berlin(2026, 5, 13, 9, 0)


def test_dst_days_in_berlin() -> None:
    w = TradingWindow()
    spring, autumn = date(2026, 3, 29), date(2026, 10, 25)
    lengths = {d: w.bounds(d)[1] - w.bounds(d)[0] for d in [spring - timedelta(days=1), spring, autumn]}
    assert lengths == {
        spring - timedelta(days=1): timedelta(hours=24, minutes=15),
        spring: timedelta(hours=23, minutes=15),
        autumn: timedelta(hours=25, minutes=15),
    }
    # The gap: 02:00-03:00 does not exist on 2026-03-29; a start inside it begins at the jump (01:00 UTC).
    gap = TradingWindow(start_hhmm="02:30", end_hhmm="04:00", end_day_offset=0)
    assert gap.bounds(spring) == (
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 3, 29, 2, 0, tzinfo=UTC),
    )
    assert gap.bounds(spring - timedelta(days=1))[0] == datetime(2026, 3, 28, 1, 30, tzinfo=UTC)
    inside = TradingWindow(start_hhmm="02:10", end_hhmm="02:50", end_day_offset=0)
    start, end = inside.bounds(spring)
    assert start == end == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # both ends in the gap: empty that day
    assert inside.active_days(start) == []
    # The fold: 02:00-03:00 happens twice on 2026-10-25; an ambiguous time means its first occurrence.
    fold = TradingWindow(start_hhmm="02:30", end_hhmm="02:45", end_day_offset=0)
    assert fold.bounds(autumn) == (
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 0, 45, tzinfo=UTC),
    )
    assert fold.active_days(datetime(2026, 10, 25, 1, 35, tzinfo=UTC)) == []  # 02:35 the second time


def test_utc_zone() -> None:
    w = TradingWindow(tz="UTC", start_hhmm="22:00", end_hhmm="02:00", end_day_offset=1)
    start, end = w.bounds(D)
    assert start == datetime(2026, 5, 12, 22, 0, tzinfo=UTC) and end == datetime(
        2026, 5, 13, 2, 0, tzinfo=UTC
    )
    assert w.active_days(datetime(2026, 5, 13, 1, 0, tzinfo=UTC)) == [D]
    assert w.active_days(datetime(2026, 5, 13, 12, 0, tzinfo=UTC)) == []
    assert w.next_start(datetime(2026, 5, 13, 12, 0, tzinfo=UTC)) == (
        D + timedelta(days=1),
        datetime(2026, 5, 13, 22, 0, tzinfo=UTC),
    )


def test_a_week_long_window() -> None:
    w = TradingWindow(tz="UTC", start_hhmm="12:00", end_hhmm="11:00", end_day_offset=7)
    t = datetime(2026, 5, 12, 10, 30, tzinfo=UTC)
    assert w.active_days(t) == [D - timedelta(days=k) for k in range(7, 0, -1)]  # seven open windows
    assert w.active_days(t + timedelta(hours=1)) == [D - timedelta(days=k) for k in range(6, 0, -1)]
    assert w.active_days(t + timedelta(hours=2)) == [D - timedelta(days=k) for k in range(6, -1, -1)]


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"tz": "Mars/Olympus"}, "time zone"),
        ({"tz": ""}, "time zone"),
        ({"tz": "../etc/passwd"}, "time zone"),
        ({"start_hhmm": "24:00"}, "HH:MM"),
        ({"start_hhmm": "9:00"}, "HH:MM"),
        ({"end_hhmm": "00:60"}, "HH:MM"),
        ({"end_hhmm": "0015"}, "HH:MM"),
        ({"end_day_offset": -1}, "0..7"),
        ({"end_day_offset": 8}, "0..7"),
        ({"end_day_offset": True}, "0..7"),
        ({"end_hhmm": "00:00", "end_day_offset": 0}, "empty"),
        ({"start_hhmm": "10:00", "end_hhmm": "10:00", "end_day_offset": 0}, "empty"),
        ({"start_hhmm": "10:00", "end_hhmm": "09:00", "end_day_offset": 0}, "empty"),
        ({"start_hhmm": "10:00", "end_hhmm": "10:01", "end_day_offset": 7}, "longer than 7 days"),
    ],
)
def test_invalid_knobs(knobs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TradingWindow(**knobs)  # type: ignore[arg-type]


def test_valid_edge_knobs() -> None:
    assert TradingWindow(end_day_offset=0).bounds(D)[1] == _berlin(2026, 5, 12, 0, 15)  # same-day window
    w = TradingWindow(tz="UTC", start_hhmm="10:00", end_hhmm="10:00", end_day_offset=7)  # exactly 7 days
    assert w.bounds(D)[1] - w.bounds(D)[0] == timedelta(days=7)


def test_naive_datetime_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        TradingWindow().active_days(datetime(2026, 5, 12, 12, 0))


WINDOWS = [
    TradingWindow(),
    TradingWindow(start_hhmm="09:00", end_hhmm="17:30", end_day_offset=0),
    TradingWindow(tz="UTC", start_hhmm="22:00", end_hhmm="02:00"),
    TradingWindow(start_hhmm="02:30", end_hhmm="02:30", end_day_offset=2),  # in the gap / fold on DST days
    TradingWindow(tz="America/New_York", start_hhmm="23:45", end_hhmm="00:10", end_day_offset=7),
    TradingWindow(
        tz="Australia/Lord_Howe", start_hhmm="01:45", end_hhmm="02:15", end_day_offset=0
    ),  # 30 min DST
    TradingWindow(tz="America/Santiago", start_hhmm="00:30", end_hhmm="00:10"),  # DST gap at midnight
]

# Roughly where the zones above change their clocks in 2026 (UTC); instants are drawn within 3 days of them.
TRANSITIONS = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # Europe/Berlin
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # America/New_York
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),  # Australia/Lord_Howe
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
    datetime(2026, 4, 5, 3, 0, tzinfo=UTC),  # America/Santiago
    datetime(2026, 9, 6, 4, 0, tzinfo=UTC),
]

instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
) | st.builds(
    lambda base, shift: base + shift,
    st.sampled_from(TRANSITIONS),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=3)),
)


@given(st.sampled_from(WINDOWS), instants)
def test_active_days_agree_with_bounds(w: TradingWindow, t: datetime) -> None:
    days = w.active_days(t)
    assert days == sorted(days)
    local = t.astimezone(ZoneInfo(w.tz)).date()
    for k in range(-8, 2):
        day = local + timedelta(days=k)
        start, end = w.bounds(day)
        assert (start <= t < end) == (day in days)
    assert w.active_days(t.timestamp()) == days


@given(st.sampled_from(WINDOWS), instants, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4))
def test_active_days_constant_until_the_next_boundary(
    w: TradingWindow, t: datetime, fracs: list[float]
) -> None:
    boundary = w.next_boundary(t)
    assert boundary > t and boundary.tzinfo is UTC
    days = w.active_days(t)
    span = boundary - t
    for frac in [*fracs, 1.0]:
        probe = t + span * frac
        if probe >= boundary:
            probe = boundary - timedelta(microseconds=1)
        assert w.active_days(probe) == days
    day, start = w.next_start(t)
    assert start > t and w.bounds(day)[0] == start
    assert w.bounds(day - timedelta(days=1))[0] <= t
