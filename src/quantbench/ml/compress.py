"""Pruning, weight clustering and their quantization-preserving QAT (tensorflow-model-optimization).

Five transforms (techniques/transforms.py) call in here:

- `prune`: magnitude pruning (`prune_low_magnitude`) from 0 to `sparsity` on tfmot's
  polynomial schedule over the first `schedule_end` of a short fine-tune (batch norm frozen),
  the rest of it recovering with the mask fixed; wrappers stripped, so the output is the
  parent's architecture with zeros in its Conv2D and Dense kernels (tfmot 0.8's registry
  prunes no DepthwiseConv2D weights: 1.2% of MobileNetV2 0.35's, so 48.8% overall at 50%).
- `cluster`: `cluster_weights` with `clusters` centroids per kernel, a short fine-tune of the
  centroids, stripped: every kernel then holds at most `clusters` distinct values.
- `pqat`, `cqat`, `pcqat`: QAT that keeps what the previous step made. They do not start from
  the float model: `pqat` runs after `prune` (the plan inserts it: the chain is prune, pqat),
  `cqat` after `cluster`, `pcqat` after prune then a sparsity-preserving cluster, as TF's
  collaborative-optimization guide does. The QAT itself is qat.py's finetune recipe (batch norm
  frozen, activation ranges warmed up: docs/qat.md says why the naive one collapses) with
  tfmot's Default8BitPrunePreserveQuantizeScheme / Default8BitClusterPreserveQuantizeScheme.

Why the trained PQAT/CQAT model is re-wrapped into tfmot's default QAT wrappers before it is
returned (`rewrap`): the cluster-preserving quantizer creates its centroid variables with as
many entries as the kernel has distinct values *when it is built*, so an untrained copy of it
(what the store loads cached weights into) would have other shapes. In inference mode both
preserving quantizers fake-quantize the layer's own kernel (CQAT writes the clustered weights
into it at every training step; PQAT's mask keeps pruned weights at zero) with the same
min/max variables as the default quantizer, so the default wrappers with the same kernels and
ranges compute the same function and convert to the same file (test_compress checks both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantbench.core.results import TrainingResult

PRESERVE_ONLY = ("cluster_centroids", "pulling_indices", "original_weights")  # CQAT's own vars


# Pruning's fine-tune when not given: half of it ramps the sparsity up, the rest recovers.
# On the default preset, 50% sparsity with 2 epochs lost 2.2 points of the float model's 84.0%.
PRUNE_EPOCHS = 4


def _settings(params, cfg, default_factor: float, default_epochs: int) -> tuple[int, float]:
    epochs = params.epochs if params.epochs is not None else default_epochs
    learning_rate = params.learning_rate or cfg.train.learning_rate * default_factor
    return epochs, learning_rate


def _steps_per_epoch(job) -> int:
    return max(1, int(np.ceil(len(job.dataset.train_images) / job.cfg.train.batch_size)))


def _fit(model, job, *, name: str, recipe: str, epochs: int, learning_rate: float, callbacks=None):
    from quantbench.ml.train import fit

    return fit(model, job.dataset, job.preprocessing, job.cfg.train, seed=job.seed, name=name,
               recipe=recipe, repeat=job.repeat, learning_rate=learning_rate, epochs=epochs,
               callbacks=callbacks, emit=job.emit)  # fmt: skip


def clone(model):
    """The same architecture and weights, new variables (the parent stays as it was)."""
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


# --- pruning ------------------------------------------------------------------------------


def pruning_schedule(params, steps: int):
    """Polynomial (cubic) ramp from 0 to the target over the first `schedule_end` of the steps,
    updating the mask about 10 times; the remaining steps fine-tune with the mask fixed."""
    import tensorflow_model_optimization as tfmot

    end = max(1, int(steps * params.schedule_end))
    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0, final_sparsity=params.sparsity, begin_step=0, end_step=end,
        frequency=max(1, end // 10),
    )  # fmt: skip


def prune(params, parent, job) -> tuple[Any, TrainingResult]:
    import tensorflow_model_optimization as tfmot

    from quantbench.ml.train import seed_everything

    epochs, learning_rate = _settings(params, job.cfg, 1.0, PRUNE_EPOCHS)
    job.emit("step", f"pruning to {params.sparsity:.0%} sparsity ({epochs} epochs, lr {learning_rate:g})")
    seed_everything(job.seed)
    steps = _steps_per_epoch(job) * max(epochs, 1)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(
        clone(parent), pruning_schedule=pruning_schedule(params, steps)
    )
    # Batch norm in inference mode, as in qat.py: MobileNetV2's BN moving averages (momentum
    # 0.999) take ~1000 steps to follow the pruned convolutions, so a 2-epoch (196-step)
    # fine-tune with them training reached 87% training but 23% validation accuracy (the
    # default preset, inference mode uses the stale statistics). Frozen, the kernels adapt to
    # the statistics the converter folds in.
    from quantbench.ml.qat import freeze_batch_norm

    freeze_batch_norm(wrapped)
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    training = _fit(wrapped, job, name=f"prune{_pct(params.sparsity)}", recipe="prune",
                    epochs=epochs, learning_rate=learning_rate, callbacks=callbacks)  # fmt: skip
    if epochs == 0:  # no step ran: apply the final mask at once (tests, and a zero-epoch ask)
        _prune_now(wrapped, params.sparsity)
    return tfmot.sparsity.keras.strip_pruning(wrapped), training


def _prune_now(wrapped, sparsity: float) -> None:
    """Zero the smallest-magnitude `sparsity` share of each pruned kernel, without training."""
    for layer in wrapped.layers:
        for weight, mask, _threshold in getattr(layer, "pruning_vars", []):
            values = weight.numpy()
            k = int(round(values.size * sparsity))
            if k == 0:
                continue
            cut = np.partition(np.abs(values).ravel(), k - 1)[k - 1]
            keep = (np.abs(values) > cut).astype(values.dtype)
            weight.assign(values * keep)
            mask.assign(keep)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}".replace(".", "p")


# --- clustering ---------------------------------------------------------------------------


def cluster(params, parent, job) -> tuple[Any, TrainingResult]:
    import tensorflow_model_optimization as tfmot

    from quantbench.ml.train import seed_everything

    epochs, learning_rate = _settings(params, job.cfg, 1.0, 2)
    job.emit("step", f"clustering to {params.clusters} values per kernel ({epochs} epochs, "
                     f"lr {learning_rate:g})")  # fmt: skip
    seed_everything(job.seed)
    init = getattr(tfmot.clustering.keras.CentroidInitialization, params.init.upper())
    kwargs = {"preserve_sparsity": True} if params.preserve_sparsity else {}
    if params.preserve_sparsity:
        from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
            cluster as experimental,
        )

        wrapped = experimental.cluster_weights(clone(parent), number_of_clusters=params.clusters,
                                               cluster_centroids_init=init, **kwargs)  # fmt: skip
    else:
        wrapped = tfmot.clustering.keras.cluster_weights(
            clone(parent), number_of_clusters=params.clusters, cluster_centroids_init=init
        )
    training = _fit(wrapped, job, name=f"cluster{params.clusters}", recipe="cluster",
                    epochs=epochs, learning_rate=learning_rate)  # fmt: skip
    return tfmot.clustering.keras.strip_clustering(wrapped), training


# --- quantization-aware training that preserves sparsity or clusters ----------------------


def preserving_scheme(kind: str):
    import tensorflow_model_optimization as tfmot

    combine = tfmot.experimental.combine
    return {
        "pqat": lambda: combine.Default8BitPrunePreserveQuantizeScheme(),
        "cqat": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=False),
        "pcqat": lambda: combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }[kind]()


def preserving_qat(kind: str, params, parent, job) -> tuple[Any, TrainingResult]:
    """QAT of a pruned and/or clustered `parent` that keeps its zeros / clusters; returned in
    the default QAT wrappers (`rewrap`), ready to convert."""
    import tensorflow_model_optimization as tfmot

    from quantbench.ml import qat
    from quantbench.ml.data import calibration_indices
    from quantbench.ml.train import seed_everything

    cfg = job.cfg
    epochs, learning_rate = _settings(params, cfg, 0.1, 2)
    job.emit("step", f"{kind.upper()} (seed {job.seed}, {epochs} epochs, lr {learning_rate:g})")
    seed_everything(job.seed)
    annotated = tfmot.quantization.keras.quantize_annotate_model(clone(parent))
    wrapped = tfmot.quantization.keras.quantize_apply(annotated, preserving_scheme(kind))
    if cfg.train.mode == "frozen_base":
        qat.freeze_quantized_base(wrapped)
    qat.freeze_batch_norm(wrapped)  # before the warm-up, as in the finetune recipe
    picks = calibration_indices(len(job.dataset.train_images), qat.WARM_UP_IMAGES,
                                cfg.data.split_seed)  # fmt: skip
    count = qat.warm_up_ranges(wrapped, job.preprocessing.scale(job.dataset.train_images[picks]),
                               cfg.train.batch_size)  # fmt: skip
    job.emit("info", f"warmed up {count} activation ranges on {len(picks)} training images")
    training = _fit(wrapped, job, name=kind, recipe=kind, epochs=epochs, learning_rate=learning_rate)
    return rewrap(wrapped, parent, job, keep_zeros=kind != "cqat"), training


def default_qat_model(parent, job):
    """The default-scheme QAT model of `parent` (qat.py's finetune wrapping): what the store
    loads a preserving QAT model's cached weights into."""
    from quantbench.ml import qat

    model = qat.quantize(parent)
    if job.cfg.train.mode == "frozen_base":
        qat.freeze_quantized_base(model)
    qat.freeze_batch_norm(model)
    return model


def _own_weights(layer) -> dict[str, Any]:
    """A layer's variables by their name inside it (`kernel`, `kernel_min`, `_min`, ...)."""
    out = {}
    for variable in layer.weights:
        # Keras names some after their layer (quantize_layer_1/quantize_layer_1_min).
        out[variable.name.split(":")[0].split("/")[-1].removeprefix(layer.name)] = variable
    return out


def rewrap(trained, parent, job, keep_zeros: bool = False):
    """`trained` (a PQAT/CQAT model) as a default-scheme QAT model: every variable of the
    default wrappers copied from the same layer's variable of the same name; the preserving
    quantizers' own variables (centroids, indices, the pre-CQAT weights) are left behind.
    `keep_zeros`: PQAT multiplies each kernel by the mask of the parent's zeros in its forward
    pass (the mask is a tensor, not a variable): apply it to the copied kernels, so the
    default wrappers see exactly what PQAT fed its weight quantizer."""
    target = default_qat_model(parent, job)
    zeros = {}
    if keep_zeros:
        for layer in parent.layers:
            for name, variable in _own_weights(layer).items():
                zeros[(layer.name, name)] = variable.numpy() == 0
    # Both are tfmot's wrapping of the same parent: the same layers in the same order (names
    # differ only where Keras numbers them, e.g. quantize_layer_1).
    if len(target.layers) != len(trained.layers):
        raise RuntimeError("re-wrapping the QAT model: the two wrappings differ in layers")
    for layer, source in zip(target.layers, trained.layers):
        if not layer.weights:
            continue
        have = _own_weights(source)
        for name, variable in _own_weights(layer).items():
            if name not in have:
                raise RuntimeError(f"re-wrapping the QAT model: {layer.name}/{name} is missing")
            value = have[name].numpy()
            inner = getattr(layer, "layer", layer).name
            if (inner, name) in zeros and zeros[(inner, name)].shape == value.shape:
                value = np.where(zeros[(inner, name)], 0, value).astype(value.dtype)
            variable.assign(value)
    return target
