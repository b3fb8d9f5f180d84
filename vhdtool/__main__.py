"""``python -m vhdtool``."""

from vhdtool.cli import run

run()
