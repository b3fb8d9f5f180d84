#!/usr/bin/env python3
"""Cost follows the data, not the virtual size: the same data in a small and a large virtual disk.

Builds two dynamic VHDX files with qemu-img, by default 1 GiB and 32 GiB virtual, each holding the
same 128 MiB of random data in 1 MiB pieces spread over the whole disk, starts Azurite, and times, as
real CLI processes in alternation (the order rotates every round):

- ``vhdtool convert X.vhdx OUT.vhd``
- ``vhdtool upload X.vhdx CONTAINER/BLOB`` (a fresh blob each run)
- ``vhdtool prepare --os X.vhdx -o DIR --upload CONTAINER`` (convert, upload, manifest)
- ``vhdtool verify MANIFEST --dest CONTAINER`` (the blobs of that prepare, read back) and
  ``vhdtool verify MANIFEST`` (the local fixed VHDs)

It prints each run, the medians, the ratio time(large)/time(small) per command (target <= 1.3) and
each command's peak RSS (target < 150 MiB). Needs qemu-img and Azurite (scripts/setup.sh). Usage:

    python benchmarks/scale_bench.py [--small 1G] [--large 32G] [--data 128M] [--runs 5] [--dir DIR]
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
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "tests")]
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MiB = 1 << 20
RATIO_TARGET = 1.3
PEAK_TARGET_MIB = 150


def size_arg(text: str) -> int:
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def build(folder: Path, size: int, data: int, piece: int, seed: int) -> Path:
    """``data`` random bytes in ``piece``-sized pieces at evenly spread random slots, as a VHDX."""
    raw = folder / f"in-{size >> 30}g.raw"
    vhdx = raw.with_suffix(".vhdx")
    if vhdx.exists():
        return vhdx
    rng = random.Random(seed)
    count = data // piece
    stride = size // count  # one piece in each stride of the disk: spread over all of it
    with open(raw, "wb") as f:
        f.truncate(size)
        for i in range(count):
            slot = i * stride + rng.randrange(0, (stride - piece) // piece + 1) * piece
            os.pwrite(f.fileno(), random.Random(seed * 1000 + i).randbytes(piece), slot)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)], check=True)
    raw.unlink()
    return vhdx


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, the child's peak RSS (VmHWM, its own; not ru_maxrss, which Linux carries over
    from the forking parent) and its stdout."""
    probe = ("import re, runpy, sys\n"
             "sys.argv = ['vhdtool'] + sys.argv[1:]\n"
             "try:\n"
             "    runpy.run_module('vhdtool', run_name='__main__')\n"
             "finally:\n"
             "    status = open('/proc/self/status').read()\n"
             "    print('VMHWM', re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1), file=sys.stderr)\n")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"vhdtool {' '.join(cmd[:2])} ... failed ({proc.returncode}): {proc.stderr.strip()}")
    peak = next(int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("VMHWM"))
    return seconds, peak * 1024, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=size_arg, default=1 << 30)
    parser.add_argument("--large", type=size_arg, default=32 << 30)
    parser.add_argument("--data", type=size_arg, default=128 * MiB)
    parser.add_argument("--piece", type=size_arg, default=MiB)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--commands", default="convert,upload,prepare,verify-dest,verify-local")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    from azure.storage.blob import BlobServiceClient
    from support.azurite import running_azurite

    folder = args.dir or Path(tempfile.mkdtemp(prefix="vhdtool-scale-"))
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"small": args.small, "large": args.large}
    wanted = args.commands.split(",")
    try:
        print(f"building VHDX files of {args.small / (1 << 30):g} and {args.large / (1 << 30):g} GiB with "
              f"{args.data >> 20} MiB of data each in {folder} ...", flush=True)
        images = {name: build(folder, size, args.data, args.piece, 5) for name, size in sizes.items()}
        for image in images.values():
            with open(image, "rb") as f:  # warm the page cache alike
                while f.read(16 * MiB):
                    pass
        times: dict[tuple[str, str], list[float]] = {}
        peaks: dict[tuple[str, str], int] = {}
        with running_azurite() as azurite:
            conn = azurite.connection_string()
            BlobServiceClient.from_connection_string(conn).create_container("scale")
            env = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_")}
            env.update(PYTHONPATH=str(REPO), AZURE_STORAGE_CONNECTION_STRING=conn,
                       PYTHONPYCACHEPREFIX=str(folder / "pycache"))
            env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte-compiled
            run_child(["info", str(images["small"])], env)  # untimed: fills the bytecode cache
            for run in range(args.runs):
                order = list(sizes) if run % 2 == 0 else list(reversed(sizes))
                for name in order:
                    image = images[name]
                    out = folder / f"out-{name}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    tag = uuid.uuid4().hex[:8]
                    steps = {
                        "convert": ["convert", str(image), str(out / "c.vhd"), "--quiet"],
                        "upload": ["upload", str(image), f"scale/u-{name}-{tag}.vhd", "--no-progress"],
                        "prepare": ["prepare", "--name", f"p{tag}", "--os", str(image), "-o", str(out / "set"),
                                    "--upload", "scale", "--force", "-q"],
                        "verify-dest": ["verify", "MANIFEST", "--dest", "scale"],
                        "verify-local": ["verify", "MANIFEST"],
                    }
                    manifest = ""
                    for step in (s for s in steps if s in wanted or (s == "prepare" and
                                                                      any(w.startswith("verify") for w in wanted))):
                        cmd = [manifest if part == "MANIFEST" else part for part in steps[step]]
                        os.sync()  # untimed: the last command's page cache writeback does not land on this one
                        seconds, peak, _ = run_child(cmd, env)
                        if step == "prepare":
                            manifest = str(next((out / "set").glob("*.manifest.json")))
                        key = (step, name)
                        times.setdefault(key, []).append(seconds)
                        peaks[key] = max(peaks.get(key, 0), peak)
                        print(f"  run {run + 1} {step:13s} {name:5s} {seconds:7.2f} s  peak RSS "
                              f"{peak / MiB:6.1f} MiB  load {os.getloadavg()[0]:.1f}", flush=True)
                    shutil.rmtree(out, ignore_errors=True)
        print()
        print(f"{'command':14s}{'small s':>9s}{'large s':>9s}{'ratio':>8s}{'peak MiB':>10s}")
        result: dict[str, dict[str, float]] = {}
        for step in dict.fromkeys(k[0] for k in times):
            small = statistics.median(times[(step, "small")])
            large = statistics.median(times[(step, "large")])
            peak = max(peaks[(step, "small")], peaks[(step, "large")]) / MiB
            ratio = large / small
            flag = "ok" if ratio <= RATIO_TARGET and peak < PEAK_TARGET_MIB else "MISSED"
            print(f"{step:14s}{small:9.2f}{large:9.2f}{ratio:8.2f}{peak:10.1f}  {flag}")
            result[step] = {"small": small, "large": large, "ratio": ratio, "peak_mib": peak}
        print(f"targets: ratio <= {RATIO_TARGET}, peak RSS < {PEAK_TARGET_MIB} MiB; cpus {os.cpu_count()}, "
              f"python {sys.version.split()[0]}")
        if args.json:
            print(json.dumps({"medians": result, "runs": {f"{k[0]}/{k[1]}": v for k, v in times.items()}}))
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
