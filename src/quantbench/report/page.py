"""The page shell and the small HTML helpers every section uses.

One file, no network: the stylesheet and the sorting script are read from this package and
inlined. Every value that reaches the page goes through `esc`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from importlib import resources
from typing import Any

from quantbench.core.version import __version__
from quantbench.report.svg import esc


def asset(name: str) -> str:
    return resources.files("quantbench.report").joinpath(name).read_text(encoding="utf-8")


def pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}"


def mb(size: float | None) -> str:
    return "–" if size is None else f"{size / 1e6:.2f}"


def num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def sort_attr(value: Any) -> str:
    """data-sort for a cell: numbers sort numerically; missing values sort last."""
    return "" if value is None else esc(value if isinstance(value, str) else f"{value:.10g}")


def breakable(value: object) -> str:
    """`esc(value)` with a line-break opportunity after each _ - . / and ·, so that long
    variant and run names (qat_finetune_optimize_for_latency) wrap in a narrow column."""
    text = esc(value)
    for mark in ("_", "-", ".", "/", "·"):
        text = text.replace(mark, f"{mark}<wbr>")
    return text


def label_attr(heading: str) -> str:
    """data-label of a cell: its column's heading, shown beside it when a table is stacked
    (one card per row) on a narrow screen."""
    return f' data-label="{esc(heading)}"'


def section(anchor: str, title: str, body: str, intro: str = "") -> str:
    lead = f'<p class="intro">{intro}</p>' if intro else ""
    return (f'<section id="{esc(anchor)}" class="card"><h2>{esc(title)}</h2>{lead}{body}'
            f"</section>")  # fmt: skip


def figure(chart_id: str, svg: str, caption: str = "", legend: str = "", what: str = "") -> str:
    """A chart in a figure; an empty chart becomes a 'not measured' line, never a blank box."""
    if not svg:
        return f'<p class="empty">{esc(what or chart_id)}: not measured.</p>'
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure class="chart" data-chart="{esc(chart_id)}">{svg}{legend}{cap}</figure>'


def legend(items: list[tuple[str, str, bool]]) -> str:
    """(label, color, dashed) swatches under a chart."""
    spans = "".join(
        f'<span class="swatch{" dashed" if dashed else ""}" style="--c:{esc(color)}"></span>'
        f"<span>{esc(label)}</span>"
        for label, color, dashed in items
    )
    return f'<div class="legend">{spans}</div>'


def kv_table(rows: list[tuple[str, Any]], css: str = "kv") -> str:
    # Dotted config keys (train.learning_rate) may wrap after a dot.
    body = "".join(f"<tr><th>{esc(k).replace('.', '.<wbr>')}</th><td>{esc(v)}</td></tr>"
                   for k, v in rows)  # fmt: skip
    return f'<table class="{css}"><tbody>{body}</tbody></table>'


def generic_table(records: list[dict[str, Any]], css: str = "data sortable stack") -> str:
    """A list of dicts as a table whose columns are the union of the keys, in first-seen order;
    in a box that scrolls sideways should it be wider than the page (it stacks on phones)."""
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    head = "".join(f'<th tabindex="0">{esc(c)}</th>' for c in columns)
    rows = []
    for record in records:
        cells = []
        for c in columns:
            value = record.get(c)
            shown = "–" if value is None else value
            verdict = verdict_class(value) if c.lower() in ("verdict", "status", "result") else ""
            sort = sort_attr(value) if isinstance(value, (int, float, str)) else ""
            if not verdict and isinstance(value, (int, float)):
                verdict = ' class="num"'
            cells.append(f'<td data-sort="{sort}"{verdict}{label_attr(c)}>{esc(shown)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table class="{css}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip


def verdict_class(value: Any) -> str:
    text = str(value).lower()
    if any(w in text for w in ("not", "fail", "worse", "differ", "mismatch", "no ")):
        return ' class="verdict bad"'
    if any(w in text for w in ("reproduced", "match", "ok", "pass", "yes", "same", "better")):
        return ' class="verdict good"'
    return ' class="verdict"'


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested config to dotted keys, for the config table and tracking params."""
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for key, value in data.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), data)]


def shell(title: str, subtitle: str, nav: list[tuple[str, str]], body: str) -> str:
    links = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label in nav)
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>{esc(title)}</title>
<style>{asset("style.css")}</style>
</head>
<body>
<header class="top">
  <div class="wrap">
    <div class="brand">quantbench <span>report</span></div>
    <h1>{esc(title)}</h1>
    <p class="sub">{subtitle}</p>
    <nav>{links}</nav>
  </div>
</header>
<main class="wrap">
{body}
</main>
<footer class="wrap">Generated by quantbench {esc(__version__)} on {made} from results.json.
Self-contained: no network needed to view.</footer>
<script>{asset("sort.js")}</script>
</body>
</html>
"""
