"""``mmdata serve relay | rest | all``: serve recorded and live streams."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from mmdata.cli import app, fail
from mmdata.errors import ConfigError
from mmdata.serve.app import ServeOptions, Servers, run_servers
from mmdata.serve.candles import CandleOptions
from mmdata.serve.hub import HubConfig
from mmdata.serve.market import MarketConfig
from mmdata.serve.metrics import MetricsOptions
from mmdata.serve.stream import StreamOptions

serve_app = typer.Typer(
    help=(
        "Serve recorded and live data: WebSocket relay (8765), REST snapshot (8080), or all in one "
        "process. Listens on 127.0.0.1 unless --host says otherwise; there is no authentication."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(serve_app, name="serve")

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="MMDATA_DATA_DIR", help="Data root the recorder writes.")
]
Host = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="MMDATA_SERVE_HOST",
        help="Bind address. 0.0.0.0 listens on every interface: put a proxy with auth/TLS in front.",
    ),
]
MaxConn = Annotated[
    int,
    typer.Option(
        "--max-connections",
        envvar="WS_RELAY_MAX_CONNECTIONS",
        min=1,
        help="Relay clients at once; more are refused.",
    ),
]
MaxMsg = Annotated[
    int,
    typer.Option(
        "--max-message-bytes",
        envvar="WS_RELAY_MAX_MESSAGE_BYTES",
        min=128,
        help="Largest frame a client may send (larger: the connection is closed, code 1009).",
    ),
]
LiveOnly = Annotated[
    bool,
    typer.Option(
        "--live-only/--day-files",
        envvar="WS_RELAY_LIVE_ONLY",
        help="Relay only live/ files, never fall back to tailing the day's .gz files.",
    ),
]
PollMs = Annotated[
    float,
    typer.Option("--poll-ms", envvar="WS_RELAY_POLL_MS", min=1, help="How often files are checked, ms."),
]
SlowBytes = Annotated[
    int,
    typer.Option(
        "--drop-after-bytes",
        envvar="WS_RELAY_DROP_BYTES",
        min=65536,
        help="Drop a client with this many bytes waiting to be sent (told first at 1/8 of it).",
    ),
]


Exchange = Annotated[
    str | None,
    typer.Option(
        "--exchange",
        "-e",
        envvar="MMDATA_EXCHANGE",
        help="Exchange of a symbol a client names without one (default: the one recorded, or binance).",
        show_default=False,
    ),
]
HistoryDays = Annotated[
    int,
    typer.Option(
        "--history-days",
        envvar="MMDATA_HISTORY_DAYS",
        min=1,
        max=3650,
        help="Recorded days of trades read into memory per symbol (candles, metrics, 24 h stats).",
    ),
]
TradePollMs = Annotated[
    float,
    typer.Option(
        "--trade-poll-ms", envvar="MMDATA_TRADE_POLL_MS", min=1, help="How often trade files are checked, ms."
    ),
]


def _market_config(history_days: int, poll_ms: float) -> MarketConfig:
    return MarketConfig(poll_s=poll_ms / 1000, history_days=history_days)


def _check_data_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise fail(f"data folder {data_dir} does not exist (record first, or pass --data-dir)")


def _streams(data_dir: Path) -> list[str]:
    out = []
    for venue in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for sym in sorted(p for p in venue.iterdir() if p.is_dir()):
            out.append(f"{venue.name}/{sym.name}")
    return out


def _run(options: ServeOptions, title: str) -> None:
    console = Console(stderr=True, highlight=False)

    def ready(servers: Servers) -> None:
        for name, url in servers.urls().items():
            console.print(f"[bold green]{name}[/] listening on {escape(url)}")
        streams = _streams(options.data_dir)
        shown = ", ".join(streams[:12]) + (" …" if len(streams) > 12 else "")
        console.print(f"streams under {escape(str(options.data_dir))}: {escape(shown) or '(none yet)'}")
        if servers.relay is not None and streams:
            ex, sym = streams[0].split("/", 1)
            port = servers.relay.port
            console.print(f"try: mmdata watch relay --port {port} --exchange {ex} --symbol {sym}")
        if servers.stream is not None and servers.stream.options.publish_token is None:
            console.print(
                "stream: publishing over the network is off (set --publish-token / MMDATA_PUBLISH_TOKEN)"
            )
        if servers.candles is not None and streams:
            ex, sym = streams[0].split("/", 1)
            port = servers.candles.port
            console.print(
                f"try: mmdata watch candles --port {port} --exchange {ex} --symbol {sym} --interval 1m"
            )
        console.print(f"{title}: Ctrl-C stops")

    try:
        asyncio.run(run_servers(options, on_ready=ready))
    except OSError as exc:
        raise fail(f"cannot listen: {exc}") from None
    except KeyboardInterrupt:
        pass


def _hub_config(live_only: bool, poll_ms: float, drop_bytes: int) -> HubConfig:
    return HubConfig(
        poll_s=poll_ms / 1000, live_only=live_only, slow_bytes=drop_bytes // 8, drop_bytes=drop_bytes
    )


@serve_app.command("relay")
def serve_relay(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="WS_RELAY_PORT", min=0, max=65535)] = 8765,
    max_connections: MaxConn = 2000,
    max_message_bytes: MaxMsg = 4096,
    live_only: LiveOnly = False,
    poll_ms: PollMs = 10.0,
    drop_bytes: SlowBytes = 8 << 20,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            envvar="WS_RELAY_WORKERS",
            min=1,
            max=64,
            help=(
                "Relay processes sharing the port (SO_REUSEPORT, Linux): the kernel spreads clients "
                "over them, each fans out to its share on its own core. --max-connections is split."
            ),
        ),
    ] = 1,
    reuse_port: Annotated[bool, typer.Option("--reuse-port", hidden=True)] = False,
) -> None:
    """WebSocket relay: ws://HOST:8765/ws?exchange=binance&symbol=BTCUSDT&from=tail|start.

    Clients get a [bold]snapshot[/] of the followed book, then every [bold]diff[/], [bold]trade[/]
    and ledger [bold]event[/] as the recorder writes them, and [bold]status[/] messages for
    server-side conditions. Prefers live/ files, else tails the day's .gz files member by
    member. Protocol: docs/serving.md.
    """
    _check_data_dir(data_dir)
    if workers > 1:
        _run_workers(
            workers,
            port,
            host,
            [
                "--data-dir",
                str(data_dir),
                "--host",
                host,
                "--max-connections",
                str(-(-max_connections // workers)),
                "--max-message-bytes",
                str(max_message_bytes),
                "--live-only" if live_only else "--day-files",
                "--poll-ms",
                str(poll_ms),
                "--drop-after-bytes",
                str(drop_bytes),
            ],
        )
        return
    _run(
        ServeOptions(
            data_dir,
            host=host,
            relay_port=port,
            rest_port=None,
            max_connections=max_connections,
            max_message_bytes=max_message_bytes,
            reuse_port=reuse_port,
            hub=_hub_config(live_only, poll_ms, drop_bytes),
        ),
        "relay",
    )


def _run_workers(workers: int, port: int, host: str, args: list[str]) -> None:
    """Start ``workers`` relay processes on one port (SO_REUSEPORT) and wait for them."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise fail("--workers needs SO_REUSEPORT (Linux, BSD, macOS)")
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        holder.bind((host, port))  # port 0: pick one free port for every worker
    except OSError as exc:
        holder.close()
        raise fail(f"cannot listen on {host}:{port}: {exc}") from None
    port = holder.getsockname()[1]
    console = Console(stderr=True, highlight=False)
    cmd = [sys.executable, "-m", "mmdata", "serve", "relay", "--port", str(port), "--reuse-port", *args]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    ready = [threading.Event() for _ in procs]

    def forward(proc: subprocess.Popen[str], done: threading.Event) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:  # the workers' log, prefixed; "listening" marks one ready
            if "listening on" in line:
                done.set()
            sys.stderr.write(f"[worker {proc.pid}] {line}")
        done.set()

    for proc, done in zip(procs, ready, strict=True):
        threading.Thread(target=forward, args=(proc, done), daemon=True).start()
    for done in ready:
        done.wait(timeout=60)
    holder.close()  # never listened: the kernel only hands connections to the workers' sockets
    console.print(
        f"[bold green]relay[/] listening on ws://{escape(host)}:{port}/ws ({workers} worker processes)"
    )
    try:
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    for p in procs:
        if p.stderr is not None:
            p.stderr.close()
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGINT)]
    if failed:
        raise fail(f"a relay worker exited with status {failed[0]}")


