"""The job `run` and `quantize` share: plan, execute, then derive; never prints.

`orchestrate` creates (or, with `resume_dir`, reopens) the run directory (engine/rundir.py),
reads the images, plans the variants (engine/plan.py), executes them (engine/executor.py:
store lookups, workers, events), and derives the summaries, the recommendation and the report.
Results are saved after every row, so a run that is interrupted or fails keeps what it
measured and can be resumed. What to print is the caller's business: events go to `emit`,
and the CLI draws the tables from the results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from quantbench.core import results as results_mod
from quantbench.core.config import RunConfig
from quantbench.core.results import RunResults
from quantbench.engine.context import BaseSource, Context, Emit, Resources, silent
from quantbench.engine.executor import Executor
from quantbench.engine.rundir import finish, open_store, reopen, start


def write_report(results: RunResults, run_dir: Path, emit: Emit = silent) -> Path | None:
    from quantbench.report import write_report as write

    try:
        return write(results, run_dir)
    except Exception as e:  # noqa: BLE001 - a report bug must not cost the measurements
        emit("warn", f"could not write report.html ({type(e).__name__}: {e}); results.json is complete")
        return None


def preflight(cfg: RunConfig) -> None:
    """Fail on bad inputs before a run directory exists: the data folder and the weights."""
    from quantbench.ml.data import check_class_folders, resolve_data_dir
    from quantbench.ml.model import resolve_weights

    check_class_folders(resolve_data_dir(cfg.data.dir))
    resolve_weights(cfg.model.weights, cfg.model.alpha)
    if cfg.track:
        from quantbench.present.tracking import check_available

        check_available(cfg.track)  # a missing tracker fails now, not after training


def orchestrate(
    cfg: RunConfig, command: str, base: BaseSource, *, dataset=None, resume_dir: Path | None = None,
    use_cache: bool = True, resources: Resources | None = None, emit: Emit = silent,
    before: Any = None, after: Any = None,
) -> tuple[RunResults, Path]:  # fmt: skip
    """Plan and execute every variant of `cfg` from `base`; returns the results and run dir.

    `before(ctx, results)` and `after(ctx, results)` let a command add its own records (the
    quantize command's model description, its check) around the shared work."""
    from quantbench.engine.plan import hold_out, plan

    started = time.perf_counter()
    resources = resources or Resources.detect()
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        results = reopen(run_dir)
        emit("step", f"resuming {run_dir}: {len(results.variants)} variants kept")
    else:
        results, run_dir = start(cfg, command)
        emit("step", f"run directory: {run_dir}")
    ctx = None
    try:
        if dataset is None:
            from quantbench.ml.data import load_dataset

            emit("step", "reading images")
            reading = time.perf_counter()
            dataset = load_dataset(cfg.data, emit, readers=2 * resources.cores)
            _charge(results, "reading images", time.perf_counter() - reading)
        # What the base can make: a .tflite source has no Keras model (BaseSource.variants).
        specs = base.variants(plan(cfg, repeats=len(cfg.training_seeds()) if base.trains else 1))
        if base.trains:  # a model trained elsewhere (quantize) was never trained on these
            dataset = hold_out(dataset, cfg, specs)
        results.data = dataset.summary
        summary = dataset.summary
        held = f", {summary.search_count} held out of training for the search" if summary.search_count else ""
        emit("info", f"{len(summary.classes)} classes, {summary.train_count} training{held} and "
                     f"{summary.val_count} validation images, {len(summary.skipped)} skipped")  # fmt: skip
        results_mod.save(results, run_dir)
        ctx = Context(cfg, run_dir, dataset, open_store(cfg, run_dir, use_cache), resources, emit)
        ctx.prepare()
        if before is not None:
            before(ctx, results)
        Executor(ctx, results, base).run(specs)
        _sort_rows(results, specs)
        if after is not None:
            after(ctx, results)
        derive(results, cfg, command)
        ctx.close()  # inside: a stop signal while the workers end still finishes the run
    except BaseException as e:
        if ctx is not None:
            ctx.close()
        from quantbench.workers.interrupt import received

        interrupted = isinstance(e, KeyboardInterrupt) or received() is not None
        finish(results, run_dir, started, "interrupted" if interrupted else "failed")
        write_report(results, run_dir, emit)  # what was measured stays viewable
        raise
    finish(results, run_dir, started, "complete")
    reporting = time.perf_counter()
    try:
        write_report(results, run_dir, emit)
    except KeyboardInterrupt:  # stopped while writing it: once more, whole (a second signal is ignored)
        write_report(results, run_dir, emit)
        raise
    seconds = time.perf_counter() - reporting
    _charge(results, "report", seconds)
    results.total_seconds = (results.total_seconds or 0.0) + seconds
    _charge_the_rest(results)
    results_mod.save(results, run_dir)
    if cfg.track:
        from quantbench.present.tracking import log_run

        results.extras["tracked"] = {"backend": cfg.track, "where": log_run(results, run_dir, cfg.track)}
        results_mod.save(results, run_dir)
    return results, run_dir


def _charge(results: RunResults, name: str, seconds: float) -> None:
    results.stage_seconds[name] = results.stage_seconds.get(name, 0.0) + seconds


def _charge_the_rest(results: RunResults) -> None:
    """`other` in the time breakdown: what no stage computed (start-up, planning, waiting)."""
    accounted = sum(v for k, v in results.stage_seconds.items() if k != "other")
    results.stage_seconds["other"] = max(0.0, (results.total_seconds or 0.0) - accounted)


def _sort_rows(results: RunResults, specs: list) -> None:
    """Rows in plan order, whatever order a resume produced them in."""
    order = {s.id: i for i, s in enumerate(specs)}
    results.variants.sort(key=lambda r: order.get(r.id, len(order)))


def derive(results: RunResults, cfg: RunConfig, command: str) -> None:
    """Summaries over repeats, training cost, the article's claims (run), the recommendation."""
    from quantbench.analysis import recommend, stats

    stats.attach(results)
    if command == "run":
        from quantbench.analysis import article

        article.attach(results)
    recommend.attach(results, cfg.recommend)


class TrainedBaseline(BaseSource):
    """`run`'s base model: MobileNetV2 with a head, fine-tuned on the run's training split."""

    label = "float baseline"
    model_file = "model.keras"

    def key_params(self, repeat: int) -> dict[str, Any]:
        return {"kind": "trained", "model": self.cfg.model.model_dump(mode="json"),
                "train": self.cfg.train.model_dump(mode="json", exclude={"seed"}),
                "seed": self.cfg.training_seeds()[repeat],
                "image_size": self.cfg.data.image_size}  # fmt: skip

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def rebuild(self, ctx: Context, repeat: int):
        from quantbench.ml.model import build_classifier, freeze_base

        model = build_classifier(len(ctx.dataset.classes), self.cfg.model, self.cfg.data.image_size)
        if self.cfg.train.mode == "frozen_base":
            freeze_base(model)
        return model

    def produce(self, ctx: Context, repeat: int):
        from quantbench.ml.train import fit, seed_everything

        cfg, seed = self.cfg, self.cfg.training_seeds()[repeat]
        ctx.emit("step", f"training the float baseline (seed {seed}, {cfg.train.epochs} epochs)")
        seed_everything(seed)
        model = self.rebuild(ctx, repeat)
        training = fit(model, ctx.dataset, ctx.preprocessing, cfg.train, seed=seed, repeat=repeat,
                       emit=ctx.emit)  # fmt: skip
        return model, training


def run(cfg: RunConfig, *, resume_dir: Path | None = None, use_cache: bool = True,
        resources: Resources | None = None, emit: Emit = silent) -> tuple[RunResults, Path]:  # fmt: skip
    """Run the experiment `cfg` describes; returns the results and the run directory."""
    preflight(cfg)
    return orchestrate(cfg, "run", TrainedBaseline(cfg), resume_dir=resume_dir,
                       use_cache=use_cache, resources=resources, emit=emit)  # fmt: skip
