"""A soak of ``vhdtool upload`` under faults: random failures, kills and resumes, against a real Azurite.

Several images (raw, dynamic VHDX and dynamic VHD made by qemu-img; scattered random data, sizes that
are not whole MiB) are uploaded by the CLI, each run a real subprocess, through the fault-injecting
proxy of ``tests/support/azurite.py`` (503 with Retry-After, 500, connections dropped before or after Azurite
applied the request, answers cut short, slow answers). Runs are killed (SIGKILL, and once SIGINT) at a
random request and run again with ``--resume`` until one completes. Then every blob, downloaded
straight from Azurite, must be the fixed VHD ``vhdtool convert`` writes (footer id and timestamp aside,
which must be the ones recorded on the blob), its sparse digest the one reported and recorded (and,
for the images uploaded with ``--hash md5``, its MD5 the one reported and stored as Content-MD5; for
the others no MD5 anywhere), its page ranges exactly the non-zero pages; and no run may have printed
the account key or a SAS signature.

:class:`Soak` is the machinery: ``tests/soak/test_upload_soak.py`` runs one plan in the suite,
``benchmarks/upload_soak.py`` runs it for longer with random plans.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from azure.storage.blob import BlobClient, BlobSasPermissions, BlobServiceClient, generate_blob_sas

from support.azurite import (
    ACCOUNT,
    ACCOUNT_KEY,
    FAILING_FAULTS,
    FAULT_KINDS,
    Azurite,
    RandomFaults,
    Recorded,
    RecordingProxy,
)
from support.cli import cli_command
from support.oracles import reference_sparse_digest_of_bytes
from vhdtool import open_image
from vhdtool.azure.upload import META_FOOTER, META_MD5, META_SPARSE, META_STATE, STATE_COMPLETE
from vhdtool.extents import MiB, merge_ranges
from vhdtool.formats.vhd.footer import parse_footer
from vhdtool.jobs.convert import convert

ROOT = Path(__file__).resolve().parents[2]
PAGE = 512
MAX_PUT = 4 * MiB
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGINT": signal.SIGINT}


# -- images -----------------------------------------------------------------------------------------


def scattered_raw(path: Path, size: int, data: int, rng: np.random.Generator) -> None:
    """A sparse raw image of ``size`` bytes with about ``data`` bytes of non-zero random bytes.

    Pieces of 1 byte to 512 KiB at unaligned offsets (many small Put Page requests), one run longer
    than a Put Page may be (split at 4 MiB) with zero pages inside (allocated, never sent), and the
    disk's last bytes (data next to the padding up to a whole MiB).
    """
    long_run = int(rng.integers(4 * MiB + 1, 5 * MiB))
    at = int(rng.integers(0, size - long_run - 1000))
    writes = [(at, long_run), (size - 1000, 1000)]
    written = long_run + 1000
    while written < data:
        length = int(math.exp(rng.uniform(0, math.log(512 * 1024))))
        writes.append((int(rng.integers(0, size - length)), length))
        written += length
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in writes:
            f.seek(offset)
            f.write(rng.integers(1, 256, length, dtype=np.uint8).tobytes())
        f.seek((at + long_run // 2) // PAGE * PAGE)
        f.write(bytes(8 * PAGE))


def page_mask(path: Path) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """One flag per 512-byte page of the file: does it hold a non-zero byte."""
    return np.asarray(np.fromfile(path, dtype=np.uint64).reshape(-1, PAGE // 8).any(axis=1), dtype=np.bool_)


def page_runs(mask: np.ndarray[Any, np.dtype[np.bool_]]) -> list[tuple[int, int]]:
    """The runs of set flags, as half-open byte ranges."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return [(int(a) * PAGE, int(b) * PAGE) for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1),
                                                           strict=True)]


def listed_ranges(client: BlobClient) -> list[tuple[int, int]]:
    """The blob's written ranges as Azurite lists them, half-open."""
    return [(int(r.start or 0), int(r.end or 0) + 1) for r in client.list_page_ranges()]


