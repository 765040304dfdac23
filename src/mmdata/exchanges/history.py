"""Venue history over REST: request builders, exact-text parsers and pagers. Pure (no I/O).

A :class:`Pager` is a small state machine: :meth:`~Pager.next_request` builds the next
:class:`~mmdata.types.HttpRequest` (``None`` when done), the I/O layer sends it, and
:meth:`~Pager.feed` parses the body and returns only the *new* rows of ``[start, end)`` in
time order. ``done_ms`` promises that every row before it has been returned, which is what
the history store records as covered.

Paging per venue (PROTOCOLS.md §A.5, §B.7, §C.6)
-----------------------------------------------
* **Binance klines** — ``startTime`` = cursor, ``endTime`` = end − 1 (inclusive), ``limit``
  ≤ 1000, weight 2. Klines are identified by open time; the next cursor is the last open
  plus the interval, so a boundary candle is never asked for twice. A page shorter than
  ``limit`` ends the range.
* **Binance aggTrades** — the first page by ``startTime``/``endTime``, the next ones by
  ``fromId`` = last id + 1 (ids are contiguous, so nothing at a page boundary is skipped or
  repeated), weight 4. The first trade at or after ``end`` ends the range.
* **Kraken OHLC** — one request: Kraken returns its **720 most recent** entries whatever
  ``since`` says, the last one still running (dropped here). :meth:`HistoryVenue.ohlc_window_start`
  says where that window starts; older candles must be built from trades.
* **Kraken Trades** — ``since`` = start in ns, then the previous answer's ``last``; ids only
  grow, so a trade with an id not above the last one returned is a repeat and skipped.
* **Bitfinex candles hist** — ``start`` = cursor, ``end`` = end − 1, ``sort=1``,
  ``limit`` ≤ 10000; row ``[MTS, OPEN, CLOSE, HIGH, LOW, VOLUME]`` (OPEN CLOSE HIGH LOW!).
* **Bitfinex trades hist** — ``start`` = cursor, ``sort=1``; the next ``start`` is the last
  row's millisecond (it may hold more trades), the ids already returned at that
  millisecond are skipped. A full page of one millisecond cannot be paged past:
  :class:`~mmdata.errors.ExchangeProtocolError`.

Numbers keep the venue's text: Binance and Kraken send strings; Bitfinex sends JSON numbers,
decoded with ``parse_float=str, parse_int=str`` so their literal text is kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, NoReturn, Protocol

import orjson

from mmdata.candles.intervals import INTERVALS
from mmdata.errors import ConfigError, ExchangeError, ExchangeProtocolError, RateLimited
from mmdata.types import Candle, HttpRequest, Side, Trade

__all__ = [
    "HISTORY_INTERVALS",
    "HistoryVenue",
    "Pager",
    "candle_pager",
    "history_venue",
    "trade_pager",
]

_MIN: Final = 60_000
#: mmdata interval → venue parameter, per venue. Kraken and Bitfinex weeks are not
#: Monday-aligned like mmdata's (and Binance's), so ``1W`` is refused for them.
HISTORY_INTERVALS: Final[Mapping[str, Mapping[str, str]]] = {
    "binance": {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "4h": "4h", "1D": "1d", "1W": "1w"},
    "kraken": {"1m": "1", "5m": "5", "15m": "15", "1h": "60", "4h": "240", "1D": "1440"},
    "bitfinex": {"1m": "1m", "5m": "5m", "15m": "15m", "1h": "1h", "1D": "1D"},
}
_INTERVAL_MS: Final = {"1m": _MIN, "5m": 5 * _MIN, "15m": 15 * _MIN, "1h": 60 * _MIN, "4h": 240 * _MIN}
_INTERVAL_MS_ALL: Final = {**_INTERVAL_MS, "1D": 1440 * _MIN, "1W": 7 * 1440 * _MIN}
_DEFAULT_REST: Final = {
    "binance": "https://api.binance.com",
    "kraken": "https://api.kraken.com",
    "bitfinex": "https://api-pub.bitfinex.com",
}
_KRAKEN_OHLC_ROWS: Final = 720
_KRAKEN_RATE_ERRORS: Final = ("EAPI:Rate limit exceeded", "EGeneral:Too many requests")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name}")


_decode_exact = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_reject_constant).decode


class HistoryVenue:
    """One venue's history endpoints, limits and documented request spacing."""

    def __init__(self, exchange: str, rest_base: str | None = None) -> None:
        if exchange not in HISTORY_INTERVALS:
            raise ConfigError(f"no history for exchange {exchange!r}: use binance, kraken or bitfinex")
        self.exchange = exchange
        self.rest_base = (rest_base or _DEFAULT_REST[exchange]).rstrip("/")
        self.candle_page_limit = {"binance": 1000, "kraken": _KRAKEN_OHLC_ROWS, "bitfinex": 10000}[exchange]
        self.trade_page_limit = {"binance": 1000, "kraken": 1000, "bitfinex": 10000}[exchange]
        #: Seconds between two requests of one kind: Kraken ≤ 1/s (a safe reading of its per-IP
        #: limits), Bitfinex candles 60/min and trades 30/min; Binance is budgeted by weight.
        self.min_request_interval_s: Mapping[str, float] = {
            "binance": {},
            "kraken": {"candles": 1.0, "trades": 1.0},
            "bitfinex": {"candles": 1.0, "trades": 2.0},
        }[exchange]

    def __repr__(self) -> str:
        return f"HistoryVenue({self.exchange!r}, rest_base={self.rest_base!r})"

    def interval_param(self, interval: str) -> str:
        """The venue's spelling of ``interval``; ConfigError naming the supported ones."""
        table = HISTORY_INTERVALS[self.exchange]
        value = table.get(interval)
        if value is None:
            raise ConfigError(
                f"{self.exchange} history has no {interval!r} candles here: use one of {', '.join(table)}"
            )
        return value

    def ohlc_window_start(self, interval: str, now_ms: int) -> int | None:
        """Kraken: open time of the oldest of the 720 most recent candles (OHLC cannot go
        older). ``None`` for venues without such a limit."""
        if self.exchange != "kraken":
            return None
        self.interval_param(interval)
        step = _INTERVAL_MS_ALL[interval]
        return now_ms // step * step - (_KRAKEN_OHLC_ROWS - 1) * step