@serve_app.command("rest")
def serve_rest(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="REST_PORT", min=0, max=65535)] = 8080,
    live_only: LiveOnly = False,
) -> None:
    """REST: GET /snapshot?exchange=kraken&symbol=BTC/USD[&levels=10] and GET /health.

    The book is followed from the latest snapshot + diffs by the venue's own sync engine and
    served only while it is proven (503 with its state otherwise); a stream recorded without
    diffs serves its latest book frame.
    """
    _check_data_dir(data_dir)
    _run(
        ServeOptions(
            data_dir, host=host, relay_port=None, rest_port=port, hub=_hub_config(live_only, 10.0, 8 << 20)
        ),
        "rest",
    )


@serve_app.command("candles")
def serve_candles(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="CANDLES_PORT", min=0, max=65535)] = 7000,
    exchange: Exchange = None,
    history_days: HistoryDays = 30,
    max_connections: MaxConn = 2000,
    max_message_bytes: MaxMsg = 4096,
    poll_ms: TradePollMs = 20.0,
) -> None:
    """Candle WebSocket: ws://HOST:7000 — OHLCV in 1m 5m 15m 1h 4h 1D 1W from recorded and live trades.

    Send [cyan]{"type":"subscribe","symbol":"BTC/USDT","interval":"5m","initialBars":100}[/]
    (optional [cyan]"exchange"[/]); get [bold]initial[/] bars, then at most one [bold]update[/] per
    second per (symbol, interval) while the candle changes. [cyan]ping[/] → [bold]pong[/].
    GET /health and /health/ws-stats. Protocol: docs/candles.md.
    """
    _check_data_dir(data_dir)
    _run(
        ServeOptions(
            data_dir,
            host=host,
            relay_port=None,
            rest_port=None,
            market=_market_config(history_days, poll_ms),
            candles=CandleOptions(
                host=host,
                port=port,
                default_exchange=exchange,
                max_connections=max_connections,
                max_message_bytes=max_message_bytes,
            ),
        ),
        "candles",
    )


