"""Give freed heap memory back to the operating system between the stages of a long job.

A 1088x1920 stage (export's PyTorch forward, a validation run) frees gigabytes of
tensors, but glibc's allocator keeps much of that in its arenas, so the process stays
large for the rest of the job: in the pipeline ~0.7 GB that the benchmark's own child
processes then stacked on top of. ``malloc_trim(0)`` returns it. No-op where the C
library has no ``malloc_trim`` (macOS, musl).
"""

from __future__ import annotations

import ctypes
import gc
from functools import cache


@cache
def _malloc_trim():
    """glibc's ``malloc_trim`` from the running process's own symbols, or None."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
