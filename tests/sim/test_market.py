"""Tests of :mod:`mmdata.sim.market`: the seeded synthetic market.

Every property is checked against an independent model: a book replayed from the steps'
changes into plain dicts, trades filtered by brute force, candles aggregated by brute force
from ``trades()``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmdata import exchanges
from mmdata.errors import ConfigError
from mmdata.sim.market import MINUTE_MS, SyntheticMarket, default_specs
from mmdata.sim.model import InstrumentSpec, MarketStep, SimTrade, js_number_text
from tests.sim.oracles import brute_candles

START = 1_700_000_000_123  # deliberately not on a minute boundary
DAY = 86_400_000

# A tiny odd instrument: few levels, a tick of 5 units, price close to zero.
TINY = InstrumentSpec("TINYUSDT", 2, 0, 60, tick=5, levels=3)


def _specs() -> list[InstrumentSpec]:
    return [
        *default_specs("binance", ["BTCUSDT", "DOGEUSDT"]),
        *default_specs("bitfinex", ["tXRPBTC"]),
        TINY,
    ]


def _drive(market: SyntheticMarket, symbols: list[str], steps: int, spacing_ms: int = 7) -> list[MarketStep]:
    """Round-robin steps over ``symbols``, time advancing ``spacing_ms`` per step."""
    out = []
    for i in range(steps):
        sym = symbols[i % len(symbols)]
        out.append(market.step(sym, START + i * spacing_ms))
    return out


Book = tuple[dict[int, int], dict[int, int]]


def _as_dicts(market: SyntheticMarket, symbol: str) -> Book:
    bids, asks = market.book(symbol)
    return dict(bids), dict(asks)


def _apply(book: Book, step: MarketStep) -> None:
    for ch in step.changes:
        side = book[0] if ch.side == "bid" else book[1]
        if ch.qty == 0:
            del side[ch.price]  # KeyError: removal of a level that does not exist
        else:
            side[ch.price] = ch.qty


def _sorted_book(book: Book) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    return sorted(book[0].items(), reverse=True), sorted(book[1].items())


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_everything() -> None:
    a = SyntheticMarket(_specs(), seed=7, start_ms=START)
    b = SyntheticMarket(_specs(), seed=7, start_ms=START)
    symbols = list(a.specs)
    assert _drive(a, symbols, 3000) == _drive(b, symbols, 3000)
    for sym in symbols:
        assert a.book(sym) == b.book(sym)
        assert a.update_id(sym) == b.update_id(sym)
        assert a.trades(sym, start_ms=START - DAY, limit=10**6) == b.trades(
            sym, start_ms=START - DAY, limit=10**6
        )
        assert a.candles(sym, 3_600_000, START - DAY, START + DAY) == b.candles(
            sym, 3_600_000, START - DAY, START + DAY
        )


def test_other_seed_differs() -> None:
    a = SyntheticMarket(_specs(), seed=1, start_ms=START)
    b = SyntheticMarket(_specs(), seed=2, start_ms=START)
    assert a.book("BTCUSDT") != b.book("BTCUSDT")
    assert a.trades("BTCUSDT", limit=50) != b.trades("BTCUSDT", limit=50)
    assert _drive(a, ["BTCUSDT"], 50) != _drive(b, ["BTCUSDT"], 50)


def test_symbols_do_not_perturb_each_other() -> None:
    alone = SyntheticMarket(_specs(), seed=3, start_ms=START)
    busy = SyntheticMarket(_specs(), seed=3, start_ms=START)
    only_btc = [alone.step("BTCUSDT", START + i) for i in range(500)]
    mixed = []
    for i in range(500):
        busy.step("DOGEUSDT", START + i)
        mixed.append(busy.step("BTCUSDT", START + i))
        busy.step("tXRPBTC", START + i)
    assert only_btc == mixed
    # Construction order of instruments does not matter either.
    reordered = SyntheticMarket(list(reversed(_specs())), seed=3, start_ms=START)
    assert reordered.book("BTCUSDT") == SyntheticMarket(_specs(), seed=3, start_ms=START).book("BTCUSDT")


# --------------------------------------------------------------------------- live book


@pytest.mark.parametrize("symbol", ["BTCUSDT", "DOGEUSDT", "tXRPBTC", "TINYUSDT"])
def test_steps_replay_to_the_book_and_never_cross(symbol: str) -> None:
    market = SyntheticMarket(_specs(), seed=11, start_ms=START, past_days=0)
    spec = market.specs[symbol]
    book = _as_dicts(market, symbol)
    last_id = market.update_id(symbol)
    assert last_id > 1000
    kinds: Counter[str] = Counter()
    for i in range(20_000):
        step = market.step(symbol, START + i)
        assert step.symbol == symbol
        assert step.ts_ms == START + i
        assert step.changes, "a step has at least one change"
        assert step.first_id == last_id + 1
        assert step.last_id == step.first_id + len(step.changes) - 1
        last_id = step.last_id
        touched = [(c.side, c.price) for c in step.changes]
        assert len(touched) == len(set(touched)), "a (side, price) at most once per step"
        assert all(c.qty >= 0 and c.price > 0 and c.price % spec.tick == 0 for c in step.changes)
        _apply(book, step)
        # Applying the changes in order never crosses (checked after every step).
        (best_bid, _), (best_ask, _) = max(book[0].items()), min(book[1].items())
        assert best_bid < best_ask
        assert 0 < len(book[0]) <= spec.levels and 0 < len(book[1]) <= spec.levels
        top_bids, top_asks = market.top(symbol, 1)
        assert top_bids == [(best_bid, book[0][best_bid])] and top_asks == [(best_ask, book[1][best_ask])]
        kinds["trade" if step.trades else ("multi" if len(step.changes) > 1 else "single")] += 1
        if i % 2000 == 0:
            assert market.book(symbol) == _sorted_book(book)
    assert market.book(symbol) == _sorted_book(book)
    assert market.update_id(symbol) == last_id
    # The event mix: mostly single-level changes, ~15 % trades.
    assert 0.08 < kinds["trade"] / 20_000 < 0.2
    assert kinds["single"] > kinds["multi"]
    if spec.levels >= 25:
        assert min(len(book[0]), len(book[1])) >= spec.levels - 5


def test_book_shape_and_top() -> None:
    market = SyntheticMarket(_specs(), seed=5, start_ms=START, past_days=0)
    _drive(market, ["BTCUSDT"], 5000)
    bids, asks = market.book("BTCUSDT")
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert len(bids) == len(asks) == 200
    assert all(q > 0 for _, q in bids + asks)
    assert market.top("BTCUSDT", 10) == (bids[:10], asks[:10])
    assert market.top("BTCUSDT", 1000) == (bids, asks)
    assert market.top("BTCUSDT", 0) == ([], [])
    # The mid stays near start_price (mean reversion) and the top of the book stays dense.
    spec = market.specs["BTCUSDT"]
    assert abs(bids[0][0] - spec.start_price) < spec.start_price * 0.05
    assert asks[0][0] - bids[0][0] < 50 * spec.tick
    assert bids[0][0] - bids[9][0] < 100 * spec.tick


def test_trades_consume_the_opposite_side() -> None:
    market = SyntheticMarket(_specs(), seed=13, start_ms=START, past_days=0)
    for symbol in ("BTCUSDT", "tXRPBTC"):
        book = _as_dicts(market, symbol)
        seen = Counter[str]()
        for i in range(6000):
            before = (dict(book[0]), dict(book[1]))
            step = market.step(symbol, START + i)
            _apply(book, step)
            if not step.trades:
                continue
            taker = {t.side for t in step.trades}
            assert len(taker) == 1, "one taker per step"
            side = taker.pop()
            seen[side] += 1
            maker_before = before[1] if side == "buy" else before[0]
            maker_after = book[1] if side == "buy" else book[0]
            filled: Counter[int] = Counter()
            for t in step.trades:
                assert t.ts_ms == step.ts_ms and t.qty > 0
                filled[t.price] += t.qty
            # The taker walked the best levels in order, only the last one possibly partially.
            best_first = sorted(maker_before, reverse=(side == "sell"))
            assert sorted(filled, reverse=(side == "sell")) == best_first[: len(filled)]
            for price, qty in filled.items():
                assert maker_after.get(price, 0) == maker_before[price] - qty
                change = [c for c in step.changes if c.price == price]
                assert len(change) == 1
                assert change[0].side == ("ask" if side == "buy" else "bid")
                assert change[0].qty == maker_before[price] - qty
        assert seen["buy"] > 50 and seen["sell"] > 50


def test_step_time_is_clamped() -> None:
    market = SyntheticMarket(_specs(), seed=1, start_ms=START, past_days=1)
    assert market.step("BTCUSDT", START - 10_000).ts_ms == START
    assert market.step("BTCUSDT", START + 500).ts_ms == START + 500
    assert market.step("BTCUSDT", START + 100).ts_ms == START + 500
    assert market.step("DOGEUSDT", START + 100).ts_ms == START + 100  # per symbol


# --------------------------------------------------------------------------- trades


def test_thirty_days_of_past_and_ids_contiguous_into_live() -> None:
    market = SyntheticMarket(default_specs("kraken", ["BTC/USD"]), seed=21, start_ms=START)
    aligned = START - START % MINUTE_MS
    assert market.past_start_ms == aligned - 30 * DAY
    steps = _drive(market, ["BTC/USD"], 4000, spacing_ms=50)
    live = [t for s in steps for t in s.trades]
    assert live
    every = market.trades("BTC/USD", limit=10**7)
    first, nxt = market.trade_id_range("BTC/USD")
    assert [t.trade_id for t in every] == list(range(first, nxt))
    assert every[-len(live) :] == live
    past = every[: -len(live)]
    assert past[-1].trade_id + 1 == live[0].trade_id
    # >= 30 days, timestamps strictly inside their minute and never decreasing.
    assert past[0].ts_ms < market.past_start_ms + DAY // 24
    assert past[-1].ts_ms > aligned - DAY // 24
    assert all(market.past_start_ms < t.ts_ms < aligned and t.ts_ms % MINUTE_MS != 0 for t in past)
    assert all(a.ts_ms <= b.ts_ms for a, b in pairwise(every))
    # Some minutes are empty, none is very busy, and the path ends near start_price.
    per_minute = Counter(t.ts_ms // MINUTE_MS for t in past)
    assert len(per_minute) < 30 * 1440 * 0.9
    assert max(per_minute.values()) <= 20
    start_price = market.specs["BTC/USD"].start_price
    assert abs(past[-1].price - start_price) < start_price * 0.01
    assert {t.side for t in past} == {"buy", "sell"}


def test_live_trades_cap_drops_the_oldest() -> None:
    market = SyntheticMarket(_specs(), seed=4, start_ms=START, past_days=1, live_trades_cap=64)
    past_first, past_next = market.trade_id_range("BTCUSDT")
    steps = _drive(market, ["BTCUSDT"], 3000, spacing_ms=100)
    live = [t for s in steps for t in s.trades]
    assert len(live) > 200
    first, nxt = market.trade_id_range("BTCUSDT")
    assert (first, nxt) == (past_first, live[-1].trade_id + 1)
    kept = market.trades("BTCUSDT", from_id=past_next, limit=10**6)
    assert 0 < len(kept) <= 64
    assert kept == live[-len(kept) :]
    newest = market.trades("BTCUSDT", limit=10, newest_first=True)
    assert newest == list(reversed(live[-10:]))
    # Candles keep the dropped trades: their counts cover every live trade.
    candles = market.candles("BTCUSDT", MINUTE_MS, START - START % MINUTE_MS, START + DAY, limit=10_000)
    assert sum(c.trades for c in candles) == len(live)


def test_trades_empty_and_limits() -> None:
    market = SyntheticMarket(_specs(), seed=2, start_ms=START, past_days=1)
    assert market.trades("BTCUSDT", limit=0) == []
    assert market.trades("BTCUSDT", start_ms=START + DAY) == []
    assert market.trades("BTCUSDT", end_ms=market.past_start_ms) == []
    assert len(market.trades("BTCUSDT")) == 1000  # the protocol's default limit
    with pytest.raises(KeyError):
        market.trades("NOPE")


@pytest.fixture(scope="module")
def small_market() -> Iterator[tuple[SyntheticMarket, list[SimTrade]]]:
    """Two days of past plus a few live minutes on BTCUSDT; every trade listed once."""
    market = SyntheticMarket(_specs(), seed=99, start_ms=START, past_days=2)
    _drive(market, ["BTCUSDT"], 6000, spacing_ms=60)  # ~6 live minutes, running one included
    every = market.trades("BTCUSDT", limit=10**7)
    assert len(every) > 5000
    yield market, every


def _bounds(market: SyntheticMarket) -> tuple[int, int]:
    return market.past_start_ms - 3 * 3_600_000, START + 3_600_000


@st.composite
def _trade_queries(draw: st.DrawFn) -> tuple[int | None, int | None, int | None, int, bool]:
    lo, hi = START - 2 * DAY - 3 * 3_600_000, START + 3_600_000
    near_start = st.integers(START - 600_000, START + 600_000)
    anywhere = st.integers(lo, hi)
    start = draw(st.none() | anywhere | near_start)
    end = draw(st.none() | anywhere | near_start)
    from_id = draw(st.none() | st.integers(0, 200_000_000))
    limit = draw(st.sampled_from([1, 2, 7, 1000]) | st.integers(1, 20_000))
    return start, end, from_id, limit, draw(st.booleans())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_trade_queries(), id_shift=st.integers(-50, 5000), exact=st.sampled_from([None, "start", "end"]))
def test_trades_filters_match_brute_force(
    small_market: tuple[SyntheticMarket, list[SimTrade]],
    query: tuple[int | None, int | None, int | None, int, bool],
    id_shift: int,
    exact: str | None,
) -> None:
    market, every = small_market
    start, end, from_id, limit, newest_first = query
    if from_id is not None and from_id % 2:
        from_id = every[0].trade_id + id_shift  # ids that exist (or close to them)
    # Bounds exactly on a trade's timestamp (past or live), where off-by-ones hide.
    if exact == "start":
        start = every[id_shift % len(every)].ts_ms
    elif exact == "end":
        end = every[-1 - id_shift % len(every)].ts_ms
    got = market.trades(
        "BTCUSDT", start_ms=start, end_ms=end, from_id=from_id, limit=limit, newest_first=newest_first
    )
    expected = [
        t
        for t in every
        if (start is None or t.ts_ms >= start)
        and (end is None or t.ts_ms < end)
        and (from_id is None or t.trade_id >= from_id)
    ]
    expected = list(reversed(expected))[:limit] if newest_first else expected[:limit]
    assert got == expected


INTERVALS = [MINUTE_MS, 5 * MINUTE_MS, 3_600_000, DAY, 1000, 7 * MINUTE_MS + 500]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    interval=st.sampled_from(INTERVALS),
    start=st.integers(START - 2 * DAY - 3 * 3_600_000, START + 3_600_000),
    span=st.integers(0, 3 * DAY),
    limit=st.sampled_from([1, 3, 500, 1000]) | st.integers(1, 5000),
)
def test_candles_match_brute_force(
    small_market: tuple[SyntheticMarket, list[SimTrade]], interval: int, start: int, span: int, limit: int
) -> None:
    market, every = small_market
    got = market.candles("BTCUSDT", interval, start, start + span, limit=limit)
    assert got == brute_candles(every, interval, start, start + span, limit)
    # Served twice (cached the second time): the same answer.
    assert market.candles("BTCUSDT", interval, start, start + span, limit=limit) == got


def test_candles_whole_range_and_running_candle(small_market: tuple[SyntheticMarket, list[SimTrade]]) -> None:
    market, every = small_market
    for interval in INTERVALS[:4]:
        got = market.candles("BTCUSDT", interval, 0, 2**62, limit=10**6)
        assert got == brute_candles(every, interval, 0, 2**62, 10**6)
        assert got[-1].last_trade_id == every[-1].trade_id  # the running candle is included
        assert sum(c.trades for c in got) == len(every)
        # Candles of whole minutes straddling past -> live join seamlessly.
        assert all(a.open_ms < b.open_ms for a, b in pairwise(got))
    with pytest.raises(ConfigError):
        market.candles("BTCUSDT", 0, 0, 1)
    assert market.candles("BTCUSDT", MINUTE_MS, 0, 2**62, limit=0) == []


def test_candles_follow_new_trades() -> None:
    market = SyntheticMarket(_specs(), seed=8, start_ms=START, past_days=1)
    before = market.candles("BTCUSDT", 3_600_000, START - 3_600_000, START + 3_600_000)
    steps = _drive(market, ["BTCUSDT"], 400, spacing_ms=10)
    trades = [t for s in steps for t in s.trades]
    after = market.candles("BTCUSDT", 3_600_000, START - 3_600_000, START + 3_600_000)
    assert after[:-1] == before[:-1] or len(after) == len(before) + 1
    assert after[-1].last_trade_id == trades[-1].trade_id
    assert after[-1].close == trades[-1].price


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("venue", ["binance", "kraken", "bitfinex"])
def test_default_specs_use_the_venue_spelling(venue: str) -> None:
    adapter = exchanges.get(venue)
    specs = default_specs(venue)
    assert len(specs) >= 4
    assert len({s.symbol for s in specs}) == len(specs)
    for spec in specs:
        assert adapter.normalize_symbol(spec.symbol) == spec.symbol
        assert spec.tick >= 1 and spec.start_price >= 20 * spec.tick
        assert 0 <= spec.price_precision <= 10 and 0 <= spec.qty_precision <= 8
    market = SyntheticMarket(specs, seed=1, start_ms=START, past_days=1)
    for spec in specs:
        market.step(spec.symbol, START)
        assert market.trades(spec.symbol, limit=5)


def test_default_specs_normalize_requests_and_fill_unknowns() -> None:
    assert default_specs("binance", ["btc/usdt"]) == default_specs("binance", ["BTCUSDT"])
    assert default_specs("binance", ["btc/usdt"])[0].price_precision == 2
    assert [s.symbol for s in default_specs("kraken", ["xbt/usd", "BTC-USD"])] == ["BTC/USD"]
    btc = default_specs("bitfinex", ["tBTCUSD"])[0]
    assert (btc.price_precision, btc.qty_precision) == (0, 8)
    odd = default_specs("bitfinex", ["avax/usd"])
    assert [s.symbol for s in odd] == ["tAVAX:USD"]
    assert odd == default_specs("Bitfinex", ["AVAX/USD"])  # deterministic, no network
    assert odd[0].start_price > 0
    with pytest.raises(ConfigError):
        default_specs("nasdaq")
    with pytest.raises(ConfigError):
        default_specs("kraken", ["BTCUSD"])  # Kraken needs BASE/QUOTE


def test_xrpbtc_prices_reach_exponent_form() -> None:
    # Bitfinex checksums depend on JavaScript number text such as 7e-7 (PROTOCOLS.md §C.3).
    market = SyntheticMarket(default_specs("bitfinex", ["tXRPBTC"]), seed=1, start_ms=START, past_days=1)
    bids, asks = market.book("tXRPBTC")
    texts = [js_number_text(p, 8) for p, _ in bids + asks]
    assert any("e-7" in t for t in texts)
    assert any(t.startswith("0.000001") for t in texts)


def test_invalid_configuration() -> None:
    spec = InstrumentSpec("XUSDT", 2, 2, 10_000)
    with pytest.raises(ConfigError):
        SyntheticMarket([spec, spec], start_ms=START)
    with pytest.raises(ConfigError):
        SyntheticMarket([spec], start_ms=START, past_days=-1)
    with pytest.raises(ConfigError):
        SyntheticMarket([InstrumentSpec("XUSDT", 2, 2, 1)], start_ms=START)
    with pytest.raises(ConfigError):
        SyntheticMarket([InstrumentSpec("XUSDT", 2, 2, 100, levels=0)], start_ms=START)
    market = SyntheticMarket([spec], start_ms=START, past_days=0)
    assert market.trades("XUSDT") == []
    assert market.candles("XUSDT", MINUTE_MS, 0, 2**62) == []
    assert market.symbols() == ["XUSDT"]
