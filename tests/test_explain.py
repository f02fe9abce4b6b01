"""Explanations name the ops that make a variant slow or odd, read from the interpreter."""

from __future__ import annotations

import pytest

from quantbench.measure import explain
from quantbench.core.results import LatencyResult


def figure(threads=1, delegate="xnnpack", median=1.0, runs=50, capped=False, cpu=None):
    return LatencyResult(threads=threads, delegate=delegate, runs=runs, warmup_runs=5,
                         median_ms=median, capped=capped, cpu_ms=cpu)  # fmt: skip


def test_float32_runs_entirely_on_xnnpack(tiny_models):
    s = explain.op_summary(tiny_models["float32"])
    assert s["delegated_ops"] == s["total_ops"] and s["partitions"] == 1
    assert not s["hybrid"] and not s["int16"] and not s["fake_quant_pairs"]
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= set(s["ops"])
    assert explain.explain(tiny_models["float32"]) == []  # nothing odd to say


def test_dynamic_range_reports_its_hybrid_ops(tiny_models):
    s = explain.op_summary(tiny_models["dynamic_range"])
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(s["hybrid"])
    assert "DEPTHWISE_CONV_2D" not in s["hybrid"]  # 72 weights: below the quantization threshold
    notes = explain.explain(tiny_models["dynamic_range"])
    hybrid = [n for n in notes if n.startswith("dynamic range:")]
    assert len(hybrid) == 1
    assert "CONV_2D" in hybrid[0] and "FULLY_CONNECTED" in hybrid[0] and "hybrid" in hybrid[0]


def test_int8_softmax_is_left_to_builtin_kernels(tiny_models):
    s = explain.op_summary(tiny_models["int8"])
    assert s["not_delegated"] == {"SOFTMAX": 1}
    assert s["delegated_ops"] == s["total_ops"] - 1
    notes = explain.explain(tiny_models["int8"])
    assert any("left to builtin kernels: 1 SOFTMAX" in n for n in notes)
    assert explain.op_summary(tiny_models["int8_io"])["input_dtype"] == "int8"


def test_int16x8_runs_nothing_on_xnnpack(tiny_models):
    s = explain.op_summary(tiny_models["int16x8"])
    assert s["delegated_ops"] == 0 and s["partitions"] == 0
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(s["int16"])
    notes = explain.explain(tiny_models["int16x8"])
    assert any("XNNPACK runs none" in n for n in notes)
    assert any(n.startswith("int16x8:") and "CONV_2D" in n for n in notes)


def test_float16_weights_are_expanded_at_load(tiny_models):
    s = explain.op_summary(tiny_models["float16"])
    assert s["float16_weights"] > 0 and s["delegated_ops"] == s["total_ops"]
    assert any(n.startswith("float16 weights:") for n in explain.explain(tiny_models["float16"]))


def test_unoptimized_qat_model_shows_fake_quant_pairs(tiny_models):
    s = explain.op_summary(tiny_models["qat_float32"])
    assert s["fake_quant_pairs"] >= 4 and s["fake_quant_weight_pairs"] >= 2
    assert s["delegated_ops"] < s["total_ops"]
    assert set(s["fake_quant_weight_users"]) <= {"CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"}
    notes = explain.explain(tiny_models["qat_float32"])
    assert any(n.startswith("fake quantization:") and "QUANTIZE->DEQUANTIZE" in n for n in notes)


def test_delegated_ops_matches_the_summary(tiny_models):
    from quantbench.measure import litert

    for name in ("float32", "dynamic_range", "int8", "int16x8"):
        interpreter = litert.open_interpreter(tiny_models[name], threads=1)
        interpreter.allocate_tensors()
        s = explain.op_summary(tiny_models[name])
        assert explain.delegated_ops(interpreter) == (s["delegated_ops"], s["total_ops"])


def test_latency_notes(tiny_models):
    path = tiny_models["float32"]
    slow = explain.explain(path, [figure(median=3.0)], reference_latency_ms=1.0)
    assert any("3.0x slower than the float32 variant" in n for n in slow)
    fast = explain.explain(path, [figure(median=0.5)], reference_latency_ms=1.0)
    assert any("2.0x faster than the float32 variant" in n for n in fast)
    same = explain.explain(path, [figure(median=1.0)], reference_latency_ms=1.0)
    assert not any("float32 variant" in n for n in same)  # the reference itself
    both = explain.explain(path, [figure(median=1.0), figure(delegate="none", median=4.0)])
    assert any("4.0x faster than on the builtin kernels" in n for n in both)
    flat = explain.explain(path, [figure(threads=1, median=1.0), figure(threads=2, median=0.98)])
    assert any("2 threads are no faster than 1" in n for n in flat)
    worse = explain.explain(tiny_models["int8"],  # SOFTMAX stays outside XNNPACK
                            [figure(threads=1, median=0.1), figure(threads=2, median=5.0)])
    assert any("2 threads are 50.0x slower than 1" in n and "thread pool" in n for n in worse)
    capped = explain.explain(path, [figure(runs=7, capped=True, median=150.0)])
    assert any("only 7 timed runs" in n for n in capped)
    busy = explain.explain(path, [figure(median=26.0, cpu=13.0)])
    assert any("under contention" in n and "50%" in n for n in busy)
    idle = explain.explain(path, [figure(median=13.2, cpu=13.0)])
    assert not any("contention" in n for n in idle)


@pytest.mark.parametrize("latency", [None, []])
def test_no_latency_no_latency_notes(tiny_models, latency):
    notes = explain.explain(tiny_models["int8"], latency, reference_latency_ms=2.0)
    assert not any("float32 variant" in n for n in notes)


@pytest.mark.parametrize("scheme", ["float32", "dynamic_range", "int8", "int16x8", "qat_float32"])
def test_dataflow_walk_agrees_with_one_delegate_node_per_op(tiny_models, scheme):
    """With node fusion off, LiteRT gives every delegated op its own DELEGATE node: an
    independent count of what XNNPACK took, which the dataflow walk must reproduce."""
    from ai_edge_litert.interpreter import Interpreter

    from quantbench.measure import litert

    unfused = Interpreter(model_path=str(tiny_models[scheme]), num_threads=1,
                          experimental_disable_delegate_node_fusion=True)  # fmt: skip
    unfused.allocate_tensors()
    wrapper = unfused._interpreter
    delegate_nodes = sum(wrapper.NodeName(i) == "DELEGATE" for i in range(wrapper.NumNodes()))
    fused = litert.open_interpreter(tiny_models[scheme], threads=1)
    fused.allocate_tensors()
    assert explain.delegated_ops(fused)[0] == delegate_nodes
    assert explain.delegated_ops(unfused)[0] == delegate_nodes
