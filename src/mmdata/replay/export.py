"""Hive-partitioned Parquet export of recorded day folders (``mmdata export parquet``).

::

    OUT/<table>/exchange=<exchange>/symbol=<SYMBOL_FS>/date=<YYYY-MM-DD>/part-0.parquet
    OUT/_mmdata_export.json        the manifest: which source file (size, mtime) made each file

One file per table and day, holding the columns of :mod:`mmdata.replay.tables` (book frames
with their exact ``*_text`` columns, diffs with ``raw``) plus ``venue_symbol`` (the venue's
spelling, ``BTC/USD``). ``exchange``, ``symbol`` and ``date`` are *only* in the path:
pyarrow.dataset, DuckDB and Spark add them from it, and refuse a file that also holds them.
Timestamps are stored in microseconds (Spark cannot read nanosecond Parquet timestamps);
the exact ``recv_time_ns`` integer is kept beside them.

Re-running is cheap and safe: each file is written under a temporary name in its folder and
renamed into place, and a partition whose source file has the same size and mtime as at the
last export is skipped. docs/export.md shows how to read the result.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.errors import MMDataError, StoreError
from mmdata.replay.day import Day, open_day
from mmdata.replay.tables import DataWarning
from mmdata.store.dayfolder import find_day_folders

__all__ = [
    "MANIFEST_NAME",
    "PARTITION_COLUMNS",
    "TABLES",
    "ExportNote",
    "ExportSummary",
    "TableCounts",
    "export_parquet",
]

#: Tables exported by default, in export order.
TABLES: tuple[str, ...] = ("trades", "book_frames", "diffs", "events", "gaps")
#: Hive partition keys, outermost first; never stored inside the files.
PARTITION_COLUMNS: tuple[str, ...] = ("exchange", "symbol", "date")
#: The manifest, at the top of the export folder.
MANIFEST_NAME = "_mmdata_export.json"

#: Bumped when the file contents change: an older manifest is then ignored and every partition rewritten.
_MANIFEST_VERSION = 1
_READ_OPTIONS: dict[str, dict[str, Any]] = {"book_frames": {"text": True}, "diffs": {"raw": True}}
# ~128 MiB row groups for diff rows with their raw frame; far smaller for trades.
_ROW_GROUP_ROWS = 1 << 17

#: ``progress(done, total, label)``.
Progress = Callable[[int, int, str], None]


@dataclass(slots=True)
class TableCounts:
    """What one export run did for one table (counts of partitions, i.e. days)."""

    #: Rows written in this run (skipped partitions add nothing).
    rows: int = 0
    written: int = 0
    #: Unchanged source since the last export: the existing file was kept.
    skipped: int = 0
    #: The day has no such file (``diffs/`` recorded with STORE_DEPTH_DIFFS=false).
    absent: int = 0
    #: The file could not be read at all; nothing was written (retried on the next run).
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        """The counts as a JSON object."""
        return {
            "rows": self.rows,
            "written": self.written,
            "skipped": self.skipped,
            "absent": self.absent,
            "failed": self.failed,
        }


@dataclass(frozen=True, slots=True)
class ExportNote:
    """A warning, absent file or error about one table of one day folder.

    ``table`` is empty when the whole day folder could not be opened.
    """

    table: str
    day: str
    message: str

    def as_json(self) -> dict[str, str]:
        """The note as a JSON object."""
        return {"table": self.table, "day": self.day, "message": self.message}


@dataclass(slots=True)
class ExportSummary:
    """The result of :func:`export_parquet`."""

    source: Path
    out: Path
    #: Day folders found below ``source``.
    days: int
    tables: dict[str, TableCounts]
    #: Damaged source files (:class:`~mmdata.replay.tables.DataWarning` text): their complete
    #: rows were exported. Repeated on later runs while the file is unchanged.
    warnings: list[ExportNote] = field(default_factory=list)
    absent: list[ExportNote] = field(default_factory=list)
    errors: list[ExportNote] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No warning and no error (absent files are not problems)."""
        return not self.warnings and not self.errors

    def as_json(self) -> dict[str, Any]:
        """Everything as one JSON-serialisable object."""
        return {
            "ok": self.ok,
            "source": str(self.source),
            "out": str(self.out),
            "days": self.days,
            "seconds": round(self.seconds, 3),
            "tables": {name: counts.as_json() for name, counts in self.tables.items()},
            "warnings": [n.as_json() for n in self.warnings],
            "absent": [n.as_json() for n in self.absent],
            "errors": [n.as_json() for n in self.errors],
        }


