"""``mmdata export parquet``: recorded day folders to hive-partitioned Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from mmdata.cli import app, err_console, fail
from mmdata.errors import MMDataError
from mmdata.replay.export import TABLES, ExportSummary, export_parquet

export_app = typer.Typer(
    name="export",
    help="Export recorded day folders for analysis tools (Parquet for pyarrow, DuckDB, Spark, pandas).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(export_app, name="export")


def _table_names(text: str | None) -> list[str]:
    if text is None:
        return list(TABLES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise fail(f"--tables names no table: choose from {','.join(TABLES)}")
    for name in names:
        if name not in TABLES:
            raise fail(f"unknown table {name!r} in --tables: choose from {','.join(TABLES)}")
    return names


@export_app.command("parquet", no_args_is_help=True)
def parquet(
    source: Annotated[
        Path,
        typer.Argument(
            help="A data folder (mmdata record --data-dir), an exchange or symbol folder, or one day folder.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Argument(
            help="Export folder (created if needed; re-use it to add new days).", show_default=False
        ),
    ],
    tables: Annotated[
        str | None,
        typer.Option(
            "--tables",
            "-t",
            help=f"Comma-separated tables to export (default: all of {','.join(TABLES)}).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rewrite every partition, even those whose source is unchanged.")
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print exactly one JSON object instead of tables (for scripts and CI)."),
    ] = False,
) -> None:
    """Write every recorded day below SOURCE as Parquet, one file per table and day.

    Layout (hive partitioning: readers get exchange, symbol and date from the path):
      OUT/<table>/exchange=<ex>/symbol=<SYMBOL_FS>/date=<YYYY-MM-DD>/part-0.parquet

    Columns as in the day files: exact decimal text next to float64, diffs with
    their raw frame, plus venue_symbol (BTC/USD). Running again rewrites only the
    partitions whose source file changed (OUT/_mmdata_export.json remembers each
    source's size and mtime). A day without diffs/ is reported, not an error; a
    damaged file has its complete rows exported and is reported.
    Reading the export with pyarrow, DuckDB or Spark: docs/export.md.

    Exit status: [bold]0[/] exported, [bold]1[/] a source file was damaged or unreadable
    (everything readable was exported), [bold]2[/] bad SOURCE, OUT or option.

    Examples:
      [cyan]mmdata export parquet data parquet[/]
      [cyan]mmdata export parquet data/kraken parquet --tables trades,book_frames[/]
    """
    names = _table_names(tables)
    if not source.exists():
        raise fail(f"{source} does not exist")
    try:
        quiet = json_out or not err_console.is_terminal
        if quiet:
            summary = export_parquet(source, out, tables=names, force=force)
        else:
            summary = _with_progress(source, out, names, force)
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(orjson.dumps(summary.as_json()).decode())
    else:
        _print_summary(summary)
    raise typer.Exit(0 if summary.ok else 1)


def _with_progress(source: Path, out: Path, names: list[str], force: bool) -> ExportSummary:
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("exporting", total=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=f"exporting {label}")

        return export_parquet(source, out, tables=names, force=force, progress=update)


def _print_summary(summary: ExportSummary) -> None:
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 160  # piped into a file or a pager: do not squeeze the table to 80 columns
    table = Table(title=f"parquet export · {escape(str(summary.out))}", title_justify="left")
    table.add_column("table")
    for col in ("written", "unchanged", "absent", "failed", "rows written"):
        table.add_column(col, justify="right")
    for name, c in summary.tables.items():
        table.add_row(
            name,
            str(c.written),
            str(c.skipped),
            str(c.absent),
            f"[red]{c.failed}[/]" if c.failed else "0",
            f"{c.rows:,}",
        )
    out.print(table)
    for note in summary.absent[:20]:
        out.print(f"  [dim]absent[/] {note.table} {escape(note.day)}: {escape(note.message)}", soft_wrap=True)
    if len(summary.absent) > 20:
        out.print(f"  … and {len(summary.absent) - 20} more absent files (use --json for all)")
    for kind, notes in (("[yellow]damaged[/]", summary.warnings), ("[red]error[/]", summary.errors)):
        for note in notes[:50]:
            what = f"{note.table} " if note.table else ""
            out.print(f"  {kind} {what}{escape(note.day)}: {escape(note.message)}", soft_wrap=True)
        if len(notes) > 50:
            out.print(f"  … and {len(notes) - 50} more (use --json for all)")
    verdict = "[bold green]OK[/]" if summary.ok else "[bold red]PROBLEMS[/]"
    plural = "" if summary.days == 1 else "s"
    source = escape(str(summary.source))
    out.print(f"{verdict}  {summary.days} day folder{plural} from {source}, {summary.seconds:.2f} s")
