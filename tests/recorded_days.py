"""Recorded days shared by the replay/export/validate-day tests, made once per test process by
``mmdata record --simulate`` (the real recorder against the loopback simulator)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmdata.cli import app

#: (exchange, venue symbol, SYMBOL_FS) recorded for every session.
VENUES = (
    ("binance", "BTCUSDT", "BTCUSDT"),
    ("kraken", "BTC/USD", "BTCUSD"),
    ("bitfinex", "tBTCUSD", "tBTCUSD"),
)


def record_days(root: Path, seconds: float = 3.0, *extra: str) -> Path:
    """Record each venue of :data:`VENUES` for ``seconds`` under ``root/data``; returns the data root."""
    runner = CliRunner()
    data = root / "data"
    for exchange, symbol, _fs in VENUES:
        result = runner.invoke(
            app,
            [
                "record",
                "-e",
                exchange,
                "-s",
                symbol,
                "--simulate",
                "--duration",
                str(seconds),
                "--data-dir",
                str(data),
                "--log-dir",
                str(root / "logs"),
                "--json",
                *extra,
            ],
        )
        assert result.exit_code == 0, result.output
        json.loads(result.stdout.strip().splitlines()[-1])
    return data


@pytest.fixture(scope="session")
def recorded_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with one recorded day per venue. Read-only: copy before damaging."""
    return record_days(tmp_path_factory.mktemp("recorded"))


def only_day(data: Path, exchange: str, fs: str) -> Path:
    """The single day folder of ``exchange``/``fs`` under ``data``."""
    days = sorted(p for p in (data / exchange / fs).iterdir() if p.name.isdigit())
    assert len(days) == 1, days
    return days[0]


@pytest.fixture
def day_copy(recorded_data: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``day_copy(exchange)`` -> a private copy of that venue's day folder (same layout), to damage."""

    def make(exchange: str) -> Path:
        fs = next(f for e, _s, f in VENUES if e == exchange)
        src = only_day(recorded_data, exchange, fs)
        dst = tmp_path / "data" / exchange / fs / src.name
        shutil.copytree(src, dst)
        return dst

    return make
