"""A model's .tflite files: converted in parallel converter workers (techniques/converter.py),
a batch per model. The converter's own refusal of a model is a product too (int16x8 of a QAT
model, measured): stored, so a warm run does not load the model only to be refused again. A
crash or a hang may not repeat, so it is not kept.

A scheme whose registry entry starts from a .tflite (`source == "tflite"`) is converted from
the file its job names (`source_file`: the model's float32 conversion, produced first by the
executor), by the entry's `convert_tflite` hook in one worker of the run; its key's parent is
that file's key. What the hook read back from the file it wrote (an op left float) is the
product's `notes`, kept in the store with it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import ConvertJob
from quantbench.techniques.converter import WORKER_FAILURE  # a crash or hang: not kept


@dataclass
class Converted:
    seconds: float | None
    error: str | None = None
    path: Path | None = None  # the file just made (None: read from the store, or failed)
    notes: list[str] = field(default_factory=list)  # what the file holds unlike what was asked


def _entry(job: ConvertJob) -> tuple[Any, Any]:
    from quantbench.techniques.schemes import SCHEMES

    return SCHEMES.get(job.scheme.name), SCHEMES.params_of(job.scheme)


class ConvertStage:
    name = "convert"
    reuse_label = "conversion"

    def key(self, job: ConvertJob) -> Key:
        entry, params = _entry(job)
        # Only schemes that read the calibration images depend on them: a sweep over
        # calibration sizes then converts and measures float32/float16/dynamic range once.
        uses_calibration = entry.reads_calibration(params)
        # A scheme made from a .tflite is keyed on that file; the others on their model.
        parent = job.source_file[0] if job.source_file is not None else job.lazy.key
        return Key(job.scheme.model_dump(mode="json"), parent=parent,
                   data=job.ctx.calibration_key if uses_calibration else "no-calibration")  # fmt: skip

    def compute(self, job: ConvertJob) -> Converted:
        return self.compute_many([job])[0]

    def compute_many(self, jobs: list[ConvertJob]) -> list[Converted]:
        out: dict[int, Converted] = {i: Converted(job.prebuilt[1], path=job.prebuilt[0])
                                     for i, job in enumerate(jobs) if job.prebuilt}  # fmt: skip
        from_file = [i for i in range(len(jobs)) if i not in out and jobs[i].source_file is not None]
        todo = [i for i in range(len(jobs)) if i not in out and i not in from_file]
        if todo:
            from quantbench.techniques.convert import convert_all

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
        if from_file:
            out.update(zip(from_file, self._from_files([jobs[i] for i in from_file])))
        return [out[i] for i in range(len(jobs))]

    def _from_files(self, jobs: list[ConvertJob]) -> list[Converted]:
        """Schemes made from a .tflite, by their entry's hook, one after the other in the
        run's worker for them (started on first use, closed with the run)."""
        from quantbench.core import atomic
        from quantbench.workers import Worker

        ctx = jobs[0].ctx
        scratch = self._scratch(jobs[0])
        scratch.mkdir(parents=True, exist_ok=True)
        calibration = None
        worker = ctx.service("tflite-convert", lambda: Worker("tflite-convert"))
        products = []
        for k, job in enumerate(jobs):
            entry, params = _entry(job)
            if entry.reads_calibration(params) and calibration is None:
                calibration = scratch / "calibration.npy"
                atomic.save_npy(calibration, ctx.calibration_inputs.astype("float32"))
            _, source = job.source_file
            started = time.perf_counter()
            conversion = entry.convert_tflite(source, scratch / f"{k}-{job.spec.name}.tflite",
                                              params, calibration, worker=worker)  # fmt: skip
            if conversion.error:
                ctx.emit("warn", f"{job.spec.name} failed to convert: {conversion.error}")
            else:
                ctx.emit("info", f"{job.spec.name}: made from its .tflite in "
                         f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            products.append(Converted(conversion.seconds, conversion.error, conversion.path,
                                      list(conversion.notes)))  # fmt: skip
        return products

    def encode(self, product: Converted, job: ConvertJob) -> Stored | None:
        if product.error:
            if product.error.startswith(WORKER_FAILURE):
                return None
            return Stored(meta={"seconds": product.seconds, "error": product.error,
                                "label": f"{job.spec.name}: the converter's refusal"})  # fmt: skip
        return Stored(meta={"seconds": product.seconds, "notes": product.notes,
                            "label": f"{job.spec.name}.tflite, repeat {job.spec.repeat}"},
                      files={"model.tflite": product.path})  # fmt: skip

    def decode(self, entry: Any, job: ConvertJob) -> Converted:
        return Converted(entry.meta.get("seconds"), entry.meta.get("error"),
                         notes=list(entry.meta.get("notes") or []))  # fmt: skip

    def release(self, jobs: list[ConvertJob]) -> None:
        """The store has the files: the batch's scratch folder goes."""
        if jobs:
            shutil.rmtree(self._scratch(jobs[0]), ignore_errors=True)

    @staticmethod
    def _scratch(job: ConvertJob) -> Path:
        return job.out_path.parent / f".converting-{job.spec.model.name}"


CONVERT = ConvertStage()
