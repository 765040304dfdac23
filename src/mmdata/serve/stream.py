"""``mmdata serve stream``: the channel stream server (the seed's ``/ws`` on port 8000).

Protocol (docs/stream.md is the reference)
------------------------------------------
Connect to ``ws://host:8000/ws?client_id=<id>[&exchange=<venue>]`` (``client_id``: printable
ASCII, at most 64 characters; a UUID4 when absent). The first message is ``connected`` with
the ``client_id`` (an addition). Client messages, JSON text frames:

- ``{"type":"ping"}`` → ``{"type":"pong","timestamp":...}``;
- ``{"type":"subscribe","channel":C,"symbols":[...],"exchange":optional}`` → ``subscribed``;
- ``{"type":"unsubscribe","channel":C,"symbols":[...]}`` (no symbols: the whole channel) →
  ``unsubscribed``.

Channels: ``price_updates`` (a ``price_update`` every ``price_update_interval_s`` with the
rolling 24 h statistics of each subscribed symbol), ``trades`` (every recorded or live trade
of a subscribed symbol as it is read), and the publish-fed ``signals``, ``trade_executed``
and ``portfolio`` (alias ``portfolio_update``), filled by :meth:`StreamServer.publish` or
through the token-protected ``ws://host:8000/publish`` endpoint (:func:`publish`). The latest
portfolio state is re-sent every ``portfolio_update_interval_s``. A bad message gets
``{"type":"error","error":...,"timestamp":...}`` and the connection stays open. HTTP:
``GET /websocket/status`` (the seed's shape) and ``GET /health``.

Theory of operation
-------------------
Market data comes from :class:`~mmdata.serve.market.Markets` (one trade feed and one
candle aggregator per stream, shared with the candle and metrics servers). The ``trades``
channel is a market listener: each poll's new trades become one pre-framed blob per
(stream, symbol spelling) that is written to every subscriber's transport. The price
loop computes each subscribed stream's statistics once per tick (cached until a trade
arrives or the window moves), groups clients by identical subscription set and frames
one message per group, so 1,000 clients on the same symbols cost one JSON encoding and
1,000 ``transport.write`` calls. All writes of a connection go through its transport in
order (acks, errors, broadcasts alike); a client with more than ``drop_bytes`` unsent is
closed (1008), nobody waits for it. Publish messages are encoded and framed once per
publish. Nothing a client sends is joined into a path: symbols go through
:meth:`Markets.resolve <mmdata.serve.market.Markets.resolve>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import orjson
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.http11 import Request, Response
from websockets.protocol import State

from mmdata.candles import CandleAggregator, iso_time
from mmdata.candles.aggregate import decimal_text, json_number, parse_decimal
from mmdata.errors import ConfigError, ConnectionFailed, ConnectionLost
from mmdata.exchanges import EXCHANGES
from mmdata.serve.hub import frame
from mmdata.serve.market import Market, Markets, TradeRow
from mmdata.serve.params import MAX_VALUE_CHARS, BadRequest, Stream, parse_query, safe_text
from mmdata.serve.relay import json_response, need_upgrade, too_many_connections

__all__ = [
    "CHANNELS",
    "PUBLISH_CHANNELS",
    "StreamOptions",
    "StreamServer",
    "price_entry",
    "publish",
    "publish_sync",
]

log = logging.getLogger("mmdata.serve")

#: Every channel, in the order error messages list them.
CHANNELS: Final = ("price_updates", "trades", "signals", "trade_executed", "portfolio")
#: Channels fed by :meth:`StreamServer.publish` (and the ``/publish`` endpoint).
PUBLISH_CHANNELS: Final = ("signals", "trade_executed", "portfolio")
_ALIASES: Final = {"portfolio_update": "portfolio"}
#: The ``type`` a published message gets when its payload has none.
_PUBLISH_TYPE: Final = {
    "signals": "signal",
    "trade_executed": "trade_executed",
    "portfolio": "portfolio_update",
}
_FORMAT: Final = "Invalid message format"
_MINUTE_MS: Final = 60_000
_WINDOW_MS: Final = 1440 * _MINUTE_MS
_FAR_MS: Final = 1 << 62
_CTX: Final = Context(prec=200)
_PCT: Final = Decimal("0.0001")
_HUNDRED: Final = Decimal(100)
_DROP: Final = str.maketrans("", "", "/-: ")
_REPLACED: Final = 4000  # close code of a connection whose client_id a newer connection took


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _stamp() -> str:
    """``2024-12-19T12:00:00.123Z``: now, ISO-8601 UTC with milliseconds."""
    return iso_time(_now_ms())


def _shown(value: object) -> str:
    return safe_text(value) if isinstance(value, str) else type(value).__name__


# -- options ------------------------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(slots=True)
class StreamOptions:
    """Settings of the stream server (env names in :meth:`from_env`; CLI ``mmdata serve stream``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Stream clients at once (``/ws``); publishers are not counted. The seed had 100; a
    #: market-data server fans out to many dashboards and bots, and a client costs ~10 KB.
    max_connections: int = 1000
    #: Largest frame a ``/ws`` client may send (larger: closed with 1009).
    max_message_bytes: int = 4096
    #: Largest frame an authenticated publisher may send (a portfolio state can be large).
    max_publish_bytes: int = 1 << 20
    #: websockets' keepalive ping (``WEBSOCKET_PING_INTERVAL``; 0: off).
    ping_interval_s: float = 30.0
    price_update_interval_s: float = 3.0
    portfolio_update_interval_s: float = 5.0
    #: Bearer token of ``/publish`` (None or empty: publishing over the network is off).
    publish_token: str | None = None
    #: Exchange of a subscribe without one (None: the only recorded one, else binance).
    default_exchange: str | None = None
    enabled: bool = True
    max_symbols: int = 100  # per channel and connection
    drop_bytes: int = 8 << 20  # a client this far behind is closed (1008)
    ready_timeout_s: float = 30.0  # how long a subscribe waits for a stream's history to load

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> StreamOptions:
        """Options from ``WEBSOCKET_ENABLED``, ``WEBSOCKET_PING_INTERVAL``,
        ``WEBSOCKET_PRICE_UPDATE_INTERVAL``, ``WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL``,
        ``WEBSOCKET_MAX_CONNECTIONS``, ``MMDATA_PUBLISH_TOKEN`` and ``MMDATA_EXCHANGE``
        (unset: the default), then ``overrides`` (None values are skipped: not given).
        ConfigError for a value that does not parse or an unknown override."""
        env = os.environ if environ is None else environ
        out = cls()

        def number(name: str, lo: float) -> float | None:
            text = env.get(name, "").strip()
            if not text:
                return None
            try:
                value = float(text)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {safe_text(text)!r}") from None
            if not lo <= value < float("inf"):
                raise ConfigError(f"{name} must be at least {lo:g}, got {safe_text(text)!r}")
            return value

        enabled = env.get("WEBSOCKET_ENABLED", "").strip().lower()
        if enabled:
            if enabled not in _TRUE | _FALSE:
                raise ConfigError(f"WEBSOCKET_ENABLED must be true or false, got {safe_text(enabled)!r}")
            out.enabled = enabled in _TRUE
        if (v := number("WEBSOCKET_PING_INTERVAL", 0)) is not None:
            out.ping_interval_s = v
        if (v := number("WEBSOCKET_PRICE_UPDATE_INTERVAL", 0.05)) is not None:
            out.price_update_interval_s = v
        if (v := number("WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL", 0.05)) is not None:
            out.portfolio_update_interval_s = v
        text = env.get("WEBSOCKET_MAX_CONNECTIONS", "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise ConfigError(
                    f"WEBSOCKET_MAX_CONNECTIONS must be an integer >= 1, got {safe_text(text)!r}"
                )
            out.max_connections = int(text)
        token = env.get("MMDATA_PUBLISH_TOKEN", "")
        if token:
            out.publish_token = token
        exchange = env.get("MMDATA_EXCHANGE", "").strip()
        if exchange:
            out.default_exchange = exchange
        for name, value in overrides.items():
            if value is None:
                continue  # not given (a CLI option left out): the environment's value stays
            if not hasattr(out, name):
                raise ConfigError(f"unknown stream option {name!r}")
            setattr(out, name, value)
        return out


# -- statistics ---------------------------------------------------------------------------------------
def _num(text: str) -> bytes | None:
    """A price or quantity as a JSON number with its exact text (None: not a finite number)."""
    try:
        parse_decimal(text)
    except ValueError:
        return None
    return json_number(text)


def price_entry(exchange: str, candles: CandleAggregator, last_trade: TradeRow | None, now_ms: int) -> bytes:
    """One symbol's ``price_update`` entry: rolling 24 h statistics at ``now_ms`` (JSON bytes).

    The window is every 1m candle opening at or after ``floor_minute(now) - 23 h 59 min``
    (the current minute and the 1,439 before it; later ones too, should the exchange clock
    run ahead). ``open`` is the first trade of the window's first minute, ``close`` and
    ``price`` the last trade of its last minute (trades in receive order within a minute),
    ``high``/``low`` the extremes, ``volume`` the summed base quantity; ``change = close −
    open`` and ``change_pct = change / open × 100`` rounded half-even to 4 decimals, all in
    exact decimal arithmetic and written as JSON numbers with their exact text. Without a
    trade in the window: ``price``/``close`` are the last trade ever read (null if none),
    the others null and ``volume`` 0. ``last_trade_ms`` is that trade's exchange time.
    """
    start = now_ms - now_ms % _MINUTE_MS - _WINDOW_MS + _MINUTE_MS
    bar = candles.span(start, _FAR_MS)
    last_ms = b"null" if last_trade is None else str(last_trade.ts_ms).encode()
    head = b'{"exchange":' + orjson.dumps(exchange)
    if bar is None:
        price = (_num(last_trade.price) if last_trade is not None else None) or b"null"
        return b"".join(
            (
                head,
                b',"price":',
                price,
                b',"change":null,"change_pct":null,"volume":0,"high":null,"low":null,"open":null,"close":',
                price,
                b',"last_trade_ms":',
                last_ms,
                b"}",
            )
        )
    open_d = parse_decimal(bar.open)
    change = _CTX.subtract(parse_decimal(bar.close), open_d)
    pct = _CTX.divide(_CTX.multiply(change, _HUNDRED), open_d).quantize(_PCT, ROUND_HALF_EVEN, _CTX)
    if change.is_zero():
        change = change.copy_abs()
    if pct.is_zero():
        pct = pct.copy_abs()  # never "-0.0000"
    close = json_number(bar.close)
    return b"".join(
        (
            head,
            b',"price":',
            close,
            b',"change":',
            decimal_text(change).encode(),
            b',"change_pct":',
            decimal_text(pct).encode(),
            b',"volume":',
            decimal_text(bar.volume).encode(),
            b',"high":',
            json_number(bar.high),
            b',"low":',
            json_number(bar.low),
            b',"open":',
            json_number(bar.open),
            b',"close":',
            close,
            b',"last_trade_ms":',
            last_ms,
            b"}",
        )
    )


_NULL_ENTRY_TAIL: Final = (
    b',"price":null,"change":null,"change_pct":null,"volume":null,"high":null,"low":null,'
    b'"open":null,"close":null,"last_trade_ms":null}'
)


# -- bookkeeping ------------------------------------------------------------------------------------
class _Reject(Exception):
    """A client message answered with an ``error`` message."""


@dataclass(slots=True)
class _Health:
    """One channel's figures for ``/websocket/status``."""

    started_at: str | None = None
    last_update: str | None = None
    error_count: int = 0
    recovery_attempts: int = 0
    failing: bool = False

    def attempt(self) -> None:
        if self.failing:
            self.recovery_attempts += 1

    def ok(self) -> None:
        self.failing = False
        self.last_update = _stamp()

    def failed(self) -> None:
        self.error_count += 1
        self.failing = True

    def as_json(self, running: bool) -> dict[str, Any]:
        return {
            "last_update": self.last_update,
            "error_count": self.error_count,
            "recovery_attempts": self.recovery_attempts,
            "is_healthy": running and not self.failing,
            "started_at": self.started_at,
        }


#: A stream's key in the server's indexes: (exchange, symbol folder).
_Key = tuple[str, str]


@dataclass(eq=False, slots=True)
class _Client:
    ws: ServerConnection
    client_id: str
    exchange: str  # default exchange of this connection's subscribes
    #: price_updates / trades: symbol as the client spelled it -> its stream.
    market_subs: dict[str, dict[str, Stream]] = field(default_factory=dict)
    #: signals / trade_executed / portfolio: None = every message, else symbol filters.
    publish_subs: dict[str, set[str] | None] = field(default_factory=dict)
    price_key: tuple[tuple[str, str, str], ...] = ()
    closing: bool = False

    def write(self, blob: bytes, drop_bytes: int) -> bool:
        """Queue pre-framed bytes; False when the client is gone or was just dropped."""
        ws = self.ws
        if self.closing or ws.protocol.state is not State.OPEN:
            return False
        transport = ws.transport
        try:
            buffered = transport.get_write_buffer_size()
        except (AttributeError, RuntimeError):
            buffered = 0
        if buffered > drop_bytes:
            self.closing = True
            _spawn(ws.close(1008, "client too slow"))
            return False
        transport.write(blob)
        return True


_BACKGROUND: set[asyncio.Task[Any]] = set()


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine in the background, keeping a reference until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def _message(kind: str, **fields: Any) -> bytes:
    return frame(orjson.dumps({"type": kind, **fields, "timestamp": _stamp()}))


def _json_default(value: Any) -> Any:
    """orjson fallback: exact decimals as JSON numbers, sets as lists."""
    if isinstance(value, Decimal) and value.is_finite():
        return orjson.Fragment(decimal_text(value))
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _norm_symbol(text: str) -> str:
    return text.strip().translate(_DROP).upper()


# -- the server ---------------------------------------------------------------------------------------
class StreamServer:
    """The channel stream server (see the module docstring)."""

    def __init__(self, options: StreamOptions, markets: Markets) -> None:
        self.options = options
        self.markets = markets
        self.server: Server | None = None
        self.started = time.monotonic()
        self.clients: dict[str, _Client] = {}  # by client_id
        self.connections = 0
        self.publishers = 0
        self.refused = 0
        self.replaced = 0
        self.errors_sent = 0
        self.published: dict[str, int] = dict.fromkeys(PUBLISH_CHANNELS, 0)
        self.health_of: dict[str, _Health] = {name: _Health() for name in CHANNELS}
        self._exchange = "binance"
        self._price: set[_Client] = set()
        self._trades: dict[_Key, dict[str, set[_Client]]] = {}
        self._listening: dict[_Key, Market] = {}
        self._channel: dict[str, set[_Client]] = {name: set() for name in PUBLISH_CHANNELS}
        self._entries: dict[_Key, tuple[tuple[int, int, int], bytes]] = {}
        self._portfolio: bytes | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> Server:
        """Listen (``port=0`` picks a free port: read it from :attr:`port`); ConfigError when
        the server is disabled or an option is invalid."""
        opts = self.options
        if not opts.enabled:
            raise ConfigError(
                "the stream server is disabled (WEBSOCKET_ENABLED=false); "
                "set WEBSOCKET_ENABLED=true to serve it"
            )
        for name in ("price_update_interval_s", "portfolio_update_interval_s"):
            if not getattr(opts, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(opts, name)}")
        if opts.default_exchange and opts.default_exchange.strip().lower() not in EXCHANGES:
            raise ConfigError(
                f"unknown default exchange {opts.default_exchange!r}: one of {', '.join(sorted(EXCHANGES))}"
            )
        self._exchange = self.markets.default_exchange(opts.default_exchange)
        self.server = await serve(
            self._handler,
            opts.host,
            opts.port,
            process_request=self._process_request,
            max_size=opts.max_message_bytes,
            compression=None,  # one encoding for every client: broadcasts write shared bytes
            server_header="mmdata-stream",
            ping_interval=opts.ping_interval_s or None,
        )
        stamp = _stamp()
        for health in self.health_of.values():
            health.started_at = stamp
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(
                self._every(opts.price_update_interval_s, self._price_tick, "price_updates"),
                name="stream-price",
            ),
            loop.create_task(
                self._every(opts.portfolio_update_interval_s, self._portfolio_tick, "portfolio"),
                name="stream-portfolio",
            ),
        ]
        return self.server

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        """Stop the periodic tasks, the market listeners and listening (connections close, 1001)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for market in self._listening.values():
            market.listeners.discard(self._on_trades)
        self._listening.clear()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _every(self, interval: float, tick: Callable[[], None], channel: str) -> None:
        """Run ``tick`` every ``interval`` seconds on a fixed schedule; errors are counted."""
        loop = asyncio.get_running_loop()
        health = self.health_of[channel]
        due = loop.time()
        while True:
            due += interval
            now = loop.time()
            if due < now - interval:
                due = now  # fell far behind (a stalled loop): restart the schedule, no burst
            await asyncio.sleep(max(0.0, due - now))
            health.attempt()
            try:
                tick()
            except Exception:
                health.failed()
                log.exception("stream %s tick failed", channel)
            else:
                health.ok()

    def _running(self, channel: str) -> bool:
        if self.server is None:
            return False
        if channel in ("price_updates", "portfolio"):
            index = 0 if channel == "price_updates" else 1
            return len(self._tasks) > index and not self._tasks[index].done()
        return True

    # -- HTTP -------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method != "GET":
            return json_response(405, {"error": "only GET is served"}, {"Allow": "GET"})
        path = urlsplit(request.path).path
        if path == "/health":
            return json_response(200, self.health())
        if path == "/websocket/status":
            return json_response(200, self.status())
        if path == "/publish":
            return self._check_publisher(connection, request)
        if path not in ("/ws", "/"):
            return json_response(
                404,
                {
                    "error": "unknown path: connect a WebSocket to ws://host:port/ws?client_id= "
                    "(or /publish with a token; GET /websocket/status, /health)"
                },
            )
        if self.connections >= self.options.max_connections:
            self.refused += 1
            return too_many_connections(self.options.max_connections)
        try:
            self._connection_params(request.path)
        except BadRequest as exc:
            return json_response(exc.status, {"error": exc.message})
        return need_upgrade(request)

    def _connection_params(self, target: str) -> tuple[str, str]:
        """``client_id`` (a UUID4 when absent) and the connection's default exchange."""
        params = parse_query(target)
        client_id = params.get("client_id") or str(uuid.uuid4())
        exchange = params.get("exchange")
        if exchange is None or exchange == "":
            exchange = self._exchange
        else:
            exchange = exchange.strip().lower()
            if exchange not in EXCHANGES:
                raise BadRequest(400, f"unknown exchange: one of {', '.join(sorted(EXCHANGES))}")
        return client_id, exchange

    def _check_publisher(self, connection: ServerConnection, request: Request) -> Response | None:
        token = self.options.publish_token
        if not token:
            return json_response(
                403,
                {
                    "error": "publishing over the network is disabled: start the server with "
                    "--publish-token TOKEN (or env MMDATA_PUBLISH_TOKEN) and send it as "
                    "'Authorization: Bearer TOKEN'"
                },
            )
        try:
            params = parse_query(request.path)
        except BadRequest as exc:
            return json_response(exc.status, {"error": exc.message})
        auth = request.headers.get_all("Authorization")
        if len(auth) > 1:
            return json_response(400, {"error": "more than one Authorization header"})
        given: str | None = None
        if auth:
            scheme, _, value = auth[0].strip().partition(" ")
            if scheme.lower() == "bearer":
                given = value.strip()
        elif params.get("token"):
            given = params["token"]
        unauthorized = {"WWW-Authenticate": 'Bearer realm="mmdata-stream"'}
        if given is None:
            return json_response(
                401, {"error": "a token is required: 'Authorization: Bearer TOKEN' or ?token="}, unauthorized
            )
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode()):
            return json_response(401, {"error": "wrong token"}, unauthorized)
        upgrade = need_upgrade(request)
        if upgrade is None:
            # Authenticated: this connection may send larger frames (a portfolio state). The
            # parser reads the limit when the first frame's bytes arrive, after this answer.
            connection.protocol.max_message_size = self.options.max_publish_bytes
        return upgrade

    def health(self) -> dict[str, Any]:
        """``/health``: uptime, connections and per-market figures."""
        return {
            "ok": True,
            "server": "stream",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": self.connections,
            "publishers": self.publishers,
            "max_connections": self.options.max_connections,
            "refused": self.refused,
            "replaced": self.replaced,
            "errors_sent": self.errors_sent,
            "publish_enabled": bool(self.options.publish_token),
            "default_exchange": self._exchange,
            "subscribers": {
                "price_updates": len(self._price),
                "trades": sum(len(c) for g in self._trades.values() for c in g.values()),
                **{name: len(clients) for name, clients in self._channel.items()},
            },
            "published": dict(self.published),
            "markets": [
                {
                    "exchange": m.exchange,
                    "symbol": m.symbol,
                    "ready": m.ready.is_set(),
                    "error": m.error or None,
                    "trades": m.candles.trades,
                    "last_trade_ms": m.last_trade.ts_ms if m.last_trade is not None else None,
                }
                for m in self.markets.markets.values()
            ],
        }

    def status(self) -> dict[str, Any]:
        """``/websocket/status`` in the seed's shape."""
        opts = self.options
        return {
            "enabled": opts.enabled,
            "active_connections": self.connections,
            "max_connections": opts.max_connections,
            "ping_interval": opts.ping_interval_s,
            "price_update_interval": opts.price_update_interval_s,
            "portfolio_update_interval": opts.portfolio_update_interval_s,
            "stream_health": {
                name: health.as_json(self._running(name)) for name, health in self.health_of.items()
            },
        }

    # -- connections ------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if urlsplit(ws.request.path).path == "/publish":
            await self._publisher(ws)
            return
        self.connections += 1
        client: _Client | None = None
        try:
            if self.connections > self.options.max_connections:
                # Handshakes that passed the check together: the late ones are refused here.
                self.refused += 1
                await ws.close(1013, f"too many connections (at most {self.options.max_connections})")
                return
            client_id, exchange = self._connection_params(ws.request.path)
            client = _Client(ws, client_id, exchange)
            old = self.clients.get(client_id)
            if old is not None:
                # The newer connection wins (a client reconnecting before its old socket timed out).
                self.replaced += 1
                old.closing = True
                self._unindex(old)
                _spawn(old.ws.close(_REPLACED, "replaced by a newer connection with the same client_id"))
            self.clients[client_id] = client
            client.write(_message("connected", client_id=client_id), self.options.drop_bytes)
            async for raw in ws:
                await self._on_message(client, raw)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            if client is not None:
                client.closing = True
                self._unindex(client)
                if self.clients.get(client.client_id) is client:
                    del self.clients[client.client_id]

    def _send(self, client: _Client, blob: bytes) -> None:
        client.write(blob, self.options.drop_bytes)

    def _error(self, client: _Client, text: str) -> None:
        self.errors_sent += 1
        self._send(client, _message("error", error=text))

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        try:
            if isinstance(raw, bytes):
                raise _Reject(_FORMAT + ": send JSON in text frames")
            try:
                msg = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise _Reject(_FORMAT) from None
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise _Reject(_FORMAT)
            kind = msg["type"]
            if kind == "ping":
                self._send(client, _message("pong"))
            elif kind == "subscribe":
                await self._subscribe(client, msg)
            elif kind == "unsubscribe":
                self._unsubscribe(client, msg)
            else:
                raise _Reject(f"Unknown message type: {safe_text(kind)}. Valid: ping, subscribe, unsubscribe")
        except _Reject as exc:
            self._error(client, str(exc))
        except Exception:  # a bug must cost one message, not the connection
            log.exception("stream: message handling failed")
            self._error(client, "Internal error: the message was not processed")

    # -- subscriptions --------------------------------------------------------------------------
    @staticmethod
    def _channel_of(msg: dict[str, Any]) -> str:
        channel = msg.get("channel")
        if not isinstance(channel, str):
            raise _Reject(_FORMAT + ": channel must be a string. Valid: " + ", ".join(CHANNELS))
        name = _ALIASES.get(channel, channel)
        if name not in CHANNELS:
            raise _Reject(f"Unknown channel: {safe_text(channel)}. Valid: {', '.join(CHANNELS)}")
        return name

    def _symbols_of(self, msg: dict[str, Any]) -> list[str]:
        """The ``symbols`` list (deduplicated, in order); empty when absent."""
        symbols = msg.get("symbols")
        if symbols is None:
            return []
        if not isinstance(symbols, list):
            raise _Reject(_FORMAT + ": symbols must be a list of strings")
        if len(symbols) > self.options.max_symbols:
            raise _Reject(f"Too many symbols: at most {self.options.max_symbols} per channel")
        out: list[str] = []
        for symbol in symbols:
            if not isinstance(symbol, str):
                raise _Reject(_FORMAT + ": symbols must be a list of strings")
            if (
                not symbol
                or len(symbol) > MAX_VALUE_CHARS
                or not symbol.isascii()
                or not symbol.isprintable()
            ):
                raise _Reject(
                    f"Invalid symbol: {safe_text(symbol)}. A symbol is 1 to {MAX_VALUE_CHARS} printable "
                    "ASCII characters (BTCUSDT, BTC/USD, tBTCUSD)"
                )
            if symbol not in out:
                out.append(symbol)
        return out

    def _exchange_of(self, client: _Client, msg: dict[str, Any]) -> str:
        exchange = msg.get("exchange")
        if exchange is None:
            return client.exchange
        if not isinstance(exchange, str):
            raise _Reject(_FORMAT + ": exchange must be a string")
        venue = exchange.strip().lower()
        if venue not in EXCHANGES:
            raise _Reject(f"Invalid exchange: {safe_text(exchange)}. Valid: {', '.join(sorted(EXCHANGES))}")
        return venue

    async def _subscribe(self, client: _Client, msg: dict[str, Any]) -> None:
        channel = self._channel_of(msg)
        symbols = self._symbols_of(msg)
        exchange = self._exchange_of(client, msg)
        if channel in PUBLISH_CHANNELS:
            self._subscribe_published(client, channel, symbols)
            return
        if not symbols:
            raise _Reject(f'symbols is required for {channel}, e.g. ["BTCUSDT"]')
        current = client.market_subs.get(channel, {})
        wanted: dict[str, Stream] = {}
        for symbol in symbols:
            try:
                stream = self.markets.resolve(exchange, symbol)
            except BadRequest as exc:
                raise _Reject(f"Invalid symbol: {safe_text(symbol)}. {exc.message}") from None
            held = current.get(symbol)
            if held is not None and held != stream:
                raise _Reject(
                    f"Symbol {safe_text(symbol)} is already subscribed on {held.exchange} in {channel}: "
                    "unsubscribe it first"
                )
            for label, other in (*current.items(), *wanted.items()):
                if other == stream and label != symbol:
                    raise _Reject(
                        f"Symbol {safe_text(symbol)} names the stream already subscribed "
                        f"as {safe_text(label)}"
                    )
            wanted[symbol] = stream
        if len(set(current) | set(wanted)) > self.options.max_symbols:
            raise _Reject(f"Too many symbols: at most {self.options.max_symbols} per channel")
        for symbol, stream in wanted.items():
            market = self.markets.get(stream)
            try:
                await asyncio.wait_for(market.ready.wait(), self.options.ready_timeout_s)
            except TimeoutError:
                raise _Reject(f"Symbol {safe_text(symbol)} is still being loaded; retry shortly") from None
            if market.error:
                raise _Reject(f"Invalid symbol: {safe_text(symbol)}. {market.error}")
            if market.feed.source == "none":
                # A folder without a day folder or live file (yet): nothing to serve.
                raise _Reject(
                    f"Invalid symbol: {safe_text(symbol)}. no recorded data for {stream.exchange} yet"
                )
        if client.closing:
            return
        # Applied in one step (no await from here): the ack comes before the next broadcast.
        self._unindex(client)
        client.market_subs.setdefault(channel, {}).update(wanted)
        self._index(client)
        self._send(client, _message("subscribed", channel=channel, exchange=exchange, symbols=symbols))
        if channel == "price_updates":
            self._send(client, frame(self._price_message(client.price_key, _now_ms())))

    def _subscribe_published(self, client: _Client, channel: str, symbols: list[str]) -> None:
        if channel == "portfolio" and symbols:
            raise _Reject("portfolio has no symbols: subscribe without them")
        filters: set[str] = set()
        for symbol in symbols:
            norm = _norm_symbol(symbol)
            if not norm.isalnum() or len(norm) > 32:
                raise _Reject(
                    f"Invalid symbol: {safe_text(symbol)}. A symbol is letters and digits, optional / - :"
                )
            filters.add(norm)
        current = client.publish_subs.get(channel, set())
        if current is not None and symbols:
            if len(current | filters) > self.options.max_symbols:
                raise _Reject(f"Too many symbols: at most {self.options.max_symbols} per channel")
            new: set[str] | None = current | filters
        else:
            new = None if not symbols else current  # no symbols: every message of the channel
        self._unindex(client)
        client.publish_subs[channel] = new
        self._index(client)
        self._send(client, _message("subscribed", channel=channel, symbols=symbols))
        if channel == "portfolio" and self._portfolio is not None:
            self._send(client, frame(self._portfolio_message()))

    def _unsubscribe(self, client: _Client, msg: dict[str, Any]) -> None:
        channel = self._channel_of(msg)
        symbols = self._symbols_of(msg)
        self._unindex(client)
        try:
            if channel in PUBLISH_CHANNELS:
                if not symbols:
                    client.publish_subs.pop(channel, None)
                elif channel in client.publish_subs:
                    current = client.publish_subs[channel]
                    if current is None:
                        raise _Reject(
                            f"Subscribed to every message of {channel}: unsubscribe without symbols"
                        )
                    current -= {_norm_symbol(s) for s in symbols}
                    if not current:
                        del client.publish_subs[channel]
            elif not symbols:
                client.market_subs.pop(channel, None)
            else:
                subs = client.market_subs.get(channel, {})
                for symbol in symbols:
                    subs.pop(symbol, None)  # named as subscribed; an unknown one is already gone
                if not subs:
                    client.market_subs.pop(channel, None)
        finally:
            self._index(client)
        self._send(client, _message("unsubscribed", channel=channel, symbols=symbols))

    def _unindex(self, client: _Client) -> None:
        self._price.discard(client)
        for key, labels in list(self._trades.items()):
            for label, clients in list(labels.items()):
                clients.discard(client)
                if not clients:
                    del labels[label]
            if not labels:
                del self._trades[key]
                market = self._listening.pop(key, None)
                if market is not None:
                    market.listeners.discard(self._on_trades)
        for clients in self._channel.values():
            clients.discard(client)

    def _index(self, client: _Client) -> None:
        if client.closing:
            return
        prices = client.market_subs.get("price_updates", {})
        client.price_key = tuple(sorted((label, s.exchange, s.symbol_fs) for label, s in prices.items()))
        if prices:
            self._price.add(client)
        for label, stream in client.market_subs.get("trades", {}).items():
            key = (stream.exchange, stream.symbol_fs)
            self._trades.setdefault(key, {}).setdefault(label, set()).add(client)
            if key not in self._listening:
                market = self.markets.get(stream)
                self._listening[key] = market
                market.listeners.add(self._on_trades)
        for channel in client.publish_subs:
            self._channel[channel].add(client)

    # -- market channels ------------------------------------------------------------------------
    def _entry(self, exchange: str, symbol_fs: str, now_ms: int) -> bytes:
        """A stream's ``price_update`` entry (cached until a trade comes or the minute turns)."""
        key = (exchange, symbol_fs)
        market = self.markets.markets.get(key)
        if market is None or not market.ready.is_set() or market.error:
            # Not loaded (or unreadable): every figure unknown. Candles are folded in a thread
            # until ``ready``: they must not be read before.
            return b'{"exchange":' + orjson.dumps(exchange) + _NULL_ENTRY_TAIL
        minute = now_ms - now_ms % _MINUTE_MS
        stamp = (minute, *market.feed.last_key)
        cached = self._entries.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        entry = price_entry(exchange, market.candles, market.last_trade, now_ms)
        self._entries[key] = (stamp, entry)
        return entry

    def _price_message(self, price_key: tuple[tuple[str, str, str], ...], now_ms: int) -> bytes:
        parts = [orjson.dumps(label) + b":" + self._entry(ex, fs, now_ms) for label, ex, fs in price_key]
        return b'{"type":"price_update","symbols":{%s},"timestamp":"%s"}' % (
            b",".join(parts),
            iso_time(_now_ms()).encode(),
        )

    def _price_tick(self) -> None:
        if not self._price:
            return
        now_ms = _now_ms()
        groups: dict[tuple[tuple[str, str, str], ...], list[_Client]] = {}
        for client in self._price:
            groups.setdefault(client.price_key, []).append(client)
        drop = self.options.drop_bytes
        for price_key, clients in groups.items():
            blob = frame(self._price_message(price_key, now_ms))
            for client in clients:
                client.write(blob, drop)

    def _on_trades(self, market: Market, rows: list[TradeRow], changed: set[int]) -> None:
        key = (market.exchange, market.stream.symbol_fs)
        labels = self._trades.get(key)
        if not labels:
            return
        health = self.health_of["trades"]
        health.attempt()
        try:
            stamp = _stamp().encode()
            exchange = orjson.dumps(market.exchange)
            drop = self.options.drop_bytes
            for label, clients in list(labels.items()):
                head = b'{"type":"trade","channel":"trades","exchange":%s,"symbol":%s,' % (
                    exchange,
                    orjson.dumps(label),
                )
                parts: list[bytes] = []
                for row in rows:
                    price, qty = _num(row.price), _num(row.qty)
                    if price is None or qty is None:
                        continue  # a row the recorder would never write; counted by the market
                    parts.append(
                        frame(
                            head + b'"trade_id":%s,"price":%s,"qty":%s,"side":%s,"ts_ms":%d,"recv_seq":%d,'
                            b'"timestamp":"%s"}'
                            % (
                                orjson.dumps(row.trade_id),
                                price,
                                qty,
                                orjson.dumps(row.side),
                                row.ts_ms,
                                row.seq,
                                stamp,
                            )
                        )
                    )
                if not parts:
                    continue
                blob = b"".join(parts)
                for client in list(clients):
                    client.write(blob, drop)
        except Exception:
            health.failed()
            raise
        health.ok()

    # -- publish-fed channels ------------------------------------------------------------------
    def publish(self, channel: str, payload: Mapping[str, Any]) -> int:
        """Send ``payload`` to the subscribers of a publish-fed channel; how many got it.

        ``signals`` and ``trade_executed``: the payload is the message; ``type`` (``signal``,
        ``trade_executed``) and ``timestamp`` are added when missing and ``channel`` is set.
        Subscribers that gave symbols get it only when its ``symbol`` is one of them (a
        message without ``symbol`` goes to all). ``portfolio``: the payload is the state,
        sent as ``{"type":"portfolio_update","channel":"portfolio","timestamp",
        "data":payload}`` now and re-sent every ``portfolio_update_interval_s``. Decimals
        become exact JSON numbers. ValueError for another channel or a payload that is not
        a JSON object. Call it in the server's event loop (``loop.call_soon_threadsafe``
        from other threads).
        """
        name = _ALIASES.get(channel, channel) if isinstance(channel, str) else ""
        if name not in PUBLISH_CHANNELS:
            raise ValueError(
                f"Unknown channel: {_shown(channel)}. Publish to one of: {', '.join(PUBLISH_CHANNELS)}"
            )
        if not isinstance(payload, Mapping):
            raise ValueError("the payload must be a JSON object")
        filter_symbol: str | None = None
        try:
            if name == "portfolio":
                state = orjson.dumps(dict(payload), default=_json_default)
                self._portfolio = state
                blob = frame(self._portfolio_message())
            else:
                message: dict[str, Any] = {"type": _PUBLISH_TYPE[name]}
                message.update(payload)
                message["channel"] = name
                message.setdefault("timestamp", _stamp())
                blob = frame(orjson.dumps(message, default=_json_default))
                symbol = payload.get("symbol")
                if isinstance(symbol, str):
                    filter_symbol = _norm_symbol(symbol)
        except TypeError as exc:  # orjson.JSONEncodeError too
            raise ValueError(f"the payload is not JSON: {exc}") from None
        health = self.health_of[name]
        health.attempt()
        delivered = 0
        drop = self.options.drop_bytes
        try:
            for client in list(self._channel[name]):
                wanted = client.publish_subs.get(name)
                if filter_symbol is not None and wanted is not None and filter_symbol not in wanted:
                    continue
                if client.write(blob, drop):
                    delivered += 1
        except Exception:
            health.failed()
            raise
        self.published[name] += 1
        health.ok()
        return delivered

    def _portfolio_message(self) -> bytes:
        assert self._portfolio is not None
        return b'{"type":"portfolio_update","channel":"portfolio","timestamp":"%s","data":%s}' % (
            iso_time(_now_ms()).encode(),
            self._portfolio,
        )

    def _portfolio_tick(self) -> None:
        clients = self._channel["portfolio"]
        if self._portfolio is None or not clients:
            return
        blob = frame(self._portfolio_message())
        drop = self.options.drop_bytes
        for client in list(clients):
            client.write(blob, drop)

    async def _publisher(self, ws: ServerConnection) -> None:
        """``/publish``: ``{"channel":..,"data":{..}}`` → ``published`` (authenticated already)."""
        self.publishers += 1
        try:
            async for raw in ws:
                try:
                    reply = self._publish_message(raw)
                except _Reject as exc:
                    self.errors_sent += 1
                    reply = {"type": "error", "error": str(exc)}
                reply["timestamp"] = _stamp()
                await ws.send(orjson.dumps(reply).decode())
        except ConnectionClosed:
            pass
        finally:
            self.publishers -= 1

    def _publish_message(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise _Reject(_FORMAT + ": send JSON in text frames")
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Reject(_FORMAT) from None
        if not isinstance(msg, dict):
            raise _Reject(_FORMAT)
        kind = msg.get("type", "publish")
        if kind == "ping":
            return {"type": "pong"}
        if kind != "publish":
            raise _Reject(f"Unknown message type: {_shown(kind)}. Valid: publish, ping")
        channel = msg.get("channel")
        data = msg.get("data")
        if not isinstance(channel, str):
            raise _Reject(_FORMAT + ": channel must be a string. Valid: " + ", ".join(PUBLISH_CHANNELS))
        if not isinstance(data, dict):
            raise _Reject(_FORMAT + ": data must be a JSON object")
        try:
            delivered = self.publish(channel, data)
        except ValueError as exc:
            raise _Reject(str(exc)) from None
        return {"type": "published", "channel": _ALIASES.get(channel, channel), "delivered": delivered}


# -- publishing client ----------------------------------------------------------------------------
def _publish_url(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path if parts.path not in ("", "/") else "/publish"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


async def publish(
    url: str, token: str, channel: str, data: Mapping[str, Any], *, timeout: float = 10.0
) -> int:
    """Publish ``data`` on ``channel`` through a stream server's ``/publish`` endpoint; how
    many clients got it. ``url``: ``ws://host:8000`` or ``ws://host:8000/publish``.

    ConfigError when the server refuses (publishing disabled: 403, wrong token: 401) or
    answers with an error (unknown channel, not an object); ConnectionFailed when it
    cannot be reached; ConnectionLost when it closes before answering.
    """
    target = _publish_url(url)
    body = orjson.dumps({"channel": channel, "data": data}, default=_json_default).decode()
    try:
        async with connect(
            target,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=timeout,
            close_timeout=timeout,
            compression=None,
            max_size=1 << 20,
        ) as ws:
            await ws.send(body)
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    except InvalidStatus as exc:
        status = exc.response.status_code
        try:
            text = str(orjson.loads(exc.response.body or b"{}").get("error", ""))
        except (orjson.JSONDecodeError, AttributeError):
            text = ""
        if status in (401, 403):
            raise ConfigError(f"publish refused ({status}): {text}") from None
        raise ConnectionFailed(f"publish refused ({status}): {text}", url=target) from None
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        raise ConnectionLost(
            "the stream server closed the connection before answering",
            code=rcvd.code if rcvd is not None else None,
            reason=rcvd.reason if rcvd is not None else "",
        ) from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise ConnectionFailed(f"cannot publish to {target}: {exc}", url=target) from None
    if isinstance(reply, dict) and reply.get("type") == "published":
        return int(reply["delivered"])
    error = reply.get("error") if isinstance(reply, dict) else reply
    raise ConfigError(f"publish failed: {error}")


def publish_sync(
    url: str, token: str, channel: str, data: Mapping[str, Any], *, timeout: float = 10.0
) -> int:
    """:func:`publish` for scripts without an event loop."""
    return asyncio.run(publish(url, token, channel, data, timeout=timeout))
