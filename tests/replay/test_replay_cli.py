"""``mmdata replay <day-dir> --at | --every`` through the CLI, checked against the book frames
the recorder wrote and against :meth:`mmdata.replay.Day.book_at`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.replay import open_day
from mmdata.replay.output import level_columns
from tests.record.dayfiles import csv_rows
from tests.recorded_days import VENUES, only_day

runner = CliRunner()


def day_of(data: Path, exchange: str) -> Path:
    fs = next(f for e, _s, f in VENUES if e == exchange)
    return only_day(data, exchange, fs)


@pytest.mark.parametrize("exchange", [v[0] for v in VENUES])
def test_at_a_book_frame_time_gives_that_frame(recorded_data: Path, exchange: str, tmp_path: Path) -> None:
    day = day_of(recorded_data, exchange)
    (frames_path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    frames = csv_rows(frames_path)
    times = [int(f["recv_time_ns"]) for f in frames]
    # A frame whose receive time no other frame shares: the book "as of" it is that frame.
    frame = next(f for f in frames[len(frames) // 2 :] if times.count(int(f["recv_time_ns"])) == 1)
    out = tmp_path / "at.jsonl"
    result = runner.invoke(
        app, ["replay", str(day), "--at", frame["recv_time_ns"], "-n", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["state"] == "SYNCED" and row["time_ns"] == int(frame["recv_time_ns"])
    for col in level_columns(3):
        assert row[col] == frame[col], col


def test_at_prints_the_book_as_a_table(recorded_data: Path) -> None:
    day = day_of(recorded_data, "kraken")
    (frames_path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    last_frame = csv_rows(frames_path)[-1]
    view = open_day(day).book_at(int(last_frame["recv_time_ns"]), levels=2)
    assert view.synced
    result = runner.invoke(app, ["replay", str(day), "--at", str(view.time_ns), "-n", "2"])
    assert result.exit_code == 0, result.output
    assert view.bids[0][0] in result.output and view.asks[0][0] in result.output
    assert "spread" in result.output
    # After the recorder stopped there is no book to show, and the table says why.
    stopped = runner.invoke(app, ["replay", str(day), "--at", str(10**19 - 1), "-n", "2"])
    assert stopped.exit_code == 0 and "STOPPED" in stopped.output and "not proven" in stopped.output


def test_every_as_csv_on_stdout_is_a_grid_of_replayed_books(recorded_data: Path) -> None:
    day = day_of(recorded_data, "binance")
    result = runner.invoke(app, ["replay", str(day), "--every", "250ms", "-n", "4"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) >= 4
    assert list(rows[0])[:4] == ["time", "time_ns", "recv_seq", "state"]
    grid = [int(r["time_ns"]) for r in rows]
    assert all(t % 250_000_000 == 0 for t in grid) and grid == sorted(set(grid))
    opened = open_day(day)
    for r in rows[1::3]:
        view = opened.book_at(int(r["time_ns"]), levels=4)
        assert r["state"] == view.state and int(r["recv_seq"]) == view.recv_seq
        assert r == {k: str(v) for k, v in view.row(4).items()}


def test_every_to_parquet_keeps_text_and_floats(recorded_data: Path, tmp_path: Path) -> None:
    day = day_of(recorded_data, "bitfinex")
    out = tmp_path / "books.parquet"
    result = runner.invoke(
        app, ["replay", str(day), "--every", "1s", "-n", "5", "-o", str(out), "--synced-only"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows >= 1 and set(table.column("state").to_pylist()) == {"SYNCED"}
    for row in table.to_pylist():
        for col in level_columns(5):
            text = row[f"{col}_text"]
            assert (row[col] is None and text is None) or row[col] == float(text)
    assert not list(tmp_path.glob("*.partial")), "no half-written file left behind"


def test_jsonl_and_bounds(recorded_data: Path) -> None:
    day = day_of(recorded_data, "kraken")
    first = open_day(day).book_at(0)  # before anything: unknown book
    assert first.state != "SYNCED" and not first.bids
    full = runner.invoke(app, ["replay", str(day), "--every", "100ms", "-f", "jsonl", "-n", "1"])
    rows = [json.loads(line) for line in full.stdout.splitlines()]
    lo, hi = rows[1]["time_ns"], rows[-2]["time_ns"]
    bounded = runner.invoke(
        app,
        [
            "replay",
            str(day),
            "--every",
            "100ms",
            "-f",
            "jsonl",
            "-n",
            "1",
            "--start",
            str(lo),
            "--end",
            str(hi),
        ],
    )
    assert bounded.exit_code == 0
    inner = [json.loads(line) for line in bounded.stdout.splitlines()]
    assert inner == rows[1:-1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --at TIME or --every INTERVAL"),
        (["--at", "10:00", "--every", "1s"], "exactly one of"),
        (["--every", "0s"], "interval must be positive"),
        (["--every", "soon"], "not an interval"),
        (["--at", "yesterday"], "not a time"),
        (["--every", "1s", "-f", "parquet"], "give --out"),
        (["--every", "1s", "-f", "xlsx"], "unknown format"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(recorded_data: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["replay", str(day_of(recorded_data, "kraken")), *args])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_not_a_day_folder_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["replay", str(tmp_path), "--at", "0"])
    assert result.exit_code == 2 and "not a recorded day folder" in result.output
