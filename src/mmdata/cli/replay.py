"""``mmdata replay``: the book of a recorded day at a moment, or at a fixed interval."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mmdata.cli import app, err_console, fail
from mmdata.errors import MMDataError
from mmdata.replay.day import BookView, Day, open_day
from mmdata.replay.output import format_for, write_views
from mmdata.replay.timeparse import parse_duration_ns, parse_time_ns


@app.command(no_args_is_help=True)
def replay(
    day_dir: Annotated[
        Path,
        typer.Argument(
            help="A recorded day folder: data/<exchange>/<SYMBOL_FS>/<YYYYMMDD>.", show_default=False
        ),
    ],
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="The book at this moment: ISO-8601 (2026-11-21T10:15:00Z), a clock time on the day "
            "(10:15:00, UTC) or epoch s/ms/ns.",
            show_default=False,
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="Top-N books at this interval (1s, 250ms, 1min).", show_default=False),
    ] = None,
    levels: Annotated[int, typer.Option("--levels", "-n", min=1, max=5000, help="Levels per side.")] = 10,
    start: Annotated[
        str | None, typer.Option("--start", help="With --every: first moment (default: first event).")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--end", help="With --every: last moment (default: last event).")
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="csv | jsonl | parquet (default: from --out's suffix, else csv).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write here instead of standard output.", show_default=False),
    ] = None,
    synced_only: Annotated[
        bool,
        typer.Option(
            "--synced-only", help="Leave out moments when the book was not proven (state != SYNCED)."
        ),
    ] = False,
) -> None:
    """Rebuild the order book of a recorded day from its snapshots and diffs.

    [bold]--at TIME[/]: the full book (or top [cyan]--levels[/]) as of TIME, every event received
    at or before it applied; shown as a table, or written with [cyan]--out[/]/[cyan]--format[/].

    [bold]--every INTERVAL[/]: one row per interval (multiples of it since the epoch) with the top
    N levels as exact text: [cyan]time, time_ns, recv_seq, state, bid_px_1, bid_qty_1, …[/].
    Rows where the book was not proven have [cyan]state[/] != SYNCED and no levels.
    Streams: a whole day never sits in memory.

    Examples:
      [cyan]mmdata replay data/kraken/BTCUSD/20261121 --at 10:15:00 -n 5[/]
      [cyan]mmdata replay data/kraken/BTCUSD/20261121 --every 1s -n 10 -o book_1s.parquet[/]
    """
    if (at is None) == (every is None):
        raise fail("give exactly one of --at TIME or --every INTERVAL")
    try:
        day = open_day(day_dir)
        fmt_name = format_for(out, fmt) if (every is not None or out is not None or fmt is not None) else ""
    except (MMDataError, ValueError) as exc:
        raise fail(str(exc)) from None
    if out is not None and out.resolve().is_relative_to(day.path.resolve()):
        # Opening the output for writing would clobber the recording being read.
        raise fail(f"--out {out} is inside the day folder: write the replay somewhere else")
    try:
        if at is not None:
            view = day.book_at(at, levels=levels)
            if not fmt_name:
                _print_view(day, view, levels)
            else:
                _write(day, [view], levels, fmt_name, out, synced_only)
            return
        assert every is not None
        parse_duration_ns(every)  # a bad interval fails here, before any output
        t0 = parse_time_ns(start, day.date) if start is not None else None
        t1 = parse_time_ns(end, day.date) if end is not None else None
        views = day.iter_books(every, levels=levels, start=t0, end=t1)
        rows = _write(day, views, levels, fmt_name, out, synced_only)
    except ValueError as exc:
        raise fail(str(exc)) from None
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if out is not None:
        err_console.print(f"wrote {rows:,} rows to {out}")


def _write(
    day: Day, views: Iterable[BookView], levels: int, fmt: str, out: Path | None, synced_only: bool
) -> int:
    show = out is not None and err_console.is_terminal
    first = day.folder.ledger[0].get("recv_time_ns") if day.folder.ledger else None
    lo = int(first) if first and first.isdigit() else 0
    last_row = day.folder.ledger[-1].get("recv_time_ns") if day.folder.ledger else None
    hi = int(last_row) if last_row and last_row.isdigit() else lo
    columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not show) as bar:
        task = bar.add_task(f"replaying {day.symbol} {day.date}", total=max(1, hi - lo))

        def on_row(view: BookView) -> None:
            bar.update(task, completed=max(0, min(hi, view.time_ns) - lo))

        sink = out if out is not None else sys.stdout
        return write_views(views, levels, fmt, sink, synced_only=synced_only, on_row=on_row)


def _print_view(day: Day, view: BookView, levels: int) -> None:
    out = Console(highlight=False)
    table = Table(
        title=f"{day.exchange} {day.symbol} at {view.time} · recv_seq {view.recv_seq} · {view.state}",
        title_justify="left",
    )
    for col in ("bid qty", "bid", "ask", "ask qty"):
        table.add_column(col, justify="right")
    for i in range(max(len(view.bids), len(view.asks))):
        bid = view.bids[i] if i < len(view.bids) else ("", "")
        ask = view.asks[i] if i < len(view.asks) else ("", "")
        table.add_row(bid[1], f"[green]{bid[0]}[/]", f"[red]{ask[0]}[/]", ask[1])
    out.print(table)
    if not view.synced:
        why = "the recorder had stopped by then" if view.state == "STOPPED" else f"state {view.state}"
        out.print(f"[yellow]the book was not proven at this moment ({why}): no levels[/]")
    elif view.bids and view.asks:
        best_bid, best_ask = Decimal(view.bids[0][0]), Decimal(view.asks[0][0])  # exact, no float noise
        mid, spread = (best_bid + best_ask) / 2, best_ask - best_bid
        out.print(f"mid {mid}  spread {spread}  levels {len(view.bids)}/{len(view.asks)}")
