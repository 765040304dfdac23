"""Simulated Bitfinex WebSocket v2 and REST v2 (PROTOCOLS.md §C), sans-I/O.

Theory of operation
-------------------
:class:`BitfinexSim` serves one :class:`~mmdata.sim.model.Market`. ``accept("/ws/2")``
gives a :class:`BitfinexSession` per connection; the server feeds it client text
(:meth:`~BitfinexSession.on_text`), market steps (:meth:`~BitfinexSession.on_step`) and
100 ms ticks (:meth:`~BitfinexSession.on_tick`) and sends the :class:`OutFrame` texts it
returns, in order.

*Connection* (§C.1)::

    → {"event":"info","version":2,"serverId":"9c5d…","platform":{"status":1}}
    ← {"event":"conf","flags":196608}
    → {"event":"conf","status":"OK","flags":196608}
    ← {"event":"subscribe","channel":"book","symbol":"tBTCUSD","prec":"P0","freq":"F0","len":"25"}
    → {"event":"subscribed","channel":"book","chanId":48213,"symbol":"tBTCUSD","prec":"P0",
       "freq":"F0","len":"25","pair":"BTCUSD"}                (one line on the wire)
    → [48213,[[30000.5,3,0.25],…,[30001,2,-1.5],…],1]
    → [48213,[30000.4,1,0.7],2]            update (COUNT > 0)
    → [48213,[30002.1,0,-1],3]             delete (COUNT 0; AMOUNT 1 bid, -1 ask)
    → [48213,"cs",-1175357890,4]           OB_CHECKSUM after each step's updates
    → [48214,"te",[401,1700000000000,-0.01,30000.4],5]   then the same trade as "tu"
    → [48214,"hb",6]                       after 15 s without a frame on the channel

Flags of ``conf`` take effect at once: ``SEQ_ALL`` appends the connection's next
sequence number (from 1, global over every channel, heartbeats included) to every
array frame, ``TIMESTAMP`` then appends the frame's ms time, ``OB_CHECKSUM`` adds the
``cs`` frames. Other flag bits (``DEC_S``, ``TIME_S``, ``BULK_UPDATES``) are echoed
but have no effect. Event objects (``subscribed``, ``error``, ``pong`` …) never carry
a sequence number.

*Books* (§C.2). Bitfinex maintains a window of ``len`` levels per side for each
subscriber and the client never truncates, so each session keeps its *visible* book:
the top ``len`` levels per side as last sent. On a step every level whose state in the
window changed becomes one update frame: adds/updates of changed levels, deletes of
levels that vanished, deletes of levels pushed out of the window and adds of levels
that moved into it. Deletes are sent before adds so the client's book is never
transiently crossed by our ordering. After the updates, with ``OB_CHECKSUM``, a ``cs``
frame carries the signed CRC-32 of the visible top 25 per side (§C.3), computed from
exactly the number text of the frames. If a step leaves the window unchanged, nothing
(not even ``cs``) is sent for the book.

The full book each window is cut from is a per-symbol mirror of the market book
shared by all sessions (:class:`_SymbolBook`): the first session to see a step applies
it (changes are absolute quantities, so the mirror knows by the step's update ids
whether it already has), the others reuse it. A session whose window is exactly the
window of the mirror's previous state (always, in a healthy run) computes its frames
incrementally from the step's changed prices plus a scan of the window's boundary:
a few µs. Anything else (a step missed while paused, a mirror rebuilt after a gap)
falls back to comparing its whole window with the mirror's top, which is still exact.
Wire text of each level (``PRICE,COUNT,AMOUNT`` and its checksum token) is cached on
the mirror, and checksums are cached per mirror version and depth, so N subscribers
cost one formatting.

Numbers are JavaScript ``Number#toString`` text (:func:`~mmdata.sim.model.js_number_text`):
``0.0000011``, ``7e-7``, ``205000``; the checksum depends on it. COUNT is a stable
pseudo-random 1..5 derived from the price.

*Trades* (§C.4): snapshot ``[ID,[[ID,MTS,AMOUNT,PRICE],…]]`` of the newest 30 trades,
newest first; each live trade as ``te`` then ``tu`` (AMOUNT < 0 when the taker sold).

*Candles* (§C.5): ``{"event":"subscribe","channel":"candles","key":"trade:1m:tBTCUSD"}``
(timeframes of :data:`TIMEFRAMES`) → ``{"event":"subscribed","channel":"candles",
"chanId":…,"key":"trade:1m:tBTCUSD"}``, a snapshot ``[ID,[[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME],…]]``
of the newest :data:`CANDLES_SNAPSHOT` candles, newest first like the venue's, then
``[ID,[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME]]`` with the running candle after every step that
traded. OPEN, CLOSE, HIGH, LOW order; the values are exactly the REST
``/v2/candles/…/hist`` rows (intervals without trades have no candle on either).

*Maintenance* (§C.1): :meth:`~BitfinexSession.info_frame` builds ``{"event":"info","code":…}``
frames for the server's fault injector; 20060 pauses the session (``paused``), 20061
resumes it. While paused no book or trade data is sent (heartbeats continue, so a
client can tell maintenance from a dead socket) and subscriptions made meanwhile get
their snapshot on the first step after the pause. The window is not advanced while
paused; the first step after it sends the updates that bring a client that kept its
subscription to the current book, consistent with the next checksum.

*Errors* (codes of §C.1): unknown event 10000 (also malformed JSON), unknown pair
10001 (symbol not served), precision other than P0 10011, length not 1/25/100/250
10012, ``freq`` other than F0, a real channel the simulator does not serve (ticker,
status) or a candle key it cannot read 10300, already subscribed to that channel and
symbol (key) 10301, unknown channel 10302, more than 30 channels 10305, unsubscribe of an
unknown chanId 10401.

*REST* (§C.6), numbers as JSON numbers in JavaScript text:

* ``/v2/candles/trade:{TF}:{SYMBOL}/hist?limit=&start=&end=&sort=`` →
  ``[[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME],…]`` (OPEN, CLOSE, HIGH, LOW!); TF one of 1m 5m
  15m 30m 1h 3h 6h 12h 1D 1W (= 7D) 14D, aligned to the epoch (so weeks start on
  Thursdays; 1M is not served). ``/last`` → one row. Default limit 100.
* ``/v2/trades/{SYMBOL}/hist?limit=&start=&end=&sort=`` → ``[[ID,MTS,AMOUNT,PRICE],…]``,
  default limit 120.
* ``/v2/book/{SYMBOL}/P0?len=`` (1, 25, 100) → ``[[PRICE,COUNT,AMOUNT],…]``;
  ``/v2/conf/pub:list:pair:exchange`` → ``[["BTCUSD",…]]``; ``/v2/platform/status`` → ``[1]``.

``start``/``end`` are inclusive ms; ``sort=-1`` (default) newest first, ``1`` oldest
first; limits above 10000 are clamped to 10000. Without ``start`` the history begins
with the market's oldest trade. Bad parameters answer HTTP 500
``["error",10020,"limit: invalid"]`` (Bitfinex style); an unknown symbol answers
``[]`` (as Bitfinex does for pairs it does not list); an unknown route 404
``["error",10020,"not found"]``.
"""

