"""Where the servers read a recorded stream: ``live/`` (LiveSource) and the day files (DaySource,
day_items, newest_day), checked on files written and renamed the way the recorder does it.

No sockets: the recorder is simulated by appending lines / gzip members and renaming files
between polls; DaySource gets a fake clock for ``hold_s`` and its day-rollover check.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.serve.test_follow as tf
from mmdata.book.sync import SyncState
from mmdata.serve.follow import BookFollower, Item, item_from_line
from mmdata.serve.sources import ROLLOVER_GRACE_S, DaySource, LiveSource, day_items, ledger_item, newest_day
from mmdata.store.dayfolder import DayFolder, open_day_folder
from mmdata.store.writers import csv_row
from tests.recorded_days import only_day

LIVE = "live_depth_diffs.ndjson"
TRADES = "live_trades.ndjson"


@pytest.fixture(scope="session")
def serve_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tf.shared_recording(tmp_path_factory, "recordings", tf.record_serve_data)


@pytest.fixture(scope="session")
def rich_data(serve_data: Path) -> Path:
    return serve_data / "rich" / "data"


@pytest.fixture(params=["plain", "rich"])
def data_root(request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("recorded_data" if request.param == "plain" else "rich_data")


def ident(item: Item) -> tuple[str, int, bytes]:
    return item.kind, item.seq, item.line


def nl(lines: Iterable[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def gz_append(path: Path, lines: list[bytes]) -> None:
    """One gzip member, as a recorder flush writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write(gzip.compress(nl(lines)))


def gz_lines(path: Path) -> list[bytes]:
    return [line for line in gzip.decompress(path.read_bytes()).splitlines() if line]


def trade_lines(stream: Path) -> list[bytes]:
    live = stream / "live"
    files = [*sorted(live.glob("live_trades.*.ndjson"), key=tf.rotated_order), live / TRADES]
    return [line for path in files for line in path.read_bytes().splitlines() if line]


def check_follower_on(
    case: tf.Case, follower: BookFollower, items: Iterable[Item], after: int = -1
) -> set[int]:
    """Apply items; at every data row with recv_seq > ``after`` and a book frame, the follower
    holds the frame (and is SYNCED on diff/checksum rows). Returns the recv_seqs checked."""
    checked: set[int] = set()
    for item in items:
        follower.apply(item)
        if item.kind in tf.DATA_KINDS and item.seq > after and item.seq in case.frames:
            if item.kind != "snapshot":
                assert follower.synced, (case.exchange, item.seq, follower.state)
            fields = tf.follower_fields(follower, case.levels)
            assert fields == case.frames[item.seq], (case.exchange, item.seq)
            checked.add(item.seq)
    return checked


