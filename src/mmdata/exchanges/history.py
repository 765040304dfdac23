"""Venue history over REST: request builders, exact-text parsers and pagers (pure, sans-I/O).

Nothing here sends a request. A :class:`Pager` is a small state machine: the caller asks it
for the next :class:`~mmdata.types.HttpRequest`, sends it, and feeds the 2xx body back; the
pager answers with the *new* rows (:class:`~mmdata.types.Candle` / :class:`~mmdata.types.Trade`)
inside ``[start_ms, end_ms)`` in time order, and moves its cursor. ``done_ms`` promises that
every row with a time below it has been returned, so a caller may mark ``[start_ms, done_ms)``
as fetched at any point (e.g. before an interruption). Prices and quantities stay the exact
text the venue sent: Binance strings as they are, Kraken and Bitfinex JSON decoded with
``parse_float=str, parse_int=str`` so a JSON number keeps its literal text.

Theory of operation (PROTOCOLS.md §A.5, §B.7, §C.6)
----------------------------------------------------
Binance klines (``/api/v3/klines``, weight 2, at most 1000 rows)
    Cursor = an open time. Request ``startTime=cursor`` (inclusive), ``endTime=end-1``
    (inclusive: klines opening at ``end`` are not asked for), ``limit``. The next cursor is
    the last row's open + the interval, so no kline is asked for twice. Done when a page is
    empty or shorter than ``limit`` (both ends were given: the range is exhausted) or the
    cursor reaches ``end``. Binance sends a row for every interval since the listing, empty
    ones included (volume 0, flat at the previous close); they are returned as sent.

Binance aggTrades (``/api/v3/aggTrades``, weight 4, at most 1000 rows)
    The first request selects by time, ``startTime=start, endTime=end-1`` (both inclusive);
    later ones page by id, ``fromId = last a + 1`` (inclusive), so even thousands of trades
    in one millisecond cross a page boundary without loss or repeat. Done at the first
    trade with ``T >= end``, or at a page shorter than ``limit``.

Kraken OHLC (``/0/public/OHLC``) — the 720-entry limit
    Kraken serves only the **720 most recent** entries of an interval, the last one being
    the running (uncommitted) candle, whatever ``since`` says; older candles cannot be
    fetched. So the candle pager makes **one** request (``since = start_s - 1``: rows at
    ``time >= start_s``), drops the running row, and refuses up front
    (:class:`~mmdata.errors.ConfigError`) a range starting before
    :meth:`HistoryVenue.ohlc_window_start`; the caller builds older candles from Trades.
    Should the venue's window have moved past ``start`` by the time it answers (judged
    from its running row), the page raises :class:`~mmdata.errors.ExchangeError` rather
    than claim candles it could not get. The result key is Kraken's pair name (``XXBTZUSD``),
    not the request's: the entry that is not ``last`` is taken.

Kraken Trades (``/0/public/Trades``, at most 1000 rows)
    Cursor = ``since``, a nanosecond id: ``start_ms * 10**6 - 1`` first (one nanosecond
    before the start, so a trade at exactly the start is not lost), then the response's
    ``last`` verbatim. ``last`` is exclusive, but a trade repeated at the boundary would
    still be dropped (see *duplicates* below). Done at the first trade with ``ts >= end``,
    at an empty page, or when ``last`` does not advance. Times are seconds with a fraction
    (``1688669597.8277369``): ``ts_ms = floor(time * 1000)`` computed with Decimal from the
    text, never a float.

Bitfinex candles hist (``/v2/candles/trade:{TF}:{tSYM}/hist``, at most 10000 rows)
    ``start=cursor, end=end-1`` (both inclusive), ``sort=1`` (oldest first), ``limit``.
    Rows are ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` (OPEN CLOSE HIGH LOW order!) and
    intervals without trades have no row. Next cursor = last MTS + interval; done like
    Binance klines.

Bitfinex trades hist (``/v2/trades/{tSYM}/hist``, at most 10000 rows)
    ``start=cursor, end=end-1, sort=1, limit``; rows ``[ID, MTS, AMOUNT, PRICE]``. A
    millisecond can hold several trades and a page may end inside it, so the next cursor
    is the last MTS itself (inclusive) and the trades of that millisecond already returned
    are skipped by id. A *full* page that does not get past the cursor's millisecond means
    more than ``limit`` trades in one millisecond: no request could page past them, so it
    raises :class:`~mmdata.errors.ExchangeProtocolError`. Done at a page shorter than
    ``limit`` or a trade at ``MTS >= end``.

Duplicates and order (all trade pagers)
    Rows of a page must come in time order (else ExchangeProtocolError). The pager keeps
    the newest millisecond it returned and the ids returned in it; a later row older than
    that millisecond, or of that millisecond with a known id, is a repeat and is skipped.
    Candle pagers skip rows opening before the cursor. Nothing is ever returned twice.

Errors
    A malformed body raises :class:`~mmdata.errors.ExchangeProtocolError` naming the venue
    and what was wrong; a venue's own error answer (Binance ``{"code","msg"}``, Kraken
    ``{"error":[...]}`` with HTTP 200, Bitfinex ``["error",code,msg]``) raises
    :class:`~mmdata.errors.ExchangeError` with its message, except rate limits reported in
    a body (Kraken ``EAPI:Rate limit exceeded`` / ``EGeneral:Too many requests``, Bitfinex
    code 11010), which raise :class:`~mmdata.errors.RateLimited` (status 429). A failed
    :meth:`Pager.feed` changes nothing: the caller may resend the same request and feed
    the new body.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Final, NoReturn, Protocol

import orjson

from mmdata.candles.aggregate import parse_decimal
from mmdata.candles.intervals import INTERVALS, Interval, iso_time
from mmdata.errors import ConfigError, ExchangeError, ExchangeProtocolError, RateLimited
from mmdata.exchanges import get as get_exchange
from mmdata.types import Candle, HttpRequest, Side, Trade

__all__ = [
    "HISTORY_INTERVALS",
    "KRAKEN_OHLC_ENTRIES",
    "HistoryVenue",
    "Pager",
    "binance_agg_trades_request",
    "binance_klines_request",
    "bitfinex_candles_request",
    "bitfinex_trades_request",
    "candle_pager",
    "history_venue",
    "kraken_ohlc_request",
    "kraken_pair",
    "kraken_trades_request",
    "parse_binance_agg_trades",
    "parse_binance_klines",
    "parse_bitfinex_candles",
    "parse_bitfinex_trades",
    "parse_kraken_ohlc",
    "parse_kraken_trades",
    "trade_pager",
]

#: Venue → {mmdata interval → the venue's REST parameter}. Kraken's weeks are not Monday-aligned
#: and Bitfinex's ``7D`` is epoch (Thursday) aligned, unlike mmdata's Monday weeks, and Bitfinex
#: has no 4h: those are refused rather than mislabelled.
HISTORY_INTERVALS: Final[Mapping[str, Mapping[str, str]]] = {
    "binance": {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "1D": "1d", "1W": "1w"},
    "kraken": {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1D": "1440"},
    "bitfinex": {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "1D": "1D"},
}
#: Entries Kraken's OHLC keeps per interval, the running one included (§B.7).
KRAKEN_OHLC_ENTRIES: Final = 720
#: Longest body parsed (a full Bitfinex page of 10000 rows is well under 1 MB).
MAX_BODY_CHARS: Final = 16 * 1024 * 1024

_DEFAULTS: Final[Mapping[str, tuple[int, int, Mapping[str, float]]]] = {
    # exchange: (candle page limit, trade page limit, seconds between requests per kind)
    "binance": (1000, 1000, {"candles": 0.0, "trades": 0.0}),  # weight-budgeted by HttpClient
    "kraken": (KRAKEN_OHLC_ENTRIES, 1000, {"candles": 1.0, "trades": 1.0}),  # limits UNVERIFIED: 1/s
    "bitfinex": (10000, 10000, {"candles": 1.0, "trades": 2.0}),  # 60 and 30 requests a minute
}
_KRAKEN_REST_ASSETS: Final = {"BTC": "XBT", "DOGE": "XDG"}
_KRAKEN_RATE_LIMIT: Final = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests")
_BITFINEX_RATE_LIMIT_CODE: Final = "11010"
_BITFINEX_BLOCK_S: Final = 60.0  # "blocked for 60 seconds" after exceeding a REST rate limit
_NS_PER_MS: Final = 1_000_000
_MALFORMED: Final = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError)
_UNSIGNED_TEXT: Final = re.compile(r"[0-9]{1,19}")
_SECONDS_TEXT: Final = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,30})?(?:[eE][+-]?[0-9]{1,2})?")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name}")


# Exact text for every JSON number (Kraken, Bitfinex): one decoder built once.
_exact_json: Callable[[str], Any] = json.JSONDecoder(
    parse_float=str, parse_int=str, parse_constant=_reject_constant
).decode


# -- venues ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HistoryVenue:
    """One exchange's history endpoints: base URL, page limits, pacing, intervals.

    Build it with :func:`history_venue`. ``min_request_interval_s`` maps the endpoint kind
    (``"candles"`` / ``"trades"``) to the documented spacing between requests (0: none;
    Binance is paced by request weight instead).
    """

    exchange: str
    rest_base: str
    candle_page_limit: int
    trade_page_limit: int
    min_request_interval_s: Mapping[str, float]
    intervals: Mapping[str, str]

    def interval_param(self, interval: str) -> str:
        """The venue's REST spelling of an mmdata interval; ConfigError naming the supported ones."""
        param = self.intervals.get(interval) if isinstance(interval, str) else None
        if param is None:
            raise ConfigError(
                f"{self.exchange} history has no {interval!r} candles; supported: {', '.join(self.intervals)}"
            )
        return param

    def ohlc_window_start(self, interval: str, now_ms: int) -> int | None:
        """Kraken: open time of the oldest of the 720 most recent ``interval`` entries at
        ``now_ms`` (OHLC cannot go older; the newest entry is the running candle). None for
        venues whose candle history has no such window."""
        if self.exchange != "kraken":
            return None
        self.interval_param(interval)
        iv = INTERVALS[interval]
        return iv.floor(now_ms) - (KRAKEN_OHLC_ENTRIES - 1) * iv.ms


