"""The report's later sections: training cost, per-class accuracy, where each variant can run,
the article's claims and the run's details (sections.py has the variants themselves)."""

from __future__ import annotations

from quantbench.report import svg
from quantbench.report.page import (
    breakable,
    esc,
    figure,
    flatten,
    generic_table,
    kv_table,
    label_attr,
    legend,
    pct,
    section,
    sort_attr,
)  # fmt: skip
from quantbench.core.results import RunResults


def training(results: RunResults) -> str:
    if not results.training:
        return section("training", "Training", '<p class="empty">Training: not measured '
                       "(the model was given, not trained).</p>")  # fmt: skip
    palette = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed"]
    runs = [t for t in results.training if t.repeat == 0] or results.training
    acc_series, loss_series, items = [], [], []
    for i, t in enumerate(runs):
        color = palette[i % len(palette)]
        acc_series.append(
            svg.Series(
                f"{t.name} train", color, [(e.epoch, e.accuracy * 100) for e in t.epochs], True
            )
        )
        acc_series.append(svg.Series(f"{t.name} validation", color,
                                     [(e.epoch, e.val_accuracy * 100) for e in t.epochs
                                      if e.val_accuracy is not None]))  # fmt: skip
        loss_series.append(
            svg.Series(f"{t.name} train", color, [(e.epoch, e.loss) for e in t.epochs], True)
        )
        loss_series.append(svg.Series(f"{t.name} validation", color,
                                      [(e.epoch, e.val_loss) for e in t.epochs
                                       if e.val_loss is not None]))  # fmt: skip
        items += [(f"{t.name} validation", color, False), (f"{t.name} train", color, True)]
    key = legend(items)
    curves = (figure("training-accuracy", svg.lines(acc_series, "epoch", "accuracy (%)"),
                     "Accuracy per epoch", key)
              + figure("training-loss", svg.lines(loss_series, "epoch", "loss"), "Loss per epoch",
                       key))  # fmt: skip
    time_rows = [(f"{t.name} (repeat {t.repeat})" if results.repeats > 1 else t.name,
                  [t.total_seconds]) for t in results.training]  # fmt: skip
    time_chart = svg.bars(time_rows, ["total"], ["#0d9488"], "s", "training time")
    per_epoch = ", ".join(f"{t.name}: {t.seconds_per_epoch:.1f} s/epoch" for t in runs
                          if t.seconds_per_epoch)  # fmt: skip
    body = f'<div class="grid2">{curves}</div>' + figure(
        "training-time", time_chart, f"Training time, seconds. {esc(per_epoch)}"
    )
    return section("training", "Training", body)


def _heat(value: float, top: float, hue: str = "37,99,235", most: float = 0.85) -> str:
    alpha = 0.06 + most * (value / top if top > 0 else 0)
    ink = "#fff" if alpha > 0.55 else "inherit"
    return f"background:rgba({hue},{alpha:.2f});color:{ink}"


def per_class(results: RunResults) -> str:
    rows = [v for v in results.rows(0) if v.per_class_accuracy and v.status != "failed"]
    if not rows:
        return ""
    classes = (results.data.classes if results.data else None) or list(rows[0].per_class_accuracy)
    values = [a for v in rows for a in v.per_class_accuracy.values()]
    low, high = min(values) - 0.02, max(values)

    def cell(v, c) -> str:
        a = v.per_class_accuracy.get(c)
        style = f' style="{_heat(a - low, high - low, "5,150,105", 0.45)}"' if a is not None else ""
        return f'<td data-sort="{sort_attr(a)}"{style}>{pct(a)}</td>'

    if len(rows) > len(classes):  # more variants than classes: a row per variant (narrower)
        head = '<th tabindex="0">variant</th>' + "".join(
            f'<th tabindex="0">{breakable(c)}</th>' for c in classes)
        body = [f'<tr><th scope="row" class="name" data-sort="{esc(v.variant)}">'
                f'{breakable(v.variant)}</th>{"".join(cell(v, c) for c in classes)}</tr>'
                for v in rows]  # fmt: skip
    else:
        head = '<th tabindex="0">class</th>' + "".join(
            f'<th tabindex="0">{breakable(v.variant)}</th>' for v in rows)
        body = [f'<tr><th scope="row">{esc(c)}</th>{"".join(cell(v, c) for v in rows)}</tr>'
                for c in classes]  # fmt: skip
    table = (f'<div class="scroll"><table class="data heat sortable"><thead><tr>{head}</tr>'
             f'</thead><tbody>{"".join(body)}</tbody></table></div>')  # fmt: skip
    mats = []
    for v in rows:
        if not v.confusion:
            continue
        top = max((x for r in v.confusion for x in r), default=0)
        trs = []
        for i, r in enumerate(v.confusion):
            label = classes[i] if i < len(classes) else str(i)
            tds = "".join(f'<td style="{_heat(x, top)}" title="true {esc(label)}, predicted '
                          f'{esc(classes[j] if j < len(classes) else j)}: {x}">{x}</td>'
                          for j, x in enumerate(r))  # fmt: skip
            trs.append(f'<tr><th scope="row" title="{esc(label)}">{esc(label)}</th>{tds}</tr>')
        cols = "".join(f'<th><span title="{esc(c)}">{esc(c[:4])}</span></th>'
                       for c in classes[: len(v.confusion[0])])  # fmt: skip
        mats.append(f'<div class="cm"><h3>{esc(v.variant)}</h3><table class="confusion"><thead>'
                    f'<tr><th class="corner">true \\ pred</th>{cols}</tr></thead><tbody>'
                    f'{"".join(trs)}</tbody></table></div>')  # fmt: skip
    body = ("<h3>Accuracy per class (%)</h3>" + table
            + ('<h3>Confusion matrices</h3><div class="cms">' + "".join(mats) + "</div>"
               if mats else ""))  # fmt: skip
    return section("classes", "Per class", body)


