"""``--size`` reads the same way on every command that takes one: 30G, 30GiB, 1.5M, bytes."""

from __future__ import annotations

import pytest
from support.cli import run_cli

from vhdtool.cli.params import parse_size
from vhdtool.errors import UsageError


@pytest.mark.parametrize(("text", "expected"), [
    ("512", 512), ("30G", 30 << 30), ("30GiB", 30 << 30), ("30gb", 30 << 30), ("1.5M", 3 << 19),
    ("1024 M", 1 << 30), ("2T", 2 << 40), ("1.5T", 3 << 39), ("7b", 7),
])
def test_sizes_in_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "G", "3Q", "-1G", "1.5", "0.1K", "1e9"])
def test_unreadable_sizes_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


@pytest.mark.parametrize("command", ["convert", "upload"])
def test_every_size_option_says_a_bad_size_in_one_line(command: str) -> None:
    args = ["convert", "nowhere.vhdx", "-o", "out.vhd"] if command == "convert" else ["upload", "nowhere.vhdx", "c/b"]
    proc = run_cli(*args, "--size", "30X")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["vhdtool: error: --size: cannot read size '30X'; write e.g. 30G, "
                                                "30GiB, 1024M or a byte count"]
