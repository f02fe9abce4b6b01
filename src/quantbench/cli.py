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
from quantbench.config import REPORTING_FLAGS, flag_keys as config_flag_keys
from quantbench.errors import QuantbenchError

_VERBOSE = {"on": False}
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _runtimes(value: str | None) -> list[str] | None:
    from quantbench.runtimes import parse_runtimes

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
    "search_data",
    "threads",
    "latency_runs",
    "runtimes",
    "wait_quiet",
    "transforms",
    "qat",
    "qat_epochs",
    "qat_learning_rate",
    "repeats",
    "seeds",
    *REPORTING_FLAGS,
)


@cli.command()
@click.option("--preset", help="default (the default), seed or smoke.")
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
@click.option("--search-data", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Labelled images (class sub-folders) that score selective's candidates "
              "(default: a slice of the training split; never the validation split).")
@click.option("--threads", help="Comma-separated thread counts for latency, e.g. 1,2.")
@click.option("--latency-runs", type=int, help="Timed invokes per latency figure.")
@click.option("--runtimes", help="LiteRT APIs to time: interpreter (default), compiled "
              "(CompiledModel), or both: interpreter,compiled.")
@click.option("--wait-quiet", type=click.FloatRange(0, 86_400), metavar="SECONDS",
              help="Re-measure figures timed on a busy machine at the end, waiting at most this "
              "long in all for quiet (default 60).")
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
def run(preset: str | None, config_file: Path | None, assignments: tuple[str, ...],
        resume: Path | None, no_cache: bool, **flags) -> None:  # fmt: skip
    """Train the float baseline, convert it with every scheme, evaluate all on LiteRT."""
    from quantbench import config as config_mod

    flags["schemes"] = _csv_list(flags["schemes"])
    flags["threads"] = _csv_list(flags["threads"], int)
    flags["runtimes"] = _runtimes(flags["runtimes"])
    flags["qat"] = _csv_list(flags["qat"])
    flags["seeds"] = _csv_list(flags["seeds"], int)
    overrides = {RUN_FLAGS[k]: v for k, v in flags.items() if v is not None}
    for text in assignments:
        key, value = config_mod.parse_assignment(text)
        overrides[key] = value
    if resume is not None:
        if preset is not None:
            overrides["preset"] = preset
        cfg = config_mod.for_resume(resume, overrides, config_file)
    else:
        cfg = config_mod.resolve(preset or "default", config_file, overrides)

    from quantbench import quiet, runner
    from quantbench.present import show_event, show_run

    quiet.import_tensorflow(verbose=_VERBOSE["on"])
    results, run_dir = runner.run(cfg, resume_dir=resume, use_cache=not no_cache, emit=show_event)
    show_run(results, run_dir, "run")


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
@click.option("--search-data", type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="Labelled images (class sub-folders) that score selective's candidates "
              "(default: a slice of the training split; never the validation split).")
@click.option("--threads", help="Comma-separated thread counts for latency, e.g. 1,2.")
@click.option("--latency-runs", type=int, help="Timed invokes per latency figure.")
@click.option("--runtimes", help="LiteRT APIs to time: interpreter (default), compiled "
              "(CompiledModel), or both: interpreter,compiled.")
@click.option("--wait-quiet", type=click.FloatRange(0, 86_400), metavar="SECONDS",
              help="Re-measure figures timed on a busy machine at the end, waiting at most this "
              "long in all for quiet (default 60).")
