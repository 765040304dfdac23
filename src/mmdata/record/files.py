"""The open files of one symbol's trading day, and the row formats written into them.

One :class:`DayFiles` per (symbol, trading day) holds a crash-safe
:class:`~mmdata.store.writers.RowWriter` per gzip file of the day folder
(:class:`~mmdata.store.layout.DayLayout`) and writes snapshot files. Opening a day
that already has files (a restart) first repairs damaged gzip tails — the damaged
bytes go to a ``.damaged-<n>`` sidecar, never deleted — and then *resumes*: the last
``recv_seq`` and ledger ``event_id`` found in the files are returned so that numbering
keeps increasing across runs and snapshot file names never collide.

Column order and meaning are the contract of ``docs/format.md``; the headers below are
the single source of those names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import StoreError
from mmdata.record.config import RecorderConfig
from mmdata.store.layout import DayLayout
from mmdata.store.writers import RowWriter, csv_row

__all__ = [
    "EVENTS_HEADER",
    "GAPS_HEADER",
    "TRADES_HEADER",
    "DayFiles",
    "book_frames_header",
]

EVENTS_HEADER = "event_id,recv_time_ns,run_id,recv_seq,event,tag,state,reason,snapshot_file,details"
GAPS_HEADER = "event_id,recv_time_ns,run_id,recv_seq,kind,expected,got,reason"
TRADES_HEADER = "recv_seq,recv_time_ns,event_time_ms,trade_id,price,qty,side"

_SNAPSHOT_NAME = re.compile(r"snapshot_(\d+)_")


def book_frames_header(levels: int) -> str:
    """``recv_seq,recv_time_ns,event_time_ms,update_id,checksum,bid_px_1,bid_qty_1,…,ask_px_N,ask_qty_N``."""
    cols = ["recv_seq", "recv_time_ns", "event_time_ms", "update_id", "checksum"]
    for side in ("bid", "ask"):
        for i in range(1, levels + 1):
            cols += (f"{side}_px_{i}", f"{side}_qty_{i}")
    return ",".join(cols)


def _int_field(line: bytes | None, index: int) -> int:
    """Integer in CSV column ``index`` of a row (0 when absent or not a number)."""
    if not line:
        return 0
    parts = line.split(b",", index + 1)
    try:
        return int(parts[index])
    except (IndexError, ValueError):
        return 0


def _json_seq(line: bytes | None) -> int:
    if not line:
        return 0
    try:
        value = orjson.loads(line).get("recv_seq", 0)
    except (orjson.JSONDecodeError, AttributeError):
        return 0
    return value if type(value) is int else 0


class DayFiles:
    """Writers of one symbol's day folder (see the module docstring)."""

    def __init__(
        self,
        layout: DayLayout,
        config: RecorderConfig,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.layout = layout
        self.day = layout.day
        self.has_snapshot = False  # this day has its own starting snapshot
        root = layout.root
        try:
            root.mkdir(parents=True, exist_ok=True)
            layout.snapshots.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {root}: {exc.strerror or exc}", path=str(root)) from exc
        interval = config.flush_interval_s
        book_rows = config.orderbook_buffer_rows
        trade_rows = config.trades_buffer_rows
        self.writers: list[RowWriter] = []

        def open_writer(path: Path, header: str | None, rows: int) -> RowWriter:
            writer = RowWriter(path, header=header, buffer_rows=rows, flush_interval_s=interval, clock=clock)
            self.writers.append(writer)
            return writer

        try:
            self.events = open_writer(layout.events, EVENTS_HEADER, 200)
            self.gaps = open_writer(layout.gaps, GAPS_HEADER, 100)
            self.book = open_writer(layout.book_frames, book_frames_header(config.depth_levels), book_rows)
            self.trades = open_writer(layout.trades, TRADES_HEADER, trade_rows)
            self.trades_raw = open_writer(layout.trades_raw, None, trade_rows)
            self.diffs: RowWriter | None = (
                open_writer(layout.diffs, None, book_rows) if config.store_depth_diffs else None
            )
        except BaseException:
            self.close()
            raise
        self.repaired: list[Path] = [w.repaired for w in self.writers if w.repaired is not None]
        self.resume_seq = max(
            _int_field(self.events.resumed_last_line, 3),
            _int_field(self.gaps.resumed_last_line, 3),
            _int_field(self.book.resumed_last_line, 0),
            _int_field(self.trades.resumed_last_line, 0),
            _json_seq(self.trades_raw.resumed_last_line),
            _json_seq(self.diffs.resumed_last_line if self.diffs is not None else None),
        )
        self.resume_event_id = max(
            _int_field(self.events.resumed_last_line, 0),
            _int_field(self.gaps.resumed_last_line, 0),
            self._max_snapshot_id(),
        )
        self.resumed = self.events.resumed_last_line is not None

    def _max_snapshot_id(self) -> int:
        best = 0
        try:
            names = os.listdir(self.layout.snapshots)
        except OSError:
            return 0
        for name in names:
            m = _SNAPSHOT_NAME.match(name)
            if m is not None:
                best = max(best, int(m[1]))
        return best

    # -- rows -------------------------------------------------------------------------------
    def event_row(  # noqa: PLR0917 - one parameter per ledger column, in column order
        self,
        event_id: int,
        t_ns: int,
        run_id: str,
        seq: int,
        event: str,
        tag: str,
        state: str,
        reason: str,
        snapshot_file: str,
        details: dict[str, Any] | None,
    ) -> None:
        """One ledger row."""
        text = orjson.dumps(details).decode() if details else ""
        self.events.write(
            csv_row([event_id, t_ns, run_id, seq, event, tag, state, reason, snapshot_file, text])
        )

    def gap_row(self, fields: Sequence[str | int | None]) -> None:
        """One row of the gaps file (columns of :data:`GAPS_HEADER`)."""
        self.gaps.write(csv_row(fields))

    def write_snapshot(
        self,
        event_id: int,
        tag: str,
        bids: Sequence[Sequence[str]],
        asks: Sequence[Sequence[str]],
        payload: str,
    ) -> str:
        """``snapshot_<id>_<tag>.csv`` (side, level, price, qty) and ``.json`` (``payload``).

        Both are written to a temporary name and renamed, so a crash never leaves half a
        snapshot. Returns the CSV path relative to the day folder (for the ledger).
        """
        layout = self.layout
        csv_path = layout.snapshot(event_id, tag, "csv")
        json_path = layout.snapshot(event_id, tag, "json")
        lines = ["side,level,price,qty\n"]
        lines += [f"bid,{i},{lv[0]},{lv[1]}\n" for i, lv in enumerate(bids, 1)]
        lines += [f"ask,{i},{lv[0]},{lv[1]}\n" for i, lv in enumerate(asks, 1)]
        for path, data in ((json_path, payload), (csv_path, "".join(lines))):
            tmp = path.with_name(path.name + ".tmp")
            try:
                tmp.write_text(data, encoding="utf-8")
                os.replace(tmp, path)
            except OSError as exc:
                raise StoreError(f"cannot write {path}: {exc.strerror or exc}", path=str(path)) from exc
        self.has_snapshot = True
        return str(csv_path.relative_to(layout.root))

    # -- upkeep -----------------------------------------------------------------------------
    @property
    def pending_rows(self) -> int:
        """Rows buffered in memory across the day's files (what a crash would lose)."""
        return sum(w.pending_rows for w in self.writers)

    def maybe_flush(self) -> None:
        """Flush every file whose flush interval has passed."""
        for writer in self.writers:
            writer.maybe_flush()

    def flush(self) -> None:
        """Flush everything now (each file gets one complete gzip member)."""
        for writer in self.writers:
            writer.flush()

    def close(self) -> None:
        """Flush and close every file (idempotent)."""
        errors: list[StoreError] = []
        for writer in self.writers:
            try:
                writer.close()
            except StoreError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
