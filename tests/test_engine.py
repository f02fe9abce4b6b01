"""The engine's rules with fake stages, in milliseconds: the executor alone talks to the store
(a hit is never computed, a miss is computed once and kept, `encode` -> None is not kept, a
product that cannot be read back is computed), batches go to `compute_many`, a failing
measurement is a failed row while the run goes on, identical files are measured once, and a
resume keeps finished rows and redoes failed ones. No TensorFlow, no worker process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from quantbench.core.errors import QuantbenchError
from quantbench.core.results import RunResults
from quantbench.core.specs import VariantSpec
from quantbench.engine import executor as executor_mod
from quantbench.engine.context import BaseSource, Context, Resources
from quantbench.engine.executor import Executor, keep_for_resume
from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.convert import Converted
from quantbench.store import Store
from quantbench.techniques.schemes import SCHEMES


class Counting:
    """A stage that counts its computations; products are the job's text, doubled."""

    name = "fake"
    reuse_label = "fake"

    def __init__(self, keep: bool = True, readable: bool = True):
        self.computed: list[str] = []
        self.keep, self.readable = keep, readable

    def key(self, job):
        return Key({"job": job})

    def compute(self, job):
        self.computed.append(job)
        return job * 2

    def encode(self, product, job):
        return Stored(meta={"product": product}) if self.keep else None

    def decode(self, entry, job):
        return entry.meta["product"] if self.readable else None


def _executor(tmp_path: Path, **cfg) -> Executor:
    ctx = SimpleNamespace(store=Store(tmp_path / "store"), run_dir=tmp_path, emit=lambda *a: None)
    return Executor(ctx, RunResults(name="t", created="now"), BaseSource())


def test_a_miss_is_computed_once_and_kept_and_a_hit_is_never_computed(tmp_path):
    ex, stage = _executor(tmp_path), Counting()
    first = ex.produce(stage, "a")
    second = ex.produce(stage, "a")
    assert (first.product, first.reused) == ("aa", False)
    assert (second.product, second.reused) == ("aa", True)
    assert stage.computed == ["a"] and second.key == first.key
    assert ex.ctx.store.get(first.key).meta["product"] == "aa"


def test_what_encode_does_not_keep_and_what_cannot_be_read_back_is_computed_again(tmp_path):
    ex = _executor(tmp_path)
    unkept = Counting(keep=False)
    ex.produce(unkept, "a"), ex.produce(unkept, "a")
    assert unkept.computed == ["a", "a"]
    unreadable = Counting(readable=False)
    ex.produce(unreadable, "b")
    again = ex.produce(unreadable, "b")
    assert unreadable.computed == ["b", "b"] and not again.reused


def test_cache_false_computes_without_storing(tmp_path):
    ex, stage = _executor(tmp_path), Counting()
    produced = ex.produce(stage, "a", cache=False)
    assert produced.entry is None and ex.ctx.store.get(produced.key) is None


def test_a_batch_computes_only_its_misses_together_and_releases_them(tmp_path):
    class Batch(Counting):
        batches: list[list[str]] = []
        released: list[list[str]] = []

        def compute_many(self, jobs):
            self.batches.append(list(jobs))
            return [j * 2 for j in jobs]

        def release(self, jobs):
            self.released.append(list(jobs))

    ex, stage = _executor(tmp_path), Batch()
    ex.produce(stage, "b")
    out = ex.produce_many(stage, ["a", "b", "c"])
    assert [p.product for p in out] == ["aa", "bb", "cc"]
    assert [p.reused for p in out] == [False, True, False]
    assert stage.batches == [["b"], ["a", "c"]] and stage.released == stage.batches


def test_keys_differ_by_stage_params_parent_and_data(tmp_path):
    ex = _executor(tmp_path)

    class Keyed(Counting):
        def __init__(self, key):
            super().__init__()
            self._key = key

        def key(self, job):
            return self._key

    base = Key({"a": 1}, parent="p", data="d")
    keys = {ex.key(Keyed(k), None) for k in
            (base, Key({"a": 2}, "p", "d"), Key({"a": 1}, "q", "d"), Key({"a": 1}, "p", "e"))}
    assert len(keys) == 4


# --- a whole plan with fake stages -----------------------------------------------------------


class FakeModel:
    def get_weights(self):
        return [np.zeros(2, np.float32)]

    def set_weights(self, weights):
        pass


class FakeBase(BaseSource):
    def __init__(self):
        self.trained = 0

    def key_params(self, repeat):
        return {"kind": "fake"}

    def rebuild(self, ctx, repeat):
        return FakeModel()

    def produce(self, ctx, repeat):
        self.trained += 1
        return FakeModel(), None


class FakeReference(Counting):
    name, reuse_label = "reference", "accuracy"

    def key(self, job):
        return Key({}, parent=job.lazy.key)

    def compute(self, job):
        job.lazy.get()
        return {"predictions": [0, 1, 0, 1], "seconds": 0.1}

    def decode(self, entry, job):
        return entry.meta["product"]


class FakeConvert(Counting):
    """Writes a file per scheme; float16 and float32 get the same bytes (identical twins)."""

    name, reuse_label = "convert", "conversion"

    def key(self, job):
        return Key(job.scheme.model_dump(mode="json"), parent=job.lazy.key)

    def compute(self, job):
        self.computed.append(job.scheme.name)
        job.lazy.get()
        path = job.out_path.parent / f".tmp-{job.scheme.name}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"float" if job.scheme.name in ("float32", "float16") else job.scheme.name.encode())
        return Converted(1.0, path=path)

    def encode(self, product, job):
        return Stored(meta={"seconds": product.seconds}, files={"model.tflite": product.path})

    def decode(self, entry, job):
        return Converted(entry.meta["seconds"])


