"""The recorder: connections, snapshots, days and shutdown around the per-symbol recorders.

Theory of operation
-------------------
:class:`Recorder` turns a :class:`~mmdata.record.config.RecorderConfig` into

* one :class:`~mmdata.record.symbol.SymbolRecorder` per symbol (its own sync engine,
  files, ledger and log: a gap in one symbol resyncs that symbol only);
* connection groups within the venue's limits (Bitfinex: 15 symbols = 30 channels per
  connection); each group runs a reconnect loop (:func:`mmdata.net.ws.reconnecting`,
  jittered backoff) and a fresh venue adapter per connection. A frame is parsed once and
  its events are routed by symbol; a Bitfinex ``SEQ_ALL`` break goes to every book of
  the connection;
* snapshot I/O on the engines' request: Binance REST snapshots fetched in a worker
  thread (:class:`mmdata.net.http.HttpClient`: retries, ``Retry-After``, weight budget,
  418 bans), never awaited inside the frame loop; Kraken / Bitfinex resubscribe the one
  book on its socket;
* a watchdog per connection: no-data warning (``WS_NO_DATA_WARN_S``), reconnect after
  ``WS_NO_DATA_RECONNECT_S`` of silence and after ``WS_MAX_SESSION_S``; venue notices:
  Binance ``serverShutdown`` / Bitfinex 20051 reconnect, Bitfinex 20060 / Kraken
  ``maintenance`` pause (books dropped) until 20061 / ``online``, then reconnect;
* a housekeeping loop: timed flushes, day rollover at trading-window boundaries
  (:class:`~mmdata.record.window.TradingWindow`), live-file rotation, heartbeats,
  ``SYNC_WARN_AFTER_SEC`` / ``MAX_BUFFER_WARN`` warnings, progress callbacks, ``--duration``.

Shutdown (stop event, SIGINT/SIGTERM in :func:`record`): connections close, every engine
goes to STOPPED in the ledger, every day gets ``run_stop`` and every file is flushed and
closed. A crash loses at most one flush interval (each flush is a complete gzip member).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mmdata import exchanges
from mmdata.errors import (
    ConfigError,
    ConnectionLost,
    ExchangeProtocolError,
    MMDataError,
    RateLimited,
)
from mmdata.exchanges.base import Exchange
from mmdata.net.backoff import backoff
from mmdata.net.http import HttpClient
from mmdata.net.ws import WsConnection, reconnecting
from mmdata.record.config import RecorderConfig, book_depth_for
from mmdata.record.symbol import SymbolRecorder
from mmdata.store.capture import CaptureWriter
from mmdata.types import (
    Ack,
    BookChecksum,
    BookDiff,
    BookSnapshot,
    Instrument,
    SequenceBreak,
    Trade,
    Unknown,
    VenueStatus,
)

__all__ = [
    "RecordSummary",
    "Recorder",
    "RecorderStatus",
    "SimulateOptions",
    "SymbolStatus",
    "peak_rss_mb",
    "record",
    "record_async",
]

#: Symbols per connection when the config does not say (venue limits, PROTOCOLS.md).
_PER_CONNECTION = {"binance": 200, "kraken": 50, "bitfinex": 15}
_TICK_S = 0.1


def peak_rss_mb() -> float:
    """Peak resident set size of this process, MB.

    Linux: ``VmHWM`` from ``/proc/self/status`` (``ru_maxrss`` may start from the peak of the
    parent that spawned us); elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass(slots=True)
class SymbolStatus:
    """One symbol in a progress report."""

    symbol: str
    state: str
    counters: dict[str, int]
    days: list[str]


@dataclass(slots=True)
class RecorderStatus:
    """What the recorder is doing now (progress callbacks)."""

    elapsed_s: float
    frames: int
    connections_open: int
    reconnects: int
    symbols: list[SymbolStatus]


