"""Crash-safe gzip files: every flush ends a complete gzip member (ARCHITECTURE.md §4).

A gzip file may be a concatenation of members; every gzip reader (``zcat``, Python's
``gzip``, pandas, pyarrow) reads them as one stream. :class:`MemberWriter` buffers rows
and, on :meth:`~MemberWriter.flush`, compresses the buffer as one whole member and
appends it with a single ``write``. If the process is killed, the file holds complete
members plus, at worst, part of the member being written: at most the unflushed buffer
is lost, and everything flushed before stays readable.

:func:`repair_tail` is what a restarted writer runs first: it walks the members, and
if the file ends inside a cut-short or corrupt member it moves those bytes aside into a
sidecar file next to it (``<name>.damaged-<n>``, never deleted) and truncates the file
to the last complete member, so appending can resume on a clean boundary.

:func:`last_lines` is how a restarted recorder resumes its counters: it reads only the
end of the file. Gzip has no index, so it searches backwards for the member magic
(``1f 8b 08``) and decompresses from each candidate; the first candidate that yields a
complete member (its CRC-32 and length check out, so a false match inside compressed
data is not taken) ending exactly at end of file is the last member. If the newest
complete member ends short of end of file the tail is damaged, and it falls back to
:func:`scan_members` (one streaming pass) to find the good members, as
:func:`repair_tail` would.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from mmdata.errors import StoreError

__all__ = ["MemberWriter", "TailReport", "last_lines", "repair_tail", "scan_members"]

_CHUNK = 1 << 16
_WBITS = 16 + zlib.MAX_WBITS
_MAGIC = b"\x1f\x8b\x08"  # gzip id + deflate method: how every member starts


class MemberWriter:
    """Append rows to a gzip file; each :meth:`flush` writes one complete member.

    ``fsync=True`` also forces the bytes to disk on every flush (survives power loss,
    not only a killed process); it costs a disk round trip per flush.
    """

    def __init__(self, path: str | Path, *, level: int = 6, fsync: bool = False) -> None:
        self.path = Path(path)
        self.level = level
        self.fsync = fsync
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.members_written = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise StoreError(
                f"cannot open {self.path} for appending: {exc.strerror or exc}", path=str(path)
            ) from exc

    @property
    def buffered_bytes(self) -> int:
        """Uncompressed bytes waiting for the next flush (what a crash would lose)."""
        return self._buffered

    def write(self, data: bytes) -> None:
        """Buffer ``data`` (one or more complete rows, newline-terminated)."""
        if self._file is None:
            raise StoreError(f"{self.path} is closed", path=str(self.path))
        self._buffer.append(data)
        self._buffered += len(data)

    def flush(self) -> None:
        """Compress the buffer into one gzip member and append it (nothing when empty)."""
        if not self._buffer or self._file is None:
            return
        member = gzip.compress(b"".join(self._buffer), compresslevel=self.level, mtime=0)
        try:
            self._file.write(member)
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror or exc}", path=str(self.path)) from exc
        self._buffer.clear()
        self._buffered = 0
        self.members_written += 1

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None

    def __enter__(self) -> MemberWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class TailReport:
    """What :func:`scan_members` found: complete members and where the good part ends."""

    __slots__ = ("damage", "good_end", "last_member_start", "members", "size")

    def __init__(
        self,
        members: int,
        good_end: int,
        size: int,
        damage: str | None,
        last_member_start: int | None = None,
    ) -> None:
        self.members = members
        self.good_end = good_end  # byte offset just after the last complete member
        self.size = size
        self.damage = damage  # None when the file ends on a member boundary
        self.last_member_start = last_member_start  # where the last complete member begins; None if none

    @property
    def ok(self) -> bool:
        """True when every byte belongs to a complete member."""
        return self.damage is None


def scan_members(path: str | Path) -> TailReport:
    """Walk the gzip members of ``path`` without keeping their contents."""
    path = Path(path)
    members = 0
    good_end = 0
    last_start: int | None = None
    consumed = 0  # compressed bytes fed to the decompressor so far
    dec = zlib.decompressobj(_WBITS)
    in_member = False
    damage: str | None = None
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        while damage is None and (data := f.read(_CHUNK)):
            consumed += len(data)
            while data:
                in_member = True
                try:
                    dec.decompress(data)
                except zlib.error as exc:
                    damage = f"corrupt gzip data after byte {good_end} ({exc})"
                    break
                if dec.eof:
                    rest = dec.unused_data
                    last_start = good_end  # this member began where the previous one ended
                    good_end = consumed - len(rest)
                    members += 1
                    in_member = False
                    dec = zlib.decompressobj(_WBITS)
                    data = rest
                else:
                    data = b""
    if damage is None and in_member:
        damage = f"gzip member cut short after byte {good_end}"
    return TailReport(members, good_end, size, damage, last_start)


def last_lines(path: str | Path, n: int = 1) -> list[bytes]:
    """The last ``n`` complete lines (without newline) of the last complete member(s), oldest first.

    Reads only the tail of the file (see the module docstring). Members are taken newest
    first until ``n`` lines are found, so fewer than ``n`` come back only when the whole
    file holds fewer. Bytes after the last newline of a member are not a complete line
    and are skipped. A damaged tail is ignored (only complete members count), but damage
    *before* an intact tail is not seen without a full scan: run :func:`repair_tail`
    first when that matters. Returns ``[]`` for an absent or empty file, or ``n <= 0``.
    """
    path = Path(path)
    if n <= 0:
        return []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return []
    with f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return []
        found = _newest_member_before(f, size, n)
        if found is None or found[2] != size:
            # Damaged tail: let the streaming scan decide which members are good.
            report = scan_members(path)
            if report.last_member_start is None:
                return []
            found = _read_member(f, report.last_member_start, n)
            if found is None:  # the file changed under us
                return []
        start, lines, _ = found
        collected = deque(lines, maxlen=n)
        while len(collected) < n and start > 0:
            older = _newest_member_before(f, start, n - len(collected), ending_at=start)
            if older is None:
                break  # no member ends where the newer one begins (cannot happen in an intact file)
            start = older[0]
            collected.extendleft(reversed(older[1]))
        return list(collected)


def _newest_member_before(
    f: IO[bytes], end: int, n: int, *, ending_at: int | None = None
) -> tuple[int, list[bytes], int] | None:
    """The complete member with the latest start below ``end``: (start, last n lines, end offset).

    With ``ending_at``, complete members ending elsewhere (a gzip file stored verbatim
    inside a member) are passed over.
    """
    for pos in _magic_positions(f, end):
        found = _read_member(f, pos, n)
        if found is not None and (ending_at is None or found[2] == ending_at):
            return found
    return None


def _magic_positions(f: IO[bytes], end: int) -> Iterator[int]:
    """Offsets below ``end`` where the member magic occurs, latest first (reads backwards)."""
    hi = end
    while hi > 0:
        lo = max(0, hi - _CHUNK)
        f.seek(lo)
        # Read a little past hi so a magic straddling the block edge is found once.
        block = f.read(min(hi + len(_MAGIC) - 1, end) - lo)
        limit = hi - lo
        while (i := block.rfind(_MAGIC, 0, limit + len(_MAGIC) - 1)) >= 0:
            yield lo + i
            limit = i
        hi = lo


def _read_member(f: IO[bytes], start: int, n: int) -> tuple[int, list[bytes], int] | None:
    """Decompress the member at ``start``: (start, its last n lines, end offset), None if incomplete."""
    f.seek(start)
    dec = zlib.decompressobj(_WBITS)
    lines: deque[bytes] = deque(maxlen=n)
    partial = b""
    pos = start
    while data := f.read(_CHUNK):
        pos += len(data)
        try:
            out = dec.decompress(data)
        except zlib.error:
            return None
        if out:
            parts = (partial + out).split(b"\n")
            partial = parts.pop()
            lines.extend(parts)
        if dec.eof:
            return start, list(lines), pos - len(dec.unused_data)
    return None


def repair_tail(path: str | Path) -> Path | None:
    """Move a damaged tail aside and truncate to the last complete member.

    Returns the sidecar file holding the removed bytes, or None when the file was
    intact (or absent). The sidecar is never deleted by mmdata.
    """
    path = Path(path)
    if not path.exists():
        return None
    report = scan_members(path)
    if report.ok:
        return None
    n = 1
    while (sidecar := path.with_name(f"{path.name}.damaged-{n}")).exists():
        n += 1
    try:
        with open(path, "r+b") as f:
            f.seek(report.good_end)
            tail = f.read()
            sidecar.write_bytes(tail)
            f.truncate(report.good_end)
    except OSError as exc:
        raise StoreError(f"cannot repair {path}: {exc.strerror or exc}", path=str(path)) from exc
    return sidecar
