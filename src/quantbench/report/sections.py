"""The sections of one run's report, each a function of RunResults that returns HTML (or "")."""

from __future__ import annotations

from typing import Any

from quantbench.analysis.errors import plain_error
from quantbench.analysis.recommend import Recommendation, metric
from quantbench.report import svg
from quantbench.report.page import (
    breakable,
    esc,
    figure,
    generic_table,
    label_attr,
    legend,
    mb,
    num,
    pct,
    section,
    sort_attr,
)  # fmt: skip
from quantbench.core.results import RunResults, VariantResult

THREAD_COLORS = ["#2563eb", "#93c5fd", "#1e3a8a", "#60a5fa"]


def colors(results: RunResults) -> dict[str, str]:
    """One color per variant, the same in every chart of the report."""
    names = [v.variant for v in results.rows(0)]
    return {name: svg.PALETTE[i % len(svg.PALETTE)] for i, name in enumerate(names)}


def threads_of(results: RunResults) -> list[int]:
    return sorted({r.threads for v in results.variants for r in v.latency})


def _ci(results: RunResults, variant: str, name: str) -> dict[str, Any] | None:
    """The 95% interval of a variant's figure: across training runs with repeats, else over
    the scored photos (the row's Wilson interval); None when neither exists."""
    stats = ((results.extras.get("summary") or {}).get(variant) or {}).get(name)
    if isinstance(stats, dict) and stats.get("ci_low") is not None:
        return stats
    row = results.variant(variant)
    ci = getattr(row, f"{name}_ci", None) if row is not None else None
    if ci:
        return {"ci_low": ci[0], "ci_high": ci[1], "n": row.eval_images, "photos": True}
    return None


def _ci_title(ci: dict[str, Any]) -> str:
    what = f"over {ci['n']} photos (Wilson)" if ci.get("photos") else f"over {ci['n']} training runs"
    text = f"95% CI {ci['ci_low'] * 100:.2f}–{ci['ci_high'] * 100:.2f} {what}"
    if ci.get("image_std") is not None:
        text += (f"; sd across training runs {ci['std'] * 100:.2f}, across photos "
                 f"{ci['image_std'] * 100:.2f}: the {ci['dominant']} dominate")  # fmt: skip
    return text


def _delta_cell(v: VariantResult, delta: float | None) -> str:
    """Δ vs float with its paired 95% interval and McNemar p (when per-photo data exist)."""
    p = v.vs_reference
    if p is None or delta is None or (v.kind == "keras" and v.source == "float"):
        return num(delta)
    low, high = (100 * x for x in p.ci)
    title = (f"paired over {p.n} photos: {p.gained} gained, {p.lost} lost; 95% CI "
             f"{low:+.2f} to {high:+.2f} points; exact McNemar p = {p.p_value:.3g}")  # fmt: skip
    return (f'{num(delta)} <span class="ci" title="{esc(title)}">[{low:+.1f}, {high:+.1f}] '
            f"p={p.p_value:.2g}</span>")


def status_of(v: VariantResult, rec: Recommendation | None) -> str:
    if v.status == "failed":
        return "failed"
    if v.status == "identical":
        return "identical"
    if v.kind == "keras":
        return "reference"
    if rec and rec.chosen == v.variant:
        return "recommended"
    if rec and v.variant in rec.ruled_out:
        return "ruled-out"
    return "fits"


BADGE = {"recommended": "recommended", "failed": "failed", "identical": "identical",
         "reference": "reference", "ruled-out": "ruled out", "fits": "fits"}  # fmt: skip


