"""``convert``: any image to a fixed VHD (or raw), checked against qemu-img and independent models.

For every stored fixture and for random images made by qemu-img
(sizes that are not MiB multiples, data scattered with qemu-io, VHD and VHDX, several block sizes)
the output is ``align_up(size, MiB) + 512`` bytes, its footer is a valid fixed footer, qemu-img
finds the content identical to the source, and the output is sparse.

qemu reads the size of a VHD from its CHS geometry unless the creator is one it knows (``win ``,
``qem2``, ...), so the comparison opens our output with ``force_size_calc=current_size``: the size
Azure and Hyper-V read.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import uuid
from pathlib import Path

import pytest
from support.cli import run_cli, run_cli_process
from support.fixture_files import FIXTURES, unpack_fixture
from support.oracles import qemu_img, reference_sparse_digest

from vhdtool import open_image
from vhdtool.disk.base import VirtualDisk
from vhdtool.errors import ImageError, OutputError, UsageError, VhdtoolError
from vhdtool.extents import Extent, MiB, align_up
from vhdtool.formats.vhd.footer import DISK_TYPE_FIXED, chs_geometry, parse_footer
from vhdtool.jobs.convert import ConvertResult, convert
from vhdtool.stream.progress import ProgressTally

QEMU_FORMAT = {"vhd": "vpc", "vhdx": "vhdx", "raw": "raw"}


def image_opts(path: Path, fmt: str) -> str:
    """qemu ``--image-opts`` for ``path``; VHDs are sized from current_size, as Azure sizes them."""
    if fmt == "vpc":
        return f"driver=vpc,force_size_calc=current_size,file.filename={path}"
    return f"driver={fmt},file.filename={path}"


def qemu_identical(out: Path, src: Path, src_fmt: str) -> None:
    """``qemu-img compare`` of our output with its source: exit 0 means identical content."""
    proc = subprocess.run(["qemu-img", "compare", "--image-opts", image_opts(out, "vpc"),
                           image_opts(src, src_fmt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check_fixed_vhd(out: Path, source_size: int) -> None:
    """Size, footer fields and checksum of a converted file: what Azure accepts as a fixed VHD."""
    virtual = align_up(source_size, MiB)
    assert out.stat().st_size == virtual + 512
    with open(out, "rb") as f:
        f.seek(virtual)
        raw = f.read()
    footer = parse_footer(raw, str(out), virtual)
    assert footer.checksum_valid
    assert footer.disk_type == DISK_TYPE_FIXED
    assert footer.current_size == footer.original_size == virtual
    assert footer.data_offset == 0xFFFFFFFFFFFFFFFF
    assert footer.features & 2 and footer.file_format_version == 0x00010000
    assert footer.geometry == chs_geometry(virtual)


def disk_usage(path: Path) -> int:
    return path.stat().st_blocks * 512


def qemu_io(path: Path, fmt: str, commands: list[str]) -> None:
    args = ["qemu-io", "-f", fmt]
    for c in commands:
        args += ["-c", c]
    subprocess.run(args + [str(path)], check=True, capture_output=True)


def random_image(tmp_path: Path, seed: int, fmt: str) -> tuple[Path, int, int]:
    """A qemu-img image of a random non-MiB size with data scattered by qemu-io.

    Returns the path, its virtual size as qemu reports it, and the bytes written into it.
    """
    rng = random.Random(seed)
    size = rng.randrange(5 * MiB, 160 * MiB) // 512 * 512 + rng.choice([512, 1536, 4096 + 512])
    path = tmp_path / f"random{seed}.{fmt}"
    if fmt == "vhdx":
        block = rng.choice(["1M", "8M", "32M"])
        qemu_img("create", "-q", "-f", "vhdx", "-o", f"block_size={block}", str(path), str(size))
    elif fmt == "vpc":
        qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", str(path), str(size))
    else:
        qemu_img("create", "-q", "-f", "raw", str(path), str(size))
    info = qemu_img("info", "-f", fmt, "--output=json", str(path)).stdout
    import json
    size = json.loads(info)["virtual-size"]
    commands: list[str] = []
    written = 0
    for _ in range(rng.randrange(3, 9)):
        length = rng.choice([512, 4096, 70000 // 512 * 512, MiB, 3 * MiB + 512])
        offset = rng.randrange(0, size - length) // 512 * 512
        commands.append(f"write -P 0x{rng.randrange(1, 256):02x} {offset} {length}")
        written += length
    # A run of explicit zeros (allocated in the image, but must stay a hole in the output) and
    # data in the very last sector, where padding arithmetic goes wrong.
    commands.append(f"write -P 0 {rng.randrange(0, size - MiB) // 512 * 512} {MiB}")
    commands.append(f"write -P 0xa5 {size - 512} 512")
    qemu_io(path, fmt, commands)
    return path, size, written + 512


@pytest.mark.parametrize(("seed", "fmt"), [(1, "vhdx"), (2, "vhdx"), (3, "vhdx"), (4, "vpc"), (5, "vpc"),
                                           (6, "raw")])
def test_random_qemu_images_convert_exactly(tmp_path: Path, seed: int, fmt: str) -> None:
    src, size, written = random_image(tmp_path, seed, fmt)
    out = tmp_path / "out.vhd"
    with open_image(src) as disk:
        assert disk.virtual_size == size
        result = convert(disk, out, hashes=("md5", "sha256"))
    check_fixed_vhd(out, size)
    qemu_identical(out, src, fmt)
    # Sparse: the output occupies about what was written, not the virtual size.
    assert disk_usage(out) <= written + 64 * 4096
    assert result.bytes_written <= written + 64 * 4096  # whole 4 KiB granules around each write
    data = out.read_bytes()
    assert result.digests == {"md5": hashlib.md5(data).hexdigest(),
                              "sha256": hashlib.sha256(data).hexdigest()}
    assert result.file_size == len(data) and result.virtual_size == len(data) - 512
    assert result.source_size == size


def stored_images() -> list[str]:
    names = []
    for path in sorted(FIXTURES.rglob("*.gz")):
        inner = path.name.removesuffix(".gz")
        if inner.endswith((".vhd", ".vhdx", ".raw", ".img")):
            names.append(str(path.relative_to(FIXTURES)))
    return names


@pytest.mark.parametrize("name", stored_images())
def test_every_stored_fixture_converts_or_is_refused_cleanly(tmp_path: Path, name: str) -> None:
    src = unpack_fixture(name, tmp_path)
    fmt = QEMU_FORMAT[src.suffix.lstrip(".")] if src.suffix != ".img" else "raw"
    out = tmp_path / "out" / "fixed.vhd"
    out.parent.mkdir()
    try:
        disk = open_image(src)
    except VhdtoolError:
        # A deliberately damaged fixture: opening refuses it, nothing to convert.
        return
    with disk:
        size = disk.virtual_size
        allocated = sum(e.length for e in disk.extents() if e.allocated)
        convert(disk, out)
    check_fixed_vhd(out, size)
    assert disk_usage(out) <= allocated + 64 * 4096
    expected = oracle_bytes(src, fmt, tmp_path)
    got = out.read_bytes()
    assert got[:len(expected)] == expected
    assert got[len(expected):-512] == bytes(len(got) - 512 - len(expected))
    assert os.listdir(out.parent) == ["fixed.vhd"]


def oracle_bytes(src: Path, fmt: str, tmp_path: Path) -> bytes:
    """The source's logical bytes read by qemu-img (VHDs sized from current_size, like Azure)."""
    raw = tmp_path / (src.name + ".oracle")
    qemu_img("convert", "--image-opts", image_opts(src, fmt), "-O", "raw", str(raw))
    return raw.read_bytes()


