"""One recorded day in a notebook: ``mmdata.open_day(path)``.

>>> day = mmdata.open_day("data/kraken/BTCUSD/20261121")        # doctest: +SKIP
>>> trades = day.trades()                 # pandas, pyarrow-backed; price float64 + price_text
>>> book = day.book_at("10:15:00")        # the full book at that moment (exact text)
>>> for view in day.iter_books(every="1s", levels=10): ...     # streamed, never the whole day

Loaders read whole files (one day of one symbol); :meth:`Day.iter_books` and
:meth:`Day.book_at` stream the diffs through the venue's sync engine
(:class:`~mmdata.validate.steps.BookReplay`) and hold one book at a time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from mmdata.book.sync import SyncState
from mmdata.errors import StoreError
from mmdata.replay import tables
from mmdata.replay.timeparse import parse_duration_ns, parse_time_ns
from mmdata.store.dayfolder import DayFolder, open_day_folder
from mmdata.validate.day import DayReport, validate_day
from mmdata.validate.steps import BookReplay

__all__ = ["BookView", "Day", "open_day"]

TABLES = ("trades", "book_frames", "diffs", "events", "gaps")


def _iso(t_ns: int) -> str:
    stamp = datetime.fromtimestamp(t_ns // 1_000_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{t_ns % 1_000_000_000:09d}Z"


@dataclass(frozen=True, slots=True)
class BookView:
    """The replayed book at one moment: exact level text, best first.

    ``state`` is the sync state at that moment; only ``SYNCED`` books are proven (``bids``
    and ``asks`` are empty otherwise: the book was unknown then, see docs/format.md).
    ``STOPPED`` means the recorder had stopped (or the day's window had ended) by then. After
    a crash nothing says so: ``as_of_ns`` (the last event applied) shows how stale a book is.
    """

    time_ns: int
    recv_seq: int
    state: str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    #: Receive time of the last event applied (how old the book is at ``time_ns``).
    as_of_ns: int = 0

    @property
    def synced(self) -> bool:
        """The book was proven at this moment."""
        return self.state == "SYNCED"

    @property
    def time(self) -> str:
        """ISO-8601 UTC with nanoseconds."""
        return _iso(self.time_ns)

    @property
    def best_bid(self) -> float | None:
        """Best bid price as a float (analysis only), or None."""
        return float(self.bids[0][0]) if self.bids else None

    @property
    def best_ask(self) -> float | None:
        """Best ask price as a float (analysis only), or None."""
        return float(self.asks[0][0]) if self.asks else None

    @property
    def mid(self) -> float | None:
        """(best bid + best ask) / 2, or None when a side is empty."""
        bid, ask = self.best_bid, self.best_ask
        return None if bid is None or ask is None else (bid + ask) / 2

    def row(self, levels: int) -> dict[str, Any]:
        """One flat row: time, recv_seq, state, then ``bid_px_i, bid_qty_i, ask_px_i, ask_qty_i``
        as exact text (empty where the book has fewer levels), like a book-frames row."""
        out: dict[str, Any] = {
            "time": self.time,
            "time_ns": self.time_ns,
            "recv_seq": self.recv_seq,
            "state": self.state,
        }
        for side, levs in (("bid", self.bids), ("ask", self.asks)):
            for i in range(levels):
                price, qty = levs[i] if i < len(levs) else ("", "")
                out[f"{side}_px_{i + 1}"] = price
                out[f"{side}_qty_{i + 1}"] = qty
        return out

    def to_frame(self) -> pd.DataFrame:
        """The levels side by side: ``level, bid_px, bid_qty, ask_px, ask_qty`` (float64) and
        the same with ``_text`` (exact)."""
        n = max(len(self.bids), len(self.asks))
        cols: dict[str, list[Any]] = {"level": list(range(1, n + 1))}
        for side, levs in (("bid", self.bids), ("ask", self.asks)):
            px = [levs[i][0] if i < len(levs) else None for i in range(n)]
            qty = [levs[i][1] if i < len(levs) else None for i in range(n)]
            cols[f"{side}_px"] = [float(x) if x is not None else None for x in px]
            cols[f"{side}_qty"] = [float(x) if x is not None else None for x in qty]
            cols[f"{side}_px_text"] = px
            cols[f"{side}_qty_text"] = qty
        return pd.DataFrame(cols)


class Day:
    """A recorded day folder of one symbol (see the module docstring)."""

    def __init__(self, folder: DayFolder) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"<Day {self.exchange} {self.symbol} {self.date.isoformat()} at {self.path}>"

    # -- identity -----------------------------------------------------------------------
    @property
    def path(self) -> Path:
        """The day folder."""
        return self.folder.root

    @property
    def exchange(self) -> str:
        """``binance``, ``kraken`` or ``bitfinex``."""
        return self.folder.exchange

    @property
    def symbol(self) -> str:
        """The venue's spelling (``BTC/USD``)."""
        return self.folder.symbol

    @property
    def symbol_fs(self) -> str:
        """The folder spelling (``BTCUSD``)."""
        return self.folder.symbol_fs

    @property
    def date(self) -> date:
        """The trading day."""
        return self.folder.day

    @property
    def levels(self) -> int:
        """Levels per side in the book frames."""
        return self.folder.levels

    # -- tables -------------------------------------------------------------------------
    def table(self, name: str, **options: Any) -> pa.Table:
        """One file as an Arrow table: ``trades``, ``book_frames``, ``diffs``, ``events`` or
        ``gaps`` (options as in the DataFrame methods). Raises StoreError if the file is absent."""
        lay = self.folder.layout
        paths = {
            "trades": lay.trades,
            "book_frames": lay.book_frames,
            "diffs": lay.diffs,
            "events": lay.events,
            "gaps": lay.gaps,
        }
        if name not in paths:
            raise ValueError(f"unknown table {name!r}: one of {', '.join(TABLES)}")
        path = paths[name]
        if not path.exists():
            why = " (recorded with STORE_DEPTH_DIFFS=false)" if name == "diffs" else ""
            raise StoreError(f"{self.path} has no {path.name}{why}", path=str(path))
        reader = {
            "trades": tables.trades_table,
            "book_frames": tables.book_frames_table,
            "diffs": tables.diffs_table,
            "events": tables.events_table,
            "gaps": tables.gaps_table,
        }[name]
        result: pa.Table = reader(path, **options)
        return result

    def _frame(self, name: str, **options: Any) -> pd.DataFrame:
        frame: pd.DataFrame = self.table(name, **options).to_pandas(types_mapper=pd.ArrowDtype)
        return frame

    def trades(self) -> pd.DataFrame:
        """Normalized trades: ``price``/``qty`` float64 plus ``price_text``/``qty_text`` exact."""
        return self._frame("trades")

    def book_frames(self, *, text: bool = False) -> pd.DataFrame:
        """Top-N book frames (float64 levels); ``text=True`` adds ``<column>_text`` exact text."""
        return self._frame("book_frames", text=text)

    def diffs(self, *, raw: bool = True) -> pd.DataFrame:
        """Every diff/checksum row: exact ``bids``/``asks`` text lists and the ``raw`` frame."""
        return self._frame("diffs", raw=raw)

    def events(self) -> pd.DataFrame:
        """The ledger."""
        return self._frame("events")

    def gaps(self) -> pd.DataFrame:
        """Gaps and checksum mismatches."""
        return self._frame("gaps")

    def validate(self, *, workers: int | None = None) -> DayReport:
        """``mmdata validate`` on this day (replay + file integrity)."""
        return validate_day(self.path, workers=workers)

    # -- books --------------------------------------------------------------------------
    def _require_diffs(self) -> None:
        if not self.folder.layout.diffs.exists():
            raise StoreError(
                f"{self.path} has no diffs/ file (recorded with STORE_DEPTH_DIFFS=false): "
                "the book cannot be rebuilt; use book_frames() for the top levels",
                path=str(self.path),
            )

    def book_at(self, when: Any, *, levels: int | None = None) -> BookView:
        """The book as of ``when`` (every event received at or before it applied).

        ``when``: ISO-8601 text, a clock time ``HH:MM[:SS]`` on this day (UTC), epoch
        s/ms/ns, ``datetime`` or ``pandas.Timestamp``. ``levels``: best N per side (all when
        None). Replay starts at the last engine reset before the last snapshot at or before
        ``when``, so a late moment does not replay the whole day when the recorder reconnected.
        """
        self._require_diffs()
        t_ns = parse_time_ns(when, self.date)
        with BookReplay(self.folder, start_after=self._start_point(t_ns)) as replay:
            replay.advance(until_ns=t_ns)
            _warn_damage(replay, 0)
            return _view(replay, t_ns, levels)

    def _start_point(self, t_ns: int) -> tuple[int, int] | None:
        actions = BookReplay.ledger_actions(self.folder, lambda _p: None)
        snap = None
        for action in actions:
            if action.time_ns > t_ns:
                break
            if action.row["event"] == "snapshot":
                snap = action
        if snap is None:
            return None
        start = None
        for action in actions:
            if (action.seq, action.event_id) >= (snap.seq, snap.event_id):
                break
            if action.is_reset:
                start = (action.seq, action.event_id)
        return start

    def iter_books(
        self,
        every: Any = "1s",
        *,
        levels: int | None = 10,
        start: Any = None,
        end: Any = None,
    ) -> Iterator[BookView]:
        """The book every ``every`` (``"1s"``, ``"250ms"``, ``"1min"``...) from ``start`` to
        ``end`` (default: the day's first to last event), streamed: one book in memory.

        Grid times are multiples of ``every`` since the Unix epoch (for an interval that divides a
        day: aligned to midnight UTC). Views of moments when the
        book was not proven have ``state`` != ``SYNCED`` and no levels.
        """
        # Arguments are checked now, not at the first next(): errors point at the call.
        self._require_diffs()
        step = parse_duration_ns(every)
        t_start = parse_time_ns(start, self.date) if start is not None else None
        t_end = parse_time_ns(end, self.date) if end is not None else None
        return self._books(step, levels, t_start, t_end)

    def _books(
        self, step: int, levels: int | None, t_start: int | None, t_end: int | None
    ) -> Iterator[BookView]:
        with BookReplay(self.folder) as replay:
            first = replay.next_time_ns()
            if first is None:
                return
            t = -(-(t_start if t_start is not None else first) // step) * step  # first grid point at/after
            warned = 0
            while t_end is None or t <= t_end:
                more = replay.advance(until_ns=t)
                warned = _warn_damage(replay, warned)
                yield _view(replay, t, levels)
                if not more and t_end is None:
                    return
                t += step


_DAMAGE = frozenset(("truncated", "unreadable_row", "seq_order"))


def _warn_damage(replay: BookReplay, already: int) -> int:
    """Warn (DataWarning) about damaged diff rows found since ``already`` problems; returns the
    new count. Gaps and mismatches are not warned about: views show them as their state."""
    problems = replay.problems
    for p in problems[already:]:
        if p.kind in _DAMAGE:
            where = f" at recv_seq {p.recv_seq}" if p.recv_seq is not None else ""
            warnings.warn(
                tables.DataWarning(f"{replay.folder.root.name}: {p.kind}{where}: {p.detail}"), stacklevel=3
            )
    return len(problems)


def _view(replay: BookReplay, t_ns: int, levels: int | None) -> BookView:
    engine = replay.engine
    if engine.state is SyncState.SYNCED and not replay.stopped:
        bids, asks = engine.book.top(levels)
    else:
        bids, asks = [], []
    state = "STOPPED" if replay.stopped else engine.state.name
    return BookView(t_ns, replay.seq, state, bids, asks, replay.time_ns)


def open_day(path: str | Path) -> Day:
    """Open the day folder ``path`` (``<data>/<exchange>/<SYMBOL_FS>/<YYYYMMDD>``).

    Raises :class:`~mmdata.errors.StoreError` when it is not a recorded day folder.
    """
    return Day(open_day_folder(path))
