"""Keras 3 models (`import keras`, saved as .keras / .h5): loaded with Keras 3, converted with
every scheme, and QAT-trained through the tf_keras bridge (bridge.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from quantbench.ml import bridge, loader
from quantbench.core.config import DataConfig
from quantbench.core.errors import ModelError
from tests import keras3_models as k3
from tests.conftest import make_image_folder
from tests.test_cli import quantbench

FAST = ["--latency-runs", "5", "--threads", "1"]
WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("k3") / "photos", per_class=12, size=32)


def _scaled(photos: Path, size: int, split: str = "all"):
    """(images scaled -1..1, labels) of load_dataset's split, as quantize sees them."""
    from quantbench.ml.data import load_dataset
    from quantbench.ml.preprocess import Preprocessing

    data = load_dataset(DataConfig(dir=photos, image_size=size))
    if split == "val":
        return Preprocessing(size).scale(data.val_images), data.val_labels
    images = np.concatenate([data.train_images, data.val_images])
    return Preprocessing(size).scale(images), np.concatenate([data.train_labels, data.val_labels])


@pytest.fixture(scope="module")
def trained_cnn(photos, tmp_path_factory):
    """A Keras 3 CNN trained on the photos, saved both ways."""
    x, y = _scaled(photos, 32)
    model = k3.fit(k3.cnn(), x, y, epochs=15)
    root = tmp_path_factory.mktemp("k3models")
    model.save(root / "cnn.keras")
    model.save(root / "cnn.h5")
    return model, root


# --- loading ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, fmt", [("cnn.keras", "keras"), ("cnn.h5", "h5")])
def test_keras3_files_are_detected_and_load_with_keras3(trained_cnn, name, fmt):
    import keras

    model, root = trained_cnn
    assert loader.detect_format(root / name) == fmt
    loaded = loader.load_model(root / name)
    assert loaded.format == fmt and loaded.keras_version == keras.__version__
    assert isinstance(loaded.model.keras_model, keras.Model)
    assert loader.inspect_io(loaded.model) == loader.ModelIO(32, 32, 3, 3)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    expected = model.predict_on_batch(x)
    np.testing.assert_allclose(loaded.model.predict_on_batch(x), expected, atol=1e-6)


def test_tf_keras_files_stay_on_tf_keras(tmp_path):
    from tests.conftest import tiny_classifier

    model = tiny_classifier()
    model.save(tmp_path / "k2.keras")
    metadata = json.loads(zipfile.ZipFile(tmp_path / "k2.keras").read("metadata.json"))
    assert metadata["keras_version"].startswith("2.")
    loaded = loader.load_model(tmp_path / "k2.keras")
    assert loaded.keras_version is None and not hasattr(loaded.model, "keras_model")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_lambda_refused_unless_unsafe_and_custom_layers_need_the_module(tmp_path, suffix):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(x)))  # fmt: skip
    model.save(tmp_path / f"lambda{suffix}")
    with pytest.raises(ModelError, match="contains a Lambda layer"):
        loader.load_model(tmp_path / f"lambda{suffix}")
    assert loader.load_model(tmp_path / f"lambda{suffix}", unsafe=True).keras_version

    k3.cnn(custom=True).save(tmp_path / f"custom{suffix}")
    k3_module = str(Path(k3.__file__))
    with pytest.raises(ModelError, match="custom layer.*ScaleLayer"):
        loader.load_model(tmp_path / f"custom{suffix}")
    loaded = loader.load_model(tmp_path / f"custom{suffix}", custom_objects=k3_module)
    assert loader.inspect_io(loaded.model).num_classes == 3


def test_a_keras3_model_with_any_input_size_is_fixed_where_it_is_exported(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = loader.in_memory(keras.Model(inputs, keras.layers.Dense(2)(x))).model
    assert loader.inspect_io(model).height is None
    sized = loader.fix_input_size(model, 24)
    assert sized.input_shape == (None, 24, 24, 3) and sized.keras_model is model.keras_model


# --- the bridge -----------------------------------------------------------------------------


def test_bridge_rebuilds_a_nested_mobilenet_that_tfmot_accepts():
    import tensorflow_model_optimization as tfmot

    original = loader.in_memory(k3.mobilenet(num_classes=3, size=32, dropout=0.2)).model
    rebuilt = bridge.to_tf_keras(original)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    check = bridge.compare(original, rebuilt, x)
    assert check["equal"] and check["top1_agreement"] == 1.0 and check["max_abs_difference"] < 1e-5
    flat = loader.flatten(rebuilt)
    assert loader.nested_models(flat) == []
    np.testing.assert_allclose(flat.predict_on_batch(x), original.predict_on_batch(x), atol=1e-5)
    assert len(tfmot.quantization.keras.quantize_model(flat).layers) > len(flat.layers) // 2


def test_bridge_copies_trained_weights_and_the_check_catches_a_difference(trained_cnn):
    model, _ = trained_cnn
    original = loader.in_memory(model).model
    rebuilt = bridge.to_tf_keras(original)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 32, 32, 3)).astype(np.float32)
    assert bridge.compare(original, rebuilt, x)["equal"]
    dense = rebuilt.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + np.arange(len(bias))])  # a mistranslated layer
    assert not bridge.compare(original, rebuilt, x)["equal"]


