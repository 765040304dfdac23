"""Following files a recorder writes: gzip day files member by member, live files across rotation."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from mmdata.store.gzmembers import repair_tail
from mmdata.store.tail import GzipTail, LiveTail
from mmdata.store.writers import RowWriter


def rows(a: int, b: int) -> list[bytes]:
    return [b"%d,row %d" % (i, i) for i in range(a, b)]


def write_rows(writer: RowWriter, lines: list[bytes]) -> None:
    writer.write_many(b"".join(line + b"\n" for line in lines), len(lines))
    writer.flush()


def test_gzip_tail_returns_each_complete_member_once(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    writer = RowWriter(path, header="seq,text")
    tail = GzipTail(path)
    seen: list[bytes] = []
    for k in range(5):
        write_rows(writer, rows(k * 100, k * 100 + 100))
        seen += tail.poll()
        assert tail.offset == path.stat().st_size, "the offset is at the end of the last complete member"
    assert seen == [b"seq,text", *rows(0, 500)]
    assert tail.poll() == [] and tail.events == []
    writer.close()


def test_gzip_tail_never_returns_half_a_member(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson.gz"
    path.write_bytes(gzip.compress(b"a\nb\n"))
    tail = GzipTail(path)
    assert tail.poll() == [b"a", b"b"]
    member = gzip.compress(b"c\nd\n" * 50)
    with open(path, "ab") as f:
        f.write(member[:20])  # a writer mid-write (or a crash)
    before = tail.offset
    assert tail.poll() == [] and tail.offset == before
    with open(path, "ab") as f:
        f.write(member[20:])
    assert tail.poll() == [b"c", b"d"] * 50
    assert tail.offset == path.stat().st_size


def test_gzip_tail_survives_a_restart_repair(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    writer = RowWriter(path, header="seq,text")
    write_rows(writer, rows(0, 10))
    writer.close()
    tail = GzipTail(path)
    assert tail.poll()[1:] == rows(0, 10)
    torn = gzip.compress(b"never,complete\n" * 40)
    with open(path, "ab") as f:
        f.write(torn[: len(torn) // 2])
    assert tail.poll() == []
    assert repair_tail(path) is not None  # what a restarted recorder does first
    writer = RowWriter(path, header="seq,text")
    write_rows(writer, rows(10, 20))
    writer.close()
    assert tail.poll() == rows(10, 20), "only the new rows, none of the torn ones"
    assert not [e for e in tail.events if e.kind == "reset"]


def test_gzip_tail_reports_garbage_once_and_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson.gz"
    path.write_bytes(gzip.compress(b"x\n"))
    tail = GzipTail(path)
    assert tail.poll() == [b"x"]
    with open(path, "ab") as f:
        f.write(b"this is not gzip at all" * 10)
    assert tail.poll() == [] and tail.poll() == []
    assert [e.kind for e in tail.events] == ["damaged"]
    new = tmp_path / "new.gz"
    new.write_bytes(gzip.compress(b"y\nz\n"))
    os.replace(new, path)
    assert tail.poll() == [b"y", b"z"]
    assert tail.events[-1].kind == "reset"


def test_gzip_tail_at_end_and_in_small_reads(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson.gz"
    with open(path, "wb") as f:
        for k in range(30):
            f.write(gzip.compress(b"\n".join(rows(k * 50, k * 50 + 50)) + b"\n"))
    late = GzipTail(path, at_end=True)
    assert late.offset == path.stat().st_size and late.poll() == []
    small = GzipTail(path, max_read=1000)  # less than one member: it must grow, not stall
    got: list[bytes] = []
    for _ in range(100):
        got += small.poll()
    assert got == rows(0, 1500)
    with open(path, "ab") as f:
        f.write(gzip.compress(b"new\n"))
    assert late.poll() == [b"new"]


def test_live_tail_follows_rotation_without_loss_or_repeat(tmp_path: Path) -> None:
    path = tmp_path / "live_depth_diffs.ndjson"
    path.write_bytes(b"")
    tail = LiveTail(path, from_start=True)
    out: list[bytes] = []
    with open(path, "ab", buffering=0) as f:
        f.write(b"1\n2\n3")  # "3" is mid-write
        out += tail.poll()
        assert out == [b"1", b"2"]
        f.write(b"\n4\n")
    # Rotation by rename, then a new file: lines 5.. go there.
    os.rename(path, tmp_path / "live_depth_diffs.20261121T120000.ndjson")
    with open(path, "ab", buffering=0) as f:
        f.write(b"5\n6\n")
    out += tail.poll()
    assert out == [b"1", b"2", b"3", b"4", b"5", b"6"]
    assert tail.rotations == 1 and [e.kind for e in tail.events] == ["rotated"]
    with open(path, "ab", buffering=0) as f:
        f.write(b"7\n")
    assert tail.poll() == [b"7"]
    tail.close()


def test_live_tail_from_the_end_starts_at_the_next_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "live_trades.ndjson"
    path.write_bytes(b'{"old":1}\n{"half')
    tail = LiveTail(path)
    assert tail.poll() == []
    with open(path, "ab") as f:
        f.write(b'":2}\n{"new":3}\n')
    assert tail.poll() == [b'{"new":3}']
    tail.close()


def test_live_tail_waits_for_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "live_trades.ndjson"
    tail = LiveTail(path)
    assert tail.poll() == []
    path.write_bytes(b"a\nb\n")
    assert tail.poll() == [b"a", b"b"], "a file created later is new from its first line"
    tail.close()


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_live_tail_any_write_split(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "live.ndjson"
    path.write_bytes(b"")
    tail = LiveTail(path, from_start=True)
    data = b"".join(b'{"i":%d}\n' % i for i in range(300))
    got: list[bytes] = []
    with open(path, "ab", buffering=0) as f:
        for i in range(0, len(data), chunk):
            f.write(data[i : i + chunk])
            got += tail.poll()
    assert got == data.splitlines()
    tail.close()


def test_live_tail_after_close_returns_nothing(tmp_path: Path) -> None:
    path = tmp_path / "live.ndjson"
    path.write_bytes(b"a\n")
    tail = LiveTail(path, from_start=True)
    assert tail.poll() == [b"a"]
    tail.close()
    with open(path, "ab") as f:
        f.write(b"b\n")
    assert tail.poll() == [], "closed means stopped, not started over from the top"


def test_gzip_tail_at_end_still_reports_damage_found_while_skipping(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson.gz"
    path.write_bytes(gzip.compress(b"x\n") + b"garbage, not gzip" * 5)
    tail = GzipTail(path, at_end=True)
    assert tail.poll() == []
    assert [e.kind for e in tail.events] == ["damaged"]