from __future__ import annotations

import uuid
import zlib
from bisect import bisect_left, bisect_right, insort
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from mmdata.sim.model import (
    InstrumentSpec,
    Market,
    MarketStep,
    OutFrame,
    RestResponse,
    SimCandle,
    SimTrade,
    js_number_text,
)

__all__ = [
    "BOOK_LENGTHS",
    "CANDLES_SNAPSHOT",
    "HEARTBEAT_MS",
    "INFO_MESSAGES",
    "MAX_CHANNELS",
    "OB_CHECKSUM",
    "SEQ_ALL",
    "TIMEFRAMES",
    "TIMESTAMP",
    "BitfinexSession",
    "BitfinexSim",
]

# Protocol constants are spelled out here rather than imported from the client adapter, so
# the simulator checks the client instead of mirroring it.
#: ``conf`` flags (PROTOCOLS.md §C.1).
TIMESTAMP: Final = 32768
SEQ_ALL: Final = 65536
OB_CHECKSUM: Final = 131072
#: Book ``len`` values accepted (levels per side).
BOOK_LENGTHS: Final = frozenset({1, 25, 100, 250})
#: Public channel subscriptions per connection.
MAX_CHANNELS: Final = 30
#: Candles in a ``candles`` snapshot.
CANDLES_SNAPSHOT: Final = 240
#: A channel silent this long gets ``[ID,"hb"]``.
HEARTBEAT_MS: Final = 15_000
#: Documented texts of the info codes (clients must rely on the code only).
INFO_MESSAGES: Final = {
    20051: "Stop/Restart Websocket Server (please reconnect)",
    20060: "Entering in Maintenance mode. Please pause any activity and resume after receiving "
    "the info message 20061 (it should take 120 seconds at most).",
    20061: "Maintenance ended. You can resume normal activity. It is advised to unsubscribe/subscribe "
    "again all channels.",
}
_MINUTE = 60_000
_DAY = 1440 * _MINUTE
#: Candle timeframes served by REST, in ms.
TIMEFRAMES: Final = {
    "1m": _MINUTE,
    "5m": 5 * _MINUTE,
    "15m": 15 * _MINUTE,
    "30m": 30 * _MINUTE,
    "1h": 60 * _MINUTE,
    "3h": 180 * _MINUTE,
    "6h": 360 * _MINUTE,
    "12h": 720 * _MINUTE,
    "1D": _DAY,
    "1W": 7 * _DAY,
    "7D": 7 * _DAY,
    "14D": 14 * _DAY,
}

_SEQ_OR_TS: Final = SEQ_ALL | TIMESTAMP
_CHECKSUM_DEPTH: Final = 25
_TRADES_SNAPSHOT: Final = 30
_MAX_LIMIT: Final = 10_000
_INF: Final = 1 << 62  # a key beyond every price: "the window holds the whole side"
_NAMESPACE: Final = uuid.UUID("6f0f4d1e-8a43-4c36-9a64-7cbd1b0b5e21")
_JSON: Final = {"content-type": "application/json; charset=utf-8"}
_PRICE_CACHE_MAX: Final = 100_000

_BID: Final = 0
_ASK: Final = 1


def _order_count(price: int) -> int:
    """Orders at a level: a stable 1..5 from the price (Fibonacci hashing)."""
    return 1 + ((price * 2654435761) >> 16) % 5