def test_raw_output_is_the_plain_disk_and_can_grow(tmp_path: Path) -> None:
    src, size, _ = random_image(tmp_path, 7, "vhdx")
    expected = oracle_bytes(src, "vhdx", tmp_path)
    out = tmp_path / "disk.raw"
    with open_image(src) as disk:
        result = convert(disk, out, output_format="raw")
        assert out.read_bytes() == expected and result.file_size == size
        grown = tmp_path / "grown.raw"
        convert(disk, grown, output_format="raw", size=size + 3 * MiB + 1)
    assert grown.stat().st_size == align_up(size + 3 * MiB + 1, MiB)
    data = grown.read_bytes()
    assert data[:size] == expected and not any(data[size:])


def test_size_grows_to_a_mib_and_shrinking_is_refused(tmp_path: Path) -> None:
    src, size, _ = random_image(tmp_path, 8, "vpc")
    out = tmp_path / "big.vhd"
    with open_image(src) as disk:
        result = convert(disk, out, size=size + 10 * MiB + 7)
        assert result.virtual_size == align_up(size + 10 * MiB + 7, MiB)
        with pytest.raises(UsageError):
            convert(disk, tmp_path / "small.vhd", size=size - MiB)
    check_fixed_vhd(out, size + 10 * MiB + 7)
    qemu_identical(out, src, "vpc")
    assert not (tmp_path / "small.vhd").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_keep_id_reuses_the_vhd_id_and_the_vhdx_data_write_guid(tmp_path: Path) -> None:
    vhd, _, _ = random_image(tmp_path, 9, "vpc")
    with open(vhd, "rb") as f:
        f.seek(-512, os.SEEK_END)
        vhd_id = parse_footer(f.read(), str(vhd), 0).unique_id
    with open_image(vhd) as disk:
        kept = convert(disk, tmp_path / "kept.vhd", keep_id=True)
        fresh = convert(disk, tmp_path / "fresh.vhd")
    assert kept.unique_id == str(uuid.UUID(bytes=vhd_id))
    assert fresh.unique_id != kept.unique_id
    assert (tmp_path / "kept.vhd").read_bytes()[-512:][68:84] == vhd_id

    from support.vhdx_builder import FULLY_PRESENT, Block, build_vhdx
    guid = uuid.uuid4()
    vhdx = tmp_path / "g.vhdx"
    build_vhdx(vhdx, 3 * MiB, blocks={1: Block(FULLY_PRESENT, b"\x42" * MiB)}, data_write_guid=guid)
    with open_image(vhdx) as disk:
        result = convert(disk, tmp_path / "g.vhd", keep_id=True)
    assert result.unique_id == str(guid)

    raw = tmp_path / "plain.raw"
    raw.write_bytes(b"\x01" * MiB)
    with open_image(raw) as disk, pytest.raises(UsageError):
        convert(disk, tmp_path / "plain.vhd", keep_id=True)


