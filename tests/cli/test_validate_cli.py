"""`mmdata validate CAPTURE` end to end through the CLI: counts, exit codes, located problems, bad input."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from tests.conftest import BINANCE_4, BINANCE_BTCUSDT, BITFINEX_7, BITFINEX_VECTOR, KRAKEN_BOOK10

runner = CliRunner()

EXPECTED_TOTALS = {
    # name: (exchange, books, diffs applied, checksums verified, trades)
    BINANCE_4: ("binance", 4, 172, 0, 2),
    BINANCE_BTCUSDT: ("binance", 1, 3449, 0, 9757),
    KRAKEN_BOOK10: ("kraken", 1, 509, 510, 0),
    BITFINEX_7: ("bitfinex", 7, 1593, 0, 0),
    BITFINEX_VECTOR: ("bitfinex", 1, 1, 1, 0),
}
SYMBOL_KEYS = [
    "diffs_applied",
    "checksums_verified",
    "checksum_mismatches",
    "gaps",
    "resyncs",
    "crossed_states",
    "trades",
]


def _json_run(path: Path) -> tuple[int, dict]:
    result = runner.invoke(app, ["validate", str(path), "--json"])
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stdout  # exactly one JSON object
    return result.exit_code, json.loads(lines[0])


@pytest.mark.parametrize("name", list(EXPECTED_TOTALS))
def test_real_captures_json(real_capture, name: str) -> None:
    exchange, books, diffs, checksums, trades = EXPECTED_TOTALS[name]
    code, out = _json_run(real_capture(name))
    assert code == 0
    assert out["ok"] is True
    assert out["exchange"] == exchange
    assert out["bad_messages"] == 0
    for counts in out["symbols"].values():
        assert list(counts) == SYMBOL_KEYS
    assert len(out["symbols"]) >= books
    assert sum(c["diffs_applied"] for c in out["symbols"].values()) == diffs
    assert sum(c["checksums_verified"] for c in out["symbols"].values()) == checksums
    assert sum(c["trades"] for c in out["symbols"].values()) == trades
    assert all(c["gaps"] == 0 and c["checksum_mismatches"] == 0 for c in out["symbols"].values())
    assert all(c["crossed_states"] == 0 for c in out["symbols"].values())


def test_human_report(real_capture) -> None:
    result = runner.invoke(app, ["validate", str(real_capture(KRAKEN_BOOK10))])
    assert result.exit_code == 0
    assert "BTC/USD" in result.stdout
    assert "510" in result.stdout
    assert "OK" in result.stdout


# -- problems derived from the real captures ------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def _write_lines(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_dropped_binance_diff_is_located(real_capture, tmp_path: Path) -> None:
    lines = _read_lines(real_capture(BINANCE_BTCUSDT))
    depth_lines = [i for i, ln in enumerate(lines) if "depthUpdate" in ln]
    victim = depth_lines[500]
    frame = json.loads(json.loads(lines[victim])["data"])["data"]
    dropped_first, dropped_last = frame["U"], frame["u"]
    del lines[victim]
    path = _write_lines(tmp_path / "dropped.capture.jsonl.gz", lines)

    code, out = _json_run(path)
    assert code == 1
    assert out["ok"] is False
    assert out["symbols"]["BTCUSDT"]["gaps"] == 1
    gaps = [p for p in out["problems"] if p["kind"] == "gap"]
    assert len(gaps) == 1
    assert gaps[0]["symbol"] == "BTCUSDT"
    assert gaps[0]["expected"] == dropped_first
    assert gaps[0]["got"] == dropped_last + 1
    assert gaps[0]["line"] is not None and gaps[0]["time"] is not None

    human = runner.invoke(app, ["validate", str(path)])
    assert human.exit_code == 1
    assert f"expected {dropped_first}, got {dropped_last + 1}" in human.stdout
    assert "BTCUSDT" in human.stdout


def test_corrupted_kraken_level_is_located(real_capture, tmp_path: Path) -> None:
    lines = _read_lines(real_capture(KRAKEN_BOOK10))
    updates = [i for i, ln in enumerate(lines) if '\\"type\\":\\"update\\"' in ln and "book" in ln]
    victim = updates[200]
    rec = json.loads(lines[victim])
    qty = re.search(r'"qty":([0-9.e+-]+)', rec["data"])
    assert qty is not None and float(qty.group(1)) != 0.0
    rec["data"] = rec["data"][: qty.start(1)] + "123.45678901" + rec["data"][qty.end(1) :]
    lines[victim] = json.dumps(rec)
    path = _write_lines(tmp_path / "corrupt.capture.jsonl.gz", lines)

    code, out = _json_run(path)
    assert code == 1
    counts = out["symbols"]["BTC/USD"]
    assert counts["checksum_mismatches"] == 1
    assert counts["checksums_verified"] == 201  # the snapshot and the 200 updates before the victim
    mismatches = [p for p in out["problems"] if p["kind"] == "checksum_mismatch"]
    assert len(mismatches) == 1
    assert mismatches[0]["symbol"] == "BTC/USD"
    assert mismatches[0]["line"] == victim + 1  # 1-based line of the corrupted frame
    assert mismatches[0]["expected"] != mismatches[0]["got"]


# -- bad input: a clear message or counted bad messages, never a traceback ------------------


def _assert_clean_failure(result, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_truncated_gzip(real_capture, tmp_path: Path) -> None:
    data = real_capture(BINANCE_BTCUSDT).read_bytes()
    path = tmp_path / "truncated.capture.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = runner.invoke(app, ["validate", str(path), "--json"])
    _assert_clean_failure(result, 2)
    out = json.loads(result.stdout.strip().splitlines()[0])
    assert out["ok"] is False
    assert out["symbols"]["BTCUSDT"]["diffs_applied"] > 1000  # everything before the cut was verified
    assert any(p["kind"] == "truncated" for p in out["problems"])
    assert "truncated" in result.stderr


def test_non_json_line_is_counted(real_capture, tmp_path: Path) -> None:
    lines = _read_lines(real_capture(KRAKEN_BOOK10))
    lines.insert(50, "}{ not json at all")
    code, out = _json_run(_write_lines(tmp_path / "junk.capture.jsonl.gz", lines))
    assert code == 0  # books still fully verified
    assert out["bad_messages"] == 1
    assert out["symbols"]["BTC/USD"]["checksums_verified"] == 510


def test_frame_from_another_venue_is_counted(real_capture, tmp_path: Path) -> None:
    lines = _read_lines(real_capture(KRAKEN_BOOK10))
    foreign = (
        '{"stream":"btcusdt@depth@100ms","data":'
        '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
    )
    lines.insert(
        60, json.dumps({"t": 1690700002000000000, "kind": "ws_recv", "url": "wss://x", "data": foreign})
    )
    lines.insert(
        61, json.dumps({"t": 1690700002000000001, "kind": "ws_recv", "url": "wss://x", "data": "[1,[1,2,3]]"})
    )
    code, out = _json_run(_write_lines(tmp_path / "foreign.capture.jsonl.gz", lines))
    assert code == 0
    assert out["bad_messages"] == 2
    assert out["symbols"]["BTC/USD"]["checksums_verified"] == 510


def test_ten_megabyte_frame_is_counted(real_capture, tmp_path: Path) -> None:
    lines = _read_lines(real_capture(BINANCE_BTCUSDT))[:2000]
    huge = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","junk":"' + "x" * 10_000_000 + '"}}'
    lines.insert(
        500, json.dumps({"t": 1723161260000000000, "kind": "ws_recv", "url": "wss://x", "data": huge})
    )
    result = runner.invoke(
        app, ["validate", str(_write_lines(tmp_path / "huge.capture.jsonl.gz", lines)), "--json"]
    )
    assert "Traceback" not in result.output
    out = json.loads(result.stdout.strip())
    assert out["bad_messages"] == 1
    assert result.exit_code == 0


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = runner.invoke(app, ["validate", str(path)])
    _assert_clean_failure(result)
    assert "empty file" in result.stderr


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    result = runner.invoke(app, ["validate", str(path)])
    _assert_clean_failure(result)
    assert "not JSON" in result.stderr


def test_unknown_exchange_in_header(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"format":"mmdata-capture","version":1,"exchange":"mtgox","symbols":[]}\n')
    result = runner.invoke(app, ["validate", str(path)])
    _assert_clean_failure(result)
    assert "unknown exchange 'mtgox'" in result.stderr


def test_missing_path_and_folder(tmp_path: Path) -> None:
    _assert_clean_failure(runner.invoke(app, ["validate", str(tmp_path / "nope.gz")]))
    _assert_clean_failure(runner.invoke(app, ["validate", str(tmp_path)]))


def test_help_teaches() -> None:
    result = runner.invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    assert "Exit status" in result.stdout
    assert "--json" in result.stdout


def test_python_dash_m_end_to_end(real_capture) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmdata", "validate", str(real_capture(BITFINEX_VECTOR)), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["symbols"]["tXRPBTC"]["checksums_verified"] == 1
