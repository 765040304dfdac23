"""Replay one recorded day folder through a fresh sync engine (the recorder's proof).

Theory of operation
-------------------
A day folder holds everything needed to rebuild its book alone: the ledger
(``events_*``) says which venue, symbol and book depth were recorded, the instrument
precisions (Kraken), where each accepted snapshot is (``snapshots/``) and where the
recorder's engine was reset (``state_change`` to CONNECTING: a new connection, venue
maintenance, a new run); ``diffs/`` holds every diff and checksum frame with its
normalized levels, numbered by ``recv_seq``.

Rows are merged by ``recv_seq``. A ledger row numbered ``r`` happened after data row
``r`` and before ``r + 1`` (the recorder numbers data rows and stamps ledger rows with
the current number), so ledger actions at ``r`` run right after diff ``r``. Diffs go to
a fresh engine of the venue (:class:`~mmdata.book.sync.SequenceSync` checks Binance
``U``/``u`` continuity, :class:`~mmdata.book.sync.ChecksumSync` every Kraken and
Bitfinex checksum); snapshots come from the snapshot files; a Bitfinex ``SEQ_ALL``
break in the ledger is fed as a :class:`~mmdata.types.SequenceBreak`. Diffs before the
first snapshot are buffered by the Binance engine exactly as the recorder's were.

Sampled book frames (``orderbook_ws_depth_*``) are compared with the replayed book at
the same ``recv_seq``: the frames must be what the diffs say.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mmdata import exchanges
from mmdata.book.sync import ChecksumMismatch, GapDetected, SyncEngine, SyncOutput, SyncState
from mmdata.errors import ConfigError, CorruptFile, StoreError
from mmdata.store.capture import gzip_lines
from mmdata.types import BookChecksum, BookDiff, BookSnapshot, Instrument, SequenceBreak
from mmdata.validate.capture import COUNTERS

__all__ = ["DayProblem", "DayReport", "validate_day"]

_MAX_PROBLEMS = 1000


@dataclass(slots=True)
class DayProblem:
    """Something wrong in a day folder, located by ``recv_seq`` and file."""

    # gap | checksum_mismatch | frame_mismatch | frame_unsynced | truncated | unreadable_row | never_synced
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


@dataclass(slots=True)
class DayReport:
    """What replaying a day folder verified."""

    path: str
    exchange: str
    symbol: str
    diffs_applied: int = 0
    checksums_verified: int = 0
    checksum_mismatches: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed_states: int = 0
    trades: int = 0
    diff_rows: int = 0
    snapshots_used: int = 0
    frames_checked: int = 0
    frames_mismatched: int = 0
    frames_unsynced: int = 0
    final_state: str = ""
    problems: list[DayProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No gap, no mismatch, no damaged file, every sampled frame right, book proven."""
        return not self.problems

    def counts(self) -> dict[str, int]:
        """The seven counters shared with ``mmdata validate FILE``."""
        return {key: getattr(self, key) for key in COUNTERS}


def _rows(path: Path, report: DayReport) -> Iterator[bytes]:
    """Lines of a gzip file; a damaged tail becomes a ``truncated`` problem."""
    if not path.exists():
        return
    try:
        yield from gzip_lines(path)
    except CorruptFile as exc:
        _problem(report, DayProblem("truncated", str(exc), file=path.name))


def _problem(report: DayReport, problem: DayProblem) -> None:
    if len(report.problems) < _MAX_PROBLEMS:
        report.problems.append(problem)


def _ledger(path: Path, report: DayReport) -> list[dict[str, str]]:
    lines = list(_rows(path, report))
    if not lines:
        raise StoreError(f"{path} is missing or empty: not a recorded day folder", path=str(path))
    text = b"\n".join(lines).decode("utf-8", "replace")
    return list(csv.DictReader(io.StringIO(text)))