def summary(results: RunResults, rec: Recommendation | None) -> str:
    if rec is None:
        return ""
    chosen = results.variant(rec.chosen) if rec.chosen else None
    kpis = ""
    if chosen is not None:
        float32 = next((v for v in results.rows(0) if v.scheme == "float32" and v.ok), None)
        cells = [("size", f"{mb(metric(results, chosen, 'size_bytes'))} MB")]
        if float32 and float32.size_bytes and chosen.size_bytes:
            cells.append(
                ("vs float32 size", f"{float32.size_bytes / chosen.size_bytes:.1f}× smaller")
            )
        cells.append(("accuracy", f"{pct(metric(results, chosen, 'accuracy'))}%"))
        if rec.reference_accuracy is not None and chosen.accuracy is not None:
            drop = (rec.reference_accuracy - metric(results, chosen, "accuracy")) * 100
            cells.append(("vs float Keras", f"{round(-drop, 2) + 0.0:+.2f} points"))
        latency = metric(results, chosen, "latency_ms")
        if latency is not None:
            cells.append((f"latency ({rec.latency_threads} thread{'s' * (rec.latency_threads != 1)})",
                          f"{latency:.2f} ms"))  # fmt: skip
        kpis = "".join(f'<div class="kpi"><div class="kpi-v">{esc(v)}</div>'
                       f'<div class="kpi-k">{esc(k)}</div></div>' for k, v in cells)  # fmt: skip
        kpis = f'<div class="kpis">{kpis}</div>'
    c = rec.constraints
    chips = [
        f"objective: {rec.objective}",
        f"max accuracy drop: {c.get('max_accuracy_drop')} points",
    ]
    if c.get("max_size_mb") is not None:
        chips.append(f"max size: {c['max_size_mb']} MB")
    if c.get("max_latency_ms") is not None:
        chips.append(f"max latency: {c['max_latency_ms']} ms")
    chip_html = "".join(f'<span class="chip">{esc(t)}</span>' for t in chips)
    headline = (f'<div class="verdict-name">{esc(rec.chosen)}</div>' if rec.chosen else
                '<div class="verdict-name none">no variant fits</div>')  # fmt: skip
    pareto = ", ".join(rec.pareto) or "–"
    miss = f"<p><b>Nearest miss:</b> {esc(rec.nearest_miss)}</p>" if rec.nearest_miss else ""
    css = "hero" if rec.chosen else "hero miss"
    return (
        f'<section id="summary" class="card {css}"><div class="hero-label">Ship this</div>'
        f'{headline}<p class="reason">{esc(rec.reason)}</p>{kpis}'
        f'<div class="chips">{chip_html}</div>'
        f'<p class="small"><b>Pareto set</b> (no other variant is at once more accurate, smaller '
        f"and faster): {esc(pareto)}</p>{miss}</section>"
    )


def notes(results: RunResults) -> str:
    items = [(v.variant, n) for v in results.rows(0) for n in v.notes]
    if not items:
        return ""
    body = "".join(f"<li><b>{esc(name)}</b>: {esc(note)}</li>" for name, note in items)
    return section("notes", "Surprises explained", f'<ul class="notes">{body}</ul>')