class _SymbolBook:
    """The market book of one symbol as the mirror all sessions cut their windows from.

    Keys are ascending best-first on both sides (bid key = -price). ``version`` is the
    market update id the mirror reflects; ``changed`` the keys per side the last step
    touched, valid for going from ``prev_version`` to ``version``.
    """

    __slots__ = (
        "bodies",
        "changed",
        "cs_cache",
        "keys",
        "levels",
        "prev_version",
        "price_precision",
        "ptext",
        "qty_precision",
        "version",
    )

    def __init__(self, spec: InstrumentSpec) -> None:
        self.price_precision = spec.price_precision
        self.qty_precision = spec.qty_precision
        self.keys: tuple[list[int], list[int]] = ([], [])
        self.levels: tuple[dict[int, int], dict[int, int]] = ({}, {})
        # key -> ("PRICE,COUNT,AMOUNT", "PRICE:AMOUNT"), built lazily, dropped when the level changes.
        self.bodies: tuple[dict[int, tuple[str, str]], dict[int, tuple[str, str]]] = ({}, {})
        self.ptext: dict[int, str] = {}
        self.version: int | None = None
        self.prev_version: int | None = None
        self.changed: tuple[list[int], list[int]] | None = None
        self.cs_cache: dict[int, tuple[int, int]] = {}

    def load(self, bids: Sequence[tuple[int, int]], asks: Sequence[tuple[int, int]], version: int) -> None:
        """Replace the mirror with a full book (best first)."""
        bid_levels = {-p: q for p, q in bids if q > 0}
        ask_levels = {p: q for p, q in asks if q > 0}
        self.levels = (bid_levels, ask_levels)
        self.keys = (sorted(bid_levels), sorted(ask_levels))
        self.bodies = ({}, {})
        self.version = version
        self.prev_version = None
        self.changed = None  # sessions must compare whole windows
        self.cs_cache.clear()

    def apply(self, step: MarketStep) -> None:
        """Apply a step that directly follows ``version``."""
        bid_keys: list[int] = []
        ask_keys: list[int] = []
        for change in step.changes:
            if change.side == "bid":
                side = _BID
                key = -change.price
                bid_keys.append(key)
            else:
                side = _ASK
                key = change.price
                ask_keys.append(key)
            levels = self.levels[side]
            self.bodies[side].pop(key, None)
            if change.qty > 0:
                if key not in levels:
                    insort(self.keys[side], key)
                levels[key] = change.qty
            elif key in levels:
                del levels[key]
                keys = self.keys[side]
                del keys[bisect_left(keys, key)]
        self.prev_version = self.version
        self.version = step.last_id
        self.changed = (bid_keys, ask_keys)

    def price_text(self, price: int) -> str:
        """JavaScript text of a price (cached: prices recur)."""
        text = self.ptext.get(price)
        if text is None:
            if len(self.ptext) >= _PRICE_CACHE_MAX:
                self.ptext.clear()
            text = self.ptext[price] = js_number_text(price, self.price_precision)
        return text

    def entry(self, side: int, key: int) -> tuple[str, str]:
        """``("PRICE,COUNT,AMOUNT", "PRICE:AMOUNT")`` of a live level, as on the wire."""
        cached = self.bodies[side].get(key)
        if cached is not None:
            return cached
        price = -key if side == _BID else key
        ptxt = self.price_text(price)
        amount = js_number_text(self.levels[side][key], self.qty_precision)
        if side == _ASK:
            amount = "-" + amount
        entry = (f"{ptxt},{_order_count(price)},{amount}", f"{ptxt}:{amount}")
        self.bodies[side][key] = entry
        return entry

    def _tokens(self, side: int, depth: int) -> list[str]:
        bodies = self.bodies[side]
        tokens = []
        for key in self.keys[side][:depth]:
            cached = bodies.get(key)
            tokens.append(cached[1] if cached is not None else self.entry(side, key)[1])
        return tokens

    def delete_body(self, side: int, key: int) -> str:
        """``PRICE,0,1`` (bid) or ``PRICE,0,-1`` (ask)."""
        if side == _BID:
            return f"{self.price_text(-key)},0,1"
        return f"{self.price_text(key)},0,-1"

    def checksum(self, depth: int) -> int:
        """Signed CRC-32 of the top ``depth`` levels per side, interleaved (§C.3)."""
        version = self.version
        assert version is not None
        cached = self.cs_cache.get(depth)
        if cached is not None and cached[0] == version:
            return cached[1]
        bids = self._tokens(_BID, depth)
        asks = self._tokens(_ASK, depth)
        n = min(len(bids), len(asks))
        parts = [""] * (2 * n)
        parts[0::2] = bids[:n]
        parts[1::2] = asks[:n]
        parts += bids[n:]
        parts += asks[n:]
        crc = zlib.crc32(":".join(parts).encode())
        value = crc - 0x100000000 if crc & 0x80000000 else crc
        self.cs_cache[depth] = (version, value)
        return value


