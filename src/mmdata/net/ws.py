"""WebSocket connections (websockets' asyncio client) and the reconnect loop.

:func:`connect` opens one socket and wraps it in a :class:`WsConnection`, whose
``recv``/``send`` speak ``str`` only and turn every way a connection can end into
:class:`~mmdata.errors.ConnectionLost` (close code, reason, clean flag); a failed open is
:class:`~mmdata.errors.ConnectionFailed`. No ``websockets`` exception crosses this module.
Keepalive is websockets' own ping/pong (``ping_interval_s``/``ping_timeout_s``): a peer
that stops answering pings ends the connection with close code 1011.

:func:`reconnecting` is an async generator of connections. The consumer reads one until
it ends, then asks for the next; the generator closes the old one, waits a backoff delay
and reconnects. The backoff restarts from the bottom when the previous session worked
(received frames, or lasted ``backoff_cap_s``), so an occasional drop reconnects within
``backoff_base_s`` while a peer that accepts and immediately drops us is backed off
exponentially. Every wait, and every connect attempt, is raced against the ``stop``
event, so setting it ends the generator at once. Typical use::

    async with contextlib.aclosing(reconnecting(url, config, stop=stop)) as sessions:
        async for ws in sessions:
            try:
                while True:
                    handle(await ws.recv())
            except ConnectionLost:
                continue  # next session

Session-level policies (stale-data warning and reconnect, the venue's 24 h connection
limit) belong to the consumer, which has the timestamps; :class:`WsConfig` just carries
them (``no_data_warn_s``, ``no_data_reconnect_s``, ``max_session_s``) with
``WsConnection.opened_monotonic`` as the session's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from mmdata.errors import ConfigError, ConnectionFailed, ConnectionLost
from mmdata.net.backoff import backoff

__all__ = ["WsConfig", "WsConnection", "connect", "reconnecting"]

#: Messages websockets may buffer before it stops reading the socket (backpressure);
#: large, so a burst while the consumer is busy does not stall pings.
MAX_QUEUE = 1024

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WsConfig:
    """Connection and reconnect settings; validated on construction (``ConfigError``).

    ``None`` disables ``ping_interval_s``/``ping_timeout_s`` (keepalive),
    ``max_session_s`` and ``no_data_reconnect_s``.
    """

    open_timeout_s: float = 10.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 2.0
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_session_s: float | None = 23.5 * 3600  # venues drop connections at 24 h
    no_data_warn_s: float = 15.0
    no_data_reconnect_s: float | None = 60.0
    max_frame_bytes: int = 16 * 1024 * 1024
    compression: bool = False

    def __post_init__(self) -> None:
        positive = {
            "open_timeout_s": self.open_timeout_s,
            "close_timeout_s": self.close_timeout_s,
            "no_data_warn_s": self.no_data_warn_s,
            "ping_interval_s": self.ping_interval_s,
            "ping_timeout_s": self.ping_timeout_s,
            "max_session_s": self.max_session_s,
            "no_data_reconnect_s": self.no_data_reconnect_s,
        }
        for name, value in positive.items():
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"WsConfig.{name} must be a positive number, got {value}")
        if self.no_data_reconnect_s is not None and self.no_data_reconnect_s < self.no_data_warn_s:
            raise ConfigError(
                f"WsConfig.no_data_reconnect_s ({self.no_data_reconnect_s}) "
                f"must be >= no_data_warn_s ({self.no_data_warn_s})"
            )
        if self.max_frame_bytes <= 0:
            raise ConfigError(f"WsConfig.max_frame_bytes must be > 0, got {self.max_frame_bytes}")
        backoff(self.backoff_base_s, self.backoff_cap_s)  # raises ConfigError for a bad pair


class _ClientConnection(ClientConnection):
    """websockets' connection, plus a timer that enforces its close deadline.

    When the peer breaks the protocol (or sends a close frame) websockets replies with a
    close frame and computes a deadline for the peer to drop TCP, but only ``close()`` or
    ``send()`` enforce it: a consumer blocked in ``recv()`` would wait forever on a peer
    that stays silent. The timer aborts the transport at the deadline, so ``recv()``
    ends within ``close_timeout_s``.
    """

    _deadline_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.close_deadline is not None and self._deadline_timer is None:
            self._deadline_timer = self.loop.call_at(self.close_deadline, self._abort_if_open)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        super().connection_lost(exc)

    def _abort_if_open(self) -> None:
        if self.state is not State.CLOSED:
            self.transport.abort()


class WsConnection:
    """One open WebSocket. Built by :func:`connect`; speaks ``str`` and mmdata errors only.

    ``frames_received``/``bytes_received`` count messages and their payload bytes;
    ``opened_monotonic`` is :func:`time.monotonic` when the handshake completed.
    """

    def __init__(self, url: str, connection: ClientConnection, opened_monotonic: float) -> None:
        self.url = url
        self.opened_monotonic = opened_monotonic
        self.frames_received = 0
        self.bytes_received = 0
        self._connection = connection
        self._closing = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called or the connection ended."""
        return self._closing or self._connection.state is State.CLOSED

    async def recv(self) -> str:
        """The next message; binary frames are decoded as UTF-8 with replacement.

        Raises :class:`~mmdata.errors.ConnectionLost` once the connection has ended,
        whatever the reason (peer close, network failure, ping timeout, local close).
        Two concurrent ``recv`` calls are a programming error (websockets raises
        ``ConcurrencyError``, a ``RuntimeError``).
        """
        try:
            payload = await self._connection.recv(decode=False)
        except ConnectionClosed as exc:
            raise _lost(self.url, exc) from exc
        self.frames_received += 1
        self.bytes_received += len(payload)
        # one decode either way; lenient so a bad byte costs a U+FFFD, not the session
        return payload.decode("utf-8", errors="replace")

    async def send(self, text: str) -> None:
        """Send a text frame; raises :class:`~mmdata.errors.ConnectionLost` if closed."""
        try:
            await self._connection.send(text)
        except ConnectionClosed as exc:
            raise _lost(self.url, exc) from exc

    async def close(self, reason: str = "client close", code: int = 1000) -> None:
        """Close the connection (bounded by ``close_timeout_s``). Idempotent, never raises."""
        self._closing = True
        try:
            await self._connection.close(code, reason)
        except Exception:  # an invalid code or a dead transport: force it shut instead
            with contextlib.suppress(Exception):
                self._connection.transport.abort()


