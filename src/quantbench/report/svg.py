"""Small hand-drawn SVG charts: scatter with a Pareto front, line charts, grouped bars.

Inline SVG keeps the report one self-contained file that needs no network and no plotting
library at view time; styling comes from the page's CSS classes. Every label passes through
`esc`, since variant, class and run names come from users.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape

PALETTE = [
    "#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d",
    "#4f46e5", "#c026d3", "#0d9488", "#ea580c", "#475569", "#be123c", "#15803d", "#a16207",
]  # fmt: skip
CHAR_W = 6.3  # average glyph width at the charts' 11px font, for the bar labels' column


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


# Advance widths of ASCII 32..126 in DejaVu Sans, per 1000 units of font size: what Chromium
# draws with on Linux and one of the widest common sans faces, so a box measured with it holds
# the label in narrower faces too (Arial, Roboto, Segoe UI, San Francisco).
_ADVANCE = [
    318, 401, 460, 838, 636, 950, 780, 275, 390, 390, 500, 838, 318, 361, 318, 337, 636, 636,
    636, 636, 636, 636, 636, 636, 636, 636, 337, 337, 838, 838, 838, 531, 1000, 684, 686, 698,
    770, 632, 575, 775, 752, 295, 295, 656, 557, 863, 748, 787, 603, 787, 695, 635, 611, 732,
    684, 989, 685, 611, 685, 390, 337, 390, 838, 500, 500, 613, 635, 550, 635, 615, 352, 635,
    634, 278, 278, 579, 278, 974, 634, 612, 635, 635, 411, 521, 392, 634, 592, 818, 592, 592,
    525, 636, 337, 636, 838,
]  # fmt: skip
LABEL_SIZE = 11.0  # px: the charts' label font (.pt-label in style.css)
ASCENT, DESCENT = 0.95, 0.30  # of the font size, above and below the baseline (DejaVu: .93, .24)
LABEL_GAP = 1.5  # px kept clear between two labels, and between a label and a point
LABEL_MAX = 0.45  # of the plot's width: longer labels are shortened in the middle


def text_width(text: str, size: float = LABEL_SIZE) -> float:
    """Estimated advance width of `text` in px at `size`: per-character widths for ASCII, a
    full em for wide (CJK) characters, 0.7 em for any other character."""
    total = 0.0
    for ch in text:
        code = ord(ch)
        if 32 <= code < 127:
            total += _ADVANCE[code - 32]
        elif unicodedata.east_asian_width(ch) in ("W", "F"):
            total += 1000
        elif unicodedata.combining(ch):
            continue
        else:
            total += 700
    return total * size / 1000


def shorten(text: str, max_width: float, size: float = LABEL_SIZE) -> str:
    """`text`, or its two ends joined by an ellipsis, no wider than `max_width`."""
    if text_width(text, size) <= max_width:
        return text
    head, tail = text[: len(text) // 2], text[len(text) // 2 :]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        candidate = f"{head}…{tail}"
        if text_width(candidate, size) <= max_width:
            return candidate
    return "…"


Box = tuple[float, float, float, float]  # x0, y0, x1, y1
Segment = tuple[float, float, float, float]  # x1, y1, x2, y2


def overlap(a: Box, b: Box) -> bool:
    """Do two boxes share any area (touching edges do not count)?"""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _crosses(seg: Segment, box: Box) -> bool:
    """Does the segment pass through the box's interior? (Liang-Barsky clipping.)"""
    x0, y0, x1, y1 = seg
    if max(x0, x1) <= box[0] or min(x0, x1) >= box[2]:
        return False
    if max(y0, y1) <= box[1] or min(y0, y1) >= box[3]:
        return False
    dx, dy = x1 - x0, y1 - y0
    low, high = 0.0, 1.0
    for p, q in ((-dx, x0 - box[0]), (dx, box[2] - x0), (-dy, y0 - box[1]), (dy, box[3] - y0)):
        if abs(p) < 1e-12:
            if q <= 0:
                return False
            continue
        t = q / p
        if p < 0:
            low = max(low, t)
        else:
            high = min(high, t)
        if low >= high:
            return False
    return high - low > 1e-6


