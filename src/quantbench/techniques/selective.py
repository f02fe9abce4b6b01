"""Selective quantization: the fewest layers kept in float that hold accuracy within a budget.

1. Rank: the per-layer analysis (analysis.py) of the base scheme orders its quantized ops by
   RMSE/scale, worst first.
2. Search the number k of worst layers to keep in float, with real conversions and
   evaluations: k = 0 (the plain base, converted while the analysis runs); then, while the
   smallest passing k and the largest failing k are more than 1 apart, as many new k as
   there are converter workers, spaced evenly in log(k + 1) between them (the answer is
   usually a handful of layers, so log spacing reaches it in fewer rounds than halving);
   k = all only once smaller k have failed. Candidates of a round are converted in parallel
   by one pool of workers kept for the whole search (convert.ConverterPool): each imports
   TensorFlow and calibrates once, then quantizes each candidate with its denylist in under
   a second.
3. No selection bias: candidates are scored on images held apart from the validation split the
   results report: in `run`, a slice of the training split held out of training
   (data.hold_out_search says why); `convert.search_data` when given. The chosen variant is
   then converted and measured like any other, on the untouched validation split.

The executor calls `resolve_searches` for conversions whose registry entry `needs_search`;
the result (the denylist, the search's trace, the analysis) is cached in the store, and each
candidate file is stored under the key the final conversion asks for, so the chosen file is
never converted twice.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from quantbench.core.errors import QuantbenchError
from quantbench.core.results import LayerAnalysis, SearchCandidate, SelectiveSearch

if TYPE_CHECKING:
    from quantbench.engine.executor import Executor, _LazyModel
    from quantbench.engine.plan import VariantSpec
    from quantbench.techniques import TechniqueSpec

LATENCY_RUNS = 20  # per candidate: enough for the trend the report draws


def next_points(lo: int, hi: int, width: int) -> list[int]:
    """`width` integers strictly between lo and hi, evenly spaced in log(k + 1)."""
    a, b = math.log(lo + 1), math.log(hi + 1)
    points = []
    for i in range(1, width + 1):
        k = int(round(math.exp(a + i * (b - a) / (width + 1)) - 1))
        k = min(max(k, lo + 1), hi - 1)
        if k not in points:
            points.append(k)
    return [k for k in points if lo < k < hi] or ([(lo + hi) // 2] if hi - lo > 1 else [])


def search(
    model: Any,
    conversion: TechniqueSpec,
    calibration_inputs: np.ndarray,
    search_inputs: np.ndarray,
    search_labels: np.ndarray,
    float_accuracy: float,
    budget: float,
    *,
    workers: int = 2,
    threads: int = 1,
    latency: bool = True,
    source: str = "",
    on_file: Callable[[TechniqueSpec, Path, float], None] | None = None,
    emit: Callable[[str, str], None] = lambda level, text: None,
) -> tuple[TechniqueSpec, SelectiveSearch, LayerAnalysis]:
    """Search the float layers of `conversion` (a `selective` spec) for `model`.

    `budget` is in accuracy points below `float_accuracy` (a fraction, on the search images).
    Returns the resolved spec (its denylist filled in), the search's trace and the analysis.
    `on_file(spec, path, seconds)` sees every candidate file (for the store) before it goes.
    """
    from quantbench.techniques import layers as analysis_mod
    from quantbench.core import atomic
    from quantbench.techniques.converter import ConverterPool, export_saved_model
    from quantbench.measure.evaluate import WORKER_SECONDS_PER_IMAGE, WORKER_START_SECONDS
    from quantbench.techniques.schemes import SCHEMES
    from quantbench.workers import scratch_dir

    started = time.perf_counter()
    params = SCHEMES.params_of(conversion)
    base = SCHEMES.spec(params.base)
    ranked: list[str] = []
    tried: dict[int, SearchCandidate] = {}
    order: list[int] = []
    floor = float_accuracy - budget / 100.0

    def spec_for(k: int) -> TechniqueSpec:
        return SCHEMES.spec("selective", **{**params.model_dump(), "denylist": ranked[:k]})

    # One pool of workers for the whole search, which convert and score the candidates: each
    # imports TensorFlow, calibrates and loads the search images once.
    with scratch_dir("selective") as tmp:
        with ConverterPool(max(1, workers)) as pool:
            pool.warm()  # the workers import TensorFlow while the model is exported
            saved = export_saved_model(model, Path(tmp) / "saved_model")
            calibration, debug = Path(tmp) / "calibration.npy", Path(tmp) / "debug.npy"
            images = Path(tmp) / "search.npy"
            atomic.save_npy(calibration, calibration_inputs.astype(np.float32))
            atomic.save_npy(debug, search_inputs[: analysis_mod.DEBUG_IMAGES].astype(np.float32))
            atomic.save_npy(images, np.ascontiguousarray(search_inputs, dtype=np.float32))
            predict_timeout = WORKER_START_SECONDS + WORKER_SECONDS_PER_IMAGE * len(search_inputs)

            def evaluate(ks: list[int]) -> int:
                """Convert and score the untried ks (within max_candidates); how many there were."""
                ks = [k for k in dict.fromkeys(ks) if k not in tried][: params.max_candidates - len(order)]
                if not ks:
                    return 0
                jobs = [(spec_for(k).model_dump(mode="json"), str(Path(tmp) / f"candidate-{k}.tflite")) for k in ks]
                outcomes = pool.convert(saved, jobs, calibration)
                for k, (_, out) in zip(ks, jobs):
                    if outcomes[out][1]:
                        raise QuantbenchError(f"selective: the candidate with {k} float layers failed "
                                              f"to convert: {outcomes[out][1]}", tip="re-run with -v")  # fmt: skip
                accuracies = score_in_pool(pool, {k: out for k, (_, out) in zip(ks, jobs)}, images,
                                           search_labels, predict_timeout)  # fmt: skip
                for k, (_, out) in zip(ks, jobs):
                    seconds, accuracy = outcomes[out][0], accuracies[k]
                    tried[k] = SearchCandidate(float_layers=k, search_accuracy=accuracy,
                                               within_budget=accuracy >= floor - 1e-12,
                                               threads=threads if latency else None)  # fmt: skip
                    order.append(k)
                    emit("info", f"selective: {k} float layers: {accuracy:.1%} on the search images "
                                 f"(float {float_accuracy:.1%})")  # fmt: skip
                    if on_file is not None:
                        on_file(spec_for(k), Path(out), seconds)
                return len(ks)

            emit("info", f"selective: per-layer analysis of {params.base}")
            pending = analysis_mod.start_analysis(saved, base.model_dump(mode="json"), calibration, debug, pool)
            evaluate([0])  # the plain base needs no ranking: it converts and scores beside the analysis
            rows = analysis_mod.analysis_rows(pending, base.model_dump(mode="json"))
            analysis = analysis_mod.build_analysis(rows, model, params.base, base.text(),
                                                   min(len(search_inputs), analysis_mod.DEBUG_IMAGES))  # fmt: skip
            ranked = [e.tensor for e in analysis.layers]
            total = len(ranked)
            width = max(1, workers)
            while len(order) < params.max_candidates:
                passing = [k for k in tried if tried[k].within_budget]
                hi = min(passing, default=total + 1)  # total + 1: no passing k known yet
                lo = max((k for k in tried if k < hi and not tried[k].within_budget), default=-1)
                if hi - lo <= 1:
                    break
                if passing:
                    ks = next_points(lo, hi, width)
                else:  # k = all only once log-spaced smaller k have failed: it is rarely the answer
                    ks = next_points(lo, total, width) if len(tried) == 1 else []
                    ks = ks or (next_points(lo, total, width - 1) if width > 1 else []) + [total]
                if not evaluate(ks):
                    break
            passing = [k for k in tried if tried[k].within_budget]
            chosen = min(passing) if passing else max(tried, key=lambda k: (tried[k].search_accuracy, -k))
        # Timed once the pool is gone: beside its idle TensorFlow workers the 2-thread figures
        # of the first candidates came out up to twice the final measurement (0.22-0.31 ms
        # against 0.12-0.15 ms); nothing of the search's own runs while these are timed.
        if latency:
            for k in order:
                tried[k].latency_ms = _latency(str(Path(tmp) / f"candidate-{k}.tflite"), search_inputs, threads)
    resolved = spec_for(chosen)
    names = {e.tensor: e.layer or e.tensor for e in analysis.layers}
    trace = SelectiveSearch(
        base=params.base, budget=budget, search_images=len(search_inputs), search_source=source,
        float_search_accuracy=float_accuracy, quantizable_layers=total,
        candidates=[tried[k] for k in order], conversions=len(order),
        float_nodes=ranked[:chosen], float_layers=[names[t] for t in ranked[:chosen]],
        within_budget=bool(passing), seconds=time.perf_counter() - started,
    )  # fmt: skip
    return resolved, trace, analysis


def score_in_pool(pool: Any, models: dict[Any, str | Path], inputs: Path, labels: np.ndarray,
                  timeout: float) -> dict[Any, float]:  # fmt: skip
    """Top-1 of each converted model on the images saved at `inputs`, scored in parallel by
    the pool's workers (one thread each: they share the cores; each loads the images once)."""
    from quantbench.workers import WorkerError

    futures = {}
    for key, path in models.items():
        payload = {"inputs": str(inputs), "model": str(path), "threads": 1, "batch_size": 4,
                   "out": f"{path}.scores.npy"}  # fmt: skip
        futures[key] = pool.submit("predict", payload, timeout)
    out = {}
    for key, future in futures.items():
        try:
            future.result()
        except (WorkerError, QuantbenchError) as e:
            raise QuantbenchError(f"selective: {Path(models[key]).name} failed to run: {e.message}",
                                  tip="re-run with -v") from None  # fmt: skip
        out[key] = float(np.mean(np.load(f"{models[key]}.scores.npy").argmax(axis=1) == labels))
    return out


