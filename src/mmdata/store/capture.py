"""Capture files: raw venue traffic as JSON Lines, plain or gzip (ARCHITECTURE.md §5).

Line 1 is a header ``{"format": "mmdata-capture", "version": 1, "exchange": ..., "symbols": [...], ...}``;
every other line is a record::

    {"t": <int ns since epoch>, "kind": "ws_open"|"ws_recv"|"ws_sent"|"ws_close"|"rest",
     "url": str, "data": <raw text exactly as on the wire>, "status": <int, rest only>}

Reading streams line by line (a capture may be far larger than memory). Damage is
reported, not fatal where it can be survived:

* a line that is not a JSON object with ``t`` and ``kind`` is counted in
  :attr:`CaptureReader.bad_lines` (with its line number in ``bad_line_numbers``) and skipped;
* a line longer than ``max_line_bytes`` is skipped the same way without being held in memory;
* a truncated or corrupt gzip stream ends iteration with :class:`~mmdata.errors.CorruptFile`
  naming the last good line, after every complete record before it was yielded;
* a missing or foreign header raises :class:`~mmdata.errors.CorruptFile` at open.

Gzip is recognised by its magic bytes, not the file name. Writing always produces a
valid file: the gzip writer is flushed/closed by :meth:`CaptureWriter.close`.
"""

from __future__ import annotations

import gzip
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from mmdata.errors import CorruptFile, StoreError

__all__ = [
    "CAPTURE_FORMAT",
    "CAPTURE_KINDS",
    "CaptureHeader",
    "CaptureReader",
    "CaptureRecord",
    "CaptureWriter",
    "gzip_lines",
    "open_capture",
    "read_gzip",
]

CAPTURE_FORMAT = "mmdata-capture"
CAPTURE_KINDS = frozenset({"ws_open", "ws_recv", "ws_sent", "ws_close", "rest"})
_GZIP_MAGIC = b"\x1f\x8b"
_DEFAULT_MAX_LINE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    """The first line of a capture; ``extra`` holds any other header fields (``depth``, ``source``)."""

    exchange: str
    symbols: tuple[str, ...]
    version: int
    extra: dict[str, Any]


@dataclass(slots=True)
class CaptureRecord:
    """One recorded frame or REST answer; ``line`` is its 1-based line number in the file."""

    t: int
    kind: str
    url: str
    data: str
    status: int | None
    line: int


_CHUNK = 1 << 16
_TOO_LONG = object()  # marker yielded instead of a line longer than the limit


def _raw_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    while chunk := raw.read(_CHUNK):
        yield chunk


def _gunzip_chunks(raw: IO[bytes]) -> Iterator[bytes]:
    """Decompress a concatenation of gzip members; raise EOFError if the last one is cut short.

    Unlike ``gzip.GzipFile`` behind a buffer, every byte decompressed before the damage is
    yielded first, so a reader loses nothing that was complete.
    """
    wbits = 16 + zlib.MAX_WBITS
    dec = zlib.decompressobj(wbits)
    in_member = False
    while data := raw.read(_CHUNK):
        while data:
            in_member = True
            out = dec.decompress(data)
            if out:
                yield out
            if dec.eof:  # a member ended; the rest of `data` starts the next one
                data = dec.unused_data
                dec = zlib.decompressobj(wbits)
                in_member = False
            else:
                data = b""
    if in_member:
        tail = dec.flush()
        if tail:
            yield tail
        raise EOFError("compressed stream ends inside a gzip member")


def _lines(chunks: Iterator[bytes], limit: int) -> Iterator[bytes | object]:
    """Split chunks into lines (without the newline); lines over ``limit`` bytes become ``_TOO_LONG``."""
    pending = b""
    skipping = False
    for chunk in chunks:
        parts = (pending + chunk if pending else chunk).split(b"\n")
        pending = parts.pop()
        for line in parts:
            if skipping:
                skipping = False
                yield _TOO_LONG
            elif len(line) > limit:
                yield _TOO_LONG
            else:
                yield line
        if len(pending) > limit:
            pending = b""
            skipping = True
    if skipping:
        yield _TOO_LONG
    elif pending:
        yield pending


