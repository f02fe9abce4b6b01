"""`quantbench run`: the whole pipeline, data -> model -> train -> convert -> evaluate -> results.

Results are saved after every step, so an interrupted or failed run keeps what it measured.
`evaluate_source` is the piece shared by every trained model a run produces (the float
baseline, QAT models, a user's own model): convert with each scheme, score on LiteRT, time it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from quantbench import atomic, console, environment, results as results_mod
from quantbench.config import RunConfig
from quantbench.convert import convert_all
from quantbench.data import Dataset, calibration_indices, load_dataset
from quantbench.evaluate import EvaluationError, EvalWorker, score
from quantbench.preprocess import Preprocessing
from quantbench.results import RunResults, VariantResult
from quantbench.schemes import get_scheme

LATENCY_IMAGES = 16  # real validation images the latency loop cycles through


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create_run_dir(output_dir: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    base = Path(output_dir) / f"{stamp}-{slug}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


def variant_name(source: str, scheme: str) -> str:
    return scheme if source == "float" else f"{source}_{scheme}"


@dataclass
class EvalContext:
    """What every evaluated source shares: the data, the inputs scaled once, the settings."""

    cfg: RunConfig
    run_dir: Path
    dataset: Dataset
    val_inputs: np.ndarray  # float32, scaled once for every variant
    calibration_inputs: np.ndarray
    reference_predictions: np.ndarray | None = None  # top-1 of the float Keras model
    worker: EvalWorker | None = None  # started at the first variant, closed by `pipeline`

    def predict(self, path: Path) -> tuple[np.ndarray, float]:
        """(scores, seconds) of a .tflite on the validation images, in the evaluation worker."""
        if self.worker is None:
            self.worker = EvalWorker(self.val_inputs)
        evaluate = self.cfg.evaluate
        return self.worker.predict(path, evaluate.threads[-1], evaluate.batch_size)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path, dataset: Dataset) -> EvalContext:
        preprocessing = preprocessing_of(cfg)
        picks = calibration_indices(
            len(dataset.train_images), cfg.convert.calibration_images, cfg.data.split_seed
        )
        return cls(
            cfg, run_dir, dataset,
            preprocessing.scale(dataset.val_images),
            preprocessing.scale(dataset.train_images[picks]),
        )  # fmt: skip


def preprocessing_of(cfg: RunConfig) -> Preprocessing:
    return Preprocessing(cfg.data.image_size, cfg.data.scaling, cfg.data.channel_order)


def _measure(ctx: EvalContext, row: VariantResult, path: Path) -> None:
    from quantbench import latency

    threads = ctx.cfg.evaluate.threads
    predictions, row.eval_seconds = ctx.predict(path)
    scores = score(predictions, ctx.dataset.val_labels, ctx.dataset.classes, ctx.reference_predictions)
    row.accuracy, row.agreement = scores.accuracy, scores.agreement
    row.per_class_accuracy, row.confusion = scores.per_class_accuracy, scores.confusion
    row.eval_images = len(ctx.val_inputs)
    row.latency = latency.measure_all(
        path,
        ctx.val_inputs[:LATENCY_IMAGES],
        threads,
        min_runs=ctx.cfg.evaluate.latency_runs,
        warmup_runs=ctx.cfg.evaluate.warmup_runs,
    )


def evaluate_source(
    ctx: EvalContext, results: RunResults, model, source: str, scheme_names: list[str],
    repeat: int = 0,
) -> list[VariantResult]:  # fmt: skip
    """Convert `model` with every scheme and measure each file; rows are saved as they finish."""
    from quantbench import explain

    out_dir = ctx.run_dir if repeat == 0 else ctx.run_dir / f"repeat-{repeat}"
    prefix = "" if source == "float" else f"{source}_"
    console.step(f"converting the {source} model: {', '.join(scheme_names)}")
    started = time.perf_counter()
    with console.progress(f"converting {len(scheme_names)} schemes", len(scheme_names)) as advance:
        conversions = convert_all(model, scheme_names, ctx.calibration_inputs, out_dir,
                                  prefix=prefix, on_progress=lambda *_: advance())  # fmt: skip
    console.info(f"converted in {time.perf_counter() - started:.1f} s")
    rows: list[VariantResult] = []
    for conversion in conversions:
        scheme = get_scheme(conversion.scheme)
        row = VariantResult(
            variant=variant_name(source, scheme.name), source=source, scheme=scheme.name,
            policy=scheme.policy, repeat=repeat, convert_seconds=conversion.seconds,
        )  # fmt: skip
        if conversion.error:
            row.status, row.error = "failed", conversion.error
            console.warn(f"{prefix}{scheme.name} failed to convert: {conversion.error}")
        else:
            row.path = str(conversion.path.relative_to(ctx.run_dir))
            row.size_bytes = conversion.path.stat().st_size
            twin = next((r for r in rows if r.scheme == conversion.identical_to), None)
            if twin is not None:
                # The same model: copy the measurements and say so.
                # Copy attributes, not a dump: model_copy(update=) does not re-validate, so
                # dumped dicts would replace the LatencyResult objects.
                copied = twin.model_copy(deep=True)
                measured = {k: getattr(copied, k) for k in ("accuracy", "agreement", "eval_images",
                    "per_class_accuracy", "confusion", "latency", "input_dtype", "output_dtype")}  # fmt: skip
                row = row.model_copy(update={**measured, "status": "identical",
                                             "identical_to": twin.variant})  # fmt: skip
                row.notes.append(f"the same model as {twin.variant}: the scheme had no effect (the "
                                 "files differ at most in the converter's record of the options)")
            else:
                console.info(f"evaluating {row.variant}")
                from quantbench.latency import LatencyError
                from quantbench.litert import io_dtypes

                row.input_dtype, row.output_dtype = io_dtypes(conversion.path)
                try:
                    _measure(ctx, row, conversion.path)
                except (EvaluationError, LatencyError) as e:
                    # Like a failed conversion: this row says why, the run goes on.
                    row.status, row.error = "failed", e.message
                    console.warn(f"{row.variant}: {e.message}")
                else:
                    # Every variant's speed is compared with the float baseline's float32 file.
                    baseline = results.variant("float32", repeat)
                    reference_ms = baseline.latency_ms() if baseline and baseline.ok else None
                    row.notes += explain.explain(conversion.path, row.latency, reference_ms)
        rows.append(row)
        results.variants.append(row)
        results_mod.save(results, ctx.run_dir)
    return rows


def _reference_row(ctx: EvalContext, model, source: str, repeat: int) -> VariantResult:
    """The Keras float model scored on the same validation images: the reference row."""
    from quantbench.train import predict_keras

    started = time.perf_counter()
    probabilities = predict_keras(model, ctx.dataset.val_images, preprocessing_of(ctx.cfg))
    seconds = time.perf_counter() - started
    predictions = probabilities.argmax(axis=1)
    if source == "float":
        ctx.reference_predictions = predictions
    scores = score(predictions, ctx.dataset.val_labels, ctx.dataset.classes, ctx.reference_predictions)
    return VariantResult(
        variant=f"keras_{source}", source=source, policy="Keras (reference)", kind="keras",
        repeat=repeat, accuracy=scores.accuracy, agreement=scores.agreement,
        per_class_accuracy=scores.per_class_accuracy, confusion=scores.confusion,
        eval_images=len(predictions), eval_seconds=seconds,
    )  # fmt: skip


def save_for_inference(model, path: Path) -> None:
    """Save the model without its optimizer's state (a third of the file for Adam)."""
    import tf_keras as keras

    # The .keras format has no include_optimizer flag: save an uncompiled twin instead.
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.save(path)