# -- LiveSource ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_live_source_across_rotations_loses_and_repeats_no_row(data: st.DataObject, rich_data: Path) -> None:
    exchange = data.draw(st.sampled_from(tf.EXCHANGES), label="exchange")
    case = tf.case_of(rich_data, exchange)
    book, trades = case.lines, trade_lines(tf.stream_dir(rich_data, exchange))
    n = len(book)
    k0 = data.draw(st.integers(0, n), label="book lines before the start")
    rotations = sorted(set(data.draw(st.lists(st.integers(k0, n), max_size=4), label="rotate after line")))
    bounds = [k0, *rotations, n]
    t_bounds = [0, *(len(trades) * b // n for b in bounds[1:])]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        live = root / "live"
        live.mkdir()
        (live / LIVE).write_bytes(nl(book[:k0]))
        (live / TRADES).write_bytes(b"")
        source = LiveSource(root)
        try:  # hypothesis may stop an example at any draw: the files are closed whatever happens
            assert LiveSource.available(root)
            started = source.start()
            assert source.tail_events() == []
            polled: list[Item] = []
            for seg in range(len(bounds) - 1):
                if seg:
                    stamp = f"20261121T1200{seg:02d}"
                    for name in ("live_depth_diffs", "live_trades"):
                        (live / f"{name}.ndjson").rename(live / f"{name}.{stamp}.ndjson")
                    if data.draw(st.booleans(), label="poll while no current file"):
                        polled += source.poll()
                    for name in (LIVE, TRADES):
                        (live / name).touch()
                body = nl(book[bounds[seg] : bounds[seg + 1]])
                tbody = nl(trades[t_bounds[seg] : t_bounds[seg + 1]])
                cuts = sorted(set(data.draw(st.lists(st.integers(0, len(body)), max_size=5), label="cuts")))
                trade_at = data.draw(st.integers(0, len(cuts)), label="trades written after chunk")
                done = 0
                for i, cut in enumerate([*cuts, len(body)]):
                    with open(live / LIVE, "ab") as f:
                        f.write(body[done:cut])
                    done = cut
                    if i == trade_at:
                        with open(live / TRADES, "ab") as f:
                            f.write(tbody)
                    if i == 0 or data.draw(st.booleans(), label="poll"):
                        polled += source.poll()  # at least one poll per file: the documented limit
            polled += source.poll()
            events = source.tail_events()
        finally:
            source.close()
        assert source.poll() == []

    start = tf._last_snapshot(book[:k0])
    assert [it.line for it in started][len(started) - (k0 - start) :] == book[start:k0]
    assert [it.line for it in polled if it.kind != "trade"] == book[k0:], "every book row once, in order"
    assert [it.line for it in polled if it.kind == "trade"] == trades, "every trade once, in order"
    assert [e.kind for e in events] == ["rotated"] * (2 * len(rotations))


def test_live_source_reports_a_rotated_file_torn_inside_a_line(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    first = b'{"recv_seq":1,"recv_time_ns":5,"kind":"diff","bids":[],"asks":[]}'
    (live / LIVE).write_bytes(first + b"\n" + first[:20])
    source = LiveSource(tmp_path)
    assert [it.line for it in source.start()] == [first]
    (live / LIVE).rename(live / "live_depth_diffs.20261121T120000.ndjson")
    second = first.replace(b":1,", b":2,", 1)
    (live / LIVE).write_bytes(second + b"\n")
    assert [it.line for it in source.poll()] == [second]
    assert [e.kind for e in source.tail_events()] == ["damaged", "rotated"]
    assert source.tail_events() == []
    source.close()


def test_live_source_starts_each_rotated_file_at_its_snapshot(rich_data: Path) -> None:
    """Each rotated file alone (as the current file): a follower from LiveSource.start holds every
    later frame once the file's first snapshot is in."""
    checked: set[tuple[str, int]] = set()
    for exchange in tf.EXCHANGES:
        case = tf.case_of(rich_data, exchange)
        stream = tf.stream_dir(rich_data, exchange)
        for path in sorted((stream / "live").glob("live_depth_diffs*.ndjson")):
            lines = [line for line in path.read_bytes().splitlines() if line]
            snaps = [it.seq for it in tf.parse_all(lines) if it.kind == "snapshot"]
            if not snaps:
                continue  # rotated while not SYNCED: see the SYNCING test below
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "live").mkdir()
                shutil.copy(path, Path(tmp) / "live" / LIVE)
                source = LiveSource(Path(tmp))
                items = source.start()
                source.close()
            assert items[-1].line == lines[-1]
            seqs = check_follower_on(case, case.follower(), items, after=snaps[-1] - 1)
            checked |= {(exchange, seq) for seq in seqs}
    assert len(checked) > 20


def _binance_with_bridging_buffer(recorded_data: Path) -> list[bytes]:
    """The plain Binance stream with its first REST snapshot older than the diff buffered before
    it (as a real venue answers: lastUpdateId inside the buffered diffs' U..u). The buffered
    diff is emptied so that the recorded frames still hold; the recorder's engine applies it."""
    case = tf.case_of(recorded_data, "binance")
    lines = list(case.lines)
    d = next(j for j, it in enumerate(case.items) if it.kind == "diff")
    s = next(j for j, it in enumerate(case.items) if it.kind == "snapshot")
    assert d < s
    diff = orjson.loads(lines[d])
    snap = orjson.loads(lines[s])
    after = next(orjson.loads(lines[j]) for j in range(d + 1, len(lines)) if case.items[j].kind == "diff")
    assert diff["first_id"] + 2 < diff["last_id"] <= snap["update_id"] < after["last_id"]
    assert after["first_id"] == diff["last_id"] + 1, "a continuous diff stream"
    diff["bids"], diff["asks"] = [], []
    snap["update_id"] = diff["first_id"] + 2
    lines[d], lines[s] = orjson.dumps(diff), orjson.dumps(snap)
    return lines


def test_binance_bridging_buffer_stream_is_consistent(recorded_data: Path) -> None:
    """Control for the next test: read from its top, the edited stream holds every frame."""
    case = tf.case_of(recorded_data, "binance")
    follower = case.follower()
    items = tf.parse_all(_binance_with_bridging_buffer(recorded_data))
    assert check_follower_on(case, follower, items) == set(case.frames)


def test_live_source_start_keeps_the_binance_diffs_a_snapshot_needs(
    recorded_data: Path, tmp_path: Path
) -> None:
    case = tf.case_of(recorded_data, "binance")
    lines = _binance_with_bridging_buffer(recorded_data)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / LIVE).write_bytes(nl(lines))
    source = LiveSource(tmp_path)
    items = source.start()
    source.close()
    assert check_follower_on(case, case.follower(), items) == set(case.frames)


def test_live_source_start_on_rotated_kraken_depth_10_files(serve_data: Path) -> None:
    data = serve_data / "kraken10" / "data"
    case = tf.case_of(data, "kraken")
    assert case.folder.depth == 10
    full = case.follower()
    assert check_follower_on(case, full, case.items) == set(case.frames), "control: from the top"
    live = tf.stream_dir(data, "kraken") / "live"
    starts = [  # files that start at a rotation: instrument row, then the rotation snapshot
        path
        for path in sorted(live.glob("live_depth_diffs*.ndjson"))
        if any(b'"tag":"rotation"' in line for line in path.read_bytes().splitlines()[:3])
    ]
    assert starts
    for path in starts:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "live").mkdir()
            shutil.copy(path, Path(tmp) / "live" / LIVE)
            source = LiveSource(Path(tmp))
            items = source.start()
            source.close()
        # What the relay's hub does for a live source: a follower of the default depth.
        assert check_follower_on(case, BookFollower("kraken", "BTC/USD"), items)


