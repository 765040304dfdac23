"""Relay load test: N WebSocket clients on one symbol while the recorder writes ~100 diffs/s.

Run with ``nox -s load`` (or ``python benchmarks/load_relay.py [--clients 1000] [--seconds 30]``).
Everything runs on loopback, each part in its own process, and the whole run is bounded in time:

1. the recorder: ``python -m mmdata record --simulate`` (embedded simulator; Kraken BTC/USD at
   ``--rate 5`` writes 100 book updates/s, one live diff row each, plus ~28 trades/s; the
   simulator batches Binance diffs per 100 ms, so ``--exchange binance`` gets 10 diffs/s at any rate);
2. the relay: ``python -m mmdata serve relay --port 0 --poll-ms 10`` on the same data folder;
   its CPU time (``/proc/<pid>/stat``) and RSS (``VmRSS``, peak ``VmHWM``) are read over the window;
3. ``--procs`` client processes with ``--clients`` connections in all to
   ``/ws?exchange=…&symbol=…`` (``from=tail``), opened at ``--connect-rate`` per second. A client
   is a bare socket, not a ``websockets`` client (1,000 of those would need more CPU than the
   server): it sends the HTTP upgrade, checks ``101`` and ``Sec-WebSocket-Accept``, parses the
   server's frames itself and answers pings with masked pongs (the server's keepalive).

After ``--warmup`` seconds with every client connected, a window of ``--seconds`` is measured.

Latency of a ``diff`` or ``trade`` message = receipt time − the row's ``recv_time_ns`` (the
recorder's receive time, stamped just before it writes the row: so this includes the recorder's
own handling of the frame, the relay's poll interval and fan-out, and loopback TCP). Two receipt
times are kept per message:

* ``app``: ``time.time_ns()`` when the client process reads the bytes (the end-to-end figure, the
  one checked against the target; it also holds the client process's own scheduling delay);
* ``kernel``: the kernel's arrival timestamp of the bytes on the client socket (``SO_TIMESTAMPNS``;
  for TCP the stamp of the last segment read) — the same minus the client's scheduling delay.

Messages lost per client: every client keeps the ``recv_seq`` of each diff and trade it got; the
rows the recorder wrote (``live/live_depth_diffs*.ndjson`` and ``live_trades*.ndjson``, rotated
files included) between the lowest and the highest ``recv_seq`` the client received inside the
window must all be among them. Trades come from their own file and may arrive a poll after book
rows with a higher ``recv_seq`` (docs/serving.md, "Ordering"), so a client still short of rows
at the end keeps reading for up to ``--drain`` seconds; what is still missing then is lost.
Clients the relay dropped (``status dropped`` / close 1008) or that lost their connection did not
keep up and are counted apart.

Target (issue): p99 ≤ 50 ms with 1,000 clients, and 0 lost messages for clients that keep up.
``--check`` makes a FAIL exit with status 1. The figures land in ``benchmarks/out/load_relay.json``
and, with ``--json``, as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import platform
import pstats
import queue
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; SCM_TIMESTAMPNS has the same value
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_SEQ = b',"data":{"recv_seq":'
_TIME_KEY = b'"recv_time_ns":'
_STATUS_KEY = b'"status":"'
_TYPE_AT = len(b'{"type":"')

#: ``--instrument``: the relay run through this wrapper, which times the hub's polls and fan-outs
#: (benchmark-side monkeypatching; nothing in src/ changes) and writes them out at exit.
INSTRUMENT = r"""
import atexit, json, os, sys, time
from mmdata.serve import hub as H, sources as S
ticks, rows = [], []  # (wall ns, fan-out ns, clients, messages) / (wall ns, hub-seen lag ns)
last, gaps = [0], []  # the tick before / (wall ns, ns since it)
poll, fan_out, tick = S.LiveSource.poll, H.Hub._fan_out, H.Hub._tick
def _poll(self):
    items = poll(self)
    now = time.time_ns()
    rows.extend((now, now - it.time_ns) for it in items)
    return items
def _fan_out(self, messages, keys):
    t = time.perf_counter_ns()
    fan_out(self, messages, keys)
    ticks.append((time.time_ns(), time.perf_counter_ns() - t, len(self.live), len(messages)))
def _tick(self):
    now = time.perf_counter_ns()
    if last[0]:
        gaps.append((time.time_ns(), now - last[0]))
    last[0] = now
    tick(self)
S.LiveSource.poll, H.Hub._fan_out, H.Hub._tick = _poll, _fan_out, _tick
atexit.register(lambda: open(os.environ["MMDATA_LOAD_STATS"], "w").write(
    json.dumps({"ticks": ticks, "rows": rows, "gaps": gaps})))
