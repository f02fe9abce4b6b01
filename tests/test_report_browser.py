"""report.html in headless Chromium with the network off: no console errors, charts drawn,
sortable table, and a screenshot under test-artifacts/ to look at.

Needs Debian's `chromium` (apt) and the `playwright` Python package; never `playwright install`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quantbench.report import write_comparison, write_report
from tests.fixtures_results import make_results, make_run_dir, make_wide_results

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
CHARTS = ["accuracy-size", "accuracy-latency", "latency", "training-accuracy", "training-loss",
          "training-time", "class-counts"]  # fmt: skip


@pytest.fixture
def page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        page = context.new_page()
        page.attempted = []  # every non-file request: the report must make none
        page.console_errors = []
        page.dialogs = []  # an injected alert() would land here
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))

        def block(route):
            if not route.request.url.startswith(("file:", "data:", "about:")):
                page.attempted.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", block)
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        yield page
        context.close()


def _open(page, path: Path) -> None:
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")


def _column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].dataset.sort)"
    )


def test_report_in_chromium(page, tmp_path):
    results = make_results(repeats=3, classes=["daisy", "<script>alert(1)</script>", "roses"])
    run_dir = make_run_dir(tmp_path / "run", results)
    report = write_report(results, run_dir)
    _open(page, report)

    assert page.attempted == []
    assert page.console_errors == []
    assert page.dialogs == []
    for chart in CHARTS:
        figure = page.locator(f'figure[data-chart="{chart}"] svg')
        assert figure.count() == 1, chart
        box = figure.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 100, chart
        assert figure.locator("circle, rect, polyline").count() > 0, chart
    assert page.locator("text=<script>alert(1)</script>").count() > 0  # shown as text

    # Click "size MB" (column 3): ascending with failed rows (no size) last; again: descending.
    header = page.locator("#variants thead th", has_text="size MB")
    header.click()
    sizes = [s for s in _column(page, "#variants", 3)]
    numbers = [float(s) for s in sizes if s]
    assert numbers == sorted(numbers) and sizes[-1] == ""
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    numbers = [float(s) for s in _column(page, "#variants", 3) if s]
    assert numbers == sorted(numbers, reverse=True)
    page.locator("#variants thead th", has_text="variant").click()
    names = _column(page, "#variants", 0)
    assert names == sorted(names)

    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#variants thead th", has_text="size MB").click()
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert page.attempted == [] and page.console_errors == []


def test_comparison_in_chromium(page, tmp_path):
    a = make_results(name="baseline")
    b = make_results(name="qat", repeats=2, failed=False)
    out = write_comparison([(a, make_run_dir(tmp_path / "a", a)), (b, make_run_dir(tmp_path / "b", b))],
                           tmp_path / "compare.html")  # fmt: skip
    _open(page, out)
    assert page.attempted == [] and page.console_errors == []
    for chart in ("accuracy-size", "accuracy-latency"):
        assert page.locator(f'figure[data-chart="{chart}"] svg circle').count() >= 10
    assert page.locator("text=qat · int8").count() > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "comparison.png"), full_page=True)


# Every scatter chart's point labels, as the browser laid them out: getBBox() in the chart's
# own units (the same at any zoom), with the points' circles beside them.
LABEL_BOXES = """() => [...document.querySelectorAll('figure.chart svg')].map(svg => ({
  chart: svg.closest('figure').dataset.chart,
  width: svg.viewBox.baseVal.width,
  labels: [...svg.querySelectorAll('text.pt-label')].map(t => {
    const b = t.getBBox(); return {text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height};
  }),
  points: [...svg.querySelectorAll('circle.pt')].map(c => {
    const b = c.getBBox(); return {x: b.x, y: b.y, w: b.width, h: b.height};
  }),
})).filter(c => c.labels.length)"""


def _intersect(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])  # fmt: skip


def _check_page_fits_and_labels_apart(page, width: int, labelled: int) -> list[dict]:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, "
                           "window.innerWidth]")  # fmt: skip
    assert widths[2] == width
    assert widths[0] <= widths[2] and widths[1] <= widths[2], widths
    charts = page.evaluate(LABEL_BOXES)
    assert len(charts) == 2, [c["chart"] for c in charts]
    for chart in charts:
        labels = chart["labels"]
        assert len(labels) == labelled == len(chart["points"]), chart["chart"]
        for i, a in enumerate(labels):
            assert a["w"] > 0 and a["h"] > 0, (chart["chart"], a)
            for b in labels[i + 1:]:
                assert not _intersect(a, b), (chart["chart"], a["text"], b["text"])
            for p in chart["points"]:
                assert not _intersect(a, p), (chart["chart"], a["text"], "covers a point")
            assert a["x"] >= 0 and a["x"] + a["w"] <= chart["width"], (chart["chart"], a)
    return charts


@pytest.mark.parametrize("width", [1280, 390])
def test_report_fits_the_window_and_chart_labels_do_not_overlap(page, tmp_path, width):
    """A default-sized run (16 files, long names, four targets each, most points near 1.3 MB):
    no sideways scrolling at a laptop's and a phone's width, no label over another."""
    results = make_wide_results()
    report = write_report(results, make_run_dir(tmp_path / "run", results))
    page.set_viewport_size({"width": width, "height": 900})
    _open(page, report)
    assert page.attempted == [] and page.console_errors == []
    _check_page_fits_and_labels_apart(page, width, labelled=16)

    # Targets: a matrix, a row per variant, a column per target; reasons on hover and below.
    matrix = page.locator("#targets-matrix")
    assert matrix.locator("tbody tr").count() == 16
    assert matrix.locator("thead th").count() == 5
    assert matrix.locator("td.mark").count() == 64
    hybrid = matrix.locator('tr[data-variant="dynamic_range"] td.mark').first
    assert "Hybrid models are not supported" in hybrid.get_attribute("title")
    assert page.locator("#targets ul.reasons > li").count() >= 5
    # No table is cut off: each fits its card (none needs its sideways scroll box).
    clipped = page.evaluate("""() => [...document.querySelectorAll('.scroll')]
        .filter(s => s.scrollWidth > s.clientWidth + 1).map(s => s.closest('section').id)""")
    assert clipped == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"report-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", [1280, 390])
def test_comparison_of_crowded_runs_fits_and_labels_do_not_overlap(page, tmp_path, width):
    a, b = make_wide_results(name="baseline"), make_wide_results(name="qat-longer-schedule")
    out = write_comparison([(a, make_run_dir(tmp_path / "a", a)),
                            (b, make_run_dir(tmp_path / "b", b))], tmp_path / "compare.html")
    page.set_viewport_size({"width": width, "height": 900})
    _open(page, out)
    assert page.attempted == [] and page.console_errors == []
    _check_page_fits_and_labels_apart(page, width, labelled=32)
