"""fetch_history against the simulator on loopback: every venue, faults, resume, Kraken's window."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata.candles import INTERVALS
from mmdata.errors import ConfigError, HttpError, MMDataError
from mmdata.history.fetch import FetchOptions, fetch_history
from mmdata.history.store import HistoryStore, load_candles, load_trades
from mmdata.net.http import HttpClient, HttpResponse
from mmdata.sim import FaultPlan
from mmdata.sim.binance import fixed8
from mmdata.sim.model import SimCandle, SimTrade, decimal_text, js_number_text
from mmdata.types import HttpRequest
from tests.live.simthread import SimThread

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
VENUES = ("binance", "kraken", "bitfinex")
USER_SYMBOL = {"binance": "BTC/USDT", "kraken": "BTC/USD", "bitfinex": "BTC/USD"}
SIM_SYMBOL = {"binance": "BTCUSDT", "kraken": "BTC/USD", "bitfinex": "tBTCUSD"}
TEXT: dict[str, Callable[[int, int], str]] = {
    "binance": fixed8,
    "kraken": decimal_text,
    "bitfinex": js_number_text,
}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimThread]]:
    """One clean simulator per venue (past_days=1), shared by the module's tests."""
    threads = {ex: SimThread(ex, [SIM_SYMBOL[ex]], seed=7) for ex in VENUES}
    for thread in threads.values():
        thread.__enter__()
    try:
        yield threads
    finally:
        for thread in threads.values():
            thread.__exit__(None, None, None)


class CountingClient(HttpClient):
    """An HttpClient that counts what it sends (a complete rerun must send nothing)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[HttpRequest] = []

    def send(self, request: HttpRequest) -> HttpResponse:
        self.sent.append(request)
        return super().send(request)


class FakeTime:
    """A monotonic clock that only sleeps move (each sleep is recorded, and really short)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


# -- expected data: the simulator market's own -----------------------------------------------------


def market_trades(sim: SimThread, start: int, end: int) -> list[tuple[int, int, str, str, str]]:
    """``(trade_id, ts_ms, price, qty, side)`` of the market in ``[start, end)``, as the venue writes them."""
    ex = sim.exchange
    symbol = SIM_SYMBOL[ex]
    spec = sim.server.market.specs[symbol]
    trades: list[SimTrade] = sim.call(
        lambda: sim.server.market.trades(symbol, start_ms=start, end_ms=end, limit=10**7)
    )
    text = TEXT[ex]
    return [
        (t.trade_id, t.ts_ms, text(t.price, spec.price_precision), text(t.qty, spec.qty_precision), t.side)
        for t in trades
    ]


def market_candles(
    sim: SimThread, interval_ms: int, start: int, end: int
) -> list[tuple[int, str, str, str, str, str, int]]:
    """``(open, o, h, l, c, volume, trades)`` of the market's candles opening in ``[start, end)``."""
    ex = sim.exchange
    symbol = SIM_SYMBOL[ex]
    spec = sim.server.market.specs[symbol]
    candles: list[SimCandle] = sim.call(
        lambda: sim.server.market.candles(symbol, interval_ms, start, end, limit=10**7)
    )
    text = TEXT[ex]
    pp, qp = spec.price_precision, spec.qty_precision
    return [
        (
            c.open_ms,
            text(c.open, pp),
            text(c.high, pp),
            text(c.low, pp),
            text(c.close, pp),
            text(c.volume, qp),
            c.trades,
        )
        for c in candles
    ]


def stored_trades(root: Path, ex: str) -> list[tuple[int, int, str, str, str]]:
    cols = HistoryStore(root, ex, USER_SYMBOL[ex], "trades").read().to_pydict()
    return list(zip(cols["trade_id"], cols["ts_ms"], cols["price"], cols["qty"], cols["side"], strict=True))


