"""Sizes every layer speaks in, defined once: binary units and the 512-byte sector.

The sector is the unit of the VHD format (its footer, bitmaps and BAT count 512-byte sectors) and
of Azure page blobs (512-byte pages), so one name serves both.
"""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
PiB = 1 << 50
SECTOR_SIZE = 512
