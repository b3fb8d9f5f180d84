"""Positional file I/O that works on every platform vhdtool runs on.

POSIX has ``pread``/``preadv``/``pwrite``: no shared seek cursor, so threads can share one file
descriptor. Windows Python has none of them; there each descriptor gets a lock and the calls fall
back to ``lseek`` + ``read``/``write`` under it, which keeps them correct (one cursor move and
transfer at a time per descriptor), if less concurrent.

Every function but :func:`pwrite_all` returns what one system call did (a short count is possible);
:func:`pwrite_all` is the one loop over ``pwrite`` that every writer uses.
"""

from __future__ import annotations

import errno
import os
import threading

from vhdtool.errors import OutputError

HAVE_PREAD = hasattr(os, "pread")
HAVE_PREADV = hasattr(os, "preadv")
HAVE_PWRITE = hasattr(os, "pwrite")

_locks: dict[int, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(fd: int) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(fd)
        if lock is None:
            lock = _locks[fd] = threading.Lock()
        return lock


def forget(fd: int) -> None:
    """Drop the fallback lock of ``fd`` when closing it (optional: a reused number just reuses the lock)."""
    with _locks_guard:
        _locks.pop(fd, None)


def pread(fd: int, length: int, offset: int) -> bytes:
    """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
    if HAVE_PREAD:
        return os.pread(fd, length, offset)
    with _lock_for(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, length)


def preadinto(fd: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset``; the number of bytes read (0 at the end of the file)."""
    if HAVE_PREADV:
        return os.preadv(fd, [view], offset)
    data = pread(fd, len(view), offset)
    view[:len(data)] = data
    return len(data)


def pwrite(fd: int, view: memoryview | bytes, offset: int) -> int:
    """Write ``view`` at ``offset``; the number of bytes written."""
    if HAVE_PWRITE:
        return os.pwrite(fd, view, offset)
    with _lock_for(fd):
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, view)


def pwrite_all(fd: int, view: memoryview | bytes, offset: int) -> int:
    """Write all of ``view`` at ``offset``, looping over short writes; the number of bytes written.

    A write that makes no progress raises :class:`OSError` (``EIO``) instead of looping forever.
    """
    data = memoryview(view).cast("B")
    done = 0
    while done < len(data):
        n = pwrite(fd, data[done:], offset + done)
        if n <= 0:
            raise OSError(errno.EIO, f"write at byte {offset + done} made no progress")
        done += n
    return done


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges holding data, from ``SEEK_DATA``/``SEEK_HOLE``.

    Where the platform or filesystem cannot tell, the whole file counts as data.
    """
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None or size == 0:
        return [(0, size)] if size else []
    ranges: list[tuple[int, int]] = []
    position = 0
    try:
        while position < size:
            try:
                start = os.lseek(fd, position, seek_data)
            except OSError as err:
                if err.errno == errno.ENXIO:  # no data after position
                    break
                raise
            end = min(os.lseek(fd, start, seek_hole), size)
            ranges.append((start, end))
            position = end
    except OSError:
        return [(0, size)]
    return ranges


def file_holes(fd: int, size: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` ranges of a file that are holes (read as zeros, no storage)."""
    holes: list[tuple[int, int]] = []
    position = 0
    for start, end in data_ranges(fd, size):
        if start > position:
            holes.append((position, start))
        position = end
    if position < size:
        holes.append((position, size))
    return holes


def filesystem_type(fd: int) -> str | None:
    """The type of the filesystem holding the open file ``fd`` (``"ext4"``, ``"xfs"``, ...), from
    ``/proc/self/mountinfo``; ``None`` where that cannot be told (not Linux, several matches)."""
    try:
        dev = os.fstat(fd).st_dev
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    wanted = f"{os.major(dev)}:{os.minor(dev)}"
    kinds = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 4 and fields[2] == wanted and " - " in line:
            kinds.add(line.split(" - ", 1)[1].split()[0])
    return kinds.pop() if len(kinds) == 1 else None


def preallocate(fd: int, offset: int, length: int) -> bool:
    """Allocate the blocks of ``[offset, offset + length)`` before they are written (``fallocate``);
    ``False`` where the system or filesystem cannot (nothing was done). Other errors (ENOSPC) raise."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return False
    try:
        allocate(fd, offset, length)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL, errno.ENODEV):
            return False
        raise
    return True


# Errors a user can act on, told in words (what to free or change), for every writer of output files.
_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def describe_os_error(path: str, err: OSError, action: str) -> OutputError:
    """An :class:`OutputError` with a message that says what the user can do about ``err``."""
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "no space left on the output's filesystem (or quota exceeded); free space or write elsewhere"
    elif err.errno in _PERMISSION:
        hint = f"permission denied ({reason}); choose a folder you can write to"
    elif err.errno == errno.EFBIG:
        hint = "file too large for this filesystem or limit (FAT32 stops at 4 GiB)"
    else:
        hint = reason
    return OutputError(f"{path}: cannot {action}: {hint}")
