"""Relevant stories per day and dyad as an inline SVG line chart (no script, no CDN)."""

from __future__ import annotations

from markupsafe import Markup, escape

from pipeline.monitor import DailyCounts

# Colour-blind-safe (Okabe–Ito) and distinguishable by dash pattern as well.
STYLE = {
    "US-PK": ("#0072B2", ""),
    "US-IN": ("#E69F00", "6 3"),
    "IN-PK": ("#009E73", "2 3"),
}


def _nice_max(n: int) -> int:
    for step in (4, 8, 12, 20, 40, 80, 100, 200, 400, 1000):
        if n <= step:
            return step
    return ((n // 1000) + 1) * 1000


def daily_chart_svg(data: DailyCounts, *, width: int = 720, height: int = 220) -> Markup:
    """An accessible SVG: a title, a description, one polyline per dyad, a legend."""
    left, right, top, bottom = 36, 110, 12, 28
    pw, ph = width - left - right, height - top - bottom
    n = len(data.days)
    ymax = _nice_max(max([max(v) for v in data.counts.values() if v] + [1]))

    def x(i: int) -> float:
        return left + (pw * i / (n - 1) if n > 1 else pw / 2)

    def y(v: int) -> float:
        return top + ph - ph * v / ymax

    first = data.days[0].isoformat() if data.days else ""
    last = data.days[-1].isoformat() if data.days else ""
    desc = "; ".join(f"{d}: {sum(v)} stories" for d, v in data.counts.items())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="chart-title chart-desc">',
        f'<title id="chart-title">Relevant stories per day, {escape(first)} to {escape(last)}</title>',
        f'<desc id="chart-desc">{escape(desc)}</desc>',
    ]
    for tick in range(5):
        v = ymax * tick // 4
        yy = y(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="axis">{v}</text>')
    label_every = max(1, n // 7)
    for i, d in enumerate(data.days):
        if i % label_every == 0 or i == n - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{height - 8}" text-anchor="middle" class="axis">{d.strftime("%d %b")}</text>'
            )
    for row, (dyad, values) in enumerate(data.counts.items()):
        colour, dash = STYLE.get(dyad, ("#777777", "1 2"))
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}>'
            f"<title>{escape(dyad)}</title></polyline>"
        )
        for i, v in enumerate(values):
            if v:
                parts.append(
                    f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}">'
                    f"<title>{escape(dyad)} {data.days[i].isoformat()}: {v}</title></circle>"
                )
        ly = top + 14 + row * 20
        parts.append(
            f'<line x1="{left + pw + 12}" x2="{left + pw + 36}" y1="{ly - 4}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        parts.append(f'<text x="{left + pw + 42}" y="{ly}" class="legend">{escape(dyad)} ({sum(values)})</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
