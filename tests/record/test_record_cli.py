"""``mmdata record`` end to end through the CLI against the simulator on loopback.

Every day folder written here is checked twice: by plain gzip tools (``gzip -t``,
``zcat``, Python's gzip) and by replaying it through a fresh sync engine
(:func:`mmdata.validate.day.validate_day`), which also proves that no book frame was
written while the book was not SYNCED and that sampled frames equal the replayed book.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from mmdata import exchanges
from mmdata.cli import app
from mmdata.validate.capture import validate_capture
from mmdata.validate.day import validate_day
from tests.conftest import BINANCE_4, BINANCE_BTCUSDT, BITFINEX_7, BITFINEX_VECTOR, KRAKEN_BOOK10
from tests.record.dayfiles import (
    csv_text_rows,
    day_dirs,
    details,
    events,
    gaps,
    ledger,
    ndjson_rows,
    zcat_ok,
)

runner = CliRunner()

SYMBOLS = {
    "binance": ("BTC/USDT", "ETH/USDT"),
    "kraken": ("BTC/USD", "ETH/USD"),
    "bitfinex": ("BTC/USD", "ETH/USD"),
}
FS = {"binance": ("BTCUSDT", "ETHUSDT"), "kraken": ("BTCUSD", "ETHUSD"), "bitfinex": ("tBTCUSD", "tETHUSD")}
VENUE_SYMBOL = {"binance": "BTCUSDT", "kraken": "BTC/USD", "bitfinex": "tBTCUSD"}


def record(tmp_path: Path, *args: str) -> dict:
    """Run ``mmdata record ... --json``; the summary object."""
    result = runner.invoke(
        app,
        [
            "record",
            *args,
            "--data-dir",
            str(tmp_path / "data"),
            "--log-dir",
            str(tmp_path / "logs"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def sim_record(tmp_path: Path, exchange: str, duration: float, *extra: str) -> dict:
    args = ["-e", exchange]
    for s in SYMBOLS[exchange]:
        args += ["-s", s]
    return record(tmp_path, *args, "--simulate", "--duration", str(duration), *extra)


def assert_replays_clean(day: Path) -> None:
    report = validate_day(day)
    assert report.ok, [p.as_dict() for p in report.problems]
    assert report.gaps == 0 and report.checksum_mismatches == 0
    assert report.diffs_applied > 0 and report.frames_checked > 0


# -- the contract, per venue ------------------------------------------------------------------------
@pytest.mark.parametrize("exchange", ["binance", "kraken", "bitfinex"])
def test_every_contract_file_exists_reads_with_gzip_and_replays_clean(tmp_path: Path, exchange: str) -> None:
    summary = sim_record(tmp_path, exchange, 4)
    days = day_dirs(tmp_path / "data", exchange)
    assert sorted(days) == sorted(FS[exchange])
    for fs, day in days.items():
        label = day.name
        files = [
            day / f"orderbook_ws_depth_{fs}_{label}.csv.gz",
            day / f"trades_ws_{fs}_{label}.csv.gz",
            day / f"events_{fs}_{label}.csv.gz",
            day / f"gaps_{fs}_{label}.csv.gz",
            day / "diffs" / f"depth_diffs_{fs}_{label}.ndjson.gz",
            day / "trades" / f"trades_ws_raw_{fs}_{label}.ndjson.gz",
        ]
        for path in files:
            assert path.is_file(), path
            zcat_ok(path)
        snapshots = sorted(p.name for p in (day / "snapshots").iterdir())
        assert any(n.endswith("_initial.csv") for n in snapshots)
        assert any(n.endswith("_initial.json") for n in snapshots)
        live = day.parent / "live"
        assert (live / "live_depth_diffs.ndjson").stat().st_size > 0
        assert (live / "live_trades.ndjson").is_file()
        logs = list((tmp_path / "logs" / "recorder" / exchange / fs).glob("*.log"))
        assert logs and logs[0].read_text()

        # The ledger tells the whole story, in order.
        rows = ledger(day)
        names = [r["event"] for r in rows]
        assert names[0] == "run_start" and names[-1] == "run_stop"
        states = [r["state"] for r in rows if r["event"] == "state_change"]
        assert states[:3] == ["SNAPSHOT", "SYNCING", "SYNCED"] or states[:2] == ["SNAPSHOT", "SYNCED"]
        assert states[-1] == "STOPPED"
        assert "ws_open" in names and "ws_close" in names
        (initial,) = [r for r in rows if r["event"] == "snapshot" and r["tag"] == "initial"]
        assert (day / initial["snapshot_file"]).is_file()
        assert gaps(day) == []

        assert_replays_clean(day)
        report = validate_day(day)
        if exchange != "binance":
            assert report.checksums_verified > 0
        info = summary["symbols"][
            next(k for k in summary["symbols"] if summary["symbols"][k]["symbol_fs"] == fs)
        ]
        assert info["gaps"] == info["mismatches"] == info["bad_messages"] == 0
        assert info["final_state"] == "STOPPED"


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_diff_rows_hold_the_wire_text_exactly(tmp_path: Path, exchange: str) -> None:
    """Normalized levels in each diff row are what the adapter reads from the row's raw frame."""
    sim_record(tmp_path, exchange, 3)
    day = day_dirs(tmp_path / "data", exchange)[FS[exchange][0]]
    adapter = exchanges.get(exchange)
    rows = ndjson_rows(next((day / "diffs").glob("*.ndjson.gz")))
    assert rows
    seqs = [r["recv_seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for row in rows:
        (diff,) = [e for e in adapter.parse(row["raw"]) if getattr(e, "symbol", None) == row["symbol"]]
        assert [list(x) for x in diff.bids] == row["bids"] and [list(x) for x in diff.asks] == row["asks"]
    trades = csv_text_rows(zcat_ok(next(day.glob("trades_ws_*.csv.gz"))))
    raw = ndjson_rows(next((day / "trades").glob("*.ndjson.gz")))
    assert [t["price"] for t in trades] == [r["price"] for r in raw]
    for t, r in zip(trades, raw, strict=True):
        assert t["price"] in r["raw"] and t["qty"] in r["raw"]


# -- faults, one at a time ----------------------------------------------------------------------------
# (exchange, faults, what the ledger must show on the faulted symbol)
BOOK_FAULTS = [
    ("binance", ["drop_diffs=0.15"], "gap"),
    ("binance", ["reorder_diffs=0.15"], "gap"),
    ("kraken", ["drop_diffs=0.05"], "checksum_mismatch"),
    ("kraken", ["corrupt_checksum_every=40"], "checksum_mismatch"),
    ("bitfinex", ["corrupt_checksum_every=40"], "checksum_mismatch"),
]


@pytest.mark.parametrize(("exchange", "faults", "kind"), BOOK_FAULTS)
def test_book_fault_resyncs_only_the_faulted_symbol(
    tmp_path: Path, exchange: str, faults: list[str], kind: str
) -> None:
    args: list[str] = ["--sim-fault-symbol", VENUE_SYMBOL[exchange]]
    for f in faults:
        args += ["--sim-fault", f]
    sim_record(tmp_path, exchange, 5, *args)
    days = day_dirs(tmp_path / "data", exchange)
    hit, clean = days[FS[exchange][0]], days[FS[exchange][1]]

    found = gaps(hit)
    assert found and {g["kind"] for g in found} == {kind}
    for g in found:
        assert g["recv_seq"].isdigit() and g["recv_time_ns"].isdigit()
    assert events(hit, kind) and events(hit, "resync_start")
    assert [r for r in events(hit, "snapshot") if r["tag"] == "resync_done"], "resynced from a new snapshot"
    states = [r["state"] for r in events(hit, "state_change")]
    assert "RESYNCING" in states and states[-2] == "SYNCED" and states[-1] == "STOPPED"

    # The other symbol never noticed.
    assert gaps(clean) == [] and not events(clean, "resync_start")
    assert_replays_clean(clean)

    # Replaying the faulted day finds exactly the recorder's gaps, and no frame written while not SYNCED.
    report = validate_day(hit)
    kinds = {p.kind for p in report.problems}
    assert kinds == {kind}, [p.as_dict() for p in report.problems]
    assert sorted(p.recv_seq for p in report.problems) == sorted(int(g["recv_seq"]) for g in found)
    assert report.frames_unsynced == 0 and report.frames_mismatched == 0 and report.frames_checked > 0


def test_bitfinex_dropped_frame_is_a_connection_sequence_break(tmp_path: Path) -> None:
    """SEQ_ALL is per connection: a lost frame could belong to any book, so all resync (documented)."""
    sim_record(tmp_path, "bitfinex", 4, "--sim-fault-symbol", "tBTCUSD", "--sim-fault", "drop_diffs=0.05")
    for day in day_dirs(tmp_path / "data", "bitfinex").values():
        assert events(day, "sequence_break")
        report = validate_day(day)
        assert report.frames_unsynced == 0 and report.frames_mismatched == 0
        states = [r["state"] for r in events(day, "state_change")]
        assert states[-2] == "SYNCED"


@pytest.mark.parametrize(
    ("exchange", "faults"),
    [
        ("binance", ["malformed_every=40"]),
        ("kraken", ["malformed_every=40"]),
        ("bitfinex", ["oversized_every=150"]),
    ],
)
def test_malformed_and_oversized_frames_are_bad_messages_and_recording_goes_on(
    tmp_path: Path, exchange: str, faults: list[str]
) -> None:
    args: list[str] = []
    for f in faults:
        args += ["--sim-fault", f]
    summary = sim_record(tmp_path, exchange, 4, *args)
    assert all(info["bad_messages"] > 0 for info in summary["symbols"].values())
    for day in day_dirs(tmp_path / "data", exchange).values():
        bad = events(day, "bad_message")
        assert bad and all(details(r)["length"] > 0 for r in bad)
        if "oversized" in faults[0]:
            assert max(details(r)["length"] for r in bad) > 8 * 1024 * 1024
        assert len({r["recv_seq"] for r in bad}) > 1, "recording went on between bad frames"
        report = validate_day(day)
        assert report.frames_unsynced == 0 and report.frames_mismatched == 0 and report.diffs_applied > 0


CONNECTION_FAULTS = [
    ("binance", ["disconnect_every_s=1.5"], [], "ws_close"),
    (
        "kraken",
        ["stall_every_s=1", "stall_s=3"],
        ["--ws-no-data-warn", "0.4", "--ws-no-data-reconnect", "1"],
        "no_data_warn",
    ),
    ("binance", ["venue_restart_after_s=1.5"], [], "venue_status"),
    ("bitfinex", ["venue_restart_after_s=1.5"], [], "venue_status"),
    ("bitfinex", ["maintenance_after_s=1", "maintenance_s=1"], [], "venue_status"),
    ("kraken", ["maintenance_after_s=1", "maintenance_s=1"], [], "venue_status"),
]


@pytest.mark.parametrize(("exchange", "faults", "extra", "event"), CONNECTION_FAULTS)
def test_connection_faults_reconnect_and_resync_every_book_on_it(
    tmp_path: Path, exchange: str, faults: list[str], extra: list[str], event: str
) -> None:
    args = list(extra)
    for f in faults:
        args += ["--sim-fault", f]
    summary = sim_record(tmp_path, exchange, 5, "--ws-backoff-base", "0.1", *args)
    assert summary["reconnects"] >= 1
    for day in day_dirs(tmp_path / "data", exchange).values():
        assert events(day, event)
        assert len(events(day, "ws_open")) >= 2
        assert [r for r in events(day, "snapshot") if r["tag"] == "resync_done"]
        states = [r["state"] for r in events(day, "state_change")]
        # A reconnect (CONNECTING again) followed by a book proven again. Not "SYNCED at the
        # end": a fault just before the stop may leave the last resync unfinished.
        again = states.index("CONNECTING", 1)
        assert "SYNCED" in states[again:], states
        assert_replays_clean(day)


@pytest.mark.parametrize("fault", ["rest_429_every=2", "rest_418_every=2", "rest_5xx_every=2"])
def test_binance_rest_errors_are_retried_with_retry_after(tmp_path: Path, fault: str) -> None:
    sim_record(
        tmp_path,
        "binance",
        5,
        "--sim-fault",
        fault,
        "--sim-fault",
        "retry_after_s=1",
        "--sim-fault",
        "drop_diffs=0.02",
    )
    days = day_dirs(tmp_path / "data", "binance")
    http_events = [r for day in days.values() for r in ledger(day) if r["event"].startswith("http_")]
    http_events += [r for day in days.values() for r in events(day, "rate_limited")]
    assert http_events, "the REST trouble is in the ledger"
    for day in days.values():
        assert [r for r in events(day, "snapshot")], "a snapshot got through in the end"
        report = validate_day(day)
        assert report.frames_unsynced == 0 and report.frames_mismatched == 0


# -- real captures through the simulator into the recorder ---------------------------------------------------
@pytest.mark.parametrize("name", [BINANCE_4, BINANCE_BTCUSDT, KRAKEN_BOOK10, BITFINEX_7, BITFINEX_VECTOR])
def test_real_capture_replayed_into_the_recorder_reproduces_validate(
    real_capture, tmp_path: Path, name: str
) -> None:
    path = real_capture(name)
    summary = record(tmp_path, "--replay", str(path))
    reference = validate_capture(path)
    assert set(summary["symbols"]) == set(reference.symbols)
    exchange = reference.exchange
    adapter = exchanges.get(exchange)
    for symbol, ref in reference.symbols.items():
        day_dir = next((tmp_path / "data" / exchange / adapter.symbol_fs(symbol)).glob("2*"))
        report = validate_day(day_dir)
        assert report.ok or (ref.diffs_applied == 0 and report.problems[0].kind == "never_synced")
        assert report.diffs_applied == ref.diffs_applied, symbol
        assert report.checksums_verified == ref.checksums_verified, symbol
        assert report.gaps == ref.gaps == 0
        assert report.trades == ref.trades, symbol
        assert summary["symbols"][symbol]["gaps"] == 0


# -- bad options -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "coinbase", "-s", "BTC/USD"], "unknown exchange"),
        (["-e", "kraken"], "no symbol"),
        (["-e", "kraken", "-s", "BTC/USD", "--window-tz", "Mars/Olympus"], "Mars/Olympus"),
        (["-e", "kraken", "-s", "BTC/USD", "--window-start", "25:00"], "25:00"),
        (["-e", "kraken", "-s", "BTC/USD", "--book-depth", "7"], "10, 25, 100, 500, 1000"),
        (["-e", "kraken", "-s", "BTC/USD", "--sim-fault", "drop_diffs=0.1"], "--simulate"),
        (["-e", "kraken", "-s", "BTC/USD", "--simulate", "--sim-fault", "explode=1"], "NAME=VALUE"),
        (["-e", "kraken", "-s", "BTC/USD", "--duration", "-1"], "duration"),
        (["--replay", "/nonexistent/capture.jsonl.gz"], "not a file"),
    ],
)
def test_bad_options_get_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["record", *args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_summary_json_is_one_object(tmp_path: Path) -> None:
    summary = sim_record(tmp_path, "kraken", 2)
    assert orjson.loads(orjson.dumps(summary))["exchange"] == "kraken"
    assert summary["connections"] == 1 and summary["frames"] > 0
    assert set(summary["symbols"]) == {"BTC/USD", "ETH/USD"}


def test_book_frames_can_be_sampled_and_the_day_still_validates(tmp_path: Path) -> None:
    summary = record(
        tmp_path, "-e", "kraken", "-s", "BTC/USD", "--simulate", "--rate", "50", "--duration", "3",
        "--book-frame-interval-ms", "200",
    )  # fmt: skip
    counts = summary["symbols"]["BTC/USD"]
    assert 0 < counts["book_frames"] < counts["diffs"]
    (day,) = day_dirs(tmp_path / "data", "kraken").values()
    (frames_path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    times = [int(r["recv_time_ns"]) for r in csv_text_rows(zcat_ok(frames_path))]
    assert all(b - a >= 200_000_000 for a, b in itertools.pairwise(times))
    assert_replays_clean(day)
