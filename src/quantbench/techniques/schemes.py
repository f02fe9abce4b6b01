"""The conversions registry: how a trained Keras model becomes a .tflite file.

Adding a conversion is one entry in `SCHEMES` below, with its typed parameters; the
converter worker, the CLI (`--schemes`, `quantbench techniques`), the config and the tests
parametrized over the registry pick it up. A conversion says only how to configure a
`TFLiteConverter`; which model it is applied to (the float baseline, a transform's output) is
the plan's business (plan.py).

Most schemes start from the Keras model (`source="keras"`: the TF Lite converter's workers
apply `configure`/`convert`). A scheme with `source="tflite"` starts from the model's float32
.tflite instead (`source_scheme`): the executor makes that file first (or takes the one a
.tflite source supplies), keys the scheme's file on it, and calls `convert_tflite`; AI Edge
Quantizer's recipes (`aeq`, techniques/aeq.py) are such schemes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from quantbench.techniques import NoParams, Params, Registry, Technique, TechniqueSpec
from quantbench.techniques.aeq import AeqParams
from quantbench.techniques.converter import (
    CONVERT_TIMEOUT_SECONDS, DISK_FULL_TIP, WORKER_FAILURE, Conversion,
)  # fmt: skip
from quantbench.techniques.selective import SEARCH, SelectiveParams, record_search

OpsSet = Literal["builtins", "int8", "int16x8"]
FLOAT_SCHEME = "float32"  # the model itself as a .tflite: what tflite-sourced schemes start from


@dataclass(frozen=True)
class Scheme(Technique):
    policy: str = ""  # the label a user knows it by, as in the article's table
    optimization: str | None = None  # a member of tf.lite.Optimize
    float16_weights: bool = False
    needs_representative_dataset: bool = False
    ops: OpsSet = "builtins"
    io_dtype: Literal["float32", "int8"] = "float32"
    per_channel: bool = True  # False: one scale per weight tensor (what some DSPs require)
    # A scheme whose parameters a search must complete before it can convert (selective): the
    # executor runs its `search_stage` first and converts the spec `searched` returns.
    needs_search: bool = False
    # What the scheme starts from: the Keras model ("keras": the converter applies `configure`
    # or `convert`), or the model's float32 .tflite ("tflite": `convert_tflite`).
    source: Literal["keras", "tflite"] = "keras"

    def reads_calibration(self, params: Params) -> bool:
        """Whether the file depends on the calibration images (its store key then does)."""
        return self.needs_representative_dataset

    def policy_of(self, params: Params) -> str:
        """The row's policy label for these parameters."""
        return self.policy

    def default_specs(self) -> list[TechniqueSpec]:
        """This entry's specs in a plan that names no scheme (one, its defaults; an entry with
        named variants may give several)."""
        return [SCHEMES.spec(self.name)]

    def source_scheme(self, params: Params) -> TechniqueSpec:
        """A tflite-sourced scheme's starting file: the same model's conversion by this spec."""
        return SCHEMES.spec(FLOAT_SCHEME)

    def convert_tflite(self, float_path: Path, out_path: Path, params: Params,
                       calibration_path: Path | None, *, worker: Any = None,
                       timeout: float = CONVERT_TIMEOUT_SECONDS) -> Conversion:  # fmt: skip
        """A tflite-sourced scheme's file: `out_path` made from `float_path` (calibration_path:
        an .npy of the run's calibration inputs, when `reads_calibration`), in `worker` (a
        workers.Worker; None: a process of its own) within `timeout` seconds. A failure is the
        Conversion's error, not an exception (a full disk aside: MachineError)."""
        raise NotImplementedError(f"{self.name} converts from the Keras model")

    def search_stage(self, params: Params) -> Any:
        """A Stage (engine/stage.py) whose product completes these parameters, or None: the
        spec converts as it is. Its job has the context, the variant spec, the lazy model and
        `keep_file(scheme, path, seconds)` for files it made on the way."""
        return None

    def searched(self, product: Any, results: Any, run_dir: Any) -> tuple[TechniqueSpec, dict[str, Any]]:
        """From the search's product: the completed spec, and fields for the variant's row."""
        raise NotImplementedError

    def held_out_photos(self, params: Params, cfg: Any) -> int:
        """Training photos this scheme's search scores, held out of training (0: none)."""
        return 0

    def convert(self, converter: Any, representative_dataset: Callable | None,
                params: Params | None = None, source: str = "") -> bytes:
        """The .tflite bytes (in the converter worker); `source` names the SavedModel and the
        calibration images, for conversions that reuse work across calls."""
        self.configure(converter, representative_dataset, params)
        return converter.convert()

    def configure(self, converter: Any, representative_dataset: Callable | None,
                  params: Params | None = None) -> None:
        """Set this conversion's options (with its parameters) on a `tf.lite.TFLiteConverter`."""
        import tensorflow as tf

        if self.optimization:
            converter.optimizations = [getattr(tf.lite.Optimize, self.optimization)]
        if self.float16_weights:
            converter.target_spec.supported_types = [tf.float16]
        if self.needs_representative_dataset:
            if representative_dataset is None:
                raise ValueError(f"conversion {self.name!r} needs a representative dataset")
            converter.representative_dataset = representative_dataset
        if self.ops == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        elif self.ops == "int16x8":
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        if self.io_dtype == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        if not self.per_channel:
            converter._experimental_disable_per_channel = True


