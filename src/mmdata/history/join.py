"""``history combine`` and ``history gaps``: recorded candles joined with exchange candles.

Both run the same three steps, then differ in what they report:

1. **Exchange candles** for ``[start, end)`` come from the history store
   (:mod:`mmdata.history.store`). Ranges it has not covered yet are fetched first
   (:func:`~mmdata.history.fetch.fetch_history`: paginated, rate-limited, resumable);
   with ``fetch=False`` nothing is fetched and uncovered ranges are reported.
2. **Local candles** are built from the recorder's trades (:mod:`mmdata.history.local`)
   exactly like the candle server builds them, with the set of candles whose whole
   interval the recorder saw (its trade stream connected, no sequence gap).
3. **The join** (:mod:`mmdata.candles.combine`, pure): :func:`combine_history` writes a
   continuous series with a ``source`` column and a mismatch report;
   :func:`find_history_gaps` lists the ranges where the exchange traded but the local
   data has no complete candle.

The end of the range is clipped to the last closed candle: a running candle is neither
fetched nor compared.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmdata.candles import INTERVALS, iso_time
from mmdata.candles.combine import (
    CombinedRow,
    GapRange,
    Mismatch,
    Tolerance,
    combine_candles,
    find_gaps,
    traded,
)
from mmdata.errors import ConfigError, StoreError
from mmdata.exchanges import get as get_exchange
from mmdata.exchanges.base import symbol_fs
from mmdata.history.fetch import FetchOptions, FetchResult, fetch_history
from mmdata.history.local import local_candles, local_coverage
from mmdata.history.store import HistoryStore
from mmdata.types import Candle

__all__ = [
    "CombineReport",
    "GapsReport",
    "JoinOptions",
    "combine_history",
    "exchange_candles",
    "find_history_gaps",
]

log = logging.getLogger("mmdata.history")

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class JoinOptions:
    """What to join: one symbol of one exchange, one interval, ``[start_ms, end_ms)``.

    ``data_dir`` holds the recorded day folders; ``history_root`` the history store
    (default: ``data_dir``). ``fetch=False`` works offline from the store alone.
    """

    exchange: str
    symbol: str
    start_ms: int
    end_ms: int
    data_dir: Path
    interval: str = "1m"
    history_root: Path | None = None
    rest_url: str | None = None
    fetch: bool = True
    page_limit: int | None = None
    pace_s: float | None = None
    retries: int = 8
    tolerance: Tolerance = field(default_factory=Tolerance)

    @property
    def store_root(self) -> Path:
        """Where the exchange history lives."""
        return self.history_root if self.history_root is not None else self.data_dir


@dataclass(slots=True)
class _Exchange:
    symbol: str  # canonical
    start_ms: int  # the range start, floored to the interval
    candles: list[Candle]
    fetch: FetchResult | None
    uncovered: list[tuple[int, int]]
    end_ms: int  # the range end actually compared (clipped to the last closed candle)


@dataclass(slots=True)
class CombineReport:
    """What :func:`combine_history` did; ``ok`` is False when a candle mismatched."""

    exchange: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    rows: list[CombinedRow]
    mismatches: list[Mismatch]
    out: Path | None
    report: Path | None
    fetch: FetchResult | None
    uncovered: list[tuple[int, int]]

    @property
    def ok(self) -> bool:
        """No mismatch and exchange data for the whole range."""
        return not self.mismatches and not self.uncovered

    def sources(self) -> dict[str, int]:
        """Row count per ``source``."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.source] = counts.get(row.source, 0) + 1
        return counts

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary (rows are in the output file, not here)."""
        return {
            "ok": self.ok,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "interval": self.interval,
            "start": iso_time(self.start_ms),
            "end": iso_time(self.end_ms),
            "rows": len(self.rows),
            "sources": self.sources(),
            "mismatches": [_jsonable(asdict(m)) for m in self.mismatches],
            "out": str(self.out) if self.out is not None else None,
            "report": str(self.report) if self.report is not None else None,
            "fetched_rows": self.fetch.rows if self.fetch is not None else 0,
            "uncovered": [[iso_time(s), iso_time(e)] for s, e in self.uncovered],
        }


@dataclass(slots=True)
class GapsReport:
    """What :func:`find_history_gaps` found; ``ok`` is False when a gap exists."""

    exchange: str
    symbol: str
    interval: str
    start_ms: int
    end_ms: int
    gaps: list[GapRange]
    intervals: int  # intervals in the compared range
    complete: int  # of those, local candles that are complete
    exchange_traded: int  # of those, intervals in which the exchange traded
    fetch: FetchResult | None
    uncovered: list[tuple[int, int]]

    @property
    def ok(self) -> bool:
        """No gap, and exchange data for the whole range."""
        return not self.gaps and not self.uncovered

    def missing_intervals(self) -> int:
        """Intervals with exchange trades and no complete local candle."""
        return sum(g.intervals for g in self.gaps)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready report."""
        return {
            "ok": self.ok,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "interval": self.interval,
            "start": iso_time(self.start_ms),
            "end": iso_time(self.end_ms),
            "intervals": self.intervals,
            "complete_local": self.complete,
            "exchange_traded": self.exchange_traded,
            "missing_intervals": self.missing_intervals(),
            "gaps": [
                {**_jsonable(asdict(g)), "start": iso_time(g.start_ms), "end": iso_time(g.end_ms)}
                for g in self.gaps
            ],
            "fetched_rows": self.fetch.rows if self.fetch is not None else 0,
            "uncovered": [[iso_time(s), iso_time(e)] for s, e in self.uncovered],
        }


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, int | float | str | bool) or v is None else str(v)) for k, v in data.items()
    }


