"""Sans-I/O book sync engines: one per symbol, fed parsed events, asking for what they need.

Theory of operation
-------------------
An engine owns one :class:`~mmdata.book.orderbook.LocalOrderBook` and a
:class:`SyncState`. The I/O layer (recorder, ``validate``) feeds it every event for its
symbol through :meth:`receive` and acts on the outputs: :class:`NeedSnapshot` means
"fetch a REST snapshot" (Binance) or "resubscribe this symbol" (Kraken, Bitfinex);
:class:`BookUpdated` means the book changed while trustworthy; :class:`GapDetected`
and :class:`ChecksumMismatch` say why it stopped being so. Engines never fetch, sleep
or write. A gap in one symbol resyncs that symbol only.

States (``IntEnum``, in the order a healthy book moves through them)::

    CONNECTING ──first event / ack──► SNAPSHOT ──snapshot──► SYNCING ──verified──► SYNCED
                                          ▲                                         │
                                          └────── RESYNCING ◄──gap / mismatch───────┘
    any state ──stop()──► STOPPED        any state ──reset()──► CONNECTING (new connection)

``SNAPSHOT`` waits for a snapshot (diffs are buffered for Binance, ignored otherwise);
``SYNCING`` holds a snapshot not yet proven (Binance: no diff has bridged it yet;
Kraken: checksum not verified yet, e.g. precisions unknown); ``SYNCED`` is the only
state in which the book may be written out; ``RESYNCING`` is ``SNAPSHOT`` after a
failure (book discarded, snapshot requested).

:class:`SequenceSync` — Binance Spot, PROTOCOLS.md §A.4 (current text, 2025-11-12):
buffer diffs and note the first ``U``; ask for a snapshot; if its ``lastUpdateId`` is
strictly less than that ``U``, ask again; discard buffered ``u <= lastUpdateId``; the
first applied diff must satisfy ``U <= lastUpdateId + 1 <= u``; afterwards every diff
must have ``U == previous u + 1``. A diff with ``u <=`` the book's update id is stale
(a duplicate): ignored, nothing is missing. Anything else — ids skipped, or an
overlap the stream never produces — is a gap: the book is discarded, the offending
diff starts a new buffer and a snapshot is requested.

:class:`ChecksumSync` — Kraken v2 (§B.2–B.3) and Bitfinex v2 (§C.1–C.3): a snapshot
replaces the book; Kraken truncates to the subscribed depth after every message and
verifies the checksum carried by every snapshot and update (needs the instrument's
precisions, taken from :class:`~mmdata.types.Instrument` events); Bitfinex verifies
each ``cs`` frame against the top 25 levels from the wire's own number text, and a
``SEQ_ALL`` break on the connection (:class:`~mmdata.types.SequenceBreak`) counts as
a gap for every book on it. Mismatch or gap → discard book, ask to resubscribe.

Counters in :class:`SyncStats` follow ``fixtures/README.md``: ``diffs_applied`` counts
updates applied after a snapshot (snapshots not counted); ``checksums_verified``
counts checksums compared *and matching* (snapshots included); mismatches are counted
apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from mmdata.book.checksum import BitfinexChecksum, KrakenChecksum
from mmdata.book.orderbook import LocalOrderBook
from mmdata.types import (
    Ack,
    BookChecksum,
    BookDiff,
    BookSnapshot,
    Event,
    Instrument,
    SequenceBreak,
)

__all__ = [
    "BookUpdated",
    "ChecksumMismatch",
    "ChecksumSync",
    "GapDetected",
    "NeedSnapshot",
    "SequenceSync",
    "StateChanged",
    "SyncEngine",
    "SyncOutput",
    "SyncState",
    "SyncStats",
]


class SyncState(IntEnum):
    """Where a symbol's book stands (see the module docstring for the transitions)."""

    CONNECTING = 0
    SNAPSHOT = 1
    SYNCING = 2
    SYNCED = 3
    RESYNCING = 4
    STOPPED = 5


@dataclass(frozen=True, slots=True)
class BookUpdated:
    """The book changed and is trustworthy (SYNCED): read ``engine.book`` now."""

    symbol: str


@dataclass(frozen=True, slots=True)
class NeedSnapshot:
    """Fetch a snapshot (Binance REST) or resubscribe the book (Kraken, Bitfinex).

    ``first_id`` is the ``U`` of the first buffered diff (Binance): the snapshot's
    ``lastUpdateId`` must not be older than it.
    """

    symbol: str
    reason: str
    first_id: int | None = None


