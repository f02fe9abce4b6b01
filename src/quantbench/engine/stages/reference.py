"""The Keras model's top-1 on the validation images: the reference row's accuracy, and the
predictions every variant's agreement and paired difference are computed against."""

from __future__ import annotations

import time
from typing import Any

from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import ReferenceJob


class ReferenceStage:
    name = "reference"
    reuse_label = "accuracy"

    def key(self, job: ReferenceJob) -> Key:
        return Key({}, parent=job.lazy.key, data=job.ctx.data_key)

    def compute(self, job: ReferenceJob) -> dict[str, Any]:
        from quantbench.ml.train import predict_keras

        ctx = job.ctx
        started = time.perf_counter()
        probabilities = predict_keras(job.lazy.get(), ctx.dataset.val_images, ctx.preprocessing)
        return {"predictions": probabilities.argmax(axis=1).tolist(),
                "seconds": time.perf_counter() - started,
                "label": f"{job.spec.name} predictions, repeat {job.spec.repeat}"}  # fmt: skip

    def encode(self, product: dict[str, Any], job: ReferenceJob) -> Stored:
        return Stored(meta=product)

    def decode(self, entry: Any, job: ReferenceJob) -> dict[str, Any]:
        return dict(entry.meta)


REFERENCE_STAGE = ReferenceStage()
