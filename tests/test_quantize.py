"""`quantbench quantize`: users' own models (Sequential, Functional MobileNetV2, .h5, .keras,
SavedModel) quantized and evaluated end to end; every bad input is one clean error, exit 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from quantbench import cli
from quantbench.core.config import DataConfig
from tests.conftest import make_image_folder
from tests.test_check import SENSITIVE_CLASSES, make_sensitive_folder, train_sensitive_model
from tests.test_cli import assert_clean_error, quantbench

FAST = ["--latency-runs", "5", "--threads", "1"]
FAST_API = {"latency_runs": 5, "threads": 1}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("byo") / "photos", per_class=12, size=32)


def _fit(model, photos: Path, size: int, epochs: int = 20):
    """Fit on every image of `photos` (sorted folder order), -1..1 RGB."""
    import tf_keras as keras

    from quantbench.ml.data import load_dataset
    from quantbench.ml.preprocess import Preprocessing

    keras.utils.set_random_seed(0)
    data = load_dataset(DataConfig(dir=photos, image_size=size))
    x = Preprocessing(size).scale(np.concatenate([data.train_images, data.val_images]))
    y = np.concatenate([data.train_labels, data.val_labels])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return model


def sequential_cnn(num_classes=3, size=32):
    import tf_keras as keras

    return keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])  # fmt: skip


def mobilenet_functional(num_classes=3, size=64):
    """The ImageNet-style trunk (alpha 0.35) called as a layer, head on top: a nested model."""
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def _val_accuracy(model, photos: Path, size: int) -> float:
    """The model's accuracy on the photos `quantize` scores by default (all but the seeded
    calibration slice), computed independently."""
    from quantbench.ml.data import calibration_split, load_dataset
    from quantbench.ml.preprocess import Preprocessing

    data = calibration_split(load_dataset(DataConfig(dir=photos, image_size=size)), 200, 42)
    predicted = model.predict(Preprocessing(size).scale(data.val_images), verbose=0).argmax(1)
    return float((predicted == data.val_labels).mean())


# --- end to end -----------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_sequential_cnn_saved_as_h5(photos, tmp_path):
    model = _fit(sequential_cnn(), photos, 32)
    model.save(tmp_path / "cnn.h5")
    done = quantbench("quantize", str(tmp_path / "cnn.h5"), "--data", str(photos),
                      "--schemes", "float32,int8", "--output-dir", str(tmp_path / "runs"), *FAST,
                      cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert run_dir.name.endswith("quantize-cnn") and str(run_dir) in done.stdout
    results = json.loads((run_dir / "results.json").read_text())
    assert results["command"] == "quantize" and results["status"] == "complete"
    rows = {v["variant"]: v for v in results["variants"]}
    assert list(rows) == ["keras_float", "float32", "int8"]
    assert rows["keras_float"]["source"] == "float" and rows["keras_float"]["kind"] == "keras"
    assert rows["keras_float"]["accuracy"] == pytest.approx(_val_accuracy(model, photos, 32))
    assert rows["keras_float"]["size_bytes"] == (tmp_path / "cnn.h5").stat().st_size
    assert rows["float32"]["agreement"] == 1.0 and rows["int8"]["latency"]
    assert results["extras"]["quantize"]["format"] == "h5"
    assert results["config"]["quantize"]["model"] == str(tmp_path / "cnn.h5")
    assert results["data"]["image_size"] == 32  # read from the model
    assert (run_dir / "int8.tflite").is_file() and "keras_float" in done.stdout
    assert (run_dir / "report.html").is_file() and results["extras"]["recommendation"]
    assert "recommended:" in done.stdout or "no variant fits" in done.stdout


@pytest.mark.pipeline
@pytest.mark.slow
def test_api_functional_mobilenet_trunk_keras_format(photos, tmp_path):
    import quantbench

    model = mobilenet_functional()
    model.save(tmp_path / "mnv2.keras")
    frame, run_dir = quantbench.quantize(
        tmp_path / "mnv2.keras", data=photos, schemes="float32,dynamic_range",
        output_dir=tmp_path / "runs", **FAST_API,
    )  # fmt: skip
    assert list(frame["variant"]) == ["keras_float", "float32", "dynamic_range"]
    assert (frame["status"] == "ok").all()
    assert frame.loc[frame.variant == "float32", "agreement"].item() == 1.0
    assert frame.loc[frame.variant == "dynamic_range", "size_bytes"].item() < \
        0.5 * frame.loc[frame.variant == "float32", "size_bytes"].item()  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["image_size"] == 64 and results["extras"]["quantize"]["format"] == "keras"


@pytest.mark.pipeline
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["keras", "plain"])
def test_api_savedmodel_directories(photos, tmp_path, kind):
    import tensorflow as tf

    import quantbench

    model = _fit(sequential_cnn(), photos, 32, epochs=10)
    path = tmp_path / f"{kind}_savedmodel"
    if kind == "keras":
        model.save(path, save_format="tf")
    else:
        tf.saved_model.save(model, str(path))
    frame, run_dir = quantbench.quantize(path, data=photos, schemes=["float32"],
                                         output_dir=tmp_path / "runs", **FAST_API)  # fmt: skip
    rows = frame.set_index("variant")
    assert rows.loc["keras_float", "accuracy"] == pytest.approx(_val_accuracy(model, photos, 32))
    assert rows.loc["float32", "accuracy"] == rows.loc["keras_float", "accuracy"]
    assert rows.loc["float32", "agreement"] == 1.0
    fmt = json.loads((run_dir / "results.json").read_text())["extras"]["quantize"]["format"]
    assert fmt == ("savedmodel-keras" if kind == "keras" else "savedmodel")


@pytest.mark.pipeline
@pytest.mark.slow
def test_api_in_memory_model_labels_file_and_eval_split_all(tmp_path):
    """A model whose outputs are in reverse folder order: --labels maps the folders."""
    import quantbench

    sens = make_sensitive_folder(tmp_path / "photos")
    model, _, _ = train_sensitive_model(sens)
    order = sorted(SENSITIVE_CLASSES)
    # The same network with its output units reversed: class k is now order[::-1][k].
    import tf_keras as keras

    reversed_model = keras.Model(model.input, keras.layers.Lambda(lambda t: t[:, ::-1])(model.output))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(order[::-1]) + "\n")
    frame, run_dir = quantbench.quantize(
        reversed_model, data=sens, labels=labels, eval_split="all", schemes="float32",
        output_dir=tmp_path / "runs", **FAST_API,
    )  # fmt: skip
    rows = frame.set_index("variant")
    assert rows.loc["keras_float", "accuracy"] > 0.9
    assert rows.loc["keras_float", "eval_images"] == 15 * len(order)  # every image
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["classes"] == order[::-1]
    assert results["extras"]["quantize"]["eval_split"] == "all"


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_check_catches_bgr_declared_for_an_rgb_model(tmp_path):
    sens = make_sensitive_folder(tmp_path / "photos")
    model, _, _ = train_sensitive_model(sens)
    model.save(tmp_path / "rgb_model.keras")
    done = quantbench("quantize", str(tmp_path / "rgb_model.keras"), "--data", str(sens),
                      "--channel-order", "bgr", "--check", "--schemes", "float32",
                      "--output-dir", str(tmp_path / "runs"), *FAST, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "preprocessing check" in done.stdout
    warnings = " ".join(done.stderr.split())  # rich may wrap long lines
    assert "WARNING the declared preprocessing (-1..1, bgr)" in warnings
    assert "use --scaling -1..1 --channel-order rgb" in warnings
    run_dir = next((tmp_path / "runs").iterdir())
    check = json.loads((run_dir / "results.json").read_text())["extras"]["check"]
    by_combo = {(r["scaling"], r["channel_order"]): r for r in check["rows"]}
    assert by_combo[("-1..1", "bgr")]["declared"] and by_combo[("-1..1", "rgb")]["better"]
    assert by_combo[("-1..1", "rgb")]["accuracy"] > by_combo[("-1..1", "bgr")]["accuracy"] + 0.3


@pytest.mark.subprocess
@pytest.mark.realdata
@pytest.mark.slow
def test_real_flowers_model_from_quantbench_run(real_keras_home, flowers_dir, tmp_path):
    env = {"KERAS_HOME": str(real_keras_home), "HOME": str(tmp_path)}
    common = ["--data", str(flowers_dir), "--max-images-per-class", "24", *FAST]
    done = quantbench("run", "--preset", "smoke", "--schemes", "float32",
                      "--output-dir", str(tmp_path / "trained"), *common, cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    trained = next((tmp_path / "trained").iterdir())
    trained_results = json.loads((trained / "results.json").read_text())
    # The model was trained on this folder's training split: score its validation split only.
    done = quantbench("quantize", str(trained / "model.keras"), "--scaling", "-1..1", "--check",
                      "--eval-split", "validation",
                      "--schemes", "float32,int8", "--output-dir", str(tmp_path / "byo"),
                      *common, cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = json.loads((next((tmp_path / "byo").iterdir()) / "results.json").read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    assert list(rows) == ["keras_float", "float32", "int8"]
    # Same photos, same split seed: the user's-model path scores the model exactly as `run` did.
    reference = {v["variant"]: v for v in trained_results["variants"]}["keras_float"]
    assert rows["keras_float"]["accuracy"] == pytest.approx(reference["accuracy"])
    assert rows["keras_float"]["eval_images"] == reference["eval_images"]
    assert rows["float32"]["agreement"] >= 0.97
    assert results["data"]["classes"] == sorted(p.name for p in flowers_dir.iterdir() if p.is_dir())
    assert len(results["extras"]["check"]["rows"]) == 8 and results["extras"]["check"]["images"] == 120


# --- bad inputs: one ERROR line, a tip, exit code 2, nothing half-made ----------------------


def run_cli(capsys, *args: str):
    """The real CLI entry point in-process (TensorFlow is already imported here)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1 and "  tip: " in captured.err, captured.err
    assert "Traceback" not in captured.err
    return errors[0] + "\n" + captured.err


