import numpy as np
import pytest

from quantbench.measure import litert
from quantbench.techniques.convert import convert_all
from quantbench.measure.evaluate import predict_tflite, score
from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def tflite_files(tmp_path_factory):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = tiny_classifier(num_classes=4, size=24)
    calibration = np.random.default_rng(1).uniform(-1, 1, (16, 24, 24, 3)).astype(np.float32)
    out = tmp_path_factory.mktemp("eval")
    conversions = convert_all(model, ["float32", "int8", "int8_io"], calibration, out)
    return {c.scheme: c.path for c in conversions}


def article_loop(path, inputs):
    """The article's loop: one expand_dims image, one set_tensor, one invoke at a time."""
    interpreter = litert.open_interpreter(path, threads=1)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    scores = []
    for image in inputs:
        interpreter.set_tensor(input_detail["index"], litert.quantize_input(image[None], input_detail))
        interpreter.invoke()
        scores.append(litert.dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail)[0])
    return np.array(scores)


@pytest.mark.parametrize("scheme", ["float32", "int8", "int8_io"])
@pytest.mark.parametrize("batch_size", [1, 8, 32])
def test_batched_predictions_equal_the_article_loop(tflite_files, scheme, batch_size):
    inputs = np.random.default_rng(2).uniform(-1, 1, (21, 24, 24, 3)).astype(np.float32)
    batched = predict_tflite(tflite_files[scheme], inputs, threads=2, batch_size=batch_size)
    single = article_loop(tflite_files[scheme], inputs)
    assert batched.shape == (21, 4)
    assert (batched.argmax(1) == single.argmax(1)).all()
    np.testing.assert_allclose(batched, single, atol=1e-5 if scheme == "float32" else 1e-2)


def test_quantize_input_uses_the_tensors_own_scale_and_zero_point():
    detail = {"dtype": np.int8, "quantization": (0.5, -3), "name": "x"}
    q = litert.quantize_input(np.array([-2.0, 0.0, 1.0, 500.0, -500.0], np.float32), detail)
    assert q.dtype == np.int8
    assert q.tolist() == [-7, -3, -1, 127, -128]  # x / scale + zero point, saturated
    back = litert.dequantize_output(q[:3], detail)
    np.testing.assert_allclose(back, [-2.0, 0.0, 1.0])


def test_score_counts_accuracy_agreement_and_confusion():
    predictions = np.array([0, 1, 1, 2, 2, 0])
    labels = np.array([0, 1, 2, 2, 2, 1])
    reference = np.array([0, 1, 2, 2, 2, 0])
    s = score(predictions, labels, ["a", "b", "c"], reference)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.agreement == pytest.approx(5 / 6)
    assert s.per_class_accuracy == {"a": 1.0, "b": 0.5, "c": pytest.approx(2 / 3)}
    assert s.confusion == [[1, 0, 0], [1, 1, 0], [0, 1, 2]]


