"""What the recorder saw: its trades, when its trade stream was connected, its candles.

Reads the recorded day folders of one symbol, ``<root>/<exchange>/<SYMBOL_FS>/<YYYYMMDD>/``
(docs/format.md), with the store's crash-tolerant readers: a torn last gzip member (a
crash mid-flush) loses only its unfinished rows.

* :func:`local_trades` — the normalized trades (``trades_ws_<SYM>_<YYYYMMDD>.csv.gz``) with an
  exchange time (``event_time_ms``) in the range, one per ``trade_id`` (during the recorder's
  day overlap the same trade is in two folders), in receive order: folders by day, rows in
  file order — the order the candle server folds them in.
* :func:`local_coverage` — the receive-time ranges during which the trade stream was
  connected, from the ledgers (``events_<SYM>_<YYYYMMDD>.csv.gz``) of all folders read
  together, per recorder process (``run_id``):

  ======================  ==============================================================
  starts                  at ``ws_open`` + :data:`SUBSCRIBE_MARGIN_MS`; or at a
                          ``window_start`` (a day opened while running) whose engine state
                          is not ``CONNECTING``/``STOPPED``: the connection was already
                          open (its ``ws_open`` is in an older folder)
  ends                    at ``ws_close``, ``run_stop``, or the ``window_end`` of the
                          process's last open day (an older day's ``window_end`` while the
                          next day is open ends nothing); after a crash (no close: the
                          process never wrote one, or a new ``run_start`` came first) at
                          the last row the process wrote in any file of its day folders
  cut out                 :data:`GAP_MARGIN_MS` on each side of every ``gap`` /
                          ``sequence_break`` row (the connection lost messages, so trades
                          may be lost too)
  ======================  ==============================================================

* :func:`local_candles` — candles built from those trades exactly like the candle server
  builds them (:class:`~mmdata.candles.CandleAggregator`, bucketed by exchange time), and the
  open times of the *complete* intervals: ``[open, end + ARRIVAL_MARGIN_MS)`` lies inside one
  coverage range.

Margins (module constants; every function takes them as keyword arguments):

* :data:`ARRIVAL_MARGIN_MS` (2 s): coverage must last this long past an interval's end. A
  trade of the interval's last moment is received later (network, venue batching); and
  after a crash the day's files end up to one flush interval (1 s) apart, so the newest
  second before the last row written may hold trades that were never flushed.
* :data:`GAP_MARGIN_MS` (5 s): cut on each side of a sequence gap. A gap is detected when the
  message after the lost ones arrives; the lost ones were sent in the silence before it,
  which at the streams' update rates (100 ms – 1 s) a few seconds bound. After it, delayed
  or batched trades of the loss may still arrive.
* :data:`SUBSCRIBE_MARGIN_MS` (1 s): after ``ws_open`` the trade channel is subscribed by a
  message (Kraken, Bitfinex) and delivers only one round trip later.
"""

from __future__ import annotations

import bisect
import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import orjson

from mmdata.candles import INTERVALS, CandleAggregator
from mmdata.candles.aggregate import decimal_text
from mmdata.errors import ConfigError, StoreError
from mmdata.exchanges import get as get_exchange
from mmdata.exchanges.base import symbol_fs
from mmdata.store.dayfolder import details, is_day_folder, read_csv_rows
from mmdata.store.gzmembers import last_lines
from mmdata.store.layout import DayLayout, symbol_dir
from mmdata.store.tail import GzipTail
from mmdata.types import Candle, Side, Trade

__all__ = [
    "ARRIVAL_MARGIN_MS",
    "CLOSE_EVENTS",
    "FOLDER_SLACK_MS",
    "GAP_MARGIN_MS",
    "LOSS_EVENTS",
    "SUBSCRIBE_MARGIN_MS",
    "local_candles",
    "local_coverage",
    "local_trades",
]

log = logging.getLogger("mmdata.history")