def _latency(path: str, inputs: np.ndarray, threads: int) -> float | None:
    from quantbench.measure import latency

    try:
        result = latency.measure(path, inputs[:16], threads, min_runs=LATENCY_RUNS, min_seconds=0.2,
                                 warmup_runs=3, warmup_seconds=0.1, max_seconds=5.0)  # fmt: skip
    except QuantbenchError:
        return None
    return result.median_ms


# --- the executor's side ---------------------------------------------------------------------


def holdout_count(specs: list[VariantSpec], cfg: Any) -> int:
    """How many training photos a run holds out of training for its searches (0: none):
    the most any search of the plan scores, unless `convert.search_data` supplies them."""
    from quantbench.techniques.schemes import SCHEMES

    if getattr(cfg.convert, "search_data", None):
        return 0
    counts = [SCHEMES.params_of(s.scheme).search_images for s in specs
              if s.scheme is not None and SCHEMES.get(s.scheme.name).needs_search
              and SCHEMES.params_of(s.scheme).denylist is None]  # fmt: skip
    return max(counts, default=0)


def hold_out(dataset: Any, cfg: Any, specs: list[VariantSpec] | None = None) -> Any:
    """`dataset` as `run` trains on it: its search photos held out of training when the plan
    has a search (data.hold_out_search). Anything that re-reads a run's photos (`analyze`,
    benchmarks) calls this, or its calibration slice would not be the run's."""
    from quantbench.ml.data import hold_out_search
    from quantbench.engine.plan import plan

    count = holdout_count(plan(cfg) if specs is None else specs, cfg)
    return hold_out_search(dataset, count, cfg.data.split_seed) if count else dataset


