"""report.html and the comparison page, from constructed results (no TensorFlow, no training),
plus one real smoke run rebuilt through the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quantbench.core import results as results_mod
from quantbench.report import render, write_comparison, write_report
from quantbench.core.results import RunResults, VariantResult
from tests.fixtures_results import make_results, make_run_dir
from tests.test_cli import quantbench

EVIL = "<script>alert(1)</script>"


def text_of(html: str) -> str:
    """The page's visible text, roughly: tags dropped, entities left as they are."""
    return re.sub(r"<[^>]+>", " ", html)


def test_write_report_default_path_and_sections(tmp_path):
    results = make_results()
    path = write_report(results, make_run_dir(tmp_path, results))
    assert path == tmp_path / "report.html"
    html = path.read_text(encoding="utf-8")
    for anchor in ("summary", "notes", "table", "tradeoffs", "latency", "training", "classes",
                   "article", "data", "config", "environment"):  # fmt: skip
        assert f'id="{anchor}"' in html, anchor
    for chart in ("accuracy-size", "accuracy-latency", "latency", "training-accuracy",
                  "training-loss", "training-time", "class-counts"):  # fmt: skip
        assert f'data-chart="{chart}"><svg' in html, chart
    # The recommendation, a failed row with its error, the notes, the article's verdicts.
    assert 'class="verdict-name">dynamic_range<' in html
    assert "Quantization to 16x8-bit not yet supported" in html
    assert "LiteRT dequantizes weights on load" in html
    assert "not reproduced" in html
    assert "roses/broken.jpg" in html and "duplicate groups" in html
    # Self-contained: nothing is fetched, not even a font.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html


def test_custom_output_path(tmp_path):
    out = write_report(make_results(), tmp_path, tmp_path / "elsewhere" / "r.html")
    assert out.is_file() and not (tmp_path / "report.html").exists()


def test_confidence_intervals_only_with_repeats():
    single = render(make_results())
    repeated = render(make_results(repeats=3))
    assert "95% CI" not in text_of(single).split("Variants")[1].split("Trade-offs")[0]
    assert "mean of 3, 95% CI" in repeated
    assert repeated.count('class="ci" title="95% CI') >= 6
    assert "no confidence intervals" in single


def test_user_strings_are_escaped_everywhere(tmp_path):
    results = make_results(classes=["daisy", EVIL, "roses"], name=f"run {EVIL}")
    results.variants[-1].error = f"boom {EVIL}"
    results.variants[1].notes.append(f"note {EVIL}")
    results.config["data"]["dir"] = f"/photos/{EVIL}"
    results.data.source = f"/photos/{EVIL}"
    results.extras["article_comparison"].append({"variant": EVIL, "verdict": EVIL})
    html = write_report(results, tmp_path).read_text(encoding="utf-8")
    assert EVIL not in html
    assert html.count("<script") == 1  # the page's own sorting script only
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert html.count(escaped) >= 8  # title, class names, error, note, config, data, article rows
    comparison = write_comparison([(results, tmp_path)], tmp_path / "c.html").read_text()
    assert EVIL not in comparison and escaped in comparison


def test_minimal_results_render_without_optional_data():
    empty = RunResults(name="bare", created="2026-11-25T00:00:00+00:00")
    html = render(empty)
    assert "No variants measured yet" in html and "Training: not measured" in html
    assert "Latency: not measured" in html
    half = RunResults(name="half", created="now", variants=[
        VariantResult(variant="int8", scheme="int8", policy="p", size_bytes=1000),
        VariantResult(variant="x", scheme="x", policy="p", status="failed", error="nope"),
    ])  # fmt: skip
    html = render(half)
    assert "Accuracy vs size (MB): not measured" in html
    assert "Accuracy vs median latency (ms): not measured" in html
    assert "nope" in html and 'id="classes"' not in html


def test_stored_recommendation_is_used(tmp_path):
    from quantbench.core.config import RecommendConfig
    from quantbench.analysis.recommend import attach

    results = make_results()
    attach(results, RecommendConfig(objective="accuracy"))
    html = render(results)
    assert 'class="verdict-name">float16<' in html or 'class="verdict-name">float32<' in html
    assert "most accurate variant" in html


