"""Run the servers of ``mmdata serve`` in one event loop, sharing one hub per stream."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mmdata.serve.candles import CandleOptions, CandleServer
from mmdata.serve.hub import HubConfig, Hubs
from mmdata.serve.market import MarketConfig, Markets
from mmdata.serve.metrics import MetricsOptions, MetricsServer
from mmdata.serve.relay import RelayOptions, RelayServer, RestServer
from mmdata.serve.stream import StreamOptions, StreamServer

__all__ = ["ServeOptions", "Servers", "run_servers"]


@dataclass(slots=True)
class ServeOptions:
    """Which servers to run, where (``None`` port: that server is off)."""

    data_dir: Path
    host: str = "127.0.0.1"
    relay_port: int | None = 8765
    rest_port: int | None = 8080
    max_connections: int = 2000
    max_message_bytes: int = 4096
    reuse_port: bool = False
    hub: HubConfig = field(default_factory=HubConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    candles: CandleOptions | None = None
    metrics: MetricsOptions | None = None
    stream: StreamOptions | None = None
    #: Start reading every recorded stream's trades at start (the candle/metrics/stream servers).
    preload: bool = True


@dataclass(slots=True)
class Servers:
    """The running servers (their bound ports, for tests that ask for port 0)."""

    hubs: Hubs
    markets: Markets
    relay: RelayServer | None = None
    rest: RestServer | None = None
    candles: CandleServer | None = None
    metrics: MetricsServer | None = None
    stream: StreamServer | None = None

    def urls(self) -> dict[str, str]:
        """Where each server listens."""
        out: dict[str, str] = {}
        if self.relay is not None:
            out["relay"] = f"ws://{self.relay.options.host}:{self.relay.port}/ws"
        if self.rest is not None:
            out["rest"] = f"http://{self.rest.host}:{self.rest.port}"
        if self.candles is not None:
            out["candles"] = f"ws://{self.candles.options.host}:{self.candles.port}"
        if self.metrics is not None:
            out["metrics"] = f"ws://{self.metrics.options.host}:{self.metrics.port}/metrics"
        if self.stream is not None:
            out["stream"] = f"ws://{self.stream.options.host}:{self.stream.port}/ws"
        return out

    async def close(self) -> None:
        """Stop listening, close client connections, stop the hubs."""
        for srv in (self.relay, self.rest):
            if srv is not None and srv.server is not None:
                srv.server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.server.wait_closed(), 5)
        for other in (self.candles, self.metrics, self.stream):
            if other is not None:
                await other.close()
        await self.hubs.close()
        await self.markets.close()


async def start_servers(options: ServeOptions) -> Servers:
    """Start the enabled servers (OSError when a port is taken)."""
    hubs = Hubs(options.hub)
    servers = Servers(hubs, Markets(options.data_dir, options.market))
    try:
        if options.relay_port is not None:
            relay = RelayServer(
                RelayOptions(
                    options.data_dir,
                    host=options.host,
                    port=options.relay_port,
                    max_connections=options.max_connections,
                    max_message_bytes=options.max_message_bytes,
                    reuse_port=options.reuse_port,
                ),
                hubs,
            )
            await relay.start()
            servers.relay = relay
        if options.rest_port is not None:
            rest = RestServer(options.data_dir, hubs, host=options.host, port=options.rest_port)
            await rest.start()
            servers.rest = rest
        if options.candles is not None:
            candles = CandleServer(options.candles, servers.markets)
            await candles.start()
            servers.candles = candles
        if options.metrics is not None:
            metrics = MetricsServer(options.metrics, servers.markets)
            await metrics.start()
            servers.metrics = metrics
        if options.stream is not None:
            stream = StreamServer(options.stream, servers.markets)
            await stream.start()
            servers.stream = stream
        uses_markets = (servers.candles, servers.metrics, servers.stream)
        if options.preload and any(s is not None for s in uses_markets):
            servers.markets.preload()  # history is read in threads while the servers answer
    except BaseException:
        await servers.close()
        raise
    return servers


async def run_servers(options: ServeOptions, on_ready: Callable[[Servers], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    servers = await start_servers(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_ready is not None:
            on_ready(servers)
        await stop.wait()
    finally:
        await servers.close()
