"""`mmdata sim` end to end: one JSON line once listening, serves the real protocol, stops on time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import requests
from typer.testing import CliRunner

from mmdata.cli import app
from tests.conftest import BITFINEX_VECTOR

runner = CliRunner()


def _start(*args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmdata", "sim", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, json.loads(line)


def test_json_line_then_serves_until_duration() -> None:
    started = time.monotonic()
    proc, info = _start("-e", "binance", "--symbols", "BTCUSDT,ETHUSDT", "--duration", "3")
    try:
        assert set(info) == {"exchange", "ws_url", "rest_url", "symbols"}
        assert info["exchange"] == "binance" and info["symbols"] == ["BTCUSDT", "ETHUSDT"]
        assert str(info["ws_url"]).startswith("ws://127.0.0.1:")
        depth = requests.get(f"{info['rest_url']}/api/v3/depth?symbol=ETHUSDT&limit=5", timeout=10)
        assert depth.status_code == 200 and len(depth.json()["bids"]) == 5
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line on stdout
    assert 2.5 < time.monotonic() - started < 25


def test_replay_from_cli(real_capture) -> None:
    path = real_capture(BITFINEX_VECTOR)
    proc, info = _start("--replay", str(path), "--speed", "max", "--duration", "2")
    try:
        assert info["exchange"] == "bitfinex" and info["symbols"] == ["tXRPBTC"]
    finally:
        proc.communicate(timeout=30)


def test_bad_options_are_clear_errors() -> None:
    result = runner.invoke(app, ["sim", "-e", "mtgox"])
    assert result.exit_code == 2 and "mtgox" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["sim"])
    assert result.exit_code == 2 and "--exchange" in result.stderr
    result = runner.invoke(app, ["sim", "--replay", "/nonexistent/file.gz"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["sim", "--replay", __file__, "--speed", "fast"])
    assert result.exit_code == 2 and "'fast' is not a number or 'max'" in result.output


def test_help_lists_faults() -> None:
    result = runner.invoke(app, ["sim", "--help"])
    assert result.exit_code == 0
    for flag in ("--drop-diffs", "--rest-429-every", "--maintenance-after", "--replay", "--speed"):
        assert flag in result.stdout
