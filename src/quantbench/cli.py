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

from quantbench import __version__
from quantbench.errors import QuantbenchError

_VERBOSE = {"on": False}
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


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


# --- run ---------------------------------------------------------------------------------

RUN_FLAGS = {
    # flag name -> dotted config key
    "data": "data.dir",
    "image_size": "data.image_size",
    "validation_split": "data.validation_split",
    "split_seed": "data.split_seed",
    "max_images_per_class": "data.max_images_per_class",
    "alpha": "model.alpha",
    "weights": "model.weights",
    "train_mode": "train.mode",
    "optimizer": "train.optimizer",
    "learning_rate": "train.learning_rate",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "seed": "train.seed",
    "schemes": "convert.schemes",
    "calibration_images": "convert.calibration_images",
    "threads": "evaluate.threads",
    "latency_runs": "evaluate.latency_runs",
    "qat": "qat.recipes",
    "qat_epochs": "qat.epochs",
    "qat_learning_rate": "qat.learning_rate",
    "repeats": "repeats",
    "seeds": "seeds",
    "max_accuracy_drop": "recommend.max_accuracy_drop",
    "max_size": "recommend.max_size_mb",
    "max_latency": "recommend.max_latency_ms",
    "objective": "recommend.objective",
    "track": "track",
    "name": "name",
    "output_dir": "output_dir",
}


@cli.command()
@click.option("--preset", default="default", show_default=True, help="default, seed or smoke.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML or TOML file.")
@click.option("--data", type=click.Path(path_type=Path), help="Image folder, one sub-folder per class.")
@click.option("--name", help="Run name (used in the run directory's name).")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Where run directories go.")
@click.option("--image-size", type=int, help="Square input size in pixels.")
@click.option("--validation-split", type=float, help="Fraction of images held out (0..1).")
@click.option("--split-seed", type=int, help="Seed of the train/validation split.")
@click.option("--max-images-per-class", type=int, help="Use at most this many images per class.")
@click.option("--alpha", type=float, help="MobileNetV2 width multiplier.")
@click.option("--weights", help="'imagenet', 'none', or a path to a _no_top .h5 weights file.")
@click.option("--train-mode", type=click.Choice(["full", "frozen_base"]), help="Fine-tune all or head only.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd", "rmsprop"]))
@click.option("--learning-rate", type=float)
@click.option("--epochs", type=int)
@click.option("--batch-size", type=int)
@click.option("--seed", type=int, help="Training seed.")
@click.option("--schemes", help="Comma-separated schemes (see `quantbench schemes`).")
@click.option("--calibration-images", type=int, help="Representative dataset size.")
@click.option("--threads", help="Comma-separated thread counts for latency, e.g. 1,2.")
@click.option("--latency-runs", type=int, help="Timed invokes per latency figure.")
@click.option("--qat", help="QAT recipes to run, comma-separated: finetune, seed.")
@click.option("--qat-epochs", type=int, help="QAT epochs (default: the recipe's own).")
@click.option("--qat-learning-rate", type=float, help="QAT learning rate (default: the recipe's).")
@click.option("--repeats", type=int, help="Train and evaluate K times with different seeds.")
@click.option("--seeds", help="Explicit training seeds, comma-separated (overrides --repeats).")
@click.option("--max-accuracy-drop", type=float, help="Recommendation: max points below float.")
@click.option("--max-size", type=float, help="Recommendation: max model size in MB.")
@click.option("--max-latency", type=float, help="Recommendation: max median latency in ms.")
@click.option("--objective", type=click.Choice(["size", "latency", "accuracy"]),
              help="Recommendation: what to optimize among variants that fit.")
@click.option("--track", type=click.Choice(["mlflow", "wandb"]), help="Log the run to a tracker.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set train.epochs=3 (repeatable).")  # fmt: skip
def run(preset: str, config_file: Path | None, assignments: tuple[str, ...], **flags) -> None:
    """Train the float baseline, convert it with every scheme, evaluate all on LiteRT."""
    from quantbench import config as config_mod

    flags["schemes"] = _csv_list(flags["schemes"])
    flags["threads"] = _csv_list(flags["threads"], int)
    flags["qat"] = _csv_list(flags["qat"])
    flags["seeds"] = _csv_list(flags["seeds"], int)
    overrides = {RUN_FLAGS[k]: v for k, v in flags.items() if v is not None}
    for text in assignments:
        key, value = config_mod.parse_assignment(text)
        overrides[key] = value
    cfg = config_mod.resolve(preset, config_file, overrides)

    from quantbench import quiet, runner

    quiet.import_tensorflow(verbose=_VERBOSE["on"])
    runner.run(cfg)


# --- schemes ------------------------------------------------------------------------------


@cli.command()
def schemes() -> None:
    """List the conversion schemes, one line each."""
    from rich.table import Table

    from quantbench.console import out
    from quantbench.schemes import SCHEMES

    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("scheme", "policy", "default", "what it does"):
        table.add_column(column)
    for s in SCHEMES.values():
        table.add_row(s.name, s.policy, "yes" if s.default else "no", s.description)
    out.print(table)


# --- error boundary -----------------------------------------------------------------------


def _error(message: str, tip: str | None) -> None:
    click.echo(f"ERROR {message}", err=True)
    if tip:
        click.echo(f"  tip: {tip}", err=True)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="quantbench", standalone_mode=False)
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
    except click.exceptions.Abort:
        _error("aborted", None)
        sys.exit(130)
    except click.ClickException as e:
        _error(e.format_message(), None)
        sys.exit(2)
    except KeyboardInterrupt:
        _error("interrupted; results written so far are kept in the run directory", None)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - the one boundary for unexpected failures
        if _VERBOSE["on"]:
            traceback.print_exc()
        _error(f"internal error: {type(e).__name__}: {e}", "re-run with -v for the traceback")
        sys.exit(1)
