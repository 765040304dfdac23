"""The servers' pure core: a BookFollower fed with recorded rows holds the recorder's book.

Reference: the book frames the recorder wrote while SYNCED (exact top-N text) and
:class:`~mmdata.validate.steps.BookReplay` of the day folder. Two recordings: the plain
session days (``recorded_data``) and a "rich" one with live-file rotation every second and
simulator disconnects (engine resets, Bitfinex sequence breaks, rotation snapshots).
"""

from __future__ import annotations

import csv
import fcntl
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.book.sync import SyncState
from mmdata.serve.client import RelayBook
from mmdata.serve.follow import (
    BookFollower,
    Item,
    encode_message,
    item_from_line,
    item_message,
    status_message,
)
from mmdata.serve.sources import LiveSource, _bridge_start
from mmdata.store.dayfolder import DayFolder, open_day_folder
from mmdata.validate.steps import BookReplay
from tests.recorded_days import VENUES, only_day

EXCHANGES = [e for e, _s, _f in VENUES]
DATA_KINDS = ("diff", "checksum", "snapshot")

# -- recordings ------------------------------------------------------------------------------


def shared_recording(factory: pytest.TempPathFactory, name: str, record: Callable[[Path], Path]) -> Path:
    """Record once per test session, shared by the xdist workers (read-only: copy to modify)."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, common to every worker
    root = base / f"serve-{name}"
    with open(base / f"serve-{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = root / "done"
            if not done.exists():
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(parents=True)
                done.write_text(str(record(root)))
            return Path(done.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


RICH_ARGS = (
    "--live-rotate",
    "0.8",
    "--sim-fault",
    "drop_diffs=0.03",
    "--sim-fault",
    "disconnect_every_s=1.1",
)
#: Kraken with book depth 10: rotated live files start with instrument + a depth-10 snapshot.
KRAKEN10_ARGS = ("--book-depth", "10", "--depth-levels", "10", "--live-rotate", "0.8")


def record_serve_data(root: Path) -> Path:
    """``root/rich``: every venue with live rotation (twice a second at times: ``-1`` names),
    dropped diffs and disconnects; ``root/kraken10``: Kraken at book depth 10. The recorders
    run at once (subprocesses: the duration is wall-clock time)."""
    runs = [(root / "rich", e, s, RICH_ARGS) for e, s, _f in VENUES]
    runs.append((root / "kraken10", "kraken", "BTC/USD", KRAKEN10_ARGS))
    procs = []
    for where, exchange, symbol, extra in runs:
        cmd = [sys.executable, "-m", "mmdata", "record", "-e", exchange, "-s", symbol, "--simulate"]
        cmd += ["--duration", "2.6", "--data-dir", str(where / "data"), "--log-dir", str(where / "logs")]
        cmd += ["--json", "--quiet", *extra]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (out, err)
        orjson.loads(out.strip().splitlines()[-1])
    return root


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_recording(tmp_path_factory, "recordings", record_serve_data)


@pytest.fixture(scope="session")
def rich_data(serve_data: Path) -> Path:
    return serve_data / "rich" / "data"


@pytest.fixture(params=["plain", "rich"])
def data_root(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("recorded_data" if request.param == "plain" else "rich_data")


# -- reading a recorded stream -----------------------------------------------------------------


def stream_dir(data: Path, exchange: str) -> Path:
    fs = next(f for e, _s, f in VENUES if e == exchange)
    return data / exchange / fs


def rotated_order(path: Path) -> tuple[str, int]:
    """``<name>.<stamp>.ndjson`` then ``<name>.<stamp>-1.ndjson`` … (two rotations in one second)."""
    stamp, _, k = path.name.split(".")[1].partition("-")
    return stamp, int(k or 0)


def live_lines(stream: Path) -> list[bytes]:
    """Every row of the live book stream: the rotated files (oldest first), then the current one."""
    live = stream / "live"
    files = [
        *sorted(live.glob("live_depth_diffs.*.ndjson"), key=rotated_order),
        live / "live_depth_diffs.ndjson",
    ]
    return [line for path in files for line in path.read_bytes().splitlines() if line]


def book_frames(folder: DayFolder) -> dict[int, list[str]]:
    """recv_seq -> the frame's 4N price/qty fields (bids then asks, exact text)."""
    out: dict[int, list[str]] = {}
    with gzip.open(folder.layout.book_frames, "rt", encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            out[int(row[0])] = row[5:]
    return out


def frame_fields(bids: list[tuple[str, str]], asks: list[tuple[str, str]], levels: int) -> list[str]:
    """A book side pair as the frame file writes it (padded with empty fields)."""
    out = [x for lv in bids[:levels] for x in lv] + [""] * (2 * (levels - min(len(bids), levels)))
    return out + [x for lv in asks[:levels] for x in lv] + [""] * (2 * (levels - min(len(asks), levels)))


def follower_fields(follower: BookFollower, levels: int) -> list[str]:
    bids, asks = follower.engine.book.top(levels)
    return frame_fields(bids, asks, levels)


def book_of(follower: BookFollower) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    bids, asks = follower.engine.book.top()
    return list(bids), list(asks)


def parse_all(lines: list[bytes]) -> list[Item]:
    items = [item_from_line(line) for line in lines]
    assert all(it is not None for it in items), "every live row the recorder wrote parses"
    return [it for it in items if it is not None]


@dataclass
class Case:
    """One venue's live stream, its day folder and the full follower's state after every row."""

    exchange: str
    symbol: str
    folder: DayFolder
    lines: list[bytes]
    items: list[Item]
    frames: dict[int, list[str]]
    states: list[SyncState]
    books: list[tuple[list[tuple[str, str]], list[tuple[str, str]]]]
    update_ids: list[int | None]

    @property
    def levels(self) -> int:
        return self.folder.levels

    def follower(self) -> BookFollower:
        return BookFollower(self.exchange, self.symbol)


def load_case(data: Path, exchange: str) -> Case:
    stream = stream_dir(data, exchange)
    folder = open_day_folder(only_day(data, exchange, stream.name))
    lines = live_lines(stream)
    items = parse_all(lines)
    follower = BookFollower(folder.exchange, folder.symbol)
    states: list[SyncState] = []
    books = []
    update_ids: list[int | None] = []
    for item in items:
        follower.apply(item)
        states.append(follower.state)
        books.append(book_of(follower))
        update_ids.append(follower.update_id())
    return Case(exchange, folder.symbol, folder, lines, items, book_frames(folder), states, books, update_ids)


_CASES: dict[tuple[Path, str], Case] = {}


def case_of(data: Path, exchange: str) -> Case:
    key = (data, exchange)
    if key not in _CASES:
        _CASES[key] = load_case(data, exchange)
    return _CASES[key]


def replay_before_stop(folder: DayFolder) -> tuple[BookReplay, SyncState]:
    """BookReplay advanced to just before the final STOPPED (the state the follower keeps)."""
    replay = BookReplay(folder)
    stops = [a for a in replay.actions if a.is_stop]
    assert stops, "the recorder stopped cleanly: its ledger ends with STOPPED / run_stop"
    replay.advance(until_ns=stops[0].time_ns - 1)
    return replay, replay.engine.state


def check_frames(case: Case, follower: BookFollower, item: Item, checked: set[int]) -> None:
    """After a data row whose recv_seq has a book frame: the follower is SYNCED and holds it."""
    if item.kind in DATA_KINDS and item.seq in case.frames:
        assert follower.synced, f"{case.exchange} recv_seq {item.seq}: not SYNCED where a frame was written"
        assert follower_fields(follower, case.levels) == case.frames[item.seq], (
            f"{case.exchange} recv_seq {item.seq}: book differs from the recorded frame"
        )
        checked.add(item.seq)


# -- the follower against frames and BookReplay -----------------------------------------------


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_follower_holds_every_book_frame_and_the_replayed_book(data_root: Path, exchange: str) -> None:
    case = case_of(data_root, exchange)
    follower = case.follower()
    checked: set[int] = set()
    view_before_stop: dict[str, Any] | None = None
    for item in case.items:
        if item.kind == "event" and item.rec["event"] == "state_change" and item.rec["state"] == "STOPPED":
            view_before_stop = follower.view() if follower.synced else None
        follower.apply(item)
        check_frames(case, follower, item, checked)
    assert checked == set(case.frames), "every book frame of the day was checked"
    assert len(case.frames) > 10

    replay, state = replay_before_stop(case.folder)
    assert follower.stopped
    if state is SyncState.SYNCED:
        view = follower.stopped_view
        assert view is not None and view == view_before_stop
        assert view["state"] == "SYNCED"
        assert [tuple(lv) for lv in view["bids"]] == replay.engine.book.top()[0]
        assert [tuple(lv) for lv in view["asks"]] == replay.engine.book.top()[1]
        if exchange == "binance":
            assert view["update_id"] == replay.engine.update_id  # type: ignore[attr-defined]
    else:
        assert follower.stopped_view is None, "no book to keep: the recorder was not SYNCED when it stopped"
    replay.advance()
    assert replay.done and replay.stopped
    assert follower.state == replay.engine.state
    assert book_of(follower) == ([], [])


def test_the_plain_recordings_stop_while_synced(recorded_data: Path) -> None:
    """The STOPPED branch above is exercised with a book (not only the not-SYNCED case)."""
    for exchange in EXCHANGES:
        case = case_of(recorded_data, exchange)
        follower = case.follower()
        for item in case.items:
            follower.apply(item)
        assert follower.stopped_view is not None and follower.stopped_view["bids"], exchange


def test_the_rich_recording_has_what_it_is_for(rich_data: Path) -> None:
    """Preconditions of the rich data: rotated files with rotation snapshots, engine resets."""
    for exchange in EXCHANGES:
        case = case_of(rich_data, exchange)
        assert list((stream_dir(rich_data, exchange) / "live").glob("live_depth_diffs.*.ndjson")), exchange
        assert any(it.kind == "snapshot" and it.rec.get("tag") == "rotation" for it in case.items), exchange
        resets = [it for it in case.items if it.kind == "event" and it.rec.get("state") == "CONNECTING"]
        assert len(resets) >= 2, exchange  # the start, then at least one lost connection


# -- poll batches and late starts (LiveSource) ---------------------------------------------------


def _last_snapshot(lines: list[bytes]) -> int:
    """Where LiveSource.start begins: the last snapshot, or for a Binance venue snapshot the
    diffs the recorder's engine had buffered before it (sources._bridge_start)."""
    at = max((i for i, line in enumerate(lines) if b'"kind":"snapshot"' in line[:240]), default=0)
    return _bridge_start(lines, at) if at else 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_poll_batches_and_any_late_start_reach_the_same_book(
    data: st.DataObject, recorded_data: Path, rich_data: Path
) -> None:
    root = data.draw(st.sampled_from([recorded_data, rich_data]), label="recording")
    case = case_of(root, data.draw(st.sampled_from(EXCHANGES), label="exchange"))
    n = len(case.lines)
    k = data.draw(st.integers(0, n), label="lines already in the file at the start")
    rest = b"".join(line + b"\n" for line in case.lines[k:])
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(rest)), max_size=12), label="byte cuts")))
    start = _last_snapshot(case.lines[:k])

    with tempfile.TemporaryDirectory() as tmp:
        live = Path(tmp) / "live"
        live.mkdir()
        path = live / "live_depth_diffs.ndjson"
        path.write_bytes(b"".join(line + b"\n" for line in case.lines[:k]))
        source = LiveSource(Path(tmp))
        try:  # hypothesis may stop an example at any draw: the files are closed whatever happens
            got = source.start()
            tail = [it.line for it in got[len(got) - (k - start) :]] if k > start else []
            assert tail == case.lines[start:k], "the start hands over the file from its last snapshot on"
            for it in got[: len(got) - (k - start)]:
                assert it.kind == "event" and it.rec["event"] in ("run_start", "instrument")
            batches: list[list[Item]] = []
            done = 0
            for cut in [*cuts, len(rest)]:
                with open(path, "ab") as f:
                    f.write(rest[done:cut])
                done = cut
                batches.append(source.poll())
        finally:
            source.close()

    polled = [it for batch in batches for it in batch]
    assert [it.line for it in polled] == case.lines[k:], "no row lost or repeated across polls"
    prefix = got[: len(got) - (k - start)] if k > start else got
    follower = case.follower()
    for it in prefix:  # the latest run_start / instrument before the start snapshot
        follower.apply(it)
    # Line j of the stream: the start's rows from the snapshot on, then the polled ones.
    for j, it in [*zip(range(start, k), got[len(prefix) :], strict=True), *enumerate(polled, start=k)]:
        follower.apply(it)
        if j > start and it.kind in ("diff", "checksum"):
            assert follower.state == case.states[j], (case.exchange, it.seq)
            assert book_of(follower) == case.books[j], (case.exchange, it.seq)
            assert follower.update_id() == case.update_ids[j]
            if it.seq in case.frames:
                assert follower_fields(follower, case.levels) == case.frames[it.seq]


