"""backoff(): bounds, growth, cap, determinism and argument validation."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdata.errors import ConfigError
from mmdata.net.backoff import backoff

bases = st.floats(min_value=1e-3, max_value=100.0)
ratios = st.floats(min_value=1.0, max_value=1e4)
factors = st.floats(min_value=1.0, max_value=10.0)
seeds = st.integers(min_value=0, max_value=2**32)


def take(n: int, delays: Iterator[float]) -> list[float]:
    return list(itertools.islice(delays, n))


@given(base=bases, ratio=ratios, factor=factors, seed=seeds, jitter=st.booleans())
def test_every_delay_is_positive_and_capped(
    base: float, ratio: float, factor: float, seed: int, jitter: bool
) -> None:
    cap = base * ratio
    for delay in take(60, backoff(base, cap, factor=factor, jitter=jitter, rng=random.Random(seed))):
        assert 0 < delay <= cap


@given(base=bases, ratio=ratios, factor=st.floats(min_value=1.01, max_value=10.0))
def test_ceilings_grow_monotonically_and_reach_the_cap(base: float, ratio: float, factor: float) -> None:
    cap = base * ratio
    ceilings = take(2000, backoff(base, cap, factor=factor, jitter=False))
    assert ceilings[0] == base
    assert all(a <= b for a, b in itertools.pairwise(ceilings))
    assert ceilings[-1] == cap


@given(base=bases, ratio=ratios, factor=factors, seed=seeds)
def test_jitter_stays_within_half_to_full_ceiling(
    base: float, ratio: float, factor: float, seed: int
) -> None:
    cap = base * ratio
    ceilings = take(40, backoff(base, cap, factor=factor, jitter=False))
    jittered = take(40, backoff(base, cap, factor=factor, rng=random.Random(seed)))
    for ceiling, delay in zip(ceilings, jittered, strict=True):
        assert ceiling / 2 <= delay <= ceiling


@given(seed=seeds)
def test_seeded_rng_is_deterministic(seed: int) -> None:
    first = take(30, backoff(0.5, 30.0, rng=random.Random(seed)))
    second = take(30, backoff(0.5, 30.0, rng=random.Random(seed)))
    assert first == second


def test_plain_sequence_without_jitter() -> None:
    assert take(8, backoff(0.5, 10.0, jitter=False)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert take(3, backoff(1.0, 5.0, factor=1.0, jitter=False)) == [1.0, 1.0, 1.0]


def test_huge_attempt_counts_do_not_overflow() -> None:
    delays = backoff(1.0, 60.0, factor=10.0, jitter=False)
    assert take(5000, delays)[-1] == 60.0


@pytest.mark.parametrize(
    ("base", "cap", "factor"),
    [
        (0.0, 1.0, 2.0),
        (-1.0, 1.0, 2.0),
        (2.0, 1.0, 2.0),
        (1.0, 2.0, 0.5),
        (float("nan"), 1.0, 2.0),
        (1.0, float("inf"), 2.0),
    ],
)
def test_bad_arguments_raise_config_error_at_call_time(base: float, cap: float, factor: float) -> None:
    with pytest.raises(ConfigError):
        backoff(base, cap, factor=factor)  # no next(): validation is eager
