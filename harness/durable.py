"""Crash-consistent files: a rename is atomic, but only durable once the data and the folder entry are on disk.

`os.replace(tmp, final)` guarantees that a reader sees the old file or the new one, never half of one, as long
as the machine keeps running. After a power loss the rename may be on disk while the data it points to is
not (ext4/xfs reorder them): `final` would then be empty or partly zero. So the data is fsynced before the
rename and the folder after it (the rename itself lives in the folder's entries).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    """Flush one file's data and metadata to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (renames, new files); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; nothing more can be done there
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: str | Path, final: str | Path) -> None:
    """`os.replace(tmp, final)` that survives a power loss: data first, then the rename, then the folder."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def write_bytes_durably(final: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `final`, fsync it, rename it over `final`, fsync the folder."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(final.parent)


class DiskFullError(OSError):
    """The disk filled up during a write; the message names what was being written and what to do."""


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, from Python's own writes or as text from a library that wraps it (safetensors' Rust I/O)."""
    return (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err)


@contextmanager
def naming_disk_full(what: str) -> Iterator[None]:
    """Turn a full disk inside the block into a DiskFullError naming `what` was being written."""
    try:
        yield
    except DiskFullError:
        raise
    except Exception as err:  # OSError, or a library's own error type carrying the OS message
        if not is_disk_full(err):
            raise
        full = DiskFullError(
            f"no space left on device while writing {what}; free some space (or set results_dir to another "
            "disk) and rerun the same command: finished stages are kept"
        )
        full.errno = errno.ENOSPC
        raise full from None
