"""Convert one Keras model with many schemes, tracing it only once.

`TFLiteConverter.from_keras_model` spends most of its time tracing the model, whatever the
scheme. We export a SavedModel once and convert from it, in parallel worker processes (each
conversion is single-threaded for most of its time). Workers are `python -m quantbench.convert`
subprocesses rather than multiprocessing's, which would re-import the caller's main script
(breaking scripts and notebooks without a main guard); they also keep the converter's C++
log lines off the user's terminal. A scheme that fails is recorded with the
converter's message; the others go on. Files byte-identical to an earlier one of the same
source (e.g. float16 on a QAT model) are marked `identical` instead of being re-measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantbench import atomic, console
from quantbench.schemes import get_scheme


@dataclass
class Conversion:
    scheme: str
    path: Path | None
    seconds: float
    error: str | None = None
    sha256: str | None = None
    identical_to: str | None = None


def export_saved_model(model, directory: Path) -> Path:
    """Export a Keras model's inference function once, with a dynamic batch dimension."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name="input")
    serve = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    tf.saved_model.save(model, str(directory), signatures={"serving_default": serve})
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
    """Convert with one scheme (runs in a worker process); returns (seconds, error)."""
    import quantbench  # noqa: F401  - selects Keras 2 before TensorFlow loads
    import tensorflow as tf

    started = time.perf_counter()
    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        get_scheme(scheme_name).configure(converter, _representative_dataset(calibration_path))
        model_bytes = converter.convert()
    except Exception as e:  # noqa: BLE001 - every converter failure is recorded, not raised
        return time.perf_counter() - started, _error_line(e)
    atomic.write_bytes(out_path, model_bytes)
    return time.perf_counter() - started, None


def _convert_in_subprocess(saved_model_dir: str, scheme_name: str, calibration_path: str | None,
                           out_path: str) -> tuple[float, str | None]:  # fmt: skip
    command = [sys.executable, "-m", "quantbench.convert", saved_model_dir, scheme_name,
               calibration_path or "-", out_path]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        seconds, error = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        # The worker died (out of memory, a converter crash): keep its last words.
        tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        seconds = time.perf_counter() - started
        error = f"converter process exited with code {done.returncode}: {tail[0][:300]}"
    return seconds, error


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
    workers = workers or min(len(scheme_names), os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="quantbench-") as tmp:
        started = time.perf_counter()
        saved_model_dir = export_saved_model(model, Path(tmp) / "saved_model")
        export_seconds = time.perf_counter() - started
        calibration_path = Path(tmp) / "calibration.npy"
        np.save(calibration_path, calibration_images.astype(np.float32))
        jobs = {
            name: (str(saved_model_dir), name,
                   str(calibration_path) if get_scheme(name).needs_representative_dataset else None,
                   str(out_dir / f"{prefix}{name}.tflite"))
            for name in scheme_names
        }  # fmt: skip
        outcomes: dict[str, tuple[float, str | None]] = {}
        with console.progress(f"converting {len(jobs)} schemes", len(jobs)) as advance:
            with ThreadPoolExecutor(workers) as pool:
                futures = {name: pool.submit(_convert_in_subprocess, *args)
                           for name, args in jobs.items()}  # fmt: skip
                for name, future in futures.items():
                    outcomes[name] = future.result()
                    advance()
    conversions: list[Conversion] = []
    seen: dict[str, str] = {}
    for name in scheme_names:
        seconds, error = outcomes[name]
        # The one export serves every scheme: charge each an equal share of it.
        conversion = Conversion(name, None, seconds + export_seconds / len(jobs), error)
        if error is None:
            conversion.path = Path(jobs[name][3])
            conversion.sha256 = hashlib.sha256(conversion.path.read_bytes()).hexdigest()
            conversion.identical_to = seen.setdefault(conversion.sha256, name)
            if conversion.identical_to == name:
                conversion.identical_to = None
        else:
            console.warn(f"{prefix}{name} failed to convert: {error}")
        conversions.append(conversion)
    return conversions


if __name__ == "__main__":
    saved_model, scheme, calibration, out = sys.argv[1:5]
    result = convert_one(saved_model, scheme, None if calibration == "-" else calibration, out)
    print(json.dumps(result))