# -- relay messages ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(["diff", "trade", "event", "snapshot"]),
    exchange=st.text(max_size=10),
    symbol=st.text(max_size=10),
    ts_ms=st.none() | st.integers(0, 2**62),
    value=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)
def test_encode_message_is_the_five_keys_with_data_spliced(
    kind: str, exchange: str, symbol: str, ts_ms: int | None, value: dict[str, Any]
) -> None:
    data = orjson.dumps(value)
    msg = encode_message(kind, exchange, symbol, ts_ms, data)
    parsed = orjson.loads(msg)
    assert list(parsed) == ["type", "exchange", "symbol", "ts_ms", "data"]
    assert parsed == {"type": kind, "exchange": exchange, "symbol": symbol, "ts_ms": ts_ms, "data": value}
    assert msg.endswith(b',"data":' + data + b"}")


def test_encode_message_keeps_the_exact_decimal_text() -> None:
    data = (
        b'{"recv_seq":7,"recv_time_ns":1700000000123456789,"kind":"diff",'
        b'"bids":[["0.00010000","1.50000000"]],"asks":[],"price":1.50000000,"big":12345678901234567890}'
    )
    msg = encode_message("diff", "binance", "BTCUSDT", 1700000000123, data)
    assert msg.endswith(b',"data":' + data + b"}"), "the row's bytes go out untouched"
    parsed = orjson.loads(msg)
    assert parsed["data"]["bids"] == [["0.00010000", "1.50000000"]]
    assert b'"price":1.50000000' in msg


