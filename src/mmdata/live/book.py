"""Live order books, verified by the venue's own sync engine, delivered as top-N views.

:class:`BookStream` keeps one sans-I/O engine per symbol (the adapter's
``new_sync_engine``: :class:`~mmdata.book.sync.SequenceSync` for Binance,
:class:`~mmdata.book.sync.ChecksumSync` for Kraken and Bitfinex) and does the I/O the
engine asks for, the way the recorder does:

* it feeds every book event of the symbol (snapshots, diffs, ``cs`` checksums, Kraken
  instrument precisions, subscription acks) to the engine, and a Bitfinex ``SEQ_ALL``
  sequence break to every engine of the connection;
* ``NeedSnapshot``: Binance — ``GET /api/v3/depth`` through :class:`mmdata.net.http.HttpClient`
  (retries, ``Retry-After``, weight budget) in a worker thread, never awaited by the frame
  loop, built and parsed by the adapter (``snapshot_request`` / ``parse_snapshot``);
  Kraken and Bitfinex — the adapter's ``resubscribe_messages`` for that one symbol;
* a gap or checksum mismatch resyncs that symbol only (``stats.resyncs``);
* a new connection (or venue maintenance) resets every engine: no view is delivered
  until the book is proven again.

After each frame that changed a SYNCED book, the symbol's :class:`BookView` — the best
``levels`` levels per side, exact text — goes to the queue (:meth:`BookStream.get_book_updates`)
and the callbacks; :meth:`BookStream.view` returns the latest one from any thread. Nothing
is delivered while a book is not SYNCED.

Depth: Binance books are as deep as the REST snapshot (``depth``, default 1000, weight
50); Kraken subscribes ``depth`` ∈ {10, 25, 100, 500, 1000} (default 25); Bitfinex
``len`` ∈ {1, 25, 100, 250} (default 25; checksums cover the top 25).

Threading, reconnects, callbacks and the queue are :class:`~mmdata.live.base.LiveStream`'s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mmdata.book.sync import (
    BookUpdated,
    ChecksumMismatch,
    GapDetected,
    NeedSnapshot,
    SyncEngine,
    SyncOutput,
    SyncState,
    SyncStats,
)
from mmdata.errors import ConfigError, ExchangeProtocolError, MMDataError, RateLimited
from mmdata.exchanges.base import StreamingExchange
from mmdata.exchanges.binance import BinanceSpot, snapshot_weight
from mmdata.live.base import DEFAULT_QUEUE_SIZE, LiveStream, Session, log
from mmdata.net.backoff import backoff
from mmdata.net.http import HttpClient
from mmdata.net.ws import WsConfig
from mmdata.types import Ack, BookChecksum, BookDiff, BookSnapshot, Event, Instrument, SequenceBreak

__all__ = ["DEFAULT_DEPTHS", "BookStream", "BookView"]

#: Book depth per venue when none is given (see the module docstring).
DEFAULT_DEPTHS = {"binance": 1000, "kraken": 25, "bitfinex": 25}

_BOOK_EVENTS = (BookDiff, BookSnapshot, BookChecksum, Instrument, Ack)


@dataclass(frozen=True, slots=True)
class BookView:
    """The best levels of a verified (SYNCED) book: ``(price, qty)`` exact text, best first.

    ``ts_ms`` is the venue time of the last update applied (None when the venue gave none,
    e.g. right after a REST snapshot).
    """

    exchange: str
    symbol: str
    state: SyncState
    bids: tuple[tuple[str, str], ...]
    asks: tuple[tuple[str, str], ...]
    ts_ms: int | None


class BookStream(LiveStream[str, BookView]):
    """Verified books of any number of symbols from one venue connection (module docstring).

    ``levels`` is N of the top-N views; ``depth`` the venue book depth (default per venue,
    :data:`DEFAULT_DEPTHS`); ``http`` an :class:`~mmdata.net.http.HttpClient` for Binance
    snapshots (one is made, and closed at stop, when not given).

    >>> with BookStream("kraken", levels=5) as stream:              # doctest: +SKIP
    ...     stream.subscribe("BTC/USD")
    ...     views = stream.get_book_updates(timeout=5)
    """

    kind = "book"

    def __init__(
        self,
        exchange: str,
        *,
        levels: int = 10,
        depth: int | None = None,
        url: str | None = None,
        rest_url: str | None = None,
        ws_config: WsConfig | None = None,
        http: HttpClient | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if levels < 1:
            raise ConfigError(f"levels must be >= 1, got {levels}")
        name = exchange.strip().lower()
        self.levels = levels
        self.depth = depth if depth is not None else DEFAULT_DEPTHS.get(name, 25)
        super().__init__(exchange, url=url, rest_url=rest_url, ws_config=ws_config, queue_size=queue_size)
        self._http = http
        self._own_http = http is None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._engines: dict[str, SyncEngine] = {}  # stream thread only
        self._views: dict[str, BookView] = {}

    # -- public --------------------------------------------------------------------------------------
    def subscribe(self, symbol: str, callback: Callable[[BookView], object] | None = None) -> None:
        """Follow ``symbol``'s book; ``callback(view)`` runs on the stream thread for every SYNCED update."""
        name = self._probe.normalize_symbol(symbol)
        self._new_adapter().book_subscribe_messages([name], self.depth)  # the venue's own checks
        self._add(name, callback)

    def unsubscribe(self, symbol: str) -> bool:
        """Stop following ``symbol``'s book; False when not subscribed."""
        name = self._probe.normalize_symbol(symbol)
        with self._lock:
            self._views.pop(name, None)
        return self._remove(name)

    def get_book_updates(self, timeout: float | None = None) -> list[BookView]:
        """Every view delivered since the last call; waits up to ``timeout`` s for at least one."""
        return self._take(timeout)

    def sync_stats(self, symbol: str) -> SyncStats | None:
        """A copy of ``symbol``'s engine counters (checksums verified, gaps, …), None if unknown."""
        engine = self._engines.get(self._probe.normalize_symbol(symbol))
        if engine is None:
            return None
        stats = engine.stats
        return dataclasses.replace(stats, problems=list(stats.problems))

    def view(self, symbol: str) -> BookView | None:
        """The latest view delivered for ``symbol`` (None before its book was first SYNCED)."""
        name = self._probe.normalize_symbol(symbol)
        with self._lock:
            return self._views.get(name)

    # -- LiveStream hooks (stream thread) ------------------------------------------------------------
    def _new_adapter(self) -> StreamingExchange:
        adapter = super()._new_adapter()
        if isinstance(adapter, BinanceSpot):
            # The REST snapshot exactly as deep as asked (weight 50 at 1000, 250 at 5000).
            snapshot_weight(self.depth)  # ConfigError outside 1-5000
            adapter.snapshot_limit = self.depth
        return adapter

    def _frames(self, adapter: StreamingExchange, keys: Sequence[str], subscribe: bool) -> list[str]:
        if subscribe:
            return adapter.book_subscribe_messages(keys, self.depth)
        return adapter.book_unsubscribe_messages(keys, self.depth)

    def _opened(self, key: str, session: Session) -> None:
        engine = self._engines.get(key)
        if engine is None:
            self._engines[key] = session.adapter.new_sync_engine(key, self.depth)
        else:
            engine.reset("reconnect")

    def _closed_key(self, key: str) -> None:
        engine = self._engines.pop(key, None)
        if engine is not None:
            engine.stop("unsubscribed")

    def _session_ended(self, session: Session) -> None:
        for engine in self._engines.values():
            engine.reset("connection closed")

    def _paused(self, session: Session) -> None:
        for engine in self._engines.values():
            engine.reset("venue maintenance")

    def _on_events(self, events: list[Event], session: Session) -> None:
        changed: dict[str, int | None] = {}
        engines = self._engines
        for event in events:
            if isinstance(event, _BOOK_EVENTS):
                symbol = event.symbol
                engine = engines.get(symbol) if symbol is not None else None
                if symbol is not None and engine is not None and symbol in session.subscribed:
                    ts_ms = getattr(event, "ts_ms", None)
                    self._outputs(symbol, engine, engine.receive(event), session, changed, ts_ms=ts_ms)
            elif type(event) is SequenceBreak:
                for symbol, engine in list(engines.items()):
                    self._outputs(symbol, engine, engine.receive(event), session, changed, ts_ms=None)
        for symbol, ts_ms in changed.items():
            self._publish(symbol, ts_ms)

    def _outputs(
        self,
        symbol: str,
        engine: SyncEngine,
        outputs: Sequence[SyncOutput],
        session: Session,
        changed: dict[str, int | None],
        *,
        ts_ms: int | None,
    ) -> None:
        """Act on what the engine asks for; note symbols whose SYNCED book changed."""
        for out in outputs:
            kind = type(out)
            if kind is BookUpdated:
                if engine.state is SyncState.SYNCED:
                    changed[symbol] = ts_ms
            elif kind is NeedSnapshot:
                self._need_snapshot(symbol, session)
            elif kind is GapDetected or kind is ChecksumMismatch:
                self._stats.resyncs += 1
                log.info("%s %s: %s, resyncing", self.exchange, symbol, out)

    def _publish(self, symbol: str, ts_ms: int | None) -> None:
        engine = self._engines.get(symbol)
        if engine is None or engine.state is not SyncState.SYNCED:
            return
        bids, asks = engine.book.top(self.levels)
        view = BookView(self.exchange, symbol, engine.state, tuple(bids), tuple(asks), ts_ms)
        with self._lock:
            if symbol not in self._subs:
                return
            self._views[symbol] = view
        self._deliver(symbol, view)

    # -- snapshots -----------------------------------------------------------------------------------
    def _need_snapshot(self, symbol: str, session: Session) -> None:
        if session.paused or self._session is not session:
            return
        adapter = session.adapter
        if adapter.snapshot_request(symbol, self.depth) is None:
            session.send(adapter.resubscribe_messages(symbol, self.depth))  # Kraken, Bitfinex
        elif symbol not in session.fetching:
            session.fetching[symbol] = asyncio.ensure_future(self._fetch(symbol, session))

    async def _fetch(self, symbol: str, session: Session) -> None:
        """Binance: fetch the REST snapshot until one is accepted, the connection ends or we stop."""
        me = asyncio.current_task()
        config = self.ws_config
        delays = backoff(config.backoff_base_s, config.backoff_cap_s)
        loop = asyncio.get_running_loop()
        try:
            while self._session is session and symbol in self._engines:
                request = session.adapter.snapshot_request(symbol, self.depth)
                assert request is not None
                try:
                    response = await loop.run_in_executor(self._workers(), self._client().send, request)
                except RateLimited as exc:
                    self._stats.errors += 1
                    delay = exc.retry_after if exc.retry_after is not None else next(delays)
                    log.warning("%s %s: snapshot rate limited: %s", self.exchange, symbol, exc)
                except MMDataError as exc:
                    self._stats.errors += 1
                    delay = next(delays)
                    log.warning("%s %s: snapshot failed: %s", self.exchange, symbol, exc)
                else:
                    engine = self._engines.get(symbol)
                    if self._session is not session or engine is None:
                        return  # its connection is gone: the next one asks again
                    try:
                        snapshot = session.adapter.parse_snapshot(symbol, response.text)
                    except ExchangeProtocolError as exc:
                        self._stats.errors += 1
                        delay = next(delays)
                        log.warning("%s %s: snapshot unusable: %s", self.exchange, symbol, exc)
                    else:
                        del session.fetching[symbol]  # a refetch the engine asks for starts anew
                        changed: dict[str, int | None] = {}
                        self._outputs(symbol, engine, engine.receive(snapshot), session, changed, ts_ms=None)
                        if symbol in changed:
                            self._publish(symbol, None)
                        return
                if await self._wait_stop(delay):
                    return
        finally:
            if session.fetching.get(symbol) is me:
                del session.fetching[symbol]

    def _client(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(
                retries=2, max_wait_s=60.0, weight_limit_1m=6000, sleep=self._blocking_sleep
            )
        return self._http

    def _workers(self) -> concurrent.futures.ThreadPoolExecutor:
        # Our own pool: asyncio.run would wait for the default one, so stop() could not be prompt.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mmdata-live-rest")
        return self._executor

    async def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        if self._own_http and self._http is not None:
            self._http.close()
            self._http = None