from mmdata.cli import main
sys.argv = ["mmdata", *sys.argv[1:]]
main()
"""

# ======================================================================================
# Client worker (one process, many connections)
# ======================================================================================

HANDSHAKE, OPEN, CLOSED = 0, 1, 2


class _Client:
    """One relay connection, as bare as it can be."""

    __slots__ = (
        "buf",
        "close_code",
        "closed_at",
        "closed_why",
        "fd",
        "hi",
        "key",
        "lat_n",
        "lat_sum",
        "lo",
        "other",
        "ready",
        "seqs",
        "sock",
        "state",
        "statuses",
    )

    def __init__(self, sock: socket.socket, key: bytes, ready: asyncio.Future[str]) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.key = key
        self.ready = ready
        self.state = HANDSHAKE
        self.buf = b""
        self.seqs = array.array("q")  # recv_seq of every diff and trade received
        self.lat_sum = 0  # latency (app, ns) summed over the window's diff/trade messages
        self.lat_n = 0
        self.lo = -1  # lowest / highest recv_seq received inside the window
        self.hi = -1
        self.other: Counter[str] = Counter()  # messages of other types
        self.statuses: Counter[str] = Counter()
        self.close_code = 0
        self.closed_why = ""
        self.closed_at = 0


class _Worker:
    """The client process's state (see :func:`worker_main`)."""

    def __init__(self) -> None:
        self.t0 = 1 << 62  # the window, wall ns (set by the parent)
        self.t1 = 1 << 62
        self.app = array.array("q")  # latency, ns, of each diff/trade received in the window
        self.kern = array.array("q")
        self.no_stamp = 0  # reads without a kernel timestamp (the app time stands in)
        self.lags: list[float] = []  # event-loop lag samples in the window, s
        self.bad_frames: Counter[str] = Counter()
        self.binary: Counter[str] = Counter()  # binary-frame messages by type
        self.cache: dict[bytes, tuple[array.array[int], array.array[int]]] = {}
        self.cache_hits = 0
        self.rbuf = bytearray(1 << 18)
        self.rview = memoryview(self.rbuf)
        self.anc = socket.CMSG_SPACE(16)
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- reading ------------------------------------------------------------------------
    def on_readable(self, c: _Client) -> None:
        try:
            n, anc, _flags, _addr = c.sock.recvmsg_into([self.rbuf], self.anc)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(c, f"socket error: {exc.strerror or exc}")
            return
        now = time.time_ns()
        if n == 0:
            self.close(c, "server closed the connection")
            return
        kts = 0
        for _level, kind, raw in anc:
            if kind == SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack_from("qq", raw)
                kts = sec * 1_000_000_000 + nsec
        if not kts:
            self.no_stamp += 1
            kts = now
        data = self.rview[:n].tobytes()
        if c.state == OPEN:
            self.feed(c, data, now, kts)
        else:
            self.handshake(c, data, now, kts)

    def handshake(self, c: _Client, data: bytes, now: int, kts: int) -> None:
        buf = c.buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 16384:
                self.close(c, "handshake answer too long")
            else:
                c.buf = buf
            return
        head = buf[:end].decode("latin-1").split("\r\n")
        if not head[0].startswith("HTTP/1.1 101"):
            self.close(c, f"handshake refused: {head[0][:60]}")
            return
        accept = base64.b64encode(hashlib.sha1(c.key + _WS_GUID).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if headers.get("sec-websocket-accept") != accept:
            self.close(c, "handshake: wrong Sec-WebSocket-Accept")
            return
        c.state = OPEN
        c.buf = b""
        if not c.ready.done():
            c.ready.set_result("")
        if end + 4 < len(buf):
            self.feed(c, buf[end + 4 :], now, kts)

    def feed(self, c: _Client, data: bytes, now: int, kts: int) -> None:
        """Parse server frames (unmasked, unfragmented) out of ``c.buf + data``.

        Every client of a process gets the same bytes for a fan-out, so a read that is exactly
        whole diff/trade frames is remembered: a later read with *equal* bytes (the dict compares
        them in full) reuses its parse — each client's bytes are still checked, just once cheaper.
        """
        whole = not c.buf  # the read starts at a frame boundary
        if whole:
            hit = self.cache.get(data)
            if hit is not None:
                self.cache_hits += 1
                self.account(c, hit[0], hit[1], now, kts)
                return
        else:
            data = c.buf + data
        n = len(data)
        i = 0
        seqs = array.array("q")
        times = array.array("q")
        plain = True  # nothing but whole diff/trade text frames so far
        closing = ""
        while n - i >= 2:
            b0 = data[i]
            ln = data[i + 1]
            if ln & 0x80:
                self.bad_frames["masked server frame"] += 1
                closing = "protocol error: masked server frame"
                break
            if ln < 126:
                p = i + 2
            elif ln == 126:
                if n - i < 4:
                    break
                ln = (data[i + 2] << 8) | data[i + 3]
                p = i + 4
            else:
                if n - i < 10:
                    break
                ln = int.from_bytes(data[i + 2 : i + 10], "big")
                p = i + 10
            end = p + ln
            if end > n:
                break
            op = b0 & 0x0F
            if op in (1, 2) and b0 & 0x80:  # a whole text (1) or binary (2) message
                q = data.find(b'"', p + _TYPE_AT, end)
                kind = data[p + _TYPE_AT : q]
                if op == 2:  # the relay's own sends (not its fan-out) go out as binary frames
                    self.binary[kind.decode("ascii", "replace")] += 1
                    plain = False
                if kind in (b"diff", b"trade"):
                    s = data.find(_DATA_SEQ, q, end)
                    if s < 0:
                        self.bad_frames[f"{kind.decode()} without recv_seq"] += 1
                        plain = False
                    else:
                        s += len(_DATA_SEQ)
                        comma = data.find(b",", s, end)
                        seqs.append(int(data[s:comma]))
                        t = comma + 1 + len(_TIME_KEY)
                        times.append(int(data[t : data.find(b",", t, end)]))
                else:
                    plain = False
                    name = kind.decode("ascii", "replace")
                    c.other[name] += 1
                    if name == "status":
                        s = data.find(_STATUS_KEY, q, end) + len(_STATUS_KEY)
                        c.statuses[data[s : data.find(b'"', s, end)].decode("ascii", "replace")] += 1
            elif op == 9:  # ping: answer with a masked pong carrying the same payload
                plain = False
                self.send_control(c, 0xA, data[p:end])
            elif op == 8:  # close
                c.close_code = int.from_bytes(data[p : p + 2], "big") if ln >= 2 else 1005
                closing = f"close frame {c.close_code}: {data[p + 2 : end].decode('utf-8', 'replace')}"
                i = end
                break
            else:
                plain = False
                if op != 0xA:
                    self.bad_frames[f"opcode {op} fin {b0 >> 7}"] += 1
            i = end
        c.buf = data[i:] if i < n else b""
        if seqs:
            self.account(c, seqs, times, now, kts)
            if whole and plain and i == n:
                if len(self.cache) >= 256:
                    self.cache.clear()
                self.cache[data] = (seqs, times)
        if closing:
            self.close(c, closing)

    def account(
        self, c: _Client, seqs: array.array[int], times: array.array[int], now: int, kts: int
    ) -> None:
        """A read's diff/trade messages: their recv_seq for the loss check, latency in the window."""
        c.seqs.extend(seqs)
        if self.t0 <= now < self.t1:
            lat = [now - t for t in times]
            self.app.extend(lat)
            c.lat_sum += sum(lat)
            c.lat_n += len(lat)
            self.kern.extend([kts - t for t in times])
            lo, hi = min(seqs), max(seqs)
            if c.lo < 0 or lo < c.lo:
                c.lo = lo
            c.hi = max(c.hi, hi)

    # -- writing and closing ----------------------------------------------------------------
    @staticmethod
    def send_control(c: _Client, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[k & 3] for k, b in enumerate(payload[:125]))
        with contextlib.suppress(OSError):  # a full send buffer: the server will ping again
            c.sock.send(bytes((0x80 | opcode, 0x80 | len(masked))) + mask + masked)

    def close(self, c: _Client, why: str) -> None:
        if c.state == CLOSED:
            return
        was_open = c.state == OPEN
        c.state = CLOSED
        c.closed_why = why
        c.closed_at = time.time_ns()
        assert self.loop is not None
        self.loop.remove_reader(c.fd)
        c.sock.close()
        if not c.ready.done():
            c.ready.set_result(why if not was_open else "")

    # -- connecting ---------------------------------------------------------------------------
    async def connect(self, host: str, port: int, path: str, timeout: float) -> tuple[_Client | None, str]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            return None, f"connect: {type(exc).__name__} {getattr(exc, 'strerror', '') or ''}".strip()
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            "User-Agent: mmdata-load-relay\r\n\r\n"
        ).encode()
        c = _Client(sock, key, loop.create_future())
        loop.add_reader(c.fd, self.on_readable, c)
        try:
            sock.send(request)
        except OSError as exc:
            self.close(c, f"send: {exc}")
            return None, c.closed_why
        try:
            why = await asyncio.wait_for(asyncio.shield(c.ready), timeout)
        except TimeoutError:
            self.close(c, "handshake timeout")
            return None, "handshake timeout"
        return (c, "") if not why else (None, why)

    async def lag_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(0.01)
            lag = loop.time() - t - 0.01
            if self.t0 <= time.time_ns() < self.t1:
                self.lags.append(lag)


