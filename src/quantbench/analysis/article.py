"""The article beside this run: its figures, ours, and a verdict on each of its claims.

The article ("A Tale of Model Quantization in TF Lite", the report quantbench reproduces)
ships its figures as package data (`data/article_report.json`). Each claim is checked on a
paired difference (or ratio) per training repeat, summarized by a 95% Student-t interval
(`stats.describe`), and judged against a band that says what "about" means:

- holds: the whole interval agrees with the claim;
- does not hold: the whole interval contradicts it;
- inconclusive: the interval straddles the band's edge, or the rows were not measured.

One repeat has no training-level interval. An accuracy difference then gets the paired
interval over the photos both rows were scored on (intervals.paired_rows: Newcombe's interval,
the photos' own sampling error), or, in results without per-photo predictions, the wider
interval of two independent samples; the reason says which. The epoch-time ratio of one run
is still widened by a fixed margin (0.3x), since no photo-level statistic applies to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any


from quantbench.analysis import intervals, stats
from quantbench.core.results import RunResults, VariantResult
from quantbench.core.config import RECIPE_ALIASES

ARTICLE_FILE = "article_report.json"
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"

DYNAMIC_RANGE_BAND = (10.0, 16.0)  # "about 13 points": 13 +/- 3
RATIO_BAND = (1.76, 2.64)  # "about 2.2x": 2.2 +/- 20%
NEGLIGIBLE_POINTS = 1.0  # a loss under a point does not confirm a claimed 14-point loss
SINGLE_MARGIN_RATIO = 0.3  # one run's epoch-time ratio: the figure +/- this
DEFAULT_SCHEMES_ON_QAT = ("dynamic_range", "int8")  # its "QAT + DEFAULT", best match first


def load_article_report() -> dict[str, Any]:
    text = resources.files("quantbench").joinpath("data", ARTICLE_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def qat_recipes(results: RunResults) -> list[str]:
    """QAT recipes present in the results, in the order they were trained, by their names
    now (results written before the rename say `seed` for `fresh`)."""
    names = [RECIPE_ALIASES.get(t.recipe, t.recipe) for t in results.training
             if t.recipe != "float"]  # fmt: skip
    return list(dict.fromkeys(names))


def _qat_name(stored: set[str], recipe: str, suffix: str = "") -> str:
    """The name a recipe's model or variant has in these results: `qat_fresh_int8`, or in older
    results `qat_seed_int8` (names are kept as measured); the name now if neither is there."""
    spellings = [recipe] + [old for old, new in RECIPE_ALIASES.items() if new == recipe]
    names = [f"qat_{r}{suffix}" for r in spellings]
    return next((n for n in names if n in stored), names[0])


def _variant_names(results: RunResults) -> set[str]:
    return {v.variant for v in results.variants}


def _row(results: RunResults, variant: str, repeat: int) -> VariantResult | None:
    row = results.variant(variant, repeat)
    return row if row is not None and row.status != "failed" and row.accuracy is not None else None


def _float_variant(results: RunResults) -> str:
    """The article's "float model" is its float32 .tflite; fall back to the Keras model."""
    return "float32" if any(v.variant == "float32" for v in results.variants) else "keras_float"


def _qat_default_variant(results: RunResults, recipe: str) -> str | None:
    stored = _variant_names(results)
    for scheme in DEFAULT_SCHEMES_ON_QAT:
        name = _qat_name(stored, recipe, f"_{scheme}")
        if any(v.variant == name and v.status != "failed" for v in results.variants):
            return name
    return None


def _paired(results: RunResults, fn: Callable[[int], float | None]) -> list[float]:
    values = [fn(r) for r in range(results.repeats)]
    return [v for v in values if v is not None]


def _accuracy_difference(results: RunResults, a: str, b: str) -> list[float]:
    """Per repeat, accuracy(a) - accuracy(b) in points."""

    def diff(repeat: int) -> float | None:
        ra, rb = _row(results, a, repeat), _row(results, b, repeat)
        return None if ra is None or rb is None else 100 * (ra.accuracy - rb.accuracy)

    return _paired(results, diff)


