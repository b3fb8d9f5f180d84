"""The command line's last line of defence: whatever goes wrong, one line on stderr and an exit code."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
from support.cli import run_cli

from vhdtool.blockio import fileio
from vhdtool.cli import main, run


@pytest.fixture
def broken_command() -> object:
    """A command that fails the way a bug would, registered for the test only."""
    calls: dict[str, BaseException] = {}

    @main.command("explode", hidden=True)
    def explode() -> None:
        raise calls["error"]

    yield calls
    main.commands.pop("explode", None)


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("state went wrong"), "vhdtool: error: internal error: RuntimeError: state went wrong"),
    (MemoryError(), "vhdtool: error: out of memory"),
    (KeyboardInterrupt(), "vhdtool: interrupted"),
])
def test_unexpected_failures_are_one_line(broken_command: dict[str, BaseException], error: BaseException,
                                          expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    broken_command["error"] = error
    code, out, err = run_cli(["explode"])
    assert code == (130 if isinstance(error, KeyboardInterrupt) else 1)
    assert out == "" and err.count("\n") == 1 and err.startswith(expected), err
    assert "Traceback" not in err


def test_debug_variable_shows_the_traceback(broken_command: dict[str, BaseException],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    broken_command["error"] = RuntimeError("boom")
    monkeypatch.setenv("VHDTOOL_DEBUG", "1")
    with pytest.raises(RuntimeError, match="boom"):
        run(["explode"])


def test_read_error_names_the_image_structure_and_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"\x01" * 4096)

    def failing_pread(fd: int, length: int, offset: int) -> bytes:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fileio, "pread", failing_pread)
    code, _, err = run_cli(["info", str(image)])
    assert code == 1 and err.count("\n") == 1
    assert str(image) in err and "Input/output error" in err and "byte 0" in err, err


def test_click_usage_errors_keep_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["convert"])
    assert code == 2 and "Missing argument" in err
    assert isinstance(main, click.Group)


def test_sdk_log_warnings_stay_off_stderr() -> None:
    """The Azure SDK warns (e.g. "Incomplete download.") about answers vhdtool retries anyway; in a
    real process (no test logging handlers) they must not reach stderr, unless VHDTOOL_DEBUG asks."""
    program = textwrap.dedent("""
        import logging
        from vhdtool.cli import main, run

        @main.command("sdk-warns")
        def sdk_warns():
            logging.getLogger("azure.storage.blob._download").warning("Incomplete download.")

        run(["sdk-warns"])
    """)
    env = {k: v for k, v in os.environ.items() if k != "VHDTOOL_DEBUG"}
    quiet = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env={**env, "VHDTOOL_DEBUG": "1"})
    assert loud.returncode == 0 and "Incomplete download." in loud.stderr


def test_interrupt_does_not_wait_for_stuck_workers() -> None:
    """A worker that never returns (stuck on a lock the interrupted main thread held, or on a request
    with a long timeout) must not keep an interrupted process alive: exit 130 at once, one line."""
    program = textwrap.dedent("""
        import threading
        from vhdtool.cli import main, run

        @main.command("stuck")
        def stuck():
            threading.Thread(target=threading.Event().wait, name="vhdtool-put_0").start()
            raise KeyboardInterrupt

        run(["stuck"])
    """)
    proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 130 and proc.stderr == "vhdtool: interrupted\n", proc.stderr