def put_count(runs: list[tuple[int, int]]) -> int:
    """Put Page requests an upload of these runs makes (each run cut into pieces of at most 4 MiB)."""
    return sum(math.ceil((b - a) / MAX_PUT) for a, b in runs)


@dataclass
class SoakImage:
    """One upload of the soak: the image, its oracle (the fixed VHD ``convert`` writes), where it goes."""

    label: str
    kind: str  # "raw", "vhdx" or "vhd"
    path: Path
    fixed: Path
    blob: str
    auth: str  # "key" (connection string with the account key) or "sas" (blob URL with a SAS token)
    verify: str  # "pages" or "full"
    overwrite: bool  # uploaded over an existing blob (--overwrite, then --resume --overwrite)
    mask: np.ndarray[Any, np.dtype[np.bool_]]  # the fixed VHD's non-zero pages
    virtual_size: int  # of the fixed VHD

    @property
    def md5(self) -> bool:
        """Whether this image is uploaded with ``--hash md5`` (those verified in full are)."""
        return self.verify == "full"

    @property
    def nonzero(self) -> int:
        return int(self.mask.sum()) * PAGE


# -- runs and their record --------------------------------------------------------------------------


class _Trigger:
    """Sends a signal to the run's process when the proxy sees the run's ``at``-th request.

    Called by the proxy before it answers or forwards that request, so the kill lands at an exact,
    random point: during the first properties read, the creation, a Put Page, a listing, a read-back,
    or the final metadata.
    """

    def __init__(self, prefix: str, at: int | None, sig: str | None) -> None:
        self.prefix = prefix
        self.at = at
        self.sig = sig
        self.proc: subprocess.Popen[str] | None = None
        self.seen = 0
        self.fired: Recorded | None = None
        self._lock = threading.Lock()

    def __call__(self, rec: Recorded) -> None:
        if not rec.path.startswith(self.prefix):
            return
        with self._lock:
            self.seen += 1
            if self.sig is None or self.seen != self.at or self.proc is None:
                return
            self.fired = rec
        self.proc.send_signal(SIGNALS[self.sig])


def describe(rec: Recorded) -> str:
    """A request in a few words, e.g. ``PUT page update`` or ``GET pagelist``."""
    return " ".join(x for x in (rec.method, rec.query.get("comp"), rec.page_write) if x)


@dataclass
class Run:
    """One ``vhdtool upload`` process and what the proxy saw of it."""

    image: str
    resume: bool
    signal: str | None  # the signal sent, if it was
    at: str | None  # the request it was sent at
    returncode: int
    seconds: float
    requests: list[Recorded]
    summary: dict[str, Any] | None  # the --json summary of a completed run


