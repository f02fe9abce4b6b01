"""The executor's stages for one variant: the Keras reference row, conversion, measurement.

Each stage asks the store first and records what it reused in the row's `reused` list, so a
table or report can say which figures are new. Keys (store.store_key) chain: a converted file's
key has its model's key as parent, a measurement's key has the file's; data fingerprints and
library versions are part of every key, and latency keys add the machine's fingerprint
(a figure from another CPU is not this machine's latency).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.core import results as results_mod
from quantbench.engine.plan import ModelSpec, VariantSpec
from quantbench.core.results import LatencyResult, VariantResult

if TYPE_CHECKING:
    from quantbench.engine.executor import Executor, _LazyModel

LATENCY_IMAGES = 16  # real validation images the latency loop cycles through
MEASURED_FIELDS = ("accuracy", "agreement", "eval_images", "eval_seconds", "per_class_accuracy",
                   "confusion", "input_dtype", "output_dtype", "accuracy_ci", "agreement_ci",
                   "vs_reference", "predictions")  # fmt: skip
WORKER_FAILURE = "converter process failed"  # convert.convert_saved_model's crash/hang reason
REFERENCE = "keras_float"  # the row every variant's agreement and paired difference are against


@dataclass
class ConvertedFile:
    key: str
    path: Path | None
    seconds: float | None
    error: str | None = None
    identical_to: VariantSpec | None = None  # an earlier variant of the same model, same bytes
    reused: bool = False


def _row(spec: VariantSpec) -> VariantResult:
    from quantbench.techniques.schemes import SCHEMES

    conversion = SCHEMES.get(spec.scheme.name) if spec.scheme else None
    return VariantResult(
        id=spec.id, spec=spec, variant=spec.name, source=spec.source, repeat=spec.repeat,
        scheme=spec.scheme.name if spec.scheme else None,
        policy=conversion.policy if conversion else "Keras (reference)",
        kind="tflite" if conversion else "keras",
    )  # fmt: skip


# --- the Keras reference row ----------------------------------------------------------------


def reference_record(ex: Executor, spec: VariantSpec, lazy: _LazyModel) -> dict[str, Any]:
    """The Keras model's top-1 on the validation images and the seconds it took (cached)."""
    from quantbench.engine.executor import key_of as store_key
    from quantbench.ml.train import predict_keras

    ctx = ex.ctx
    key = store_key("reference", {}, parent=lazy.key, data=ctx.data_key)
    cached = ctx.store.get(key)
    if cached is not None:
        return {**cached.meta, "reused": True}
    model = lazy.get()
    started = time.perf_counter()
    probabilities = predict_keras(model, ctx.dataset.val_images, ctx.preprocessing)
    record = {"predictions": probabilities.argmax(axis=1).tolist(),
              "seconds": time.perf_counter() - started,
              "label": f"{spec.name} predictions, repeat {spec.repeat}"}  # fmt: skip
    ctx.store.put(key, "reference", {}, record)
    return {**record, "reused": False}


def reference_row(ex: Executor, spec: VariantSpec, lazy: _LazyModel) -> VariantResult:
    from quantbench.measure.evaluate import score

    ctx = ex.ctx
    record = reference_record(ex, spec, lazy)
    predictions = np.asarray(record["predictions"])
    if not spec.transforms:
        ctx.reference_predictions[spec.repeat] = predictions
    scores = score(predictions, ctx.dataset.val_labels, ctx.dataset.classes,
                   ctx.reference_predictions.get(spec.repeat), REFERENCE)  # fmt: skip
    row = _row(spec)
    _set_scores(row, scores)
    row.eval_images, row.eval_seconds = len(predictions), record["seconds"]
    row.reused = ["accuracy"] if record["reused"] else []
    if not spec.transforms and spec.repeat == 0 and ex.base.model_file:
        path = ctx.run_dir / ex.base.model_file
        if path.exists():
            row.path, row.size_bytes = ex.base.model_file, path.stat().st_size
    if not spec.transforms:
        ex.base.describe_reference(row)
    ctx.emit("info", f"{row.variant}: accuracy {row.accuracy:.1%}"
             + (" (cached)" if record["reused"] else ""))  # fmt: skip
    return row


# --- conversion -----------------------------------------------------------------------------


def _file_name(spec: VariantSpec) -> str:
    return f"{spec.name}.tflite"


