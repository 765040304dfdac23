"""``mmdata record``: record order books and trades into day folders (ARCHITECTURE.md §4)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from mmdata.cli import app, err_console, fail
from mmdata.errors import ConfigError, MMDataError
from mmdata.net.ws import WsConfig
from mmdata.record import (
    RecorderConfig,
    RecorderStatus,
    RecordSummary,
    SimulateOptions,
    TradingWindow,
    record,
)

__all__ = ["fault_plan", "progress_view", "summary_table"]

_WS = "WebSocket (WS_*)"
_WIN = "Trading window (WINDOW_*)"
_OUT = "Output, buffers and live files"
_SIM = "Simulator (--simulate)"


def fault_plan(seed: int, items: list[str] | None, symbols: list[str] | None = None) -> Any:
    """A FaultPlan from ``NAME=VALUE`` texts (``drop_diffs=0.01``); ConfigError when unknown."""
    from mmdata.sim.faults import FaultPlan  # noqa: PLC0415 - the simulator only when asked

    kinds = {f.name: f.type for f in dataclasses.fields(FaultPlan) if f.name not in ("seed", "symbols")}
    values: dict[str, Any] = {"seed": seed, "symbols": tuple(symbols or ())}
    for item in items or []:
        name, eq, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in kinds:
            raise ConfigError(
                f"--sim-fault {item!r}: use NAME=VALUE with NAME one of {', '.join(sorted(kinds))}"
            )
        try:
            values[name] = float(text) if "float" in str(kinds[name]) else int(text)
        except ValueError:
            raise ConfigError(f"--sim-fault {item!r}: {text!r} is not a number") from None
    return FaultPlan(**values)


def progress_view(status: RecorderStatus, title: str = "recording") -> Table:
    """A rich table of the recorder's state per symbol."""
    table = Table(
        title=f"{title} · {status.elapsed_s:5.1f} s · {status.frames:,} frames · "
        f"{status.frames / max(status.elapsed_s, 1e-9):,.0f} msg/s · reconnects {status.reconnects}",
        title_justify="left",
    )
    for col in (
        "symbol",
        "state",
        "diffs",
        "trades",
        "book frames",
        "snapshots",
        "gaps",
        "mismatches",
        "bad",
    ):
        table.add_column(col, justify="left" if col in ("symbol", "state") else "right")
    colours = {"SYNCED": "green", "RESYNCING": "red", "STOPPED": "dim"}
    for s in status.symbols:
        c = s.counters
        colour = colours.get(s.state, "yellow")
        table.add_row(
            s.symbol,
            f"[{colour}]{s.state}[/]",
            f"{c['diffs']:,}",
            f"{c['trades']:,}",
            f"{c['book_frames']:,}",
            str(c["snapshots"]),
            str(c["gaps"]),
            str(c["mismatches"]),
            str(c["bad_messages"]),
        )
    return table


def summary_table(summary: RecordSummary) -> Table:
    """Per-symbol counters of a finished run."""
    table = Table(
        title=f"{summary.exchange} · {summary.seconds:.1f} s · {summary.frames:,} frames",
        title_justify="left",
    )
    for col in (
        "symbol",
        "final",
        "diffs",
        "trades",
        "book frames",
        "snapshots",
        "gaps",
        "mismatches",
        "resyncs",
        "bad",
    ):
        table.add_column(col, justify="left" if col in ("symbol", "final") else "right")
    for name, info in summary.symbols.items():
        table.add_row(
            name,
            info["final_state"],
            f"{info['diffs']:,}",
            f"{info['trades']:,}",
            f"{info['book_frames']:,}",
            str(info["snapshots"]),
            str(info["gaps"]),
            str(info["mismatches"]),
            str(info["resyncs"]),
            str(info["bad_messages"]),
        )
    return table


def run_with_progress(
    config: RecorderConfig, simulate: SimulateOptions | None, *, show: bool, title: str = "recording"
) -> RecordSummary:
    """Run :func:`mmdata.record.record` with a live rich table on stderr when ``show``."""
    if not show:
        return record(config, simulate=simulate)
    console = Console(stderr=True)
    with Live(Group(), console=console, refresh_per_second=4, transient=False) as live:

        def update(status: RecorderStatus) -> None:
            live.update(progress_view(status, title))

        return record(config, simulate=simulate, progress=update)


