"""The relay's protocol seen by a plain WebSocket client: every message type, ``from=tail`` and
``from=start`` against a recorder writing on the simulator, live-file rotation, day rollover,
the day-files fallback, streams without diffs, WS_RELAY_LIVE_ONLY and slow clients.

Each test compares what the client received with what the recorder wrote (live files, day
files), row by row: nothing lost, nothing repeated, the recorded bytes untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import socket
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
    drained,
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


def check_envelopes(messages: list[dict[str, Any]], exchange: str, symbol: str | None = None) -> None:
    for m in messages:
        assert set(m) == ENVELOPE, m
        assert m["exchange"] == exchange and m["symbol"] == (symbol or SYMBOL[exchange]), m
        assert m["type"] in ("status", "snapshot", "diff", "trade", "event"), m
        assert isinstance(m["ts_ms"], int) and isinstance(m["data"], dict), m
        if m["type"] in ("diff", "trade", "event") or m["data"].get("kind") == "snapshot":
            assert m["ts_ms"] == m["data"]["recv_time_ns"] // 1_000_000, m


def row_messages(feed_raw: list[bytes], messages: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(type, recorded row) of the diff / trade / event / recorded-snapshot messages, in order."""
    out = []
    for raw, m in zip(feed_raw, messages, strict=True):
        if m["type"] in ("diff", "trade", "event") or (
            m["type"] == "snapshot" and m["data"].get("source") != "follower"
        ):
            out.append((m["type"], data_bytes(raw)))
    return out


def assert_suffix(received: list[bytes], recorded: list[bytes], after_seq: int | None) -> None:
    """``received`` is exactly the recorded rows from some point on (no row lost, repeated or
    reordered), that point not later than the first row after ``after_seq`` (when given)."""
    assert received, "no row received"
    start = recorded.index(received[0])
    assert received == recorded[start : start + len(received)]
    assert start + len(received) == len(recorded), "the last recorded rows never came"
    if after_seq is None:
        return
    skipped = [line for line in recorded[:start] if orjson.loads(line)["recv_seq"] > after_seq]
    assert not skipped, f"rows after the snapshot (recv_seq {after_seq}) were skipped: {skipped}"


def next_day(label: str) -> str:
    """The ``YYYYMMDD`` label of the day after ``label``."""
    return (datetime.strptime(label, "%Y%m%d") + timedelta(days=1)).strftime("%Y%m%d")


def diff_seqs(lines: list[bytes]) -> list[int]:
    out = []
    for line in lines:
        rec = orjson.loads(line)
        if rec.get("kind", "diff") in BOOK_KINDS:
            out.append(rec["recv_seq"])
    return out


# -- 1. every message type -------------------------------------------------------------------------
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
                await drained(f, rec.root)
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


