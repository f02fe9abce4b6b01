"""QAT for Keras 3 models: rebuild the architecture in tf_keras, copy the weights, prove it.

tensorflow-model-optimization wraps only tf_keras (Keras 2) layers, so a Keras 3 model is
rebuilt in tf_keras from its own config: every layer entry is translated (InputLayer's
`batch_shape` -> `batch_input_shape`, DTypePolicy dicts -> policy names, Keras 3 node dicts
{"args", "kwargs"} -> tf_keras [layer, node, tensor, kwargs] lists, keys tf_keras layers do not
take are dropped, initializers too since the weights are copied), then the weights are copied
layer by layer by name. Before any training the rebuilt model's predictions are compared with
the Keras 3 model's on the user's photos; the comparison is recorded in results.json
(`extras.keras3.bridge`) and as a note on the `keras_float` row, so the table and the report
show it. A layer the bridge cannot translate (a custom layer registered only in Keras 3) is
named in one ModelError that becomes the failed `keras_qat_finetune` row: the post-training
rows of the same run are not affected.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantbench.core.errors import ModelError, first_line
from quantbench.ml.keras3 import MODEL_CLASSES, Keras3Model

# Keyword arguments every tf_keras Layer takes through **kwargs (base_layer.Layer.__init__).
BASE_LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights",
                     "activity_regularizer", "autocast", "implementation"}  # fmt: skip
# Largest |difference| between the two models' outputs, relative to the outputs' scale, for
# the rebuild to count as equal. Measured on 90 flower photos: 1.2e-7 for a small CNN, 2.6e-6
# for MobileNetV2 0.35 (the same kernels, summed in another order); a mistranslated layer is
# off by far more.
EQUAL_TOLERANCE = 1e-4
TIP = ("replace the layer with standard Keras layers, or export a tf_keras model for QAT; "
       "the post-training rows need no bridge")  # fmt: skip


# --- translating the config -------------------------------------------------------------


def _tf_keras_class(class_name: str):
    import tf_keras as keras
    from tf_keras.src.layers.serialization import get_builtin_layer

    if class_name == "Functional":
        return keras.Model
    return get_builtin_layer(class_name)


def _accepted_keys(cls) -> set[str] | None:
    """The config keys `cls.__init__` takes (walking **kwargs up to Layer); None: any."""
    keys: set[str] = set(BASE_LAYER_KWARGS)
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        keys |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return keys
        if klass.__name__ == "Layer":
            return keys
    return None


def _value(value: Any) -> Any:
    """A Keras 3 config value as tf_keras reads it."""
    if isinstance(value, list):
        return [_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    class_name = value.get("class_name")
    if isinstance(class_name, str) and "DTypePolicy" in class_name:
        return value["config"]["name"]  # {"class_name": "DTypePolicy", ...} -> "float32"
    if class_name == "function":  # a serialized function (an activation): its name
        return value["config"]
    if class_name is not None and "config" in value:  # regularizers, constraints
        return {"class_name": class_name, "config": _value(value["config"])}
    return {k: _value(v) for k, v in value.items() if k != "shared_object_id"}


def _tensor_ref(tensor: dict, problems: list[str], layer: str, nested: set[str]):
    history = tensor.get("config", {}).get("keras_history") if isinstance(tensor, dict) else None
    if not history:
        problems.append(f"{layer} (called on a constant)")
        return None
    return _ref(history, nested)


def _ref(history: list, nested: set[str]) -> list:
    """[layer, node, tensor] in tf_keras' numbering: tf_keras does not count a nested model's
    first node (the one its own Input made), Keras 3 does not record it, so a call of a nested
    model is node 1 in tf_keras where it is node 0 in Keras 3 (without the shift tf_keras'
    reconstruction waits for that node forever)."""
    name, node, tensor = history[:3]
    return [name, node + 1 if name in nested else node, tensor]


def _node(node: Any, layer: str, problems: list[str], nested: set[str]) -> list:
    """A Keras 3 call node {"args": [x], "kwargs": {...}} as tf_keras' node data."""
    if not isinstance(node, dict):  # already tf_keras' list form
        return node
    args, kwargs = node.get("args", []), node.get("kwargs", {})
    if len(args) != 1:
        problems.append(f"{layer} (called with {len(args)} positional arguments)")
        return []
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if any("__keras_tensor__" in str(v) for v in kwargs.values()):
        problems.append(f"{layer} (a tensor passed as a keyword argument)")
        return []
    inputs = args[0] if isinstance(args[0], list) else [args[0]]
    refs = [_tensor_ref(t, problems, layer, nested) for t in inputs]
    return [ref + [kwargs] for ref in refs if ref is not None]


