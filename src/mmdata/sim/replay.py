"""Capture replay: serve a recorded session's frames and REST answers on loopback.

A :class:`ReplayServer` loads a capture (ARCHITECTURE.md §5) and, to every client that
connects on any WebSocket path, sends the capture's ``ws_recv`` frames exactly as
recorded — same text, same order — paced by their recorded receive times divided by
``speed`` (``None`` = as fast as the client reads), then closes with code 1000 ("end
of capture"). What clients send is read and ignored (the recording already holds the
venue's answers to the original subscriptions).

REST requests are answered from the capture's ``rest`` records with the same path and
query: the latest one recorded at or before the playback position (the capture time
of the newest frame sent), else the first matching one; unknown requests get 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from mmdata.sim.model import RestResponse
from mmdata.sim.server import BaseLoopbackServer
from mmdata.store.capture import open_capture

__all__ = ["ReplayServer"]


class ReplayServer(BaseLoopbackServer):
    """Replays one capture file to every client (see the module docstring)."""

    def __init__(
        self,
        capture: str | Path,
        *,
        speed: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host=host, port=port, clock=clock)
        if speed is not None and speed <= 0:
            raise ValueError(f"speed must be positive (or None for max), got {speed}")
        self.speed = speed
        self.frames: list[tuple[int, str]] = []
        self.rest_records: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, int, str]]] = {}
        with open_capture(capture) as reader:
            self.exchange = reader.header.exchange
            self.symbols = list(reader.header.symbols)
            for rec in reader:
                if rec.kind == "ws_recv":
                    self.frames.append((rec.t, rec.data))
                elif rec.kind == "rest":
                    key = _rest_key(rec.url)
                    self.rest_records.setdefault(key, []).append((rec.t, rec.status or 200, rec.data))
        self.position_t = self.frames[0][0] if self.frames else 0
        self.clients_served = 0

    def _accept(self, connection: ServerConnection, path: str) -> RestResponse | None:
        return None

    def _rest(self, path: str, query: dict[str, str]) -> RestResponse:
        records = self.rest_records.get((path, tuple(sorted(query.items()))))
        if not records:
            return RestResponse(404, '{"error":"no recorded answer for this request in the capture"}')
        chosen = records[0]
        for rec in records:
            if rec[0] <= self.position_t:
                chosen = rec
            else:
                break
        return RestResponse(chosen[1], chosen[2])

    async def _handle(self, connection: ServerConnection) -> None:
        self.clients_served += 1
        drain = asyncio.create_task(_ignore_incoming(connection))
        speed = self.speed
        try:
            prev_t: int | None = None
            for t, data in self.frames:
                if speed is not None and prev_t is not None and t > prev_t:
                    await asyncio.sleep((t - prev_t) / 1e9 / speed)
                prev_t = t
                await connection.send(data)
                self.position_t = max(self.position_t, t)
            await connection.close(1000, "end of capture")
        except ConnectionClosed:
            pass
        finally:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain


def _rest_key(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    return parts.path, tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))


async def _ignore_incoming(connection: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for _ in connection:
            pass
