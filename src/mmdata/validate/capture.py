"""Validate a capture file offline: venue adapter + one sync engine per symbol, no network.

Theory of operation
-------------------
Records are read in file order. ``ws_recv`` frames go through the venue adapter
(:func:`mmdata.exchanges.get`); each event is routed by ``event.symbol`` to that
symbol's engine (created on first sight; Kraken instrument precisions seen earlier
are handed to it at birth); a Bitfinex :class:`~mmdata.types.SequenceBreak` goes to
every engine of the connection. A new ``ws_open`` record starts a new connection:
adapters are renewed and engines reset.

Binance engines ask for REST snapshots (:class:`~mmdata.book.sync.NeedSnapshot`).
They are answered from the capture's own ``rest`` records for that symbol, in
recorded order: a snapshot recorded before the request is offered first, later
ones when the file reaches them. The engine applies the procedure of PROTOCOLS.md
§A.4 and asks again when an offered snapshot is older than its first buffered
``U`` — so the snapshot used is the first recorded one whose ``lastUpdateId`` is
not older than the first buffered ``U``.

The report counts per symbol what ``fixtures/README.md`` defines and locates every
problem (line, receive time, ids or checksums). A capture is *ok* when no symbol had
a gap or checksum mismatch, every book was proven at least once (Binance: a snapshot
bridged by a diff; Kraken/Bitfinex: synced, and for Kraken every checksum could be
computed), and the file was read to its end.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mmdata import exchanges
from mmdata.book.sync import (
    BookUpdated,
    ChecksumMismatch,
    GapDetected,
    NeedSnapshot,
    SyncEngine,
    SyncOutput,
    SyncState,
)
from mmdata.errors import CorruptFile, ExchangeProtocolError, MMDataError
from mmdata.exchanges.base import Exchange
from mmdata.store.capture import CaptureRecord, open_capture
from mmdata.types import (
    Ack,
    BookChecksum,
    BookDiff,
    BookSnapshot,
    Instrument,
    SequenceBreak,
    Trade,
)

__all__ = ["COUNTERS", "CaptureReport", "Problem", "SymbolReport", "counters_of", "validate_capture"]

_MAX_PROBLEMS = 1000
#: The per-symbol counters of every ``validate --json`` report, in order (fixtures/README.md).
COUNTERS = (
    "diffs_applied",
    "checksums_verified",
    "checksum_mismatches",
    "gaps",
    "resyncs",
    "crossed_states",
    "trades",
)


def counters_of(report: object) -> dict[str, int]:
    """The :data:`COUNTERS` of a report (capture symbol or day folder), in order."""
    return {key: getattr(report, key) for key in COUNTERS}


_DEFAULT_DEPTH = {"binance": 1000, "kraken": 10, "bitfinex": 25}


@dataclass(slots=True)
class Problem:
    """Something that makes a capture untrustworthy, with where it happened."""

    kind: str  # gap | checksum_mismatch | bad_message | never_synced | unverifiable | truncated
    symbol: str | None
    line: int | None
    t_ns: int | None
    detail: str
    expected: int | None = None
    got: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (receive time as ISO-8601 UTC)."""
        return {
            "kind": self.kind,
            "symbol": self.symbol,
            "line": self.line,
            "time": _iso(self.t_ns),
            "expected": self.expected,
            "got": self.got,
            "detail": self.detail,
        }


@dataclass(slots=True)
class SymbolReport:
    """Counts for one symbol (the keys of ``--json`` output, in order)."""

    diffs_applied: int = 0
    checksums_verified: int = 0
    checksum_mismatches: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed_states: int = 0
    trades: int = 0
    final_state: str = SyncState.CONNECTING.name
    synced_once: bool = False

    def counts(self) -> dict[str, int]:
        """The seven counters of the ``--json`` contract."""
        return counters_of(self)


