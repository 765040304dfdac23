"""``mmdata history fetch``: paginated, rate-limited, resumable REST history into the store.

Theory of operation
-------------------
:func:`fetch_history` asks the :class:`~mmdata.history.store.HistoryStore` which parts
of ``[start, end)`` are not covered yet and fetches only those, each with a pure pager of
:mod:`mmdata.exchanges.history` (Binance klines / aggTrades, Kraken OHLC / Trades,
Bitfinex candles / trades hist: PROTOCOLS.md §A.5, §B.7, §C.6) driven through one
:class:`~mmdata.net.http.HttpClient`::

    request = pager.next_request()  →  pace  →  client.send  →  rows = pager.feed(body)
      →  buffer; every ``flush_rows`` rows: store.write(buffer, covered=(range start, pager.done_ms))

``pager.done_ms`` promises every row before it has been returned, so the covered range
never claims a row that is not in the buffer or on disk. The buffer is flushed at the
end of each range and, on the way out, on any exception (an :class:`~mmdata.errors.MMDataError`,
``KeyboardInterrupt``): what was fetched is kept and a rerun resumes where it stopped.
A ``kill -9`` loses at most the unflushed buffer, which the coverage does not claim.
A range the venue answers with no rows (before the pair was listed, a quiet hour) is
covered all the same, so a rerun of a complete range sends no request at all.

Rate limits
    The client retries 429 / 418 / 5xx / connection failures (``retries`` times),
    waiting the server's ``Retry-After`` (a 418 ban is waited out), and for Binance
    keeps the ``X-MBX-USED-WEIGHT-1M`` under 5000 of the 6000 budget. Waits longer than
    600 s raise :class:`~mmdata.errors.RateLimited` (rerun later to resume). On top of
    that requests are paced per endpoint kind (``candles`` / ``trades``) at the venue's
    documented spacing (``HistoryVenue.min_request_interval_s``; ``pace_s`` overrides,
    0 disables). Kraken reports its rate limit in an HTTP 200 body
    (``EAPI:Rate limit exceeded``): the same request is resent after a backoff.

Closed data only
    Candles end at the open of the running candle; trades end 1 s before now (a venue
    may still be publishing the last milliseconds), so a stored range never changes.

Kraken candles older than the OHLC window
    Kraken serves only the 720 most recent candles of an interval. The older part of a
    range is built from Kraken **Trades** (paged with ``last``) with
    :class:`~mmdata.candles.CandleAggregator`, day by day; those trades are stored in the
    ``trades`` dataset too (and reused by later fetches). The result's notes and a
    warning say so. Such candles exist only for intervals with trades (Kraken's own
    OHLC also lists empty intervals, as flat rows with volume 0).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mmdata.candles import INTERVALS, CandleAggregator, Interval, iso_time
from mmdata.candles.aggregate import decimal_text
from mmdata.errors import ConfigError, MMDataError, RateLimited
from mmdata.exchanges import get as get_exchange
from mmdata.exchanges.history import HistoryVenue, Pager, candle_pager, history_venue, trade_pager
from mmdata.history.store import HistoryStore, merge_ranges, subtract_ranges
from mmdata.net.backoff import backoff
from mmdata.net.http import HttpClient
from mmdata.types import Candle, HttpRequest, Trade

__all__ = [
    "BINANCE_WEIGHT_LIMIT_1M",
    "KINDS",
    "MAX_WAIT_S",
    "TRADE_SETTLE_MS",
    "FetchOptions",
    "FetchResult",
    "fetch_history",
]

log = logging.getLogger("mmdata.history.fetch")

#: What can be fetched.
KINDS = ("candles", "trades")
#: Binance request weight allowed per minute: a margin under the 6000 budget (PROTOCOLS.md §A.5).
BINANCE_WEIGHT_LIMIT_1M = 5000
#: Longest server-demanded wait (Retry-After, ban) slept before giving up with RateLimited.
MAX_WAIT_S = 600.0
#: Trades younger than this are not fetched: the venue may still publish some of them.
TRADE_SETTLE_MS = 1_000
_DAY_MS = 86_400_000

Range = tuple[int, int]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """What to fetch (the ``mmdata history fetch`` options).

    ``symbol`` as users type it (``BTC/USDT``, ``BTC/USD``); ``kind`` ``candles`` or
    ``trades``; ``interval`` an mmdata interval (candles; None means ``1m``; ignored for trades);
    ``[start_ms, end_ms)`` half-open, on candle open time / trade time; ``out_root`` the
    store root; ``rest_url`` the REST base (None: the venue's, or e.g. the simulator's);
    ``page_limit`` rows per request (None: the venue's maximum); ``pace_s`` seconds
    between requests of one kind (None: the venue's documented rate, 0: none);
    ``retries`` per request; ``flush_rows`` rows buffered before they are written.
    """

    exchange: str
    symbol: str
    kind: str
    interval: str | None
    start_ms: int
    end_ms: int
    out_root: Path = Path("data")
    rest_url: str | None = None
    page_limit: int | None = None
    pace_s: float | None = None
    retries: int = 8
    flush_rows: int = 50_000


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What a fetch did: ``rows`` newly stored in ``dataset`` (at ``path``), HTTP
    ``requests`` sent and ``retries`` among them, the ranges that were already stored
    (``skipped_ranges``, no request) and those fetched now, and ``notes`` for the user."""

    exchange: str
    symbol: str
    dataset: str
    path: Path
    rows: int
    requests: int
    retries: int
    skipped_ranges: tuple[Range, ...] = ()
    fetched_ranges: tuple[Range, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class _Plan:
    venue: HistoryVenue
    symbol: str
    kind: str
    interval: Interval | None
    dataset: str
    start_ms: int
    end_ms: int  # clipped to closed data
    now_ms: int
    page_limit: int | None
    notes: tuple[str, ...]


def _plan(options: FetchOptions, now_ms: int | None) -> _Plan:
    """Validated options; ConfigError with a clear message for anything unusable."""
    adapter = get_exchange(options.exchange)
    symbol = adapter.normalize_symbol(options.symbol)
    venue = history_venue(adapter.name, rest_base=options.rest_url)
    kind = options.kind.strip().lower()
    if kind not in KINDS:
        raise ConfigError(f"unknown history type {options.kind!r}: use candles or trades")
    interval: Interval | None = None
    if kind == "candles":
        name = options.interval or "1m"
        interval = INTERVALS.get(name)
        if interval is None:
            raise ConfigError(f"unknown interval {name!r}: use one of {', '.join(INTERVALS)}")
        venue.interval_param(name)  # ConfigError naming what this venue serves
    start, end = options.start_ms, options.end_ms
    if type(start) is not int or type(end) is not int or start < 0:
        raise ConfigError(f"start and end must be epoch milliseconds >= 0, got {start!r} .. {end!r}")
    if start >= end:
        raise ConfigError(f"empty range: end {iso_time(end)} is not after start {iso_time(start)}")
    limit = options.page_limit
    if limit is not None:
        most = venue.candle_page_limit if kind == "candles" else venue.trade_page_limit
        if type(limit) is not int or not 1 <= limit <= most:
            raise ConfigError(f"page limit must be 1..{most} for {venue.exchange} {kind}, got {limit!r}")
    pace = options.pace_s
    if pace is not None and not (math.isfinite(pace) and pace >= 0):
        raise ConfigError(f"pace must be a number of seconds >= 0, got {pace!r}")
    if options.retries < 0:
        raise ConfigError(f"retries must be >= 0, got {options.retries}")
    if options.flush_rows < 1:
        raise ConfigError(f"flush_rows must be >= 1, got {options.flush_rows}")
    now = int(time.time() * 1000) if now_ms is None else now_ms
    # only closed data: the running candle / the last seconds of trades may still change
    closed = interval.floor(now) if interval is not None else now - TRADE_SETTLE_MS
    what = f"closed {interval.name} candle" if interval is not None else "settled trade"
    if start >= closed:
        raise ConfigError(
            f"no {what} in {iso_time(start)} .. {iso_time(end)} yet: it lies in the future "
            f"(now {iso_time(now)})"
        )
    notes: list[str] = []
    if end > closed:
        notes.append(
            f"end clipped to {iso_time(closed)}: later {kind} are not final yet (now {iso_time(now)})"
        )
        end = closed
    dataset = f"candles_{interval.name}" if interval is not None else "trades"
    return _Plan(venue, symbol, kind, interval, dataset, start, end, now, limit, tuple(notes))


def _ceil(interval: Interval, ms: int) -> int:
    """The first open time at or after ``ms``."""
    return interval.floor(ms + interval.ms - 1)


class _Fetcher:
    """One fetch: the client, pacing, counters and progress shared by every range."""

    def __init__(
        self,
        *,
        plan: _Plan,
        options: FetchOptions,
        client: HttpClient,
        progress: Progress | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
        total_ms: int,
    ) -> None:
        self.plan = plan
        self.options = options
        self.client = client
        self.progress = progress
        self.sleep = sleep
        self.clock = clock
        self.total_ms = max(1, total_ms)
        self.done_ms = 0  # progress: ms of missing ranges finished
        self.requests = 0
        self.retries = 0
        self.new_rows: dict[str, int] = {}  # dataset -> rows newly stored
        self.source = plan.venue.rest_base
        self._last_sent: dict[str, float] = {}

    # -- one request -------------------------------------------------------------------------

    def _pace(self, kind: str) -> None:
        spacing = self.options.pace_s
        if spacing is None:
            spacing = self.plan.venue.min_request_interval_s.get(kind, 0.0)
        last = self._last_sent.get(kind)
        if spacing > 0 and last is not None:
            wait = last + spacing - self.clock()
            if wait > 0:
                self.sleep(wait)
        self._last_sent[kind] = self.clock()

    def _send(self, request: HttpRequest, kind: str) -> str:
        self._pace(kind)
        try:
            response = self.client.send(request)
        except MMDataError:
            self.requests += 1
            raise
        self.requests += response.attempts
        self.retries += response.attempts - 1
        return response.text

    def _page(self, pager: Pager, request: HttpRequest, kind: str) -> Sequence[Candle | Trade]:
        """Send ``request`` and feed the body; a rate limit reported in a 200 body (Kraken)
        resends the same request after a backoff, up to ``retries`` times."""
        delays = backoff(1.0, 60.0)
        attempt = 0
        while True:
            body = self._send(request, kind)
            try:
                rows: Sequence[Candle | Trade] = pager.feed(body)
                return rows
            except RateLimited as exc:
                if attempt >= self.options.retries:
                    raise
                attempt += 1
                self.retries += 1
                wait = exc.retry_after if exc.retry_after is not None else next(delays)
                log.info("%s rate limit (%s): waiting %.1fs", self.plan.venue.exchange, exc, wait)
                self.sleep(wait)

    # -- one range ---------------------------------------------------------------------------

    def write(self, store: HistoryStore, rows: Sequence[Candle | Trade], covered: Range | None) -> None:
        new = store.write(rows, covered, source=self.source)
        self.new_rows[store.dataset] = self.new_rows.get(store.dataset, 0) + new

    def run(self, pager: Pager, store: HistoryStore, start: int, end: int, kind: str) -> int:
        """Drive ``pager`` over ``[start, end)`` into ``store``; the end of what it covered.

        Flushes every ``flush_rows`` rows, at the end, and on the way out of any exception.
        """
        buffer: list[Candle | Trade] = []
        covered_to = start

        def flush() -> None:
            nonlocal buffer, covered_to
            done = max(start, min(pager.done_ms, end))
            if buffer or done > covered_to:
                # the buffer is dropped only once written: an interrupted write is redone
                self.write(store, buffer, (start, done) if done > start else None)
                buffer = []
                covered_to = max(covered_to, done)

        try:
            while (request := pager.next_request()) is not None:
                buffer.extend(self._page(pager, request, kind))
                if self.progress is not None:
                    self.progress(self.done_ms + max(0, min(pager.done_ms, end) - start), self.total_ms)
                if len(buffer) >= self.options.flush_rows:
                    flush()
            flush()
        except BaseException:
            try:
                flush()
            except Exception:  # keep the original error; the unwritten rows are not covered
                log.exception("could not save the rows fetched before the error")
            raise
        return covered_to


def fetch_history(
    options: FetchOptions,
    *,
    client: HttpClient | None = None,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now_ms: int | None = None,
) -> FetchResult:
    """Fetch what the store lacks of ``options``' range and store it (see the module doc).

    ``client`` (default: a new :class:`~mmdata.net.http.HttpClient` with ``options.retries``,
    the injected ``sleep``/``clock``, a 600 s wait cap and, for Binance, the weight budget);
    ``progress(done_ms, total_ms)`` is called after every page; ``now_ms`` (default: the
    wall clock) decides which candles are closed. Raises :class:`~mmdata.errors.ConfigError`
    for bad options and any :class:`~mmdata.errors.MMDataError` of the venue or the store,
    after saving everything fetched so far (a rerun resumes).
    """
    plan = _plan(options, now_ms)
    store = HistoryStore(options.out_root, plan.venue.exchange, plan.symbol, plan.dataset)
    missing = store.missing(plan.start_ms, plan.end_ms)
    skipped = tuple(subtract_ranges(plan.start_ms, plan.end_ms, missing))
    notes = list(plan.notes)
    if skipped:
        notes.append(f"{len(skipped)} range(s) already stored: not fetched again")

    def result(rows: int, requests: int, retries: int, fetched: Sequence[Range]) -> FetchResult:
        return FetchResult(
            plan.venue.exchange,
            plan.symbol,
            plan.dataset,
            store.path,
            rows,
            requests,
            retries,
            skipped,
            tuple(merge_ranges(fetched)),
            tuple(notes),
        )

    if not missing:
        return result(0, 0, 0, [])
    own = client is None
    http = (
        client
        if client is not None
        else HttpClient(
            retries=options.retries,
            weight_limit_1m=BINANCE_WEIGHT_LIMIT_1M if plan.venue.exchange == "binance" else None,
            max_wait_s=MAX_WAIT_S,
            sleep=sleep,
            clock=clock,
        )
    )
    total = sum(e - s for s, e in missing)
    fetcher = _Fetcher(
        plan=plan, options=options, client=http, progress=progress, sleep=sleep, clock=clock, total_ms=total
    )
    fetched: list[Range] = []
    try:
        if plan.interval is not None and plan.venue.exchange == "kraken":
            _fetch_kraken_candles(fetcher, store, missing, fetched, notes)
        else:
            for s, e in missing:
                pager = _pager(plan, s, e)
                covered = fetcher.run(pager, store, s, e, plan.kind)
                fetched.append((s, covered))
                fetcher.done_ms += e - s
        if progress is not None:
            progress(total, total)
    finally:
        if own:
            http.close()
    return result(fetcher.new_rows.get(plan.dataset, 0), fetcher.requests, fetcher.retries, fetched)


def _pager(plan: _Plan, start: int, end: int) -> Pager:
    if plan.interval is not None:
        return candle_pager(
            plan.venue, plan.symbol, plan.interval.name, start, end, now_ms=plan.now_ms, limit=plan.page_limit
        )
    return trade_pager(plan.venue, plan.symbol, start, end, limit=plan.page_limit)


def _fetch_kraken_candles(
    fetcher: _Fetcher, store: HistoryStore, missing: Sequence[Range], fetched: list[Range], notes: list[str]
) -> None:
    """Kraken: OHLC inside its 720-candle window (first, before the window moves on), the
    older part built from Trades."""
    plan = fetcher.plan
    interval = plan.interval
    assert interval is not None
    window = plan.venue.ohlc_window_start(interval.name, plan.now_ms)
    # one interval of margin: the window may move on while we fetch
    split = plan.start_ms if window is None else window + interval.ms
    recent = [(max(s, split), e) for s, e in missing if e > split]
    older = [(s, min(e, split)) for s, e in missing if s < split]
    for s, e in recent:
        covered = fetcher.run(_pager(plan, s, e), store, s, e, "candles")
        fetched.append((s, covered))
        fetcher.done_ms += e - s
    if not older:
        return
    text = (
        f"Kraken serves only the 720 most recent {interval.name} candles (from {iso_time(window or split)}); "
        f"the older part {iso_time(older[0][0])}..{iso_time(older[-1][1])} is built from Trades"
    )
    log.warning("%s", text)
    notes.append(text)
    trades = HistoryStore(fetcher.options.out_root, plan.venue.exchange, plan.symbol, "trades")
    for s, e in older:
        _candles_from_trades(fetcher, store, trades, interval, (s, e))
        fetched.append((s, e))
        fetcher.done_ms += e - s
    notes.append(f"{fetcher.new_rows.get('trades', 0)} new Kraken trades stored in {trades.path}")


def _candles_from_trades(
    fetcher: _Fetcher, candles: HistoryStore, trades: HistoryStore, interval: Interval, span: Range
) -> None:
    """Candles opening in ``span`` from the trades of their intervals: the trades
    the store lacks are fetched first (resumable like any fetch), then aggregated day by day."""
    plan = fetcher.plan
    start, end = span
    lo, hi = _ceil(interval, start), _ceil(interval, end)
    for s, e in trades.missing(lo, hi):
        limit = None if plan.page_limit is None else min(plan.page_limit, plan.venue.trade_page_limit)
        pager = trade_pager(plan.venue, plan.symbol, s, e, limit=limit)
        fetcher.run(pager, trades, s, e, "trades")
    day = lo
    while day < hi:
        # day chunks stay aligned: every Kraken interval (1m .. 1D) divides a UTC day
        nxt = min(hi, (day // _DAY_MS + 1) * _DAY_MS)
        table = trades.read(day, nxt)
        agg = CandleAggregator()
        for ts, price, qty in zip(
            table.column("ts_ms").to_pylist(),
            table.column("price").to_pylist(),
            table.column("qty").to_pylist(),
            strict=True,
        ):
            agg.add(ts, price, qty)
        opens = sorted({interval.floor(bar.open_ms) for bar in agg.minutes(day, nxt)})
        rows: list[Candle] = []
        for open_ms in opens:
            bar = agg.span(open_ms, open_ms + interval.ms)
            if bar is None:
                continue
            rows.append(
                Candle(
                    plan.venue.exchange,
                    plan.symbol,
                    interval.name,
                    open_ms,
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
        covered = (start if day == lo else day, end if nxt == hi else nxt)
        fetcher.write(candles, rows, covered)
        day = nxt
