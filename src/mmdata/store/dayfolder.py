"""Find and describe recorded day folders: what a folder holds, without replaying it.

A day folder names its files ``<stem>_<SYMBOL_FS>_<YYYYMMDD>``; its ledger's first
``run_start`` (or ``window_start``) row says which venue, symbol, book depth and number of
book-frame levels were recorded. :func:`open_day_folder` reads just that;
:func:`find_day_folders` lists every day folder below a data root, an exchange or symbol
folder, or returns the day folder itself.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import StoreError
from mmdata.store.capture import read_gzip
from mmdata.store.layout import DayLayout

__all__ = [
    "SNAPSHOT_FILE",
    "DayFolder",
    "find_day_folders",
    "is_day_folder",
    "open_day_folder",
    "read_csv_rows",
    "row_seq",
    "snapshot_levels",
]

_LABEL = re.compile(r"^\d{8}$")
#: The only snapshot files a ledger row may name (``snapshot_file``): never a path out of the day.
SNAPSHOT_FILE = re.compile(r"snapshots/snapshot_[0-9]+_[a-z_]+\.csv")


def row_seq(line: bytes) -> int:
    """``recv_seq`` of a diffs/trades NDJSON row, read without parsing the row when it starts
    ``{"recv_seq":N,`` as the recorder writes it. Raises ValueError/KeyError/JSON errors on
    a line that is no such row."""
    if line.startswith(b'{"recv_seq":'):
        end = line.find(b",", 12)
        if end > 0:
            return int(line[12:end])
    return int(orjson.loads(line)["recv_seq"])


def snapshot_levels(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Bid and ask levels (exact text) of a ``snapshots/snapshot_*.csv`` file."""
    bids: list[tuple[str, str]] = []
    asks: list[tuple[str, str]] = []
    with open(path, encoding="utf-8", newline="") as f:
        for rec in csv.DictReader(f):
            (bids if rec["side"] == "bid" else asks).append((rec["price"], rec["qty"]))
    return bids, asks


def is_day_folder(path: Path) -> bool:
    """True when ``path`` is a folder named ``YYYYMMDD`` holding an events ledger."""
    return path.is_dir() and bool(_LABEL.match(path.name)) and any(path.glob("events_*.csv.gz"))


def find_day_folders(root: str | Path) -> list[Path]:
    """Every day folder at or below ``root`` (a day, symbol, exchange or data folder), sorted.

    Raises :class:`~mmdata.errors.StoreError` when ``root`` is not a folder.
    """
    base = Path(root)
    if not base.is_dir():
        raise StoreError(f"{base} is not a folder", path=str(base))
    if is_day_folder(base):
        return [base]
    found: list[Path] = []
    # <data>/<exchange>/<SYMBOL_FS>/<YYYYMMDD>: at most three levels below the data root.
    for pattern in ("*", "*/*", "*/*/*"):
        found += [p for p in base.glob(pattern) if _LABEL.match(p.name) and is_day_folder(p)]
    return sorted(set(found))


def read_csv_rows(data: bytes) -> list[dict[str, str]]:
    """Rows of decompressed CSV bytes (header first) as dicts."""
    return list(csv.DictReader(io.StringIO(data.decode("utf-8", "replace"))))


def details(row: dict[str, str]) -> dict[str, Any]:
    """The JSON object in a ledger row's ``details`` column ({} when empty or not JSON)."""
    text = row.get("details") or ""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class DayFolder:
    """One recorded day folder: identity, recorded settings and file paths."""

    root: Path
    exchange: str
    symbol: str
    symbol_fs: str
    label: str
    #: Subscribed / snapshot book depth (the engine's depth).
    depth: int
    #: Levels per side in the book frames file.
    levels: int
    layout: DayLayout
    #: The ledger rows (small: a few rows per connection, resync or warning).
    ledger: tuple[dict[str, str], ...]
    #: Where reading the ledger stopped early, or None.
    ledger_problem: str | None
    #: The trading window of the day, ns since the epoch (from the ledger), when recorded.
    window_start_ns: int | None = None
    window_end_ns: int | None = None

    @property
    def day(self) -> date:
        """The trading day."""
        return self.layout.day


def open_day_folder(path: str | Path) -> DayFolder:
    """Describe the day folder ``path`` from its ledger.

    Raises :class:`~mmdata.errors.StoreError` when it is not a recorded day folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise StoreError(f"{root} is not a folder", path=str(root))
    events = sorted(root.glob("events_*.csv.gz"))
    if not events:
        raise StoreError(f"{root} is not a recorded day folder (no events_*.csv.gz)", path=str(root))
    if not _LABEL.match(root.name):
        raise StoreError(f"{root}: a day folder is named YYYYMMDD", path=str(root))
    label = root.name
    name = events[0].name
    suffix = f"_{label}.csv.gz"
    if not name.endswith(suffix):
        raise StoreError(f"{events[0]}: ledger name does not end with {suffix}", path=str(root))
    symbol_fs = name[len("events_") : -len(suffix)]
    data, problem = read_gzip(events[0])
    ledger = tuple(read_csv_rows(data))
    head = next((r for r in ledger if r.get("event") in ("run_start", "window_start")), None)
    if head is None:
        raise StoreError(f"{events[0]} has no run_start row: not a readable ledger", path=str(root))
    info = details(head)
    exchange = str(info.get("exchange") or "")
    symbol = str(info.get("symbol") or "")
    if not exchange or not symbol:
        raise StoreError(f"{events[0]}: run_start row names no exchange/symbol", path=str(root))
    day = date(int(label[:4]), int(label[4:6]), int(label[6:]))
    layout = DayLayout(root.parent.parent.parent, exchange, symbol_fs, day, folder=root)
    return DayFolder(
        root=root,
        exchange=exchange,
        symbol=symbol,
        symbol_fs=symbol_fs,
        label=label,
        depth=int(info.get("book_depth") or 25),
        levels=int(info.get("levels") or 0),
        layout=layout,
        ledger=ledger,
        ledger_problem=problem,
        window_start_ns=_iso_ns(info.get("window_start")),
        window_end_ns=_iso_ns(info.get("window_end")),
    )


def _iso_ns(value: Any) -> int | None:
    """ns since the epoch of an ISO-8601 text with a zone, or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000
