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

The registry entry's hooks (schemes.Selective) hand the executor the search as a stage
(`SearchStage`, cached in the store like every product) and the photos it holds out of
training; each candidate file is kept under the key the final conversion asks for, so the
chosen file is never converted twice.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

import numpy as np

from quantbench.core.errors import QuantbenchError
from quantbench.core.results import LayerAnalysis, SearchCandidate, SelectiveSearch
from quantbench.core.specs import TechniqueSpec
from quantbench.techniques import Params


class SelectiveParams(Params):
    base: Literal["int8", "int8_io", "int8_per_tensor", "int8_per_tensor_io"] = "int8_per_tensor"
    budget: float | None = Field(None, ge=0)  # points below float; None: --max-accuracy-drop
    # Held-apart images that score candidates: at 300, one image is 0.33 points and the default
    # preset's curve was flat within noise from 3 to 29 float layers (a 1-point budget then picks
    # by chance); 1000 halves the noise.
    search_images: int = Field(1000, ge=10, le=100_000)
    max_candidates: int = Field(12, ge=2, le=200)  # candidate conversions the search may make
    denylist: list[str] | None = None  # TF Lite tensor names kept in float (the search's result)


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
    from quantbench.workers import scratch_dir

    started = time.perf_counter()
    params = SelectiveParams.model_validate(conversion.params)
    base = TechniqueSpec(name=params.base)  # the int8 family: no parameters of their own
    ranked: list[str] = []
    tried: dict[int, SearchCandidate] = {}
    order: list[int] = []
    floor = float_accuracy - budget / 100.0

    def spec_for(k: int) -> TechniqueSpec:
        return TechniqueSpec(name=conversion.name, params=params.model_copy(
            update={"denylist": ranked[:k]}).model_dump(mode="json"))  # fmt: skip

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


# --- the search as a stage, and its photos ---------------------------------------------------


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


class SearchStage:
    """The search as a stage (engine/stage.py): its product is the completed spec, the trace
    and the analysis; the key's parent is the model, its data the calibration and search
    images. Every candidate file goes to `job.keep_file`, under the key its conversion asks
    for, so the chosen file is never converted twice."""

    name = "selective"
    reuse_label = "search"

    def _inputs(self, job: Any) -> dict[str, Any]:
        if not job.memo:
            ctx = job.ctx
            params = SelectiveParams.model_validate(job.spec.scheme.params)
            images, labels, source = search_set(ctx, params.search_images)
            job.memo.update(
                params=params, images=images, labels=labels, source=source,
                inputs=ctx.preprocessing.scale(images), threads=ctx.cfg.evaluate.threads[-1],
                budget=params.budget if params.budget is not None else ctx.cfg.recommend.max_accuracy_drop,
            )  # fmt: skip
        return job.memo

    def key(self, job: Any) -> Any:
        from quantbench.core.products import Key
        from quantbench.store import data_fingerprint

        m = self._inputs(job)
        return Key({"conversion": job.spec.scheme.model_dump(mode="json"), "budget": m["budget"],
                    "threads": m["threads"]}, parent=job.lazy.key,
                   data=f"{job.ctx.calibration_key}/{data_fingerprint([m['inputs'], m['labels']])}")  # fmt: skip

    def compute(self, job: Any) -> dict[str, Any]:
        from quantbench.ml.train import predict_keras

        ctx, m = job.ctx, self._inputs(job)
        ctx.emit("step", f"{job.spec.name}: searching the layers to keep in float "
                         f"(budget {m['budget']:g} points, {len(m['images'])} search images)")  # fmt: skip
        model = job.lazy.get()
        float_accuracy = float(np.mean(predict_keras(model, m["images"], ctx.preprocessing).argmax(axis=1)
                                       == m["labels"]))  # fmt: skip
        resolved, trace, analysis = search(
            model, job.spec.scheme, ctx.calibration_inputs, m["inputs"], m["labels"], float_accuracy,
            m["budget"], workers=ctx.resources.convert_workers, threads=m["threads"],
            source=m["source"], on_file=job.keep_file, emit=ctx.emit,
        )  # fmt: skip
        return {"resolved": resolved.model_dump(mode="json"), "search": trace.model_dump(mode="json"),
                "analysis": analysis.model_dump(mode="json")}  # fmt: skip

    def encode(self, product: dict[str, Any], job: Any) -> Any:
        from quantbench.core.products import Stored

        return Stored(meta={**product, "label": f"{job.spec.name} search"})

    def decode(self, entry: Any, job: Any) -> dict[str, Any]:
        product = {k: entry.meta[k] for k in ("resolved", "search", "analysis")}
        floats = len(product["search"].get("float_layers") or [])
        job.ctx.emit("info", f"{job.spec.name}: search cached ({floats} float layers)")
        return product


SEARCH = SearchStage()


def record_search(product: dict[str, Any], results: Any, run_dir: Path) -> tuple[TechniqueSpec, dict[str, Any]]:
    """The spec to convert, and the row's `selective` trace; the analysis joins the results."""
    add_analysis(results, LayerAnalysis.model_validate(product["analysis"]), run_dir)
    search_trace = SelectiveSearch.model_validate(product["search"])
    return TechniqueSpec.model_validate(product["resolved"]), {"selective": search_trace}


def add_analysis(results: Any, analysis: LayerAnalysis, run_dir: Path | None = None) -> None:
    """Keep one analysis per variant in the results (the newest), and its CSV in the run."""
    from quantbench.techniques.layers import csv_name, write_csv

    results.layer_analyses = [a for a in results.layer_analyses if a.variant != analysis.variant]
    results.layer_analyses.append(analysis)
    if run_dir is not None:
        write_csv(analysis, Path(run_dir) / csv_name(analysis.variant))
