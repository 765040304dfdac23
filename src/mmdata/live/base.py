"""The machinery every live stream shares: a thread with its own event loop, one reconnecting
WebSocket, subscriptions, callbacks and a polling queue.

Theory of operation
-------------------
A :class:`LiveStream` is used from ordinary (synchronous) code. ``start()`` launches a
daemon thread that runs an asyncio loop; everything that touches the socket, the venue
adapter or a sync engine runs on that loop, and nowhere else. The public methods are
thread-safe and only hand work to the loop:

* ``subscribe`` / ``unsubscribe`` record the subscription under a lock and, while
  running, schedule the subscribe (unsubscribe) frames on the live connection with
  :meth:`asyncio.AbstractEventLoop.call_soon_threadsafe`. Subscribing before ``start()``
  is fine: the first connection subscribes everything.
* Each delivered item (a :class:`~mmdata.types.Candle`, :class:`~mmdata.types.Trade`,
  or book view) goes into a bounded queue read by ``get_*_updates(timeout)`` — block up
  to ``timeout`` seconds for at least one item, then return every queued item — and to
  the subscription's callbacks, which run **on the stream thread**, in order. A callback
  must be quick (it holds up the socket) and must not call ``stop()`` and wait; one that
  raises is logged (logger ``mmdata.live``) and counted in ``stats.callback_errors``,
  and the stream carries on. When the queue is full the oldest item is dropped
  (``stats.dropped``); ``queue_size=0`` turns the queue off for callback-only use.
* ``stop()`` sets the loop's stop event (which also interrupts a backoff wait or a
  connect attempt at once), wakes any ``get_*_updates`` caller, and joins the thread.
  It is idempotent; the stream is also a context manager.

Connections: one at a time, opened once something is subscribed, to the adapter's
:meth:`~mmdata.exchanges.base.StreamingExchange.live_url`, through
:func:`mmdata.net.ws.reconnecting` (jittered exponential backoff from
``WsConfig.backoff_base_s`` to ``backoff_cap_s``, reset after a connection that
worked). Every connection gets a fresh venue adapter (Bitfinex channel ids and
sequence numbers, candle ``closed`` tracking are per connection) and subscribes
*everything* subscribed at that moment, so a reconnect resubscribes by construction.
Outgoing frames go through one sender per connection, spaced by the adapter's
``min_send_interval_s`` (Binance: 5 incoming messages a second is its limit). A
connection is also dropped and reopened when nothing arrived for
``WsConfig.no_data_reconnect_s``, after ``max_session_s``, when the venue asks for it
(Binance ``serverShutdown``, Bitfinex 20051), and when a venue maintenance ends
(Bitfinex 20061, Kraken ``status`` back ``online``).

Subclasses (:mod:`mmdata.live.candles`, :mod:`~mmdata.live.trades`,
:mod:`~mmdata.live.book`) say what a subscription key is, which frames subscribe a set
of keys, and what to do with parsed events.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

from mmdata import exchanges
from mmdata.errors import ConfigError, ConnectionLost, ExchangeProtocolError
from mmdata.exchanges.base import StreamingExchange
from mmdata.net.ws import WsConfig, WsConnection, reconnecting
from mmdata.types import Ack, Event, VenueStatus

__all__ = ["LiveStream", "StreamStats"]

log = logging.getLogger("mmdata.live")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

#: Items kept for ``get_*_updates`` before the oldest are dropped.
DEFAULT_QUEUE_SIZE = 100_000


@dataclass(slots=True)
class StreamStats:
    """Counters of one stream (read a copy with :attr:`LiveStream.stats`).

    ``errors`` counts frames that could not be parsed, failed connection attempts,
    subscriptions the venue refused and failed REST snapshots; ``resyncs`` counts book
    gaps and checksum mismatches (book streams only).
    """

    connects: int = 0
    reconnects: int = 0
    messages: int = 0
    errors: int = 0
    callback_errors: int = 0
    delivered: int = 0
    dropped: int = 0
    resyncs: int = 0


class Session:
    """One open connection: its adapter, what it subscribed, its outgoing frames."""

    __slots__ = (
        "adapter",
        "conn",
        "fetching",
        "last_rx",
        "opened",
        "out",
        "paused",
        "reconnect_reason",
        "subscribed",
    )

    def __init__(self, conn: WsConnection, adapter: StreamingExchange, now: float) -> None:
        self.conn = conn
        self.adapter = adapter
        self.subscribed: set[Any] = set()
        self.out: asyncio.Queue[str] = asyncio.Queue()
        self.opened = now
        self.last_rx = now
        self.paused = False  # venue maintenance: no data expected
        self.reconnect_reason: str | None = None
        self.fetching: dict[str, asyncio.Task[None]] = {}  # book streams: REST snapshots in flight

    def send(self, frames: Sequence[str]) -> None:
        """Queue frames for this connection's sender (in order)."""
        for frame in frames:
            self.out.put_nowait(frame)