def test_item_message_of_every_recorded_row(recorded_data: Path) -> None:
    for exchange in EXCHANGES:
        case = case_of(recorded_data, exchange)
        trades = (stream_dir(recorded_data, exchange) / "live" / "live_trades.ndjson").read_bytes()
        trade_items = [item_from_line(line, trade=True) for line in trades.splitlines()]
        assert trade_items and all(it is not None and it.kind == "trade" for it in trade_items)
        for item in [*case.items, *(it for it in trade_items if it is not None)]:
            msg = item_message(item)
            parsed = orjson.loads(msg)
            assert list(parsed) == ["type", "exchange", "symbol", "ts_ms", "data"]
            assert parsed["type"] == ("diff" if item.kind == "checksum" else item.kind)
            assert parsed["exchange"] == exchange and parsed["symbol"] == case.symbol
            assert parsed["ts_ms"] == item.rec["recv_time_ns"] // 1_000_000
            assert parsed["data"] == orjson.loads(item.line)
            assert msg.endswith(b',"data":' + item.line + b"}")


def test_item_from_line_rejects_what_the_recorder_does_not_write() -> None:
    good = b'{"recv_seq":3,"recv_time_ns":5,"kind":"diff","bids":[],"asks":[]}'
    item = item_from_line(good)
    assert item is not None and (item.seq, item.time_ns, item.kind, item.line) == (3, 5, "diff", good)
    assert item.key == (3, 0, 0)
    event = item_from_line(b'{"recv_seq":3,"recv_time_ns":5,"kind":"event","event":"x"}')
    assert event is not None and event.key == (3, 1, 0) and event.message_type == "event"
    trade = item_from_line(b'{"recv_seq":4,"recv_time_ns":6,"price":"1"}', trade=True)
    assert trade is not None and trade.kind == "trade"
    for bad in (
        b"",
        b"not json",
        b"[1,2,3]",
        b'"text"',
        b'{"recv_time_ns":5}',
        b'{"recv_seq":3}',
        b'{"recv_seq":"3","recv_time_ns":5}',
        b'{"recv_seq":3.0,"recv_time_ns":5}',
        b'{"recv_seq":true,"recv_time_ns":5}',
        b'{"recv_seq":3,"recv_time_ns":null}',
        b'{"recv_seq":3,"recv_time_ns":5,"kind":"gossip"}',
        b'{"recv_seq":3,"recv_time_ns":5,"kind":null}',
        b'{"recv_seq":3,"recv_time_ns":5',
    ):
        assert item_from_line(bad) is None, bad