@pytest.mark.subprocess
def test_report_cli_rebuilds_without_tensorflow(tmp_path):
    run_dir = make_run_dir(tmp_path / "run")
    before = (run_dir / "results.json").read_text()
    code = (
        "import sys\n"
        "from quantbench.cli import main\n"
        "try:\n"
        f"    main(['report', {str(run_dir)!r}, '--max-size', '0.58', '--objective', 'latency'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = [m for m in ('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert "recommended: dynamic_range" in done.stdout
    html = (run_dir / "report.html").read_text()
    assert "objective: latency" in html and "max size: 0.58 MB" in html
    assert (run_dir / "results.json").read_text() == before  # the run's record is untouched


@pytest.mark.subprocess
def test_report_cli_errors_cleanly(tmp_path):
    done = quantbench("report", str(tmp_path / "missing"))
    assert done.returncode == 2 and "ERROR no results found" in done.stderr
    run_dir = make_run_dir(tmp_path / "run")
    done = quantbench("report", str(run_dir), "--max-latency", "0")
    assert done.returncode == 2 and "ERROR bad value for 'max_latency_ms'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.subprocess
def test_compare_cli_combines_runs_and_labels_points(tmp_path):
    a = make_run_dir(tmp_path / "20261125-a-smoke", make_results(name="smoke"))
    b = make_run_dir(tmp_path / "20261125-b-smoke", make_results(name="smoke", qat=False))
    out = tmp_path / "cmp.html"
    done = quantbench("compare", str(a), str(b), "-o", str(out))
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    # Same run name twice: the run directories' names tell the runs apart.
    assert "20261125-a-smoke · int8" in html and "20261125-b-smoke · int8" in html
    assert html.count('<tr class="row-') == len(json.loads((a / "results.json").read_text())[
        "variants"]) + len(json.loads((b / "results.json").read_text())["variants"])  # fmt: skip
    assert (
        'data-chart="accuracy-size"><svg' in html and 'data-chart="accuracy-latency"><svg' in html
    )


def _written_before_the_article_rename(run_dir: Path) -> Path:
    """A run directory as quantbench wrote it while "seed" named the article and a QAT recipe:
    version-1 rows named qat_seed_*, the comparison under extras.seed_comparison/seed_figures."""
    run_dir = make_run_dir(run_dir, make_results(article_comparison=False))
    raw = json.loads((run_dir / "results.json").read_text())
    raw = json.loads(json.dumps(raw).replace("qat_finetune", "qat_seed")
                     .replace('"recipe": "finetune"', '"recipe": "seed"'))  # fmt: skip
    raw["schema_version"] = 1
    for row in raw["variants"]:
        row.pop("spec"), row.pop("id")
    for section in ("article_comparison", "article_figures"):
        raw["extras"].pop(section)
    raw["extras"]["seed_comparison"] = [{
        "key": "b", "claim": "QAT beats the float model [QAT recipe seed]",
        "seed": "92.72% vs 88.0%: +4.72 pts", "seed_value": 4.72, "ours": "+0.3 pts",
        "ours_value": None, "verdict": "inconclusive",
        "reason": "Gain = qat_seed_int8 minus float32",
    }]  # fmt: skip
    raw["extras"]["seed_figures"] = [
        {"label": "QAT + Optimize.DEFAULT", "recipe": "seed", "variant": "qat_seed_int8",
         "seed_size_mb": 3.3, "seed_accuracy_pct": 92.72, "size_mb": 0.61, "accuracy": None},
        {"label": "seconds per epoch (qat_seed)", "recipe": None, "variant": "qat_seed",
         "seed_seconds_per_epoch": 68.0, "seconds_per_epoch": None},
    ]  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(raw))
    return run_dir