@recommendation_options
@target_options
@click.option("--name", help="Run name (default: quantize-<model file name>).")
@click.option("--output-dir", type=click.Path(path_type=Path), help="Where run directories go.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML or TOML file.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any config key, e.g. --set data.validation_split=0.3 (repeatable).")  # fmt: skip
@resume_options
def quantize(model: Path, config_file: Path | None, assignments: tuple[str, ...],
             resume: Path | None, no_cache: bool, **flags) -> None:  # fmt: skip
    """Quantize your own Keras model (.keras, .h5, SavedModel) with every scheme and evaluate
    each variant on your photos against the original."""
    from quantbench import config as config_mod
    from quantbench import quantize as quantize_mod

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

    from quantbench import quiet
    from quantbench.present import show_event, show_run

    quiet.import_tensorflow(verbose=_VERBOSE["on"])
    results, run_dir = quantize_mod.run_quantize(
        cfg, size_given=size_given, resume_dir=resume, use_cache=not no_cache, emit=show_event
    )
    show_run(results, run_dir, "quantize")


# --- schemes ------------------------------------------------------------------------------


@cli.command()
def schemes() -> None:
    """List the conversion schemes, one line each."""
    from rich.table import Table

    from quantbench.console import out
    from quantbench.techniques.conversions import CONVERSIONS

    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("scheme", "policy", "default", "what it does"):
        table.add_column(column)
    for s in CONVERSIONS:
        table.add_row(s.name, s.policy, "yes" if s.default else "no", s.description)
    out.print(table)


@cli.command()
def techniques() -> None:
    """List the conversions and model transforms with their parameters."""
    from quantbench.present import show_techniques

    show_techniques()


# --- bench --------------------------------------------------------------------------------

# click's FloatRange lets nan through (every comparison with it is false); a day is the cap.
FINITE_SECONDS = click.FloatRange(0, 86_400)


def _finite(ctx, param, value):
    if value is not None and value != value:  # nan
        raise click.BadParameter(f"{value!r} is not a number of seconds")
    return value



@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--threads", help="Comma-separated thread counts (default: 1 and all cores).")
@click.option("--delegates", default="xnnpack", show_default=True,
              help="Comma-separated: xnnpack (LiteRT's default), none (builtin kernels).")
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True,
              help="Minimum timed invokes per figure.")
@click.option("--min-seconds", type=FINITE_SECONDS, default=1.0, show_default=True,
              callback=_finite, help="Minimum timed seconds per figure.")
@click.option("--max-seconds", type=FINITE_SECONDS, default=10.0, show_default=True,
              callback=_finite, help="Cap of the timed loop (slow models stop here with fewer runs).")
@click.option("--warmup-runs", type=click.IntRange(0), default=5, show_default=True)
@click.option("--data", type=click.Path(path_type=Path),
              help="Feed real images from this folder (default: random inputs).")
@click.option("--image-size", type=click.IntRange(1),
              help="Image size (default: the model's input size).")
@click.option("--scaling", type=click.Choice(["-1..1", "0..1", "0..255", "imagenet"]),
              default="-1..1", show_default=True, help="Pixel scaling the model expects.")
@click.option("--channel-order", type=click.Choice(["rgb", "bgr"]), default="rgb",
              show_default=True)
@click.option("--images", type=click.IntRange(1, 10_000), default=16, show_default=True,
              help="How many inputs to cycle through.")
@click.option("--runtimes", default="interpreter", show_default=True,
              help="LiteRT APIs to time: interpreter, compiled (CompiledModel), or both.")
