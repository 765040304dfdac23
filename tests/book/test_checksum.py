"""Tests of :mod:`mmdata.book.checksum` against published vectors and an independent reference.

Vectors: PROTOCOLS.md §B.2/§B.3 (Kraken v2 guide, MATIC/USD book page, v1 guide) and §C.3
(Bitfinex XRPBTC mock-server vector, bfx-api-node-models simple vector). The reference
implementations below are written from the PROTOCOLS.md text with :mod:`decimal` and do not
use the formatter under test.
"""

from __future__ import annotations

import zlib
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdata.book import checksum as checksum_module
from mmdata.book.checksum import (
    BitfinexChecksum,
    KrakenChecksum,
    bitfinex_checksum,
    kraken_fixed_digits,
    kraken_v2_checksum,
)
from mmdata.book.orderbook import LocalOrderBook
from tests.reference import (
    js_number_text,
    ref_bitfinex_checksum,
    ref_bitfinex_string,
    ref_kraken_checksum,
    ref_kraken_digits,
)
from tests.vectors import (
    KRAKEN_GUIDE_ASKS,
    KRAKEN_GUIDE_BIDS,
    MATIC_ASKS,
    MATIC_BIDS,
    MATIC_SNAPSHOT_CHECKSUM,
    MATIC_UPDATE_CHECKSUM,
    XRPBTC_ASKS,
    XRPBTC_BIDS,
    XRPBTC_CHECKSUM,
)

Text = tuple[str, str]


# -- published vectors ----------------------------------------------------------------------------
KRAKEN_GUIDE_ASK_STRING = (
    "45285210000045286415457195345286615457110945289615456091145290215890660452918154553491"
    "452947445474945296135380000452975994554245299518772827"
)
KRAKEN_GUIDE_BID_STRING = (
    "45283510000000452834154582015452821100000004528101000000045280315459258645279079900004527763310103"
    "4527753000000045277315460273745276615445238"
)

V1_ASK_PRICES = ["0.05005", "0.05010", "0.05015", "0.05020", "0.05025"]
V1_ASK_PRICES += ["0.05030", "0.05035", "0.05040", "0.05045", "0.05050"]
V1_BID_PRICES = ["0.05000", "0.04995", "0.04990", "0.04980", "0.04975"]
V1_BID_PRICES += ["0.04970", "0.04965", "0.04960", "0.04955", "0.04950"]
V1_STRING = (
    "5005500501050050155005020500502550050305005035500504050050455005050500"
    "5000500499550049905004980500497550049705004965500496050049555004950500"
)


