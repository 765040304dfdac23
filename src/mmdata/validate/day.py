"""Validate one recorded day folder: replay its book and check every file's integrity.

Theory of operation
-------------------
Two independent passes, run side by side in two processes on big days (one core each):

* **replay** (:class:`~mmdata.validate.steps.BookReplay`): the diffs and the ledger's
  snapshots, resets, instrument rows and ``SEQ_ALL`` breaks go through a fresh engine of the
  venue, in ``recv_seq`` order. It finds gaps (Binance ``U``/``u``), checksum mismatches
  (Kraken, Bitfinex), unreadable or out-of-order diff rows and a truncated diffs file. It
  also notes the engine state at every change and the top-N book at sampled ``recv_seq``
  values (``recv_seq % every == 0``).
* **integrity**: every other file is read to its end. Gzip members must be complete,
  every row must parse with the header's width, ``recv_seq`` must increase (strictly in
  data files, never decrease in the ledger and gaps file), trade ids must not repeat, and
  the raw trades file must hold as many rows as the normalized one. The ``recv_seq`` of
  every book frame and the levels of the sampled ones are kept.

Then the book frames are judged: a frame written while the replayed engine was not
SYNCED is ``frame_unsynced``; a sampled frame that differs from the replayed top-N is
``frame_mismatch``.

A day is *ok* when no problem was found. ``*.damaged-<n>`` sidecars (a restarted recorder
moved a torn tail aside) are listed but are not problems: the rows in them were never
complete.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mmdata.book.sync import SyncState
from mmdata.errors import CorruptFile
from mmdata.store.capture import gzip_lines, read_gzip
from mmdata.store.dayfolder import DayFolder, details, open_day_folder, read_csv_rows
from mmdata.validate.capture import COUNTERS, counters_of
from mmdata.validate.steps import BookReplay, DayProblem

__all__ = ["DayProblem", "DayReport", "FileCheck", "validate_day"]

_MAX_PROBLEMS = 1000
#: Below this many compressed bytes a day is validated in one process (a second one costs
#: more to start than it saves).
PARALLEL_MIN_BYTES = 4 << 20
#: Problems that mean part of the input could not be read at all (exit status 2).
UNREADABLE_KINDS = frozenset(("truncated",))


@dataclass(slots=True)
class FileCheck:
    """Integrity of one file of a day folder."""

    file: str
    bytes: int = 0
    rows: int = 0
    truncated: str | None = None
    unparsable_rows: int = 0
    seq_errors: int = 0
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        """Read to its end; every row parsed and in order; nothing repeated."""
        return self.truncated is None and not (self.unparsable_rows or self.seq_errors or self.duplicates)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "file": self.file,
            "bytes": self.bytes,
            "rows": self.rows,
            "ok": self.ok,
            "truncated": self.truncated,
            "unparsable_rows": self.unparsable_rows,
            "seq_errors": self.seq_errors,
            "duplicates": self.duplicates,
        }


@dataclass(slots=True)
class DayReport:
    """What validating a day folder verified."""

    path: str
    exchange: str
    symbol: str
    day: str = ""
    diffs_applied: int = 0
    checksums_verified: int = 0
    checksum_mismatches: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed_states: int = 0
    trades: int = 0
    bad_messages: int = 0
    diff_rows: int = 0
    snapshots_used: int = 0
    frames: int = 0
    frames_checked: int = 0
    frames_mismatched: int = 0
    frames_unsynced: int = 0
    final_state: str = ""
    compressed_bytes: int = 0
    seconds: float = 0.0
    files: list[FileCheck] = field(default_factory=list)
    sidecars: list[str] = field(default_factory=list)
    problems: list[DayProblem] = field(default_factory=list)
    problems_total: int = 0

    @property
    def ok(self) -> bool:
        """No gap, no mismatch, no damaged file or row, every sampled frame right, book proven."""
        return self.problems_total == 0

    @property
    def unreadable(self) -> bool:
        """Part of the input could not be read (a truncated or corrupt gzip member)."""
        return any(p.kind in UNREADABLE_KINDS for p in self.problems)

    def counts(self) -> dict[str, int]:
        """The seven counters shared with ``mmdata validate FILE``."""
        return counters_of(self)

    def add(self, problem: DayProblem) -> None:
        """Record a problem (the first 1,000 are kept, and always a truncation; all are counted)."""
        self.problems_total += 1
        if len(self.problems) < _MAX_PROBLEMS or problem.kind in UNREADABLE_KINDS:
            self.problems.append(problem)

    def as_json(self) -> dict[str, Any]:
        """The ``mmdata validate DAY --json`` object: the capture report's keys plus ``integrity``."""
        return {
            "ok": self.ok,
            "path": self.path,
            "exchange": self.exchange,
            "day": self.day,
            "symbols": {self.symbol: {**self.counts(), "final_state": self.final_state}},
            "bad_messages": self.bad_messages,
            "problems": [{"symbol": self.symbol, **p.as_dict()} for p in self.problems],
            "problems_total": self.problems_total,
            "integrity": {
                "ok": not any(p.kind not in ("gap", "checksum_mismatch") for p in self.problems),
                "files": [f.as_dict() for f in self.files],
                "damaged_sidecars": self.sidecars,
                "diff_rows": self.diff_rows,
                "snapshots_used": self.snapshots_used,
                "book_frames": self.frames,
                "frames_checked": self.frames_checked,
                "frames_mismatched": self.frames_mismatched,
                "frames_unsynced": self.frames_unsynced,
            },
        }