@app.command("record")
def record_command(
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange", "-e", envvar="EXCHANGE", help="binance, kraken or bitfinex.", show_default=False
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option(
            "--symbol",
            "-s",
            envvar="SYMBOL",
            help="Symbol to record, repeatable or comma-separated (BTC/USDT, BTC/USD, tBTCUSD ...).",
            show_default=False,
        ),
    ] = None,
    depth_levels: Annotated[
        int, typer.Option(envvar="DEPTH_LEVELS", help="Levels per side in each book frame.")
    ] = 20,
    book_depth: Annotated[
        int | None,
        typer.Option(
            envvar="BOOK_DEPTH",
            help="Book depth to subscribe to (Binance snapshot limit; Kraken 10/25/100/500/1000; "
            "Bitfinex 1/25/100/250). Default: the venue's usual depth covering --depth-levels.",
            show_default=False,
        ),
    ] = None,
    store_depth_diffs: Annotated[
        bool,
        typer.Option(
            envvar="STORE_DEPTH_DIFFS", help="Keep every raw diff (needed to validate and replay a day)."
        ),
    ] = True,
    data_dir: Annotated[Path, typer.Option(envvar="MMDATA_DATA_DIR", help="Data root.")] = Path("data"),
    log_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="MMDATA_LOG_DIR",
            help="Log root (default: logs/ beside the data root).",
            show_default=False,
        ),
    ] = None,
    ws_url: Annotated[
        str | None,
        typer.Option(envvar="WS_URL", help="WebSocket base URL (default: the venue's).", show_default=False),
    ] = None,
    rest_url: Annotated[
        str | None,
        typer.Option(envvar="REST_URL", help="REST base URL (default: the venue's).", show_default=False),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            envvar="DURATION_S",
            help="Stop after this many seconds (default: until Ctrl-C).",
            show_default=False,
        ),
    ] = None,
    capture: Annotated[
        Path | None,
        typer.Option(
            help="Also write the raw traffic to this capture file (.jsonl or .jsonl.gz).", show_default=False
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the run summary as one JSON object.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress table.")] = False,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate", help="Record from the embedded simulator (no network).", rich_help_panel=_SIM
        ),
    ] = False,
    replay: Annotated[
        Path | None,
        typer.Option(
            help="Simulator replays this capture (implies --simulate).",
            rich_help_panel=_SIM,
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(
            help="Replay pace factor (default: as fast as possible).",
            rich_help_panel=_SIM,
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Synthetic market and fault seed.", rich_help_panel=_SIM)] = 0,
    rate: Annotated[
        float, typer.Option(help="Synthetic market speed multiplier.", rich_help_panel=_SIM)
    ] = 1.0,
    sim_fault: Annotated[
        list[str] | None,
        typer.Option(
            help="Simulator fault NAME=VALUE, repeatable: drop_diffs=0.01, duplicate_diffs, reorder_diffs, "
            "corrupt_checksum_every=50, malformed_every, oversized_every, disconnect_every_s, stall_every_s, "
            "stall_s, rest_429_every, rest_418_every, rest_5xx_every, retry_after_s, venue_restart_after_s, "
            "maintenance_after_s, maintenance_s.",
            rich_help_panel=_SIM,
            show_default=False,
        ),
    ] = None,
    sim_fault_symbol: Annotated[
        list[str] | None,
        typer.Option(
            help="Limit book/trade faults to these symbols (venue spelling, repeatable).",
            rich_help_panel=_SIM,
            show_default=False,
        ),
    ] = None,
    window_tz: Annotated[
        str, typer.Option(envvar="WINDOW_TZ", rich_help_panel=_WIN, help="Time zone of the window.")
    ] = "Europe/Berlin",
    window_start: Annotated[
        str,
        typer.Option(envvar="WINDOW_START_HHMM", rich_help_panel=_WIN, help="Day D's window opens at HH:MM."),
    ] = "00:00",
    window_end: Annotated[
        str, typer.Option(envvar="WINDOW_END_HHMM", rich_help_panel=_WIN, help="... and closes at HH:MM ...")
    ] = "00:15",
    window_end_day_offset: Annotated[
        int,
        typer.Option(
            envvar="WINDOW_END_DAY_OFFSET", rich_help_panel=_WIN, help="... on day D + this offset."
        ),
    ] = 1,
    ws_open_timeout: Annotated[
        float, typer.Option(envvar="WS_OPEN_TIMEOUT_S", rich_help_panel=_WS, help="Seconds.")
    ] = 10.0,
    ws_ping_interval: Annotated[
        float, typer.Option(envvar="WS_PING_INTERVAL_S", rich_help_panel=_WS, help="Seconds.")
    ] = 20.0,
    ws_ping_timeout: Annotated[
        float, typer.Option(envvar="WS_PING_TIMEOUT_S", rich_help_panel=_WS, help="Seconds.")
    ] = 20.0,
    ws_backoff_base: Annotated[
        float, typer.Option(envvar="WS_BACKOFF_BASE_S", rich_help_panel=_WS, help="First reconnect delay, s.")
    ] = 0.5,
    ws_backoff_cap: Annotated[
        float,
        typer.Option(envvar="WS_BACKOFF_CAP_S", rich_help_panel=_WS, help="Longest reconnect delay, s."),
    ] = 30.0,
    ws_max_session: Annotated[
        float,
        typer.Option(
            envvar="WS_MAX_SESSION_S", rich_help_panel=_WS, help="Reconnect before the venue drops us, s."
        ),
    ] = 23.5 * 3600,
    ws_no_data_warn: Annotated[
        float,
        typer.Option(envvar="WS_NO_DATA_WARN_S", rich_help_panel=_WS, help="Warn after this silence, s."),
    ] = 15.0,
    ws_no_data_reconnect: Annotated[
        float,
        typer.Option(
            envvar="WS_NO_DATA_RECONNECT_S",
            rich_help_panel=_WS,
            help="Reconnect after this silence, s (0: never).",
        ),
    ] = 60.0,
    live: Annotated[
        bool,
        typer.Option(
            envvar="LIVE_STREAM_ENABLED", rich_help_panel=_OUT, help="Write live/ files for the relay."
        ),
    ] = True,
    live_rotate: Annotated[
        float, typer.Option(envvar="LIVE_STREAM_ROTATE_S", rich_help_panel=_OUT, help="Rotate live files, s.")
    ] = 600.0,
    live_retention: Annotated[
        float,
        typer.Option(
            envvar="LIVE_STREAM_RETENTION_S", rich_help_panel=_OUT, help="Delete rotated live files after, s."
        ),
    ] = 7200.0,
    orderbook_buffer_rows: Annotated[
        int,
        typer.Option(
            envvar="ORDERBOOK_BUFFER_ROWS", rich_help_panel=_OUT, help="Flush book files after N rows."
        ),
    ] = 2000,
    trades_buffer_rows: Annotated[
        int,
        typer.Option(
            envvar="TRADES_BUFFER_ROWS", rich_help_panel=_OUT, help="Flush trade files after N rows."
        ),
    ] = 2000,
    flush_interval: Annotated[
        float,
        typer.Option(
            envvar="BUFFER_FLUSH_INTERVAL_SEC", rich_help_panel=_OUT, help="... or after this many seconds."
        ),
    ] = 1.0,
    book_frame_interval_ms: Annotated[
        int,
        typer.Option(
            "--book-frame-interval-ms",
            envvar="BOOK_FRAME_INTERVAL_MS",
            min=0,
            rich_help_panel=_OUT,
            help="At most one top-N book frame per this many ms (0: a frame after every update). "
            "Diffs are kept in full either way: every book stays rebuildable.",
        ),
    ] = 0,
    heartbeat: Annotated[
        float, typer.Option(envvar="HEARTBEAT_SEC", rich_help_panel=_OUT, help="Ledger telemetry every N s.")
    ] = 60.0,
    sync_warn_after: Annotated[
        float,
        typer.Option(
            envvar="SYNC_WARN_AFTER_SEC", rich_help_panel=_OUT, help="Warn when a book is not SYNCED for N s."
        ),
    ] = 30.0,
    max_buffer_warn: Annotated[
        int,
        typer.Option(
            envvar="MAX_BUFFER_WARN", rich_help_panel=_OUT, help="Warn when N rows wait for a flush."
        ),
    ] = 100_000,
) -> None:
    """Record Level-2 books and trades into day folders: ledger, gaps, book frames, trades,
    raw diffs, snapshots and live files, per symbol, with crash-safe gzip.

    Every knob also reads its environment variable (shown in each option's help).
    Ctrl-C (or SIGTERM) stops cleanly: files flushed, ledger [bold]run_stop[/].

    Examples:

      [cyan]mmdata record -e kraken -s BTC/USD -s ETH/USD[/]

      [cyan]mmdata record -e binance -s BTC/USDT --simulate --duration 30[/]

      [cyan]mmdata record --replay ../shared/fixtures/real/kraken_btcusd_book10_2023.capture.jsonl.gz[/]
    """
    try:
        symbols = [s.strip() for item in symbol or [] for s in item.replace(" ", ",").split(",") if s.strip()]
        sim: SimulateOptions | None = None
        if replay is not None or simulate:
            plan = fault_plan(seed, sim_fault, sim_fault_symbol)
            if replay is not None:
                if not replay.is_file():
                    raise fail(f"{replay} is not a file")
                from mmdata.store.capture import open_capture  # noqa: PLC0415

                with open_capture(replay) as reader:
                    exchange = exchange or reader.header.exchange
                    symbols = symbols or list(reader.header.symbols)
                    recorded_depth = reader.header.extra.get("depth")
                if book_depth is None and isinstance(recorded_depth, int):
                    book_depth = recorded_depth  # the depth the capture was subscribed with
                    depth_levels = min(depth_levels, recorded_depth)
            sim = SimulateOptions(seed=seed, rate=rate, faults=plan, replay=replay, speed=speed)
        elif sim_fault or sim_fault_symbol:
            raise fail("--sim-fault needs --simulate")
        if exchange is None:
            raise fail("give --exchange (binance, kraken, bitfinex)")
        config = RecorderConfig(
            exchange=exchange,
            symbols=tuple(symbols),
            data_dir=data_dir,
            log_dir=log_dir,
            depth_levels=depth_levels,
            book_depth=book_depth,
            store_depth_diffs=store_depth_diffs,
            ws_url=ws_url,
            rest_url=rest_url,
            capture=capture,
            duration_s=duration,
            window=TradingWindow(window_tz, window_start, window_end, window_end_day_offset),
            ws=WsConfig(
                open_timeout_s=ws_open_timeout,
                ping_interval_s=ws_ping_interval or None,
                ping_timeout_s=ws_ping_timeout or None,
                backoff_base_s=ws_backoff_base,
                backoff_cap_s=ws_backoff_cap,
                max_session_s=ws_max_session or None,
                no_data_warn_s=ws_no_data_warn,
                no_data_reconnect_s=ws_no_data_reconnect or None,
            ),
            live=live,
            live_rotate_s=live_rotate,
            live_retention_s=live_retention,
            heartbeat_s=heartbeat,
            sync_warn_after_s=sync_warn_after,
            max_buffer_warn=max_buffer_warn,
            orderbook_buffer_rows=orderbook_buffer_rows,
            trades_buffer_rows=trades_buffer_rows,
            flush_interval_s=flush_interval,
            book_frame_interval_ms=book_frame_interval_ms,
        )
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        summary = run_with_progress(config, sim, show=not (quiet or json_out) and sys.stderr.isatty())
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except MMDataError as exc:
        raise fail(str(exc), 1) from None
    if json_out:
        typer.echo(orjson.dumps(summary.as_json()).decode())
        return
    console = Console()
    console.print(summary_table(summary))
    for line in summary.log_problems:
        err_console.print(f"[yellow]warning:[/] {line}")
    for path in summary.repaired:
        err_console.print(f"[yellow]repaired:[/] damaged gzip tail kept in {path}")
    console.print(f"data in [bold]{config.data_dir}[/] · logs in [bold]{config.logs}[/]")