class TestKrakenVectors:
    """The Kraken v2 checksum reproduces every published example exactly."""

    def test_guide_example(self) -> None:
        assert kraken_v2_checksum(KRAKEN_GUIDE_ASKS, KRAKEN_GUIDE_BIDS, 1, 8) == 3310070434
        scheme = KrakenChecksum(1, 8)
        assert "".join(scheme.token(p, q, False) for p, q in KRAKEN_GUIDE_ASKS) == KRAKEN_GUIDE_ASK_STRING
        assert "".join(scheme.token(p, q, True) for p, q in KRAKEN_GUIDE_BIDS) == KRAKEN_GUIDE_BID_STRING

    def test_guide_example_from_json_floats(self) -> None:
        # The same levels as a float-normalising decoder would print them ("0.1", "1.54582015").
        asks = [(repr(float(p)), repr(float(q))) for p, q in KRAKEN_GUIDE_ASKS]
        bids = [(repr(float(p)), repr(float(q))) for p, q in KRAKEN_GUIDE_BIDS]
        assert ("45281.0", "0.1") in bids
        assert kraken_v2_checksum(asks, bids, 1, 8) == 3310070434

    def test_guide_example_through_book(self) -> None:
        scheme = KrakenChecksum(1, 8)
        book = LocalOrderBook(scheme.token)
        book.apply_snapshot(reversed(KRAKEN_GUIDE_BIDS), reversed(KRAKEN_GUIDE_ASKS))
        assert scheme.of_book(book) == 3310070434

    def test_matic_book_page_example(self) -> None:
        assert kraken_v2_checksum(MATIC_ASKS, MATIC_BIDS, 4, 8) == MATIC_SNAPSHOT_CHECKSUM
        updated = [*MATIC_BIDS[:-1], ("0.5657", "1098.3947558")]
        assert kraken_v2_checksum(MATIC_ASKS, updated, 4, 8) == MATIC_UPDATE_CHECKSUM
        # PROTOCOLS.md: other price precisions give other values, so the example pins 4.
        assert kraken_v2_checksum(MATIC_ASKS, MATIC_BIDS, 5, 8) != MATIC_SNAPSHOT_CHECKSUM

    def test_matic_update_through_book(self) -> None:
        scheme = KrakenChecksum(4, 8)
        book = LocalOrderBook(scheme.token)
        book.apply_snapshot(MATIC_BIDS, MATIC_ASKS)
        assert scheme.of_book(book) == MATIC_SNAPSHOT_CHECKSUM
        book.apply([("0.5657", "1098.3947558")], [])
        assert scheme.of_book(book) == MATIC_UPDATE_CHECKSUM

    def test_v1_guide_string(self) -> None:
        qty = kraken_fixed_digits("0.00000500", 8)
        text = "".join(kraken_fixed_digits(p, 5) + qty for p in V1_ASK_PRICES + V1_BID_PRICES)
        assert text == V1_STRING
        assert zlib.crc32(text.encode()) == 974947235
        asks = [(p, "0.00000500") for p in V1_ASK_PRICES]
        bids = [(p, "0.00000500") for p in V1_BID_PRICES]
        assert kraken_v2_checksum(asks, bids, 5, 8) == 974947235

    def test_only_top_ten_count(self) -> None:
        deeper_asks = [*KRAKEN_GUIDE_ASKS, ("45300.0", "9.0")]
        deeper_bids = [*KRAKEN_GUIDE_BIDS, ("45270.0", "9.0")]
        assert kraken_v2_checksum(deeper_asks, deeper_bids, 1, 8) == 3310070434

    def test_fewer_than_ten_levels(self) -> None:
        asks = KRAKEN_GUIDE_ASKS[:3]
        assert kraken_v2_checksum(asks, [], 1, 8) == zlib.crc32(KRAKEN_GUIDE_ASK_STRING[:42].encode())
        assert kraken_v2_checksum([], [], 1, 8) == zlib.crc32(b"")


class TestKrakenFixedDigits:
    """``kraken_fixed_digits`` writes ``precision`` decimals, no dot, no leading zeros, exactly."""

    @pytest.mark.parametrize(
        ("text", "precision", "expected"),
        [
            ("1e-08", 8, "1"),
            ("1E-8", 8, "1"),
            ("0.00000048", 8, "48"),
            ("4.8e-07", 8, "48"),
            ("45285.2", 1, "452852"),
            ("45285.20", 1, "452852"),
            ("45285.20000000", 1, "452852"),
            ("45285", 1, "452850"),
            ("45285.", 1, "452850"),
            ("45281.0", 1, "452810"),
            ("0.001", 8, "100000"),
            ("0.00100000", 8, "100000"),
            ("0.566", 4, "5660"),
            ("100", 0, "100"),
            ("100.0", 0, "100"),
            ("1e2", 2, "10000"),
            ("0", 8, ""),
            ("0.00000000", 8, ""),
            ("0.123456789", 8, "12345679"),  # more digits than the precision: rounded by Decimal
            ("0.123456785", 8, "12345678"),  # half-even, as the reference's Decimal format
            ("1.55", 1, "16"),
        ],
    )
    def test_cases(self, text: str, precision: int, expected: str) -> None:
        assert kraken_fixed_digits(text, precision) == expected

    @pytest.mark.parametrize("text", ["1e", "e-8", "1e-8e", "-x"])
    def test_rejects_non_numbers(self, text: str) -> None:
        with pytest.raises(ValueError, match="decimal"):
            kraken_fixed_digits(text, 4)

    @given(
        st.decimals(min_value=0, max_value=10**7, places=8, allow_nan=False, allow_infinity=False),
        st.integers(0, 10),
        st.integers(0, 4),
    )
    def test_agrees_with_reference(self, value: Decimal, precision: int, spelling: int) -> None:
        text = (f"{value:f}", f"{value:.10f}", repr(float(value)), f"{value:e}", f"{value:.{precision}f}")[
            spelling
        ]
        if Decimal(text) != value:  # float spelling of a value with more than 15 digits
            return
        assert kraken_fixed_digits(text, precision) == ref_kraken_digits(text, precision)