def _image_interval(results: RunResults, a: str | None, b: str | None) -> tuple | None:
    """One run: (low, high, how) of accuracy(a) - accuracy(b) in points, over the photos."""
    ra, rb = _row(results, a, 0) if a else None, _row(results, b, 0) if b else None
    if ra is None or rb is None:
        return None
    paired = intervals.paired_rows(results, ra, rb)
    if paired is not None:
        return (100 * paired.low, 100 * paired.high,
                f"single run: 95% CI paired over {paired.n} photos ({paired.gained} gained, "
                f"{paired.lost} lost; McNemar p={paired.p_value:.2g})")  # fmt: skip
    unpaired = intervals.unpaired_rows(ra, rb)
    if unpaired is not None:
        return (100 * unpaired[1], 100 * unpaired[2], "single run: 95% CI over the photos as "
                "two independent samples (no per-photo predictions stored: wider than paired)")  # fmt: skip
    return None


def _interval(values: list[float], single_margin: float | None,
              single: tuple | None = None) -> tuple[dict[str, Any], str]:  # fmt: skip
    """The t interval over training runs; with one run the image-level interval `single`
    (low, high, how), or the value +/- `single_margin`; and how to say it."""
    d = stats.describe(values)
    if d["n"] >= 2:
        return d, f"95% CI over {d['n']} repeats (training runs)"
    if single is not None:
        return {**d, "ci_low": single[0], "ci_high": single[1], "single": True}, single[2]
    if single_margin is not None:
        low, high = d["mean"] - single_margin, d["mean"] + single_margin
        return ({**d, "ci_low": low, "ci_high": high, "single": True},
                f"single repeat: no confidence interval, judged on the figure +/- {single_margin:g}")  # fmt: skip
    return d, "single repeat without per-photo data or photo counts: no interval"


def _fmt(d: dict[str, Any], unit: str, digits: int = 1) -> str:
    text = f"{d['mean']:+.{digits}f}{unit}" if unit == " pts" else f"{d['mean']:.{digits}f}{unit}"
    if d.get("ci_low") is None:
        return f"{text} (n=1, no interval)"
    if d.get("single"):
        return f"{text} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}] n=1"
    return f"{text} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}] n={d['n']}"


def _entry(key: str, claim: str, article_text: str, article_value: float, values: list[float],
           unit: str, decide: Callable[[float, float], str], margin: float | None,
           missing: str, extra_reason: str = "", single: tuple | None = None) -> dict[str, Any]:  # fmt: skip
    entry: dict[str, Any] = {"key": key, "claim": claim, "article": article_text,
                             "article_value": article_value}
    if not values:
        return {**entry, "ours": "not measured", "ours_value": None, "verdict": UNSURE,
                "reason": missing}  # fmt: skip
    d, how = _interval(values, margin, single)
    if d["ci_low"] is None:
        return {**entry, "ours": _fmt(d, unit), "ours_value": {**d, "values": values},
                "verdict": UNSURE, "reason": f"{how}. {extra_reason}".strip()}  # fmt: skip
    verdict = decide(d["ci_low"], d["ci_high"])
    reason = f"{how}: [{d['ci_low']:.2f}, {d['ci_high']:.2f}]{unit}"
    return {**entry, "ours": _fmt(d, unit, 2 if unit == "x" else 1),
            "ours_value": {**d, "values": values}, "verdict": verdict,
            "reason": f"{reason}. {extra_reason}".strip()}  # fmt: skip


def _within(band: tuple[float, float]) -> Callable[[float, float], str]:
    def decide(low: float, high: float) -> str:
        if band[0] <= low and high <= band[1]:
            return HOLDS
        if high < band[0] or low > band[1]:
            return FAILS
        return UNSURE

    return decide


