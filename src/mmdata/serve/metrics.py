"""``mmdata serve metrics``: rolling volatility and correlation over WebSocket, every second.

``ws://host:8766/metrics?exchange=binance&symbols=BTCUSDT,ETHUSDT&interval=1m&window=180d&metric=correlation``

The subscription is the URL query, checked in ``process_request`` before the upgrade (a bad
one gets an HTTP 4xx JSON ``{"error": ...}``). A client then receives a ``status subscribed``
message, the first ``metric`` message as soon as the streams' history is read, and one
``metric`` message every ``update_interval_s`` (1 s). The definitions are those of
:mod:`mmdata.candles.metrics` (docs/metrics.md has them with an example); the running
(partial) candle of the live trades counts.

Theory of operation
-------------------
* **Close series.** One :class:`~mmdata.candles.metrics.CloseSeries` per (stream, interval),
  built once, in a worker thread, from the market's 1m candles (the close of a higher candle
  is the close of its last minute with a trade) and then kept current by a listener on
  :attr:`~mmdata.serve.market.Market.listeners`: each minute that received trades updates
  the candle ``interval.floor(minute)`` with ``market.candles.bar(...)``. Nothing is rebuilt
  from all bars on a tick. Each change bumps the series' ``version``.
* **Groups.** Clients asking for the same (exchange, streams, interval, window, metric) share
  one *group*: one computation per tick, whatever the number of clients. Inside a group,
  clients are split by the symbol spelling they used (replies echo it), and each spelling's
  message is encoded and framed once, then written to every transport of that spelling
  (the relay hub's fan-out).
* **Ticks.** A ticker task wakes every ``update_interval_s``. A group whose inputs — the
  running candle's open and every series' ``version`` — are unchanged re-sends its last
  result with a new ``ts_ms``. Otherwise the window's part of each series is copied in the
  event loop (a listener may insert a late candle at any time) and the numpy work runs in a
  worker thread, so the event loop (shared with the other servers of ``mmdata serve all``)
  never waits on it. 180 days of 1m candles (259,200 grid points) take tens of milliseconds.
* **Now.** The grid ends at the running candle ``t_c = floor_I(now)`` with
  ``now = max(wall clock, newest candle of the group's streams)``: a venue clock slightly
  ahead of ours does not push the newest trades off the grid.

Clients need not send anything: ``{"type": "ping"}`` is answered with a ``pong``, anything
else with a ``status error`` message (never a close); a frame over ``max_message_bytes``
closes the connection with code 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from mmdata.candles.aggregate import Bar
from mmdata.candles.intervals import Interval, InvalidInterval, parse_interval
from mmdata.candles.metrics import (
    METRICS,
    YEAR_MS,
    CloseSeries,
    annualised_volatility,
    correlation,
    grid,
    grid_closes,
    log_returns,
    parse_window,
)
from mmdata.serve.follow import status_message
from mmdata.serve.hub import frame
from mmdata.serve.market import Market, Markets, TradeRow
from mmdata.serve.params import BadRequest, Stream, parse_query, safe_text
from mmdata.serve.relay import json_response, need_upgrade, too_many_connections

__all__ = ["MetricsOptions", "MetricsServer", "Subscription", "compute_metric"]

log = logging.getLogger("mmdata.serve")

Floats = np.ndarray[Any, np.dtype[np.float64]]
Ints = np.ndarray[Any, np.dtype[np.int64]]

_PATHS: Final = ("/metrics", "/")


@dataclass(slots=True)
class MetricsOptions:
    """Metrics server settings (CLI options / env vars; see docs/metrics.md)."""

    host: str = "127.0.0.1"
    port: int = 8766
    max_connections: int = 2000
    #: Client frames: a metrics client only sends pings.
    max_message_bytes: int = 4096
    #: Seconds between two metric messages (env ``METRICS_POLL_INTERVAL_S`` in the seed).
    update_interval_s: float = 1.0
    #: Exchange of a query without ``exchange`` (None: the only recorded one, else binance).
    default_exchange: str | None = None
    default_window: str = "180d"
    default_interval: str = "1m"
    #: Most symbols in one subscription (the query value is at most 64 characters anyway).
    max_symbols: int = 8
    #: Most grid intervals in a window (``window / interval``): bounds memory and time per tick.
    max_points: int = 600_000
    #: How long a new client waits for a stream's history to be read before ``unavailable``.
    ready_timeout_s: float = 60.0
    #: A client with this many bytes not yet sent to it is dropped (close 1008).
    drop_after_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if not self.update_interval_s > 0:
            raise ValueError("update_interval_s must be > 0")
        if self.max_symbols < 2 or self.max_points < 2:
            raise ValueError("max_symbols and max_points must be at least 2")
        parse_interval(self.default_interval)
        parse_window(self.default_window)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A validated query: what one client asked for."""

    exchange: str
    streams: tuple[Stream, ...]
    texts: tuple[str, ...]  # the symbols as the client spelled them (echoed in replies)
    interval: Interval
    window_ms: int
    metric: str

    @property
    def key(self) -> tuple[str, tuple[str, ...], str, int, str]:
        """What a computation depends on (clients with the same key share it)."""
        fs = tuple(s.symbol_fs for s in self.streams)
        return (self.exchange, fs, self.interval.name, self.window_ms, self.metric)


