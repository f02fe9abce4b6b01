"""Commands on files: the registries (`schemes`, `techniques`), `bench`, `analyze`, `report`
and `compare`. None of them trains; `report` and `compare` import no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import click

from quantbench.cli.app import (  # the group and the options the commands share
    _csv_list, cli, recommendation_options,
)
from quantbench.cli.measure import table_options


# --- schemes ------------------------------------------------------------------------------


@cli.command()
def schemes() -> None:
    """List the conversion schemes, one line each."""
    from rich.table import Table

    from quantbench.present.console import out
    from quantbench.techniques.schemes import SCHEMES

    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("scheme", "policy", "default", "what it does"):
        table.add_column(column)
    for s in SCHEMES:
        table.add_row(s.name, s.policy, "yes" if s.default else "no", s.description)
    out.print(table)


@cli.command()
def techniques() -> None:
    """List the conversions and model transforms with their parameters."""

    _show_techniques()


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

    from quantbench.commands import bench as bench_mod
    from quantbench.ml.preprocess import Preprocessing
    from quantbench.measure.runtimes import parse_runtimes

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

    from quantbench.present.console import out

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
    from quantbench.commands.analyze import analyze_run
    from quantbench.present.console import out as stdout
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
@table_options
def report(run_dir: Path, out: Path | None, max_accuracy_drop, max_size, max_gzip_size,
           max_latency, objective, confidence, target, wide: bool,
           columns: list[str] | None) -> None:  # fmt: skip
    """Print the results table and rebuild report.html from RUN_DIR/results.json (no
    retraining, no TensorFlow)."""
    from quantbench.analysis import recommend as rec_mod
    from quantbench.present.console import out as stdout
    from quantbench.report import write_report
    from quantbench.core.results import load

    results = load(run_dir)
    flags = {"max_accuracy_drop": max_accuracy_drop, "max_size_mb": max_size,
             "max_gzip_size_mb": max_gzip_size, "max_latency_ms": max_latency, "objective": objective,
             "confidence": confidence, "target": target}  # fmt: skip
    rec = None if any(v is not None for v in flags.values()) else rec_mod.stored(results)
    if rec is None:
        # Shown in this report only; results.json keeps what the run recorded.
        rec = rec_mod.attach(results, _constraints(rec_mod, results, flags))
    path = write_report(results, run_dir, out)
    from quantbench.present.sections import print_recommendation
    from quantbench.present.table import print_results

    print_results(results, columns=columns, wide=wide)
    print_recommendation(rec)
    stdout.print(f"\nreport: {path}", highlight=False)


def _constraints(rec_mod, results, flags: dict):
    from pydantic import ValidationError

    from quantbench.core.errors import ConfigError

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
    from quantbench.present.console import out as stdout
    from quantbench.report import write_comparison
    from quantbench.core.results import load

    path = write_comparison([(load(d), d) for d in run_dirs], out)
    stdout.print(f"comparison of {len(run_dirs)} runs: {path}", highlight=False)


def _show_techniques() -> None:
    """Both registries, one line per entry, with each entry's parameters."""
    from rich.table import Table

    from quantbench.present.console import out

    from quantbench.techniques.schemes import SCHEMES
    from quantbench.techniques.transforms import TRANSFORMS

    for registry, title in ((SCHEMES, "schemes (--schemes)"),
                            (TRANSFORMS, "model transforms (--transforms)")):  # fmt: skip
        table = Table(title=title, box=None, pad_edge=False, header_style="bold",
                      title_justify="left")  # fmt: skip
        for column in ("name", "default", "parameters", "what it does"):
            table.add_column(column)
        for entry in registry:
            table.add_row(entry.name, "yes" if entry.default else "no",
                          entry.param_help() or "-", getattr(entry, "description", ""))  # fmt: skip
        out.print(table)
        out.print()
