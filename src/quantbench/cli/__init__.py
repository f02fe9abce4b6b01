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

from quantbench.core.version import __version__
from quantbench.core.errors import QuantbenchError

_VERBOSE = {"on": False}
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _runtimes(value: str | None) -> list[str] | None:
    from quantbench.measure.runtimes import parse_runtimes

    return None if value is None else parse_runtimes(value)


def _csv_list(value: str | None, cast=str) -> list | None:
    if value is None:
        return None
    try:
        return [cast(item.strip()) for item in value.split(",") if item.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma-separated list, got {value!r}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="quantbench")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and library logs.")
def cli(verbose: bool) -> None:
    """Quantize a Keras image classifier every TF Lite way, measure each variant on LiteRT,
    and recommend which one to ship."""
    _VERBOSE["on"] = verbose


# The recommendation's constraints, one definition for run, quantize and report.
_RECOMMENDATION_OPTIONS = (
    click.option("--max-accuracy-drop", type=float, help="Recommendation: max points below float."),
    click.option("--max-size", type=float, help="Recommendation: max model size in MB."),
    click.option("--max-gzip-size", type=float,
                 help="Recommendation: max gzipped model size (the download) in MB."),
    click.option("--max-latency", type=float, help="Recommendation: max median latency in ms."),
    click.option("--objective", type=click.Choice(["size", "gzip_size", "latency", "accuracy"]),
                 help="Recommendation: what to optimize among variants that fit."),
    click.option("--confidence", type=click.Choice(["estimate", "likely", "sure"]),
                 help="Recommendation: how sure the accuracy drop must be within budget: the "
                 "measured drop, its one-sided 80% or 95% upper bound (default sure)."),
    click.option("--target", type=click.Choice(["mcu", "edgetpu", "gpu", "integer_only", "cpu"]),
                 help="Recommendation: only variants that can run there (see the report's "
                 "Targets section)."),
)  # fmt: skip

# Budgets the target checks judge against (run, quantize).
_TARGET_OPTIONS = (
    click.option("--mcu-ram", help="Microcontroller RAM for TFLM's arena, e.g. 512KB."),
    click.option("--mcu-flash", help="Microcontroller flash for the model, e.g. 1MB."),
)


def resume_options(command):
    command = click.option("--no-cache", is_flag=True,
                           help="Neither reuse nor share cached models and files "
                           "($QUANTBENCH_CACHE); the run keeps its own, for --resume.")(command)
    return click.option("--resume", type=click.Path(path_type=Path, file_okay=False),
                        help="Finish a killed or failed run in this run directory: finished "
                        "variants are kept, the rest measured.")(command)  # fmt: skip


def recommendation_options(command):
    for option in reversed(_RECOMMENDATION_OPTIONS):  # listed in help in this order
        command = option(command)
    return command


def target_options(command):
    for option in reversed(_TARGET_OPTIONS):
        command = option(command)
    return command


# The commands live beside this module; importing them registers them on the group.
from quantbench.cli import cache, files, measure, sweep  # noqa: E402,F401
from quantbench.cli import export  # noqa: E402,F401  - `quantbench export`


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
