"""The trading window: which recording days are active at an instant (pure, no I/O).

Day ``D``'s window is ``[D at start_hhmm, (D + end_day_offset) at end_hhmm)`` in local
time of ``tz``. With the seed defaults (Europe/Berlin, 00:00 → 00:15 the next day) the
windows of consecutive days overlap by 15 minutes: from 00:00 to 00:15 local both day
``D-1`` and day ``D`` are active, so each day folder gets its own opening snapshot and
still replays on its own.

Local wall times are turned into instants per day, so DST is honoured: a day's window may
be an hour shorter or longer (Europe/Berlin has 23 h and 25 h days). A wall time that
does not exist (inside a spring-forward gap) resolves to the first instant after the gap,
i.e. the transition itself; an ambiguous one (repeated in a fall-back) resolves to its
first occurrence. Both ends inside the same gap make that day's window empty. Bounds are
returned as UTC-aware datetimes; instants are epoch seconds or aware datetimes.

A window ends on local date ``D + end_day_offset`` (or the day after, if its end falls
into a gap at midnight), so the days active at ``t`` lie in ``[L - end_day_offset - 1, L]``
where ``L`` is ``t``'s local date; the queries just test those few candidates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mmdata.errors import ConfigError

__all__ = [
    "WINDOW_END_DAY_OFFSET",
    "WINDOW_END_HHMM",
    "WINDOW_START_HHMM",
    "WINDOW_TZ",
    "TradingWindow",
    "day_label",
]

WINDOW_TZ = "Europe/Berlin"
WINDOW_START_HHMM = "00:00"
WINDOW_END_HHMM = "00:15"
WINDOW_END_DAY_OFFSET = 1

_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_MAX_OFFSET = 7


def day_label(day: date) -> str:
    """The folder label of a day: ``YYYYMMDD``."""
    return day.strftime("%Y%m%d")


def _hhmm(knob: str, value: str) -> tuple[int, int]:
    m = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f"{knob} must be HH:MM between 00:00 and 23:59, got {value!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True, slots=True)
class TradingWindow:
    """Day ``D`` is recorded during ``[D start_hhmm, D+end_day_offset end_hhmm)`` local time in ``tz``."""

    tz: str = WINDOW_TZ
    start_hhmm: str = WINDOW_START_HHMM
    end_hhmm: str = WINDOW_END_HHMM
    end_day_offset: int = WINDOW_END_DAY_OFFSET

    # Parsed once in __post_init__ (zone, start h/m, end h/m, lookback days).
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _start: tuple[int, int] = field(init=False, repr=False, compare=False)
    _end: tuple[int, int] = field(init=False, repr=False, compare=False)
    _lookback: int = field(init=False, repr=False, compare=False)

    day_label = staticmethod(day_label)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
            raise ConfigError(f"WINDOW_TZ {self.tz!r} is not a known time zone") from exc
        sh, sm = _hhmm("WINDOW_START_HHMM", self.start_hhmm)
        eh, em = _hhmm("WINDOW_END_HHMM", self.end_hhmm)
        offset = self.end_day_offset
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _MAX_OFFSET:
            raise ConfigError(f"WINDOW_END_DAY_OFFSET must be an integer 0..{_MAX_OFFSET}, got {offset!r}")
        minutes = offset * 1440 + (eh * 60 + em) - (sh * 60 + sm)
        if minutes <= 0:
            raise ConfigError(
                f"trading window is empty: end {self.end_hhmm} (+{offset} d) is not after "
                f"start {self.start_hhmm}"
            )
        if minutes > _MAX_OFFSET * 1440:
            raise ConfigError(f"trading window is longer than {_MAX_OFFSET} days ({minutes} minutes)")
        object.__setattr__(self, "_zone", zone)  # frozen: set once here
        object.__setattr__(self, "_start", (sh, sm))
        object.__setattr__(self, "_end", (eh, em))
        object.__setattr__(self, "_lookback", offset + 1)

    def bounds(self, day: date) -> tuple[datetime, datetime]:
        """``day``'s window ``[start, end)`` as UTC-aware datetimes."""
        start = _resolve(self._zone, day, *self._start)
        end = _resolve(self._zone, day + timedelta(days=self.end_day_offset), *self._end)
        return start, end

    def active_days(self, t: float | datetime) -> list[date]:
        """The days whose window contains ``t``, oldest first; ``[]`` outside every window."""
        at = _instant(t)
        local = at.astimezone(self._zone).date()
        days = []
        for k in range(-self._lookback, 1):
            day = local + timedelta(days=k)
            start, end = self.bounds(day)
            if start <= at < end:
                days.append(day)
        return days

    def next_boundary(self, t: float | datetime) -> datetime:
        """The earliest window start or end strictly after ``t`` (UTC-aware)."""
        at = _instant(t)
        local = at.astimezone(self._zone).date()
        # Day L+1 always starts after t, so no later day can hold an earlier boundary.
        edges = [edge for k in range(-self._lookback, 2) for edge in self.bounds(local + timedelta(days=k))]
        return min(edge for edge in edges if edge > at)

    def next_start(self, t: float | datetime) -> tuple[date, datetime]:
        """The first day whose window starts strictly after ``t``, and that start (UTC-aware)."""
        at = _instant(t)
        day = at.astimezone(self._zone).date()
        while (start := self.bounds(day)[0]) <= at:
            day += timedelta(days=1)
        return day, start


def _instant(t: float | datetime) -> datetime:
    """``t`` as a UTC-aware datetime; a naive datetime is refused (its zone would be a guess)."""
    if isinstance(t, datetime):
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("naive datetime: give an aware datetime or epoch seconds")
        return t.astimezone(UTC)
    return datetime.fromtimestamp(t, UTC)


def _resolve(zone: ZoneInfo, day: date, hour: int, minute: int) -> datetime:
    """Local wall time on ``day`` → UTC instant (gap → first instant after it; fold → first occurrence)."""
    wall = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)  # fold=0: first occurrence
    at = wall.astimezone(UTC)
    if at.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return at
    # In a gap: fold=0 read it with the offset before the jump (an instant after the transition),
    # fold=1 with the offset after it (an instant before). The transition lies between: bisect to it.
    lo = int(wall.replace(fold=1).astimezone(UTC).timestamp())
    hi = int(at.timestamp())
    before = datetime.fromtimestamp(lo, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return datetime.fromtimestamp(hi, UTC)
