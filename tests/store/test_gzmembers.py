"""Crash-safe gzip members: flushes end complete members; damaged tails are moved aside, never lost."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmdata.store.gzmembers import MemberWriter, last_lines, repair_tail, scan_members


def _rows(start: int, n: int) -> bytes:
    return b"".join(f"{i},61837.63000000,0.00100000\n".encode() for i in range(start, start + n))


def test_each_flush_is_a_member_and_the_file_reads_as_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with MemberWriter(path) as w:
        for k in range(5):
            w.write(_rows(k * 100, 100))
            w.flush()
        w.flush()  # nothing buffered: no empty member
    assert scan_members(path).members == 5 and scan_members(path).ok
    assert gzip.decompress(path.read_bytes()) == _rows(0, 500)
    assert subprocess.run(["gzip", "-t", str(path)], check=False).returncode == 0


def test_reopen_appends(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with MemberWriter(path) as w:
        w.write(_rows(0, 10))
    with MemberWriter(path) as w:
        w.write(_rows(10, 10))
    assert gzip.decompress(path.read_bytes()) == _rows(0, 20)


@pytest.mark.parametrize("cut", [1, 10, 50, 200])
def test_cut_short_tail_moved_aside(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "t.csv.gz"
    with MemberWriter(path) as w:
        w.write(_rows(0, 300))
        w.flush()
        first_member_end = path.stat().st_size
        w.write(_rows(300, 300))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])  # the kill came in the middle of the second member
    report = scan_members(path)
    assert not report.ok and report.members == 1 and report.good_end == first_member_end
    sidecar = repair_tail(path)
    assert sidecar is not None and sidecar.name == "t.csv.gz.damaged-1"
    assert sidecar.read_bytes() == data[first_member_end : len(data) - cut]  # kept, not deleted
    assert gzip.decompress(path.read_bytes()) == _rows(0, 300)
    assert repair_tail(path) is None  # now intact
    with MemberWriter(path) as w:  # and appending resumes cleanly
        w.write(_rows(600, 5))
    assert gzip.decompress(path.read_bytes()) == _rows(0, 300) + _rows(600, 5)


def test_corrupt_bytes_inside_a_member(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    with MemberWriter(path) as w:
        for k in range(3):
            w.write(_rows(k * 100, 100))
            w.flush()
            if k == 0:
                second = path.stat().st_size
    data = bytearray(path.read_bytes())
    data[second + 30 : second + 40] = b"\xff" * 10
    path.write_bytes(bytes(data))
    sidecar = repair_tail(path)
    assert sidecar is not None
    assert gzip.decompress(path.read_bytes()) == _rows(0, 100)
    assert path.stat().st_size + sidecar.stat().st_size == len(data)  # every byte is somewhere


def test_second_repair_gets_its_own_sidecar(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    for _ in range(2):
        with MemberWriter(path) as w:
            w.write(_rows(0, 50))
        path.write_bytes(path.read_bytes() + b"\x1f\x8b\x08junk")
        repair_tail(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t.csv.gz",
        "t.csv.gz.damaged-1",
        "t.csv.gz.damaged-2",
    ]


def test_kill_9_while_writing_loses_at_most_the_unflushed_buffer(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    script = (
        "import sys, itertools\n"
        "from mmdata.store.gzmembers import MemberWriter\n"
        "w = MemberWriter(sys.argv[1], level=1)\n"
        "for k in itertools.count():\n"
        "    w.write(b''.join(b'%d,61837.63,0.001\\n' % (k * 1000 + i) for i in range(1000)))\n"
        "    w.flush()\n"
        "    if k == 5: print('flushing', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    repair_tail(path)
    rows = gzip.decompress(path.read_bytes()).splitlines()
    assert len(rows) >= 6000 and len(rows) % 1000 == 0  # whole flushes only, none torn
    assert [int(r.split(b",")[0]) for r in rows] == list(range(len(rows)))


def _members(path: Path, sizes: list[int], *, level: int = 6) -> list[int]:
    """Write one member per entry of ``sizes`` (rows numbered on); return each member's start offset."""
    starts = []
    k = 0
    with MemberWriter(path, level=level) as w:
        for n in sizes:
            starts.append(path.stat().st_size)
            w.write(_rows(k, n))
            w.flush()
            k += n
    return starts