def test_live_source_start_on_a_file_rotated_while_syncing(recorded_data: Path, tmp_path: Path) -> None:
    case = tf.case_of(recorded_data, "binance")
    s = next(j for j, it in enumerate(case.items) if it.kind == "snapshot")
    seq = case.items[s].seq
    assert case.states[s] is SyncState.SYNCING, "REST snapshot applied, bridge pending"
    rest = [line for line, it in zip(case.lines, case.items, strict=True) if it.seq > seq]
    head = {
        "recv_seq": seq,
        "recv_time_ns": case.items[s].time_ns,
        "exchange": "binance",
        "symbol": "BTCUSDT",
    }
    snap = case.items[s].rec
    rotated = [  # what _live_restart writes while SYNCING: the book on its accepted snapshot
        orjson.dumps(
            {
                **head,
                "kind": "snapshot",
                "tag": "rotation",
                "source": "local_book",
                "state": "SYNCING",
                "depth": snap.get("depth"),
                "update_id": snap["update_id"],
                "checksum": None,
                "bids": snap["bids"],
                "asks": snap["asks"],
            }
        ),
        *rest,
    ]
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / LIVE).write_bytes(nl(rotated))
    source = LiveSource(tmp_path)
    items = source.start()
    source.close()
    assert check_follower_on(case, case.follower(), items) == set(case.frames)


# -- day folders: helpers --------------------------------------------------------------------------


@dataclass
class Day:
    """A recorded day's rows, to be written back member by member."""

    case: tf.Case
    folder: DayFolder
    header: bytes
    ledger: list[bytes]  # rows after the header
    diffs: list[bytes]

    def seq_of_ledger(self, line: bytes) -> int:
        return int(next(csv.reader([line.decode()]))[3])


def load_day(data: Path, exchange: str) -> Day:
    case = tf.case_of(data, exchange)
    folder = case.folder
    ledger = gz_lines(folder.layout.events)
    return Day(case, folder, ledger[0], ledger[1:], gz_lines(folder.layout.diffs))


def day_files(day: Day, root: Path) -> tuple[Path, Path]:
    """The ledger and diffs paths of a copy of ``day`` at ``root``."""
    layout = day.folder.layout
    return root / layout.events.relative_to(layout.root), root / layout.diffs.relative_to(layout.root)


def empty_copy(day: Day, stream: Path, ledger: list[bytes], diffs: list[bytes]) -> DayFolder:
    """A copy of the day folder (snapshots kept, no trades) whose ledger and diffs files hold one
    member each: the header and ``ledger``, ``diffs`` (none: an empty file)."""
    dst = stream / day.folder.label
    shutil.copytree(day.folder.root, dst)
    layout = day.folder.layout
    (dst / layout.trades_raw.relative_to(layout.root)).unlink()
    events, diff_path = day_files(day, dst)
    events.write_bytes(b"")
    diff_path.write_bytes(b"")
    gz_append(events, [day.header, *ledger])
    if diffs:
        gz_append(diff_path, diffs)
    return open_day_folder(dst)


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def merge_order(items: list[Item]) -> list[Item]:
    return sorted(items, key=lambda it: it.key)


def expected_release(
    folder: DayFolder, ledger: list[bytes], diffs: list[bytes]
) -> list[tuple[str, int, bytes]]:
    """What DaySource has released once these rows are visible, before any hold_s expires: the
    merge-order prefix of rows whose other file shows a later row (diff d: a ledger row at
    seq >= d; ledger row e: a diff at seq > e; a snapshot: it is in the ledger)."""
    led = [it for line in ledger for it in ledger_item(folder, line)]
    dif = [it for it in map(item_from_line, diffs) if it is not None]
    lmark = max((it.seq for it in led), default=-1)
    dmark = max((it.seq for it in dif), default=-1)
    out = []
    for it in merge_order(led + dif):
        if not (dmark > it.seq if it.kind == "event" else lmark >= it.seq):
            break
        out.append(ident(it))
    return out


def book_rows(folder: DayFolder) -> list[tuple[str, int, bytes]]:
    """day_items of a recorded day without its trades (the copies here have none)."""
    return [ident(it) for it in day_items(folder.root) if it.kind != "trade"]


def check_day_follower(day: Day, released: list[Item]) -> None:
    """The released rows make the recorded book: every frame, and the replay's book at STOPPED."""
    follower = BookFollower(day.folder.exchange, day.folder.symbol, day.folder.depth)
    assert check_follower_on(day.case, follower, released) == set(day.case.frames)
    replay, state = tf.replay_before_stop(day.folder)
    if state is SyncState.SYNCED:
        assert follower.stopped_view is not None
        assert [tuple(lv) for lv in follower.stopped_view["bids"]] == replay.engine.book.top()[0]
        assert [tuple(lv) for lv in follower.stopped_view["asks"]] == replay.engine.book.top()[1]
    else:
        assert follower.stopped_view is None


