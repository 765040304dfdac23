"""What the recorder saw: its trades, the time its trade stream was connected, its candles.

Reads the day folders of one symbol under a data root (docs/format.md):

* :func:`local_trades` — the normalized trades (``trades_ws_<SYM>_<YYYYMMDD>.csv.gz``) of
  the day folders around the range, deduplicated on ``trade_id`` (a trade restated in two
  days' files counts once), those with an exchange time in the range. A torn last gzip
  member (a crash) loses only its unfinished rows.
* :func:`local_coverage` — receive-time ranges during which the trade stream was connected,
  from the ledger: each ``ws_open`` to the next ``ws_close`` / ``run_stop`` / ``window_end``;
  after a crash (a ``run_start`` or the end of the data with the connection still open) to
  the last row written before it. Around every ``gap`` / ``sequence_break`` row the
  connection lost messages, so trades may be lost too: :data:`GAP_MARGIN_MS` on each side is
  cut out.
* :func:`local_candles` — candles built from those trades exactly like the candle server
  builds them (:class:`~mmdata.candles.CandleAggregator`, bucketed by exchange time), and the
  open times of the *complete* intervals: from the interval's open to
  :data:`ARRIVAL_MARGIN_MS` after its end inside one coverage range (a trade of the
  interval's last moment arrives a little later).
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mmdata.candles import INTERVALS, CandleAggregator
from mmdata.candles.aggregate import decimal_text
from mmdata.errors import ConfigError, StoreError
from mmdata.exchanges.base import symbol_fs
from mmdata.store.dayfolder import is_day_folder
from mmdata.types import Candle, Trade

__all__ = [
    "ARRIVAL_MARGIN_MS",
    "GAP_MARGIN_MS",
    "LOSS_EVENTS",
    "local_candles",
    "local_coverage",
    "local_trades",
]

#: A trade of an interval's last moment is received up to this long after it (network, venue batching).
ARRIVAL_MARGIN_MS = 2_000
#: Cut out on each side of a sequence gap: the lost messages lie shortly before its detection.
GAP_MARGIN_MS = 5_000
#: Ledger events that say the connection lost messages.
LOSS_EVENTS = frozenset({"gap", "sequence_break"})
_OPEN = "ws_open"
_CLOSE = frozenset({"ws_close", "run_stop", "window_end"})
_DAY = timedelta(days=1)

Range = tuple[int, int]


def _folders(root: str | Path, exchange: str, symbol: str, start_ms: int, end_ms: int) -> list[Path]:
    """Day folders whose label lies within a day of the range (receive vs exchange time)."""
    base = Path(root) / exchange / symbol_fs(symbol)
    if not base.is_dir():
        return []
    lo_ms = max(86_400_000, min(start_ms, 253_402_000_000_000))
    hi_ms = max(86_400_000, min(end_ms, 253_402_000_000_000))  # datetime ends at year 9999
    lo = (datetime.fromtimestamp(lo_ms / 1000, tz=UTC) - _DAY).strftime("%Y%m%d")
    hi = (datetime.fromtimestamp(hi_ms / 1000, tz=UTC) + _DAY).strftime("%Y%m%d")
    return sorted(p for p in base.iterdir() if lo <= p.name <= hi and is_day_folder(p))


def _gz_text(path: Path) -> str:
    """A gzip file's complete lines; a torn last member loses only its unfinished part."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc}", path=str(path)) from exc
    try:
        return gzip.decompress(data).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        pass
    out: list[bytes] = []
    rest = data
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(rest))
        except zlib.error:
            break
        if not d.eof:  # truncated member: keep its whole lines only
            break
        rest = d.unused_data
    text = b"".join(out).decode("utf-8", "replace")
    return text[: text.rfind("\n") + 1]


def _rows(path: Path) -> Iterator[dict[str, str]]:
    if not path.is_file():
        return iter(())
    return csv.DictReader(io.StringIO(_gz_text(path)))


def local_trades(root: str | Path, exchange: str, symbol: str, start_ms: int, end_ms: int) -> list[Trade]:
    """Recorded trades with ``start_ms <= exchange time < end_ms``, in receive order, one per id."""
    fs = symbol_fs(symbol)
    seen: set[str] = set()
    out: list[Trade] = []
    for day in _folders(root, exchange, symbol, start_ms, end_ms):
        for row in _rows(day / f"trades_ws_{fs}_{day.name}.csv.gz"):
            try:
                ts = int(row["event_time_ms"])
                tid = row["trade_id"]
                price, qty, side = row["price"], row["qty"], row["side"]
            except (KeyError, TypeError, ValueError):
                continue  # a damaged row: validate reports it
            if not start_ms <= ts < end_ms or tid in seen:
                continue
            seen.add(tid)
            trade_id: int | str = int(tid) if tid.isdigit() else tid
            out.append(Trade(exchange, symbol, ts, price, qty, "sell" if side == "sell" else "buy", trade_id))
    return out