def test_existing_output_is_refused_unless_forced_and_the_input_never(tmp_path: Path) -> None:
    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(MiB + 512))
    out = tmp_path / "out.vhd"
    out.write_bytes(b"keep me")
    with open_image(src) as disk:
        with pytest.raises(OutputError, match="exists"):
            convert(disk, out)
        assert out.read_bytes() == b"keep me"
        convert(disk, out, force=True)
        check_fixed_vhd(out, MiB + 512)
        with pytest.raises(OutputError, match="input"):
            convert(disk, src, force=True, output_format="raw")
        with pytest.raises(OutputError, match="not a regular file"):
            convert(disk, tmp_path, force=True)
    assert len(src.read_bytes()) == MiB + 512
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw", "out.vhd"]


class FailingDisk(VirtualDisk):
    """A real raw disk whose reads fail past ``fail_at`` with ``error`` (a dying source disk)."""

    format = "raw"
    disk_type = "fixed"

    def __init__(self, inner: VirtualDisk, fail_at: int, error: BaseException) -> None:
        super().__init__()
        self.inner, self.fail_at, self.error = inner, fail_at, error
        self.path, self.virtual_size = inner.path, inner.virtual_size

    def extents(self) -> list[Extent]:
        return self.inner.extents()

    def readinto(self, offset: int, view: memoryview) -> None:
        if offset + len(view) > self.fail_at:
            raise self.error
        self.inner.readinto(offset, view)

    def details(self) -> dict[str, object]:
        return {}


@pytest.mark.parametrize(("error", "raised"), [(KeyboardInterrupt(), KeyboardInterrupt),
                                               (OSError(5, "Input/output error"), ImageError)])
def test_failure_or_ctrl_c_leaves_no_partial_file(tmp_path: Path, error: BaseException,
                                                  raised: type[BaseException]) -> None:
    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(12 * MiB))
    out = tmp_path / "out.vhd"
    with open_image(src) as inner:
        disk = FailingDisk(inner, 9 * MiB, error)
        with pytest.raises(raised) as err:
            convert(disk, out, chunk_size=MiB)
    # A failing source is named (the bare OSError of a read names no file).
    assert raised is KeyboardInterrupt or (str(src) in str(err.value) and "Input/output error" in str(err.value))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]


