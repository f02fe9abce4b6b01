"""Loading users' models safely, reading what they expect, flattening nested models."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from quantbench.ml import loader
from quantbench.core.errors import ModelError
from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny classifier saved in every format quantbench reads."""
    import tensorflow as tf
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    model = tiny_classifier(num_classes=4, size=24)
    root = tmp_path_factory.mktemp("formats")
    model.save(root / "m.keras")
    model.save(root / "m.h5")
    model.save(root / "keras_savedmodel", save_format="tf")
    tf.saved_model.save(model, str(root / "plain_savedmodel"))  # no Keras metadata
    return model, root


@pytest.mark.parametrize(
    "name, fmt",
    [("m.keras", "keras"), ("m.h5", "h5"), ("keras_savedmodel", "savedmodel-keras"),
     ("plain_savedmodel", "savedmodel")],
)  # fmt: skip
def test_every_format_loads_and_predicts_like_the_original(saved, name, fmt):
    model, root = saved
    loaded = loader.load_model(root / name)
    assert loaded.format == fmt and loaded.size_bytes > 0
    assert loader.inspect_io(loaded.model) == loader.ModelIO(24, 24, 3, 4)
    x = np.random.default_rng(0).uniform(-1, 1, (5, 24, 24, 3)).astype(np.float32)
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)


def _lambda_model():
    import tf_keras as keras

    return keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Lambda(lambda t: t * 2.0),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax"),
    ])  # fmt: skip


@pytest.mark.parametrize("suffix", [".keras", ".h5", "_savedmodel"])
def test_lambda_layers_are_refused_unless_unsafe(tmp_path, suffix):
    path = tmp_path / f"lambda{suffix}"
    model = _lambda_model()
    model.save(path, **({"save_format": "tf"} if suffix == "_savedmodel" else {}))
    with pytest.raises(ModelError) as e:
        loader.load_model(path)
    assert "contains a Lambda layer" in e.value.message
    assert "--unsafe" in e.value.tip and "--custom-objects" in e.value.tip
    if suffix != "_savedmodel":
        loaded = loader.load_model(path, unsafe=True)
        x = np.ones((1, 8, 8, 3), np.float32)
        np.testing.assert_allclose(loaded.model.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


LAYERS_MODULE = textwrap.dedent(
    """
    import tf_keras as keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0
    """
)


def test_custom_layers_need_the_named_module(tmp_path, monkeypatch):
    import tf_keras as keras

    (tmp_path / "byo_layers_for_test.py").write_text(LAYERS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import byo_layers_for_test

    inputs = keras.Input((8, 8, 3))
    x = byo_layers_for_test.Doubler()(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "custom.keras")
    sys.modules.pop("byo_layers_for_test")
    with pytest.raises(ModelError) as e:
        loader.load_model(tmp_path / "custom.keras")
    assert "custom layer(s) Doubler" in e.value.message and "--custom-objects" in e.value.tip
    loaded = loader.load_model(tmp_path / "custom.keras", custom_objects="byo_layers_for_test")
    assert type(loaded.model.layers[1]).__name__ == "Doubler"
    # a .py path works too; a module without layers is refused with a clear message
    assert loader.import_custom_objects(str(tmp_path / "byo_layers_for_test.py"))["Doubler"]
    (tmp_path / "empty_mod_for_test.py").write_text("X = 1\n")
    with pytest.raises(ModelError, match="defines no Layer subclass"):
        loader.import_custom_objects("empty_mod_for_test")
    with pytest.raises(ModelError, match="cannot import the custom-objects module"):
        loader.import_custom_objects("no_such_module_here")


def test_weights_only_h5_and_unknown_files_are_explained(tmp_path):
    model = tiny_classifier(num_classes=2, size=16)
    model.save_weights(tmp_path / "weights.h5")
    with pytest.raises(ModelError, match="holds weights only"):
        loader.load_model(tmp_path / "weights.h5")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported model file model.onnx"):
        loader.load_model(tmp_path / "model.onnx")
    with pytest.raises(ModelError, match="model not found"):
        loader.load_model(tmp_path / "nope.keras")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelError, match="not a SavedModel"):
        loader.load_model(tmp_path / "folder")


def _model(input_shape, head):
    import tf_keras as keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, head(inputs))


def test_inspect_io_refuses_what_is_not_an_image_classifier():
    import tf_keras as keras

    dense = keras.layers.Dense(3)
    with pytest.raises(ModelError, match=r"takes shape \(None, 10\) \(rank 2\)"):
        loader.inspect_io(_model((10,), dense))
    gray = _model((28, 28, 1), lambda x: keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ModelError, match="1 channels"):
        loader.inspect_io(gray)
    channels_first = _model((3, 28, 28), lambda x: keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    with pytest.raises(ModelError) as e:
        loader.inspect_io(channels_first)
    assert "channels-first" in e.value.tip
    segmenter = _model((16, 16, 3), keras.layers.Conv2D(3, 1))
    with pytest.raises(ModelError, match=r"returns shape \(None, 16, 16, 3\) \(rank 4\)"):
        loader.inspect_io(segmenter)


def test_image_size_comes_from_the_model_or_the_user():
    fixed = loader.ModelIO(96, 96, 3, 5)
    assert loader.resolve_image_size(fixed, None) == 96
    with pytest.raises(ModelError, match="--image-size 64 does not match the model's input size 96"):
        loader.resolve_image_size(fixed, 64)
    dynamic = loader.ModelIO(None, None, 3, 5)
    assert loader.resolve_image_size(dynamic, 48) == 48
    with pytest.raises(ModelError, match="accepts any input size"):
        loader.resolve_image_size(dynamic, None)
    with pytest.raises(ModelError, match="quantbench feeds square images"):
        loader.resolve_image_size(loader.ModelIO(96, 64, 3, 5), None)


def _nested_models():
    """The transfer-learning idiom: a MobileNetV2 trunk called as one layer."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None
    )
    sequential = keras.Sequential([keras.Input((64, 64, 3)), base,
                                   keras.layers.GlobalAveragePooling2D(),
                                   keras.layers.Dense(3, activation="softmax")])  # fmt: skip
    inputs = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    functional = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    return {"sequential": sequential, "functional": functional}


@pytest.mark.slow
def test_nested_trunks_flatten_to_the_same_function_that_qat_accepts():
    import tensorflow_model_optimization as tfmot

    x = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    for kind, model in _nested_models().items():
        assert loader.nested_models(model) == [model.layers[0 if kind == "sequential" else 1].name]
        with pytest.raises(ValueError):  # why flattening exists
            tfmot.quantization.keras.quantize_model(model)
        flat = loader.flatten(model)
        assert loader.nested_models(flat) == []
        np.testing.assert_allclose(flat.predict_on_batch(x), model.predict_on_batch(x), atol=1e-5)
        if kind == "functional":  # base(inputs, training=False): BatchNorm stays in inference
            np.testing.assert_allclose(flat(x, training=True), model(x, training=True), atol=1e-5)
        assert len(tfmot.quantization.keras.quantize_model(flat).layers) > len(flat.layers) // 2


def test_subclassed_sub_models_cannot_be_flattened():
    from tests.models import subclassed_trunk_classifier

    model = subclassed_trunk_classifier(num_classes=2, size=16)
    with pytest.raises(ModelError, match="cannot flatten the subclassed model"):
        loader.flatten(model)