@dataclass
class Totals:
    """The soak's figures."""

    images: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    overwrites: int = 0
    virtual_bytes: int = 0
    runs: int = 0
    completed: int = 0
    kills: int = 0
    interrupts: int = 0
    resumes: int = 0
    requests: int = 0
    incomplete: int = 0  # requests whose body a killed client never finished sending
    client_requests: int = 0
    client_retries: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    killed_at: Counter[str] = field(default_factory=Counter)  # the requests signals were sent at
    put_bytes: int = 0
    applied_bytes: int = 0
    nonzero: int = 0
    identical: int = 0
    seconds: float = 0.0
    problems: int = 0

    def merge(self, other: Totals) -> None:
        """Add ``other``'s figures to these (a long soak restarts Azurite now and then)."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def rows(self) -> list[tuple[str, str]]:
        failing = sum(n for kind, n in self.faults.items() if kind in FAILING_FAULTS)
        faults = ", ".join(f"{kind} {self.faults[kind]}" for kind in FAULT_KINDS if self.faults[kind])
        resent = self.put_bytes - self.nonzero
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.kinds.items()))
        points = ", ".join(f"{what} {n}" for what, n in self.killed_at.most_common())
        return [
            ("images", f"{self.images} ({kinds}; {self.overwrites} over an existing blob), "
                       f"{self.virtual_bytes / MiB:.1f} MiB of virtual disk"),
            ("runs", f"{self.runs}: {self.completed} completed, {self.kills} SIGKILL, {self.interrupts} SIGINT, "
                     f"{self.resumes} with --resume"),
            ("signalled at", points or "-"),
            ("requests (proxy)", f"{self.requests} ({self.incomplete} cut off by a kill while being sent)"),
            ("faults injected", f"{sum(self.faults.values())} ({failing} failing, "
                                f"{self.requests and 100 * sum(self.faults.values()) / self.requests:.1f}% of "
                                f"requests): {faults}"),
            ("completed runs", f"{self.client_requests} requests, {self.client_retries} retries (client's count)"),
            ("Put Page bytes", f"{self.put_bytes / MiB:.2f} MiB sent, {self.applied_bytes / MiB:.2f} MiB applied, "
                               f"{self.nonzero / MiB:.2f} MiB non-zero"),
            ("bytes resent", f"{resent / MiB:.2f} MiB ({self.nonzero and 100 * resent / self.nonzero:+.1f}%)"),
            ("blobs identical", f"{self.identical} of {self.images} (bytes, MD5, page ranges)"),
            ("problems", f"{self.problems}"),
            ("time", f"{self.seconds:.1f} s"),
        ]

    def table(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows())


def secret_forms(secrets: list[str]) -> set[str]:
    """Each secret as it might be printed: as is, URL-quoted, form-quoted."""
    forms: set[str] = set()
    for secret in secrets:
        forms |= {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return {f for f in forms if len(f) >= 8}


class Soak:
    """Uploads images through the fault proxy with the CLI, killing and resuming runs, and checks the blobs.

    Problems (a wrong blob, an unexpected exit code, a secret in the output, a hang) are collected
    in :attr:`problems` rather than raised, so a long soak reports all it finds.
    """

    def __init__(self, azurite: Azurite, proxy: RecordingProxy, work: Path, *, seed: int, fault_rate: float,
                 threads: int = 4, run_timeout: float = 180.0, slow_seconds: tuple[float, float] = (0.1, 0.6)) -> None:
        self.azurite = azurite
        self.proxy = proxy
        self.work = work
        self.seed = seed
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.threads = threads
        self.run_timeout = run_timeout
        self.container = "soak" + uuid.uuid4().hex[:10]
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string())
        self.service.create_container(self.container)
        self.secrets: list[str] = [ACCOUNT_KEY]
        self.runs: list[Run] = []
        self.images: list[SoakImage] = []
        self.problems: list[str] = []
        self.identical = 0
        self.started = time.monotonic()
        self._faults_before = Counter(proxy.injected)
        proxy.set_faults(RandomFaults(rate=fault_rate, seed=seed, slow_seconds=slow_seconds))

    # -- images -----------------------------------------------------------------------------------

    def make_image(self, kind: str, size: int, data: int, *, auth: str = "key", verify: str = "pages",
                   over: SoakImage | None = None) -> SoakImage:
        """A ``kind`` image of ``size`` bytes (qemu-img for VHDX and VHD) and its fixed VHD; ``over``: upload
        it onto that image's blob with ``--overwrite``."""
        label = f"{kind}-{len(self.images) + 1}"
        raw = self.work / f"{label}.raw"
        scattered_raw(raw, size, data, self.np_rng)
        path = raw
        if kind != "raw":
            path = self.work / f"{label}.{kind}"
            fmt, options = ("vhdx", []) if kind == "vhdx" else ("vpc", ["-o", "subformat=dynamic,force_size=on"])
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *options, str(raw), str(path)],
                           check=True, capture_output=True)
        fixed = self.work / f"{label}.fixed.vhd"
        with open_image(path) as disk:
            convert(disk, fixed)
        if kind != "raw":
            with open(raw, "rb") as a, open(fixed, "rb") as b:  # the oracle agrees with qemu-img's input
                assert a.read() == b.read(size), f"{label}: convert disagrees with qemu-img"
            raw.unlink()
        blob = over.blob if over is not None else f"{label}.vhd"
        image = SoakImage(label, kind, path, fixed, blob, auth, verify, over is not None, page_mask(fixed),
                          fixed.stat().st_size - PAGE)
        self.images.append(image)
        return image

    def drop_files(self, image: SoakImage) -> None:
        """Delete an image's files once it is checked (a long soak makes many)."""
        for path in (image.path, image.fixed):
            path.unlink(missing_ok=True)

    # -- uploading --------------------------------------------------------------------------------

    def destination(self, image: SoakImage) -> tuple[str, dict[str, str]]:
        """The CLI's DEST argument and environment for this image's authentication."""
        env = {k: v for k, v in os.environ.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
        env["PYTHONPATH"] = str(ROOT)
        env["PYTHONFAULTHANDLER"] = "1"  # a hung run is sent SIGABRT: its threads' stacks go to stderr
        if image.auth == "key":
            env["AZURE_STORAGE_CONNECTION_STRING"] = self.azurite.connection_string(self.proxy.endpoint)
            return f"{self.container}/{image.blob}", env
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=6)
        sas = generate_blob_sas(ACCOUNT, self.container, image.blob, account_key=ACCOUNT_KEY, expiry=when,
                                permission=BlobSasPermissions(read=True, create=True, write=True))
        self.secrets += urllib.parse.parse_qs(sas)["sig"]
        return f"{self.proxy.endpoint}/{self.container}/{image.blob}?{sas}", env

    def direct(self, image: SoakImage) -> BlobClient:
        return self.service.get_blob_client(self.container, image.blob)

    def remaining_puts(self, image: SoakImage, first: bool) -> int:
        """Put Page requests still to send: all of them on a first run, else those for pages not listed yet."""
        missing = image.mask.copy()
        if not first:
            try:
                ranges = listed_ranges(self.direct(image))
            except Exception:  # no blob yet (killed before it was created)
                ranges = []
            for a, b in ranges:
                missing[a // PAGE:b // PAGE] = False
        return put_count(page_runs(missing))

    def upload(self, image: SoakImage, signals: list[str], *, extra_runs: int = 4) -> bool:
        """Upload ``image``: run ``i`` gets ``signals[i]`` at a random request, later runs none; every run
        after the first resumes. ``True`` when a run completed and the blob checks out."""
        for attempt in range(len(signals) + extra_runs):
            sig = signals[attempt] if attempt < len(signals) else None
            run = self.run_once(image, resume=attempt > 0, sig=sig)
            if run.returncode == 0:
                return self.check_blob(image, run)
        self.problems.append(f"{image.label}: no run completed in {len(signals) + extra_runs} runs")
        return False

    def run_once(self, image: SoakImage, *, resume: bool, sig: str | None) -> Run:
        """One CLI process, signalled at a random request if ``sig``; its outcome checked and recorded."""
        dest, env = self.destination(image)
        args = cli_command("upload", str(image.path), dest, "--threads", str(self.threads),
                           "--json", f"--verify={image.verify}")
        args += ["--resume"] if resume else []
        args += ["--overwrite"] if image.overwrite else []
        args += ["--hash", "md5"] if image.md5 else []
        # Every request of a full run comes before its last few (properties, metadata, listing,
        # read-back): a point drawn from the Put Page requests still to send plus a few is reached.
        at = self.rng.randint(1, self.remaining_puts(image, not resume) + 4) if sig else None
        trigger = _Trigger(f"/{ACCOUNT}/{self.container}/{image.blob}", at, sig)
        first = len(self.proxy.requests)
        self.proxy.on_request = trigger
        started = time.monotonic()
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        trigger.proc = proc
        try:
            stdout, stderr = proc.communicate(timeout=self.run_timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            try:
                stdout, stderr = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            at_what = describe(trigger.fired) if trigger.fired else None
            self.problems.append(f"{image.label}: a run hung for {self.run_timeout:.0f} s (signal "
                                 f"{trigger.fired and sig} at {at_what}); its threads:\n{stderr[-6000:]}")
        finally:
            self.proxy.on_request = None
        seconds = time.monotonic() - started
        # A killed client's requests that reached the proxy still reach Azurite: let them land.
        if not self.proxy.wait_idle(60):
            self.problems.append(f"{image.label}: the proxy still held requests 60 s after a run")
        requests = self.proxy.requests[first:]
        fired = trigger.fired is not None
        run = Run(image.label, resume, sig if fired else None, describe(trigger.fired) if trigger.fired else None,
                  proc.returncode, seconds, requests, None)
        self.runs.append(run)
        self._check_run(image, run, stdout, stderr)
        return run

    def _check_run(self, image: SoakImage, run: Run, stdout: str, stderr: str) -> None:
        where = f"{image.label} run {sum(r.image == image.label for r in self.runs)}"
        for form in secret_forms(self.secrets):
            if form in stdout or form in stderr:
                self.problems.append(f"{where}: a secret appears in the output")
        expected = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, None: 0}[run.signal]
        if run.returncode != expected:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            self.problems.append(f"{where}: exit code {run.returncode}, expected {expected} "
                                 f"(signal {run.signal} at {run.at}): {tail}")
        if run.signal == "SIGINT" and (stderr.strip().splitlines() or [""])[-1] != "vhdtool: interrupted":
            self.problems.append(f"{where}: SIGINT did not end with 'vhdtool: interrupted': {stderr[-300:]}")
        if "Traceback" in stderr:
            self.problems.append(f"{where}: a traceback on stderr: {stderr[-1500:]}")
        for r in run.requests:
            if r.fault == "incomplete" and run.signal is not None:
                # The process ended while sending it: a service never applies a request whose body
                # did not arrive. Ctrl-C ends the process at once too (cli.exit_now_if_workers_remain),
                # so a Put Page on the wire is cut there as well; the blob check below proves the
                # resumed upload made up for it.
                continue
            if r.fault == "incomplete" or r.is_put_page and not (
                    r.offset is not None and r.length is not None and r.offset % PAGE == 0 and r.length % PAGE == 0
                    and 0 < r.length <= MAX_PUT and r.body_length == r.length and r.md5_ok):
                self.problems.append(f"{where}: an invalid {describe(r)} at {r.offset} ({r.length} bytes, body "
                                     f"{r.body_length} bytes, MD5 right: {r.md5_ok}; signal {run.signal})")
        if run.returncode != 0:
            return
        try:
            run.summary = json.loads(stdout)
        except ValueError:
            self.problems.append(f"{where}: no JSON summary: {stdout[-300:]}")
            return
        # The client counts every attempt it sends, as the proxy does. It retries each 503, 500 and
        # dropped connection, and never more often than failures were injected. Not counted as
        # retries: the SDK's download (--verify=full) asks for the page ranges on its own, ignoring
        # any failure, and reads a cut body again by itself (a request, not a retry).
        failing = [r for r in run.requests if r.fault in FAILING_FAULTS]
        must = sum(r.fault in ("503", "500", "drop", "drop-after") and r.query.get("comp") != "pagelist"
                   for r in failing)
        if run.summary["requests"] != len(run.requests):
            self.problems.append(f"{where}: the client counted {run.summary['requests']} requests, "
                                 f"the proxy saw {len(run.requests)}")
        if not must <= run.summary["retries"] <= len(failing):
            self.problems.append(f"{where}: {run.summary['retries']} retries for {len(failing)} failures "
                                 f"({must} to be retried): "
                                 + ", ".join(f"{r.fault} on {describe(r)}" for r in failing))
        if run.summary["resumed"] and not run.resume:
            self.problems.append(f"{where}: resumed without --resume")

    # -- checking ---------------------------------------------------------------------------------

    def check_blob(self, image: SoakImage, run: Run) -> bool:
        """The blob (read straight from Azurite) is the fixed VHD, with the recorded footer, MD5 and ranges."""
        before = len(self.problems)
        client = self.direct(image)
        blob = client.download_blob(max_concurrency=2).readall()
        fixed = image.fixed.read_bytes()
        props = client.get_blob_properties()
        digest = hashlib.md5(blob).digest()
        summary = run.summary or {}
        if len(blob) != len(fixed) or blob[:-PAGE] != fixed[:-PAGE]:
            n = min(len(blob), len(fixed))
            diff = np.flatnonzero(np.frombuffer(blob, np.uint8, n) != np.frombuffer(fixed, np.uint8, n))
            at = int(diff[0]) if len(diff) else n
            self.problems.append(f"{image.label}: the blob differs from the fixed VHD at byte {at} "
                                 f"({len(blob)} bytes, expected {len(fixed)})")
        else:
            ours = parse_footer(blob[-PAGE:], "blob", len(blob) - PAGE)
            theirs = parse_footer(fixed[-PAGE:], "convert", len(fixed) - PAGE)
            same = ("cookie", "features", "file_format_version", "data_offset", "original_size", "current_size",
                    "geometry", "disk_type", "saved_state")
            differ = [name for name in same if getattr(ours, name) != getattr(theirs, name)]
            recorded = f"{ours.unique_id.hex()}-{ours.timestamp}"
            if not ours.checksum_valid or differ or props.metadata.get(META_FOOTER) != recorded:
                self.problems.append(f"{image.label}: footer wrong: checksum {ours.checksum_valid}, fields {differ}, "
                                     f"recorded {props.metadata.get(META_FOOTER)} vs {recorded}")
        stored = props.content_settings.content_md5
        if image.md5 and (summary.get("md5") != digest.hex() or stored is None or bytes(stored) != digest
                          or props.metadata.get(META_MD5) != digest.hex()):
            self.problems.append(f"{image.label}: MD5 {digest.hex()} of the blob is not the one reported "
                                 f"({summary.get('md5')}) and stored")
        if not image.md5 and (summary.get("md5") is not None or stored or META_MD5 in props.metadata):
            self.problems.append(f"{image.label}: an MD5 was computed or stored without --hash md5")
        sparse = reference_sparse_digest_of_bytes(blob)
        if summary.get("sparse_sha256") != sparse or props.metadata.get(META_SPARSE) != sparse:
            self.problems.append(f"{image.label}: sparse digest {sparse} of the blob is not the one reported "
                                 f"({summary.get('sparse_sha256')}) and recorded ({props.metadata.get(META_SPARSE)})")
        if props.metadata.get(META_STATE) != STATE_COMPLETE:
            self.problems.append(f"{image.label}: state {props.metadata.get(META_STATE)}, not complete")
        listed = merge_ranges(listed_ranges(client))
        if listed != page_runs(image.mask):
            self.problems.append(f"{image.label}: page ranges are not exactly the non-zero pages")
        ok = len(self.problems) == before
        self.identical += ok
        return ok

    def totals(self) -> Totals:
        t = Totals(images=len(self.images), runs=len(self.runs), identical=self.identical,
                   problems=len(self.problems), seconds=time.monotonic() - self.started)
        t.virtual_bytes = sum(i.virtual_size for i in self.images)
        t.kinds = Counter(i.kind for i in self.images)
        t.overwrites = sum(i.overwrite for i in self.images)
        t.nonzero = sum(i.nonzero for i in self.images)
        t.faults = Counter(self.proxy.injected) - self._faults_before
        for run in self.runs:
            t.completed += run.returncode == 0
            t.kills += run.signal == "SIGKILL"
            t.interrupts += run.signal == "SIGINT"
            t.resumes += run.resume
            if run.signal and run.at:
                t.killed_at[run.at] += 1
            t.requests += len(run.requests)
            t.incomplete += sum(r.fault == "incomplete" for r in run.requests)
            t.put_bytes += sum(r.body_length for r in run.requests if r.is_put_page)
            t.applied_bytes += sum(r.body_length for r in run.requests
                                   if r.is_put_page and r.status is not None and r.status < 300)
            if run.summary:
                t.client_requests += int(run.summary["requests"])
                t.client_retries += int(run.summary["retries"])
        return t

    def close(self) -> None:
        self.proxy.set_faults(None)
        self.proxy.on_request = None
