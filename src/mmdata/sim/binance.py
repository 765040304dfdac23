"""Simulated Binance Spot: market streams, live subscribe, and the REST market-data routes.

Theory of operation
-------------------
:class:`BinanceSim` serves one :class:`~mmdata.sim.model.Market`. The server calls
:meth:`BinanceSim.accept` for every WebSocket handshake and :meth:`BinanceSim.rest` for
every plain HTTP GET; each accepted connection gets a :class:`BinanceSession`, which the
server feeds market steps (:meth:`~BinanceSession.on_step`), ticks about every 100 ms
(:meth:`~BinanceSession.on_tick`) and client text frames (:meth:`~BinanceSession.on_text`).
Nothing here does I/O or reads a clock.

Connections (PROTOCOLS.md §A.1). ``/stream?streams=btcusdt@depth@100ms/btcusdt@trade``
opens a *combined* connection (payloads wrapped ``{"stream":..,"data":..}``);
``/ws/btcusdt@depth`` (or bare ``/ws``) a *raw* one (bare payloads). Stream names are
lowercase; served streams are ``<s>@depth@100ms``, ``<s>@depth`` (1000 ms),
``<s>@trade`` and ``<s>@aggTrade``; at most 1024 per connection. A bad handshake is
answered with HTTP 400 and a Binance-style ``{"code":..,"msg":..}`` body.

Diff depth (§A.2, §A.4). A :class:`~mmdata.sim.model.MarketStep` carries the book
update ids ``first_id..last_id`` it consumed. Each subscribed depth stream *accumulates*
steps: the first pending id, the last pending id, and per price the final quantity
(last change wins). On the first tick of every new 100 ms (1000 ms) window since the
epoch the stream flushes one event::

    {"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1700000000100,
     "s":"BTCUSDT","U":1001,"u":1007,"b":[["61837.63000000","0.51200000"]],
     "a":[["61837.64000000","0.00000000"]]}}

So consecutive events satisfy ``U == previous u + 1``, and a REST snapshot's
``lastUpdateId`` (:meth:`Market.update_id`, the id of the state it shows) is either
``U - 1`` of the next event or inside its ``[U, u]`` — exactly the two cases the official
procedure handles. Because quantities are absolute, applying an event whose early ids
predate the snapshot still leaves the right book.

Trades (§A.2). Every :class:`~mmdata.sim.model.SimTrade` of a step is pushed at once as
``{"e":"trade","E":..,"s":..,"t":..,"p":..,"q":..,"T":..,"m":..,"M":true}`` (``m`` — the
buyer is the maker — is true when the taker sold) and, on ``@aggTrade``, as an aggregate
trade of one fill (``a == f == l == t``).

Numbers. Binance writes prices and quantities as strings with exactly 8 decimals
(``"61837.63000000"``, ``"0.00000000"``): integer units are printed with integer
arithmetic and padded to 8 decimals, never through float. Instruments with more than 8
decimals are refused at construction. Formatting a number costs ten times a dict lookup,
and every session formats the same step while prices near the mid recur, so each
instrument keeps a bounded units → text cache shared by all sessions.

Klines (§A.5) come from :meth:`Market.candles`, which omits intervals without trades;
Binance has a kline for every interval since the symbol's first trade, so empty ones are
filled in (no volume, OHLC = previous close) and ``limit`` counts intervals.
:class:`~mmdata.sim.model.SimCandle` has no taker-buy volumes, so row fields 9–10 are
summed from the candle's own trades (``first_trade_id..last_trade_id``) and remembered per
finished minute (a first query over a month of history still reads every past trade
once); quote volumes whose precision exceeds 8 decimals are rounded down.

Kline streams (§A.2) ``<s>@kline_<interval>`` (the intervals of :data:`KLINE_INTERVALS`)
carry the same klines as ``/api/v3/klines`` — the same text, field for field, taker-buy
volumes included — as ``{"e":"kline","E":..,"s":..,"k":{"t":..,"T":..,"s":..,"i":"1m",
"f":..,"L":..,"o":..,"c":..,"h":..,"l":..,"v":..,"n":..,"x":false,"q":..,"V":..,"Q":..,
"B":"0"}}``. Like Binance, the running kline is pushed every :data:`KLINE_PUSH_MS` (2000 ms
of the server's clock; a test server with an accelerated clock pushes faster), also when
nothing traded (a flat kline at the previous close, as REST shows it). On the first tick
after an interval ends its final kline goes out with ``"x":true`` exactly once per
stream; ``f``/``L`` are ``-1`` for a kline without trades. Intervals before the symbol's
first trade have no kline and send nothing.

Live requests (§A.1): ``SUBSCRIBE`` / ``UNSUBSCRIBE`` → ``{"result":null,"id":1}``;
``LIST_SUBSCRIPTIONS`` → ``{"result":["btcusdt@trade"],"id":3}``; ``SET_PROPERTY`` /
``GET_PROPERTY`` of ``combined``. Errors use the shape the live server sends (the
documented table lists only the inner object)::

    {"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":7}

More than 5 incoming messages within one second set :attr:`BinanceSession.must_close`
(the server then closes the connection, as Binance does); the server should also report
ping/pong frames through :meth:`BinanceSession.count_incoming`.

REST (§A.3, §A.5): ``/api/v3/depth``, ``/api/v3/klines``, ``/api/v3/aggTrades``,
``/api/v3/ping``, ``/api/v3/time``. Each answer carries ``X-MBX-USED-WEIGHT-1M``, the
weight used in the current clock minute; a request that takes it over ``weight_limit``
gets ``429`` with ``Retry-After`` (seconds to the next minute) and code ``-1003``.
Parameter errors follow ``errors.md``: ``-1100`` illegal characters, ``-1102`` mandatory
parameter missing, ``-1104`` unread (unknown) parameters, ``-1120`` bad interval,
``-1121`` unknown symbol, ``-1130`` invalid value.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

from mmdata.sim.model import (
    Market,
    MarketStep,
    OutFrame,
    RestResponse,
    SimCandle,
    SimTrade,
)

__all__ = [
    "DEPTH_WEIGHTS",
    "KLINE_INTERVALS",
    "KLINE_PUSH_MS",
    "MAX_STREAMS",
    "BinanceSession",
    "BinanceSim",
    "fixed8",
]

#: Streams one connection may carry (§A.1 "WebSocket Limits").
MAX_STREAMS: Final = 1024
#: Incoming messages (text, ping, pong) allowed per second per connection (§A.1).
MAX_INCOMING_PER_S: Final = 5
#: ``(highest limit, weight)`` of ``GET /api/v3/depth`` (§A.3, since 2023-10-19).
DEPTH_WEIGHTS: Final = ((100, 5), (500, 25), (1000, 50), (5000, 250))
#: Kline intervals served, in milliseconds (epoch-aligned ones; §A.5).
KLINE_INTERVALS: Final[Mapping[str, int]] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}

#: How often a kline stream pushes its running kline (server clock ms; §A.2: 2000 for 1m+).
KLINE_PUSH_MS: Final = 2000

_E8: Final = 100_000_000
_DEPTH_INTERVALS: Final = {"depth@100ms": 100, "depth": 1000}
_STREAM_RE: Final = re.compile(
    r"([a-z0-9]+)@(depth@100ms|depth|trade|aggTrade|kline_(?:" + "|".join(KLINE_INTERVALS) + "))"
)
_SYMBOL_PARAM_RE: Final = re.compile(r"[A-Z0-9\-_.]{1,20}")
_DIGITS_RE: Final = re.compile(r"[0-9]{1,20}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9]{1,36}")
_METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_INT64: Final = 1 << 63
_WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
_MINUTE_MS: Final = 60_000
#: Finished minutes whose taker-buy volumes a symbol remembers (~40 days) before starting over.
_TAKER_CACHE_LIMIT: Final = 60_000
#: Windows of 1000 intervals searched back for the last close before a kline window.
_MAX_KLINE_WINDOWS: Final = 8


def fixed8(units: int, precision: int) -> str:
    """Binance's 8-decimal text of ``units * 10**-precision`` (``precision`` ≤ 8).

    >>> fixed8(6183763, 2), fixed8(0, 5), fixed8(5, 8)
    ('61837.63000000', '0.00000000', '0.00000005')
    """
    if not 0 <= precision <= 8:
        raise ValueError(f"Binance prints at most 8 decimals, got precision {precision}")
    value = units * 10 ** (8 - precision)
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // _E8}.{value % _E8:08d}"


def _floor8(units: int, precision: int) -> str:
    """8-decimal text of a product whose precision may exceed 8 (quote volumes): rounded down."""
    if precision <= 8:
        return fixed8(units, precision)
    return fixed8(units // 10 ** (precision - 8), 8)


#: Entries a number-text cache may hold before it is emptied (bounds memory on a long run).
_CACHE_LIMIT: Final = 1 << 16


class _NumberText:
    """Units → 8-decimal text for one precision, cached: every session formats the same
    step, and prices near the mid recur, so most lookups are a dict hit (~60 ns, against
    ~600 ns to format)."""

    __slots__ = ("cache", "precision", "zeros")

    def __init__(self, precision: int) -> None:
        if not 0 <= precision <= 8:
            raise ValueError(f"Binance prints at most 8 decimals, got precision {precision}")
        self.precision = precision
        self.zeros = "0" * (8 - precision)
        self.cache: dict[int, str] = {}

    def __call__(self, units: int) -> str:
        text = self.cache.get(units)
        if text is None:
            text = self.format(units)
        return text

    def format(self, units: int) -> str:
        """Format and remember (the slow path of :meth:`__call__`)."""
        precision = self.precision
        if units < 0 or precision == 0:
            text = fixed8(units, precision)
        else:
            digits = str(units)
            if len(digits) <= precision:
                digits = digits.rjust(precision + 1, "0")
            text = f"{digits[:-precision]}.{digits[-precision:]}{self.zeros}"
        cache = self.cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[units] = text
        return text


class _Instrument:
    """One symbol's spellings and number formatters (shared by all sessions)."""

    __slots__ = ("price", "qty", "stream", "symbol")

    def __init__(self, symbol: str, price_precision: int, qty_precision: int) -> None:
        self.symbol = symbol  # venue spelling, "BTCUSDT"
        self.stream = symbol.lower()  # stream spelling, "btcusdt"
        self.price = _NumberText(price_precision)
        self.qty = _NumberText(qty_precision)


