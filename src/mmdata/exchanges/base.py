"""The ``Exchange`` contract every venue adapter implements (ARCHITECTURE.md §3).

Adapters are *pure*: they build URLs, subscribe messages and REST requests, and parse
wire text into :mod:`mmdata.types` events. They never open a socket or a file; nothing
under ``mmdata.exchanges`` imports ``websockets`` or ``requests``.

An adapter instance belongs to one connection: Bitfinex maps channel ids to symbols
and checks the connection-wide ``SEQ_ALL`` counter, so :func:`mmdata.exchanges.get`
returns a fresh instance on every call.

``parse`` never lets venue garbage escape as a random exception: a well-formed frame
mmdata does not use becomes :class:`~mmdata.types.Unknown`; a malformed, foreign or
impossible frame raises :class:`~mmdata.errors.ExchangeProtocolError`, which callers
count as a bad message and carry on.

:class:`StreamingExchange` adds what a live client (:mod:`mmdata.live`) needs to open one
connection and then subscribe and unsubscribe channel by channel: book, trades and
candles, each with its own subscribe / unsubscribe frames. Candle intervals are named the
mmdata way (``1m 5m 15m 1h 4h 1D 1W``, plus what each venue adds) and mapped to the
venue's spelling by each adapter's ``candle_intervals``.

Kraken and Bitfinex candles carry no "closed" flag: :class:`CandleCloser` marks a candle
closed when a later interval's candle of the same symbol and interval arrives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from mmdata.book.sync import SyncEngine
from mmdata.types import BookSnapshot, Candle, Event, HttpRequest

__all__ = ["MAX_FRAME_CHARS", "CandleCloser", "Exchange", "StreamingExchange", "symbol_fs"]

#: Longest frame any adapter parses; longer text is rejected before decoding (a real
#: venue frame is at most a few hundred KB; a Kraken instrument snapshot ~1 MB).
MAX_FRAME_CHARS = 8 * 1024 * 1024

_FS_DROP = str.maketrans("", "", "/-: ")


def symbol_fs(symbol: str) -> str:
    """File-system form of a symbol: ``/``, ``-``, ``:`` and spaces removed (``BTC/USD`` → ``BTCUSD``)."""
    return symbol.translate(_FS_DROP)


@runtime_checkable
class Exchange(Protocol):
    """One venue's wire protocol, without I/O."""

    name: str
    ws_base: str
    rest_base: str

    def normalize_symbol(self, text: str) -> str:
        """The venue's own spelling of a user-typed symbol (``btc/usdt`` → ``BTCUSDT`` on Binance).

        Raises :class:`~mmdata.errors.ConfigError` for text that cannot be a symbol here.
        """
        ...

    def ws_url(self, symbols: Sequence[str]) -> str:
        """WebSocket URL to connect to for these symbols."""
        ...

    def subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Text frames to send after connecting (empty for Binance combined streams)."""
        ...

    def parse(self, frame: str) -> list[Event]:
        """Events in one received frame; raises ExchangeProtocolError for malformed/foreign frames."""
        ...

    def resubscribe_messages(self, symbol: str, depth: int) -> list[str]:
        """Frames that get one symbol a fresh book snapshot over the socket (empty for Binance)."""
        ...

    def snapshot_request(self, symbol: str, depth: int) -> HttpRequest | None:
        """REST request for a book snapshot, or None where snapshots come over the socket."""
        ...

    def parse_snapshot(self, symbol: str, body: str) -> BookSnapshot:
        """Parse a REST snapshot body; raises ExchangeProtocolError when it is not one."""
        ...

    def rest_symbol(self, url: str) -> str | None:
        """The symbol a REST snapshot URL is about (to route recorded REST answers), else None."""
        ...

    def new_sync_engine(self, symbol: str, depth: int) -> SyncEngine:
        """A fresh per-symbol sync engine suited to this venue."""
        ...

    def symbol_fs(self, symbol: str) -> str:
        """File-system form of the symbol (see :func:`symbol_fs`)."""
        ...


@runtime_checkable
class StreamingExchange(Exchange, Protocol):
    """An adapter a live client can drive channel by channel (all three venues implement it).

    The client connects to :meth:`live_url`, then sends ``*_subscribe_messages`` for what it
    follows, spaced at least ``min_send_interval_s`` apart (the venue's limit on incoming
    messages). ``candle_intervals`` maps mmdata interval names (``1m`` … ``1W``) to the
    venue's own; parsed :class:`~mmdata.types.Candle` events carry the mmdata name.
    """

    candle_intervals: Mapping[str, str | int]
    min_send_interval_s: float

    def live_url(self) -> str:
        """WebSocket URL of a connection that subscribes by messages only."""
        ...

    def candle_subscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Frames subscribing to the ``interval`` candles of ``symbols`` (ConfigError if unknown)."""
        ...

    def candle_unsubscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Frames ending those candle subscriptions."""
        ...

    def trade_subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Frames subscribing to the live trades of ``symbols``."""
        ...

    def trade_unsubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Frames ending those trade subscriptions."""
        ...

    def book_subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Frames subscribing to the books of ``symbols`` (with what their checksums need)."""
        ...

    def book_unsubscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Frames ending those book subscriptions."""
        ...


class CandleCloser:
    """Sets ``closed`` on candles of venues that do not send it (Kraken ``ohlc``, Bitfinex ``candles``).

    Rule: a candle is closed once a *later* candle of the same symbol and interval has
    arrived. So

    * in a snapshot (any order) every candle but the newest is closed, the newest is not;
    * an update for a later interval than the running one first yields the running
      candle again, unchanged but ``closed=True``, then the new candle (``closed=False``);
    * an update for the running interval is passed on (``closed=False``);
    * an update older than the running candle is passed on ``closed=True``.

    State is per instance, i.e. per connection (adapters are): after a reconnect the first
    snapshot starts over. Nothing here reads a clock, so a candle whose interval ended
    without a later trade stays open until the next candle arrives.

    >>> c = Candle("kraken", "BTC/USD", "1m", 0, "1", "1", "1", "1", "1", None, 1, False)
    >>> closer = CandleCloser()
    >>> [x.closed for x in closer.update(c)]
    [False]
    >>> [(x.open_time_ms, x.closed) for x in closer.update(dataclasses.replace(c, open_time_ms=60_000))]
    [(0, True), (60000, False)]
    """

    __slots__ = ("_running",)

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], Candle] = {}

    def snapshot(self, candles: Iterable[Candle]) -> list[Candle]:
        """A snapshot's candles, oldest first per symbol and interval, all but the newest closed."""
        groups: dict[tuple[str, str], list[Candle]] = {}
        for candle in candles:
            groups.setdefault((candle.symbol, candle.interval), []).append(candle)
        out: list[Candle] = []
        for key, group in groups.items():
            group.sort(key=_open_time)
            out += [dataclasses.replace(c, closed=True) for c in group[:-1]]
            newest = dataclasses.replace(group[-1], closed=False)
            out.append(newest)
            self._running[key] = newest
        return out

    def update(self, candle: Candle) -> list[Candle]:
        """One live candle update: the candles to emit, in order (see the class docstring)."""
        key = (candle.symbol, candle.interval)
        running = self._running.get(key)
        if running is None or candle.open_time_ms == running.open_time_ms:
            self._running[key] = candle
            return [candle]
        if candle.open_time_ms > running.open_time_ms:
            self._running[key] = candle
            return [dataclasses.replace(running, closed=True), candle]
        return [dataclasses.replace(candle, closed=True)]


def _open_time(candle: Candle) -> int:
    return candle.open_time_ms
