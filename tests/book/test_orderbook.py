"""Tests of :mod:`mmdata.book.orderbook`: ``LocalOrderBook`` against a naive model, ``is_zero``, tokens.

The model is two ``dict[Decimal, (price_text, qty_text)]``: identity of a level is the *value*
of its price (``"100.5"`` and ``"100.50000000"`` are one level), the stored text is the latest
text sent for it, and a zero quantity in any spelling removes the level.
"""

from __future__ import annotations

import doctest
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mmdata.book import orderbook
from mmdata.book.orderbook import BookSide, LocalOrderBook, TokenFn, is_zero

Text = tuple[str, str]
ModelSide = dict[Decimal, Text]

# One tick grid shared by both sides, so that crossed books happen too.
TICK = Decimal("0.25")
GRID: tuple[Decimal, ...] = tuple(Decimal(100) + i * TICK for i in range(-12, 13))
QTYS: tuple[Decimal, ...] = (
    Decimal("0.00000001"),
    Decimal("0.00012"),
    Decimal("0.5"),
    Decimal(1),
    Decimal("2.125"),
    Decimal(1000),
)
ZERO_TEXTS: tuple[str, ...] = ("0", "0.0", "0.00000000", "00", "0.", "000.000")


def decimal_texts(value: Decimal) -> tuple[str, ...]:
    """Several decimal spellings of one value; each parses to the same float."""
    plain = f"{value.normalize():f}"
    return (
        plain,
        f"{value:.8f}",
        plain if "." in plain else plain + ".0",
        f"{value.normalize():e}",
        repr(float(value)),
    )


def model_apply(side: ModelSide, levels: list[Text]) -> None:
    """Naive diff semantics: keyed by decimal value, latest text wins, zero removes."""
    for price, qty in levels:
        key = Decimal(price)
        if Decimal(qty) == 0:
            side.pop(key, None)
        else:
            side[key] = (price, qty)


def model_top(side: ModelSide, *, is_bid: bool, n: int | None = None) -> list[Text]:
    """Levels best first: bids descending, asks ascending."""
    keys = sorted(side, reverse=is_bid)
    return [side[k] for k in (keys if n is None else keys[:n])]


def model_truncate(side: ModelSide, depth: int, *, is_bid: bool) -> None:
    """Keep the best ``depth`` levels."""
    for key in sorted(side, reverse=is_bid)[depth:]:
        del side[key]


def token_a(price: str, qty: str, is_bid: bool) -> str:
    """A token that depends on every argument."""
    return f"{'B' if is_bid else 'A'}|{price}|{qty}"


def token_b(price: str, qty: str, is_bid: bool) -> str:
    """A different token function (switching must recompute every token)."""
    return f"{qty}~{price}~{int(is_bid)}"


TOKEN_FNS: tuple[TokenFn | None, ...] = (None, token_a, token_b)


@st.composite
def levels_st(draw: st.DrawFn, max_size: int = 8) -> list[Text]:
    """A list of ``(price, qty)`` text pairs from the grid; about a quarter are removals."""
    out: list[Text] = []
    for _ in range(draw(st.integers(0, max_size))):
        price = GRID[draw(st.integers(0, len(GRID) - 1))]
        price_text = draw(st.sampled_from(decimal_texts(price)))
        if draw(st.integers(0, 3)) == 0:
            qty_text = draw(st.sampled_from(ZERO_TEXTS))
        else:
            qty_text = draw(st.sampled_from(decimal_texts(draw(st.sampled_from(QTYS)))))
        out.append((price_text, qty_text))
    return out


