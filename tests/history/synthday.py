"""Format-valid recorded day folders written straight from a list of trades (for history tests).

A real recording of hours is too slow for a test; the simulator's deterministic past gives
hours of trades at once. :func:`write_days` writes what the recorder would have written for
them: the ledger (run_start, ws_open, ws_close, run_stop per connected span) and the
normalized trades file, one day folder per UTC day of the receive time.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from mmdata.record.files import EVENTS_HEADER, TRADES_HEADER

LATENCY_MS = 40


@dataclass(frozen=True, slots=True)
class Row:
    """One recorded trade: exchange time, id, exact text, taker side."""

    ts_ms: int
    trade_id: int
    price: str
    qty: str
    side: str


def units_text(units: int, precision: int) -> str:
    """Integer units of ``10**-precision`` as plain decimal text."""
    return format(Decimal(units).scaleb(-precision), "f")


def _label(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d")


def write_days(
    data: Path,
    exchange: str,
    symbol_fs: str,
    trades: Iterable[Row],
    connected: Sequence[tuple[int, int]],
    *,
    gaps_at: Sequence[int] = (),
) -> list[Path]:
    """Day folders under ``data/<exchange>/<symbol_fs>/`` for ``trades`` received while
    ``connected`` (half-open ms spans); ``gaps_at`` adds ``gap`` ledger rows. Returns the folders."""
    ledger: dict[str, list[tuple[int, str]]] = {}
    rows: dict[str, list[str]] = {}

    def event(ms: int, name: str, state: str = "", reason: str = "") -> None:
        ledger.setdefault(_label(ms), []).append((ms, f"{name},{state},{reason}"))

    for start, end in connected:
        event(start - 5, "run_start", "CONNECTING")
        event(start, "ws_open")
        event(end, "ws_close", "CONNECTING", "closed")
        event(end + 1, "run_stop", "STOPPED")
    for ms in gaps_at:
        event(ms, "gap", "RESYNCING", "update ids skipped")
    for t in sorted(trades, key=lambda r: (r.ts_ms, r.trade_id)):
        recv = t.ts_ms + LATENCY_MS
        rows.setdefault(_label(recv), []).append(
            f"{recv * 1_000_000},{t.ts_ms},{t.trade_id},{t.price},{t.qty},{t.side}"
        )
    folders: list[Path] = []
    seq = 0
    for label in sorted(set(ledger) | set(rows)):
        day = data / exchange / symbol_fs / label
        day.mkdir(parents=True, exist_ok=True)
        lines = [EVENTS_HEADER]
        for i, (ms, body) in enumerate(sorted(ledger.get(label, []), key=lambda x: x[0])):
            seq += 1
            name, state, reason = body.split(",")
            lines.append(f"{i + 1},{ms * 1_000_000},run1,{seq},{name},,{state},{reason},,")
        (day / f"events_{symbol_fs}_{label}.csv.gz").write_bytes(
            gzip.compress(("\n".join(lines) + "\n").encode())
        )
        trade_lines = [TRADES_HEADER]
        for body in rows.get(label, []):
            seq += 1
            trade_lines.append(f"{seq},{body}")
        (day / f"trades_ws_{symbol_fs}_{label}.csv.gz").write_bytes(
            gzip.compress(("\n".join(trade_lines) + "\n").encode())
        )
        folders.append(day)
    return folders
