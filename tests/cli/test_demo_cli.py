"""`mmdata demo` (the README's first command) and `mmdata record --help` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.validate.day import validate_day

runner = CliRunner()


@pytest.mark.parametrize("exchange", ["binance", "kraken"])
def test_demo_records_validates_and_shows_next_steps(tmp_path: Path, exchange: str) -> None:
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "-e", exchange, "--duration", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Next:" in result.output and "mmdata record" in result.output
    days = sorted((out / "data" / exchange).glob("*/2*"))
    assert len(days) == 2, "two symbols recorded"
    for day in days:
        report = validate_day(day)
        assert report.ok and report.diffs_applied > 0
    assert any((out / "logs" / "recorder" / exchange).rglob("*.log"))


def test_demo_rejects_an_unknown_exchange(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "-e", "ftx", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown exchange" in result.output


def test_record_help_teaches_the_env_knobs() -> None:
    result = runner.invoke(app, ["record", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for knob in (
        "DEPTH_LEVELS",
        "STORE_DEPTH_DIFFS",
        "WS_MAX_SESSION_S",
        "WINDOW_TZ",
        "LIVE_STREAM_ROTATE_S",
        "HEARTBEAT_SEC",
        "SYNC_WARN_AFTER_SEC",
        "MAX_BUFFER_WARN",
        "BUFFER_FLUSH_INTERVAL_SEC",
    ):
        assert knob in result.output, knob
    assert "--simulate" in result.output and "--capture" in result.output
