#!/usr/bin/env python3
"""Snapshot ``inspect --json``, ``check --json`` and ``check --junit`` on every fixture, or compare two snapshots.

The JSON the CLI prints is a public contract: a change of the code behind it must leave it byte for
byte the same. Usage:
    json_snapshot.py build                     # build the images under /tmp/vhdtool-json-fixtures
    json_snapshot.py take OUT_DIR [CODE_DIR]   # record outputs of the vhdtool in CODE_DIR (default: this tree)
    json_snapshot.py compare A_DIR B_DIR
The images are built once (``take`` builds them only when missing: the filesystem builders write fresh
UUIDs each time) at one fixed path, so two takes see the same bytes under the same paths. The JSON,
exit codes and stderr must match byte for byte; the JUnit reports must carry the same elements,
attributes and texts (indentation aside).
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = Path("/tmp/vhdtool-json-fixtures")
LINUX = [("gpt-ext4", "generalized"), ("mbr-ext4", "specialized"), ("gpt-xfs", "in-between"),
         ("gpt-split", "nodrivers"), ("bare-ext4", "boot-traps"), ("luks", "generalized"),
         ("gpt-swap", "specialized"), ("gpt-lvm", "generalized"), ("gpt-ext4", "boot-traps")]
CHECK_ARGS = [[], ["--expect", "generalized"], ["--role", "data"], ["--generation", "V1"]]


def build() -> None:
    shutil.rmtree(IMAGES, ignore_errors=True)
    IMAGES.mkdir(parents=True)
    for gz in sorted((ROOT / "fixtures").rglob("*.gz")):
        out = IMAGES / f"{gz.parent.name}-{gz.name[:-3]}"
        out.write_bytes(gzip.decompress(gz.read_bytes()))
    windows = IMAGES / "windows"
    subprocess.run([sys.executable, str(ROOT / "fixtures/windows/make_fixtures.py"), str(windows)], check=True,
                   stdout=subprocess.DEVNULL)
    for layout, state in LINUX:
        out = IMAGES / f"linux-{layout}-{state}.img"
        subprocess.run([sys.executable, str(ROOT / "fixtures/linux/make_linux.py"), str(out), layout, state],
                       check=True, stdout=subprocess.DEVNULL)
    (IMAGES / "complete").touch()


def images() -> list[Path]:
    if not (IMAGES / "complete").exists():
        build()
    found = [p for p in IMAGES.iterdir() if p.is_file() and p.name != "complete"]
    return sorted(found + [p for p in (IMAGES / "windows").iterdir() if p.is_file()])


def run(args: list[str], code: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "vhdtool", *args], capture_output=True, text=True, cwd=code)
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}--- stderr\n{done.stderr}"


def take(out_dir: Path, code: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for image in images():
        (out_dir / f"{image.name}.inspect").write_text(run(["inspect", "--json", str(image)], code))
        for i, extra in enumerate(CHECK_ARGS):
            junit = out_dir.parent / f"{out_dir.name}-junit.xml"
            junit.unlink(missing_ok=True)
            text = run(["check", "--json", "--junit", str(junit), *extra, str(image)], code)
            xml = junit.read_text() if junit.exists() else "(none)\n"
            (out_dir / f"{image.name}.check{i}").write_text(text + "--- junit\n" + xml)
    print(f"{len(list(out_dir.iterdir()))} outputs in {out_dir}")


def _junit_shape(text: str) -> object:
    """What a JUnit report says: each element's tag, attributes and text, without layout whitespace."""
    if text.strip() == "(none)":
        return None

    def shape(e: ET.Element) -> object:
        return (e.tag, sorted(e.attrib.items()), (e.text or "").strip(), [shape(c) for c in e])

    return shape(ET.fromstring(text.encode()))


def same(a: bytes, b: bytes) -> bool:
    a_text, _, a_junit = a.decode().partition("--- junit\n")
    b_text, _, b_junit = b.decode().partition("--- junit\n")
    return a_text == b_text and _junit_shape(a_junit or "(none)") == _junit_shape(b_junit or "(none)")


def compare(a: Path, b: Path) -> int:
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    differ = [n for n in names if not (a / n).exists() or not (b / n).exists()
              or not same((a / n).read_bytes(), (b / n).read_bytes())]
    for n in differ:
        print(f"differs: {n}")
    print(f"{len(names)} outputs compared, {len(differ)} differ")
    return 1 if differ else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "build":
        build()
        return 0
    if len(argv) in (3, 4) and argv[1] == "take":
        take(Path(argv[2]), Path(argv[3]).resolve() if len(argv) == 4 else ROOT)
        return 0
    if len(argv) == 4 and argv[1] == "compare":
        return compare(Path(argv[2]), Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
