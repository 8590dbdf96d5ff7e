"""Inline SVG charts for the HTML report: no JavaScript, no network, readable in any browser or e-mail."""

from __future__ import annotations

import math
from html import escape

WIDTH, HEIGHT = 640, 320
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 70
COLORS = ["#4269d0", "#efb118", "#ff725c", "#6cc5b0", "#3ca951", "#ff8ab7", "#a463f2", "#97bbf5"]


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _frame(kind: str, title: str, y_label: str, body: list[str], x_label: str = "") -> str:
    return (
        f'<svg class="plot" data-plot="{kind}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{escape(title)}">'
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" class="title">{escape(title)}</text>'
        f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" class="axis"/>'
        f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(y_label)}</text>"
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 8}" text-anchor="middle">{escape(x_label)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _y_ticks(y_max: float, to_y) -> list[str]:
    out = []
    for i in range(5):
        value = y_max * i / 4
        y = to_y(value)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(value)}</text>')
    return out


def bar_chart(kind: str, title: str, y_label: str, categories: list[str], series: dict[str, list[float]]) -> str:
    """Grouped bars: one group per category, one bar per series."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    y_max = max([v for values in series.values() for v in values] + [0]) or 1.0
    y_max *= 1.1

    def to_y(v: float) -> float:
        return TOP + plot_h * (1 - v / y_max)

    body = _y_ticks(y_max, to_y)
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for c, category in enumerate(categories):
        x0 = LEFT + c * group_w + group_w * 0.1
        for s, (name, values) in enumerate(series.items()):
            value = values[c]
            y = to_y(value)
            body.append(
                f'<rect class="bar" x="{x0 + s * bar_w:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" '
                f'height="{HEIGHT - BOTTOM - y:.1f}" fill="{COLORS[s % len(COLORS)]}">'
                f"<title>{escape(category)} {escape(name)}: {_fmt(value)}</title></rect>"
            )
        label_x = LEFT + (c + 0.5) * group_w
        body.append(
            f'<text x="{label_x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" class="tick">'
            f"{escape(_short(category))}</text>"
        )
    body.extend(_legend(list(series)))
    return _frame(kind, title, y_label, body)


def scatter(kind: str, title: str, x_label: str, y_label: str, points: list[dict]) -> str:
    """Points {label, x, y, low, high, series}; y in [0, 1] with its CI as an error bar. The x axis is
    logarithmic when the costs span more than two orders of magnitude."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = [p["x"] for p in points]
    positive = [x for x in xs if x > 0]
    log = bool(positive) and len(positive) == len(xs) and max(positive) / min(positive) > 100
    if log:
        lo, hi = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
        hi = hi if hi > lo else lo + 1

        def to_x(v: float) -> float:
            return LEFT + plot_w * (math.log10(v) - lo) / (hi - lo)

        x_ticks = [10.0**e for e in range(lo, hi + 1)]
    else:
        x_max = (max(xs) if xs else 1.0) * 1.15 or 1.0

        def to_x(v: float) -> float:
            return LEFT + plot_w * v / x_max

        x_ticks = [x_max * i / 4 for i in range(5)]

    def to_y(v: float) -> float:
        return TOP + plot_h * (1 - v)

    body = _y_ticks(1.0, to_y)
    for t in x_ticks:
        x = to_x(t)
        body.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle" class="tick">${_fmt(t)}</text>')
    series = sorted({p["series"] for p in points})
    for p in points:
        color = COLORS[series.index(p["series"]) % len(COLORS)]
        x, y = to_x(p["x"]), to_y(p["y"])
        body.append(
            f'<line class="ci" x1="{x:.1f}" x2="{x:.1f}" y1="{to_y(p["low"]):.1f}" y2="{to_y(p["high"]):.1f}" '
            f'stroke="{color}"/>'
        )
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{color}">'
            f"<title>{escape(p['label'])} ({escape(p['series'])}): quality {p['y']:.3f}, "
            f"${p['x']:.4g} per 1K requests</title></circle>"
        )
        body.append(f'<text x="{x + 8:.1f}" y="{y - 8:.1f}" class="label">{escape(_short(p["label"]))}</text>')
    body.extend(_legend(series))
    return _frame(kind, title, y_label, body, x_label + (" (log scale)" if log else ""))


def _legend(names: list[str]) -> list[str]:
    out = []
    for i, name in enumerate(names):
        x = LEFT + 10 + i * 130
        out.append(f'<rect x="{x}" y="{HEIGHT - 36}" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>')
        out.append(f'<text x="{x + 14}" y="{HEIGHT - 27}" class="legend">{escape(name)}</text>')
    return out


def _short(label: str, limit: int = 22) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
