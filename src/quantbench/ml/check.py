"""`--check`: does the declared preprocessing match the model? Score every alternative.

The original Keras model is scored on one sample of the photos (up to 500) under each
scaling x channel order (8 combinations). Because every combination sees the *same* images,
an alternative is compared with the declared one by an exact one-sided McNemar test on the
discordant images (b: only the alternative is right, c: only the declared one is), with a
Bonferroni correction over the 7 alternatives. The declared one is also tested against
chance (one-sided binomial test of its correct count against 1 / classes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from quantbench.core.results import CheckResult, CheckRow
from quantbench.ml.preprocess import CHANNEL_ORDERS, SCALINGS, Preprocessing

SAMPLE_LIMIT = 500
ALPHA = 0.05


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed exactly in log space (n is small here)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    terms = [
        log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        for i in range(k, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def mcnemar_p(only_alternative: int, only_declared: int) -> float:
    """Exact one-sided McNemar p-value that the alternative is the more accurate one."""
    return binomial_tail(only_alternative, only_alternative + only_declared, 0.5)


def sample(images: np.ndarray, labels: np.ndarray, limit: int = SAMPLE_LIMIT, seed: int = 0):
    """Up to `limit` images, drawn at random (fixed seed) so every class is represented."""
    if len(images) <= limit:
        return images, labels
    picks = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
    return images[picks], labels[picks]


def check_preprocessing(
    model, images: np.ndarray, labels: np.ndarray, num_classes: int, declared: Preprocessing,
    alpha: float = ALPHA,
) -> CheckResult:  # fmt: skip
    """Score `model` on uint8 `images` under every scaling x channel order."""
    from quantbench.ml.train import predict_keras

    combos = [(s, c) for s in SCALINGS for c in CHANNEL_ORDERS]
    correct: dict[tuple[str, str], np.ndarray] = {}
    for scaling, order in combos:
        preprocessing = Preprocessing(declared.image_size, scaling, order)
        predicted = predict_keras(model, images, preprocessing).argmax(axis=1)
        correct[(scaling, order)] = predicted == labels
    key = (declared.scaling, declared.channel_order)
    base = correct[key]
    threshold = alpha / (len(combos) - 1)  # Bonferroni over the alternatives
    rows: list[CheckRow] = []
    for combo in combos:
        hits = correct[combo]
        row = CheckRow(*combo, accuracy=float(hits.mean()), declared=combo == key)
        if not row.declared:
            row.only_this_right = int((hits & ~base).sum())
            row.only_declared_right = int((base & ~hits).sum())
            row.p_value = mcnemar_p(row.only_this_right, row.only_declared_right)
            row.better = row.p_value < threshold
        rows.append(row)
    n = len(labels)
    chance = 1.0 / num_classes
    result = CheckResult(n, num_classes, rows, chance, binomial_tail(int(base.sum()), n, chance))
    declared_row = result.declared
    better = sorted((r for r in rows if r.better), key=lambda r: -r.accuracy)
    if better:
        best = better[0]
        result.warnings.append(
            f"the declared preprocessing ({declared.scaling}, {declared.channel_order}) scores "
            f"{declared_row.accuracy:.1%} but {best.scaling}, {best.channel_order} scores "
            f"{best.accuracy:.1%} on the same {n} images (McNemar p = {best.p_value:.2g}): "
            f"use {best.flags}"
            + "".join(f" (or {r.flags}, as good)" for r in better[1:]
                      if r.accuracy == best.accuracy)
        )
    if result.chance_p_value >= alpha:
        result.warnings.append(
            f"the declared preprocessing scores {declared_row.accuracy:.1%}, not clearly above "
            f"chance ({chance:.1%} for {num_classes} classes, binomial p = "
            f"{result.chance_p_value:.2g}): check --scaling, --channel-order and the class order "
            f"(--labels FILE)"
        )
    return result
