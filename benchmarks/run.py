"""mmdata benchmarks: every figure is a ratio to a baseline measured in the same run.

Run with ``nox -s bench`` (or ``python benchmarks/run.py [--quick] [--only NAME]``).

Baselines, measured in the same run over the same frames:

A  a bare ``orjson.loads`` loop over the wire frames already in memory (the strictest);
B  a bare decode of the capture file: gunzip, ``orjson.loads`` of each record line and of
   its frame — the least any validator of a capture must do.

"ratio" answers: how much of that rate does mmdata keep while doing its real work?

Benchmarks
----------
kraken_checksum   Kraken v2 checksum per update on a depth-25 book (target ≤ 5 µs), and the whole
                  per-update engine cost (parse + apply + truncate + verify).
bitfinex_checksum Bitfinex checksum per ``cs`` frame on a 25+25-level book (target ≤ 10 µs).
validate_btcusdt  ``validate_capture`` on the real BTCUSDT capture (frames/s vs A and B; target ≥ 40 %).
validate_synth    ``validate_capture`` on a synthetic Binance stream of ≥ 1M diffs (vs A and B).
sim_throughput    simulator messages/s to 1 and 10 loopback clients and server CPU per message, vs a
                  bare websockets sender (see benchmarks/sim_throughput.py).
record_throughput recorder messages/s (all outputs on) vs the simulator's bare send rate to a
                  do-nothing client, msg per CPU-second, peak RSS for 1 and 20 symbols
                  (see benchmarks/record_throughput.py).
day_io            ``validate_day`` on a recorded Kraken day of ≥ 1M diffs (MB/s, diffs/s vs a bare
                  gunzip + orjson/split pass; target ≥ 50 %) and ``open_day(day).trades()`` on ≥ 1M
                  recorded trades vs ``pyarrow.csv.read_csv`` (target ≤ 2×) (see benchmarks/day_io.py).
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from mmdata.book import ChecksumSync, LocalOrderBook
from mmdata.book.checksum import BitfinexChecksum, KrakenChecksum
from mmdata.exchanges import get
from mmdata.store import CaptureWriter, open_capture
from mmdata.types import Instrument
from mmdata.validate import validate_capture

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FIXTURES = Path(os.environ.get("MMDATA_FIXTURES", HERE.parent.parent / "shared" / "fixtures" / "real"))


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    """Best wall time of ``repeat`` runs (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bare_parse(frames: list[str]) -> Callable[[], object]:
    loads = orjson.loads

    def run() -> object:
        for f in frames:
            loads(f)
        return None

    return run


def report(name: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {name}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


# -- Kraken ------------------------------------------------------------------------------


def _kraken_frames(n: int, depth: int = 25, seed: int = 7) -> tuple[str, list[str]]:
    """A snapshot and ``n`` updates of a synthetic BTC/USD book, with true checksums."""
    rng = random.Random(seed)
    scheme = KrakenChecksum(1, 8)
    book = LocalOrderBook(scheme.token)
    mid = 60000.0

    def lvl(p: float) -> dict[str, float]:
        return {"price": round(p, 1), "qty": round(rng.uniform(0.0001, 5), 8)}

    bids = [lvl(mid - 0.1 * (i + 1)) for i in range(depth)]
    asks = [lvl(mid + 0.1 * (i + 1)) for i in range(depth)]
    book.apply_snapshot(
        [(str(b["price"]), str(b["qty"])) for b in bids], [(str(a["price"]), str(a["qty"])) for a in asks]
    )
    snap = {
        "channel": "book",
        "type": "snapshot",
        "data": [
            {
                "symbol": "BTC/USD",
                "bids": bids,
                "asks": asks,
                "checksum": scheme.of_book(book),
                "timestamp": "2026-01-01T00:00:00.000000Z",
            }
        ],
    }
    frames = []
    for _ in range(n):
        side = rng.choice(("bids", "asks"))
        levels = []
        for _ in range(rng.randint(1, 3)):
            off = 0.1 * rng.randint(1, depth + 3)
            price = round(mid - off if side == "bids" else mid + off, 1)
            qty = 0.0 if rng.random() < 0.3 else round(rng.uniform(0.0001, 5), 8)
            levels.append({"price": price, "qty": qty})
        text_levels = [(repr(x["price"]), repr(x["qty"])) for x in levels]
        if side == "bids":
            book.bids.apply(text_levels)
        else:
            book.asks.apply(text_levels)
        book.truncate(depth)
        upd = {
            "channel": "book",
            "type": "update",
            "data": [
                {
                    "symbol": "BTC/USD",
                    "bids": levels if side == "bids" else [],
                    "asks": levels if side == "asks" else [],
                    "checksum": scheme.of_book(book),
                    "timestamp": "2026-01-01T00:00:00.000000Z",
                }
            ],
        }
        frames.append(orjson.dumps(upd).decode())
    return orjson.dumps(snap).decode(), frames


def bench_kraken(quick: bool) -> None:
    n = 20_000 if quick else 100_000
    snap, frames = _kraken_frames(n)
    adapter = get("kraken")
    events = [adapter.parse(f)[0] for f in frames]
    snap_ev = adapter.parse(snap)[0]

    def fresh() -> ChecksumSync:
        eng = ChecksumSync.kraken("BTC/USD", 25)
        eng.receive(Instrument("kraken", "BTC/USD", 1, 8))
        eng.receive(snap_ev)
        return eng

    eng = fresh()
    scheme = KrakenChecksum(1, 8)
    eng.book.set_token_fn(scheme.token)
    t_cs = best_of(lambda: [scheme.of_book(eng.book) for _ in range(n)])

    def engine_only() -> None:
        e = fresh()
        for ev in events:
            e.receive(ev)
        assert e.stats.checksum_mismatches == 0, "synthetic checksums must verify"

    def parse_and_engine() -> None:
        e = fresh()
        parse = adapter.parse
        for f in frames:
            for ev in parse(f):
                e.receive(ev)

    t_engine = best_of(engine_only, 3)
    t_full = best_of(parse_and_engine, 3)
    t_bare = best_of(bare_parse(frames))
    report(
        "kraken_checksum (depth-25 book, precisions 1/8)",
        [
            ("checksum per update", f"{t_cs / n * 1e6:.2f} µs  (target ≤ 5 µs)"),
            ("engine per update (apply+truncate+verify)", f"{t_engine / n * 1e6:.2f} µs"),
            ("parse + engine per update", f"{t_full / n * 1e6:.2f} µs"),
            ("bare orjson.loads per frame", f"{t_bare / n * 1e6:.2f} µs"),
            ("rate ratio parse+engine / bare parse", f"{t_bare / t_full:.1%}"),
            ("checksum cost / bare parse", f"{t_cs / t_bare:.2f}×"),
        ],
    )


# -- Bitfinex ----------------------------------------------------------------------------


def bench_bitfinex(quick: bool) -> None:
    n = 20_000 if quick else 100_000
    rng = random.Random(3)
    scheme = BitfinexChecksum()
    book = LocalOrderBook(scheme.token)
    book.apply_snapshot(
        [(f"{0.0000011 - i * 1e-9:.10g}", str(round(rng.uniform(1, 1e5), 8))) for i in range(25)],
        [(f"{0.0000012 + i * 1e-9:.10g}", str(round(rng.uniform(1, 1e5), 8))) for i in range(25)],
    )
    cs = scheme.of_book(book)
    frames = [f'[81757,"cs",{cs},{i + 1}]' for i in range(n)]
    t_cs = best_of(lambda: [scheme.of_book(book) for _ in range(n)])
    eng = ChecksumSync.bitfinex("tXRPBTC")
    adapter = get("bitfinex")
    adapter.parse(
        '{"event":"subscribed","channel":"book","chanId":81757,"symbol":"tXRPBTC","prec":"P0","freq":"F0","len":"25","pair":"XRPBTC"}'
    )
    from mmdata.types import BookSnapshot

    bids, asks = book.top(25)
    eng.receive(BookSnapshot("bitfinex", "tXRPBTC", bids, asks, None))
    cs_frames = [f'[81757,"cs",{cs}]' for _ in range(n)]

    def parse_and_verify() -> None:
        parse = adapter.parse
        for f in cs_frames:
            for ev in parse(f):
                eng.receive(ev)

    t_full = best_of(parse_and_verify, 3)
    assert eng.stats.checksum_mismatches == 0
    t_bare = best_of(bare_parse(frames))
    report(
        "bitfinex_checksum (25 + 25 levels)",
        [
            ("checksum per cs frame", f"{t_cs / n * 1e6:.2f} µs  (target ≤ 10 µs)"),
            ("parse + verify per cs frame", f"{t_full / n * 1e6:.2f} µs"),
            ("bare orjson.loads per frame", f"{t_bare / n * 1e6:.2f} µs"),
            ("checksum cost / bare parse", f"{t_cs / t_bare:.2f}×"),
        ],
    )


# -- validate ------------------------------------------------------------------------------


def _frames_of(path: Path) -> list[str]:
    with open_capture(path) as reader:
        return [r.data for r in reader if r.kind == "ws_recv"]


def _bench_validate(title: str, path: Path, repeat: int) -> None:
    frames = _frames_of(path)
    result = validate_capture(path)
    assert result.ok, result.problems[:3]
    diffs = sum(r.diffs_applied for r in result.symbols.values())
    t_val = best_of(lambda: validate_capture(path), repeat)
    t_bare = best_of(bare_parse(frames), repeat)

    def decode_only() -> None:
        # The least any validator of this file must do: gunzip, decode each record, decode its frame.
        loads = orjson.loads
        with open_capture(path) as reader:
            for rec in reader:
                if rec.kind == "ws_recv":
                    loads(rec.data)

    t_decode = best_of(decode_only, repeat)
    size_mb = path.stat().st_size / 1e6
    report(
        title,
        [
            ("frames / diffs applied", f"{len(frames):,} / {diffs:,}  ({size_mb:.1f} MB gzip)"),
            ("validate", f"{len(frames) / t_val:,.0f} frames/s, {diffs / t_val:,.0f} diffs/s"),
            ("A: bare orjson.loads, frames in memory", f"{len(frames) / t_bare:,.0f} frames/s"),
            ("B: bare capture decode (gunzip + record + frame)", f"{len(frames) / t_decode:,.0f} frames/s"),
            ("validate rate / A", f"{t_bare / t_val:.1%}"),
            ("validate rate / B", f"{t_decode / t_val:.1%}  (target ≥ 40 %)"),
        ],
    )


def bench_validate_btcusdt(quick: bool) -> None:
    path = FIXTURES / "binance_btcusdt_20240808.capture.jsonl.gz"
    if not path.is_file():
        print(f"\n== validate_btcusdt: skipped, {path} not found (set MMDATA_FIXTURES)")
        return
    _bench_validate("validate_btcusdt (real capture)", path, 3 if quick else 5)


def synthetic_binance(path: Path, n_diffs: int, seed: int = 11) -> None:
    """Write a capture of ``n_diffs`` contiguous BTCUSDT depth diffs plus trades and one REST snapshot.

    As on the real venue, the snapshot is recorded after a few diffs were already received
    and stands between them: diffs 1–2 are older than it, diff 3 bridges it.
    """
    rng = random.Random(seed)
    url = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
    mid = 6_000_000  # price in cents
    book: dict[str, dict[int, str]] = {
        "b": {mid - i: f"{rng.uniform(0.001, 3):.8f}" for i in range(1, 1001)},
        "a": {mid + i: f"{rng.uniform(0.001, 3):.8f}" for i in range(1, 1001)},
    }

    def px(c: int) -> str:
        return f"{c // 100}.{c % 100:02d}000000"

    update_id = 1_000_000
    t = 1_767_225_600_000_000_000
    with CaptureWriter(path, "binance", ["BTCUSDT"], source="benchmarks/run.py synthetic") as w:
        w.write("ws_open", url, t=t)
        snapshot = ""
        trade_id = 1
        for i in range(n_diffs):
            t += 1_000_000
            first = update_id + 1
            update_id += rng.randint(1, 20)
            sides: dict[str, list[list[str]]] = {"b": [], "a": []}
            for _ in range(rng.randint(1, 12)):
                side = "b" if rng.random() < 0.5 else "a"
                off = rng.randint(1, 1200)
                price = mid - off if side == "b" else mid + off
                qty = "0.00000000" if rng.random() < 0.35 else f"{rng.uniform(0.001, 3):.8f}"
                sides[side].append([px(price), qty])
                if i < 2:  # keep the true book only until the snapshot is taken
                    if qty == "0.00000000":
                        book[side].pop(price, None)
                    else:
                        book[side][price] = qty
            data = {
                "e": "depthUpdate",
                "E": t // 1_000_000,
                "s": "BTCUSDT",
                "U": first,
                "u": update_id,
                "b": sides["b"],
                "a": sides["a"],
            }
            w.write(
                "ws_recv", url, orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data}).decode(), t=t
            )
            if i == 1:
                snapshot = orjson.dumps(
                    {
                        "lastUpdateId": update_id,
                        "bids": [[px(p), q] for p, q in sorted(book["b"].items(), reverse=True)],
                        "asks": [[px(p), q] for p, q in sorted(book["a"].items())],
                    }
                ).decode()
            if i == 2:
                rest_url = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=5000"
                w.write("rest", rest_url, snapshot, status=200, t=t + 1)
            if rng.random() < 0.3:
                trade_id += 1
                ms = t // 1_000_000
                trade = {
                    "e": "trade",
                    "E": ms,
                    "s": "BTCUSDT",
                    "t": trade_id,
                    "p": px(mid),
                    "q": "0.01000000",
                    "T": ms,
                    "m": rng.random() < 0.5,
                    "M": True,
                }
                w.write(
                    "ws_recv", url, orjson.dumps({"stream": "btcusdt@trade", "data": trade}).decode(), t=t
                )