def test_status_message_shape() -> None:
    msg = status_message("kraken", "BTC/USD", 1234, "file_rotated", "rotated", file="a.ndjson", n=2)
    assert orjson.loads(msg) == {
        "type": "status",
        "exchange": "kraken",
        "symbol": "BTC/USD",
        "ts_ms": 1234,
        "data": {"status": "file_rotated", "message": "rotated", "file": "a.ndjson", "n": 2},
    }
    assert list(orjson.loads(msg)) == ["type", "exchange", "symbol", "ts_ms", "data"]
    bare = orjson.loads(status_message("binance", "BTCUSDT", 0, "stale", 'say "why"'))
    assert bare["data"] == {"status": "stale", "message": 'say "why"'}


def test_snapshot_message_carries_the_followed_book(recorded_data: Path) -> None:
    case = case_of(recorded_data, "kraken")
    follower = case.follower()
    last = max(j for j, s in enumerate(case.states) if s is SyncState.SYNCED)
    for item in case.items[: last + 1]:
        follower.apply(item)
    msg = orjson.loads(follower.snapshot_message(None, stream_source="live"))
    assert msg["type"] == "snapshot" and msg["exchange"] == "kraken" and msg["symbol"] == "BTC/USD"
    assert msg["ts_ms"] == follower.time_ns // 1_000_000
    data = msg["data"]
    assert data["source"] == "follower" and data["stream_source"] == "live"
    assert data["state"] == "SYNCED" and data["precisions"] == [1, 8] and data["depth"] == 25
    assert [tuple(lv) for lv in data["bids"]] == case.books[last][0]
    assert [tuple(lv) for lv in data["asks"]] == case.books[last][1]
    top = orjson.loads(follower.snapshot_message(3))["data"]
    assert len(top["bids"]) == 3 and [tuple(lv) for lv in top["asks"]] == case.books[last][1][:3]


