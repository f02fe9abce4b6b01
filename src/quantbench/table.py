"""The terminal's comparison table, like the seed's: one row per variant."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from quantbench.console import line, out, styled
from quantbench.results import RunResults, VariantResult


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _latency(v: VariantResult, threads: int) -> str:
    ms = v.latency_ms(threads)
    return "-" if ms is None else f"{ms:.2f}"


def results_table(results: RunResults, repeat: int = 0) -> Table:
    threads = sorted({r.threads for v in results.variants for r in v.latency})
    # Names are the user's: Text cells, so no console (ours or a caller's) reads them as markup.
    table = Table(title=Text(f"quantbench: {results.name}"), header_style="bold",
                  title_justify="left")  # fmt: skip
    table.add_column("variant")
    table.add_column("policy")
    table.add_column("size MB", justify="right")
    table.add_column("accuracy %", justify="right")
    table.add_column("agreement %", justify="right")
    for t in threads:
        table.add_column(f"latency ms ({t}t)", justify="right")
    table.add_column("convert s", justify="right")
    for v in results.rows(repeat):
        size = "-" if v.size_bytes is None else f"{v.size_bytes / 1e6:.2f}"
        convert = "-" if v.convert_seconds is None else f"{v.convert_seconds:.1f}"
        if v.status == "failed":
            cells = [styled("failed", "red"), "", "", *[""] * len(threads), ""]
            table.add_row(Text(v.variant), Text(v.policy), *cells, style="dim")
            continue
        name = v.variant if v.status == "ok" else f"{v.variant} (= {v.identical_to})"
        table.add_row(
            Text(name), Text(v.policy), size, _pct(v.accuracy), _pct(v.agreement),
            *[_latency(v, t) for t in threads], convert,
        )  # fmt: skip
    return table


def print_results(results: RunResults) -> None:
    out.print(results_table(results))
    for v in results.rows(0):
        if v.status == "failed":
            out.print(line((v.variant, "red"), f" failed: {v.error}"), highlight=False)
    for v in results.rows(0):
        for note in v.notes:
            out.print(line(("note", "yellow"), f" {v.variant}: {note}"), highlight=False)