class _BookSub:
    """A book subscription: the visible window of ``length`` levels per side."""

    __slots__ = ("chan_id", "cs_depth", "last_ms", "length", "prefix", "seen", "symbol", "thr", "window")

    def __init__(self, chan_id: int, symbol: str, length: int, now_ms: int) -> None:
        self.chan_id = chan_id
        self.prefix = f"[{chan_id},"
        self.symbol = symbol
        self.length = length
        self.cs_depth = min(length, _CHECKSUM_DEPTH)
        self.window: list[dict[int, int]] = [{}, {}]
        # Key of the window's last level per side, _INF while the window holds the whole side.
        self.thr = [_INF, _INF]
        self.seen: int | None = None  # mirror version the window reflects; None: snapshot not sent
        self.last_ms = now_ms

    def side_step(
        self, mirror: _SymbolBook, side: int, changed: list[int], dels: list[str], adds: list[str]
    ) -> None:
        """Window frames of one side after a step, given the window of the previous state.

        With ``t`` the key of the window's last level, the new window is every mirror key
        ``<= t_new``. Changed keys are judged directly; an unchanged key can only enter
        (``t_old < k <= t_new``) or leave (``t_new < k <= t_old``) at the boundary.
        """
        keys = mirror.keys[side]
        levels = mirror.levels[side]
        window = self.window[side]
        n = self.length
        t_old = self.thr[side]
        t_new = keys[n - 1] if len(keys) >= n else _INF
        for key in changed:
            qty = levels.get(key)
            if qty is not None and key <= t_new:
                if window.get(key) != qty:
                    window[key] = qty
                    adds.append(mirror.entry(side, key)[0])
            elif key in window:
                del window[key]
                dels.append(mirror.delete_body(side, key))
        if t_new < t_old:
            i = bisect_right(keys, t_new)
            end = len(keys)
            while i < end and keys[i] <= t_old:
                key = keys[i]
                if key in window:
                    del window[key]
                    dels.append(mirror.delete_body(side, key))
                i += 1
        elif t_new > t_old:
            i = bisect_right(keys, t_old)
            end = len(keys)
            while i < end and keys[i] <= t_new:
                key = keys[i]
                if key not in window:
                    window[key] = levels[key]
                    adds.append(mirror.entry(side, key)[0])
                i += 1
        self.thr[side] = t_new

    def full_diff(self, mirror: _SymbolBook, dels: list[str], adds: list[str]) -> None:
        """Window frames by comparing the whole window with the mirror's top (rare path)."""
        n = self.length
        for side in (_BID, _ASK):
            keys = mirror.keys[side][:n]
            levels = mirror.levels[side]
            new = {k: levels[k] for k in keys}
            old = self.window[side]
            dels += [mirror.delete_body(side, k) for k in old if k not in new]
            adds += [mirror.entry(side, k)[0] for k, q in new.items() if old.get(k) != q]
            self.window[side] = new
            self.thr[side] = keys[-1] if len(keys) == n else _INF


class _TradesSub:
    """A trades subscription."""

    __slots__ = ("chan_id", "last_ms", "prefix", "snapshot_due", "symbol")

    def __init__(self, chan_id: int, symbol: str, now_ms: int) -> None:
        self.chan_id = chan_id
        self.prefix = f"[{chan_id},"
        self.symbol = symbol
        self.last_ms = now_ms
        self.snapshot_due = True


class _CandlesSub:
    """A candles subscription (one key: timeframe and symbol)."""

    __slots__ = ("chan_id", "interval", "key", "last_ms", "prefix", "snapshot_due", "symbol")

    def __init__(self, chan_id: int, key: str, symbol: str, interval: int, now_ms: int) -> None:
        self.chan_id = chan_id
        self.prefix = f"[{chan_id},"
        self.key = key
        self.symbol = symbol
        self.interval = interval
        self.last_ms = now_ms
        self.snapshot_due = True


