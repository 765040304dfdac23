"""``mmdata serve candles``: OHLCV candles over WebSocket, 1m to 1W, in rooms.

Protocol (the seed's candle API; docs/candles.md is the reference)
------------------------------------------------------------------
Connect to ``ws://host:7000`` (or ``/ws``). Client messages, JSON text:

- ``{"type":"subscribe","symbol":"BTC/USDT","interval":"5m","initialBars":100}`` (optional
  ``"exchange"``; default: the server's ``--exchange``) → ``initial`` with the newest bars,
  then ``update`` messages;
- ``{"type":"unsubscribe","symbol":..,"interval":..}`` → ``unsubscribed`` (an addition);
- ``{"type":"ping"}`` → ``{"type":"pong"}``.

Server messages: ``initial`` ``{symbol, interval, bars}``, ``update`` ``{symbol, interval,
bar}``, ``error`` ``{message}``, ``pong``. A bar is ``{time, open, high, low, close, volume,
quoteVolume}``: ``time`` the ISO-8601 UTC open, numbers written with the exact decimal text.
Replies carry ``exchange`` as well (an addition clients may ignore).

Theory of operation
-------------------
Candles come from :class:`~mmdata.serve.market.Market` (recorded + live trades folded into
1m bars, higher intervals merged from them in memory). Clients are grouped in *rooms* per
(exchange, symbol as the client spelled it, interval). When a poll brings trades, each room
of that market is marked changed; a room broadcasts its running candle at once if its last
broadcast is a second old, else one second after it — at most one update per second per
room, and only when the candle differs from the last one sent. The message is framed once
and written to every member's transport. Only the *running* candle is ever an update: a
late trade into a finished candle shows in later ``initial`` answers, never as an update
that a client would take for a new candle.

All sends of a connection go through its transport in order, so an ``initial`` always
precedes the room's next ``update``. A client whose unsent bytes pass ``drop_bytes`` is
closed (1008); nobody waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from mmdata.candles import VALID_INTERVALS, Interval, InvalidInterval, parse_interval
from mmdata.serve.hub import frame
from mmdata.serve.market import Market, Markets, TradeRow
from mmdata.serve.params import BadRequest, safe_text
from mmdata.serve.relay import json_response, need_upgrade, too_many_connections

__all__ = ["CandleOptions", "CandleServer"]

log = logging.getLogger("mmdata.serve")

_FORMAT = "Invalid message format"


@dataclass(slots=True)
class CandleOptions:
    """Settings of the candle server (CLI ``mmdata serve candles --help``)."""

    host: str = "127.0.0.1"
    port: int = 7000
    max_connections: int = 2000
    max_message_bytes: int = 4096
    #: Exchange of a ``subscribe`` without one (None: the only recorded one, else binance).
    default_exchange: str | None = None
    default_initial_bars: int = 100
    max_initial_bars: int = 5000
    max_subscriptions: int = 64  # per connection
    throttle_s: float = 1.0  # at most one update per room per this many seconds
    drop_bytes: int = 8 << 20
    ready_timeout_s: float = 30.0
    ping_interval_s: float = 20.0


class _Reject(Exception):
    """A client message answered with an ``error`` message."""


@dataclass(eq=False, slots=True)
class _Client:
    ws: ServerConnection
    rooms: set[_Room] = field(default_factory=set)
    closing: bool = False

    def write(self, blob: bytes, drop_bytes: int) -> None:
        ws = self.ws
        if self.closing or ws.protocol.state is not State.OPEN:
            return
        transport = ws.transport
        try:
            buffered = transport.get_write_buffer_size()
        except (AttributeError, RuntimeError):
            buffered = 0
        if buffered > drop_bytes:
            self.closing = True
            asyncio.get_running_loop().create_task(ws.close(1008, "client too slow"))
            return
        transport.write(blob)


@dataclass(eq=False, slots=True)
class _Room:
    key: str
    exchange: str
    symbol: str  # the clients' spelling
    interval: Interval
    market: Market
    clients: set[_Client] = field(default_factory=set)
    last_sent: Any = None  # Bar | None
    last_broadcast_ms: int | None = None
    last_broadcast_mono: float = -1e18
    timer: asyncio.TimerHandle | None = None
    updates: int = 0


class CandleServer:
    """The candle WebSocket server (see the module docstring)."""

    def __init__(self, options: CandleOptions, markets: Markets) -> None:
        self.options = options
        self.markets = markets
        self.server: Server | None = None
        self.clients: set[_Client] = set()
        self.rooms: dict[str, _Room] = {}
        self._by_market: dict[int, set[_Room]] = {}
        self._listening: set[int] = set()
        self.started = time.monotonic()
        self.refused = 0
        self.errors_sent = 0
        self._exchange = ""

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> Server:
        """Listen (``port=0`` picks a free port: read it from :attr:`port`)."""
        opts = self.options
        self._exchange = self.markets.default_exchange(opts.default_exchange)
        self.server = await serve(
            self._handler,
            opts.host,
            opts.port,
            process_request=self._process_request,
            max_size=opts.max_message_bytes,
            compression=None,  # one encoding for every client: broadcasts write shared bytes
            server_header="mmdata-candles",
            ping_interval=opts.ping_interval_s,
        )
        return self.server

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        """Stop the timers and listening (connections are closed by the server)."""
        for room in self.rooms.values():
            if room.timer is not None:
                room.timer.cancel()
        for market in {id(r.market): r.market for r in self.rooms.values()}.values():
            market.listeners.discard(self._on_trades)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    # -- HTTP -------------------------------------------------------------------------------
    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if request.method != "GET":
            return json_response(405, {"error": "only GET is served"}, {"Allow": "GET"})
        if path == "/health":
            return json_response(200, self.health())
        if path == "/health/ws-stats":
            return json_response(200, self.stats())
        if path not in ("/", "/ws"):
            return json_response(
                404,
                {
                    "error": "unknown path: connect a WebSocket to ws://host:port/ "
                    "(or GET /health, /health/ws-stats)"
                },
            )
        if len(self.clients) >= self.options.max_connections:
            self.refused += 1
            return too_many_connections(self.options.max_connections)
        return need_upgrade(request)

    def health(self) -> dict[str, Any]:
        """``/health``."""
        return {
            "ok": True,
            "server": "candles",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": len(self.clients),
            "rooms": len(self.rooms),
            "default_exchange": self._exchange,
        }

    def stats(self) -> dict[str, Any]:
        """``/health/ws-stats`` in the seed's shape (plus per-market figures)."""
        markets = {id(r.market): r.market for r in self.rooms.values()}
        for m in self.markets.markets.values():
            markets.setdefault(id(m), m)
        return {
            "connections": len(self.clients),
            "broadcaster": {
                "totalRooms": len(self.rooms),
                "totalClients": sum(len(r.clients) for r in self.rooms.values()),
                "rooms": [
                    {
                        "key": r.key,
                        "clientCount": len(r.clients),
                        "hasCandle": r.market.candles.last_minute is not None,
                        "lastBroadcast": r.last_broadcast_ms,
                        "updates": r.updates,
                    }
                    for r in self.rooms.values()
                ],
            },
            "aggregator": {
                "oneMinuteCandlesCount": sum(m.candles.one_minute_count for m in markets.values()),
                "markets": [
                    {
                        "exchange": m.exchange,
                        "symbol": m.symbol,
                        "oneMinuteCandlesCount": m.candles.one_minute_count,
                        "trades": m.candles.trades,
                        "rejectedTrades": m.rejected,
                        "badRows": m.feed.bad_rows,
                        "source": m.feed.source,
                        "lastTradeMs": m.last_trade.ts_ms if m.last_trade is not None else None,
                    }
                    for m in markets.values()
                ],
            },
        }

    # -- connections ------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        client = _Client(ws)
        self.clients.add(client)
        try:
            async for raw in ws:
                try:
                    await self._on_message(client, raw)
                except _Reject as exc:
                    self._send(client, {"type": "error", "message": str(exc)})
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            for room in list(client.rooms):
                self._leave(client, room)

    def _send(self, client: _Client, message: dict[str, Any]) -> None:
        if message.get("type") == "error":
            self.errors_sent += 1
        client.write(frame(orjson.dumps(message)), self.options.drop_bytes)

    async def _on_message(self, client: _Client, raw: str | bytes) -> None:
        try:
            msg = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Reject(_FORMAT) from None
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            raise _Reject(_FORMAT)
        kind = msg["type"]
        if kind == "ping":
            self._send(client, {"type": "pong"})
        elif kind == "subscribe":
            await self._subscribe(client, msg)
        elif kind == "unsubscribe":
            self._unsubscribe(client, msg)
        else:
            raise _Reject(f"Unknown message type: {safe_text(kind)}. Valid: subscribe, unsubscribe, ping")

    def _target(self, msg: dict[str, Any]) -> tuple[str, str, Interval]:
        symbol = msg.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise _Reject(_FORMAT + ": symbol must be a non-empty string")
        exchange = msg.get("exchange", self._exchange)
        if not isinstance(exchange, str) or not exchange:
            raise _Reject(_FORMAT + ": exchange must be a non-empty string")
        try:
            interval = parse_interval(msg.get("interval"))
        except InvalidInterval:
            text = msg.get("interval")
            if not isinstance(text, str):
                raise _Reject(_FORMAT + ": interval must be a string") from None
            raise _Reject(f"Invalid interval: {safe_text(text)}. Valid: {VALID_INTERVALS}") from None
        return exchange.strip().lower(), symbol, interval

    def _market(self, exchange: str, symbol: str) -> Market:
        try:
            stream = self.markets.resolve(exchange, symbol)
        except BadRequest as exc:
            recorded = [s.symbol for s in self.markets.catalog() if s.exchange == exchange][:20]
            hint = f" Recorded for {exchange}: {', '.join(recorded)}" if recorded else ""
            raise _Reject(f"Invalid symbol: {safe_text(symbol)}. {exc.message}.{hint}") from None
        return self.markets.get(stream)

    async def _subscribe(self, client: _Client, msg: dict[str, Any]) -> None:
        exchange, symbol, interval = self._target(msg)
        opts = self.options
        count = msg.get("initialBars", opts.default_initial_bars)
        if type(count) is not int or not 0 <= count <= opts.max_initial_bars:
            raise _Reject(f"Invalid initialBars: must be an integer from 0 to {opts.max_initial_bars}")
        key = f"{exchange}:{symbol}:{interval.name}"
        room = self.rooms.get(key)
        if (room is None or client not in room.clients) and len(client.rooms) >= opts.max_subscriptions:
            raise _Reject(f"Too many subscriptions: at most {opts.max_subscriptions} per connection")
        market = self._market(exchange, symbol)
        try:
            await asyncio.wait_for(market.ready.wait(), opts.ready_timeout_s)
        except TimeoutError:
            raise _Reject(f"Symbol {safe_text(symbol)} is still being loaded; retry shortly") from None
        if market.error:
            raise _Reject(f"Invalid symbol: {safe_text(symbol)}. {market.error}")
        if client.closing or client.ws.protocol.state is not State.OPEN:
            return
        room = self.rooms.get(key)  # again: the await above may have let another client create it
        if room is None:
            room = self.rooms[key] = _Room(key, exchange, symbol, interval, market)
            self._by_market.setdefault(id(market), set()).add(room)
            if id(market) not in self._listening:
                self._listening.add(id(market))
                market.listeners.add(self._on_trades)
        # Initial and joining in one step (no await): the next update comes after these bars.
        bars = market.candles.bars(interval, count) if count else []
        head = b'{"type":"initial","exchange":%s,"symbol":%s,"interval":%s,"bars":[' % (
            orjson.dumps(exchange),
            orjson.dumps(symbol),
            orjson.dumps(interval.name),
        )
        client.write(frame(head + b",".join(b.json() for b in bars) + b"]}"), opts.drop_bytes)
        room.clients.add(client)
        client.rooms.add(room)
        if room.last_sent is None:
            room.last_sent = market.candles.latest(interval)

    def _unsubscribe(self, client: _Client, msg: dict[str, Any]) -> None:
        exchange, symbol, interval = self._target(msg)
        room = self.rooms.get(f"{exchange}:{symbol}:{interval.name}")
        if room is None or client not in room.clients:
            raise _Reject(f"Not subscribed: {safe_text(symbol)} {interval.name}")
        self._leave(client, room)
        self._send(
            client,
            {"type": "unsubscribed", "exchange": exchange, "symbol": symbol, "interval": interval.name},
        )

    def _leave(self, client: _Client, room: _Room) -> None:
        room.clients.discard(client)
        client.rooms.discard(room)
        if not room.clients:
            if room.timer is not None:
                room.timer.cancel()
            del self.rooms[room.key]
            rooms = self._by_market.get(id(room.market))
            if rooms is not None:
                rooms.discard(room)
                if not rooms:
                    del self._by_market[id(room.market)]
                    self._listening.discard(id(room.market))
                    room.market.listeners.discard(self._on_trades)

    # -- broadcasting -----------------------------------------------------------------------
    def _on_trades(self, market: Market, rows: list[TradeRow], changed: set[int]) -> None:
        if not changed:
            return
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for room in list(self._by_market.get(id(market), ())):
            if room.timer is not None:
                continue  # already due: it will send the newest candle then
            wait = room.last_broadcast_mono + self.options.throttle_s - now
            if wait <= 0:
                self._broadcast(room)
            else:
                room.timer = loop.call_later(wait, self._broadcast, room)

    def _broadcast(self, room: _Room) -> None:
        room.timer = None
        if room.key not in self.rooms:
            return
        bar = room.market.candles.latest(room.interval)
        if bar is None or bar.same_as(room.last_sent):
            return
        room.last_sent = bar
        room.last_broadcast_mono = time.monotonic()
        room.last_broadcast_ms = time.time_ns() // 1_000_000
        room.updates += 1
        message = b'{"type":"update","exchange":%s,"symbol":%s,"interval":%s,"bar":%s}' % (
            orjson.dumps(room.exchange),
            orjson.dumps(room.symbol),
            orjson.dumps(room.interval.name),
            bar.json(),
        )
        blob = frame(message)
        drop = self.options.drop_bytes
        for client in list(room.clients):
            client.write(blob, drop)
