"""``mmdata watch relay | candles | metrics | stream``: a terminal client for the servers."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from typing import Annotated, Any
from urllib.parse import urlencode

import orjson
import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from mmdata.cli import app, fail
from mmdata.serve.client import RelayBook

watch_app = typer.Typer(
    help="Connect to a running mmdata server and show its stream live (--json: raw messages, one per line).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(watch_app, name="watch")

Json = Annotated[bool, typer.Option("--json", help="Print each message as one JSON line (for scripts).")]
Count = Annotated[int, typer.Option("--count", "-n", min=0, help="Stop after N messages (0: never).")]
Duration = Annotated[float, typer.Option("--duration", min=0, help="Stop after S seconds (0: never).")]
Host = Annotated[str, typer.Option("--host", help="Server host (when no URL is given).")]

_DEFAULT_PORTS = {"relay": 8765, "candles": 7000, "metrics": 8766, "stream": 8000}


def _open_error(url: str, exc: BaseException) -> typer.Exit:
    if isinstance(exc, InvalidStatus):
        body = exc.response.body or b""
        try:
            detail = str(orjson.loads(body).get("error", ""))
        except (orjson.JSONDecodeError, AttributeError):
            detail = body.decode("utf-8", "replace")[:200]
        return fail(f"{url}: refused with HTTP {exc.response.status_code}: {detail}")
    if isinstance(exc, InvalidURI):
        return fail(f"not a WebSocket URL: {url}")
    return fail(f"cannot connect to {url}: {exc}")


async def _stream(
    url: str,
    *,
    sends: list[str],
    count: int,
    duration: float,
    on_message: Any,
) -> str:
    """Connect, send ``sends``, hand each message to ``on_message``; why it ended."""
    try:
        ws_cm = connect(url, max_size=None, compression=None, open_timeout=10)
        ws = await ws_cm
    except (OSError, InvalidStatus, InvalidURI, TimeoutError) as exc:
        raise _open_error(url, exc) from None
    seen = 0
    deadline = time.monotonic() + duration if duration else None
    try:
        for text in sends:
            await ws.send(text)
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                raw = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                return "duration reached"
            on_message(raw)
            seen += 1
            if count and seen >= count:
                return f"{seen} messages"
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        if rcvd is None:
            return "connection lost"
        return f"server closed the connection ({rcvd.code} {rcvd.reason})".strip()
    finally:
        await ws.close()


def _run(coro: Any) -> str:
    try:
        return str(asyncio.run(coro))
    except KeyboardInterrupt:
        return "interrupted"


def _print_json(raw: str | bytes) -> None:
    line = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@watch_app.command("relay")
def watch_relay(
    url: Annotated[
        str | None,
        typer.Argument(
            help="ws://host:8765/ws?exchange=…&symbol=… (or give --exchange/--symbol).", show_default=False
        ),
    ] = None,
    exchange: Annotated[str | None, typer.Option("--exchange", "-e", show_default=False)] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", show_default=False)] = None,
    origin: Annotated[
        str, typer.Option("--from", help="tail: from the latest book; start: the day from its start.")
    ] = "tail",
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8765,
    levels: Annotated[int, typer.Option("--levels", min=1, max=50, help="Book levels shown per side.")] = 10,
    json_out: Json = False,
    count: Count = 0,
    duration: Duration = 0.0,
) -> None:
    """Watch a relay stream: the book rebuilt from snapshot + diffs (checked by the venue's own
    sync engine, so SYNCED means proven), recent trades, events and status messages.

    [cyan]mmdata watch relay -e kraken -s BTC/USD[/]
    [cyan]mmdata watch relay ws://127.0.0.1:8765/ws?exchange=binance&symbol=BTCUSDT --json -n 100[/]
    """
    if url is None:
        if not exchange or not symbol:
            raise fail("give a URL, or --exchange and --symbol")
        url = f"ws://{host}:{port}/ws?" + urlencode({"exchange": exchange, "symbol": symbol, "from": origin})
    if json_out:
        why = _run(_stream(url, sends=[], count=count, duration=duration, on_message=_print_json))
        Console(stderr=True).print(f"[dim]{escape(why)}[/]")
        return
    book = RelayBook()
    counts: Counter[str] = Counter()
    trades: deque[str] = deque(maxlen=8)
    notes: deque[str] = deque(maxlen=6)
    console = Console()

    def render() -> Group:
        bids, asks = book.top(levels)
        table = Table(title=f"{escape(url)}  state [bold]{book.state}[/]  seq {book.last_seq}", expand=False)
        for col in ("bid qty", "bid", "ask", "ask qty"):
            table.add_column(col, justify="right")
        for i in range(levels):
            b = bids[i] if i < len(bids) else ("", "")
            a = asks[i] if i < len(asks) else ("", "")
            table.add_row(b[1], f"[green]{b[0]}[/]", f"[red]{a[0]}[/]", a[1])
        info = Text(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        return Group(
            table, info, Text("trades: " + "  ".join(trades)), Text("\n".join(notes), style="yellow")
        )

    with Live(render(), console=console, refresh_per_second=4, transient=False) as live:

        def on_message(raw: str | bytes) -> None:
            msg = orjson.loads(raw)
            kind = str(msg.get("type"))
            counts[kind] += 1
            book.apply(msg)
            data = msg.get("data") or {}
            if kind == "trade":
                trades.appendleft(f"{data.get('side', '')} {data.get('qty')}@{data.get('price')}")
            elif kind == "status":
                notes.appendleft(f"status {data.get('status')}: {data.get('message', '')}")
            elif kind == "event" and data.get("event") not in ("heartbeat",):
                notes.appendleft(
                    f"event {data.get('event')} {data.get('state', '')} {data.get('reason', '')}"
                )
            live.update(render())

        why = _run(_stream(url, sends=[], count=count, duration=duration, on_message=on_message))
    console.print(f"[dim]{escape(why)}[/]")


def _generic(
    kind: str,
    url: str | None,
    host: str,
    port: int | None,
    path: str,
    sends: list[str],
    json_out: bool,
    count: int,
    duration: float,
) -> None:
    target = url or f"ws://{host}:{port or _DEFAULT_PORTS[kind]}{path}"
    if json_out:
        why = _run(_stream(target, sends=sends, count=count, duration=duration, on_message=_print_json))
        Console(stderr=True).print(f"[dim]{escape(why)}[/]")
        return
    console = Console()
    counts: Counter[str] = Counter()
    last: deque[str] = deque(maxlen=12)

    def render() -> Group:
        head = Text(f"{target}  " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())), style="bold")
        return Group(head, Text("\n".join(last)))

    with Live(render(), console=console, refresh_per_second=4) as live:

        def on_message(raw: str | bytes) -> None:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            try:
                msg = orjson.loads(text)
                counts[str(msg.get("type", "?")) if isinstance(msg, dict) else "?"] += 1
            except orjson.JSONDecodeError:
                counts["text"] += 1
            last.appendleft(text[:200])
            live.update(render())

        why = _run(_stream(target, sends=sends, count=count, duration=duration, on_message=on_message))
    console.print(f"[dim]{escape(why)}[/]")


Send = Annotated[
    list[str] | None,
    typer.Option("--send", help="A message to send after connecting (JSON text; repeatable)."),
]
Url = Annotated[
    str | None, typer.Argument(help="Full ws:// URL (default: --host and the server's default port).")
]
Port = Annotated[int | None, typer.Option("--port", show_default=False)]


@watch_app.command("candles")
def watch_candles(
    url: Url = None,
    symbol: Annotated[str | None, typer.Option("--symbol", "-s", help="Subscribe to this symbol.")] = None,
    interval: Annotated[str, typer.Option("--interval", help="1m 5m 15m 1h 4h 1D 1W.")] = "1m",
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange", "-e", help="Exchange of --symbol (default: the server's).", show_default=False
        ),
    ] = None,
    initial_bars: Annotated[
        int, typer.Option("--initial-bars", min=0, help="Bars in the initial answer.")
    ] = 100,
    send: Send = None,
    host: Host = "127.0.0.1",
    port: Port = None,
    json_out: Json = False,
    count: Count = 0,
    duration: Duration = 0.0,
) -> None:
    """Watch the candle server (ws://host:7000): subscribes to --symbol/--interval."""
    sends = list(send or [])
    if symbol:
        sub: dict[str, object] = {
            "type": "subscribe",
            "symbol": symbol,
            "interval": interval,
            "initialBars": initial_bars,
        }
        if exchange:
            sub["exchange"] = exchange
        sends.insert(0, orjson.dumps(sub).decode())
    _generic("candles", url, host, port, "", sends, json_out, count, duration)


@watch_app.command("metrics")
def watch_metrics(
    url: Url = None,
    exchange: Annotated[str, typer.Option("--exchange", "-e")] = "binance",
    symbols: Annotated[str, typer.Option("--symbols", help="Comma-separated symbols.")] = "BTCUSDT,ETHUSDT",
    metric: Annotated[str, typer.Option("--metric", help="correlation or volatility.")] = "correlation",
    interval: Annotated[
        str, typer.Option("--interval", help="Candle interval: 1m 5m 15m 1h 4h 1D 1W.")
    ] = "1m",
    window: Annotated[str, typer.Option("--window", help="Window: 180d, 12h, 90m …")] = "180d",
    host: Host = "127.0.0.1",
    port: Port = None,
    json_out: Json = False,
    count: Count = 0,
    duration: Duration = 0.0,
) -> None:
    """Watch the metrics server (ws://host:8766/metrics?...)."""
    path = "/metrics?" + urlencode(
        {"exchange": exchange, "symbols": symbols, "interval": interval, "window": window, "metric": metric}
    )
    _generic("metrics", url, host, port, path, [], json_out, count, duration)


@watch_app.command("stream")
def watch_stream(
    url: Url = None,
    client_id: Annotated[str, typer.Option("--client-id")] = "watch",
    channel: Annotated[
        list[str] | None,
        typer.Option(
            "--channel", help="price_updates, trades, signals, trade_executed or portfolio (repeatable)."
        ),
    ] = None,
    symbol: Annotated[
        list[str] | None,
        typer.Option("--symbol", "-s", help="Symbol for price_updates / trades (repeatable)."),
    ] = None,
    exchange: Annotated[
        str | None,
        typer.Option(
            "--exchange", "-e", help="Exchange of the symbols (default: the server's).", show_default=False
        ),
    ] = None,
    send: Send = None,
    host: Host = "127.0.0.1",
    port: Port = None,
    json_out: Json = False,
    count: Count = 0,
    duration: Duration = 0.0,
) -> None:
    """Watch the channel stream server (ws://host:8000/ws?client_id=…).

    [cyan]mmdata watch stream --channel price_updates --channel trades -e kraken -s BTC/USD[/]
    """
    sends = []
    for c in channel or []:
        sub: dict[str, object] = {"type": "subscribe", "channel": c}
        if symbol and c in ("price_updates", "trades", "signals", "trade_executed"):
            sub["symbols"] = list(symbol)
        if exchange:
            sub["exchange"] = exchange
        sends.append(orjson.dumps(sub).decode())
    sends += list(send or [])
    _generic(
        "stream",
        url,
        host,
        port,
        "/ws?" + urlencode({"client_id": client_id}),
        sends,
        json_out,
        count,
        duration,
    )
