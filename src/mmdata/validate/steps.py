"""Step a recorded day folder's book forward in time: the one replay loop of mmdata.

Theory of operation
-------------------
A day folder holds everything needed to rebuild its book alone: the ledger says where
each accepted snapshot is (``snapshots/``), where the recorder's engine was reset
(``state_change`` to CONNECTING: a new connection, venue maintenance; ``run_start``: a new
process), the Kraken instrument precisions and Bitfinex ``SEQ_ALL`` breaks; ``diffs/``
holds every diff and checksum frame with its normalized levels, numbered by ``recv_seq``.

Rows are merged by ``recv_seq``: a ledger row stamped ``r`` happened after data row ``r``
and before ``r + 1``, so ledger actions at ``r`` run right after diff ``r`` (several at
the same ``r`` in ``event_id`` order). Diffs go to a fresh engine of the venue, exactly
as the recorder's engine received them: :class:`~mmdata.book.sync.SequenceSync` checks
Binance ``U``/``u`` continuity (buffering diffs until a snapshot bridges them),
:class:`~mmdata.book.sync.ChecksumSync` every Kraken and Bitfinex checksum.

:class:`BookReplay` is used by ``validate`` (every step, with a per-step hook) and by the
notebook API and ``mmdata replay`` (``advance(until_ns=...)`` to a moment, optionally
starting at the last engine reset before a snapshot instead of the top of the day).
"""

from __future__ import annotations

import csv
from array import array
from bisect import bisect_right
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import orjson

from mmdata import exchanges
from mmdata.book.sync import BookUpdated, ChecksumMismatch, GapDetected, SyncEngine, SyncOutput, SyncState
from mmdata.errors import ConfigError, CorruptFile, StoreError
from mmdata.store.capture import gzip_lines
from mmdata.store.dayfolder import SNAPSHOT_FILE, DayFolder, details, row_seq, snapshot_levels
from mmdata.types import (
    BookSnapshot,
    Instrument,
    SequenceBreak,
    new_book_checksum,
    new_book_diff,
)

__all__ = ["Action", "BookReplay", "DayProblem"]

_MAX_PROBLEMS = 1000
_ACTIONS = frozenset(
    (
        "snapshot",
        "state_change",
        "sequence_break",
        "instrument",
        "run_start",
        "window_start",
        "run_stop",
        "window_end",
    )
)
#: Ledger events after which the recorder wrote nothing more for this day until a new start.
_STOPS = frozenset(("run_stop", "window_end"))


@dataclass(slots=True)
class DayProblem:
    """Something wrong in a day folder, located by ``recv_seq`` and file."""

    # gap | checksum_mismatch | frame_mismatch | frame_unsynced | truncated | unreadable_row |
    # never_synced | seq_order | duplicate_trade
    kind: str
    detail: str
    recv_seq: int | None = None
    file: str | None = None
    expected: int | None = None
    got: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "kind": self.kind,
            "detail": self.detail,
            "recv_seq": self.recv_seq,
            "file": self.file,
            "expected": self.expected,
            "got": self.got,
        }


@dataclass(frozen=True, slots=True)
class Action:
    """A ledger row that changes the replayed engine, in merge order."""

    seq: int
    event_id: int
    time_ns: int
    row: dict[str, str]

    @property
    def is_reset(self) -> bool:
        """The recorder's engine started afresh here."""
        event = self.row["event"]
        return event == "run_start" or (event == "state_change" and self.row["state"] == "CONNECTING")

    @property
    def is_stop(self) -> bool:
        """The recorder stopped following the book here (shutdown, end of the day's window)."""
        event = self.row["event"]
        return event in _STOPS or (event == "state_change" and self.row["state"] == "STOPPED")


