"""The article's claims judged on constructed results: holds, does not hold, inconclusive."""

from __future__ import annotations

import json

import pytest

from quantbench.analysis import article, stats
from quantbench.core.results import EpochRecord, RunResults, TrainingResult, VariantResult


def make_results(float_acc, dynamic_acc, qat_acc, alias_acc=None, epoch_seconds=(10.0, 22.0),
                 eval_images=None, recipe="fresh"):  # fmt: skip
    """Per repeat: float32, dynamic_range, a QAT recipe's DEFAULT and its two aliases.

    alias_acc None: the aliases are byte-identical to DEFAULT (status identical). recipe
    "seed": the names results had before the recipe was called `fresh`."""
    qat = f"qat_{recipe}"
    results = RunResults(name="t", created="now")
    for repeat in range(len(float_acc)):
        def row(variant, source, acc, repeat=repeat, **kw):
            results.variants.append(VariantResult(variant=variant, source=source, repeat=repeat,
                scheme=variant.rsplit("_", 1)[-1], policy="p", accuracy=acc, size_bytes=10**6,
                eval_images=eval_images, **kw))  # fmt: skip

        row("keras_float", "float", float_acc[repeat], kind="keras")
        row("float32", "float", float_acc[repeat])
        row("dynamic_range", "float", dynamic_acc[repeat])
        row(f"{qat}_dynamic_range", qat, qat_acc[repeat])
        for alias in ("optimize_for_size", "optimize_for_latency"):
            if alias_acc is None:
                row(f"{qat}_{alias}", qat, qat_acc[repeat], status="identical",
                    identical_to=f"{qat}_dynamic_range")  # fmt: skip
            else:
                row(f"{qat}_{alias}", qat, alias_acc[repeat])
        for name, trained, seconds in (("float", "float", epoch_seconds[0]),
                                       (qat, recipe, epoch_seconds[1])):  # fmt: skip
            jitter = 0.1 * repeat
            epochs = [EpochRecord(epoch=i + 1, loss=1, accuracy=0.5, seconds=seconds + jitter * (i + 1))
                      for i in range(3)]  # fmt: skip
            results.training.append(TrainingResult(name=name, recipe=trained, seed=repeat,
                                                   repeat=repeat, epochs=epochs,
                                                   total_seconds=3 * seconds))  # fmt: skip
    return results


def verdicts(results):
    return {v["key"]: v for v in article.verdicts(results)}


def test_the_shipped_article_figures():
    report = article.load_article_report()
    rows = {r["key"]: r for r in report["rows"]}
    assert rows["float"]["accuracy_pct"] == 88.0 and rows["dynamic_range"]["size_mb"] == 2.9
    assert rows["qat_default"]["accuracy_pct"] == 92.72 and rows["qat_none"]["accuracy_pct"] == 91.09
    assert rows["qat_optimize_for_size"]["accuracy_pct"] == 78.54
    assert report["epoch_seconds"] == {"float": 31.0, "qat": 68.0}
    assert set(report["claims"]) == {"a", "b", "c", "d"}


def test_every_claim_holds_when_our_numbers_look_like_the_articles():
    results = make_results(
        float_acc=[0.88, 0.87, 0.89], dynamic_acc=[0.75, 0.74, 0.765],
        qat_acc=[0.92, 0.915, 0.93], alias_acc=[0.78, 0.79, 0.785], epoch_seconds=(31.0, 68.0),
    )  # fmt: skip
    v = verdicts(results)
    assert {k: v[k]["verdict"] for k in "abcd"} == dict.fromkeys("abcd", article.HOLDS)
    assert v["a"]["ours_value"]["n"] == 3
    assert v["a"]["ours_value"]["mean"] == pytest.approx((13 + 13 + 12.5) / 3)


def test_no_claim_holds_when_quantization_costs_nothing_and_aliases_are_identical():
    results = make_results(
        float_acc=[0.85, 0.84, 0.86], dynamic_acc=[0.848, 0.838, 0.859],
        qat_acc=[0.80, 0.79, 0.81], epoch_seconds=(10.0, 40.0),
    )  # fmt: skip
    v = verdicts(results)
    assert {k: v[k]["verdict"] for k in "abcd"} == dict.fromkeys("abcd", article.FAILS)
    assert "byte-identical" in v["d"]["reason"]


