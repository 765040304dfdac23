"""Venue adapters: pure builders and parsers for Binance Spot, Kraken WS v2 and Bitfinex WS v2.

``get(name)`` returns a *new* adapter instance (adapters hold per-connection state,
e.g. Bitfinex channel ids and the ``SEQ_ALL`` counter).
"""

from __future__ import annotations

from mmdata.errors import ConfigError
from mmdata.exchanges.base import Exchange, symbol_fs
from mmdata.exchanges.binance import BinanceSpot
from mmdata.exchanges.bitfinex import BitfinexV2
from mmdata.exchanges.kraken import KrakenV2

__all__ = ["EXCHANGES", "BinanceSpot", "BitfinexV2", "Exchange", "KrakenV2", "get", "symbol_fs"]

EXCHANGES: dict[str, type[BinanceSpot] | type[KrakenV2] | type[BitfinexV2]] = {
    "binance": BinanceSpot,
    "kraken": KrakenV2,
    "bitfinex": BitfinexV2,
}


def get(name: str, *, ws_base: str | None = None, rest_base: str | None = None) -> Exchange:
    """A fresh adapter for ``name`` (``binance``, ``kraken``, ``bitfinex``); ConfigError otherwise.

    ``ws_base`` / ``rest_base`` override the venue's base URLs (e.g. the simulator's).
    """
    cls = EXCHANGES.get(name.strip().lower())
    if cls is None:
        known = ", ".join(sorted(EXCHANGES))
        raise ConfigError(f"unknown exchange {name!r}; known: {known}")
    return cls(ws_base=ws_base, rest_base=rest_base)