SCHEMES: Registry[Scheme] = Registry("scheme", "--schemes", [
    Scheme("float32", "float32 model, converted without optimization", policy="None"),
    Scheme("dynamic_range",
           "int8 weights, float activations quantized on the fly (post-training dynamic range)",
           policy="Optimize.DEFAULT", optimization="DEFAULT"),
    Scheme("float16", "float16 weights, float32 compute (half the size)", policy="float16",
           optimization="DEFAULT", float16_weights=True),
    Scheme("int8", "full-integer int8 weights and activations, float input/output",
           policy="full int8", optimization="DEFAULT", needs_representative_dataset=True,
           ops="int8"),
    Scheme("int8_io", "full-integer int8 with int8 input/output (Edge TPU, microcontrollers)",
           policy="full int8, int8 I/O", optimization="DEFAULT",
           needs_representative_dataset=True, ops="int8", io_dtype="int8"),
    # Measured on the default preset's MobileNetV2: 32% top-1 against 91% per-channel (folded
    # batch norm leaves depthwise filters whose ranges one scale cannot cover); `selective`
    # repairs it by keeping the few layers the analysis blames in float.
    Scheme("int8_per_tensor",
           "full-integer int8 with one scale per weight tensor, for DSPs and accelerators "
           "without per-channel weights", policy="full int8, per-tensor", optimization="DEFAULT",
           needs_representative_dataset=True, ops="int8", per_channel=False, default=False),
    Scheme("int8_per_tensor_io",
           "per-tensor full-integer int8 with int8 input/output (per-tensor DSPs, NPUs)",
           policy="full int8, per-tensor, int8 I/O", optimization="DEFAULT",
           needs_representative_dataset=True, ops="int8", io_dtype="int8", per_channel=False,
           default=False),
    Scheme("int16x8", "int16 activations, int8 weights (more accurate, reference kernels only)",
           policy="int16x8", optimization="DEFAULT", needs_representative_dataset=True,
           ops="int16x8"),
    Scheme("optimize_for_size",
           "deprecated alias of Optimize.DEFAULT, kept to check the article's claim",
           policy="Optimize.OPTIMIZE_FOR_SIZE", optimization="OPTIMIZE_FOR_SIZE", default=False),
    Scheme("optimize_for_latency",
           "deprecated alias of Optimize.DEFAULT, kept to check the article's claim",
           policy="Optimize.OPTIMIZE_FOR_LATENCY", optimization="OPTIMIZE_FOR_LATENCY",
           default=False),
])  # fmt: skip

