"""Execute a plan: produce every variant's model, file and measurements; print nothing.

For each Keras model of the plan (plan.models_of: the base model, then each transform's
output), in order: its reference row (the Keras model scored on the validation images), then
every conversion of it, each measured (stages.MEASUREMENTS). Every product is made by a stage
(stage.py) and this module is the only code that talks to the store: it computes a product's
key, looks it up, runs the stage only on a miss, keeps what the stage encodes, marks the row's
reuse, and records a failed row with its reason while the run goes on. Models are loaded
lazily: nothing is read or trained that no missing product needs. Progress is reported as
events through `ctx.emit(level, text)`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core import results as results_mod
from quantbench.core.errors import MachineError, QuantbenchError
from quantbench.core.results import RunResults, TrainingResult, VariantResult
from quantbench.core.specs import ModelSpec, TechniqueSpec, VariantSpec
from quantbench.engine.context import BaseSource, Context, key_of
from quantbench.engine.plan import models_of
from quantbench.engine.stage import Produced, Stage
from quantbench.engine.stages import MEASUREMENTS
from quantbench.engine.stages.accuracy import MEASURED_FIELDS, set_scores
from quantbench.engine.stages.convert import CONVERT, Converted
from quantbench.engine.stages.jobs import REFERENCE, ConvertJob, FileJob, ReferenceJob, SearchJob
from quantbench.engine.stages.latency import float32_latency
from quantbench.engine.stages.model import MODEL, ModelJob, training_of
from quantbench.engine.stages.reference import REFERENCE_STAGE
from quantbench.techniques.schemes import SCHEMES

KEPT_ON_RESUME = ("ok", "identical")  # rows a resumed run keeps; failed ones are retried


class LazyModel:
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
        self.models: dict[ModelSpec, LazyModel] = {}
        self.plan: list[VariantSpec] = []
        # Schemes a search completed (by variant id), and what the search adds to the row.
        self.resolved: dict[str, TechniqueSpec] = {}
        self.row_fields: dict[str, dict[str, Any]] = {}
        self._timing: list[list[float]] = []  # the stages computing now, innermost last

    # --- the store: every lookup and every write of a run ----------------------------------

    def key(self, stage: Stage, job: Any) -> str:
        key = stage.key(job)
        return key_of(stage.name, key.params, parent=key.parent, data=key.data)

    def produce(self, stage: Stage, job: Any, key: str | None = None, cache: bool = True) -> Produced:
        """The stage's product for `job`: from the store when it has it, else computed and
        kept (`cache=False`: computed, never stored)."""
        return self.produce_many(stage, [job], [key] if key else None, cache)[0]

    def produce_many(self, stage: Stage, jobs: list[Any], keys: list[str] | None = None,
                     cache: bool = True) -> list[Produced]:  # fmt: skip
        """Like `produce` for a batch: the misses are computed together (`compute_many`, when
        the stage has it: the converter's workers take a model's schemes in parallel)."""
        keys = keys or [self.key(stage, job) for job in jobs]
        out: dict[int, Produced] = {}
        for i, (job, key) in enumerate(zip(jobs, keys)):
            entry = self.ctx.store.get(key) if cache else None
            product = stage.decode(entry, job) if entry is not None else None
            if product is not None:
                out[i] = Produced(product, key, reused=True, entry=entry)
        missing = [i for i in range(len(jobs)) if i not in out]
        if missing:
            compute_many = getattr(stage, "compute_many", None)
            with self._timed(stage.name):
                products = compute_many([jobs[i] for i in missing]) if compute_many else \
                    [stage.compute(jobs[i]) for i in missing]  # fmt: skip
            for i, product in zip(missing, products):
                stored = stage.encode(product, jobs[i]) if cache else None
                entry = self.ctx.store.put(keys[i], stage.name, stored.files, stored.meta) \
                    if stored is not None else None  # fmt: skip
                out[i] = Produced(product, keys[i], reused=False, entry=entry)
            release = getattr(stage, "release", None)
            if release is not None:
                release([jobs[i] for i in missing])
        return [out[i] for i in range(len(jobs))]

    def keep(self, stage: Stage, job: Any, product: Any) -> None:
        """Keep a product made elsewhere (a file a search converted) under its own key."""
        key = self.key(stage, job)
        if self.ctx.store.get(key) is None:
            stored = stage.encode(product, job)
            if stored is not None:
                self.ctx.store.put(key, stage.name, stored.files, stored.meta)

    # --- bookkeeping ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        """Charge the block's seconds to `stage` in the results' breakdown, less what stages
        nested in it took (a model trained lazily for its first conversion is `model` time, not
        `convert` time), so the breakdown partitions the time stages computed."""
        frame = [0.0]  # seconds of nested stages
        self._timing.append(frame)
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self._timing.pop()
            if self._timing:
                self._timing[-1][0] += elapsed
            timings = self.results.stage_seconds
            timings[stage] = timings.get(stage, 0.0) + elapsed - frame[0]

    def _save(self) -> None:
        results_mod.save(self.results, self.ctx.run_dir)

    def done(self, spec: VariantSpec) -> VariantResult | None:
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

    def model(self, spec: ModelSpec) -> LazyModel:
        if spec in self.models:
            return self.models[spec]
        cfg = self.ctx.cfg
        seed = cfg.training_seeds()[spec.repeat]
        if spec.parent is None:
            params, parent = {"base": self.base.key_params(spec.repeat)}, None
        else:
            params = {"transform": spec.transforms[-1].model_dump(mode="json"), "seed": seed,
                      "train": cfg.train.model_dump(mode="json", exclude={"seed"}),
                      "model": cfg.model.model_dump(mode="json")}  # fmt: skip
            parent = self.model(spec.parent)
        job = ModelJob(self.ctx, spec, self.base, self.results, params, parent, seed)
        key = self.key(MODEL, job)
        # A resumed run keeps its own models, even if quantbench or a library changed since
        # (which changes the keys): rows measured before and after come from one model.
        recorded = self.results.models.get(spec.id)
        if recorded and recorded != key and self.ctx.store.get(recorded) is not None:
            key = recorded
        self.results.models[spec.id] = key
        cacheable = spec.parent is not None or self.base.cacheable
        cached = self.ctx.store.get(key) if cacheable else None
        if cached is not None:
            self.ctx.emit("step", f"{spec.name} model{_repeat(spec.repeat)}: cached")
            self._materialize_model_file(spec, cached)  # model.keras without loading the model
            self._record_training(training_of(cached))

        def load() -> Any:
            produced = self.produce(MODEL, job, key=key, cache=cacheable)
            model, training = produced.product
            self._record_training(training)
            if produced.entry is not None:
                self._materialize_model_file(spec, produced.entry)
            return model

        lazy = LazyModel(key, load)
        self.models[spec] = lazy
        return lazy

    def _materialize_model_file(self, spec: ModelSpec, entry: Any) -> None:
        name = self.base.model_file
        if spec.parent is None and spec.repeat == 0 and name and not (self.ctx.run_dir / name).exists():
            entry.link_or_copy(name, self.ctx.run_dir / name)

    # --- the plan -----------------------------------------------------------------------------

    def run(self, specs: list[VariantSpec]) -> None:
        self.plan = list(specs)
        failed: dict[ModelSpec, str] = {}  # models that could not be made, and why
        for model_spec in models_of(specs):
            mine = [s for s in specs if s.model == model_spec]
            broken = failed.get(model_spec.parent) if model_spec.parent else None
            if broken is None:
                try:
                    self._model_rows(model_spec, mine)
                    continue
                except QuantbenchError as e:  # a transform that cannot train, a bridge that fails
                    if model_spec.parent is None or isinstance(e, MachineError):
                        raise  # no base model (or no disk): nothing else can run either
                    broken = e.message
                    self.ctx.emit("warn", f"the {model_spec.name} model failed: {broken}")
            failed[model_spec] = broken
            for spec in mine:
                if self.done(spec) is None:
                    self._add(failed_row(spec, broken))
        self._finish()

    def _model_rows(self, model_spec: ModelSpec, mine: list[VariantSpec]) -> None:
        """The reference row and every conversion of one model, in plan order."""
        lazy = self.model(model_spec)
        for spec in mine:
            if spec.scheme is None and self.done(spec) is None:
                self._add(self._reference_row(spec, lazy))
            elif spec.scheme is None:
                self._restore_reference(spec, lazy)
        # No reference row in the plan (a .tflite source has no Keras model): the row of the
        # file the source supplies is the reference, measured first.
        by_file = not any(s.scheme is None for s in mine)
        if by_file:
            for spec in mine:
                row = self.done(spec)
                if row is not None and self._supplied(spec) is not None:
                    self._reference_from_file(row)
        todo = [s for s in mine if s.scheme is not None and self.done(s) is None]
        if todo:
            self._search(lazy, todo)
            files = self._convert(model_spec, lazy, todo)
            for spec in todo:
                row = self._measure(spec, files[spec])
                for name, value in self.row_fields.get(spec.id, {}).items():
                    setattr(row, name, value)
                if by_file and files[spec].supplied and row.ok:
                    self._reference_from_file(row)
                self._add(row)

    def _finish(self) -> None:
        """Each measurement's end-of-run hook; what it changed is stored again."""
        changed = False
        for stage in MEASUREMENTS:
            finish = getattr(stage, "finish", None)
            for job, product in (finish(self.ctx, self.results) if finish else []):
                stored = stage.encode(product, job)
                if stored is not None:
                    self.ctx.store.put(self.key(stage, job), stage.name, stored.files, stored.meta)
                changed = True
        if changed:
            self._save()

    # --- the reference row ----------------------------------------------------------------------

    def _reference(self, spec: VariantSpec, lazy: LazyModel) -> Produced:
        return self.produce(REFERENCE_STAGE, ReferenceJob(self.ctx, spec, lazy))

    def _reference_row(self, spec: VariantSpec, lazy: LazyModel) -> VariantResult:
        from quantbench.measure.evaluate import score

        ctx = self.ctx
        produced = self._reference(spec, lazy)
        predictions = np.asarray(produced.product["predictions"])
        if not spec.transforms:
            ctx.reference_predictions[spec.repeat] = predictions
        scores = score(predictions, ctx.dataset.val_labels, ctx.dataset.classes,
                       ctx.reference_predictions.get(spec.repeat), REFERENCE)  # fmt: skip
        row = new_row(spec)
        set_scores(row, scores)
        row.eval_images, row.eval_seconds = len(predictions), produced.product["seconds"]
        row.reused = [REFERENCE_STAGE.reuse_label] if produced.reused else []
        if not spec.transforms and spec.repeat == 0 and self.base.model_file:
            path = ctx.run_dir / self.base.model_file
            if path.exists():
                row.path, row.size_bytes = self.base.model_file, path.stat().st_size
        if not spec.transforms:
            self.base.describe_reference(row)
        ctx.emit("info", f"{row.variant}: accuracy {row.accuracy:.1%}"
                 + (" (cached)" if produced.reused else ""))  # fmt: skip
        return row

    def _restore_reference(self, spec: VariantSpec, lazy: LazyModel) -> None:
        """A resumed run needs the reference's predictions for the agreement of new rows."""
        if spec.transforms or spec.repeat in self.ctx.reference_predictions:
            return
        predictions = self._reference(spec, lazy).product["predictions"]
        self.ctx.reference_predictions[spec.repeat] = np.asarray(predictions)

    def _reference_from_file(self, row: VariantResult) -> None:
        """The source's own file is the reference (its row measured, or kept by a resume):
        later rows' agreement and paired differences are against its predictions."""
        from quantbench.core.results import decode_classes
        from quantbench.measure.evaluate import score

        ctx = self.ctx
        if row.predictions is None or row.repeat in ctx.reference_predictions:
            return
        predictions = decode_classes(row.predictions)
        ctx.reference_predictions[row.repeat] = predictions
        ctx.reference_name = row.variant
        if row.agreement is None:  # its own agreement: 1, as the Keras reference row's
            set_scores(row, score(predictions, ctx.dataset.val_labels, ctx.dataset.classes,
                                  predictions, row.variant))  # fmt: skip

    def _supplied(self, spec: VariantSpec) -> Path | None:
        """The file the base source supplies for this variant (instead of converting it)."""
        if spec.transforms or spec.scheme is None:
            return None
        return self.base.supplied_file(self.resolved.get(spec.id, spec.scheme), spec.repeat)

    # --- searches and conversions ---------------------------------------------------------------

    def _search(self, lazy: LazyModel, todo: list[VariantSpec]) -> None:
        """Schemes whose registry entry completes their parameters by a search first (the
        selective search): its stage's product gives the scheme to convert."""
        for spec in todo:
            entry = SCHEMES.get(spec.scheme.name)
            stage = entry.search_stage(SCHEMES.params_of(spec.scheme))
            if stage is None:
                continue

            def keep_file(scheme: TechniqueSpec, path: Path, seconds: float, spec=spec) -> None:
                job = ConvertJob(self.ctx, spec, scheme, lazy, self._out_path(spec))
                self.keep(CONVERT, job, Converted(seconds, path=path))

            produced = self.produce(stage, SearchJob(self.ctx, spec, lazy, keep_file))
            self.resolved[spec.id], self.row_fields[spec.id] = entry.searched(
                produced.product, self.results, self.ctx.run_dir)  # fmt: skip

    def _out_path(self, spec: VariantSpec) -> Path:
        folder = self.ctx.run_dir if spec.repeat == 0 else self.ctx.run_dir / f"repeat-{spec.repeat}"
        return folder / file_name(spec)

    def _convert_job(self, spec: VariantSpec, lazy: LazyModel) -> ConvertJob:
        job = ConvertJob(self.ctx, spec, self.resolved.get(spec.id, spec.scheme), lazy, self._out_path(spec))
        supplied = self._supplied(spec)
        if supplied is not None:  # the source is that file already: stored, not converted
            job.prebuilt = (supplied, 0.0)
        return job

    def _from_file(self, spec: VariantSpec) -> VariantSpec | None:
        """The variant whose file this one is made from (its entry's source is "tflite": the
        same model's conversion by `source_scheme`), or None: made from the model."""
        entry = SCHEMES.get(spec.scheme.name)
        if entry.source != "tflite":
            return None
        scheme = entry.source_scheme(SCHEMES.params_of(spec.scheme))
        return VariantSpec(transforms=spec.transforms, scheme=scheme, repeat=spec.repeat)

    def _convert(self, model_spec: ModelSpec, lazy: LazyModel,
                 todo: list[VariantSpec]) -> dict[VariantSpec, FileOutcome]:  # fmt: skip
        """Every conversion of one model, from the store or converted, each linked into the run
        directory and compared with the model's other files. Schemes made from a .tflite come
        after the others, from the file they start from (produced for them, without a row,
        when the plan does not convert it now), and are keyed on that file."""
        ctx = self.ctx
        jobs = {spec: self._convert_job(spec, lazy) for spec in todo}
        sources = {spec: src for spec in todo if (src := self._from_file(spec)) is not None}
        for source in sources.values():
            if source not in jobs:
                jobs[source] = self._convert_job(source, lazy)
        first = [s for s in jobs if s not in sources]  # from the model (or supplied)
        keys = {s: self.key(CONVERT, jobs[s]) for s in first}
        for spec, source in sources.items():
            jobs[spec].source_file = (keys[source], None)  # the path once it is produced
            keys[spec] = self.key(CONVERT, jobs[spec])
        jobs[todo[0]].out_path.parent.mkdir(parents=True, exist_ok=True)
        reused = sum(ctx.store.get(keys[s], verify=False) is not None for s in todo)
        ctx.emit("step", f"converting the {model_spec.name} model: "
                 + ", ".join(s.scheme.text() for s in todo) + (f" ({reused} cached)" if reused else ""))  # fmt: skip
        produced = dict(zip(first, self.produce_many(CONVERT, [jobs[s] for s in first],
                                                     [keys[s] for s in first]))) if first else {}  # fmt: skip
        files: dict[VariantSpec, FileOutcome] = {}
        ready = []
        for spec, source in sources.items():
            made = produced[source]
            if made.product.error or made.entry is None:
                why = made.product.error or "its file was not kept"
                files[spec] = FileOutcome(keys[spec], None, None, f"no {source.name} file to "
                                          f"start from: {why}")  # fmt: skip
                ctx.emit("warn", f"{spec.name}: no {source.name} file to start from")
                continue
            jobs[spec].source_file = (made.key, made.entry.path("model.tflite"))
            ready.append(spec)
        if ready:
            produced.update(zip(ready, self.produce_many(CONVERT, [jobs[s] for s in ready],
                                                         [keys[s] for s in ready])))  # fmt: skip
        for spec in todo:
            if spec in files:
                continue
            job, made = jobs[spec], produced[spec]
            converted: Converted = made.product
            outcome = FileOutcome(made.key, None, converted.seconds, converted.error,
                                  reused=made.reused, notes=converted.notes,
                                  supplied=self._supplied(spec) is not None)  # fmt: skip
            if not converted.error and made.entry is not None:
                if not job.out_path.exists():
                    made.entry.link_or_copy("model.tflite", job.out_path)
                outcome.path = job.out_path
            files[spec] = outcome
        # The same model twice (float16 asked of a QAT model is DEFAULT's int8 model): measured once.
        from quantbench.techniques.converter import same_model

        earlier = [(s, f) for s, f in self._model_files(model_spec) if f.exists()]
        for spec in todo:
            file = files[spec]
            if file.path is not None:
                file.identical_to = next((s for s, f in earlier if s != spec and s.id != spec.id
                                          and self._order(s) < self._order(spec)
                                          and same_model(f, file.path)), None)  # fmt: skip
        return files

    def _model_files(self, model_spec: ModelSpec) -> list[tuple[VariantSpec, Path]]:
        """Files of this model already in the run (finished rows included), in plan order."""
        run_dir = self.ctx.run_dir
        out = [(row.spec, run_dir / row.path) for row in self.results.variants
               if row.spec is not None and row.spec.model == model_spec and row.path and row.status == "ok"]
        out += [(s, self._out_path(s)) for s in self.plan if s.model == model_spec and s.scheme is not None]
        return list(dict.fromkeys(out))

    def _order(self, spec: VariantSpec) -> int:
        return next((i for i, s in enumerate(self.plan) if s.id == spec.id), len(self.plan))

    # --- measurement --------------------------------------------------------------------------

    def _measure(self, spec: VariantSpec, file: FileOutcome) -> VariantResult:
        """Every measurement of one converted file: cached, copied from an identical twin, or
        measured; a failure is a failed row with its reason."""
        from quantbench.measure import explain

        ctx = self.ctx
        row = new_row(spec)
        row.convert_seconds = file.seconds
        row.reused = [CONVERT.reuse_label] if file.reused else []
        if file.error or file.path is None:
            row.status, row.error = "failed", file.error or "no file"
            return row
        row.path = str(file.path.relative_to(ctx.run_dir))
        row.size_bytes = file.path.stat().st_size
        file_contents(row, file.path)
        row.notes += file.notes  # what the conversion read back from the file it wrote
        twin = self.done(file.identical_to) if file.identical_to is not None else None
        if twin is not None and twin.status == "ok":
            measured = {k: getattr(twin.model_copy(deep=True), k)
                        for k in (*MEASURED_FIELDS, "latency", "targets")}  # fmt: skip
            row = row.model_copy(update={**measured, "status": "identical", "identical_to": twin.variant})
            row.notes.append(f"the same model as {twin.variant}: the scheme had no effect (the "
                             "files differ at most in the converter's record of the options)")
            return row
        job = FileJob(ctx, spec, row, file.path, file.key)
        try:
            for stage in MEASUREMENTS:
                if stage.applies(job):
                    produced = self.produce(stage, job)
                    stage.apply(row, produced.product, job)
                    if produced.reused:
                        row.reused.append(stage.reuse_label)
        except QuantbenchError as e:  # LiteRT refused, crashed or hung: this row says why
            why = explain.load_failure(file.path, e.message)  # what in the file LiteRT refused
            row.status, row.error = "failed", f"{why} (LiteRT: {e.message})" if why else e.message
            ctx.emit("warn", f"{row.variant}: {row.error}")
            return row
        row.notes += explain.explain(file.path, row.latency, float32_latency(self.results, spec.repeat))
        dense = (self.results.variant(VariantSpec(scheme=spec.scheme, repeat=spec.repeat).name, spec.repeat)
                 if spec.transforms else None)  # fmt: skip
        dense_ok = dense is not None and dense.ok
        row.notes += explain.storage_notes(row.weights, row.latency_ms(),
                                           dense.variant if dense_ok else None,
                                           dense.latency_ms() if dense_ok else None)  # fmt: skip
        return row


