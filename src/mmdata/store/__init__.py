"""On-disk formats: capture files (raw traffic), crash-safe gzip members and the recorder's row writers."""

from mmdata.store.capture import (
    CAPTURE_FORMAT,
    CaptureHeader,
    CaptureReader,
    CaptureRecord,
    CaptureWriter,
    open_capture,
)
from mmdata.store.gzmembers import MemberWriter, TailReport, last_lines, repair_tail, scan_members
from mmdata.store.writers import LiveFile, RowWriter, csv_field, csv_row

__all__ = [
    "CAPTURE_FORMAT",
    "CaptureHeader",
    "CaptureReader",
    "CaptureRecord",
    "CaptureWriter",
    "LiveFile",
    "MemberWriter",
    "RowWriter",
    "TailReport",
    "csv_field",
    "csv_row",
    "last_lines",
    "open_capture",
    "repair_tail",
    "scan_members",
]
