"""Token requests per upload, for every way of signing in, against a local Azurite.

Usage: ``python benchmarks/signin_tokens.py [--size-mib 1024] [--data-mib 64] [--short-lifetime 2]``

Makes a raw image of ``--size-mib`` with ``--data-mib`` of random data in 256 KiB runs spread over
it, starts Azurite twice (HTTP, and HTTPS with ``--oauth basic`` and a certificate made for the
run), a local managed-identity endpoint (App Service protocol, ``tests/support/identity.py``) and the
stand-in of an Entra-ID managed disk's ``md-`` host (``tests/support/signin_helpers.py``), then runs
``vhdtool upload IMAGE DEST --verify=full --json`` in a fresh process for each credential form and
prints the seconds, the HTTP requests vhdtool sent and the token requests the identity endpoint
answered. ``--short-lifetime`` adds a run whose tokens live that many seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def run_upload(image: Path, dest: list[str], env: dict[str, str]) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vhdtool", "upload", str(image), *dest, "--verify=full", "--json"],
                          capture_output=True, text=True, env={**env, "PYTHONPATH": str(ROOT)}, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"upload to {dest[0]} failed: {proc.stderr.strip()}")
    facts: dict[str, Any] = json.loads(proc.stdout)
    facts["wall"] = time.monotonic() - started
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=64)
    parser.add_argument("--short-lifetime", type=float, default=2.0)
    args = parser.parse_args()

    from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas
    from support.azurite import ACCOUNT, ACCOUNT_KEY, RecordingProxy, Rule, running_azurite
    from support.identity import IdentityEndpoint, make_certificate, sign_in_environment
    from support.signin_helpers import Disk, make_raw, needs_entra, without_token

    work = Path(tempfile.mkdtemp(prefix="signin-bench-"))
    image = make_raw(work / "disk.raw", args.size_mib << 20, runs=max(1, args.data_mib * 4),
                     run_length=256 * 1024)
    certificate = make_certificate(work / "tls")
    rows: list[tuple[str, dict[str, Any], int]] = []
    with running_azurite() as plain, running_azurite(certificate=certificate, oauth=True) as oauth:
        oauth_service = BlobServiceClient.from_connection_string(oauth.connection_string(),
                                                                 connection_verify=str(certificate.cert))
        md_host = RecordingProxy(plain.port, certificate=certificate)
        md_host.rewrite = without_token
        try:
            def measure(label: str, dest: list[str], lifetime: float = 3600.0,
                        prepare: Any = None) -> None:
                identity = IdentityEndpoint(lifetime=lifetime)
                try:
                    if prepare is not None:
                        prepare(identity)
                    facts = run_upload(image, dest, sign_in_environment(identity, certificate))
                    rows.append((label, facts, len(identity.issued())))
                finally:
                    identity.close()

            def container(service: BlobServiceClient) -> str:
                name = "b" + uuid.uuid4().hex[:12]
                service.create_container(name)
                return name

            c = container(oauth_service)
            measure("--account-url CONTAINER/BLOB (DefaultAzureCredential, managed identity)",
                    [f"{c}/a.vhd", "--account-url", oauth.endpoint])
            measure("blob URL without SAS (DefaultAzureCredential, managed identity)", [f"{oauth.endpoint}/{c}/b.vhd"])
            measure(f"blob URL without SAS, tokens living {args.short_lifetime:g} s",
                    [f"{oauth.endpoint}/{c}/c.vhd"], lifetime=args.short_lifetime)
            sas = generate_blob_sas(ACCOUNT, c, "d.vhd", account_key=ACCOUNT_KEY,
                                    permission=BlobSasPermissions(read=True, create=True, write=True),
                                    expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2))
            measure("blob URL with a SAS", [f"{oauth.endpoint}/{c}/d.vhd?{sas}"])
            measure("connection string (account key)", [f"{c}/e.vhd", "--connection-string", oauth.connection_string()])
            disk = Disk(plain, md_host, (args.size_mib << 20) + 512)

            def entra_disk(identity: IdentityEndpoint) -> None:
                md_host.clear()
                md_host.add_rule(Rule(lambda r: True, "answer", times=10**9, answer=needs_entra(identity)))

            measure("managed disk with Entra ID (SAS + bearer challenge for https://disk.azure.com/)",
                    [disk.url, "--managed-disk"], prepare=entra_disk)
        finally:
            md_host.close()

    print(f"{args.size_mib} MiB disk, {args.data_mib} MiB of data in 256 KiB runs, --verify=full, one process each")
    print(f"{'credential':<84} {'s':>6} {'HTTP requests':>13} {'token requests':>14}")
    for label, facts, tokens in rows:
        print(f"{label:<84} {facts['wall']:>6.1f} {facts['requests']:>13} {tokens:>14}")
    if os.environ.get("SIGNIN_BENCH_KEEP") is None:
        for path in sorted(work.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        work.rmdir()


if __name__ == "__main__":
    main()
