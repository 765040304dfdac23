"""Test helpers: read what the recorder wrote, with the standard library only."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any


def day_dirs(data: Path, exchange: str) -> dict[str, Path]:
    """``{SYMBOL_FS: day folder}`` (the only day of each symbol)."""
    out: dict[str, Path] = {}
    for sym_dir in sorted((data / exchange).iterdir()):
        days = sorted(p for p in sym_dir.iterdir() if p.name.isdigit())
        assert len(days) == 1, days
        out[sym_dir.name] = days[0]
    return out


def csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a gzip CSV, read by Python's gzip module (a standard reader)."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def ndjson_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a gzip NDJSON file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ledger(day: Path) -> list[dict[str, str]]:
    """The events ledger of a day folder."""
    (path,) = day.glob("events_*.csv.gz")
    return csv_rows(path)


def gaps(day: Path) -> list[dict[str, str]]:
    """The gaps file of a day folder."""
    (path,) = day.glob("gaps_*.csv.gz")
    return csv_rows(path)


def details(row: dict[str, str]) -> dict[str, Any]:
    """The JSON ``details`` column of a ledger row."""
    return json.loads(row["details"]) if row["details"] else {}


def events(day: Path, name: str) -> list[dict[str, str]]:
    """Ledger rows of one event kind."""
    return [r for r in ledger(day) if r["event"] == name]


def zcat_ok(path: Path) -> bytes:
    """``gzip -t`` and ``zcat`` accept the file; returns zcat's output (skips without the tools)."""
    if shutil.which("gzip") is None or shutil.which("zcat") is None:
        import pytest

        pytest.skip("gzip/zcat not installed")
    subprocess.run(["gzip", "-t", str(path)], check=True, capture_output=True)
    return subprocess.run(["zcat", str(path)], check=True, capture_output=True).stdout


def csv_text_rows(data: bytes) -> list[dict[str, str]]:
    """CSV rows of decompressed bytes."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
