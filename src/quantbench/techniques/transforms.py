"""The model-transforms registry: a trained Keras model in, another trained Keras model out.

Each output goes through the conversions like any other source (plan.py). Adding a transform
is one entry in `TRANSFORMS` with its typed parameters: `apply` trains it, `rebuild` makes the
same architecture untrained so the store can load cached weights into it (weights are cached,
not pickled models: a QAT model's wrappers do not round-trip through `.keras` files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from quantbench.techniques import Params, Registry, Technique


@dataclass
class TrainJob:
    """What a transform needs besides its parent model: the data and the training settings."""

    dataset: Any  # data.Dataset
    preprocessing: Any  # preprocess.Preprocessing
    cfg: Any  # config.RunConfig
    seed: int  # the RNG seed of this repeat's training
    repeat: int
    can_build_fresh: bool = True  # False for a user's model: no recipe of ours built it
    emit: Callable[[str, str], None] = lambda level, text: None  # progress lines for the caller


class QatParams(Params):
    recipe: Literal["finetune", "seed"] = "finetune"
    epochs: int | None = None  # None: the recipe's own (finetune 2; seed: the float model's)
    learning_rate: float | None = None  # None: the recipe's factor times the float model's


@dataclass(frozen=True)
class Transform(Technique):
    def apply(self, params: Params, parent: Any, job: TrainJob) -> tuple[Any, Any]:
        """(trained model, results.TrainingResult)."""
        raise NotImplementedError

    def rebuild(self, params: Params, parent: Any, job: TrainJob) -> Any:
        """The untrained model `apply` would start training (the same variables, in order)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Qat(Transform):
    """Quantization-aware training with tensorflow-model-optimization (docs/qat.md)."""

    def slug(self, params: QatParams) -> str:  # type: ignore[override]
        return f"qat_{params.recipe}"

    def apply(self, params: QatParams, parent: Any, job: TrainJob):  # type: ignore[override]
        from quantbench.qat import train_qat

        return train_qat(params, float_model=parent, job=job)

    def rebuild(self, params: QatParams, parent: Any, job: TrainJob):  # type: ignore[override]
        from quantbench.qat import build_qat_model

        return build_qat_model(params, float_model=parent, job=job)


TRANSFORMS: Registry[Transform] = Registry("transform", "--transforms", [
    Qat("qat", "quantization-aware training: fake-quantized fine-tune (recipes: finetune, "
        "the trained model with warmed-up ranges; seed, the article's from-scratch recipe)",
        params=QatParams),
])  # fmt: skip
