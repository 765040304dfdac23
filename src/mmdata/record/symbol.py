"""One recorded symbol: its sync engine, its day folders, its ledger, its live files.

Theory of operation
-------------------
The connection loop (:mod:`mmdata.record.recorder`) parses each frame once and hands
every event to the :class:`SymbolRecorder` of its symbol. The symbol recorder

1. numbers it (``recv_seq``: one counter per symbol shared by every file, resumed across
   restarts, so all rows of a symbol can be merged back into receive order);
2. writes the raw material first — every diff / checksum frame to ``diffs/`` and
   ``live/``, every live trade to ``trades/``, ``trades_ws`` and ``live/`` — whatever the
   book state, because a validator needs the diffs that arrived before a snapshot too;
3. feeds book events to the engine and turns its outputs into ledger rows:
   ``state_change``, ``gap`` / ``checksum_mismatch`` (also in ``gaps_*``),
   ``resync_start`` when the book is lost, ``snapshot`` (tag ``initial`` or
   ``resync_done``, with the snapshot files) when a new one is accepted;
4. writes a top-N book frame after each applied update **only while SYNCED**.

While the trading windows of two days overlap (00:00–00:15 by default) a symbol has two
*active* days and every row goes to both; the new day starts with its own snapshot
(taken from the synced local book, exact text), so each day folder replays alone.
Engines only *ask* for snapshots; ``request_snapshot`` (set by the recorder) does the I/O.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from mmdata.book.sync import (
    BookUpdated,
    ChecksumMismatch,
    GapDetected,
    NeedSnapshot,
    SequenceSync,
    StateChanged,
    SyncEngine,
    SyncOutput,
    SyncState,
    SyncStats,
)
from mmdata.record.config import RecorderConfig
from mmdata.record.files import DayFiles
from mmdata.store.layout import DayLayout, live_dir, log_path
from mmdata.store.writers import LiveFile
from mmdata.types import Ack, BookChecksum, BookDiff, BookSnapshot, Instrument, SequenceBreak, Trade

__all__ = ["SymbolLog", "SymbolRecorder", "SymbolStats"]

_dumps = orjson.dumps


class SymbolLog:
    """Plain-text log of one symbol: ``<logs>/recorder/<exchange>/<SYMBOL_FS>/<YYYY-MM-DD>.log``.

    One file per UTC date, line-buffered, opened lazily; logging never stops recording
    (an unwritable log directory is reported once on stderr by the caller's summary).
    """

    def __init__(self, root: Path, exchange: str, symbol_fs: str, wall_ns: Callable[[], int]) -> None:
        self.root = root
        self.exchange = exchange
        self.symbol_fs = symbol_fs
        self.wall_ns = wall_ns
        self._day: date | None = None
        self._file: Any = None
        self.failed: str | None = None

    def write(self, level: str, message: str) -> None:
        """Append ``<ISO time> <LEVEL> <message>``."""
        now = datetime.fromtimestamp(self.wall_ns() / 1e9, tz=UTC)
        if now.date() != self._day:
            self.close()
            self._day = now.date()
            path = log_path(self.root, self.exchange, self.symbol_fs, self._day)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
            except OSError as exc:
                self.failed = f"cannot write log {path}: {exc.strerror or exc}"
                self._file = None
        if self._file is not None:
            try:
                self._file.write(f"{now.isoformat(timespec='milliseconds')} {level} {message}\n")
            except OSError as exc:
                self.failed = str(exc)

    def close(self) -> None:
        """Close the current file."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None


class SymbolStats:
    """Counters shown in progress displays, heartbeats and the run summary.

    ``checksums`` counts venue checksums *verified* by the engine (Kraken: one per update;
    Bitfinex: the ``cs`` frames), read from ``engine_stats`` when it is set.
    """

    __slots__ = (
        "bad_messages",
        "book_frames",
        "checksums",
        "diffs",
        "engine_stats",
        "gaps",
        "mismatches",
        "resyncs",
        "snapshots",
        "trades",
    )

    def __init__(self) -> None:
        self.diffs = 0
        self.checksums = 0
        self.trades = 0
        self.book_frames = 0
        self.snapshots = 0
        self.gaps = 0
        self.mismatches = 0
        self.resyncs = 0
        self.bad_messages = 0
        self.engine_stats: SyncStats | None = None

    def as_dict(self) -> dict[str, int]:
        """Counters by name."""
        out = {name: getattr(self, name) for name in self.__slots__ if name != "engine_stats"}
        if self.engine_stats is not None:
            out["checksums"] = self.engine_stats.checksums_verified
        return out


def _side_text(side: Sequence[tuple[str, str]], levels: int) -> str:
    """``price,qty`` fields of one side of a book frame, padded to ``levels`` levels."""
    if not side:
        return "," * (2 * levels - 1)
    return ",".join(map(",".join, side)) + ",," * (levels - len(side))


class SymbolRecorder:
    """Engine + files of one symbol (see the module docstring)."""

    def __init__(
        self,
        *,
        exchange: str,
        symbol: str,
        symbol_fs: str,
        engine: SyncEngine,
        book_depth: int,
        config: RecorderConfig,
        run_id: str,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.symbol_fs = symbol_fs
        self.engine = engine
        self.book_depth = book_depth
        self.config = config
        self.run_id = run_id
        self.wall_ns = wall_ns
        self.monotonic = monotonic
        self.levels = config.depth_levels
        self.frame_interval_ns = config.book_frame_interval_ms * 1_000_000
        self.stats = SymbolStats()
        self.stats.engine_stats = engine.stats
        self.seq = 0
        self.event_id = 0
        self.days: dict[date, DayFiles] = {}
        self.active: list[DayFiles] = []
        self.resyncing = False  # a resync_start was logged and no snapshot accepted since
        self.state_since = monotonic()
        self.sync_warned = False
        self.buffer_warned = False
        self.last_frame_ns = 0
        self.last_checksum: int | None = None
        self.instrument: Instrument | None = None
        self.repaired: list[Path] = []
        self.opened_days: set[str] = set()
        self.request_snapshot: Callable[[SymbolRecorder, str], None] = lambda _sym, _why: None
        self.log = SymbolLog(config.logs, exchange, symbol_fs, wall_ns)
        self.live_diffs: LiveFile | None = None
        self.live_trades: LiveFile | None = None
        self.live_snapshots = 0
        if config.live:
            where = live_dir(config.data_dir, exchange, symbol_fs)

            def live(name: str) -> LiveFile:
                return LiveFile(
                    where,
                    name,
                    rotate_s=config.live_rotate_s,
                    retention_s=config.live_retention_s,
                    wall=lambda: wall_ns() / 1e9,
                )

            self.live_diffs = live("live_depth_diffs")
            self.live_trades = live("live_trades")
        self._is_binance = isinstance(engine, SequenceSync)

    # -- days -------------------------------------------------------------------------------
    def open_day(self, day: date, *, reason: str) -> DayFiles:
        """Start writing ``day`` (on start-up, or at its window start while running).

        A day opened while the book is SYNCED gets its own starting snapshot from the
        local book at once.
        """
        layout = DayLayout(self.config.data_dir, self.exchange, self.symbol_fs, day)
        files = DayFiles(layout, self.config, clock=self.monotonic)
        self.days[day] = files
        self.opened_days.add(str(layout.root))
        self.active = [self.days[d] for d in sorted(self.days)]
        self.seq = max(self.seq, files.resume_seq)
        self.event_id = max(self.event_id, files.resume_event_id)
        self.repaired += files.repaired
        for sidecar in files.repaired:
            self._event_to(
                files,
                "file_repaired",
                reason="damaged gzip tail moved aside",
                details={"sidecar": sidecar.name},
            )
            self.log.write("WARNING", f"damaged gzip tail moved aside to {sidecar}")
        start, end = self.config.window.bounds(day)
        self._event_to(
            files,
            "run_start" if reason == "run_start" else "window_start",
            state=self.engine.state.name,
            details={
                "resumed": files.resumed,
                "exchange": self.exchange,
                "symbol": self.symbol,
                "levels": self.levels,
                "book_depth": self.book_depth,
                "store_depth_diffs": self.config.store_depth_diffs,
                "window_start": start.isoformat(),
                "window_end": end.isoformat(),
            },
        )
        if self.instrument is not None:
            self._instrument_row(files, self.instrument)
        if self.engine.state is SyncState.SYNCED:
            self._local_snapshot(files)
        self.log.write("INFO", f"day {layout.label} open ({reason}) -> {layout.root}")
        return files

    def close_day(self, day: date, *, reason: str) -> None:
        """Stop writing ``day``: ``window_end`` (or ``run_stop``) in its ledger, files closed."""
        files = self.days.pop(day, None)
        if files is None:
            return
        self.active = [self.days[d] for d in sorted(self.days)]
        event = "window_end" if reason == "window_end" else "run_stop"
        self._event_to(files, event, state=self.engine.state.name, details=self.stats.as_dict())
        files.close()
        self.log.write("INFO", f"day {files.layout.label} closed ({reason})")

    # -- ledger -----------------------------------------------------------------------------
    def _next_event_id(self) -> int:
        self.event_id += 1
        return self.event_id

    def _event_to(
        self,
        files: DayFiles,
        event: str,
        *,
        tag: str = "",
        state: str = "",
        reason: str = "",
        snapshot_file: str = "",
        details: dict[str, Any] | None = None,
        live: bool = True,
    ) -> int:
        event_id = self._next_event_id()
        t_ns = self.wall_ns()
        files.event_row(
            event_id, t_ns, self.run_id, self.seq, event, tag, state, reason, snapshot_file, details
        )
        if live:
            self._live_event(event_id, t_ns, event, tag, state, reason, details)
        return event_id

    def _live_event(  # noqa: PLR0917 - the ledger columns
        self,
        event_id: int,
        t_ns: int,
        event: str,
        tag: str,
        state: str,
        reason: str,
        details: dict[str, Any] | None,
    ) -> None:
        """A ledger row in the live book stream, in order with the diffs (the relay's events,
        and the resets a follower of the live book must apply)."""
        if self.live_diffs is None:
            return
        self.live_diffs.write(
            _dumps(
                {
                    "recv_seq": self.seq,
                    "recv_time_ns": t_ns,
                    "exchange": self.exchange,
                    "symbol": self.symbol,
                    "kind": "event",
                    "event_id": event_id,
                    "run_id": self.run_id,
                    "event": event,
                    "tag": tag,
                    "state": state,
                    "reason": reason,
                    "details": details or {},
                }
            )
            + b"\n"
        )

    def _live_snapshot(  # noqa: PLR0917 - the snapshot row's fields
        self,
        tag: str,
        source: str,
        bids: Sequence[Sequence[str]],
        asks: Sequence[Sequence[str]],
        update_id: int | None,
        checksum: int | None,
    ) -> None:
        """The book the engine accepted (or the local book at a live-file rotation) in the
        live book stream: a follower of ``live/`` starts from the last one."""
        if self.live_diffs is None:
            return
        self.live_diffs.write(
            _dumps(
                {
                    "recv_seq": self.seq,
                    "recv_time_ns": self.wall_ns(),
                    "exchange": self.exchange,
                    "symbol": self.symbol,
                    "kind": "snapshot",
                    "tag": tag,
                    "source": source,
                    "state": self.engine.state.name,
                    "depth": self.book_depth,
                    "update_id": update_id,
                    "checksum": checksum,
                    "bids": bids,
                    "asks": asks,
                }
            )
            + b"\n"
        )

    def event(
        self,
        event: str,
        *,
        tag: str = "",
        state: str = "",
        reason: str = "",
        details: dict[str, Any] | None = None,
        level: str = "INFO",
    ) -> None:
        """One ledger row in every active day (and a log line)."""
        for i, files in enumerate(self.active):
            self._event_to(files, event, tag=tag, state=state, reason=reason, details=details, live=i == 0)
        if not self.active:
            # No day open (outside the trading window): no ledger row, but a live follower must
            # still learn that the book is gone (event_id 0: not in any ledger).
            self._live_event(0, self.wall_ns(), event, tag, state, reason, details)
        self.log.write(
            level, f"{event} {tag} {state} {reason} {orjson.dumps(details).decode() if details else ''}"
        )

    def _gap(self, kind: str, expected: int | None, got: int | None, reason: str) -> None:
        for i, files in enumerate(self.active):
            event_id = self._event_to(
                files, kind, reason=reason, details={"expected": expected, "got": got}, live=i == 0
            )
            files.gap_row([event_id, self.wall_ns(), self.run_id, self.seq, kind, expected, got, reason])
        self.log.write("WARNING", f"{kind}: {reason} (expected {expected}, got {got})")

    # -- engine outputs -----------------------------------------------------------------------
    def _handle(self, outputs: Sequence[SyncOutput], t_ns: int, ts_ms: int | None) -> None:
        wrote_frame = False
        for out in outputs:
            kind = type(out)
            if kind is BookUpdated:
                if not wrote_frame and self.engine.state is SyncState.SYNCED:
                    self._frame(t_ns, ts_ms)
                    wrote_frame = True
            elif kind is StateChanged:
                assert isinstance(out, StateChanged)
                self._state_changed(out)
            elif kind is GapDetected:
                assert isinstance(out, GapDetected)
                self.stats.gaps += 1
                self._gap("gap", out.expected, out.got, out.reason)
            elif kind is ChecksumMismatch:
                assert isinstance(out, ChecksumMismatch)
                self.stats.mismatches += 1
                self._gap(
                    "checksum_mismatch", out.expected, out.got, "venue checksum differs from local book"
                )
            elif kind is NeedSnapshot:
                assert isinstance(out, NeedSnapshot)
                self.event("snapshot_request", reason=out.reason)
                self.request_snapshot(self, out.reason)

    def _state_changed(self, change: StateChanged) -> None:
        self.state_since = self.monotonic()
        self.sync_warned = False
        self.event(
            "state_change",
            state=change.new.name,
            reason=change.reason,
            details={"from": change.old.name},
        )
        if change.new is SyncState.RESYNCING and not self.resyncing:
            self.resyncing = True
            self.stats.resyncs += 1
            self.event("resync_start", tag="resync_start", state=change.new.name, reason=change.reason)

    def lost_connection(self, reason: str) -> None:
        """The connection ended: the book cannot be trusted any more (engine back to CONNECTING)."""
        had_book = self.engine.state in (SyncState.SYNCING, SyncState.SYNCED)
        outputs = self.engine.reset(reason)
        self._handle(outputs, self.wall_ns(), None)
        if had_book and not self.resyncing:
            self.resyncing = True
            self.stats.resyncs += 1
            self.event("resync_start", tag="resync_start", state=self.engine.state.name, reason=reason)

    def stop(self, reason: str) -> None:
        """Final state STOPPED (ledger), then every day closed with ``run_stop``."""
        self._handle(self.engine.stop(reason), self.wall_ns(), None)
        for day in list(self.days):
            self.close_day(day, reason="run_stop")
        for live in (self.live_diffs, self.live_trades):
            if live is not None:
                live.close()
        self.log.close()

    # -- book frames and snapshots ---------------------------------------------------------------
    def _frame(self, t_ns: int, ts_ms: int | None) -> None:
        if self.frame_interval_ns and t_ns - self.last_frame_ns < self.frame_interval_ns:
            return
        self.last_frame_ns = t_ns
        levels = self.levels
        bids, asks = self.engine.book.top(levels)
        update_id = self.engine.update_id if self._is_binance else ""  # type: ignore[attr-defined]
        checksum = self.last_checksum
        # One join per side (this runs for every diff while SYNCED): "p1,q1,p2,q2" plus an
        # empty "," pair per missing level; a side with no level at all is 2N empty fields.
        row = (
            f"{self.seq},{t_ns},{'' if ts_ms is None else ts_ms},{update_id},"
            f"{'' if checksum is None else checksum},"
            f"{_side_text(bids, levels)},{_side_text(asks, levels)}\n"
        ).encode()
        for files in self.active:
            files.book.write(row)
        self.stats.book_frames += 1

    def _snapshot_files(  # noqa: PLR0917
        self,
        files: DayFiles,
        tag: str,
        bids: Sequence[Sequence[str]],
        asks: Sequence[Sequence[str]],
        payload: str,
        details: dict[str, Any],
    ) -> None:
        event_id = self._next_event_id()
        rel = files.write_snapshot(event_id, tag, bids, asks, payload)
        files.event_row(
            event_id,
            self.wall_ns(),
            self.run_id,
            self.seq,
            "snapshot",
            tag,
            self.engine.state.name,
            details.get("source", ""),
            rel,
            details,
        )

    def _local_snapshot(self, files: DayFiles) -> None:
        """The day's starting snapshot from the synced local book (a new day folder)."""
        bids, asks = self.engine.book.top()
        details: dict[str, Any] = {"source": "local_book", "levels": [len(bids), len(asks)]}
        if self._is_binance:
            details["update_id"] = self.engine.update_id  # type: ignore[attr-defined]
        if self.last_checksum is not None:
            details["checksum"] = self.last_checksum
        payload = {
            "source": "local_book",
            "exchange": self.exchange,
            "symbol": self.symbol,
            "recv_seq": self.seq,
            **{k: v for k, v in details.items() if k in ("update_id", "checksum")},
            "bids": bids,
            "asks": asks,
        }
        self._snapshot_files(files, "initial", bids, asks, orjson.dumps(payload).decode(), details)

    def _live_restart(self) -> None:
        """A new live book file starts with what a follower needs: the instrument and, while
        SYNCED, the local book (a follower never has to read a rotated file for its start)."""
        if self.instrument is not None:
            inst = self.instrument
            details = {"price_precision": inst.price_precision, "qty_precision": inst.qty_precision}
            self._live_event(0, self.wall_ns(), "instrument", "", "", "", details)
        if self.engine.state in (SyncState.SYNCED, SyncState.SYNCING):
            # SYNCING too: the book stands on an accepted snapshot not yet proven (Binance
            # waiting for its bridging diff); a follower starting here proves it the same way.
            bids, asks = self.engine.book.top()
            update_id = self.engine.update_id if self._is_binance else None  # type: ignore[attr-defined]
            self._live_snapshot("rotation", "local_book", bids, asks, update_id, self.last_checksum)
        else:
            state = self.engine.state.name
            self._live_event(0, self.wall_ns(), "state_change", "", state, "live file rotated", {})

    # -- events from the connection ----------------------------------------------------------------
    def _store_diff_row(
        self, kind: str, t_ns: int, ev: BookDiff | BookChecksum, ids: tuple[int | None, int | None], raw: str
    ) -> None:
        """One ``diffs/`` + ``live/`` row (diff or checksum frame), written whatever the book state."""
        self.seq += 1
        is_diff = type(ev) is BookDiff
        row = _dumps(
            {
                "recv_seq": self.seq,
                "recv_time_ns": t_ns,
                "exchange": self.exchange,
                "symbol": self.symbol,
                "kind": kind,
                "event_time_ms": ev.ts_ms,
                "first_id": ids[0],
                "last_id": ids[1],
                "checksum": ev.checksum if is_diff else ev.value,  # type: ignore[union-attr]
                "seq": ev.seq,
                "bids": ev.bids if is_diff else [],  # type: ignore[union-attr]
                "asks": ev.asks if is_diff else [],  # type: ignore[union-attr]
                "raw": raw,
            }
        )
        row += b"\n"
        for files in self.active:
            if files.diffs is not None:
                files.diffs.write(row)
        if self.live_diffs is not None and self.config.store_depth_diffs:
            self.live_diffs.write(row)

    def on_diff(self, diff: BookDiff, raw: str, t_ns: int) -> None:
        """A book diff: stored raw (always), applied, framed while SYNCED."""
        self.stats.diffs += 1
        self._store_diff_row("diff", t_ns, diff, (diff.first_id, diff.last_id), raw)
        if diff.checksum is not None:
            self.last_checksum = diff.checksum
        outputs = self.engine.receive(diff)
        if outputs:
            if len(outputs) == 1 and type(outputs[0]) is BookUpdated:
                if self.engine.state is SyncState.SYNCED:
                    self._frame(t_ns, diff.ts_ms)
            else:
                self._handle(outputs, t_ns, diff.ts_ms)

    def on_checksum(self, cs: BookChecksum, raw: str, t_ns: int) -> None:
        """A Bitfinex ``cs`` frame: stored with the diffs, verified by the engine."""
        self.stats.checksums += 1
        self._store_diff_row("checksum", t_ns, cs, (None, None), raw)
        self.last_checksum = cs.value
        outputs = self.engine.receive(cs)
        if outputs:
            self._handle(outputs, t_ns, cs.ts_ms)

    def on_snapshot(self, snap: BookSnapshot, raw: str, t_ns: int, *, source: str) -> None:
        """A snapshot (REST for Binance, WS for Kraken/Bitfinex): applied; if the engine accepts
        it, snapshot files + a ``snapshot`` ledger row (tag ``initial`` for a day without one,
        else ``resync_done``) in every active day."""
        self.seq += 1
        self.stats.snapshots += 1
        if snap.checksum is not None:
            self.last_checksum = snap.checksum
        outputs = self.engine.receive(snap)
        accepted = self.engine.state in (SyncState.SYNCING, SyncState.SYNCED)
        if accepted:
            details: dict[str, Any] = {
                "source": source,
                "levels": [len(snap.bids), len(snap.asks)],
            }
            if snap.update_id is not None:
                details["update_id"] = snap.update_id
            if snap.checksum is not None:
                details["checksum"] = snap.checksum
            for files in self.active:
                tag = "initial" if not files.has_snapshot else "resync_done"
                self._snapshot_files(files, tag, snap.bids, snap.asks, raw, details)
            self._live_snapshot(
                "resync_done" if self.live_snapshots else "initial",
                source,
                snap.bids,
                snap.asks,
                snap.update_id,
                snap.checksum,
            )
            self.live_snapshots += 1
            self.resyncing = False
        else:
            self.event(
                "snapshot_rejected",
                state=self.engine.state.name,
                reason="the engine asked for a newer one",
                details={"update_id": snap.update_id},
            )
        self._handle(outputs, t_ns, snap.ts_ms)

    def on_trade(self, trade: Trade, raw: str, t_ns: int) -> None:
        """A live trade: normalized CSV row, raw NDJSON row, live row."""
        self.seq += 1
        self.stats.trades += 1
        tid = trade.trade_id
        tid_text = str(tid) if type(tid) is int else orjson.dumps(str(tid)).decode()
        csv = f"{self.seq},{t_ns},{trade.ts_ms},{tid_text},{trade.price},{trade.qty},{trade.side}\n".encode()
        row = _dumps(
            {
                "recv_seq": self.seq,
                "recv_time_ns": t_ns,
                "exchange": self.exchange,
                "symbol": self.symbol,
                "event_time_ms": trade.ts_ms,
                "trade_id": tid,
                "price": trade.price,
                "qty": trade.qty,
                "side": trade.side,
                "raw": raw,
            }
        )
        row += b"\n"
        for files in self.active:
            files.trades.write(csv)
            files.trades_raw.write(row)
        if self.live_trades is not None:
            self.live_trades.write(row)

    def on_instrument(self, inst: Instrument) -> None:
        """Kraken precisions: needed for checksums; recorded so a day can be validated alone."""
        changed = self.instrument != inst
        self.instrument = inst
        self._handle(self.engine.receive(inst), self.wall_ns(), None)
        if changed:
            for i, files in enumerate(self.active):
                self._instrument_row(files, inst, live=i == 0)

    def _instrument_row(self, files: DayFiles, inst: Instrument, *, live: bool = True) -> None:
        self._event_to(
            files,
            "instrument",
            details={"price_precision": inst.price_precision, "qty_precision": inst.qty_precision},
            live=live,
        )

    def on_ack(self, ack: Ack) -> None:
        """Subscription answers: refused ones are logged; book acks go to the engine."""
        if not ack.ok:
            self.event(
                "subscription_refused",
                reason=ack.message,
                details={"channel": ack.channel},
                level="ERROR",
            )
            return
        if ack.channel == "book":
            self._handle(self.engine.receive(ack), self.wall_ns(), None)

    def on_break(self, brk: SequenceBreak) -> None:
        """A Bitfinex connection sequence break: every book on the connection resyncs."""
        self._handle(self.engine.receive(brk), self.wall_ns(), None)

    def bad_message(self, reason: str, frame: str, t_ns: int) -> None:
        """A frame the adapter rejected: counted and logged in the ledger, recording goes on."""
        self.stats.bad_messages += 1
        self.event(
            "bad_message",
            reason=reason[:300],
            details={"length": len(frame), "starts": frame[:120]},
            level="WARNING",
        )

    # -- upkeep ---------------------------------------------------------------------------------
    def flush_live(self) -> None:
        """Push live rows to the OS (called after every received frame: the relay's latency)."""
        if self.live_diffs is not None:
            self.live_diffs.flush()
        if self.live_trades is not None:
            self.live_trades.flush()

    def housekeeping(self, now_mono: float) -> None:
        """Timed flushes, live rotation and the warnings of SYNC_WARN_AFTER_SEC / MAX_BUFFER_WARN."""
        for files in self.active:
            files.maybe_flush()
        for live in (self.live_diffs, self.live_trades):
            if live is not None:
                rotated = live.maybe_rotate()
                if rotated is not None:
                    self.event("live_rotated", details={"file": rotated.name})
                    if live is self.live_diffs:
                        self._live_restart()
        config = self.config
        state = self.engine.state
        if (
            state is not SyncState.SYNCED
            and state is not SyncState.STOPPED
            and not self.sync_warned
            and now_mono - self.state_since >= config.sync_warn_after_s
        ):
            self.sync_warned = True
            self.event(
                "sync_warn",
                state=state.name,
                reason=f"not SYNCED for {now_mono - self.state_since:.0f} s",
                level="WARNING",
            )
        pending = sum(f.pending_rows for f in self.active)
        if pending >= config.max_buffer_warn and not self.buffer_warned:
            self.buffer_warned = True
            self.event("buffer_warn", reason=f"{pending} rows waiting for a flush", level="WARNING")
        elif pending < config.max_buffer_warn // 2:
            self.buffer_warned = False

    def heartbeat(self, extra: dict[str, Any]) -> None:
        """Telemetry row (HEARTBEAT_SEC): counters, state, buffered rows."""
        details = self.stats.as_dict()
        details["pending_rows"] = sum(f.pending_rows for f in self.active)
        engine_stats = self.engine.stats
        details["stale_ignored"] = engine_stats.stale_ignored
        details["unsynced_ignored"] = engine_stats.unsynced_ignored
        details.update(extra)
        self.event("heartbeat", state=self.engine.state.name, details=details)

    def flush(self) -> None:
        """Flush every open file now."""
        for files in self.active:
            files.flush()
        self.flush_live()
