"""The producers matrix: disk images made the way the tools users have make them, and the readers
that judge vhdtool's reading of them.

Each :class:`Case` names a producer and its layout options. :func:`make` builds the image into a
folder and returns a :class:`Made`: what ``vhdtool info`` must report and the oracles that must read
the same bytes as ``vhdtool convert --format raw`` writes. Oracles are qemu-img (``qemu-img compare``
against the raw output, on a replayed copy when the image has a dirty log) and libvhdi (pyvhdi, the
whole chain attached), plus the builder's own model of the bytes where it knows them.

qemu-img makes what it can (every ``create``/``convert`` option that changes the layout, data written
with ``qemu-io``); ``tests/support/vhdx_builder.py`` and ``tests/support/vhd_builder.py`` make the rest (4 KiB
sectors, differencing chains, ``leave_blocks_allocated``, dirty logs, other creators' footers and
dynamic-VHD layout quirks). The default run takes a pairwise cover of qemu's options (every pair of
values meets once, and every subformat × zero-state × size shape) and every builder case; the ``slow``
run adds the rest of qemu's full product.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.oracles import libvhdi_chain
from support.vhd_builder import build_fixed_vhd, build_vhd, footer_bytes, sectors_from_writes
from support.vhdx_builder import (
    FULLY_PRESENT,
    NOT_PRESENT,
    PARTIALLY_PRESENT,
    UNDEFINED,
    UNMAPPED,
    ZERO,
    Block,
    LogWrite,
    bat_sector_update,
    build_vhdx,
    current_data_write_guid,
    write_log,
)
from vhdtool.extents import MiB

KiB = 1024
SECTOR = 512

# qemu-img's layout options: block_size 0 lets qemu choose (8 MiB for disks below 1 GiB).
VHDX_DIMS: dict[str, list[Any]] = {
    "method": ["create", "convert"],
    "subformat": ["fixed", "dynamic"],
    "block_size": [0, 1 * MiB, 2 * MiB, 8 * MiB, 32 * MiB, 256 * MiB],
    "block_state_zero": ["on", "off"],
    "log_size": [1 * MiB, 8 * MiB],
    "shape": ["block", "mib", "4k", "sector"],
}
VPC_DIMS: dict[str, list[Any]] = {
    "method": ["create", "convert"],
    "subformat": ["fixed", "dynamic"],
    "force_size": ["on", "off"],
    "shape": ["block", "mib", "4k", "sector"],
}
QEMU_AUTO_BLOCK = 8 * MiB
VPC_BLOCK = 2 * MiB  # qemu's dynamic VHD block size
# Creators of fixed VHDs: qemu-img trusts the footer's current size for some and the CHS
# geometry for the others; Hyper-V, Azure, VirtualBox and libvhdi always take the current size.
# ``wa\0\0`` is how qemu's sources name Azure's creator, ``CTXS`` is XenConverter.
CREATORS = [b"win ", b"d2v ", b"vbox", b"qem2", b"tap\0", b"wa  ", b"wa\0\0", b"CTXS", b"vpc "]
QEMU_TRUSTS_CURRENT_SIZE = {b"win ", b"d2v ", b"qem2", b"tap\0", b"CTXS"}


@dataclass(frozen=True)
class Case:
    """One image of the matrix: a producer and its options (``id`` is the pytest id)."""

    producer: str
    options: tuple[tuple[str, Any], ...]

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def id(self) -> str:
        def show(value: Any) -> str:
            if isinstance(value, int) and value and value % MiB == 0:
                return f"{value // MiB}M"
            if isinstance(value, bytes):
                return value.decode("latin-1").replace("\0", "0").strip() or "blank"
            if isinstance(value, tuple):
                return "-".join(show(v) for v in value)
            return str(value)
        return self.producer + "[" + ",".join(f"{k}={show(v)}" for k, v in self.options) + "]"


Oracle = Callable[[Path], None]


@dataclass
class Made:
    """A built image, what ``info`` must say of it, and who checks ``convert --format raw``."""

    path: Path
    fmt: str
    disk_type: str
    virtual_size: int
    logical: int = 512
    physical: int = 512
    log: str | None = None
    block_size: int | None = None  # VHDX file parameters
    oracles: dict[str, Oracle] = field(default_factory=dict)
    expected: bytes | None = None  # the builder's model of the disk


# ---------------------------------------------------------------------------------------------------
# Generation


def pairwise(dims: dict[str, list[Any]], also: Sequence[tuple[str, ...]] = ()) -> list[dict[str, Any]]:
    """A small set of rows in which every pair of values of two dimensions occurs, and every
    combination of the dimensions grouped in ``also`` (greedy, in a fixed order)."""
    names = list(dims)
    groups = [*itertools.combinations(names, 2), *also]

    def combos(row: dict[str, Any]) -> set[tuple[tuple[str, Any], ...]]:
        return {tuple((n, row[n]) for n in group) for group in groups if all(n in row for n in group)}

    todo = {tuple(zip(group, values, strict=True))
            for group in groups for values in itertools.product(*(dims[n] for n in group))}
    rows: list[dict[str, Any]] = []
    while todo:
        seed = min(todo, key=lambda c: (len(c), [names.index(n) for n, _ in c], repr(c)))
        row: dict[str, Any] = dict(seed)
        for name in names:
            if name not in row:
                row[name] = max(dims[name], key=lambda v: len(combos({**row, name: v}) & todo))
        rows.append({n: row[n] for n in names})
        todo -= combos(row)
    return rows


# Where readers have gone wrong: how the last block ends depends on all three together.
ALSO = {"qemu-vhdx": [("subformat", "block_state_zero", "shape")], "qemu-vpc": [("subformat", "force_size", "shape")]}


def _qemu_cases(producer: str, dims: dict[str, list[Any]], slow: bool) -> list[Case]:
    default = [tuple(row.items()) for row in pairwise(dims, ALSO[producer])]
    if not slow:
        return [Case(producer, opts) for opts in default]
    every = [tuple(zip(dims, values, strict=True)) for values in itertools.product(*dims.values())]
    return [Case(producer, opts) for opts in every if opts not in default]


def builder_cases() -> list[Case]:
    """What qemu-img cannot make, each once."""
    cases = [Case("builder-vhdx", (("sectors", sectors), ("layout", layout)))
             for sectors in [(512, 512), (512, 4096), (4096, 4096)]
             for layout in ["dynamic", "fixed", "fixed-truncated"]]
    cases += [Case("builder-vhdx-chain", (("logical", logical), ("physical", physical)))
              for logical, physical in [(512, (512, 4096, 512)), (512, (4096, 512, 4096)), (4096, (4096, 512))]]
    cases += [Case("qemu-base-builder-child", (("base", base), ("child_block", child_block)))
              for base, child_block in [("dynamic", 2 * MiB), ("fixed", 1 * MiB)]]
    cases += [Case("builder-vhdx-log", (("log_size", log_size),)) for log_size in [1 * MiB, 4 * MiB]]
    cases += [Case("builder-fixed-vhd", (("creator", creator),)) for creator in CREATORS]
    cases += [Case("builder-dynamic-vhd", (("quirk", quirk),))
              for quirk in ["none", "no-footer-copy", "stale-footer-copy", "truncated-last-block"]]
    return cases


def matrix(slow: bool = False) -> list[Case]:
    """The default matrix, or (``slow``) the cases only the wider run adds."""
    qemu = _qemu_cases("qemu-vhdx", VHDX_DIMS, slow) + _qemu_cases("qemu-vpc", VPC_DIMS, slow)
    return qemu if slow else qemu + builder_cases()


# ---------------------------------------------------------------------------------------------------
# Sizes and data


def shaped_size(shape: str, block: int) -> int:
    """A small size that is a multiple of the block size ("block"), else of 1 MiB ("mib"), else of
    4 KiB ("4k"), else only of 512 bytes ("sector")."""
    base = (2 if block <= 8 * MiB else 1) * block
    extra = {"block": 0, "mib": 3 * MiB, "4k": 3 * MiB + 20 * KiB, "sector": 3 * MiB + 20 * KiB + 1536}[shape]
    return base + extra


def plan_writes(seed: str, size: int, block: int) -> list[tuple[int, int, int]]:
    """``(offset, length, pattern byte)`` writes: the first and last sectors, a block boundary
    straddled, a few random runs (all 512-byte aligned, inside the disk)."""
    rnd = random.Random(seed)
    writes = [(0, 4 * KiB, 0x11), (size - SECTOR, SECTOR, 0x22)]
    if block + 4 * KiB < size:
        writes.append((block - 2 * KiB, 4 * KiB, 0x33))
    for _ in range(3):
        length = rnd.randrange(1, 129) * SECTOR
        offset = rnd.randrange(0, (size - length) // SECTOR + 1) * SECTOR
        writes.append((offset, length, rnd.randrange(0x40, 0xFF)))
    return writes


def _qemu(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def _qemu_io(path: Path, fmt: str, writes: Iterable[tuple[int, int, int]]) -> None:
    commands: list[str] = []
    for offset, length, pattern in writes:
        commands += ["-c", f"write -P {pattern} {offset} {length}"]
    proc = subprocess.run(["qemu-io", "-f", fmt, *commands, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "error" not in proc.stdout.lower(), proc.stdout + proc.stderr


def _raw_with(path: Path, size: int, writes: Iterable[tuple[int, int, int]]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length, pattern in writes:
            f.seek(offset)
            f.write(bytes([pattern]) * length)


def qemu_info(path: Path | str, fmt: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_qemu("info", "-f", fmt, "--output=json", str(path)))
    return result


# ---------------------------------------------------------------------------------------------------
# Oracles


def qemu_compare(image: Path, fmt: str | None = None, image_opts: str | None = None) -> Oracle:
    """``qemu-img compare`` of the raw output with ``image`` read by qemu (sizes are checked apart)."""
    def check(raw: Path) -> None:
        if image_opts is not None:
            args = ["compare", "--image-opts", f"driver=raw,file.filename={raw}", image_opts]
        else:
            assert fmt is not None
            args = ["compare", "-f", "raw", "-F", fmt, str(raw), str(image)]
        proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
        assert proc.returncode == 0, f"qemu-img {' '.join(args)}: {proc.stdout.strip()} {proc.stderr.strip()}"
    return check


def qemu_replayed_compare(image: Path) -> Oracle:
    """qemu replays a VHDX log only when it may write: compare with a copy that ``check -r all`` replayed."""
    def check(raw: Path) -> None:
        copy = image.with_name("qemu-replayed-" + image.name)
        shutil.copyfile(image, copy)
        proc = subprocess.run(["qemu-img", "check", "-r", "all", str(copy)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert qemu_info(copy, "vhdx")["virtual-size"] == raw.stat().st_size
        qemu_compare(copy, "vhdx")(raw)
    return check


def libvhdi_compare(chain: Sequence[Path]) -> Oracle:
    """libvhdi (pyvhdi) reading the last image of ``chain`` with every parent attached."""
    def check(raw: Path) -> None:
        with libvhdi_chain(chain) as top:
            size = raw.stat().st_size
            assert top.get_media_size() == size, (top.get_media_size(), size)
            with open(raw, "rb") as out:
                for offset in range(0, size, 4 * MiB):
                    n = min(4 * MiB, size - offset)
                    ours = out.read(n)
                    theirs = top.read_buffer_at_offset(n, offset)
                    if ours != theirs:
                        at = next(i for i in range(n) if ours[i] != theirs[i])
                        raise AssertionError(f"libvhdi reads other bytes at offset {offset + at}")
    return check


# ---------------------------------------------------------------------------------------------------
# Producers


def _make_qemu_vhdx(case: Case, folder: Path) -> Made:
    o = case.opts
    block = o["block_size"] or QEMU_AUTO_BLOCK
    size = shaped_size(o["shape"], block)
    path = folder / "qemu.vhdx"
    options = (f"subformat={o['subformat']},block_size={o['block_size']},"
               f"block_state_zero={o['block_state_zero']},log_size={o['log_size']}")
    writes = plan_writes(case.id, size, block)
    if o["method"] == "create":
        _qemu("create", "-q", "-f", "vhdx", "-o", options, str(path), str(size))
        _qemu_io(path, "vhdx", writes)
    else:
        source = folder / "source.raw"
        _raw_with(source, size, writes)
        _qemu("convert", "-q", "-f", "raw", "-O", "vhdx", "-o", options, str(source), str(path))
    info = qemu_info(path, "vhdx")
    assert info["cluster-size"] == block
    return Made(path, "vhdx", o["subformat"], info["virtual-size"], block_size=block, log="clean",
                oracles={"qemu-img": qemu_compare(path, "vhdx"), "libvhdi": libvhdi_compare([path])})


def _make_qemu_vpc(case: Case, folder: Path) -> Made:
    o = case.opts
    size = shaped_size(o["shape"], VPC_BLOCK)
    path = folder / "qemu.vhd"
    options = f"subformat={o['subformat']},force_size={o['force_size']}"
    if o["method"] == "create":
        _qemu("create", "-q", "-f", "vpc", "-o", options, str(path), str(size))
        actual = qemu_info(path, "vpc")["virtual-size"]  # without force_size: rounded up to a CHS geometry
        _qemu_io(path, "vpc", plan_writes(case.id, actual, VPC_BLOCK))
    else:
        source = folder / "source.raw"
        _raw_with(source, size, plan_writes(case.id, size, VPC_BLOCK))
        _qemu("convert", "-q", "-f", "raw", "-O", "vpc", "-o", options, str(source), str(path))
    return Made(path, "vhd", o["subformat"], qemu_info(path, "vpc")["virtual-size"],
                oracles={"qemu-img": qemu_compare(path, "vpc"), "libvhdi": libvhdi_compare([path])})


def _pattern(rnd: random.Random, length: int) -> bytes:
    """Distinct, cheap content: a random 4 KiB run repeated (a reader reading the wrong block shows)."""
    return (rnd.randbytes(4 * KiB) * (-(-length // (4 * KiB))))[:length]


def model(blocks: dict[int, Block], size: int, block_size: int, sector: int, parent: bytes | None) -> bytes:
    """The bytes a VHDX holds by [MS-VHDX] 2.5.1: over ``parent`` for a differencing disk."""
    out = bytearray(parent if parent is not None else bytes(size))
    for number, spec in blocks.items():
        base = number * block_size
        end = min(base + block_size, size)
        if spec.state == FULLY_PRESENT:
            out[base:end] = spec.data[:end - base]
        elif spec.state == PARTIALLY_PRESENT:
            assert spec.present is not None
            for i, present in enumerate(spec.present):
                lo = base + i * sector
                if present and lo < end:
                    out[lo:lo + sector] = spec.data[i * sector:(i + 1) * sector]
        elif spec.state == ZERO or parent is None:
            out[base:end] = bytes(end - base)
    return bytes(out)


def _make_builder_vhdx(case: Case, folder: Path) -> Made:
    o = case.opts
    logical, physical = o["sectors"]
    layout = o["layout"]
    rnd = random.Random(case.id)
    block_size = 1 * MiB
    size = 6 * MiB - 3 * 4096
    count = -(-size // block_size)
    if layout == "dynamic":
        states = {0: FULLY_PRESENT, 1: NOT_PRESENT, 2: ZERO, 3: UNDEFINED, 4: UNMAPPED, 5: FULLY_PRESENT}
    else:
        states = dict.fromkeys(range(count), FULLY_PRESENT)
    blocks = {n: Block(state, _pattern(rnd, block_size) if state == FULLY_PRESENT else b"")
              for n, state in states.items()}
    built = build_vhdx(folder / "built.vhdx", size, block_size=block_size, logical_sector_size=logical,
                       physical_sector_size=physical, blocks=blocks,
                       leave_blocks_allocated=layout != "dynamic", truncate_last=layout == "fixed-truncated")
    path = Path(built.path)
    oracles = {"libvhdi": libvhdi_compare([path])}
    if logical == 512:  # qemu-img 7.2 opens only 512-byte logical sectors
        oracles["qemu-img"] = qemu_compare(path, "vhdx")
    return Made(path, "vhdx", "dynamic" if layout == "dynamic" else "fixed", size, logical, physical,
                log="clean", block_size=block_size, oracles=oracles,
                expected=model(blocks, size, block_size, logical, None))


def _linkage(guid: uuid.UUID) -> str:
    return "{" + str(guid) + "}"  # as Hyper-V writes it (libvhdi needs the braces)


def _child_blocks(rnd: random.Random, count: int, block_size: int, sector: int) -> dict[int, Block]:
    """NOT_PRESENT, FULLY_PRESENT and PARTIALLY_PRESENT blocks: the states libvhdi reads as the spec does."""
    blocks: dict[int, Block] = {}
    for n in range(count):
        state = rnd.choice([NOT_PRESENT, FULLY_PRESENT, PARTIALLY_PRESENT])
        if state == FULLY_PRESENT:
            blocks[n] = Block(state, _pattern(rnd, block_size))
        elif state == PARTIALLY_PRESENT:
            present = [rnd.random() < 0.4 for _ in range(block_size // sector)]
            blocks[n] = Block(state, _pattern(rnd, block_size), present)
    return blocks


def _make_chain(case: Case, folder: Path) -> Made:
    """A base and children whose physical sector sizes differ level by level (Hyper-V allows it)."""
    o = case.opts
    logical, physicals = o["logical"], o["physical"]
    rnd = random.Random(case.id)
    block_size = 1 * MiB
    size = 5 * MiB - 2 * 4096
    count = -(-size // block_size)
    base_blocks = {n: Block(FULLY_PRESENT, _pattern(rnd, block_size)) for n in range(count) if rnd.random() < 0.6}
    built = [build_vhdx(folder / "level0.vhdx", size, block_size=block_size, logical_sector_size=logical,
                        physical_sector_size=physicals[0], blocks=base_blocks)]
    expected = model(base_blocks, size, block_size, logical, None)
    for level, physical in enumerate(physicals[1:], start=1):
        blocks = _child_blocks(rnd, count, block_size, logical)
        parent = built[-1]
        built.append(build_vhdx(folder / f"level{level}.vhdx", size, block_size=block_size,
                                logical_sector_size=logical, physical_sector_size=physical, blocks=blocks,
                                parent_locator={"parent_linkage": _linkage(parent.data_write_guid),
                                                "relative_path": ".\\" + Path(parent.path).name}))
        expected = model(blocks, size, block_size, logical, expected)
    chain = [Path(b.path) for b in built]
    return Made(chain[-1], "vhdx", "differencing", size, logical, physicals[-1], log="clean",
                block_size=block_size, oracles={"libvhdi": libvhdi_compare(chain)}, expected=expected)


def _make_qemu_base_child(case: Case, folder: Path) -> Made:
    """A base qemu-img made (dynamic with qemu's own block size, or the fixed unaligned shape) under
    a builder child with another block size and a 4 KiB physical sector (qemu writes 512)."""
    o = case.opts
    size = 5 * MiB + 3 * KiB
    base = folder / "base.vhdx"
    options = "subformat=fixed,block_state_zero=off" if o["base"] == "fixed" else "subformat=dynamic"
    _qemu("create", "-q", "-f", "vhdx", "-o", options, str(base), str(size))
    _qemu_io(base, "vhdx", plan_writes(case.id, size, QEMU_AUTO_BLOCK) + [(MiB, 2 * MiB, 0x5A)])
    raw_base = folder / "base.raw"
    _qemu("convert", "-q", "-f", "vhdx", "-O", "raw", str(base), str(raw_base))
    rnd = random.Random(case.id)
    block_size = o["child_block"]
    blocks = _child_blocks(rnd, -(-size // block_size), block_size, 512)
    child = build_vhdx(folder / "child.vhdx", size, block_size=block_size, physical_sector_size=4096,
                       blocks=blocks, parent_locator={"parent_linkage": _linkage(current_data_write_guid(base)),
                                                      "relative_path": ".\\base.vhdx"})
    path = Path(child.path)
    return Made(path, "vhdx", "differencing", size, 512, 4096, log="clean", block_size=block_size,
                oracles={"libvhdi": libvhdi_compare([base, path])},
                expected=model(blocks, size, block_size, 512, raw_base.read_bytes()))


def _make_log(case: Case, folder: Path) -> Made:
    """A dirty log (a disk copied while attached): a BAT update mapping a block onto data in free
    space, a payload sector rewritten and a zero descriptor, replayed in memory."""
    rnd = random.Random(case.id)
    size = 8 * MiB
    block1 = _pattern(rnd, MiB)
    built = build_vhdx(folder / "dirty.vhdx", size, blocks={1: Block(FULLY_PRESENT, block1)}, spare=2 * MiB,
                       log_length=case.opts["log_size"])
    spare = built.end - 2 * MiB
    mapped = _pattern(rnd, MiB)
    rewritten = rnd.randbytes(4 * KiB)
    with open(built.path, "r+b") as f:
        f.seek(spare)
        f.write(mapped)
    entries = [bat_sector_update(built, {3: FULLY_PRESENT | spare}),
               [LogWrite(built.block_offsets[1] + 8 * KiB, rewritten),
                LogWrite(built.block_offsets[1] + 64 * KiB, zero_length=3 * 4 * KiB)]]
    write_log(built, entries)
    expected = bytearray(size)
    expected[MiB:2 * MiB] = block1
    expected[MiB + 8 * KiB:MiB + 12 * KiB] = rewritten
    expected[MiB + 64 * KiB:MiB + 76 * KiB] = bytes(12 * KiB)
    expected[3 * MiB:4 * MiB] = mapped
    path = Path(built.path)
    return Made(path, "vhdx", "dynamic", size, log="dirty", block_size=MiB,
                oracles={"qemu-img (replayed)": qemu_replayed_compare(path)}, expected=bytes(expected))


def _make_fixed_vhd(case: Case, folder: Path) -> Made:
    creator = case.opts["creator"]
    size = 5 * MiB + 1536  # not what the footer's geometry multiplies out to
    rnd = random.Random(case.id)
    writes = [(offset, bytes([pattern]) * length) for offset, length, pattern in plan_writes(case.id, size, 2 * MiB)]
    writes.append((2 * MiB, rnd.randbytes(64 * KiB)))
    path = folder / "fixed.vhd"
    expected = build_fixed_vhd(path, size, writes, creator=creator)
    oracles = {"libvhdi": libvhdi_compare([path]),
               "qemu-img (current size)": qemu_compare(
                   path, image_opts=f"driver=vpc,force_size_calc=current_size,file.filename={path}")}
    if creator in QEMU_TRUSTS_CURRENT_SIZE:
        oracles["qemu-img"] = qemu_compare(path, "vpc")
    return Made(path, "vhd", "fixed", size, oracles=oracles, expected=expected)


def _make_dynamic_vhd(case: Case, folder: Path) -> Made:
    """Dynamic VHD layouts qemu-img never writes: no footer copy, a stale copy, a short last block."""
    quirk = case.opts["quirk"]
    block_size = 2 * MiB
    size = 5 * MiB + 1536
    writes = [(offset, bytes([pattern]) * length) for offset, length, pattern in plan_writes(case.id, size, block_size)]
    sectors = sectors_from_writes(writes)
    path = folder / "dynamic.vhd"
    layout = build_vhd(path, size, sectors, block_size=block_size, fill=0, creator=b"win ",
                       footer_copy=quirk != "no-footer-copy", truncate_last=quirk == "truncated-last-block")
    if quirk == "stale-footer-copy":  # a valid copy from an earlier save: other timestamp, same disk
        with open(path, "r+b") as f:
            f.write(footer_bytes(size=size, disk_type=3, data_offset=layout.header_offset,
                                 unique_id=layout.unique_id, timestamp=12345, creator=b"win "))
    expected = bytearray(size)
    for offset, data in writes:
        expected[offset:offset + len(data)] = data
    oracles = {"libvhdi": libvhdi_compare([path])}
    if quirk in ("none", "stale-footer-copy"):  # qemu refuses the other two (docs/formats.md)
        oracles["qemu-img"] = qemu_compare(path, "vpc")
    return Made(path, "vhd", "dynamic", size, oracles=oracles, expected=bytes(expected))


PRODUCERS: dict[str, Callable[[Case, Path], Made]] = {
    "qemu-vhdx": _make_qemu_vhdx,
    "qemu-vpc": _make_qemu_vpc,
    "builder-vhdx": _make_builder_vhdx,
    "builder-vhdx-chain": _make_chain,
    "qemu-base-builder-child": _make_qemu_base_child,
    "builder-vhdx-log": _make_log,
    "builder-fixed-vhd": _make_fixed_vhd,
    "builder-dynamic-vhd": _make_dynamic_vhd,
}


def make(case: Case, folder: Path) -> Made:
    """Build ``case`` into ``folder``."""
    return PRODUCERS[case.producer](case, folder)


def chs_size(path: Path) -> int:
    """The size the footer's CHS geometry multiplies out to (what qemu-img reads for creators it does not trust)."""
    with open(path, "rb") as f:
        f.seek(-SECTOR, os.SEEK_END)
        cylinders, heads, spt = struct.unpack(">HBB", f.read(SECTOR)[56:60])
    return int(cylinders * heads * spt * SECTOR)