def _segments_cross(a: Segment, b: Segment) -> bool:
    """Do two segments cross (properly: sharing an end point does not count)?"""

    def side(p, q, r) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    p1, p2, q1, q2 = a[:2], a[2:], b[:2], b[2:]
    d1, d2 = side(q1, q2, p1), side(q1, q2, p2)
    d3, d4 = side(p1, p2, q1), side(p1, p2, q2)
    return d1 * d2 < 0 and d3 * d4 < 0


class _Index:
    """Boxes bucketed by the 32 px squares they cover, to find the ones near a box fast."""

    CELL = 32.0

    def __init__(self) -> None:
        self.boxes: list[tuple[Box, int]] = []
        self.cells: dict[tuple[int, int], list[int]] = {}

    def _keys(self, b: Box):
        c = self.CELL
        for i in range(math.floor(b[0] / c), math.floor(b[2] / c) + 1):
            for j in range(math.floor(b[1] / c), math.floor(b[3] / c) + 1):
                yield i, j

    def add(self, b: Box, tag: int) -> None:
        self.boxes.append((b, tag))
        for key in self._keys(b):
            self.cells.setdefault(key, []).append(len(self.boxes) - 1)

    def near(self, b: Box) -> list[tuple[Box, int]]:
        found = sorted({k for key in self._keys(b) for k in self.cells.get(key, ())})
        return [self.boxes[k] for k in found]


# What a leader line's crossings cost, in px of extra distance, when choosing a label's spot.
CROSS_LABEL, CROSS_POINT, CROSS_LEADER = 250.0, 10.0, 40.0


@dataclass
class Label:
    """A placed label: `x`, `y` are the text's start and baseline (text-anchor start); `box`
    is the space it is given; `leader` a line from its point to it, when it sits apart."""

    text: str
    x: float
    y: float
    box: Box
    leader: Segment | None = None
    fits: bool = True  # False: no free spot was left, it overlaps as little as could be


def _box_at(left: float, mid: float, width: float, size: float) -> Box:
    """A label box `width` wide starting at `left`, centred vertically on `mid`."""
    half = (ASCENT + DESCENT) * size / 2
    return (left, mid - half, left + width, mid + half)


def _leader(px: float, py: float, radius: float, box: Box) -> Segment:
    """From the point's rim to the label: to the middle of its near side when it sits to the
    right or left of the point, else to the nearest point of its top or bottom edge."""
    mid = (box[1] + box[3]) / 2
    if box[0] >= px:
        nx, ny = box[0] - 1.5, mid
    elif box[2] <= px:
        nx, ny = box[2] + 1.5, mid
    else:
        nx = min(max(px, box[0]), box[2])
        ny = box[1] - 1.5 if box[1] > py else box[3] + 1.5
    dist = math.hypot(nx - px, ny - py) or 1.0
    ux, uy = (nx - px) / dist, (ny - py) / dist
    return (px + ux * (radius + 1), py + uy * (radius + 1), nx, ny)


@lru_cache(maxsize=8)
def _candidates(step: float, reach_x: float,
                reach_y: float) -> tuple[tuple[float, float, float, int], ...]:  # fmt: skip
    """(distance, dx, dy, side) offsets of a label from its spot beside the point, nearest
    first: side 1 is to the right (the label starts dx past the point), -1 to the left (it
    ends dx before). dy steps by `step` (half a label's height), dx by twice that and is at
    least one step, so that a leader line leaves its point sideways."""
    out = []
    for i in range(int(reach_x / (2 * step)) + 1):
        for j in range(-int(reach_y / step), int(reach_y / step) + 1):
            for side in (1, -1):
                dx, dy = step + 2 * i * step, j * step
                out.append((math.hypot(dx * 1.4, dy) + (0.5 if side < 0 else 0.0), dx, dy, side))
    return tuple(sorted(out))


