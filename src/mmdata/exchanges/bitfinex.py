"""Bitfinex WebSocket v2 adapter: P0–P4 books, trades, checksums and ``SEQ_ALL`` (PROTOCOLS.md §C).

Theory of operation
-------------------
One :class:`BitfinexV2` instance belongs to one connection, because Bitfinex data
frames are bare arrays addressed by a per-connection channel id, and because the
``SEQ_ALL`` sequence number is counted across the whole connection.

*Sending* (§C.1, §C.2, §C.4): first a ``conf`` frame switching on ``OB_CHECKSUM``
(book checksums) and ``SEQ_ALL`` (sequence numbers), then for every symbol a book and a
trades subscription::

    {"event":"conf","flags":196608}
    {"event":"subscribe","channel":"book","symbol":"tBTCUSD","prec":"P0","freq":"F0","len":"25"}
    {"event":"subscribe","channel":"trades","symbol":"tBTCUSD"}

At most 30 channels per connection (§C.1), hence at most 15 symbols.

Live clients (:mod:`mmdata.live`) subscribe channel by channel instead:
:meth:`BitfinexV2.candle_subscribe_messages` (``{"event":"subscribe","channel":"candles",
"key":"trade:1m:tBTCUSD"}``), :meth:`~BitfinexV2.trade_subscribe_messages` and
:meth:`~BitfinexV2.book_subscribe_messages` (the ``conf`` frame first, once per
connection); the ``*_unsubscribe_messages`` use the channel ids this connection learnt.

*Receiving*, event objects (§C.1):

* ``{"event":"info","version":2,...,"platform":{"status":1}}`` → :class:`VenueStatus`
  ``info`` (``maintenance`` when ``status`` is 0); ``{"event":"info","code":20051}`` →
  ``reconnect``, 20060 → ``maintenance``, 20061 → ``resume``.
* ``{"event":"conf","status":"OK","flags":65536}`` → :class:`Ack` ``conf``; the flags
  granted decide which trailing fields the array frames carry.
* ``{"event":"subscribed","channel":"book","chanId":10092,"symbol":"tETHUSD",...,"len":"25"}``
  → the channel id is remembered with its channel and symbol; :class:`Ack`.
  ``unsubscribed`` forgets it, ``error`` is a refused :class:`Ack`, ``pong`` a
  :class:`VenueStatus`.

*Receiving*, array frames ``[CHAN_ID, BODY, (SEQ), (MTS)]``:

* book snapshot ``[225206,[[277520,1,0.00383141],...,[0.0000011,1,-4847.13]]]`` →
  :class:`BookSnapshot` (AMOUNT > 0 bids, < 0 asks); update ``[81757,[0.0000011,12,266122.94]]``
  → :class:`BookDiff` of one level; COUNT 0 deletes (AMOUNT 1 bid, -1 ask) (§C.2);
* ``[81757,"cs",-1175357890]`` → :class:`BookChecksum` (signed CRC-32, §C.3);
* trades snapshot ``[ID,[[ID,MTS,AMOUNT,PRICE],...]]`` and ``[ID,"te",[ID,MTS,AMOUNT,PRICE]]`` →
  :class:`Trade` (AMOUNT > 0 taker buy); ``tu`` repeats ``te`` and is :class:`Unknown` (§C.4);
* candles snapshot ``[ID,[[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME],...]]`` (newest first) and update
  ``[ID,[MTS,OPEN,CLOSE,HIGH,LOW,VOLUME]]`` → :class:`~mmdata.types.Candle` (§C.5) — note
  the wire order **OPEN, CLOSE, HIGH, LOW**; the channel is known from its ``subscribed``
  event, whose ``key`` (``trade:1m:tBTCUSD``) gives symbol and timeframe. ``interval`` is
  the mmdata name (``7D`` → ``1W``, :data:`CANDLE_INTERVALS`); no quote volume, no trade
  count. Bitfinex has no "closed" flag: a candle is closed when a later interval's candle
  arrives (:class:`~mmdata.exchanges.base.CandleCloser`): a snapshot's candles come out
  oldest first, all but the newest closed; a new interval's first update re-emits the
  previous candle with ``closed=True`` first;
* ``[ID,"hb"]`` → heartbeat; ticker and other channels → :class:`Unknown`.

Numbers keep the wire's own text: the checksum is computed over it (``7e-7``,
``205000``; Python's ``str(float)`` would give ``7e-07`` and ``205000.0``), so frames
are decoded with ``parse_float=str, parse_int=str``. Ask amounts lose their leading
``-`` (books hold positive quantities); the checksum code puts it back. (A side effect:
a JSON *string* where a number belongs, ``"5"``, cannot be told from the number ``5``;
Bitfinex never sends one, and the sync engine rejects non-numeric levels.)

Sequence numbers (§C.1, verified on a real capture: contiguous 1..1670 over tickers,
books, trades and heartbeats): with ``SEQ_ALL`` every array frame ends with the
connection's next number, e.g. ``[204928,"hb",127]``. A frame whose number is not the
previous one + 1 yields a :class:`SequenceBreak` *before* its own events; the missing
frame may have belonged to any channel, so the caller hands the break to every book
engine of the connection. A frame that cannot be used (malformed body) does not
advance the counter, so the next frame reports the loss as a break. Frames of channels
we do not follow (unknown id, raw R0 books) do advance it when contiguous: nothing of
ours was lost. Heartbeats of a channel whose ``subscribed`` answer has not arrived yet
do happen (real capture, ``[232954,"hb",139]`` precedes its answer): they become a
heartbeat without symbol instead of an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from mmdata.book.sync import ChecksumSync, SyncEngine
from mmdata.errors import ConfigError, ExchangeProtocolError
from mmdata.exchanges.base import MAX_FRAME_CHARS, CandleCloser
from mmdata.exchanges.base import symbol_fs as _symbol_fs
from mmdata.types import (
    Ack,
    BookDiff,
    BookSnapshot,
    Candle,
    Event,
    HttpRequest,
    SequenceBreak,
    Trade,
    Unknown,
    VenueStatus,
    new_book_checksum,
    new_book_diff,
    new_book_snapshot,
    new_trade,
)

__all__ = [
    "BOOK_LENGTHS",
    "CANDLE_INTERVALS",
    "MAX_CHANNELS",
    "MAX_FRAME_CHARS",
    "OB_CHECKSUM",
    "SEQ_ALL",
    "TIMESTAMP",
    "BitfinexV2",
]

#: ``conf`` flags (PROTOCOLS.md §C.1).
TIMESTAMP: Final = 32768
SEQ_ALL: Final = 65536
OB_CHECKSUM: Final = 131072

#: Longest frame ``parse`` accepts (characters).
#: Book ``len`` values the venue accepts (per side).
BOOK_LENGTHS: Final = (1, 25, 100, 250)
#: Public channel subscriptions allowed per connection.
MAX_CHANNELS: Final = 30

_PRECISIONS = frozenset({"P0", "P1", "P2", "P3", "P4"})

#: Candle timeframes (§C.5): mmdata name → Bitfinex spelling (a week is ``7D``).
CANDLE_INTERVALS: Final[Mapping[str, str]] = {
    "1m": "1m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1h": "1h",
    "3h": "3h",
    "6h": "6h",
    "12h": "12h",
    "1D": "1D",
    "1W": "7D",
    "14D": "14D",
    "1M": "1M",
}
_INTERVAL_NAMES: Final[Mapping[str, str]] = {
    **{venue: name for name, venue in CANDLE_INTERVALS.items()},
    "1W": "1W",  # older spelling of 7D
}

# Channel kinds kept per channel id.
_BOOK: Final = 0
_TRADES: Final = 1
_OTHER: Final = 2
_RAW_BOOK: Final = 3
_CANDLES: Final = 4

_NAME: Final = "bitfinex"
_INFO_KINDS = {20051: "reconnect", 20060: "maintenance", 20061: "resume"}
_SYMBOL_EXAMPLE = 'e.g. "BTC/USD", "btcusd", "tBTCUSD" or "AVAX/USD" (→ tAVAX:USD)'

# Venue spelling: t + 6 chars, or t + BASE:QUOTE.
_VENUE_RE = re.compile(r"t(?:([A-Z0-9]{3})([A-Z0-9]{3})|([A-Z0-9]{2,12}):([A-Z0-9]{2,12}))")
_FUNDING_RE = re.compile(r"f[A-Z0-9]{2,12}")
_USER_PAIR_RE = re.compile(r"([A-Za-z0-9]{2,12})\s*[/\-_:]\s*([A-Za-z0-9]{2,12})")
_USER_SIX_RE = re.compile(r"[A-Za-z0-9]{6}")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name} in frame")


# One decoder built once: json.loads(**kw) would build a new one per frame.
_decode = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_reject_constant).decode


class _MalformedError(ValueError):
    """Internal: a frame of the wrong shape; ``parse`` turns it into ExchangeProtocolError."""


class BitfinexV2:
    """Bitfinex WebSocket v2 (public): books P0–P4 with checksums, trades, ``SEQ_ALL``.

    ``prec`` is the book precision (P0 … P4); ``checksum`` asks for ``cs`` frames
    (``OB_CHECKSUM``); ``seq_all`` asks for connection sequence numbers (``SEQ_ALL``).
    The instance holds the connection's channel ids and sequence counter: use a new
    one per connection.
    """

    name: str = _NAME
    #: mmdata interval name → Bitfinex candle timeframe.
    candle_intervals: Mapping[str, str | int] = CANDLE_INTERVALS
    min_send_interval_s: float = 0.0

    def __init__(
        self,
        *,
        ws_base: str | None = None,
        rest_base: str | None = None,
        prec: str = "P0",
        checksum: bool = True,
        seq_all: bool = True,
    ) -> None:
        if prec not in _PRECISIONS:
            what = "raw books (R0) are not supported" if prec == "R0" else f"unknown precision {prec!r}"
            raise ConfigError(f"Bitfinex book prec: {what}; use one of P0, P1, P2, P3, P4")
        self.ws_base: str = ws_base or "wss://api-pub.bitfinex.com/ws/2"
        self.rest_base: str = rest_base or "https://api-pub.bitfinex.com"
        self.prec = prec
        self.conf_flags: int = (OB_CHECKSUM if checksum else 0) | (SEQ_ALL if seq_all else 0)
        # chanId text (as decoded) -> (kind, symbol, channel name); candles: name = the key
        self._channels: dict[str, tuple[int, str | None, str]] = {}
        self._candle_intervals: dict[str, str] = {}  # candles chanId text -> mmdata interval
        self._closer = CandleCloser()
        self._conf_requested = False
        self._flags = 0  # granted by the venue's conf answer
        self._last_seq: int | None = None

    # -- symbols and subscriptions -------------------------------------------
    def normalize_symbol(self, text: str) -> str:
        """Bitfinex spelling of a trading pair: ``BTC/USD`` → ``tBTCUSD``, ``AVAX/USD`` → ``tAVAX:USD``.

        Funding symbols (``fUSD``) and text that is no pair raise ConfigError.
        """
        if not isinstance(text, str):
            raise ConfigError(f"symbol must be text, {_SYMBOL_EXAMPLE}")
        stripped = text.strip()
        m = _VENUE_RE.fullmatch(stripped)
        if m is not None:
            base, quote = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
            return _pair(base, quote)
        if _FUNDING_RE.fullmatch(stripped):
            raise ConfigError(
                f"{text!r} is a Bitfinex funding symbol; only trading pairs are supported, {_SYMBOL_EXAMPLE}"
            )
        m = _USER_PAIR_RE.fullmatch(stripped)
        if m is not None:
            return _pair(m[1].upper(), m[2].upper())
        if _USER_SIX_RE.fullmatch(stripped):
            upper = stripped.upper()
            return _pair(upper[:3], upper[3:])
        raise ConfigError(f"not a Bitfinex trading pair: {text!r}; {_SYMBOL_EXAMPLE}")

    def ws_url(self, symbols: Sequence[str]) -> str:
        """The public endpoint; symbols are chosen by subscribe messages."""
        return self.ws_base

    def subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """``conf`` frame, then a book and a trades subscription per symbol.

        ``depth`` is the book ``len`` (1, 25, 100 or 250 per side). At most 15 symbols
        (30 channels) fit on one connection.
        """
        if depth not in BOOK_LENGTHS:
            raise ConfigError(f"Bitfinex book depth must be one of {', '.join(map(str, BOOK_LENGTHS))}")
        pairs = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        if not pairs:
            raise ConfigError("no symbols to subscribe to")
        if 2 * len(pairs) > MAX_CHANNELS:
            raise ConfigError(
                f"{len(pairs)} symbols need {2 * len(pairs)} channels (book + trades each); Bitfinex "
                f"allows {MAX_CHANNELS} channel subscriptions per connection, i.e. at most "
                f"{MAX_CHANNELS // 2} symbols: split them over several connections"
            )
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        out = [dumps({"event": "conf", "flags": self.conf_flags})]
        length = str(depth)
        for sym in pairs:
            out.append(
                dumps(
                    {
                        "event": "subscribe",
                        "channel": "book",
                        "symbol": sym,
                        "prec": self.prec,
                        "freq": "F0",
                        "len": length,
                    }
                )
            )
            out.append(dumps({"event": "subscribe", "channel": "trades", "symbol": sym}))
        return out

    def resubscribe_messages(self, symbol: str, depth: int) -> list[str]:
        """Unsubscribe one symbol's book channel (when this connection knows its chanId) and
        subscribe again: the venue answers with a fresh snapshot (PROTOCOLS.md §C.1).

        Used by the recorder after a checksum mismatch or sequence break; the symbol's
        trades channel and the other symbols are not touched.
        """
        pair = self.normalize_symbol(symbol)
        if depth not in BOOK_LENGTHS:
            raise ConfigError(f"Bitfinex book depth must be one of {', '.join(map(str, BOOK_LENGTHS))}")
        dumps = json.JSONEncoder(separators=(",", ":")).encode
        out = [
            dumps({"event": "unsubscribe", "chanId": int(key)})
            for key, (kind, sym, _channel) in self._channels.items()
            if kind == _BOOK and sym == pair
        ]
        book = {"event": "subscribe", "channel": "book", "symbol": pair, "prec": self.prec}
        out.append(dumps({**book, "freq": "F0", "len": str(depth)}))
        return out

    # -- live subscriptions (mmdata.live) --------------------------------------------
    def live_url(self) -> str:
        """The public endpoint (every subscription is a message)."""
        return self.ws_base

    def _pairs(self, symbols: Sequence[str]) -> list[str]:
        if isinstance(symbols, str):
            symbols = [symbols]
        pairs = list(dict.fromkeys(self.normalize_symbol(s) for s in symbols))
        if not pairs:
            raise ConfigError("no symbols to subscribe to")
        return pairs

    def candle_key(self, symbol: str, interval: str) -> str:
        """Channel key ``trade:<timeframe>:<symbol>``; ``interval`` is an mmdata name (``1W`` → ``7D``)."""
        timeframe = CANDLE_INTERVALS.get(interval)
        if timeframe is None:
            raise ConfigError(
                f"Bitfinex has no {interval!r} candles; intervals: {', '.join(CANDLE_INTERVALS)}"
            )
        return f"trade:{timeframe}:{self.normalize_symbol(symbol)}"

    def candle_subscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """One ``candles`` subscription per symbol (§C.5)."""
        return [
            _encode({"event": "subscribe", "channel": "candles", "key": self.candle_key(sym, interval)})
            for sym in self._pairs(symbols)
        ]

    def candle_unsubscribe_messages(self, symbols: Sequence[str], interval: str) -> list[str]:
        """Unsubscribe the candle channels of this connection with those keys."""
        keys = {self.candle_key(sym, interval) for sym in self._pairs(symbols)}
        return self._unsubscribe(lambda kind, sym, channel: kind == _CANDLES and channel in keys)

    def trade_subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """One ``trades`` subscription per symbol (§C.4)."""
        pairs = self._pairs(symbols)
        return [_encode({"event": "subscribe", "channel": "trades", "symbol": sym}) for sym in pairs]

    def trade_unsubscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Unsubscribe the trades channels of this connection for ``symbols``."""
        pairs = set(self._pairs(symbols))
        return self._unsubscribe(lambda kind, sym, channel: kind == _TRADES and sym in pairs)

    def book_subscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """``conf`` (first call on this connection: checksums, sequence numbers), then one
        ``book`` subscription per symbol with ``len`` = ``depth`` (1, 25, 100 or 250)."""
        if depth not in BOOK_LENGTHS:
            raise ConfigError(f"Bitfinex book depth must be one of {', '.join(map(str, BOOK_LENGTHS))}")
        out = []
        if not self._conf_requested:
            self._conf_requested = True
            out.append(_encode({"event": "conf", "flags": self.conf_flags}))
        for sym in self._pairs(symbols):
            out.append(
                _encode(
                    {
                        "event": "subscribe",
                        "channel": "book",
                        "symbol": sym,
                        "prec": self.prec,
                        "freq": "F0",
                        "len": str(depth),
                    }
                )
            )
        return out

    def book_unsubscribe_messages(self, symbols: Sequence[str], depth: int) -> list[str]:
        """Unsubscribe the book channels of this connection for ``symbols``."""
        pairs = set(self._pairs(symbols))
        return self._unsubscribe(lambda kind, sym, channel: kind in (_BOOK, _RAW_BOOK) and sym in pairs)

    def _unsubscribe(self, wanted: Any) -> list[str]:
        return [
            _encode({"event": "unsubscribe", "chanId": int(key)})
            for key, (kind, sym, channel) in self._channels.items()
            if wanted(kind, sym, channel)
        ]

    # -- parsing ----------------------------------------------------------------
    def parse(self, frame: str) -> list[Event]:
        """Events of one received frame (see the module docstring).

        Raises ExchangeProtocolError for malformed or foreign frames and for data of
        unknown channel ids; nothing else escapes.
        """
        if len(frame) > MAX_FRAME_CHARS:
            raise ExchangeProtocolError(
                f"frame of {len(frame)} characters exceeds {MAX_FRAME_CHARS}", exchange=self.name, frame=frame
            )
        try:
            msg = _decode(frame)
            if type(msg) is list:
                return self._on_array(msg, frame)
            if type(msg) is dict:
                return self._on_event(msg, frame)
            raise _MalformedError("not a Bitfinex frame (neither array nor event object)")
        except _MalformedError as exc:
            raise ExchangeProtocolError(str(exc), exchange=self.name, frame=frame) from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
            raise ExchangeProtocolError(
                f"malformed Bitfinex frame ({type(exc).__name__}: {exc})", exchange=self.name, frame=frame
            ) from None

    def _on_array(self, msg: list[Any], frame: str) -> list[Event]:
        """``[CHAN_ID, BODY, (SEQ), (MTS)]`` data frames: the hot path."""
        if len(msg) < 2:
            raise _MalformedError("array frame without body")
        chan = self._channels.get(msg[0])
        body = msg[1]
        if type(body) is list:
            end = 2
        elif type(body) is str:
            end = 2 if body == "hb" else 3
        else:
            raise _MalformedError("array frame body is neither a list nor a message type")
        event: Event
        flags = self._flags
        seq: int | None = None
        ts: int | None = None
        brk: SequenceBreak | None = None
        if flags & (SEQ_ALL | TIMESTAMP):
            pos = end
            if flags & SEQ_ALL:
                seq = int(msg[pos])
                pos += 1
                last = self._last_seq
                if last is not None and seq != last + 1:
                    brk = SequenceBreak(self.name, last + 1, seq)
            if flags & TIMESTAMP:
                ts = int(msg[pos])
        elif len(msg) < end:
            raise _MalformedError(f"{body[:20]!r} frame without payload")

        if chan is None:
            int(msg[0])  # a foreign first element is malformed, not an unknown channel
            if body == "hb":
                self._last_seq = seq
                event = VenueStatus(self.name, "heartbeat", "", None, None, seq)
                return [brk, event] if brk is not None else [event]
            self._skip(seq, brk)
            raise _MalformedError(f"data for unknown channel id {msg[0]}")
        kind, symbol, _ = chan

        if kind == _BOOK:
            assert symbol is not None
            if type(body) is list:
                if body and type(body[0]) is not list:
                    event = _book_update(symbol, body, ts, frame, seq)
                else:
                    event = _book_snapshot(symbol, body, ts, frame, seq)
            elif body == "cs":
                event = new_book_checksum(self.name, symbol, int(msg[2]), ts, frame, seq)
            elif body == "hb":
                event = VenueStatus(self.name, "heartbeat", "", None, symbol, seq)
            else:
                raise _MalformedError(f"unexpected {body[:20]!r} message on a book channel")
            self._last_seq = seq
            return [brk, event] if brk is not None else [event]

        if kind == _TRADES:
            assert symbol is not None
            if type(body) is list:
                if body and type(body[0]) is not list:
                    raise _MalformedError("trades frame body is neither a snapshot nor a typed message")
                events: list[Event] = [brk] if brk is not None else []
                events.extend(_trade(symbol, row, frame, seq, True) for row in body)
                self._last_seq = seq
                return events
            if body == "te":
                event = _trade(symbol, msg[2], frame, seq, False)
            elif body in ("tu", "fte", "ftu"):
                # tu repeats te on the public stream; f* are funding trades.
                event = Unknown(self.name, frame)
            elif body == "hb":
                event = VenueStatus(self.name, "heartbeat", "", None, symbol, seq)
            else:
                raise _MalformedError(f"unexpected {body[:20]!r} message on a trades channel")
            self._last_seq = seq
            return [brk, event] if brk is not None else [event]

        if kind == _CANDLES and type(body) is list:
            assert symbol is not None
            interval = self._candle_intervals[msg[0]]
            if body and type(body[0]) is not list:
                candles = self._closer.update(_candle(symbol, interval, body))
            else:
                candles = self._closer.snapshot([_candle(symbol, interval, row) for row in body])
            self._last_seq = seq
            return [brk, *candles] if brk is not None else list(candles)

        if body == "hb":
            event = VenueStatus(self.name, "heartbeat", "", None, symbol, seq)
        elif kind == _RAW_BOOK:
            self._skip(seq, brk)
            raise _MalformedError("raw books not supported")
        else:
            event = Unknown(self.name, frame)  # ticker, candles, status ...
        self._last_seq = seq
        return [brk, event] if brk is not None else [event]

    def _skip(self, seq: int | None, brk: SequenceBreak | None) -> None:
        """Count a frame we do not use; a break is left for the next frame to report."""
        if seq is not None and brk is None:
            self._last_seq = seq

    def _on_event(self, msg: dict[str, Any], frame: str) -> list[Event]:
        """``{"event": ...}`` objects: info, conf, subscription answers, errors, pong."""
        event = msg.get("event")
        name = self.name
        if event == "subscribed":
            return [self._on_subscribed(msg, frame)]
        if event == "info":
            return [_info(name, msg)]
        if event == "conf":
            status = msg.get("status")
            flags = msg.get("flags")
            if status == "OK":
                self._flags = self.conf_flags if flags is None else int(flags)
                return [Ack(name, "conf", None, True, f"flags {self._flags}", raw=frame)]
            return [
                Ack(name, "conf", None, False, f"conf refused: status {status}, flags {flags}", raw=frame)
            ]
        if event == "unsubscribed":
            key = str(int(msg["chanId"]))
            chan = self._channels.pop(key, None)
            self._candle_intervals.pop(key, None)
            channel, symbol = (chan[2], chan[1]) if chan is not None else ("", None)
            if chan is not None and chan[0] == _CANDLES:
                channel = "candles"
            ok = msg.get("status", "OK") == "OK"
            return [Ack(name, channel, symbol, ok, "unsubscribed", None, int(key), frame)]
        if event == "error":
            code = msg.get("code")
            text = msg.get("msg", "")
            about = msg.get("channel")
            pair = msg.get("symbol")
            return [
                Ack(
                    name,
                    about if type(about) is str else "",
                    pair if type(pair) is str else None,
                    False,
                    f"{code} {text}",
                    raw=frame,
                )
            ]
        if event == "pong":
            return [VenueStatus(name, "pong")]
        if event == "auth":
            return [Unknown(name, frame)]
        raise _MalformedError(f"not a Bitfinex event: {repr(event)[:40]}")

    def _on_subscribed(self, msg: dict[str, Any], frame: str) -> Ack:
        chan_id = int(msg["chanId"])
        channel = msg["channel"]
        symbol = msg.get("symbol")
        if type(channel) is not str or (symbol is not None and type(symbol) is not str):
            raise _MalformedError("subscribed: channel and symbol must be text")
        depth: int | None = None
        if channel == "book":
            if symbol is None:
                raise _MalformedError("subscribed book without symbol")
            kind = _RAW_BOOK if msg.get("prec") == "R0" else _BOOK
            length = msg.get("len")
            depth = None if length is None else int(length)
        elif channel == "trades":
            if symbol is None:
                raise _MalformedError("subscribed trades without symbol")
            kind = _TRADES
        elif channel == "candles" and (parsed := _candle_key(msg.get("key"))) is not None:
            # Remembered by key (what unsubscribing matches on) with the interval beside it.
            symbol, interval = parsed
            self._candle_intervals[str(chan_id)] = interval
            self._channels[str(chan_id)] = (_CANDLES, symbol, msg["key"])
            return Ack(self.name, channel, symbol, True, "", None, chan_id, frame)
        else:
            kind = _OTHER
        # Keyed by the id's JSON text, as data frames decode it: no int() per frame.
        self._channels[str(chan_id)] = (kind, symbol, channel)
        return Ack(self.name, channel, symbol, True, "", depth, chan_id, frame)

    # -- REST and sync ----------------------------------------------------------
    def snapshot_request(self, symbol: str, depth: int) -> HttpRequest | None:
        """None: Bitfinex sends book snapshots on the socket after each subscription."""
        return None

    def parse_snapshot(self, symbol: str, body: str) -> BookSnapshot:
        """Not used for Bitfinex (books arrive on the socket): always raises ExchangeProtocolError."""
        raise ExchangeProtocolError(
            "Bitfinex book snapshots arrive on the WebSocket, not over REST", exchange=self.name, frame=body
        )

    def rest_symbol(self, url: str) -> str | None:
        """None: no REST snapshots to route."""
        return None

    def new_sync_engine(self, symbol: str, depth: int) -> SyncEngine:
        """A checksum-verified engine (``cs`` frames, ``SEQ_ALL`` breaks count as gaps)."""
        return ChecksumSync.bitfinex(self.normalize_symbol(symbol), depth)

    def symbol_fs(self, symbol: str) -> str:
        """File-system form (``tAVAX:USD`` → ``tAVAXUSD``)."""
        return _symbol_fs(symbol)


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _candle_key(key: Any) -> tuple[str, str] | None:
    """``trade:1m:tBTCUSD`` → ``("tBTCUSD", "1m")``; None for other keys (funding, unknown timeframe)."""
    if type(key) is not str:
        return None
    parts = key.split(":", 2)
    if len(parts) != 3 or parts[0] != "trade" or not parts[2].startswith("t"):
        return None
    interval = _INTERVAL_NAMES.get(parts[1])
    return None if interval is None else (parts[2], interval)