def sample_every(folder: DayFolder) -> int:
    """Compare every k-th book frame (by ``recv_seq``): all of them on small days (a day with
    sparse frames, e.g. ``--book-frame-interval-ms``, could otherwise have none whose
    ``recv_seq`` falls on the sample), 1 in 7 on mid-size days, 1 in 31 on big ones, so that a
    day of a million frames still compares ~30,000 of them."""
    try:
        size = folder.layout.diffs.stat().st_size
    except OSError:
        return 7
    if size < (1 << 20):
        return 1
    return 7 if size < (8 << 20) else 31


# -- pass 1: replay ----------------------------------------------------------------------


@dataclass(slots=True)
class _Replayed:
    counts: dict[str, int]
    final_state: str
    diff_rows: int
    snapshots_used: int
    diffs_file: FileCheck
    problems: list[DayProblem]
    problems_total: int
    transitions_seq: list[int]
    transitions_state: list[int]
    tops: dict[int, list[str]]
    data_seqs: array[int]  # recv_seq of every diff row and snapshot replayed


def _replay(folder: DayFolder, every: int, on_read: Callable[[int], None] | None = None) -> _Replayed:
    problems: list[DayProblem] = []
    with BookReplay(folder, problems=problems, track_every=every, on_read=on_read) as replay:
        replay.advance()
    engine = replay.engine
    diffs = folder.layout.diffs
    check = FileCheck(f"diffs/{diffs.name}", diffs.stat().st_size if diffs.exists() else 0, replay.diff_rows)
    for p in problems:
        if p.file == diffs.name and p.kind == "truncated":
            check.truncated = p.detail
        elif p.file == "diffs" and p.kind == "unreadable_row":
            check.unparsable_rows += 1
        elif p.file == "diffs" and p.kind == "seq_order":
            check.seq_errors += 1
    stats = engine.stats
    counts = {key: getattr(stats, key) for key in COUNTERS if key != "trades"}
    return _Replayed(
        counts,
        engine.state.name,
        replay.diff_rows,
        replay.snapshots_used,
        check,
        problems,
        replay.problems_total,
        replay.state_seqs,
        replay.states,
        replay.tops,
        replay.data_seqs,
    )


# -- pass 2: integrity -------------------------------------------------------------------


@dataclass(slots=True)
class _Checked:
    files: list[FileCheck]
    problems: list[DayProblem]
    problems_total: int
    trades: int
    frame_seqs: bytes  # array('q') of every book frame's recv_seq
    frames: dict[int, list[str]]


