"""Recorded and live trades of a stream, folded into candles: what the candle, metrics and
stream servers read.

Theory of operation
-------------------
A :class:`TradeFeed` reads one recorded stream's trades in ``recv_seq`` order, with no
trade lost or repeated:

1. *History*: the normalized trades file (``trades_ws_*.csv.gz``) of every day folder in
   the last ``history_days`` days, complete gzip members only (a torn tail is the part
   the recorder has not flushed yet).
2. *Live*: when the recorder writes ``live/live_trades.ndjson``, that file from its start,
   and before it as many rotated live files as it takes to reach a trade the day files
   already had (the day files trail the live file by up to a flush interval, and the live
   file may have rotated in between). Only trades with a ``recv_seq`` above the newest
   one seen are taken, so the overlap is dropped.
3. *Following*: the live file across rotation (:class:`~mmdata.store.tail.LiveTail`) or,
   without ``live/``, the newest day's trades file by byte offset
   (:class:`~mmdata.store.tail.GzipTail`), switching when a newer day folder appears.

A :class:`Market` owns a feed and a :class:`~mmdata.candles.CandleAggregator` and tells its
listeners, after each poll, which trades arrived and which minutes changed. One
:class:`Markets` registry per process serves every server, so a stream is read once.
Rows that do not parse are counted (``bad_rows``), never fatal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import orjson

from mmdata.candles import CandleAggregator
from mmdata.errors import StoreError
from mmdata.exchanges import EXCHANGES
from mmdata.serve.params import BadRequest, Stream, resolve_stream
from mmdata.serve.sources import LIVE_TRADES, _is_day_name
from mmdata.store.dayfolder import open_day_folder
from mmdata.store.tail import GzipTail, LiveTail

__all__ = ["Market", "MarketConfig", "Markets", "StreamInfo", "TradeFeed", "TradeRow"]

log = logging.getLogger("mmdata.serve")

_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One recorded trade (exact decimal text)."""

    seq: int
    recv_ns: int
    ts_ms: int
    trade_id: str
    price: str
    qty: str
    side: str


def _csv_trade(line: bytes) -> TradeRow | None:
    """``recv_seq,recv_time_ns,event_time_ms,trade_id,price,qty,side`` (trade_id may be quoted)."""
    try:
        head, price, qty, side = line.decode().rsplit(",", 3)
        seq, recv_ns, ts_ms, tid = head.split(",", 3)
        return TradeRow(int(seq), int(recv_ns), int(ts_ms), tid.strip('"'), price, qty, side.strip())
    except (ValueError, UnicodeDecodeError):
        return None