def article_comparison(results: RunResults) -> str:
    records = results.extras.get("article_comparison")
    if not isinstance(records, list) or not records:
        return ""
    records = [r if isinstance(r, dict) else {"value": r} for r in records]
    return section("article", "The article's figures beside ours",
                   generic_table(records))  # fmt: skip


def details(results: RunResults) -> str:
    parts = []
    d = results.data
    if d is not None:
        counts = [(c, [float(n)]) for c, n in d.class_counts.items()]
        chart = svg.bars(counts, ["images"], ["#7c3aed"], "images", "images per class")
        facts = kv_table([
            ("source", d.source), ("classes", len(d.classes)), ("training images", d.train_count),
            ("scored photos", d.val_count), ("how they were chosen", d.eval_split or "validation split"),
            *([("calibration photos", d.calibration_count)] if d.calibration_count else []),
            *([("search photos (held out of training)", d.search_count)] if d.search_count else []),
            ("validation split", f"{d.validation_split:g} (seed {d.split_seed})"),
            ("image size", f"{d.image_size}×{d.image_size}"), ("skipped files", len(d.skipped)),
            ("duplicate groups", d.duplicate_groups),
        ])  # fmt: skip
        skipped = ""
        if d.skipped:
            items = "".join(f"<li><code>{esc(s.path)}</code>: {esc(s.reason)}</li>"
                            for s in d.skipped[:50])  # fmt: skip
            more = f"<li>… and {len(d.skipped) - 50} more</li>" if len(d.skipped) > 50 else ""
            skipped = f'<h3>Skipped files</h3><ul class="notes">{items}{more}</ul>'
        parts.append(
            section(
                "data",
                "Data",
                f'<div class="grid2"><div>{facts}{skipped}</div>'
                f"{figure('class-counts', chart, 'Images per class')}</div>",
            )
        )
    if results.config:
        rows = [(k, "–" if v is None else v) for k, v in flatten(results.config)]
        half = (len(rows) + 1) // 2  # two columns of key/value rows
        tables = kv_table(rows[:half]) + (kv_table(rows[half:]) if rows[half:] else "")
        parts.append(section("config", "Configuration", f'<div class="grid2">{tables}</div>'))
    env = results.environment
    if env is not None:
        rows = [(k, v) for k, v in env.model_dump().items() if v is not None]
        parts.append(section("environment", "Environment", kv_table(rows)))
    return "".join(parts)


TARGET_ORDER = ("mcu", "edgetpu", "gpu", "integer_only")
MARKS = {True: ("pass", "✓", "runs"), False: ("fail", "✗", "does not run"),
         None: ("unknown", "?", "could not be judged")}  # fmt: skip


def _target_figures(v, name: str, t) -> str:
    """The figures a check measured, in words: arena, TFLM accuracy beside LiteRT's, ..."""
    said = []
    arena = t.figures.get("arena_bytes")
    if isinstance(arena, (int, float)):
        said.append(f"arena {arena / 1024:.0f} KiB")
    accuracy = t.figures.get("accuracy")
    if isinstance(accuracy, (int, float)):
        litert = f" (LiteRT {v.accuracy * 100:.1f}%)" if v.accuracy is not None else ""
        sample = (f" on {t.figures['images']} of {t.figures['sample_of']} photos"
                  if t.figures.get("sample_of") else "")  # fmt: skip
        said.append(f"TFLM accuracy {accuracy * 100:.1f}%{sample}{litert}")
    agreement = t.figures.get("agreement_litert")
    if isinstance(agreement, (int, float)):
        ci = t.figures.get("agreement_litert_ci")
        bounds = f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if isinstance(ci, list) and len(ci) == 2 else ""
        said.append(f"same top-1 as LiteRT {agreement * 100:.1f}%{bounds}")
    return "; ".join(said)


