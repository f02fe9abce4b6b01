import numpy as np
import pytest

from quantbench import litert
from quantbench.convert import convert_all
from quantbench.evaluate import predict_tflite, score
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


def seed_loop(path, inputs):
    """The seed's loop: one expand_dims image, one set_tensor, one invoke at a time."""
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
def test_batched_predictions_equal_the_seed_loop(tflite_files, scheme, batch_size):
    inputs = np.random.default_rng(2).uniform(-1, 1, (21, 24, 24, 3)).astype(np.float32)
    batched = predict_tflite(tflite_files[scheme], inputs, threads=2, batch_size=batch_size)
    single = seed_loop(tflite_files[scheme], inputs)
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
