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
import contextlib
import logging
import re
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


class TradeFeed:
    """One stream's trades: history, then live (see the module docstring)."""

    def __init__(self, stream_root: Path, *, history_days: int = 30) -> None:
        self.root = stream_root
        self.history_days = history_days
        self.last_seq = -1
        self.bad_rows = 0
        self.source = "none"
        self._live: LiveTail | None = None
        self._day: Path | None = None
        self._day_tail: GzipTail | None = None

    def _take(self, rows: list[TradeRow], line: bytes, parse: Callable[[bytes], TradeRow | None]) -> None:
        if not line.strip() or line.startswith(b"recv_seq,"):
            return  # blank, or the CSV header
        row = parse(line)
        if row is None:
            self.bad_rows += 1
        elif row.seq > self.last_seq:
            self.last_seq = row.seq
            rows.append(row)

    def start(self) -> list[TradeRow]:
        """The history and whatever the live files add to it (blocking file reads)."""
        live_path = self.root / "live" / LIVE_TRADES
        if live_path.is_file():
            # Opened first: whatever the recorder writes from now on is in it or after it.
            self._live = LiveTail(live_path, from_start=True)
        rows: list[TradeRow] = []
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
                for line in _drain(tail):
                    self._take(rows, line, _csv_trade)
                if day == days[-1]:
                    self._day, self._day_tail = day, tail
        if self._live is not None:
            self.source = "live"
            for path in self._rotated_since():
                with contextlib.suppress(OSError):
                    for line in path.read_bytes().splitlines():
                        self._take(rows, line, _json_trade)
            for line in self._live.poll():
                self._take(rows, line, _json_trade)
        elif self._day_tail is not None:
            self.source = "day"
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
            if row is not None and row.seq <= self.last_seq:
                break  # this one reaches back into the history: older ones add nothing
        out.reverse()
        return out

    def poll(self) -> list[TradeRow]:
        """Trades that arrived since the last call."""
        rows: list[TradeRow] = []
        if self._live is not None:
            for line in self._live.poll():
                self._take(rows, line, _json_trade)
            return rows
        if self._day_tail is not None:
            for line in self._day_tail.poll():
                self._take(rows, line, _csv_trade)
        days = _day_folders(self.root)
        if days and (self._day is None or days[-1].name > self._day.name):
            path = _trades_file(days[-1])
            if path is not None:
                # A new day: its file starts from its beginning; seq skips what was seen.
                self._day, self._day_tail = days[-1], GzipTail(path)
                self.source = "day"
                for line in _drain(self._day_tail):
                    self._take(rows, line, _csv_trade)
        return rows

    def close(self) -> None:
        """Close the files."""
        if self._live is not None:
            self._live.close()


def _day_number(label: str) -> int:
    return date(int(label[:4]), int(label[4:6]), int(label[6:])).toordinal()


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
        self._fold(self.feed.start())

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
        try:
            self._loading = asyncio.ensure_future(asyncio.to_thread(self._load))
            await asyncio.shield(self._loading)
        except (StoreError, OSError) as exc:
            self.error = f"cannot read the recorded trades: {exc}"
            log.warning("%s %s: %s", self.exchange, self.symbol, self.error)
        finally:
            self.ready.set()
        if self.error:
            return
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                rows = self.feed.poll()
            except (StoreError, OSError) as exc:
                log.warning("%s %s: reading trades failed: %s", self.exchange, self.symbol, exc)
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

    def catalog(self) -> list[StreamInfo]:
        """Every recorded (exchange, symbol) under the data root."""
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