class LocalOrderBookMachine(RuleBasedStateMachine):
    """``LocalOrderBook`` always equals the naive Decimal-keyed model, tokens included."""

    def __init__(self) -> None:
        super().__init__()
        self.book = LocalOrderBook()
        self.bids: ModelSide = {}
        self.asks: ModelSide = {}
        self.token: TokenFn | None = None

    @initialize(token=st.sampled_from(TOKEN_FNS))
    def start(self, token: TokenFn | None) -> None:
        self.book = LocalOrderBook(token)
        self.token = token

    @rule(bids=levels_st(), asks=levels_st())
    def apply_diff(self, bids: list[Text], asks: list[Text]) -> None:
        self.book.apply(bids, asks)
        model_apply(self.bids, bids)
        model_apply(self.asks, asks)

    @rule(levels=levels_st(), is_bid=st.booleans())
    def apply_one_side(self, levels: list[Text], is_bid: bool) -> None:
        side = self.book.bids if is_bid else self.book.asks
        side.apply(levels)
        model_apply(self.bids if is_bid else self.asks, levels)

    @rule(bids=levels_st(max_size=14), asks=levels_st(max_size=14))
    def apply_snapshot(self, bids: list[Text], asks: list[Text]) -> None:
        self.book.apply_snapshot(bids, asks)
        self.bids.clear()
        self.asks.clear()
        model_apply(self.bids, bids)
        model_apply(self.asks, asks)

    @precondition(lambda self: bool(self.bids or self.asks))
    @rule(data=st.data())
    def remove_existing(self, data: st.DataObject) -> None:
        """Remove a standing level, spelling its price differently from the stored text."""
        is_bid = data.draw(st.booleans()) if self.bids and self.asks else bool(self.bids)
        model = self.bids if is_bid else self.asks
        key = data.draw(st.sampled_from(sorted(model)))
        price_text = data.draw(st.sampled_from(decimal_texts(key)))
        zero = data.draw(st.sampled_from(ZERO_TEXTS))
        if is_bid:
            self.book.apply([(price_text, zero)], [])
        else:
            self.book.apply([], [(price_text, zero)])
        del model[key]

    @precondition(lambda self: bool(self.bids or self.asks))
    @rule(data=st.data())
    def respell_existing(self, data: st.DataObject) -> None:
        """Re-send a standing level in another spelling: same level, new text."""
        is_bid = data.draw(st.booleans()) if self.bids and self.asks else bool(self.bids)
        model = self.bids if is_bid else self.asks
        key = data.draw(st.sampled_from(sorted(model)))
        level = (data.draw(st.sampled_from(decimal_texts(key))), model[key][1])
        (self.book.bids if is_bid else self.book.asks).apply([level])
        model[key] = level

    @rule(depth=st.integers(0, 12))
    def truncate(self, depth: int) -> None:
        self.book.truncate(depth)
        model_truncate(self.bids, depth, is_bid=True)
        model_truncate(self.asks, depth, is_bid=False)

    @rule(token=st.sampled_from(TOKEN_FNS))
    def set_token_fn(self, token: TokenFn | None) -> None:
        self.book.set_token_fn(token)
        self.token = token

    @rule()
    def clear(self) -> None:
        self.book.clear()
        self.bids.clear()
        self.asks.clear()

    @invariant()
    def levels_match_model(self) -> None:
        for n in (None, 0, 1, 3, 10):
            assert self.book.top(n) == (
                model_top(self.bids, is_bid=True, n=n),
                model_top(self.asks, is_bid=False, n=n),
            )
        assert self.book.bids.top() == model_top(self.bids, is_bid=True)
        assert self.book.asks.top(2) == model_top(self.asks, is_bid=False, n=2)

    @invariant()
    def best_and_crossed_match_model(self) -> None:
        best_bid = max(self.bids) if self.bids else None
        best_ask = min(self.asks) if self.asks else None
        assert self.book.best_bid() == (self.bids[best_bid] if best_bid is not None else None)
        assert self.book.best_ask() == (self.asks[best_ask] if best_ask is not None else None)
        assert self.book.bids.best_key() == (float(best_bid) if best_bid is not None else None)
        assert self.book.asks.best_key() == (float(best_ask) if best_ask is not None else None)
        expected_crossed = best_bid is not None and best_ask is not None and best_bid >= best_ask
        assert self.book.crossed is expected_crossed

    @invariant()
    def sizes_match_model(self) -> None:
        assert len(self.book) == len(self.bids) + len(self.asks)
        assert self.book.depth() == (len(self.bids), len(self.asks))
        assert len(self.book.bids) == len(self.bids)
        assert len(self.book.asks) == len(self.asks)

    @invariant()
    def get_matches_model(self) -> None:
        for price in GRID[::3]:
            text = decimal_texts(price)[1]
            bid = self.bids.get(price)
            ask = self.asks.get(price)
            assert self.book.bids.get(text) == (bid[1] if bid else None)
            assert self.book.asks.get(text) == (ask[1] if ask else None)

    @invariant()
    def tokens_follow_levels(self) -> None:
        token = self.token
        for side, model, is_bid in (
            (self.book.bids, self.bids, True),
            (self.book.asks, self.asks, False),
        ):
            # White box: no token outlives its level, none is missing.
            if token is None:
                assert side._tokens == {}
                continue
            assert set(side._tokens) == set(side._levels)
            expected = [token(p, q, is_bid) for p, q in model_top(model, is_bid=is_bid)]
            assert side.top_tokens(len(model) + 5) == expected
            assert side.top_tokens(3) == expected[:3]


