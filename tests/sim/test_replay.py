"""Capture replay: a plain websockets client sees the capture's frames, identical, and validates the same."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedOK

from mmdata.sim import ReplayServer
from mmdata.store import CaptureWriter, open_capture
from mmdata.validate import validate_capture
from tests.conftest import BINANCE_4, BINANCE_BTCUSDT, BITFINEX_7, BITFINEX_VECTOR, KRAKEN_BOOK10

ALL = [BINANCE_4, BINANCE_BTCUSDT, KRAKEN_BOOK10, BITFINEX_7, BITFINEX_VECTOR]


async def _receive_all(url: str) -> tuple[list[str], int | None]:
    frames: list[str] = []
    async with connect(url, max_size=None, compression=None) as ws:
        try:
            while True:
                message = await ws.recv()
                assert isinstance(message, str)
                frames.append(message)
        except ConnectionClosedOK:
            pass
        return frames, ws.close_code


def _replay_through_server(path: Path, out: Path) -> list[str]:
    """Replay ``path``; write what a client received (and REST answers it fetched) to ``out``."""
    with open_capture(path) as reader:
        header = reader.header
        records = list(reader)
    ws_path = next((r.url for r in records if r.kind == "ws_open"), "/")

    async def run() -> list[str]:
        async with ReplayServer(path, speed=None) as server:
            parts = urlsplit(ws_path)
            target = server.ws_url + parts.path + (f"?{parts.query}" if parts.query else "")
            frames, code = await _receive_all(target)
            assert code == 1000
            loop = asyncio.get_running_loop()
            with CaptureWriter(out, header.exchange, list(header.symbols), **header.extra) as writer:
                it = iter(frames)
                for rec in records:
                    if rec.kind == "ws_recv":
                        writer.write("ws_recv", rec.url, next(it), t=rec.t)
                    elif rec.kind == "rest":
                        parts = urlsplit(rec.url)
                        url = f"{server.rest_url}{parts.path}?{parts.query}"
                        answer = await loop.run_in_executor(
                            None, lambda url=url: requests.get(url, timeout=10)
                        )
                        writer.write("rest", rec.url, answer.text, status=answer.status_code, t=rec.t)
                    else:
                        writer.write(rec.kind, rec.url, rec.data, t=rec.t)
            return frames

    return asyncio.run(run())


@pytest.mark.parametrize("name", ALL)
def test_replay_frames_identical_and_validate_same(real_capture, tmp_path: Path, name: str) -> None:
    path = real_capture(name)
    out = tmp_path / "received.capture.jsonl.gz"
    frames = _replay_through_server(path, out)
    with open_capture(path) as reader:
        recorded = [r.data for r in reader if r.kind == "ws_recv"]
    assert frames == recorded
    original = validate_capture(path)
    received = validate_capture(out)
    assert received.ok == original.ok
    assert {s: r.counts() for s, r in received.symbols.items()} == {
        s: r.counts() for s, r in original.symbols.items()
    }


def test_rest_latest_at_or_before_position_else_first(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    url = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5"
    with CaptureWriter(path, "binance", ["BTCUSDT"]) as w:
        w.write("ws_open", "wss://x/stream?streams=btcusdt@depth@100ms", t=0)
        w.write("rest", url, '{"n":1}', status=200, t=5)
        w.write("ws_recv", "wss://x", "frame-a", t=10)
        w.write("rest", url, '{"n":2}', status=200, t=15)
        w.write("ws_recv", "wss://x", "frame-b", t=20)
        w.write("rest", url, '{"n":3}', status=200, t=25)

    server = ReplayServer(path)
    server.position_t = 0
    assert (
        server._rest("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "5"}).body == '{"n":1}'
    )  # none before: first
    server.position_t = 10
    assert server._rest("/api/v3/depth", {"limit": "5", "symbol": "BTCUSDT"}).body == '{"n":1}'
    server.position_t = 20
    assert server._rest("/api/v3/depth", {"symbol": "BTCUSDT", "limit": "5"}).body == '{"n":2}'
    assert server._rest("/api/v3/depth", {"symbol": "ETHUSDT", "limit": "5"}).status == 404


def test_replay_paced_by_speed(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    with CaptureWriter(path, "kraken", ["BTC/USD"]) as w:
        w.write("ws_open", "wss://ws.kraken.com/v2", t=0)
        for i in range(5):
            w.write(
                "ws_recv", "wss://ws.kraken.com/v2", f'{{"channel":"heartbeat","i":{i}}}', t=i * 100_000_000
            )

    async def run() -> float:
        async with ReplayServer(path, speed=2.0) as server:
            loop = asyncio.get_running_loop()
            started = loop.time()
            frames, _ = await _receive_all(server.ws_url + "/v2")
            assert len(frames) == 5
            return loop.time() - started

    elapsed = asyncio.run(run())
    assert 0.15 <= elapsed < 2.0  # 400 ms of capture at speed 2 ≈ 200 ms
