"""Identity as data: which technique with which parameters, and which variant of a run.

A `TechniqueSpec` names a registry entry (techniques/) and carries its parameters, fully
resolved by that entry (defaults filled in), so two ways of asking for the same thing (`qat`
and `qat:recipe=finetune`) are one identity. A `VariantSpec` is a chain of model transforms,
the scheme that makes a .tflite of the result (None: the Keras model itself) and the training
repeat; its id is a hash of that, so it names the same variant in every run, resume and cache.

Readable names (`int8`, `qat_finetune_int8`, `keras_float`) are derived from the spec, never
parsed back. How an entry reads in a name is the entry's own business, and the registries sit
above this module: each registry installs its namer here when it is imported (`set_namer`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

BASE_SOURCE = "float"  # the source name of the untransformed base model


class TechniqueSpec(BaseModel):
    """Which technique, with which parameters (every parameter, defaults included)."""

    model_config = ConfigDict(frozen=True)

    name: str
    params: dict[str, Any] = {}

    def canonical(self) -> str:
        """Canonical JSON: what identity (ids, cache keys) is computed from."""
        return json.dumps({"name": self.name, "params": self.params}, sort_keys=True,
                          separators=(",", ":"))  # fmt: skip

    def __hash__(self) -> int:
        return hash(self.canonical())

    def text(self) -> str:
        """The command-line form, e.g. `qat:recipe=finetune` (for display, never parsed back)."""
        parts = [self.name] + [f"{k}={value_text(v)}" for k, v in sorted(self.params.items())
                               if v is not None]  # fmt: skip
        return ":".join(parts)


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    return str(value)


def split_text(text: str) -> tuple[str, dict[str, Any], list[str]]:
    """`NAME:KEY=VALUE:KEY=VALUE` -> (name, params, malformed parts); values read as YAML
    (numbers, true/false). Only the syntax: the registry entry checks names and values."""
    name, *pairs = [part.strip() for part in text.strip().split(":")]
    params: dict[str, Any] = {}
    malformed = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            malformed.append(pair)
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        params[key.strip()] = value
    return name, params, malformed


# kind ("scheme", "transform") -> how a spec of that kind reads in a variant's name.
_NAMERS: dict[str, Callable[[TechniqueSpec], str]] = {}


def set_namer(kind: str, namer: Callable[[TechniqueSpec], str]) -> None:
    _NAMERS[kind] = namer


def _slug(kind: str, spec: TechniqueSpec) -> str:
    try:
        namer = _NAMERS[kind]
    except KeyError:
        raise RuntimeError(f"no {kind} registry loaded: import quantbench.techniques first") from None
    return namer(spec)


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
        return "_".join(_slug("transform", t) for t in self.transforms)


class VariantSpec(BaseModel):
    # Stored as `scheme`; results files written before the word was settled say `conversion`.
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    transforms: tuple[TechniqueSpec, ...] = ()
    scheme: TechniqueSpec | None = Field(None, validation_alias=AliasChoices("scheme", "conversion"))
    repeat: int = 0

    def canonical(self) -> str:
        # The key stays "conversion": ids are hashes of this text, and every run directory and
        # cache entry written so far is found by them.
        return json.dumps(
            {"transforms": [json.loads(t.canonical()) for t in self.transforms],
             "conversion": json.loads(self.scheme.canonical()) if self.scheme else None,
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
        if self.scheme is None:
            return f"keras_{self.source}"
        scheme = _slug("scheme", self.scheme)
        return scheme if not self.transforms else f"{self.source}_{scheme}"
