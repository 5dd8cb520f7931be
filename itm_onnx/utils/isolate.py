"""Run one stage of a long job in a fresh Python process, so that its memory ends with it.

The main job's stages each peak at 0.9-1.8 GB at 1088x1920 (PyTorch's forward in export,
an fp32 session in validate and bench), and what a stage frees stays partly in the
process (glibc's arenas, PyTorch and ONNX Runtime themselves, ~0.8 GB after export even
with ``malloc_trim``), so that in one process the job's peak was the sum of a leftover
and the largest session. In a child each stage starts from a bare interpreter and gives
everything back when it ends. ``spawn``, not ``fork``: a forked child would inherit the
parent's heap and ONNX Runtime's and PyTorch's thread pools.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from ..errors import ItmOnnxError
from .progress import is_quiet, set_quiet

T = TypeVar("T")


def run_isolated(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a new process; its result or its exception here.

    ``function`` and its arguments must be picklable (module-level functions, dataclasses);
    the child inherits stderr, so its progress bars and log lines appear as usual, and
    the quiet switch of :mod:`.progress` (``--json``).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=set_quiet,
                             initargs=(is_quiet(),)) as pool:
        try:
            return pool.submit(function, *args, **kwargs).result()
        except BrokenProcessPool:
            raise ItmOnnxError(
                f"{function.__name__}: its process died (out of memory, or killed)") from None
