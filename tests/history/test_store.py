"""HistoryStore: Parquet day files + coverage, atomic replace, merge without duplicates; loaders."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.errors import ConfigError, CorruptFile, StoreError
from mmdata.history.store import (
    CANDLE_SCHEMA,
    TRADE_SCHEMA,
    HistoryStore,
    load_candles,
    load_trades,
    merge_ranges,
    subtract_ranges,
)
from mmdata.types import Candle, Trade

DAY = 86_400_000
T0 = 1_763_596_800_000  # 2025-11-20T00:00:00Z


def trade(i: int, ts: int | None = None, price: str = "60000.10", qty: str = "0.00012000") -> Trade:
    return Trade("kraken", "BTC/USD", T0 + i * 3_600_000 if ts is None else ts, price, qty, "sell", i)


def candle(open_ms: int, close: str = "60001.5", interval: str = "1m") -> Candle:
    return Candle(
        "binance", "BTCUSDT", interval, open_ms, "60000.00", "60002.10", "59999.99", close, "1.50000000",
        "90000.50000000", 7, True,
    )  # fmt: skip


def trades_store(root: Path) -> HistoryStore:
    return HistoryStore(root, "kraken", "BTC/USD", "trades")


# -- ranges ----------------------------------------------------------------------------------


def test_merge_ranges_joins_overlapping_and_adjacent_and_drops_empty() -> None:
    assert merge_ranges([(5, 7), (0, 2), (2, 3), (6, 9), (4, 4), (10, 11)]) == [(0, 3), (5, 9), (10, 11)]
    assert merge_ranges([]) == []


def test_subtract_ranges() -> None:
    assert subtract_ranges(0, 10, []) == [(0, 10)]
    assert subtract_ranges(0, 10, [(2, 4), (6, 8)]) == [(0, 2), (4, 6), (8, 10)]
    assert subtract_ranges(3, 7, [(0, 4), (6, 20)]) == [(4, 6)]
    assert subtract_ranges(3, 7, [(0, 10)]) == []


_ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=8)


@given(_ranges, st.integers(0, 60), st.integers(0, 60))
def test_ranges_agree_with_a_set_model(ranges: list[tuple[int, int]], lo: int, hi: int) -> None:
    points = {p for a, b in ranges for p in range(a, b)}
    merged = merge_ranges(ranges)
    assert {p for a, b in merged for p in range(a, b)} == points
    assert all(a < b for a, b in merged)
    assert all(merged[i][1] < merged[i + 1][0] for i in range(len(merged) - 1))  # not even adjacent
    missing = subtract_ranges(lo, hi, ranges)
    assert {p for a, b in missing for p in range(a, b)} == set(range(lo, hi)) - points
    assert all(a < b for a, b in missing)


# -- write / read ------------------------------------------------------------------------------


def test_trades_round_trip_per_utc_day_with_exact_text(tmp_path: Path) -> None:
    store = trades_store(tmp_path)
    rows = [trade(i, price="60000.10", qty="7e-7" if i == 3 else "0.00012000") for i in range(30)]
    assert store.write(rows, (T0, T0 + 30 * 3_600_000), source="http://x") == 30
    assert store.path == tmp_path / "kraken" / "BTCUSD" / "history" / "trades"
    assert sorted(p.name for p in store.path.iterdir()) == [
        "20251120.parquet",
        "20251121.parquet",
        "_coverage.json",
    ]
    day = pq.read_table(store.path / "20251120.parquet")
    assert day.schema.equals(TRADE_SCHEMA)
    assert day.column("trade_id").to_pylist() == list(range(24))
    table = store.read()
    assert table.column("trade_id").to_pylist() == list(range(30))
    assert table.column("qty").to_pylist()[3] == "7e-7"
    assert set(table.column("price").to_pylist()) == {"60000.10"}
    assert set(table.column("symbol").to_pylist()) == {"BTC/USD"}
    assert store.read(T0 + 3_600_000, T0 + 3 * 3_600_000).column("trade_id").to_pylist() == [1, 2]
    assert store.coverage() == [(T0, T0 + 30 * 3_600_000)]
    assert store.source() == "http://x"
    doc = json.loads(store.coverage_path.read_text())
    assert doc["format"] == "mmdata-history-coverage" and doc["version"] == 1
    assert (doc["exchange"], doc["symbol"], doc["dataset"]) == ("kraken", "BTC/USD", "trades")
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]


def test_candles_round_trip_and_schema(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "binance", "BTC/USDT", "candles_1m")
    rows = [candle(T0 - 120_000 + i * 60_000) for i in range(4)]  # two before midnight, two after
    assert store.write(rows, (T0 - 120_000, T0 + 120_000)) == 4
    assert sorted(p.name for p in store.path.glob("*.parquet")) == ["20251119.parquet", "20251120.parquet"]
    table = store.read()
    assert table.schema.equals(CANDLE_SCHEMA)
    assert table.column("open_time_ms").to_pylist() == [r.open_time_ms for r in rows]
    assert table.column("quote_volume").to_pylist() == ["90000.50000000"] * 4
    assert table.column("trades").to_pylist() == [7] * 4
    nulls = HistoryStore(tmp_path, "binance", "BTCUSDT", "candles_5m")
    nulls.write([Candle("binance", "BTCUSDT", "5m", T0, "1", "1", "1", "1", "0", None, None, True)])
    assert nulls.read().column("quote_volume").to_pylist() == [None]
    assert nulls.read().column("trades").to_pylist() == [None]


def test_refetched_rows_replace_stored_ones_never_duplicate(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "binance", "BTCUSDT", "candles_1m")
    store.write([candle(T0 + i * 60_000) for i in range(5)], (T0, T0 + 300_000))
    assert (
        store.write([candle(T0 + i * 60_000, close="1.0") for i in range(3, 8)], (T0 + 180_000, T0 + 480_000))
        == 3
    )
    table = store.read()
    assert table.column("open_time_ms").to_pylist() == [T0 + i * 60_000 for i in range(8)]
    assert table.column("close").to_pylist() == ["60001.5"] * 3 + ["1.0"] * 5
    assert store.coverage() == [(T0, T0 + 480_000)]
    trades = trades_store(tmp_path)
    trades.write([trade(i, ts=T0 + 5 - i % 3) for i in range(6)])
    assert trades.write([trade(i, ts=T0 + 5 - i % 3) for i in range(3, 9)]) == 3
    table = trades.read()
    ordered = sorted(
        zip(table.column("ts_ms").to_pylist(), table.column("trade_id").to_pylist(), strict=True)
    )
    assert (
        list(zip(table.column("ts_ms").to_pylist(), table.column("trade_id").to_pylist(), strict=True))
        == ordered
    )
    assert sorted(table.column("trade_id").to_pylist()) == list(range(9))


def test_coverage_merges_overlapping_and_adjacent_ranges(tmp_path: Path) -> None:
    store = trades_store(tmp_path)
    assert store.coverage() == [] and store.missing(0, 10) == [(0, 10)]
    for covered in [(T0 + 10, T0 + 20), (T0 + 40, T0 + 50), (T0 + 20, T0 + 30), (T0 + 45, T0 + 60)]:
        store.write([], covered)
    assert store.coverage() == [(T0 + 10, T0 + 30), (T0 + 40, T0 + 60)]
    assert store.missing(T0, T0 + 100) == [(T0, T0 + 10), (T0 + 30, T0 + 40), (T0 + 60, T0 + 100)]
    store.write([], (T0 + 5, T0 + 70))
    assert store.coverage() == [(T0 + 5, T0 + 70)]
    assert store.day_files() == []  # an empty covered range stores no file, just coverage


def test_nothing_is_created_before_a_write_and_bad_datasets_are_refused(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "bitfinex", "BTC/USD", "candles_1h")
    assert store.path == tmp_path / "bitfinex" / "tBTCUSD" / "history" / "candles_1h"
    assert store.read().num_rows == 0 and not (tmp_path / "bitfinex").exists()
    for bad in ["candles_2m", "candles", "orders", ""]:
        with pytest.raises(ConfigError, match="dataset"):
            HistoryStore(tmp_path, "bitfinex", "BTC/USD", bad)
    with pytest.raises(ConfigError):
        HistoryStore(tmp_path, "nasdaq", "BTC/USD", "trades")
    with pytest.raises(StoreError, match="expected candles"):
        store.write([trade(1)])
    with pytest.raises(StoreError, match="1m candle"):
        store.write([candle(T0)])
    with pytest.raises(StoreError, match="closed"):
        store.write([Candle("bitfinex", "tBTCUSD", "1h", T0, "1", "1", "1", "1", "1", None, None, False)])
    with pytest.raises(StoreError, match="expected trades"):
        trades_store(tmp_path).write([candle(T0)])
    assert not (tmp_path / "bitfinex").exists()


def test_a_write_from_another_source_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = trades_store(tmp_path)
    store.write([trade(1)], (T0, T0 + DAY), source="http://a")
    with caplog.at_level(logging.WARNING, "mmdata.history"):
        store.write([trade(2)], (T0, T0 + DAY), source="http://b")
    assert "http://a" in caplog.text and "http://b" in caplog.text
    assert store.source() == "http://b"


# -- crashes, corruption -------------------------------------------------------------------------


def test_crash_between_day_files_and_coverage_leaves_a_consistent_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = trades_store(tmp_path)
    store.write([trade(i) for i in range(10)], (T0, T0 + 10 * 3_600_000))
    real_replace = os.replace

    def crash_on_coverage(src: Any, dst: Any) -> None:
        if str(dst).endswith("_coverage.json"):
            raise KeyboardInterrupt  # killed right before the coverage replace
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_coverage)
    with pytest.raises(KeyboardInterrupt):
        store.write([trade(i) for i in range(5, 40)], (T0 + 5 * 3_600_000, T0 + 40 * 3_600_000))
    monkeypatch.undo()
    # rows are stored, coverage still claims only what it claimed before: coverage ⊆ rows
    assert store.coverage() == [(T0, T0 + 10 * 3_600_000)]
    assert store.read().column("trade_id").to_pylist() == list(range(40))
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]
    # the rerun re-fetches the uncovered part: merged without duplicates
    assert store.missing(T0, T0 + 40 * 3_600_000) == [(T0 + 10 * 3_600_000, T0 + 40 * 3_600_000)]
    assert store.write([trade(i) for i in range(10, 40)], (T0 + 10 * 3_600_000, T0 + 40 * 3_600_000)) == 0
    assert store.read().column("trade_id").to_pylist() == list(range(40))
    assert store.coverage() == [(T0, T0 + 40 * 3_600_000)]


def test_crash_while_writing_a_day_file_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = trades_store(tmp_path)
    store.write([trade(i) for i in range(3)], (T0, T0 + 3 * 3_600_000))
    before = (store.path / "20251120.parquet").read_bytes()

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq, "write_table", disk_full)
    with pytest.raises(StoreError, match="No space left"):
        store.write([trade(i) for i in range(3, 6)], (T0, T0 + 6 * 3_600_000))
    monkeypatch.undo()
    assert (store.path / "20251120.parquet").read_bytes() == before
    assert store.coverage() == [(T0, T0 + 3 * 3_600_000)]
    assert not [p for p in store.path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        "[]",
        '{"format":"something-else","version":1}',
        '{"format":"mmdata-history-coverage","version":99,"exchange":"kraken","symbol":"BTC/USD",'
        '"dataset":"trades","ranges":[]}',
        '{"format":"mmdata-history-coverage","version":1,"exchange":"kraken","symbol":"ETH/USD",'
        '"dataset":"trades","ranges":[]}',
        '{"format":"mmdata-history-coverage","version":1,"exchange":"kraken","symbol":"BTC/USD",'
        '"dataset":"trades","ranges":[[5,3]]}',
        '{"format":"mmdata-history-coverage","version":1,"exchange":"kraken","symbol":"BTC/USD",'
        '"dataset":"trades","ranges":[[1.5,3]]}',
        '{"format":"mmdata-history-coverage","version":1,"exchange":"kraken","symbol":"BTC/USD",'
        '"dataset":"trades","ranges":"all"}',
    ],
)
def test_a_corrupt_coverage_file_is_a_clear_store_error_with_a_recovery(tmp_path: Path, text: str) -> None:
    store = trades_store(tmp_path)
    store.write([trade(i) for i in range(3)], (T0, T0 + 3 * 3_600_000))
    store.coverage_path.write_text(text)
    for call in (
        store.coverage,
        lambda: store.missing(T0, T0 + 1),
        lambda: store.write([trade(4)], (T0, T0 + 1)),
    ):
        with pytest.raises(StoreError, match="delete it") as caught:
            call()
        assert caught.value.path == str(store.coverage_path)
    assert store.coverage_path.read_text() == text  # never overwritten by a write that could not read it
    store.coverage_path.unlink()  # the documented recovery: rows kept, range fetched again
    assert store.missing(T0, T0 + 10) == [(T0, T0 + 10)]
    assert store.read().column("trade_id").to_pylist() == [0, 1, 2, 4]


def test_a_corrupt_day_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    store = trades_store(tmp_path)
    store.write([trade(i) for i in range(3)], (T0, T0 + 3 * 3_600_000))
    day = store.path / "20251120.parquet"
    day.write_bytes(day.read_bytes()[:50])
    with pytest.raises(CorruptFile, match=r"20251120\.parquet"):
        store.read()
    with pytest.raises(CorruptFile):
        store.write([trade(5)])
    assert len(day.read_bytes()) == 50
    assert store.read(T0 + DAY, T0 + 2 * DAY).num_rows == 0  # other days still readable


# -- property: any order of writes ----------------------------------------------------------------

# A universe of trades: id -> time (several per ms, spanning three UTC days).
_UNIVERSE = {i: T0 - DAY // 2 + (i // 3) * 1_800_000 for i in range(150)}
_batch = st.tuples(
    st.lists(st.integers(0, 149), max_size=40),
    st.tuples(st.integers(0, 150), st.integers(0, 150)),
)


@settings(max_examples=30, deadline=None)
@given(st.lists(_batch, min_size=1, max_size=6))
def test_any_order_of_writes_stores_the_union_once(batches: list[tuple[list[int], tuple[int, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = trades_store(Path(tmp))
        written: set[int] = set()
        covered: list[tuple[int, int]] = []
        for ids, (a, b) in batches:
            rows = [trade(i, ts=_UNIVERSE[i], price=f"{i}.5") for i in ids]
            lo, hi = T0 + a * 1000, T0 + max(a, b) * 1000
            new = store.write(rows, (lo, hi))
            assert new == len(set(ids) - written)
            written |= set(ids)
            if lo < hi:
                covered.append((lo, hi))
        table = store.read()
        got = table.column("trade_id").to_pylist()
        assert sorted(got) == sorted(written) and len(got) == len(set(got))
        assert table.column("ts_ms").to_pylist() == [_UNIVERSE[i] for i in got]
        assert got == sorted(got, key=lambda i: (_UNIVERSE[i], i))
        assert table.column("price").to_pylist() == [f"{i}.5" for i in got]
        assert store.coverage() == merge_ranges(covered)
        for path in store.day_files():  # each row in the file of its own UTC day
            day_ms = int(datetime.strptime(path.stem, "%Y%m%d").replace(tzinfo=UTC).timestamp()) * 1000
            times = pq.read_table(path).column("ts_ms").to_pylist()
            assert times and all(day_ms <= t < day_ms + DAY for t in times)


# -- loaders ---------------------------------------------------------------------------------------


def test_load_candles_floats_and_exact_text(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, "binance", "BTCUSDT", "candles_1m")
    store.write([candle(T0 + i * 60_000, close=f"6000{i}.10") for i in range(5)], (T0, T0 + 300_000))
    frame = load_candles(tmp_path, "binance", "BTC/USDT", "1m")
    assert list(frame.columns) == [
        "open_time", "open_time_ms", "open", "high", "low", "close", "volume", "open_text", "high_text",
        "low_text", "close_text", "volume_text", "quote_volume_text", "trades",
    ]  # fmt: skip
    assert frame["close"].tolist() == [60000.1, 60001.1, 60002.1, 60003.1, 60004.1]
    assert frame["close_text"].tolist() == ["60000.10", "60001.10", "60002.10", "60003.10", "60004.10"]
    assert str(frame["open"].dtype) == "double[pyarrow]"
    assert frame["open_time"].iloc[0] == datetime(2025, 11, 20, tzinfo=UTC)
    assert frame["volume_text"].iloc[0] == "1.50000000" and frame["trades"].iloc[0] == 7
    window = load_candles(
        tmp_path, "binance", "BTCUSDT", "1m", start="2025-11-20T00:01:00Z", end=T0 + 180_000
    )
    assert window["open_time_ms"].tolist() == [T0 + 60_000, T0 + 120_000]
    since = load_candles(tmp_path, "binance", "BTCUSDT", "1m", start=datetime(2025, 11, 20, 0, 3, tzinfo=UTC))
    assert since["open_time_ms"].tolist() == [T0 + 180_000, T0 + 240_000]
    assert load_candles(tmp_path, "binance", "BTCUSDT", "1h").empty
    with pytest.raises(ConfigError, match="interval"):
        load_candles(tmp_path, "binance", "BTCUSDT", "2m")
    with pytest.raises(ConfigError, match="start"):
        load_candles(tmp_path, "binance", "BTCUSDT", "1m", start="yesterday-ish")


def test_load_trades_floats_and_exact_text(tmp_path: Path) -> None:
    trades_store(tmp_path).write([trade(i, qty="7e-7" if i == 1 else "0.00012000") for i in range(4)])
    frame = load_trades(tmp_path, "kraken", "BTC/USD")
    assert list(frame.columns) == [
        "ts",
        "ts_ms",
        "trade_id",
        "price",
        "qty",
        "price_text",
        "qty_text",
        "side",
    ]
    assert frame["trade_id"].tolist() == [0, 1, 2, 3]
    assert frame["qty"].tolist() == [0.00012, 7e-7, 0.00012, 0.00012]
    assert frame["qty_text"].tolist() == ["0.00012000", "7e-7", "0.00012000", "0.00012000"]
    assert frame["price_text"].tolist() == ["60000.10"] * 4 and frame["side"].tolist() == ["sell"] * 4
    assert load_trades(tmp_path, "kraken", "BTC/USD", start=T0 + 3_600_000, end=T0 + 3 * 3_600_000)[
        "trade_id"
    ].tolist() == [1, 2]
    empty = load_trades(tmp_path, "kraken", "ETH/USD")
    assert empty.empty and "price_text" in empty.columns
