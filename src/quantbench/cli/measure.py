"""`quantbench run` and `quantbench quantize`: flags to a config, events to the terminal."""

from __future__ import annotations

from pathlib import Path

import click

from quantbench.cli.app import (  # the group and the options the commands share
    _VERBOSE, _csv_list, _runtimes, cli, recommendation_options, resume_options, target_options,
)
from quantbench.engine.configure import MEASURING_FLAGS, REPORTING_FLAGS, flag_keys as config_flag_keys


# What run and quantize measure alike: selective's search images, latency threads and runs,
# runtimes, and the wait for a quiet machine.
_MEASURING_OPTIONS = (
    click.option("--search-data", type=click.Path(path_type=Path, exists=True, file_okay=False),
                 help="Labelled images (class sub-folders) that score selective's candidates "
                 "(default: a slice of the training split; never the validation split)."),
    click.option("--threads", help="Comma-separated thread counts for latency, e.g. 1,2."),
    click.option("--latency-runs", type=int, help="Timed invokes per latency figure."),
    click.option("--runtimes", help="LiteRT APIs to time: interpreter (default), compiled "
                 "(CompiledModel), or both: interpreter,compiled."),
    click.option("--wait-quiet", type=click.FloatRange(0, 86_400), metavar="SECONDS",
                 help="Re-measure figures timed on a busy machine at the end, waiting at most "
                 "this long in all for quiet (default 60)."),
)  # fmt: skip


def measuring_options(command):
    for option in reversed(_MEASURING_OPTIONS):  # listed in help in this order
        command = option(command)
    return command


# --- the results table's columns (run, quantize, report) -----------------------------------

# present/table.py COLUMNS, named here so `--help` imports nothing (tests/test_table.py checks).
TABLE_COLUMNS = ("variant", "policy", "size", "gzip", "zeros", "values", "accuracy", "agreement",
                 "delta", "p", "latency", "threads", "runtimes", "convert", "runs_on")  # fmt: skip


def _table_columns(ctx, param, value: str | None) -> list[str] | None:
    """Checked before anything runs: a misspelt column is an ERROR now, not after the run."""
    from quantbench.present.table import parse_columns

    return parse_columns(value)


_TABLE_OPTIONS = (
    click.option("--wide", is_flag=True, help="Show every column of the results table (printed "
                 "at its own width, lines longer than the terminal)."),
    click.option("--columns", callback=_table_columns, metavar="A,B,...",
                 help="The results table's columns, in the order given (variant comes first): "
                 + ", ".join(TABLE_COLUMNS) + " (default: variant,size,accuracy,delta,latency,"
                 "runs_on, fitted to the terminal)."),
)  # fmt: skip


def table_options(command):
    for option in reversed(_TABLE_OPTIONS):
        command = option(command)
    return command


# --- run ---------------------------------------------------------------------------------

RUN_FLAGS = config_flag_keys(  # flag name -> dotted config key
    "data",
    "image_size",
    "validation_split",
    "split_seed",
    "max_images_per_class",
    "alpha",
    "weights",
    "train_mode",
    "optimizer",
    "learning_rate",
    "epochs",
    "batch_size",
    "seed",
    "schemes",
    "calibration_images",
    *MEASURING_FLAGS,
    "transforms",
    "qat",
    "qat_epochs",
    "qat_learning_rate",
    "repeats",
    "seeds",
    *REPORTING_FLAGS,
)


@cli.command()
@click.option("--preset", help="default (the default), article or smoke.")
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
@click.option("--schemes", help="Comma-separated conversions, each NAME or NAME:KEY=VALUE:... "
              "(see `quantbench techniques`).")
@click.option("--transforms", help="Comma-separated model transforms, e.g. qat:recipe=finetune "
              "(see `quantbench techniques`; '' for none).")
