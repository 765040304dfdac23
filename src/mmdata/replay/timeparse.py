"""Moments and intervals as users type them: ISO-8601, clock times on a day, epoch numbers,
pandas/datetime objects; ``1s``, ``250ms``, ``5min``, ``1h``. Pure, no I/O."""

from __future__ import annotations

import numbers
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

__all__ = ["parse_duration_ns", "parse_time_ns"]

_CLOCK = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?$")
_FRACTION = re.compile(r"[Tt ]\d{2}:\d{2}:\d{2}\.(\d+)")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|sec|m|min|h|hr|d)?\s*$")
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "sec": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "hr": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}


def _dt_ns(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # naive times are UTC, like every time mmdata writes
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def parse_time_ns(value: Any, day: date | None = None) -> int:
    """Nanoseconds since the epoch (UTC) of ``value``.

    Accepts an ISO-8601 text (``2026-11-21T10:15:00Z``; no zone means UTC), a clock time
    ``HH:MM[:SS[.fff]]`` on ``day`` (UTC), an integer or digit text of epoch seconds, ms, µs or
    ns (told apart by size), a :class:`datetime`, or anything with ``.value`` in ns
    (``pandas.Timestamp``) or ``.astype`` (``numpy.datetime64``).
    Raises ValueError with the accepted forms otherwise.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, numbers.Integral):  # int, numpy.int64, ...
        return _epoch_ns(int(value))
    if hasattr(value, "nanosecond") and isinstance(getattr(value, "value", None), int):
        # pandas.Timestamp (a datetime subclass): .value keeps the nanoseconds datetime drops;
        # a naive one counts as UTC, like every other naive time here.
        return int(value.value)
    if isinstance(value, datetime):
        return _dt_ns(value)
    if hasattr(value, "astype") and hasattr(value, "dtype"):  # numpy.datetime64
        return int(value.astype("datetime64[ns]").astype("int64"))
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _epoch_ns(int(text))
        if _CLOCK.match(text):
            if day is None:
                raise ValueError(f"{value!r} is a clock time: give a full date too (no day to put it on)")
            whole, _, frac = text.partition(".")
            parts = [int(x) for x in whole.split(":")] + [0]
            clock = time(parts[0], parts[1], parts[2])
            ns = _dt_ns(datetime.combine(day, clock, tzinfo=UTC))
            return ns + int(frac.ljust(9, "0")) if frac else ns
        # datetime keeps microseconds: nanosecond digits (as mmdata writes them) are added here.
        extra_ns = 0
        fraction = _FRACTION.search(text)
        if fraction is not None and len(fraction.group(1)) > 6:
            digits = fraction.group(1)
            extra_ns = int(digits[6:9].ljust(3, "0"))
            text = text[: fraction.start(1) + 6] + text[fraction.end(1) :]
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            pass
        else:
            return _dt_ns(parsed) + extra_ns
    raise ValueError(
        f"not a time: {value!r} (use ISO-8601 like 2026-11-21T10:15:00Z, a clock time like 10:15:00 "
        "on the day, or epoch seconds/ms/ns)"
    )


def _epoch_ns(n: int) -> int:
    if n < 0:
        raise ValueError(f"negative epoch time {n}")
    if n < 10**11:  # seconds (until year 5138)
        return n * 1_000_000_000
    if n < 10**14:  # milliseconds
        return n * 1_000_000
    if n < 10**17:  # microseconds
        return n * 1_000
    return n


def parse_duration_ns(value: Any) -> int:
    """Nanoseconds of an interval: ``"1s"``, ``"250ms"``, ``"5min"``, ``"1h"``, a number of
    seconds, a :class:`timedelta` or ``pandas.Timedelta``. Must be positive."""
    ns: int
    if isinstance(value, bool):
        raise ValueError(f"not an interval: {value!r}")
    if isinstance(value, timedelta):
        ns = (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1_000
        if hasattr(value, "nanoseconds"):
            ns += int(value.nanoseconds)
    elif isinstance(value, int | float):
        ns = round(value * 1_000_000_000)
    elif isinstance(value, str) and (m := _DURATION.match(value.lower())):
        ns = round(float(m.group(1)) * _UNIT_NS[m.group(2) or "s"])
    else:
        raise ValueError(f"not an interval: {value!r} (use e.g. 1s, 250ms, 5min, 1h)")
    if ns <= 0:
        raise ValueError(f"interval must be positive: {value!r}")
    return ns
