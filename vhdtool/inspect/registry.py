"""Offline reading of Windows registry hives held in memory.

The base block is parsed and validated here (``registry_layout.py``); keys and values are read with
``dissect.regf``, an AGPL-3.0 library kept behind the ``vhdtool[inspect]`` extra and imported only
when a hive is opened. Every failure of that library on a damaged hive is turned into an
:class:`~vhdtool.errors.ImageError` naming the hive, so callers deal with one exception type.

Work-around noted: dissect.regf 3.14 sets ``RegistryHive.dirty`` when the checksum *matches*
(inverted test) and never looks at the transaction logs; we check both ourselves.
"""

from __future__ import annotations

import importlib.util
import io
import struct
from dataclasses import dataclass
from typing import Any, TypeAlias

from construct import ConstructError

from vhdtool.errors import ImageError
from vhdtool.inspect.registry_layout import BASE_BLOCK_SIZE, CHECKSUMMED_SIZE, BaseBlock

REGF_SIGNATURE = b"regf"
REGF_MAJOR_VERSION = 1
FILE_TYPE_PRIMARY = 0
HBIN_SIGNATURE = b"hbin"

# Value types (winnt.h REG_*).
REG_SZ = 1
REG_EXPAND_SZ = 2
REG_BINARY = 3
REG_DWORD = 4
REG_MULTI_SZ = 7
REG_QWORD = 11

RegData: TypeAlias = int | str | list[str] | bytes


def regf_available() -> bool:
    """Whether the optional ``dissect.regf`` reader is installed (``pip install vhdtool[inspect]``)."""
    try:
        return importlib.util.find_spec("dissect.regf") is not None
    except (ImportError, ValueError):
        return False


def base_block_checksum(block: bytes) -> int:
    """XOR-32 of the first 508 bytes (spec "Base block": 0 becomes 1, 0xFFFFFFFF becomes 0xFFFFFFFE)."""
    value = 0
    for (word,) in struct.iter_unpack("<I", block[:CHECKSUMMED_SIZE]):
        value ^= word
    if value == 0xFFFFFFFF:
        return 0xFFFFFFFE
    return value or 1


@dataclass(frozen=True)
class HiveHeader:
    """The validated base block of a hive or of one of its transaction logs."""

    primary_sequence_number: int
    secondary_sequence_number: int
    major_version: int
    minor_version: int
    file_type: int
    root_cell_offset: int
    hive_bins_data_size: int
    file_name: str
    checksum_valid: bool

    @property
    def in_transaction(self) -> bool:
        """A write was started and not finished: the primary file may be older than its logs."""
        return self.primary_sequence_number != self.secondary_sequence_number


def parse_base_block(data: bytes, path: str) -> HiveHeader:
    """Parse the base block at the start of ``data`` (a hive or a ``.LOG1``/``.LOG2`` file).

    Raises :class:`ImageError` when the block is short, the signature is not ``regf`` or the major
    version is not 1. A bad checksum is reported in ``checksum_valid``, not raised: Windows itself
    then falls back to the logs, and the values are usually still readable.
    """
    if len(data) < BASE_BLOCK_SIZE:
        raise ImageError(path, "registry base block", 0,
                         f"file is {len(data)} bytes, shorter than the {BASE_BLOCK_SIZE}-byte base block")
    try:
        raw = BaseBlock.parse(data[: BaseBlock.sizeof()])
    except ConstructError as err:  # pragma: no cover - fixed-size parse of enough bytes
        raise ImageError(path, "registry base block", 0, str(err)) from err
    if raw.signature != REGF_SIGNATURE:
        raise ImageError(path, "registry base block", 0, f"signature {bytes(raw.signature)!r} is not b'regf'")
    if raw.major_version != REGF_MAJOR_VERSION:
        raise ImageError(path, "registry base block", 20,
                         f"major version {raw.major_version} is not {REGF_MAJOR_VERSION}")
    name = bytes(raw.file_name).decode("utf-16-le", "replace").split("\x00", 1)[0]
    return HiveHeader(
        primary_sequence_number=raw.primary_sequence_number,
        secondary_sequence_number=raw.secondary_sequence_number,
        major_version=raw.major_version,
        minor_version=raw.minor_version,
        file_type=raw.file_type,
        root_cell_offset=raw.root_cell_offset,
        hive_bins_data_size=raw.hive_bins_data_size,
        file_name=name,
        checksum_valid=base_block_checksum(data) == raw.checksum,
    )


