"""Recorder throughput: sustained messages/s recorded by one process with all outputs on.

Each case starts a fresh simulator (``python -m mmdata sim --json``) twice, in its own process:

1. baseline: a do-nothing ``websockets`` client in its own process subscribes like the recorder
   and counts frames for the window after a 1 s warm-up — the simulator's bare send rate;
2. ``mmdata record`` (book frames, trades, ledger, raw diffs, live files: every output on) in its
   own process against the same kind of simulator at the same rate for the same window.

Reported per case:

* recorded msg/s — sustained rate between the ledger's heartbeats (``--heartbeat 1``; the first
  second is skipped), and the summary's ``frames / seconds`` (includes connect and shutdown);
* ratio — sustained recorded msg/s / bare msg/s;
* msg per CPU-second — "per core": sustained (recorder CPU sampled from ``/proc`` at the
  heartbeats) and gross (``frames`` / the child's utime + stime from ``RUSAGE_CHILDREN``,
  interpreter start, imports and shutdown included);
* peak RSS — the recorder's VmHWM sampled from ``/proc`` (and the summary's ``peak_rss_mb``,
  ``ru_maxrss``, which after a vfork + exec also counts the spawning process's peak);
* reconnects (summary) / dropped: clients the simulator disconnected as too slow (queue past
  200,000 frames; this can happen during the recorder's shutdown, after the last reconnect count);
* lag at stop: receive time minus venue event time of the last book row written, worst symbol —
  how far behind the simulator the recorder had fallen (the simulator queues what it cannot send).

Targets (issue): ≥ 20,000 msg/s per core, ≤ 150 MB peak RSS for 20 symbols.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmdata.exchanges import get

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

#: Where each venue's socket lives on the simulator (Binance's adapter adds its own path).
SIM_WS_PATH = {"binance": "", "kraken": "/v2", "bitfinex": "/ws/2"}
DEPTH = 25  # what the recorder subscribes to by default for 20 levels

#: (venue, symbols, simulator --rate): rates well past what one process can take, so the
#: simulator sends as fast as it can (Kraken: one frame per book update, ~20 updates/s/symbol at
#: rate 1; Binance batches diffs per 100 ms per symbol, so mostly its trades scale with rate).
CASES: list[tuple[str, int, float]] = [("kraken", 1, 2000), ("kraken", 20, 100), ("binance", 20, 100)]

BARE_CLIENT = r"""
import asyncio, json, os, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
url, messages, warmup, seconds = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
async def main():
    ws = await connect(url, compression=None, max_size=None)
    for text in messages:
        await ws.send(text)
    loop = asyncio.get_running_loop()
    end = loop.time() + warmup
    while loop.time() < end:
        await ws.recv()
    n, t0, dropped = 0, loop.time(), False
    end = t0 + seconds
    try:
        while loop.time() < end:
            await ws.recv()
            n += 1
    except ConnectionClosed:  # disconnected as too slow: the rate so far still stands
        dropped = True
    print(json.dumps({"frames": n, "seconds": loop.time() - t0, "dropped": dropped}), flush=True)
    os._exit(0)  # no closing handshake behind the simulator's backlog
