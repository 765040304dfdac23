"""``mmdata validate``: verify a capture file, a recorded day folder or every day under a root."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mmdata.cli import app, err_console, fail
from mmdata.errors import MMDataError
from mmdata.store.dayfolder import find_day_folders
from mmdata.validate import CaptureReport, validate_capture
from mmdata.validate.day import DayReport, validate_day


@app.command(no_args_is_help=True)
def validate(
    path: Annotated[
        Path,
        typer.Argument(
            help=(
                "A capture file (.jsonl / .jsonl.gz), a recorded day folder "
                "(data/<exchange>/<SYMBOL_FS>/<YYYYMMDD>), or a folder above day folders "
                "(a data root, an exchange or a symbol folder: every day below it)."
            ),
            show_default=False,
        ),
    ],
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print exactly one JSON object instead of tables (for scripts and CI)."),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes per day folder (default: 2 on big days when there are 2+ cores).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Verify recorded data offline: books replayed, checksums and sequences checked, files intact.

    [bold]Capture file[/]: every Binance diff is sequence-checked against the recorded REST
    snapshots; every Kraken and Bitfinex checksum is recomputed from the local book.

    [bold]Day folder[/]: the first snapshot is loaded and the diffs applied in [cyan]recv_seq[/]
    order (diffs before it ignored), Binance [cyan]U/u[/] continuity and Kraken/Bitfinex
    checksums checked after each diff, jumping to the next snapshot where the ledger says the
    recorder resynced. File integrity too: truncated gzip members, unparsable rows,
    [cyan]recv_seq[/] order, book frames equal to the replayed book at sampled points, trades
    without duplicates. [bold]Data root[/]: every day below it, with a progress bar.

    Exit status: [bold]0[/] no problem, [bold]1[/] a gap, checksum mismatch or damaged row,
    [bold]2[/] unreadable input (not a capture or day folder, truncated gzip member).

    Examples:
      [cyan]mmdata validate ../shared/fixtures/real/kraken_btcusd_book10_2023.capture.jsonl.gz[/]
      [cyan]mmdata validate data/kraken/BTCUSD/20261121[/]
      [cyan]mmdata validate data --json > report.json[/]
    """
    if not path.exists():
        raise fail(f"{path} does not exist")
    if path.is_dir():
        _validate_days(path, json_out, workers)
        return
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
            err_console.print(f"mmdata: error: {escape(report.truncated)}")
        raise typer.Exit(2)
    raise typer.Exit(0 if report.ok else 1)


