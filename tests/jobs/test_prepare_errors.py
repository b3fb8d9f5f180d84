"""``vhdtool prepare`` on bad input and on Ctrl-C: one line on stderr, a non-zero exit, nothing half-written.

Each case runs the real command line in a folder holding only its inputs; afterwards the folder must
hold exactly those inputs (no VHD, no manifest, no temporary file, no output folder).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from support.cli import cli_command, run_cli_process
from support.fixture_files import unpack_fixture

from vhdtool.extents import MiB

ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AZURE_") and k != "VHDTOOL_DEBUG"}
    clean["PYTHONPATH"] = str(ROOT)
    return clean


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """A folder with the sample OS disk, a qcow2 data disk, a plain file and a sub-folder."""
    unpack_fixture("sample/linux-os.vhdx.gz", tmp_path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "data.qcow2"), "16M"], check=True)
    (tmp_path / "data.raw").write_bytes(bytes(MiB))
    (tmp_path / "plain").write_text("not a folder\n")
    (tmp_path / "folder").mkdir()
    return tmp_path


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--name", "s", "--os", "missing.vhdx", "-o", "out"], 1, "missing.vhdx"),
    (["--name", "s", "--os", "folder", "-o", "out"], 1, "folder"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "0=data.raw", "--data", "0=data.raw", "-o", "out"],
     2, "own LUN"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "64=data.raw", "-o", "out"], 2, "LUN 64"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "-1=data.raw", "-o", "out"], 2, "LUN=IMAGE"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "lun0=data.raw", "-o", "out"], 2, "LUN=IMAGE"),
    (["--name", "a/b", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "a b", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "disk?", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "caf\u00e9", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "web.", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "-web", "--os", "linux-os.vhdx", "-o", "out"], 2, "image name"),
    (["--name", "w" * 60, "--os", "linux-os.vhdx", "-o", "out"], 2, "too long"),
    (["--name", "s", "--os", "linux-os.vhdx", "-o", "plain"], 2, "plain: not a folder"),
    (["--name", "s", "--os", "linux-os.vhdx", "-o", "plain/sub"], 1, "cannot create the output folder"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "0=data.qcow2", "-o", "out"], 1, "qcow2"),
    (["--name", "s", "--os", "linux-os.vhdx", "--data", "0=missing.vhd", "-o", "out"], 1, "missing.vhd"),
])
def test_bad_input_is_one_line_and_writes_nothing(inputs: Path, args: list[str], code: int, message: str) -> None:
    before = files_under(inputs)
    proc = run_cli_process("prepare", "-q", *args, cwd=inputs, base_env=env())
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdtool: error: "), proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""
    assert files_under(inputs) == before


def test_unwritable_output_folder(inputs: Path) -> None:
    """A folder that exists but takes no new files (for root too): the error names it, nothing is left."""
    target = Path("/proc/self")
    if not target.is_dir():
        pytest.skip("needs /proc")
    before = files_under(inputs)
    proc = run_cli_process("prepare", "-q", "--name", "s", "--os", "linux-os.vhdx", "-o", str(target),
                           cwd=inputs, base_env=env())
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdtool: error: /proc/self"), proc.stderr
    assert files_under(inputs) == before


def test_ctrl_c_during_prepare_leaves_no_files(inputs: Path) -> None:
    """SIGINT while the second disk converts: exit 130, one line, neither VHD nor the manifest remains."""
    big = inputs / "big.raw"
    with open(big, "wb") as f:
        for _ in range(384):
            f.write(os.urandom(MiB))  # data throughout: the conversion takes a while
    out = inputs / "out"
    proc = subprocess.Popen(cli_command("prepare", "--name", "s", "--os", "linux-os.vhdx",
                                        "--data", "0=big.raw", "-o", str(out)), cwd=inputs, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if "convert  data disk LUN 0" in line:
            proc.send_signal(signal.SIGINT)
            break
    stdout, rest = proc.communicate(timeout=120)
    assert any("convert  data disk LUN 0" in line for line in seen), "".join(seen)
    tail = rest.splitlines()
    assert proc.returncode == 130, "".join(seen) + rest
    assert tail == ["vhdtool: interrupted"], rest
    assert stdout == ""
    # The OS disk's finished VHD was removed too, and with it the output folder this run made.
    assert not out.exists(), sorted(p.name for p in out.iterdir())
