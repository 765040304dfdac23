"""Follow files a recorder is writing: gzip day files member by member, live files across
rotation. No asyncio here: a caller polls (the relay from its event loop, tests directly).

:class:`GzipTail` keeps the byte offset just past the last *complete* gzip member it has
read. Each :meth:`GzipTail.poll` reads only what was appended since then and returns the
lines of the members that are complete now; a member still being written (or torn by a
crash) is left for a later poll and never returned half. Nothing before the offset is read
again. A file that shrank below the offset or was replaced (new inode) is reported and
followed from its start; a restarted recorder's repair (a torn tail moved to a sidecar)
never cuts below a complete member, so the offset stays valid across it.

:class:`LiveTail` follows ``live/<name>.ndjson``, which the recorder writes one line per
frame and rotates by rename: it reads new bytes from its open file, returns complete lines
(a partial last line waits for its end), and when the path names a new file it drains the
old one to its end first, then opens the new one from its start — no line is lost or
repeated across a rotation.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["GzipTail", "LiveTail", "TailEvent"]

_WBITS = 16 + zlib.MAX_WBITS
_READ = 1 << 20


@dataclass(slots=True)
class TailEvent:
    """Something a follower of the file should be told about (relay ``status`` messages)."""

    kind: str  # "rotated" | "reset" | "damaged" | "missing"
    detail: str


@dataclass(slots=True)
class _Pending:
    lines: list[bytes] = field(default_factory=list)
    partial: bytes = b""


def _split(data: bytes, state: _Pending) -> None:
    """Complete lines of ``state.partial + data`` into ``state.lines``; the rest stays partial."""
    if not data:
        return
    parts = (state.partial + data).split(b"\n") if state.partial else data.split(b"\n")
    state.partial = parts.pop()
    state.lines.extend(p for p in parts if p)


class GzipTail:
    """Follow a member-wise gzip file from ``offset`` (0: its start). See the module docstring."""

    def __init__(
        self, path: str | Path, *, offset: int = 0, at_end: bool = False, max_read: int = 16 << 20
    ) -> None:
        self.path = Path(path)
        self.offset = offset
        self.max_read = max_read
        self.events: list[TailEvent] = []
        self._inode: int | None = None
        self._partial = b""
        self._stalled_at = -1
        if at_end:
            self.offset = self._complete_end()

    def _complete_end(self) -> int:
        """Offset after the last complete member (for ``at_end``: follow from now on)."""
        try:
            self._inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            return 0
        self.offset = 0
        while True:
            before = (self.offset, self.max_read)
            self.poll()
            if (self.offset, self.max_read) == before:
                break
        self.events.clear()
        self._stalled_at = -1  # damage found while skipping ahead is reported on the next poll
        return self.offset

    def poll(self) -> list[bytes]:
        """Lines of the members completed since the last poll (maybe none)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        if self._inode is not None and st.st_ino != self._inode:
            self.events.append(TailEvent("reset", f"{self.path.name} was replaced: following the new file"))
            self.offset, self._partial = 0, b""
        elif st.st_size < self.offset:
            self.events.append(TailEvent("reset", f"{self.path.name} shrank below the read position"))
            self.offset, self._partial = 0, b""
        self._inode = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            # Bounded reads: a follower starting at the top of a big day catches up in steps.
            data = f.read(min(st.st_size - self.offset, self.max_read))
        state = _Pending(partial=self._partial)
        consumed = 0
        while data:
            dec = zlib.decompressobj(_WBITS)
            try:
                out = dec.decompress(data)
            except zlib.error as exc:
                # Not a member start: the rest cannot be trusted until a writer repairs it.
                if self._stalled_at != self.offset + consumed:
                    self._stalled_at = self.offset + consumed
                    where = f"{self.path.name}: bad gzip data at byte {self._stalled_at}"
                    self.events.append(TailEvent("damaged", f"{where} ({exc})"))
                break
            if not dec.eof:
                if consumed == 0 and len(data) == self.max_read:
                    self.max_read *= 2  # one member bigger than a read: read more next time
                break  # the member is still being written (or torn): wait for it
            _split(out, state)
            used = len(data) - len(dec.unused_data)
            consumed += used
            data = dec.unused_data
        self.offset += consumed
        self._partial = state.partial
        return state.lines


class LiveTail:
    """Follow ``live/<name>.ndjson`` across rotation by rename. See the module docstring.

    ``from_start=False`` starts at the current end of the file (the next complete line).
    """

    def __init__(self, path: str | Path, *, from_start: bool = False) -> None:
        self.path = Path(path)
        self.events: list[TailEvent] = []
        self.rotations = 0
        self._file: IO[bytes] | None = None
        self._inode: int | None = None
        self._state = _Pending()
        self._skip_partial = False
        self._closed = False
        self._open(from_start=from_start)

    def _open(self, *, from_start: bool) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open between polls, closed in close()
        except FileNotFoundError:
            self._file = None
            return
        self._file = f
        self._inode = os.fstat(f.fileno()).st_ino
        self._state = _Pending()
        if not from_start:
            end = f.seek(0, os.SEEK_END)
            if end:
                f.seek(end - 1)
                # Mid-line: the writer's current line is partly before us; start at the next one.
                self._skip_partial = f.read(1) != b"\n"

    def _read(self) -> None:
        f = self._file
        assert f is not None
        while chunk := f.read(_READ):
            if self._skip_partial:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk = chunk[cut + 1 :]
                self._skip_partial = False
            _split(chunk, self._state)

    def poll(self) -> list[bytes]:
        """New complete lines, across a rotation if one happened (none after :meth:`close`).

        Polled often (the relay: every few ms) against rotation every few minutes; two
        rotations between two polls would skip the middle file.
        """
        if self._closed:
            return []
        if self._file is None:
            self._open(from_start=True)  # created since: everything in it is new
            if self._file is None:
                return []
        self._read()
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current != self._inode and current is not None:
            # Rotated: the old file is complete; drain it, then the new one from its start.
            self._read()
            if self._state.partial:
                torn = len(self._state.partial)
                self.events.append(TailEvent("damaged", f"rotated file ended inside a line ({torn} bytes)"))
            lines = self._state.lines
            self._close_file()
            self.rotations += 1
            self.events.append(TailEvent("rotated", f"{self.path.name} rotated; following the new file"))
            self._open(from_start=True)
            if self._file is not None:
                self._read()
                lines += self._state.lines
                self._state.lines = []
            return lines
        lines = self._state.lines
        self._state.lines = []
        return lines

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Stop following: close the file; later polls return nothing."""
        self._closed = True
        self._close_file()
