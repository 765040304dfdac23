"""Venue book checksums (PROTOCOLS.md §B.3 Kraken v2, §C.3 Bitfinex v2).

Both are CRC-32 over a string built from the top levels; they differ in how numbers
are written.

*Kraken v2* writes every price with exactly ``price_precision`` decimals and every
quantity with ``qty_precision`` decimals, removes the ``.`` and strips leading zeros
(``"45285.2"`` at precision 1 → ``452852``; ``"0.001"`` at 8 → ``100000``). String =
top 10 asks (lowest first) then top 10 bids (highest first), each level
``price + qty``; the checksum is the unsigned CRC-32. Because Kraken sends JSON floats
(``0.8``, ``1e-08``) the text must be re-formatted with the instrument's precisions.

*Bitfinex v2* interleaves ``bid_i.price, bid_i.amount, ask_i.price, ask_i.amount`` for
i < 25 (skipping missing levels), joins with ``:`` and compares the *signed* CRC-32.
Numbers must be the wire's own text (``7e-7``, ``205000``): any re-formatting breaks
it. Ask amounts are negative on the wire; the book stores them positive, so the token
puts the ``-`` back.

Each scheme has a ``token(price, qty, is_bid)`` function: one level's contribution,
which :class:`~mmdata.book.orderbook.LocalOrderBook` caches per level, and an
``of_book`` that joins the cached tokens of the top levels. The plain functions
:func:`kraken_v2_checksum` and :func:`bitfinex_checksum` take level lists and use the
same token code; tests and one-off checks use them.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from mmdata.book.orderbook import LocalOrderBook
from mmdata.types import Level

__all__ = [
    "BitfinexChecksum",
    "KrakenChecksum",
    "bitfinex_checksum",
    "kraken_fixed_digits",
    "kraken_v2_checksum",
]

_crc32 = zlib.crc32


def kraken_fixed_digits(text: str, precision: int) -> str:
    """Kraken's checksum form of a number: ``precision`` decimals, no ``.``, no leading zeros.

    >>> kraken_fixed_digits("45285.2", 1), kraken_fixed_digits("0.001", 8), kraken_fixed_digits("1e-08", 8)
    ('452852', '100000', '1')
    """
    dot = text.find(".")
    if dot > 0 and len(text) - dot - 1 == precision:
        # The common case (exactly `precision` decimals): drop the dot and leading zeros.
        digits = text[:dot] + text[dot + 1 :]
        if digits.isdigit():
            return digits.lstrip("0")
    if "e" not in text and "E" not in text and not text.startswith("-"):
        dot = text.find(".")
        if dot < 0:
            whole, frac = text, ""
        else:
            whole, frac = text[:dot], text[dot + 1 :]
        if len(frac) > precision:
            frac = frac.rstrip("0")
        if len(frac) <= precision:
            return (whole + frac.ljust(precision, "0")).lstrip("0")
    # Exponent form or more digits than the precision: let Decimal do it exactly.
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal number: {text!r}") from exc
    return f"{value:.{precision}f}".replace(".", "").replace("-", "").lstrip("0")


class KrakenChecksum:
    """Kraken v2 checksum with one instrument's precisions."""

    __slots__ = ("_prices", "price_precision", "qty_precision")

    def __init__(self, price_precision: int, qty_precision: int) -> None:
        self.price_precision = price_precision
        self.qty_precision = qty_precision
        # Price text -> digits: a book revisits the same few thousand prices all day.
        self._prices: dict[str, str] = {}

    def token(self, price: str, qty: str, is_bid: bool) -> str:
        """One level's part of the checksum string (same for both sides)."""
        digits = self._prices.get(price)
        if digits is None:
            if len(self._prices) >= 65536:
                self._prices.clear()
            digits = self._prices[price] = kraken_fixed_digits(price, self.price_precision)
        return digits + kraken_fixed_digits(qty, self.qty_precision)

    def of_book(self, book: LocalOrderBook) -> int:
        """Unsigned CRC-32 of the book; the book must hold this scheme's tokens."""
        asks, bids = book.asks, book.bids
        tokens = asks._tokens  # the hot path of every Kraken update: no method calls
        text = "".join([tokens[k] for k in asks._keys[:10]])
        tokens = bids._tokens
        text += "".join([tokens[k] for k in bids._keys[:10]])
        return _crc32(text.encode())


class BitfinexChecksum:
    """Bitfinex v2 checksum over the top 25 levels per side (P0–P4 books)."""

    __slots__ = ()

    def token(self, price: str, qty: str, is_bid: bool) -> str:
        """``price:amount`` as on the wire (asks negative)."""
        return f"{price}:{qty}" if is_bid else f"{price}:-{qty}"

    def of_book(self, book: LocalOrderBook) -> int:
        """Signed CRC-32 of the book; the book must hold this scheme's tokens."""
        return _bitfinex_crc(book.bids.top_tokens(25), book.asks.top_tokens(25))


def _bitfinex_crc(bids: list[str], asks: list[str]) -> int:
    n = min(len(bids), len(asks))
    parts: list[str] = [""] * (2 * n)
    parts[0::2] = bids[:n]
    parts[1::2] = asks[:n]
    parts += bids[n:]
    parts += asks[n:]
    crc = _crc32(":".join(parts).encode())
    return crc - 0x100000000 if crc & 0x80000000 else crc


def kraken_v2_checksum(
    asks: Sequence[Level], bids: Sequence[Level], price_precision: int, qty_precision: int
) -> int:
    """Kraken v2 checksum of levels given best first (asks ascending, bids descending)."""
    scheme = KrakenChecksum(price_precision, qty_precision)
    text = "".join(scheme.token(p, q, False) for p, q in asks[:10])
    text += "".join(scheme.token(p, q, True) for p, q in bids[:10])
    return _crc32(text.encode())


def bitfinex_checksum(bids: Sequence[Level], asks: Sequence[Level]) -> int:
    """Bitfinex checksum of levels given best first; ask amounts as *positive* text.

    (Pass the wire's own number text; the ``-`` of ask amounts is added here.)
    """
    scheme = BitfinexChecksum()
    return _bitfinex_crc(
        [scheme.token(p, q, True) for p, q in bids[:25]],
        [scheme.token(p, q, False) for p, q in asks[:25]],
    )