def train_and_evaluate(ctx: EvalContext, results: RunResults, repeat: int, seed: int) -> None:
    from quantbench.model import build_classifier, freeze_base
    from quantbench.train import fit, seed_everything

    cfg = ctx.cfg
    console.step(f"training the float baseline (seed {seed}, {cfg.train.epochs} epochs)")
    seed_everything(seed)
    model = build_classifier(len(ctx.dataset.classes), cfg.model, cfg.data.image_size)
    if cfg.train.mode == "frozen_base":
        freeze_base(model)
    training = fit(model, ctx.dataset, preprocessing_of(cfg), cfg.train, seed=seed, repeat=repeat)
    results.training.append(training)
    if repeat == 0:
        save_for_inference(model, ctx.run_dir / "model.keras")
    reference = _reference_row(ctx, model, "float", repeat)
    if repeat == 0:
        reference.path = "model.keras"
        reference.size_bytes = (ctx.run_dir / "model.keras").stat().st_size
    results.variants.append(reference)
    results_mod.save(results, ctx.run_dir)
    evaluate_source(ctx, results, model, "float", cfg.convert.scheme_names(), repeat)
    for recipe in cfg.qat.recipes:
        evaluate_qat(ctx, results, model, recipe, repeat, seed)


def evaluate_qat(ctx: EvalContext, results: RunResults, float_model, recipe: str, repeat: int,
                 seed: int) -> None:  # fmt: skip
    """Train one QAT recipe (docs/qat.md), then score its Keras model and every QAT scheme."""
    from quantbench.qat import train_qat

    source = f"qat_{recipe}"
    qat_model, training = train_qat(
        recipe, float_model=float_model, dataset=ctx.dataset, preprocessing=preprocessing_of(ctx.cfg),
        cfg=ctx.cfg, repeat=repeat, seed=seed,
    )  # fmt: skip
    results.training.append(training)
    results.variants.append(_reference_row(ctx, qat_model, source, repeat))
    results_mod.save(results, ctx.run_dir)
    evaluate_source(ctx, results, qat_model, source, ctx.cfg.qat.schemes, repeat)