class LiveStream(abc.ABC, Generic[K, T]):
    """Thread, loop, reconnecting connection, subscriptions, callbacks and queue (module docstring).

    ``exchange`` is ``binance``, ``kraken`` or ``bitfinex``; ``url`` replaces the venue's
    WebSocket base (e.g. a simulator's ``venue_ws_url``), ``rest_url`` its REST base.
    """

    #: What the stream delivers, for thread names and log lines.
    kind = "stream"

    def __init__(
        self,
        exchange: str,
        *,
        url: str | None = None,
        rest_url: str | None = None,
        ws_config: WsConfig | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if queue_size < 0:
            raise ConfigError(f"queue_size must be >= 0, got {queue_size}")
        self.exchange = exchange.strip().lower()
        self.url = url
        self.rest_url = rest_url
        self.ws_config = ws_config or WsConfig()
        self._probe = self._new_adapter()  # ConfigError for an unknown venue, early
        #: True while a connection is open.
        self.connected = False
        self._stats = StreamStats()
        self._lock = threading.RLock()
        self._subs: dict[K, list[Callable[[T], object]]] = {}
        self._items: deque[T] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = threading.Event()  # for blocking work in worker threads (REST retries)
        self._session: Session | None = None
        self._ever_connected = False

    # -- public --------------------------------------------------------------------------------------
    @property
    def stats(self) -> StreamStats:
        """A copy of the counters."""
        return dataclasses.replace(self._stats)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start the stream thread (no-op while running). Connects once something is subscribed."""
        with self._lock:
            if self.running:
                return
            self._stopping.clear()
            with self._cond:
                self._closed = False
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name=f"mmdata-live-{self.kind}-{self.exchange}", daemon=True
            )
            self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """Close the connection and end the thread (waits up to ``timeout`` s). Idempotent.

        From a callback (the stream thread itself) it only asks the loop to stop.
        """
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            self._stopping.set()
            self._call_soon(self._set_stop)
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if thread is threading.current_thread():
                return
            self._thread = None
        thread.join(timeout)
        if thread.is_alive():
            log.warning("%s %s stream thread did not end within %.1f s", self.exchange, self.kind, timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def subscriptions(self) -> list[K]:
        """The subscription keys, in the order subscribed."""
        with self._lock:
            return list(self._subs)

    # -- for subclasses' public methods --------------------------------------------------------------
    def _new_adapter(self) -> StreamingExchange:
        adapter = exchanges.get(self.exchange, ws_base=self.url, rest_base=self.rest_url)
        if not isinstance(adapter, StreamingExchange):  # pragma: no cover - every adapter is one
            raise ConfigError(f"{self.exchange} cannot be streamed")
        return adapter

    def _add(self, key: K, callback: Callable[[T], object] | None) -> None:
        with self._lock:
            callbacks = self._subs.get(key)
            fresh = callbacks is None
            if callbacks is None:
                callbacks = self._subs[key] = []
            if callback is not None:
                callbacks.append(callback)
        if fresh:
            self._call_soon(self._subscribe_now, key)

    def _remove(self, key: K) -> bool:
        with self._lock:
            existed = self._subs.pop(key, None) is not None
        if existed:
            self._call_soon(self._unsubscribe_now, key)
        return existed

    def _take(self, timeout: float | None) -> list[T]:
        """Wait up to ``timeout`` s (forever when None, until stop) for an item; return all queued."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait_for(lambda: bool(self._items) or self._closed, timeout)
            items = list(self._items)
            self._items.clear()
        return items

    # -- hooks ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _frames(self, adapter: StreamingExchange, keys: Sequence[K], subscribe: bool) -> list[str]:
        """Frames (un)subscribing ``keys`` on a connection served by ``adapter``."""

    @abc.abstractmethod
    def _on_events(self, events: list[Event], session: Session) -> None:
        """Events parsed from one frame (stream thread)."""

    def _opened(self, key: K, session: Session) -> None:
        """``key`` is being subscribed on ``session`` (stream thread)."""

    def _closed_key(self, key: K) -> None:
        """``key`` was unsubscribed (stream thread)."""

    def _session_ended(self, session: Session) -> None:
        """``session``'s connection is gone (stream thread)."""

    def _paused(self, session: Session) -> None:
        """The venue announced maintenance on ``session`` (stream thread)."""

    # -- delivery (stream thread) --------------------------------------------------------------------
    def _deliver(self, key: K, item: T) -> None:
        """Queue ``item`` and run ``key``'s callbacks; nothing if ``key`` is no longer subscribed."""
        with self._lock:
            callbacks = self._subs.get(key)
            if callbacks is None:
                return
            callbacks = list(callbacks)
        stats = self._stats
        stats.delivered += 1
        if self._queue_size:
            with self._cond:
                if len(self._items) >= self._queue_size:
                    self._items.popleft()
                    stats.dropped += 1
                self._items.append(item)
                self._cond.notify_all()
        for callback in callbacks:
            try:
                callback(item)
            except Exception:  # a user's bug must not end the stream
                stats.callback_errors += 1
                log.exception("%s %s callback for %r raised", self.exchange, self.kind, key)

    # -- the loop ------------------------------------------------------------------------------------
    def _call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to do
                loop.call_soon_threadsafe(fn, *args)

    def _set_stop(self) -> None:
        if self._stop_event is not None:
            self._stop_event.set()

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except Exception:  # pragma: no cover - a bug: say so rather than die silently
            log.exception("%s %s stream thread failed", self.exchange, self.kind)
        finally:
            self.connected = False
            self._loop = None
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        ready.set()
        try:
            await self._connect_forever(self._stop_event, self._wake)
        finally:
            self._loop = None
            await self._shutdown()

    async def _shutdown(self) -> None:
        """Release what the subclass holds (stream thread, loop still running)."""

    def _has_subs(self) -> bool:
        with self._lock:
            return bool(self._subs)

    async def _connect_forever(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._has_subs():
                wake.clear()
                if not self._has_subs():
                    await _first(stop.wait(), wake.wait())
                continue
            sessions = reconnecting(
                self._probe.live_url(), self.ws_config, stop=stop, on_retry=self._on_retry
            )
            try:
                async for conn in sessions:
                    await self._session_run(conn, stop)
                    if stop.is_set() or not self._has_subs():
                        break
            finally:
                await sessions.aclose()  # type: ignore[attr-defined]

    def _on_retry(self, exc: Exception, delay: float) -> None:
        self._stats.errors += 1
        log.warning("%s %s: %s; retrying in %.2f s", self.exchange, self.kind, exc, delay)

    async def _session_run(self, conn: WsConnection, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        session = Session(conn, self._new_adapter(), loop.time())
        stats = self._stats
        stats.connects += 1
        if self._ever_connected:
            stats.reconnects += 1
        self._ever_connected = True
        self._session = session
        self.connected = True
        log.info("%s %s connected to %s", self.exchange, self.kind, conn.url)
        with self._lock:
            keys = list(self._subs)
        for key in keys:
            session.subscribed.add(key)
            self._opened(key, session)
        if keys:
            session.send(self._frames(session.adapter, keys, True))
        tasks = [
            asyncio.ensure_future(self._read(session)),
            asyncio.ensure_future(self._send_loop(session)),
            asyncio.ensure_future(self._watch(session)),
            asyncio.ensure_future(stop.wait()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if stop.is_set() and session.reconnect_reason is None:
                session.reconnect_reason = "stopped"
            self._session = None
            self.connected = False
            for task in list(session.fetching.values()):
                task.cancel()
            await conn.close(session.reconnect_reason or "client close")
            self._session_ended(session)
            log.info(
                "%s %s disconnected (%s)", self.exchange, self.kind, session.reconnect_reason or "closed"
            )

    async def _read(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        parse = session.adapter.parse
        stats = self._stats
        while session.reconnect_reason is None:
            try:
                text = await session.conn.recv()
            except ConnectionLost as exc:
                session.reconnect_reason = f"connection lost: {exc.reason or exc}"
                return
            session.last_rx = loop.time()
            stats.messages += 1
            try:
                events = parse(text)
            except ExchangeProtocolError as exc:
                stats.errors += 1
                log.debug("%s %s: bad frame: %s", self.exchange, self.kind, exc)
                continue
            try:
                for event in events:
                    kind = type(event)
                    if kind is VenueStatus:
                        self._venue_status(event, session)  # type: ignore[arg-type]
                    elif kind is Ack and not event.ok:  # type: ignore[union-attr]
                        stats.errors += 1
                        log.warning("%s %s: venue refused: %s", self.exchange, self.kind, event)
                self._on_events(events, session)
            except Exception:  # a bug in handling one frame must not end the stream
                stats.errors += 1
                log.exception("%s %s: failed to handle a frame", self.exchange, self.kind)

    def _venue_status(self, status: VenueStatus, session: Session) -> None:
        kind = status.kind
        if kind == "reconnect":
            session.reconnect_reason = f"venue asked to reconnect ({status.message or status.code})"
        elif kind == "maintenance" and not session.paused:
            session.paused = True
            log.warning("%s %s: venue maintenance (%s)", self.exchange, self.kind, status.message)
            self._paused(session)
        elif kind in ("resume", "status") and session.paused:
            session.reconnect_reason = "venue maintenance over: reconnect and resubscribe"

    async def _send_loop(self, session: Session) -> None:
        gap = session.adapter.min_send_interval_s
        while True:
            frame = await session.out.get()
            try:
                await session.conn.send(frame)
            except ConnectionLost:
                return  # the reader sees the end too
            if gap > 0:
                await asyncio.sleep(gap)

    async def _watch(self, session: Session) -> None:
        config = self.ws_config
        loop = asyncio.get_running_loop()
        warned = False
        while True:
            await asyncio.sleep(0.25)
            now = loop.time()
            silent = now - session.last_rx
            if silent >= config.no_data_warn_s and not warned and not session.paused:
                warned = True
                log.warning("%s %s: no data for %.1f s", self.exchange, self.kind, silent)
            elif silent < config.no_data_warn_s:
                warned = False
            if (
                config.no_data_reconnect_s is not None
                and silent >= config.no_data_reconnect_s
                and not session.paused
            ):
                session.reconnect_reason = f"no data for {silent:.1f} s"
                return
            if config.max_session_s is not None and now - session.opened >= config.max_session_s:
                session.reconnect_reason = "connection older than max_session_s"
                return

    # -- subscription changes on the loop ------------------------------------------------------------
    def _subscribe_now(self, key: K) -> None:
        if self._wake is not None:
            self._wake.set()
        session = self._session
        with self._lock:
            if key not in self._subs:
                return  # unsubscribed again meanwhile
        if session is None or key in session.subscribed:
            return  # the next connection subscribes it
        session.subscribed.add(key)
        self._opened(key, session)
        session.send(self._frames(session.adapter, [key], True))

    def _unsubscribe_now(self, key: K) -> None:
        with self._lock:
            if key in self._subs:
                return  # subscribed again meanwhile
        self._closed_key(key)
        session = self._session
        if session is not None and key in session.subscribed:
            session.subscribed.discard(key)
            session.send(self._frames(session.adapter, [key], False))

    async def _wait_stop(self, delay: float) -> bool:
        """Sleep ``delay`` s unless stopping first; True when stopping."""
        stop = self._stop_event
        if stop is None:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        return stop.is_set()

    def _blocking_sleep(self, seconds: float) -> None:
        """A sleep for worker threads that ends early when the stream stops."""
        self._stopping.wait(seconds)


async def _first(*awaitables: Any) -> None:
    """Wait until the first of ``awaitables`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
