"""Simulated Kraken Spot WebSocket v2 and public REST (PROTOCOLS.md §B) over a :class:`Market`.

Theory of operation
-------------------
:class:`KrakenSim` is the venue; :meth:`KrakenSim.accept` hands each WebSocket
connection on ``/v2`` its own :class:`KrakenSession`, which holds that client's
subscriptions and, per subscribed book, the *visible* book: the top ``depth`` levels as
this client was last told them. Everything is sans-I/O: the server passes frames and
``now_ms`` in, and sends the :class:`~mmdata.sim.model.OutFrame` texts that come back.

Connection (§B.1)::

    ← {"channel":"status","type":"update","data":[{"version":"2.0.10","system":"online",
        "api_version":"v2","connection_id":17408390984690501469}]}
    → {"method":"subscribe","params":{"channel":"book","symbol":["BTC/USD"],"depth":10},"req_id":2}
    ← {"method":"subscribe","req_id":2,"result":{"channel":"book","depth":10,"snapshot":true,
        "symbol":"BTC/USD"},"success":true,"time_in":"2023-10-06T17:35:55.219000Z",
        "time_out":"2023-10-06T17:35:55.219000Z"}                          (one ack per symbol)
    ← {"channel":"book","type":"snapshot","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,
        "qty":0.1},...],"asks":[...],"checksum":3310070434,"timestamp":"2023-10-06T17:35:55.219000Z"}]}
    ← {"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":45283.5,
        "qty":0},{"price":45276.5,"qty":0.2}],"asks":[],"checksum":2114181697,
        "timestamp":"2023-10-06T17:35:55.440000Z"}]}
    ← {"channel":"heartbeat"}                       (a second without any other frame)

Responses to requests (acks, errors, pong) carry their keys in alphabetical order, as
the real venue's do (``error``, ``method``, ``req_id``, ``result``, ``success``,
``symbol``, ``time_in``, ``time_out``); refusals look like
``{"error":"Currency pair not supported BTC/XYZ","method":"subscribe","req_id":2,
"success":false,"symbol":"BTC/XYZ","time_in":"…","time_out":"…"}``.

Book updates (§B.2 "Truncation")
--------------------------------
Kraken does not send ``"qty":0`` for a level that is merely pushed out of the
subscribed depth by a better insert: the client must truncate to its depth after every
message. It does send ``"qty":0`` for a level that left the book while inside the
window, together with the *refill* level(s) that enter at the edge. Each step of the
market therefore becomes at most one update frame per subscribed book holding:

* every level new or changed inside the new window (refills included),
* ``qty 0`` for every level that vanished from the market while inside the old window,
* nothing for levels only pushed beyond the new window; and no frame at all when the
  window did not change.

Why truncation then yields exactly the new window: the client's book is the old
window plus this message. A pushed-out level is still in the market but ranks below
the ``depth`` levels of the new window (which is full, since the market has more
levels than ``depth``), so truncating drops exactly those. Vanished levels are deleted
explicitly; new and changed levels are written.

Cost: a step touches a handful of levels. Per side, a change beyond the edge of a full
window cannot matter and is skipped by one comparison; the rest are applied to the
visible side (sorted ``list`` of keys + ``dict`` of quantities, ``bisect`` for order).
When deletions leave a once-full window short, the refill comes from a *mirror*: one
full copy of each symbol's book kept by :class:`KrakenSim`, built once from
:meth:`Market.book` and then advanced by each step's changes (identified by its update
ids, so it is applied once however many sessions deliver the step). Sessions never
copy books per step.

Integers inside: a price key is the price in ``10**-price_precision`` units (negated
on the bid side so that ascending order is best first on both sides), a quantity is in
``10**-qty_precision`` units. Wire numbers are JSON numbers printed like Kraken's
floats with :func:`~mmdata.sim.model.trimmed_text` (``"qty":0.8``, ``"price":45000``).

Checksum (§B.3): CRC-32 over the top 10 asks then the top 10 bids of the visible book,
each level written as price and quantity with the instrument's precisions, ``.``
removed and leading zeros stripped. For integer units that text is simply
``str(units)``, so the checksum string is built without any decimal formatting.

Trades (§B.4): one ``trade`` update frame per step with trades, ``side`` = taker side,
``ord_type`` derived deterministically from the trade id (``limit`` for every third
id, else ``market``). ``snapshot: true`` sends the 50 most recent trades first.

Candles (§B.6): ``{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],
"interval":5},"req_id":4}`` (``interval`` one of :data:`OHLC_INTERVALS`, default 1;
``snapshot`` default true; several intervals per symbol allowed) gets one ack per symbol,
then a snapshot of the candles of the last :data:`OHLC_SNAPSHOT` intervals that had
trades, oldest first, and an update carrying the running candle after every step that
traded, as Kraken generates them on trade events::

    {"channel":"ohlc","type":"update","timestamp":"2023-10-04T15:31:02.123000Z","data":[
     {"symbol":"BTC/USD","open":30306.1,"high":30306.2,"low":30305.7,"close":30305.7,
      "trades":23,"volume":3.39243896,"vwap":30306.1,"interval_begin":"2023-10-04T15:30:00.000000000Z",
      "interval":5,"timestamp":"2023-10-04T15:35:00.000000Z"}]}

Values are :meth:`Market.candles` of that interval — what ``/0/public/OHLC`` serves (REST
writes them as fixed-decimal strings, the socket as JSON numbers) — ``vwap`` rounded to the
price precision. Intervals without trades send nothing (REST shows them as flat rows).

REST (§B.7, host root)
----------------------
``GET /0/public/OHLC?pair=BTCUSD&interval=60&since=…`` →
``{"error":[],"result":{"BTCUSD":[[1688671200,"30306.1","30306.2","30305.7","30305.7",
"30306.1","3.39243896",23],…],"last":1688672160}}``: always the 720 most recent
intervals up to the one holding ``now_ms`` (the not-yet-committed candle, always the
last row), intervals without trades as flat rows at the previous close with volume 0;
``since`` (seconds) only filters rows to ``time > since`` (the current row stays);
``last`` is the open time of the last committed interval.

``GET /0/public/Trades?pair=BTCUSD&since=…&count=…`` →
``{"error":[],"result":{"BTCUSD":[["30243.4","0.34507674",1688669597.827,"b","m","",61044952],…],
"last":"1688669597827000001"}}``. ``since``/``last`` are nanosecond ids. Simulated
trades have millisecond times, so the *i*-th trade (from 0, by id) of a millisecond
``ms`` gets the id ``ms * 10**6 + i + 1``; a page holds the trades whose id is greater
than ``since``, oldest first, and ``last`` is the id of its last trade. Paging with
``last`` therefore returns every trade exactly once even when many share a
millisecond. Without ``since`` the newest ``count`` trades come back. ``since`` below
``10**11`` is read as seconds (decimals allowed).

``pair`` may be ``BTC/USD``, ``BTCUSD`` or ``XBTUSD`` (``DOGE`` ↔ ``XDG`` likewise); the
result key is the request's pair text without ``/``. Errors follow Kraken:
HTTP 200 with ``{"error":["EQuery:Unknown asset pair"]}``, ``EGeneral:Invalid arguments``.

Fault hooks for the server: :meth:`KrakenSession.status_frame` (a ``status`` update,
e.g. ``maintenance``) and :meth:`KrakenSession.corrupt_next_checksum`.
"""

