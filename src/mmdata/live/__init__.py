"""Live market data from the venues' WebSockets (or the simulator) for ordinary, threaded code.

Three streams share one machinery (:class:`~mmdata.live.base.LiveStream`: a background
thread with its own asyncio loop, one reconnecting connection, resubscribe after every
reconnect, callbacks on the stream thread and a polling queue):

* :class:`CandleStream` — ``subscribe(symbol, timeframe)`` → :class:`~mmdata.types.Candle`;
* :class:`TradeStream` — ``subscribe(symbol)`` → :class:`~mmdata.types.Trade`;
* :class:`BookStream` — ``subscribe(symbol)`` → :class:`BookView` of a checksum- or
  sequence-verified local book, only while it is SYNCED.

::

    from mmdata.live import CandleStream

    with CandleStream("binance") as stream:        # url=sim.venue_ws_url for the simulator
        stream.subscribe("BTC/USDT", "1m")
        for candle in stream.get_candle_updates(timeout=10):
            print(candle.open_time_ms, candle.close, candle.closed)

Prices and quantities are the venue's exact decimal text throughout. ``docs/live.md``
has the threading model, the reconnect policy and each venue's candle semantics.
"""

from mmdata.live.base import LiveStream, StreamStats
from mmdata.live.book import BookStream, BookView
from mmdata.live.candles import CandleStream
from mmdata.live.trades import TradeStream

__all__ = ["BookStream", "BookView", "CandleStream", "LiveStream", "StreamStats", "TradeStream"]
