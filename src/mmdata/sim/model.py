"""Contracts between the simulator's pieces (all sans-I/O except ``mmdata.sim.server``).

::

    SyntheticMarket (market.py)  ──MarketStep──►  VenueSession (binance.py / kraken.py / bitfinex.py)
           ▲   book(), trades, candles                │ OutFrame(text, kind)
           │                                          ▼
    VenueSim.rest(...)  ◄── HTTP GET ──  SimServer (server.py: websockets + process_request, faults)

Numbers inside the simulator are integers: a price is a count of ``10**-price_precision``
units, a quantity a count of ``10**-qty_precision`` units. Venue modules turn them into
the venue's own wire text (Binance fixed decimals as strings, Kraken JSON floats,
Bitfinex JavaScript-style numbers) with :func:`decimal_text` and friends, so the
simulator never rounds through float.

Time is always passed in (``now_ms``): nothing here reads a clock, so tests are exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

__all__ = [
    "FrameKind",
    "InstrumentSpec",
    "LevelChange",
    "Market",
    "MarketStep",
    "OutFrame",
    "RestResponse",
    "SimCandle",
    "SimTrade",
    "VenueSession",
    "VenueSim",
    "decimal_text",
    "js_number_text",
    "trimmed_text",
]

BookSide = Literal["bid", "ask"]
TakerSide = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class InstrumentSpec:
    """One simulated instrument, in the venue's own symbol spelling.

    ``start_price`` is in price units (``10**-price_precision``); ``tick`` is the price
    step in the same units (1 = one unit of the last decimal).
    """

    symbol: str
    price_precision: int
    qty_precision: int
    start_price: int
    tick: int = 1
    levels: int = 200  # levels per side the market keeps
    updates_per_s: float = 20.0  # market steps per second at rate 1.0


@dataclass(frozen=True, slots=True)
class LevelChange:
    """A level's new absolute quantity (0 removes it)."""

    side: BookSide
    price: int
    qty: int


@dataclass(frozen=True, slots=True)
class SimTrade:
    """A trade; ``side`` is the taker's. Ids are contiguous per symbol, past then live."""

    trade_id: int
    ts_ms: int
    price: int
    qty: int
    side: TakerSide


@dataclass(frozen=True, slots=True)
class MarketStep:
    """Everything that happened to one symbol's book at ``ts_ms``.

    ``first_id``..``last_id`` are the book update ids this step consumed (one per level
    change, Binance ``U``/``u`` semantics); a step always has at least one change.
    Trades consume liquidity, so their book changes are included in ``changes``.
    """

    symbol: str
    ts_ms: int
    first_id: int
    last_id: int
    changes: tuple[LevelChange, ...]
    trades: tuple[SimTrade, ...] = ()


@dataclass(frozen=True, slots=True)
class SimCandle:
    """OHLCV over ``[open_ms, open_ms + interval_ms)`` built from trades (empty minutes omitted)."""

    open_ms: int
    interval_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int  # qty units
    quote_volume: int  # price units × qty units
    trades: int
    first_trade_id: int
    last_trade_id: int


FrameKind = Literal[
    "diff", "snapshot", "trade", "candle", "checksum", "heartbeat", "ack", "info", "status", "pong", "other"
]