@click.option("--calibration-images", type=int, help="Representative dataset size.")
@measuring_options
@click.option("--qat", help="QAT recipes, comma-separated (same as --transforms qat:recipe=R).")
@click.option("--qat-epochs", type=int, help="QAT epochs (default: the recipe's own).")
@click.option("--qat-learning-rate", type=float, help="QAT learning rate (default: the recipe's).")
@click.option("--repeats", type=int, help="Train and evaluate K times with different seeds.")
@click.option("--seeds", help="Explicit training seeds, comma-separated (overrides --repeats).")
@recommendation_options
@target_options
@click.option("--track", type=click.Choice(["mlflow", "wandb"]), help="Log the run to a tracker.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set train.epochs=3 (repeatable).")  # fmt: skip
@resume_options
@table_options
def run(preset: str | None, config_file: Path | None, assignments: tuple[str, ...],
        resume: Path | None, no_cache: bool, wide: bool, columns: list[str] | None,
        **flags) -> None:  # fmt: skip
    """Train the float baseline, convert it with every scheme, evaluate all on LiteRT."""
    from quantbench.engine import configure as config_mod

    flags["schemes"] = _csv_list(flags["schemes"])
    flags["threads"] = _csv_list(flags["threads"], int)
    flags["runtimes"] = _runtimes(flags["runtimes"])
    flags["qat"] = _csv_list(flags["qat"])
    flags["seeds"] = _csv_list(flags["seeds"], int)
    overrides = {RUN_FLAGS[k]: v for k, v in flags.items() if v is not None}
    for text in assignments:
        key, value = config_mod.parse_assignment(text)
        overrides[key] = value
    if preset in config_mod.PRESET_ALIASES:
        from quantbench.present.console import warn

        warn(f"preset {preset!r} is now called {config_mod.PRESET_ALIASES[preset]!r}")
    if resume is not None:
        if preset is not None:
            overrides["preset"] = preset
        cfg = config_mod.for_resume(resume, overrides, config_file)
    else:
        cfg = config_mod.resolve(preset or "default", config_file, overrides)

    from quantbench.ml import quiet
    from quantbench.commands import run as runner
    from quantbench.engine.context import Resources
    from quantbench.present import show_event, show_run

    quiet.import_tensorflow(verbose=_VERBOSE["on"])
    results, run_dir = runner.run(cfg, resume_dir=resume, use_cache=not no_cache,
                                  resources=Resources.detect(), emit=show_event)  # fmt: skip
    show_run(results, run_dir, "run", columns=columns, wide=wide)


# --- quantize ----------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="Photos to evaluate on: one sub-folder per class.")
@click.option("--labels", type=click.Path(path_type=Path),
              help="Class names in the model's output order, one a line (default: sorted folders).")
@click.option("--image-size", type=int, help="Input size, when the model does not fix one.")
@click.option("--scaling", type=click.Choice(["-1..1", "0..1", "0..255", "imagenet"]),
              help="Pixel scaling the model expects (default -1..1).")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), help="Default rgb.")
@click.option("--schemes", help="Comma-separated conversions (default: all; see `quantbench "
              "techniques`).")
@click.option("--transforms", help="Comma-separated model transforms, e.g. qat:recipe=finetune.")
@click.option("--eval-split", type=click.Choice(["rest", "validation", "all"]),
              help="Score every photo but the calibration slice (rest, the default; with "
              "--qat-epochs: validation), the validation split, or every photo.")
@click.option("--check", is_flag=True, default=None,
              help="First score every scaling x channel order and warn if the declared one is off.")
@click.option("--qat-epochs", type=int, help="Also fine-tune with QAT on DIR's training split.")
@click.option("--qat-learning-rate", type=float)
@click.option("--unsafe", is_flag=True, default=None,
              help="Allow Lambda layers (their Python code runs when the model loads).")
@click.option("--custom-objects", help="Module (or .py file) defining the model's custom layers.")
@click.option("--validation-split", type=float, help="Fraction of images held out (0..1).")
@click.option("--split-seed", type=int)
@click.option("--max-images-per-class", type=int)
@click.option("--calibration-images", type=int,
              help="Calibration photos: a seeded slice of DIR, at most a third (default 200); "
              "every other photo is scored.")
@measuring_options
@recommendation_options
@target_options
@click.option("--name", help="Run name (default: quantize-<model file name>).")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Where run directories go.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML or TOML file.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set data.validation_split=0.3 (repeatable).")  # fmt: skip
@resume_options
@table_options
def quantize(model: Path, config_file: Path | None, assignments: tuple[str, ...],
             resume: Path | None, no_cache: bool, wide: bool, columns: list[str] | None,
             **flags) -> None:  # fmt: skip
    """Quantize your own Keras model (.keras, .h5, SavedModel) with every scheme and evaluate
    each variant on your photos against the original."""
    from quantbench.engine import configure as config_mod
    from quantbench.commands import quantize as quantize_mod

    flags["schemes"] = _csv_list(flags["schemes"])
    flags["threads"] = _csv_list(flags["threads"], int)
    flags["runtimes"] = _runtimes(flags["runtimes"])
    overrides = dict(config_mod.parse_assignment(text) for text in assignments)
    if resume is not None:
        # The run's own config, checked against what this command asks for.
        asked, _ = quantize_mod.quantize_overrides(model, flags, config_file, overrides,
                                                   defaults=False)
        cfg, size_given = config_mod.for_resume(resume, asked), True
    else:
        cfg, size_given = quantize_mod.build_config(model, flags, config_file, overrides)

    from quantbench.ml import quiet
    from quantbench.engine.context import Resources
    from quantbench.present import show_event, show_run

    quiet.import_tensorflow(verbose=_VERBOSE["on"])
    results, run_dir = quantize_mod.run_quantize(
        cfg, size_given=size_given, resume_dir=resume, use_cache=not no_cache,
        resources=Resources.detect(), emit=show_event,
    )
    show_run(results, run_dir, "quantize", columns=columns, wide=wide)
