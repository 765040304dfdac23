"""The trade feed behind the candle, metrics and stream servers: every recorded trade once,
in order, from history and live files (across rotation), or from the day files alone."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from mmdata.candles import INTERVALS
from mmdata.serve.market import Market, MarketConfig, Markets, TradeFeed, TradeRow
from tests.serve.conftest import gz_lines, recording, run, until


def _day_trades(stream_root: Path) -> list[int]:
    """recv_seq of every trade in the day files (flushed members)."""
    seqs: list[int] = []
    if not stream_root.is_dir():
        return seqs
    for day in sorted(p for p in stream_root.iterdir() if p.name[:1] == "2"):
        for path in day.glob("trades_ws_*.csv.gz"):
            seqs += [int(line.split(b",", 1)[0]) for line in gz_lines(path)[1:]]
    return seqs


@pytest.mark.parametrize("live", [True, False], ids=["live", "dayfiles"])
def test_feed_gets_every_trade_once_while_recording(tmp_path: Path, live: bool) -> None:
    async def go() -> tuple[list[int], list[int]]:
        data = tmp_path / "data"
        async with recording(data, "kraken", rate=3.0, live=live, live_rotate_s=0.5) as rec:
            await until(lambda: len(_day_trades(rec.root)) > 5, 20, "some trades on disk")
            markets = Markets(data, MarketConfig(poll_s=0.02))
            stream = markets.resolve("kraken", "BTC/USD")
            market = markets.get(stream)
            got: list[int] = []
            await asyncio.wait_for(market.ready.wait(), 20)
            start_seq = market.feed.last_seq
            market.listeners.add(lambda _m, rows, _c: got.extend(r.seq for r in rows))
            await asyncio.sleep(2.0)
            await rec.finish()
            await asyncio.sleep(0.8)  # the last flush reaches the day files
            want = _day_trades(rec.root)
            await until(lambda: market.feed.last_seq >= want[-1], 10, "the feed to catch up")
            await markets.close()
            history = [s for s in want if s <= start_seq]
            return history + got, want

    seen, want = run(go(), timeout=90)
    assert seen == want
    assert len(want) > 20


def test_market_candles_equal_day_file_candles(recorded_data: Path) -> None:
    """A finished day: the market's candles are those of its trades file."""

    async def go() -> Market:
        markets = Markets(recorded_data)
        market = markets.get(markets.resolve("binance", "BTC/USDT"))
        await asyncio.wait_for(market.ready.wait(), 20)
        await markets.close()
        return market

    market = run(go())
    assert market.feed.source == "live"
    trades = market.feed.last_seq
    assert trades > 0 and market.candles.trades > 0
    bars = market.candles.bars(INTERVALS["1m"], 10_000)
    assert sum(b.trades for b in bars) == market.candles.trades
    assert market.symbol == "BTCUSDT"
    assert market.feed.bad_rows == 0  # the CSV header is not a bad row


def test_catalog_and_resolve(recorded_data: Path) -> None:
    markets = Markets(recorded_data)
    listed = {(s.exchange, s.symbol, s.symbol_fs) for s in markets.catalog()}
    assert listed == {
        ("binance", "BTCUSDT", "BTCUSDT"),
        ("kraken", "BTC/USD", "BTCUSD"),
        ("bitfinex", "tBTCUSD", "tBTCUSD"),
    }
    assert markets.resolve("bitfinex", "BTC/USD").symbol_fs == "tBTCUSD"
    assert markets.resolve("KRAKEN", "btc/usd").symbol_fs == "BTCUSD"


def test_feed_counts_bad_rows_and_skips_repeats(tmp_path: Path) -> None:
    root = tmp_path / "kraken" / "BTCUSD"
    live = root / "live"
    live.mkdir(parents=True)
    good = (
        b'{"recv_seq":%d,"recv_time_ns":1,"event_time_ms":60000,'
        b'"trade_id":7,"price":"1.5","qty":"2","side":"buy"}\n'
    )
    (live / "live_trades.ndjson").write_bytes(
        good % 1 + b"not json\n" + good % 1 + good % 3 + b'{"recv_seq":4}\n'
    )
    feed = TradeFeed(root)
    rows = feed.start()
    assert [r.seq for r in rows] == [1, 3]
    assert rows[0] == TradeRow(1, 1, 60000, "7", "1.5", "2", "buy")
    assert feed.bad_rows == 2
    with open(live / "live_trades.ndjson", "ab") as f:
        f.write(good % 2 + good % 5)
    assert [r.seq for r in feed.poll()] == [5]
    feed.close()


