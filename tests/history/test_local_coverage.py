"""``mmdata.history.local``: recorded trades, connected time and complete candles of day folders."""

from __future__ import annotations

import gzip
from pathlib import Path

from mmdata.history.local import (
    ARRIVAL_MARGIN_MS,
    GAP_MARGIN_MS,
    SUBSCRIBE_MARGIN_MS,
    local_candles,
    local_coverage,
    local_trades,
)
from mmdata.record.files import EVENTS_HEADER
from tests.history.synthday import LATENCY_MS, Row, write_days

MIN = 60_000
DAY = 86_400_000
T0 = 1_795_000_000_000 // DAY * DAY + 10 * 3_600_000  # 10:00 UTC


def rows(start: int, end: int, every: int = 7_000) -> list[Row]:
    return [
        Row(t, 1000 + i, f"{100 + i % 5}.5", "0.25", "buy" if i % 2 else "sell")
        for i, t in enumerate(range(start, end, every))
    ]


def test_reconnects_split_coverage_and_only_whole_minutes_are_complete(tmp_path: Path) -> None:
    spans = [(T0, T0 + 10 * MIN), (T0 + 12 * MIN + 30_000, T0 + 20 * MIN)]
    trades = [r for r in rows(T0, T0 + 20 * MIN) if any(s <= r.ts_ms + LATENCY_MS < e for s, e in spans)]
    write_days(tmp_path, "binance", "BTCUSDT", trades, spans)
    # a trade subscription sent after ws_open misses the round trip: coverage starts a moment later
    opened = [(s + SUBSCRIBE_MARGIN_MS, e) for s, e in spans]
    assert local_coverage(tmp_path, "binance", "BTCUSDT", T0 - MIN, T0 + 30 * MIN) == opened
    candles, complete = local_candles(tmp_path, "binance", "BTCUSDT", "1m", T0, T0 + 20 * MIN)
    # minute 0 starts before the subscription, minute 9 ends at the close (no arrival margin
    # left), minute 12 starts before the reopen
    assert complete == {T0 + i * MIN for i in [*range(1, 9), *range(13, 19)]}
    assert {c.open_time_ms for c in candles} >= complete
    assert ARRIVAL_MARGIN_MS > LATENCY_MS


def test_a_sequence_gap_cuts_the_minutes_around_it(tmp_path: Path) -> None:
    gap = T0 + 5 * MIN + 30_000
    write_days(tmp_path, "kraken", "BTCUSD", rows(T0, T0 + 10 * MIN), [(T0, T0 + 10 * MIN)], gaps_at=[gap])
    cov = local_coverage(tmp_path, "kraken", "BTCUSD", T0, T0 + 10 * MIN)
    assert cov == [(T0 + SUBSCRIBE_MARGIN_MS, gap - GAP_MARGIN_MS), (gap + GAP_MARGIN_MS, T0 + 10 * MIN)]
    _, complete = local_candles(tmp_path, "kraken", "BTCUSD", "1m", T0, T0 + 10 * MIN)
    assert T0 + 5 * MIN not in complete and T0 + 4 * MIN in complete and T0 + 6 * MIN in complete


def test_days_join_and_a_trade_restated_in_both_counts_once(tmp_path: Path) -> None:
    midnight = T0 // DAY * DAY + DAY
    trades = rows(midnight - 5 * MIN, midnight + 5 * MIN)
    folders = write_days(tmp_path, "bitfinex", "tBTCUSD", trades, [(midnight - 6 * MIN, midnight + 6 * MIN)])
    assert [f.name for f in folders] == sorted(f.name for f in folders) and len(folders) == 2
    # the new day restates the old day's last trade (the recorder's day overlap)
    last = trades[[r.ts_ms + LATENCY_MS < midnight for r in trades].index(False) - 1]
    path = folders[1] / f"trades_ws_tBTCUSD_{folders[1].name}.csv.gz"
    text = gzip.decompress(path.read_bytes()).decode().splitlines()
    text.insert(
        1,
        f"0,{(last.ts_ms + LATENCY_MS) * 1_000_000},{last.ts_ms},{last.trade_id},"
        f"{last.price},{last.qty},{last.side}",
    )
    path.write_bytes(gzip.compress(("\n".join(text) + "\n").encode()))
    got = local_trades(tmp_path, "bitfinex", "tBTCUSD", 0, 2**62)
    assert [t.trade_id for t in got] == [r.trade_id for r in trades]
    _, complete = local_candles(tmp_path, "bitfinex", "tBTCUSD", "1m", midnight - 5 * MIN, midnight + 5 * MIN)
    assert midnight - MIN in complete and midnight in complete  # one coverage range across the folders


def test_a_crash_ends_coverage_at_the_last_row_and_a_torn_tail_loses_only_its_rows(tmp_path: Path) -> None:
    trades = rows(T0, T0 + 5 * MIN)
    (day,) = write_days(tmp_path, "binance", "BTCUSDT", trades, [(T0, T0 + 5 * MIN)])
    ledger = day / f"events_BTCUSDT_{day.name}.csv.gz"
    lines = [
        EVENTS_HEADER,
        f"1,{(T0 - 5) * 1_000_000},r,1,run_start,,CONNECTING,,,",
        f"2,{T0 * 1_000_000},r,2,ws_open,,,,,",
    ]
    ledger.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))  # no ws_close, no run_stop
    last_recv = trades[-1].ts_ms + LATENCY_MS
    assert local_coverage(tmp_path, "binance", "BTCUSDT", 0, 2**62) == [(T0 + SUBSCRIBE_MARGIN_MS, last_recv)]
    # a second member cut in half (a crash mid-flush): the first member's rows survive
    path = day / f"trades_ws_BTCUSDT_{day.name}.csv.gz"
    torn = gzip.compress(b"9999,1,2,3,4,5,buy\n" * 50)
    path.write_bytes(path.read_bytes() + torn[: len(torn) // 2])
    assert [t.trade_id for t in local_trades(tmp_path, "binance", "BTCUSDT", 0, 2**62)] == [
        r.trade_id for r in trades
    ]


def test_no_recording_means_no_trades_no_coverage(tmp_path: Path) -> None:
    assert local_trades(tmp_path, "binance", "BTCUSDT", 0, 2**62) == []
    assert local_coverage(tmp_path, "binance", "BTCUSDT", 0, 2**62) == []
    assert local_candles(tmp_path, "binance", "BTCUSDT", "1m", T0, T0 + MIN) == ([], set())
