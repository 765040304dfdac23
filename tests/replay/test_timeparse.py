"""``mmdata.replay.timeparse``: moments and intervals as notebook users type them."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdata.replay.timeparse import parse_duration_ns, parse_time_ns

S = 1_000_000_000
DAY = date(2026, 11, 21)
#: 2026-11-21T00:00:00Z in ns, computed without mmdata.
MIDNIGHT = int(datetime(2026, 11, 21, tzinfo=UTC).timestamp()) * S
#: 2026-11-21T10:15:00Z
T1015 = MIDNIGHT + (10 * 3600 + 15 * 60) * S


def _iso_of(ns: int, offset_minutes: int = 0, zone: str = "offset") -> str:
    """ISO-8601 text of ``ns`` (truncated to µs: datetime's precision) written in a UTC offset."""
    tz = timezone(timedelta(minutes=offset_minutes))
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    text = moment.astimezone(tz).isoformat(timespec="microseconds")
    if zone == "Z":
        assert offset_minutes == 0
        return text.replace("+00:00", "Z")
    if zone == "naive":
        assert offset_minutes == 0
        return text.replace("+00:00", "")
    return text


# -- parse_time_ns: ISO-8601 -------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T10:15:00Z", T1015),
        ("2026-11-21T10:15:00+00:00", T1015),
        ("2026-11-21T10:15:00", T1015),  # no zone: UTC
        ("2026-11-21 10:15:00", T1015),
        ("2026-11-21T11:15:00+01:00", T1015),
        ("2026-11-21T05:15:00-05:00", T1015),
        ("2026-11-21T10:15:00.5Z", T1015 + S // 2),
        ("2026-11-21T10:15:00.123456Z", T1015 + 123_456_000),
        ("2026-11-21T10:15:00.123456+00:00", T1015 + 123_456_000),
        ("  2026-11-21T10:15:00Z  ", T1015),
        ("2026-11-21", MIDNIGHT),
    ],
)
def test_iso_text(text: str, expected: int) -> None:
    assert parse_time_ns(text) == expected
    assert parse_time_ns(text, DAY) == expected, "a day changes nothing for a full ISO time"


def test_iso_text_with_nanoseconds_keeps_them() -> None:
    # BookView.time writes exactly this form (9 fraction digits): it must read back exactly.
    assert parse_time_ns("2026-11-21T10:15:00.123456789Z") == T1015 + 123_456_789
    assert parse_time_ns("2026-11-21T10:15:00.000000001Z") == T1015 + 1


# -- parse_time_ns: clock times on a day -------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10:15", T1015),
        ("10:15:00", T1015),
        ("9:05", MIDNIGHT + (9 * 3600 + 5 * 60) * S),
        ("00:00:00", MIDNIGHT),
        ("23:59:59", MIDNIGHT + (86_400 - 1) * S),
        ("10:15:00.5", T1015 + 500_000_000),
        ("10:15:00.250", T1015 + 250_000_000),
        ("10:15:00.123456", T1015 + 123_456_000),
        ("10:15:00.123456789", T1015 + 123_456_789),
        ("10:15:00.000000001", T1015 + 1),
        (" 10:15:01 ", T1015 + S),
    ],
)
def test_clock_time_on_the_day(text: str, expected: int) -> None:
    assert parse_time_ns(text, DAY) == expected


def test_clock_time_is_utc_on_the_given_day() -> None:
    assert parse_time_ns("10:15", date(2026, 11, 22)) - parse_time_ns("10:15", DAY) == 86_400 * S


@pytest.mark.parametrize("text", ["10:15", "10:15:00", "10:15:00.5"])
def test_clock_time_without_a_day_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="clock time"):
        parse_time_ns(text)


@pytest.mark.parametrize("text", ["25:00", "10:61", "10:15:75"])
def test_impossible_clock_time_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_ns(text, DAY)