class _Counted:
    """A binary file whose reads report how many (compressed) bytes were consumed."""

    __slots__ = ("_on_read", "_raw")

    def __init__(self, raw: IO[bytes], on_read: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_read = on_read

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._on_read(len(data))
        return data


def gzip_lines(
    path: str | Path,
    *,
    max_line_bytes: int = _DEFAULT_MAX_LINE,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """Lines (without newline) of a member-wise gzip file, or of a plain file.

    Every complete line before a damaged or cut-short tail is yielded first; then
    :class:`~mmdata.errors.CorruptFile` says where reading stopped. Over-long lines are
    skipped (they cannot be a row any mmdata writer produced). ``on_read(n)`` is called
    as each ``n`` bytes of the file are consumed (for progress bars).
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    with raw:
        head = raw.read(2)
        raw.seek(0)
        source: Any = _Counted(raw, on_read) if on_read is not None else raw
        chunks = _gunzip_chunks(source) if head == b"\x1f\x8b" else _raw_chunks(source)
        try:
            for line in _lines(chunks, max_line_bytes):
                if line is not _TOO_LONG:
                    yield line  # type: ignore[misc]
        except EOFError as exc:
            raise CorruptFile(f"{path}: {exc} (complete rows before it were read)", path=str(path)) from exc
        except zlib.error as exc:
            raise CorruptFile(f"{path}: corrupt gzip data ({exc})", path=str(path)) from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc


def read_gzip(path: str | Path) -> tuple[bytes, str | None]:
    """The whole decompressed content of a member-wise gzip (or plain) file, and the damage.

    Returns ``(data, problem)``: ``problem`` is None when the file read to its end; else it
    says where reading stopped and ``data`` holds every complete line before it (a torn last
    line is dropped, never returned half). Raises :class:`~mmdata.errors.StoreError` when
    the file cannot be opened.
    """
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    parts: list[bytes] = []
    problem: str | None = None
    with raw:
        head = raw.read(2)
        raw.seek(0)
        chunks = _gunzip_chunks(raw) if head == b"\x1f\x8b" else _raw_chunks(raw)
        try:
            for chunk in chunks:
                parts.append(chunk)
        except EOFError as exc:
            problem = f"{Path(path).name}: {exc} (complete rows before it were read)"
        except zlib.error as exc:
            problem = f"{Path(path).name}: corrupt gzip data ({exc}) (complete rows before it were read)"
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    data = b"".join(parts)
    if problem is not None and data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
    return data, problem


class CaptureReader:
    """Iterate the records of a capture file (use :func:`open_capture`)."""

    def __init__(self, path: str | Path, *, max_line_bytes: int = _DEFAULT_MAX_LINE) -> None:
        self.path = Path(path)
        self.max_line_bytes = max_line_bytes
        self.bad_lines = 0
        self.bad_line_numbers: list[int] = []
        self.lines_read = 0
        self._raw: IO[bytes] | None = None
        try:
            raw = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise StoreError(f"cannot open {self.path}: {exc.strerror or exc}", path=str(path)) from exc
        self._raw = raw
        magic = raw.read(2)
        raw.seek(0)
        chunks = _gunzip_chunks(raw) if magic == _GZIP_MAGIC else _raw_chunks(raw)
        self._line_iter = _lines(chunks, max_line_bytes)
        self.header = self._read_header()

    def _fail(self, reason: str) -> CorruptFile:
        self.close()
        return CorruptFile(f"{self.path}: {reason}", path=str(self.path))

    def _next_line(self) -> bytes | object | None:
        try:
            return next(self._line_iter, None)
        except (OSError, EOFError, zlib.error) as exc:
            if self.lines_read == 0:
                raise self._fail(f"not readable as gzip ({exc})") from exc
            raise self._fail(f"truncated or corrupt after line {self.lines_read} ({exc})") from exc

    def _read_header(self) -> CaptureHeader:
        first = self._next_line()
        if first is _TOO_LONG:
            raise self._fail("line 1 is not an mmdata capture header (too long)")
        if not isinstance(first, bytes) or not first.strip():
            raise self._fail("empty file, expected an mmdata capture header on line 1")
        try:
            head = orjson.loads(first)
        except orjson.JSONDecodeError as exc:
            raise self._fail("line 1 is not JSON; expected an mmdata capture header") from exc
        if not isinstance(head, dict) or head.get("format") != CAPTURE_FORMAT:
            raise self._fail(f'line 1 is not an mmdata capture header (need "format": "{CAPTURE_FORMAT}")')
        exchange = head.get("exchange")
        symbols = head.get("symbols", [])
        version = head.get("version")
        if not isinstance(exchange, str) or not isinstance(symbols, list) or version != 1:
            raise self._fail("capture header needs exchange (str), symbols (list) and version 1")
        self.lines_read = 1
        extra = {k: v for k, v in head.items() if k not in ("format", "version", "exchange", "symbols")}
        return CaptureHeader(exchange.lower(), tuple(str(s) for s in symbols), version, extra)

    def __iter__(self) -> Iterator[CaptureRecord]:
        loads = orjson.loads
        line_no = self.lines_read
        lines = self._line_iter
        while True:
            try:
                line = next(lines, None)
            except (OSError, EOFError, zlib.error) as exc:
                raise self._fail(f"truncated or corrupt after line {line_no} ({exc})") from exc
            if line is None:
                break
            line_no += 1
            self.lines_read = line_no
            if line is _TOO_LONG:
                self._bad(line_no)
                continue
            try:
                rec = loads(line)  # type: ignore[arg-type]
                record = CaptureRecord(
                    rec["t"], rec["kind"], rec.get("url", ""), rec.get("data", ""), rec.get("status"), line_no
                )
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                if line.strip():  # type: ignore[attr-defined]
                    self._bad(line_no)
                continue
            if type(record.data) is not str or type(record.t) is not int:
                self._bad(line_no)
                continue
            yield record

    def _bad(self, line_no: int) -> None:
        self.bad_lines += 1
        if len(self.bad_line_numbers) < 100:
            self.bad_line_numbers.append(line_no)

    def bytes_read(self) -> int:
        """How far into the file (compressed bytes) reading has got, for progress bars."""
        return self._raw.tell() if self._raw is not None else 0

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_capture(path: str | Path, *, max_line_bytes: int = _DEFAULT_MAX_LINE) -> CaptureReader:
    """Open a capture for reading; raises StoreError / CorruptFile with a one-line reason."""
    return CaptureReader(path, max_line_bytes=max_line_bytes)


class CaptureWriter:
    """Write a capture file (gzip when the name ends in ``.gz``), one record per call."""

    def __init__(self, path: str | Path, exchange: str, symbols: Sequence[str], **extra: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._raw = raw
        self._out: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="wb") if self.path.suffix == ".gz" else raw  # type: ignore[assignment]
        )
        head = {"format": CAPTURE_FORMAT, "version": 1, "exchange": exchange, "symbols": list(symbols)}
        head.update(extra)
        self._out.write(orjson.dumps(head) + b"\n")
        self.records = 0

    def write(
        self, kind: str, url: str, data: str = "", *, status: int | None = None, t: int | None = None
    ) -> None:
        """Append one record; ``t`` defaults to now (ns)."""
        if kind not in CAPTURE_KINDS:
            raise ValueError(f"unknown capture record kind {kind!r}")
        rec: dict[str, Any] = {"t": time.time_ns() if t is None else t, "kind": kind, "url": url}
        if data or kind in ("ws_recv", "ws_sent", "rest"):
            rec["data"] = data
        if status is not None:
            rec["status"] = status
        self._out.write(orjson.dumps(rec) + b"\n")
        self.records += 1

    def flush(self) -> None:
        """Push buffered bytes to the OS."""
        self._out.flush()
        self._raw.flush()

    def close(self) -> None:
        """Finish the file (writes the gzip trailer)."""
        if not self._raw.closed:
            self._out.close()
            self._raw.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
