"""The page-blob sink: non-zero pages of the stream become Put Page requests, sent in parallel.

The pump calls :meth:`PageBlobSink.data` in offset order with a borrowed buffer. The sink finds the
512-byte pages that hold a non-zero byte, drops those the blob already holds (resume), copies the
rest into request bodies of at most 4 MiB (coalescing runs that touch, even across calls), and
hands each body to a thread pool. A semaphore bounds the bodies alive at once, so memory is
``window × max_put`` bytes (plus the pump's one buffer) whatever the disk size: when the window is
full the pump waits, which is the backpressure that keeps the read loop from racing ahead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from vhdtool.azure.pages import MAX_PUT_PAGE, PAGE_SIZE, RangeSet, RunList, page_runs
from vhdtool.errors import TransferError
from vhdtool.stream.progress import NO_PROGRESS, Progress

Put = Callable[[int, bytes], None]
# Sees every byte of the stream in order: ``bytes`` (a run of data; shared, never modified) or an
# ``int`` (that many zero bytes). Lets a hasher reuse the copies made for the requests.
Tap = Callable[[int, "bytes | int"], None]
MANY_RUNS = 16  # above this many runs in one piece, the tap gets one copy of the whole piece


class PageBlobSink:
    """A :class:`~vhdtool.stream.pump.Sink` writing the stream's non-zero pages with ``put(offset, body)``.

    ``put`` must raise on failure (after its own retries); the first failure stops the upload: no
    new request starts, queued ones are cancelled, and :meth:`data` / :meth:`finish` re-raise it.
    """

    def __init__(self, put: Put, *, threads: int, window: int, present: RangeSet | None = None,
                 max_put: int = MAX_PUT_PAGE, progress: Progress = NO_PROGRESS,
                 abort: threading.Event | None = None, tap: Tap | None = None) -> None:
        if threads < 1 or window < threads:
            raise ValueError("need threads >= 1 and window >= threads")
        if max_put % PAGE_SIZE:
            raise ValueError("max_put must be a multiple of the page size")
        self._put = put
        self._present = present or RangeSet()
        self._max_put = max_put
        self._progress = progress
        self._tap = tap
        self._abort = abort or threading.Event()
        self._slots = threading.BoundedSemaphore(window)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vhdtool-put")
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._pending_offset = 0
        self._pending: list[bytes] = []  # copies of the pieces of the next body, in order
        self._pending_length = 0
        self.data_runs = RunList()  # every non-zero page run, sent or already present: for --verify
        self.bytes_sent = 0
        self.bytes_skipped = 0
        self.puts = 0

    # -- the Sink protocol ------------------------------------------------------------------------

    def data(self, offset: int, view: memoryview) -> None:
        self._raise_if_failed()
        end = offset + len(view)
        runs = page_runs(offset, view)
        tap = self._tap
        per_run = tap is not None and len(runs) <= MANY_RUNS
        if tap is not None and not per_run:
            tap(offset, bytes(view))
        position = offset  # everything before it is sent, queued or skipped
        tapped = offset  # everything before it went to the tap
        for start, stop in runs:
            self.data_runs.add(start, stop)
            run: bytes | memoryview = view[start - offset:stop - offset]
            if per_run and tap is not None:
                if start > tapped:
                    tap(tapped, start - tapped)
                run = bytes(run)  # one copy, shared by the tap and the request body
                tap(start, run)
                tapped = stop
            for a, b in self._present.missing(start, stop):
                self._skip(a - position)
                self._append(a, run[a - start:b - start])
                position = b
            self._skip(stop - position)  # the tail of the run the blob already holds
            position = stop
        if per_run and tap is not None and end > tapped:
            tap(tapped, end - tapped)
        self._skip(end - position)

    def zeros(self, offset: int, length: int) -> None:
        self._raise_if_failed()
        self._flush()
        if self._tap is not None:
            self._tap(offset, length)
        self._skip(length)

    def finish(self) -> None:
        """Send the last body and wait for every request; raise the first failure."""
        try:
            self._flush()
            self._executor.shutdown(wait=True)
        except BaseException:
            self.abort()
            raise
        self._raise_if_failed()

    # -- control ----------------------------------------------------------------------------------

    def abort(self) -> None:
        """Stop: cancel queued requests (those on the wire finish or time out) and wake retry sleeps."""
        self._abort.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- internals --------------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _skip(self, n: int) -> None:
        if n > 0:
            with self._lock:
                self.bytes_skipped += n
            self._progress.skipped(n)

    def _append(self, offset: int, piece: bytes | memoryview) -> None:
        """Add ``piece`` (at ``offset``) to the body being built, sending full or non-touching bodies."""
        if self._pending and offset != self._pending_offset + self._pending_length:
            self._flush()
        while len(piece):
            if not self._pending:
                self._pending_offset = offset
            room = self._max_put - self._pending_length
            # The pump's buffer is borrowed: copy views; a whole ``bytes`` piece is kept as it is.
            part = piece if isinstance(piece, bytes) and len(piece) <= room else bytes(piece[:room])
            self._pending.append(part)
            self._pending_length += len(part)
            offset += len(part)
            piece = piece[len(part):]
            if self._pending_length == self._max_put:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        parts, offset = self._pending, self._pending_offset
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pending = []
        self._pending_length = 0
        # Blocks while ``window`` bodies are alive: this is the memory bound.
        while not self._slots.acquire(timeout=0.5):
            self._raise_if_failed()
        try:
            self._raise_if_failed()
            future = self._executor.submit(self._send, offset, body)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._done)

    def _send(self, offset: int, body: bytes) -> None:
        if self._abort.is_set() or self._error is not None:
            raise TransferError("upload stopped")
        self._put(offset, body)
        with self._lock:
            self.bytes_sent += len(body)
            self.puts += 1
        self._progress.data(len(body))

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        if future.cancelled():
            return
        err = future.exception()
        if err is not None:
            with self._lock:
                if self._error is None:
                    self._error = err
            self._abort.set()
