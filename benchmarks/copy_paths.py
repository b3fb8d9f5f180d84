#!/usr/bin/env python3
"""How the convert copy loop should take stored runs on this machine: read into a buffer, or map.

Builds (or reuses) dynamic VHDXs with the same data in runs of two sizes (default: 1 GiB of random
data in a 4 GiB disk, in 1 MiB and in 8 MiB pieces, made by qemu-img from a sparse raw file, as
``convert_bench.py`` makes them), then converts each in this process, alternating the variants
round by round, each into a fresh output after an untimed ``sync``:

- ``pread``: what ``vhdtool convert`` does where the kernel cannot copy file to file (ext4, tmpfs):
  every stored run read into the thread's buffer, scanned, and its non-zero blocks written;
- ``map>=N``: stored runs of N MiB or more mapped, scanned in place and written from the mapping
  (what vhdtool does on XFS or Btrfs, there with ``copy_file_range``; forced here, with ``pwrite``,
  by replacing two internal methods of the copy loop for the run).

Prints the median and first-quartile wall and CPU seconds of each. Usage:

    python benchmarks/copy_paths.py [--dir DIR] [--rounds 13] [--reuse]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from convert_bench import build_input, size_arg  # noqa: E402

from vhdtool.formats.open import open_image  # noqa: E402
from vhdtool.jobs.convert import convert  # noqa: E402
from vhdtool.stream import filecopy  # noqa: E402
from vhdtool.stream.fixed_file import FixedFileSink  # noqa: E402

MiB = 1 << 20


@contextmanager
def mapping_runs_of(at_least: int | None) -> Iterator[None]:
    """Map stored runs of ``at_least`` bytes or more and write from the mapping (None: as shipped)."""
    saved = (filecopy._Copier._kernel_copies, FixedFileSink.copy_at, filecopy.MAP_AT_LEAST)
    if at_least is not None:
        filecopy._Copier._kernel_copies = lambda self, fd: self.writer is not None  # type: ignore[method-assign]
        FixedFileSink.copy_at = lambda self, *args: False  # type: ignore[method-assign]
        filecopy.MAP_AT_LEAST = at_least
    try:
        yield
    finally:
        filecopy._Copier._kernel_copies, FixedFileSink.copy_at, filecopy.MAP_AT_LEAST = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size_arg, default=4 << 30)
    parser.add_argument("--data", type=size_arg, default=1 << 30)
    parser.add_argument("--rounds", type=int, default=13)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="reuse DIR/runs-*/input.vhdx from an earlier run")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="vhdtool-copy-paths-"))
    variants: dict[str, int | None] = {"pread": None, "map>=1M": MiB, "map>=2M": 2 * MiB, "map>=4M": 4 * MiB,
                                       "map>=8M": 8 * MiB}
    for piece in (MiB, 8 * MiB):
        work = folder / f"runs-{piece // MiB}M"
        work.mkdir(parents=True, exist_ok=True)
        source = work / "input.vhdx"
        if not (args.reuse and source.exists()):
            source = build_input(work, args.size, args.data, piece, None, 1)
        with open(source, "rb") as f:  # warm the page cache
            while f.read(16 * MiB):
                pass
        out = work / "out.vhd"
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
            for name in names:
                out.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                with mapping_runs_of(variants[name]), open_image(source) as disk:
                    cpu, wall = time.process_time(), time.perf_counter()
                    convert(disk, out)
                    times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
        out.unlink(missing_ok=True)
        print(f"{args.data / (1 << 30):.1f} GiB of data in {piece // MiB} MiB pieces, {args.rounds} rounds:")
        for name, values in times.items():
            walls = sorted(v[0] for v in values)
            cpus = sorted(v[1] for v in values)
            print(f"  {name:8s} wall median {statistics.median(walls):.3f} q1 {walls[len(walls) // 4]:.3f} s"
                  f"   cpu median {statistics.median(cpus):.3f} q1 {cpus[len(cpus) // 4]:.3f} s")
    print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
