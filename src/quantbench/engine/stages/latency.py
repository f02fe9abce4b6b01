"""Latency figures of a converted file, each in a fresh worker (measure/latency.py).

A figure taken while other processes held the cores (`busy`) is stored flagged like any other:
it is still this run's best figure and a resume keeps it. But every busy figure, new or
reused, is noted, and `finish` measures it again at the end of the run, after waiting for
quiet, and keeps the quieter of the two (the executor stores it under the same key).
"""

from __future__ import annotations

import time
from typing import Any

from quantbench.core.results import LatencyResult, RunResults, VariantResult
from quantbench.engine.context import LATENCY_IMAGES, Context
from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.jobs import FileJob

class LatencyStage:
    name = "latency"
    reuse_label = "latency"

    def applies(self, job: FileJob) -> bool:
        return True

    def key(self, job: FileJob) -> Key:
        from quantbench.store import machine_fingerprint

        evaluate = job.ctx.cfg.evaluate
        params = {"threads": list(evaluate.threads), "min_runs": evaluate.latency_runs,
                  "warmup_runs": evaluate.warmup_runs, "machine": machine_fingerprint()}  # fmt: skip
        if list(evaluate.runtimes) != ["interpreter"]:  # older keys (Interpreter only) stay valid
            params["runtimes"] = list(evaluate.runtimes)
        return Key(params, parent=job.file_key, data=job.ctx.latency_key)

    def compute(self, job: FileJob) -> list[LatencyResult]:
        from quantbench.measure import latency

        ctx = job.ctx
        evaluate = ctx.cfg.evaluate
        with ctx.resources.latency_guard():  # a sweep's per-node lock: one timing at a time
            figures = latency.measure_all(
                job.path, ctx.val_inputs[:LATENCY_IMAGES], list(evaluate.threads),
                runtimes=list(evaluate.runtimes), min_runs=evaluate.latency_runs,
                warmup_runs=evaluate.warmup_runs,
            )  # fmt: skip
        for figure in figures:
            figure.node = ctx.resources.node
        return figures

    def encode(self, product: list[LatencyResult], job: FileJob) -> Stored:
        return Stored(meta={"latency": [r.model_dump(mode="json") for r in product],
                            "label": f"{job.row.variant} latency"})  # fmt: skip

    def decode(self, entry: Any, job: FileJob) -> list[LatencyResult]:
        return [LatencyResult.model_validate(r) for r in entry.meta["latency"]]

    def apply(self, row: VariantResult, product: list[LatencyResult], job: FileJob) -> None:
        row.latency = product
        if any(r.busy for r in product):
            job.ctx.later.setdefault(self.name, []).append((row.id, job))

    def finish(self, ctx: Context, results: RunResults) -> list[tuple[FileJob, list[LatencyResult]]]:
        """Wait (at most `evaluate.wait_quiet` seconds in all) for the machine to become quiet,
        measure every busy figure again, keep the quieter of the two and say so in the row's
        notes; returns the figures to store again (nothing when `wait_quiet` is None)."""
        from quantbench.measure import busy, explain, latency

        pending = ctx.later.pop(self.name, None)
        budget = ctx.cfg.evaluate.wait_quiet
        if budget is None or not pending:
            return []
        n = len(pending)
        ctx.emit("step", f"re-measuring {n} variant{'s' * (n != 1)} timed on a busy machine "
                 f"(waiting up to {budget:g} s for quiet)")  # fmt: skip
        deadline = time.monotonic() + budget
        evaluate = ctx.cfg.evaluate
        updated = []
        for row_id, job in pending:
            row = next((r for r in results.variants if r.id == row_id), None)
            if row is None or not job.path.exists():
                continue

            def again(old: LatencyResult, path=job.path) -> LatencyResult:
                with ctx.resources.latency_guard():
                    figure = latency.measure(path, ctx.val_inputs[:LATENCY_IMAGES], old.threads,
                                             xnnpack=old.delegate == "xnnpack", runtime=old.runtime,
                                             min_runs=evaluate.latency_runs,
                                             warmup_runs=evaluate.warmup_runs)  # fmt: skip
                figure.node = ctx.resources.node
                return figure

            reference_ms = float32_latency(results, row.repeat)
            before = set(explain.explain(job.path, row.latency, reference_ms))
            row.latency, line = busy.remeasure(row.latency, again, deadline)
            row.notes = [n for n in row.notes if n not in before]
            row.notes += explain.explain(job.path, row.latency, reference_ms) + ([line] if line else [])
            updated.append((job, row.latency))
            for twin in results.variants:  # rows that copied this row's figures
                if twin.status == "identical" and twin.identical_to == row.variant and twin.repeat == row.repeat:
                    twin.latency = [r.model_copy() for r in row.latency]
            if line:
                ctx.emit("info", f"{row.variant}: {line}")
        return updated


def float32_latency(results: RunResults, repeat: int) -> float | None:
    baseline = results.variant("float32", repeat)
    return baseline.latency_ms() if baseline and baseline.ok else None


LATENCY = LatencyStage()
