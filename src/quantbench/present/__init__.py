"""Presentation: events in, terminal text out. Only the CLI calls this module.

The library reports progress as `(level, text)` events and returns typed results; this module
turns the events into log lines on stderr and the results into the tables on stdout.
"""

from __future__ import annotations

from pathlib import Path

from quantbench.present import console
from quantbench.core.results import RunResults


def show_event(level: str, text: str) -> None:
    """The CLI's event sink. Event texts hold user strings (paths, class names): never markup.
    A warning is one line: an error inside it (a converter's MLIR diagnostics, a worker's log)
    in plain words (analysis/errors.py); results.json keeps the whole message."""
    if level == "step":
        console.step(text)
    elif level == "warn":
        from quantbench.analysis.errors import event_line

        console.warn(event_line(text))
    else:
        console.info(text)


def show_run(results: RunResults, run_dir: Path, command: str, *,
             columns: list[str] | None = None, wide: bool = False) -> None:  # fmt: skip
    """What a finished run prints: the table (`columns`, or every column when `wide`; see
    present/table.py), notes, training cost, the article's claims, the preprocessing check,
    the recommendation, and where everything is."""
    from quantbench.analysis.recommend import Recommendation
    from quantbench.analysis.stats import time_breakdown
    from quantbench.core.results import CheckResult
    from quantbench.present.sections import check_table, print_comparison, print_recommendation, training_table
    from quantbench.present.table import print_results

    print_results(results, columns=columns, wide=wide)
    if results.training:
        console.out.print(training_table(results))
    if command == "run":
        print_comparison(results)
    if results.extras.get("check"):
        check = CheckResult.from_dict(results.extras["check"])
        console.out.print(check_table(check))
        if not check.warnings:
            show_event("info", "no alternative scores significantly better than the declared "
                               "preprocessing")  # fmt: skip
    if results.extras.get("recommendation"):
        print_recommendation(Recommendation.model_validate(results.extras["recommendation"]))
    tracked = results.extras.get("tracked")
    if tracked:
        console.out.print(f"tracked in {tracked['backend']}: {tracked['where']}", highlight=False,
                          soft_wrap=True, markup=False)  # fmt: skip
    report = run_dir / "report.html"
    if report.exists():
        console.out.print(f"report: {report}", highlight=False, soft_wrap=True, markup=False)
    breakdown = time_breakdown(results)
    if breakdown and results.total_seconds:
        total = results.total_seconds
        parts = ", ".join(f"{name} {seconds:.0f} s ({seconds / total:.0%})" for name, seconds in breakdown)
        console.out.print(f"\ntime: {total:.0f} s: {parts}", highlight=False, markup=False)
    console.out.print(f"\nrun directory: {run_dir}", highlight=False, soft_wrap=True, markup=False)


def show_sweep(state, sweep_dir: Path) -> None:
    """What a finished sweep prints: each trial's status, the recommendation, where it is."""
    import json

    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("trial", "status", "node", "seconds", "note"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    for t in state.trials:
        note = t.error or ("finished earlier" if t.skipped else "")
        table.add_row(Text(t.label), t.status, Text(t.node or ""),
                      "" if t.seconds is None else f"{t.seconds:.0f}", Text(note), style="red" if t.status == "failed" else None)  # fmt: skip
    console.out.print(table)
    rec_file = sweep_dir / "recommendation.json"
    if rec_file.exists():
        rec = json.loads(rec_file.read_text(encoding="utf-8"))
        console.out.print(f"\nrecommended: {rec.get('chosen') or 'no variant fits'}", highlight=False,
                          markup=False)  # fmt: skip
        console.out.print(f"  {rec.get('reason', '')}", highlight=False, markup=False, soft_wrap=True)
        console.out.print(f"  Pareto front: {', '.join(rec.get('pareto') or [])}", highlight=False,
                          markup=False, soft_wrap=True)  # fmt: skip
    for name in ("sweep.html", "sweep.csv"):
        if (sweep_dir / name).exists():
            console.out.print(f"{name}: {sweep_dir / name}", highlight=False, markup=False,
                              soft_wrap=True)  # fmt: skip
    console.out.print(f"sweep directory: {sweep_dir}", highlight=False, soft_wrap=True, markup=False)
