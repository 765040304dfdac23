"""HttpClient against a real loopback server with scripted replies and a fake clock.

The fake ``sleep`` records each wait and advances the fake ``clock``/``wall`` instead of
sleeping, so retry, ban and weight-budget policy is checked exactly and instantly.
"""

from __future__ import annotations

import email.utils
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from mmdata.errors import ConfigError, ConnectionFailed, HttpError, RateLimited
from mmdata.net.http import HttpClient, parse_retry_after
from mmdata.types import HttpRequest

WALL_START = 1_700_000_010.0  # 30 s into a wall-clock minute


@dataclass
class Reply:
    """One scripted response; ``hang`` holds it back until the server closes (client timeout)."""

    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


class ScriptedServer:
    """ThreadingHTTPServer on 127.0.0.1:0 answering GETs from ``script`` in order (200 "ok" when empty)."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.seen: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.seen.append(self.path)
                reply = outer.script.pop(0) if outer.script else Reply()
                if reply.hang:
                    outer.release.wait(5.0)
                    return
                body = reply.body.encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left is expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02})
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


class FakeTime:
    """Injected sleep/clock/wall: sleeping records the wait and advances both clocks."""

    def __init__(self) -> None:
        self.now = 100.0
        self.wall_now = WALL_START
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.wall_now += seconds

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.wall_now


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    srv = ScriptedServer()
    yield srv
    srv.close()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Recorder:
    """Collects on_event calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


def make_client(fake: FakeTime, events: Recorder | None = None, **kwargs: Any) -> HttpClient:
    return HttpClient(
        sleep=fake.sleep, clock=fake.clock, wall=fake.wall, rng=random.Random(7), on_event=events, **kwargs
    )


def get(server: ScriptedServer, path: str = "/api", **kwargs: Any) -> HttpRequest:
    return HttpRequest("GET", server.url + path, **kwargs)


