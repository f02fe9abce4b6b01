"""Keras 3 models: what `import keras` builds and `model.save("m.keras" / "m.h5")` writes
since TF 2.16. quantbench itself runs on tf_keras (Keras 2, which tfmot needs), and tf_keras
cannot deserialize Keras 3 files ("Could not deserialize class 'Functional'", InputLayer's
`batch_shape`), so Keras 3 files are loaded with Keras 3's own loader, in its safe mode, and
the model is used through `Keras3Model`: the few attributes the pipeline reads on a tf_keras
model (input/output shape, variables, call, predict_on_batch), with nothing else to branch on.

Which Keras wrote a file is read from the file: the .keras zip's metadata.json and the HDF5
root attribute both hold `keras_version` ("2.21.0" from tf_keras, "3.x" from Keras 3).

QAT needs tf_keras layers: bridge.py rebuilds the model in tf_keras.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core.errors import ModelError, first_line

# Class names of Keras 3 models; the rest of a config's class names are layers.
MODEL_CLASSES = ("Functional", "Sequential", "Model")


def file_keras_version(path: Path, fmt: str) -> str | None:
    """The Keras version that wrote a .keras or .h5 file (None when the file does not say)."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as archive:
                if "metadata.json" not in archive.namelist():
                    return None
                return json.loads(archive.read("metadata.json")).get("keras_version")
        if fmt == "h5":
            import h5py

            with h5py.File(path, "r") as f:
                version = f.attrs.get("keras_version")
            return version.decode() if isinstance(version, bytes) else version
    except (OSError, ValueError, KeyError):
        return None  # an unreadable file gets the usual loader's error
    return None


def is_keras3_version(version: str | None) -> bool:
    try:
        return version is not None and int(str(version).split(".")[0]) >= 3
    except ValueError:
        return False


def is_keras3_model(model: Any) -> bool:
    """A Keras 3 Model object. Whoever built one has imported `keras`, so it is never
    imported here just to check (Keras 3's import costs a second)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, getattr(keras, "Model", ()))


class Keras3Model:
    """A Keras 3 model with the interface the pipeline uses on tf_keras models:
    `predict_keras` (predict_on_batch), `export_saved_model` (input_shape, variables, call),
    `inspect_io` (input/output shape) and `fix_input_size` (with_input_size)."""

    def __init__(self, model, image_size: int | None = None) -> None:
        self.keras_model = model
        self.name = model.name
        self.image_size = image_size  # fixed H = W for a model that accepts any size

    @staticmethod
    def _shapes(tensors, what: str) -> list[tuple]:
        if not tensors:
            raise ModelError(
                f"the Keras 3 model has no defined {what} (a subclassed model never called "
                "on keras.Input)",
                tip="build the model functionally (keras.Input ... keras.Model) or save it so",
            )
        return [tuple(t.shape) for t in tensors]

    @property
    def input_shape(self):
        shapes = self._shapes(getattr(self.keras_model, "inputs", None), "input")
        if self.image_size is not None and len(shapes) == 1 and len(shapes[0]) == 4:
            shapes = [(shapes[0][0], self.image_size, self.image_size, shapes[0][3])]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = self._shapes(getattr(self.keras_model, "outputs", None), "output")
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def variables(self) -> list:
        # The tf.Variables under Keras 3's variables. A tf.Module tracking the Keras 3
        # variables themselves saves them, but the converter then leaves them as
        # VAR_HANDLE/READ_VARIABLE ops instead of freezing them into constants (measured:
        # int8 calibration fails, "READ_VARIABLE failed to invoke").
        return [v.value for v in self.keras_model.variables]

    def __call__(self, x, training: bool = False):
        return self.keras_model(x, training=training)

    def predict_on_batch(self, x) -> np.ndarray:
        return np.asarray(self.keras_model.predict_on_batch(x))

    def with_input_size(self, image_size: int) -> Keras3Model:
        return Keras3Model(self.keras_model, image_size)


def adapt(model: Any) -> Any:
    """A Keras 3 model wrapped in Keras3Model; any other model as it is."""
    return Keras3Model(model) if is_keras3_model(model) else model


def keras_version(model: Any) -> str | None:
    """"3.x" for a Keras 3 model (wrapped or not), else None (tf_keras, SavedModel)."""
    if isinstance(model, Keras3Model) or is_keras3_model(model):
        import keras

        return keras.__version__
    return None


# --- loading ------------------------------------------------------------------------------


def _layer_entries(config: Any):
    """Every layer entry (a dict with class_name) in a Keras 3 model config, nested included."""
    if isinstance(config, dict):
        for value in config.values():
            yield from _layer_entries(value)
        layers = config.get("layers")
        if isinstance(layers, list):
            yield from (x for x in layers if isinstance(x, dict) and "class_name" in x)
    elif isinstance(config, list):
        for value in config:
            yield from _layer_entries(value)


def _custom_objects(config: Any, objects: dict[str, Any]) -> dict[str, Any]:
    """The user's objects under their class names and under the names the file registered
    them with (`@keras.saving.register_keras_serializable(package="p")` saves "p>Name")."""
    found = dict(objects)
    for entry in _layer_entries(config):
        for registered in (entry.get("registered_name"), entry["class_name"]):  # .h5: class_name
            if isinstance(registered, str) and ">" in registered:
                short = registered.split(">")[-1]
                if short in objects:
                    found[registered] = objects[short]
    return found


def unknown_layers(config: Any, objects: dict[str, Any]) -> list[str]:
    """Layer class names that neither Keras 3 nor the user's module defines."""
    import keras

    names = {e["class_name"].split(">")[-1] for e in _layer_entries(config)}  # .h5: "pkg>Name"
    return sorted(n for n in names if n not in objects and n not in MODEL_CLASSES
                  and not isinstance(getattr(keras.layers, n, None), type))  # fmt: skip


def refuse_unknown_layers(path: Path, unknown: list[str]) -> None:
    """Never let Keras (2 or 3) import a module named inside the file: the user names it."""
    if unknown:
        raise ModelError(
            f"{path.name} uses custom layer(s) {', '.join(unknown)} that quantbench does not "
            "know and will not import on its own",
            tip="pass --custom-objects your.module (the module defining them, or a .py file)",
        )


def load(path: Path, fmt: str, config: Any, objects: dict[str, Any], unsafe: bool) -> Keras3Model:
    """Load a Keras 3 .keras/.h5 file with Keras 3, in safe mode unless `unsafe` (the caller
    has already refused Lambda layers the user did not allow)."""
    import keras
    from keras.src.saving import serialization_lib

    refuse_unknown_layers(path, unknown_layers(config, objects))
    try:
        with serialization_lib.SafeModeScope(not unsafe):
            model = keras.saving.load_model(path, custom_objects=_custom_objects(config, objects),
                                            compile=False, safe_mode=not unsafe)  # fmt: skip
    except Exception as e:  # noqa: BLE001 - turned into one message with the likely fix
        message = first_line(e)
        raise ModelError(
            f"cannot load {path} (written by Keras 3): {message}",
            tip="check that the file loads with keras.saving.load_model (Keras 3); a custom "
            "layer needs --custom-objects your.module",
        ) from e
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} did not load as a Keras model ({type(model).__name__})",
                         tip="save a keras.Model with model.save('model.keras')")
    return Keras3Model(model)


def is_layer_class(value: Any) -> bool:
    """A Keras 3 Layer subclass (for --custom-objects modules written for Keras 3)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(value, type) and issubclass(value, keras.layers.Layer)