def history_venue(exchange: str, rest_base: str | None = None) -> HistoryVenue:
    """The :class:`HistoryVenue` of ``exchange`` (``rest_base`` e.g. the simulator's URL)."""
    return HistoryVenue(exchange.strip().lower(), rest_base)


class Pager(Protocol):
    """A sans-I/O pagination state machine (see the module docstring)."""

    done: bool
    done_ms: int
    requests: int

    def next_request(self) -> HttpRequest | None:
        """The next request, or ``None`` when the range is complete."""
        ...

    def feed(self, body: str) -> list[Any]:
        """The new rows (Candle or Trade) of the answer to the last request."""
        ...


class _Base:
    """Shared state: range, limit, progress."""

    kind = ""

    def __init__(self, venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, limit: int) -> None:
        if start_ms < 0 or end_ms < start_ms:
            raise ConfigError(f"bad range {start_ms} .. {end_ms}")
        most = venue.candle_page_limit if self.kind == "candles" else venue.trade_page_limit
        if not 1 <= limit <= most:
            raise ConfigError(f"page limit must be 1..{most} for {venue.exchange} {self.kind}, got {limit}")
        self.venue = venue
        self.symbol = symbol
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.limit = limit
        self.requests = 0
        self.done = start_ms >= end_ms
        self.done_ms = end_ms if self.done else start_ms

    def _finish(self) -> None:
        self.done = True
        self.done_ms = self.end_ms

    def _fail(self, what: str, body: str) -> ExchangeProtocolError:
        return ExchangeProtocolError(
            f"{self.venue.exchange} {self.kind} history: {what}", exchange=self.venue.exchange, frame=body
        )

    def _json(self, body: str, exact: bool = False) -> Any:
        try:
            return _decode_exact(body) if exact else orjson.loads(body)
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise self._fail(f"answer is not JSON ({exc})", body) from None

    def _request(self, path: str, params: list[tuple[str, str]], weight: int = 1) -> HttpRequest:
        self.requests += 1
        return HttpRequest("GET", f"{self.venue.rest_base}{path}", tuple(params), weight)


def _text(value: Any) -> str:
    """A decimal as text: the venue's string, or a JSON number's literal text."""
    if isinstance(value, str) and value:
        Decimal(value)  # InvalidOperation for garbage
        return value
    raise ValueError(f"not a decimal: {value!r}")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("bool")
    return int(value)


