"""The terminal's comparison table, like the article's: one row per variant."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from quantbench.present.console import line, out, styled
from quantbench.core.results import RunResults, VariantResult


def _pct(value: float | None, ci: list[float] | None = None) -> str:
    """84.6 ±3.0: the figure and half the width of its 95% interval over the photos."""
    if value is None:
        return "-"
    return f"{value * 100:.1f}" + (f" ±{(ci[1] - ci[0]) * 50:.1f}" if ci else "")


def _difference(v: VariantResult) -> tuple[str, str]:
    """(difference from the float Keras model [95% CI] in points, McNemar p)."""
    p = v.vs_reference
    if p is None or v.kind == "keras" and v.source == "float":
        return "-", "-"
    low, high = (100 * x for x in p.ci)
    return f"{100 * p.difference:+.1f} [{low:+.1f},{high:+.1f}]", f"{p.p_value:.2g}"


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.2f}"


def _contents(v: VariantResult) -> list[str]:
    """Share of zero weights and the most distinct values in one output channel."""
    w = v.weights
    return ["-", "-"] if w is None else [f"{w.sparsity * 100:.1f}", str(w.max_unique_per_channel)]


BUSY_MARK = "*"  # a figure timed while other processes held the cores it needed (busy.py)


def _latency(v: VariantResult, threads: int, runtime: str | None = None) -> str:
    figure = v.latency_figure(threads, runtime)
    if figure is None:
        return "-"
    return f"{figure.median_ms:.2f}" + (BUSY_MARK if figure.busy else "")


def _other_runtimes(results: RunResults) -> list[str]:
    """Runtimes besides the Interpreter (the headline), each shown in its own columns."""
    names = {r.runtime for v in results.variants for r in v.latency}
    return sorted(names - {"interpreter"})


def busy_lines(results: RunResults) -> list[str]:
    """The legend of the busy mark, when some figure carries it."""
    flagged = [r for v in results.rows(0) for r in v.latency if r.busy]
    if not flagged:
        return []
    most = max(r.other_cpu or 0.0 for r in flagged)
    return [f"{BUSY_MARK} timed while other processes held the cores it needed (up to "
            f"{most:.2f} cores used by others): the figure may be slower than the model; "
            f"re-measure on a quiet machine (`quantbench bench --wait-quiet`)"]  # fmt: skip


# The compact "runs on" column: a short name per passed target (targets/).
_TARGET_SHORT = {"mcu": "mcu", "edgetpu": "tpu", "gpu": "gpu", "integer_only": "int"}


def _runs_on(v: VariantResult) -> str:
    if not v.targets:
        return "-"
    passed = [_TARGET_SHORT.get(name, name) for name, t in v.targets.items() if t.ok]
    return " ".join(passed) or "cpu only"


def results_table(results: RunResults, repeat: int = 0) -> Table:
    threads = sorted({r.threads for v in results.variants for r in v.latency})
    targets = any(v.targets for v in results.variants)
    # Names are the user's: Text cells, so no console (ours or a caller's) reads them as markup.
    table = Table(title=Text(f"quantbench: {results.name}"), header_style="bold",
                  title_justify="left")  # fmt: skip
    table.add_column("variant")
    table.add_column("policy")
    table.add_column("size MB", justify="right")
    table.add_column("gzip MB", justify="right")
    contents = any(v.weights is not None for v in results.rows(repeat))
    if contents:  # what the weight tensors hold (filestats.py)
        table.add_column("zeros %", justify="right")
        table.add_column("values/ch", justify="right")
    table.add_column("accuracy %", justify="right")
    table.add_column("agreement %", justify="right")
    table.add_column("Δ float pts [95% CI]", justify="right")
    table.add_column("p", justify="right")
    for t in threads:
        table.add_column(f"latency ms ({t}t)", justify="right")
    others = [(runtime, t) for runtime in _other_runtimes(results) for t in threads]
    for runtime, t in others:
        table.add_column(f"{runtime} ms ({t}t)", justify="right")
    table.add_column("convert s", justify="right")
    if targets:
        table.add_column("runs on")
    for v in results.rows(repeat):
        size = "-" if v.size_bytes is None else f"{v.size_bytes / 1e6:.2f}"
        convert = "-" if v.convert_seconds is None else f"{v.convert_seconds:.1f}"
        if v.status == "failed":
            cells = [styled("failed", "red"), "", *[""] * (2 * contents), "", "", "", "",
                     *[""] * (len(threads) + len(others)), "", *([""] if targets else [])]  # fmt: skip
            table.add_row(Text(v.variant), Text(v.policy), *cells, style="dim")
            continue
        name = v.variant if v.status == "ok" else f"{v.variant} (= {v.identical_to})"
        table.add_row(
            Text(name), Text(v.policy), size, _mb(v.gzip_bytes), *(_contents(v) if contents else []),
            _pct(v.accuracy, v.accuracy_ci),
            _pct(v.agreement, v.agreement_ci), *_difference(v),
            *[_latency(v, t, "interpreter" if others else None) for t in threads],
            *[_latency(v, t, runtime) for runtime, t in others], convert,
            *([_runs_on(v)] if targets else []),
        )  # fmt: skip
    return table


def uncertainty_lines(results: RunResults) -> list[str]:
    """What the ± and the Δ mean, and with repeats which source of variation dominates."""
    rows = [v for v in results.rows(0) if v.accuracy_ci]
    if not rows:
        return []
    n = rows[0].eval_images
    lines = [f"± is half the 95% Wilson interval over the {n} scored photos; Δ is the paired "
             f"difference from the float Keras model on the same photos (Newcombe 95% CI) and p "
             f"its exact McNemar p-value. Bounds in results.csv."]  # fmt: skip
    summary = results.extras.get("summary") or {}
    if results.repeats > 1:
        for v in rows:
            acc = (summary.get(v.variant) or {}).get("accuracy") or {}
            if acc.get("dominant"):
                lines.append(
                    f"{v.variant}: accuracy sd {100 * acc['std']:.2f} pts across "
                    f"{acc['n']} training runs, {100 * acc['image_std']:.2f} pts across photos: "
                    f"the {acc['dominant']} dominate"
                )
    return lines


def print_results(results: RunResults) -> None:
    out.print(results_table(results))
    for explanation in uncertainty_lines(results) + busy_lines(results):
        out.print(explanation, highlight=False, markup=False)
    for v in results.rows(0):
        if v.status == "failed":
            out.print(line((v.variant, "red"), f" failed: {v.error}"), highlight=False)
    for v in results.rows(0):
        for note in v.notes:
            out.print(line(("note", "yellow"), f" {v.variant}: {note}"), highlight=False)
