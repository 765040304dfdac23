"""Fault injection for the simulator: what goes wrong, when, reproducibly.

A :class:`FaultPlan` is plain, seeded configuration (from CLI flags or Python). The
server gives every client connection a :class:`FrameFaults` that rewrites the stream of
outgoing frames (drop / duplicate / reorder book diffs, malformed and oversized frames)
and asks it, per diff, whether the venue module should corrupt the next checksum.
Timed faults (disconnect, stall, venue maintenance and restart notices) and REST faults
(429 / 418 with ``Retry-After``, 5xx) are scheduled by the server from the same plan.

Everything is deterministic for a given seed and connection number, so a failing test
reproduces exactly.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields

from mmdata.sim.model import OutFrame

__all__ = ["FaultPlan", "FrameFaults", "RestFaults"]

#: Longer than every adapter's MAX_FRAME_CHARS (8 MiB), so clients must reject it.
OVERSIZED_CHARS = 9 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What the simulator breaks. Zero / empty means "never"."""

    seed: int = 0
    symbols: tuple[str, ...] = ()  # book/trade faults only for these symbols (empty = all)
    drop_diffs: float = 0.0  # probability a book diff frame is dropped
    duplicate_diffs: float = 0.0  # probability it is sent twice
    reorder_diffs: float = 0.0  # probability it is held back and sent after the next diff
    corrupt_checksum_every: int = 0  # every Nth book diff, the venue's checksum is wrong
    malformed_every: int = 0  # every Nth frame is replaced by a malformed one
    oversized_every: int = 0  # every Nth frame is followed by a 9 MiB frame
    disconnect_every_s: float = 0.0  # abrupt TCP close of every client
    stall_every_s: float = 0.0  # after this long of normal sending, stop sending (even heartbeats) …
    stall_s: float = 0.0  # … for this long; then again
    rest_429_every: int = 0  # every Nth REST request → 429 Too Many Requests
    rest_418_every: int = 0  # every Nth REST request → 418 (IP banned)
    rest_5xx_every: int = 0  # every Nth REST request → 503
    retry_after_s: int = 1  # Retry-After header on 429 / 418 / 503
    venue_restart_after_s: float = 0.0  # Binance serverShutdown / Bitfinex 20051 (then close)
    maintenance_after_s: float = 0.0  # Bitfinex 20060→20061 / Kraken status maintenance→online
    maintenance_s: float = 2.0

    def any_frame_faults(self) -> bool:
        """True when some per-frame fault is on (the fast path skips the injector otherwise)."""
        return bool(
            self.drop_diffs
            or self.duplicate_diffs
            or self.reorder_diffs
            or self.corrupt_checksum_every
            or self.malformed_every
            or self.oversized_every
        )

    def describe(self) -> str:
        """``name=value`` of every active fault (for logs and the CLI banner)."""
        active = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if f.name not in ("seed", "retry_after_s", "maintenance_s") and getattr(self, f.name)
        ]
        return ", ".join(active) or "none"


class FrameFaults:
    """Per-connection rewriting of outgoing frames according to a plan."""

    def __init__(self, plan: FaultPlan, connection_no: int) -> None:
        self.plan = plan
        self._rng = random.Random(zlib.crc32(f"{plan.seed}:{connection_no}".encode()))
        self._symbols = frozenset(plan.symbols)
        self._frames = 0
        self._diffs = 0
        self._held: dict[str | None, str] = {}
        self.dropped = 0
        self.duplicated = 0
        self.reordered = 0
        self.malformed = 0
        self.oversized = 0

    def _targets(self, frame: OutFrame) -> bool:
        return not self._symbols or frame.symbol in self._symbols

    def corrupt_due(self, frame: OutFrame) -> bool:
        """Count a book diff; True when the venue should corrupt the next checksum of its symbol."""
        every = self.plan.corrupt_checksum_every
        if not every or frame.kind != "diff" or not self._targets(frame):
            return False
        self._diffs += 1
        return self._diffs % every == 0

    def apply(self, frames: Iterable[OutFrame]) -> list[str]:
        """The texts to send, in order, after the plan's per-frame faults."""
        plan = self.plan
        rng = self._rng
        out: list[str] = []
        for frame in frames:
            self._frames += 1
            text = frame.text
            if plan.malformed_every and self._frames % plan.malformed_every == 0:
                self.malformed += 1
                out.append(text[: max(1, len(text) // 2)] + "\x00}{")
            elif frame.kind == "diff" and self._targets(frame):
                held = self._held.pop(frame.symbol, None)
                r = rng.random()
                if r < plan.drop_diffs:
                    self.dropped += 1
                elif r < plan.drop_diffs + plan.duplicate_diffs:
                    self.duplicated += 1
                    out += (text, text)
                elif r < plan.drop_diffs + plan.duplicate_diffs + plan.reorder_diffs and held is None:
                    self.reordered += 1
                    self._held[frame.symbol] = text
                else:
                    out.append(text)
                if held is not None:
                    out.append(held)  # the held-back diff arrives after a later one
            else:
                out.append(text)
            if plan.oversized_every and self._frames % plan.oversized_every == 0:
                self.oversized += 1
                out.append('{"junk":"' + "x" * OVERSIZED_CHARS + '"}')
        return out


class RestFaults:
    """Which REST request fails, and how (counted across all clients of a server)."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.requests = 0

    def next_status(self) -> int | None:
        """Count a request; the forced HTTP status for it, or None to answer normally."""
        self.requests += 1
        n = self.requests
        plan = self.plan
        if plan.rest_418_every and n % plan.rest_418_every == 0:
            return 418
        if plan.rest_429_every and n % plan.rest_429_every == 0:
            return 429
        if plan.rest_5xx_every and n % plan.rest_5xx_every == 0:
            return 503
        return None
