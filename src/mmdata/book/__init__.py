"""Order books, venue checksums and sans-I/O sync engines (no I/O anywhere in here)."""

from mmdata.book.checksum import (
    BitfinexChecksum,
    KrakenChecksum,
    bitfinex_checksum,
    kraken_fixed_digits,
    kraken_v2_checksum,
)
from mmdata.book.orderbook import BookSide, LocalOrderBook, is_zero
from mmdata.book.sync import (
    BookUpdated,
    ChecksumMismatch,
    ChecksumSync,
    GapDetected,
    NeedSnapshot,
    SequenceSync,
    StateChanged,
    SyncEngine,
    SyncOutput,
    SyncState,
    SyncStats,
)

__all__ = [
    "BitfinexChecksum",
    "BookSide",
    "BookUpdated",
    "ChecksumMismatch",
    "ChecksumSync",
    "GapDetected",
    "KrakenChecksum",
    "LocalOrderBook",
    "NeedSnapshot",
    "SequenceSync",
    "StateChanged",
    "SyncEngine",
    "SyncOutput",
    "SyncState",
    "SyncStats",
    "bitfinex_checksum",
    "is_zero",
    "kraken_fixed_digits",
    "kraken_v2_checksum",
]
