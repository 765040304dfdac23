"""Write replayed book views as CSV, JSON Lines or Parquet, streaming (``mmdata replay``).

CSV and JSON Lines hold the levels as the venue's exact text. Parquet holds float64 level
columns for analysis plus the exact text in ``<column>_text`` (like the loaders), and
``time`` as ``timestamp[ns, UTC]``. Rows: ``time, time_ns, recv_seq, state, bid_px_1,
bid_qty_1, ... ask_px_N, ask_qty_N`` (a book with fewer levels leaves them empty / null).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from mmdata.replay.day import BookView

__all__ = ["FORMATS", "format_for", "level_columns", "write_views"]

FORMATS = ("csv", "jsonl", "parquet")
_BATCH = 10_000


def format_for(out: Path | None, fmt: str | None) -> str:
    """The output format: ``fmt`` if given, else from ``out``'s suffix, else CSV.

    Raises ValueError for an unknown format or Parquet to a terminal."""
    if fmt is None:
        suffix = out.suffix.lower() if out is not None else ""
        fmt = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(
            suffix, "csv"
        )
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise ValueError("parquet is a binary format: give --out FILE.parquet")
    return fmt


def level_columns(levels: int) -> list[str]:
    """``bid_px_1, bid_qty_1, ..., ask_px_N, ask_qty_N`` in book-frame order."""
    return [
        f"{side}_{kind}_{i}"
        for side in ("bid", "ask")
        for i in range(1, levels + 1)
        for kind in ("px", "qty")
    ]


def write_views(
    views: Iterable[BookView],
    levels: int,
    fmt: str,
    sink: Path | IO[str],
    *,
    synced_only: bool = False,
    on_row: Callable[[BookView], None] | None = None,
) -> int:
    """Write ``views`` to ``sink`` (a path, or a text stream for csv/jsonl); returns rows written."""
    names = ["time", "time_ns", "recv_seq", "state", *level_columns(levels)]
    rows = 0
    if fmt == "parquet":
        if not isinstance(sink, Path):
            raise ValueError("parquet needs a file path")
        return _write_parquet(views, levels, sink, synced_only=synced_only, on_row=on_row)
    own = isinstance(sink, Path)
    stream: IO[str] = open(sink, "w", encoding="utf-8", newline="") if isinstance(sink, Path) else sink  # noqa: SIM115
    try:
        writer = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(names)
        for row in _rows(views, levels, synced_only, on_row):
            if writer is not None:
                writer.writerow([row[n] for n in names])
            else:
                stream.write(orjson.dumps(row).decode() + "\n")
            rows += 1
    finally:
        if own:
            stream.close()
        else:
            stream.flush()
    return rows


def _rows(
    views: Iterable[BookView],
    levels: int,
    synced_only: bool,
    on_row: Callable[[BookView], None] | None,
) -> Iterator[dict[str, Any]]:
    """The rows to write: every view reported to ``on_row``, unproven ones left out on request."""
    for view in views:
        if on_row is not None:
            on_row(view)
        if synced_only and not view.synced:
            continue
        yield view.row(levels)


def _write_parquet(
    views: Iterable[BookView],
    levels: int,
    path: Path,
    *,
    synced_only: bool,
    on_row: Callable[[BookView], None] | None,
) -> int:
    cols = level_columns(levels)
    fields = [
        pa.field("time", pa.timestamp("ns", tz="UTC")),
        pa.field("recv_seq", pa.int64()),
        pa.field("state", pa.string()),
        *[pa.field(c, pa.float64()) for c in cols],
        *[pa.field(f"{c}_text", pa.string()) for c in cols],
    ]
    schema = pa.schema(fields)
    tmp = path.with_name(path.name + ".partial")
    try:
        rows = _fill_parquet(tmp, schema, cols, _rows(views, levels, synced_only, on_row))
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written file behind
        raise
    tmp.replace(path)  # a reader never sees a half-written file
    return rows


def _fill_parquet(tmp: Path, schema: pa.Schema, cols: list[str], source: Iterator[dict[str, Any]]) -> int:
    batch: dict[str, list[Any]] = {f.name: [] for f in schema}
    rows = 0
    with pq.ParquetWriter(tmp, schema) as writer:

        def flush() -> None:
            writer.write_table(pa.Table.from_pydict(batch, schema=schema))
            for values in batch.values():
                values.clear()

        for row in source:
            batch["time"].append(row["time_ns"])
            batch["recv_seq"].append(row["recv_seq"])
            batch["state"].append(row["state"])
            for c in cols:
                text = row[c]
                batch[c].append(float(text) if text else None)
                batch[f"{c}_text"].append(text if text else None)
            rows += 1
            if len(batch["time"]) >= _BATCH:
                flush()
        if batch["time"]:
            flush()
    return rows
