"""Each simulator fault, seen by a plain websockets / requests client as the real venue would show it."""

from __future__ import annotations

import asyncio
import json
from itertools import pairwise
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from mmdata.book import ChecksumSync
from mmdata.exchanges import get
from mmdata.exchanges.base import MAX_FRAME_CHARS
from mmdata.sim import FaultPlan, SimServer
from tests.sim.test_server_fidelity import collect, rest_get, run

BINANCE_STREAM = "/stream?streams=btcusdt@depth@100ms"


def _binance_diffs(plan: FaultPlan, seconds: float = 2.0) -> list[dict[str, Any]]:
    async def scenario() -> list[str]:
        sim = SimServer("binance", ["BTCUSDT"], rate=20, seed=1, faults=plan)
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None) as ws:
            return await collect(ws, seconds)

    return [json.loads(t)["data"] for t in run(scenario())]


def test_dropped_diffs_leave_update_id_gaps() -> None:
    diffs = _binance_diffs(FaultPlan(seed=1, drop_diffs=0.3))
    assert any(b["U"] > a["u"] + 1 for a, b in pairwise(diffs))


def test_duplicated_diffs_arrive_twice() -> None:
    diffs = _binance_diffs(FaultPlan(seed=1, duplicate_diffs=0.3))
    assert any(a == b for a, b in pairwise(diffs))


def test_reordered_diffs_arrive_late() -> None:
    diffs = _binance_diffs(FaultPlan(seed=1, reorder_diffs=0.3))
    assert any(b["U"] < a["U"] for a, b in pairwise(diffs))


def test_malformed_frames() -> None:
    async def scenario() -> list[str]:
        sim = SimServer("binance", ["BTCUSDT"], rate=20, faults=FaultPlan(malformed_every=5))
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None) as ws:
            return await collect(ws, 1.5)

    frames = run(scenario())
    bad = 0
    for text in frames:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            bad += 1
    assert bad >= 2


def test_oversized_frames() -> None:
    async def scenario() -> list[str]:
        sim = SimServer("binance", ["BTCUSDT"], rate=20, faults=FaultPlan(oversized_every=10))
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None, max_size=None) as ws:
            return await collect(ws, 2.0, until=lambda fs: any(len(f) > MAX_FRAME_CHARS for f in fs))

    assert any(len(f) > MAX_FRAME_CHARS for f in run(scenario()))


def test_abrupt_disconnect() -> None:
    async def scenario() -> tuple[int, int | None]:
        sim = SimServer("binance", ["BTCUSDT"], rate=20, faults=FaultPlan(disconnect_every_s=0.5))
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None) as ws:
            n = 0
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
                    n += 1
            return n, ws.close_code

    received, code = run(scenario())
    assert received > 0
    assert code in (None, 1006)  # no closing handshake: TCP dropped


def test_stall_then_resume() -> None:
    async def scenario() -> list[float]:
        plan = FaultPlan(stall_every_s=1.0, stall_s=1.0)
        sim = SimServer("binance", ["BTCUSDT"], rate=20, faults=plan)
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None) as ws:
            loop = asyncio.get_running_loop()
            stamps: list[float] = []
            end = loop.time() + 2.6
            while loop.time() < end:
                try:
                    await asyncio.wait_for(ws.recv(), max(0.01, end - loop.time()))
                except TimeoutError:
                    break
                stamps.append(loop.time())
            return stamps

    stamps = run(scenario())
    gaps = [b - a for a, b in pairwise(stamps)]
    assert max(gaps) >= 0.9  # nothing for ~1 s (from 1.0 s to 2.0 s) …
    assert stamps[-1] - stamps[0] > 1.8  # … then data again


@pytest.mark.parametrize(
    ("plan", "status"),
    [
        (FaultPlan(rest_429_every=1, retry_after_s=7), 429),
        (FaultPlan(rest_418_every=1, retry_after_s=60), 418),
        (FaultPlan(rest_5xx_every=1), 503),
    ],
)
def test_rest_faults(plan: FaultPlan, status: int) -> None:
    async def scenario() -> Any:
        async with SimServer("binance", ["BTCUSDT"], faults=plan) as sim:
            return await rest_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=10")

    resp = run(scenario())
    assert resp.status_code == status
    assert resp.headers["Retry-After"] == str(plan.retry_after_s)
    json.loads(resp.text)