class TestBitfinexVectors:
    """The Bitfinex checksum reproduces the published vectors from the wire's number text."""

    def test_xrpbtc_vector(self) -> None:
        assert bitfinex_checksum(XRPBTC_BIDS, XRPBTC_ASKS) == XRPBTC_CHECKSUM
        assert ref_bitfinex_checksum(XRPBTC_BIDS, XRPBTC_ASKS) == XRPBTC_CHECKSUM
        assert ref_bitfinex_string(XRPBTC_BIDS, XRPBTC_ASKS).startswith(
            "0.0000011:266122.94:0.00000111:-4847.13:0.00000109:500793.10790141:"
        )

    def test_xrpbtc_vector_through_book(self) -> None:
        scheme = BitfinexChecksum()
        book = LocalOrderBook(scheme.token)
        snapshot_bids = [("0.0000011", "271510.49"), *XRPBTC_BIDS[1:]]
        book.apply_snapshot(snapshot_bids, XRPBTC_ASKS)
        assert scheme.of_book(book) != XRPBTC_CHECKSUM
        book.apply([("0.0000011", "266122.94")], [])
        assert scheme.of_book(book) == XRPBTC_CHECKSUM

    def test_reformatted_numbers_break_it(self) -> None:
        fixed = [(f"{Decimal(p):f}", q) for p, q in XRPBTC_BIDS]
        assert bitfinex_checksum(fixed, XRPBTC_ASKS) != XRPBTC_CHECKSUM

    def test_simple_vector(self) -> None:
        bids = [("6000", "1"), ("5900", "2")]
        asks = [("6100", "3"), ("6200", "4")]
        assert ref_bitfinex_string(bids, asks) == "6000:1:6100:-3:5900:2:6200:-4"
        assert bitfinex_checksum(bids, asks) == 1756193398

    def test_uneven_sides(self) -> None:
        bids = [("6000", "1")]
        asks = [("6100", "3"), ("6200", "4"), ("6300", "5")]
        expected = zlib.crc32(b"6000:1:6100:-3:6200:-4:6300:-5")
        assert bitfinex_checksum(bids, asks) & 0xFFFFFFFF == expected
        expected = zlib.crc32(b"6200:4:6300:-3:6100:5:6000:1")
        got = bitfinex_checksum([("6200", "4"), ("6100", "5"), ("6000", "1")], [("6300", "3")])
        assert got & 0xFFFFFFFF == expected

    def test_only_top_25_count(self) -> None:
        deeper_bids = [*XRPBTC_BIDS, *((f"1e-{9 + i}", "1") for i in range(10))]
        deeper_asks = [*XRPBTC_ASKS, ("0.00000194", "1")]
        assert bitfinex_checksum(deeper_bids, deeper_asks) != XRPBTC_CHECKSUM  # 7 more bids count
        assert bitfinex_checksum(deeper_bids[:25], deeper_asks) == ref_bitfinex_checksum(
            deeper_bids[:25], deeper_asks[:25]
        )
        assert bitfinex_checksum(XRPBTC_BIDS, deeper_asks) == XRPBTC_CHECKSUM


# -- random books: cached-token path == plain function == reference --------------------------------
@st.composite
def kraken_books(draw: st.DrawFn) -> tuple[int, int, list[list[Text]]]:
    """Precisions and a few batches of levels (bids, asks interleaved) with removals and respellings."""
    pp = draw(st.integers(0, 6))
    qp = draw(st.integers(0, 8))
    tick = Decimal(1).scaleb(-pp)
    mid = draw(st.integers(1, 10**6)) * tick
    batches: list[list[Text]] = []
    for _ in range(draw(st.integers(1, 6))):
        batch: list[Text] = []
        for _ in range(draw(st.integers(0, 20))):
            price = mid + draw(st.integers(-30, 30)) * tick
            if price <= 0:
                continue
            qty = draw(st.integers(0, 10**6)) * Decimal(1).scaleb(-qp)
            spell = draw(st.integers(0, 2))
            price_text = (f"{price:f}", repr(float(price)), f"{price:.{pp + 2}f}")[spell]
            # (Exponent-form zero is left out: is_zero's gap there is tested in test_orderbook.)
            qty_text = (f"{qty:f}", repr(float(qty)), f"{qty:e}" if qty else "0.0")[draw(st.integers(0, 2))]
            batch.append((price_text, qty_text))
        batches.append(batch)
    return pp, qp, batches


