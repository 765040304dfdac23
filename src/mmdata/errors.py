"""The mmdata exception tree.

Every error mmdata raises on purpose derives from :class:`MMDataError`, so a caller
(the CLI above all) can catch one class and turn it into a clear message and exit
code. Foreign exceptions (``websockets``, ``requests``, ``OSError``) are mapped onto
this tree at the I/O boundary (``mmdata.net`` and ``mmdata.store``); the pure layers
raise only these::

    MMDataError
    ├── ExchangeError                 a venue said or sent something we cannot use
    │   ├── ExchangeProtocolError     malformed / foreign / unexpected frame or body
    │   ├── RateLimited               HTTP 429 / 418, with retry_after seconds
    │   ├── ConnectionFailed          could not connect: refused, handshake failed, open timed out
    │   ├── ConnectionLost            an open WebSocket ended (close code, reason, clean)
    │   └── HttpError                 non-retryable HTTP status, or a request failing after retries
    ├── BookSyncError                 a local book cannot be trusted
    │   ├── SequenceGap               missing update ids (expected, got)
    │   └── ChecksumMismatch          venue checksum differs from the local book
    ├── StoreError                    on-disk data cannot be read or written
    │   └── CorruptFile               truncated gzip, unparsable header or rows
    └── ConfigError                   bad option, unknown venue or symbol

Errors carry structured attributes (``symbol``, ``expected``, ``got``, ``path``) so
callers never parse messages.
"""

from __future__ import annotations

__all__ = [
    "BookSyncError",
    "ChecksumMismatch",
    "ConfigError",
    "ConnectionFailed",
    "ConnectionLost",
    "CorruptFile",
    "ExchangeError",
    "ExchangeProtocolError",
    "HttpError",
    "MMDataError",
    "RateLimited",
    "SequenceGap",
    "StoreError",
]


class MMDataError(Exception):
    """Root of every error mmdata raises deliberately."""


class ExchangeError(MMDataError):
    """A venue sent or answered something mmdata cannot use."""


class ExchangeProtocolError(ExchangeError):
    """A frame or response body that is malformed, foreign or not in the venue's protocol.

    ``frame`` holds (a prefix of) the offending text for the ledger.
    """

    def __init__(self, message: str, *, exchange: str = "", frame: str = "") -> None:
        super().__init__(message)
        self.exchange = exchange
        self.frame = frame[:512]


class RateLimited(ExchangeError):
    """HTTP 429 (slow down) or 418 (IP banned); ``retry_after`` is in seconds when the venue said."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ConnectionFailed(ExchangeError):
    """A connection to ``url`` could not be opened: refused, unreachable, bad URL, failed or
    timed-out handshake. Nothing was received, so retrying later is always safe.
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message)
        self.url = url


class ConnectionLost(ExchangeError):
    """An open WebSocket ended, for any reason.

    ``code``/``reason`` are the close frame the peer sent (``None``/``""`` when the TCP
    connection died without one, i.e. close code 1006); ``clean`` is True when the closing
    handshake completed in both directions (the RFC 6455 "wasClean").
    """

    def __init__(
        self, message: str, *, code: int | None = None, reason: str = "", clean: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.clean = clean


class HttpError(ExchangeError):
    """An HTTP request failed for good: a non-retryable status (``status``), or a transport
    failure or server error that outlived its retries (``status`` None for no response).

    ``body`` holds the first 512 characters of the response body for the ledger.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str = "", body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.body = body[:512]


class BookSyncError(MMDataError):
    """A local order book can no longer be trusted."""

    def __init__(self, message: str, *, symbol: str = "") -> None:
        super().__init__(message)
        self.symbol = symbol


class SequenceGap(BookSyncError):
    """Update ids are missing: ``expected`` was due, ``got`` arrived."""

    def __init__(self, *, symbol: str, expected: int, got: int) -> None:
        super().__init__(f"{symbol}: sequence gap, expected {expected}, got {got}", symbol=symbol)
        self.expected = expected
        self.got = got


class ChecksumMismatch(BookSyncError):
    """The venue's checksum (``expected``) differs from the local book's (``got``)."""

    def __init__(self, *, symbol: str, expected: int, got: int) -> None:
        super().__init__(f"{symbol}: checksum mismatch, venue {expected}, local {got}", symbol=symbol)
        self.expected = expected
        self.got = got


class StoreError(MMDataError):
    """On-disk data cannot be read or written."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class CorruptFile(StoreError):
    """A file is damaged: truncated gzip member, bad header, unparsable row."""


class ConfigError(MMDataError):
    """An option, venue or symbol is not valid."""
