"""Convert one Keras model with many schemes, tracing it only once.

`TFLiteConverter.from_keras_model` traces the model and `tf.saved_model.save(model)` writes
every Keras layer's functions, which the converter then spends most of its time loading back
(measured: 7 of 9 s). We export a lean SavedModel once, holding only the variables and the one
inference function, so each conversion costs about 2 s. Conversions are `convert` requests to a
few long-lived workers (quantbench.workers), each importing TensorFlow once and converting
several schemes: a converter crash or hang costs one scheme, not the run, and the converter's
C++ log lines stay off the terminal. A scheme that fails is recorded with the converter's
message; the others go on. Files byte-identical to an earlier one of the same source (e.g.
float16 on a QAT model) are marked `identical` instead of being measured again.
"""

from __future__ import annotations

import queue
import re
import time
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from quantbench.core import atomic
from quantbench.core.errors import MachineError, displayable, says_disk_full
from quantbench.workers import Worker, WorkerError, scratch_dir

# Per conversion. MobileNetV2 0.35 at 128 px takes 2.1-5.3 s a scheme here (benchmarks/README),
# int16x8 the slowest; 600 s is >100x that, so it only fires on a hung converter, never on a
# large model on a loaded machine.
CONVERT_TIMEOUT_SECONDS = 600.0
# How a conversion whose worker crashed or hung is reported: not a property of the model, so
# the store does not keep it (engine/stages/convert.py).
WORKER_FAILURE = "converter process failed"


@dataclass
class Conversion:
    scheme: str
    path: Path | None
    seconds: float
    error: str | None = None
    identical_to: str | None = None  # an earlier scheme that produced the same model
    # What the file holds where it differs from what was asked, read back from the file (a
    # scheme made from a .tflite: Scheme.convert_tflite), one sentence each.
    notes: list[str] = field(default_factory=list)


