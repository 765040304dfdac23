"""Simulator throughput: messages/s to 1 and to 10 loopback clients, server CPU per message.

The server runs in its own process (``python -m mmdata sim --json``); clients run in a
second process and count what they receive for a fixed time. Server CPU comes from
``/proc/<pid>/stat``. Baseline, measured in the same run: a bare ``websockets`` server in
its own process that sends one pre-encoded frame in a loop to the same number of
clients — the most a Python websockets server can push here; the simulator's rate is
reported as a ratio to it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from typing import Any

from websockets.asyncio.client import connect

SUBSCRIBE: dict[str, Any] = {
    "kraken": lambda symbols: [
        json.dumps({"method": "subscribe", "params": {"channel": "book", "symbol": symbols, "depth": 10}}),
        json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": symbols}}),
    ],
    "bitfinex": lambda symbols: (
        [json.dumps({"event": "conf", "flags": 131072 + 65536})]
        + [json.dumps({"event": "subscribe", "channel": "book", "symbol": s, "len": "25"}) for s in symbols]
        + [json.dumps({"event": "subscribe", "channel": "trades", "symbol": s}) for s in symbols]
    ),
}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_process(url: str, messages: list[str], n_clients: int, seconds: float, out: Any) -> None:
    async def one(counts: list[int], i: int) -> None:
        async with connect(url, compression=None, max_size=None) as ws:
            for text in messages:
                await ws.send(text)
            await asyncio.sleep(0.5)  # settle: snapshots and acks are not counted
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < seconds:
                try:
                    await asyncio.wait_for(ws.recv(), 1.0)
                    n += 1
                except TimeoutError:
                    pass
            counts[i] = n

    async def run() -> None:
        counts = [0] * n_clients
        await asyncio.gather(*(one(counts, i) for i in range(n_clients)))
        out.put(counts)

    asyncio.run(run())


BARE_SERVER = r"""
import asyncio, sys, json
from websockets.asyncio.server import serve
FRAME = sys.argv[1]
async def handler(ws):
    try:
        while True:
            for _ in range(100):
                await ws.send(FRAME)
            await asyncio.sleep(0)
    except Exception:
        pass
async def main():
    async with serve(handler, "127.0.0.1", 0, compression=None) as s:
        port = s.sockets[0].getsockname()[1]
        print(json.dumps({"ws_url": f"ws://127.0.0.1:{port}"}), flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def _measure(
    cmd: list[str], path: str, messages: list[str], n_clients: int, seconds: float
) -> tuple[float, float]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        url = info["ws_url"] + path
        queue: Any = mp.Queue()
        client = mp.Process(target=_client_process, args=(url, messages, n_clients, seconds, queue))
        cpu0 = _cpu_seconds(proc.pid)
        client.start()
        counts = queue.get(timeout=seconds + 60)
        client.join()
        cpu = _cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait()
    total = sum(counts)
    return total / seconds, cpu / max(total, 1) * 1e6


def main(quick: bool = False) -> None:
    """Print the table (called from benchmarks/run.py)."""
    seconds = 3.0 if quick else 8.0
    venues = {
        "binance": (
            "/stream?streams=" + "/".join(f"{s}@depth@100ms/{s}@trade" for s in ("btcusdt", "ethusdt")),
            [],
        ),
        "kraken": ("/v2", SUBSCRIBE["kraken"](["BTC/USD", "ETH/USD"])),
        "bitfinex": ("/ws/2", SUBSCRIBE["bitfinex"](["tBTCUSD", "tETHUSD"])),
    }
    symbols = {"binance": "BTCUSDT,ETHUSDT", "kraken": "BTC/USD,ETH/USD", "bitfinex": "tBTCUSD,tETHUSD"}
    # Market speed per venue: Binance batches diffs per 100 ms (few frames per step), Bitfinex sends
    # one frame per changed level (several per step); rates chosen so one client can keep up.
    rates = {"binance": "400", "kraken": "200", "bitfinex": "100"}
    print("\n== sim_throughput (server and clients in separate processes, 2 symbols)")
    sample = (
        '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD",'
        '"bids":[{"price":60000.1,"qty":0.5}],"asks":[],"checksum":1}]}'
    )
    for n_clients in (1, 10):
        bare_rate, bare_cpu = _measure(
            [sys.executable, "-c", BARE_SERVER, sample], "/", [], n_clients, seconds
        )
        print(f"  {n_clients:>2} client(s)  bare sender {bare_rate:>9,.0f} msg/s, {bare_cpu:5.1f} µs CPU/msg")
        for venue, (path, messages) in venues.items():
            cmd = [
                sys.executable,
                "-m",
                "mmdata",
                "sim",
                "-e",
                venue,
                "-s",
                symbols[venue],
                "--rate",
                "200",
                "--json",
            ]
            rate, cpu = _measure(cmd, path, messages, n_clients, seconds)
            print(
                f"  {n_clients:>2} client(s)  {venue:<9} rate {rates[venue]:>3}  {rate:>9,.0f} msg/s, "
                f"{cpu:5.1f} µs CPU/msg, "
                f"{rate / bare_rate:6.1%} of bare"
            )


if __name__ == "__main__":
    main("--quick" in sys.argv)
