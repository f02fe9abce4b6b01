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
from dataclasses import dataclass
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


@dataclass
class Conversion:
    scheme: str
    path: Path | None
    seconds: float
    error: str | None = None
    identical_to: str | None = None  # an earlier scheme that produced the same model


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


def _representative_dataset(calibration_path: str | None):
    if calibration_path is None:
        return None
    calibration_images = np.load(calibration_path)

    def representative_dataset():
        for image in calibration_images:
            yield [image[None, ...]]

    return representative_dataset


def _error_line(exc: BaseException) -> str:
    """The converter's own message, shortened to its informative first lines."""
    text = str(exc).strip() or type(exc).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # MLIR errors bury the reason after "error:"; keep the first such line when present.
    errors = [ln for ln in lines if re.search(r"\berror\b", ln, re.I)]
    picked = errors[0] if errors else lines[0]
    return f"{type(exc).__name__}: {picked[:400]}"


def resolve_scheme(spec: dict[str, Any]):
    """The registry entry and typed parameters a conversion spec `{"name", "params"}` asks for."""
    from quantbench.techniques import TechniqueSpec
    from quantbench.techniques.schemes import conversion_of

    return conversion_of(TechniqueSpec.model_validate(spec))


def convert_one(saved_model_dir: str, spec: dict[str, Any], calibration_path: str | None,
                out_path: str) -> tuple[float, str | None]:  # fmt: skip
    """Convert with one scheme (in a worker process); returns (seconds, error or None)."""
    import tensorflow as tf

    scheme, params = resolve_scheme(spec)
    calibration = calibration_path if scheme.needs_representative_dataset else None
    started = time.perf_counter()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        model_bytes = scheme.convert(converter, _representative_dataset(calibration), params,
                                     source=f"{saved_model_dir}|{calibration}")  # fmt: skip
    except Exception as e:  # noqa: BLE001 - every converter failure is recorded, not raised
        return time.perf_counter() - started, _error_line(e)
    try:
        atomic.write_bytes(out_path, model_bytes)
    except MachineError as e:  # a full disk: the parent stops the run with this message
        return time.perf_counter() - started, e.message
    return time.perf_counter() - started, None


def convert_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `convert` op: {saved_model, spec, calibration, out} -> {seconds, error}."""
    seconds, error = convert_one(payload["saved_model"], payload["spec"], payload["calibration"],
                                 payload["out"])  # fmt: skip
    return {"seconds": seconds, "error": error}


Outcome = tuple[float, "str | None"]  # (seconds, error or None)


def warm_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `warm` op: import TensorFlow (3-4 s) before there is anything to convert."""
    import tensorflow  # noqa: F401

    return {}


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
                error = f"converter process failed ({e.reason})" if e.reason else e.message
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


def convert_all(
    model,
    conversions: list[Any],
    calibration_images: np.ndarray,
    out_dir: Path,
    *,
    prefix: str = "",
    workers: int = 2,  # the caller's Resources.convert_workers; 2 for tests and scripts
    on_progress: Callable[[str, Conversion], None] | None = None,
    timeout: float = CONVERT_TIMEOUT_SECONDS,
) -> list[Conversion]:
    """Convert `model` with each conversion (a TechniqueSpec, or a scheme name) into
    out_dir/<prefix><slug>.tflite (numbered where two specs share a slug).

    `on_progress(f"{prefix}{scheme}", conversion)` is called as each conversion finishes (its
    `identical_to` is set once all have), from a pool thread. Prints nothing: a failure is in
    its `Conversion.error`.
    """
    from quantbench.techniques.schemes import SCHEMES

    specs = [SCHEMES.coerce(c) for c in conversions]
    out_dir.mkdir(parents=True, exist_ok=True)
    # One output per spec, by position: two parametrizations of one scheme (selective of two
    # bases) are two files, so files are named by the spec's slug, numbered where slugs repeat.
    slugs = [SCHEMES.slug_of(spec) for spec in specs]
    out_paths = [str(out_dir / (f"{prefix}{slug}.tflite" if slugs.count(slug) == 1
                                else f"{prefix}{slug}-{i}.tflite"))
                 for i, slug in enumerate(slugs)]  # fmt: skip
    position = {path: i for i, path in enumerate(out_paths)}
    finished: dict[int, Conversion] = {}

    def done(out_path: str, outcome: Outcome) -> None:
        i = position[out_path]
        seconds, error = outcome
        # The one export serves every scheme: charge each an equal share of it.
        share = export_seconds / len(out_paths)
        conversion = Conversion(specs[i].name, None if error else Path(out_path), seconds + share, error)
        finished[i] = conversion
        if on_progress is not None:
            on_progress(f"{prefix}{slugs[i]}", conversion)

    with scratch_dir("convert") as tmp:
        started = time.perf_counter()
        try:
            saved_model_dir = export_saved_model(model, Path(tmp) / "saved_model")
        except Exception as e:
            if says_disk_full(str(e)):
                raise MachineError(f"the disk is full: cannot export the model to {tmp}",
                                   tip=DISK_FULL_TIP) from e  # fmt: skip
            raise
        export_seconds = time.perf_counter() - started
        calibration_path = Path(tmp) / "calibration.npy"
        atomic.save_npy(calibration_path, calibration_images.astype(np.float32))
        jobs = [(spec.model_dump(mode="json"), path) for spec, path in zip(specs, out_paths)]
        outcomes = convert_saved_model(saved_model_dir, jobs, calibration_path, workers,
                                       timeout=timeout, on_done=done)  # fmt: skip
    _stop_if_disk_full({slugs[position[path]]: outcome for path, outcome in outcomes.items()},
                       {slugs[position[path]]: path for path in outcomes})  # fmt: skip
    conversions: list[Conversion] = []
    for i in range(len(specs)):
        conversion = finished[i]
        if conversion.error is None:
            twin = next((c for c in conversions if c.path and c.identical_to is None
                         and same_model(c.path, conversion.path)), None)  # fmt: skip
            conversion.identical_to = twin.scheme if twin else None
        conversions.append(conversion)
    return conversions


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
