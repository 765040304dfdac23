"""``mmdata validate``: verify a capture file offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mmdata.cli import app, err_console, fail
from mmdata.errors import MMDataError
from mmdata.validate import CaptureReport, validate_capture


@app.command(no_args_is_help=True)
def validate(
    path: Annotated[
        Path,
        typer.Argument(
            help="A capture file (.jsonl or .jsonl.gz, mmdata capture format) to verify.", show_default=False
        ),
    ],
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print exactly one JSON object instead of tables (for scripts and CI)."),
    ] = False,
) -> None:
    """Replay a capture through the venue adapter and one sync engine per symbol, offline.

    Every Binance diff is sequence-checked against the recorded REST snapshots; every Kraken
    and Bitfinex checksum is recomputed from the local book. Problems are located by line,
    receive time and ids.

    Exit status: [bold]0[/] no gap and no checksum mismatch, [bold]1[/] otherwise,
    [bold]2[/] unreadable or truncated input.

    Example: [cyan]mmdata validate ../shared/fixtures/real/kraken_btcusd_book10_2023.capture.jsonl.gz[/]
    """
    if path.is_dir():
        raise fail(f"{path} is a folder; give a capture file (.jsonl or .jsonl.gz)")
    if not path.exists():
        raise fail(f"{path} does not exist")
    try:
        quiet = json_out or not err_console.is_terminal
        report = validate_capture(path) if quiet else _with_progress(path)
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(orjson.dumps(report.as_json()).decode())
    else:
        _print_report(report)
    if report.truncated is not None:
        if json_out:
            err_console.print(f"mmdata: error: {report.truncated}")
        raise typer.Exit(2)
    raise typer.Exit(0 if report.ok else 1)


def _with_progress(path: Path) -> CaptureReport:
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"validating {path.name}", total=path.stat().st_size)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return validate_capture(path, progress=update)


def _print_report(report: CaptureReport) -> None:
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 160  # piped into a file or a pager: do not squeeze the table to 80 columns
    table = Table(title=f"{report.exchange} · {Path(report.path).name}", title_justify="left")
    for col in (
        "symbol",
        "diffs applied",
        "checksums ok",
        "mismatches",
        "gaps",
        "resyncs",
        "crossed",
        "trades",
    ):
        table.add_column(col, justify="left" if col == "symbol" else "right")
    table.add_column("final state")
    for symbol, rep in report.symbols.items():
        c = rep.counts()
        bad = c["gaps"] or c["checksum_mismatches"]
        table.add_row(
            symbol,
            f"{c['diffs_applied']:,}",
            f"{c['checksums_verified']:,}",
            f"[red]{c['checksum_mismatches']}[/]" if c["checksum_mismatches"] else "0",
            f"[red]{c['gaps']}[/]" if c["gaps"] else "0",
            str(c["resyncs"]),
            f"[yellow]{c['crossed_states']}[/]" if c["crossed_states"] else "0",
            f"{c['trades']:,}",
            f"[red]{rep.final_state}[/]" if bad else rep.final_state,
        )
    out.print(table)
    for p in report.problems[:50]:
        where = f"line {p.line}" if p.line is not None else "file"
        sym = f" {p.symbol}" if p.symbol else ""
        out.print(f"  [red]{p.kind}[/]{sym} at {where}: {p.detail}", soft_wrap=True)
    if report.problems_total > 50:
        out.print(f"  … and {report.problems_total - 50} more problems (use --json for the first 1000)")
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}  {report.records:,} records, {report.bad_messages} bad messages, "
        f"{report.ignored_frames:,} frames of unused kinds, {report.seconds:.2f} s"
    )
