// Inline SVG charts: grouped bars (usage by day or group) and lines (live series).
// Colours come from CSS classes (series-0, series-1, ...), so they follow the theme.

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, value);
  for (const child of children) el.append(child);
  return el;
}

// A round upper bound and tick step for values up to `max`.
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((v) => v >= raw);
  return { top: step * Math.ceil(max / step), step };
}

const short = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 });

function frame(width, height, top, step, pad, unit) {
  const g = s("g", { class: "axis" });
  const y = (v) => pad.top + (height - pad.top - pad.bottom) * (1 - v / top);
  for (let v = 0; v <= top + step / 2; v += step) {
    g.append(s("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    const label = s("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = short.format(v) + (unit || "");
    g.append(label);
  }
  return { g, y };
}

function legend(names) {
  const div = document.createElement("div");
  div.className = "legend";
  names.forEach((name, i) => {
    const item = document.createElement("span");
    item.className = `key series-${i}`;
    item.textContent = name;
    div.append(item);
  });
  return div;
}

// labels: x categories; series: [{name, values}] drawn as grouped bars.
// `width`: the pixels the chart gets on screen, so text keeps its size.
export function barChart(labels, series, { height = 220, title = "", width = 560 } = {}) {
  width = Math.max(320, Math.round(width));
  const pad = { top: 12, right: 10, bottom: 34, left: 56 };
  const values = series.flatMap((x) => x.values);
  const max = Math.max(0, ...values);
  let { top, step } = niceScale(max);
  if (step < 1 && values.every(Number.isInteger)) { // counts: whole-number ticks
    step = 1;
    top = Math.max(1, Math.ceil(max));
  }
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": title, preserveAspectRatio: "xMinYMin meet" });
  const { g, y } = frame(width, height, top, step, pad);
  svg.append(g);
  const slot = (width - pad.left - pad.right) / Math.max(1, labels.length);
  const bar = Math.max(2, Math.min(28, (slot - 6) / series.length));
  const every = Math.ceil(labels.length / Math.floor((width - pad.left) / 70));
  labels.forEach((label, i) => {
    const x0 = pad.left + i * slot + (slot - bar * series.length) / 2;
    series.forEach((one, j) => {
      const value = one.values[i] || 0;
      const rect = s("rect", { x: x0 + j * bar, y: y(value), width: Math.max(1, bar - 1),
        height: Math.max(0, y(0) - y(value)), class: `bar series-${j}`,
        "data-label": label, "data-series": one.name, "data-value": value });
      rect.append(s("title", {}, `${label} · ${one.name}: ${value.toLocaleString("en-US")}`));
      svg.append(rect);
    });
    if (i % every === 0) {
      const text = s("text", { x: pad.left + (i + 0.5) * slot, y: height - pad.bottom + 16,
        "text-anchor": "middle", class: "tick" });
      text.textContent = label;
      svg.append(text);
    }
  });
  const wrap = document.createElement("figure");
  wrap.className = "chart-box";
  if (title) {
    const caption = document.createElement("figcaption");
    caption.textContent = title;
    wrap.append(caption);
  }
  wrap.append(svg, legend(series.map((x) => x.name)));
  return wrap;
}

// points: [{t (seconds), v}] per series, the last `window` seconds drawn.
export function lineChart(series, { height = 150, window = 300, title = "", unit = "",
  width = 520 } = {}) {
  width = Math.max(320, Math.round(width));
  const pad = { top: 10, right: 10, bottom: 22, left: 56 };
  const now = Math.max(0, ...series.flatMap((x) => x.points.map((p) => p.t)));
  const max = Math.max(0, ...series.flatMap((x) => x.points.map((p) => p.v)));
  const { top, step } = niceScale(max);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
    "aria-label": title });
  const { g, y } = frame(width, height, top, step, pad, unit);
  svg.append(g);
  const x = (t) => pad.left + (width - pad.left - pad.right) * (1 - (now - t) / window);
  series.forEach((one, j) => {
    const pts = one.points.filter((p) => now - p.t <= window);
    if (!pts.length) return;
    const path = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`);
    svg.append(s("path", { d: path.join(""), class: `line series-${j}` }));
  });
  const label = s("text", { x: width - pad.right, y: height - 6, "text-anchor": "end", class: "tick" });
  label.textContent = `last ${Math.round(window / 60)} min`;
  svg.append(label);
  const wrap = document.createElement("figure");
  wrap.className = "chart-box";
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  wrap.append(caption, svg, legend(series.map((x) => x.name)));
  return wrap;
}