def _check(options: JoinOptions) -> str:
    """The canonical symbol; ConfigError for unusable options."""
    interval = INTERVALS.get(options.interval)
    if interval is None:
        raise ConfigError(f"unknown interval {options.interval!r}: use one of {', '.join(INTERVALS)}")
    if options.end_ms <= options.start_ms:
        raise ConfigError(
            f"empty range: end {iso_time(options.end_ms)} is not after start {iso_time(options.start_ms)}"
        )
    try:
        venue = get_exchange(options.exchange)
    except Exception as exc:  # unknown exchange name: the registry says which exist
        raise ConfigError(str(exc)) from None
    return venue.normalize_symbol(options.symbol)


def exchange_candles(
    options: JoinOptions, *, progress: Progress | None = None, now_ms: int | None = None
) -> tuple[list[Candle], FetchResult | None, list[tuple[int, int]], int]:
    """Closed exchange candles of the range from the store (fetching what is missing unless
    ``options.fetch`` is False): ``(candles, fetch result, uncovered ranges, clipped end)``."""
    ex = _exchange(options, progress=progress, now_ms=now_ms)
    return ex.candles, ex.fetch, ex.uncovered, ex.end_ms


def _exchange(options: JoinOptions, *, progress: Progress | None, now_ms: int | None) -> _Exchange:
    symbol = _check(options)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    interval = INTERVALS[options.interval]
    start = interval.floor(options.start_ms)
    end = min(options.end_ms, interval.floor(now))
    if end <= start:
        raise ConfigError(
            f"no closed {options.interval} candle in {iso_time(options.start_ms)} .. "
            f"{iso_time(options.end_ms)} yet (now {iso_time(now)})"
        )
    result: FetchResult | None = None
    if options.fetch:
        result = fetch_history(
            FetchOptions(
                exchange=options.exchange,
                symbol=symbol,
                kind="candles",
                interval=options.interval,
                start_ms=start,
                end_ms=end,
                out_root=options.store_root,
                rest_url=options.rest_url,
                page_limit=options.page_limit,
                pace_s=options.pace_s,
                retries=options.retries,
            ),
            progress=progress,
            now_ms=now,
        )
    store = HistoryStore(options.store_root, options.exchange, symbol, f"candles_{options.interval}")
    uncovered = store.missing(start, end)
    table = store.read(start, end)
    candles = _candles_of(table, options.exchange, symbol, options.interval)
    return _Exchange(symbol, start, candles, result, uncovered, end)


def _candles_of(table: pa.Table, exchange: str, symbol: str, interval: str) -> list[Candle]:
    cols = table.to_pydict()
    out: list[Candle] = []
    for i, open_ms in enumerate(cols.get("open_time_ms", [])):
        out.append(
            Candle(
                exchange,
                symbol,
                interval,
                int(open_ms),
                cols["open"][i],
                cols["high"][i],
                cols["low"][i],
                cols["close"][i],
                cols["volume"][i],
                cols["quote_volume"][i] if "quote_volume" in cols else None,
                cols["trades"][i] if "trades" in cols else None,
                True,
            )
        )
    return out


def _default_out(options: JoinOptions, symbol: str, start: int, end: int, suffix: str) -> Path:
    stamp = f"{_stamp(start)}_{_stamp(end)}"
    folder = options.store_root / options.exchange / symbol_fs(symbol) / "history" / "combined"
    return folder / f"combined_{options.interval}_{symbol_fs(symbol)}_{stamp}{suffix}"


def _stamp(ms: int) -> str:
    return iso_time(ms).replace("-", "").replace(":", "").replace(".000", "").rstrip("Z") + "Z"


