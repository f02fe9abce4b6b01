"""Accuracy and agreement of TF Lite models on LiteRT, at the speed of the invoke floor.

The validation images are scaled once and shared by every variant. Each model's input is
resized to a batch so one `invoke` scores many images (same kernels, far less Python overhead
than one image per invoke); integer-input models get each batch quantized in one vector op.

A model with convolutions outside XNNPACK (hybrid dynamic-range kernels, int16x8 reference
kernels) is scored by one single-threaded interpreter per thread, each on a slice of the
images: most builtin kernels use one thread whatever `num_threads` says, and a partly
delegated model's two thread pools (XNNPACK's and the builtin kernels') contend at every
partition boundary, badly so on a loaded machine. LiteRT releases the GIL during `invoke`, so Python threads suffice.

`EvalWorker` runs all of this in one long-lived worker process (quantbench.workers, op
`predict`), so a LiteRT crash (a segfault in a kernel) costs one variant's row instead of the
whole run.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from quantbench.core import atomic
from quantbench.measure import litert
from quantbench.core.errors import MachineError, QuantbenchError, displayable, first_line, says_disk_full
from quantbench.workers import Worker, WorkerError, scratch_dir

# Worker timeout per request: start-up plus a generous per-image allowance (reference kernels
# of a large model run ~0.1 s an image here); it only guards against a hung kernel.
WORKER_START_SECONDS = 120
WORKER_SECONDS_PER_IMAGE = 0.5
HEAVY_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D",
                       "FULLY_CONNECTED", "BATCH_MATMUL"})  # fmt: skip


class EvaluationError(QuantbenchError):
    """LiteRT could not run a model on the validation images (refused it, crashed or hung)."""


@dataclass
class Scores:
    accuracy: float
    agreement: float | None
    per_class_accuracy: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    # Image-level uncertainty (intervals.py): 95% intervals over the photos, the paired
    # comparison with the reference, and the top-1 classes those are computed from.
    accuracy_ci: list[float] | None = None
    agreement_ci: list[float] | None = None
    vs_reference: dict | None = None
    predicted: np.ndarray | None = None

    def uncertainty(self) -> dict:
        """The VariantResult fields this adds: accuracy_ci, agreement_ci, vs_reference,
        predictions (encoded)."""
        from quantbench.core.results import PairedDifference, encode_classes

        paired = self.vs_reference
        return {
            "accuracy_ci": self.accuracy_ci, "agreement_ci": self.agreement_ci,
            "vs_reference": None if paired is None else PairedDifference(**paired),
            "predictions": None if self.predicted is None else encode_classes(self.predicted),
        }  # fmt: skip


def _prepare(model_path, sample_shape: tuple[int, ...], threads: int, batch: int):
    """(allocated interpreter, its batch size): `batch`, or 1 for a model fixed at batch 1."""
    interpreter = litert.open_interpreter(model_path, threads)
    try:
        index = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(index, [batch, *sample_shape])
        interpreter.allocate_tensors()
        return interpreter, batch
    except (RuntimeError, ValueError):
        interpreter = litert.open_interpreter(model_path, threads)
        interpreter.allocate_tensors()
        return interpreter, 1


def _predict_batches(interpreter, batch: int, inputs: np.ndarray, spare_core: bool) -> np.ndarray:
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]

    def model_input(start: int) -> np.ndarray:
        # One batch at a time: it stays in cache, and no input-sized temporaries.
        chunk = litert.quantize_input(inputs[start : start + batch], input_detail)
        if len(chunk) < batch:  # pad the last batch instead of re-allocating the interpreter
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        return chunk

    starts = range(0, len(inputs), batch)
    outputs = []
    # An integer-input model's quantization costs ~15% of an int8 invoke here: with a core to
    # spare, do the next batch's while LiteRT runs this one (both release the GIL). Without
    # one it would preempt one of LiteRT's threads, and the others wait for it at every sync.
    integer_input = np.issubdtype(np.dtype(input_detail["dtype"]), np.integer)
    with ThreadPoolExecutor(1) as prefetch:
        pending = prefetch.submit(model_input, 0) if integer_input and spare_core else None
        for k, start in enumerate(starts):
            chunk = pending.result() if pending else model_input(start)
            if pending and k + 1 < len(starts):
                pending = prefetch.submit(model_input, starts[k + 1])
            interpreter.set_tensor(input_detail["index"], chunk)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(output_detail["index"])[: len(inputs) - start].copy())
    return litert.dequantize_output(np.concatenate(outputs), output_detail)


def _heavy_ops_outside_xnnpack(interpreter) -> bool:
    """Does LiteRT run a convolution or matrix product on its builtin kernels?

    Those dominate a vision model's time; a lone SOFTMAX or QUANTIZE outside XNNPACK (int8
    models) does not, and slicing such a model only adds interpreters (measured: slower)."""
    from quantbench.measure.explain import analyze

    ops, _ = analyze(interpreter)
    return any(op.name in HEAVY_OPS and not op.delegated for op in ops)


def predict_tflite(model_path, inputs: np.ndarray, threads: int, batch_size: int = 4,
                   cores: int = 1) -> np.ndarray:
    """Class scores (dequantized) of a .tflite model for float32 inputs (N, H, W, C); `cores`
    is how many this call may use (the caller's Resources), `threads` how many LiteRT gets."""
    batch = max(1, min(batch_size, len(inputs)))
    interpreter, batch = _prepare(model_path, inputs.shape[1:], threads, batch)
    shards = min(threads, -(-len(inputs) // batch))
    if shards < 2 or not _heavy_ops_outside_xnnpack(interpreter):
        spare_core = cores > threads
        return _predict_batches(interpreter, batch, inputs, spare_core)
    del interpreter

    def score_slice(images: np.ndarray) -> np.ndarray:
        interpreter, batch_size = _prepare(model_path, inputs.shape[1:], 1, batch)
        return _predict_batches(interpreter, batch_size, images, spare_core=False)

    with ThreadPoolExecutor(shards) as pool:
        return np.concatenate(list(pool.map(score_slice, np.array_split(inputs, shards))))


def timed_predict(model_path, inputs, threads, batch_size=4, cores=1) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    scores = predict_tflite(model_path, inputs, threads, batch_size, cores)
    return scores, time.perf_counter() - started


def score(
    predictions: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    reference_predictions: np.ndarray | None = None,
    reference_name: str = "keras_float",
) -> Scores:
    """Top-1 accuracy, agreement with the reference's top-1, per-class accuracy, confusion;
    their 95% intervals over the photos, and the paired comparison with the reference
    (`reference_name`'s row) unless `reference_predictions` is `predictions` itself."""
    from quantbench.analysis import intervals

    predicted = predictions.argmax(axis=1) if predictions.ndim == 2 else predictions
    n = len(classes)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {
        c: float(confusion[k, k] / confusion[k].sum()) for k, c in enumerate(classes) if confusion[k].sum()
    }
    correct = predicted == labels
    scores = Scores(float(correct.mean()), None, per_class, confusion.tolist(),
                    accuracy_ci=list(intervals.wilson(int(correct.sum()), len(correct))),
                    predicted=np.asarray(predicted))  # fmt: skip
    if reference_predictions is not None:
        reference = (
            reference_predictions.argmax(axis=1)
            if reference_predictions.ndim == 2
            else reference_predictions
        )
        agree = reference == predicted
        scores.agreement = float(agree.mean())
        scores.agreement_ci = list(intervals.wilson(int(agree.sum()), len(agree)))
        if reference_predictions is not predictions:
            p = intervals.compare(correct, reference == labels)
            scores.vs_reference = {
                "reference": reference_name, "n": p.n, "difference": p.difference,
                "ci": [p.low, p.high], "p_value": p.p_value, "gained": p.gained, "lost": p.lost,
            }  # fmt: skip
    return scores


class EvalWorker:
    """`predict` in a worker process started once; the inputs are handed over once (an .npy
    file the worker loads at its first request).

    If LiteRT crashes or hangs on one model, that call raises EvaluationError and the next call
    starts a fresh worker. Use as a context manager, or call `close`.
    """

    def __init__(self, inputs: np.ndarray, cores: int = 1):
        self._cores = int(cores)
        self._tmp = scratch_dir("eval")
        self._dir = Path(self._tmp.name)
        self._images = len(inputs)
        try:
            atomic.save_npy(self._dir / "inputs.npy", np.ascontiguousarray(inputs, dtype=np.float32))
        except BaseException:
            self._tmp.cleanup()
            raise
        self._worker = Worker("evaluation")

    def predict(self, model_path, threads: int, batch_size: int = 4) -> tuple[np.ndarray, float]:
        """(scores, seconds) as `timed_predict` gives them, measured inside the worker."""
        out = self._dir / "scores.npy"
        payload = {"inputs": str(self._dir / "inputs.npy"), "model": str(model_path),
                   "threads": int(threads), "batch_size": int(batch_size), "out": str(out),
                   "cores": self._cores}  # fmt: skip
        timeout = WORKER_START_SECONDS + WORKER_SECONDS_PER_IMAGE * self._images
        try:
            reply = self._worker.request("predict", payload, timeout)
        except WorkerError as e:
            if says_disk_full(e.detail or e.message):  # the worker could not write: not the model
                raise MachineError(f"the disk is full: the evaluation worker cannot write to "
                                   f"{displayable(self._dir)} ({e.detail or e.message})",
                                   tip="free some space there, or set TMPDIR to another disk") from None
            if not e.reason:  # not a crash or a hang: a bug in the handler
                raise EvaluationError(e.message, e.tip) from None
            raise EvaluationError(
                f"LiteRT failed while scoring {Path(model_path).name} ({e.reason})"
                + (f": {e.detail}" if e.detail else ""),
                tip="the model's row is marked failed and the other variants are unaffected; "
                "`quantbench bench` on the file shows whether it runs by itself",
            ) from None
        return np.load(out), float(reply["seconds"])

    def close(self) -> None:
        self._worker.close()
        self._tmp.cleanup()

    def __enter__(self) -> EvalWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_INPUTS: dict[str, np.ndarray] = {}  # the worker's inputs, loaded at its first request


def predict_request(payload: dict) -> dict:
    """The worker's `predict` op: {inputs, model, threads, batch_size, out} -> {seconds}."""
    if payload["inputs"] not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[payload["inputs"]] = np.load(payload["inputs"])
    inputs = _INPUTS[payload["inputs"]]
    try:
        scores, seconds = timed_predict(payload["model"], inputs, payload["threads"],
                                        payload["batch_size"], payload.get("cores", 1))  # fmt: skip
    except (RuntimeError, ValueError) as e:
        first = first_line(e)
        raise EvaluationError(f"LiteRT cannot run {Path(payload['model']).name}: {first}",
                              tip="the model's row is marked failed; the other variants are "
                              "unaffected") from None  # fmt: skip
    np.save(payload["out"], scores)
    return {"seconds": seconds}
