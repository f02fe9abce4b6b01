"""Convert one Keras model with many schemes, tracing it only once.

`TFLiteConverter.from_keras_model` traces the model and `tf.saved_model.save(model)` writes
every Keras layer's functions, which the converter then spends most of its time loading back
(measured: 7 of 9 s). We export a lean SavedModel once, holding only the variables and the one
inference function, so each conversion costs about 2 s. Conversions run in a few worker
processes (`python -m quantbench.convert`), each handling several schemes: a converter crash
costs one scheme, not the run, and the converter's C++ log lines stay off the terminal.
A scheme that fails is recorded with the converter's message; the others go on. Files
byte-identical to an earlier one of the same source (e.g. float16 on a QAT model) are marked
`identical` instead of being measured again.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantbench import atomic, children, console
from quantbench.errors import MachineError, displayable, says_disk_full
from quantbench.schemes import get_scheme


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


def convert_one(saved_model_dir: str, scheme_name: str, calibration_path: str | None,
                out_path: str) -> tuple[float, str | None]:  # fmt: skip
    """Convert with one scheme (in a worker process); returns (seconds, error or None)."""
    import quantbench  # noqa: F401  - selects Keras 2 before TensorFlow loads
    import tensorflow as tf

    started = time.perf_counter()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        scheme = get_scheme(scheme_name)
        scheme.configure(converter, _representative_dataset(calibration_path), scheme.params())
        model_bytes = converter.convert()
    except Exception as e:  # noqa: BLE001 - every converter failure is recorded, not raised
        return time.perf_counter() - started, _error_line(e)
    try:
        atomic.write_bytes(out_path, model_bytes)
    except MachineError as e:  # a full disk: the parent stops the run with this message
        return time.perf_counter() - started, e.message
    return time.perf_counter() - started, None


def _run_worker(saved_model_dir: str, calibration_path: str,
                jobs: list[tuple[str, str]]) -> dict[str, tuple[float, str | None]]:  # fmt: skip
    """Convert `jobs` [(scheme, out_path)] in one worker process; survive its crashes."""
    outcomes: dict[str, tuple[float, str | None]] = {}
    while len(outcomes) < len(jobs):
        pending = [job for job in jobs if job[0] not in outcomes]
        request = {"saved_model": saved_model_dir, "calibration": calibration_path, "jobs": pending}
        started = time.perf_counter()
        done = children.run([sys.executable, "-m", "quantbench.convert"],
                            input=json.dumps(request))  # fmt: skip
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                reply = json.loads(line)
                outcomes[reply["scheme"]] = (reply["seconds"], reply["error"])
        if done.returncode != 0:
            # The worker died (a converter crash, out of memory): charge the scheme it was on.
            crashed = next(name for name, _ in pending if name not in outcomes)
            tail = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:] or ["no output"]
            outcomes[crashed] = (time.perf_counter() - started,
                                 f"converter process died (exit code {done.returncode}): "
                                 f"{tail[0].strip()[:300]}")  # fmt: skip
    return outcomes


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
    scheme_names: list[str],
    calibration_images: np.ndarray,
    out_dir: Path,
    *,
    prefix: str = "",
    workers: int | None = None,
) -> list[Conversion]:
    """Convert `model` with each scheme into out_dir/<prefix><scheme>.tflite."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantbench-") as tmp:
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
        out_paths = {name: str(out_dir / f"{prefix}{name}.tflite") for name in scheme_names}
        jobs = list(out_paths.items())
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        # Round-robin: each worker imports TensorFlow once and converts several schemes.
        groups = [jobs[i::workers] for i in range(workers)]
        outcomes: dict[str, tuple[float, str | None]] = {}
        with console.progress(f"converting {len(jobs)} schemes", len(groups)) as advance:
            with ThreadPoolExecutor(workers) as pool:
                futures = [pool.submit(_run_worker, str(saved_model_dir), str(calibration_path), g)
                           for g in groups]  # fmt: skip
                for future in futures:
                    outcomes.update(future.result())
                    advance()
    _stop_if_disk_full(outcomes, out_paths)
    conversions: list[Conversion] = []
    for name in scheme_names:
        seconds, error = outcomes[name]
        # The one export serves every scheme: charge each an equal share of it.
        conversion = Conversion(name, None, seconds + export_seconds / len(jobs), error)
        if error is None:
            conversion.path = Path(out_paths[name])
            twin = next((c for c in conversions if c.path and c.identical_to is None
                         and same_model(c.path, conversion.path)), None)  # fmt: skip
            conversion.identical_to = twin.scheme if twin else None
        else:
            console.warn(f"{prefix}{name} failed to convert: {error}")
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


def _worker_main() -> None:
    """`python -m quantbench.convert`: a JSON request on stdin, one JSON line per scheme out."""
    request = json.loads(sys.stdin.read())
    for scheme, out_path in request["jobs"]:
        calibration = request["calibration"] if get_scheme(scheme).needs_representative_dataset else None
        seconds, error = convert_one(request["saved_model"], scheme, calibration, out_path)
        print(json.dumps({"scheme": scheme, "seconds": seconds, "error": error}), flush=True)


if __name__ == "__main__":
    _worker_main()
