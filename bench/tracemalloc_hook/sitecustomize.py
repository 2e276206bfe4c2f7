"""Loaded by the gateway process only under ``python -m bench.live --trace-memory`` (this
directory is put first on its PYTHONPATH): on SIGUSR1, dump a tracemalloc snapshot to the file
named by CHINWAG_BENCH_SNAPSHOT, then create CHINWAG_BENCH_SNAPSHOT + ".done"."""

from __future__ import annotations

import os
import signal
import tracemalloc
from pathlib import Path
from types import FrameType

_OUT = os.environ.get("CHINWAG_BENCH_SNAPSHOT")


def _dump(_signum: int, _frame: FrameType | None) -> None:
    if _OUT is None:
        return
    tracemalloc.take_snapshot().dump(_OUT)
    Path(_OUT + ".done").touch()


if _OUT is not None:
    tracemalloc.start(12)
    signal.signal(signal.SIGUSR1, _dump)
