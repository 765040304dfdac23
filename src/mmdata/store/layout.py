"""The recorder's on-disk layout (ARCHITECTURE.md §4): every path in one place.

::

    <data>/<exchange>/<SYMBOL_FS>/<YYYYMMDD>/
        orderbook_ws_depth_<SYMBOL_FS>_<YYYYMMDD>.csv.gz     top-N book frames (SYNCED only)
        trades_ws_<SYMBOL_FS>_<YYYYMMDD>.csv.gz              normalized trades
        events_<SYMBOL_FS>_<YYYYMMDD>.csv.gz                 the ledger
        gaps_<SYMBOL_FS>_<YYYYMMDD>.csv.gz                   gaps and checksum mismatches
        snapshots/snapshot_<event_id>_<tag>.csv | .json      book snapshots (levels | raw payload)
        diffs/depth_diffs_<SYMBOL_FS>_<YYYYMMDD>.ndjson.gz   every diff with its raw frame text
        trades/trades_ws_raw_<SYMBOL_FS>_<YYYYMMDD>.ndjson.gz every trade with its raw frame text
    <data>/<exchange>/<SYMBOL_FS>/live/
        live_depth_diffs.ndjson, live_trades.ndjson          uncompressed, rotated, for the relay
    <logs>/recorder/<exchange>/<SYMBOL_FS>/<YYYY-MM-DD>.log

``live/`` sits beside the day folders rather than inside one: the live stream is
continuous across day boundaries (docs/format.md explains the choice).
Columns of every file are documented in ``docs/format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

__all__ = ["DayLayout", "day_label", "live_dir", "log_path", "symbol_dir"]


def day_label(day: date) -> str:
    """``YYYYMMDD`` form of a trading day."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def symbol_dir(data_dir: Path, exchange: str, symbol_fs: str) -> Path:
    """``<data>/<exchange>/<SYMBOL_FS>``."""
    return data_dir / exchange.lower() / symbol_fs


def live_dir(data_dir: Path, exchange: str, symbol_fs: str) -> Path:
    """``<data>/<exchange>/<SYMBOL_FS>/live``."""
    return symbol_dir(data_dir, exchange, symbol_fs) / "live"


def log_path(log_root: Path, exchange: str, symbol_fs: str, day: date) -> Path:
    """``<logs>/recorder/<exchange>/<SYMBOL_FS>/<YYYY-MM-DD>.log``."""
    return log_root / "recorder" / exchange.lower() / symbol_fs / f"{day.isoformat()}.log"


@dataclass(frozen=True, slots=True)
class DayLayout:
    """Paths of one symbol's day folder."""

    data_dir: Path
    exchange: str
    symbol_fs: str
    day: date
    #: The day folder itself when it is not at ``<data>/<exchange>/<SYMBOL_FS>/<YYYYMMDD>``
    #: (a day folder copied elsewhere is still readable).
    folder: Path | None = None

    @property
    def label(self) -> str:
        """``YYYYMMDD``."""
        return day_label(self.day)

    @property
    def root(self) -> Path:
        """The day folder."""
        if self.folder is not None:
            return self.folder
        return symbol_dir(self.data_dir, self.exchange, self.symbol_fs) / self.label

    def _name(self, stem: str, ext: str) -> str:
        return f"{stem}_{self.symbol_fs}_{self.label}.{ext}"

    @property
    def book_frames(self) -> Path:
        """Top-N book frames CSV."""
        return self.root / self._name("orderbook_ws_depth", "csv.gz")

    @property
    def trades(self) -> Path:
        """Normalized trades CSV."""
        return self.root / self._name("trades_ws", "csv.gz")

    @property
    def events(self) -> Path:
        """The events ledger CSV."""
        return self.root / self._name("events", "csv.gz")

    @property
    def gaps(self) -> Path:
        """Gaps and mismatches CSV."""
        return self.root / self._name("gaps", "csv.gz")

    @property
    def snapshots(self) -> Path:
        """Snapshot folder."""
        return self.root / "snapshots"

    def snapshot(self, event_id: int, tag: str, ext: str) -> Path:
        """``snapshots/snapshot_<event_id>_<tag>.<ext>`` (``ext`` is ``csv`` or ``json``)."""
        return self.snapshots / f"snapshot_{event_id}_{tag}.{ext}"

    @property
    def diffs(self) -> Path:
        """Raw depth diffs NDJSON."""
        return self.root / "diffs" / self._name("depth_diffs", "ndjson.gz")

    @property
    def trades_raw(self) -> Path:
        """Raw trades NDJSON."""
        return self.root / "trades" / self._name("trades_ws_raw", "ndjson.gz")
