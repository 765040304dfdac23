"""WsConnection, connect() and reconnecting() against loopback servers.

Real sockets on 127.0.0.1 (websockets' own server, or raw asyncio TCP servers for
misbehaving peers); every backoff wait goes through an injected ``sleep`` so nothing
waits for real and reconnect delays can be checked exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.utils import accept_key

from mmdata.errors import ConfigError, ConnectionFailed, ConnectionLost
from mmdata.net.ws import WsConfig, WsConnection, connect, reconnecting
from tests.net.test_http import closed_port

FAST = WsConfig(open_timeout_s=2.0, close_timeout_s=0.5, backoff_base_s=1.0, backoff_cap_s=30.0)

Handler = Callable[[ServerConnection], Awaitable[None]]
ClientCb = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one async test body with a hang guard (each test takes well under a second)."""

    async def guarded() -> None:
        await asyncio.wait_for(coro, timeout=10.0)

    asyncio.run(guarded())


@contextlib.asynccontextmanager
async def ws_server(handler: Handler) -> AsyncIterator[str]:
    """A websockets server on 127.0.0.1:0; yields its ws:// URL."""
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/"


@contextlib.asynccontextmanager
async def tcp_server(on_client: ClientCb) -> AsyncIterator[int]:
    """A raw asyncio TCP server on 127.0.0.1:0 for peers websockets would not imitate; yields the port."""
    writers: list[asyncio.StreamWriter] = []
    handlers: set[asyncio.Task[Any]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            await on_client(reader, writer)

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in writers:
            writer.close()  # ends each handler's pending read
        if handlers:
            await asyncio.wait(handlers)  # finished here, not cancelled by asyncio.run's shutdown
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept the TCP connection, never answer the handshake."""
    await reader.read()  # until the client gives up and closes


def handshake_then(payload: bytes) -> ClientCb:
    """A raw peer that completes the WebSocket handshake, writes ``payload`` and goes quiet."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key.decode()).encode() + b"\r\n\r\n" + payload
        )
        await writer.drain()
        await reader.read()  # ignore pings and close frames until the client hangs up

    return on_client


