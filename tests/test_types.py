"""Domain events: frozen, slotted, and the fast builders produce the very same objects."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from mmdata import types
from mmdata.types import BookDiff, BookSnapshot, Trade, fast_builder

BUILDERS = [
    (types.new_book_snapshot, types.BookSnapshot),
    (types.new_book_diff, types.BookDiff),
    (types.new_book_checksum, types.BookChecksum),
    (types.new_trade, types.Trade),
    (types.new_unknown, types.Unknown),
    (types.new_venue_status, types.VenueStatus),
]


@pytest.mark.parametrize(("builder", "cls"), BUILDERS)
def test_builders_are_fast_twins_not_the_class(builder: Any, cls: type) -> None:
    # The trick is in use for the current layout (if this fails, construction silently
    # fell back to the slow frozen __init__: check the class definition).
    assert builder is not cls


@pytest.mark.parametrize(("builder", "cls"), BUILDERS)
def test_built_events_equal_constructed_ones(builder: Any, cls: type) -> None:
    n_required = sum(1 for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING)
    args = [f"v{i}" for i in range(n_required)]
    fast, slow = builder(*args), cls(*args)
    assert type(fast) is cls
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.exchange = "other"
    assert not hasattr(fast, "__dict__")


def test_keywords_and_defaults() -> None:
    diff = types.new_book_diff("binance", "BTCUSDT", [], [], 1, last_id=5, raw="r")
    assert diff == BookDiff("binance", "BTCUSDT", [], [], 1, None, 5, None, "r", None)
    trade = types.new_trade("kraken", "BTC/USD", 1, "1.0", "2", "buy", 7, snapshot=True)
    assert trade.snapshot is True and trade.seq is None
    assert dataclasses.replace(trade, qty="3").qty == "3"


def test_fallback_when_layout_does_not_match() -> None:
    @dataclasses.dataclass(frozen=True)  # no slots: the retag trick cannot apply
    class NoSlots:
        a: int

    assert fast_builder(NoSlots) is NoSlots


def test_events_are_frozen_and_slotted() -> None:
    snap = BookSnapshot("bitfinex", "tBTCUSD", [["1", "2"]], [], None)
    assert not hasattr(snap, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.symbol = "x"  # type: ignore[misc]
    assert Trade.__slots__  # type: ignore[attr-defined]