asyncio.run(main())
"""


def _symbols(venue: str, n: int) -> list[str]:
    quote = {"kraken": "/USD", "binance": "USDT", "bitfinex": "USD"}[venue]
    prefix = "t" if venue == "bitfinex" else ""
    return [f"{prefix}S{i:02d}{quote}" for i in range(1, n + 1)]


def _proc_sample(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MB) of a live process, from /proc.

    VmHWM is the peak of the process's own memory; ``ru_maxrss`` (the recorder summary's
    ``peak_rss_mb``) starts, after a vfork + exec, from the spawning process's peak.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(hwm.split()[1]) / 1024


class _Sim:
    """A simulator subprocess for the duration of a ``with`` block."""

    def __init__(self, venue: str, symbols: list[str], rate: float) -> None:
        cmd = [sys.executable, "-m", "mmdata", "sim", "-e", venue, "--rate", str(rate), "--json"]
        for s in symbols:
            cmd += ["-s", s]
        self.cmd = cmd
        self.dropped = 0  # clients disconnected as too slow (queue past the simulator's limit)

    def __enter__(self) -> dict[str, Any]:
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.proc.stdout is not None
        info: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return info

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.seek(0)
        for line in self.log:
            if "too slow" in line:
                self.dropped += 1
            else:
                sys.stderr.write(line)
        self.log.close()


def _bare(venue: str, symbols: list[str], rate: float, seconds: float) -> tuple[float, int, bool]:
    """The simulator's send rate to a do-nothing client; drops of it (any time, in the window)."""
    sim = _Sim(venue, symbols, rate)
    with sim as info:
        adapter = get(venue, ws_base=info["ws_url"] + SIM_WS_PATH[venue])
        url = adapter.ws_url(symbols)
        messages = json.dumps(adapter.subscribe_messages(symbols, DEPTH))
        args = [sys.executable, "-c", BARE_CLIENT, url, messages, "1.0", str(seconds)]
        out = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    return float(out["frames"] / out["seconds"]), sim.dropped, bool(out["dropped"])


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        yield from csv.DictReader(f)


def _heartbeats(day_dirs: list[str]) -> list[tuple[float, int]]:
    """(wall time s, frames over all connections) at each heartbeat, from the ledgers."""
    per_conn: dict[int, list[tuple[float, int]]] = {}
    for day in day_dirs:
        beats: dict[int, list[tuple[float, int]]] = {}
        for ledger in Path(day).glob("events_*.csv.gz"):
            for row in _rows(ledger):
                if row["event"] == "heartbeat":
                    details = json.loads(row["details"])
                    t = int(row["recv_time_ns"]) / 1e9
                    beats.setdefault(details["connection"], []).append((t, details["frames"]))
        for conn, rows in beats.items():
            per_conn.setdefault(conn, rows)  # the first symbol seen on each connection
    if not per_conn:
        return []
    n = min(len(rows) for rows in per_conn.values())
    first = next(iter(per_conn.values()))
    return [(first[i][0], sum(rows[i][1] for rows in per_conn.values())) for i in range(n)]


def _lag_at_stop(day_dirs: list[str]) -> float:
    """Worst symbol's receive time minus venue event time of its last book row, s."""
    worst = 0.0
    for day in day_dirs:
        for book in Path(day).glob("orderbook_ws_depth_*.csv.gz"):
            tail = deque(_rows(book), maxlen=1)  # streamed: the bench process stays small
            if tail and tail[0]["event_time_ms"]:
                last = tail[0]
                worst = max(worst, int(last["recv_time_ns"]) / 1e9 - int(last["event_time_ms"]) / 1e3)
    return worst