def _refs(layers: list, nested: set[str]) -> list:
    """input_layers / output_layers: one [layer, node, tensor] or a list of them."""
    if layers and isinstance(layers[0], str):
        return _ref(layers, nested)
    return [_ref(x, nested) for x in layers]


def _model_config(class_name: str, config: dict, problems: list[str]) -> dict:
    entries = config.get("layers", [])
    nested = {e.get("name") or e["config"].get("name") for e in entries
              if e.get("class_name") in MODEL_CLASSES}  # fmt: skip
    layers = [_layer(entry, problems, nested) for entry in entries]
    out = {"name": config.get("name"), "trainable": config.get("trainable", True),
           "layers": [x for x in layers if x is not None]}  # fmt: skip
    if class_name == "Functional":
        out["input_layers"] = _refs(config["input_layers"], nested)
        out["output_layers"] = _refs(config["output_layers"], nested)
    return out


def _layer(entry: dict, problems: list[str], nested: set[str] | None = None) -> dict | None:
    """One layer entry of a Keras 3 model config in tf_keras' form (None: not translatable,
    with the reason appended to `problems`)."""
    class_name = entry["class_name"]
    config = entry.get("config", {})
    name = entry.get("name") or (config.get("name") if isinstance(config, dict) else None)
    cls = _tf_keras_class(class_name)
    registered = entry.get("registered_name")
    custom = isinstance(registered, str) and registered not in (class_name, None)
    if cls is None or custom or (entry.get("module") or "keras").split(".")[0] != "keras":
        problems.append(f"{name} ({class_name})")
        return None
    if class_name in MODEL_CLASSES:
        translated = _model_config(class_name, config, problems)
    elif class_name == "InputLayer":
        shape = config.get("batch_shape") or config.get("batch_input_shape")
        translated = {
            "batch_input_shape": shape, "name": config.get("name"),
            "dtype": _value(config.get("dtype", "float32")),
            "sparse": config.get("sparse", False), "ragged": config.get("ragged", False),
        }  # fmt: skip
    else:
        keys = _accepted_keys(cls)
        # Initializers are dropped: the weights are copied (and Keras 3's GlorotUniform has
        # keys tf_keras' does not take).
        translated = {
            k: _value(v) for k, v in config.items()
            if (keys is None or k in keys) and not k.endswith("_initializer")
        }  # fmt: skip
    out = {"class_name": class_name, "config": translated}
    if "name" in entry:
        out["name"] = entry["name"]
    if "inbound_nodes" in entry:
        nodes = entry["inbound_nodes"]
        out["inbound_nodes"] = [_node(n, name, problems, nested or set()) for n in nodes]
    return out


def tf_keras_config(model) -> dict:
    """The tf_keras serialization of a Keras 3 model; ModelError naming every layer the
    bridge cannot translate."""
    import keras

    serialized = keras.saving.serialize_keras_object(model)
    if serialized["class_name"] not in ("Functional", "Sequential"):
        raise ModelError(
            f"the Keras 3 -> tf_keras bridge for QAT cannot rebuild the subclassed model "
            f"{model.name!r} ({serialized['class_name']}): it has no layer graph to translate",
            tip=TIP,
        )
    problems: list[str] = []
    translated = _layer(serialized, problems)
    if problems:
        raise ModelError(
            "the Keras 3 -> tf_keras bridge for QAT cannot translate the layer(s) "
            f"{', '.join(dict.fromkeys(problems))}: tf_keras has no such layer",
            tip=TIP,
        )
    return translated


# --- rebuilding ---------------------------------------------------------------------------


