// Train: a form for a new run. "Check" shows the data check report, the equivalent CLI
// command and YAML; "Start" launches `tunelab train` as its own process on the server.
// Bad input is marked next to its field and nothing starts.

import { api, upload } from "./api.js";
import { field, h, toast } from "./dom.js";

let ui = {};
// name, label, default, kind (int|float|text), hint
const NUMBERS = [
  ["epochs", "Epochs", "1", "int", "passes over the data"],
  ["max_steps", "Max steps", "", "int", "0 or empty = use epochs"],
  ["lr", "Learning rate", "2e-4", "float", ""],
  ["lora.rank", "LoRA rank", "16", "int", ""],
  ["lora.alpha", "LoRA alpha", "32", "float", ""],
  ["lora.dropout", "LoRA dropout", "", "float", "below 1, e.g. 0.05"],
  ["micro_batch_size", "Micro-batch size", "4", "int", ""],
  ["grad_accum", "Grad accumulation", "1", "int", ""],
  ["data.cutoff_len", "Cutoff length", "", "int", "tokens per example"],
  ["eval_split", "Eval split", "", "float", "fraction held out, e.g. 0.1"],
  ["eval_every", "Eval every", "", "int", "steps"],
];

function form() {
  const num = ([name, label, value, kind, hint]) =>
    field(label, h("input", { name, value, inputmode: kind === "int" ? "numeric" : "decimal", "data-kind": kind }), hint);
  ui.models = h("datalist#store-models");
  ui.template = h("select", { name: "data.template" }, h("option", { value: "" }, "model's own"));
  ui.file = h("input#dataset-file", { type: "file", name: "upload", accept: ".jsonl,.json,.csv,.tsv,.parquet,.txt" });
  ui.form = h("form#train-form.panel", { onsubmit: (e) => { e.preventDefault(); start(); }, novalidate: true },
    h("h2", {}, "New training run"),
    h("div.grid2", {},
      field("Run name", h("input", { name: "name", placeholder: "auto", pattern: "[A-Za-z0-9._-]+" })),
      field("Model", h("input", { name: "model", list: "store-models", placeholder: "default: Gemma 3 270M" }), "store name, folder or hub id")),
    ui.models,
    field("Dataset path", h("input", { name: "datasets", placeholder: "/path/to/data.jsonl (comma-separate several)" })),
    field("…or upload a file", ui.file),
    field("Method", h("select", { name: "method" }, ...["lora", "dora", "qlora", "full", "freeze"].map((m) => h("option", { value: m }, m)))),
    h("div.grid2", {},
      field("Target modules", h("input", { name: "lora.target_modules", placeholder: "all-linear" }), "comma-separated, e.g. q_proj,v_proj"),
      field("Chat template", ui.template)),
    h("div.grid3", {}, ...NUMBERS.map(num)),
    h("div.form-error#train-error"),
    h("div.buttons", {},
      h("button#check-button", { type: "button", onclick: check }, "Check data & preview"),
      h("button#start-button.primary", { type: "submit" }, "Start training")));
  return ui.form;
}

function clearErrors() {
  ui.form.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  ui.form.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
  document.getElementById("train-error").textContent = "";
}

function showError(fieldName, message) {
  const slot = fieldName && ui.form.querySelector(`[data-error-for="${fieldName}"]`);
  if (slot) {
    slot.textContent = message;
    ui.form.elements[fieldName]?.classList.add("invalid");
    ui.form.elements[fieldName]?.focus();
  } else {
    document.getElementById("train-error").textContent = message;
  }
}

/** Client-side checks: a dataset is given and every number parses. Returns false on error. */
function validate() {
  clearErrors();
  const f = ui.form.elements;
  if (!f.datasets.value.trim() && !ui.file.files.length) {
    showError("datasets", "dataset: upload a file or give a path");
    return false;
  }
  for (const [name, label, , kind] of NUMBERS) {
    const raw = f[name].value.trim();
    if (!raw) continue;
    const v = Number(raw);
    if (!isFinite(v) || v < 0 || (kind === "int" && !Number.isInteger(v))) {
      showError(name, `${label}: expected ${kind === "int" ? "a whole number" : "a number"} ≥ 0, got "${raw}"`);
      return false;
    }
  }
  return true;
}

/** Upload a chosen file once; its server path goes into the dataset field. */
async function ensureUploaded() {
  const file = ui.file.files[0];
  if (!file || ui.uploaded === file) return;
  const { path } = await upload(file);
  ui.form.elements.datasets.value = path;
  ui.uploaded = file;
  toast(`uploaded ${file.name}`);
}

function payload() {
  const data = Object.fromEntries([...new FormData(ui.form)].filter(([k]) => k !== "upload"));
  data.datasets = data.datasets.split(",").map((s) => s.trim()).filter(Boolean);
  return data;
}

async function plan() {
  const planned = await api("/ui/api/runs/plan", { method: "POST", body: payload() });
  ui.cli.textContent = planned.cli;
  ui.yaml.textContent = planned.yaml;
  ui.preview.hidden = false;
  return planned;
}

async function check() {
  if (!validate()) return;
  try {
    await ensureUploaded();
    await plan();
    ui.report.textContent = "checking…";
    const body = payload();
    const res = await api("/ui/api/data/check", { method: "POST", body: { datasets: body.datasets, model: body.model, cutoff: body["data.cutoff_len"] } });
    ui.report.textContent = res.report || "(no output)";
    ui.reportStatus.replaceChildren(h(`span.badge.state-${res.ok ? "finished" : "failed"}`, {}, res.ok ? "data OK" : "data has problems"));
  } catch (err) {
    showError(err.field, err.message);
  }
}

async function start() {
  if (!validate()) return;
  const button = document.getElementById("start-button");
  button.disabled = true;
  try {
    await ensureUploaded();
    await plan();
    const res = await api("/ui/api/runs", { method: "POST", body: payload() });
    toast(`started run ${res.name}`);
    location.hash = `#/runs/${encodeURIComponent(res.name)}`;
  } catch (err) {
    showError(err.field, err.message);
  } finally {
    button.disabled = false;
  }
}

export function build(root) {
  ui.cli = h("pre#train-cli.code");
  ui.yaml = h("pre#train-yaml.code");
  ui.report = h("pre#data-report.code", {}, "Press “Check data & preview” to read the dataset the way training will.");
  ui.reportStatus = h("span");
  ui.preview = h("div", { hidden: true },
    h("h3", {}, "Equivalent command"), ui.cli, h("h3", {}, "Equivalent YAML (tunelab train --config run.yaml)"), ui.yaml);
  root.append(h("div.train-layout", {}, form(),
    h("div.panel", {}, h("h2", {}, "Data check ", ui.reportStatus), ui.report, ui.preview)));
}

/** The built-in chat templates, from the server (once); the first option stays "model's own". */
function loadTemplates() {
  ui.templates ||= api("/ui/api/train/choices").then((choices) =>
    ui.template.append(...choices["data.template"].map((t) => h("option", { value: t }, t))));
  ui.templates.catch((err) => { ui.templates = null; console.warn(err); });
}

export async function show() {
  loadTemplates();
  try {
    const { models } = await api("/ui/api/models");
    ui.models.replaceChildren(...models.map((m) => h("option", { value: m.name })));
  } catch (err) { console.warn(err); }
}
