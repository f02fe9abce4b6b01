"""Google's AI Edge Quantizer (AEQ, `ai-edge-quantizer` 0.10) as quantbench schemes.

AEQ rewrites a *float .tflite* (no TensorFlow involved): it reads the flatbuffer, builds a
recipe (regex scope over op output names -> op config), calibrates activations on sample
inputs when the recipe needs it, and writes a quantized flatbuffer. This module holds the
pieces the scheme registry and the engine call (docs/aeq.md says what each recipe does):

- `AeqParams`: the typed parameters (a named recipe, the algorithm, the weight granularity,
  the number of calibration images), with validators that refuse what AEQ 0.10 does not do;
- `slug(params)`: a readable variant name (`aeq_w4`, `aeq_dyn_w4_blockwise32`, ...);
- `quantize_tflite(...)`: one quantization (in the worker process), with `scopes` (regex,
  `AeqLayer`) overrides for mixed precision; it returns what was asked per op (`asked`) and
  which ops did not get it (`skipped`);
- `aeq_request(payload)`: the worker op (`OPS["aeq"]`);
- `inspect_quantized(path)`, `skipped_ops(asked, inspected)`: what the written file holds per
  op, read from the flatbuffer itself, and where it differs from what was asked.

AEQ's traps, and what this module does about them:

- a recipe entry that an op cannot take (int4 weights on DEPTHWISE_CONV_2D, blockwise on a
  convolution, int8 blockwise anywhere) is skipped *silently*: the op falls back to an earlier
  matching entry or stays float. `asked` records the entry that should have applied and why
  AEQ refused it; `skipped_ops` compares with the file.
- when several scopes match an op the last one added wins (in the order of AEQ's recipe,
  which is the order of first insertion of each regex). Each scope here gets a unique regex
  (a `(?#...)` comment), so the order is the order of `scopes`, later winning; an op matched by
  several scopes with different configs is reported as `overridden`.
- int16 activations are always symmetric (AEQ forces it; LiteRT's int16 kernels need it).
- blockwise scales are stored as float16: a block of zeros (or of weights below ~4e-7) gets a
  zero scale and XNNPACK refuses to load the file. The written file is checked and such a
  result is refused with an explanation (`ModelError`), before it is written.
- an already quantized input is re-quantized only where still float (AEQ only warns): such an
  input is refused.

AEQ's algorithms other than min_max and octav register only some ops (mse: the weight ops;
gptq: FULLY_CONNECTED; hadamard: FULLY_CONNECTED and EMBEDDING_LOOKUP), and blockwise weights
exist only for FULLY_CONNECTED and EMBEDDING_LOOKUP: under AEQ's own "*" recipe every other op
is left float. Here the scheme's algorithm and granularity apply where AEQ has them and
min_max / channelwise on the other ops (for activations AEQ's mse and octav fall back to
min-max anyway); `asked` names the algorithm and granularity used per op.

AEQ, TensorFlow-free but not light, is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from quantbench.measure.filestats import constant_bytes
from pydantic import model_validator

from quantbench.core.errors import ConfigError, DependencyError, ModelError, QuantbenchError
from quantbench.techniques import Params

RecipeName = Literal[
    "dynamic_wi8_afp32",
    "dynamic_wi4_afp32",
    "weight_only_wi8_afp32",
    "weight_only_wi4_afp32",
    "static_wi8_ai8",
    "static_wi8_ai16",
]
Algorithm = Literal["min_max", "mse", "octav", "gptq", "hadamard"]
Granularity = Literal["channelwise", "blockwise_32", "blockwise_64", "blockwise_128"]

# recipe -> (mode, weight bits, activation bits or None); the named recipes of AEQ's recipe.py
# are exactly these add_*_config(".*", "*", ...) calls, which also take a granularity.
RECIPES: dict[str, tuple[str, int, int | None]] = {
    "dynamic_wi8_afp32": ("dynamic", 8, None),
    "dynamic_wi4_afp32": ("dynamic", 4, None),
    "weight_only_wi8_afp32": ("weight_only", 8, None),
    "weight_only_wi4_afp32": ("weight_only", 4, None),
    "static_wi8_ai8": ("static", 8, 8),
    "static_wi8_ai16": ("static", 8, 16),
}
_SLUG_CORE = {
    "dynamic_wi8_afp32": "dyn_w8",
    "dynamic_wi4_afp32": "dyn_w4",
    "weight_only_wi8_afp32": "w8",
    "weight_only_wi4_afp32": "w4",
    "static_wi8_ai8": "a8w8",
    "static_wi8_ai16": "a16w8",
}
# Our names -> AEQ's AlgorithmName members. hadamard is the decomposed form (builtin ops:
# RESHAPE + FULLY_CONNECTED with the rotation matrix); AEQ's HADAMARD_ROTATION writes a custom
# op (aeq.hadamard_rotation) that stock LiteRT cannot run.
_ALGORITHMS = {
    "min_max": "MIN_MAX_UNIFORM_QUANT",
    "mse": "MSE",
    "octav": "OCTAV",
    "gptq": "GPTQ",
    "hadamard": "DECOMPOSED_HADAMARD_ROTATION",
}
DEFAULT_CALIBRATION_IMAGES = 200
# Ops whose input 1 is the weight AEQ quantizes (AEQ's DRQ_OR_WEIGHT_ONLY_OPS).
WEIGHT_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "BATCH_MATMUL",
                        "EMBEDDING_LOOKUP", "CONV_2D_TRANSPOSE"})  # fmt: skip
# The ops AEQ 0.10 quantizes blockwise (common_utils._SUPPORTED_SUBCHANNEL_OPS; its policy
# has them for dynamic int4 only).
BLOCKWISE_OPS = ("FULLY_CONNECTED", "EMBEDDING_LOOKUP")
_QUANTIZED_TYPES = frozenset({"INT8", "UINT8", "INT16", "UINT16", "INT4", "INT2", "UINT4"})
_BASE = "recipe"  # the label of the recipe's own entry; scopes are "scope 0", "scope 1", ...
_LABEL = re.compile(r"\(\?#qb:([^)]*)\)$")


def _check_combination(recipe: str, algorithm: str, granularity: str) -> None:
    """Raise ValueError for what AEQ 0.10 refuses or silently ignores (default_policy.py,
    algorithms/uniform_quantize/*.py)."""
    mode = RECIPES[recipe][0]
    if granularity != "channelwise":
        if recipe != "dynamic_wi4_afp32":
            raise ValueError(
                f"granularity={granularity} needs recipe=dynamic_wi4_afp32: AEQ 0.10's policy has "
                f"blockwise weights only for dynamic int4 (FULLY_CONNECTED, EMBEDDING_LOOKUP); "
                f"with {recipe} it would silently leave every op float")
        if algorithm == "mse":
            raise ValueError("algorithm=mse does not do blockwise weights (AEQ raises); "
                             "use min_max or octav, or granularity=channelwise")  # fmt: skip
    if algorithm == "gptq" and mode == "static":
        raise ValueError(f"algorithm=gptq with static activations ({recipe}): AEQ 0.10 keeps a "
                         f"tensor's statistics from the first op that calibrates it, so the "
                         f"Hessian of a FULLY_CONNECTED input made by a quantized op is lost and "
                         f"its weights are written unquantized under an int8 type (and under "
                         f"AEQ's own recipe every other op stays float); use gptq with a dynamic "
                         f"or weight_only recipe")
    if algorithm == "hadamard" and mode == "static":
        raise ValueError(f"algorithm=hadamard rotates weights only (AEQ: 'not supported for "
                         f"static quantization'), not with {recipe}: use a dynamic or "
                         f"weight_only recipe")  # fmt: skip


class AeqLayer(Params):
    """What one scope asks for: a named recipe (or `float`: leave the ops unquantized), the
    algorithm and the weight granularity, on every op of the scope or on one TFLite op type
    (`op="CONV_2D"`; `INPUT`/`OUTPUT` are the model's inputs and outputs)."""

    recipe: RecipeName | Literal["float"]
    algorithm: Algorithm = "min_max"
    granularity: Granularity = "channelwise"
    op: str = "*"

    @model_validator(mode="after")
    def _combination(self) -> AeqLayer:
        if self.recipe != "float":
            _check_combination(self.recipe, self.algorithm, self.granularity)
        if self.op != "*" and not re.fullmatch(r"[A-Z0-9_]+", self.op):
            raise ValueError(f"op={self.op!r}: a TFLite op name such as CONV_2D, or '*'")
        return self


class AeqParams(Params):
    """An AEQ scheme's parameters (docs/aeq.md)."""

    recipe: RecipeName = "dynamic_wi8_afp32"
    algorithm: Algorithm = "min_max"
    granularity: Granularity = "channelwise"
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES

    @model_validator(mode="after")
    def _combination(self) -> AeqParams:
        _check_combination(self.recipe, self.algorithm, self.granularity)
        if self.calibration_images < 1:
            raise ValueError("calibration_images must be at least 1")
        return self

    def layer(self) -> AeqLayer:
        return AeqLayer(recipe=self.recipe, algorithm=self.algorithm, granularity=self.granularity)


def needs_calibration(params: AeqParams) -> bool:
    """Whether the scheme needs calibration images (static activations, or GPTQ's Hessians)."""
    return RECIPES[params.recipe][0] == "static" or params.algorithm == "gptq"


def slug(params: AeqParams) -> str:
    """A readable variant name for these parameters (distinct parameters, distinct names;
    never parsed back): aeq_w4, aeq_dyn_w4_blockwise32, aeq_a16w8_octav_cal500, ..."""
    parts = ["aeq", _SLUG_CORE[params.recipe]]
    if params.algorithm != "min_max":
        parts.append(params.algorithm)
    if params.granularity != "channelwise":
        parts.append(params.granularity.replace("_", ""))
    if params.calibration_images != DEFAULT_CALIBRATION_IMAGES:
        parts.append(f"cal{params.calibration_images}")
    return "_".join(parts)


# --- reading a .tflite (LiteRT's generated schema; no TensorFlow, no interpreter) --------


@lru_cache(maxsize=1)
def _names() -> tuple[dict[int, str], dict[int, str]]:
    from ai_edge_litert import schema_py_generated as fb

    def table(cls: type) -> dict[int, str]:
        return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}

    return table(fb.BuiltinOperator), table(fb.TensorType)


def _root(data: bytes):
    from ai_edge_litert import schema_py_generated as fb

    try:
        return fb.Model.GetRootAs(data, 0)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file
        raise ModelError(f"not a .tflite flatbuffer ({type(e).__name__})") from None


def _op_names(root) -> list[str]:
    op_names, _ = _names()
    names = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if name == "CUSTOM":
            custom = code.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        names.append(name)
    return names


def _tensor_name(t) -> str:
    return (t.Name() or b"").decode("utf-8", "replace")


def _is_constant(root, t) -> bool:
    if t.Buffer() <= 0 or t.Buffer() >= root.BuffersLength():
        return False
    buffer = root.Buffers(t.Buffer())
    return buffer.DataLength() > 0 or buffer.Offset() > 1


def _ints(getter_len: int, getter) -> list[int]:
    return [int(x) for x in getter()] if getter_len else []


def _refuse_quantized(data: bytes, path: str | Path) -> None:
    """A ModelError if the .tflite holds quantized or float16 tensors (AEQ would keep those
    and re-quantize only what is still float32)."""
    root = _root(data)
    _, type_names = _names()
    for s in range(root.SubgraphsLength()):
        sub = root.Subgraphs(s)
        for i in range(sub.TensorsLength()):
            t = sub.Tensors(i)
            kind = type_names.get(t.Type(), str(t.Type()))
            q = t.Quantization()
            scaled = q is not None and (q.ScaleLength() > 0 or q.DetailsType() != 0)
            if kind in _QUANTIZED_TYPES or scaled:
                raise ModelError(
                    f"{Path(path).name} is already quantized ({kind.lower()} tensor "
                    f"{_tensor_name(t)!r}); AEQ needs a float model",
                    tip="give the float32 .tflite (quantbench's float32 variant): AEQ would keep "
                        "the quantized parts as they are and re-quantize only the float ones")  # fmt: skip
            if kind == "FLOAT16" and _is_constant(root, t):
                raise ModelError(
                    f"{Path(path).name} has float16 weights ({_tensor_name(t)!r}); AEQ only "
                    f"quantizes float32 weights and would leave those ops as they are",
                    tip="give the float32 .tflite (quantbench's float32 variant)")


def refuse_quantized(path: str | Path) -> None:
    """A ModelError if the .tflite at `path` is not a float32 model AEQ can quantize (it holds
    quantized tensors or float16 weights), or is no .tflite flatbuffer at all."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    _refuse_quantized(path.read_bytes(), path)


def _block_size(root, q) -> int | None:
    from ai_edge_litert import schema_py_generated as fb

    if q is None or q.DetailsType() != fb.QuantizationDetails.BlockwiseQuantization:
        return None
    table = q.Details()
    details = fb.BlockwiseQuantization()
    details.Init(table.Bytes, table.Pos)
    return int(details.BlockSize())


def _scales(data: bytes, root, sub, q) -> np.ndarray | None:
    """A quantized tensor's scales: the per-tensor/per-channel array, or the float16 scales
    tensor of blockwise quantization."""
    from ai_edge_litert import schema_py_generated as fb

    if q is None:
        return None
    if q.DetailsType() == fb.QuantizationDetails.BlockwiseQuantization:
        table = q.Details()
        details = fb.BlockwiseQuantization()
        details.Init(table.Bytes, table.Pos)
        scales = sub.Tensors(details.Scales())
        _, type_names = _names()
        dtype = {"FLOAT16": np.float16, "FLOAT32": np.float32}.get(
            type_names.get(scales.Type(), ""), np.float16)
        return np.frombuffer(constant_bytes(data, root, scales), dtype=dtype)
    if q.ScaleLength():
        return q.ScaleAsNumpy()
    return None


_BITS = {"int4": 4, "uint4": 4, "int2": 2, "int8": 8, "uint8": 8, "int16": 16, "float16": 16,
         "float32": 32, "int32": 32, "int64": 64}


def _bytes_match(data: bytes, root, t, kind: str) -> bool:
    """Whether a constant tensor holds as many bytes as its shape and type need (sub-byte
    types packed, rounded up)."""
    bits = _BITS.get(kind)
    if bits is None:
        return True
    count = int(np.prod([int(d) for d in t.ShapeAsNumpy()])) if t.ShapeLength() else 1
    return len(constant_bytes(data, root, t)) == -(-count * bits // 8)


def _saturated(data: bytes, root, t) -> int:
    """Integer bias values at -2**31 or below: AEQ divides the float bias by input scale x
    weight scale, and a channel whose weights are all zero has a clamped ~1e-11 weight scale,
    so the quotient overflows and the cast wraps to INT32_MIN: that channel's bias is lost."""
    _, type_names = _names()
    kind = type_names.get(t.Type(), "")
    if kind not in ("INT32", "INT64") or not _is_constant(root, t):
        return 0
    values = np.frombuffer(constant_bytes(data, root, t), dtype=np.int32 if kind == "INT32" else np.int64)
    return int((values <= -(2**31)).sum())


def _inspect(data: bytes) -> list[dict[str, Any]]:
    root = _root(data)
    _, type_names = _names()
    codes = _op_names(root)
    sub = root.Subgraphs(0)
    ops = [sub.Operators(i) for i in range(sub.OperatorsLength())]
    producer = {}
    for k, o in enumerate(ops):
        for out in _ints(o.OutputsLength(), o.OutputsAsNumpy):
            producer[out] = k

    def dtype(index: int) -> str:
        return type_names.get(sub.Tensors(index).Type(), "?").lower()

    def dequantized_constant(index: int) -> bool:
        """A DEQUANTIZE's output whose input is a weight (the weight-only form)."""
        if index not in producer:
            return False
        source = ops[producer[index]]
        return (codes[source.OpcodeIndex()] == "DEQUANTIZE"
                and _is_constant(root, sub.Tensors(int(source.Inputs(0)))))

    report = []
    for k, o in enumerate(ops):
        name = codes[o.OpcodeIndex()]
        inputs = [i for i in _ints(o.InputsLength(), o.InputsAsNumpy) if i >= 0]
        outputs = [i for i in _ints(o.OutputsLength(), o.OutputsAsNumpy) if i >= 0]
        activations = [i for i in inputs if not _is_constant(root, sub.Tensors(i))
                       and not dequantized_constant(i)]
        entry: dict[str, Any] = {
            "index": k,
            "op": name,
            "output": _tensor_name(sub.Tensors(outputs[0])) if outputs else "",
            "activation": dtype(outputs[0]) if outputs else None,
            "input": dtype(activations[0]) if activations else None,
            "weight": None,
            "weight_tensor": None,
            "weight_via_dequantize": False,  # weight-only: int weights -> DEQUANTIZE -> op
            "weight_granularity": None,
            "zero_scales": 0,
            "weight_bytes_ok": True,  # the stored bytes are as many as the type and shape say
            "saturated_biases": 0,  # integer biases at -2**31 (an overflow: see _saturated)
            "helper": name in ("QUANTIZE", "DEQUANTIZE"),
        }
        if name in WEIGHT_OPS and len(inputs) > 1 and o.Inputs(1) >= 0:
            w = int(o.Inputs(1))
            if w in producer and codes[ops[producer[w]].OpcodeIndex()] == "DEQUANTIZE":
                source = int(ops[producer[w]].Inputs(0))
                if _is_constant(root, sub.Tensors(source)):
                    w, entry["weight_via_dequantize"] = source, True
            t = sub.Tensors(w)
            if _is_constant(root, t):
                entry["weight"] = dtype(w)
                entry["weight_tensor"] = _tensor_name(t)
                q = t.Quantization()
                scales = _scales(data, root, sub, q)
                block = _block_size(root, q)
                if block:
                    entry["weight_granularity"] = f"blockwise_{block}"
                elif scales is not None and len(scales):
                    entry["weight_granularity"] = "channelwise" if len(scales) > 1 else "tensorwise"
                if scales is not None:
                    entry["zero_scales"] = int((scales == 0).sum())
                entry["weight_bytes_ok"] = _bytes_match(data, root, t, entry["weight"])
            if len(inputs) > 2 and o.Inputs(2) >= 0:
                entry["saturated_biases"] = _saturated(data, root, sub.Tensors(int(o.Inputs(2))))
        report.append(entry)
    return report


def inspect_quantized(path: str | Path) -> list[dict[str, Any]]:
    """Per op of the file's main subgraph, in order: `op` (type), `output` (its first output
    tensor's name), `activation` (that tensor's type: float32, int8, int16), `input` (its first
    activation input's type), `weight` (the stored type of the weight of a CONV_2D,
    DEPTHWISE_CONV_2D, FULLY_CONNECTED, ... followed back through a DEQUANTIZE: int4, int8,
    float32; None for ops without one), `weight_via_dequantize` (weight-only form),
    `weight_granularity`, `zero_scales` (scales equal to 0, which XNNPACK refuses), `helper`
    (a QUANTIZE or DEQUANTIZE), `weight_bytes_ok` (False: the stored bytes do not fit the
    weight's type and shape) and `saturated_biases` (integer biases that overflowed)."""
    return _inspect(Path(path).read_bytes())


def io_types(path_or_bytes: str | Path | bytes) -> dict[str, list[str]]:
    """The main subgraph's input and output tensor types (static recipes make them int)."""
    data = path_or_bytes if isinstance(path_or_bytes, (bytes, bytearray)) else Path(path_or_bytes).read_bytes()
    root = _root(data)
    _, type_names = _names()
    sub = root.Subgraphs(0)

    def types(indices: list[int]) -> list[str]:
        return [type_names.get(sub.Tensors(i).Type(), "?").lower() for i in indices]

    return {"inputs": types(_ints(sub.InputsLength(), sub.InputsAsNumpy)),
            "outputs": types(_ints(sub.OutputsLength(), sub.OutputsAsNumpy))}  # fmt: skip


def zero_scale_error(inspected: list[dict[str, Any]]) -> ModelError | None:
    """The error to raise for a file with zero scales (None when it has none)."""
    bad = [op for op in inspected if op["zero_scales"]]
    if not bad:
        return None
    first = bad[0]
    total = sum(op["zero_scales"] for op in bad)
    what = first["weight_granularity"] or "per-channel"
    return ModelError(
        f"AEQ wrote {total} zero scale(s) in {len(bad)} weight tensor(s) (first: "
        f"{first['weight_tensor']!r} of {first['op']} {first['output']!r}, {first['weight']} "
        f"{what}): each marks a block whose weights are all zero "
        f"(or below ~4e-7: AEQ stores blockwise scales as float16, which flushes them to 0); "
        f"XNNPACK refuses to load such a file ('unsupported scale value (0.000000)')",
        tip="use granularity=channelwise for this model (pruned or sparse weights have "
            "all-zero blocks), or keep that layer out of the blockwise scope")  # fmt: skip


def broken_weights_error(inspected: list[dict[str, Any]]) -> ModelError | None:
    """The error to raise when a weight's stored bytes do not fit its type (None if all do)."""
    bad = [op for op in inspected if not op["weight_bytes_ok"]]
    if not bad:
        return None
    first = bad[0]
    return ModelError(
        f"AEQ wrote {len(bad)} weight tensor(s) whose bytes do not match their type (first: "
        f"{first['weight_tensor']!r} of {first['op']}, typed {first['weight']}): the float "
        f"weights were left in place under an integer type, and LiteRT would read garbage",
        tip="an AEQ bug with this recipe and algorithm; use algorithm=min_max")


def _warnings(inspected: list[dict[str, Any]]) -> list[str]:
    """What in a written file is wrong but not fatal, one sentence each."""
    notes = []
    for op in inspected:
        if op["saturated_biases"]:
            notes.append(f"{op['op']} {op['output']!r}: {op['saturated_biases']} bias value(s) "
                         f"overflowed to -2**31 (output channels whose weights are all zero: AEQ "
                         f"clamps their weight scale to ~1e-11); those channels lose their bias")  # fmt: skip
    return notes


def explain_load_failure(message: str) -> str | None:
    """A sentence explaining a LiteRT load failure caused by an AEQ trap, else None."""
    if re.search(r"unsupported scale value \(0\.0+\)", message):
        return ("a weight tensor has a zero quantization scale (AEQ's blockwise int4 on a block "
                "of zeros: its float16 scales flush to 0), which XNNPACK refuses; re-quantize "
                "with granularity=channelwise")  # fmt: skip
    if "aeq.hadamard_rotation" in message:
        return "the file uses AEQ's custom hadamard op, which stock LiteRT does not have"
    return None


# --- what was asked, per op ---------------------------------------------------------------


def _label(regex: str) -> str:
    match = _LABEL.search(regex)
    return match.group(1) if match else regex


def _algorithm_name(key: str) -> str:
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if key == AlgorithmName.NO_QUANTIZE:
        return "float"
    for ours, member in _ALGORITHMS.items():
        if getattr(AlgorithmName, member) == key:
            return ours
    return str(key)


def _wants(entry: dict[str, Any], op: str, has_weight: bool, float_output: bool) -> dict[str, Any]:
    """What a recipe entry asks of one op: weight and activation types (None: nothing)."""
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    config = entry.get("op_config") or {}
    if entry["algorithm_key"] == AlgorithmName.NO_QUANTIZE:
        return {"weight": "float32" if has_weight else None,
                "activation": "float32" if float_output else None, "granularity": None}
    weight = config.get("weight_tensor_config")
    activation = config.get("activation_tensor_config")
    return {
        "weight": f"int{weight['num_bits']}" if has_weight and weight else None,
        "activation": (f"int{activation['num_bits']}" if activation else "float32")
        if float_output else None,
        "granularity": str(weight.get("granularity", "CHANNELWISE")).lower() if weight else None,
    }


def _refusal(entry: dict[str, Any], op: str) -> str | None:
    """Why AEQ skips this entry for this op type (None: it takes it)."""
    from ai_edge_quantizer import algorithm_manager, qtyping

    if entry["algorithm_key"] == algorithm_manager.AlgorithmName.NO_QUANTIZE:
        return None
    try:
        op_key = qtyping.TFLOperationName(op)
    except ValueError:
        return f"AEQ 0.10 has no quantized form of {op}"
    try:
        config = qtyping.OpQuantizationConfig.from_dict(entry.get("op_config") or {})
        algorithm_manager.check_op_quantization_config(entry["algorithm_key"], op_key, config)
    except ValueError as e:
        text = str(e).split(" Error: ")[-1].splitlines()[0]
        if "not found in the policy" in text or "No policy was specified" in text:
            return f"AEQ 0.10's policy has no {_describe(entry)} for {op}"
        return text[:200]
    return None


def _describe(entry: dict[str, Any]) -> str:
    """A recipe entry's config in words: 'weight_only int4 channelwise', 'static a16w8', ..."""
    config = entry.get("op_config") or {}
    weight = config.get("weight_tensor_config") or {}
    activation = config.get("activation_tensor_config")
    granularity = str(weight.get("granularity", "CHANNELWISE")).lower()
    if activation:
        return f"static a{activation['num_bits']}w{weight.get('num_bits')} config"
    mode = "weight_only" if config.get("explicit_dequantize") else "dynamic"
    return f"{mode} int{weight.get('num_bits')} {granularity} config"


def plan(data: bytes, recipe: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per op of the float model's main subgraph: what the recipe asks (the last matching
    entry, as AEQ resolves it, valid or not), which entry AEQ will apply (the last *valid*
    matching one) and why it skipped the others."""
    root = _root(data)
    _, type_names = _names()
    codes = _op_names(root)
    sub = root.Subgraphs(0)
    asked = []
    for k in range(sub.OperatorsLength()):
        o = sub.Operators(k)
        op = codes[o.OpcodeIndex()]
        outputs = [i for i in _ints(o.OutputsLength(), o.OutputsAsNumpy) if i >= 0]
        inputs = [i for i in _ints(o.InputsLength(), o.InputsAsNumpy) if i >= 0]
        names = [n for n in (_tensor_name(sub.Tensors(i)) for i in outputs) if n]
        if not names:
            names = [n for n in (_tensor_name(sub.Tensors(i)) for i in inputs) if n]
        scope = ";".join(names) + (";" if names else "")  # AEQ's get_op_scope
        has_weight = (op in WEIGHT_OPS and o.InputsLength() > 1 and o.Inputs(1) >= 0
                      and _is_constant(root, sub.Tensors(int(o.Inputs(1)))))  # fmt: skip
        float_output = bool(outputs) and type_names.get(
            sub.Tensors(outputs[0]).Type(), "").startswith("FLOAT")
        matching = [e for e in recipe if e["operation"] in ("*", op) and re.search(e["regex"], scope)]
        entry = {"index": k, "op": op, "output": names[0] if names else "", "weight": None,
                 "activation": None, "granularity": None, "algorithm": None, "by": None,
                 "applied": None, "refused": [], "matched": []}  # fmt: skip
        if matching:
            last = matching[-1]
            entry.update(_wants(last, op, has_weight, float_output))
            entry["algorithm"] = _algorithm_name(last["algorithm_key"])
            entry["by"] = _label(last["regex"])
            for e in reversed(matching):
                reason = _refusal(e, op)
                if reason is None:
                    entry["applied"] = _label(e["regex"])
                    break
                entry["refused"].append({"by": _label(e["regex"]),
                                         "algorithm": _algorithm_name(e["algorithm_key"]),
                                         "reason": reason})  # fmt: skip
            # user scopes matching this op, each with what it asks (overlaps are reported)
            seen: dict[str, dict[str, Any]] = {}
            for e in matching:
                label = _label(e["regex"])
                if label != _BASE:
                    seen[label] = _wants(e, op, has_weight, float_output)
            entry["matched"] = [{"by": label, **wants} for label, wants in seen.items()]
        asked.append(entry)
    return asked


def skipped_ops(asked: list[dict[str, Any]], inspected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ops that did not get what was asked: `kind` is `float` (left float), `other` (got
    another config, e.g. an earlier scope's after AEQ refused the later one) or `overridden`
    (several scopes asked different things; the last one won, as in AEQ). Ops are matched by
    type and output tensor name (AEQ keeps those; the ops it inserts have new names)."""
    by_output = {(op["op"], op["output"]): op for op in inspected if not op["helper"]}
    skipped = []
    for want in asked:
        got = by_output.get((want["op"], want["output"]))
        base = {"index": want["index"], "op": want["op"], "output": want["output"],
                "asked_weight": want["weight"], "asked_activation": want["activation"],
                "by": want["by"]}  # fmt: skip
        if got is None:
            if want["weight"] or want["activation"]:
                skipped.append({**base, "kind": "missing", "got_weight": None,
                                "got_activation": None,
                                "reason": "no op of that type and output in the quantized file"})
            continue
        weight_off = want["weight"] is not None and got["weight"] != want["weight"]
        activation_off = want["activation"] is not None and got["activation"] != want["activation"]
        if weight_off or activation_off:
            quantized = [t for t in (want["weight"], want["activation"]) if t and t != "float32"]
            left_float = quantized and all(
                t in (None, "float32") for t in (got["weight"], got["activation"]))
            reasons = [f"{r['by']} ({r['algorithm']}): {r['reason']}" for r in want["refused"]]
            if want["applied"] and want["applied"] != want["by"]:
                reasons.append(f"AEQ applied {want['applied']} instead")
            skipped.append({**base, "kind": "float" if left_float else "other",
                            "got_weight": got["weight"], "got_activation": got["activation"],
                            "reason": "; ".join(reasons) or "AEQ did not apply it"})  # fmt: skip
        distinct = {(m["weight"], m["activation"]) for m in want["matched"]}
        if len(distinct) > 1:
            others = [m["by"] for m in want["matched"] if m["by"] != want["by"]]
            skipped.append({**base, "kind": "overridden", "got_weight": got["weight"],
                            "got_activation": got["activation"],
                            "reason": f"also matched by {', '.join(others)}, which asked "
                                      f"otherwise; the last matching scope ({want['by']}) won"})  # fmt: skip
    return skipped


def _difference(asked: tuple[str | None, str | None], got: tuple[str | None, str | None]) -> str:
    """'int4 weights asked, float32 stored' for each of weights and activations that differ."""
    parts = [f"{a} {what} asked, {g or 'none'} stored"
             for what, a, g in zip(("weights", "activations"), asked, got) if a and a != g]
    return "; ".join(parts) or "what was asked"


def file_notes(asked: list[dict[str, Any]], inspected: list[dict[str, Any]],
               io: dict[str, list[str]] | None = None) -> list[str]:  # fmt: skip
    """One sentence per kind of difference between what was asked (`asked`, from
    quantize_tflite) and what the written file holds (`inspected`, inspect_quantized): ops of
    one type AEQ left float or gave another config are grouped; then overflowed biases, and
    the model's integer input and output of a static recipe."""
    groups: dict[tuple, int] = {}
    for s in skipped_ops(asked, inspected):
        reason = s["reason"]
        prefix = f"{s['by']} ("
        if reason.startswith(prefix) and "): " in reason:  # "recipe (min_max): why" -> "why"
            reason = reason.split("): ", 1)[1]
        key = (s["kind"], s["op"], s["asked_weight"], s["asked_activation"], s["got_weight"],
               s["got_activation"], reason)  # fmt: skip
        groups[key] = groups.get(key, 0) + 1
    notes = []
    for (kind, op, weight, activation, got_weight, got_activation, reason), n in groups.items():
        ops = f"{n} {op}" + (" ops" if n > 1 else "")
        diff = _difference((weight, activation), (got_weight, got_activation))
        if kind == "float":
            notes.append(f"read back from the file: AEQ left {ops} float: {diff} ({reason})")
        elif kind == "other":
            notes.append(f"read back from the file: AEQ gave {ops} another config: {diff} ({reason})")
        elif kind == "overridden":
            notes.append(f"{ops}: {reason}")
        else:
            notes.append(f"read back from the file: {ops} asked {diff.split(' stored')[0]} are "
                         f"missing from it ({reason})")  # fmt: skip
    notes += _warnings(inspected)
    if io is not None:
        kinds = sorted({*io.get("inputs", []), *io.get("outputs", [])})
        if kinds and kinds != ["float32"]:
            notes.append(f"its input and output are {'/'.join(kinds)}, as AEQ's static recipes "
                         f"make them: the photos are quantized with the input's scale")  # fmt: skip
    return notes


# --- quantizing -----------------------------------------------------------------------------


def _aeq():
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer
    except ImportError as e:
        raise DependencyError(f"ai-edge-quantizer is not installed ({e})",
                              tip="pip install 'ai-edge-quantizer==0.10.*'") from None  # fmt: skip
    return quantizer, algorithm_manager, qtyping


def _add_layer(q, regex: str, layer: AeqLayer) -> None:
    """Add one layer's entries to a Quantizer's recipe, under `regex`."""
    _, algorithm_manager, qtyping = _aeq()
    names = algorithm_manager.AlgorithmName
    op_all = qtyping.TFLOperationName.ALL_SUPPORTED
    if layer.recipe == "float":
        target = op_all if layer.op == "*" else qtyping.TFLOperationName(layer.op)
        q.update_quantization_recipe(regex, target, None, names.NO_QUANTIZE)
        return
    mode, weight_bits, activation_bits = RECIPES[layer.recipe]
    asked = qtyping.QuantGranularity(layer.granularity.upper())
    channelwise = qtyping.QuantGranularity.CHANNELWISE

    def add(op, algorithm, granularity=asked) -> None:
        if mode == "dynamic":
            q.add_dynamic_config(regex, op, weight_bits, granularity, algorithm)
        elif mode == "weight_only":
            q.add_weight_only_config(regex, op, weight_bits, granularity, algorithm)
        else:
            q.add_static_config(regex, op, activation_bits, weight_bits, granularity, algorithm)

    algorithm = getattr(names, _ALGORITHMS[layer.algorithm])
    if layer.op != "*":
        try:
            add(qtyping.TFLOperationName(layer.op), algorithm)
        except ValueError as e:  # an unknown op name, or a config AEQ checks and refuses
            text = str(e).split(" Error: ")[-1].splitlines()[0]
            if "not found in the policy" in text or "No policy was specified" in text:
                text = "AEQ 0.10's policy has no such config for this op"
            raise ConfigError(f"AEQ cannot give {layer.op} {layer.recipe} ({layer.algorithm}, "
                              f"{layer.granularity}): {text[:200]}",
                              tip="pick another recipe for that op, or op='*'") from None  # fmt: skip
        return
    # Every op: the algorithm and the granularity where AEQ has them, min_max and channelwise
    # on the other ops (AEQ would leave those float). Later entries of one regex win.
    blockwise = asked != channelwise
    supported = set(algorithm_manager.get_supported_ops(algorithm))
    everywhere = supported >= set(algorithm_manager.get_supported_ops(names.MIN_MAX_UNIFORM_QUANT))
    add(op_all, algorithm if everywhere else names.MIN_MAX_UNIFORM_QUANT,
        channelwise if blockwise else asked)
    ops = [] if everywhere else sorted(set(supported) - {qtyping.TFLOperationName.INPUT,
                                                         qtyping.TFLOperationName.OUTPUT}, key=str)
    for op in ops:
        try:
            add(op, algorithm, channelwise if blockwise else asked)
        except ValueError:  # this op cannot take this config with this algorithm
            continue
    if blockwise:
        for op in BLOCKWISE_OPS:
            op = qtyping.TFLOperationName(op)
            try:
                add(op, algorithm if op in supported else names.MIN_MAX_UNIFORM_QUANT)
            except ValueError:
                continue


def _normalize_scopes(scopes) -> list[tuple[str, AeqLayer]]:
    from pydantic import ValidationError

    normalized = []
    for k, item in enumerate(scopes or []):
        try:
            regex, layer = item
        except (TypeError, ValueError):
            raise ConfigError(f"scope {k}: expected (regex, layer config), got {item!r}") from None
        try:
            re.compile(regex)
        except (re.error, TypeError) as e:
            raise ConfigError(f"scope {k}: bad regex {regex!r}: {e}") from None
        if not isinstance(layer, AeqLayer):
            try:
                layer = AeqLayer.model_validate(layer)
            except ValidationError as e:
                first = e.errors()[0]
                raise ConfigError(f"scope {k} ({regex!r}): {first['msg']}",
                                  tip="a scope's config is {recipe, algorithm, granularity, op}") from None
        normalized.append((regex, layer))
    return normalized


def _calibration_data(data: bytes, calibration_inputs: dict[str, np.ndarray],
                      count: int) -> tuple[dict[str, list[dict[str, np.ndarray]]], int]:
    """AEQ's calibration data ({signature: [{input: one sample}, ...]}) from arrays of samples."""
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=bytes(data)).get_signature_list()
    if not signatures:
        raise ModelError("the float model has no signature; AEQ calibrates by signature",
                         tip="convert with tf.lite.TFLiteConverter (it adds serving_default)")  # fmt: skip
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    inputs = list(signatures[key]["inputs"])
    arrays = dict(calibration_inputs)
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0] not in arrays:
        arrays = {inputs[0]: next(iter(arrays.values()))}  # one input: its name does not matter
    missing = [name for name in inputs if name not in arrays]
    if missing:
        raise ConfigError(f"calibration inputs lack {missing} (the model's inputs: {inputs})")
    n = min(count, *(len(arrays[name]) for name in inputs))
    if n < 1:
        raise ConfigError("no calibration samples")
    samples = [{name: np.asarray(arrays[name][i : i + 1], dtype=np.float32) for name in inputs}
               for i in range(n)]  # fmt: skip
    return {key: samples}, n


def _global_range(qsv: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge one sample's statistics into the running ones: the min and max over all samples
    (AEQ's default is a moving average of each sample's min and max, smoothing 0.95, which
    clips every activation whose extremes come from a few samples), and GPTQ's Hessian as the
    sample-weighted mean (AEQ's min/max updates drop it when another op shares the tensor)."""
    if not qsv:
        return new
    merged = dict(qsv)
    merged["min"] = np.minimum(qsv["min"], new["min"])
    merged["max"] = np.maximum(qsv["max"], new["max"])
    if "hessian" in new:
        if "hessian" in qsv:
            n, m = qsv.get("num_samples", 0), new.get("num_samples", 0)
            merged["hessian"] = (qsv["hessian"] * n + new["hessian"] * m) / max(n + m, 1)
            merged["num_samples"] = n + m
        else:
            merged["hessian"], merged["num_samples"] = new["hessian"], new.get("num_samples", 0)
    return merged


def _calibrate(data: bytes, recipe: list[dict[str, Any]], samples: dict) -> dict[str, Any]:
    """AEQ's calibration (its Calibrator runs the float model keeping every tensor) with
    ranges over all samples (`_global_range`)."""
    from ai_edge_quantizer import calibrator, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe)
    calib = calibrator.Calibrator(bytes(data), num_threads=max(1, os.cpu_count() or 1),
                                  qsv_update_func=_global_range)  # fmt: skip
    calib.calibrate(samples, manager)
    return calib.get_model_qsvs()


def quantize_tflite(float_path: str | Path, out_path: str | Path, params: AeqParams | dict,
                    calibration_inputs: dict[str, np.ndarray] | None = None,
                    scopes: Sequence[tuple[str, AeqLayer | dict]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Quantize a float .tflite with AEQ and write the result to `out_path`.

    `params` is the scheme (its recipe on every op); `scopes` are (regex, AeqLayer or dict)
    overrides applied after it in order, the later winning where they overlap, e.g.
    `[("stem|block_1", {"recipe": "static_wi8_ai16"})]` on a static_wi8_ai8 scheme. A regex is
    searched in an op's scope: its output tensor names joined by ';' (AEQ's definition).
    `calibration_inputs` maps the model's input name (any name, for one input) to float32
    samples (N, ...), of which the first `params.calibration_images` are used; recipes that
    need calibration (`needs_calibration`) raise a ConfigError without them.

    Returns seconds (total and per stage), what was asked (`params`, `scopes`, `recipe`: AEQ's
    recipe as JSON, `asked`: per op), what came out (`size`, `io`), `calibration_images` used
    and `skipped` (`skipped_ops`). Raises ModelError for a quantized input or a zero scale
    (the bad file is not written)."""
    started = time.perf_counter()
    params = params if isinstance(params, AeqParams) else AeqParams.model_validate(params)
    layers = _normalize_scopes(scopes)
    float_path = Path(float_path)
    if not float_path.is_file():
        raise ModelError(f"float model not found: {float_path}")
    data = float_path.read_bytes()
    _refuse_quantized(data, float_path)
    quantizer, _, _ = _aeq()
    from quantbench.core import atomic

    q = quantizer.Quantizer(bytearray(data))
    _add_layer(q, f".*(?#qb:{_BASE})", params.layer())
    for k, (regex, layer) in enumerate(layers):
        _add_layer(q, f"(?:{regex})(?#qb:scope {k})", layer)
    recipe = json.loads(json.dumps(q.get_quantization_recipe()))
    asked = plan(data, recipe)

    calibration, used, calibration_seconds = None, 0, 0.0
    if q.need_calibration:
        if calibration_inputs is None:
            raise ConfigError(f"{slug(params)} needs calibration images "
                              f"({params.recipe}, {params.algorithm})")  # fmt: skip
        t = time.perf_counter()
        samples, used = _calibration_data(data, calibration_inputs, params.calibration_images)
        calibration = _calibrate(data, q.get_quantization_recipe(), samples)
        calibration_seconds = time.perf_counter() - t
    t = time.perf_counter()
    try:
        result = q.quantize(calibration, enable_progress_bar=False, enable_progress_report=False)
    except ValueError as e:
        if "not divisible by block size" not in str(e):
            raise
        text = str(e).split(" Error: ")[-1].strip().splitlines()[0]
        raise ConfigError(f"{slug(params)}: {text}",
                          tip="use a smaller block (blockwise_32) or granularity=channelwise") from None  # fmt: skip
    model = bytes(result.quantized_model)
    quantize_seconds = time.perf_counter() - t
    inspected = _inspect(model)
    error = zero_scale_error(inspected) or broken_weights_error(inspected)
    if error is not None:
        raise error
    atomic.write_bytes(out_path, model)
    return {
        "seconds": time.perf_counter() - started,
        "calibration_seconds": calibration_seconds,
        "quantize_seconds": quantize_seconds,
        "slug": slug(params),
        "params": params.model_dump(mode="json"),
        "scopes": [[regex, layer.model_dump(mode="json")] for regex, layer in layers],
        "calibration_images": used,
        "recipe": recipe,
        "size": len(model),
        "io": io_types(model),
        "asked": asked,
        "skipped": skipped_ops(asked, inspected),
        "warnings": _warnings(inspected),
    }


def aeq_request(payload: dict[str, Any]) -> dict[str, Any]:
    """The worker's `aeq` op: {float_model, out, params (dict or JSON text), calibration (an
    .npy of float32 images (N, H, W, C), or None), scopes (optional [[regex, layer], ...])} ->
    {seconds, error} plus, on success, what `quantize_tflite` returns. A failure is an error
    string (the scheme is recorded as failed), not an exception."""
    started = time.perf_counter()
    try:
        params = payload["params"]
        if isinstance(params, str):
            params = json.loads(params)
        calibration = None
        if payload.get("calibration"):
            calibration = {"input": np.load(payload["calibration"], mmap_mode="r")}
        reply = quantize_tflite(payload["float_model"], payload["out"], params, calibration,
                                payload.get("scopes"))  # fmt: skip
        return {**reply, "error": None}
    except QuantbenchError as e:
        text = e.message + (f" ({e.tip})" if e.tip else "")
        return {"seconds": time.perf_counter() - started, "error": text}
    except Exception as e:  # noqa: BLE001 - AEQ's own failures are recorded, not raised
        first = (str(e).strip().splitlines() or [""])[0][:400]
        return {"seconds": time.perf_counter() - started,
                "error": f"{type(e).__name__}: {first or 'no message'}"}
