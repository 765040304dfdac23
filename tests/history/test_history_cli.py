"""``mmdata history fetch | combine | gaps`` end to end, against the simulator on loopback.

* The recorder records from the simulator; the history fetch of the same span over the
  simulator's REST endpoints gives the same trades (ids, exact decimals) and candles equal to
  the ones aggregated from the recorded trades.
* Hours of "recorded" data come from the simulator's deterministic past written as day
  folders (tests/history/synthday.py): combine keeps every complete local candle and flags an
  altered one; gaps finds a removed hour and nothing on the intact day.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mmdata.cli import app
from mmdata.exchanges import get as get_exchange
from mmdata.exchanges.base import symbol_fs
from mmdata.history.fetch import FetchOptions, fetch_history
from mmdata.history.local import local_candles, local_trades
from mmdata.history.store import load_candles, load_trades
from mmdata.sim import FaultPlan
from mmdata.sim.market import default_specs
from tests.history.synthday import Row, units_text, write_days
from tests.live.simthread import SimThread

runner = CliRunner()

MINUTE = 60_000
HOUR = 60 * MINUTE

VENUES = {"binance": "BTC/USDT", "kraken": "BTC/USD", "bitfinex": "BTC/USD"}


def canonical(exchange: str, symbol: str) -> str:
    return get_exchange(exchange).normalize_symbol(symbol)


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def sim_rows(sim: SimThread, exchange: str, symbol: str, start_ms: int, end_ms: int) -> list[Row]:
    """The simulator market's own trades of ``[start_ms, end_ms)`` as recorded rows."""
    sym = canonical(exchange, symbol)
    spec = default_specs(exchange, [symbol])[0]
    trades = sim.call(lambda: sim.server.market.trades(sym, start_ms=start_ms, end_ms=end_ms, limit=10**7))
    return [
        Row(
            t.ts_ms,
            t.trade_id,
            units_text(t.price, spec.price_precision),
            units_text(t.qty, spec.qty_precision),
            t.side,
        )
        for t in trades
    ]


# --------------------------------------------------------------- the recorder vs the REST history


def record_from(sim: SimThread, data: Path, exchange: str, symbol: str, seconds: float) -> None:
    code, out, err = invoke(
        "record",
        "-e",
        exchange,
        "-s",
        symbol,
        "--ws-url",
        sim.url,
        "--rest-url",
        sim.rest_url,
        "--duration",
        str(seconds),
        "--data-dir",
        str(data),
        "--log-dir",
        str(data.parent / "logs"),
        "--json",
    )
    assert code == 0, out + err


