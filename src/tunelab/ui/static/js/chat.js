// Chat: pick the base model or an adapter, stream replies as Markdown, set the system
// prompt, sampling and stop sequences, regenerate, keep history in localStorage, and
// Compare: the same prompt to two models side by side.

import { api, streamChat } from "./api.js";
import { field, h, toast } from "./dom.js";
import { render } from "./markdown.js";

const STORE = "tunelab.chats";
const SETTINGS = "tunelab.chatSettings";
const state = { chats: [], current: null, busy: false, aborts: [] };
let ui = {};

function load() {
  try { state.chats = JSON.parse(localStorage.getItem(STORE) || "[]"); } catch (_) { state.chats = []; }
  state.current = state.chats[0] || newChat();
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(state.chats.slice(0, 50)));
}

function newChat() {
  const chat = { id: Date.now().toString(36), title: "New chat", panes: [[], []], created: Date.now() };
  state.chats.unshift(chat);
  return chat;
}

function settingsPanel() {
  const saved = JSON.parse(localStorage.getItem(SETTINGS) || "{}");
  const input = (name, value, attrs = {}) => h("input", { name, value: saved[name] ?? value, ...attrs });
  ui.form = h("form#chat-settings.panel", { onsubmit: (e) => e.preventDefault(), oninput: saveSettings },
    h("h3", {}, "Model"),
    field("Model", ui.modelA = h("select#model-a", { name: "modelA" })),
    h("label.check", {}, ui.compare = h("input#compare-toggle", { type: "checkbox", name: "compare", onchange: layout }), " Compare side by side"),
    ui.modelBField = field("Second model", ui.modelB = h("select#model-b", { name: "modelB" })),
    h("h3", {}, "Prompt"),
    field("System prompt", h("textarea", { name: "system", rows: 3, placeholder: "You are a helpful assistant." }, saved.system || "")),
    h("h3", {}, "Sampling"),
    h("div.grid2", {},
      field("Temperature", input("temperature", "0.7", { inputmode: "decimal" })),
      field("Top p", input("top_p", "1", { inputmode: "decimal" })),
      field("Max tokens", input("max_tokens", "256", { inputmode: "numeric" })),
      field("Seed", input("seed", "", { inputmode: "numeric", placeholder: "random" }))),
    field("Stop sequences", input("stop", "", { placeholder: "comma separated" }), "generation ends at any of these"));
  return ui.form;
}

function saveSettings() {
  const data = Object.fromEntries(new FormData(ui.form));
  localStorage.setItem(SETTINGS, JSON.stringify(data));
}

/** Sampling fields -> request params, or null after marking the bad field inline. */
function sampling() {
  const f = ui.form.elements;
  ui.form.querySelectorAll(".error").forEach((e) => { e.textContent = ""; });
  const rules = [["temperature", 0, 5, false], ["top_p", 0.0001, 1, false], ["max_tokens", 1, 1e6, true], ["seed", 0, 2 ** 31, true]];
  const params = {};
  for (const [name, lo, hi, integer] of rules) {
    const raw = f[name].value.trim();
    if (!raw) continue;
    const v = Number(raw);
    if (!isFinite(v) || v < lo || v > hi || (integer && !Number.isInteger(v))) {
      const what = integer ? "a whole number" : "a number";
      ui.form.querySelector(`[data-error-for="${name}"]`).textContent = `${name}: expected ${what} in ${lo}..${hi}, got "${raw}"`;
      f[name].focus();
      return null;
    }
    params[name] = v;
  }
  const stop = f.stop.value.split(",").map((s) => s.replace(/\\n/g, "\n")).filter((s) => s.trim());
  if (stop.length) params.stop = stop.slice(0, 4);
  return params;
}

