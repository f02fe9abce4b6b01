"""The command group and the options its commands share (one definition each). The
commands live beside this module (cache.py, files.py, measure.py, sweep.py, export.py) and
register themselves on the group; cli/__init__.py imports them and holds the error boundary."""

from __future__ import annotations

from pathlib import Path

import click

from quantbench.core.version import __version__
from quantbench.targets import TARGETS

_VERBOSE = {"on": False}


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
    click.option("--target", type=click.Choice(list(TARGETS)),
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
