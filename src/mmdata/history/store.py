"""The history store: exchange candles and trades fetched over REST, as Parquet day files.

Layout (docs/history.md) under an output root (the data root by default)::

    <root>/<exchange>/<SYMBOL_FS>/history/candles_<interval>/<YYYYMMDD>.parquet
    <root>/<exchange>/<SYMBOL_FS>/history/trades/<YYYYMMDD>.parquet
    <root>/<exchange>/<SYMBOL_FS>/history/<dataset>/_coverage.json

One file per UTC day of the row's time (a candle's open time, a trade's time). Prices and
quantities are the venue's exact decimal text (Parquet ``string``), never floats; the
notebook loaders (:func:`load_candles`, :func:`load_trades`) add float64 columns for
analysis next to the text.

Theory of operation
-------------------
A *dataset* (``trades`` or ``candles_<interval>``) is the set of its rows, keyed by
``open_time_ms`` (candles) or ``trade_id`` (trades), plus its **coverage**: the half-open
ms ranges ``[start, end)`` whose rows are *all* stored (an empty covered range is a range
in which the venue had nothing). :meth:`HistoryStore.write` merges new rows into the day
files (a re-fetched row replaces the stored one, so nothing is ever duplicated) and only
then extends the coverage:

1. for each UTC day touched: read the day file, concatenate the new rows, keep one row
   per key (the newest), sort, write ``.<name>.<pid>.tmp`` in the same folder, fsync,
   ``os.replace`` over the day file;
2. merge the covered range into the coverage ranges and replace ``_coverage.json`` the
   same way.

``os.replace`` is atomic, so a reader (or a crash, a ``kill -9``) sees every file either
whole before or whole after. A crash between 1 and 2 leaves rows that the coverage does
not claim yet: the next fetch asks for them again and the merge dedupes. At every instant
*coverage ⊆ stored rows*, which is what makes a rerun after any interruption fetch
exactly what is missing, with no duplicates.

A ``_coverage.json`` that is not valid JSON of the documented form raises
:class:`~mmdata.errors.StoreError` naming the file. Recovery: delete it. The day files
stay; the next fetch re-fetches the whole range and merges without duplicates.

``_coverage.json``::

    {"format": "mmdata-history-coverage", "version": 1, "exchange": "binance",
     "symbol": "BTCUSDT", "dataset": "candles_1m", "ranges": [[1763596800000, 1763683200000]],
     "source": "https://api.binance.com"}

``source`` is the REST base URL of the last write; a write from another source is
allowed (e.g. a mirror host) but logged as a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmdata.candles import INTERVALS
from mmdata.errors import ConfigError, CorruptFile, StoreError
from mmdata.exchanges import get as get_exchange
from mmdata.replay.timeparse import parse_time_ns
from mmdata.types import Candle, Trade

__all__ = [
    "CANDLE_SCHEMA",
    "COVERAGE_FILE",
    "COVERAGE_FORMAT",
    "TRADE_SCHEMA",
    "HistoryStore",
    "load_candles",
    "load_trades",
    "merge_ranges",
    "subtract_ranges",
]

log = logging.getLogger("mmdata.history.store")

COVERAGE_FILE: Final = "_coverage.json"
COVERAGE_FORMAT: Final = "mmdata-history-coverage"
_COVERAGE_VERSION: Final = 1
_DAY_MS: Final = 86_400_000

#: Columns of a ``candles_<interval>`` day file.
CANDLE_SCHEMA: Final = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("interval", pa.string(), nullable=False),
        pa.field("open_time_ms", pa.int64(), nullable=False),
        pa.field("open", pa.string(), nullable=False),
        pa.field("high", pa.string(), nullable=False),
        pa.field("low", pa.string(), nullable=False),
        pa.field("close", pa.string(), nullable=False),
        pa.field("volume", pa.string(), nullable=False),
        pa.field("quote_volume", pa.string()),
        pa.field("trades", pa.int64()),
    ]
)

#: Columns of a ``trades`` day file.
TRADE_SCHEMA: Final = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("trade_id", pa.int64(), nullable=False),
        pa.field("price", pa.string(), nullable=False),
        pa.field("qty", pa.string(), nullable=False),
        pa.field("side", pa.string(), nullable=False),
    ]
)

Range = tuple[int, int]


# -- ranges ------------------------------------------------------------------------------


def merge_ranges(ranges: Iterable[Sequence[int]]) -> list[Range]:
    """Half-open ranges sorted, with overlapping and adjacent ones joined; empty ones dropped."""
    out: list[Range] = []
    for start, end in sorted((int(r[0]), int(r[1])) for r in ranges if r[0] < r[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def subtract_ranges(start_ms: int, end_ms: int, ranges: Iterable[Sequence[int]]) -> list[Range]:
    """The parts of ``[start_ms, end_ms)`` not inside any of ``ranges``, in order."""
    out: list[Range] = []
    cursor = start_ms
    for lo, hi in merge_ranges(ranges):
        if hi <= cursor:
            continue
        if lo >= end_ms:
            break
        if lo > cursor:
            out.append((cursor, lo))
        cursor = max(cursor, hi)
        if cursor >= end_ms:
            break
    if cursor < end_ms:
        out.append((cursor, end_ms))
    return out


# -- the store -----------------------------------------------------------------------------


def _day_name(ms: int) -> str:
    return datetime.fromtimestamp(ms // _DAY_MS * 86_400, UTC).strftime("%Y%m%d")


def _day_start(name: str) -> int:
    day = datetime.strptime(name, "%Y%m%d").replace(tzinfo=UTC)
    return int(day.timestamp()) * 1000


class HistoryStore:
    """One dataset (``trades`` or ``candles_<interval>``) of one symbol under ``root``.

    ``symbol`` may be typed as users do (``BTC/USD``): it is normalised by the venue
    adapter, so the folder is the one the recorder uses. Nothing is created until the
    first :meth:`write`. Raises :class:`~mmdata.errors.ConfigError` for an unknown
    exchange, symbol or dataset.
    """

    def __init__(self, root: str | Path, exchange: str, symbol: str, dataset: str) -> None:
        adapter = get_exchange(exchange)
        self.exchange: str = adapter.name
        self.symbol: str = adapter.normalize_symbol(symbol)
        if dataset == "trades":
            self.interval: str | None = None
            self.schema: pa.Schema = TRADE_SCHEMA
            self.key, self.time_column = "trade_id", "ts_ms"
        elif dataset.startswith("candles_") and dataset[len("candles_") :] in INTERVALS:
            self.interval = dataset[len("candles_") :]
            self.schema = CANDLE_SCHEMA
            self.key = self.time_column = "open_time_ms"
        else:
            valid = ", ".join(f"candles_{name}" for name in INTERVALS)
            raise ConfigError(f"unknown history dataset {dataset!r}: use trades or one of {valid}")
        self.dataset = dataset
        #: The dataset's folder (day files and ``_coverage.json``).
        self.path: Path = Path(root) / self.exchange / adapter.symbol_fs(self.symbol) / "history" / dataset
        self.coverage_path: Path = self.path / COVERAGE_FILE

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r})"

    # -- coverage ---------------------------------------------------------------------------

    def _load_coverage(self) -> dict[str, Any] | None:
        path = self.coverage_path
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}", path=str(path)) from exc
        hint = "delete it to re-fetch the range (stored rows are kept and merged without duplicates)"
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}): {hint}", path=str(path)) from None
        if not isinstance(doc, dict) or doc.get("format") != COVERAGE_FORMAT:
            raise StoreError(f"{path} is not an mmdata history coverage file: {hint}", path=str(path))
        if doc.get("version") != _COVERAGE_VERSION:
            raise StoreError(
                f"{path} has coverage version {doc.get('version')!r}, this mmdata reads "
                f"{_COVERAGE_VERSION}: {hint}",
                path=str(path),
            )
        for name, want in (("exchange", self.exchange), ("symbol", self.symbol), ("dataset", self.dataset)):
            if doc.get(name) != want:
                raise StoreError(
                    f"{path} is about {name} {doc.get(name)!r}, not {want!r}: {hint}", path=str(path)
                )
        ranges = doc.get("ranges")
        if not isinstance(ranges, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(type(v) is int and v >= 0 for v in r) and r[0] < r[1]
            for r in ranges
        ):
            raise StoreError(
                f"{path}: 'ranges' must be a list of [start_ms, end_ms] with start < end: {hint}",
                path=str(path),
            )
        return doc

    def coverage(self) -> list[Range]:
        """The covered (fully stored) half-open ms ranges, merged and sorted."""
        doc = self._load_coverage()
        return [] if doc is None else merge_ranges(doc["ranges"])

    def source(self) -> str | None:
        """The REST base URL the last write came from (None before any)."""
        doc = self._load_coverage()
        return None if doc is None else str(doc.get("source", "")) or None

    def missing(self, start_ms: int, end_ms: int) -> list[Range]:
        """The parts of ``[start_ms, end_ms)`` not covered yet (what a fetch must ask for)."""
        return subtract_ranges(start_ms, end_ms, self.coverage())

    # -- write ---------------------------------------------------------------------------------

    def _table(self, rows: Sequence[Candle | Trade]) -> pa.Table:
        if self.interval is not None:
            candles: list[Candle] = []
            for row in rows:
                if not isinstance(row, Candle):
                    raise StoreError(f"{self.dataset}: expected candles, got {type(row).__name__}")
                if row.interval != self.interval:
                    raise StoreError(f"{self.dataset}: a {row.interval} candle cannot be stored here")
                if not row.closed:
                    raise StoreError(f"{self.dataset}: only closed candles are stored")
                candles.append(row)
            n = len(candles)
            return pa.table(
                {
                    "exchange": [self.exchange] * n,
                    "symbol": [self.symbol] * n,
                    "interval": [self.interval] * n,
                    "open_time_ms": [c.open_time_ms for c in candles],
                    "open": [c.open for c in candles],
                    "high": [c.high for c in candles],
                    "low": [c.low for c in candles],
                    "close": [c.close for c in candles],
                    "volume": [c.volume for c in candles],
                    "quote_volume": [c.quote_volume for c in candles],
                    "trades": [c.trades for c in candles],
                },
                schema=self.schema,
            )
        trades: list[Trade] = []
        ids: list[int] = []
        for row in rows:
            if not isinstance(row, Trade):
                raise StoreError(f"trades: expected trades, got {type(row).__name__}")
            try:
                ids.append(int(row.trade_id))
            except ValueError:
                raise StoreError(f"trades: trade id {row.trade_id!r} is not an integer") from None
            trades.append(row)
        n = len(trades)
        return pa.table(
            {
                "exchange": [self.exchange] * n,
                "symbol": [self.symbol] * n,
                "ts_ms": [t.ts_ms for t in trades],
                "trade_id": ids,
                "price": [t.price for t in trades],
                "qty": [t.qty for t in trades],
                "side": [t.side for t in trades],
            },
            schema=self.schema,
        )

    def write(
        self,
        rows: Sequence[Candle | Trade],
        covered: Range | None = None,
        *,
        source: str = "",
    ) -> int:
        """Merge ``rows`` into the day files, then add ``covered`` to the coverage.

        ``covered`` must only name a range whose rows are all in ``rows`` or already
        stored. A row whose key is already stored replaces it (a re-fetch never
        duplicates). Returns how many rows were new. Raises
        :class:`~mmdata.errors.StoreError` (:class:`~mmdata.errors.CorruptFile` for a
        damaged day file, which is left as it is).
        """
        table = self._table(rows)
        if covered is not None and not covered[0] <= covered[1]:
            raise StoreError(f"covered range {covered} has its end before its start")
        new = 0
        if table.num_rows:
            times = table.column(self.time_column).to_numpy()
            days = times // _DAY_MS
            for day in np.unique(days):
                part = table.filter(pa.array(days == day))
                new += self._merge_day(_day_name(int(day) * _DAY_MS), part)
        if covered is not None and covered[0] < covered[1]:
            self._add_coverage(covered, source)
        return new

    def _merge_day(self, name: str, rows: pa.Table) -> int:
        path = self.path / f"{name}.parquet"
        old = self._read_day(path) if path.exists() else None
        merged = rows if old is None else pa.concat_tables([old, rows])
        # newest wins: stable sort by key, then keep the last row of each key
        keys = merged.column(self.key).to_numpy()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = sorted_keys[1:] != sorted_keys[:-1]
        merged = merged.take(pa.array(order[last]))
        sort_keys = [("ts_ms", "ascending"), ("trade_id", "ascending")] if self.interval is None else []
        if sort_keys:
            merged = merged.take(pc.sort_indices(merged, sort_keys=sort_keys))
        self._replace(path, lambda fh: pq.write_table(merged, fh, compression="zstd"))
        return int(merged.num_rows) - (0 if old is None else int(old.num_rows))

    def _add_coverage(self, covered: Range, source: str) -> None:
        doc = self._load_coverage()
        ranges = merge_ranges([*([] if doc is None else doc["ranges"]), covered])
        old_source = "" if doc is None else str(doc.get("source", ""))
        if old_source and source and old_source != source:
            log.warning(
                "%s: history so far came from %s, now adding data from %s", self.path, old_source, source
            )
        body = {
            "format": COVERAGE_FORMAT,
            "version": _COVERAGE_VERSION,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "dataset": self.dataset,
            "ranges": [list(r) for r in ranges],
            "source": source or old_source,
        }
        data = json.dumps(body, indent=1).encode() + b"\n"
        self._replace(self.coverage_path, lambda fh: fh.write(data))

    def _replace(self, path: Path, write: Callable[[BinaryIO], object]) -> None:
        """Write through ``write(file)`` to a temporary file beside ``path``, then atomically
        replace ``path`` with it (a crash leaves the old file or the new one, never half)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}", path=str(path)) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    # -- read ----------------------------------------------------------------------------------

    def _read_day(self, path: Path) -> pa.Table:
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            return self.schema.empty_table()
        except (OSError, pa.ArrowException) as exc:
            raise CorruptFile(
                f"{path} is not a readable Parquet file ({exc}): delete it to re-fetch its day",
                path=str(path),
            ) from None
        try:
            return table.select(self.schema.names).cast(self.schema)
        except (KeyError, pa.ArrowException) as exc:
            raise CorruptFile(f"{path} does not hold {self.dataset} rows ({exc})", path=str(path)) from None

    def day_files(self) -> list[Path]:
        """The day files present, oldest day first."""
        if not self.path.is_dir():
            return []
        files = [p for p in self.path.glob("*.parquet") if len(p.stem) == 8 and p.stem.isdigit()]
        return sorted(files)

    def _days(self, start_ms: int | None, end_ms: int | None) -> Iterator[Path]:
        for path in self.day_files():
            day = _day_start(path.stem)
            if (start_ms is None or day + _DAY_MS > start_ms) and (end_ms is None or day < end_ms):
                yield path

    def read(self, start_ms: int | None = None, end_ms: int | None = None) -> pa.Table:
        """The stored rows with time in ``[start_ms, end_ms)`` (None: unbounded), in time
        order, exact text columns (:data:`CANDLE_SCHEMA` / :data:`TRADE_SCHEMA`)."""
        tables = [self._read_day(path) for path in self._days(start_ms, end_ms)]
        table = pa.concat_tables(tables) if tables else self.schema.empty_table()
        if start_ms is not None or end_ms is not None:
            times = table.column(self.time_column)
            mask = pc.and_(
                pc.greater_equal(times, start_ms if start_ms is not None else 0),
                pc.less(times, end_ms if end_ms is not None else 2**62),
            )
            table = table.filter(mask)
        return table.combine_chunks()


