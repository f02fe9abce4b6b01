"""Shared set-up for the benchmark scripts: the real photos and a MobileNetV2 to convert."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import quantbench  # noqa: E402,F401  - Keras 2 before TensorFlow


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or ROOT.parent / "shared" / "keras")


def flowers(image_size: int = 128, max_images_per_class: int | None = None):
    """The real tf_flowers split (validation images are what evaluation scores)."""
    os.environ.setdefault("KERAS_HOME", str(keras_home()))
    from quantbench.core.config import DataConfig
    from quantbench.ml.data import load_dataset

    return load_dataset(DataConfig(image_size=image_size, max_images_per_class=max_images_per_class))


def mobilenet(num_classes: int = 5, image_size: int = 128, alpha: float = 0.35):
    """The default preset's architecture with ImageNet trunk weights (head untrained)."""
    os.environ.setdefault("KERAS_HOME", str(keras_home()))
    from quantbench.core.config import ModelConfig
    from quantbench.ml.model import build_classifier
    from quantbench.ml.train import seed_everything

    seed_everything(0)
    return build_classifier(num_classes, ModelConfig(alpha=alpha), image_size)


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