def export_saved_model(model, directory: Path) -> Path:
    """Export a Keras model's inference function once, with a dynamic batch dimension."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="input")
    module = tf.Module()
    module.model_variables = list(model.variables)  # tracked, so the export holds their values

    @tf.function(input_signature=[spec], autograph=False)  # plain Keras call: nothing to convert
    def serve(x):
        return model(x, training=False)

    module.serve = serve
    signatures = {"serving_default": module.serve.get_concrete_function()}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return directory


Outcome = tuple[float, "str | None"]  # (seconds, error or None)


class _Job(Future):
    """A pool request; `started` is when a worker took it, so a failed job's seconds are its
    own and not its wait in the queue behind the others."""

    started: float | None = None


class ConverterPool:
    """Converter workers that outlive one batch of jobs: each imports TensorFlow once and keeps
    the calibrated model it made (calibrated_model's memo) for the next request, so a search
    that converts candidates round after round pays neither again. Each worker is owned by one
    long-lived thread of the pool (a worker dies with the thread that started it).

    Requests are served in the order they come, by whichever worker is free."""

    def __init__(self, count: int):
        self.count = max(1, count)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def _serve(self) -> None:
        with Worker("convert") as worker:
            while (item := self._queue.get()) is not None:
                future, op, payload, timeout = item
                if not future.set_running_or_notify_cancel():
                    continue
                future.started = time.perf_counter()
                try:
                    future.set_result(worker.request(op, payload, timeout))
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    future.set_exception(e)
            # Its files are written (atomically) and its replies in: nothing is left to save,
            # so the worker is killed rather than waited for through TensorFlow's teardown
            # (0.8 s for a pool of two, on every batch of conversions).
            worker.kill()

    def warm(self) -> None:
        """Start every worker now (TensorFlow imported), while the caller prepares the jobs."""
        for _ in range(self.count):
            self.submit("warm", {}, CONVERT_TIMEOUT_SECONDS)

    def submit(self, op: str, payload: dict[str, Any], timeout: float) -> Future:
        """The worker op's reply, as a future (WorkerError on a crash or timeout)."""
        while len(self._threads) < self.count:
            thread = threading.Thread(target=self._serve, name="quantbench-convert", daemon=True)
            thread.start()
            self._threads.append(thread)
        future = _Job()
        self._queue.put((future, op, payload, timeout))
        return future

    def convert(self, saved_model_dir: str | Path, jobs: list[tuple[dict[str, Any], str | Path]],
                calibration_path: str | Path | None, *, timeout: float = CONVERT_TIMEOUT_SECONDS,
                on_done: Callable[[str, Outcome], None] | None = None) -> dict[str, Outcome]:  # fmt: skip
        """Convert an exported SavedModel for each job (spec, out_path); see convert_saved_model."""
        futures = []
        for spec, out_path in jobs:
            payload = {"saved_model": str(saved_model_dir), "spec": spec, "out": str(out_path),
                       "calibration": None if calibration_path is None else str(calibration_path)}  # fmt: skip
            futures.append((str(out_path), self.submit("convert", payload, timeout)))
        outcomes: dict[str, Outcome] = {}
        for out_path, future in futures:
            try:
                reply = future.result()
                outcome: Outcome = (reply["seconds"], reply["error"])
            except WorkerError as e:
                error = f"{WORKER_FAILURE} ({e.reason})" if e.reason else e.message
                seconds = time.perf_counter() - (future.started or time.perf_counter())
                outcome = (seconds, error + (f": {e.detail}" if e.detail else ""))
            outcomes[out_path] = outcome
            if on_done is not None:
                on_done(out_path, outcome)
        return outcomes

    def close(self) -> None:
        """Cancel what no worker has started (an exception or a stop signal left the caller),
        then let each worker finish its request and go."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> ConverterPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def convert_saved_model(
    saved_model_dir: str | Path,
    jobs: list[tuple[dict[str, Any], str | Path]],
    calibration_path: str | Path | None,
    workers: int = 2,  # the caller's Resources.convert_workers; 2 for tests and scripts
    *,
    timeout: float = CONVERT_TIMEOUT_SECONDS,
    on_done: Callable[[str, Outcome], None] | None = None,
) -> dict[str, Outcome]:
    """Convert an exported SavedModel for each job (spec, out_path) in a few workers.

    Returns {out_path: (seconds, error or None)}. A converter crash or a conversion slower than
    `timeout` seconds fails that job with the reason; the others go on. `on_done(out_path,
    outcome)` is called as each finishes, in job order.
    """
    count = max(1, min(workers, len(jobs)))
    with ConverterPool(count) as pool:
        return pool.convert(saved_model_dir, jobs, calibration_path, timeout=timeout, on_done=on_done)


CONVERSION_METADATA = b"CONVERSION_METADATA"  # where the converter records the options asked for


def _without_conversion_metadata(path: Path) -> bytes:
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        if entry.name == CONVERSION_METADATA:
            model.buffers[entry.buffer].data = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def same_model(a: Path, b: Path, max_size_difference: int = 1024) -> bool:
    """Whether two .tflite files hold the same model. Equal bytes, or equal once the converter's
    record of the requested options is blanked: float16 asked of a QAT model yields DEFAULT's
    int8 model with a different record, and is no new variant."""
    data_a, data_b = a.read_bytes(), b.read_bytes()
    if data_a == data_b:
        return True
    if abs(len(data_a) - len(data_b)) > max_size_difference:
        return False
    return _without_conversion_metadata(a) == _without_conversion_metadata(b)


DISK_FULL_TIP = ("free some space on that file system, or pass --output-dir (or set TMPDIR) to "
                 "a folder on another disk")  # fmt: skip


def _stop_if_disk_full(outcomes: dict[str, tuple[float, str | None]], out_paths: dict[str, str]):
    """A full disk fails every scheme alike, and is no property of the model: stop the run
    with that message rather than record "cannot convert" rows (the converter writes its own
    temporary files too, so its error text is the only sign)."""
    for name, (_, error) in outcomes.items():
        if says_disk_full(error):
            where = displayable(Path(out_paths[name]).parent)
            message = error if error.startswith("the disk is full") else (
                f"the disk is full: converting {name} into {where} failed: {error}")
            raise MachineError(message, tip=DISK_FULL_TIP)
