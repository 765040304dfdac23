"""Simulator throughput: messages/s to 1 and to 10 loopback clients, server CPU per message.

The server runs in its own process (``python -m mmdata sim --json``); clients run in a
second process, connect and subscribe, then all count what they receive in one common
window, over which the server's CPU time is read from ``/proc/<pid>/stat``.

Baseline, measured in the same run: a bare ``websockets`` server in its own process that
sends one pre-encoded frame in a loop to the same number of clients — the most a Python
websockets server can push here; the simulator's rate is reported as a ratio to it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
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
    """Connect and subscribe every client first, then count in ONE common window."""

    async def run() -> None:
        conns = []
        for _ in range(n_clients):
            ws = await connect(url, compression=None, max_size=None)
            for text in messages:
                await ws.send(text)
            conns.append(ws)
        await asyncio.sleep(0.5)  # snapshots and acks arrive (websockets buffers ≤ 16 frames per client)
        out.put("ready")
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        counts = [0] * n_clients

        async def count(i: int, ws: Any) -> None:
            while (left := end - loop.time()) > 0:
                try:
                    await asyncio.wait_for(ws.recv(), left)
                    counts[i] += 1
                except TimeoutError:
                    break

        await asyncio.gather(*(count(i, ws) for i, ws in enumerate(conns)))
        out.put(counts)
        for ws in conns:
            await ws.close()

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
        client.start()
        assert queue.get(timeout=120) == "ready"
        cpu0 = _cpu_seconds(proc.pid)
        counts = queue.get(timeout=seconds + 60)
        cpu = _cpu_seconds(proc.pid) - cpu0
        client.join()
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
