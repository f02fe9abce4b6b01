"""A plain TF SavedModel (no Keras metadata) as a tf_keras Model: its serving signature is
called as one layer (graphs only, no Python code), so the whole pipeline can use it."""

from __future__ import annotations

from pathlib import Path

from quantbench.core.errors import ModelError


def load_signature_model(path: Path):
    """A plain TF SavedModel: call its serving signature (graph only, no Python code)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"cannot load the SavedModel {path}: {e}",
                         tip="check it loads with tf.saved_model.load") from e
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelError(
            f"the SavedModel {path} has no 'serving_default' signature "
            f"(has: {', '.join(loaded.signatures) or 'none'})",
            tip="export it with signatures={'serving_default': ...}, or save a Keras model",
        )
    return _signature_model(loaded, signature)


def _signature_layer_class():
    import tf_keras as keras

    class ServingSignature(keras.layers.Layer):
        """Calls a plain SavedModel's serving signature; the loaded object is tracked, so
        re-exporting the wrapping model keeps its variables."""

        def __init__(self, loaded, signature, input_name, output_name, **kwargs):
            super().__init__(trainable=False, **kwargs)
            self.loaded = loaded
            self.signature = signature
            # Track what the signature captures, or re-exporting fails on "untracked" variables.
            self.captured = list(signature.variables)
            self.input_name, self.output_name = input_name, output_name

        def call(self, x):
            import tensorflow as tf

            x = tf.cast(x, self.signature.structured_input_signature[1][self.input_name].dtype)
            return self.signature(**{self.input_name: x})[self.output_name]

    return ServingSignature


def _signature_model(loaded, signature):
    """A tf_keras Model around a serving signature, so the whole pipeline can use it."""
    import tf_keras as keras

    args, kwargs = signature.structured_input_signature
    if args or len(kwargs) != 1:
        raise ModelError(
            f"the SavedModel's serving signature takes {len(args) + len(kwargs)} inputs; an "
            "image classifier takes one",
            tip="export a signature with one image input",
        )
    input_name, spec = next(iter(kwargs.items()))
    outputs = signature.structured_outputs
    if len(outputs) != 1:
        raise ModelError(
            f"the SavedModel's serving signature returns {len(outputs)} outputs "
            f"({', '.join(outputs)}); an image classifier returns one",
            tip="export a signature with one class-score output",
        )
    output_name = next(iter(outputs))
    shape = spec.shape.as_list()
    if len(shape) != 4:
        raise ModelError(
            f"not an image classifier input: quantbench needs (batch, height, width, 3) RGB "
            f"images, the SavedModel takes shape {tuple(shape)} (rank {len(shape)})",
            tip="pass a model whose input is a batch of colour images (channels last)",
        )
    inputs = keras.Input(shape[1:], batch_size=shape[0], name="image")
    layer = _signature_layer_class()(loaded, signature, input_name, output_name, name="serving")
    return keras.Model(inputs, layer(inputs), name="saved_model")
