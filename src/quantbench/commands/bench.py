"""`quantbench bench`: the latency of any .tflite by itself, with its inputs and notes.

Built on latency.py's measurement; this module adds what a standalone file needs: parsing the
command's lists, inputs (real photos from a folder, or random inputs spanning the input
tensor's range), and one JSON-ready document with every figure and the explanations.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.measure.latency import (  # noqa: F401 - the measurement this command wraps
    LatencyError, check_model_file, default_threads, input_shape, measure, measure_all, _open,
)

if TYPE_CHECKING:
    from quantbench.ml.preprocess import Preprocessing
    from quantbench.core.results import LatencyResult

SCALING_RANGES = {"-1..1": (-1.0, 1.0), "0..1": (0.0, 1.0), "0..255": (0.0, 255.0),
                  "imagenet": (-2.12, 2.64)}  # fmt: skip
DELEGATES = {"xnnpack": True, "none": False}


def parse_threads(text: str | None) -> list[int]:
    """'1,2' -> [1, 2]; None -> default_threads(); anything else is a one-line ConfigError."""
    from quantbench.core.errors import ConfigError

    if text is None:
        return default_threads()
    try:
        threads = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        raise ConfigError(f"bad thread list {text!r}", tip="comma-separated counts >= 1, e.g. 1,2")
    return list(dict.fromkeys(threads))


def parse_delegates(text: str) -> tuple[bool, ...]:
    """'xnnpack,none' -> (True, False)."""
    from quantbench.core.errors import ConfigError

    names = [item.strip().lower() for item in text.split(",") if item.strip()]
    if not names or any(n not in DELEGATES for n in names):
        raise ConfigError(f"bad delegate list {text!r}", tip="comma-separated: xnnpack, none")
    return tuple(DELEGATES[n] for n in dict.fromkeys(names))


def random_inputs(model_path: str | Path, count: int = 16, scaling_range=(-1.0, 1.0),
                  seed: int = 0) -> np.ndarray:  # fmt: skip
    """float32 inputs drawn uniformly in the input tensor's range.

    Float inputs: `scaling_range` (the preprocessing's, default -1..1). Integer inputs: the
    float range the tensor's scale and zero point can represent, so after quantization the
    values span the whole integer type.
    """
    interpreter = _open(model_path, 1, True)
    detail = interpreter.get_input_details()[0]
    low, high = scaling_range
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail["quantization"]
        if scale:
            info = np.iinfo(dtype)
            low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    shape = [count, *[int(d) for d in detail["shape"][1:]]]
    rng = np.random.default_rng(seed)
    return rng.uniform(low, high, shape).astype(np.float32)


def load_inputs(data_dir: str | Path, preprocessing: Preprocessing, count: int = 16) -> np.ndarray:
    """Up to `count` real images from a folder (sub-folders taken in turn), preprocessed."""
    from quantbench.ml.preprocess import UnreadableImage, load_image

    root = Path(data_dir)
    if not root.is_dir():
        raise LatencyError(f"image folder not found: {root}", tip="pass --data DIR with images")
    from quantbench.ml.data import class_folders, list_images

    # The same files `run` and `quantize` would read: no hidden ones, no links back into DIR.
    groups = [list_images(d, root)[0] for d in class_folders(root)[0]]
    groups.append(sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")))
    # Round-robin over class folders so a few images still cover several classes.
    ordered = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
    images = []
    for path in ordered:
        try:
            images.append(load_image(path, preprocessing.image_size))
        except UnreadableImage:
            continue
        if len(images) == count:
            break
    if not images:
        raise LatencyError(f"no readable images in {root}", tip="pass a folder of JPEG/PNG files")
    return preprocessing.scale(np.stack(images))


def bench(
    model_path: str | Path,
    threads_list: list[int] | None = None,
    xnnpack_modes: tuple[bool, ...] = (True,),
    data_dir: str | Path | None = None,
    preprocessing: Preprocessing | None = None,
    images: int = 16,
    runtimes: list[str] | tuple[str, ...] = ("interpreter",),
    wait_quiet: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Benchmark any .tflite by itself: real images from `data_dir`, else random inputs.

    Returns one JSON-ready document: the model, what was fed, every figure, and the notes of
    `explain` on what runs where. `wait_quiet`: re-measure busy figures once the machine is
    quiet, waiting at most this many seconds in all (busy.remeasure).
    """
    from quantbench.measure import explain
    from quantbench.core.environment import cpu_model
    from quantbench.ml.preprocess import Preprocessing

    path = check_model_file(model_path)
    shape = input_shape(path)
    if len(shape) != 4:
        raise LatencyError(f"{path} takes input of shape {shape}, not an image batch (N,H,W,C)")
    if preprocessing is None:
        preprocessing = Preprocessing(int(shape[1]))
    summary = explain.op_summary(path)
    if preprocessing.image_size != shape[1]:
        raise LatencyError(f"--image-size {preprocessing.image_size} does not match the model's "
                           f"input {shape[1]}x{shape[2]}", tip="omit --image-size")  # fmt: skip
    if data_dir is not None:
        inputs = load_inputs(data_dir, preprocessing, images)
        source = f"{len(inputs)} images from {data_dir} (scaling {preprocessing.scaling})"
    else:
        low, high = SCALING_RANGES[preprocessing.scaling]
        inputs = random_inputs(path, images, (low, high))
        if summary["input_dtype"] == "float32":
            source = f"{images} random inputs, uniform in {low:g}..{high:g} (no --data)"
        else:
            source = (f"{images} random inputs spanning the {summary['input_dtype']} input's "
                      f"whole range (no --data)")  # fmt: skip
    results = measure_all(path, inputs, threads_list, xnnpack_modes, runtimes,
                          input_source=source, **options)  # fmt: skip
    remeasured: list[str] = []
    if wait_quiet is not None:
        from quantbench.measure.busy import remeasure

        def again(old: LatencyResult) -> LatencyResult:
            return measure(path, inputs, old.threads, xnnpack=old.delegate == "xnnpack",
                           runtime=old.runtime, input_source=old.inputs, **options)  # fmt: skip

        results, line = remeasure(results, again, time.monotonic() + wait_quiet)
        remeasured = [line] if line else []
    return {
        "model": str(path),
        "size_bytes": path.stat().st_size,
        "device": cpu_model(),
        "cpu_cores": os.cpu_count() or 1,
        "input_shape": list(shape),
        "input_dtype": summary["input_dtype"],
        "inputs": source,
        "ops": summary["total_ops"],
        "delegated_ops": summary["delegated_ops"],
        "results": [r.model_dump() for r in results],
        "notes": explain.explain(path, results) + remeasured,
    }