def history_venue(exchange: str, rest_base: str | None = None) -> HistoryVenue:
    """The :class:`HistoryVenue` of ``exchange`` (``binance``, ``kraken``, ``bitfinex``).

    ``rest_base`` overrides the venue's REST root (e.g. the simulator's ``http://127.0.0.1:port``);
    a trailing ``/``, Kraken's ``/0`` or Bitfinex's ``/v2`` is dropped. ConfigError for an
    unknown exchange.
    """
    adapter = get_exchange(exchange)  # ConfigError for an unknown venue
    name = adapter.name
    base = (rest_base or adapter.rest_base).rstrip("/")
    suffix = {"kraken": "/0", "bitfinex": "/v2"}.get(name)
    if suffix and base.endswith(suffix):
        base = base[: -len(suffix)]
    candle_limit, trade_limit, pacing = _DEFAULTS[name]
    return HistoryVenue(name, base, candle_limit, trade_limit, pacing, HISTORY_INTERVALS[name])


def kraken_pair(symbol: str) -> str:
    """Kraken's REST pair for a symbol (``BTC/USD`` → ``XBTUSD``, ``DOGE/USD`` → ``XDGUSD``)."""
    base, quote = get_exchange("kraken").normalize_symbol(symbol).split("/")
    return f"{_KRAKEN_REST_ASSETS.get(base, base)}{_KRAKEN_REST_ASSETS.get(quote, quote)}"