@pytest.mark.parametrize("exchange", list(VENUES))
def test_fetched_trades_and_candles_equal_what_the_recorder_recorded(tmp_path: Path, exchange: str) -> None:
    symbol = VENUES[exchange]
    sym = canonical(exchange, symbol)
    data = tmp_path / "data"
    # 40x clock: a simulated minute every 1.5 s, so 9 s of recording hold several whole minutes
    with SimThread(exchange, [symbol], speed=40, rate=3) as sim:
        record_from(sim, data, exchange, symbol, 9)
        recorded = local_trades(data, exchange, sym, 0, 2**62)
        assert len(recorded) > 50
        first = min(t.ts_ms for t in recorded)
        last = max(t.ts_ms for t in recorded)
        # trades: every trade of the recorded span, fetched over REST in small pages
        hist = tmp_path / "hist"
        common = {"exchange": exchange, "symbol": symbol, "out_root": hist, "rest_url": sim.rest_url}
        fetched = fetch_history(
            FetchOptions(
                **common,
                kind="trades",
                interval=None,
                start_ms=first + 1,
                end_ms=last,
                page_limit=37,
                pace_s=0,
            ),
            now_ms=sim.now_ms(),
        )
        assert fetched.rows > 0
        # candles of the whole minutes strictly inside the recorded span
        lo = (first // MINUTE + 1) * MINUTE
        hi = last // MINUTE * MINUTE
        assert hi - lo >= 2 * MINUTE, "the recording should hold at least two whole minutes"
        fetch_history(
            FetchOptions(
                **common, kind="candles", interval="1m", start_ms=lo, end_ms=hi, page_limit=2, pace_s=0
            ),
            now_ms=sim.now_ms(),
        )
    got = load_trades(hist, exchange, sym)
    mine = sorted((t for t in recorded if first + 1 <= t.ts_ms < last), key=lambda t: int(t.trade_id))
    assert [int(i) for i in got["trade_id"]] == [int(t.trade_id) for t in mine]
    for (price, qty, side, ts), t in zip(
        zip(got["price_text"], got["qty_text"], got["side"], got["ts_ms"], strict=True), mine, strict=True
    ):
        assert (Decimal(price), Decimal(qty), side, int(ts)) == (
            Decimal(t.price),
            Decimal(t.qty),
            t.side,
            t.ts_ms,
        )
    candles = load_candles(hist, exchange, sym, "1m")
    local, _complete = local_candles(data, exchange, sym, "1m", lo, hi)
    by_open = {c.open_time_ms: c for c in local}
    traded = [
        row
        for row in candles.itertuples()
        if Decimal(row.volume_text) != 0  # Binance and Kraken also list minutes without trades
    ]
    assert {int(r.open_time_ms) for r in traded} == set(by_open)
    for row in traded:
        mine_c = by_open[int(row.open_time_ms)]
        assert [Decimal(x) for x in (row.open_text, row.high_text, row.low_text, row.close_text)] == [
            Decimal(x) for x in (mine_c.open, mine_c.high, mine_c.low, mine_c.close)
        ]
        assert Decimal(row.volume_text) == Decimal(mine_c.volume)


# ------------------------------------------------------------ combine and gaps over synthetic days


@pytest.fixture(params=list(VENUES))
def past_day(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SimThread, str, Path, int, list[Row]]]:
    """A simulator and three hours of its past written as recorded day folders."""
    exchange: str = request.param
    symbol = VENUES[exchange]
    with SimThread(exchange, [symbol]) as sim:
        h0 = sim.now_ms() // HOUR * HOUR - 5 * HOUR
        rows = sim_rows(sim, exchange, symbol, h0 - MINUTE, h0 + 3 * HOUR + MINUTE)
        yield sim, exchange, tmp_path, h0, rows


def write(tmp: Path, exchange: str, rows: list[Row], h0: int) -> Path:
    data = tmp / "data"
    fs = symbol_fs(canonical(exchange, VENUES[exchange]))
    write_days(data, exchange, fs, rows, [(h0 - MINUTE, h0 + 3 * HOUR + MINUTE)])
    return data


def cli_range(sim: SimThread, exchange: str, data: Path, h0: int, *extra: str) -> list[str]:
    return [
        "-e",
        exchange,
        "-s",
        VENUES[exchange],
        "--start",
        str(h0),
        "--end",
        str(h0 + 3 * HOUR),
        "--data-dir",
        str(data),
        "--rest-url",
        sim.rest_url,
        "--pace",
        "0",
        "--json",
        *extra,
    ]