class _Manifest:
    """``OUT/_mmdata_export.json``: per partition file, the source file's size and mtime_ns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return  # none yet, or unreadable: every partition is simply written again
        if isinstance(doc, dict) and doc.get("version") == _MANIFEST_VERSION:
            parts = doc.get("partitions")
            if isinstance(parts, dict):
                self.entries = {k: v for k, v in parts.items() if isinstance(v, dict)}

    def unchanged(self, key: str, source: os.stat_result, target: Path) -> dict[str, Any] | None:
        """The entry when ``target`` is still the file exported from this exact ``source``."""
        entry = self.entries.get(key)
        if (
            entry is None
            or entry.get("size") != source.st_size
            or entry.get("mtime_ns") != source.st_mtime_ns
        ):
            return None
        try:
            size = target.stat().st_size
        except OSError:
            return None
        return entry if entry.get("bytes") == size else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self.entries[key] = entry
        self.dirty = True

    def save(self) -> None:
        if not self.dirty:
            return
        doc = {"version": _MANIFEST_VERSION, "partitions": self.entries}
        _replace_atomically(
            self.path,
            lambda tmp: tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)),
        )
        self.dirty = False


def _replace_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """Write through ``write(tmp)`` then rename over ``target``: readers never see half a file.

    The temporary name starts with ``.`` and does not end in ``.parquet``, so dataset readers
    (which skip hidden files) and ``*.parquet`` globs never pick up a leftover one.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _check_tables(tables: Iterable[str]) -> list[str]:
    # one name given as a plain string must not be iterated letter by letter
    names = [tables] if isinstance(tables, str) else list(dict.fromkeys(tables))  # dedupe, keep order
    unknown = [n for n in names if n not in TABLES]
    if unknown:
        raise ValueError(f"unknown table {unknown[0]!r}: choose from {', '.join(TABLES)}")
    if not names:
        raise ValueError(f"no table to export: choose from {', '.join(TABLES)}")
    return names


def _source_path(day: Day, table: str) -> Path:
    path: Path = getattr(day.folder.layout, table)
    return path


def _partition(day: Day, table: str) -> str:
    """The partition file's path relative to the export folder (also its manifest key)."""
    return (
        f"{table}/exchange={day.exchange}/symbol={day.symbol_fs}/date={day.date.isoformat()}/part-0.parquet"
    )


def _for_parquet(table: pa.Table, venue_symbol: str) -> pa.Table:
    """Drop the partition columns (the path carries them) and add ``venue_symbol``."""
    table = table.drop_columns([c for c in PARTITION_COLUMNS if c in table.column_names])
    return table.append_column(
        "venue_symbol", pa.repeat(pa.scalar(venue_symbol, pa.string()), table.num_rows)
    )


def _write_parquet(table: pa.Table, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            row_group_size=_ROW_GROUP_ROWS,
            # Spark rejects TIMESTAMP(NANOS); recv_time_ns keeps the exact value.
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
        )

    _replace_atomically(target, write)
    return target.stat().st_size


