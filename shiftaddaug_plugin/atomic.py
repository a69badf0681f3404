"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then ``os.replace``-d over the
target. A crash or error never leaves a half-written checkpoint or a corrupted previous file (DEVELOPERS guide,
docs/ARCHITECTURE.md). Light: standard library only."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

__all__ = ["atomic_write", "atomic_write_text"]


def _umask_mode() -> int:
    """``0o666`` minus the process umask: what ``open()`` would give a new file (mkstemp makes them ``0o600``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], *, text: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file next to ``path``, fsync it and ``os.replace`` it over ``path``.

    The parent folder is created. On any error the temporary file is removed and ``path`` is left as it was.
    ``text=True`` opens the handle in UTF-8 text mode, else binary (e.g. ``lambda h: torch.save(obj, h)``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with (os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    def write(handle: IO[Any]) -> None:
        handle.write(text)

    return atomic_write(path, write, text=True)
