"""Read a day folder's files into Arrow tables: exact text kept, floats added for analysis.

Every reader decompresses member by member (:func:`~mmdata.store.capture.read_gzip`), so
a file whose last gzip member was cut short by a crash still loads every complete row; the
damage is reported as a :class:`DataWarning`, as are rows that do not parse (skipped and
counted). Nothing is dropped silently.

Columns
-------
Every table keeps the file's own columns with their names (``recv_seq``, ``recv_time_ns``,
...) and adds ``recv_time`` (``timestamp[ns, UTC]``, the same instant as ``recv_time_ns``)
and, where the file has ``event_time_ms``, ``event_time`` (``timestamp[ms, UTC]``).

* **trades**: ``price`` and ``qty`` are float64 for analysis; ``price_text`` and
  ``qty_text`` hold the venue's exact decimal text.
* **book_frames**: ``bid_px_1`` ... ``ask_qty_N`` are float64 (null where the book had fewer
  levels); ``text=True`` adds ``bid_px_1_text`` ... with the exact text.
* **diffs**: ``bids``/``asks`` are ``list<list<string>>`` of exact ``[price, qty]`` text;
  ``raw`` is the venue frame exactly as received (``raw=False`` leaves it out).
* **events**, **gaps**: as in the file (integers as int64, the rest as text).

Column meanings: docs/format.md.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from mmdata.errors import CorruptFile
from mmdata.store.capture import read_gzip

__all__ = [
    "DataWarning",
    "book_frames_table",
    "diffs_table",
    "events_table",
    "gaps_table",
    "trades_table",
]

_TS_NS = pa.timestamp("ns", tz="UTC")
_TS_MS = pa.timestamp("ms", tz="UTC")
_LEVELS = pa.list_(pa.list_(pa.string()))

DIFF_SCHEMA = pa.schema(
    [
        ("recv_seq", pa.int64()),
        ("recv_time_ns", pa.int64()),
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("kind", pa.string()),
        ("event_time_ms", pa.int64()),
        ("first_id", pa.int64()),
        ("last_id", pa.int64()),
        ("checksum", pa.int64()),
        ("seq", pa.int64()),
        ("bids", _LEVELS),
        ("asks", _LEVELS),
        ("raw", pa.string()),
    ]
)


class DataWarning(UserWarning):
    """Part of a recorded file could not be read; every complete row was loaded."""


def _load(path: Path) -> bytes:
    data, problem = read_gzip(path)
    if problem is not None:
        warnings.warn(DataWarning(problem), stacklevel=3)
    return data


def _read_csv(
    path: Path,
    types: dict[str, pa.DataType],
    *,
    data: bytes | None = None,
    quoted: bool = False,
    nullable_text: bool = False,
) -> pa.Table:
    """A recorder CSV: every column text unless typed in ``types``; bad rows skipped and reported.

    ``quoted``: fields may hold quoted newlines (the ledger); ``nullable_text``: an empty
    text field is null (book-frame levels a thin book did not have) rather than ``""``.
    """
    if data is None:
        data = _load(path)
    header = data[: data.find(b"\n")].decode("utf-8", "replace").split(",") if b"\n" in data else []
    if not header or header == [""]:
        if data or read_gzip(path)[1] is not None:
            # Damaged from its first bytes: nothing is readable, which is not "no rows".
            raise CorruptFile(f"{path}: no complete row can be read", path=str(path))
        # An empty file (a recorder that died before its first flush): no rows, known columns.
        warnings.warn(DataWarning(f"{path.name} is empty"), stacklevel=3)
        return pa.table({name: pa.array([], type=kind) for name, kind in types.items()})
    # Every column not typed is text, even when all of it is empty (never Arrow's guess).
    types = {name: types.get(name, pa.string()) for name in header}
    skipped: list[str] = []

    def on_bad(row: pacsv.InvalidRow) -> str:
        skipped.append(f"line {row.number}: {str(row.text)[:80]!r}")
        return "skip"

    table = pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 22),
        parse_options=pacsv.ParseOptions(newlines_in_values=quoted, invalid_row_handler=on_bad),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            strings_can_be_null=nullable_text,
            quoted_strings_can_be_null=False,
            null_values=[""],
            auto_dict_encode=False,
        ),
    )
    if skipped:
        warnings.warn(
            DataWarning(f"{path.name}: {len(skipped)} unparsable rows skipped ({skipped[0]} ...)"),
            stacklevel=3,
        )
    return table


def _with_times(table: pa.Table) -> pa.Table:
    names = table.column_names
    if "recv_time_ns" in names:
        at = names.index("recv_time_ns") + 1
        table = table.add_column(at, "recv_time", table.column("recv_time_ns").cast(_TS_NS))
    names = table.column_names
    if "event_time_ms" in names:
        at = names.index("event_time_ms") + 1
        table = table.add_column(at, "event_time", table.column("event_time_ms").cast(_TS_MS))
    return table


def _float(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Exact decimal text to float64 (correctly rounded); empty text is null."""
    return pc.cast(column, pa.float64())