def convert_model(ex: Executor, model_spec: ModelSpec, lazy: _LazyModel,
                  todo: list[VariantSpec]) -> dict[VariantSpec, ConvertedFile]:  # fmt: skip
    """Every conversion of one model: from the store when it has them, else converted (in
    parallel workers), stored, and compared with the model's other files."""
    from quantbench.techniques.converter import convert_all, same_model
    from quantbench.engine.executor import key_of as store_key

    ctx = ex.ctx
    out_dir = ctx.run_dir if model_spec.repeat == 0 else ctx.run_dir / f"repeat-{model_spec.repeat}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[VariantSpec, ConvertedFile] = {}
    missing: list[VariantSpec] = []
    from quantbench.techniques.schemes import SCHEMES

    for spec in todo:
        # Only conversions that read the calibration images depend on them: a sweep over
        # calibration sizes then converts and measures float32/float16/dynamic range once.
        conversion = ex.conversion_of(spec)
        uses_calibration = SCHEMES.get(conversion.name).needs_representative_dataset
        key = store_key("convert", conversion.model_dump(mode="json"), parent=lazy.key,
                        data=ctx.calibration_key if uses_calibration else "no-calibration")  # fmt: skip
        cached = ctx.store.get(key)
        if cached is None:
            missing.append(spec)
            files[spec] = ConvertedFile(key, None, None)
            continue
        if cached.meta.get("error"):  # the converter refused this model: it will again
            files[spec] = ConvertedFile(key, None, cached.meta.get("seconds"),
                                        error=cached.meta["error"], reused=True)  # fmt: skip
            continue
        path = out_dir / _file_name(spec)
        if not path.exists():
            cached.link_or_copy("model.tflite", path)
        files[spec] = ConvertedFile(key, path, cached.meta.get("seconds"), reused=True)
    names = ", ".join(s.scheme.text() for s in todo)
    reused = len(todo) - len(missing)
    ctx.emit("step", f"converting the {model_spec.name} model: {names}"
             + (f" ({reused} cached)" if reused else ""))  # fmt: skip
    if missing:
        model = lazy.get()
        scratch = out_dir / f".converting-{model_spec.name}"
        started = time.perf_counter()
        conversions = convert_all(model, [ex.conversion_of(s) for s in missing], ctx.calibration_inputs,
                                  scratch, workers=ctx.resources.convert_workers)  # fmt: skip
        ctx.emit("info", f"converted {len(missing)} in {time.perf_counter() - started:.1f} s")
        for spec, conversion in zip(missing, conversions):
            file = files[spec]
            file.seconds, file.error = conversion.seconds, conversion.error
            if conversion.error:
                ctx.emit("warn", f"{spec.name} failed to convert: {conversion.error}")
                if not conversion.error.startswith(WORKER_FAILURE):
                    # The converter's own refusal is a property of the model and the options
                    # (int16x8 of a QAT model, measured): stored, so a warm run does not load
                    # the model only to be refused again. A crash or a hang may not repeat.
                    ctx.store.put(file.key, "convert", {}, {
                        "seconds": conversion.seconds, "error": conversion.error,
                        "label": f"{spec.name}: the converter's refusal"})  # fmt: skip
                continue
            entry = ctx.store.put(file.key, "convert", {"model.tflite": conversion.path},
                                  {"seconds": conversion.seconds,
                                   "label": f"{spec.name}.tflite, repeat {spec.repeat}"})  # fmt: skip
            file.path = out_dir / _file_name(spec)
            entry.link_or_copy("model.tflite", file.path)
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    # The same model twice (float16 asked of a QAT model is DEFAULT's int8 model): measured once.
    earlier = [(s, f) for s, f in _model_files(ex, model_spec, ctx.run_dir) if f.exists()]
    for spec in todo:
        file = files[spec]
        if file.path is None:
            continue
        twin = next((s for s, f in earlier if s != spec and s.id != spec.id
                     and _order(ex, s) < _order(ex, spec) and same_model(f, file.path)), None)  # fmt: skip
        file.identical_to = twin
    return files


def _model_files(ex: Executor, model_spec: ModelSpec, run_dir: Path) -> list[tuple[VariantSpec, Path]]:
    """Files of this model already in the run (finished rows included), in plan order."""
    out = []
    for row in ex.results.variants:
        if row.spec is not None and row.spec.model == model_spec and row.path and row.status == "ok":
            out.append((row.spec, run_dir / row.path))
    out += [(s, run_dir / (("" if s.repeat == 0 else f"repeat-{s.repeat}/") + _file_name(s)))
            for s in ex.plan if s.model == model_spec and s.scheme is not None]  # fmt: skip
    return list(dict.fromkeys(out))


def _order(ex: Executor, spec: VariantSpec) -> int:
    return next((i for i, s in enumerate(ex.plan) if s.id == spec.id), len(ex.plan))


# --- measurement ----------------------------------------------------------------------------


