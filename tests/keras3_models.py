"""Keras 3 test models (`import keras`, not tf_keras): the format users of TF >= 2.16 save.
Layer classes are module-level (autograph finds a layer's `call` by its source)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import quantbench  # noqa: F401  - selects Keras 2 for tf.keras; `keras` stays Keras 3
import keras


@keras.saving.register_keras_serializable(package="k3test")
class ScaleLayer(keras.layers.Layer):
    """A custom layer that exists only in Keras 3: the bridge cannot translate it."""

    def __init__(self, factor: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def cnn(num_classes: int = 3, size: int = 32, custom: bool = False):
    """Conv -> BatchNorm -> ReLU (the pattern tfmot folds), pooling, Dense softmax."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = ScaleLayer(2.0, name="my_scale")(inputs) if custom else inputs
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def sequential_cnn(num_classes: int = 3, size: int = 32):
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((size, size, 3)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])  # fmt: skip


def mobilenet(num_classes: int, size: int, weights: str | Path | None = None, dropout: float = 0.0):
    """Keras 3's MobileNetV2 alpha 0.35 trunk called as a layer (training=False), a head on
    top: the usual transfer-learning model, nested."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), alpha=0.35, include_top=False,
        weights=str(weights) if weights else None,
    )  # fmt: skip
    base.trainable = weights is None
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def fit(model, images: np.ndarray, labels: np.ndarray, epochs: int, learning_rate: float = 0.01):
    """Fit with Keras 3 on float32 images already scaled."""
    model.compile(keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])  # Keras 3's third positional argument is loss_weights
    model.fit(images, labels, epochs=epochs, batch_size=16, verbose=0)
    return model
