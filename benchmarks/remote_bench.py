"""What reading, downloading and copying disks in Azure costs, against a local Azurite behind the
recording proxy of ``tests/support/azurite.py`` (every request and answer byte counted).

Usage: ``python benchmarks/remote_bench.py [--filler-mib 16]``

Builds the 30 GiB OS disks of the inspect tests (GPT, ESP + ext4 root; ESP + MSR + NTFS) holding
``--filler-mib`` of files besides the OS, turns each into a fixed VHD (qemu-img), puts it in
Azurite with the SDK alone, then measures with the CLI:

* ``check --role os`` of each blob: requests and answer bytes (the budget: 16 MiB, 300 requests);
* ``download`` of the ext4 disk: bytes fetched against the blob's written bytes;
* ``copy`` of it to a second account, relayed (Azurite answers Put Page From URL with 501) and
  server-side (the proxy's Put Page From URL stand-in): bytes through this machine against the
  written bytes.

Prints one JSON object. Needs qemu-img, mkfs.ext4, mkntfs and Azurite (scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MiB = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--filler-mib", type=int, default=16)
    args = parser.parse_args()

    from support.azurite import SECOND_ACCOUNT, RecordingProxy, running_azurite
    from support.cli import run_cli_process
    from support.linux_images import make_linux
    from support.remote_helpers import Store, sdk_upload
    from support.windows_images import builder

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vhdtool-remote-bench-") as tmp_name, \
            running_azurite(second_account=True) as azurite:
        tmp = Path(tmp_name)
        proxy = RecordingProxy(azurite.port)
        store = Store(azurite, proxy)
        other = Store(azurite, proxy, SECOND_ACCOUNT)
        raws = {"ext4": make_linux.build_large(tmp / "lin.img", "generalized", size=30 << 30,
                                               filler=args.filler_mib * MiB),
                "ntfs": builder.build_large_gen2_disk(tmp / "win.img", filler=args.filler_mib * MiB)}
        for name, raw in raws.items():
            vhd = tmp / f"{name}.vhd"
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on",
                            str(raw), str(vhd)], check=True)
            raw.unlink()
            sdk_upload(store.client(f"{name}.vhd"), vhd)
            vhd.unlink()

        def counted(*command: str, cs: str | None = None) -> dict[str, Any]:
            proxy.clear()
            started = time.monotonic()
            proc = run_cli_process(*command, connection_string=cs)
            seconds = time.monotonic() - started
            if proc.returncode not in (0, 1):
                raise SystemExit(proc.stderr)
            reqs = list(proxy.requests)
            return {"exit": proc.returncode, "requests": len(reqs),
                    "answer_bytes": sum(r.response_length for r in reqs),
                    "request_body_bytes": sum(r.body_length for r in reqs), "seconds": round(seconds, 2),
                    "json": json.loads(proc.stdout) if proc.stdout.startswith("{") else None}

        for name in raws:
            run = counted("check", "--role", "os", "--json", store.spec(f"{name}.vhd"), cs=store.connection_string)
            report[f"check_{name}"] = {k: run[k] for k in ("exit", "requests", "answer_bytes", "seconds")}
        written = sum(r.end + 1 - r.start for r in store.client("ext4.vhd").list_page_ranges())
        report["ext4_written_bytes"] = written
        out = tmp / "down.vhd"
        run = counted("download", store.spec("ext4.vhd"), str(out), "--json", cs=store.connection_string)
        report["download"] = {"requests": run["requests"], "answer_bytes": run["answer_bytes"],
                              "ratio": round(run["answer_bytes"] / written, 5), "seconds": run["seconds"],
                              "allocated_on_disk": out.stat().st_blocks * 512}
        out.unlink()
        for mode, keys in (("relay", None), ("server", dict(azurite.accounts))):
            proxy.copy_from_url_keys = keys
            run = counted("copy", store.spec("ext4.vhd"), other.spec(f"{mode}.vhd"), "--json",
                          "--source-connection-string", store.connection_string,
                          "--connection-string", other.connection_string)
            result = run["json"] or {}
            through = run["answer_bytes"] + run["request_body_bytes"]
            report[f"copy_{mode}"] = {
                "mode": result.get("mode"), "requests": run["requests"], "bytes_read": result.get("bytes_read"),
                "bytes_sent": result.get("bytes_sent"), "copied_by_service": result.get("bytes_copied_by_service"),
                "read_ratio": round((result.get("bytes_read") or 0) / written, 5),
                "sent_ratio": round((result.get("bytes_sent") or 0) / written, 5),
                "through_machine_ratio": round(through / written, 5), "seconds": run["seconds"]}
        proxy.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