def _leaf_layers(model) -> dict[str, Any]:
    """Every layer holding weights, by name, nested models opened."""
    found: dict[str, Any] = {}
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in MODEL_CLASSES:
            found.update(_leaf_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def to_tf_keras(model) -> Any:
    """A tf_keras model with the Keras 3 model's architecture and weights."""
    import tf_keras as keras

    original = model.keras_model if isinstance(model, Keras3Model) else model
    config = tf_keras_config(original)
    try:
        rebuilt = keras.layers.deserialize(config)
    except Exception as e:  # noqa: BLE001 - a translated config tf_keras still rejects
        first = first_line(e)
        raise ModelError(f"the Keras 3 -> tf_keras bridge for QAT could not rebuild the "
                         f"model in tf_keras: {first}", tip=TIP) from e  # fmt: skip
    sources, targets = _leaf_layers(original), _leaf_layers(rebuilt)
    mismatched = sorted(set(sources) ^ set(targets))
    for name, target in targets.items():
        if name not in sources:
            continue
        weights = sources[name].get_weights()
        if [w.shape for w in weights] != [tuple(w.shape) for w in target.weights]:
            mismatched.append(name)
        else:
            target.set_weights(weights)
    if mismatched:
        raise ModelError(
            "the Keras 3 -> tf_keras bridge for QAT cannot copy the weights of the layer(s) "
            f"{', '.join(mismatched)} (the rebuilt layers hold different weights)", tip=TIP,
        )  # fmt: skip
    return rebuilt


# --- QAT through the bridge ---------------------------------------------------------------


@dataclass
class QatSource:
    """What QAT starts from for a Keras 3 model: the tf_keras rebuild ready for QAT (flat,
    accepted by tfmot), or why there is none."""

    original: Keras3Model
    model: Any | None = None  # tf_keras, prepared for QAT
    rebuilt: Any | None = None  # tf_keras, at the original's input size (compared with it)
    error: ModelError | None = None


def qat_source(model, flatten: Callable, check_wraps: Callable):
    """The model QAT trains (quantize.preflight). A tf_keras model: `flatten(model)`, then
    `check_wraps` it; their errors stop the run before it starts, as always. A Keras 3 model:
    a QatSource, whose failure is recorded as the failed QAT row instead, once the
    post-training rows are measured (the_bridged_model)."""
    if not isinstance(model, Keras3Model):
        flat = flatten(model)
        check_wraps(flat)
        return flat
    from quantbench.ml.loader import fix_input_size

    try:
        rebuilt = fix_input_size(to_tf_keras(model), model.input_shape[1])
        flat = flatten(rebuilt)
        check_wraps(flat)
    except ModelError as e:
        return QatSource(model, error=e)
    return QatSource(model, flat, rebuilt)


def compare(original, rebuilt, inputs: np.ndarray, batch_size: int = 64) -> dict[str, Any]:
    """The two models' outputs on `inputs` (float32, scaled): equal within EQUAL_TOLERANCE?"""
    a = np.concatenate([original.predict_on_batch(inputs[i : i + batch_size])
                        for i in range(0, len(inputs), batch_size)])  # fmt: skip
    b = np.concatenate([np.asarray(rebuilt.predict_on_batch(inputs[i : i + batch_size]))
                        for i in range(0, len(inputs), batch_size)])  # fmt: skip
    difference = float(np.max(np.abs(a - b))) if len(a) else 0.0
    scale = max(1.0, float(np.max(np.abs(a)))) if len(a) else 1.0
    return {"images": len(a), "max_abs_difference": difference,
            "top1_agreement": float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else 1.0,
            "equal": difference <= EQUAL_TOLERANCE * scale}  # fmt: skip


def the_bridged_model(ctx, results, source):
    """The model the transforms (QAT) start from. A QatSource is checked on the user's photos
    first: the check goes into results (extras.keras3.bridge and a note on keras_float); a
    bridge that failed or predicts differently raises ModelError, which the executor records as
    the failed rows of every variant of the transformed model."""
    if not isinstance(source, QatSource):
        return source
    from quantbench.ml.keras3 import keras_version

    section = results.extras.get("keras3") or {"keras_version": keras_version(source.original)}
    results.extras["keras3"] = section
    error = source.error.message + (f" (tip: {source.error.tip})" if source.error.tip else "") \
        if source.error else None  # fmt: skip
    if source.error is None:
        check = compare(source.original, source.rebuilt, ctx.val_inputs)
        section["bridge"] = check
        verdict = "equal" if check["equal"] else "DIFFER from"
        reference = results.variant("keras_float")
        if reference is not None:
            reference.notes.append(
                f"rebuilt in tf_keras for QAT (Keras 3 bridge): its predictions {verdict} this "
                f"model's on {check['images']} photos (top-1 agreement "
                f"{check['top1_agreement']:.1%}, largest difference "
                f"{check['max_abs_difference']:.1e})"
            )
        if not check["equal"]:
            error = (f"the tf_keras rebuild of the Keras 3 model predicts differently on "
                     f"{check['images']} photos (largest difference "
                     f"{check['max_abs_difference']:.1e}); QAT not run (tip: {TIP})")  # fmt: skip
    else:
        section["bridge"] = {"error": error}
    if error is None:
        return source.model
    raise ModelError(error)
