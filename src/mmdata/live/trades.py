"""Live trades: Binance ``@trade``, Kraken ``trade``, Bitfinex ``trades`` (``te``).

:class:`TradeStream` delivers each live :class:`~mmdata.types.Trade` once, as the venue
sent it (exact price and quantity text, ``side`` = the taker's). The "recent trades"
snapshots venues send on subscribe (Bitfinex always, and again after every reconnect)
are not delivered: they repeat trades, and the live stream starts at the subscription.
Trades made while disconnected are not delivered either; the REST history endpoints
have them.

Threading, reconnects, callbacks and the queue are :class:`~mmdata.live.base.LiveStream`'s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mmdata.exchanges.base import StreamingExchange
from mmdata.live.base import LiveStream, Session
from mmdata.types import Event, Trade

__all__ = ["TradeStream"]


class TradeStream(LiveStream[str, Trade]):
    """Live trades of any number of symbols from one venue connection.

    >>> with TradeStream("binance") as stream:                      # doctest: +SKIP
    ...     stream.subscribe("BTC/USDT")
    ...     trades = stream.get_trade_updates(timeout=5)
    """

    kind = "trades"

    def subscribe(self, symbol: str, callback: Callable[[Trade], object] | None = None) -> None:
        """Follow ``symbol``'s trades; ``callback(trade)`` runs on the stream thread."""
        name = self._probe.normalize_symbol(symbol)
        self._add(name, callback)

    def unsubscribe(self, symbol: str) -> bool:
        """Stop following ``symbol``'s trades; False when not subscribed."""
        return self._remove(self._probe.normalize_symbol(symbol))

    def get_trade_updates(self, timeout: float | None = None) -> list[Trade]:
        """Every trade delivered since the last call; waits up to ``timeout`` s for at least one."""
        return self._take(timeout)

    def _frames(self, adapter: StreamingExchange, keys: Sequence[str], subscribe: bool) -> list[str]:
        if subscribe:
            return adapter.trade_subscribe_messages(keys)
        return adapter.trade_unsubscribe_messages(keys)

    def _on_events(self, events: list[Event], session: Session) -> None:
        for event in events:
            if type(event) is Trade and not event.snapshot and event.symbol in session.subscribed:
                self._deliver(event.symbol, event)