def test_binance_server_shutdown_then_close() -> None:
    async def scenario() -> tuple[list[str], int | None]:
        sim = SimServer("binance", ["BTCUSDT"], rate=20, faults=FaultPlan(venue_restart_after_s=0.5))
        async with sim, connect(sim.ws_url + BINANCE_STREAM, compression=None) as ws:
            frames: list[str] = []
            with pytest.raises(ConnectionClosed):
                while True:
                    frames.append(str(await asyncio.wait_for(ws.recv(), 5)))
            return frames, ws.close_code

    frames, _ = run(scenario())
    events = [json.loads(f) for f in frames]
    shutdown = [
        e
        for e in events
        if e.get("stream") == "!serverShutdown" or e.get("data", {}).get("e") == "serverShutdown"
    ]
    assert len(shutdown) == 1
    assert get("binance").parse(frames[events.index(shutdown[0])])[0].kind == "reconnect"  # type: ignore[union-attr]


def _bitfinex_frames(plan: FaultPlan, seconds: float) -> tuple[list[str], int | None]:
    async def scenario() -> tuple[list[str], int | None]:
        sim = SimServer("bitfinex", ["tBTCUSD"], rate=20, faults=plan)
        async with sim, connect(sim.ws_url + "/ws/2", compression=None) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": 131072}))
            await ws.send(
                json.dumps({"event": "subscribe", "channel": "book", "symbol": "tBTCUSD", "len": "25"})
            )
            frames = await collect(ws, seconds)
            return frames, ws.close_code

    return run(scenario())


def test_bitfinex_restart_notice_20051_then_close() -> None:
    frames, code = _bitfinex_frames(FaultPlan(venue_restart_after_s=0.5), 3.0)
    codes = [json.loads(f).get("code") for f in frames if f.startswith("{")]
    assert 20051 in codes
    assert code is not None  # the venue closed the connection afterwards


def test_bitfinex_maintenance_20060_then_20061() -> None:
    frames, _ = _bitfinex_frames(FaultPlan(maintenance_after_s=0.3, maintenance_s=0.6), 1.5)
    codes = [json.loads(f).get("code") for f in frames if f.startswith("{")]
    assert codes.index(20060) < codes.index(20061)


def test_kraken_maintenance_status_then_online() -> None:
    async def scenario() -> list[str]:
        plan = FaultPlan(maintenance_after_s=0.3, maintenance_s=0.5)
        sim = SimServer("kraken", ["BTC/USD"], rate=20, faults=plan)
        async with sim, connect(sim.ws_url + "/v2", compression=None) as ws:
            return await collect(ws, 1.5)

    systems = [json.loads(f)["data"][0]["system"] for f in run(scenario()) if '"channel":"status"' in f]
    assert systems[:3] == ["online", "maintenance", "online"]


def test_kraken_corrupted_checksum_detected() -> None:
    async def scenario() -> list[str]:
        sim = SimServer("kraken", ["BTC/USD"], rate=20, faults=FaultPlan(corrupt_checksum_every=10))
        async with sim, connect(sim.ws_url + "/v2", compression=None) as ws:
            await ws.send(json.dumps({"method": "subscribe", "params": {"channel": "instrument"}}))
            params = {"channel": "book", "symbol": ["BTC/USD"], "depth": 10}
            await ws.send(json.dumps({"method": "subscribe", "params": params}))
            return await collect(ws, 2.0)

    adapter = get("kraken")
    engine = ChecksumSync.kraken("BTC/USD", 10)
    for text in run(scenario()):
        for ev in adapter.parse(text):
            if getattr(ev, "symbol", None) == "BTC/USD":
                engine.receive(ev)
    assert engine.stats.checksum_mismatches >= 1


def test_bitfinex_corrupted_checksum_detected() -> None:
    frames, _ = _bitfinex_frames(FaultPlan(corrupt_checksum_every=10), 2.0)
    adapter = get("bitfinex")
    engine = ChecksumSync.bitfinex("tBTCUSD", 25)
    for text in frames:
        for ev in adapter.parse(text):
            if getattr(ev, "symbol", None) == "tBTCUSD":
                engine.receive(ev)
    assert engine.stats.checksum_mismatches >= 1
