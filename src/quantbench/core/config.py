"""Typed, validated, versioned run configuration: the schema of config files and config.yaml.

Every value is range-checked by pydantic and unknown keys are refused. Technique lists
(`transforms`, `convert.schemes`) are read here for their syntax; the registries, a layer
above, check their names and parameters when a config is resolved (engine/configure.py), and
so do the runtimes and targets named. Presets, config files and flags: engine/configure.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quantbench.core.errors import ConfigError
from quantbench.core.specs import TechniqueSpec, split_text
from quantbench.core.suggest import did_you_mean

CONFIG_SCHEMA_VERSION = 2  # 2: transforms and conversions are technique specs (1: a qat section)
READABLE_CONFIG_VERSIONS = (1, 2)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?)b?\s*$", re.IGNORECASE)


def parse_bytes(value: Any) -> int | None:
    """`512KB`, `1MB`, `1.5MiB`, `262144` -> bytes. KB/MB are 1024-based, as MCU datasheets
    count RAM and flash (a "512 KB" part has 524288 bytes)."""
    if value is None or isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (e.g. 512KB, 1MB, 262144)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])


Scaling = Literal["-1..1", "0..1", "0..255", "imagenet"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    dir: Path | None = None  # None: the Keras cache's flower_photos, downloaded if absent
    image_size: int = Field(128, ge=8, le=1024)
    validation_split: float = Field(0.15, gt=0, lt=1)
    split_seed: int = 42
    scaling: Scaling = "-1..1"  # MobileNetV2 expects [-1, 1]
    channel_order: Literal["rgb", "bgr"] = "rgb"
    max_images_per_class: int | None = Field(None, ge=2)
    labels_file: Path | None = None  # class names in the model's output order, one a line


class ModelConfig(_Section):
    architecture: Literal["mobilenet_v2"] = "mobilenet_v2"
    alpha: float = Field(0.35, gt=0, le=2)
    weights: str = "imagenet"  # "imagenet", "none", or a path to a `_no_top` .h5 file
    dense_units: int = Field(512, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)


class TrainConfig(_Section):
    mode: Literal["full", "frozen_base"] = "full"
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-5, gt=0, le=10)
    epochs: int = Field(10, ge=0, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    seed: int = 1


# The schemes of each transform's output (the QAT model, ...) when no scheme is named at all:
# every scheme, the deprecated aliases included, as the article's QAT table has them (its claim
# that they equal Optimize.DEFAULT is checked on them). Named `convert.schemes` apply to every
# model of the plan instead, unless `convert.transform_schemes` names others.
TRANSFORM_SCHEMES = ["float32", "dynamic_range", "float16", "int8", "int8_io", "int16x8",
                     "optimize_for_size", "optimize_for_latency"]  # fmt: skip


def technique_specs(value: Any, kind: str) -> list[TechniqueSpec]:
    """Specs from what a config or a flag holds (text `a,b:k=v`, names, mappings, specs), read
    for their syntax only: the registries (engine/configure.py) check names and parameters and
    fill in the defaults, since they sit above this module."""
    if value is None:
        return []
    items = [p for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    specs = []
    for item in items:
        if isinstance(item, TechniqueSpec):
            specs.append(item)
        elif isinstance(item, str):
            name, params, malformed = split_text(item)
            if malformed:
                raise ConfigError(f"bad {kind} {item!r}: expected KEY=VALUE after ':', got "
                                  f"{malformed[0]!r}", tip="e.g. qat:recipe=finetune")  # fmt: skip
            specs.append(TechniqueSpec(name=name, params=params))
        elif isinstance(item, dict) and "name" in item and not set(item) - {"name", "params"}:
            specs.append(TechniqueSpec(name=str(item["name"]), params=dict(item.get("params") or {})))
        else:
            raise ConfigError(f"a {kind} is a name or {{name: ..., params: {{...}}}}, got {item!r}",
                              tip="e.g. NAME:KEY=VALUE")  # fmt: skip
    return list(dict.fromkeys(specs))


def _scheme_specs(value: Any) -> list[TechniqueSpec]:
    specs = technique_specs(value, "scheme")
    if not specs:
        raise ValueError("give at least one scheme")
    return specs


class ConvertConfig(_Section):
    schemes: list[TechniqueSpec] | None = None  # None: every scheme marked default
    # Of the transforms' models; None: `schemes` when named, else TRANSFORM_SCHEMES.
    transform_schemes: list[TechniqueSpec] | None = None
    calibration_images: int = Field(200, ge=1, le=100_000)
    # Labelled images (one sub-folder per class) that score selective's candidates; default: a
    # slice of the training split outside the calibration images. Never the validation split.
    search_data: Path | None = None

    @field_validator("schemes", "transform_schemes", mode="before")
    @classmethod
    def _known_schemes(cls, value: Any) -> list[TechniqueSpec] | None:
        return None if value is None else _scheme_specs(value)


class EvaluateConfig(_Section):
    # 1 thread and all cores, as benchmark_model users compare them.
    threads: list[int] = Field(default_factory=lambda: sorted({1, os.cpu_count() or 1}))
    latency_runs: int = Field(50, ge=1, le=100_000)
    warmup_runs: int = Field(5, ge=0, le=10_000)
    # Images per LiteRT invoke during evaluation. 4 was fastest here (benchmarks/eval_vs_floor.py
    # --batch-size): larger batches' activations spill out of the CPU's caches.
    batch_size: int = Field(4, ge=1, le=4096)
    # LiteRT APIs each latency figure is timed through (runtimes.RUNTIMES): "interpreter" (what
    # evaluation uses) and/or "compiled" (CompiledModel). See runtimes.py for where they differ.
    runtimes: list[str] = Field(default_factory=lambda: ["interpreter"])
    # Figures timed while other processes held the cores are measured again at the end of a
    # run, after waiting at most this many seconds in all for quiet (null: keep them as they are).
    wait_quiet: float | None = Field(60.0, ge=0)

    @field_validator("runtimes")
    @classmethod
    def _some_runtimes(cls, value: list[str]) -> list[str]:
        # Which names exist is the runtimes registry's business (engine/configure.py).
        if not value:
            raise ValueError("runtimes must name at least one runtime")
        return list(dict.fromkeys(value))

    @field_validator("threads")
    @classmethod
    def _positive_threads(cls, value: list[int]) -> list[int]:
        if not value or any(t < 1 for t in value):
            raise ValueError("threads must be a non-empty list of counts >= 1")
        return value


class QuantizeConfig(_Section):
    """`quantbench quantize`: the user's own model (see docs/byo.md)."""

    model: Path | None = None  # .keras, .h5/.hdf5 or a SavedModel directory
    # rest: every photo except the calibration slice (an already-trained model); validation:
    # the validation split (the default with QAT, which trains on the rest); all: every photo.
    eval_split: Literal["rest", "validation", "all"] = "rest"
    check: bool = False  # score every scaling x channel order on a sample first
    unsafe: bool = False  # allow Lambda layers (their Python code runs on load)
    custom_objects: str | None = None  # module (or .py file) with the model's custom layers


