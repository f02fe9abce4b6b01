"""Evaluation speed: quantbench's batched evaluation vs the invoke floor vs the article's loop.

For every scheme, on the real validation split at the same thread count:
  floor     = images x median single-image invoke time (set_tensor + invoke, inputs ready)
  ours      = wall time of one variant's evaluation as `quantbench run` does it: a request to the
              evaluation worker process (quantbench.measure.evaluate.EvalWorker, started once per run,
              before the rounds) and its scores back, quantization included
  article loop = the article's loop: tf.expand_dims, set_tensor, invoke, get_tensor per image
Targets: ours / floor <= 1.15 and article / ours >= 1.0, with identical predictions.

    python benchmarks/eval_vs_floor.py [--threads 2] [--schemes float32,int8,...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import flowers, median, mobilenet

from quantbench.measure import litert
from quantbench.core.config import EvaluateConfig
from quantbench.techniques.convert import convert_all
from quantbench.ml.data import calibration_indices
from quantbench.measure.evaluate import EvalWorker
from quantbench.ml.preprocess import Preprocessing


def floor_seconds(path: Path, inputs: np.ndarray, threads: int) -> float:
    """images x the median of one timed single-image invoke per image, inputs ready.

    Every image is timed (not a sample of 50): the floor then spans the same seconds of the
    machine's life as the evaluation it is compared with, so a burst of load hits both."""
    interpreter = litert.open_interpreter(path, threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    quantized = litert.quantize_input(inputs, detail)
    for image in quantized[:5]:  # warm-up
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
    times = []
    for image in quantized:
        started = time.perf_counter()
        interpreter.set_tensor(detail["index"], image[None])
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return median(times) * len(inputs)


def article_loop(path: Path, inputs: np.ndarray, threads: int) -> tuple[np.ndarray, float]:
    import tensorflow as tf

    started = time.perf_counter()
    interpreter = litert.open_interpreter(path, threads)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    predictions = []
    for image in inputs:
        batch = tf.expand_dims(image, 0).numpy()
        interpreter.set_tensor(input_detail["index"], litert.quantize_input(batch, input_detail))
        interpreter.invoke()
        predictions.append(int(np.argmax(interpreter.get_tensor(output_detail["index"])[0])))
    return np.array(predictions), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--schemes", default="float32,dynamic_range,float16,int8,int8_io")
    parser.add_argument("--batch-size", type=int, default=EvaluateConfig().batch_size)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    dataset = flowers()
    preprocessing = Preprocessing(128)
    val_inputs = preprocessing.scale(dataset.val_images)
    calibration = preprocessing.scale(
        dataset.train_images[calibration_indices(len(dataset.train_images), 100, 42)]
    )
    model = mobilenet(len(dataset.classes))
    with tempfile.TemporaryDirectory() as tmp, EvalWorker(val_inputs) as worker:
        conversions = convert_all(model, args.schemes.split(","), calibration, Path(tmp))
        worker.predict(conversions[0].path, args.threads, args.batch_size)  # start it, as a run does
        print(f"{len(val_inputs)} validation images, {args.threads} threads, "
              f"batch {args.batch_size}, median of {args.rounds} interleaved rounds")  # fmt: skip
        print(f"{'scheme':<14}{'floor s':>9}{'ours s':>9}{'article s':>11}"
              f"{'ours/floor':>12}{'article/ours':>14}  same predictions")  # fmt: skip
        for c in conversions:
            if c.error:
                print(f"{c.scheme:<14} failed to convert: {c.error}")
                continue
            # Interleaved rounds, medians: a busy neighbour hits all three alike.
            floors, ours_times, article_times = [], [], []
            for _ in range(args.rounds):
                floors.append(floor_seconds(c.path, val_inputs, args.threads))
                started = time.perf_counter()
                ours = worker.predict(c.path, args.threads, args.batch_size)[0].argmax(1)
                ours_times.append(time.perf_counter() - started)
                theirs, article_seconds = article_loop(c.path, val_inputs, args.threads)
                article_times.append(article_seconds)
            floor, ours_seconds = median(floors), median(ours_times)
            article_seconds = median(article_times)
            print(f"{c.scheme:<14}{floor:>9.2f}{ours_seconds:>9.2f}{article_seconds:>11.2f}"
                  f"{ours_seconds / floor:>12.2f}{article_seconds / ours_seconds:>14.2f}  "
                  f"{(ours == theirs).mean():.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
