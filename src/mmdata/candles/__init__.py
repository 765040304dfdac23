"""Candles and rolling metrics from trades (pure: no I/O).

* :mod:`mmdata.candles.intervals` — interval names, lengths, alignment (1W on Monday).
* :mod:`mmdata.candles.aggregate` — :class:`CandleAggregator`: trades → 1m → higher intervals.
* :mod:`mmdata.candles.metrics` — log returns, annualised volatility, correlation (numpy).
"""

from mmdata.candles.aggregate import Bar, CandleAggregator
from mmdata.candles.intervals import (
    INTERVALS,
    VALID_INTERVALS,
    Interval,
    InvalidInterval,
    iso_time,
    parse_interval,
)

__all__ = [
    "INTERVALS",
    "VALID_INTERVALS",
    "Bar",
    "CandleAggregator",
    "Interval",
    "InvalidInterval",
    "iso_time",
    "parse_interval",
]