def _groups(day: Day) -> list[list[bytes]]:
    """Ledger rows grouped by recv_seq (a recorder writes a seq's rows together)."""
    out: list[list[bytes]] = []
    last = None
    for line in day.ledger:
        seq = day.seq_of_ledger(line)
        if seq != last:
            out.append([])
            last = seq
        out[-1].append(line)
    return out


def _cut(data: st.DataObject, rows: list[Any], label: str) -> list[list[Any]]:
    points = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=8), label=label)))
    bounds = [0, *(p for p in points if p < len(rows)), len(rows)]
    return [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# -- DaySource -----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_day_source_merges_members_in_any_interleaving(
    data: st.DataObject, recorded_data: Path, rich_data: Path
) -> None:
    """Ledger and diffs members appended in adversarial orders (ledger rows of seq r visible before
    diff r, and after): released in (recv_seq, ledger-after-data) order, each once, exactly when
    the other file shows a later row; at the end (hold_s) everything, making the recorded book.

    Two shapes are kept out here and tested on their own below (both bugs): a seq's ledger
    rows split over two members, and a snapshot row visible before the diffs preceding it."""
    root = data.draw(st.sampled_from([recorded_data, rich_data]), label="recording")
    day = load_day(root, data.draw(st.sampled_from(tf.EXCHANGES), label="exchange"))
    groups = _groups(day)
    ledger_chunks = [[row for g in chunk for row in g] for chunk in _cut(data, groups[1:], "ledger cuts")]
    diff_chunks = _cut(data, day.diffs, "diff cuts")
    d0 = data.draw(st.integers(0, len(diff_chunks)), label="diff members before the start")
    diff_seqs = [item.seq for item in map(item_from_line, day.diffs) if item is not None]

    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / day.folder.exchange / day.folder.symbol_fs
        vis_ledger, vis_diffs = list(groups[0]), [row for c in diff_chunks[:d0] for row in c]
        folder = empty_copy(day, stream, vis_ledger, diff_chunks[0] if d0 else [])
        events, diffs = day_files(day, folder.root)
        for chunk in diff_chunks[1:d0]:
            gz_append(diffs, chunk)
        clock = Clock()
        source = DaySource(stream, hold_s=3.0, clock=clock)
        released = source.start()
        assert [ident(it) for it in released] == expected_release(folder, vis_ledger, vis_diffs)
        li, di = 0, d0
        while li < len(ledger_chunks) or di < len(diff_chunks):
            take_ledger = di == len(diff_chunks) or (
                li < len(ledger_chunks) and data.draw(st.booleans(), label="ledger next")
            )
            if take_ledger:
                chunk = ledger_chunks[li]
                need = min((day.seq_of_ledger(r) for r in chunk if b",snapshot," in r), default=None)
                if need is not None and any(s < need for s in diff_seqs[len(vis_diffs) :]):
                    take_ledger = False  # a snapshot row only after the diffs before it (bug below)
            if take_ledger:
                gz_append(events, ledger_chunks[li])
                vis_ledger += ledger_chunks[li]
                li += 1
            else:
                gz_append(diffs, diff_chunks[di])
                vis_diffs += diff_chunks[di]
                di += 1
            if data.draw(st.booleans(), label="poll"):
                released += source.poll()
                assert [ident(it) for it in released] == expected_release(folder, vis_ledger, vis_diffs)
        released += source.poll()
        assert [ident(it) for it in released] == expected_release(folder, vis_ledger, vis_diffs)
        clock.t = 3.0  # hold_s: the rows no later row releases (the day's closing rows)
        released += source.poll()
        assert source.tail_events() == []
        final = [ident(it) for it in day_items(folder.root)]

    assert [ident(it) for it in released] == final, "every row once, in merge order"
    keys = [it.key for it in released]
    assert keys == sorted(keys)
    check_day_follower(day, released)


def _stream_with(day: Day, tmp_path: Path, ledger: list[bytes], diffs: list[bytes]) -> tuple[Path, DayFolder]:
    stream = tmp_path / day.folder.exchange / day.folder.symbol_fs
    return stream, empty_copy(day, stream, ledger, diffs)


def test_day_source_holds_rows_for_hold_s_from_their_arrival(recorded_data: Path, tmp_path: Path) -> None:
    day = load_day(recorded_data, "kraken")
    groups = _groups(day)
    half = len(day.diffs) // 2
    stream, folder = _stream_with(day, tmp_path, [*groups[0], *groups[1]], day.diffs[:half])
    events, diffs = day_files(day, folder.root)
    clock = Clock(0.0)
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()
    ledger_seq = day.seq_of_ledger(groups[1][-1])
    assert {it.kind for it in released} == {"event", "snapshot"}, "diffs past the ledger wait"
    assert all(it.seq <= ledger_seq for it in released)
    clock.t = 1.0
    gz_append(diffs, day.diffs[half:])
    assert source.poll() == []
    clock.t = 2.99
    assert source.poll() == []
    clock.t = 3.0
    first = source.poll()
    assert [it.line for it in first] == day.diffs[:half], "held since the start: released at hold_s"
    clock.t = 3.99
    assert source.poll() == []
    clock.t = 4.0
    second = source.poll()
    assert [it.line for it in second] == day.diffs[half:], "arrived at t=1: released at t=4"
    gz_append(events, [row for g in groups[2:] for row in g])
    clock.t = 4.5
    last = source.poll()
    assert last == [], "the closing rows wait for a later diff, which never comes ..."
    clock.t = 7.5
    last = source.poll()
    assert [it.rec["event"] for it in last] == [day.ledger[-k].decode().split(",")[4] for k in (3, 2, 1)]
    released += first + second + last
    assert [ident(it) for it in released] == [ident(it) for it in day_items(folder.root)]
    check_day_follower(day, released)


