"""The Boot Configuration Data store: where it is and the serial-console settings it holds.

A BCD store is a registry hive (``/EFI/Microsoft/Boot/BCD`` on the EFI System Partition, ``/Boot/BCD``
on the BIOS system partition). Each object is ``Objects\\{GUID}``; each setting is
``Elements\\<type>`` with its data in the value ``Element``: booleans and integers as little-endian
binary, objects as a GUID string. Element types are Microsoft's ``BcdLibraryElementTypes`` and
``BcdOSLoaderElementTypes``; the well-known GUIDs are those bcdedit names ``{bootmgr}`` and
``{emssettings}``.
"""

from __future__ import annotations

from vhdtool.errors import VhdtoolError
from vhdtool.inspect.registry import Hive, regf_available
from vhdtool.inspect.windows_readiness import BcdSettings

BCD_PATHS = ("/EFI/Microsoft/Boot/BCD", "/Boot/BCD")
MAX_BCD_SIZE = 32 << 20
BOOTMGR = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}"
EMS_SETTINGS = "{0ce4991b-e6b3-4b16-b23c-5e0d9250e5d9}"
DEFAULT_OBJECT = "23000003"  # BcdBootMgrObject_DefaultObject
LIBRARY_EMS_ENABLED = "16000020"  # BcdLibraryBoolean_EmsEnabled (bcdedit bootems)
LIBRARY_EMS_PORT = "15000022"
LIBRARY_EMS_BAUD_RATE = "15000023"
OSLOADER_EMS_ENABLED = "260000b0"  # bcdedit /ems {id} ON
OSLOADER_BOOT_STATUS_POLICY = "250000e0"


def _element(hive: Hive, guid: str, element: str) -> int | str | None:
    value = hive.value(f"Objects\\{guid}\\Elements\\{element}", "Element")
    if value is None:
        return None
    if isinstance(value.data, bytes):
        return int.from_bytes(value.data[:8], "little") if value.data else None
    if isinstance(value.data, int):
        return value.data
    return value.as_text()


def read_bcd(data: bytes, where: str) -> BcdSettings:
    """The settings of the BCD store in ``data`` (read from ``where``); damage is reported in ``problem``."""
    if not regf_available():
        return BcdSettings(where, None, None, None, None, None, None,
                           "reading the BCD store needs the optional extra: pip install 'vhdtool[inspect]'")
    try:
        hive = Hive(data, where)
        default = _element(hive, BOOTMGR, DEFAULT_OBJECT)
        default_id = default.strip().lower() if isinstance(default, str) else None

        def flag(guid: str | None, element: str) -> bool | None:
            got = _element(hive, guid, element) if guid else None
            return bool(got) if isinstance(got, int) else None

        def number(guid: str | None, element: str) -> int | None:
            got = _element(hive, guid, element) if guid else None
            return got if isinstance(got, int) else None

        return BcdSettings(where, default_id, flag(BOOTMGR, LIBRARY_EMS_ENABLED),
                           flag(default_id, OSLOADER_EMS_ENABLED), number(EMS_SETTINGS, LIBRARY_EMS_PORT),
                           number(EMS_SETTINGS, LIBRARY_EMS_BAUD_RATE),
                           number(default_id, OSLOADER_BOOT_STATUS_POLICY))
    except VhdtoolError as err:
        return BcdSettings(where, None, None, None, None, None, None, f"BCD store unreadable: {err}")