class FakeMeasure(Counting):
    """Accuracy from the file's bytes; a file named in `fail` raises as LiteRT would."""

    name, reuse_label = "accuracy", "accuracy"

    def __init__(self, fail=()):
        super().__init__()
        self.fail = set(fail)

    def applies(self, job):
        return True

    def key(self, job):
        return Key({}, parent=job.file_key)

    def compute(self, job):
        self.computed.append(job.row.variant)
        if job.row.variant in self.fail:
            raise QuantbenchError(f"{job.row.variant} crashed the runtime")
        return len(job.path.read_bytes()) / 10

    def encode(self, product, job):
        return Stored(meta={"product": product})

    def apply(self, row, product, job):
        row.accuracy = product


@pytest.fixture
def fake_engine(monkeypatch):
    convert, reference = FakeConvert(), FakeReference()
    monkeypatch.setattr(executor_mod, "CONVERT", convert)
    monkeypatch.setattr(executor_mod, "REFERENCE_STAGE", reference)
    monkeypatch.setattr(executor_mod, "file_contents", lambda row, path: None)
    monkeypatch.setattr("quantbench.techniques.converter.same_model",
                        lambda a, b: a.read_bytes() == b.read_bytes())
    monkeypatch.setattr("quantbench.measure.explain.explain", lambda *a, **k: [])
    monkeypatch.setattr("quantbench.measure.explain.storage_notes", lambda *a, **k: [])
    return SimpleNamespace(convert=convert, reference=reference)


def _run(tmp_path, monkeypatch, measure, results=None, schemes=("float32", "float16", "int8")):
    from quantbench.core.config import RunConfig

    monkeypatch.setattr(executor_mod, "MEASUREMENTS", (measure,))
    cfg = RunConfig.model_validate({"convert": {"schemes": list(schemes)}})
    dataset = SimpleNamespace(val_labels=np.array([0, 1, 0, 1]), classes=["a", "b"])
    ctx = Context(cfg, tmp_path, dataset, Store(tmp_path / "store"), Resources(1, 1))
    results = results or RunResults(name="t", created="now")
    base = FakeBase()
    specs = [VariantSpec()] + [VariantSpec(scheme=SCHEMES.spec(s)) for s in schemes]
    Executor(ctx, results, base).run(specs)
    return results, base


def test_a_failing_measurement_is_a_failed_row_and_the_run_goes_on(tmp_path, monkeypatch, fake_engine):
    results, _ = _run(tmp_path, monkeypatch, FakeMeasure(fail={"int8"}))
    rows = {r.variant: r for r in results.variants}
    assert rows["int8"].status == "failed" and "crashed the runtime" in rows["int8"].error
    assert rows["float32"].status == "ok" and rows["float32"].accuracy == 0.5
    assert (tmp_path / "int8.tflite").is_file()  # its file is kept: only the measurement failed


def test_identical_files_are_measured_once(tmp_path, monkeypatch, fake_engine):
    measure = FakeMeasure()
    results, _ = _run(tmp_path, monkeypatch, measure)
    rows = {r.variant: r for r in results.variants}
    assert rows["float16"].status == "identical" and rows["float16"].identical_to == "float32"
    assert rows["float16"].accuracy == rows["float32"].accuracy
    assert measure.computed == ["float32", "int8"]


def test_a_second_run_reuses_everything_and_trains_nothing(tmp_path, monkeypatch, fake_engine):
    _run(tmp_path, monkeypatch, FakeMeasure())
    measure = FakeMeasure()
    results, base = _run(tmp_path, monkeypatch, measure)
    assert base.trained == 0 and measure.computed == []
    assert fake_engine.convert.computed == ["float32", "float16", "int8"]  # the first run's only
    int8 = next(r for r in results.variants if r.variant == "int8")
    assert int8.reused == ["conversion", "accuracy"]


def test_a_resume_keeps_finished_rows_and_redoes_failed_ones(tmp_path, monkeypatch, fake_engine):
    results, _ = _run(tmp_path, monkeypatch, FakeMeasure(fail={"int8"}))
    kept = {r.variant: r.model_copy(deep=True) for r in results.variants}
    keep_for_resume(results)
    assert "int8" not in {r.variant for r in results.variants}
    measure = FakeMeasure()
    again, _ = _run(tmp_path, monkeypatch, measure, results=results)
    rows = {r.variant: r for r in again.variants}
    assert measure.computed == ["int8"] and rows["int8"].status == "ok"
    assert rows["float32"] == kept["float32"]  # a finished row stays as it was measured


def test_the_time_each_stage_computed_is_recorded_without_counting_nested_stages(tmp_path):
    """results.stage_seconds: a stage that makes another's product on the way (a model trained
    for its first conversion) is charged only its own time."""
    import time as time_mod

    ex = _executor(tmp_path)

    class Slow(Counting):
        def __init__(self, name, seconds, inner=None):
            super().__init__()
            self.name, self.seconds, self.inner = name, seconds, inner

        def compute(self, job):
            if self.inner is not None:
                ex.produce(self.inner, job)
            time_mod.sleep(self.seconds)
            return job

    ex.produce(Slow("convert", 0.05, inner=Slow("model", 0.2)), "a")
    timings = ex.results.stage_seconds
    assert 0.2 <= timings["model"] < 0.4
    assert 0.05 <= timings["convert"] < 0.2  # not the 0.25 s the block took in all
    ex.produce(Slow("convert", 0.05), "a")  # a hit: nothing computed, nothing charged
    assert timings["convert"] < 0.2
