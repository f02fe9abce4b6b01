"""A model's .tflite files: converted in parallel converter workers (techniques/converter.py),
a batch per model. The converter's own refusal of a model is a product too (int16x8 of a QAT
model, measured): stored, so a warm run does not load the model only to be refused again. A
crash or a hang may not repeat, so it is not kept."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import ConvertJob

WORKER_FAILURE = "converter process failed"  # converter.convert_saved_model's crash/hang reason


@dataclass
class Converted:
    seconds: float | None
    error: str | None = None
    path: Path | None = None  # the file just made (None: read from the store, or failed)


class ConvertStage:
    name = "convert"
    reuse_label = "conversion"

    def key(self, job: ConvertJob) -> Key:
        from quantbench.techniques.schemes import SCHEMES

        # Only schemes that read the calibration images depend on them: a sweep over
        # calibration sizes then converts and measures float32/float16/dynamic range once.
        uses_calibration = SCHEMES.get(job.scheme.name).needs_representative_dataset
        return Key(job.scheme.model_dump(mode="json"), parent=job.lazy.key,
                   data=job.ctx.calibration_key if uses_calibration else "no-calibration")  # fmt: skip

    def compute(self, job: ConvertJob) -> Converted:
        return self.compute_many([job])[0]

    def compute_many(self, jobs: list[ConvertJob]) -> list[Converted]:
        from quantbench.techniques.convert import convert_all

        out: dict[int, Converted] = {i: Converted(job.prebuilt[1], path=job.prebuilt[0])
                                     for i, job in enumerate(jobs) if job.prebuilt}  # fmt: skip
        todo = [i for i in range(len(jobs)) if i not in out]
        if todo:
            ctx = jobs[0].ctx
            started = time.perf_counter()
            scratch = self._scratch(jobs[0])
            conversions = convert_all(jobs[0].lazy.get(), [jobs[i].scheme for i in todo],
                                      ctx.calibration_inputs, scratch,
                                      workers=ctx.resources.convert_workers)  # fmt: skip
            ctx.emit("info", f"converted {len(todo)} in {time.perf_counter() - started:.1f} s")
            for i, conversion in zip(todo, conversions):
                out[i] = Converted(conversion.seconds, conversion.error, conversion.path)
                if conversion.error:
                    ctx.emit("warn", f"{jobs[i].spec.name} failed to convert: {conversion.error}")
        return [out[i] for i in range(len(jobs))]

    def encode(self, product: Converted, job: ConvertJob) -> Stored | None:
        if product.error:
            if product.error.startswith(WORKER_FAILURE):
                return None
            return Stored(meta={"seconds": product.seconds, "error": product.error,
                                "label": f"{job.spec.name}: the converter's refusal"})  # fmt: skip
        return Stored(meta={"seconds": product.seconds,
                            "label": f"{job.spec.name}.tflite, repeat {job.spec.repeat}"},
                      files={"model.tflite": product.path})  # fmt: skip

    def decode(self, entry: Any, job: ConvertJob) -> Converted:
        return Converted(entry.meta.get("seconds"), entry.meta.get("error"))

    def release(self, jobs: list[ConvertJob]) -> None:
        """The store has the files: the batch's scratch folder goes."""
        if jobs:
            shutil.rmtree(self._scratch(jobs[0]), ignore_errors=True)

    @staticmethod
    def _scratch(job: ConvertJob) -> Path:
        return job.out_path.parent / f".converting-{job.spec.model.name}"


CONVERT = ConvertStage()