def targets(results: RunResults) -> str:
    """Where each variant can run (targets/): a matrix, a row per variant and a column per
    target, each cell a mark with the check's reasons on hover; every failure (and every
    verdict that could not be reached) listed under it in the check's own words."""
    rows = [v for v in results.rows(0) if v.targets]
    if not rows:
        return ""
    seen = {name for v in rows for name in v.targets}
    names = [n for n in TARGET_ORDER if n in seen]
    names += sorted(seen - set(names))
    head = '<th scope="col" tabindex="0">variant</th>' + "".join(
        f'<th scope="col" tabindex="0" class="mark-col">{breakable(n)}</th>' for n in names
    )
    body = []
    failures: dict[tuple[str, bool | None, tuple[str, ...]], list[str]] = {}
    for v in rows:
        cells = [f'<th scope="row" class="name" data-sort="{esc(v.variant)}">'
                 f"{breakable(v.variant)}</th>"]  # fmt: skip
        for name in names:
            t = v.targets.get(name)
            if t is None:
                cells.append(f'<td class="mark none" data-sort="3"{label_attr(name)} '
                             f'title="not checked">–</td>')  # fmt: skip
                continue
            css, mark, word = MARKS[t.ok]
            figures = _target_figures(v, name, t)
            why = "; ".join(t.reasons) or word
            title = f"{name}: {word}. {why}" + (f" ({figures})" if figures else "")
            extra = ""
            arena = t.figures.get("arena_bytes")
            if t.ok and isinstance(arena, (int, float)):
                extra = f'<span class="mark-fig">{arena / 1024:.0f} KiB</span>'
            sort = {True: 0, None: 1, False: 2}[t.ok]
            cells.append(f'<td class="mark {css}" data-sort="{sort}"{label_attr(name)} '
                         f'title="{esc(title)}"><span aria-hidden="true">{mark}</span>'
                         f'<span class="sr">{esc(word)}</span>{extra}</td>')  # fmt: skip
            if t.ok is not True:
                failures.setdefault((name, t.ok, tuple(t.reasons)), []).append(v.variant)
        body.append(f'<tr data-variant="{esc(v.variant)}">{"".join(cells)}</tr>')
    table = (f'<div class="scroll"><table class="data matrix sortable" id="targets-matrix">'
             f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    key = ('<p class="small matrix-key"><span class="mark pass">✓</span> runs '
           '<span class="mark fail">✗</span> does not run '
           '<span class="mark unknown">?</span> could not be judged '
           '<span class="mark none">–</span> not checked. Hover a mark for the reason; '
           "every failure is listed below.</p>")  # fmt: skip
    items = []
    for name in names:
        for (target, ok, reasons), variants in failures.items():
            if target != name:
                continue
            what = "could not be judged" if ok is None else "does not run"
            why = "".join(f"<li>{esc(r)}</li>" for r in reasons) or "<li>no reason given</li>"
            who = ", ".join(f'<span class="nowrap">{esc(n)}</span>' for n in variants)
            items.append(f'<li class="{"unknown" if ok is None else "fail"}"><b>{esc(name)}</b> '
                         f"{what}: {who}<ul>{why}</ul></li>")  # fmt: skip
    reasons = (f'<h3>Why not ({sum(len(v) for v in failures.values())})</h3>'
               f'<ul class="reasons">{"".join(items)}</ul>' if items else "")  # fmt: skip
    budgets = (results.config.get("targets") or {}) if isinstance(results.config, dict) else {}
    said = [f"{label} {esc(str(round(budgets[k] / 1024)))} KiB" for k, label in
            (("mcu_ram", "MCU RAM"), ("mcu_flash", "MCU flash")) if budgets.get(k)]  # fmt: skip
    intro = ("mcu: run on TF Lite Micro's reference kernels over the scored photos (minimum arena "
             "by bisection, shown under the mark); edgetpu: Coral's published requirements read "
             "from the file, not the compiler; gpu: LiteRT's model analyzer; integer_only: no "
             "float op or float tensor between ops."
             + (f" Budgets: {', '.join(said)}." if said else ""))  # fmt: skip
    return section("targets", "Targets", key + table + reasons, intro)