@dataclass(frozen=True, slots=True)
class GapDetected:
    """Update ids are missing: ``expected`` was due, ``got`` arrived."""

    symbol: str
    expected: int
    got: int
    reason: str = "gap"


@dataclass(frozen=True, slots=True)
class ChecksumMismatch:
    """The venue's checksum (``expected``) differs from the local book's (``got``)."""

    symbol: str
    expected: int
    got: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The engine moved from ``old`` to ``new``; ``reason`` says why (ledger text)."""

    symbol: str
    old: SyncState
    new: SyncState
    reason: str


SyncOutput = BookUpdated | NeedSnapshot | GapDetected | ChecksumMismatch | StateChanged


@dataclass(slots=True)
class SyncStats:
    """Running counters of one engine (see module docstring for the conventions)."""

    snapshots: int = 0
    diffs_applied: int = 0
    checksums_verified: int = 0
    checksum_mismatches: int = 0
    checksums_unverified: int = 0
    gaps: int = 0
    resyncs: int = 0
    crossed_states: int = 0
    stale_ignored: int = 0
    unsynced_ignored: int = 0
    snapshot_refetches: int = 0
    buffer_overflows: int = 0
    malformed_updates: int = 0
    problems: list[str] = field(default_factory=list)


class SyncEngine(Protocol):
    """What every per-symbol sync engine offers (ARCHITECTURE.md §3)."""

    symbol: str
    state: SyncState
    book: LocalOrderBook
    stats: SyncStats

    def receive(self, event: Event) -> Sequence[SyncOutput]:
        """Feed one event for this symbol; act on the outputs."""
        ...

    def reset(self, reason: str = "reconnect") -> Sequence[SyncOutput]:
        """A new connection: discard everything, back to CONNECTING."""
        ...

    def stop(self, reason: str = "stop") -> Sequence[SyncOutput]:
        """Final state; later events are ignored."""
        ...


_NOTHING: tuple[SyncOutput, ...] = ()
# What applying venue levels that are not (decimal text, decimal text) pairs raises. Parsers check
# the frame's shape but not every level (that would double the hot path); the engine catches these,
# discards the half-applied book and resyncs, so a malformed level can never leave a wrong book.
_BAD_LEVEL = (ValueError, TypeError, IndexError, AttributeError, KeyError)


class _EngineBase:
    """State bookkeeping shared by both engines."""

    __slots__ = ("_updated", "book", "exchange", "state", "stats", "symbol")

    def __init__(self, exchange: str, symbol: str, book: LocalOrderBook) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.book = book
        self.state = SyncState.CONNECTING
        self.stats = SyncStats()
        # One immutable output reused for every applied diff: the hot path allocates nothing.
        self._updated: tuple[SyncOutput, ...] = (BookUpdated(symbol),)

    def _move(self, new: SyncState, reason: str) -> StateChanged:
        old = self.state
        self.state = new
        return StateChanged(self.symbol, old, new, reason)

    def _count_crossed(self) -> None:
        if self.book.crossed:
            self.stats.crossed_states += 1

    def stop(self, reason: str = "stop") -> Sequence[SyncOutput]:
        """Final state: later events are ignored."""
        if self.state is SyncState.STOPPED:
            return _NOTHING
        return (self._move(SyncState.STOPPED, reason),)

    def _discard(self) -> None:
        self.book.clear()

    def _malformed(self, exc: Exception) -> Sequence[SyncOutput]:
        """Levels that are not decimal text: the book may be half-updated, so resync."""
        self.stats.malformed_updates += 1
        self.stats.resyncs += 1
        self._discard()
        reason = f"malformed book levels ({type(exc).__name__}: {exc})"
        if len(self.stats.problems) < 100:
            self.stats.problems.append(reason)
        return (self._move(SyncState.RESYNCING, reason), NeedSnapshot(self.symbol, reason))


class SequenceSync(_EngineBase):
    """Binance Spot local-book procedure (PROTOCOLS.md §A.4); see the module docstring.

    ``max_buffer`` bounds the diffs held while waiting for a snapshot; when it is
    exceeded the oldest are dropped (a later snapshot must then be newer, which the
    ``lastUpdateId >= first U`` rule enforces).
    """

    __slots__ = ("_buffer", "_snapshot_age_unknown", "update_id")

    def __init__(self, symbol: str, *, exchange: str = "binance", max_buffer: int = 100_000) -> None:
        super().__init__(exchange, symbol, LocalOrderBook())
        self.update_id: int = -1
        self._buffer: deque[BookDiff] = deque(maxlen=max_buffer)
        # A snapshot arrived before any diff: its age is judged by the first diff.
        self._snapshot_age_unknown = False

    def _discard(self) -> None:
        self.book.clear()
        self._buffer.clear()
        self._snapshot_age_unknown = False

    def reset(self, reason: str = "reconnect") -> Sequence[SyncOutput]:
        """A new connection: discard book and buffer, back to CONNECTING."""
        self.book.clear()
        self._buffer.clear()
        self.update_id = -1
        self._snapshot_age_unknown = False
        if self.state in (SyncState.CONNECTING, SyncState.STOPPED):
            return _NOTHING
        return (self._move(SyncState.CONNECTING, reason),)

    def receive(self, event: Event) -> Sequence[SyncOutput]:
        """Feed a :class:`BookDiff` or :class:`BookSnapshot` of this symbol."""
        if type(event) is BookDiff:
            return self._on_diff(event)
        if type(event) is BookSnapshot:
            return self._on_snapshot(event)
        return _NOTHING

    # -- diffs ----------------------------------------------------------------
    def _on_diff(self, diff: BookDiff) -> Sequence[SyncOutput]:
        first = diff.first_id
        last = diff.last_id
        if first is None or last is None:
            raise ValueError(f"{self.symbol}: Binance diff without U/u ids")
        state = self.state
        if state is SyncState.SYNCED:
            if first == self.update_id + 1:
                try:
                    self.book.apply(diff.bids, diff.asks)
                except _BAD_LEVEL as exc:
                    return self._malformed(exc)
                self.update_id = last
                self.stats.diffs_applied += 1
                self._count_crossed()
                return self._updated
            if last <= self.update_id:
                self.stats.stale_ignored += 1
                return _NOTHING
            return self._gap(diff)
        if state is SyncState.SYNCING:
            return self._bridge(diff)
        if state is SyncState.STOPPED:
            return _NOTHING
        # CONNECTING, SNAPSHOT, RESYNCING: buffer until a snapshot is applied.
        buffer = self._buffer
        if len(buffer) == buffer.maxlen:
            self.stats.buffer_overflows += 1
        buffer.append(diff)
        if state is SyncState.CONNECTING:
            return (
                self._move(SyncState.SNAPSHOT, "first diff buffered"),
                NeedSnapshot(self.symbol, "initial", first),
            )
        return _NOTHING

    def _bridge(self, diff: BookDiff) -> Sequence[SyncOutput]:
        """SYNCING: the snapshot is set; find the diff that contains lastUpdateId + 1."""
        first = diff.first_id
        last = diff.last_id
        assert first is not None and last is not None
        if first <= self.update_id + 1:
            # lastUpdateId >= U - 1: the snapshot is not older than the stream (step 4 holds).
            self._snapshot_age_unknown = False
        if last <= self.update_id:
            self.stats.stale_ignored += 1
            return _NOTHING
        if first <= self.update_id + 1:
            try:
                self.book.apply(diff.bids, diff.asks)
            except _BAD_LEVEL as exc:
                return self._malformed(exc)
            self.update_id = last
            self.stats.diffs_applied += 1
            self._count_crossed()
            return (self._move(SyncState.SYNCED, "first diff bridged the snapshot"), *self._updated)
        if self._snapshot_age_unknown:
            # Snapshot taken before the stream's first diff: too old (step 4), fetch again.
            self._snapshot_age_unknown = False
            self.stats.snapshot_refetches += 1
            self.book.clear()
            self._buffer.append(diff)
            return (
                self._move(SyncState.SNAPSHOT, "snapshot older than the first diff"),
                NeedSnapshot(self.symbol, "snapshot older than the first diff", first),
            )
        return self._gap(diff)

    def _gap(self, diff: BookDiff) -> Sequence[SyncOutput]:
        assert diff.first_id is not None
        expected = self.update_id + 1
        got = diff.first_id
        reason = "update ids skipped" if got > expected else "unexpected overlap"
        self.stats.gaps += 1
        self.stats.resyncs += 1
        self.book.clear()
        self._buffer.clear()
        self._buffer.append(diff)
        return (
            GapDetected(self.symbol, expected, got, reason),
            self._move(SyncState.RESYNCING, f"gap: expected {expected}, got {got}"),
            NeedSnapshot(self.symbol, "resync after gap", got),
        )

    # -- snapshots ------------------------------------------------------------
    def _on_snapshot(self, snap: BookSnapshot) -> Sequence[SyncOutput]:
        if snap.update_id is None:
            raise ValueError(f"{self.symbol}: Binance snapshot without lastUpdateId")
        state = self.state
        if state in (SyncState.SYNCED, SyncState.SYNCING, SyncState.STOPPED):
            return _NOTHING  # unsolicited: the book already stands on a snapshot
        buffer = self._buffer
        if buffer and snap.update_id < buffer[0].first_id:  # type: ignore[operator]
            self.stats.snapshot_refetches += 1
            return (NeedSnapshot(self.symbol, "snapshot older than first buffered diff", buffer[0].first_id),)
        try:
            self.book.apply_snapshot(snap.bids, snap.asks)
        except _BAD_LEVEL as exc:
            return self._malformed(exc)
        self.update_id = snap.update_id
        self.stats.snapshots += 1
        self._snapshot_age_unknown = not buffer
        outputs: list[SyncOutput] = [self._move(SyncState.SYNCING, "snapshot applied")]
        pending = list(buffer)
        buffer.clear()
        for diff in pending:
            outputs.extend(self._on_diff(diff))
        return outputs


class ChecksumSync(_EngineBase):
    """Kraken v2 / Bitfinex v2 checksum-verified book (see the module docstring).

    Use :meth:`kraken` or :meth:`bitfinex` to build one. ``depth`` is the subscribed
    depth; Kraken books are truncated to it after every message.
    """

    __slots__ = ("_scheme", "depth", "truncate")

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        depth: int | None,
        truncate: bool,
        scheme: KrakenChecksum | BitfinexChecksum | None,
    ) -> None:
        super().__init__(exchange, symbol, LocalOrderBook(scheme.token if scheme else None))
        self.depth = depth
        self.truncate = truncate
        self._scheme = scheme

    @classmethod
    def kraken(
        cls,
        symbol: str,
        depth: int = 10,
        price_precision: int | None = None,
        qty_precision: int | None = None,
    ) -> ChecksumSync:
        """Kraken v2 book of ``depth``; precisions may come later as an Instrument event."""
        scheme = None
        if price_precision is not None and qty_precision is not None:
            scheme = KrakenChecksum(price_precision, qty_precision)
        return cls("kraken", symbol, depth=depth, truncate=True, scheme=scheme)

    @classmethod
    def bitfinex(cls, symbol: str, depth: int = 25) -> ChecksumSync:
        """Bitfinex v2 P0–P4 book (``cs`` frames verified when the venue sends them)."""
        return cls("bitfinex", symbol, depth=depth, truncate=False, scheme=BitfinexChecksum())

    def reset(self, reason: str = "reconnect") -> Sequence[SyncOutput]:
        """A new connection: discard the book, back to CONNECTING."""
        self.book.clear()
        if self.state in (SyncState.CONNECTING, SyncState.STOPPED):
            return _NOTHING
        return (self._move(SyncState.CONNECTING, reason),)

    def receive(self, event: Event) -> Sequence[SyncOutput]:
        """Feed a book, checksum, instrument, ack or sequence-break event of this symbol."""
        kind = type(event)
        if self.state is SyncState.STOPPED:
            return _NOTHING
        if kind is BookDiff:
            return self._on_diff(event)  # type: ignore[arg-type]
        if kind is BookChecksum:
            return self._on_checksum(event)  # type: ignore[arg-type]
        if kind is BookSnapshot:
            return self._on_snapshot(event)  # type: ignore[arg-type]
        if kind is Instrument:
            return self._on_instrument(event)  # type: ignore[arg-type]
        if kind is SequenceBreak:
            return self._on_break(event)  # type: ignore[arg-type]
        if kind is Ack:
            return self._on_ack(event)  # type: ignore[arg-type]
        return _NOTHING

    @property
    def has_book(self) -> bool:
        """True while a snapshot stands (SYNCING or SYNCED)."""
        return self.state is SyncState.SYNCED or self.state is SyncState.SYNCING

    def _on_ack(self, ack: Ack) -> Sequence[SyncOutput]:
        if ack.channel != "book":
            return _NOTHING
        if not ack.ok:
            self.stats.problems.append(f"subscription refused: {ack.message}")
            return _NOTHING
        if ack.depth is not None:
            self.depth = ack.depth
        if self.state is SyncState.CONNECTING:
            return (self._move(SyncState.SNAPSHOT, "subscribed"),)
        return _NOTHING

    def _on_instrument(self, inst: Instrument) -> Sequence[SyncOutput]:
        if self.exchange != "kraken":
            return _NOTHING
        current = self._scheme
        if (
            isinstance(current, KrakenChecksum)
            and current.price_precision == inst.price_precision
            and current.qty_precision == inst.qty_precision
        ):
            return _NOTHING
        self._scheme = KrakenChecksum(inst.price_precision, inst.qty_precision)
        self.book.set_token_fn(self._scheme.token)
        return _NOTHING

    def _on_snapshot(self, snap: BookSnapshot) -> Sequence[SyncOutput]:
        book = self.book
        try:
            book.apply_snapshot(snap.bids, snap.asks)
        except _BAD_LEVEL as exc:
            return self._malformed(exc)
        if self.truncate and self.depth:
            book.truncate(self.depth)
        self.stats.snapshots += 1
        outputs: list[SyncOutput] = []
        if self.state is not SyncState.SYNCING:
            outputs.append(self._move(SyncState.SYNCING, "snapshot applied"))
        if snap.checksum is None and self.exchange == "bitfinex":
            # Bitfinex snapshots carry no checksum; the next `cs` frame verifies it.
            outputs.append(self._move(SyncState.SYNCED, "snapshot applied"))
            outputs.extend(self._updated)
            return outputs
        if snap.checksum is not None:
            outputs.extend(self._verify(snap.checksum))
        return outputs

    def _on_diff(self, diff: BookDiff) -> Sequence[SyncOutput]:
        if not self.has_book:
            self.stats.unsynced_ignored += 1
            return _NOTHING
        book = self.book
        bids, asks = diff.bids, diff.asks
        try:
            # Most updates touch one side: skip the other's call entirely (hot path).
            if bids:
                book.bids.apply(bids)
            if asks:
                book.asks.apply(asks)
        except _BAD_LEVEL as exc:
            return self._malformed(exc)
        depth = self.depth
        if self.truncate and depth and (len(book.bids) > depth or len(book.asks) > depth):
            book.truncate(depth)
        self.stats.diffs_applied += 1
        self._count_crossed()
        if diff.checksum is not None:
            return self._verify(diff.checksum)
        return self._updated if self.state is SyncState.SYNCED else _NOTHING

    def _on_checksum(self, cs: BookChecksum) -> Sequence[SyncOutput]:
        if not self.has_book:
            self.stats.unsynced_ignored += 1
            return _NOTHING
        return self._verify(cs.value, book_changed=False)

    def _verify(self, expected: int, *, book_changed: bool = True) -> Sequence[SyncOutput]:
        scheme = self._scheme
        if scheme is None:
            # Kraken without instrument precisions: the book cannot be proven.
            self.stats.checksums_unverified += 1
            return _NOTHING
        got = scheme.of_book(self.book)
        if got == expected:
            self.stats.checksums_verified += 1
            if self.state is SyncState.SYNCED:
                return self._updated if book_changed else _NOTHING
            return (self._move(SyncState.SYNCED, "checksum verified"), *self._updated)
        self.stats.checksum_mismatches += 1
        self.stats.resyncs += 1
        self.book.clear()
        return (
            ChecksumMismatch(self.symbol, expected, got),
            self._move(SyncState.RESYNCING, f"checksum mismatch: venue {expected}, local {got}"),
            NeedSnapshot(self.symbol, "resubscribe after checksum mismatch"),
        )

    def _on_break(self, brk: SequenceBreak) -> Sequence[SyncOutput]:
        if self.state is SyncState.SNAPSHOT:
            # The lost frame may have been this book's snapshot: without a resubscribe it never comes.
            return (
                self._move(SyncState.RESYNCING, f"sequence break before snapshot: expected {brk.expected}"),
                NeedSnapshot(self.symbol, "resubscribe after sequence break"),
            )
        if not self.has_book:
            return _NOTHING
        self.stats.gaps += 1
        self.stats.resyncs += 1
        self.book.clear()
        return (
            GapDetected(self.symbol, brk.expected, brk.got, "connection sequence break"),
            self._move(SyncState.RESYNCING, f"sequence break: expected {brk.expected}, got {brk.got}"),
            NeedSnapshot(self.symbol, "resubscribe after sequence break"),
        )