def test_day_source_start_with_a_monotonic_clock_waits_for_the_ledger(
    recorded_data: Path, tmp_path: Path
) -> None:
    day = load_day(recorded_data, "kraken")
    groups = _groups(day)
    stream, folder = _stream_with(day, tmp_path, groups[0], day.diffs)  # ledger behind the diffs
    events, _ = day_files(day, folder.root)
    clock = Clock(10_000.0)  # time.monotonic() on a machine up for a few hours
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()
    gz_append(events, [row for g in groups[1:] for row in g])
    clock.t += 0.1
    released += source.poll()
    clock.t += 10
    released += source.poll()
    assert [ident(it) for it in released] == [ident(it) for it in day_items(folder.root)]


def test_day_source_keeps_ledger_rows_of_a_seq_split_over_two_members(
    recorded_data: Path, tmp_path: Path
) -> None:
    day = load_day(recorded_data, "kraken")
    zero = _groups(day)[0]
    assert [r.decode().split(",")[4] for r in zero] == ["run_start", "ws_open", "instrument", "state_change"]
    stream, folder = _stream_with(day, tmp_path, zero[:2], day.diffs[:5])
    events, diffs = day_files(day, folder.root)
    clock = Clock()
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()  # run_start, ws_open: the diffs file shows a later row
    gz_append(events, zero[2:] + [row for g in _groups(day)[1:] for row in g])
    gz_append(diffs, day.diffs[5:])
    released += source.poll()
    clock.t = 5.0
    released += source.poll()
    assert [ident(it) for it in released] == [ident(it) for it in day_items(folder.root)]


def _synthetic_binance_day(stream: Path) -> tuple[DayFolder, list[bytes], bytes, list[bytes]]:
    """A hand-written Binance day: three diffs buffered before a REST snapshot whose
    lastUpdateId falls inside the third (the venue's usual answer), then more diffs."""
    day = stream / "20261121"
    (day / "snapshots").mkdir(parents=True)
    (day / "snapshots" / "snapshot_3_initial.csv").write_text(
        "side,level,price,qty\nbid,1,100.00,1.000\nbid,2,99.00,2.000\nask,1,101.00,1.500\nask,2,102.00,3.000\n"
    )
    run = "20261121T000000Z-1"
    info = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "levels": 2,
        "book_depth": 100,
        "store_depth_diffs": True,
    }

    def row(
        eid: int,
        seq: int,
        event: str,
        *,
        tag: str = "",
        state: str = "",
        reason: str = "",
        snap: str = "",
        details: dict[str, Any] | None = None,
    ) -> bytes:
        text = orjson.dumps(details).decode() if details else ""
        t_ns = 10**18 + 100 * seq + eid  # after diff ``seq`` (10**18 + 100 * seq)
        return csv_row([eid, t_ns, run, seq, event, tag, state, reason, snap, text]).rstrip(b"\n")

    ledger = [
        row(1, 0, "run_start", state="CONNECTING", details=info),
        row(
            2,
            1,
            "state_change",
            state="SNAPSHOT",
            reason="first diff buffered",
            details={"from": "CONNECTING"},
        ),
        row(
            3,
            4,
            "snapshot",
            tag="initial",
            state="SYNCING",
            reason="rest",
            snap="snapshots/snapshot_3_initial.csv",
            details={"source": "rest", "levels": [2, 2], "update_id": 112},
        ),
        row(4, 4, "state_change", state="SYNCING", reason="snapshot applied"),
        row(5, 4, "state_change", state="SYNCED", reason="first diff bridged the snapshot"),
        row(6, 8, "state_change", state="STOPPED", reason="shutdown"),
        row(7, 8, "run_stop", state="STOPPED"),
    ]
    diffs = []
    for seq, (first, last), bids, asks in [
        (1, (100, 105), [["99.00", "0.500"]], []),
        (2, (106, 110), [], [["103.00", "1.000"]]),
        (3, (111, 115), [["100.50", "0.250"]], [["102.00", "0"]]),
        (5, (116, 118), [], [["101.00", "2.000"]]),
        (6, (119, 120), [["100.50", "0"]], []),
        (7, (121, 125), [["98.00", "4.000"]], [["104.00", "1.000"]]),
    ]:
        diffs.append(
            orjson.dumps(
                {
                    "recv_seq": seq,
                    "recv_time_ns": 10**18 + 100 * seq,
                    "exchange": "binance",
                    "symbol": "BTCUSDT",
                    "kind": "diff",
                    "event_time_ms": None,
                    "first_id": first,
                    "last_id": last,
                    "checksum": None,
                    "seq": None,
                    "bids": bids,
                    "asks": asks,
                    "raw": "",
                }
            )
        )
    header = b"event_id,recv_time_ns,run_id,recv_seq,event,tag,state,reason,snapshot_file,details"
    gz_append(day / "events_BTCUSDT_20261121.csv.gz", [header, *ledger])
    (day / "diffs").mkdir()
    folder = open_day_folder(day)
    return folder, ledger, header, diffs