@pytest.mark.subprocess
def test_results_from_before_the_article_rename_still_show_the_article(tmp_path, capsys):
    from quantbench.analysis import article

    run_dir = _written_before_the_article_rename(tmp_path / "old")
    loaded = results_mod.load(run_dir)
    assert loaded.extras["article_comparison"][0]["article"] == "92.72% vs 88.0%: +4.72 pts"
    assert loaded.extras["article_figures"][0]["article_size_mb"] == 3.3
    assert "seed_comparison" not in loaded.extras.model_dump()  # read once, as the new key
    # Measured under that name and shown under it; a resume reads its spec as the recipe's new name.
    from quantbench.engine.rundir import specify_v1_rows

    resumed = loaded.model_copy(deep=True)
    specify_v1_rows(resumed)
    qat = resumed.variant("qat_seed_int8")
    assert qat.spec is not None and qat.spec.transforms[0].params["recipe"] == "fresh"
    html = render(loaded)
    assert 'id="article"' in html and '<th tabindex="0">article</th>' in html
    assert "92.72% vs 88.0%: +4.72 pts" in html and "qat_seed_int8" in html
    from quantbench.present.sections import print_comparison

    print_comparison(loaded)
    out = capsys.readouterr().out
    assert "the article vs this run" in out and "92.72" in out and "qat_seed_int8" in out
    # Through the CLI, as a user with an old run directory would.
    done = quantbench("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    assert 'id="article"' in (run_dir / "report.html").read_text()
    done = quantbench("compare", str(run_dir), "-o", str(tmp_path / "cmp.html"))
    assert done.returncode == 0, done.stderr
    assert "qat_seed_int8" in (tmp_path / "cmp.html").read_text()


@pytest.mark.subprocess
@pytest.mark.realdata
@pytest.mark.slow
def test_report_of_a_real_smoke_run(real_keras_home, tmp_path):
    done = quantbench("run", "--preset", "smoke", "--schemes", "float32,int8", "--track", "mlflow",
                      "--output-dir", str(tmp_path / "runs"), cwd=tmp_path,
                      env={"KERAS_HOME": str(real_keras_home)})  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    tracked = next(ln for ln in done.stdout.splitlines() if ln.startswith("tracked in mlflow: "))
    run_dir = next((tmp_path / "runs").iterdir())
    (run_dir / "report.html").unlink(missing_ok=True)
    done = quantbench("report", str(run_dir))
    assert done.returncode == 0, done.stderr
    html = (run_dir / "report.html").read_text()
    results = results_mod.load(run_dir)
    for name in results.data.classes:
        assert f'<th scope="row">{name}</th>' in html
    assert (
        'data-chart="accuracy-size"><svg' in html and 'data-chart="training-accuracy"><svg' in html
    )
    assert ("recommended:" in done.stdout) or ("no variant fits" in done.stdout)

    # `run --track mlflow` logged the run to a local MLflow store: read it back through MLflow.
    from mlflow.tracking import MlflowClient

    where = tracked.removeprefix("tracked in mlflow: ")
    client = MlflowClient(tracking_uri=where.split(" ")[0])
    (run,) = client.search_runs([client.get_experiment_by_name("quantbench").experiment_id])
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "models")}
    files = {Path(v.path).name for v in results.variants if v.path and v.path.endswith(".tflite")}
    assert logged == files and files
    assert "train/float/val_accuracy" in run.data.metrics


# --- label placement and the targets matrix (no browser) ---------------------------------


def _label_problems(labels, anchors, bounds, radius=6.0):
    """Every way a set of placed labels is wrong: two labels overlapping, a label over a point,
    a label outside the bounds, a leader that does not join its point to its label."""
    from quantbench.report.svg import overlap

    problems = []
    for i, a in enumerate(labels):
        for j, b in enumerate(labels[i + 1:], i + 1):
            if overlap(a.box, b.box):
                problems.append(f"labels {a.text!r} and {b.text!r} overlap")
        for (x, y, text, *_), k in zip(anchors, range(len(anchors))):
            if overlap(a.box, (x - radius, y - radius, x + radius, y + radius)):
                problems.append(f"label {a.text!r} covers the point of {text!r}")
        box = a.box
        if box[0] < bounds[0] or box[1] < bounds[1] or box[2] > bounds[2] or box[3] > bounds[3]:
            problems.append(f"label {a.text!r} leaves the plot: {box}")
        x, y = anchors[i][0], anchors[i][1]
        apart = (max(box[0] - x, 0, x - box[2]) ** 2 + max(box[1] - y, 0, y - box[3]) ** 2) ** 0.5
        if a.leader is None and apart > radius + 3.01:
            problems.append(f"label {a.text!r} sits {apart:.1f} px from its point, no leader")
        if a.leader is not None:
            x1, y1, x2, y2 = a.leader
            if abs(((x1 - x) ** 2 + (y1 - y) ** 2) ** 0.5 - (radius + 1)) > 0.01:
                problems.append(f"leader of {a.text!r} does not start at its point")
            gap_x = max(box[0] - x2, 0, x2 - box[2])
            gap_y = max(box[1] - y2, 0, y2 - box[3])
            if max(gap_x, gap_y) > 2:
                problems.append(f"leader of {a.text!r} does not reach its label")
    return problems