def _details(row: dict[str, str]) -> dict[str, Any]:
    text = row.get("details") or ""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _snapshot_levels(path: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    bids: list[tuple[str, str]] = []
    asks: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            (bids if rec["side"] == "bid" else asks).append((rec["price"], rec["qty"]))
    return bids, asks


def validate_day(path: str | Path) -> DayReport:
    """Replay the day folder ``path`` and report what was verified (see the module docstring).

    Raises :class:`~mmdata.errors.StoreError` when ``path`` is not a recorded day folder.
    """
    root = Path(path)
    events_files = sorted(root.glob("events_*.csv.gz"))
    if not root.is_dir() or not events_files:
        raise StoreError(f"{root} is not a recorded day folder (no events_*.csv.gz)", path=str(root))
    report = DayReport(str(root), "", "")
    ledger = _ledger(events_files[0], report)
    header = next((r for r in ledger if r["event"] in ("run_start", "window_start")), None)
    if header is None:
        raise StoreError(f"{events_files[0]} has no run_start row", path=str(root))
    head = _details(header)
    exchange = str(head.get("exchange", ""))
    symbol = str(head.get("symbol", ""))
    depth = int(head.get("book_depth") or 25)
    report.exchange, report.symbol = exchange, symbol
    try:
        adapter = exchanges.get(exchange)
    except ConfigError as exc:
        raise StoreError(f"{root}: {exc}", path=str(root)) from exc
    engine: SyncEngine = adapter.new_sync_engine(symbol, depth)
    label = root.name
    fs = events_files[0].name[len("events_") : -len(f"_{label}.csv.gz")]

    # Ledger actions in (recv_seq, event_id) order.
    actions: list[tuple[int, int, dict[str, str]]] = []
    for row in ledger:
        if row["event"] in ("snapshot", "state_change", "sequence_break", "instrument", "run_start"):
            try:
                actions.append((int(row["recv_seq"]), int(row["event_id"]), row))
            except ValueError:
                _problem(report, DayProblem("unreadable_row", f"ledger row {row!r:.120}", file="events"))
    actions.sort(key=lambda a: (a[0], a[1]))

    frames, frame_seqs, n_levels = _frames(root / f"orderbook_ws_depth_{fs}_{label}.csv.gz", report)

    def handle(outputs: Any, seq: int | None) -> None:
        out: SyncOutput
        for out in outputs:
            if type(out) is GapDetected:
                assert isinstance(out, GapDetected)
                _problem(
                    report,
                    DayProblem("gap", out.reason, seq, "diffs", out.expected, out.got),
                )
            elif type(out) is ChecksumMismatch:
                assert isinstance(out, ChecksumMismatch)
                _problem(
                    report,
                    DayProblem(
                        "checksum_mismatch", "venue checksum differs", seq, "diffs", out.expected, out.got
                    ),
                )

    def check_frame(seq: int) -> None:
        if seq not in frame_seqs:
            return
        if engine.state is not SyncState.SYNCED:
            report.frames_unsynced += 1
            _problem(
                report,
                DayProblem("frame_unsynced", f"book frame written while {engine.state.name}", seq, "book"),
            )
            return
        want = frames.get(seq)
        if want is None:
            return
        bids, asks = engine.book.top(n_levels)
        got = [x for lv in bids for x in lv] + [""] * (2 * (n_levels - len(bids)))
        got += [x for lv in asks for x in lv] + [""] * (2 * (n_levels - len(asks)))
        report.frames_checked += 1
        if got != want:
            report.frames_mismatched += 1
            _problem(
                report, DayProblem("frame_mismatch", "book frame differs from replayed book", seq, "book")
            )

    def run_action(row: dict[str, str], seq: int) -> None:
        event = row["event"]
        info = _details(row)
        if event == "snapshot":
            file = root / row["snapshot_file"]
            try:
                bids, asks = _snapshot_levels(file)
            except (OSError, KeyError, csv.Error) as exc:
                _problem(
                    report, DayProblem("unreadable_row", f"snapshot {file.name}: {exc}", seq, "snapshots")
                )
                return
            uid = info.get("update_id")
            snap = BookSnapshot(
                exchange,
                symbol,
                bids,
                asks,
                None,
                uid if isinstance(uid, int) else None,
                info.get("checksum"),
            )
            report.snapshots_used += 1
            handle(engine.receive(snap), seq)
            if info.get("source") != "local_book":
                check_frame(seq)
        elif (event == "state_change" and row["state"] == "CONNECTING") or event == "run_start":
            # The recorder's engine was reset here (new connection, maintenance, a new run).
            engine.reset(row.get("reason") or event)
        elif event == "sequence_break":
            brk = SequenceBreak(exchange, int(info.get("expected", 0)), int(info.get("got", 0)))
            handle(engine.receive(brk), seq)
        elif event == "instrument":
            inst = Instrument(exchange, symbol, int(info["price_precision"]), int(info["qty_precision"]))
            engine.receive(inst)

    k = 0
    n_actions = len(actions)
    diffs_path = root / "diffs" / f"depth_diffs_{fs}_{label}.ndjson.gz"
    for line in _rows(diffs_path, report):
        try:
            rec = orjson.loads(line)
            seq = int(rec["recv_seq"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            _problem(report, DayProblem("unreadable_row", f"diff row {line[:80]!r}", file="diffs"))
            continue
        while k < n_actions and actions[k][0] < seq:
            run_action(actions[k][2], actions[k][0])
            k += 1
        report.diff_rows += 1
        if rec.get("kind") == "checksum":
            event: Any = BookChecksum(exchange, symbol, int(rec["checksum"]), rec.get("event_time_ms"))
        else:
            event = BookDiff(
                exchange,
                symbol,
                rec["bids"],
                rec["asks"],
                rec.get("event_time_ms"),
                rec.get("first_id"),
                rec.get("last_id"),
                rec.get("checksum"),
            )
        outputs = engine.receive(event)
        if outputs:
            handle(outputs, seq)
        check_frame(seq)
    while k < n_actions:
        run_action(actions[k][2], actions[k][0])
        k += 1

    stats = engine.stats
    report.diffs_applied = stats.diffs_applied
    report.checksums_verified = stats.checksums_verified
    report.checksum_mismatches = stats.checksum_mismatches
    report.gaps = stats.gaps
    report.resyncs = stats.resyncs
    report.crossed_states = stats.crossed_states
    report.final_state = engine.state.name
    report.trades = sum(1 for _ in _rows(root / f"trades_ws_{fs}_{label}.csv.gz", report)) - 1
    report.trades = max(report.trades, 0)
    if report.snapshots_used == 0 and report.diff_rows:
        _problem(
            report, DayProblem("never_synced", "no snapshot in the day folder: the book was never proven")
        )
    return report


def _frames(path: Path, report: DayReport, every: int = 7) -> tuple[dict[int, list[str]], set[int], int]:
    """Every ``every``-th book frame's levels by recv_seq, the recv_seq of every frame, and N levels."""
    sampled: dict[int, list[str]] = {}
    seqs: set[int] = set()
    width = 0
    for i, line in enumerate(_rows(path, report)):
        if i == 0:
            width = line.count(b",") + 1
            continue
        head = line.partition(b",")[0]
        try:
            seq = int(head)
        except ValueError:
            _problem(report, DayProblem("unreadable_row", f"book frame {line[:60]!r}", file="book"))
            continue
        seqs.add(seq)
        if i % every == 0:
            parts = line.decode("utf-8", "replace").split(",")
            if len(parts) != width:
                _problem(report, DayProblem("unreadable_row", f"book frame {line[:60]!r}", seq, "book"))
                continue
            sampled[seq] = parts[5:]
    return sampled, seqs, max(0, (width - 5) // 4)