@click.option("--wait-quiet", type=FINITE_SECONDS, is_flag=False, flag_value=60.0,
              callback=_finite, metavar="[SECONDS]",
              help="Re-measure figures timed while other processes held the cores, after "
                   "waiting at most SECONDS (default 60) in all for the machine to be quiet.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def bench(model: Path, threads: str | None, delegates: str, runs: int, min_seconds: float,
          max_seconds: float, warmup_runs: int, data: Path | None, image_size: int | None,
          scaling: str, channel_order: str, images: int, runtimes: str,
          wait_quiet: float | None, as_json: bool) -> None:  # fmt: skip
    """Benchmark any .tflite file's latency on LiteRT (benchmark_model's method)."""
    import json

    from quantbench import bench as bench_mod
    from quantbench.preprocess import Preprocessing
    from quantbench.runtimes import parse_runtimes

    threads_list = bench_mod.parse_threads(threads)
    modes = bench_mod.parse_delegates(delegates)
    runtime_list = parse_runtimes(runtimes)
    bench_mod.check_model_file(model)
    size = image_size or bench_mod.input_shape(model)[1]
    report = bench_mod.bench(
        model, threads_list, modes, data_dir=data,
        preprocessing=Preprocessing(size, scaling, channel_order), images=images,
        runtimes=runtime_list, wait_quiet=wait_quiet, min_runs=runs, min_seconds=min_seconds,
        max_seconds=max_seconds, warmup_runs=warmup_runs,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_bench(report)


def _print_bench(report: dict) -> None:
    from rich.table import Table

    from quantbench.console import out

    from rich.text import Text

    table = Table(title=Text(f"{report['model']} ({report['size_bytes'] / 1e6:.2f} MB)"),
                  header_style="bold", title_justify="left")  # fmt: skip
    columns = ["threads", "runtime", "delegate", "runs", "init", "first", "median", "mean", "std",
               "min", "p90", "p95", "max", "cpu", "peak RSS", "others"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("delegate", "runtime") else "right")
    for r in report["results"]:
        ms = [f"{r[k]:.3g}" if r[k] is not None else "-" for k in
              ("init_ms", "first_invoke_ms", "median_ms", "mean_ms", "std_ms", "min_ms",
               "p90_ms", "p95_ms", "max_ms", "cpu_ms")]  # fmt: skip
        runs = f"{r['runs']}{' (capped)' if r['capped'] else ''}"
        rss = f"{r['peak_rss_mb']:.1f} MB" if r["peak_rss_mb"] is not None else "-"
        others = "-" if r.get("other_cpu") is None else f"{r['other_cpu']:.2f}"
        others += " (busy)" if r.get("busy") else ""
        table.add_row(str(r["threads"]), r.get("runtime", "interpreter"), r["delegate"], runs,
                      *ms, rss, others)  # fmt: skip
    out.print(table)
    out.print(f"times in ms (cpu: median process CPU time per invoke); device {report['device']} "
              f"({report['cpu_cores']} cores); "
              f"inputs: {report['inputs']}; XNNPACK takes {report['delegated_ops']} of "
              f"{report['ops']} ops", highlight=False)  # fmt: skip
    out.print("others: cores other processes used during the timed loop (busy: they took cores "
              "the figure's threads needed)", highlight=False)  # fmt: skip
    for note in report["notes"]:
        out.print(f"- {note}", highlight=False)


# --- report, compare ---------------------------------------------------------------------


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--variant", "variants", help="Comma-separated variants (default: every integer one).")
def analyze(run_dir: Path, variants: str | None) -> None:
    """Per-layer error of a finished run's integer variants against the float model, named by
    Keras layer: into results.json, layers-<variant>.csv and report.html."""
    from quantbench.analysis import analyze_run
    from quantbench.console import out as stdout
    from quantbench.present import show_event

    results = analyze_run(run_dir, _csv_list(variants), emit=show_event)
    for a in results.layer_analyses:
        worst = ", ".join(f"{e.layer or e.tensor} {e.rmse_scale:.2f}" for e in a.layers[:5])
        stdout.print(f"{a.variant}: {len(a.layers)} quantized ops, {a.named_fraction:.0%} named; "
                     f"worst RMSE/scale: {worst}", highlight=False, markup=False)
    stdout.print(f"\nreport: {run_dir / 'report.html'}", highlight=False, markup=False)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), help="Default: RUN_DIR/report.html.")
