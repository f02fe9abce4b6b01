"""One page across several runs: a combined table and combined trade-off scatter plots."""

from __future__ import annotations

from pathlib import Path

from quantbench.recommend import Recommendation, metric, pareto, stored
from quantbench.report import svg
from quantbench.report.page import esc, figure, mb, num, pct, section, shell, sort_attr
from quantbench.results import RunResults

_NUM = ' class="num"'
_WRAP = {2: ' class="wrap"', 3: ' class="wrap"'}


def run_labels(runs: list[tuple[RunResults, Path]]) -> list[str]:
    """Run names, or the run directories' names where two runs share a name."""
    names = [r.name for r, _ in runs]
    labels = [r.name if names.count(r.name) == 1 else Path(d).name for r, d in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _table(runs, labels, recs: list[Recommendation | None]) -> str:
    threads = sorted({r.threads for res, _ in runs for v in res.variants for r in v.latency})
    heads = ["run", "variant", "policy", "status", "size MB", "accuracy %", "agreement %",
             *[f"latency ms ({t}t)" for t in threads], "convert s"]  # fmt: skip
    head = "".join(f'<th tabindex="0" scope="col"{_NUM if i >= 4 else ""}>{esc(h)}</th>'
                   for i, h in enumerate(heads))  # fmt: skip
    body = []
    for (res, _), label, rec in zip(runs, labels, recs):
        for v in res.rows(0):
            ok = v.status != "failed"
            status = esc(v.status + (" (recommended)" if rec and rec.chosen == v.variant else ""))
            if v.error:
                status += f'<div class="sub-err">{esc(v.error)}</div>'
            size = metric(res, v, "size_bytes") if ok else None
            acc = metric(res, v, "accuracy") if ok else None
            agree = metric(res, v, "agreement") if ok else None
            cells = [(label, esc(label)), (v.variant, esc(v.variant)), (v.policy, esc(v.policy)),
                     (v.status, status), (size, mb(size)), (acc, pct(acc)),
                     (agree, pct(agree))]  # fmt: skip
            for t in threads:
                ms = v.latency_ms(t) if ok else None
                cells.append((ms, num(ms)))
            cells.append((v.convert_seconds, num(v.convert_seconds, 1)))
            css = "row-recommended" if rec and rec.chosen == v.variant else f"row-{v.status}"
            tds = "".join(f'<td data-sort="{sort_attr(s)}"{_NUM if i >= 4 else _WRAP.get(i, "")}>{h}</td>'
                          for i, (s, h) in enumerate(cells))  # fmt: skip
            body.append(f'<tr class="{css}">{tds}</tr>')
    return (f'<div class="scroll"><table class="data sortable" id="variants"><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table></div>')  # fmt: skip


def _scatter(runs, labels, x_metric: str, scale: float, x_label: str, chart_id: str) -> str:
    points = []
    for i, ((res, _), label) in enumerate(zip(runs, labels)):
        color = svg.PALETTE[i % len(svg.PALETTE)]
        for v in res.rows(0):
            if v.kind != "tflite" or v.status != "ok":
                continue
            x, y = metric(res, v, x_metric), metric(res, v, "accuracy")
            if x is not None and y is not None:
                points.append(svg.Point(f"{label} · {v.variant}", x * scale, y * 100, color))
    front = pareto({p.label: {"accuracy": p.y / 100, x_metric: p.x} for p in points},
                   ("accuracy", x_metric))  # fmt: skip
    chart = svg.scatter(points, x_label, "accuracy (%)", front=front)
    caption = (
        f"Accuracy vs {esc(x_label)}, every run; the dashed line is the Pareto front "
        f"across runs ({esc(', '.join(front))})."
    )
    return figure(chart_id, chart, caption)


def render(runs: list[tuple[RunResults, Path]]) -> str:
    from quantbench.recommend import constraints_of, recommend

    labels = run_labels(runs)
    recs = [stored(res) or recommend(res, constraints_of(res)) for res, _ in runs]
    cards = []
    for (res, run_dir), label, rec in zip(runs, labels, recs):
        pick = esc(rec.chosen) if rec and rec.chosen else "no variant fits"
        cards.append(f'<div class="kpi"><div class="kpi-v">{pick}</div><div class="kpi-k">'
                     f"{esc(label)}: {esc(rec.reason if rec else '')}</div>"
                     f'<div class="kpi-k"><code>{esc(run_dir)}</code></div></div>')  # fmt: skip
    swatches = "".join(
        f'<span class="swatch" style="--c:{svg.PALETTE[i % len(svg.PALETTE)]}"></span>'
        f"<span>{esc(label)}</span>"
        for i, label in enumerate(labels)
    )
    body = (
        section("summary", "Recommendation per run", f'<div class="kpis runs">{"".join(cards)}</div>')
        + section("table", "All variants", _table(runs, labels, recs),
                  "Click a column header to sort.")
        + section("tradeoffs", "Trade-offs across runs",
                  f'<div class="legend">{swatches}</div><div class="grid2">'
                  + _scatter(runs, labels, "size_bytes", 1e-6, "size (MB)", "accuracy-size")
                  + _scatter(runs, labels, "latency_ms", 1.0, "median latency (ms)",
                             "accuracy-latency") + "</div>")
    )  # fmt: skip
    nav = [("summary", "Summary"), ("table", "Table"), ("tradeoffs", "Trade-offs")]
    subtitle = f"{len(runs)} runs: " + ", ".join(esc(label) for label in labels)
    return shell("quantbench comparison", subtitle, nav, body)
