"""``open_image``: the one entry point from a path (or an opened byte source) to a :class:`VirtualDisk`."""

from __future__ import annotations

import dataclasses
import os

from vhdtool.disk.base import ByteSource, ImageFile, VirtualDisk
from vhdtool.errors import ImageError
from vhdtool.formats.detect import sniff
from vhdtool.formats.parent import OpenOptions
from vhdtool.formats.raw import RawDisk
from vhdtool.formats.vhd.reader import open_vhd
from vhdtool.formats.vhdx.reader import open_vhdx


def open_image(path: str | os.PathLike[str] | ByteSource, *, parent: str | None = None,
               allow_absolute_parent: bool = False) -> VirtualDisk:
    """Open a VHD, VHDX or raw image read-only, resolving differencing parents.

    ``path`` is a file, or a :class:`~vhdtool.disk.base.ByteSource` already opened (a blob: see
    :func:`vhdtool.azure.remote.open_remote`), which the disk then owns. ``parent`` overrides where the
    (first) parent is looked for; ``allow_absolute_parent`` lets the image's absolute parent
    locators be followed outside its folder.
    """
    options = OpenOptions(parent=os.fspath(parent) if parent is not None else None,
                          allow_absolute_parent=allow_absolute_parent, opener=open_with_options)
    if isinstance(path, (str, os.PathLike)):
        return open_with_options(os.fspath(path), options)
    return open_source(path, options)


def open_with_options(path: str, options: OpenOptions) -> VirtualDisk:
    """Open ``path`` with explicit options (used for parents up a chain)."""
    if options.opener is None:
        options = dataclasses.replace(options, opener=open_with_options)
    try:
        image = ImageFile(path)
    except OSError as err:
        raise ImageError(path, "file", None, err.strerror or str(err)) from err
    return open_source(image, options)


def open_source(image: ByteSource, options: OpenOptions) -> VirtualDisk:
    """Read the format of ``image`` and open it; ``image`` is closed if that fails."""
    if options.opener is None:
        options = dataclasses.replace(options, opener=open_with_options)
    try:
        kind = sniff(image)
        if kind == "vhdx":
            return open_vhdx(image, options)
        if kind == "vhd":
            return open_vhd(image, options)
        return RawDisk(image)
    except BaseException:
        image.close()
        raise