def _save(model, path: Path) -> str:
    model.save(path)
    return str(path)


def _functional(input_shape, build):
    import tf_keras as keras

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, build(inputs))


@pytest.mark.subprocess
def test_class_count_mismatch(photos, tmp_path, capsys):
    model = _save(sequential_cnn(num_classes=5), tmp_path / "five.keras")
    err = run_cli(capsys, "quantize", model, "--data", str(photos), "--output-dir", str(tmp_path / "r"))
    assert "the model has 5 outputs but there are 3 class folders" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.subprocess
def test_not_an_image_input_rank(photos, tmp_path, capsys):
    import tf_keras as keras

    model = _save(_functional((10,), keras.layers.Dense(3)), tmp_path / "vector.keras")
    err = run_cli(capsys, "quantize", model, "--data", str(photos))
    assert "not an image classifier input" in err and "shape (None, 10) (rank 2)" in err


@pytest.mark.subprocess
def test_not_three_channels(photos, tmp_path, capsys):
    import tf_keras as keras

    gray = _functional((28, 28, 1), lambda x: keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    err = run_cli(capsys, "quantize", _save(gray, tmp_path / "gray.h5"), "--data", str(photos))
    assert "shape (None, 28, 28, 1) (rank 4, 1 channels)" in err


@pytest.mark.subprocess
def test_output_rank_not_two(photos, tmp_path, capsys):
    import tf_keras as keras

    model = _save(_functional((16, 16, 3), keras.layers.Conv2D(3, 1)), tmp_path / "seg.keras")
    err = run_cli(capsys, "quantize", model, "--data", str(photos))
    assert "not a classifier output" in err and "(None, 16, 16, 3) (rank 4)" in err


@pytest.mark.subprocess
def test_labels_file_must_match_the_folders(photos, tmp_path, capsys):
    model = _save(sequential_cnn(), tmp_path / "cnn.keras")
    labels = tmp_path / "labels.txt"
    labels.write_text("cats\ndogs\nbirds\n")
    err = run_cli(capsys, "quantize", model, "--data", str(photos), "--labels", str(labels))
    assert "no folder for birds" in err and "folders not in the labels file: owls" in err
    labels.write_text("cats\ndogs\n")
    err = run_cli(capsys, "quantize", model, "--data", str(photos), "--labels", str(labels))
    assert "folders not in the labels file: owls" in err
    labels.write_text("cats\ndogs\ncats\n")
    err = run_cli(capsys, "quantize", model, "--data", str(photos), "--labels", str(labels))
    assert "names a class twice: cats" in err


@pytest.mark.subprocess
def test_image_size_dynamic_or_mismatched(photos, tmp_path, capsys):
    import tf_keras as keras

    fixed = _save(sequential_cnn(size=32), tmp_path / "fixed.keras")
    err = run_cli(capsys, "quantize", fixed, "--data", str(photos), "--image-size", "64")
    assert "--image-size 64 does not match the model's input size 32" in err
    dynamic = _functional((None, None, 3), lambda x: keras.layers.Dense(3)(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))))  # fmt: skip
    err = run_cli(capsys, "quantize", _save(dynamic, tmp_path / "dyn.keras"), "--data", str(photos))
    assert "accepts any input size" in err and "--image-size N" in err


