"""The `aeq` registry entry (AI Edge Quantizer's recipes, techniques/aeq.py) in the pipeline:
made after the converter's schemes from the model's float32 file and keyed on it (the engine,
with the real convert stage and fake converters, in milliseconds); each recipe through the
entry's hook on a tiny model, what the written file holds said in notes; int4 in the latency
notes; `quantbench.quantize` with AEQ schemes; a float .tflite of your own (`quantbench
quantize model.tflite`), and an already quantized one refused; a real smoke run (realdata)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from quantbench.core.results import PairedDifference, RunResults, encode_classes
from quantbench.core.specs import ModelSpec, TechniqueSpec, VariantSpec
from quantbench.engine import executor as executor_mod
from quantbench.engine.context import Context, Resources, key_of
from quantbench.engine.executor import Executor
from quantbench.engine.stage import Key, Stored
from quantbench.engine.stages.convert import CONVERT
from quantbench.engine.stages.jobs import REFERENCE, ConvertJob
from quantbench.store import Store
from quantbench.techniques import aeq
from quantbench.techniques.converter import Conversion
from quantbench.techniques.schemes import FLOAT_SCHEME, SCHEMES, Aeq
from tests.conftest import make_image_folder, tiny_classifier
from tests.test_cli import assert_clean_error, quantbench as cli
from tests.test_engine import FakeBase, FakeReference

AEQ_SPECS = SCHEMES.get("aeq").default_specs()  # one per named recipe
W8 = "aeq:recipe=weight_only_wi8_afp32"
A16 = "aeq:recipe=static_wi8_ai16"


# --- the engine: real convert stage, fake converters -----------------------------------------


class Scored:
    """A measurement that scores fixed predictions per variant as the accuracy stage does
    (against the context's reference predictions, naming the reference row)."""

    name, reuse_label = "accuracy", "accuracy"
    PREDICTIONS = {"float32": [0, 1, 0, 1], "aeq_w8": [0, 1, 1, 1], "aeq_a16w8": [0, 0, 0, 1]}

    def __init__(self):
        self.computed: list[str] = []

    def applies(self, job):
        return True

    def key(self, job):
        ref = job.ctx.reference_predictions.get(job.spec.repeat)
        return Key({}, parent=job.file_key, data=f"{None if ref is None else list(ref)}"
                   f"/{job.ctx.reference_name}")  # fmt: skip

    def compute(self, job):
        from quantbench.measure.evaluate import score

        self.computed.append(job.row.variant)
        ctx = job.ctx
        scores = score(np.array(self.PREDICTIONS.get(job.row.variant, [1, 1, 1, 1])),
                       ctx.dataset.val_labels, ctx.dataset.classes,
                       ctx.reference_predictions.get(job.spec.repeat), ctx.reference_name or REFERENCE)  # fmt: skip
        return {"accuracy": scores.accuracy, "agreement": scores.agreement,
                "predictions": encode_classes(scores.predicted),
                "vs_reference": scores.vs_reference}  # fmt: skip

    def encode(self, product, job):
        return Stored(meta={"product": product})

    def decode(self, entry, job):
        return entry.meta["product"]

    def apply(self, row, product, job):
        row.accuracy, row.agreement = product["accuracy"], product["agreement"]
        row.predictions = product["predictions"]
        paired = product["vs_reference"]
        row.vs_reference = None if paired is None else PairedDifference(**paired)


@pytest.fixture
def fakes(monkeypatch):
    """The converter's schemes and AEQ's hook replaced by byte writers; the rest real."""
    calls = SimpleNamespace(keras=[], aeq=[])

    def convert_all(model, schemes, calibration, out_dir, workers=2):
        out_dir.mkdir(parents=True, exist_ok=True)
        calls.keras.append([s.name for s in schemes])
        out = []
        for spec in schemes:
            path = out_dir / f"{spec.name}.tflite"
            path.write_bytes(f"keras {spec.name}".encode())
            out.append(Conversion(spec.name, path, 1.0))
        return out

    def convert_tflite(self, float_path, out_path, params, calibration_path, *, worker=None, timeout=0):
        calls.aeq.append((Path(float_path).read_bytes(), params.recipe, calibration_path))
        Path(out_path).write_bytes(Path(float_path).read_bytes() + f" -> {params.recipe}".encode())
        return Conversion(self.name, Path(out_path), 0.5, notes=[f"{params.recipe}: one op left float"])

    monkeypatch.setattr("quantbench.techniques.convert.convert_all", convert_all)
    monkeypatch.setattr(Aeq, "convert_tflite", convert_tflite)
    monkeypatch.setattr(executor_mod, "REFERENCE_STAGE", FakeReference())
    monkeypatch.setattr(executor_mod, "file_contents", lambda row, path: None)
    monkeypatch.setattr("quantbench.techniques.converter.same_model",
                        lambda a, b: a.read_bytes() == b.read_bytes())
    monkeypatch.setattr("quantbench.measure.explain.explain", lambda *a, **k: [])
    monkeypatch.setattr("quantbench.measure.explain.storage_notes", lambda *a, **k: [])
    measure = Scored()
    monkeypatch.setattr(executor_mod, "MEASUREMENTS", (measure,))
    calls.measure = measure
    return calls


def _context(tmp_path: Path) -> Context:
    from quantbench.core.config import RunConfig

    dataset = SimpleNamespace(val_labels=np.array([0, 1, 0, 1]), classes=["a", "b"])
    ctx = Context(RunConfig(), tmp_path, dataset, Store(tmp_path / "store"), Resources(1, 1))
    ctx.calibration_inputs = np.zeros((4, 2, 2, 3), np.float32)
    ctx.calibration_key = "calibration"
    return ctx


def _execute(tmp_path, specs, base=None):
    ctx = _context(tmp_path)
    results = RunResults(name="t", created="now")
    executor = Executor(ctx, results, base or FakeBase())
    try:
        executor.run(specs)
    finally:
        ctx.close()
    return {r.variant: r for r in results.variants}, executor


def test_aeq_is_made_after_the_float32_file_and_keyed_on_it(tmp_path, fakes):
    """No float32 in the plan: it is converted for the AEQ schemes (no row of its own), they
    are made from its bytes, and their store keys' parent is its key."""
    specs = [VariantSpec(), *(VariantSpec(scheme=SCHEMES.parse(t)) for t in (W8, A16))]
    rows, ex = _execute(tmp_path, specs)
    assert list(rows) == ["keras_float", "aeq_w8", "aeq_a16w8"]
    assert fakes.keras == [[FLOAT_SCHEME]]
    assert [(data, recipe) for data, recipe, _ in fakes.aeq] == [
        (b"keras float32", "weight_only_wi8_afp32"), (b"keras float32", "static_wi8_ai16")]
    # calibration images only for the static recipe (the run's, handed over as an .npy)
    assert fakes.aeq[0][2] is None and fakes.aeq[1][2].name == "calibration.npy"
    assert (tmp_path / "aeq_w8.tflite").read_bytes() == b"keras float32 -> weight_only_wi8_afp32"
    assert not (tmp_path / "float32.tflite").exists()  # made for them, not a variant
    assert rows["aeq_w8"].notes == ["weight_only_wi8_afp32: one op left float"]
    assert rows["aeq_a16w8"].policy == "AEQ static_wi8_ai16"

    lazy = ex.models[ModelSpec()]
    float_spec = VariantSpec(scheme=SCHEMES.spec(FLOAT_SCHEME))
    float_key = ex.key(CONVERT, ConvertJob(ex.ctx, float_spec, float_spec.scheme, lazy, tmp_path / "f"))
    for text, data in ((W8, "no-calibration"), (A16, "calibration")):
        scheme = SCHEMES.parse(text)
        assert ex.ctx.store.get(key_of("convert", scheme.model_dump(mode="json"), parent=float_key,
                                       data=data)) is not None  # fmt: skip

    # a second run: everything from the store, notes included
    fakes.keras.clear(), fakes.aeq.clear()
    again, _ = _execute(tmp_path, specs)
    assert fakes.keras == [] and fakes.aeq == []
    assert again["aeq_w8"].reused == ["conversion", "accuracy"]
    assert again["aeq_w8"].notes == rows["aeq_w8"].notes


def test_a_float32_row_of_the_plan_is_the_file_aeq_starts_from(tmp_path, fakes):
    specs = [VariantSpec(), *(VariantSpec(scheme=SCHEMES.parse(t)) for t in ("float32", W8, "int8"))]
    rows, _ = _execute(tmp_path, specs)
    assert list(rows) == ["keras_float", "float32", "aeq_w8", "int8"]
    assert fakes.keras == [["float32", "int8"]]  # one batch; AEQ after it
    assert [data for data, _, _ in fakes.aeq] == [b"keras float32"]


def test_a_failed_float32_file_fails_the_aeq_rows_with_the_reason(tmp_path, fakes, monkeypatch):
    def refuse(model, schemes, calibration, out_dir, workers=2):
        return [Conversion(s.name, None, 1.0, "ConverterError: no such op") for s in schemes]

    monkeypatch.setattr("quantbench.techniques.convert.convert_all", refuse)
    rows, _ = _execute(tmp_path, [VariantSpec(), VariantSpec(scheme=SCHEMES.parse(W8))])
    assert rows["aeq_w8"].status == "failed"
    assert rows["aeq_w8"].error == "no float32 file to start from: ConverterError: no such op"
    assert fakes.aeq == []


def test_a_tflite_source_supplies_the_float32_row_which_is_the_reference(tmp_path, fakes):
    """A .tflite base (commands/quantize.py): no Keras model, so no keras_float row; its file
    is the float32 row (stored, not converted) and the reference of the AEQ rows."""
    from quantbench.commands.quantize import TfliteModel

    model = tmp_path / "mine.tflite"
    model.write_bytes(b"my float model")
    base = TfliteModel(model)
    planned = [VariantSpec(), VariantSpec(scheme=SCHEMES.spec("int8")),
               *(VariantSpec(scheme=SCHEMES.parse(t)) for t in (W8, A16)),
               VariantSpec(transforms=(TechniqueSpec(name="qat", params={"recipe": "finetune"}),))]  # fmt: skip
    specs = base.variants(planned)
    assert [s.name for s in specs] == ["float32", "aeq_w8", "aeq_a16w8"]
    assert base.not_applicable == ["int8", "qat:recipe=finetune"]
    rows, _ = _execute(tmp_path / "run", specs, base)
    assert list(rows) == ["float32", "aeq_w8", "aeq_a16w8"]
    assert fakes.keras == []  # nothing converted from a Keras model, and none loaded
    assert [data for data, _, _ in fakes.aeq] == [b"my float model"] * 2
    assert (tmp_path / "run" / "float32.tflite").read_bytes() == b"my float model"
    assert rows["float32"].agreement == 1.0 and rows["float32"].vs_reference is None
    assert rows["aeq_w8"].agreement == 0.75
    assert rows["aeq_w8"].vs_reference.reference == "float32"
    assert rows["aeq_a16w8"].agreement == 0.75


def test_a_tflite_with_no_scheme_named_gets_float32_and_every_aeq_recipe():
    from quantbench.commands.quantize import tflite_defaults
    from quantbench.core.config import RunConfig

    cfg = RunConfig()
    tflite_defaults(cfg)
    assert [SCHEMES.slug_of(s) for s in cfg.convert.schemes] == [
        "float32", "aeq_dyn_w8", "aeq_dyn_w4", "aeq_w8", "aeq_w4", "aeq_a8w8", "aeq_a16w8"]
    named = RunConfig.model_validate({"convert": {"schemes": ["int8"]}})
    tflite_defaults(named)  # what the user named stays (and int8 is then not applicable)
    assert [s.name for s in named.convert.schemes] == ["int8"]


# --- each recipe through the entry's hook, on a tiny model with a depthwise conv ---------------


@pytest.fixture(scope="module")
def tiny_float(tmp_path_factory) -> dict[str, Path]:
    from tests.test_aeq import _convert, _tiny_model

    root = tmp_path_factory.mktemp("aeq-hook")
    calibration = root / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32))
    return {"float": _convert(_tiny_model(), root / "float.tflite"), "calibration": calibration}


