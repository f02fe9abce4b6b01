"""One answer across a sweep's trials: a table of every variant, the Pareto front across all
of them, one recommendation, a CSV, and an HTML page; from the trials' results.json alone
(no TensorFlow).

The recommendation uses the constraints `run` uses (recommend.recommend on each trial: the
accuracy budget is judged against the trial's own float model, with its confidence bound),
then ranks every trial's fitting variants together by the objective, with the same
tie-breakers. The Pareto front is over (accuracy, size, latency) across all trials.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from quantbench.core import atomic
from quantbench.core.config import RecommendConfig
from quantbench.analysis.recommend import PARETO_METRICS, _OBJECTIVE_METRIC, metric, pareto, recommend
from quantbench.core.results import CSV_COLUMNS, METRICS, RunResults, load

REPORT_FILE = "sweep.html"
CSV_FILE = "sweep.csv"
SEP = " · "  # between a trial's label and a variant's name


class SweepRecommendation(BaseModel):
    chosen: str | None = None  # "trial label · variant"
    trial: str | None = None  # the trial's id
    variant: str | None = None
    reason: str
    objective: str
    candidates: list[str] = Field(default_factory=list)  # every fitting variant, best first
    pareto: list[str] = Field(default_factory=list)


def loaded_trials(state: Any) -> list[tuple[Any, RunResults, Path]]:
    """(trial record, results, run dir) of every trial that has results."""
    out = []
    for record in state.trials:
        if not record.run_dir:
            continue
        try:
            out.append((record, load(record.run_dir), Path(record.run_dir)))
        except Exception:  # noqa: BLE001 - a missing or damaged trial is left out, not fatal
            continue
    return out


def combined_values(trials) -> dict[str, dict[str, float | None]]:
    values = {}
    for record, res, _ in trials:
        for v in res.rows(0):
            if v.kind == "tflite" and v.status == "ok":
                values[f"{record.label}{SEP}{v.variant}"] = {m: metric(res, v, m)
                                                            for m in PARETO_METRICS}  # fmt: skip
    return values


def recommend_across(trials, constraints: RecommendConfig) -> SweepRecommendation:
    values = combined_values(trials)
    front = pareto(values, PARETO_METRICS) if values else []
    fitting: list[tuple[str, str, str]] = []  # (label, trial id, variant)
    for record, res, _ in trials:
        rec = recommend(res, constraints)
        fitting += [(f"{record.label}{SEP}{name}", record.id, name) for name in rec.candidates]
    objective = _OBJECTIVE_METRIC[constraints.objective]

    def rank(item: tuple[str, str, str]) -> tuple:
        key = []
        for m in (objective, *[m for m in PARETO_METRICS if m != objective]):
            value = values[item[0]].get(m)
            sign = -1 if METRICS[m].higher_is_better else 1
            key.append((value is None, 0.0 if value is None else sign * value))
        return tuple(key)

    fitting.sort(key=rank)
    out = SweepRecommendation(reason="", objective=constraints.objective, pareto=front,
                              candidates=[f[0] for f in fitting])  # fmt: skip
    if not fitting:
        out.reason = (f"No variant of the {len(trials)} trials meets the constraints "
                      f"(max accuracy drop {constraints.max_accuracy_drop:g} points against each "
                      "trial's own float model).")  # fmt: skip
        return out
    label, trial_id, variant = fitting[0]
    v = values[label]
    acc = v.get("accuracy")
    size = v.get("size_bytes")
    ms = v.get("latency_ms")
    out.chosen, out.trial, out.variant = label, trial_id, variant
    out.reason = (f"{label} is the best by {constraints.objective} of the {len(fitting)} variants "
                  f"(of {len(values)}) that meet the constraints: accuracy "
                  f"{'n/a' if acc is None else f'{acc * 100:.1f}%'}, size "
                  f"{'n/a' if size is None else f'{size / 1e6:.2f} MB'}, latency "
                  f"{'n/a' if ms is None else f'{ms:.2f} ms'}.")  # fmt: skip
    return out


def to_csv(state: Any, trials, rec: SweepRecommendation | None = None) -> str:
    """Every trial's variants, one row each, with its axis values and Pareto/recommended flags."""
    axes = list(state.axes)
    columns = ["trial", "trial_id", "trial_status", *axes, *CSV_COLUMNS, "pareto", "recommended"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    front = set(rec.pareto) if rec else set()
    from quantbench.core.results import to_csv as run_csv

    by_id = {record.id: (res, run_dir) for record, res, run_dir in trials}
    for record in state.trials:
        base = {"trial": record.label, "trial_id": record.id, "trial_status": record.status,
                **{k: record.values.get(k) for k in axes}}  # fmt: skip
        if record.id not in by_id:
            writer.writerow({**base, "error": record.error})
            continue
        res, _ = by_id[record.id]
        for row in csv.DictReader(io.StringIO(run_csv(res))):
            if row.get("variant") is None:
                continue
            name = f"{record.label}{SEP}{row['variant']}"
            writer.writerow({**base, **row, "pareto": name in front,
                             "recommended": bool(rec and rec.chosen == name)})  # fmt: skip
    return out.getvalue()


def render(state: Any, trials, rec: SweepRecommendation) -> str:
    from quantbench.report.compare import _scatter, _table
    from quantbench.report.page import breakable, esc, section, shell

    runs = [(res, run_dir) for _, res, run_dir in trials]
    labels = [record.label for record, _, _ in trials]
    picks = [type("R", (), {"chosen": rec.variant if record.id == rec.trial else None})()
             for record, _, _ in trials]  # the table marks only the sweep's choice
    c = state.counts()
    rows = "".join(
        f'<tr><td class="name" data-label="trial">{breakable(t.label)}</td>'
        f'<td data-label="status">{esc(t.status)}</td>'
        f'<td data-label="node">{esc(t.node or "")}</td>'
        f'<td class="num" data-label="seconds">{"" if t.seconds is None else f"{t.seconds:.0f}"}'
        f'</td><td class="wrap" data-label="note">'
        f'{esc(t.error or ("finished earlier" if t.skipped else ""))}</td></tr>'
        for t in state.trials
    )  # fmt: skip
    trials_table = ('<div class="scroll"><table class="data stack"><thead><tr><th>trial</th>'
                    '<th>status</th><th>node</th><th class="num">seconds</th><th>note</th></tr>'
                    f"</thead><tbody>{rows}</tbody></table></div>")  # fmt: skip
    pick = esc(rec.chosen) if rec.chosen else "no variant fits"
    summary = (f'<div class="kpis"><div class="kpi"><div class="kpi-v">{pick}</div>'
               f'<div class="kpi-k">{esc(rec.reason)}</div></div></div>'
               f"<p>Pareto front (accuracy, size, latency) across all trials: "
               f"{esc(', '.join(rec.pareto)) or 'none'}.</p>")  # fmt: skip
    body = section("summary", "Recommendation across trials", summary)
    body += section("trials", "Trials", trials_table,
                    f"{c['complete']} complete, {c['failed']} failed, {c['pending']} not run.")
    if runs:
        body += section("table", "All variants", _table(runs, labels, picks),
                        "Click a column header to sort.")
        body += section("tradeoffs", "Trade-offs across trials", '<div class="grid2">'
                        + _scatter(runs, labels, "size_bytes", 1e-6, "size (MB)", "accuracy-size")
                        + _scatter(runs, labels, "latency_ms", 1.0, "median latency (ms)",
                                   "accuracy-latency") + "</div>")  # fmt: skip
    nav = [("summary", "Summary"), ("trials", "Trials")]
    nav += [("table", "Table"), ("tradeoffs", "Trade-offs")] if runs else []
    return shell(f"quantbench sweep {state.name}", f"{len(state.trials)} trials", nav, body)


def build(state: Any, constraints: RecommendConfig | None = None):
    trials = loaded_trials(state)
    constraints = constraints or RecommendConfig.model_validate(state.recommend or {})
    return trials, recommend_across(trials, constraints)


def write_sweep_report(state: Any, sweep_dir: Path,
                       constraints: RecommendConfig | None = None) -> SweepRecommendation:  # fmt: skip
    """Write sweep.html and sweep.csv into the sweep directory; returns the recommendation."""
    trials, rec = build(state, constraints)
    atomic.write_text(Path(sweep_dir) / CSV_FILE, to_csv(state, trials, rec))
    atomic.write_text(Path(sweep_dir) / REPORT_FILE, render(state, trials, rec))
    atomic.write_text(Path(sweep_dir) / "recommendation.json", rec.model_dump_json(indent=2) + "\n")
    return rec
