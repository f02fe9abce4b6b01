"""Targets (targets/): integer-only, Edge TPU, GPU analyzer and TF Lite Micro on tiny models;
the recommendation's --target; one smoke-preset run on the real photos for mcu."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from quantbench.core.results import TargetResult
from quantbench.core.config import parse_bytes
from quantbench.targets import TARGETS, judge_all, mcu_facts
from quantbench.targets.graph import read_graph
from quantbench.targets.static import check_edgetpu, check_integer_only

SIZE = 32  # tests/test_latency.py's tiny CNN


def test_float_model_fails_integer_only_and_edgetpu_naming_ops(tiny_models):
    graph = read_graph(tiny_models["float32"])
    ok, reasons, figures = check_integer_only(graph)
    assert not ok and figures["float_ops"] >= 3
    assert "CONV_2D" in reasons[0] and "FULLY_CONNECTED" in reasons[0]
    ok, reasons, _ = check_edgetpu(graph)
    assert not ok
    assert any("float ops" in r and "CONV_2D" in r for r in reasons)


def test_dynamic_range_and_float16_are_not_integer_only(tiny_models):
    for name in ("dynamic_range", "float16"):
        ok, reasons, _ = check_integer_only(read_graph(tiny_models[name]))
        assert not ok, name
    _, reasons, _ = check_edgetpu(read_graph(tiny_models["float16"]))
    assert any("DEQUANTIZE" in r for r in reasons)  # float16 weights are dequantized per op


def test_int8_models_pass_integer_only_and_edgetpu_with_boundaries_counted(tiny_models):
    ok, reasons, figures = check_integer_only(read_graph(tiny_models["int8"]))
    assert ok and (figures["quantize"], figures["dequantize"]) == (1, 1), reasons
    ok, reasons, figures = check_integer_only(read_graph(tiny_models["int8_io"]))
    assert ok and (figures["quantize"], figures["dequantize"]) == (0, 0), reasons
    for name in ("int8", "int8_io"):
        ok, reasons, _ = check_edgetpu(read_graph(tiny_models[name]))
        assert ok, (name, reasons)


def test_int16x8_is_integer_but_not_edgetpu(tiny_models):
    graph = read_graph(tiny_models["int16x8"])
    assert check_integer_only(graph)[0]
    ok, reasons, _ = check_edgetpu(graph)
    assert not ok and any("INT16" in r for r in reasons)


def test_mcu_bisection_finds_a_working_minimum_arena(tiny_models):
    from quantbench.targets.mcu import ARENA_STEP, _open, run_tflm

    data = tiny_models["int8_io"].read_bytes()
    inputs = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    reply = run_tflm(data, inputs)
    assert reply["runs"] and len(reply["predictions"]) == 3
    arena = reply["arena_bytes"]
    assert _open(data, arena)[0] is not None  # the minimum works ...
    assert _open(data, arena - ARENA_STEP)[0] is None  # ... and a step less does not


def test_mcu_refuses_dynamic_range_with_tflm_words(tiny_models):
    from quantbench.targets.mcu import run_tflm

    reply = run_tflm(tiny_models["dynamic_range"].read_bytes(), None)
    assert not reply["runs"]
    assert "Hybrid models are not supported on TFLite Micro" in reply["reason"]


def test_mcu_predictions_match_litert_on_int8(tiny_models):
    from quantbench.measure.evaluate import predict_tflite
    from quantbench.targets.mcu import run_tflm

    inputs = np.random.default_rng(1).uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)
    tflm = run_tflm(tiny_models["int8"].read_bytes(), inputs)["predictions"]
    litert = predict_tflite(tiny_models["int8"], inputs, threads=1).argmax(axis=1).tolist()
    assert sum(a == b for a, b in zip(tflm, litert)) >= 7  # the same kernels' arithmetic


def test_mcu_budgets_and_accuracy_from_facts():
    mcu = TARGETS["mcu"]
    facts = mcu_facts({"runs": True, "arena_bytes": 300 * 1024, "predictions": [0, 1, 1, 0],
                       "seconds_per_image": 0.02}, np.array([0, 1, 0, 0]),
                      np.array([0, 1, 1, 1]))  # fmt: skip
    assert facts["figures"]["accuracy"] == 0.75
    assert facts["figures"]["agreement_litert"] == 0.75
    fits = mcu.judge(facts, 900_000, mcu.params(ram=parse_bytes("512KB"), flash=parse_bytes("1MB")))
    assert fits.ok and "300 KiB" in fits.reasons[0] and "75.0%" in fits.reasons[0]
    small = mcu.judge(facts, 900_000, mcu.params(ram=parse_bytes("256KB"), flash=parse_bytes("512KB")))
    assert not small.ok
    assert any("RAM budget 256 KiB" in r for r in small.reasons)
    assert any("flash budget 512 KiB" in r for r in small.reasons)


def test_parse_bytes():
    assert parse_bytes("512KB") == 524288
    assert parse_bytes("1MB") == parse_bytes("1 MiB") == 1 << 20
    assert parse_bytes("262144") == 262144
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_gpu_report_parsing():
    from quantbench.targets.gpu import parse_report

    ok, reasons, _ = parse_report("...\nYour model looks compatible with GPU delegate on TFLite "
                                  "runtime version 2.22.\n")  # fmt: skip
    assert ok
    ok, reasons, figures = parse_report(
        "Op#3 SEGMENT_SUM(T#1) -> [T#2]\n"
        "GPU COMPATIBILITY WARNING: Not supported op SEGMENT_SUM\n"
        "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 3\n")
    assert ok is False and figures["gpu_warnings"] == 2
    assert "SEGMENT_SUM" in reasons[0]
    assert parse_report("something else")[0] is None


def test_gpu_analyzer_runs_on_a_file(tiny_models):
    from quantbench.targets.gpu import gpu_request

    reply = gpu_request({"model": str(tiny_models["float32"])})
    assert reply["ok"] is True  # conv, pool, dense: all GPU delegate ops


def test_tflm_through_the_worker_layer(tiny_models, tmp_path):
    """The `tflm` op in a worker child: facts for a model it refuses and one it runs."""
    from quantbench.engine.stages.targets import TargetWorker, measure_facts

    inputs = np.random.default_rng(2).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 0])
    worker = TargetWorker(inputs)
    try:
        facts, cacheable = measure_facts(worker, tiny_models["int8_io"], labels)
        assert cacheable and facts["mcu"]["ok"] and facts["mcu"]["figures"]["arena_bytes"] > 0
        assert facts["mcu"]["figures"]["images"] == 4
        assert set(facts) == {"integer_only", "edgetpu", "mcu", "gpu"}
        refused, _ = measure_facts(worker, tiny_models["dynamic_range"], labels)
        assert not refused["mcu"]["ok"] and "Hybrid" in refused["mcu"]["reasons"][0]
    finally:
        worker.close()
    judged = judge_all(facts, 5000)
    assert list(judged) == ["mcu", "edgetpu", "gpu", "integer_only"]


def _results_with(targets_by_variant: dict[str, dict[str, TargetResult]]):
    from tests.fixtures_results import make_results

    results = make_results()
    for v in results.variants:
        v.targets = targets_by_variant.get(v.variant, {})
    return results


def test_recommend_target_rules_out_with_the_reason():
    from quantbench.core.config import RecommendConfig
    from quantbench.analysis.recommend import recommend

    results = _results_with({})
    names = [v.variant for v in results.rows(0) if v.kind == "tflite" and v.ok]
    refused = TargetResult(target="mcu", ok=False,
                           reasons=["TFLM: Hybrid models are not supported on TFLite Micro"])
    runs = TargetResult(target="mcu", ok=True, reasons=["runs on TFLM in a 315 KiB arena"])
    keep = names[-1]
    for v in results.variants:
        if v.variant in names:
            v.targets = {"mcu": runs if v.variant == keep else refused}
    rec = recommend(results, RecommendConfig(target="mcu", max_accuracy_drop=100))
    assert rec.chosen == keep
    for name in names[:-1]:
        assert any("Hybrid models are not supported on TFLite Micro" in w for w in rec.ruled_out[name])
    assert "microcontroller" in rec.reason
    assert recommend(results, RecommendConfig(target="cpu", max_accuracy_drop=100)).chosen is not None


def test_table_and_report_show_targets():
    from quantbench.report import render
    from quantbench.present.table import results_table

    results = _results_with({})
    row = next(v for v in results.rows(0) if v.kind == "tflite" and v.ok)
    row.targets = {"mcu": TargetResult(target="mcu", ok=True, reasons=["runs on TFLM"],
                                       figures={"arena_bytes": 322560, "accuracy": 0.84}),
                   "edgetpu": TargetResult(target="edgetpu", ok=False,
                                           reasons=["not fully 8-bit: float ops CONV_2D x35"])}  # fmt: skip
    table = results_table(results)
    assert table.columns[-1].header == "runs on"
    assert "mcu" in list(table.columns[-1].cells)
    html = render(results)
    assert 'id="targets"' in html and "float ops CONV_2D x35" in html and "315" in html


@pytest.mark.subprocess
@pytest.mark.realdata
@pytest.mark.slow
def test_smoke_run_with_mcu_target(real_keras_home, tmp_path):
    """The smoke preset, int8 variants only, few photos: TFLM runs them, scores agree with
    LiteRT within a few photos, dynamic range is refused in TFLM's words."""
    out = tmp_path / "runs"
    env = {"KERAS_HOME": str(real_keras_home)}
    import os

    done = subprocess.run(
        [sys.executable, "-m", "quantbench", "run", "--preset", "smoke", "--output-dir", str(out),
         "--schemes", "dynamic_range,int8,int8_io", "--transforms", "", "--threads", "1",
         "--latency-runs", "3", "--max-images-per-class", "12", "--target", "mcu",
         "--mcu-ram", "512KB"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    results = json.loads(next(out.glob("*/results.json")).read_text())
    rows = {v["variant"]: v for v in results["variants"]}
    for name in ("int8", "int8_io"):
        mcu = rows[name]["targets"]["mcu"]
        assert mcu["ok"], mcu
        assert 0 < mcu["figures"]["arena_bytes"] <= 512 * 1024
        n = mcu["figures"]["images"]
        assert n == rows[name]["eval_images"]  # every scored photo, through TFLM's kernels
        assert abs(mcu["figures"]["accuracy"] - rows[name]["accuracy"]) <= 1.5 / n  # <= 1 photo
        assert mcu["figures"]["agreement_litert"] >= 1 - 1.5 / n
    dr = rows["dynamic_range"]["targets"]["mcu"]
    assert not dr["ok"] and "Hybrid models are not supported" in dr["reasons"][0]
    rec = results["extras"]["recommendation"]
    assert rec["chosen"] in ("int8", "int8_io", None)
    assert any("Hybrid" in w for w in rec["ruled_out"]["dynamic_range"])
    assert "runs on" in done.stdout


def test_stage_caches_facts_and_rejudges_budgets(tiny_models, tmp_path):
    """The targets stage measures once, the executor stores the facts under the file's key,
    and a second run reads them back (no worker) and judges them against the config's budgets."""
    from types import SimpleNamespace

    from quantbench.core.config import RunConfig
    from quantbench.core.results import RunResults, VariantResult
    from quantbench.core.specs import VariantSpec
    from quantbench.engine.context import BaseSource, Context, Resources
    from quantbench.engine.executor import Executor
    from quantbench.engine.stages.jobs import FileJob
    from quantbench.engine.stages.targets import TARGETS_STAGE
    from quantbench.store import Store

    inputs = np.random.default_rng(3).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)

    def check(cfg):
        ctx = Context(RunConfig.model_validate(cfg), tmp_path, SimpleNamespace(val_labels=np.array([0, 1])),
                      Store(tmp_path / "store"), Resources(1, 1), val_inputs=inputs, data_key="d")  # fmt: skip
        path = tiny_models["int8_io"]
        row = VariantResult(variant="int8_io", policy="p", size_bytes=path.stat().st_size)
        job = FileJob(ctx, VariantSpec(), row, path, "f" * 64)
        try:
            produced = Executor(ctx, RunResults(name="t", created="now"), BaseSource()).produce(TARGETS_STAGE, job)
            TARGETS_STAGE.apply(row, produced.product, job)
            return row, produced.reused, set(ctx.services)
        finally:
            ctx.close()

    row, reused, services = check({"targets": {"mcu_ram": "1MB"}})
    assert not reused and services == {"targets"}
    assert row.targets["mcu"].ok and row.targets["integer_only"].ok
    again, reused, services = check({"targets": {"mcu_ram": "1MB", "mcu_flash": 100}})
    assert reused and services == set()  # read back: no worker started
    assert not again.targets["mcu"].ok and "flash budget" in again.targets["mcu"].reasons[0]

def test_tflm_scores_a_seeded_sample_unless_the_mcu_target_asks_for_every_photo():
    """TFLM's reference kernels are slow (25 ms a photo on the default preset's int8): it
    scores `targets.tflm_images` photos, the same ones for every variant of a run, and every
    photo when `--target mcu` is asked or the split is no larger."""
    from types import SimpleNamespace

    from quantbench.core.config import RunConfig
    from quantbench.engine.stages.targets import tflm_sample

    def ctx(n, **cfg):
        return SimpleNamespace(cfg=RunConfig.model_validate(cfg), val_inputs=np.zeros((n, 1)))

    picks = tflm_sample(ctx(551))
    assert len(picks) == 100 and len(set(picks)) == 100 and list(picks) == sorted(picks)
    assert list(tflm_sample(ctx(551))) == list(picks)  # seeded by the split seed
    assert list(tflm_sample(ctx(551, data={"split_seed": 7}))) != list(picks)
    assert tflm_sample(ctx(551, recommend={"target": "mcu"})) is None
    assert tflm_sample(ctx(80)) is None
    assert tflm_sample(ctx(551, targets={"tflm_images": None})) is None
    assert len(tflm_sample(ctx(551, targets={"tflm_images": 20}))) == 20
