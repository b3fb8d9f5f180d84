"""Run every library entry point on one (possibly hostile) image and classify what happened.

The contract under test (issue 7): ``open_image``, ``extents``, ``info``, random reads, ``inspect_disk``,
``checks.evaluate`` and ``convert`` either succeed or raise :class:`vhdtool.errors.VhdtoolError`; nothing
else escapes, nothing runs past a time bound, reads agree with each other and bytes outside the allocated
extents are zero. A violation is returned as a :class:`Crash` with a short signature that identifies the
bug (exception type and the innermost vhdtool frame), so a campaign can count distinct bugs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from vhdtool.errors import VhdtoolError
from vhdtool.extents import Extent, MiB

# Whole-disk comparisons and conversions only for disks small enough to do them quickly.
FULL_READ_LIMIT = 64 * MiB
CONVERT_LIMIT = 64 * MiB


class CaseTimeout(BaseException):
    """Raised by the watchdog; a BaseException so that no ``except Exception`` in the code swallows it."""


@contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt the block with :class:`CaseTimeout` after ``seconds`` (main thread, POSIX timers)."""

    def fire(_signum: int, _frame: FrameType | None) -> None:
        raise CaseTimeout(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True)
class Crash:
    """One broken promise: which step, a stable signature and the traceback."""

    step: str
    signature: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.step}] {self.signature}\n{self.detail}"


@dataclass
class Outcome:
    """What one case did: the steps that ran and how each ended (``ok`` or the typed error's class)."""

    steps: dict[str, str] = field(default_factory=dict)
    crash: Crash | None = None

    @property
    def opened(self) -> bool:
        return self.steps.get("open") == "ok"


def signature_of(err: BaseException) -> str:
    """``Type at file:line (function)`` of the innermost frame in vhdtool (else the innermost frame)."""
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if f"{os.sep}vhdtool{os.sep}" in f.filename]
    frame = (ours or frames or [None])[-1]
    where = "?" if frame is None else f"{os.path.relpath(frame.filename)}:{frame.lineno} ({frame.name})"
    return f"{type(err).__name__} at {where}"


class _Step:
    """Runs named steps, recording typed errors and turning anything else into a crash."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    def run(self, name: str, func: Callable[[], object]) -> object | None:
        try:
            result = func()
        except VhdtoolError as err:
            self.outcome.steps[name] = type(err).__name__
            return None
        except CaseTimeout as err:
            self.outcome.crash = Crash(name, f"timeout in {name}", str(err) + "\n" + "".join(
                traceback.format_exception(err)[-6:]))
            raise
        except (Exception, RecursionError, MemoryError) as err:  # everything an image may provoke
            self.outcome.crash = Crash(name, signature_of(err), "".join(traceback.format_exception(err)))
            raise _Stop() from err
        self.outcome.steps[name] = "ok"
        return result


class _Stop(Exception):
    """Ends a case after its first crash."""


class ConsistencyError(AssertionError):
    """Two ways of reading the same bytes disagree, or bytes outside the allocated extents are not zero."""


def _check_cover(extents: list[Extent], size: int) -> None:
    position = 0
    for e in extents:
        if e.offset != position or e.length <= 0:
            raise ConsistencyError(f"extents do not tile the disk at byte {position}: {e}")
        position += e.length
    if position != size:
        raise ConsistencyError(f"extents end at byte {position}, the disk has {size}")


def _ranges(rng: random.Random, size: int, count: int) -> list[tuple[int, int]]:
    out = []
    for _ in range(count):
        if size == 0:
            break
        start = rng.randrange(size)
        length = min(size - start, rng.choice([1, 511, 512, 4096, 65536, 1 << 20, rng.randrange(1, 3 * MiB)]))
        out.append((start, length))
    return out


def _read_checks(disk: object, extents: list[Extent], rng: random.Random, reads: int) -> None:
    """Random reads agree with a whole-disk read; unallocated bytes are zero."""
    from vhdtool.disk.base import VirtualDisk

    assert isinstance(disk, VirtualDisk)
    size = disk.virtual_size
    full: bytes | None = disk.read(0, size) if size <= FULL_READ_LIMIT else None
    for start, length in _ranges(rng, size, reads):
        buf = bytearray(length)
        disk.readinto(start, memoryview(buf))
        if full is not None and bytes(buf) != full[start:start + length]:
            raise ConsistencyError(f"read [{start}, {start + length}) differs from the same range of a full read")
    # Unallocated extents read as zeros (check a bounded sample of each).
    for e in extents:
        if not e.allocated:
            for start, length in ((e.offset, min(e.length, MiB)), (e.offset + max(0, e.length - 4096),
                                                                    min(e.length, 4096))):
                data = full[start:start + length] if full is not None else disk.read(start, length)
                if data.count(0) != len(data):
                    raise ConsistencyError(f"unallocated extent {e} holds non-zero bytes near byte {start}")


def exercise(path: str | os.PathLike[str], *, work_dir: str | os.PathLike[str], seed: int = 0,
             reads: int = 6, inspect: bool = True, check: bool = True, convert: bool = True,
             time_limit: float = 10.0, parent: str | None = None) -> Outcome:
    """Run the entry points on ``path``; the returned outcome has ``crash`` set on a broken promise."""
    from vhdtool.formats.open import open_image

    outcome = Outcome()
    step = _Step(outcome)
    rng = random.Random(seed)
    try:
        with watchdog(time_limit):
            disk = step.run("open", lambda: open_image(path, parent=parent))
            if disk is None:
                return outcome
            from vhdtool.disk.base import VirtualDisk

            assert isinstance(disk, VirtualDisk)
            try:
                extents = step.run("extents", disk.extents)
                if isinstance(extents, list):
                    step.run("extents-cover", lambda: _check_cover(extents, disk.virtual_size))
                step.run("info", lambda: json.dumps(disk.info()))
                if isinstance(extents, list):
                    step.run("reads", lambda: _read_checks(disk, extents, rng, reads))
                report = None
                if inspect:
                    from vhdtool.inspect.report import inspect_disk

                    report = step.run("inspect", lambda: inspect_disk(disk))
                if check:
                    from vhdtool.readiness.rules import evaluate, facts_from_disk

                    step.run("check", lambda: evaluate(facts_from_disk(disk, report)))
                if convert and isinstance(extents, list) and sum(e.length for e in extents if e.allocated) \
                        <= CONVERT_LIMIT and disk.virtual_size <= 1 << 40:
                    out = os.path.join(os.fspath(work_dir), f"fuzz-out-{os.getpid()}.vhd")
                    try:
                        step.run("convert", lambda: _convert_and_check(disk, out))
                    finally:
                        if os.path.exists(out):
                            os.unlink(out)
            finally:
                step.run("close", disk.close)
    except _Stop:
        pass
    except CaseTimeout as err:
        if outcome.crash is None:
            outcome.crash = Crash("between steps", "timeout", str(err))
    return outcome


def _convert_and_check(disk: object, out: str) -> None:
    from vhdtool.disk.base import VirtualDisk
    from vhdtool.jobs.convert import convert

    assert isinstance(disk, VirtualDisk)
    result = convert(disk, out, force=True)
    if os.path.getsize(out) != result.file_size:
        raise ConsistencyError(f"convert wrote {os.path.getsize(out)} bytes, said {result.file_size}")
