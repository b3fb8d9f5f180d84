"""``vhdtool convert`` as a user runs it: progress only on a terminal, warnings from the readers,
the output named either way, and clear one-line failures (no space, no permission, empty input)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from support.cli import cli_command, run_cli
from support.vhd_builder import build_vhd

from vhdtool import open_image
from vhdtool.cli import run
from vhdtool.errors import ImageError, OutputError
from vhdtool.extents import MiB
from vhdtool.jobs.convert import convert
from vhdtool.stream import filecopy

ROOT = Path(__file__).resolve().parents[2]


def on_terminal(args: list[str], columns: int) -> tuple[int, str, str]:
    """Run vhdtool with stderr on a pseudo-terminal of ``columns`` columns (0: never sized).

    Returns the exit code, stdout, and everything written to the terminal.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24 if columns else 0, columns, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(cli_command(*args), stdout=subprocess.PIPE, stderr=slave,
                            env=env)
    # The slave stays open here until the child is done, so reading the master never hits EIO
    # (which on Linux can drop what the child wrote last).
    out = proc.communicate()[0].decode()
    seen = bytearray()
    while select.select([master], [], [], 0.2)[0]:
        chunk = os.read(master, 65536)
        if not chunk:
            break
        seen += chunk
    os.close(slave)
    os.close(master)
    return proc.returncode, out, seen.decode(errors="replace")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.raw"
    path.write_bytes(os.urandom(3 * MiB + 512))
    return path


@pytest.mark.parametrize("columns", [100, 0])
def test_progress_bar_on_a_terminal(tmp_path: Path, source: Path, columns: int) -> None:
    """A sized terminal gets a tqdm bar; so does one that reports no width (tqdm drew nothing there)."""
    code, out, terminal = on_terminal(["convert", str(source), str(tmp_path / "o.vhd")], columns)
    assert code == 0, terminal
    assert "%|" in terminal and "B/s" in terminal, repr(terminal)
    assert "wrote" in out


def test_quiet_and_json_draw_no_bar_even_on_a_terminal(tmp_path: Path, source: Path) -> None:
    code, out, terminal = on_terminal(["convert", str(source), str(tmp_path / "q.vhd"), "--quiet"], 100)
    assert code == 0 and terminal == "" and out == ""
    code, out, terminal = on_terminal(["convert", str(source), str(tmp_path / "j.vhd"), "--json"], 100)
    assert code == 0 and terminal == ""
    assert json.loads(out)["output"] == str(tmp_path / "j.vhd")


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path: Path, source: Path) -> None:
    proc = run_cli("convert", str(source), "-o", str(tmp_path / "o.vhd"))
    assert proc.returncode == 0 and proc.stderr == "" and "wrote" in proc.stdout


def damaged_dynamic(tmp_path: Path) -> Path:
    """A dynamic VHD whose end footer has a wrong checksum: read from the copy at offset 0."""
    path = tmp_path / "damaged.vhd"
    layout = build_vhd(path, 64 * 1024, {3: b"\x33" * 512})
    with open(path, "r+b") as f:
        f.seek(layout.footer_offset + 70)
        f.write(b"\xff")
    return path


