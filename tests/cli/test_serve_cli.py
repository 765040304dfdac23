"""`mmdata serve all` as a process (every server, /health on each) and the CLI's refusals."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from mmdata.cli import app
from tests.serve_process import mmdata_process

_ALL_PORTS_0 = [f"--{name}-port" for name in ("relay", "rest", "candles", "metrics", "stream")]


def _http(url: str) -> str:
    return url.replace("ws://", "http://").removesuffix("/ws").removesuffix("/metrics")


def _metrics_url(base: str) -> str:
    return base + "?exchange=binance&symbols=BTCUSDT&interval=1m&window=1h&metric=volatility"


def test_serve_all_runs_every_server(recorded_data: Path) -> None:
    args = ["serve", "all", "--data-dir", str(recorded_data)]
    for flag in _ALL_PORTS_0:
        args += [flag, "0"]
    pattern = r"(relay|rest|candles|metrics|stream) listening on (\S+)"
    with mmdata_process(args, pattern, count=5) as (proc, found):
        urls = {m.group(1): m.group(2) for m in found}
        assert set(urls) == {"relay", "rest", "candles", "metrics", "stream"}
        rest = urls["rest"]
        for name in ("rest", "relay", "candles", "metrics"):
            with urllib.request.urlopen(f"{_http(urls[name])}/health", timeout=10) as r:
                assert r.headers["Content-Type"] == "application/json"
                body = json.loads(r.read())
                assert body.get("server", name) == name and body.get("ok", True)
        with urllib.request.urlopen(f"{_http(urls['stream'])}/websocket/status", timeout=10) as r:
            assert json.loads(r.read())["enabled"] is True
        # The terminal clients speak each server's protocol (--json: one message per line).
        runner = CliRunner()
        stream_url = urls["stream"] + "?client_id=cli"
        watched = {
            "stream": [
                "watch",
                "stream",
                stream_url,
                "--channel",
                "price_updates",
                "-s",
                "BTCUSDT",
                "-n",
                "3",
            ],
            "metrics": ["watch", "metrics", _metrics_url(urls["metrics"]), "-n", "2"],
            "candles": ["watch", "candles", urls["candles"], "-e", "kraken", "-s", "BTC/USD", "-n", "1"],
        }
        kinds = {}
        for name, cmd in watched.items():
            result = runner.invoke(app, [*cmd, "--json", "--duration", "20"])
            assert result.exit_code == 0, result.output
            kinds[name] = [
                json.loads(line)["type"] for line in result.stdout.splitlines() if line.startswith("{")
            ]
        assert kinds["stream"] == ["connected", "subscribed", "price_update"]
        assert kinds["metrics"] == ["status", "metric"]
        assert kinds["candles"] == ["initial"]
        with urllib.request.urlopen(
            f"{rest}/snapshot?exchange=kraken&symbol=BTC/USD&levels=2", timeout=20
        ) as r:
            book = json.loads(r.read())
        # The recording has ended: the last proven book, said to be from a stopped recorder.
        assert book["state"] == "STOPPED" and book["symbol"] == "BTC/USD"
        assert len(book["bids"]) == 2 and len(book["asks"]) == 2
        assert all(isinstance(x, str) for lv in book["bids"] + book["asks"] for x in lv)
    assert proc.returncode == 0


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["serve", "relay", "--data-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert "does not exist" in missing.output
    off = ["--no-relay", "--no-rest", "--no-candles", "--no-metrics", "--no-stream"]
    none = runner.invoke(app, ["serve", "all", *off, "--data-dir", str(tmp_path)])
    assert none.exit_code == 2
    assert "nothing to run" in none.output
    # WEBSOCKET_ENABLED=false: serve stream refuses; serve all leaves the stream server out.
    disabled = runner.invoke(
        app, ["serve", "stream", "--data-dir", str(tmp_path)], env={"WEBSOCKET_ENABLED": "false"}
    )
    assert disabled.exit_code == 2
    assert "WEBSOCKET_ENABLED" in disabled.output
    only_stream = [*off[:-1], "--data-dir", str(tmp_path)]
    skipped = runner.invoke(app, ["serve", "all", *only_stream], env={"WEBSOCKET_ENABLED": "false"})
    assert skipped.exit_code == 2 and "nothing to run" in skipped.output
    bad_env = runner.invoke(
        app, ["serve", "stream", "--data-dir", str(tmp_path)], env={"WEBSOCKET_ENABLED": "maybe"}
    )
    assert bad_env.exit_code == 2
    helptext = runner.invoke(app, ["serve", "relay", "--help"])
    assert helptext.exit_code == 0
    assert "from=tail|start" in helptext.output and "--max-connections" in helptext.output


def test_relay_workers_share_one_port(recorded_data: Path) -> None:
    """`serve relay --workers 2`: one port, every client served (from=start replays the day)."""
    import asyncio

    import orjson
    from websockets.asyncio.client import connect

    args = ["serve", "relay", "--workers", "2", "--port", "0", "--data-dir", str(recorded_data)]
    pattern = r"^relay listening on ws://127\.0\.0\.1:(\d+)/ws \(2 worker processes\)"
    with mmdata_process(args, pattern) as (proc, found):
        port = int(found[0].group(1))

        async def client() -> list[str]:
            url = f"ws://127.0.0.1:{port}/ws?exchange=bitfinex&symbol=tBTCUSD&from=start"
            async with connect(url, max_size=None, open_timeout=10) as ws:
                kinds = []
                while len(kinds) < 5:
                    kinds.append(orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
                return kinds

        async def many() -> list[list[str]]:
            return await asyncio.gather(*(client() for _ in range(8)))

        for kinds in asyncio.run(many()):
            assert kinds[0] == "status" and "event" in kinds
    assert proc.returncode == 0