TestLocalOrderBookMachine = LocalOrderBookMachine.TestCase
TestLocalOrderBookMachine.settings = settings(max_examples=60, stateful_step_count=30)


class TestDocExamples:
    """The examples in the module's docstrings run as written."""

    def test_doctests_pass(self) -> None:
        failed, attempted = doctest.testmod(orderbook, verbose=False, report=False)
        assert attempted >= 3
        assert failed == 0


class TestIsZero:
    """``is_zero`` is true exactly for decimal text whose value is zero."""

    @pytest.mark.parametrize("text", ["0", "0.0", "0.", ".0", "00", "0.00000000", "000.000"])
    def test_zero_spellings(self, text: str) -> None:
        assert is_zero(text)

    @pytest.mark.parametrize(
        "text", ["1", "0.00000001", "10", "100.0", "0.5", "1e-08", "7e-7", "205000", "1000.00000000"]
    )
    def test_nonzero_spellings(self, text: str) -> None:
        assert not is_zero(text)

    def test_exponent_form_zero(self) -> None:
        # str(Decimal("0.00000000")) == "0E-8": exponent-form zero is decimal text of zero too.
        assert [t for t in ("0e-8", "0E-8", "0.0e0", "0E+2") if not is_zero(t)] == []

    @given(
        st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False, allow_infinity=False),
        st.integers(0, 2),
    )
    def test_agrees_with_decimal(self, value: Decimal, spelling: int) -> None:
        text = (f"{value:f}", f"{value:.8f}", f"{value:.10f}")[spelling]
        assert is_zero(text) is (value == 0)

    def test_book_treats_exponent_zero_as_removal(self) -> None:
        book = LocalOrderBook()
        book.apply_snapshot([("100.5", "1")], [("101", "2")])
        book.apply([("100.5", "0E-8")], [("101", "0e0")])
        assert book.top() == ([], [])


class TestLevelIdentity:
    """A level is identified by its price value; the latest text is what the book holds."""

    def test_respelled_price_replaces_text(self) -> None:
        book = LocalOrderBook()
        book.apply([("100.5", "1")], [])
        book.apply([("100.50000000", "2.0")], [])
        assert book.top() == ([("100.50000000", "2.0")], [])
        assert book.bids.get("100.500") == "2.0"
        book.apply([("1.005e2", "0.00000000")], [])
        assert len(book) == 0

    def test_removing_absent_level_is_harmless(self) -> None:
        book = LocalOrderBook()
        book.apply([("100", "0")], [("101", "0.0")])
        assert book.depth() == (0, 0)
        assert book.best_bid() is None
        assert book.best_ask() is None
        assert not book.crossed

    def test_crossed_and_locked(self) -> None:
        book = LocalOrderBook()
        book.apply_snapshot([("100", "1")], [("100.0", "1")])
        assert book.crossed  # locked counts: the best bid is at the best ask
        book.apply([], [("100", "0"), ("99.5", "1")])
        assert book.crossed
        book.apply([], [("99.5", "0"), ("100.25", "1")])
        assert not book.crossed

    def test_sides_are_independent(self) -> None:
        book = LocalOrderBook()
        book.apply([("100", "1")], [("100", "2")])
        assert book.top() == ([("100", "1")], [("100", "2")])
        book.apply([("100", "0")], [])
        assert book.top() == ([], [("100", "2")])

    def test_snapshot_replaces_everything(self) -> None:
        book = LocalOrderBook()
        book.apply([("99", "1"), ("98", "1")], [("101", "1")])
        book.apply_snapshot([("97", "3"), ("97.5", "0")], [])
        assert book.top() == ([("97", "3")], [])

    def test_truncate_keeps_best(self) -> None:
        book = LocalOrderBook()
        book.apply([(str(p), "1") for p in range(90, 100)], [(str(p), "1") for p in range(101, 111)])
        book.truncate(3)
        assert [p for p, _ in book.bids.top()] == ["99", "98", "97"]
        assert [p for p, _ in book.asks.top()] == ["101", "102", "103"]
        book.truncate(0)
        assert len(book) == 0