def _positive(low: float, high: float) -> str:
    return HOLDS if low > 0 else FAILS if high < 0 else UNSURE


def _loses(low: float, high: float) -> str:
    return HOLDS if high < 0 else FAILS if low > -NEGLIGIBLE_POINTS else UNSURE


def verdicts(results: RunResults, article: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One entry per claim (and per QAT recipe for the QAT claims)."""
    article = article or load_article_report()
    rows = {r["key"]: r for r in article["rows"]}
    claims = article["claims"]
    reference = _float_variant(results)
    out = []

    article_a = rows["float"]["accuracy_pct"] - rows["dynamic_range"]["accuracy_pct"]
    out.append(_entry(
        "a", claims["a"], f"{rows['float']['accuracy_pct']}% -> "
        f"{rows['dynamic_range']['accuracy_pct']}%: loses {article_a:.2f} pts", article_a,
        _accuracy_difference(results, reference, "dynamic_range"), " pts",
        _within(DYNAMIC_RANGE_BAND), None,
        "no dynamic_range row of the float model in this run",
        f"Loss = {reference} minus dynamic_range accuracy; 'about 13' read as "
        f"{DYNAMIC_RANGE_BAND[0]:g}..{DYNAMIC_RANGE_BAND[1]:g} pts.",
        _image_interval(results, reference, "dynamic_range"),
    ))  # fmt: skip

    article_b = rows["qat_default"]["accuracy_pct"] - rows["float"]["accuracy_pct"]
    article_c = article["epoch_seconds"]["qat"] / article["epoch_seconds"]["float"]
    article_d = rows["qat_optimize_for_size"]["accuracy_pct"] - rows["qat_default"]["accuracy_pct"]
    recipes = qat_recipes(results) or ["fresh"]  # no QAT here: the article's recipe, unmeasured
    for recipe in recipes:
        default_variant = _qat_default_variant(results, recipe)
        out.append(_entry(
            "b", f"{claims['b']} [QAT recipe {recipe}]",
            f"{rows['qat_default']['accuracy_pct']}% vs {rows['float']['accuracy_pct']}%: "
            f"{article_b:+.2f} pts", article_b,
            _accuracy_difference(results, default_variant, reference) if default_variant else [],
            " pts", _positive, None,
            f"no QAT {recipe} DEFAULT row in this run",
            f"Gain = {default_variant} minus {reference} accuracy; holds if the interval is "
            f"above 0, fails if below 0.", _image_interval(results, default_variant, reference),
        ))  # fmt: skip
        out.append(_entry(
            "c", f"{claims['c']} [QAT recipe {recipe}]",
            f"{article['epoch_seconds']['qat']:g} s vs {article['epoch_seconds']['float']:g} s per "
            f"epoch: {article_c:.2f}x", article_c, _epoch_ratios(results, recipe), "x",
            _within(RATIO_BAND), SINGLE_MARGIN_RATIO, f"no QAT {recipe} training in this run",
            f"Steady-state seconds per epoch (first epoch excluded), QAT over float of the same "
            f"repeat; 'about 2.2x' read as {RATIO_BAND[0]:g}..{RATIO_BAND[1]:g}x. Wall-clock "
            f"times: on a shared CPU, other processes inflate whichever side they overlap.",
        ))  # fmt: skip
        out.append(_claim_d(results, recipe, default_variant, claims["d"], article_d, rows))
    return out


def _epoch_ratios(results: RunResults, recipe: str) -> list[float]:
    return [row["ratio_to_float"] for row in stats.training_cost(results)
            if RECIPE_ALIASES.get(row["recipe"], row["recipe"]) == recipe
            and row["ratio_to_float"] is not None]  # fmt: skip


def _claim_d(results, recipe, default_variant, claim, article_d, rows) -> dict[str, Any]:
    article_text = (f"{rows['qat_optimize_for_size']['accuracy_pct']}% vs "
                    f"{rows['qat_default']['accuracy_pct']}%: {article_d:+.2f} pts")  # fmt: skip
    stored = _variant_names(results)
    names = [_qat_name(stored, recipe, f"_{option}")
             for option in ("optimize_for_size", "optimize_for_latency")]  # fmt: skip
    present = [v for v in results.variants if v.variant in names]
    identical = [v for v in present if v.status == "identical" and v.identical_to == default_variant]
    note = ""
    if present and len(identical) == len(present):
        note = (f"Every OPTIMIZE_FOR_SIZE/LATENCY file is byte-identical to {default_variant} "
                f"(the options are deprecated aliases of DEFAULT).")  # fmt: skip
    elif identical:
        note = f"{len(identical)} of {len(present)} such files are byte-identical to DEFAULT."

    def worst(repeat: int) -> float | None:
        diffs = [d for n in names
                 for d in [_single_diff(results, n, default_variant, repeat)] if d is not None]  # fmt: skip
        return min(diffs) if diffs else None

    values = _paired(results, worst) if default_variant else []
    diffs0 = {n: _single_diff(results, n, default_variant, 0) for n in names}
    worst0 = min((n for n in names if diffs0[n] is not None), key=diffs0.get, default=None)
    entry = _entry(
        "d", f"{claim} [QAT recipe {recipe}]", article_text, article_d, values, " pts", _loses,
        None, f"no QAT {recipe} OPTIMIZE_FOR_SIZE/LATENCY rows in this run",
        f"Worst of OPTIMIZE_FOR_SIZE/LATENCY minus {default_variant}; fails if no loss of "
        f"{NEGLIGIBLE_POINTS:g} pt or more is possible. {note}",
        _image_interval(results, worst0, default_variant),
    )
    if values and present and len(identical) == len(present):
        # Identical bytes are identical predictions: decided exactly, whatever the repeats.
        entry["verdict"] = FAILS
    return entry


def _single_diff(results, a: str, b: str | None, repeat: int) -> float | None:
    if b is None:
        return None
    ra, rb = _row(results, a, repeat), _row(results, b, repeat)
    return None if ra is None or rb is None else 100 * (ra.accuracy - rb.accuracy)


def figures(results: RunResults, article: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The article's table beside ours: size and accuracy of each matching variant."""
    article = article or load_article_report()
    summary, stored = stats.summarize(results), _variant_names(results)
    out = []
    for row in article["rows"]:
        if row["source"] == "float":
            ours = [(row["variant"], None)]
        else:
            ours = [(_qat_name(stored, r, f"_{row['variant']}"), r)
                    for r in qat_recipes(results) or ["fresh"]]  # fmt: skip
        if row["key"] == "qat_default":
            ours = [(_qat_default_variant(results, r) or _qat_name(stored, r, "_dynamic_range"), r)
                    for _, r in ours]  # fmt: skip
        for variant, recipe in ours:
            s = summary.get(variant, {})
            out.append({
                "label": row["label"], "recipe": recipe, "variant": variant,
                "article_size_mb": row["size_mb"], "article_accuracy_pct": row["accuracy_pct"],
                "size_mb": s["size_bytes"]["mean"] / 1e6 if "size_bytes" in s else None,
                "accuracy": s.get("accuracy"),
            })  # fmt: skip
    training = stats.summarize_training(results)
    for name, seconds in [("float", article["epoch_seconds"]["float"])] + [
        (_qat_name(set(training), r), article["epoch_seconds"]["qat"]) for r in qat_recipes(results)
    ]:
        t = training.get(name, {})
        out.append({
            "label": f"seconds per epoch ({name})", "recipe": None, "variant": name,
            "article_seconds_per_epoch": seconds,
            "seconds_per_epoch": t.get("steady_seconds_per_epoch"),
        })  # fmt: skip
    return out


def attach(results: RunResults) -> None:
    """Store the comparison in results.extras (the report reads it from there)."""
    article = load_article_report()
    results.extras["article_figures"] = figures(results, article)
    results.extras["article_comparison"] = verdicts(results, article)
