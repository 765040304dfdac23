"""The servers' pure core: follow a recorded book from its rows, and encode relay messages.

Theory of operation
-------------------
The recorder's live book stream (``live/live_depth_diffs.ndjson``) holds, in receive
order, every diff and checksum row, every accepted snapshot (``kind: snapshot``, with its
levels) and every ledger row (``kind: event``). A day folder holds the same material
split over ``diffs/`` and the ledger (snapshots in ``snapshots/``). Either way a reader
turns each row into an :class:`Item` and hands the book rows, in ``recv_seq`` order, to a
:class:`BookFollower`: the venue's own sync engine, fed exactly as the recorder's engine
was (snapshots, diffs, resets when the recorder lost its connection or restarted, Kraken
precisions, Bitfinex ``SEQ_ALL`` breaks), so a served book is proven by the same
checksums and ``U``/``u`` continuity as the recorded one, and is never served while the
engine says it is not.

Relay messages are ``{"type", "exchange", "symbol", "ts_ms", "data"}`` JSON objects;
``data`` of a ``diff``, ``trade``, ``event`` or ``snapshot`` message is the recorded row's
own bytes (exact decimal text, untouched), spliced in rather than re-encoded. ``ts_ms`` is
the recorder's receive time in milliseconds (every row has one; the venue's event time, where
it sends one, is ``data.event_time_ms``). No I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from mmdata import exchanges
from mmdata.book.sync import SequenceSync, SyncEngine, SyncState
from mmdata.types import BookSnapshot, Instrument, SequenceBreak, new_book_checksum, new_book_diff

__all__ = [
    "BookFollower",
    "Item",
    "encode_message",
    "item_from_line",
    "item_message",
    "status_message",
]

_ORDER = {"diff": 0, "checksum": 0, "trade": 0, "snapshot": 0, "event": 1}


@dataclass(slots=True)
class Item:
    """One recorded row on its way to clients: ``kind`` is diff | checksum | snapshot | event |
    trade; ``line`` the row's exact bytes; ``rec`` the parsed row."""

    seq: int
    time_ns: int
    kind: str
    rec: dict[str, Any]
    line: bytes

    @property
    def key(self) -> tuple[int, int, int]:
        """Merge order: a ledger row stamped ``r`` comes after data row ``r``; ledger rows
        at one ``r`` in ``event_id`` order."""
        if self.kind == "event":
            eid = self.rec.get("event_id")
            return (self.seq, 1, eid if type(eid) is int else 0)
        return (self.seq, 0, 0)

    @property
    def message_type(self) -> str:
        """The relay message type of this row."""
        kind = self.kind
        return "diff" if kind == "checksum" else kind


