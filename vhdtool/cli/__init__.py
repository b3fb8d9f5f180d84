"""The ``vhdtool`` command line: the one place where errors become messages and exit codes.

Exit codes: 0 success; 1 an error (bad image, failed transfer, ``check`` found errors);
2 usage problems; 130 interrupted (Ctrl-C). Commands live one per module in this package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

import click

from vhdtool import __version__
from vhdtool.errors import UsageError, VhdtoolError
from vhdtool.startup import imports_without_gc
from vhdtool.stream.fixed_file import remove_live_temporaries

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"vhdtool: error: {message}", err=True)
    sys.exit(code)


# Command name -> module in this package. Modules are imported only when their command runs (or help
# lists it), so `vhdtool info` does not pay for numpy-heavy converters or the Azure SDK.
COMMANDS = {
    "info": "info",
    "inspect": "inspect",
    "check": "check",
    "convert": "convert",
    "fix": "fix",
    "upload": "upload",
    "prepare": "prepare",
    "verify": "verify",
    "download": "download",
    "copy": "copy",
}


class Interrupted(Exception):
    """Ctrl-C, carried past click (which would print a blank line of its own) to :func:`run`."""


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported on first use."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            import importlib

            with imports_without_gc():
                importlib.import_module(f"{__name__}.{COMMANDS[cmd_name]}")  # registers itself on ``main``
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vhdtool")
def main() -> None:
    """Make Hyper-V and raw disk images ready for Azure: read, check, convert, upload."""


def exit_now_if_workers_remain(code: int) -> None:
    """End the process at once if vhdtool's worker threads (uploads) are still alive.

    An interrupted upload's requests already on the wire would otherwise be waited for at
    interpreter exit (up to ``--timeout`` each), and a worker stuck on a lock that the interrupted
    main thread held would keep the process alive for good. Each Put Page is atomic and
    ``--resume`` takes the blob's own record, so nothing needs them to finish.
    """
    if any(t.name.startswith("vhdtool-") and t.is_alive() for t in threading.enumerate()):
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


# Seconds an interrupted command may spend unwinding (cleanups, closing connections) before the process
# ends anyway: a cleanup that waits on a lock the interrupted thread held, or on a peer that never
# answers, must not turn Ctrl-C into a hang.
INTERRUPT_GRACE = 3.0


class _Interrupt:
    timer: threading.Timer | None = None  # started at the first SIGINT
    told = False  # "vhdtool: interrupted" was written


def _end_interrupted() -> None:
    remove_live_temporaries()
    if not _Interrupt.told:
        with contextlib.suppress(OSError):
            os.write(2, b"vhdtool: interrupted\n")
    os._exit(EXIT_INTERRUPTED)


def _on_sigint(signum: int, frame: object) -> None:
    """Python's own reaction (a ``KeyboardInterrupt`` in the main thread), plus a deadline for the unwinding."""
    if _Interrupt.timer is None:
        _Interrupt.timer = threading.Timer(INTERRUPT_GRACE, _end_interrupted)
        _Interrupt.timer.name = "interrupt-grace"
        _Interrupt.timer.daemon = True
        _Interrupt.timer.start()
    raise KeyboardInterrupt


def _tell_interrupted() -> None:
    remove_live_temporaries()
    _Interrupt.told = True
    click.echo("vhdtool: interrupted", err=True)


@contextlib.contextmanager
def _interrupt_deadline() -> Iterator[None]:
    """Ctrl-C handled as :func:`_on_sigint` says while a command runs, where Python's default handler is
    in place (not where SIGINT is ignored, nor off the main thread); the previous handler afterwards."""
    installed = threading.current_thread() is threading.main_thread() \
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if installed:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs :func:`main` and maps every failure to a message and exit code."""
    with _interrupt_deadline():
        _run(argv)


def _run(argv: list[str] | None) -> None:
    if not os.environ.get("VHDTOOL_DEBUG"):
        # The Azure SDK logs warnings such as "Incomplete download." for answers vhdtool retries
        # anyway; without a handler they would reach stderr through logging's last resort.
        import logging

        logging.getLogger("azure").addHandler(logging.NullHandler())
    try:
        main.main(args=argv, prog_name="vhdtool", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        _tell_interrupted()
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Interrupted):
        _tell_interrupted()
        exit_now_if_workers_remain(EXIT_INTERRUPTED)
        sys.exit(EXIT_INTERRUPTED)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except VhdtoolError as exc:
        fail(str(exc))
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # output piped into head & co.
            sys.exit(EXIT_ERROR)
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    except MemoryError:
        fail("out of memory: vhdtool's memory use is meant to stay bounded, so this is a bug worth reporting")
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if os.environ.get("VHDTOOL_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (run with VHDTOOL_DEBUG=1 for the traceback)")
    sys.exit(0)


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    import json

    click.echo(json.dumps(obj, indent=2, sort_keys=False))


def human_size(n: int) -> str:
    """``n`` bytes as a short binary-unit string, keeping the exact count."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            text = f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
            return f"{text} ({n:,} bytes)" if unit != "B" else text
        value /= 1024
    return str(n)


parent_option = click.option("--parent", "parent", type=click.Path(dir_okay=False),
                             help="Use this file as the (first) parent of a differencing disk.")
absolute_parent_option = click.option("--allow-absolute-parent", is_flag=True,
                                      help="Follow absolute parent locators outside the image's folder.")
