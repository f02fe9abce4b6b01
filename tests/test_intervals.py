"""Image-level intervals and paired tests, checked against statsmodels/SciPy, and how the
recommendation and the article's verdicts use them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantbench.analysis import article, intervals
from quantbench.core.config import RecommendConfig
from quantbench.measure.evaluate import score
from quantbench.analysis.recommend import recommend
from quantbench.core.results import (
    DataSummary,
    RunResults,
    VariantResult,
    decode_classes,
    encode_classes,
    to_csv,
)

CASES = [(0, 10), (1, 10), (9, 10), (10, 10), (45, 45), (466, 551), (538, 551), (3, 551),
         (3100, 3670), (1, 1)]  # fmt: skip


@pytest.mark.parametrize("k, n", CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.9, 0.6])
def test_wilson_matches_statsmodels(k, n, confidence):
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    low, high = proportion.proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    ours = intervals.wilson(k, n, confidence)
    assert ours == pytest.approx((low, high), abs=1e-12)


@pytest.mark.parametrize("b, c", [(0, 0), (0, 8), (8, 0), (30, 38), (9, 7), (1, 1), (120, 80),
                                  (0, 1), (5, 20), (1500, 1400)])  # fmt: skip
def test_exact_mcnemar_matches_statsmodels(b, c):
    tables = pytest.importorskip("statsmodels.stats.contingency_tables")
    expected = tables.mcnemar([[400, b], [c, 60]], exact=True).pvalue
    assert intervals.mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def _newcombe_reference(table, confidence):
    """Newcombe (1998) method 10 written from the paper's formulas (as R's biostatUZH
    confIntPairedProportion does), on statsmodels' Wilson intervals: an independent check."""
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    (r, s), (t, u) = table
    n = r + s + t + u
    p1, p2 = (r + s) / n, (r + t) / n
    l1, u1 = proportion.proportion_confint(r + s, n, alpha=1 - confidence, method="wilson")
    l2, u2 = proportion.proportion_confint(r + t, n, alpha=1 - confidence, method="wilson")
    a = (r + s) * (t + u) * (r + t) * (s + u)
    b = r * u - s * t
    c = b - n / 2 if b > n / 2 else (b if b < 0 else 0)
    phi = c / math.sqrt(a) if a else 0.0
    low = p1 - p2 - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    high = p1 - p2 + math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    return p1 - p2, low, high


@pytest.mark.parametrize("table", [((14, 5), (0, 22)), ((458, 8), (0, 85)),
                                   ((428, 38), (30, 55)), ((36, 12), (2, 0)), ((5, 0), (0, 5)),
                                   ((2980, 40), (55, 595))])  # fmt: skip
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_paired_interval_matches_newcombes_formulas(table, confidence):
    (a, b), (c, d) = table
    ours = intervals.paired_interval(a, b, c, d, confidence)
    assert ours == pytest.approx(_newcombe_reference(table, confidence), abs=1e-12)
    assert ours[1] <= ours[0] <= ours[2]


def test_pairing_narrows_the_interval_when_disagreements_are_few():
    paired = intervals.paired_interval(458, 8, 0, 85)
    independent = intervals.difference_interval((466, 551), (458, 551), 0.0)
    assert paired[2] - paired[1] < 0.5 * (independent[2] - independent[1])


def test_classes_round_trip_compactly():
    small = np.array([0, 4, 2, 255, 1])
    wide = np.array([0, 999, 65535])
    assert (decode_classes(encode_classes(small)) == small).all()
    assert (decode_classes(encode_classes(wide)) == wide).all()
    assert encode_classes(small).startswith("u8:") and encode_classes(wide).startswith("u16:")
    # 3670 photos take ~4.9 KB of text per variant
    assert len(encode_classes(np.zeros(3670, int))) < 5000


def test_score_adds_intervals_and_the_paired_test():
    labels = np.arange(100) % 5
    reference = labels.copy()
    reference[:10] = (labels[:10] + 1) % 5  # 90 right
    variant = reference.copy()
    variant[10:14] = (labels[10:14] + 1) % 5  # loses 4 more: 86 right
    s = score(variant, labels, list("abcde"), reference)
    assert s.accuracy == 0.86 and s.accuracy_ci == list(intervals.wilson(86, 100))
    assert s.agreement == 0.96 and s.agreement_ci == list(intervals.wilson(96, 100))
    assert s.vs_reference["lost"] == 4 and s.vs_reference["gained"] == 0
    assert s.vs_reference["p_value"] == pytest.approx(2 / 16)
    assert s.vs_reference["difference"] == pytest.approx(-0.04)
    fields = s.uncertainty()
    assert (decode_classes(fields["predictions"]) == variant).all()
    assert score(reference, labels, list("abcde"), reference).vs_reference is None


# --- the acceptance case: 1.5 points on 551 photos, few vs many discordant photos -----------