def preflight(cfg: RunConfig) -> None:
    """Fail on bad inputs before a run directory exists: the data folder and the weights."""
    from quantbench.data import check_class_folders, resolve_data_dir
    from quantbench.model import resolve_weights

    check_class_folders(resolve_data_dir(cfg.data.dir))
    resolve_weights(cfg.model.weights, cfg.model.alpha)
    if cfg.track:
        from quantbench.tracking import check_available

        check_available(cfg.track)  # a missing tracker fails now, not after training


def start(cfg: RunConfig, command: str = "run") -> tuple[RunResults, Path]:
    """Create the run directory, write the resolved config and the first results.json."""
    run_dir = create_run_dir(cfg.output_dir, cfg.name)
    atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    results = RunResults(
        name=cfg.name, command=command, created=_now(), config=cfg.to_dict(),
        environment=environment.capture(),
    )  # fmt: skip
    results_mod.save(results, run_dir)
    console.step(f"run directory: {run_dir}")
    return results, run_dir


def finish(results: RunResults, run_dir: Path, started: float, status: str) -> None:
    results.status = status
    results.finished = _now()
    results.total_seconds = time.perf_counter() - started
    results_mod.save(results, run_dir)


def pipeline(
    cfg: RunConfig, command: str, body: Callable[[EvalContext, RunResults], None],
    dataset: Dataset | None = None,
) -> tuple[RunResults, Path]:  # fmt: skip
    """The frame every command shares: run directory, images (read here unless given), the
    shared EvalContext, `body(ctx, results)` (train/convert/evaluate), then finish and print."""
    started = time.perf_counter()
    results, run_dir = start(cfg, command)
    try:
        if dataset is None:
            console.step("reading images")
            dataset = load_dataset(cfg.data)
        results.data = dataset.summary
        summary = dataset.summary
        console.info(
            f"{len(summary.classes)} classes, {summary.train_count} training and "
            f"{summary.val_count} validation images, {len(summary.skipped)} skipped"
        )
        results_mod.save(results, run_dir)
        ctx = EvalContext.build(cfg, run_dir, dataset)
        try:
            body(ctx, results)
        finally:
            ctx.close()
    except BaseException:
        finish(results, run_dir, started, "failed")
        _write_report(results, run_dir)  # what was measured stays viewable
        raise
    finish(results, run_dir, started, "complete")
    from quantbench.recommend import attach, print_recommendation
    from quantbench.table import print_results

    recommendation = attach(results, cfg.recommend)
    results_mod.save(results, run_dir)
    report = _write_report(results, run_dir)
    print_results(results)
    print_recommendation(recommendation)
    if cfg.track:
        from quantbench.tracking import log_run

        where = log_run(results, run_dir, cfg.track)
        console.out.print(f"tracked in {cfg.track}: {where}", highlight=False, soft_wrap=True)
    if report:
        console.out.print(f"report: {report}", highlight=False, soft_wrap=True)
    console.out.print(f"\nrun directory: {run_dir}", highlight=False, soft_wrap=True)
    return results, run_dir


def _write_report(results: RunResults, run_dir: Path) -> Path | None:
    from quantbench.report import write_report

    try:
        return write_report(results, run_dir)
    except Exception as e:  # noqa: BLE001 - a report bug must not cost the measurements
        console.warn(f"could not write report.html ({type(e).__name__}: {e}); results.json is complete")
        return None


def run(cfg: RunConfig) -> tuple[RunResults, Path]:
    """Run the experiment `cfg` describes; returns the results and the run directory."""
    preflight(cfg)

    def train_every_seed(ctx: EvalContext, results: RunResults) -> None:
        for repeat, seed in enumerate(cfg.training_seeds()):
            train_and_evaluate(ctx, results, repeat, seed)
        from quantbench import seed as seed_report, stats

        stats.attach(results)  # repeat statistics and training cost
        seed_report.attach(results)  # the seed report's figures and claims beside ours

    results, run_dir = pipeline(cfg, "run", train_every_seed)
    from quantbench import seed as seed_report
    from quantbench.qat import training_table

    console.out.print(training_table(results))
    seed_report.print_comparison(results)
    return results, run_dir
