"""The runtime seam: LiteRT's Interpreter and CompiledModel behind one Session protocol."""

from __future__ import annotations

import numpy as np
import pytest

from quantbench.measure import explain, latency, litert
from quantbench.core.errors import ConfigError
from quantbench.core.results import LatencyResult, VariantResult
from quantbench.measure.runtimes import RUNTIMES, open_session, parse_runtimes
from tests.test_latency import FAST, SIZE

SCHEMES = ["float32", "dynamic_range", "float16", "int8", "int8_io", "int16x8"]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)


def _outputs(runtime: str, path, images: np.ndarray) -> np.ndarray:
    session = open_session(runtime, path, 1, True)
    out = []
    for k in range(len(images)):
        session.set_input(litert.quantize_input(images[k : k + 1], session.input_detail))
        session.invoke()
        out.append(litert.dequantize_output(session.output(), session.output_detail)[0])
    return np.stack(out)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_compiled_model_predicts_what_the_interpreter_predicts(tiny_models, images, scheme):
    interpreter = _outputs("interpreter", tiny_models[scheme], images)
    compiled = _outputs("compiled", tiny_models[scheme], images)
    assert interpreter.shape == compiled.shape == (len(images), 3)
    assert (interpreter.argmax(1) == compiled.argmax(1)).all()
    # The same kernels: outputs equal up to float rounding (integer outputs exactly).
    np.testing.assert_allclose(interpreter, compiled, atol=1e-5)
    assert len({row.tobytes() for row in compiled}) > 1  # the inputs really changed


def test_figures_record_their_runtime(tiny_models, images):
    results = latency.measure_all(tiny_models["int8"], images, [1, 2], (True, False),
                                  runtimes=["interpreter", "compiled"], **FAST)  # fmt: skip
    assert [(r.runtime, r.delegate, r.threads) for r in results] == [
        (rt, d, t) for rt in ("interpreter", "compiled") for d in ("xnnpack", "none") for t in (1, 2)
    ]  # fmt: skip
    for r in results:
        assert r.runs >= FAST["min_runs"] and 0 < r.median_ms <= r.max_ms
        assert r.peak_rss_mb is not None  # each in its own worker process
        assert r.other_cpu is not None and 0 <= r.other_cpu <= latency.os.cpu_count()
    # Only the Interpreter exposes which ops XNNPACK took.
    assert results[0].delegated_ops is not None
    assert all(r.delegated_ops is None for r in results if r.runtime == "compiled")


def test_runtime_lists_are_checked():
    assert parse_runtimes("compiled, interpreter") == ["compiled", "interpreter"]
    assert parse_runtimes(None) == ["interpreter"]
    with pytest.raises(ConfigError, match="did you mean 'compiled'"):
        parse_runtimes("compiles")
    from quantbench.engine.configure import resolve

    cfg = resolve("smoke", None, {"evaluate.runtimes": ["interpreter", "compiled"]})
    assert cfg.evaluate.runtimes == ["interpreter", "compiled"]
    with pytest.raises(ConfigError, match="unknown runtime 'tflite'"):
        resolve("smoke", None, {"evaluate.runtimes": ["tflite"]})
    assert set(RUNTIMES) >= {"interpreter", "compiled"}
    from quantbench.commands.quantize import quantize_overrides

    overrides, _ = quantize_overrides("m.keras", {"runtimes": ["compiled"], "wait_quiet": 5.0})
    assert overrides["evaluate.runtimes"] == ["compiled"] and overrides["evaluate.wait_quiet"] == 5.0


def _fig(threads, ms, runtime="interpreter", other=0.0, busy=False) -> LatencyResult:
    return LatencyResult(threads=threads, runs=50, warmup_runs=5, median_ms=ms, runtime=runtime,
                         other_cpu=other, busy=busy)  # fmt: skip


def test_headline_is_the_interpreter_and_runtimes_that_differ_are_explained():
    figures = [_fig(1, 0.60), _fig(2, 13.2, other=0.9, busy=True),
               _fig(1, 0.61, "compiled"), _fig(2, 0.79, "compiled", other=0.9, busy=True)]  # fmt: skip
    row = VariantResult(variant="dynamic_range", policy="p", latency=list(reversed(figures)))
    assert row.latency_ms(2) == 13.2 and row.latency_figure(2, "compiled").median_ms == 0.79
    notes = explain.runtime_notes(figures, mixed=True)
    assert len(notes) == 1  # 1 thread agrees within RUNTIMES_DIFFER
    assert "13.2 ms and CompiledModel 0.79 ms at 2 threads" in notes[0]
    assert "two pools" in notes[0] and "0.90 cores" in notes[0]
    assert explain.runtime_notes(figures[:2] + [_fig(1, 0.61, "compiled")]) == []
    busy_notes = explain.busy_notes(figures)
    assert busy_notes == ["busy machine: 2 of 4 latency figures (2t interpreter 13.2 ms, 2t "
                          "compiled 0.79 ms) were timed while other processes used 0.90 of "
                          f"{latency.os.cpu_count()} cores; they may be slower than the model"]


def test_table_shows_runtimes_and_marks_busy_figures():
    from quantbench.core.results import RunResults
    from quantbench.present.table import busy_lines, results_table

    row = VariantResult(variant="dynamic_range", policy="p", latency=[
        _fig(1, 0.60), _fig(2, 13.2, other=0.93, busy=True), _fig(1, 0.61, "compiled"),
        _fig(2, 0.79, "compiled")])  # fmt: skip
    results = RunResults(name="t", created="2026-11-26", variants=[row])
    table = results_table(results, wide=True)  # the default shows the 1-thread interpreter figure
    headers = [c.header for c in table.columns]
    assert "compiled ms (2t)" in headers and "latency ms (2t)" in headers
    cells = {c.header: list(c.cells)[0] for c in table.columns}
    assert cells["latency ms (2t)"] == "13.20*" and cells["compiled ms (2t)"] == "0.79"
    assert cells["latency ms (1t)"] == "0.60"
    assert "0.93 cores" in busy_lines(results)[0]


@pytest.mark.subprocess
def test_bench_times_both_runtimes_and_rejects_unknown_ones(tiny_models):
    import json

    from tests.test_bench_cli import FAST as CLI_FAST
    from tests.test_bench_cli import assert_clean_error, quantbench

    done = quantbench(tiny_models["float32"], "--json", "--threads", "2", "--runtimes",
                      "interpreter,compiled", "--wait-quiet", "0", *CLI_FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)["results"]
    assert [r["runtime"] for r in figures] == ["interpreter", "compiled"]
    assert all(r["other_cpu"] is not None and isinstance(r["busy"], bool) for r in figures)
    assert_clean_error(quantbench(tiny_models["float32"], "--runtimes", "compield"),
                       "unknown runtime 'compield'", "did you mean 'compiled'")  # fmt: skip
