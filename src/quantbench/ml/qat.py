"""Quantization-aware training (tensorflow-model-optimization), two recipes.

- `fresh`: what the article did: `quantize_model` on a freshly built pretrained model,
  trained with the float baseline's optimizer, learning rate and epochs (called `seed` before;
  techniques/transforms.py reads that name still).
- `finetune` (default): `quantize_model` on the trained float baseline with batch norm frozen
  (inference mode), its activation ranges warmed up on training images, then a short
  fine-tune at a tenth of the float learning rate.

Why the warm-up (docs/qat.md has the measurements): `quantize_model` starts every activation
range at [-6, 6] and moves it as an exponential moving average with decay 0.999, i.e. over
~1000 training steps. MobileNetV2's linear bottlenecks (the projection BN outputs without ReLU)
span +/-15..60, so a trained model wrapped as is gets those clipped to +/-6 for the whole of a
short fine-tune (~100 steps an epoch here) and its validation accuracy collapses, even with a
zero learning rate. `warm_up_ranges` sets each range to its steady state (the mean per-batch
min/max the EMA converges to) before the first step. Freezing batch norm keeps training on
the moving statistics the converter folds into the weights (it measured +2.5 points here).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from quantbench.core.config import RunConfig
from quantbench.ml.data import calibration_indices
from quantbench.ml.model import HEAD_PREFIX, build_classifier
from quantbench.core.results import TrainingResult

QUANTIZED_PREFIX = "quant_"  # tfmot's prefix for the layers it wraps


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    from_trained: bool  # start from the trained float baseline (else a fresh pretrained model)
    warm_up: bool  # set activation ranges from training images before the first step
    freeze_batch_norm: bool  # batch norm in inference mode: moving statistics, as converted
    epochs: int | None  # None: the float baseline's epochs
    learning_rate_factor: float  # times the float baseline's learning rate


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("fresh", "quantize_model on a fresh pretrained model, float's optimizer/lr/epochs",
               from_trained=False, warm_up=False, freeze_batch_norm=False, epochs=None,
               learning_rate_factor=1.0),
        Recipe("finetune", "quantize the trained float model, warm up ranges, freeze batch "
               "norm, short fine-tune", from_trained=True, warm_up=True, freeze_batch_norm=True,
               epochs=2, learning_rate_factor=0.1),
    ]
}  # fmt: skip

WARM_UP_IMAGES = 512  # training images the fake-quant ranges are warmed up on


def quantize(model):
    """tfmot's default 8-bit QAT wrapping of a flat Functional model."""
    import tensorflow_model_optimization as tfmot

    return tfmot.quantization.keras.quantize_model(model)


