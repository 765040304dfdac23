"""`mmdata export parquet`: hive layout, row counts and exact text against the gzip sources (read here
with gzip + csv/json, not mmdata's readers), dataset/DuckDB reading, idempotent re-runs, damaged input."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.errors import StoreError
from mmdata.replay.export import MANIFEST_NAME, TABLES, ExportSummary, export_parquet
from tests.record.dayfiles import csv_rows, ndjson_rows
from tests.recorded_days import VENUES, only_day

runner = CliRunner()

#: Where each table's source file sits in a day folder (glob relative to the folder).
SOURCES = {
    "trades": "trades_ws_*.csv.gz",
    "book_frames": "orderbook_ws_depth_*.csv.gz",
    "diffs": "diffs/depth_diffs_*.ndjson.gz",
    "events": "events_*.csv.gz",
    "gaps": "gaps_*.csv.gz",
}
DAYS = list(VENUES)
BY_VENUE = pytest.mark.parametrize("venue", DAYS, ids=[v[0] for v in DAYS])


# -- independent readers of the recorded files ---------------------------------------------------


def source_file(day: Path, table: str) -> Path:
    (path,) = day.glob(SOURCES[table])
    return path


def source_rows(day: Path, table: str) -> list[dict[str, Any]]:
    path = source_file(day, table)
    return ndjson_rows(path) if table == "diffs" else csv_rows(path)


def partition(out: Path, table: str, exchange: str, fs: str, day: Path) -> Path:
    label = day.name
    date = f"{label[:4]}-{label[4:6]}-{label[6:]}"
    return out / table / f"exchange={exchange}" / f"symbol={fs}" / f"date={date}" / "part-0.parquet"


def read_part(path: Path) -> dict[str, list[Any]]:
    # ParquetFile: the file alone, without partition columns guessed from its folders.
    return pq.ParquetFile(path).read().to_pydict()


def snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def exported(recorded_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportSummary]:
    """The recorded data root exported once (read-only for the tests using it)."""
    out = tmp_path_factory.mktemp("export") / "parquet"
    return out, export_parquet(recorded_data, out)


# -- layout, counts, exact text --------------------------------------------------------------------


def test_summary_counts_every_partition(recorded_data: Path, exported: tuple[Path, ExportSummary]) -> None:
    out, summary = exported
    assert summary.ok and not summary.warnings and not summary.errors and not summary.absent
    assert summary.days == 3
    assert list(summary.tables) == list(TABLES)
    for table, counts in summary.tables.items():
        expected = sum(len(source_rows(only_day(recorded_data, e, fs), table)) for e, _s, fs in DAYS)
        assert (counts.written, counts.skipped, counts.absent, counts.failed) == (3, 0, 0, 0), table
        assert counts.rows == expected, table
    doc = json.loads(json.dumps(summary.as_json()))
    assert doc["ok"] is True and doc["tables"]["trades"]["written"] == 3
    assert (out / MANIFEST_NAME).is_file()


@pytest.mark.parametrize("table", TABLES)
@BY_VENUE
def test_rows_per_day_match_the_source(
    recorded_data: Path, exported: tuple[Path, ExportSummary], table: str, venue: tuple[str, str, str]
) -> None:
    exchange, symbol, fs = venue
    out, _ = exported
    day = only_day(recorded_data, exchange, fs)
    path = partition(out, table, exchange, fs, day)
    data = read_part(path)
    assert len(data["recv_seq"]) == len(source_rows(day, table))
    # partition columns live only in the path; the venue spelling is kept in venue_symbol
    assert not {"exchange", "symbol", "date"} & set(data)
    assert set(data["venue_symbol"]) <= {symbol}
    assert not list(path.parent.glob(".*")), "no temporary file left behind"


@BY_VENUE
def test_trades_text_is_exact(
    recorded_data: Path, exported: tuple[Path, ExportSummary], venue: tuple[str, str, str]
) -> None:
    exchange, symbol, fs = venue
    out, _ = exported
    day = only_day(recorded_data, exchange, fs)
    rows = source_rows(day, "trades")
    data = read_part(partition(out, "trades", exchange, fs, day))
    assert rows, "the simulator records trades"
    assert data["price_text"] == [r["price"] for r in rows]
    assert data["qty_text"] == [r["qty"] for r in rows]
    assert data["side"] == [r["side"] for r in rows]
    assert data["recv_seq"] == [int(r["recv_seq"]) for r in rows]
    assert data["recv_time_ns"] == [int(r["recv_time_ns"]) for r in rows]
    assert data["price"] == [float(r["price"]) for r in rows]
    assert data["venue_symbol"] == [symbol] * len(rows)
    # timestamps are stored in microseconds (Spark-readable); recv_time_ns stays exact
    stamps = [int(t.timestamp() * 1_000_000) for t in data["recv_time"]]
    assert all(abs(s - int(r["recv_time_ns"]) // 1000) <= 1 for s, r in zip(stamps, rows, strict=True))


@BY_VENUE
def test_book_frame_text_is_exact(
    recorded_data: Path, exported: tuple[Path, ExportSummary], venue: tuple[str, str, str]
) -> None:
    exchange, symbol, fs = venue
    out, _ = exported
    day = only_day(recorded_data, exchange, fs)
    rows = source_rows(day, "book_frames")
    data = read_part(partition(out, "book_frames", exchange, fs, day))
    levels = [c for c in rows[0] if c.startswith(("bid_", "ask_"))]
    assert levels and "bid_px_1" in levels
    for column in levels:
        assert data[f"{column}_text"] == [r[column] or None for r in rows], column
        assert data[column] == [float(r[column]) if r[column] else None for r in rows], column
    assert data["venue_symbol"] == [symbol] * len(rows)


@BY_VENUE
def test_diffs_raw_is_exact(
    recorded_data: Path, exported: tuple[Path, ExportSummary], venue: tuple[str, str, str]
) -> None:
    exchange, symbol, fs = venue
    out, _ = exported
    day = only_day(recorded_data, exchange, fs)
    rows = source_rows(day, "diffs")
    data = read_part(partition(out, "diffs", exchange, fs, day))
    assert data["raw"] == [r["raw"] for r in rows]
    assert data["bids"] == [r["bids"] for r in rows]
    assert data["asks"] == [r["asks"] for r in rows]
    assert data["kind"] == [r["kind"] for r in rows]
    assert data["venue_symbol"] == [r["symbol"] for r in rows] == [symbol] * len(rows)


@BY_VENUE
def test_ledger_text_is_exact(
    recorded_data: Path, exported: tuple[Path, ExportSummary], venue: tuple[str, str, str]
) -> None:
    exchange, symbol, fs = venue
    out, _ = exported
    day = only_day(recorded_data, exchange, fs)
    rows = source_rows(day, "events")
    data = read_part(partition(out, "events", exchange, fs, day))
    assert data["event"] == [r["event"] for r in rows]
    assert data["details"] == [r["details"] for r in rows]
    assert data["reason"] == [r["reason"] for r in rows]
    assert data["event_id"] == [int(r["event_id"]) for r in rows]
    assert data["venue_symbol"] == [symbol] * len(rows)


# -- reading the export back -------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_pyarrow_dataset_reads_every_day(
    recorded_data: Path, exported: tuple[Path, ExportSummary], table: str
) -> None:
    out, _ = exported
    got = ds.dataset(out / table, partitioning="hive").to_table()
    assert {"exchange", "symbol", "date"} <= set(got.column_names)
    expected: dict[tuple[str, str, str], int] = {}
    for exchange, _symbol, fs in DAYS:
        day = only_day(recorded_data, exchange, fs)
        label = day.name
        expected[(exchange, fs, f"{label[:4]}-{label[4:6]}-{label[6:]}")] = len(source_rows(day, table))
    keys = zip(got["exchange"].to_pylist(), got["symbol"].to_pylist(), got["date"].to_pylist(), strict=True)
    counts: dict[tuple[str, str, str], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    assert counts == {k: v for k, v in expected.items() if v}
    assert got.num_rows == sum(expected.values())


def test_duckdb_reads_hive_partitions(recorded_data: Path, exported: tuple[Path, ExportSummary]) -> None:
    duckdb = pytest.importorskip("duckdb")
    out, _ = exported
    pattern = (out / "trades").as_posix() + "/*/*/*/*.parquet"
    rows = duckdb.sql(
        f"SELECT exchange, count(*) FROM read_parquet('{pattern}', hive_partitioning=true) GROUP BY 1"
    ).fetchall()
    expected = {e: len(source_rows(only_day(recorded_data, e, fs), "trades")) for e, _s, fs in DAYS}
    assert dict(rows) == expected


# -- idempotence ---------------------------------------------------------------------------------------


def test_rerun_skips_unchanged_partitions_and_force_rewrites_the_same_content(
    recorded_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "parquet"
    first = export_parquet(recorded_data, out)
    before = snapshot(out)
    second = export_parquet(recorded_data, out)
    assert second.ok
    for counts in second.tables.values():
        assert (counts.written, counts.skipped, counts.rows) == (0, 3, 0)
    assert snapshot(out) == before, "an unchanged source leaves every file (and the manifest) untouched"

    forced = export_parquet(recorded_data, out, force=True)
    for name, counts in forced.tables.items():
        assert (counts.written, counts.skipped, counts.rows) == (3, 0, first.tables[name].rows)
    after = snapshot(out)
    assert after.keys() == before.keys()
    for rel, (data, _mtime) in before.items():
        if rel.endswith(".parquet"):
            again = pq.ParquetFile(out / rel).read()
            assert again.equals(pq.read_table(pa.BufferReader(data))), rel


def test_changed_source_is_exported_again(day_copy: Callable[[str], Path], tmp_path: Path) -> None:
    day = day_copy("kraken")
    out = tmp_path / "parquet"
    export_parquet(day, out)
    trades = source_file(day, "trades")
    stat = trades.stat()
    os.utime(trades, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = export_parquet(day, out)
    assert (again.tables["trades"].written, again.tables["trades"].skipped) == (1, 0)
    assert all((c.written, c.skipped) == (0, 1) for n, c in again.tables.items() if n != "trades")


def test_progress_is_reported_per_partition(recorded_data: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    export_parquet(
        recorded_data,
        tmp_path / "parquet",
        tables=["trades", "gaps"],
        progress=lambda done, total, label: calls.append((done, total, label)),
    )
    assert [c[0] for c in calls] == list(range(7))
    assert {c[1] for c in calls} == {6}
    label = only_day(recorded_data, "binance", "BTCUSDT").name
    assert calls[0][2] == f"trades binance/BTCUSDT/{label[:4]}-{label[4:6]}-{label[6:]}"
    assert calls[-1][:2] == (6, 6)


# -- what a day may hold --------------------------------------------------------------------------------


def test_single_day_folder(recorded_data: Path, tmp_path: Path) -> None:
    day = only_day(recorded_data, "kraken", "BTCUSD")
    out = tmp_path / "parquet"
    summary = export_parquet(day, out, tables=["trades", "diffs"])
    assert summary.days == 1 and summary.ok
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "diffs", "trades"]
    for table in ("trades", "diffs"):
        assert [p.name for p in (out / table).iterdir()] == ["exchange=kraken"]
        data = read_part(partition(out, table, "kraken", "BTCUSD", day))
        assert set(data["venue_symbol"]) == {"BTC/USD"}


def test_day_without_diffs_is_reported_not_an_error(day_copy: Callable[[str], Path], tmp_path: Path) -> None:
    day = day_copy("binance")
    shutil.rmtree(day / "diffs")
    out = tmp_path / "parquet"
    summary = export_parquet(day, out)
    assert summary.ok
    assert summary.tables["diffs"].absent == 1 and summary.tables["diffs"].written == 0
    assert [(n.table, n.day) for n in summary.absent] == [("diffs", str(day))]
    assert not (out / "diffs").exists()
    assert all(c.written == 1 for n, c in summary.tables.items() if n != "diffs")


def test_damaged_file_exports_its_complete_rows(day_copy: Callable[[str], Path], tmp_path: Path) -> None:
    day = day_copy("bitfinex")
    trades = source_file(day, "trades")
    complete = csv_rows(trades)
    trades.write_bytes(trades.read_bytes() + b"\x1f\x8b\x08torn")  # a crash mid-member
    out = tmp_path / "parquet"
    summary = export_parquet(day, out)
    assert not summary.ok and not summary.errors
    (note,) = summary.warnings
    assert note.table == "trades" and trades.name in note.message
    data = read_part(partition(out, "trades", "bitfinex", "tBTCUSD", day))
    assert data["price_text"] == [r["price"] for r in complete]
    # unchanged on the next run: skipped, yet still reported (the export stays incomplete)
    again = export_parquet(day, out)
    assert again.tables["trades"].skipped == 1
    assert [n.message for n in again.warnings] == [note.message]


def test_unreadable_file_is_an_error_and_the_rest_is_exported(
    day_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    day = day_copy("kraken")
    source_file(day, "gaps").write_bytes(b"\x1f\x8b\x08 not gzip at all")
    out = tmp_path / "parquet"
    summary = export_parquet(day, out)
    assert summary.tables["gaps"].failed == 1
    assert [n.table for n in summary.errors] == ["gaps"]
    assert not (out / "gaps").exists()
    assert all(c.written == 1 for n, c in summary.tables.items() if n != "gaps")


def test_two_folders_of_the_same_day_export_once(day_copy: Callable[[str], Path], tmp_path: Path) -> None:
    day = day_copy("kraken")
    twin = tmp_path / "data" / "kraken-copy" / "BTCUSD" / day.name
    shutil.copytree(day, twin)
    summary = export_parquet(tmp_path / "data", tmp_path / "parquet", tables=["trades"])
    assert summary.tables["trades"].written == 1 and summary.tables["trades"].failed == 1
    (note,) = summary.errors
    assert str(day) in note.message or str(twin) in note.message


def test_bad_arguments(recorded_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table 'book'"):
        export_parquet(recorded_data, tmp_path / "out", tables=["book"])
    with pytest.raises(ValueError, match="no table to export"):
        export_parquet(recorded_data, tmp_path / "out", tables=[])
    with pytest.raises(StoreError, match="no recorded day folder"):
        export_parquet(tmp_path, tmp_path / "out")
    with pytest.raises(StoreError, match="not a folder"):
        export_parquet(tmp_path / "missing", tmp_path / "out")


# -- command line ------------------------------------------------------------------------------------------


def test_cli_json(recorded_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    result = runner.invoke(app, ["export", "parquet", str(recorded_data), str(out), "--json"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout
    doc = json.loads(lines[0])
    assert doc["ok"] is True and doc["days"] == 3
    assert list(doc["tables"]) == list(TABLES)
    assert all(t["written"] == 3 for t in doc["tables"].values())

    again = runner.invoke(app, ["export", "parquet", str(recorded_data), str(out), "--json", "--force"])
    assert again.exit_code == 0
    assert all(t["written"] == 3 for t in json.loads(again.stdout)["tables"].values())


def test_cli_tables_option_and_human_summary(recorded_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "parquet"
    result = runner.invoke(
        app, ["export", "parquet", str(recorded_data), str(out), "--tables", "trades, diffs"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["diffs", "trades"]
    assert "trades" in result.stdout and "OK" in result.stdout
    assert "book_frames" not in result.stdout


def test_cli_damaged_day_exits_1(day_copy: Callable[[str], Path], tmp_path: Path) -> None:
    day = day_copy("binance")
    trades = source_file(day, "trades")
    trades.write_bytes(trades.read_bytes() + b"\x1f\x8b\x08torn")
    result = runner.invoke(app, ["export", "parquet", str(day), str(tmp_path / "parquet")])
    assert result.exit_code == 1, result.output
    assert "damaged" in result.stdout and "PROBLEMS" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tables", "trades,book"], "unknown table 'book'"),
        (["--tables", ","], "names no table"),
    ],
)
def test_cli_bad_tables_exit_2(recorded_data: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", "parquet", str(recorded_data), str(tmp_path / "out"), *args])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_source_without_day_folders_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for source in (empty, tmp_path / "missing"):
        result = runner.invoke(app, ["export", "parquet", str(source), str(tmp_path / "out"), "--json"])
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("mmdata: error:"), result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_out_that_is_a_file_exits_2(recorded_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    result = runner.invoke(app, ["export", "parquet", str(recorded_data), str(out)])
    assert result.exit_code == 2
    assert "cannot create" in result.stderr


def test_cli_help_has_an_example() -> None:
    result = runner.invoke(app, ["export", "parquet", "--help"])
    assert result.exit_code == 0
    assert "mmdata export parquet data parquet" in result.stdout