class _Checker:
    def __init__(self) -> None:
        self.problems: list[DayProblem] = []
        self.total = 0

    def add(self, problem: DayProblem) -> None:
        self.total += 1
        if len(self.problems) < _MAX_PROBLEMS or problem.kind in UNREADABLE_KINDS:
            self.problems.append(problem)

    def lines(self, path: Path, check: FileCheck) -> Any:
        try:
            yield from gzip_lines(path)
        except CorruptFile as exc:
            check.truncated = str(exc)
            self.add(DayProblem("truncated", str(exc), file=check.file))

    def seq_error(self, check: FileCheck, seq: int, last: int, what: str) -> None:
        check.seq_errors += 1
        self.add(DayProblem("seq_order", f"{what} recv_seq {seq} after {last}", seq, check.file, last, seq))

    def bad_row(self, check: FileCheck, line: bytes, seq: int | None = None) -> None:
        check.unparsable_rows += 1
        self.add(DayProblem("unreadable_row", f"row {line[:80]!r}", seq, check.file))

    def ledger_file(
        self, rel: str, size: int, rows: Iterable[dict[str, str]], problem: str | None
    ) -> FileCheck:
        """The ledger or gaps file, as parsed rows (quoted fields may hold commas and
        newlines): every row at the header's width, recv_seq never decreasing."""
        check = FileCheck(rel, size)
        if problem is not None:
            check.truncated = problem
            self.add(DayProblem("truncated", problem, file=rel))
        last = -1
        for row in rows:
            check.rows += 1
            # csv.DictReader: extra fields go under the key None, missing ones read None.
            text = ",".join(str(v) for v in row.values()).encode()
            if None in row or None in row.values():
                self.bad_row(check, text)
                continue
            try:
                seq = int(row["recv_seq"])
            except (KeyError, ValueError):
                self.bad_row(check, text)
                continue
            if seq < last:
                self.seq_error(check, seq, last, rel)
            last = seq
        return check

    def csv_file(self, path: Path, rel: str, row_fn: Callable[[int, bytes], None]) -> FileCheck:
        """A data CSV (never quoted): header width, strictly increasing recv_seq, per-row hook."""
        check = FileCheck(rel, path.stat().st_size)
        width = 0
        last = -1
        for i, line in enumerate(self.lines(path, check)):
            if i == 0:
                width = line.count(b",") + 1
                if not line.startswith(b"recv_seq,"):
                    self.bad_row(check, line)
                continue
            check.rows += 1
            if line.count(b",") + 1 != width:
                self.bad_row(check, line)
                continue
            try:
                seq = int(line[: line.find(b",")])
            except ValueError:
                self.bad_row(check, line)
                continue
            if seq <= last:
                self.seq_error(check, seq, last, rel)
            last = seq
            row_fn(seq, line)
        return check


