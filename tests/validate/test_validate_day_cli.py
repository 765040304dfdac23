"""``mmdata validate <day-dir | data root>`` on day folders made by the recorder, then damaged.

Each damage is crafted on a private copy of a recorded day and must be located: a removed
Binance diff (gap, by recv_seq and ids), a changed Kraken checksum (mismatch), a torn last
gzip member (truncated: exit 2), a garbage row (unreadable: exit 1), a repeated trade.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.validate.capture import COUNTERS
from mmdata.validate.day import validate_day
from tests.recorded_days import VENUES

runner = CliRunner()


def run(*args: str) -> tuple[int, Any, str]:
    result = runner.invoke(app, ["validate", *args])
    out = result.stdout.strip()
    doc = json.loads(out.splitlines()[-1]) if "--json" in args and out else None
    return result.exit_code, doc, result.output


def read_lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.read().splitlines()


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0))


def one(day: Path, pattern: str) -> Path:
    (path,) = day.glob(pattern)
    return path


@pytest.mark.parametrize("exchange", [v[0] for v in VENUES])
def test_recorded_days_validate_clean_with_the_capture_report_shape(
    recorded_data: Path, exchange: str
) -> None:
    fs = next(f for e, _s, f in VENUES if e == exchange)
    code, doc, _ = run(str(next((recorded_data / exchange / fs).iterdir())), "--json")
    assert code == 0, doc
    assert doc["ok"] is True and doc["exchange"] == exchange
    # The capture report's keys, plus the integrity section.
    assert {"ok", "exchange", "symbols", "bad_messages", "problems", "integrity"} <= set(doc)
    (counts,) = doc["symbols"].values()
    assert set(COUNTERS) <= set(counts) and counts["diffs_applied"] > 0 and counts["trades"] > 0
    if exchange != "binance":
        assert counts["checksums_verified"] > 0
    integrity = doc["integrity"]
    assert integrity["ok"] and integrity["frames_checked"] > 0 and integrity["frames_unsynced"] == 0
    names = {f["file"].split("_")[0] for f in integrity["files"]}
    assert {"events", "orderbook", "trades", "diffs/depth", "trades/trades"} <= names
    assert all(f["ok"] and f["rows"] >= 0 for f in integrity["files"])


def test_a_data_root_validates_every_day_below_it(recorded_data: Path) -> None:
    code, doc, _ = run(str(recorded_data), "--json")
    assert code == 0
    assert doc["ok"] is True and len(doc["days"]) == len(VENUES) and doc["unreadable"] == []
    code, _, output = run(str(recorded_data))
    assert code == 0 and "3/3 days ok" in output


def test_a_removed_binance_diff_is_a_gap_located_by_recv_seq_and_ids(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("binance")
    path = one(day, "diffs/*.ndjson.gz")
    lines = read_lines(path)
    assert len(lines) >= 6, "the recording is too short to cut a diff out of its middle"
    cut = len(lines) // 2
    removed, after = json.loads(lines[cut]), json.loads(lines[cut + 1])
    write_lines(path, lines[:cut] + lines[cut + 1 :])
    code, doc, _ = run(str(day), "--json")
    assert code == 1 and doc["ok"] is False
    gaps = [p for p in doc["problems"] if p["kind"] == "gap"]
    assert gaps and gaps[0]["recv_seq"] == after["recv_seq"]
    assert gaps[0]["expected"] == removed["first_id"] and gaps[0]["got"] == after["first_id"]
    assert doc["symbols"]["BTCUSDT"]["gaps"] >= 1


def test_a_changed_kraken_checksum_is_a_mismatch_at_that_row(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("kraken")
    path = one(day, "diffs/*.ndjson.gz")
    lines = read_lines(path)
    rows = [json.loads(line) for line in lines]
    k = next(i for i in range(len(rows) // 2, len(rows)) if rows[i]["checksum"] is not None)
    rows[k]["checksum"] = (rows[k]["checksum"] + 1) % 2**32
    lines[k] = json.dumps(rows[k], separators=(",", ":")).encode()
    write_lines(path, lines)
    code, doc, _ = run(str(day), "--json")
    assert code == 1
    mismatches = [p for p in doc["problems"] if p["kind"] == "checksum_mismatch"]
    assert (
        mismatches[0]["recv_seq"] == rows[k]["recv_seq"] and mismatches[0]["expected"] == rows[k]["checksum"]
    )
    report = validate_day(day)
    assert report.checksum_mismatches == 1 and not report.ok


def test_a_torn_last_member_is_truncated_and_exits_2(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("bitfinex")
    path = one(day, "trades_ws_*.csv.gz")
    rows_before = len(read_lines(path)) - 1
    member = gzip.compress(b"1,2,3,4,5,6,buy\n" * 100, mtime=0)
    with open(path, "ab") as f:
        f.write(member[: len(member) // 2])
    code, doc, _ = run(str(day), "--json")
    assert code == 2
    (check,) = [f for f in doc["integrity"]["files"] if f["file"] == path.name]
    assert check["truncated"] and check["rows"] == rows_before, "every complete row was still read"
    assert any(p["kind"] == "truncated" and p["file"] == path.name for p in doc["problems"])


def test_a_garbage_row_is_unreadable_and_located(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("kraken")
    path = one(day, "trades_ws_*.csv.gz")
    lines = read_lines(path)
    lines.insert(len(lines) // 2, b"this is, not a trade")
    write_lines(path, lines)
    diffs = one(day, "diffs/*.ndjson.gz")
    with open(diffs, "ab") as f:
        f.write(gzip.compress(b"{not json\n", mtime=0))
    code, doc, output = run(str(day), "--json")
    assert code == 1
    (check,) = [f for f in doc["integrity"]["files"] if f["file"] == path.name]
    assert check["unparsable_rows"] == 1 and not check["ok"]
    (dcheck,) = [f for f in doc["integrity"]["files"] if f["file"].startswith("diffs/")]
    assert dcheck["unparsable_rows"] == 1
    assert {p["kind"] for p in doc["problems"]} == {"unreadable_row"}
    code, _, output = run(str(day))
    assert code == 1 and "unparsable rows" in output and "FAILED" in output


def test_a_repeated_trade_is_a_duplicate_and_out_of_order(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("binance")
    path = one(day, "trades_ws_*.csv.gz")
    lines = read_lines(path)
    lines.append(lines[1])
    write_lines(path, lines)
    code, doc, _ = run(str(day), "--json")
    assert code == 1
    kinds = {p["kind"] for p in doc["problems"]}
    assert kinds == {"duplicate_trade", "seq_order", "count_mismatch"}
    (check,) = [f for f in doc["integrity"]["files"] if f["file"] == path.name]
    assert check["duplicates"] == 1 and check["seq_errors"] == 1


def test_a_root_with_one_bad_day_reports_each_and_exits_with_the_worst(
    recorded_data: Path, day_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    day_copy("kraken")
    bad = day_copy("binance")
    path = one(bad, "orderbook_ws_depth_*.csv.gz")
    with open(path, "ab") as f:
        f.write(gzip.compress(b"x" * 1000, mtime=0)[:20])
    junk = tmp_path / "data" / "binance" / "BTCUSDT" / "20991231"
    junk.mkdir()
    (junk / "events_BTCUSDT_20991231.csv.gz").write_bytes(b"not gzip at all")
    code, doc, _ = run(str(tmp_path / "data"), "--json")
    assert code == 2
    assert [d["ok"] for d in doc["days"]] == [False, True]
    assert doc["unreadable"] and doc["unreadable"][0]["path"].endswith("20991231")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nothing-here", "does not exist"),
        (lambda p: p, "holds no recorded day folder"),
        # Brackets in a path are text, not rich markup, in the error line.
        (lambda p: p / "[bold]x[/bold] [Errno 2]", "[bold]x[/bold] [Errno 2] does not exist"),
    ],
)
def test_unusable_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    code, _, output = run(str(make(tmp_path)))
    assert code == 2 and message in output and "Traceback" not in output


def test_two_processes_and_one_give_the_same_report(recorded_data: Path) -> None:
    day = next((recorded_data / "kraken" / "BTCUSD").iterdir())
    one_proc, two_proc = validate_day(day, workers=1), validate_day(day, workers=2)
    assert one_proc.as_json() == two_proc.as_json()


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_runs_to_the_diffs_file_size(recorded_data: Path, workers: int) -> None:
    day = next((recorded_data / "kraken" / "BTCUSD").iterdir())
    seen: list[tuple[int, int]] = []
    assert validate_day(day, workers=workers, progress=lambda done, total: seen.append((done, total))).ok
    (diffs,) = day.glob("diffs/*.ndjson.gz")
    assert seen and seen[-1] == (diffs.stat().st_size, diffs.stat().st_size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_trade_files_flushed_apart_are_fine_while_recording_not_after(
    day_copy: Callable[[str], Path],
) -> None:
    day = day_copy("binance")
    raw_path = one(day, "trades/*.ndjson.gz")
    lines = read_lines(raw_path)
    assert len(lines) >= 10
    write_lines(raw_path, lines[:-3])  # the raw file's last rows are not there
    # The day was closed (run_stop): its two trade files must hold the same trades.
    (problem,) = validate_day(day).problems
    assert problem.kind == "count_mismatch" and problem.recv_seq == json.loads(lines[-3])["recv_seq"]
    # The same files on a day still being recorded (no run_stop yet): flushed apart, fine.
    ledger_path = one(day, "events_*.csv.gz")
    ledger_lines = read_lines(ledger_path)
    stop = next(i for i, line in enumerate(ledger_lines) if b",STOPPED," in line or b",run_stop," in line)
    write_lines(ledger_path, ledger_lines[:stop])
    assert validate_day(day).ok
    # A trade missing from the middle of one file is a problem, located by recv_seq.
    lost = json.loads(lines[len(lines) // 2])["recv_seq"]
    write_lines(raw_path, lines[: len(lines) // 2] + lines[len(lines) // 2 + 1 :])
    (problem,) = validate_day(day).problems
    assert problem.kind == "count_mismatch" and problem.recv_seq == lost


@pytest.mark.parametrize(
    "missing", ["trades/*.ndjson.gz", "orderbook_ws_depth_*.csv.gz", "diffs/*.ndjson.gz"]
)
def test_a_missing_file_of_a_closed_day_is_a_problem(day_copy: Callable[[str], Path], missing: str) -> None:
    day = day_copy("kraken")
    one(day, missing).unlink()
    report = validate_day(day)
    assert "missing_file" in {p.kind for p in report.problems}, [p.as_dict() for p in report.problems]


def test_replay_refuses_to_write_into_the_day_folder(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("kraken")
    target = one(day, "diffs/*.ndjson.gz")
    before = target.read_bytes()
    result = runner.invoke(app, ["replay", str(day), "--every", "1s", "-f", "csv", "-o", str(target)])
    assert result.exit_code == 2 and "inside the day folder" in result.output
    assert target.read_bytes() == before, "the recording is untouched"


def test_brackets_in_paths_are_text_in_the_report(recorded_data: Path, tmp_path: Path) -> None:
    src = next((recorded_data / "kraken" / "BTCUSD").iterdir())
    day = tmp_path / "w[/]x[red]" / "kraken" / "BTCUSD" / src.name
    shutil.copytree(src, day)
    (day / "trades_ws_BTCUSD_x.csv.gz.damaged-1").write_bytes(b"[/] torn")
    result = runner.invoke(app, ["validate", str(tmp_path / "w[/]x[red]")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "damaged-1" in result.output


@pytest.mark.parametrize("damage", ["lost_tail", "empty_file"])
def test_diff_rows_lost_behind_the_book_frames_are_found(
    day_copy: Callable[[str], Path], damage: str
) -> None:
    day = day_copy("kraken")
    path = one(day, "diffs/*.ndjson.gz")
    lines = read_lines(path)
    if damage == "lost_tail":
        write_lines(path, lines[:-20])  # every row complete, the file just ends early
        first_lost = json.loads(lines[-20])["recv_seq"]
    else:
        path.write_bytes(b"")
        first_lost = None
    code, doc, _ = run(str(day), "--json")
    assert code == 1
    (missing,) = [p for p in doc["problems"] if p["kind"] == "missing_diffs"]
    if first_lost is not None:
        assert missing["recv_seq"] == first_lost


def test_a_torn_ledger_is_reported_once_and_exits_2(day_copy: Callable[[str], Path]) -> None:
    day = day_copy("kraken")
    path = one(day, "events_*.csv.gz")
    rows = len(read_lines(path)) - 1
    member = gzip.compress(b"99,1,run,1,heartbeat,,,,,\n" * 50, mtime=0)
    with open(path, "ab") as f:
        f.write(member[: len(member) // 2])
    code, doc, _ = run(str(day), "--json")
    assert code == 2
    assert [p["file"] for p in doc["problems"] if p["kind"] == "truncated"] == [path.name]
    (check,) = [f for f in doc["integrity"]["files"] if f["file"] == path.name]
    assert check["truncated"] and check["rows"] == rows
