"""Tell what an image file is from its magic numbers, naming the formats we refuse.

Order matters: VHDX has its identifier at offset 0; a VHD has its footer at the end (and a
dynamic or differencing VHD a copy at offset 0); anything unrecognised is a raw image.
"""

from __future__ import annotations

import os

from vhdtool.disk.base import ByteSource
from vhdtool.errors import UnsupportedImageError
from vhdtool.formats.vhd.layout import FOOTER_SIZE, VHD_COOKIE
from vhdtool.formats.vhdx.layout import FILE_SIGNATURE as VHDX_SIGNATURE
from vhdtool.units import SECTOR_SIZE

# (magic, offset, name, advice) for files we recognise and refuse. The advice goes through a raw
# image, which vhdtool then converts: the one route that always ends Azure-ready (a VHD written by
# another tool is fixed but often not a whole number of MiB).
_THEN = " (then: vhdtool convert OUT.raw OUT.vhd)"
_VMDK = "convert it first: qemu-img convert -f vmdk -O raw IN OUT.raw" + _THEN
_VDI = ("convert it first: qemu-img convert -f vdi -O raw IN OUT.raw, or VBoxManage clonemedium IN OUT.raw "
        "--format RAW" + _THEN)
_REFUSED: list[tuple[bytes, int, str, str]] = [
    (b"QFI\xfb", 0, "a QEMU qcow2 image", "convert it first: qemu-img convert -f qcow2 -O raw IN OUT.raw" + _THEN),
    (b"KDMV", 0, "a VMware VMDK (sparse extent)", _VMDK),
    (b"COWD", 0, "a VMware VMDK (ESX sparse extent)", _VMDK),
    (b"# Disk DescriptorFile", 0, "a VMware VMDK descriptor", _VMDK),
    (b"\x7f\x10\xda\xbe", 0x40, "a VirtualBox VDI image", _VDI),
    (b"\xfd7zXZ\x00", 0, "an xz-compressed file", "decompress it first: xz -dk FILE"),
    (b"\x1f\x8b", 0, "a gzip-compressed file", "decompress it first: gzip -dk FILE"),
    (b"\x28\xb5\x2f\xfd", 0, "a zstd-compressed file", "decompress it first: zstd -d FILE"),
    (b"BZh", 0, "a bzip2-compressed file", "decompress it first: bzip2 -dk FILE"),
    (b"PK\x03\x04", 0, "a zip archive", "extract the disk image from it first: unzip FILE"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive", "extract the disk image from it first: 7z x FILE"),
]


def sniff(image: ByteSource) -> str:
    """Return ``"vhdx"``, ``"vhd"`` or ``"raw"``; raise :class:`UnsupportedImageError` for refused formats."""
    head = image.pread(0, min(image.size, SECTOR_SIZE), "file header")
    if head.startswith(VHDX_SIGNATURE):
        return "vhdx"
    if image.size >= FOOTER_SIZE and image.pread(image.size - FOOTER_SIZE, 8, "VHD footer") == VHD_COOKIE:
        return "vhd"
    # A few old tools wrote a 511-byte footer on fixed VHDs.
    if image.size >= FOOTER_SIZE - 1 and image.pread(image.size - FOOTER_SIZE + 1, 8, "VHD footer") == VHD_COOKIE:
        return "vhd"
    # A dynamic VHD whose footer at the end is damaged still has its copy at offset 0.
    if head.startswith(VHD_COOKIE):
        return "vhd"
    name = os.path.basename(image.path)
    for magic, offset, what, advice in _REFUSED:
        if head[offset:offset + len(magic)] == magic:
            raise UnsupportedImageError(f"{image.path}: {name} is {what}, which vhdtool does not read; {advice}")
    if head.startswith(b"<<< ") and b"VirtualBox Disk Image" in head[:64]:
        raise UnsupportedImageError(f"{image.path}: {name} is a VirtualBox VDI image, which vhdtool does not read; "
                                    f"{_VDI}")
    return "raw"