def test_bridge_names_the_layers_it_cannot_translate():
    model = loader.in_memory(k3.cnn(custom=True)).model
    with pytest.raises(ModelError) as e:
        bridge.to_tf_keras(model)
    assert "cannot translate the layer(s) my_scale (ScaleLayer)" in e.value.message
    source = bridge.qat_source(model, flatten=loader.flatten, check_wraps=lambda m: None)
    assert source.model is None and "my_scale (ScaleLayer)" in source.error.message


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_keras3_h5_every_scheme_and_qat_through_the_bridge(trained_cnn, photos, tmp_path):
    model, root = trained_cnn
    done = quantbench("quantize", str(root / "cnn.h5"), "--data", str(photos), "--qat-epochs", "1",
                      "--output-dir", str(tmp_path / "runs"), *FAST, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((next((tmp_path / "runs").iterdir()) / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    schemes = [v["scheme"] for v in results["variants"] if v["source"] == "float" and v["scheme"]]
    assert schemes == ["float32", "dynamic_range", "float16", "int8", "int8_io", "int16x8"]
    assert all(rows[s]["status"] in ("ok", "identical") for s in schemes)
    x, y = _scaled(photos, 32, "val")
    keras_accuracy = float((model.predict(x, verbose=0).argmax(1) == y).mean())
    assert rows["keras_float"]["accuracy"] == pytest.approx(keras_accuracy)  # scored with Keras 3
    assert rows["float32"]["accuracy"] == pytest.approx(keras_accuracy, abs=0.005)
    assert rows["float32"]["agreement"] == 1.0
    assert results["extras"]["quantize"]["keras_version"].startswith("3.")
    check = results["extras"]["keras3"]["bridge"]
    assert check["equal"] and check["images"] == rows["keras_float"]["eval_images"]
    assert any("rebuilt in tf_keras for QAT" in n for n in rows["keras_float"]["notes"])
    assert "rebuilt in tf_keras for QAT" in done.stdout
    assert rows["keras_qat_finetune"]["status"] == "ok"
    assert rows["qat_finetune_int8"]["status"] == "ok"
    assert [t["name"] for t in results["training"]] == ["qat_finetune"]


@pytest.mark.pipeline
@pytest.mark.slow
def test_api_in_memory_keras3_model_whose_layer_the_bridge_cannot_translate(photos, tmp_path):
    import quantbench

    x, y = _scaled(photos, 32)
    model = k3.fit(k3.cnn(custom=True), x, y, epochs=3)
    frame, run_dir = quantbench.quantize(
        model, data=photos, schemes="float32,int8", qat_epochs=1, output_dir=tmp_path / "runs",
        latency_runs=5, threads=1,
    )  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["extras"]["quantize"]["format"] == "in-memory"
    rows = {v["variant"]: v for v in results["variants"]}
    assert list(rows) == ["keras_float", "float32", "int8", "keras_qat_finetune",
                          "qat_finetune_float32", "qat_finetune_int8"]  # fmt: skip
    assert rows["float32"]["status"] == "ok" and rows["int8"]["status"] == "ok"
    for name in ("keras_qat_finetune", "qat_finetune_float32", "qat_finetune_int8"):
        # Every planned variant of the model that could not be made: a failed row, one reason.
        failed = rows[name]
        assert failed["status"] == "failed" and "my_scale (ScaleLayer)" in failed["error"]
    assert "my_scale (ScaleLayer)" in results["extras"]["keras3"]["bridge"]["error"]
    assert results["training"] == [] and list(frame["variant"]) == list(rows)


@pytest.mark.subprocess
@pytest.mark.realdata
@pytest.mark.slow
def test_real_flowers_keras3_mobilenet_v2_with_qat(real_keras_home, flowers_dir, tmp_path):
    """Keras 3's MobileNetV2 0.35 from the shared ImageNet weights, its head trained one epoch on
    a few real photos, saved as .keras: converted, and QAT-trained through the bridge."""
    from quantbench.ml.data import load_dataset
    from quantbench.ml.preprocess import Preprocessing

    size, per_class = 96, 30
    weights = real_keras_home / "models" / WEIGHTS
    data = load_dataset(DataConfig(dir=flowers_dir, image_size=size,
                                   max_images_per_class=per_class))
    images = Preprocessing(size).scale(data.train_images)
    model = k3.fit(k3.mobilenet(len(data.classes), size, weights), images, data.train_labels, 1)
    model.save(tmp_path / "flowers.keras")
    done = quantbench("quantize", str(tmp_path / "flowers.keras"), "--data", str(flowers_dir),
                      "--max-images-per-class", str(per_class), "--schemes", "float32,int8",
                      "--qat-epochs", "1", "--output-dir", str(tmp_path / "runs"), *FAST,
                      cwd=tmp_path, env={"KERAS_HOME": str(real_keras_home)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((next((tmp_path / "runs").iterdir()) / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    accuracy = float((model.predict(Preprocessing(size).scale(data.val_images), verbose=0).argmax(1)
                      == data.val_labels).mean())  # fmt: skip
    assert rows["keras_float"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.4  # one epoch on ~25 photos a class already beats chance (0.2) clearly
    assert abs(rows["float32"]["accuracy"] - accuracy) <= 0.005 and rows["int8"]["status"] == "ok"
    assert results["extras"]["keras3"]["bridge"]["equal"]
    assert rows["keras_qat_finetune"]["status"] == "ok"
    assert rows["qat_finetune_int8"]["status"] == "ok"
