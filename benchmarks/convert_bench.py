#!/usr/bin/env python3
"""Benchmark ``vhdtool convert`` against ``qemu-img convert -O vpc -o subformat=fixed,force_size=on``.

Builds a dynamic VHDX (default 4 GiB virtual, 1 GiB of random data in scattered 1 MiB pieces) with
qemu-img, then runs the contestants in alternation (rotating who goes first) on the same input, each
into a fresh output in the same folder after an untimed ``sync``:

- ``vhdtool convert`` and ``qemu-img convert`` (neither waits for the disk: qemu-img's default cache
  mode never flushes, vhdtool does not fsync without ``--sync``); target ratio <= 0.7;
- ``vhdtool convert --sync`` and ``qemu-img convert && sync OUT`` (both durable on return); target
  ratio <= 1.0.

Prints per-run times, medians, the ratios, each one's peak RSS (the child's rusage) and a ``qemu-img
compare`` of the outputs. Warm page cache for all (the input is read once before timing). Usage:

    python benchmarks/convert_bench.py [--size 4G] [--data 1G] [--piece 1M] [--runs 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_arg(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def build_input(folder: Path, size: int, data: int, piece: int, block_size: str | None, seed: int) -> Path:
    """A sparse raw file with ``data`` random bytes in ``piece``-sized pieces, then qemu-img -> VHDX."""
    raw = folder / "input.raw"
    vhdx = folder / "input.vhdx"
    slots = size // piece
    count = data // piece
    rng = random.Random(seed)
    chosen = sorted(rng.sample(range(slots), count))
    with open(raw, "wb") as f:
        f.truncate(size)
        for slot in chosen:
            os.pwrite(f.fileno(), rng.randbytes(piece), slot * piece)
    opts = ["-o", f"block_size={block_size}"] if block_size else []
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", *opts, str(raw), str(vhdx)], check=True)
    raw.unlink()
    return vhdx


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return seconds, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=size_arg, default=4 << 30)
    parser.add_argument("--data", type=size_arg, default=1 << 30)
    parser.add_argument("--piece", type=size_arg, default=1 << 20, help="size of each scattered data piece")
    parser.add_argument("--block-size", default=None, help="VHDX block size for qemu-img (default: its own)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("--reuse", action="store_true", help="reuse DIR/input.vhdx from an earlier run")
    parser.add_argument("--qemu-writeback", action="store_true",
                        help="also run qemu-img with -t writeback (it flushes before it exits)")
    args = parser.parse_args()

    folder = args.dir or Path(tempfile.mkdtemp(prefix="vhdtool-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONPYCACHEPREFIX=str(folder / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-compiled (a first untimed run fills the cache)
    try:
        print(f"building {args.size / (1 << 30):.1f} GiB dynamic VHDX with {args.data / (1 << 30):.1f} GiB "
              f"of data in {args.piece >> 10} KiB pieces in {folder} ...", flush=True)
        start = time.perf_counter()
        source = folder / "input.vhdx"
        if args.reuse and source.exists():
            print("  reusing the existing input.vhdx", flush=True)
        else:
            source = build_input(folder, args.size, args.data, args.piece, args.block_size, args.seed)
        info = json.loads(subprocess.run([sys.executable, "-m", "vhdtool", "info", "--json", str(source)],
                                         env=env, capture_output=True, check=True, text=True).stdout)
        print(f"  built in {time.perf_counter() - start:.1f} s: file {source.stat().st_size:,} bytes, "
              f"block size {info['block_size']:,}, allocated {info['allocated_bytes']:,} bytes", flush=True)
        with open(source, "rb") as f:  # warm the page cache for both contestants alike
            while f.read(16 << 20):
                pass
        out_v, out_q = folder / "vhdtool.vhd", folder / "qemu.vhd"
        qemu = ["qemu-img", "convert", "-f", "vhdx", "-O", "vpc", "-o", "subformat=fixed,force_size=on"]
        vhdtool = [sys.executable, "-m", "vhdtool", "convert", str(source), "-o", str(out_v), "--force", "--quiet"]
        commands = {
            "vhdtool": vhdtool,
            # qemu-img convert's default cache mode for the output is "unsafe": it never flushes.
            "qemu-img": [*qemu, str(source), str(out_q)],
            "vhdtool --sync": [*vhdtool, "--sync"],
            # Durable like --sync: sync(1) with a file argument fsyncs that file (not the whole system).
            "qemu-img && sync": ["sh", "-c", f"{' '.join(qemu)} {source} {out_q} && sync {out_q}"],
        }
        if args.qemu_writeback:
            commands["qemu-img -t writeback"] = [*qemu, "-t", "writeback", str(source), str(out_q)]
        pairs = [("vhdtool", "qemu-img", 0.7), ("vhdtool --sync", "qemu-img && sync", 1.0)]
        for name in commands:  # untimed: fills the bytecode cache and the page cache for each
            out_v.unlink(missing_ok=True)
            out_q.unlink(missing_ok=True)
            subprocess.run(commands[name], env=env, check=True, capture_output=True)
        times: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, int] = {name: 0 for name in commands}
        for run in range(args.runs):
            names = list(commands)
            order = names[run % len(names):] + names[:run % len(names)]  # rotate who goes first
            for name in order:
                for out in (out_v, out_q):
                    out.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                seconds, peak = timed(commands[name], env)
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)
                print(f"  run {run + 1} {name:21s} {seconds:7.2f} s  peak RSS {peak / (1 << 20):6.1f} MiB  "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        # Same content? (qemu sizes vpc by CHS unless told to use current_size.)
        for name, out in (("vhdtool", out_v), ("qemu-img", out_q)):
            if not out.exists():
                subprocess.run(commands[name], env=env, check=True, capture_output=True)
        same = subprocess.run(["qemu-img", "compare", "--image-opts",
                               f"driver=vpc,force_size_calc=current_size,file.filename={out_v}",
                               f"driver=vpc,force_size_calc=current_size,file.filename={out_q}"],
                              capture_output=True, text=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratio = medians["vhdtool"] / medians["qemu-img"]
        for name in commands:
            print(f"median {name:21s} {medians[name]:7.2f} s  peak RSS {peaks[name] / (1 << 20):6.1f} MiB")
        for ours, theirs, target in pairs:
            value = medians[ours] / medians[theirs]
            print(f"ratio {ours} / {theirs}: {value:.2f} (target <= {target}) "
                  f"{'ok' if value <= target else 'MISSED'}")
        for name, out in (("vhdtool", out_v), ("qemu-img", out_q)):
            st = out.stat()
            print(f"output {name}: {st.st_size:,} bytes, disk usage {st.st_blocks * 512:,} bytes")
        print(f"qemu-img compare of the two outputs: {same.stdout.strip() or same.stderr.strip()}")
        qemu_version = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True).stdout
        print(f"cpus {os.cpu_count()}, python {sys.version.split()[0]}, {qemu_version.splitlines()[0]}")
        if args.json:
            print(json.dumps({"times": times, "medians": medians, "ratio": ratio,
                              "ratio_sync": medians["vhdtool --sync"] / medians["qemu-img && sync"],
                              "peak_rss": peaks}))
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
