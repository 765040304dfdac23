"""Helpers of the relay and REST tests: run the servers (and the recorder on the simulator) in
one event loop, talk to them with plain clients, and read what the recorder wrote.

Every wait is bounded: a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import http.client
import io
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from mmdata.record import RecorderConfig, RecordSummary, SimulateOptions, record_async
from mmdata.serve.app import ServeOptions, Servers, start_servers
from mmdata.serve.hub import HubConfig
from mmdata.store.dayfolder import open_day_folder
from mmdata.store.tail import GzipTail
from tests.recorded_days import VENUES

T = TypeVar("T")

#: Envelope keys of every relay message.
ENVELOPE = {"type", "exchange", "symbol", "ts_ms", "data"}
FS = {e: fs for e, _s, fs in VENUES}
SYMBOL = {e: s for e, s, _fs in VENUES}


def run(coro: Coroutine[Any, Any, T], timeout: float = 40.0) -> T:
    """Run ``coro`` in a new event loop; fail (not hang) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` every 10 ms until it is true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s")
        await asyncio.sleep(0.01)


# -- servers and clients ---------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def serving(data: Path, **hub: Any) -> AsyncIterator[Servers]:
    """Relay and REST servers on free ports of 127.0.0.1 (``hub``: HubConfig fields)."""
    hub.setdefault("poll_s", 0.01)
    servers = await start_servers(ServeOptions(data, relay_port=0, rest_port=0, hub=HubConfig(**hub)))
    try:
        yield servers
    finally:
        await asyncio.wait_for(servers.close(), 15)


def ws_url(servers: Servers, exchange: str, symbol: str | None = None, **params: str) -> str:
    """The relay URL of a stream (``symbol`` defaults to the venue's recorded symbol)."""
    assert servers.relay is not None
    query = urlencode({"exchange": exchange, "symbol": symbol or SYMBOL[exchange], **params})
    return f"ws://127.0.0.1:{servers.relay.port}/ws?{query}"


@dataclass
class Feed:
    """A relay client that reads every message in a background task (raw text and parsed)."""

    ws: ClientConnection
    raw: list[bytes] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    task: asyncio.Task[None] | None = None
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                data = message.encode() if isinstance(message, str) else message
                self.raw.append(data)
                self.messages.append(orjson.loads(data))
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._new.set()

    async def wait_for(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = 10.0, what: str = "message"
    ) -> dict[str, Any]:
        """The first message (from the start of the feed) for which ``check`` is true."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for msg in self.messages[seen:]:
                if check(msg):
                    return msg
            seen = len(self.messages)
            if self.closed.is_set():
                raise AssertionError(f"{what}: connection closed ({self.close_code}) before it came")
            left = deadline - time.monotonic()
            if left <= 0:
                kinds = Counter(m["type"] for m in self.messages)
                codes = [m["data"].get("status") for m in self.messages if m["type"] == "status"]
                last = self.messages[-1] if self.messages else None
                raise AssertionError(
                    f"{what}: not received within {timeout} s ({dict(kinds)}, statuses {codes}, last {last})"
                )
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), left)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait for the server to close the connection; its close code."""
        await asyncio.wait_for(self.closed.wait(), timeout)
        return self.close_code

    async def close(self) -> None:
        """Close from the client side and stop reading."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


@contextlib.asynccontextmanager
async def feed(url: str, **kwargs: Any) -> AsyncIterator[Feed]:
    """Connect to the relay and read everything it sends into a :class:`Feed`."""
    ws = await asyncio.wait_for(connect(url, open_timeout=10, close_timeout=2, **kwargs), 15)
    f = Feed(ws)
    f.task = asyncio.create_task(f._read())
    try:
        yield f
    finally:
        await f.close()


async def drained(f: Feed, root: Path, timeout: float = 10.0) -> None:
    """Wait until a client has every row of a stopped recorder: its ``run_stop`` event and its
    last live trade."""
    await f.wait_for(
        lambda m: m["type"] == "event" and m["data"].get("event") == "run_stop", timeout, "run_stop"
    )
    trades = live_raw(root, "live_trades")
    if not trades:
        return
    last = orjson.loads(trades[-1])["recv_seq"]
    try:
        await f.wait_for(lambda m: m["type"] == "trade" and m["data"]["recv_seq"] == last, timeout)
    except AssertionError:
        got = [m["data"]["recv_seq"] for m in f.messages if m["type"] == "trade"]
        want = [orjson.loads(t)["recv_seq"] for t in trades]
        raise AssertionError(f"last live trade {last} never came: got {got}, recorded {want}") from None


def statuses(messages: list[dict[str, Any]]) -> list[str]:
    """The ``data.status`` codes of the status messages, in order."""
    return [m["data"]["status"] for m in messages if m["type"] == "status"]


def is_status(code: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate: a ``status`` message with this code."""
    return lambda m: m["type"] == "status" and m["data"]["status"] == code


def is_event(name: str) -> Callable[[dict[str, Any]], bool]:
    """A predicate: an ``event`` message of this ledger event."""
    return lambda m: m["type"] == "event" and m["data"].get("event") == name


@dataclass
class HttpAnswer:
    """One HTTP answer: status, headers (lower-case names), body and its JSON."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def _http_get(port: int, target: str) -> HttpAnswer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        body = resp.read()
        return HttpAnswer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


async def http_get(port: int, target: str) -> HttpAnswer:
    """A plain HTTP GET to 127.0.0.1:port (in a thread: the servers run in this loop)."""
    return await asyncio.wait_for(asyncio.to_thread(_http_get, port, target), 15)


# -- the recorder on the simulator, in the test's event loop ---------------------------------------
@dataclass
class Recording:
    """A recorder running as a task of the current loop (stopped by :meth:`finish`)."""

    config: RecorderConfig
    task: asyncio.Task[RecordSummary]
    stop: asyncio.Event

    @property
    def root(self) -> Path:
        """``<data>/<exchange>/<SYMBOL_FS>``."""
        return self.config.data_dir / self.config.exchange / FS[self.config.exchange]

    @property
    def live_file(self) -> Path:
        return self.root / "live" / "live_depth_diffs.ndjson"

    async def finish(self, timeout: float = 20.0) -> RecordSummary:
        """Stop the recorder (clean shutdown: STOPPED, run_stop) and wait for it."""
        self.stop.set()
        return await asyncio.wait_for(asyncio.shield(self.task), timeout)

    async def live_synced(self, timeout: float = 15.0) -> None:
        """Wait until the live book file holds an accepted snapshot and a later diff."""

        def ok() -> bool:
            lines = live_lines(self.root)
            snap = [i for i, r in enumerate(lines) if r["kind"] == "snapshot"]
            return bool(snap) and any(r["kind"] in ("diff", "checksum") for r in lines[snap[0] :])

        await until(ok, timeout, "a snapshot and a diff in the live file")

    async def day_readable(self, timeout: float = 15.0, *, snapshot: bool = True) -> Path:
        """Wait until the newest day folder opens (ledger flushed; with its snapshot row)."""
        found: list[Path] = []

        def ok() -> bool:
            days = sorted(p for p in self.root.glob("2*") if p.is_dir())
            if not days:
                return False
            try:
                folder = open_day_folder(days[-1])
            except Exception:
                return False
            if snapshot and not any(r["event"] == "snapshot" for r in ledger_rows(days[-1])):
                return False
            if snapshot and folder.layout.diffs.exists() and not gz_lines(folder.layout.diffs):
                return False
            found.append(days[-1])
            return True

        await until(ok, timeout, "a readable day folder")
        return found[-1]


@contextlib.asynccontextmanager
async def recording(
    data: Path,
    exchange: str,
    *,
    seed: int = 1,
    rate: float = 1.0,
    wall_ns: Callable[[], int] = time.time_ns,
    on_ready: Callable[[Any], None] | None = None,
    **config: Any,
) -> AsyncIterator[Recording]:
    """Run the real recorder on the simulator in this loop until :meth:`Recording.finish`."""
    config.setdefault("flush_interval_s", 0.2)
    config.setdefault("heartbeat_s", 0.5)
    cfg = RecorderConfig(exchange, (SYMBOL[exchange],), data_dir=data, log_dir=data.parent / "logs", **config)
    stop = asyncio.Event()
    task = asyncio.create_task(
        record_async(
            cfg, simulate=SimulateOptions(seed=seed, rate=rate), stop=stop, wall_ns=wall_ns, on_ready=on_ready
        )
    )
    rec = Recording(cfg, task, stop)
    try:
        yield rec
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)


# -- reading what the recorder wrote ---------------------------------------------------------------
def gz_lines(path: Path) -> list[bytes]:
    """Complete lines of a member-wise gzip file (a member still being written is left out)."""
    tail = GzipTail(path)
    out: list[bytes] = []
    while lines := tail.poll():
        out += lines
    return out


def ndjson_gz(path: Path) -> list[bytes]:
    """Raw NDJSON lines of a ``diffs/`` or ``trades/`` file."""
    return [line for line in gz_lines(path) if line.startswith(b"{")]


def ledger_rows(day: Path) -> list[dict[str, str]]:
    """The ledger of a day folder as CSV dicts."""
    (path,) = day.glob("events_*.csv.gz")
    text = b"\n".join(gz_lines(path)).decode()
    return list(csv.DictReader(io.StringIO(text)))


def live_files(root: Path, name: str = "live_depth_diffs") -> list[Path]:
    """The live files of a stream, oldest first (rotated ones by their first row, then the current)."""
    live = root / "live"
    rotated = [p for p in live.glob(f"{name}.*.ndjson") if p.stat().st_size]

    def first_time(p: Path) -> int:
        with open(p, "rb") as f:
            return int(orjson.loads(f.readline())["recv_time_ns"])

    rotated.sort(key=first_time)
    current = live / f"{name}.ndjson"
    return rotated + ([current] if current.exists() else [])


def live_raw(root: Path, name: str = "live_depth_diffs") -> list[bytes]:
    """Every complete line of the live files (rotated ones included), in write order."""
    out: list[bytes] = []
    for path in live_files(root, name):
        data = path.read_bytes()
        out += [line for line in data[: data.rfind(b"\n") + 1].split(b"\n") if line]
    return out


def live_lines(root: Path, name: str = "live_depth_diffs") -> list[dict[str, Any]]:
    """:func:`live_raw`, parsed (``kind`` set to ``diff`` where absent)."""
    out = []
    for line in live_raw(root, name):
        rec = orjson.loads(line)
        rec.setdefault("kind", "diff")
        out.append(rec)
    return out


def book_frames(day: Path) -> dict[int, tuple[list[list[str]], list[list[str]]]]:
    """``{recv_seq: (bids, asks)}`` of a day's book frames (exact text; the last frame of a seq)."""
    (path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    lines = gz_lines(path)
    header = lines[0].decode().split(",")
    n = sum(1 for h in header if h.startswith("bid_px_"))
    out: dict[int, tuple[list[list[str]], list[list[str]]]] = {}
    for line in lines[1:]:
        fields = line.decode().split(",")
        px = fields[5:]
        bids = [[px[2 * i], px[2 * i + 1]] for i in range(n) if px[2 * i]]
        asks = [[px[2 * n + 2 * i], px[2 * n + 2 * i + 1]] for i in range(n) if px[2 * n + 2 * i]]
        out[int(fields[0])] = (bids, asks)
    return out


def frame_at(frames: dict[int, tuple[list[list[str]], list[list[str]]]], seq: int) -> tuple[int, Any]:
    """The newest book frame at or before ``seq`` (its seq and levels)."""
    best = max((s for s in frames if s <= seq), default=None)
    assert best is not None, f"no book frame at or before recv_seq {seq}"
    return best, frames[best]


def frame_levels(day: Path) -> int:
    """N of the book frames (``bid_px_1`` … ``bid_px_N``)."""
    (path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    return sum(1 for h in gz_lines(path)[0].decode().split(",") if h.startswith("bid_px_"))


def only_day(root: Path) -> Path:
    """The single day folder of a stream."""
    (day,) = sorted(p for p in root.iterdir() if p.name.isdigit())
    return day


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture
def copy_stream(recorded_data: Path, tmp_path: Path) -> Callable[..., Path]:
    """``copy_stream(exchange, live=True)`` -> a private data root holding a copy of that
    venue's recorded stream (without ``live/`` when ``live=False``)."""

    def make(exchange: str, *, live: bool = True) -> Path:
        data = tmp_path / "data"
        src = recorded_data / exchange / FS[exchange]
        dst = data / exchange / FS[exchange]
        shutil.copytree(src, dst, ignore=None if live else shutil.ignore_patterns("live"))
        return data

    return make


def cut_before_stop(data: Path, exchange: str) -> int:
    """Cut the copied live book file before the recorder's shutdown rows (as if the recorder
    still ran, its book SYNCED); the recv_seq of the last line kept."""
    path = data / exchange / FS[exchange] / "live" / "live_depth_diffs.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if b'"event":"ws_close"' in line)
    path.write_bytes(b"".join(lines[:cut]))
    return int(orjson.loads(lines[cut - 1])["recv_seq"])


async def record_for(data: Path, exchange: str, seconds: float, **config: Any) -> Path:
    """Record ``seconds`` on the simulator (recorder stopped at the end); the stream folder."""
    async with recording(data, exchange, **config) as rec:
        await asyncio.sleep(seconds)
        await rec.finish()
        return rec.root


@pytest.fixture(scope="session")
def no_diffs_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with a Binance stream recorded with STORE_DEPTH_DIFFS=false (read-only)."""
    data = tmp_path_factory.mktemp("nodiffs") / "data"
    run(record_for(data, "binance", 2.0, store_depth_diffs=False))
    return data


@pytest.fixture
def no_diffs_copy(no_diffs_recording: Path, tmp_path: Path) -> Callable[..., Path]:
    """``no_diffs_copy(live=True)`` -> a private copy of :func:`no_diffs_recording`."""

    def make(*, live: bool = True) -> Path:
        data = tmp_path / "nodiffs"
        shutil.copytree(no_diffs_recording, data, ignore=None if live else shutil.ignore_patterns("live"))
        return data

    return make
