"""Row writers: rows → crash-safe gzip members (flush by count / interval), and the rotated live feed."""

from __future__ import annotations

import csv
import gzip
import io
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mmdata.errors import StoreError
from mmdata.store.gzmembers import scan_members
from mmdata.store.writers import LiveFile, RowWriter, csv_field, csv_row


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _row(i: int) -> bytes:
    return csv_row([i, "61837.63", None])


def _read(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as f:
        return f.read().splitlines()


# -- csv ---------------------------------------------------------------------------------------


def test_csv_field_quotes_only_when_needed() -> None:
    assert csv_field(None) == ""
    assert csv_field(42) == "42"
    assert csv_field(-7) == "-7"
    assert csv_field(2.5) == "2.5"
    assert csv_field("plain text") == "plain text"
    assert csv_field("a,b") == '"a,b"'
    assert csv_field('say "hi"') == '"say ""hi"""'
    assert csv_field("two\nlines") == '"two\nlines"'
    assert csv_field("cr\r") == '"cr\r"'
    assert csv_row([1, None, "a,b", "µ"]) == '1,,"a,b",µ\n'.encode()


@given(st.lists(st.text(), min_size=2, max_size=6))
def test_csv_row_round_trips_through_the_csv_module(fields: list[str]) -> None:
    # (min_size=2: a one-field row holding "" is an empty line, which CSV cannot tell from no row)
    text = csv_row(fields).decode()
    assert list(csv.reader(io.StringIO(text, newline=""))) == [fields]


# -- RowWriter ---------------------------------------------------------------------------------


def test_rows_round_trip_via_gzip_and_zcat(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv.gz"
    with RowWriter(path, header="id,price,qty", buffer_rows=7) as w:
        for i in range(50):
            w.write(_row(i))
    expected = [b"id,price,qty"] + [_row(i).rstrip(b"\n") for i in range(50)]
    assert _read(path) == expected
    zcat = shutil.which("zcat")
    if zcat is None:
        pytest.skip("zcat not installed")
    out = subprocess.run([zcat, str(path)], check=True, capture_output=True).stdout
    assert out.splitlines() == expected


def test_one_member_per_flush(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    w = RowWriter(path, buffer_rows=10_000)
    for k in range(3):
        w.write_many(b"".join(_row(k * 10 + i) for i in range(10)), 10)
        assert w.pending_rows == 10
        w.flush()
        assert w.pending_rows == 0 and w.rows_written == (k + 1) * 10
    w.flush()  # nothing buffered: no empty member
    w.close()
    report = scan_members(path)
    assert report.ok and report.members == 3
    assert _read(path) == [_row(i).rstrip(b"\n") for i in range(30)]


def test_flush_by_row_count(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    w = RowWriter(path, buffer_rows=10)
    for i in range(25):
        w.write(_row(i))
    assert scan_members(path).members == 2
    assert (w.rows_written, w.pending_rows) == (20, 5)
    w.write_many(_row(25) + _row(26) + _row(27) + _row(28) + _row(29), 5)  # reaches 10 again
    assert (scan_members(path).members, w.rows_written, w.pending_rows) == (3, 30, 0)
    w.close()


def test_flush_by_interval_with_an_injected_clock(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    clock = FakeClock()
    w = RowWriter(path, buffer_rows=1000, flush_interval_s=1.0, clock=clock)
    assert not w.maybe_flush()  # nothing buffered
    w.write(_row(0))
    clock.now += 0.999
    assert not w.maybe_flush() and w.pending_rows == 1
    clock.now += 0.001
    assert w.maybe_flush() and w.rows_written == 1 and scan_members(path).members == 1
    clock.now += 5.0
    assert not w.maybe_flush()  # interval passed but the buffer is empty
    w.write(_row(1))
    assert w.maybe_flush()  # more than an interval since the last flush
    w.write(_row(2))
    clock.now += 0.5
    assert not w.maybe_flush()  # the interval restarts at each flush
    w.close()
    assert not w.maybe_flush()
    assert _read(path) == [_row(i).rstrip(b"\n") for i in range(3)]


def test_header_only_once_and_resumed_last_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    w = RowWriter(path, header="id,price,qty")
    assert w.resumed_last_line is None and w.repaired is None
    w.close()
    assert _read(path) == [b"id,price,qty"]  # a file with no rows still has its header
    w = RowWriter(path, header="id,price,qty")
    assert w.resumed_last_line is None  # only the header: no data row to resume from
    w.write(_row(0))
    w.write(_row(1))
    w.close()
    w = RowWriter(path, header="id,price,qty")
    assert w.resumed_last_line == _row(1).rstrip(b"\n")
    w.write(_row(2))
    w.close()
    assert _read(path) == [b"id,price,qty"] + [_row(i).rstrip(b"\n") for i in range(3)]


def test_header_written_again_into_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(b"")
    with RowWriter(path, header="h") as w:
        assert w.resumed_last_line is None
        w.write(b"1\n")
    assert _read(path) == [b"h", b"1"]
    with pytest.raises(ValueError, match="newline"):
        RowWriter(tmp_path / "x.csv.gz", header="a\nb")


@pytest.mark.parametrize("cut", [1, 25])
def test_restart_after_a_truncated_tail(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "t.csv.gz"
    with RowWriter(path, header="id,price,qty", buffer_rows=10) as w:
        for i in range(20):
            w.write(_row(i))  # two members of 10 rows (the first one carries the header)
        w.flush()
    first_end = scan_members(path).last_member_start
    assert first_end is not None
    data = path.read_bytes()
    path.write_bytes(data[:-cut])  # killed while writing the second member
    w = RowWriter(path, header="id,price,qty")
    assert w.repaired is not None and w.repaired.exists()
    assert w.repaired.read_bytes() == data[first_end:-cut]  # the cut member's surviving prefix, kept
    assert w.resumed_last_line == _row(9).rstrip(b"\n")
    w.write(_row(100))
    w.close()
    assert _read(path) == [b"id,price,qty"] + [_row(i).rstrip(b"\n") for i in [*range(10), 100]]
    assert scan_members(path).ok


def test_closed_writer(tmp_path: Path) -> None:
    w = RowWriter(tmp_path / "t.csv.gz")
    w.write(_row(0))
    w.close()
    w.close()  # idempotent
    w.flush()  # no-op
    assert w.rows_written == 1
    with pytest.raises(StoreError):
        w.write(_row(1))
    with pytest.raises(StoreError):
        w.write_many(_row(1), 1)


def test_unwritable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        RowWriter(tmp_path / "file" / "t.csv.gz")
    assert info.value.path == str(tmp_path / "file" / "t.csv.gz")


class _FailingOnce:
    """Wraps a file; the first write fails like a full disk."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.failed = False

    def write(self, data: bytes) -> int:
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return self.inner.write(data)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_failed_flush_keeps_the_rows_for_the_next_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    w = RowWriter(path, buffer_rows=1000)
    w._writer._file = _FailingOnce(w._writer._file)  # type: ignore[assignment]
    w.write(_row(0))
    with pytest.raises(StoreError, match="No space"):
        w.flush()
    assert (w.rows_written, w.pending_rows) == (0, 1)
    w.write(_row(1))
    w.flush()
    assert (w.rows_written, w.pending_rows) == (2, 0)
    w.close()
    assert _read(path) == [_row(0).rstrip(b"\n"), _row(1).rstrip(b"\n")]


# -- LiveFile ----------------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


def test_live_rows_reach_the_file_on_flush(tmp_path: Path) -> None:
    live = LiveFile(tmp_path / "live", "btcusdt")
    assert live.current == tmp_path / "live" / "btcusdt.ndjson"
    live.write(b'{"a":1}\n')
    live.write(b'{"a":2}\n')
    assert live.current.read_bytes() == b""  # buffered in memory until flush
    live.flush()
    assert live.current.read_bytes() == b'{"a":1}\n{"a":2}\n'
    live.close()
    live.close()
    with pytest.raises(StoreError):
        live.write(b"{}\n")


def test_live_reopen_appends(tmp_path: Path) -> None:
    with LiveFile(tmp_path, "x") as live:
        live.write(b"1\n")
    with LiveFile(tmp_path, "x") as live:
        live.write(b"2\n")
    assert (tmp_path / "x.ndjson").read_bytes() == b"1\n2\n"


def test_live_rotation_by_rename(tmp_path: Path) -> None:
    wall = FakeClock(T0)
    live = LiveFile(tmp_path, "btcusdt", rotate_s=600, wall=wall)
    live.write(b"old\n")
    live.flush()
    inode = live.current.stat().st_ino
    wall.now += 599.9
    assert live.maybe_rotate() is None
    live.write(b"pending\n")
    wall.now += 0.1
    rotated = live.maybe_rotate()
    assert rotated == tmp_path / "btcusdt.20260101T001000.ndjson"
    assert rotated.read_bytes() == b"old\npending\n"  # flushed before the rename
    assert rotated.stat().st_ino == inode and live.current.stat().st_ino != inode
    assert live.current.read_bytes() == b""
    live.write(b"new\n")
    live.flush()
    assert live.current.read_bytes() == b"new\n"
    assert live.maybe_rotate() is None  # the clock restarted at the rotation
    live.close()
    assert live.maybe_rotate() is None


def test_live_rotated_names_are_unique(tmp_path: Path) -> None:
    wall = FakeClock(T0)
    live = LiveFile(tmp_path, "x", rotate_s=0, wall=wall)
    names = []
    for k in range(3):
        live.write(b"%d\n" % k)
        rotated = live.maybe_rotate()
        assert rotated is not None
        names.append(rotated.name)
    live.close()
    assert names == ["x.20260101T000000.ndjson", "x.20260101T000000-1.ndjson", "x.20260101T000000-2.ndjson"]
    assert [(tmp_path / n).read_bytes() for n in names] == [b"0\n", b"1\n", b"2\n"]


def test_live_retention_deletes_only_old_rotated_files_of_its_own_name(tmp_path: Path) -> None:
    keep = [
        "x.20251231T230000.ndjson",  # 1 h old at rotation: within retention
        "x.20251231T220000-1.ndjson",  # exactly 2 h old: not older than retention
        "y.20200101T000000.ndjson",  # another stream's
        "x-perp.20200101T000000.ndjson",  # another stream whose name starts the same
        "x.notes.ndjson",
        "x.20200101T000000.ndjson.gz",
        "x.20201399T000000.ndjson",  # digits that are no date
    ]
    gone = ["x.20251231T215959.ndjson", "x.20200101T000000-3.ndjson"]
    for name in keep + gone:
        (tmp_path / name).write_bytes(b"")
    wall = FakeClock(T0 - 600)
    live = LiveFile(tmp_path, "x", rotate_s=600, retention_s=7200, wall=wall)
    wall.now = T0
    rotated = live.maybe_rotate()
    live.close()
    assert rotated is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*keep, rotated.name, "x.ndjson"])


def test_live_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError) as info:
        LiveFile(tmp_path / "file", "x")
    assert info.value.path == str(tmp_path / "file")
    with pytest.raises(ValueError, match="name"):
        LiveFile(tmp_path, "a/b")
