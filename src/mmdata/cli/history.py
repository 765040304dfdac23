"""``mmdata history fetch | combine | gaps``: exchange history over REST, joined with recorded data."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from mmdata.candles import iso_time
from mmdata.candles.combine import Tolerance
from mmdata.cli import app, err_console, fail
from mmdata.errors import MMDataError
from mmdata.history.fetch import FetchOptions, FetchResult, fetch_history
from mmdata.history.join import CombineReport, GapsReport, JoinOptions, combine_history, find_history_gaps
from mmdata.replay.timeparse import parse_duration_ns, parse_time_ns

history_app = typer.Typer(
    name="history",
    help=(
        "Exchange history over REST (candles, trades: paginated, rate-limited, resumable), stored as "
        "Parquet under the data root, and joined with recorded data (combine, gaps)."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(history_app, name="history")

_SRC = "Source"
_RANGE = "Range"
_NET = "Network"

ExchangeOpt = Annotated[
    str,
    typer.Option(
        "--exchange", "-e", envvar="EXCHANGE", help="binance, kraken or bitfinex.", rich_help_panel=_SRC
    ),
]
SymbolOpt = Annotated[
    str,
    typer.Option(
        "--symbol",
        "-s",
        envvar="SYMBOL",
        help="Symbol as you would record it: BTC/USDT (binance), BTC/USD (kraken, bitfinex).",
        rich_help_panel=_SRC,
    ),
]
IntervalOpt = Annotated[
    str,
    typer.Option(
        "--interval",
        "-i",
        envvar="INTERVAL",
        help="Candle interval: 1m 5m 15m 1h 4h 1D 1W (what the venue serves: binance all; kraken no 1W; "
        "bitfinex no 4h, no 1W).",
        rich_help_panel=_SRC,
    ),
]
StartOpt = Annotated[
    str | None,
    typer.Option(
        "--start",
        envvar="START_MS",
        help="Range start (inclusive): epoch ms (or s), ISO-8601 (2026-11-20T00:00Z), 'now-6h'.",
        rich_help_panel=_RANGE,
        show_default=False,
    ),
]
EndOpt = Annotated[
    str,
    typer.Option(
        "--end",
        envvar="END_MS",
        help="Range end (exclusive), same forms as --start; clipped to the last closed candle.",
        rich_help_panel=_RANGE,
    ),
]
DataDirOpt = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="MMDATA_DATA_DIR",
        help="Data root: the recorder's day folders, and where history is stored.",
        rich_help_panel=_SRC,
    ),
]
OutRootOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Store history under this root instead of the data root (same layout, docs/history.md).",
        rich_help_panel=_SRC,
        show_default=False,
    ),
]
RestUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--rest-url",
        envvar="REST_URL",
        help="REST base URL (default: the venue's), e.g. the simulator's http://127.0.0.1:PORT.",
        rich_help_panel=_NET,
        show_default=False,
    ),
]
PageLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--page-limit",
        envvar="LIMIT",
        min=1,
        help="Rows per request (default: the venue's maximum: binance 1000, kraken 1000, bitfinex 10000).",
        rich_help_panel=_NET,
        show_default=False,
    ),
]
PaceOpt = Annotated[
    float | None,
    typer.Option(
        "--pace",
        min=0.0,
        help="Seconds between requests to one endpoint (default: the venue's documented rate: kraken 1, "
        "bitfinex 1 for candles and 2 for trades; binance is budgeted by request weight). 0 = no pacing.",
        rich_help_panel=_NET,
        show_default=False,
    ),
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--retries",
        min=0,
        help="Retries per request on 429/418/5xx/timeouts (Retry-After honoured, else exponential backoff).",
        rich_help_panel=_NET,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print exactly one JSON object instead of tables (for scripts and CI).")
]


def _moment_ms(text: str, option: str, now_ms: int) -> int:
    """ms of a time option: ``now``, ``now-6h``, epoch s/ms/ns, ISO-8601."""
    value = text.strip()
    lowered = value.lower()
    try:
        if lowered == "now":
            return now_ms
        if lowered.startswith("now-"):
            return now_ms - parse_duration_ns(value[4:]) // 1_000_000
        return parse_time_ns(value) // 1_000_000
    except ValueError as exc:
        raise fail(f"{option}: {exc}") from None


def _range(start: str | None, end: str, now_ms: int) -> tuple[int, int]:
    if start is None:
        raise fail("--start is required (or START_MS): e.g. --start 2026-11-20T00:00Z or --start now-6h")
    lo = _moment_ms(start, "--start", now_ms)
    hi = _moment_ms(end, "--end", now_ms)
    if hi <= lo:
        raise fail(f"--end {iso_time(hi)} must be after --start {iso_time(lo)}")
    return lo, hi


@contextlib.contextmanager
def _progress(show: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich bar over the fetched time range (``None`` when not shown)."""
    if not show:
        yield None
        return
    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=max(0, done), total=max(1, total))

        yield update