def test_synthetic_binance_day_replays(tmp_path: Path) -> None:
    """Control for the next test: BookReplay and a follower over day_items agree (SYNCED)."""
    stream = tmp_path / "binance" / "BTCUSDT"
    folder, _ledger, _header, diffs = _synthetic_binance_day(stream)
    gz_append(folder.layout.diffs, diffs)
    follower = BookFollower("binance", "BTCUSDT", folder.depth)
    view = None
    for item in day_items(folder.root):
        if item.kind == "event" and item.rec["event"] == "state_change" and item.rec["state"] == "STOPPED":
            view = follower.view()
        follower.apply(item)
    replay, state = tf.replay_before_stop(open_day_folder(folder.root))
    assert state is SyncState.SYNCED and view is not None and view["state"] == "SYNCED"
    assert [tuple(lv) for lv in view["bids"]] == replay.engine.book.top()[0]
    assert [tuple(lv) for lv in view["asks"]] == replay.engine.book.top()[1]
    assert replay.problems == []


def test_day_source_snapshot_waits_for_the_diffs_before_it(tmp_path: Path) -> None:
    stream = tmp_path / "binance" / "BTCUSDT"
    folder, _ledger, _header, diffs = _synthetic_binance_day(stream)
    gz_append(folder.layout.diffs, diffs[:2])  # diff 3 (the one bridging the snapshot) not flushed yet
    clock = Clock()
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()
    gz_append(folder.layout.diffs, diffs[2:])
    released += source.poll()
    clock.t = 5.0
    released += source.poll()
    assert [ident(it) for it in released] == [ident(it) for it in day_items(folder.root)]


def _two_days(day: Day, stream: Path, staging: Path, *, a_ledger_upto: int | None = None) -> Path:
    """Day A (the recorded label, in ``stream``) with the rows up to its 26th diff; day B (the
    next date, in ``staging``) from a window_start at the 11th diff on: the two overlap."""
    seqs = [it.seq for it in map(item_from_line, day.diffs) if it is not None]
    m, m2 = seqs[10], seqs[25]
    a_cap = m2 if a_ledger_upto is None else a_ledger_upto
    empty_copy(
        day,
        stream,
        [r for r in day.ledger if day.seq_of_ledger(r) <= a_cap],
        [line for line, s in zip(day.diffs, seqs, strict=True) if s <= m2],
    )
    label = (day.folder.day + timedelta(days=1)).strftime("%Y%m%d")
    b = staging / label
    (b / "diffs").mkdir(parents=True)
    fs = day.folder.symbol_fs
    first = next(csv.reader([day.ledger[0].decode()]))
    assert first[4] == "run_start"
    first[0], first[3], first[4] = "100000", str(m), "window_start"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(first)
    b_ledger = [buf.getvalue().encode(), *(r for r in day.ledger if day.seq_of_ledger(r) > m)]
    gz_append(b / f"events_{fs}_{label}.csv.gz", [day.header, *b_ledger])
    b_diffs = [line for line, s in zip(day.diffs, seqs, strict=True) if s > m]
    gz_append(b / "diffs" / f"depth_diffs_{fs}_{label}.ndjson.gz", b_diffs)
    return b


def test_day_source_rolls_over_to_a_newer_day_without_repeating_rows(
    recorded_data: Path, tmp_path: Path
) -> None:
    day = load_day(recorded_data, "kraken")
    stream = tmp_path / "kraken" / "BTCUSD"
    b = _two_days(day, stream, tmp_path / "staging")
    clock = Clock()
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()
    clock.t = 5.0
    released += source.poll()
    assert source.tail_events() == [] and source.day_label == day.folder.label
    n_a = len(released)
    shutil.copytree(b, stream / b.name)
    clock.t = 6.5
    released += source.poll()  # the new day is seen; the old one is read on for the grace period
    assert source.tail_events() == [] and source.day_label == day.folder.label
    clock.t = 6.5 + ROLLOVER_GRACE_S * 1.3
    released += source.poll()
    assert [e.kind for e in source.tail_events()] == ["day_rollover"]
    assert source.day_label == b.name
    clock.t = 30.0
    released += source.poll()
    assert len(released) > n_a, "rows continue from the new day"
    assert [ident(it) for it in released] == book_rows(day.folder)
    check_day_follower(day, released)


