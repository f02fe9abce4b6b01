"""The tables a finished run shows after the variants table: training cost, the article's
claims, the preprocessing check and the recommendation. Results in, terminal text out."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from quantbench.analysis.article import FAILS, HOLDS, UNSURE
from quantbench.analysis.recommend import Recommendation
from quantbench.core.results import CheckResult, RunResults
from quantbench.present.console import line, out, styled


def training_table(results: RunResults) -> Table:
    """Training cost per model and repeat: seconds per epoch, total, and QAT/float ratio."""
    from rich.text import Text

    from quantbench.analysis.stats import training_cost

    table = Table(title="training cost", header_style="bold", title_justify="left")
    for column in ("model", "repeat", "epochs", "s/epoch (steady)", "s/epoch (mean)", "total s",
                   "x float"):  # fmt: skip
        table.add_column(column, justify="left" if column == "model" else "right")

    def num(value, digits=1, suffix=""):
        return "-" if value is None else f"{value:.{digits}f}{suffix}"

    for row in training_cost(results):
        table.add_row(
            Text(row["name"]), str(row["repeat"]), str(row["epochs"]), num(row["steady_seconds_per_epoch"]),
            num(row["seconds_per_epoch"]), num(row["total_seconds"]),
            "" if row["recipe"] == "float" else num(row["ratio_to_float"], 2, "x"),
        )  # fmt: skip
    return table


def _pct(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    text = f"{100 * d['mean']:.1f}"
    if d.get("ci_low") is not None:
        text += f" [{100 * d['ci_low']:.1f}, {100 * d['ci_high']:.1f}]"
    elif d.get("image_ci_low") is not None:  # one run: the interval over the photos
        text += f" [{100 * d['image_ci_low']:.1f}, {100 * d['image_ci_high']:.1f}] photos"
    return text


def figures_table(results: RunResults) -> Table:
    table = Table(title="the article vs this run", header_style="bold", title_justify="left")
    for column in ("article row", "our variant", "article MB", "our MB", "article %",
                   "our % [95% CI]"):  # fmt: skip
        table.add_column(column, justify="left" if "row" in column or "variant" in column else "right")
    for f in results.extras.get("article_figures", []):
        if "article_seconds_per_epoch" in f:
            ours = f["seconds_per_epoch"]
            ours_text = "-" if not ours else f"{ours['mean']:.1f} s" + (
                f" [{ours['ci_low']:.1f}, {ours['ci_high']:.1f}]" if ours.get("ci_low") is not None else "")
            table.add_row(f["label"], f["variant"], "", "", f"{f['article_seconds_per_epoch']:g} s",
                          ours_text)  # fmt: skip
            continue
        size = "-" if f["size_mb"] is None else f"{f['size_mb']:.2f}"
        table.add_row(f["label"], f["variant"], f"{f['article_size_mb']:g}", size,
                      f"{f['article_accuracy_pct']:g}", _pct(f["accuracy"]))  # fmt: skip
    return table


def verdicts_table(results: RunResults) -> Table:
    table = Table(title="the article's claims", header_style="bold", title_justify="left")
    for column in ("claim", "article", "this run", "verdict", "why"):
        table.add_column(column, overflow="fold")
    colour = {HOLDS: "green", FAILS: "red", UNSURE: "yellow"}
    for v in results.extras.get("article_comparison", []):
        table.add_row(f"({v['key']}) {v['claim']}", v["article"], v["ours"],
                      styled(v["verdict"], colour[v["verdict"]]), v["reason"])  # fmt: skip
    return table


def print_comparison(results: RunResults) -> None:
    if results.extras.get("article_figures"):
        out.print(figures_table(results))
    if results.extras.get("article_comparison"):
        out.print(verdicts_table(results))


def check_table(result: CheckResult) -> Table:
    table = Table(
        title=f"preprocessing check: the original model on {result.images} images",
        header_style="bold", title_justify="left",
    )  # fmt: skip
    for column, justify in [("scaling", "left"), ("channel order", "left"),
                            ("accuracy %", "right"), ("vs declared", "left")]:  # fmt: skip
        table.add_column(column, justify=justify)
    for r in result.rows:
        if r.declared:
            verdict = "declared"
        else:
            verdict = f"+{r.only_this_right}/-{r.only_declared_right}, p={r.p_value:.2g}"
            verdict = line(verdict, ("  better", "bold yellow") if r.better else "")
        table.add_row(r.scaling, r.channel_order, f"{r.accuracy * 100:.1f}", verdict,
                      style="bold" if r.declared else None)  # fmt: skip
    return table


def print_recommendation(rec: Recommendation) -> None:
    if rec.chosen:
        out.print(line("\n", ("recommended:", "bold green"), " ", (rec.chosen, "bold")),
                  highlight=False)  # fmt: skip
    else:
        out.print(line("\n", ("no variant fits the constraints", "bold yellow")), highlight=False)
    out.print(line("  ", rec.reason), highlight=False)
    if rec.pareto:
        out.print(line("  Pareto set (accuracy, size, latency): ", ", ".join(rec.pareto)),
                  highlight=False)  # fmt: skip
    for name, why in rec.ruled_out.items():
        out.print(line((f"  ruled out {name}: {'; '.join(why)}", "dim")), highlight=False)