@contextlib.contextmanager
def _logging(json_out: bool) -> Iterator[None]:
    """History warnings and mismatch errors on stderr (not mixed into --json stdout)."""
    logger = logging.getLogger("mmdata.history")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.setLevel(logging.ERROR if json_out else logging.WARNING)
    logger.addHandler(handler)
    old = logger.level
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _out() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal:
        out.width = 160
    return out


@history_app.command("fetch", no_args_is_help=True)
def fetch(
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    kind: Annotated[
        str,
        typer.Option(
            "--type", "-t", envvar="TYPE", help="candles or trades.", rich_help_panel=_SRC, show_default=False
        ),
    ] = "candles",
    interval: IntervalOpt = "1m",
    start: StartOpt = None,
    end: EndOpt = "now",
    data_dir: DataDirOpt = Path("data"),
    out: OutRootOpt = None,
    rest_url: RestUrlOpt = None,
    page_limit: PageLimitOpt = None,
    pace: PaceOpt = None,
    retries: RetriesOpt = 8,
    json_out: JsonOpt = False,
) -> None:
    """Fetch exchange candles or trades for a time range into the history store.

    Pages through the venue's REST history (binance klines / aggTrades, kraken OHLC / Trades,
    bitfinex candles / trades hist), honouring its rate limits: Binance request weight and
    [bold]X-MBX-USED-WEIGHT-1M[/], 429 and 418 with [bold]Retry-After[/], the documented
    Kraken and Bitfinex request rates. Failed requests are retried with backoff.

    Stored as Parquet, one file per UTC day, exact decimal text (layout: docs/history.md):
      DATA/<exchange>/<SYMBOL>/history/candles_<interval>/<YYYYMMDD>.parquet
      DATA/<exchange>/<SYMBOL>/history/trades/<YYYYMMDD>.parquet
    Resumable: what was fetched is kept, so after Ctrl-C, a kill or an error the same
    command fetches only what is missing, with no duplicate rows; a complete range makes
    no request at all. Kraken serves only its 720 most recent candles per interval: an
    older range is built from Kraken trades, and the command says so.
    Load the result with [cyan]mmdata.history.load_candles(...)[/] / [cyan]load_trades(...)[/].

    Exit status: [bold]0[/] fetched, [bold]2[/] bad option or the venue refused
    (rate limit beyond the retries, unknown symbol): rerun to resume.

    Examples:
      [cyan]mmdata history fetch -e binance -s BTC/USDT --start now-1d[/]
      [cyan]mmdata history fetch -e kraken -s BTC/USD -t trades --start 2026-11-20T00:00Z --end now-1h[/]
      [cyan]EXCHANGE=bitfinex SYMBOL=BTC/USD INTERVAL=1h START_MS=1763596800000 mmdata history fetch[/]
    """
    now = int(time.time() * 1000)
    lo, hi = _range(start, end, now)
    what = kind.strip().lower()
    if what not in ("candles", "trades"):
        raise fail(f"--type must be candles or trades, not {kind!r}")
    options = FetchOptions(
        exchange=exchange.strip().lower(),
        symbol=symbol,
        kind=what,
        interval=interval if what == "candles" else None,
        start_ms=lo,
        end_ms=hi,
        out_root=out if out is not None else data_dir,
        rest_url=rest_url,
        page_limit=page_limit,
        pace_s=pace,
        retries=retries,
    )
    show = not json_out and err_console.is_terminal
    label = f"{options.exchange} {symbol} {what}" + (f" {interval}" if what == "candles" else "")
    try:
        with _logging(json_out), _progress(show, f"fetching {escape(label)}") as update:
            result = fetch_history(options, progress=update, now_ms=now)
    except MMDataError as exc:
        raise fail(f"{exc} (what was fetched is kept: rerun the same command to resume)") from None
    if json_out:
        typer.echo(orjson.dumps(_fetch_json(result)).decode())
    else:
        _print_fetch(result)