@dataclass(slots=True)
class RecordSummary:
    """The result of a run."""

    run_id: str
    exchange: str
    data_dir: str
    seconds: float
    frames: int
    connections: int
    reconnects: int
    symbols: dict[str, dict[str, Any]]
    day_dirs: list[str]
    repaired: list[str] = field(default_factory=list)
    captures: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    log_problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "run_id": self.run_id,
            "exchange": self.exchange,
            "data_dir": self.data_dir,
            "seconds": round(self.seconds, 3),
            "frames": self.frames,
            "connections": self.connections,
            "reconnects": self.reconnects,
            "symbols": self.symbols,
            "day_dirs": self.day_dirs,
            "repaired": self.repaired,
            "captures": self.captures,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


class _Connection:
    """One connection group: its symbols, its current socket and adapter."""

    def __init__(self, number: int, symbols: list[SymbolRecorder], adapter: Exchange) -> None:
        self.number = number
        self.symbols = symbols
        self.by_symbol = {s.symbol: s for s in symbols}
        self.adapter = adapter
        self.conn: WsConnection | None = None
        self.epoch = 0
        self.opened = 0.0
        self.last_rx = 0.0
        self.frames = 0
        self.no_data_warned = False
        self.paused = False
        self.reconnect_reason: str | None = None
        self.capture: CaptureWriter | None = None
        self.url = ""


