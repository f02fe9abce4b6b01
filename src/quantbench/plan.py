"""Plan: a config becomes the list of variants to produce, each a typed spec with a stable id.

A variant is: the chain of model transforms applied to the run's base model (the trained
float baseline, or the user's model), the conversion that makes a .tflite of the result (None
for the Keras model itself, the reference row), and the training repeat. Its id is a hash of
that spec, so it names the same variant in every run, resume and cache; its readable name
(`int8`, `qat_finetune_int8`, `keras_float`) is derived from the spec, never parsed back.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from quantbench.techniques import TechniqueSpec

BASE_SOURCE = "float"  # the source name of the untransformed base model


class VariantSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    transforms: tuple[TechniqueSpec, ...] = ()
    conversion: TechniqueSpec | None = None  # None: the Keras model itself
    repeat: int = 0

    def canonical(self) -> str:
        return json.dumps(
            {"transforms": [json.loads(t.canonical()) for t in self.transforms],
             "conversion": json.loads(self.conversion.canonical()) if self.conversion else None,
             "repeat": self.repeat},
            sort_keys=True, separators=(",", ":"),
        )  # fmt: skip

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.canonical())

    @property
    def model(self) -> ModelSpec:
        """The Keras model this variant is made from."""
        return ModelSpec(transforms=self.transforms, repeat=self.repeat)

    @property
    def source(self) -> str:
        return self.model.name

    @property
    def name(self) -> str:
        if self.conversion is None:
            return f"keras_{self.source}"
        from quantbench.techniques.conversions import CONVERSIONS

        conversion = CONVERSIONS.get(self.conversion.name).slug(CONVERSIONS.params_of(self.conversion))
        return conversion if not self.transforms else f"{self.source}_{conversion}"


class ModelSpec(BaseModel):
    """A Keras model of the plan: the base model after a chain of transforms, in one repeat."""

    model_config = ConfigDict(frozen=True)

    transforms: tuple[TechniqueSpec, ...] = ()
    repeat: int = 0

    def canonical(self) -> str:
        return json.dumps({"transforms": [json.loads(t.canonical()) for t in self.transforms],
                           "repeat": self.repeat}, sort_keys=True, separators=(",", ":"))

    def __hash__(self) -> int:
        return hash(self.canonical())

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    @property
    def parent(self) -> ModelSpec | None:
        return ModelSpec(transforms=self.transforms[:-1], repeat=self.repeat) if self.transforms else None

    @property
    def name(self) -> str:
        if not self.transforms:
            return BASE_SOURCE
        from quantbench.techniques.transforms import TRANSFORMS

        return "_".join(TRANSFORMS.get(t.name).slug(TRANSFORMS.params_of(t)) for t in self.transforms)


def plan(cfg: Any, repeats: int | None = None, base_conversions: list[TechniqueSpec] | None = None,
         ) -> list[VariantSpec]:  # fmt: skip
    """Every variant the config asks for, in the order they are produced: per repeat, the base
    model (its Keras row, then each conversion), then each transform's model likewise."""
    from quantbench.techniques.transforms import TRANSFORMS

    repeats = len(cfg.training_seeds()) if repeats is None else repeats
    conversions = base_conversions if base_conversions is not None else cfg.convert.scheme_specs()
    specs: list[VariantSpec] = []
    for repeat in range(repeats):
        specs.append(VariantSpec(repeat=repeat))
        specs += [VariantSpec(conversion=c, repeat=repeat) for c in conversions]
        for transform in cfg.transforms:
            chain = TRANSFORMS.get(transform.name).chain(transform)
            specs.append(VariantSpec(transforms=chain, repeat=repeat))
            specs += [VariantSpec(transforms=chain, conversion=c, repeat=repeat)
                      for c in cfg.convert.transform_schemes]  # fmt: skip
    names = [(s.name, s.repeat) for s in specs]
    duplicates = sorted({n for n, r in names if names.count((n, r)) > 1})
    if duplicates:
        from quantbench.errors import ConfigError

        raise ConfigError(f"two variants would be named {duplicates[0]!r}: they differ only in "
                          "parameters that are not part of the name",
                          tip="run them as two runs (or a sweep)")  # fmt: skip
    return specs


def models_of(specs: list[VariantSpec]) -> list[ModelSpec]:
    """The Keras models the specs need, parents before children, in plan order."""
    seen: dict[ModelSpec, None] = {}
    for spec in specs:
        chain = []
        model: ModelSpec | None = spec.model
        while model is not None:
            chain.append(model)
            model = model.parent
        for m in reversed(chain):
            seen.setdefault(m, None)
    return list(seen)
