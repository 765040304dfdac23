"""Where the relay and the REST server read a recorded stream: ``live/`` or the day files.

Theory of operation
-------------------
:class:`LiveSource` follows ``<stream>/live/live_depth_diffs.ndjson`` (diffs, checksum
frames, snapshots and ledger rows, in the recorder's order) and ``live_trades.ndjson``
with :class:`~mmdata.store.tail.LiveTail` (rotation by rename, no line lost or repeated).
Its start hands the follower the current file from its last snapshot on (a rotated file
starts with one), so joining costs one read of at most ``LIVE_STREAM_ROTATE_S`` of rows.

:class:`DaySource` follows the newest day folder's gzip files — ``diffs/``, ``trades/``
raw rows and the ledger — with :class:`~mmdata.store.tail.GzipTail`: by byte offset,
member by member, never re-reading. Those files are flushed independently, so a diff and
the ledger row just before it may become readable in either order; items are therefore
held in a heap and released in ``recv_seq`` order once the other file has shown a later row
(the ledger watermark for diffs, the diffs watermark for ledger rows) or after ``hold_s``.
When a newer day folder appears (the date rolled over) it switches to it and skips what it
already released (``recv_seq`` runs on across days). :func:`day_items` reads one day from
its beginning for ``from=start``.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import re
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from mmdata.errors import StoreError
from mmdata.record.files import EVENTS_HEADER
from mmdata.serve.follow import Item, item_from_line
from mmdata.store.dayfolder import SNAPSHOT_FILE, DayFolder, open_day_folder, row_seq, snapshot_levels
from mmdata.store.tail import GzipTail, LiveTail, TailEvent

__all__ = ["DaySource", "LiveSource", "day_items", "newest_day"]

_DAY = re.compile(r"[0-9]{8}")
_LEDGER_COLUMNS = tuple(EVENTS_HEADER.split(","))
_CLOSING = frozenset(("run_stop", "window_end"))
#: After a newer day folder appears, keep reading the old one this long: both receive the same
#: rows during the overlap, and the old one's last rows before it must be flushed first.
ROLLOVER_GRACE_S = 5.0
LIVE_DIFFS = "live_depth_diffs.ndjson"
LIVE_TRADES = "live_trades.ndjson"


def _is_day_name(name: str) -> bool:
    """``YYYYMMDD`` of a real date (ASCII digits only)."""
    if not _DAY.fullmatch(name):
        return False
    try:
        date(int(name[:4]), int(name[4:6]), int(name[6:]))
    except ValueError:
        return False
    return True


def newest_day(stream_root: Path) -> Path | None:
    """The newest ``YYYYMMDD`` day folder (with a ledger) under a stream folder."""
    try:
        days = sorted(
            (p for p in stream_root.iterdir() if _is_day_name(p.name) and p.is_dir()),
            key=lambda p: p.name,
            reverse=True,
        )
    except OSError:
        return None
    for day in days:
        if any(day.glob("events_*.csv.gz")):
            return day
    return None


class LiveSource:
    """Follow ``live/`` (see the module docstring)."""

    name = "live"

    def __init__(self, stream_root: Path) -> None:
        self.dir = stream_root / "live"
        self.diffs: LiveTail | None = None
        self.trades: LiveTail | None = None
        self.day_label = ""

    @staticmethod
    def available(stream_root: Path) -> bool:
        """The recorder writes live files for this stream."""
        return (stream_root / "live" / LIVE_DIFFS).is_file()

    def start(self) -> list[Item]:
        """Open the live files; the book rows a follower needs to stand where the stream is."""
        day = newest_day(self.dir.parent)
        self.day_label = day.name if day is not None else ""
        self.diffs = LiveTail(self.dir / LIVE_DIFFS, from_start=True)
        self.trades = LiveTail(self.dir / LIVE_TRADES, from_start=False)
        lines = self.diffs.poll()
        self.diffs.events.clear()
        start = 0
        for i in range(len(lines) - 1, -1, -1):
            if lines[i].find(b'"kind":"snapshot"', 0, 240) >= 0:
                start = i
                break
        if start:
            start = _bridge_start(lines, start)
        prefix: list[bytes] = []
        if start:
            # What outlives the snapshot: the latest run_start (depth, diffs on/off) and
            # instrument (Kraken precisions) before it.
            wanted: dict[bytes, bytes | None] = {b'"event":"run_start"': None, b'"event":"instrument"': None}
            for line in reversed(lines[:start]):
                head = line[:400]
                for key, got in wanted.items():
                    if got is None and b'"kind":"event"' in head and key in head:
                        wanted[key] = line
                if all(v is not None for v in wanted.values()):
                    break
            prefix = [v for v in wanted.values() if v is not None]
        items = [it for it in map(item_from_line, prefix + lines[start:]) if it is not None]
        return items

    def poll(self) -> list[Item]:
        """New rows: the book stream's, then trades."""
        out: list[Item] = []
        if self.diffs is not None:
            for line in self.diffs.poll():
                item = item_from_line(line)
                if item is not None:
                    out.append(item)
        if self.trades is not None:
            for line in self.trades.poll():
                item = item_from_line(line, trade=True)
                if item is not None:
                    out.append(item)
        return out

    def tail_events(self) -> list[TailEvent]:
        """Rotations and damage seen since the last call."""
        out: list[TailEvent] = []
        for tail in (self.diffs, self.trades):
            if tail is not None:
                out += tail.events
                tail.events.clear()
        return out

    def close(self) -> None:
        """Close the files."""
        for tail in (self.diffs, self.trades):
            if tail is not None:
                tail.close()


