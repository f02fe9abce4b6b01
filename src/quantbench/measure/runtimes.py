"""The LiteRT APIs a latency figure can be measured through: one small seam, one entry each.

- `interpreter`: `ai_edge_litert.interpreter.Interpreter`, what quantbench evaluates with and
  what C++ benchmark_model runs. `num_threads` goes to XNNPACK's thread pool *and* to the
  builtin kernels' own pool (ops XNNPACK did not take).
- `compiled`: `ai_edge_litert.compiled_model.CompiledModel` (LiteRT's newer API, the one
  `litert-benchmark` times), on the CPU accelerator with `CpuOptions(num_threads=...)`.
  `num_threads` sizes XNNPACK's pool; ops outside XNNPACK run on the calling thread.

The two agree on fully delegated models. A partly delegated model (dynamic range: hybrid
DEPTHWISE_CONV_2D ops stay outside XNNPACK, 11 partitions) hands work between the two pools
at every partition boundary through the Interpreter; when other processes hold a core, one
pool's threads wait for the other's, which does not happen with CompiledModel
(benchmarks/runtimes.py measures both side by side).

A third runtime is one more `Runtime` entry whose `open(path, threads, xnnpack)` returns a
`Session`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from quantbench.core.errors import first_line

DEFAULT_RUNTIME = "interpreter"


class Session(Protocol):
    """One opened model, ready for single-image invokes."""

    input_detail: dict[str, Any]  # dtype, shape (batch 1), quantization (scale, zero point)
    output_detail: dict[str, Any]

    def set_input(self, x: np.ndarray) -> None:
        """`x`: one image already in the input tensor's dtype (litert.quantize_input)."""

    def invoke(self) -> None: ...

    def output(self) -> np.ndarray:
        """The raw output tensor (the model's dtype, batch 1)."""

    def delegated_ops(self) -> tuple[int, int] | None:
        """(ops XNNPACK took over, ops in the model), None when the API does not say."""


@dataclass(frozen=True)
class Runtime:
    name: str
    description: str
    open: Callable[[str | Path, int, bool], Session]


class RuntimeOpenError(Exception):
    """LiteRT refused the model (the caller turns it into a LatencyError)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage  # "open" or "prepare"


# --- the Interpreter --------------------------------------------------------------------------


class InterpreterSession:
    def __init__(self, path: str | Path, threads: int, xnnpack: bool):
        from quantbench.measure import litert

        try:
            self.interpreter = litert.open_interpreter(path, threads, xnnpack)
        except (ValueError, RuntimeError) as e:
            raise RuntimeOpenError("open", first_line(e)) from e
        self.xnnpack = xnnpack
        detail = self.interpreter.get_input_details()[0]
        try:
            if detail["shape"][0] != 1:  # latency is per image: a batch of one
                self.interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise RuntimeOpenError("prepare", first_line(e)) from e
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self.interpreter.get_output_details()[0]
        self._in, self._out = self.input_detail["index"], self.output_detail["index"]
        self.invoke = self.interpreter.invoke

    def set_input(self, x: np.ndarray) -> None:
        self.interpreter.set_tensor(self._in, x)

    def output(self) -> np.ndarray:
        return self.interpreter.get_tensor(self._out)

    def delegated_ops(self) -> tuple[int, int] | None:
        from quantbench.measure.explain import delegated_ops

        return delegated_ops(self.interpreter) if self.xnnpack else None


# --- CompiledModel ----------------------------------------------------------------------------


class CompiledSession:
    def __init__(self, path: str | Path, threads: int, xnnpack: bool):
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_kernel_mode import CpuKernelMode
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import CpuOptions, Options

        from quantbench.measure import litert

        # CompiledModel's tensor details carry no quantization parameters: read them (and the
        # shapes) from the builtin-kernel Interpreter, which costs ~1 ms and no delegate.
        try:
            probe = litert.open_interpreter(path, 1, xnnpack=False)
        except (ValueError, RuntimeError) as e:
            raise RuntimeOpenError("open", first_line(e)) from e
        input_detail, output_detail = probe.get_input_details()[0], probe.get_output_details()[0]
        del probe
        mode = CpuKernelMode.XNNPACK if xnnpack else CpuKernelMode.BUILTIN
        options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                          cpu_options=CpuOptions(num_threads=int(threads), kernel_mode=mode))  # fmt: skip
        try:
            self.model = CompiledModel.from_file(str(path), options=options)
            if input_detail["shape"][0] != 1:
                self.model.resize_input_tensor(0, [1, *input_detail["shape"][1:]], strict=False)
            self._inputs = self.model.create_input_buffers(0)
            self._outputs = self.model.create_output_buffers(0)
        except (ValueError, RuntimeError) as e:
            raise RuntimeOpenError("prepare", first_line(e)) from e
        shape = lambda d: np.array([1, *[int(s) for s in d["shape"][1:]]])  # noqa: E731
        self.input_detail = {**input_detail, "shape": shape(input_detail)}
        self.output_detail = {**output_detail, "shape": shape(output_detail)}
        self._out_dtype = np.dtype(output_detail["dtype"])
        self._out_count = int(np.prod(self.output_detail["shape"]))
        self._run = self.model.run_by_index

    def set_input(self, x: np.ndarray) -> None:
        self._inputs[0].write(x)

    def invoke(self) -> None:
        self._run(0, self._inputs, self._outputs)

    def output(self) -> np.ndarray:
        values = self._outputs[0].read(self._out_count, self._out_dtype)
        return values.reshape(tuple(self.output_detail["shape"]))

    def delegated_ops(self) -> tuple[int, int] | None:
        return None  # CompiledModel does not expose its execution plan


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in [
        Runtime("interpreter", "LiteRT Interpreter (what quantbench evaluates with)",
                InterpreterSession),
        Runtime("compiled", "LiteRT CompiledModel on the CPU accelerator", CompiledSession),
    ]
}  # fmt: skip


def open_session(runtime: str, path: str | Path, threads: int, xnnpack: bool) -> Session:
    return RUNTIMES[runtime].open(path, threads, xnnpack)


def parse_runtimes(text: str | None) -> list[str]:
    """'interpreter,compiled' -> ['interpreter', 'compiled']; a one-line ConfigError otherwise."""
    from quantbench.core.errors import ConfigError
    from quantbench.core.suggest import did_you_mean

    if text is None:
        return [DEFAULT_RUNTIME]
    names = [item.strip().lower() for item in text.split(",") if item.strip()]
    for name in names:
        if name not in RUNTIMES:
            raise ConfigError(f"unknown runtime {name!r}{did_you_mean(name, list(RUNTIMES))}",
                              tip=f"choose from: {', '.join(RUNTIMES)}")  # fmt: skip
    if not names:
        raise ConfigError(f"bad runtime list {text!r}", tip=f"choose from: {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(names))