MetricsInterval = Annotated[
    float,
    typer.Option(
        "--update-interval",
        envvar="METRICS_POLL_INTERVAL_S",
        min=0.05,
        help="Seconds between metric messages (each includes the running 1m candle).",
    ),
]
PriceInterval = Annotated[
    float | None,
    typer.Option(
        "--price-update-interval",
        envvar="WEBSOCKET_PRICE_UPDATE_INTERVAL",
        min=0.05,
        help="Seconds between price_update messages [default: 3].",
        show_default=False,
    ),
]
PortfolioInterval = Annotated[
    float | None,
    typer.Option(
        "--portfolio-update-interval",
        envvar="WEBSOCKET_PORTFOLIO_UPDATE_INTERVAL",
        min=0.05,
        help="Seconds between re-sends of the latest published portfolio [default: 5].",
        show_default=False,
    ),
]
PingInterval = Annotated[
    float | None,
    typer.Option(
        "--ping-interval",
        envvar="WEBSOCKET_PING_INTERVAL",
        min=0,
        help="Seconds between keepalive pings (0: none) [default: 30].",
        show_default=False,
    ),
]
PublishToken = Annotated[
    str | None,
    typer.Option(
        "--publish-token",
        envvar="MMDATA_PUBLISH_TOKEN",
        help="Token for ws://HOST:8000/publish (Authorization: Bearer …). Unset: network publishing is off.",
        show_default=False,
    ),
]
StreamMaxConn = Annotated[
    int | None,
    typer.Option(
        "--stream-max-connections",
        envvar="WEBSOCKET_MAX_CONNECTIONS",
        min=1,
        help="Stream clients at once [default: 1000].",
        show_default=False,
    ),
]


def _stream_options(host: str, port: int, exchange: str | None, **given: Any) -> StreamOptions:
    try:
        return StreamOptions.from_env(None, host=host, port=port, default_exchange=exchange, **given)
    except ConfigError as exc:
        raise fail(str(exc)) from None


@serve_app.command("metrics")
def serve_metrics(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="METRICS_PORT", min=0, max=65535)] = 8766,
    exchange: Exchange = None,
    history_days: HistoryDays = 180,
    update_interval: MetricsInterval = 1.0,
    max_connections: MaxConn = 2000,
    poll_ms: TradePollMs = 20.0,
) -> None:
    """Metrics WebSocket: ws://HOST:8766/metrics?exchange=&symbols=A,B&interval=1m&window=180d&metric=….

    [bold]correlation[/] (two symbols) or annualised [bold]volatility[/] (one) of log returns of candle
    closes over the window, from recorded trades, re-sent every second with the running candle
    of live trades. Definitions: docs/metrics.md.
    """
    _check_data_dir(data_dir)
    _run(
        ServeOptions(
            data_dir,
            host=host,
            relay_port=None,
            rest_port=None,
            market=_market_config(history_days, poll_ms),
            metrics=MetricsOptions(
                host=host,
                port=port,
                default_exchange=exchange,
                update_interval_s=update_interval,
                max_connections=max_connections,
            ),
        ),
        "metrics",
    )