@recommendation_options
def report(run_dir: Path, out: Path | None, max_accuracy_drop, max_size, max_gzip_size,
           max_latency, objective, confidence, target) -> None:  # fmt: skip
    """Rebuild report.html from RUN_DIR/results.json (no retraining, no TensorFlow)."""
    from quantbench import recommend as rec_mod
    from quantbench.console import out as stdout
    from quantbench.report import write_report
    from quantbench.results import load

    results = load(run_dir)
    flags = {"max_accuracy_drop": max_accuracy_drop, "max_size_mb": max_size,
             "max_gzip_size_mb": max_gzip_size, "max_latency_ms": max_latency, "objective": objective,
             "confidence": confidence, "target": target}  # fmt: skip
    rec = None if any(v is not None for v in flags.values()) else rec_mod.stored(results)
    if rec is None:
        # Shown in this report only; results.json keeps what the run recorded.
        rec = rec_mod.attach(results, _constraints(rec_mod, results, flags))
    path = write_report(results, run_dir, out)
    rec_mod.print_recommendation(rec)
    stdout.print(f"\nreport: {path}", highlight=False)


def _constraints(rec_mod, results, flags: dict):
    from pydantic import ValidationError

    from quantbench.errors import ConfigError

    try:
        return rec_mod.constraints_of(results, **flags)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"bad value for {first['loc'][0]!r}: {first['input']!r}: {first['msg']}",
                          tip="limits must be positive numbers") from None  # fmt: skip


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("comparison.html"),
              show_default=True, help="Where to write the comparison page.")  # fmt: skip
def compare(run_dirs: tuple[Path, ...], out: Path) -> None:
    """One report across several runs: combined table and trade-off plots."""
    from quantbench.console import out as stdout
    from quantbench.report import write_comparison
    from quantbench.results import load

    path = write_comparison([(load(d), d) for d in run_dirs], out)
    stdout.print(f"comparison of {len(run_dirs)} runs: {path}", highlight=False)


# --- sweep --------------------------------------------------------------------------------


@cli.command()
@click.argument("sweep_file", type=click.Path(path_type=Path))
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this machine (one trial at a time, or a few with --parallel); "
              "ray: trials as Ray tasks (pip install 'quantbench[ray]').")
@click.option("--address", help="Ray cluster address (default: start Ray on this machine).")
@click.option("--max-trials", type=click.IntRange(1), help="Run only the first N trials of the grid.")
@click.option("--cpus-per-trial", type=click.IntRange(1), help="Cores each trial declares "
              "(default: 4 locally, at most the machine's; 1 on Ray).")
@click.option("--parallel", type=click.IntRange(1), help="Local engine: trials at once "
              "(default: cores / cpus-per-trial).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs"),
              show_default=True, help="The sweep directory goes here (sweep-NAME).")
@click.option("--no-cache", is_flag=True, help="Do not share the global model cache: the sweep "
              "keeps its own store (its trials still share trained models).")  # fmt: skip
def sweep(sweep_file: Path, engine: str, address: str | None, max_trials: int | None,
          cpus_per_trial: int | None, parallel: int | None, output_dir: Path, no_cache: bool) -> None:  # fmt: skip
    """Run many configurations: a base plus axes over config keys, each trial a full run.

    Running the same sweep again skips finished trials and resumes a killed one."""
    from quantbench import quiet, sweep as sweep_mod
    from quantbench.present import show_event, show_sweep

    spec = sweep_mod.load_spec(sweep_file)
    sweep_dir = sweep_mod.sweep_dir_of(spec, output_dir)
    sweep_mod.trials_of(spec, sweep_dir, max_trials)  # every trial validated before Ray starts
    cache = str(sweep_dir / ".store") if no_cache else None
    if engine == "ray":
        from quantbench.sweep_engines import RayEngine

        runner = RayEngine(spec.command, cache, address=address, cpus_per_trial=cpus_per_trial or 1)
    else:
        from quantbench.sweep_engines import LocalEngine

        runner = LocalEngine(spec.command, cache, parallel=parallel, cpus_per_trial=cpus_per_trial)
        if runner.slots == 1:
            quiet.import_tensorflow(verbose=_VERBOSE["on"])
    state, sweep_dir = sweep_mod.run_sweep(spec, output_dir=output_dir, engine=runner,
                                           max_trials=max_trials, emit=show_event)  # fmt: skip
    show_sweep(state, sweep_dir)
    if state.counts()["failed"]:
        sys.exit(1)