def _fetch_json(result: FetchResult) -> dict[str, object]:
    return {
        "ok": True,
        "exchange": result.exchange,
        "symbol": result.symbol,
        "dataset": result.dataset,
        "path": str(result.path),
        "rows": result.rows,
        "requests": result.requests,
        "retries": result.retries,
        "fetched": [[iso_time(s), iso_time(e)] for s, e in result.fetched_ranges],
        "already_stored": [[iso_time(s), iso_time(e)] for s, e in result.skipped_ranges],
        "notes": list(result.notes),
    }


def _print_fetch(result: FetchResult) -> None:
    out = _out()
    for note in result.notes:
        out.print(f"[yellow]note[/] {escape(note)}", soft_wrap=True)
    for s, e in result.skipped_ranges:
        out.print(f"[dim]already stored[/] {iso_time(s)} .. {iso_time(e)}")
    fetched = ", ".join(f"{iso_time(s)} .. {iso_time(e)}" for s, e in result.fetched_ranges) or "nothing"
    out.print(
        f"[bold green]OK[/] {result.rows:,} new rows of {escape(result.dataset)} for "
        f"{escape(result.exchange)} {escape(result.symbol)} in {result.requests} requests "
        f"({result.retries} retried); fetched {fetched}"
    )
    out.print(f"stored in [bold]{escape(str(result.path))}[/]", soft_wrap=True)


def _join_options(
    exchange: str,
    symbol: str,
    interval: str,
    start: str | None,
    end: str,
    data_dir: Path,
    out_root: Path | None,
    rest_url: str | None,
    offline: bool,
    page_limit: int | None,
    pace: float | None,
    retries: int,
    tolerance: Tolerance,
) -> tuple[JoinOptions, int]:
    now = int(time.time() * 1000)
    lo, hi = _range(start, end, now)
    if not data_dir.is_dir():
        raise fail(f"data root {data_dir} is not a folder (--data-dir / MMDATA_DATA_DIR)")
    return (
        JoinOptions(
            exchange=exchange.strip().lower(),
            symbol=symbol,
            start_ms=lo,
            end_ms=hi,
            data_dir=data_dir,
            interval=interval,
            history_root=out_root,
            rest_url=rest_url,
            fetch=not offline,
            page_limit=page_limit,
            pace_s=pace,
            retries=retries,
            tolerance=tolerance,
        ),
        now,
    )


OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Use only the exchange history already stored (no request); uncovered ranges are reported.",
        rich_help_panel=_NET,
    ),
]


