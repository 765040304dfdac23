"""``mmdata sim``: run a simulated venue (or replay a capture) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.panel import Panel

from mmdata.cli import app, fail
from mmdata.errors import MMDataError
from mmdata.sim import FaultPlan, ReplayServer, SimServer
from mmdata.sim.server import BaseLoopbackServer

_FAULTS = "Faults (all off by default; seeded by --seed)"


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number or 'max'") from None
    if value <= 0:
        raise typer.BadParameter("speed must be positive")
    return value


@app.command()
def sim(
    exchange: Annotated[
        str | None, typer.Option("--exchange", "-e", help="binance, kraken or bitfinex.", show_default=False)
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            "--symbols",
            "-s",
            help="Symbols in the venue's spelling (repeatable, or a comma list). Default: six per venue.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic market and of every fault.")] = 0,
    rate: Annotated[
        float, typer.Option(help="Market speed multiplier (1 = ~20 book events/s per symbol).")
    ] = 1.0,
    duration: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds (default: until Ctrl-C).", show_default=False),
    ] = None,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print one JSON line {exchange, ws_url, rest_url, symbols} once listening."
        ),
    ] = False,
    replay: Annotated[
        Path | None,
        typer.Option(help="Serve this capture's frames and REST answers instead of a synthetic market."),
    ] = None,
    speed: Annotated[str, typer.Option(help="Replay pace: a factor of recorded time, or 'max'.")] = "1",
    drop_diffs: Annotated[
        float, typer.Option(help="Probability a book diff is dropped.", rich_help_panel=_FAULTS)
    ] = 0,
    duplicate_diffs: Annotated[
        float, typer.Option(help="Probability a book diff is sent twice.", rich_help_panel=_FAULTS)
    ] = 0,
    reorder_diffs: Annotated[
        float, typer.Option(help="Probability a diff is sent after the next one.", rich_help_panel=_FAULTS)
    ] = 0,
    corrupt_checksum_every: Annotated[
        int,
        typer.Option(
            help="Every Nth book diff has a wrong checksum (Kraken, Bitfinex).", rich_help_panel=_FAULTS
        ),
    ] = 0,
    malformed_every: Annotated[
        int, typer.Option(help="Every Nth frame is malformed.", rich_help_panel=_FAULTS)
    ] = 0,
    oversized_every: Annotated[
        int, typer.Option(help="Every Nth frame is followed by a 9 MiB frame.", rich_help_panel=_FAULTS)
    ] = 0,
    disconnect_every: Annotated[
        float,
        typer.Option(help="Drop each connection after N s (abrupt TCP close).", rich_help_panel=_FAULTS),
    ] = 0,
    stall_every: Annotated[
        float, typer.Option(help="Every N s stop sending for --stall-for s.", rich_help_panel=_FAULTS)
    ] = 0,
    stall_for: Annotated[float, typer.Option(help="Length of a stall, s.", rich_help_panel=_FAULTS)] = 0,
    rest_429_every: Annotated[
        int, typer.Option(help="Every Nth REST request → 429 with Retry-After.", rich_help_panel=_FAULTS)
    ] = 0,
    rest_418_every: Annotated[
        int, typer.Option(help="Every Nth REST request → 418 with Retry-After.", rich_help_panel=_FAULTS)
    ] = 0,
    rest_5xx_every: Annotated[
        int, typer.Option(help="Every Nth REST request → 503.", rich_help_panel=_FAULTS)
    ] = 0,
    retry_after: Annotated[int, typer.Option(help="Retry-After seconds.", rich_help_panel=_FAULTS)] = 1,
    restart_after: Annotated[
        float,
        typer.Option(
            help="After N s: Binance serverShutdown / Bitfinex info 20051, then close.",
            rich_help_panel=_FAULTS,
        ),
    ] = 0,
    maintenance_after: Annotated[
        float,
        typer.Option(
            help="After N s: Bitfinex 20060 → 20061 / Kraken status maintenance → online.",
            rich_help_panel=_FAULTS,
        ),
    ] = 0,
    maintenance_for: Annotated[
        float, typer.Option(help="Maintenance length, s.", rich_help_panel=_FAULTS)
    ] = 2,
    fault_symbol: Annotated[
        list[str] | None,
        typer.Option(help="Limit book/trade faults to these symbols (repeatable).", rich_help_panel=_FAULTS),
    ] = None,
) -> None:
    """Serve a venue's real WebSocket and REST protocol on loopback: a seeded synthetic market
    with a 30-day synthetic past for the history endpoints, or a capture replayed.

    Examples:

      [cyan]mmdata sim -e kraken -s BTC/USD -s ETH/USD --json[/]

      [cyan]mmdata sim -e binance --drop-diffs 0.01 --rest-429-every 5[/]

      [cyan]mmdata sim --replay kraken_btcusd_book10_2023.capture.jsonl.gz --speed max[/]
    """
    symbols = [s.strip() for item in symbol or [] for s in item.split(",") if s.strip()]
    plan = FaultPlan(
        seed=seed,
        symbols=tuple(fault_symbol or ()),
        drop_diffs=drop_diffs,
        duplicate_diffs=duplicate_diffs,
        reorder_diffs=reorder_diffs,
        corrupt_checksum_every=corrupt_checksum_every,
        malformed_every=malformed_every,
        oversized_every=oversized_every,
        disconnect_every_s=disconnect_every,
        stall_every_s=stall_every,
        stall_s=stall_for,
        rest_429_every=rest_429_every,
        rest_418_every=rest_418_every,
        rest_5xx_every=rest_5xx_every,
        retry_after_s=retry_after,
        venue_restart_after_s=restart_after,
        maintenance_after_s=maintenance_after,
        maintenance_s=maintenance_for,
    )
    try:
        server: BaseLoopbackServer
        if replay is not None:
            if not replay.is_file():
                raise fail(f"{replay} is not a file")
            server = ReplayServer(replay, speed=_speed(speed), host=host, port=port)
        else:
            if exchange is None:
                raise fail("give --exchange (binance, kraken, bitfinex) or --replay CAPTURE")
            server = SimServer(
                exchange, symbols or None, seed=seed, rate=rate, host=host, port=port, faults=plan
            )
    except MMDataError as exc:
        raise fail(str(exc)) from None
    try:
        asyncio.run(_serve(server, duration, json_out, plan))
    except OSError as exc:
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _serve(server: BaseLoopbackServer, duration: float | None, json_out: bool, plan: FaultPlan) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        if json_out:
            typer.echo(orjson.dumps(server.info()).decode())
        else:
            _banner(server, plan)
        waiter = asyncio.create_task(stop.wait())
        timer = asyncio.create_task(server.serve_for(duration))
        await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, timer):
            task.cancel()
    if not json_out:
        Console(stderr=True).print("simulator stopped")


def _banner(server: BaseLoopbackServer, plan: FaultPlan) -> None:
    lines = [
        f"[bold]{server.exchange}[/] simulator listening",
        f"  WebSocket  {server.ws_url}",
        f"  REST       {server.rest_url}",
        f"  symbols    {', '.join(server.symbols)}",
    ]
    if isinstance(server, ReplayServer):
        lines.append(f"  replaying  {len(server.frames):,} frames")
    else:
        lines.append(f"  faults     {plan.describe()}")
    lines.append("Ctrl-C to stop.")
    Console().print(Panel("\n".join(lines), expand=False))
