"""Repeat statistics: mean, sample standard deviation and Student-t confidence intervals.

`summarize` turns a run's repeats into results.extras["summary"]:
{variant: {metric: {mean, std, ci_low, ci_high, n}}}. With one repeat there is no interval
(std, ci_low and ci_high are None), and readers must say so rather than invent one.
Accuracy and agreement also get the photos' own sampling error (`image_std`, the binomial
standard error averaged over repeats, and `image_ci_low/high`, the per-repeat Wilson intervals
averaged; intervals.py) and `dominant`: which of the two sources varies more, "training" (the
standard deviation across training runs) or "photos".
The t quantile is computed here (no SciPy dependency): bisection on the t CDF, which is an
exact series for integer degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from quantbench.core.results import RunResults, TrainingResult, VariantResult

CONFIDENCE = 0.95
# Per-variant metrics summarized across repeats; accuracy/agreement are fractions 0..1.
SUMMARY_METRICS = ("accuracy", "agreement", "size_bytes", "latency_ms", "convert_seconds")


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1 in the denominator); None for fewer than 2 values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with integer df >= 1 (closed-form series, exact)."""
    if df < 1:
        raise ValueError("degrees of freedom must be >= 1")
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        # A(t|df) = 2/pi * (theta + sin*cos*(1 + 2/3 cos^2 + ... )) for odd df
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        a = 2.0 / math.pi * (theta + s * total) if df > 1 else 2.0 / math.pi * theta
    else:
        total, term = 0.0, 1.0
        for k in range(df // 2):
            total += term
            term *= c * c * (2 * k + 1) / (2 * k + 2)
        a = s * total
    return 0.5 + 0.5 * a


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on `t_cdf`)."""
    if not 0 < p < 1:
        raise ValueError("p must be in (0, 1)")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def describe(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """{mean, std, ci_low, ci_high, n}: a t interval for the mean; None bounds when n < 2."""
    values = [float(v) for v in values]
    n = len(values)
    m = mean(values)
    s = std(values)
    if s is None:
        return {"mean": m, "std": None, "ci_low": None, "ci_high": None, "n": n}
    half = t_quantile(0.5 + confidence / 2, n - 1) * s / math.sqrt(n)
    return {"mean": m, "std": s, "ci_low": m - half, "ci_high": m + half, "n": n}


def metric_value(row: VariantResult, metric: str) -> float | None:
    if metric == "latency_ms":
        return row.latency_ms()
    value = getattr(row, metric, None)
    return None if value is None else float(value)


def image_level(rows: Sequence[VariantResult], metric: str) -> dict[str, Any] | None:
    """The photos' sampling error of `metric` (accuracy or agreement), averaged over rows."""
    cis = [getattr(r, f"{metric}_ci") for r in rows]
    values = [getattr(r, metric) for r in rows]
    if not rows or any(c is None for c in cis) or any(not r.eval_images for r in rows):
        return None
    errors = [math.sqrt(p * (1 - p) / r.eval_images) for p, r in zip(values, rows)]
    return {"image_std": mean(errors), "image_ci_low": mean([c[0] for c in cis]),
            "image_ci_high": mean([c[1] for c in cis]), "images": rows[0].eval_images}  # fmt: skip


def summarize(results: RunResults) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and metric, across repeats. Failed rows contribute nothing."""
    by_variant: dict[str, dict[str, list[float]]] = {}
    rows_of: dict[str, list[VariantResult]] = {}
    for row in results.variants:
        if row.status == "failed":
            continue
        rows_of.setdefault(row.variant, []).append(row)
        metrics = by_variant.setdefault(row.variant, {})
        for metric in SUMMARY_METRICS:
            value = metric_value(row, metric)
            if value is not None:
                metrics.setdefault(metric, []).append(value)
    summary = {
        variant: {metric: describe(values) for metric, values in metrics.items()}
        for variant, metrics in by_variant.items()
    }
    for variant, metrics in summary.items():
        for metric in ("accuracy", "agreement"):
            images = image_level(rows_of[variant], metric) if metric in metrics else None
            if images is not None:
                d = metrics[metric]
                d.update(images)
                if d["std"] is not None:
                    d["dominant"] = "training" if d["std"] > images["image_std"] else "photos"
    return summary


def steady_epoch_seconds(training: TrainingResult) -> float | None:
    """Median seconds of the epochs after the first (which also pays for tracing the graph)."""
    seconds = sorted(e.seconds for e in training.epochs[1:]) or [e.seconds for e in training.epochs]
    if not seconds:
        return None
    mid = len(seconds) // 2
    return seconds[mid] if len(seconds) % 2 else (seconds[mid - 1] + seconds[mid]) / 2


def training_cost(results: RunResults) -> list[dict[str, Any]]:
    """One row per training (float baseline, each QAT recipe, each repeat) with the QAT/float
    ratio of steady-state seconds per epoch, against the float baseline of the same repeat."""
    floats = {t.repeat: t for t in results.training if t.recipe == "float"}
    rows = []
    for t in results.training:
        steady = steady_epoch_seconds(t)
        baseline = floats.get(t.repeat)
        base = steady_epoch_seconds(baseline) if baseline is not None else None
        rows.append({
            "name": t.name, "recipe": t.recipe, "repeat": t.repeat, "seed": t.seed,
            "epochs": len(t.epochs), "total_seconds": t.total_seconds,
            "seconds_per_epoch": t.seconds_per_epoch, "steady_seconds_per_epoch": steady,
            "epoch_seconds": [e.seconds for e in t.epochs],
            "ratio_to_float": steady / base if steady and base and t.recipe != "float" else None,
        })  # fmt: skip
    return rows


def summarize_training(results: RunResults) -> dict[str, dict[str, dict[str, Any]]]:
    """Per training name, across repeats: seconds per epoch, total seconds, ratio to float."""
    grouped: dict[str, dict[str, list[float]]] = {}
    for row in training_cost(results):
        metrics = grouped.setdefault(row["name"], {})
        for key in ("steady_seconds_per_epoch", "seconds_per_epoch", "total_seconds",
                    "ratio_to_float"):  # fmt: skip
            if row[key] is not None:
                metrics.setdefault(key, []).append(row[key])
    return {name: {k: describe(v) for k, v in m.items()} for name, m in grouped.items()}


def attach(results: RunResults) -> None:
    """Store the repeat statistics in results.extras (the report reads them from there)."""
    results.extras["summary"] = summarize(results)
    results.extras["training_cost"] = training_cost(results)
    results.extras["training_summary"] = summarize_training(results)


# How the time breakdown names the stages (results.stage_seconds keys are the stores' names).
STAGE_LABELS = {"model": "training", "convert": "conversion", "selective": "search",
                "reference": "keras scoring", "accuracy": "evaluation"}


def time_breakdown(results: RunResults) -> list[tuple[str, float]]:
    """Where the run's time went, largest first, `other` last: (label, seconds)."""
    timings = dict(results.stage_seconds)
    other = timings.pop("other", None)
    rows = sorted(((STAGE_LABELS.get(k, k), v) for k, v in timings.items() if v >= 0.05),
                  key=lambda kv: -kv[1])  # fmt: skip
    return rows + ([("other", other)] if other else [])
