"""The upload soak under faults, for as long as you like (the normal suite runs a short one).

Usage: ``python benchmarks/upload_soak.py [--minutes 5] [--images 4] [--rounds 1000] [--fault-rate 0.08]
[--seed 1] [--threads 8]``

Each round makes ``--images`` images (raw, dynamic VHDX and dynamic VHD made by qemu-img; 8 to 48 MiB,
sizes not whole MiB, 10-35 % scattered random data) and uploads them with the CLI, each run a real
subprocess, through the fault-injecting proxy of ``tests/support/azurite.py`` at ``--fault-rate``. A run is
killed at a random request (SIGKILL, sometimes SIGINT) with probability ``--kill-chance``, up to
``--max-kills`` times per image, and run again with ``--resume`` until one completes. About a third
of the images go over a blob of the previous round with ``--overwrite`` (half of those the same size,
so its ranges are cleared; the others replace it). Every blob is then checked as in
``tests/support/soak.py``: byte-identical to the fixed VHD ``vhdtool convert`` writes (footer
id and timestamp as recorded on the blob), MD5 reported and stored, page ranges exactly the non-zero
pages, no account key or SAS signature in any output. Azurite is restarted every
``--restart-every`` rounds (it frees deleted blobs' memory only lazily).

New rounds start until ``--minutes`` have passed or ``--rounds`` are done; prints the figures as a
table, and every problem found. Exit status 1 if there was any. Needs qemu-img and Azurite
(scripts/setup.sh). Work files go to benchmarks/work/soak/.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MiB = 1024 * 1024


def random_size(rng: random.Random, kind: str) -> int:
    """8 to 48 MiB, never a whole MiB; a multiple of 512 for qemu-img's formats."""
    size = rng.randint(8 * MiB, 48 * MiB)
    if kind != "raw":
        size = size // 512 * 512
    return size if size % MiB else size + 512


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4, help="images per round")
    parser.add_argument("--rounds", type=int, default=1000, help="at most this many rounds")
    parser.add_argument("--fault-rate", type=float, default=0.08, help="share of requests given a fault")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=5.0, help="start no round after this")
    parser.add_argument("--threads", type=int, default=8, help="vhdtool upload --threads")
    parser.add_argument("--kill-chance", type=float, default=0.5, help="chance that a run is killed")
    parser.add_argument("--max-kills", type=int, default=3, help="at most this many kills per image")
    parser.add_argument("--restart-every", type=int, default=5, help="restart Azurite after this many rounds")
    args = parser.parse_args()

    from support.azurite import RecordingProxy, running_azurite
    from support.soak import Soak, SoakImage, Totals

    work = ROOT / "benchmarks" / "work" / "soak"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.minutes * 60
    totals = Totals()
    problems: list[str] = []
    round_ = 0
    print(f"upload soak: {args.images} images a round, fault rate {args.fault_rate}, seed {args.seed}, "
          f"threads {args.threads}, up to {args.minutes} minutes")
    while round_ < args.rounds and time.monotonic() < deadline:
        with running_azurite() as azurite:
            proxy = RecordingProxy(azurite.port)
            soak = Soak(azurite, proxy, work, seed=rng.randrange(2**32), fault_rate=args.fault_rate,
                        threads=args.threads)
            previous: list[SoakImage] = []
            try:
                for _ in range(args.restart_every):
                    if round_ >= args.rounds or time.monotonic() >= deadline:
                        break
                    current: list[SoakImage] = []
                    for i in range(args.images):
                        kind = ("raw", "vhdx", "vhd")[(round_ * args.images + i) % 3]
                        over = previous[i] if i < len(previous) and rng.random() < 1 / 3 else None
                        size = random_size(rng, kind)
                        if over is not None and rng.random() < 0.5:  # the same fixed size: cleared, not replaced
                            size = over.virtual_size - rng.randrange(1, MiB // 512) * 512
                        data = int(size * rng.uniform(0.10, 0.35))
                        image = soak.make_image(kind, size, data, auth=rng.choice(["key", "sas"]),
                                                verify=rng.choice(["pages", "full"]), over=over)
                        signals: list[str] = []
                        while len(signals) < args.max_kills and rng.random() < args.kill_chance:
                            signals.append("SIGINT" if rng.random() < 0.15 else "SIGKILL")
                        soak.upload(image, signals)
                        current.append(image)
                    for image in previous:
                        soak.drop_files(image)
                    previous = current
                    round_ += 1
                    so_far = soak.totals()
                    print(f"round {round_}: {so_far.images} images, {so_far.runs} runs, "
                          f"{sum(so_far.faults.values())} faults, {so_far.problems} problems "
                          f"(Azurite session {so_far.seconds:.0f} s)", flush=True)
            finally:
                soak.close()
                proxy.close()
                for image in previous:
                    soak.drop_files(image)
            totals.merge(soak.totals())
            problems += soak.problems
    totals.problems = len(problems)
    print()
    print(totals.table())
    for problem in problems[:50]:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