# -- the computation (pure) -----------------------------------------------------------------------


def _window_returns(opens: Ints, closes: Floats, points: Ints) -> Floats:
    return log_returns(grid_closes(opens, closes, points))


def _summarise(metric: str, interval: Interval, points: Ints, returns: Sequence[Floats]) -> dict[str, Any]:
    """The symbol-independent part of a metric message's ``data``."""
    n = points.size - 1
    finite = [np.isfinite(r) for r in returns]
    counts = [int(f.sum()) for f in finite]
    by_symbol: list[dict[str, Any]] = [{"points": k, "coverage": k / n} for k in counts]
    out: dict[str, Any] = {
        "as_of_ms": int(points[-1]),
        "start_ms": int(points[0]),
        "intervals": n,
    }
    if metric == "volatility":
        values = [annualised_volatility(r, interval) for r in returns]
        for entry, value in zip(by_symbol, values, strict=True):
            entry["value"] = value
        periods = YEAR_MS / interval.ms
        out.update(
            value=values[0],
            points=counts[0],
            coverage=counts[0] / n,
            annualisation=math.sqrt(periods),
            periods_per_year=periods,
        )
    else:
        size = len(returns)
        matrix: list[list[float | None]] = [[None] * size for _ in range(size)]
        for i in range(size):
            # The diagonal is 1 wherever Pearson is defined: 2 or more returns that move.
            r = returns[i][finite[i]]
            matrix[i][i] = 1.0 if r.size >= 2 and float(r.max()) != float(r.min()) else None
            for j in range(i + 1, size):
                matrix[i][j] = matrix[j][i] = correlation(returns[i], returns[j])
        pair = int((finite[0] & finite[1]).sum())
        out.update(value=matrix[0][1], points=pair, coverage=pair / n, matrix=matrix)
    out["by_symbol"] = by_symbol
    return out