# -- 2. from=tail while the recorder writes --------------------------------------------------------
def test_from_tail_rows_after_the_snapshot_are_the_live_file_without_gap(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path, list[tuple[int, list[Any], list[Any]]]]:
        async with recording(data, "bitfinex", rate=2.0) as rec:
            await rec.live_synced()
            await rec.day_readable()
            async with serving(data) as servers, feed(ws_url(servers, "bitfinex")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await asyncio.sleep(1.5)
                await rec.finish()
                await drained(f, rec.root)
            # A client book rebuilt from the messages (Bitfinex checksums prove it), at each diff.
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
    check_envelopes(msgs, "bitfinex")
    assert statuses(msgs) == ["subscribed"]
    snap = msgs[1]
    assert snap["type"] == "snapshot" and snap["data"]["state"] == "SYNCED"
    after = snap["data"]["recv_seq"]
    rows = row_messages(f.raw, msgs)
    recorded = live_raw(root)
    recorded_trades = live_raw(root, "live_trades")
    book_rows = [row for kind, row in rows if kind != "trade"]
    assert_suffix(book_rows, recorded, after)
    seqs = diff_seqs(book_rows)
    assert seqs == sorted(set(seqs)), "diff recv_seq not strictly increasing"
    assert seqs and seqs[0] > after
    assert seqs == [s for s in diff_seqs(recorded) if s > after]
    trades = [row for kind, row in rows if kind == "trade"]
    assert trades
    # Trades are not part of the book: the ones the hub read before the client joined are not
    # resent, even with a recv_seq after the book's (see the report); from then on, every one.
    assert_suffix(trades, recorded_trades, None)
    # The client's book, proven by the venue's checksums, is the recorder's book at every diff.
    frames = book_frames(only_day(root))
    assert len(books) >= 10
    for seq, bids, asks in books:
        assert frame_at(frames, seq)[1] == (bids, asks), seq


# -- 3. from=start ---------------------------------------------------------------------------------
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
            async with serving(data) as servers, feed(ws_url(servers, "kraken")) as warm:
                # A hub already followed the stream for longer than the day files' flush interval
                # (see test_from_start_as_first_client_gets_rows_not_yet_in_the_day_files).
                await warm.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await asyncio.sleep(0.6)
                async with feed(ws_url(servers, "kraken", **{"from": "start"})) as f:
                    await f.wait_for(is_status("replay_done"))
                    await asyncio.sleep(1.5)
                    await rec.finish()
                    await drained(f, rec.root)
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


def _trim_day(day: Path, upto: int) -> None:
    """Rewrite a day's ledger, diffs and trades files with their rows up to ``upto`` only (one
    gzip member each): what a running recorder has flushed so far."""
    for path in (_diffs(day), _trades(day)):
        lines = [x for x in ndjson_gz(path) if orjson.loads(x)["recv_seq"] <= upto]
        path.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines)))
    (events,) = day.glob("events_*.csv.gz")
    text = gzip.decompress(events.read_bytes()).decode().splitlines(keepends=True)
    keep = [text[0]] + [line for line in text[1:] if int(line.split(",")[3]) <= upto]
    events.write_bytes(gzip.compress("".join(keep).encode()))


def test_from_start_as_first_client_gets_rows_not_yet_in_the_day_files(
    copy_stream: Callable[..., Path],
) -> None:
    """The recorder flushes its day files every BUFFER_FLUSH_INTERVAL_SEC; the live file has
    every row at once. A ``from=start`` client that is the stream's first (the hub starts for
    it) must still get the rows written between the day files' end and the hub's start."""
    data = copy_stream("kraken")
    root = data / "kraken" / FS["kraken"]
    last = cut_before_stop(data, "kraken")
    day = only_day(root)
    _trim_day(day, last - 15)  # the last ~0.7 s of rows not flushed yet

    async def main() -> Any:
        async with serving(data) as servers, feed(ws_url(servers, "kraken", **{"from": "start"})) as f:
            await f.wait_for(is_status("replay_done"))
            await asyncio.sleep(0.5)
        return f

    f = run(main())
    got = [m["data"]["recv_seq"] for m in f.messages if m["type"] == "diff"]
    want = [r["recv_seq"] for r in live_lines(root) if r["kind"] in BOOK_KINDS]
    assert Counter(got) == Counter(want), sorted(set(want) - set(got))


def test_from_start_while_the_new_days_ledger_is_not_flushed_yet(copy_stream: Callable[..., Path]) -> None:
    """Right after a recorder opens a day (start-up, or a new trading day), the day's ledger
    file exists but holds no complete gzip member for up to BUFFER_FLUSH_INTERVAL_SEC. A
    ``from=start`` client connecting then must not get an internal error (close 1011)."""
    data = copy_stream("kraken")
    root = data / "kraken" / FS["kraken"]
    cut_before_stop(data, "kraken")
    old = only_day(root)
    new = root / next_day(old.name)
    (new / "diffs").mkdir(parents=True)
    (new / f"events_{FS['kraken']}_{new.name}.csv.gz").write_bytes(b"")  # opened, nothing flushed

    async def main() -> Any:
        async with serving(data) as servers, feed(ws_url(servers, "kraken", **{"from": "start"})) as f:
            with contextlib.suppress(AssertionError):
                await f.wait_for(is_status("replay_done"), timeout=3)
            await asyncio.sleep(0.3)
        return f

    f = run(main())
    assert f.close_code != 1011, statuses(f.messages)
    assert "replay_done" in statuses(f.messages)


