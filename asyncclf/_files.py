"""Model files on disk: read up to a limit (a huge or endless file is never read
whole), and written atomically (a crash never leaves half a model where one was)."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Any

__all__ = ["read_at_most", "read_model_file", "write_atomically"]


def read_model_file(source: Path, limits: tuple[int, int]) -> tuple[bytes | None, int]:
    """The content of ``source`` (None if it holds more than its limit), and the limit:
    the first of ``limits`` for a skops archive (a zip), the second for anything else.

    A regular file larger than its limit is refused by its size, unread; anything else
    (a pipe) is read up to the limit + 1 bytes.
    """
    with source.open("rb") as file:
        head = file.read(2)
        limit = limits[0] if head == b"PK" else limits[1]
        status = os.fstat(file.fileno())
        if stat.S_ISREG(status.st_mode) and status.st_size > limit:
            return None, limit
        return head + read_at_most(file, limit + 1 - len(head)), limit


def read_at_most(file: Any, size: int) -> bytes:
    """Read up to ``size`` bytes, a chunk at a time (``size`` may exceed memory)."""
    chunks: list[bytes] = []
    left = size
    while left > 0:
        chunk = file.read(min(left, 1 << 24))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def write_atomically(target: Path, data: bytes) -> None:
    """Replace the file ``target`` by one holding ``data``, or leave it untouched."""
    try:
        status = target.stat()
    except FileNotFoundError:
        mode = None
    else:
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EEXIST, "it exists and is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
    # Created with the final mode (less the umask), so the content is never more
    # readable than the file it replaces, not even while it is being written.
    handle, temporary = create_beside(target, 0o666 if mode is None else mode)
    try:
        with os.fdopen(handle, "wb") as file:
            if mode is not None:
                os.chmod(temporary, mode)  # the exact bits, whatever the umask
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    sync_directory(target.parent)


def create_beside(target: Path, mode: int) -> tuple[int, Path]:
    """Create and open a new, uniquely named file in ``target``'s directory."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(temporary, flags, mode), temporary
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name beside it")


def sync_directory(directory: Path) -> None:
    """Flush the rename to disk where the OS can open a directory (best effort)."""
    try:
        handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
