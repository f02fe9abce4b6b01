"""Repeat statistics: t quantiles against published table values, intervals, summaries."""

from __future__ import annotations

import math

import pytest

from quantbench.analysis import stats
from quantbench.core.results import EpochRecord, LatencyResult, RunResults, TrainingResult, VariantResult

# Two-sided 95% critical values of Student's t (standard tables, e.g. NIST/SEMATECH).
T_TABLE = {1: 12.7062047362, 2: 4.3026527297, 3: 3.1824463053, 4: 2.7764451052,
           9: 2.2621571628, 29: 2.0452296421, 100: 1.9839715185}  # fmt: skip


@pytest.mark.parametrize("df, expected", sorted(T_TABLE.items()))
def test_t_quantile_matches_the_table(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, rel=1e-9)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, rel=1e-9)


def test_t_quantile_agrees_with_scipy_when_available():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 17, 60):
        for p in (0.6, 0.9, 0.995):
            assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-8)


def test_interval_of_one_two_three():
    d = stats.describe([1, 2, 3])
    half = 4.3026527297 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n), s = 1
    assert d["mean"] == 2 and d["std"] == pytest.approx(1.0) and d["n"] == 3
    assert d["ci_low"] == pytest.approx(2 - half) and d["ci_high"] == pytest.approx(2 + half)
    assert d["ci_low"] == pytest.approx(-0.484138, abs=1e-6)


def test_a_single_value_has_no_interval():
    assert stats.describe([0.8]) == {"mean": 0.8, "std": None, "ci_low": None, "ci_high": None, "n": 1}
    with pytest.raises(ValueError):
        stats.describe([])


def test_identical_values_give_a_zero_width_interval():
    d = stats.describe([0.5, 0.5, 0.5])
    assert d["std"] == 0 and d["ci_low"] == d["ci_high"] == 0.5


def _results() -> RunResults:
    results = RunResults(name="t", created="now")
    for repeat, (acc, ms) in enumerate([(0.80, 2.0), (0.82, 4.0), (0.84, 3.0)]):
        results.variants.append(VariantResult(
            variant="int8", repeat=repeat, scheme="int8", policy="full int8", accuracy=acc,
            size_bytes=1000, latency=[LatencyResult(threads=2, runs=5, warmup_runs=1, median_ms=ms)],
        ))  # fmt: skip
        results.variants.append(VariantResult(variant="int16x8", repeat=repeat, scheme="int16x8",
                                              policy="int16x8", status="failed", error="no"))  # fmt: skip
        for name, recipe, seconds in (("float", "float", 10.0), ("qat_fresh", "fresh", 22.0)):
            epochs = [EpochRecord(epoch=i + 1, loss=1, accuracy=0.5, seconds=seconds * (3 if i == 0 else 1) + repeat)
                      for i in range(3)]  # fmt: skip
            results.training.append(TrainingResult(name=name, recipe=recipe, seed=repeat, repeat=repeat,
                                                   epochs=epochs, total_seconds=sum(e.seconds for e in epochs)))  # fmt: skip
    return results


def test_summarize_groups_repeats_per_variant_and_skips_failed_rows():
    summary = stats.summarize(_results())
    assert set(summary) == {"int8"}
    assert summary["int8"]["accuracy"]["mean"] == pytest.approx(0.82)
    assert summary["int8"]["accuracy"]["n"] == 3
    assert summary["int8"]["latency_ms"]["mean"] == pytest.approx(3.0)
    assert summary["int8"]["size_bytes"]["std"] == 0


def test_training_cost_ratio_uses_steady_epochs_of_the_same_repeat():
    rows = stats.training_cost(_results())
    qat = [r for r in rows if r["recipe"] == "fresh"]
    assert [r["steady_seconds_per_epoch"] for r in qat] == [22.0, 23.0, 24.0]  # first epoch left out
    assert qat[1]["ratio_to_float"] == pytest.approx(23.0 / 11.0)
    assert all(r["ratio_to_float"] is None for r in rows if r["recipe"] == "float")
    summary = stats.summarize_training(_results())
    assert summary["qat_fresh"]["steady_seconds_per_epoch"]["mean"] == pytest.approx(23.0)


def test_time_breakdown_names_the_stages_largest_first_other_last():
    from quantbench.analysis.stats import time_breakdown
    from quantbench.core.results import RunResults

    results = RunResults(name="t", created="now", total_seconds=300.0, stage_seconds={
        "model": 160.0, "other": 12.0, "latency": 40.0, "convert": 70.0, "report": 0.01})
    assert time_breakdown(results) == [("training", 160.0), ("conversion", 70.0),
                                       ("latency", 40.0), ("other", 12.0)]
    assert time_breakdown(RunResults(name="t", created="now")) == []