def _levels_text(items: Iterable[tuple[int, int]], inst: _Instrument) -> str:
    """``["p","q"],["p","q"]`` in 8-decimal text (hot path of every depth flush)."""
    prices = inst.price.cache
    qtys = inst.qty.cache
    parts = []
    for price, qty in items:
        p = prices.get(price) or inst.price.format(price)
        q = qtys.get(qty) or inst.qty.format(qty)
        parts.append(f'["{p}","{q}"]')
    return ",".join(parts)


class _DepthStream:
    """One subscribed diff-depth stream: the changes accumulated since its last flush."""

    __slots__ = ("asks", "bids", "first", "inst", "interval", "last", "name", "prefix", "suffix", "window")

    def __init__(self, name: str, inst: _Instrument, interval: int, combined: bool, now_ms: int) -> None:
        self.name = name
        self.inst = inst
        self.interval = interval
        self.window = now_ms // interval  # first flush at the next window boundary
        self.first = -1  # -1: nothing pending
        self.last = -1
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.prefix, self.suffix = _wrapper(name, combined)

    def add(self, step: MarketStep) -> None:
        if self.first < 0:
            self.first = step.first_id
        self.last = step.last_id
        bids = self.bids
        asks = self.asks
        for change in step.changes:
            if change.side == "bid":
                bids[change.price] = change.qty
            else:
                asks[change.price] = change.qty

    def flush(self, now_ms: int) -> OutFrame:
        inst = self.inst
        bids = _levels_text(sorted(self.bids.items(), reverse=True), inst)
        asks = _levels_text(sorted(self.asks.items()), inst)
        text = (
            f'{self.prefix}{{"e":"depthUpdate","E":{now_ms},"s":"{inst.symbol}","U":{self.first},'
            f'"u":{self.last},"b":[{bids}],"a":[{asks}]}}{self.suffix}'
        )
        self.first = -1
        self.bids = {}
        self.asks = {}
        return OutFrame(text, "diff", inst.symbol)


