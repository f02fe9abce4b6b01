"""Shared fixtures: tiny generated image folders, tiny models, and the real flowers photos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Before quantbench's consoles are made (present/console.py reads COLUMNS when output is not a
# terminal): the width a terminal or a pytest-xdist worker passes on must not fold test output.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import quantbench  # noqa: E402,F401  - selects Keras 2 before anything imports TensorFlow

ROOT = Path(__file__).resolve().parents[1]


def keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME") or ROOT.parent / "shared" / "keras")


def _require_or_skip(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path} (set KERAS_HOME to a Keras cache that has it)"
    if os.environ.get("QUANTBENCH_REQUIRE_REALDATA"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty model cache, so no test reuses another's models."""
    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("QUANTBENCH_CACHE", str(root))
    # The CLI honours COLUMNS when its output is not a terminal; the test process's own (a
    # terminal's, or one pytest-xdist's workers inherit) must not fold the output tests read.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    return root


@pytest.fixture(scope="session")
def flowers_dir() -> Path:
    """The real tf_flowers photos (read-only)."""
    return _require_or_skip(keras_home() / "datasets" / "flower_photos", "flower_photos")


@pytest.fixture(scope="session")
def real_keras_home(flowers_dir) -> Path:
    _require_or_skip(
        keras_home() / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
        "MobileNetV2 alpha 0.35 weights",
    )
    return keras_home()


def make_image_folder(root: Path, classes=("cats", "dogs", "owls"), per_class=12, size=40) -> Path:
    """Class folders of small JPEGs whose colour depends on the class, so a model can learn."""
    from PIL import Image

    rng = np.random.default_rng(0)
    palette = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (200, 200, 40), (160, 40, 200)]
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(palette[k % len(palette)], dtype=np.float32)
            pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "photos")


def tiny_classifier(num_classes=3, size=32):
    """A small flat Functional CNN (converts in a couple of seconds)."""
    import tf_keras as keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """A tiny CNN converted with several schemes (and a QAT copy), shared by latency,
    explain and bench tests."""
    from tests.test_latency import build_tiny_models

    return build_tiny_models()


@pytest.fixture
def worker_ops(monkeypatch):
    """Worker children also load the test ops of tests/worker_ops.py (their `predict` and
    `convert` crash or hang on chosen names, and otherwise do the real work)."""
    from quantbench import workers

    monkeypatch.setenv(workers.PLUGINS_ENV, "tests.worker_ops")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
