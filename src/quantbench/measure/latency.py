"""Per-image latency of a .tflite model on LiteRT, measured the way TFLite's benchmark_model does.

Method (one figure = one model x thread count x delegate):
- a fresh worker process (quantbench.workers.run_once, op `latency`) opens the interpreter, so
  init time, first-invoke time and peak memory are the model's own: not flattered by libraries another
  model already loaded, and not inflated by TensorFlow or the previous model in our process.
  A crashing kernel also takes down only the worker. Cost: ~0.5 s of start-up per figure.
- init = interpreter construction + allocate_tensors (where LiteRT applies XNNPACK);
  first invoke is timed on its own, then warm-up runs until both `warmup_runs` and
  `warmup_seconds` are reached;
- timed runs continue until both `min_runs` and `min_seconds` are reached, or `max_seconds`
  has passed (a reference-kernel model at 100 ms+ per invoke still finishes; `capped` says so
  and `runs` is the count actually made, never fewer than `MIN_RUNS_FLOOR`);
- only `invoke()` is timed. Before each invoke the next real image is copied into the input
  tensor (quantized with the tensor's own scale/zero point for integer-input models, outside
  the timed region), so caches and data-dependent kernels see real inputs, not one constant array;
- the headline is the median, robust to the preemptions of a shared machine; mean, std
  (population, as benchmark_model), min, p90, p95, max are kept. `cpu_ms` (median process
  CPU time per invoke) exposes contention: at 1 thread it equals the median unless other
  processes took the core mid-invoke, which the median cannot reject once an invoke spans
  several scheduler slices (reference kernels at 10 ms+);
- peak memory: the worker resets the kernel's RSS high-water mark after its imports and input
  preparation, so `peak_rss_mb` is what loading and running this model added.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.core import atomic
from quantbench.core.errors import QuantbenchError, first_line

if TYPE_CHECKING:
    from quantbench.core.results import LatencyResult

MIN_RUNS = 50
MIN_SECONDS = 1.0
MAX_SECONDS = 10.0  # cap of the timed loop per figure (slow reference-kernel models)
WARMUP_RUNS = 5
WARMUP_SECONDS = 0.5
MIN_RUNS_FLOOR = 3  # even a capped figure gets a median of at least this many runs
TFLITE_MAGIC = b"TFL3"


class LatencyError(QuantbenchError):
    """A model cannot be opened or run for a latency measurement."""


def default_threads() -> list[int]:
    """1 thread and all cores (just [1] on a single-core machine)."""
    return sorted({1, os.cpu_count() or 1})


def check_model_file(model_path: str | Path) -> Path:
    """The path, if it is an existing TF Lite flatbuffer; a one-line LatencyError otherwise."""
    path = Path(model_path)
    if not path.is_file():
        raise LatencyError(f"model file not found: {path}", tip="pass the path of a .tflite file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise LatencyError(
            f"{path} is not a TF Lite model (no TFL3 flatbuffer identifier)",
            tip="pass a .tflite file written by the TF Lite converter",
        )
    return path


def input_shape(model_path: str | Path) -> tuple[int, ...]:
    """The model's input shape for one image, batch included (e.g. (1, 128, 128, 3))."""
    detail = _open(model_path, 1, True).get_input_details()[0]
    return tuple(int(d) for d in detail["shape"])


# --- the measurement ------------------------------------------------------------------------


def _open(model_path, threads: int, xnnpack: bool):
    from quantbench.measure import litert

    try:
        return litert.open_interpreter(model_path, threads, xnnpack)
    except (ValueError, RuntimeError) as e:
        raise LatencyError(f"LiteRT cannot open {model_path}: {first_line(e)}",
                           tip="is it a valid .tflite file?") from e  # fmt: skip


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _loop(invoke, set_input, n_inputs: int, start: int, min_runs: int, min_seconds: float,
          max_seconds: float, floor: int) -> tuple[list[float], list[float], bool]:  # fmt: skip
    """Invoke until min_runs and min_seconds are both reached, or max_seconds (after `floor`
    runs) has passed. Returns wall and process-CPU ms per invoke, and whether the cap cut the
    runs short."""
    wall: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    elapsed = 0.0
    i = start
    while len(wall) < min_runs or elapsed < min_seconds:
        if elapsed >= max_seconds and len(wall) >= floor:
            break
        set_input(i % n_inputs)
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        invoke()
        t1, c1 = time.perf_counter_ns(), time.process_time_ns()
        wall.append((t1 - t0) / 1e6)
        cpu.append((c1 - c0) / 1e6)
        i += 1
        elapsed = time.perf_counter() - started
    return wall, cpu, len(wall) < min_runs