def compute_metric(
    metric: str,
    interval: Interval,
    window_ms: int,
    now_ms: int,
    series: Sequence[tuple[Ints, Floats]],
) -> dict[str, Any]:
    """One metric over candle ``(opens, closes)`` arrays, one pair per symbol (pure).

    ``metric`` is ``volatility`` (one value per symbol; ``value`` is the first symbol's) or
    ``correlation`` (at least two symbols: a matrix; ``value`` is the first two symbols').
    The keys are those of a metric message's ``data`` that do not name symbols:
    ``as_of_ms``, ``start_ms``, ``intervals``, ``value``, ``points``, ``coverage``,
    ``annualisation`` and ``periods_per_year`` (volatility), ``matrix`` (correlation),
    ``by_symbol`` (``points``, ``coverage``, and ``value`` for volatility).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    if not series or (metric == "correlation" and len(series) < 2):
        raise ValueError(f"{metric} needs {'two' if metric == 'correlation' else 'one'} or more series")
    points = grid(interval, now_ms, window_ms)
    returns = [_window_returns(o, c, points) for o, c in series]
    return _summarise(metric, interval, points, returns)


# -- server-side state ----------------------------------------------------------------------------


def _history(bars: list[Bar], interval: Interval) -> CloseSeries:
    """Closes at ``interval`` from 1m bars (worker thread: reads only ``open_ms`` and ``close``)."""
    if interval.ms == 60_000:
        return CloseSeries((bar.open_ms, float(bar.close)) for bar in bars)
    # A higher candle closes with its last minute: the newest minute of each bucket wins.
    floor = interval.floor
    last: dict[int, str] = {}
    for bar in bars:
        last[floor(bar.open_ms)] = bar.close
    return CloseSeries((k, float(v)) for k, v in last.items())


class _Series:
    """One stream's closes at one interval, kept current from its market's listener.

    The history is converted in a worker thread (180 days of 1m candles take a few hundred
    ms); minutes that change meanwhile are noted by the listener and applied after it.
    """

    def __init__(self, market: Market, interval: Interval) -> None:
        self.market = market
        self.interval = interval
        self.version = 0
        self.users = 0
        self.closes = CloseSeries()
        self.built = asyncio.Event()
        self.error = ""
        self.build_ms = 0.0
        self._changed: set[int] | None = set()  # minutes changed while the history is built
        # Registered in the same event-loop step as the snapshot of the bars in build().
        market.listeners.add(self.on_trades)

    async def build(self) -> None:
        """Read the history (once); then the listener keeps the series current."""
        started = time.perf_counter()
        try:
            bars = list(self.market.candles.minutes())
            self.closes = await asyncio.to_thread(_history, bars, self.interval)
        except Exception as exc:  # a bug must not leave clients waiting
            self.error = f"cannot build the candle closes: {type(exc).__name__}: {exc}"
            log.exception("metrics: building %s %s failed", self.market.symbol, self.interval.name)
        changed, self._changed = self._changed or set(), None
        self._apply(changed)
        self.build_ms = (time.perf_counter() - started) * 1000
        self.built.set()

    def on_trades(self, market: Market, rows: list[TradeRow], changed: set[int]) -> None:
        """Market listener: refresh the candles the new trades landed in."""
        if self._changed is not None:
            self._changed.update(changed)
        else:
            self._apply(changed)

    def _apply(self, changed: set[int]) -> None:
        floor = self.interval.floor
        for open_ms in sorted({floor(m) for m in changed}):
            bar = self.market.candles.bar(self.interval, open_ms)
            if bar is not None:
                self.closes.set(open_ms, float(bar.close))
        if changed:
            self.version += 1

    def newest_open(self) -> int | None:
        n = len(self.closes)
        return int(self.closes.opens[n - 1]) if n else None

    def window_copy(self, start_ms: int) -> tuple[Ints, Floats]:
        """The candles a grid starting at ``start_ms`` reads (from the newest one at or before
        it), copied: the worker thread must not see a late candle being inserted."""
        opens, closes = self.closes.opens, self.closes.closes
        i = max(int(np.searchsorted(opens, start_ms, side="right")) - 1, 0)
        return opens[i:].copy(), closes[i:].copy()

    def close(self) -> None:
        self.market.listeners.discard(self.on_trades)


@dataclass(eq=False, slots=True)
class _Client:
    ws: ServerConnection
    transport: Any  # asyncio.Transport
    view: _View
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    started: bool = False  # its first metric is sent: the ticker's fan-out includes it
    dropped: str = ""


@dataclass(eq=False, slots=True)
class _View:
    """The clients of a group that spelled the symbols the same way."""

    texts: tuple[str, ...]
    venue_symbols: tuple[str, ...]
    clients: set[_Client] = field(default_factory=set)


@dataclass(eq=False)
class _Group:
    """Every client of one (exchange, streams, interval, window, metric)."""

    sub: Subscription
    series: list[_Series]
    views: dict[tuple[str, ...], _View] = field(default_factory=dict)
    inputs: tuple[int, tuple[int, ...]] | None = None  # (as_of, versions) of ``result``
    result: dict[str, Any] | None = None
    #: A computation under way: (its inputs, the task computing it), awaited by joining clients.
    pending: tuple[tuple[int, tuple[int, ...]], asyncio.Future[None]] | None = None
    computations: int = 0
    compute_ms: float = 0.0

    def clients(self) -> int:
        return sum(len(v.clients) for v in self.views.values())

    def as_of(self, wall_ms: int) -> int:
        newest = [o for s in self.series if (o := s.newest_open()) is not None]
        return self.sub.interval.floor(max([wall_ms, *newest]))

    def state(self, wall_ms: int) -> tuple[int, tuple[int, ...]]:
        return self.as_of(wall_ms), tuple(s.version for s in self.series)


@dataclass(slots=True)
class _Job:
    """A group's computation, with its inputs copied out of the live series."""

    group: _Group
    inputs: tuple[int, tuple[int, ...]]
    windows: list[tuple[int, Ints, Floats]]  # (series id, opens, closes)
    extra: list[dict[str, Any]]  # per symbol: first/last candle, last trade
    result: dict[str, Any] | None = None
    error: str = ""
    compute_ms: float = 0.0


