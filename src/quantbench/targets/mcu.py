"""TF Lite Micro: does the file run on TFLM's kernels, in how much arena, how accurately?

Measured with the `tflite-micro` package's Python interpreter, which runs TFLM's reference
kernels on the host (about 19 ms per 128x128 image for the default preset's int8 model here):
a model either allocates and runs, or TFLM refuses it with its own words ("Hybrid models are
not supported on TFLite Micro" for dynamic-range files; "DEQUANTIZE ... failed to prepare"
for float16 weights). The minimum arena is found by bisection on `arena_size`: TFLM fails to
allocate below it (about 315 KiB for the default preset's int8_io model, a 1.26 MB file).

`tflm_request` runs in a worker process (workers.OPS["tflm"]), so a crash in native code
costs one target check, not the run.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

ARENA_STEP = 1024  # bisection resolution in bytes
MAX_ARENA = 64 << 20  # no microcontroller has more; a model needing more is refused anyway
_NOISE = re.compile(r"^\s*$")


@contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """TFLM reports why it refused a model on the C stderr (fd 2): capture its lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            lines.extend(ln.strip() for ln in text.splitlines() if not _NOISE.match(ln))


def _open(data: bytes, arena: int) -> tuple[object | None, list[str]]:
    from tflite_micro import runtime

    with _captured_stderr() as log:
        try:
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(arena))
        except (RuntimeError, ValueError) as e:
            log_error = str(e)
            interpreter = None
    if interpreter is None:
        log.append(log_error)
    return interpreter, log


def tflm_reason(log: list[str]) -> str:
    """TFLM's own explanation: the kernel's message, without its source path, plus the node."""
    kernel = next((ln for ln in log if " not supported" in ln or "was not true" in ln), None)
    node = next((ln for ln in log if ln.startswith("Node ")), None)
    parts = []
    if kernel:
        parts.append(re.sub(r"^\S+\.(cc|h)(:\d+)?\s*", "", kernel).rstrip("."))
    if node:
        parts.append(node)
    if not parts:
        parts = [ln for ln in log if ln][-2:]
    return "; ".join(parts) or "TFLM refused the model"


def min_arena(data: bytes, upper: int) -> int:
    """The smallest arena (to ARENA_STEP bytes) in which TFLM allocates the model, given an
    `upper` that works. Allocation is all or nothing, so success is monotonic in the size."""
    lo, hi = 0, upper  # lo fails (or is 0), hi works
    while hi - lo > ARENA_STEP:
        mid = (lo + hi) // 2
        interpreter, _ = _open(data, mid)
        if interpreter is None:
            lo = mid
        else:
            hi = mid
        del interpreter
    return hi


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype, copy=False)
    q = detail["quantization_parameters"]
    scale, zero = float(q["scales"][0]), int(q["zero_points"][0])
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / scale) + zero, info.min, info.max).astype(dtype)


def run_tflm(data: bytes, inputs: np.ndarray | None, max_arena: int | None = None) -> dict:
    """{runs, reason, arena_bytes, predictions, seconds_per_image} for one model. A model
    whose arena exceeds `max_arena` (the RAM budget) is not scored: on a busy 2-core machine
    TFLM's reference kernels took 0.2-0.27 s an image for the default preset's files, so
    scoring 551 photos costs minutes, and a verdict that is already "does not fit" needs none."""
    upper = max(MAX_ARENA // 4, len(data) * 10)
    interpreter, log = _open(data, upper)
    if interpreter is None:
        upper = MAX_ARENA  # a model that needs more than ten times its size
        interpreter, log = _open(data, upper)
    if interpreter is None:
        return {"runs": False, "reason": tflm_reason(log)}
    arena = min_arena(data, upper)
    out: dict = {"runs": True, "reason": None, "arena_bytes": arena}
    if inputs is None or not len(inputs) or (max_arena is not None and arena > max_arena):
        return out
    detail_in = interpreter.get_input_details(0)
    shape = tuple(int(d) for d in detail_in["shape"])
    predictions = []
    started = time.perf_counter()
    with _captured_stderr() as log:
        try:
            for image in inputs:
                interpreter.set_input(_quantize(image.reshape(shape), detail_in), 0)
                interpreter.invoke()
                predictions.append(int(np.argmax(interpreter.get_output(0))))
        except (RuntimeError, ValueError) as e:
            failure = str(e)
        else:
            failure = None
    if failure is not None:
        return {"runs": False, "reason": tflm_reason([*log, failure]), "arena_bytes": arena}
    out["predictions"] = predictions
    out["seconds_per_image"] = (time.perf_counter() - started) / len(inputs)
    return out


_INPUTS: dict[str, np.ndarray] = {}


def tflm_request(payload: dict) -> dict:
    """The worker's `tflm` op: {model, inputs (an .npy path or None)} -> run_tflm's dict."""
    path = payload.get("inputs")
    inputs = None
    if path:
        if path not in _INPUTS:
            _INPUTS.clear()
            _INPUTS[path] = np.load(path)
        inputs = _INPUTS[path]
    return run_tflm(Path(payload["model"]).read_bytes(), inputs, payload.get("max_arena"))