N, REF_RIGHT = 551, 466  # 84.6% like the default run


def _predictions(labels, correct):
    return np.where(correct, labels, (labels + 1) % 5)


def paired_run(lost: int, gained: int, extra: dict | None = None) -> RunResults:
    """keras_float, float32 (= keras), and `int8`, which loses `lost` photos the float model
    gets right and gains `gained` it gets wrong; `extra` adds more such rows."""
    labels = np.random.default_rng(0).integers(0, 5, N)
    ref = np.zeros(N, bool)
    ref[:REF_RIGHT] = True

    def row(name, correct, kind="tflite", size=1.0):
        acc = float(correct.mean())
        return VariantResult(
            variant=name, scheme=None if kind == "keras" else name, policy=name, kind=kind,
            accuracy=acc, eval_images=N, size_bytes=int(size * 1e6),
            predictions=encode_classes(_predictions(labels, correct)),
        )  # fmt: skip

    def changed(lost, gained):
        c = ref.copy()
        c[:lost] = False
        c[REF_RIGHT : REF_RIGHT + gained] = True
        return c

    rows = [row("keras_float", ref, "keras", 5.0), row("float32", ref, size=4.0),
            row("int8", changed(lost, gained), size=1.0)]  # fmt: skip
    for name, (lo, ga, size) in (extra or {}).items():
        rows.append(row(name, changed(lo, ga), size=size))
    return RunResults(
        name="t", created="now", variants=rows,
        data=DataSummary(source="x", classes=list("abcde"), class_counts={}, train_count=0,
                         val_count=N, split_seed=1, validation_split=0.15, image_size=8,
                         eval_labels=encode_classes(labels)),
    )  # fmt: skip


FEW = (8, 0)  # 8 photos lost, none gained: -1.45 points
MANY = (38, 30)  # 38 lost, 30 gained: the same -1.45 points


def test_same_drop_few_discordant_is_significant_many_is_not():
    few, many = paired_run(*FEW), paired_run(*MANY)
    p_few = intervals.paired_rows(few, few.variant("int8"), few.variant("keras_float"))
    p_many = intervals.paired_rows(many, many.variant("int8"), many.variant("keras_float"))
    assert p_few.difference == pytest.approx(p_many.difference) == pytest.approx(-8 / N)
    assert p_few.p_value < 0.01 and p_few.high < 0  # the loss is real
    assert p_many.p_value > 0.3 and p_many.low < 0 < p_many.high  # could be noise


def test_recommendation_trusts_the_drop_only_when_the_photos_say_so():
    budget = RecommendConfig(max_accuracy_drop=3.0, objective="size")
    few = recommend(paired_run(*FEW), budget)
    many = recommend(paired_run(*MANY), budget)
    assert few.chosen == "int8"  # 1.45 points, at most ~2.6 with 95% confidence
    assert "with 95% confidence" in few.reason and "paired over 551 photos" in few.reason
    assert many.chosen == "float32"  # same 1.45 points, but could be ~3.7
    (why,) = many.ruled_out["int8"]
    assert "accuracy drop 1.45 points, up to" in why and "95% confidence" in why
    low, bound = many.accuracy_drops["int8"]
    assert low == pytest.approx(100 * 8 / N) and bound > 3.0 > few.accuracy_drops["int8"][1]
    # --confidence estimate judges the measured drop: both fit, as before
    loose = budget.model_copy(update={"confidence": "estimate"})
    assert recommend(paired_run(*MANY), loose).chosen == "int8"
    # likely sits between: its bound is below sure's
    likely = recommend(paired_run(*MANY), budget.model_copy(update={"confidence": "likely"}))
    assert likely.accuracy_drops["int8"][1] < bound


def _with_qat(run: RunResults) -> RunResults:
    """Rename int8 as the QAT DEFAULT variant so claim (b) compares it with float32."""
    row = run.variant("int8")
    row.variant, row.source = "qat_fresh_dynamic_range", "qat_fresh"
    return run


def test_article_verdicts_follow_the_paired_interval():
    # Claim (b): QAT + DEFAULT beats float. Here the QAT row *gains* 8 photos (+1.45 points).
    few = _with_qat(paired_run(lost=0, gained=8))
    many = _with_qat(paired_run(lost=30, gained=38))
    vf = {v["key"]: v for v in article.verdicts(few)}
    vm = {v["key"]: v for v in article.verdicts(many)}
    assert vf["b"]["verdict"] == article.HOLDS and "paired over 551 photos" in vf["b"]["reason"]
    assert vm["b"]["verdict"] == article.UNSURE and "McNemar" in vm["b"]["reason"]
    assert vf["b"]["ours_value"]["mean"] == pytest.approx(vm["b"]["ours_value"]["mean"])