def combine_history(
    options: JoinOptions,
    *,
    out: Path | None = None,
    report: Path | None = None,
    progress: Progress | None = None,
    now_ms: int | None = None,
) -> CombineReport:
    """Join local and exchange candles into one continuous series (see the module docstring).

    Writes the series to ``out`` (``.parquet`` or ``.csv``; default under the history root's
    ``history/combined/``) and, when a candle mismatched, the mismatches to ``report`` (CSV;
    default beside ``out``). Every mismatch is also logged at ERROR level.
    """
    ex = _exchange(options, progress=progress, now_ms=now_ms)
    symbol, start = ex.symbol, ex.start_ms
    local, complete = local_candles(
        options.data_dir, options.exchange, symbol, options.interval, start, ex.end_ms
    )
    result = combine_candles(
        local, complete, ex.candles, options.interval, start, ex.end_ms, tolerance=options.tolerance
    )
    for m in result.mismatches:
        log.error(
            "candle mismatch %s %s %s at %s: %s local=%s exchange=%s",
            options.exchange,
            symbol,
            options.interval,
            iso_time(m.open_time_ms),
            m.field,
            m.local,
            m.exchange,
        )
    target = out if out is not None else _default_out(options, symbol, start, ex.end_ms, ".parquet")
    _write_rows(target, result.rows, options.exchange, symbol, options.interval)
    report_path: Path | None = None
    if result.mismatches:
        report_path = report if report is not None else target.with_name(target.stem + "_mismatches.csv")
        _write_mismatches(report_path, result.mismatches)
    return CombineReport(
        options.exchange,
        symbol,
        options.interval,
        start,
        ex.end_ms,
        list(result.rows),
        list(result.mismatches),
        target,
        report_path,
        ex.fetch,
        ex.uncovered,
    )


def find_history_gaps(
    options: JoinOptions, *, progress: Progress | None = None, now_ms: int | None = None
) -> GapsReport:
    """Ranges where the exchange traded but no complete local candle exists."""
    ex = _exchange(options, progress=progress, now_ms=now_ms)
    symbol, start = ex.symbol, ex.start_ms
    local, complete = local_candles(
        options.data_dir, options.exchange, symbol, options.interval, start, ex.end_ms
    )
    seen = local_coverage(options.data_dir, options.exchange, symbol, start, ex.end_ms)
    gaps = find_gaps(local, complete, ex.candles, options.interval, start, ex.end_ms, coverage=seen)
    n = (ex.end_ms - start) // INTERVALS[options.interval].ms
    busy = sum(1 for c in ex.candles if start <= c.open_time_ms < ex.end_ms and traded(c))
    inside = sum(1 for t in complete if start <= t < ex.end_ms)
    return GapsReport(
        options.exchange,
        symbol,
        options.interval,
        start,
        ex.end_ms,
        list(gaps),
        n,
        inside,
        busy,
        ex.fetch,
        ex.uncovered,
    )


_ROW_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("interval", pa.string()),
        ("open_time_ms", pa.int64()),
        ("open", pa.string()),
        ("high", pa.string()),
        ("low", pa.string()),
        ("close", pa.string()),
        ("volume", pa.string()),
        ("trades", pa.int64()),
        ("source", pa.string()),
    ]
)


def _write_rows(path: Path, rows: Sequence[CombinedRow], exchange: str, symbol: str, interval: str) -> None:
    columns: dict[str, list[Any]] = {name: [] for name in _ROW_SCHEMA.names}
    for row in rows:
        columns["exchange"].append(exchange)
        columns["symbol"].append(symbol)
        columns["interval"].append(interval)
        columns["open_time_ms"].append(row.open_time_ms)
        columns["open"].append(row.open)
        columns["high"].append(row.high)
        columns["low"].append(row.low)
        columns["close"].append(row.close)
        columns["volume"].append(row.volume)
        columns["trades"].append(row.trades)
        columns["source"].append(row.source)
    table = pa.table(columns, schema=_ROW_SCHEMA)
    _atomic(path, lambda tmp: _write_table(table, tmp, path.suffix.lower()))


def _write_table(table: pa.Table, tmp: Path, suffix: str) -> None:
    if suffix == ".csv":
        pacsv.write_csv(table, tmp)
    elif suffix == ".parquet":
        pq.write_table(table, tmp)
    else:
        raise ConfigError(f"output must end in .parquet or .csv, got {suffix or 'no suffix'}")


def _write_mismatches(path: Path, mismatches: Sequence[Mismatch]) -> None:
    rows = [asdict(m) for m in mismatches]
    names = list(rows[0]) if rows else []

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["open_time", *names])
            writer.writeheader()
            for row in rows:
                writer.writerow({"open_time": iso_time(int(row["open_time_ms"])), **row})

    _atomic(path, write)


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}", path=str(path)) from exc
