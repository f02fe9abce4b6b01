"""Which variant should I ship? Constraints filter, the objective ranks, the Pareto set informs.

Only converted TF Lite rows that measured fine (`status == "ok"`) are candidates. Accuracy
drop is in percentage points against the float Keras model (`results.reference`). With
repeats, the per-variant means in results.extras["summary"] stand in for the single row's
figures. `confidence` says how sure the drop must be within `max_accuracy_drop`
(intervals.drop_bound): `sure` (default) judges the one-sided 95% upper bound of the drop,
paired over the photos (and across training runs with repeats), `likely` the one-sided 80%
bound, `estimate` the measured drop; results without per-photo predictions fall back to the
measured drop, and the reason says so. Nothing here imports TensorFlow: the report rebuilds a recommendation from
results.json alone.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import BaseModel, Field

from quantbench.core.config import RecommendConfig
from quantbench.analysis.intervals import DropBound, drop_bound
from quantbench.core.results import METRICS, RunResults, VariantResult

EXTRAS_KEY = "recommendation"
# The figures a variant is judged on; each knows its direction through METRICS.
PARETO_METRICS = ("accuracy", "size_bytes", "latency_ms")
_SUPERLATIVE = {"size": "smallest", "gzip_size": "smallest compressed", "latency": "fastest",
                "accuracy": "most accurate"}  # fmt: skip
_OBJECTIVE_METRIC = {"size": "size_bytes", "gzip_size": "gzip_bytes", "latency": "latency_ms",
                     "accuracy": "accuracy"}  # fmt: skip
_RANKED = (*PARETO_METRICS, "gzip_bytes")  # what values are read for (gzip ranks, not Pareto)


class Recommendation(BaseModel):
    chosen: str | None
    reason: str
    objective: str
    constraints: dict[str, Any] = Field(default_factory=dict)
    reference: str | None = None  # the row accuracy drops are measured against
    reference_accuracy: float | None = None
    latency_threads: int | None = None  # the thread count latency constraints used
    candidates: list[str] = Field(default_factory=list)  # ranked, best first; all fit
    pareto: list[str] = Field(default_factory=list)
    ruled_out: dict[str, list[str]] = Field(default_factory=dict)  # variant -> why
    nearest_miss: str | None = None
    # variant -> [measured drop, upper bound at the chosen confidence or None], in points
    accuracy_drops: dict[str, list[float | None]] = Field(default_factory=dict)
    # Variants whose headline latency was timed while other processes held the cores (busy.py),
    # when the decision rests on latency (objective latency or a latency limit).
    busy_latency: list[str] = Field(default_factory=list)


def metric(results: RunResults, row: VariantResult, name: str) -> float | None:
    """A row's figure for `name`; the mean over repeats when results.extras has a summary."""
    summary = results.extras.get("summary") or {}
    stats = (summary.get(row.variant) or {}).get(name) if isinstance(summary, dict) else None
    if isinstance(stats, dict) and isinstance(stats.get("mean"), (int, float)):
        return float(stats["mean"])
    if name == "latency_ms":
        return row.latency_ms()
    value = getattr(row, name, None)
    return None if value is None else float(value)


def reference_row(results: RunResults) -> VariantResult | None:
    """The float Keras model; failing that the float32 TF Lite file (the same weights)."""
    ref = results.reference
    if ref is not None and ref.accuracy is not None:
        return ref
    return next(
        (v for v in results.rows(0) if v.scheme == "float32" and v.source == "float" and v.ok),
        None,
    )


def candidates_of(results: RunResults) -> list[VariantResult]:
    return [v for v in results.rows(0) if v.kind == "tflite" and v.status == "ok"]


def _better(name: str, a: float, b: float) -> bool:
    return a > b if METRICS[name].higher_is_better else a < b


def pareto(points: dict[str, dict[str, float | None]], metrics: tuple[str, ...]) -> list[str]:
    """Names not dominated on `metrics` (directions from METRICS). A metric missing for any
    point is left out of the comparison, so a half-measured run still has a front."""
    usable = [m for m in metrics if all(p.get(m) is not None for p in points.values())]
    if not usable:
        return list(points)
    front = []
    for name, p in points.items():
        dominated = False
        for other_name, q in points.items():
            if other_name == name:
                continue
            no_worse = all(q[m] == p[m] or _better(m, q[m], p[m]) for m in usable)
            strictly = any(_better(m, q[m], p[m]) for m in usable)
            if no_worse and strictly:
                dominated = True
                break
        if not dominated:
            front.append(name)
    return front


def _fmt_mb(size: float) -> str:
    return f"{size / 1e6:.2f} MB"