def test_day_source_rollover_with_rows_still_held(recorded_data: Path, tmp_path: Path) -> None:
    day = load_day(recorded_data, "kraken")
    stream = tmp_path / "kraken" / "BTCUSD"
    b = _two_days(day, stream, tmp_path / "staging", a_ledger_upto=1)  # A's ledger lags behind
    clock = Clock()
    source = DaySource(stream, hold_s=3.0, clock=clock)
    released = source.start()
    shutil.copytree(b, stream / b.name)
    clock.t = 1.5
    released += source.poll()
    clock.t = 1.5 + ROLLOVER_GRACE_S * 1.3
    released += source.poll()
    assert [e.kind for e in source.tail_events()] == ["day_rollover"]
    clock.t = 30.0
    released += source.poll()
    data_rows = [(it.kind, it.seq) for it in released if it.kind != "event"]
    assert len(data_rows) == len(set(data_rows)), "no diff released twice"


def test_day_source_start_on_a_finished_day_follows_from_its_last_reset(rich_data: Path) -> None:
    for exchange in tf.EXCHANGES:
        day = load_day(rich_data, exchange)
        source = DaySource(day.folder.root.parent, clock=Clock(0.0))
        items = source.start()
        source.close()
        assert items, exchange
        first_snapshot = next(it.seq for it in items if it.kind == "snapshot")
        follower = BookFollower(day.folder.exchange, day.folder.symbol, day.folder.depth)
        check_follower_on(day.case, follower, items, after=first_snapshot - 1)
        keys = [it.key for it in items]
        assert keys == sorted(keys)
        everything = [ident(it) for it in day_items(day.folder.root)]
        assert set(map(ident, items)) <= set(everything)


def test_day_source_without_a_day_folder_raises(tmp_path: Path) -> None:
    from mmdata.errors import StoreError

    with pytest.raises(StoreError):
        DaySource(tmp_path).start()
    assert DaySource(tmp_path).poll() == []


# -- day_items and ledger_item ----------------------------------------------------------------------


def _direct_rows(folder: DayFolder) -> list[tuple[str, int, Any]]:
    """A day folder's rows read straight from its files, in merge order."""
    ledger: list[tuple[tuple[int, int], str, int, Any]] = []
    text = gzip.decompress(folder.layout.events.read_bytes()).decode()
    for row in csv.DictReader(io.StringIO(text)):
        seq = int(row["recv_seq"])
        details = orjson.loads(row["details"]) if row["details"] else {}
        if row["event"] == "snapshot":
            with open(folder.root / row["snapshot_file"], encoding="utf-8", newline="") as f:
                levels = list(csv.DictReader(f))
            bids = [[r["price"], r["qty"]] for r in levels if r["side"] == "bid"]
            asks = [[r["price"], r["qty"]] for r in levels if r["side"] == "ask"]
            snap = (row["tag"], details.get("update_id"), details.get("checksum"), bids, asks)
            ledger.append(((seq, 0), "snapshot", seq, snap))
        event = (int(row["event_id"]), row["run_id"], row["event"], row["tag"], row["state"], row["reason"])
        ledger.append(((seq, 1), "event", seq, (*event, details)))
    rows: list[tuple[tuple[int, int], str, int, Any]] = []
    for path, kind in ((folder.layout.diffs, None), (folder.layout.trades_raw, "trade")):
        for line in gz_lines(path):
            rec = orjson.loads(line)
            rows.append(((rec["recv_seq"], 0), kind or rec["kind"], rec["recv_seq"], line))
    merged = sorted(ledger + rows, key=lambda r: r[0])  # stable: ledger first on equal keys
    return [(kind, seq, what) for _key, kind, seq, what in merged]


def _as_direct(item: Item) -> tuple[str, int, Any]:
    rec = item.rec
    if item.kind == "snapshot":
        return "snapshot", item.seq, (rec["tag"], rec["update_id"], rec["checksum"], rec["bids"], rec["asks"])
    if item.kind == "event":
        event = (rec["event_id"], rec["run_id"], rec["event"], rec["tag"], rec["state"], rec["reason"])
        return "event", item.seq, (*event, rec["details"])
    assert rec == orjson.loads(item.line)
    return item.kind, item.seq, item.line


@pytest.mark.parametrize("exchange", tf.EXCHANGES)
def test_day_items_are_the_files_rows_in_merge_order(data_root: Path, exchange: str) -> None:
    folder = open_day_folder(only_day(data_root, exchange, tf.stream_dir(data_root, exchange).name))
    items = list(day_items(folder.root))
    assert [_as_direct(it) for it in items] == _direct_rows(folder)
    assert {it.kind for it in items} >= {"diff", "trade", "event", "snapshot"}
    for item in items:
        assert item.rec["exchange"] == folder.exchange and item.rec["symbol"] == folder.symbol


