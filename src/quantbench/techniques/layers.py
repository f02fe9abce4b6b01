"""Per-layer error of an integer conversion against the float model, named by Keras layer.

TF's `QuantizationDebugger` runs a debug model in which every quantized op is followed by a
NumericVerify op that compares its dequantized output with the float op's output on the same
(quantized) input, so each figure is that op's own error, not the error accumulated before
it. The headline figure is RMSE / scale: the error in units of the output's quantization step;
uniform rounding alone gives sqrt(1/12) = 0.29, so a healthy layer sits near 0.29 and a broken
one far above (the TF debugger guide's threshold for "suspect" is 0.7).

The debugger names each op by its output tensor, e.g.
`mobilenet_v2/block_1_depthwise_relu/Relu6;mobilenet_v2/block_1_depthwise_BN/FusedBatchNormV3;
mobilenet_v2/block_1_depthwise/depthwise` (tensorflow#46073: no map back to Keras). Our lean
SavedModel export (convert.export_saved_model) calls the Keras model under its name scope, so
each `;`-separated part is `<model>/<layer>/<op>`: the layer is the path component that is a
Keras layer name, and of a fused op's layers we name the one holding the kernel (the conv, not
its batch norm or activation).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core.results import LayerAnalysis, LayerError

ANALYSIS_TIMEOUT_SECONDS = 900.0
DEBUG_IMAGES = 32  # images the debug model runs on: the statistics settle well before that
CSV_FIELDS = ("rank", "layer", "op", "rmse_scale", "channel_error", "mean_abs_error",
              "max_abs_error", "mse", "scale", "tensor")  # fmt: skip
RANK_BY = "rmse_scale"


def keras_layers(model: Any) -> tuple[set[str], set[str]]:
    """(every layer name, nested models included; those that hold a kernel)."""
    names: set[str] = set()
    kernels: set[str] = set()

    def walk(layer: Any) -> None:
        names.add(layer.name)
        if any(hasattr(layer, a) for a in ("kernel", "depthwise_kernel", "embeddings")):
            kernels.add(layer.name)
        for child in getattr(layer, "layers", []) or []:
            walk(child)

    for layer in model.layers:
        walk(layer)
    return names, kernels


def output_layers(model: Any) -> list[str]:
    """The layers that produce the model's outputs (their tensors take the signature's name)."""
    names = list(getattr(model, "output_names", None) or [])
    return names or [model.layers[-1].name]


def keras_layer_of(tensor_name: str, names: set[str], kernels: set[str],
                   outputs: list[str] | None = None) -> str | None:  # fmt: skip
    """The Keras layer a TF Lite tensor name comes from (None: no part names a layer).

    The model's output tensor is named after the serving signature (`StatefulPartitionedCall:0`),
    not a layer: it is the output layer's (its softmax, when the Dense and softmax are split)."""
    if outputs and len(outputs) == 1 and tensor_name.startswith("StatefulPartitionedCall"):
        return outputs[0]
    found: list[str] = []
    for part in tensor_name.split(";"):
        for component in part.split("/"):
            if component in names and component not in found:
                found.append(component)
                break
    return next((n for n in found if n in kernels), found[0] if found else None)


def channel_error(float_out: np.ndarray, quant_out: np.ndarray, scale: float, zero_point: int) -> float:
    """Mean over the output's live channels of RMS error / RMS of the float channel.

    Per-tensor weights crush the channels whose folded weights are small: their error is
    large for them but small against the tensor's range, so RMSE/scale hides it; this does
    not. Channels the float op leaves (nearly) silent are skipped (no signal to lose)."""
    f = np.asarray(float_out, dtype=np.float64)
    q = (np.asarray(quant_out, dtype=np.float64) - zero_point) * scale
    if f.shape != q.shape or f.ndim == 0:
        return float("nan")
    channels = f.shape[-1]
    f, q = f.reshape(-1, channels), q.reshape(-1, channels)
    signal = np.sqrt(np.mean(f * f, axis=0))
    live = signal > 1e-3 * max(float(signal.max()), 1e-12)
    if not live.any():
        return float("nan")
    error = np.sqrt(np.mean((q - f) ** 2, axis=0))
    return float(np.mean(error[live] / signal[live]))


def _debug_dataset(inputs: np.ndarray):
    def dataset():
        for image in inputs:
            yield [image[None, ...].astype(np.float32)]

    return dataset


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else -1.0


def _optional(value: float) -> float | None:
    return value if math.isfinite(value) else None