def test_no_space_is_one_clear_line_and_no_partial_file(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE) makes writes fail with EFBIG like a full disk would."""
    import resource

    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(6 * MiB))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 * MiB, 2 * MiB))

    proc = run_cli_process("convert", str(src), "-o", str(out_dir / "x.vhd"), preexec_fn=limit)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "x.vhd" in lines[0] and "too large" in lines[0], proc.stderr
    assert list(out_dir.iterdir()) == []


def test_cli_json_summary_hashes_and_exit_codes(tmp_path: Path) -> None:
    src, size, _ = random_image(tmp_path, 10, "vhdx")
    out = tmp_path / "cli.vhd"
    proc = run_cli("convert", str(src), "-o", str(out), "--hash", "md5,sha256", "--json")
    assert proc.returncode == 0, proc.stderr
    import json
    summary = json.loads(proc.stdout)
    data = out.read_bytes()
    assert summary["output"] == str(out)
    assert summary["virtual_size"] == align_up(size, MiB) == len(data) - 512
    assert summary["digests"] == {"sparse-sha256": reference_sparse_digest(out),
                                  "md5": hashlib.md5(data).hexdigest(),
                                  "sha256": hashlib.sha256(data).hexdigest()}
    assert 0 < summary["bytes_written"] < len(data) and summary["seconds"] >= 0
    assert summary["bytes_data"] + summary["bytes_skipped"] == len(data)
    plain = run_cli("convert", str(src), "-o", str(tmp_path / "plain.vhd"), "--json")
    plain_summary = json.loads(plain.stdout)  # the parallel copy, not the ordered walk: same digest
    assert plain_summary["digests"] == {"sparse-sha256": reference_sparse_digest(tmp_path / "plain.vhd")}
    assert (tmp_path / "plain.vhd").read_bytes()[:-512] == data[:-512]
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal

    again = run_cli("convert", str(src), "-o", str(out))
    assert again.returncode == 1 and "exists" in again.stderr and len(again.stderr.splitlines()) == 1
    quiet = run_cli("convert", str(src), "-o", str(out), "--force", "--quiet", "--hash", "md5")
    assert quiet.returncode == 0
    assert quiet.stdout.split() == ["md5", hashlib.md5(out.read_bytes()).hexdigest()]
    bad = run_cli("convert", str(src), "-o", str(tmp_path / "y.vhd"), "--hash", "crc7")
    assert bad.returncode == 2 and "crc7" in bad.stderr
    shrink = run_cli("convert", str(src), "-o", str(tmp_path / "y.vhd"), "--size", "1M")
    assert shrink.returncode == 2 and "shrink" in shrink.stderr
    assert not (tmp_path / "y.vhd").exists()
    human = run_cli("convert", str(src), "-o", str(tmp_path / "z.vhd"), "--size", "200MiB")
    assert human.returncode == 0 and "wrote" in human.stdout
    assert (tmp_path / "z.vhd").stat().st_size == 200 * MiB + 512


def test_result_json_has_the_documented_fields(tmp_path: Path) -> None:
    src = tmp_path / "in.raw"
    src.write_bytes(b"\x07" * 4096)
    with open_image(src) as disk:
        result = convert(disk, tmp_path / "o.vhd", hashes=("sha256",))
    assert isinstance(result, ConvertResult)
    assert set(result.to_json()) == {"output", "format", "source", "source_size", "virtual_size", "file_size",
                                     "bytes_written", "bytes_data", "bytes_skipped", "digests", "unique_id",
                                     "seconds", "warnings"}


def test_sigterm_while_converting_cleans_up_like_ctrl_c(tmp_path: Path) -> None:
    import signal

    from vhdtool.cli.convert import terminate_as_interrupt

    src = tmp_path / "in.raw"
    src.write_bytes(os.urandom(3 * MiB))
    out = tmp_path / "out.vhd"

    class TermOnData(ProgressTally):
        def data(self, nbytes: int) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of the walk

    with open_image(src) as disk, pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        convert(disk, out, chunk_size=MiB, progress=TermOnData())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_output_size_is_the_size_written(tmp_path: Path) -> None:
    from vhdtool.jobs.convert import output_size

    src = tmp_path / "in.raw"
    src.write_bytes(b"\x01" * (MiB + 4096))
    with open_image(src) as disk:
        for fmt, size in (("vhd", None), ("vhd", 5 * MiB + 1), ("raw", None), ("raw", 3 * MiB)):
            out = tmp_path / f"{fmt}{size}.out"
            result = convert(disk, out, output_format=fmt, size=size)  # type: ignore[arg-type]
            assert output_size(disk, fmt, size) == result.file_size == out.stat().st_size  # type: ignore[arg-type]
