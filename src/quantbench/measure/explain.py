"""Why a variant is slow or odd, in one-line notes derived from the LiteRT interpreter itself.

What runs where: LiteRT applies XNNPACK when tensors are allocated, appending one DELEGATE
node per partition of ops it took over; the original nodes stay listed but leave the execution
plan. The interpreter does not expose the plan, so we recover each partition's ops from the
dataflow: walking back from a DELEGATE node's outputs to its inputs visits exactly the nodes it
replaced (every tensor a partition consumes but does not produce is one of its inputs).
Operand types then say which kernels an op gets: float activations with int8 weights are
hybrid (dynamic-range) kernels, int16 activations are int16x8 kernels, and a QUANTIZE feeding
a DEQUANTIZE is a fake-quant round trip left by converting a QAT model without optimization.

The interpreter reports int4 tensors as int8, so weight types (and their quantization scales)
are read from the flatbuffer itself (`file_weights`): int4 weights used directly by an op
(AEQ's dynamic int4) or expanded by a DEQUANTIZE at run time (its weight-only int4), and which
of those ops XNNPACK took (measured with LiteRT 2.3: FULLY_CONNECTED only; int4 CONV_2D and
every int4 DEQUANTIZE run on the builtin kernels). A zero scale, which XNNPACK refuses at load,
is named by `load_failure`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantbench.measure.filestats import constant_bytes

if TYPE_CHECKING:
    from quantbench.core.results import LatencyResult

INTEGER_TYPES = ("int8", "uint8", "int16")
SAME_SPEED = 0.10  # within 10% of the reference counts as "as fast"
# Interpreter vs CompiledModel beyond this ratio gets a note. Quiet, they agree within 5% on
# every scheme (benchmarks/runtimes.py); a partly delegated model under load differs 10x+.
RUNTIMES_DIFFER = 1.5


@dataclass(frozen=True)
class Op:
    index: int
    name: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    constant_inputs: tuple[bool, ...]  # per input: a weight (no node makes it, not a model input)
    delegated: bool = False

    @property
    def hybrid(self) -> bool:
        """Float activations in and out, int8 weights: a dynamic-range (hybrid) kernel."""
        if self.name in ("QUANTIZE", "DEQUANTIZE") or not self.input_types or not self.output_types:
            return False
        return (
            self.input_types[0] == "float32"
            and self.output_types[0] == "float32"
            and any(t == "int8" and c for t, c in zip(self.input_types, self.constant_inputs))
        )

    @property
    def int16(self) -> bool:
        return "int16" in self.output_types and self.name not in ("QUANTIZE", "DEQUANTIZE")


# Ops whose input 1 is a weight (the ones AEQ and the converter quantize).
WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL",
                        "EMBEDDING_LOOKUP", "TRANSPOSE_CONV"})  # fmt: skip


@dataclass(frozen=True)
class FileOp:
    """One operator of the file's main subgraph as stored: its weight's type, read from the
    flatbuffer (int4 included), and that weight's zero quantization scales."""

    name: str
    weight: str | None = None  # int4, int8, float16, float32; None: no weight
    via_dequantize: bool = False  # the weight reaches the op through a DEQUANTIZE
    weight_tensor: str = ""
    zero_scales: int = 0
    blockwise: int | None = None  # the block size of blockwise scales
    dequantizes: str | None = None  # a DEQUANTIZE of a constant: the constant's type


def _scales(data: bytes, root: Any, sub: Any, q: Any, fb: Any) -> tuple[np.ndarray | None, int | None]:
    """A quantized tensor's scales (the float16 scales tensor of blockwise quantization too)
    and the block size (None: per tensor or per channel)."""
    if q is None:
        return None, None
    if q.DetailsType() == fb.QuantizationDetails.BlockwiseQuantization:
        table = q.Details()
        details = fb.BlockwiseQuantization()
        details.Init(table.Bytes, table.Pos)
        scales = sub.Tensors(details.Scales())
        dtype = np.float16 if scales.Type() == fb.TensorType.FLOAT16 else np.float32
        return np.frombuffer(constant_bytes(data, root, scales), dtype=dtype), int(details.BlockSize())
    return (q.ScaleAsNumpy() if q.ScaleLength() else None), None