def comparison_table(results: RunResults, rec: Recommendation | None) -> str:
    rows0 = results.rows(0)
    if not rows0:
        return section("table", "Variants", '<p class="empty">No variants measured yet.</p>')
    threads = threads_of(results)
    repeated = results.repeats > 1
    with_photos = any(v.accuracy_ci for v in rows0)
    acc_head = (f"accuracy % (mean of {results.repeats}, 95% CI)" if repeated
                else "accuracy % (95% CI over photos)" if with_photos else "accuracy %")  # fmt: skip
    heads = ["variant", "status", "policy", "size MB", "gzip MB", "zeros %", "values/channel", acc_head, "Δ vs float (pts)", "agreement %",
             *[f"latency ms ({t} thread{'s' * (t != 1)})" for t in threads], "convert s"]  # fmt: skip
    head = "".join(f'<th tabindex="0" scope="col"{_col_css(i, True)}>{breakable(h)}</th>'
                   for i, h in enumerate(heads))  # fmt: skip
    ref_acc = rec.reference_accuracy if rec else None
    palette = colors(results)
    body = []
    for v in rows0:
        status = status_of(v, rec)
        size = metric(results, v, "size_bytes") if v.status != "failed" else None
        acc = metric(results, v, "accuracy") if v.status != "failed" else None
        agree = metric(results, v, "agreement") if v.status != "failed" else None
        ci = _ci(results, v.variant, "accuracy")
        acc_cell = pct(acc)
        if ci:
            half = (ci["ci_high"] - ci["ci_low"]) / 2 * 100
            acc_cell += f' <span class="ci" title="{esc(_ci_title(ci))}">± {half:.2f}</span>'
        delta = (acc - ref_acc) * 100 if acc is not None and ref_acc is not None else None
        color = palette.get(v.variant, "#888")
        name = f'<span class="dot" style="--c:{color}"></span>{breakable(v.variant)}'
        if v.status == "identical":
            name += f'<div class="sub-err">same bytes as {esc(v.identical_to)}</div>'
        if v.error:
            name += (f'<div class="sub-err">{esc(plain_error(v.error))}</div>'
                     f'<details class="sub-err"><summary>full message</summary>'
                     f'<pre>{esc(v.error)}</pre></details>')  # fmt: skip
        why = "; ".join(rec.ruled_out.get(v.variant, [])) if rec else ""
        badge = f'<span class="badge b-{status}" title="{esc(why)}">{BADGE[status]}</span>'
        if rec and v.variant in rec.pareto:
            badge += ' <span class="badge b-pareto">Pareto</span>'
        cells = [
            (v.variant, name), (status, badge), (v.policy, esc(v.policy)), (size, mb(size)),
            *_contents_cells(results, v),
            (acc, acc_cell), (delta, _delta_cell(v, delta)), (agree, pct(agree)),
        ]  # fmt: skip
        for t in threads:
            figure = v.latency_figure(t) if v.status != "failed" else None
            ms = figure.median_ms if figure else None
            cells.append((ms, num(ms) + _busy_mark(figure)))
        cells.append((v.convert_seconds, num(v.convert_seconds, 1)))
        tds = "".join(f'<td data-sort="{sort_attr(s)}"{_col_css(i)}{label_attr(heads[i])}>{h}</td>'
                      for i, (s, h) in enumerate(cells))  # fmt: skip
        body.append(f'<tr class="row-{status}" data-variant="{esc(v.variant)}">{tds}</tr>')
    table = (f'<div class="scroll"><table class="data sortable stack wide" id="variants">'
             f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')  # fmt: skip
    intro = (
        "Click a column header to sort. Δ is in percentage points against the float Keras model."
    )
    if with_photos:
        intro += (" ± is half the 95% Wilson interval over the scored photos (one run) or the "
                  "95% Student-t interval across training runs (repeats; hover for both). Δ "
                  "comes with its paired 95% interval (the same photos) and exact McNemar p.")
    elif not repeated:
        intro += " One training run: no confidence intervals (use --repeats for them)."
    if any(r.busy for v in rows0 for r in v.latency):
        intro += (" * marks a latency timed while other processes held the cores it needed "
                  "(hover for how much): it may be slower than the model.")  # fmt: skip
    return section("table", "Variants", table, intro)


def _busy_mark(figure: Any) -> str:
    """' *' with the other processes' CPU as a tooltip, for a figure timed on a busy machine."""
    if figure is None or not figure.busy:
        return ""
    title = (f"timed while other processes used {figure.other_cpu:.2f} cores"
             + ("; re-measured, the quieter figure kept" if figure.remeasured else ""))  # fmt: skip
    return f' <span class="busy" title="{esc(title)}">*</span>'


def runtimes_table(results: RunResults) -> str:
    """Interpreter and CompiledModel medians side by side, when both were timed."""
    records = []
    for v in results.rows(0):
        for t in threads_of(results):
            interp, compiled = v.latency_figure(t, "interpreter"), v.latency_figure(t, "compiled")
            if interp is None or compiled is None:
                continue
            records.append({"variant": v.variant, "threads": t,
                            "Interpreter ms": round(interp.median_ms, 3),
                            "CompiledModel ms": round(compiled.median_ms, 3),
                            "ratio": round(interp.median_ms / compiled.median_ms, 2),
                            "others (cores)": round(max(interp.other_cpu or 0, compiled.other_cpu or 0), 2)})  # fmt: skip
    if not records:
        return ""
    return ("<p>LiteRT's two APIs, the same file and thread count (ratio: Interpreter / "
            "CompiledModel; others: CPU other processes used during the figures).</p>"
            + generic_table(records))  # fmt: skip
def _contents_cells(results: RunResults, v) -> list[tuple[Any, str]]:
    """gzip size, share of zero weights, most distinct values in one output channel: what the
    file holds (filestats.py); blank for the Keras rows and files from before it existed."""
    gz = metric(results, v, "gzip_bytes") if v.status != "failed" else None
    w = v.weights if v.status != "failed" else None
    zeros = w.sparsity if w is not None else None
    values = w.max_unique_per_channel if w is not None else None
    return [(gz, mb(gz) if gz is not None else ""), (zeros, pct(zeros) if w is not None else ""),
            (values, str(values) if values is not None else "")]


def _col_css(index: int, head: bool = False) -> str:
    """Variant, status, policy are text that wraps; the rest are numbers, right-aligned."""
    if index >= 3:
        return ' class="num"'
    if head:
        return ""
    return (' class="name"', ' class="status-cell"', ' class="wrap"')[index]


def _points(results: RunResults, x_metric: str, rec: Recommendation | None, scale: float = 1.0):
    palette = colors(results)
    points = []
    for v in results.rows(0):
        if v.kind != "tflite" or v.status != "ok":
            continue
        x, y = metric(results, v, x_metric), metric(results, v, "accuracy")
        if x is None or y is None:
            continue
        ci = _ci(results, v.variant, "accuracy")
        points.append(svg.Point(
            v.variant, x * scale, y * 100, palette[v.variant],
            y_low=ci["ci_low"] * 100 if ci else None, y_high=ci["ci_high"] * 100 if ci else None,
            css="rec" if rec and rec.chosen == v.variant else "",
        ))  # fmt: skip
    return points


def tradeoffs(results: RunResults, rec: Recommendation | None) -> str:
    from quantbench.analysis.recommend import pareto

    figs = []
    for chart_id, x_metric, scale, label in (
        ("accuracy-size", "size_bytes", 1e-6, "size (MB)"),
        ("accuracy-latency", "latency_ms", 1.0, "median latency (ms)"),
    ):
        points = _points(results, x_metric, rec, scale)
        front = pareto({p.label: {"accuracy": p.y / 100, x_metric: p.x} for p in points},
                       ("accuracy", x_metric))  # fmt: skip
        chart = svg.scatter(points, label, "accuracy (%)", front=front,
                            title=f"accuracy vs {label}")  # fmt: skip
        caption = (
            f"Accuracy vs {esc(label)}. The dashed line joins the Pareto front "
            f"({esc(', '.join(front))}); the ringed point is the recommendation. Error bars: "
            "95% intervals (over training runs with repeats, else over the photos)."
        )
        figs.append(figure(chart_id, chart, caption, what=f"Accuracy vs {label}"))
    return section("tradeoffs", "Trade-offs", f'<div class="grid2">{"".join(figs)}</div>')


def latency(results: RunResults) -> str:
    threads = threads_of(results)
    rows = [(v.variant, [v.latency_ms(t) for t in threads])
            for v in results.rows(0) if v.latency and v.status != "failed"]  # fmt: skip
    if not rows:
        return section("latency", "Latency", '<p class="empty">Latency: not measured.</p>')
    series = [f"{t} thread{'s' * (t != 1)}" for t in threads]
    chart = svg.bars(rows, series, THREAD_COLORS, "ms", "median latency per thread count")
    delegate = next((r.delegate for v in results.rows(0) for r in v.latency), "xnnpack")
    cap = f"Median latency of one image, ms (LiteRT, {esc(delegate)}). Shorter is better."
    flagged = sum(r.busy for v in results.rows(0) for r in v.latency)
    if flagged:
        cap += (f" {flagged} figure{'s' * (flagged != 1)} (marked * in the table) "
                f"{'was' if flagged == 1 else 'were'} timed while other processes held the "
                f"cores {'it' if flagged == 1 else 'they'} needed.")  # fmt: skip
    return section("latency", "Latency",
                   figure("latency", chart, cap, legend([(s, c, False) for s, c in
                                                         zip(series, THREAD_COLORS)]))
                   + runtimes_table(results))  # fmt: skip
