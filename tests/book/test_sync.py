"""Tests of :mod:`mmdata.book.sync`: ``SequenceSync`` (PROTOCOLS.md §A.4) and ``ChecksumSync`` (§B, §C).

The property tests simulate the venue: a true book evolving through a true stream, delivered
with drops, duplicates, reorders and corrupted levels. The oracle is the true stream itself
(Binance: the true book at every update id) or an independent reference checksum written
here from PROTOCOLS.md (Kraken, Bitfinex); nothing of the oracle is imported from ``mmdata``.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.book.sync import (
    BookUpdated,
    ChecksumMismatch,
    ChecksumSync,
    GapDetected,
    NeedSnapshot,
    SequenceSync,
    StateChanged,
    SyncOutput,
    SyncState,
)
from mmdata.types import (
    Ack,
    BookChecksum,
    BookDiff,
    BookSnapshot,
    Instrument,
    SequenceBreak,
    Trade,
)
from tests import reference
from tests.vectors import MATIC_ASKS, MATIC_BIDS, XRPBTC_ASKS, XRPBTC_SNAPSHOT_BIDS

Text = tuple[str, str]
Levels = list[Text]
S = SyncState

T = TypeVar("T")

BSYM = "BTCUSDT"
KSYM = "MATIC/USD"
FSYM = "tXRPBTC"


# -- shared helpers ---------------------------------------------------------------------------------
def transitions(outputs: Sequence[SyncOutput]) -> list[tuple[SyncState, SyncState]]:
    """The ``(old, new)`` of every StateChanged, in order."""
    return [(o.old, o.new) for o in outputs if isinstance(o, StateChanged)]


def of_type(outputs: Sequence[SyncOutput], kind: type[T]) -> list[T]:
    """The outputs of one type, in order."""
    return [o for o in outputs if isinstance(o, kind)]


def book_top(engine: SequenceSync | ChecksumSync) -> tuple[Levels, Levels]:
    """The engine's whole book as text, best first."""
    return engine.book.top()


def check_resync_outputs(outputs: Sequence[SyncOutput], symbol: str) -> None:
    """Every GapDetected / ChecksumMismatch is followed by →RESYNCING and a NeedSnapshot."""
    for j, out in enumerate(outputs):
        if isinstance(out, GapDetected | ChecksumMismatch):
            moved, need = outputs[j + 1], outputs[j + 2]
            assert isinstance(moved, StateChanged)
            assert moved.new is S.RESYNCING
            assert isinstance(need, NeedSnapshot)
            assert need.symbol == symbol
            if isinstance(out, GapDetected) and symbol == BSYM:
                assert need.first_id == out.got  # the offending diff starts the new buffer


@dataclass
class ModelBook:
    """Naive venue book: Decimal-keyed dicts, latest text wins, zero removes, optional depth cut."""

    depth: int | None = None
    bids: dict[Decimal, Text] = field(default_factory=dict)
    asks: dict[Decimal, Text] = field(default_factory=dict)

    def replace(self, bids: Levels, asks: Levels) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(bids, asks)

    def apply(self, bids: Levels, asks: Levels) -> None:
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(Decimal(price), None)
                else:
                    side[Decimal(price)] = (price, qty)
        if self.depth is not None:
            for key in sorted(self.bids, reverse=True)[self.depth :]:
                del self.bids[key]
            for key in sorted(self.asks)[self.depth :]:
                del self.asks[key]

    def top(self) -> tuple[Levels, Levels]:
        bids = [self.bids[k] for k in sorted(self.bids, reverse=True)]
        asks = [self.asks[k] for k in sorted(self.asks)]
        return bids, asks

    def copy(self) -> ModelBook:
        return ModelBook(self.depth, dict(self.bids), dict(self.asks))


def ref_kraken_string(book: ModelBook, pp: int, qp: int) -> str:
    """PROTOCOLS.md §B.3 checksum string of the model book (see tests/reference.py)."""
    bids, asks = book.top()
    return reference.ref_kraken_string(asks, bids, pp, qp)


def ref_kraken_checksum(book: ModelBook, pp: int, qp: int) -> int:
    """Unsigned CRC-32 of :func:`ref_kraken_string`."""
    bids, asks = book.top()
    return reference.ref_kraken_checksum(asks, bids, pp, qp)


def ref_bitfinex_string(book: ModelBook) -> str:
    """PROTOCOLS.md §C.3 checksum string of the model book."""
    return reference.ref_bitfinex_string(*book.top())


def ref_bitfinex_checksum(book: ModelBook) -> int:
    """Signed CRC-32 of :func:`ref_bitfinex_string`."""
    return reference.ref_bitfinex_checksum(*book.top())


# ===================================================================================================
# Binance: SequenceSync
# ===================================================================================================
ZERO = "0.00000000"
BID_PRICES = tuple(Decimal(100) - i * Decimal("0.01") for i in range(8))
ASK_PRICES = tuple(Decimal("100.01") + i * Decimal("0.01") for i in range(8))


def bdiff(first: int, last: int, bids: Levels | None = None, asks: Levels | None = None) -> BookDiff:
    """A Binance depth diff covering update ids ``[first, last]``."""
    return BookDiff("binance", BSYM, bids or [], asks or [], None, first_id=first, last_id=last)


def bsnap(update_id: int, bids: Levels | None = None, asks: Levels | None = None) -> BookSnapshot:
    """A Binance REST snapshot with ``lastUpdateId``."""
    return BookSnapshot("binance", BSYM, bids or [], asks or [], None, update_id=update_id)


@dataclass(frozen=True)
class TrueStream:
    """The venue's truth: contiguous diffs and the book after every single update id."""

    base: int
    diffs: tuple[BookDiff, ...]
    books: dict[int, tuple[Levels, Levels]]

    @property
    def last_id(self) -> int:
        last = self.diffs[-1].last_id
        assert last is not None
        return last

    def snapshot(self, update_id: int) -> BookSnapshot:
        bids, asks = self.books[update_id]
        return bsnap(update_id, bids, asks)


@st.composite
def true_streams(draw: st.DrawFn) -> TrueStream:
    """A true book changed by 1–2 levels per update id; diffs aggregate 1–3 ids (final qty per level)."""
    base = draw(st.integers(1, 10**12))
    book = ModelBook()

    def change(is_bid: bool) -> Text:
        price = draw(st.sampled_from(BID_PRICES if is_bid else ASK_PRICES))
        qty = ZERO if draw(st.integers(0, 3)) == 0 else f"{Decimal(draw(st.integers(1, 99_999))) / 1000:.8f}"
        return f"{price:.8f}", qty

    book.replace([change(True) for _ in range(draw(st.integers(0, 6)))], [change(False) for _ in range(3)])
    books = {base: book.top()}
    diffs: list[BookDiff] = []
    uid = base
    end = base + draw(st.integers(3, 36))
    while uid < end:
        first = uid + 1
        changed: dict[tuple[bool, str], str] = {}
        for _ in range(draw(st.integers(1, 3))):
            uid += 1
            for _ in range(draw(st.integers(1, 2))):
                is_bid = draw(st.booleans())
                price, qty = change(is_bid)
                book.apply([(price, qty)], []) if is_bid else book.apply([], [(price, qty)])
                changed[(is_bid, price)] = qty
            books[uid] = book.top()
        bids = [(p, q) for (is_bid, p), q in changed.items() if is_bid]
        asks = [(p, q) for (is_bid, p), q in changed.items() if not is_bid]
        diffs.append(bdiff(first, uid, bids, asks))
    return TrueStream(base, tuple(diffs), books)