def _run_jobs(jobs: list[_Job]) -> None:
    """Worker thread: compute every job; returns shared between jobs of the same tick."""
    cache: dict[tuple[int, int, int], Floats] = {}
    for job in jobs:
        started = time.perf_counter()
        sub = job.group.sub
        try:
            points = grid(sub.interval, job.inputs[0], sub.window_ms)
            returns = []
            for sid, opens, closes in job.windows:
                key = (sid, job.inputs[0], sub.window_ms)
                r = cache.get(key)
                if r is None:
                    r = cache[key] = _window_returns(opens, closes, points)
                returns.append(r)
            result = _summarise(sub.metric, sub.interval, points, returns)
            for entry, extra in zip(result["by_symbol"], job.extra, strict=True):
                entry.update(extra)
            job.result = result
        except Exception as exc:  # a bug must not stop the ticker: logged by the caller
            job.error = f"{type(exc).__name__}: {exc}"
        job.compute_ms = (time.perf_counter() - started) * 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the server -------------------------------------------------------------------------------------


class MetricsServer:
    """The metrics WebSocket server (see the module docstring)."""

    def __init__(self, options: MetricsOptions, markets: Markets) -> None:
        self.options = options
        self.markets = markets
        self.connections = 0
        self.refused = 0
        self.ticks = 0
        self.tick_ms = 0.0
        self.started = time.monotonic()
        self.server: Server | None = None
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._groups: dict[tuple[str, tuple[str, ...], str, int, str], _Group] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # series builds and computations under way

    # -- life cycle -----------------------------------------------------------------------------
    async def start(self) -> Server:
        """Listen (``port=0`` picks a free port: read it from ``self.port``) and start ticking."""
        opts = self.options
        self.server = await serve(
            self._handler,
            opts.host,
            opts.port,
            process_request=self._process_request,
            max_size=opts.max_message_bytes,
            compression=None,  # one encoding for every client: the fan-out writes shared bytes
            server_header="mmdata-metrics",
        )
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop(), name="metrics-ticker")
        return self.server

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        """Stop ticking, close every connection (1001), release the market listeners."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ticker
            self._ticker = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)
        for series in self._series.values():
            series.close()
        self._series.clear()
        self._groups.clear()

    # -- HTTP side ------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``/health``: uptime, connections, subscriptions (groups) and their compute times."""
        return {
            "ok": True,
            "server": "metrics",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": self.connections,
            "max_connections": self.options.max_connections,
            "refused": self.refused,
            "update_interval_s": self.options.update_interval_s,
            "ticks": self.ticks,
            "tick_ms": round(self.tick_ms, 3),
            "subscriptions": [
                {
                    "exchange": g.sub.exchange,
                    "symbols": [s.symbol_fs for s in g.sub.streams],
                    "interval": g.sub.interval.name,
                    "window_ms": g.sub.window_ms,
                    "metric": g.sub.metric,
                    "clients": g.clients(),
                    "computations": g.computations,
                    "compute_ms": round(g.compute_ms, 3),
                }
                for g in self._groups.values()
            ],
            "series": [
                {
                    "exchange": key[0],
                    "symbol": key[1],
                    "interval": key[2],
                    "candles": len(s.closes),
                    "build_ms": round(s.build_ms, 3),
                }
                for key, s in self._series.items()
            ],
        }

    def parse(self, target: str) -> Subscription:
        """The subscription a request target asks for (BadRequest with status and message)."""
        opts = self.options
        params = parse_query(target)
        texts = params.get("symbols")
        if not texts:
            raise BadRequest(400, "symbols is required: comma-separated symbols, e.g. BTCUSDT,ETHUSDT")
        items = tuple(t.strip() for t in texts.split(","))
        if not all(items):
            raise BadRequest(400, "symbols must be comma-separated symbols without empty items")
        metric = params.get("metric") or ("correlation" if len(items) > 1 else "volatility")
        if metric not in METRICS:
            raise BadRequest(400, f"metric must be correlation or volatility, not {safe_text(metric)!r}")
        need = 2 if metric == "correlation" else 1
        if not need <= len(items) <= opts.max_symbols:
            raise BadRequest(400, f"{metric} takes {need} to {opts.max_symbols} symbols, got {len(items)}")
        try:
            interval = parse_interval(params.get("interval") or opts.default_interval)
        except InvalidInterval as exc:
            raise BadRequest(400, str(exc)) from None
        window_text = params.get("window") or opts.default_window
        try:
            window_ms = parse_window(window_text)
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None
        n = window_ms // interval.ms
        if n < 2:
            raise BadRequest(
                400, f"window must span at least 2 intervals of {interval.name}, got {safe_text(window_text)}"
            )
        if n > opts.max_points:
            raise BadRequest(
                400,
                f"window {safe_text(window_text)} is {n} intervals of {interval.name}; "
                f"at most {opts.max_points} (use a longer interval)",
            )
        exchange = params.get("exchange") or self.markets.default_exchange(self.options.default_exchange)
        streams = tuple(self.markets.resolve(exchange, t) for t in items)
        if len({s.symbol_fs for s in streams}) < len(streams):
            raise BadRequest(400, "symbols must name different streams (BTC/USDT and BTCUSDT are the same)")
        return Subscription(streams[0].exchange, streams, items, interval, window_ms, metric)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method != "GET":
            return json_response(405, {"error": "only GET is served"}, {"Allow": "GET"})
        path = urlsplit(request.path).path
        if path == "/health":
            return json_response(200, self.health())
        if path not in _PATHS:
            return json_response(
                404,
                {"error": "unknown path: the metrics server is ws://host:port/metrics?symbols=&metric="},
            )
        if self.connections >= self.options.max_connections:
            self.refused += 1
            return too_many_connections(self.options.max_connections)
        try:
            self.parse(request.path)
        except BadRequest as exc:
            return json_response(exc.status, {"error": exc.message})
        return need_upgrade(request)

    # -- WebSocket side -------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            if self.connections > self.options.max_connections:
                # Handshakes that passed the check together: the late ones are refused here.
                self.refused += 1
                await ws.close(1013, f"too many connections (at most {self.options.max_connections})")
                return
            assert ws.request is not None
            try:
                sub = self.parse(ws.request.path)
            except BadRequest as exc:  # the data root changed since the handshake was checked
                await ws.close(1008, safe_text(exc.message, 100))
                return
            await self._serve(ws, sub)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1

    def _status(self, sub: Subscription, code: str, message: str, **extra: Any) -> bytes:
        return status_message(sub.exchange, ",".join(sub.texts), _now_ms(), code, message, **extra)

    async def _serve(self, ws: ServerConnection, sub: Subscription) -> None:
        markets = [self.markets.get(s) for s in sub.streams]
        venue = tuple(m.symbol for m in markets)
        await _send(
            ws,
            self._status(
                sub,
                "subscribed",
                f"{sub.metric} of {', '.join(sub.texts)} every {self.options.update_interval_s:g} s, "
                "from the recorded trades",
                metric=sub.metric,
                symbols=list(sub.texts),
                venue_symbols=list(venue),
                interval=sub.interval.name,
                window_ms=sub.window_ms,
                update_interval_s=self.options.update_interval_s,
            ),
        )
        try:
            await asyncio.wait_for(
                asyncio.gather(*(m.ready.wait() for m in markets)), self.options.ready_timeout_s
            )
        except TimeoutError:
            await _send(
                ws, self._status(sub, "unavailable", "the history is still being read; retry shortly")
            )
            await ws.close(1013, "stream warming up")
            return
        for text, market in zip(sub.texts, markets, strict=True):
            why = market.error or ("" if market.feed.source != "none" else "no recorded trades")
            if why:
                await _send(ws, self._status(sub, "unavailable", f"{safe_text(text)}: {why}"))
                await ws.close(1013, "stream unavailable")
                return
        group = self._join(sub, markets)
        view = group.views.get(sub.texts)
        if view is None:
            view = group.views[sub.texts] = _View(sub.texts, venue)
        client = _Client(ws, ws.transport, view)
        # A member from this step on (a leaving client cannot drop the group under it), but
        # the ticker skips it until its first metric is sent.
        view.clients.add(client)
        try:
            await asyncio.gather(*(series.built.wait() for series in group.series))
            broken = next((series.error for series in group.series if series.error), "")
            if broken:
                await _send(ws, self._status(sub, "unavailable", broken))
                await ws.close(1013, "stream unavailable")
                return
            # The first metric now, not at the next tick (shared if one is being computed).
            await self._refresh(group)
            if group.result is not None:
                await _send(ws, _encode(group, view, group.result, _now_ms()))
            client.started = True
            await self._read(ws, sub, client)
            if client.dropped and ws.protocol.state is State.OPEN:
                client.transport.write(frame(self._status(sub, "dropped", client.dropped)))
                await ws.close(1008, "client too slow")
        finally:
            view.clients.discard(client)
            self._leave(group, view)

    async def _read(self, ws: ServerConnection, sub: Subscription, client: _Client) -> None:
        """Answer pings, say ``error`` to anything else, until the client leaves or is dropped."""

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    await _send(ws, self._reply(sub, message))

        task = asyncio.create_task(reader())
        waiter = asyncio.create_task(client.wake.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, waiter):
                t.cancel()
            await asyncio.gather(task, waiter, return_exceptions=True)

    def _reply(self, sub: Subscription, message: str | bytes) -> bytes:
        try:
            doc = orjson.loads(message)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict) and doc.get("type") == "ping":
            data: dict[str, Any] = {}
            ping_id = doc.get("id")
            if isinstance(ping_id, int | str) and not isinstance(ping_id, bool) and len(str(ping_id)) <= 64:
                data["id"] = ping_id if isinstance(ping_id, int) else safe_text(ping_id, 64)
            return orjson.dumps(
                {
                    "type": "pong",
                    "exchange": sub.exchange,
                    "symbol": ",".join(sub.texts),
                    "ts_ms": _now_ms(),
                    "data": data,
                }
            )
        if doc is None:
            what = "not JSON"
        elif not isinstance(doc, dict):
            what = "not a JSON object"
        else:
            what = f"unknown type {safe_text(str(doc.get('type')))!r}"
        return self._status(
            sub,
            "error",
            f"message ignored ({what}): the subscription is the URL query; "
            'the only message understood is {"type": "ping"}',
        )

    # -- groups and series ----------------------------------------------------------------------
    def _join(self, sub: Subscription, markets: list[Market]) -> _Group:
        group = self._groups.get(sub.key)
        if group is None:
            series = []
            for stream, market in zip(sub.streams, markets, strict=True):
                key = (stream.exchange, stream.symbol_fs, sub.interval.name)
                found = self._series.get(key)
                if found is None:
                    found = self._series[key] = _Series(market, sub.interval)
                    self._track(asyncio.ensure_future(found.build()))
                found.users += 1
                series.append(found)
            group = self._groups[sub.key] = _Group(sub, series)
        return group

    def _leave(self, group: _Group, view: _View) -> None:
        if view.clients or group.views.get(view.texts) is not view:
            return
        del group.views[view.texts]
        if group.views or self._groups.get(group.sub.key) is not group:
            return
        del self._groups[group.sub.key]
        for stream, series in zip(group.sub.streams, group.series, strict=True):
            series.users -= 1
            if series.users == 0:
                series.close()
                self._series.pop((stream.exchange, stream.symbol_fs, group.sub.interval.name), None)

    def _prepare(self, group: _Group, wall_ms: int) -> _Job:
        """Copy a group's inputs out of the live series (in the event loop)."""
        inputs = group.state(wall_ms)
        sub = group.sub
        start = inputs[0] - (sub.window_ms // sub.interval.ms) * sub.interval.ms
        windows: list[tuple[int, Ints, Floats]] = []
        extra: list[dict[str, Any]] = []
        for series in group.series:
            opens, closes = series.window_copy(start)
            windows.append((id(series), opens, closes))
            n = len(series.closes)
            last = series.market.last_trade
            extra.append(
                {
                    "first_candle_ms": int(series.closes.opens[0]) if n else None,
                    "last_candle_ms": int(series.closes.opens[n - 1]) if n else None,
                    "last_price": last.price if last is not None else None,
                    "last_trade_ms": last.ts_ms if last is not None else None,
                }
            )
        return _Job(group, inputs, windows, extra)

    async def _compute(self, jobs: list[_Job]) -> None:
        """Run jobs in a worker thread and keep their results (never raises but cancellation)."""
        try:
            await asyncio.to_thread(_run_jobs, jobs)
        except Exception:  # e.g. the executor shut down at exit
            log.exception("metrics computation failed")
            return
        for job in jobs:
            self._store(job)

    def _start(self, jobs: list[_Job]) -> asyncio.Future[None]:
        """Compute ``jobs``; each group remembers the task until it is done."""
        task = self._track(asyncio.ensure_future(self._compute(jobs)))
        for job in jobs:
            job.group.pending = (job.inputs, task)

        def done(_: asyncio.Future[None]) -> None:
            for job in jobs:
                if job.group.pending is not None and job.group.pending[1] is task:
                    job.group.pending = None

        task.add_done_callback(done)
        return task

    def _track(self, task: asyncio.Future[None]) -> asyncio.Future[None]:
        """Keep a task until it is done (close() cancels the ones left)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _refresh(self, group: _Group) -> None:
        """Make ``group.result`` current: reuse it, wait for the computation under way, or start one."""
        wall = _now_ms()
        state = group.state(wall)
        if group.inputs == state:
            return
        pending = group.pending
        task = pending[1] if pending is not None and pending[0] == state else None
        if task is None:
            task = self._start([self._prepare(group, wall)])
        await asyncio.shield(task)

    def _store(self, job: _Job) -> None:
        group = job.group
        if job.error:
            log.error("metrics computation failed for %s: %s", group.sub.key, job.error)
            return
        group.inputs, group.result = job.inputs, job.result
        group.computations += 1
        group.compute_ms = job.compute_ms

    # -- the ticker -----------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        step = self.options.update_interval_s
        due = loop.time() + step
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += step
            if due < loop.time():  # a late tick: keep the cadence, do not burst
                due = loop.time() + step
            try:
                await self._tick()
            except Exception:  # the ticker must outlive any single failure
                log.exception("metrics tick failed")

    async def _tick(self) -> None:
        started = time.perf_counter()
        wall = _now_ms()
        groups = [g for g in self._groups.values() if g.views and all(x.built.is_set() for x in g.series)]
        jobs: list[_Job] = []
        waits: list[asyncio.Future[None]] = []
        for group in groups:
            state = group.state(wall)
            if group.inputs == state:
                continue
            if group.pending is not None and group.pending[0] == state:
                waits.append(group.pending[1])  # a joining client started it: share it
            else:
                jobs.append(self._prepare(group, wall))
        if jobs:
            waits.append(self._start(jobs))
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))
        ts = _now_ms()
        for group in groups:
            if group.result is None:
                continue
            for view in list(group.views.values()):
                if view.clients:
                    self._fan_out(view, frame(_encode(group, view, group.result, ts)))
        self.ticks += 1
        self.tick_ms = (time.perf_counter() - started) * 1000

    def _fan_out(self, view: _View, blob: bytes) -> None:
        limit = self.options.drop_after_bytes
        for client in list(view.clients):
            if not client.started or client.ws.protocol.state is not State.OPEN:
                continue
            transport = client.transport
            try:
                waiting = transport.get_write_buffer_size()
            except (AttributeError, RuntimeError):
                waiting = 0
            if waiting > limit:
                view.clients.discard(client)
                client.dropped = f"client too slow: {waiting} bytes waiting to be sent"
                client.wake.set()
                continue
            transport.write(blob)


def _encode(group: _Group, view: _View, result: dict[str, Any], ts_ms: int) -> bytes:
    """A ``metric`` message for one spelling of the symbols."""
    sub = group.sub
    data: dict[str, Any] = {
        "metric": sub.metric,
        "symbols": list(view.texts),
        "interval": sub.interval.name,
        "window_ms": sub.window_ms,
    }
    data.update(result)
    data["by_symbol"] = [
        {"symbol": text, "venue_symbol": venue, **entry}
        for text, venue, entry in zip(view.texts, view.venue_symbols, result["by_symbol"], strict=True)
    ]
    return orjson.dumps(
        {
            "type": "metric",
            "exchange": sub.exchange,
            "symbol": ",".join(view.texts),
            "ts_ms": ts_ms,
            "data": data,
        }
    )


async def _send(ws: ServerConnection, message: bytes) -> None:
    """One message as a text frame (every message is JSON text)."""
    await ws.send(message, text=True)
