"""Reconnect / retry delays: capped exponential backoff with "full jitter" kept off zero.

:func:`backoff` is a pure generator of delays, consumed one ``next()`` per failed attempt;
the caller owns the waiting (so tests inject a fake ``sleep``) and resets the backoff by
simply starting a new generator.

Attempt ``n`` (from 0) has the ceiling ``min(cap_s, base_s * factor**n)``. With jitter
the delay is uniform in ``[ceiling / 2, ceiling]``: spread out, so many clients dropped
at once do not reconnect in lock-step, yet never near zero, so a flapping peer is not
hammered. Without jitter the delay is the ceiling itself.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

from mmdata.errors import ConfigError

__all__ = ["backoff"]


def backoff(
    base_s: float = 0.5,
    cap_s: float = 30.0,
    *,
    factor: float = 2.0,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """An endless iterator of delays (seconds) for successive retry attempts.

    Raises :class:`~mmdata.errors.ConfigError` at call time (not at the first ``next()``)
    for ``base_s <= 0``, ``cap_s < base_s``, ``factor < 1`` or a non-finite value.
    Pass a seeded ``rng`` for a reproducible sequence.
    """
    if not (math.isfinite(base_s) and math.isfinite(cap_s) and math.isfinite(factor)):
        raise ConfigError(f"backoff arguments must be finite: {base_s=}, {cap_s=}, {factor=}")
    if base_s <= 0:
        raise ConfigError(f"backoff base_s must be > 0, got {base_s}")
    if cap_s < base_s:
        raise ConfigError(f"backoff cap_s ({cap_s}) must be >= base_s ({base_s})")
    if factor < 1:
        raise ConfigError(f"backoff factor must be >= 1, got {factor}")
    return _delays(base_s, cap_s, factor, jitter, rng if rng is not None else random.Random())


def _delays(base_s: float, cap_s: float, factor: float, jitter: bool, rng: random.Random) -> Iterator[float]:
    ceiling = base_s
    while True:
        if jitter:
            delay = rng.uniform(ceiling / 2, ceiling)
            # ceiling / 2 underflows to 0 only for subnormal bases; never yield 0
            yield delay if delay > 0 else ceiling
        else:
            yield ceiling
        # grow by multiplication, not base * factor**n: the power overflows for large n
        ceiling = min(cap_s, ceiling * factor)