@pytest.mark.subprocess
def test_lambda_layer_refused_with_the_flags_to_use(photos, tmp_path, capsys):
    import tf_keras as keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])  # fmt: skip
    err = run_cli(capsys, "quantize", _save(model, tmp_path / "l.keras"), "--data", str(photos))
    assert "contains a Lambda layer" in err and "--unsafe" in err and "--custom-objects" in err


SVD_LAYER = textwrap.dedent(
    """
    import tensorflow as tf
    import tf_keras as keras

    class SingularValues(keras.layers.Layer):
        # An op TF Lite has no builtin kernel for.
        def call(self, x):
            return tf.linalg.svd(x, compute_uv=False)
    """
)


@pytest.mark.subprocess
@pytest.mark.slow
def test_model_the_converter_cannot_handle(photos, tmp_path, capsys, monkeypatch):
    import tf_keras as keras

    (tmp_path / "svd_layer_for_test.py").write_text(SVD_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import svd_layer_for_test

    def head(x):
        x = svd_layer_for_test.SingularValues()(keras.layers.Conv2D(4, 3)(x))
        return keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))

    path = _save(_functional((16, 16, 3), head), tmp_path / "svd.keras")
    err = run_cli(capsys, "quantize", path, "--data", str(photos), "--schemes", "float32,int8",
                  "--custom-objects", "svd_layer_for_test", "--output-dir", str(tmp_path / "r"),
                  *FAST)  # fmt: skip
    assert "the TF Lite converter cannot convert this model" in err and "Svd" in err
    results = json.loads((next((tmp_path / "r").iterdir()) / "results.json").read_text())
    assert results["status"] == "failed"
    assert [v["status"] for v in results["variants"] if v["kind"] == "tflite"] == ["failed"] * 2


