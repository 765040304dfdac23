"""On-disk formats: capture files (raw traffic) now; day folders and writers with the recorder."""

from mmdata.store.capture import (
    CAPTURE_FORMAT,
    CaptureHeader,
    CaptureReader,
    CaptureRecord,
    CaptureWriter,
    open_capture,
)

__all__ = [
    "CAPTURE_FORMAT",
    "CaptureHeader",
    "CaptureReader",
    "CaptureRecord",
    "CaptureWriter",
    "open_capture",
]