# -- request builders -----------------------------------------------------------------------------
def binance_klines_request(
    rest_base: str, symbol: str, interval: str, *, start_ms: int, end_ms: int, limit: int
) -> HttpRequest:
    """``GET /api/v3/klines`` for klines opening in ``[start_ms, end_ms)`` (weight 2).

    ``symbol`` in Binance spelling (``BTCUSDT``), ``interval`` the Binance parameter (``1d``).
    """
    params = (
        ("symbol", symbol),
        ("interval", interval),
        ("startTime", str(start_ms)),
        ("endTime", str(end_ms - 1)),
        ("limit", str(limit)),
    )
    return HttpRequest("GET", f"{rest_base}/api/v3/klines", params, weight=2)


def binance_agg_trades_request(
    rest_base: str,
    symbol: str,
    limit: int,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    from_id: int | None = None,
) -> HttpRequest:
    """``GET /api/v3/aggTrades`` (weight 4): by time ``[start_ms, end_ms)`` or from an id (inclusive)."""
    params: list[tuple[str, str]] = [("symbol", symbol)]
    if from_id is not None:
        params.append(("fromId", str(from_id)))
    if start_ms is not None:
        params.append(("startTime", str(start_ms)))
    if end_ms is not None:
        params.append(("endTime", str(end_ms - 1)))
    params.append(("limit", str(limit)))
    return HttpRequest("GET", f"{rest_base}/api/v3/aggTrades", tuple(params), weight=4)


def kraken_ohlc_request(rest_base: str, pair: str, interval: str, since_s: int | None) -> HttpRequest:
    """``GET /0/public/OHLC``: ``interval`` in minutes (text), rows with ``time > since_s``."""
    params = [("pair", pair), ("interval", interval)]
    if since_s is not None:
        params.append(("since", str(since_s)))
    return HttpRequest("GET", f"{rest_base}/0/public/OHLC", tuple(params))


def kraken_trades_request(rest_base: str, pair: str, since: str, count: int) -> HttpRequest:
    """``GET /0/public/Trades``: up to ``count`` trades after the nanosecond id ``since``."""
    params = (("pair", pair), ("since", since), ("count", str(count)))
    return HttpRequest("GET", f"{rest_base}/0/public/Trades", params)


def bitfinex_candles_request(
    rest_base: str, symbol: str, timeframe: str, *, start_ms: int, end_ms: int, limit: int
) -> HttpRequest:
    """``GET /v2/candles/trade:{TF}:{SYMBOL}/hist``, oldest first, opens in ``[start_ms, end_ms)``."""
    params = (("start", str(start_ms)), ("end", str(end_ms - 1)), ("limit", str(limit)), ("sort", "1"))
    return HttpRequest("GET", f"{rest_base}/v2/candles/trade:{timeframe}:{symbol}/hist", params)


def bitfinex_trades_request(
    rest_base: str, symbol: str, *, start_ms: int, end_ms: int, limit: int
) -> HttpRequest:
    """``GET /v2/trades/{SYMBOL}/hist``, oldest first, ``MTS`` in ``[start_ms, end_ms)``."""
    params = (("start", str(start_ms)), ("end", str(end_ms - 1)), ("limit", str(limit)), ("sort", "1"))
    return HttpRequest("GET", f"{rest_base}/v2/trades/{symbol}/hist", params)


# -- parsing helpers ------------------------------------------------------------------------------
@contextmanager
def _malformed(exchange: str, what: str, body: str) -> Iterator[None]:
    """Turn any shape error while reading ``body`` into ExchangeProtocolError."""
    try:
        yield
    except _MALFORMED as exc:
        raise ExchangeProtocolError(
            f"{exchange} {what}: malformed response ({exc})", exchange=exchange, frame=body
        ) from None
    except RecursionError:
        raise ExchangeProtocolError(
            f"{exchange} {what}: malformed response (nested too deeply)", exchange=exchange, frame=body
        ) from None


