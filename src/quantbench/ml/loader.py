"""Load a user's model safely and say what it expects (nested.py flattens it for QAT).

Loading never runs code the user did not name: the Keras config is read and searched for
Lambda layers *before* anything is deserialized (tf_keras applies `safe_mode` only to the
`.keras` format; legacy HDF5 and SavedModel loading would revive a Lambda's marshalled
bytecode silently), and the load itself runs inside Keras' safe-mode scope. Custom layers
come only from a module the user names with `--custom-objects`.

Formats: `.keras` (zip), HDF5 (`.h5`/`.hdf5`, a full model), a Keras SavedModel directory
(has keras_metadata.pb), and a plain TF SavedModel (evaluated through its serving signature).
A .keras/.h5 file written by Keras 3 (its `keras_version` says so) is loaded by keras3.py.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantbench.core.errors import ModelError, first_line
from quantbench.ml.nested import flatten, nested_models  # noqa: F401 - part of this API
from quantbench.ml.signature import load_signature_model

HDF5_SUFFIXES = (".h5", ".hdf5")
UNSAFE_TIP = (
    "Lambda layers hold Python code that runs when the model loads. If you trust the file, "
    "pass --unsafe; better, replace the Lambda with a Layer subclass and pass "
    "--custom-objects your.module"
)


@dataclass
class LoadedModel:
    model: Any  # a tf_keras Model (a plain TF SavedModel is wrapped in one) or a Keras3Model
    path: Path | None
    format: str  # "keras", "h5", "savedmodel-keras", "savedmodel", "in-memory"
    size_bytes: int | None
    keras_version: str | None = None  # "3.x" for a Keras 3 model (keras3.py), else None


def in_memory(model) -> LoadedModel:
    """A model the API was handed: a tf_keras Model, or a Keras 3 one (wrapped)."""
    from quantbench.ml import keras3

    return LoadedModel(keras3.adapt(model), None, "in-memory", None, keras3.keras_version(model))


@dataclass(frozen=True)
class ModelIO:
    """What an image classifier takes and gives: (H, W) or None when any size fits, classes."""

    height: int | None
    width: int | None
    channels: int
    num_classes: int

    @property
    def image_size(self) -> int | None:
        return self.height if self.height is not None and self.height == self.width else None


# --- custom objects ---------------------------------------------------------------------


def import_custom_objects(spec: str | None) -> dict[str, Any]:
    """Import the module the user named (dotted path or .py file): its public Layer
    subclasses plus any `CUSTOM_OBJECTS` dict it defines."""
    if not spec:
        return {}
    import tf_keras as keras

    from quantbench.ml import keras3

    try:
        if spec.endswith(".py"):
            path = Path(spec).expanduser().resolve()
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or not path.is_file():
                raise ModuleNotFoundError(f"no such file: {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            # The working directory is where users keep their layers module.
            added = "" not in sys.path and str(Path.cwd()) not in sys.path
            if added:
                sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(spec)
            finally:
                if added:
                    sys.path.remove(str(Path.cwd()))
    except ImportError as e:
        raise ModelError(
            f"cannot import the custom-objects module {spec!r}: {e}",
            tip="pass an importable module (e.g. my_layers, run from its folder) or a .py file",
        ) from e
    except SyntaxError as e:
        raise ModelError(
            f"the custom-objects module {spec!r} has a syntax error: {e.msg} "
            f"({e.filename}, line {e.lineno})", tip="fix that line; the module must import",
        ) from None  # fmt: skip
    except Exception as e:  # noqa: BLE001 - the user's module runs its own code on import
        where = _user_frame(e)
        raise ModelError(
            f"the custom-objects module {spec!r} raised {type(e).__name__} while importing: "
            f"{str(e)[:300]}{where}", tip="fix the module so that it imports cleanly",
        ) from e  # fmt: skip
    found: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name.startswith("_") or not isinstance(value, type):
            continue
        is_layer = issubclass(value, keras.layers.Layer) or keras3.is_layer_class(value)
        if is_layer and value.__module__ == module.__name__:
            found[name] = value
    declared = getattr(module, "CUSTOM_OBJECTS", None)
    if declared is not None:
        if not isinstance(declared, dict):
            raise ModelError(f"{spec}.CUSTOM_OBJECTS must be a dict of name -> class or function",
                             tip="e.g. CUSTOM_OBJECTS = {'MyLayer': MyLayer}")
        found.update(declared)
    if not found:
        raise ModelError(
            f"the custom-objects module {spec!r} defines no Layer subclass and no CUSTOM_OBJECTS",
            tip="define your layers there, or a CUSTOM_OBJECTS = {'Name': object} dict",
        )
    return found


def _user_frame(error: BaseException) -> str:
    """' (file, line N)' of the innermost traceback frame, where the user's code failed."""
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f" ({tb.tb_frame.f_code.co_filename}, line {tb.tb_lineno})" if tb else ""


