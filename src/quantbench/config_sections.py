"""The sections of a run's config (config.RunConfig holds one of each): typed, range-checked,
unknown keys refused."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quantbench.techniques import TechniqueSpec
from quantbench.suggest import did_you_mean


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


# The conversions applied to each transform's output (e.g. the QAT model) when none are named:
# every scheme, the deprecated aliases included, as the article's QAT table has them.
TRANSFORM_SCHEMES = ["float32", "dynamic_range", "float16", "int8", "int8_io", "int16x8",
                     "optimize_for_size", "optimize_for_latency"]  # fmt: skip


def _conversion_specs(value: Any) -> list[TechniqueSpec]:
    from quantbench.techniques.conversions import CONVERSIONS

    specs = CONVERSIONS.parse_list(value)
    if not specs:
        raise ValueError("give at least one scheme")
    return specs


class ConvertConfig(_Section):
    schemes: list[TechniqueSpec] | None = None  # None: every conversion marked default
    transform_schemes: list[TechniqueSpec] = Field(
        default_factory=lambda: _conversion_specs(TRANSFORM_SCHEMES)
    )
    calibration_images: int = Field(200, ge=1, le=100_000)
    # Labelled images (one sub-folder per class) that score selective's candidates; default: a
    # slice of the training split outside the calibration images. Never the validation split.
    search_data: Path | None = None

    @field_validator("schemes", "transform_schemes", mode="before")
    @classmethod
    def _known_schemes(cls, value: Any) -> list[TechniqueSpec] | None:
        return None if value is None else _conversion_specs(value)

    def scheme_specs(self) -> list[TechniqueSpec]:
        from quantbench.techniques.conversions import CONVERSIONS

        if self.schemes is not None:
            return list(self.schemes)
        return [CONVERSIONS.spec(name) for name in CONVERSIONS.defaults()]

    def scheme_names(self) -> list[str]:
        return [spec.name for spec in self.scheme_specs()]


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
    def _known_runtimes(cls, value: list[str]) -> list[str]:
        from quantbench.runtimes import RUNTIMES

        for name in value:
            if name not in RUNTIMES:
                raise ValueError(f"unknown runtime {name!r}{did_you_mean(name, RUNTIMES)}; "
                                 f"choose from: {', '.join(RUNTIMES)}")  # fmt: skip
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
    # Rule out variants that cannot run there (targets/): mcu, edgetpu, gpu, integer_only, cpu.
    target: Literal["mcu", "edgetpu", "gpu", "integer_only", "cpu"] | None = None


class TargetsConfig(_Section):
    """Budgets the target checks judge against (targets/): sizes as bytes or `512KB`, `1MB`."""

    check: bool = True  # run the target checks (TFLM scores every photo: ~10 s per int8 file)
    mcu_ram: int | None = Field(None, gt=0)  # TFLM's tensor arena must fit
    mcu_flash: int | None = Field(None, gt=0)  # the .tflite file must fit

    @field_validator("mcu_ram", "mcu_flash", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        from quantbench.targets import parse_bytes

        return parse_bytes(value)
