"""Every real capture validates with exactly the counts of fixtures/README.md (library API)."""

from __future__ import annotations

import pytest

from mmdata.validate import validate_capture
from tests.conftest import BINANCE_4, BINANCE_BTCUSDT, BITFINEX_7, BITFINEX_VECTOR, KRAKEN_BOOK10


def _total(report, key: str) -> int:
    return sum(rep.counts()[key] for rep in report.symbols.values())


def test_binance_4symbols(real_capture) -> None:
    report = validate_capture(real_capture(BINANCE_4))
    assert report.ok, report.problems
    assert sorted(report.symbols) == ["BLZETH", "LRCBTC", "NKNUSDT", "RUNEEUR"]
    assert _total(report, "diffs_applied") == 172
    assert _total(report, "gaps") == 0
    assert _total(report, "crossed_states") == 0
    assert _total(report, "resyncs") == 0
    assert all(rep.final_state == "SYNCED" for rep in report.symbols.values())
    assert _total(report, "trades") == 2  # the two @aggTrade events
    assert report.bad_messages == 0


def test_binance_btcusdt(real_capture) -> None:
    report = validate_capture(real_capture(BINANCE_BTCUSDT))
    assert report.ok, report.problems
    counts = report.symbols["BTCUSDT"].counts()
    assert counts == {
        "diffs_applied": 3449,
        "checksums_verified": 0,
        "checksum_mismatches": 0,
        "gaps": 0,
        "resyncs": 0,
        "crossed_states": 0,
        "trades": 9757,
    }
    assert report.bad_messages == 0


def test_kraken_book10(real_capture) -> None:
    report = validate_capture(real_capture(KRAKEN_BOOK10))
    assert report.ok, report.problems
    counts = report.symbols["BTC/USD"].counts()
    assert counts["diffs_applied"] == 509
    assert counts["checksums_verified"] == 510
    assert counts["checksum_mismatches"] == 0
    assert counts["gaps"] == 0
    assert counts["crossed_states"] == 0


def test_bitfinex_7pairs_seqall(real_capture) -> None:
    report = validate_capture(real_capture(BITFINEX_7))
    assert report.ok, report.problems
    books = {s: r for s, r in report.symbols.items() if r.final_state == "SYNCED"}
    assert len(books) == 7
    assert _total(report, "diffs_applied") == 1593
    assert _total(report, "checksums_verified") == 0
    assert _total(report, "gaps") == 0
    assert _total(report, "checksum_mismatches") == 0
    assert report.bad_messages == 0


def test_bitfinex_checksum_vector(real_capture) -> None:
    report = validate_capture(real_capture(BITFINEX_VECTOR))
    assert report.ok, report.problems
    counts = report.symbols["tXRPBTC"].counts()
    assert counts["diffs_applied"] == 1
    assert counts["checksums_verified"] == 1
    assert counts["checksum_mismatches"] == 0


@pytest.mark.parametrize("name", [BINANCE_4, BINANCE_BTCUSDT, KRAKEN_BOOK10, BITFINEX_7, BITFINEX_VECTOR])
def test_header_symbols_all_reported(real_capture, name: str) -> None:
    from mmdata.store import open_capture

    path = real_capture(name)
    with open_capture(path) as reader:
        header_symbols = set(reader.header.symbols)
    report = validate_capture(path)
    assert header_symbols <= set(report.symbols)
