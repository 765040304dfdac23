"""Binance Spot adapter: combined-stream URLs, frame parsing and REST depth snapshots.

Theory of operation
-------------------
Binance subscribes through the URL: one *combined stream* connection
(PROTOCOLS.md §A.1) carries ``<symbol>@depth@100ms`` (book diffs) and ``<symbol>@trade``
for every symbol, so :meth:`BinanceSpot.subscribe_messages` sends nothing::

    wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade

Every combined frame wraps the raw payload; raw ``/ws/`` connections send the payload
alone. Both are accepted and dispatched on the payload's event type ``e`` (§A.2)::

    {"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1672515782136,"s":"BNBBTC",
     "U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}}          -> BookDiff
    {"e":"trade","E":1672515782136,"s":"BNBBTC","t":12345,"p":"0.001","q":"100",
     "T":1672515782136,"m":true,"M":true}                                    -> Trade (sell)
    {"e":"aggTrade",...,"a":12345,...}                                        -> Trade
    {"e":"kline",...,"k":{"t":..,"i":"1m","o":..,"c":..,"h":..,"l":..,"v":..,
     "n":100,"x":false,"q":..}}                                               -> Candle
    {"e":"serverShutdown","E":1770123456789}                                  -> VenueStatus(reconnect)
    {"result":null,"id":1}                                                    -> Ack
    {"code":0,"msg":"Unknown property","id":1}                                -> VenueStatus(error)

Klines (``<symbol>@kline_<interval>``, §A.2) become :class:`~mmdata.types.Candle` with
``closed`` = the wire's ``x``; ``interval`` is the mmdata name (``1d`` → ``1D``, ``1w`` →
``1W``, see :data:`CANDLE_INTERVALS`), ``quote_volume`` = ``q``, ``trades`` = ``n``.

Live clients (:mod:`mmdata.live`) connect to :meth:`BinanceSpot.live_url` (``/stream``,
no stream in the URL) and subscribe with ``SUBSCRIBE`` requests (§A.1)::

    {"method":"SUBSCRIBE","params":["btcusdt@kline_1m","ethusdt@kline_1m"],"id":1}

built by :meth:`~BinanceSpot.candle_subscribe_messages`,
:meth:`~BinanceSpot.trade_subscribe_messages` (``@trade``) and
:meth:`~BinanceSpot.book_subscribe_messages` (``@depth@100ms``); ``UNSUBSCRIBE`` likewise.
Binance closes a connection that receives more than 5 messages a second (pings and pongs
included), hence ``min_send_interval_s`` = 0.25.

Book tickers (``{"u":..,"s":..,"b":..,"B":..,"a":..,"A":..}``), partial-depth payloads
(``{"lastUpdateId":160,"bids":[..],"asks":[..]}`` on ``@depth5/10/20``) and any other
Binance event with a string ``e`` (tickers, …) are well-formed but unused:
:class:`~mmdata.types.Unknown`. Everything else — other venues' frames, lists, JSON
scalars, wrong field types — raises :class:`~mmdata.errors.ExchangeProtocolError`.

``m`` is "the buyer is the market maker": the taker *sold*, so ``m: true`` gives
``side="sell"``. Diffs keep the decoder's level lists as they are (no copy, no per-level
check); :class:`~mmdata.book.sync.SequenceSync` consumes them and runs the official
local-book procedure (§A.4): buffer diffs, fetch ``GET /api/v3/depth`` (§A.3, see
:meth:`BinanceSpot.snapshot_request`), refetch while ``lastUpdateId < first U``, then
require ``U == previous u + 1``.

Speed
-----
The ``depthUpdate`` branch runs ~100k times a second, so it is checked first, reads
each field once and checks only types. Events are built with
:func:`mmdata.types.new_book_diff` / :func:`~mmdata.types.new_trade` (frozen events at
plain-class construction speed; a frozen ``__init__`` alone costs about two thirds of
``orjson.loads`` on a median BTCUSDT diff). Measured: ``parse`` costs ~1.5×
``orjson.loads`` on the median real diff (2.0× with the plain constructor), 1.3× summed
over all diffs of the BTCUSDT capture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson

from mmdata.book.sync import SequenceSync, SyncEngine
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges.base import MAX_FRAME_CHARS
from mmdata.exchanges.base import symbol_fs as _symbol_fs
from mmdata.types import (
    Ack,
    BookSnapshot,
    Candle,
    Event,
    HttpRequest,
    Unknown,
    VenueStatus,
    new_book_diff,
    new_trade,
)

__all__ = [
    "CANDLE_INTERVALS",
    "DEFAULT_REST_BASE",
    "DEFAULT_WS_BASE",
    "MAX_FRAME_CHARS",
    "MAX_SNAPSHOT_LIMIT",
    "MAX_STREAMS",
    "BinanceSpot",
    "snapshot_weight",
]

DEFAULT_WS_BASE: Final = "wss://stream.binance.com:9443"
DEFAULT_REST_BASE: Final = "https://api.binance.com"
#: Streams one connection may carry (§A.1 "WebSocket Limits").
MAX_STREAMS: Final = 1024
#: Deepest REST snapshot (§A.3: "If limit > 5000, only 5000 entries will be returned").
MAX_SNAPSHOT_LIMIT: Final = 5000

#: Kline intervals (§A.2): mmdata name → Binance spelling (days, weeks lower case on the wire).
CANDLE_INTERVALS: Final[Mapping[str, str]] = {
    "1s": "1s",
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1h",
    "2h": "2h",
    "4h": "4h",
    "6h": "6h",
    "8h": "8h",
    "12h": "12h",
    "1D": "1d",
    "3D": "3d",
    "1W": "1w",
    "1M": "1M",
}
_INTERVAL_NAMES: Final[Mapping[str, str]] = {venue: name for name, venue in CANDLE_INTERVALS.items()}

_EXCHANGE: Final = "binance"
_SYMBOL_DROP: Final = str.maketrans("", "", "/-_ ")
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{2,20}")
_PARTIAL_DEPTH_RE: Final = re.compile(r"@depth(?:5|10|20)(?:@\d+ms)?")
_BOOK_TICKER_KEYS: Final = frozenset({"u", "s", "b", "B", "a", "A"})
_PARTIAL_DEPTH_KEYS: Final = frozenset({"lastUpdateId", "bids", "asks"})
_ACK_KEYS: Final = frozenset({"result", "id"})
_ERROR_KEYS: Final = frozenset({"code", "msg", "id"})
#: Everything a broken frame can make the body below raise; mapped to ExchangeProtocolError.
_MALFORMED: Final = (ValueError, TypeError, KeyError, IndexError, AttributeError)

_loads = orjson.loads


def snapshot_weight(limit: int) -> int:
    """Request weight of ``GET /api/v3/depth`` with this ``limit`` (§A.3, since 2023-10-19).

    >>> [snapshot_weight(n) for n in (100, 500, 1000, 5000)]
    [5, 25, 50, 250]
    """
    if limit < 1 or limit > MAX_SNAPSHOT_LIMIT:
        raise ConfigError(f"Binance depth limit must be 1-{MAX_SNAPSHOT_LIMIT}, got {limit}")
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


class BinanceSpot:
    """Binance Spot market streams and REST depth snapshots, without I/O.

    ``snapshot_limit`` is the smallest REST snapshot depth requested (default and maximum
    5000, the current official procedure, §A.4); a larger ``depth`` raises it up to 5000.
    """

    name = _EXCHANGE
    #: mmdata interval name → Binance kline interval.
    candle_intervals: Mapping[str, str | int] = CANDLE_INTERVALS
    #: At most 4 control messages a second: Binance drops connections above 5 (pings count).
    min_send_interval_s: float = 0.25

    def __init__(
        self,
        *,
        ws_base: str | None = None,
        rest_base: str | None = None,
        snapshot_limit: int = MAX_SNAPSHOT_LIMIT,
    ) -> None:
        self.ws_base = (ws_base or DEFAULT_WS_BASE).rstrip("/")
        self.rest_base = (rest_base or DEFAULT_REST_BASE).rstrip("/")
        snapshot_weight(snapshot_limit)  # validates the range
        self.snapshot_limit = snapshot_limit
        self._request_id = 0  # ids of SUBSCRIBE / UNSUBSCRIBE requests on this connection

    def __repr__(self) -> str:
        return f"BinanceSpot(ws_base={self.ws_base!r}, rest_base={self.rest_base!r})"

    # -- symbols and URLs ----------------------------------------------------------------
    def normalize_symbol(self, text: str) -> str:
        """Binance's spelling of a symbol: ``"btc/usdt"`` → ``"BTCUSDT"``; ConfigError otherwise."""
        if not isinstance(text, str):
            raise ConfigError(f"a Binance symbol must be text, got {type(text).__name__}")
        symbol = text.strip().upper().translate(_SYMBOL_DROP)
        if _SYMBOL_RE.fullmatch(symbol) is None:
            raise ConfigError(
                f"{text!r} is not a Binance symbol: expected 2-20 letters or digits such as BTCUSDT "
                "(separators '/', '-', '_' and spaces are dropped, case is ignored)"
            )
        return symbol

    def _symbols(self, symbols: Sequence[str]) -> list[str]:
        """Normalised, de-duplicated symbols in the given order (a lone ``str`` is one symbol)."""
        if isinstance(symbols, str):
            symbols = [symbols]
        seen = dict.fromkeys(self.normalize_symbol(s) for s in symbols)
        if not seen:
            raise ConfigError("no symbols given for the Binance connection")
        return list(seen)

    def ws_url(self, symbols: Sequence[str]) -> str:
        """Combined-stream URL carrying ``@depth@100ms`` and ``@trade`` of every symbol (§A.1)."""
        streams = []
        for symbol in self._symbols(symbols):
            lower = symbol.lower()
            streams.append(f"{lower}@depth@100ms")
            streams.append(f"{lower}@trade")
        if len(streams) > MAX_STREAMS:
            raise ConfigError(
                f"{len(streams)} Binance streams requested ({len(streams) // 2} symbols × 2); "
                f"one connection carries at most {MAX_STREAMS} ({MAX_STREAMS // 2} symbols)"
            )
        return f"{self.ws_base}/stream?streams=" + "/".join(streams)

    def subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Nothing to send: the combined-stream URL already subscribes."""
        return []

    # -- live subscriptions (mmdata.live) --------------------------------------------------
    def live_url(self) -> str:
        """Combined-stream endpoint without streams (``/stream``): subscriptions go by request."""
        return f"{self.ws_base}/stream"

    def candle_streams(self, symbols: Sequence[str], interval: str) -> list[str]:
        """``<symbol>@kline_<interval>`` stream names; ``interval`` is an mmdata name (``1m``, ``1D``)."""
        venue = CANDLE_INTERVALS.get(interval)
        if venue is None:
            raise ConfigError(f"Binance has no {interval!r} klines; intervals: {', '.join(CANDLE_INTERVALS)}")
        return [f"{s.lower()}@kline_{venue}" for s in self._symbols(symbols)]

    def candle_subscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """One ``SUBSCRIBE`` request for the klines of ``symbols``."""
        return [self._request("SUBSCRIBE", self.candle_streams(symbols, interval))]

    def candle_unsubscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """One ``UNSUBSCRIBE`` request for those klines."""
        return [self._request("UNSUBSCRIBE", self.candle_streams(symbols, interval))]

    def trade_subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``SUBSCRIBE`` request for ``<symbol>@trade``."""
        return [self._request("SUBSCRIBE", [f"{s.lower()}@trade" for s in self._symbols(symbols)])]

    def trade_unsubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``UNSUBSCRIBE`` request for ``<symbol>@trade``."""
        return [self._request("UNSUBSCRIBE", [f"{s.lower()}@trade" for s in self._symbols(symbols)])]

    def book_subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """One ``SUBSCRIBE`` request for ``<symbol>@depth@100ms`` (the REST snapshot gives the depth)."""
        return [self._request("SUBSCRIBE", [f"{s.lower()}@depth@100ms" for s in self._symbols(symbols)])]

    def book_unsubscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """One ``UNSUBSCRIBE`` request for ``<symbol>@depth@100ms``."""
        return [self._request("UNSUBSCRIBE", [f"{s.lower()}@depth@100ms" for s in self._symbols(symbols)])]

    def _request(self, method: str, streams: list[str]) -> str:
        self._request_id += 1
        return orjson.dumps({"method": method, "params": streams, "id": self._request_id}).decode()

    def resubscribe_messages(self, symbol: str, depth: int) -> list[str]:
        """Nothing: Binance books resync from a REST snapshot, the stream stays as it is."""
        return []

    def symbol_fs(self, symbol: str) -> str:
        """File-system form of the symbol (see :func:`mmdata.exchanges.base.symbol_fs`)."""
        return _symbol_fs(symbol)

    # -- frames --------------------------------------------------------------------------
    def parse(self, frame: str) -> list[Event]:
        """Events in one WebSocket text frame (combined or raw); see the module docstring.

        Raises :class:`~mmdata.errors.ExchangeProtocolError` for anything that is not a
        Binance Spot market-stream frame.
        """
        try:
            if len(frame) > MAX_FRAME_CHARS:
                raise _fail(f"frame of {len(frame)} characters exceeds {MAX_FRAME_CHARS}", frame)
            msg = _loads(frame)
            if type(msg) is not dict:
                raise _fail(f"frame is a JSON {type(msg).__name__}, not an object", frame)
            stream = msg.get("stream")
            data: Any
            if stream is None:
                data = msg
            elif type(stream) is str:
                data = msg.get("data")
                if type(data) is not dict:
                    return self._odd_wrapper(frame, stream, data)
            else:
                raise _fail('"stream" is not a string', frame)
            kind = data.get("e")
            if kind == "depthUpdate":
                # Hot path: one read per field, type checks only (bool is not int here).
                first = data["U"]
                last = data["u"]
                ts = data["E"]
                bids = data["b"]
                asks = data["a"]
                symbol = data["s"]
                if (
                    type(first) is int
                    and type(last) is int
                    and type(ts) is int
                    and type(bids) is list
                    and type(asks) is list
                    and type(symbol) is str
                    and first <= last
                ):
                    return [new_book_diff(_EXCHANGE, symbol, bids, asks, ts, first, last, None, frame)]
                raise _fail("depthUpdate with wrong field types (U/u/E int, b/a list, s str, U <= u)", frame)
            if kind in {"trade", "aggTrade"}:
                trade_id = data["t" if kind == "trade" else "a"]
                ts = data["T"]
                price = data["p"]
                qty = data["q"]
                maker = data["m"]
                symbol = data["s"]
                if (
                    type(trade_id) is int
                    and type(ts) is int
                    and type(price) is str
                    and type(qty) is str
                    and type(maker) is bool
                    and type(symbol) is str
                ):
                    # m: the buyer is the maker, so the taker sold.
                    return [
                        new_trade(
                            _EXCHANGE, symbol, ts, price, qty, "sell" if maker else "buy", trade_id, frame
                        )
                    ]
                raise _fail(f"{kind} with wrong field types (t/a/T int, p/q/s str, m bool)", frame)
            return self._other(frame, msg, stream, data, kind)
        except ExchangeProtocolError:
            raise
        except _MALFORMED as exc:
            raise _fail(f"malformed frame ({type(exc).__name__}: {exc})", frame) from exc

    def _other(
        self, frame: str, msg: dict[str, Any], stream: str | None, data: dict[str, Any], kind: Any
    ) -> list[Event]:
        """Everything but diffs and trades: rare frames, clarity over speed."""
        if type(kind) is str:
            if kind == "kline":
                return [self._candle(frame, data)]
            if kind == "serverShutdown":
                return [VenueStatus(_EXCHANGE, "reconnect", "serverShutdown")]
            if type(data.get("E")) is int:
                return [Unknown(_EXCHANGE, frame)]  # a Binance event mmdata does not use (tickers …)
            raise _fail(f'event {kind!r} without an integer "E"', frame)
        if kind is not None:
            raise _fail('"e" is not a string', frame)
        if stream is not None:
            if stream.endswith("@bookTicker") or stream == "!bookTicker":
                return [Unknown(_EXCHANGE, frame)]
            if _PARTIAL_DEPTH_RE.search(stream) and _is_partial_depth(data):
                return [Unknown(_EXCHANGE, frame)]
            raise _fail(f"unexpected payload on stream {stream!r}", frame)
        if "stream" in msg:
            raise _fail('"stream" is null', frame)
        keys = msg.keys()
        if keys >= _BOOK_TICKER_KEYS and type(msg["u"]) is int and type(msg["s"]) is str:
            return [Unknown(_EXCHANGE, frame)]  # raw bookTicker
        if keys == _PARTIAL_DEPTH_KEYS and _is_partial_depth(msg):
            return [Unknown(_EXCHANGE, frame)]  # raw partial depth
        if keys == _ACK_KEYS and _is_request_id(msg["id"]):
            return [Ack(_EXCHANGE, "request", None, True, message=f"id={msg['id']}", raw=frame)]
        error = msg.get("error") if keys == {"error", "id"} else msg if keys <= _ERROR_KEYS else None
        if type(error) is dict:
            code = error.get("code")
            text = error.get("msg")
            if type(code) is int and type(text) is str:
                return [VenueStatus(_EXCHANGE, "error", text, code)]
        raise _fail("not a Binance market-stream frame", frame)

    def _odd_wrapper(self, frame: str, stream: str, data: Any) -> list[Event]:
        """A combined frame whose payload is not an object: only ``!…@arr`` lists are Binance's."""
        if type(data) is list and stream.endswith("@arr"):
            return [Unknown(_EXCHANGE, frame)]  # all-market tickers
        raise _fail(f'"data" of stream {stream!r} is not an object', frame)

    @staticmethod
    def _candle(frame: str, data: dict[str, Any]) -> Candle:
        k = data["k"]
        symbol = data["s"]
        interval = k["i"]
        candle = Candle(
            _EXCHANGE,
            symbol,
            _INTERVAL_NAMES.get(interval, interval) if type(interval) is str else interval,
            k["t"],
            k["o"],
            k["h"],
            k["l"],
            k["c"],
            k["v"],
            k["q"],
            k["n"],
            k["x"],
        )
        texts = (symbol, candle.interval, candle.open, candle.high, candle.low, candle.close, candle.volume)
        if (
            all(type(t) is str for t in texts)
            and type(candle.quote_volume) is str
            and type(candle.open_time_ms) is int
            and type(candle.trades) is int
            and type(candle.closed) is bool
        ):
            return candle
        raise _fail("kline with wrong field types (k.t/k.n int, k.x bool, prices/volumes str)", frame)

    # -- REST snapshots ------------------------------------------------------------------
    def snapshot_request(self, symbol: str, depth: int) -> HttpRequest:
        """``GET /api/v3/depth`` as deep as useful: ``snapshot_limit`` (5000) or ``depth``, at most 5000."""
        limit = min(max(depth, self.snapshot_limit), MAX_SNAPSHOT_LIMIT)
        return HttpRequest(
            "GET",
            f"{self.rest_base}/api/v3/depth",
            (("symbol", self.normalize_symbol(symbol)), ("limit", str(limit))),
            snapshot_weight(limit),
        )

    def parse_snapshot(self, symbol: str, body: str) -> BookSnapshot:
        """A REST depth answer ``{"lastUpdateId":..,"bids":[..],"asks":[..]}`` as a snapshot.

        Error answers (``{"code":-1121,"msg":"Invalid symbol."}``) and bodies without those
        fields raise :class:`~mmdata.errors.ExchangeProtocolError` quoting the venue.
        """
        symbol = self.normalize_symbol(symbol)
        try:
            doc = _loads(body)
        except _MALFORMED as exc:
            raise ExchangeProtocolError(
                f"{symbol}: depth snapshot is not JSON ({exc})", exchange=_EXCHANGE, frame=_text(body)
            ) from exc
        if type(doc) is not dict:
            raise ExchangeProtocolError(
                f"{symbol}: depth snapshot is a JSON {type(doc).__name__}, not an object",
                exchange=_EXCHANGE,
                frame=body,
            )
        if "code" in doc or "msg" in doc:
            raise ExchangeProtocolError(
                f"{symbol}: Binance refused the depth snapshot: {doc.get('msg')} (code {doc.get('code')})",
                exchange=_EXCHANGE,
                frame=body,
            )
        last = doc.get("lastUpdateId")
        bids = doc.get("bids")
        asks = doc.get("asks")
        if type(last) is not int or type(bids) is not list or type(asks) is not list:
            raise ExchangeProtocolError(
                f"{symbol}: depth snapshot needs lastUpdateId (int), bids and asks (lists)",
                exchange=_EXCHANGE,
                frame=body,
            )
        return BookSnapshot(_EXCHANGE, symbol, bids, asks, None, update_id=last, raw=body)

    def rest_symbol(self, url: str) -> str | None:
        """The symbol of a ``/api/v3/depth?symbol=…`` URL (any host), else None."""
        try:
            parts = urlsplit(url)
        except (ValueError, TypeError, AttributeError):
            return None
        if not parts.path.endswith("/api/v3/depth"):
            return None
        values = parse_qs(parts.query).get("symbol")
        if not values:
            return None
        symbol = values[0].strip().upper()
        return symbol if _SYMBOL_RE.fullmatch(symbol) else None

    def new_sync_engine(self, symbol: str, depth: int) -> SyncEngine:
        """A :class:`~mmdata.book.sync.SequenceSync` (``depth`` only shapes output frames)."""
        return SequenceSync(self.normalize_symbol(symbol), exchange=_EXCHANGE)


def _is_partial_depth(data: dict[str, Any]) -> bool:
    return (
        type(data.get("lastUpdateId")) is int
        and type(data.get("bids")) is list
        and type(data.get("asks")) is list
    )


def _is_request_id(value: Any) -> bool:
    """Request ids are 64-bit ints, short strings or null (§A.1)."""
    return value is None or type(value) is int or type(value) is str


def _text(frame: Any) -> str:
    return frame if isinstance(frame, str) else repr(frame)[:512]


def _fail(reason: str, frame: Any) -> ExchangeProtocolError:
    return ExchangeProtocolError(f"binance: {reason}", exchange=_EXCHANGE, frame=_text(frame))