def test_straddling_intervals_are_inconclusive():
    results = make_results(
        float_acc=[0.85, 0.84, 0.86], dynamic_acc=[0.70, 0.76, 0.74],  # loss 15, 8, 12
        qat_acc=[0.86, 0.83, 0.865], alias_acc=[0.85, 0.84, 0.85],
    )  # fmt: skip
    results.training = [t for t in results.training if t.recipe == "float"] + [
        t.model_copy(update={"epochs": [e.model_copy(update={"seconds": e.seconds * f})
                                        for e in t.epochs]})
        for t, f in zip([t for t in results.training if t.recipe == "fresh"], (1.0, 0.8, 1.3))
    ]
    v = verdicts(results)
    assert v["a"]["verdict"] == article.UNSURE
    assert v["b"]["verdict"] == article.UNSURE
    assert v["c"]["verdict"] == article.UNSURE
    assert v["d"]["verdict"] == article.UNSURE


def test_a_single_repeat_without_per_photo_data_is_judged_as_independent_samples():
    clear = make_results(float_acc=[0.85], dynamic_acc=[0.849], qat_acc=[0.86], eval_images=551)
    v = verdicts(clear)
    assert v["a"]["verdict"] == article.FAILS  # a 0.1-point loss is far from 13 even unpaired
    assert v["b"]["verdict"] == article.UNSURE  # +1 point is within two independent intervals
    assert "independent samples" in v["b"]["reason"] and v["b"]["ours_value"]["n"] == 1
    low, high = v["b"]["ours_value"]["ci_low"], v["b"]["ours_value"]["ci_high"]
    assert low < 0 < high and 7 < high - low < 9  # ~ +/-4 points at 551 photos


def test_a_single_repeat_without_photo_counts_has_no_interval():
    v = verdicts(make_results(float_acc=[0.85], dynamic_acc=[0.849], qat_acc=[0.86]))
    assert v["a"]["verdict"] == v["b"]["verdict"] == article.UNSURE
    assert "no interval" in v["a"]["reason"]


def test_missing_rows_are_inconclusive_not_dropped():
    results = make_results(float_acc=[0.85, 0.86], dynamic_acc=[0.84, 0.85], qat_acc=[0.85, 0.86])
    results.variants = [v for v in results.variants if v.variant != "dynamic_range"]
    v = verdicts(results)
    assert v["a"]["verdict"] == article.UNSURE and v["a"]["ours"] == "not measured"


def test_attach_stores_json_ready_extras_and_prints(capsys):
    results = make_results(float_acc=[0.85, 0.86], dynamic_acc=[0.84, 0.85], qat_acc=[0.85, 0.86])
    stats.attach(results)
    article.attach(results)
    json.dumps(results.extras.model_dump(mode="json"))
    comparison = results.extras["article_comparison"]
    assert [c["key"] for c in comparison] == ["a", "b", "c", "d"]
    assert all({"claim", "article", "ours", "verdict", "reason"} <= set(c) for c in comparison)
    figures = {f["label"]: f for f in results.extras["article_figures"]}
    assert figures["float model"]["accuracy"]["mean"] == pytest.approx(0.855)
    assert results.extras["summary"]["float32"]["accuracy"]["n"] == 2
    from quantbench.present.sections import print_comparison

    print_comparison(results)
    out = capsys.readouterr().out
    assert "the article vs this run" in out and "does not hold" in out


def test_results_named_before_the_rename_are_judged_alike():
    """Rows measured as `qat_seed_*` (recipe `seed`, now `fresh`) keep their names; the claims
    find them and name the recipe as it is called now."""
    kw = {"float_acc": [0.88, 0.87, 0.89], "dynamic_acc": [0.75, 0.74, 0.765],
          "qat_acc": [0.92, 0.915, 0.93], "alias_acc": [0.78, 0.79, 0.785],
          "epoch_seconds": (31.0, 68.0)}
    old, new = verdicts(make_results(**kw, recipe="seed")), verdicts(make_results(**kw))
    assert {k: old[k]["verdict"] for k in "abcd"} == dict.fromkeys("abcd", article.HOLDS)
    for k in "abcd":
        assert old[k]["ours_value"]["values"] == pytest.approx(new[k]["ours_value"]["values"])
        assert old[k]["claim"] == new[k]["claim"]
    assert "[QAT recipe fresh]" in old["b"]["claim"]
    assert "qat_seed_dynamic_range" in old["b"]["reason"]
    figures = {(f["label"], f["variant"])
               for f in article.figures(make_results(**kw, recipe="seed"))}  # fmt: skip
    assert ("QAT + Optimize.DEFAULT", "qat_seed_dynamic_range") in figures
    assert ("seconds per epoch (qat_seed)", "qat_seed") in figures
