"""Writing the output image: a sparse temporary file beside the target, renamed only on success.

The file is created at its full size first, so every byte never written reads as zeros and stays a
hole: zero extents cost nothing and all-zero granules inside data chunks are skipped. A failure or
Ctrl-C removes the temporary file; an existing target is replaced only when asked (``force``).

The rename is atomic but, like ``cp`` or ``qemu-img convert``, not durable unless asked: with
``sync`` the data and the folder are flushed to the disk before and after it (a crash then never
leaves a renamed file with missing data); without it the kernel writes the page cache out when it
likes, and the command does not wait for the disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator

from vhdtool.blockio import fileio
from vhdtool.blockio.fileio import describe_os_error
from vhdtool.blockio.zeros import nonzero_runs
from vhdtool.errors import OutputError
from vhdtool.units import MiB

DEFAULT_GRANULARITY = 4096  # a filesystem block: the unit in which a hole can be left
# Start writeback of what was written every this many bytes, so the final fsync has little left
# to wait for and the output does not fill the page cache (see FixedFileSink._start_writeback).
WRITEBACK_EVERY = 64 * MiB
TEMP_SUFFIX = ".vhdtool-partial"
# Where a run of data is allocated (fallocate) before it is written, and from what length. On ext4 a
# buffered write into a hole reserves its blocks page by page (delayed allocation); into allocated,
# unwritten blocks it only copies: measured with two threads writing 1 GiB of data, in 1 MiB and
# 8 MiB runs, 26 % and 33 % less time, at 256 KiB 28 %, at 64 KiB even and at 16 KiB a loss (one
# more system call per run). Only ext4 was measured; elsewhere (tmpfs would zero the pages first,
# and glibc fills blocks by hand where a filesystem has no fallocate) runs are written as they are.
PREALLOCATING_FILESYSTEMS = frozenset({"ext4"})
PREALLOCATE_AT_LEAST = 256 * 1024

_APPEARED = "appeared while converting; use --force to replace it"
# Temporary files created and not yet installed or removed. Creating one and recording it here
# happen with SIGINT/SIGTERM held back, so an interrupt at any instant finds every partial output
# here, even one whose sink object never reached its caller; the CLI removes them on the way out.
_LIVE_TEMPORARIES: set[str] = set()
_HELD_SIGNALS = {getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name)}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM for the duration (POSIX, main thread); a no-op elsewhere."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = mask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


def remove_live_temporaries() -> None:
    """Delete every partial output still on disk (called when the process is interrupted)."""
    for path in list(_LIVE_TEMPORARIES):
        with contextlib.suppress(OSError):
            os.unlink(path)
        _LIVE_TEMPORARIES.discard(path)


# copy_file_range refused for this pair of files (old kernel, other filesystems, a device): write instead.
_NO_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EBADF, errno.EPERM,
            errno.ETXTBSY}
_NO_HARDLINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def check_target(target: str, force: bool) -> None:
    """Refuse a target that exists (unless ``force``), is not a regular file, or has no folder."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(target))
        if not os.path.isdir(folder):
            raise OutputError(f"{target}: folder {folder} does not exist") from None
        return
    except OSError as err:
        raise describe_os_error(target, err, "check the output") from err
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{target}: exists and is not a regular file; refusing to replace it")
    if not force:
        raise OutputError(f"{target}: exists; use --force to replace it")


def _make_sparse(fd: int) -> None:
    """Mark the file sparse on Windows (NTFS files are not sparse unless asked; POSIX ones are)."""
    if sys.platform != "win32":
        return
    import ctypes
    import msvcrt

    fsctl_set_sparse = 0x000900C4  # winioctl.h FSCTL_SET_SPARSE
    returned = ctypes.c_ulong(0)
    handle = msvcrt.get_osfhandle(fd)
    # Best effort: on FAT or ReFS without sparse support the file is simply written in full.
    ctypes.windll.kernel32.DeviceIoControl(ctypes.c_void_p(handle), fsctl_set_sparse, None, 0, None, 0,
                                           ctypes.byref(returned), None)


