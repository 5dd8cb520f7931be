"""Give freed heap memory back to the operating system within a long-running process.

A 1088x1920 session frees gigabytes when it is dropped, but glibc's allocator keeps much
of that in its arenas, so the process stays large: `bench --sequential` calls this after
each model, before the next one loads. (The main job goes further and runs each stage in
a process of its own, utils/isolate.py: trimming alone left ~0.5-0.8 GB after export.)
``malloc_trim(0)`` returns it. No-op where the C library has no ``malloc_trim`` (macOS,
musl).
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
