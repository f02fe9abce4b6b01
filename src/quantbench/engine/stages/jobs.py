"""What a stage works on: one Keras model of the plan, or one converted file of a variant."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantbench.core.results import VariantResult
from quantbench.core.specs import ModelSpec, TechniqueSpec, VariantSpec
from quantbench.engine.context import Context

REFERENCE = "keras_float"  # the row every variant's agreement and paired difference are against


@dataclass
class ModelJob:
    """A Keras model of the plan; `lazy.get()` loads (or trains) it on first use."""

    ctx: Context
    spec: ModelSpec
    lazy: Any  # executor.LazyModel


@dataclass
class ReferenceJob:
    ctx: Context
    spec: VariantSpec
    lazy: Any


@dataclass
class ConvertJob:
    ctx: Context
    spec: VariantSpec
    scheme: TechniqueSpec  # the spec's scheme, completed by its search if it has one
    lazy: Any
    out_path: Path  # where the file goes in the run directory
    prebuilt: tuple[Path, float] | None = None  # a file its search already made, and its seconds
    # A scheme that starts from a .tflite (its entry's source is "tflite"): that file's store
    # key (the conversion's parent) and its path (None until the executor has produced it).
    source_file: tuple[str, Path | None] | None = None


@dataclass
class FileJob:
    """One converted file to measure, with the row its figures go to."""

    ctx: Context
    spec: VariantSpec
    row: VariantResult
    path: Path
    file_key: str


@dataclass
class SearchJob:
    """A scheme whose parameters a search completes before it converts (its registry entry's
    `search_stage`): the variant, its model, and `keep_file(scheme, path, seconds)`, which
    keeps a file the search made under the key its conversion will ask for."""

    ctx: Context
    spec: VariantSpec
    lazy: Any
    keep_file: Any
    memo: dict[str, Any] = field(default_factory=dict)  # what the stage reads once for key and compute
