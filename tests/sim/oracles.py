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


class BruteMarketQueries:
    """The query half of the ``mmdata.sim.model.Market`` protocol, by brute force.

    Fake markets keep ``bids``/``asks`` (``{symbol: {price: qty}}``), ``uid``
    (``{symbol: book update id}``) and ``trade_log`` (``{symbol: trades by id}``), and add
    their own scripted ``step``.
    """

    bids: dict[str, dict[int, int]]
    asks: dict[str, dict[int, int]]
    uid: dict[str, int]
    trade_log: dict[str, list[SimTrade]]

    def book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return sorted(self.bids[symbol].items(), reverse=True), sorted(self.asks[symbol].items())

    def update_id(self, symbol: str) -> int:
        return self.uid[symbol]

    def trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[SimTrade]:
        out = [
            t
            for t in self.trade_log[symbol]
            if (start_ms is None or t.ts_ms >= start_ms)
            and (end_ms is None or t.ts_ms < end_ms)
            and (from_id is None or t.trade_id >= from_id)
        ]
        if newest_first:
            return out[::-1][:limit]  # newest first, as the protocol says: the simulator must re-sort
        return out[:limit]

    def candles(
        self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, *, limit: int = 1000
    ) -> list[SimCandle]:
        return brute_candles(self.trade_log[symbol], interval_ms, start_ms, end_ms, limit)
