"""The command line: thin wrappers over the library, and the one error boundary.

Every `QuantbenchError` becomes `ERROR <what is wrong>` plus a tip and exit code 2;
tracebacks only with `-v`. Commands import their library modules lazily so that
`quantbench --help`, `schemes` and `report` start without importing TensorFlow.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from quantbench.core.errors import QuantbenchError

# Importing the commands registers them on the group.
from quantbench.cli import cache, export, files, measure, sweep  # noqa: E402,F401
from quantbench.cli.app import _VERBOSE, cli  # noqa: E402,F401 - the group is the entry point

_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


# --- error boundary -----------------------------------------------------------------------


def _error(message: str, tip: str | None) -> None:
    click.echo(f"ERROR {message}", err=True)
    if tip:
        click.echo(f"  tip: {tip}", err=True)


def main(argv: list[str] | None = None) -> None:
    # Names are bytes on Linux: an undecodable one prints as a backslash escape, never as a
    # UnicodeEncodeError after the run (stderr does this by default, stdout does not).
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from quantbench.workers.interrupt import signals_raise

    with signals_raise():
        _main(argv)


def _exit_for_signal() -> None:
    """A stop signal whose exception reached the boundary as another one (see
    interrupt.received): report the signal, not what it was turned into."""
    from quantbench.workers.interrupt import Terminated, received

    signum = received()
    if signum is not None:
        _stopped(Terminated(signum))


def _stopped(e: KeyboardInterrupt) -> None:
    """Ctrl-C, or SIGTERM/SIGHUP (interrupt.Terminated): say which, exit 128 + the signal."""
    from quantbench.workers.interrupt import Terminated

    what = f"stopped by {e.signal_name}" if isinstance(e, Terminated) else "interrupted"
    _error(f"{what}; results written so far are kept in the run directory", None)
    sys.exit(e.exit_code if isinstance(e, Terminated) else 130)


def _main(argv: list[str] | None) -> None:
    from quantbench.core.errors import machine_error

    try:
        try:
            cli.main(args=argv, prog_name="quantbench", standalone_mode=False)
        except BaseException:
            _exit_for_signal()  # a stop signal wins over whatever exception it became
            raise
    except QuantbenchError as e:
        if _VERBOSE["on"]:
            traceback.print_exc()
        _error(e.message, e.tip)
        sys.exit(e.exit_code)
    except _NO_ARGS_IS_HELP as e:  # bare `quantbench`: click already printed the help
        e.ctx and click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        hint = f"`quantbench {e.ctx.info_name} --help`" if e.ctx and e.ctx.parent else "`quantbench --help`"
        _error(e.format_message(), f"see {hint}")
        sys.exit(2)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # click turns Ctrl-C/SIGTERM into Abort
            _stopped(e.__cause__)
        _error("aborted", None)
        sys.exit(130)
    except click.ClickException as e:
        _error(e.format_message(), None)
        sys.exit(2)
    except KeyboardInterrupt as e:
        _stopped(e)
    except OSError as e:  # the machine refused something (disk full, permissions): say so
        if _VERBOSE["on"]:
            traceback.print_exc()
        error = machine_error(e)
        _error(error.message, error.tip)
        sys.exit(error.exit_code)
    except Exception as e:  # noqa: BLE001 - the one boundary for unexpected failures
        if _VERBOSE["on"]:
            traceback.print_exc()
        _error(f"internal error: {type(e).__name__}: {e}", "re-run with -v for the traceback")
        sys.exit(1)