def _read(day: Day, table: str) -> tuple[pa.Table, list[str]]:
    """The day's table and the DataWarning texts raised while reading it (other warnings pass)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = day.table(table, **_READ_OPTIONS.get(table, {}))
    problems: list[str] = []
    for w in caught:
        if issubclass(w.category, DataWarning):
            problems.append(str(w.message))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result, problems


def export_parquet(
    source: str | Path,
    out: str | Path,
    *,
    tables: Iterable[str] = TABLES,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportSummary:
    """Export every day folder at or below ``source`` into ``out`` as hive-partitioned Parquet.

    ``source`` is a data root, an exchange or symbol folder, or one day folder. ``tables``
    picks among :data:`TABLES`. A partition whose source file is unchanged since the last
    export into ``out`` (same size and mtime_ns, per the manifest) is skipped unless
    ``force``. A day without a table's file (no ``diffs/``) is listed in
    ``summary.absent``; a damaged file has its complete rows exported and its
    :class:`~mmdata.replay.tables.DataWarning` text listed in ``summary.warnings``; a file
    that cannot be read at all, or a day folder that cannot be opened, goes to
    ``summary.errors`` and the export carries on.

    ``progress(done, total, label)`` is called before each partition (``label`` names it:
    ``"trades kraken/BTCUSD/2026-11-21"``) and once more with ``done == total`` at the end.

    Raises ``ValueError`` for an unknown table name, :class:`~mmdata.errors.StoreError` when
    ``source`` holds no day folder or ``out`` cannot be written.
    """
    started = time.perf_counter()
    names = _check_tables(tables)
    src, dest = Path(source), Path(out)
    folders = find_day_folders(src)
    if not folders:
        raise StoreError(
            f"{src} holds no recorded day folder (<exchange>/<SYMBOL>/<YYYYMMDD>)", path=str(src)
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {dest}: {exc.strerror or exc}", path=str(dest)) from exc
    summary = ExportSummary(src, dest, len(folders), {n: TableCounts() for n in names})
    manifest = _Manifest(dest / MANIFEST_NAME)
    exported_from: dict[str, Path] = {}  # partition -> day folder, to catch two folders of one day
    total = len(folders) * len(names)
    done = 0
    try:
        for folder in folders:
            try:
                day = open_day(folder)
            except MMDataError as exc:
                summary.errors.append(ExportNote("", str(folder), str(exc)))
                for name in names:
                    summary.tables[name].failed += 1
                done += len(names)
                continue
            for name in names:
                key = _partition(day, name)
                if progress is not None:
                    progress(done, total, f"{name} {day.exchange}/{day.symbol_fs}/{day.date.isoformat()}")
                done += 1
                first = exported_from.setdefault(key, folder)
                if first != folder:
                    summary.tables[name].failed += 1
                    message = f"same exchange, symbol and date as {first}: only that one is exported"
                    summary.errors.append(ExportNote(name, str(folder), message))
                    continue
                _export_one(day, name, key=key, dest=dest, manifest=manifest, summary=summary, force=force)
    finally:
        try:
            manifest.save()  # also after an interruption: finished partitions are not redone
        except OSError as exc:
            raise StoreError(f"cannot write {manifest.path}: {exc.strerror or exc}", path=str(dest)) from exc
        summary.seconds = time.perf_counter() - started
    if progress is not None:
        progress(total, total, "done")
    return summary


def _export_one(
    day: Day,
    name: str,
    *,
    key: str,
    dest: Path,
    manifest: _Manifest,
    summary: ExportSummary,
    force: bool,
) -> None:
    counts = summary.tables[name]
    where = str(day.path)
    path = _source_path(day, name)
    try:
        # stat before reading: rows appended meanwhile (a day still being recorded) change
        # size/mtime, so the next run exports the partition again.
        stat = path.stat()
    except FileNotFoundError:
        counts.absent += 1
        summary.absent.append(ExportNote(name, where, f"no {path.relative_to(day.path)}"))
        return
    except OSError as exc:
        counts.failed += 1
        summary.errors.append(ExportNote(name, where, f"cannot read {path}: {exc.strerror or exc}"))
        return
    target = dest / key
    kept = None if force else manifest.unchanged(key, stat, target)
    if kept is not None:
        counts.skipped += 1
        previous = kept.get("warnings")
        if isinstance(previous, list):
            summary.warnings += [ExportNote(name, where, str(m)) for m in previous]
        return
    try:
        table, problems = _read(day, name)
    except (MMDataError, pa.ArrowException, OSError, ValueError) as exc:
        counts.failed += 1
        summary.errors.append(ExportNote(name, where, f"{path.name}: {exc}"))
        return
    table = _for_parquet(table, day.symbol)
    try:
        size = _write_parquet(table, target)
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}", path=str(target)) from exc
    counts.written += 1
    counts.rows += table.num_rows
    summary.warnings += [ExportNote(name, where, m) for m in problems]
    manifest.put(
        key,
        {
            "source": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "rows": table.num_rows,
            "bytes": size,
            "warnings": problems,
        },
    )
