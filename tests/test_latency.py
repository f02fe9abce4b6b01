"""Latency measurement: fields, thread counts, run counts, delegates, inputs and errors.

Correctness only: no assertion here depends on how fast anything ran.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest

from quantbench.commands import bench
from quantbench.measure import latency
from quantbench.core.errors import ConfigError, QuantbenchError
from quantbench.ml.preprocess import Preprocessing, load_image

SIZE = 32
SCHEMES_BUILT = ("float32", "dynamic_range", "float16", "int8", "int8_io", "int16x8")
FAST = dict(min_runs=5, min_seconds=0.02, warmup_runs=1, warmup_seconds=0.0)
_BUILT: dict[str, Path] = {}


def _tiny_cnn(seed: int = 0):
    """Small, but with layers above the converter's 1024-weight threshold, so dynamic range
    quantizes a CONV_2D and a FULLY_CONNECTED (and leaves them hybrid)."""
    import tf_keras as keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.DepthwiseConv2D(3, activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    # Seeded, and with logits large enough that the softmax outputs of different random
    # images differ by more than int8's output step (1/256): with the default initializer they
    # spread by about 0.002 and the int8 file gave all 8 test images the same bytes in 3 seeds
    # of 6 (a CI failure); with stddev 4 they spread by about 0.03 and stay 8 distinct in 6 of 6.
    big = keras.initializers.RandomNormal(stddev=4.0, seed=seed)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=big)(x)
    return keras.Model(inputs, outputs)


def build_tiny_models() -> dict[str, Path]:
    """The tiny CNN converted with several schemes, plus a QAT copy converted without
    optimization; built once per test session and shared by the latency/explain/CLI tests."""
    if _BUILT:
        return _BUILT
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    from quantbench.techniques.schemes import SCHEMES

    out = Path(tempfile.mkdtemp(prefix="quantbench-test-tflite-"))
    model = _tiny_cnn()
    rng = np.random.default_rng(0)
    calibration = rng.uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    for name in SCHEMES_BUILT:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        SCHEMES[name].configure(converter, representative_dataset)
        (out / f"{name}.tflite").write_bytes(converter.convert())
        _BUILT[name] = out / f"{name}.tflite"
    qat = tfmot.quantization.keras.quantize_model(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    (out / "qat_float32.tflite").write_bytes(converter.convert())
    _BUILT["qat_float32"] = out / "qat_float32.tflite"
    return _BUILT


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.uniform(-1, 1, (6, SIZE, SIZE, 3)).astype(np.float32)


def _check_figure(r, threads: int, delegate: str, min_runs: int) -> None:
    assert r.threads == threads and r.delegate == delegate
    assert r.runs >= min_runs and not r.capped
    assert r.warmup_runs >= 1
    assert r.device
    assert 0 < r.min_ms <= r.median_ms <= r.max_ms
    assert r.min_ms <= r.mean_ms <= r.max_ms
    assert r.median_ms <= r.p90_ms <= r.p95_ms <= r.max_ms
    assert r.std_ms >= 0 and r.init_ms > 0 and r.first_invoke_ms > 0
    assert r.cpu_ms is not None and r.cpu_ms >= 0


def test_measure_in_a_worker_process(tiny_models, images):
    r = latency.measure(tiny_models["float32"], images, threads=1, **FAST)
    _check_figure(r, 1, "xnnpack", FAST["min_runs"])
    assert r.inputs == "6 images"
    assert r.peak_rss_mb is not None and r.peak_rss_mb > 0  # the fresh process's own growth
    assert r.delegated_ops == r.total_ops and r.total_ops >= 6


def test_measure_all_honours_threads_and_xnnpack_modes(tiny_models, images):
    results = latency.measure_all(tiny_models["int8"], images, [1, 2], (True, False), **FAST)
    assert [(r.threads, r.delegate) for r in results] == [
        (1, "xnnpack"), (2, "xnnpack"), (1, "none"), (2, "none"),
    ]  # fmt: skip
    for r in results:
        _check_figure(r, r.threads, r.delegate, FAST["min_runs"])
    on, off = results[0], results[2]
    assert 0 < on.delegated_ops < on.total_ops  # int8 SOFTMAX stays on the builtin kernels
    assert off.delegated_ops is None and off.total_ops is None


def test_default_threads_are_one_and_all_cores(tiny_models, images):
    results = latency.measure_all(tiny_models["float32"], images, isolate=False, **FAST)
    assert [r.threads for r in results] == latency.default_threads()
    assert latency.default_threads()[0] == 1


@pytest.mark.parametrize("scheme", ["int8_io", "int16x8", "dynamic_range", "float16"])
def test_every_kind_of_model_is_measured(tiny_models, images, scheme):
    r = latency.measure(tiny_models[scheme], images, threads=1, isolate=False, **FAST)
    _check_figure(r, 1, "xnnpack", FAST["min_runs"])
    assert r.peak_rss_mb is None  # only measured in a worker process
    if scheme == "int16x8":
        assert r.delegated_ops == 0  # XNNPACK has no int16 kernels


def test_inputs_are_cycled_and_quantized(tiny_models, images, monkeypatch):
    from quantbench.measure import litert

    seen = []
    real = litert.quantize_input

    def recording(x, detail):
        q = real(x, detail)
        seen.append((q.dtype, q.tobytes()))
        return q

    monkeypatch.setattr(litert, "quantize_input", recording)
    latency.measure(tiny_models["int8_io"], images, threads=1, isolate=False, **FAST)
    assert {dtype for dtype, _ in seen} == {np.dtype(np.int8)}
    assert len({data for _, data in seen}) == len(images)  # every image fed, not one array


def test_time_cap_stops_a_slow_figure_and_says_so(tiny_models, images):
    r = latency.measure(tiny_models["float32"], images, threads=1, isolate=False,
                        min_runs=10**7, min_seconds=0.0, max_seconds=0.1, warmup_runs=1,
                        warmup_seconds=0.0)  # fmt: skip
    assert r.capped
    assert latency.MIN_RUNS_FLOOR <= r.runs < 10**7


def test_random_inputs_span_the_input_range(tiny_models):
    floats = bench.random_inputs(tiny_models["float32"], count=4, scaling_range=(0.0, 1.0))
    assert floats.shape == (4, SIZE, SIZE, 3) and floats.dtype == np.float32
    assert floats.min() >= 0.0 and floats.max() <= 1.0 and floats.std() > 0
    ints = bench.random_inputs(tiny_models["int8_io"], count=4)
    from quantbench.measure import litert

    detail = litert.open_interpreter(tiny_models["int8_io"], 1).get_input_details()[0]
    q = litert.quantize_input(ints, detail)
    assert q.min() < -100 and q.max() > 100  # spans the int8 range, not just a corner


def test_errors_are_one_line_quantbench_errors(tiny_models, images, tmp_path):
    with pytest.raises(QuantbenchError, match="not found"):
        latency.measure(tmp_path / "missing.tflite", images, threads=1)
    (tmp_path / "notes.tflite").write_text("hello, not a flatbuffer")
    with pytest.raises(QuantbenchError, match="not a TF Lite model"):
        latency.measure(tmp_path / "notes.tflite", images, threads=1)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(tiny_models["float32"].read_bytes()[:600])
    with pytest.raises(QuantbenchError, match="LiteRT cannot open"):  # raised in the worker
        latency.measure(truncated, images, threads=1, **FAST)
    wrong = np.zeros((2, SIZE, SIZE, 4), np.float32)
    with pytest.raises(QuantbenchError, match="do not fit"):
        latency.measure(tiny_models["float32"], wrong, threads=1, **FAST)
    for bad in ("a,b", "0", "1,-2", ""):
        with pytest.raises(ConfigError, match="bad thread list"):
            bench.parse_threads(bad)
    assert bench.parse_threads("2,1,2") == [2, 1]
    assert bench.parse_delegates("xnnpack,none") == (True, False)
    with pytest.raises(ConfigError, match="bad delegate list"):
        bench.parse_delegates("gpu")


@pytest.mark.realdata
def test_real_photos_feed_the_measurement(tiny_models, flowers_dir):
    files = sorted(p for folder in sorted(flowers_dir.iterdir()) if folder.is_dir()
                   for p in sorted(folder.glob("*.jpg"))[:2])  # fmt: skip
    preprocessing = Preprocessing(SIZE)
    real = preprocessing.scale(np.stack([load_image(f, SIZE) for f in files]))
    assert real.shape == (len(files), SIZE, SIZE, 3) and len(files) >= 10
    r = latency.measure(tiny_models["int8"], real, threads=1, **FAST)
    _check_figure(r, 1, "xnnpack", FAST["min_runs"])
    assert r.inputs == f"{len(files)} images"
    loaded = bench.load_inputs(flowers_dir, preprocessing, count=5)
    assert loaded.shape == (5, SIZE, SIZE, 3) and -1.0 <= loaded.min() < loaded.max() <= 1.0
