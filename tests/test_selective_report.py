"""The report's per-layer and selective sections, from constructed results (no TensorFlow)."""

from __future__ import annotations

import re

from quantbench.core import results as results_mod
from quantbench.report import render
from quantbench.core.results import (LayerAnalysis, LayerError, RunResults, SearchCandidate,
                                SelectiveSearch, VariantResult)
from tests.fixtures_results import latency, make_results


def _analysis() -> LayerAnalysis:
    errors = [(f"block_{i}_depthwise", 0.29 + (7.0 if i == 3 else 0.01 * i)) for i in range(6)]
    errors.sort(key=lambda e: -e[1])
    layers = [LayerError(rank=r, op="DEPTHWISE_CONV_2D", tensor=f"m/{name}/depthwise", layer=name,
                         rmse_scale=v, mean_abs_error=0.1, max_abs_error=1.0, mse=0.01, scale=0.02)
              for r, (name, v) in enumerate(errors, 1)]  # fmt: skip
    return LayerAnalysis(variant="int8_per_tensor", conversion="int8_per_tensor", debug_images=32,
                         layers=layers, named_fraction=1.0)  # fmt: skip


def _with_selective() -> RunResults:
    results = make_results(qat=False, failed=False, article_comparison=False)
    search = SelectiveSearch(
        base="int8_per_tensor", budget=1.0, search_images=300,
        search_source="300 training images outside the calibration slice",
        float_search_accuracy=0.95, quantizable_layers=6, conversions=4,
        candidates=[SearchCandidate(float_layers=k, search_accuracy=a, within_budget=a >= 0.94,
                                    latency_ms=5.0 + k, threads=2)
                    for k, a in ((0, 0.3), (6, 0.95), (1, 0.945), (2, 0.95))],
        float_layers=["block_3_depthwise"], float_nodes=["m/block_3_depthwise/depthwise"], seconds=42.0,
    )  # fmt: skip
    results.variants.append(VariantResult(variant="int8_per_tensor", scheme="int8_per_tensor",
                                          policy="full int8, per-tensor", accuracy=0.3,
                                          latency=latency(5.0)))  # fmt: skip
    results.variants.append(VariantResult(variant="selective", scheme="selective", policy="selective",
                                          accuracy=0.87, latency=latency(6.0), selective=search))  # fmt: skip
    results.layer_analyses.append(_analysis())
    return results


def test_the_report_ranks_layers_and_shows_the_search():
    html = render(_with_selective())
    layers = html[html.index('id="layers"'):]
    bars = re.findall(r'class="bar-label"[^>]*>\d+\. ([\w]+)<', layers)
    assert bars[0] == "block_3_depthwise" and len(bars) == 6
    selective = html[html.index('id="selective"'):html.index('id="layers"')]
    assert "block_3_depthwise" in selective and "4" in selective
    assert "latency vs int8_per_tensor" in selective and "+20 %" in selective
    assert "search accuracy by float layers" in selective


def test_old_results_without_the_new_fields_still_load_and_render(tmp_path):
    results = make_results(qat=False)
    data = results.model_dump(mode="json")
    data.pop("layer_analyses")
    for v in data["variants"]:
        v.pop("selective")
    loaded = RunResults.model_validate(data)
    assert loaded.layer_analyses == [] and 'id="selective"' not in render(loaded)
    roundtrip = RunResults.model_validate_json(_with_selective().model_dump_json())
    assert roundtrip.variant("selective").selective.float_layers == ["block_3_depthwise"]
    assert results_mod.to_csv(roundtrip).count("\n") == len(roundtrip.variants) + 1