BOUNDS = (60.0, 2.0, 602.0, 312.0)


def test_labels_of_six_points_a_few_pixels_apart_do_not_overlap():
    from quantbench.report.svg import place_labels, text_width

    names = ["int8", "int8_io", "qat_finetune_int8", "qat_finetune_int8_io", "dynamic_range",
             "optimize_for_size"]  # fmt: skip
    anchors = [(200 + 0.6 * i, 150 + (-1) ** i * 0.5 * i, name) for i, name in enumerate(names)]
    labels = place_labels(anchors, BOUNDS)
    assert [lb.text for lb in labels] == names
    assert _label_problems(labels, anchors, BOUNDS) == []
    assert all(lb.fits for lb in labels)
    # A label's box is as wide as its text (the x and baseline the SVG gets sit in it).
    for lb in labels:
        assert lb.box[2] - lb.box[0] >= text_width(lb.text)
        assert lb.box[0] == lb.x and lb.box[1] < lb.y < lb.box[3]
    # Six labels cannot all touch points 3 px apart: the displaced ones get leader lines.
    assert sum(lb.leader is not None for lb in labels) >= 2
    # Deterministic: the same points give the same labels, to the last digit.
    assert place_labels(anchors, BOUNDS) == labels


def test_labels_of_points_on_the_same_spot_and_at_the_edges():
    from quantbench.report.svg import place_labels

    same = [(300.0, 150.0, f"variant_{i}") for i in range(12)]
    labels = place_labels(same, BOUNDS)
    assert _label_problems(labels, same, BOUNDS) == []
    # Against the right edge and the top: labels go left and down, and stay inside.
    corner = [(598.0, 6.0, "qat_finetune_optimize_for_latency"), (596.0, 8.0, "float32"),
              (599.0, 10.0, "qat_finetune_int16x8")]  # fmt: skip
    labels = place_labels(corner, BOUNDS)
    assert _label_problems(labels, corner, BOUNDS) == []
    assert all(lb.box[2] <= BOUNDS[2] for lb in labels)
    # A point's own larger disc (the recommendation's ring) is kept clear too.
    ring = [(300.0, 150.0, "dynamic_range", 11.5), (305.0, 152.0, "int8")]
    labels = place_labels(ring, BOUNDS)
    assert not any(lb.box[0] < 311.5 and lb.box[2] > 288.5 and lb.box[1] < 161.5
                   and lb.box[3] > 138.5 for lb in labels)  # fmt: skip


def test_long_labels_are_shortened_in_the_middle():
    from quantbench.report.svg import shorten, text_width

    name = "20261125-a-smoke-with-a-very-long-run-name · qat_finetune_optimize_for_latency"
    short = shorten(name, 200)
    assert text_width(short) <= 200 < text_width(name)
    assert short.startswith("20261125") and short.endswith("latency") and "…" in short
    assert shorten("int8", 200) == "int8"


def _chart_labels(html: str, chart: str):
    """(text, box) of each point label of one scatter chart, boxes as place_labels sized them."""
    from quantbench.report.svg import ASCENT, DESCENT, LABEL_SIZE, text_width

    svg = html.split(f'data-chart="{chart}">')[1].split("</svg>")[0]
    out = []
    for x, y, text in re.findall(r'<text class="pt-label" x="([\d.]+)" y="([\d.]+)">([^<]*)', svg):
        x, y = float(x), float(y)
        text = text.replace("&amp;", "&")
        out.append((text, (x, y - ASCENT * LABEL_SIZE, x + text_width(text),
                           y + DESCENT * LABEL_SIZE)))  # fmt: skip
    circles = [(float(cx), float(cy)) for cx, cy in
               re.findall(r'<circle class="pt[^"]*" cx="([\d.]+)" cy="([\d.]+)"', svg)]  # fmt: skip
    return out, circles


