"""A whole data root in a notebook: ``mmdata.open_data("data")``.

>>> data = mmdata.open_data("data")                        # doctest: +SKIP
>>> data.catalog()                    # one row per day folder: exchange, symbol, date, bytes
>>> days = data.days(exchange="kraken", symbol="BTC/USD", start="2026-11-01")
>>> trades = data.trades(exchange="kraken", symbol="BTC/USD")    # days concatenated
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mmdata.errors import MMDataError, StoreError
from mmdata.replay.day import Day, open_day
from mmdata.replay.timeparse import parse_time_ns
from mmdata.store.dayfolder import find_day_folders

__all__ = ["Data", "open_data"]


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):  # also pandas.Timestamp; before `date`, its base class
        return value.astimezone(UTC).date() if value.tzinfo is not None else value.date()
    if isinstance(value, date):
        return value
    text = str(value).strip()
    if len(text) == 8 and text.isdigit():
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    return datetime.fromtimestamp(parse_time_ns(value) // 1_000_000_000, tz=UTC).date()


def _moment_ns(value: Any) -> int | None:
    """ns of ``value`` when it names a moment (datetime, Timestamp, ISO text with a time,
    epoch number); None when it names a day (date, ``2026-11-21``, ``20261121``)."""
    if isinstance(value, datetime) or hasattr(value, "nanosecond"):
        return parse_time_ns(value)
    if isinstance(value, date):
        return None
    text = str(value).strip()
    if (len(text) == 8 and text.isdigit()) or (len(text) == 10 and text[4] == "-" and text[7] == "-"):
        return None
    return parse_time_ns(value)


def _after(day: Day, value: Any) -> bool:
    """``day`` is not before ``value`` (a day label, or a moment inside/before its window)."""
    moment = _moment_ns(value)
    window_end = day.folder.window_end_ns
    if moment is None or window_end is None:
        return day.date >= _as_date(value)
    return window_end > moment


def _before(day: Day, value: Any) -> bool:
    """``day`` is not after ``value``."""
    moment = _moment_ns(value)
    window_start = day.folder.window_start_ns
    if moment is None or window_start is None:
        return day.date <= _as_date(value)
    return window_start <= moment


def _norm(symbol: str) -> str:
    return "".join(ch for ch in symbol if ch not in "/-: ").upper()


class Data:
    """Every recorded day below a data root (see the module docstring)."""

    def __init__(self, root: Path, days: list[Day], skipped: list[str]) -> None:
        self.root = root
        self._days = days
        #: Folders that looked like days but could not be opened, with the reason.
        self.skipped = skipped

    def __repr__(self) -> str:
        return f"<Data {self.root}: {len(self._days)} days, {len(self.exchanges())} exchanges>"

    def __iter__(self) -> Iterator[Day]:
        return iter(self._days)

    def __len__(self) -> int:
        return len(self._days)

    def exchanges(self) -> list[str]:
        """Exchanges with at least one day."""
        return sorted({d.exchange for d in self._days})

    def symbols(self, exchange: str | None = None) -> list[str]:
        """Symbols (venue spelling) with at least one day, optionally of one exchange."""
        return sorted({d.symbol for d in self._days if exchange is None or d.exchange == exchange.lower()})

    def days(
        self,
        exchange: str | None = None,
        symbol: str | None = None,
        start: Any = None,
        end: Any = None,
    ) -> list[Day]:
        """Days matching every given filter, oldest first. ``symbol`` matches the venue
        spelling or the folder spelling (``BTC/USD`` or ``BTCUSD``); ``start``/``end`` are
        inclusive: a day (``2026-11-21``, ``20261121``, a date) compares with the folder's
        trading-day label; a moment (a datetime or Timestamp, ISO text with a time, epoch
        number) with the day's recorded trading window (``WINDOW_TZ`` days are not UTC days)."""
        want = _norm(symbol) if symbol is not None else None
        out = [
            d
            for d in self._days
            if (exchange is None or d.exchange == exchange.lower())
            and (want is None or _norm(d.symbol) == want or d.symbol_fs.upper() == want)
            and (start is None or _after(d, start))
            and (end is None or _before(d, end))
        ]
        return sorted(out, key=lambda d: (d.exchange, d.symbol_fs, d.date))

    def day(self, exchange: str, symbol: str, when: Any) -> Day:
        """The day of ``exchange``/``symbol`` on ``when``: a day label, or a moment, which
        picks the trading day whose recorded window holds it (in the 15-minute overlap of two
        days, the later one). StoreError if there is none."""
        found = self.days(exchange, symbol, when, when)
        if not found:
            raise StoreError(f"no recorded day for {exchange} {symbol} on {when} under {self.root}")
        return found[-1]

    def catalog(self) -> pd.DataFrame:
        """One row per day folder: exchange, symbol, symbol_fs, date, path, files' bytes."""
        rows = [
            {
                "exchange": d.exchange,
                "symbol": d.symbol,
                "symbol_fs": d.symbol_fs,
                "date": d.date,
                "path": str(d.path),
                "bytes": sum(p.stat().st_size for p in d.path.rglob("*") if p.is_file()),
            }
            for d in self.days()
        ]
        columns = ["exchange", "symbol", "symbol_fs", "date", "path", "bytes"]
        return pd.DataFrame(rows, columns=columns)

    def _concat(
        self, name: str, exchange: str | None, symbol: str | None, start: Any, end: Any
    ) -> pd.DataFrame:
        parts = []
        for d in self.days(exchange, symbol, start, end):
            if name == "diffs" and not d.folder.layout.diffs.exists():
                continue
            table = d.table(name)
            n = table.num_rows
            for column, value in (("exchange", d.exchange), ("symbol", d.symbol)):
                if column not in table.column_names:
                    table = table.append_column(column, pa.array([value] * n, pa.string()))
            parts.append(table.append_column("date", pa.array([d.date] * n, pa.date32())))
        if not parts:
            raise StoreError(f"no {name} for exchange={exchange} symbol={symbol} start={start} end={end}")
        merged = pa.concat_tables(parts, promote_options="permissive")
        frame: pd.DataFrame = merged.to_pandas(types_mapper=pd.ArrowDtype)
        return frame

    def trades(
        self, exchange: str | None = None, symbol: str | None = None, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Trades of the selected days in one DataFrame, with ``exchange``, ``symbol``, ``date``."""
        return self._concat("trades", exchange, symbol, start, end)

    def book_frames(
        self, exchange: str | None = None, symbol: str | None = None, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Book frames of the selected days in one DataFrame."""
        return self._concat("book_frames", exchange, symbol, start, end)

    def events(
        self, exchange: str | None = None, symbol: str | None = None, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Ledger rows of the selected days in one DataFrame."""
        return self._concat("events", exchange, symbol, start, end)


def open_data(root: str | Path = "data") -> Data:
    """Every day folder below ``root`` (a data root, or an exchange / symbol folder).

    Folders that cannot be opened are listed in ``Data.skipped`` instead of failing the lot.
    """
    base = Path(root)
    days: list[Day] = []
    skipped: list[str] = []
    for path in find_day_folders(base):
        try:
            days.append(open_day(path))
        except MMDataError as exc:
            skipped.append(f"{path}: {exc}")
    return Data(base, days, skipped)