#: Coverage must last this long past an interval's end for the interval to be complete.
ARRIVAL_MARGIN_MS: Final = 2_000
#: Cut out of coverage on each side of a ``gap`` / ``sequence_break`` ledger row.
GAP_MARGIN_MS: Final = 5_000
#: Coverage starts this long after ``ws_open`` (the trade subscription's round trip).
SUBSCRIBE_MARGIN_MS: Final = 1_000
#: A day folder is read when its trading window, widened by this much on each side, meets the
#: range: exchange time vs the host's receive time (clock skew, latency, late flushes).
FOLDER_SLACK_MS: Final = 3_600_000
#: Ledger events after which the connection may have lost messages (trades included).
LOSS_EVENTS: Final = frozenset({"gap", "sequence_break"})
#: Ledger events that end the connection of their process.
CLOSE_EVENTS: Final = frozenset({"ws_close", "run_stop"})
# Engine states in which no subscription is live (docs/format.md, book states).
_UNCONNECTED: Final = frozenset({"", "CONNECTING", "STOPPED"})
# Label dates of the folders that may hold an instant: a window opens on its local day (at
# most 14 h before UTC) and lasts at most 8 days (WINDOW_END_DAY_OFFSET <= 7).
_LABEL_BEFORE: Final = timedelta(days=9)
_LABEL_AFTER: Final = timedelta(days=2)
# What ``datetime`` can represent, in ms (labels of absurd ranges are clamped to it).
_MIN_MS: Final = 86_400_000
_MAX_MS: Final = 253_402_000_000_000

Range = tuple[int, int]


# ------------------------------------------------------------------------------------- reading


@dataclass(slots=True)
class _Folder:
    """One day folder: its ledger, and (once read) its trades and last row times."""

    path: Path
    layout: DayLayout
    ledger: list[dict[str, str]]
    window: Range | None  # trading window (ms) from the ledger, when recorded
    # Per process: the first ledger time in this folder (attribution of data rows), sorted.
    run_starts: list[tuple[int, str]] = field(default_factory=list)
    # Per process: the newest receive time (ns) of a row it wrote in this folder.
    last_ns: dict[str, int] = field(default_factory=dict)

    def run_at(self, t_ns: int) -> str | None:
        """The process that wrote a data row received at ``t_ns`` (the newest one started)."""
        if not self.run_starts:
            return None
        i = bisect.bisect_right(self.run_starts, (t_ns, "\uffff")) - 1
        return self.run_starts[max(i, 0)][1]

    def saw(self, t_ns: int, run: str | None = None) -> None:
        """Note a row received at ``t_ns`` (by ``run``, or by whichever process ran then)."""
        owner = run if run is not None else self.run_at(t_ns)
        if owner is not None and t_ns > self.last_ns.get(owner, -1):
            self.last_ns[owner] = t_ns


def _member_lines(path: Path) -> Iterator[bytes]:
    """Lines of the complete gzip members of a day file, read like the candle server reads it
    (:class:`~mmdata.store.tail.GzipTail`): a member torn by a crash is left out whole, as the
    recorder's restart repair moves it aside; damage is logged."""
    if not path.is_file():
        return
    tail = GzipTail(path)
    try:
        while True:
            before = (tail.offset, tail.max_read)
            yield from tail.poll()
            if (tail.offset, tail.max_read) == before:
                break  # the end, or a member still being written / torn
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}", path=str(path)) from exc
    for event in tail.events:
        log.warning("%s: %s", path, event.detail)
    if tail.offset < path.stat().st_size and not tail.events:
        log.info("%s: its last gzip member is incomplete (being written, or torn by a crash): left out", path)


def _canonical(exchange: str, symbol: str) -> str:
    """The recorder's spelling of ``symbol`` (``BTC/USD`` → ``tBTCUSD`` on Bitfinex), else as given."""
    try:
        return get_exchange(exchange).normalize_symbol(symbol)
    except Exception:  # unknown venue or spelling: the folder name may still match as typed
        return symbol


def _label_date(ms: int) -> date:
    return datetime.fromtimestamp(min(max(ms, _MIN_MS), _MAX_MS) / 1000, tz=UTC).date()


