"""Run ``python -m mmdata serve …`` as a process for a test and read where it listens."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def mmdata_process(
    args: list[str], pattern: str, *, count: int = 1, lines: int = 80
) -> Iterator[tuple[subprocess.Popen[str], list[re.Match[str]]]]:
    """Start ``mmdata *args``; yield it with the first ``count`` stderr lines matching
    ``pattern`` (its "listening on" lines). Stopped with SIGINT (as Ctrl-C) at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmdata", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        found: list[re.Match[str]] = []
        for _ in range(lines):
            m = re.search(pattern, proc.stderr.readline())
            if m:
                found.append(m)
                if len(found) == count:
                    break
        assert len(found) == count, f"mmdata {args[:2]} did not say where it listens ({pattern!r})"
        yield proc, found
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
