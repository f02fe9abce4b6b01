"""What a .tflite file holds, not what was asked of it: its gzip size, and per weight tensor
the share of zeros and the number of distinct values, read from the flatbuffer itself.

Gzip size: the download a user pays for, and where pruning and clustering pay off (a zero or a
repeated value costs a byte in the file but compresses away); the TF model-optimization guides
compare models by it. Level 9 (gzip's own default, `gzip -9`, what a server pre-compressing its
assets uses) and mtime 0, so the figure is reproducible. The guides' helper (zipfile's
ZIP_DEFLATED) uses zlib's default level 6, which came out within 0.1% of level 9 on this
project's MobileNetV2 files (float32, float16, dynamic range, int8, QAT int8; smoke preset) (levels only change how hard deflate searches
for repeats; the zeros and shared values are found at either level).

Weight tensors: the filter input of every CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (the
kernels pruning and clustering act on; biases are left out), followed back through a
DEQUANTIZE when a float16 file stores it in half precision (or a weight-only int4/int8 file in
integers). Values are the stored ones: int8 codes in int8 files, int4 codes (-8..7) in int4
ones (so distinct values are after int8 rounding), float32 in float32 files.
Distinct values are also counted per output channel (axis 0 of conv and fully-connected
filters, axis 3 of depthwise ones), because the converter folds each batch norm's per-channel
scale into the preceding convolution: a kernel clustered to k values holds up to k values
per channel and k x channels per tensor in the file.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from quantbench.core.results import TensorStats, WeightStats

GZIP_LEVEL = 9
_WEIGHT_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # op -> channel axis


def gzip_size(path: str | Path, level: int = GZIP_LEVEL) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=level, mtime=0))


def _type_name(tensor_type: int) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return names[tensor_type].lower()


def _dtype(tensor_type: int):
    return np.dtype(_type_name(tensor_type).replace("bool", "bool_"))


def _values(data: bytes, tensor_type: int, shape) -> np.ndarray:
    """A constant tensor's stored values; int4 is packed two a byte, low nibble first (AEQ's
    int4 weights), and read as int8 codes -8..7."""
    count = int(np.prod(shape))
    if _type_name(tensor_type) == "int4":
        packed = np.frombuffer(data, dtype=np.uint8)
        nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
        nibbles[nibbles > 7] -= 16
        return nibbles.reshape(shape)
    return np.frombuffer(data, dtype=_dtype(tensor_type)).reshape(shape)


def weight_stats(path: str | Path) -> WeightStats:
    """Zeros and distinct values of every weight tensor of the file's main subgraph."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    graph = model.subgraphs[0]
    codes = [flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))]
    producer = {out: op for op in graph.operators for out in (op.outputs if op.outputs is not None else [])}
    seen, tensors = set(), []
    for op in graph.operators:
        axis = _WEIGHT_OPS.get(codes[op.opcodeIndex])
        if axis is None or op.inputs is None or len(op.inputs) < 2:
            continue
        index = int(op.inputs[1])
        source = producer.get(index)
        if source is not None and codes[source.opcodeIndex] == "DEQUANTIZE":
            index = int(source.inputs[0])  # float16 weights
        if index in seen or index < 0:
            continue
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer else None
        if data is None or len(data) == 0:
            continue
        seen.add(index)
        values = _values(bytes(data), tensor.type, tensor.shape)
        channels = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        tensors.append(TensorStats(
            name=name, op=codes[op.opcodeIndex], dtype=_type_name(tensor.type), size=int(values.size), zeros=int((values == 0).sum()),
            unique=int(len(np.unique(values))),
            unique_per_channel=int(max(len(np.unique(row)) for row in channels)),
        ))  # fmt: skip
    return WeightStats.of(tensors)


def constant_bytes(data: bytes, root: Any, tensor: Any) -> bytes:
    """A tensor's constant data in a .tflite file (LiteRT's schema objects; b"" when none)."""
    if tensor.Buffer() <= 0 or tensor.Buffer() >= root.BuffersLength():
        return b""
    buffer = root.Buffers(tensor.Buffer())
    if buffer.DataLength() > 0:
        return buffer.DataAsNumpy().tobytes()
    if buffer.Offset() > 1:  # large models keep the data after the flatbuffer
        return bytes(data[buffer.Offset(): buffer.Offset() + buffer.Size()])
    return b""