from __future__ import annotations

import time
import zlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import orjson

from mmdata.sim.model import (
    FrameKind,
    InstrumentSpec,
    Market,
    MarketStep,
    OutFrame,
    RestResponse,
    SimCandle,
    SimTrade,
    decimal_text,
    trimmed_text,
)

__all__ = [
    "BOOK_DEPTHS",
    "OHLC_INTERVALS",
    "OHLC_SNAPSHOT",
    "SYSTEM_STATES",
    "KrakenSession",
    "KrakenSim",
]

#: ``depth`` values the ``book`` channel accepts (§B.2); 10 is the default.
BOOK_DEPTHS: Final = (10, 25, 100, 500, 1000)
#: OHLC intervals in minutes (§B.6, §B.7).
OHLC_INTERVALS: Final = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
#: Intervals whose candles (those with trades) an ``ohlc`` snapshot holds.
OHLC_SNAPSHOT: Final = 10
#: ``system`` values of the ``status`` channel (§B.1).
SYSTEM_STATES: Final = ("online", "cancel_only", "maintenance", "post_only")

_API_VERSION: Final = "2.0.10"
_TRADE_SNAPSHOT: Final = 50
_OHLC_ROWS: Final = 720
_TRADES_MAX: Final = 1000
_CHECKSUM_LEVELS: Final = 10
_HEARTBEAT_MS: Final = 1000
_NS_PER_MS: Final = 1_000_000
_SECONDS_SINCE_LIMIT: Final = 10**11  # `since` below this is seconds, not nanoseconds
_CONN_BASE: Final = 17408390984690501469
_CONN_STEP: Final = 0x9E3779B97F4A7C15
_V1_ASSETS: Final = {"BTC": "XBT", "DOGE": "XDG"}
_JSON_HEADERS: Final = {"Content-Type": "application/json; charset=utf-8"}
_HEARTBEAT: Final = OutFrame('{"channel":"heartbeat"}', "heartbeat")
_CACHE_MAX: Final = 4096

_crc32 = zlib.crc32
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS


def _ord_type(trade_id: int) -> str:
    """Taker order type of a trade: deterministic, about one in three ``limit``."""
    return "limit" if trade_id % 3 == 0 else "market"


def _float_text(units: int, precision: int) -> str:
    """How Kraken prints instrument metadata floats (``1e-08``, ``0.1``, ``5e-05``)."""
    return repr(float(Decimal(units).scaleb(-precision)))


class _Side:
    """One side of a book: ``keys`` ascending = best first (bids keyed by negated price).

    ``tok`` (visible books only) caches each level's checksum text ``str(price) + str(qty)``
    (§B.3 for integer units), so a checksum is a join of cached strings.
    """

    __slots__ = ("keys", "qty", "sign", "tok")

    def __init__(self, sign: int, qty: dict[int, int], keys: list[int] | None = None) -> None:
        self.sign = sign
        self.qty = qty
        self.keys = sorted(qty) if keys is None else keys
        self.tok: dict[int, str] = {}

    def top(self, depth: int) -> _Side:
        """The best ``depth`` levels as a new side with checksum tokens."""
        keys = self.keys[:depth]
        qty = self.qty
        side = _Side(self.sign, {k: qty[k] for k in keys}, keys)
        sign = self.sign
        side.tok = {k: f"{k * sign}{qty[k]}" for k in keys}
        return side


def _checksum(asks: _Side, bids: _Side) -> int:
    """§B.3: CRC-32 of the top 10 asks then the top 10 bids (cached level tokens)."""
    text = "".join(map(asks.tok.__getitem__, asks.keys[:_CHECKSUM_LEVELS]))
    text += "".join(map(bids.tok.__getitem__, bids.keys[:_CHECKSUM_LEVELS]))
    return _crc32(text.encode())


def _qty_text(units: int, precision: int, scale: int) -> str:
    """:func:`~mmdata.sim.model.trimmed_text` for non-negative units, faster (hot path).

    ``scale`` is ``10**precision``; tests check equality with ``trimmed_text``.
    """
    whole, frac = divmod(units, scale)
    if not frac:
        return str(whole)
    return f"{whole}.{str(frac).rjust(precision, '0').rstrip('0')}"