def _integrity(folder: DayFolder, every: int) -> _Checked:
    lay = folder.layout
    checker = _Checker()
    files: list[FileCheck] = []
    root = folder.root

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    # A day whose ledger ends with run_stop / window_end was closed cleanly: every file of it
    # must exist and be complete. Otherwise it may still be recorded (or its recorder died).
    finished = bool(folder.ledger) and folder.ledger[-1].get("event") in ("run_stop", "window_end")
    head = next((r for r in folder.ledger if r.get("event") in ("run_start", "window_start")), {})
    wanted = [lay.diffs] if details(head).get("store_depth_diffs", True) else []
    if finished:
        wanted += [lay.gaps, lay.book_frames, lay.trades, lay.trades_raw]
    elif lay.trades.exists() != lay.trades_raw.exists():
        wanted += [lay.trades, lay.trades_raw]
    for path in wanted:
        if not path.exists():
            checker.add(DayProblem("missing_file", f"{rel(path)} is missing", file=rel(path)))

    # The ledger (already read by the replay) and the gaps file: never decreasing.
    # The ledger was read once, by open_day_folder; the gaps file is read here.
    events_size = lay.events.stat().st_size
    files.append(checker.ledger_file(rel(lay.events), events_size, folder.ledger, folder.ledger_problem))
    if lay.gaps.exists():
        data, problem = read_gzip(lay.gaps)
        files.append(
            checker.ledger_file(rel(lay.gaps), lay.gaps.stat().st_size, read_csv_rows(data), problem)
        )

    # Book frames: every recv_seq, and the levels of the sampled ones.
    frame_seqs = array("q")
    frames: dict[int, list[str]] = {}

    def on_frame(seq: int, line: bytes) -> None:
        frame_seqs.append(seq)
        if seq % every == 0:
            frames[seq] = line.decode("utf-8", "replace").split(",")[5:]

    if lay.book_frames.exists():
        files.append(checker.csv_file(lay.book_frames, rel(lay.book_frames), on_frame))

    # Trades: strictly increasing recv_seq, no trade id twice.
    ids = array("q")
    text_ids: list[bytes] = []

    trade_seqs = array("q")

    def on_trade(seq: int, line: bytes) -> None:
        trade_seqs.append(seq)
        tid = line.split(b",", 4)[3]
        try:
            ids.append(int(tid))
        except (ValueError, OverflowError):
            text_ids.append(tid)

    trades = 0
    if lay.trades.exists():
        check = checker.csv_file(lay.trades, rel(lay.trades), on_trade)
        trades = check.rows - check.unparsable_rows
        dup_ids = _duplicates(ids, text_ids)
        check.duplicates = len(dup_ids)
        for tid in dup_ids[:20]:
            checker.add(
                DayProblem("duplicate_trade", f"trade id {tid} recorded more than once", file=check.file)
            )
        checker.total += max(0, len(dup_ids) - 20)
        files.append(check)

    if lay.trades_raw.exists():
        raw = FileCheck(rel(lay.trades_raw), lay.trades_raw.stat().st_size)
        raw_seqs = array("q")
        last = -1
        loads = orjson.loads
        for line in checker.lines(lay.trades_raw, raw):
            try:
                seq = int(loads(line)["recv_seq"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                checker.bad_row(raw, line)
                continue
            raw.rows += 1
            raw_seqs.append(seq)
            if seq <= last:
                checker.seq_error(raw, seq, last, raw.file)
            last = seq
        files.append(raw)
        if lay.trades.exists():
            _same_trades(checker, raw.file, trade_seqs, raw_seqs, finished)
    return _Checked(files, checker.problems, checker.total, trades, frame_seqs.tobytes(), frames)


def _same_trades(
    checker: _Checker, file: str, csv_seqs: array[int], raw_seqs: array[int], finished: bool
) -> None:
    """Every trade is in both trade files (same recv_seq). On a day still being recorded the
    files are flushed separately: compared up to the smaller last recv_seq of the two."""
    if not csv_seqs or not raw_seqs:
        if len(csv_seqs) != len(raw_seqs):
            checker.add(DayProblem("count_mismatch", "one trades file is empty", file=file))
        return
    bound = max(csv_seqs[-1], raw_seqs[-1]) if finished else min(csv_seqs[-1], raw_seqs[-1])
    a = np.frombuffer(csv_seqs, dtype=np.int64)
    b = np.frombuffer(raw_seqs, dtype=np.int64)
    a, b = np.sort(a[a <= bound]), np.sort(b[b <= bound])
    if len(a) == len(b) and np.array_equal(a, b):
        return
    n = min(len(a), len(b))
    differ = np.nonzero(a[:n] != b[:n])[0]
    first = int(a[differ[0]] if len(differ) else (a[n] if len(a) > n else b[n]))
    checker.add(
        DayProblem(
            "count_mismatch",
            f"the trade files disagree: {len(a)} normalized and {len(b)} raw trades up to recv_seq "
            f"{bound} (first difference at recv_seq {first})",
            first,
            file,
            expected=len(a),
            got=len(b),
        )
    )


def _duplicates(ids: array[int], text_ids: list[bytes]) -> list[str]:
    out: list[str] = []
    if ids:
        values = np.frombuffer(ids, dtype=np.int64)
        ordered = np.sort(values, kind="stable")
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        out += [str(v) for v in np.unique(repeated)]
    if text_ids:
        seen: set[bytes] = set()
        for tid in text_ids:
            if tid in seen:
                out.append(tid.decode("utf-8", "replace"))
            seen.add(tid)
    return out


def _integrity_in_subprocess(folder: DayFolder, every: int) -> subprocess.Popen[bytes]:
    """Start the integrity pass in a fresh interpreter (``python -m mmdata.validate.day``).

    A plain subprocess rather than multiprocessing: it never re-imports the caller's
    ``__main__`` (a user's script without a ``__main__`` guard keeps working) and does not
    fork a process that may hold threads.
    """
    cmd = [sys.executable, "-m", "mmdata.validate.day", str(folder.root), str(every)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _collect(proc: subprocess.Popen[bytes]) -> _Checked | None:
    out, _err = proc.communicate()
    if proc.returncode != 0:
        return None
    data = pickle.loads(out)
    return _Checked(
        [FileCheck(**f) for f in data["files"]],
        [DayProblem(**p) for p in data["problems"]],
        data["problems_total"],
        data["trades"],
        data["frame_seqs"],
        data["frames"],
    )


def _worker_main(argv: list[str]) -> None:
    checked = _integrity(open_day_folder(argv[0]), int(argv[1]))
    data = {
        "files": [{k: getattr(f, k) for k in FileCheck.__slots__} for f in checked.files],
        "problems": [{k: getattr(p, k) for k in DayProblem.__slots__} for p in checked.problems],
        "problems_total": checked.problems_total,
        "trades": checked.trades,
        "frame_seqs": checked.frame_seqs,
        "frames": checked.frames,
    }
    sys.stdout.buffer.write(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))


# -- the whole ----------------------------------------------------------------------------


def validate_day(
    path: str | Path,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DayReport:
    """Validate the day folder ``path`` (see the module docstring).

    ``workers``: 1 runs both passes in this process; 2 runs the integrity pass in a second
    process; None (default) uses two on a big day when this machine has two cores.
    ``progress(done, total)``: compressed bytes of the diffs file replayed so far (the bulk
    of the work), called as reading goes on, possibly from a helper thread.
    Raises :class:`~mmdata.errors.StoreError` when ``path`` is not a recorded day folder.
    """
    t0 = time.perf_counter()
    folder = open_day_folder(path)
    report = DayReport(str(folder.root), folder.exchange, folder.symbol, folder.label)
    every = sample_every(folder)
    report.compressed_bytes = sum(p.stat().st_size for p in folder.root.rglob("*.gz") if p.is_file())
    if workers is None:
        cores = os.cpu_count() or 1
        workers = 2 if cores >= 2 and report.compressed_bytes >= PARALLEL_MIN_BYTES else 1
    on_read: Callable[[int], None] | None = None
    if progress is not None:
        total = folder.layout.diffs.stat().st_size if folder.layout.diffs.exists() else 0
        done = [0]

        def on_read(n: int) -> None:
            done[0] += n
            progress(done[0], total)

    checked: _Checked | None = None
    if workers >= 2:
        proc = _integrity_in_subprocess(folder, every)
        try:
            replayed = _replay(folder, every, on_read)
        except BaseException:
            proc.kill()  # interrupted or failed: never leave the helper running
            proc.wait()
            raise
        checked = _collect(proc)  # None if the helper failed: done here instead
        if checked is None:
            checked = _integrity(folder, every)
    else:
        replayed = _replay(folder, every, on_read)
        checked = _integrity(folder, every)
    _merge(report, folder, replayed, checked)
    report.seconds = time.perf_counter() - t0
    return report


def _merge(report: DayReport, folder: DayFolder, replayed: _Replayed, checked: _Checked) -> None:
    for key, value in replayed.counts.items():
        setattr(report, key, value)
    report.final_state = replayed.final_state
    report.diff_rows = replayed.diff_rows
    report.snapshots_used = replayed.snapshots_used
    report.trades = checked.trades
    report.bad_messages = sum(1 for row in folder.ledger if row.get("event") == "bad_message")
    for p in replayed.problems:
        report.add(p)
    report.problems_total += replayed.problems_total - len(replayed.problems)
    for p in checked.problems:
        report.add(p)
    report.problems_total += checked.problems_total - len(checked.problems)
    report.files = [replayed.diffs_file, *checked.files] if folder.layout.diffs.exists() else checked.files
    report.sidecars = sorted(p.relative_to(folder.root).as_posix() for p in folder.root.rglob("*.damaged-*"))

    # Book frames against the replayed engine.
    seqs = array("q")
    seqs.frombytes(checked.frame_seqs)
    report.frames = len(seqs)
    t_seq, t_state = replayed.transitions_seq, replayed.transitions_state
    synced = int(SyncState.SYNCED)
    if folder.layout.diffs.exists():
        for seq in seqs:
            if t_state[bisect_right(t_seq, seq) - 1] != synced:
                report.frames_unsynced += 1
                report.add(
                    DayProblem(
                        "frame_unsynced", "book frame written while the book was not proven", seq, "book"
                    )
                )
        # Every frame was made from a diff or snapshot with its recv_seq: one that has none
        # means diff rows are missing (a lost tail, a lost member), whatever else looks fine.
        frame_arr = np.frombuffer(checked.frame_seqs, dtype=np.int64)
        data_arr = (
            np.frombuffer(replayed.data_seqs, dtype=np.int64) if replayed.data_seqs else np.zeros(0, np.int64)
        )
        orphans = frame_arr[~np.isin(frame_arr, data_arr)]
        if len(orphans):
            report.add(
                DayProblem(
                    "missing_diffs",
                    f"{len(orphans)} book frames have no diff or snapshot row with their recv_seq: "
                    f"diff rows are missing (first at recv_seq {int(orphans[0])})",
                    int(orphans[0]),
                    folder.layout.diffs.name,
                )
            )
        tops = replayed.tops
        for seq, want in checked.frames.items():
            got = tops.get(seq)
            if got is None:
                continue
            report.frames_checked += 1
            if got != want:
                report.frames_mismatched += 1
                report.add(
                    DayProblem("frame_mismatch", "book frame differs from the replayed book", seq, "book")
                )
        if report.snapshots_used == 0 and report.diff_rows:
            report.add(DayProblem("never_synced", "no snapshot in the day folder: the book was never proven"))
    elif report.frames:
        report.add(
            DayProblem(
                "unverifiable",
                "no diffs/ file (recorded with STORE_DEPTH_DIFFS=false): the book frames cannot be checked",
            )
        )


if __name__ == "__main__":  # the integrity helper process of validate_day(workers=2)
    _worker_main(sys.argv[1:])