def check_candles(root: Path, sim: SimThread, interval: str, start: int, end: int) -> int:
    """The stored candles are the market's (exact text); venues that list empty intervals
    (Binance, Kraken OHLC) have them flat at the previous close with no volume. Returns the count."""
    ex = sim.exchange
    interval_ms = INTERVALS[interval].ms
    cols = HistoryStore(root, ex, USER_SYMBOL[ex], f"candles_{interval}").read().to_pydict()
    opens = cols["open_time_ms"]
    assert opens == sorted(set(opens)), "sorted, no duplicate open times"
    assert all(start <= o < end for o in opens)
    traded = []
    previous_close: str | None = None
    for i, open_ms in enumerate(opens):
        row = (open_ms, cols["open"][i], cols["high"][i], cols["low"][i], cols["close"][i], cols["volume"][i])
        if Decimal(cols["volume"][i]) == 0:
            assert previous_close is None or len({*row[1:5]}) == 1, f"empty interval not flat: {row}"
            if previous_close is not None:
                assert Decimal(row[1]) == Decimal(previous_close)
        else:
            traded.append((*row, cols["trades"][i]))
        previous_close = cols["close"][i]
    expected = market_candles(sim, interval_ms, start, end)
    if ex == "bitfinex":  # Bitfinex candles carry no trade count
        assert [r[:6] for r in traded] == [e[:6] for e in expected]
        assert set(cols["trades"]) <= {None}
    else:
        assert traded == expected
    assert expected, "the range must hold some trades for the test to mean anything"
    return len(opens)


def check_day_files(store: HistoryStore, times: list[int]) -> None:
    days = {f"{t // DAY * DAY}" for t in times}
    assert len(store.day_files()) == len(days)


