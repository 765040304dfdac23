"""The relay's protocol seen by a plain WebSocket client: every message type, ``from=tail`` and
``from=start`` against a recorder writing on the simulator, live-file rotation, day rollover,
the day-files fallback, streams without diffs, WS_RELAY_LIVE_ONLY and slow clients.

Each test compares what the client received with what the recorder wrote (live files, day
files), row by row: nothing lost, nothing repeated, the recorded bytes untouched.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from mmdata.record import TradingWindow
from mmdata.serve.client import RelayBook
from tests.serve.conftest import (
    ENVELOPE,
    FS,
    SYMBOL,
    book_frames,
    cut_before_stop,
    feed,
    frame_at,
    frame_levels,
    http_get,
    is_event,
    is_status,
    ledger_rows,
    live_files,
    live_lines,
    live_raw,
    ndjson_gz,
    only_day,
    recording,
    run,
    serving,
    statuses,
    until,
    ws_url,
)

BOOK_KINDS = ("diff", "checksum")


def data_bytes(raw: bytes) -> bytes:
    """The ``data`` of a relay message as sent (a recorded row is spliced in verbatim)."""
    cut = raw.index(b',"data":')
    return raw[cut + len(b',"data":') : -1]


def check_envelopes(messages: list[dict[str, Any]], exchange: str) -> None:
    for m in messages:
        assert set(m) == ENVELOPE, m
        assert m["exchange"] == exchange and m["symbol"] == SYMBOL[exchange], m
        assert m["type"] in ("status", "snapshot", "diff", "trade", "event"), m
        assert isinstance(m["ts_ms"], int) and isinstance(m["data"], dict), m
        if m["type"] in ("diff", "trade", "event") or m["data"].get("kind") == "snapshot":
            assert m["ts_ms"] == m["data"]["recv_time_ns"] // 1_000_000, m


def row_messages(feed_raw: list[bytes], messages: list[dict[str, Any]]) -> list[bytes]:
    """The recorded rows carried by diff / trade / event / recorded-snapshot messages, in order."""
    out = []
    for raw, m in zip(feed_raw, messages, strict=True):
        if m["type"] in ("diff", "trade", "event") or (
            m["type"] == "snapshot" and m["data"].get("source") != "follower"
        ):
            out.append(data_bytes(raw))
    return out


def assert_suffix(received: list[bytes], recorded: list[bytes], after_seq: int) -> None:
    """``received`` is exactly the recorded rows from some point on, that point not later than the
    first row after ``after_seq`` (no row lost, repeated or reordered)."""
    assert received, "no row received"
    start = recorded.index(received[0])
    assert received == recorded[start : start + len(received)]
    assert start + len(received) == len(recorded), "the last recorded rows never came"
    before = [orjson.loads(line)["recv_seq"] for line in recorded[:start]]
    assert all(seq <= after_seq for seq in before), "rows after the snapshot were skipped"


def diff_seqs(lines: list[bytes]) -> list[int]:
    out = []
    for line in lines:
        rec = orjson.loads(line)
        if rec.get("kind", "diff") in BOOK_KINDS:
            out.append(rec["recv_seq"])
    return out


# -- 1. every message type ---------------------------------------------------------------------------
def test_every_message_type_from_tail_matches_the_recorded_rows(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path]:
        async with recording(data, "kraken") as rec:
            await rec.live_synced()
            await rec.day_readable()
            async with serving(data) as servers, feed(ws_url(servers, "kraken")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await f.wait_for(is_event("heartbeat"), what="heartbeat event")
                await f.wait_for(lambda m: m["type"] == "trade", what="trade")
                await rec.finish()
                await f.wait_for(is_event("run_stop"), what="run_stop event")
                last_trade = orjson.loads(live_raw(rec.root, "live_trades")[-1])["recv_seq"]
                await f.wait_for(lambda m: m["type"] == "trade" and m["data"]["recv_seq"] == last_trade)
            return f, rec.root

    f, root = run(main())
    day = only_day(root)
    msgs = f.messages
    check_envelopes(msgs, "kraken")
    assert msgs[0]["type"] == "status"
    sub = msgs[0]["data"]
    assert sub["status"] == "subscribed" and sub["source"] == "live" and sub["day"] == day.name
    snap = msgs[1]
    assert snap["type"] == "snapshot", msgs[:3]
    book = snap["data"]
    assert book["state"] == "SYNCED" and book["source"] == "follower" and book["stream_source"] == "live"
    assert snap["ts_ms"] == book["recv_time_ns"] // 1_000_000
    _seq, (bids, asks) = frame_at(book_frames(day), book["recv_seq"])
    n = frame_levels(day)
    assert book["bids"][:n] == bids and book["asks"][:n] == asks  # exact text of the recorded book

    kinds = Counter(m["type"] for m in msgs)
    assert kinds["diff"] > 10 and kinds["trade"] > 0 and kinds["event"] > 0, kinds
    # diff / trade messages carry the recorded row: the live line verbatim, the day file's row.
    diffs_by_seq = {orjson.loads(x)["recv_seq"]: orjson.loads(x) for x in ndjson_gz(_diffs(day))}
    trades_by_seq = {orjson.loads(x)["recv_seq"]: orjson.loads(x) for x in ndjson_gz(_trades(day))}
    live_book = set(live_raw(root))
    live_trades = set(live_raw(root, "live_trades"))
    for raw, m in zip(f.raw, msgs, strict=True):
        if m["type"] == "diff":
            assert data_bytes(raw) in live_book
            assert m["data"] == diffs_by_seq[m["data"]["recv_seq"]]
        elif m["type"] == "trade":
            assert data_bytes(raw) in live_trades
            assert m["data"] == trades_by_seq[m["data"]["recv_seq"]]
        elif m["type"] == "event":
            assert data_bytes(raw) in live_book
    # event messages are the ledger's rows (same id, event, state, reason, recv_seq).
    ledger = {int(r["event_id"]): r for r in ledger_rows(day)}
    events = [m["data"] for m in msgs if m["type"] == "event"]
    for ev in events:
        row = ledger[ev["event_id"]]
        assert (row["event"], row["state"], row["reason"], int(row["recv_seq"])) == (
            ev["event"],
            ev["state"],
            ev["reason"],
            ev["recv_seq"],
        )
    names = [ev["event"] for ev in events]
    assert "heartbeat" in names and names[-2:] == ["state_change", "run_stop"]
    assert events[-2]["state"] == "STOPPED"
    assert statuses(msgs) == ["subscribed"]


def _diffs(day: Path) -> Path:
    return next((day / "diffs").glob("*.ndjson.gz"))


def _trades(day: Path) -> Path:
    return next((day / "trades").glob("*.ndjson.gz"))


def test_snapshot_0_sends_no_book_and_stopped_stream_says_no_book(copy_stream: Callable[..., Path]) -> None:
    data = copy_stream("bitfinex")

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with serving(data) as servers:
            async with feed(ws_url(servers, "bitfinex")) as a:
                await a.wait_for(is_status("no_book"))
            async with feed(ws_url(servers, "bitfinex", snapshot="0")) as b:
                await b.wait_for(is_status("subscribed"))
                await asyncio.sleep(0.3)
            return a.messages, b.messages

    stopped, no_snap = run(main())
    check_envelopes(stopped + no_snap, "bitfinex")
    # The recorder stopped: its book is not followed on (the REST view keeps it as STOPPED).
    assert statuses(stopped) == ["subscribed", "no_book"]
    assert stopped[1]["data"]["state"] != "SYNCED"
    assert not any(m["type"] == "snapshot" for m in stopped)
    assert [m["type"] for m in no_snap] == ["status"]


# -- 2. from=tail while the recorder writes ----------------------------------------------------------------
def test_from_tail_rows_after_the_snapshot_are_the_live_file_without_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path, list[tuple[int, list[Any], list[Any]]]]:
        async with recording(data, "binance", rate=2.0) as rec:
            await rec.live_synced()
            await rec.day_readable()
            async with serving(data) as servers, feed(ws_url(servers, "binance")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot")
                await asyncio.sleep(1.5)
                await rec.finish()
                await f.wait_for(is_event("run_stop"))
                last_trade = orjson.loads(live_raw(rec.root, "live_trades")[-1])["recv_seq"]
                await f.wait_for(lambda m: m["type"] == "trade" and m["data"]["recv_seq"] == last_trade)
            # A client book rebuilt from the messages, at each diff.
            client = RelayBook()
            books = []
            for m in f.messages:
                client.apply(m)
                if m["type"] == "diff" and client.state == "SYNCED":
                    bids, asks = client.top(20)
                    books.append((m["data"]["recv_seq"], [list(x) for x in bids], [list(x) for x in asks]))
            return f, rec.root, books

    f, root, books = run(main())
    msgs = f.messages
    check_envelopes(msgs, "binance")
    snap = next(m for m in msgs if m["type"] == "snapshot")
    after = snap["data"]["recv_seq"]
    rows = row_messages(f.raw, msgs)
    book_rows = [r for r in rows if b'"kind":"event"' in r[:200] or orjson.loads(r).get("kind") != "trade"]
    recorded = live_raw(root)
    received_book = [r for r in book_rows if r in set(recorded)]
    assert len(received_book) == sum(1 for m in msgs if m["type"] in ("diff", "event"))
    assert_suffix(received_book, recorded, after)
    seqs = diff_seqs(received_book)
    assert seqs == sorted(set(seqs)), "diff recv_seq not strictly increasing"
    assert seqs[0] > after
    assert seqs == [s for s in diff_seqs(recorded) if s > after]
    trades = [r for r in rows if r in set(live_raw(root, "live_trades"))]
    assert len(trades) == sum(1 for m in msgs if m["type"] == "trade") > 0
    assert_suffix(trades, live_raw(root, "live_trades"), after)
    # The client's book, proven by the Binance engine on every diff, is the recorder's book.
    frames = book_frames(only_day(root))
    assert len(books) >= 10
    for seq, bids, asks in books:
        assert frames[seq] == (bids, asks), seq


# -- 3. from=start --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exchange", ["binance", "kraken", "bitfinex"])
def test_from_start_of_a_finished_day_sends_every_recorded_row(
    copy_stream: Callable[..., Path], exchange: str
) -> None:
    data = copy_stream(exchange)

    async def main() -> Any:
        async with serving(data) as servers, feed(ws_url(servers, exchange, **{"from": "start"})) as f:
            await f.wait_for(is_status("replay_done"))
            await asyncio.sleep(0.2)
        return f

    f = run(main())
    msgs = f.messages
    check_envelopes(msgs, exchange)
    day = only_day(data / exchange / FS[exchange])
    assert statuses(msgs) == ["subscribed", "replay_done"]
    assert msgs[0]["data"]["source"] == "live" and msgs[-1]["data"]["status"] == "replay_done"
    body = msgs[1:-1]
    assert msgs[-1]["data"]["rows"] == len(body)
    ledger = ledger_rows(day)
    # Ledger rows, in order, as event messages; each snapshot row preceded by its levels.
    events = [m["data"] for m in body if m["type"] == "event"]
    assert [(str(e["event_id"]), e["event"], e["state"], e["reason"]) for e in events] == [
        (r["event_id"], r["event"], r["state"], r["reason"]) for r in ledger
    ]
    assert body[0]["type"] == "event" and body[0]["data"]["event"] == "run_start"
    snaps = [i for i, m in enumerate(body) if m["type"] == "snapshot"]
    assert snaps and body[snaps[0]]["data"]["tag"] == "initial"
    assert body[snaps[0] + 1]["data"]["event"] == "snapshot"
    diffs = ndjson_gz(_diffs(day))
    trades = ndjson_gz(_trades(day))
    raws = [data_bytes(r) for r, m in zip(f.raw[1:-1], body, strict=True)]
    assert [r for r, m in zip(raws, body, strict=True) if m["type"] == "diff"] == diffs
    assert [r for r, m in zip(raws, body, strict=True) if m["type"] == "trade"] == trades
    if exchange == "bitfinex":
        assert {m["data"]["kind"] for m in body if m["type"] == "diff"} == {"diff", "checksum"}
    keys = [(m["data"]["recv_seq"], 1 if m["type"] == "event" else 0) for m in body]
    assert keys == sorted(keys)


def test_from_start_while_recording_switches_to_live_without_gap_or_repeat(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path]:
        async with recording(data, "kraken", rate=2.0) as rec:
            await rec.live_synced()
            await rec.day_readable()
            await asyncio.sleep(0.5)
            async with serving(data) as servers, feed(ws_url(servers, "kraken", **{"from": "start"})) as f:
                await f.wait_for(is_status("replay_done"))
                await asyncio.sleep(1.5)
                await rec.finish()
                await f.wait_for(is_event("run_stop"))
                last_trade = orjson.loads(live_raw(rec.root, "live_trades")[-1])["recv_seq"]
                await f.wait_for(lambda m: m["type"] == "trade" and m["data"]["recv_seq"] == last_trade)
            return f, rec.root

    f, root = run(main())
    msgs = f.messages
    check_envelopes(msgs, "kraken")
    day = only_day(root)
    done = next(i for i, m in enumerate(msgs) if is_status("replay_done")(m))
    replay, live = msgs[1:done], msgs[done + 1 :]
    assert statuses(msgs) == ["subscribed", "replay_done"]
    assert replay[0]["type"] == "event" and replay[0]["data"]["event"] == "run_start"
    assert any(m["type"] == "snapshot" and m["data"]["tag"] == "initial" for m in replay)
    assert live, "nothing after replay_done"
    # Union of replay + live = the day's rows, each exactly once.
    got_diffs = [m["data"]["recv_seq"] for m in msgs if m["type"] == "diff"]
    want_diffs = [orjson.loads(x)["recv_seq"] for x in ndjson_gz(_diffs(day))]
    assert Counter(got_diffs) == Counter(want_diffs)
    assert got_diffs == sorted(got_diffs)
    got_trades = [m["data"]["recv_seq"] for m in msgs if m["type"] == "trade"]
    want_trades = [orjson.loads(x)["recv_seq"] for x in ndjson_gz(_trades(day))]
    assert Counter(got_trades) == Counter(want_trades)
    got_events = [m["data"]["event_id"] for m in msgs if m["type"] == "event"]
    want_events = [int(r["event_id"]) for r in ledger_rows(day)]
    assert Counter(got_events) == Counter(want_events)
    # Every live row after the switch is the live file's row, verbatim.
    recorded = set(live_raw(root)) | set(live_raw(root, "live_trades"))
    for raw, m in zip(f.raw[done + 1 :], live, strict=True):
        if m["type"] != "status":
            assert data_bytes(raw) in recorded, m