def item_from_line(line: bytes, *, trade: bool = False) -> Item | None:
    """Parse a live or ``diffs/``/``trades/`` NDJSON row (None when it is not one)."""
    try:
        rec = orjson.loads(line)
        seq = rec["recv_seq"]
        t_ns = rec["recv_time_ns"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if type(seq) is not int or type(t_ns) is not int or not isinstance(rec, dict):
        return None
    kind = "trade" if trade else rec.get("kind", "diff")
    if kind not in _ORDER:
        return None
    return Item(seq, t_ns, kind, rec, line)


def encode_message(kind: str, exchange: str, symbol: str, ts_ms: int | None, data: bytes) -> bytes:
    """A relay message with ``data`` (already JSON) spliced in."""
    head = orjson.dumps({"type": kind, "exchange": exchange, "symbol": symbol, "ts_ms": ts_ms})
    return head[:-1] + b',"data":' + data + b"}"


def status_message(exchange: str, symbol: str, ts_ms: int, status: str, message: str, **extra: Any) -> bytes:
    """A ``status`` message: a server-side condition (``status`` is a stable code)."""
    data = {"status": status, "message": message, **extra}
    return orjson.dumps(
        {"type": "status", "exchange": exchange, "symbol": symbol, "ts_ms": ts_ms, "data": data}
    )


def item_message(item: Item) -> bytes:
    """The relay message of a recorded row."""
    rec = item.rec
    return encode_message(
        item.message_type,
        str(rec.get("exchange", "")),
        str(rec.get("symbol", "")),
        item.time_ns // 1_000_000,
        item.line,
    )


class BookFollower:
    """The venue's sync engine fed with recorded book rows (see the module docstring).

    Rows must come in ``recv_seq`` order; ``apply`` ignores trades. ``seq`` / ``time_ns``
    say how far the book has been followed; ``verified_seq`` where a venue checksum last
    matched (Kraken: every update; Bitfinex: ``cs`` frames; Binance: None, continuity is
    checked on every diff instead).
    """

    def __init__(self, exchange: str, symbol: str, depth: int | None = None) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self._adapter = exchanges.get(exchange)
        self.depth = depth or 25
        self.engine: SyncEngine = self._adapter.new_sync_engine(symbol, self.depth)
        self.seq = 0
        self.time_ns = 0
        self.verified_seq: int | None = None
        self.store_depth_diffs = True
        self.stopped = False
        self.stopped_view: dict[str, Any] | None = None
        self.precisions: tuple[int, int] | None = None  # Kraken instrument (checksum text)
        self.rows = 0
        self.snapshots = 0
        self.last_checksum: int | None = None

    @property
    def state(self) -> SyncState:
        """The engine's state (a book is served only when SYNCED)."""
        return self.engine.state

    @property
    def synced(self) -> bool:
        """The book is proven."""
        return self.engine.state is SyncState.SYNCED

    def apply(self, item: Item) -> None:
        """Feed one row (diff, checksum, snapshot or event)."""
        kind = item.kind
        rec = item.rec
        if kind == "trade":
            return
        self.rows += 1
        engine = self.engine
        before = engine.stats.checksums_verified
        try:
            if kind == "diff":
                if rec.get("checksum") is not None:
                    self.last_checksum = int(rec["checksum"])
                engine.receive(
                    new_book_diff(
                        self.exchange,
                        self.symbol,
                        rec["bids"],
                        rec["asks"],
                        rec.get("event_time_ms"),
                        rec.get("first_id"),
                        rec.get("last_id"),
                        rec.get("checksum"),
                    )
                )
            elif kind == "checksum":
                self.last_checksum = int(rec["checksum"])
                engine.receive(
                    new_book_checksum(
                        self.exchange, self.symbol, int(rec["checksum"]), rec.get("event_time_ms")
                    )
                )
            elif kind == "snapshot":
                self._snapshot(rec)
            elif kind == "event":
                self._event(rec)
        except (KeyError, TypeError, ValueError):
            return  # a row the recorder did not write: the engine state says what is known
        if engine.stats.checksums_verified != before:
            self.verified_seq = item.seq
        self.seq = item.seq
        self.time_ns = item.time_ns

    def _use_depth(self, depth: object) -> None:
        """The recorder's book depth (run_start, snapshot rows): a new engine when it changed."""
        if isinstance(depth, int) and depth > 0 and depth != self.depth:
            self.depth = depth
            self.engine = self._adapter.new_sync_engine(self.symbol, depth)
            if self.precisions is not None:  # they outlive the engine (Kraken checksums)
                self.engine.receive(Instrument(self.exchange, self.symbol, *self.precisions))

    def _snapshot(self, rec: Mapping[str, Any]) -> None:
        self._use_depth(rec.get("depth"))
        engine = self.engine
        if rec.get("tag") == "rotation" and engine.state is SyncState.SYNCED:
            return  # the book this follower already holds, restated at the top of a new file
        if rec.get("source") == "local_book" or engine.state is SyncState.STOPPED:
            engine.reset("follow from a restated book")
        uid = rec.get("update_id")
        cs = rec.get("checksum")
        snap = BookSnapshot(
            self.exchange,
            self.symbol,
            [tuple(lv) for lv in rec["bids"]],
            [tuple(lv) for lv in rec["asks"]],
            None,
            uid if isinstance(uid, int) else None,
            cs if isinstance(cs, int) and rec.get("source") != "local_book" else None,
        )
        if isinstance(cs, int):
            self.last_checksum = cs
        engine.receive(snap)
        self.snapshots += 1
        self.stopped = False

    def _event(self, rec: Mapping[str, Any]) -> None:
        event = rec.get("event")
        engine = self.engine
        details = rec.get("details") or {}
        if event == "run_start":
            self.stopped = False
            if isinstance(details, dict):
                if "store_depth_diffs" in details:
                    self.store_depth_diffs = bool(details["store_depth_diffs"])
                self._use_depth(details.get("book_depth"))
            self.engine.reset("recorder started")
        elif event == "state_change":
            state = rec.get("state")
            if state == "CONNECTING":
                engine.reset(str(rec.get("reason") or "recorder reconnecting"))
            elif state == "STOPPED":
                # Kept to say "the book when the recorder stopped" (REST), never followed on.
                self.stopped_view = self.view() if self.synced else None
                self.stopped = True
                engine.reset(str(rec.get("reason") or "recorder stopped"))
        elif event == "sequence_break" and isinstance(details, dict):
            engine.receive(
                SequenceBreak(self.exchange, int(details.get("expected", 0)), int(details.get("got", 0)))
            )
        elif event == "instrument" and isinstance(details, dict):
            self.precisions = (int(details["price_precision"]), int(details["qty_precision"]))
            engine.receive(Instrument(self.exchange, self.symbol, *self.precisions))

    def update_id(self) -> int | None:
        """Binance: the last applied update id."""
        engine = self.engine
        return engine.update_id if isinstance(engine, SequenceSync) else None

    def view(self, levels: int | None = None) -> dict[str, Any]:
        """The followed book as JSON-ready data (levels: top N per side; None: all)."""
        book = self.engine.book
        bids, asks = book.top(levels) if levels else book.top()
        return {
            "recv_seq": self.seq,
            "recv_time_ns": self.time_ns,
            "state": self.engine.state.name,
            "depth": self.depth,
            "update_id": self.update_id(),
            "checksum": self.last_checksum,
            "verified_seq": self.verified_seq,
            "precisions": list(self.precisions) if self.precisions else None,
            "bids": [list(lv) for lv in bids],
            "asks": [list(lv) for lv in asks],
        }

    def snapshot_message(self, levels: int | None = None, **extra: Any) -> bytes:
        """A ``snapshot`` message of the followed book (what a joining client starts from)."""
        data = self.view(levels)
        data["source"] = "follower"
        data.update(extra)
        return encode_message(
            "snapshot", self.exchange, self.symbol, self.time_ns // 1_000_000 or None, orjson.dumps(data)
        )
