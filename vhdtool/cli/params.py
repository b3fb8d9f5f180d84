"""Command-line value types shared by the commands: one way to write a size everywhere."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import click

from vhdtool.errors import UsageError
from vhdtool.units import GiB, KiB, MiB, PiB, TiB

_UNITS = {"": 1, "b": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": PiB}


def parse_size(text: str) -> int:
    """``"30G"``, ``"30GiB"``, ``"1.5M"`` or a byte count -> bytes (binary units, like qemu-img)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtpb]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise UsageError(f"cannot read size {text!r}; write e.g. 30G, 30GiB, 1024M or a byte count")
    number, unit = match.groups()
    value = Fraction(number) * _UNITS[unit.lower()]  # exact: 1.5T is not rounded through a float
    if value.denominator != 1:
        raise UsageError(f"size {text!r} is not a whole number of bytes")
    return int(value)


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A size option: ``30G``, ``30GiB``, ``1024M`` or a plain byte count; zero is refused."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        # vhdtool's own UsageError, not click's: the CLI says it in one line and exits 2.
        option = f"--{param.name.replace('_', '-')}: " if param is not None and param.name else ""
        try:
            size = parse_size(str(value))
        except UsageError as err:
            raise UsageError(f"{option}{err}") from None
        if size <= 0:
            raise UsageError(f"{option}size {value!r} must be more than zero")
        return size


BYTE_SIZE = ByteSize()