def _candle(symbol: str, interval: str, row: list[Any]) -> Candle:
    """``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` — OPEN, CLOSE, HIGH, LOW, not OHLC (§C.5)."""
    mts, open_, close, high, low, volume = row[0], row[1], row[2], row[3], row[4], row[5]
    if not all(type(v) is str for v in (open_, close, high, low, volume)):
        raise _MalformedError("candle fields must be numbers")
    return Candle(_NAME, symbol, interval, int(mts), open_, high, low, close, volume, None, None, False)


def _pair(base: str, quote: str) -> str:
    # Six-letter pairs are written together, anything else with a colon (§C.1).
    if len(base) == 3 and len(quote) == 3:
        return f"t{base}{quote}"
    return f"t{base}:{quote}"


def _info(name: str, msg: dict[str, Any]) -> VenueStatus:
    """``info`` events: connection greeting (version, platform status) or an info code."""
    text = msg.get("msg", "")
    if type(text) is not str:
        text = str(text)
    code = msg.get("code")
    if code is not None:
        number = int(code)
        return VenueStatus(name, _INFO_KINDS.get(number, "info"), text, number)
    platform = msg.get("platform")
    status = platform.get("status") if type(platform) is dict else None
    if status is not None and int(status) == 0:
        return VenueStatus(name, "maintenance", text or "platform in maintenance")
    version = msg.get("version")
    return VenueStatus(name, "info", text or (f"API version {version}" if version is not None else ""))


