// SVG line charts for training metrics: no library, redrawn whole on each update
// (a few thousand points redraw in well under a frame).

const NS = "http://www.w3.org/2000/svg";
const W = 560, H = 220, PAD = { l: 56, r: 12, t: 26, b: 28 };

function el(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function extent(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (!isFinite(lo) || !isFinite(hi)) return [0, 1];
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  return [lo, hi];
}

function ticks(lo, hi, count) {
  const step = (hi - lo) / count;
  return Array.from({ length: count + 1 }, (_, i) => lo + i * step);
}

export function fmt(v) {
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a >= 1e4 || a < 1e-3) return v.toExponential(1);
  if (a >= 100) return v.toFixed(0);
  return Number(v.toPrecision(3)).toString();
}

function axes(svg, x, y, xr, yr) {
  for (const v of ticks(yr[0], yr[1], 4)) {
    svg.append(el("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(el("text", { x: PAD.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick" }, fmt(v)));
  }
  for (const v of ticks(xr[0], xr[1], 5)) {
    svg.append(el("text", { x: x(v), y: H - 8, "text-anchor": "middle", class: "tick" }, fmt(Math.round(v))));
  }
}

function legend(svg, series) {
  let cx = PAD.l;
  for (const s of series) {
    svg.append(el("rect", { x: cx, y: 8, width: 10, height: 10, fill: s.color }));
    const label = el("text", { x: cx + 14, y: 17, class: "legend" }, s.name);
    svg.append(label);
    cx += 24 + s.name.length * 7;
  }
}

function line(svg, s, x, y) {
  const pts = s.points.map(([a, b]) => `${x(a).toFixed(1)},${y(b).toFixed(1)}`).join(" ");
  svg.append(el("polyline", { points: pts, fill: "none", stroke: s.color, "stroke-width": 2,
                              class: "series", "data-name": s.name }));
  if (s.points.length) {
    const [a, b] = s.points[s.points.length - 1];
    const dot = el("circle", { cx: x(a), cy: y(b), r: 3, fill: s.color });
    dot.append(el("title", {}, `${s.name} @ ${a}: ${fmt(b)}`));
    svg.append(dot);
  }
}

/** Draw `series` ([{name, color, points: [[x, y], ...]}]) into container `box`. */
export function lineChart(box, title, series) {
  const live = series.filter((s) => s.points.length);
  const all = live.flatMap((s) => s.points);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                          "aria-label": title, "data-points": String(all.length) });
  svg.append(el("text", { x: W - PAD.r, y: 17, "text-anchor": "end", class: "chart-title" }, title));
  if (!all.length) {
    svg.append(el("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no data yet"));
  } else {
    const xr = extent(all.map((p) => p[0])), yr = extent(all.map((p) => p[1]));
    const x = (v) => PAD.l + ((v - xr[0]) / (xr[1] - xr[0])) * (W - PAD.l - PAD.r);
    const y = (v) => H - PAD.b - ((v - yr[0]) / (yr[1] - yr[0])) * (H - PAD.t - PAD.b);
    axes(svg, x, y, xr, yr);
    live.forEach((s) => line(svg, s, x, y));
    legend(svg, live);
  }
  box.replaceChildren(svg);
  return svg;
}
