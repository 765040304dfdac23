"""Kraken Spot WebSocket v2: subscribe messages and a frame parser (PROTOCOLS.md §B).

Theory of operation
-------------------
One connection to ``wss://ws.kraken.com/v2`` (§B.1) carries every symbol. After
connecting, the client sends three subscriptions (:meth:`KrakenV2.subscribe_messages`)::

    {"method":"subscribe","params":{"channel":"instrument","snapshot":true},"req_id":1}
    {"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10,"snapshot":true},"req_id":2}
    {"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD"],"snapshot":false},"req_id":3}

The ``instrument`` channel (§B.5) is needed for the book, not for its own sake: the v2
book checksum (§B.3) writes every price and quantity with the pair's
``price_precision`` / ``qty_precision``, and those only arrive there. Book snapshots
come over the socket, never from REST, so there is no snapshot request and
:meth:`KrakenV2.parse_snapshot` refuses.

Every frame is a JSON object of one of these shapes (§B.1–B.5)::

    {"channel":"book","type":"snapshot"|"update","data":[{"symbol":"MATIC/USD",
      "bids":[{"price":0.5666,"qty":4831.75496356},...],"asks":[...],
      "checksum":2439117997,"timestamp":"2023-10-06T17:35:55.440295Z"}]}
    {"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell","price":0.5117,
      "qty":40.0,"ord_type":"market","trade_id":4665906,"timestamp":"2023-09-25T07:49:37.708706Z"}]}
    {"channel":"instrument","type":"snapshot","data":{"assets":[...],"pairs":[{"symbol":"BTC/USD",
      "price_precision":1,"qty_precision":8,...}]}}
    {"channel":"status","type":"update","data":[{"system":"online","version":"2.0.10",...}]}
    {"channel":"heartbeat"}
    {"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"ALGO/USD"},
     "success":true,"time_in":"...","time_out":"..."}
    {"method":"pong","req_id":101,"time_in":"...","time_out":"..."}

and they become, respectively, :class:`~mmdata.types.BookSnapshot` /
:class:`~mmdata.types.BookDiff` (one per element of ``data``, checksum attached),
:class:`~mmdata.types.Trade` (one per element), :class:`~mmdata.types.Instrument`
(one per pair), :class:`~mmdata.types.VenueStatus` (``status``, ``maintenance``,
``heartbeat``, ``pong``, ``error``) and :class:`~mmdata.types.Ack` (a refused
subscription may lack ``result``; its channel is then recovered from our ``req_id``).
Other v2 channels (``ticker``, ``level3``, ``executions`` ...) and other
method responses (``add_order`` ...) are :class:`~mmdata.types.Unknown`.

Candles (``ohlc`` channel, §B.6) for live clients (:mod:`mmdata.live`)::

    {"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":1,"snapshot":true},"req_id":4}
    {"channel":"ohlc","type":"snapshot"|"update","timestamp":"...","data":[{"symbol":"ALGO/USD",
      "open":0.09875,"high":0.0988,"low":0.09875,"close":0.09875,"trades":13,"volume":16255.46368,
      "vwap":0.09879,"interval_begin":"2023-10-04T15:30:00.000000000Z","interval":5,
      "timestamp":"2023-10-04T15:35:00.000000Z"}]}

become :class:`~mmdata.types.Candle` with the wire's number text, ``open_time_ms`` from
``interval_begin``, ``interval`` the mmdata name of the minutes (``60`` → ``1h``, ``1440`` →
``1D``, ``10080`` → ``1W``; :data:`CANDLE_INTERVALS`), ``trades`` = ``trades`` and no quote
volume (Kraken sends ``vwap`` instead). Kraken has no "closed" flag: a candle is closed
when a later interval's candle arrives (:class:`~mmdata.exchanges.base.CandleCloser`, one
per adapter, i.e. per connection), so a snapshot's older candles are closed and a new
interval's first update re-emits the previous candle with ``closed=True`` first.
:meth:`KrakenV2.trade_subscribe_messages` and :meth:`KrakenV2.book_subscribe_messages`
subscribe the other channels one at a time (the first book subscription of a connection
also subscribes ``instrument``, whose precisions the checksums need).

Number text
-----------
Kraken sends prices and quantities as JSON *numbers* (§B.2) whose digits matter
(``0.5666``, ``4.0``, ``1e-08``). The decoder is the stdlib one with
``parse_float=str, parse_int=str``: every number reaches us as its exact wire text,
so ``"qty":0.0`` stays ``"0.0"`` and nothing passes through ``float``. (orjson is
faster but cannot keep number text.) ``NaN``/``Infinity`` are rejected. Integer
fields (checksum, trade id, precisions, depth) are converted with ``int`` after a
digits-only check. Prices/quantities sent as JSON strings are accepted unchanged. A
consequence: a number where text is expected (``"symbol":1``) reads as ``"1"``; the
decoder cannot tell the two apart without giving up the number text.

Book levels arrive as ``{"price": p, "qty": q}`` objects; they are turned into
``(p, q)`` tuples by a C-level ``map(itemgetter("price", "qty"), ...)``, the only
per-level work done here; the sync engine deals with level values it cannot read.

Checksums are not checked here: :meth:`KrakenV2.new_sync_engine` returns a
:class:`~mmdata.book.sync.ChecksumSync` that truncates to the subscribed depth after
every message and verifies the checksum of the snapshot and of every update, once an
``Instrument`` event for the symbol has told it the precisions.

Timestamps (RFC 3339, ``2023-10-06T17:35:55.440295Z``) are converted to integer
milliseconds, truncating the microseconds. The usual 27-character form takes a fast
path: the ``YYYY-MM-DDTHH:MM:SS`` part is looked up in a small cache of epoch
seconds and the milliseconds are read from three digits; anything else goes through
:meth:`datetime.datetime.fromisoformat` (naive times are taken as UTC).

Errors
------
:meth:`KrakenV2.parse` raises only :class:`~mmdata.errors.ExchangeProtocolError`
(malformed JSON, wrong shapes or types, frames of other venues, frames longer than
:data:`MAX_FRAME_CHARS`); every lower-level exception is mapped onto it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any, Final, NoReturn

from mmdata.book.sync import ChecksumSync, SyncEngine
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges.base import MAX_FRAME_CHARS, CandleCloser, symbol_fs
from mmdata.types import (
    Ack,
    BookSnapshot,
    Candle,
    Event,
    HttpRequest,
    Instrument,
    Level,
    Side,
    Unknown,
    VenueStatus,
    new_book_diff,
    new_book_snapshot,
    new_trade,
)

__all__ = ["BOOK_DEPTHS", "CANDLE_INTERVALS", "MAX_FRAME_CHARS", "KrakenV2"]

_NAME: Final = "kraken"

#: Frames longer than this (characters) are refused without being decoded.

#: Book depths the ``book`` channel accepts (PROTOCOLS.md §B.2).
BOOK_DEPTHS: Final = (10, 25, 100, 500, 1000)

# Our own request ids: a refused subscription may come back without ``result``,
# and then only its ``req_id`` says which channel it was about.
_REQ_INSTRUMENT, _REQ_BOOK, _REQ_TRADE, _REQ_OHLC = 1, 2, 3, 4
_REQ_CHANNELS: Final = {
    str(_REQ_INSTRUMENT): "instrument",
    str(_REQ_BOOK): "book",
    str(_REQ_TRADE): "trade",
    str(_REQ_OHLC): "ohlc",
}

#: ``ohlc`` intervals (§B.6): mmdata name → minutes.
CANDLE_INTERVALS: Final[Mapping[str, int]] = {
    "1m": 1,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "4h": 240,
    "1D": 1440,
    "1W": 10080,
    "15D": 21600,
}
_INTERVAL_NAMES: Final[Mapping[int, str]] = {minutes: name for name, minutes in CANDLE_INTERVALS.items()}

# v1 asset names still typed by users (PROTOCOLS.md §B.1: v2 says BTC and DOGE).
_V1_ASSETS: Final = {"XBT": "BTC", "XDG": "DOGE"}
_ASSET = re.compile(r"[A-Z0-9.]{1,16}")
# Quote currencies tried (longest first) to suggest a spelling for "BTCUSD".
_QUOTES: Final = ("USDT", "USDC", "USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD", "XBT", "BTC", "ETH", "DAI")

_SIDES: Final[dict[str, Side]] = {"buy": "buy", "sell": "sell"}
_EMPTY: Final[tuple[Level, ...]] = ()
_price_qty = itemgetter("price", "qty")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a valid number")


# One decoder for all frames (json.loads(..., parse_float=...) would build one per call).
_decode = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_reject_constant).decode


def _uint(value: Any) -> int:
    """A non-negative JSON integer (decoded as its text) → int."""
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise ValueError(f"expected a non-negative integer, got {value!r}")


def _precision(value: Any) -> int:
    precision = _uint(value)
    if precision > 32:  # formatting with a huge precision would be a memory bomb
        raise ValueError(f"implausible precision {precision}")
    return precision


def _text(value: Any, what: str) -> str:
    if type(value) is not str:
        raise ValueError(f"{what} must be a number or string, got {value!r}")
    return value


# -- timestamps -----------------------------------------------------------------------------------
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS: Final = timedelta(milliseconds=1)
_SECONDS_CACHE: dict[str, int] = {}
_SECONDS_CACHE_MAX: Final = 4096
# "000".."999" → int: three fraction digits, validated and converted by one lookup.
_MILLIS: Final = {f"{n:03d}": n for n in range(1000)}


def _datetime_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _ONE_MS


def _ts_ms(ts: Any) -> int:
    """RFC 3339 text → epoch milliseconds, microseconds truncated.

    >>> _ts_ms("2023-10-06T17:35:55.440295Z"), _ts_ms("2023-10-06T17:35:55Z")
    (1696613755440, 1696613755000)
    """
    if type(ts) is str and len(ts) == 27 and ts[26] == "Z" and ts[19] == ".":
        # Fast path: dict lookups validate the digits and skip int() parsing.
        millis = _MILLIS.get(ts[20:23])
        if millis is not None and ts[23:26] in _MILLIS:
            head = ts[:19]
            seconds_ms = _SECONDS_CACHE.get(head)
            if seconds_ms is None:
                seconds_ms = _datetime_ms(datetime.fromisoformat(head))
                if len(_SECONDS_CACHE) >= _SECONDS_CACHE_MAX:
                    _SECONDS_CACHE.clear()
                _SECONDS_CACHE[head] = seconds_ms
            return seconds_ms + millis
    if type(ts) is not str:
        raise ValueError(f"timestamp must be a string, got {ts!r}")
    return _datetime_ms(datetime.fromisoformat(ts))


class KrakenV2:
    """Kraken Spot WebSocket v2 adapter (pure: builds and parses text only).

    >>> kraken = KrakenV2()
    >>> kraken.normalize_symbol("xbt-usd")
    'BTC/USD'
    >>> [type(e).__name__ for e in kraken.parse('{"channel":"heartbeat"}')]
    ['VenueStatus']
    """

    name: str = _NAME
    ws_base: str = "wss://ws.kraken.com/v2"
    rest_base: str = "https://api.kraken.com"
    #: mmdata interval name → ``ohlc`` interval minutes.
    candle_intervals: Mapping[str, str | int] = CANDLE_INTERVALS
    min_send_interval_s: float = 0.0

    def __init__(self, *, ws_base: str | None = None, rest_base: str | None = None) -> None:
        self.ws_base = ws_base or KrakenV2.ws_base
        self.rest_base = rest_base or KrakenV2.rest_base
        self._closer = CandleCloser()
        self._instrument_requested = False  # per connection: one instrument subscription

    # -- symbols and subscriptions ------------------------------------------------------------
    def normalize_symbol(self, text: str) -> str:
        """Kraken v2 spelling ``BASE/QUOTE`` (``btc-usd``, ``XBT_USD`` → ``BTC/USD``).

        Raises :class:`~mmdata.errors.ConfigError` for text without a separator
        (``BTCUSD``: write ``BTC/USD``) or with assets outside ``[A-Z0-9.]{1,16}``.
        """
        if not isinstance(text, str):
            raise ConfigError(f"Kraken symbol must be text like 'BTC/USD', got {text!r}")
        upper = text.strip().upper().replace("-", "/").replace("_", "/")
        parts = upper.split("/")
        if len(parts) == 1:
            raise ConfigError(
                f"Kraken symbol {text!r} needs a '/' between base and quote: write {_suggest(upper)!r}"
            )
        if len(parts) != 2:
            raise ConfigError(f"Kraken symbol {text!r} must be BASE/QUOTE, e.g. 'BTC/USD'")
        base, quote = parts[0].strip(), parts[1].strip()
        if _ASSET.fullmatch(base) is None or _ASSET.fullmatch(quote) is None:
            raise ConfigError(
                f"Kraken symbol {text!r} must be BASE/QUOTE with 1-16 of A-Z, 0-9 or '.' each, e.g. 'BTC/USD'"
            )
        return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"

    def ws_url(self, symbols: Sequence[str]) -> str:
        """The v2 endpoint; symbols go in the subscribe messages, not the URL."""
        return self.ws_base

    def subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Instrument, book (``depth``) and trade subscriptions, in that order (req_id 1, 2, 3).

        ``depth`` must be one of :data:`BOOK_DEPTHS`; symbols are normalized and de-duplicated.
        """
        if isinstance(symbols, str):
            symbols = [symbols]
        names = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        if not names:
            raise ConfigError("Kraken: no symbols to subscribe to")
        _check_depth(depth)
        messages: list[dict[str, Any]] = [
            {
                "method": "subscribe",
                "params": {"channel": "instrument", "snapshot": True},
                "req_id": _REQ_INSTRUMENT,
            },
            {
                "method": "subscribe",
                "params": {"channel": "book", "symbol": names, "depth": depth, "snapshot": True},
                "req_id": _REQ_BOOK,
            },
            {
                "method": "subscribe",
                "params": {"channel": "trade", "symbol": names, "snapshot": False},
                "req_id": _REQ_TRADE,
            },
        ]
        return [json.dumps(m, separators=(",", ":")) for m in messages]

    def resubscribe_messages(self, symbol: str, depth: int) -> list[str]:
        """Unsubscribe and subscribe again one symbol's book: a fresh snapshot after a mismatch.

        Used by the recorder when :class:`~mmdata.book.sync.ChecksumSync` asks for a
        snapshot; the other symbols on the connection are not touched (PROTOCOLS.md §B.2).
        """
        name = self.normalize_symbol(symbol)
        _check_depth(depth)
        params: dict[str, Any] = {"channel": "book", "symbol": [name], "depth": depth}
        messages: list[dict[str, Any]] = [
            {"method": "unsubscribe", "params": params, "req_id": _REQ_BOOK},
            {"method": "subscribe", "params": {**params, "snapshot": True}, "req_id": _REQ_BOOK},
        ]
        return [json.dumps(m, separators=(",", ":")) for m in messages]

    # -- live subscriptions (mmdata.live) -------------------------------------------------------
    def live_url(self) -> str:
        """The v2 endpoint (every subscription is a message)."""
        return self.ws_base

    def _names(self, symbols: Sequence[str]) -> list[str]:
        if isinstance(symbols, str):
            symbols = [symbols]
        names = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        if not names:
            raise ConfigError("Kraken: no symbols to subscribe to")
        return names

    def _ohlc_params(self, symbols: Sequence[str], interval: str) -> dict[str, Any]:
        minutes = CANDLE_INTERVALS.get(interval)
        if minutes is None:
            raise ConfigError(f"Kraken has no {interval!r} ohlc; intervals: {', '.join(CANDLE_INTERVALS)}")
        return {"channel": "ohlc", "symbol": self._names(symbols), "interval": minutes}

    def candle_subscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """An ``ohlc`` subscription with snapshot; ``interval`` is an mmdata name (``1m`` … ``1W``)."""
        params = {**self._ohlc_params(symbols, interval), "snapshot": True}
        return [_dumps({"method": "subscribe", "params": params, "req_id": _REQ_OHLC})]

    def candle_unsubscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Unsubscribe those ``ohlc`` candles."""
        params = self._ohlc_params(symbols, interval)
        return [_dumps({"method": "unsubscribe", "params": params, "req_id": _REQ_OHLC})]

    def trade_subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """A ``trade`` subscription without the recent-trades snapshot."""
        params = {"channel": "trade", "symbol": self._names(symbols), "snapshot": False}
        return [_dumps({"method": "subscribe", "params": params, "req_id": _REQ_TRADE})]

    def trade_unsubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Unsubscribe those trades."""
        params = {"channel": "trade", "symbol": self._names(symbols)}
        return [_dumps({"method": "unsubscribe", "params": params, "req_id": _REQ_TRADE})]

    def book_subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """A ``book`` subscription (snapshot, ``depth`` of :data:`BOOK_DEPTHS`), preceded on the
        first call of this adapter (connection) by the ``instrument`` subscription."""
        _check_depth(depth)
        params = {"channel": "book", "symbol": self._names(symbols), "depth": depth, "snapshot": True}
        out = []
        if not self._instrument_requested:
            self._instrument_requested = True
            instrument = {"channel": "instrument", "snapshot": True}
            out.append(_dumps({"method": "subscribe", "params": instrument, "req_id": _REQ_INSTRUMENT}))
        out.append(_dumps({"method": "subscribe", "params": params, "req_id": _REQ_BOOK}))
        return out

    def book_unsubscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Unsubscribe those books."""
        _check_depth(depth)
        params = {"channel": "book", "symbol": self._names(symbols), "depth": depth}
        return [_dumps({"method": "unsubscribe", "params": params, "req_id": _REQ_BOOK})]

    # -- REST: none for books ---------------------------------------------------------------
    def snapshot_request(self, symbol: str, depth: int) -> HttpRequest | None:
        """None: Kraken book snapshots arrive on the WebSocket after subscribing."""
        return None

    def parse_snapshot(self, symbol: str, body: str) -> BookSnapshot:
        """Always raises: Kraken book snapshots are not fetched over REST."""
        raise ExchangeProtocolError(
            "Kraken book snapshots arrive on the WebSocket (book channel, type 'snapshot'); "
            "there is no REST snapshot to parse",
            exchange=_NAME,
            frame=body if isinstance(body, str) else repr(body),
        )

    def rest_symbol(self, url: str) -> str | None:
        """None: no REST snapshots to route."""
        return None

    def new_sync_engine(self, symbol: str, depth: int) -> SyncEngine:
        """A checksum-verified engine (truncates to ``depth``; precisions from Instrument events)."""
        _check_depth(depth)
        return ChecksumSync.kraken(self.normalize_symbol(symbol), depth)

    def symbol_fs(self, symbol: str) -> str:
        """File-system form: ``BTC/USD`` → ``BTCUSD``."""
        return symbol_fs(symbol)

    # -- parsing ------------------------------------------------------------------------------
    def parse(self, frame: str) -> list[Event]:
        """Events in one received frame (see the module docstring for the shapes).

        Raises :class:`~mmdata.errors.ExchangeProtocolError` for anything that is not a
        well-formed Kraken v2 frame; no other exception escapes.
        """
        if type(frame) is not str:
            raise ExchangeProtocolError(
                f"frame must be text, got {type(frame).__name__}", exchange=_NAME, frame=repr(frame)
            )
        if len(frame) > MAX_FRAME_CHARS:
            raise ExchangeProtocolError(
                f"frame of {len(frame)} characters exceeds the limit of {MAX_FRAME_CHARS}",
                exchange=_NAME,
                frame=frame,
            )
        try:
            msg = _decode(frame)
            if type(msg) is not dict:
                raise ValueError("not a JSON object (Kraken v2 frames are objects)")
            channel = msg.get("channel")
            if channel is not None:
                if channel == "book":
                    return _book(msg, frame)
                if channel == "trade":
                    return _trades(msg, frame)
                if channel == "heartbeat":
                    return [VenueStatus(_NAME, "heartbeat")]
                if channel == "status":
                    return _status(msg)
                if channel == "instrument":
                    return _instruments(msg)
                if channel == "ohlc":
                    return self._ohlc(msg)
                if type(channel) is str and type(msg.get("type")) is str and "data" in msg:
                    return [Unknown(_NAME, frame)]
                raise ValueError(f"channel {channel!r} frame without type/data")
            method = msg.get("method")
            if method is not None:
                if method in {"subscribe", "unsubscribe"}:
                    return [_ack(msg, frame)]
                if method == "pong":
                    return [VenueStatus(_NAME, "pong")]
                # Other Kraken responses (add_order ...) carry "success"; requests
                # echoed by other venues ({"method":"SUBSCRIBE","params":...}) do not.
                if type(method) is str and type(msg.get("success")) is bool:
                    return [Unknown(_NAME, frame)]
                raise ValueError(f"method {method!r} frame is not a Kraken v2 response")
            error = msg.get("error", msg.get("Error"))
            if type(error) is str:
                return [VenueStatus(_NAME, "error", error)]
            raise ValueError("not a Kraken v2 frame (no channel, method or error)")
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            reason = f"missing field {exc}" if type(exc) is KeyError else str(exc)
            if type(exc) is RecursionError:
                reason = "JSON nested too deeply"
            raise ExchangeProtocolError(
                f"bad Kraken v2 frame: {reason}", exchange=_NAME, frame=frame
            ) from None

    def _ohlc(self, msg: dict[str, Any]) -> list[Event]:
        kind = msg["type"]
        if kind not in {"update", "snapshot"}:
            raise ValueError(f"ohlc type must be snapshot or update, got {kind!r}")
        candles = [_candle(item) for item in _data_list(msg)]
        if kind == "snapshot":
            return list(self._closer.snapshot(candles))
        out: list[Event] = []
        for candle in candles:
            out += self._closer.update(candle)
        return out


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _candle(item: dict[str, Any]) -> Candle:
    """One ``ohlc`` data element (§B.6); ``closed`` is decided by the CandleCloser."""
    minutes = _uint(item["interval"])
    name = _INTERVAL_NAMES.get(minutes)
    if name is None:
        raise ValueError(f"unknown ohlc interval {minutes}")
    return Candle(
        _NAME,
        _text(item["symbol"], "symbol"),
        name,
        _ts_ms(item["interval_begin"]),
        _text(item["open"], "open"),
        _text(item["high"], "high"),
        _text(item["low"], "low"),
        _text(item["close"], "close"),
        _text(item["volume"], "volume"),
        None,
        _uint(item["trades"]),
        False,
    )


def _check_depth(depth: int) -> None:
    if type(depth) is not int or depth not in BOOK_DEPTHS:
        allowed = ", ".join(map(str, BOOK_DEPTHS))
        raise ConfigError(f"Kraken book depth must be one of {allowed}; got {depth!r}")


def _suggest(text: str) -> str:
    """A BASE/QUOTE spelling for separator-less text (``ETHEUR`` → ``ETH/EUR``), else ``BTC/USD``."""
    for quote in _QUOTES:
        base = text[: -len(quote)]
        if text.endswith(quote) and _ASSET.fullmatch(base):
            return f"{_V1_ASSETS.get(base, base)}/{_V1_ASSETS.get(quote, quote)}"
    return "BTC/USD"


def _data_list(msg: dict[str, Any]) -> list[Any]:
    data = msg["data"]
    if type(data) is not list:
        raise ValueError(f"{msg.get('channel')} data must be a list")
    return data


def _book(msg: dict[str, Any], frame: str) -> list[Event]:
    kind = msg["type"]
    update = kind == "update"
    if not update and kind != "snapshot":
        raise ValueError(f"book type must be snapshot or update, got {kind!r}")
    data = msg["data"]
    if type(data) is not list:
        raise ValueError("book data must be a list")
    out: list[Event] = []
    for item in data:
        bids = item["bids"]
        asks = item["asks"]
        if type(bids) is not list or type(asks) is not list:
            raise ValueError("book bids/asks must be lists")
        symbol = item["symbol"]
        if type(symbol) is not str:
            raise ValueError(f"symbol must be a string, got {symbol!r}")
        checksum = item["checksum"]
        # Checked inline (not via _uint): this is the hottest path.
        if type(checksum) is not str or not checksum.isdigit() or not checksum.isascii():
            raise ValueError(f"checksum must be an unsigned integer, got {checksum!r}")
        value = int(checksum)
        if value > 0xFFFFFFFF:
            raise ValueError(f"checksum {value} is not an unsigned 32-bit integer")
        ts = item.get("timestamp")
        ts_ms = None if ts is None else _ts_ms(ts)
        bid_levels = list(map(_price_qty, bids)) if bids else _EMPTY
        ask_levels = list(map(_price_qty, asks)) if asks else _EMPTY
        # Positional arguments: measurably cheaper than keywords for these dataclasses.
        if update:
            out.append(new_book_diff(_NAME, symbol, bid_levels, ask_levels, ts_ms, None, None, value, frame))
        else:
            out.append(new_book_snapshot(_NAME, symbol, bid_levels, ask_levels, ts_ms, None, value, frame))
    return out


def _trades(msg: dict[str, Any], frame: str) -> list[Event]:
    kind = msg["type"]
    if kind not in {"update", "snapshot"}:
        raise ValueError(f"trade type must be snapshot or update, got {kind!r}")
    snapshot = kind == "snapshot"
    return [
        new_trade(
            _NAME,
            _text(item["symbol"], "symbol"),
            _ts_ms(item["timestamp"]),
            _text(item["price"], "price"),
            _text(item["qty"], "qty"),
            _SIDES[item["side"]],
            _uint(item["trade_id"]),
            frame,
            snapshot,
        )
        for item in _data_list(msg)
    ]


def _instruments(msg: dict[str, Any]) -> list[Event]:
    if msg["type"] not in ("snapshot", "update"):
        raise ValueError(f"instrument type must be snapshot or update, got {msg['type']!r}")
    data = msg["data"]
    if type(data) is not dict:
        raise ValueError("instrument data must be an object")
    pairs = data.get("pairs", [])
    if type(pairs) is not list:
        raise ValueError("instrument pairs must be a list")
    return [
        Instrument(
            _NAME,
            _text(pair["symbol"], "symbol"),
            _precision(pair["price_precision"]),
            _precision(pair["qty_precision"]),
        )
        for pair in pairs
    ]


def _status(msg: dict[str, Any]) -> list[Event]:
    out: list[Event] = []
    for item in _data_list(msg):
        system = _text(item["system"], "system")
        out.append(VenueStatus(_NAME, "status" if system == "online" else "maintenance", system))
    return out


def _ack(msg: dict[str, Any], frame: str) -> Ack:
    ok = msg["success"]
    if type(ok) is not bool:
        raise ValueError(f"success must be true or false, got {ok!r}")
    result = msg.get("result")
    if result is None:
        if ok:
            raise ValueError("successful acknowledgement without result")
        result = {}
        req_id = msg.get("req_id")
        channel = _REQ_CHANNELS.get(req_id, "") if type(req_id) is str else ""
    elif type(result) is dict:
        channel = _text(result["channel"], "channel")
    else:
        raise ValueError("result must be an object")
    symbol = result.get("symbol", msg.get("symbol"))
    if symbol is not None and type(symbol) is not str:
        raise ValueError(f"symbol must be a string, got {symbol!r}")
    depth = result.get("depth")
    error = msg.get("error")
    if error is not None:
        message = error if type(error) is str else json.dumps(error)
    else:
        warnings = result.get("warnings")
        message = "; ".join(map(str, warnings)) if type(warnings) is list else ""
    return Ack(
        _NAME,
        channel,
        symbol,
        ok,
        message,
        depth=None if depth is None else _uint(depth),
        raw=frame,
    )
