"""The simulator over real loopback sockets, checked with a plain websockets client.

Frame shapes are checked against PROTOCOLS.md with plain ``json``; checksums with small
independent implementations written here from PROTOCOLS.md §B.3 / §C.3 (no mmdata.book
import), and again with mmdata's own sync engines.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Awaitable, Callable
from decimal import Decimal
from itertools import pairwise
from typing import Any

import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mmdata.book import ChecksumSync, SequenceSync, SyncState
from mmdata.exchanges import get
from mmdata.sim import SimServer
from mmdata.types import BookDiff, BookSnapshot


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def collect(
    ws: ClientConnection, seconds: float, until: Callable[[list[str]], bool] | None = None
) -> list[str]:
    frames: list[str] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            message = await asyncio.wait_for(ws.recv(), left)
        except (TimeoutError, ConnectionClosed):
            break
        assert isinstance(message, str)
        frames.append(message)
        if until is not None and until(frames):
            break
    return frames


async def rest_get(url: str) -> requests.Response:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: requests.get(url, timeout=10))


# -- independent checksum implementations (PROTOCOLS.md) ----------------------------------------


def kraken_reference_checksum(
    bids: dict[Decimal, Decimal], asks: dict[Decimal, Decimal], pp: int, qp: int
) -> int:
    def fmt(value: Decimal, prec: int) -> str:
        return f"{value:.{prec}f}".replace(".", "").lstrip("0")

    top_asks = sorted(asks.items())[:10]
    top_bids = sorted(bids.items(), reverse=True)[:10]
    text = "".join(fmt(p, pp) + fmt(q, qp) for p, q in top_asks) + "".join(
        fmt(p, pp) + fmt(q, qp) for p, q in top_bids
    )
    return zlib.crc32(text.encode()) & 0xFFFFFFFF


def bitfinex_reference_checksum(bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> int:
    parts: list[str] = []
    for i in range(25):
        if i < len(bids):
            parts += [bids[i][0], bids[i][1]]
        if i < len(asks):
            parts += [asks[i][0], asks[i][1]]
    crc = zlib.crc32(":".join(parts).encode()) & 0xFFFFFFFF
    return crc - (1 << 32) if crc & 0x80000000 else crc


# -- Binance ------------------------------------------------------------------------------------------


def test_binance_streams_shapes_continuity_and_sync() -> None:
    async def scenario() -> None:
        async with SimServer("binance", ["BTCUSDT"], rate=10, seed=5) as sim:
            url = sim.ws_url + "/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
            async with connect(url, compression=None) as ws:
                first = await collect(ws, 1.0)
                snap = await rest_get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=5000")
                rest = await collect(ws, 1.0)
        assert snap.status_code == 200
        assert "X-MBX-USED-WEIGHT-1M" in snap.headers
        body = json.loads(snap.text)
        assert set(body) == {"lastUpdateId", "bids", "asks"}

        frames = [json.loads(f) for f in first + rest]
        diffs = [f["data"] for f in frames if f["stream"] == "btcusdt@depth@100ms"]
        trades = [f["data"] for f in frames if f["stream"] == "btcusdt@trade"]
        assert diffs and trades
        for d in diffs:
            assert set(d) == {"e", "E", "s", "U", "u", "b", "a"} and d["e"] == "depthUpdate"
            for price, qty in d["b"] + d["a"]:
                assert isinstance(price, str) and len(price.split(".")[1]) == 8
                assert isinstance(qty, str) and len(qty.split(".")[1]) == 8
        for prev, cur in pairwise(diffs):  # independent U/u continuity
            assert cur["U"] == prev["u"] + 1
        for t in trades:
            assert set(t) == {"e", "E", "s", "t", "p", "q", "T", "m", "M"} and t["e"] == "trade"
        assert [t["t"] for t in trades] == list(range(trades[0]["t"], trades[0]["t"] + len(trades)))

        adapter = get("binance")
        engine = SequenceSync("BTCUSDT")
        for text in first:
            for ev in adapter.parse(text):
                if isinstance(ev, BookDiff):
                    engine.receive(ev)
        engine.receive(adapter.parse_snapshot("BTCUSDT", snap.text))
        for text in rest:
            for ev in adapter.parse(text):
                if isinstance(ev, BookDiff):
                    engine.receive(ev)
        assert engine.state is SyncState.SYNCED
        assert engine.stats.gaps == 0 and engine.stats.crossed_states == 0
        assert engine.stats.diffs_applied > 0

    run(scenario())


def test_binance_history_endpoints_consistent_with_stream() -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[Any]]:
        async with SimServer("binance", ["BTCUSDT"], rate=10, seed=2) as sim:
            url = sim.ws_url + "/stream?streams=btcusdt@trade"
            async with connect(url, compression=None) as ws:
                frames = await collect(ws, 1.5)
            streamed = [json.loads(f)["data"] for f in frames]
            first_id = streamed[0]["t"]
            agg = await rest_get(
                f"{sim.rest_url}/api/v3/aggTrades?symbol=BTCUSDT&fromId={first_id}&limit=1000"
            )
            month_ago = sim.market.start_ms - 30 * 86_400_000
            klines = await rest_get(
                f"{sim.rest_url}/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={month_ago}&limit=1000"
            )
        return streamed, json.loads(agg.text), json.loads(klines.text)

    streamed, agg, klines = run(scenario())
    by_id = {a["a"]: a for a in agg}
    for t in streamed:  # the REST history holds every streamed trade, same exact text
        a = by_id[t["t"]]
        assert (a["p"], a["q"], a["T"], a["m"]) == (t["p"], t["q"], t["T"], t["m"])
    assert len(klines) == 1000  # ≥ 30 days of synthetic past: a full page of 1m candles a month back
    assert all(len(row) == 12 for row in klines)
    assert klines[-1][0] - klines[0][0] < 86_400_000
    assert [row[0] for row in klines] == sorted(row[0] for row in klines)


# -- Kraken --------------------------------------------------------------------------------------------


def test_kraken_frames_acks_and_every_checksum() -> None:
    async def scenario() -> list[str]:
        sim = SimServer("kraken", ["BTC/USD", "ETH/USD"], rate=10, seed=4)
        async with sim, connect(sim.ws_url + "/v2", compression=None) as ws:
            for req_id, params in enumerate(
                [
                    {"channel": "instrument", "snapshot": True},
                    {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"], "depth": 10, "snapshot": True},
                    {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": False},
                ],
                start=1,
            ):
                await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": req_id}))
            await ws.send(json.dumps({"method": "ping", "req_id": 99}))
            return await collect(ws, 2.0)

    texts = run(scenario())
    frames = [json.loads(t, parse_float=Decimal) for t in texts]
    assert frames[0]["channel"] == "status" and frames[0]["data"][0]["system"] == "online"
    acks = [f for f in frames if f.get("method") == "subscribe"]
    book_acks = [a for a in acks if a["result"]["channel"] == "book"]
    assert sorted(a["result"]["symbol"] for a in book_acks) == ["BTC/USD", "ETH/USD"]  # one ack per symbol
    for ack in acks:
        assert ack["success"] is True and {"time_in", "time_out"} <= set(ack)
    assert any(f.get("method") == "pong" and f.get("req_id") == 99 for f in frames)

    precisions: dict[str, tuple[int, int]] = {}
    for f in frames:
        if f.get("channel") == "instrument":
            for pair in f["data"]["pairs"]:
                precisions[pair["symbol"]] = (pair["price_precision"], pair["qty_precision"])
    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    verified = 0
    adapter = get("kraken")
    engines = {s: ChecksumSync.kraken(s, 10) for s in ("BTC/USD", "ETH/USD")}
    for text, f in zip(texts, frames, strict=True):
        for ev in adapter.parse(text):
            symbol = getattr(ev, "symbol", None)
            if symbol in engines:
                engines[symbol].receive(ev)
        if f.get("channel") != "book":
            continue
        for item in f["data"]:
            sym = item["symbol"]
            if f["type"] == "snapshot":
                books[sym] = ({}, {})
            bids, asks = books[sym]
            for side, levels in ((bids, item["bids"]), (asks, item["asks"])):
                for level in levels:
                    assert isinstance(level["price"], Decimal | int) and isinstance(
                        level["qty"], Decimal | int
                    )
                    if level["qty"] == 0:
                        side.pop(Decimal(level["price"]), None)
                    else:
                        side[Decimal(level["price"])] = Decimal(level["qty"])
            for side, best_first in ((bids, True), (asks, False)):  # truncate to the subscribed depth
                for price in sorted(side, reverse=best_first)[10:]:
                    del side[price]
            pp, qp = precisions[sym]
            assert kraken_reference_checksum(bids, asks, pp, qp) == item["checksum"]
            verified += 1
    assert verified > 20
    for engine in engines.values():
        assert engine.stats.checksum_mismatches == 0
        assert engine.stats.checksums_verified > 5
        assert engine.state is SyncState.SYNCED


# -- Bitfinex -----------------------------------------------------------------------------------------


def test_bitfinex_conf_seq_and_every_checksum() -> None:
    async def scenario() -> list[str]:
        sim = SimServer("bitfinex", ["tBTCUSD"], rate=10, seed=6)
        async with sim, connect(sim.ws_url + "/ws/2", compression=None) as ws:
            await ws.send(json.dumps({"event": "conf", "flags": 131072 + 65536}))
            await ws.send(
                json.dumps(
                    {
                        "event": "subscribe",
                        "channel": "book",
                        "symbol": "tBTCUSD",
                        "prec": "P0",
                        "len": "25",
                    }
                )
            )
            await ws.send(json.dumps({"event": "subscribe", "channel": "trades", "symbol": "tBTCUSD"}))
            await ws.send(json.dumps({"event": "ping", "cid": 1234}))
            return await collect(ws, 2.0)

    texts = run(scenario())
    frames = [json.loads(t, parse_float=str, parse_int=str) for t in texts]
    events = [f for f in frames if isinstance(f, dict)]
    assert events[0]["event"] == "info" and str(events[0]["version"]) == "2"
    assert any(e["event"] == "conf" and e["status"] == "OK" for e in events)
    subscribed = {e["channel"]: int(e["chanId"]) for e in events if e["event"] == "subscribed"}
    assert set(subscribed) == {"book", "trades"}
    assert any(e["event"] == "pong" and str(e["cid"]) == "1234" for e in events)

    arrays = [f for f in frames if isinstance(f, list)]
    seqs = [int(a[-1]) for a in arrays]
    assert seqs == list(range(1, len(seqs) + 1))  # SEQ_ALL: global, contiguous, from 1

    book_id = subscribed["book"]
    bids: dict[str, tuple[float, str]] = {}
    asks: dict[str, tuple[float, str]] = {}
    verified = 0
    for a in arrays:
        if int(a[0]) != book_id:
            continue
        payload = a[1]
        if payload == "cs":
            top_b = [(p, amt) for p, (_, amt) in sorted(bids.items(), key=lambda kv: -kv[1][0])][:25]
            top_a = [(p, amt) for p, (_, amt) in sorted(asks.items(), key=lambda kv: kv[1][0])][:25]
            assert bitfinex_reference_checksum(top_b, top_a) == int(a[2])
            verified += 1
            continue
        if payload == "hb":
            continue
        levels = payload if payload and isinstance(payload[0], list) else [payload]
        for price, count, amount in levels:
            side = bids if not amount.startswith("-") else asks
            if count == "0":
                (bids if amount == "1" else asks).pop(price, None)
            else:
                side[price] = (float(price), amount)
    assert verified > 10

    adapter = get("bitfinex")
    engine = ChecksumSync.bitfinex("tBTCUSD", 25)
    for text in texts:
        for ev in adapter.parse(text):
            if isinstance(ev, BookDiff | BookSnapshot) or type(ev).__name__ in (
                "BookChecksum",
                "SequenceBreak",
            ):
                engine.receive(ev)
    assert engine.stats.checksum_mismatches == 0 and engine.stats.gaps == 0
    assert engine.stats.checksums_verified == verified
