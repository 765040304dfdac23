"""Test oracles for the simulator: the slowest, most obvious way to get the right answer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from mmdata.sim.model import SimCandle, SimTrade


def brute_candles(
    trades: Iterable[SimTrade],
    interval_ms: int,
    start_ms: int = -(2**63),
    end_ms: int = 2**63,
    limit: int | None = None,
) -> list[SimCandle]:
    """OHLCV of ``trades`` (in id order) per epoch-aligned bucket opening in ``[start_ms, end_ms)``."""
    buckets: dict[int, list[SimTrade]] = defaultdict(list)
    for t in trades:
        buckets[t.ts_ms - t.ts_ms % interval_ms].append(t)
    out = [
        SimCandle(
            open_ms=open_ms,
            interval_ms=interval_ms,
            open=ts[0].price,
            high=max(t.price for t in ts),
            low=min(t.price for t in ts),
            close=ts[-1].price,
            volume=sum(t.qty for t in ts),
            quote_volume=sum(t.price * t.qty for t in ts),
            trades=len(ts),
            first_trade_id=ts[0].trade_id,
            last_trade_id=ts[-1].trade_id,
        )
        for open_ms, ts in sorted(buckets.items())
        if start_ms <= open_ms < end_ms
    ]
    return out if limit is None else out[:limit]
