"""End to end: recorder on the simulator → relay → a client rebuilding the book from
``snapshot`` + ``diff`` messages ends with the recorder's own book frames; and the same
through the command line (``mmdata serve relay`` + ``mmdata watch relay --json``)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import re
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from mmdata.cli import app
from mmdata.record import RecorderConfig
from mmdata.record.recorder import SimulateOptions, record_async
from mmdata.serve.app import ServeOptions, start_servers
from mmdata.serve.client import RelayBook
from mmdata.serve.hub import HubConfig
from tests.recorded_days import VENUES, only_day
from tests.serve_process import mmdata_process


def _frames(day: Path) -> tuple[int, dict[int, list[str]]]:
    """Book frames of a day: levels, and recv_seq → the price/qty text fields."""
    path = next(day.glob("orderbook_ws_depth_*.csv.gz"))
    rows = list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))
    header, body = rows[0], rows[1:]
    levels = sum(1 for h in header if h.startswith("bid_px_"))
    return levels, {int(r[0]): r[5:] for r in body}


def _as_row(bids: list[tuple[str, str]], asks: list[tuple[str, str]], levels: int) -> list[str]:
    row = [x for lv in bids for x in lv] + [""] * (2 * (levels - len(bids)))
    return row + [x for lv in asks for x in lv] + [""] * (2 * (levels - len(asks)))


@pytest.mark.parametrize(("exchange", "symbol", "fs"), VENUES, ids=[v[0] for v in VENUES])
def test_client_book_equals_recorder_frames(tmp_path: Path, exchange: str, symbol: str, fs: str) -> None:
    """Every book the client holds after a diff equals the recorder's frame at that recv_seq."""
    asyncio.run(_check_venue(tmp_path, exchange, symbol))


async def _check_venue(tmp: Path, exchange: str, symbol: str) -> None:
    data = tmp / "data"
    config = RecorderConfig(
        exchange, (symbol,), data_dir=data, log_dir=tmp / "logs", duration_s=6.0, flush_interval_s=0.5
    )
    stop = asyncio.Event()
    recording = asyncio.create_task(
        record_async(config, simulate=SimulateOptions(seed=7, rate=3.0), stop=stop)
    )
    fs = re.sub(r"[/\-: ]", "", symbol)
    live = data / exchange / fs / "live" / "live_depth_diffs.ndjson"
    for _ in range(200):
        if live.exists() and b'"kind":"snapshot"' in live.read_bytes():
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the recorder wrote no snapshot in 10 s")
    await asyncio.sleep(1.0)  # join mid-stream: the client starts from the relay's followed book
    servers = await start_servers(
        ServeOptions(data, relay_port=0, rest_port=None, hub=HubConfig(poll_s=0.005))
    )
    book = RelayBook()
    tops: dict[int, tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
    kinds: set[str] = set()
    try:
        assert servers.relay is not None
        url = f"ws://127.0.0.1:{servers.relay.port}/ws?exchange={exchange}&symbol={fs}"
        async with connect(url, max_size=None) as ws:
            while not recording.done():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                assert isinstance(raw, str), "every relay message is a text frame"
                msg = orjson.loads(raw)
                kinds.add(msg["type"])
                book.apply(msg)
                if msg["type"] == "diff" and book.state == "SYNCED":
                    tops[book.last_seq] = book.top(100)
    finally:
        await servers.close()
    await recording
    assert {"status", "snapshot", "diff", "trade"} <= kinds
    levels, frames = _frames(only_day(data, exchange, fs))
    compared = 0
    for seq, (bids, asks) in tops.items():
        if seq in frames:
            assert _as_row(bids[:levels], asks[:levels], levels) == frames[seq], f"recv_seq {seq}"
            compared += 1
    assert compared >= 20, f"only {compared} books compared"
    # The client's last book is the recorder's last frame before it stopped.
    last = max(s for s in frames if s <= max(tops))
    assert _as_row(*(x[:levels] for x in tops[max(s for s in tops if s <= last)]), levels) == frames[last]


def test_cli_serve_and_watch(recorded_data: Path, tmp_path: Path) -> None:
    """`mmdata serve relay` in a subprocess, `mmdata watch relay --json` reads the day from its start."""
    data = tmp_path / "data"
    shutil.copytree(recorded_data, data)
    args = ["serve", "relay", "--port", "0", "--data-dir", str(data)]
    with mmdata_process(args, r"relay listening on ws://127\.0\.0\.1:(\d+)/ws") as (proc, found):
        port = int(found[0].group(1))
        url = f"ws://127.0.0.1:{port}/ws?exchange=kraken&symbol=BTC/USD&from=start"
        result = CliRunner().invoke(app, ["watch", "relay", url, "--json", "-n", "40", "--duration", "20"])
        assert result.exit_code == 0, result.output
        messages = [orjson.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
        assert len(messages) == 40
        assert messages[0]["type"] == "status" and messages[0]["data"]["status"] == "subscribed"
        events = [m["data"]["event"] for m in messages if m["type"] == "event"]
        assert events[0] == "run_start"
        assert any(m["type"] == "snapshot" and m["data"]["tag"] == "initial" for m in messages)
        assert {m["symbol"] for m in messages} == {"BTC/USD"}
        # The rich view of a finished recording: subscribed, then no book because it stopped.
        view = CliRunner().invoke(
            app, ["watch", "relay", url.replace("from=start", "from=tail"), "-n", "2", "--duration", "20"]
        )
        assert view.exit_code == 0, view.output
        assert "status no_book: the recorder stopped" in " ".join(view.output.split())
        assert "2 messages" in view.output
        bad = CliRunner().invoke(
            app, ["watch", "relay", f"ws://127.0.0.1:{port}/ws?exchange=nope&symbol=X", "-n", "1"]
        )
        assert bad.exit_code == 2
        assert "HTTP 400" in bad.output and "unknown exchange" in bad.output
    assert proc.returncode == 0
