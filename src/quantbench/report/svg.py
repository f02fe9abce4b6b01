"""Small hand-drawn SVG charts: scatter with a Pareto front, line charts, grouped bars.

Inline SVG keeps the report one self-contained file that needs no network and no plotting
library at view time; styling comes from the page's CSS classes. Every label passes through
`esc`, since variant, class and run names come from users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = [
    "#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d",
    "#4f46e5", "#c026d3", "#0d9488", "#ea580c", "#475569", "#be123c", "#15803d", "#a16207",
]  # fmt: skip
CHAR_W = 6.3  # average glyph width at the charts' 11px font, for placing labels


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high - low < 1e-12:
        low, high = low - 1, high + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    ticks = []
    for exponent in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            value = m * 10**exponent
            if low <= value <= high:
                ticks.append(value)
    return ticks or [low, high]


def fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}"


@dataclass
class Axis:
    low: float
    high: float
    start: float  # pixel of `low`
    end: float  # pixel of `high`
    log: bool = False
    ticks: list[float] = field(default_factory=list)

    def __call__(self, value: float) -> float:
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        span = (high - low) or 1.0
        return self.start + (value - low) / span * (self.end - self.start)


def make_axis(values: list[float], start: float, end: float, pad: float = 0.08,
              log: bool = False) -> Axis:  # fmt: skip
    low, high = min(values), max(values)
    if log and low > 0 and high / low > 8:
        low, high = low / 1.25, high * 1.25
        return Axis(low, high, start, end, True, log_ticks(low, high))
    span = (high - low) or max(abs(high), 1.0) * 0.1
    ticks = nice_ticks(low - span * pad, high + span * pad)
    return Axis(ticks[0], ticks[-1], start, end, False, ticks)


@dataclass
class Point:
    label: str
    x: float
    y: float
    color: str
    y_low: float | None = None  # confidence interval on y, when measured
    y_high: float | None = None
    css: str = ""  # extra class: "rec" (recommended), "front"
    tooltip: str = ""


def _frame(width: int, height: int, title: str, css: str = "") -> list[str]:
    return [
        f'<svg class="chart-svg{css}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{esc(title)}" xmlns="http://www.w3.org/2000/svg">'
    ]


def _axes(parts: list[str], x: Axis, y: Axis, x_label: str, y_label: str, box) -> None:
    left, top, right, bottom = box
    for t in y.ticks:
        py = y(t)
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{py + 3.5:.1f}" '
                     f'text-anchor="end">{fmt_tick(t)}</text>')  # fmt: skip
    for t in x.ticks:
        px = x(t)
        parts.append(f'<line class="grid" y1="{top}" y2="{bottom}" x1="{px:.1f}" x2="{px:.1f}"/>')
        parts.append(f'<text class="tick" x="{px:.1f}" y="{bottom + 15}" '
                     f'text-anchor="middle">{fmt_tick(t)}</text>')  # fmt: skip
    parts.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{bottom}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{bottom}"/>')
    parts.append(f'<text class="axis-label" x="{(left + right) / 2:.1f}" y="{bottom + 33}" '
                 f'text-anchor="middle">{esc(x_label)}</text>')  # fmt: skip
    parts.append(f'<text class="axis-label" transform="translate(14 {(top + bottom) / 2:.1f}) '
                 f'rotate(-90)" text-anchor="middle">{esc(y_label)}</text>')  # fmt: skip


def _place_label(x: float, y: float, text: str, placed: list, box) -> tuple[float, float]:
    """Greedy label placement: the nearest spot, right or left of the point, that overlaps no
    earlier label or point; falls back to the plain right-hand spot."""
    width = len(text) * CHAR_W
    sides = [x + 9, x - 9 - width]
    if x + 9 + width > box[2]:
        sides.reverse()
    for dy in (0, -11, 11, -22, 22, -33, 33):
        for x0 in sides:
            if x0 < box[0] + 2 or x0 + width > box[2] + 14:
                continue
            spot = (x0, y + dy - 9, x0 + width, y + dy + 3)
            if not any(spot[0] < b[2] and b[0] < spot[2] and spot[1] < b[3] and b[1] < spot[3]
                       for b in placed):  # fmt: skip
                placed.append(spot)
                return x0, y + dy + 3.5
    placed.append((sides[0], y - 9, sides[0] + width, y + 3))
    return sides[0], y + 3.5


def scatter(points: list[Point], x_label: str, y_label: str, front: list[str] | None = None,
            log_x: bool = True, title: str = "") -> str:  # fmt: skip
    """Points with labels; `front` names the Pareto-optimal points, joined by a dashed line."""
    width, height = 620, 360
    box = (58, 16, width - 18, height - 46)
    if not points:
        return ""
    ys = [p.y for p in points] + [v for p in points for v in (p.y_low, p.y_high) if v is not None]
    x = make_axis([p.x for p in points], box[0], box[2], log=log_x and min(p.x for p in points) > 0)
    y = make_axis(ys, box[3], box[1])
    parts = _frame(width, height, title or f"{y_label} vs {x_label}")
    _axes(parts, x, y, x_label, y_label, box)
    on_front = [p for p in points if front and p.label in front]
    if len(on_front) > 1:
        path = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in sorted(on_front, key=lambda p: p.x))
        parts.append(f'<polyline class="front" points="{path}"/>')
    # Points are obstacles for labels; labels of Pareto points get the first pick.
    placed: list = [(x(p.x) - 7, y(p.y) - 7, x(p.x) + 7, y(p.y) + 7) for p in points]
    for p in sorted(points, key=lambda p: (p.label not in (front or []), -p.y)):
        px, py = x(p.x), y(p.y)
        if p.y_low is not None and p.y_high is not None:
            parts.append(f'<line class="ci" x1="{px:.1f}" x2="{px:.1f}" y1="{y(p.y_low):.1f}" '
                         f'y2="{y(p.y_high):.1f}" stroke="{p.color}"/>')  # fmt: skip
        css = (
            "pt"
            + (" on-front" if front and p.label in front else "")
            + (f" {p.css}" if p.css else "")
        )
        tip = esc(p.tooltip or f"{p.label}: {p.x:g}, {p.y:g}")
        if p.css == "rec":
            parts.append(f'<circle class="rec-ring" cx="{px:.1f}" cy="{py:.1f}" r="10.5"/>')
        parts.append(f'<circle class="{css}" cx="{px:.1f}" cy="{py:.1f}" r="6" '
                     f'fill="{p.color}"><title>{tip}</title></circle>')  # fmt: skip
        lx, ly = _place_label(px, py, p.label, placed, box)
        parts.append(f'<text class="pt-label" x="{lx:.1f}" y="{ly:.1f}">{esc(p.label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class Series:
    label: str
    color: str
    points: list[tuple[float, float]]
    dashed: bool = False


def lines(series: list[Series], x_label: str, y_label: str, title: str = "") -> str:
    series = [s for s in series if s.points]
    if not series:
        return ""
    width, height = 620, 320
    box = (58, 16, width - 18, height - 46)
    xs = [px for s in series for px, _ in s.points]
    ys = [py for s in series for _, py in s.points]
    x = make_axis(xs, box[0], box[2], pad=0.02)
    if len(set(xs)) == 1:  # one epoch: centre it rather than zoom into rounding noise
        x = Axis(xs[0] - 1, xs[0] + 1, box[0], box[2], False, [xs[0]])
    elif len(set(xs)) > 1:  # epochs: integer ticks that start at the first epoch
        step = max(1, math.ceil((max(xs) - min(xs)) / 8))
        x = Axis(min(xs), max(xs), box[0], box[2], False,
                 list(range(int(min(xs)), int(max(xs)) + 1, step)))  # fmt: skip
    y = make_axis(ys, box[3], box[1])
    parts = _frame(width, height, title or f"{y_label} by {x_label}")
    _axes(parts, x, y, x_label, y_label, box)
    for s in series:
        path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in s.points)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        parts.append(f'<polyline class="series" points="{path}" stroke="{s.color}"{dash}>'
                     f"<title>{esc(s.label)}</title></polyline>")  # fmt: skip
        for px, py in s.points:
            parts.append(f'<circle class="dot" cx="{x(px):.1f}" cy="{y(py):.1f}" r="3" '
                         f'fill="{s.color}"><title>{esc(s.label)}: {py:.3g} at {px:g}'
                         f"</title></circle>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def bars(rows: list[tuple[str, list[float | None]]], series: list[str], colors: list[str],
         unit: str, title: str = "") -> str:  # fmt: skip
    """Horizontal grouped bars: one group per row label, one bar per series (None: no bar)."""
    values = [v for _, vs in rows for v in vs if v is not None]
    if not values:
        return ""
    label_w = min(220, 16 + max(len(label) for label, _ in rows) * CHAR_W)
    width, bar_h, gap = 620, 14, 10
    group_h = bar_h * len(series) + gap
    height = 24 + group_h * len(rows) + 22
    axis = make_axis([0.0, *values], label_w, width - 70, pad=0.0)
    axis.low = 0.0
    parts = _frame(width, height, title or unit, " bars")
    top = 12
    for t in axis.ticks:
        px = axis(t)
        parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" '
                     f'y2="{height - 24}"/>')  # fmt: skip
        parts.append(f'<text class="tick" x="{px:.1f}" y="{height - 10}" '
                     f'text-anchor="middle">{fmt_tick(t)}</text>')  # fmt: skip
    for i, (label, vs) in enumerate(rows):
        y0 = top + i * group_h
        parts.append(f'<text class="bar-label" x="{label_w - 8}" y="{y0 + group_h / 2:.1f}" '
                     f'text-anchor="end">{esc(label)}</text>')  # fmt: skip
        for j, value in enumerate(vs):
            if value is None:
                continue
            yb = y0 + j * bar_h
            w = max(1.0, axis(value) - axis(0))
            tip = esc(f"{label} ({series[j]}): {value:.3g} {unit}")
            parts.append(f'<rect class="bar" x="{label_w}" y="{yb:.1f}" width="{w:.1f}" '
                         f'height="{bar_h - 2}" rx="2" fill="{colors[j % len(colors)]}">'
                         f"<title>{tip}</title></rect>")  # fmt: skip
            parts.append(f'<text class="bar-value" x="{label_w + w + 4:.1f}" '
                         f'y="{yb + bar_h - 4:.1f}">{value:.3g}</text>')  # fmt: skip
    parts.append(f'<line class="axis" x1="{label_w}" x2="{label_w}" y1="{top}" '
                 f'y2="{height - 24}"/>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
