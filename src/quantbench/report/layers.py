"""Report sections of the per-layer analysis and the selective search (no TensorFlow)."""

from __future__ import annotations

from quantbench.report import svg
from quantbench.report.page import esc, figure, generic_table, kv_table, legend, pct, section
from quantbench.core.results import RunResults, VariantResult

TOP_LAYERS = 20  # bars drawn per analysis; the CSV and the table hold every op
HEALTHY = 0.29  # RMSE/scale of uniform rounding alone


def per_layer(results: RunResults) -> str:
    if not results.layer_analyses:
        return ""
    parts = []
    for a in results.layer_analyses:
        top = a.layers[:TOP_LAYERS]
        rows = [(f"{e.rank}. {e.layer or e.tensor[:40]}", [e.rmse_scale]) for e in top]
        chart = svg.bars(rows, ["RMSE / scale"], ["#dc2626"], "RMSE/scale",
                         f"{a.variant}: worst {len(top)} of {len(a.layers)} quantized ops")  # fmt: skip
        cap = (f"Each op's own error against the float op on the same input, in quantization "
               f"steps (RMSE / output scale; rounding alone gives {HEALTHY}), on "
               f"{a.debug_images} images; {pct(a.named_fraction)} % of ops named by Keras layer.")
        table = generic_table([{"rank": e.rank, "layer": e.layer or "", "op": e.op,
                                "RMSE/scale": f"{e.rmse_scale:.3g}",
                                "channel error": "" if e.channel_error is None else f"{e.channel_error:.3g}",
                                "mean |error|": f"{e.mean_abs_error:.3g}",
                                "max |error|": f"{e.max_abs_error:.3g}", "MSE": f"{e.mse:.3g}"}
                               for e in a.layers])  # fmt: skip
        parts.append(f"<h3>{esc(a.variant)}</h3>" + figure(f"layers-{a.variant}", chart, cap)
                     + f"<details><summary>every op ({len(a.layers)})</summary>{table}</details>")  # fmt: skip
    return section("layers", "Per-layer error", "".join(parts),
                   "Which layers quantization breaks: the per-layer analysis of integer variants "
                   "(also in layers-&lt;variant&gt;.csv).")  # fmt: skip


def _latency_of(row: VariantResult | None, threads: int | None) -> float | None:
    if row is None or not row.ok or threads is None:
        return None
    return row.latency_ms(threads)


def selective(results: RunResults) -> str:
    rows = [v for v in results.rows(0) if v.selective is not None]
    if not rows:
        return ""
    parts = []
    for v in rows:
        s = v.selective
        ordered = sorted(s.candidates, key=lambda c: c.float_layers)
        accuracy = svg.lines([svg.Series("search accuracy", "#2563eb",
                                         [(c.float_layers, 100 * c.search_accuracy) for c in ordered]),
                              svg.Series("float model", "#64748b",
                                         [(c.float_layers, 100 * s.float_search_accuracy) for c in ordered],
                                         dashed=True)],
                             "layers kept in float", "accuracy %", "search accuracy by float layers")  # fmt: skip
        timed = [(c.float_layers, c.latency_ms) for c in ordered if c.latency_ms is not None]
        latency = svg.lines([svg.Series("latency", "#d97706", timed)], "layers kept in float", "ms",
                            "latency by float layers") if timed else ""  # fmt: skip
        threads = next((c.threads for c in ordered if c.threads), None)
        plain = results.variant(s.base)
        int8 = results.variant("int8")
        f32 = results.variant("float32")
        mine = _latency_of(v, threads)
        facts = [
            ("base", s.base), ("budget", f"{s.budget:g} points below float on the search images"),
            ("search images", s.search_source),
            ("layers kept in float", f"{len(s.float_layers)} of {s.quantizable_layers} quantized ops"
                                     + ("" if s.within_budget else " (no candidate met the budget)")),
            ("candidate conversions", s.conversions), ("search wall time", f"{s.seconds:.0f} s"),
            ("validation accuracy", f"{pct(v.accuracy)} % (plain {s.base}: "
                                    f"{pct(plain.accuracy if plain else None)} %)"),
        ]  # fmt: skip
        for label, other in ((s.base, plain), ("int8", int8), ("float32", f32)):
            ms = _latency_of(other, threads)
            if ms and mine:
                facts.append((f"latency vs {label} ({threads} threads)",
                              f"{mine:.2f} ms vs {ms:.2f} ms ({100 * (mine / ms - 1):+.0f} %)"))
        chosen = ", ".join(s.float_layers) or "none"
        parts.append(f"<h3>{esc(v.variant)}</h3>" + kv_table(facts)
                     + f"<p>Kept in float: {esc(chosen)}</p>"
                     + figure(f"search-{v.variant}", accuracy, "Each point is one candidate "
                              "converted and scored on the search images (never the validation "
                              "split).", legend([("search accuracy", "#2563eb", False),
                                                 ("float model", "#64748b", True)]))
                     + (figure(f"search-latency-{v.variant}", latency, "Median latency of each "
                               "candidate: the cost of the float islands.") if latency else ""))  # fmt: skip
    return section("selective", "Selective quantization", "".join(parts),
                   "The fewest layers kept in float that hold accuracy within the budget.")