class BinanceHarness:
    """Feeds one ``SequenceSync`` and checks each reply against the true stream."""

    def __init__(self, stream: TrueStream) -> None:
        self.stream = stream
        self.engine = SequenceSync(BSYM)
        self.pending: int | None = None  # first_id of the outstanding NeedSnapshot
        self.delivered = 0
        self.synced_seen = 0
        self.gaps_seen = 0

    def diff(self, diff: BookDiff) -> None:
        engine = self.engine
        pre_state, pre_uid = engine.state, engine.update_id
        pre = dataclasses.replace(engine.stats)
        first_ever = self.delivered == 0
        first, last = diff.first_id, diff.last_id
        assert first is not None and last is not None
        outputs = list(engine.receive(diff))
        self.delivered += 1
        if pre_state in (S.SYNCED, S.SYNCING):
            if last <= pre_uid:
                # (iv) a duplicate, or a diff the snapshot already contains: ignored, nothing missing.
                assert outputs == []
                assert engine.stats.stale_ignored == pre.stale_ignored + 1
                assert (engine.state, engine.update_id) == (pre_state, pre_uid)
            elif first == pre_uid + 1 or (pre_state is S.SYNCING and first <= pre_uid + 1):
                # The next ids, or the diff bridging lastUpdateId + 1: applied.
                expected = [] if pre_state is S.SYNCED else [(S.SYNCING, S.SYNCED)]
                assert transitions(outputs) == expected
                assert outputs[-1] == BookUpdated(BSYM)
                assert engine.update_id == last
            elif pre_state is S.SYNCING and first_ever:
                # Snapshot fetched before the stream's first diff and older than it (§A.4 step 4).
                assert engine.state in (S.SNAPSHOT, S.RESYNCING)
                assert [n.first_id for n in of_type(outputs, NeedSnapshot)] == [first]
            else:
                # (i) ids pre_uid+1 .. first-1 are missing: always reported as a gap.
                gaps = of_type(outputs, GapDetected)
                assert [(g.expected, g.got) for g in gaps] == [(pre_uid + 1, first)]
                assert engine.stats.gaps == pre.gaps + 1
                # (iii) the book is gone and a snapshot is asked for.
                assert engine.state is S.RESYNCING
                assert [n.first_id for n in of_type(outputs, NeedSnapshot)] == [first]
        elif pre_state is S.CONNECTING:
            assert transitions(outputs) == [(S.CONNECTING, S.SNAPSHOT)]
            assert [n.first_id for n in of_type(outputs, NeedSnapshot)] == [first]
        else:
            assert pre_state in (S.SNAPSHOT, S.RESYNCING)
            assert outputs == []  # buffered until a snapshot stands
        self._after(outputs)

    def snapshot(self, update_id: int) -> None:
        engine = self.engine
        pre_state = engine.state
        pre = dataclasses.replace(engine.stats)
        requested, self.pending = self.pending, None
        outputs = list(engine.receive(self.stream.snapshot(update_id)))
        if pre_state is S.CONNECTING:
            assert transitions(outputs) == [(S.CONNECTING, S.SYNCING)]
        else:
            assert pre_state in (S.SNAPSHOT, S.RESYNCING)
            assert requested is not None
            if update_id < requested:
                # Older than the first buffered diff: ask again, keep the buffer (§A.4 step 4).
                assert [(type(o), getattr(o, "first_id", None)) for o in outputs] == [
                    (NeedSnapshot, requested)
                ]
                assert engine.state is pre_state
                assert engine.stats.snapshot_refetches == pre.snapshot_refetches + 1
            else:
                assert transitions(outputs)[0] == (pre_state, S.SYNCING)
                assert engine.stats.snapshots == pre.snapshots + 1
        self._after(outputs)

    def _after(self, outputs: list[SyncOutput]) -> None:
        engine = self.engine
        check_resync_outputs(outputs, BSYM)
        gaps = of_type(outputs, GapDetected)
        self.gaps_seen += len(gaps)
        for gap in gaps:
            assert gap.got > gap.expected  # the true stream never overlaps
        if gaps:
            assert engine.state is S.RESYNCING
        for need in of_type(outputs, NeedSnapshot):
            self.pending = need.first_id
        if engine.state in (S.SYNCED, S.SYNCING):
            # (ii) a book that stands is the true book at its update id, text and levels.
            assert book_top(engine) == self.stream.books[engine.update_id]
            self.synced_seen += engine.state is S.SYNCED
        else:
            assert len(engine.book) == 0
            assert self.pending is not None or engine.state in (S.CONNECTING, S.STOPPED)


class TestSequenceSyncProperties:
    """Under drops, duplicates, reorders and stale snapshots, every missing id is reported as a gap
    and a SYNCED (or SYNCING) book is always the true book at ``engine.update_id``."""

    @settings(max_examples=250)
    @given(true_streams(), st.data())
    def test_random_delivery(self, stream: TrueStream, data: st.DataObject) -> None:
        harness = BinanceHarness(stream)
        diffs = stream.diffs
        if data.draw(st.booleans()):  # a REST snapshot fetched before the first diff
            harness.snapshot(data.draw(st.integers(stream.base, stream.last_id)))
        i = 0
        for _ in range(4 * len(diffs) + 8):
            live = i < len(diffs)
            if not live and harness.pending is None:
                break
            choices: list[str] = []
            if live:
                choices += ["next"] * 5 + ["drop", "swap"]
            if i > 0:
                choices.append("again")  # a duplicate, or a late copy of a dropped diff
            if harness.pending is not None:
                choices += ["snapshot"] * 3 + ["old snapshot"]
            action = data.draw(st.sampled_from(choices))
            if action == "next":
                harness.diff(diffs[i])
                i += 1
            elif action == "drop":
                i += 1
            elif action == "swap":
                if i + 1 < len(diffs):
                    harness.diff(diffs[i + 1])
                harness.diff(diffs[i])
                i = min(i + 2, len(diffs))
            elif action == "again":
                harness.diff(diffs[data.draw(st.integers(0, i - 1))])
            else:
                requested = harness.pending
                assert requested is not None
                if action == "old snapshot" and requested > stream.base:
                    harness.snapshot(data.draw(st.integers(stream.base, requested - 1)))
                else:
                    front = diffs[i - 1].last_id if i else stream.base
                    assert front is not None
                    high = min(stream.last_id, max(requested, front + 3))
                    harness.snapshot(data.draw(st.integers(requested, high)))

    @settings(max_examples=60)
    @given(true_streams())
    def test_honest_stream_syncs_and_stays_synced(self, stream: TrueStream) -> None:
        harness = BinanceHarness(stream)
        first = stream.diffs[0]
        assert first.first_id is not None and first.last_id is not None
        harness.diff(first)
        assert harness.pending == first.first_id
        harness.snapshot(first.first_id)  # taken while the first diff was in flight
        for diff in stream.diffs[1:]:
            harness.diff(diff)
        engine = harness.engine
        assert engine.state is S.SYNCED
        assert engine.update_id == stream.last_id
        assert harness.gaps_seen == 0
        contained = first.last_id <= first.first_id  # a one-id first diff is inside the snapshot
        assert engine.stats.diffs_applied == len(stream.diffs) - contained
        assert engine.stats.stale_ignored == contained