def search_set(ctx: Any, count: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Labelled images held apart from the validation split: `convert.search_data` when set;
    else the training photos held out of training (data.hold_out_search, in `run`); else (a
    model trained elsewhere, `quantize`) photos outside the calibration slice."""
    from quantbench.ml.data import calibration_indices

    folder = getattr(ctx.cfg.convert, "search_data", None)
    if folder:
        return (*_folder_images(ctx, Path(folder), count), f"{count} images of {folder}")
    d = ctx.dataset
    if getattr(d, "search_images", None) is not None:
        n = min(count, len(d.search_images))
        return (d.search_images[:n], d.search_labels[:n],
                f"{n} training-split photos held out of training")  # fmt: skip
    n = len(d.train_images)
    picks = set(calibration_indices(n, ctx.cfg.convert.calibration_images, ctx.cfg.data.split_seed).tolist())
    rng = np.random.default_rng(ctx.cfg.data.split_seed + 1)
    others = [i for i in rng.permutation(n) if i not in picks]
    how = "training images outside the calibration slice"
    if len(others) < count:
        others += [i for i in rng.permutation(n) if i in picks]
        how = "training images (calibration ones included: too few others)"
    chosen = np.sort(np.asarray(others[:count], dtype=int))
    return d.train_images[chosen], d.train_labels[chosen], f"{len(chosen)} {how}"


def _folder_images(ctx: Any, folder: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    from quantbench.ml.data import load_dataset

    cfg = ctx.cfg.data.model_copy(update={"dir": folder, "max_images_per_class": None})
    other = load_dataset(cfg)
    images = np.concatenate([other.train_images, other.val_images])
    labels = np.concatenate([other.train_labels, other.val_labels])
    if list(other.classes) != list(ctx.dataset.classes):
        raise QuantbenchError(f"--search-data {folder} has classes {other.classes}, the run has "
                              f"{ctx.dataset.classes}", tip="give it the same class sub-folders")  # fmt: skip
    picks = np.sort(np.random.default_rng(0).permutation(len(images))[:count])
    return images[picks], labels[picks]


def resolve_searches(ex: Executor, lazy: _LazyModel, todo: list[VariantSpec]) -> None:
    """Run (or fetch from the store) the search of every conversion in `todo` that needs one;
    the executor then converts `ex.resolved[spec.id]` instead of the spec's own conversion."""
    from quantbench.ml.data import calibration_indices  # noqa: F401  (keeps import errors early)
    from quantbench.engine.executor import key_of
    from quantbench.store import data_fingerprint
    from quantbench.techniques.schemes import SCHEMES
    from quantbench.ml.train import predict_keras

    ctx = ex.ctx
    for spec in todo:
        entry = SCHEMES.get(spec.scheme.name)
        params = SCHEMES.params_of(spec.scheme)
        if not entry.needs_search or params.denylist is not None:
            continue
        budget = params.budget if params.budget is not None else ctx.cfg.recommend.max_accuracy_drop
        images, labels, source = search_set(ctx, params.search_images)
        inputs = ctx.preprocessing.scale(images)
        threads = ctx.cfg.evaluate.threads[-1]
        key = key_of("selective", {"conversion": spec.scheme.model_dump(mode="json"),
                                   "budget": budget, "threads": threads},
                     parent=lazy.key, data=f"{ctx.calibration_key}/{data_fingerprint([inputs, labels])}")  # fmt: skip
        cached = ctx.store.get(key)
        if cached is not None:
            resolved = SCHEMES.coerce(cached.meta["resolved"])
            trace = SelectiveSearch.model_validate(cached.meta["search"])
            analysis = LayerAnalysis.model_validate(cached.meta["analysis"])
            ctx.emit("info", f"{spec.name}: search cached ({len(trace.float_layers)} float layers)")
        else:
            ctx.emit("step", f"{spec.name}: searching the layers to keep in float "
                             f"(budget {budget:g} points, {len(images)} search images)")  # fmt: skip
            model = lazy.get()
            float_accuracy = float(np.mean(predict_keras(model, images, ctx.preprocessing).argmax(axis=1)
                                           == labels))  # fmt: skip

            def store_file(candidate: TechniqueSpec, path: Path, seconds: float) -> None:
                file_key = key_of("convert", candidate.model_dump(mode="json"), parent=lazy.key,
                                  data=ctx.calibration_key)  # fmt: skip
                if ctx.store.get(file_key) is None:
                    ctx.store.put(file_key, "convert", {"model.tflite": path},
                                  {"seconds": seconds, "label": f"{spec.name} candidate"})  # fmt: skip

            resolved, trace, analysis = search(
                model, spec.scheme, ctx.calibration_inputs, inputs, labels, float_accuracy,
                budget, workers=ctx.resources.convert_workers, threads=threads, source=source,
                on_file=store_file, emit=ctx.emit,
            )  # fmt: skip
            ctx.store.put(key, "selective", {}, {
                "resolved": resolved.model_dump(mode="json"), "search": trace.model_dump(mode="json"),
                "analysis": analysis.model_dump(mode="json"), "label": f"{spec.name} search"})  # fmt: skip
        ex.resolved[spec.id] = resolved
        ex.searches[spec.id] = trace
        add_analysis(ex.results, analysis, ctx.run_dir)


def add_analysis(results: Any, analysis: LayerAnalysis, run_dir: Path | None = None) -> None:
    """Keep one analysis per variant in the results (the newest), and its CSV in the run."""
    from quantbench.techniques.layers import csv_name, write_csv

    results.layer_analyses = [a for a in results.layer_analyses if a.variant != analysis.variant]
    results.layer_analyses.append(analysis)
    if run_dir is not None:
        write_csv(analysis, Path(run_dir) / csv_name(analysis.variant))
