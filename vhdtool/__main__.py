"""The ``vhdtool`` command (and ``python -m vhdtool``).

The command's modules (click, numpy, the readers) take about 0.1 s to import; an interrupt in that
time would otherwise end in a traceback. So the entry point imports them under the same rule as
everything after: Ctrl-C is one line and exit code 130. ``import vhdtool`` itself is light (its API
names load on first use), so nothing heavy runs before this function.

numpy loads OpenBLAS, which starts a pool of threads (one per core) that spin while they wait for
work; vhdtool does no linear algebra, and on a 2-core machine that pool took as much CPU as the
whole of numpy's import and competed with the copy threads. The command asks for a pool of one
(unless the caller set ``OPENBLAS_NUM_THREADS``); code that imports vhdtool as a library is left alone.
"""

from __future__ import annotations

import os
import sys

from vhdtool.startup import imports_without_gc


def main() -> None:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see the module docstring
    try:
        with imports_without_gc():
            from vhdtool.cli import run  # the entry point's one import: see the module docstring
    except KeyboardInterrupt:
        sys.stderr.write("vhdtool: interrupted\n")
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