@contextlib.contextmanager
def _moving_averages_follow_batch(captured: list) -> Iterator[None]:
    """Inside, every moving-average quantizer sets its range to the current batch's range
    (EMA decay 0) and reports its (min, max) variables to `captured`. Restored on exit."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    original = quantizers.quant_ops.MovingAvgQuantize

    def follow_batch(inputs, min_var, max_var, *args, **kwargs):
        kwargs["ema_decay"] = 0.0
        captured.append((min_var, max_var))
        return original(inputs, min_var, max_var, *args, **kwargs)

    quantizers.quant_ops.MovingAvgQuantize = follow_batch
    try:
        yield
    finally:
        quantizers.quant_ops.MovingAvgQuantize = original


def _batch_norm_statistics(model) -> list:
    import tf_keras as keras

    variables = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            variables += [inner.moving_mean, inner.moving_variance]
    return variables


def warm_up_ranges(qat_model, inputs: np.ndarray, batch_size: int = 32) -> int:
    """Set every moving-average activation range to the mean of its per-batch min/max over
    `inputs` (float32, already scaled): the value the EMA would converge to. Batch-norm moving
    statistics are left as they were. Returns the number of ranges set."""
    if len(inputs) == 0:
        return 0
    statistics = _batch_norm_statistics(qat_model)
    saved = [v.numpy() for v in statistics]
    sums: dict[int, list] = {}
    batches = 0
    for start in range(0, len(inputs), batch_size):
        captured: list = []
        with _moving_averages_follow_batch(captured):
            # Training mode is where the quantizers update their ranges.
            qat_model(inputs[start : start + batch_size], training=True)
        for min_var, max_var in captured:
            entry = sums.setdefault(id(min_var), [min_var, max_var, 0.0, 0.0])
            entry[2] = entry[2] + min_var.numpy()
            entry[3] = entry[3] + max_var.numpy()
        batches += 1
    for min_var, max_var, min_sum, max_sum in sums.values():
        min_var.assign(np.asarray(min_sum / batches, dtype=np.float32))
        max_var.assign(np.asarray(max_sum / batches, dtype=np.float32))
    for variable, value in zip(statistics, saved):
        variable.assign(value)
    return len(sums)


def freeze_batch_norm(qat_model) -> int:
    """Put every (wrapped) batch-norm layer in inference mode for training: it normalizes with
    its moving statistics, which the converter folds into the convolutions, and stops
    updating them. The fake-quant ranges after it keep training. Returns the count."""
    import tf_keras as keras

    count = 0
    for layer in qat_model.layers:
        if isinstance(getattr(layer, "layer", layer), keras.layers.BatchNormalization):
            layer.trainable = False  # a non-trainable Keras BN layer runs in inference mode
            count += 1
    return count


def freeze_quantized_base(qat_model) -> None:
    """frozen_base mode on a QAT model: only the wrapped head_* layers train."""
    for layer in qat_model.layers:
        name = layer.name.removeprefix(QUANTIZED_PREFIX)
        layer.trainable = name.startswith(HEAD_PREFIX)


def recipe_settings(params, cfg: RunConfig) -> tuple[int, float]:
    """(epochs, learning rate) of a QAT transform's parameters; the recipe's defaults fill in."""
    r = RECIPES[params.recipe]
    epochs = params.epochs or (r.epochs if r.epochs is not None else cfg.train.epochs)
    learning_rate = params.learning_rate or cfg.train.learning_rate * r.learning_rate_factor
    return epochs, learning_rate


def build_qat_model(params, *, float_model, job):
    """The wrapped model a recipe trains, before any training step (and before the warm-up).

    Also what the store loads cached QAT weights into: the same wrappers, the same variables."""
    from quantbench.core.errors import ModelError

    r = RECIPES[params.recipe]
    if r.from_trained:
        start = float_model
    else:
        if not job.can_build_fresh:
            raise ModelError(f"QAT recipe {params.recipe!r} builds a fresh model, which only "
                             "`quantbench run` knows how to do",
                             tip="use qat:recipe=finetune on your own model")  # fmt: skip
        start = build_classifier(len(job.dataset.classes), job.cfg.model, job.cfg.data.image_size)
    qat_model = quantize(start)
    if job.cfg.train.mode == "frozen_base":
        freeze_quantized_base(qat_model)
    if r.freeze_batch_norm:
        freeze_batch_norm(qat_model)  # first, so that the warm-up sees the same normalization
    return qat_model


def train_qat(params, *, float_model, job) -> tuple[Any, TrainingResult]:
    """Build and train the QAT model of `params.recipe`; returns it and its training record."""
    from quantbench.ml.train import fit, seed_everything

    r = RECIPES[params.recipe]
    cfg, dataset = job.cfg, job.dataset
    epochs, learning_rate = recipe_settings(params, cfg)
    job.emit("step", f"QAT recipe {params.recipe!r} (seed {job.seed}, {epochs} epochs, "
                     f"lr {learning_rate:g})")  # fmt: skip
    seed_everything(job.seed)
    qat_model = build_qat_model(params, float_model=float_model, job=job)
    if r.warm_up:
        picks = calibration_indices(len(dataset.train_images), WARM_UP_IMAGES, cfg.data.split_seed)
        count = warm_up_ranges(
            qat_model, job.preprocessing.scale(dataset.train_images[picks]), cfg.train.batch_size
        )
        job.emit("info", f"warmed up {count} activation ranges on {len(picks)} training images")
    training = fit(
        qat_model, dataset, job.preprocessing, cfg.train, seed=job.seed,
        name=f"qat_{params.recipe}", recipe=params.recipe, repeat=job.repeat,
        learning_rate=learning_rate, epochs=epochs, emit=job.emit,
    )  # fmt: skip
    return qat_model, training