def _lost(url: str, exc: ConnectionClosed) -> ConnectionLost:
    rcvd = exc.rcvd
    code = rcvd.code if rcvd is not None else None
    reason = rcvd.reason if rcvd is not None else ""
    clean = rcvd is not None and exc.sent is not None
    return ConnectionLost(f"connection to {url} ended: {exc}", code=code, reason=reason, clean=clean)


async def connect(url: str, config: WsConfig) -> WsConnection:
    """Open a WebSocket to ``url`` within ``config.open_timeout_s``.

    Raises :class:`~mmdata.errors.ConnectionFailed` for a bad URL, refused or unreachable
    host, rejected or garbled handshake, or timeout.
    """
    try:
        connection = await ws_connect(
            url,
            open_timeout=config.open_timeout_s,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=config.close_timeout_s,
            max_size=config.max_frame_bytes,
            max_queue=MAX_QUEUE,
            compression="deflate" if config.compression else None,
            create_connection=_ClientConnection,
        )
    except TimeoutError as exc:
        raise ConnectionFailed(f"timed out opening {url}: {exc}", url=url) from exc
    except (WebSocketException, OSError, ValueError) as exc:
        # InvalidURI, InvalidHandshake (incl. InvalidStatus/InvalidMessage), proxy errors,
        # refused/unreachable/DNS (OSError), bad port or ssl arguments (ValueError)
        raise ConnectionFailed(f"cannot open {url}: {exc}", url=url) from exc
    return WsConnection(url, connection, time.monotonic())


async def reconnecting(
    url: str | Callable[[], str],
    config: WsConfig,
    *,
    stop: asyncio.Event,
    rng: random.Random | None = None,
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncIterator[WsConnection]:
    """Yield connections to ``url`` (re-evaluated per attempt when callable) until ``stop``.

    Asking for the next connection closes the previous one and waits a backoff delay
    (restarted after a session that received frames or lasted ``backoff_cap_s``). A
    failed connect calls ``on_retry(error, delay)`` and waits ``delay``. ``sleep``
    replaces :func:`asyncio.sleep` for the waits (tests). Closing the generator closes
    the connection it last yielded.
    """
    pause = sleep if sleep is not None else asyncio.sleep
    rng = rng if rng is not None else random.Random()

    def fresh() -> Iterator[float]:
        return backoff(config.backoff_base_s, config.backoff_cap_s, rng=rng)

    delays = fresh()
    previous: WsConnection | None = None
    try:
        while not stop.is_set():
            if previous is not None:
                await previous.close()
                lasted = time.monotonic() - previous.opened_monotonic
                if previous.frames_received > 0 or lasted >= config.backoff_cap_s:
                    delays = fresh()  # that session worked: the drop is news, not a pattern
                previous = None
                stopped, _ = await _unless_stopped(pause(next(delays)), stop)
                if stopped:
                    return
            target = url() if callable(url) else url
            try:
                stopped, connection = await _unless_stopped(connect(target, config), stop)
            except ConnectionFailed as exc:
                delay = next(delays)
                if on_retry is not None:
                    on_retry(exc, delay)
                stopped, _ = await _unless_stopped(pause(delay), stop)
                if stopped:
                    return
                continue
            if stopped or connection is None:
                return
            previous = connection
            yield connection
    finally:
        if previous is not None:
            await previous.close()


async def _unless_stopped(awaitable: Awaitable[_T], stop: asyncio.Event) -> tuple[bool, _T | None]:
    """Run ``awaitable`` unless ``stop`` is set first: ``(False, result)`` or ``(True, None)``.

    A connection that completed in the same instant as the stop is closed, not leaked.
    """
    if stop.is_set():
        _close_unawaited(awaitable)
        return True, None
    work = asyncio.ensure_future(awaitable)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # let both cancellations run: the connect's aborts a half-open socket
        stopper.cancel()
        work.cancel()
        await asyncio.wait({work, stopper})
    if work.cancelled():
        return True, None
    if stop.is_set():
        if work.exception() is None:
            result = work.result()
            if isinstance(result, WsConnection):
                await result.close()
        return True, None
    return False, work.result()


def _close_unawaited(awaitable: Awaitable[object]) -> None:
    # silence "coroutine was never awaited" for work we decided not to start
    if asyncio.iscoroutine(awaitable):
        awaitable.close()
