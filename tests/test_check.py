"""`--check`: a wrongly declared preprocessing is caught, with the flags that fix it."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest

from quantbench.core.results import CheckResult
from quantbench.ml.check import binomial_tail, check_preprocessing, mcnemar_p, sample
from quantbench.ml.preprocess import Preprocessing

# Classes told apart by colour (red vs blue: swapping channels confuses them) and by
# brightness (dark vs light grey: 0..1 instead of -1..1 moves every pixel up).
SENSITIVE_CLASSES = {"blue": (40, 40, 210), "dark": (45, 45, 45), "light": (205, 205, 205),
                     "red": (210, 40, 40)}  # fmt: skip


def make_sensitive_folder(root: Path, per_class: int = 15, size: int = 24) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    for name, colour in SENSITIVE_CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 12, (size, size, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def train_sensitive_model(photos: Path, size: int = 24):
    """A small CNN trained on -1..1 RGB inputs (the sorted folder order is its class order)."""
    import tf_keras as keras

    from quantbench.ml.preprocess import load_image

    keras.utils.set_random_seed(0)
    classes = sorted(SENSITIVE_CLASSES)
    paths = [(p, k) for k, c in enumerate(classes) for p in sorted((photos / c).iterdir())]
    images = np.stack([load_image(p, size) for p, _ in paths])
    labels = np.array([k for _, k in paths])
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(len(classes), activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(Preprocessing(size).scale(images), labels, epochs=60, batch_size=16, verbose=0)
    return model, images, labels


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    photos = make_sensitive_folder(tmp_path_factory.mktemp("check") / "photos")
    return train_sensitive_model(photos)


def test_binomial_tail_and_mcnemar_match_exact_sums():
    assert binomial_tail(8, 10, 0.5) == pytest.approx(sum(comb(10, i) for i in range(8, 11)) / 1024)
    assert binomial_tail(0, 10, 0.3) == 1.0 and binomial_tail(11, 10, 0.3) == 0.0
    assert binomial_tail(3, 5, 0.25) == pytest.approx(
        sum(comb(5, i) * 0.25**i * 0.75 ** (5 - i) for i in range(3, 6))
    )
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(0.5**10)
    assert mcnemar_p(6, 4) > 0.3  # 6 against 4 discordant images is noise


def test_sample_is_capped_and_fixed():
    images, labels = np.zeros((900, 2, 2, 3), np.uint8), np.arange(900) % 3
    a, la = sample(images, labels, limit=500, seed=1)
    b, lb = sample(images, labels, limit=500, seed=1)
    assert len(a) == 500 and (la == lb).all() and set(la) == {0, 1, 2}


def test_the_right_declaration_raises_no_warning(sensitive):
    model, images, labels = sensitive
    result = check_preprocessing(model, images, labels, 4, Preprocessing(24, "-1..1", "rgb"))
    assert result.declared.accuracy > 0.9
    assert result.warnings == []
    assert len(result.rows) == 8 and not any(r.better for r in result.rows)


@pytest.mark.parametrize(
    "declared, fix",
    [(("-1..1", "bgr"), "--channel-order rgb"), (("0..1", "rgb"), "--scaling -1..1")],
)
def test_a_wrong_declaration_is_caught_with_the_fix(sensitive, declared, fix):
    model, images, labels = sensitive
    result = check_preprocessing(model, images, labels, 4, Preprocessing(24, *declared))
    right = next(r for r in result.rows if (r.scaling, r.channel_order) == ("-1..1", "rgb"))
    assert result.declared.accuracy < right.accuracy - 0.2
    assert right.better and right.p_value < 0.05 / 7
    assert any(fix in w and "McNemar" in w for w in result.warnings), result.warnings
    # results.json keeps the check: it reads back as it was written.
    assert CheckResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