class Sleeps:
    """Injected sleep for reconnecting(): records each delay, returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def drain(ws: WsConnection) -> list[str]:
    """Read frames until the connection ends."""
    frames: list[str] = []
    with contextlib.suppress(ConnectionLost):
        while True:
            frames.append(await ws.recv())
    return frames


# -- one connection ---------------------------------------------------------------------


def test_text_binary_send_and_close() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("hello")
        await ws.send(b"\x00bin\xff")  # binary, and not valid UTF-8
        message = await ws.recv()
        await ws.send(f"echo:{message}")
        await ws.wait_closed()

    async def body() -> None:
        async with ws_server(handler) as url:
            ws = await connect(url, FAST)
            assert (ws.url, ws.closed) == (url, False)
            assert await ws.recv() == "hello"
            assert await ws.recv() == "\x00bin\ufffd"
            await ws.send("ping!")
            assert await ws.recv() == "echo:ping!"
            assert (ws.frames_received, ws.bytes_received) == (3, 5 + 5 + 10)
            await ws.close()
            await ws.close()  # idempotent
            assert ws.closed
            with pytest.raises(ConnectionLost):
                await ws.recv()
            with pytest.raises(ConnectionLost):
                await ws.send("too late")

    run(body())


def test_server_close_code_and_reason_surface_in_connection_lost() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last words")
        await ws.close(4001, "bye now")

    async def body() -> None:
        async with ws_server(handler) as url:
            ws = await connect(url, FAST)
            assert await ws.recv() == "last words"
            with pytest.raises(ConnectionLost) as caught:
                await ws.recv()
            assert (caught.value.code, caught.value.reason, caught.value.clean) == (4001, "bye now", True)
            assert ws.closed

    run(body())


def test_connection_dropped_without_close_frame_is_unclean() -> None:
    async def handler(ws: ServerConnection) -> None:
        ws.transport.abort()
        await ws.wait_closed()

    async def body() -> None:
        async with ws_server(handler) as url:
            ws = await connect(url, FAST)
            with pytest.raises(ConnectionLost) as caught:
                await ws.recv()
            assert (caught.value.code, caught.value.reason, caught.value.clean) == (None, "", False)
            await ws.close()

    run(body())


def test_unanswered_pings_end_the_connection() -> None:
    async def body() -> None:
        async with tcp_server(handshake_then(b"")) as port:
            config = WsConfig(ping_interval_s=0.05, ping_timeout_s=0.05, close_timeout_s=0.1)
            ws = await connect(f"ws://127.0.0.1:{port}/", config)
            with pytest.raises(ConnectionLost) as caught:
                await ws.recv()
            assert caught.value.clean is False
            await ws.close()

    run(body())


def test_protocol_error_from_a_peer_that_then_stays_silent_still_ends_recv() -> None:
    # websockets alone would wait forever for the peer to drop TCP after our 1002 close
    async def body() -> None:
        async with tcp_server(handshake_then(b"\x81\x02hi" + b"\xff\xff")) as port:
            ws = await connect(f"ws://127.0.0.1:{port}/", WsConfig(close_timeout_s=0.1))
            assert await ws.recv() == "hi"
            with pytest.raises(ConnectionLost) as caught:
                await ws.recv()
            assert "1002" in str(caught.value) and caught.value.clean is False

    run(body())


def test_connect_to_closed_port_fails() -> None:
    async def body() -> None:
        url = f"ws://127.0.0.1:{closed_port()}/"
        with pytest.raises(ConnectionFailed) as caught:
            await connect(url, FAST)
        assert caught.value.url == url
        assert isinstance(caught.value.__cause__, OSError)

    run(body())


def test_handshake_that_never_comes_times_out() -> None:
    async def body() -> None:
        async with tcp_server(silent) as port:
            with pytest.raises(ConnectionFailed) as caught:
                await connect(f"ws://127.0.0.1:{port}/", WsConfig(open_timeout_s=0.2))
            assert isinstance(caught.value.__cause__, TimeoutError)

    run(body())


def test_close_with_an_invalid_code_never_raises() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def body() -> None:
        async with ws_server(handler) as url:
            ws = await connect(url, FAST)
            await ws.close(code=99)  # not a valid close code: aborted instead
            assert ws.closed
            with pytest.raises(ConnectionLost):
                await ws.recv()

    run(body())


# -- reconnecting ------------------------------------------------------------------------


def test_reconnecting_yields_a_new_connection_after_a_drop() -> None:
    count = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal count
        count += 1
        await ws.send(f"session {count}")
        if count == 1:
            await ws.close(1001, "going away")
        else:
            await ws.wait_closed()

    async def body() -> None:
        sleeps = Sleeps()
        stop = asyncio.Event()
        sessions: list[list[str]] = []
        async with ws_server(handler) as url:
            gen = reconnecting(url, FAST, stop=stop, sleep=sleeps, rng=random.Random(1))
            async with contextlib.aclosing(gen) as connections:
                async for ws in connections:
                    if not sessions:
                        sessions.append(await drain(ws))
                    else:
                        sessions.append([await ws.recv()])
                        last = ws
                        break
            assert last.closed  # closing the generator closed the connection it held
        assert sessions == [["session 1"], ["session 2"]]
        assert len(sleeps.delays) == 1 and 0.5 <= sleeps.delays[0] <= 1.0

    run(body())


def test_failed_connects_call_on_retry_with_growing_delays() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def body() -> None:
        sleeps = Sleeps()
        retries: list[tuple[Exception, float]] = []
        async with ws_server(handler) as url:
            refused = f"ws://127.0.0.1:{closed_port()}/"
            targets = iter([refused, refused, refused, url])
            gen = reconnecting(
                lambda: next(targets),
                FAST,
                stop=asyncio.Event(),
                sleep=sleeps,
                rng=random.Random(2),
                on_retry=lambda exc, delay: retries.append((exc, delay)),
            )
            async with contextlib.aclosing(gen) as connections:
                ws = await anext(connections)
                assert ws.url == url
        assert [type(exc) for exc, _ in retries] == [ConnectionFailed] * 3
        assert [delay for _, delay in retries] == sleeps.delays
        low, mid, high = sleeps.delays
        assert 0.5 <= low <= 1.0 and 1.0 <= mid <= 2.0 and 2.0 <= high <= 4.0

    run(body())


def test_backoff_grows_for_a_flapping_peer_and_resets_after_a_good_session() -> None:
    count = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal count
        count += 1
        if count == 4:  # the one session that delivers data
            await ws.send("data")
        await ws.close()

    async def body() -> None:
        sleeps = Sleeps()
        async with ws_server(handler) as url:
            gen = reconnecting(url, FAST, stop=asyncio.Event(), sleep=sleeps, rng=random.Random(3))
            async with contextlib.aclosing(gen) as connections:
                seen = 0
                async for ws in connections:
                    await drain(ws)
                    seen += 1
                    if seen == 6:
                        break
        ceilings = [1.0, 2.0, 4.0, 1.0, 2.0]  # after sessions 1-3 (no data), 4 (data: reset), 5
        assert len(sleeps.delays) == 5
        for ceiling, delay in zip(ceilings, sleeps.delays, strict=True):
            assert ceiling / 2 <= delay <= ceiling

    run(body())


def test_stop_ends_reconnecting_during_the_backoff_wait() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.close()

    async def body() -> None:
        stop = asyncio.Event()
        entered: list[float] = []
        cancelled = asyncio.Event()

        async def endless_sleep(delay: float) -> None:
            entered.append(delay)
            stop.set()  # stop arrives while the generator is waiting
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with ws_server(handler) as url:
            gen = reconnecting(url, FAST, stop=stop, sleep=endless_sleep)
            async with contextlib.aclosing(gen) as connections:
                first = await anext(connections)
                await drain(first)
                with pytest.raises(StopAsyncIteration):
                    await anext(connections)
        assert len(entered) == 1 and cancelled.is_set()

    run(body())


def test_stop_ends_reconnecting_during_a_hanging_connect() -> None:
    async def body() -> None:
        stop = asyncio.Event()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stop.set()  # the handshake is in flight and will never complete
            await silent(reader, writer)

        async with tcp_server(on_client) as port:
            config = WsConfig(open_timeout_s=60.0)
            gen = reconnecting(f"ws://127.0.0.1:{port}/", config, stop=stop, sleep=Sleeps())
            async with contextlib.aclosing(gen) as connections:
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(anext(connections), timeout=5.0)  # not open_timeout_s

    run(body())


def test_already_stopped_yields_nothing() -> None:
    async def body() -> None:
        stop = asyncio.Event()
        stop.set()
        gen = reconnecting("ws://127.0.0.1:9/", FAST, stop=stop)
        assert [ws async for ws in gen] == []

    run(body())


# -- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"open_timeout_s": 0},
        {"close_timeout_s": -1.0},
        {"ping_interval_s": 0},
        {"ping_timeout_s": float("nan")},
        {"max_session_s": 0},
        {"no_data_warn_s": 0},
        {"no_data_warn_s": 30.0, "no_data_reconnect_s": 10.0},
        {"max_frame_bytes": 0},
        {"backoff_base_s": 0},
        {"backoff_base_s": 10.0, "backoff_cap_s": 1.0},
    ],
)
def test_bad_config_raises_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        WsConfig(**kwargs)


def test_config_allows_disabling_optional_limits() -> None:
    config = WsConfig(ping_interval_s=None, ping_timeout_s=None, max_session_s=None, no_data_reconnect_s=None)
    assert config.ping_interval_s is None and config.max_session_s is None
