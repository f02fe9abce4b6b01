"""Execute a plan: produce every variant's model, file and measurements; print nothing.

For each Keras model of the plan (plan.models_of: the base model, then each transform's
output), in order: its reference row (the Keras model scored on the validation images), then
every conversion of it, each scored on LiteRT and timed. Every product is looked up in the
store first (store.py): a trained model, a converted file, an accuracy, a latency figure (the
latter only on the same machine), so a second run of the same config redoes nothing and a
resumed run continues where it stopped. Models are loaded lazily: nothing is read or trained
that no missing product needs. Progress is reported as events through `emit(level, text)`;
the caller decides whether and how to show them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core import results as results_mod
from quantbench.core.errors import MachineError, QuantbenchError
from quantbench.engine.plan import ModelSpec, VariantSpec, models_of
from quantbench.core.results import RunResults, TrainingResult, VariantResult
from quantbench.engine.stages import LATENCY_IMAGES

Emit = Callable[[str, str], None]  # (level: "step" | "info" | "warn", text)
KEPT_ON_RESUME = ("ok", "identical")  # rows a resumed run keeps; failed ones are retried


def key_of(stage: str, params: dict[str, Any], parent: str | None = None,
           data: str | None = None) -> str:
    """A store key for this quantbench and these libraries (fingerprint.store_key)."""
    from quantbench.store import library_versions, store_key

    return store_key(stage, params, parent, data, library_versions())


def silent(level: str, text: str) -> None:
    """The default event sink: the library says nothing unless the caller listens."""


@dataclass(frozen=True)
class Resources:
    """What the run may use; decided by the caller (the CLI, a sweep's scheduler), not read
    from the machine deep inside."""

    cores: int
    convert_workers: int
    # Where latency figures come from and how they are taken: a sweep names the node and hands
    # in a per-node lock, so two trials never time models on one node at once (sweep_engines).
    node: str | None = None
    latency_slot: Callable[[], Any] | None = field(default=None, compare=False)

    def latency_guard(self) -> Any:
        """A context manager held while latency is measured (a no-op outside a sweep)."""
        from contextlib import nullcontext

        return self.latency_slot() if self.latency_slot is not None else nullcontext()

    @classmethod
    def detect(cls) -> Resources:
        import os

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return cls(cores=cores or 1, convert_workers=cores or 1)


class BaseSource:
    """Where the plan's base model comes from: trained here (`run`) or the user's (`quantize`)."""

    label = "base model"
    model_file: str | None = None  # a file name in the run dir that holds the base model
    cacheable = True  # its trained weights go to the store (a user's model is its own file)
    trains = True  # `run` trains it; transforms may also build it afresh (QAT recipe fresh)

    def key_params(self, repeat: int) -> dict[str, Any]:
        raise NotImplementedError

    def produce(self, ctx: Context, repeat: int) -> tuple[Any, TrainingResult | None]:
        raise NotImplementedError

    def rebuild(self, ctx: Context, repeat: int) -> Any:
        """The untrained architecture the store's cached weights load into (None: not cached)."""
        return None

    def for_transforms(self, model: Any, ctx: Context, results: RunResults) -> Any:
        """The model the transforms start from (e.g. flattened for QAT); a ModelError here
        fails the transformed model's variants, not the run."""
        return model

    def describe_reference(self, row: VariantResult) -> None:
        """Fill in what only the source knows (the user's file size)."""


@dataclass
class Context:
    """What every stage shares: the config, the data scaled once, the store, the sinks."""

    cfg: Any  # config.RunConfig
    run_dir: Path
    dataset: Any  # data.Dataset
    store: Any  # store.Store
    resources: Resources
    emit: Emit = silent
    val_inputs: np.ndarray = field(default=None)  # type: ignore[assignment]
    calibration_inputs: np.ndarray = field(default=None)  # type: ignore[assignment]
    data_key: str = ""
    calibration_key: str = ""
    latency_key: str = ""
    reference_predictions: dict[int, np.ndarray] = field(default_factory=dict)  # by repeat
    worker: Any = None  # evaluate.EvalWorker, started at the first measurement
    # (row id, latency store key, .tflite path) of rows with a figure timed on a busy machine:
    # stages.settle_busy measures them again at the end of the run.
    busy_latency: list[tuple[str, str, Path]] = field(default_factory=list)
    target_worker: Any = None  # targets.stage.TargetWorker, started at the first target check

    @property
    def preprocessing(self):
        from quantbench.ml.preprocess import Preprocessing

        data = self.cfg.data
        return Preprocessing(data.image_size, data.scaling, data.channel_order)

    def prepare(self) -> None:
        """Scale the validation and calibration images once and fingerprint the data."""
        from quantbench.ml.data import calibration_indices
        from quantbench.store import data_fingerprint

        d = self.dataset
        picks = calibration_indices(len(d.train_images), self.cfg.convert.calibration_images,
                                    self.cfg.data.split_seed)  # fmt: skip
        self.val_inputs = self.preprocessing.scale(d.val_images)
        self.calibration_inputs = self.preprocessing.scale(d.train_images[picks])
        data = self.cfg.data
        self.data_key = data_fingerprint(
            [d.train_images, d.train_labels, d.val_images, d.val_labels,
             np.frombuffer("\n".join(d.classes).encode("utf-8", "surrogateescape"), np.uint8),
             np.frombuffer(f"{data.scaling}/{data.channel_order}".encode(), np.uint8)]
        )  # fmt: skip
        self.calibration_key = data_fingerprint([self.calibration_inputs])
        self.latency_key = data_fingerprint([self.val_inputs[:LATENCY_IMAGES]])

    def predict(self, path: Path) -> tuple[np.ndarray, float]:
        if self.worker is None:
            from quantbench.measure.evaluate import EvalWorker

            self.worker = EvalWorker(self.val_inputs, self.resources.cores)
        evaluate = self.cfg.evaluate
        return self.worker.predict(path, evaluate.threads[-1], evaluate.batch_size)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None
        if self.target_worker is not None:
            self.target_worker.close()
            self.target_worker = None


class _LazyModel:
    """A Keras model loaded (or trained) on first use; `key` is known without loading it."""

    def __init__(self, key: str, load: Callable[[], Any]):
        self.key = key
        self._load = load
        self._model: Any = None

    def get(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model


class Executor:
    def __init__(self, ctx: Context, results: RunResults, base: BaseSource):
        self.ctx = ctx
        self.results = results
        self.base = base
        self.models: dict[ModelSpec, _LazyModel] = {}
        self.plan: list[VariantSpec] = []
        # Conversions a search completed (selective.py), by variant id, and their searches.
        self.resolved: dict[str, Any] = {}
        self.searches: dict[str, Any] = {}

    def conversion_of(self, spec: VariantSpec) -> Any:
        """The conversion to apply: the spec's own, or its search's resolved version."""
        return self.resolved.get(spec.id, spec.scheme)

    # --- bookkeeping ------------------------------------------------------------------------

    def _save(self) -> None:
        results_mod.save(self.results, self.ctx.run_dir)

    def _done(self, spec: VariantSpec) -> VariantResult | None:
        return next((r for r in self.results.variants if r.id == spec.id), None)

    def _add(self, row: VariantResult) -> None:
        self.results.variants.append(row)
        self._save()

    def _record_training(self, training: TrainingResult | None) -> None:
        if training is None:
            return
        if not any(t.name == training.name and t.repeat == training.repeat
                   for t in self.results.training):  # fmt: skip
            self.results.training.append(training)

    # --- models -----------------------------------------------------------------------------

    def _seed(self, repeat: int) -> int:
        return self.ctx.cfg.training_seeds()[repeat]

    def model(self, spec: ModelSpec) -> _LazyModel:
        if spec in self.models:
            return self.models[spec]
        store_key = key_of

        cfg = self.ctx.cfg
        if spec.parent is None:
            params = {"base": self.base.key_params(spec.repeat)}
            parent_key = None
        else:
            transform = spec.transforms[-1]
            params = {"transform": transform.model_dump(mode="json"), "seed": self._seed(spec.repeat),
                      "train": cfg.train.model_dump(mode="json", exclude={"seed"}),
                      "model": cfg.model.model_dump(mode="json")}  # fmt: skip
            parent_key = self.model(spec.parent).key
        key = store_key("model", params, parent=parent_key, data=self.ctx.data_key)
        # A resumed run keeps its own models, even if quantbench or a library changed since
        # (which changes the keys): rows measured before and after come from one model.
        recorded = self.results.models.get(spec.id)
        if recorded and recorded != key and self.ctx.store.get(recorded) is not None:
            key = recorded
        self.results.models[spec.id] = key
        cached = self.ctx.store.get(key) if spec.parent is not None or self.base.cacheable else None
        if cached is not None:
            self.ctx.emit("step", f"{spec.name} model{_repeat(spec.repeat)}: cached")
            self._materialize_model_file(spec, cached)  # model.keras without loading the model
            training = cached.meta.get("training")  # its training cost, for the cost table
            self._record_training(TrainingResult.model_validate(training) if training else None)
        lazy = _LazyModel(key, lambda: self._load_or_train(spec, key))
        self.models[spec] = lazy
        return lazy

    def _load_or_train(self, spec: ModelSpec, key: str) -> Any:
        from quantbench.techniques.transforms import TRANSFORMS, TrainJob

        ctx, repeat = self.ctx, spec.repeat
        job = TrainJob(ctx.dataset, ctx.preprocessing, ctx.cfg, self._seed(repeat), repeat,
                       can_build_fresh=self.base.trains, emit=ctx.emit)  # fmt: skip
        if spec.parent is None:
            rebuild = lambda: self.base.rebuild(ctx, repeat)  # noqa: E731
            produce = lambda: self.base.produce(ctx, repeat)  # noqa: E731
        else:
            entry = TRANSFORMS.get(spec.transforms[-1].name)
            params = TRANSFORMS.params_of(spec.transforms[-1])
            parent = self.base.for_transforms(self.model(spec.parent).get(), ctx, self.results) \
                if spec.parent.parent is None else self.model(spec.parent).get()  # fmt: skip
            rebuild = lambda: entry.rebuild(params, parent, job)  # noqa: E731
            produce = lambda: entry.apply(params, parent, job)  # noqa: E731
        cacheable = spec.parent is not None or self.base.cacheable
        cached = ctx.store.get(key) if cacheable else None
        if cached is not None:
            model = rebuild()
            if model is not None:
                with np.load(cached.path("weights.npz")) as weights:
                    model.set_weights([weights[f"arr_{i}"] for i in range(len(weights.files))])
                training = cached.meta.get("training")
                self._record_training(TrainingResult.model_validate(training) if training else None)
                ctx.emit("info", f"loaded the cached {spec.name} model{_repeat(repeat)}")
                self._materialize_model_file(spec, cached)
                return model
        model, training = produce()
        self._record_training(training)
        if cacheable:
            self._store_model(spec, key, model, training)
        return model

    def _store_model(self, spec: ModelSpec, key: str, model: Any, training: TrainingResult | None):
        import tempfile

        from quantbench.engine.run import save_for_inference

        with tempfile.TemporaryDirectory(prefix="quantbench-model-") as tmp:
            files = {"weights.npz": Path(tmp) / "weights.npz"}
            np.savez(files["weights.npz"], *model.get_weights())
            if spec.parent is None and self.base.model_file:
                files[self.base.model_file] = Path(tmp) / self.base.model_file
                save_for_inference(model, files[self.base.model_file])
            meta = {"label": f"{spec.name} model, repeat {spec.repeat}",
                    "training": training.model_dump(mode="json") if training else None}  # fmt: skip
            entry = self.ctx.store.put(key, "model", files, meta)
        self._materialize_model_file(spec, entry)

    def _materialize_model_file(self, spec: ModelSpec, entry: Any) -> None:
        name = self.base.model_file
        if spec.parent is None and spec.repeat == 0 and name and not (self.ctx.run_dir / name).exists():
            entry.link_or_copy(name, self.ctx.run_dir / name)

    # --- the plan -----------------------------------------------------------------------------

    def run(self, specs: list[VariantSpec]) -> None:
        from quantbench.engine.stages import convert_model, measure_variant, reference_row, settle_busy

        self.plan = list(specs)
        failed: dict[ModelSpec, str] = {}  # models that could not be made, and why
        for model_spec in models_of(specs):
            mine = [s for s in specs if s.model == model_spec]
            broken = failed.get(model_spec.parent) if model_spec.parent else None
            if broken is None:
                try:
                    self._model_rows(model_spec, mine, reference_row, convert_model, measure_variant)
                    continue
                except QuantbenchError as e:  # a transform that cannot train, a bridge that fails
                    if model_spec.parent is None or isinstance(e, MachineError):
                        raise  # no base model (or no disk): nothing else can run either
                    broken = e.message
                    self.ctx.emit("warn", f"the {model_spec.name} model failed: {broken}")
            failed[model_spec] = broken
            for spec in mine:
                if self._done(spec) is None:
                    self._add(_failed_row(spec, broken))
        settle_busy(self)  # latency figures taken while the machine was busy: once more, quiet

    def _model_rows(self, model_spec, mine, reference_row, convert_model, measure_variant) -> None:
        """The reference row and every conversion of one model, in plan order."""
        lazy = self.model(model_spec)
        for spec in mine:
            if spec.scheme is None and self._done(spec) is None:
                self._add(reference_row(self, spec, lazy))
            elif spec.scheme is None:
                self._restore_reference(spec)
        todo = [s for s in mine if s.scheme is not None and self._done(s) is None]
        if todo:
            from quantbench.techniques.selective import resolve_searches

            resolve_searches(self, lazy, todo)  # conversions that search first (selective)
            files = convert_model(self, model_spec, lazy, todo)
            for spec in todo:
                row = measure_variant(self, spec, files[spec])
                row.selective = self.searches.get(spec.id)
                self._add(row)

    def _restore_reference(self, spec: VariantSpec) -> None:
        """A resumed run needs the reference's predictions for the agreement of new rows."""
        if spec.transforms or spec.repeat in self.ctx.reference_predictions:
            return
        from quantbench.engine.stages import reference_record

        lazy = self.model(spec.model)
        self.ctx.reference_predictions[spec.repeat] = np.asarray(
            reference_record(self, spec, lazy)["predictions"]
        )


def _failed_row(spec: VariantSpec, error: str) -> VariantResult:
    from quantbench.engine.stages import _row

    row = _row(spec)
    row.status, row.error = "failed", error
    return row


def _repeat(repeat: int) -> str:
    return f" (repeat {repeat})" if repeat else ""


def keep_for_resume(results: RunResults) -> None:
    """Drop the rows a resumed run redoes: failed ones, and those without a spec (version 1)."""
    results.variants = [r for r in results.variants if r.status in KEPT_ON_RESUME and r.id]
    results.resumed.append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