class BookReplay:
    """Replays one day folder through a fresh engine of its venue (see the module docstring).

    ``problems`` collects gaps, checksum mismatches and unreadable rows (each located);
    ``track_every=k`` keeps the engine state at every change and the top-N book (the book
    frames' width) after every ``recv_seq`` divisible by ``k``, for checking book frames;
    ``on_read(n)`` reports compressed bytes of the diffs file consumed (progress bars);
    ``on_step(seq, changed)``, when given, runs after every applied diff and ledger action;
    ``changed`` is False when the step only updated the book (the state cannot have changed).
    """

    def __init__(
        self,
        folder: DayFolder,
        *,
        problems: list[DayProblem] | None = None,
        on_step: Callable[[int, bool], None] | None = None,
        start_after: tuple[int, int] | None = None,
        track_every: int = 0,
        on_read: Callable[[int], None] | None = None,
    ) -> None:
        self.folder = folder
        self.problems: list[DayProblem] = problems if problems is not None else []
        self.problems_total = 0
        self.on_step = on_step
        self._on_read = on_read
        try:
            adapter = exchanges.get(folder.exchange)
        except ConfigError as exc:
            raise StoreError(f"{folder.root}: {exc}", path=str(folder.root)) from exc
        self.engine: SyncEngine = adapter.new_sync_engine(folder.symbol, folder.depth)
        self.actions = self.ledger_actions(folder, self.problem)
        self.diff_rows = 0
        self.snapshots_used = 0
        self.last_seq = 0  # recv_seq of the last diff row read (monotonic check)
        self.seq = 0  # recv_seq of the last event applied
        self.time_ns = 0  # its receive time
        self._k = 0
        self._skip_seq = 0
        self._pending: tuple[int, int, dict[str, Any]] | None = None
        self._done = False
        #: The recorder had stopped (run_stop / window_end / STOPPED) and not started again.
        self.stopped = False
        # track_every=k: engine state at every change, top-N after every recv_seq % k == 0.
        self.track_every = track_every if folder.levels else 0
        self.state_seqs: list[int] = [0]
        self.states: list[int] = [int(self.engine.state)]
        self.tops: dict[int, list[str]] = {}
        self.data_seqs: array[int] = array("q")  # with tracking: recv_seq of each diff and snapshot
        if start_after is not None:
            self._skip_to(start_after)
        self._lines = self._diff_lines()

    # -- inputs ---------------------------------------------------------------------
    @staticmethod
    def ledger_actions(folder: DayFolder, problem: Callable[[DayProblem], None]) -> list[Action]:
        """The ledger rows that act on the engine, sorted by (recv_seq, event_id)."""
        out: list[Action] = []
        for row in folder.ledger:
            if row.get("event") in _ACTIONS:
                try:
                    out.append(
                        Action(int(row["recv_seq"]), int(row["event_id"]), int(row["recv_time_ns"]), row)
                    )
                except (TypeError, ValueError):
                    problem(DayProblem("unreadable_row", f"ledger row {row!r:.120}", file="events"))
        out.sort(key=lambda a: (a.seq, a.event_id))
        return out

    def problem(self, problem: DayProblem) -> None:
        """Record a problem (the first 1,000 are kept, and always a truncation; all are counted)."""
        self.problems_total += 1
        if len(self.problems) < _MAX_PROBLEMS or problem.kind == "truncated":
            self.problems.append(problem)

    def close(self) -> None:
        """Close the diffs file now (also done at the end of the file)."""
        self._lines.close()

    def __enter__(self) -> BookReplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _diff_lines(self) -> Generator[bytes, None, None]:
        path = self.folder.layout.diffs
        if not path.exists():
            return
        try:
            yield from gzip_lines(path, on_read=self._on_read)
        except CorruptFile as exc:
            self.problem(DayProblem("truncated", str(exc), file=path.name))

    def _skip_to(self, key: tuple[int, int]) -> None:
        """Start at the ledger action ``key`` = (recv_seq, event_id), a reset point: earlier
        diffs are not applied; earlier instrument rows still are (they outlive resets)."""
        while (
            self._k < len(self.actions) and (self.actions[self._k].seq, self.actions[self._k].event_id) < key
        ):
            action = self.actions[self._k]
            if action.row["event"] == "instrument":
                self._run_action(action)
            self._k += 1
        self._skip_seq = key[0]

    # -- stepping -------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Every diff and ledger action has been applied."""
        return self._done

    def next_time_ns(self) -> int | None:
        """Receive time of the next event to apply (None at the end)."""
        self._fill()
        action = self.actions[self._k] if self._k < len(self.actions) else None
        pending = self._pending
        if pending is None:
            return action.time_ns if action is not None else None
        if action is not None and action.seq < pending[0]:
            return action.time_ns
        return pending[1]

    def _fill(self) -> None:
        """Read the next diff row into ``_pending`` (skipping unreadable and skipped rows)."""
        while self._pending is None:
            line = next(self._lines, None)
            if line is None:
                return
            self._pending = self._parse(line)

    def _parse(self, line: bytes) -> tuple[int, int, dict[str, Any]] | None:
        if self._skip_seq:
            try:
                if row_seq(line) <= self._skip_seq:
                    return None
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return None
        try:
            rec = orjson.loads(line)
            seq = int(rec["recv_seq"])
            t_ns = int(rec["recv_time_ns"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.problem(DayProblem("unreadable_row", f"diff row {line[:80]!r}", file="diffs"))
            return None
        if seq <= self.last_seq:
            self.problem(
                DayProblem(
                    "seq_order",
                    f"diff row recv_seq {seq} after {self.last_seq}",
                    seq,
                    "diffs",
                    self.last_seq + 1,
                    seq,
                )
            )
        self.last_seq = seq
        return (seq, t_ns, rec)

    def advance(self, until_ns: int | None = None) -> bool:
        """Apply events in merge order while their receive time is ``<= until_ns`` (all when
        None). Returns False once everything has been applied."""
        actions = self.actions
        n_actions = len(actions)
        on_step = self.on_step
        receive = self.engine.receive
        exchange, symbol = self.folder.exchange, self.folder.symbol
        lines = self._lines
        parse = self._parse
        loads = orjson.loads
        skipping = bool(self._skip_seq)
        every = self.track_every
        updated = BookUpdated
        while True:
            pending = self._pending
            while pending is None:
                line = next(lines, None)
                if line is None:
                    break
                if skipping:
                    pending = parse(line)
                    continue
                # The common case inline (a row the recorder wrote); anything odd goes to _parse.
                try:
                    rec = loads(line)
                    seq = rec["recv_seq"]
                    t_ns = rec["recv_time_ns"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pending = parse(line)
                    continue
                if type(seq) is not int or type(t_ns) is not int or seq <= self.last_seq:
                    pending = parse(line)
                    continue
                self.last_seq = seq
                pending = (seq, t_ns, rec)
            self._pending = pending
            # Ledger actions stamped before the pending diff run first.
            while self._k < n_actions and (pending is None or actions[self._k].seq < pending[0]):
                action = actions[self._k]
                if until_ns is not None and action.time_ns > until_ns:
                    return True
                self._k += 1
                self._run_action(action)
                self.seq, self.time_ns = action.seq, action.time_ns
                if every:
                    # A snapshot has its own recv_seq (a book frame may carry it); any other
                    # action at r happened after data row r: it counts from r + 1.
                    if action.row["event"] == "snapshot":
                        self.data_seqs.append(action.seq)
                        self._track(action.seq)
                        if action.seq % every == 0:
                            self._top(action.seq)
                    else:
                        self._track(action.seq + 1)
                if on_step is not None:
                    on_step(action.seq, True)
            if pending is None:
                self._done = True
                return False
            seq, t_ns, rec = pending
            if until_ns is not None and t_ns > until_ns:
                return True
            self._pending = None
            self.diff_rows += 1
            try:
                if rec.get("kind") == "checksum":
                    event: Any = new_book_checksum(
                        exchange, symbol, int(rec["checksum"]), rec.get("event_time_ms")
                    )
                else:
                    event = new_book_diff(
                        exchange,
                        symbol,
                        rec["bids"],
                        rec["asks"],
                        rec.get("event_time_ms"),
                        rec.get("first_id"),
                        rec.get("last_id"),
                        rec.get("checksum"),
                    )
            except (KeyError, TypeError, ValueError):
                self.problem(
                    DayProblem("unreadable_row", f"diff row recv_seq {seq}: missing fields", seq, "diffs")
                )
                continue
            outputs = receive(event)
            changed = False
            if outputs and (len(outputs) > 1 or type(outputs[0]) is not updated):
                self._outputs(outputs, seq)
                changed = True
            self.seq, self.time_ns = seq, t_ns
            if every:
                self.data_seqs.append(seq)
                if changed:
                    self._track(seq)
                if seq % every == 0:
                    self._top(seq)
            if on_step is not None:
                on_step(seq, changed)

    def _track(self, seq: int) -> None:
        """Note the engine state after ``seq`` when it changed (several changes at one
        recv_seq: the last one stands)."""
        state = int(self.engine.state)
        if state != self.states[-1]:
            if self.state_seqs[-1] == seq:
                self.states[-1] = state
            else:
                self.state_seqs.append(seq)
                self.states.append(state)

    def _top(self, seq: int) -> None:
        """Keep the top-N levels after ``seq`` as a book-frame row would hold them."""
        if self.engine.state is not SyncState.SYNCED:
            return
        levels = self.folder.levels
        bids, asks = self.engine.book.top(levels)
        row = [x for lv in bids for x in lv] + [""] * (2 * (levels - len(bids)))
        row += [x for lv in asks for x in lv] + [""] * (2 * (levels - len(asks)))
        self.tops[seq] = row

    def state_at(self, seq: int) -> SyncState:
        """Engine state right after ``recv_seq`` (needs ``track_every``)."""
        return SyncState(self.states[bisect_right(self.state_seqs, seq) - 1])

    def _outputs(self, outputs: Any, seq: int) -> None:
        out: SyncOutput
        for out in outputs:
            kind = type(out)
            if kind is GapDetected:
                assert isinstance(out, GapDetected)
                self.problem(DayProblem("gap", out.reason, seq, "diffs", out.expected, out.got))
            elif kind is ChecksumMismatch:
                assert isinstance(out, ChecksumMismatch)
                self.problem(
                    DayProblem(
                        "checksum_mismatch", "venue checksum differs", seq, "diffs", out.expected, out.got
                    )
                )

    def _run_action(self, action: Action) -> None:
        row = action.row
        event = row["event"]
        engine = self.engine
        folder = self.folder
        if event == "snapshot":
            info = details(row)
            rel = row["snapshot_file"]
            if not SNAPSHOT_FILE.fullmatch(rel):
                # Only a file the recorder names (never a path out of the day folder).
                self.problem(DayProblem("unreadable_row", f"snapshot file {rel!r:.80}", action.seq, "events"))
                return
            file = folder.root / rel
            try:
                bids, asks = snapshot_levels(file)
            except (OSError, KeyError, csv.Error) as exc:
                self.problem(
                    DayProblem("unreadable_row", f"snapshot {file.name}: {exc}", action.seq, "snapshots")
                )
                return
            uid = info.get("update_id")
            snap = BookSnapshot(
                folder.exchange,
                folder.symbol,
                bids,
                asks,
                None,
                uid if isinstance(uid, int) else None,
                info.get("checksum"),
            )
            self.snapshots_used += 1
            self._outputs(engine.receive(snap), action.seq)
        elif action.is_reset:
            self.stopped = False
            engine.reset(row.get("reason") or event)
        elif action.is_stop:
            # No book is known from here until the recorder starts again: not the last one.
            self.stopped = True
            engine.reset(row.get("reason") or event)
        elif event == "window_start":
            self.stopped = False
        elif event == "sequence_break":
            info = details(row)
            brk = SequenceBreak(folder.exchange, int(info.get("expected", 0)), int(info.get("got", 0)))
            self._outputs(engine.receive(brk), action.seq)
        elif event == "instrument":
            info = details(row)
            try:
                inst = Instrument(
                    folder.exchange, folder.symbol, int(info["price_precision"]), int(info["qty_precision"])
                )
            except (KeyError, TypeError, ValueError):
                self.problem(
                    DayProblem("unreadable_row", "instrument row without precisions", action.seq, "events")
                )
                return
            engine.receive(inst)