_CALIBRATED: dict[str, bytes] = {}  # the worker's calibrated models, by source and base


def calibrated_model(base: Scheme, converter: Any, representative_dataset: Callable | None,
                     source: str = "") -> bytes:  # fmt: skip
    """The model with activation ranges recorded but nothing quantized yet, for `base`'s
    options; memoized in the worker by `source` (SavedModel and calibration images)."""
    import hashlib
    from pathlib import Path

    from quantbench.core import atomic

    memo = f"{source}|{base.name}"
    if source and memo in _CALIBRATED:
        return _CALIBRATED[memo]
    # Beside the SavedModel too: the search's later rounds start new workers, which then
    # skip the calibration (the slowest step of a candidate).
    saved = Path(source.split("|")[0]) if source else None
    spill = (saved.parent / f"calibrated-{hashlib.sha1(memo.encode()).hexdigest()[:16]}.tflite"
             if saved is not None and saved.is_dir() else None)  # fmt: skip
    if spill is not None and spill.is_file():
        calibrated = spill.read_bytes()
    else:
        base.configure(converter, representative_dataset)
        converter._experimental_calibrate_only = True
        calibrated = converter.convert()
        if spill is not None:
            atomic.write_bytes(spill, calibrated)
    if source:
        _CALIBRATED.clear()
        _CALIBRATED[memo] = calibrated
    return calibrated


@dataclass(frozen=True)
class Selective(Scheme):
    """Calibrate once, then quantize with the denylist (`mlir_quantize`, what
    `QuantizationDebugger.get_nondebug_quantized_model` calls). Measured on MobileNetV2 0.35 at
    96 px: calibration 10.8 s, each quantization 0.2-0.5 s, so a worker converting several
    candidates calibrates once (memoized by SavedModel, calibration images and base)."""

    def slug(self, params: Params) -> str:
        """`selective` for the default base and budget; the others name what differs."""
        name = self.name if params.base == "int8_per_tensor" else f"{self.name}_{params.base}"
        return name if params.budget is None else f"{name}_within{params.budget:g}"

    def base_of(self, params: SelectiveParams):
        return SCHEMES.get(params.base)

    # The search, its held-out photos and what it records: techniques/selective.py.
    def search_stage(self, params: SelectiveParams) -> Any:
        return SEARCH if params.denylist is None else None

    def searched(self, product: Any, results: Any, run_dir: Any) -> tuple[TechniqueSpec, dict[str, Any]]:
        return record_search(product, results, run_dir)

    def held_out_photos(self, params: SelectiveParams, cfg: Any) -> int:
        if getattr(cfg.convert, "search_data", None) or params.denylist is not None:
            return 0
        return params.search_images

    def convert(self, converter: Any, representative_dataset: Callable | None,
                params: SelectiveParams | None = None, source: str = "") -> bytes:  # fmt: skip
        import tensorflow as tf
        from tensorflow.lite.python import convert as lite_convert

        assert params is not None
        if params.denylist is None:
            raise ValueError("selective needs its denylist: the executor's search fills it in")
        base = self.base_of(params)
        calibrated = calibrated_model(base, converter, representative_dataset, source)
        io_type = tf.int8 if base.io_dtype == "int8" else tf.float32
        # fully_quantize=False lets denylisted ops stay float (with builtin float kernels).
        return lite_convert.mlir_quantize(
            calibrated, disable_per_channel=not base.per_channel, fully_quantize=False,
            input_data_type=io_type, output_data_type=io_type,
            denylisted_nodes=list(params.denylist),
        )  # fmt: skip


SCHEMES.register(Selective(
    "selective", "an integer scheme with the fewest layers kept in float that hold accuracy "
    "within a budget (searched with real conversions on held-apart images)",
    params=SelectiveParams, policy="selective", needs_representative_dataset=True,
    needs_search=True, default=False))


