// Runs: the list of training runs with their status, and one run's page with live
// charts (loss and eval loss, learning rate, tokens/s; rewards, margin, accuracy and KL for
// preference stages), progress, ETA, log tail and report.

import { api, downloadUrl } from "./api.js";
import { lineChart, fmt } from "./chart.js";
import { badge, duration, h, poll, toast } from "./dom.js";

let listBox = null, listGen = 0;

async function refreshList() {
  const { runs, runs_dir } = await api("/ui/api/runs");
  const rows = runs.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/runs/${encodeURIComponent(r.name)}` }, r.name)),
    h("td", {}, badge(r.state)),
    h("td", {}, r.total_steps ? `${r.step} / ${r.total_steps}` : String(r.step || "")),
    h("td", {}, r.final_loss != null ? fmt(r.final_loss) : ""),
    h("td", {}, r.method || ""), h("td.path", {}, r.model || ""),
    h("td", {}, r.updated ? new Date(r.updated * 1000).toLocaleString() : "")));
  listBox.replaceChildren(h("p.muted", {}, `Runs in ${runs_dir}`), rows.length
    ? h("table#runs-table", {}, h("thead", {}, h("tr", {}, ...["Run", "State", "Step", "Final loss", "Method", "Model", "Updated"].map((t) => h("th", {}, t)))), h("tbody", {}, rows))
    : h("p.empty", {}, "No runs yet. Start one on the Train page."));
}

export function build(root) {
  listBox = h("div");
  root.append(h("div.panel", {}, h("h2", {}, "Training runs ", h("a.button.small", { href: "#/train" }, "+ New run")), listBox));
}

export function show() {
  const gen = ++listGen;
  poll(refreshList, 3000, () => listGen === gen);
}

export function hide() { listGen += 1; }

// ---- one run ---------------------------------------------------------------------------------

const COLORS = { loss: "#2563eb", eval_loss: "#dc2626", lr: "#059669", tokens_per_s: "#9333ea",
  "rewards/chosen": "#16a34a", "rewards/rejected": "#dc2626", margin: "#2563eb", eval_margin: "#f59e0b",
  accuracy: "#2563eb", eval_accuracy: "#f59e0b", kl: "#9333ea" };
// preference stages (dpo, kto, orpo, simpo, rm) log these; their charts show once a row has them
const PREFERENCE = [["rewards", "rewards", [["rewards/chosen", "chosen"], ["rewards/rejected", "rejected"]]],
  ["margin", "reward margin", [["margin", "train margin"], ["eval_margin", "eval margin"]]],
  ["accuracy", "preference accuracy", [["accuracy", "train accuracy"], ["eval_accuracy", "eval accuracy"]]],
  ["kl", "KL (KTO reference point)", [["kl", "kl"]]]];
const run = { name: null, rows: [], next: 0, gen: 0 };
let ui = {};

function charts() {
  const series = (key, name) => ({ name: name || key, color: COLORS[key],
    points: run.rows.filter((r) => typeof r[key] === "number" && isFinite(r[key])).map((r) => [r.step, r[key]]) });
  lineChart(ui.loss, "loss", [series("loss", "train loss"), series("eval_loss", "eval loss")]);
  lineChart(ui.lr, "learning rate", [series("lr")]);
  lineChart(ui.speed, "tokens/s", [series("tokens_per_s", "tokens/s")]);
  for (const [key, title, keys] of PREFERENCE) {
    const box = ui.pref[key];
    box.hidden = !run.rows.some((r) => typeof r[keys[0][0]] === "number");
    if (!box.hidden) lineChart(box, title, keys.map(([k, name]) => series(k, name)));
  }
}

function header(d) {
  const pct = d.total_steps ? Math.min(100, (100 * d.step) / d.total_steps) : (d.state === "finished" ? 100 : 0);
  const last = run.rows[run.rows.length - 1] || {};
  const facts = [["State", badge(d.state)], ["Step", d.total_steps ? `${d.step} / ${d.total_steps}` : String(d.step || 0)],
    ["ETA", d.state === "running" ? duration(d.eta_s) : "—"], ["Loss", last.loss != null ? fmt(last.loss) : "—"],
    ["Tokens/s", last.tokens_per_s != null ? fmt(last.tokens_per_s) : "—"], ["Method", d.method || "—"], ["Model", d.model || "—"]];
  ui.facts.replaceChildren(...facts.map(([k, v]) => h("div.fact", {}, h("span.k", {}, k), h("span.v", {}, v))));
  ui.bar.style.width = `${pct.toFixed(1)}%`;
  ui.bar.parentElement.dataset.state = d.state;
  ui.stop.hidden = !["running", "starting"].includes(d.state);
  // TensorBoard reads event files where they lie: the link downloads them (a zip; unzip, then
  // `tensorboard --logdir .`), for a browser on another machine; the command is for this one.
  ui.tensorboard.hidden = !d.tensorboard_download;
  if (d.tensorboard_download) {
    ui.tensorboard.replaceChildren("TensorBoard logs: ",
      h("a.button.small#tensorboard-link", { href: downloadUrl(d.tensorboard_download), download: `${d.name}-tensorboard.zip` }, "⬇ download"),
      " or on this machine ", h("code", {}, d.tensorboard_command));
  }
  const error = d.error || d.job?.error;
  ui.error.textContent = d.state === "failed" && error ? error : "";
}

function finalReport(d) {
  const parts = [];
  if (d.has_report) parts.push(h("a.button", { href: downloadUrl(`/ui/api/runs/${encodeURIComponent(d.name)}/report/download`), target: "_blank" }, "Open final report"));
  else if (d.state === "finished") parts.push(h("button#write-report", { onclick: writeReport }, "Write final report"));
  if (d.summary && Object.keys(d.summary).length) parts.push(h("pre.code#run-summary", {}, JSON.stringify(d.summary, null, 2)));
  if (d.state === "finished" && d.is_reward_model) parts.push(h("p.muted#run-reward-model", {}, "A reward model scores replies and does not generate, so it is not served or exported to GGUF. Merge it into a Hugging Face sequence classifier: ", h("code", {}, `tunelab merge ${d.path}`)));
  else if (d.state === "finished" && d.has_adapter) parts.push(h("p.muted", {}, "Serve it: ", h("code", {}, `tunelab serve ${d.status?.base_model_spec || ""} --adapter ${d.name}=${d.path}/adapter`)));
  ui.summary.replaceChildren(...(parts.length ? parts : [h("p.muted", {}, d.state === "running" ? "The summary appears when training ends." : "No summary.")]));
  ui.config.textContent = d.config_yaml || "";
}

async function refreshRun() {
  const name = run.name;
  const d = await api(`/ui/api/runs/${encodeURIComponent(name)}`);
  const m = await api(`/ui/api/runs/${encodeURIComponent(name)}/metrics?since=${run.next}`);
  if (name !== run.name) return; // navigated away meanwhile
  run.rows.push(...m.rows);
  run.next = m.next;
  header(d);
  if (m.rows.length || !ui.loss.firstChild) charts();
  finalReport(d);
  const log = await api(`/ui/api/runs/${encodeURIComponent(name)}/log?lines=80`);
  ui.log.textContent = log.lines.join("\n");
  ui.log.scrollTop = ui.log.scrollHeight;
  if (["finished", "failed", "stopped", "crashed", "corrupt"].includes(d.state)) run.settled = (run.settled || 0) + 1;
}

async function writeReport(event) {
  event.target.disabled = true;
  try {
    await api(`/ui/api/runs/${encodeURIComponent(run.name)}/report`, { method: "POST" });
    finalReport(await api(`/ui/api/runs/${encodeURIComponent(run.name)}`));
  } catch (err) { toast(err.message, "error"); event.target.disabled = false; }
}

async function stopRun() {
  try {
    await api(`/ui/api/runs/${encodeURIComponent(run.name)}/stop`, { method: "POST" });
    toast(`stopping ${run.name}: a checkpoint is saved first`);
  } catch (err) { toast(err.message, "error"); }
}

function buildRun(root) {
  ui.title = h("h2#run-title");
  ui.facts = h("div.facts");
  ui.bar = h("div.bar-fill");
  ui.error = h("div.form-error#run-error");
  ui.tensorboard = h("p.muted#run-tensorboard", { hidden: true });
  ui.stop = h("button#stop-run.danger", { onclick: stopRun, hidden: true }, "Stop run");
  ui.loss = h("div.chart-box#chart-loss");
  ui.lr = h("div.chart-box#chart-lr");
  ui.speed = h("div.chart-box#chart-speed");
  ui.pref = Object.fromEntries(PREFERENCE.map(([key]) => [key, h(`div.chart-box#chart-${key}`, { hidden: true })]));
  ui.log = h("pre.code.log#run-log");
  ui.summary = h("div#run-final");
  ui.config = h("pre.code#run-config");
  root.append(h("div.panel", {}, h("div.row", {}, h("a", { href: "#/runs" }, "← Runs"), ui.title, ui.stop),
    ui.facts, h("div.bar", {}, ui.bar), ui.tensorboard, ui.error),
    h("div.charts", {}, ui.loss, ui.lr, ui.speed, ...Object.values(ui.pref)),
    h("div.two", {}, h("div.panel", {}, h("h3", {}, "Log"), ui.log),
      h("div.panel", {}, h("h3", {}, "Final report"), ui.summary, h("h3", {}, "Config"), ui.config)));
}

function showRun(name) {
  if (run.name !== name) Object.assign(run, { name, rows: [], next: 0, settled: 0 });
  ui.title.textContent = name;
  const gen = ++run.gen; // a newer show() or a hide() ends this poll loop
  charts();
  // Poll fast while it trains; once it has settled, a couple more reads and stop.
  poll(refreshRun, 1000, () => run.gen === gen && (run.settled || 0) < 2);
}

export const runPage = { build: buildRun, show: showRun, hide: () => { run.gen += 1; } };
