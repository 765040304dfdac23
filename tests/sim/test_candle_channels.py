"""The simulator's WebSocket candle channels, checked with a plain websockets client.

The oracle is the simulator's own REST candles (``/api/v3/klines``, ``/0/public/OHLC``,
``/v2/candles/…/hist``): a candle the socket has finished must equal the REST candle of
that interval, field for field. Frames are read with the standard ``json`` module (numbers
as their text), not with mmdata's adapters. The server's clock runs 60× fast, so a
1-minute candle closes every real second.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mmdata.sim import FaultPlan, SimServer

SPEED = 60.0


def fast_clock(speed: float = SPEED) -> Callable[[], float]:
    start = time.time()
    return lambda: start + (time.time() - start) * speed


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def collect(ws: ClientConnection, seconds: float) -> list[str]:
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
    return frames


async def rest(url: str) -> str:
    response = await asyncio.to_thread(requests.get, url, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def texts(doc: str) -> Any:
    """JSON with every number kept as its text."""
    return json.loads(doc, parse_float=str, parse_int=str)


# -- Binance -------------------------------------------------------------------------------------------
KLINE_KEYS = {"t", "T", "s", "i", "f", "L", "o", "c", "h", "l", "v", "n", "x", "q", "V", "Q", "B"}


def test_binance_klines_equal_rest_and_close_once() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[tuple[str, int], list[Any]]]:
        sim = SimServer("binance", ["BTCUSDT"], seed=3, clock=fast_clock(), past_days=1)
        async with sim:
            url = sim.ws_url + "/stream?streams=btcusdt@kline_1m/btcusdt@kline_5m"
            async with connect(url, compression=None) as ws:
                frames = [json.loads(f) for f in await collect(ws, 3.5)]
            rows = {}
            for f in frames:
                k = f["data"]["k"]
                if k["x"]:
                    body = await rest(
                        f"{sim.rest_url}/api/v3/klines?symbol=BTCUSDT&interval={k['i']}&startTime={k['t']}&limit=1"
                    )
                    rows[(k["i"], k["t"])] = json.loads(body)[0]
        return frames, rows

    frames, rows = run(scenario())
    assert {f["stream"] for f in frames} == {"btcusdt@kline_1m", "btcusdt@kline_5m"}
    closes: dict[tuple[str, int], int] = defaultdict(int)
    after_close: set[tuple[str, int]] = set()
    for f in frames:
        data, k = f["data"], f["data"]["k"]
        assert data["e"] == "kline" and data["s"] == "BTCUSDT" and set(k) == KLINE_KEYS
        assert f["stream"] == f"btcusdt@kline_{k['i']}"
        key = (k["i"], k["t"])
        assert key not in after_close, "an update after the interval's final kline"
        if k["x"]:
            closes[key] += 1
            after_close.add(key)
            # The final kline is REST's kline of that interval, text for text.
            row = rows[key]
            assert [
                k["t"],
                k["o"],
                k["h"],
                k["l"],
                k["c"],
                k["v"],
                k["T"],
                k["q"],
                k["n"],
                k["V"],
                k["Q"],
            ] == row[:11]
    minutes = sorted(t for i, t in closes if i == "1m")
    assert len(minutes) >= 2 and set(closes.values()) == {1}  # exactly once each
    assert minutes == list(range(minutes[0], minutes[-1] + 60_000, 60_000))  # no interval skipped


def test_binance_kline_raw_stream_and_live_subscribe() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        sim = SimServer("binance", ["ETHUSDT"], seed=4, clock=fast_clock(), past_days=1)
        async with sim:
            async with connect(sim.ws_url + "/ws/ethusdt@kline_1m", compression=None) as ws:
                raw = await collect(ws, 1.0)
            async with connect(sim.ws_url + "/stream", compression=None) as ws:
                await ws.send('{"method":"SUBSCRIBE","params":["ethusdt@kline_15m"],"id":1}')
                live = await collect(ws, 1.0)
        return raw, live

    raw, live = run(scenario())
    assert raw and all(json.loads(f)["e"] == "kline" for f in raw)  # bare payloads on /ws
    assert live[0] == '{"result":null,"id":1}'
    assert {json.loads(f)["stream"] for f in live[1:]} == {"ethusdt@kline_15m"}


# -- Kraken --------------------------------------------------------------------------------------------
def _ohlc(sim: SimServer, minutes: int) -> str:
    return f"{sim.rest_url}/0/public/OHLC?pair=BTCUSD&interval={minutes}"


def test_kraken_ohlc_snapshot_updates_equal_rest() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], dict[int, str]]:
        sim = SimServer("kraken", ["BTC/USD"], seed=5, clock=fast_clock(), past_days=1)
        async with sim, connect(sim.ws_url + "/v2", compression=None) as ws:
            for minutes in (1, 5):
                params = {"channel": "ohlc", "symbol": ["BTC/USD"], "interval": minutes}
                await ws.send(json.dumps({"method": "subscribe", "params": params, "req_id": 4}))
            frames = [texts(f) for f in await collect(ws, 3.5)]
            return frames, {m: await rest(_ohlc(sim, m)) for m in (1, 5)}

    frames, bodies = run(scenario())
    acks = [f for f in frames if f.get("method") == "subscribe"]
    assert [(a["success"], a["result"]["interval"]) for a in acks] == [(True, "1"), (True, "5")]
    ohlc = [f for f in frames if f.get("channel") == "ohlc"]
    snapshots = [f for f in ohlc if f["type"] == "snapshot"]
    assert len(snapshots) == 2
    for snap in snapshots:
        begins = [c["interval_begin"] for c in snap["data"]]
        assert begins == sorted(begins) and 1 <= len(begins) <= 10  # oldest first
    # Per interval and begin, the last state seen; a later begin means it is final.
    last: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for f in ohlc:
        for c in f["data"]:
            assert set(c) == {"symbol", "open", "high", "low", "close", "trades", "volume", "vwap",
                              "interval_begin", "interval", "timestamp"}  # fmt: skip
            assert c["interval_begin"].endswith(":00.000000000Z")
            assert not c["close"].endswith("0") or "." not in c["close"]  # JSON floats: no trailing zeros
            last[c["interval"]][c["interval_begin"]] = c
    for minutes in ("1", "5"):
        rows = {
            time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(row[0])): row
            for row in json.loads(bodies[int(minutes)])["result"]["BTCUSD"]
        }
        final = sorted(last[minutes])[:-1]
        assert final or minutes == "5"
        for begin in final:
            c, row = last[minutes][begin], rows[begin]
            # REST writes fixed decimals ("60000.0"), the socket JSON floats (60000): same values.
            wire = [c["open"], c["high"], c["low"], c["close"], c["vwap"], c["volume"]]
            assert [Decimal(x) for x in wire] == [Decimal(x) for x in row[1:7]]
            assert int(c["trades"]) == row[7]
    assert len(last["1"]) >= 3


def test_kraken_ohlc_refusals_and_unsubscribe() -> None:
    async def scenario() -> list[dict[str, Any]]:
        sim = SimServer("kraken", ["BTC/USD"], seed=6, clock=fast_clock(), past_days=1)
        async with sim, connect(sim.ws_url + "/v2", compression=None) as ws:
            send = ws.send
            await send('{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":2}}')
            await send('{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/XYZ"]}}')
            await send(
                '{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"snapshot":false}}'
            )
            await send('{"method":"subscribe","params":{"channel":"ohlc","symbol":["BTC/USD"]}}')
            first = await collect(ws, 1.0)
            await send(
                '{"method":"unsubscribe","params":{"channel":"ohlc","symbol":["BTC/USD"],"interval":1}}'
            )
            await asyncio.sleep(0.3)
            then = await collect(ws, 1.0)
        return [json.loads(f) for f in [*first, "{}", *then]]

    frames = run(scenario())
    split = frames.index({})
    answers = [f for f in frames[:split] if f.get("method") == "subscribe"]
    assert [a["success"] for a in answers] == [False, False, True, False]
    assert [a.get("error") for a in answers if not a["success"]] == [
        "Subscription ohlc interval not supported",
        "Currency pair not supported BTC/XYZ",
        "Already subscribed",
    ]
    ohlc_before = [f for f in frames[:split] if f.get("channel") == "ohlc"]
    assert ohlc_before and all(f["type"] == "update" for f in ohlc_before)  # snapshot: false
    after = frames[split + 1 :]
    unsub = [f for f in after if f.get("method") == "unsubscribe"]
    assert unsub and unsub[0]["success"] is True
    assert not [f for f in after[after.index(unsub[0]) :] if f.get("channel") == "ohlc"]


# -- Bitfinex ------------------------------------------------------------------------------------------
def test_bitfinex_candles_snapshot_updates_equal_rest() -> None:
    async def scenario() -> tuple[list[Any], str]:
        sim = SimServer("bitfinex", ["tBTCUSD"], seed=7, clock=fast_clock(), past_days=1)
        async with sim, connect(sim.ws_url + "/ws/2", compression=None) as ws:
            await ws.send('{"event":"conf","flags":65536}')
            await ws.send('{"event":"subscribe","channel":"candles","key":"trade:1m:tBTCUSD"}')
            frames = [texts(f) for f in await collect(ws, 3.5)]
            body = await rest(f"{sim.rest_url}/v2/candles/trade:1m:tBTCUSD/hist?limit=300")
        return frames, body

    frames, body = run(scenario())
    [subscribed] = [f for f in frames if isinstance(f, dict) and f.get("event") == "subscribed"]
    assert subscribed == {"event": "subscribed", "channel": "candles", "chanId": subscribed["chanId"],
                          "key": "trade:1m:tBTCUSD"}  # fmt: skip
    chan = subscribed["chanId"]
    data = [f for f in frames if isinstance(f, list) and f[0] == chan and f[1] != "hb"]
    snapshot, updates = data[0][1], data[1:]
    assert len(snapshot) == 240
    mts = [int(row[0]) for row in snapshot]
    assert mts == sorted(mts, reverse=True)  # newest first, like the venue
    seqs = [int(f[-1]) for f in frames if isinstance(f, list)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # SEQ_ALL covers candle frames too
    rest_rows = {row[0]: row for row in texts(body)}
    # Every snapshot candle but the running one, text for text: [MTS, OPEN, CLOSE, HIGH, LOW, VOLUME].
    for row in snapshot[1:]:
        assert row == rest_rows[row[0]]
    last: dict[str, list[str]] = {}
    for f in updates:
        assert len(f) == 3 and len(f[1]) == 6
        last[f[1][0]] = f[1]
    final = sorted(last, key=int)[:-1]
    assert len(final) >= 2
    for key in final:
        assert last[key] == rest_rows[key]


def test_bitfinex_candles_errors_and_unsubscribe() -> None:
    async def scenario() -> list[Any]:
        sim = SimServer("bitfinex", ["tBTCUSD"], seed=8, clock=fast_clock(), past_days=1)
        async with sim, connect(sim.ws_url + "/ws/2", compression=None) as ws:
            for key in ("trade:1m:tBTCUSD", "trade:1m:tBTCUSD", "trade:2m:tBTCUSD", "trade:1m:tNOPE"):
                await ws.send(json.dumps({"event": "subscribe", "channel": "candles", "key": key}))
            frames = [json.loads(f) for f in await collect(ws, 0.5)]
            chan = next(f["chanId"] for f in frames if isinstance(f, dict) and f.get("event") == "subscribed")
            await ws.send(json.dumps({"event": "unsubscribe", "chanId": chan}))
            later = [json.loads(f) for f in await collect(ws, 1.0)]
        return [frames, chan, later]

    frames, chan, later = run(scenario())
    errors = [f for f in frames if isinstance(f, dict) and f.get("event") == "error"]
    assert [(e["code"], e["key"]) for e in errors] == [
        (10301, "trade:1m:tBTCUSD"),
        (10300, "trade:2m:tBTCUSD"),
        (10300, "trade:1m:tNOPE"),
    ]
    done = later.index({"event": "unsubscribed", "status": "OK", "chanId": chan})
    assert not [f for f in later[done:] if isinstance(f, list) and f[0] == chan]


# -- faults apply to candle connections ---------------------------------------------------------------
def test_disconnect_fault_drops_candle_connections() -> None:
    async def scenario() -> tuple[list[str], float]:
        sim = SimServer(
            "binance", ["BTCUSDT"], clock=fast_clock(), faults=FaultPlan(disconnect_every_s=0.5), past_days=1
        )
        async with sim, connect(sim.ws_url + "/stream?streams=btcusdt@kline_1m", compression=None) as ws:
            loop = asyncio.get_running_loop()
            started = loop.time()
            frames = await collect(ws, 3.0)
            return frames, loop.time() - started

    frames, lasted = run(scenario())
    assert frames and lasted < 1.5  # cut off after 0.5 s, not after the 3 s of collecting
