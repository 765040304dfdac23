"""``mmdata.history.local``: trades, coverage and candles of day folders written by the recorder's
own writers (:class:`mmdata.record.files.DayFiles`): a reconnect, a sequence gap, a day boundary
with the recorder's 15-minute overlap, a crash (no ``run_stop``), a restart, a torn gzip tail."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from mmdata.candles.combine import GapRange, combine_candles, find_gaps
from mmdata.errors import ConfigError, StoreError
from mmdata.history.local import (
    ARRIVAL_MARGIN_MS,
    GAP_MARGIN_MS,
    SUBSCRIBE_MARGIN_MS,
    local_candles,
    local_coverage,
    local_trades,
)
from mmdata.record.config import RecorderConfig
from mmdata.record.files import DayFiles
from mmdata.store.layout import DayLayout
from mmdata.store.writers import csv_row
from mmdata.types import Candle, Trade

S = 1_000
MIN = 60 * S
HOUR = 60 * MIN
BASE = int(datetime(2026, 11, 20, 22, tzinfo=UTC).timestamp() * 1000)  # 23:00 in Berlin
LATENCY = 40
# Berlin-winter trading windows of the two days: 23:00 UTC the day before .. 23:15 UTC.
WINDOWS = {
    "20261120": ("2026-11-19T23:00:00+00:00", "2026-11-20T23:15:00+00:00"),
    "20261121": ("2026-11-20T23:00:00+00:00", "2026-11-21T23:15:00+00:00"),
}


@dataclass(frozen=True)
class Tick:
    """One exchange trade (what the venue's REST history would list)."""

    ts_ms: int
    trade_id: int
    price: str
    qty: str
    side: str


def market(start: int, end: int, every: int = 5 * S) -> list[Tick]:
    """A trade every ``every`` ms at ``+2.5 s`` offsets, exact 8-decimal text like Binance."""
    out = []
    for k, t in enumerate(range(start + 2_500, end, every)):
        price = Decimal(60000) + Decimal((k * 37) % 500) / 100
        qty = Decimal(k % 9 + 1) / 1000
        out.append(Tick(t, 1000 + k, f"{price:.8f}", f"{qty:.8f}", "buy" if k % 3 else "sell"))
    return out


class Recorder:
    """Writes day folders like the recorder's SymbolRecorder: one ``recv_seq`` and ``event_id``
    counter per symbol, every row into every open day, through the real DayFiles writers."""

    def __init__(self, data: Path, run_id: str, exchange: str = "binance", symbol: str = "BTCUSDT") -> None:
        self.data, self.run_id, self.exchange, self.symbol = data, run_id, exchange, symbol
        self.fs = symbol.replace("/", "")
        self.config = RecorderConfig(exchange, (symbol,), data_dir=data)
        self.days: dict[str, DayFiles] = {}
        self.seq = 0
        self.event_id = 0

    def open_day(self, label: str, event: str, t_ms: int, state: str) -> None:
        day = datetime.strptime(label, "%Y%m%d").date()
        files = DayFiles(DayLayout(self.data, self.exchange, self.fs, day), self.config, clock=lambda: 0.0)
        self.seq = max(self.seq, files.resume_seq)
        self.event_id = max(self.event_id, files.resume_event_id)
        self.days[label] = files
        start, end = WINDOWS[label]
        info = {"resumed": files.resumed, "exchange": self.exchange, "symbol": self.symbol}
        self._row(files, event, t_ms, state=state, details={**info, "window_start": start, "window_end": end})

    def _row(self, files: DayFiles, event: str, t_ms: int, **kw: Any) -> int:
        self.event_id += 1
        files.event_row(
            self.event_id,
            t_ms * 1_000_000 + 123,
            self.run_id,
            self.seq,
            event,
            "",
            kw.get("state", ""),
            kw.get("reason", ""),
            "",
            kw.get("details"),
        )
        return self.event_id

    def event(self, event: str, t_ms: int, **kw: Any) -> None:
        for files in self.days.values():
            self._row(files, event, t_ms, **kw)

    def gap(self, t_ms: int) -> None:
        for files in self.days.values():
            eid = self._row(
                files, "gap", t_ms, reason="update ids skipped", details={"expected": 5, "got": 9}
            )
            files.gap_row([eid, t_ms * 1_000_000, self.run_id, self.seq, "gap", 5, 9, "update ids skipped"])

    def trade(self, tick: Tick) -> None:
        self.seq += 1
        row: list[str | int] = [
            self.seq,
            (tick.ts_ms + LATENCY) * 1_000_000,
            tick.ts_ms,
            tick.trade_id,
            tick.price,
            tick.qty,
        ]
        for files in self.days.values():
            files.trades.write(csv_row([*row, tick.side]))

    def book_frame(self, t_ms: int) -> None:
        self.seq += 1
        for files in self.days.values():
            files.book.write(csv_row([self.seq, t_ms * 1_000_000, t_ms, "", "", *["60000", "1"] * 40]))

    def close_day(self, label: str, event: str, t_ms: int) -> None:
        files = self.days.pop(label)
        self._row(files, event, t_ms, state="SYNCED")
        files.close()

    def crash(self) -> None:
        """Killed: what was flushed stays, nothing more is written (no run_stop)."""
        for files in self.days.values():
            files.close()
        self.days.clear()


def feed(rec: Recorder, ticks: Iterable[Tick], lo: int, hi: int) -> list[Tick]:
    """Record the ticks received in ``[lo, hi)`` (receive = exchange time + latency)."""
    got = [t for t in ticks if lo <= t.ts_ms + LATENCY < hi]
    for t in got:
        rec.trade(t)
    return got


@dataclass
class Scenario:
    data: Path
    ticks: list[Tick]  # everything the exchange traded
    recorded: list[Tick]  # what the recorder wrote, in receive order


def record_scenario(data: Path) -> Scenario:
    """Two hours from 22:00 UTC (day 20261120) into day 20261121, all times from BASE:

    0 s run A starts, ws_open · 630 s ws_close (connection lost) · 740 s ws_open ·
    1230 s sequence gap (a trade just before it is lost) · 3600 s day 20261121 opens
    (window_start, connected) · 4500 s day 20261120 closes (window_end) · 5405 s the trades
    file's last flush · 5409.5 s last book frame, then killed (no run_stop) · 6000 s run B
    starts (resumed), ws_open · 6600 s run_stop.
    """
    ticks = market(BASE, BASE + 2 * HOUR)
    recorded: list[Tick] = []
    a = Recorder(data, "20261120T215959Z-100")
    a.open_day("20261120", "run_start", BASE - S, "CONNECTING")
    a.event("ws_open", BASE, details={"url": "wss://x", "connection": 1, "epoch": 1})
    recorded += feed(a, ticks, BASE, BASE + 630 * S)
    a.event("ws_close", BASE + 630 * S, reason="connection lost", details={"code": 1006})
    a.event("state_change", BASE + 630 * S, state="CONNECTING", reason="connection lost")
    a.event("ws_open", BASE + 740 * S, details={"url": "wss://x", "connection": 1, "epoch": 3})
    lost = BASE + 1227_500  # the trade the gap lost
    recorded += feed(a, [t for t in ticks if t.ts_ms != lost], BASE + 740 * S, BASE + 1230 * S)
    a.gap(BASE + 1230 * S)
    recorded += feed(a, ticks, BASE + 1230 * S, BASE + 3600 * S)
    a.open_day("20261121", "window_start", BASE + 3600 * S, "SYNCED")
    recorded += feed(a, ticks, BASE + 3600 * S, BASE + 4500 * S)  # the overlap: rows in both days
    a.close_day("20261120", "window_end", BASE + 4500 * S)
    recorded += feed(a, ticks, BASE + 4500 * S, BASE + 5405 * S)
    a.book_frame(BASE + 5409_500)
    a.crash()
    b = Recorder(data, "20261121T000000Z-200")
    b.open_day("20261121", "run_start", BASE + 6000 * S - 10, "CONNECTING")
    b.event("ws_open", BASE + 6000 * S, details={"url": "wss://x", "connection": 1, "epoch": 1})
    recorded += feed(b, ticks, BASE + 6000 * S, BASE + 6600 * S)
    b.close_day("20261121", "run_stop", BASE + 6600 * S)
    return Scenario(data, ticks, recorded)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return record_scenario(tmp_path / "data")


def as_trades(ticks: Iterable[Tick], symbol: str = "BTCUSDT") -> list[Trade]:
    return [Trade("binance", symbol, t.ts_ms, t.price, t.qty, t.side, t.trade_id) for t in ticks]  # type: ignore[arg-type]


def candles_of(ticks: Iterable[Tick], step: int, name: str = "1m") -> list[Candle]:
    """Candles by exchange time, open = first received, close = last (independent of the aggregator)."""
    groups: dict[int, list[Tick]] = {}
    for t in ticks:
        groups.setdefault(t.ts_ms // step * step, []).append(t)
    out = []
    for start in sorted(groups):
        g = groups[start]
        out.append(
            Candle(
                "binance",
                "BTCUSDT",
                name,
                start,
                g[0].price,
                max(g, key=lambda t: Decimal(t.price)).price,
                min(g, key=lambda t: Decimal(t.price)).price,
                g[-1].price,
                str(sum(Decimal(t.qty) for t in g)),
                str(sum(Decimal(t.qty) * Decimal(t.price) for t in g)),
                len(g),
                True,
            )
        )
    return out


def minutes(*spans: range) -> set[int]:
    return {BASE + m * MIN for span in spans for m in span}


# --------------------------------------------------------------------------------------- trades


def test_local_trades_are_each_recorded_trade_once_in_receive_order(scenario: Scenario) -> None:
    day1, day2 = sorted((scenario.data / "binance" / "BTCUSDT").iterdir())
    ids1 = {
        r.split(",")[3]
        for r in gzip.decompress((day1 / "trades_ws_BTCUSDT_20261120.csv.gz").read_bytes())
        .decode()
        .splitlines()[1:]
    }
    ids2 = {
        r.split(",")[3]
        for r in gzip.decompress((day2 / "trades_ws_BTCUSDT_20261121.csv.gz").read_bytes())
        .decode()
        .splitlines()[1:]
    }
    assert len(ids1 & ids2) == 180  # the 15-minute overlap is in both days' files
    got = local_trades(scenario.data, "binance", "BTCUSDT", BASE - HOUR, BASE + 3 * HOUR)
    assert got == as_trades(scenario.recorded)
    assert len({t.trade_id for t in got}) == len(got)
    assert got[0].price == "60000.00000000"  # exact text, as recorded
    # the range is on exchange time, end exclusive; any spelling of the symbol
    window = [t for t in scenario.recorded if BASE + 3600 * S <= t.ts_ms < BASE + 3660 * S]
    assert local_trades(scenario.data, "binance", "BTC/USDT", BASE + 3600 * S, BASE + 3660 * S) == as_trades(
        window
    )
    assert local_trades(scenario.data, "binance", "BTCUSDT", BASE + 3600 * S, BASE + 3600 * S) == []


def test_a_torn_last_gzip_member_loses_only_its_own_rows(scenario: Scenario) -> None:
    path = scenario.data / "binance" / "BTCUSDT" / "20261121" / "trades_ws_BTCUSDT_20261121.csv.gz"
    member = gzip.compress(
        b"".join(f"9{i},1,{BASE + 6590 * S},9{i},1.0,1.0,buy\n".encode() for i in range(200))
    )
    with path.open("ab") as fh:
        fh.write(member[: len(member) // 2])  # a crash in the middle of a flush
    assert local_trades(scenario.data, "binance", "BTCUSDT", 0, 2**62) == as_trades(scenario.recorded)


# ------------------------------------------------------------------------------------- coverage


def test_coverage_follows_the_ledger_across_reconnect_gap_day_boundary_crash_and_restart(
    scenario: Scenario,
) -> None:
    assert (SUBSCRIBE_MARGIN_MS, GAP_MARGIN_MS, ARRIVAL_MARGIN_MS) == (1_000, 5_000, 2_000)
    cov = local_coverage(scenario.data, "binance", "BTCUSDT", BASE - HOUR, BASE + 3 * HOUR)
    assert cov == [
        (BASE + 1 * S, BASE + 630 * S),  # ws_open + subscribe margin .. ws_close
        (BASE + 741 * S, BASE + 1225 * S),  # reconnected .. the gap minus its margin
        # through the day boundary (window_end of the old day ends nothing) to the crash: the last
        # row of any file (a book frame, after the trades file's last row)
        (BASE + 1235 * S, BASE + 5409_500),
        (BASE + 6001 * S, BASE + 6600 * S),  # the restarted run, to its run_stop
    ]
    # clipped to the range asked for
    assert local_coverage(scenario.data, "binance", "BTCUSDT", BASE + 5 * MIN, BASE + 11 * MIN) == [
        (BASE + 5 * MIN, BASE + 630 * S)
    ]
    # the margins are arguments
    bare = local_coverage(
        scenario.data,
        "binance",
        "BTCUSDT",
        BASE - HOUR,
        BASE + 3 * HOUR,
        gap_margin_ms=0,
        subscribe_margin_ms=0,
    )
    assert bare == [
        (BASE, BASE + 630 * S),
        (BASE + 740 * S, BASE + 5409_500),
        (BASE + 6000 * S, BASE + 6600 * S),
    ]


def test_a_day_opened_while_connected_is_covered_without_the_previous_folder(
    scenario: Scenario, tmp_path: Path
) -> None:
    alone = tmp_path / "alone"
    shutil.copytree(
        scenario.data / "binance" / "BTCUSDT" / "20261121", alone / "binance" / "BTCUSDT" / "20261121"
    )
    assert local_coverage(alone, "binance", "BTCUSDT", 0, 2**62) == [
        (BASE + 3600 * S, BASE + 5409_500),  # from its window_start (state SYNCED)
        (BASE + 6001 * S, BASE + 6600 * S),
    ]
    mine = local_trades(alone, "binance", "BTCUSDT", 0, 2**62)
    assert mine == as_trades(t for t in scenario.recorded if t.ts_ms + LATENCY >= BASE + 3600 * S)


# -------------------------------------------------------------------------------------- candles


def test_local_candles_are_the_recorded_trades_aggregated_and_complete_where_fully_seen(
    scenario: Scenario,
) -> None:
    candles, complete = local_candles(scenario.data, "binance", "BTCUSDT", "1m", BASE, BASE + 2 * HOUR)
    assert candles == candles_of(scenario.recorded, MIN)
    assert complete == minutes(range(1, 10), range(13, 20), range(21, 90), range(101, 109))
    five, complete5 = local_candles(scenario.data, "binance", "BTCUSDT", "5m", BASE, BASE + 2 * HOUR)
    assert five == candles_of(scenario.recorded, 5 * MIN, "5m")
    assert complete5 == minutes(range(5, 6), range(15, 16), range(25, 90, 5))
    # an interval not over yet is not closed; the margins are arguments
    running, _ = local_candles(
        scenario.data, "binance", "BTCUSDT", "1h", BASE, BASE + HOUR, now_ms=BASE + 30 * MIN
    )
    assert [c.closed for c in running] == [False]
    _, late = local_candles(
        scenario.data, "binance", "BTCUSDT", "1m", BASE, BASE + 20 * MIN, arrival_margin_ms=31 * S
    )
    assert BASE + 9 * MIN not in late and BASE + 8 * MIN in late  # minute 9 ends 30 s before the close


def test_combine_and_gaps_against_the_exchange_series(scenario: Scenario) -> None:
    local, complete = local_candles(scenario.data, "binance", "BTCUSDT", "1m", BASE, BASE + 2 * HOUR)
    remote = candles_of(scenario.ticks, MIN)
    result = combine_candles(local, complete, remote, "1m", BASE, BASE + 2 * HOUR)
    # no complete minute lost a trade (the lost ones are in incomplete minutes): no mismatch
    assert result.mismatches == ()
    assert len(result.rows) == 120
    assert {r.open_time_ms for r in result.rows if r.source == "local"} == complete
    assert all(r.source == "exchange" for r in result.rows if r.open_time_ms not in complete)
    cov = local_coverage(scenario.data, "binance", "BTCUSDT", BASE, BASE + 2 * HOUR)
    gaps = find_gaps(local, complete, remote, "1m", BASE, BASE + 2 * HOUR, coverage=cov)
    assert [((g.start_ms - BASE) // MIN, (g.end_ms - BASE) // MIN, g.reason) for g in gaps] == [
        (0, 1, "partial"),  # subscribe margin
        (10, 11, "partial"),  # connection lost at 10:30
        (11, 12, "not recorded"),
        (12, 13, "partial"),  # reconnected at 12:20
        (20, 21, "partial"),  # the sequence gap
        (90, 91, "partial"),  # the crash
        (91, 100, "not recorded"),
        (100, 101, "partial"),  # the restart
        (109, 110, "partial"),  # run_stop 0 s after the minute: no arrival margin
        (110, 120, "not recorded"),
    ]


def test_gaps_find_a_removed_hour_of_trades_exactly(tmp_path: Path) -> None:
    ticks = market(BASE, BASE + 3 * HOUR, every=7 * S)
    hole = [t for t in ticks if BASE + HOUR <= t.ts_ms < BASE + 2 * HOUR]

    def record(data: Path, kept: list[Tick]) -> Path:
        rec = Recorder(data, "r1")
        rec.open_day("20261120", "run_start", BASE - 2 * MIN, "CONNECTING")
        rec.event("ws_open", BASE - MIN)
        feed(rec, kept, BASE - MIN, BASE + 3 * HOUR + MIN)
        rec.close_day("20261120", "run_stop", BASE + 3 * HOUR + MIN)
        return data

    remote = candles_of(ticks, MIN)
    intact = record(tmp_path / "intact", ticks)
    local, complete = local_candles(intact, "binance", "BTCUSDT", "1m", BASE, BASE + 3 * HOUR)
    assert complete == minutes(range(180))
    assert find_gaps(local, complete, remote, "1m", BASE, BASE + 3 * HOUR) == []
    holed = record(tmp_path / "holed", [t for t in ticks if t not in hole])
    local, complete = local_candles(holed, "binance", "BTCUSDT", "1m", BASE, BASE + 3 * HOUR)
    assert find_gaps(local, complete, remote, "1m", BASE, BASE + 3 * HOUR) == [
        GapRange(BASE + HOUR, BASE + 2 * HOUR, 60, len(hole), "no local trades")
    ]


# ---------------------------------------------------------------------------------- odd inputs


def test_other_venues_spellings_and_nothing_recorded(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, "r1", exchange="bitfinex", symbol="tBTCUSD")
    rec.open_day("20261120", "run_start", BASE, "CONNECTING")
    rec.event("ws_open", BASE)
    feed(rec, market(BASE, BASE + 2 * MIN), BASE, BASE + 2 * MIN)
    rec.crash()
    got = local_trades(tmp_path, "bitfinex", "BTC/USD", 0, 2**62)
    assert len(got) == 24 and {t.symbol for t in got} == {"tBTCUSD"}
    assert local_trades(tmp_path, "kraken", "BTC/USD", 0, 2**62) == []
    assert local_coverage(tmp_path, "kraken", "BTC/USD", 0, 2**62) == []
    assert local_candles(tmp_path, "kraken", "BTC/USD", "1m", BASE, BASE + MIN) == ([], set())
    with pytest.raises(StoreError, match="not a folder"):
        local_trades(tmp_path / "nope", "binance", "BTCUSDT", 0, 2**62)
    with pytest.raises(ConfigError, match="unknown interval"):
        local_candles(tmp_path, "binance", "BTCUSDT", "2m", BASE, BASE + MIN)
