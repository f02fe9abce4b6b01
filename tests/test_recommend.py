"""The recommendation on constructed results: constraints, objective, Pareto set, nearest miss."""

from __future__ import annotations

import pytest

from quantbench.core.config import RecommendConfig
from quantbench.analysis.recommend import Recommendation, attach, pareto, recommend
from quantbench.present.sections import print_recommendation
from quantbench.core.results import LatencyResult, RunResults, VariantResult
from tests.fixtures_results import make_results


def row(name, size_mb, acc, ms, status="ok", kind="tflite") -> VariantResult:
    return VariantResult(
        variant=name, scheme=None if kind == "keras" else name, policy=name, kind=kind,
        status=status, size_bytes=None if size_mb is None else int(size_mb * 1e6), accuracy=acc,
        latency=[] if ms is None else [LatencyResult(threads=1, runs=10, warmup_runs=1, median_ms=ms)],
    )  # fmt: skip


def results_of(*rows) -> RunResults:
    return RunResults(name="t", created="now", variants=[row("keras_float", 5.0, 0.90, None,
                                                            kind="keras"), *rows])  # fmt: skip


# name, size MB, accuracy, latency ms
BIG = ("big", 4.0, 0.90, 10.0)  # float32-like: most accurate, largest, slowest
MID = ("mid", 1.0, 0.895, 6.0)  # 0.5 points down
SMALL = ("small", 0.5, 0.88, 3.0)  # 2 points down
DOMINATED = ("dominated", 1.2, 0.89, 7.0)  # worse than mid on every axis


@pytest.fixture
def four() -> RunResults:
    return results_of(*(row(*r) for r in (BIG, MID, SMALL, DOMINATED)))


def test_accuracy_drop_rules_out_and_size_objective_picks_smallest_fitting(four):
    rec = recommend(four, RecommendConfig(max_accuracy_drop=1.0, objective="size"))
    assert rec.chosen == "mid"
    assert rec.ruled_out == {"small": ["accuracy drop 2.00 points > 1"]}
    assert rec.candidates == ["mid", "dominated", "big"]
    assert "mid is the smallest variant (1.00 MB)" in rec.reason
    assert "89.5% vs 90.0%" in rec.reason


def test_looser_drop_lets_the_smallest_through(four):
    assert recommend(four, RecommendConfig(max_accuracy_drop=2.5)).chosen == "small"


@pytest.mark.parametrize(
    ("objective", "expected"), [("size", "small"), ("latency", "small"), ("accuracy", "big")]
)
def test_objective_follows_metric_directions(four, objective, expected):
    rec = recommend(four, RecommendConfig(max_accuracy_drop=5, objective=objective))
    assert rec.chosen == expected


def test_objective_order_latency(four):
    rec = recommend(four, RecommendConfig(max_accuracy_drop=5, objective="latency"))
    assert rec.candidates == ["small", "mid", "dominated", "big"]
    rec = recommend(four, RecommendConfig(max_accuracy_drop=5, objective="accuracy"))
    assert rec.candidates == ["big", "mid", "dominated", "small"]


def test_size_and_latency_limits(four):
    rec = recommend(four, RecommendConfig(max_accuracy_drop=5, max_size_mb=2, max_latency_ms=5,
                                          objective="accuracy"))  # fmt: skip
    assert rec.chosen == "small"
    assert rec.ruled_out["big"] == ["size 4.00 MB > 2 MB", "latency 10.00 ms > 5 ms"]
    assert rec.ruled_out["mid"] == ["latency 6.00 ms > 5 ms"]


def test_pareto_set_excludes_dominated(four):
    rec = recommend(four, RecommendConfig())
    assert sorted(rec.pareto) == ["big", "mid", "small"]


def test_pareto_function_with_ties_and_missing_metric():
    points = {"a": {"accuracy": 0.9, "size_bytes": 2.0, "latency_ms": None},
              "b": {"accuracy": 0.9, "size_bytes": 2.0, "latency_ms": 1.0},
              "c": {"accuracy": 0.8, "size_bytes": 3.0, "latency_ms": 0.5}}  # fmt: skip
    # latency is missing for a, so only accuracy and size count: a and b tie, c is dominated.
    assert pareto(points, ("accuracy", "size_bytes", "latency_ms")) == ["a", "b"]


def test_nothing_fits_names_the_nearest_miss(four):
    rec = recommend(four, RecommendConfig(max_accuracy_drop=0.2, max_size_mb=0.9))
    assert rec.chosen is None
    # mid: 0.3 points over (0.3 relative) and 11% too big; small: 1.8 points over.
    assert rec.nearest_miss == "mid"
    assert rec.reason.startswith("No variant stays within 0.2 points")
    assert "nearest miss is mid" in rec.reason
    assert set(rec.ruled_out) == {"big", "mid", "small", "dominated"}


def test_only_ok_tflite_rows_are_candidates():
    results = results_of(
        row("bad", 0.1, 0.95, 1.0, status="failed"),
        row("twin", 0.1, 0.95, 1.0, status="identical"),
        row("ok", 3.0, 0.9, 5.0),
    )
    rec = recommend(results, RecommendConfig())
    assert rec.chosen == "ok"
    assert rec.ruled_out["bad"] == ["conversion failed"]
    assert "keras_float" not in rec.candidates + list(rec.ruled_out)


def test_no_candidates_at_all():
    rec = recommend(results_of(row("bad", None, None, None, status="failed")), RecommendConfig())
    assert (
        rec.chosen is None and rec.nearest_miss is None and "none can be recommended" in rec.reason
    )


def test_missing_latency_fails_a_latency_limit():
    results = results_of(row("nolat", 1.0, 0.9, None), row("lat", 2.0, 0.9, 4.0))
    rec = recommend(results, RecommendConfig(max_latency_ms=5))
    assert rec.chosen == "lat" and rec.ruled_out["nolat"] == ["latency not measured"]


def test_repeat_means_from_summary_are_used():
    results = make_results(repeats=3)
    mean_acc = results.extras["summary"]["int8"]["accuracy"]["mean"]
    assert mean_acc != results.variant("int8").accuracy
    rec = recommend(results, RecommendConfig(max_accuracy_drop=5, objective="accuracy"))
    assert rec.reference_accuracy == pytest.approx(
        results.extras["summary"]["keras_float"]["accuracy"]["mean"]
    )


def test_attach_stores_and_round_trips_through_json(tmp_path):
    from quantbench.core import results as results_mod

    results = make_results()
    rec = attach(results)  # the run's own config section: 1 point, size objective
    assert rec.chosen == "dynamic_range"
    results_mod.save(results, tmp_path)
    loaded = results_mod.load(tmp_path)
    assert Recommendation.model_validate(loaded.extras["recommendation"]) == rec


def test_package_exports_recommend_lazily_and_callable():
    import quantbench

    results = make_results()
    assert quantbench.recommend(results, RecommendConfig()).chosen == "dynamic_range"
    from quantbench import recommend as exported

    assert exported(results).chosen == "dynamic_range"


def test_print_recommendation(capsys):
    print_recommendation(recommend(make_results(), RecommendConfig(max_size_mb=0.1)))
    printed = capsys.readouterr().out
    assert "no variant fits" in printed and "nearest miss" in printed