def _book_update(symbol: str, level: list[Any], ts: int | None, frame: str, seq: int | None) -> BookDiff:
    """``[PRICE, COUNT, AMOUNT]``: sign of AMOUNT picks the side, COUNT 0 deletes (§C.2)."""
    price = level[0]
    count = level[1]
    amount = level[2]
    if type(price) is not str or type(count) is not str or type(amount) is not str:
        raise _MalformedError("book level fields must be numbers")
    ask = amount.startswith("-")
    qty = "0" if count == "0" else (amount[1:] if ask else amount)
    if ask:
        return new_book_diff(_NAME, symbol, (), ((price, qty),), ts, None, None, None, frame, seq)
    return new_book_diff(_NAME, symbol, ((price, qty),), (), ts, None, None, None, frame, seq)


def _book_snapshot(
    symbol: str, levels: list[Any], ts: int | None, frame: str, seq: int | None
) -> BookSnapshot:
    """``[[PRICE, COUNT, AMOUNT], ...]``: bids (AMOUNT > 0) then asks (AMOUNT < 0)."""
    bids: list[tuple[str, str]] = []
    asks: list[tuple[str, str]] = []
    add_bid = bids.append
    add_ask = asks.append
    for level in levels:
        amount = level[2]
        if amount.startswith("-"):
            add_ask((level[0], amount[1:]))
        else:
            add_bid((level[0], amount))
    return new_book_snapshot(_NAME, symbol, bids, asks, ts, None, None, frame, seq)


def _trade(symbol: str, row: list[Any], frame: str, seq: int | None, snapshot: bool) -> Trade:
    """``[ID, MTS, AMOUNT, PRICE]``; AMOUNT > 0 is a taker buy (§C.4)."""
    amount = row[2]
    price = row[3]
    if type(amount) is not str or type(price) is not str:
        raise _MalformedError("trade amount and price must be numbers")
    if amount.startswith("-"):
        return new_trade(
            _NAME, symbol, int(row[1]), price, amount[1:], "sell", int(row[0]), frame, snapshot, seq
        )
    return new_trade(_NAME, symbol, int(row[1]), price, amount, "buy", int(row[0]), frame, snapshot, seq)