def bench_validate_synth(quick: bool) -> None:
    n = 200_000 if quick else 1_000_000
    OUT.mkdir(exist_ok=True)
    path = OUT / f"synthetic_binance_{n}.capture.jsonl.gz"
    if not path.exists():
        print(f"\n(generating {path.name} …)", flush=True)
        tmp = path.with_suffix(".tmp.gz")
        synthetic_binance(tmp, n)
        tmp.rename(path)
    _bench_validate(f"validate_synth ({n:,} synthetic Binance diffs)", path, 1 if not quick else 2)


def bench_sim(quick: bool) -> None:
    import sim_throughput  # a sibling script (benchmarks/ is on sys.path when run.py runs)

    sim_throughput.main(quick)


def bench_record(quick: bool) -> None:
    import record_throughput  # a sibling script (benchmarks/ is on sys.path when run.py runs)

    record_throughput.main(quick)


def bench_day_io(quick: bool) -> None:
    import day_io  # a sibling script (benchmarks/ is on sys.path when run.py runs)

    day_io.main(quick)


BENCHES: dict[str, Callable[[bool], None]] = {
    "sim_throughput": bench_sim,
    "record_throughput": bench_record,
    "day_io": bench_day_io,
    "kraken_checksum": bench_kraken,
    "bitfinex_checksum": bench_bitfinex,
    "validate_btcusdt": bench_validate_btcusdt,
    "validate_synth": bench_validate_synth,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller inputs (a smoke run)")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, {os.cpu_count()} cores")
    for name, fn in BENCHES.items():
        if args.only and name not in args.only:
            continue
        fn(args.quick)
    _ = gzip  # gzip-compressed inputs are produced through CaptureWriter


if __name__ == "__main__":
    main()