# --- cache --------------------------------------------------------------------------------


@cli.group()
def cache() -> None:
    """The model cache: trained models, .tflite files and measurements reused across runs
    ($QUANTBENCH_CACHE, default ~/.cache/quantbench)."""


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _age(when) -> str:
    import time

    seconds = max(0.0, time.time() - when.timestamp())
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit}"
    return "now"


@cache.command("list")
def cache_list() -> None:
    """List cached entries: key, stage, label, size, age and last use."""
    from rich.table import Table
    from rich.text import Text

    from quantbench.console import out
    from quantbench.store import Store

    store = Store()
    entries = store.list()
    if not entries:
        out.print(f"the model cache at {store.root} is empty", highlight=False, markup=False)
        return
    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("key", "stage", "label", "size", "age", "used"):
        table.add_column(column, justify="right" if column in ("size", "age", "used") else "left")
    for e in entries:
        table.add_row(e.key[:12], e.stage, Text(e.label), _bytes(e.size_bytes), _age(e.created),
                      _age(e.used))  # fmt: skip
    out.print(table)
    total = sum(e.size_bytes for e in entries)
    out.print(f"{_entries(len(entries))}, {_bytes(total)} in {store.root}", highlight=False,
              markup=False)  # fmt: skip


@cache.command("clear")
@click.option("--stage", help="Only entries of this stage (see `quantbench cache list`).")
@click.option("--older-than", type=click.FloatRange(0), metavar="DAYS",
              help="Only entries not used for DAYS days.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(stage: str | None, older_than: float | None, yes: bool) -> None:
    """Remove cached entries (all, or those matching --stage / --older-than).

    Asks first on a terminal; elsewhere it needs --yes, since the cache can hold hours of
    training and a script that forgot --yes should fail loudly rather than do nothing.
    """
    from quantbench.console import out
    from quantbench.errors import ConfigError
    from quantbench.store import Store
    from quantbench.suggest import did_you_mean

    store = Store()
    doomed = store.select(stage, older_than)
    if not doomed:
        stages = sorted({e.stage for e in store.list()})
        message = f"nothing to remove from {store.root}"
        if stage and stage not in stages:
            message += f": no entries of stage {stage!r}{did_you_mean(stage, stages)}"
            message += f"; stages present: {', '.join(stages)}" if stages else ""
        out.print(message, highlight=False, markup=False)
        store.sweep()  # damaged entries and crashed writes are garbage either way
        return
    size = sum(e.size_bytes for e in doomed)
    what = f"{_entries(len(doomed))} ({_bytes(size)}) from {store.root}"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"would remove {what}; nothing removed",
                              tip="add --yes to remove them")  # fmt: skip
        if not click.confirm(f"remove {what}?", err=True):
            out.print("nothing removed", highlight=False)
            return
    count, size = store.clear(stage, older_than)
    out.print(f"removed {_entries(count)} ({_bytes(size)}) from {store.root}", highlight=False,
              markup=False)  # fmt: skip


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
    from quantbench.interrupt import signals_raise

    with signals_raise():
        _main(argv)


def _exit_for_signal() -> None:
    """A stop signal whose exception reached the boundary as another one (see
    interrupt.received): report the signal, not what it was turned into."""
    from quantbench.interrupt import Terminated, received

    signum = received()
    if signum is not None:
        _stopped(Terminated(signum))


def _stopped(e: KeyboardInterrupt) -> None:
    """Ctrl-C, or SIGTERM/SIGHUP (interrupt.Terminated): say which, exit 128 + the signal."""
    from quantbench.interrupt import Terminated

    what = f"stopped by {e.signal_name}" if isinstance(e, Terminated) else "interrupted"
    _error(f"{what}; results written so far are kept in the run directory", None)
    sys.exit(e.exit_code if isinstance(e, Terminated) else 130)


def _main(argv: list[str] | None) -> None:
    from quantbench.errors import machine_error

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