def _iso_ms(value: object) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _window(ledger: list[dict[str, str]]) -> Range | None:
    """The day's trading window from its first ``run_start``/``window_start`` row."""
    for row in ledger:
        if row.get("event") in ("run_start", "window_start"):
            info = details(row)
            start, end = _iso_ms(info.get("window_start")), _iso_ms(info.get("window_end"))
            if start is not None and end is not None:
                return start, end
    return None


def _ns(text: str | None) -> int | None:
    try:
        return int(text or "")
    except ValueError:
        return None


class _Recording:
    """The day folders of one symbol that may hold ``[start_ms, end_ms)``, read once."""

    def __init__(self, root: str | Path, exchange: str, symbol: str, start_ms: int, end_ms: int) -> None:
        base_root = Path(root)
        if not base_root.is_dir():
            raise StoreError(f"data root {base_root} is not a folder", path=str(base_root))
        self.exchange = exchange
        self.symbol = _canonical(exchange, symbol)
        self.fs = symbol_fs(self.symbol)
        self.folders: list[_Folder] = []
        self._tails_read = False
        if end_ms <= start_ms:
            return
        base = symbol_dir(base_root, exchange, self.fs)
        if not base.is_dir():
            return  # nothing recorded for this symbol
        lo = (_label_date(start_ms) - _LABEL_BEFORE).strftime("%Y%m%d")
        hi = (_label_date(end_ms) + _LABEL_AFTER).strftime("%Y%m%d")
        for path in sorted(p for p in base.iterdir() if lo <= p.name <= hi and is_day_folder(p)):
            folder = self._open(base_root, path)
            if folder is None:
                continue
            if folder.window is not None:
                ws, we = folder.window
                if we + FOLDER_SLACK_MS <= start_ms or ws - FOLDER_SLACK_MS >= end_ms:
                    continue
            self.folders.append(folder)

    def _open(self, root: Path, path: Path) -> _Folder | None:
        try:
            day = datetime.strptime(path.name, "%Y%m%d").date()
        except ValueError:
            return None  # eight digits, but no calendar day
        layout = DayLayout(root, self.exchange, self.fs, day, folder=path)
        ledger = read_csv_rows(b"".join(line + b"\n" for line in _member_lines(layout.events)))
        folder = _Folder(path, layout, ledger, _window(ledger))
        firsts: dict[str, int] = {}
        for row in ledger:
            t = _ns(row.get("recv_time_ns"))
            run = row.get("run_id") or ""
            if t is not None:
                firsts[run] = min(t, firsts.get(run, t))
                folder.saw(t, run)
        folder.run_starts = sorted((t, run) for run, t in firsts.items())
        return folder

    # -- trades ---------------------------------------------------------------------------------
    def trades(self, start_ms: int, end_ms: int) -> list[Trade]:
        """Trades with ``start_ms <= event_time_ms < end_ms``, one per id, in receive order."""
        seen: set[str] = set()
        out: list[Trade] = []
        for folder in self.folders:
            bad = 0
            for fields in self._trade_rows(folder):
                try:
                    recv_ns, ts = int(fields[1]), int(fields[2])
                    tid, price, qty, side = fields[3], fields[4], fields[5], fields[6]
                except (IndexError, ValueError):
                    bad += 1
                    continue
                folder.saw(recv_ns)
                if not start_ms <= ts < end_ms or tid in seen:
                    continue
                if side not in ("buy", "sell") or not tid:
                    bad += 1
                    continue
                seen.add(tid)
                trade_id: int | str = int(tid) if tid.isdigit() else tid
                taker: Side = "buy" if side == "buy" else "sell"
                out.append(Trade(self.exchange, self.symbol, ts, price, qty, taker, trade_id))
            if bad:
                log.warning("%s: %d unreadable trade rows skipped", folder.layout.trades, bad)
        return out

    def _trade_rows(self, folder: _Folder) -> Iterator[list[str]]:
        """CSV fields of the data rows of a folder's trades file (header skipped)."""
        path = folder.layout.trades
        if not path.is_file():
            return
        lines = (line.decode("utf-8", "replace") for line in _member_lines(path))
        for fields in csv.reader(lines):
            if fields and fields[0] != "recv_seq":
                yield fields

    # -- coverage -------------------------------------------------------------------------------
    def coverage(
        self, start_ms: int, end_ms: int, *, gap_margin_ms: int, subscribe_margin_ms: int
    ) -> list[Range]:
        """Connected receive-time ranges, merged, clipped to ``[start_ms, end_ms)``."""
        rows: list[tuple[int, int, int, str, str, str]] = []
        for i, folder in enumerate(self.folders):
            for n, row in enumerate(folder.ledger):
                t = _ns(row.get("recv_time_ns"))
                if t is not None:
                    rows.append(
                        (t, i, n, row.get("run_id") or "", row.get("event") or "", row.get("state") or "")
                    )
        rows.sort()
        spans: list[Range] = []
        losses: list[Range] = []
        since: dict[str, int] = {}  # per process: coverage start of its open connection
        days: dict[str, set[int]] = {}  # per process: the folders it has open

        def close(run: str, t_ms: int) -> None:
            start = since.pop(run, None)
            if start is not None:
                spans.append((start, t_ms))

        for t_ns, i, _n, run, event, state in rows:
            t = t_ns // 1_000_000
            if event in ("run_start", "window_start"):
                days.setdefault(run, set()).add(i)
                if event == "window_start" and state not in _UNCONNECTED:
                    since.setdefault(run, t)  # connected since before this day opened
            elif event == "ws_open":
                since.setdefault(run, t + subscribe_margin_ms)
            elif event in CLOSE_EVENTS:
                close(run, t)
                if event == "run_stop":
                    days.get(run, set()).discard(i)
            elif event == "window_end":
                open_days = days.setdefault(run, set())
                open_days.discard(i)
                if not open_days:
                    close(run, t)  # no day left open: the recorder disconnects
            elif event in LOSS_EVENTS:
                losses.append((t - gap_margin_ms, t + gap_margin_ms))
        for run in list(since):
            close(run, self._last_row_ms(run))  # a crash (or a recording still running)
        covered = _subtract(_merge(spans), _merge(losses))
        return [(max(s, start_ms), min(e, end_ms)) for s, e in covered if s < end_ms and e > start_ms]

    def _last_row_ms(self, run: str) -> int:
        """The newest receive time of any row ``run`` wrote in any file of the folders read."""
        if not self._tails_read:
            self._tails_read = True
            for folder in self.folders:
                for path, is_json in (
                    (folder.layout.trades, False),
                    (folder.layout.book_frames, False),
                    (folder.layout.gaps, False),
                    (folder.layout.diffs, True),
                    (folder.layout.trades_raw, True),
                ):
                    t = _last_ns(path, is_json)
                    if t is not None:
                        folder.saw(t)  # the process that was running then wrote it
        newest = max((f.last_ns.get(run, -1) for f in self.folders), default=-1)
        return newest // 1_000_000


