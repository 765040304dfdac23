"""One follower per recorded stream, shared by every relay client and the REST server.

Theory of operation
-------------------
A :class:`Hub` owns one source (:class:`~mmdata.serve.sources.LiveSource` when the recorder
writes ``live/`` files, else :class:`~mmdata.serve.sources.DaySource`) and one
:class:`~mmdata.serve.follow.BookFollower`. Its task polls the source every ``poll_s``,
feeds the book rows to the follower and fans every row out as a relay message, so N
clients of a stream cost one reader, one parse and one book, not N.

Fan-out is the hot path (1,000 clients × every diff): the hub frames each poll's messages
once — server frames are unmasked and the server negotiates no extension, so the bytes are
the same for every client — and hands that blob to each client's transport with one
write. A client whose transport buffer passes ``slow_bytes`` is told so (``status
falling_behind``) and, past ``drop_bytes``, dropped with a ``status dropped`` message and
close code 1008; nobody else waits for it.

A joining client is first *pending*: it gets its snapshot (or, for ``from=start``, the
day from its beginning) by ordinary sends while the hub keeps appending new messages to
its own queue; once that queue is empty it joins the fan-out set in the same step, so
nothing is lost or repeated between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmdata.errors import StoreError
from mmdata.serve.follow import BookFollower, Item, item_message, status_message
from mmdata.serve.params import Stream
from mmdata.serve.sources import DaySource, LiveSource, newest_day
from mmdata.store.dayfolder import DayFolder, open_day_folder
from mmdata.store.tail import GzipTail

__all__ = ["LANE", "Hub", "HubConfig", "Hubs", "Key", "Subscriber", "frame"]

log = logging.getLogger("mmdata.serve")

#: A queued message's place: (recv_seq, ledger-after-data order, lane). Lanes: 0 the diffs,
#: 1 snapshots and ledger rows, 2 trades, 3 status. A ``from=start`` client skips, lane by
#: lane, what the day files already gave it (the day's files are flushed apart).
Key = tuple[int, int, int]
LANE = {"diff": 0, "checksum": 0, "snapshot": 1, "event": 1, "trade": 2}
STATUS_LANE = 3


def frame(message: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (server to client, RFC 6455 §5.2)."""
    n = len(message)
    if n < 126:
        return bytes((0x81, n)) + message
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + message
    return struct.pack("!BBQ", 0x81, 127, n) + message


@dataclass(slots=True)
class HubConfig:
    """Knobs of the hubs (the relay's options)."""

    poll_s: float = 0.01
    live_only: bool = False
    ring: int = 20_000  # recent messages kept for from=start joins
    slow_bytes: int = 1 << 20  # a client this far behind is told so
    drop_bytes: int = 8 << 20  # ... and dropped past this
    pending_max: int = 200_000  # messages queued for a client still catching up
    hold_s: float = 3.0  # DaySource: how long a row waits for the other file
    idle_s: float = 60.0  # a hub with no client and no REST use stops after this


