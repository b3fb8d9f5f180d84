"""Upload benchmark against a local Azurite: the SDK's page-blob upload, a minimal 4 MiB thread pool, vhdtool.

Usage: ``python benchmarks/upload_bench.py [--size-mib 1024] [--data-mib 256] [--repeat 3] [--threads 8]``

Makes a raw image of ``--size-mib`` with ``--data-mib`` of random data scattered in ``--piece-kib``
pieces at random aligned places,
turns it into a dynamic VHDX (qemu-img) and a fixed VHD (vhdtool convert), starts Azurite once,
and uploads, each run in a fresh subprocess so its peak memory (``ru_maxrss``) is its own:

  (a) ``BlobClient.upload_blob(fixed VHD, blob_type="PageBlob", validate_content=True)``
  (b) a minimal thread pool: every 4 MiB piece of the fixed VHD that is not all zeros, one Put Page
      with Content-MD5 each (the practical limit here: Azurite's CPU is the bottleneck)
  (c) ``vhdtool upload`` of the fixed VHD, and of the dynamic VHDX (converted on the fly); both
      compute the sparse digest (always), neither a whole-file MD5 (not asked for)
  (d) ``vhdtool upload --hash md5`` of the VHDX: the whole-file MD5 (every zero hashed) on top

Prints the median seconds, the ratio to (b) (target for (c) VHDX: <= 1.0), bytes sent against the
non-zero bytes, requests, peak memory, and when the first Put Page was answered (seconds from the
worker's start: what start-up costs before the transfer). The first upload of each method is downloaded and checked
(its bytes, and the sparse digest it reported, recomputed by the reference script). Needs qemu-img
and Azurite (scripts/setup.sh). Work files go to benchmarks/work/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MiB = 1024 * 1024


def make_images(work: Path, size_mib: int, data_mib: int, piece: int) -> dict[str, Path]:
    """A raw image with scattered data, and the same disk as dynamic VHDX and as fixed VHD."""
    import numpy as np

    from vhdtool import open_image
    from vhdtool.jobs.convert import convert

    raw = work / f"bench-{size_mib}-{data_mib}-{piece // 1024}k.raw"
    vhdx = raw.with_suffix(".vhdx")
    fixed = raw.with_suffix(".vhd")
    if not (raw.exists() and vhdx.exists() and fixed.exists()):
        rng = np.random.default_rng(2024)
        slots = size_mib * MiB // piece
        chosen = np.sort(rng.choice(slots, size=data_mib * MiB // piece, replace=False))
        with open(raw, "wb") as f:
            f.truncate(size_mib * MiB)
            for slot in chosen:
                f.seek(int(slot) * piece)
                f.write(rng.integers(1, 256, piece, dtype=np.uint8).tobytes())
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw), str(vhdx)], check=True)
        with open_image(raw) as disk:
            convert(disk, fixed, force=True)
    return {"raw": raw, "vhdx": vhdx, "fixed": fixed}


def nonzero_bytes(path: Path, granularity: int) -> int:
    """Bytes in ``granularity``-sized pieces of ``path`` that hold a non-zero byte."""
    from vhdtool.blockio.zeros import is_zero

    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            for i in range(0, len(chunk), granularity):
                piece = memoryview(chunk)[i:i + granularity]
                if not is_zero(piece):
                    count += len(piece)
    return count


# -- the workers, each run in its own process ---------------------------------------------------


def worker_sdk(conn: str, container: str, blob: str, image: str, threads: int) -> dict[str, Any]:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(conn, container, blob, max_page_size=4 * MiB)
    size = os.path.getsize(image)
    with open(image, "rb") as f:
        client.upload_blob(f, blob_type="PageBlob", length=size, overwrite=True, max_concurrency=threads,
                           validate_content=True)
    return {}


def worker_pool(conn: str, container: str, blob: str, image: str, threads: int) -> dict[str, Any]:
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(conn, container, blob, retry_total=0)
    size = os.path.getsize(image)
    client.create_page_blob(size)
    zero = bytes(4 * MiB)
    fd = os.open(image, os.O_RDONLY)
    sent = requests = 0

    def put(offset: int) -> int:
        data = os.pread(fd, min(4 * MiB, size - offset), offset)
        if data == zero[:len(data)]:
            return 0
        client.upload_page(data, offset, len(data), validate_content=True)
        FIRST_ANSWER.setdefault("at", time.monotonic())
        return len(data)

    with ThreadPoolExecutor(threads) as pool:
        # Bounded: submit in waves so memory stays at threads × 4 MiB × 2.
        offsets = list(range(0, size, 4 * MiB))
        for i in range(0, len(offsets), threads * 2):
            for n in pool.map(put, offsets[i:i + threads * 2]):
                sent += n
                requests += 1 if n else 0
    os.close(fd)
    return {"bytes_sent": sent, "requests": requests + 1}


def worker_vhdtool(conn: str, container: str, blob: str, image: str, threads: int,
                   hashes: tuple[str, ...] = ()) -> dict[str, Any]:
    from vhdtool import open_image
    from vhdtool.azure.storage import Destination
    from vhdtool.azure.upload import UploadOptions, upload

    class FirstAnswer:
        """Notes when the first Put Page was answered (its bytes are then reported as sent)."""

        def data(self, nbytes: int) -> None:
            FIRST_ANSWER.setdefault("at", time.monotonic())

        def skipped(self, nbytes: int) -> None:
            pass

        def stage(self, name: str, total: int) -> None:
            pass

    with open_image(image) as disk:
        dest = Destination(connection_string=conn, container=container, blob=blob)
        result = upload(disk, dest, UploadOptions(threads=threads, overwrite=True, hashes=hashes),
                        progress=FirstAnswer())
    return {"bytes_sent": result.bytes_sent, "requests": result.requests, "md5": result.md5,
            "sparse_sha256": result.sparse_sha256}


def worker_vhdtool_md5(conn: str, container: str, blob: str, image: str, threads: int) -> dict[str, Any]:
    return worker_vhdtool(conn, container, blob, image, threads, ("md5",))


# When the worker's first Put Page was answered (time.monotonic), for the split of its time.
FIRST_ANSWER: dict[str, float] = {}
WORKERS = {"sdk": worker_sdk, "pool": worker_pool, "vhdtool": worker_vhdtool, "vhdtool-md5": worker_vhdtool_md5}


def reference_sparse_digest(data: bytes) -> str:
    """The published reference script's sparse digest of ``data`` (docs/scripts/sparse_digest.py)."""
    import importlib.util
    import tempfile

    spec = importlib.util.spec_from_file_location("sparse_digest", ROOT / "docs" / "scripts" / "sparse_digest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with tempfile.NamedTemporaryFile(dir=ROOT / "benchmarks" / "work") as f:
        f.write(data)
        f.flush()
        return str(module.sparse_digest(f.name))


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: per address space, so not inherited over exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(method: str, conn: str, image: Path, threads: int) -> dict[str, Any]:
    """One upload in a fresh process; returns its seconds, peak RSS and what it reported."""
    container = "bench"
    blob = f"{method}-{uuid.uuid4().hex[:8]}.vhd"
    args = [sys.executable, __file__, "--worker", method, "--conn", conn, "--container", container,
            "--blob", blob, "--image", str(image), "--threads", str(threads)]
    # As installed: byte-compiled modules (a checkout with PYTHONDONTWRITEBYTECODE compiles on every start).
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(ROOT / "benchmarks" / "work" / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.monotonic()
    proc = subprocess.run(args, stdout=subprocess.PIPE, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed with exit code {proc.returncode}")
    facts: dict[str, Any] = json.loads(proc.stdout)
    facts.setdefault("seconds", time.monotonic() - started)
    facts["blob"] = blob
    return facts


def blob_digests(conn: str, blob: str) -> tuple[str, str, str]:
    """MD5 of the downloaded blob without its footer, of all of it, and its sparse digest."""
    from azure.storage.blob import BlobClient

    client = BlobClient.from_connection_string(conn, "bench", blob)
    data = client.download_blob(max_concurrency=4).readall()
    return hashlib.md5(data[:-512]).hexdigest(), hashlib.md5(data).hexdigest(), reference_sparse_digest(data)


def file_digests(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.md5(data[:-512]).hexdigest(), hashlib.md5(data).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--piece-kib", type=int, default=1024, help="size of each scattered data piece")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--methods", default="a,b,c,d", help="which of a, b, c, d to run (comma-separated)")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--conn")
    parser.add_argument("--container")
    parser.add_argument("--blob")
    parser.add_argument("--image")
    args = parser.parse_args()

    if args.worker:
        started = time.monotonic()
        facts = WORKERS[args.worker](args.conn, args.container, args.blob, args.image, args.threads)
        facts["seconds"] = time.monotonic() - started
        if "at" in FIRST_ANSWER:
            facts["first_answer"] = FIRST_ANSWER["at"] - started
        facts["peak_rss_mib"] = peak_rss_mib()
        print(json.dumps(facts))
        return

    from azure.storage.blob import BlobServiceClient
    from support.azurite import running_azurite

    work = ROOT / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    piece = args.piece_kib * 1024
    images = make_images(work, args.size_mib, args.data_mib, piece)
    fixed = images["fixed"]
    fixed_body_md5, fixed_md5 = file_digests(fixed)
    nonzero = nonzero_bytes(fixed, 512)
    print(f"image: {args.size_mib} MiB, {args.data_mib} MiB of data in {args.piece_kib} KiB pieces; "
          f"fixed VHD {fixed.stat().st_size} bytes, non-zero 512-byte pages {nonzero} bytes, "
          f"non-zero 4 MiB pieces {nonzero_bytes(fixed, 4 * MiB)} bytes; threads {args.threads}")

    cases = [("(a) sdk upload_blob", "sdk", fixed), ("(b) 4 MiB pool", "pool", fixed),
             ("(c) vhdtool fixed VHD", "vhdtool", fixed), ("(c) vhdtool VHDX", "vhdtool", images["vhdx"]),
             ("(d) vhdtool VHDX md5", "vhdtool-md5", images["vhdx"])]
    wanted = set(args.methods.split(","))
    cases = [case for case in cases if case[0][1] in wanted]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in cases}
    for round_ in range(args.repeat):
        # A fresh Azurite each round: it frees deleted blobs' memory only lazily, and its
        # in-memory store is capped (half the RAM).
        with running_azurite() as azurite:
            conn = azurite.connection_string()
            BlobServiceClient.from_connection_string(conn).create_container("bench")
            # Interleaved and rotated each round, so drift hits every method alike.
            for name, method, image in cases[round_ % len(cases):] + cases[:round_ % len(cases)]:
                facts = run_worker(method, conn, image, args.threads)
                if not results[name]:
                    # Same bytes as the fixed VHD; vhdtool's footer has its own id and time, so
                    # its digests are checked against the ones it reported instead.
                    body_md5, whole_md5, sparse = blob_digests(conn, facts["blob"])
                    expected_md5 = facts["md5"] if method.startswith("vhdtool") else fixed_md5
                    if body_md5 != fixed_body_md5 or (expected_md5 is not None and whole_md5 != expected_md5) \
                            or facts.get("sparse_sha256", sparse) != sparse:
                        raise SystemExit(f"{name}: the uploaded blob differs from the fixed VHD")
                results[name].append(facts)
                service = BlobServiceClient.from_connection_string(conn)
                service.get_blob_client("bench", facts["blob"]).delete_blob()

    pool_runs = results.get("(b) 4 MiB pool") or next(iter(results.values()))
    baseline = statistics.median(r["seconds"] for r in pool_runs)
    print(f"\n{'method':<24}{'median s':>10}{'vs (b)':>9}{'sent MiB':>11}{'vs non-zero':>13}"
          f"{'requests':>10}{'peak MiB':>10}{'1st answer s':>14}")
    for name, runs in results.items():
        median = statistics.median(r["seconds"] for r in runs)
        sent = runs[0].get("bytes_sent")
        sent_text = f"{sent / MiB:.1f}" if sent is not None else "?"
        over = f"{(sent / nonzero - 1) * 100:+.2f}%" if sent is not None else "?"
        requests = runs[0].get("requests", "?")
        peak = max(r["peak_rss_mib"] for r in runs)
        firsts = [r["first_answer"] for r in runs if "first_answer" in r]
        first = f"{statistics.median(firsts):.2f}" if firsts else "?"
        print(f"{name:<24}{median:>10.2f}{median / baseline:>9.2f}{sent_text:>11}{over:>13}"
              f"{requests!s:>10}{peak:>10.0f}{first:>14}")
    if "(c) vhdtool VHDX" in results and "(b) 4 MiB pool" in results:
        ratio = statistics.median(r["seconds"] for r in results["(c) vhdtool VHDX"]) / baseline
        print(f"ratio (c) vhdtool VHDX / (b) pool: {ratio:.2f} (target <= 1.0) {'ok' if ratio <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
