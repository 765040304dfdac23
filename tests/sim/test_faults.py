"""FaultPlan / FrameFaults / RestFaults: seeded, targeted, and exactly what they say."""

from __future__ import annotations

from itertools import pairwise

from mmdata.sim.faults import OVERSIZED_CHARS, FaultPlan, FrameFaults, RestFaults
from mmdata.sim.model import OutFrame


def _diffs(n: int, symbol: str = "BTCUSDT") -> list[OutFrame]:
    return [OutFrame(f"diff-{i}", "diff", symbol) for i in range(n)]


def test_no_faults_passes_everything_through() -> None:
    plan = FaultPlan()
    assert not plan.any_frame_faults()
    frames = [*_diffs(5), OutFrame("hb", "heartbeat")]
    assert FrameFaults(plan, 1).apply(frames) == [f.text for f in frames]
    assert plan.describe() == "none"


def test_drop_duplicate_reorder_counts_and_order() -> None:
    plan = FaultPlan(seed=3, drop_diffs=0.1, duplicate_diffs=0.1, reorder_diffs=0.1)
    faults = FrameFaults(plan, 1)
    out = faults.apply(_diffs(2000))
    assert faults.dropped > 100 and faults.duplicated > 100 and faults.reordered > 100
    assert len(out) == 2000 - faults.dropped + faults.duplicated
    sent = [int(t.split("-")[1]) for t in out]
    assert len({*sent}) == 2000 - faults.dropped  # every non-dropped diff arrives
    assert any(b < a for a, b in pairwise(sent))  # something arrives late


def test_same_seed_same_faults_other_connection_other_faults() -> None:
    plan = FaultPlan(seed=7, drop_diffs=0.2)
    assert FrameFaults(plan, 1).apply(_diffs(200)) == FrameFaults(plan, 1).apply(_diffs(200))
    assert FrameFaults(plan, 1).apply(_diffs(200)) != FrameFaults(plan, 2).apply(_diffs(200))


def test_only_targeted_symbols_and_only_diffs() -> None:
    plan = FaultPlan(seed=1, drop_diffs=1.0, symbols=("ETHUSDT",))
    frames = [*_diffs(3, "BTCUSDT"), *_diffs(3, "ETHUSDT"), OutFrame("trade", "trade", "ETHUSDT")]
    assert FrameFaults(plan, 1).apply(frames) == ["diff-0", "diff-1", "diff-2", "trade"]


def test_malformed_and_oversized() -> None:
    faults = FrameFaults(FaultPlan(malformed_every=3, oversized_every=5), 1)
    out = faults.apply([OutFrame('{"a":1}', "other") for _ in range(15)])
    assert faults.malformed == 5 and faults.oversized == 3
    assert sum(1 for t in out if t.endswith("\x00}{")) == 5
    assert sum(1 for t in out if len(t) > OVERSIZED_CHARS) == 3


def test_corrupt_checksum_every_nth_diff_of_target() -> None:
    faults = FrameFaults(FaultPlan(corrupt_checksum_every=4), 1)
    due = [faults.corrupt_due(f) for f in _diffs(12)]
    assert due == [False, False, False, True] * 3
    assert not faults.corrupt_due(OutFrame("t", "trade", "BTCUSDT"))


def test_rest_faults_schedule() -> None:
    rest = RestFaults(FaultPlan(rest_429_every=3, rest_418_every=5, rest_5xx_every=7))
    statuses = [rest.next_status() for _ in range(15)]
    assert statuses[2] == 429 and statuses[4] == 418 and statuses[6] == 503
    assert statuses[14] == 418  # 418 wins over 429 when both are due
    assert statuses[0] is None
