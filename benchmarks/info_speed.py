"""Time ``vhdtool info --json`` on a 64 TiB sparse VHDX (the format's maximum size).

Creates the image with qemu-img in a temporary directory (qemu's default block size, and with
``--block-size`` another one), runs the real command line five times and prints the median wall
time. The goal is well under a second: the BAT must be scanned at C speed, never entry by entry.

    python benchmarks/info_speed.py [--block-size 1M] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-size", default=None, help="qemu-img -o block_size= (default: qemu's choice)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = os.path.join(tmp, "sparse-64t.vhdx")
        create = ["qemu-img", "create", "-q", "-f", "vhdx"]
        if args.block_size:
            create += ["-o", f"block_size={args.block_size}"]
        subprocess.run([*create, image, "64T"], check=True)
        command = [sys.executable, "-m", "vhdtool", "info", "--json", image]
        times = []
        info = {}
        for _ in range(args.runs):
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - start)
            info = json.loads(proc.stdout)
        print(f"image: 64 TiB VHDX, block size {info['block_size']} bytes, "
              f"{info['vhdx']['bat_entries']} BAT entries, file {os.path.getsize(image)} bytes")
        print(f"vhdtool info --json: median {statistics.median(times):.3f} s over {args.runs} runs "
              f"(min {min(times):.3f} s, max {max(times):.3f} s)")


if __name__ == "__main__":
    main()