@dataclass(slots=True)
class CaptureReport:
    """Result of :func:`validate_capture`."""

    path: str
    exchange: str
    symbols: dict[str, SymbolReport]
    bad_messages: int = 0
    ignored_frames: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    problems_total: int = 0
    truncated: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No gap, no mismatch, every book proven, file read to the end."""
        if self.truncated is not None:
            return False
        return not any(
            p.kind in ("gap", "checksum_mismatch", "never_synced", "unverifiable") for p in self.problems
        )

    def as_json(self) -> dict[str, Any]:
        """The ``mmdata validate --json`` object."""
        return {
            "ok": self.ok,
            "exchange": self.exchange,
            "symbols": {sym: rep.counts() for sym, rep in self.symbols.items()},
            "bad_messages": self.bad_messages,
            "problems": [p.as_dict() for p in self.problems],
        }


def _iso(t_ns: int | None) -> str | None:
    if t_ns is None:
        return None
    return datetime.fromtimestamp(t_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")


class _CaptureValidator:
    """The replay loop; one instance per capture."""

    def __init__(self, exchange: str, header_symbols: tuple[str, ...], depth: int) -> None:
        self.exchange = exchange
        self.depth = depth
        self.adapter: Exchange = exchanges.get(exchange)
        self.engines: dict[str, SyncEngine] = {}
        self.reports: dict[str, SymbolReport] = {s: SymbolReport() for s in header_symbols}
        self.instruments: dict[str, Instrument] = {}
        self.book_depths: dict[str, int] = {}
        # Binance: recorded REST snapshots not yet offered, and who waits for one.
        self.rest_queue: dict[str, deque[tuple[CaptureRecord, BookSnapshot]]] = {}
        self.waiting: set[str] = set()
        self.problems: list[Problem] = []
        self.problems_total = 0
        self.bad_messages = 0
        self.ignored = 0
        self.record: CaptureRecord | None = None

    # -- problems ---------------------------------------------------------------
    def problem(
        self,
        kind: str,
        symbol: str | None,
        detail: str,
        expected: int | None = None,
        got: int | None = None,
    ) -> None:
        self.problems_total += 1
        if len(self.problems) < _MAX_PROBLEMS:
            rec = self.record
            self.problems.append(
                Problem(
                    kind,
                    symbol,
                    rec.line if rec else None,
                    rec.t if rec else None,
                    detail,
                    expected,
                    got,
                )
            )

    # -- engines ------------------------------------------------------------------
    def engine(self, symbol: str) -> SyncEngine:
        eng = self.engines.get(symbol)
        if eng is None:
            eng = self.adapter.new_sync_engine(symbol, self.book_depths.get(symbol, self.depth))
            self.engines[symbol] = eng
            self.reports.setdefault(symbol, SymbolReport())
            inst = self.instruments.get(symbol)
            if inst is not None:
                eng.receive(inst)
        return eng

    def feed(self, symbol: str, event: Any) -> None:
        outputs = self.engine(symbol).receive(event)
        if outputs and not (len(outputs) == 1 and type(outputs[0]) is BookUpdated):
            self.handle(symbol, outputs)

    def handle(self, symbol: str, outputs: Any) -> None:
        out: SyncOutput
        for out in outputs:
            kind = type(out)
            if kind is GapDetected:
                assert isinstance(out, GapDetected)
                self.problem(
                    "gap",
                    symbol,
                    f"{out.reason}: expected {out.expected}, got {out.got}",
                    out.expected,
                    out.got,
                )
            elif kind is ChecksumMismatch:
                assert isinstance(out, ChecksumMismatch)
                self.problem(
                    "checksum_mismatch",
                    symbol,
                    f"venue checksum {out.expected}, local book {out.got}",
                    out.expected,
                    out.got,
                )
            elif kind is NeedSnapshot:
                self.waiting.add(symbol)
                self.offer_snapshot(symbol)

    def offer_snapshot(self, symbol: str) -> None:
        queue = self.rest_queue.get(symbol)
        while symbol in self.waiting and queue:
            _rec, snap = queue.popleft()
            self.waiting.discard(symbol)
            self.feed(symbol, snap)

    # -- records ------------------------------------------------------------------
    def on_rest(self, rec: CaptureRecord) -> None:
        symbol = self.adapter.rest_symbol(rec.url)
        if symbol is None:
            return
        if rec.status is not None and rec.status != 200:
            self.problem("bad_message", symbol, f"REST answer with HTTP {rec.status} ignored")
            return
        try:
            snap = self.adapter.parse_snapshot(symbol, rec.data)
        except ExchangeProtocolError as exc:
            self.bad_messages += 1
            self.problem("bad_message", symbol, f"REST snapshot unusable: {exc}")
            return
        self.rest_queue.setdefault(symbol, deque()).append((rec, snap))
        self.offer_snapshot(symbol)

    def on_open(self) -> None:
        """A new connection: fresh adapter state, engines back to CONNECTING."""
        self.adapter = exchanges.get(self.exchange)
        for eng in self.engines.values():
            eng.reset("new connection in capture")
        self.waiting.clear()

    def on_frame(self, rec: CaptureRecord) -> None:
        try:
            events = self.adapter.parse(rec.data)
        except ExchangeProtocolError as exc:
            self.bad_messages += 1
            self.problem("bad_message", None, f"{exc} (frame starts {rec.data[:80]!r})")
            return
        engines = self.engines
        for ev in events:
            kind = type(ev)
            if kind is BookDiff or kind is BookSnapshot or kind is BookChecksum:
                # Hot path, inlined `feed`: one dict lookup and the engine call.
                book_ev: BookDiff | BookSnapshot | BookChecksum = ev  # type: ignore[assignment]
                symbol = book_ev.symbol
                eng = engines.get(symbol) or self.engine(symbol)
                outputs = eng.receive(book_ev)
                if outputs and (len(outputs) > 1 or type(outputs[0]) is not BookUpdated):
                    self.handle(symbol, outputs)
            elif isinstance(ev, Trade):
                if not ev.snapshot:
                    self.reports.setdefault(ev.symbol, SymbolReport()).trades += 1
            elif isinstance(ev, Instrument):
                self.instruments[ev.symbol] = ev
                if ev.symbol in engines:
                    self.feed(ev.symbol, ev)
            elif isinstance(ev, SequenceBreak):
                self.problem(
                    "gap",
                    None,
                    f"connection sequence break: expected {ev.expected}, got {ev.got}",
                    ev.expected,
                    ev.got,
                )
                for symbol, eng in engines.items():
                    outputs = eng.receive(ev)
                    self.handle(symbol, [o for o in outputs if type(o) is not GapDetected])
            elif isinstance(ev, Ack):
                if ev.symbol is not None and ev.channel == "book":
                    if not ev.ok:
                        self.problem("bad_message", ev.symbol, f"book subscription refused: {ev.message}")
                        continue
                    if ev.depth is not None:
                        self.book_depths[ev.symbol] = ev.depth
                    self.feed(ev.symbol, ev)
            else:
                self.ignored += 1

    def finish(self) -> None:
        for symbol, eng in self.engines.items():
            rep = self.reports[symbol]
            st = eng.stats
            rep.diffs_applied = st.diffs_applied
            rep.checksums_verified = st.checksums_verified
            rep.checksum_mismatches = st.checksum_mismatches
            rep.gaps = st.gaps
            rep.resyncs = st.resyncs
            rep.crossed_states = st.crossed_states
            rep.final_state = eng.state.name
            rep.synced_once = (
                st.diffs_applied > 0 or eng.state is SyncState.SYNCED or st.checksums_verified > 0
            )
            if st.checksums_unverified:
                self.problem(
                    "unverifiable",
                    symbol,
                    f"{st.checksums_unverified} checksums could not be computed "
                    "(no instrument precisions in the capture)",
                )
            if not rep.synced_once:
                why = "no usable REST snapshot" if symbol in self.waiting else "never reached SYNCED"
                self.problem("never_synced", symbol, f"book never proven: {why}")
            self.bad_messages += st.malformed_updates
            for note in st.problems:
                self.problem("bad_message", symbol, note)


def validate_capture(
    path: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CaptureReport:
    """Replay a capture through adapter and engines and report what was verified.

    ``progress(bytes_read, total_bytes)`` is called every few thousand records.
    Raises :class:`~mmdata.errors.StoreError` / :class:`~mmdata.errors.ConfigError`
    when the file cannot be read as a capture at all.
    """
    started = time.perf_counter()
    reader = open_capture(path)
    header = reader.header
    depth = header.extra.get("depth", _DEFAULT_DEPTH.get(header.exchange, 25))
    if not isinstance(depth, int) or depth <= 0:
        depth = _DEFAULT_DEPTH.get(header.exchange, 25)
    try:
        run = _CaptureValidator(header.exchange, header.symbols, depth)
    except MMDataError:
        reader.close()
        raise
    total = Path(path).stat().st_size
    truncated: str | None = None
    records = 0
    on_frame = run.on_frame
    try:
        for rec in reader:
            records += 1
            run.record = rec
            kind = rec.kind
            if kind == "ws_recv":
                on_frame(rec)
            elif kind == "rest":
                run.on_rest(rec)
            elif kind == "ws_open" and records > 1:
                run.on_open()
            if progress is not None and records % 4096 == 0:
                progress(reader.bytes_read(), total)
    except CorruptFile as exc:
        truncated = str(exc)
        run.problem("truncated", None, truncated)
    finally:
        reader.close()
    if reader.bad_lines:
        run.bad_messages += reader.bad_lines
        lines = ", ".join(str(n) for n in reader.bad_line_numbers[:10])
        run.record = None
        run.problem("bad_message", None, f"{reader.bad_lines} unreadable capture lines (lines {lines})")
    run.record = None
    run.finish()
    if progress is not None:
        progress(total, total)
    return CaptureReport(
        path=str(path),
        exchange=header.exchange,
        symbols=dict(sorted(run.reports.items())),
        bad_messages=run.bad_messages,
        ignored_frames=run.ignored,
        records=records,
        problems=run.problems,
        problems_total=run.problems_total,
        truncated=truncated,
        seconds=time.perf_counter() - started,
    )