def _interp(samples: list[tuple[float, float]], t: float) -> float:
    for (t0, c0), (t1, c1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
    return samples[-1][1] if t > samples[-1][0] else samples[0][1]


def _record(venue: str, symbols: list[str], rate: float, seconds: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mmdata-bench-record-"))
    try:
        sim = _Sim(venue, symbols, rate)
        with sim as info:
            cmd = [sys.executable, "-m", "mmdata", "record", "-e", venue]
            for s in symbols:
                cmd += ["-s", s]
            cmd += ["--ws-url", info["ws_url"] + SIM_WS_PATH[venue], "--rest-url", info["rest_url"]]
            cmd += ["--duration", str(seconds), "--heartbeat", "1", "--json", "-q"]
            cmd += ["--data-dir", str(tmp / "data"), "--log-dir", str(tmp / "logs")]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            samples: list[tuple[float, float]] = []  # recorder CPU s against wall time
            peak = [0.0]

            def sample() -> None:
                while proc.poll() is None:
                    try:
                        t, (cpu, hwm) = time.time(), _proc_sample(proc.pid)
                    except (FileNotFoundError, ProcessLookupError, StopIteration):
                        return  # exited (a zombie has no VmHWM)
                    samples.append((t, cpu))
                    peak[0] = max(peak[0], hwm)
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            stdout, _ = proc.communicate(timeout=seconds + 60)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            sampler.join()
        assert proc.returncode == 0, f"mmdata record exited with {proc.returncode}"
        summary = json.loads(stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        beats = [b for b in _heartbeats(summary["day_dirs"]) if samples[0][0] <= b[0] <= samples[-1][0]]
        steady_rate = steady_per_cpu = float("nan")
        if len(beats) >= 3:
            (t0, f0), (t1, f1) = beats[1], beats[-1]  # skip the first second (connect, snapshots)
            steady_rate = (f1 - f0) / (t1 - t0)
            steady_per_cpu = (f1 - f0) / max(_interp(samples, t1) - _interp(samples, t0), 1e-9)
        return {
            "frames": summary["frames"],
            "seconds": summary["seconds"],
            "summary_rate": summary["frames"] / summary["seconds"],
            "rate": steady_rate,
            "per_cpu_s": steady_per_cpu,
            "cpu_s": cpu,
            "per_cpu_s_gross": summary["frames"] / max(cpu, 1e-9),
            "peak_rss_mb": peak[0],
            "summary_peak_rss_mb": summary["peak_rss_mb"],
            "connections": summary["connections"],
            "reconnects": summary["reconnects"],
            "sim_dropped": sim.dropped,
            "lag_at_stop_s": _lag_at_stop(summary["day_dirs"]),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(quick: bool = False) -> None:
    """Print the table and save benchmarks/out/record_throughput.json (called from run.py)."""
    seconds = 4.0 if quick else 8.0
    cases = CASES[:2] if quick else CASES
    print(
        f"\n== record_throughput (simulator, bare client and recorder each in its own process, "
        f"{seconds:g} s windows, load avg {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)"
    )
    head = (
        f"  {'case':<18} {'rate':>5} {'bare msg/s':>10} {'recorded (summary)':>18} {'ratio':>6} "
        f"{'msg/CPU-s (gross)':>17} {'RSS MB (summary)':>16} {'reconn/dropped':>14} {'lag@stop':>8}"
    )
    print(head)
    results = []
    for venue, n, rate in cases:
        symbols = _symbols(venue, n)
        bare, bare_dropped, bare_dropped_in_window = _bare(venue, symbols, rate, seconds)
        rec = _record(venue, symbols, rate, seconds)
        row = {"exchange": venue, "symbols": n, "sim_rate": rate, "bare_rate": bare, **rec}
        row["bare_sim_dropped"] = bare_dropped
        row["bare_dropped_in_window"] = bare_dropped_in_window
        row["ratio"] = rec["rate"] / bare
        results.append(row)
        case = f"{venue} {n} symbol" + ("s" if n > 1 else "")
        recorded = f"{rec['rate']:,.0f} ({rec['summary_rate']:,.0f})"
        per_cpu = f"{rec['per_cpu_s']:,.0f} ({rec['per_cpu_s_gross']:,.0f})"
        rss = f"{rec['peak_rss_mb']:.1f} ({rec['summary_peak_rss_mb']:.1f})"
        drops = f"{rec['reconnects']}/{rec['sim_dropped']}"
        print(
            f"  {case:<18} {rate:>5g} {bare:>10,.0f} {recorded:>18} {row['ratio']:>6.1%} "
            f"{per_cpu:>17} {rss:>16} {drops:>14} {rec['lag_at_stop_s']:>6.1f} s",
            flush=True,
        )
    print("  targets: ≥ 20,000 msg per CPU-second (per core); ≤ 150 MB peak RSS for 20 symbols")
    OUT.mkdir(exist_ok=True)
    path = OUT / "record_throughput.json"
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "seconds": seconds,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"  saved {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main("--quick" in sys.argv)