@pytest.fixture(scope="module")
def aeq_worker():
    from quantbench.workers import Worker

    with Worker("aeq-test") as worker:
        yield worker


@pytest.mark.parametrize("spec", AEQ_SPECS, ids=lambda s: SCHEMES.slug_of(s))
def test_every_aeq_recipe_converts_and_says_what_the_file_holds(spec, tiny_float, aeq_worker, tmp_path):
    from quantbench.measure import explain, filestats
    from quantbench.measure.litert import io_dtypes

    entry, params = SCHEMES.get(spec.name), SCHEMES.params_of(spec)
    mode, weight_bits, activation_bits = aeq.RECIPES[params.recipe]
    out = tmp_path / f"{entry.slug(params)}.tflite"
    conversion = entry.convert_tflite(tiny_float["float"], out, params, tiny_float["calibration"],
                                      worker=aeq_worker)  # fmt: skip
    assert conversion.error is None and conversion.path == out and out.is_file()
    assert entry.reads_calibration(params) == (mode == "static")
    io = f"int{activation_bits}" if activation_bits else "float32"
    assert io_dtypes(out) == (io, io)
    skipped = [n for n in conversion.notes if "DEPTHWISE_CONV_2D" in n]
    if weight_bits == 4:  # AEQ has no int4 depthwise: left float, silently; said here
        [note] = skipped
        assert note.startswith("read back from the file: AEQ left 1 DEPTHWISE_CONV_2D float")
        assert "int4 weights asked, float32 stored (AEQ 0.10's policy has no" in note
    else:
        assert skipped == []
    assert any("input and output are" in n for n in conversion.notes) == (mode == "static")

    # what the latency notes and the weight statistics make of int4
    notes = explain.explain(out)
    int4 = [n for n in notes if n.startswith("int4 weights:")]
    stats = filestats.weight_stats(out)
    if weight_bits == 4:
        assert {t.dtype for t in stats.tensors if t.op != "DEPTHWISE_CONV_2D"} == {"int4"}
        assert max(t.unique for t in stats.tensors if t.dtype == "int4") <= 16
        [note] = int4
        if mode == "dynamic":  # int4 CONV_2D on the builtin kernels, FULLY_CONNECTED on XNNPACK
            assert "XNNPACK runs 1 (1 FULLY_CONNECTED)" in note and "3 CONV_2D" in note
        else:  # weight-only: the int4 DEQUANTIZE ops and the ops they feed leave XNNPACK
            assert "4 DEQUANTIZE ops expand int4 weights" in note and "3 CONV_2D" in note
        assert not any("values per channel" in n for n in explain.storage_notes(stats, None, None, None))
    else:
        assert int4 == []


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # AEQ divides the zero block by its zero scale
def test_aeq_refuses_a_zero_scale_and_litert_s_refusal_is_explained(tiny_float, aeq_worker, tmp_path,
                                                                    monkeypatch):  # fmt: skip
    """A block of zero weights: the hook's conversion fails with AEQ's explanation; a file
    written anyway is refused by XNNPACK, and the row's error says why."""
    import tf_keras as keras

    from quantbench.measure import explain, litert
    from tests.test_aeq import _convert, _tiny_model

    model = _tiny_model()
    head = model.get_layer("head")
    kernel, bias = head.get_weights()
    kernel[:32, 1] = 0.0
    head.set_weights([kernel, bias])
    zero_block = _convert(model, tmp_path / "zero_block.tflite")
    keras.backend.clear_session()
    params = SCHEMES.params_of(SCHEMES.parse("aeq:recipe=dynamic_wi4_afp32:granularity=blockwise_32"))
    conversion = SCHEMES.get("aeq").convert_tflite(zero_block, tmp_path / "out.tflite", params, None,
                                                   worker=aeq_worker)  # fmt: skip
    assert conversion.path is None and "zero scale" in conversion.error
    assert "granularity=channelwise" in conversion.error and not (tmp_path / "out.tflite").exists()

    monkeypatch.setattr(aeq, "zero_scale_error", lambda inspected: None)  # write it anyway
    bad = tmp_path / "bad.tflite"
    aeq.quantize_tflite(zero_block, bad, params)
    with pytest.raises(RuntimeError) as info:
        litert.open_interpreter(bad, threads=1)
    why = explain.load_failure(bad, str(info.value))
    assert why.startswith("1 zero quantization scale(s) in 1 weight tensor(s)")
    assert "FULLY_CONNECTED, int4 blockwise (32)" in why and "XNNPACK refuses" in why
    assert explain.load_failure(bad, "some other failure") is None
    assert explain.load_failure(tiny_float["float"], str(info.value)) is None  # no zero scale there


