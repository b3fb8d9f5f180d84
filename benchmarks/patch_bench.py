"""What a patch upload saves: a differencing child holding 2% of its base's data, against a full upload.

Usage: ``python benchmarks/patch_bench.py [--base-mib 256] [--share 0.02]``

Builds (with the test builder ``tests/support/vhdx_builder.py``) a 4 GiB VHDX base holding ``--base-mib``
of random 1 MiB blocks and a differencing child over it that rewrites ``--share`` of that amount in
partially present blocks (half of each block's sectors, in 64 KiB runs) and turns one base block
ZERO. Against a local Azurite behind the recording proxy of ``tests/support/azurite.py`` (every Put Page
body counted), with the proxy standing in for Put Page From URL so the base is copied server-side, it times:

* ``upload CHILD`` (the full upload a patch replaces);
* ``upload BASE`` once (the golden image), then ``upload CHILD DEST --base BASE_URL``.

Prints one JSON object: seconds, bytes sent through this machine and requests of each.
"""

from __future__ import annotations

import argparse
import json
import random
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
    parser.add_argument("--base-mib", type=int, default=256)
    parser.add_argument("--share", type=float, default=0.02)
    args = parser.parse_args()

    from support.azurite import SECOND_ACCOUNT, RecordingProxy, running_azurite
    from support.cli import run_cli_process
    from support.remote_helpers import Store, json_of
    from support.vhdx_builder import FULLY_PRESENT, PARTIALLY_PRESENT, ZERO, Block, build_vhdx

    size = 4 << 30
    rng = random.Random(14)
    report: dict[str, Any] = {"virtual_size": size, "base_data": args.base_mib * MiB}
    with tempfile.TemporaryDirectory(prefix="vhdtool-patch-bench-") as tmp_name, \
            running_azurite(second_account=True) as azurite:
        tmp = Path(tmp_name)
        base_blocks = rng.sample(range(size // MiB), args.base_mib)
        built = build_vhdx(tmp / "base.vhdx", size, block_size=MiB,
                           blocks={b: Block(FULLY_PRESENT, rng.randbytes(MiB)) for b in base_blocks})
        child_count = max(1, round(args.share * args.base_mib * 2))  # half of each block's sectors present
        present = [i // 128 % 2 == 0 for i in range(MiB // 512)]  # 64 KiB runs, as a guest file system writes
        child_blocks = {b: Block(PARTIALLY_PRESENT, rng.randbytes(MiB), present)
                        for b in rng.sample(range(size // MiB), child_count)}
        child_blocks[next(b for b in base_blocks if b not in child_blocks)] = Block(ZERO)
        build_vhdx(tmp / "child.avhdx", size, block_size=MiB, blocks=child_blocks,
                   parent_locator={"parent_linkage": f"{{{built.data_write_guid}}}", "relative_path": ".\\base.vhdx"})
        report["child_data"] = child_count * MiB // 2

        proxy = RecordingProxy(azurite.port)
        proxy.copy_from_url_keys = dict(azurite.accounts)
        golden = Store(azurite, proxy)
        dest = Store(azurite, proxy, SECOND_ACCOUNT)

        def run(name: str, *argv: str, store: Store) -> dict[str, Any]:
            proxy.clear()
            started = time.monotonic()
            proc = run_cli_process(*argv, "--json", connection_string=store.connection_string)
            seconds = time.monotonic() - started
            if proc.returncode:
                raise SystemExit(f"{name}: {proc.stderr.strip()}")
            result = json_of(proc)
            sent = sum(r.body_length for r in proxy.put_pages() if r.copy_source is None)
            row = {"seconds": round(seconds, 2), "bytes_sent": sent, "requests": len(proxy.requests)}
            print(f"{name}: {row}", file=sys.stderr)
            report[name] = row
            return dict(result)

        run("full_upload", "upload", str(tmp / "child.avhdx"), dest.spec("full.vhd"), store=dest)
        run("base_upload_once", "upload", str(tmp / "base.vhdx"), golden.spec("base.vhd"), store=golden)
        patch = run("patch_upload", "upload", str(tmp / "child.avhdx"), dest.spec("patched.vhd"),
                    "--base", golden.sas_url("base.vhd"), store=dest)
        report["patch_upload"].update({k: patch[k] for k in ("bytes_copied_by_service", "full_upload_bytes",
                                                            "owned_bytes", "proof", "phases")})
        report["sent_ratio"] = round(report["patch_upload"]["bytes_sent"] / report["full_upload"]["bytes_sent"], 4)
        report["time_ratio"] = round(report["patch_upload"]["seconds"] / report["full_upload"]["seconds"], 3)
        proxy.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