def run_measurement(model_path: str | Path, inputs: np.ndarray, threads: int, xnnpack: bool,
                    min_runs: int, min_seconds: float, max_seconds: float, warmup_runs: int,
                    warmup_seconds: float, track_memory: bool,
                    runtime: str = "interpreter") -> dict[str, Any]:  # fmt: skip
    """The measurement itself, in the calling process; returns LatencyResult fields.

    `runtime` names the LiteRT API (runtimes.RUNTIMES); `other_cpu` is the CPU other
    processes used during the timed loop, in cores (busy.py)."""
    from quantbench.measure import busy, litert
    from quantbench.measure.runtimes import RuntimeOpenError, open_session

    tracked = track_memory and _reset_peak_rss()
    rss_before = _rss_kb("VmRSS") if tracked else None

    t0 = time.perf_counter()
    try:
        session = open_session(runtime, model_path, threads, xnnpack)
    except RuntimeOpenError as e:
        verb, tip = ("open", "is it a valid .tflite file?") if e.stage == "open" else \
            ("prepare", "re-run with -v")  # fmt: skip
        raise LatencyError(f"LiteRT cannot {verb} {model_path}: {e}", tip=tip) from e
    init_ms = (time.perf_counter() - t0) * 1e3
    detail = session.input_detail
    if tuple(int(d) for d in detail["shape"][1:]) != tuple(inputs.shape[1:]):
        raise LatencyError(
            f"inputs of shape {tuple(inputs.shape[1:])} do not fit the model's input "
            f"{tuple(int(d) for d in detail['shape'])}", tip="use the model's image size")  # fmt: skip

    def set_input(k: int) -> None:
        # Quantized one image at a time, outside the timed region: no extra copies in memory.
        session.set_input(litert.quantize_input(inputs[k : k + 1], detail))

    invoke = session.invoke
    set_input(0)
    t0 = time.perf_counter_ns()
    invoke()
    first_invoke_ms = (time.perf_counter_ns() - t0) / 1e6
    # Warm-up: the first invoke counts as one; cap it like the timed loop.
    warmup, _, _ = _loop(invoke, set_input, len(inputs), 1, max(warmup_runs - 1, 0),
                      warmup_seconds, max(warmup_seconds, max_seconds / 5), 0)  # fmt: skip
    before = busy.sample()
    times, cpu_times, capped = _loop(invoke, set_input, len(inputs), 1 + len(warmup), min_runs,
                          min_seconds, max_seconds, min(MIN_RUNS_FLOOR, min_runs))  # fmt: skip
    other = busy.other_cpu(before, busy.sample())

    delegated = session.delegated_ops()
    peak = _rss_kb("VmHWM") if tracked else None
    a = np.asarray(times)
    return {
        "threads": int(threads),
        "delegate": "xnnpack" if xnnpack else "none",
        "runtime": runtime,
        "runs": len(times),
        "warmup_runs": 1 + len(warmup),
        "median_ms": float(np.median(a)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std()),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "p90_ms": float(np.percentile(a, 90)),
        "p95_ms": float(np.percentile(a, 95)),
        "init_ms": init_ms,
        "first_invoke_ms": first_invoke_ms,
        "cpu_ms": float(np.median(cpu_times)),
        "peak_rss_mb": (peak - rss_before) / 1024 if peak and rss_before else None,
        "capped": capped,
        "delegated_ops": delegated[0] if delegated else None,
        "total_ops": delegated[1] if delegated else None,
        "other_cpu": other,
        "busy": busy.is_busy(other, threads),
    }


