import pytest

from quantbench.core.config import ModelConfig
from quantbench.core.errors import ModelError
from quantbench.ml.model import build_classifier, freeze_base, imagenet_weights_file, resolve_weights


def test_weights_file_name_is_the_keras_one():
    assert imagenet_weights_file(0.35) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    assert imagenet_weights_file(1) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def test_missing_weights_offline_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import quantbench.ml.model as model_mod

    monkeypatch.setattr(model_mod, "WEIGHTS_ORIGIN", "http://127.0.0.1:9/")
    with pytest.raises(ModelError) as info:
        resolve_weights("imagenet", 1.0)
    assert imagenet_weights_file(1.0) in info.value.message
    assert str(tmp_path / "cache" / "models") in info.value.tip


def test_bad_alpha_and_missing_path():
    with pytest.raises(ModelError, match="no ImageNet weights"):
        resolve_weights("imagenet", 0.6)
    with pytest.raises(ModelError, match="weights file not found"):
        resolve_weights("/nowhere/w.h5", 0.35)
    assert resolve_weights("none", 0.35) is None


def test_classifier_is_flat_with_the_article_head():
    import tf_keras as keras

    model = build_classifier(5, ModelConfig(weights="none", dense_units=16), 32)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    head = [layer.__class__.__name__ for layer in model.layers[-4:]]
    assert head == ["GlobalAveragePooling2D", "Dense", "Dropout", "Dense"]
    assert model.output_shape == (None, 5) and model.input_shape == (None, 32, 32, 3)
    freeze_base(model)
    trainable = {layer.name for layer in model.layers if layer.trainable}
    assert trainable == {"head_pool", "head_dense", "head_dropout", "head_predictions"}


@pytest.mark.realdata
def test_imagenet_weights_load_from_the_cache_at_any_size(real_keras_home, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(real_keras_home))
    path = resolve_weights("imagenet", 0.35)
    assert path.startswith(str(real_keras_home))
    model = build_classifier(5, ModelConfig(alpha=0.35), 96)
    assert model.input_shape == (None, 96, 96, 3)
    # a trunk weight differs from a fresh random init: the file was loaded
    fresh = build_classifier(5, ModelConfig(alpha=0.35, weights="none"), 96)
    conv = "Conv1"
    assert abs(model.get_layer(conv).get_weights()[0] - fresh.get_layer(conv).get_weights()[0]).max() > 0


def test_tensorflow_retracing_warning_stays_off_the_run_output():
    """A run predicts with one model after another; TensorFlow's retracing warning about it
    is noise there (kept with -v)."""
    import logging

    from quantbench.ml.quiet import import_tensorflow

    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    tf = import_tensorflow()
    import_tensorflow()  # twice: one filter
    handler = Keep()
    tf.get_logger().addHandler(handler)
    try:
        tf.get_logger().warning("5 out of the last 5 calls to <function f> triggered tf.function retracing.")
        tf.get_logger().warning("a warning that matters")
    finally:
        tf.get_logger().removeHandler(handler)
    assert seen == ["a warning that matters"]
