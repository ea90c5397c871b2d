// The single-page shell: hash routes (#/chat, #/train, #/runs, #/runs/NAME, #/models,
// #/status) show one section; each page builds itself once and refreshes on show.

import { askForKey } from "./api.js";
import * as chat from "./chat.js";
import * as train from "./train.js";
import * as runs from "./runs.js";
import * as models from "./models.js";
import * as status from "./status.js";

const PAGES = { chat, train, runs, run: runs.runPage, models, status };
const built = new Set();
let current = null;

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "chat").split("/").map(decodeURIComponent);
  if (parts[0] === "runs" && parts[1]) return ["run", parts.slice(1).join("/")];
  return [PAGES[parts[0]] ? parts[0] : "chat", null];
}

function show() {
  const [name, arg] = route();
  if (current && current !== name) PAGES[current].hide?.();
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${name}`;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === (name === "run" ? "runs" : name));
  }
  const root = document.getElementById(`page-${name}`);
  if (!built.has(name)) { PAGES[name].build(root); built.add(name); }
  current = name;
  PAGES[name].show(arg);
}

document.getElementById("key-button").addEventListener("click", () => askForKey("Set the API key for this server."));
window.addEventListener("hashchange", show);
show();
