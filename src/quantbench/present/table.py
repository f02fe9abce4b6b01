"""The terminal's comparison table: one line per variant, grouped by the model it comes from.

By default it shows what a user decides on (size, accuracy with its ±, the difference from
the float model with its interval, latency, the targets a file runs on) and fits the console:
a column that does not fit is left out, least important first, and one line says which.
`--wide` shows every column, `--columns a,b,c` the ones named (COLUMNS lists them); those are
printed at their own width, never folded, so no name is cut.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.segment import Segment, Segments
from rich.table import Table
from rich.text import Text

from quantbench.analysis.errors import failure_reason
from quantbench.core.errors import ConfigError
from quantbench.core.results import RunResults, VariantResult
from quantbench.core.suggest import did_you_mean
from quantbench.present.console import line, out, styled


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


# --- the columns ------------------------------------------------------------------------------

# What `--columns` takes, in the order `--wide` shows them; the variant always comes first.
COLUMNS: dict[str, str] = {
    "variant": "the variant (always shown)",
    "policy": "what the scheme quantizes",
    "size": "file size, MB",
    "gzip": "gzipped file size, MB",
    "zeros": "share of zero weights, %",
    "values": "most distinct weight values in one output channel",
    "accuracy": "top-1 accuracy, % ± half its 95% interval",
    "agreement": "top-1 agreement with the float Keras model, %",
    "delta": "difference from the float Keras model, points [95% CI]",
    "p": "McNemar p-value of that difference",
    "latency": "median latency at the first thread count, ms",
    "threads": "median latency at the other thread counts, ms",
    "runtimes": "latency on the other LiteRT runtimes, ms",
    "convert": "conversion time, s",
    "runs_on": "targets the file passes (mcu, tpu, gpu, int)",
}
DEFAULT_COLUMNS = ("variant", "size", "accuracy", "delta", "latency", "runs_on")
# Left out first when the default table is wider than the console.
DROP_ORDER = ("runs_on", "accuracy", "latency", "size", "delta")
INDENT = "  "  # a row under its model's group line


def parse_columns(text: str | None) -> list[str] | None:
    """`--columns size,accuracy,delta` -> the column keys, in the user's order; None for none.
    An unknown name is a ConfigError naming the closest one."""
    if text is None:
        return None
    keys = [k.strip().lower().replace("-", "_") for k in text.split(",") if k.strip()]
    aliases = {"targets": "runs_on", "runson": "runs_on", "difference": "delta", "Δ": "delta",
               "acc": "accuracy", "latency_ms": "latency", "size_mb": "size"}  # fmt: skip
    keys = [aliases.get(k, k) for k in keys]
    for key in keys:
        if key not in COLUMNS:
            raise ConfigError(f"unknown table column {key!r}{did_you_mean(key, COLUMNS)}",
                              tip="columns: " + ", ".join(COLUMNS))  # fmt: skip
    if not keys:
        raise ConfigError("--columns names no column", tip="columns: " + ", ".join(COLUMNS))
    return list(dict.fromkeys(keys))


@dataclass
class _Column:
    key: str
    header: str
    cell: Callable[[VariantResult], str | Text]
    right: bool = True


@dataclass
class _Row:
    v: VariantResult
    label: str  # the row's name in the table: its scheme under a group line, else its variant
    twin: str | None = None  # an identical row: the label of the row it is byte-identical to


def _available(results: RunResults, rows: list[VariantResult]) -> dict[str, list[_Column]]:
    """Each column key -> its columns for this run (threads and runtimes are one per figure)."""
    threads = sorted({r.threads for v in results.variants for r in v.latency})
    others = [(runtime, t) for runtime in _other_runtimes(results) for t in threads]
    headline = "interpreter" if others else None

    def latency(t: int) -> Callable[[VariantResult], str]:
        return lambda v: _latency(v, t, headline)

    def runtime(name: str, t: int) -> Callable[[VariantResult], str]:
        return lambda v: _latency(v, t, name)

    def weights(pick: Callable) -> Callable[[VariantResult], str]:
        return lambda v: "-" if v.weights is None else pick(v.weights)

    return {
        "policy": [_Column("policy", "policy", lambda v: Text(v.policy), right=False)],
        "size": [_Column("size", "size MB", lambda v: _mb(v.size_bytes))],
        "gzip": [_Column("gzip", "gzip MB", lambda v: _mb(v.gzip_bytes))],
        "zeros": [_Column("zeros", "zeros %", weights(lambda w: f"{w.sparsity * 100:.1f}"))],
        "values": [_Column("values", "values/ch", weights(lambda w: str(w.max_unique_per_channel)))],
        "accuracy": [_Column("accuracy", "accuracy %", lambda v: _pct(v.accuracy, v.accuracy_ci))],
        "agreement": [_Column("agreement", "agreement %",
                              lambda v: _pct(v.agreement, v.agreement_ci))],
        "delta": [_Column("delta", "Δ pts [95% CI]", lambda v: _difference(v)[0])],
        "p": [_Column("p", "p", lambda v: _difference(v)[1])],
        "latency": [_Column("latency", f"latency ms ({t}t)", latency(t)) for t in threads[:1]],
        "threads": [_Column("threads", f"latency ms ({t}t)", latency(t)) for t in threads[1:]],
        "runtimes": [_Column("runtimes", f"{name} ms ({t}t)", runtime(name, t)) for name, t in others],
        "convert": [_Column("convert", "convert s", lambda v: "-" if v.convert_seconds is None
                            else f"{v.convert_seconds:.1f}")],
        "runs_on": [_Column("runs_on", "runs on", _runs_on, right=False)],
    }  # fmt: skip


def _has_data(key: str, results: RunResults, rows: list[VariantResult]) -> bool:
    """Whether a column says anything in this run (the default and --wide show only those)."""
    if key == "zeros" or key == "values":
        return any(v.weights is not None for v in rows)
    if key == "runs_on":
        return any(v.targets for v in results.variants)
    if key == "gzip":
        return any(v.gzip_bytes is not None for v in rows)
    return True


def _rows(results: RunResults, repeat: int) -> tuple[list[tuple[str | None, list[_Row]]], bool]:
    """The rows by the model they come from (first seen first), and whether there is more than
    one model (then each group has a line of its own and rows are named by their scheme)."""
    groups: dict[str, list[VariantResult]] = {}
    for v in results.rows(repeat):
        groups.setdefault(v.source or "float", []).append(v)
    grouped = len(groups) > 1

    def label(v: VariantResult) -> str:
        if not grouped:
            return v.variant
        if v.kind == "keras":
            return "keras"
        prefix = f"{v.source}_"
        return v.variant[len(prefix):] if v.variant.startswith(prefix) else v.variant

    def twin(v: VariantResult) -> str | None:
        if v.status != "identical" or not v.identical_to:
            return None
        prefix = f"{v.source}_"
        if grouped and v.identical_to.startswith(prefix):
            return v.identical_to[len(prefix):]
        return v.identical_to

    return [(source if grouped else None, [_Row(v, label(v), twin(v)) for v in rows])
            for source, rows in groups.items()], grouped  # fmt: skip


def _table(results: RunResults, groups, keys: Sequence[str], available) -> Table:
    # Names are the user's: Text cells, so no console (ours or a caller's) reads them as markup.
    table = Table(title=Text(f"quantbench: {results.name}"), header_style="bold",
                  title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1, 0, 0))  # fmt: skip
    columns = [c for key in keys if key != "variant" for c in available[key]]
    table.add_column("variant", no_wrap=True)
    for c in columns:
        table.add_column(c.header, justify="right" if c.right else "left", no_wrap=True)
    delta_shown = any(c.key == "delta" for c in columns)
    for g, (source, rows) in enumerate(groups):
        if source is not None:
            table.add_row(Text(source, style="bold"), *[""] * len(columns))
        for i, row in enumerate(rows):
            v = row.v
            name = (INDENT if source is not None else "") + row.label
            if row.twin and not delta_shown:
                name += f" (= {row.twin})"
            last = i == len(rows) - 1 and g < len(groups) - 1  # a blank line before the next group
            if v.status == "failed":
                cells = [styled("failed", "red")] + [""] * (len(columns) - 1) if columns else []
                table.add_row(Text(name), *cells, style="dim", end_section=last)
                continue
            cells = [c.cell(v) for c in columns]
            if row.twin and delta_shown:  # its figures are its twin's: say whose
                cells[[c.key for c in columns].index("delta")] = f"= {row.twin}"
            table.add_row(Text(name), *cells, end_section=last)
    return table


_MEASURE = Console(width=100_000, file=io.StringIO(), markup=False, color_system=None)


def natural_width(table: Table) -> int:
    """How wide `table` is with no cell folded."""
    return Measurement.get(_MEASURE, _MEASURE.options, table).maximum


@dataclass
class TableView:
    table: Table
    left_out: list[str]  # column keys dropped to fit the width
    more: list[str]  # column keys with data that the default leaves to --wide / --columns
    grouped: bool  # rows under one line per model, named by their scheme
    example: str | None  # a grouped row's full variant name, e.g. qat_finetune_int8


def table_view(results: RunResults, repeat: int = 0, *, columns: Sequence[str] | None = None,
               wide: bool = False, width: int | None = None) -> TableView:  # fmt: skip
    """The table of one repeat. `columns`: these column keys (COLUMNS) in this order; `wide`:
    every column with data; neither: the default columns, dropping the least important
    (DROP_ORDER) until the table fits `width` (None: no limit)."""
    rows = results.rows(repeat)
    available = _available(results, rows)
    groups, grouped = _rows(results, repeat)
    if columns is not None:  # as asked (a column without figures in this run shows none)
        keys = ["variant", *(k for k in columns if k != "variant")]
    else:
        keys = [k for k in (COLUMNS if wide else DEFAULT_COLUMNS)
                if k == "variant" or (available[k] and _has_data(k, results, rows))]  # fmt: skip
    left_out: list[str] = []
    table = _table(results, groups, keys, available)
    if columns is None and not wide and width is not None:
        for key in DROP_ORDER:
            if natural_width(table) <= width:
                break
            if key in keys:
                keys.remove(key)
                left_out.append(key)
                table = _table(results, groups, keys, available)
    shown = set(keys) | set(left_out)
    more = [] if columns is not None or wide else [
        k for k in COLUMNS if k not in shown and available.get(k) and _has_data(k, results, rows)]  # fmt: skip
    example = next((r.v.variant for _, rs in groups for r in rs
                    if grouped and r.v.kind == "tflite" and r.v.variant != r.label), None)  # fmt: skip
    return TableView(table, left_out, more, grouped, example)


def results_table(results: RunResults, repeat: int = 0, *, columns: Sequence[str] | None = None,
                  wide: bool = False, width: int | None = None) -> Table:  # fmt: skip
    return table_view(results, repeat, columns=columns, wide=wide, width=width).table


def uncertainty_lines(results: RunResults, p_shown: bool = True) -> list[str]:
    """What the ± and the Δ mean (and the p, when the table shows it), and with repeats which
    source of variation dominates."""
    rows = [v for v in results.rows(0) if v.accuracy_ci]
    if not rows:
        return []
    n = rows[0].eval_images
    p = " and p its exact McNemar p-value" if p_shown else ""
    lines = [f"± is half the 95% Wilson interval over the {n} scored photos; Δ is the paired "
             f"difference from the float Keras model on the same photos (Newcombe 95% CI){p}. "
             f"Bounds in results.csv."]  # fmt: skip
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


def layout_lines(view: TableView, width: int | None) -> list[str]:
    """What the table leaves to the lines under it: the columns left out or not shown, and how
    a row under a group line is named."""
    lines = []
    if view.left_out:
        lines.append(f"left out to fit {width} columns: {', '.join(view.left_out)} "
                     "(--columns picks, --wide shows all)")  # fmt: skip
    elif view.more:
        lines.append(f"--wide adds {', '.join(view.more)} (or pick with --columns)")
    if view.example:
        lines.append(f"rows under a model are named model_row, e.g. {view.example}")
    return lines


def _same_model_lines(results: RunResults) -> tuple[list[str], set[tuple[str, int]]]:
    """One line per file that other schemes reproduced byte for byte, instead of a note per
    row; and the (variant, note index) of the notes it replaces."""
    twins: dict[str, list[str]] = {}
    replaced: set[tuple[str, int]] = set()
    for v in results.rows(0):
        if v.status == "identical" and v.identical_to:
            twins.setdefault(v.identical_to, []).append(v.variant)
            replaced |= {(v.variant, i) for i, n in enumerate(v.notes)
                         if v.identical_to in n and "no effect" in n}  # fmt: skip
    lines = [f"{', '.join(names)}: the same model as {twin} (the scheme had no effect)"
             for twin, names in twins.items()]  # fmt: skip
    return lines, replaced


def _print_unfolded(console: Console, table: Table, width: int) -> None:
    """`table` at `width` on a narrower console: lines as long as they are, nothing folded
    (the terminal wraps them, a pager scrolls them)."""
    lines = console.render_lines(table, console.options.update_width(width), pad=False)
    console.print(Segments([s for ln in lines for s in (*ln, Segment.line())]), crop=False,
                  soft_wrap=True, end="")  # fmt: skip


def print_results(results: RunResults, *, columns: Sequence[str] | None = None,
                  wide: bool = False, console: Console | None = None) -> None:  # fmt: skip
    """The table at the console's width, then one line per failed row (its reason in plain
    words; results.json keeps the whole message), the legends and the rows' notes."""
    console = console or out
    width = console.width
    view = table_view(results, columns=columns, wide=wide, width=width)
    needed = natural_width(view.table)
    if needed > width:  # --wide or --columns on a narrow console: unfolded, never cut
        _print_unfolded(console, view.table, needed)
    else:
        console.print(view.table)
    p_shown = any(c.header == "p" for c in view.table.columns)
    legends = layout_lines(view, width) + uncertainty_lines(results, p_shown) + busy_lines(results)
    for text in legends:
        console.print(text, highlight=False, markup=False)
    failures: dict[str, list[str]] = {}  # reason -> the rows it failed (a model's, alike)
    for v in results.rows(0):
        if v.status == "failed":
            failures.setdefault(failure_reason(v), []).append(v.variant)
    for reason, names in failures.items():
        # One line however narrow the console: the terminal wraps it, a log keeps it whole.
        console.print(line(("failed", "red"), f" {', '.join(names)}: {reason}"), highlight=False,
                      soft_wrap=True)  # fmt: skip
    same, replaced = _same_model_lines(results)
    for text in same:
        console.print(line(("note", "yellow"), f" {text}"), highlight=False)
    for v in results.rows(0):
        for i, note in enumerate(v.notes):
            if (v.variant, i) not in replaced:
                console.print(line(("note", "yellow"), f" {v.variant}: {note}"), highlight=False)