def _join_points(case: Case, count: int = 5) -> list[int]:
    synced = [
        j for j, it in enumerate(case.items) if it.kind in DATA_KINDS and case.states[j].name == "SYNCED"
    ]
    step = max(1, len(synced) // count)
    return synced[::step][:count] + synced[-1:]


def _relay_follows(case: Case, join: int, snapshot: bytes) -> int:
    """Feed a RelayBook the join snapshot and every later row; compare it with the full follower."""
    relay = RelayBook()
    relay.apply(orjson.loads(snapshot))
    compared = 0
    for j in range(join + 1, len(case.items)):
        item = case.items[j]
        relay.apply(orjson.loads(item_message(item)))
        if item.kind in ("diff", "checksum"):
            assert relay.state == case.states[j].name, (case.exchange, join, item.seq)
            if case.states[j] is SyncState.SYNCED:
                assert relay.top(10_000) == case.books[j], (case.exchange, join, item.seq)
                if item.seq in case.frames:
                    assert frame_fields(*relay.top(case.levels), case.levels) == case.frames[item.seq]
                compared += 1
    return compared


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_relay_book_from_a_follower_snapshot_plus_later_rows(data_root: Path, exchange: str) -> None:
    case = case_of(data_root, exchange)
    total = 0
    for join in _join_points(case):
        follower = case.follower()
        for item in case.items[: join + 1]:
            follower.apply(item)
        assert follower.synced
        total += _relay_follows(case, join, follower.snapshot_message(None))
    assert total > 0


def test_relay_book_needs_the_kraken_precisions(recorded_data: Path) -> None:
    """Without ``precisions`` a Kraken client cannot prove its book (the field is load-bearing)."""
    case = case_of(recorded_data, "kraken")
    join = _join_points(case)[0]
    follower = case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
    message = orjson.loads(follower.snapshot_message(None))
    message["data"]["precisions"] = None
    relay = RelayBook()
    relay.apply(message)
    for item in case.items[join + 1 :]:
        relay.apply(orjson.loads(item_message(item)))
        assert relay.state != "SYNCED"


def test_relay_book_ignores_what_comes_before_a_snapshot_and_non_book_messages(recorded_data: Path) -> None:
    case = case_of(recorded_data, "bitfinex")
    relay = RelayBook()
    first_diff = next(it for it in case.items if it.kind == "diff")
    relay.apply(orjson.loads(item_message(first_diff)))
    relay.apply(orjson.loads(status_message("bitfinex", "tBTCUSD", 1, "stale", "x")))
    assert relay.follower is None and relay.state == "CONNECTING" and relay.top(5) == ([], [])
    join = _join_points(case)[0]
    follower = case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
    relay.apply(orjson.loads(follower.snapshot_message(None)))
    before = relay.top(10_000)
    relay.apply({"type": "trade", "exchange": "bitfinex", "symbol": "tBTCUSD", "data": {"price": "1"}})
    relay.apply({"type": "status", "data": {"status": "x"}})
    relay.apply({"type": "diff", "data": "not an object"})
    assert relay.top(10_000) == before and relay.state == "SYNCED"
    assert relay.messages == 6


# -- resets, STOPPED, rotation snapshots ---------------------------------------------------------


def _event(seq: int, event: str, state: str = "", **details: Any) -> Item:
    rec = {
        "recv_seq": seq,
        "recv_time_ns": 10**18 + seq,
        "kind": "event",
        "event_id": 0,
        "event": event,
        "tag": "",
        "state": state,
        "reason": "",
        "details": details,
    }
    return Item(seq, rec["recv_time_ns"], "event", rec, orjson.dumps(rec))


def _restatement(follower: BookFollower, seq: int) -> Item:
    """What the recorder writes at the top of a rotated live file (its local book)."""
    view = follower.view()
    rec = {
        "recv_seq": seq,
        "recv_time_ns": 10**18 + seq,
        "kind": "snapshot",
        "tag": "rotation",
        "source": "local_book",
        "state": "SYNCED",
        "depth": follower.depth,
        "update_id": view["update_id"],
        "checksum": view["checksum"],
        "bids": view["bids"],
        "asks": view["asks"],
    }
    return Item(seq, rec["recv_time_ns"], "snapshot", rec, orjson.dumps(rec))


@pytest.mark.parametrize("reset", ["CONNECTING", "run_start"])
@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_reset_unsyncs_until_the_next_snapshot(recorded_data: Path, exchange: str, reset: str) -> None:
    case = case_of(recorded_data, exchange)
    join = _join_points(case)[1]
    follower, shadow = case.follower(), case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
        shadow.apply(item)
    assert follower.synced
    seq = case.items[join].seq
    if reset == "CONNECTING":
        follower.apply(_event(seq, "state_change", "CONNECTING"))
    else:
        follower.apply(_event(seq, "run_start", "CONNECTING", book_depth=follower.depth))
    assert not follower.synced and book_of(follower) == ([], [])
    rest = [it for it in case.items[join + 1 :] if not (it.kind == "event" and it.rec["state"] == "STOPPED")]
    half = len(rest) // 2
    for item in rest[:half]:
        follower.apply(item)
        shadow.apply(item)
        assert not follower.synced, "rows after a reset never make a book without a snapshot"
    # The rotation restatement (the only snapshot kind a live follower can join from) syncs it again.
    follower.apply(_restatement(shadow, shadow.seq))
    synced_once = False
    for item in rest[half:]:
        follower.apply(item)
        shadow.apply(item)
        if item.kind in ("diff", "checksum"):
            assert follower.state == shadow.state and book_of(follower) == book_of(shadow)
            synced_once |= follower.synced
    assert synced_once


def test_resets_in_the_rich_recording_unsync_until_a_snapshot(rich_data: Path) -> None:
    for exchange in EXCHANGES:
        case = case_of(rich_data, exchange)
        follower = case.follower()
        waiting = False
        for item in case.items:
            follower.apply(item)
            rec = item.rec
            if item.kind == "event" and (
                rec["event"] == "run_start"
                or (rec["event"] == "state_change" and rec["state"] == "CONNECTING")
            ):
                waiting = True
            elif item.kind == "snapshot":
                waiting = False
            if waiting:
                assert not follower.synced, (exchange, item.seq)


def test_a_rotation_snapshot_never_replaces_a_synced_book(recorded_data: Path) -> None:
    case = case_of(recorded_data, "kraken")
    join = _join_points(case)[1]
    follower = case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
    before = book_of(follower)
    bogus = _restatement(follower, follower.seq)
    bogus.rec["bids"] = [["1", "1"]]
    follower.apply(bogus)
    assert follower.synced and book_of(follower) == before
    follower.apply(_event(follower.seq, "state_change", "CONNECTING"))
    follower.apply(bogus)
    assert follower.engine.book.top(1)[0] == [("1", "1")], "not SYNCED: the restated book is taken"
    assert not follower.synced, "... but not proven until a checksum matches"


def test_stopped_keeps_the_book_of_that_moment_only_when_synced(recorded_data: Path) -> None:
    case = case_of(recorded_data, "binance")
    join = _join_points(case)[1]
    follower = case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
    expected = follower.view()
    follower.apply(_event(follower.seq, "state_change", "STOPPED"))
    assert follower.stopped and not follower.synced
    assert follower.stopped_view == expected
    assert book_of(follower) == ([], []), "the book is never followed on after STOPPED"
    follower.apply(_event(follower.seq, "run_start", "CONNECTING"))
    assert not follower.stopped and follower.state is SyncState.CONNECTING

    other = case.follower()
    for item in case.items[: join + 1]:
        other.apply(item)
    other.apply(_event(other.seq, "state_change", "CONNECTING"))
    other.apply(_event(other.seq, "state_change", "STOPPED"))
    assert other.stopped and other.stopped_view is None


def test_a_book_depth_change_keeps_the_kraken_precisions_plain(recorded_data: Path) -> None:
    """Sanity for the depth test below: the same rows with the follower at the stream's depth."""
    items = _kraken_from_snapshot(recorded_data)
    follower = BookFollower("kraken", "BTC/USD", 25)
    case = case_of(recorded_data, "kraken")
    checked: set[int] = set()
    for item in items:
        follower.apply(item)
        check_frames(case, follower, item, checked)
    assert checked == set(case.frames)


def _kraken_from_snapshot(data: Path) -> list[Item]:
    """What a follower joining a rotated Kraken file reads: the instrument, then a snapshot on."""
    case = case_of(data, "kraken")
    inst = next(it for it in case.items if it.kind == "event" and it.rec["event"] == "instrument")
    snap = next(j for j, it in enumerate(case.items) if it.kind == "snapshot")
    return [inst, *case.items[snap:]]


def test_a_book_depth_change_keeps_the_kraken_precisions(recorded_data: Path) -> None:
    """A snapshot row whose ``depth`` differs from the follower's (LiveSource on a rotated file of
    a --book-depth 10 recorder: instrument row, then the rotation snapshot with depth 10) must not
    forget the precisions the instrument row gave."""
    follower = BookFollower("kraken", "BTC/USD", 10)  # the stream says 25: a depth change
    case = case_of(recorded_data, "kraken")
    checked: set[int] = set()
    for item in _kraken_from_snapshot(recorded_data):
        follower.apply(item)
        check_frames(case, follower, item, checked)
    assert checked == set(case.frames)


def test_rows_the_recorder_did_not_write_change_nothing(recorded_data: Path) -> None:
    case = case_of(recorded_data, "kraken")
    join = _join_points(case)[1]
    follower = case.follower()
    for item in case.items[: join + 1]:
        follower.apply(item)
    before, seq = book_of(follower), follower.seq
    for rec in (
        {"recv_seq": seq + 1, "recv_time_ns": 1, "kind": "diff", "bids": [["1", "1"]]},
        {"recv_seq": seq + 1, "recv_time_ns": 1, "kind": "checksum"},
        {"recv_seq": seq + 1, "recv_time_ns": 1, "kind": "snapshot", "bids": []},
        {"recv_seq": seq + 1, "recv_time_ns": 1, "kind": "event", "event": "instrument", "details": {}},
    ):
        follower.apply(Item(seq + 1, 1, str(rec["kind"]), rec, orjson.dumps(rec)))
    follower.apply(Item(seq + 1, 1, "trade", {"price": "1"}, b"{}"))
    assert follower.synced and book_of(follower) == before and follower.seq == seq