@pytest.mark.parametrize(
    "bridge",
    [
        "overlaps",
        "starts_after",
    ],
)
def test_from_tail_binance_when_the_bridging_diff_came_before_the_snapshot(
    copy_stream: Callable[..., Path], bridge: str
) -> None:
    """Binance: the recorder buffers diffs until its REST snapshot arrives; the diff that
    bridges the snapshot's lastUpdateId may be one of them, i.e. *before* the snapshot row in
    the live file (the recorder's engine applies it from its buffer and is SYNCED at once).
    A relay starting on that file must still follow a SYNCED book, whether the bridging diff
    overlaps lastUpdateId (U <= lastUpdateId) or starts right after it (U = lastUpdateId + 1)."""
    data = copy_stream("binance")
    cut_before_stop(data, "binance")
    path = data / "binance" / FS["binance"] / "live" / "live_depth_diffs.ndjson"
    rows = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    s = next(i for i, r in enumerate(rows) if r.get("kind") == "snapshot")
    snap = rows[s]
    uid = snap["update_id"]
    b = next(
        i for i, r in enumerate(rows) if r.get("kind") == "diff" and r["first_id"] <= uid + 1 <= r["last_id"]
    )
    # A diff buffered before the bridging one: the recorder's engine accepted the snapshot
    # because it is not older than that first buffered diff.
    assert any(r.get("kind") == "diff" and r["first_id"] <= uid for r in rows[: min(b, s)])
    if b > s:
        # As the recorder writes it when the bridging diff came first: diff, then the snapshot
        # (engine state SYNCED right away) and its state changes, all numbered after the diff.
        seq = snap["recv_seq"]
        rows[b]["recv_seq"] = seq
        for r in rows[s:b]:
            r["recv_seq"] = seq + 1
        snap["state"] = "SYNCED"
        rows = [*rows[:s], rows[b], *rows[s:b], *rows[b + 1 :]]
        b = s
    # Levels are absolute sizes: where the bridging diff's id range starts does not change the book.
    rows[b]["first_id"] = min(rows[b]["first_id"], uid) if bridge == "overlaps" else uid + 1
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))

    async def main() -> Any:
        async with serving(data) as servers, feed(ws_url(servers, "binance")) as f:
            await f.wait_for(lambda m: m["type"] == "snapshot" or is_status("no_book")(m))
        return f

    f = run(main())
    snap = f.messages[1]
    assert snap["type"] == "snapshot", snap
    assert snap["data"]["state"] == "SYNCED"
    day = only_day(data / "binance" / FS["binance"])
    n = frame_levels(day)
    book = (snap["data"]["bids"][:n], snap["data"]["asks"][:n])
    assert book == frame_at(book_frames(day), snap["data"]["recv_seq"])[1]


