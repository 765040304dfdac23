"""The recorder: ``mmdata record`` writes the day-folder contract of ARCHITECTURE.md §4.

>>> from mmdata.record import RecorderConfig, record            # doctest: +SKIP
>>> summary = record(RecorderConfig("kraken", ("BTC/USD",), duration_s=60))

Pieces: :mod:`~mmdata.record.config` (every knob), :mod:`~mmdata.record.window`
(trading window, pure), :mod:`~mmdata.record.files` (one day folder's writers),
:mod:`~mmdata.record.symbol` (engine + files of one symbol), and
:mod:`~mmdata.record.recorder` (connections, snapshots, days, shutdown).
"""

from mmdata.record.config import RecorderConfig
from mmdata.record.recorder import (
    Recorder,
    RecorderStatus,
    RecordSummary,
    SimulateOptions,
    record,
    record_async,
)
from mmdata.record.window import TradingWindow

__all__ = [
    "RecordSummary",
    "Recorder",
    "RecorderConfig",
    "RecorderStatus",
    "SimulateOptions",
    "TradingWindow",
    "record",
    "record_async",
]