class _SubscribeError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class BitfinexSession:
    """One connection's state: flags, channels, visible books, sequence counter.

    Server hooks besides the :class:`~mmdata.sim.model.VenueSession` methods:
    :meth:`info_frame`, :meth:`corrupt_next_checksum` and the ``paused`` flag.
    """

    def __init__(self, sim: BitfinexSim, number: int) -> None:
        self._sim = sim
        self.server_id = str(uuid.uuid5(_NAMESPACE, f"bitfinex-session-{number}"))
        #: True while in maintenance (20060 … 20061): no book or trade data is sent.
        self.paused = False
        self.flags = 0
        self._seq = 0
        self._channels: dict[int, _BookSub | _TradesSub | _CandlesSub] = {}
        self._books: dict[str, _BookSub] = {}
        self._trades: dict[str, _TradesSub] = {}
        self._candles: dict[str, _CandlesSub] = {}  # by key
        self._corrupt: set[str] = set()
        # Channel ids look like Bitfinex's (5-6 digits), differ between connections and are
        # never reused within one.
        self._next_chan = 10_000 + (uuid.UUID(self.server_id).int % 200_000)

    def __repr__(self) -> str:
        return f"<BitfinexSession {self.server_id} channels={len(self._channels)} seq={self._seq}>"

    # -- hooks for the server ---------------------------------------------------
    def info_frame(self, code: int, now_ms: int) -> OutFrame:
        """``{"event":"info","code":CODE,"msg":…}``: 20051 restart, 20060/20061 maintenance on/off."""
        msg = INFO_MESSAGES.get(code)
        if msg is None:
            raise ValueError(f"unknown Bitfinex info code {code}; known: {sorted(INFO_MESSAGES)}")
        if code == 20060:
            self.paused = True
        elif code == 20061:
            self.paused = False
        return OutFrame(_dumps({"event": "info", "code": code, "msg": msg}), "info")

    def corrupt_next_checksum(self, symbol: str) -> None:
        """The next ``cs`` frame of ``symbol`` on this connection carries a wrong value."""
        self._corrupt.add(symbol)

    # -- VenueSession -------------------------------------------------------------
    def on_open(self, now_ms: int) -> list[OutFrame]:
        """The greeting: version 2, this connection's server id, platform operative."""
        info = {"event": "info", "version": 2, "serverId": self.server_id, "platform": {"status": 1}}
        return [OutFrame(_dumps(info), "info")]

    def on_text(self, text: str, now_ms: int) -> list[OutFrame]:
        """``conf``, ``subscribe``, ``unsubscribe`` and ``ping`` → answers (and snapshots)."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [self._error(10000, "invalid JSON", {})]
        if type(msg) is not dict:
            return [self._error(10000, "unknown event", {})]
        event = msg.get("event")
        if event == "subscribe":
            return self._subscribe(msg, now_ms)
        if event == "unsubscribe":
            return self._unsubscribe(msg)
        if event == "ping":
            pong: dict[str, Any] = {"event": "pong", "ts": now_ms}
            if "cid" in msg:
                pong["cid"] = msg["cid"]
            return [OutFrame(_dumps(pong), "pong")]
        if event == "conf":
            flags = msg.get("flags")
            if type(flags) is not int or flags < 0:
                return [self._error(10000, "conf: invalid flags", {})]
            self.flags = flags
            return [OutFrame(_dumps({"event": "conf", "status": "OK", "flags": flags}), "ack")]
        return [self._error(10000, "unknown event", {})]

    def on_step(self, step: MarketStep) -> list[OutFrame]:
        """Book updates (+ ``cs``) and ``te``/``tu`` trades of the step's symbol."""
        if self.paused:
            return []
        symbol = step.symbol
        book = self._books.get(symbol)
        trades = self._trades.get(symbol)
        if book is None and trades is None and not self._candles:
            return []
        out: list[OutFrame] = []
        if book is not None:
            self._book_step(book, step, out)
        if trades is not None:
            if trades.snapshot_due:
                self._trades_snapshot(trades, step.ts_ms, out)
            elif step.trades:
                self._trade_frames(trades, step.trades, step.ts_ms, out)
        for candles in self._candles.values():
            if candles.symbol == symbol:
                if candles.snapshot_due:
                    self._candles_snapshot(candles, step.ts_ms, out)
                elif step.trades:
                    self._candle_update(candles, step.ts_ms, out)
        return out

    def on_tick(self, now_ms: int) -> list[OutFrame]:
        """``[ID,"hb"]`` for every channel silent for 15 s."""
        out: list[OutFrame] = []
        due = now_ms - HEARTBEAT_MS
        for sub in self._channels.values():
            if sub.last_ms <= due:
                sub.last_ms = now_ms
                out.append(OutFrame(f'{sub.prefix}"hb"{self._tail(now_ms)}]', "heartbeat", sub.symbol))
        return out

    # -- internals ----------------------------------------------------------------------
    def _tail(self, ts_ms: int) -> str:
        """``,SEQ`` and/or ``,MTS`` for an array frame (and count the sequence number)."""
        flags = self.flags
        if not flags & _SEQ_OR_TS:
            return ""
        tail = ""
        if flags & SEQ_ALL:
            self._seq += 1
            tail = f",{self._seq}"
        if flags & TIMESTAMP:
            tail += f",{ts_ms}"
        return tail

    def _error(self, code: int, msg: str, request: Mapping[str, Any]) -> OutFrame:
        answer: dict[str, Any] = {"event": "error", "msg": msg, "code": code}
        for key in ("channel", "symbol", "key", "subId"):
            value = request.get(key)
            if type(value) is str or (key == "subId" and type(value) is int):
                answer[key] = value
        return OutFrame(_dumps(answer), "ack")

    def _subscribe(self, msg: dict[str, Any], now_ms: int) -> list[OutFrame]:
        try:
            return self._try_subscribe(msg, now_ms)
        except _SubscribeError as exc:
            return [self._error(exc.code, exc.msg, msg)]

    def _try_subscribe(self, msg: dict[str, Any], now_ms: int) -> list[OutFrame]:
        channel = msg.get("channel")
        if channel == "candles":
            return self._subscribe_candles(msg, now_ms)
        if channel not in ("book", "trades"):
            if channel in ("ticker", "status"):
                raise _SubscribeError(10300, f"subscribe: channel {channel} is not simulated")
            raise _SubscribeError(10302, "channel: unknown")
        symbol = self._symbol(msg)
        if channel == "book":
            prec = msg.get("prec", "P0")
            if prec != "P0":
                raise _SubscribeError(10011, "prec: invalid")
            freq = msg.get("freq", "F0")
            if freq != "F0":
                raise _SubscribeError(10300, "freq: invalid")
            raw_len = msg.get("len", "25")
            length = (
                int(raw_len) if type(raw_len) is int or (type(raw_len) is str and raw_len.isdigit()) else 0
            )
            if length not in BOOK_LENGTHS:
                raise _SubscribeError(10012, "len: invalid")
            if symbol in self._books:
                raise _SubscribeError(10301, "subscribe: dup")
        elif symbol in self._trades:
            raise _SubscribeError(10301, "subscribe: dup")
        if len(self._channels) >= MAX_CHANNELS:
            raise _SubscribeError(10305, "subscribe: limit")

        chan_id = self._next_chan
        self._next_chan += 1
        answer: dict[str, Any] = {
            "event": "subscribed",
            "channel": channel,
            "chanId": chan_id,
            "symbol": symbol,
        }
        if channel == "book":
            answer.update(prec="P0", freq="F0", len=str(length))
        if "subId" in msg:
            answer["subId"] = msg["subId"]
        answer["pair"] = symbol[1:]
        out = [OutFrame(_dumps(answer), "ack")]
        sub: _BookSub | _TradesSub
        if channel == "book":
            sub = self._books[symbol] = _BookSub(chan_id, symbol, length, now_ms)
            self._channels[chan_id] = sub
            if not self.paused:
                self._book_snapshot(sub, self._sim._synced_book(symbol), now_ms, out)
        else:
            sub = self._trades[symbol] = _TradesSub(chan_id, symbol, now_ms)
            self._channels[chan_id] = sub
            if not self.paused:
                self._trades_snapshot(sub, now_ms, out)
        return out

    def _subscribe_candles(self, msg: dict[str, Any], now_ms: int) -> list[OutFrame]:
        key = msg.get("key")
        parts = key.split(":") if type(key) is str else []
        interval = TIMEFRAMES.get(parts[1]) if len(parts) == 3 and parts[0] == "trade" else None
        if interval is None or parts[2] not in self._sim.market.specs:
            raise _SubscribeError(10300, "subscribe: key invalid")
        assert isinstance(key, str)
        if key in self._candles:
            raise _SubscribeError(10301, "subscribe: dup")
        if len(self._channels) >= MAX_CHANNELS:
            raise _SubscribeError(10305, "subscribe: limit")
        chan_id = self._next_chan
        self._next_chan += 1
        answer: dict[str, Any] = {"event": "subscribed", "channel": "candles", "chanId": chan_id, "key": key}
        if "subId" in msg:
            answer["subId"] = msg["subId"]
        out = [OutFrame(_dumps(answer), "ack")]
        sub = self._candles[key] = _CandlesSub(chan_id, key, parts[2], interval, now_ms)
        self._channels[chan_id] = sub
        if not self.paused:
            self._candles_snapshot(sub, now_ms, out)
        return out

    def _symbol(self, msg: Mapping[str, Any]) -> str:
        symbol = msg.get("symbol")
        if symbol is None and type(msg.get("pair")) is str:
            symbol = "t" + msg["pair"]  # legacy spelling
        specs = self._sim.market.specs
        if type(symbol) is not str:
            raise _SubscribeError(10001, "symbol: invalid")
        if symbol not in specs and "t" + symbol in specs:
            symbol = "t" + symbol
        if symbol not in specs:
            raise _SubscribeError(10001, "symbol: invalid")
        return symbol

    def _unsubscribe(self, msg: Mapping[str, Any]) -> list[OutFrame]:
        chan_id = msg.get("chanId")
        sub = self._channels.pop(chan_id, None) if type(chan_id) is int else None
        if sub is None:
            return [self._error(10401, "unsubscribe: invalid", {})]
        if isinstance(sub, _BookSub):
            del self._books[sub.symbol]
        elif isinstance(sub, _CandlesSub):
            del self._candles[sub.key]
        else:
            del self._trades[sub.symbol]
        return [OutFrame(_dumps({"event": "unsubscribed", "status": "OK", "chanId": chan_id}), "ack")]

    # -- books ----------------------------------------------------------------------------
    def _book_snapshot(self, sub: _BookSub, mirror: _SymbolBook, ts_ms: int, out: list[OutFrame]) -> None:
        n = sub.length
        rows: list[str] = []
        for side in (_BID, _ASK):
            keys = mirror.keys[side][:n]
            levels = mirror.levels[side]
            sub.window[side] = {k: levels[k] for k in keys}
            sub.thr[side] = keys[-1] if len(keys) == n else _INF
            rows += [mirror.entry(side, k)[0] for k in keys]
        sub.seen = mirror.version
        sub.last_ms = ts_ms
        body = f"[[{'],['.join(rows)}]]" if rows else "[]"
        text = f"{sub.prefix}{body}{self._tail(ts_ms)}]"
        out.append(OutFrame(text, "snapshot", sub.symbol))

    def _book_step(self, sub: _BookSub, step: MarketStep, out: list[OutFrame]) -> None:
        mirror = self._sim._advanced_book(step)
        if sub.seen is None:
            self._book_snapshot(sub, mirror, step.ts_ms, out)
            return
        if sub.seen == mirror.version:
            return  # the window already shows this state
        dels: list[str] = []
        adds: list[str] = []
        changed = mirror.changed
        if changed is not None and sub.seen == mirror.prev_version:
            bid_keys, ask_keys = changed
            if bid_keys:
                sub.side_step(mirror, _BID, bid_keys, dels, adds)
            if ask_keys:
                sub.side_step(mirror, _ASK, ask_keys, dels, adds)
        else:
            sub.full_diff(mirror, dels, adds)
        sub.seen = mirror.version
        if not dels and not adds:
            return
        prefix = sub.prefix
        ts = step.ts_ms
        symbol = sub.symbol
        tail = self._tail
        for body in dels:
            out.append(OutFrame(f"{prefix}[{body}]{tail(ts)}]", "diff", symbol))
        for body in adds:
            out.append(OutFrame(f"{prefix}[{body}]{tail(ts)}]", "diff", symbol))
        if self.flags & OB_CHECKSUM:
            value = mirror.checksum(sub.cs_depth)
            if symbol in self._corrupt:
                self._corrupt.discard(symbol)
                value = ~value  # stays a signed 32-bit int, always different
            out.append(OutFrame(f'{prefix}"cs",{value}{tail(ts)}]', "checksum", symbol))
        sub.last_ms = ts

    # -- trades ---------------------------------------------------------------------------
    def _trade_row(self, mirror: _SymbolBook, trade: SimTrade) -> str:
        amount = js_number_text(trade.qty, mirror.qty_precision)
        if trade.side == "sell":
            amount = "-" + amount
        return f"[{trade.trade_id},{trade.ts_ms},{amount},{mirror.price_text(trade.price)}]"

    def _trades_snapshot(self, sub: _TradesSub, ts_ms: int, out: list[OutFrame]) -> None:
        sim = self._sim
        mirror = sim._book(sub.symbol)
        trades = sim.market.trades(sub.symbol, limit=_TRADES_SNAPSHOT, newest_first=True)
        trades = sorted(trades, key=lambda t: t.trade_id, reverse=True)[:_TRADES_SNAPSHOT]
        rows = ",".join(self._trade_row(mirror, t) for t in trades)
        sub.snapshot_due = False
        sub.last_ms = ts_ms
        out.append(OutFrame(f"{sub.prefix}[{rows}]{self._tail(ts_ms)}]", "trade", sub.symbol))

    def _trade_frames(
        self, sub: _TradesSub, trades: Sequence[SimTrade], ts_ms: int, out: list[OutFrame]
    ) -> None:
        mirror = self._sim._book(sub.symbol)
        prefix = sub.prefix
        symbol = sub.symbol
        for trade in trades:
            row = self._trade_row(mirror, trade)
            out.append(OutFrame(f'{prefix}"te",{row}{self._tail(ts_ms)}]', "trade", symbol))
            out.append(OutFrame(f'{prefix}"tu",{row}{self._tail(ts_ms)}]', "other", symbol))
        sub.last_ms = ts_ms

    # -- candles --------------------------------------------------------------------------
    def _candles_snapshot(self, sub: _CandlesSub, ts_ms: int, out: list[OutFrame]) -> None:
        sim = self._sim
        candles = sim._recent_candles(sub.symbol, sub.interval, ts_ms, CANDLES_SNAPSHOT)
        rows = ",".join(sim._candle_row(sub.symbol, c) for c in candles)
        sub.snapshot_due = False
        sub.last_ms = ts_ms
        out.append(OutFrame(f"{sub.prefix}[{rows}]{self._tail(ts_ms)}]", "candle", sub.symbol))

    def _candle_update(self, sub: _CandlesSub, ts_ms: int, out: list[OutFrame]) -> None:
        begin = ts_ms - ts_ms % sub.interval
        candles = self._sim.market.candles(sub.symbol, sub.interval, begin, begin + sub.interval, limit=1)
        if candles:
            row = self._sim._candle_row(sub.symbol, candles[0])
            out.append(OutFrame(f"{sub.prefix}{row}{self._tail(ts_ms)}]", "candle", sub.symbol))
            sub.last_ms = ts_ms


