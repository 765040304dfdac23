"""Buffered row writers: durable gzip day files and the uncompressed live feed.

:class:`RowWriter` sits on :class:`~mmdata.store.gzmembers.MemberWriter`. Rows (already
encoded, newline-terminated bytes) are appended to an in-memory list; when
``buffer_rows`` rows are pending, or :meth:`RowWriter.maybe_flush` sees that
``flush_interval_s`` has passed on the injected clock, the list is joined and written as
one complete gzip member. A crash therefore loses at most the unflushed rows, never
anything already flushed. ``write`` does no syscall and no clock read, so the recorder
can push tens of thousands of rows a second through it. On open an existing file is
repaired first (:func:`~mmdata.store.gzmembers.repair_tail`: a damaged tail goes to a
sidecar, never deleted) and its last line is read back (:func:`~mmdata.store.gzmembers.last_lines`)
so the caller can resume its counters.

:class:`LiveFile` is the relay's view: plain NDJSON in ``<directory>/<name>.ndjson``,
flushed with one ``write`` per received frame so a tailer sees data with low latency.
Every ``rotate_s`` the current file is renamed to ``<name>.<UTC %Y%m%dT%H%M%S>.ndjson``
and a fresh one opened; renaming (not copying) lets a tailer notice the inode change.
Rotated files older than ``retention_s`` are deleted on purpose: the live files are a
short-lived convenience copy, the durable record is the gzip day files.

:func:`csv_field` / :func:`csv_row` encode CSV rows the way Python's :mod:`csv` reads
them (RFC 4180 quoting only where needed).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

from mmdata.errors import StoreError
from mmdata.store.gzmembers import MemberWriter, last_lines, repair_tail

__all__ = ["LiveFile", "RowWriter", "csv_field", "csv_row"]

_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
_STAMP = "%Y%m%dT%H%M%S"


def csv_field(value: str | int | float | None) -> str:
    """One CSV field: ``None`` → empty, numbers via ``str``, text quoted only if it has ``,`` ``"`` CR LF."""
    if value is None:
        return ""
    if isinstance(value, str):
        if _NEEDS_QUOTES.search(value):
            return '"' + value.replace('"', '""') + '"'
        return value
    return str(value)


def csv_row(fields: Sequence[str | int | float | None]) -> bytes:
    """A newline-terminated UTF-8 CSV row."""
    return (",".join([csv_field(v) for v in fields]) + "\n").encode()


def _store_error(action: str, path: Path, exc: OSError) -> StoreError:
    return StoreError(f"cannot {action} {path}: {exc.strerror or exc}", path=str(path))


