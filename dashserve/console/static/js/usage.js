// Usage: requests and tokens by day, and by model, key or workspace, from the metering
// tables (the numbers of `dashserve usage`), with CSV export. Non-admin keys see their own.

import { api } from "./api.js";
import { barChart } from "./chart.js";
import { download, field, fmt, h } from "./dom.js";

const COLUMNS = ["num_requests", "num_errors", "input_tokens", "output_tokens", "cached_tokens",
  "reasoning_tokens", "total_tokens"];
const TITLES = ["Requests", "Errors", "Input", "Output", "Cached", "Reasoning", "Total"];

export function toCsv(rows, group) {
  const header = [...group, ...COLUMNS];
  const cell = (v) => {
    const text = v == null ? "" : String(v);
    return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [header, ...rows.map((r) => header.map((c) => r[c]))].map((r) => r.map(cell).join(",")).join("\n") + "\n";
}

// Every day from the first to today, zeros where nothing was used.
function fillDays(rows, since) {
  const byDay = new Map(rows.map((r) => [r.day, r]));
  const today = new Date().toISOString().slice(0, 10);
  const first = since || rows[0]?.day || today;
  const out = [];
  for (let d = new Date(`${first}T00:00:00Z`); d.toISOString().slice(0, 10) <= today;
    d.setUTCDate(d.getUTCDate() + 1)) {
    const day = d.toISOString().slice(0, 10);
    out.push(byDay.get(day) || Object.fromEntries([["day", day], ...COLUMNS.map((c) => [c, 0])]));
  }
  return out;
}

function sinceDay(spec) {
  const days = { "7d": 6, "30d": 29, "90d": 89 }[spec];
  if (days === undefined) return null;
  const d = new Date();
  d.setUTCDate(d.getUTCDate() - days);
  return d.toISOString().slice(0, 10);
}

export async function render(root, { admin }) {
  const base = admin ? "/admin/v1/usage" : "/admin/v1/usage/self";
  const range = h("select", { id: "usage-range" }, ["7d", "30d", "90d", "all"].map((v) =>
    h("option", { value: v, selected: v === "30d" }, v === "all" ? "all time" : `last ${v}`)));
  const groups = admin ? ["model", "key", "workspace"] : ["model"];
  const by = h("select", { id: "usage-by" }, groups.map((g) => h("option", { value: g }, `by ${g}`)));
  const error = h("p", { class: "error", role: "alert" });
  const totals = h("div", { class: "tiles", id: "usage-totals" });
  const daily = h("div", { class: "card", id: "usage-daily" });
  const grouped = h("div", { class: "card", id: "usage-grouped" });
  root.append(h("div", { class: "page-head" },
    h("h1", null, admin ? "Usage" : "My usage"),
    h("div", { class: "row" }, field("Range", range), field("Breakdown", by),
      h("button", { type: "button", id: "usage-refresh", onclick: load }, "Refresh"))),
  error, totals, daily, grouped);

  let current = { days: [], groups: [] };

  async function load() {
    error.textContent = "";
    const since = sinceDay(range.value);
    const query = since ? `&since=${since}` : "";
    let days;
    let parts;
    try {
      [days, parts] = await Promise.all([api(`${base}?by=day${query}`),
        api(`${base}?by=${by.value}${query}`)]);
    } catch (err) {
      error.textContent = String(err);
      return;
    }
    current = { days: days.data, groups: parts.data, by: by.value };
    const sum = (c) => days.data.reduce((acc, r) => acc + (r[c] || 0), 0);
    totals.replaceChildren(...COLUMNS.map((c, i) => h("div", { class: "tile", "data-name": c },
      h("span", { class: "label" }, TITLES[i] + (i > 1 ? " tokens" : "")),
      h("span", { class: "value" }, fmt(sum(c))))));
    const filled = fillDays(days.data, since);
    const inner = daily.clientWidth - 34; // the card's padding
    const half = inner >= 860 ? (inner - 14) / 2 : inner; // two charts side by side
    const labels = filled.map((r) => r.day.slice(5));
    daily.replaceChildren(
      h("div", { class: "row" }, h("h2", null, "By day"), h("span", { class: "grow" }),
        h("button", { type: "button", id: "usage-csv-day", onclick: () => download(
          `dashserve-usage-by-day.csv`, toCsv(days.data, ["day"])) }, "Export CSV")),
      h("div", { class: "charts" },
        barChart(labels, [{ name: "requests", values: filled.map((r) => r.num_requests) },
          { name: "errors", values: filled.map((r) => r.num_errors) }], { title: "Requests", width: half }),
        barChart(labels, ["input_tokens", "output_tokens", "cached_tokens"].map((c) => ({
          name: c.replace("_tokens", ""), values: filled.map((r) => r[c]) })), { title: "Tokens", width: half })));
    const groupCols = current.by === "key" ? ["key_prefix", "key_id"] : [current.by];
    const name = (r) => (current.by === "key" ? r.key_prefix : r[current.by]) ?? "–";
    grouped.replaceChildren(
      h("div", { class: "row" }, h("h2", null, `By ${current.by}`), h("span", { class: "grow" }),
        h("button", { type: "button", id: "usage-csv-group", onclick: () => download(
          `dashserve-usage-by-${current.by}.csv`, toCsv(current.groups, groupCols)) }, "Export CSV")),
      current.groups.length ? barChart(current.groups.map(name),
        [{ name: "input", values: current.groups.map((r) => r.input_tokens) },
          { name: "output", values: current.groups.map((r) => r.output_tokens) },
          { name: "cached", values: current.groups.map((r) => r.cached_tokens) }],
        { title: "Tokens", height: 200, width: grouped.clientWidth - 34 }) : h("p", { class: "muted" }, "No usage in this range."),
      h("div", { class: "table-wrap" }, h("table", { id: "usage-table" },
        h("thead", null, h("tr", null, h("th", null, current.by), TITLES.map((t) => h("th", { class: "num" }, t)))),
        h("tbody", null, current.groups.map((r) => h("tr", null, h("td", null, name(r)),
          COLUMNS.map((c) => h("td", { class: "num", "data-col": c }, fmt(r[c])))))))));
  }

  range.addEventListener("change", load);
  by.addEventListener("change", load);
  await load();
}