# -- parse_time_ns: epoch numbers ---------------------------------------------------------
EPOCH_S = 1_795_258_590  # 2026-11-21T10:56:30Z


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (EPOCH_S, EPOCH_S * S),
        (EPOCH_S * 1000 + 540, EPOCH_S * S + 540_000_000),
        (EPOCH_S * 1_000_000 + 540_101, EPOCH_S * S + 540_101_000),
        (EPOCH_S * S + 540_101_252, EPOCH_S * S + 540_101_252),
        (0, 0),
        (str(EPOCH_S), EPOCH_S * S),
        (str(EPOCH_S * 1000 + 540), EPOCH_S * S + 540_000_000),
        (str(EPOCH_S * 1_000_000 + 540_101), EPOCH_S * S + 540_101_000),
        (str(EPOCH_S * S + 540_101_252), EPOCH_S * S + 540_101_252),
        (f"  {EPOCH_S}  ", EPOCH_S * S),
    ],
    ids=["s", "ms", "us", "ns", "zero", "s-text", "ms-text", "us-text", "ns-text", "padded-text"],
)
def test_epoch_numbers(value: int | str, expected: int) -> None:
    assert parse_time_ns(value) == expected
    assert parse_time_ns(value, DAY) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.int64(EPOCH_S * S + 540_101_252), EPOCH_S * S + 540_101_252),
        (np.int64(EPOCH_S * 1000 + 540), EPOCH_S * S + 540_000_000),
        (np.int64(EPOCH_S), EPOCH_S * S),
    ],
    ids=["ns", "ms", "s"],
)
def test_numpy_integers_are_epoch_numbers_too(value: np.int64, expected: int) -> None:
    # What a notebook gets from a column (``frame["recv_time_ns"].to_numpy()[0]``): the same
    # size rule as a Python int, not "nanoseconds" whatever the size.
    assert parse_time_ns(value) == expected