def _line(i: int) -> bytes:
    return f"{i},61837.63000000,0.00100000".encode()


def test_scan_reports_where_the_last_complete_member_starts(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    path.write_bytes(b"")
    assert scan_members(path).last_member_start is None
    starts = _members(path, [10, 20, 30])
    report = scan_members(path)
    assert report.ok and report.members == 3 and report.last_member_start == starts[2]
    path.write_bytes(path.read_bytes()[:-5])  # last member cut short: the second is the last complete one
    report = scan_members(path)
    assert not report.ok and report.last_member_start == starts[1] and report.good_end == starts[2]


def test_last_lines_of_a_multi_member_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    _members(path, [10, 3, 5])
    assert last_lines(path) == [_line(17)]
    assert last_lines(path, 5) == [_line(i) for i in range(13, 18)]
    assert last_lines(path, 7) == [_line(i) for i in range(11, 18)]  # spans members, oldest first
    assert last_lines(path, 100) == [_line(i) for i in range(18)]  # fewer lines in the file than asked
    assert last_lines(path, 0) == []


def test_last_lines_of_absent_and_empty_files(tmp_path: Path) -> None:
    assert last_lines(tmp_path / "absent.csv.gz") == []
    (tmp_path / "empty.csv.gz").write_bytes(b"")
    assert last_lines(tmp_path / "empty.csv.gz", 3) == []
    (tmp_path / "junk.csv.gz").write_bytes(b"\x1f\x8b\x08 not gzip at all")
    assert last_lines(tmp_path / "junk.csv.gz") == []


@pytest.mark.parametrize("cut", [1, 10, 30])
def test_last_lines_ignores_a_damaged_tail(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "t.csv.gz"
    _members(path, [10, 10, 10])
    path.write_bytes(path.read_bytes()[:-cut])
    assert last_lines(path) == [_line(19)]
    assert last_lines(path, 12) == [_line(i) for i in range(8, 20)]
    path.write_bytes(path.read_bytes() + b"\x1f")  # a member cut inside its magic
    assert last_lines(path) == [_line(19)]


def test_last_lines_of_a_member_larger_than_a_read_block(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    _members(path, [5, 20_000], level=0)  # stored blocks: the last member is ~600 KB on disk
    assert path.stat().st_size > 8 * 65536
    assert last_lines(path, 2) == [_line(20_003), _line(20_004)]
    assert last_lines(path, 20_002)[:3] == [_line(3), _line(4), _line(5)]


def test_last_lines_is_not_fooled_by_a_gzip_file_stored_inside_a_member(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    fake = gzip.compress(b"fake,1\n", mtime=0)
    assert b"\n" not in fake and b"\r" not in fake
    with MemberWriter(path, level=0) as w:  # level 0 stores the row verbatim: a complete member inside one
        w.write(b"first\n")
        w.flush()
        w.write(b"a," + fake + b"\nlast\n")
    assert last_lines(path) == [b"last"]
    assert last_lines(path, 3) == [b"first", b"a," + fake, b"last"]


def test_last_lines_of_an_intact_file_reads_only_the_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mmdata.store import gzmembers

    path = tmp_path / "t.csv.gz"
    _members(path, [1000] * 50)

    def no_full_scan(path: object) -> None:
        raise AssertionError("full scan on an intact file")

    monkeypatch.setattr(gzmembers, "scan_members", no_full_scan)
    assert last_lines(path, 2) == [_line(49_998), _line(49_999)]
