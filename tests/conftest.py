"""Shared test fixtures: where the real captures live, and how to skip without them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge data, not speed: a loaded CI machine (2 cores shared by xdist workers)
# must not fail them on a deadline or on slow input generation. Benchmarks measure speed.
settings.register_profile("mmdata", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "mmdata"))

# Session fixtures with simulator-recorded day folders, for every test package.
pytest_plugins = ["tests.recorded_days"]

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("MMDATA_FIXTURES", REPO.parent / "shared" / "fixtures" / "real"))

BINANCE_4 = "binance_4symbols_2021.capture.jsonl.gz"
BINANCE_BTCUSDT = "binance_btcusdt_20240808.capture.jsonl.gz"
KRAKEN_BOOK10 = "kraken_btcusd_book10_2023.capture.jsonl.gz"
BITFINEX_7 = "bitfinex_7pairs_seqall_2021.capture.jsonl.gz"
BITFINEX_VECTOR = "bitfinex_xrpbtc_checksum_vector.capture.jsonl.gz"


def real_capture_path(name: str) -> Path:
    """Path of a real capture in the shared fixtures, or skip the test with the reason."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"real capture {name} not found in {FIXTURES} (set MMDATA_FIXTURES to its folder)")
    return path


@pytest.fixture
def real_capture():
    """``real_capture(name) -> Path``; skips when the shared fixtures are absent."""
    return real_capture_path