def build_analysis(rows: list[dict[str, Any]], model: Any, variant: str, spec_text: str,
                   images: int, rank_by: str = RANK_BY) -> LayerAnalysis:  # fmt: skip
    """Rank the debugger's rows (worst first by `rank_by`) and name them by Keras layer."""
    names, kernels = keras_layers(model)
    outputs = output_layers(model)
    layers = []
    for row in rows:
        scale, mse = _number(row.get("scale")), _number(row.get("mean_squared_error"))
        ratio = math.sqrt(mse) / scale if scale and scale > 0 and mse >= 0 else float("nan")
        tensor = str(row.get("tensor_name", ""))
        layers.append(LayerError(
            rank=0, op=str(row.get("op_name", "")), tensor=tensor,
            layer=keras_layer_of(tensor, names, kernels, outputs), rmse_scale=ratio,
            mean_abs_error=_number(row.get("mean_abs_error")),
            max_abs_error=_number(row.get("max_abs_error")), mse=mse, scale=scale,
            channel_error=_optional(_number(row.get("channel_error"))),
        ))  # fmt: skip
    layers.sort(key=lambda e: (-_finite(getattr(e, rank_by)), e.tensor))
    for i, layer in enumerate(layers, 1):
        layer.rank = i
    named = sum(1 for e in layers if e.layer) / len(layers) if layers else 0.0
    return LayerAnalysis(variant=variant, conversion=spec_text, debug_images=images,
                         layers=layers, named_fraction=named)  # fmt: skip


def analyze_saved_model(saved_model_dir: str | Path, spec: dict[str, Any], calibration_path: str | Path,
                        inputs_path: str | Path, pool: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    """The debugger's raw rows for the base scheme `spec`, computed in a worker process: one
    of `pool`'s (a convert.ConverterPool, whose later conversions reuse its calibration)."""
    if pool is None:
        from quantbench.techniques.converter import ConverterPool

        with ConverterPool(1) as own:
            return analyze_saved_model(saved_model_dir, spec, calibration_path, inputs_path, own)
    return analysis_rows(start_analysis(saved_model_dir, spec, calibration_path, inputs_path, pool), spec)


def start_analysis(saved_model_dir: str | Path, spec: dict[str, Any], calibration_path: str | Path,
                   inputs_path: str | Path, pool: Any):  # fmt: skip
    """The analysis request on `pool`, as a future (`analysis_rows` waits for its rows)."""
    payload = {"saved_model": str(saved_model_dir), "spec": spec,
               "calibration": str(calibration_path), "inputs": str(inputs_path)}  # fmt: skip
    return pool.submit("analyze", payload, ANALYSIS_TIMEOUT_SECONDS)


def analysis_rows(future: Any, spec: dict[str, Any]) -> list[dict[str, Any]]:
    from quantbench.core.errors import QuantbenchError
    from quantbench.workers import WorkerError

    try:
        return future.result()["rows"]
    except WorkerError as e:
        raise QuantbenchError(f"the per-layer analysis of {spec['name']} failed: {e.message}"
                              + (f" ({e.reason})" if e.reason else ""),
                              tip="re-run with -v; the conversion itself may fail") from None  # fmt: skip


def analyze(model: Any, spec: Any, calibration_inputs: np.ndarray, debug_inputs: np.ndarray,
            variant: str | None = None) -> LayerAnalysis:  # fmt: skip
    """Per-layer error of conversion `spec` (a TechniqueSpec of an integer scheme) of `model`."""
    from quantbench.core import atomic
    from quantbench.techniques.converter import export_saved_model
    from quantbench.workers import scratch_dir

    with scratch_dir("analyze") as tmp:
        saved = export_saved_model(model, Path(tmp) / "saved_model")
        calibration, inputs = Path(tmp) / "calibration.npy", Path(tmp) / "inputs.npy"
        atomic.save_npy(calibration, calibration_inputs.astype(np.float32))
        atomic.save_npy(inputs, debug_inputs[:DEBUG_IMAGES].astype(np.float32))
        rows = analyze_saved_model(saved, spec.model_dump(mode="json"), calibration, inputs)
    return build_analysis(rows, model, variant or spec.name, spec.text(),
                          min(len(debug_inputs), DEBUG_IMAGES))  # fmt: skip


def csv_name(variant: str) -> str:
    return f"layers-{variant}.csv"


def write_csv(analysis: LayerAnalysis, path: Path) -> Path:
    """One row per quantized op, worst first."""
    from quantbench.core import atomic

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for e in analysis.layers:
        writer.writerow([e.rank, e.layer or "", e.op, f"{e.rmse_scale:.4g}", "" if e.channel_error is None else f"{e.channel_error:.4g}",
                         f"{e.mean_abs_error:.4g}",
                         f"{e.max_abs_error:.4g}", f"{e.mse:.4g}", f"{e.scale:.4g}", e.tensor])  # fmt: skip
    atomic.write_text(path, out.getvalue())
    return path