class FileOutcome:
    """A variant's converted file as the measurements see it."""

    def __init__(self, key: str, path: Path | None, seconds: float | None, error: str | None = None,
                 identical_to: VariantSpec | None = None, reused: bool = False,
                 notes: list[str] | None = None, supplied: bool = False):  # fmt: skip
        self.key, self.path, self.seconds, self.error = key, path, seconds, error
        self.identical_to = identical_to  # an earlier variant of the same model, same bytes
        self.reused = reused
        self.notes = list(notes or [])  # what the conversion found in the file it wrote
        self.supplied = supplied  # the base source's own file (not converted here)


def file_name(spec: VariantSpec) -> str:
    return f"{spec.name}.tflite"


def new_row(spec: VariantSpec) -> VariantResult:
    entry = SCHEMES.get(spec.scheme.name) if spec.scheme else None
    return VariantResult(
        id=spec.id, spec=spec, variant=spec.name, source=spec.source, repeat=spec.repeat,
        scheme=spec.scheme.name if spec.scheme else None,
        policy=entry.policy_of(SCHEMES.params_of(spec.scheme)) if entry else "Keras (reference)",
        kind="tflite" if entry else "keras",
    )  # fmt: skip


def failed_row(spec: VariantSpec, error: str) -> VariantResult:
    row = new_row(spec)
    row.status, row.error = "failed", error
    return row


def file_contents(row: VariantResult, path: Path) -> None:
    """Gzip size and what the weight tensors hold (zeros, distinct values): read from the
    file in well under a second, so never cached."""
    from quantbench.measure import filestats

    row.gzip_bytes = filestats.gzip_size(path)
    try:
        row.weights = filestats.weight_stats(path)
        if not row.weights.tensors:  # weights behind ops we do not follow (fake-quant float32)
            row.weights = None
    except (ValueError, KeyError, IndexError, AttributeError):  # a file layout we cannot read
        row.weights = None


def _repeat(repeat: int) -> str:
    return f" (repeat {repeat})" if repeat else ""


def keep_for_resume(results: RunResults) -> None:
    """Drop the rows a resumed run redoes: failed ones, and those without a spec (version 1)."""
    results.variants = [r for r in results.variants if r.status in KEPT_ON_RESUME and r.id]
    results.resumed.append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
