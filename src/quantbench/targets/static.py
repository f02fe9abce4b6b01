"""Static target rules, read from the flatbuffer alone: integer-only and the Edge TPU.

Neither runs the model nor a compiler: they state published requirements as checks on the
graph (graph.py), and name the ops that break them, so a user learns *which* op keeps a
variant off an accelerator before buying one.
"""

from __future__ import annotations

from collections import Counter

from quantbench.targets.graph import Graph, Op

# Quantize/dequantize at the model's edges convert the caller's floats; they are boundaries,
# not float compute.
BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})

# The Edge TPU compiler's supported operations, from Coral's "TensorFlow models on the Edge
# TPU" page (coral.ai/docs/edgetpu/models-intro, "Supported operations"), in TF Lite builtin
# names. Everything else (and every op after the first unsupported one) runs on the CPU.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})  # fmt: skip
EDGETPU_TYPES = frozenset({"INT8", "UINT8", "INT32"})  # int32: biases and shape operands


def _count(names: list[str]) -> str:
    """`CONV_2D x35, ADD x10` (most frequent first)."""
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in Counter(names).most_common())


def float_ops(graph: Graph) -> list[Op]:
    """Ops that compute in floating point: a float input or output that is not the model's
    own float input entering a QUANTIZE or a DEQUANTIZE's output leaving the model."""
    graph_io = set(graph.inputs) | set(graph.outputs)
    out = []
    for op in graph.ops:
        tensors = graph.op_inputs(op) + graph.op_outputs(op)
        if op.name in BOUNDARY_OPS:
            # A boundary op is float compute only when its float side is an inner tensor
            # (float16 weights dequantized for a float CONV_2D, or a float op feeding it).
            floats = [t for t in tensors if t.is_float and not t.constant]
            if any(t.index not in graph_io for t in floats):
                out.append(op)
            elif any(t.is_float and t.constant for t in tensors):
                out.append(op)
            continue
        if any(t.is_float for t in tensors):
            out.append(op)
    return out


def boundaries(graph: Graph) -> tuple[int, int]:
    """(quantize, dequantize) ops in the graph."""
    names = [op.name for op in graph.ops]
    return names.count("QUANTIZE"), names.count("DEQUANTIZE")


def inner_float_tensors(graph: Graph) -> list[int]:
    """Float activations passed from one op to another (not the model's inputs/outputs)."""
    produced = {i for op in graph.ops for i in op.outputs}
    consumed = {i for op in graph.ops for i in op.inputs}
    edges = set(graph.inputs) | set(graph.outputs)
    return sorted(i for i in produced & consumed
                  if i not in edges and graph.tensor(i).is_float)  # fmt: skip


def check_integer_only(graph: Graph) -> tuple[bool, list[str], dict]:
    """No float op and no float tensor between ops; quantize/dequantize at the edges are
    allowed and counted (each costs a pass over the tensor on the CPU)."""
    fops = float_ops(graph)
    inner = inner_float_tensors(graph)
    q, dq = boundaries(graph)
    reasons = []
    if fops:
        reasons.append(f"{len(fops)} float ops: {_count([o.name for o in fops])}")
    if inner:
        reasons.append(f"{len(inner)} float tensors between ops")
    figures = {"float_ops": len(fops), "float_tensors": len(inner), "quantize": q, "dequantize": dq}
    if not reasons:
        reasons.append(f"integer only; {q} quantize and {dq} dequantize at the edges"
                       if q or dq else "integer only, integer input and output")  # fmt: skip
    return not (fops or inner), reasons, figures


def check_edgetpu(graph: Graph) -> tuple[bool, list[str], dict]:
    """Coral's model requirements: 8-bit tensors, static sizes, at most 3 dimensions larger
    than 1, supported ops. Quantize at the input and dequantize at the output run on the CPU
    beside the compiled graph and are reported, not refused."""
    reasons: list[str] = []
    fops = float_ops(graph)
    if fops:
        reasons.append(f"not fully 8-bit: float ops {_count([o.name for o in fops])}")
    wide = sorted({t.dtype for op in graph.ops if op not in fops
                   for t in graph.op_inputs(op) + graph.op_outputs(op)
                   if not (t.is_float or t.constant) and t.dtype not in EDGETPU_TYPES})  # fmt: skip
    if wide:
        reasons.append(f"tensors of type {', '.join(wide)} (the Edge TPU takes 8-bit integers)")
    edge_ok = set()
    for op in graph.ops:  # the caller's float input quantized, the output dequantized
        if op.name == "QUANTIZE" and set(op.inputs) & set(graph.inputs):
            edge_ok.add(op.index)
        if op.name == "DEQUANTIZE" and set(op.outputs) & set(graph.outputs):
            edge_ok.add(op.index)
    unsupported = [op for op in graph.ops if op.name not in EDGETPU_OPS and op.index not in edge_ok]
    if unsupported:
        reasons.append(f"unsupported ops: {_count([o.name for o in unsupported])}")
    dynamic = sorted({t.name or str(t.index) for t in graph.tensors
                      if any(d < 0 for d in t.shape_signature[1:])})  # fmt: skip
    if dynamic:
        reasons.append(f"{len(dynamic)} tensors with run-time sizes (e.g. {dynamic[0]})")
    # Activations only: a CONV_2D's filter is 4-D by definition and maps to the Edge TPU
    # (so are float16 weights once DEQUANTIZE expands them: computed from constants only).
    weights = {t.index for t in graph.tensors if t.constant}
    for op in graph.ops:
        if op.inputs and all(i in weights for i in op.inputs if i >= 0):
            weights.update(op.outputs)
    deep = [t for t in graph.tensors
            if t.index not in weights and any(d > 1 for d in t.shape[:-3])]  # fmt: skip
    if deep:
        example = f"{deep[0].name or deep[0].index}: {list(deep[0].shape)}"
        reasons.append(f"{len(deep)} tensors with more than 3 dimensions larger than 1 "
                       f"(e.g. {example})")  # fmt: skip
    ok = not reasons
    cpu = [graph.ops[i].name for i in sorted(edge_ok)]
    if ok:
        reasons.append("meets the published requirements" + (f"; {_count(cpu)} at the edges "
                       "run on the CPU" if cpu else ""))  # fmt: skip
    figures = {"float_ops": len(fops), "unsupported_ops": len(unsupported),
               "cpu_edge_ops": len(cpu)}  # fmt: skip
    return ok, reasons, figures