def _violations(
    drop: float | None, size: float | None, latency: float | None, c: RecommendConfig,
    bound: DropBound | None = None, gzip_size: float | None = None,
) -> tuple[list[str], float]:  # fmt: skip
    """Constraint messages and how far outside the limits (relative units, 0 = fits)."""
    why: list[str] = []
    excess = 0.0
    judged = bound.bound if bound is not None and bound.bound is not None else drop
    if judged is not None and judged > c.max_accuracy_drop + 1e-9:
        if judged is drop:
            why.append(f"accuracy drop {drop:.2f} points > {c.max_accuracy_drop:g}")
        else:
            why.append(f"accuracy drop {drop:.2f} points, up to {judged:.2f} with "
                       f"{bound.level:.0%} confidence ({bound.how}) > {c.max_accuracy_drop:g}")  # fmt: skip
        excess += (judged - c.max_accuracy_drop) / max(c.max_accuracy_drop, 1.0)
    if c.max_size_mb is not None:
        if size is None:
            why.append("size not measured")
            excess += 1.0
        elif size / 1e6 > c.max_size_mb:
            why.append(f"size {_fmt_mb(size)} > {c.max_size_mb:g} MB")
            excess += size / 1e6 / c.max_size_mb - 1
    if c.max_gzip_size_mb is not None:
        if gzip_size is None:
            why.append("gzip size not measured")
            excess += 1.0
        elif gzip_size / 1e6 > c.max_gzip_size_mb:
            why.append(f"gzip size {_fmt_mb(gzip_size)} > {c.max_gzip_size_mb:g} MB")
            excess += gzip_size / 1e6 / c.max_gzip_size_mb - 1
    if c.max_latency_ms is not None:
        if latency is None:
            why.append("latency not measured")
            excess += 1.0
        elif latency > c.max_latency_ms:
            why.append(f"latency {latency:.2f} ms > {c.max_latency_ms:g} ms")
            excess += latency / c.max_latency_ms - 1
    return why, excess