class _Numbers:
    """One symbol's wire numbers: JSON numbers printed like Kraken's floats (``0.8``, ``45000``)."""

    __slots__ = ("pp", "prices", "qp", "qscale")

    def __init__(self, spec: InstrumentSpec) -> None:
        self.pp = spec.price_precision
        self.qp = spec.qty_precision
        self.qscale = 10**self.qp
        self.prices: dict[int, str] = {}  # prices recur; quantities rarely do

    def price(self, units: int) -> str:
        text = self.prices.get(units)
        if text is None:
            if len(self.prices) >= _CACHE_MAX:
                self.prices.clear()
            text = self.prices[units] = trimmed_text(units, self.pp)
        return text

    def qty(self, units: int) -> str:
        return _qty_text(units, self.qp, self.qscale)

    def levels(self, levels: Iterable[tuple[int, int]], sign: int) -> str:
        """``{"price":…,"qty":…}`` objects for ``(key, qty)`` levels (price = key × sign)."""
        price, qp, scale = self.price, self.qp, self.qscale
        return ",".join([f'{{"price":{price(k * sign)},"qty":{_qty_text(q, qp, scale)}}}' for k, q in levels])


# -- books ------------------------------------------------------------------------------------------
class _Mirror:
    """One symbol's full book, advanced by each step's changes once."""

    __slots__ = ("asks", "bids", "last_id")

    def __init__(
        self, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]], last_id: int
    ) -> None:
        self.bids = _Side(-1, {-p: q for p, q in bids if q > 0})
        self.asks = _Side(1, {p: q for p, q in asks if q > 0})
        self.last_id = last_id

    def apply(self, step: MarketStep) -> None:
        bids, asks = self.bids, self.asks
        for change in step.changes:
            if change.side == "bid":
                side, key = bids, -change.price
            else:
                side, key = asks, change.price
            qtys = side.qty
            if change.qty > 0:
                if key not in qtys:
                    insort(side.keys, key)
                qtys[key] = change.qty
            elif key in qtys:
                del qtys[key]
                del side.keys[bisect_left(side.keys, key)]
        self.last_id = step.last_id


class _BookView:
    """What one client holds of one book: the top ``depth`` levels as last sent."""

    __slots__ = ("asks", "bids", "depth", "symbol_json")

    def __init__(self, mirror: _Mirror, depth: int, symbol_json: str) -> None:
        self.depth = depth
        self.symbol_json = symbol_json
        self.bids = mirror.bids.top(depth)
        self.asks = mirror.asks.top(depth)

    def checksum(self) -> int:
        return _checksum(self.asks, self.bids)


def _update_side(side: _Side, last: dict[int, int], depth: int, mirror: _Side) -> list[tuple[int, int]]:
    """Apply one step's final quantities (``last``) to a visible side; return what to send.

    Invariant: ``side.keys`` are the best ``len(side.keys)`` levels of the market and
    number ``min(depth, levels in the market)``; ``mirror`` is already past the step.
    """
    keys, qtys, tok, sign = side.keys, side.qty, side.tok, side.sign
    full = len(keys) >= depth
    edge = keys[-1] if full else 0
    sent: list[tuple[int, int]] = []
    undo: list[tuple[int, int | None]] = []
    for key, qty in last.items():
        if full and key > edge:
            continue  # beyond a full window: cannot enter it (a refill reads the mirror)
        old = qtys.get(key)
        if qty:
            if old is None:
                insort(keys, key)
            elif old == qty:
                continue
            qtys[key] = qty
            tok[key] = f"{key * sign}{qty}"
            sent.append((key, qty))
            undo.append((key, old))
        elif old is not None:
            del qtys[key]
            del tok[key]
            del keys[bisect_left(keys, key)]
            sent.append((key, 0))  # vanished while visible: the client must be told
            undo.append((key, old))
    if not sent:
        return sent
    count = len(keys)
    if count > depth:
        # Pushed out by better inserts: dropped silently, the client truncates (§B.2).
        for key in keys[depth:]:
            del qtys[key]
            del tok[key]
        del keys[depth:]
        edge = keys[-1]
        return [(k, q) for k, q in sent if not q or k <= edge]
    mirror_keys = mirror.keys
    if count < depth and len(mirror_keys) > count:
        # Deletions left the window short: the levels just beyond its edge enter.
        start = bisect_right(mirror_keys, keys[-1]) if keys else 0
        if start != count:
            return _resync_side(side, depth, mirror, undo)
        mirror_qty = mirror.qty
        for key in mirror_keys[start:depth]:
            qty = mirror_qty[key]
            keys.append(key)
            qtys[key] = qty
            tok[key] = f"{key * sign}{qty}"
            sent.append((key, qty))
    return sent


def _resync_side(
    side: _Side, depth: int, mirror: _Side, undo: list[tuple[int, int | None]]
) -> list[tuple[int, int]]:
    """Fallback when the market disagrees with the steps seen: send the whole difference.

    Only reached if the market's book and its steps disagree (or a step was missed);
    the client's window is rebuilt from ``undo`` and diffed against the mirror.
    """
    client = dict(side.qty)
    for key, old in reversed(undo):
        if old is None:
            client.pop(key, None)
        else:
            client[key] = old
    fresh = mirror.top(depth)
    out = [(k, q) for k, q in fresh.qty.items() if client.get(k) != q]
    # Old levels gone from the market are deleted; ones still there rank below a full window.
    out += [(k, 0) for k in sorted(client) if k not in fresh.qty and k not in mirror.qty]
    side.keys, side.qty, side.tok = fresh.keys, fresh.qty, fresh.tok
    return out