def test_combine_prefers_complete_local_candles_and_flags_an_altered_one(
    past_day: tuple[SimThread, str, Path, int, list[Row]],
) -> None:
    sim, exchange, tmp, h0, rows = past_day
    data = write(tmp, exchange, rows, h0)
    out = tmp / "combined.parquet"
    code, stdout, stderr = invoke("history", "combine", *cli_range(sim, exchange, data, h0, "-o", str(out)))
    assert code == 0, stdout + stderr
    report = json.loads(stdout)
    assert report["mismatches"] == [] and report["rows"] == 180
    table = pq.read_table(out).to_pydict()
    assert table["open_time_ms"] == list(range(h0, h0 + 3 * HOUR, MINUTE))
    traded = {r.ts_ms // MINUTE * MINUTE for r in rows if h0 <= r.ts_ms < h0 + 3 * HOUR}
    sources = dict(zip(table["open_time_ms"], table["source"], strict=True))
    assert {t for t, s in sources.items() if s == "local"} == traded
    assert all(s in ("local", "empty") for s in sources.values())

    # alter the close of one busy minute in the middle: the last trade of it gets another price
    minute = sorted(traded)[len(traded) // 2]
    in_minute = [i for i, r in enumerate(rows) if r.ts_ms // MINUTE * MINUTE == minute]
    k = in_minute[-1]
    changed = Decimal(rows[k].price) + 1
    rows[k] = Row(rows[k].ts_ms, rows[k].trade_id, str(changed), rows[k].qty, rows[k].side)
    data2 = write(tmp / "altered", exchange, rows, h0)
    report_path = tmp / "mismatches.csv"
    code, stdout, stderr = invoke(
        "history",
        "combine",
        *cli_range(sim, exchange, data2, h0, "-o", str(tmp / "c2.parquet"), "--report", str(report_path)),
        "--offline",
        "--out",
        str(data),  # the exchange candles fetched by the first run: no request needed
    )
    assert code == 1, stdout + stderr
    body = json.loads(stdout)
    assert {m["open_time_ms"] for m in body["mismatches"]} == {minute}
    assert "close" in {m["field"] for m in body["mismatches"]}
    assert "mismatch" in stderr
    with report_path.open(newline="") as fh:
        reported = list(csv.DictReader(fh))
    assert {int(r["open_time_ms"]) for r in reported} == {minute}
    assert any(r["field"] == "close" and Decimal(r["local"]) == changed for r in reported)


def test_gaps_finds_a_removed_hour_and_nothing_on_the_intact_day(
    past_day: tuple[SimThread, str, Path, int, list[Row]],
) -> None:
    sim, exchange, tmp, h0, rows = past_day
    data = write(tmp, exchange, rows, h0)
    code, stdout, stderr = invoke("history", "gaps", *cli_range(sim, exchange, data, h0))
    assert code == 0, stdout + stderr
    assert json.loads(stdout)["gaps"] == []

    hole = (h0 + HOUR, h0 + 2 * HOUR)
    kept = [r for r in rows if not hole[0] <= r.ts_ms < hole[1]]
    data2 = write(tmp / "holed", exchange, kept, h0)
    code, stdout, stderr = invoke(
        "history", "gaps", *cli_range(sim, exchange, data2, h0), "--offline", "--out", str(data)
    )
    assert code == 1, stdout + stderr
    gaps = json.loads(stdout)["gaps"]
    assert gaps and all(g["reason"] == "no local trades" for g in gaps)
    assert all(hole[0] <= g["start_ms"] < g["end_ms"] <= hole[1] for g in gaps)
    removed = {r.ts_ms // MINUTE * MINUTE for r in rows if hole[0] <= r.ts_ms < hole[1]}
    in_gaps = {m for g in gaps for m in range(g["start_ms"], g["end_ms"], MINUTE)}
    assert removed <= in_gaps
    # the table form says the same, and exits 1 too
    code, stdout, _ = invoke(
        "history",
        "gaps",
        *[a for a in cli_range(sim, exchange, data2, h0) if a != "--json"],
        "--offline",
        "--out",
        str(data),
    )
    assert code == 1 and "GAPS" in stdout and "no local trades" in stdout


# -------------------------------------------------------------------- the fetch command itself


def test_fetch_through_the_seed_env_vars_with_rate_limit_faults(tmp_path: Path) -> None:
    faults = FaultPlan(rest_429_every=4, rest_418_every=9, rest_5xx_every=5, retry_after_s=1)
    with SimThread("binance", ["BTC/USDT"], faults=faults) as sim:
        end = sim.now_ms() // MINUTE * MINUTE - 2 * HOUR
        start = end - 2 * HOUR
        env = {
            "EXCHANGE": "binance",
            "SYMBOL": "BTC/USDT",
            "TYPE": "trades",
            "START_MS": str(start),
            "END_MS": str(end),
            "LIMIT": "5",
            "MMDATA_DATA_DIR": str(tmp_path / "data"),
            "REST_URL": sim.rest_url,
        }
        code, stdout, stderr = invoke("history", "fetch", "--pace", "0", "--json", env=env)
        assert code == 0, stdout + stderr
        body = json.loads(stdout)
        assert body["requests"] >= 10 and body["rows"] > 0
        assert body["retries"] >= 3  # every 4th/5th/9th request failed and was retried
        truth = sim_rows(sim, "binance", "BTC/USDT", start, end)
    got = load_trades(tmp_path / "data", "binance", "BTCUSDT")
    assert [int(i) for i in got["trade_id"]] == [r.trade_id for r in truth]
    assert len(set(got["trade_id"])) == len(got)
    # a second run finds everything stored and makes no request
    with SimThread("binance", ["BTC/USDT"]) as sim2:
        env["REST_URL"] = sim2.rest_url
        code, stdout, stderr = invoke("history", "fetch", "--json", env=env)
        assert code == 0, stdout + stderr
        assert json.loads(stdout)["requests"] == 0


def test_fetch_accepts_iso_times_and_candles_are_stored_per_utc_day(tmp_path: Path) -> None:
    with SimThread("binance", ["BTC/USDT"]) as sim:
        midnight = sim.now_ms() // (24 * HOUR) * 24 * HOUR
        if sim.now_ms() - midnight < HOUR:
            pytest.skip("too close to midnight UTC for a closed range across it")
        start, end = midnight - 30 * MINUTE, midnight + 30 * MINUTE
        from mmdata.candles import iso_time

        code, stdout, stderr = invoke(
            "history",
            "fetch",
            "-e",
            "binance",
            "-s",
            "BTC/USDT",
            "-t",
            "candles",
            "--start",
            iso_time(start),
            "--end",
            iso_time(end),
            "--data-dir",
            str(tmp_path),
            "--rest-url",
            sim.rest_url,
            "--pace",
            "0",
        )
        assert code == 0, stdout + stderr
    files = sorted(
        p.name for p in (tmp_path / "binance" / "BTCUSDT" / "history" / "candles_1m").glob("*.parquet")
    )
    assert len(files) == 2
    frame = load_candles(tmp_path, "binance", "BTC/USDT", "1m")
    assert list(frame["open_time_ms"]) == list(range(start, end, MINUTE))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "binance", "-s", "BTC/USDT", "--start", "yesterday-ish"], "--start"),
        (["-e", "binance", "-s", "BTC/USDT", "--start", "2026-01-02", "--end", "2026-01-01"], "after"),
        (["-e", "binance", "-s", "BTC/USDT", "--start", "now-1h", "-t", "books"], "candles or trades"),
        (["-e", "nowhere", "-s", "BTC/USDT", "--start", "now-1h"], "nowhere"),
        (["-e", "bitfinex", "-s", "BTC/USD", "--start", "now-1h", "-i", "4h"], "4h"),
        (["-e", "binance", "-s", "BTC/USDT"], "--start"),
    ],
)
def test_bad_options_get_one_clear_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, stdout, stderr = invoke(
        "history", "fetch", *args, "--data-dir", str(tmp_path), "--rest-url", "http://127.0.0.1:9"
    )
    assert code == 2, stdout + stderr
    assert message in stderr and "Traceback" not in stdout + stderr


def test_help_teaches_the_layout_and_the_exit_codes() -> None:
    for command, words in (
        ("fetch", ("Retry-After", "resum", "720", "history/trades", "START_MS")),
        ("combine", ("source", "--price-tol", "mismatch")),
        ("gaps", ("Exit status", "not recorded")),
    ):
        code, stdout, _ = invoke("history", command, "--help")
        assert code == 0
        text = " ".join(stdout.split())
        for word in words:
            assert word in text, (command, word)