def _run_in_worker(spec: dict[str, Any], inputs: np.ndarray) -> dict[str, Any]:
    from quantbench.workers import WorkerError, run_once, scratch_dir

    with scratch_dir("latency") as tmp:
        inputs_path = Path(tmp) / "inputs.npy"
        atomic.save_npy(inputs_path, np.ascontiguousarray(inputs, dtype=np.float32))
        # Generous: warm-up and timed loops are capped; this only guards against a hung kernel.
        timeout = 120 + 3 * (spec["max_seconds"] + spec["warmup_seconds"])
        try:
            payload = {**spec, "inputs": str(inputs_path)}
            return run_once("latency", payload, timeout, name="latency")
        except WorkerError as e:
            if not e.reason:  # not a crash or a hang: a bug in the handler
                raise LatencyError(e.message, e.tip) from None
            raise LatencyError(f"latency worker for {spec['model']} failed ({e.reason})"
                               + (f": {e.detail}" if e.detail else ""),
                               tip="re-run with -v; the model may crash or hang LiteRT") from None  # fmt: skip


def measure(
    model_path: str | Path,
    inputs: np.ndarray,
    threads: int,
    xnnpack: bool = True,
    min_runs: int = MIN_RUNS,
    min_seconds: float = MIN_SECONDS,
    warmup_runs: int = WARMUP_RUNS,
    warmup_seconds: float = WARMUP_SECONDS,
    max_seconds: float = MAX_SECONDS,
    isolate: bool = True,
    input_source: str | None = None,
    runtime: str = "interpreter",
) -> LatencyResult:
    """One latency figure of `model_path` for float32 preprocessed `inputs` (N, H, W, C).

    Images are cycled through, one per invoke. `isolate=False` measures in this process
    (faster, but init and memory then depend on what ran before; `peak_rss_mb` is None).
    `input_source` describes the inputs in the result (default: "N images"). `runtime`: the
    LiteRT API (runtimes.RUNTIMES: "interpreter", "compiled").
    """
    from quantbench.core.environment import cpu_model
    from quantbench.core.results import LatencyResult

    path = check_model_file(model_path)
    inputs = np.asarray(inputs, dtype=np.float32)
    if inputs.ndim < 2 or len(inputs) == 0:
        raise LatencyError("latency needs at least one input image (N, H, W, C)")
    if threads < 1 or min_runs < 1:
        raise LatencyError(f"threads and min_runs must be >= 1, got {threads} and {min_runs}")
    spec = {
        "model": str(path), "threads": int(threads), "xnnpack": bool(xnnpack),
        "min_runs": int(min_runs), "min_seconds": float(min_seconds),
        "max_seconds": float(max(max_seconds, min_seconds)), "warmup_runs": int(warmup_runs),
        "warmup_seconds": float(warmup_seconds), "runtime": runtime,
    }  # fmt: skip
    if isolate:
        fields = _run_in_worker(spec, inputs)
    else:
        spec.pop("model")
        fields = run_measurement(path, inputs, track_memory=False, **spec)
    fields["device"] = cpu_model()
    fields["inputs"] = input_source or f"{len(inputs)} images"
    return LatencyResult(**fields)


def measure_all(
    model_path: str | Path,
    inputs: np.ndarray,
    threads_list: list[int] | None = None,
    xnnpack_modes: tuple[bool, ...] = (True,),
    runtimes: list[str] | tuple[str, ...] = ("interpreter",),
    **options: Any,
) -> list[LatencyResult]:
    """`measure` for every runtime, XNNPACK mode and thread count (default: 1 and all cores)."""
    threads_list = threads_list or default_threads()
    return [
        measure(model_path, inputs, threads, xnnpack=xnnpack, runtime=runtime, **options)
        for runtime in runtimes
        for xnnpack in xnnpack_modes
        for threads in threads_list
    ]


def measure_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `latency` op: one measurement (LatencyResult fields) in a fresh process."""
    spec = dict(payload)
    inputs = np.load(spec.pop("inputs"))
    model = spec.pop("model")
    return run_measurement(model, inputs, track_memory=True, **spec)
