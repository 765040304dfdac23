"""``mmdata demo``: simulator → recorder → validation, in one command, no network needed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mmdata.cli import app, fail
from mmdata.cli.record import run_with_progress, summary_table
from mmdata.errors import MMDataError
from mmdata.record import RecorderConfig, SimulateOptions
from mmdata.validate.day import validate_day

_DEMO_SYMBOLS = {
    "binance": ("BTC/USDT", "ETH/USDT"),
    "kraken": ("BTC/USD", "ETH/USD"),
    "bitfinex": ("BTC/USD", "ETH/USD"),
}


@app.command("demo")
def demo_command(
    exchange: Annotated[
        str, typer.Option("--exchange", "-e", help="binance, kraken or bitfinex.")
    ] = "binance",
    duration: Annotated[float, typer.Option(help="Seconds to record.")] = 20.0,
    out: Annotated[Path, typer.Option("--out", help="Folder for data/ and logs/.")] = Path("mmdata-demo"),
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
) -> None:
    """Start the built-in simulator, record two symbols for about 20 s with live progress,
    validate every recorded day folder, and show what to try next.

      [cyan]mmdata demo[/]            [cyan]mmdata demo -e kraken --duration 60[/]
    """
    name = exchange.strip().lower()
    if name not in _DEMO_SYMBOLS:
        raise fail(f"unknown exchange {exchange!r}; the demo runs binance, kraken or bitfinex")
    if duration <= 0:
        raise fail("--duration must be positive")
    console = Console()
    data_dir = out / "data"
    config = RecorderConfig(
        exchange=name,
        symbols=_DEMO_SYMBOLS[name],
        data_dir=data_dir,
        log_dir=out / "logs",
        duration_s=duration,
        depth_levels=10,
    )
    console.print(
        f"[bold]mmdata demo[/]: simulated [bold]{name}[/] on loopback, recording "
        f"{', '.join(config.symbols)} for {duration:g} s into [bold]{data_dir}[/]"
    )
    try:
        summary = run_with_progress(
            config, SimulateOptions(seed=seed), show=sys.stderr.isatty(), title=f"demo · {name}"
        )
    except MMDataError as exc:
        raise fail(str(exc), 1) from None
    console.print(summary_table(summary))

    table = Table(title="validation of each recorded day folder (mmdata.validate.day)", title_justify="left")
    for col in ("day folder", "ok", "diffs applied", "checksums verified", "gaps", "frames checked", "files"):
        table.add_column(col, justify="left" if col in ("day folder", "ok") else "right")
    all_ok = True
    first_day = ""
    for day_dir in summary.day_dirs:
        report = validate_day(day_dir)
        files = sum(1 for p in Path(day_dir).rglob("*") if p.is_file())
        all_ok &= report.ok
        first_day = first_day or day_dir
        table.add_row(
            day_dir,
            "[green]yes[/]" if report.ok else "[red]NO[/]",
            f"{report.diffs_applied:,}",
            f"{report.checksums_verified:,}",
            str(report.gaps),
            str(report.frames_checked),
            str(files),
        )
    console.print(table)
    console.print(
        "\n[bold]Next:[/]\n"
        f"  mmdata validate {data_dir}                     [dim]# every day, replayed + integrity[/]\n"
        f"  mmdata replay {first_day} --every 1s -n 5 | head   [dim]# the book, second by second[/]\n"
        f"  python -c \"import mmdata; print(mmdata.open_day('{first_day}').trades().head())\"\n"
        f"  zcat {first_day}/events_*.csv.gz | head            [dim]# the ledger[/]\n"
        f"  mmdata record -e {name} -s {config.symbols[0]} --simulate --duration 30 "
        "--sim-fault drop_diffs=0.02   [dim]# watch a resync[/]\n"
        f"  mmdata record -e {name} -s {config.symbols[0]}      [dim]# the real venue[/]\n"
        "  mmdata sim --help  ·  mmdata record --help  ·  docs/format.md"
    )
    if not all_ok:
        raise typer.Exit(1)