def model_apply(side: dict[Decimal, Text], levels: list[Text]) -> None:
    """Naive book semantics: keyed by value, latest text, zero removes."""
    for price, qty in levels:
        if Decimal(qty) == 0:
            side.pop(Decimal(price), None)
        else:
            side[Decimal(price)] = (price, qty)


def best_first(side: dict[Decimal, Text], *, is_bid: bool) -> list[Text]:
    """Model levels best first."""
    return [side[k] for k in sorted(side, reverse=is_bid)]


class TestCachedTokensAgree:
    """``of_book`` over cached tokens == the plain function == the independent reference."""

    @settings(max_examples=150)
    @given(kraken_books(), st.booleans(), st.data())
    def test_kraken(
        self, setup: tuple[int, int, list[list[Text]]], late_tokens: bool, data: st.DataObject
    ) -> None:
        pp, qp, batches = setup
        scheme = KrakenChecksum(pp, qp)
        book = LocalOrderBook(None if late_tokens else scheme.token)
        bids: dict[Decimal, Text] = {}
        asks: dict[Decimal, Text] = {}
        mid = Decimal(batches[0][0][0]) if batches[0] else Decimal(0)
        for batch in batches:
            # Below the first price: bids; at or above: asks (crossing is irrelevant here).
            bid_levels = [lv for lv in batch if Decimal(lv[0]) < mid]
            ask_levels = [lv for lv in batch if Decimal(lv[0]) >= mid]
            book.apply(bid_levels, ask_levels)
            model_apply(bids, bid_levels)
            model_apply(asks, ask_levels)
            if data.draw(st.integers(0, 4)) == 0:
                depth = data.draw(st.integers(5, 25))
                book.truncate(depth)
                bids = {k: bids[k] for k in sorted(bids, reverse=True)[:depth]}
                asks = {k: asks[k] for k in sorted(asks)[:depth]}
        if late_tokens:
            book.set_token_fn(scheme.token)
        top_bids, top_asks = book.top()
        assert (top_bids, top_asks) == (best_first(bids, is_bid=True), best_first(asks, is_bid=False))
        plain = kraken_v2_checksum(top_asks, top_bids, pp, qp)
        assert scheme.of_book(book) == plain
        assert plain == ref_kraken_checksum(list(asks.values()), list(bids.values()), pp, qp)

    @settings(max_examples=150)
    @given(
        st.lists(st.tuples(st.integers(1, 60), st.integers(0, 10**9), st.booleans()), max_size=90),
        st.integers(0, 8),
        st.booleans(),
    )
    def test_bitfinex(self, changes: list[tuple[int, int, bool]], scale: int, late_tokens: bool) -> None:
        scheme = BitfinexChecksum()
        book = LocalOrderBook(None if late_tokens else scheme.token)
        bids: dict[Decimal, Text] = {}
        asks: dict[Decimal, Text] = {}
        unit = Decimal(1).scaleb(-scale)
        for k, amount, is_bid in changes:
            price = Decimal(k).scaleb(-8) + (Decimal("0.00000100") if not is_bid else 0)
            level = (js_number_text(price), js_number_text(amount * unit))
            if is_bid:
                book.apply([level], [])
                model_apply(bids, [level])
            else:
                book.apply([], [level])
                model_apply(asks, [level])
        if late_tokens:
            book.set_token_fn(scheme.token)
        top_bids, top_asks = book.top()
        plain = bitfinex_checksum(top_bids, top_asks)
        assert scheme.of_book(book) == plain
        assert plain == ref_bitfinex_checksum(list(bids.values()), list(asks.values()))
        assert -(2**31) <= plain < 2**31


def test_docstring_examples() -> None:
    """The examples in the module's docstrings run as written."""
    import doctest

    failed, attempted = doctest.testmod(checksum_module, verbose=False, report=False)
    assert attempted >= 1
    assert failed == 0