@dataclass(frozen=True)
class RegValue:
    """One registry value as read from a hive."""

    key: str  # backslash-separated path below the hive root
    name: str
    type: int  # REG_* constant
    data: RegData

    @property
    def source(self) -> str:
        """``key\\name``, the way evidence names a value."""
        return f"{self.key}\\{self.name}"

    def as_text(self) -> str | None:
        """The value as a string, for string types (first string of a REG_MULTI_SZ); else ``None``."""
        if isinstance(self.data, str):
            return self.data.rstrip("\x00")
        if isinstance(self.data, list):
            return self.data[0] if self.data else ""
        return None

    def as_int(self) -> int | None:
        """The value as an integer (REG_DWORD / REG_QWORD, or a decimal string); else ``None``."""
        if isinstance(self.data, int):
            return self.data
        text = self.as_text()
        if text is not None and text.strip().isdigit():
            return int(text.strip())
        return None

    def display(self) -> str:
        """A short printable form of the data for evidence."""
        if isinstance(self.data, bytes):
            return self.data[:32].hex() + ("..." if len(self.data) > 32 else "")
        if isinstance(self.data, list):
            return "; ".join(self.data)
        return str(self.data)


class Hive:
    """A registry hive read from bytes; lookups are case-insensitive like Windows'.

    ``path`` is where the hive lives inside the image and only names it in errors and evidence.
    """

    def __init__(self, data: bytes, path: str) -> None:
        self.path = path
        self.header = parse_base_block(data, path)
        if self.header.file_type != FILE_TYPE_PRIMARY:
            raise ImageError(path, "registry base block", 28,
                             f"file type {self.header.file_type} is a transaction log, not a primary hive")
        bins_end = BASE_BLOCK_SIZE + self.header.hive_bins_data_size
        if self.header.hive_bins_data_size == 0 or bins_end > len(data):
            raise ImageError(path, "registry base block", 40,
                             f"hive bins data size {self.header.hive_bins_data_size} does not fit the "
                             f"{len(data)}-byte file")
        if data[BASE_BLOCK_SIZE:BASE_BLOCK_SIZE + 4] != HBIN_SIGNATURE:
            raise ImageError(path, "registry hive bin", BASE_BLOCK_SIZE,
                             "first hive bin has no 'hbin' signature")
        if self.header.root_cell_offset >= self.header.hive_bins_data_size:
            raise ImageError(path, "registry base block", 36,
                             f"root cell offset {self.header.root_cell_offset} lies outside the hive bins")
        try:
            from dissect.regf import RegistryHive
        except ImportError as err:
            raise ImageError(path, "registry hive", None, "reading registry hives needs the optional "
                             "extra: pip install vhdtool[inspect]") from err
        try:
            self._hive: Any = RegistryHive(io.BytesIO(data))
        except Exception as err:  # the library's own errors, struct.error, EOFError, ...: a damaged hive
            raise ImageError(path, "registry root key", BASE_BLOCK_SIZE + self.header.root_cell_offset,
                             f"cannot read: {err!r}") from err

    def _key(self, key: str) -> Any | None:
        from dissect.regf import RegistryKeyNotFoundError

        try:
            return self._hive.open(key)
        except RegistryKeyNotFoundError:
            return None
        except Exception as err:  # damaged cells, loops in index roots (RecursionError), ...
            raise ImageError(self.path, f"registry key {key}", None, f"cannot read: {err!r}") from err

    def has_key(self, key: str) -> bool:
        """Whether ``key`` (backslash-separated, below the root) exists."""
        return self._key(key) is not None

    def subkey_names(self, key: str) -> list[str] | None:
        """Names of the subkeys of ``key``, or ``None`` if it does not exist."""
        node = self._key(key)
        if node is None:
            return None
        try:
            return [str(sub.name) for sub in node.subkeys()]
        except Exception as err:
            raise ImageError(self.path, f"registry key {key}", None, f"cannot list subkeys: {err!r}") from err

    def value(self, key: str, name: str) -> RegValue | None:
        """The value ``name`` of ``key``, or ``None`` if the key or the value does not exist."""
        from dissect.regf import RegistryValueNotFoundError

        node = self._key(key)
        if node is None:
            return None
        try:
            found = node.value(name)
            data: RegData = found.value
            return RegValue(key=key, name=str(found.name), type=int(found.type), data=data)
        except RegistryValueNotFoundError:
            return None
        except Exception as err:
            raise ImageError(self.path, f"registry value {key}\\{name}", None,
                             f"cannot read: {err!r}") from err

    def values(self, key: str, limit: int = 4096) -> list[RegValue] | None:
        """The first ``limit`` values of ``key``, or ``None`` if it does not exist."""
        node = self._key(key)
        if node is None:
            return None
        found: list[RegValue] = []
        try:
            for item in node.values():
                if len(found) >= limit:
                    break
                found.append(RegValue(key=key, name=str(item.name), type=int(item.type), data=item.value))
        except Exception as err:
            raise ImageError(self.path, f"registry key {key}", None, f"cannot list values: {err!r}") from err
        return found