def test_qat_on_an_unflattenable_nested_model_explains_the_workaround(photos, tmp_path, capsys):
    from tests.models import subclassed_trunk_classifier

    model = subclassed_trunk_classifier(num_classes=3, size=32)
    from quantbench.engine import configure as config_mod
    from quantbench.commands import quantize as quantize_mod

    cfg = config_mod.resolve("default", None, {"data.dir": str(photos), "qat.recipes": ["finetune"],
                                               "qat.epochs": 1})  # fmt: skip
    with pytest.raises(quantize_mod.ModelError) as e:
        quantize_mod.preflight(cfg, model)
    assert "QAT cannot wrap this model" in e.value.message and "quantize_model" in e.value.message
    assert "build the model flat" in e.value.tip


@pytest.mark.subprocess
def test_qat_needs_a_held_out_split_and_data_is_required(photos, tmp_path, capsys):
    model = _save(sequential_cnn(), tmp_path / "cnn.keras")
    err = run_cli(capsys, "quantize", model, "--data", str(photos), "--qat-epochs", "1",
                  "--eval-split", "all")  # fmt: skip
    assert "--eval-split all would score images the QAT model was trained on" in err
    err = run_cli(capsys, "quantize", model)
    assert "Missing option '--data'" in err


@pytest.mark.subprocess
def test_subprocess_error_boundary(photos, tmp_path):
    model = _save(sequential_cnn(num_classes=4), tmp_path / "four.keras")
    done = quantbench("quantize", model, "--data", str(photos), cwd=tmp_path)
    assert_clean_error(done, "the model has 4 outputs but there are 3 class folders", "tip:")
    assert not (tmp_path / "runs").exists()


