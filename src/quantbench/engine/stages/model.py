"""The Keras models of a plan: the base model (trained here, or the user's) and each
transform's output. Weights are what the store keeps (a QAT model's wrappers do not round-trip
through .keras files): a hit rebuilds the architecture untrained and loads them."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core.results import RunResults, TrainingResult
from quantbench.core.specs import ModelSpec
from quantbench.engine.context import BaseSource, Context
from quantbench.engine.stage import Key, Stored


@dataclass
class ModelJob:
    ctx: Context
    spec: ModelSpec
    base: BaseSource
    results: RunResults
    params: dict[str, Any]  # what the model depends on besides its parent and the data
    parent: Any = None  # the parent's LazyModel (None: the base model)
    seed: int = 0
    scratch: list[Path] = field(default_factory=list)


def _repeat(repeat: int) -> str:
    return f" (repeat {repeat})" if repeat else ""


class ModelStage:
    name = "model"
    reuse_label = "model"

    def key(self, job: ModelJob) -> Key:
        return Key(job.params, parent=job.parent.key if job.parent is not None else None,
                   data=job.ctx.data_key)  # fmt: skip

    def _build(self, job: ModelJob) -> tuple[Any, Any]:
        """(rebuild, produce) for this model: the architecture untrained, and the training."""
        from quantbench.techniques.transforms import TRANSFORMS, TrainJob

        ctx, repeat = job.ctx, job.spec.repeat
        if job.parent is None:
            return (lambda: job.base.rebuild(ctx, repeat)), (lambda: job.base.produce(ctx, repeat))
        train = TrainJob(ctx.dataset, ctx.preprocessing, ctx.cfg, job.seed, repeat,
                         can_build_fresh=job.base.trains, emit=ctx.emit)  # fmt: skip
        transform = job.spec.transforms[-1]
        entry, params = TRANSFORMS.get(transform.name), TRANSFORMS.params_of(transform)
        parent = job.parent.get()
        if job.spec.parent.parent is None:  # the base model, as the transforms start from it
            parent = job.base.for_transforms(parent, ctx, job.results)
        return (lambda: entry.rebuild(params, parent, train)), (lambda: entry.apply(params, parent, train))

    def compute(self, job: ModelJob) -> tuple[Any, TrainingResult | None]:
        return self._build(job)[1]()

    def encode(self, product: tuple[Any, TrainingResult | None], job: ModelJob) -> Stored:
        from quantbench.ml.model import save_for_inference

        model, training = product
        tmp = Path(tempfile.mkdtemp(prefix="quantbench-model-"))
        job.scratch.append(tmp)
        files = {"weights.npz": tmp / "weights.npz"}
        np.savez(files["weights.npz"], *model.get_weights())
        if job.spec.parent is None and job.base.model_file:
            files[job.base.model_file] = tmp / job.base.model_file
            save_for_inference(model, files[job.base.model_file])
        meta = {"label": f"{job.spec.name} model, repeat {job.spec.repeat}",
                "training": training.model_dump(mode="json") if training else None}  # fmt: skip
        return Stored(meta=meta, files=files)

    def decode(self, entry: Any, job: ModelJob) -> tuple[Any, TrainingResult | None] | None:
        model = self._build(job)[0]()
        if model is None:  # nothing to load the weights into: computed instead
            return None
        with np.load(entry.path("weights.npz")) as weights:
            model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
        job.ctx.emit("info", f"loaded the cached {job.spec.name} model{_repeat(job.spec.repeat)}")
        return model, training_of(entry)

    def release(self, jobs: list[ModelJob]) -> None:
        for job in jobs:
            for tmp in job.scratch:
                shutil.rmtree(tmp, ignore_errors=True)
            job.scratch.clear()


def training_of(entry: Any) -> TrainingResult | None:
    training = entry.meta.get("training")  # its training cost, for the cost table
    return TrainingResult.model_validate(training) if training else None


MODEL = ModelStage()
