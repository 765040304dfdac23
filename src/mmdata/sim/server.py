"""The simulator's I/O: one loopback WebSocket + HTTP server per venue.

Theory of operation
-------------------
A :class:`SimServer` owns a :class:`~mmdata.sim.market.SyntheticMarket` and a venue
module (:mod:`mmdata.sim.binance`, :mod:`~mmdata.sim.kraken`, :mod:`~mmdata.sim.bitfinex`),
all sans-I/O. It runs one ``websockets`` server on ``host:port``; plain HTTP requests
(no ``Upgrade: websocket``) are answered in ``process_request`` by the venue's REST
routes, so ``ws_url`` and ``rest_url`` share a port, as ``mmdata record --ws-url
--rest-url`` expects. A market task steps every symbol at its rate and fans each step
out to every connected session; a tick task calls ``on_tick`` every 100 ms (Binance
diff batching, heartbeats). Each client has an outgoing queue drained by its own
writer task, so a slow client never stalls the market or other clients; a client whose
queue passes ``queue_limit`` frames is disconnected, as real venues do.

Faults come from a :class:`~mmdata.sim.faults.FaultPlan`: per-frame faults through
:class:`~mmdata.sim.faults.FrameFaults` on each client's queue, timed faults
(disconnect, stall, restart and maintenance notices) as per-connection timers, REST
faults before the venue's REST route runs.

:class:`BaseLoopbackServer` holds the plumbing shared with the capture replayer
(:mod:`mmdata.sim.replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mmdata.errors import ConfigError
from mmdata.sim.binance import BinanceSim
from mmdata.sim.bitfinex import BitfinexSim
from mmdata.sim.faults import FaultPlan, FrameFaults, RestFaults
from mmdata.sim.kraken import KrakenSim
from mmdata.sim.market import SyntheticMarket, default_specs
from mmdata.sim.model import MarketStep, OutFrame, RestResponse, VenueSession, VenueSim

__all__ = ["VENUES", "WS_PATHS", "BaseLoopbackServer", "SimServer"]

log = logging.getLogger("mmdata.sim")

#: Socket path of each venue on the simulator (as on the real venue).
WS_PATHS = {"binance": "", "kraken": "/v2", "bitfinex": "/ws/2"}

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 418: "I'm a teapot", 429: "Too Many Requests"}
_REASONS |= {500: "Internal Server Error", 503: "Service Unavailable"}


def _venue_classes() -> Mapping[str, Callable[..., VenueSim]]:
    return {"binance": BinanceSim, "kraken": KrakenSim, "bitfinex": BitfinexSim}


VENUES = ("binance", "kraken", "bitfinex")


def http_response(resp: RestResponse) -> Response:
    """A websockets HTTP Response for a RestResponse (JSON body)."""
    body = resp.body.encode()
    headers = Headers(
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]
    )
    for key, value in resp.headers.items():
        headers[key] = value
    return Response(resp.status, _REASONS.get(resp.status, "Error"), headers, body)


class BaseLoopbackServer:
    """Plumbing: start/stop a websockets server, route HTTP vs WebSocket, expose URLs."""

    exchange: str
    symbols: list[str]

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def now_ms(self) -> int:
        """Current time in ms from the injected clock."""
        return int(self.clock() * 1000)

    @property
    def ws_url(self) -> str:
        """Base WebSocket URL (``ws://host:port``, no path)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def venue_ws_url(self) -> str:
        """What a client gives the venue adapter as ``ws_base``: the venue's socket path on this
        server (Kraken ``/v2``, Bitfinex ``/ws/2``; Binance's adapter adds ``/stream`` itself)."""
        return self.ws_url + WS_PATHS.get(self.exchange, "")

    @property
    def rest_url(self) -> str:
        """Base REST URL (the adapter adds its own path)."""
        return f"http://{self.host}:{self.port}"

    def info(self) -> dict[str, Any]:
        """The one-line JSON ``mmdata sim --json`` prints once listening."""
        return {
            "exchange": self.exchange,
            "ws_url": self.ws_url,
            "rest_url": self.rest_url,
            "symbols": self.symbols,
        }

    async def start(self) -> None:
        """Listen (``port`` 0 picks a free one) and start background tasks."""
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            compression=None,
            max_size=1 << 20,
            ping_interval=20,
            ping_timeout=60,
            logger=log,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._tasks = [asyncio.create_task(coro) for coro in self._background()]

    async def stop(self) -> None:
        """Stop background tasks, close every connection and the listener."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> BaseLoopbackServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def serve_for(self, duration: float | None) -> None:
        """Serve until ``duration`` seconds passed (forever when None)."""
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)

    # -- to implement ------------------------------------------------------------------
    def _background(self) -> list[Any]:
        return []

    def _rest(self, path: str, query: dict[str, str]) -> RestResponse:
        raise NotImplementedError

    def _accept(self, connection: ServerConnection, path: str) -> RestResponse | None:
        raise NotImplementedError

    async def _handle(self, connection: ServerConnection) -> None:
        raise NotImplementedError

    # -- HTTP routing ----------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            parts = urlsplit(request.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            try:
                return http_response(self._rest(parts.path, query))
            except Exception:  # never let a REST bug kill the server; answer like a venue would
                log.exception("REST handler failed for %s", request.path)
                return http_response(RestResponse(500, '{"error":"internal simulator error"}'))
        refused = self._accept(connection, request.path)
        return None if refused is None else http_response(refused)


class _Client:
    """One connected WebSocket client of a SimServer."""

    __slots__ = ("conn", "faults", "no", "out", "ready", "session", "stalled_until")

    def __init__(
        self, no: int, conn: ServerConnection, session: VenueSession, faults: FrameFaults | None
    ) -> None:
        self.no = no
        self.conn = conn
        self.session = session
        self.faults = faults
        self.out: deque[str] = deque()
        self.ready = asyncio.Event()
        self.stalled_until = 0.0


class SimServer(BaseLoopbackServer):
    """A simulated venue on loopback: synthetic market, real wire protocol, optional faults.

    >>> async def demo() -> None:                                   # doctest: +SKIP
    ...     async with SimServer("kraken", ["BTC/USD"]) as sim:
    ...         print(sim.ws_url, sim.rest_url)
    """

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str] | None = None,
        *,
        seed: int = 0,
        rate: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        clock: Callable[[], float] = time.time,
        queue_limit: int = 200_000,
        past_days: int = 30,
    ) -> None:
        super().__init__(host=host, port=port, clock=clock)

        name = exchange.strip().lower()
        venues = _venue_classes()
        if name not in venues:
            raise ConfigError(f"unknown exchange {exchange!r}; the simulator speaks {', '.join(VENUES)}")
        if rate <= 0:
            raise ConfigError(f"rate must be positive, got {rate}")
        self.exchange = name
        self.rate = rate
        self.plan = faults or FaultPlan()
        specs = default_specs(name, list(symbols) if symbols else None)
        self.market = SyntheticMarket(specs, seed=seed, start_ms=self.now_ms(), past_days=past_days)
        self.venue: VenueSim = venues[name](self.market)
        self.symbols = [spec.symbol for spec in specs]
        self.queue_limit = queue_limit
        self.clients: set[_Client] = set()
        self._pending: dict[int, VenueSession] = {}
        self._numbers = itertools.count(1)
        self._rest_faults = RestFaults(self.plan)
        self.steps = 0
        self.frames_sent = 0
        self._closing: set[asyncio.Future[None]] = set()

    # -- background tasks ------------------------------------------------------------------
    def _background(self) -> list[Any]:
        return [self._run_market(), self._run_ticks()]

    async def _run_market(self) -> None:
        loop = asyncio.get_running_loop()
        market = self.market
        rates = {s: spec.updates_per_s * self.rate for s, spec in market.specs.items()}
        due = dict.fromkeys(rates, 0.0)
        last = loop.time()
        while True:
            await asyncio.sleep(0.005)
            now = loop.time()
            elapsed = min(now - last, 1.0)  # after a long pause, do not burst a backlog
            last = now
            now_ms = self.now_ms()
            for symbol, per_s in rates.items():
                due[symbol] += elapsed * per_s
                n = int(due[symbol])
                due[symbol] -= n
                for _ in range(n):
                    self._fan_out(market.step(symbol, now_ms))

    def _fan_out(self, step: MarketStep) -> None:
        self.steps += 1
        for client in tuple(self.clients):
            frames = client.session.on_step(step)
            if frames:
                self._push(client, frames)

    async def _run_ticks(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now_ms = self.now_ms()
            for client in tuple(self.clients):
                frames = client.session.on_tick(now_ms)
                if frames:
                    self._push(client, frames)

    def _push(self, client: _Client, frames: list[OutFrame]) -> None:
        faults = client.faults
        if faults is None:
            client.out.extend(frame.text for frame in frames)
        else:
            for frame in frames:
                if frame.symbol is not None and faults.corrupt_due(frame):
                    hooks: Any = client.session
                    if hasattr(hooks, "corrupt_next_checksum"):
                        hooks.corrupt_next_checksum(frame.symbol)
            client.out.extend(faults.apply(frames))
        if len(client.out) > self.queue_limit:
            log.warning("client %d too slow (%d frames queued): disconnecting", client.no, len(client.out))
            client.out.clear()
            self.clients.discard(client)
            self._close(client, 1008, "client too slow")
        client.ready.set()

    # -- HTTP / WebSocket --------------------------------------------------------------
    def _rest(self, path: str, query: dict[str, str]) -> RestResponse:
        forced = self._rest_faults.next_status()
        if forced is not None:
            retry = str(self.plan.retry_after_s)
            body = orjson.dumps({"code": -1003 if forced == 429 else -1, "msg": f"simulated HTTP {forced}"})
            return RestResponse(forced, body.decode(), {"Retry-After": retry})
        return self.venue.rest(path, query, self.now_ms())

    def _accept(self, connection: ServerConnection, path: str) -> RestResponse | None:
        accepted = self.venue.accept(path, self.now_ms())
        if isinstance(accepted, RestResponse):
            return accepted
        self._pending[id(connection)] = accepted
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        session = self._pending.pop(id(connection))
        no = next(self._numbers)
        plan = self.plan
        client = _Client(no, connection, session, FrameFaults(plan, no) if plan.any_frame_faults() else None)
        loop = asyncio.get_running_loop()
        timers = self._schedule_faults(client, loop)
        opening = session.on_open(self.now_ms())
        if opening:
            self._push(client, opening)
        self.clients.add(client)
        writer = asyncio.create_task(self._write(client))
        try:
            async for message in connection:
                text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                replies = session.on_text(text, self.now_ms())
                if replies:
                    self._push(client, replies)
                if getattr(session, "must_close", False):
                    await asyncio.sleep(0)  # let the writer flush the last answers
                    await connection.close(1008, str(getattr(session, "close_reason", "policy violation")))
                    break
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            for timer in timers:
                timer.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _write(self, client: _Client) -> None:
        conn = client.conn
        out = client.out
        loop = asyncio.get_running_loop()
        try:
            while True:
                await client.ready.wait()
                client.ready.clear()
                while out:
                    pause = client.stalled_until - loop.time()
                    if pause > 0:
                        await asyncio.sleep(pause)
                        continue
                    await conn.send(out.popleft())
                    self.frames_sent += 1
        except ConnectionClosed:
            pass

    # -- timed faults ------------------------------------------------------------------------
    def _schedule_faults(self, client: _Client, loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
        plan = self.plan
        timers: list[asyncio.TimerHandle] = []
        session: Any = client.session
        if plan.disconnect_every_s > 0:
            timers.append(loop.call_later(plan.disconnect_every_s, self._abort, client))
        if plan.stall_every_s > 0 and plan.stall_s > 0:

            def stall() -> None:
                # Stall for stall_s, then send normally for stall_every_s before the next stall.
                client.stalled_until = loop.time() + plan.stall_s
                timers.append(loop.call_later(plan.stall_s + plan.stall_every_s, stall))

            timers.append(loop.call_later(plan.stall_every_s, stall))
        if plan.venue_restart_after_s > 0:

            def restart() -> None:
                frame = None
                if hasattr(session, "shutdown_frame"):
                    frame = session.shutdown_frame(self.now_ms())
                elif hasattr(session, "info_frame"):
                    frame = session.info_frame(20051, self.now_ms())
                if frame is not None:
                    self._push(client, [frame])
                timers.append(loop.call_later(1.0, self._close, client, 1012, "service restart"))

            timers.append(loop.call_later(plan.venue_restart_after_s, restart))
        if plan.maintenance_after_s > 0:

            def notice(begin: bool) -> None:
                frame = None
                if hasattr(session, "info_frame"):
                    frame = session.info_frame(20060 if begin else 20061, self.now_ms())
                elif hasattr(session, "status_frame"):
                    frame = session.status_frame("maintenance" if begin else "online", self.now_ms())
                if frame is not None:
                    self._push(client, [frame])
                if begin:
                    timers.append(loop.call_later(plan.maintenance_s, notice, False))

            timers.append(loop.call_later(plan.maintenance_after_s, notice, True))
        return timers

    def _abort(self, client: _Client) -> None:
        """Drop the TCP connection without a closing handshake (what a crashed venue does)."""
        self.clients.discard(client)
        transport = getattr(client.conn, "transport", None)
        if transport is not None:
            transport.abort()

    def _close(self, client: _Client, code: int, reason: str) -> None:
        self.clients.discard(client)
        task = asyncio.ensure_future(client.conn.close(code, reason))
        self._closing.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._closing.discard)
