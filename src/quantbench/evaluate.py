"""Accuracy and agreement of TF Lite models on LiteRT, at the speed of the invoke floor.

The validation images are scaled once and shared by every variant. Each model's input is
resized to a batch so one `invoke` scores many images (same kernels, far less Python overhead
than one image per invoke); integer-input models get each batch quantized in one vector op.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from quantbench import litert


@dataclass
class Scores:
    accuracy: float
    agreement: float | None
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)


def predict_tflite(model_path, inputs: np.ndarray, threads: int, batch_size: int = 16) -> np.ndarray:
    """Class scores (dequantized) of a .tflite model for float32 inputs (N, H, W, C)."""
    interpreter = litert.open_interpreter(model_path, threads)
    input_detail = interpreter.get_input_details()[0]
    batch = min(batch_size, len(inputs))
    try:
        interpreter.resize_tensor_input(input_detail["index"], [batch, *inputs.shape[1:]])
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError):
        batch = 1  # a model with a fixed batch of 1: fall back to single-image invokes
        interpreter = litert.open_interpreter(model_path, threads)
        interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    outputs = []
    for start in range(0, len(inputs), batch):
        # Quantize one batch at a time: it stays in cache, and no input-sized temporaries.
        chunk = litert.quantize_input(inputs[start : start + batch], input_detail)
        n = len(chunk)
        if n < batch:  # pad the last batch instead of re-allocating the interpreter
            chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
        interpreter.set_tensor(input_detail["index"], chunk)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_detail["index"])[:n].copy())
    return litert.dequantize_output(np.concatenate(outputs), output_detail)


def timed_predict(model_path, inputs, threads, batch_size=16) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = predict_tflite(model_path, inputs, threads, batch_size)
    return scores, time.perf_counter() - started


def score(
    predictions: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    reference_predictions: np.ndarray | None = None,
) -> Scores:
    """Top-1 accuracy, agreement with the reference's top-1, per-class accuracy, confusion."""
    predicted = predictions.argmax(axis=1) if predictions.ndim == 2 else predictions
    n = len(classes)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        c: float(confusion[k, k] / confusion[k].sum()) for k, c in enumerate(classes) if confusion[k].sum()
    }
    agreement = None
    if reference_predictions is not None:
        reference = (
            reference_predictions.argmax(axis=1)
            if reference_predictions.ndim == 2
            else reference_predictions
        )
        agreement = float((reference == predicted).mean())
    return Scores(float((predicted == labels).mean()), agreement, per_class, confusion.tolist())
