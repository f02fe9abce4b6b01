"""Image-level uncertainty: intervals over the scored photos, and paired comparisons.

An accuracy measured on n photos is a binomial proportion; its 95% interval is Wilson's score
interval. We chose Wilson over the exact (Clopper-Pearson) interval because the exact one is
conservative by construction (its coverage is never below 95% and averages ~97-98% at our n,
Newcombe 1998, Stat Med 17:857), so it is wider than it needs to be, while Wilson's coverage
stays close to the nominal 95% for n in the hundreds and it needs no beta quantiles (no SciPy
at run time). At 551 photos and 84.6% the two differ by ~0.2 points at each end.

Variants are scored on the same photos, so their difference is paired. The interval for a
paired difference of proportions is Newcombe's hybrid score interval ("method 10", Newcombe
1998, Stat Med 17:2635): Wilson intervals of the two accuracies combined with the correlation
of the 2x2 table. The exact McNemar p-value is the two-sided binomial test of the discordant
photos (one variant right, the other wrong) against 1/2. With 16 discordant photos of 551 the
paired interval is about +/-1.3 points where two independent intervals would say +/-4.

`--confidence` (recommend.py) turns these into one-sided bounds: a one-sided c-level upper
bound is the upper end of the two-sided (2c - 1)-level interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

CONFIDENCE = 0.95
# --confidence: the one-sided level at which the accuracy drop must stay within budget.
ONE_SIDED = {"estimate": None, "likely": 0.80, "sure": 0.95}


def z_two_sided(confidence: float) -> float:
    """The normal quantile for a two-sided `confidence` interval (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion successes/n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes}/{n}")
    z = z_two_sided(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)  # clamp float round-off at 0 and n


def mcnemar_exact_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p: P(as few of the b + c discordant pairs on one side) x 2."""
    m = b + c
    if m == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(m, i) for i in range(k + 1))  # exact integers; 2**m is exact too
    return min(1.0, 2 * tail / 2**m)


def _phi(a: int, b: int, c: int, d: int) -> float:
    """Newcombe's correlation estimate for method 10 (with his continuity adjustment)."""
    product = (a + b) * (c + d) * (a + c) * (b + d)
    if product == 0:
        return 0.0
    n = a + b + c + d
    cross = a * d - b * c
    numerator = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    return numerator / math.sqrt(product)


def difference_interval(p1: tuple[int, int], p2: tuple[int, int], phi: float,
                        confidence: float = CONFIDENCE) -> tuple[float, float, float]:  # fmt: skip
    """(p1 - p2, low, high) from Wilson intervals of k1/n1 and k2/n2 and their correlation
    `phi` (0: independent samples, Newcombe's method 10 for two groups)."""
    (k1, n1), (k2, n2) = p1, p2
    x1, x2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, confidence)
    l2, u2 = wilson(k2, n2, confidence)
    theta = x1 - x2
    below = (x1 - l1) ** 2 - 2 * phi * (x1 - l1) * (u2 - x2) + (u2 - x2) ** 2
    above = (x2 - l2) ** 2 - 2 * phi * (x2 - l2) * (u1 - x1) + (u1 - x1) ** 2
    return theta, theta - math.sqrt(max(0.0, below)), theta + math.sqrt(max(0.0, above))


def paired_interval(a: int, b: int, c: int, d: int,
                    confidence: float = CONFIDENCE) -> tuple[float, float, float]:  # fmt: skip
    """Newcombe's method 10 for the paired 2x2 table [[a, b], [c, d]]: rows are the first
    classifier right/wrong, columns the second. Returns (p1 - p2, low, high)."""
    n = a + b + c + d
    if n <= 0:
        raise ValueError("empty table")
    return difference_interval((a + b, n), (a + c, n), _phi(a, b, c, d), confidence)


@dataclass(frozen=True)
class Paired:
    """First minus second on the same photos (fractions 0..1)."""

    n: int
    difference: float
    low: float
    high: float
    p_value: float
    gained: int  # photos the first gets right and the second wrong
    lost: int  # photos the second gets right and the first wrong

    def upper_drop(self) -> float:
        """The interval's upper bound on second minus first, in points."""
        return -self.low * 100