@pytest.fixture(scope="module")
def int16x8_file(tmp_path_factory):
    """A model LiteRT runs entirely on its builtin kernels (XNNPACK takes no int16x8 op)."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = tiny_classifier(num_classes=4, size=24)
    calibration = np.random.default_rng(1).uniform(-1, 1, (16, 24, 24, 3)).astype(np.float32)
    (conversion,) = convert_all(model, ["int16x8"], calibration, tmp_path_factory.mktemp("i16"))
    return conversion.path


def test_undelegated_model_is_scored_in_slices_one_interpreter_per_thread(int16x8_file, monkeypatch):
    from quantbench.measure import evaluate

    opened = []
    real_open = litert.open_interpreter
    monkeypatch.setattr(litert, "open_interpreter",
                        lambda path, threads, *a: opened.append(threads) or real_open(path, threads, *a))  # fmt: skip
    inputs = np.random.default_rng(3).uniform(-1, 1, (37, 24, 24, 3)).astype(np.float32)
    sliced = evaluate.predict_tflite(int16x8_file, inputs, threads=2, batch_size=8)
    assert opened == [2, 1, 1]  # the probe, then one single-threaded interpreter per slice
    single = article_loop(int16x8_file, inputs)
    assert sliced.shape == (37, 4)
    np.testing.assert_allclose(sliced, single, atol=1e-6)


@pytest.mark.parametrize("scheme", ["float32", "int8"])  # int8: only SOFTMAX stays outside XNNPACK
def test_delegated_convolutions_keep_one_interpreter(tflite_files, scheme, monkeypatch):
    from quantbench.measure import evaluate

    opened = []
    real_open = litert.open_interpreter
    monkeypatch.setattr(litert, "open_interpreter",
                        lambda path, threads, *a: opened.append(threads) or real_open(path, threads, *a))  # fmt: skip
    inputs = np.random.default_rng(3).uniform(-1, 1, (37, 24, 24, 3)).astype(np.float32)
    evaluate.predict_tflite(tflite_files[scheme], inputs, threads=2, batch_size=8)
    assert opened == [2]


def test_worker_scores_like_in_process_and_survives_a_crash_and_a_hang(
    tflite_files, tmp_path, monkeypatch, worker_ops
):
    # worker_ops: a model named crash.tflite segfaults the worker, hang.tflite hangs it.
    from quantbench.measure import evaluate

    inputs = np.random.default_rng(4).uniform(-1, 1, (21, 24, 24, 3)).astype(np.float32)
    with evaluate.EvalWorker(inputs) as worker:
        scores, seconds = worker.predict(tflite_files["int8_io"], threads=1, batch_size=8)
        np.testing.assert_array_equal(scores, predict_tflite(tflite_files["int8_io"], inputs, 1, 8))
        assert seconds > 0
        first_pid = worker._worker.pid

        with pytest.raises(evaluate.EvaluationError, match=r"crash\.tflite \(killed by SIGSEGV\)"):
            worker.predict(tmp_path / "crash.tflite", threads=1)
        scores, _ = worker.predict(tflite_files["float32"], threads=1)  # a fresh worker
        assert worker._worker.pid != first_pid
        np.testing.assert_array_equal(scores, predict_tflite(tflite_files["float32"], inputs, 1))

        monkeypatch.setattr(evaluate, "WORKER_START_SECONDS", 2)
        monkeypatch.setattr(evaluate, "WORKER_SECONDS_PER_IMAGE", 0)
        with pytest.raises(evaluate.EvaluationError, match=r"no answer in 2 s"):
            worker.predict(tmp_path / "hang.tflite", threads=1)

        with pytest.raises(evaluate.EvaluationError, match=r"LiteRT cannot run missing\.tflite"):
            worker.predict(tmp_path / "missing.tflite", threads=1)
        assert worker.predict(tflite_files["int8"], threads=1)[0].shape == (21, 4)


@pytest.mark.pipeline
def test_a_crash_while_scoring_one_variant_fails_that_row_only(tmp_path, monkeypatch, worker_ops):
    import json

    import tf_keras as keras

    import quantbench
    from tests.conftest import make_image_folder

    monkeypatch.setenv("CRASH_ON", "/int8.tflite")
    photos = make_image_folder(tmp_path / "photos", per_class=8, size=24)
    keras.utils.set_random_seed(0)
    frame, run_dir = quantbench.quantize(
        tiny_classifier(num_classes=3, size=24), data=photos, schemes="float32,int8,int8_io",
        output_dir=tmp_path / "runs", latency_runs=5, threads=1,
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete"
    rows = {v["variant"]: v for v in results["variants"]}
    assert rows["int8"]["status"] == "failed"
    assert "killed by SIGSEGV" in rows["int8"]["error"] and rows["int8"]["accuracy"] is None
    for name in ("float32", "int8_io"):  # before and after the crash
        assert rows[name]["status"] == "ok" and rows[name]["accuracy"] is not None
        assert rows[name]["latency"]
    assert (run_dir / "report.html").is_file()
