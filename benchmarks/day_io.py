"""Reading recorded days: ``validate_day`` throughput and trades loading, as ratios to bare baselines.

The days are written by the real recorder from the embedded simulator
(``mmdata record --simulate``, one process, live files off) and cached under
``benchmarks/out/day_io/<exchange>_<SYMBOL>_r<rate>_d<duration>_s<seed>/`` with a ``meta.json``
(the exact recorder command, its JSON summary and the generation time); a rerun reuses them.
``--regen`` (or ``MMDATA_BENCH_REGEN=1``) records them again.

Days
----
* **diffs day**: Kraken BTC/USD, one book diff per message with a CRC32 checksum to verify (the
  heaviest venue to validate), recorded long enough for ≥ 1,000,000 diff rows (quick: ≥ 100,000).
* **trades day**: Binance BTC/USDT at a high ``--rate``, where the simulator sends mostly trades
  (its diffs are batched per 100 ms), for ≥ 1,000,000 normalized trades (quick: ≥ 100,000). The
  diffs day alone has only ~0.3 trades per diff, so a second recording is the fastest honest route
  that keeps the recorder's own ``trades_ws_*.csv.gz`` format (about 2 minutes).

Measured here (2 cores): the Kraken day (``--rate 400 --duration 180``) holds ~1.37M diffs and
~0.38M trades and takes ~3 minutes to record; the Binance day (``--rate 2000 --duration 125``)
~1.38M trades in ~2 minutes. At that Kraken rate the recorder falls behind the in-process
simulator by up to ~20 s (the simulator queues frames; no reconnect, nothing lost in the day):
``meta.json`` keeps the summary's ``reconnects`` and the lag (receive time minus event time of the
book frames), and the table prints them. A recording must land in a single day folder (``day_dirs``
of the summary); one that crosses the trading-day boundary is refused (rerun with ``--regen`` after
it).

Measured (best time of 3 interleaved runs of each side, ``gc.collect()`` before each)
-------------------------------------------------------------------------------------
1. **validate**: ``validate_day(day)`` with default workers (two processes on this 2-core machine
   for a big day) and with ``workers=1``, against a *bare pass* over the same files — every
   ``*.gz`` in the day folder, ``*.damaged-*`` excluded, i.e. exactly the set whose size
   ``validate_day`` reports as ``compressed_bytes``. The bare pass streams each file through
   ``zlib`` (member by member, 1 MiB compressed chunks), splits lines, and ``orjson.loads`` every
   line of the NDJSON files (``diffs/``, ``trades/``); CSV files are only split into lines. It is
   the least any reader of the day must do. Reported: compressed MB/s and diff rows/s of each
   side and ``ratio = t_bare / t_validate`` (the share of the bare rate validate keeps; target
   ≥ 50 %).
2. **trades load**: ``open_day(day).trades()`` (pandas, pyarrow-backed dtypes, floats added, exact
   text kept, times as timestamps) against ``pyarrow.csv.read_csv(path)`` given the
   ``trades_ws_*.csv.gz`` path directly (pyarrow gunzips it). Reported: ``ratio = t_trades /
   t_pyarrow`` (target ≤ 2×) and, for attribution, the Arrow-only ``trades_table(path)``.

``--profile`` adds a cProfile top-15 (by own time) of ``validate_day(day, workers=1)`` on the diffs
day. Figures and the command line go to ``benchmarks/out/day_io.json``.

Run: ``python benchmarks/day_io.py [--quick] [--regen] [--profile]`` or
``python benchmarks/run.py --only day_io [--quick]``.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv

from mmdata.replay import open_day
from mmdata.replay.tables import trades_table
from mmdata.store.capture import gzip_lines
from mmdata.store.dayfolder import open_day_folder
from mmdata.validate.day import DayReport, validate_day

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
CACHE = OUT / "day_io"
REPEAT = 3


@dataclass(frozen=True, slots=True)
class DaySpec:
    """One recording: what to run and what it must hold."""

    role: str  # "diffs" or "trades"
    exchange: str
    symbol: str
    rate: float
    duration: float
    seed: int = 0
    min_diffs: int = 0
    min_trades: int = 0

    @property
    def key(self) -> str:
        sym = "".join(c for c in self.symbol if c.isalnum()).upper()
        return f"{self.exchange}_{sym}_r{self.rate:g}_d{self.duration:g}_s{self.seed}"

    def command(self, data_dir: Path, log_dir: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mmdata",
            "record",
            "-e",
            self.exchange,
            "-s",
            self.symbol,
            "--simulate",
            "--seed",
            str(self.seed),
            "--rate",
            f"{self.rate:g}",
            "--duration",
            f"{self.duration:g}",
            "--no-live",
            "--data-dir",
            str(data_dir),
            "--log-dir",
            str(log_dir),
            "-q",
            "--json",
        ]


# Kraken at --rate 400 records ~7,000 diffs/s (the simulator shares the recorder's process and
# core); Binance at --rate 2000 records ~10,000 trades/s. Durations leave ~25 % headroom (the
# machine may be busy).
FULL = (
    DaySpec("diffs", "kraken", "BTC/USD", rate=400, duration=180, min_diffs=1_000_000),
    DaySpec("trades", "binance", "BTC/USDT", rate=2000, duration=125, min_trades=1_000_000),
)
QUICK = (
    DaySpec("diffs", "kraken", "BTC/USD", rate=400, duration=18, min_diffs=100_000),
    DaySpec("trades", "binance", "BTC/USDT", rate=1000, duration=22, min_trades=100_000),
)


@dataclass(slots=True)
class Day:
    """A cached recorded day folder and how it was made."""

    spec: DaySpec
    path: Path
    meta: dict[str, Any]


def _generate(spec: DaySpec, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    data_dir = tmp / "data"
    cmd = spec.command(data_dir, tmp / "logs")
    print(f"  recording {spec.key} ({spec.duration:g} s): {shlex.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"mmdata record exited with {done.returncode}:\n{done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    if len(summary["day_dirs"]) != 1:
        raise SystemExit(f"the recording split into {summary['day_dirs']} (trading-day boundary): rerun")
    counts = summary["symbols"][next(iter(summary["symbols"]))]
    if counts["diffs"] < spec.min_diffs or counts["trades"] < spec.min_trades:
        raise SystemExit(
            f"{spec.key}: recorded {counts['diffs']:,} diffs / {counts['trades']:,} trades, need "
            f"≥ {spec.min_diffs:,} / ≥ {spec.min_trades:,}: raise the duration in benchmarks/day_io.py"
        )
    day_dir = Path(summary["day_dirs"][0])
    if not day_dir.is_absolute():
        day_dir = Path.cwd() / day_dir
    meta = {
        "spec": asdict(spec),
        "command": shlex.join(cmd).replace(str(tmp), str(target)),
        "generation_seconds": seconds,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "day_dir": day_dir.relative_to(tmp).as_posix(),
        "summary": summary,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def get_day(spec: DaySpec, regen: bool) -> Day:
    """The cached day of ``spec``, recorded first when absent (or when ``regen``)."""
    target = CACHE / spec.key
    if regen or not (target / "meta.json").is_file():
        _generate(spec, target)
    meta = json.loads((target / "meta.json").read_text())
    day = Day(spec, target / meta["day_dir"], meta)
    if "lag_s" not in meta:  # measured once, kept with the day
        meta["lag_s"] = recorder_lag(day.path)
        (target / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return day


def recorder_lag(day: Path) -> dict[str, float]:
    """How far behind the simulator the recorder was: receive time minus venue event time of the
    book frames (or, without them, the trades), worst and at the last row, s."""
    lay = open_day_folder(day).layout
    path = lay.book_frames if lay.book_frames.exists() else lay.trades
    worst = last = 0.0
    for i, line in enumerate(gzip_lines(path)):
        if i == 0:
            continue
        fields = line.split(b",", 3)
        if not fields[2]:
            continue
        last = int(fields[1]) / 1e9 - int(fields[2]) / 1e3
        worst = max(worst, last)
    return {"max": worst, "at_stop": last}


# -- baselines ----------------------------------------------------------------------------


def day_gz_files(day: Path) -> list[Path]:
    """The files ``validate_day`` counts in ``compressed_bytes``: every ``*.gz``, no sidecars."""
    return sorted(p for p in day.rglob("*.gz") if p.is_file() and ".damaged-" not in p.name)


def bare_pass(files: list[Path]) -> int:
    """Gunzip every file member by member, split lines, ``orjson.loads`` each NDJSON line.

    Returns the number of lines (headers included).
    """
    loads = orjson.loads
    lines_seen = 0
    for path in files:
        ndjson = path.name.endswith(".ndjson.gz")
        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending = b""
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                data = chunk
                while data:
                    out = dec.decompress(data)
                    if dec.eof:  # the next gzip member starts in unused_data
                        data = dec.unused_data
                        dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    else:
                        data = b""
                    if not out:
                        continue
                    lines = (pending + out).split(b"\n") if pending else out.split(b"\n")
                    pending = lines.pop()
                    lines_seen += len(lines)
                    if ndjson:
                        for line in lines:
                            if line:
                                loads(line)
        if pending:
            lines_seen += 1
            if ndjson:
                loads(pending)
    return lines_seen


def best_of(fns: dict[str, Callable[[], Any]], repeat: int = REPEAT) -> dict[str, tuple[float, Any]]:
    """Best wall time of ``repeat`` runs of each function, and its last result.

    The runs are interleaved (a, b, c, a, b, c, ...) so that a busy spell of the machine
    weighs on every side alike.
    """
    best = dict.fromkeys(fns, float("inf"))
    results: dict[str, Any] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: (best[name], results[name]) for name in fns}


# -- the two measurements -----------------------------------------------------------------


def _problems(report: DayReport) -> list[dict[str, Any]]:
    return [p.as_dict() for p in report.problems[:20]]


def bench_validate(day: Day) -> dict[str, Any]:
    files = day_gz_files(day.path)
    size = sum(p.stat().st_size for p in files)
    timed = best_of(
        {
            "bare": lambda: bare_pass(files),
            "default": lambda: validate_day(day.path),
            "one": lambda: validate_day(day.path, workers=1),
        }
    )
    (t_bare, lines), (t_default, rep_default), (t_one, rep_one) = timed.values()
    assert rep_default.compressed_bytes == size, (rep_default.compressed_bytes, size)
    diffs = rep_one.diff_rows
    mb = size / 1e6

    def side(t: float) -> dict[str, float]:
        return {"seconds": t, "mb_per_s": mb / t, "diffs_per_s": diffs / t, "ratio": t_bare / t}

    return {
        "day": str(day.path.relative_to(HERE.parent)),
        "files": [str(p.relative_to(day.path)) for p in files],
        "compressed_bytes": size,
        "lines": lines,
        "diff_rows": diffs,
        "trades": rep_one.trades,
        "book_frames": rep_one.frames,
        "checksums_verified": rep_one.checksums_verified,
        "bare": side(t_bare),
        "validate_default": side(t_default),
        "validate_workers1": side(t_one),
        "ok_default": rep_default.ok,
        "ok_workers1": rep_one.ok,
        "problems_total": rep_one.problems_total,
        "problems": _problems(rep_one),
        "problems_total_default": rep_default.problems_total,
        "problems_default": _problems(rep_default),
    }


def bench_trades(day: Day) -> dict[str, Any]:
    folder = open_day_folder(day.path)
    path = folder.layout.trades
    d = open_day(day.path)
    timed = best_of(
        {"pyarrow": lambda: pacsv.read_csv(path), "arrow": lambda: trades_table(path), "pandas": d.trades}
    )
    (t_pa, table), (t_arrow, arrow), (t_df, frame) = timed.values()
    rows = table.num_rows
    assert len(frame) == rows == arrow.num_rows, (len(frame), rows, arrow.num_rows)
    return {
        "day": str(day.path.relative_to(HERE.parent)),
        "file": path.name,
        "compressed_bytes": path.stat().st_size,
        "rows": rows,
        "pyarrow_read_csv_s": t_pa,
        "trades_table_s": t_arrow,
        "open_day_trades_s": t_df,
        "ratio": t_df / t_pa,
        "ratio_trades_table": t_arrow / t_pa,
        "rows_per_s": rows / t_df,
        "pyarrow_version": pa.__version__,
    }


def profile_validate(day: Day, top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    validate_day(day.path, workers=1)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


# -- report ---------------------------------------------------------------------------------


def _table(v: dict[str, Any], t: dict[str, Any]) -> list[str]:
    rows = [
        f"  validate: {v['day']}  ({v['compressed_bytes'] / 1e6:.1f} MB gzip in {len(v['files'])} files, "
        f"{v['diff_rows']:,} diff rows, {v['book_frames']:,} book frames, {v['trades']:,} trades)",
        f"  {'':<34} {'seconds':>8} {'MB/s':>8} {'diffs/s':>10} {'ratio':>7}",
    ]
    for key, label in (
        ("bare", "bare pass (gunzip + orjson/split)"),
        ("validate_default", "validate_day (default workers)"),
        ("validate_workers1", "validate_day (workers=1)"),
    ):
        s = v[key]
        rows.append(
            f"  {label:<34} {s['seconds']:>8.2f} {s['mb_per_s']:>8.1f} {s['diffs_per_s']:>10,.0f} "
            f"{s['ratio']:>7.1%}"
        )
    ok = "ok" if v["ok_default"] and v["ok_workers1"] else f"NOT ok: {v['problems_total']} problems"
    rows.append(f"  target: ratio ≥ 50 %;  validate_day says the day is {ok}")
    rows += [
        f"  trades load: {t['day']}/{t['file']}",
        f"  ({t['rows']:,} rows, {t['compressed_bytes'] / 1e6:.1f} MB gzip)",
        f"  {'pyarrow.csv.read_csv(path)':<34} {t['pyarrow_read_csv_s']:>8.3f} s",
        f"  {'trades_table(path) (Arrow)':<34} {t['trades_table_s']:>8.3f} s  {t['ratio_trades_table']:.2f}×",
        f"  {'open_day(day).trades() (pandas)':<34} {t['open_day_trades_s']:>8.3f} s  {t['ratio']:.2f}×"
        f"  ({t['rows_per_s']:,.0f} rows/s; target ≤ 2×)",
    ]
    return rows


def main(quick: bool = False, regen: bool | None = None, profile: bool = False) -> dict[str, Any]:
    """Print the table and save benchmarks/out/day_io.json (called from run.py)."""
    if regen is None:
        regen = os.environ.get("MMDATA_BENCH_REGEN", "") not in ("", "0")
    specs = QUICK if quick else FULL
    print(
        f"\n== day_io ({'quick' if quick else 'full'}; best of {REPEAT}; load avg "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores)",
        flush=True,
    )
    days = {spec.role: get_day(spec, regen) for spec in specs}
    for day in days.values():
        s = day.meta["summary"]
        c = s["symbols"][next(iter(s["symbols"]))]
        print(
            f"  day {day.spec.key}: {c['diffs']:,} diffs, {c['trades']:,} trades, reconnects "
            f"{s['reconnects']}, recorder lag max {day.meta['lag_s']['max']:.1f} s (at stop "
            f"{day.meta['lag_s']['at_stop']:.1f} s), recorded in {day.meta['generation_seconds']:.0f} s",
            flush=True,
        )
    v = bench_validate(days["diffs"])
    t = bench_trades(days["trades"])
    for line in _table(v, t):
        print(line)
    for label, total, probs in (
        ("default", v["problems_total_default"], v["problems_default"]),
        ("workers=1", v["problems_total"], v["problems"]),
    ):
        if total:
            print(f"  validate_day ({label}) problems ({total}):")
            for p in probs[:10]:
                print(f"    {p}")
    prof_text = profile_validate(days["diffs"]) if profile else None
    if prof_text:
        print("  cProfile of validate_day(workers=1), by own time:")
        print("\n".join("    " + line for line in prof_text.splitlines() if line.strip()))
    result = {
        "meta": {
            "command": shlex.join([sys.executable, *sys.argv]),
            "quick": quick,
            "python": platform.python_version(),
            "orjson": orjson.__version__,
            "pyarrow": pa.__version__,
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "repeat": REPEAT,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "days": {
            role: {
                "key": d.spec.key,
                "record_command": d.meta["command"],
                "generation_seconds": d.meta["generation_seconds"],
                "generated_at": d.meta["generated_at"],
                "summary": d.meta["summary"],
                "recorder_lag_s": d.meta["lag_s"],
            }
            for role, d in days.items()
        },
        "validate": v,
        "trades_load": t,
        "profile": prof_text,
    }
    OUT.mkdir(exist_ok=True)
    path = OUT / "day_io.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  saved {path.relative_to(HERE.parent)}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller days (≥ 100,000 diffs / trades)")
    parser.add_argument(
        "--regen", action="store_true", help="record the days again (or MMDATA_BENCH_REGEN=1)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile top-15 of validate_day(workers=1)")
    args = parser.parse_args()
    main(args.quick, args.regen or None, args.profile)