def compare(first_correct: np.ndarray, second_correct: np.ndarray,
            confidence: float = CONFIDENCE) -> Paired:  # fmt: skip
    """Paired comparison of two classifiers' per-image correctness (boolean arrays)."""
    first, second = np.asarray(first_correct, bool), np.asarray(second_correct, bool)
    if first.shape != second.shape or first.ndim != 1 or not len(first):
        raise ValueError("need two equally long, non-empty correctness vectors")
    a = int((first & second).sum())
    b = int((first & ~second).sum())
    c = int((~first & second).sum())
    d = len(first) - a - b - c
    diff, low, high = paired_interval(a, b, c, d, confidence)
    return Paired(len(first), diff, low, high, mcnemar_exact_p(b, c), b, c)


def one_sided_level(mode: str) -> float | None:
    """--confidence estimate|likely|sure -> the one-sided level (None: the point estimate)."""
    if mode not in ONE_SIDED:
        raise ValueError(f"unknown confidence {mode!r}")
    return ONE_SIDED[mode]


def two_sided_for(one_sided: float) -> float:
    """The two-sided level whose upper end is the one-sided `one_sided` bound."""
    return 2 * one_sided - 1


# --- rows of a run ------------------------------------------------------------------------


def row_correct(results, row) -> np.ndarray | None:
    """Per-photo correctness of a row, from its stored top-1 and the run's labels."""
    from quantbench.core.results import decode_classes

    data = results.data
    if row is None or row.predictions is None or data is None or data.eval_labels is None:
        return None
    predicted, labels = decode_classes(row.predictions), decode_classes(data.eval_labels)
    return predicted == labels if len(predicted) == len(labels) else None


def paired_rows(results, first, second, confidence: float = CONFIDENCE) -> Paired | None:
    """first minus second on the same photos; None without stored per-photo predictions."""
    a, b = row_correct(results, first), row_correct(results, second)
    return None if a is None or b is None else compare(a, b, confidence)


def unpaired_rows(first, second, confidence: float = CONFIDENCE) -> tuple[float, float, float] | None:
    """first minus second as two independent samples (no per-photo data): wider, as it ignores
    that both were scored on the same photos. None when a photo count is missing."""
    counts = []
    for row in (first, second):
        if row is None or row.accuracy is None or not row.eval_images:
            return None
        counts.append((round(row.accuracy * row.eval_images), row.eval_images))
    return difference_interval(counts[0], counts[1], 0.0, confidence)


@dataclass(frozen=True)
class DropBound:
    """The accuracy drop of a variant below the reference, in points, and how sure it is."""

    estimate: float  # measured drop (mean over training runs with repeats)
    bound: float | None  # one-sided upper bound at `level`; None: judged on the estimate
    level: float | None
    how: str  # what the bound rests on, for the recommendation's reason


def drop_bound(results, variant: str, reference: str, mode: str) -> DropBound | None:
    """How far `variant` falls below `reference` at --confidence `mode` (intervals.ONE_SIDED).

    One run: the upper end of the paired (Newcombe) interval at two-sided level 2c - 1.
    Repeats: the larger of the training-level bound (one-sided Student t over the per-run
    drops, stats.t_quantile) and the image-level bound (the per-run paired bounds, averaged),
    so both sources of variation must allow the drop. None when either row is missing.
    """
    from quantbench.analysis import stats

    level = one_sided_level(mode)
    drops, image_bounds, photos = [], [], 0
    for repeat in range(results.repeats):
        row, ref = results.variant(variant, repeat), results.variant(reference, repeat)
        if row is None or ref is None or row.accuracy is None or ref.accuracy is None:
            continue
        drops.append((ref.accuracy - row.accuracy) * 100)
        if level is not None:
            paired = paired_rows(results, ref, row, two_sided_for(level))
            image_bounds.append(None if paired is None else paired.high * 100)
            photos = paired.n if paired is not None else photos
    if not drops:
        return None
    estimate = stats.mean(drops)
    if level is None:
        return DropBound(estimate, None, None, "the measured drop (--confidence estimate)")
    if any(b is None for b in image_bounds):
        return DropBound(estimate, None, None, "the measured drop: these results hold no "
                         "per-photo predictions to put an interval on it")  # fmt: skip
    image = stats.mean(image_bounds)
    if len(drops) == 1:
        return DropBound(estimate, image, level, f"paired over {photos} photos")
    sd = stats.std(drops) or 0.0
    training = estimate + stats.t_quantile(level, len(drops) - 1) * sd / math.sqrt(len(drops))
    source = "training runs" if training > image else "photos"
    return DropBound(estimate, max(training, image), level,
                     f"{len(drops)} training runs and {photos} photos; the {source} dominate")  # fmt: skip
