// Models: the store list (size, architecture, template), pull from a hub id or a GGUF
// path with progress, remove, and export to a GGUF quant or Ollama with a download link.

import { api, downloadUrl } from "./api.js";
import { badge, bytes, field, h, poll, toast } from "./dom.js";

let ui = {}, gen = 0;
const QUANTS = ["f16", "bf16", "q8_0", "q4_0", "q4_k_s", "q4_k_m", "q5_k_m", "q6_k"];

async function refreshModels() {
  const { models } = await api("/ui/api/models");
  const rows = models.map((m) => h("tr", {},
    h("td", {}, m.name), h("td", {}, m.architecture || ""), h("td", {}, m.params ? `${(m.params / 1e6).toFixed(1)}M` : ""),
    h("td", {}, m.dtype || ""), h("td", {}, bytes(m.size_bytes)), h("td", {}, m.template || "—"),
    h("td.path", {}, m.source || ""),
    h("td", {}, h("button.small", { onclick: () => { ui.exportForm.elements.source.value = m.name; ui.exportForm.scrollIntoView(); } }, "Export"),
      " ", h("button.small.danger", { onclick: () => remove(m.name) }, "Remove"))));
  ui.list.replaceChildren(rows.length
    ? h("table#models-table", {}, h("thead", {}, h("tr", {}, ...["Name", "Architecture", "Params", "Dtype", "Size", "Template", "Source", ""].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
    : h("p.empty", {}, "The store is empty. Pull a model below, or run any command once to import the default."));
}

async function remove(name) {
  if (!confirm(`Remove ${name} from the store? Its files are deleted.`)) return;
  try {
    await api(`/ui/api/models/${encodeURIComponent(name)}`, { method: "DELETE" });
    toast(`removed ${name}`);
    refreshModels();
  } catch (err) { toast(err.message, "error"); }
}

function formError(form, err) {
  const slot = err.field && form.querySelector(`[data-error-for="${err.field}"]`);
  (slot || form.querySelector(".form-error")).textContent = err.message;
}

async function submit(form, path, body) {
  form.querySelectorAll(".error, .form-error").forEach((e) => { e.textContent = ""; });
  try {
    await api(path, { method: "POST", body });
    refreshJobs();
  } catch (err) { formError(form, err); }
}

function jobRow(job) {
  const pct = job.progress ?? (job.state === "finished" ? 100 : null);
  const files = job.files.map((f) => h("a.button.small", { href: downloadUrl(`/ui/api/jobs/${job.id}/files/${encodeURIComponent(f.name)}/download`), download: f.name }, `⬇ ${f.name} (${bytes(f.bytes)})`));
  return h("div.job", { "data-job": job.id },
    h("div.row", {}, h("strong", {}, job.kind), badge(job.state), h("code.small", {}, job.command),
      job.state === "running" ? h("button.small", { onclick: () => api(`/ui/api/jobs/${job.id}/stop`, { method: "POST" }) }, "Cancel") : null),
    h("div.bar", {}, h("div.bar-fill", { style: `width:${pct ?? 0}%` })),
    job.error ? h("div.form-error", {}, job.error) : h("div.muted.small", {}, job.tail[job.tail.length - 1] || ""),
    files.length ? h("div.files", {}, ...files) : null);
}

async function refreshJobs() {
  const { jobs } = await api("/ui/api/jobs");
  const shown = jobs.filter((j) => j.kind !== "train");
  ui.jobs.replaceChildren(...(shown.length ? shown.map(jobRow) : [h("p.muted", {}, "No pulls or exports yet.")]));
  if (shown.some((j) => j.kind === "pull" && j.state === "finished")) refreshModels();
}

function forms() {
  ui.pullForm = h("form#pull-form.panel", { onsubmit: (e) => { e.preventDefault(); const f = ui.pullForm.elements;
      submit(ui.pullForm, "/ui/api/models/pull", { source: f.source.value, name: f.name.value }); } },
    h("h3", {}, "Pull a model"),
    field("Source", h("input", { name: "source", placeholder: "Qwen/Qwen2.5-0.5B-Instruct or /path/model.gguf or /path/hf-dir" })),
    field("Name in the store", h("input", { name: "name", placeholder: "optional" })),
    h("div.form-error"), h("button.primary", { type: "submit" }, "Pull"));
  ui.exportForm = h("form#export-form.panel", { onsubmit: (e) => { e.preventDefault(); const f = ui.exportForm.elements;
      submit(ui.exportForm, "/ui/api/exports", { source: f.source.value, format: f.format.value, quant: f.quant.value }); } },
    h("h3", {}, "Export"),
    field("Run or model", h("input", { name: "source", placeholder: "run name or store model" })),
    h("div.grid2", {},
      field("Format", h("select", { name: "format" }, h("option", { value: "gguf" }, "GGUF file"), h("option", { value: "ollama" }, "Ollama (GGUF + Modelfile)"))),
      field("Quantization", h("select", { name: "quant" }, ...QUANTS.map((q) => h("option", { value: q, selected: q === "q8_0" }, q))))),
    h("div.form-error"), h("button.primary", { type: "submit" }, "Export"));
  return h("div.two", {}, ui.pullForm, ui.exportForm);
}

export function build(root) {
  ui.list = h("div");
  ui.jobs = h("div#jobs");
  root.append(h("div.panel", {}, h("h2", {}, "Models in the store"), ui.list), forms(),
    h("div.panel", {}, h("h3", {}, "Pulls and exports"), ui.jobs));
}

export function show() {
  refreshModels().catch((err) => toast(err.message, "error"));
  const mine = ++gen;
  poll(refreshJobs, 1500, () => gen === mine);
}

export function hide() { gen += 1; }