class TestRejectsNonsense:
    """Levels that cannot be a book level raise ``ValueError`` (the sync engines resync on it)."""

    @pytest.mark.parametrize("price", ["0", "-1", "nan", "inf", "abc"])
    def test_bad_price(self, price: str) -> None:
        with pytest.raises(ValueError):
            LocalOrderBook().apply([(price, "1")], [])

    @pytest.mark.parametrize("qty", ["-5", "nan", "inf", "-1e-8"])
    def test_bad_qty(self, qty: str) -> None:
        with pytest.raises(ValueError):
            LocalOrderBook().apply([], [("100", qty)])


class TestTokens:
    """Per-level tokens are computed once per change, recomputed on a new function, dropped with levels."""

    def test_tokens_recomputed_and_removed(self) -> None:
        calls: list[tuple[str, str, bool]] = []

        def counting(price: str, qty: str, is_bid: bool) -> str:
            calls.append((price, qty, is_bid))
            return f"{price}/{qty}/{is_bid}"

        book = LocalOrderBook()
        book.apply([("100", "1"), ("99", "2")], [("101", "3")])
        book.set_token_fn(counting)
        assert sorted(calls) == [("100", "1", True), ("101", "3", False), ("99", "2", True)]
        assert book.bids.top_tokens(10) == ["100/1/True", "99/2/True"]
        assert book.asks.top_tokens(10) == ["101/3/False"]

        calls.clear()
        book.apply([("99.0", "5")], [])
        assert calls == [("99.0", "5", True)]  # only the changed level is recomputed
        assert book.bids.top_tokens(10) == ["100/1/True", "99.0/5/True"]

        book.apply([("100", "0")], [("101", "0")])
        assert book.bids.top_tokens(10) == ["99.0/5/True"]
        assert book.asks.top_tokens(10) == []
        assert set(book.bids._tokens) == set(book.bids._levels)
        assert book.asks._tokens == {}

        book.apply([("98", "1"), ("97", "1")], [])
        book.truncate(1)
        assert book.bids.top_tokens(10) == ["99.0/5/True"]
        assert len(book.bids._tokens) == 1

        book.set_token_fn(token_a)
        assert book.bids.top_tokens(10) == ["B|99.0|5"]
        book.set_token_fn(None)
        assert book.bids._tokens == {}
        book.apply([("96", "1")], [])  # no token function: nothing cached
        assert book.bids._tokens == {}

    def test_constructor_token_fn_and_clear(self) -> None:
        book = LocalOrderBook(token_a)
        book.apply_snapshot([("1", "2")], [("3", "4")])
        assert book.bids.top_tokens(1) == ["B|1|2"]
        assert book.asks.top_tokens(1) == ["A|3|4"]
        book.clear()
        assert book.bids._tokens == {}
        assert book.asks._tokens == {}

    def test_bookside_alone(self) -> None:
        side = BookSide(is_bid=False, token=token_b)
        side.apply([("2", "1"), ("1", "1"), ("3", "0")])
        assert side.top() == [("1", "1"), ("2", "1")]
        assert side.top_tokens(1) == ["1~1~0"]
        assert side.best() == ("1", "1")
        assert side.best_key() == 1.0
