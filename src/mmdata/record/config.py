"""Recorder configuration: one frozen object built by the CLI (or by Python code).

Every field mirrors a knob of the seed design (ARCHITECTURE.md §8); the CLI reads the
same names from the environment (``DEPTH_LEVELS``, ``WS_MAX_SESSION_S``, …). Defaults are
what a recorder left running on a server should use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmdata.errors import ConfigError
from mmdata.net.ws import WsConfig
from mmdata.record.window import TradingWindow

__all__ = ["DEFAULT_BOOK_DEPTH", "RecorderConfig", "book_depth_for"]

#: Subscription depth per venue when ``book_depth`` is not given: the deepest book each venue
#: sends cheaply (Binance REST snapshot ``limit``; Kraken and Bitfinex book channel length).
DEFAULT_BOOK_DEPTH = {"binance": 1000, "kraken": 25, "bitfinex": 25}
_ALLOWED_DEPTHS = {"kraken": (10, 25, 100, 500, 1000), "bitfinex": (1, 25, 100, 250)}


def book_depth_for(exchange: str, depth_levels: int, requested: int | None = None) -> int:
    """The book depth to subscribe to so that ``depth_levels`` top levels are always known.

    Binance: the REST snapshot ``limit`` (5000 at most). Kraken / Bitfinex: the smallest
    depth the venue accepts that covers ``depth_levels`` (and the default when larger).
    """
    if exchange not in DEFAULT_BOOK_DEPTH:
        raise ConfigError(f"unknown exchange {exchange!r}; known: {', '.join(sorted(DEFAULT_BOOK_DEPTH))}")
    if requested is not None:
        allowed = _ALLOWED_DEPTHS.get(exchange)
        if allowed is not None and requested not in allowed:
            raise ConfigError(
                f"{exchange} accepts book depths {', '.join(map(str, allowed))}; got {requested}"
            )
        if exchange == "binance" and not 1 <= requested <= 5000:
            raise ConfigError(f"Binance snapshot depth must be 1..5000, got {requested}")
        if requested < depth_levels:
            raise ConfigError(f"book depth {requested} is smaller than --depth-levels {depth_levels}")
        return requested
    base = DEFAULT_BOOK_DEPTH[exchange]
    if exchange == "binance":
        return max(base, depth_levels)
    for depth in _ALLOWED_DEPTHS[exchange]:
        if depth >= max(depth_levels, base):
            return depth
    raise ConfigError(
        f"{exchange} books are at most {_ALLOWED_DEPTHS[exchange][-1]} levels deep; "
        f"--depth-levels {depth_levels} cannot be served"
    )


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    """What to record, where, and how (see ``mmdata record --help`` for each knob)."""

    exchange: str
    symbols: tuple[str, ...]
    data_dir: Path = Path("data")
    log_dir: Path | None = None  # default: "logs" beside data_dir
    depth_levels: int = 20  # DEPTH_LEVELS: levels per side in the book frames
    book_depth: int | None = None  # subscription / snapshot depth (None: venue default)
    store_depth_diffs: bool = True  # STORE_DEPTH_DIFFS
    ws_url: str | None = None
    rest_url: str | None = None
    capture: Path | None = None
    duration_s: float | None = None
    window: TradingWindow = field(default_factory=TradingWindow)
    ws: WsConfig = field(default_factory=WsConfig)
    live: bool = True  # LIVE_STREAM_ENABLED
    live_rotate_s: float = 600.0  # LIVE_STREAM_ROTATE_S
    live_retention_s: float = 7200.0  # LIVE_STREAM_RETENTION_S
    heartbeat_s: float = 60.0  # HEARTBEAT_SEC
    sync_warn_after_s: float = 30.0  # SYNC_WARN_AFTER_SEC
    max_buffer_warn: int = 100_000  # MAX_BUFFER_WARN: rows waiting for a flush, all files of a symbol
    orderbook_buffer_rows: int = 2000  # ORDERBOOK_BUFFER_ROWS
    trades_buffer_rows: int = 2000  # TRADES_BUFFER_ROWS
    flush_interval_s: float = 1.0  # BUFFER_FLUSH_INTERVAL_SEC
    http_timeout_s: float = 10.0
    http_retries: int = 4
    symbols_per_connection: int | None = None  # None: the venue's limit
    book_frame_interval_ms: int = 0  # 0: a book frame after every applied update

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("no symbol to record: give --symbol at least once")
        if self.depth_levels < 1 or self.depth_levels > 1000:
            raise ConfigError(f"--depth-levels must be 1..1000, got {self.depth_levels}")
        for name in (
            "live_rotate_s",
            "live_retention_s",
            "heartbeat_s",
            "sync_warn_after_s",
            "flush_interval_s",
            "http_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("orderbook_buffer_rows", "trades_buffer_rows", "max_buffer_warn"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration must be positive, got {self.duration_s}")
        if self.http_retries < 0:
            raise ConfigError("http_retries must be >= 0")
        if self.book_frame_interval_ms < 0:
            raise ConfigError("book_frame_interval_ms must be >= 0")
        if self.symbols_per_connection is not None and self.symbols_per_connection < 1:
            raise ConfigError("symbols_per_connection must be >= 1")

    @property
    def logs(self) -> Path:
        """Log root (``logs/`` beside the data root unless given)."""
        return self.log_dir if self.log_dir is not None else self.data_dir.parent / "logs"
