"""The REST server: ``GET /snapshot`` (the followed book as exact text, 503 while it is not
proven, the book of a stopped recorder, the latest book frame of a stream without diffs),
``GET /health``, and JSON errors with proper statuses."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from tests.serve.conftest import (
    FS,
    SYMBOL,
    HttpAnswer,
    book_frames,
    cut_before_stop,
    feed,
    frame_at,
    frame_levels,
    http_get,
    only_day,
    run,
    serving,
    ws_url,
)

REST_LEVELS = 5


def snapshot_path(exchange: str, **params: str) -> str:
    return "/snapshot?" + urlencode({"exchange": exchange, "symbol": SYMBOL[exchange], **params})


def assert_json(answer: HttpAnswer, status: int) -> Any:
    assert answer.status == status, (answer.status, answer.body)
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.body)
    return answer.json


def rest_get(data: Path, *targets: str, **hub: Any) -> list[HttpAnswer]:
    """GET each target from a fresh REST server on ``data``."""

    async def main() -> list[HttpAnswer]:
        async with serving(data, **hub) as servers:
            assert servers.rest is not None
            return [await http_get(servers.rest.port, t) for t in targets]

    return run(main())


# -- /snapshot of a followed book ------------------------------------------------------------------
@pytest.mark.parametrize("exchange", ["kraken", "bitfinex"])
def test_snapshot_levels_are_the_recorded_book_as_exact_text(
    copy_stream: Callable[..., Path], exchange: str
) -> None:
    """A recorder still writing (its live file cut before its shutdown rows): /snapshot serves the
    followed book, the same as the relay's snapshot and the recorder's book frame."""
    data = copy_stream(exchange)
    seq = cut_before_stop(data, exchange)
    day = only_day(data / exchange / FS[exchange])

    async def main() -> tuple[HttpAnswer, HttpAnswer, dict[str, Any]]:
        async with serving(data) as servers, feed(ws_url(servers, exchange)) as f:
            assert servers.rest is not None
            top = await http_get(servers.rest.port, snapshot_path(exchange, levels=str(REST_LEVELS)))
            full = await http_get(servers.rest.port, snapshot_path(exchange))
            snap = await f.wait_for(lambda m: m["type"] == "snapshot")
        return top, full, snap

    top, full, snap = run(main())
    view = assert_json(top, 200)
    assert view["state"] == "SYNCED" and view["source"] == "live" and view["stopped"] is False
    assert view["exchange"] == exchange and view["symbol"] == SYMBOL[exchange]
    assert view["recv_seq"] == seq and view["ts_ms"] == view["recv_time_ns"] // 1_000_000
    assert len(view["bids"]) == len(view["asks"]) == REST_LEVELS
    frame_seq, (bids, asks) = frame_at(book_frames(day), view["recv_seq"])
    assert view["bids"] == bids[:REST_LEVELS] and view["asks"] == asks[:REST_LEVELS]
    # Without levels: the whole followed book; its top is the recorder's frame, the relay's book.
    whole = assert_json(full, 200)
    n = frame_levels(day)
    assert len(whole["bids"]) >= n and whole["bids"][:n] == bids and whole["asks"][:n] == asks
    relay = snap["data"]
    assert relay["recv_seq"] == whole["recv_seq"]
    assert (relay["bids"], relay["asks"]) == (whole["bids"], whole["asks"])
    if exchange == "kraken":
        assert whole["precisions"] == [1, 8] and whole["verified_seq"] == frame_seq


@pytest.mark.parametrize("cut_at", ["before_snapshot", "resyncing"])
def test_snapshot_is_503_with_the_state_while_the_book_is_not_proven(
    copy_stream: Callable[..., Path], cut_at: str
) -> None:
    data = copy_stream("kraken")
    seq = cut_before_stop(data, "kraken")
    path = data / "kraken" / FS["kraken"] / "live" / "live_depth_diffs.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    if cut_at == "before_snapshot":
        # The recorder has just started: subscribed, no book yet.
        first = next(i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line)
        path.write_bytes(b"".join(lines[:first]))
        want = {"SNAPSHOT", "CONNECTING"}
    else:
        # A diff whose Kraken checksum is not the book's: the recorder's engine (and the
        # follower) drop the book and resubscribe.
        last = orjson.loads(next(x for x in reversed(lines) if b'"kind":"diff"' in x))
        last.update(recv_seq=seq + 1, checksum=(last["checksum"] + 1) % (1 << 32))
        last["recv_time_ns"] += 1_000_000
        event = orjson.loads(next(x for x in lines if b'"kind":"event"' in x))
        event.update(recv_seq=seq + 1, event_id=1000, event="checksum_mismatch", state="", tag="")
        event.update(reason="venue checksum differs from local book", details={})
        with open(path, "ab") as out:
            out.write(orjson.dumps(last) + b"\n" + orjson.dumps(event) + b"\n")
        want = {"RESYNCING"}

    (answer,) = rest_get(data, snapshot_path("kraken", levels="3"))
    body = assert_json(answer, 503)
    assert body["state"] in want, body
    assert "not proven" in body["error"] and answer.headers["retry-after"] == "1"
    assert set(body) == {"error", "state", "recv_seq"}
    if cut_at == "resyncing":
        assert body["recv_seq"] == seq + 1


@pytest.mark.parametrize(
    ("exchange", "live"),
    [("kraken", True), ("bitfinex", True), ("binance", False), ("kraken", False), ("bitfinex", False)],
)
def test_snapshot_of_a_stopped_recorder_is_its_last_book_marked_stopped(
    copy_stream: Callable[..., Path], exchange: str, live: bool
) -> None:
    """The recorder stopped (ledger ends STOPPED / run_stop): the book is not followed any more,
    but REST keeps serving the book it had when it stopped, with state STOPPED. (A day source
    holds the last ledger rows up to hold_s for diffs that might still come: a short one here.)"""
    data = copy_stream(exchange, live=live)
    root = data / exchange / FS[exchange]
    day = only_day(root)

    async def main() -> HttpAnswer:
        async with serving(data, hold_s=0.2) as servers:
            assert servers.rest is not None
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                answer = await http_get(servers.rest.port, snapshot_path(exchange, levels=str(REST_LEVELS)))
                if answer.json.get("state") == "STOPPED" or asyncio.get_running_loop().time() > deadline:
                    return answer
                await asyncio.sleep(0.05)

    view = assert_json(run(main()), 200)
    assert view["state"] == "STOPPED" and view["stopped"] is True
    assert view["source"] == ("live" if live else "day")
    frames = book_frames(day)
    last = max(frames)
    assert view["recv_seq"] >= last
    assert (view["bids"], view["asks"]) == (frames[last][0][:REST_LEVELS], frames[last][1][:REST_LEVELS])
    assert len(view["bids"]) == REST_LEVELS


def test_snapshot_of_a_stopped_day_is_stopped_from_the_first_request(
    copy_stream: Callable[..., Path],
) -> None:
    """Hubs stop when idle (idle_s), so a client polling a day-files-only stream every few minutes
    always meets a fresh hub: its first answer must already say STOPPED."""
    data = copy_stream("kraken", live=False)
    (answer,) = rest_get(data, snapshot_path("kraken", levels="1"))
    view = assert_json(answer, 200)
    assert view["state"] == "STOPPED", view


# -- a stream recorded without diffs ---------------------------------------------------------------
@pytest.mark.parametrize("live", [True, False], ids=["live", "day"])
def test_snapshot_without_diffs_serves_the_latest_book_frame(
    no_diffs_copy: Callable[..., Path], live: bool
) -> None:
    data = no_diffs_copy(live=live)
    day = only_day(data / "binance" / FS["binance"])
    frames = book_frames(day)
    last = max(frames)
    top, whole = rest_get(data, snapshot_path("binance", levels="3"), snapshot_path("binance"))
    view = assert_json(top, 200)
    assert view["source"] == "book_frame" and view["state"] == "SYNCED"
    assert view["exchange"] == "binance" and view["symbol"] == "BTCUSDT"
    assert view["recv_seq"] == last
    assert (view["bids"], view["asks"]) == (frames[last][0][:3], frames[last][1][:3])
    assert view["ts_ms"] == view["recv_time_ns"] // 1_000_000
    full = assert_json(whole, 200)
    assert (full["bids"], full["asks"]) == frames[last] and len(full["bids"]) == frame_levels(day)


def test_snapshot_without_diffs_follows_new_book_frames(no_diffs_copy: Callable[..., Path]) -> None:
    """The recorder flushes book frames as it goes: each /snapshot serves the newest one."""
    data = no_diffs_copy(live=True)
    day = only_day(data / "binance" / FS["binance"])
    (path,) = day.glob("orderbook_ws_depth_*.csv.gz")
    frames = book_frames(day)
    last = max(frames)
    raw = next(
        x for x in gzip.decompress(path.read_bytes()).splitlines() if x.startswith(f"{last},".encode())
    )
    fields = raw.split(b",")
    fields[0] = str(last + 7).encode()
    fields[5] = b"59990.00000000"  # a new best bid
    newer = b",".join(fields)

    async def main() -> tuple[HttpAnswer, HttpAnswer]:
        async with serving(data) as servers:
            assert servers.rest is not None
            before = await http_get(servers.rest.port, snapshot_path("binance", levels="1"))
            with open(path, "ab") as out:
                out.write(gzip.compress(newer + b"\n"))  # the recorder's next flush: one member
            after = await http_get(servers.rest.port, snapshot_path("binance", levels="1"))
        return before, after

    before, after = run(main())
    assert assert_json(before, 200)["recv_seq"] == last
    view = assert_json(after, 200)
    assert view["recv_seq"] == last + 7 and view["bids"] == [["59990.00000000", frames[last][0][0][1]]]


# -- /health ---------------------------------------------------------------------------------------
def test_health_reports_servers_and_streams(copy_stream: Callable[..., Path]) -> None:
    data = copy_stream("kraken")
    seq = cut_before_stop(data, "kraken")

    async def main() -> tuple[HttpAnswer, HttpAnswer, HttpAnswer, HttpAnswer]:
        async with serving(data) as servers:
            assert servers.rest is not None and servers.relay is not None
            empty = await http_get(servers.rest.port, "/health")
            await http_get(servers.rest.port, snapshot_path("kraken"))
            async with feed(ws_url(servers, "kraken")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot")
                rest = await http_get(servers.rest.port, "/health?verbose=1")
                relay = await http_get(servers.relay.port, "/health")
            relay_after = await http_get(servers.relay.port, "/health")
        return empty, rest, relay, relay_after

    empty, rest, relay, relay_after = run(main())
    body = assert_json(empty, 200)
    assert body["ok"] is True and body["server"] == "rest" and body["streams"] == []
    assert body["requests"] == 1 and body["uptime_s"] >= 0
    body = assert_json(rest, 200)
    assert body["requests"] == 3
    (stream,) = body["streams"]
    counts = {k: stream.pop(k) for k in ("rows", "messages")}
    assert all(isinstance(v, int) and v >= 0 for v in counts.values()), counts
    assert stream == {
        "exchange": "kraken",
        "symbol": "BTC/USD",
        "source": "live",
        "state": "SYNCED",
        "recv_seq": seq,
        "clients": 1,
        "dropped_clients": 0,
        "error": None,
    }
    body = assert_json(relay, 200)
    assert body["ok"] is True and body["server"] == "relay" and body["connections"] == 1
    assert body["max_connections"] == 2000 and body["refused"] == 0
    (relay_stream,) = body["streams"]
    assert {k: v for k, v in relay_stream.items() if k not in counts} == stream
    assert assert_json(relay_after, 200)["connections"] == 0


# -- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "status", "says"),
    [
        ("/", 404, "unknown path"),
        ("/snapshots", 404, "unknown path"),
        ("/ws?exchange=kraken&symbol=BTC/USD", 404, "unknown path"),
        ("/snapshot", 400, "exchange is required"),
        ("/snapshot?exchange=kraken", 400, "symbol is required"),
        ("/snapshot?exchange=coinbase&symbol=BTCUSD", 400, "unknown exchange"),
        ("/snapshot?exchange=kraken&symbol=ETHUSD", 404, "no recorded data"),
        ("/snapshot?exchange=binance&symbol=BTCUSDT", 404, "no recorded data"),
        ("/snapshot?exchange=kraken&symbol=BTC/USD&levels=0", 400, "levels"),
        ("/snapshot?exchange=kraken&symbol=BTC/USD&levels=abc", 400, "levels"),
        ("/snapshot?exchange=kraken&symbol=BTC/USD&levels=5001", 400, "levels"),
        ("/snapshot?exchange=kraken&symbol=../../etc", 400, "not a symbol"),
    ],
)
def test_rest_errors_are_json_with_a_proper_status(
    copy_stream: Callable[..., Path], target: str, status: int, says: str
) -> None:
    data = copy_stream("kraken")
    (answer,) = rest_get(data, target)
    body = assert_json(answer, status)
    assert set(body) == {"error"} and says in body["error"], body


def test_relay_http_answers_are_json(copy_stream: Callable[..., Path]) -> None:
    data = copy_stream("kraken")

    async def main() -> list[HttpAnswer]:
        async with serving(data) as servers:
            assert servers.relay is not None
            port = servers.relay.port
            return [
                await http_get(port, "/nope"),
                await http_get(port, "/ws?exchange=kraken&symbol=BTC/USD"),
                await http_get(port, "/ws?exchange=kraken&symbol=BTC/USD&from=yesterday"),
                await http_get(port, "/ws?exchange=kraken"),
            ]

    nope, plain, bad_from, no_symbol = run(main())
    assert "unknown path" in assert_json(nope, 404)["error"]
    assert "WebSocket" in assert_json(plain, 426)["error"]
    assert "from must be" in assert_json(bad_from, 400)["error"]
    assert "symbol is required" in assert_json(no_symbol, 400)["error"]


def test_live_only_rest_has_no_stream_without_live_files(copy_stream: Callable[..., Path]) -> None:
    data = copy_stream("kraken", live=False)
    (answer,) = rest_get(data, snapshot_path("kraken"), live_only=True)
    body = assert_json(answer, 404)
    assert "live" in body["error"]


def test_snapshot_moves_with_the_live_file(copy_stream: Callable[..., Path]) -> None:
    """/snapshot follows the live file as the recorder appends to it: the next diff moves the
    served book to the recorder's next book frame."""
    data = copy_stream("kraken")
    cut_before_stop(data, "kraken")
    root = data / "kraken" / FS["kraken"]
    path = root / "live" / "live_depth_diffs.ndjson"
    lines = path.read_bytes().splitlines(keepends=True)
    diffs = [i for i, line in enumerate(lines) if b'"kind":"diff"' in line]
    cut, nxt = diffs[20], diffs[21]
    path.write_bytes(b"".join(lines[: cut + 1]))
    seq, nxt_seq = (orjson.loads(lines[i])["recv_seq"] for i in (cut, nxt))
    frames = book_frames(only_day(root))

    async def main() -> tuple[HttpAnswer, HttpAnswer]:
        async with serving(data) as servers:
            assert servers.rest is not None
            before = await http_get(servers.rest.port, snapshot_path("kraken", levels="10"))
            with open(path, "ab") as out:
                out.write(b"".join(lines[cut + 1 : nxt + 1]))
            await asyncio.sleep(0.2)
            after = await http_get(servers.rest.port, snapshot_path("kraken", levels="10"))
        return before, after

    before, after = run(main())
    first = assert_json(before, 200)
    assert first["recv_seq"] == seq
    assert (first["bids"], first["asks"]) == (frames[seq][0][:10], frames[seq][1][:10])
    second = assert_json(after, 200)
    assert second["recv_seq"] == nxt_seq and second["state"] == "SYNCED"
    assert (second["bids"], second["asks"]) == (frames[nxt_seq][0][:10], frames[nxt_seq][1][:10])
    assert (first["bids"], first["asks"]) != (second["bids"], second["asks"]) or seq != nxt_seq