@history_app.command("combine", no_args_is_help=True)
def combine(
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    start: StartOpt = None,
    end: EndOpt = "now",
    interval: IntervalOpt = "1m",
    data_dir: DataDirOpt = Path("data"),
    history_root: OutRootOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Combined series file, .parquet or .csv (default: DATA/<ex>/<SYMBOL>/history/combined/...).",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Mismatch report CSV (default: beside the output, *_mismatches.csv; written only when "
            "a candle mismatched).",
            show_default=False,
        ),
    ] = None,
    price_tol: Annotated[
        float,
        typer.Option(
            "--price-tol",
            min=0.0,
            help="Relative tolerance for open/high/low/close (0 = exact decimal equality).",
        ),
    ] = 0.0,
    volume_tol: Annotated[
        float, typer.Option("--volume-tol", min=0.0, help="Relative tolerance for volume.")
    ] = 1e-8,
    rest_url: RestUrlOpt = None,
    offline: OfflineOpt = False,
    page_limit: PageLimitOpt = None,
    pace: PaceOpt = None,
    retries: RetriesOpt = 8,
    json_out: JsonOpt = False,
) -> None:
    """Join candles built from recorded trades with exchange candles into one continuous series.

    For every interval of the range one row with a [bold]source[/] column:
      [bold]local[/]     the recorder saw the whole interval (trade stream connected, no
                sequence gap): its candle, built from the recorded trades, is used;
      [bold]exchange[/]  the local candle is missing or incomplete: the exchange's candle;
      [bold]empty[/]     nobody traded: flat at the previous close, volume 0.
    Exchange candles come from the history store; what it lacks is fetched first (see
    [cyan]mmdata history fetch[/]) unless [bold]--offline[/].

    Every complete local candle that also exists on the exchange is compared: open, high,
    low and close as exact decimals within --price-tol (relative, default exact), volume
    within --volume-tol (relative, default 1e-8). Each difference is logged as an error
    and written to the mismatch report.

    Exit status: [bold]0[/] no mismatch, [bold]1[/] mismatches (see the report) or exchange
    data missing (--offline), [bold]2[/] bad option, unusable data root or fetch failure.

    Example:
      [cyan]mmdata history combine -e kraken -s BTC/USD --start 2026-11-20 --end 2026-11-21[/]
    """
    options, now = _join_options(
        exchange,
        symbol,
        interval,
        start,
        end,
        data_dir,
        history_root,
        rest_url,
        offline,
        page_limit,
        pace,
        retries,
        Tolerance(price_rel=price_tol, volume_rel=volume_tol),
    )
    show = not json_out and err_console.is_terminal
    try:
        with _logging(json_out), _progress(show, f"fetching exchange {interval} candles") as update:
            result = combine_history(options, out=output, report=report, progress=update, now_ms=now)
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(orjson.dumps(result.as_json()).decode())
    else:
        _print_combine(result)
    raise typer.Exit(0 if result.ok else 1)


def _print_combine(result: CombineReport) -> None:
    out = _out()
    table = Table(
        title=f"combine · {escape(result.exchange)} {escape(result.symbol)} {result.interval} · "
        f"{iso_time(result.start_ms)} .. {iso_time(result.end_ms)}",
        title_justify="left",
    )
    table.add_column("source")
    table.add_column("rows", justify="right")
    for source, count in sorted(result.sources().items()):
        table.add_row(source, f"{count:,}")
    out.print(table)
    for m in result.mismatches[:30]:
        out.print(
            f"  [red]mismatch[/] {iso_time(m.open_time_ms)} {m.field}: local {escape(str(m.local))} "
            f"exchange {escape(str(m.exchange))}",
            soft_wrap=True,
        )
    if len(result.mismatches) > 30:
        out.print(f"  … and {len(result.mismatches) - 30} more (in the report)")
    for s, e in result.uncovered:
        out.print(f"  [yellow]no exchange data[/] {iso_time(s)} .. {iso_time(e)} (run without --offline)")
    if result.out is not None:
        out.print(f"series: [bold]{escape(str(result.out))}[/]", soft_wrap=True)
    if result.report is not None:
        out.print(f"mismatch report: [bold]{escape(str(result.report))}[/]", soft_wrap=True)
    verdict = "[bold green]OK[/]" if result.ok else "[bold red]PROBLEMS[/]"
    out.print(f"{verdict}  {len(result.rows):,} rows, {len(result.mismatches)} mismatches")


