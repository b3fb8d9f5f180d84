"""Ctrl-C at any moment of a command's life is one line and exit code 130: during start-up, while it runs,
and when a cleanup would hang."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.cli import cli_command, cli_environment

from vhdtool.cli import INTERRUPT_GRACE


@pytest.mark.parametrize("milestone", ["click", "numpy"])
def test_ctrl_c_during_start_up_is_one_line(tmp_path: Path, milestone: str) -> None:
    """SIGINT sent while the entry point imports the CLI: as soon as ``-X importtime`` reports that
    ``milestone`` finished loading (the CLI imports click first, then the readers and numpy; an empty
    bytecode cache makes every later import compile, so plenty is left to interrupt)."""
    image = tmp_path / "disk.raw"
    image.write_bytes(bytes(1 << 20))
    env = cli_environment({"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-cache")})
    command = cli_command("info", str(image))
    proc = subprocess.Popen([command[0], "-X", "importtime", *command[1:]], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(rf"\|\s+{milestone}$", line.rstrip()):
            proc.send_signal(signal.SIGINT)
            break
    else:
        raise AssertionError(f"{milestone} was never imported: {''.join(seen[-5:])}")
    out, rest = proc.communicate(timeout=60)
    err = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert "numpy" not in "".join(seen) or milestone == "numpy"  # the milestone came before numpy's import
    assert proc.returncode == 130 and err == ["vhdtool: interrupted"] and out == "", (proc.returncode, err)


def test_a_cleanup_that_hangs_does_not_keep_an_interrupted_command_alive(tmp_path: Path) -> None:
    """A command whose cleanup waits forever (as a lock left held by the interrupted thread would make
    it): the process still ends, with the one line and 130, once the grace period is over."""
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent("""
        import sys, time
        from vhdtool.cli import main, run

        @main.command("hang")
        def hang():
            try:
                print("ready", flush=True)
                time.sleep(60)
            finally:
                time.sleep(60)  # a cleanup that never ends

        run(["hang"])
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env=cli_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - signalled
    assert proc.returncode == 130 and err == "vhdtool: interrupted\n", (proc.returncode, err)
    assert INTERRUPT_GRACE - 0.5 < took < INTERRUPT_GRACE + 5, took
