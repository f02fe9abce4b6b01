"""What a product of a run depends on (`Key`) and how the store keeps it (`Stored`): the
vocabulary of the Stage protocol (engine/stage.py), here so that registry entries which bring
a stage of their own (the selective search) need nothing above them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Key:
    """What a product depends on, besides the stage and the library versions."""

    params: dict[str, Any]
    parent: str | None = None  # the key of the product it was made from
    data: str | None = None  # a fingerprint of the data it read


@dataclass
class Stored:
    """A product as the store keeps it: files (copied in) and JSON metadata."""

    meta: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