def _written_seqs(live_dir: Path) -> np.ndarray[Any, np.dtype[np.int64]]:
    """recv_seq of every diff/checksum and trade row in the live files (rotated ones too)."""
    seqs: list[int] = []
    for pattern, trades in (("live_depth_diffs*.ndjson", False), ("live_trades*.ndjson", True)):
        for path in sorted(live_dir.glob(pattern)):
            for line in path.read_bytes().splitlines():
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # a torn last line (the recorder is still writing)
                if trades or rec.get("kind", "diff") in ("diff", "checksum"):
                    seqs.append(int(rec["recv_seq"]))
    return np.unique(np.asarray(seqs, dtype=np.int64))


async def worker_main(args: argparse.Namespace) -> None:
    """A client process: connect, tell the parent, take the window, measure, report."""
    w = _Worker()
    loop = asyncio.get_running_loop()
    w.loop = loop
    lag_task = loop.create_task(w.lag_monitor())
    clients: list[_Client] = []
    errors: Counter[str] = Counter()
    t_start = time.monotonic()

    async def one(delay: float) -> None:
        await asyncio.sleep(delay)
        c, why = await w.connect("127.0.0.1", args.port, args.path, 15.0)
        if c is None:
            errors[why] += 1
        else:
            clients.append(c)

    await asyncio.gather(*(one(k / args.connect_rate) for k in range(args.clients)))
    _emit(
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
        return  # the parent went away
    window = json.loads(line)
    w.t0, w.t1 = int(window["t0"]), int(window["t1"])
    open_at_t0: set[int] = set()

    async def note_open() -> None:
        await asyncio.sleep(max(0.0, (w.t0 - time.time_ns()) / 1e9))
        open_at_t0.update(id(c) for c in clients if c.state == OPEN)

    note_task = loop.create_task(note_open())
    # Grace after the window: a row written just before a counted one may still be on its way.
    await asyncio.sleep(max(0.0, (w.t1 - time.time_ns()) / 1e9) + float(window["grace_s"]))
    lag_task.cancel()
    await note_task
    written = _written_seqs(Path(args.live_dir))

    def missing(c: _Client) -> np.ndarray[Any, np.dtype[np.int64]]:
        expected = written[np.searchsorted(written, c.lo) : np.searchsorted(written, c.hi, "right")]
        got = np.frombuffer(c.seqs, dtype=np.int64)
        return expected[~np.isin(expected, got)]

    # Trades come from their own file and may arrive a poll later than book rows with a higher
    # recv_seq (docs/serving.md, "Ordering"): a client whose window ends between the two keeps
    # reading until it has them all, or until the drain time is up (then they count as lost).
    drain_end = time.monotonic() + float(window["drain_s"])
    late: set[int] = set()
    check = [c for c in clients if id(c) in open_at_t0 and c.lo >= 0 and not c.closed_at]
    while True:
        check = [c for c in check if c.state != CLOSED and missing(c).size]
        if not check or time.monotonic() >= drain_end:
            break
        late.update(id(c) for c in check)
        await asyncio.sleep(0.25)
    drain_s = float(window["drain_s"]) - max(0.0, drain_end - time.monotonic())
    for c in clients:
        if c.state != CLOSED:
            loop.remove_reader(c.fd)

    lost: list[int] = []  # per client that kept up
    examples: list[dict[str, Any]] = []
    unknown = dups = got_in_window = 0
    kept = dropped = disconnected = not_open = 0
    statuses: Counter[str] = Counter()
    others: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for c in clients:
        statuses.update(c.statuses)
        others.update(c.other)
        received = np.frombuffer(c.seqs, dtype=np.int64) if len(c.seqs) else np.zeros(0, np.int64)
        uniq = np.unique(received)
        dups += int(received.size - uniq.size)
        unknown += int(uniq.size - np.isin(uniq, written, assume_unique=True).sum())
        if id(c) not in open_at_t0:
            not_open += 1
            continue
        if c.state == CLOSED and c.closed_at < w.t1:
            closes[c.closed_why[:80]] += 1
            if c.statuses.get("dropped") or c.close_code == 1008:
                dropped += 1
            else:
                disconnected += 1
            continue
        kept += 1
        if c.lo < 0:
            lost.append(-1)  # kept its connection but got nothing in the window
            continue
        got_in_window += int(np.searchsorted(written, c.hi, "right") - np.searchsorted(written, c.lo))
        gone = missing(c)
        lost.append(int(gone.size))
        if gone.size and len(examples) < 5:
            order = received.tolist()  # arrival order
            at = next((k for k, x in enumerate(order) if x > gone[0]), len(order))
            examples.append(
                {
                    "lo": c.lo,
                    "hi": c.hi,
                    "missing": gone[:10].tolist(),
                    "n_missing": int(gone.size),
                    "arrival_order_around": order[max(0, at - 5) : at + 5],
                    "received": len(order),
                }
            )
    for c in clients:
        if c.state != CLOSED:
            with contextlib.suppress(OSError):
                w.send_control(c, 0x8, struct.pack("!H", 1000))
                c.sock.close()
    out = Path(args.out)
    np.save(out / f"app_{args.worker_id}.npy", np.frombuffer(w.app, dtype=np.int64))
    np.save(out / f"kern_{args.worker_id}.npy", np.frombuffer(w.kern, dtype=np.int64))
    lags = np.asarray(w.lags) * 1000 if w.lags else np.zeros(1)
    means = [c.lat_sum / c.lat_n / 1e6 for c in clients if c.lat_n]
    _emit(
        {
            "event": "result",
            "worker": args.worker_id,
            "kept": kept,
            "dropped": dropped,
            "disconnected": disconnected,
            "not_open_at_t0": not_open,
            "lost": lost,
            "lost_examples": examples,
            "expected_in_windows": got_in_window,
            "completed_in_drain": len(late),
            "drain_s": drain_s,
            "duplicates": dups,
            "unknown_seqs": unknown,
            "received_in_window": len(w.app),
            "statuses": dict(statuses),
            "other_messages": dict(others),
            "closes": dict(closes),
            "bad_frames": dict(w.bad_frames),
            "binary_frames": dict(w.binary),
            "reads_without_kernel_stamp": w.no_stamp,
            "parse_cache_hits": w.cache_hits,
            "client_mean_latency_ms": means,
            "loop_lag_ms": {
                "p50": float(np.percentile(lags, 50)),
                "p99": float(np.percentile(lags, 99)),
                "max": float(lags.max()),
            },
        }
    )


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# ======================================================================================
# The parent: recorder, relay, workers, sampling, report
# ======================================================================================


def _with_children(pid: int) -> list[int]:
    """``pid`` and its child processes (``serve relay --workers N`` runs N children)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [pid, *(int(x) for x in f.read().split())]
    except OSError:
        return [pid]


def _proc_cpu(pid: int) -> float:
    """CPU seconds (utime + stime) of a live process and its children."""
    total = 0.0
    for p in _with_children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _proc_mem(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB, summed over the process and its children."""
    rss = hwm = 0.0
    for p in _with_children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("VmHWM:"):
                        hwm += int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss, hwm


def _machine_cpu() -> tuple[int, int, int]:
    """(busy, irq + softirq + steal, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    idle = vals[3] + vals[4]
    total = sum(vals)
    return total - idle, vals[5] + vals[6] + vals[7], total


class _Stop(Exception):
    """The run cannot go on (message says why)."""


def _check_alive(procs: dict[str, subprocess.Popen[Any] | None], during: str) -> None:
    for name, p in procs.items():
        if p is not None and p.poll() is not None:
            raise _Stop(f"the {name} exited with status {p.returncode} {during}")


def _wait_for(pred: Any, timeout: float, what: str, procs: dict[str, subprocess.Popen[Any] | None]) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        _check_alive(procs, f"while waiting for {what}")
        time.sleep(0.05)
    raise _Stop(f"timed out after {timeout:g} s waiting for {what}")


def _stop(proc: subprocess.Popen[Any] | None, timeout: float) -> str:
    """SIGINT, bounded wait, then kill; how it ended."""
    if proc is None or proc.poll() is not None:
        return "exited" if proc is not None else "-"
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout)
        return f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return "killed after timeout"


def _pin(pid: int, cpus: set[int]) -> None:
    """Restrict one of our own processes to ``cpus`` (``--pin-relay``; a no-op otherwise)."""
    if cpus != set(os.sched_getaffinity(0)):
        os.sched_setaffinity(pid, cpus)


def _read_rows(live_dir: Path) -> list[tuple[str, int]]:
    """(kind, recv_time_ns) of every row in the live files."""
    rows: list[tuple[str, int]] = []
    for pattern, trades in (("live_depth_diffs*.ndjson", False), ("live_trades*.ndjson", True)):
        for path in sorted(live_dir.glob(pattern)):
            for line in path.read_bytes().splitlines():
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                rows.append(("trade" if trades else str(rec.get("kind", "diff")), int(rec["recv_time_ns"])))
    return rows


def _health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def _pct(a: np.ndarray[Any, Any], q: float) -> float:
    return float(np.percentile(a, q)) if a.size else float("nan")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One load test; the figures."""
    t_begin = time.monotonic()
    budget_end = t_begin + args.max_run_s
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.clients + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need) if hard > 0 else need, hard))
    all_cpus = sorted(os.sched_getaffinity(0))
    relay_cpus = harness_cpus = set(all_cpus)
    if args.pin_relay and len(all_cpus) >= 2:
        relay_cpus, harness_cpus = {all_cpus[0]}, set(all_cpus[1:])
    tmp = Path(tempfile.mkdtemp(prefix="mmdata-load-relay-"))
    data, logs = tmp / "data", tmp / "logs"
    symbol_fs = re.sub(r"[/\-: ]", "", args.symbol)
    live_dir = data / args.exchange / symbol_fs / "live"
    recorder = server = None
    workers: list[subprocess.Popen[str]] = []
    result: dict[str, Any] = {}
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    try:
        # 1. the recorder -----------------------------------------------------------------
        cmd = [sys.executable, "-m", "mmdata", "record", "-e", args.exchange, "-s", args.symbol]
        cmd += ["--simulate", "--rate", str(args.rate), "--duration", str(args.max_run_s)]
        cmd += ["--data-dir", str(data), "--log-dir", str(logs), "--json", "-q"]
        rec_log = open(tmp / "recorder.log", "wb")  # noqa: SIM115 - closed with the tmp folder
        recorder = subprocess.Popen(cmd, stdout=rec_log, stderr=subprocess.STDOUT)
        _pin(recorder.pid, harness_cpus)
        diffs_file = live_dir / "live_depth_diffs.ndjson"
        _wait_for(
            lambda: diffs_file.is_file() and b'"kind":"snapshot"' in diffs_file.read_bytes(),
            30,
            "the recorder's first live snapshot",
            {"recorder": recorder},
        )
        # 2. the relay ----------------------------------------------------------------------
        cmd = [sys.executable, "-m", "mmdata", "serve", "relay", "--data-dir", str(data), "--port", "0"]
        cmd += ["--poll-ms", str(args.poll_ms), "--max-connections", str(max(2000, args.clients + 100))]
        cmd += ["--workers", str(args.relay_workers)]
        srv_log_path = tmp / "relay.log"
        srv_log = open(srv_log_path, "wb")  # noqa: SIM115
        env = dict(os.environ)
        if args.profile_server:
            cmd[1:3] = ["-m", "cProfile", "-o", str(tmp / "relay.prof"), "-m", "mmdata"]
        elif args.instrument:
            cmd[1:3] = ["-c", INSTRUMENT]
            env["MMDATA_LOAD_STATS"] = str(tmp / "relay_stats.json")
        server = subprocess.Popen(cmd, stdout=srv_log, stderr=subprocess.STDOUT, env=env)
        _pin(server.pid, relay_cpus)

        def port_seen() -> int:
            m = re.search(rb"relay listening on ws://[\d.]+:(\d+)", srv_log_path.read_bytes())
            return int(m.group(1)) if m else 0

        port = _wait_for(port_seen, 30, "the relay to listen", {"recorder": recorder, "relay": server})
        # 3. the clients ----------------------------------------------------------------------
        path = f"/ws?exchange={args.exchange}&symbol={symbol_fs}"
        per = [
            args.clients // args.procs + (1 if k < args.clients % args.procs else 0)
            for k in range(args.procs)
        ]
        for k, n in enumerate(per):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--worker-id", str(k)]
            cmd += ["--port", str(port), "--path", path, "--clients", str(n), "--out", str(tmp)]
            cmd += ["--connect-rate", str(args.connect_rate / args.procs), "--live-dir", str(live_dir)]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            workers.append(p)
            _pin(p.pid, harness_cpus)

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
                        raise _Stop(f"timed out waiting for the clients' {event!r} report") from None
                    alive = {"recorder": recorder, "relay": server}
                    alive |= {f"client process {k2}": p for k2, p in enumerate(workers) if k2 not in got}
                    _check_alive(alive, f"before its {event!r} report")
                    continue
                msg = json.loads(line)
                if msg.get("event") == event:
                    got[k] = msg
            return [got[k] for k in sorted(got)]

        connected = collect("connected", args.clients / args.connect_rate + 30)
        n_ok = sum(m["ok"] for m in connected)
        t0 = time.time_ns() + int(args.warmup * 1e9)
        t1 = t0 + int(args.seconds * 1e9)
        window = json.dumps({"t0": t0, "t1": t1, "grace_s": args.grace, "drain_s": args.drain}) + "\n"
        for p in workers:
            assert p.stdin is not None
            p.stdin.write(window)
            p.stdin.flush()
        # 4. the window: CPU at both ends, RSS sampled throughout -------------------------------
        time.sleep(max(0.0, (t0 - time.time_ns()) / 1e9))
        pids = {"relay": server.pid, "recorder": recorder.pid} | {
            f"client{k}": p.pid for k, p in enumerate(workers)
        }
        cpu0 = {name: _proc_cpu(pid) for name, pid in pids.items()}
        mach0 = _machine_cpu()
        w0 = time.monotonic()
        rss: list[float] = []
        client_rss: list[float] = []
        while time.time_ns() < t1:
            rss.append(_proc_mem(server.pid)[0])
            client_rss.append(max(_proc_mem(p.pid)[0] for p in workers))
            time.sleep(min(0.25, max(0.0, (t1 - time.time_ns()) / 1e9)))
        cpu1 = {name: _proc_cpu(pid) for name, pid in pids.items()}
        mach1 = _machine_cpu()
        wall = time.monotonic() - w0
        _, server_hwm = _proc_mem(server.pid)
        health = _health(port)
        results = collect("result", args.grace + args.drain + 60)
        stops = {"relay": _stop(server, 15), "recorder": _stop(recorder, 20)}
        # 5. figures ------------------------------------------------------------------------------
        rows = _read_rows(live_dir)
        in_win = Counter(kind for kind, t in rows if t0 <= t < t1)
        secs = (t1 - t0) / 1e9
        app = np.concatenate([np.load(tmp / f"app_{k}.npy") for k in range(len(workers))]) / 1e6
        kern = np.concatenate([np.load(tmp / f"kern_{k}.npy") for k in range(len(workers))]) / 1e6
        lost = [x for r in results for x in r["lost"]]
        means = np.asarray([x for r in results for x in r["client_mean_latency_ms"]])
        kept_lost = [x for x in lost if x >= 0]
        cpu = {name: 100 * (cpu1[name] - cpu0[name]) / wall for name in pids}
        stream = next(iter(health.get("streams") or []), {})
        ticks = max(1, mach1[2] - mach0[2])
        busy = 100 * (mach1[0] - mach0[0]) / ticks
        irq = 100 * (mach1[1] - mach0[1]) / ticks * (os.cpu_count() or 1)  # % of one core
        p99 = _pct(app, 99)
        checks = {
            "p99_le_target": bool(p99 <= args.target_p99_ms),
            "no_loss_for_clients_that_kept_up": bool(kept_lost) and max(kept_lost) == 0,
            "all_connected": n_ok == args.clients,
            "none_dropped": sum(r["dropped"] + r["disconnected"] for r in results) == 0,
        }
        result = {
            "exchange": args.exchange,
            "symbol": args.symbol,
            "sim_rate": args.rate,
            "poll_ms": args.poll_ms,
            "pinned": args.pin_relay and relay_cpus != harness_cpus,
            "clients": args.clients,
            "client_procs": args.procs,
            "connected": n_ok,
            "connect_failures": sum(m["failed"] for m in connected),
            "connect_errors": dict(sum((Counter(m["errors"]) for m in connected), Counter())),
            "connect_s": max(m["connect_s"] for m in connected),
            "measured_s": round(secs, 3),
            "written_diffs_per_s": (in_win["diff"] + in_win["checksum"]) / secs,
            "written_trades_per_s": in_win["trade"] / secs,
            "written_rows_per_s": sum(in_win.values()) / secs,
            "written_by_kind": dict(in_win),
            "received_in_window": int(app.size),
            "received_per_s": app.size / secs,
            "latency_ms": {
                "p50": _pct(app, 50),
                "p95": _pct(app, 95),
                "p99": p99,
                "max": float(app.max()) if app.size else float("nan"),
            },
            "kernel_arrival_latency_ms": {
                "p50": _pct(kern, 50),
                "p95": _pct(kern, 95),
                "p99": _pct(kern, 99),
                "max": float(kern.max()) if kern.size else float("nan"),
            },
            "kept_up": sum(r["kept"] for r in results),
            "dropped": sum(r["dropped"] for r in results),
            "disconnected": sum(r["disconnected"] for r in results),
            "not_open_at_window_start": sum(r["not_open_at_t0"] for r in results),
            "lost_max": max(kept_lost) if kept_lost else None,
            "lost_mean": float(np.mean(kept_lost)) if kept_lost else None,
            "clients_with_loss": sum(1 for x in kept_lost if x > 0),
            "lost_examples": [e for r in results for e in r["lost_examples"]][:5],
            "clients_without_window_data": sum(1 for x in lost if x < 0),
            "expected_in_windows": sum(r["expected_in_windows"] for r in results),
            "clients_completed_in_drain": sum(r["completed_in_drain"] for r in results),
            "drain_s": max(r["drain_s"] for r in results),
            "duplicates": sum(r["duplicates"] for r in results),
            "unknown_seqs": sum(r["unknown_seqs"] for r in results),
            "statuses": dict(sum((Counter(r["statuses"]) for r in results), Counter())),
            "other_messages": dict(sum((Counter(r["other_messages"]) for r in results), Counter())),
            "closes": dict(sum((Counter(r["closes"]) for r in results), Counter())),
            "bad_frames": dict(sum((Counter(r["bad_frames"]) for r in results), Counter())),
            "binary_frames": dict(sum((Counter(r["binary_frames"]) for r in results), Counter())),
            "reads_without_kernel_stamp": sum(r["reads_without_kernel_stamp"] for r in results),
            "parse_cache_hits": sum(r["parse_cache_hits"] for r in results),
            "per_client_mean_latency_ms": {
                "min": _pct(means, 0),
                "p50": _pct(means, 50),
                "max": _pct(means, 100),
            },
            "client_loop_lag_ms": [r["loop_lag_ms"] for r in results],
            "server_cpu_pct": cpu["relay"],
            "server_rss_mb_avg": float(np.mean(rss)) if rss else float("nan"),
            "server_rss_mb_peak_window": max(rss) if rss else float("nan"),
            "server_vmhwm_mb": server_hwm,
            "recorder_cpu_pct": cpu["recorder"],
            "client_cpu_pct": [cpu[f"client{k}"] for k in range(len(workers))],
            "client_rss_mb_peak": max(client_rss) if client_rss else float("nan"),
            "machine_busy_pct": busy,
            "irq_softirq_steal_cpu_pct": irq,
            "other_processes_cpu_pct": busy * (os.cpu_count() or 1) - irq - sum(cpu.values()),
            "server_health": {
                k: stream.get(k) for k in ("clients", "rows", "messages", "dropped_clients", "state")
            }
            | {"connections": health.get("connections"), "refused": health.get("refused")},
            "stops": stops,
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
            result["server_timing"] = _server_timing(tmp / "relay_stats.json", t0, t1)
        if args.profile_server:
            result["server_profile_top"] = _profile_top(tmp / "relay.prof")
        return result
    finally:
        for p in workers:
            if p.poll() is None:
                p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        for proc in (server, recorder):
            _stop(proc, 10)
        if args.keep:
            print(f"  kept {tmp}", file=sys.stderr)
        else:
            if not result:  # show why the run failed
                for name in ("recorder.log", "relay.log"):
                    with contextlib.suppress(OSError):
                        tail = (tmp / name).read_text(errors="replace")[-2000:]
                        print(f"--- {name} (tail)\n{tail}", file=sys.stderr)
            shutil.rmtree(tmp, ignore_errors=True)


def _server_timing(path: Path, t0: int, t1: int) -> dict[str, Any]:
    """The ``--instrument`` figures of the window: where the relay's share of the latency goes."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}
    ticks = np.asarray([t for t in stats["ticks"] if t0 <= t[0] < t1 and t[2] > 0], dtype=np.float64)
    rows = np.asarray([r[1] for r in stats["rows"] if t0 <= r[0] < t1], dtype=np.float64) / 1e6
    gaps = np.asarray([g[1] for g in stats["gaps"] if t0 <= g[0] < t1], dtype=np.float64) / 1e6
    fan = ticks[:, 1] / 1e6 if ticks.size else np.zeros(0)

    def q(a: np.ndarray[Any, Any]) -> dict[str, float]:
        return {"p50": _pct(a, 50), "p99": _pct(a, 99), "max": float(a.max()) if a.size else float("nan")}

    return {
        "row_written_to_hub_poll_ms": q(rows),
        "fan_out_ms": q(fan),
        "fan_out_us_per_client": float(np.mean(ticks[:, 1] / ticks[:, 2]) / 1e3) if ticks.size else None,
        "fan_outs_per_s": ticks.shape[0] / ((t1 - t0) / 1e9),
        "messages_per_fan_out": float(ticks[:, 3].mean()) if ticks.size else None,
        "tick_interval_ms": q(gaps),
    }


def _profile_top(path: Path, n: int = 25) -> list[str]:
    if not path.is_file():
        return ["(no profile written)"]
    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(n)
    return [line for line in buf.getvalue().splitlines() if line.strip()][-n - 1 :]


def report(r: dict[str, Any]) -> None:
    """The table."""
    lat, kern = r["latency_ms"], r["kernel_arrival_latency_ms"]
    lags = ", ".join(f"p99 {x['p99']:.1f} / max {x['max']:.1f}" for x in r["client_loop_lag_ms"])
    rows = [
        (
            "stream",
            f"{r['exchange']} {r['symbol']} (simulator rate {r['sim_rate']:g}), "
            f"relay poll {r['poll_ms']:g} ms" + (", relay pinned to its own core" if r["pinned"] else ""),
        ),
        (
            "clients connected",
            f"{r['connected']:,} of {r['clients']:,} in {r['client_procs']} processes "
            f"({r['connect_failures']} failed, {r['connect_s']:.1f} s)",
        ),
        ("measured", f"{r['measured_s']:.1f} s"),
        (
            "written",
            f"{r['written_diffs_per_s']:.1f} diffs/s, {r['written_trades_per_s']:.1f} trades/s, "
            f"{r['written_rows_per_s']:.1f} rows/s (all kinds)",
        ),
        ("received (diff+trade)", f"{r['received_in_window']:,} ({r['received_per_s']:,.0f}/s)"),
        (
            "latency write→client",
            f"p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f} ms",
        ),
        (
            "  kernel arrival",
            f"p50 {kern['p50']:.1f}  p95 {kern['p95']:.1f}  p99 {kern['p99']:.1f}  max {kern['max']:.1f} ms",
        ),
        (
            "  mean of each client",
            "min {min:.1f}  median {p50:.1f}  max {max:.1f} ms".format(**r["per_client_mean_latency_ms"]),
        ),
        ("kept up / dropped / lost conn", f"{r['kept_up']:,} / {r['dropped']} / {r['disconnected']}"),
        (
            "lost per client (kept up)",
            f"max {r['lost_max']}, mean {r['lost_mean']}, "
            f"{r['clients_with_loss']} clients with loss (of {r['expected_in_windows']:,} expected; "
            f"{r['clients_completed_in_drain']} clients completed after the window, {r['drain_s']:.1f} s)",
        ),
        ("duplicates / unknown seqs", f"{r['duplicates']} / {r['unknown_seqs']}"),
        ("relay CPU", f"{r['server_cpu_pct']:.0f} % of one core"),
        (
            "relay RSS",
            f"avg {r['server_rss_mb_avg']:.1f} MB, peak {r['server_rss_mb_peak_window']:.1f} MB "
            f"(VmHWM {r['server_vmhwm_mb']:.1f} MB)",
        ),
        (
            "client processes CPU",
            " + ".join(f"{x:.0f} %" for x in r["client_cpu_pct"]) + f" (loop lag ms: {lags})",
        ),
        ("recorder CPU", f"{r['recorder_cpu_pct']:.0f} %"),
        (
            "machine",
            f"{r['cpus']} cores, {r['machine_busy_pct']:.0f} % busy in the window (other processes: "
            f"{r['other_processes_cpu_pct']:.0f} % of one core, irq/softirq/steal "
            f"{r['irq_softirq_steal_cpu_pct']:.0f} %), "
            f"load avg {r['loadavg'][0]:.2f}",
        ),
        (
            "binary frames (by type)",
            ", ".join(f"{k} {v}" for k, v in sorted(r["binary_frames"].items())) or "-",
        ),
        ("bad frames", ", ".join(f"{k} {v}" for k, v in sorted(r["bad_frames"].items())) or "-"),
        ("statuses seen", ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items())) or "-"),
        (
            "verdict",
            f"{r['verdict']} (p99 {lat['p99']:.1f} ms vs target ≤ {r['target_p99_ms']:g} ms; "
            + ", ".join(f"{k}={v}" for k, v in r["checks"].items())
            + ")",
        ),
    ]
    print(f"\n== load_relay ({r['run_s']:.0f} s run)")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    st = r.get("server_timing")
    if st and "error" not in st:
        for key, label in (
            ("row_written_to_hub_poll_ms", "relay: row → hub poll"),
            ("fan_out_ms", "relay: one fan-out"),
            ("tick_interval_ms", "relay: tick interval"),
        ):
            v = st[key]
            print(f"  {label:<30} p50 {v['p50']:.2f}  p99 {v['p99']:.2f}  max {v['max']:.2f} ms")
        print(
            f"  {'relay: fan-outs':<30} {st['fan_outs_per_s']:.0f}/s, "
            f"{st['messages_per_fan_out']:.2f} messages each, {st['fan_out_us_per_client']:.1f} µs per client"
        )
    elif st:
        print(f"  relay timing: {st['error']}")
    for line in r.get("server_profile_top", []):
        print(f"  | {line}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000, help="relay connections in all")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured window, s")
    parser.add_argument("--warmup", type=float, default=3.0, help="wait after every client connected, s")
    parser.add_argument("--connect-rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--exchange", default="kraken", help="venue of the simulated recorder")
    parser.add_argument("--symbol", default="BTC/USD", help="symbol recorded and relayed")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="simulator rate (Kraken: ~20 book updates/s per unit)"
    )
    parser.add_argument("--poll-ms", type=float, default=10.0, help="the relay's --poll-ms")
    parser.add_argument(
        "--relay-workers", type=int, default=1, help="the relay's --workers (processes on one port)"
    )
    parser.add_argument("--target-p99-ms", type=float, default=50.0)
    parser.add_argument("--grace", type=float, default=1.0, help="clients keep reading after the window, s")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="... and up to this long for rows still missing, s"
    )
    parser.add_argument(
        "--max-run-s", type=float, default=170.0, help="bound on the recorder and on the waits, s"
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--check", action="store_true", help="exit 1 when the verdict is FAIL")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    parser.add_argument("--profile-server", action="store_true", help="run the relay under cProfile")
    parser.add_argument(
        "--pin-relay",
        action="store_true",
        help="the relay alone on the first core, recorder and clients on the others (needs ≥ 2 cores; "
        "other programs on the machine are not moved)",
    )
    parser.add_argument(
        "--instrument",
        action="store_true",
        help="time the relay's polls and fan-outs (through a wrapper that patches the hub)",
    )
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    parser.add_argument("--live-dir", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(worker_main(args))
        return
    if args.exchange == "binance":
        print(
            "note: the simulator batches Binance diffs per 100 ms: 10 diffs/s whatever --rate (trades scale)",
            file=sys.stderr,
        )
    try:
        r = run(args)
    except _Stop as exc:
        print(f"load_relay: {exc}", file=sys.stderr)
        sys.exit(2)
    report(r)
    OUT.mkdir(exist_ok=True)
    path = OUT / "load_relay.json"
    path.write_text(json.dumps(r, indent=2) + "\n")
    print(f"  saved {path.relative_to(HERE.parent)}")
    if args.json:
        print(json.dumps(r, separators=(",", ":")))
    if args.check and r["verdict"] != "PASS":
        sys.exit(1)


if __name__ == "__main__":
    main()