# ------------------------------------------------------------------------------- binance


class _BinanceKlines(_Base):
    kind = "candles"

    def __init__(  # noqa: PLR0917 - internal, built by the factories
        self, venue: HistoryVenue, symbol: str, interval: str, start: int, end: int, limit: int
    ) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.interval = interval
        self.param = venue.interval_param(interval)
        self.step = _INTERVAL_MS_ALL[interval]
        self.cursor = start

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        params = [
            ("symbol", self.symbol),
            ("interval", self.param),
            ("startTime", str(self.cursor)),
            ("endTime", str(self.end_ms - 1)),
            ("limit", str(self.limit)),
        ]
        return self._request("/api/v3/klines", params, weight=2)

    def feed(self, body: str) -> list[Any]:
        rows = self._json(body)
        if not isinstance(rows, list):
            raise self._fail("answer is not a list of klines", body)
        out: list[Candle] = []
        try:
            for row in rows:
                open_ms = _int(row[0])
                if not self.cursor <= open_ms < self.end_ms:
                    continue
                trades = _int(row[8])
                out.append(
                    Candle(
                        "binance",
                        self.symbol,
                        self.interval,
                        open_ms,
                        _text(row[1]),
                        _text(row[2]),
                        _text(row[3]),
                        _text(row[4]),
                        _text(row[5]),
                        _text(row[7]),
                        trades,
                        True,
                    )
                )
                self.cursor = open_ms + self.step
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed kline ({exc!r})", body) from None
        if len(rows) < self.limit or not out or self.cursor >= self.end_ms:
            self._finish()
        else:
            self.done_ms = self.cursor
        return out


class _BinanceAggTrades(_Base):
    kind = "trades"

    def __init__(self, venue: HistoryVenue, symbol: str, start: int, end: int, limit: int) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.last_id: int | None = None

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        if self.last_id is None:
            params = [
                ("symbol", self.symbol),
                ("startTime", str(self.start_ms)),
                ("endTime", str(self.end_ms - 1)),
                ("limit", str(self.limit)),
            ]
        else:
            params = [("symbol", self.symbol), ("fromId", str(self.last_id + 1)), ("limit", str(self.limit))]
        return self._request("/api/v3/aggTrades", params, weight=4)

    def feed(self, body: str) -> list[Any]:
        rows = self._json(body)
        if not isinstance(rows, list):
            raise self._fail("answer is not a list of aggregate trades", body)
        out: list[Trade] = []
        past_end = False
        try:
            for row in rows:
                tid = _int(row["a"])
                ts = _int(row["T"])
                if self.last_id is not None and tid <= self.last_id:
                    continue
                if ts >= self.end_ms:
                    past_end = True
                    break
                self.last_id = tid
                if ts < self.start_ms:
                    continue
                maker = row["m"]
                if not isinstance(maker, bool):
                    raise ValueError(f"m is {maker!r}")
                side: Side = "sell" if maker else "buy"
                out.append(Trade("binance", self.symbol, ts, _text(row["p"]), _text(row["q"]), side, tid))
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed aggregate trade ({exc!r})", body) from None
        if past_end or len(rows) < self.limit or self.last_id is None:
            self._finish()
        elif out:
            self.done_ms = max(self.done_ms, out[-1].ts_ms)
        return out


# -------------------------------------------------------------------------------- kraken


def kraken_pair(symbol: str) -> str:
    """``BTC/USD`` → ``XBTUSD`` (Kraken REST spelling: BTC is XBT, DOGE is XDG)."""
    names = {"BTC": "XBT", "DOGE": "XDG"}
    base, _, quote = symbol.partition("/")
    return names.get(base, base) + names.get(quote, quote)


def _kraken_result(pager: _Base, body: str) -> tuple[list[Any], Any]:
    data = pager._json(body, exact=True)
    if not isinstance(data, dict):
        raise pager._fail("answer is not an object", body)
    errors = data.get("error") or []
    if errors:
        text = "; ".join(str(e) for e in errors)
        if any(str(e).startswith(_KRAKEN_RATE_ERRORS) for e in errors):
            raise RateLimited(f"kraken: {text}", status=429)
        raise ExchangeError(f"kraken refused the request: {text}")
    result = data.get("result")
    if not isinstance(result, dict):
        raise pager._fail("answer has no result object", body)
    keys = [k for k in result if k != "last"]
    if len(keys) != 1 or not isinstance(result[keys[0]], list):
        raise pager._fail("result does not hold one pair's rows", body)
    return result[keys[0]], result.get("last")