def test_scatter_labels_of_a_crowded_run_do_not_overlap():
    from quantbench.report.svg import overlap
    from tests.fixtures_results import make_wide_results

    html = render(make_wide_results())
    for chart in ("accuracy-size", "accuracy-latency"):
        labels, circles = _chart_labels(html, chart)
        assert len(labels) == 16 == len(circles), chart
        for i, (a, box_a) in enumerate(labels):
            for b, box_b in labels[i + 1:]:
                assert not overlap(box_a, box_b), (chart, a, b)
            for cx, cy in circles:
                assert not overlap(box_a, (cx - 6, cy - 6, cx + 6, cy + 6)), (chart, a)
            assert 0 <= box_a[0] and box_a[2] <= 620 and 0 <= box_a[1], (chart, a)
    assert '<line class="leader"' in html.split('data-chart="accuracy-size"')[1]
    assert render(make_wide_results()).split("<footer")[0] == html.split("<footer")[0]


def test_targets_are_a_matrix_with_the_reasons():
    from quantbench.core.results import TargetResult
    from tests.fixtures_results import TARGET_NAMES, make_wide_results

    results = make_wide_results()
    int8 = results.variant("int8")
    int8.targets["gpu"] = TargetResult(target="gpu", ok=False, reasons=[f"op {EVIL} refused"])
    del results.variant("float16").targets["edgetpu"]
    html = render(results)
    section = html.split('id="targets"')[1].split("</section>")[0]
    matrix = section.split('id="targets-matrix"')[1].split("</table>")[0]
    rows = re.findall(r'<tr data-variant="([^"]+)">(.*?)</tr>', matrix)
    judged = [v.variant for v in results.rows(0) if v.targets]
    assert [name for name, _ in rows] == judged and len(judged) == 16
    heads = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", matrix.split("</thead>")[0])
    assert [h.replace("<wbr>", "") for h in heads] == ["variant", *TARGET_NAMES]
    cells = dict(rows)
    marks = re.findall(r'<td class="mark (\w+)"', cells["int8"])
    assert marks == ["pass", "pass", "fail", "pass"]  # mcu, edgetpu, gpu, integer_only
    assert re.findall(r'<td class="mark (\w+)"', cells["int16x8"])[0] == "unknown"
    assert re.findall(r'<td class="mark (\w+)"', cells["float16"])[1] == "none"  # not checked
    # The reason on hover, escaped; the arena under the mark.
    refused = 'title="gpu: does not run. op &lt;script&gt;alert(1)&lt;/script&gt; refused"'
    assert refused in cells["int8"]
    assert "runs on TFLM in a" in cells["int8"] and "KiB</span>" in cells["int8"]
    assert EVIL not in html
    # Every failure and unknown under the matrix, in the check's words, with its variants.
    reasons = section.split('<ul class="reasons">')[1]
    failures = [(v.variant, name, r) for v in results.rows(0) for name, t in v.targets.items()
                if t.ok is not True for r in t.reasons]  # fmt: skip
    for variant, name, reason in failures:
        assert esc_text(reason) in reasons, reason
    assert "could not be judged" in reasons and "Hybrid models are not supported" in reasons
    assert reasons.count("<b>edgetpu</b> does not run") == 1  # one item per distinct reason
    not_running = sum(t.ok is not True for v in judged for t in results.variant(v).targets.values())
    assert f"<h3>Why not ({not_running})</h3>" in section
    # No more one-row-per-pair table.
    assert "<th" not in section.split("</table>")[1]
    # A target named like markup is a column heading, as text.
    int8.targets[EVIL] = TargetResult(target=EVIL, ok=False, reasons=[EVIL])
    html = render(results)
    section = html.split('id="targets"')[1].split("</section>")[0]
    assert EVIL not in html and section.count("&lt;script&gt;") >= 4  # heading, title, list


def esc_text(text: str) -> str:
    from quantbench.report.svg import esc

    return esc(text)
