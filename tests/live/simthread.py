"""A simulator running on its own thread and loop, for testing the (threaded) live streams.

``speed`` scales the server's clock: at 60 a simulated minute passes every real second,
so candles close within the test's time budget. Faults with real-time periods
(``disconnect_every_s``) are unaffected by it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeVar

import requests

from mmdata.sim import FaultPlan, SimServer

_T = TypeVar("_T")


class SimThread:
    """``with SimThread("kraken", ["BTC/USD"]) as sim:`` — ``sim.url`` / ``sim.rest_url`` for clients."""

    def __init__(
        self,
        exchange: str,
        symbols: Sequence[str],
        *,
        speed: float = 1.0,
        seed: int = 1,
        rate: float = 1.0,
        faults: FaultPlan | None = None,
    ) -> None:
        start = time.time()

        def clock() -> float:
            return start + (time.time() - start) * speed

        self.exchange = exchange
        self._make = lambda: SimServer(
            exchange, symbols, seed=seed, rate=rate, faults=faults, clock=clock, past_days=1
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-thread", daemon=True)
        self.sim: SimServer | None = None

    def __enter__(self) -> SimThread:
        self._thread.start()

        async def start() -> SimServer:
            sim = self._make()
            await sim.start()
            return sim

        self.sim = self.run(start())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.sim is not None:
            self.run(self.sim.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def run(self, coro: Coroutine[Any, Any, _T] | Awaitable[_T], timeout: float = 30) -> _T:
        """Run ``coro`` on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], _T]) -> _T:
        """Call ``fn`` on the simulator's loop thread (market state is not thread-safe)."""

        async def wrapper() -> _T:
            return fn()

        return self.run(wrapper())

    @property
    def server(self) -> SimServer:
        assert self.sim is not None
        return self.sim

    @property
    def url(self) -> str:
        """What a client passes as ``url=``: the venue's socket path on this server."""
        return self.server.venue_ws_url

    @property
    def rest_url(self) -> str:
        return self.server.rest_url

    def rest(self, path: str, **params: Any) -> Any:
        """GET a REST path of the simulator; the decoded JSON."""
        response = requests.get(self.rest_url + path, params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def rest_text(self, path: str, **params: Any) -> str:
        response = requests.get(self.rest_url + path, params=params, timeout=10)
        assert response.status_code == 200, response.text
        return response.text

    def now_ms(self) -> int:
        return self.server.now_ms()