# -- notebook loaders ----------------------------------------------------------------------


def _ms(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time_ns(value) // 1_000_000
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _floats(table: pa.Table, names: Sequence[str]) -> dict[str, pa.ChunkedArray]:
    # exact decimal text -> float64, correctly rounded (the one place floats appear)
    return {name: pc.cast(table.column(name), pa.float64()) for name in names}


def load_candles(  # noqa: PLR0917 (the notebook signature: root, venue, symbol, interval, range)
    root: str | Path,
    exchange: str,
    symbol: str,
    interval: str,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Stored exchange candles as a pyarrow-backed DataFrame, oldest first.

    Columns: ``open_time`` (UTC timestamp), ``open_time_ms``, ``open``/``high``/``low``/
    ``close``/``volume`` (float64) and their exact ``*_text``, ``quote_volume_text``,
    ``trades``. ``start``/``end`` (half-open, on open time) take ms, ISO-8601 text or
    datetimes. ``root`` is the history output root (the data root by default).
    """
    if interval not in INTERVALS:
        raise ConfigError(f"unknown interval {interval!r}: use one of {', '.join(INTERVALS)}")
    store = HistoryStore(root, exchange, symbol, f"candles_{interval}")
    table = store.read(_ms(start, "start"), _ms(end, "end"))
    prices = ["open", "high", "low", "close", "volume"]
    floats = _floats(table, prices)
    columns: dict[str, Any] = {
        "open_time": table.column("open_time_ms").cast(pa.timestamp("ms", tz="UTC")),
        "open_time_ms": table.column("open_time_ms"),
        **floats,
        **{f"{name}_text": table.column(name) for name in prices},
        "quote_volume_text": table.column("quote_volume"),
        "trades": table.column("trades"),
    }
    frame: pd.DataFrame = pa.table(columns).to_pandas(types_mapper=pd.ArrowDtype)
    return frame


def load_trades(
    root: str | Path,
    exchange: str,
    symbol: str,
    start: Any = None,
    end: Any = None,
) -> pd.DataFrame:
    """Stored exchange trades as a pyarrow-backed DataFrame in (time, id) order.

    Columns: ``ts`` (UTC timestamp), ``ts_ms``, ``trade_id``, ``price``/``qty`` (float64)
    and their exact ``price_text``/``qty_text``, ``side`` (taker side). ``start``/``end``
    (half-open) take ms, ISO-8601 text or datetimes.
    """
    store = HistoryStore(root, exchange, symbol, "trades")
    table = store.read(_ms(start, "start"), _ms(end, "end"))
    columns: dict[str, Any] = {
        "ts": table.column("ts_ms").cast(pa.timestamp("ms", tz="UTC")),
        "ts_ms": table.column("ts_ms"),
        "trade_id": table.column("trade_id"),
        **_floats(table, ["price", "qty"]),
        "price_text": table.column("price"),
        "qty_text": table.column("qty"),
        "side": table.column("side"),
    }
    frame: pd.DataFrame = pa.table(columns).to_pandas(types_mapper=pd.ArrowDtype)
    return frame