@dataclass(eq=False, slots=True)
class Subscriber:
    """A relay client as the hub sees it."""

    transport: Any  # asyncio.Transport (None in tests that only read ``pending``)
    send_raw: Callable[[bytes], None] | None = None
    pending: deque[tuple[Key, bytes]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    warned: bool = False
    dropped: str = ""


class Hub:
    """One recorded stream's source, follower and clients (see the module docstring)."""

    def __init__(self, stream: Stream, config: HubConfig) -> None:
        self.stream = stream
        self.config = config
        self.source: LiveSource | DaySource | None = None
        self.follower: BookFollower | None = None
        self.exchange = stream.exchange
        self.symbol = stream.symbol_fs
        self.live: set[Subscriber] = set()
        self.joining: set[Subscriber] = set()
        self.ring: deque[tuple[Key, bytes]] = deque(maxlen=config.ring)
        self.ready = asyncio.Event()
        self.error = ""
        self.last_used = time.monotonic()
        self.rows = 0
        self.messages = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._frames: GzipTail | None = None
        self._frames_folder: DayFolder | None = None
        self._last_frame: bytes | None = None
        self._on_stop: Callable[[Hub], None] | None = None

    # -- life cycle ---------------------------------------------------------------------
    def start(self, on_stop: Callable[[Hub], None] | None = None) -> None:
        """Start the hub's task (idempotent)."""
        if self._task is None:
            self._on_stop = on_stop
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"hub {self.stream}")

    async def stop(self) -> None:
        """Stop polling; close the source."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.source is not None:
            self.source.close()

    @property
    def source_name(self) -> str:
        """``live`` or ``day`` (empty before the start)."""
        return self.source.name if self.source is not None else ""

    @property
    def diffs_missing(self) -> bool:
        """The recorder does not store diffs for this stream (no book can be followed)."""
        source = self.source
        if isinstance(source, DaySource):
            return not source.has_diffs
        return self.follower is not None and not self.follower.store_depth_diffs

    def _pick_source(self) -> LiveSource | DaySource | None:
        root = self.stream.root
        if LiveSource.available(root):
            return LiveSource(root)
        if self.config.live_only:
            self.error = "no live/ files for this stream (WS_RELAY_LIVE_ONLY=1 serves only live/)"
            return None
        if newest_day(root) is None:
            self.error = "no recorded day for this stream yet"
            return None
        return DaySource(root, hold_s=self.config.hold_s)

    async def _begin(self) -> bool:
        """Pick a source and bring the follower to the stream's present (in a thread: a day
        source may read a whole day file once)."""
        while True:
            source = self._pick_source()
            if source is not None:
                try:
                    items = await asyncio.to_thread(source.start)
                except (OSError, StoreError) as exc:
                    source.close()
                    self.error = f"cannot read the stream: {exc}"
                    items = None
                except BaseException:
                    source.close()  # cancelled while reading: the thread has opened the files
                    raise
                if items is not None:
                    self.source = source
                    self.error = ""
                    follower = self._follower_for(items)
                    await asyncio.to_thread(_apply_all, follower, items)
                    self.follower = follower
                    # The rows read at the start are recent history too: a from=start client
                    # needs those the day files do not hold yet.
                    for item in items:
                        self.ring.append((_key(item), item_message(item)))
                    self.ready.set()
                    return True
            self.ready.set()  # waiters see self.error; a later poll may still find data
            await asyncio.sleep(1.0)
            self.ready.clear()
            idle = time.monotonic() - self.last_used > self.config.idle_s
            if idle and not self.live and not self.joining and self._on_stop is not None:
                self._on_stop(self)  # nobody asks for this stream any more
                return False

    def _follower_for(self, items: list[Item]) -> BookFollower:
        symbol = next((str(it.rec["symbol"]) for it in items if it.rec.get("symbol")), "")
        depth: int | None = None
        if isinstance(self.source, DaySource) and self.source.folder is not None:
            symbol = symbol or self.source.folder.symbol
            depth = self.source.folder.depth
        if not symbol:
            day = newest_day(self.stream.root)
            if day is not None:
                with contextlib.suppress(StoreError):
                    folder = open_day_folder(day)
                    symbol, depth = folder.symbol, folder.depth
        self.symbol = symbol or self.stream.symbol_fs
        return BookFollower(self.exchange, self.symbol, depth)

    async def _run(self) -> None:
        try:
            if not await self._begin():
                return
            poll_s = self.config.poll_s
            last_check = time.monotonic()
            while True:
                self._tick()
                now = time.monotonic()
                if now - last_check >= 0.1:
                    last_check = now
                    self._check_slow()
                    if (
                        not self.live
                        and not self.joining
                        and now - self.last_used > self.config.idle_s
                        and self._on_stop is not None
                    ):
                        self._on_stop(self)
                        return
                await asyncio.sleep(poll_s)
        except asyncio.CancelledError:
            raise
        except Exception:  # a hub must never die silently: log, tell clients, stop
            log.exception("hub %s/%s failed", self.stream.exchange, self.stream.symbol_fs)
            self.error = "internal error while following the stream (see the server log)"
            self._fan_out(
                [status_message(self.exchange, self.symbol, _now_ms(), "error", self.error)],
                [(self.follower.seq if self.follower else 0, 2, STATUS_LANE)],
            )
            raise

    # -- the poll ---------------------------------------------------------------------------
    def _tick(self) -> None:
        source = self.source
        follower = self.follower
        if source is None or follower is None:
            return
        items = source.poll()
        messages: list[bytes] = []
        keys: list[Key] = []
        for ev in source.tail_events():
            messages.append(
                status_message(
                    self.exchange, self.symbol, _now_ms(), _STATUS.get(ev.kind, ev.kind), ev.detail
                )
            )
            keys.append((follower.seq, 2, STATUS_LANE))
        if items:
            apply = follower.apply
            for item in items:
                apply(item)
                messages.append(item_message(item))
                keys.append(_key(item))
                if (
                    item.kind == "event"
                    and item.rec.get("event") == "window_start"
                    and isinstance(source, LiveSource)  # the day-file source says so itself
                ):
                    messages.append(
                        status_message(
                            self.exchange,
                            self.symbol,
                            item.time_ns // 1_000_000,
                            "day_rollover",
                            "a new trading day started (its own day folder from here on)",
                            window_start=(item.rec.get("details") or {}).get("window_start"),
                        )
                    )
                    keys.append((item.seq, 2, STATUS_LANE))
            self.rows += len(items)
        if messages:
            self._fan_out(messages, keys)

    def _fan_out(self, messages: list[bytes], keys: list[Key]) -> None:
        self.messages += len(messages)
        ring = self.ring
        for key, msg in zip(keys, messages, strict=False):
            ring.append((key, msg))
        for sub in self.joining:
            pending = sub.pending
            pending.extend(zip(keys, messages, strict=False))
            if len(pending) > self.config.pending_max:
                sub.dropped = f"fell {len(pending)} messages behind while catching up"
            sub.wake.set()
        if not self.live:
            return
        blob = b"".join(frame(m) for m in messages)
        for sub in self.live:
            send = sub.send_raw
            if send is not None:
                send(blob)

    def _check_slow(self) -> None:
        """Warn clients whose buffers grow; drop the ones far behind (never wait for them)."""
        cfg = self.config
        for sub in list(self.live):
            transport = sub.transport
            if transport is None:
                continue
            try:
                size = transport.get_write_buffer_size()
            except (AttributeError, RuntimeError):
                continue
            if size > cfg.drop_bytes:
                self.live.discard(sub)
                self.dropped += 1
                sub.dropped = f"client too slow: {size} bytes waiting to be sent"
                sub.wake.set()
            elif size > cfg.slow_bytes and not sub.warned:
                sub.warned = True
                msg = status_message(
                    self.exchange,
                    self.symbol,
                    _now_ms(),
                    "falling_behind",
                    f"{size} bytes are waiting to be sent to you; at {cfg.drop_bytes} you are dropped",
                    buffered_bytes=size,
                )
                if sub.send_raw is not None:
                    sub.send_raw(frame(msg))
            elif size < cfg.slow_bytes // 2:
                sub.warned = False

    # -- clients ----------------------------------------------------------------------------
    def join(self, sub: Subscriber, *, with_ring: bool) -> None:
        """Start queueing messages for a client: for ``from=start`` the recent ones too; for
        ``from=tail`` the trades already sent that came after the book (trades come from
        their own file, so the book's ``recv_seq`` can trail them)."""
        self.last_used = time.monotonic()
        if with_ring:
            sub.pending.extend(self.ring)
        elif self.follower is not None:
            after = self.follower.seq
            # They were sent in the last polls: look back a bounded stretch, not the whole ring.
            recent = [
                e
                for e in itertools.islice(reversed(self.ring), 2000)
                if e[0][2] == LANE["trade"] and e[0][0] > after
            ]
            sub.pending.extend(reversed(recent))
        self.joining.add(sub)

    def go_live(self, sub: Subscriber) -> bool:
        """Move a caught-up client (empty queue) into the fan-out set."""
        if sub.pending or sub.dropped:
            return False
        self.joining.discard(sub)
        self.live.add(sub)
        return True

    def leave(self, sub: Subscriber) -> None:
        """A client went away."""
        self.joining.discard(sub)
        self.live.discard(sub)
        self.last_used = time.monotonic()

    # -- the book ---------------------------------------------------------------------------
    def snapshot_message(self) -> bytes | None:
        """The followed book as a ``snapshot`` message (None while it is not SYNCED)."""
        follower = self.follower
        if follower is None or not follower.synced:
            return None
        return follower.snapshot_message(None, stream_source=self.source_name)

    def book(self, levels: int) -> dict[str, Any]:
        """The REST view of the book (``state`` says whether it is proven)."""
        self.last_used = time.monotonic()
        follower = self.follower
        if follower is None:
            return {"state": "UNKNOWN", "bids": [], "asks": []}
        if follower.stopped and follower.stopped_view is not None and not follower.synced:
            out = dict(follower.stopped_view)
            out["state"] = "STOPPED"
            if levels:
                out["bids"], out["asks"] = out["bids"][:levels], out["asks"][:levels]
        else:
            out = follower.view(levels)
        out["exchange"] = self.exchange
        out["symbol"] = self.symbol
        out["source"] = self.source_name
        out["ts_ms"] = follower.time_ns // 1_000_000 or None
        out["stopped"] = follower.stopped
        return out

    def last_book_frame(self) -> dict[str, Any] | None:
        """The newest top-N book frame of the newest day (streams recorded without diffs)."""
        self.last_used = time.monotonic()
        day = newest_day(self.stream.root)
        if day is None:
            return None
        if self._frames is None or self._frames_folder is None or self._frames_folder.root != day:
            try:  # reads the day's ledger: once per day, not per request
                self._frames_folder = open_day_folder(day)
            except StoreError:
                return None
            self._frames = GzipTail(self._frames_folder.layout.book_frames)
            self._last_frame = None
        folder = self._frames_folder
        while lines := self._frames.poll():
            self._last_frame = lines[-1] if not lines[-1].startswith(b"recv_seq") else self._last_frame
        if self._last_frame is None:
            return None
        return _frame_view(self._last_frame, folder.levels, self.exchange, folder.symbol)


def _frame_view(line: bytes, levels: int, exchange: str, symbol: str) -> dict[str, Any] | None:
    """A book-frames CSV row (``recv_seq,recv_time_ns,event_time_ms,update_id,checksum,``
    then price/qty pairs, bids then asks) as the REST view."""
    fields = line.decode("utf-8", "replace").split(",")
    if len(fields) < 5 + 4 * levels:
        return None
    try:
        seq, t_ns = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    px = fields[5:]
    bids = [[px[2 * i], px[2 * i + 1]] for i in range(levels) if px[2 * i]]
    asks = [
        [px[2 * levels + 2 * i], px[2 * levels + 2 * i + 1]] for i in range(levels) if px[2 * levels + 2 * i]
    ]
    return {
        "exchange": exchange,
        "symbol": symbol,
        "state": "SYNCED",
        "source": "book_frame",
        "recv_seq": seq,
        "recv_time_ns": t_ns,
        "ts_ms": t_ns // 1_000_000,
        "bids": bids,
        "asks": asks,
    }


def _key(item: Item) -> Key:
    return (item.seq, 1 if item.kind == "event" else 0, LANE[item.kind])


def _apply_all(follower: BookFollower, items: list[Item]) -> None:
    for item in items:
        follower.apply(item)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_STATUS = {
    "rotated": "file_rotated",
    "reset": "file_reset",
    "damaged": "file_damaged",
    "missing": "file_missing",
}


class Hubs:
    """The hubs of one server process, created on first use, one per (exchange, symbol)."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.hubs: dict[tuple[str, str], Hub] = {}

    def get(self, stream: Stream) -> Hub:
        """The stream's hub, started if new."""
        key = (stream.exchange, stream.symbol_fs)
        hub = self.hubs.get(key)
        if hub is None:
            hub = self.hubs[key] = Hub(stream, self.config)
            hub.start(on_stop=self._stopped)
        return hub

    def _stopped(self, hub: Hub) -> None:
        key = (hub.stream.exchange, hub.stream.symbol_fs)
        if self.hubs.get(key) is hub:
            del self.hubs[key]
        if hub.source is not None:
            hub.source.close()

    async def close(self) -> None:
        """Stop every hub."""
        hubs = list(self.hubs.values())
        self.hubs.clear()
        for hub in hubs:
            await hub.stop()

    def stats(self) -> list[dict[str, Any]]:
        """Per-stream figures for ``/health``."""
        out = []
        for hub in self.hubs.values():
            follower = hub.follower
            out.append(
                {
                    "exchange": hub.exchange,
                    "symbol": hub.symbol,
                    "source": hub.source_name,
                    "state": follower.state.name if follower is not None else "UNKNOWN",
                    "recv_seq": follower.seq if follower is not None else None,
                    "clients": len(hub.live) + len(hub.joining),
                    "rows": hub.rows,
                    "messages": hub.messages,
                    "dropped_clients": hub.dropped,
                    "error": hub.error or None,
                }
            )
        return out