class Recorder:
    """Record one venue's symbols into the day-folder contract (see the module docstring).

    ``wall_ns`` (receive times, trading-window decisions) and ``monotonic`` are
    injectable, so day rollover is tested with a fake clock.
    """

    def __init__(
        self,
        config: RecorderConfig,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.wall_ns = wall_ns
        self.monotonic = monotonic
        self.exchange = config.exchange.strip().lower()
        self.depth = book_depth_for(self.exchange, config.depth_levels, config.book_depth)
        probe = self._new_adapter()
        names = list(dict.fromkeys(probe.normalize_symbol(s) for s in config.symbols))
        if self.exchange != "binance":
            probe.subscribe_messages(names[:1], self.depth)  # venue checks of depth, early
        started = datetime.fromtimestamp(wall_ns() / 1e9, tz=UTC)
        self.run_id = f"{started:%Y%m%dT%H%M%SZ}-{os.getpid()}"
        self.symbols: dict[str, SymbolRecorder] = {}
        for name in names:
            sym = SymbolRecorder(
                exchange=self.exchange,
                symbol=name,
                symbol_fs=probe.symbol_fs(name),
                engine=probe.new_sync_engine(name, self.depth),
                book_depth=self.depth,
                config=config,
                run_id=self.run_id,
                wall_ns=wall_ns,
                monotonic=monotonic,
            )
            sym.request_snapshot = self._request_snapshot
            self.symbols[name] = sym
        fs_names = [s.symbol_fs for s in self.symbols.values()]
        if len(set(fs_names)) != len(fs_names):
            raise ConfigError(f"two symbols share a folder name: {', '.join(fs_names)}")
        per = config.symbols_per_connection or _PER_CONNECTION[self.exchange]
        per = min(per, _PER_CONNECTION[self.exchange])
        recs = list(self.symbols.values())
        self.connections = [
            _Connection(i + 1, recs[k : k + per], probe) for i, k in enumerate(range(0, len(recs), per))
        ]
        self._conn_of = {s.symbol: c for c in self.connections for s in c.symbols}
        self._fetching: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: HttpClient | None = None
        self._stop = asyncio.Event()
        self._in_window = asyncio.Event()
        self._started = monotonic()
        self.frames = 0
        self.connections_opened = 0
        self._next_boundary = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.captures: list[str] = []
        #: Recording a replayed capture: one session only (a reconnect would replay it again),
        #: and snapshot fetches in flight when the capture ends are awaited, not dropped.
        self.replay_mode = False

    def _new_adapter(self) -> Exchange:
        config = self.config
        adapter = exchanges.get(self.exchange, ws_base=config.ws_url, rest_base=config.rest_url)
        if isinstance(adapter, exchanges.BinanceSpot):
            # REST snapshots exactly as deep as configured (weight 50 at 1000, 250 at 5000).
            adapter.snapshot_limit = self.depth
        return adapter

    # -- public -------------------------------------------------------------------------------
    def status(self) -> RecorderStatus:
        """A progress snapshot."""
        return RecorderStatus(
            elapsed_s=self.monotonic() - self._started,
            frames=self.frames,
            connections_open=sum(1 for c in self.connections if c.conn is not None),
            reconnects=max(0, self.connections_opened - len(self.connections)),
            symbols=[
                SymbolStatus(
                    s.symbol, s.engine.state.name, s.stats.as_dict(), [f.layout.label for f in s.active]
                )
                for s in self.symbols.values()
            ],
        )

    def stop(self) -> None:
        """Ask the run to finish (thread-unsafe; use ``loop.call_soon_threadsafe`` from elsewhere)."""
        self._stop.set()

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        progress: Callable[[RecorderStatus], None] | None = None,
        progress_every_s: float = 0.5,
    ) -> RecordSummary:
        """Record until ``stop`` is set, ``duration_s`` passes, or a fatal store error."""
        if stop is not None:
            self._stop = stop
        self._loop = asyncio.get_running_loop()
        self._started = self.monotonic()
        config = self.config
        if any(c.adapter.snapshot_request(c.symbols[0].symbol, self.depth) for c in self.connections):
            loop = self._loop
            self._http = HttpClient(
                timeout_s=config.http_timeout_s,
                retries=config.http_retries,
                weight_limit_1m=6000 if self.exchange == "binance" else None,
                max_wait_s=30.0,
                on_event=lambda kind, data: self._from_thread(loop, kind, data),
            )
        fatal: BaseException | None = None
        workers: list[asyncio.Task[Any]] = []
        try:
            self._open_capture()
            self._update_window(first=True)
            workers = [asyncio.create_task(self._connection_loop(c)) for c in self.connections]
            workers.append(asyncio.create_task(self._housekeeping(progress, progress_every_s)))
            stopper = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait([stopper, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    fatal = task.exception()
            self._stop.set()
            stopper.cancel()
            _, pending = await asyncio.wait(workers, timeout=10.0)
            for task in pending:
                task.cancel()
            for task in workers:
                if task.done() and not task.cancelled() and task.exception() is not None and fatal is None:
                    fatal = task.exception()
        finally:
            for task in list(self._tasks):
                task.cancel()
            for sym in self.symbols.values():
                with contextlib.suppress(MMDataError):
                    sym.stop("shutdown" if fatal is None else f"fatal error: {fatal}")
            for c in self.connections:
                if c.capture is not None:
                    c.capture.close()
            if self._http is not None:
                self._http.close()
        if progress is not None:
            progress(self.status())
        if fatal is not None:
            raise fatal
        return self._summary()

    # -- setup ----------------------------------------------------------------------------------
    def _open_capture(self) -> None:
        path = self.config.capture
        if path is None:
            return
        for c in self.connections:
            target = path
            if len(self.connections) > 1:
                name = path.name
                stem, dot, rest = name.partition(".")
                target = path.with_name(f"{stem}.{c.number}{dot}{rest}")
            c.capture = CaptureWriter(
                target,
                self.exchange,
                [s.symbol for s in c.symbols],
                depth=self.depth,
                recorder_run=self.run_id,
            )
            self.captures.append(str(target))

    def _summary(self) -> RecordSummary:
        day_dirs: set[str] = set()
        symbols: dict[str, dict[str, Any]] = {}
        for s in self.symbols.values():
            info: dict[str, Any] = {"final_state": s.engine.state.name, **s.stats.as_dict()}
            info["symbol_fs"] = s.symbol_fs
            symbols[s.symbol] = info
            day_dirs.update(s.opened_days)
        return RecordSummary(
            run_id=self.run_id,
            exchange=self.exchange,
            data_dir=str(self.config.data_dir),
            seconds=self.monotonic() - self._started,
            frames=self.frames,
            connections=self.connections_opened,
            reconnects=max(0, self.connections_opened - len(self.connections)),
            symbols=symbols,
            day_dirs=sorted(day_dirs),
            repaired=[str(p) for s in self.symbols.values() for p in s.repaired],
            captures=self.captures,
            peak_rss_mb=peak_rss_mb(),
            log_problems=[s.log.failed for s in self.symbols.values() if s.log.failed],
        )

    # -- trading window ----------------------------------------------------------------------------
    def _update_window(self, *, first: bool = False) -> None:
        now = self.wall_ns() / 1e9
        window = self.config.window
        days = window.active_days(now)
        for sym in self.symbols.values():
            for day in list(sym.days):
                if day not in days:
                    sym.close_day(day, reason="window_end")
            for day in days:
                if day not in sym.days:
                    sym.open_day(day, reason="run_start" if first else "window_start")
        self._next_boundary = window.next_boundary(now).timestamp()
        if days:
            self._in_window.set()
        else:
            if self._in_window.is_set() or first:
                _day, start = window.next_start(now)
                for sym in self.symbols.values():
                    sym.log.write("INFO", f"outside the trading window: waiting for {start.isoformat()}")
            self._in_window.clear()
            for c in self.connections:
                if c.conn is not None:
                    c.reconnect_reason = "trading window closed"
                    self._spawn(c.conn.close("trading window closed"))

    # -- connections ------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_stop(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; True when the recorder is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout)
        return self._stop.is_set()

    async def _connection_loop(self, c: _Connection) -> None:
        config = self.config
        names = [s.symbol for s in c.symbols]

        def on_retry(exc: Exception, delay: float) -> None:
            for sym in c.symbols:
                sym.event("ws_connect_failed", reason=str(exc)[:300], details={"retry_in_s": round(delay, 3)})

        while not self._stop.is_set():
            if not self._in_window.is_set():
                waiter = asyncio.ensure_future(self._in_window.wait())
                stopper = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                continue
            url = c.adapter.ws_url(names)
            c.url = url
            gen = reconnecting(url, config.ws, stop=self._stop, on_retry=on_retry)
            try:
                async for conn in gen:
                    await self._session(c, conn, names)
                    if self.replay_mode:
                        self._stop.set()
                    if not self._in_window.is_set() or self._stop.is_set():
                        break
            finally:
                await gen.aclose()  # type: ignore[attr-defined]

    async def _session(self, c: _Connection, conn: WsConnection, names: list[str]) -> None:
        adapter = self._new_adapter()
        c.adapter = adapter
        c.conn = conn
        c.epoch += 1
        c.opened = c.last_rx = self.monotonic()
        c.no_data_warned = False
        c.paused = False
        c.reconnect_reason = None
        c.frames = 0
        self.connections_opened += 1
        url = conn.url
        if c.capture is not None:
            c.capture.write("ws_open", url, t=self.wall_ns())
        for sym in c.symbols:
            sym.event("ws_open", details={"url": url, "connection": c.number, "epoch": c.epoch})
        watchdog = asyncio.create_task(self._watchdog(c, conn))
        reason = "closed"
        code: int | None = None
        try:
            with contextlib.suppress(ConnectionLost):
                # A peer that closed at once may still have sent frames: read them below.
                for text in adapter.subscribe_messages(names, self.depth):
                    await conn.send(text)
                    if c.capture is not None:
                        c.capture.write("ws_sent", url, text, t=self.wall_ns())
            await self._read(c, conn)
            reason = c.reconnect_reason or "closed"
        except ConnectionLost as exc:
            code = exc.code
            reason = c.reconnect_reason or f"connection lost: {exc.reason or exc}"
        finally:
            watchdog.cancel()
            c.conn = None
            await conn.close(reason[:120])
            if c.capture is not None:
                c.capture.write("ws_close", url, reason, t=self.wall_ns())
                c.capture.flush()
            if self.replay_mode:
                waited = 0.0
                while waited < 10.0 and any(s.symbol in self._fetching for s in c.symbols):
                    await asyncio.sleep(0.02)
                    waited += 0.02
            c.epoch += 1  # snapshot fetches still in flight belonged to this session: dropped
            for sym in c.symbols:
                sym.event(
                    "ws_close",
                    reason=reason,
                    details={"code": code, "frames": c.frames, "connection": c.number},
                )
                if not self._stop.is_set():
                    sym.lost_connection(reason)
                self._fetching.discard(sym.symbol)

    async def _watchdog(self, c: _Connection, conn: WsConnection) -> None:
        ws = self.config.ws
        while not conn.closed:
            if await self._wait_stop(0.1):
                c.reconnect_reason = "shutdown"
                await conn.close("shutdown", 1001)
                return
            now = self.monotonic()
            silent = now - c.last_rx
            if silent >= ws.no_data_warn_s and not c.no_data_warned:
                c.no_data_warned = True
                for sym in c.symbols:
                    sym.event("no_data_warn", reason=f"no frame for {silent:.1f} s", level="WARNING")
            elif silent < ws.no_data_warn_s:
                c.no_data_warned = False
            if ws.no_data_reconnect_s is not None and silent >= ws.no_data_reconnect_s and not c.paused:
                c.reconnect_reason = f"no data for {silent:.1f} s"
                await conn.close("no data")
                return
            if ws.max_session_s is not None and now - c.opened >= ws.max_session_s:
                c.reconnect_reason = f"session older than WS_MAX_SESSION_S ({ws.max_session_s:g} s)"
                await conn.close("max session")
                return

    async def _read(self, c: _Connection, conn: WsConnection) -> None:
        recv = conn.recv
        parse = c.adapter.parse
        by_symbol = c.by_symbol
        capture = c.capture
        url = conn.url
        wall_ns = self.wall_ns
        monotonic = self.monotonic
        while c.reconnect_reason is None:
            text = await recv()
            t_ns = wall_ns()
            c.last_rx = monotonic()
            c.frames += 1
            self.frames += 1
            if capture is not None:
                capture.write("ws_recv", url, text, t=t_ns)
            try:
                events = parse(text)
            except ExchangeProtocolError as exc:
                for each in c.symbols:
                    each.bad_message(str(exc), text, t_ns)
                continue
            touched: SymbolRecorder | None = None
            ev: Any
            sym: SymbolRecorder | None
            for ev in events:
                kind = type(ev)
                if kind is BookDiff:
                    sym = by_symbol.get(ev.symbol)
                    if sym is not None:
                        sym.on_diff(ev, text, t_ns)
                        touched = sym
                elif kind is Trade:
                    sym = by_symbol.get(ev.symbol)
                    if sym is not None and not ev.snapshot:
                        sym.on_trade(ev, text, t_ns)
                        touched = sym
                elif kind is BookChecksum:
                    sym = by_symbol.get(ev.symbol)
                    if sym is not None:
                        sym.on_checksum(ev, text, t_ns)
                        touched = sym
                elif kind is BookSnapshot:
                    sym = by_symbol.get(ev.symbol)
                    if sym is not None and not c.paused:
                        sym.on_snapshot(ev, text, t_ns, source="ws")
                else:
                    self._other(c, ev, text)
            if touched is not None:
                # One symbol per frame is the rule on all three venues; flush them all otherwise.
                if len(events) > 1:
                    for sym in c.symbols:
                        sym.flush_live()
                else:
                    touched.flush_live()

    def _other(self, c: _Connection, ev: Any, text: str) -> None:
        kind = type(ev)
        if kind is Instrument:
            sym = c.by_symbol.get(ev.symbol)
            if sym is not None:
                sym.on_instrument(ev)
        elif kind is Ack:
            if ev.symbol is None:
                if not ev.ok:
                    for sym in c.symbols:
                        sym.event("subscription_refused", reason=ev.message, level="ERROR")
                return
            sym = c.by_symbol.get(ev.symbol)
            if sym is not None:
                sym.on_ack(ev)
        elif kind is SequenceBreak:
            for sym in c.symbols:
                sym.event(
                    "sequence_break",
                    reason="connection SEQ_ALL break",
                    details={"expected": ev.expected, "got": ev.got},
                    level="WARNING",
                )
                sym.on_break(ev)
        elif kind is VenueStatus:
            self._venue_status(c, ev)
        elif kind is Unknown:
            pass

    def _venue_status(self, c: _Connection, ev: VenueStatus) -> None:
        kind = ev.kind
        if kind in ("heartbeat", "pong", "info") or (kind == "status" and not c.paused):
            return
        details = {"kind": kind, "code": ev.code, "message": ev.message[:200]}
        for sym in c.symbols:
            sym.event("venue_status", tag=kind, reason=ev.message[:200], details=details, level="WARNING")
        if kind == "reconnect":
            c.reconnect_reason = f"venue asked to reconnect ({ev.message or ev.code})"
        elif kind == "maintenance" and not c.paused:
            c.paused = True
            for sym in c.symbols:
                sym.lost_connection("venue maintenance: paused")
        elif kind in ("resume", "status") and c.paused:
            c.reconnect_reason = "venue maintenance over: reconnect and resubscribe"

    # -- snapshots --------------------------------------------------------------------------------------
    def _request_snapshot(self, sym: SymbolRecorder, reason: str) -> None:
        c = self._conn_of[sym.symbol]
        conn = c.conn
        if conn is None or c.paused:
            return
        if c.adapter.snapshot_request(sym.symbol, self.depth) is not None:
            if sym.symbol not in self._fetching:
                self._fetching.add(sym.symbol)
                self._spawn(self._fetch(c, sym, c.epoch))
        else:
            self._spawn(self._resubscribe(c, conn, sym))

    async def _resubscribe(self, c: _Connection, conn: WsConnection, sym: SymbolRecorder) -> None:
        with contextlib.suppress(ConnectionLost):
            for text in c.adapter.resubscribe_messages(sym.symbol, self.depth):
                await conn.send(text)
                if c.capture is not None:
                    c.capture.write("ws_sent", conn.url, text, t=self.wall_ns())

    async def _fetch(self, c: _Connection, sym: SymbolRecorder, epoch: int) -> None:
        delays = backoff(self.config.ws.backoff_base_s, self.config.ws.backoff_cap_s)
        http = self._http
        assert http is not None
        try:
            while not self._stop.is_set() and c.epoch == epoch:
                request = c.adapter.snapshot_request(sym.symbol, self.depth)
                assert request is not None
                url = request.url + ("?" + urlencode(request.params) if request.params else "")
                try:
                    resp = await asyncio.to_thread(http.send, request)
                except RateLimited as exc:
                    delay = exc.retry_after if exc.retry_after is not None else next(delays)
                    sym.event(
                        "rate_limited",
                        reason=str(exc)[:300],
                        details={"status": exc.status, "retry_after_s": exc.retry_after},
                        level="WARNING",
                    )
                except MMDataError as exc:
                    delay = next(delays)
                    sym.event("snapshot_error", reason=str(exc)[:300], level="WARNING")
                else:
                    t_ns = self.wall_ns()
                    if c.capture is not None:
                        c.capture.write("rest", url, resp.text, status=resp.status, t=t_ns)
                    if c.epoch != epoch or self._stop.is_set():
                        return  # the connection it was for is gone; the next one asks again
                    try:
                        snap = c.adapter.parse_snapshot(sym.symbol, resp.text)
                    except ExchangeProtocolError as exc:
                        sym.bad_message(f"REST snapshot unusable: {exc}", resp.text, t_ns)
                        delay = next(delays)
                    else:
                        self._fetching.discard(sym.symbol)
                        sym.on_snapshot(snap, resp.text, t_ns, source="rest")
                        return
                if await self._wait_stop(delay):
                    return
        finally:
            if c.epoch == epoch:
                self._fetching.discard(sym.symbol)

    def _from_thread(self, loop: asyncio.AbstractEventLoop, kind: str, data: dict[str, Any]) -> None:
        # HttpClient runs in a worker thread: ledger rows are written on the loop's thread only.
        loop.call_soon_threadsafe(self._http_event, kind, data)

    def _http_event(self, kind: str, data: dict[str, Any]) -> None:
        url = str(data.get("url", ""))
        symbol = None
        for c in self.connections:
            symbol = c.adapter.rest_symbol(url) if url else None
            if symbol is not None:
                break
        targets = [self.symbols[symbol]] if symbol in self.symbols else list(self.symbols.values())
        safe = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None}
        for sym in targets:
            sym.event(f"http_{kind}", details=safe, level="WARNING")

    # -- housekeeping ----------------------------------------------------------------------------------
    async def _housekeeping(
        self, progress: Callable[[RecorderStatus], None] | None, progress_every_s: float
    ) -> None:
        config = self.config
        next_beat = self.monotonic() + config.heartbeat_s
        next_progress = self.monotonic()
        deadline = None if config.duration_s is None else self._started + config.duration_s
        while not await self._wait_stop(_TICK_S):
            now = self.monotonic()
            if self.wall_ns() / 1e9 >= self._next_boundary:
                self._update_window()
            for sym in self.symbols.values():
                sym.housekeeping(now)
            if now >= next_beat:
                next_beat = now + config.heartbeat_s
                rss = round(peak_rss_mb(), 1)
                for c in self.connections:
                    extra = {"connection": c.number, "frames": c.frames, "peak_rss_mb": rss}
                    for sym in c.symbols:
                        sym.heartbeat(extra)
            if progress is not None and now >= next_progress:
                next_progress = now + progress_every_s
                progress(self.status())
            if deadline is not None and now >= deadline:
                self._stop.set()


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    """Run the embedded simulator in-process and record from it (``--simulate``)."""

    seed: int = 0
    rate: float = 1.0
    faults: Any = None  # mmdata.sim.faults.FaultPlan
    replay: Path | None = None
    speed: float | None = None


async def record_async(
    config: RecorderConfig,
    *,
    simulate: SimulateOptions | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[RecorderStatus], None] | None = None,
    progress_every_s: float = 0.5,
    wall_ns: Callable[[], int] = time.time_ns,
    on_ready: Callable[[Recorder], None] | None = None,
) -> RecordSummary:
    """Run a recorder (and the simulator when asked) in the current event loop."""
    stop = stop or asyncio.Event()
    if simulate is None:
        recorder = Recorder(config, wall_ns=wall_ns)
        if on_ready is not None:
            on_ready(recorder)
        return await recorder.run(stop=stop, progress=progress, progress_every_s=progress_every_s)
    from mmdata.sim.replay import ReplayServer  # noqa: PLC0415 - only with --simulate
    from mmdata.sim.server import BaseLoopbackServer, SimServer  # noqa: PLC0415

    probe = exchanges.get(config.exchange)
    server: BaseLoopbackServer
    if simulate.replay is not None:
        server = ReplayServer(simulate.replay, speed=simulate.speed)
    else:
        names = [probe.normalize_symbol(s) for s in config.symbols]
        server = SimServer(
            config.exchange, names, seed=simulate.seed, rate=simulate.rate, faults=simulate.faults
        )
    async with server:
        config = replace(config, ws_url=server.venue_ws_url, rest_url=server.rest_url)
        recorder = Recorder(config, wall_ns=wall_ns)
        recorder.replay_mode = simulate.replay is not None
        if on_ready is not None:
            on_ready(recorder)
        return await recorder.run(stop=stop, progress=progress, progress_every_s=progress_every_s)


def record(
    config: RecorderConfig,
    *,
    simulate: SimulateOptions | None = None,
    progress: Callable[[RecorderStatus], None] | None = None,
    progress_every_s: float = 0.5,
) -> RecordSummary:
    """Record until ``--duration`` passes or SIGINT / SIGTERM (both shut down cleanly).

    A second SIGINT while shutting down interrupts at once (files already flushed stay
    readable: every flush is a complete gzip member).
    """

    async def main() -> RecordSummary:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        installed: list[signal.Signals] = []

        def on_signal(signum: signal.Signals) -> None:
            stop.set()
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or a platform without signal handlers
        try:
            return await record_async(
                config, simulate=simulate, stop=stop, progress=progress, progress_every_s=progress_every_s
            )
        finally:
            for signum in installed:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signum)

    return asyncio.run(main())
