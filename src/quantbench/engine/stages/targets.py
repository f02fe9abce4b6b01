"""The `targets` stage: after a variant is measured, where can it run?

The facts (what TFLM and the analyzers found) are the product: the key's parent is the
.tflite's key, its data the validation images, so a warm run reads the facts back and only
re-judges them against today's budgets.
TFLM and the analyzer run in one worker process (ops `tflm`, `gpu`), so a crash or a hang in
their native code costs that variant's check, with the reason, never the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.core.results import VariantResult, decode_classes
from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import FileJob

if TYPE_CHECKING:
    from quantbench.engine.context import Context

START_SECONDS = 60  # the worker's imports and TFLM's arena bisection (~13 allocations)
# TFLM's reference kernels took 0.2-0.27 s an image for the default preset's int8, int16x8
# and float32 files on this busy 2-core machine (128 px MobileNetV2 0.35): 4x headroom.
SECONDS_PER_IMAGE = 1.0


class TargetWorker:
    """One worker for the target checks; the validation images handed over once (.npy)."""

    def __init__(self, inputs: np.ndarray):
        from quantbench.core import atomic
        from quantbench.workers import Worker, scratch_dir

        self._tmp = scratch_dir("targets")
        self.inputs_path = Path(self._tmp.name) / "inputs.npy"
        atomic.save_npy(self.inputs_path, np.ascontiguousarray(inputs, dtype=np.float32))
        self.images = len(inputs)
        self.worker = Worker("targets")

    def request(self, op: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self.worker.request(op, payload, timeout)

    def close(self) -> None:
        self.worker.close()
        self._tmp.cleanup()


def tflm_sample(ctx: Context) -> np.ndarray | None:
    """The validation photos TFLM scores: a seeded sample of `targets.tflm_images` (sorted
    indices), or None for every photo (`--target mcu`, or a split no larger than the sample)."""
    section = getattr(ctx.cfg, "targets", None)
    count = section.tflm_images if section is not None else None
    n = len(ctx.val_inputs)
    if count is None or count >= n or getattr(ctx.cfg.recommend, "target", None) == "mcu":
        return None
    return np.sort(np.random.default_rng(ctx.cfg.data.split_seed).permutation(n)[:count])


def _worker(ctx: Context, picks: np.ndarray | None) -> TargetWorker:
    inputs = ctx.val_inputs if picks is None else ctx.val_inputs[picks]
    return ctx.service("targets", lambda: TargetWorker(inputs))


def measure_facts(worker: TargetWorker, path: Path, labels: np.ndarray,
                  max_arena: int | None = None,
                  litert: np.ndarray | None = None) -> tuple[dict, bool]:  # fmt: skip
    """Every target's facts for one file, and whether they may be cached (not when a check
    crashed or timed out: that may be the machine, not the model)."""
    from quantbench.targets import mcu_facts, static_facts
    from quantbench.workers import WorkerError

    facts = static_facts(path)
    cacheable = True
    try:
        payload = {"model": str(path), "inputs": str(worker.inputs_path), "max_arena": max_arena}
        reply = worker.request("tflm", payload, START_SECONDS + SECONDS_PER_IMAGE * worker.images)
        facts["mcu"] = mcu_facts(reply, labels, litert)
    except WorkerError as e:
        facts["mcu"] = {"ok": False, "reasons": [f"TFLM crashed: {e.message}"], "figures": {}}
        cacheable = False
    try:
        facts["gpu"] = worker.request("gpu", {"model": str(path)}, START_SECONDS)
    except WorkerError as e:
        facts["gpu"] = {"ok": None, "reasons": [f"the analyzer failed: {e.message}"], "figures": {}}
        cacheable = False
    return facts, cacheable


def budgets(cfg: Any) -> dict[str, Any]:
    from quantbench.targets import McuParams

    section = getattr(cfg, "targets", None)
    if section is None:
        return {}
    return {"mcu": McuParams(ram=section.mcu_ram, flash=section.mcu_flash)}


class TargetsStage:
    name = "targets"
    reuse_label = "targets"

    def applies(self, job: FileJob) -> bool:
        section = getattr(job.ctx.cfg, "targets", None)
        return section is None or section.check

    def key(self, job: FileJob) -> Key:
        section = getattr(job.ctx.cfg, "targets", None)
        ram = section.mcu_ram if section is not None else None  # files over it are not scored
        picks = tflm_sample(job.ctx)
        if picks is None:  # every photo: the key as it always was
            return Key({"tflm_images": len(job.ctx.val_inputs), "max_arena": ram},
                       parent=job.file_key, data=job.ctx.data_key)  # fmt: skip
        return Key({"tflm_images": len(picks), "tflm_sample_seed": job.ctx.cfg.data.split_seed,
                    "max_arena": ram}, parent=job.file_key, data=job.ctx.data_key)  # fmt: skip

    def compute(self, job: FileJob) -> tuple[dict, bool]:
        from quantbench.analysis.intervals import wilson

        ctx, row = job.ctx, job.row
        picks = tflm_sample(ctx)
        n = len(ctx.val_inputs)
        what = "every photo" if picks is None else f"a sample of {len(picks)} of {n} photos"
        ctx.emit("info", f"checking targets of {row.variant} (TF Lite Micro scores {what})")
        litert = decode_classes(row.predictions) if row.predictions else None
        labels = ctx.dataset.val_labels
        if picks is not None:
            labels, litert = labels[picks], (litert[picks] if litert is not None else None)
        facts, cacheable = measure_facts(_worker(ctx, picks), job.path, labels,
                                         self.key(job).params["max_arena"], litert)  # fmt: skip
        figures = facts["mcu"].get("figures") or {}
        scored = figures.get("images")
        if picks is not None and scored:
            figures["sample_of"] = n
        for name in ("accuracy", "agreement_litert"):
            if scored and figures.get(name) is not None:
                figures[f"{name}_ci"] = list(wilson(round(figures[name] * scored), scored))
        return facts, cacheable

    def encode(self, product: tuple[dict, bool], job: FileJob) -> Stored | None:
        facts, cacheable = product
        return Stored(meta={"facts": facts, "label": f"{job.row.variant} targets"}) if cacheable else None

    def decode(self, entry: Any, job: FileJob) -> tuple[dict, bool]:
        return entry.meta["facts"], True

    def apply(self, row: VariantResult, product: tuple[dict, bool], job: FileJob) -> None:
        from quantbench.targets import judge_all, runs_on

        row.targets = judge_all(product[0], row.size_bytes, budgets(job.ctx.cfg))
        job.ctx.emit("info", f"{row.variant}: runs on {', '.join(runs_on(row.targets)) or 'CPU only'}")


TARGETS_STAGE = TargetsStage()