def _describe_value(name: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    if name == "size_bytes":
        return _fmt_mb(value)
    if name == "gzip_bytes":
        return f"{_fmt_mb(value)} gzipped"
    if name == "latency_ms":
        return f"{value:.2f} ms"
    return f"{value * 100:.1f}% accuracy"


def recommend(results: RunResults, constraints: RecommendConfig | None = None) -> Recommendation:
    """Pick the variant to ship: the best by `objective` among those meeting every limit."""
    c = constraints or RecommendConfig()
    objective = _OBJECTIVE_METRIC[c.objective]
    ref = reference_row(results)
    ref_acc = metric(results, ref, "accuracy") if ref is not None else None
    rows = candidates_of(results)
    values = {v.variant: {m: metric(results, v, m) for m in _RANKED} for v in rows}
    threads = next((r.threads for v in rows for r in v.latency), None)
    base = Recommendation(
        chosen=None, reason="", objective=c.objective, constraints=c.model_dump(),
        reference=ref.variant if ref else None, reference_accuracy=ref_acc,
        latency_threads=threads, pareto=pareto(values, PARETO_METRICS) if values else [],
    )  # fmt: skip
    for v in results.rows(0):
        if v.kind == "tflite" and v.status != "ok":
            base.ruled_out[v.variant] = [
                "conversion failed" if v.status == "failed" else f"identical to {v.identical_to}"
            ]
    if not rows:
        base.reason = "No variant converted and measured successfully, so none can be recommended."
        return base

    fitting, misses = [], []
    bounds: dict[str, DropBound | None] = {}
    for v in rows:
        acc = values[v.variant]["accuracy"]
        drop = (ref_acc - acc) * 100 if ref_acc is not None and acc is not None else None
        bounds[v.variant] = drop_bound(results, v.variant, ref.variant, c.confidence) if ref else None
        if drop is not None:
            b = bounds[v.variant]
            base.accuracy_drops[v.variant] = [drop, b.bound if b is not None else None]
        why, excess = _violations(drop, values[v.variant]["size_bytes"],
                                  values[v.variant]["latency_ms"], c, bounds[v.variant],
                                  values[v.variant]["gzip_bytes"])  # fmt: skip
        if acc is None:
            why.append("accuracy not measured")
            excess += 1.0
        target_why = _target_violation(v, c.target)
        if target_why:
            why.append(target_why)
            excess += 10.0  # a hard limit: the nearest miss should be one that can run there
        if why:
            base.ruled_out[v.variant] = why
            misses.append((excess, v.variant))
        else:
            fitting.append(v.variant)

    def rank_key(name: str) -> tuple:
        # Objective first, then accuracy, size, latency as tie-breakers; missing sorts last.
        key = []
        for m in (objective, *[m for m in _RANKED if m != objective]):
            value = values[name][m]
            sign = -1 if METRICS[m].higher_is_better else 1
            key.append((value is None, 0.0 if value is None else sign * value))
        return tuple(key)

    fitting.sort(key=rank_key)
    base.candidates = fitting
    if c.objective == "latency" or c.max_latency_ms is not None:
        base.busy_latency = [v.variant for v in rows
                             if (f := v.latency_figure()) is not None and f.busy]  # fmt: skip
    level = next((b.level for b in bounds.values() if b is not None and b.level), None)
    limits = _limits_phrase(c, ref_acc is not None, level)
    if fitting:
        best = fitting[0]
        base.chosen = best
        acc = values[best]["accuracy"]
        versus = ""
        if ref_acc is not None and acc is not None:
            versus = f" ({acc * 100:.1f}% vs {ref_acc * 100:.1f}% for the float Keras model)"
        base.reason = (
            f"{best} is the {_SUPERLATIVE[c.objective]} variant "
            f"({_describe_value(objective, values[best][objective])}) that {limits}{versus}."
            + _confidence_phrase(base.accuracy_drops.get(best), bounds.get(best))
            + _busy_phrase(base.busy_latency)
        )
        return base
    misses.sort()
    base.nearest_miss = misses[0][1]
    base.reason = (
        f"No variant {limits}; the nearest miss is "
        f"{base.nearest_miss} ({'; '.join(base.ruled_out[base.nearest_miss])})."
        + _busy_phrase(base.busy_latency)
    )
    return base


def _busy_phrase(names: list[str]) -> str:
    """The caveat of a latency-based decision resting on figures timed on a busy machine."""
    if not names:
        return ""
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return (f" It rests on latency figures timed while other processes held the cores "
            f"({shown}; marked *): re-measure on a quiet machine before trusting the ranking.")
_TARGET_NAMES = {"mcu": "a microcontroller (TF Lite Micro)", "edgetpu": "the Edge TPU",
                 "gpu": "the GPU delegate", "integer_only": "integer-only hardware"}  # fmt: skip


def _target_violation(row: VariantResult, target: str | None) -> str | None:
    """Why `row` cannot run on `target` (its check's own reasons), or None if it can."""
    if target is None or target == "cpu":  # every measured variant ran on the host's LiteRT
        return None
    result = row.targets.get(target)
    if result is None:
        return f"not checked for {target} (run without target checks)"
    if result.ok:
        return None
    reasons = "; ".join(result.reasons) or "fails its rules"
    return f"cannot run on {_TARGET_NAMES.get(target, target)}: {reasons}"


def _confidence_phrase(drop: list[float | None] | None, bound: DropBound | None) -> str:
    """How the accuracy budget was judged for the chosen variant, with the numbers."""
    if not drop or bound is None:
        return ""
    if bound.bound is None:
        return f" Judged on {bound.how}: {drop[0]:.2f} points."
    return (f" Its accuracy drop is {drop[0]:.2f} points, at most {bound.bound:.2f} with "
            f"{bound.level:.0%} confidence ({bound.how}).")  # fmt: skip


def _limits_phrase(c: RecommendConfig, have_reference: bool, level: float | None = None) -> str:
    parts = []
    if have_reference:
        unit = "point" if c.max_accuracy_drop == 1 else "points"
        sure = f" with {level:.0%} confidence" if level else ""
        parts.append(f"stays within {c.max_accuracy_drop:g} {unit} of the float model's "
                     f"accuracy{sure}")  # fmt: skip
    if c.max_size_mb is not None:
        parts.append(f"fits in {c.max_size_mb:g} MB")
    if c.max_gzip_size_mb is not None:
        parts.append(f"gzips to at most {c.max_gzip_size_mb:g} MB")
    if c.max_latency_ms is not None:
        parts.append(f"runs under {c.max_latency_ms:g} ms")
    if c.target not in (None, "cpu"):
        parts.append(f"runs on {_TARGET_NAMES.get(c.target, c.target)}")
    if not parts:
        return "was measured"
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def constraints_of(results: RunResults, **overrides: Any) -> RecommendConfig:
    """The run's own `recommend` config section, with any non-None overrides applied."""
    section = dict(results.config.get("recommend") or {})
    section.update({k: v for k, v in overrides.items() if v is not None})
    return RecommendConfig.model_validate(section)


def attach(results: RunResults, constraints: RecommendConfig | None = None) -> Recommendation:
    """Recommend and store it in results.extras["recommendation"] (the caller saves)."""
    rec = recommend(results, constraints or constraints_of(results))
    results.extras[EXTRAS_KEY] = rec.model_dump(mode="json")
    return rec


def stored(results: RunResults) -> Recommendation | None:
    raw = results.extras.get(EXTRAS_KEY)
    try:
        return Recommendation.model_validate(raw) if isinstance(raw, dict) else None
    except ValueError:
        return None
