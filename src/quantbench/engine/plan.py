"""Plan: a config becomes the list of variants to produce, each a typed spec with a stable id.

A variant is: the chain of model transforms applied to the run's base model (the trained
float baseline, or the user's model), the conversion that makes a .tflite of the result (None
for the Keras model itself, the reference row), and the training repeat. Its id is a hash of
that spec, so it names the same variant in every run, resume and cache; its readable name
(`int8`, `qat_finetune_int8`, `keras_float`) is derived from the spec, never parsed back.
"""

from __future__ import annotations

from typing import Any

from quantbench.core.specs import BASE_SOURCE, ModelSpec, TechniqueSpec, VariantSpec  # noqa: F401
from quantbench.techniques.schemes import SCHEMES
from quantbench.techniques.transforms import TRANSFORMS


def scheme_specs(cfg: Any) -> list[TechniqueSpec]:
    """The schemes the base model is converted with: `convert.schemes`, else every registry
    entry marked default."""
    if cfg.convert.schemes is not None:
        return list(cfg.convert.schemes)
    return [SCHEMES.spec(name) for name in SCHEMES.defaults()]


def transform_scheme_specs(cfg: Any) -> list[TechniqueSpec]:
    """The schemes every transform's model is converted with: `convert.transform_schemes`;
    else the schemes named for the base model; else (none named) the article's QAT table."""
    from quantbench.core.config import TRANSFORM_SCHEMES

    if cfg.convert.transform_schemes is not None:
        return list(cfg.convert.transform_schemes)
    if cfg.convert.schemes is not None:
        return list(cfg.convert.schemes)
    return [SCHEMES.spec(name) for name in TRANSFORM_SCHEMES]


def plan(cfg: Any, repeats: int | None = None, base_conversions: list[TechniqueSpec] | None = None,
         ) -> list[VariantSpec]:  # fmt: skip
    """Every variant the config asks for, in the order they are produced: per repeat, the base
    model (its Keras row, then each conversion), then each transform's model likewise."""
    repeats = len(cfg.training_seeds()) if repeats is None else repeats
    conversions = base_conversions if base_conversions is not None else scheme_specs(cfg)
    specs: list[VariantSpec] = []
    for repeat in range(repeats):
        specs.append(VariantSpec(repeat=repeat))
        specs += [VariantSpec(scheme=c, repeat=repeat) for c in conversions]
        for transform in cfg.transforms:
            chain = TRANSFORMS.get(transform.name).chain(transform)
            specs.append(VariantSpec(transforms=chain, repeat=repeat))
            specs += [VariantSpec(transforms=chain, scheme=c, repeat=repeat)
                      for c in transform_scheme_specs(cfg)]  # fmt: skip
    names = [(s.name, s.repeat) for s in specs]
    duplicates = sorted({n for n, r in names if names.count((n, r)) > 1})
    if duplicates:
        from quantbench.core.errors import ConfigError

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


def held_out_photos(specs: list[VariantSpec], cfg: Any) -> int:
    """How many training photos a run holds out of training for its schemes' searches (0:
    none): the most any of them scores (each registry entry says, `held_out_photos`)."""
    counts = [SCHEMES.get(s.scheme.name).held_out_photos(SCHEMES.params_of(s.scheme), cfg)
              for s in specs if s.scheme is not None]  # fmt: skip
    return max(counts, default=0)


def hold_out(dataset: Any, cfg: Any, specs: list[VariantSpec] | None = None) -> Any:
    """`dataset` as `run` trains on it: the photos its searches score held out of training
    (data.hold_out_search). Anything that re-reads a run's photos (`analyze`, benchmarks)
    calls this, or its calibration slice would not be the run's."""
    from quantbench.ml.data import hold_out_search

    count = held_out_photos(plan(cfg) if specs is None else specs, cfg)
    return hold_out_search(dataset, count, cfg.data.split_seed) if count else dataset
