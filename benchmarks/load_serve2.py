"""Load test of the candle and stream servers: 1,000 WebSocket clients each, on loopback.

Run with ``nox -s load`` (or ``python benchmarks/load_serve2.py [--scenario candles stream]
[--clients 1000] [--seconds 30]``). Each scenario is its own bounded run (about a minute):

``candles`` — ``mmdata serve candles`` (``--trade-poll-ms 20``), ``--clients`` clients over
``--symbols`` × ``--intervals`` rooms (default 5 × 1m,5m,15m,1h = 20 rooms, 50 clients each).
``stream`` — ``mmdata serve stream`` (``--trade-poll-ms 20``), ``price_updates`` every
``--price-interval`` s (default 1 s), each client subscribed to one of the ``--symbols``
(``--stream-symbols-per-client``), so 5 subscription groups of 200 clients.

The data and the "recorder"
---------------------------
No simulator runs: this script is the recorder. It makes a data root with one day folder per
symbol (``binance/LOADnnUSDT/<today>/events_*.csv.gz``, a ledger of one ``run_start`` row:
what a stream needs to be listed and resolved) and appends trades to each stream's
``live/live_trades.ndjson`` (one JSON line per trade, written and flushed in one call, as the
recorder does), from a thread of this process. Trade number ``n`` (over all symbols) has the
price ``1000000 + n``: every trade changes its candle, and an ``update``'s ``close`` names the
trade it shows. The thread stamps ``time.time_ns()`` just before each write.

Each symbol gets one trade every ``--trade-gap`` seconds (default uniform 1.05–1.25 s, random
phase): longer than the candle server's throttle (one update per room per second), so a trade
is normally sent at once — the latency is the server's pipeline (poll interval + fold into
candles + fan-out) plus loopback TCP and the client's scheduling, not the throttle. An update
whose trade was written less than a second after the room's previous update (first receipt)
may have waited for the throttle: those are counted (``possibly_throttled``) and the latency
is also given without them; trades that no update showed (merged into a later one) are
``merged_trades``. Every symbol's trade changes the candle of all its intervals: with 4
intervals one trade fans out to 4 rooms (200 clients) in one callback, the burstier case;
5 symbols also means 5 trade feeds polled every 20 ms. ``--symbols 20 --intervals 1m`` is
the other layout (20 feeds, 50 clients per trade).

Latency
-------
* candles: client receipt − write time of the trade whose price is the update's ``close``;
* stream: client receipt − the message's ``timestamp`` (stamped by the server when it builds
  the tick's message, before it writes it to its clients; millisecond text, so the figure
  is 0–1 ms high). Trades keep flowing, so each tick recomputes the 24 h statistics.

Two receipt times are kept (as in ``load_relay.py``, whose bare-socket client this reuses):
``app`` when the client process reads the bytes (the figure checked against the target) and
``kernel`` (``SO_TIMESTAMPNS``, the arrival on the socket, without the client's scheduling).
Clients and the server share this machine's cores (and with anything else running on it:
``other_processes_cpu_pct``); ``--pin-server`` gives the server a core of its own.

Checks
------
Loss: in each room (candles) or subscription group (stream), the updates of the window are
those any of its clients received (candles: trades written inside the window; stream:
``timestamp`` inside it); every client that stayed connected must have all of them, in
order, once. Order: a candle client's first message must be its ``initial``, a stream
client's ``connected`` then ``subscribed``. Target: p99 ≤ 100 ms. The figures land in
``benchmarks/out/load_candles.json`` / ``load_stream.json`` and, with ``--json``, one JSON
line per scenario on stdout; ``--check`` exits 1 on a FAIL.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import csv
import gzip
import io
import itertools
import json
import os
import platform
import queue
import random
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import load_relay as lr

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

PRICE_BASE = 1_000_000  # trade n has the price PRICE_BASE + n
EXCHANGE = "binance"
EVENTS_HEADER = "event_id,recv_time_ns,run_id,recv_seq,event,tag,state,reason,snapshot_file,details"

#: ``--stream-via direct``: the stream server run straight from its module, not through the CLI
#: (argv: data dir, port, price interval s, trade poll ms, max connections).
STREAM_LAUNCHER = r"""
import asyncio, signal, sys
from pathlib import Path
from mmdata.serve.market import MarketConfig, Markets
from mmdata.serve.stream import StreamOptions, StreamServer