def midnight_range(sim: SimThread, before: int, after: int) -> tuple[int, int]:
    """A minute-aligned range of the simulated past around the last UTC midnight."""
    now = sim.now_ms()
    midnight = now // DAY * DAY
    past_start = sim.server.market.past_start_ms
    start = max(past_start + MIN, midnight - before)
    end = min(now // MIN * MIN - 2 * MIN, midnight + after)
    return start, end


def options(sim: SimThread, root: Path, kind: str, start: int, end: int, **kw: Any) -> FetchOptions:
    interval = kw.pop("interval", "1m" if kind == "candles" else None)
    return FetchOptions(
        sim.exchange,
        USER_SYMBOL[sim.exchange],
        kind,
        interval,
        start,
        end,
        root,
        rest_url=sim.rest_url,
        pace_s=kw.pop("pace_s", 0),
        **kw,
    )


# -- every venue -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ex", VENUES)
def test_candles_equal_the_markets_stored_per_day_and_loadable(
    sims: dict[str, SimThread], tmp_path: Path, ex: str
) -> None:
    sim = sims[ex]
    if ex == "kraken":  # inside Kraken's 720-candle OHLC window
        now = sim.now_ms() // MIN * MIN
        start, end = now - 3 * HOUR, now - HOUR
    else:
        start, end = midnight_range(sim, 90 * MIN, 90 * MIN)
    result = fetch_history(options(sim, tmp_path, "candles", start, end, page_limit=50), now_ms=sim.now_ms())
    count = check_candles(tmp_path, sim, "1m", start, end)
    assert result.rows == count and result.dataset == "candles_1m"
    assert result.fetched_ranges == ((start, end),) and result.skipped_ranges == ()
    # Binance lists every minute, Bitfinex only those with trades: pages of 50 rows either way
    pages = 1 if ex == "kraken" else -(-count // 50)
    assert result.requests >= pages and result.retries == 0
    store = HistoryStore(tmp_path, ex, USER_SYMBOL[ex], "candles_1m")
    assert result.path == store.path and store.coverage() == [(start, end)]
    assert store.source() == sim.rest_url
    frame = load_candles(tmp_path, ex, USER_SYMBOL[ex], "1m")
    check_day_files(store, frame["open_time_ms"].tolist())
    assert len(frame) == count
    assert frame["close"].tolist() == [float(t) for t in frame["close_text"]]
    assert frame["volume"].tolist() == [float(t) for t in frame["volume_text"]]
    assert not [
        n for n in frame.columns if n.endswith("_text") and frame[n].isna().all() and n != "quote_volume_text"
    ]


@pytest.mark.parametrize("ex", ["binance", "bitfinex"])
def test_longer_intervals(sims: dict[str, SimThread], tmp_path: Path, ex: str) -> None:
    sim = sims[ex]
    start, end = midnight_range(sim, 6 * HOUR, 2 * HOUR)
    start = -(-start // HOUR) * HOUR
    end = end // HOUR * HOUR
    fetch_history(
        options(sim, tmp_path, "candles", start, end, interval="1h", page_limit=3), now_ms=sim.now_ms()
    )
    check_candles(tmp_path, sim, "1h", start, end)


@pytest.mark.parametrize("ex", VENUES)
def test_trades_equal_the_markets_stored_per_day_and_loadable(
    sims: dict[str, SimThread], tmp_path: Path, ex: str
) -> None:
    sim = sims[ex]
    start, end = midnight_range(sim, 40 * MIN, 40 * MIN)
    start += 12_345  # not aligned to anything
    result = fetch_history(options(sim, tmp_path, "trades", start, end, page_limit=20), now_ms=sim.now_ms())
    expected = market_trades(sim, start, end)
    assert len(expected) > 60
    assert stored_trades(tmp_path, ex) == expected
    assert result.rows == len(expected) and result.requests >= len(expected) // 20
    store = HistoryStore(tmp_path, ex, USER_SYMBOL[ex], "trades")
    assert store.coverage() == [(start, end)]
    frame = load_trades(tmp_path, ex, USER_SYMBOL[ex])
    check_day_files(store, frame["ts_ms"].tolist())
    assert frame["trade_id"].tolist() == [t[0] for t in expected]
    assert frame["price_text"].tolist() == [t[2] for t in expected]
    assert frame["qty_text"].tolist() == [t[3] for t in expected]
    assert frame["price"].tolist() == [float(t[2]) for t in expected]
    assert frame["side"].tolist() == [t[4] for t in expected]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ex=st.sampled_from(VENUES),
    offsets=st.lists(st.integers(0, 40 * MIN), min_size=2, max_size=4),
    page=st.integers(7, 60),
)
def test_overlapping_fetches_with_any_page_size_store_each_trade_once(
    sims: dict[str, SimThread], ex: str, offsets: list[int], page: int
) -> None:
    sim = sims[ex]
    base, _ = midnight_range(sim, 50 * MIN, 0)
    cuts = sorted(base + o for o in offsets)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for a, b in zip(cuts, cuts[2:] + cuts[-1:], strict=False):  # overlapping pieces first
            if a < b:
                fetch_history(options(sim, root, "trades", a, b, page_limit=page), now_ms=sim.now_ms())
        result = fetch_history(options(sim, root, "trades", cuts[0], cuts[-1] + 1), now_ms=sim.now_ms())
        assert stored_trades(root, ex) == market_trades(sim, cuts[0], cuts[-1] + 1)
        assert HistoryStore(root, ex, USER_SYMBOL[ex], "trades").coverage() == [(cuts[0], cuts[-1] + 1)]
        assert sum(e - s for s, e in result.fetched_ranges) + sum(
            e - s for s, e in result.skipped_ranges
        ) == (cuts[-1] + 1 - cuts[0])


# -- already stored, empty, pacing, bad options ------------------------------------------------------


def test_a_complete_range_is_not_fetched_again(sims: dict[str, SimThread], tmp_path: Path) -> None:
    sim = sims["binance"]
    start, end = midnight_range(sim, 30 * MIN, 0)
    fetch_history(options(sim, tmp_path, "candles", start, end, page_limit=10), now_ms=sim.now_ms())
    client = CountingClient()
    with client:
        again = fetch_history(
            options(sim, tmp_path, "candles", start, end), client=client, now_ms=sim.now_ms()
        )
        inner = fetch_history(
            options(sim, tmp_path, "candles", start + 5 * MIN, end - 5 * MIN),
            client=client,
            now_ms=sim.now_ms(),
        )
    assert client.sent == [] and again.requests == 0 and inner.requests == 0
    assert again.rows == 0 and again.fetched_ranges == () and again.skipped_ranges == ((start, end),)
    assert any("already stored" in n for n in again.notes)
    wider = fetch_history(options(sim, tmp_path, "candles", start - 10 * MIN, end), now_ms=sim.now_ms())
    assert wider.fetched_ranges == ((start - 10 * MIN, start),) and wider.rows == 10
    check_candles(tmp_path, sim, "1m", start - 10 * MIN, end)


@pytest.mark.parametrize("ex", VENUES)
@pytest.mark.parametrize("kind", ["candles", "trades"])
def test_an_empty_range_is_covered_with_no_rows(
    sims: dict[str, SimThread], tmp_path: Path, ex: str, kind: str
) -> None:
    sim = sims[ex]
    past = sim.server.market.past_start_ms
    start, end = past - 3 * HOUR, past - 2 * HOUR  # before the market's first trade
    result = fetch_history(options(sim, tmp_path, kind, start, end), now_ms=sim.now_ms())
    assert result.rows == 0 and result.requests >= 1
    dataset = "trades" if kind == "trades" else "candles_1m"
    store = HistoryStore(tmp_path, ex, USER_SYMBOL[ex], dataset)
    assert store.coverage() == [(start, end)] and store.read().num_rows == 0
    again = fetch_history(options(sim, tmp_path, kind, start, end), now_ms=sim.now_ms())
    assert again.requests == 0


def test_requests_are_paced_per_endpoint_kind(sims: dict[str, SimThread], tmp_path: Path) -> None:
    sim = sims["kraken"]
    start, end = midnight_range(sim, 20 * MIN, 0)
    fake = FakeTime()
    result = fetch_history(
        options(sim, tmp_path, "trades", start, end, page_limit=10, pace_s=None),
        sleep=fake.sleep,
        clock=fake.clock,
        now_ms=sim.now_ms(),
    )
    assert result.requests >= 3
    assert fake.sleeps == [pytest.approx(1.0)] * (result.requests - 1)  # Kraken: <= 1 request/s
    fake = FakeTime()
    fetch_history(
        options(sim, tmp_path / "b", "trades", start, end, page_limit=10, pace_s=0.25),
        sleep=fake.sleep,
        clock=fake.clock,
        now_ms=sim.now_ms(),
    )
    assert fake.sleeps == [pytest.approx(0.25)] * (result.requests - 1)


def test_bad_options_are_clear_config_errors(tmp_path: Path) -> None:
    now = 1_763_600_000_000
    url = "http://127.0.0.1:9"  # nothing listens: a request would fail differently

    def run(**kw: Any) -> None:
        base: dict[str, Any] = {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "kind": "candles",
            "interval": "1m",
            "start_ms": now - DAY,
            "end_ms": now - HOUR,
            "out_root": tmp_path,
            "rest_url": url,
        }
        with HttpClient(retries=0) as client:  # a case that got as far as a request fails at once
            fetch_history(FetchOptions(**(base | kw)), client=client, now_ms=now)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"start_ms": now - HOUR, "end_ms": now - DAY}, "empty range"),
        ({"end_ms": now - DAY}, "empty range"),
        ({"start_ms": now + HOUR, "end_ms": now + DAY}, "future"),
        ({"kind": "trades", "interval": None, "start_ms": now - 500, "end_ms": now + 1000}, "future"),
        ({"kind": "orders"}, "candles or trades"),
        ({"interval": "2m"}, "interval"),
        ({"exchange": "kraken", "symbol": "BTC/USD", "interval": "1W"}, "1W"),
        ({"exchange": "bitfinex", "symbol": "BTC/USD", "interval": "4h"}, "4h"),
        ({"exchange": "nasdaq"}, "nasdaq"),
        ({"page_limit": 0}, "page limit"),
        ({"page_limit": 1001}, "page limit"),
        ({"pace_s": -1.0}, "pace"),
        ({"retries": -1}, "retries"),
        ({"flush_rows": 0}, "flush_rows"),
        ({"start_ms": -5}, "start"),
    ]
    for kw, words in cases:
        with pytest.raises(ConfigError, match=words):
            run(**kw)
    assert list(tmp_path.iterdir()) == []