# -- the venue --------------------------------------------------------------------------------------
class KrakenSim:
    """Kraken Spot WebSocket v2 (``/v2``) and public REST (``/0/public/...``) over ``market``.

    Symbols are the market's (Kraken v2 spelling, ``BTC/USD``).
    """

    name: str = "kraken"

    def __init__(self, market: Market) -> None:
        self.market = market
        self._specs: dict[str, InstrumentSpec] = dict(market.specs)
        self._aliases: dict[str, str] = {}
        for symbol in self._specs:
            base, _, quote = symbol.partition("/")
            for b in {base, _V1_ASSETS.get(base, base)}:
                for q in {quote, _V1_ASSETS.get(quote, quote)}:
                    self._aliases[f"{b}{q}".upper()] = symbol
            self._aliases[symbol.upper()] = symbol
        self._mirrors: dict[str, _Mirror] = {}
        self._connections = 0
        self._seconds: dict[int, str] = {}
        self._last_ms = -1
        self._last_stamp = ""
        self._numbers = {s: _Numbers(spec) for s, spec in self._specs.items()}
        self._split_step: MarketStep | None = None
        self._split: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self._trade_step: MarketStep | None = None
        self._trade_text = ""
        self._ohlc_step: MarketStep | None = None
        self._ohlc_texts: dict[int, str] = {}
        self._instrument_text = self._build_instrument_frame()

    # -- VenueSim -------------------------------------------------------------------------------
    def symbols(self) -> Sequence[str]:
        """Symbols served, Kraken v2 spelling."""
        return list(self._specs)

    def accept(self, path: str, now_ms: int) -> KrakenSession | RestResponse:
        """A session for ``/v2`` (query ignored); 404 for any other path."""
        if path.partition("?")[0] not in ("/v2", "/v2/"):
            return RestResponse(404, '{"error":"Not Found"}', _JSON_HEADERS)
        connection_id = (_CONN_BASE + self._connections * _CONN_STEP) % 2**64
        self._connections += 1
        return KrakenSession(self, connection_id)

    def rest(self, path: str, query: Mapping[str, str], now_ms: int) -> RestResponse:
        """``/0/public/OHLC`` and ``/0/public/Trades`` (see the module docstring)."""
        route = path.partition("?")[0].rstrip("/")
        if route == "/0/public/OHLC":
            return self._ohlc(query, now_ms)
        if route == "/0/public/Trades":
            return self._trades(query)
        return RestResponse(404, '{"error":["EGeneral:Unknown method"]}', _JSON_HEADERS)

    # -- shared helpers -------------------------------------------------------------------------
    def resolve_pair(self, text: str) -> str | None:
        """The symbol for a REST ``pair`` (``BTC/USD``, ``BTCUSD``, ``XBTUSD``), or None."""
        return self._aliases.get(text.strip().upper())

    def timestamp(self, ms: int) -> str:
        """RFC 3339 with microseconds and ``Z`` (``2023-10-06T17:35:55.440000Z``)."""
        if ms == self._last_ms:  # every session formats the same step's time
            return self._last_stamp
        sec, milli = divmod(ms, 1000)
        head = self._seconds.get(sec)
        if head is None:
            if len(self._seconds) >= _CACHE_MAX:
                self._seconds.clear()
            head = self._seconds[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        self._last_ms = ms
        self._last_stamp = f"{head}.{milli:03d}000Z"
        return self._last_stamp

    def _mirror(self, symbol: str) -> _Mirror:
        """The symbol's mirror, rebuilt from the market unless it is at the market's state."""
        mirror = self._mirrors.get(symbol)
        update_id = self.market.update_id(symbol)
        if mirror is None or mirror.last_id != update_id:
            bids, asks = self.market.book(symbol)
            mirror = self._mirrors[symbol] = _Mirror(bids, asks, update_id)
        return mirror

    def _advance(self, step: MarketStep) -> _Mirror:
        """The mirror after ``step`` (applied once, whichever session delivers it first)."""
        mirror = self._mirrors.get(step.symbol)
        if mirror is not None:
            if step.last_id <= mirror.last_id:
                return mirror
            if step.first_id == mirror.last_id + 1:
                mirror.apply(step)
                return mirror
        return self._mirror(step.symbol)  # never seen, or steps were missed: re-read the market

    def _split_changes(self, step: MarketStep) -> tuple[dict[int, int], dict[int, int]]:
        """Final quantity per touched key, bids then asks (memoised for the current step)."""
        if step is not self._split_step:
            bids: dict[int, int] = {}
            asks: dict[int, int] = {}
            for change in step.changes:
                if change.side == "bid":
                    bids[-change.price] = change.qty
                else:
                    asks[change.price] = change.qty
            self._split_step = step
            self._split = (bids, asks)
        return self._split

    def _trade_json(self, symbol_json: str, spec: InstrumentSpec, trade: SimTrade) -> str:
        return (
            f'{{"symbol":{symbol_json},"side":"{trade.side}",'
            f'"price":{trimmed_text(trade.price, spec.price_precision)},'
            f'"qty":{trimmed_text(trade.qty, spec.qty_precision)},'
            f'"ord_type":"{_ord_type(trade.trade_id)}","trade_id":{trade.trade_id},'
            f'"timestamp":"{self.timestamp(trade.ts_ms)}"}}'
        )

    def _trade_frame(self, step: MarketStep, symbol_json: str) -> str:
        """The step's trade update (memoised: identical for every session)."""
        if step is not self._trade_step:
            spec = self._specs[step.symbol]
            items = ",".join([self._trade_json(symbol_json, spec, t) for t in step.trades])
            self._trade_text = f'{{"channel":"trade","type":"update","data":[{items}]}}'
            self._trade_step = step
        return self._trade_text

    def _ohlc_json(self, symbol: str, candle: SimCandle) -> str:
        """One ``ohlc`` candle object (§B.6), numbers as Kraken's JSON floats."""
        spec = self._specs[symbol]
        pp, qp = spec.price_precision, spec.qty_precision
        minutes = candle.interval_ms // 60_000
        begin = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(candle.open_ms // 1000))
        end = self.timestamp(candle.open_ms + candle.interval_ms)
        return (
            f'{{"symbol":{_dumps(symbol).decode()},"open":{trimmed_text(candle.open, pp)},'
            f'"high":{trimmed_text(candle.high, pp)},"low":{trimmed_text(candle.low, pp)},'
            f'"close":{trimmed_text(candle.close, pp)},"trades":{candle.trades},'
            f'"volume":{trimmed_text(candle.volume, qp)},'
            f'"vwap":{trimmed_text(_vwap(candle.quote_volume, candle.volume), pp)},'
            f'"interval_begin":"{begin}.000000000Z","interval":{minutes},"timestamp":"{end}"}}'
        )

    def _ohlc_snapshot(self, symbol: str, minutes: int, now_ms: int) -> OutFrame:
        step_ms = minutes * 60_000
        current = now_ms - now_ms % step_ms
        first = current - (OHLC_SNAPSHOT - 1) * step_ms
        candles = self.market.candles(symbol, step_ms, first, current + step_ms, limit=OHLC_SNAPSHOT)
        items = ",".join(self._ohlc_json(symbol, c) for c in candles)
        text = (
            f'{{"channel":"ohlc","type":"snapshot","timestamp":"{self.timestamp(now_ms)}","data":[{items}]}}'
        )
        return OutFrame(text, "candle", symbol)

    def _ohlc_update(self, step: MarketStep, minutes: int) -> str | None:
        """The running candle after a step that traded (memoised: the same for every session)."""
        if step is not self._ohlc_step:
            self._ohlc_step = step
            self._ohlc_texts = {}
        text = self._ohlc_texts.get(minutes)
        if text is None:
            step_ms = minutes * 60_000
            ts = step.trades[-1].ts_ms
            begin = ts - ts % step_ms
            candles = self.market.candles(step.symbol, step_ms, begin, begin + step_ms, limit=1)
            if not candles:
                return None
            items = self._ohlc_json(step.symbol, candles[0])
            text = (
                f'{{"channel":"ohlc","type":"update","timestamp":"{self.timestamp(step.ts_ms)}",'
                f'"data":[{items}]}}'
            )
            self._ohlc_texts[minutes] = text
        return text

    def _build_instrument_frame(self) -> str:
        assets: dict[str, dict[str, Any]] = {}
        pairs: list[str] = []
        for symbol, spec in self._specs.items():
            base, _, quote = symbol.partition("/")
            for asset, precision in ((base, max(spec.qty_precision, 8)), (quote, 4)):
                assets.setdefault(
                    asset,
                    {
                        "id": asset,
                        "status": "enabled",
                        "precision": precision,
                        "precision_display": min(precision, 5),
                        "borrowable": False,
                        "collateral_value": 0.0,
                        "margin_rate": 0.02,
                    },
                )
            pp, qp = spec.price_precision, spec.qty_precision
            qty_min = 10 ** (qp - 4) if qp >= 4 else 1
            pairs.append(
                f'{{"symbol":{_dumps(symbol).decode()},"base":{_dumps(base).decode()},'
                f'"quote":{_dumps(quote).decode()},"status":"online",'
                f'"qty_precision":{qp},"qty_increment":{_float_text(1, qp)},'
                f'"price_precision":{pp},"price_increment":{_float_text(spec.tick, pp)},'
                f'"cost_precision":{max(5, pp + 2)},"qty_min":{_float_text(qty_min, qp)},'
                f'"cost_min":0.5,"marginable":false,"has_index":true}}'
            )
        return (
            '{"channel":"instrument","type":"snapshot","data":{"assets":'
            f'{_dumps(list(assets.values())).decode()},"pairs":[{",".join(pairs)}]}}}}'
        )

    # -- REST -----------------------------------------------------------------------------------
    def _ohlc(self, query: Mapping[str, str], now_ms: int) -> RestResponse:
        pair_text = query.get("pair", "")
        symbol = self.resolve_pair(pair_text)
        if symbol is None:
            return _rest_error("EQuery:Unknown asset pair")
        try:
            interval = int(query.get("interval", "1"))
            since = int(query["since"]) if query.get("since") else None
        except ValueError:
            return _rest_error("EGeneral:Invalid arguments")
        if interval not in OHLC_INTERVALS:
            return _rest_error("EGeneral:Invalid arguments")
        spec = self._specs[symbol]
        pp, qp = spec.price_precision, spec.qty_precision
        step_ms = interval * 60_000
        current = now_ms // step_ms * step_ms
        first = current - (_OHLC_ROWS - 1) * step_ms
        candles = {
            c.open_ms: c
            for c in self.market.candles(symbol, step_ms, first, current + step_ms, limit=_OHLC_ROWS)
        }
        close: int | None = None
        if first not in candles:
            before = self.market.trades(symbol, end_ms=first, limit=1, newest_first=True)
            close = before[-1].price if before else None
        rows: list[str] = []
        for open_ms in range(first, current + step_ms, step_ms):
            candle = candles.get(open_ms)
            if candle is not None:
                close = candle.close
                row_text = (
                    f'"{decimal_text(candle.open, pp)}","{decimal_text(candle.high, pp)}",'
                    f'"{decimal_text(candle.low, pp)}","{decimal_text(candle.close, pp)}",'
                    f'"{decimal_text(_vwap(candle.quote_volume, candle.volume), pp)}",'
                    f'"{decimal_text(candle.volume, qp)}",{candle.trades}'
                )
            else:
                if close is None:
                    if open_ms != current:
                        continue  # before the first trade ever: no rows (the pair did not trade)
                    close = spec.start_price
                flat = decimal_text(close, pp)
                row_text = f'"{flat}","{flat}","{flat}","{flat}","{flat}","{decimal_text(0, qp)}",0'
            sec = open_ms // 1000
            if since is not None and sec <= since and open_ms != current:
                continue
            rows.append(f"[{sec},{row_text}]")
        key = _dumps(pair_text.strip().replace("/", "")).decode()
        last = (current - step_ms) // 1000
        body = f'{{"error":[],"result":{{{key}:[{",".join(rows)}],"last":{last}}}}}'
        return RestResponse(200, body, _JSON_HEADERS)

    def _trades(self, query: Mapping[str, str]) -> RestResponse:
        pair_text = query.get("pair", "")
        symbol = self.resolve_pair(pair_text)
        if symbol is None:
            return _rest_error("EQuery:Unknown asset pair")
        try:
            count = int(query.get("count") or _TRADES_MAX)
            since_text = query.get("since")
            since_ns = _since_ns(since_text) if since_text else None
        except ValueError:
            return _rest_error("EGeneral:Invalid arguments")
        if not 1 <= count <= _TRADES_MAX:
            return _rest_error("EGeneral:Invalid arguments:count")
        market = self.market
        page: list[SimTrade]
        if since_ns is None:
            page = sorted(market.trades(symbol, limit=count, newest_first=True), key=_trade_id)
        else:
            ms, skip = divmod(since_ns, _NS_PER_MS)
            same = market.trades(symbol, start_ms=ms, end_ms=ms + 1, limit=skip + count)
            page = same[skip : skip + count]
            if len(page) < count:
                page += market.trades(symbol, start_ms=ms + 1, limit=count - len(page))
        if page:
            tail = page[-1]
            in_ms = market.trades(symbol, start_ms=tail.ts_ms, end_ms=tail.ts_ms + 1, limit=10**6)
            rank = sum(1 for t in in_ms if t.trade_id <= tail.trade_id)
            last = tail.ts_ms * _NS_PER_MS + rank
        else:
            last = since_ns or 0
        spec = self._specs[symbol]
        pp, qp = spec.price_precision, spec.qty_precision
        rows = ",".join(
            [
                f'["{decimal_text(t.price, pp)}","{decimal_text(t.qty, qp)}",{decimal_text(t.ts_ms, 3)},'
                f'"{"b" if t.side == "buy" else "s"}","{_ord_type(t.trade_id)[0]}","",{t.trade_id}]'
                for t in page
            ]
        )
        key = _dumps(pair_text.strip().replace("/", "")).decode()
        body = f'{{"error":[],"result":{{{key}:[{rows}],"last":"{last}"}}}}'
        return RestResponse(200, body, _JSON_HEADERS)


def _trade_id(trade: SimTrade) -> int:
    return trade.trade_id


def _vwap(quote_volume: int, volume: int) -> int:
    """Volume-weighted price in price units, rounded half to even."""
    if volume <= 0:
        return 0
    q, r = divmod(quote_volume, volume)
    if 2 * r > volume or (2 * r == volume and q % 2):
        q += 1
    return q


def _since_ns(text: str) -> int:
    """A Trades ``since``: nanoseconds, or seconds (decimals allowed) below ``10**11``."""
    text = text.strip()
    if text.isascii() and text.isdigit():
        value = int(text)
        return value * 10**9 if value < _SECONDS_SINCE_LIMIT else value
    try:
        seconds = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"bad since {text!r}") from exc
    if not seconds.is_finite() or seconds < 0:
        raise ValueError(f"bad since {text!r}")
    return int(seconds.scaleb(9))


def _rest_error(message: str) -> RestResponse:
    """Kraken answers refusals with HTTP 200 and an error list."""
    return RestResponse(200, _dumps({"error": [message]}).decode(), _JSON_HEADERS)


# -- one connection ---------------------------------------------------------------------------------
class KrakenSession:
    """One ``/v2`` connection: subscriptions, visible books, heartbeat clock.

    Server wiring: :meth:`on_open` after the handshake, :meth:`on_text` per client frame,
    :meth:`on_step` for every :class:`MarketStep` in order (deliver a step to every
    session before any session gets that symbol's next step), :meth:`on_tick` about
    every 100 ms. Frame kinds: ``status`` (open, :meth:`status_frame`), ``ack``
    (acknowledgements and refusals), ``pong``, ``info`` (instrument snapshot),
    ``snapshot`` / ``diff`` (book), ``trade`` (trade snapshot and updates),
    ``heartbeat``; book and trade frames carry their symbol.

    ``books`` (symbol → visible book), ``trades`` (symbols) and ``instrument`` say what
    is subscribed.
    """

    def __init__(self, sim: KrakenSim, connection_id: int) -> None:
        self.sim = sim
        self.connection_id = connection_id
        self.books: dict[str, _BookView] = {}
        self.trades: set[str] = set()
        self.ohlc: dict[str, list[int]] = {}  # symbol -> subscribed intervals (minutes)
        self.instrument = False
        self._corrupt: set[str] = set()
        self._last_out_ms: int | None = None
        self._symbol_json = {s: _dumps(s).decode() for s in sim._specs}

    # -- fault hooks ----------------------------------------------------------------------------
    def status_frame(self, system: str, now_ms: int) -> OutFrame:
        """A ``status`` update announcing ``system`` (``online``, ``maintenance`` ...)."""
        if system not in SYSTEM_STATES:
            raise ValueError(f"system must be one of {', '.join(SYSTEM_STATES)}; got {system!r}")
        self._last_out_ms = now_ms
        text = (
            f'{{"channel":"status","type":"update","data":[{{"version":"{_API_VERSION}",'
            f'"system":"{system}","api_version":"v2","connection_id":{self.connection_id}}}]}}'
        )
        return OutFrame(text, "status")

    def corrupt_next_checksum(self, symbol: str) -> None:
        """The next book update for ``symbol`` carries ``checksum + 1`` (mod 2**32)."""
        self._corrupt.add(symbol)

    @property
    def subscribed(self) -> bool:
        """True while any channel is subscribed (heartbeats run)."""
        return bool(self.books or self.trades or self.ohlc or self.instrument)

    # -- VenueSession ---------------------------------------------------------------------------
    def on_open(self, now_ms: int) -> list[OutFrame]:
        """The ``status`` frame every connection starts with (§B.1)."""
        return [self.status_frame("online", now_ms)]

    def on_tick(self, now_ms: int) -> list[OutFrame]:
        """``{"channel":"heartbeat"}`` after a second without any other frame, while subscribed."""
        if not self.subscribed:
            return []
        last = self._last_out_ms
        if last is not None and now_ms - last < _HEARTBEAT_MS:
            return []
        self._last_out_ms = now_ms
        return [_HEARTBEAT]

    def on_step(self, step: MarketStep) -> list[OutFrame]:
        """A book update and/or a trade update for a subscribed symbol."""
        symbol = step.symbol
        view = self.books.get(symbol)
        out: list[OutFrame] = []
        if view is not None:
            text = self._book_update(view, step)
            if text is not None:
                out.append(OutFrame(text, "diff", symbol))
        if step.trades and symbol in self.trades:
            out.append(OutFrame(self.sim._trade_frame(step, self._symbol_json[symbol]), "trade", symbol))
        if step.trades and symbol in self.ohlc:
            for minutes in self.ohlc[symbol]:
                text = self.sim._ohlc_update(step, minutes)
                if text is not None:
                    out.append(OutFrame(text, "candle", symbol))
        if out:
            self._last_out_ms = step.ts_ms
        return out

    def _book_update(self, view: _BookView, step: MarketStep) -> str | None:
        sim = self.sim
        mirror = sim._advance(step)
        bid_last, ask_last = sim._split_changes(step)
        depth = view.depth
        bids = _update_side(view.bids, bid_last, depth, mirror.bids) if bid_last else None
        asks = _update_side(view.asks, ask_last, depth, mirror.asks) if ask_last else None
        if not bids and not asks:
            return None
        symbol = step.symbol
        checksum = view.checksum()
        if self._corrupt and symbol in self._corrupt:
            self._corrupt.discard(symbol)
            checksum = (checksum + 1) & 0xFFFFFFFF
        numbers = sim._numbers[symbol]
        bid_text = numbers.levels(bids, -1) if bids else ""
        ask_text = numbers.levels(asks, 1) if asks else ""
        return (
            f'{{"channel":"book","type":"update","data":[{{"symbol":{view.symbol_json},'
            f'"bids":[{bid_text}],"asks":[{ask_text}],"checksum":{checksum},'
            f'"timestamp":"{sim.timestamp(step.ts_ms)}"}}]}}'
        )

    def on_text(self, text: str, now_ms: int) -> list[OutFrame]:
        """Handle ``subscribe``, ``unsubscribe`` and ``ping``; anything else is refused."""
        out = self._handle(text, now_ms)
        if out:
            self._last_out_ms = now_ms
        return out

    # -- requests -------------------------------------------------------------------------------
    def _handle(self, text: str, now_ms: int) -> list[OutFrame]:
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        req = _Request(self.sim.timestamp(now_ms))
        if type(msg) is not dict:
            return [req.refuse("Malformed request")]
        req_id = msg.get("req_id")
        if type(req_id) is int:
            req.base["req_id"] = req_id
        method = msg.get("method")
        if method == "ping":
            return [req.reply({"method": "pong"}, "pong")]
        if type(method) is str:
            req.base["method"] = method
        if method not in ("subscribe", "unsubscribe"):
            return [req.refuse("Unsupported event")]
        params = msg.get("params")
        if type(params) is not dict:
            return [req.refuse("Params field must be an object")]
        channel = params.get("channel")
        subscribe = method == "subscribe"
        if channel == "instrument":
            return self._instrument(req, subscribe, params)
        if channel in ("book", "trade"):
            symbols = params.get("symbol")
            if type(symbols) is not list or not symbols or any(type(s) is not str for s in symbols):
                return [req.refuse("Symbol field must be an array of strings")]
            snapshot = params.get("snapshot", channel == "book")
            if type(snapshot) is not bool:
                return [req.refuse("Snapshot field must be a boolean")]
            unique = list(dict.fromkeys(symbols))
            if channel == "trade":
                return self._trade(req, subscribe, unique, snapshot)
            depth = params.get("depth", 10)
            if type(depth) is not int or depth not in BOOK_DEPTHS:
                return [req.refuse("Subscription depth not supported")]
            return self._book(
                req,
                unique,
                subscribe=subscribe,
                depth=depth,
                depth_given="depth" in params,
                snapshot=snapshot,
                now_ms=now_ms,
            )
        if channel == "ohlc":
            symbols = params.get("symbol")
            if type(symbols) is not list or not symbols or any(type(s) is not str for s in symbols):
                return [req.refuse("Symbol field must be an array of strings")]
            snapshot = params.get("snapshot", True)
            if type(snapshot) is not bool:
                return [req.refuse("Snapshot field must be a boolean")]
            interval = params.get("interval", 1)
            if type(interval) is not int or interval not in OHLC_INTERVALS:
                return [req.refuse("Subscription ohlc interval not supported")]
            unique = list(dict.fromkeys(symbols))
            return self._ohlc(
                req, unique, subscribe=subscribe, interval=interval, snapshot=snapshot, now_ms=now_ms
            )
        name = channel if type(channel) is str else ""
        return [req.refuse(f"Unsupported channel {name}".rstrip())]

    def _ohlc(
        self,
        req: _Request,
        symbols: list[str],
        *,
        subscribe: bool,
        interval: int,
        snapshot: bool,
        now_ms: int,
    ) -> list[OutFrame]:
        sim = self.sim
        acks: list[OutFrame] = []
        snaps: list[OutFrame] = []
        for symbol in symbols:
            intervals = self.ohlc.get(symbol, [])
            if symbol not in sim._specs:
                acks.append(req.refuse(f"Currency pair not supported {symbol}", symbol))
            elif not subscribe:
                if interval not in intervals:
                    acks.append(req.refuse("Subscription Not Found", symbol))
                    continue
                intervals.remove(interval)
                if not intervals:
                    del self.ohlc[symbol]
                acks.append(req.ok({"channel": "ohlc", "interval": interval, "symbol": symbol}))
            elif interval in intervals:
                acks.append(req.refuse("Already subscribed", symbol))
            else:
                self.ohlc.setdefault(symbol, []).append(interval)
                result = {"channel": "ohlc", "interval": interval, "snapshot": snapshot, "symbol": symbol}
                acks.append(req.ok(result))
                if snapshot:
                    snaps.append(sim._ohlc_snapshot(symbol, interval, now_ms))
        return acks + snaps

    def _instrument(self, req: _Request, subscribe: bool, params: dict[str, Any]) -> list[OutFrame]:
        if not subscribe:
            if not self.instrument:
                return [req.refuse("Subscription Not Found")]
            self.instrument = False
            return [req.ok({"channel": "instrument"})]
        snapshot = params.get("snapshot", True)
        if type(snapshot) is not bool:
            return [req.refuse("Snapshot field must be a boolean")]
        if self.instrument:
            return [req.refuse("Already subscribed")]
        self.instrument = True
        out = [req.ok({"channel": "instrument", "snapshot": snapshot})]
        if snapshot:
            out.append(OutFrame(self.sim._instrument_text, "info"))
        return out

    def _book(
        self,
        req: _Request,
        symbols: list[str],
        *,
        subscribe: bool,
        depth: int,
        depth_given: bool,
        snapshot: bool,
        now_ms: int,
    ) -> list[OutFrame]:
        sim = self.sim
        acks: list[OutFrame] = []
        snaps: list[OutFrame] = []
        for symbol in symbols:
            view = self.books.get(symbol)
            if symbol not in sim._specs:
                acks.append(req.refuse(f"Currency pair not supported {symbol}", symbol))
            elif not subscribe:
                if view is None or (depth_given and view.depth != depth):
                    acks.append(req.refuse("Subscription Not Found", symbol))
                    continue
                del self.books[symbol]
                self._corrupt.discard(symbol)
                acks.append(req.ok({"channel": "book", "depth": view.depth, "symbol": symbol}))
            elif view is not None:
                acks.append(req.refuse("Already subscribed", symbol))
            else:
                view = self.books[symbol] = _BookView(sim._mirror(symbol), depth, self._symbol_json[symbol])
                acks.append(
                    req.ok({"channel": "book", "depth": depth, "snapshot": snapshot, "symbol": symbol})
                )
                if snapshot:
                    snaps.append(self._book_snapshot(symbol, view, now_ms))
        return acks + snaps

    def _book_snapshot(self, symbol: str, view: _BookView, now_ms: int) -> OutFrame:
        sim = self.sim
        bq, aq = view.bids.qty, view.asks.qty
        numbers = sim._numbers[symbol]
        bids = numbers.levels([(k, bq[k]) for k in view.bids.keys], -1)
        asks = numbers.levels([(k, aq[k]) for k in view.asks.keys], 1)
        text = (
            f'{{"channel":"book","type":"snapshot","data":[{{"symbol":{view.symbol_json},'
            f'"bids":[{bids}],"asks":[{asks}],"checksum":{view.checksum()},'
            f'"timestamp":"{sim.timestamp(now_ms)}"}}]}}'
        )
        return OutFrame(text, "snapshot", symbol)

    def _trade(self, req: _Request, subscribe: bool, symbols: list[str], snapshot: bool) -> list[OutFrame]:
        sim = self.sim
        acks: list[OutFrame] = []
        snaps: list[OutFrame] = []
        for symbol in symbols:
            if symbol not in sim._specs:
                acks.append(req.refuse(f"Currency pair not supported {symbol}", symbol))
            elif not subscribe:
                if symbol not in self.trades:
                    acks.append(req.refuse("Subscription Not Found", symbol))
                    continue
                self.trades.discard(symbol)
                acks.append(req.ok({"channel": "trade", "symbol": symbol}))
            elif symbol in self.trades:
                acks.append(req.refuse("Already subscribed", symbol))
            else:
                self.trades.add(symbol)
                acks.append(req.ok({"channel": "trade", "snapshot": snapshot, "symbol": symbol}))
                if snapshot:
                    snaps.append(self._trade_snapshot(symbol))
        return acks + snaps

    def _trade_snapshot(self, symbol: str) -> OutFrame:
        sim = self.sim
        recent = sim.market.trades(symbol, limit=_TRADE_SNAPSHOT, newest_first=True)
        spec = sim._specs[symbol]
        symbol_json = self._symbol_json[symbol]
        items = ",".join([sim._trade_json(symbol_json, spec, t) for t in sorted(recent, key=_trade_id)])
        return OutFrame(f'{{"channel":"trade","type":"snapshot","data":[{items}]}}', "trade", symbol)


class _Request:
    """Builds the responses to one request: keys sorted like the venue's, times added."""

    __slots__ = ("base", "stamp")

    def __init__(self, stamp: str) -> None:
        self.stamp = stamp
        self.base: dict[str, Any] = {}  # method and req_id, echoed in every response

    def reply(self, fields: dict[str, Any], kind: FrameKind = "ack") -> OutFrame:
        body = {**self.base, **fields, "time_in": self.stamp, "time_out": self.stamp}
        return OutFrame(_dumps(body, option=_SORTED).decode(), kind)

    def ok(self, result: dict[str, Any]) -> OutFrame:
        return self.reply({"result": result, "success": True})

    def refuse(self, error: str, symbol: str | None = None) -> OutFrame:
        fields: dict[str, Any] = {"error": error, "success": False}
        if symbol is not None:
            fields["symbol"] = symbol
        return self.reply(fields)
