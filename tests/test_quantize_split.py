"""`quantize` on an already-trained model: a small seeded calibration slice, every other photo
scored, and the split recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantbench.ml.data import Dataset, calibration_split
from quantbench.core.results import DataSummary, decode_classes
from tests.conftest import make_image_folder, tiny_classifier


def fake_dataset(n_train: int, n_val: int) -> Dataset:
    n = n_train + n_val
    labels = np.arange(n) % 3
    images = np.arange(n, dtype=np.int32).reshape(n, 1, 1, 1).repeat(3, axis=3)
    summary = DataSummary(source="x", classes=list("abc"), class_counts={}, train_count=n_train,
                          val_count=n_val, split_seed=42, validation_split=0.15, image_size=1)  # fmt: skip
    return Dataset(list("abc"), images[:n_train], labels[:n_train], images[n_train:],
                   labels[n_train:], [], summary, [f"d{i}" for i in range(n_train)],
                   [f"d{i}" for i in range(n_train, n)])  # fmt: skip


@pytest.mark.parametrize("count, expected", [(200, 100), (50, 50), (1000, 100)])
def test_calibration_takes_at_most_a_third_and_the_rest_is_scored(count, expected):
    split = calibration_split(fake_dataset(255, 45), count, seed=42)
    assert len(split.train_images) == expected and len(split.val_images) == 300 - expected
    assert split.summary.calibration_count == expected == split.summary.train_count
    assert split.summary.val_count == 300 - expected
    pixels = lambda images: set(images[:, 0, 0, 0].tolist())  # noqa: E731 - each photo's id
    assert pixels(split.train_images).isdisjoint(pixels(split.val_images))
    assert (decode_classes(split.summary.eval_labels) == split.val_labels).all()
    assert set(split.train_digests).isdisjoint(split.val_digests)
    assert f"except {expected} seeded calibration photos" in split.summary.eval_split
    again = calibration_split(fake_dataset(255, 45), count, seed=42)
    assert (again.val_labels == split.val_labels).all() and again.summary.eval_digest == split.summary.eval_digest
    other = calibration_split(fake_dataset(255, 45), count, seed=7)
    assert other.summary.eval_digest != split.summary.eval_digest


@pytest.mark.pipeline
def test_quantize_on_a_300_photo_folder_scores_200(tmp_path):
    import quantbench

    photos = make_image_folder(tmp_path / "photos", per_class=100, size=32)
    model = tiny_classifier(3, 32)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.save(tmp_path / "model.keras")
    _, run_dir = quantbench.quantize(tmp_path / "model.keras", data=photos,
                                     schemes="float32,int8", latency_runs=5, threads=1,
                                     output_dir=tmp_path / "runs")  # fmt: skip
    results = json.loads((run_dir / "results.json").read_text())
    data = results["data"]
    assert data["calibration_count"] == 100 and data["val_count"] == 200
    assert "except 100 seeded calibration photos" in data["eval_split"]
    rows = {r["variant"]: r for r in results["variants"]}
    for name in ("keras_float", "float32", "int8"):
        assert rows[name]["eval_images"] == 200
        low, high = rows[name]["accuracy_ci"]
        assert low <= rows[name]["accuracy"] <= high
    assert rows["int8"]["vs_reference"]["n"] == 200
    assert len(decode_classes(rows["int8"]["predictions"])) == 200
    assert results["extras"]["quantize"]["eval_split"] == "rest"
    assert "calibration photos" in (run_dir / "report.html").read_text()
