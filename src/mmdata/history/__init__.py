"""Exchange history over REST (candles, trades) stored as Parquet, and its join with recorded data.

>>> from mmdata.history import FetchOptions, fetch_history, load_candles       # doctest: +SKIP
>>> fetch_history(FetchOptions("binance", "BTC/USDT", "candles", "1m", start_ms, end_ms, Path("data")))
>>> load_candles("data", "binance", "BTC/USDT", "1m")   # pandas: close float64 + close_text exact

Commands: ``mmdata history fetch | combine | gaps``; layout and rules: docs/history.md.
"""

from mmdata.history.fetch import FetchOptions, FetchResult, fetch_history
from mmdata.history.join import (
    CombineReport,
    GapsReport,
    JoinOptions,
    combine_history,
    find_history_gaps,
)
from mmdata.history.store import HistoryStore, load_candles, load_trades

__all__ = [
    "CombineReport",
    "FetchOptions",
    "FetchResult",
    "GapsReport",
    "HistoryStore",
    "JoinOptions",
    "combine_history",
    "fetch_history",
    "find_history_gaps",
    "load_candles",
    "load_trades",
]