def _validate_days(root: Path, json_out: bool, workers: int | None) -> None:
    try:
        days = find_day_folders(root)
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if not days:
        raise fail(
            f"{root} holds no recorded day folder (a day folder is <exchange>/<SYMBOL_FS>/<YYYYMMDD> "
            "with an events_*.csv.gz ledger)"
        )
    reports: list[DayReport] = []
    unreadable: list[dict[str, str]] = []
    show = not json_out and err_console.is_terminal
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    )
    sizes = [sum(p.stat().st_size for p in d.rglob("*.gz") if p.is_file()) for d in days]
    with Progress(*columns, console=err_console, transient=True, disable=not show) as bar:
        task = bar.add_task("validating", total=sum(sizes))
        base = 0
        for day, size in zip(days, sizes, strict=True):
            bar.update(task, description=f"validating {day.relative_to(root) if day != root else day.name}")

            def moved(done: int, total: int, base: int = base, size: int = size) -> None:
                # The diffs replay is most of a day's work: move the bar through the day with it.
                bar.update(task, completed=base + (size * done // total if total else 0))

            try:
                reports.append(validate_day(day, workers=workers, progress=moved if show else None))
            except MMDataError as exc:
                unreadable.append({"path": str(day), "error": str(exc)})
            base += size
            bar.update(task, completed=base)
    single = len(days) == 1 and not unreadable
    if json_out:
        if single:
            typer.echo(orjson.dumps(reports[0].as_json()).decode())
        else:
            doc = {
                "ok": not unreadable and all(r.ok for r in reports),
                "path": str(root),
                "days": [r.as_json() for r in reports],
                "unreadable": unreadable,
            }
            typer.echo(orjson.dumps(doc).decode())
    else:
        _print_days(reports, unreadable)
    if unreadable or any(r.unreadable for r in reports):
        if single and json_out:
            err_console.print(f"mmdata: error: {escape(reports[0].path)}: part of the day could not be read")
        raise typer.Exit(2)
    raise typer.Exit(0 if all(r.ok for r in reports) else 1)


def _print_days(reports: list[DayReport], unreadable: list[dict[str, str]]) -> None:
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 160
    table = Table(title="recorded days", title_justify="left")
    for col in (
        "exchange",
        "symbol",
        "day",
        "diffs applied",
        "checksums ok",
        "mismatches",
        "gaps",
        "resyncs",
        "trades",
        "frames ok",
        "files",
        "result",
    ):
        table.add_column(col, justify="left" if col in ("exchange", "symbol", "day", "result") else "right")
    for r in reports:
        bad_files = sum(1 for f in r.files if not f.ok)
        table.add_row(
            r.exchange,
            escape(r.symbol),
            r.day,
            f"{r.diffs_applied:,}",
            f"{r.checksums_verified:,}",
            f"[red]{r.checksum_mismatches}[/]" if r.checksum_mismatches else "0",
            f"[red]{r.gaps}[/]" if r.gaps else "0",
            str(r.resyncs),
            f"{r.trades:,}",
            f"{r.frames_checked - r.frames_mismatched:,}/{r.frames_checked:,}",
            f"[red]{bad_files} bad[/]/{len(r.files)}" if bad_files else f"{len(r.files)} ok",
            "[green]OK[/]" if r.ok else "[red]FAILED[/]",
        )
    out.print(table)
    for r in reports:
        for f in r.files:
            if not f.ok:
                what = [
                    f"truncated: {f.truncated}" if f.truncated else "",
                    f"{f.unparsable_rows} unparsable rows" if f.unparsable_rows else "",
                    f"{f.seq_errors} recv_seq out of order" if f.seq_errors else "",
                    f"{f.duplicates} duplicate trade ids" if f.duplicates else "",
                ]
                out.print(
                    f"  [red]{escape(f.file)}[/]: " + escape("; ".join(w for w in what if w)), soft_wrap=True
                )
        for p in r.problems[:20]:
            where = f"recv_seq {p.recv_seq}" if p.recv_seq is not None else (p.file or "day")
            ids = f" (expected {p.expected}, got {p.got})" if p.expected is not None else ""
            out.print(
                f"  [red]{p.kind}[/] {escape(r.symbol)} {r.day} at {escape(where)}: {escape(p.detail)}{ids}",
                soft_wrap=True,
            )
        if r.problems_total > 20:
            out.print(f"  … and {r.problems_total - 20} more problems in {escape(r.path)} (use --json)")
        if r.sidecars:
            out.print(
                f"  [yellow]note[/] {escape(r.path)}: damaged tails set aside by a restart: "
                + escape(", ".join(r.sidecars))
            )
    for u in unreadable:
        out.print(f"  [red]unreadable[/] {escape(u['path'])}: {escape(u['error'])}", soft_wrap=True)
    ok = sum(1 for r in reports if r.ok)
    verdict = "[bold green]OK[/]" if ok == len(reports) and not unreadable else "[bold red]FAILED[/]"
    diffs = sum(r.diff_rows for r in reports)
    out.print(f"{verdict}  {ok}/{len(reports) + len(unreadable)} days ok, {diffs:,} diff rows")


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
    table = Table(title=escape(f"{report.exchange} · {Path(report.path).name}"), title_justify="left")
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
        out.print(f"  [red]{p.kind}[/]{escape(sym)} at {where}: {escape(p.detail)}", soft_wrap=True)
    if report.problems_total > 50:
        out.print(f"  … and {report.problems_total - 50} more problems (use --json for the first 1000)")
    verdict = "[bold green]OK[/]" if report.ok else "[bold red]FAILED[/]"
    out.print(
        f"{verdict}  {report.records:,} records, {report.bad_messages} bad messages, "
        f"{report.ignored_frames:,} frames of unused kinds, {report.seconds:.2f} s"
    )
