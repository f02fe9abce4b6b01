"""Nested models flattened for QAT: tfmot's quantize_model refuses a model nested inside a
model, so the sub-model's layers are called on the outer graph instead (same layers, same
weights)."""

from __future__ import annotations

from quantbench.core.errors import ModelError


def nested_models(model) -> list[str]:
    import tf_keras as keras

    return [layer.name for layer in getattr(model, "layers", []) if isinstance(layer, keras.Model)]


def flatten(model):
    """The same model with every nested sub-model's layers inlined into one flat graph.

    The layers (and so the weights) are shared with `model`, not copied. Raises ModelError
    when a part cannot be replayed (a subclassed sub-model, several inputs); the caller then
    explains the limitation.
    """
    import tf_keras as keras

    if not nested_models(model):
        return model
    shape = model.input_shape
    if isinstance(shape, list):
        raise ModelError("cannot flatten a model with several inputs")
    inputs = keras.Input(shape[1:], name="image")
    outputs = _replay(model, inputs)
    return keras.Model(inputs, outputs, name=f"{model.name}_flat")


def _replay(model, x, training=None):
    """Call model's layers on x in graph order, recursing into nested Functional models.

    A sub-model called with `training=False` (the transfer-learning idiom that keeps its
    BatchNorm in inference mode) passes that on to each of its layers, so the flat model
    trains the same way.
    """
    import tensorflow as tf
    import tf_keras as keras

    def call(layer, *args, **kwargs):
        if training is not None and getattr(layer, "_expects_training_arg", False):
            kwargs.setdefault("training", training)
        return layer(*args, **kwargs)

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = _replay(layer, x, training) if isinstance(layer, keras.Model) else call(layer, x)
        return x
    if not getattr(model, "_is_graph_network", False):
        raise ModelError(f"cannot flatten the subclassed model {model.name!r}")
    if len(model.inputs) != 1:
        raise ModelError(f"cannot flatten {model.name!r}: it has {len(model.inputs)} inputs")
    tensors = {str(id(model.inputs[0])): x}
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.is_input:
                continue
            ids = node.flat_input_ids
            if any(i not in tensors for i in ids):
                raise ModelError(f"cannot flatten {model.name!r}: a node's inputs are missing")
            args, kwargs = node.map_arguments({i: [tensors[i]] * 64 for i in ids})
            if isinstance(node.layer, keras.Model):
                if len(ids) != 1:
                    raise ModelError(f"cannot flatten the multi-input {node.layer.name!r}")
                inner_training = kwargs.get("training", training)
                outputs = _replay(node.layer, tensors[ids[0]], inner_training)
            else:
                outputs = call(node.layer, *args, **kwargs)
            for out_id, y in zip(node.flat_output_ids, tf.nest.flatten(outputs)):
                tensors[out_id] = y
    (out,) = [tensors[str(id(t))] for t in model.outputs]
    return out