# --- reading the Keras config without deserializing -------------------------------------


def _walk(config: Any):
    """Every dict in a nested Keras config."""
    if isinstance(config, dict):
        yield config
        for value in config.values():
            yield from _walk(value)
    elif isinstance(config, list):
        for value in config:
            yield from _walk(value)


def _class_names(config: Any) -> set[str]:
    return {d["class_name"] for d in _walk(config) if isinstance(d.get("class_name"), str)}


def _layer_class_names(config: Any) -> set[str]:
    """Class names of every layer (nested models included) in a .keras / HDF5 config."""
    names: set[str] = set()
    for d in _walk(config):
        layers = d.get("layers")
        if isinstance(layers, list):
            names |= {x["class_name"] for x in layers if isinstance(x, dict) and "class_name" in x}
    return names


def _unknown_layers(config: Any, objects: dict[str, Any]) -> list[str]:
    from tf_keras.src.layers.serialization import get_builtin_layer

    return sorted(n for n in _layer_class_names(config)
                  if n not in objects and get_builtin_layer(n) is None)  # fmt: skip


def _keras_config(path: Path, fmt: str) -> Any:
    """The model's layer configs as plain JSON data, read without building anything."""
    if fmt == "keras":
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("config.json"))
    if fmt == "h5":
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise ModelError(
                    f"{path} holds weights only, not a model (no model_config)",
                    tip="save the whole model: model.save('model.h5'), not save_weights",
                )
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    # A Keras SavedModel: one JSON metadata string per saved object.
    from tf_keras.protobuf import saved_metadata_pb2

    metadata = saved_metadata_pb2.SavedMetadata()
    metadata.ParseFromString((path / "keras_metadata.pb").read_bytes())
    configs = []
    for node in metadata.nodes:
        try:
            configs.append(json.loads(node.metadata))
        except ValueError:
            continue
    return configs


def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "keras_metadata.pb").is_file():
            return "savedmodel-keras"
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        raise ModelError(
            f"{path} is a folder but not a SavedModel (no saved_model.pb)",
            tip="pass a .keras file, an .h5 file or a SavedModel directory",
        )
    if not path.is_file():
        raise ModelError(f"model not found: {path}", tip="pass a .keras, .h5 or SavedModel path")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelError(f"{path} is not a valid .keras file (not a zip archive)",
                             tip="re-save it with model.save('model.keras')")
        return "keras"
    if suffix in HDF5_SUFFIXES:
        return "h5"
    raise ModelError(
        f"unsupported model file {path.name}: expected .keras, .h5/.hdf5 or a SavedModel folder",
        tip="re-save it with model.save('model.keras')",
    )


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --- loading ------------------------------------------------------------------------------


def load_model(path: str | Path, *, unsafe: bool = False, custom_objects: str | None = None):
    """Load a user's model file or SavedModel folder; returns a LoadedModel."""
    path = Path(path).expanduser()
    fmt = detect_format(path)
    objects = import_custom_objects(custom_objects)
    if fmt == "savedmodel":
        return LoadedModel(load_signature_model(path), path, fmt, _size(path))
    try:
        config = _keras_config(path, fmt)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable config means the same to the user
        raise ModelError(f"cannot read the model in {path}: {e}",
                         tip="is the file complete? does it load with tf_keras?") from e
    names = _class_names(config)
    if "Lambda" in names and not unsafe and "Lambda" not in objects:
        raise ModelError(
            f"{path.name} contains a Lambda layer; refusing to load it", tip=UNSAFE_TIP
        )
    from quantbench.ml import keras3

    version = keras3.file_keras_version(path, fmt) if fmt in ("keras", "h5") else None
    if keras3.is_keras3_version(version):
        model = keras3.load(path, fmt, config, objects, unsafe)
        return LoadedModel(model, path, fmt, _size(path), version)
    unknown = _unknown_layers(config, objects) if fmt in ("keras", "h5") else []
    keras3.refuse_unknown_layers(path, unknown)
    import tf_keras as keras
    from tf_keras.src.saving import serialization_lib

    try:
        with serialization_lib.SafeModeScope(not unsafe):
            if fmt == "keras":
                model = keras.models.load_model(
                    path, custom_objects=objects, compile=False, safe_mode=not unsafe
                )
            else:
                model = keras.models.load_model(path, custom_objects=objects, compile=False)
    except Exception as e:  # noqa: BLE001 - turned into one message with the likely fix
        message = first_line(e)
        unknown = "Unknown layer" in str(e) or "Could not locate class" in str(e)
        tip = (
            "the model uses a custom layer: pass --custom-objects your.module (a module that "
            "defines it, or a CUSTOM_OBJECTS dict)"
            if unknown
            else "check that the file loads with tf_keras.models.load_model (Keras 2)"
        )
        raise ModelError(f"cannot load {path}: {message}", tip=tip) from e
    if not isinstance(model, keras.Model):
        raise ModelError(f"{path} did not load as a Keras model ({type(model).__name__})",
                         tip="save a tf_keras Model with model.save('model.keras')")
    return LoadedModel(model, path, fmt, _size(path))


