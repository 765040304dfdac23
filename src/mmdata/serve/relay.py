"""``mmdata serve relay``: recorded and live streams over WebSocket, and ``mmdata serve rest``.

Relay: ``ws://host:8765/ws?exchange=binance&symbol=BTCUSDT&from=tail|start[&snapshot=0]``.
Every message is ``{"type", "exchange", "symbol", "ts_ms", "data"}`` (docs/serving.md):

- ``status`` first (``subscribed``: which source, which day), then for ``from=tail`` a
  ``snapshot`` of the followed book (or ``status no_book`` while it is not proven), then
  ``diff``, ``trade``, ``event`` and ``snapshot`` messages as the recorder writes them;
- ``from=start`` sends the newest day from its beginning (its own snapshots in place),
  then continues live without a gap or a repeat (``status replay_done`` in between);
- ``status`` messages tell of server-side conditions: ``diffs_missing``, ``file_rotated``,
  ``day_rollover``, ``falling_behind``, ``dropped``, ``file_damaged``, ``no_book``.

REST: ``GET /snapshot?exchange=&symbol=[&levels=N]`` (the followed book; 503 with its state
while it is not proven) and ``GET /health``; errors are JSON ``{"error": ...}`` with a
proper status. Both run on ``websockets`` with plain HTTP answered from its
``process_request`` hook. Query values are checked by :mod:`mmdata.serve.params` before
anything touches the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from mmdata.errors import StoreError
from mmdata.serve.follow import Item, item_message, status_message
from mmdata.serve.hub import LANE, Hub, Hubs, Subscriber, frame
from mmdata.serve.params import BadRequest, Stream, parse_int, parse_query, resolve_stream
from mmdata.serve.sources import day_items, newest_day

__all__ = [
    "RelayOptions",
    "RelayServer",
    "RestServer",
    "json_response",
    "need_upgrade",
    "too_many_connections",
]

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_REPLAY_CHUNK = 2_000


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """An HTTP response with a JSON body."""
    data = orjson.dumps(body)
    h = Headers()
    h["Content-Type"] = "application/json"
    h["Content-Length"] = str(len(data))
    h["Cache-Control"] = "no-store"
    for k, v in (headers or {}).items():
        h[k] = v
    reason = _REASONS.get(status, "Error")
    return Response(status, reason, h, data)


def too_many_connections(limit: int) -> Response:
    """HTTP 503 for a handshake beyond ``limit`` connections (with Retry-After)."""
    return json_response(
        503, {"error": f"too many connections (at most {limit}); retry later"}, {"Retry-After": "5"}
    )


def need_upgrade(request: Request) -> Response | None:
    """HTTP 426 for a plain HTTP request to a WebSocket path; None for a real handshake."""
    # get_all: a proxy may send two Connection headers (get() raises on that).
    if "upgrade" not in ",".join(request.headers.get_all("Connection")).lower():
        return json_response(426, {"error": "this is a WebSocket endpoint: connect with a WebSocket client"})
    return None


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    426: "Upgrade Required",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class RelayOptions:
    """Relay settings (CLI options / env vars)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8765
    max_connections: int = 2000
    max_message_bytes: int = 4096  # client frames: a relay client only sends small control frames
    ready_timeout_s: float = 30.0
    reuse_port: bool = False  # several relay processes on one port (``--workers``)


