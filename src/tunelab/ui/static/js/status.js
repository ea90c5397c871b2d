// Serving status, read from /metrics (Prometheus text) and /v1/models: loaded models and
// adapters, requests running and waiting, tokens/s (from the generated-tokens counter),
// KV-cache use, latencies.

import { api, request } from "./api.js";
import { fmt } from "./chart.js";
import { h, poll } from "./dom.js";

let ui = {}, gen = 0, last = null;

/** Prometheus text -> {name: [{labels, value}]} */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[3] || "").matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    (out[m[1]] ||= []).push({ labels, value: Number(m[4]) });
  }
  return out;
}

const one = (metrics, name) => (metrics[name] || []).reduce((a, s) => a + s.value, 0);

function mean(metrics, base) {
  const n = one(metrics, `${base}_count`);
  return n ? one(metrics, `${base}_sum`) / n : null;
}

function card(label, value, id) {
  return h("div.card", { id }, h("div.value", {}, value), h("div.label", {}, label));
}

async function refresh() {
  const text = await (await request("/metrics")).text();
  const m = parseMetrics(text);
  const now = performance.now(), generated = one(m, "tunelab_generation_tokens_total");
  const rate = last && now > last.t ? ((generated - last.generated) * 1000) / (now - last.t) : 0;
  last = { t: now, generated };
  const ms = (v) => (v == null ? "—" : `${fmt(v * 1000)} ms`);
  ui.cards.replaceChildren(
    card("requests running", String(one(m, "tunelab_num_requests_running")), "stat-running"),
    card("requests waiting", String(one(m, "tunelab_num_requests_waiting")), "stat-waiting"),
    card("tokens/s (now)", fmt(Math.max(0, rate)), "stat-tps"),
    card("KV-cache use", `${(100 * one(m, "tunelab_kv_cache_usage_perc")).toFixed(1)}%`, "stat-kv"),
    card("time to first token (mean)", ms(mean(m, "tunelab_time_to_first_token_seconds"))),
    card("inter-token latency (mean)", ms(mean(m, "tunelab_inter_token_latency_seconds"))),
    card("tokens generated", fmt(generated)), card("prompt tokens", fmt(one(m, "tunelab_prompt_tokens_total"))));
  ui.raw.textContent = text.split("\n").filter((l) => l && !l.startsWith("#") && !l.includes("_bucket")).join("\n");
}

async function refreshModels() {
  const { data } = await api("/v1/models");
  ui.models.replaceChildren(h("table#served-models", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Kind"), h("th", {}, "Base"))),
    h("tbody", {}, ...data.map((d) => h("tr", {}, h("td", {}, d.id), h("td", {}, d.parent ? "adapter" : "base model"), h("td", {}, d.parent || ""))))));
}

export function build(root) {
  ui.cards = h("div.cards#status-cards");
  ui.models = h("div");
  ui.raw = h("pre.code.log#metrics-raw");
  root.append(h("div.panel", {}, h("h2", {}, "Serving status"), ui.cards),
    h("div.two", {}, h("div.panel", {}, h("h3", {}, "Loaded models and adapters"), ui.models),
      h("div.panel", {}, h("h3", {}, "Raw metrics"), ui.raw)));
}

export function show() {
  const mine = ++gen;
  last = null;
  refreshModels().catch((err) => ui.models.replaceChildren(h("p.form-error", {}, err.message)));
  poll(refresh, 2000, () => gen === mine);
}

export function hide() { gen += 1; }
