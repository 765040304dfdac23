"""Candle intervals: names, lengths and alignment (pure).

Every interval but ``1W`` is aligned to the Unix epoch (a ``4h`` candle opens at 00:00,
04:00, … UTC; ``1D`` at 00:00 UTC). ``1W`` opens on **Monday 00:00 UTC**, as Binance's
weekly klines do and as pandas' ``resample("W-MON", label="left", closed="left")`` bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = ["INTERVALS", "VALID_INTERVALS", "Interval", "InvalidInterval", "iso_time", "parse_interval"]

MINUTE_MS: Final = 60_000
_DAY_MS: Final = 1440 * MINUTE_MS
#: 1970-01-05, the first Monday after the epoch (1970-01-01 was a Thursday).
_MONDAY_MS: Final = 4 * _DAY_MS


@dataclass(frozen=True, slots=True)
class Interval:
    """One candle interval: ``name`` (``1m`` … ``1W``), length and alignment in ms."""

    name: str
    ms: int
    offset_ms: int = 0
    #: The equivalent pandas ``resample`` rule (with ``label="left", closed="left"``).
    pandas_rule: str = ""

    @property
    def minutes(self) -> int:
        """Length in minutes."""
        return self.ms // MINUTE_MS

    def floor(self, ts_ms: int) -> int:
        """Open time of the interval holding ``ts_ms``."""
        return ts_ms - (ts_ms - self.offset_ms) % self.ms

    def next_open_ms(self, ts_ms: int) -> int:
        """Open time of the interval after the one holding ``ts_ms``."""
        return self.floor(ts_ms) + self.ms


INTERVALS: Final[dict[str, Interval]] = {
    "1m": Interval("1m", MINUTE_MS, pandas_rule="1min"),
    "5m": Interval("5m", 5 * MINUTE_MS, pandas_rule="5min"),
    "15m": Interval("15m", 15 * MINUTE_MS, pandas_rule="15min"),
    "1h": Interval("1h", 60 * MINUTE_MS, pandas_rule="1h"),
    "4h": Interval("4h", 240 * MINUTE_MS, pandas_rule="4h"),
    "1D": Interval("1D", _DAY_MS, pandas_rule="1D"),
    "1W": Interval("1W", 7 * _DAY_MS, offset_ms=_MONDAY_MS, pandas_rule="W-MON"),
}
VALID_INTERVALS: Final = ", ".join(INTERVALS)


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidInterval(ValueError):
    """An interval name that is not one of :data:`INTERVALS` (the message says which are)."""


def parse_interval(text: object) -> Interval:
    """The interval named ``text`` (exact spelling: ``1D`` and ``1W`` are upper case)."""
    interval = INTERVALS.get(text) if isinstance(text, str) else None
    if interval is None:
        shown = text if isinstance(text, str) else repr(text)
        raise InvalidInterval(f"Invalid interval: {shown}. Valid: {VALID_INTERVALS}")
    return interval


def iso_time(ts_ms: int) -> str:
    """``2024-10-24T10:00:00.000Z``: ISO-8601 UTC with milliseconds."""
    moment = _EPOCH + timedelta(milliseconds=ts_ms)  # integer arithmetic: no float rounding
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"