def level(price: str, qty: str = "1.00000000") -> Text:
    """One level of exact text."""
    return price, qty


class TestSequenceSyncRules:
    """Each rule of the Binance local-book procedure (PROTOCOLS.md §A.4), one at a time."""

    def test_state_sequence_of_a_healthy_book(self) -> None:
        engine = SequenceSync(BSYM)
        assert engine.state is S.CONNECTING
        out = engine.receive(bdiff(101, 105, [level("100.00000000")]))
        assert transitions(out) == [(S.CONNECTING, S.SNAPSHOT)]
        assert of_type(out, NeedSnapshot) == [NeedSnapshot(BSYM, "initial", 101)]
        assert engine.receive(bdiff(106, 110, [level("99.00000000")])) == ()
        out = engine.receive(bsnap(103, [level("98.00000000")]))
        # lastUpdateId 103 lies in the first diff's [101, 105]: it bridges, the second follows.
        assert transitions(out) == [(S.SNAPSHOT, S.SYNCING), (S.SYNCING, S.SYNCED)]
        assert of_type(out, BookUpdated) == [BookUpdated(BSYM), BookUpdated(BSYM)]
        assert engine.state is S.SYNCED
        assert engine.update_id == 110
        assert [p for p, _ in engine.book.bids.top()] == ["100.00000000", "99.00000000", "98.00000000"]
        assert engine.stats.snapshots == 1
        assert engine.stats.diffs_applied == 2

    def test_drop_diffs_the_snapshot_contains(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105, [level("1.0", "5")]))
        engine.receive(bdiff(106, 110, [level("2.0", "6")]))
        engine.receive(bdiff(111, 115, [level("3.0", "7")]))
        out = engine.receive(bsnap(110, [level("9.0", "1")]))
        assert engine.stats.stale_ignored == 2  # u <= lastUpdateId: dropped
        assert engine.update_id == 115
        assert engine.book.top() == ([("9.0", "1"), ("3.0", "7")], [])
        assert transitions(out) == [(S.SNAPSHOT, S.SYNCING), (S.SYNCING, S.SYNCED)]

    @pytest.mark.parametrize("last_update_id", [100, 101, 104])
    def test_bridge_bounds(self, last_update_id: int) -> None:
        # U <= L + 1 <= u for the diff [101, 105]; L = 100 is refused by the refetch rule.
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105, [level("1.0")]))
        out = engine.receive(bsnap(last_update_id))
        if last_update_id < 101:
            assert of_type(out, NeedSnapshot) == [
                NeedSnapshot(BSYM, "snapshot older than first buffered diff", 101)
            ]
            assert engine.state is S.SNAPSHOT
        else:
            assert engine.state is S.SYNCED
            assert engine.update_id == 105
            assert engine.book.top() == ([("1.0", "1.00000000")], [])

    def test_snapshot_ending_where_a_diff_ends_waits_for_the_next(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        engine.receive(bsnap(105))
        assert engine.state is S.SYNCING  # nothing bridges 106 yet
        assert engine.stats.stale_ignored == 1
        out = engine.receive(bdiff(106, 107, [level("2.0")]))
        assert transitions(out) == [(S.SYNCING, S.SYNCED)]
        assert engine.update_id == 107

    def test_refetch_when_snapshot_older_than_first_diff(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        engine.receive(bdiff(106, 108))
        out = engine.receive(bsnap(99, [level("1.0")]))
        assert out == (NeedSnapshot(BSYM, "snapshot older than first buffered diff", 101),)
        assert engine.state is S.SNAPSHOT
        assert engine.stats.snapshot_refetches == 1
        assert engine.stats.snapshots == 0
        assert len(engine.book) == 0
        out = engine.receive(bsnap(107, [level("1.0")]))  # the buffer was kept
        assert engine.state is S.SYNCED
        assert engine.update_id == 108

    def test_snapshot_before_any_diff(self) -> None:
        engine = SequenceSync(BSYM)
        out = engine.receive(bsnap(100, [level("1.0")]))
        assert transitions(out) == [(S.CONNECTING, S.SYNCING)]
        assert engine.update_id == 100
        out = engine.receive(bdiff(99, 102, [level("2.0")]))
        assert transitions(out) == [(S.SYNCING, S.SYNCED)]
        assert engine.update_id == 102

    def test_snapshot_before_any_diff_but_older_than_the_stream(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bsnap(100, [level("1.0")]))
        out = engine.receive(bdiff(105, 106))
        assert transitions(out) == [(S.SYNCING, S.SNAPSHOT)]
        assert of_type(out, NeedSnapshot)[0].first_id == 105
        assert of_type(out, GapDetected) == []
        assert engine.stats.snapshot_refetches == 1
        assert len(engine.book) == 0
        out = engine.receive(bsnap(105, [level("3.0")]))  # the diff that judged it was kept
        assert engine.state is S.SYNCED
        assert engine.update_id == 106

    def test_snapshot_before_any_diff_then_gap_after_stale_diff(self) -> None:
        # The first diff (u <= L) proves the snapshot is not older than the stream (step 4 holds);
        # ids L+1.. then missing are a gap, not a stale snapshot.
        engine = SequenceSync(BSYM)
        engine.receive(bsnap(100, [level("1.0")]))
        assert engine.receive(bdiff(99, 100)) == ()
        out = engine.receive(bdiff(102, 103))
        assert [(g.expected, g.got) for g in of_type(out, GapDetected)] == [(101, 102)]
        assert engine.stats.gaps == 1
        assert engine.state is S.RESYNCING

    def test_gap_mid_stream(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105, [level("1.0")]))
        engine.receive(bsnap(104))
        assert engine.update_id == 105
        out = engine.receive(bdiff(108, 110, [level("2.0")]))
        assert out[0] == GapDetected(BSYM, 106, 108, "update ids skipped")
        assert transitions(out) == [(S.SYNCED, S.RESYNCING)]
        assert of_type(out, NeedSnapshot) == [NeedSnapshot(BSYM, "resync after gap", 108)]
        assert engine.state is S.RESYNCING
        assert len(engine.book) == 0
        assert engine.stats.gaps == 1
        assert engine.stats.resyncs == 1
        # The offending diff starts the new buffer; later diffs join it; an old snapshot is refused.
        assert engine.receive(bdiff(111, 112, [level("3.0")])) == ()
        assert of_type(engine.receive(bsnap(107)), NeedSnapshot)[0].first_id == 108
        out = engine.receive(bsnap(109, [level("1.0")]))
        assert transitions(out) == [(S.RESYNCING, S.SYNCING), (S.SYNCING, S.SYNCED)]
        assert engine.update_id == 112
        assert [p for p, _ in engine.book.bids.top()] == ["3.0", "2.0", "1.0"]

    def test_overlap_is_a_gap(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        engine.receive(bsnap(102))
        out = engine.receive(bdiff(104, 108))
        assert out[0] == GapDetected(BSYM, 106, 104, "unexpected overlap")
        assert engine.state is S.RESYNCING

    def test_duplicates_and_stale_diffs_are_ignored(self) -> None:
        engine = SequenceSync(BSYM)
        first = bdiff(101, 105, [level("1.0", "1")])
        second = bdiff(106, 107, [level("1.0", "2")])
        engine.receive(first)
        engine.receive(bsnap(101))
        engine.receive(second)
        assert engine.receive(first) == ()
        assert engine.receive(second) == ()
        assert engine.receive(bdiff(90, 92)) == ()
        assert engine.stats.stale_ignored == 3
        assert engine.state is S.SYNCED
        assert engine.book.top() == ([("1.0", "2")], [])

    def test_gap_inside_the_buffer_is_found_on_replay(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        engine.receive(bdiff(108, 109))  # 106, 107 lost while waiting for the snapshot
        out = engine.receive(bsnap(103))
        assert [(g.expected, g.got) for g in of_type(out, GapDetected)] == [(106, 108)]
        assert transitions(out) == [(S.SNAPSHOT, S.SYNCING), (S.SYNCING, S.SYNCED), (S.SYNCED, S.RESYNCING)]
        assert engine.state is S.RESYNCING
        assert len(engine.book) == 0

    def test_reset(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105, [level("1.0")]))
        engine.receive(bsnap(102))
        assert engine.state is S.SYNCED
        out = engine.reset()
        assert transitions(out) == [(S.SYNCED, S.CONNECTING)]
        assert engine.update_id == -1
        assert len(engine.book) == 0
        assert engine.reset() == ()  # already CONNECTING
        # A new connection starts over: the old ids mean nothing any more.
        out = engine.receive(bdiff(50, 51))
        assert of_type(out, NeedSnapshot) == [NeedSnapshot(BSYM, "initial", 50)]
        engine.receive(bsnap(50))
        assert engine.state is S.SYNCED
        assert engine.update_id == 51

    def test_reset_drops_the_buffer(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        engine.reset()
        out = engine.receive(bsnap(90, [level("1.0")]))  # no stale buffer to refuse it with
        assert transitions(out) == [(S.CONNECTING, S.SYNCING)]

    def test_stop(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105))
        out = engine.stop("done")
        assert out == (StateChanged(BSYM, S.SNAPSHOT, S.STOPPED, "done"),)
        assert engine.receive(bsnap(104)) == ()
        assert engine.receive(bdiff(106, 107)) == ()
        assert engine.stop() == ()
        assert engine.state is S.STOPPED

    def test_unsolicited_snapshot_is_ignored(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 105, [level("1.0")]))
        engine.receive(bsnap(102, [level("2.0")]))
        assert engine.receive(bsnap(200, [level("9.0")])) == ()
        assert engine.update_id == 105
        assert [p for p, _ in engine.book.bids.top()] == ["2.0", "1.0"]

    def test_buffer_bound(self) -> None:
        engine = SequenceSync(BSYM, max_buffer=2)
        for first in (101, 103, 105):
            engine.receive(bdiff(first, first + 1))
        assert engine.stats.buffer_overflows == 1
        # The oldest (101) was dropped: a snapshot must now cover 103.
        assert of_type(engine.receive(bsnap(102)), NeedSnapshot)[0].first_id == 103
        engine.receive(bsnap(104))
        assert engine.state is S.SYNCED
        assert engine.update_id == 106

    def test_rejects_events_without_ids(self) -> None:
        engine = SequenceSync(BSYM)
        with pytest.raises(ValueError, match="U/u"):
            engine.receive(BookDiff("binance", BSYM, [], [], None))
        with pytest.raises(ValueError, match="lastUpdateId"):
            engine.receive(BookSnapshot("binance", BSYM, [], [], None))

    def test_other_events_are_ignored(self) -> None:
        engine = SequenceSync(BSYM)
        trade = Trade("binance", BSYM, 1, "1.0", "1.0", "buy", 1)
        assert engine.receive(trade) == ()
        assert engine.receive(BookChecksum("binance", BSYM, 1, None)) == ()
        assert engine.state is S.CONNECTING

    def test_crossed_book_is_counted(self) -> None:
        engine = SequenceSync(BSYM)
        engine.receive(bdiff(101, 102, [level("101.0")]))
        engine.receive(bsnap(101, [level("99.0")], [level("100.0")]))
        assert engine.stats.crossed_states == 1
        assert engine.book.crossed


# ===================================================================================================
# Kraken v2 and Bitfinex v2: ChecksumSync
# ===================================================================================================
def kdiff(bids: Levels, asks: Levels, checksum: int | None) -> BookDiff:
    """A Kraken book update carrying the checksum of the book after it."""
    return BookDiff("kraken", KSYM, bids, asks, None, checksum=checksum)


def ksnap(bids: Levels, asks: Levels, checksum: int | None) -> BookSnapshot:
    """A Kraken book snapshot carrying its checksum."""
    return BookSnapshot("kraken", KSYM, bids, asks, None, checksum=checksum)


def fdiff(bids: Levels, asks: Levels) -> BookDiff:
    """A Bitfinex book update (no checksum; ``cs`` frames come apart)."""
    return BookDiff("bitfinex", FSYM, bids, asks, None)


def fsnap(bids: Levels, asks: Levels) -> BookSnapshot:
    """A Bitfinex book snapshot (carries no checksum)."""
    return BookSnapshot("bitfinex", FSYM, bids, asks, None)


def fcs(value: int) -> BookChecksum:
    """A Bitfinex ``cs`` frame (signed int32)."""
    return BookChecksum("bitfinex", FSYM, value, None)


@dataclass(frozen=True)
class Grid:
    """Where a simulated venue's prices and quantities live, and how the wire spells them."""

    venue: str
    mid: Decimal
    tick: Decimal
    qty_unit: Decimal
    levels: int  # price slots per side

    def price(self, is_bid: bool, k: int) -> Decimal:
        return self.mid - k * self.tick if is_bid else self.mid + (k + 1) * self.tick

    def price_text(self, price: Decimal, data: st.DataObject) -> str:
        if self.venue == "bitfinex":
            return reference.js_number_text(price)  # one spelling per price: the checksum uses the text
        return data.draw(st.sampled_from((repr(float(price)), f"{price:f}", f"{price.normalize():f}")))

    def qty_text(self, units: int, data: st.DataObject) -> str:
        qty = units * self.qty_unit
        if self.venue == "bitfinex":
            return reference.js_number_text(qty)
        if units == 0:
            return data.draw(st.sampled_from(("0", "0.0", "0.00000000")))
        return data.draw(st.sampled_from((repr(float(qty)), f"{qty:f}", f"{qty.normalize():f}")))


UNITS = st.one_of(st.integers(1, 30), st.integers(1, 10**7))


def draw_levels(grid: Grid, data: st.DataObject, is_bid: bool, max_size: int, min_size: int = 0) -> Levels:
    """Distinct price slots of one side with non-zero quantities."""
    slot = st.integers(0, grid.levels - 1)
    slots = data.draw(st.lists(slot, unique=True, min_size=min_size, max_size=max_size))
    return [
        (grid.price_text(grid.price(is_bid, k), data), grid.qty_text(data.draw(UNITS), data)) for k in slots
    ]


Change = tuple[bool, int, int]  # (is_bid, price slot, qty units; 0 removes)


def draw_changes(grid: Grid, data: st.DataObject, max_size: int = 4) -> list[Change]:
    """One update's level changes; about a third are removals."""
    change = st.tuples(
        st.booleans(), st.integers(0, grid.levels - 1), st.one_of(st.just(0), UNITS, st.just(0))
    )
    return data.draw(st.lists(change, min_size=1, max_size=max_size))


def render(grid: Grid, changes: list[Change], data: st.DataObject) -> tuple[Levels, Levels]:
    """Changes as wire text, split by side, in order."""
    bids: Levels = []
    asks: Levels = []
    for is_bid, k, units in changes:
        lv = (grid.price_text(grid.price(is_bid, k), data), grid.qty_text(units, data))
        (bids if is_bid else asks).append(lv)
    return bids, asks


def corrupt(changes: list[Change], grid: Grid, data: st.DataObject, kind: str) -> list[Change]:
    """Flip the quantity or the price of one level of an update."""
    j = data.draw(st.integers(0, len(changes) - 1))
    is_bid, k, units = changes[j]
    if kind == "qty":
        units = data.draw(UNITS) if units == 0 else data.draw(st.sampled_from((0, units + 1, 2 * units + 7)))
    else:
        k = (k + data.draw(st.integers(1, grid.levels - 1))) % grid.levels
    return [*changes[:j], (is_bid, k, units), *changes[j + 1 :]]


KRAKEN_GRIDS = (
    # (mid, price precision); quantities in units of 10^-qty_precision
    (Decimal("0.5666"), 4),
    (Decimal("45283.5"), 1),
    (Decimal("101.25"), 2),
)


def kraken_grid(data: st.DataObject) -> tuple[Grid, int, int]:
    """A Kraken-like instrument: grid, price precision, qty precision."""
    mid, pp = data.draw(st.sampled_from(KRAKEN_GRIDS))
    qp = data.draw(st.sampled_from((8, 4)))
    return Grid("kraken", mid, Decimal(1).scaleb(-pp), Decimal(1).scaleb(-qp), 40), pp, qp


class KrakenHarness:
    """Feeds one Kraken ``ChecksumSync``; ``venue`` is the true book, ``local`` what was delivered."""

    def __init__(self, grid: Grid, pp: int, qp: int, depth: int) -> None:
        self.grid, self.pp, self.qp = grid, pp, qp
        self.engine = ChecksumSync.kraken(KSYM, depth, pp, qp)
        self.venue = ModelBook(depth)
        self.local = ModelBook(depth)

    def checksum(self, book: ModelBook) -> int:
        return ref_kraken_checksum(book, self.pp, self.qp)

    def visible(self) -> bool:
        """Does the delivered book differ from the true one within the checksummed top 10?"""
        return ref_kraken_string(self.local, self.pp, self.qp) != ref_kraken_string(
            self.venue, self.pp, self.qp
        )

    def subscribe(self, bids: Levels, asks: Levels) -> None:
        """The venue (re)sends its snapshot; any number of levels, truncated to depth."""
        engine = self.engine
        self.venue.replace(bids, asks)
        self.local = self.venue.copy()
        pre_state = engine.state
        outputs = engine.receive(ksnap(bids, asks, self.checksum(self.venue)))
        assert transitions(outputs)[-1] == (S.SYNCING, S.SYNCED)
        if pre_state is not S.SYNCING:
            assert transitions(outputs)[0] == (pre_state, S.SYNCING)
        assert outputs[-1] == BookUpdated(KSYM)
        assert book_top(engine) == self.venue.top()

    def resubscribe(self) -> None:
        bids, asks = self.venue.top()
        self.subscribe(bids, asks)

    def update(self, true: list[Change], sent: list[Change] | None, data: st.DataObject) -> None:
        """The venue applies ``true``; the engine receives ``sent`` (None: lost) with the true checksum."""
        engine = self.engine
        self.venue.apply(*render(self.grid, true, data))
        checksum = self.checksum(self.venue)
        if sent is None:
            return
        bids, asks = render(self.grid, sent, data)
        pre = dataclasses.replace(engine.stats)
        if engine.state is S.RESYNCING:
            # After a mismatch every update is ignored until a snapshot.
            assert engine.receive(kdiff(bids, asks, checksum)) == ()
            assert engine.stats.unsynced_ignored == pre.unsynced_ignored + 1
            return
        assert engine.state is S.SYNCED
        self.local.apply(bids, asks)
        outputs = list(engine.receive(kdiff(bids, asks, checksum)))
        if self.visible():
            assert outputs[0] == ChecksumMismatch(KSYM, checksum, self.checksum(self.local))
            assert transitions(outputs) == [(S.SYNCED, S.RESYNCING)]
            check_resync_outputs(outputs, KSYM)
            assert engine.state is S.RESYNCING
            assert len(engine.book) == 0
            assert engine.stats.checksum_mismatches == pre.checksum_mismatches + 1
        else:
            # Honest (or corrupted out of the checksum's sight): no alarm, book truncated to depth.
            assert outputs == [BookUpdated(KSYM)]
            assert engine.state is S.SYNCED
            assert engine.stats.checksums_verified == pre.checksums_verified + 1
            assert book_top(engine) == self.local.top()


class TestKrakenChecksumProperties:
    """Kraken: a mismatch is reported exactly when the delivered book's top 10 differs from the
    venue's (so always for a visible corruption, never on an honest stream); the book is cut to
    the subscribed depth after every message."""

    @settings(max_examples=120)
    @given(st.data())
    def test_random_corruption(self, data: st.DataObject) -> None:
        grid, pp, qp = kraken_grid(data)
        harness = KrakenHarness(grid, pp, qp, data.draw(st.sampled_from((10, 25))))
        harness.subscribe(draw_levels(grid, data, True, 30), draw_levels(grid, data, False, 30))
        for _ in range(data.draw(st.integers(1, 25))):
            true = draw_changes(grid, data)
            kind = data.draw(st.sampled_from(("honest",) * 5 + ("qty", "price", "drop")))
            if kind == "drop":
                harness.update(true, None, data)
            elif kind == "honest":
                harness.update(true, true, data)
            else:
                harness.update(true, corrupt(true, grid, data, kind), data)
            if harness.engine.state is S.RESYNCING and data.draw(st.booleans()):
                harness.resubscribe()

    @settings(max_examples=50)
    @given(st.data())
    def test_honest_stream_never_mismatches(self, data: st.DataObject) -> None:
        grid, pp, qp = kraken_grid(data)
        harness = KrakenHarness(grid, pp, qp, data.draw(st.sampled_from((10, 25))))
        harness.subscribe(draw_levels(grid, data, True, 30), draw_levels(grid, data, False, 30))
        for _ in range(data.draw(st.integers(1, 20))):
            true = draw_changes(grid, data)
            harness.update(true, true, data)
            assert harness.engine.state is S.SYNCED
        assert harness.engine.stats.checksum_mismatches == 0

    @settings(max_examples=100)
    @given(st.data(), st.sampled_from(("qty", "price", "drop")))
    def test_visible_corruption_is_always_caught(self, data: st.DataObject, kind: str) -> None:
        """Corrupt a level inside the top 10; the very message that carries it must fail."""
        grid, pp, qp = kraken_grid(data)
        harness = KrakenHarness(grid, pp, qp, 10)
        all_slots = list(range(grid.levels))
        harness.subscribe(
            [(f"{grid.price(True, k):f}", "1") for k in all_slots[::2]],
            [(f"{grid.price(False, k):f}", "1") for k in all_slots[::2]],
        )
        is_bid = data.draw(st.booleans())
        side = harness.venue.bids if is_bid else harness.venue.asks
        top10 = sorted(side, reverse=is_bid)[:10]
        slot = data.draw(st.sampled_from([k for k in all_slots if grid.price(is_bid, k) in top10]))
        units = data.draw(UNITS)
        true: list[Change] = [(is_bid, slot, units)]
        if kind == "qty":
            bad_units = data.draw(UNITS.filter(lambda u: u * grid.qty_unit != Decimal(1) and u != units))
            harness.update(true, [(is_bid, slot, bad_units)], data)
        elif kind == "price":
            # A free slot better than the venue's 10th level: lands inside the local top 10.
            free = [k for k in all_slots[1::2] if k < slot + 2]
            harness.update(true, [(is_bid, data.draw(st.sampled_from(free)), units)], data)
        else:
            harness.update(true, None, data)  # lost ...
            other = data.draw(st.sampled_from([k for k in all_slots[::2] if k != slot]))
            harness.update([(is_bid, other, 3)], [(is_bid, other, 3)], data)  # ... seen by the next one
        if units * grid.qty_unit == Decimal(1) and kind != "price":
            return  # the "change" repeated the standing quantity: nothing to see
        assert harness.engine.stats.checksum_mismatches == 1
        assert harness.engine.state is S.RESYNCING


class TestKrakenRules:
    """Kraken-specific behaviour with the book-page example (PROTOCOLS.md §B.2/§B.3)."""

    BIDS: ClassVar[Levels] = MATIC_BIDS
    ASKS: ClassVar[Levels] = MATIC_ASKS
    UPDATE: ClassVar[Levels] = [("0.5657", "1098.3947558")]

    def test_book_page_example(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        out = engine.receive(Ack("kraken", "book", KSYM, True, depth=10))
        assert transitions(out) == [(S.CONNECTING, S.SNAPSHOT)]
        out = engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        assert transitions(out) == [(S.SNAPSHOT, S.SYNCING), (S.SYNCING, S.SYNCED)]
        assert out[-1] == BookUpdated(KSYM)
        assert engine.receive(kdiff(self.UPDATE, [], 2114181697)) == (BookUpdated(KSYM),)
        assert engine.stats.checksums_verified == 2
        assert engine.stats.diffs_applied == 1
        assert engine.stats.snapshots == 1

    def test_mismatch_then_resync(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        out = engine.receive(kdiff(self.UPDATE, [], 2439117997))  # stale checksum: wrong
        assert out[0] == ChecksumMismatch(KSYM, 2439117997, 2114181697)
        assert transitions(out) == [(S.SYNCED, S.RESYNCING)]
        assert of_type(out, NeedSnapshot) == [NeedSnapshot(KSYM, "resubscribe after checksum mismatch")]
        assert len(engine.book) == 0
        assert engine.stats.checksum_mismatches == 1
        assert engine.stats.resyncs == 1
        assert engine.receive(kdiff(self.UPDATE, [], 2114181697)) == ()
        assert engine.receive(BookChecksum("kraken", KSYM, 2114181697, None)) == ()
        assert engine.stats.unsynced_ignored == 2
        out = engine.receive(ksnap([*self.BIDS[:-1], *self.UPDATE], self.ASKS, 2114181697))
        assert transitions(out) == [(S.RESYNCING, S.SYNCING), (S.SYNCING, S.SYNCED)]

    def test_truncation_to_depth_after_every_update(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        venue = ModelBook(10)
        venue.replace(self.BIDS, self.ASKS)
        engine.receive(ksnap(self.BIDS, self.ASKS, ref_kraken_checksum(venue, 4, 8)))
        insert: Levels = [("0.5667", "1.5")]  # 11 bids: the worst (0.5657) falls out of scope
        venue.apply(insert, [])
        assert engine.receive(kdiff(insert, [], ref_kraken_checksum(venue, 4, 8))) == (BookUpdated(KSYM),)
        assert engine.book.depth() == (10, 10)
        assert engine.book.bids.get("0.5657") is None
        # Deleting the new best bid leaves 9 bids: an untruncated book would show 0.5657 again.
        delete: Levels = [("0.5667", "0")]
        venue.apply(delete, [])
        assert engine.receive(kdiff(delete, [], ref_kraken_checksum(venue, 4, 8))) == (BookUpdated(KSYM),)
        assert engine.book.top() == venue.top()
        assert engine.stats.checksum_mismatches == 0

    def test_snapshot_is_truncated_and_ack_sets_depth(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 25, 4, 8)
        engine.receive(Ack("kraken", "book", KSYM, True, depth=10))
        assert engine.depth == 10
        venue = ModelBook(10)
        extra: Levels = [("0.5650", "1"), ("0.5649", "2")]
        venue.replace(self.BIDS + extra, self.ASKS)
        engine.receive(ksnap(self.BIDS + extra, self.ASKS, ref_kraken_checksum(venue, 4, 8)))
        assert engine.book.depth() == (10, 10)
        assert engine.state is S.SYNCED

    def test_empty_book_is_checked_too(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        out = engine.receive(ksnap([], [], zlib.crc32(b"")))
        assert transitions(out)[-1] == (S.SYNCING, S.SYNCED)
        out = engine.receive(kdiff(self.UPDATE, [], zlib.crc32(b"")))  # the venue's book is still empty
        ours = zlib.crc32(b"5657" + b"109839475580")  # 0.5657 at 4 decimals, 1098.3947558 at 8
        assert of_type(out, ChecksumMismatch) == [ChecksumMismatch(KSYM, 0, ours)]
        engine.receive(ksnap([], [], 2439117997))  # the venue's book is the example's, ours empty
        assert engine.state is S.RESYNCING
        assert engine.stats.checksum_mismatches == 2

    def test_refused_subscription_is_noted(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        assert engine.receive(Ack("kraken", "book", KSYM, False, "Currency pair not supported")) == ()
        assert engine.state is S.CONNECTING
        assert engine.stats.problems == ["subscription refused: Currency pair not supported"]

    def test_without_precisions_never_synced(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10)
        out = engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        assert transitions(out) == [(S.CONNECTING, S.SYNCING)]
        assert of_type(out, BookUpdated) == []
        assert engine.receive(kdiff(self.UPDATE, [], 2114181697)) == ()
        assert engine.receive(kdiff([], [], 12345)) == ()  # even a wrong one cannot be judged
        assert engine.state is S.SYNCING
        assert engine.stats.checksums_unverified == 3
        assert engine.stats.checksums_verified == 0
        assert engine.stats.checksum_mismatches == 0

    def test_instrument_after_snapshot_recomputes_tokens(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10)
        engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        assert engine.receive(Instrument("kraken", KSYM, 5, 8)) == ()  # tokens built at pp 5 ...
        assert engine.receive(Instrument("kraken", KSYM, 4, 8)) == ()  # ... then rebuilt at pp 4
        assert engine.receive(Instrument("kraken", KSYM, 4, 8)) == ()  # same precisions: no-op
        out = engine.receive(kdiff(self.UPDATE, [], 2114181697))
        assert transitions(out) == [(S.SYNCING, S.SYNCED)]
        assert out[-1] == BookUpdated(KSYM)
        assert engine.stats.checksums_verified == 1

    def test_instrument_with_other_precisions_changes_the_verdict(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        engine.receive(Instrument("kraken", KSYM, 5, 8))
        out = engine.receive(kdiff(self.UPDATE, [], 2114181697))
        assert of_type(out, ChecksumMismatch) != []

    def test_reset_and_stop(self) -> None:
        engine = ChecksumSync.kraken(KSYM, 10, 4, 8)
        engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997))
        assert transitions(engine.reset()) == [(S.SYNCED, S.CONNECTING)]
        assert len(engine.book) == 0
        assert engine.reset() == ()
        assert engine.receive(kdiff(self.UPDATE, [], 2114181697)) == ()  # no book: ignored
        assert transitions(engine.stop()) == [(S.CONNECTING, S.STOPPED)]
        assert engine.receive(ksnap(self.BIDS, self.ASKS, 2439117997)) == ()
        assert engine.state is S.STOPPED
        assert engine.stop() == ()


# -- Bitfinex ---------------------------------------------------------------------------------------
BITFINEX_GRIDS = (
    # (mid, tick, amount unit): sub-1e-6 prices print in exponent form ("7e-7")
    (Decimal("0.0000011"), Decimal("1e-8"), Decimal("0.01")),
    (Decimal(6000), Decimal("0.5"), Decimal("1e-8")),
)


class BitfinexHarness:
    """Feeds one Bitfinex ``ChecksumSync``; ``venue`` is the true book, ``local`` what was delivered."""

    def __init__(self, grid: Grid) -> None:
        self.grid = grid
        self.engine = ChecksumSync.bitfinex(FSYM)
        self.venue = ModelBook()
        self.local = ModelBook()
        self.seq = 0

    def subscribe(self, bids: Levels, asks: Levels) -> None:
        engine = self.engine
        self.venue.replace(bids, asks)
        self.local = self.venue.copy()
        pre_state = engine.state
        outputs = engine.receive(fsnap(bids, asks))
        # Snapshots carry no checksum: trusted until the next cs frame.
        assert transitions(outputs) == [(pre_state, S.SYNCING), (S.SYNCING, S.SYNCED)]
        assert outputs[-1] == BookUpdated(FSYM)
        assert book_top(engine) == self.venue.top()

    def resubscribe(self) -> None:
        self.subscribe(*self.venue.top())

    def update(self, true: list[Change], sent: list[Change] | None, data: st.DataObject) -> None:
        engine = self.engine
        self.venue.apply(*render(self.grid, true, data))
        if sent is None:
            return
        bids, asks = render(self.grid, sent, data)
        pre = dataclasses.replace(engine.stats)
        outputs = engine.receive(fdiff(bids, asks))
        if engine.state is S.RESYNCING:
            assert outputs == ()
            assert engine.stats.unsynced_ignored == pre.unsynced_ignored + 1
            return
        self.local.apply(bids, asks)
        assert outputs == (BookUpdated(FSYM),)
        assert book_top(self.engine) == self.local.top()  # Bitfinex books are not truncated

    def checksum(self) -> None:
        engine = self.engine
        value = ref_bitfinex_checksum(self.venue)
        pre = dataclasses.replace(engine.stats)
        pre_state = engine.state
        outputs = list(engine.receive(fcs(value)))
        if pre_state is S.RESYNCING:
            assert outputs == []  # no book to check until the resubscribe
            assert engine.stats.unsynced_ignored == pre.unsynced_ignored + 1
        elif ref_bitfinex_string(self.local) != ref_bitfinex_string(self.venue):
            assert outputs[0] == ChecksumMismatch(FSYM, value, ref_bitfinex_checksum(self.local))
            assert transitions(outputs) == [(S.SYNCED, S.RESYNCING)]
            check_resync_outputs(outputs, FSYM)
            assert len(engine.book) == 0
            assert engine.stats.checksum_mismatches == pre.checksum_mismatches + 1
        else:
            assert outputs == []  # the book did not change: nothing to announce
            assert engine.stats.checksums_verified == pre.checksums_verified + 1
            assert engine.state is S.SYNCED

    def sequence_break(self) -> None:
        engine = self.engine
        self.seq += 10
        pre_state = engine.state
        outputs = list(engine.receive(SequenceBreak("bitfinex", self.seq, self.seq + 2)))
        if pre_state is S.RESYNCING:
            assert outputs == []
            return
        assert outputs[0] == GapDetected(FSYM, self.seq, self.seq + 2, "connection sequence break")
        assert transitions(outputs) == [(pre_state, S.RESYNCING)]
        check_resync_outputs(outputs, FSYM)
        assert len(engine.book) == 0


def bitfinex_grid(data: st.DataObject) -> Grid:
    """A Bitfinex-like P0 book grid (45 price slots per side: more than the 25 checksummed)."""
    mid, tick, unit = data.draw(st.sampled_from(BITFINEX_GRIDS))
    return Grid("bitfinex", mid, tick, unit, 45)


class TestBitfinexChecksumProperties:
    """Bitfinex: a ``cs`` frame reports a mismatch exactly when the delivered top 25 (as wire text)
    differs from the venue's; a connection sequence break always resyncs the book."""

    @settings(max_examples=120)
    @given(st.data())
    def test_random_corruption_and_breaks(self, data: st.DataObject) -> None:
        grid = bitfinex_grid(data)
        harness = BitfinexHarness(grid)
        # Often deeper than the 25 checksummed levels, so some corruption is out of sight.
        harness.subscribe(draw_levels(grid, data, True, 40, 15), draw_levels(grid, data, False, 40, 15))
        for _ in range(data.draw(st.integers(1, 30))):
            step = data.draw(st.sampled_from(("update",) * 4 + ("checksum",) * 2 + ("break",)))
            if step == "checksum":
                harness.checksum()
            elif step == "break":
                harness.sequence_break()
            else:
                true = draw_changes(grid, data, max_size=2)
                kind = data.draw(st.sampled_from(("honest",) * 4 + ("qty", "price", "drop")))
                sent = {"honest": true, "drop": None}.get(kind, true)
                if kind in ("qty", "price"):
                    sent = corrupt(true, grid, data, kind)
                harness.update(true, sent, data)
            if harness.engine.state is S.RESYNCING and data.draw(st.booleans()):
                harness.resubscribe()

    @settings(max_examples=60)
    @given(st.data())
    def test_honest_stream_never_mismatches(self, data: st.DataObject) -> None:
        grid = bitfinex_grid(data)
        harness = BitfinexHarness(grid)
        harness.subscribe(draw_levels(grid, data, True, 35), draw_levels(grid, data, False, 35))
        for _ in range(data.draw(st.integers(1, 20))):
            true = draw_changes(grid, data, max_size=2)
            harness.update(true, true, data)
            harness.checksum()
        assert harness.engine.state is S.SYNCED
        assert harness.engine.stats.checksum_mismatches == 0


class TestBitfinexRules:
    """Bitfinex-specific behaviour with the XRPBTC vector (PROTOCOLS.md §C.3)."""

    BIDS: ClassVar[Levels] = XRPBTC_SNAPSHOT_BIDS
    ASKS: ClassVar[Levels] = XRPBTC_ASKS

    def test_xrpbtc_vector(self) -> None:
        engine = ChecksumSync.bitfinex(FSYM)
        assert transitions(engine.receive(Ack("bitfinex", "book", FSYM, True, channel_id=81757))) == [
            (S.CONNECTING, S.SNAPSHOT)
        ]
        out = engine.receive(fsnap(self.BIDS, self.ASKS))
        assert transitions(out) == [(S.SNAPSHOT, S.SYNCING), (S.SYNCING, S.SYNCED)]
        assert engine.receive(fdiff([("0.0000011", "266122.94")], [])) == (BookUpdated(FSYM),)
        assert engine.receive(fcs(-1175357890)) == ()
        assert engine.stats.checksums_verified == 1
        assert engine.state is S.SYNCED

    def test_wrong_checksum(self) -> None:
        engine = ChecksumSync.bitfinex(FSYM)
        engine.receive(fsnap(self.BIDS, self.ASKS))
        out = engine.receive(fcs(-1175357890))  # checksum of the book *after* the update
        assert isinstance(out[0], ChecksumMismatch)
        assert out[0].expected == -1175357890
        assert transitions(out) == [(S.SYNCED, S.RESYNCING)]
        assert engine.receive(fdiff([("0.0000011", "266122.94")], [])) == ()
        assert engine.receive(fcs(-1175357890)) == ()
        assert engine.stats.unsynced_ignored == 2

    def test_sequence_break(self) -> None:
        engine = ChecksumSync.bitfinex(FSYM)
        assert engine.receive(SequenceBreak("bitfinex", 5, 7)) == ()  # no book yet: nothing to lose
        engine.receive(fsnap(self.BIDS, self.ASKS))
        out = engine.receive(SequenceBreak("bitfinex", 41, 43))
        assert out[0] == GapDetected(FSYM, 41, 43, "connection sequence break")
        assert transitions(out) == [(S.SYNCED, S.RESYNCING)]
        assert of_type(out, NeedSnapshot) == [NeedSnapshot(FSYM, "resubscribe after sequence break")]
        assert engine.stats.gaps == 1
        assert engine.stats.resyncs == 1
        assert len(engine.book) == 0
        assert engine.receive(fdiff([("0.0000011", "266122.94")], [])) == ()
        out = engine.receive(fsnap(self.BIDS, self.ASKS))
        assert transitions(out) == [(S.RESYNCING, S.SYNCING), (S.SYNCING, S.SYNCED)]

    def test_instrument_is_ignored(self) -> None:
        engine = ChecksumSync.bitfinex(FSYM)
        engine.receive(fsnap(self.BIDS, self.ASKS))
        assert engine.receive(Instrument("bitfinex", FSYM, 4, 8)) == ()
        engine.receive(fdiff([("0.0000011", "266122.94")], []))
        assert engine.receive(fcs(-1175357890)) == ()
        assert engine.stats.checksums_verified == 1

    def test_not_truncated(self) -> None:
        engine = ChecksumSync.bitfinex(FSYM, depth=25)
        deep = [(reference.js_number_text(Decimal(k).scaleb(-10)), "1") for k in range(1, 40)]
        engine.receive(fsnap(deep, []))
        assert engine.book.depth() == (39, 0)