@serve_app.command("stream")
def serve_stream(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="WEBSOCKET_PORT", min=0, max=65535)] = 8000,
    exchange: Exchange = None,
    history_days: HistoryDays = 30,
    price_update_interval: PriceInterval = None,
    portfolio_update_interval: PortfolioInterval = None,
    ping_interval: PingInterval = None,
    max_connections: StreamMaxConn = None,
    publish_token: PublishToken = None,
    poll_ms: TradePollMs = 20.0,
) -> None:
    """Channel stream: ws://HOST:8000/ws?client_id=… — price_updates, trades and published channels.

    Send [cyan]{"type":"subscribe","channel":"price_updates","symbols":["BTCUSDT"]}[/]; get
    [bold]price_update[/] every WEBSOCKET_PRICE_UPDATE_INTERVAL seconds and every [bold]trade[/] as
    recorded. signals / trade_executed / portfolio carry what is published (Python API
    mmdata.serve.stream, or ws://HOST:8000/publish with --publish-token). GET /websocket/status.
    Settings also from WEBSOCKET_ENABLED, WEBSOCKET_* env vars. Protocol: docs/stream.md.
    """
    _check_data_dir(data_dir)
    options = _stream_options(
        host,
        port,
        exchange,
        price_update_interval_s=price_update_interval,
        portfolio_update_interval_s=portfolio_update_interval,
        ping_interval_s=ping_interval,
        max_connections=max_connections,
        publish_token=publish_token,
    )
    if not options.enabled:
        raise fail("the stream server is disabled (WEBSOCKET_ENABLED=false)")
    _run(
        ServeOptions(
            data_dir,
            host=host,
            relay_port=None,
            rest_port=None,
            market=_market_config(history_days, poll_ms),
            stream=options,
        ),
        "stream",
    )


@serve_app.command("all")
def serve_all(
    data_dir: DataDir = Path("data"),
    host: Host = "127.0.0.1",
    relay: Annotated[bool, typer.Option("--relay/--no-relay", help="Run the relay.")] = True,
    relay_port: Annotated[int, typer.Option("--relay-port", envvar="WS_RELAY_PORT", min=0, max=65535)] = 8765,
    rest: Annotated[bool, typer.Option("--rest/--no-rest", help="Run the REST server.")] = True,
    rest_port: Annotated[int, typer.Option("--rest-port", envvar="REST_PORT", min=0, max=65535)] = 8080,
    candles: Annotated[bool, typer.Option("--candles/--no-candles", help="Run the candle server.")] = True,
    candles_port: Annotated[
        int, typer.Option("--candles-port", envvar="CANDLES_PORT", min=0, max=65535)
    ] = 7000,
    metrics: Annotated[bool, typer.Option("--metrics/--no-metrics", help="Run the metrics server.")] = True,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", envvar="METRICS_PORT", min=0, max=65535)
    ] = 8766,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream/--no-stream", help="Run the channel stream server (WEBSOCKET_ENABLED=false: off)."
        ),
    ] = True,
    stream_port: Annotated[
        int, typer.Option("--stream-port", envvar="WEBSOCKET_PORT", min=0, max=65535)
    ] = 8000,
    publish_token: PublishToken = None,
    exchange: Exchange = None,
    history_days: HistoryDays = 30,
    trade_poll_ms: TradePollMs = 20.0,
    max_connections: MaxConn = 2000,
    max_message_bytes: MaxMsg = 4096,
    live_only: LiveOnly = False,
    poll_ms: PollMs = 10.0,
    drop_bytes: SlowBytes = 8 << 20,
) -> None:
    """Every server in one process on its default port, sharing one reader per stream.

    Disable any with --no-relay / --no-rest / --no-candles / --no-metrics / --no-stream.
    For several processes (recorders + servers) see
    compose.yaml and docs/deploy.md.
    """
    _check_data_dir(data_dir)
    stream_options = (
        _stream_options(host, stream_port, exchange, publish_token=publish_token) if stream else None
    )
    if stream_options is not None and not stream_options.enabled:
        stream_options = None  # WEBSOCKET_ENABLED=false
    if not (relay or rest or candles or metrics or stream_options):
        raise fail("every server is disabled: nothing to run")
    _run(
        ServeOptions(
            data_dir,
            host=host,
            relay_port=relay_port if relay else None,
            rest_port=rest_port if rest else None,
            max_connections=max_connections,
            max_message_bytes=max_message_bytes,
            hub=_hub_config(live_only, poll_ms, drop_bytes),
            market=_market_config(history_days, trade_poll_ms),
            candles=CandleOptions(
                host=host,
                port=candles_port,
                default_exchange=exchange,
                max_connections=max_connections,
                max_message_bytes=max_message_bytes,
            )
            if candles
            else None,
            metrics=MetricsOptions(
                host=host,
                port=metrics_port,
                default_exchange=exchange,
                max_connections=max_connections,
                max_message_bytes=max_message_bytes,
            )
            if metrics
            else None,
            stream=stream_options,
        ),
        "serve all",
    )