def _bridge_start(lines: list[bytes], at: int) -> int:
    """Where to start feeding so a venue snapshot at ``lines[at]`` meets the diffs the
    recorder's engine had buffered before it (Binance: every diff with ``u`` above the
    snapshot's ``lastUpdateId``, back to the engine's last reset)."""
    try:
        snap = orjson.loads(lines[at])
    except orjson.JSONDecodeError:
        return at
    uid = snap.get("update_id")
    if snap.get("source") == "local_book" or type(uid) is not int:
        return at
    start = at
    for i in range(at - 1, -1, -1):
        head = lines[i][:400]
        if b'"kind":"event"' in head:
            if b'"event":"run_start"' in head or b'"state":"CONNECTING"' in head:
                break  # the engine started afresh here: nothing before was buffered
            continue
        if b'"kind":"diff"' not in head:
            continue
        try:
            first_id = orjson.loads(lines[i]).get("first_id")
        except orjson.JSONDecodeError:
            continue
        start = i
        if type(first_id) is int and first_id <= uid:
            # The recorder's engine held a diff from before the snapshot's id (else it would
            # have refused the snapshot as too new): the buffer reached back to here at least.
            break
    return start


def ledger_item(folder: DayFolder, line: bytes) -> list[Item]:
    """A ledger CSV line as an ``event`` item (plus a ``snapshot`` item for a snapshot row)."""
    try:
        fields = next(csv.reader([line.decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return []
    if len(fields) != len(_LEDGER_COLUMNS) or fields[0] == "event_id":
        return []
    row = dict(zip(_LEDGER_COLUMNS, fields, strict=True))
    try:
        seq = int(row["recv_seq"])
        t_ns = int(row["recv_time_ns"])
        event_id = int(row["event_id"])
        info = orjson.loads(row["details"]) if row["details"] else {}
    except (ValueError, orjson.JSONDecodeError):
        return []
    rec: dict[str, Any] = {
        "recv_seq": seq,
        "recv_time_ns": t_ns,
        "exchange": folder.exchange,
        "symbol": folder.symbol,
        "kind": "event",
        "event_id": event_id,
        "run_id": row["run_id"],
        "event": row["event"],
        "tag": row["tag"],
        "state": row["state"],
        "reason": row["reason"],
        "details": info if isinstance(info, dict) else {},
    }
    out = [Item(seq, t_ns, "event", rec, orjson.dumps(rec))]
    if row["event"] == "snapshot":
        snap = _snapshot_item(folder, row, rec)
        if snap is not None:
            out.insert(0, snap)
    return out


def _snapshot_item(folder: DayFolder, row: dict[str, str], event: dict[str, Any]) -> Item | None:
    """The snapshot a ledger row names, read from ``snapshots/`` (only a file of that form)."""
    rel = row["snapshot_file"]
    if not SNAPSHOT_FILE.fullmatch(rel):
        return None
    try:
        bid_levels, ask_levels = snapshot_levels(folder.root / rel)
    except (OSError, KeyError, csv.Error):
        return None
    # As the live snapshot rows hold them: JSON arrays.
    bids = [list(lv) for lv in bid_levels]
    asks = [list(lv) for lv in ask_levels]
    info = event["details"]
    snap = {
        "recv_seq": event["recv_seq"],
        "recv_time_ns": event["recv_time_ns"],
        "exchange": folder.exchange,
        "symbol": folder.symbol,
        "kind": "snapshot",
        "tag": row["tag"],
        "source": str(info.get("source", "")),
        "state": row["state"],
        "depth": folder.depth,
        "update_id": info.get("update_id"),
        "checksum": info.get("checksum"),
        "bids": bids,
        "asks": asks,
    }
    return Item(event["recv_seq"], event["recv_time_ns"], "snapshot", snap, orjson.dumps(snap))


class _DayTails:
    """The three followed files of one day folder."""

    def __init__(self, folder: DayFolder, *, trades_at_end: bool) -> None:
        self.folder = folder
        layout = folder.layout
        self.ledger = GzipTail(layout.events)
        self.diffs = GzipTail(layout.diffs)
        self.trades = GzipTail(layout.trades_raw, at_end=trades_at_end)
        self.has_diffs = layout.diffs.exists()

    def events(self) -> list[TailEvent]:
        out: list[TailEvent] = []
        for tail in (self.ledger, self.diffs, self.trades):
            out += tail.events
            tail.events.clear()
        return out


class DaySource:
    """Follow the newest day folder's gzip files (see the module docstring)."""

    name = "day"

    def __init__(
        self,
        stream_root: Path,
        *,
        hold_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = stream_root
        self.hold_s = hold_s
        self.clock = clock
        self.tails: _DayTails | None = None
        self.day_label = ""
        self._heap: list[tuple[tuple[int, int, int], int, float, Item]] = []
        self._count = itertools.count()
        self._ledger_mark = -1
        self._diffs_mark = -1
        self._released: tuple[int, int, int] = (-1, -1, -1)
        self._pushed: tuple[int, int, int] = (-1, -1, -1)  # the largest key ever queued
        # After a rollover the new day restates the overlap: skip what the old day gave, per
        # file (diffs by recv_seq; ledger rows by content — their event_ids differ per day).
        self._diff_floor = -1
        self._ledger_seen: dict[tuple[Any, ...], None] = {}
        self._rolled = False
        self._newer_since: float | None = None
        self._trade_mark = -1
        self._statuses: list[TailEvent] = []
        self._last_check = 0.0

    @property
    def folder(self) -> DayFolder | None:
        """The day folder followed now."""
        return self.tails.folder if self.tails is not None else None

    @property
    def has_diffs(self) -> bool:
        """The followed day has a diffs file."""
        return self.tails is not None and self.tails.has_diffs

    def start(self) -> list[Item]:
        """Open the newest day; the book rows up to now (merged) for the follower."""
        day = newest_day(self.root)
        if day is None:
            raise StoreError(f"{self.root}: no day folder yet", path=str(self.root))
        self._open(day, trades_at_end=True)
        assert self.tails is not None
        ledger = self._drain(self.tails.ledger)
        actions = [it for line in ledger for it in ledger_item(self.tails.folder, line)]
        # Start the book at the last engine reset before the last snapshot (Binance needs the
        # diffs its engine buffered before that snapshot): earlier diffs are skipped unparsed.
        start_seq = 0
        snap_at = max((i for i, a in enumerate(actions) if a.kind == "snapshot"), default=-1)
        for a in actions[: snap_at + 1] if snap_at >= 0 else ():
            rec = a.rec
            if a.kind == "event" and (
                rec["event"] == "run_start"
                or (rec["event"] == "state_change" and rec["state"] == "CONNECTING")
            ):
                start_seq = a.seq
        keep = [
            a
            for a in actions
            if a.seq >= start_seq or (a.kind == "event" and a.rec["event"] in ("instrument", "run_start"))
        ]
        diffs: list[Item] = []
        for line in self._drain(self.tails.diffs):
            if start_seq:
                try:
                    if row_seq(line) <= start_seq:
                        continue
                except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                    continue  # not a diff row: item_from_line would reject it too
            item = item_from_line(line)
            if item is not None:
                diffs.append(item)
        self._ledger_mark = max((a.seq for a in actions), default=-1)
        self._diffs_mark = max((d.seq for d in diffs), default=-1)
        merged = sorted(keep + diffs, key=lambda it: it.key)
        # Rows the other file has not caught up with yet wait in the heap like any new row.
        now = self.clock()
        out: list[Item] = []
        # A day closed by run_stop / window_end whose files have not changed for hold_s is
        # complete: nothing is still to come, so nothing waits (no book shown SYNCED for hold_s
        # after the recorder stopped).
        closed = (
            bool(actions)
            and actions[-1].kind == "event"
            and actions[-1].rec["event"] in _CLOSING
            and self._settled(self.tails.folder)
        )
        for item in merged:
            if closed or self._releasable(item, now, now):
                out.append(item)
                self._released = item.key
            else:
                self._push(item, now)
        return out

    def _settled(self, folder: DayFolder) -> bool:
        """The day's ledger and diffs were last written more than ``hold_s`` ago."""
        limit = time.time() - self.hold_s
        for path in (folder.layout.events, folder.layout.diffs):
            try:
                if path.stat().st_mtime > limit:
                    return False
            except FileNotFoundError:
                continue
        return True

    def _open(self, day: Path, *, trades_at_end: bool) -> None:
        folder = open_day_folder(day)
        self.tails = _DayTails(folder, trades_at_end=trades_at_end)
        self.day_label = folder.label

    @staticmethod
    def _drain(tail: GzipTail) -> list[bytes]:
        out: list[bytes] = []
        while lines := tail.poll():
            out += lines
        return out

    def _push(self, item: Item, now: float) -> None:
        key = item.key
        self._pushed = max(self._pushed, key)
        if item.kind in {"diff", "checksum"}:
            self._diff_floor = max(self._diff_floor, item.seq)
        else:
            seen = self._ledger_seen
            seen[_identity(item)] = None
            if len(seen) > 20_000:  # the overlap is minutes of ledger rows: keep the newest
                for k in list(seen)[:10_000]:
                    del seen[k]
        heapq.heappush(self._heap, (key, next(self._count), now, item))

    def _new(self, item: Item) -> bool:
        if not self._rolled:
            return item.key > self._released
        if item.kind in {"diff", "checksum"}:
            return item.seq > self._diff_floor
        if _identity(item) in self._ledger_seen:
            return False
        # Rows behind what was released are the new day's restated opening (window_start,
        # instrument, a snapshot of a book already followed past): never sent out of order.
        # The grace period let the old day's own copies of the overlap be read first.
        if item.kind == "snapshot":
            return item.seq > self._released[0]
        return item.seq >= self._released[0]

    def _releasable(self, item: Item, now: float, arrived: float) -> bool:
        # A ledger row (and the snapshot it names) at r waits for the diffs up to r; a diff at
        # s waits for the ledger rows before s.
        if item.kind in ("event", "snapshot"):
            return self._diffs_mark > item.seq or now - arrived >= self.hold_s
        return self._ledger_mark >= item.seq or now - arrived >= self.hold_s

    def poll(self) -> list[Item]:
        """Rows released since the last poll (merge order), and new trades."""
        tails = self.tails
        if tails is None:
            return []
        now = self.clock()
        out: list[Item] = []
        if now - self._last_check >= 1.0:
            self._last_check = now
            out += self._maybe_roll_over()
            tails = self.tails
            assert tails is not None
        for line in tails.diffs.poll():
            item = item_from_line(line)
            if item is not None and self._new(item):
                self._diffs_mark = max(self._diffs_mark, item.seq)
                self._push(item, now)
        for line in tails.ledger.poll():
            for item in ledger_item(tails.folder, line):
                self._ledger_mark = max(self._ledger_mark, item.seq)
                if self._new(item):
                    self._push(item, now)
        heap = self._heap
        while heap and self._releasable(heap[0][3], now, heap[0][2]):
            item = heapq.heappop(heap)[3]
            self._released = item.key
            out.append(item)
        for line in tails.trades.poll():
            item = item_from_line(line, trade=True)
            if item is not None and item.seq > self._trade_mark:
                self._trade_mark = item.seq
                out.append(item)
        return out

    def _maybe_roll_over(self) -> list[Item]:
        """Switch to a newer day folder when one appeared (its rows already seen are skipped)."""
        day = newest_day(self.root)
        tails = self.tails
        if day is None or tails is None or day.name <= tails.folder.label:
            return []
        now = self.clock()
        if self._newer_since is None:
            self._newer_since = now
        if now - self._newer_since < ROLLOVER_GRACE_S:
            return []  # the overlap: both days get the same rows; let the old one's settle
        self._newer_since = None
        old = tails.folder.label
        try:
            self._open(day, trades_at_end=False)
        except StoreError:
            return []  # not readable yet (its ledger's first member not flushed): next check
        self._statuses.append(TailEvent("day_rollover", f"day {old} -> {day.name}: following the new day"))
        # Rows of the old day still in the heap stand; the new day's restated rows are skipped.
        self._rolled = True
        self._diffs_mark = self._ledger_mark = -1
        return []

    def tail_events(self) -> list[TailEvent]:
        """Day rollovers, replaced or damaged files seen since the last call."""
        out = self._statuses
        self._statuses = []
        if self.tails is not None:
            out += self.tails.events()
        return out

    def close(self) -> None:
        """Nothing stays open between polls."""


def _identity(item: Item) -> tuple[Any, ...]:
    """A ledger row (or its snapshot) without its day-specific ``event_id``."""
    rec = item.rec
    details = orjson.dumps(rec.get("details"), option=orjson.OPT_SORT_KEYS)
    return (
        item.kind,
        item.seq,
        rec.get("event"),
        rec.get("tag"),
        rec.get("state"),
        rec.get("reason"),
        details,
    )


def day_items(day: Path) -> Iterator[Item]:
    """Every row of a day folder from its beginning to the files' current end, in merge order
    (``from=start``). The ledger is read first, so every action is known before the diffs.

    Raises :class:`~mmdata.errors.StoreError` at once (not at the first row) when ``day`` is
    not a readable day folder."""
    return _day_items(open_day_folder(day))


def _day_items(folder: DayFolder) -> Iterator[Item]:
    tails = _DayTails(folder, trades_at_end=False)
    ledger = [it for line in DaySource._drain(tails.ledger) for it in ledger_item(folder, line)]
    ledger.sort(key=lambda it: it.key)

    def rows(tail: GzipTail, *, trade: bool) -> Iterator[Item]:
        while lines := tail.poll():
            for line in lines:
                item = item_from_line(line, trade=trade)
                if item is not None:
                    yield item

    yield from heapq.merge(
        ledger, rows(tails.diffs, trade=False), rows(tails.trades, trade=True), key=lambda it: it.key
    )