def test_day_items_never_reads_a_snapshot_file_outside_snapshots(recorded_data: Path, tmp_path: Path) -> None:
    day = load_day(recorded_data, "kraken")
    stream = tmp_path / "data" / "kraken" / "BTCUSD"
    shutil.copytree(day.folder.root, stream / day.folder.label)
    folder = open_day_folder(stream / day.folder.label)
    legit = next(r["snapshot_file"] for r in folder.ledger if r["event"] == "snapshot")
    assert legit.startswith("snapshots/snapshot_") and (folder.root / legit).is_file()
    secret = tmp_path / "secret.csv"  # a readable snapshot-shaped file outside the day folder
    secret.write_text("side,level,price,qty\nbid,1,1,1\nask,1,2,2\n")
    (folder.root / "snapshots" / "sub").mkdir()
    shutil.copy(secret, folder.root / "snapshots" / "sub" / "snapshot_1_x.csv")
    hostile = [
        "../secret.csv",
        "../../../../secret.csv",
        str(secret),
        "/etc/passwd",
        "../../etc/passwd",
        "snapshots/../../../../secret.csv",
        "snapshots/snapshot_1_x.csv/../../../../../secret.csv",
        "snapshots/sub/snapshot_1_x.csv",
        f"./{legit}",
        "snapshots\\..\\..\\secret.csv",
        "",
    ]
    rows = []
    for i, name in enumerate([*hostile, legit]):
        fields = [
            9000 + i,
            10**18,
            "r",
            10_000 + i,
            "snapshot",
            "resync_done",
            "SYNCED",
            "ws",
            name,
            '{"source":"ws","checksum":1}',
        ]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(fields)
        rows.append(buf.getvalue().encode())
    gz_append(folder.layout.events, rows)
    late = [it for it in day_items(folder.root) if it.seq >= 10_000]
    events = [it for it in late if it.kind == "event"]
    assert [it.rec["event"] for it in events] == ["snapshot"] * len(rows)
    snaps = [it for it in late if it.kind == "snapshot"]
    assert [it.seq for it in snaps] == [10_000 + len(hostile)], "only the snapshots/ file is read"
    with open(folder.root / legit, encoding="utf-8", newline="") as f:
        bids = [[r["price"], r["qty"]] for r in csv.DictReader(f) if r["side"] == "bid"]
    assert snaps[0].rec["bids"] == bids
    for line in rows:
        got = ledger_item(folder, line)
        named = next(csv.reader([line.decode()]))[8]
        assert [it.kind for it in got] == (["snapshot", "event"] if named == legit else ["event"])


def test_ledger_item_rejects_rows_that_are_not_ledger_rows(recorded_data: Path) -> None:
    day = load_day(recorded_data, "kraken")
    folder = day.folder
    assert ledger_item(folder, day.header) == []
    good = day.ledger[1]
    (item,) = ledger_item(folder, good)
    assert (
        item.kind == "event"
        and item.key == (item.seq, 1, item.rec["event_id"])
        and orjson.loads(item.line) == item.rec
    )
    fields = next(csv.reader([good.decode()]))

    def line(**change: str) -> bytes:
        row = dict(zip(range(10), fields, strict=True))
        for k, v in change.items():
            row[int(k[1:])] = v
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(list(row.values()))
        return buf.getvalue().encode()

    assert ledger_item(folder, line(c3="x")) == []
    assert ledger_item(folder, line(c1="")) == []
    assert ledger_item(folder, line(c0="1.5")) == []
    assert ledger_item(folder, line(c9="{not json")) == []
    assert ledger_item(folder, good + b",extra") == []
    assert ledger_item(folder, b"\xff\xfe") == []
    assert ledger_item(folder, b"") == []
    (listy,) = ledger_item(folder, line(c9="[1,2]"))
    assert listy.rec["details"] == {}


# -- newest_day ----------------------------------------------------------------------------------------


def _ledgered(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / f"events_X_{path.name}.csv.gz").write_bytes(gzip.compress(b"event_id\n"))
    return path


def test_newest_day_ignores_non_day_folders_and_folders_without_a_ledger(tmp_path: Path) -> None:
    stream = tmp_path / "kraken" / "BTCUSD"
    assert newest_day(stream) is None, "no stream folder yet"
    stream.mkdir(parents=True)
    assert newest_day(stream) is None
    _ledgered(stream / "20261119")
    best = _ledgered(stream / "20261120")
    (stream / "20261121" / "diffs").mkdir(parents=True)  # a day without its ledger yet
    (stream / "20261121" / "diffs" / "depth_diffs_X_20261121.ndjson.gz").write_bytes(b"")
    for name in ("2026112", "202611220", "notaday", "20261123.old", "x20261124", "live", "2026-11-25"):
        _ledgered(stream / name)
    (stream / "20261126").write_bytes(b"a file, not a folder")
    (stream / "20261127").mkdir()
    assert newest_day(stream) == best
    (stream / "20261121" / "events_X_20261121.csv.gz").write_bytes(b"")
    assert newest_day(stream) == stream / "20261121", "a ledger (even empty yet) makes it a day"
    (tmp_path / "file").write_bytes(b"")
    assert newest_day(tmp_path / "file") is None


@pytest.mark.parametrize("name", ["99999999", "20261399", "２０２６１１３０", "20261130\n"])
def test_newest_day_ignores_eight_digit_names_that_are_no_date(tmp_path: Path, name: str) -> None:
    stream = tmp_path / "kraken" / "BTCUSD"
    best = _ledgered(stream / "20261121")
    _ledgered(stream / name)
    assert newest_day(stream) == best
