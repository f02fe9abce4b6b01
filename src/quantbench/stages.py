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

from quantbench.plan import ModelSpec, VariantSpec
from quantbench.results import LatencyResult, VariantResult

if TYPE_CHECKING:
    from quantbench.execute import Executor, _LazyModel

LATENCY_IMAGES = 16  # real validation images the latency loop cycles through
MEASURED_FIELDS = ("accuracy", "agreement", "eval_images", "eval_seconds", "per_class_accuracy",
                   "confusion", "input_dtype", "output_dtype", "accuracy_ci", "agreement_ci",
                   "vs_reference", "predictions")  # fmt: skip
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
    from quantbench.techniques.conversions import CONVERSIONS

    conversion = CONVERSIONS.get(spec.conversion.name) if spec.conversion else None
    return VariantResult(
        id=spec.id, spec=spec, variant=spec.name, source=spec.source, repeat=spec.repeat,
        scheme=spec.conversion.name if spec.conversion else None,
        policy=conversion.policy if conversion else "Keras (reference)",
        kind="tflite" if conversion else "keras",
    )  # fmt: skip


# --- the Keras reference row ----------------------------------------------------------------


def reference_record(ex: Executor, spec: VariantSpec, lazy: _LazyModel) -> dict[str, Any]:
    """The Keras model's top-1 on the validation images and the seconds it took (cached)."""
    from quantbench.execute import key_of as store_key
    from quantbench.train import predict_keras

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
    from quantbench.evaluate import score

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
    from quantbench.convert import convert_all, same_model
    from quantbench.execute import key_of as store_key

    ctx = ex.ctx
    out_dir = ctx.run_dir if model_spec.repeat == 0 else ctx.run_dir / f"repeat-{model_spec.repeat}"
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[VariantSpec, ConvertedFile] = {}
    missing: list[VariantSpec] = []
    for spec in todo:
        key = store_key("convert", ex.conversion_of(spec).model_dump(mode="json"), parent=lazy.key,
                        data=ctx.calibration_key)  # fmt: skip
        cached = ctx.store.get(key)
        if cached is None:
            missing.append(spec)
            files[spec] = ConvertedFile(key, None, None)
            continue
        path = out_dir / _file_name(spec)
        if not path.exists():
            cached.link_or_copy("model.tflite", path)
        files[spec] = ConvertedFile(key, path, cached.meta.get("seconds"), reused=True)
    names = ", ".join(s.conversion.text() for s in todo)
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
            for s in ex.plan if s.model == model_spec and s.conversion is not None]  # fmt: skip
    return list(dict.fromkeys(out))


def _order(ex: Executor, spec: VariantSpec) -> int:
    return next((i for i, s in enumerate(ex.plan) if s.id == spec.id), len(ex.plan))


# --- measurement ----------------------------------------------------------------------------


def measure_variant(ex: Executor, spec: VariantSpec, file: ConvertedFile) -> VariantResult:
    """Accuracy, agreement and latency of one converted file: cached, copied from an identical
    twin, or measured; a failure is a failed row with its reason."""
    from quantbench import explain
    from quantbench.errors import QuantbenchError

    ctx = ex.ctx
    row = _row(spec)
    row.convert_seconds = file.seconds
    row.reused = ["conversion"] if file.reused else []
    if file.error or file.path is None:
        row.status, row.error = "failed", file.error or "no file"
        return row
    row.path = str(file.path.relative_to(ctx.run_dir))
    row.size_bytes = file.path.stat().st_size
    twin = ex._done(file.identical_to) if file.identical_to is not None else None
    if twin is not None and twin.status == "ok":
        measured = {k: getattr(twin.model_copy(deep=True), k) for k in (*MEASURED_FIELDS, "latency")}
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
    baseline = ex.results.variant("float32", spec.repeat)
    reference_ms = baseline.latency_ms() if baseline and baseline.ok else None
    row.notes += explain.explain(file.path, row.latency, reference_ms)
    return row


def _accuracy(ex: Executor, row: VariantResult, file: ConvertedFile) -> None:
    from quantbench.evaluate import score
    from quantbench.litert import io_dtypes
    from quantbench.execute import key_of as store_key
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


def _latency(ex: Executor, row: VariantResult, file: ConvertedFile) -> None:
    from quantbench import latency
    from quantbench.execute import key_of as store_key
    from quantbench.store import machine_fingerprint

    ctx = ex.ctx
    evaluate = ctx.cfg.evaluate
    params = {"threads": list(evaluate.threads), "min_runs": evaluate.latency_runs,
              "warmup_runs": evaluate.warmup_runs, "machine": machine_fingerprint()}  # fmt: skip
    key = store_key("latency", params, parent=file.key, data=ctx.latency_key)
    cached = ctx.store.get(key)
    if cached is not None:
        row.latency = [LatencyResult.model_validate(r) for r in cached.meta["latency"]]
        row.reused.append("latency")
        return
    row.latency = latency.measure_all(
        file.path, ctx.val_inputs[:LATENCY_IMAGES], list(evaluate.threads),
        min_runs=evaluate.latency_runs, warmup_runs=evaluate.warmup_runs,
    )  # fmt: skip
    ctx.store.put(key, "latency", {}, {"latency": [r.model_dump(mode="json") for r in row.latency],
                                       "label": f"{row.variant} latency"})  # fmt: skip