def _check_size(body: str) -> None:
    if not isinstance(body, str):
        raise TypeError(f"body must be text, got {type(body).__name__}")
    if len(body) > MAX_BODY_CHARS:
        raise ValueError(f"body of {len(body)} characters exceeds {MAX_BODY_CHARS}")


def _native_uint(value: Any, what: str) -> int:
    """A non-negative JSON integer decoded natively (orjson)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _text_uint(value: Any, what: str) -> int:
    """A non-negative JSON integer decoded as its text (exact decoder)."""
    if type(value) is not str or _UNSIGNED_TEXT.fullmatch(value) is None:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _number(value: Any, what: str, *, signed: bool = False) -> str:
    """Decimal text, checked (finite, in range) and returned unchanged."""
    if type(value) is not str:
        raise ValueError(f"{what} must be a decimal number, got {value!r}")
    number = parse_decimal(value)
    if number < 0 and not signed:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return value


def _list(value: Any, what: str, length: int = 0) -> list[Any]:
    if type(value) is not list or len(value) < length:
        raise ValueError(f"{what} must be a list of at least {length} items, got {str(value)[:80]!r}")
    return value


def _aligned(iv: Interval, open_ms: int) -> int:
    if iv.floor(open_ms) != open_ms:
        raise ValueError(f"candle open {open_ms} is not on a {iv.name} boundary")
    return open_ms


def _interval(name: str) -> Interval:
    iv = INTERVALS.get(name) if isinstance(name, str) else None
    if iv is None:
        raise ConfigError(f"unknown interval {name!r}; intervals: {', '.join(INTERVALS)}")
    return iv


def _closed(iv: Interval, open_ms: int, now_ms: int | None) -> bool:
    return now_ms is None or open_ms + iv.ms <= now_ms


# -- Binance --------------------------------------------------------------------------------------
def _binance_json(body: str) -> Any:
    _check_size(body)
    data = orjson.loads(body)
    if type(data) is dict and "code" in data and "msg" in data:
        raise ExchangeError(f"binance: {data['msg']} (code {data['code']})")
    return data


def parse_binance_klines(body: str, symbol: str, interval: str, *, now_ms: int | None = None) -> list[Candle]:
    """Rows of a ``/api/v3/klines`` body as candles of ``interval`` (an mmdata name).

    Row: ``[open time, open, high, low, close, volume, close time, quote volume, trades, ...]``;
    ``closed`` is ``open + interval <= now_ms`` (True without ``now_ms``).
    """
    iv = _interval(interval)
    out: list[Candle] = []
    with _malformed("binance", "klines", body):
        for row in _list(_binance_json(body), "klines body"):
            fields = _list(row, "kline row", 9)
            open_ms = _aligned(iv, _native_uint(fields[0], "open time"))
            if _native_uint(fields[6], "close time") != open_ms + iv.ms - 1:
                raise ValueError(
                    f"close time {fields[6]} does not end a {iv.name} kline opening at {open_ms}"
                )
            out.append(
                Candle(
                    "binance",
                    symbol,
                    iv.name,
                    open_ms,
                    _number(fields[1], "open"),
                    _number(fields[2], "high"),
                    _number(fields[3], "low"),
                    _number(fields[4], "close"),
                    _number(fields[5], "volume"),
                    _number(fields[7], "quote volume"),
                    _native_uint(fields[8], "number of trades"),
                    _closed(iv, open_ms, now_ms),
                )
            )
    return out


def parse_binance_agg_trades(body: str, symbol: str) -> list[Trade]:
    """Rows of an ``/api/v3/aggTrades`` body: id ``a``, time ``T``, side ``sell`` when ``m``
    (the buyer is the maker, so the taker sold)."""
    out: list[Trade] = []
    with _malformed("binance", "aggTrades", body):
        for row in _list(_binance_json(body), "aggTrades body"):
            if type(row) is not dict:
                raise ValueError(f"aggTrade must be an object, got {str(row)[:80]!r}")
            maker = row["m"]
            if type(maker) is not bool:
                raise ValueError(f"'m' must be true or false, got {maker!r}")
            side: Side = "sell" if maker else "buy"
            out.append(
                Trade(
                    "binance",
                    symbol,
                    _native_uint(row["T"], "'T'"),
                    _number(row["p"], "price 'p'"),
                    _number(row["q"], "quantity 'q'"),
                    side,
                    _native_uint(row["a"], "id 'a'"),
                )
            )
    return out


# -- Kraken ---------------------------------------------------------------------------------------
def _kraken_result(body: str) -> tuple[list[Any], Any]:
    """``(rows, last)`` of a Kraken public answer; venue errors raised as such."""
    _check_size(body)
    data = _exact_json(body)
    if type(data) is not dict:
        raise ValueError("body must be a JSON object")
    errors = data.get("error", [])
    if type(errors) is not list:
        raise ValueError(f"'error' must be a list, got {errors!r}")
    if errors:
        messages = [str(e) for e in errors]
        text = "; ".join(messages)
        if any(m.startswith(_KRAKEN_RATE_LIMIT) for m in messages):
            raise RateLimited(f"kraken: {text}", status=429, retry_after=None)
        raise ExchangeError(f"kraken: {text}")
    result = data["result"]
    if type(result) is not dict:
        raise ValueError("'result' must be an object")
    keys = [k for k in result if k != "last"]
    if len(keys) != 1:
        raise ValueError(f"'result' must hold one pair besides 'last', got {keys!r}")
    return _list(result[keys[0]], "rows"), result.get("last")


def parse_kraken_ohlc(body: str, symbol: str, interval: str, *, now_ms: int | None = None) -> list[Candle]:
    """Rows of a ``/0/public/OHLC`` body as candles of ``interval`` (an mmdata name).

    Row: ``[time (s), open, high, low, close, vwap, volume, count]``. The last row is the
    running candle (§B.7) and comes back with ``closed=False``; so does any row not
    finished by ``now_ms``. Kraken has no quote volume: ``quote_volume`` is None.
    """
    iv = _interval(interval)
    out: list[Candle] = []
    with _malformed("kraken", "OHLC", body):
        rows, _ = _kraken_result(body)
        for index, row in enumerate(rows):
            fields = _list(row, "OHLC row", 8)
            open_ms = _aligned(iv, _text_uint(fields[0], "time") * 1000)
            out.append(
                Candle(
                    "kraken",
                    symbol,
                    iv.name,
                    open_ms,
                    _number(fields[1], "open"),
                    _number(fields[2], "high"),
                    _number(fields[3], "low"),
                    _number(fields[4], "close"),
                    _number(fields[6], "volume"),
                    None,
                    _text_uint(fields[7], "count"),
                    index < len(rows) - 1 and _closed(iv, open_ms, now_ms),
                )
            )
    return out


def _kraken_ts_ms(value: Any) -> int:
    """``1688669597.8277369`` (seconds, text) → 1688669597827: floor with Decimal, no float."""
    if type(value) is not str or _SECONDS_TEXT.fullmatch(value) is None:
        raise ValueError(f"trade time must be seconds since the epoch, got {value!r}")
    return int((Decimal(value) * 1000).to_integral_value(rounding=ROUND_FLOOR))


def parse_kraken_trades(body: str, symbol: str) -> tuple[list[Trade], str]:
    """Rows of a ``/0/public/Trades`` body and its ``last`` (the next ``since``, ns text).

    Row: ``[price, volume, time (s), "b"|"s", "m"|"l", misc, trade_id]``.
    """
    out: list[Trade] = []
    with _malformed("kraken", "Trades", body):
        rows, last = _kraken_result(body)
        if type(last) is not str or _UNSIGNED_TEXT.fullmatch(last) is None:
            raise ValueError(f"'last' must be a nanosecond id, got {last!r}")
        for row in rows:
            fields = _list(row, "trade row", 7)
            side: Side
            if fields[3] == "b":
                side = "buy"
            elif fields[3] == "s":
                side = "sell"
            else:
                raise ValueError(f"side must be 'b' or 's', got {fields[3]!r}")
            out.append(
                Trade(
                    "kraken",
                    symbol,
                    _kraken_ts_ms(fields[2]),
                    _number(fields[0], "price"),
                    _number(fields[1], "volume"),
                    side,
                    _text_uint(fields[6], "trade_id"),
                )
            )
    return out, last


# -- Bitfinex -------------------------------------------------------------------------------------
def _bitfinex_rows(body: str) -> list[Any]:
    _check_size(body)
    data = _exact_json(body)
    if type(data) is list and data and data[0] == "error":
        code = data[1] if len(data) > 1 else ""
        text = data[2] if len(data) > 2 else ""
        if code == _BITFINEX_RATE_LIMIT_CODE:
            raise RateLimited(f"bitfinex: {text} (code {code})", status=429, retry_after=_BITFINEX_BLOCK_S)
        raise ExchangeError(f"bitfinex: {text} (code {code})")
    if type(data) is dict and "error" in data:  # {"error":"ERR_RATE_LIMIT"} in front of the API
        text = str(data["error"])
        if "RATE" in text.upper():
            raise RateLimited(f"bitfinex: {text}", status=429, retry_after=_BITFINEX_BLOCK_S)
        raise ExchangeError(f"bitfinex: {text}")
    return _list(data, "body")


def parse_bitfinex_candles(
    body: str, symbol: str, interval: str, *, now_ms: int | None = None
) -> list[Candle]:
    """Rows ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` (OPEN CLOSE HIGH LOW order) as candles;
    numbers keep their JSON text (``1e-7`` stays ``1e-7``)."""
    iv = _interval(interval)
    out: list[Candle] = []
    with _malformed("bitfinex", "candles", body):
        for row in _bitfinex_rows(body):
            fields = _list(row, "candle row", 6)
            open_ms = _aligned(iv, _text_uint(fields[0], "MTS"))
            out.append(
                Candle(
                    "bitfinex",
                    symbol,
                    iv.name,
                    open_ms,
                    _number(fields[1], "OPEN"),
                    _number(fields[3], "HIGH"),
                    _number(fields[4], "LOW"),
                    _number(fields[2], "CLOSE"),
                    _number(fields[5], "VOLUME"),
                    None,
                    None,
                    _closed(iv, open_ms, now_ms),
                )
            )
    return out


def parse_bitfinex_trades(body: str, symbol: str) -> list[Trade]:
    """Rows ``[ID, MTS, AMOUNT, PRICE]``; AMOUNT < 0 is a taker sell, qty is AMOUNT without its ``-``."""
    out: list[Trade] = []
    with _malformed("bitfinex", "trades", body):
        for row in _bitfinex_rows(body):
            fields = _list(row, "trade row", 4)
            amount = _number(fields[2], "AMOUNT", signed=True)
            sell = amount.startswith("-")
            out.append(
                Trade(
                    "bitfinex",
                    symbol,
                    _text_uint(fields[1], "MTS"),
                    _number(fields[3], "PRICE"),
                    amount[1:] if sell else amount,
                    "sell" if sell else "buy",
                    _text_uint(fields[0], "ID"),
                )
            )
    return out


# -- pagers ---------------------------------------------------------------------------------------
class Pager(Protocol):
    """A sans-I/O pagination state machine over ``[start_ms, end_ms)`` (see the module doc).

    Loop: ``while (request := pager.next_request()) is not None: rows = pager.feed(body)``.
    ``next_request`` returns the same request until it is fed; a ``feed`` that raises
    changes nothing, so the same request may be resent.
    """

    done: bool
    #: Every row with a time below ``done_ms`` in ``[start_ms, end_ms)`` has been returned.
    done_ms: int
    #: Requests handed out so far.
    requests: int

    def next_request(self) -> HttpRequest | None:
        """The request to send next; None when done."""
        ...

    def feed(self, body: str) -> list[Candle] | list[Trade]:
        """The 2xx body answering the last request → the new rows, in time order."""
        ...


def _check_range(start_ms: int, end_ms: int) -> None:
    for name, value in (("start", start_ms), ("end", end_ms)):
        if type(value) is not int or value < 0:
            raise ConfigError(f"history {name} must be epoch milliseconds >= 0, got {value!r}")
    if end_ms <= start_ms:
        raise ConfigError(
            f"empty history range: end {iso_time(end_ms)} is not after start {iso_time(start_ms)}"
        )


def _check_limit(limit: int | None, most: int, what: str) -> int:
    if limit is None:
        return most
    if type(limit) is not int or not 1 <= limit <= most:
        raise ConfigError(f"{what} page limit must be 1..{most}, got {limit!r}")
    return limit


class _PagerBase:
    """Request bookkeeping shared by every pager."""

    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        self.venue = venue
        self.exchange = venue.exchange
        self.symbol = get_exchange(venue.exchange).normalize_symbol(symbol)
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.limit = limit
        self.done = False
        self.done_ms = start_ms
        self.requests = 0
        self._pending: HttpRequest | None = None

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.exchange} {self.symbol} [{self.start_ms}, {self.end_ms}) "
            f"done_ms={self.done_ms} requests={self.requests} done={self.done}>"
        )

    def next_request(self) -> HttpRequest | None:
        """The request to send next (the same one until it is fed); None when done."""
        if self.done:
            return None
        if self._pending is None:
            self._pending = self._build()
            self.requests += 1
        return self._pending

    def _build(self) -> HttpRequest:
        raise NotImplementedError

    def _take(self) -> None:
        if self._pending is None:
            raise RuntimeError("feed() called without a pending request: call next_request() first")

    def _finish(self, done: bool, done_ms: int) -> None:
        self._pending = None
        self.done = done
        self.done_ms = self.end_ms if done else max(self.done_ms, min(done_ms, self.end_ms))

    def _protocol(self, what: str) -> ExchangeProtocolError:
        return ExchangeProtocolError(f"{self.exchange} {self.symbol}: {what}", exchange=self.exchange)


class _CandlePager(_PagerBase):
    """Cursor paging by open time (Binance klines, Bitfinex candles hist)."""

    def __init__(
        self,
        venue: HistoryVenue,
        symbol: str,
        interval: Interval,
        *,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        limit: int,
    ) -> None:
        super().__init__(venue, symbol, start_ms, max(start_ms, min(end_ms, interval.floor(now_ms))), limit)
        self.interval = interval
        self.param = venue.interval_param(interval.name)
        self.now_ms = now_ms
        self.cursor = start_ms
        if self.end_ms <= start_ms:  # nothing closed in the range yet
            self.done = True

    def _build(self) -> HttpRequest:
        base = self.venue.rest_base
        if self.exchange == "binance":
            return binance_klines_request(
                base, self.symbol, self.param, start_ms=self.cursor, end_ms=self.end_ms, limit=self.limit
            )
        return bitfinex_candles_request(
            base, self.symbol, self.param, start_ms=self.cursor, end_ms=self.end_ms, limit=self.limit
        )

    def feed(self, body: str) -> list[Candle]:
        """New closed candles opening in ``[start_ms, end_ms)`` from the answer to the last request."""
        self._take()
        parse = parse_binance_klines if self.exchange == "binance" else parse_bitfinex_candles
        page = parse(body, self.symbol, self.interval.name, now_ms=self.now_ms)
        for before, after in itertools.pairwise(page):
            if after.open_time_ms <= before.open_time_ms:
                raise self._protocol(
                    f"candles out of order ({before.open_time_ms}, then {after.open_time_ms})"
                )
        new = [c for c in page if self.cursor <= c.open_time_ms < self.end_ms]  # end <= floor(now): closed
        cursor = self.cursor
        if page:
            cursor = page[-1].open_time_ms + self.interval.ms
            if cursor <= self.cursor:
                raise self._protocol(f"candle page did not advance past {iso_time(self.cursor)}")
        done = not page or len(page) < self.limit or cursor >= self.end_ms
        self.cursor = cursor
        self._finish(done, cursor)
        return new


class _KrakenCandlePager(_PagerBase):
    """One ``/0/public/OHLC`` request: Kraken keeps only 720 entries per interval."""

    def __init__(
        self, venue: HistoryVenue, symbol: str, interval: Interval, *, start_ms: int, end_ms: int, now_ms: int
    ) -> None:
        super().__init__(venue, symbol, start_ms, max(start_ms, min(end_ms, interval.floor(now_ms))), 1)
        self.interval = interval
        self.param = venue.interval_param(interval.name)
        self.now_ms = now_ms
        window = venue.ohlc_window_start(interval.name, now_ms)
        if window is not None and start_ms < window:
            raise ConfigError(
                f"Kraken serves only the {KRAKEN_OHLC_ENTRIES} most recent {interval.name} candles "
                f"(from {iso_time(window)} at {iso_time(now_ms)}); {iso_time(start_ms)} is older: "
                "build older candles from Trades"
            )
        if self.end_ms <= start_ms:
            self.done = True

    def _build(self) -> HttpRequest:
        since = max(0, self.start_ms // 1000 - 1)  # rows at time > since: from the start's second
        return kraken_ohlc_request(self.venue.rest_base, kraken_pair(self.symbol), self.param, since)

    def feed(self, body: str) -> list[Candle]:
        """The closed candles of ``[start_ms, end_ms)`` (the running last row is dropped)."""
        self._take()
        page = parse_kraken_ohlc(body, self.symbol, self.interval.name, now_ms=self.now_ms)
        for before, after in itertools.pairwise(page):
            if after.open_time_ms <= before.open_time_ms:
                raise self._protocol(
                    f"OHLC rows out of order ({before.open_time_ms}, then {after.open_time_ms})"
                )
        covered = self.end_ms
        if page:
            running = page[-1].open_time_ms  # the venue's uncommitted candle
            oldest = running - (KRAKEN_OHLC_ENTRIES - 1) * self.interval.ms
            if self.start_ms < oldest:
                raise ExchangeError(
                    f"kraken {self.symbol}: OHLC window moved on: it now starts at {iso_time(oldest)}, "
                    f"after the requested start {iso_time(self.start_ms)}; fetch that part from Trades"
                )
            covered = min(covered, running)  # a venue clock behind ours: its running candle is not final
        new = [c for c in page if self.start_ms <= c.open_time_ms < covered]  # the running row is not
        self._pending = None
        self.done = True
        self.done_ms = max(self.start_ms, covered)
        return new


class _TradePager(_PagerBase):
    """Trade pagers: the newest millisecond returned and its ids guard against repeats."""

    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        super().__init__(venue, symbol, start_ms, end_ms, limit)
        self._edge_ms = -1
        self._edge_ids: frozenset[int] = frozenset()

    def _accept(self, page: list[Trade]) -> tuple[list[Trade], bool, tuple[int, frozenset[int]]]:
        """``(new rows, reached end, new edge)``; the edge is stored by :meth:`_commit` only."""
        for before, after in itertools.pairwise(page):
            if after.ts_ms < before.ts_ms:
                raise self._protocol(f"trades out of time order ({before.ts_ms}, then {after.ts_ms})")
        new: list[Trade] = []
        edge_ms, edge_ids = self._edge_ms, set(self._edge_ids)
        at_end = False
        for trade in page:
            ts = trade.ts_ms
            if ts >= self.end_ms:
                at_end = True
                break
            if ts < self.start_ms or ts < edge_ms:
                continue  # before the range, or before what was already returned: a repeat
            trade_id = int(trade.trade_id)
            if ts == edge_ms:
                if trade_id in edge_ids:
                    continue
                edge_ids.add(trade_id)
            else:
                edge_ms, edge_ids = ts, {trade_id}
            new.append(trade)
        return new, at_end, (edge_ms, frozenset(edge_ids))

    def feed(self, body: str) -> list[Trade]:
        raise NotImplementedError

    def _commit(self, done: bool, done_ms: int, edge: tuple[int, frozenset[int]]) -> None:
        self._edge_ms, self._edge_ids = edge
        self._finish(done, done_ms)


class _BinanceTradePager(_TradePager):
    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        super().__init__(venue, symbol, start_ms, end_ms, limit)
        self.from_id: int | None = None

    def _build(self) -> HttpRequest:
        base = self.venue.rest_base
        if self.from_id is None:
            return binance_agg_trades_request(
                base, self.symbol, self.limit, start_ms=self.start_ms, end_ms=self.end_ms
            )
        return binance_agg_trades_request(base, self.symbol, self.limit, from_id=self.from_id)

    def feed(self, body: str) -> list[Trade]:
        """New aggTrades with ``T`` in ``[start_ms, end_ms)``."""
        self._take()
        page = parse_binance_agg_trades(body, self.symbol)
        for before, after in itertools.pairwise(page):
            if int(after.trade_id) <= int(before.trade_id):
                raise self._protocol(f"aggTrade ids not ascending ({before.trade_id}, then {after.trade_id})")
        if page and self.from_id is not None and int(page[0].trade_id) < self.from_id:
            raise self._protocol(
                f"aggTrades page starts at id {page[0].trade_id}, before fromId {self.from_id}"
            )
        new, at_end, edge = self._accept(page)
        done = at_end or len(page) < self.limit
        if page:
            self.from_id = int(page[-1].trade_id) + 1
        self._commit(done, page[-1].ts_ms if page else self.done_ms, edge)
        return new


class _KrakenTradePager(_TradePager):
    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        super().__init__(venue, symbol, start_ms, end_ms, limit)
        self.pair = kraken_pair(self.symbol)
        # one ns before the start: a trade at exactly the start's first nanosecond is kept too
        self.since = str(max(0, start_ms * _NS_PER_MS - 1))

    def _build(self) -> HttpRequest:
        return kraken_trades_request(self.venue.rest_base, self.pair, self.since, self.limit)

    def feed(self, body: str) -> list[Trade]:
        """New trades with a time in ``[start_ms, end_ms)``; ``last`` becomes the next ``since``."""
        self._take()
        page, last = parse_kraken_trades(body, self.symbol)
        new, at_end, edge = self._accept(page)
        stalled = int(last) <= int(self.since)
        done = at_end or not page or stalled
        if not stalled:
            self.since = last
        self._commit(done, page[-1].ts_ms if page else self.done_ms, edge)
        return new


class _BitfinexTradePager(_TradePager):
    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        super().__init__(venue, symbol, start_ms, end_ms, limit)
        self.cursor = start_ms

    def _build(self) -> HttpRequest:
        return bitfinex_trades_request(
            self.venue.rest_base, self.symbol, start_ms=self.cursor, end_ms=self.end_ms, limit=self.limit
        )

    def feed(self, body: str) -> list[Trade]:
        """New trades with ``MTS`` in ``[start_ms, end_ms)``; the cursor stays on the last MTS."""
        self._take()
        page = parse_bitfinex_trades(body, self.symbol)
        new, at_end, edge = self._accept(page)
        full = len(page) >= self.limit
        if full and not at_end and page[-1].ts_ms <= self.cursor:
            raise self._protocol(
                f"more than {self.limit} trades in one millisecond: cannot page "
                f"(at {page[-1].ts_ms}, {iso_time(page[-1].ts_ms)})"
            )
        done = at_end or not full
        if page:
            self.cursor = max(self.cursor, page[-1].ts_ms)
        self._commit(done, self.cursor, edge)
        return new


def candle_pager(
    venue: HistoryVenue,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    now_ms: int,
    limit: int | None = None,
) -> Pager:
    """A pager over the closed ``interval`` candles opening in ``[start_ms, end_ms)``.

    ``end_ms`` is clipped to the open of the candle running at ``now_ms``. ``limit`` is the
    page size (default and maximum ``venue.candle_page_limit``; Kraken ignores it: one
    request). ConfigError for an interval the venue does not serve, a bad range or limit,
    and — Kraken — a start before :meth:`HistoryVenue.ohlc_window_start` (OHLC cannot
    reach it: build those candles from Trades).
    """
    venue.interval_param(interval)  # ConfigError first: it names what the venue serves
    iv = _interval(interval)
    _check_range(start_ms, end_ms)
    if type(now_ms) is not int:
        raise ConfigError(f"now_ms must be epoch milliseconds, got {now_ms!r}")
    size = _check_limit(limit, venue.candle_page_limit, f"{venue.exchange} candles")
    if venue.exchange == "kraken":
        return _KrakenCandlePager(venue, symbol, iv, start_ms=start_ms, end_ms=end_ms, now_ms=now_ms)
    return _CandlePager(venue, symbol, iv, start_ms=start_ms, end_ms=end_ms, now_ms=now_ms, limit=size)


def trade_pager(
    venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, *, limit: int | None = None
) -> Pager:
    """A pager over the trades with a time in ``[start_ms, end_ms)``, oldest first.

    ``limit`` is the page size (default and maximum ``venue.trade_page_limit``). The caller
    clips ``end_ms`` to settled time (the venue may still publish the last milliseconds).
    ConfigError for a bad range or limit.
    """
    _check_range(start_ms, end_ms)
    size = _check_limit(limit, venue.trade_page_limit, f"{venue.exchange} trades")
    pagers: dict[str, type[_TradePager]] = {
        "binance": _BinanceTradePager,
        "kraken": _KrakenTradePager,
        "bitfinex": _BitfinexTradePager,
    }
    return pagers[venue.exchange](venue, symbol, start_ms, end_ms, size)
