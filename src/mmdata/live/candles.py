"""Live candles from Binance klines, Kraken ``ohlc`` and Bitfinex ``candles``.

:class:`CandleStream` delivers :class:`~mmdata.types.Candle` events — exact decimal text,
``interval`` as mmdata names it (``1m 5m 15m 1h 4h 1D 1W``; each venue adds its own, see
the adapters' ``candle_intervals``) — for every subscribed ``(symbol, interval)``:

* the running candle each time the venue updates it (``closed=False``): Binance every
  2 s, Kraken and Bitfinex on trades;
* the finished candle once with ``closed=True``: Binance's ``x`` flag; on Kraken and
  Bitfinex, which send no such flag, when the first candle of a later interval arrives
  (the adapter then re-emits the previous candle as last seen, ``closed=True``);
* the venue's snapshot after each subscribe (Kraken: recent candles, Bitfinex: up to a
  few hundred, newest last here), older candles ``closed=True``.

A closed candle is delivered at most once per subscription: after a reconnect the
venue's snapshot repeats candles already closed, and those (any candle not newer than
the newest closed one delivered) are dropped. Candles that closed while disconnected
are delivered if the snapshot still holds them (Kraken, Bitfinex); Binance has no
snapshot, so its close of an interval spent disconnected is lost (fetch REST klines).

Threading, reconnects, callbacks and the queue are :class:`~mmdata.live.base.LiveStream`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmdata.errors import ConfigError
from mmdata.exchanges.base import StreamingExchange
from mmdata.live.base import DEFAULT_QUEUE_SIZE, LiveStream, Session
from mmdata.net.ws import WsConfig
from mmdata.types import Candle, Event

__all__ = ["CandleStream"]

CandleKey = tuple[str, str]


class CandleStream(LiveStream[CandleKey, Candle]):
    """Candles of any number of ``(symbol, interval)`` from one venue connection.

    >>> with CandleStream("kraken") as stream:                      # doctest: +SKIP
    ...     stream.subscribe("BTC/USD", "1m", callback=print)
    ...     candles = stream.get_candle_updates(timeout=5)
    """

    kind = "candles"

    def __init__(
        self,
        exchange: str,
        *,
        url: str | None = None,
        rest_url: str | None = None,
        ws_config: WsConfig | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        super().__init__(exchange, url=url, rest_url=rest_url, ws_config=ws_config, queue_size=queue_size)
        self._closed_through: dict[CandleKey, int] = {}  # stream thread only

    def subscribe(
        self, symbol: str, timeframe: str, callback: Callable[[Candle], object] | None = None
    ) -> None:
        """Follow ``symbol``'s ``timeframe`` candles (``1m`` … ``1W``); ``callback(candle)`` runs on
        the stream thread. Before or after :meth:`start`; ConfigError for a symbol or
        interval the venue cannot have."""
        key = self._key(symbol, timeframe)
        self._add(key, callback)

    def unsubscribe(self, symbol: str, timeframe: str) -> bool:
        """Stop following those candles (all callbacks); False when not subscribed."""
        return self._remove(self._key(symbol, timeframe))

    def get_candle_updates(self, timeout: float | None = None) -> list[Candle]:
        """Every candle delivered since the last call; waits up to ``timeout`` s for at least one
        (``None``: until one arrives or the stream stops)."""
        return self._take(timeout)

    def _key(self, symbol: str, timeframe: str) -> CandleKey:
        if not isinstance(timeframe, str) or timeframe not in self._probe.candle_intervals:
            known = ", ".join(self._probe.candle_intervals)
            raise ConfigError(f"{self.exchange} has no {timeframe!r} candles; intervals: {known}")
        name = self._probe.normalize_symbol(symbol)
        self._new_adapter().candle_subscribe_messages([name], timeframe)  # the venue's own checks
        return name, timeframe

    def _frames(self, adapter: StreamingExchange, keys: Sequence[CandleKey], subscribe: bool) -> list[str]:
        by_interval: dict[str, list[str]] = {}
        for symbol, interval in keys:
            by_interval.setdefault(interval, []).append(symbol)
        build = adapter.candle_subscribe_messages if subscribe else adapter.candle_unsubscribe_messages
        return [frame for interval, symbols in by_interval.items() for frame in build(symbols, interval)]

    def _closed_key(self, key: CandleKey) -> None:
        self._closed_through.pop(key, None)

    def _on_events(self, events: list[Event], session: Session) -> None:
        closed_through = self._closed_through
        for event in events:
            if type(event) is not Candle:
                continue
            key = (event.symbol, event.interval)
            if key not in session.subscribed:
                continue
            newest_closed = closed_through.get(key)
            if newest_closed is not None and event.open_time_ms <= newest_closed:
                continue  # closed and delivered already (a snapshot repeating history)
            if event.closed:
                closed_through[key] = event.open_time_ms
            self._deliver(key, event)