class _KlineStream:
    """One subscribed kline stream: the interval it is in and when it pushes next."""

    __slots__ = ("inst", "interval", "interval_ms", "name", "next_push", "open_ms", "prefix", "suffix")

    def __init__(self, name: str, inst: _Instrument, interval: str, combined: bool, now_ms: int) -> None:
        self.name = name
        self.inst = inst
        self.interval = interval
        self.interval_ms = KLINE_INTERVALS[interval]
        self.open_ms = now_ms - now_ms % self.interval_ms
        self.next_push = now_ms  # the first tick pushes the running kline
        self.prefix, self.suffix = _wrapper(name, combined)


#: Builds one kline payload: (instrument, interval, open_ms, now_ms, closed) → JSON or None.
KlineBuilder = Callable[[_Instrument, str, int, int, bool], str | None]


class _Route:
    """What one session sends for one symbol (rebuilt when subscriptions change)."""

    __slots__ = ("agg", "depth", "inst", "trade")

    def __init__(self, inst: _Instrument) -> None:
        self.inst = inst
        self.depth: list[_DepthStream] = []
        self.trade: tuple[str, str] | None = None  # (prefix, suffix) of @trade
        self.agg: tuple[str, str] | None = None  # (prefix, suffix) of @aggTrade


def _wrapper(stream: str, combined: bool) -> tuple[str, str]:
    return (f'{{"stream":"{stream}","data":', "}") if combined else ("", "")


class _RequestError(Exception):
    """A live request Binance answers with ``{"error":{...},"id":..}``."""

    def __init__(self, code: int, msg: str, request_id: Any = None) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id


