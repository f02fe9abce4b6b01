"""Test models whose layers must be module-level classes: autograph finds a layer's `call` by
its source, and a class defined inside a helper function sends it to the wrong frame."""

from __future__ import annotations

import quantbench  # noqa: F401  - selects Keras 2 before anything imports TensorFlow
import tf_keras as keras


class Trunk(keras.Model):
    """A subclassed sub-model: no layer graph to flatten."""

    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


def subclassed_trunk_classifier(num_classes: int = 2, size: int = 16):
    """A Functional model around a subclassed sub-model: one that cannot be flattened."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(Trunk()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