# --- units ------------------------------------------------------------------------------------


def test_reorder_classes_relabels_to_the_models_order(photos):
    from quantbench.ml.data import load_dataset
    from quantbench.ml.classes import reorder_classes

    data = load_dataset(DataConfig(dir=photos, image_size=16))
    order = ["owls", "cats", "dogs"]
    mapped = reorder_classes(data, order)
    assert mapped.classes == order and mapped.summary.classes == order
    for old, new in ((data.train_labels, mapped.train_labels), (data.val_labels, mapped.val_labels)):
        assert [order[k] for k in new] == [data.classes[k] for k in old]
    assert list(mapped.summary.class_counts) == order


@pytest.mark.subprocess
def test_api_is_lazy_and_callable():
    """The package face's exports are functions, found without importing TensorFlow."""
    import subprocess
    import sys

    code = ("import sys, quantbench; f = quantbench.quantize; assert callable(f); "
            "assert callable(quantbench.run) and callable(quantbench.recommend); "
            "assert 'tensorflow' not in sys.modules; print('ok')")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def test_unknown_api_option_has_a_hint():
    from quantbench.core.errors import ConfigError
    from quantbench.commands.quantize import build_config

    with pytest.raises(ConfigError, match="unknown option 'scalling'.*did you mean 'scaling'"):
        build_config("m.keras", {"scalling": "0..1", "data": "x"})


def nested_sequential(num_classes=3, size=32):
    """A Sequential whose first layer is a Functional trunk (Conv, BatchNorm, ReLU)."""
    import tf_keras as keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2)(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    trunk = keras.Model(inputs, x, name="trunk")
    return keras.Sequential([keras.Input((size, size, 3)), trunk,
                             keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, activation="softmax")])  # fmt: skip


@pytest.mark.pipeline
@pytest.mark.slow
def test_api_qat_finetunes_a_nested_model_after_flattening_it(photos, tmp_path):
    import quantbench

    model = _fit(nested_sequential(), photos, 32, epochs=10)
    frame, run_dir = quantbench.quantize(
        model, data=photos, schemes="int8", qat_epochs=2, output_dir=tmp_path / "runs", **FAST_API
    )
    assert list(frame["variant"]) == ["keras_float", "int8", "keras_qat_finetune", "qat_finetune_int8"]
    rows = frame.set_index("variant")
    assert rows.loc["qat_finetune_int8", "status"] == "ok"
    assert rows.loc["qat_finetune_int8", "source"] == "qat_finetune"
    assert rows.loc["keras_qat_finetune", "accuracy"] >= rows.loc["keras_float", "accuracy"] - 0.34
    results = json.loads((run_dir / "results.json").read_text())
    (training,) = results["training"]
    assert training["recipe"] == "finetune" and len(training["epochs"]) == 2
    assert training["train_images"] == results["data"]["train_count"]


def test_config_file_sets_quantize_options_and_flags_win(tmp_path):
    from quantbench.commands.quantize import build_config

    config = tmp_path / "byo.yaml"
    config.write_text("name: mine\ndata:\n  scaling: '0..1'\n  image_size: 48\n"
                      "quantize:\n  eval_split: all\n  check: true\n")  # fmt: skip
    cfg, size_given = build_config("m.keras", {"data": tmp_path, "channel_order": "bgr"}, config)
    assert (cfg.name, cfg.data.scaling, cfg.data.channel_order) == ("mine", "0..1", "bgr")
    assert cfg.quantize.eval_split == "all" and cfg.quantize.check and size_given
    cfg, size_given = build_config(tmp_path / "net.h5", {"data": tmp_path})
    assert cfg.name == "quantize-net" and not size_given and cfg.quantize.model.name == "net.h5"