class FixedFileSink:
    """A :class:`~vhdtool.stream.pump.Sink` writing the stream to ``target`` of exactly ``size`` bytes.

    Call :meth:`abort` if the pump fails; :meth:`finish` (with ``sync``, after an fsync) renames
    into place. ``bytes_written`` counts the bytes actually written (the rest are holes).
    :meth:`write_at` and :meth:`copy_at` are positional and may be called from several threads.
    """

    def __init__(self, target: str | os.PathLike[str], size: int, *, force: bool = False,
                 granularity: int = DEFAULT_GRANULARITY, sync: bool = False,
                 writeback_every: int = WRITEBACK_EVERY) -> None:
        self.target = os.fspath(target)
        self.size = size
        self.force = force
        if granularity <= 0 or granularity % 8:
            raise ValueError("granularity must be a positive multiple of 8")
        self.granularity = granularity
        self.sync = sync
        self.bytes_written = 0
        self._count_lock = threading.Lock()
        self._can_copy = hasattr(os, "copy_file_range")
        self._preallocate = False  # decided once the file exists (its filesystem)
        # Early writeback only helps a final fsync; without one the kernel flushes when it likes.
        self.writeback_every = writeback_every if sync else 0
        self._pending_from = 0  # start of the written range whose writeback has not been started
        self._pending_bytes = 0
        check_target(self.target, force)
        folder = os.path.dirname(os.path.abspath(self.target))
        base = os.path.basename(self.target)
        self.fd = -1
        self.temp_path = ""
        flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL
                 | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
        for _ in range(16):
            candidate = os.path.join(folder, f".{base}.{os.urandom(4).hex()}{TEMP_SUFFIX}")
            try:
                with _signals_held():
                    # 0o666 minus the umask: the output gets the permissions of any new file.
                    self.fd = os.open(candidate, flags, 0o666)
                    self.temp_path = candidate
                    _LIVE_TEMPORARIES.add(candidate)
            except FileExistsError:
                continue
            except OSError as err:
                raise describe_os_error(self.target, err, "create a temporary file beside it") from err
            break
        else:
            raise OutputError(f"{self.target}: cannot find a free temporary name beside it")
        try:
            _make_sparse(self.fd)
            os.ftruncate(self.fd, size)
            self._preallocate = fileio.filesystem_type(self.fd) in PREALLOCATING_FILESYSTEMS
        except OSError as err:
            self.abort()
            raise describe_os_error(self.target, err, f"size the output to {size} bytes") from err
        except BaseException:
            self.abort()
            raise

    def _pwrite(self, offset: int, view: memoryview) -> None:
        if self._preallocate and len(view) >= PREALLOCATE_AT_LEAST:
            self._preallocate = fileio.preallocate(self.fd, offset, len(view))
        done = fileio.pwrite_all(self.fd, view, offset)
        with self._count_lock:
            self.bytes_written += done

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or offset + length > self.size:
            raise ValueError(f"write [{offset}, {offset + length}) outside output of {self.size} bytes")

    def write_at(self, offset: int, view: memoryview) -> None:
        """Write all of ``view`` at ``offset`` (no zero skipping: the caller chose the runs)."""
        self._check(offset, len(view))
        try:
            self._pwrite(offset, view)
        except OSError as err:
            raise describe_os_error(self.target, err, f"write at byte {offset}") from err

    def copy_at(self, src_fd: int, src_offset: int, offset: int, length: int) -> bool:
        """Copy ``length`` bytes of the file ``src_fd`` at ``src_offset`` to ``offset``, in the kernel.

        ``copy_file_range`` moves the bytes without passing them through user space (and may share
        blocks on filesystems that can). Returns ``False``, having written nothing, where the system
        or the pair of filesystems cannot (then the caller writes the bytes itself).
        """
        self._check(offset, length)
        if not self._can_copy:
            return False
        done = 0
        try:
            while done < length:
                n = os.copy_file_range(src_fd, self.fd, length - done, src_offset + done, offset + done)
                if n <= 0:
                    if done == 0:  # nothing copied (e.g. a file the kernel sees as empty): write instead
                        self._can_copy = False
                        return False
                    raise OSError(errno.EIO, "copy_file_range returned no progress")
                done += n
        except OSError as err:
            if done == 0 and err.errno in _NO_COPY:
                self._can_copy = False
                return False
            raise describe_os_error(self.target, err, f"write at byte {offset + done}") from err
        finally:
            with self._count_lock:
                self.bytes_written += done
        return True

    def data(self, offset: int, view: memoryview) -> None:
        """Write the non-zero granules of ``view``; all-zero granules stay holes."""
        self._check(offset, len(view))
        try:
            for start, end in nonzero_runs(view, self.granularity):
                self._pwrite(offset + start, view[start:end])
        except OSError as err:
            raise describe_os_error(self.target, err, f"write at byte {offset}") from err
        self._pending_bytes += len(view)
        if self.writeback_every and self._pending_bytes >= self.writeback_every:
            self._start_writeback(offset + len(view))

    def _start_writeback(self, end: int) -> None:
        """Start (not wait for) writeback of ``[_pending_from, end)``.

        On Linux ``POSIX_FADV_DONTNEED`` first starts asynchronous writeback of the range's dirty
        pages and then drops its clean ones: the disk works while we keep reading, and a large
        conversion does not evict the rest of the page cache. Python has no ``sync_file_range``;
        this is the portable-enough equivalent. Elsewhere it is skipped.
        """
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None and end > self._pending_from:
            with contextlib.suppress(OSError):
                advise(self.fd, self._pending_from, end - self._pending_from, os.POSIX_FADV_DONTNEED)
        self._pending_from = end
        self._pending_bytes = 0

    def zeros(self, offset: int, length: int) -> None:
        """Nothing to do: the file was created at full size, so the range is already a hole."""

    def finish(self) -> None:
        """Move the temporary file onto the target (atomically); with ``sync``, durably."""
        try:
            try:
                if self.sync:
                    os.fsync(self.fd)
            finally:
                os.close(self.fd)
                self.fd = -1
            self._install()
        except OSError as err:
            self.abort()
            raise describe_os_error(self.target, err, "finish the output") from err
        except BaseException:
            self.abort()
            raise
        _LIVE_TEMPORARIES.discard(self.temp_path)
        self.temp_path = ""
        if self.sync:
            _sync_folder(os.path.dirname(os.path.abspath(self.target)))

    def _install(self) -> None:
        if self.force:
            os.replace(self.temp_path, self.target)
            return
        # No clobbering, even if the target appeared while we were writing: a hard link fails
        # with EEXIST atomically. Where links are unsupported, rename (which on Windows refuses
        # an existing target anyway) after one more check.
        try:
            os.link(self.temp_path, self.target)
        except FileExistsError:
            raise OutputError(f"{self.target}: {_APPEARED}") from None
        except OSError as err:
            if err.errno not in _NO_HARDLINK:
                raise
            if os.path.lexists(self.target):
                raise OutputError(f"{self.target}: {_APPEARED}") from None
            os.rename(self.temp_path, self.target)
            return
        os.unlink(self.temp_path)

    def __del__(self) -> None:
        # A sink dropped unfinished (e.g. Ctrl-C as the constructor returned, before the caller
        # held it) still removes its temporary file.
        if getattr(self, "temp_path", ""):
            self.abort()

    def abort(self) -> None:
        """Close and delete the temporary file; safe to call more than once."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.temp_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.temp_path)
            _LIVE_TEMPORARIES.discard(self.temp_path)
            self.temp_path = ""


def _sync_folder(folder: str) -> None:
    """Make the rename durable (POSIX); a folder cannot be opened this way on Windows."""
    if sys.platform == "win32":
        return
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