class RelayServer:
    """The relay (see the module docstring)."""

    def __init__(self, options: RelayOptions, hubs: Hubs) -> None:
        self.options = options
        self.hubs = hubs
        self.connections = 0
        self.refused = 0
        self.started = time.monotonic()
        self.server: Server | None = None

    async def start(self) -> Server:
        """Listen (``port=0`` picks a free port: read it from ``self.port``)."""
        opts = self.options
        self.server = await serve(
            self._handler,
            opts.host,
            opts.port,
            process_request=self._process_request,
            max_size=opts.max_message_bytes,
            compression=None,  # one encoding for every client: the fan-out writes shared bytes
            server_header="mmdata-relay",
            reuse_port=opts.reuse_port or None,
        )
        return self.server

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    def _parse(self, path: str) -> tuple[Stream, str, bool]:
        params = parse_query(path)
        stream = resolve_stream(self.options.data_dir, params.get("exchange"), params.get("symbol"))
        origin = params.get("from", "tail") or "tail"
        if origin not in ("tail", "start"):
            raise BadRequest(400, "from must be tail or start")
        snap_text = (params.get("snapshot") or "1").lower()
        if snap_text not in _BOOL:
            raise BadRequest(400, "snapshot must be 1 or 0")
        return stream, origin, _BOOL[snap_text]

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/health":
            return json_response(200, self.health())
        if path not in ("/ws", "/"):
            return json_response(
                404, {"error": "unknown path: the relay is ws://host:port/ws?exchange=&symbol="}
            )
        if self.connections >= self.options.max_connections:
            self.refused += 1
            return too_many_connections(self.options.max_connections)
        try:
            self._parse(request.path)
        except BadRequest as exc:
            return json_response(exc.status, {"error": exc.message})
        return need_upgrade(request)

    def health(self) -> dict[str, Any]:
        """``/health``: uptime, connections and per-stream figures."""
        return {
            "ok": True,
            "server": "relay",
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": self.connections,
            "max_connections": self.options.max_connections,
            "refused": self.refused,
            "streams": self.hubs.stats(),
        }

    async def _handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        try:
            if self.connections > self.options.max_connections:
                # Handshakes that passed the check together: the late ones are refused here.
                self.refused += 1
                await ws.close(1013, f"too many connections (at most {self.options.max_connections})")
                return
            assert ws.request is not None
            stream, origin, with_snapshot = self._parse(ws.request.path)
            hub = self.hubs.get(stream)
            await self._serve_client(ws, hub, origin, with_snapshot)
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1

    async def _serve_client(self, ws: ServerConnection, hub: Hub, origin: str, with_snapshot: bool) -> None:
        def status(code: str, message: str, **extra: Any) -> bytes:
            return status_message(
                hub.exchange, hub.symbol, time.time_ns() // 1_000_000, code, message, **extra
            )

        try:
            await asyncio.wait_for(hub.ready.wait(), self.options.ready_timeout_s)
        except TimeoutError:
            await _send(ws, status("unavailable", "the stream is still being read; retry in a moment"))
            await ws.close(1013, "stream warming up")
            return
        if hub.source is None:
            await _send(ws, status("unavailable", hub.error or "no data for this stream"))
            await ws.close(1013, "stream unavailable")
            return
        transport = ws.transport

        def send_raw(blob: bytes) -> None:
            if ws.protocol.state is State.OPEN:
                transport.write(blob)

        sub = Subscriber(transport=transport, send_raw=send_raw)
        # from=start: per lane, the last row the day files gave (queued ones up to it are skipped).
        done: dict[int, tuple[int, int]] = {}
        day = getattr(hub.source, "day_label", "")
        try:
            if origin == "start":
                hub.join(sub, with_ring=True)
                await _send(
                    ws,
                    status("subscribed", "replaying the day from its start", source=hub.source_name, day=day),
                )
                if hub.diffs_missing:
                    await _send(ws, status("diffs_missing", _NO_DIFFS))
                done, rows = await self._replay_day(ws, hub)
                last_seq = max((k[0] for k in done.values()), default=-1)
                oldest = sub.pending[0][0][0] if sub.pending else None
                if oldest is not None and oldest > last_seq + 1 and len(hub.ring) == hub.ring.maxlen:
                    await _send(
                        ws,
                        status(
                            "gap", "the live stream moved on further than the server keeps", after=last_seq
                        ),
                    )
                await _send(ws, status("replay_done", "the day is replayed; live from here", rows=rows))
            else:
                hub.join(sub, with_ring=False)
                # Same step as join: every message after this book is queued for the client.
                snap = hub.snapshot_message() if with_snapshot else None
                await _send(
                    ws, status("subscribed", "live from the latest book", source=hub.source_name, day=day)
                )
                if hub.diffs_missing:
                    await _send(ws, status("diffs_missing", _NO_DIFFS))
                if snap is not None:
                    await _send(ws, snap)
                elif with_snapshot:
                    follower = hub.follower
                    state = follower.state.name if follower is not None else "UNKNOWN"
                    if follower is not None and follower.stopped:
                        state = "STOPPED"
                        why = "the recorder stopped (from=start replays the day); a new run brings a book"
                    else:
                        why = f"no proven book yet (state {state}); the next snapshot message brings one"
                    await _send(ws, status("no_book", why, state=state))
            # Drain what queued meanwhile, then join the fan-out in the same step.
            while True:
                while sub.pending and not sub.dropped:
                    key, msg = sub.pending.popleft()
                    last = done.get(key[2])
                    if last is None or key[:2] > last:
                        await _send(ws, msg)
                if sub.dropped:
                    break
                if hub.go_live(sub):
                    break
                sub.wake.clear()
                await sub.wake.wait()
            if not sub.dropped:
                await self._while_live(ws, sub)
            if sub.dropped:
                sub.pending.clear()
                if ws.protocol.state is State.OPEN:
                    transport.write(frame(status("dropped", sub.dropped)))
                await ws.close(1008, "client too slow")
        finally:
            hub.leave(sub)

    async def _while_live(self, ws: ServerConnection, sub: Subscriber) -> None:
        """Wait until the client leaves or is dropped; client messages are read and ignored."""

        async def reader() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in ws:
                    pass

        task = asyncio.create_task(reader())
        sub.wake.clear()
        waiter = asyncio.create_task(sub.wake.wait())
        try:
            await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (task, waiter):
                t.cancel()
            await asyncio.gather(task, waiter, return_exceptions=True)

    async def _replay_day(self, ws: ServerConnection, hub: Hub) -> tuple[dict[int, tuple[int, int]], int]:
        """Send the newest day from its beginning; per lane, the key of the last row sent."""
        day = newest_day(hub.stream.root)
        done: dict[int, tuple[int, int]] = {}
        if day is None:
            return done, 0
        try:
            items = day_items(day)
        except StoreError as exc:
            # A day just opened: its ledger's first member is not flushed yet.
            await _send(
                ws,
                status_message(
                    hub.exchange,
                    hub.symbol,
                    time.time_ns() // 1_000_000,
                    "replay_unavailable",
                    f"the day cannot be read yet ({exc}); live from here",
                ),
            )
            return done, 0
        rows = 0
        while True:
            chunk = await asyncio.to_thread(_take, items, _REPLAY_CHUNK)
            if not chunk:
                return done, rows
            for item in chunk:
                await _send(ws, item_message(item))
                done[LANE[item.kind]] = item.key[:2]
            rows += len(chunk)


