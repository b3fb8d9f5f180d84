"""Running ``vhdtool`` from a test: in this process by default, as a real process where one is needed.

:func:`run_cli` calls the console-script entry point (``vhdtool.cli.run``: errors mapped to one line on
stderr and an exit code) under click's test runner, so a test pays no interpreter start-up and no
import of the package. :func:`run_cli_process` runs ``python -m vhdtool`` in a fresh interpreter, for
what only a process shows: signals, resource limits, a terminal, the environment read at start-up,
state that must not leak between runs. :func:`cli_command` and :func:`cli_environment` are its parts,
for tests that start the process themselves (``Popen``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from click.testing import CliRunner

from vhdtool.cli import run

ROOT = Path(__file__).resolve().parents[2]
# Variables that would sign the CLI in behind a test's back: never passed on unless a test sets them.
AMBIENT = ("AZURE_STORAGE_CONNECTION_STRING",)


class CliResult(NamedTuple):
    """Exit code, stdout and stderr: ``proc.returncode`` like a finished process, or ``code, out, err = ...``."""

    returncode: int
    stdout: str
    stderr: str


def _environment_changes(env: Mapping[str, str | None] | None, connection_string: str | None
                         ) -> dict[str, str | None]:
    changes: dict[str, str | None] = {name: None for name in AMBIENT}
    if connection_string is not None:
        changes["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    changes.update(env or {})
    return changes


@contextlib.contextmanager
def _working_directory(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


Arg = str | os.PathLike[str]


def _argv(args: tuple[Arg | Sequence[Arg], ...]) -> list[str]:
    """``run_cli("info", path)`` and ``run_cli(["info", path])`` alike."""
    argv: list[str] = []
    for arg in args:
        if isinstance(arg, (list, tuple)):
            argv.extend(os.fspath(a) for a in arg)
        else:
            argv.append(os.fspath(arg))  # type: ignore[arg-type]
    return argv


def run_cli(*args: Arg | Sequence[Arg], env: Mapping[str, str | None] | None = None,
            connection_string: str | None = None, cwd: Path | None = None, stdin: str | None = None) -> CliResult:
    """``vhdtool ARGS`` in this process. ``env`` sets variables for the call (``None`` removes one);
    the connection-string variable is removed unless given (``connection_string``). Nothing is a terminal."""
    runner = CliRunner()
    argv = _argv(args)
    code = 0
    with contextlib.ExitStack() as stack:
        stack.enter_context(_working_directory(cwd))
        outputs = stack.enter_context(runner.isolation(input=stdin, env=_environment_changes(env, connection_string)))
        try:
            run(argv)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if isinstance(stop.code, str):
                sys.stderr.write(stop.code + "\n")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        out, err = outputs[0].getvalue(), outputs[1].getvalue()
    return CliResult(code, out.decode(), err.decode())


def cli_command(*args: Arg | Sequence[Arg]) -> list[str]:
    """The argument vector of ``python -m vhdtool ARGS`` in this interpreter."""
    return [sys.executable, "-m", "vhdtool", *_argv(args)]


def cli_environment(env: Mapping[str, str | None] | None = None, *, base: Mapping[str, str] | None = None,
                    connection_string: str | None = None) -> dict[str, str]:
    """The environment of a CLI process: ``base`` as given, or this process's without the connection-string
    variable (unless ``connection_string``); ``env`` applied (``None`` removes); this checkout first on the
    import path."""
    environ = dict(os.environ if base is None else base)
    changes = _environment_changes(env, connection_string) if base is None else dict(env or {})
    if base is not None and connection_string is not None:
        changes["AZURE_STORAGE_CONNECTION_STRING"] = connection_string
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environ.get("PYTHONPATH", "")) if p)
    return environ


def run_cli_process(*args: Arg | Sequence[Arg], env: Mapping[str, str | None] | None = None,
                    base_env: Mapping[str, str] | None = None, connection_string: str | None = None,
                    cwd: Path | None = None, timeout: float | None = 600,
                    preexec_fn: Callable[[], object] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m vhdtool ARGS`` as a user runs it, in a fresh interpreter (see :func:`cli_environment`)."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=cli_environment(env, base=base_env, connection_string=connection_string),
                          preexec_fn=preexec_fn)