def _last_ns(path: Path, is_json: bool) -> int | None:
    """``recv_time_ns`` of the last complete row of a day file (read from its tail only)."""
    try:
        lines = last_lines(path, 1)
    except (OSError, StoreError):
        return None
    if not lines:
        return None
    line = lines[0]
    try:
        if is_json:
            value = orjson.loads(line).get("recv_time_ns")
            return value if type(value) is int else None
        return int(line.split(b",", 2)[1])
    except (orjson.JSONDecodeError, AttributeError, IndexError, ValueError):
        return None  # the header (no data row yet) or a foreign line


def _merge(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for s, e in sorted(r for r in ranges if r[0] < r[1]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _subtract(ranges: list[Range], holes: list[Range]) -> list[Range]:
    """``ranges`` minus ``holes`` (both merged and sorted)."""
    out: list[Range] = []
    for s, e in ranges:
        cur = s
        for hs, he in holes:
            if he <= cur or hs >= e:
                continue
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
        if cur < e:
            out.append((cur, e))
    return out


# ------------------------------------------------------------------------------------ public API


def local_trades(root: str | Path, exchange: str, symbol: str, start_ms: int, end_ms: int) -> list[Trade]:
    """Recorded trades with ``start_ms <= event_time_ms < end_ms``, one per ``trade_id``, in
    receive order (see the module docstring).

    ``symbol`` in any spelling the venue's adapter accepts (``BTC/USD``) or the recorder's
    (``tBTCUSD``). An unrecorded symbol gives ``[]``; a ``root`` that is not a folder raises
    :class:`~mmdata.errors.StoreError`.
    """
    return _Recording(root, exchange, symbol, start_ms, end_ms).trades(start_ms, end_ms)


def local_coverage(
    root: str | Path,
    exchange: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    gap_margin_ms: int = GAP_MARGIN_MS,
    subscribe_margin_ms: int = SUBSCRIBE_MARGIN_MS,
) -> list[Range]:
    """Receive-time ms ranges ``[s, e)`` (merged, sorted, clipped to the range) during which the
    recorder's trade stream was connected (rules in the module docstring)."""
    rec = _Recording(root, exchange, symbol, start_ms, end_ms)
    rec.trades(0, 0)  # nothing kept: notes the trade rows' times, the crash ends after them
    return rec.coverage(
        start_ms, end_ms, gap_margin_ms=gap_margin_ms, subscribe_margin_ms=subscribe_margin_ms
    )


def local_candles(  # noqa: PLR0917 - the join's inputs, in the order of the docs
    root: str | Path,
    exchange: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    arrival_margin_ms: int = ARRIVAL_MARGIN_MS,
    gap_margin_ms: int = GAP_MARGIN_MS,
    subscribe_margin_ms: int = SUBSCRIBE_MARGIN_MS,
    now_ms: int | None = None,
) -> tuple[list[Candle], set[int]]:
    """Local candles opening in ``[start_ms, end_ms)`` (aligned like ``interval``) and the open
    times of the complete intervals among them.

    A candle exists for every interval with a recorded trade (exact text prices, exact decimal
    volume and quote volume, trade count); ``closed`` is False for an interval not over at
    ``now_ms`` (default: now). An interval is complete when ``[open, end + arrival_margin_ms)``
    lies inside one coverage range (:func:`local_coverage`), whether or not it has trades.
    """
    iv = INTERVALS.get(interval)
    if iv is None:
        raise ConfigError(f"unknown interval {interval!r}: use one of {', '.join(INTERVALS)}")
    first = iv.floor(start_ms)
    if first < start_ms:
        first = iv.next_open_ms(first)
    opens: list[int] = []
    t = first
    while t < end_ms:
        opens.append(t)
        t = iv.next_open_ms(t)
    if not opens:
        _Recording(root, exchange, symbol, 0, 0)  # still refuses a root that is not a folder
        return [], set()
    last_end = iv.next_open_ms(opens[-1])
    rec = _Recording(root, exchange, symbol, first, last_end + arrival_margin_ms)
    agg = CandleAggregator()
    rejected = 0
    for trade in rec.trades(first, last_end):
        try:
            agg.add(trade.ts_ms, trade.price, trade.qty)
        except ValueError:
            rejected += 1  # a price/qty the aggregator refuses (the server skips it too)
    if rejected:
        log.warning("%d recorded trades with unusable price/qty skipped", rejected)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    candles: list[Candle] = []
    for t in opens:
        bar = agg.bar(iv, t)
        if bar is None:
            continue
        candles.append(
            Candle(
                rec.exchange,
                rec.symbol,
                iv.name,
                t,
                bar.open,
                bar.high,
                bar.low,
                bar.close,
                decimal_text(bar.volume),
                decimal_text(bar.quote_volume),
                bar.trades,
                iv.next_open_ms(t) <= now,
            )
        )
    spans = rec.coverage(
        first,
        last_end + arrival_margin_ms,
        gap_margin_ms=gap_margin_ms,
        subscribe_margin_ms=subscribe_margin_ms,
    )
    complete: set[int] = set()
    for t in opens:
        need = iv.next_open_ms(t) + arrival_margin_ms
        i = bisect.bisect_right(spans, (t, _MAX_MS)) - 1  # the range starting at or before t
        if i >= 0 and spans[i][0] <= t and spans[i][1] >= need:
            complete.add(t)
    return candles, complete
