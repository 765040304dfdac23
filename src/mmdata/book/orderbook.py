"""``LocalOrderBook``: an L2 book that keeps the venue's exact decimal text.

Theory of operation
-------------------
Each side is a dict ``key -> (price_text, qty_text)`` plus a sorted list of keys.
The key is the price as a float, negated on the bid side, so that on *both* sides
index 0 is the best level and ``keys[:n]`` is the top ``n``. The float is used only
for ordering and identity, never stored or written: the text is what the venue sent.
Two different prices collide only if they agree to ~15.9 significant digits, far
beyond any venue's tick size (Binance uses at most 8 decimals on prices below 10^8).

Quantities are absolute; a quantity whose value is zero (``"0"``, ``"0.00000000"``,
``"0E-8"``) removes the level, as every venue here specifies. A price that is not a
positive finite number or a negative / non-finite quantity raises ``ValueError`` (the
sync engines turn that into a resync: such a book cannot be trusted).

Per level the book can also hold an opaque *token*: a string derived from the level
once, when the level changes, by a function the owner supplies. The checksum code uses
it to cache each level's contribution to a venue checksum, so verifying a checksum is
a join over the top levels instead of re-formatting 20–50 numbers each time. The book
never interprets tokens.

The book does no I/O and knows nothing of venues.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable

from mmdata.types import Level

__all__ = ["BookSide", "LocalOrderBook", "TokenFn", "is_zero"]

_INF = float("inf")
_DIGITS = frozenset("123456789")

#: ``token(price_text, qty_text, is_bid) -> str``: a per-level string cached by the book.
TokenFn = Callable[[str, str, bool], str]


def _live_qty(qty: str) -> bool:
    """Slow path of :meth:`BookSide.apply`: is this unusual quantity text non-zero?"""
    value = float(qty)
    if not 0.0 <= value < _INF:
        raise ValueError(f"quantity {qty!r} is not a non-negative finite number")
    return value != 0.0


def is_zero(qty: str) -> bool:
    """True when the decimal text is zero (``"0"``, ``"0.00000000"``, ``"-0.0"``, ``"0E-8"``)."""
    rest = qty.strip("0.")
    # Plain zeros strip to nothing; only exponent/sign forms ("0E-8", "-0.0") need a real parse.
    return not rest or (rest[0] in "eE-+" and float(qty) == 0.0)


class BookSide:
    """One side of the book, best level first."""

    __slots__ = ("_keys", "_levels", "_sign", "_token", "_tokens", "is_bid")

    def __init__(self, *, is_bid: bool, token: TokenFn | None = None) -> None:
        self.is_bid = is_bid
        self._sign = -1.0 if is_bid else 1.0
        self._keys: list[float] = []
        self._levels: dict[float, tuple[str, str]] = {}
        self._token = token
        self._tokens: dict[float, str] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def clear(self) -> None:
        """Remove every level."""
        self._keys.clear()
        self._levels.clear()
        self._tokens.clear()

    def set_token_fn(self, token: TokenFn | None) -> None:
        """Install (or remove) the token function and recompute every cached token."""
        self._token = token
        self._tokens.clear()
        if token is not None:
            is_bid = self.is_bid
            for key, (price, qty) in self._levels.items():
                self._tokens[key] = token(price, qty, is_bid)

    def apply(self, levels: Iterable[Level]) -> None:
        """Set each ``(price, qty)`` in order; zero qty removes the level."""
        keys = self._keys
        book = self._levels
        sign = self._sign
        token = self._token
        tokens = self._tokens
        is_bid = self.is_bid
        digits = _DIGITS
        for price, qty in levels:
            value = float(price)
            if not 0.0 < value < _INF:  # also false for NaN
                raise ValueError(f"price {price!r} is not a positive finite number")
            key = value * sign
            rest = qty.strip("0.")
            # All zeros strip to "" (removal); a leading significant digit is a live level;
            # anything else ("0E-8", "-5", "nan") takes the careful path.
            if rest and (rest[0] in digits or _live_qty(qty)):
                if key not in book:
                    insort(keys, key)
                book[key] = (price, qty)
                if token is not None:
                    tokens[key] = token(price, qty, is_bid)
            elif key in book:
                del book[key]
                del keys[bisect_left(keys, key)]
                if token is not None:
                    del tokens[key]

    def truncate(self, depth: int) -> None:
        """Keep only the best ``depth`` levels."""
        keys = self._keys
        if len(keys) > depth:
            book = self._levels
            tokens = self._tokens
            for key in keys[depth:]:
                del book[key]
                tokens.pop(key, None)
            del keys[depth:]

    def top(self, n: int | None = None) -> list[tuple[str, str]]:
        """The best ``n`` levels (all when ``n`` is None) as ``(price, qty)`` text."""
        book = self._levels
        keys = self._keys if n is None else self._keys[:n]
        return [book[k] for k in keys]

    def top_tokens(self, n: int) -> list[str]:
        """Cached tokens of the best ``n`` levels (requires a token function)."""
        tokens = self._tokens
        return [tokens[k] for k in self._keys[:n]]

    def best(self) -> tuple[str, str] | None:
        """The best level, or None when the side is empty."""
        return self._levels[self._keys[0]] if self._keys else None

    def best_key(self) -> float | None:
        """The best price as a float (positive on both sides), or None."""
        return self._keys[0] * self._sign if self._keys else None

    def get(self, price: str) -> str | None:
        """The quantity text at ``price``, or None."""
        level = self._levels.get(float(price) * self._sign)
        return level[1] if level is not None else None


class LocalOrderBook:
    """A two-sided L2 book holding exact wire text.

    >>> book = LocalOrderBook()
    >>> book.apply_snapshot([["100.0", "1"]], [["101.0", "2"]])
    >>> book.apply([["100.5", "3"]], [["101.0", "0"]])
    >>> book.top(2)
    ([('100.5', '3'), ('100.0', '1')], [])
    """

    __slots__ = ("asks", "bids")

    def __init__(self, token: TokenFn | None = None) -> None:
        self.bids = BookSide(is_bid=True, token=token)
        self.asks = BookSide(is_bid=False, token=token)

    def clear(self) -> None:
        """Empty both sides."""
        self.bids.clear()
        self.asks.clear()

    def set_token_fn(self, token: TokenFn | None) -> None:
        """Install the per-level token function on both sides (recomputes tokens)."""
        self.bids.set_token_fn(token)
        self.asks.set_token_fn(token)

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replace the whole book."""
        self.clear()
        self.bids.apply(bids)
        self.asks.apply(asks)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Apply a diff: absolute quantities, zero removes."""
        self.bids.apply(bids)
        self.asks.apply(asks)

    def truncate(self, depth: int) -> None:
        """Keep the best ``depth`` levels per side (Kraken: after every update)."""
        self.bids.truncate(depth)
        self.asks.truncate(depth)

    def top(self, n: int | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """``(bids, asks)``, each best first, at most ``n`` levels per side."""
        return self.bids.top(n), self.asks.top(n)

    def best_bid(self) -> tuple[str, str] | None:
        """Highest bid as ``(price, qty)`` text."""
        return self.bids.best()

    def best_ask(self) -> tuple[str, str] | None:
        """Lowest ask as ``(price, qty)`` text."""
        return self.asks.best()

    @property
    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask (a book that cannot be right)."""
        # Keys are negated on the bid side: best bid price is -bids[0].
        bids = self.bids._keys
        asks = self.asks._keys
        return bool(bids) and bool(asks) and -bids[0] >= asks[0]

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)

    def depth(self) -> tuple[int, int]:
        """Number of ``(bid, ask)`` levels."""
        return len(self.bids), len(self.asks)
