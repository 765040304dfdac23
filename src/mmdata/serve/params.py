"""Query parameters of the servers, checked before anything touches the disk.

Every stream a client names must be an existing ``<data>/<exchange>/<SYMBOL_FS>/`` folder.
The client's text is never joined into a path: the exchange must be one of the known
venues, the symbol is reduced to its folder spelling (``BTC/USD`` → ``BTCUSD``, the rule the
recorder uses), that spelling must be plain ASCII letters and digits, and it must equal
the name of a folder *listed* under the exchange folder. ``../``, absolute paths, NUL bytes,
URL-encoded separators (decoded or double-encoded), over-long or non-ASCII values therefore
get a :class:`BadRequest` with a message, never a file outside the data root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from mmdata.exchanges import EXCHANGES

__all__ = [
    "MAX_VALUE_CHARS",
    "BadRequest",
    "Stream",
    "parse_int",
    "parse_query",
    "resolve_stream",
    "safe_text",
]

#: Longest accepted query value (a symbol is far shorter; anything longer is an attack or a mistake).
MAX_VALUE_CHARS = 64
_FS = re.compile(r"^[A-Za-z0-9]{1,32}$")
_DROP = str.maketrans("", "", "/-: ")


class BadRequest(Exception):
    """A client error: the HTTP status to answer with and a message safe to show."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Stream:
    """A recorded (exchange, symbol) the servers may read."""

    exchange: str
    symbol_fs: str
    root: Path  # <data>/<exchange>/<SYMBOL_FS>


def parse_query(path: str) -> dict[str, str]:
    """``?a=1&b=2`` of a request path as a dict (last value wins); bad values raise BadRequest."""
    query = urlsplit(path).query
    if len(query) > 1024:
        raise BadRequest(414, "query string too long")
    try:
        pairs = parse_qs(query, keep_blank_values=True, errors="strict", max_num_fields=16)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(400, "malformed query string (not UTF-8, or too many fields)") from None
    out: dict[str, str] = {}
    for key, values in pairs.items():
        value = values[-1]
        if len(value) > MAX_VALUE_CHARS:
            raise BadRequest(400, f"{safe_text(key)} is too long (at most {MAX_VALUE_CHARS} characters)")
        if not value.isascii() or not value.isprintable():
            raise BadRequest(400, f"{safe_text(key)} must be printable ASCII")
        out[key] = value
    return out


def safe_text(text: str, limit: int = 40) -> str:
    """Client text as it may be echoed: printable ASCII only, cut at ``limit`` characters."""
    cleaned = "".join(ch if ch.isascii() and ch.isprintable() else "?" for ch in text[:limit])
    return cleaned + ("..." if len(text) > limit else "")


def parse_int(params: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """An integer parameter in ``[lo, hi]`` (``default`` when absent)."""
    text = params.get(name)
    if text is None or text == "":
        return default
    if not text.isdigit():
        raise BadRequest(400, f"{name} must be an integer from {lo} to {hi}")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(400, f"{name} must be an integer from {lo} to {hi}")
    return value


def resolve_stream(data_dir: Path, exchange: str | None, symbol: str | None) -> Stream:
    """The recorded stream ``exchange``/``symbol`` under ``data_dir`` (see the module docstring)."""
    if not exchange:
        raise BadRequest(400, "exchange is required (binance, kraken or bitfinex)")
    venue = exchange.strip().lower()
    if venue not in EXCHANGES:
        raise BadRequest(
            400, f"unknown exchange {safe_text(exchange)!r}: one of {', '.join(sorted(EXCHANGES))}"
        )
    if not symbol:
        raise BadRequest(400, "symbol is required (e.g. BTCUSDT, BTC/USD, tBTCUSD)")
    fs = symbol.strip().translate(_DROP)
    if not _FS.match(fs):
        raise BadRequest(
            400, f"symbol {safe_text(symbol)!r} is not a symbol (letters and digits, optional / - :)"
        )
    venue_dir = data_dir / venue
    try:
        names = {p.name for p in venue_dir.iterdir() if p.is_dir()}
    except OSError:
        names = set()
    if fs not in names:
        matches = [n for n in names if n.upper() == fs.upper()]
        if len(matches) != 1:
            raise BadRequest(404, f"no recorded data for {venue} {safe_text(symbol)}")
        fs = matches[0]
    return Stream(venue, fs, venue_dir / fs)