class RecommendConfig(_Section):
    """Constraints and objective for "which variant should I ship?"."""

    max_accuracy_drop: float = Field(1.0, ge=0)  # points below the float Keras model
    max_size_mb: float | None = Field(None, gt=0)
    max_gzip_size_mb: float | None = Field(None, gt=0)  # the file gzipped (download size)
    max_latency_ms: float | None = Field(None, gt=0)
    objective: Literal["size", "gzip_size", "latency", "accuracy"] = "size"
    # How sure the accuracy drop must be within max_accuracy_drop (intervals.ONE_SIDED):
    # estimate = the measured drop; likely = its one-sided 80% upper bound; sure = 95%.
    confidence: Literal["estimate", "likely", "sure"] = "sure"
    # Rule out variants that cannot run there: a name in the targets registry (targets/),
    # checked against it by engine/configure.py.
    target: str | None = None


class TargetsConfig(_Section):
    """Budgets the target checks judge against (targets/): sizes as bytes or `512KB`, `1MB`."""

    check: bool = True  # run the target checks
    # Photos TF Lite Micro scores per file, a seeded sample of the validation split (None, or
    # `--target mcu`: every photo). Its reference kernels took 25 ms a photo for the default
    # preset's int8 files, 139 s of a 417 s default run for all 551 photos of 10 files; the
    # mcu check's facts (arena, refused ops) do not depend on the count, its accuracy and
    # agreement with LiteRT are given with their interval over the photos scored.
    tflm_images: int | None = Field(100, ge=1)
    mcu_ram: int | None = Field(None, gt=0)  # TFLM's tensor arena must fit
    mcu_flash: int | None = Field(None, gt=0)  # the .tflite file must fit

    @field_validator("mcu_ram", "mcu_flash", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_bytes(value)


class RunConfig(_Section):
    schema_version: int = CONFIG_SCHEMA_VERSION
    name: str = "default"
    preset: str = "default"
    output_dir: Path = Path("runs")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    convert: ConvertConfig = Field(default_factory=ConvertConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    transforms: list[TechniqueSpec] = Field(default_factory=list)  # model transforms (QAT, ...)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    targets: TargetsConfig = Field(default_factory=TargetsConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    repeats: int = Field(1, ge=1, le=100)
    seeds: list[int] | None = None  # explicit training seeds; overrides repeats
    track: Literal["mlflow", "wandb"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        """Read older configs: version 1's `qat` section becomes transforms (see fold_qat)."""
        if not isinstance(data, dict):
            return data
        version = data.get("schema_version", CONFIG_SCHEMA_VERSION)
        if version not in READABLE_CONFIG_VERSIONS:
            raise ValueError(f"this quantbench reads config schema_version "
                             f"{', '.join(map(str, READABLE_CONFIG_VERSIONS))}, not {version!r}")
        data = fold_qat(dict(data))
        data["schema_version"] = CONFIG_SCHEMA_VERSION
        return data

    @field_validator("preset", mode="before")
    @classmethod
    def _renamed_preset(cls, value: Any) -> Any:
        # A run directory's config.yaml from before the rename says `preset: seed`.
        return PRESET_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("transforms", mode="before")
    @classmethod
    def _transform_specs(cls, value: Any) -> list[TechniqueSpec]:
        return technique_specs(value, "transform")

    def training_seeds(self) -> list[int]:
        """One training seed per repeat: `seeds`, else train.seed, train.seed+1, ..."""
        if self.seeds:
            return list(self.seeds)
        return [self.train.seed + i for i in range(self.repeats)]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# Old preset name -> its name now: `seed` named the article's preset, when "seed" also meant
# the article itself and the RNG seed. `--preset seed` and `preset: seed` still read.
PRESET_ALIASES: dict[str, str] = {"seed": "article"}
# Old recipe name -> its name now. `seed` named the article's recipe while "seed" also meant
# the article and the RNG seed; configs, flags and results files that say it still read.
RECIPE_ALIASES: dict[str, str] = {"seed": "fresh"}


def fold_qat(data: dict[str, Any]) -> dict[str, Any]:
    """The `qat` section (config version 1, and the --qat/--qat-epochs/--qat-learning-rate
    flags) expressed as transforms: `recipes` replaces the QAT transforms, `epochs` and
    `learning_rate` fill in every QAT transform's parameters, `schemes` become
    `convert.transform_schemes`."""
    qat = data.pop("qat", None)
    if qat is None:
        return data
    if not isinstance(qat, dict):
        raise ConfigError("qat must be a mapping", tip="keys: recipes, epochs, learning_rate, schemes")
    unknown = set(qat) - {"recipes", "epochs", "learning_rate", "schemes"}
    if unknown:
        name = sorted(unknown)[0]
        hint = did_you_mean(name, ["recipes", "epochs", "learning_rate", "schemes"])
        raise ConfigError(f"unknown config key {'qat.' + name!r}{hint}",
                          tip="valid keys here: recipes, epochs, learning_rate, schemes")
    transforms = technique_specs(data.get("transforms") or [], "transform")
    if qat.get("recipes") is not None:
        recipes = qat["recipes"]
        recipes = [r for r in recipes.split(",") if r.strip()] if isinstance(recipes, str) else recipes
        transforms = [t for t in transforms if t.name != "qat"]
        transforms += [TechniqueSpec(name="qat", params={"recipe": str(r).strip()}) for r in recipes]
    settings = {k: qat[k] for k in ("epochs", "learning_rate") if qat.get(k) is not None}
    if settings:
        transforms = [TechniqueSpec(name=t.name, params={**t.params, **settings}) if t.name == "qat"
                      else t for t in transforms]  # fmt: skip
    data["transforms"] = transforms
    if qat.get("schemes") is not None:
        data["convert"] = {**(data.get("convert") or {}), "transform_schemes": qat["schemes"]}
    return data
