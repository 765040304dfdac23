"""Recorder lifecycle: SIGTERM shutdown, kill -9 and restart, and day rollover on an injected clock."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mmdata.record import RecorderConfig, SimulateOptions, TradingWindow, record_async
from mmdata.store.gzmembers import scan_members
from mmdata.validate.day import validate_day
from tests.record.dayfiles import day_dirs, details, events, ledger, ndjson_rows, zcat_ok

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _cmd(tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mmdata",
        "record",
        "-e",
        "binance",
        "-s",
        "BTC/USDT",
        "--simulate",
        "--data-dir",
        str(tmp_path / "data"),
        "--log-dir",
        str(tmp_path / "logs"),
        "--flush-interval",
        "0.2",
        "-q",
        *extra,
    ]


def _wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _diffs_file(tmp_path: Path) -> Path:
    return next((tmp_path / "data" / "binance" / "BTCUSDT").glob("2*/diffs/depth_diffs_*.ndjson.gz"))


def _members(tmp_path: Path) -> int:
    try:
        return scan_members(_diffs_file(tmp_path)).members
    except StopIteration:
        return 0


def test_sigterm_flushes_everything_and_logs_stopped(tmp_path: Path) -> None:
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _members(tmp_path) >= 3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    (day,) = day_dirs(tmp_path / "data", "binance").values()
    rows = ledger(day)
    assert [r["event"] for r in rows][-2:] == ["state_change", "run_stop"]
    assert rows[-2]["state"] == "STOPPED" and rows[-1]["state"] == "STOPPED"
    for path in day.rglob("*.gz"):
        zcat_ok(path)
    assert validate_day(day).ok


def test_kill9_mid_flush_then_restart_keeps_every_row_and_the_damaged_tail(tmp_path: Path) -> None:
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _members(tmp_path) >= 4)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    diffs = _diffs_file(tmp_path)
    before = ndjson_rows(diffs)
    assert before
    # A kill in the middle of a flush leaves part of a member behind: write exactly that.
    member = gzip.compress(b'{"recv_seq": 999999999, "torn": true}\n' * 50, mtime=0)
    torn = member[: len(member) // 2]
    with open(diffs, "ab") as f:
        f.write(torn)
    assert subprocess.run(["gzip", "-t", str(diffs)], capture_output=True, check=False).returncode != 0

    # A new simulator seed: a same-seeded market would send the first run's trade ids again,
    # which validate rightly reports as duplicate trades (a real venue never does).
    restart = subprocess.run(
        _cmd(tmp_path, "--duration", "2.5", "--seed", "2"), capture_output=True, timeout=60, check=False
    )
    assert restart.returncode == 0, restart.stderr.decode()

    sidecar = diffs.with_name(diffs.name + ".damaged-1")
    assert sidecar.read_bytes() == torn, "the damaged tail is kept aside, byte for byte"
    after = [json.loads(line) for line in zcat_ok(diffs).splitlines()]
    assert after[: len(before)] == before, "every row flushed before the kill is still there"
    assert len(after) > len(before), "recording appended after the repair"
    seqs = [r["recv_seq"] for r in after]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "recv_seq keeps increasing across runs"

    (day,) = day_dirs(tmp_path / "data", "binance").values()
    starts = events(day, "run_start")
    assert len(starts) == 2 and starts[0]["run_id"] != starts[1]["run_id"], "the ledger shows both runs"
    assert details(starts[1])["resumed"] is True
    repaired = events(day, "file_repaired")
    assert any(details(r)["sidecar"] == sidecar.name for r in repaired)
    for path in day.rglob("*.gz"):
        zcat_ok(path)
    report = validate_day(day)
    assert report.ok, [p.as_dict() for p in report.problems]
    assert report.snapshots_used >= 2


def test_day_rollover_on_an_injected_clock(tmp_path: Path) -> None:
    """At the next window's start a new day folder begins with its own snapshot; the old day
    runs on to its window end (the overlap); each folder replays alone."""
    # 30x fake time from 23:59:40 Berlin once the recorder starts: the new day opens after
    # ~0.7 s (the book long synced), the old one ends at 00:01 (~2.7 s).
    start = datetime(2026, 3, 27, 22, 59, 40, tzinfo=UTC).timestamp()
    real0: list[float] = []
    speed = 30.0

    def wall_ns() -> int:
        elapsed = time.time() - real0[0] if real0 else 0.0
        return int((start + elapsed * speed) * 1e9)

    config = RecorderConfig(
        "kraken",
        ("BTC/USD",),
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        duration_s=3.5,
        window=TradingWindow("Europe/Berlin", "00:00", "00:01", 1),
        heartbeat_s=0.5,
    )
    asyncio.run(
        record_async(
            config,
            simulate=SimulateOptions(seed=3),
            wall_ns=wall_ns,
            on_ready=lambda _recorder: real0.append(time.time()),
        )
    )

    days = sorted((tmp_path / "data" / "kraken" / "BTCUSD").glob("2*"))
    assert [d.name for d in days] == ["20260327", "20260328"]
    old, new = days
    old_rows, new_rows = ledger(old), ledger(new)
    assert [r["event"] for r in old_rows][-1] == "window_end"
    assert new_rows[0]["event"] == "window_start"
    (initial,) = [r for r in new_rows if r["event"] == "snapshot" and r["tag"] == "initial"]
    assert details(initial)["source"] == "local_book"
    assert [r["event"] for r in new_rows][-1] == "run_stop"
    # The overlap is in both folders: the same diffs, numbered alike.
    old_seqs = {r["recv_seq"] for r in ndjson_rows(next((old / "diffs").glob("*.gz")))}
    new_seqs = [r["recv_seq"] for r in ndjson_rows(next((new / "diffs").glob("*.gz")))]
    overlap = old_seqs.intersection(new_seqs)
    assert overlap and min(new_seqs) in overlap and max(old_seqs) < max(new_seqs)
    for day in days:
        report = validate_day(day)
        assert report.ok, [p.as_dict() for p in report.problems]
        assert report.checksums_verified > 0 and report.frames_checked > 0
    assert os.listdir(tmp_path / "logs" / "recorder" / "kraken" / "BTCUSD")