def test_reader_warnings_are_said(tmp_path: Path) -> None:
    """Converting a disk whose end footer was damaged says that the footer copy was used."""
    src = damaged_dynamic(tmp_path)
    text = run_cli("convert", str(src), str(tmp_path / "a.vhd"))
    assert text.returncode == 0
    assert text.stderr.startswith("vhdtool: warning: the footer at the end of the file has a wrong checksum")
    assert "copy at offset 0" in text.stderr and len(text.stderr.splitlines()) == 1
    summary = run_cli("convert", str(src), str(tmp_path / "b.vhd"), "--json")
    assert summary.returncode == 0 and summary.stderr == ""
    assert any("copy at offset 0" in w for w in json.loads(summary.stdout)["warnings"])
    quiet = run_cli("convert", str(src), str(tmp_path / "c.vhd"), "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
    with open_image(tmp_path / "a.vhd") as out:
        assert out.read(3 * 512, 512) == b"\x33" * 512


def test_output_as_argument_or_option(tmp_path: Path, source: Path) -> None:
    """`vhdtool convert IMAGE OUT.vhd` (as check's advice says) and `-o OUT.vhd` write the same file."""
    assert run_cli("convert", str(source), str(tmp_path / "a.vhd")).returncode == 0
    assert run_cli("convert", str(source), "-o", str(tmp_path / "b.vhd")).returncode == 0
    assert (tmp_path / "a.vhd").read_bytes()[:-512] == (tmp_path / "b.vhd").read_bytes()[:-512]
    same = run_cli("convert", str(source), str(tmp_path / "c.vhd"), "-o", str(tmp_path / "c.vhd"))
    assert same.returncode == 0
    both = run_cli("convert", str(source), str(tmp_path / "d.vhd"), "-o", str(tmp_path / "e.vhd"))
    assert both.returncode == 2 and "two outputs" in both.stderr and len(both.stderr.splitlines()) == 1
    none = run_cli("convert", str(source))
    assert none.returncode == 2 and "no output" in none.stderr
    assert not (tmp_path / "d.vhd").exists() and not (tmp_path / "e.vhd").exists()


def test_an_empty_image_is_refused_unless_a_size_is_given(tmp_path: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    proc = run_cli("convert", str(empty), str(tmp_path / "e.vhd"))
    assert proc.returncode == 1 and "empty" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "e.vhd").exists()
    blank = run_cli("convert", str(empty), str(tmp_path / "b.vhd"), "--size", "2M")
    assert blank.returncode == 0
    data = (tmp_path / "b.vhd").read_bytes()
    assert len(data) == 2 * MiB + 512 and not any(data[:-512])


def run_in_process(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        run(args)
    code = exited.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err


def test_no_space_left_is_one_clear_line_and_leaves_nothing(tmp_path: Path, source: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from vhdtool.blockio import fileio

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio, "pwrite", full)
    monkeypatch.setattr(os, "copy_file_range", full)  # the kernel copy fills the disk the same way
    out = tmp_path / "out"
    out.mkdir()
    with open_image(source) as disk, pytest.raises(OutputError, match="no space left"):
        convert(disk, out / "x.vhd")
    assert list(out.iterdir()) == []
    code, err = run_in_process(["convert", str(source), str(out / "x.vhd")], capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"vhdtool: error: {out / 'x.vhd'}: cannot write at byte 0: no space left")
    assert list(out.iterdir()) == []


def test_permission_denied_is_one_clear_line_and_leaves_nothing(tmp_path: Path, source: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A folder the user cannot write to (faked: the tests may run as root, who can write anywhere)."""
    real_open = os.open
    out = tmp_path / "locked"
    out.mkdir()

    def guarded(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if flags & os.O_CREAT and os.path.dirname(os.path.abspath(path)) == str(out):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", guarded)
    code, err = run_in_process(["convert", str(source), str(out / "x.vhd")], capsys)
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "permission denied" in err and str(out / "x.vhd") in err and "Traceback" not in err
    assert list(out.iterdir()) == []


def test_a_source_that_fails_to_read_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """An I/O error reading the image (a dying disk) names the image; no output is left behind."""
    from vhdtool.blockio import fileio

    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(6 * MiB))
    real = fileio.preadinto
    fd_of_source: list[int] = []

    def failing(fd: int, view: memoryview, offset: int) -> int:
        if fd in fd_of_source and offset + len(view) > 4 * MiB:  # the read reaches past 4 MiB
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd, view, offset)

    monkeypatch.setattr(fileio, "preadinto", failing)
    # As on a kernel without MADV_POPULATE_READ, stored runs are read, not mapped (a mapped read
    # error is the next test's).
    monkeypatch.setattr(filecopy, "_POPULATE_READ", None)
    with open_image(src) as disk:
        fd_of_source.append(disk.image.fd)  # type: ignore[attr-defined]
        with pytest.raises(ImageError) as err:
            convert(disk, tmp_path / "o.vhd")
    assert str(src) in str(err.value) and os.strerror(errno.EIO) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]
    with open_image(src) as disk:  # with --hash the ordered walk reads through fileio the same way
        fd_of_source[:] = [disk.image.fd]  # type: ignore[attr-defined]
        with pytest.raises(ImageError):
            convert(disk, tmp_path / "o.vhd", hashes=("md5",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]


def test_a_mapped_source_cut_short_is_an_error_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file shrinks between mapping it and touching it: a read error there would be SIGBUS, so
    the mapping is faulted in by madvise first, whose error sends the run to pread, which names it.
    (Runs are mapped only where the kernel copies them, as on XFS: so here it is told it does.)"""
    import mmap as real_mmap

    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(6 * MiB))
    cut: list[bool] = []

    class Shrinking:
        ACCESS_READ = real_mmap.ACCESS_READ
        ALLOCATIONGRANULARITY = real_mmap.ALLOCATIONGRANULARITY

        @staticmethod
        def mmap(fd: int, length: int, **kwargs: object) -> real_mmap.mmap:
            mapping = real_mmap.mmap(fd, length, **kwargs)  # type: ignore[arg-type]
            if not cut:
                os.truncate(src, 1 * MiB)  # another program cuts the image short
                cut.append(True)
            return mapping

    monkeypatch.setattr(filecopy, "mmap", Shrinking)
    monkeypatch.setattr(filecopy, "kernel_copies", lambda src_fd, dst_fd: True)
    with open_image(src) as disk, pytest.raises(ImageError) as err:
        convert(disk, tmp_path / "o.vhd")
    assert cut and str(src) in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_kill_mid_conversion_leaves_no_file(tmp_path: Path, signame: str) -> None:
    """A real signal to a running `vhdtool convert`, once its temporary file exists: exit 130, one
    line, and neither the output nor the temporary file is left (the input is unchanged)."""
    import signal
    import time

    src = tmp_path / "in.raw"
    with open(src, "wb") as f:
        for _ in range(384):
            f.write(b"\x01" * MiB)  # all data: every chunk is read, checked and written
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    # The output is held back from its final link/rename for a while, so the signal always lands
    # while the temporary file exists, however fast the copy itself is: the test cannot lose a race.
    program = (
        "import os, runpy, sys, time\n"
        "def held(real):\n"
        "    def call(*args, **kwargs):\n"
        "        time.sleep(60)\n"
        "        return real(*args, **kwargs)\n"
        "    return call\n"
        "os.link, os.replace, os.rename = held(os.link), held(os.replace), held(os.rename)\n"
        "sys.argv = ['vhdtool', *sys.argv[1:]]\n"
        "runpy.run_module('vhdtool', run_name='__main__')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", program, "convert", str(src), str(out_dir / "o.vhd")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 30
    while not any(p.name.endswith(".vhdtool-partial") for p in out_dir.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "vhdtool: interrupted\n", err
    assert list(out_dir.iterdir()) == []
    assert src.stat().st_size == 384 * MiB


def test_memory_stays_bounded_on_a_huge_sparse_disk(tmp_path: Path) -> None:
    """A 4 TiB dynamic VHDX (1 MiB blocks: a 32 MiB BAT) with data scattered over it converts in well
    under 100 MiB of resident memory, the whole process counted; the output is as sparse as the data."""
    src = tmp_path / "huge.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(src), "4T"], check=True)
    writes = [f"write -P 0x{i + 1:02x} {i * 500 * 1024**3 + i * 4096} {8 * MiB}" for i in range(8)]
    subprocess.run(["qemu-io", "-f", "vhdx", *sum((["-c", w] for w in writes), []), str(src)], check=True,
                   capture_output=True)
    out = tmp_path / "huge.vhd"
    # A fresh parent process, so that its children's peak RSS is vhdtool's alone.
    measure = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(p.stdout, end='');"
               " sys.stderr.write(p.stderr)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "vhdtool", "convert", str(src),
                           str(out), "--json"], capture_output=True, text=True, env=env)
    first, _, summary = proc.stdout.partition("\n")
    code, peak_kib = (int(x) for x in first.split())
    assert code == 0, proc.stderr
    assert peak_kib < 100 * 1024, f"peak RSS {peak_kib} KiB"
    assert out.stat().st_size == 4 * 1024**4 + 512
    assert out.stat().st_blocks * 512 < 8 * 8 * MiB + 4 * MiB
    assert json.loads(summary)["bytes_written"] == 8 * 8 * MiB + 512