def place_labels(anchors: list[tuple], bounds: Box, radius: float = 6.0,
                 obstacles: list[Box] = (), size: float = LABEL_SIZE) -> list[Label]:  # fmt: skip
    """Labels for points, none over another label or any point, all inside `bounds`.

    `anchors` are (x, y, text) or (x, y, text, radius), in priority order: earlier ones get the
    better spots; a point is a disc of `radius` (its own, or the default). Each label
    first tries the spots touching its point (right, left, the four corners, above, below);
    when all are taken it moves outward to the nearest free spot and gets a leader line back
    to its point; a spot whose leader would cross labels, points or other leaders counts as
    farther (CROSS_LABEL, CROSS_POINT, CROSS_LEADER px each). Deterministic: the same anchors
    give the same labels. A label with no free spot anywhere overlaps as little as it can
    (`fits` False)."""
    half = (ASCENT + DESCENT) * size / 2
    anchors = [(a[0], a[1], a[2], a[3] if len(a) > 3 else radius) for a in anchors]
    points = [(x - r - LABEL_GAP, y - r - LABEL_GAP, x + r + LABEL_GAP, y + r + LABEL_GAP)
              for x, y, _, r in anchors]  # fmt: skip
    blocked: list[Box] = points + list(obstacles)
    placed: list[Box] = []
    leaders: list[Segment] = []
    offsets = _candidates(half, bounds[2] - bounds[0], bounds[3] - bounds[1])
    taken = _Index()  # every point (tag: its index) and every placed label (tag: -1)
    for k, b in enumerate(blocked):
        taken.add(b, k)
    out = []

    def inside(b: Box) -> bool:
        return b[0] >= bounds[0] and b[1] >= bounds[1] and b[2] <= bounds[2] and b[3] <= bounds[3]

    def free(b: Box, own: int) -> bool:
        padded = (b[0] - LABEL_GAP, b[1] - LABEL_GAP, b[2] + LABEL_GAP, b[3] + LABEL_GAP)
        for box, tag in taken.near(padded):
            if (tag == -1 and overlap(padded, box)) or (tag not in (-1, own) and overlap(b, box)):
                return False
        return True

    for index, (px, py, text, radius) in enumerate(anchors):
        gap = radius + 3.0
        width = text_width(text, size) + 1.0
        own = (px - radius, py - radius, px + radius, py + radius)
        beside = [
            _box_at(px + gap, py, width, size), _box_at(px - gap - width, py, width, size),
            _box_at(px + radius - 1, py - radius - half - 1, width, size),
            _box_at(px + radius - 1, py + radius + half + 1, width, size),
            _box_at(px - radius + 1 - width, py - radius - half - 1, width, size),
            _box_at(px - radius + 1 - width, py + radius + half + 1, width, size),
            _box_at(px - width / 2, py - gap - half, width, size),
            _box_at(px - width / 2, py + gap + half, width, size),
        ]  # fmt: skip
        chosen: Box | None = next((b for b in beside if inside(b) and free(b, index)), None)
        line = None
        if chosen is None:
            # Nearest free spot, a leader's crossings counted against it: branch and bound
            # over the spots in order of distance, stopping once none left can do better.
            best = math.inf
            dy_low, dy_high = bounds[1] + half - py, bounds[3] - half - py
            right_max = bounds[2] - width - px - gap  # the most dx to the right that fits
            left_max = px - gap - width - bounds[0]  # and to the left
            for distance, dx, dy, side in offsets:
                if distance >= best:
                    break
                if not dy_low <= dy <= dy_high or dx > (right_max if side > 0 else left_max):
                    continue
                left = px + gap + dx if side > 0 else px - gap - dx - width
                b = _box_at(left, py + dy, width, size)
                if not inside(b) or not free(b, index):
                    continue
                seg = _leader(px, py, radius, b)
                score = distance
                for cost, crossed in (
                    (CROSS_LABEL, (_crosses(seg, o) for o in placed)),
                    (CROSS_POINT, (_crosses(seg, o) for k, o in enumerate(points) if k != index)),
                    (CROSS_LEADER, (_crosses(s, b) or _segments_cross(s, seg) for s in leaders)),
                ):  # fmt: skip
                    for hit in crossed:
                        score += cost * hit
                        if score >= best:
                            break
                    if score >= best:
                        break
                else:
                    best, chosen, line = score, b, seg
        fits = chosen is not None
        if chosen is None:  # the chart is full: the spot beside the point that overlaps least

            def covered(b: Box) -> float:
                return sum(max(0.0, min(b[2], o[2]) - max(b[0], o[0]))
                           * max(0.0, min(b[3], o[3]) - max(b[1], o[1]))
                           for o in placed + blocked)  # fmt: skip

            chosen = min([b for b in beside if inside(b)] or beside, key=covered)
        if line is None and not overlap(chosen, (own[0] - gap, own[1] - gap, own[2] + gap,
                                                 own[3] + gap)):  # fmt: skip
            line = _leader(px, py, radius, chosen)
        placed.append(chosen)
        taken.add(chosen, -1)
        if line is not None:
            leaders.append(line)
        baseline = (chosen[1] + chosen[3]) / 2 + (ASCENT - DESCENT) * size / 2
        out.append(Label(text, chosen[0], baseline, chosen, line, fits))
    return out


