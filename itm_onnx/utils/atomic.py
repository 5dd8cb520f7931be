"""Atomic file output: readers never see a half-written artifact.

Every file the toolkit writes (ONNX models, reports, images) goes through
:func:`atomic_output`, so an interrupted run leaves either the old file or the new
one, never a truncated mix, and a failed write leaves no stray temporary behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_CREATE_ATTEMPTS = 100


@contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    The caller writes the temporary file by path (any library that takes a file name
    works). The temporary lives in the destination directory so that ``os.replace``
    is an atomic rename on one file system; its name is ``.<name>.tmp<random><suffix>``,
    ending in ``suffix`` (default: the destination's own suffix) because writers such as
    Pillow pick the format from the extension. Its content is fsync'ed before the
    rename and the directory after it, so a crash cannot leave an empty file behind
    the new name. On any exception (KeyboardInterrupt included) the temporary is
    removed and ``path`` is left untouched.

    Raises:
        FileNotFoundError: the destination directory does not exist (it is not created:
            where outputs go is the caller's decision).
    """
    dest = Path(path)
    directory = dest.parent
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: output directory does not exist")
    tmp = _create_temp(directory, f".{dest.name}.tmp", dest.suffix if suffix is None else suffix)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, dest)
        _fsync_directory(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_temp(directory: Path, prefix: str, suffix: str) -> Path:
    """Create an empty, uniquely named file and return its path.

    ``os.open`` with mode 0o666 lets the kernel apply the process umask, so the final
    file gets the permissions a plain ``open()`` would give it (``tempfile.mkstemp``
    would give 0600, and reading the umask means briefly changing it process-wide).
    """
    for _ in range(_CREATE_ATTEMPTS):
        candidate = directory / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"{directory}: could not create a unique temporary file")


def _fsync_path(path: Path) -> None:
    """Flush a file's data to disk so the rename never publishes unwritten blocks."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself; a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
