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


def test_report_cli_errors_cleanly(tmp_path):
    done = quantbench("report", str(tmp_path / "missing"))
    assert done.returncode == 2 and "ERROR no results found" in done.stderr
    run_dir = make_run_dir(tmp_path / "run")
    done = quantbench("report", str(run_dir), "--max-latency", "0")
    assert done.returncode == 2 and "ERROR bad value for 'max_latency_ms'" in done.stderr
    assert "Traceback" not in done.stderr


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


def test_results_from_before_the_article_rename_still_show_the_article(tmp_path, capsys):
    from quantbench.analysis import article

    run_dir = _written_before_the_article_rename(tmp_path / "old")
    loaded = results_mod.load(run_dir)
    assert loaded.extras["article_comparison"][0]["article"] == "92.72% vs 88.0%: +4.72 pts"
    assert loaded.extras["article_figures"][0]["article_size_mb"] == 3.3
    assert "seed_comparison" not in loaded.extras.model_dump()  # read once, as the new key
    qat = loaded.variant("qat_seed_int8")  # measured under that name, shown under it
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
