"""A .tflite file's graph as plain data: ops, tensors, dtypes, shapes (no interpreter).

Read with LiteRT's own generated flatbuffer schema (`ai_edge_litert.schema_py_generated`),
so the static target checks import neither TensorFlow nor a runtime and never execute the
model. Only the main subgraph (index 0) is described: the ops an accelerator is handed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})


@dataclass(frozen=True)
class Tensor:
    index: int
    name: str
    dtype: str  # the schema's TensorType name: "INT8", "FLOAT32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]  # -1 marks a dimension only known at run time
    constant: bool  # backed by a buffer in the file (weights, biases)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_TYPES


@dataclass(frozen=True)
class Op:
    index: int
    name: str  # the builtin operator's name, e.g. "CONV_2D" (custom ops: "CUSTOM:<code>")
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    ops: tuple[Op, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def op_inputs(self, op: Op) -> list[Tensor]:
        return [self.tensors[i] for i in op.inputs if i >= 0]  # -1: an omitted optional input

    def op_outputs(self, op: Op) -> list[Tensor]:
        return [self.tensors[i] for i in op.outputs if i >= 0]


@lru_cache(maxsize=1)
def _names() -> tuple[dict[int, str], dict[int, str]]:
    from ai_edge_litert import schema_py_generated as fb

    def table(cls: type) -> dict[int, str]:
        return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}

    return table(fb.BuiltinOperator), table(fb.TensorType)


def read_graph(model: str | Path | bytes) -> Graph:
    """The main subgraph of a .tflite file (path or bytes)."""
    from ai_edge_litert import schema_py_generated as fb

    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    root = fb.Model.GetRootAs(data, 0)
    op_names, type_names = _names()
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = op_names.get(builtin, str(builtin))
        if name == "CUSTOM":
            custom = code.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        codes.append(name)
    sub = root.Subgraphs(0)
    tensors = []
    for i in range(sub.TensorsLength()):
        t = sub.Tensors(i)
        buffer = root.Buffers(t.Buffer()) if t.Buffer() < root.BuffersLength() else None
        # Weights live in the buffer's data, or (models over 2 GB, some converters) at an offset.
        constant = bool(buffer is not None and (buffer.DataLength() > 0 or buffer.Offset() > 1))
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        signature = (tuple(int(d) for d in t.ShapeSignatureAsNumpy())
                     if t.ShapeSignatureLength() else shape)  # fmt: skip
        name = (t.Name() or b"").decode("utf-8", "replace")
        tensors.append(Tensor(i, name, type_names.get(t.Type(), str(t.Type())), shape, signature,
                              constant))  # fmt: skip
    ops = []
    for i in range(sub.OperatorsLength()):
        o = sub.Operators(i)
        inputs = tuple(int(x) for x in o.InputsAsNumpy()) if o.InputsLength() else ()
        outputs = tuple(int(x) for x in o.OutputsAsNumpy()) if o.OutputsLength() else ()
        ops.append(Op(i, codes[o.OpcodeIndex()], inputs, outputs))
    graph_inputs = tuple(int(x) for x in sub.InputsAsNumpy()) if sub.InputsLength() else ()
    graph_outputs = tuple(int(x) for x in sub.OutputsAsNumpy()) if sub.OutputsLength() else ()
    return Graph(tuple(ops), tuple(tensors), graph_inputs, graph_outputs)