def trades_table(path: str | Path) -> pa.Table:
    """``trades_ws_*.csv.gz`` as a table (see the module docstring for columns)."""
    p = Path(path)
    types: dict[str, pa.DataType] = {
        "recv_seq": pa.int64(),
        "recv_time_ns": pa.int64(),
        "event_time_ms": pa.int64(),
        "trade_id": pa.int64(),
        "price": pa.string(),
        "qty": pa.string(),
        "side": pa.string(),
    }
    try:
        table = _read_csv(p, types)
    except pa.ArrowInvalid:  # a venue with non-numeric trade ids
        table = _read_csv(p, {**types, "trade_id": pa.string()})
    price, qty = table.column("price"), table.column("qty")
    table = table.set_column(table.column_names.index("price"), "price", _float(price))
    table = table.set_column(table.column_names.index("qty"), "qty", _float(qty))
    table = table.append_column("price_text", price).append_column("qty_text", qty)
    return _with_times(table)


def book_frames_table(path: str | Path, *, text: bool = False) -> pa.Table:
    """``orderbook_ws_depth_*.csv.gz`` as a table; ``text=True`` adds the exact level text."""
    p = Path(path)
    data = _load(p)
    header = data[: data.find(b"\n")].decode("utf-8", "replace").split(",") if b"\n" in data else []
    head = {"recv_seq", "recv_time_ns", "event_time_ms", "update_id", "checksum"}
    types: dict[str, pa.DataType] = {name: (pa.int64() if name in head else pa.string()) for name in header}
    table = _read_csv(p, types, data=data, nullable_text=True)
    level_names = [n for n in table.column_names if n not in head]
    texts = {n: table.column(n) for n in level_names}
    for name in level_names:
        table = table.set_column(table.column_names.index(name), name, _float(texts[name]))
    if text:
        for name in level_names:
            table = table.append_column(f"{name}_text", texts[name])
    return _with_times(table)


def diffs_table(path: str | Path, *, raw: bool = True) -> pa.Table:
    """``diffs/depth_diffs_*.ndjson.gz`` as a table; ``raw=False`` leaves out the frame text."""
    p = Path(path)
    data = _load(p)
    schema = DIFF_SCHEMA if raw else DIFF_SCHEMA.remove(DIFF_SCHEMA.get_field_index("raw"))
    options = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        table = pajson.read_json(pa.BufferReader(data), parse_options=options)
    except pa.ArrowInvalid:
        # Some row is not JSON (or not a diff row): keep the rows that are, say how many are not.
        good: list[bytes] = []
        bad = 0
        for line in data.splitlines():
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if not _diff_row_ok(rec):
                bad += 1
                continue
            good.append(line)
        warnings.warn(DataWarning(f"{p.name}: {bad} unparsable rows skipped"), stacklevel=3)
        table = pajson.read_json(pa.BufferReader(b"\n".join(good) + b"\n"), parse_options=options)
    return _with_times(table.select(schema.names))


_INT_FIELDS = ("recv_seq", "recv_time_ns", "event_time_ms", "first_id", "last_id", "checksum", "seq")
_TEXT_FIELDS = ("exchange", "symbol", "kind", "raw")


def _diff_row_ok(rec: object) -> bool:
    """A diff row Arrow can take: JSON object, integer fields int or null, text fields text,
    levels lists of ``[price, qty]`` text."""
    if not isinstance(rec, dict) or type(rec.get("recv_seq")) is not int:
        return False
    for key in _INT_FIELDS:
        value = rec.get(key)
        if value is not None and type(value) is not int:
            return False
    for key in _TEXT_FIELDS:
        value = rec.get(key)
        if value is not None and not isinstance(value, str):
            return False
    for key in ("bids", "asks"):
        levels = rec.get(key)
        if levels is None:
            continue
        if not isinstance(levels, list) or not all(
            isinstance(lv, list) and all(isinstance(x, str) for x in lv) for lv in levels
        ):
            return False
    return True


def events_table(path: str | Path) -> pa.Table:
    """``events_*.csv.gz`` (the ledger) as a table."""
    types = {"event_id": pa.int64(), "recv_time_ns": pa.int64(), "recv_seq": pa.int64()}
    return _with_times(_read_csv(Path(path), types, quoted=True))


def gaps_table(path: str | Path) -> pa.Table:
    """``gaps_*.csv.gz`` as a table (``expected``/``got`` as text: ids or checksums)."""
    types = {"event_id": pa.int64(), "recv_time_ns": pa.int64(), "recv_seq": pa.int64()}
    return _with_times(_read_csv(Path(path), types, quoted=True))