# --- inspecting ---------------------------------------------------------------------------


def _single(shapes: Any, what: str) -> tuple:
    if isinstance(shapes, list):
        if len(shapes) != 1:
            raise ModelError(
                f"the model has {len(shapes)} {what}s {shapes}; an image classifier has one",
                tip=f"pass a model with a single {what}",
            )
        shapes = shapes[0]
    return tuple(shapes)


def inspect_io(model) -> ModelIO:
    """Check that `model` is an image classifier: (batch, H, W, 3) in, (batch, classes) out."""
    input_shape = _single(model.input_shape, "input")
    output_shape = _single(model.output_shape, "output")
    if len(input_shape) != 4 or input_shape[-1] != 3:
        found = f"shape {input_shape} (rank {len(input_shape)}"
        found += f", {input_shape[-1]} channels)" if len(input_shape) == 4 else ")"
        channels_first = len(input_shape) == 4 and input_shape[1] == 3
        raise ModelError(
            f"not an image classifier input: quantbench needs (batch, height, width, 3) RGB "
            f"images, the model takes {found}",
            tip="channels-first models are not supported: export it channels-last"
            if channels_first
            else "pass a model whose input is a batch of colour images (channels last)",
        )
    if len(output_shape) != 2 or output_shape[-1] is None:
        raise ModelError(
            f"not a classifier output: quantbench needs (batch, classes) scores, the model "
            f"returns shape {output_shape} (rank {len(output_shape)})",
            tip="end the model with a Dense(num_classes) layer (add a GlobalAveragePooling2D "
            "or Flatten before it)",
        )
    if output_shape[-1] < 2:
        raise ModelError(
            f"the model has {output_shape[-1]} output unit; quantbench needs one score per class",
            tip="for a binary classifier, end with Dense(2, activation='softmax')",
        )
    return ModelIO(input_shape[1], input_shape[2], 3, int(output_shape[-1]))


def resolve_image_size(io: ModelIO, requested: int | None) -> int:
    """The square input size: the model's when fixed (a different request is an error)."""
    if io.height is not None and io.width is not None and io.height != io.width:
        raise ModelError(
            f"the model takes {io.height}x{io.width} images; quantbench feeds square images",
            tip="export the model with a square input size",
        )
    fixed = io.height if io.height is not None else io.width
    if fixed is not None:
        if requested is not None and requested != fixed:
            raise ModelError(
                f"--image-size {requested} does not match the model's input size {fixed}",
                tip=f"drop --image-size (it is read from the model) or pass {fixed}",
            )
        return int(fixed)
    if requested is None:
        raise ModelError(
            "the model accepts any input size, so quantbench cannot read it",
            tip="pass --image-size N (the size the model was trained at)",
        )
    return int(requested)


def fix_input_size(model, image_size: int):
    """A model with a dynamic H/W, wrapped so its input is image_size x image_size (TF Lite
    and the representative dataset need one shape)."""
    import tf_keras as keras

    if tuple(model.input_shape[1:3]) == (image_size, image_size):
        return model
    if hasattr(model, "with_input_size"):  # a keras3.Keras3Model: fixed where it is exported
        return model.with_input_size(image_size)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    return keras.Model(inputs, model(inputs), name=f"{model.name}_{image_size}px")
