"""Rolling metrics over candle closes: log returns, annualised volatility, correlation (pure, numpy).

Definitions (docs/metrics.md repeats them with an example)
----------------------------------------------------------
For an interval ``I`` (e.g. 1m), a window ``W`` and a time ``now``:

* **Grid.** ``t_c = floor_I(now)`` is the open of the running (partial) candle and
  ``n = W // I``. The grid is ``t_k = t_c - (n - k)·I`` for ``k = 0 … n``: ``n + 1`` candle
  opens, the last one being the running candle.
* **Close at a grid point.** ``close(t)`` is the close of the newest candle opening at or
  before ``t`` (forward fill: an interval without trades kept the last price, so its return
  is 0). Before the first candle it is undefined.
* **Log returns.** ``r_k = ln(close(t_k) / close(t_{k-1}))`` for ``k = 1 … n``; undefined
  where either close is.
* **Volatility** = sample standard deviation (``ddof=1``) of the defined ``r_k``, times
  ``sqrt(P)`` with ``P = 365 · 86,400,000 / I_ms`` periods per year (crypto trades every
  day). None with fewer than 2 returns.
* **Correlation** = Pearson's r of ``(r^A_k, r^B_k)`` over the ``k`` where both are
  defined. None with fewer than 2 pairs or when either side does not move.

Closes are floats here (an analysis output); the candles themselves stay exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

from mmdata.candles.intervals import Interval

__all__ = [
    "METRICS",
    "YEAR_MS",
    "CloseSeries",
    "annualised_volatility",
    "correlation",
    "grid",
    "grid_closes",
    "log_returns",
    "parse_window",
]

YEAR_MS: Final = 365 * 86_400_000
METRICS: Final = ("correlation", "volatility")
_WINDOW: Final = re.compile(r"([1-9][0-9]{0,9})(ms|s|m|h|d|w)?")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
#: The longest window accepted (10 years).
MAX_WINDOW_MS: Final = 10 * YEAR_MS

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def parse_window(text: str) -> int:
    """``180d``, ``12h``, ``90m``, ``3600s``, ``500ms``, ``2w`` (or plain ms) → ms.

    ValueError with a message naming the accepted forms.
    """
    m = _WINDOW.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"window must be a number with a unit (ms s m h d w), e.g. 180d; got {text[:40]!r}")
    value = int(m.group(1)) * _UNIT_MS[m.group(2) or "ms"]
    if value > MAX_WINDOW_MS:
        raise ValueError("window must be at most 10 years (3650d)")
    return value


def grid(interval: Interval, now_ms: int, window_ms: int) -> Ints:
    """The ``n + 1`` candle opens of the window (see the module docstring)."""
    n = window_ms // interval.ms
    if n < 2:
        raise ValueError(f"window must span at least 2 intervals of {interval.name}")
    current = interval.floor(now_ms)
    return current - interval.ms * np.arange(n, -1, -1, dtype=np.int64)


def grid_closes(opens: Ints, closes: Floats, points: Ints) -> Floats:
    """``close(t)`` at each grid point: forward-filled from sparse candles (NaN before the first)."""
    idx = np.searchsorted(opens, points, side="right") - 1
    out = np.full(points.shape, np.nan, dtype=np.float64)
    ok = idx >= 0
    out[ok] = closes[idx[ok]]
    return out


def log_returns(closes: Floats) -> Floats:
    """``ln(c_k / c_{k-1})`` (NaN where either close is NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diff(np.log(closes))


def annualised_volatility(returns: Floats, interval: Interval) -> float | None:
    """Sample std (ddof=1) of the finite returns × sqrt(periods per year); None below 2 returns."""
    r = returns[np.isfinite(returns)]
    if r.size < 2:
        return None
    return float(np.std(r, ddof=1) * math.sqrt(YEAR_MS / interval.ms))


def correlation(a: Floats, b: Floats) -> float | None:
    """Pearson's r over the positions where both are finite; None when undefined."""
    both = np.isfinite(a) & np.isfinite(b)
    x, y = a[both], b[both]
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    # Plain sums, not np.dot: a threaded BLAS call stalls on a busy machine for nothing here.
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if den == 0.0:
        return None
    return max(-1.0, min(1.0, float((dx * dy).sum()) / den))


class CloseSeries:
    """Candle closes of one symbol at one interval as growable numpy arrays (sorted opens).

    :meth:`set` appends a new candle, replaces the running one, or (rarely: a late trade)
    inserts or replaces an older one.
    """

    def __init__(self, items: Iterable[tuple[int, float]] = ()) -> None:
        pairs = list(items)
        self._n = len(pairs)
        cap = max(1024, self._n * 2)
        self._opens = np.zeros(cap, dtype=np.int64)
        self._closes = np.zeros(cap, dtype=np.float64)
        if pairs:
            pairs.sort()
            self._opens[: self._n] = [p[0] for p in pairs]
            self._closes[: self._n] = [p[1] for p in pairs]

    def __len__(self) -> int:
        return self._n

    @property
    def opens(self) -> Ints:
        """Candle open times (a view: valid until the next :meth:`set`)."""
        return self._opens[: self._n]

    @property
    def closes(self) -> Floats:
        """Closes, aligned with :attr:`opens`."""
        return self._closes[: self._n]

    def set(self, open_ms: int, close: float) -> None:
        """The candle opening at ``open_ms`` now closes at ``close``."""
        n = self._n
        if n and self._opens[n - 1] == open_ms:
            self._closes[n - 1] = close
            return
        if n and self._opens[n - 1] > open_ms:
            i = int(np.searchsorted(self._opens[:n], open_ms))
            if self._opens[i] == open_ms:
                self._closes[i] = close
                return
            self._grow()
            self._opens[i + 1 : n + 1] = self._opens[i:n].copy()
            self._closes[i + 1 : n + 1] = self._closes[i:n].copy()
            self._opens[i], self._closes[i] = open_ms, close
            self._n += 1
            return
        self._grow()
        self._opens[n], self._closes[n] = open_ms, close
        self._n += 1

    def _grow(self) -> None:
        if self._n < self._opens.size:
            return
        self._opens = np.concatenate([self._opens, np.zeros(self._opens.size, dtype=np.int64)])
        self._closes = np.concatenate([self._closes, np.zeros(self._closes.size, dtype=np.float64)])

    def drop_before(self, open_ms: int) -> None:
        """Forget candles opening before ``open_ms`` except the newest of them (it still
        forward-fills the window's first grid point)."""
        i = int(np.searchsorted(self.opens, open_ms, side="right")) - 1
        if i <= 0:
            return
        n = self._n
        self._opens[: n - i] = self._opens[i:n].copy()
        self._closes[: n - i] = self._closes[i:n].copy()
        self._n = n - i

    def window_closes(self, interval: Interval, now_ms: int, window_ms: int) -> Floats:
        """``close(t_k)`` over the window's grid."""
        return grid_closes(self.opens, self.closes, grid(interval, now_ms, window_ms))