_NO_DIFFS = (
    "this stream is recorded without depth diffs (STORE_DEPTH_DIFFS=0): no diff messages, "
    "and no book can be followed; /snapshot serves the latest book frame"
)


async def _send(ws: ServerConnection, message: bytes) -> None:
    """One message as a text frame (every relay message is JSON text; bytes would go as binary)."""
    await ws.send(message, text=True)


def _take(items: Iterator[Item], n: int) -> list[Item]:
    out: list[Item] = []
    for item in items:
        out.append(item)
        if len(out) >= n:
            break
    return out


class RestServer:
    """``GET /snapshot`` and ``GET /health`` (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        hubs: Hubs,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        ready_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = data_dir
        self.hubs = hubs
        self.host = host
        self.port_option = port
        self.ready_timeout_s = ready_timeout_s
        self.started = time.monotonic()
        self.requests = 0
        self.server: Server | None = None

    async def start(self) -> Server:
        """Listen."""
        self.server = await serve(
            self._never,
            self.host,
            self.port_option,
            process_request=self._process_request,
            max_size=1024,
            compression=None,
            server_header="mmdata-rest",
        )
        return self.server

    @property
    def port(self) -> int:
        """The bound port."""
        assert self.server is not None
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def _never(self, ws: ServerConnection) -> None:  # pragma: no cover - every request is answered
        await ws.close(1008, "not a WebSocket endpoint")

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response:
        self.requests += 1
        if request.method != "GET":
            return json_response(405, {"error": "only GET is served"}, {"Allow": "GET"})
        path = urlsplit(request.path).path
        try:
            if path == "/health":
                return json_response(
                    200,
                    {
                        "ok": True,
                        "server": "rest",
                        "uptime_s": round(time.monotonic() - self.started, 1),
                        "requests": self.requests,
                        "streams": self.hubs.stats(),
                    },
                )
            if path == "/snapshot":
                return await self._snapshot(request.path)
            return json_response(
                404, {"error": "unknown path: GET /snapshot?exchange=&symbol=[&levels=N] or /health"}
            )
        except BadRequest as exc:
            return json_response(exc.status, {"error": exc.message})

    async def _snapshot(self, target: str) -> Response:
        params = parse_query(target)
        stream = resolve_stream(self.data_dir, params.get("exchange"), params.get("symbol"))
        levels = parse_int(params, "levels", 0, 1, 5000)
        hub = self.hubs.get(stream)
        try:
            await asyncio.wait_for(hub.ready.wait(), self.ready_timeout_s)
        except TimeoutError:
            return json_response(
                503, {"error": "the stream is still being read; retry shortly"}, {"Retry-After": "2"}
            )
        if hub.source is None:
            return json_response(404, {"error": hub.error or "no data for this stream"})
        if hub.diffs_missing:
            frame_view = await asyncio.to_thread(hub.last_book_frame)
            if frame_view is None:
                return json_response(
                    503, {"error": "no diffs recorded and no book frame yet"}, {"Retry-After": "2"}
                )
            if levels:
                frame_view["bids"] = frame_view["bids"][:levels]
                frame_view["asks"] = frame_view["asks"][:levels]
            return json_response(200, frame_view)
        view = hub.book(levels)
        if view["state"] not in ("SYNCED", "STOPPED"):
            return json_response(
                503,
                {
                    "error": f"the book is not proven right now (state {view['state']}); retry shortly",
                    "state": view["state"],
                    "recv_seq": view.get("recv_seq"),
                },
                {"Retry-After": "1"},
            )
        return json_response(200, view)