async def _serve(data, port, interval, poll_ms, max_conn):
    markets = Markets(Path(data), MarketConfig(poll_s=float(poll_ms) / 1000))
    options = StreamOptions(
        port=int(port), price_update_interval_s=float(interval), max_connections=int(max_conn)
    )
    server = StreamServer(options, markets)
    await server.start()
    markets.preload()
    print(f"stream listening on ws://127.0.0.1:{server.port}/ws", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.close()
    await markets.close()

asyncio.run(_serve(*sys.argv[1:6]))
"""

#: ``--instrument``: patched into the server process (nothing in src/ changes): how long after
#: its write a trade is folded (the poll delay), how long each broadcast / price tick takes, which
#: candle updates the throttle held back, the event loop's lag and the garbage collector's pauses.
INSTRUMENT = r"""
import atexit, json, os, sys, time
from mmdata.serve import market as _M
_folds, _casts = [], []  # (wall ns, write->fold ns) / (wall ns, duration ns, clients)
_throttles = []  # (wall ns, wait ns or -1 when merged) of each update the throttle held back
_fold = _M.Market._fold
def _fold_timed(self, rows):
    now = time.time_ns()
    _folds.extend((now, now - r.recv_ns) for r in rows)
    return _fold(self, rows)
_M.Market._fold = _fold_timed
try:
    from mmdata.serve import candles as _C
    _bcast = _C.CandleServer._broadcast
    def _bcast_timed(self, room):
        t = time.perf_counter_ns()
        n = len(room.clients)
        _bcast(self, room)
        _casts.append((time.time_ns(), time.perf_counter_ns() - t, n))
    _C.CandleServer._broadcast = _bcast_timed
    _on = _C.CandleServer._on_trades
    def _on_timed(self, market, rows, changed):
        rooms = list(self._by_market.get(id(market), ()))
        before = [r.timer for r in rooms]
        _on(self, market, rows, changed)
        for r, was in zip(rooms, before):
            if was is not None:
                _throttles.append((time.time_ns(), -1))  # already due: merged into that update
            elif r.timer is not None:
                _throttles.append((time.time_ns(), int((r.timer.when() - r.timer._loop.time()) * 1e9)))
    _C.CandleServer._on_trades = _on_timed
except ImportError:
    pass
try:
    from mmdata.serve import stream as _S
    _tick = _S.StreamServer._price_tick
    def _tick_timed(self):
        t = time.perf_counter_ns()
        n = len(self._price)
        _tick(self)
        _casts.append((time.time_ns(), time.perf_counter_ns() - t, n))
    _S.StreamServer._price_tick = _tick_timed
except ImportError:
    pass
_lags = []  # (wall ns, event-loop lag ns) every ~10 ms: is the server's loop ever held up?
async def _lag_monitor():
    import asyncio
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(0.01)
        _lags.append((time.time_ns(), int((loop.time() - t - 0.01) * 1e9)))
import gc
_gcs, _gc_t = [], [0]  # (wall ns, generation, pause ns, objects collected) of each collection
def _gc_cb(phase, info):
    if phase == "start":
        _gc_t[0] = time.perf_counter_ns()
    else:
        pause = time.perf_counter_ns() - _gc_t[0]
        _gcs.append((time.time_ns(), info["generation"], pause, info["collected"]))
gc.callbacks.append(_gc_cb)
_preload = _M.Markets.preload
def _preload_and_watch(self):
    import asyncio
    _M._lag_task = asyncio.get_running_loop().create_task(_lag_monitor())
    return _preload(self)
_M.Markets.preload = _preload_and_watch
atexit.register(lambda: open(os.environ["MMDATA_LOAD_STATS"], "w").write(
    json.dumps({"folds": _folds, "casts": _casts, "lags": _lags, "gcs": _gcs, "throttles": _throttles})))
"""

_CLI_TAIL = "from mmdata.cli import main\nsys.argv = ['mmdata', *sys.argv[1:]]\nmain()\n"


# ======================================================================================
# The data root and the trade writer (the "recorder")
# ======================================================================================


def symbol_names(n: int) -> list[str]:
    """``LOAD00USDT``, ``LOAD01USDT``, … (Binance spelling: the folder name is the symbol)."""
    return [f"LOAD{k:02d}USDT" for k in range(n)]


def make_data_root(data: Path, symbols: list[str]) -> list[Path]:
    """One recorded day per symbol (a one-row ledger) and its live trades file; the live paths."""
    now = datetime.now(UTC)
    label = now.strftime("%Y%m%d")
    paths = []
    for sym in symbols:
        day = data / EXCHANGE / sym / label
        day.mkdir(parents=True)
        info = {"exchange": EXCHANGE, "symbol": sym, "run_id": "load", "book_depth": 25}
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(EVENTS_HEADER.split(","))
        writer.writerow([1, time.time_ns(), "load", 0, "run_start", "", "", "", "", json.dumps(info)])
        (day / f"events_{sym}_{label}.csv.gz").write_bytes(gzip.compress(buf.getvalue().encode()))
        live = data / EXCHANGE / sym / "live"
        live.mkdir()
        paths.append(live / "live_trades.ndjson")
    return paths


class TradeWriter(threading.Thread):
    """Appends one trade per symbol every ``gap`` seconds (random phase) until stopped."""

    def __init__(self, paths: list[Path], gap: tuple[float, float], seed: int) -> None:
        super().__init__(daemon=True, name="trade-writer")
        self.files = [open(p, "ab") for p in paths]  # noqa: SIM115 - closed in close()
        self.gap = gap
        self.rng = random.Random(seed)
        self.write_ns = array.array("q")  # by trade number n
        self.sym = array.array("q")  # symbol index of trade n
        self.late_ns = array.array("q")  # actual write − schedule (the writer's own jitter)
        self.took_ns = array.array("q")  # stamp → flushed: time the stamp runs ahead of the write
        self.seqs = [0] * len(paths)
        self.stop_event = threading.Event()
        self.error = ""

    def write(self, s: int) -> None:
        """Trade number ``len(write_ns)`` on symbol ``s``, stamped just before the write."""
        n = len(self.write_ns)
        self.seqs[s] += 1
        t = time.time_ns()
        line = orjson.dumps(
            {
                "recv_seq": self.seqs[s],
                "recv_time_ns": t,
                "event_time_ms": t // 1_000_000,
                "trade_id": str(n),
                "price": str(PRICE_BASE + n),
                "qty": "0.001",
                "side": "buy",
            }
        )
        self.write_ns.append(t)
        self.sym.append(s)
        f = self.files[s]
        f.write(line + b"\n")  # one write of a whole line, then flushed: the recorder's way
        f.flush()
        self.took_ns.append(time.time_ns() - t)

    def run(self) -> None:
        try:
            lo, hi = self.gap
            start = time.monotonic()
            due = [start + self.rng.uniform(0, hi) for _ in self.files]
            while not self.stop_event.is_set():
                s = min(range(len(due)), key=due.__getitem__)
                wait = due[s] - time.monotonic()
                if wait > 0 and self.stop_event.wait(wait):
                    return
                self.late_ns.append(int((time.monotonic() - due[s]) * 1e9))
                self.write(s)
                due[s] += self.rng.uniform(lo, hi)
        except OSError as exc:
            self.error = str(exc)

    def close(self) -> None:
        """Stop and close the files."""
        self.stop_event.set()
        if self.is_alive():
            self.join(5)
        for f in self.files:
            f.close()


# ======================================================================================
# Client worker (one process, many connections); the bare socket is load_relay's
# ======================================================================================


class _Sub:
    """What one client got (the connection itself is a ``load_relay._Client``)."""

    __slots__ = (
        "bad",
        "before_ready",
        "closed_before",
        "dups",
        "errors",
        "g",
        "last_key",
        "out_of_order",
        "ready",
        "types",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.g = -1  # the client's number over all worker processes
        self.ready: asyncio.Future[str] = loop.create_future()  # "" once subscribed, else why not
        self.types: list[str] = []  # the first few message types, in order
        self.before_ready = 0  # data messages before the initial / subscribed answer
        self.out_of_order = 0
        self.dups = 0
        self.bad = 0  # data messages not for this client's subscription, or unreadable
        self.last_key = -1
        self.errors: Counter[str] = Counter()
        self.closed_before = False


class _Worker2(lr._Worker):
    """load_relay's client process, reading candle or stream messages instead of relay ones."""

    def __init__(self, scenario: str, rooms: list[tuple[str, str]], groups: list[list[str]]) -> None:
        super().__init__()
        self.scenario = scenario
        self.rooms = rooms  # candles: (symbol, interval) of room r
        self.groups = groups  # stream: symbols of group k
        self.subs: dict[bytes, _Sub] = {}
        self.recs = array.array("q")  # (g, key, app ns, kernel ns) per data message
        self.others: Counter[str] = Counter()
        self.stamps: dict[str, int] = {}  # stream: timestamp text -> ms

    def sub(self, c: lr._Client) -> _Sub:
        got = self.subs.get(c.key)
        if got is None:
            assert self.loop is not None
            got = self.subs[c.key] = _Sub(self.loop)
        return got

    @staticmethod
    def send_text(c: lr._Client, payload: bytes) -> None:
        """One masked text frame (payload < 64 KiB)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[k & 3] for k, b in enumerate(payload))
        n = len(masked)
        head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0xFE)) + struct.pack("!H", n)
        c.sock.send(head + mask + masked)

    def close(self, c: lr._Client, why: str) -> None:
        was = c.state
        super().close(c, why)
        sub = self.subs.get(c.key)
        if sub is not None and was != lr.CLOSED:
            if not sub.ready.done():
                sub.ready.set_result(why or "closed")
            if c.closed_at < self.t1:
                sub.closed_before = True

    def feed(self, c: lr._Client, data: bytes, now: int, kts: int) -> None:
        """Frames out of ``c.buf + data`` (server frames: unmasked, unfragmented)."""
        data = c.buf + data if c.buf else data
        n = len(data)
        i = 0
        closing = ""
        while n - i >= 2:
            b0, ln = data[i], data[i + 1]
            if ln & 0x80:
                self.bad_frames["masked server frame"] += 1
                closing = "protocol error: masked server frame"
                break
            p = i + 2
            if ln == 126:
                if n - i < 4:
                    break
                ln, p = (data[i + 2] << 8) | data[i + 3], i + 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln, p = int.from_bytes(data[i + 2 : i + 10], "big"), i + 10
            end = p + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op in (1, 2) and b0 & 0x80:
                self.message(c, data[p:end], now, kts)
            elif op == 9:
                self.send_control(c, 0xA, data[p:end])
            elif op == 8:
                c.close_code = int.from_bytes(data[p : p + 2], "big") if ln >= 2 else 1005
                closing = f"close frame {c.close_code}: {data[p + 2 : end].decode('utf-8', 'replace')}"
                i = end
                break
            elif op != 0xA:
                self.bad_frames[f"opcode {op} fin {b0 >> 7}"] += 1
            i = end
        c.buf = data[i:] if i < n else b""
        if closing:
            self.close(c, closing)

    def message(self, c: lr._Client, raw: bytes, now: int, kts: int) -> None:
        sub = self.sub(c)
        try:
            msg = orjson.loads(raw)
            kind = str(msg["type"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            sub.bad += 1
            return
        if len(sub.types) < 4:
            sub.types.append(kind)
        if kind == "error":
            sub.errors[str(msg.get("message") or msg.get("error"))[:80]] += 1
            if not sub.ready.done():
                sub.ready.set_result(f"error: {sub.errors.most_common(1)[0][0]}")
            return
        key = -1
        if self.scenario == "candles":
            sym, iv = self.rooms[sub.g % len(self.rooms)] if sub.g >= 0 else ("", "")
            if kind == "initial":
                if msg.get("symbol") != sym or msg.get("interval") != iv:
                    sub.bad += 1
                if not sub.ready.done():
                    sub.ready.set_result("")
                return
            if kind != "update":
                self.others[kind] += 1
                return
            try:
                key = int(msg["bar"]["close"]) - PRICE_BASE
            except (KeyError, TypeError, ValueError):
                key = -1
            if msg.get("symbol") != sym or msg.get("interval") != iv or key < 0:
                sub.bad += 1
                return
        else:
            if kind in ("connected", "subscribed"):
                if kind == "subscribed" and not sub.ready.done():
                    sub.ready.set_result("")
                return
            if kind != "price_update":
                self.others[kind] += 1
                return
            stamp = msg.get("timestamp")
            key = self.stamps.get(stamp, -1) if isinstance(stamp, str) else -1
            if key < 0 and isinstance(stamp, str):
                with contextlib.suppress(ValueError):
                    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
                    key = self.stamps[stamp] = int(moment.timestamp() * 1000 + 0.5)
            symbols = msg.get("symbols")
            want = self.groups[sub.g % len(self.groups)] if sub.g >= 0 else []
            if key < 0 or not isinstance(symbols, dict) or sorted(symbols) != sorted(want):
                sub.bad += 1
                return
        if not sub.ready.done():
            sub.before_ready += 1
        if key == sub.last_key:
            sub.dups += 1
        elif key < sub.last_key:
            sub.out_of_order += 1
        sub.last_key = max(sub.last_key, key)
        self.recs.extend((sub.g, key, now, kts))


def _subscribe_message(args: argparse.Namespace, g: int, w: _Worker2) -> bytes:
    if args.scenario == "candles":
        sym, iv = w.rooms[g % len(w.rooms)]
        return orjson.dumps({"type": "subscribe", "symbol": sym, "interval": iv, "initialBars": 10})
    return orjson.dumps(
        {"type": "subscribe", "channel": "price_updates", "symbols": w.groups[g % len(w.groups)]}
    )


async def worker_main(args: argparse.Namespace) -> None:
    """A client process: connect and subscribe, tell the parent, take the window, report."""
    symbols = symbol_names(args.symbols)
    rooms = [(s, iv) for s in symbols for iv in args.intervals.split(",")]
    k = args.stream_symbols_per_client
    groups = [[symbols[(j + m) % len(symbols)] for m in range(k)] for j in range(len(symbols))]
    w = _Worker2(args.scenario, rooms, groups)
    loop = asyncio.get_running_loop()
    w.loop = loop
    lag_task = loop.create_task(w.lag_monitor())
    clients: list[lr._Client] = []
    errors: Counter[str] = Counter()
    t_start = time.monotonic()

    async def one(g: int, delay: float) -> None:
        await asyncio.sleep(delay)
        path = "/ws" if args.scenario == "candles" else f"/ws?client_id=load-{g}"
        c, why = await w.connect("127.0.0.1", args.port, path, 15.0)
        if c is None:
            errors[why] += 1
            return
        sub = w.sub(c)
        sub.g = g
        try:
            w.send_text(c, _subscribe_message(args, g, w))
            why = await asyncio.wait_for(asyncio.shield(sub.ready), 30.0)
        except OSError as exc:
            why = f"send: {exc}"
        except TimeoutError:
            why = "no answer to subscribe in 30 s"
        if why:
            errors[why[:80]] += 1
            w.close(c, why)
        else:
            clients.append(c)

    await asyncio.gather(*(one(args.first + j, j / args.connect_rate) for j in range(args.clients)))
    lr._emit(
        {
            "event": "connected",
            "worker": args.worker_id,
            "ok": len(clients),
            "failed": sum(errors.values()),
            "errors": dict(errors),
            "connect_s": time.monotonic() - t_start,
        }
    )
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if not line:
        return
    window = json.loads(line)
    w.t0, w.t1 = int(window["t0"]), int(window["t1"])
    await asyncio.sleep(max(0.0, (w.t0 - time.time_ns()) / 1e9))
    open_at_t0 = {c.key for c in clients if c.state == lr.OPEN}
    await asyncio.sleep(max(0.0, (w.t1 - time.time_ns()) / 1e9) + float(window["grace_s"]))
    lag_task.cancel()
    for c in clients:
        if c.state != lr.CLOSED:
            loop.remove_reader(c.fd)
            with contextlib.suppress(OSError):
                w.send_control(c, 0x8, struct.pack("!H", 1000))
            c.sock.close()
    subs = [(c, w.subs[c.key]) for c in clients]
    kept = [s.g for c, s in subs if c.key in open_at_t0 and not s.closed_before]
    types: Counter[str] = Counter(",".join(s.types[:3]) for _, s in subs)
    closes: Counter[str] = Counter(c.closed_why[:80] for c, s in subs if s.closed_before)
    np.save(
        Path(args.out) / f"recs_{args.worker_id}.npy", np.frombuffer(w.recs, dtype=np.int64).reshape(-1, 4)
    )
    lags = np.asarray(w.lags) * 1000 if w.lags else np.zeros(1)
    lr._emit(
        {
            "event": "result",
            "worker": args.worker_id,
            "kept": kept,
            "not_open_at_t0": sum(1 for c in clients if c.key not in open_at_t0),
            "closed_in_window": sum(1 for _, s in subs if s.closed_before),
            "closes": dict(closes),
            "first_messages": dict(types),
            "before_ready": sum(s.before_ready for _, s in subs),
            "out_of_order": sum(s.out_of_order for _, s in subs),
            "duplicates": sum(s.dups for _, s in subs),
            "bad_messages": sum(s.bad for _, s in subs),
            "errors": dict(sum((s.errors for _, s in subs), Counter())),
            "other_messages": dict(w.others),
            "bad_frames": dict(w.bad_frames),
            "reads_without_kernel_stamp": w.no_stamp,
            "loop_lag_ms": {
                "p50": float(np.percentile(lags, 50)),
                "p99": float(np.percentile(lags, 99)),
                "max": float(lags.max()),
            },
        }
    )


# ======================================================================================
# The parent: data, writer, server, workers, sampling, figures
# ======================================================================================


def _get_json(port: int, path: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def _q(a: np.ndarray[Any, Any]) -> dict[str, float]:
    return {
        "p50": lr._pct(a, 50),
        "p95": lr._pct(a, 95),
        "p99": lr._pct(a, 99),
        "max": float(a.max()) if a.size else float("nan"),
    }


def _cpu(pid: int) -> float:
    """CPU seconds of one process (``load_relay._proc_cpu`` adds its children: this process's are
    the server and the clients, counted apart)."""
    if pid == os.getpid():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    return lr._proc_cpu(pid)


def _slow(
    lat: np.ndarray[Any, Any], at_ns: np.ndarray[Any, Any], t0: int, target_ms: float
) -> dict[str, Any]:
    """Messages over the target and the seconds of the window they belong to (one stall or many?)."""
    over = lat > target_ms
    secs = np.unique((at_ns[over] - t0) // 1_000_000_000).tolist()
    return {"count": int(over.sum()), "window_seconds": secs[:20]}


def _stream_cli_available() -> bool:
    """Whether this install has ``mmdata serve stream`` (else the server is started directly)."""
    probe = [sys.executable, "-m", "mmdata", "serve", "stream", "--help"]
    return subprocess.run(probe, capture_output=True, timeout=60, check=False).returncode == 0


def _server_cmd(
    args: argparse.Namespace, data: Path, tmp: Path, env: dict[str, str]
) -> tuple[list[str], str]:
    """The server's command line, and how it was started."""
    max_conn = str(max(2000, args.clients + 100))
    poll = str(args.trade_poll_ms)
    if args.scenario == "candles":
        argv = ["serve", "candles", "--data-dir", str(data), "--port", "0", "--trade-poll-ms", poll]
        argv += ["--max-connections", max_conn]
        how = "cli"
    else:
        how = args.stream_via
        if how == "auto":
            how = "cli" if _stream_cli_available() else "direct"
        if how == "cli":
            argv = ["serve", "stream", "--data-dir", str(data), "--port", "0", "--trade-poll-ms", poll]
            argv += ["--price-update-interval", str(args.price_interval)]
            argv += ["--stream-max-connections", max_conn]
        else:
            argv = [str(data), "0", str(args.price_interval), poll, max_conn]
    if how == "cli":
        script = "import sys\n" + (INSTRUMENT if args.instrument else "") + _CLI_TAIL
    else:
        script = "import sys\n" + (INSTRUMENT if args.instrument else "") + STREAM_LAUNCHER
    path = tmp / "server_main.py"
    path.write_text(script)
    cmd = [sys.executable, str(path), *argv]
    if args.profile_server:
        cmd[1:1] = ["-m", "cProfile", "-o", str(tmp / "server.prof")]
    if args.instrument:
        env["MMDATA_LOAD_STATS"] = str(tmp / "server_stats.json")
    return cmd, how


def _server_timing(path: Path, t0: int, t1: int) -> dict[str, Any]:
    """The ``--instrument`` figures of the window."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    folds = np.asarray([f[1] for f in stats["folds"] if t0 <= f[0] < t1], dtype=np.float64) / 1e6
    casts = np.asarray([c for c in stats["casts"] if t0 <= c[0] < t1 and c[2] > 0], dtype=np.float64)
    dur = casts[:, 1] / 1e6 if casts.size else np.zeros(0)
    lags = np.asarray([x[1] for x in stats.get("lags", []) if t0 <= x[0] < t1], dtype=np.float64) / 1e6
    gcs = [x for x in stats.get("gcs", []) if t0 <= x[0] < t1]
    gc_pauses = {
        f"gen{gen}": {
            "count": len(p),
            "max_ms": max(p) / 1e6 if p else 0.0,
            "total_ms": sum(p) / 1e6,
        }
        for gen in (0, 1, 2)
        for p in [[x[2] for x in gcs if x[1] == gen]]
    }
    held = [x[1] for x in stats.get("throttles", []) if t0 <= x[0] < t1]
    return {
        "throttle_timers": sum(1 for x in held if x >= 0),
        "throttle_wait_max_ms": max((x for x in held), default=0) / 1e6,
        "throttle_merged": sum(1 for x in held if x < 0),
        "gc_pauses": gc_pauses,
        "event_loop_lag_ms": _q(lags),
        "trade_written_to_fold_ms": _q(folds),
        "broadcast_ms": _q(dur),
        "broadcast_us_per_client": float(np.mean(casts[:, 1] / casts[:, 2]) / 1e3) if casts.size else None,
        "broadcasts_per_s": casts.shape[0] / ((t1 - t0) / 1e9),
        "clients_per_broadcast": float(casts[:, 2].mean()) if casts.size else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One scenario; the figures."""
    t_begin = time.monotonic()
    budget_end = t_begin + args.max_run_s
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need) if hard > 0 else need, hard))
    all_cpus = sorted(os.sched_getaffinity(0))
    server_cpus = harness_cpus = set(all_cpus)
    if args.pin_server and len(all_cpus) >= 2:
        server_cpus, harness_cpus = {all_cpus[0]}, set(all_cpus[1:])
        lr._pin(os.getpid(), harness_cpus)
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if args.nice is not None and args.nice != niceness:
        try:  # inherited by the server and the clients started below
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except PermissionError:
            print(f"note: cannot set nice {args.nice} (needs privileges): kept {niceness}", file=sys.stderr)
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
    tmp = Path(tempfile.mkdtemp(prefix=f"mmdata-load-{args.scenario}-"))
    data = tmp / "data"
    symbols = symbol_names(args.symbols)
    intervals = args.intervals.split(",")
    writer: TradeWriter | None = None
    server: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[str]] = []
    result: dict[str, Any] = {}
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    try:
        # 1. data: a first trade per symbol, so every room has a candle from the start ----------
        paths = make_data_root(data, symbols)
        writer = TradeWriter(paths, (args.trade_gap[0], args.trade_gap[1]), args.seed)
        for s in range(len(symbols)):
            writer.write(s)
        # 2. the server ----------------------------------------------------------------------------
        env = dict(os.environ)
        cmd, how = _server_cmd(args, data, tmp, env)
        srv_log_path = tmp / "server.log"
        srv_log = open(srv_log_path, "wb")  # noqa: SIM115 - closed with the tmp folder
        server = subprocess.Popen(cmd, stdout=srv_log, stderr=subprocess.STDOUT, env=env)
        lr._pin(server.pid, server_cpus)

        def port_seen() -> int:
            m = re.search(rb"listening on ws://[\d.]+:(\d+)", srv_log_path.read_bytes())
            return int(m.group(1)) if m else 0

        port = lr._wait_for(port_seen, 60, f"the {args.scenario} server to listen", {"server": server})
        writer.start()
        # 3. the clients ---------------------------------------------------------------------------
        per = [
            args.clients // args.procs + (1 if k < args.clients % args.procs else 0)
            for k in range(args.procs)
        ]
        first = 0
        for k, n in enumerate(per):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--worker-id", str(k)]
            cmd += ["--scenario", args.scenario, "--port", str(port), "--clients", str(n)]
            cmd += ["--first", str(first), "--out", str(tmp), "--symbols", str(args.symbols)]
            cmd += ["--intervals", args.intervals, "--connect-rate", str(args.connect_rate / args.procs)]
            cmd += ["--stream-symbols-per-client", str(args.stream_symbols_per_client)]
            first += n
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            workers.append(p)
            lr._pin(p.pid, harness_cpus)

            def pump(k: int = k, p: subprocess.Popen[str] = p) -> None:
                assert p.stdout is not None
                for line in p.stdout:
                    lines.put((k, line))

            threading.Thread(target=pump, daemon=True).start()

        def collect(event: str, timeout: float) -> list[dict[str, Any]]:
            got: dict[int, dict[str, Any]] = {}
            end = min(time.monotonic() + timeout, budget_end)
            while len(got) < len(workers):
                try:
                    k, line = lines.get(timeout=max(0.01, min(0.5, end - time.monotonic())))
                except queue.Empty:
                    if time.monotonic() >= end:
                        raise lr._Stop(f"timed out waiting for the clients' {event!r} report") from None
                    alive: dict[str, subprocess.Popen[Any] | None] = {"server": server}
                    alive |= {f"client process {k2}": p for k2, p in enumerate(workers) if k2 not in got}
                    lr._check_alive(alive, f"before its {event!r} report")
                    continue
                msg = json.loads(line)
                if msg.get("event") == event:
                    got[k] = msg
            return [got[k] for k in sorted(got)]

        connected = collect("connected", args.clients / args.connect_rate + 60)
        n_ok = sum(m["ok"] for m in connected)
        t0 = time.time_ns() + int(args.warmup * 1e9)
        t1 = t0 + int(args.seconds * 1e9)
        window = json.dumps({"t0": t0, "t1": t1, "grace_s": args.grace}) + "\n"
        for p in workers:
            assert p.stdin is not None
            p.stdin.write(window)
            p.stdin.flush()
        # 4. the window: CPU at both ends, RSS sampled ----------------------------------------------
        time.sleep(max(0.0, (t0 - time.time_ns()) / 1e9))
        pids = {"server": server.pid, "driver": os.getpid()} | {
            f"client{k}": p.pid for k, p in enumerate(workers)
        }
        cpu0 = {name: _cpu(pid) for name, pid in pids.items()}
        mach0 = lr._machine_cpu()
        w0 = time.monotonic()
        rss: list[float] = []
        client_rss: list[float] = []
        while time.time_ns() < t1:
            rss.append(lr._proc_mem(server.pid)[0])
            client_rss.append(max(lr._proc_mem(p.pid)[0] for p in workers))
            time.sleep(min(0.25, max(0.0, (t1 - time.time_ns()) / 1e9)))
        cpu1 = {name: _cpu(pid) for name, pid in pids.items()}
        mach1 = lr._machine_cpu()
        wall = time.monotonic() - w0
        _, server_hwm = lr._proc_mem(server.pid)
        stats = _get_json(port, "/health/ws-stats" if args.scenario == "candles" else "/websocket/status")
        health = _get_json(port, "/health")
        results = collect("result", args.grace + 60)
        writer.close()
        stop = lr._stop(server, 15)
        # 5. figures ---------------------------------------------------------------------------------
        recs = np.concatenate([np.load(tmp / f"recs_{k}.npy") for k in range(len(workers))])
        kept = np.asarray(sorted(g for r in results for g in r["kept"]), dtype=np.int64)
        write_ns = np.frombuffer(writer.write_ns, dtype=np.int64)
        sym_of = np.frombuffer(writer.sym, dtype=np.int64)
        if args.scenario == "candles":
            figures = _candle_figures(
                args, recs, kept, write_ns, sym_of, t0=t0, t1=t1, n_intervals=len(intervals)
            )
        else:
            figures = _stream_figures(args, recs, kept, t0, t1)
        cpu = {name: 100 * (cpu1[name] - cpu0[name]) / wall for name in pids}
        ticks = max(1, mach1[2] - mach0[2])
        busy = 100 * (mach1[0] - mach0[0]) / ticks
        irq = 100 * (mach1[1] - mach0[1]) / ticks * (os.cpu_count() or 1)
        in_win = (write_ns >= t0) & (write_ns < t1)
        lost = figures.pop("_lost")
        checks = {
            "p99_le_target": bool(figures["latency_ms"]["p99"] <= args.target_p99_ms),
            "no_loss": bool(lost) and max(lost) == 0,
            "all_connected": n_ok == args.clients,
            "none_disconnected": sum(r["closed_in_window"] for r in results) == 0,
            "order_ok": sum(r["before_ready"] + r["out_of_order"] + r["duplicates"] for r in results) == 0,
            "no_bad_messages": sum(r["bad_messages"] for r in results) == 0,
        }
        result = {
            "scenario": args.scenario,
            "server_started_via": how,
            "symbols": len(symbols),
            "intervals": intervals if args.scenario == "candles" else None,
            "rooms_or_groups": figures["rooms_or_groups"],
            "trade_poll_ms": args.trade_poll_ms,
            "price_interval_s": args.price_interval if args.scenario == "stream" else None,
            "trade_gap_s": list(args.trade_gap),
            "pinned": args.pin_server and server_cpus != harness_cpus,
            "nice": niceness,
            "clients": args.clients,
            "client_procs": args.procs,
            "connected": n_ok,
            "connect_failures": sum(m["failed"] for m in connected),
            "connect_errors": dict(sum((Counter(m["errors"]) for m in connected), Counter())),
            "connect_s": max(m["connect_s"] for m in connected),
            "measured_s": round((t1 - t0) / 1e9, 3),
            "trades_written_in_window": int(in_win.sum()),
            "trades_per_s": float(in_win.sum()) / ((t1 - t0) / 1e9),
            "writer_late_ms": _q(np.frombuffer(writer.late_ns, dtype=np.int64) / 1e6),
            "writer_stamp_to_flushed_ms": _q(np.frombuffer(writer.took_ns, dtype=np.int64) / 1e6),
            "writer_error": writer.error,
            **figures,
            "kept_up": int(kept.size),
            "closed_in_window": sum(r["closed_in_window"] for r in results),
            "not_open_at_window_start": sum(r["not_open_at_t0"] for r in results),
            "lost_max": max(lost) if lost else None,
            "lost_total": sum(lost),
            "clients_with_loss": sum(1 for x in lost if x > 0),
            "first_messages": dict(sum((Counter(r["first_messages"]) for r in results), Counter())),
            "data_before_ready": sum(r["before_ready"] for r in results),
            "out_of_order": sum(r["out_of_order"] for r in results),
            "duplicates": sum(r["duplicates"] for r in results),
            "bad_messages": sum(r["bad_messages"] for r in results),
            "errors": dict(sum((Counter(r["errors"]) for r in results), Counter())),
            "other_messages": dict(sum((Counter(r["other_messages"]) for r in results), Counter())),
            "closes": dict(sum((Counter(r["closes"]) for r in results), Counter())),
            "bad_frames": dict(sum((Counter(r["bad_frames"]) for r in results), Counter())),
            "reads_without_kernel_stamp": sum(r["reads_without_kernel_stamp"] for r in results),
            "client_loop_lag_ms": [r["loop_lag_ms"] for r in results],
            "server_cpu_pct": cpu["server"],
            "server_rss_mb_avg": float(np.mean(rss)) if rss else float("nan"),
            "server_rss_mb_peak_window": max(rss) if rss else float("nan"),
            "server_vmhwm_mb": server_hwm,
            "driver_cpu_pct": cpu["driver"],
            "client_cpu_pct": [cpu[f"client{k}"] for k in range(len(workers))],
            "client_rss_mb_peak": max(client_rss) if client_rss else float("nan"),
            "machine_busy_pct": busy,
            "irq_softirq_steal_cpu_pct": irq,
            "other_processes_cpu_pct": busy * (os.cpu_count() or 1) - irq - sum(cpu.values()),
            "server_health": health,
            "server_stats": _stats_summary(args.scenario, stats),
            "server_stop": stop,
            "target_p99_ms": args.target_p99_ms,
            "checks": checks,
            "verdict": "PASS" if all(checks.values()) else "FAIL",
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "python": platform.python_version(),
            "run_s": round(time.monotonic() - t_begin, 1),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if args.instrument:
            result["server_timing"] = _server_timing(tmp / "server_stats.json", t0, t1)
        if args.profile_server:
            result["server_profile_top"] = lr._profile_top(tmp / "server.prof")
        return result
    finally:
        if writer is not None:
            writer.close()
        for p in workers:
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        lr._stop(server, 10)
        if args.keep:
            print(f"  kept {tmp}", file=sys.stderr)
        else:
            if not result:
                with contextlib.suppress(OSError):
                    tail = (tmp / "server.log").read_text(errors="replace")[-2000:]
                    print(f"--- server.log (tail)\n{tail}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)


def _stats_summary(scenario: str, stats: dict[str, Any]) -> dict[str, Any]:
    """The server's own counters (candles: updates per room; stream: channel health)."""
    if "error" in stats:
        return stats
    if scenario == "candles":
        rooms = stats.get("broadcaster", {}).get("rooms", [])
        return {
            "rooms": len(rooms),
            "clients": stats.get("broadcaster", {}).get("totalClients"),
            "updates_sent_total": sum(r.get("updates", 0) for r in rooms),
            "rejected_trades": sum(
                m.get("rejectedTrades", 0) for m in stats.get("aggregator", {}).get("markets", [])
            ),
            "bad_rows": sum(m.get("badRows", 0) for m in stats.get("aggregator", {}).get("markets", [])),
        }
    return stats


def _candle_figures(
    args: argparse.Namespace,
    recs: np.ndarray[Any, Any],
    kept: np.ndarray[Any, Any],
    write_ns: np.ndarray[Any, Any],
    sym_of: np.ndarray[Any, Any],
    *,
    t0: int,
    t1: int,
    n_intervals: int,
) -> dict[str, Any]:
    """Latency, loss, merges and throttling of the candle run."""
    n_rooms = args.symbols * n_intervals
    g, key, app, kern = (recs[:, j] for j in range(4))
    room = g % n_rooms
    known = (key >= 0) & (key < write_ns.size)
    wrong = known & (sym_of[np.clip(key, 0, max(0, write_ns.size - 1))] != room // n_intervals)
    ok = known & ~wrong
    g, key, app, kern, room = g[ok], key[ok], app[ok], kern[ok], room[ok]
    wt = write_ns[key]
    win = (wt >= t0) & (wt < t1)
    # First receipt of each (room, trade), over the whole run (the window's first update has a
    # predecessor before it): when the server had sent it, give or take loopback.
    first: dict[tuple[int, int], int] = {}
    for r, k, a in zip(room.tolist(), key.tolist(), app.tolist(), strict=True):
        if a < first.get((r, k), 1 << 62):
            first[(r, k)] = a
    every: dict[int, list[int]] = {}
    for r, k in first:
        every.setdefault(r, []).append(k)
    by_room: dict[int, list[int]] = {}  # the updates of the window
    throttled: set[tuple[int, int]] = set()
    merged = 0
    throttle_ns = int(args.throttle_s * 1e9)
    for r in range(n_rooms):
        sent = sorted(every.get(r, []))
        for prev, k in itertools.pairwise(sent):
            if write_ns[k] < first[(r, prev)] + throttle_ns and t0 <= write_ns[k] < t1:
                throttled.add((r, k))
        by_room[r] = [k for k in sent if t0 <= write_ns[k] < t1]
        s = r // n_intervals
        written = np.flatnonzero((sym_of == s) & (write_ns >= t0) & (write_ns < t1))
        merged += int(np.isin(written, np.asarray(by_room[r], dtype=np.int64), invert=True).sum())
    lat = (app[win] - wt[win]) / 1e6
    klat = (kern[win] - wt[win]) / 1e6
    flag = np.asarray(
        [(r, k) in throttled for r, k in zip(room[win].tolist(), key[win].tolist(), strict=True)]
    )
    lat_clean = lat[~flag] if flag.size else lat
    # Loss: every kept client must hold every update its room sent in the window.
    got: dict[int, set[int]] = {}
    for c, k in zip(g[win].tolist(), key[win].tolist(), strict=True):
        got.setdefault(c, set()).add(k)
    lost = [len(set(by_room.get(c % n_rooms, [])) - got.get(c, set())) for c in kept.tolist()]
    updates = sum(len(v) for v in by_room.values())
    return {
        "rooms_or_groups": n_rooms,
        "received_in_window": int(lat.size),
        "received_per_s": lat.size / ((t1 - t0) / 1e9),
        "updates_sent_in_window": updates,
        "updates_per_room_per_s": updates / n_rooms / ((t1 - t0) / 1e9),
        "latency_ms": _q(lat),
        "kernel_arrival_latency_ms": _q(klat),
        "latency_ms_without_possibly_throttled": _q(lat_clean),
        "possibly_throttled_updates": len(throttled),
        "merged_trades": merged,
        "wrong_symbol_updates": int(wrong.sum()),
        "over_target": _slow(lat, wt[win], t0, args.target_p99_ms),
        "_lost": lost,
    }


def _stream_figures(
    args: argparse.Namespace, recs: np.ndarray[Any, Any], kept: np.ndarray[Any, Any], t0: int, t1: int
) -> dict[str, Any]:
    """Latency, loss and tick regularity of the stream run."""
    n_groups = args.symbols
    g, key, app, kern = (recs[:, j] for j in range(4))
    ts = key * 1_000_000
    win = (ts >= t0) & (ts < t1)
    lat = (app[win] - ts[win]) / 1e6
    klat = (kern[win] - ts[win]) / 1e6
    sent: dict[int, set[int]] = {}
    got: dict[int, set[int]] = {}
    for c, k in zip(g[win].tolist(), key[win].tolist(), strict=True):
        sent.setdefault(c % n_groups, set()).add(k)
        got.setdefault(c, set()).add(k)
    lost = [len(sent.get(c % n_groups, set()) - got.get(c, set())) for c in kept.tolist()]
    gaps = np.concatenate([np.diff(sorted(v)) for v in sent.values()] or [np.zeros(0)]).astype(np.float64)
    ticks = sum(len(v) for v in sent.values())
    return {
        "rooms_or_groups": n_groups,
        "received_in_window": int(lat.size),
        "received_per_s": lat.size / ((t1 - t0) / 1e9),
        "ticks_in_window": ticks,
        "tick_interval_ms": {
            "min": float(gaps.min()) if gaps.size else float("nan"),
            "p50": lr._pct(gaps, 50),
            "max": float(gaps.max()) if gaps.size else float("nan"),
        },
        "latency_ms": _q(lat),
        "kernel_arrival_latency_ms": _q(klat),
        "over_target": _slow(lat, ts[win], t0, args.target_p99_ms),
        "_lost": lost,
    }


def report(r: dict[str, Any]) -> None:
    """The table."""
    lat, kern = r["latency_ms"], r["kernel_arrival_latency_ms"]
    lags = ", ".join(f"p99 {x['p99']:.1f} / max {x['max']:.1f}" for x in r["client_loop_lag_ms"])
    took = r["writer_stamp_to_flushed_ms"]

    def q(v: dict[str, float]) -> str:
        return f"p50 {v['p50']:.1f}  p95 {v['p95']:.1f}  p99 {v['p99']:.1f}  max {v['max']:.1f} ms"

    if r["scenario"] == "candles":
        what = (
            f"{r['symbols']} symbols × {','.join(r['intervals'])} = {r['rooms_or_groups']} rooms, "
            f"trade poll {r['trade_poll_ms']:g} ms, a trade per symbol every "
            f"{r['trade_gap_s'][0]:g}–{r['trade_gap_s'][1]:g} s"
        )
        flow = (
            f"{r['trades_per_s']:.1f} trades/s written, {r['updates_sent_in_window']} updates sent "
            f"({r['updates_per_room_per_s']:.2f}/s per room), {r['received_in_window']:,} received "
            f"({r['received_per_s']:,.0f}/s); {r['merged_trades']} trades merged, "
            f"{r['possibly_throttled_updates']} updates possibly throttled"
        )
    else:
        t = r["tick_interval_ms"]
        what = (
            f"price_updates every {r['price_interval_s']:g} s, {r['symbols']} symbols "
            f"({r['rooms_or_groups']} subscription groups), server started via {r['server_started_via']}"
        )
        flow = (
            f"{r['ticks_in_window']} ticks (interval min {t['min']:.0f} / p50 {t['p50']:.0f} / "
            f"max {t['max']:.0f} ms), {r['received_in_window']:,} received ({r['received_per_s']:,.0f}/s), "
            f"{r['trades_per_s']:.1f} trades/s written"
        )
    rows = [
        (
            "scenario",
            f"{r['scenario']}: {what}"
            + (", server pinned to its own core" if r["pinned"] else "")
            + (f", nice {r['nice']}" if r["nice"] else ""),
        ),
        (
            "clients connected",
            f"{r['connected']:,} of {r['clients']:,} in {r['client_procs']} processes "
            f"({r['connect_failures']} failed, {r['connect_s']:.1f} s)",
        ),
        ("measured", f"{r['measured_s']:.1f} s"),
        ("flow", flow),
        ("latency → client", q(lat)),
        ("  kernel arrival", q(kern)),
    ]
    if r["scenario"] == "candles":
        rows.append(("  not throttled", q(r["latency_ms_without_possibly_throttled"])))
    rows += [
        (
            "over the target",
            f"{r['over_target']['count']} messages, in window seconds {r['over_target']['window_seconds']}",
        ),
        (
            "kept up / closed / lost",
            f"{r['kept_up']:,} / {r['closed_in_window']} / {r['lost_total']} messages lost "
            f"({r['clients_with_loss']} clients, max {r['lost_max']})",
        ),
        (
            "order",
            f"first messages {r['first_messages']}; data before ready {r['data_before_ready']}, "
            f"out of order {r['out_of_order']}, duplicates {r['duplicates']}, bad {r['bad_messages']}",
        ),
        ("server CPU", f"{r['server_cpu_pct']:.0f} % of one core"),
        (
            "server RSS",
            f"avg {r['server_rss_mb_avg']:.1f} MB, peak {r['server_rss_mb_peak_window']:.1f} MB "
            f"(VmHWM {r['server_vmhwm_mb']:.1f} MB)",
        ),
        (
            "client processes CPU",
            " + ".join(f"{x:.0f} %" for x in r["client_cpu_pct"]) + f" (loop lag ms: {lags})",
        ),
        (
            "driver (trade writer)",
            f"CPU {r['driver_cpu_pct']:.0f} %; stamp → flushed p99 {took['p99']:.2f} "
            f"max {took['max']:.2f} ms; late on schedule p99 {r['writer_late_ms']['p99']:.1f} ms",
        ),
        (
            "machine",
            f"{r['cpus']} cores, {r['machine_busy_pct']:.0f} % busy in the window (other processes: "
            f"{r['other_processes_cpu_pct']:.0f} % of one core), load avg {r['loadavg'][0]:.2f}",
        ),
        ("errors", ", ".join(f"{k} {v}" for k, v in sorted(r["errors"].items())) or "-"),
        (
            "verdict",
            f"{r['verdict']} (p99 {lat['p99']:.1f} ms vs target ≤ {r['target_p99_ms']:g} ms; "
            + ", ".join(f"{k}={v}" for k, v in r["checks"].items())
            + ")",
        ),
    ]
    print(f"\n== load_serve2 {r['scenario']} ({r['run_s']:.0f} s run)")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    st = r.get("server_timing")
    if st and "error" not in st:
        for key, label in (
            ("trade_written_to_fold_ms", "server: trade → fold"),
            ("broadcast_ms", "server: broadcast / tick"),
            ("event_loop_lag_ms", "server: event-loop lag"),
        ):
            v = st[key]
            print(f"  {label:<26} p50 {v['p50']:.2f}  p99 {v['p99']:.2f}  max {v['max']:.2f} ms")
        if st["broadcast_us_per_client"] is not None:
            print(
                f"  {'server: broadcasts':<26} {st['broadcasts_per_s']:.1f}/s, "
                f"{st['clients_per_broadcast']:.0f} clients each, "
                f"{st['broadcast_us_per_client']:.1f} µs per client"
            )
        if r["scenario"] == "candles":
            print(
                f"  {'server: throttle':<26} {st['throttle_timers']} updates held back "
                f"(max {st['throttle_wait_max_ms']:.0f} ms), {st['throttle_merged']} merged"
            )
        gcp = st["gc_pauses"]
        print(
            f"  {'server: gc pauses':<26} "
            + ", ".join(f"{k} {v['count']}× max {v['max_ms']:.1f} ms" for k, v in gcp.items())
        )
    elif st:
        print(f"  server timing: {st['error']}")
    for line in r.get("server_profile_top", []):
        print(f"  | {line}")


def _gap(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    a, b = float(lo), float(hi or lo)
    if not 0 < a <= b:
        raise argparse.ArgumentTypeError("expected LO-HI seconds, 0 < LO <= HI")
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=("candles", "stream"),
        default=["candles", "stream"],
        help="what to run",
    )
    parser.add_argument("--clients", type=int, default=1000, help="connections in all")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="wait after every client subscribed, s")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--symbols", type=int, default=5, help="recorded symbols (LOAD00USDT, …)")
    parser.add_argument(
        "--intervals", default="1m,5m,15m,1h", help="candles: intervals, one room each per symbol"
    )
    parser.add_argument(
        "--trade-gap", type=_gap, default=(1.05, 1.25), help="seconds between two trades of a symbol, LO-HI"
    )
    parser.add_argument("--trade-poll-ms", type=float, default=20.0, help="the servers' trade poll interval")
    parser.add_argument("--throttle-s", type=float, default=1.0, help="the candle server's update throttle")
    parser.add_argument("--price-interval", type=float, default=1.0, help="stream: price_update interval, s")
    parser.add_argument(
        "--stream-symbols-per-client", type=int, default=1, help="stream: symbols per subscribe"
    )
    parser.add_argument(
        "--stream-via",
        choices=("auto", "cli", "direct"),
        default="auto",
        help="stream: `mmdata serve stream` when it exists (auto), or StreamServer from a small launcher",
    )
    parser.add_argument("--target-p99-ms", type=float, default=100.0)
    parser.add_argument("--grace", type=float, default=1.5, help="clients keep reading after the window, s")
    parser.add_argument("--max-run-s", type=float, default=170.0, help="bound on the waits, s")
    parser.add_argument("--seed", type=int, default=7, help="the trade schedule's random seed")
    parser.add_argument(
        "--json", action="store_true", help="also print the figures as one JSON line per scenario"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a verdict is FAIL")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--profile-server", action="store_true", help="run the server under cProfile")
    parser.add_argument("--instrument", action="store_true", help="time the server's folds and broadcasts")
    parser.add_argument(
        "--pin-server", action="store_true", help="the server alone on the first core, the rest on the others"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="scheduling priority of this run's processes (negative needs root): on a machine shared "
        "with other work, tells the server's own latency from waiting for a core",
    )
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.scenario = args.scenario[0]
        asyncio.run(worker_main(args))
        return
    failed = False
    for scenario in args.scenario:
        one = argparse.Namespace(**{**vars(args), "scenario": scenario})
        try:
            r = run(one)
        except lr._Stop as exc:
            print(f"load_serve2 {scenario}: {exc}", file=sys.stderr)
            sys.exit(2)
        report(r)
        OUT.mkdir(exist_ok=True)
        path = OUT / f"load_{scenario}.json"
        path.write_text(json.dumps(r, indent=2) + "\n")
        print(f"  saved {path.relative_to(HERE.parent)}")
        if args.json:
            print(json.dumps(r, separators=(",", ":")))
        failed |= r["verdict"] != "PASS"
    if args.check and failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