# -- 4. live-file rotation -------------------------------------------------------------------------
def test_live_file_rotation_loses_and_repeats_no_row(tmp_path: Path) -> None:
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path]:
        async with recording(data, "kraken", rate=2.0, live_rotate_s=0.8) as rec:
            await rec.live_synced()
            async with serving(data) as servers, feed(ws_url(servers, "kraken")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await until(lambda: len(live_files(rec.root)) >= 4, 10, "three rotations")
                await rec.finish()
                await drained(f, rec.root)
            return f, rec.root

    f, root = run(main())
    msgs = f.messages
    check_envelopes(msgs, "kraken")
    rotated = len(live_files(root)) - 1
    codes = statuses(msgs)
    # One file_rotated per rotation seen by the client, for each of the two live files.
    assert codes.count("file_rotated") >= 4, codes
    assert set(codes) == {"subscribed", "file_rotated"}, codes
    assert sum(1 for m in msgs if is_event("live_rotated")(m)) >= 2
    # Each new file starts with the recorder's book (tag rotation): a joining relay starts there.
    restated = [m["data"] for m in msgs if m["type"] == "snapshot" and m["data"].get("tag") == "rotation"]
    assert len(restated) >= 2 and all(d["source"] == "local_book" for d in restated)
    after = msgs[1]["data"]["recv_seq"]
    rows = row_messages(f.raw, msgs)
    recorded = live_raw(root)
    assert rotated >= 3
    assert len(recorded) == len(set(recorded)), "a live row written twice"
    book_rows = [row for kind, row in rows if kind != "trade"]
    assert_suffix(book_rows, recorded, after)
    seqs = diff_seqs(book_rows)
    assert seqs == sorted(set(seqs)) and seqs == [s for s in diff_seqs(recorded) if s > after]
    trades = [row for kind, row in rows if kind == "trade"]
    assert_suffix(trades, live_raw(root, "live_trades"), None)
    # And the diffs are the day's: none missing across the rotations.
    day_diffs = [orjson.loads(x)["recv_seq"] for x in ndjson_gz(_diffs(only_day(root)))]
    assert seqs == [s for s in day_diffs if s > after]


# -- 5. day rollover -------------------------------------------------------------------------------
def _clock_near_midnight(seconds_before: float) -> tuple[Callable[[], int], Callable[[Any], None]]:
    """A recorder wall clock (real pace) that reaches Berlin midnight ``seconds_before`` after the
    recorder is ready; and its on_ready hook."""
    midnight = datetime(2026, 1, 14, 23, 0, 0, tzinfo=UTC).timestamp()  # 2026-01-15 00:00 Berlin
    real0: list[float] = []

    def wall_ns() -> int:
        elapsed = time.time() - real0[0] if real0 else 0.0
        return int((midnight - seconds_before + elapsed) * 1e9)

    return wall_ns, lambda _recorder: real0.append(time.time())


WINDOW = TradingWindow("Europe/Berlin", "00:00", "00:01", 1)  # a 1-minute overlap of two days


def test_day_rollover_of_the_day_files_source(tmp_path: Path) -> None:
    """No live/ files: the relay follows the newest day folder's .gz files, and moves to the new
    day folder when it appears (status day_rollover), without losing a row."""
    data = tmp_path / "data"
    wall_ns, on_ready = _clock_near_midnight(1.6)

    async def main() -> tuple[Any, Path]:
        async with recording(
            data, "kraken", rate=2.0, live=False, window=WINDOW, wall_ns=wall_ns, on_ready=on_ready
        ) as rec:
            await rec.day_readable()
            async with serving(data, hold_s=0.5) as servers, feed(ws_url(servers, "kraken")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await f.wait_for(is_status("day_rollover"), what="day_rollover")
                await asyncio.sleep(1.0)
                await rec.finish()
                await f.wait_for(is_event("run_stop"), what="run_stop")
                await asyncio.sleep(0.6)  # hold_s: rows waiting for the other file
            return f, rec.root

    f, root = run(main())
    msgs = f.messages
    check_envelopes(msgs, "kraken")
    days = sorted(p for p in root.iterdir() if p.name.isdigit())
    assert [d.name for d in days] == ["20260114", "20260115"]
    assert not (root / "live").exists()
    assert msgs[0]["data"]["source"] == "day" and msgs[0]["data"]["day"] == "20260114"
    snap = msgs[1]
    assert snap["type"] == "snapshot" and snap["data"]["stream_source"] == "day"
    after = snap["data"]["recv_seq"]
    codes = statuses(msgs)
    assert "day_rollover" in codes and set(codes) <= {"subscribed", "day_rollover"}, codes
    # Diffs: each recorded diff after the snapshot exactly once, in order, across both days.
    got = [m["data"]["recv_seq"] for m in msgs if m["type"] == "diff"]
    recorded = sorted({orjson.loads(x)["recv_seq"] for d in days for x in ndjson_gz(_diffs(d))})
    # Each at least once, in order (exactly once: test_day_rollover_does_not_repeat_or_lose_a_row_...).
    assert sorted(set(got)) == [s for s in recorded if s > after]
    assert got == sorted(got)
    # The rows are the day files' rows, verbatim.
    lines = {x for d in days for x in ndjson_gz(_diffs(d))}
    assert all(data_bytes(r) in lines for r, m in zip(f.raw, msgs, strict=True) if m["type"] == "diff")
    trades = [m["data"]["recv_seq"] for m in msgs if m["type"] == "trade"]
    assert trades == sorted(set(trades))
    # (Rows of the overlap sent twice: test_day_rollover_does_not_repeat_or_lose_a_row_...)
    assert [m["data"]["event"] for m in msgs if m["type"] == "event"][-1] == "run_stop"


def test_day_rollover_of_the_live_source_on_window_start(tmp_path: Path) -> None:
    """live/ spans days: the recorder's window_start row is followed by status day_rollover."""
    data = tmp_path / "data"
    wall_ns, on_ready = _clock_near_midnight(1.2)

    async def main() -> tuple[Any, Path]:
        async with recording(data, "bitfinex", window=WINDOW, wall_ns=wall_ns, on_ready=on_ready) as rec:
            await rec.live_synced()
            async with serving(data) as servers, feed(ws_url(servers, "bitfinex")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await f.wait_for(is_status("day_rollover"), what="day_rollover")
                await asyncio.sleep(0.5)
                await rec.finish()
                await drained(f, rec.root)
            return f, rec.root

    f, root = run(main())
    msgs = f.messages
    check_envelopes(msgs, "bitfinex")
    assert msgs[0]["data"]["day"] == "20260114"
    i = next(i for i, m in enumerate(msgs) if is_event("window_start")(m))
    roll = msgs[i + 1]
    assert is_status("day_rollover")(roll), roll
    assert roll["data"]["window_start"] == msgs[i]["data"]["details"]["window_start"]
    assert roll["data"]["window_start"].startswith("2026-01-14T23:00:00")
    assert statuses(msgs) == ["subscribed", "day_rollover"]
    # The live stream runs on across the day: every diff after the snapshot once, in order.
    after = msgs[1]["data"]["recv_seq"]
    got = [m["data"]["recv_seq"] for m in msgs if m["type"] == "diff"]
    assert got == [s for s in diff_seqs(live_raw(root)) if s > after]
    # The new day folder starts with the book the recorder had (a local_book initial snapshot).
    new_day = root / "20260115"
    ledger = ledger_rows(new_day)
    assert ledger[0]["event"] == "window_start"
    assert any(r["event"] == "snapshot" and r["reason"] == "local_book" for r in ledger)


def _ledger_line(event_id: int, seq: int, event: str, run_start: dict[str, str], **extra: Any) -> bytes:
    row = {**run_start, "event_id": str(event_id), "recv_seq": str(seq), "event": event, **extra}
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([row[c] for c in _LEDGER_COLUMNS])
    return out.getvalue().encode()


_LEDGER_COLUMNS = (
    "event_id",
    "recv_time_ns",
    "run_id",
    "recv_seq",
    "event",
    "tag",
    "state",
    "reason",
    "snapshot_file",
    "details",
)


@pytest.mark.parametrize(
    "held",
    [
        "diff",
        "heartbeat",
        "ledger_ahead",
    ],
)
def test_day_rollover_does_not_repeat_or_lose_a_row_of_the_overlap(
    copy_stream: Callable[..., Path], held: str
) -> None:
    """During the day overlap every row goes to both day folders. A row read from the old day
    but still held there (a diff waiting for the ledger to pass it, a ledger row waiting for the
    diffs) when the new folder appears must reach the client once; and rows the old day had not
    flushed yet (one of its files ahead of the other) must come from the new day."""
    data = copy_stream("kraken", live=False)
    root = data / "kraken" / FS["kraken"]
    old = only_day(root)
    diffs = ndjson_gz(_diffs(old))
    h = orjson.loads(diffs[30])["recv_seq"]  # the new day opens after data row h - 1
    last = orjson.loads(diffs[39])["recv_seq"]
    _trim_day(old, h - 1)
    ledger = ledger_rows(old)
    run_start = next(r for r in ledger if r["event"] == "run_start")
    base = {**run_start, "tag": "", "state": "SYNCED", "reason": "", "snapshot_file": "", "details": ""}
    eid = max(int(r["event_id"]) for r in ledger)
    events_file = next(old.glob("events_*.csv.gz"))
    new = root / next_day(old.name)

    def heartbeat(event_id: int, seq: int, n: int) -> bytes:
        return _ledger_line(event_id, seq, "heartbeat", base, details=f'{{"diffs":{n}}}')

    # The ledger has come as far as the diffs (a heartbeat after data row h - 1).
    with open(events_file, "ab") as out:
        out.write(gzip.compress(heartbeat(eid + 1, h - 1, 1)))

    async def main() -> Any:
        async with serving(data, hold_s=30.0) as servers, feed(ws_url(servers, "kraken")) as f:
            snap = await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
            assert orjson.loads(diffs[29])["recv_seq"] <= snap["data"]["recv_seq"] <= h - 1
            # The row reaches the old day (the other file not flushed past it yet) ...
            if held == "diff":
                with open(_diffs(old), "ab") as out:
                    out.write(gzip.compress(diffs[30] + b"\n"))
            elif held == "ledger_ahead":
                with open(events_file, "ab") as out:
                    out.write(gzip.compress(heartbeat(eid + 2, orjson.loads(diffs[32])["recv_seq"], 2)))
            else:
                with open(events_file, "ab") as out:
                    out.write(gzip.compress(heartbeat(eid + 2, h - 1, 2)))
            await asyncio.sleep(0.3)
            # ... and the new day, opened just before it, has it too, then the next rows.
            (new / "diffs").mkdir(parents=True)
            head = b"event_id,recv_time_ns,run_id,recv_seq,event,tag,state,reason,snapshot_file,details\n"
            opened = _ledger_line(eid + 3, h - 1, "window_start", run_start)
            beat_seq = orjson.loads(diffs[32])["recv_seq"] if held == "ledger_ahead" else h - 1
            (new / f"events_{FS['kraken']}_{new.name}.csv.gz").write_bytes(
                gzip.compress(head + opened + heartbeat(eid + 4, beat_seq, 2))
                + gzip.compress(heartbeat(eid + 5, last, 3))  # the ledger runs on past the diffs
            )
            (new / "diffs" / f"depth_diffs_{FS['kraken']}_{new.name}.ndjson.gz").write_bytes(
                gzip.compress(b"".join(x + b"\n" for x in diffs[30:40]))
            )
            await f.wait_for(is_status("day_rollover"), what="day_rollover")
            await f.wait_for(
                lambda m: m["type"] == "diff" and m["data"]["recv_seq"] == last, what="last diff"
            )
            await asyncio.sleep(0.3)
        return f

    f = run(main())
    assert "day_rollover" in statuses(f.messages)
    got = [m["data"]["recv_seq"] for m in f.messages if m["type"] == "diff"]
    assert got == [orjson.loads(x)["recv_seq"] for x in diffs[30:40]]
    beats = Counter(m["data"]["details"]["diffs"] for m in f.messages if is_event("heartbeat")(m))
    assert beats[2] == 1 and beats[1] <= 1, beats


# -- 6. a stream recorded without diffs ------------------------------------------------------------
@pytest.mark.parametrize("live", [True, False], ids=["live", "day"])
@pytest.mark.parametrize("origin", ["tail", "start"])
def test_stream_without_diffs_says_diffs_missing(
    no_diffs_copy: Callable[..., Path], live: bool, origin: str
) -> None:
    data = no_diffs_copy(live=live)
    root = data / "binance" / FS["binance"]
    day = only_day(root)
    assert not (day / "diffs").exists()
    if live:
        assert not [r for r in live_lines(root) if r["kind"] in BOOK_KINDS]  # no diffs in live/ either

    async def main() -> Any:
        async with serving(data) as servers, feed(ws_url(servers, "binance", **{"from": origin})) as f:
            await f.wait_for(is_status("diffs_missing"))
            await asyncio.sleep(0.3)
        return f

    f = run(main())
    msgs = f.messages
    check_envelopes(msgs, "binance")
    codes = statuses(msgs)
    assert codes[:2] == ["subscribed", "diffs_missing"], codes
    assert msgs[0]["data"]["source"] == ("live" if live else "day")
    assert "STORE_DEPTH_DIFFS" in msgs[1]["data"]["message"]
    assert not any(m["type"] == "diff" for m in msgs)
    if origin == "tail":
        assert codes == ["subscribed", "diffs_missing", "no_book"]
    else:
        assert codes == ["subscribed", "diffs_missing", "replay_done"]
        assert any(m["type"] == "trade" for m in msgs) and any(m["type"] == "snapshot" for m in msgs)


# -- 7. WS_RELAY_LIVE_ONLY -------------------------------------------------------------------------
@pytest.mark.parametrize("origin", ["tail", "start"])
def test_live_only_without_live_files_is_unavailable_1013(
    copy_stream: Callable[..., Path], origin: str
) -> None:
    data = copy_stream("kraken", live=False)

    async def main() -> Any:
        async with (
            serving(data, live_only=True) as servers,
            feed(ws_url(servers, "kraken", **{"from": origin})) as f,
        ):
            code = await f.wait_closed()
            health = await http_get(servers.relay.port, "/health")
        return f, code, health

    f, code, health = run(main())
    assert code == 1013
    assert [m["type"] for m in f.messages] == ["status"]
    # No source, so no venue spelling of the symbol known: the folder's (see the report).
    check_envelopes(f.messages, "kraken", FS["kraken"])
    status = f.messages[0]["data"]
    assert status["status"] == "unavailable" and "live" in status["message"]
    (stream,) = health.json["streams"]
    assert stream["source"] == "" and "live" in stream["error"]


def test_live_only_serves_a_stream_with_live_files(copy_stream: Callable[..., Path]) -> None:
    data = copy_stream("kraken")
    cut_before_stop(data, "kraken")

    async def main() -> Any:
        async with serving(data, live_only=True) as servers, feed(ws_url(servers, "kraken")) as f:
            await f.wait_for(lambda m: m["type"] == "snapshot")
        return f

    f = run(main())
    assert f.messages[0]["data"]["source"] == "live" and f.messages[1]["data"]["state"] == "SYNCED"


# -- 8. the day-files fallback ---------------------------------------------------------------------
def test_day_files_fallback_follows_the_gz_files_with_a_proven_book(tmp_path: Path) -> None:
    """No live/ (LIVE_STREAM_ENABLED=false): snapshot and diffs come from tailing the day's .gz
    files as the recorder flushes them; the book equals the recorder's book frames."""
    data = tmp_path / "data"

    async def main() -> tuple[Any, Path, list[tuple[int, Any]]]:
        async with recording(data, "binance", rate=2.0, live=False) as rec:
            await rec.day_readable()
            await asyncio.sleep(0.3)
            async with serving(data, hold_s=0.5) as servers, feed(ws_url(servers, "binance")) as f:
                await f.wait_for(lambda m: m["type"] == "snapshot", what="snapshot")
                await f.wait_for(lambda m: m["type"] == "diff", what="a diff")
                await asyncio.sleep(1.5)
                await rec.finish()
                await f.wait_for(is_event("run_stop"), what="run_stop")
                await asyncio.sleep(0.6)
            client = RelayBook()
            books = []
            for m in f.messages:
                client.apply(m)
                if m["type"] == "diff" and client.state == "SYNCED":
                    bids, asks = client.top(20)
                    books.append((m["data"]["recv_seq"], ([list(x) for x in bids], [list(x) for x in asks])))
            return f, rec.root, books

    f, root, books = run(main())
    msgs = f.messages
    check_envelopes(msgs, "binance")
    assert not (root / "live").exists()
    day = only_day(root)
    assert msgs[0]["data"]["source"] == "day" and msgs[0]["data"]["day"] == day.name
    snap = msgs[1]
    assert snap["type"] == "snapshot" and snap["data"]["state"] == "SYNCED", snap
    assert snap["data"]["stream_source"] == "day"
    frames = book_frames(day)
    n = frame_levels(day)
    # The follower's book (Binance: update ids proven continuous) is the recorder's book frame.
    seq = snap["data"]["recv_seq"]
    assert (snap["data"]["bids"][:n], snap["data"]["asks"][:n]) == frame_at(frames, seq)[1]
    assert seq in frames
    # Every diff after it, once, in order; each the diffs/ row verbatim.
    lines = ndjson_gz(_diffs(day))
    got = [data_bytes(r) for r, m in zip(f.raw, msgs, strict=True) if m["type"] == "diff"]
    assert got == [x for x in lines if orjson.loads(x)["recv_seq"] > seq]
    # A client rebuilding the book from the messages has the recorder's book at every diff.
    assert len(books) >= 10
    for s, book in books:
        assert frames[s] == book, s
    trades = [data_bytes(r) for r, m in zip(f.raw, msgs, strict=True) if m["type"] == "trade"]
    recorded_trades = ndjson_gz(_trades(day))
    assert trades and trades == recorded_trades[recorded_trades.index(trades[0]) :]


# -- 9. slow clients -------------------------------------------------------------------------------
def _trade_rows(template: bytes, first_seq: int, n: int) -> bytes:
    rec = orjson.loads(template)
    out = []
    for i in range(n):
        rec["recv_seq"] = first_seq + i
        rec["recv_time_ns"] += 1000
        rec["trade_id"] = int(rec["trade_id"]) + 1
        out.append(orjson.dumps(rec) + b"\n")
    return b"".join(out)


def test_a_slow_client_is_dropped_while_a_reading_client_gets_everything(
    copy_stream: Callable[..., Path],
) -> None:
    data = copy_stream("kraken")
    cut_before_stop(data, "kraken")
    root = data / "kraken" / FS["kraken"]
    trades_file = root / "live" / "live_trades.ndjson"
    template = live_raw(root, "live_trades")[-1]
    first = int(orjson.loads(template)["recv_seq"]) + 1000
    chunk = 100  # rows per append (~35 kB)

    async def main() -> tuple[Any, Any, int, Any]:
        async with serving(data, slow_bytes=64 << 10, drop_bytes=512 << 10) as servers:
            assert servers.relay is not None
            url = ws_url(servers, "kraken")
            # The slow client: a tiny receive buffer, and it stops reading after the snapshot.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", servers.relay.port))
            async with feed(url) as fast, feed(url, sock=sock, max_queue=4) as slow:
                await fast.wait_for(lambda m: m["type"] == "snapshot")
                await slow.wait_for(lambda m: m["type"] == "snapshot")
                slow.ws.transport.pause_reading()  # stop reading: the socket's buffers fill up
                written = 0

                def dropped() -> int:
                    return sum(h.dropped for h in servers.hubs.hubs.values())

                while not dropped():
                    assert written < 60_000, "the slow client was never dropped"
                    with open(trades_file, "ab") as out:
                        out.write(_trade_rows(template, first + written, chunk))
                    written += chunk
                    await asyncio.sleep(0.02)
                health = (await http_get(servers.relay.port, "/health")).json
                # More rows after the drop still reach the reading client.
                with open(trades_file, "ab") as out:
                    out.write(_trade_rows(template, first + written, chunk))
                written += chunk
                last = first + written - 1
                await fast.wait_for(lambda m: m["type"] == "trade" and m["data"]["recv_seq"] == last, 20)
                # The slow client reads again: the backlog, then "dropped" and close 1008.
                slow.ws.transport.resume_reading()
                code = await slow.wait_closed(20)
            return fast, slow, code, health

    fast, slow, code, health = run(main(), 90)
    got = [m["data"]["recv_seq"] for m in fast.messages if m["type"] == "trade"]
    assert got == list(range(first, got[-1] + 1)) and got[-1] == first + len(got) - 1
    assert "dropped" not in statuses(fast.messages)
    (stream,) = health["streams"]
    assert stream["dropped_clients"] >= 1 and stream["clients"] == 1
    assert code == 1008
    codes = statuses(slow.messages)
    assert codes[-1] == "dropped" and "falling_behind" in codes, codes
    behind = next(m for m in slow.messages if is_status("falling_behind")(m))
    assert behind["data"]["buffered_bytes"] > 64 << 10
    slow_trades = [m["data"]["recv_seq"] for m in slow.messages if m["type"] == "trade"]
    assert slow_trades == got[: len(slow_trades)] and len(slow_trades) < len(got)
