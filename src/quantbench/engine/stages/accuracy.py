"""Accuracy and agreement of a converted file on the validation images, scored by LiteRT in
one evaluation worker per run (a crash or a hang fails that row, never the run)."""

from __future__ import annotations

from typing import Any

from quantbench.core.results import VariantResult
from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import REFERENCE, FileJob

MEASURED_FIELDS = ("accuracy", "agreement", "eval_images", "eval_seconds", "per_class_accuracy",
                   "confusion", "input_dtype", "output_dtype", "accuracy_ci", "agreement_ci",
                   "vs_reference", "predictions")  # fmt: skip


def set_scores(row: VariantResult, scores: Any) -> None:
    """Accuracy, agreement, per class, and their image-level uncertainty (intervals.py)."""
    row.accuracy, row.agreement = scores.accuracy, scores.agreement
    row.per_class_accuracy, row.confusion = scores.per_class_accuracy, scores.confusion
    for name, value in scores.uncertainty().items():
        setattr(row, name, value)


class AccuracyStage:
    name = "accuracy"
    reuse_label = "accuracy"

    def applies(self, job: FileJob) -> bool:
        return True

    def key(self, job: FileJob) -> Key:
        from quantbench.store import data_fingerprint

        ctx = job.ctx
        evaluate = ctx.cfg.evaluate
        reference = ctx.reference_predictions.get(job.spec.repeat)
        reference_key = "none" if reference is None else data_fingerprint([reference])
        if reference is not None and ctx.reference_name:  # another row than the Keras model's
            reference_key += f"/{ctx.reference_name}"
        return Key({"threads": evaluate.threads[-1], "batch_size": evaluate.batch_size},
                   parent=job.file_key, data=f"{ctx.data_key}/{reference_key}")  # fmt: skip

    def compute(self, job: FileJob) -> dict[str, Any]:
        from quantbench.measure.evaluate import EvalWorker, score
        from quantbench.measure.litert import io_dtypes

        ctx, row = job.ctx, job.row.model_copy(deep=True)
        ctx.emit("info", f"evaluating {row.variant}")
        row.input_dtype, row.output_dtype = io_dtypes(job.path)
        worker = ctx.service("evaluation", lambda: EvalWorker(ctx.val_inputs, ctx.resources.cores))
        evaluate = ctx.cfg.evaluate
        predictions, row.eval_seconds = worker.predict(job.path, evaluate.threads[-1], evaluate.batch_size)
        set_scores(row, score(predictions, ctx.dataset.val_labels, ctx.dataset.classes,
                              ctx.reference_predictions.get(job.spec.repeat),
                              ctx.reference_name or REFERENCE))  # fmt: skip
        row.eval_images = len(ctx.val_inputs)
        return row.model_dump(mode="json", include=set(MEASURED_FIELDS))

    def encode(self, product: dict[str, Any], job: FileJob) -> Stored:
        return Stored(meta={"row": product, "label": f"{job.row.variant} accuracy"})

    def decode(self, entry: Any, job: FileJob) -> dict[str, Any]:
        job.ctx.emit("info", f"{job.row.variant}: accuracy {entry.meta['row']['accuracy']:.1%} (cached)")
        return entry.meta["row"]

    def apply(self, row: VariantResult, product: dict[str, Any], job: FileJob) -> None:
        restored = VariantResult.model_validate({"variant": row.variant, "policy": row.policy, **product})
        for name in MEASURED_FIELDS:
            setattr(row, name, getattr(restored, name))


ACCURACY = AccuracyStage()
