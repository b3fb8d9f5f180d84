"""The ``vhdtool`` command (and ``python -m vhdtool``).

The command's modules (click, numpy, the readers) take about 0.1 s to import; an interrupt in that
time would otherwise end in a traceback. So the entry point imports them under the same rule as
everything after: Ctrl-C is one line and exit code 130. ``import vhdtool`` itself is light (its API
names load on first use), so nothing heavy runs before this function.
"""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from vhdtool.cli import run  # the entry point's one import: see the module docstring
    except KeyboardInterrupt:
        sys.stderr.write("vhdtool: interrupted\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
