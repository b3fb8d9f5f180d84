"""vhdtool's column of the table of docs/formats.md, "Where vhdtool differs from qemu-img and libvhdi":
each condition of tests/support/divergences.py, built, is refused, read with a warning or read, as the table
says; and the table names every condition. (The qemu-img and libvhdi columns come from
``python benchmarks/reader_divergence.py``; they are not pinned here, so a new libvhdi cannot break
the suite.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.divergences import CONDITIONS, READ, REFUSED, WARNS, Condition

from vhdtool.cli import run
from vhdtool.extents import MiB
from vhdtool.formats.open import open_image

DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: c.key)
def test_vhdtool_does_what_the_table_says(condition: Condition, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    chain = condition.build(tmp_path)
    with pytest.raises(SystemExit) as stop:
        run(["info", str(chain[-1])])
    err = capsys.readouterr().err
    if condition.vhdtool == REFUSED:
        lines = err.strip().splitlines()
        assert stop.value.code != 0 and len(lines) == 1 and str(chain[-1]) in lines[0], err
        return
    assert stop.value.code in (0, None), err
    with open_image(chain[-1]) as disk:
        assert bool(disk.warnings) == (condition.vhdtool == WARNS), disk.warnings
        size = disk.virtual_size
        disk.read(0, min(size, MiB))
        disk.read(max(0, size - MiB), min(size, MiB))
    assert condition.vhdtool in (READ, WARNS)


def test_the_docs_table_names_every_condition_once() -> None:
    text = DOCS.read_text()
    table = text[text.index("## Where vhdtool differs from qemu-img and libvhdi"):]
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    for condition in CONDITIONS:
        matching = [row for row in rows if row.startswith(f"| {condition.text} |")]
        assert len(matching) == 1, condition.text
        assert matching[0].split(" | ")[1] == condition.vhdtool, matching[0]