def file_weights(model_path: str | Path) -> list[FileOp]:
    """Per operator of the file's main subgraph, in order: its weight as stored (followed back
    through a DEQUANTIZE), read with LiteRT's flatbuffer schema (no interpreter)."""
    from ai_edge_litert import schema_py_generated as fb

    data = Path(model_path).read_bytes()
    root = fb.Model.GetRootAs(data, 0)
    op_names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    codes = []
    for i in range(root.OperatorCodesLength()):
        code = root.OperatorCodes(i)
        codes.append(op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?"))
    sub = root.Subgraphs(0)
    operators = [sub.Operators(k) for k in range(sub.OperatorsLength())]

    def inputs(o: Any) -> list[int]:
        return [int(i) for i in o.InputsAsNumpy()] if o.InputsLength() else []

    def constant(index: int) -> bool:
        return index >= 0 and bool(constant_bytes(data, root, sub.Tensors(index)))

    producer = {int(t): k for k, o in enumerate(operators)
                for t in (o.OutputsAsNumpy() if o.OutputsLength() else [])}  # fmt: skip
    ops = []
    for o in operators:
        name, ins = codes[o.OpcodeIndex()], inputs(o)
        if name == "DEQUANTIZE" and ins and constant(ins[0]):
            ops.append(FileOp(name, dequantizes=types.get(sub.Tensors(ins[0]).Type(), "?")))
            continue
        if name not in WEIGHT_OPS or len(ins) < 2 or ins[1] < 0:
            ops.append(FileOp(name))
            continue
        weight, via = ins[1], False
        source = producer.get(weight)
        if source is not None and codes[operators[source].OpcodeIndex()] == "DEQUANTIZE":
            first = inputs(operators[source])[:1]
            if first and constant(first[0]):
                weight, via = first[0], True
        if not constant(weight):
            ops.append(FileOp(name))
            continue
        tensor = sub.Tensors(weight)
        scales, block = _scales(data, root, sub, tensor.Quantization(), fb)
        ops.append(FileOp(name, types.get(tensor.Type(), "?"), via,
                          (tensor.Name() or b"").decode("utf-8", "replace"),
                          int((scales == 0).sum()) if scales is not None else 0, block))  # fmt: skip
    return ops


def load_failure(model_path: str | Path, message: str) -> str | None:
    """Why LiteRT refused this file, when the file itself says so (else None): weights with a
    zero quantization scale, which XNNPACK refuses ('unsupported scale value (0.000000)')."""
    if "scale" not in message:
        return None
    try:
        ops = file_weights(model_path)
    except Exception:  # noqa: BLE001 - not a flatbuffer we can read: nothing to add
        return None
    bad = [op for op in ops if op.zero_scales]
    if not bad:
        return None
    first = bad[0]
    kind = f"blockwise ({first.blockwise})" if first.blockwise else "per-channel"
    return (f"{sum(op.zero_scales for op in bad)} zero quantization scale(s) in {len(bad)} weight "
            f"tensor(s) (first: {first.weight_tensor!r} of a {first.name}, {first.weight} "
            f"{kind}), which XNNPACK refuses to load: each marks a block or channel whose weights "
            f"are all zero (or, in float16 blockwise scales, below ~4e-7); quantize it "
            f"channelwise, or keep that layer out of the blockwise scope")  # fmt: skip


def _dtype_name(wrapper: Any, tensor: int) -> str:
    try:
        return np.dtype(wrapper.TensorType(tensor, 0)).name
    except (ValueError, TypeError):
        return "unknown"


def analyze(interpreter: Any) -> tuple[list[Op], int]:
    """(the model's ops in subgraph 0 with `delegated` set, number of XNNPACK partitions).

    `interpreter` must have allocated its tensors (that is when LiteRT applies XNNPACK).
    """
    wrapper = interpreter._interpreter  # noqa: SLF001 - LiteRT exposes node lists only here
    nodes = [
        (wrapper.NodeName(i), tuple(t for t in wrapper.NodeInputs(i) if t >= 0),
         tuple(t for t in wrapper.NodeOutputs(i) if t >= 0))
        for i in range(wrapper.NumNodes())
    ]  # fmt: skip
    original = [i for i, (name, _, _) in enumerate(nodes) if name != "DELEGATE"]
    producer = {t: i for i in original for t in nodes[i][2]}
    model_inputs = set(interpreter._interpreter.InputIndices())  # noqa: SLF001
    delegated: set[int] = set()
    partitions = 0
    for name, inputs, outputs in nodes:
        if name != "DELEGATE":
            continue
        partitions += 1
        boundary, stack = set(inputs), list(outputs)
        while stack:
            tensor = stack.pop()
            if tensor in boundary or tensor not in producer or producer[tensor] in delegated:
                continue
            delegated.add(producer[tensor])
            stack.extend(nodes[producer[tensor]][1])
    ops = []
    for i in original:
        name, inputs, outputs = nodes[i]
        ops.append(Op(
            i, name, inputs, outputs,
            tuple(_dtype_name(wrapper, t) for t in inputs),
            tuple(_dtype_name(wrapper, t) for t in outputs),
            tuple(t not in producer and t not in model_inputs for t in inputs),
            i in delegated,
        ))  # fmt: skip
    return ops, partitions


def delegated_ops(interpreter: Any) -> tuple[int, int]:
    """(ops XNNPACK took over, ops in the model) for an allocated interpreter."""
    ops, _ = analyze(interpreter)
    return sum(op.delegated for op in ops), len(ops)


def _fake_quant(ops: list[Op]) -> tuple[int, int, Counter]:
    """(QUANTIZE->DEQUANTIZE pairs, how many act on weights, undelegated ops fed those weights)."""
    consumers: dict[int, list[Op]] = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    pairs = on_weights = 0
    weight_users: Counter = Counter()
    for op in ops:
        if op.name != "QUANTIZE" or op.input_types[:1] != ("float32",):
            continue
        for t in op.outputs:
            for dq in consumers.get(t, []):
                if dq.name != "DEQUANTIZE" or dq.output_types[:1] != ("float32",):
                    continue
                pairs += 1
                if op.constant_inputs[:1] == (True,):
                    on_weights += 1
                    weight_users.update(c.name for u in dq.outputs for c in consumers.get(u, [])
                                        if not c.delegated)
    return pairs, on_weights, weight_users


def op_summary(model_path: str | Path) -> dict[str, Any]:
    """What the model's ops are and where they run under XNNPACK (1 thread)."""
    from quantbench.measure import litert

    interpreter = litert.open_interpreter(model_path, threads=1, xnnpack=True)
    interpreter.allocate_tensors()
    ops, partitions = analyze(interpreter)
    pairs, weight_pairs, weight_users = _fake_quant(ops)
    int4 = _int4(model_path, ops)
    return {
        **int4,
        "total_ops": len(ops),
        "ops": dict(Counter(op.name for op in ops)),
        "delegated_ops": sum(op.delegated for op in ops),
        "partitions": partitions,
        "not_delegated": dict(Counter(op.name for op in ops if not op.delegated)),
        "hybrid": dict(Counter(op.name for op in ops if op.hybrid)),
        "hybrid_not_delegated": dict(
            Counter(op.name for op in ops if op.hybrid and not op.delegated)
        ),
        "int16": dict(Counter(op.name for op in ops if op.int16)),
        "fake_quant_pairs": pairs,
        "fake_quant_weight_pairs": weight_pairs,
        "fake_quant_weight_users": dict(weight_users),
        "float16_weights": sum(
            op.name == "DEQUANTIZE" and op.input_types[:1] == ("float16",) for op in ops
        ),
        "input_dtype": np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        "output_dtype": np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
    }


def _int4(model_path: str | Path, ops: list[Op]) -> dict[str, Any]:
    """Where the file's int4 weights run: ops using them directly (delegated or not),
    DEQUANTIZE ops expanding them (delegated or not) and the undelegated ops those feed, and
    the weight types of the hybrid ops (the interpreter calls int4 int8)."""
    try:
        stored = file_weights(model_path)
    except Exception:  # noqa: BLE001 - a layout we cannot read: no int4 figures
        stored = []
    # Interpreter nodes 0..n-1 are the file's operators in order (delegate nodes come after).
    if [op.name for op in ops] != [f.name for f in stored[: len(ops)]] or len(stored) != len(ops):
        stored = []
    consumers: dict[int, list[Op]] = {}
    for op in ops:
        for t in op.inputs:
            consumers.setdefault(t, []).append(op)
    direct = [(op, f) for op, f in zip(ops, stored) if f.weight == "int4" and not f.via_dequantize]
    dequantize = [op for op, f in zip(ops, stored) if f.dequantizes == "int4"]
    fed = Counter(c.name for dq in dequantize for t in dq.outputs for c in consumers.get(t, [])
                  if not c.delegated)  # fmt: skip
    return {
        "int4_weights": dict(Counter(op.name for op, _ in direct)),
        "int4_delegated": dict(Counter(op.name for op, _ in direct if op.delegated)),
        "int4_not_delegated": dict(Counter(op.name for op, _ in direct if not op.delegated)),
        "int4_dequantize": len(dequantize),
        "int4_dequantize_delegated": sum(op.delegated for op in dequantize),
        "int4_dequantize_feeds": dict(fed),
        "hybrid_weight_types": sorted({f.weight for op, f in zip(ops, stored) if op.hybrid and f.weight}),
        "zero_scales": sum(f.zero_scales for f in stored),
    }


def _int4_notes(s: dict[str, Any]) -> list[str]:
    notes = []
    if s.get("int4_weights"):
        n = sum(s["int4_weights"].values())
        on, off = s["int4_delegated"], s["int4_not_delegated"]
        text = f"int4 weights: {n} ops ({_counts(s['int4_weights'])}) compute with int4 weights; "
        if not off:
            text += "XNNPACK runs all of them"
        elif not on:
            text += "all run on LiteRT's builtin kernels (XNNPACK has no int4 kernel for them)"
        else:
            text += (f"XNNPACK runs {sum(on.values())} ({_counts(on)}) and LiteRT's builtin "
                     f"kernels the other {sum(off.values())} ({_counts(off)}), which XNNPACK has "
                     f"no int4 kernel for")  # fmt: skip
        notes.append(text)
    count, taken = s.get("int4_dequantize", 0), s.get("int4_dequantize_delegated", 0)
    if count:
        if taken < count:
            feeds = s["int4_dequantize_feeds"]
            text = (f"int4 weights: {count - taken} DEQUANTIZE ops expand int4 weights to float32 "
                    f"on every invoke on LiteRT's builtin kernels (XNNPACK takes the DEQUANTIZE of "
                    f"int8 and float16 weights at load time, not of int4)")  # fmt: skip
            if feeds:
                text += (f", so the {_counts(feeds)} they feed get run-time weights and run "
                         f"outside XNNPACK too")  # fmt: skip
            notes.append(text)
        else:
            notes.append(f"int4 weights: {count} DEQUANTIZE ops expand int4 weights, taken by "
                         f"XNNPACK at load time")  # fmt: skip
    if s.get("zero_scales"):
        notes.append(f"{s['zero_scales']} weight quantization scale(s) are zero: those blocks or "
                     f"channels compute zeros, and XNNPACK refuses such weights")  # fmt: skip
    return notes


def _counts(counter: dict[str, int], limit: int = 4) -> str:
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{n} {name}" for name, n in items[:limit])
    return text + (f", {sum(n for _, n in items[limit:])} more" if len(items) > limit else "")


def _headline(latency: list[LatencyResult]) -> LatencyResult | None:
    """The figure VariantResult.latency_ms() reports: first thread count, XNNPACK preferred,
    then the Interpreter."""
    if not latency:
        return None
    rows = [r for r in latency if r.threads == latency[0].threads]
    return sorted(rows, key=lambda r: (r.delegate != "xnnpack", r.runtime != "interpreter"))[0]


def _others(r: LatencyResult) -> str:
    """' (others used 0.93 cores during it)', or '' when not recorded."""
    return "" if r.other_cpu is None else f" (other processes used {r.other_cpu:.2f} cores during it)"


def busy_notes(latency: list[LatencyResult]) -> list[str]:
    """One note when figures were timed while other processes took the cores they needed."""
    flagged = [r for r in latency if r.busy]
    if not flagged:
        return []
    low, high = min(r.other_cpu or 0.0 for r in flagged), max(r.other_cpu or 0.0 for r in flagged)
    span = f"{low:.2f}" if low == high else f"{low:.2f}-{high:.2f}"
    which = ", ".join(f"{r.threads}t {r.runtime} {r.median_ms:.3g} ms" for r in flagged)
    return [f"busy machine: {len(flagged)} of {len(latency)} latency figures ({which}) were timed "
            f"while other processes used {span} of {_cores()} cores; they may be slower than "
            f"the model"]  # fmt: skip


def _cores() -> int:
    from quantbench.measure.busy import cores

    return cores()


def runtime_notes(latency: list[LatencyResult], mixed: bool = False) -> list[str]:
    """Where the Interpreter and CompiledModel differ by more than RUNTIMES_DIFFER."""
    by_key = {(r.threads, r.delegate, r.runtime): r for r in latency}
    notes = []
    for (threads, delegate, runtime), interp in sorted(by_key.items()):
        compiled = by_key.get((threads, delegate, "compiled"))
        if runtime != "interpreter" or compiled is None:
            continue
        ratio = interp.median_ms / compiled.median_ms
        if 1 / RUNTIMES_DIFFER <= ratio <= RUNTIMES_DIFFER:
            continue
        plural = "s" * (threads != 1)
        text = (f"the Interpreter takes {interp.median_ms:.3g} ms and CompiledModel "
                f"{compiled.median_ms:.3g} ms at {threads} thread{plural} ({delegate}, "
                f"{max(ratio, 1 / ratio):.1f}x)")  # fmt: skip
        if ratio > 1 and mixed and delegate == "xnnpack" and threads > 1:
            text += (": the Interpreter gives its ops outside XNNPACK their own thread pool "
                     "besides XNNPACK's, and the two pools wait for each other at every "
                     "partition boundary when other processes hold a core"
                     + _others(interp) + "; CompiledModel runs those ops on the calling thread")  # fmt: skip
        notes.append(text)
    return notes


def _speed(ratio: float) -> str:
    if abs(ratio - 1) < SAME_SPEED:
        return f"as fast as ({ratio:.2f}x the time of)"
    return f"{ratio:.1f}x slower than" if ratio > 1 else f"{1 / ratio:.1f}x faster than"


def _latency_notes(latency: list[LatencyResult], reference_ms: float | None,
                   mixed: bool = False) -> list[str]:  # fmt: skip
    """Notes from the figures; `mixed`: some but not all ops run on XNNPACK."""
    notes = []
    head = _headline(latency)
    if head is None:
        return notes
    everything, latency = latency, [r for r in latency if r.runtime == head.runtime]
    where = f"{head.threads} thread{'s' if head.threads > 1 else ''}, {head.delegate}"
    if reference_ms and head.median_ms != reference_ms:
        notes.append(f"{_speed(head.median_ms / reference_ms)} the float32 variant "
                     f"({head.median_ms:.3g} vs {reference_ms:.3g} ms median, {where})")  # fmt: skip
    by_key = {(r.threads, r.delegate): r for r in latency}
    for (threads, delegate), row in by_key.items():
        other = by_key.get((threads, "none"))
        if delegate == "xnnpack" and other is not None:
            ratio = other.median_ms / row.median_ms
            verdict = "no faster than" if ratio < 1 + SAME_SPEED else f"{ratio:.1f}x faster than"
            plural = "s" * (threads != 1)
            notes.append(f"with XNNPACK it is {verdict} on the builtin kernels "
                         f"({row.median_ms:.3g} vs {other.median_ms:.3g} ms, {threads} thread{plural})")  # fmt: skip
            break
    threads = sorted({r.threads for r in latency if r.delegate == head.delegate})
    if len(threads) > 1:
        one, many = by_key[(threads[0], head.delegate)], by_key[(threads[-1], head.delegate)]
        gain = one.median_ms / many.median_ms
        times = f"({many.median_ms:.3g} vs {one.median_ms:.3g} ms)"
        if gain < 1 / 1.5:
            pools = (" (its ops outside XNNPACK use LiteRT's own thread pool besides XNNPACK's)"
                     if mixed and head.delegate == "xnnpack" else "")  # fmt: skip
            notes.append(f"{threads[-1]} threads are {1 / gain:.1f}x slower than {threads[0]} "
                         f"{times}: its threads wait for each other, which collapses when other "
                         f"processes hold the cores{pools}{_others(many)}")  # fmt: skip
        elif gain < 1 + SAME_SPEED:
            held = ("other processes held the cores" if many.other_cpu is None
                    else "other processes held the cores" + _others(many) if many.busy
                    else f"the model is too small to split{_others(many)}")  # fmt: skip
            notes.append(f"{threads[-1]} threads are no faster than {threads[0]} {times}: {held}")
    contended = [
        r for r in latency if r.threads == 1 and r.cpu_ms and r.cpu_ms < 0.85 * r.median_ms
    ]
    if contended:
        r = contended[0]
        notes.append(f"measured under contention: the 1-thread invokes spent only "
                     f"{r.cpu_ms / r.median_ms:.0%} of their time on a CPU ({r.cpu_ms:.3g} ms CPU "
                     f"vs {r.median_ms:.3g} ms wall); other processes held the cores")  # fmt: skip
    notes += runtime_notes(everything, mixed) + busy_notes(everything)
    capped = [r for r in latency if r.capped]
    if capped:
        notes.append(f"only {capped[0].runs} timed runs at {capped[0].threads} threads: the time "
                     f"cap stopped the loop ({capped[0].median_ms:.3g} ms per invoke)")  # fmt: skip
    return notes


def explain(
    model_path: str | Path,
    latency: list[LatencyResult] | None = None,
    reference_latency_ms: float | None = None,
) -> list[str]:
    """One-line notes on why this .tflite is slow or odd (empty when nothing stands out).

    `reference_latency_ms`: the float32 variant's headline median, to state the ratio.
    """
    s = op_summary(model_path)
    notes = []
    total, delegated = s["total_ops"], s["delegated_ops"]
    if delegated == 0:
        notes.append(f"XNNPACK runs none of its {total} ops: all run on LiteRT's builtin kernels")
    elif delegated < total:
        k = s["partitions"]
        notes.append(f"XNNPACK runs {delegated} of {total} ops in {k} partition{'s' * (k != 1)}; "
                     f"left to builtin kernels: {_counts(s['not_delegated'])}")  # fmt: skip
    if s["hybrid"]:
        n = sum(s["hybrid"].values())
        left = sum(s["hybrid_not_delegated"].values())
        tail = (f"; {left} of them ({_counts(s['hybrid_not_delegated'])}) are not delegated"
                if left else "")  # fmt: skip
        weights = " or ".join(s.get("hybrid_weight_types") or ["int8"])
        notes.append(f"dynamic range: {n} hybrid ops ({_counts(s['hybrid'])}) take {weights} "
                     f"weights and quantize their float activations on every invoke{tail}")  # fmt: skip
    if s["int16"]:
        n = sum(s["int16"].values())
        notes.append(f"int16x8: {n} ops ({_counts(s['int16'])}) have int16 activations, which "
                     f"XNNPACK does not support; LiteRT's int16 kernels are mostly reference code")  # fmt: skip
    if s["fake_quant_pairs"]:
        on_weights = ""
        if s["fake_quant_weight_pairs"]:
            users = s["fake_quant_weight_users"]
            on_weights = (f" ({s['fake_quant_weight_pairs']} re-quantize weights on every invoke"
                          + (f"; {_counts(users)} get these run-time weights and run outside "
                             f"XNNPACK)" if users else ")"))  # fmt: skip
        notes.append(f"fake quantization: {s['fake_quant_pairs']} QUANTIZE->DEQUANTIZE pairs "
                     f"round-trip float tensors through integers{on_weights}: a QAT model "
                     f"converted without optimization; its int8 conversion removes them")  # fmt: skip
    if s["float16_weights"] and not s["hybrid"] and not s["int16"]:
        notes.append(f"float16 weights: {s['float16_weights']} DEQUANTIZE ops expand them to "
                     f"float32 at load time, so it computes in float32 (half the file, same math)")  # fmt: skip
    notes += _int4_notes(s)
    notes += _latency_notes(list(latency or []), reference_latency_ms, 0 < delegated < total)
    return notes


SPARSE_NOTE_FROM = 0.2  # a share of zero weights worth a note (plain int8 files hold ~1-3%)
FEW_VALUES_UP_TO = 64  # distinct values per channel worth a note (int8 can hold 255)


def storage_notes(weights: Any, latency_ms: float | None, dense_name: str | None,
                  dense_ms: float | None) -> list[str]:  # fmt: skip
    """Say that zeros and shared values do not make LiteRT faster: its kernels (XNNPACK and
    the builtin ones) multiply every stored weight, zeros included; only tensors stored in
    TFLite's sparse format (which the converter writes only when asked to sparsify) could
    skip them. `dense_name`/`dense_ms`: the same conversion of the untransformed model."""
    if weights is None:
        return []
    what = []
    if weights.sparsity >= SPARSE_NOTE_FROM:
        what.append(f"{weights.sparsity:.0%} of its weights are zero")
    # int4 weights hold at most 16 values by construction: no sign of clustering then.
    int4 = any(t.dtype == "int4" for t in weights.tensors)
    if not int4 and 1 < weights.max_unique_per_channel <= FEW_VALUES_UP_TO:
        what.append(f"its weights take at most {weights.max_unique_per_channel} values per channel")
    if not what:
        return []
    versus = ""
    if latency_ms is not None and dense_ms is not None and dense_name:
        versus = f" ({latency_ms:.2f} ms vs {dense_ms:.2f} ms for {dense_name})"
    return [" and ".join(what) + ", but they are stored dense and LiteRT's kernels compute "
            "every weight: this shrinks the compressed (gzip) download, not the latency" + versus]