class BinanceSession:
    """One client connection: its streams, pending depth changes and request counter.

    Created by :meth:`BinanceSim.accept`. ``combined`` says whether payloads are wrapped
    (``/stream``) or bare (``/ws``); ``SET_PROPERTY ["combined", …]`` changes it.
    :attr:`must_close` turns true (with :attr:`close_reason`) once the client exceeded
    5 incoming messages per second; the server then closes the connection.
    """

    def __init__(
        self,
        instruments: Mapping[str, _Instrument],
        streams: Sequence[str],
        *,
        combined: bool,
        now_ms: int,
        klines: KlineBuilder | None = None,
    ) -> None:
        self._instruments = instruments  # stream spelling -> instrument
        self._kline_builder = klines
        self._klines: dict[str, _KlineStream] = {}
        self.combined = combined
        self.must_close = False
        self.close_reason = ""
        self._streams: dict[str, None] = dict.fromkeys(streams)  # ordered set
        self._depth_state: dict[str, _DepthStream] = {}
        self._routes: dict[str, _Route] = {}
        self._depth: list[_DepthStream] = []
        self._incoming: deque[int] = deque()
        self._rebuild(now_ms)

    def __repr__(self) -> str:
        mode = "combined" if self.combined else "raw"
        return f"BinanceSession({mode}, streams={list(self._streams)})"

    @property
    def streams(self) -> list[str]:
        """Subscribed stream names, in subscription order (what LIST_SUBSCRIPTIONS answers)."""
        return list(self._streams)

    # -- routing ---------------------------------------------------------------------------
    def _rebuild(self, now_ms: int) -> None:
        """Recompute per-symbol routes; depth streams that stay keep their pending changes."""
        routes: dict[str, _Route] = {}
        depth_state: dict[str, _DepthStream] = {}
        klines: dict[str, _KlineStream] = {}
        for name in self._streams:
            match = _STREAM_RE.fullmatch(name)
            assert match is not None  # validated on the way in
            inst = self._instruments[match.group(1)]
            route = routes.get(inst.symbol)
            if route is None:
                route = routes[inst.symbol] = _Route(inst)
            kind = match.group(2)
            if kind in _DEPTH_INTERVALS:
                state = self._depth_state.get(name)
                if state is None:
                    state = _DepthStream(name, inst, _DEPTH_INTERVALS[kind], self.combined, now_ms)
                else:
                    state.prefix, state.suffix = _wrapper(name, self.combined)
                depth_state[name] = state
                route.depth.append(state)
            elif kind == "trade":
                route.trade = _wrapper(name, self.combined)
            elif kind == "aggTrade":
                route.agg = _wrapper(name, self.combined)
            else:  # kline_<interval>: a stream that stays keeps its interval and push clock
                kline = self._klines.get(name)
                if kline is None:
                    kline = _KlineStream(name, inst, kind[len("kline_") :], self.combined, now_ms)
                else:
                    kline.prefix, kline.suffix = _wrapper(name, self.combined)
                klines[name] = kline
        self._routes = routes
        self._klines = klines
        self._depth_state = depth_state
        self._depth = list(depth_state.values())

    # -- VenueSession ------------------------------------------------------------------------
    def on_open(self, now_ms: int) -> list[OutFrame]:
        """Binance sends nothing after the handshake."""
        return []

    def on_step(self, step: MarketStep) -> list[OutFrame]:
        """Trades go out at once; book changes wait in each depth stream for the next flush."""
        route = self._routes.get(step.symbol)
        if route is None:
            return []
        for depth in route.depth:
            depth.add(step)
        if not step.trades or (route.trade is None and route.agg is None):
            return []
        inst = route.inst
        symbol = inst.symbol
        ts = step.ts_ms
        frames: list[OutFrame] = []
        for trade in step.trades:
            price = inst.price(trade.price)
            qty = inst.qty(trade.qty)
            maker = "true" if trade.side == "sell" else "false"  # m: the buyer is the maker
            tid = trade.trade_id
            if route.trade is not None:
                prefix, suffix = route.trade
                frames.append(
                    OutFrame(
                        f'{prefix}{{"e":"trade","E":{ts},"s":"{symbol}","t":{tid},"p":"{price}",'
                        f'"q":"{qty}","T":{trade.ts_ms},"m":{maker},"M":true}}{suffix}',
                        "trade",
                        symbol,
                    )
                )
            if route.agg is not None:
                prefix, suffix = route.agg
                frames.append(
                    OutFrame(
                        f'{prefix}{{"e":"aggTrade","E":{ts},"s":"{symbol}","a":{tid},"p":"{price}",'
                        f'"q":"{qty}","f":{tid},"l":{tid},"T":{trade.ts_ms},"m":{maker},"M":true}}{suffix}',
                        "trade",
                        symbol,
                    )
                )
        return frames

    def on_tick(self, now_ms: int) -> list[OutFrame]:
        """Flush each depth stream with pending changes once per 100 ms (1000 ms) window;
        push klines (the final one of an interval that ended, the running one every 2 s)."""
        frames: list[OutFrame] = []
        for depth in self._depth:
            window = now_ms // depth.interval
            if window != depth.window:
                depth.window = window
                if depth.first >= 0:
                    frames.append(depth.flush(now_ms))
        if self._klines and self._kline_builder is not None:
            self._push_klines(now_ms, self._kline_builder, frames)
        return frames

    def _push_klines(self, now_ms: int, build: KlineBuilder, frames: list[OutFrame]) -> None:
        for kline in self._klines.values():
            current = now_ms - now_ms % kline.interval_ms
            if current > kline.open_ms:
                # The interval ended: its final kline, once, then the new interval's clock.
                payload = build(kline.inst, kline.interval, kline.open_ms, now_ms, True)
                if payload is not None:
                    frames.append(
                        OutFrame(f"{kline.prefix}{payload}{kline.suffix}", "candle", kline.inst.symbol)
                    )
                kline.open_ms = current
                kline.next_push = now_ms + KLINE_PUSH_MS
            elif now_ms >= kline.next_push:
                payload = build(kline.inst, kline.interval, kline.open_ms, now_ms, False)
                if payload is not None:
                    frames.append(
                        OutFrame(f"{kline.prefix}{payload}{kline.suffix}", "candle", kline.inst.symbol)
                    )
                kline.next_push = now_ms + KLINE_PUSH_MS

    def count_incoming(self, now_ms: int) -> bool:
        """Count one incoming message (text, ping or pong); True once the limit is exceeded."""
        incoming = self._incoming
        incoming.append(now_ms)
        while incoming[0] <= now_ms - 1000:
            incoming.popleft()
        if len(incoming) > MAX_INCOMING_PER_S and not self.must_close:
            self.must_close = True
            self.close_reason = f"more than {MAX_INCOMING_PER_S} incoming messages per second"
        return self.must_close

    def on_text(self, text: str, now_ms: int) -> list[OutFrame]:
        """A live request: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET/GET_PROPERTY."""
        if self.count_incoming(now_ms):
            return []  # over the limit: Binance disconnects instead of answering
        try:
            request_id, result = self._request(text, now_ms)
        except _RequestError as exc:
            body = {"error": {"code": exc.code, "msg": exc.msg}, "id": exc.request_id}
            return [OutFrame(orjson.dumps(body).decode(), "ack")]
        return [OutFrame(orjson.dumps({"result": result, "id": request_id}).decode(), "ack")]

    def _request(self, text: str, now_ms: int) -> tuple[Any, Any]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise _RequestError(
                3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}"
            ) from exc
        if type(msg) is not dict:
            raise _RequestError(2, "Invalid request: expected a JSON object")
        method = msg.get("method")
        if "method" not in msg:
            raise _RequestError(2, f"Invalid request: missing field `method` at {_position(text, len(text))}")
        if method not in _METHODS:
            expected = ", ".join(f"`{m}`" for m in _METHODS)
            raise _RequestError(
                2,
                f"Invalid request: unknown variant `{method}`, expected one of {expected} "
                f"at {_position(text, _end_of_value(text, 'method', method))}",
            )
        request_id = msg.get("id")
        if "id" not in msg or not _valid_id(request_id):
            raise _RequestError(2, "Invalid request: request ID must be an unsigned integer")
        params = msg.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if type(params) is not list or not all(type(p) is str for p in params):
                raise _RequestError(2, "Invalid request: params must be a list of stream names", request_id)
            if method == "SUBSCRIBE":
                for name in params:
                    if self._validate_stream(name) is not None:
                        raise _RequestError(2, "Invalid request: invalid stream", request_id)
                fresh = [p for p in dict.fromkeys(params) if p not in self._streams]
                if len(self._streams) + len(fresh) > MAX_STREAMS:
                    raise _RequestError(
                        2, f"Invalid request: more than {MAX_STREAMS} streams per connection", request_id
                    )
                self._streams.update(dict.fromkeys(fresh))
            else:
                for name in params:
                    self._streams.pop(name, None)
            self._rebuild(now_ms)
            return request_id, None
        if method == "LIST_SUBSCRIPTIONS":
            return request_id, list(self._streams)
        # SET_PROPERTY / GET_PROPERTY: "combined" is the only property (§A.1).
        if type(params) is not list or not params or type(params[0]) is not str:
            raise _RequestError(2, "Invalid request: property name must be a string", request_id)
        if params[0] != "combined":
            raise _RequestError(0, "Unknown property", request_id)
        if method == "GET_PROPERTY":
            if len(params) != 1:
                raise _RequestError(2, "Invalid request: too many parameters", request_id)
            return request_id, self.combined
        if len(params) != 2:
            raise _RequestError(2, "Invalid request: too many parameters", request_id)
        if type(params[1]) is not bool:
            raise _RequestError(1, "Invalid value type: expected Boolean", request_id)
        self.combined = params[1]
        self._rebuild(now_ms)
        return request_id, None

    def _validate_stream(self, name: str) -> str | None:
        """None when ``name`` is a served stream, else why not."""
        match = _STREAM_RE.fullmatch(name)
        if match is None:
            return f"unsupported stream {name!r}"
        if match.group(1) not in self._instruments:
            return f"unknown symbol in stream {name!r}"
        return None

    def shutdown_frame(self, now_ms: int) -> OutFrame:
        """The ``serverShutdown`` event (§A.1), wrapped on combined connections."""
        payload = f'{{"e":"serverShutdown","E":{now_ms}}}'
        if self.combined:
            return OutFrame(f'{{"stream":"!serverShutdown","data":{payload}}}', "status")
        return OutFrame(payload, "status")


