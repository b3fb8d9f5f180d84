"""The one shape of progress: bytes of data moved and bytes of empty space that cost nothing.

Every long job (convert, hash, upload, download, copy, patch, verify, prepare) reports through a
:class:`Progress`, so one bar or one counter serves them all. Over a job, ``data`` + ``skipped``
add up to the size of what it walks (the fixed VHD, the blob, the output file): a bar reaches its
end, and it can show that empty space is free. Jobs report from their worker threads, so an
implementation must accept concurrent calls.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    """What a job reports to; every method takes increments and may be called from any thread."""

    def data(self, nbytes: int) -> None:
        """``nbytes`` more bytes of data read, written or sent."""
        ...

    def skipped(self, nbytes: int) -> None:
        """``nbytes`` more bytes that cost nothing: known to be empty, or already at the destination."""
        ...

    def stage(self, name: str, total: int) -> None:
        """The step ``name`` begins; at the end of the job ``data`` + ``skipped`` add up to ``total``.

        Counts go on across steps (they are not reset). A job calls it only when its total is
        something its caller cannot know beforehand (a patch's plan, a download's output length).
        """
        ...


class _NoProgress:
    """Reports to nobody: the default of every job."""

    def data(self, nbytes: int) -> None:
        pass

    def skipped(self, nbytes: int) -> None:
        pass

    def stage(self, name: str, total: int) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


class ProgressTally:
    """A :class:`Progress` that adds up what it is told (thread-safe): for scripts and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.data_bytes = 0
        self.skipped_bytes = 0
        self.stages: list[tuple[str, int]] = []  # (name, total) in the order they began

    def data(self, nbytes: int) -> None:
        with self._lock:
            self.data_bytes += nbytes

    def skipped(self, nbytes: int) -> None:
        with self._lock:
            self.skipped_bytes += nbytes

    def stage(self, name: str, total: int) -> None:
        with self._lock:
            self.stages.append((name, total))

    @property
    def done(self) -> int:
        """Data and skipped bytes together: what a bar counts."""
        with self._lock:
            return self.data_bytes + self.skipped_bytes


class WithoutStages:
    """Passes data and skipped bytes on to ``progress`` but drops stages: for a job run as one step
    of a larger job, which names its own steps and knows the whole total."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def data(self, nbytes: int) -> None:
        self._progress.data(nbytes)

    def skipped(self, nbytes: int) -> None:
        self._progress.skipped(nbytes)

    def stage(self, name: str, total: int) -> None:
        pass