def _json_trade(line: bytes) -> TradeRow | None:
    try:
        row = orjson.loads(line)
        return TradeRow(
            int(row["recv_seq"]),
            int(row["recv_time_ns"]),
            int(row["event_time_ms"]),
            str(row["trade_id"]),
            str(row["price"]),
            str(row["qty"]),
            str(row["side"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _day_folders(stream_root: Path) -> list[Path]:
    try:
        return sorted(p for p in stream_root.iterdir() if _is_day_name(p.name) and p.is_dir())
    except OSError:
        return []


def _trades_file(day: Path) -> Path | None:
    found = sorted(day.glob("trades_ws_*.csv.gz"))
    return found[0] if found else None


def _drain(tail: GzipTail) -> Iterator[bytes]:
    """Every complete line a tail can give now."""
    while True:
        lines = tail.poll()
        if not lines:
            return
        yield from lines


_ROTATED = re.compile(r"live_trades\.(\d{8}T\d{6})(?:-(\d+))?\.ndjson")


class LoadCancelled(Exception):
    """:meth:`TradeFeed.start` was told to stop (the server is closing)."""


#: After a newer day folder appears, the old day's file is still read this long: its last
#: flush (rows that arrived before the new day opened) comes after the new file exists.
ROLLOVER_GRACE_S = 5.0
#: A live file silent this long while the day files grow is an old run's: read the day files.
LIVE_STALE_S = 5.0
_DAY_SCAN_S = 1.0
_CHUNK = 10_000


class TradeFeed:
    """One stream's trades: history, then live (see the module docstring).

    Duplicates (a row in both a day file and a live file, or in two day folders during the
    recorder's day overlap) are dropped by a high-water mark on ``(recv_time_ns, recv_seq)``,
    not on ``recv_seq`` alone: a restarted recorder may number from 1 again, but its wall
    clock has moved on.
    """

    def __init__(self, stream_root: Path, *, history_days: int = 30) -> None:
        self.root = stream_root
        self.history_days = history_days
        self.last_key: tuple[int, int] = (-1, -1)
        self.bad_rows = 0
        self.source = "none"
        self.cancel = threading.Event()
        self._live: LiveTail | None = None
        self._live_quiet_since = time.monotonic()
        self._day: Path | None = None
        self._day_tail: GzipTail | None = None
        self._newer_seen: float | None = None
        self._scanned = 0.0

    @property
    def last_seq(self) -> int:
        """``recv_seq`` of the newest trade taken (-1: none)."""
        return self.last_key[1]

    def _take(self, rows: list[TradeRow], line: bytes, parse: Callable[[bytes], TradeRow | None]) -> None:
        if not line.strip() or line.startswith(b"recv_seq,"):
            return  # blank, or the CSV header
        row = parse(line)
        if row is None:
            self.bad_rows += 1
            return
        key = (row.recv_ns, row.seq)
        if key > self.last_key:
            self.last_key = key
            rows.append(row)

    def start(self, sink: Callable[[list[TradeRow]], object] | None = None) -> list[TradeRow]:
        """The history and whatever the live files add to it (blocking file reads).

        With ``sink``, rows are handed over in chunks as they are read (memory stays flat
        for a month of trades) and the return value is empty. Setting :attr:`cancel` stops
        the read with :class:`LoadCancelled`.
        """
        live_path = self.root / "live" / LIVE_TRADES
        if live_path.is_file():
            # Opened first: whatever the recorder writes from now on is in it or after it.
            self._live = LiveTail(live_path, from_start=True)
        rows: list[TradeRow] = []

        def flush(force: bool = False) -> None:
            if self.cancel.is_set():
                raise LoadCancelled
            if sink is not None and rows and (force or len(rows) >= _CHUNK):
                sink(rows[:])
                rows.clear()

        days = _day_folders(self.root)
        if days:
            newest = days[-1].name
            cutoff = _day_number(newest) - max(0, self.history_days - 1)
            for day in days:
                if _day_number(day.name) < cutoff:
                    continue
                path = _trades_file(day)
                if path is None:
                    continue
                tail = GzipTail(path)
                while lines := tail.poll():
                    for line in lines:
                        self._take(rows, line, _csv_trade)
                    flush()
                if day == days[-1]:
                    self._day, self._day_tail = day, tail
        if self._live is not None:
            self.source = "live"
            for path in self._rotated_since():
                with contextlib.suppress(OSError):
                    for line in path.read_bytes().splitlines():
                        self._take(rows, line, _json_trade)
                flush()
            for line in self._live.poll():
                self._take(rows, line, _json_trade)
        elif self._day_tail is not None:
            self.source = "day"
        self._live_quiet_since = time.monotonic()
        flush(force=True)
        return rows

    def _rotated_since(self) -> list[Path]:
        """Rotated live files holding trades after the history (oldest first)."""
        found: list[tuple[str, int, Path]] = []
        with contextlib.suppress(OSError):
            for p in (self.root / "live").iterdir():
                m = _ROTATED.fullmatch(p.name)
                if m:
                    found.append((m.group(1), int(m.group(2) or 0), p))
        found.sort(reverse=True)
        out: list[Path] = []
        for _, _, path in found:
            out.append(path)
            try:
                first = path.read_bytes().split(b"\n", 1)[0]
            except OSError:
                continue
            row = _json_trade(first)
            if row is not None and (row.recv_ns, row.seq) <= self.last_key:
                break  # this one reaches back into the history: older ones add nothing
        out.reverse()
        return out

    def poll(self) -> list[TradeRow]:
        """Trades that arrived since the last call."""
        rows: list[TradeRow] = []
        now = time.monotonic()
        if self._live is not None:
            for line in self._live.poll():
                self._take(rows, line, _json_trade)
            if rows:
                self._live_quiet_since = now
                self.source = "live"
                return rows
            if now - self._live_quiet_since < LIVE_STALE_S:
                return rows
            # A silent live file: maybe a run recording without live/ now writes the day files.
        before = len(rows)
        self._poll_days(rows, now)
        if len(rows) > before and self._live is not None:
            self.source = "day"
        return rows

    def _poll_days(self, rows: list[TradeRow], now: float) -> None:
        if self._day_tail is not None:
            for line in self._day_tail.poll():
                self._take(rows, line, _csv_trade)
        if now - self._scanned < _DAY_SCAN_S:
            return  # a directory listing per poll would cost more than the poll
        self._scanned = now
        days = _day_folders(self.root)
        if not days or (self._day is not None and days[-1].name <= self._day.name):
            self._newer_seen = None
            return
        path = _trades_file(days[-1])
        if path is None:
            return
        if self._day_tail is not None:
            # The old day's last flush (rows from before the new day opened) comes after the
            # new file exists; during the recorder's day overlap every row goes to both, so
            # reading on in the old day for a few seconds loses nothing and repeats nothing.
            if self._newer_seen is None:
                self._newer_seen = now
            if now - self._newer_seen < ROLLOVER_GRACE_S:
                return
        self._day, self._day_tail, self._newer_seen = days[-1], GzipTail(path), None
        if self.source == "none":
            self.source = "day"
        for line in _drain(self._day_tail):
            self._take(rows, line, _csv_trade)  # what the old day already gave is skipped

    def close(self) -> None:
        """Close the files."""
        if self._live is not None:
            self._live.close()


def _day_number(label: str) -> int:
    return date(int(label[:4]), int(label[4:6]), int(label[6:])).toordinal()


_POOL: list[concurrent.futures.ThreadPoolExecutor] = []


def _history_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for history reads (two: the disk, not the CPU count, is the limit)."""
    if not _POOL:
        _POOL.append(concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mmdata-history"))
    return _POOL[0]


@dataclass(slots=True)
class MarketConfig:
    """Knobs shared by the candle, metrics and stream servers."""

    poll_s: float = 0.02
    history_days: int = 30
    #: 1m candles kept per stream (None: all that were read).
    max_minutes: int | None = None
    idle_s: float = 300.0


Listener = Callable[["Market", list[TradeRow], set[int]], None]


class Market:
    """A stream's trade feed and its candles (see the module docstring)."""

    def __init__(self, stream: Stream, symbol: str, config: MarketConfig) -> None:
        self.stream = stream
        self.exchange = stream.exchange
        self.symbol = symbol  # the venue's spelling, from the ledger (BTC/USD, BTCUSDT, tBTCUSD)
        self.config = config
        self.feed = TradeFeed(stream.root, history_days=config.history_days)
        self.candles = CandleAggregator(config.max_minutes)
        self.last_trade: TradeRow | None = None
        self.listeners: set[Listener] = set()
        self.ready = asyncio.Event()
        self.error = ""
        self.rejected = 0
        self.last_poll_ns = 0
        self._task: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[None] | None = None

    def _load(self) -> None:
        self.feed.start(self._fold)  # folded chunk by chunk: a month of trades is never a list

    def _fold(self, rows: list[TradeRow]) -> set[int]:
        changed: set[int] = set()
        add = self.candles.add
        for row in rows:
            try:
                changed.add(add(row.ts_ms, row.price, row.qty))
            except ValueError:
                self.rejected += 1
        if rows:
            self.last_trade = rows[-1]
        return changed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            # Its own small pool: long history reads never queue the metrics' computations.
            self._loading = loop.run_in_executor(_history_pool(), self._load)
            await asyncio.shield(self._loading)
        except LoadCancelled:
            return
        except (StoreError, OSError) as exc:
            self.error = f"cannot read the recorded trades: {exc}"
            log.warning("%s %s: %s", self.exchange, self.symbol, self.error)
        except Exception as exc:  # e.g. MemoryError: say so rather than look ready and never move
            self.error = f"reading the recorded trades failed: {exc!r}"
            log.exception("%s %s: history load failed", self.exchange, self.symbol)
        finally:
            self.ready.set()
        if self.error:
            return
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                rows = self.feed.poll()
            except Exception as exc:  # keep polling: a damaged or replaced file is retried
                log.warning("%s %s: reading trades failed: %r", self.exchange, self.symbol, exc)
                continue
            self.last_poll_ns = time.time_ns()
            if not rows:
                continue
            changed = self._fold(rows)
            for listener in list(self.listeners):
                try:
                    listener(self, rows, changed)
                except Exception:  # one broken listener must not stop the stream
                    log.exception("market listener failed")

    def start(self) -> None:
        """Start reading (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"market-{self.symbol}")

    async def stop(self) -> None:
        """Stop reading and close the files."""
        self.feed.cancel.set()  # a history read still running stops at its next chunk
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._loading is not None:
            # The history read runs in a thread that cannot be cancelled: let it finish so
            # that whatever it opened is closed below.
            with contextlib.suppress(Exception):
                await self._loading
        self.feed.close()


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A recorded stream as the servers list it."""

    exchange: str
    symbol: str  # the venue's spelling
    symbol_fs: str


def _bitfinex_alias(exchange: str, symbol: str) -> str:
    """Bitfinex folders are ``tBTCUSD``; let clients say ``BTC/USD`` or ``BTCUSD`` too."""
    if exchange == "bitfinex" and symbol and not symbol.startswith(("t", "f")):
        return "t" + symbol
    return symbol


@dataclass
class Markets:
    """One :class:`Market` per recorded stream, shared by every server of a process."""

    data_dir: Path
    config: MarketConfig = field(default_factory=MarketConfig)
    markets: dict[tuple[str, str], Market] = field(default_factory=dict)
    _listed: tuple[float, list[StreamInfo]] = (-1e18, [])

    def catalog(self) -> list[StreamInfo]:
        """Every recorded (exchange, symbol) under the data root (listed at most every 10 s:
        it reads each stream's newest ledger, and clients naming unknown symbols ask for it)."""
        now = time.monotonic()
        if now - self._listed[0] < 10.0:
            return list(self._listed[1])
        out = self._list()
        self._listed = (now, out)
        return list(out)

    def _list(self) -> list[StreamInfo]:
        out: list[StreamInfo] = []
        for venue in sorted(EXCHANGES):
            try:
                folders = sorted(p for p in (self.data_dir / venue).iterdir() if p.is_dir())
            except OSError:
                continue
            for folder in folders:
                days = _day_folders(folder)
                symbol = folder.name
                for day in reversed(days):
                    try:
                        symbol = open_day_folder(day).symbol
                        break
                    except StoreError:
                        continue
                if days:
                    out.append(StreamInfo(venue, symbol, folder.name))
        return out

    def resolve(self, exchange: str | None, symbol: str | None) -> Stream:
        """The recorded stream a client names (BadRequest with a message otherwise)."""
        try:
            stream = resolve_stream(self.data_dir, exchange, symbol)
        except BadRequest as first:
            venue = (exchange or "").strip().lower()
            alias = _bitfinex_alias(venue, (symbol or "").strip())
            if first.status == 404 and alias != (symbol or "").strip():
                with contextlib.suppress(BadRequest):
                    return self._recorded(resolve_stream(self.data_dir, exchange, alias))
            raise
        return self._recorded(stream)

    @staticmethod
    def _recorded(stream: Stream) -> Stream:
        """A folder with neither a day folder nor live trades is not a recorded stream."""
        if _day_folders(stream.root) or (stream.root / "live" / LIVE_TRADES).is_file():
            return stream
        raise BadRequest(404, f"no recorded data for {stream.exchange} {stream.symbol_fs}")

    def get(self, stream: Stream) -> Market:
        """The stream's market, started on first use (await ``market.ready``)."""
        key = (stream.exchange, stream.symbol_fs)
        market = self.markets.get(key)
        if market is None:
            symbol = stream.symbol_fs
            days = _day_folders(stream.root)
            for day in reversed(days):
                try:
                    symbol = open_day_folder(day).symbol
                    break
                except StoreError:
                    continue
            market = self.markets[key] = Market(stream, symbol, self.config)
            market.start()
        return market

    def default_exchange(self, configured: str | None) -> str:
        """``configured``, else the only recorded exchange, else ``binance``."""
        if configured:
            return configured.strip().lower()
        venues = {s.exchange for s in self.catalog()}
        return venues.pop() if len(venues) == 1 else "binance"

    def preload(self) -> int:
        """Start reading every recorded stream now (a first client then finds it ready)."""
        n = 0
        for info in self.catalog():
            with contextlib.suppress(BadRequest):
                self.get(self.resolve(info.exchange, info.symbol_fs))
                n += 1
        return n

    async def close(self) -> None:
        """Stop every market."""
        for market in list(self.markets.values()):
            await market.stop()
        self.markets.clear()