class RowWriter:
    """Rows → gzip members. One flush = one complete member (crash-safe).

    ``header`` (no newline) is written as the first row only when the file is new or
    empty. After opening, ``repaired`` is the sidecar that received a damaged tail (None
    when nothing was damaged) and ``resumed_last_line`` the last complete line already in
    the file (None for a new file, or when that line is the header: no data row yet).
    ``rows_written`` counts data rows on disk (header excluded); ``pending_rows`` those
    not yet flushed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        header: str | None = None,
        buffer_rows: int = 1000,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = 6,
    ) -> None:
        if header is not None and ("\n" in header or "\r" in header):
            raise ValueError("header must be one line without a newline")
        self.path = Path(path)
        self.buffer_rows = max(1, buffer_rows)
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self.repaired: Path | None = None
        self.resumed_last_line: bytes | None = None
        self.rows_written = 0
        self._rows: list[bytes] = []
        self._pending = 0  # data rows in self._rows
        self._handed = 0  # data rows handed to the MemberWriter but not yet on disk (a failed flush)
        try:
            size = 0
            if self.path.exists():
                self.repaired = repair_tail(self.path)
                size = self.path.stat().st_size
            if size:
                lines = last_lines(self.path, 1)
                if lines and (header is None or lines[0] != header.encode()):
                    self.resumed_last_line = lines[0]
        except OSError as exc:
            raise _store_error("open", self.path, exc) from exc
        self._writer = MemberWriter(self.path, level=level)
        self._closed = False
        if header is not None and size == 0:
            self._rows.append(header.encode() + b"\n")
        self._last_flush = clock()

    @property
    def pending_rows(self) -> int:
        """Data rows accepted but not yet on disk (what a crash would lose)."""
        return self._pending + self._handed

    def write(self, row: bytes) -> None:
        """Buffer one complete newline-terminated row; flushes once ``buffer_rows`` are pending."""
        if self._closed:
            raise StoreError(f"{self.path} is closed", path=str(self.path))
        self._rows.append(row)
        self._pending += 1
        if self._pending >= self.buffer_rows:
            self.flush()

    def write_many(self, rows: bytes, count: int) -> None:
        """Buffer ``count`` complete rows given as one bytes object."""
        if self._closed:
            raise StoreError(f"{self.path} is closed", path=str(self.path))
        self._rows.append(rows)
        self._pending += count
        if self._pending >= self.buffer_rows:
            self.flush()

    def maybe_flush(self) -> bool:
        """Flush if anything is buffered and ``flush_interval_s`` has passed since the last flush."""
        if self._closed or not (self._rows or self._handed):
            return False
        if self._clock() - self._last_flush < self.flush_interval_s:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write everything buffered as one gzip member (nothing when empty)."""
        if self._closed:
            return
        if self._rows:
            self._writer.write(b"".join(self._rows))
            self._rows.clear()
            self._handed += self._pending
            self._pending = 0
        # On a write error the MemberWriter keeps its buffer, so a later flush retries it.
        self._writer.flush()
        self.rows_written += self._handed
        self._handed = 0
        self._last_flush = self._clock()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._writer.close()
        self._closed = True

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LiveFile:
    """Uncompressed NDJSON for the relay: live/<name>.ndjson, rotated and retained.

    The current file is always ``<directory>/<name>.ndjson``; an existing one is appended
    to (a restart continues the stream). :meth:`maybe_rotate` renames it to
    ``<name>.<UTC %Y%m%dT%H%M%S>.ndjson`` (``-1``, ``-2`` … appended if taken) once
    ``rotate_s`` have passed on ``wall`` since it was opened, then deletes rotated files of
    this name whose timestamp is more than ``retention_s`` old. That deletion is
    deliberate: the durable copy is the gzip day files.
    """

    def __init__(
        self,
        directory: str | Path,
        name: str,
        *,
        rotate_s: float = 600.0,
        retention_s: float = 7200.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"invalid live file name {name!r}")
        self.directory = Path(directory)
        self.name = name
        self.rotate_s = rotate_s
        self.retention_s = retention_s
        self._wall = wall
        self.current = self.directory / f"{name}.ndjson"
        self._rotated = re.compile(rf"{re.escape(name)}\.(\d{{8}}T\d{{6}})(?:-\d+)?\.ndjson")
        self._buffer: list[bytes] = []
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _store_error("create", self.directory, exc) from exc
        self._file: IO[bytes] | None = self._open()
        self.opened_at = wall()

    def _open(self) -> IO[bytes]:
        try:
            return open(self.current, "ab", buffering=0)  # unbuffered: flush() is one os-level write
        except OSError as exc:
            raise _store_error("open", self.current, exc) from exc

    def write(self, row: bytes) -> None:
        """Buffer one newline-terminated row in memory."""
        if self._file is None:
            raise StoreError(f"{self.current} is closed", path=str(self.current))
        self._buffer.append(row)

    def flush(self) -> None:
        """Write everything buffered with one os-level write."""
        if not self._buffer or self._file is None:
            return
        view = memoryview(b"".join(self._buffer))
        self._buffer.clear()
        try:
            while view:  # a regular file takes it all at once; loop only for a short write
                view = view[self._file.write(view) or 0 :]
        except OSError as exc:
            raise _store_error("write", self.current, exc) from exc

    def maybe_rotate(self) -> Path | None:
        """Rotate once ``rotate_s`` have passed, then prune old rotated files; the rotated path or None."""
        if self._file is None:
            return None
        now = self._wall()
        if now - self.opened_at < self.rotate_s:
            return None
        self.flush()
        self._file.close()
        self._file = None
        stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)
        target = self.directory / f"{self.name}.{stamp}.ndjson"
        k = 0
        while target.exists():
            k += 1
            target = self.directory / f"{self.name}.{stamp}-{k}.ndjson"
        try:
            self.current.rename(target)
        except OSError as exc:
            raise _store_error("rotate", self.current, exc) from exc
        self._file = self._open()
        self.opened_at = now
        self._prune(now)
        return target

    def _prune(self, now: float) -> None:
        try:
            entries = list(self.directory.iterdir())
        except OSError as exc:
            raise _store_error("list", self.directory, exc) from exc
        for entry in entries:
            m = self._rotated.fullmatch(entry.name)
            if m is None:
                continue
            try:
                born = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC).timestamp()
            except ValueError:  # digits that are no date: not one of ours
                continue
            if now - born > self.retention_s:
                try:
                    entry.unlink(missing_ok=True)
                except OSError as exc:
                    raise _store_error("delete", entry, exc) from exc

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> LiveFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
