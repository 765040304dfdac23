"""The three live streams against the in-process simulator, for each venue.

Oracles: the simulator's REST history (candles, trades) and the venue's own book
verification (sequence ids, checksums) counted by the sync engines.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from mmdata.book.sync import SyncState
from mmdata.live import BookStream, BookView, CandleStream, TradeStream
from mmdata.sim import FaultPlan
from mmdata.types import Candle, Trade
from tests.live.helpers import (
    FAST,
    SPEED,
    VENUES,
    assert_candles_equal_rest,
    assert_trades_equal_rest,
    gather,
    wait_for,
)
from tests.live.simthread import SimThread


@pytest.mark.parametrize(("exchange", "symbol"), VENUES)
def test_candles_equal_rest_candles(exchange: str, symbol: str) -> None:
    with SimThread(exchange, [symbol], speed=SPEED) as sim:
        started = sim.now_ms()
        with CandleStream(exchange, url=sim.url, ws_config=FAST) as stream:
            stream.subscribe(symbol, "1m")

            def two_live_closes(got: list[Candle]) -> bool:
                return sum(c.closed and c.open_time_ms >= started - started % 60_000 for c in got) >= 2

            candles = gather(stream.get_candle_updates, two_live_closes, timeout=8)
        assert all((c.exchange, c.symbol, c.interval) == (exchange, symbol, "1m") for c in candles)
        closed = [c for c in candles if c.closed]
        counts = Counter(c.open_time_ms for c in closed)
        assert max(counts.values()) == 1  # a closed candle is delivered once
        # Nothing about an interval arrives after its close, and closes come in time order.
        for i, c in enumerate(candles):
            if c.closed:
                assert all(later.open_time_ms > c.open_time_ms for later in candles[i + 1 :])
        assert_candles_equal_rest(sim, symbol, closed)


@pytest.mark.parametrize(("exchange", "symbol"), VENUES)
def test_trades_equal_rest_trades(exchange: str, symbol: str) -> None:
    with SimThread(exchange, [symbol], speed=SPEED, rate=3) as sim:
        with TradeStream(exchange, url=sim.url, ws_config=FAST) as stream:
            stream.subscribe(symbol)
            trades = gather(stream.get_trade_updates, lambda got: len(got) >= 20, timeout=8)
        assert all(isinstance(t, Trade) and t.symbol == symbol and not t.snapshot for t in trades)
        ids = [int(t.trade_id) for t in trades]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # every live trade, once, in order
        assert_trades_equal_rest(sim, symbol, trades)


def _assert_view_consistent(view: BookView, exchange: str, symbol: str, levels: int) -> None:
    assert (view.exchange, view.symbol, view.state) == (exchange, symbol, SyncState.SYNCED)
    assert len(view.bids) == len(view.asks) == levels
    bids = [float(p) for p, _ in view.bids]
    asks = [float(p) for p, _ in view.asks]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < asks[0]  # never crossed
    assert all(float(q) > 0 for _, q in view.bids + view.asks)


@pytest.mark.parametrize(("exchange", "symbol"), VENUES)
def test_book_reaches_synced_and_stays_verified(exchange: str, symbol: str) -> None:
    with SimThread(exchange, [symbol], rate=3) as sim:
        with BookStream(exchange, url=sim.url, rest_url=sim.rest_url, levels=5, ws_config=FAST) as stream:
            stream.subscribe(symbol)
            views = gather(stream.get_book_updates, lambda got: len(got) >= 20, timeout=8)
            engine = stream.sync_stats(symbol)
            latest = stream.view(symbol)
        for view in views:
            _assert_view_consistent(view, exchange, symbol, 5)
        assert latest is not None and latest.state is SyncState.SYNCED
        assert engine is not None and engine.gaps == engine.checksum_mismatches == 0
        assert engine.crossed_states == 0 and engine.diffs_applied >= 19
        if exchange != "binance":
            assert engine.checksums_verified >= 10  # every view came from a checksum-verified book
        assert stream.stats.resyncs == 0 and stream.stats.errors == 0


@pytest.mark.parametrize(
    ("exchange", "symbol", "faults"),
    [
        ("binance", "BTCUSDT", FaultPlan(seed=3, drop_diffs=0.15)),
        ("kraken", "BTC/USD", FaultPlan(seed=3, corrupt_checksum_every=25)),
        ("bitfinex", "tBTCUSD", FaultPlan(seed=3, corrupt_checksum_every=25)),
    ],
)
def test_book_resyncs_after_gap_or_mismatch(exchange: str, symbol: str, faults: FaultPlan) -> None:
    with SimThread(exchange, [symbol], rate=4, faults=faults) as sim:
        with BookStream(exchange, url=sim.url, rest_url=sim.rest_url, levels=3, ws_config=FAST) as stream:
            stream.subscribe(symbol)
            wait_for(lambda: stream.stats.resyncs >= 2, 8, "two resyncs")
            stream.get_book_updates(0)
            after = gather(stream.get_book_updates, lambda got: len(got) >= 3, timeout=6)
            engine = stream.sync_stats(symbol)
        for view in after:  # a resynced book is whole again
            _assert_view_consistent(view, exchange, symbol, 3)
        assert engine is not None and engine.gaps + engine.checksum_mismatches >= 2
        assert stream.stats.reconnects == 0  # one symbol resyncs on its own, the connection stays


@pytest.mark.parametrize(("exchange", "symbol"), VENUES)
def test_forced_disconnects_reconnect_resubscribe_and_keep_delivering(exchange: str, symbol: str) -> None:
    faults = FaultPlan(disconnect_every_s=0.8)
    with SimThread(exchange, [symbol], speed=SPEED, rate=3, faults=faults) as sim:
        candles = CandleStream(exchange, url=sim.url, ws_config=FAST)
        trades = TradeStream(exchange, url=sim.url, ws_config=FAST)
        books = BookStream(exchange, url=sim.url, rest_url=sim.rest_url, levels=3, ws_config=FAST)
        candles.subscribe(symbol, "1m")
        trades.subscribe(symbol)
        books.subscribe(symbol)
        with candles, trades, books:
            streams = (candles, trades, books)
            wait_for(lambda: all(s.stats.reconnects >= 2 for s in streams), 8, "two reconnects each")
            for stream in streams:
                stream._take(0)  # what came before the reconnects
            reconnects = [s.stats.reconnects for s in streams]
            assert candles.get_candle_updates(3)
            assert trades.get_trade_updates(3)
            views = books.get_book_updates(3)
            assert views and all(v.state is SyncState.SYNCED for v in views)
        for stream, before in zip(streams, reconnects, strict=True):
            stats = stream.stats
            assert stats.connects == stats.reconnects + 1 >= before + 1
            assert not stream.connected and not stream.running


@pytest.mark.parametrize(("exchange", "symbol"), VENUES[1:])
def test_closed_candles_not_repeated_by_snapshots_after_reconnect(exchange: str, symbol: str) -> None:
    # Kraken and Bitfinex resend recent candles on every subscribe; those already closed are dropped.
    with SimThread(exchange, [symbol], speed=SPEED, faults=FaultPlan(disconnect_every_s=0.6)) as sim:
        with CandleStream(exchange, url=sim.url, ws_config=FAST) as stream:
            stream.subscribe(symbol, "1m")
            wait_for(lambda: stream.stats.reconnects >= 2, 8, "two reconnects")
            time.sleep(0.1)
            candles = stream.get_candle_updates(0)
        closed = Counter(c.open_time_ms for c in candles if c.closed)
        assert len(closed) >= 3 and max(closed.values()) == 1