@dataclass(frozen=True)
class Aeq(Scheme):
    """Google's AI Edge Quantizer on the model's float32 .tflite (techniques/aeq.py,
    docs/aeq.md): the `aeq` worker op quantizes it, then the written file is read back and
    what it holds where it differs from the recipe (an op left float, another config) is
    said in the row's notes."""

    def slug(self, params: AeqParams) -> str:
        from quantbench.techniques import aeq

        return aeq.slug(params)

    def reads_calibration(self, params: AeqParams) -> bool:
        from quantbench.techniques import aeq

        return aeq.needs_calibration(params)

    def policy_of(self, params: AeqParams) -> str:
        extra = [v for v, default in ((params.algorithm, "min_max"),
                                      (params.granularity, "channelwise")) if v != default]
        return f"AEQ {params.recipe}" + (f" ({', '.join(extra)})" if extra else "")

    def default_specs(self) -> list[TechniqueSpec]:
        from quantbench.techniques import aeq

        return [SCHEMES.spec(self.name, recipe=recipe) for recipe in aeq.RECIPES]

    def convert(self, converter: Any, representative_dataset: Callable | None,
                params: Params | None = None, source: str = "") -> bytes:  # fmt: skip
        raise ValueError(f"{self.name} quantizes the float32 .tflite (convert_tflite), not a "
                         f"SavedModel")

    def convert_tflite(self, float_path: Path, out_path: Path, params: AeqParams,
                       calibration_path: Path | None, *, worker: Any = None,
                       timeout: float = CONVERT_TIMEOUT_SECONDS) -> Conversion:  # fmt: skip
        from quantbench.core.errors import MachineError, says_disk_full
        from quantbench.techniques import aeq
        from quantbench.workers import WorkerError, run_once

        payload = {"float_model": str(float_path), "out": str(out_path),
                   "params": params.model_dump(mode="json"),
                   "calibration": str(calibration_path)
                   if calibration_path is not None and self.reads_calibration(params) else None}  # fmt: skip
        started = time.perf_counter()
        try:
            reply = (worker.request("aeq", payload, timeout) if worker is not None
                     else run_once("aeq", payload, timeout, name="aeq"))  # fmt: skip
        except WorkerError as e:
            error = f"{WORKER_FAILURE} ({e.reason})" if e.reason else e.message
            return Conversion(self.name, None, time.perf_counter() - started,
                              error + (f": {e.detail}" if e.detail else ""))  # fmt: skip
        if reply.get("error"):
            if says_disk_full(reply["error"]):
                raise MachineError(f"the disk is full: {reply['error']}", tip=DISK_FULL_TIP)
            return Conversion(self.name, None, reply["seconds"], reply["error"])
        # What the file really holds: read back from the bytes written, against what was asked.
        out_path = Path(out_path)
        inspected = aeq.inspect_quantized(out_path)
        problem = aeq.zero_scale_error(inspected) or aeq.broken_weights_error(inspected)
        if problem is not None:
            out_path.unlink(missing_ok=True)
            return Conversion(self.name, None, reply["seconds"],
                              problem.message + (f" ({problem.tip})" if problem.tip else ""))  # fmt: skip
        notes = aeq.file_notes(reply["asked"], inspected, aeq.io_types(out_path))
        return Conversion(self.name, out_path, reply["seconds"], None, notes=notes)


SCHEMES.register(Aeq(
    "aeq", "Google's AI Edge Quantizer on the float32 .tflite: a named recipe (dynamic, "
    "weight-only or static; int8 or int4 weights, int8 or int16 activations), its algorithm "
    "and weight granularity (docs/aeq.md)",
    params=AeqParams, policy="AI Edge Quantizer", source="tflite", default=False))


def conversion_of(spec: TechniqueSpec) -> tuple[Scheme, Params]:
    """The entry and its typed parameters (what the converter worker applies)."""
    return SCHEMES.get(spec.name), SCHEMES.params_of(spec)


__all__ = ["FLOAT_SCHEME", "SCHEMES", "NoParams", "Scheme", "conversion_of"]