# --- whole runs -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("aeq-photos") / "photos", per_class=12, size=32)


FAST = {"latency_runs": 5, "threads": 1}


@pytest.mark.pipeline
def test_quantize_with_aeq_schemes(photos, tmp_path):
    import quantbench

    df, run_dir = quantbench.quantize(tiny_classifier(), data=photos,
                                      schemes=["float32", W8, "aeq:recipe=static_wi8_ai16"],
                                      output_dir=tmp_path, **FAST)  # fmt: skip
    assert list(df["variant"]) == ["keras_float", "float32", "aeq_w8", "aeq_a16w8"]
    results = json.loads((run_dir / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    for name in ("float32", "aeq_w8", "aeq_a16w8"):
        row = rows[name]
        assert row["status"] == "ok", row["error"]
        assert (run_dir / row["path"]).is_file() and row["latency"] and row["targets"]
        assert row["accuracy_ci"] and row["agreement"] is not None
    assert rows["aeq_w8"]["agreement"] >= 0.9  # int8 weights of a tiny float model
    assert rows["aeq_a16w8"]["input_dtype"] == "int16"
    assert any("int16" in n for n in rows["aeq_a16w8"]["notes"])
    assert rows["aeq_w8"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert results["extras"]["recommendation"] is not None


@pytest.fixture(scope="module")
def tflite_files(photos, tmp_path_factory) -> dict[str, Path]:
    """A float32 .tflite of a tiny classifier (with a depthwise conv), and its int8
    conversion (already quantized)."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    root = tmp_path_factory.mktemp("byo-tflite")
    files = {"float": root / "mine.tflite", "quantized": root / "mine_int8.tflite"}
    files["float"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    samples = np.random.default_rng(0).uniform(-1, 1, (4, 1, 32, 32, 3)).astype(np.float32)
    converter.representative_dataset = lambda: ([x] for x in samples)
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected"
        warnings.simplefilter("ignore")
        files["quantized"].write_bytes(converter.convert())
    return files


@pytest.mark.pipeline
@pytest.mark.subprocess
def test_quantize_a_float_tflite(photos, tflite_files, tmp_path):
    done = cli("quantize", str(tflite_files["float"]), "--data", str(photos),
               "--schemes", f"float32,int8,aeq:recipe=weight_only_wi4_afp32,{A16}",
               "--latency-runs", "5", "--threads", "1", "--output-dir", str(tmp_path / "runs"),
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "not applicable to a .tflite" in said and "int8" in said
    run_dir = next((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    assert list(rows) == ["float32", "aeq_w4", "aeq_a16w8"]  # int8 is no failed row
    assert all(r["status"] == "ok" for r in rows.values()), [r["error"] for r in rows.values()]
    assert (run_dir / "float32.tflite").read_bytes() == tflite_files["float"].read_bytes()
    assert rows["float32"]["agreement"] == 1.0
    assert rows["aeq_w4"]["vs_reference"]["reference"] == "float32"
    assert all(r["latency"] and r["accuracy_ci"] and r["targets"] for r in rows.values())
    assert any(n.startswith("read back from the file: AEQ left 1 DEPTHWISE_CONV_2D float")
               for n in rows["aeq_w4"]["notes"])  # fmt: skip
    assert any(n.startswith("int4 weights:") for n in rows["aeq_w4"]["notes"])
    extras = results["extras"]["quantize"]
    assert extras["format"] == "tflite" and extras["image_size"] == 32
    assert extras["not_applicable"] == ["int8"]
    assert results["extras"]["recommendation"]["reference"] == "float32"
    assert (run_dir / "report.html").is_file()


@pytest.mark.subprocess
def test_an_already_quantized_tflite_is_refused(photos, tflite_files, tmp_path):
    done = cli("quantize", str(tflite_files["quantized"]), "--data", str(photos),
               "--output-dir", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert_clean_error(done, "mine_int8.tflite is already quantized", "AEQ needs a float model",
                       "tip:")  # fmt: skip
    assert not (tmp_path / "runs").exists()  # refused before a run directory exists


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.pipeline
def test_smoke_run_with_aeq_on_real_photos(real_keras_home, tmp_path, monkeypatch):
    """The smoke preset (MobileNetV2 0.35 at 64 px, one epoch) on real flowers: AEQ's static
    int8 of the float32 file scores within a few points of the TF converter's int8."""
    import quantbench

    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    df, run_dir = quantbench.run("smoke", schemes=["float32", "int8", "aeq:recipe=static_wi8_ai8"],
                                 output_dir=tmp_path)  # fmt: skip
    rows = {r["variant"]: r for r in json.loads((run_dir / "results.json").read_text())["variants"]}
    assert list(rows) == ["keras_float", "float32", "int8", "aeq_a8w8"]
    aeq_row, int8 = rows["aeq_a8w8"], rows["int8"]
    assert aeq_row["status"] == "ok", aeq_row["error"]
    assert aeq_row["input_dtype"] == "int8" and aeq_row["size_bytes"] < rows["float32"]["size_bytes"] / 2.5
    assert abs(aeq_row["accuracy"] - int8["accuracy"]) <= 0.1, (aeq_row["accuracy"], int8["accuracy"])
    assert aeq_row["agreement"] >= 0.8
