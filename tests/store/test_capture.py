"""Capture reader/writer: round trips, gzip detection, damage reported not fatal."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mmdata.errors import CorruptFile, StoreError
from mmdata.store import CaptureWriter, open_capture
from mmdata.store.capture import gzip_lines


def _write(path: Path, n: int = 5) -> None:
    with CaptureWriter(path, "binance", ["BTCUSDT"], depth=10) as w:
        w.write("ws_open", "wss://x/stream", t=1)
        for i in range(n):
            w.write("ws_recv", "wss://x/stream", f'{{"i":{i},"txt":"0.10000000"}}', t=10 + i)
        w.write("rest", "https://x/api/v3/depth?symbol=BTCUSDT", '{"lastUpdateId":1}', status=200, t=99)


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz"])
def test_round_trip_plain_and_gzip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    _write(path)
    with open_capture(path) as reader:
        assert reader.header.exchange == "binance"
        assert reader.header.symbols == ("BTCUSDT",)
        assert reader.header.extra == {"depth": 10}
        records = list(reader)
    assert [r.kind for r in records] == ["ws_open"] + ["ws_recv"] * 5 + ["rest"]
    assert records[1].data == '{"i":0,"txt":"0.10000000"}'  # text kept exactly
    assert records[-1].status == 200
    assert [r.line for r in records] == list(range(2, 9))
    assert reader.bad_lines == 0


def test_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    real = tmp_path / "c.jsonl.gz"
    _write(real)
    disguised = tmp_path / "c.jsonl"
    disguised.write_bytes(real.read_bytes())
    with open_capture(disguised) as reader:
        assert len(list(reader)) == 7


def test_bad_lines_counted_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    _write(path, n=2)
    lines = path.read_text().splitlines()
    lines.insert(2, "this is not json")
    lines.insert(3, '{"no_kind": 1}')
    lines.insert(4, "[1, 2, 3]")
    path.write_text("\n".join(lines) + "\n")
    with open_capture(path) as reader:
        records = list(reader)
    assert len(records) == 4
    assert reader.bad_lines == 3
    assert reader.bad_line_numbers == [3, 4, 5]


def test_over_long_line_skipped_without_holding_it(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    _write(path, n=1)
    with path.open("a") as f:
        f.write('{"t":1,"kind":"ws_recv","url":"u","data":"' + "x" * 5000 + '"}\n')
        f.write('{"t":2,"kind":"ws_recv","url":"u","data":"after"}\n')
    with open_capture(path, max_line_bytes=1024) as reader:
        records = list(reader)
    assert records[-1].data == "after"
    assert reader.bad_lines == 1


def test_truncated_gzip_yields_good_records_then_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    _write(path, n=2000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    seen = 0
    with pytest.raises(CorruptFile, match="truncated or corrupt after line"), open_capture(path) as reader:
        for _ in reader:
            seen += 1
    assert seen > 100


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"hello\n", "not JSON"),
        (b'{"format": "something-else"}\n', "not an mmdata capture header"),
        (b'{"format": "mmdata-capture", "version": 2, "exchange": "x", "symbols": []}\n', "version 1"),
        (gzip.compress(b"", mtime=0)[:5], "not readable as gzip|empty file"),
    ],
)
def test_unusable_header(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorruptFile, match=match):
        open_capture(path)


def test_missing_file_is_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        open_capture(tmp_path / "nope.jsonl")


def test_writer_rejects_unknown_kind(tmp_path: Path) -> None:
    with CaptureWriter(tmp_path / "c.jsonl", "kraken", []) as w, pytest.raises(ValueError, match="unknown"):
        w.write("ws_nonsense", "u")


def test_real_capture_reads_fully(real_capture) -> None:
    from tests.conftest import BINANCE_BTCUSDT

    with open_capture(real_capture(BINANCE_BTCUSDT)) as reader:
        n = sum(1 for _ in reader)
    assert n == 41250
    assert reader.bad_lines == 0


def _members_file(tmp_path: Path, n_members: int, torn: bool) -> tuple[Path, list[bytes]]:
    lines = [b'{"recv_seq":%d,"pad":"%s"}' % (i, b"x" * (i % 97)) for i in range(n_members * 500)]
    path = tmp_path / "rows.ndjson.gz"
    with open(path, "wb") as f:
        for m in range(n_members):
            f.write(gzip.compress(b"\n".join(lines[m * 500 : (m + 1) * 500]) + b"\n"))
        if torn:
            member = gzip.compress(b"never complete\n" * 100)
            f.write(member[: len(member) // 2])
    return path, lines


def test_gzip_lines_over_many_members_and_a_torn_tail(tmp_path: Path) -> None:
    path, lines = _members_file(tmp_path, 40, torn=False)
    consumed: list[int] = []
    assert list(gzip_lines(path, on_read=consumed.append)) == lines
    assert sum(consumed) == path.stat().st_size, "on_read saw every byte of the file"
    path, lines = _members_file(tmp_path, 40, torn=True)
    got: list[bytes] = []
    with pytest.raises(CorruptFile, match="complete rows before it were read"):
        for line in gzip_lines(path):
            got.append(line)
    assert got == lines, "every complete line comes before the error, in order"