@history_app.command("gaps", no_args_is_help=True)
def gaps(
    exchange: ExchangeOpt,
    symbol: SymbolOpt,
    start: StartOpt = None,
    end: EndOpt = "now",
    interval: IntervalOpt = "1m",
    data_dir: DataDirOpt = Path("data"),
    history_root: OutRootOpt = None,
    rest_url: RestUrlOpt = None,
    offline: OfflineOpt = False,
    page_limit: PageLimitOpt = None,
    pace: PaceOpt = None,
    retries: RetriesOpt = 8,
    json_out: JsonOpt = False,
) -> None:
    """List the ranges the exchange traded in but the local data does not fully cover.

    Local coverage is what the recorder saw: its trade stream connected (from the
    ledger's ws_open to ws_close / run_stop, or its last row after a crash), no
    sequence gap, and recorded trades in the interval. Exchange data comes from the
    history store, fetched first where missing (unless [bold]--offline[/]). Each gap is
    one merged range with its reason: [bold]not recorded[/] (the recorder was not
    connected), [bold]no local trades[/] (connected, but the trades are missing: lost or
    removed), [bold]partial[/] (the recorder saw only part of the interval).

    Exit status: [bold]0[/] no gap, [bold]1[/] gaps found (or exchange data missing with
    --offline), [bold]2[/] bad option, unusable data root or fetch failure.

    Example:
      [cyan]mmdata history gaps -e binance -s BTC/USDT --start 2026-11-20 --end 2026-11-21[/]
    """
    options, now = _join_options(
        exchange,
        symbol,
        interval,
        start,
        end,
        data_dir,
        history_root,
        rest_url,
        offline,
        page_limit,
        pace,
        retries,
        Tolerance(),
    )
    show = not json_out and err_console.is_terminal
    try:
        with _logging(json_out), _progress(show, f"fetching exchange {interval} candles") as update:
            result = find_history_gaps(options, progress=update, now_ms=now)
    except MMDataError as exc:
        raise fail(str(exc)) from None
    if json_out:
        typer.echo(orjson.dumps(result.as_json()).decode())
    else:
        _print_gaps(result)
    raise typer.Exit(0 if result.ok else 1)


def _print_gaps(result: GapsReport) -> None:
    out = _out()
    table = Table(
        title=f"gaps · {escape(result.exchange)} {escape(result.symbol)} {result.interval} · "
        f"{iso_time(result.start_ms)} .. {iso_time(result.end_ms)}",
        title_justify="left",
    )
    for col in ("start", "end", "intervals", "exchange trades", "reason"):
        table.add_column(col, justify="right" if col in ("intervals", "exchange trades") else "left")
    for g in result.gaps[:200]:
        trades = "" if g.exchange_trades is None else f"{g.exchange_trades:,}"
        table.add_row(iso_time(g.start_ms), iso_time(g.end_ms), f"{g.intervals:,}", trades, g.reason)
    if result.gaps:
        out.print(table)
    if len(result.gaps) > 200:
        out.print(f"  … and {len(result.gaps) - 200} more (use --json for all)")
    for s, e in result.uncovered:
        out.print(f"  [yellow]no exchange data[/] {iso_time(s)} .. {iso_time(e)} (run without --offline)")
    verdict = "[bold green]NO GAPS[/]" if result.ok else "[bold red]GAPS[/]"
    out.print(
        f"{verdict}  {result.intervals:,} intervals, exchange traded in {result.exchange_traded:,}, "
        f"complete locally {result.complete:,}, missing {result.missing_intervals():,}"
    )
