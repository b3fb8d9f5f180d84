"""``python -m vhdtool``."""

from .cli import run

run()
