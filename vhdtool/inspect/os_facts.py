"""The extras an OS detector reports beside its verdict, typed: what ``check`` reads and ``inspect --json`` shows.

A rule that reads a misspelt fact is a type error, not a rule that silently never fires. The JSON
form (``OsReport.to_json``) is made from these fields by :func:`vhdtool.inspect.model.to_jsonable`:
field order is key order, and a field whose metadata holds ``omit_if`` is left out when that predicate
holds, so a key appears exactly when the detector found something to say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _omit_if(predicate: Callable[[Any, Any], bool]) -> dict[str, Callable[[Any, Any], bool]]:
    """Field metadata: leave the key out of the JSON when ``predicate(owner, value)`` holds."""
    return {"omit_if": predicate}


def _none(owner: Any, value: Any) -> bool:
    return value is None


def _empty(owner: Any, value: Any) -> bool:
    return not value


def _registry_unread(owner: Any, value: Any) -> bool:
    return not owner.registry_read


def _always(owner: Any, value: Any) -> bool:
    return True


@dataclass(frozen=True)
class LinuxFacts:
    """Azure agent, drivers, boot command line and identity facts of a Linux root filesystem."""

    os_release: dict[str, str]  # ID, ID_LIKE, VERSION_ID, PRETTY_NAME as far as os-release has them
    waagent_installed: bool
    waagent_enabled: bool
    cloud_init_installed: bool
    cloud_init_enabled: bool
    waagent_conf: dict[str, str]  # the Provisioning.* and ResourceDisk.* settings of /etc/waagent.conf
    fstab_swap: tuple[str, ...]  # the swap lines of /etc/fstab
    hyperv_drivers: dict[str, list[str]]  # driver -> kernels that have it (module or built in)
    kernel_cmdline: str | None  # GRUB_CMDLINE_LINUX (+ _DEFAULT), None without /etc/default/grub
    machine_id_set: bool


@dataclass(frozen=True)
class WindowsFacts:
    """Registry and file facts of a Windows volume: hive health, image state, Setup, identity.

    ``registry_read`` is false when the optional registry reader is missing: then only the file facts
    are known, and the registry ones are left out of the JSON rather than shown as empty.
    """

    registry_read: bool = field(default=True, metadata=_omit_if(_always))
    unreadable_hives: tuple[str, ...] = field(default=(), metadata=_omit_if(_empty))
    hives_in_transaction: tuple[str, ...] = field(default=(), metadata=_omit_if(_empty))
    hive_logs: tuple[str, ...] = field(default=(), metadata=_omit_if(_empty))  # non-empty .LOG1 / .LOG2
    hive_logs_pending: tuple[str, ...] = field(default=(), metadata=_omit_if(_empty))  # beside a dirty hive
    image_state_registry: str | None = field(default=None, metadata=_omit_if(_registry_unread))
    image_state_file: str | None = None  # State.ini [State] ImageState
    undeployable: bool = field(default=False, metadata=_omit_if(_registry_unread))
    image_state_mismatch: bool = field(default=False, metadata=_omit_if(_empty))
    setup_type: int | None = field(default=None, metadata=_omit_if(_none))
    system_setup_in_progress: int | None = field(default=None, metadata=_omit_if(_none))
    generalization_state: int | None = field(default=None, metadata=_omit_if(_none))
    sysprep_succeeded_tag: bool = False
    hibernation_file: bool = False
    product_name: str | None = field(default=None, metadata=_omit_if(_none))
    edition_id: str | None = field(default=None, metadata=_omit_if(_none))
    installation_type: str | None = field(default=None, metadata=_omit_if(_none))
    display_version: str | None = field(default=None, metadata=_omit_if(_none))
    build: int | None = field(default=None, metadata=_omit_if(_none))
    ubr: int | None = field(default=None, metadata=_omit_if(_none))
    control_set: str | None = field(default=None, metadata=_omit_if(_none))
    architecture: str | None = field(default=None, metadata=_omit_if(_none))  # PROCESSOR_ARCHITECTURE


OsFacts = LinuxFacts | WindowsFacts