def measure_variant(ex: Executor, spec: VariantSpec, file: ConvertedFile) -> VariantResult:
    """Accuracy, agreement and latency of one converted file: cached, copied from an identical
    twin, or measured; a failure is a failed row with its reason."""
    from quantbench.measure import explain
    from quantbench.core.errors import QuantbenchError

    ctx = ex.ctx
    row = _row(spec)
    row.convert_seconds = file.seconds
    row.reused = ["conversion"] if file.reused else []
    if file.error or file.path is None:
        row.status, row.error = "failed", file.error or "no file"
        return row
    row.path = str(file.path.relative_to(ctx.run_dir))
    row.size_bytes = file.path.stat().st_size
    _file_contents(row, file.path)
    twin = ex._done(file.identical_to) if file.identical_to is not None else None
    if twin is not None and twin.status == "ok":
        measured = {k: getattr(twin.model_copy(deep=True), k)
                    for k in (*MEASURED_FIELDS, "latency", "targets")}  # fmt: skip
        row = row.model_copy(update={**measured, "status": "identical", "identical_to": twin.variant})
        row.notes.append(f"the same model as {twin.variant}: the scheme had no effect (the "
                         "files differ at most in the converter's record of the options)")
        return row
    try:
        _accuracy(ex, row, file)
        _latency(ex, row, file)
    except QuantbenchError as e:  # LiteRT refused, crashed or hung: this row says why
        row.status, row.error = "failed", e.message
        ctx.emit("warn", f"{row.variant}: {e.message}")
        return row
    from quantbench.engine.target_stage import check_targets

    check_targets(ex, row, file.path, file.key)
    baseline = ex.results.variant("float32", spec.repeat)
    reference_ms = baseline.latency_ms() if baseline and baseline.ok else None
    row.notes += explain.explain(file.path, row.latency, reference_ms)
    dense = (ex.results.variant(VariantSpec(scheme=spec.scheme, repeat=spec.repeat).name,
                                spec.repeat) if spec.transforms else None)  # fmt: skip
    dense_ok = dense is not None and dense.ok
    row.notes += explain.storage_notes(row.weights, row.latency_ms(),
                                       dense.variant if dense_ok else None,
                                       dense.latency_ms() if dense_ok else None)  # fmt: skip
    return row


def _file_contents(row: VariantResult, path: Path) -> None:
    """Gzip size and what the weight tensors hold (zeros, distinct values): read from the
    file in well under a second, so never cached."""
    from quantbench.measure import filestats

    row.gzip_bytes = filestats.gzip_size(path)
    try:
        row.weights = filestats.weight_stats(path)
        if not row.weights.tensors:  # weights behind ops we do not follow (fake-quant float32)
            row.weights = None
    except (ValueError, KeyError, IndexError, AttributeError):  # a file layout we cannot read
        row.weights = None


def _accuracy(ex: Executor, row: VariantResult, file: ConvertedFile) -> None:
    from quantbench.measure.evaluate import score
    from quantbench.measure.litert import io_dtypes
    from quantbench.engine.executor import key_of as store_key
    from quantbench.store import data_fingerprint

    ctx = ex.ctx
    evaluate = ctx.cfg.evaluate
    reference = ctx.reference_predictions.get(row.repeat)
    reference_key = "none" if reference is None else data_fingerprint([reference])
    key = store_key("accuracy", {"threads": evaluate.threads[-1], "batch_size": evaluate.batch_size},
                    parent=file.key, data=f"{ctx.data_key}/{reference_key}")  # fmt: skip
    cached = ctx.store.get(key)
    if cached is not None:
        restored = VariantResult.model_validate({"variant": row.variant, "policy": row.policy,
                                                 **cached.meta["row"]})  # fmt: skip
        for name in MEASURED_FIELDS:
            setattr(row, name, getattr(restored, name))
        row.reused.append("accuracy")
        ctx.emit("info", f"{row.variant}: accuracy {row.accuracy:.1%} (cached)")
        return
    ctx.emit("info", f"evaluating {row.variant}")
    row.input_dtype, row.output_dtype = io_dtypes(file.path)
    predictions, row.eval_seconds = ctx.predict(file.path)
    scores = score(predictions, ctx.dataset.val_labels, ctx.dataset.classes, reference, REFERENCE)
    _set_scores(row, scores)
    row.eval_images = len(ctx.val_inputs)
    measured = row.model_dump(mode="json", include=set(MEASURED_FIELDS))
    ctx.store.put(key, "accuracy", {}, {"row": measured, "label": f"{row.variant} accuracy"})


def _set_scores(row: VariantResult, scores: Any) -> None:
    """Accuracy, agreement, per class, and their image-level uncertainty (intervals.py)."""
    row.accuracy, row.agreement = scores.accuracy, scores.agreement
    row.per_class_accuracy, row.confusion = scores.per_class_accuracy, scores.confusion
    for name, value in scores.uncertainty().items():
        setattr(row, name, value)


