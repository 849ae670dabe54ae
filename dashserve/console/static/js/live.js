// Live: the engine's state from the server's own /metrics, refreshed every few seconds.

import { lineChart } from "./chart.js";
import { fmt, fmtMs, h } from "./dom.js";

const REFRESH_MS = 2000;
const WINDOW_S = 60; // rates and latency quantiles over the last minute

export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    const value = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    samples.push({ name: m[1], labels, value });
  }
  return samples;
}

export function total(samples, name) {
  const found = samples.filter((x) => x.name === name);
  return found.length ? found.reduce((acc, x) => acc + x.value, 0) : null;
}

// Cumulative bucket counts by upper bound, summed over every label set.
export function buckets(samples, name) {
  const counts = new Map();
  for (const x of samples) {
    if (x.name !== `${name}_bucket`) continue;
    const le = x.labels.le === "+Inf" ? Infinity : Number(x.labels.le);
    counts.set(le, (counts.get(le) || 0) + x.value);
  }
  return [...counts].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

// Prometheus' histogram_quantile: linear inside the bucket holding the q-th observation.
export function quantile(q, cumulative) {
  const n = cumulative.length ? cumulative[cumulative.length - 1].count : 0;
  if (!n) return null;
  const rank = q * n;
  let lower = 0;
  let below = 0;
  for (const { le, count } of cumulative) {
    if (count >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(1e-9, count - below));
    }
    lower = le;
    below = count;
  }
  return lower;
}

function minus(now, then) {
  return now.map((b, i) => ({ le: b.le, count: b.count - (then[i]?.count || 0) }));
}

export async function render(root) {
  const tiles = h("div", { class: "tiles", id: "live-tiles" });
  const charts = h("div", { class: "charts", id: "live-charts" });
  const status = h("p", { class: "muted", id: "live-status" }, "Reading /metrics…");
  root.append(h("div", { class: "page-head" }, h("h1", null, "Live"), status), tiles, charts);
  const history = []; // {t, samples}, the last 5 minutes
  let points = [];
  let timer = null;

  function tile(name, label, value, hint) {
    return h("div", { class: "tile", "data-name": name }, h("span", { class: "label" }, label),
      h("span", { class: "value" }, value), hint ? h("small", null, hint) : null);
  }

  async function refresh() {
    let text;
    try {
      const response = await fetch("/metrics", { cache: "no-store" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      text = await response.text();
    } catch (err) {
      status.textContent = `Metrics unavailable: ${err.message}`;
      return;
    }
    const t = performance.now() / 1000;
    const samples = parseMetrics(text);
    history.push({ t, samples });
    while (history.length > 2 && t - history[1].t > 300) history.shift();
    const base = history.find((x) => t - x.t <= WINDOW_S + 1) || history[0];
    const dt = t - base.t;
    const rate = (name) => (dt > 0 ? (total(samples, name) - total(base.samples, name)) / dt : null);
    const ttftName = "dashserve_time_to_first_token_seconds";
    const recent = minus(buckets(samples, ttftName), buckets(base.samples, ttftName));
    const windowed = recent.length && recent[recent.length - 1].count > 0;
    const ttft = windowed ? recent : buckets(samples, ttftName);
    const q = (p) => { const v = quantile(p, ttft); return v == null ? null : v * 1000; };
    const kv = total(samples, "dashserve_kv_cache_usage_ratio");
    const outRate = rate("dashserve_output_tokens_total");
    const inRate = rate("dashserve_input_tokens_total");
    const point = { t, out: outRate || 0, inp: inRate || 0, kv: (kv || 0) * 100,
      running: total(samples, "dashserve_running_sequences") || 0,
      waiting: total(samples, "dashserve_queue_depth") || 0 };
    points = [...points, point].filter((p) => t - p.t <= 300);
    const ready = kv !== null;
    tiles.replaceChildren(
      tile("running", "Running", ready ? fmt(point.running) : "–", "sequences"),
      tile("waiting", "Waiting", ready ? fmt(point.waiting) : "–", "requests queued"),
      tile("kv", "KV cache", ready ? `${point.kv.toFixed(1)} %` : "–",
        `${fmt(total(samples, "dashserve_kv_cache_blocks"))} blocks`),
      tile("output-rate", "Output tokens/s", outRate == null ? "–" : outRate.toFixed(1), "last minute"),
      tile("input-rate", "Input tokens/s", inRate == null ? "–" : inRate.toFixed(1), "last minute"),
      tile("ttft-p50", "TTFT p50", fmtMs(q(0.5)), windowed ? "last minute" : "since start"),
      tile("ttft-p99", "TTFT p99", fmtMs(q(0.99)), windowed ? "last minute" : "since start"),
      tile("requests", "Requests", fmt(total(samples, "dashserve_requests_total")), "since start"));
    const pts = points;
    const across = charts.clientWidth >= 1300 ? 3 : charts.clientWidth >= 860 ? 2 : 1;
    const width = (charts.clientWidth - 14 * (across - 1)) / across - 26;
    charts.replaceChildren(
      lineChart([{ name: "output", points: pts.map((p) => ({ t: p.t, v: p.out })) },
        { name: "input", points: pts.map((p) => ({ t: p.t, v: p.inp })) }], { title: "Tokens/s", width }),
      lineChart([{ name: "running", points: pts.map((p) => ({ t: p.t, v: p.running })) },
        { name: "waiting", points: pts.map((p) => ({ t: p.t, v: p.waiting })) }], { title: "Sequences", width }),
      lineChart([{ name: "KV cache used", points: pts.map((p) => ({ t: p.t, v: p.kv })) }],
        { title: "KV cache", unit: "%", width }));
    status.textContent = ready ? `Updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`
      : "The models are still loading.";
  }

  await refresh();
  timer = setInterval(refresh, REFRESH_MS);
  return () => clearInterval(timer);
}