def test_the_end_is_clipped_to_closed_candles(sims: dict[str, SimThread], tmp_path: Path) -> None:
    sim = sims["bitfinex"]
    now = sim.now_ms()
    result = fetch_history(
        options(sim, tmp_path, "candles", now // MIN * MIN - 5 * MIN, now + HOUR), now_ms=now
    )
    store = HistoryStore(tmp_path, "bitfinex", "BTC/USD", "candles_1m")
    assert store.coverage() == [(now // MIN * MIN - 5 * MIN, now // MIN * MIN)]
    assert all(o + MIN <= now for o in store.read().column("open_time_ms").to_pylist())
    assert any("clipped" in n for n in result.notes)


# -- faults ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ex", "kind", "fault"),
    [
        ("binance", "trades", "rest_429_every"),
        ("binance", "candles", "rest_418_every"),
        ("bitfinex", "trades", "rest_5xx_every"),
        ("kraken", "trades", "rest_429_every"),
    ],
)
def test_rate_limits_and_server_errors_are_waited_out(tmp_path: Path, ex: str, kind: str, fault: str) -> None:
    plan = FaultPlan(**cast(dict[str, Any], {fault: 3}), retry_after_s=2)
    with SimThread(ex, [SIM_SYMBOL[ex]], seed=3, faults=plan) as sim:
        start, end = midnight_range(sim, 60 * MIN, 0)
        fake = FakeTime()
        client = CountingClient(retries=8, sleep=fake.sleep, clock=fake.clock)
        with client:
            result = fetch_history(
                options(sim, tmp_path, kind, start, end, page_limit=10), client=client, now_ms=sim.now_ms()
            )
        served = sim.call(lambda: sim.server._rest_faults.requests)  # every HTTP request the server saw
        faulted = served // 3
        assert (
            faulted >= 2
            and result.retries == faulted
            and result.requests == served == len(client.sent) + faulted
        )
        # every wait is the server's Retry-After (a 418 ban is waited out in full), nothing else
        assert fake.sleeps == [pytest.approx(2.0)] * faulted
        if kind == "trades":
            assert stored_trades(tmp_path, ex) == market_trades(sim, start, end)
        else:
            check_candles(tmp_path, sim, "1m", start, end)


def test_a_kraken_rate_limit_in_a_200_body_resends_the_same_request(
    sims: dict[str, SimThread], tmp_path: Path
) -> None:
    sim = sims["kraken"]
    start, end = midnight_range(sim, 20 * MIN, 0)

    class KrakenLimited(CountingClient):
        def send(self, request: HttpRequest) -> HttpResponse:
            response = super().send(request)
            if len(self.sent) % 2:
                body = '{"error":["EAPI:Rate limit exceeded"]}'
                return HttpResponse(200, body, response.headers, response.url, 0.0, 1)
            return response

    fake = FakeTime()
    client = KrakenLimited()
    with client:
        result = fetch_history(
            options(sim, tmp_path, "trades", start, end, page_limit=40),
            client=client,
            sleep=fake.sleep,
            clock=fake.clock,
            now_ms=sim.now_ms(),
        )
    assert [r.params for r in client.sent[0::2]] == [r.params for r in client.sent[1::2]]
    assert result.retries == len(client.sent) // 2 and len(fake.sleeps) == result.retries
    assert stored_trades(tmp_path, "kraken") == market_trades(sim, start, end)


def test_retries_exhausted_keep_what_was_fetched(tmp_path: Path) -> None:
    plan = FaultPlan(rest_5xx_every=1, retry_after_s=0)  # every request fails
    with SimThread("binance", ["BTCUSDT"], seed=3, faults=plan) as sim:
        start, end = midnight_range(sim, 30 * MIN, 0)
        with pytest.raises(MMDataError, match="503"):
            fetch_history(options(sim, tmp_path, "trades", start, end, retries=1), now_ms=sim.now_ms())
    assert HistoryStore(tmp_path, "binance", "BTCUSDT", "trades").coverage() == []


def test_a_venue_error_mid_fetch_keeps_the_pages_before_it(
    sims: dict[str, SimThread], tmp_path: Path
) -> None:
    sim = sims["bitfinex"]
    start, end = midnight_range(sim, 60 * MIN, 0)

    class FailsFourth(CountingClient):
        def send(self, request: HttpRequest) -> HttpResponse:
            if len(self.sent) == 3:
                raise HttpError("HTTP 500 from the venue", status=500, url=request.url)
            return super().send(request)

    client = FailsFourth()
    with client, pytest.raises(HttpError):
        fetch_history(
            options(sim, tmp_path, "trades", start, end, page_limit=10), client=client, now_ms=sim.now_ms()
        )
    store = HistoryStore(tmp_path, "bitfinex", "BTC/USD", "trades")
    ((lo, hi),) = store.coverage()
    assert lo == start and start < hi < end
    assert len(stored_trades(tmp_path, "bitfinex")) >= 25
    fetch_history(options(sim, tmp_path, "trades", start, end, page_limit=10), now_ms=sim.now_ms())
    assert stored_trades(tmp_path, "bitfinex") == market_trades(sim, start, end)


# -- resume -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flush_rows", [50_000, 15])
def test_an_interrupted_fetch_resumes_to_the_same_result(
    sims: dict[str, SimThread], tmp_path: Path, flush_rows: int
) -> None:
    sim = sims["binance"]
    start, end = midnight_range(sim, 40 * MIN, 40 * MIN)
    expected = market_trades(sim, start, end)
    pages = 0

    def interrupt(done: int, total: int) -> None:
        nonlocal pages
        pages += 1
        if pages == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_history(
            options(sim, tmp_path, "trades", start, end, page_limit=10, flush_rows=flush_rows),
            progress=interrupt,
            now_ms=sim.now_ms(),
        )
    store = HistoryStore(tmp_path, "binance", "BTCUSDT", "trades")
    (covered,) = store.coverage()  # what the 4 pages were saved as, even without a flush_rows flush
    assert covered[0] == start and start < covered[1] < end
    stored = stored_trades(tmp_path, "binance")
    assert len(stored) >= 30 and set(stored) <= set(expected)
    assert [t for t in expected if t[1] < covered[1]] == [t for t in stored if t[1] < covered[1]]
    result = fetch_history(options(sim, tmp_path, "trades", start, end, page_limit=10), now_ms=sim.now_ms())
    assert result.fetched_ranges == ((covered[1], end),) and result.skipped_ranges == ((start, covered[1]),)
    assert stored_trades(tmp_path, "binance") == expected
    assert result.rows == len(expected) - len(stored)
    assert store.coverage() == [(start, end)]


def test_a_killed_fetch_resumes_to_the_same_result_as_an_uninterrupted_one(
    sims: dict[str, SimThread], tmp_path: Path
) -> None:
    sim = sims["binance"]
    start, end = midnight_range(sim, 60 * MIN, 60 * MIN)
    now = sim.now_ms()
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    code = (
        "from pathlib import Path\n"
        "from mmdata.history.fetch import FetchOptions, fetch_history\n"
        f"o = FetchOptions('binance', 'BTC/USDT', 'trades', None, {start}, {end}, Path({str(killed)!r}),"
        f" rest_url={sim.rest_url!r}, page_limit=5, pace_s=0.05, flush_rows=1)\n"
        f"fetch_history(o, progress=lambda d, t: print(d, t, flush=True), now_ms={now})\n"
        "print('finished', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(8)]
        assert all(line and line != "finished\n" for line in lines), lines
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
    expected = market_trades(sim, start, end)
    store = HistoryStore(killed, "binance", "BTCUSDT", "trades")
    (covered,) = store.coverage()
    assert start < covered[1] < end
    stored = stored_trades(killed, "binance")
    assert set(stored) <= set(expected) and len(stored) == len(set(stored))
    assert [t for t in expected if t[1] < covered[1]] == [t for t in stored if t[1] < covered[1]]
    resumed = fetch_history(options(sim, killed, "trades", start, end, page_limit=5), now_ms=now)
    assert resumed.skipped_ranges == ((start, covered[1]),)
    fetch_history(options(sim, clean, "trades", start, end, page_limit=5), now_ms=now)
    killed_table = store.read()
    clean_table = HistoryStore(clean, "binance", "BTCUSDT", "trades").read()
    assert killed_table.equals(clean_table)
    assert stored_trades(killed, "binance") == expected
    assert store.coverage() == [(start, end)]


# -- Kraken older than its OHLC window ---------------------------------------------------------------------


def test_old_kraken_candles_are_built_from_trades_and_say_so(
    sims: dict[str, SimThread], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sims["kraken"]
    past = sim.server.market.past_start_ms
    start, end = past + 30 * MIN, past + 100 * MIN  # older than 720 minutes
    with caplog.at_level(logging.WARNING, "mmdata.history"):
        result = fetch_history(
            options(sim, tmp_path, "candles", start, end, page_limit=100), now_ms=sim.now_ms()
        )
    note = next(n for n in result.notes if "720" in n)
    assert "built from Trades" in note and "Kraken serves only the 720 most recent 1m candles" in note
    assert "built from Trades" in caplog.text
    check_candles(tmp_path, sim, "1m", start, end)
    assert stored_trades(tmp_path, "kraken") == market_trades(sim, start, end)
    candles = HistoryStore(tmp_path, "kraken", "BTC/USD", "candles_1m")
    assert candles.coverage() == [(start, end)]
    volume = candles.read().column("volume").to_pylist()
    assert all(Decimal(v) > 0 for v in volume)  # only intervals with trades
    again = fetch_history(options(sim, tmp_path, "candles", start, end), now_ms=sim.now_ms())
    assert again.requests == 0
    # candles lost (coverage deleted): rebuilt from the Kraken trades already stored, no request
    candles.coverage_path.unlink()
    rebuilt = fetch_history(options(sim, tmp_path, "candles", start, end), now_ms=sim.now_ms())
    assert rebuilt.requests == 0 and rebuilt.rows == 0
    check_candles(tmp_path, sim, "1m", start, end)


def test_a_kraken_range_across_the_window_edge_uses_both(sims: dict[str, SimThread], tmp_path: Path) -> None:
    sim = sims["kraken"]
    now = sim.now_ms()
    start, end = now // MIN * MIN - 740 * MIN, now // MIN * MIN - 700 * MIN
    result = fetch_history(options(sim, tmp_path, "candles", start, end, page_limit=100), now_ms=now)
    assert any("built from Trades" in n for n in result.notes)
    check_candles(tmp_path, sim, "1m", start, end)
    assert HistoryStore(tmp_path, "kraken", "BTC/USD", "candles_1m").coverage() == [(start, end)]
