"""report.html: one self-contained page per run, rebuilt from results.json alone.

No TensorFlow, no network at view time (inline SVG charts, inline CSS and script). Sections
with no data are left out or say "not measured"; every user string is HTML-escaped.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.core import atomic
from quantbench.core.results import RunResults

REPORT_FILE = "report.html"


def render(results: RunResults) -> str:
    """The report's HTML. Uses results.extras["recommendation"] if present, else recommends
    with the run's own `recommend` config (without storing it)."""
    from quantbench.analysis.recommend import constraints_of, recommend, stored
    from quantbench.report import appendix as a, layers, sections as s
    from quantbench.report.page import esc, shell

    rec = stored(results)
    if rec is None:
        try:
            rec = recommend(results, constraints_of(results))
        except ValueError:  # a config section this version cannot read: no recommendation
            rec = None
    parts = [
        ("summary", "Summary", s.summary(results, rec)),
        ("notes", "Surprises", s.notes(results)),
        ("table", "Table", s.comparison_table(results, rec)),
        ("tradeoffs", "Trade-offs", s.tradeoffs(results, rec)),
        ("latency", "Latency", s.latency(results)),
        ("targets", "Targets", a.targets(results)),
        ("selective", "Selective", layers.selective(results)),
        ("layers", "Per layer", layers.per_layer(results)),
        ("training", "Training", a.training(results)),
        ("classes", "Per class", a.per_class(results)),
        ("article", "Article", a.article_comparison(results)),
        ("details", "Details", a.details(results)),
    ]
    nav = [(anchor, label) for anchor, label, html in parts if html]
    when = results.finished or results.created
    took = f" · {results.total_seconds / 60:.1f} min" if results.total_seconds else ""
    repeats = f" · {results.repeats} repeats" if results.repeats > 1 else ""
    subtitle = (f'<span class="status s-{esc(results.status)}">{esc(results.status)}</span> '
                f"{esc(results.command)} · {esc(when)}{took}{repeats}")  # fmt: skip
    return shell(f"quantbench: {results.name}", subtitle, nav, "".join(h for _, _, h in parts))


def write_report(results: RunResults, run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's report (default RUN_DIR/report.html) atomically; returns its path."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    return atomic.write_text(path, render(results))


def write_comparison(runs: list[tuple[RunResults, str | Path]], out: str | Path) -> Path:
    """One page across runs: [(results, run_dir), ...] -> `out`."""
    from quantbench.report.compare import render as render_comparison

    return atomic.write_text(Path(out), render_comparison([(r, Path(d)) for r, d in runs]))