def _latency_key(ex: Executor, file_key: str) -> str:
    from quantbench.engine.executor import key_of as store_key
    from quantbench.store import machine_fingerprint

    evaluate = ex.ctx.cfg.evaluate
    params = {"threads": list(evaluate.threads), "min_runs": evaluate.latency_runs,
              "warmup_runs": evaluate.warmup_runs, "machine": machine_fingerprint()}  # fmt: skip
    if list(evaluate.runtimes) != ["interpreter"]:  # older keys (Interpreter only) stay valid
        params["runtimes"] = list(evaluate.runtimes)
    return store_key("latency", params, parent=file_key, data=ex.ctx.latency_key)


def _latency(ex: Executor, row: VariantResult, file: ConvertedFile) -> None:
    """The row's latency figures, from the store or measured. A figure taken while other
    processes held the cores (`busy`) is stored flagged, like any other: it is still this
    run's best figure and a resume keeps it. But every busy figure, new or reused, is put on
    `ctx.busy_latency`, and `settle_busy` measures it again at the end of the run."""
    from quantbench.measure import latency

    ctx = ex.ctx
    evaluate = ctx.cfg.evaluate
    key = _latency_key(ex, file.key)
    cached = ctx.store.get(key)
    if cached is not None:
        row.latency = [LatencyResult.model_validate(r) for r in cached.meta["latency"]]
        row.reused.append("latency")
    else:
        with ctx.resources.latency_guard():  # a sweep's per-node lock: one timing at a time
            row.latency = latency.measure_all(
                file.path, ctx.val_inputs[:LATENCY_IMAGES], list(evaluate.threads),
                runtimes=list(evaluate.runtimes), min_runs=evaluate.latency_runs,
                warmup_runs=evaluate.warmup_runs,
            )  # fmt: skip
        for figure in row.latency:
            figure.node = ctx.resources.node
        _store_latency(ex, key, row)
    if any(r.busy for r in row.latency):
        ctx.busy_latency.append((row.id, key, file.path))


def _store_latency(ex: Executor, key: str, row: VariantResult) -> None:
    ex.ctx.store.put(key, "latency", {}, {"latency": [r.model_dump(mode="json") for r in row.latency],
                                          "label": f"{row.variant} latency"})  # fmt: skip


def settle_busy(ex: Executor) -> None:
    """At the end of a run: wait (at most `evaluate.wait_quiet` seconds in all) for the machine
    to become quiet, measure every busy figure again, keep the quieter of the two, store it,
    and say so in the row's notes (None: leave busy figures as they are)."""
    from quantbench.measure import busy, explain, latency

    ctx = ex.ctx
    budget = ctx.cfg.evaluate.wait_quiet
    if budget is None or not ctx.busy_latency:
        return
    n = len(ctx.busy_latency)
    ctx.emit("step", f"re-measuring {n} variant{'s' * (n != 1)} timed on a busy machine "
             f"(waiting up to {budget:g} s for quiet)")  # fmt: skip
    deadline = time.monotonic() + budget
    evaluate = ctx.cfg.evaluate

    for row_id, key, path in ctx.busy_latency:
        row = next((r for r in ex.results.variants if r.id == row_id), None)
        if row is None or not path.exists():
            continue

        def again(old: LatencyResult) -> LatencyResult:
            with ctx.resources.latency_guard():
                figure = latency.measure(path, ctx.val_inputs[:LATENCY_IMAGES], old.threads,
                                         xnnpack=old.delegate == "xnnpack", runtime=old.runtime,
                                         min_runs=evaluate.latency_runs,
                                         warmup_runs=evaluate.warmup_runs)  # fmt: skip
            figure.node = ctx.resources.node
            return figure

        baseline = ex.results.variant("float32", row.repeat)
        reference_ms = baseline.latency_ms() if baseline and baseline.ok else None
        before = set(explain.explain(path, row.latency, reference_ms))
        row.latency, line = busy.remeasure(row.latency, again, deadline)
        row.notes = [n for n in row.notes if n not in before]
        row.notes += explain.explain(path, row.latency, reference_ms) + ([line] if line else [])
        _store_latency(ex, key, row)
        for twin in ex.results.variants:  # rows that copied this row's figures
            if twin.status == "identical" and twin.identical_to == row.variant and twin.repeat == row.repeat:
                twin.latency = [r.model_copy() for r in row.latency]
        if line:
            ctx.emit("info", f"{row.variant}: {line}")
    ctx.busy_latency.clear()
    results_mod.save(ex.results, ctx.run_dir)
