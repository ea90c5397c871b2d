"""Inline SVG line charts: no JavaScript, no CDN, readable in any browser offline."""

from __future__ import annotations

from html import escape

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 460, 240, 56, 12, 28, 34
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea")


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2e}"
    return f"{v:.3g}"


def _bounds(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step") -> str:
    """An SVG chart of one or more (x, y) series; empty series are left out."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return f'<div class="chart empty">{escape(title)}: no data</div>'
    xs = [x for pts in series.values() for x, _ in pts]
    ys = [y for pts in series.values() for _, y in pts]
    (x0, x1), (y0, y1) = _bounds(xs), _bounds(ys)

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return H - PAD_B - (y - y0) / (y1 - y0) * (H - PAD_T - PAD_B)

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
             _axes(sx, sy, x0, x1, y0, y1, x_label)]
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        if len(pts) <= 30:
            parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>' for x, y in pts]
        parts.append(f'<text x="{PAD_L + 8 + 110 * i}" y="{PAD_T + 12}" fill="{color}" class="legend">'
                     f'&#9632; {escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _axes(sx, sy, x0, x1, y0, y1, x_label: str) -> str:
    out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" class="axis"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" class="axis"/>']
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{PAD_L - 4}" y="{sy(y) + 4:.1f}" text-anchor="end" class="tick">{_fmt(y)}</text>')
        out.append(f'<line x1="{PAD_L}" y1="{sy(y):.1f}" x2="{W - PAD_R}" y2="{sy(y):.1f}" class="grid"/>')
        x = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{sx(x):.1f}" y="{H - PAD_B + 14}" text-anchor="middle" class="tick">{_fmt(x)}</text>')
    out.append(f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 4}" text-anchor="middle" class="tick">'
               f'{escape(x_label)}</text>')
    return "".join(out)
