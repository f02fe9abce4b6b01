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

from pydantic import Field, field_validator

from quantbench.core.config import RECIPE_ALIASES
from quantbench.techniques import Params, Registry, Technique, TechniqueSpec


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
    recipe: Literal["finetune", "fresh"] = "finetune"
    epochs: int | None = None  # None: the recipe's own (finetune 2; fresh: the float model's)
    learning_rate: float | None = None  # None: the recipe's factor times the float model's

    @field_validator("recipe", mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        # Before the spec is made, so `recipe=seed` and `recipe=fresh` have one id and cache key.
        return RECIPE_ALIASES.get(value, value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Transform(Technique):
    def apply(self, params: Params, parent: Any, job: TrainJob) -> tuple[Any, Any]:
        """(trained model, results.TrainingResult)."""
        raise NotImplementedError

    def rebuild(self, params: Params, parent: Any, job: TrainJob) -> Any:
        """The untrained model `apply` would start training (the same variables, in order)."""
        raise NotImplementedError

    def chain(self, spec: TechniqueSpec) -> tuple[TechniqueSpec, ...]:
        """The transforms the plan applies for `spec`, in order: by default itself alone; a
        transform that continues another one's output (pqat after prune) names it first."""
        return (spec,)


@dataclass(frozen=True)
class Qat(Transform):
    """Quantization-aware training with tensorflow-model-optimization (docs/qat.md)."""

    def slug(self, params: QatParams) -> str:  # type: ignore[override]
        return f"qat_{params.recipe}"

    def apply(self, params: QatParams, parent: Any, job: TrainJob):  # type: ignore[override]
        from quantbench.ml.qat import train_qat

        return train_qat(params, float_model=parent, job=job)

    def rebuild(self, params: QatParams, parent: Any, job: TrainJob):  # type: ignore[override]
        from quantbench.ml.qat import build_qat_model

        return build_qat_model(params, float_model=parent, job=job)


# --- pruning, clustering and their quantization-preserving QAT (compress.py) -----------------
# Defaults suit the default preset (MobileNetV2 0.35, 5 float epochs at 1e-4): two fine-tune
# epochs at the float learning rate for prune/cluster, two QAT epochs at a tenth of it.


class PruneParams(Params):
    sparsity: float = Field(0.5, gt=0, lt=1)  # share of each kernel's weights set to zero
    epochs: int | None = Field(None, ge=0)  # None: compress.PRUNE_EPOCHS
    learning_rate: float | None = Field(None, gt=0)  # None: the float model's
    schedule_end: float = Field(0.5, gt=0, le=1)  # share of the fine-tune the ramp takes


class ClusterParams(Params):
    clusters: int = Field(16, ge=2, le=256)  # distinct values per kernel
    epochs: int | None = Field(None, ge=0)  # None: 2
    learning_rate: float | None = Field(None, gt=0)  # None: the float model's
    init: Literal["kmeans_plus_plus", "linear", "density", "random"] = "kmeans_plus_plus"
    preserve_sparsity: bool = False  # keep the parent's zeros (pcqat's clustering step)


class PqatParams(Params):
    sparsity: float = Field(0.5, gt=0, lt=1)  # of the prune step it continues
    epochs: int | None = Field(None, ge=0)  # QAT epochs; None: 2
    learning_rate: float | None = Field(None, gt=0)  # None: the float model's / 10


class CqatParams(Params):
    clusters: int = Field(16, ge=2, le=256)  # of the cluster step it continues
    epochs: int | None = Field(None, ge=0)
    learning_rate: float | None = Field(None, gt=0)


class PcqatParams(Params):
    sparsity: float = Field(0.5, gt=0, lt=1)
    clusters: int = Field(16, ge=2, le=256)
    epochs: int | None = Field(None, ge=0)
    learning_rate: float | None = Field(None, gt=0)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}".replace(".", "p")


@dataclass(frozen=True)
class Prune(Transform):
    """Magnitude pruning, wrappers stripped: the parent's architecture with zeros."""

    def slug(self, params: PruneParams) -> str:  # type: ignore[override]
        return f"prune{_percent(params.sparsity)}"

    def apply(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import prune

        return prune(params, parent, job)

    def rebuild(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import clone

        return clone(parent)


@dataclass(frozen=True)
class Cluster(Transform):
    """Weight clustering, wrappers stripped: the parent's architecture, k values per kernel."""

    def slug(self, params: ClusterParams) -> str:  # type: ignore[override]
        return f"cluster{params.clusters}"

    def apply(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import cluster

        return cluster(params, parent, job)

    def rebuild(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import clone

        return clone(parent)


@dataclass(frozen=True)
class PreservingQat(Transform):
    """QAT that keeps the zeros (pqat), the clusters (cqat) or both (pcqat) of the step the
    plan puts before it; the result is in the default QAT wrappers (compress.rewrap)."""

    def chain(self, spec: TechniqueSpec) -> tuple[TechniqueSpec, ...]:
        params = spec.params
        before = []
        if "sparsity" in params:
            before.append(TRANSFORMS.spec("prune", sparsity=params["sparsity"]))
        if "clusters" in params:
            before.append(TRANSFORMS.spec("cluster", clusters=params["clusters"],
                                          preserve_sparsity="sparsity" in params))  # fmt: skip
        return (*before, spec)

    def apply(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import preserving_qat

        return preserving_qat(self.name, params, parent, job)

    def rebuild(self, params, parent, job):  # type: ignore[override]
        from quantbench.ml.compress import default_qat_model

        return default_qat_model(parent, job)


TRANSFORMS: Registry[Transform] = Registry("transform", "--transforms", [
    Qat("qat", "quantization-aware training: fake-quantized fine-tune (recipes: finetune, "
        "the trained model with warmed-up ranges; fresh, the article's recipe on a fresh "
        "pretrained model)",
        params=QatParams),
    Prune("prune", "magnitude pruning to a target sparsity (polynomial schedule, short "
          "fine-tune, wrappers stripped)", params=PruneParams, default=False),
    Cluster("cluster", "weight clustering: k shared values per kernel (short fine-tune, "
            "wrappers stripped)", params=ClusterParams, default=False),
    PreservingQat("pqat", "sparsity-preserving QAT of the prune step's model (chain: prune, "
                  "pqat)", params=PqatParams, default=False),
    PreservingQat("cqat", "cluster-preserving QAT of the cluster step's model (chain: "
                  "cluster, cqat)", params=CqatParams, default=False),
    PreservingQat("pcqat", "sparsity- and cluster-preserving QAT (chain: prune, cluster "
                  "keeping zeros, pcqat)", params=PcqatParams, default=False),
])  # fmt: skip