def test_success_returns_the_response(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(200, '{"lastUpdateId": 1}', {"X-Test": "yes"})]
    with make_client(fake) as client:
        response = client.send(get(server, "/api/v3/depth", params=(("symbol", "BTCUSDT"), ("limit", "5"))))
    assert (response.status, response.text, response.attempts) == (200, '{"lastUpdateId": 1}', 1)
    assert response.headers["x-test"] == "yes"  # case-insensitive
    assert response.url.endswith("/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert server.seen == ["/api/v3/depth?symbol=BTCUSDT&limit=5"]
    assert fake.sleeps == []


def test_client_error_is_raised_without_retry(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(404, "no such symbol " + "x" * 1000)]
    with make_client(fake, retries=3) as client, pytest.raises(HttpError) as caught:
        client.send(get(server))
    assert caught.value.status == 404
    assert caught.value.url == server.url + "/api"
    assert caught.value.body.startswith("no such symbol") and len(caught.value.body) == 512
    assert len(server.seen) == 1 and fake.sleeps == []


def test_429_retry_after_seconds_is_honoured(server: ScriptedServer, fake: FakeTime) -> None:
    events = Recorder()
    server.script = [Reply(429, headers={"Retry-After": "3"}), Reply(200)]
    with make_client(fake, events) as client:
        response = client.send(get(server))
    assert response.attempts == 2 and fake.sleeps == [3.0]
    assert events.kinds() == ["retry"]
    assert events.events[0][1]["status"] == 429 and events.events[0][1]["wait_s"] == 3.0


def test_retry_after_http_date_is_honoured(server: ScriptedServer, fake: FakeTime) -> None:
    when = email.utils.formatdate(WALL_START + 20, usegmt=True)
    server.script = [Reply(503, headers={"Retry-After": when}), Reply(200)]
    with make_client(fake) as client:
        client.send(get(server))
    assert fake.sleeps == [20.0]


def test_garbage_retry_after_falls_back_to_backoff(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(429, headers={"Retry-After": "soon-ish"}), Reply(200)]
    with make_client(fake, backoff_base_s=0.5) as client:
        client.send(get(server))
    assert len(fake.sleeps) == 1 and 0.25 <= fake.sleeps[0] <= 0.5


def test_418_ban_is_respected_by_the_next_request(server: ScriptedServer, fake: FakeTime) -> None:
    events = Recorder()
    server.script = [Reply(418, headers={"Retry-After": "7"}), Reply(200), Reply(200)]
    with make_client(fake, events, retries=0) as client:
        with pytest.raises(RateLimited) as caught:
            client.send(get(server))
        assert (caught.value.status, caught.value.retry_after) == (418, 7.0)
        assert client.banned_until == fake.now + 7
        assert fake.sleeps == []
        client.send(get(server))  # waits out the ban first
        assert fake.sleeps == [7.0]
        client.send(get(server))  # ban over: no further wait
    assert fake.sleeps == [7.0] and len(server.seen) == 3
    assert events.kinds() == ["ban", "rate_limited", "ban"]


def test_418_within_retries_waits_for_the_ban(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(418, headers={"Retry-After": "5"}), Reply(200)]
    with make_client(fake, retries=2) as client:
        assert client.send(get(server)).attempts == 2
    assert fake.sleeps == [5.0]


def test_server_errors_back_off_then_succeed(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(503), Reply(500), Reply(200, "fine")]
    with make_client(fake, retries=4, backoff_base_s=0.5) as client:
        response = client.send(get(server))
    assert (response.text, response.attempts) == ("fine", 3)
    assert len(fake.sleeps) == 2
    assert 0.25 <= fake.sleeps[0] <= 0.5 and 0.5 <= fake.sleeps[1] <= 1.0


def test_server_errors_exhaust_retries(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(500, "boom")] * 3
    with make_client(fake, retries=2) as client, pytest.raises(HttpError) as caught:
        client.send(get(server))
    assert (caught.value.status, caught.value.body) == (500, "boom")
    assert len(server.seen) == 3 and len(fake.sleeps) == 2


def test_429_exhausting_retries_raises_rate_limited(server: ScriptedServer, fake: FakeTime) -> None:
    events = Recorder()
    server.script = [Reply(429, headers={"Retry-After": "1"})] * 2
    with make_client(fake, events, retries=1) as client, pytest.raises(RateLimited) as caught:
        client.send(get(server))
    assert (caught.value.status, caught.value.retry_after) == (429, 1.0)
    assert events.kinds() == ["retry", "rate_limited"]


def test_wait_beyond_max_wait_raises_instead_of_sleeping(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(429, headers={"Retry-After": "500"})]
    with make_client(fake, retries=4, max_wait_s=120.0) as client, pytest.raises(RateLimited) as caught:
        client.send(get(server))
    assert (caught.value.status, caught.value.retry_after) == (429, 500.0)
    assert fake.sleeps == [] and len(server.seen) == 1


def test_server_error_wanting_a_long_wait_raises_rate_limited(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(503, headers={"Retry-After": "600"})]
    with make_client(fake, max_wait_s=120.0) as client, pytest.raises(RateLimited) as caught:
        client.send(get(server))
    assert (caught.value.status, caught.value.retry_after) == (503, 600.0)
    assert isinstance(caught.value.__cause__, HttpError) and fake.sleeps == []


def test_long_ban_fails_fast_and_keeps_failing_until_it_ends(server: ScriptedServer, fake: FakeTime) -> None:
    events = Recorder()
    server.script = [Reply(418, headers={"Retry-After": "1000"})]
    with make_client(fake, events, retries=3, max_wait_s=60.0) as client:
        with pytest.raises(RateLimited) as first:
            client.send(get(server))
        with pytest.raises(RateLimited) as second:
            client.send(get(server))  # refused locally: the server is not contacted while banned
        fake.now += 1000
        client.send(get(server))
    assert (first.value.status, first.value.retry_after) == (418, 1000.0)
    assert second.value.retry_after == 1000.0
    assert fake.sleeps == [] and len(server.seen) == 2
    assert events.kinds() == ["ban", "rate_limited", "rate_limited"]  # no "retry": nothing was retried


def test_weight_budget_waits_for_the_next_minute(server: ScriptedServer, fake: FakeTime) -> None:
    events = Recorder()
    server.script = [
        Reply(200, headers={"x-mbx-used-weight-1m": "1195"}),  # header name case does not matter
        Reply(200, headers={"X-MBX-USED-WEIGHT-1M": "10"}),
    ]
    with make_client(fake, events, weight_limit_1m=1200) as client:
        client.send(get(server))
        assert client.used_weight == 1195 and fake.sleeps == []
        client.send(get(server, weight=10))
        assert client.used_weight == 10
    assert fake.sleeps == [30.0]  # WALL_START is 30 s into its minute
    kind, data = events.events[0]
    assert kind == "weight_wait" and (data["used_weight"], data["weight"], data["limit"]) == (1195, 10, 1200)


def test_weight_seen_in_an_earlier_minute_does_not_wait(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(200, headers={"X-MBX-USED-WEIGHT-1M": "1199"}), Reply(200)]
    with make_client(fake, weight_limit_1m=1200) as client:
        client.send(get(server))
        fake.wall_now += 60
        client.send(get(server, weight=5))
    assert fake.sleeps == []


def test_weight_within_budget_does_not_wait(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(200, headers={"X-MBX-USED-WEIGHT-1M": "100"}), Reply(200)]
    with make_client(fake, weight_limit_1m=1200) as client:
        client.send(get(server))
        client.send(get(server, weight=20))
    assert fake.sleeps == []


def test_weight_wait_beyond_max_wait_raises(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(200, headers={"X-MBX-USED-WEIGHT-1M": "1200"})]
    with make_client(fake, weight_limit_1m=1200, max_wait_s=10.0) as client:
        client.send(get(server))
        with pytest.raises(RateLimited) as caught:
            client.send(get(server))
    assert caught.value.retry_after == 30.0 and fake.sleeps == [] and len(server.seen) == 1


def test_connection_refused_is_retried_then_connection_failed(fake: FakeTime) -> None:
    events = Recorder()
    url = f"http://127.0.0.1:{closed_port()}/api"
    with make_client(fake, events, retries=2) as client, pytest.raises(ConnectionFailed) as caught:
        client.send(HttpRequest("GET", url))
    assert caught.value.url == url
    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert len(fake.sleeps) == 2 and events.kinds() == ["retry", "retry"]


def test_read_timeout_is_mapped(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(hang=True)]
    with make_client(fake, retries=0, timeout_s=0.2) as client, pytest.raises(HttpError) as caught:
        client.send(get(server))
    assert caught.value.status is None and "timed out" in str(caught.value)
    assert isinstance(caught.value.__cause__, requests.Timeout)


def test_timeout_is_retried(server: ScriptedServer, fake: FakeTime) -> None:
    server.script = [Reply(hang=True), Reply(200, "late but fine")]
    with make_client(fake, retries=1, timeout_s=0.2) as client:
        assert client.send(get(server)).text == "late but fine"
    assert len(fake.sleeps) == 1


def test_borrowed_session_is_not_closed(server: ScriptedServer, fake: FakeTime) -> None:
    with requests.Session() as session:
        with make_client(fake, session=session) as client:
            client.send(get(server))
        assert session.get(server.url, timeout=5).status_code == 200  # still usable


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout_s": 0},
        {"retries": -1},
        {"backoff_base_s": 0},
        {"backoff_base_s": 5.0, "backoff_cap_s": 1.0},
        {"weight_limit_1m": 0},
        {"max_wait_s": -1.0},
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        HttpClient(**kwargs)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
        (email.utils.formatdate(WALL_START + 90, usegmt=True), 90.0),
        (email.utils.formatdate(WALL_START - 90, usegmt=True), 0.0),  # already past
        ("Wed, 21 Oct 2015 07:28:00 -0000", 0.0),  # naive date is GMT
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, WALL_START) == expected