class _KrakenOHLC(_Base):
    kind = "candles"

    def __init__(  # noqa: PLR0917 - internal, built by the factories
        self, venue: HistoryVenue, symbol: str, interval: str, start: int, end: int, limit: int, now_ms: int
    ) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.interval = interval
        self.param = venue.interval_param(interval)
        self.step = _INTERVAL_MS_ALL[interval]
        self.now_ms = now_ms

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        since = max(0, self.start_ms // 1000 - 1)
        params = [("pair", kraken_pair(self.symbol)), ("interval", self.param), ("since", str(since))]
        return self._request("/0/public/OHLC", params)

    def feed(self, body: str) -> list[Any]:
        rows, _last = _kraken_result(self, body)
        out: list[Candle] = []
        try:
            for row in rows:
                open_ms = _int(row[0]) * 1000
                if not self.start_ms <= open_ms < self.end_ms or open_ms + self.step > self.now_ms:
                    continue  # outside the range, or the running candle
                o, h, low, c, vol = (_text(row[i]) for i in (1, 2, 3, 4, 6))
                out.append(
                    Candle(
                        "kraken",
                        self.symbol,
                        self.interval,
                        open_ms,
                        o,
                        h,
                        low,
                        c,
                        vol,
                        None,
                        _int(row[7]),
                        True,
                    )
                )
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed OHLC row ({exc!r})", body) from None
        out.sort(key=lambda c: c.open_time_ms)
        self._finish()
        return out


def _kraken_ms(text: Any) -> int:
    """Seconds with a fraction (the wire text) → whole ms, floored, without float."""
    return int((Decimal(str(text)) * 1000).to_integral_value(rounding="ROUND_FLOOR"))


class _KrakenTrades(_Base):
    kind = "trades"

    def __init__(self, venue: HistoryVenue, symbol: str, start: int, end: int, limit: int) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.since = str(start * 1_000_000)
        self.last_id = -1

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        params = [("pair", kraken_pair(self.symbol)), ("since", self.since), ("count", str(self.limit))]
        return self._request("/0/public/Trades", params)

    def feed(self, body: str) -> list[Any]:
        rows, last = _kraken_result(self, body)
        out: list[Trade] = []
        past_end = False
        try:
            for row in rows:
                tid = _int(row[6])
                ts = _kraken_ms(row[2])
                if tid <= self.last_id:
                    continue
                if ts >= self.end_ms:
                    past_end = True
                    break
                self.last_id = tid
                if ts < self.start_ms:
                    continue
                if row[3] not in ("b", "s"):
                    raise ValueError(f"side {row[3]!r}")
                side: Side = "buy" if row[3] == "b" else "sell"
                out.append(Trade("kraken", self.symbol, ts, _text(row[0]), _text(row[1]), side, tid))
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed trade row ({exc!r})", body) from None
        nxt = str(last) if last is not None else ""
        if past_end or not rows or not nxt.isdigit() or nxt == self.since:
            self._finish()
        else:
            self.since = nxt
            if out:
                self.done_ms = max(self.done_ms, out[-1].ts_ms)
        return out


# ------------------------------------------------------------------------------ bitfinex


class _BitfinexCandles(_Base):
    kind = "candles"

    def __init__(  # noqa: PLR0917 - internal, built by the factories
        self, venue: HistoryVenue, symbol: str, interval: str, start: int, end: int, limit: int
    ) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.interval = interval
        self.param = venue.interval_param(interval)
        self.step = _INTERVAL_MS_ALL[interval]
        self.cursor = start

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        params = [
            ("start", str(self.cursor)),
            ("end", str(self.end_ms - 1)),
            ("limit", str(self.limit)),
            ("sort", "1"),
        ]
        return self._request(f"/v2/candles/trade:{self.param}:{self.symbol}/hist", params)

    def feed(self, body: str) -> list[Any]:
        rows = self._json(body, exact=True)
        if not isinstance(rows, list) or (rows and rows[0] == "error"):
            raise self._fail("answer is not a list of candles", body)
        out: list[Candle] = []
        try:
            for row in rows:
                mts = _int(row[0])
                if not self.cursor <= mts < self.end_ms:
                    continue
                o, c, h, low, vol = (_text(row[i]) for i in (1, 2, 3, 4, 5))
                out.append(
                    Candle("bitfinex", self.symbol, self.interval, mts, o, h, low, c, vol, None, None, True)
                )
                self.cursor = mts + self.step
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed candle ({exc!r})", body) from None
        if len(rows) < self.limit or not out or self.cursor >= self.end_ms:
            self._finish()
        else:
            self.done_ms = self.cursor
        return out


class _BitfinexTrades(_Base):
    kind = "trades"

    def __init__(self, venue: HistoryVenue, symbol: str, start: int, end: int, limit: int) -> None:
        super().__init__(venue, symbol, start, end, limit)
        self.cursor = start
        self.seen: set[int] = set()  # ids already returned at the cursor's millisecond

    def next_request(self) -> HttpRequest | None:
        if self.done:
            return None
        params = [
            ("start", str(self.cursor)),
            ("end", str(self.end_ms - 1)),
            ("limit", str(self.limit)),
            ("sort", "1"),
        ]
        return self._request(f"/v2/trades/{self.symbol}/hist", params)

    def feed(self, body: str) -> list[Any]:
        rows = self._json(body, exact=True)
        if not isinstance(rows, list) or (rows and rows[0] == "error"):
            raise self._fail("answer is not a list of trades", body)
        out: list[Trade] = []
        last_ms = self.cursor
        try:
            for row in rows:
                tid, mts = _int(row[0]), _int(row[1])
                amount, price = row[2], _text(row[3])
                last_ms = max(last_ms, mts)
                if not self.cursor <= mts < self.end_ms or (mts == self.cursor and tid in self.seen):
                    continue
                if not isinstance(amount, str):
                    raise ValueError(f"amount {amount!r}")
                sell = amount.startswith("-")
                qty = _text(amount[1:] if sell else amount)
                out.append(Trade("bitfinex", self.symbol, mts, price, qty, "sell" if sell else "buy", tid))
        except (TypeError, ValueError, IndexError, KeyError, InvalidOperation) as exc:
            raise self._fail(f"malformed trade ({exc!r})", body) from None
        if len(rows) < self.limit:
            self._finish()
            return out
        if last_ms == self.cursor and not out:
            raise self._fail(
                f"more than {self.limit} trades in one millisecond ({last_ms}): cannot page", body
            )
        if last_ms != self.cursor:
            self.seen = set()
            self.cursor = last_ms
        self.seen |= {t.trade_id for t in out if t.ts_ms == last_ms}  # type: ignore[misc]
        self.done_ms = max(self.done_ms, self.cursor)
        if self.cursor >= self.end_ms:
            self._finish()
        return out


# ------------------------------------------------------------------------------- factory


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
    """Closed candles with an open time in ``[start_ms, end_ms)`` (end clipped to the
    running candle's open). ``symbol`` in the venue's canonical spelling."""
    venue.interval_param(interval)
    end = max(min(end_ms, INTERVALS[interval].floor(now_ms)), start_ms)  # 1W opens on Mondays
    lim = venue.candle_page_limit if limit is None else limit
    if venue.exchange == "binance":
        return _BinanceKlines(venue, symbol, interval, start_ms, end, lim)
    if venue.exchange == "kraken":
        return _KrakenOHLC(venue, symbol, interval, start_ms, end, lim, now_ms)
    return _BitfinexCandles(venue, symbol, interval, start_ms, end, lim)


def trade_pager(
    venue: HistoryVenue, symbol: str, start_ms: int, end_ms: int, *, limit: int | None = None
) -> Pager:
    """Trades with an exchange time in ``[start_ms, end_ms)``, each once, in time order."""
    lim = venue.trade_page_limit if limit is None else limit
    if venue.exchange == "binance":
        return _BinanceAggTrades(venue, symbol, start_ms, end_ms, lim)
    if venue.exchange == "kraken":
        return _KrakenTrades(venue, symbol, start_ms, end_ms, lim)
    return _BitfinexTrades(venue, symbol, start_ms, end_ms, lim)