# -- restarts, rollover and stale live files (synthetic day folders) ---------------------------------
def _csv(seq: int, recv_ns: int) -> bytes:
    return b"%d,%d,%d,%d,1.%d,0.5,buy\n" % (seq, recv_ns, recv_ns // 1_000_000, seq, seq)


def _append_day(root: Path, label: str, rows: list[tuple[int, int]]) -> Path:
    day = root / label
    day.mkdir(parents=True, exist_ok=True)
    path = day / f"trades_ws_X_{label}.csv.gz"
    head = b"" if path.exists() else b"recv_seq,recv_time_ns,event_time_ms,trade_id,price,qty,side\n"
    with open(path, "ab") as f:
        f.write(gzip.compress(head + b"".join(_csv(s, t) for s, t in rows)))
    return path


def test_a_restarted_recorder_numbering_from_1_again_loses_nothing(tmp_path: Path) -> None:
    """recv_seq starts again at 1 in a new day folder of a new run: its trades are new."""
    root = tmp_path / "binance" / "X"
    _append_day(root, "20260101", [(s, 1_000 + s) for s in range(1, 101)])
    _append_day(root, "20260102", [(s, 5_000 + s) for s in range(1, 51)])
    feed = TradeFeed(root)
    assert len(feed.start()) == 150
    # The same run goes on in the newest day, still numbering low.
    _append_day(root, "20260102", [(s, 5_000 + s) for s in range(51, 61)])
    assert [r.seq for r in feed.poll()] == list(range(51, 61))


def test_day_rollover_without_live_reads_the_old_days_last_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmdata.serve.market as market_mod

    clock = [100.0]
    monkeypatch.setattr(market_mod.time, "monotonic", lambda: clock[0])
    root = tmp_path / "binance" / "X"
    _append_day(root, "20260101", [(s, 1_000 + s) for s in range(1, 11)])
    feed = TradeFeed(root)
    assert len(feed.start()) == 10
    # The new day opens (overlap: rows 14.. go to both); the old day's last flush comes later.
    _append_day(root, "20260102", [(s, 1_000 + s) for s in range(14, 17)])
    clock[0] += 2
    assert feed.poll() == []
    _append_day(root, "20260101", [(s, 1_000 + s) for s in range(11, 17)])
    clock[0] += 2
    assert [r.seq for r in feed.poll()] == list(range(11, 17))
    clock[0] += 6  # past the grace: the feed moves to the new day and skips what it had
    _append_day(root, "20260102", [(s, 1_000 + s) for s in range(17, 19)])
    assert [r.seq for r in feed.poll()] == [17, 18]


def test_a_dead_live_file_does_not_freeze_the_feed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mmdata.serve.market as market_mod

    clock = [100.0]
    monkeypatch.setattr(market_mod.time, "monotonic", lambda: clock[0])
    root = tmp_path / "binance" / "X"
    (root / "live").mkdir(parents=True)
    (root / "live" / "live_trades.ndjson").write_bytes(
        b'{"recv_seq":1,"recv_time_ns":500,"event_time_ms":0,"trade_id":1,"price":"1","qty":"1","side":"buy"}\n'
    )
    _append_day(root, "20260101", [(s, 1_000 + s) for s in range(1, 4)])
    feed = TradeFeed(root)
    assert [r.seq for r in feed.start()] == [1, 2, 3]  # the live row is older than the history
    _append_day(root, "20260101", [(s, 1_000 + s) for s in range(4, 6)])
    assert feed.poll() == []  # live is still presumed current
    clock[0] += 6
    assert [r.seq for r in feed.poll()] == [4, 5]
    assert feed.source == "day"
    feed.close()


def test_a_cancelled_load_stops_and_says_so(tmp_path: Path) -> None:
    from mmdata.serve.market import LoadCancelled

    root = tmp_path / "binance" / "X"
    _append_day(root, "20260101", [(1, 1)])
    feed = TradeFeed(root)
    feed.cancel.set()
    with pytest.raises(LoadCancelled):
        feed.start(lambda rows: None)