def test_csv_has_the_intervals():
    run = paired_run(*FEW)
    labels = decode_classes(run.data.eval_labels)
    ref_pred = decode_classes(run.variant("keras_float").predictions)
    for v in run.variants:
        s = score(decode_classes(v.predictions), labels, list("abcde"),
                  ref_pred if v.kind != "keras" else decode_classes(v.predictions))  # fmt: skip
        for key, value in s.uncertainty().items():
            setattr(v, key, value)
    text = to_csv(run)
    header, *rows = text.splitlines()
    assert "accuracy_ci_low" in header and "mcnemar_p" in header
    int8 = dict(zip(header.split(","), next(r for r in rows if r.startswith("int8")).split(",")))
    assert float(int8["mcnemar_p"]) == pytest.approx(2 / 2**8)
    assert float(int8["accuracy_ci_low"]) < float(int8["accuracy"]) < float(int8["accuracy_ci_high"])


# --- where the intervals are shown -----------------------------------------------------------


def test_report_and_table_show_photo_intervals_for_a_single_run():
    from quantbench.report import render
    from quantbench.present.table import results_table, uncertainty_lines
    from tests.fixtures_results import make_results

    results = make_results(photos=True)
    html = render(results)
    charts = html.split('id="tradeoffs"')[1]
    assert charts.count('<line class="ci"') >= 5  # an error bar per ok TF Lite variant
    assert "95% CI over photos" in html and "McNemar p" in html
    assert "no confidence intervals" not in html
    int8 = results.variant("int8")
    low, high = (100 * x for x in int8.vs_reference.ci)
    assert f"[{low:+.1f}, {high:+.1f}] p={int8.vs_reference.p_value:.2g}" in html

    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(results_table(results))
    text = console.export_text()
    half = (int8.accuracy_ci[1] - int8.accuracy_ci[0]) * 50
    assert f"{int8.accuracy * 100:.1f} ±{half:.1f}" in text
    assert f"{100 * int8.vs_reference.difference:+.1f} [{low:+.1f},{high:+.1f}]" in text
    assert "Wilson" in uncertainty_lines(results)[0]


def test_repeats_report_both_sources_of_variation():
    from quantbench.analysis.stats import summarize
    from quantbench.present.table import uncertainty_lines
    from tests.fixtures_results import make_results

    results = make_results(repeats=3, photos=True)
    acc = summarize(results)["int8"]["accuracy"]
    # jitter of 0.4 points between training runs vs ~1.5 points of photo sampling error
    assert acc["std"] == pytest.approx(0.004)
    assert acc["image_std"] == pytest.approx(math.sqrt(0.857 * 0.143 / 550), rel=0.02)
    assert acc["dominant"] == "photos"
    assert acc["image_ci_low"] < acc["mean"] < acc["image_ci_high"]
    assert any("int8: accuracy sd 0.40 pts across 3 training runs" in line and
               "the photos dominate" in line for line in uncertainty_lines(results))  # fmt: skip
    # a run whose training varies more than its photos says so
    for row in results.variants:
        if row.variant == "int8":
            row.accuracy -= 0.03 * row.repeat
    assert summarize(results)["int8"]["accuracy"]["dominant"] == "training"


def test_recommendation_with_repeats_takes_the_wider_source():
    from tests.fixtures_results import make_results

    results = make_results(repeats=3, photos=True, failed=False)
    b = intervals.drop_bound(results, "int8", "keras_float", "sure")
    drops = [100 * (results.variant("keras_float", r).accuracy - results.variant("int8", r).accuracy)
             for r in range(3)]  # fmt: skip
    assert b.estimate == pytest.approx(sum(drops) / 3)
    assert b.bound > b.estimate and "3 training runs and 550 photos" in b.how
    assert "photos dominate" in b.how  # identical drops across runs: no training spread
    assert intervals.drop_bound(results, "int8", "keras_float", "estimate").bound is None


def test_compare_pairs_runs_only_when_they_scored_the_same_photos(tmp_path):
    from quantbench.report.compare import render as render_comparison
    from quantbench.report.compare import same_photos
    from tests.fixtures_results import make_results

    a, b = make_results(name="a", photos=True), make_results(name="b", photos=True)
    for run in (a, b):
        run.data.eval_digest = "same"
    row = b.variant("int8")
    row.predictions = encode_classes(np.arange(550) % 5)  # b's int8 is right on every photo
    assert same_photos(a, b)
    html = render_comparison([(a, tmp_path / "a"), (b, tmp_path / "b")])
    paired = html.split('id="paired"')[1]
    expected = intervals.paired_rows(b, row, a.variant("int8"))
    assert expected.gained > 0 and expected.lost == 0
    assert f"{expected.gained} gained, 0 lost" in paired and "p=" in paired
    assert "[" in html.split('id="variants"')[1]  # accuracies carry their intervals

    b.data.eval_digest = "other photos"
    html = render_comparison([(a, tmp_path / "a"), (b, tmp_path / "b")])
    assert "a paired comparison is not possible" in html
