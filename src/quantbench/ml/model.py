"""The article's classifier: MobileNetV2 built flat, so that QAT can wrap it.

`tfmot...quantize_model` refuses a model nested inside another model, so the head sits on
`base.output` and the model's input is `base.input`. Head layers are named `head_*`; the
frozen-base training mode freezes every other layer.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.core.config import ModelConfig
from quantbench.ml.data import keras_home
from quantbench.core.errors import ModelError

IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
HEAD_PREFIX = "head_"


def imagenet_weights_file(alpha: float) -> str:
    # Keras Applications' own file name; the 224 px file loads at any input size by path.
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"


def _cache_dirs() -> list[Path]:
    # tf_keras ignores KERAS_HOME and uses ~/.keras; quantbench honours both.
    dirs = [keras_home() / "models", Path.home() / ".keras" / "models"]
    return list(dict.fromkeys(dirs))


def resolve_weights(weights: str, alpha: float) -> str | None:
    """'none' -> None; 'imagenet' -> the cached file's path (downloaded if possible); a path."""
    if weights.lower() == "none":
        return None
    if weights.lower() != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelError(f"weights file not found: {path}", tip="pass an existing .h5 file")
        return str(path)
    if float(alpha) not in IMAGENET_ALPHAS:
        raise ModelError(
            f"no ImageNet weights exist for MobileNetV2 alpha {alpha}",
            tip=f"use an alpha in {IMAGENET_ALPHAS}, or --weights none",
        )
    fname = imagenet_weights_file(alpha)
    for folder in _cache_dirs():
        if (folder / fname).is_file():
            return str(folder / fname)
    import tf_keras as keras

    try:
        return keras.utils.get_file(fname, WEIGHTS_ORIGIN + fname, cache_subdir="models")
    except Exception as e:  # noqa: BLE001 - any download failure means the same to the user
        reason = str(e).split(" -- ")[-1].strip().splitlines()[0][:160] if str(e) else type(e).__name__
        raise ModelError(
            f"MobileNetV2 ImageNet weights {fname} are not in the Keras cache and cannot be "
            f"downloaded ({reason})",
            tip=f"put {fname} in {_cache_dirs()[0]} (KERAS_HOME), pass --weights PATH, "
            f"or use --weights none",
        ) from e


def build_classifier(num_classes: int, cfg: ModelConfig, image_size: int):
    """MobileNetV2 trunk + GAP, Dense relu, Dropout, Dense softmax; one flat Functional model."""
    import tf_keras as keras

    weights = resolve_weights(cfg.weights, cfg.alpha)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3),
            alpha=cfg.alpha,
            include_top=False,
            weights=weights,
        )
    except ValueError as e:
        raise ModelError(f"cannot build MobileNetV2: {e}", tip="check alpha and weights") from e
    x = keras.layers.GlobalAveragePooling2D(name=f"{HEAD_PREFIX}pool")(base.output)
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name=f"{HEAD_PREFIX}dense")(x)
    x = keras.layers.Dropout(cfg.dropout, name=f"{HEAD_PREFIX}dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", name=f"{HEAD_PREFIX}predictions"
    )(x)
    return keras.Model(base.input, outputs, name=f"mobilenet_v2_{cfg.alpha}_{image_size}")


def freeze_base(model) -> None:
    """Train only the head: every layer not named head_* stops training."""
    for layer in model.layers:
        layer.trainable = layer.name.startswith(HEAD_PREFIX)


def save_for_inference(model, path: Path) -> None:
    """Save the model without its optimizer's state (a third of the file for Adam)."""
    import tf_keras as keras

    # The .keras format has no include_optimizer flag: save an uncompiled twin instead.
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    twin.save(path)