class _BadParam(Exception):
    """A REST parameter Bitfinex would refuse: HTTP 500 ``["error",10020,"NAME: invalid"]``."""


def _ok(body: str) -> RestResponse:
    return RestResponse(200, body, _JSON)


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise _BadParam(name) from None
    if value < 0:
        raise _BadParam(name)
    return value


def _history_params(query: Mapping[str, str], default_limit: int) -> tuple[int, int | None, int | None, bool]:
    """``(limit, start, end, newest_first)`` of a ``hist`` request."""
    limit = _int_param(query, "limit")
    if limit is None:
        limit = default_limit
    elif limit < 1:
        raise _BadParam("limit")
    start = _int_param(query, "start")
    end = _int_param(query, "end")
    sort = query.get("sort", "-1") or "-1"
    if sort not in ("1", "-1"):
        raise _BadParam("sort")
    return min(limit, _MAX_LIMIT), start, end, sort == "-1"


class BitfinexSim:
    """Bitfinex v2 endpoints over a :class:`~mmdata.sim.model.Market` (see the module docstring)."""

    name: str = "bitfinex"

    def __init__(self, market: Market) -> None:
        self.market = market
        self._mirrors = {symbol: _SymbolBook(spec) for symbol, spec in market.specs.items()}
        self._opened = 0
        self._first_trade_ms: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<BitfinexSim symbols={list(self._mirrors)} sessions={self._opened}>"

    def symbols(self) -> Sequence[str]:
        """Symbols served, Bitfinex spelling (``tBTCUSD``)."""
        return list(self.market.specs)

    def accept(self, path: str, now_ms: int) -> BitfinexSession | RestResponse:
        """A session for ``/ws/2`` (any query), else HTTP 404."""
        if path.split("?", 1)[0] != "/ws/2":
            return RestResponse(404, '["error",10020,"not found"]', _JSON)
        self._opened += 1
        return BitfinexSession(self, self._opened)

    # -- shared mirrors ---------------------------------------------------------------
    def _book(self, symbol: str) -> _SymbolBook:
        mirror = self._mirrors.get(symbol)
        if mirror is None:  # a symbol the market grew after construction
            mirror = self._mirrors[symbol] = _SymbolBook(self.market.specs[symbol])
        return mirror

    def _synced_book(self, symbol: str) -> _SymbolBook:
        """The mirror, reloaded from the market if it is not at the market's current state."""
        mirror = self._book(symbol)
        current = self.market.update_id(symbol)
        if mirror.version != current:
            bids, asks = self.market.book(symbol)
            mirror.load(bids, asks, current)
        return mirror

    def _advanced_book(self, step: MarketStep) -> _SymbolBook:
        """The mirror after ``step`` (applied by the first session that sees it)."""
        mirror = self._book(step.symbol)
        version = mirror.version
        if version is not None and step.last_id <= version:
            return mirror
        if version is not None and step.first_id == version + 1:
            mirror.apply(step)
            return mirror
        # Nobody followed the symbol since the mirror was last used: reload.
        return self._synced_book(step.symbol)

    # -- REST ---------------------------------------------------------------------------
    def rest(self, path: str, query: Mapping[str, str], now_ms: int) -> RestResponse:
        """A REST GET: candles, trades, book, pair list, platform status (module docstring)."""
        path = path.split("?", 1)[0]
        try:
            if path.startswith("/v2/candles/"):
                return self._candles(path[len("/v2/candles/") :], query, now_ms)
            if path.startswith("/v2/trades/"):
                symbol, _, section = path[len("/v2/trades/") :].rpartition("/")
                if section == "hist" and symbol:
                    return self._trades_hist(symbol, query)
            elif path.startswith("/v2/book/"):
                symbol, _, prec = path[len("/v2/book/") :].rpartition("/")
                if symbol:
                    return self._book_rest(symbol, prec, query)
            elif path == "/v2/conf/pub:list:pair:exchange":
                return _ok(_dumps([[s[1:] for s in self.market.specs if s.startswith("t")]]))
            elif path == "/v2/platform/status":
                return _ok("[1]")
        except _BadParam as exc:
            return RestResponse(500, f'["error",10020,"{exc.args[0]}: invalid"]', _JSON)
        return RestResponse(404, '["error",10020,"not found"]', _JSON)

    def _trades_hist(self, symbol: str, query: Mapping[str, str]) -> RestResponse:
        limit, start, end, newest = _history_params(query, 120)
        spec = self.market.specs.get(symbol)
        if spec is None:
            return _ok("[]")
        trades = self.market.trades(
            symbol,
            start_ms=start,
            end_ms=None if end is None else end + 1,
            limit=limit,
            newest_first=newest,
        )
        trades = sorted(trades, key=lambda t: t.trade_id, reverse=newest)[:limit]
        pp, qp = spec.price_precision, spec.qty_precision
        rows = [
            f"[{t.trade_id},{t.ts_ms},{'-' if t.side == 'sell' else ''}{js_number_text(t.qty, qp)},"
            f"{js_number_text(t.price, pp)}]"
            for t in trades
        ]
        return _ok(f"[{','.join(rows)}]")

    def _candles(self, rest: str, query: Mapping[str, str], now_ms: int) -> RestResponse:
        key, _, section = rest.rpartition("/")
        if section not in ("hist", "last"):
            raise _BadParam("section")
        parts = key.split(":", 2)
        if len(parts) != 3 or parts[0] != "trade":
            raise _BadParam("key")
        interval = TIMEFRAMES.get(parts[1])
        if interval is None:
            raise _BadParam("time_interval")
        symbol = parts[2]
        limit, start, end, newest = _history_params(query, 100)
        if section == "last":
            limit, newest = 1, True
        spec = self.market.specs.get(symbol)
        if spec is None:
            return _ok("[]")
        end_incl = now_ms if end is None else end
        floor = self._history_floor(symbol, interval)
        if floor is None:
            return _ok("[]")
        if start is not None:
            floor = max(floor, start)
        if end_incl < floor:
            return _ok("[]")
        if newest:
            candles = self._newest_candles(symbol, interval, floor, end_incl + 1, limit)
        else:
            candles = self.market.candles(symbol, interval, floor, end_incl + 1, limit=limit)[:limit]
        rows = [self._candle_row(symbol, c) for c in candles]
        if section == "last":
            return _ok(rows[0] if rows else "[]")
        return _ok(f"[{','.join(rows)}]")

    def _candle_row(self, symbol: str, candle: SimCandle) -> str:
        """``[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME]`` in JavaScript number text (REST and socket alike)."""
        spec = self.market.specs[symbol]
        pp, qp = spec.price_precision, spec.qty_precision
        return (
            f"[{candle.open_ms},{js_number_text(candle.open, pp)},{js_number_text(candle.close, pp)},"
            f"{js_number_text(candle.high, pp)},{js_number_text(candle.low, pp)},"
            f"{js_number_text(candle.volume, qp)}]"
        )

    def _recent_candles(self, symbol: str, interval: int, now_ms: int, limit: int) -> list[SimCandle]:
        """The newest ``limit`` candles up to ``now_ms``, newest first (what REST ``hist`` answers)."""
        floor = self._history_floor(symbol, interval)
        if floor is None:
            return []
        return self._newest_candles(symbol, interval, floor, now_ms + 1, limit)

    def _history_floor(self, symbol: str, interval: int) -> int | None:
        """Open of the interval holding the market's oldest trade (None: no trades at all)."""
        first = self._first_trade_ms.get(symbol)
        if first is None:
            oldest = self.market.trades(symbol, limit=1)
            if not oldest:
                return None
            first = self._first_trade_ms[symbol] = min(t.ts_ms for t in oldest)
        return first - first % interval

    def _newest_candles(self, symbol: str, interval: int, floor: int, hi: int, limit: int) -> list[SimCandle]:
        """The newest ``limit`` candles with open in ``[floor, hi)``, newest first.

        ``Market.candles`` gives the oldest ones of a range, so walk back in chunks.
        """
        out: list[SimCandle] = []
        span = interval * max(limit, 100)
        while len(out) < limit and hi > floor:
            lo = max(floor, hi - span)
            chunk = self.market.candles(symbol, interval, lo, hi, limit=(hi - lo) // interval + 2)
            out.extend(reversed(chunk))
            hi = lo
        return out[:limit]

    def _book_rest(self, symbol: str, prec: str, query: Mapping[str, str]) -> RestResponse:
        if prec != "P0":
            raise _BadParam("precision")
        length = _int_param(query, "len")
        length = 25 if length is None else length
        if length not in (1, 25, 100):
            raise _BadParam("len")
        spec = self.market.specs.get(symbol)
        if spec is None:
            return _ok("[]")
        bids, asks = self.market.book(symbol)
        pp, qp = spec.price_precision, spec.qty_precision
        rows = [
            f"[{js_number_text(p, pp)},{_order_count(p)},{js_number_text(q, qp)}]" for p, q in bids[:length]
        ]
        rows += [
            f"[{js_number_text(p, pp)},{_order_count(p)},-{js_number_text(q, qp)}]" for p, q in asks[:length]
        ]
        return _ok(f"[{','.join(rows)}]")
