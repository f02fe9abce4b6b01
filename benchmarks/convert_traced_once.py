"""Conversion cost: all schemes of one Keras model, quantbench vs one from_keras_model each.

naive = for each scheme, TFLiteConverter.from_keras_model(model) + the scheme's options
ours  = quantbench.techniques.converter.convert_all (one SavedModel export, parallel converter processes)
Target: ours / naive <= 0.5, with the same model bytes or the same predictions.

    python benchmarks/convert_traced_once.py [--schemes float32,dynamic_range,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import flowers, mobilenet

from quantbench.techniques.convert import convert_all
from quantbench.ml.data import calibration_indices
from quantbench.measure.evaluate import predict_tflite
from quantbench.ml.preprocess import Preprocessing
from quantbench.techniques.schemes import SCHEMES


def naive(model, schemes, calibration, out: Path) -> float:
    import tensorflow as tf

    def representative_dataset():
        for image in calibration:
            yield [image[None]]

    started = time.perf_counter()
    for name in schemes:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        SCHEMES.get(name).configure(converter, representative_dataset)
        (out / f"{name}.tflite").write_bytes(converter.convert())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default=",".join(SCHEMES.defaults()))
    parser.add_argument("--calibration-images", type=int, default=200)
    args = parser.parse_args()
    schemes = args.schemes.split(",")
    dataset = flowers(max_images_per_class=80)
    preprocessing = Preprocessing(128)
    calibration = preprocessing.scale(dataset.train_images[
        calibration_indices(len(dataset.train_images), args.calibration_images, 42)])  # fmt: skip
    inputs = preprocessing.scale(dataset.val_images)
    model = mobilenet(len(dataset.classes))
    with tempfile.TemporaryDirectory() as tmp:
        naive_dir, ours_dir = Path(tmp, "naive"), Path(tmp, "ours")
        naive_dir.mkdir()
        naive_seconds = naive(model, schemes, calibration, naive_dir)
        started = time.perf_counter()
        conversions = convert_all(model, schemes, calibration, ours_dir)
        ours_seconds = time.perf_counter() - started
        print(f"{len(schemes)} schemes: naive {naive_seconds:.1f} s, ours {ours_seconds:.1f} s, "
              f"ratio {ours_seconds / naive_seconds:.2f} (target <= 0.5)")  # fmt: skip
        for c in conversions:
            if c.error:
                print(f"  {c.scheme:<14} failed: {c.error}")
                continue
            ours_bytes, naive_bytes = c.path.read_bytes(), (naive_dir / f"{c.scheme}.tflite").read_bytes()
            a = predict_tflite(c.path, inputs, 2).argmax(1)
            b = predict_tflite(naive_dir / f"{c.scheme}.tflite", inputs, 2).argmax(1)
            print(f"  {c.scheme:<14} {c.seconds:5.1f} s  same bytes: {ours_bytes == naive_bytes!s:<6} "
                  f"same top-1 on {len(inputs)} images: {np.mean(a == b):.1%}")


if __name__ == "__main__":
    main()