def local_coverage(
    root: str | Path,
    exchange: str,
    symbol: str,
    start_ms: int,
    end_ms: int,
    *,
    gap_margin_ms: int = GAP_MARGIN_MS,
) -> list[Range]:
    """Receive-time ms ranges (half-open, merged, clipped to the range) with the trade stream connected."""
    fs = symbol_fs(symbol)
    events: list[tuple[int, str]] = []
    last_seen = 0
    for day in _folders(root, exchange, symbol, start_ms, end_ms):
        for row in _rows(day / f"events_{fs}_{day.name}.csv.gz"):
            try:
                t = int(row["recv_time_ns"]) // 1_000_000
            except (KeyError, TypeError, ValueError):
                continue
            events.append((t, row.get("event") or ""))
        trades = list(_rows(day / f"trades_ws_{fs}_{day.name}.csv.gz"))
        if trades:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                last_seen = max(last_seen, int(trades[-1]["recv_time_ns"]) // 1_000_000)
    events.sort(key=lambda e: e[0])
    spans: list[Range] = []
    losses: list[Range] = []
    opened: int | None = None
    latest = 0
    for t, name in events:
        if name == "run_start" and opened is not None:  # the previous run crashed with the stream open
            spans.append((opened, latest))
            opened = None
        if name == _OPEN and opened is None:
            opened = t
        elif name in _CLOSE and opened is not None:
            spans.append((opened, t))
            opened = None
        elif name in LOSS_EVENTS:
            losses.append((t - gap_margin_ms, t + gap_margin_ms))
        latest = max(latest, t)
    if opened is not None:
        spans.append((opened, max(latest, last_seen)))
    covered = _subtract(_merge(spans), _merge(losses))
    return [(max(s, start_ms), min(e, end_ms)) for s, e in covered if s < end_ms and e > start_ms]


def _merge(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for s, e in sorted(r for r in ranges if r[0] < r[1]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _subtract(ranges: list[Range], holes: list[Range]) -> list[Range]:
    out: list[Range] = []
    for s, e in ranges:
        cur = s
        for hs, he in holes:
            if he <= cur or hs >= e:
                continue
            if hs > cur:
                out.append((cur, hs))
            cur = max(cur, he)
        if cur < e:
            out.append((cur, e))
    return out


def local_candles(  # noqa: PLR0917 - the join's inputs, in the order of the docs
    root: str | Path,
    exchange: str,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    *,
    arrival_margin_ms: int = ARRIVAL_MARGIN_MS,
    gap_margin_ms: int = GAP_MARGIN_MS,
) -> tuple[list[Candle], set[int]]:
    """Candles of the recorded trades with an open time in the range, and the complete open times."""
    iv = INTERVALS.get(interval)
    if iv is None:
        raise ConfigError(f"unknown interval {interval!r}: use one of {', '.join(INTERVALS)}")
    start = iv.floor(start_ms)
    end = iv.floor(end_ms - 1) + iv.ms if end_ms > start else start
    agg = CandleAggregator()
    for trade in local_trades(root, exchange, symbol, start, end):
        try:
            agg.add(trade.ts_ms, trade.price, trade.qty)
        except ValueError:
            continue  # a price/qty the aggregator cannot hold exactly: validate reports the row
    candles: list[Candle] = []
    opens: list[int] = []
    t = start
    while t < end_ms:
        opens.append(t)
        bar = agg.bar(iv, t)
        if bar is not None:
            candles.append(
                Candle(
                    exchange,
                    symbol,
                    interval,
                    t,
                    bar.open,
                    bar.high,
                    bar.low,
                    bar.close,
                    decimal_text(bar.volume),
                    decimal_text(bar.quote_volume),
                    bar.trades,
                    True,
                )
            )
        t = iv.next_open_ms(t)
    spans = local_coverage(
        root, exchange, symbol, start - iv.ms, end + iv.ms + arrival_margin_ms, gap_margin_ms=gap_margin_ms
    )
    complete: set[int] = set()
    i = 0
    for t in opens:
        need = t + iv.ms + arrival_margin_ms
        while i < len(spans) and spans[i][1] < need:
            i += 1
        if i < len(spans) and spans[i][0] <= t:
            complete.add(t)
    return candles, complete