@dataclass(frozen=True, slots=True)
class OutFrame:
    """A text frame for one client, tagged so the server's fault injector can target kinds.

    ``symbol`` is set for book and trade frames (per-symbol faults).
    """

    text: str
    kind: FrameKind
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class RestResponse:
    """An HTTP answer: status, JSON body text, extra headers."""

    status: int
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Market(Protocol):
    """The simulated market: live book + trades, and a deterministic past."""

    specs: Mapping[str, InstrumentSpec]
    start_ms: int  # the live market starts here; before it, the synthetic past

    def step(self, symbol: str, ts_ms: int) -> MarketStep:
        """Advance ``symbol`` by one event (level churn, mid move, sometimes trades)."""
        ...

    def book(self, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Full current book ``(bids, asks)``, best first, ``(price, qty)`` units."""
        ...

    def update_id(self, symbol: str) -> int:
        """Book update id of the current state (Binance ``lastUpdateId``)."""
        ...

    def trades(
        self,
        symbol: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        from_id: int | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[SimTrade]:
        """Trades (past and live) with ``start_ms <= ts < end_ms`` and ``id >= from_id``,
        ascending by id (or the newest ``limit`` when ``newest_first``); at most ``limit``."""
        ...

    def candles(
        self, symbol: str, interval_ms: int, start_ms: int, end_ms: int, *, limit: int = 1000
    ) -> list[SimCandle]:
        """Candles whose open is in ``[start_ms, end_ms)`` (aligned to ``interval_ms`` from
        the epoch), oldest first, at most ``limit``, built from the same trades ``trades()``
        returns (the still-running candle included)."""
        ...


class VenueSession(Protocol):
    """One client connection's protocol state (subscriptions, channel ids, sequence numbers)."""

    def on_open(self, now_ms: int) -> list[OutFrame]:
        """Frames sent right after the handshake (Kraken status, Bitfinex info)."""
        ...

    def on_text(self, text: str, now_ms: int) -> list[OutFrame]:
        """A client text frame: subscribe/unsubscribe/ping/conf → acks, snapshots, errors."""
        ...

    def on_step(self, step: MarketStep) -> list[OutFrame]:
        """The market moved: frames for this client's subscriptions (may be empty)."""
        ...

    def on_tick(self, now_ms: int) -> list[OutFrame]:
        """Called about every 100 ms: heartbeats due, Binance's 100 ms diff batching."""
        ...


class VenueSim(Protocol):
    """One venue's simulated endpoints over a :class:`Market`."""

    name: str

    def accept(self, path: str, now_ms: int) -> VenueSession | RestResponse:
        """A WebSocket handshake for ``path`` (with query): a session, or the HTTP error to answer."""
        ...

    def rest(self, path: str, query: Mapping[str, str], now_ms: int) -> RestResponse:
        """A REST GET (query parameters already decoded, last value wins)."""
        ...

    def symbols(self) -> Sequence[str]:
        """Symbols this venue serves, in its own spelling."""
        ...


def decimal_text(units: int, precision: int) -> str:
    """Fixed-point text of ``units * 10**-precision`` with exactly ``precision`` decimals.

    >>> decimal_text(6183763, 2), decimal_text(5, 8), decimal_text(-42, 1), decimal_text(7, 0)
    ('61837.63', '0.00000005', '-4.2', '7')
    """
    sign = "-" if units < 0 else ""
    digits = str(abs(units))
    if precision == 0:
        return sign + digits
    digits = digits.rjust(precision + 1, "0")
    return f"{sign}{digits[:-precision]}.{digits[-precision:]}"


def trimmed_text(units: int, precision: int) -> str:
    """Like :func:`decimal_text` without trailing zeros (how JSON floats print: ``0.8``, ``45000``).

    >>> trimmed_text(80000000, 8), trimmed_text(4500000, 2), trimmed_text(5, 8)
    ('0.8', '45000', '0.00000005')
    """
    text = decimal_text(units, precision)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def js_number_text(units: int, precision: int) -> str:
    """The text JavaScript's ``Number#toString`` gives (Bitfinex's wire numbers).

    Below 1e-6 JavaScript switches to exponent form, which Bitfinex checksums depend on
    (PROTOCOLS.md §C.3).

    >>> [js_number_text(u, p) for u, p in ((7, 7), (66, 8), (11, 7), (205000, 0), (-484713, 2), (1, 6))]
    ['7e-7', '6.6e-7', '0.0000011', '205000', '-4847.13', '0.000001']
    """
    if units == 0:
        return "0"
    sign = "-" if units < 0 else ""
    mag = abs(units)
    while precision > 0 and mag % 10 == 0:
        mag //= 10
        precision -= 1
    digits = str(mag)
    exponent = len(digits) - 1 - precision
    if exponent < -6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{exponent}"
    return sign + trimmed_text(mag, precision)