def scatter(points: list[Point], x_label: str, y_label: str, front: list[str] | None = None,
            log_x: bool = True, title: str = "") -> str:  # fmt: skip
    """Points with labels; `front` names the Pareto-optimal points, joined by a dashed line.
    Past 16 points the chart grows taller, to leave its labels room."""
    width, height = 620, 360 + min(240, 10 * max(0, len(points) - 16))
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
    # Labels of the recommendation, then of Pareto points, get the first pick; then top down.
    order = sorted(points, key=lambda p: (p.css != "rec", p.label not in (front or []), -p.y,
                                          p.x, p.label))  # fmt: skip
    limit = LABEL_MAX * (box[2] - box[0])
    labels = place_labels([(x(p.x), y(p.y), shorten(p.label, limit),
                            11.5 if p.css == "rec" else 6.0) for p in order],
                          (box[0] + 2, 2, width - 2, box[3] - 2))  # fmt: skip
    for p, label in zip(order, labels):
        if p.y_low is not None and p.y_high is not None:
            px = x(p.x)
            parts.append(f'<line class="ci" x1="{px:.1f}" x2="{px:.1f}" y1="{y(p.y_low):.1f}" '
                         f'y2="{y(p.y_high):.1f}" stroke="{esc(p.color)}"/>')  # fmt: skip
    for p, label in zip(order, labels):
        if label.leader is not None:
            x1, y1, x2, y2 = label.leader
            parts.append(f'<line class="leader" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" '
                         f'y2="{y2:.1f}" stroke="{esc(p.color)}"/>')  # fmt: skip
    for p in order:
        px, py = x(p.x), y(p.y)
        css = (
            "pt"
            + (" on-front" if front and p.label in front else "")
            + (f" {p.css}" if p.css else "")
        )
        tip = esc(p.tooltip or f"{p.label}: {p.x:g}, {p.y:g}")
        if p.css == "rec":
            parts.append(f'<circle class="rec-ring" cx="{px:.1f}" cy="{py:.1f}" r="10.5"/>')
        parts.append(f'<circle class="{css}" cx="{px:.1f}" cy="{py:.1f}" r="6" '
                     f'fill="{esc(p.color)}"><title>{tip}</title></circle>')  # fmt: skip
    for p, label in zip(order, labels):
        full = f"<title>{esc(p.label)}</title>" if label.text != p.label else ""
        parts.append(f'<text class="pt-label" x="{label.x:.1f}" y="{label.y:.1f}">'
                     f"{esc(label.text)}{full}</text>")  # fmt: skip
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
