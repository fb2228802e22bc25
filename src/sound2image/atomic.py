"""Atomic file writes: write a temporary sibling, then rename it over the target.

Every file the package writes for a user (images, results, reports, splits, models, caches) goes through
:func:`write_atomic`, so that

- a crash, Ctrl-C or full disk never leaves a half-written file under the real name (the rename is
  atomic on POSIX and Windows file systems; the temporary file is removed on failure);
- two processes writing the same file never share a temporary name (``tempfile.mkstemp``): each renames
  a whole file and the last one wins;
- the file gets the permissions a plain ``open(path, "w")`` would give (0o666 less the umask), not
  ``mkstemp``'s private 0o600.

This module sits at the bottom of the package: it imports the standard library only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _process_umask() -> int:
    """The process's umask, read once (setting it to read it back is not thread-safe, so not per write)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The permissions of a newly written file, as ``open`` would create it.
FILE_MODE = 0o666 & ~_process_umask()


def write_atomic(path: str | os.PathLike[str], write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` on a new temporary file beside ``path``, then rename it to ``path``.

    Args:
        path: the file to create or replace; its parent folders are created.
        write: writes the whole content to the path it is given (a ``str``), e.g.
            ``lambda tmp: image.save(tmp, format="PNG")``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        Whatever ``write`` or the file system raises; the temporary file is gone and an existing ``path``
        is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """:func:`write_atomic` of ``text``."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding=encoding))


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """:func:`write_atomic` of ``data``."""
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))
