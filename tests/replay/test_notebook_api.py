"""The notebook API, ``mmdata.open_day`` / ``mmdata.open_data``, against days the real recorder
wrote (``recorded_data``): every loader returns exactly the recorded rows (checked with the
standard library's gzip/csv/json, independently of mmdata), ``book_at`` / ``iter_books``
rebuild the books the recorder framed, and damage is reported, not hidden."""

from __future__ import annotations

import csv
import gzip
import inspect
import io
import itertools
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

import mmdata
from mmdata.errors import StoreError
from mmdata.replay import BookView, DataWarning, Day
from mmdata.validate.steps import BookReplay
from tests.record.dayfiles import csv_rows, ndjson_rows
from tests.recorded_days import VENUES, only_day

S = 1_000_000_000
STEP = 100_000_000  # iter_books(every="100ms")
TABLE_NAMES = ("trades", "book_frames", "diffs", "events", "gaps")
#: Ledger/gaps/trades/frames columns read as integers (the rest is text).
INT_COLUMNS = {
    "events": {"event_id", "recv_time_ns", "recv_seq"},
    "gaps": {"event_id", "recv_time_ns", "recv_seq"},
    "trades": {"recv_seq", "recv_time_ns", "event_time_ms", "trade_id"},
    "book_frames": {"recv_seq", "recv_time_ns", "event_time_ms", "update_id", "checksum"},
}


@dataclass(frozen=True)
class Venue:
    exchange: str
    symbol: str
    fs: str
    path: Path

    def file(self, pattern: str) -> Path:
        (found,) = self.path.glob(pattern)
        return found


@pytest.fixture(params=[v[0] for v in VENUES])
def venue(request: pytest.FixtureRequest, recorded_data: Path) -> Venue:
    exchange, symbol, fs = next(v for v in VENUES if v[0] == request.param)
    return Venue(exchange, symbol, fs, only_day(recorded_data, exchange, fs))


# -- helpers ----------------------------------------------------------------------------
def _values(frame: pd.DataFrame, column: str) -> list[Any]:
    """A column as Python values, nulls as None."""
    return [None if v is pd.NA else v for v in frame[column].tolist()]


def _int_or_none(text: str) -> int | None:
    return int(text) if text != "" else None


def _with_time_columns(header: list[str]) -> list[str]:
    """The documented column order: ``recv_time`` after ``recv_time_ns``, ``event_time`` after
    ``event_time_ms``."""
    out: list[str] = []
    for name in header:
        out.append(name)
        if name == "recv_time_ns":
            out.append("recv_time")
        elif name == "event_time_ms":
            out.append("event_time")
    return out