def _valid_id(value: Any) -> bool:
    """Request ids: 64-bit signed int, alphanumeric string of at most 36, or null (§A.1)."""
    if value is None:
        return True
    if type(value) is int:
        return -_INT64 <= value < _INT64
    return type(value) is str and _ID_RE.fullmatch(value) is not None


def _end_of_value(text: str, key: str, value: Any) -> int:
    """Index just after ``"key": value`` in ``text`` (for serde-style error positions)."""
    start = text.find(f'"{key}"')
    token = orjson.dumps(value).decode()
    at = text.find(token, max(start, 0))
    return len(text) if at < 0 else at + len(token)


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1)
    return f"line {line} column {column}"


class _ApiError(Exception):
    """A REST request Binance refuses with HTTP 400 and ``{"code":..,"msg":..}``."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


_Handler = Callable[[Mapping[str, str], int], Any]


class BinanceSim:
    """Binance Spot over a :class:`~mmdata.sim.model.Market` (see the module docstring).

    ``weight_limit`` is the ``REQUEST_WEIGHT`` budget per clock minute (Binance: 6000).
    """

    name = "binance"

    def __init__(self, market: Market, *, weight_limit: int = 6000) -> None:
        self.market = market
        self.weight_limit = weight_limit
        instruments: dict[str, _Instrument] = {}
        for symbol, spec in market.specs.items():
            try:
                inst = _Instrument(symbol, spec.price_precision, spec.qty_precision)
            except ValueError as exc:
                raise ValueError(f"{symbol}: {exc}") from exc
            instruments[inst.stream] = inst
        self._instruments = instruments
        self._by_symbol = {inst.symbol: inst for inst in instruments.values()}
        self._minute = -1
        self.used_weight = 0
        self._taker_minutes: dict[str, dict[int, tuple[int, int]]] = {}
        self._routes: dict[str, tuple[frozenset[str], _Handler]] = {
            "/api/v3/depth": (frozenset({"symbol", "limit", "symbolStatus"}), self._depth),
            "/api/v3/klines": (
                frozenset({"symbol", "interval", "startTime", "endTime", "timeZone", "limit"}),
                self._klines,
            ),
            "/api/v3/aggTrades": (
                frozenset({"symbol", "fromId", "startTime", "endTime", "limit"}),
                self._agg_trades,
            ),
            "/api/v3/ping": (frozenset(), lambda query, now_ms: {}),
            "/api/v3/time": (frozenset(), lambda query, now_ms: {"serverTime": now_ms}),
        }

    def __repr__(self) -> str:
        return f"BinanceSim(symbols={self.symbols()!r}, weight_limit={self.weight_limit})"

    def symbols(self) -> Sequence[str]:
        """Symbols served, in Binance spelling (``BTCUSDT``)."""
        return list(self._by_symbol)

    # -- WebSocket ---------------------------------------------------------------------------
    def accept(self, path: str, now_ms: int) -> BinanceSession | RestResponse:
        """A session for ``/stream?streams=a/b`` (combined) or ``/ws[/a[/b]]`` (raw), else 400/404."""
        parts = urlsplit(path)
        route = parts.path.rstrip("/")
        if route == "/stream":
            value = dict(parse_qsl(parts.query, keep_blank_values=True)).get("streams", "")
            names = [n for n in value.split("/") if n]
            combined = True
        elif route == "/ws" or route.startswith("/ws/"):
            names = [unquote(n) for n in route[3:].split("/") if n]
            combined = False
        else:
            return RestResponse(404, "")
        names = list(dict.fromkeys(names))
        if len(names) > MAX_STREAMS:
            return _error(
                400, -1101, f"Too many streams; at most {MAX_STREAMS} per connection, got {len(names)}."
            )
        for name in names:
            match = _STREAM_RE.fullmatch(name)
            if match is None:
                return _error(400, -1100, f"Invalid stream name {name!r}.")
            if match.group(1) not in self._instruments:
                return _error(400, -1121, "Invalid symbol.")
        return BinanceSession(
            self._instruments, names, combined=combined, now_ms=now_ms, klines=self._kline_payload
        )

    def _kline_payload(
        self, inst: _Instrument, interval: str, open_ms: int, now_ms: int, closed: bool
    ) -> str | None:
        """The kline event of one interval, from the same candle and row REST answers with."""
        interval_ms = KLINE_INTERVALS[interval]
        symbol = inst.symbol
        candles = self.market.candles(symbol, interval_ms, open_ms, open_ms + interval_ms, limit=1)
        dense = self._dense(symbol, interval_ms, open_ms, open_ms, candles)
        if not dense:
            return None  # before the symbol's first trade: Binance has no kline
        candle = dense[0]
        row = self._kline_row(inst, candle, now_ms)
        return (
            f'{{"e":"kline","E":{now_ms},"s":"{symbol}","k":{{"t":{row[0]},"T":{row[6]},"s":"{symbol}",'
            f'"i":"{interval}","f":{candle.first_trade_id},"L":{candle.last_trade_id},"o":"{row[1]}",'
            f'"c":"{row[4]}","h":"{row[2]}","l":"{row[3]}","v":"{row[5]}","n":{row[8]},'
            f'"x":{"true" if closed else "false"},"q":"{row[7]}","V":"{row[9]}","Q":"{row[10]}","B":"0"}}}}'
        )

    # -- REST ----------------------------------------------------------------------------------
    def rest(self, path: str, query: Mapping[str, str], now_ms: int) -> RestResponse:
        """Answer a REST GET (see the module docstring); every answer carries the used weight."""
        found = self._routes.get(path.rstrip("/"))
        if found is None:
            return RestResponse(404, "")
        allowed, handler = found
        minute = now_ms // 60_000
        if minute != self._minute:
            self._minute = minute
            self.used_weight = 0
        self.used_weight += _weight(path, query)
        headers = {_WEIGHT_HEADER: str(self.used_weight)}
        if self.used_weight > self.weight_limit:
            retry_after = -(-((minute + 1) * 60_000 - now_ms) // 1000)
            msg = (
                f"Too much request weight used; current limit is {self.weight_limit} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
            )
            body = orjson.dumps({"code": -1003, "msg": msg}).decode()
            return RestResponse(429, body, {**headers, "Retry-After": str(max(1, retry_after))})
        try:
            unread = [name for name in query if name not in allowed]
            if unread:
                raise _ApiError(
                    -1104,
                    f"Not all sent parameters were read; read '{len(query) - len(unread)}' "
                    f"parameter(s) but was sent '{len(query)}'.",
                )
            answer = handler(query, now_ms)
        except _ApiError as exc:
            return _error(400, exc.code, exc.msg, headers)
        return RestResponse(200, orjson.dumps(answer).decode(), headers)

    def _symbol(self, query: Mapping[str, str]) -> _Instrument:
        value = query.get("symbol")
        if not value:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        if _SYMBOL_PARAM_RE.fullmatch(value) is None:
            raise _ApiError(
                -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
            )
        inst = self._by_symbol.get(value)
        if inst is None:
            raise _ApiError(-1121, "Invalid symbol.")
        return inst

    def _depth(self, query: Mapping[str, str], now_ms: int) -> Any:
        inst = self._symbol(query)
        limit = min(_int_param(query, "limit", 100, minimum=1), 5000)  # > 5000 → 5000 (§A.3)
        status = query.get("symbolStatus")
        if status is not None:
            if status not in ("TRADING", "HALT", "BREAK"):
                raise _ApiError(-1130, "Data sent for parameter 'symbolStatus' is not valid.")
            if status != "TRADING":
                raise _ApiError(-1220, "The symbol's status does not match the requested symbolStatus.")
        update_id = self.market.update_id(inst.symbol)
        bids, asks = self.market.book(inst.symbol)
        price = inst.price
        qty = inst.qty
        return {
            "lastUpdateId": update_id,
            "bids": [[price(p), qty(q)] for p, q in bids[:limit]],
            "asks": [[price(p), qty(q)] for p, q in asks[:limit]],
        }

    def _klines(self, query: Mapping[str, str], now_ms: int) -> Any:
        inst = self._symbol(query)
        interval_text = query.get("interval")
        if not interval_text:
            raise _ApiError(
                -1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed."
            )
        interval = KLINE_INTERVALS.get(interval_text)
        if interval is None:
            raise _ApiError(-1120, "Invalid interval.")
        if query.get("timeZone", "0") not in ("0", "+0", "00:00", "+00:00", "-0"):
            raise _ApiError(-1130, "Data sent for parameter 'timeZone' is not valid.")
        limit = min(_int_param(query, "limit", 500, minimum=1), 1000)
        start = _opt_int(query, "startTime")
        end = _opt_int(query, "endTime")
        # Klines are selected by open time, startTime <= open <= endTime, and none opens after now.
        symbol = inst.symbol
        newest = min(now_ms if end is None else end, now_ms) // interval * interval
        if start is not None:  # the oldest `limit` from startTime (§A.5 "General")
            first = -(-start // interval) * interval
            if newest < first:
                return []
            if self._last_candle_before(symbol, interval, first) is None:
                # Nothing traded before startTime: klines begin with the first trade (a listing).
                head = self.market.candles(symbol, interval, first, newest + 1, limit=1)
                if not head:
                    return []
                first = head[0].open_ms
            newest = min(newest, first + (limit - 1) * interval)
        else:  # the most recent `limit` up to endTime / now
            first = newest - (limit - 1) * interval
        candles = self.market.candles(symbol, interval, first, newest + 1, limit=limit)
        dense = self._dense(symbol, interval, first, newest, candles)
        return [self._kline_row(inst, c, now_ms) for c in dense]

    def _dense(
        self, symbol: str, interval: int, first: int, newest: int, candles: list[SimCandle]
    ) -> list[SimCandle]:
        """One kline per interval from ``first`` to ``newest``, as Binance sends them.

        ``Market.candles`` omits intervals without trades; Binance has a kline for each,
        with no volume and open = high = low = close = the previous close. Intervals before
        the symbol's first trade have no kline.
        """
        by_open = {c.open_ms: c for c in candles}
        prev: int | None = None
        if first not in by_open:
            before = self._last_candle_before(symbol, interval, first)
            prev = None if before is None else before.close
        out: list[SimCandle] = []
        for open_ms in range(first, newest + 1, interval):
            candle = by_open.get(open_ms)
            if candle is None:
                if prev is None:
                    continue
                candle = SimCandle(open_ms, interval, prev, prev, prev, prev, 0, 0, 0, -1, -1)
            prev = candle.close
            out.append(candle)
        return out

    def _last_candle_before(self, symbol: str, interval: int, stop: int) -> SimCandle | None:
        """The newest candle opening before ``stop`` (None before the market's first trade)."""
        hi = stop
        for _ in range(_MAX_KLINE_WINDOWS):
            lo = hi - 1000 * interval  # at most 1000 candles per window: the last one is the newest
            chunk = self.market.candles(symbol, interval, lo, hi, limit=1000)
            if chunk:
                return chunk[-1]
            hi = lo
        return None

    def _kline_row(self, inst: _Instrument, candle: SimCandle, now_ms: int) -> list[Any]:
        pp = inst.price.precision
        qp = inst.qty.precision
        buy_volume, buy_quote = self._taker_buy(inst, candle, now_ms)
        return [
            candle.open_ms,
            fixed8(candle.open, pp),
            fixed8(candle.high, pp),
            fixed8(candle.low, pp),
            fixed8(candle.close, pp),
            fixed8(candle.volume, qp),
            candle.open_ms + candle.interval_ms - 1,
            _floor8(candle.quote_volume, pp + qp),
            candle.trades,
            fixed8(buy_volume, qp),
            _floor8(buy_quote, pp + qp),
            "0",
        ]

    def _taker_buy(self, inst: _Instrument, candle: SimCandle, now_ms: int) -> tuple[int, int]:
        """Taker-buy base and quote volume of a candle (``SimCandle`` does not carry them).

        Summed from the candle's own trades; finished minutes are remembered per symbol so
        that a month of hourly or daily klines reads each past trade once per process.
        """
        volume = getattr(candle, "taker_buy_volume", None)
        quote = getattr(candle, "taker_buy_quote_volume", None)
        if isinstance(volume, int) and isinstance(quote, int):
            return volume, quote
        if candle.trades <= 0:
            return 0, 0
        minutes = range(candle.open_ms, candle.open_ms + candle.interval_ms, _MINUTE_MS)
        cache = self._taker_minutes.setdefault(inst.symbol, {})
        if all(m in cache for m in minutes):
            volume = quote = 0
            for m in minutes:
                v, q = cache[m]
                volume += v
                quote += q
            return volume, quote
        trades = self.market.trades(
            inst.symbol,
            start_ms=candle.open_ms,
            end_ms=candle.open_ms + candle.interval_ms,
            from_id=candle.first_trade_id,
            limit=candle.last_trade_id - candle.first_trade_id + 1,
        )
        per_minute: dict[int, tuple[int, int]] = {}
        volume = quote = 0
        for trade in trades:
            if trade.side == "buy":
                value = trade.price * trade.qty
                volume += trade.qty
                quote += value
                m = trade.ts_ms - trade.ts_ms % _MINUTE_MS
                v, q = per_minute.get(m, (0, 0))
                per_minute[m] = (v + trade.qty, q + value)
        if len(cache) > _TAKER_CACHE_LIMIT:
            cache.clear()
        for m in minutes:
            if m + _MINUTE_MS <= now_ms:  # a finished minute cannot change any more
                cache[m] = per_minute.get(m, (0, 0))
        return volume, quote

    def _agg_trades(self, query: Mapping[str, str], now_ms: int) -> Any:
        inst = self._symbol(query)
        limit = min(_int_param(query, "limit", 500, minimum=1), 1000)
        from_id = _opt_int(query, "fromId")
        start = _opt_int(query, "startTime")
        end = _opt_int(query, "endTime")
        end_ms = end + 1 if end is not None else None  # endTime is inclusive (§A.5)
        # Only endTime, or nothing at all: the most recent trades (§A.5 "General").
        newest_first = from_id is None and start is None
        trades: list[SimTrade] = self.market.trades(
            inst.symbol,
            start_ms=start,
            end_ms=end_ms,
            from_id=from_id,
            limit=limit,
            newest_first=newest_first,
        )
        if newest_first:
            trades = sorted(trades, key=lambda t: t.trade_id)
        price = inst.price
        qty = inst.qty
        return [
            {
                "a": t.trade_id,
                "p": price(t.price),
                "q": qty(t.qty),
                "f": t.trade_id,
                "l": t.trade_id,
                "T": t.ts_ms,
                "m": t.side == "sell",
                "M": True,
            }
            for t in trades
        ]


def _weight(path: str, query: Mapping[str, str]) -> int:
    """Request weight (§A.3, §A.5): depth by limit, klines 2, aggTrades 4, ping/time 1."""
    path = path.rstrip("/")
    if path == "/api/v3/depth":
        text = query.get("limit", "100")
        limit = int(text) if _DIGITS_RE.fullmatch(text) else 100
        for highest, weight in DEPTH_WEIGHTS:
            if limit <= highest:
                return weight
        return DEPTH_WEIGHTS[-1][1]
    if path == "/api/v3/klines":
        return 2
    if path == "/api/v3/aggTrades":
        return 4
    return 1


def _opt_int(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    if _DIGITS_RE.fullmatch(text) is None:
        raise _ApiError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(text)


def _int_param(query: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    value = _opt_int(query, name)
    if value is None:
        return default
    if value < minimum:
        raise _ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return value


def _error(status: int, code: int, msg: str, headers: Mapping[str, str] | None = None) -> RestResponse:
    return RestResponse(status, orjson.dumps({"code": code, "msg": msg}).decode(), dict(headers or {}))
