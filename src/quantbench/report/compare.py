"""One page across several runs: a combined table and combined trade-off scatter plots.

Each variant's accuracy carries its 95% interval over the photos and its paired difference
from its own run's float model. Variants of different runs are compared pairwise (paired
interval, McNemar p) only when both runs scored the same photos in the same order
(DataSummary.eval_digest); otherwise the page says the comparison would be unpaired.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.analysis import intervals
from quantbench.analysis.recommend import Recommendation, metric, pareto, stored
from quantbench.report import svg
from quantbench.report.page import (
    breakable,
    esc,
    figure,
    label_attr,
    mb,
    num,
    pct,
    section,
    shell,
    sort_attr,
)  # fmt: skip
from quantbench.core.results import RunResults

_NUM = ' class="num"'
_WRAP = {0: ' class="name"', 1: ' class="name"', 2: ' class="wrap"', 3: ' class="wrap"'}


def run_labels(runs: list[tuple[RunResults, Path]]) -> list[str]:
    """Run names, or the run directories' names where two runs share a name."""
    names = [r.name for r, _ in runs]
    labels = [r.name if names.count(r.name) == 1 else Path(d).name for r, d in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _table(runs, labels, recs: list[Recommendation | None]) -> str:
    threads = sorted({r.threads for res, _ in runs for v in res.variants for r in v.latency})
    heads = ["run", "variant", "policy", "status", "size MB", "accuracy % (95% CI)",
             "Δ own float pts [95% CI] p", "agreement %",
             *[f"latency ms ({t}t)" for t in threads], "convert s"]  # fmt: skip
    head = "".join(f'<th tabindex="0" scope="col"{_NUM if i >= 4 else ""}>{breakable(h)}</th>'
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
            diff = v.vs_reference if ok and not (v.kind == "keras" and v.source == "float") else None
            cells = [(label, breakable(label)), (v.variant, breakable(v.variant)),
                     (v.policy, esc(v.policy)), (v.status, status), (size, mb(size)),
                     (acc, _with_ci(acc, v.accuracy_ci if ok else None)),
                     (diff.difference if diff else None, _paired_text(diff)),
                     (agree, pct(agree))]  # fmt: skip
            for t in threads:
                ms = v.latency_ms(t) if ok else None
                cells.append((ms, num(ms)))
            cells.append((v.convert_seconds, num(v.convert_seconds, 1)))
            css = "row-recommended" if rec and rec.chosen == v.variant else f"row-{v.status}"
            tds = "".join(f'<td data-sort="{sort_attr(s)}"{_NUM if i >= 4 else _WRAP.get(i, "")}'
                          f'{label_attr(heads[i])}>{h}</td>'
                          for i, (s, h) in enumerate(cells))  # fmt: skip
            body.append(f'<tr class="{css}">{tds}</tr>')
    return (f'<div class="scroll"><table class="data sortable stack wide" id="variants"><thead><tr>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')  # fmt: skip


def _with_ci(acc: float | None, ci: list[float] | None) -> str:
    if acc is None or not ci:
        return pct(acc)
    return f'{pct(acc)} <span class="ci">[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]</span>'


def _paired_text(p) -> str:
    """difference [low, high] p=... in points, from a PairedDifference or intervals.Paired."""
    if p is None:
        return "–"
    ci = p.ci if hasattr(p, "ci") else [p.low, p.high]
    return (f"{100 * p.difference:+.2f} <span class=\"ci\">[{100 * ci[0]:+.2f}, "
            f"{100 * ci[1]:+.2f}] p={p.p_value:.2g}</span>")


def same_photos(a: RunResults, b: RunResults) -> bool:
    """Did two runs score the same photos in the same order (and store per-photo data)?"""
    da, db = a.data, b.data
    return (da is not None and db is not None and da.eval_digest is not None
            and da.eval_digest == db.eval_digest and da.eval_labels == db.eval_labels)  # fmt: skip


def across_runs(runs, labels) -> str:
    """Each variant of every later run against the same variant of the first run, paired."""
    (first, _), rows = runs[0], []
    for (res, _), label in zip(runs[1:], labels[1:]):
        if not same_photos(first, res):
            rows.append(f"<tr><td>{esc(label)}</td><td colspan=3>scored other photos than "
                        f"{esc(labels[0])}: a paired comparison is not possible</td></tr>")
            continue
        for v in res.rows(0):
            base = first.variant(v.variant)
            paired = intervals.paired_rows(res, v, base) if base is not None else None
            if paired is not None:
                rows.append(f'<tr><td class="name" data-label="run">{breakable(label)}</td>'
                            f'<td class="name" data-label="variant">{breakable(v.variant)}</td>'
                            f'<td data-label="photos">{paired.gained} gained, {paired.lost} lost</td>'
                            f'<td class="num" data-label="Δ accuracy pts [95% CI] p">'
                            f"{_paired_text(paired)}</td></tr>")  # fmt: skip
    if not rows:
        return ""
    head = (f"<tr><th>run</th><th>variant</th><th>photos vs {esc(labels[0])}</th>"
            f'<th class="num">Δ accuracy pts [95% CI] p</th></tr>')  # fmt: skip
    table = (f'<div class="scroll"><table class="data stack"><thead>{head}</thead>'
             f'<tbody>{"".join(rows)}</tbody></table></div>')  # fmt: skip
    return section("paired", f"Paired with {labels[0]}", table,
                   "Same variant, same photos: Newcombe's paired 95% interval and the exact "
                   "McNemar p-value.")  # fmt: skip


def _scatter(runs, labels, x_metric: str, scale: float, x_label: str, chart_id: str) -> str:
    points = []
    for i, ((res, _), label) in enumerate(zip(runs, labels)):
        color = svg.PALETTE[i % len(svg.PALETTE)]
        for v in res.rows(0):
            if v.kind != "tflite" or v.status != "ok":
                continue
            x, y = metric(res, v, x_metric), metric(res, v, "accuracy")
            if x is not None and y is not None:
                ci = v.accuracy_ci if res.repeats == 1 else None  # repeats plot means
                points.append(svg.Point(f"{label} · {v.variant}", x * scale, y * 100, color,
                                        y_low=ci[0] * 100 if ci else None,
                                        y_high=ci[1] * 100 if ci else None))  # fmt: skip
    front = pareto({p.label: {"accuracy": p.y / 100, x_metric: p.x} for p in points},
                   ("accuracy", x_metric))  # fmt: skip
    chart = svg.scatter(points, x_label, "accuracy (%)", front=front)
    caption = (
        f"Accuracy vs {esc(x_label)}, every run; the dashed line is the Pareto front "
        f"across runs ({esc(', '.join(front))})."
    )
    return figure(chart_id, chart, caption)


def render(runs: list[tuple[RunResults, Path]]) -> str:
    from quantbench.analysis.recommend import constraints_of, recommend

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
    paired = across_runs(runs, labels) if len(runs) > 1 else ""
    body += paired
    nav = [("summary", "Summary"), ("table", "Table"), ("tradeoffs", "Trade-offs")]
    nav += [("paired", "Paired")] if paired else []
    subtitle = f"{len(runs)} runs: " + ", ".join(esc(label) for label in labels)
    return shell("quantbench comparison", subtitle, nav, body)
