"""Domain events: what the exchange adapters turn wire frames into.

Every event is a frozen, slotted dataclass. Prices and quantities are ``str`` holding
the exact decimal text the venue sent (``"61837.63000000"``, ``"7e-7"``): nothing here
ever goes through ``float``. Book levels are ``(price, qty)`` pairs of such text, qty
always non-negative, ``qty`` equal to zero meaning "remove this level" in a diff.

``raw`` keeps the frame (or REST body) the event came from, so writers can store the
wire text alongside the normalised fields.

Optional trailing fields beyond ARCHITECTURE.md §2 (documented in docs/architecture-notes.md):
``seq`` (Bitfinex ``SEQ_ALL`` sequence number of the frame), ``Trade.snapshot``
(the trade came in a venue's "recent trades" snapshot, not live), and the
connection-level :class:`SequenceBreak` event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal, TypeVar

__all__ = [
    "Ack",
    "BookChecksum",
    "BookDiff",
    "BookSnapshot",
    "Candle",
    "Event",
    "HttpRequest",
    "Instrument",
    "Level",
    "SequenceBreak",
    "Side",
    "Trade",
    "Unknown",
    "VenueStatus",
    "fast_builder",
    "new_book_checksum",
    "new_book_diff",
    "new_book_snapshot",
    "new_trade",
    "new_unknown",
    "new_venue_status",
]

#: One book level as exact wire text: ``(price, qty)``. Adapters may pass lists of two
#: strings straight from the JSON decoder; consumers only index ``[0]`` and ``[1]``.
Level = Sequence[str]
Side = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A full book: bids best (highest) first, asks best (lowest) first."""

    exchange: str
    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    ts_ms: int | None
    update_id: int | None = None  # Binance lastUpdateId
    checksum: int | None = None  # Kraken: checksum of this snapshot
    raw: str = ""
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class BookDiff:
    """Changed levels; qty is absolute, zero removes the level.

    Binance carries ``first_id``/``last_id`` (``U``/``u``); Kraken a checksum of the book
    after this diff; Bitfinex neither (checksums arrive as :class:`BookChecksum`).
    """

    exchange: str
    symbol: str
    bids: Sequence[Level]
    asks: Sequence[Level]
    ts_ms: int | None
    first_id: int | None = None
    last_id: int | None = None
    checksum: int | None = None
    raw: str = ""
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class BookChecksum:
    """A standalone checksum of the book as it stands (Bitfinex ``cs`` frames, signed int32)."""

    exchange: str
    symbol: str
    value: int
    ts_ms: int | None
    raw: str = ""
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade; ``side`` is the taker's side."""

    exchange: str
    symbol: str
    ts_ms: int
    price: str
    qty: str
    side: Side
    trade_id: int | str
    raw: str = ""
    snapshot: bool = False  # part of a "recent trades" snapshot sent on subscribe
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Candle:
    """An OHLCV candle; ``closed`` is False while the interval is still running."""

    exchange: str
    symbol: str
    interval: str
    open_time_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str | None
    trades: int | None
    closed: bool


@dataclass(frozen=True, slots=True)
class Instrument:
    """Instrument facts needed to verify books (Kraken ``instrument`` channel precisions)."""

    exchange: str
    symbol: str
    price_precision: int
    qty_precision: int


@dataclass(frozen=True, slots=True)
class VenueStatus:
    """Connection-level news from the venue.

    ``kind`` is one of ``heartbeat``, ``pong``, ``info``, ``status``, ``reconnect``
    (Binance ``serverShutdown``, Bitfinex 20051), ``maintenance`` (Bitfinex 20060,
    Kraken ``system`` not online), ``resume`` (Bitfinex 20061) or ``error``.
    """

    exchange: str
    kind: str
    message: str = ""
    code: int | None = None
    symbol: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The venue confirmed (``ok``) or refused a request (subscribe, conf, unsubscribe)."""

    exchange: str
    channel: str
    symbol: str | None
    ok: bool
    message: str = ""
    depth: int | None = None  # book depth / length the venue granted
    channel_id: int | None = None  # Bitfinex chanId
    raw: str = ""


@dataclass(frozen=True, slots=True)
class SequenceBreak:
    """A connection-wide sequence number skipped (Bitfinex ``SEQ_ALL``).

    The missing frame may have belonged to any channel of the connection, so every
    book on it must be treated as suspect.
    """

    exchange: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed frame of the venue's protocol that mmdata does not use (e.g. tickers)."""

    exchange: str
    raw: str


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A REST request an adapter builds and the I/O layer sends."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...] = ()
    weight: int = 1  # venue rate-limit cost (Binance request weight)


Event = (
    BookSnapshot
    | BookDiff
    | BookChecksum
    | Trade
    | Candle
    | Instrument
    | VenueStatus
    | Ack
    | SequenceBreak
    | Unknown
)


# -- fast construction ----------------------------------------------------------------------
# A frozen dataclass's __init__ pays one object.__setattr__ call per field (~1.7 µs for a
# BookDiff, as much as parsing a typical frame). Parsers build events through
# `fast_builder(cls)`: a plain class with the same slots fills them with ordinary stores
# and then retags the object as `cls` (CPython allows __class__ assignment between heap
# types whose slot layouts match). The result *is* a `cls` instance — frozen, equal,
# hashable exactly like one made by `cls(...)`.

_T = TypeVar("_T")
_retag = object.__dict__["__class__"].__set__


def fast_builder(cls: type[_T]) -> Callable[..., _T]:
    """A constructor for the frozen slotted dataclass ``cls``, same positional/keyword
    signature, about 3× faster. Falls back to ``cls`` itself if the trick does not hold
    (checked once, here, by building an instance both ways and comparing).
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    defaults: dict[str, Any] = {}
    params = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is MISSING:
            params.append(f.name)
        else:
            defaults[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
    body = "".join(f"    self.{n} = {n}\n" for n in names)
    source = f"def __init__(self, {', '.join(params)}):\n{body}    _retag(self, _cls)\n"
    namespace: dict[str, Any] = {"_retag": _retag, "_cls": cls, **defaults}
    exec(source, namespace)  # generated once per event class at import
    twin = type(
        f"_{cls.__name__}Builder",
        (),
        {
            "__slots__": tuple(getattr(cls, "__slots__", ())),
            "__init__": namespace["__init__"],
            "__doc__": f"Builds frozen {cls.__name__} events quickly (see fast_builder).",
        },
    )
    probe = [object() for _ in names]
    try:
        built = twin(*probe)
        if type(built) is cls and built == cls(*probe):
            return twin
    except (TypeError, AttributeError):
        pass
    return cls


new_book_snapshot: Callable[..., BookSnapshot] = fast_builder(BookSnapshot)
new_book_diff: Callable[..., BookDiff] = fast_builder(BookDiff)
new_book_checksum: Callable[..., BookChecksum] = fast_builder(BookChecksum)
new_trade: Callable[..., Trade] = fast_builder(Trade)
new_unknown: Callable[..., Unknown] = fast_builder(Unknown)
new_venue_status: Callable[..., VenueStatus] = fast_builder(VenueStatus)
