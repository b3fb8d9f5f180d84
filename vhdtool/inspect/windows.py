"""Is the Windows installation on an NTFS volume generalized (sysprep'd) or specialized?

Read offline through a :class:`~vhdtool.inspect.model.FileTree`, never mounting anything.
The verdict comes from the image state Windows Setup keeps twice (Microsoft Learn, "Windows Setup
States"): the SOFTWARE value ``Microsoft\\Windows\\CurrentVersion\\Setup\\State\\ImageState`` and the
``[State] ImageState`` line of ``%WINDIR%\\Setup\\State\\State.ini``. Everything else (SYSTEM ``Setup``
values, SysprepStatus, the sysprep tag and logs, transaction logs, ``hiberfil.sys``) is listed as
supporting evidence so a person can see why, but does not override the two image-state records.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field, replace

from vhdtool.errors import VhdtoolError
from vhdtool.inspect.model import GENERALIZED, IN_BETWEEN, SPECIALIZED, UNKNOWN, Evidence, FileTree, OsReport
from vhdtool.inspect.os_facts import WindowsFacts
from vhdtool.inspect.registry import Hive, RegValue, regf_available
from vhdtool.inspect.windows_readiness import windows_readiness

NEUTRAL = "neutral"

WINDOWS_DIR = "/Windows"
SYSTEM32_DIR = "/Windows/System32"
CONFIG_DIR = "/Windows/System32/config"
SYSTEM_HIVE = CONFIG_DIR + "/SYSTEM"
SOFTWARE_HIVE = CONFIG_DIR + "/SOFTWARE"
HIVE_LOG_SUFFIXES = (".LOG1", ".LOG2", ".LOG")
STATE_INI = "/Windows/Setup/State/State.ini"
SYSPREP_TAG = "/Windows/System32/Sysprep/Sysprep_succeeded.tag"
SYSPREP_LOGS = (
    "/Windows/System32/Sysprep/Panther/setupact.log",
    "/Windows/System32/Sysprep/Panther/setuperr.log",
)
PANTHER_DIR = "/Windows/Panther"
HIBERNATION_FILE = "/hiberfil.sys"
KERNEL = "/Windows/System32/ntoskrnl.exe"

# Real SOFTWARE hives reach a few hundred MiB; Windows caps a hive well below 2 GiB.
MAX_HIVE_SIZE = 1 << 30
MAX_STATE_INI_SIZE = 64 * 1024

# Registry keys, relative to the hive root (offline there is no HKLM and no CurrentControlSet).
IMAGE_STATE_KEY = r"Microsoft\Windows\CurrentVersion\Setup\State"
CURRENT_VERSION_KEY = r"Microsoft\Windows NT\CurrentVersion"
SETUP_KEY = "Setup"
SYSPREP_STATUS_KEY = r"Setup\Status\SysprepStatus"
SELECT_KEY = "Select"

# ImageState values (Microsoft Learn, "Windows Setup States") -> (points_to, meaning).
IMAGE_STATE_COMPLETE = "IMAGE_STATE_COMPLETE"
IMAGE_STATE_UNDEPLOYABLE = "IMAGE_STATE_UNDEPLOYABLE"
IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE = "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"
IMAGE_STATES: dict[str, tuple[str, str]] = {
    IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE: (
        GENERALIZED, "sysprep /generalize /oobe completed: the image is generalized"),
    IMAGE_STATE_COMPLETE: (
        SPECIALIZED, "Windows Setup finished on this machine: the image is specialized"),
    IMAGE_STATE_UNDEPLOYABLE: (
        IN_BETWEEN, "a Setup or sysprep phase did not finish: this image can never be deployed; reinstall"),
    "IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT": (
        IN_BETWEEN, "generalized but resealed to audit mode: run sysprep /generalize /oobe"),
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT": (
        IN_BETWEEN, "specialize pass done, next boot enters audit mode: neither generalized nor finished"),
    "IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE": (
        IN_BETWEEN, "specialize pass done, OOBE not yet run: neither generalized nor finished"),
}


def normalize_image_state(value: str) -> str:
    """Upper-case ``value`` and drop quotes, NULs and all whitespace.

    Whitespace inside is dropped because Microsoft's own table spells ``IMAGE_STATE _UNDEPLOYABLE``.
    """
    text = value.replace("\x00", "").strip().strip("\"'").strip()
    return "".join(text.split()).upper()


def classify_image_state(value: str) -> tuple[str, str]:
    """``(points_to, meaning)`` of an ImageState value; unknown values point nowhere."""
    token = normalize_image_state(value)
    if token in IMAGE_STATES:
        return IMAGE_STATES[token]
    return UNKNOWN, "not an ImageState value Windows Setup documents"


def decode_text(data: bytes) -> str:
    """Decode a small Windows text file: UTF-16 (with or without BOM), UTF-8 (with or without BOM).

    Without a BOM, UTF-16 is recognised by its NUL bytes (State.ini holds ASCII text); anything that
    is not valid UTF-8 falls back to Latin-1 so a damaged file still yields its readable parts.
    """
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8", "replace")
    if data.startswith(codecs.BOM_UTF16_LE):
        return data[2:].decode("utf-16-le", "replace")
    if data.startswith(codecs.BOM_UTF16_BE):
        return data[2:].decode("utf-16-be", "replace")
    sample = data[:512]
    if len(sample) >= 2:
        odd_nuls = sample[1::2].count(0)
        even_nuls = sample[0::2].count(0)
        if odd_nuls > len(sample) // 4 and odd_nuls > even_nuls:
            return data[: len(data) & ~1].decode("utf-16-le", "replace")
        if even_nuls > len(sample) // 4 and even_nuls > odd_nuls:
            return data[: len(data) & ~1].decode("utf-16-be", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_state_ini(data: bytes) -> str | None:
    """The ``ImageState`` value of State.ini's ``[State]`` section, as written (quotes removed).

    Lenient like Windows' profile API: any encoding :func:`decode_text` knows, CR/LF or LF, case-
    insensitive section and key names, spaces around ``=`` and inside brackets, ``;``/``#`` comments.
    A key found outside any ``[State]`` section is used only if ``[State]`` holds none.
    """
    section: str | None = None
    in_state: str | None = None
    elsewhere: str | None = None
    for raw_line in decode_text(data).replace("\x00", "").splitlines():
        line = raw_line.strip().lstrip("\ufeff")
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and "]" in line:
            section = line[1: line.index("]")].strip().lower()
            continue
        key, sep, value = line.partition("=")
        if not sep or key.strip().strip("\"'").lower() != "imagestate":
            continue
        value = value.strip().strip("\"'").strip()
        if section == "state":
            if in_state is None:
                in_state = value
        elif elsewhere is None:
            elsewhere = value
    return in_state if in_state is not None else elsewhere


def is_windows_volume(tree: FileTree) -> bool:
    """Whether the volume holds a Windows installation (not merely a folder called Windows)."""
    if not tree.is_dir(SYSTEM32_DIR):
        return False
    return any(tree.exists(p) for p in (SYSTEM_HIVE, SOFTWARE_HIVE, STATE_INI, KERNEL))


@dataclass
class _Findings:
    """Evidence and facts gathered while reading one volume."""

    evidence: list[Evidence] = field(default_factory=list)
    facts: WindowsFacts = field(default_factory=WindowsFacts)

    def add(self, source: str, value: str | None, meaning: str, points_to: str = NEUTRAL) -> None:
        self.evidence.append(Evidence(source=source, value=value, meaning=meaning, points_to=points_to))


def _file_size(tree: FileTree, path: str, found: _Findings) -> int | None:
    try:
        return tree.file_size(path)
    except VhdtoolError as err:
        found.add(path, None, f"cannot be read: {err}")
        return None


def _read(tree: FileTree, path: str, limit: int, found: _Findings) -> bytes | None:
    try:
        return tree.read_file(path, limit)
    except VhdtoolError as err:
        found.add(path, None, f"cannot be read: {err}")
        return None


def _open_hive(tree: FileTree, path: str, found: _Findings) -> Hive | None:
    """Read and open one hive; a missing, oversized or damaged hive becomes evidence, not an error."""
    size = _file_size(tree, path, found)
    if size is None:
        found.add(path, None, "registry hive not found")
        return None
    if size > MAX_HIVE_SIZE:
        found.add(path, str(size), f"registry hive larger than {MAX_HIVE_SIZE} bytes: not read")
        _note_logs(tree, path, None, found)
        return None
    data = _read(tree, path, size, found)
    try:
        hive = Hive(data or b"", path)
    except VhdtoolError as err:
        found.add(path, None, f"registry hive unreadable: {err}")
        found.facts = replace(found.facts, unreadable_hives=(*found.facts.unreadable_hives, path))
        _note_logs(tree, path, None, found)
        return None
    if not hive.header.checksum_valid:
        found.add(f"{path} (base block)", "bad checksum",
                  "the hive header checksum is wrong: Windows would recover it from its logs")
    if hive.header.in_transaction:
        found.add(f"{path} (base block)",
                  f"sequence {hive.header.primary_sequence_number} != "
                  f"{hive.header.secondary_sequence_number}",
                  "the hive was being written when the disk was captured: values read may be stale")
        found.facts = replace(found.facts, hives_in_transaction=(*found.facts.hives_in_transaction, path))
    _note_logs(tree, path, hive.header.in_transaction or not hive.header.checksum_valid, found)
    return hive


def _note_logs(tree: FileTree, hive_path: str, dirty: bool | None, found: _Findings) -> None:
    """Non-empty transaction logs next to a hive: reported, never replayed.

    Spec "Dirty state of a hive": log entries are applied only to a dirty primary file (sequence
    numbers differ or the base block checksum is wrong); since Windows 8.1 the kernel writes changes
    to ``.LOG1``/``.LOG2`` first and reconciles the primary file later, so a dirty SYSTEM or SOFTWARE
    hive with a non-empty log may read older values than the running system had.
    """
    for suffix in HIVE_LOG_SUFFIXES:
        log_path = hive_path + suffix
        size = _file_size(tree, log_path, found)
        if not size:
            continue
        found.facts = replace(found.facts, hive_logs=(*found.facts.hive_logs, log_path))
        if dirty is False:
            meaning = ("non-empty hive transaction log; the primary hive is clean (sequence numbers "
                       "match), so nothing is pending")
        else:
            meaning = ("non-empty hive transaction log next to a hive that is dirty or unreadable: "
                       "changes may be pending that this offline read does not apply")
            found.facts = replace(found.facts, hive_logs_pending=(*found.facts.hive_logs_pending, log_path))
        found.add(log_path, f"{size} bytes", meaning)


def _value(hive: Hive | None, key: str, name: str, found: _Findings) -> RegValue | None:
    if hive is None:
        return None
    try:
        return hive.value(key, name)
    except VhdtoolError as err:
        found.add(f"{hive.path}: {key}\\{name}", None, f"cannot be read: {err}")
        return None


def _text(value: RegValue | None) -> str | None:
    if value is None:
        return None
    text = value.as_text()
    return text if text is not None else value.display()


def _image_state_from_registry(software: Hive | None, found: _Findings) -> str | None:
    source = f"SOFTWARE\\{IMAGE_STATE_KEY}\\ImageState"
    if software is None:
        return None
    value = _value(software, IMAGE_STATE_KEY, "ImageState", found)
    if value is None:
        found.add(source, None, "no ImageState in the registry")
        return None
    text = _text(value) or ""
    points_to, meaning = classify_image_state(text)
    found.add(source, text, meaning, points_to if points_to != UNKNOWN else NEUTRAL)
    return text


def _image_state_from_file(tree: FileTree, found: _Findings) -> str | None:
    source = f"{STATE_INI} [State] ImageState"
    size = _file_size(tree, STATE_INI, found)
    if size is None:
        found.add(source, None, "State.ini not found")
        return None
    data = _read(tree, STATE_INI, MAX_STATE_INI_SIZE, found)
    value = parse_state_ini(data) if data is not None else None
    if value is None:
        found.add(source, None, "State.ini holds no ImageState")
        return None
    points_to, meaning = classify_image_state(value)
    found.add(source, value, meaning, points_to if points_to != UNKNOWN else NEUTRAL)
    return value


def _verdict(registry_state: str | None, file_state: str | None, found: _Findings) -> str:
    """Both records agree (or only one exists) -> its meaning; they disagree -> in-between."""
    tokens = [normalize_image_state(s) for s in (registry_state, file_state) if s is not None]
    found.facts = replace(found.facts, image_state_registry=registry_state, image_state_file=file_state,
                          undeployable=IMAGE_STATE_UNDEPLOYABLE in tokens)
    if not tokens:
        return UNKNOWN
    if len(set(tokens)) > 1:
        found.facts = replace(found.facts, image_state_mismatch=True)
        found.add("ImageState (registry vs State.ini)", f"{registry_state} / {file_state}",
                  "the registry and State.ini disagree: sysprep or Setup was interrupted", IN_BETWEEN)
        return IN_BETWEEN
    return classify_image_state(tokens[0])[0]


def _setup_evidence(system: Hive | None, found: _Findings) -> None:
    """SYSTEM ``Setup`` values that Windows Setup and sysprep set (supporting evidence only)."""
    if system is None:
        return
    setup_type = _value(system, SETUP_KEY, "SetupType", found)
    if setup_type is not None:
        number = setup_type.as_int()
        found.facts = replace(found.facts, setup_type=number)
        points, meaning = {
            0: (SPECIALIZED, "no Setup pending at next boot"),
            2: (GENERALIZED, "Setup (OOBE) runs at next boot, as after sysprep"),
        }.get(number if number is not None else -1, (NEUTRAL, "Setup runs a command at next boot"))
        found.add("SYSTEM\\Setup\\SetupType", setup_type.display(), meaning, points)
    cmdline = _value(system, SETUP_KEY, "CmdLine", found)
    if cmdline is not None:
        text = _text(cmdline) or ""
        if "windeploy" in text.lower():
            found.add("SYSTEM\\Setup\\CmdLine", text, "windeploy runs at next boot, as after sysprep",
                      GENERALIZED)
        elif not text.strip():
            found.add("SYSTEM\\Setup\\CmdLine", text, "no Setup command pending", SPECIALIZED)
        else:
            found.add("SYSTEM\\Setup\\CmdLine", text, "a Setup command is pending")
    in_progress = _value(system, SETUP_KEY, "SystemSetupInProgress", found)
    if in_progress is not None:
        number = in_progress.as_int()
        found.facts = replace(found.facts, system_setup_in_progress=number)
        if number == 1:
            found.add("SYSTEM\\Setup\\SystemSetupInProgress", "1",
                      "Setup has not finished: expected after sysprep", GENERALIZED)
        elif number == 0:
            found.add("SYSTEM\\Setup\\SystemSetupInProgress", "0", "Setup has finished", SPECIALIZED)
        else:
            found.add("SYSTEM\\Setup\\SystemSetupInProgress", in_progress.display(), "unexpected value")
    generalization = _value(system, SYSPREP_STATUS_KEY, "GeneralizationState", found)
    if generalization is not None:
        number = generalization.as_int()
        found.facts = replace(found.facts, generalization_state=number)
        # Observed values, not documented by Microsoft: 4 after generalize, 7 in normal use.
        points, meaning = {
            4: (GENERALIZED, "sysprep generalize completed"),
            7: (SPECIALIZED, "normal running state (not generalized since the last Setup)"),
        }.get(number if number is not None else -1, (NEUTRAL, "undocumented generalization state"))
        found.add(f"SYSTEM\\{SYSPREP_STATUS_KEY}\\GeneralizationState", generalization.display(),
                  meaning, points)


def _control_set(system: Hive | None, found: _Findings) -> str | None:
    """``ControlSet00N`` named by ``Select\\Current`` (offline there is no CurrentControlSet)."""
    if system is None:
        return None
    current = _value(system, SELECT_KEY, "Current", found)
    number = current.as_int() if current is not None else None
    if number is None or not 0 < number < 1000:
        try:
            fallback_exists = system.has_key("ControlSet001")
        except VhdtoolError:
            fallback_exists = False
        if not fallback_exists:
            return None
        found.add("SYSTEM\\Select\\Current", None if current is None else current.display(),
                  "no usable current control set: ControlSet001 used")
        number = 1
    name = f"ControlSet{number:03d}"
    found.facts = replace(found.facts, control_set=name)
    return name


def _hostname(system: Hive | None, control_set: str | None, found: _Findings) -> str | None:
    if system is None or control_set is None:
        return None
    key = f"{control_set}\\Control\\ComputerName\\ComputerName"
    name = _text(_value(system, key, "ComputerName", found))
    if name:
        found.add(f"SYSTEM\\{key}\\ComputerName", name, "computer name")
    arch = _text(_value(system, f"{control_set}\\Control\\Session Manager\\Environment",
                        "PROCESSOR_ARCHITECTURE", found))
    if arch:
        found.facts = replace(found.facts, architecture=arch)
    return name or None


def _os_identity(software: Hive | None, found: _Findings) -> tuple[str | None, str | None]:
    """Product name and ``major.minor.build[.ubr]`` from SOFTWARE ``Windows NT\\CurrentVersion``."""
    if software is None:
        return None, None

    def get(name: str) -> RegValue | None:
        return _value(software, CURRENT_VERSION_KEY, name, found)

    product = _text(get("ProductName"))
    edition = _text(get("EditionID"))
    installation = _text(get("InstallationType"))
    display_version = _text(get("DisplayVersion")) or _text(get("ReleaseId"))
    build_value = get("CurrentBuildNumber") or get("CurrentBuild")
    build = build_value.as_int() if build_value is not None else None
    ubr_value = get("UBR")
    ubr = ubr_value.as_int() if ubr_value is not None else None
    major_value, minor_value = get("CurrentMajorVersionNumber"), get("CurrentMinorVersionNumber")
    major = major_value.as_int() if major_value is not None else None
    minor = minor_value.as_int() if minor_value is not None else None
    if major is None or minor is None:
        legacy = _text(get("CurrentVersion"))  # "6.3" before Windows 10
        if legacy and "." in legacy:
            head, _, tail = legacy.partition(".")
            if head.isdigit() and tail.isdigit():
                major, minor = int(head), int(tail)
    name = product
    # Windows 11 still writes "Windows 10 ..." as ProductName; build 22000 is Windows 11's first.
    if product and product.startswith("Windows 10") and build is not None and build >= 22000 \
            and (installation or "").lower() != "server":
        name = "Windows 11" + product[len("Windows 10"):]
    version = None
    if build is not None:
        version = ".".join(str(p) for p in (major, minor, build, ubr) if p is not None) \
            if major is not None and minor is not None else str(build)
    found.facts = replace(found.facts, product_name=product, edition_id=edition, installation_type=installation,
                          display_version=display_version, build=build, ubr=ubr)
    if product is not None:
        found.add(f"SOFTWARE\\{CURRENT_VERSION_KEY}\\ProductName", product,
                  "product name" + (f" (build {build} is {name})" if name != product else ""))
    if build is not None:
        found.add(f"SOFTWARE\\{CURRENT_VERSION_KEY}\\CurrentBuildNumber", str(build),
                  f"build{f' {display_version}' if display_version else ''}, edition {edition or 'unknown'}")
    return name, version


def _file_evidence(tree: FileTree, found: _Findings) -> None:
    """Files sysprep and Windows leave behind: the sysprep tag and logs, hiberfil.sys."""
    tag = tree.exists(SYSPREP_TAG)
    found.facts = replace(found.facts, sysprep_succeeded_tag=tag)
    if tag:
        found.add(SYSPREP_TAG, "present",
                  "a sysprep run succeeded once (not proof the image is generalized now)")
    for log in SYSPREP_LOGS:
        size = _file_size(tree, log, found)
        if size is not None:
            found.add(log, f"{size} bytes", "sysprep log present: read it to see what the last sysprep did")
    panther = tree.listdir(PANTHER_DIR)
    if panther:
        found.add(PANTHER_DIR, ", ".join(sorted(panther)[:8]), "Windows Setup (Panther) logs present")
    hibernation = tree.exists(HIBERNATION_FILE)
    found.facts = replace(found.facts, hibernation_file=hibernation)
    if hibernation:
        size = _file_size(tree, HIBERNATION_FILE, found)
        found.add(HIBERNATION_FILE, f"{size} bytes" if size is not None else "present",
                  "hibernation file present: the volume may have been captured hibernated or with Fast "
                  "Startup; shut down fully (powercfg /h off) before capture")


def inspect_windows(tree: FileTree) -> OsReport | None:
    """The Windows installation on this NTFS volume and its state, or ``None`` if there is none.

    Never raises for damaged content: unreadable hives and files become evidence. Without the
    optional registry reader the state is ``unknown`` and the evidence says what to install.
    """
    if not is_windows_volume(tree):
        return None
    found = _Findings()
    if not regf_available():
        found.add("dissect.regf", None,
                  "reading registry hives needs the optional extra: pip install vhdtool[inspect]")
        file_state = _image_state_from_file(tree, found)
        _file_evidence(tree, found)
        found.facts = replace(found.facts, registry_read=False, image_state_file=file_state)
        return OsReport(family="windows", name=None, version=None, hostname=None, state=UNKNOWN,
                        evidence=found.evidence, facts=found.facts)

    software = _open_hive(tree, SOFTWARE_HIVE, found)
    system = _open_hive(tree, SYSTEM_HIVE, found)
    registry_state = _image_state_from_registry(software, found)
    file_state = _image_state_from_file(tree, found)
    state = _verdict(registry_state, file_state, found)
    _setup_evidence(system, found)
    _file_evidence(tree, found)
    name, version = _os_identity(software, found)
    control_set = _control_set(system, found)
    hostname = _hostname(system, control_set, found)
    unfinished = next((normalize_image_state(s) for s in (registry_state, file_state)
                       if s is not None and classify_image_state(s)[0] == IN_BETWEEN), None)
    readiness = windows_readiness(system, software, control_set, found.facts.installation_type,
                                  unfinished)
    # The two image-state records decide the verdict: list them first, the rest in reading order.
    found.evidence.sort(key=lambda e: 0 if "ImageState" in e.source else 1)
    return OsReport(family="windows", name=name, version=version, hostname=hostname, state=state,
                    evidence=found.evidence, facts=found.facts, windows=readiness)
