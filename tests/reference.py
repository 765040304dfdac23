"""Reference checksum code written from PROTOCOLS.md §B.3 / §C.3 (Decimal-based), independent of
``mmdata.book``: the tests compare mmdata's fast implementations against it."""

from __future__ import annotations

import zlib
from decimal import Decimal

Text = tuple[str, str]


def ref_kraken_digits(text: str, precision: int) -> str:
    """``precision`` decimals, ``.`` removed, leading zeros stripped (§B.3 reference ``_fmt``)."""
    return f"{Decimal(text):.{precision}f}".replace(".", "").lstrip("0")


def ref_kraken_string(asks: list[Text], bids: list[Text], pp: int, qp: int) -> str:
    """Top 10 asks ascending then top 10 bids descending, any input order."""
    top_asks = sorted(asks, key=lambda lv: Decimal(lv[0]))[:10]
    top_bids = sorted(bids, key=lambda lv: Decimal(lv[0]), reverse=True)[:10]
    return "".join(ref_kraken_digits(p, pp) + ref_kraken_digits(q, qp) for p, q in top_asks + top_bids)


def ref_kraken_checksum(asks: list[Text], bids: list[Text], pp: int, qp: int) -> int:
    """Unsigned CRC-32 of :func:`ref_kraken_string`."""
    return zlib.crc32(ref_kraken_string(asks, bids, pp, qp).encode()) & 0xFFFFFFFF


def ref_bitfinex_string(bids: list[Text], asks: list[Text]) -> str:
    """Interleaved ``bid.price:bid.amount:ask.price:-ask.amount`` for i < 25, best first."""
    top_bids = sorted(bids, key=lambda lv: Decimal(lv[0]), reverse=True)
    top_asks = sorted(asks, key=lambda lv: Decimal(lv[0]))
    parts: list[str] = []
    for i in range(25):
        if i < len(top_bids):
            parts += [top_bids[i][0], top_bids[i][1]]
        if i < len(top_asks):
            parts += [top_asks[i][0], "-" + top_asks[i][1]]
    return ":".join(parts)


def ref_bitfinex_checksum(bids: list[Text], asks: list[Text]) -> int:
    """Signed CRC-32 of :func:`ref_bitfinex_string`."""
    crc = zlib.crc32(ref_bitfinex_string(bids, asks).encode()) & 0xFFFFFFFF
    return crc - (1 << 32) if crc & 0x80000000 else crc


def js_number_text(value: Decimal) -> str:
    """How JavaScript prints a short decimal: exponent form below 1e-6, no trailing ``.0``."""
    v = value.normalize()
    if v == 0:
        return "0"
    if abs(v) < Decimal("1e-6"):
        sign, digits, exponent = v.as_tuple()
        assert isinstance(exponent, int)
        mantissa = "".join(map(str, digits))
        if len(mantissa) > 1:
            mantissa = mantissa[0] + "." + mantissa[1:]
        return f"{'-' if sign else ''}{mantissa}e{exponent + len(digits) - 1}"
    return f"{v:f}"
