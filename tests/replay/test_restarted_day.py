"""A day recorded by two runs: between them no book is known, and none is reported."""

from __future__ import annotations

import time
from pathlib import Path

import mmdata
from mmdata.validate.day import validate_day
from tests.record.dayfiles import csv_rows
from tests.recorded_days import record_days


def test_between_two_runs_the_book_is_stopped_not_stale(tmp_path: Path) -> None:
    record_days(tmp_path, 2.0)
    time.sleep(0.5)  # a visible pause between the runs
    record_days(tmp_path, 2.0, "--seed", "2")
    for exchange, fs in (("binance", "BTCUSDT"), ("kraken", "BTCUSD"), ("bitfinex", "tBTCUSD")):
        (path,) = [p for p in (tmp_path / "data" / exchange / fs).iterdir() if p.name.isdigit()]
        ledger = csv_rows(next(path.glob("events_*.csv.gz")))
        stops = [int(r["recv_time_ns"]) for r in ledger if r["event"] == "run_stop"]
        starts = [int(r["recv_time_ns"]) for r in ledger if r["event"] == "run_start"]
        assert len(stops) == 2 and len(starts) == 2, exchange
        day = mmdata.open_day(path)
        gap = day.book_at(stops[0] + 1, levels=5)
        assert gap.state == "STOPPED" and not gap.bids and not gap.asks, exchange
        assert gap.as_of_ns == stops[0]
        # Before the first stop the first run's book was known ...
        frames = csv_rows(next(path.glob("orderbook_ws_depth_*.csv.gz")))
        first_run = [f for f in frames if int(f["recv_time_ns"]) < stops[0]]
        second_run = [f for f in frames if int(f["recv_time_ns"]) > starts[1]]
        assert first_run and second_run, exchange
        before = day.book_at(int(first_run[-1]["recv_time_ns"]), levels=5)
        assert before.synced and before.bids[0] == (first_run[-1]["bid_px_1"], first_run[-1]["bid_qty_1"])
        # ... and the second run's book is known again once it is proven.
        after = day.book_at(int(second_run[-1]["recv_time_ns"]), levels=5)
        assert after.synced and after.asks[0] == (second_run[-1]["ask_px_1"], second_run[-1]["ask_qty_1"])
        grid = [v for v in day.iter_books(every="100ms", levels=1) if stops[0] < v.time_ns < starts[1]]
        assert grid and all(v.state == "STOPPED" for v in grid), exchange
        assert validate_day(path).ok, exchange