def _header(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return next(csv.reader(f))


def _check_times(frame: pd.DataFrame) -> None:
    """``recv_time`` is ``recv_time_ns`` as a UTC timestamp (ns); ``event_time`` likewise (ms)."""
    assert frame["recv_time"].dtype == pd.ArrowDtype(pa.timestamp("ns", tz="UTC"))
    stamps = frame["recv_time"].tolist()
    assert [t.value for t in stamps] == _values(frame, "recv_time_ns")
    assert all(str(t.tz) == "UTC" for t in stamps)
    if "event_time_ms" in frame.columns:
        assert frame["event_time"].dtype == pd.ArrowDtype(pa.timestamp("ms", tz="UTC"))
        got = [None if t is pd.NA else t.value // 1_000_000 for t in frame["event_time"].tolist()]
        assert got == _values(frame, "event_time_ms")


def _check_arrow_backed(frame: pd.DataFrame) -> None:
    not_arrow = {c: str(t) for c, t in frame.dtypes.items() if not isinstance(t, pd.ArrowDtype)}
    assert not not_arrow, not_arrow


def _raw_trade(exchange: str, raw: str, trade_id: int) -> tuple[str, str, str]:
    """``(price, qty, side)`` of trade ``trade_id`` inside a venue trade frame, as the number
    text of the frame (JSON numbers are kept as text, not floats)."""
    msg = json.loads(raw, parse_float=str, parse_int=str)
    tid = str(trade_id)
    if exchange == "binance":  # {"stream":..,"data":{"e":"trade","t":ID,"p":"..","q":"..","m":bool}}
        data = msg["data"]
        assert data["t"] == tid
        return data["p"], data["q"], "sell" if data["m"] else "buy"
    if exchange == "kraken":  # {"channel":"trade","data":[{"price":N,"qty":N,"trade_id":ID,"side":..}]}
        (item,) = [t for t in msg["data"] if t["trade_id"] == tid]
        return item["price"], item["qty"], item["side"]
    # bitfinex: [CHAN,"te",[ID,MTS,AMOUNT,PRICE],SEQ] (or a snapshot [CHAN,[[ID,MTS,AMOUNT,PRICE],..]])
    rows = [msg[2]] if msg[1] == "te" else msg[1]
    (row,) = [r for r in rows if r[0] == tid]
    amount: str = row[2]
    return row[3], amount.removeprefix("-"), "sell" if amount.startswith("-") else "buy"


def _frame_levels(row: dict[str, str], side: str, levels: int) -> list[tuple[str, str]]:
    """A book-frame row's levels of one side, best first (empty cells end the book)."""
    out = []
    for i in range(1, levels + 1):
        px, qty = row[f"{side}_px_{i}"], row[f"{side}_qty_{i}"]
        if px == "":
            assert qty == ""
            break
        out.append((px, qty))
    return out


def _level_count(header: list[str]) -> int:
    return sum(1 for name in header if name.startswith("bid_px_"))


def _half_member(payload: bytes) -> bytes:
    """The first half of a gzip member: what a kill in the middle of a flush leaves behind."""
    member = gzip.compress(payload, mtime=0)
    return member[: len(member) // 2]


def _rewrite_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(gzip.compress(buf.getvalue().encode("utf-8")))


# -- identity ---------------------------------------------------------------------------
def test_open_day_identity(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    assert isinstance(day, Day)
    assert day.exchange == venue.exchange
    assert day.symbol == venue.symbol
    assert day.symbol_fs == venue.fs
    assert day.path == venue.path
    assert day.date == datetime.strptime(venue.path.name, "%Y%m%d").date()
    assert day.levels == _level_count(_header(venue.file("orderbook_ws_depth_*.csv.gz")))
    assert venue.exchange in repr(day) and day.date.isoformat() in repr(day)
    assert mmdata.open_day(str(venue.path)).path == venue.path, "a str path works too"


# -- loaders: exactly what the recorder wrote -------------------------------------------
def test_trades_equal_the_csv_and_the_raw_wire_frames(venue: Venue) -> None:
    csv_path = venue.file("trades_ws_*.csv.gz")
    rows = csv_rows(csv_path)
    raw_rows = {r["recv_seq"]: r for r in ndjson_rows(venue.file("trades/trades_ws_raw_*.ndjson.gz"))}
    assert rows, "the simulator trades within seconds"
    assert [int(r["recv_seq"]) for r in rows] == sorted(raw_rows), "the same trades in both files"

    trades = mmdata.open_day(venue.path).trades()
    assert len(trades) == len(rows)
    header = _header(csv_path)
    assert list(trades.columns) == [*_with_time_columns(header), "price_text", "qty_text"]
    _check_arrow_backed(trades)
    _check_times(trades)
    assert trades["price"].dtype == pd.ArrowDtype(pa.float64())
    assert trades["price_text"].dtype == pd.ArrowDtype(pa.string())

    assert _values(trades, "recv_seq") == [int(r["recv_seq"]) for r in rows]
    assert _values(trades, "recv_time_ns") == [int(r["recv_time_ns"]) for r in rows]
    assert _values(trades, "event_time_ms") == [int(r["event_time_ms"]) for r in rows]
    assert _values(trades, "trade_id") == [int(r["trade_id"]) for r in rows]
    assert _values(trades, "side") == [r["side"] for r in rows]
    assert _values(trades, "price_text") == [r["price"] for r in rows]
    assert _values(trades, "qty_text") == [r["qty"] for r in rows]
    assert _values(trades, "price") == [float(r["price"]) for r in rows]
    assert _values(trades, "qty") == [float(r["qty"]) for r in rows]

    for rec in trades.itertuples(index=False):
        wire = raw_rows[rec.recv_seq]
        assert (wire["price"], wire["qty"], wire["side"]) == (rec.price_text, rec.qty_text, rec.side)
        assert wire["trade_id"] == rec.trade_id and wire["recv_time_ns"] == rec.recv_time_ns
        price, qty, side = _raw_trade(venue.exchange, wire["raw"], rec.trade_id)
        assert (price, qty, side) == (rec.price_text, rec.qty_text, rec.side), wire["raw"]


def test_diffs_equal_the_ndjson(venue: Venue) -> None:
    rows = ndjson_rows(venue.file("diffs/depth_diffs_*.ndjson.gz"))
    assert rows
    day = mmdata.open_day(venue.path)
    diffs = day.diffs()
    assert len(diffs) == len(rows)
    keys = list(rows[0])
    assert list(diffs.columns) == _with_time_columns(keys)
    _check_arrow_backed(diffs)
    _check_times(diffs)
    for key in keys:
        if key in ("bids", "asks"):
            got = [[list(level) for level in levels] for levels in diffs[key].tolist()]
            assert got == [r[key] for r in rows], key
        else:
            assert _values(diffs, key) == [r[key] for r in rows], key
    if venue.exchange == "bitfinex":
        assert set(_values(diffs, "kind")) == {"diff", "checksum"}

    lean = day.diffs(raw=False)
    assert "raw" not in lean.columns
    assert list(lean.columns) == [c for c in diffs.columns if c != "raw"]
    assert _values(lean, "recv_seq") == _values(diffs, "recv_seq")


def test_book_frames_equal_the_csv(venue: Venue) -> None:
    path = venue.file("orderbook_ws_depth_*.csv.gz")
    header = _header(path)
    rows = csv_rows(path)
    assert rows
    day = mmdata.open_day(venue.path)
    levels = [c for c in header if c not in INT_COLUMNS["book_frames"]]
    assert len(levels) == 4 * day.levels

    frames = day.book_frames()
    assert len(frames) == len(rows)
    assert list(frames.columns) == _with_time_columns(header)
    _check_arrow_backed(frames)
    _check_times(frames)
    for name in INT_COLUMNS["book_frames"]:
        assert _values(frames, name) == [_int_or_none(r[name]) for r in rows], name
    for name in levels:
        assert frames[name].dtype == pd.ArrowDtype(pa.float64())
        assert _values(frames, name) == [float(r[name]) if r[name] else None for r in rows], name

    texts = day.book_frames(text=True)
    assert list(texts.columns) == list(frames.columns) + [f"{n}_text" for n in levels]
    _check_arrow_backed(texts)
    for name in levels:
        assert _values(texts, f"{name}_text") == [r[name] or None for r in rows], name
        assert _values(texts, name) == _values(frames, name)


def test_book_frames_of_a_thin_book_are_null(day_copy: Callable[[str], Path]) -> None:
    """Levels a thin book did not have are empty cells: null in both the float and text columns."""
    folder = day_copy("kraken")
    (path,) = folder.glob("orderbook_ws_depth_*.csv.gz")
    header = _header(path)
    rows = [list(r.values()) for r in csv_rows(path)][:3]
    n = _level_count(header)
    thin = list(rows[1])
    for i in range(3, n + 1):  # the bid side keeps 2 levels
        thin[header.index(f"bid_px_{i}")] = thin[header.index(f"bid_qty_{i}")] = ""
    thin[header.index("checksum")] = ""
    rows[1] = thin
    _rewrite_csv_gz(path, header, rows)

    texts = mmdata.open_day(folder).book_frames(text=True)
    assert len(texts) == 3
    row = {k: (None if v is pd.NA else v) for k, v in texts.iloc[1].to_dict().items()}
    assert row["checksum"] is None
    assert row["bid_px_2"] == float(thin[header.index("bid_px_2")])
    assert row["bid_px_2_text"] == thin[header.index("bid_px_2")]
    for i in range(3, n + 1):
        for col in (f"bid_px_{i}", f"bid_qty_{i}"):
            assert row[col] is None and row[f"{col}_text"] is None, col
    assert row[f"ask_px_{n}_text"] == thin[header.index(f"ask_px_{n}")]
    assert _values(texts, "bid_px_3_text")[0] == rows[0][header.index("bid_px_3")]


@pytest.mark.parametrize("name", ["events", "gaps"])
def test_events_and_gaps_equal_the_csv(venue: Venue, name: str) -> None:
    path = venue.file(f"{name}_*.csv.gz")
    header = _header(path)
    rows = csv_rows(path)
    frame = getattr(mmdata.open_day(venue.path), name)()
    assert len(frame) == len(rows)
    assert list(frame.columns) == _with_time_columns(header)
    _check_arrow_backed(frame)
    _check_times(frame)
    for column in header:
        want = [_int_or_none(r[column]) if column in INT_COLUMNS[name] else r[column] for r in rows]
        assert _values(frame, column) == want, column
    if name == "events":
        assert any(r["details"].startswith("{") and "," in r["details"] for r in rows), "quoted JSON"
        assert [json.loads(d) if d else {} for d in _values(frame, "details")] == [
            json.loads(r["details"]) if r["details"] else {} for r in rows
        ]


def test_gaps_rows_keep_their_text(day_copy: Callable[[str], Path]) -> None:
    """A gaps file with rows (the recorded days are clean): ids and checksums stay text, quoted
    reasons come back whole."""
    folder = day_copy("bitfinex")
    (path,) = folder.glob("gaps_*.csv.gz")
    header = _header(path)
    rows = [
        ["7", "1795258590600000001", "20261121T105630Z-1", "5", "gap", "101", "105", "update ids skipped"],
        [
            "9",
            "1795258590700000002",
            "20261121T105630Z-1",
            "12",
            "checksum_mismatch",
            "-1677440057",
            "4294967295",
            'venue checksum differs, from "local" book',
        ],
    ]
    _rewrite_csv_gz(path, header, rows)
    gaps = mmdata.open_day(folder).gaps()
    assert len(gaps) == 2
    for i, column in enumerate(header):
        want = [int(r[i]) if column in INT_COLUMNS["gaps"] else r[i] for r in rows]
        assert _values(gaps, column) == want, column
    _check_times(gaps)


def test_tables_as_arrow(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    for name in TABLE_NAMES:
        table = day.table(name)
        assert isinstance(table, pa.Table)
        frame = getattr(day, name)()
        assert table.num_rows == len(frame) and table.column_names == list(frame.columns), name
    assert "bid_px_1_text" in day.table("book_frames", text=True).column_names
    assert "raw" not in day.table("diffs", raw=False).column_names
    with pytest.raises(ValueError, match="unknown table 'quotes'"):
        day.table("quotes")


def test_validate_a_recorded_day(venue: Venue) -> None:
    report = mmdata.open_day(venue.path).validate(workers=1)
    assert report.ok, [p.as_dict() for p in report.problems]
    assert report.diff_rows == len(ndjson_rows(venue.file("diffs/depth_diffs_*.ndjson.gz")))
    assert report.exchange == venue.exchange and report.symbol == venue.symbol


# -- book_at ----------------------------------------------------------------------------
def _checkable_frames(venue: Venue) -> list[dict[str, str]]:
    """Book frames made by a diff whose receive time no other diff row shares (a frame made by
    a snapshot carries the snapshot's recv_seq, but the ledger row's time is later)."""
    diffs = ndjson_rows(venue.file("diffs/depth_diffs_*.ndjson.gz"))
    times = Counter(d["recv_time_ns"] for d in diffs)
    seqs = {d["recv_seq"]: d["recv_time_ns"] for d in diffs}
    frames = csv_rows(venue.file("orderbook_ws_depth_*.csv.gz"))
    out = [
        f
        for f in frames
        if seqs.get(int(f["recv_seq"])) == int(f["recv_time_ns"]) and times[int(f["recv_time_ns"])] == 1
    ]
    assert len(out) >= len(frames) // 2, "most frames follow a diff of their own"
    return out


def test_book_at_a_frame_time_is_that_frame(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    frames = _checkable_frames(venue)
    n = day.levels
    picks = sorted({0, len(frames) - 1, *range(0, len(frames), max(1, len(frames) // 12))})
    for i in picks:
        frame = frames[i]
        t = int(frame["recv_time_ns"])
        view = day.book_at(t, levels=n)
        assert isinstance(view, BookView)
        assert view.synced and view.state == "SYNCED"
        assert view.time_ns == t
        assert view.recv_seq == int(frame["recv_seq"])
        assert view.bids == _frame_levels(frame, "bid", n), (i, frame["recv_seq"])
        assert view.asks == _frame_levels(frame, "ask", n), (i, frame["recv_seq"])
        row = view.row(n)
        assert {k: row[k] for k in frame if "_px_" in k or "_qty_" in k} == {
            k: v for k, v in frame.items() if "_px_" in k or "_qty_" in k
        }
        assert view.best_bid == float(frame["bid_px_1"]) and view.best_ask == float(frame["ask_px_1"])
        assert view.mid == (float(frame["bid_px_1"]) + float(frame["ask_px_1"])) / 2

    last = frames[-1]
    full = day.book_at(int(last["recv_time_ns"]))  # every level
    assert full.bids[:n] == _frame_levels(last, "bid", n) and len(full.bids) >= n
    top3 = day.book_at(int(last["recv_time_ns"]), levels=3)
    assert top3.bids == full.bids[:3] and top3.asks == full.asks[:3]
    table = top3.to_frame()
    assert table["bid_px_text"].tolist() == [p for p, _ in top3.bids]
    assert table["ask_qty"].tolist() == [float(q) for _, q in top3.asks]


def test_book_at_before_the_first_snapshot_is_not_synced(venue: Venue) -> None:
    ledger = csv_rows(venue.file("events_*.csv.gz"))
    first_snapshot = next(int(r["recv_time_ns"]) for r in ledger if r["event"] == "snapshot")
    day = mmdata.open_day(venue.path)
    for t in (first_snapshot - 1, int(ledger[0]["recv_time_ns"]) - S):
        view = day.book_at(t, levels=5)
        assert view.state != "SYNCED" and not view.synced
        assert view.bids == [] and view.asks == []
        assert view.best_bid is None and view.mid is None
        assert view.row(2)["bid_px_1"] == ""
    _first, last_diff, _last_row = _event_times(venue)
    during = day.book_at(last_diff, levels=5)
    assert during.synced and during.bids and during.asks, "the book exists while recording"
    after = day.book_at(int(ledger[-1]["recv_time_ns"]), levels=5)
    assert ledger[-1]["event"] == "run_stop"
    assert after.state == "STOPPED" and not after.bids and not after.asks, "no stale book after the stop"
    assert after.as_of_ns == int(ledger[-1]["recv_time_ns"])


def test_book_at_a_clock_time_on_the_day(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    frame = _checkable_frames(venue)[-1]
    t = int(frame["recv_time_ns"])
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t // 1000)
    clock = f"{moment:%H:%M:%S}.{t % S:09d}"
    whole = f"{moment:%H:%M:%S}"
    on_day = datetime.combine(day.date, time(moment.hour, moment.minute, moment.second), tzinfo=UTC)
    at_second = int(on_day.timestamp()) * S
    assert day.book_at(whole, levels=5) == day.book_at(at_second, levels=5)
    assert day.book_at(f"{day.date.isoformat()}T{whole}Z", levels=5) == day.book_at(at_second, levels=5)
    if moment.date() == day.date:  # recorded on the label's UTC date (not 23:00-24:00 UTC)
        view = day.book_at(clock, levels=day.levels)
        assert view.time_ns == t
        assert view.bids == _frame_levels(frame, "bid", day.levels)
        assert view.asks == _frame_levels(frame, "ask", day.levels)


@pytest.mark.parametrize("when", ["half past ten", "2026-13-45", "10h15", ""])
def test_book_at_a_bad_time_says_what_works(recorded_data: Path, when: str) -> None:
    day = mmdata.open_day(only_day(recorded_data, "kraken", "BTCUSD"))
    with pytest.raises(ValueError, match="not a time") as info:
        day.book_at(when)
    assert "ISO-8601" in str(info.value) and "clock time" in str(info.value)


def test_book_at_a_time_value_from_the_tables(recorded_data: Path) -> None:
    """A ``recv_time`` cell (pandas.Timestamp, ns) names the same moment as ``recv_time_ns``."""
    venue = Venue("binance", "BTCUSDT", "BTCUSDT", only_day(recorded_data, "binance", "BTCUSDT"))
    day = mmdata.open_day(venue.path)
    frames = day.book_frames()
    ok = {int(f["recv_seq"]) for f in _checkable_frames(venue)}
    i = next(i for i, s in enumerate(_values(frames, "recv_seq")) if s in ok and i > 0)
    stamp = frames["recv_time"].iloc[i]
    assert isinstance(stamp, pd.Timestamp)
    assert day.book_at(stamp, levels=5) == day.book_at(int(frames["recv_time_ns"].iloc[i]), levels=5)


def test_book_at_its_own_iso_time(recorded_data: Path) -> None:
    """``BookView.time`` (ISO-8601 with ns) fed back to ``book_at`` names the same moment."""
    venue = Venue("binance", "BTCUSDT", "BTCUSDT", only_day(recorded_data, "binance", "BTCUSDT"))
    day = mmdata.open_day(venue.path)
    t = int(_checkable_frames(venue)[1]["recv_time_ns"])
    view = day.book_at(t, levels=5)
    assert view.time.endswith("Z") and len(view.time.split(".")[1]) == 10
    assert day.book_at(view.time, levels=5) == view


# -- iter_books -------------------------------------------------------------------------
def _event_times(venue: Venue) -> tuple[int, int, int]:
    """(first event, last diff, last ledger row) receive times, from the files."""
    ledger = [int(r["recv_time_ns"]) for r in csv_rows(venue.file("events_*.csv.gz"))]
    diffs = [d["recv_time_ns"] for d in ndjson_rows(venue.file("diffs/depth_diffs_*.ndjson.gz"))]
    return min(ledger + diffs), max(diffs), max(ledger)


def test_iter_books_walks_the_grid(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    views = list(day.iter_books(every="100ms", levels=5))
    first, last_diff, last_row = _event_times(venue)
    assert len(views) >= 10
    times = [v.time_ns for v in views]
    assert all(t % STEP == 0 for t in times), "grid times are multiples of the interval"
    assert [b - a for a, b in itertools.pairwise(times)] == [STEP] * (len(times) - 1)
    assert times[0] == -(-first // STEP) * STEP, "the grid starts at the day's first event"
    assert times[-1] >= last_diff and times[-1] - STEP < last_row, "and ends after its last one"
    assert all(len(v.bids) <= 5 and len(v.asks) <= 5 for v in views)
    assert views[-1].state == "STOPPED" and not views[-1].bids, "the grid's end is after the recorder stopped"
    live = [v for v in views if v.time_ns <= last_diff]
    assert live[-1].synced and len(live[-1].bids) == 5
    for v in [*views[:: max(1, len(views) // 8)], live[-1], views[-1]]:
        assert day.book_at(v.time_ns, levels=5) == v
    seqs = [v.recv_seq for v in views]
    assert seqs == sorted(seqs)


def test_iter_books_streams(monkeypatch: pytest.MonkeyPatch, recorded_data: Path) -> None:
    day = mmdata.open_day(only_day(recorded_data, "bitfinex", "tBTCUSD"))
    calls: list[int | None] = []
    advance = BookReplay.advance

    def counting(self: BookReplay, until_ns: int | None = None) -> bool:
        calls.append(until_ns)
        return advance(self, until_ns)

    monkeypatch.setattr(BookReplay, "advance", counting)
    books = day.iter_books(every="100ms", levels=5)
    assert inspect.isgenerator(books) and isinstance(books, Iterator)
    assert calls == [], "nothing is read before the first next()"
    one = next(books)
    two = next(books)
    assert isinstance(one, BookView) and two.time_ns == one.time_ns + STEP
    assert calls == [one.time_ns, two.time_ns], "one step of the day per view"
    books.close()


def test_iter_books_start_and_end(venue: Venue) -> None:
    day = mmdata.open_day(venue.path)
    every = list(day.iter_books(every="100ms", levels=5))
    assert len(every) >= 10
    start = every[3].time_ns
    end = start + 5 * STEP
    bounded = list(day.iter_books(every="100ms", levels=5, start=start, end=end))
    assert bounded == every[3:9]
    # An unaligned start rounds up to the grid; ISO text and an end past the data both work.
    iso = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=(start + 1000) // 1000)).isoformat()
    late = every[-1].time_ns + 3 * STEP
    tail = list(day.iter_books(every=pd.Timedelta("100ms"), levels=5, start=iso, end=late))
    assert [v.time_ns for v in tail] == list(range(start + STEP, late + 1, STEP))
    assert tail[: len(every) - 4] == every[4:]
    for view in tail[-3:]:  # past the data the book stays as the day left it
        assert _rest(view) == _rest(every[-1])
    # end before start: nothing
    assert list(day.iter_books(every="1s", start=end, end=start)) == []


def _rest(view: BookView) -> tuple[int, str, list[tuple[str, str]], list[tuple[str, str]]]:
    return view.recv_seq, view.state, view.bids, view.asks


def test_iter_books_refuses_a_bad_interval(recorded_data: Path) -> None:
    day = mmdata.open_day(only_day(recorded_data, "kraken", "BTCUSD"))
    for every in ("fast", 0, "-1s"):
        with pytest.raises(ValueError, match="interval"):
            next(day.iter_books(every=every))


# -- open_data --------------------------------------------------------------------------
def _label(recorded_data: Path) -> date:
    (label,) = {only_day(recorded_data, e, fs).name for e, _s, fs in VENUES}
    return datetime.strptime(label, "%Y%m%d").date()


def test_open_data_lists_exchanges_symbols_and_days(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data)
    assert len(data) == 3 and data.skipped == []
    assert data.exchanges() == ["binance", "bitfinex", "kraken"]
    assert data.symbols() == sorted(s for _e, s, _f in VENUES)
    assert data.symbols("kraken") == data.symbols("Kraken") == ["BTC/USD"]
    assert data.symbols("nowhere") == []
    assert sorted(d.path for d in data) == sorted(only_day(recorded_data, e, fs) for e, _s, fs in VENUES)
    assert str(recorded_data) in repr(data)


def test_open_data_days_filters(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data)
    d0 = _label(recorded_data)
    kraken = only_day(recorded_data, "kraken", "BTCUSD")
    assert [d.exchange for d in data.days()] == ["binance", "bitfinex", "kraken"]
    assert [d.path for d in data.days("kraken")] == [kraken]
    assert [d.path for d in data.days(exchange="KRAKEN")] == [kraken]
    for spelling in ("BTC/USD", "BTCUSD", "btc/usd", "BTC-USD"):
        assert [d.path for d in data.days(symbol=spelling)] == [kraken], spelling
    assert [d.exchange for d in data.days(symbol="BTCUSDT")] == ["binance"]
    assert [d.exchange for d in data.days(symbol="tBTCUSD")] == ["bitfinex"]
    assert data.days(symbol="ETH/USD") == []
    assert data.days("binance", "BTC/USD") == []
    for same in (d0, d0.isoformat(), d0.strftime("%Y%m%d")):
        assert len(data.days(start=same)) == 3 and len(data.days(end=same)) == 3, same
        assert len(data.days(start=same, end=same)) == 3, same
    assert data.days(start=d0 + timedelta(days=1)) == []
    assert data.days(end=d0 - timedelta(days=1)) == []
    assert [d.exchange for d in data.days("kraken", "BTCUSD", d0 - timedelta(days=3), d0)] == ["kraken"]


def test_open_data_days_filters_take_datetimes(recorded_data: Path) -> None:
    # The docstring: start/end are "a date or datetime" (a pandas.Timestamp is a datetime).
    data = mmdata.open_data(recorded_data)
    d0 = _label(recorded_data)
    noon = datetime.combine(d0, time(12), tzinfo=UTC)
    assert len(data.days(start=noon, end=noon)) == 3
    assert len(data.days(start=pd.Timestamp(d0))) == 3
    assert data.days(start=noon + timedelta(days=1)) == []


def test_open_data_day(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data)
    d0 = _label(recorded_data)
    day = data.day("kraken", "BTC/USD", d0)
    assert day.path == only_day(recorded_data, "kraken", "BTCUSD")
    assert data.day("kraken", "BTCUSD", d0.isoformat()).path == day.path
    with pytest.raises(StoreError, match="no recorded day"):
        data.day("kraken", "BTC/USD", d0 + timedelta(days=1))
    with pytest.raises(StoreError, match="ETH/USD"):
        data.day("kraken", "ETH/USD", d0)
    with pytest.raises(StoreError):
        data.day("coinbase", "BTC/USD", d0)


def test_open_data_catalog(recorded_data: Path) -> None:
    catalog = mmdata.open_data(recorded_data).catalog()
    assert list(catalog.columns) == ["exchange", "symbol", "symbol_fs", "date", "path", "bytes"]
    assert len(catalog) == 3
    d0 = _label(recorded_data)
    for exchange, symbol, fs in VENUES:
        (row,) = catalog[catalog["exchange"] == exchange].to_dict("records")
        folder = only_day(recorded_data, exchange, fs)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
        assert row == {
            "exchange": exchange,
            "symbol": symbol,
            "symbol_fs": fs,
            "date": d0,
            "path": str(folder),
            "bytes": size,
        }


def test_open_data_concatenates_days(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data)
    d0 = _label(recorded_data)
    counts = {
        e: len(csv_rows(next(only_day(recorded_data, e, fs).glob("trades_ws_*.csv.gz"))))
        for e, _s, fs in VENUES
    }
    trades = data.trades()
    assert len(trades) == sum(counts.values())
    _check_arrow_backed(trades)
    assert {"exchange", "symbol", "date", "price_text", "recv_time"} <= set(trades.columns)
    assert Counter(_values(trades, "exchange")) == counts
    assert set(zip(_values(trades, "exchange"), _values(trades, "symbol"), strict=True)) == {
        (e, s) for e, s, _f in VENUES
    }
    assert set(_values(trades, "date")) == {d0}

    kraken = data.trades(exchange="kraken")
    assert len(kraken) == counts["kraken"]
    assert set(_values(kraken, "exchange")) == {"kraken"} and set(_values(kraken, "symbol")) == {"BTC/USD"}
    day = data.day("kraken", "BTC/USD", d0).trades()
    assert _values(kraken, "price_text") == _values(day, "price_text")
    assert len(data.trades(symbol="BTCUSD")) == counts["kraken"]

    events = data.events()
    assert len(events) == sum(len(csv_rows(next(d.path.glob("events_*.csv.gz")))) for d in data)
    assert len(data.book_frames(exchange="bitfinex")) == len(
        csv_rows(next(only_day(recorded_data, "bitfinex", "tBTCUSD").glob("orderbook_ws_depth_*")))
    )
    with pytest.raises(StoreError, match="no trades"):
        data.trades(exchange="coinbase")


def test_open_data_on_an_exchange_folder(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data / "kraken")
    assert [d.exchange for d in data] == ["kraken"]
    with pytest.raises(StoreError):
        mmdata.open_data(recorded_data / "no-such-folder")


@pytest.mark.parametrize(
    "ledger",
    [b"garbage\x00\x01\n", b"", gzip.compress(b"event_id,recv", mtime=0)[:12]],
    ids=["not-gzip", "empty", "torn-gzip"],
)
def test_open_data_skips_what_it_cannot_open(day_copy: Callable[[str], Path], ledger: bytes) -> None:
    good = day_copy("kraken")
    day_copy("binance")
    root = good.parents[2]
    junk = good.parent / "20991231"  # looks like a day, has no ledger: not a day at all
    junk.mkdir()
    (junk / "notes.txt").write_text("nothing here\n")
    (root / "binance" / "BTCUSDT" / "20991231").mkdir()
    broken = good.parent / "20991230"  # a ledger nobody can read
    broken.mkdir()
    (broken / "events_BTCUSD_20991230.csv.gz").write_bytes(ledger)
    shutil.copy(next(good.glob("trades_ws_*.csv.gz")), broken / "trades_ws_BTCUSD_20991230.csv.gz")

    data = mmdata.open_data(root)
    assert sorted(d.exchange for d in data) == ["binance", "kraken"]
    assert len(data.skipped) == 1 and str(broken) in data.skipped[0], data.skipped
    assert "20991231" not in " ".join(data.skipped)
    assert data.days(start="2099-01-01") == []


# -- damage -----------------------------------------------------------------------------
def test_trades_with_a_torn_last_member(venue: Venue, day_copy: Callable[[str], Path]) -> None:
    folder = day_copy(venue.exchange)
    (path,) = folder.glob("trades_ws_*.csv.gz")
    rows = csv_rows(path)
    with open(path, "ab") as f:
        f.write(_half_member(b"999999999,1795258590000000000,1795258590000,1,60000,1,buy\n"))
    with pytest.raises(EOFError):  # the damage is real: Python's gzip refuses the file
        csv_rows(path)
    with pytest.warns(DataWarning, match=path.name):
        trades = mmdata.open_day(folder).trades()
    assert len(trades) == len(rows)
    assert _values(trades, "recv_seq") == [int(r["recv_seq"]) for r in rows]
    assert _values(trades, "price_text") == [r["price"] for r in rows]
    assert _values(trades, "qty_text") == [r["qty"] for r in rows]


@pytest.mark.parametrize("damage", ["garbage line", "torn member"])
def test_diffs_with_damage(venue: Venue, day_copy: Callable[[str], Path], damage: str) -> None:
    folder = day_copy(venue.exchange)
    (path,) = folder.glob("diffs/depth_diffs_*.ndjson.gz")
    rows = ndjson_rows(path)
    with open(path, "ab") as f:
        if damage == "garbage line":
            f.write(gzip.compress(b"not json\n"))
        else:
            f.write(_half_member(json.dumps(rows[-1]).encode() + b"\n"))
    with pytest.warns(DataWarning, match=path.name) as caught:
        diffs = mmdata.open_day(folder).diffs()
    if damage == "garbage line":
        assert any("1 unparsable" in str(w.message) for w in caught)
    assert len(diffs) == len(rows)
    assert _values(diffs, "recv_seq") == [r["recv_seq"] for r in rows]
    assert _values(diffs, "raw") == [r["raw"] for r in rows]


def test_a_day_without_diffs(venue: Venue, day_copy: Callable[[str], Path]) -> None:
    folder = day_copy(venue.exchange)
    shutil.rmtree(folder / "diffs")
    day = mmdata.open_day(folder)
    with pytest.raises(StoreError, match="STORE_DEPTH_DIFFS"):
        day.book_at("12:00")
    with pytest.raises(StoreError, match="STORE_DEPTH_DIFFS"):
        next(day.iter_books())
    with pytest.raises(StoreError, match="STORE_DEPTH_DIFFS"):
        day.diffs()
    assert len(day.trades()) == len(csv_rows(next(folder.glob("trades_ws_*.csv.gz"))))
    assert len(day.book_frames()) > 0


def test_open_day_refuses_what_is_not_a_day(recorded_data: Path, tmp_path: Path) -> None:
    kraken = only_day(recorded_data, "kraken", "BTCUSD")
    (tmp_path / "20991231").mkdir()
    renamed = tmp_path / "someday"
    shutil.copytree(kraken, renamed)
    for path in (
        tmp_path,
        recorded_data,
        kraken.parent,
        tmp_path / "missing",
        next(kraken.glob("trades_ws_*.csv.gz")),
        tmp_path / "20991231",
        renamed,
    ):
        with pytest.raises(StoreError):
            mmdata.open_day(path)


def test_odd_files_load_or_fail_clearly(day_copy: Callable[[str], Path]) -> None:
    path = day_copy("kraken")
    day = mmdata.open_day(path)
    (trades,) = path.glob("trades_ws_*.csv.gz")
    trades.write_bytes(b"")  # a recorder that died before its first flush
    with pytest.warns(DataWarning, match="is empty"):
        empty = day.trades()
    assert len(empty) == 0 and {"price", "price_text", "recv_time"} <= set(empty.columns)
    trades.write_bytes(b"\x1f\x8b\x08 not gzip")
    with pytest.raises(StoreError, match="no complete row"), pytest.warns(DataWarning):
        day.trades()
    (diffs,) = path.glob("diffs/*.ndjson.gz")
    rows = ndjson_rows(diffs)
    bad = dict(rows[1], first_id=1.5)  # JSON, but not a diff row Arrow can type
    with open(diffs, "ab") as f:
        f.write(gzip.compress(json.dumps(bad).encode() + b"\n"))
    with pytest.warns(DataWarning, match="1 unparsable rows skipped"):
        assert len(day.diffs()) == len(rows)


def test_a_moment_picks_the_trading_day_whose_window_holds_it(recorded_data: Path) -> None:
    data = mmdata.open_data(recorded_data)
    (day,) = data.days(exchange="kraken")
    ledger = csv_rows(day.folder.layout.events)
    head = json.loads(next(r for r in ledger if r["event"] == "run_start")["details"])
    start = pd.Timestamp(head["window_start"])
    end = pd.Timestamp(head["window_end"])
    assert day.folder.window_start_ns == start.value and day.folder.window_end_ns == end.value
    # Any zone: the window decides, not the UTC date of the moment.
    inside = (start + pd.Timedelta(minutes=1)).tz_convert("Pacific/Kiritimati")
    assert data.day("kraken", "BTC/USD", inside).date == day.date
    assert data.day("kraken", "BTC/USD", (end - pd.Timedelta(seconds=1)).isoformat()).date == day.date
    for outside in (start - pd.Timedelta(seconds=1), end):
        with pytest.raises(StoreError, match="no recorded day"):
            data.day("kraken", "BTC/USD", outside)
    assert data.days(exchange="kraken", start=start, end=end) == [day]
    assert data.days(exchange="kraken", start=end) == []
