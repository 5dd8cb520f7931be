"""Progress bars for long work (calibration, quantization, training, benchmarks, run).

One switch for the whole process: a bar is drawn on stderr only when stderr is a
terminal and nobody asked for quiet (the CLI's ``--json`` calls :func:`set_quiet`), so
machine output and logs never fill with carriage returns. tqdm does the drawing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_quiet = False


def set_quiet(quiet: bool = True) -> None:
    """Silence (or re-enable) every progress bar of this process."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def bars_enabled() -> bool:
    """True when a bar would be drawn: stderr is a terminal and quiet is off."""
    return not _quiet and sys.stderr.isatty()


def track(iterable: Iterable[T], desc: str, total: int | None = None,
          unit: str = "it") -> Iterator[T]:
    """Iterate with a progress bar (or silently: see :func:`bars_enabled`)."""
    if not bars_enabled():
        yield from iterable
        return
    with tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr,
              dynamic_ncols=True, leave=False) as bar:
        yield from bar


@contextmanager
def bar(desc: str, total: int | None, unit: str = "it") -> Iterator[tqdm]:
    """A bar advanced by hand (``b.update(n)``); disabled bars accept the same calls."""
    with tqdm(desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
              leave=False, disable=not bars_enabled()) as handle:
        yield handle


def say(message: str) -> None:
    """One line for people on stderr; above the bars when they are drawn, not inside them."""
    if bars_enabled():
        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)
