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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from mmdata.book.sync import SyncEngine
from mmdata.types import BookSnapshot, Event, HttpRequest

__all__ = ["MAX_FRAME_CHARS", "Exchange", "symbol_fs"]

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