@given(ns=st.integers(min_value=10**17, max_value=4_102_444_800 * S))  # 1973 .. 2100
def test_epoch_units_are_told_apart_by_size(ns: int) -> None:
    assert parse_time_ns(ns) == ns
    assert parse_time_ns(ns // 1000) == ns // 1000 * 1000
    assert parse_time_ns(ns // 1_000_000) == ns // 1_000_000 * 1_000_000
    assert parse_time_ns(ns // S) == ns // S * S
    assert parse_time_ns(str(ns // 1_000_000)) == ns // 1_000_000 * 1_000_000


# -- parse_time_ns: objects ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 11, 21, 10, 15, tzinfo=UTC), T1015),
        (datetime(2026, 11, 21, 10, 15), T1015),  # naive: UTC
        (datetime(2026, 11, 21, 11, 15, tzinfo=ZoneInfo("Europe/Berlin")), T1015),
        (datetime(2026, 11, 21, 10, 15, 0, 123456, tzinfo=UTC), T1015 + 123_456_000),
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (pd.Timestamp("2026-11-21T10:15:00Z"), T1015),
        (pd.Timestamp("2026-11-21T10:15:00.123456Z"), T1015 + 123_456_000),
        (pd.Timestamp("2026-11-21T11:15:00+01:00"), T1015),
        (np.datetime64("2026-11-21T10:15:00"), T1015),
        (np.datetime64("2026-11-21T10:15:00.123456789"), T1015 + 123_456_789),
        (np.datetime64("2026-11-21T10:15:00.123", "ms"), T1015 + 123_000_000),
        (np.datetime64("2026-11-21"), MIDNIGHT),
    ],
    ids=[
        "datetime-utc",
        "datetime-naive",
        "datetime-berlin",
        "datetime-us",
        "datetime-epoch",
        "timestamp",
        "timestamp-us",
        "timestamp-offset",
        "datetime64-s",
        "datetime64-ns",
        "datetime64-ms",
        "datetime64-day",
    ],
)
def test_time_objects(value: Any, expected: int) -> None:
    assert parse_time_ns(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pd.Timestamp("2026-11-21T10:15:00.123456789Z"),
        pd.Timestamp("2026-11-21T10:15:00.123456789"),
        pd.Timestamp(T1015 + 123_456_789, unit="ns", tz="UTC"),
    ],
    ids=["aware", "naive", "from-ns"],
)
def test_pandas_timestamp_keeps_nanoseconds(value: pd.Timestamp) -> None:
    # A recv_time cell of any mmdata table is such a Timestamp (ns precision): book_at(cell)
    # must mean that exact instant, not the microsecond before it.
    assert parse_time_ns(value) == T1015 + 123_456_789


# -- parse_time_ns: refusals --------------------------------------------------------------
def _stable_id(value: Any) -> str:
    """Test ids the same in every xdist worker (an object's repr holds its address)."""
    return "object" if type(value) is object else repr(value)


@pytest.mark.parametrize(
    "value",
    [True, False, None, "garbage", "", "   ", "10h15", "2026-13-01", "tomorrow", -1, "-5", 1.5, object()],
    ids=_stable_id,
)
def test_not_a_time(value: Any) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_time_ns(value, DAY)


def test_refusal_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        parse_time_ns("half past ten", DAY)
    message = str(info.value)
    assert "half past ten" in message
    assert "ISO-8601" in message and "clock time" in message and "epoch" in message


# -- the round-trip property -------------------------------------------------------------
@given(
    ns=st.integers(min_value=0, max_value=4_102_444_800 * S),
    offset=st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_iso_round_trip_with_microseconds(ns: int, offset: int) -> None:
    truncated = ns // 1000 * 1000
    assert parse_time_ns(_iso_of(ns, offset)) == truncated
    assert parse_time_ns(_iso_of(ns, 0, "Z")) == truncated
    assert parse_time_ns(_iso_of(ns, 0, "naive")) == truncated
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert parse_time_ns(moment) == truncated
    assert parse_time_ns(pd.Timestamp(moment)) == truncated


# -- parse_duration_ns --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", S),
        ("250ms", 250_000_000),
        ("5min", 300 * S),
        ("1h", 3600 * S),
        ("1.5s", 1_500_000_000),
        ("100us", 100_000),
        ("100µs", 100_000),
        ("10ns", 10),
        ("2m", 120 * S),
        ("1sec", S),
        ("1hr", 3600 * S),
        ("1d", 86_400 * S),
        ("2", 2 * S),  # no unit: seconds
        (" 1 s ", S),
        ("1S", S),
        ("0.25s", 250_000_000),
        (1, S),
        (2.5, 2_500_000_000),
        (0.1, 100_000_000),
        (0.25, 250_000_000),
        (timedelta(milliseconds=250), 250_000_000),
        (timedelta(days=1, seconds=1, microseconds=1), 86_401 * S + 1000),
        (pd.Timedelta("250ms"), 250_000_000),
        (pd.Timedelta(nanoseconds=1500), 1500),
        (pd.Timedelta("1s") + pd.Timedelta(nanoseconds=1), S + 1),
    ],
    ids=repr,
)
def test_durations(value: Any, expected: int) -> None:
    assert parse_duration_ns(value) == expected


@pytest.mark.parametrize(
    "value",
    [0, 0.0, "0", "0s", "0ms", "0.1ns", timedelta(0), pd.Timedelta(0), -1, -0.5, timedelta(seconds=-1)],
    ids=repr,
)
def test_duration_must_be_positive(value: Any) -> None:
    with pytest.raises(ValueError, match="positive"):
        parse_duration_ns(value)


@pytest.mark.parametrize(
    "value",
    ["-1s", "garbage", "", "1 parsec", "s", "1e3ms", "1.s", True, False, None, [1], object()],
    ids=_stable_id,
)
def test_not_an_interval(value: Any) -> None:
    with pytest.raises(ValueError, match="interval"):
        parse_duration_ns(value)


def test_interval_refusal_shows_examples() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration_ns("every now and then")
    assert "every now and then" in str(info.value)
    assert "250ms" in str(info.value)