async function loadModels() {
  let data;
  try { data = await api("/v1/models"); } catch (err) { toast(`models: ${err.message}`, "error"); return; }
  const saved = JSON.parse(localStorage.getItem(SETTINGS) || "{}");
  for (const [select, key] of [[ui.modelA, "modelA"], [ui.modelB, "modelB"]]) {
    const keep = select.value || saved[key];
    select.replaceChildren(...data.data.map((m) =>
      h("option", { value: m.id }, m.parent ? `${m.id}  (adapter of ${m.parent})` : `${m.id}  (base)`)));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
  if (!saved.modelB && ui.modelB.options.length > 1) ui.modelB.selectedIndex = 1;
}

function layout() {
  const compare = ui.compare.checked;
  ui.modelBField.hidden = !compare;
  ui.panes[1].box.hidden = !compare;
  ui.panesBox.classList.toggle("compare", compare);
  state.current.compare = compare;
  renderChat();
}

function paneView(index) {
  const title = h("div.pane-title");
  const log = h(`div.messages#messages-${index ? "b" : "a"}`);
  return { box: h("div.pane", {}, title, log), title, log };
}

function message(msg, pane, i) {
  const body = h("div.body");
  if (msg.role === "assistant") body.innerHTML = render(msg.content) || (msg.pending ? '<span class="cursor">▍</span>' : "");
  else body.textContent = msg.content;
  const isLast = i === state.current.panes[pane].length - 1;
  const tools = msg.role === "assistant" && isLast && !state.busy
    ? h("div.tools", {}, h("button.ghost.small.regenerate", { onclick: () => regenerate() }, "↻ Regenerate"),
        msg.stats ? h("span.stats", {}, msg.stats) : null)
    : null;
  return h(`div.msg.${msg.role}`, {}, h("div.role", {}, msg.role === "user" ? "You" : msg.model || "Assistant"), body, tools);
}

function renderChat() {
  const chat = state.current;
  ui.panes.forEach((pane, p) => {
    pane.title.textContent = chat.compare ? (p ? ui.modelB.value : ui.modelA.value) : "";
    pane.log.replaceChildren(...chat.panes[p].map((m, i) => message(m, p, i)));
    pane.log.scrollTop = pane.log.scrollHeight;
  });
  ui.history.replaceChildren(...state.chats.map((c) => h("li", {},
    h(`a${c === chat ? ".active" : ""}`, { href: "#/chat", onclick: () => { state.current = c; ui.compare.checked = !!c.compare; layout(); } }, c.title),
    h("button.ghost.small", { title: "delete", onclick: () => removeChat(c) }, "×"))));
  ui.send.disabled = state.busy;
  ui.stop.hidden = !state.busy;
}

function removeChat(chat) {
  state.chats = state.chats.filter((c) => c !== chat);
  if (state.current === chat) state.current = state.chats[0] || newChat();
  save();
  renderChat();
}

function requestMessages(pane) {
  const system = ui.form.elements.system.value.trim();
  const msgs = state.current.panes[pane].filter((m) => !m.pending).map(({ role, content }) => ({ role, content }));
  return system ? [{ role: "system", content: system }, ...msgs] : msgs;
}

async function reply(pane, model, params) {
  const messages = requestMessages(pane);
  const msg = { role: "assistant", content: "", model, pending: true };
  state.current.panes[pane].push(msg);
  renderChat();
  const abort = new AbortController();
  state.aborts.push(abort);
  const t0 = performance.now();
  let first = null, body = null;
  try {
    const { usage } = await streamChat({ model, messages, ...params }, (text) => {
      first = first ?? performance.now();
      msg.content += text;
      body = body || ui.panes[pane].log.lastElementChild.querySelector(".body");
      body.innerHTML = render(msg.content);
      ui.panes[pane].log.scrollTop = ui.panes[pane].log.scrollHeight;
    }, abort.signal);
    const secs = (performance.now() - (first ?? t0)) / 1000;
    const n = usage?.completion_tokens;
    msg.stats = n ? `${n} tokens · ${(n / Math.max(secs, 1e-3)).toFixed(1)} tok/s` : "";
  } catch (err) {
    if (err.name !== "AbortError") { msg.content += `\n\n**Error:** ${err.message}`; msg.error = true; }
  }
  delete msg.pending;
}

async function generate() {
  const params = sampling();
  if (!params) return;
  state.busy = true;
  const chat = state.current;
  const models = chat.compare ? [ui.modelA.value, ui.modelB.value] : [ui.modelA.value];
  await Promise.all(models.map((m, p) => reply(p, m, params)));
  state.busy = false;
  state.aborts = [];
  save();
  renderChat();
}

function send() {
  const text = ui.input.value.trim();
  if (!text || state.busy) return;
  const chat = state.current;
  if (!ui.modelA.value) { toast("no model loaded on this server", "error"); return; }
  chat.panes[0].push({ role: "user", content: text });
  if (chat.compare) chat.panes[1].push({ role: "user", content: text });
  if (chat.title === "New chat") chat.title = text.slice(0, 40);
  ui.input.value = "";
  generate();
}

function regenerate() {
  const chat = state.current;
  for (const pane of chat.panes) if (pane.length && pane[pane.length - 1].role === "assistant") pane.pop();
  if (chat.panes[0].length) generate();
}

export function build(root) {
  load();
  ui.history = h("ul.history");
  ui.panes = [paneView(0), paneView(1)];
  ui.panesBox = h("div.panes", {}, ui.panes[0].box, ui.panes[1].box);
  ui.input = h("textarea#chat-input", { rows: 3, placeholder: "Message… (Enter to send, Shift+Enter for a new line)",
    onkeydown: (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } } });
  ui.send = h("button#send.primary", { onclick: send }, "Send");
  ui.stop = h("button#stop", { onclick: () => state.aborts.forEach((a) => a.abort()), hidden: true }, "Stop");
  const newButton = h("button.ghost", { onclick: () => { state.current = newChat(); save(); layout(); } }, "+ New chat");
  root.append(h("div.chat-layout", {},
    h("aside.sidebar", {}, newButton, ui.history),
    h("div.chat-main", {}, ui.panesBox, h("div.composer", {}, ui.input, h("div.buttons", {}, ui.send, ui.stop))),
    h("aside.settings", {}, settingsPanel())));
  ui.compare.checked = !!state.current.compare;
}

export function show() {
  loadModels().then(layout);
  layout();
}
