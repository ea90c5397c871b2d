// Tiny DOM helpers: h() builds elements, so pages never assemble HTML from strings
// (only the Markdown renderer does, and it escapes everything first).

/** h("div.card#id", {onclick, ...attrs}, ...children) -> Element */
export function h(spec, attrs, ...children) {
  const [, tag, rest] = spec.match(/^([a-z0-9]+)(.*)$/i);
  const node = document.createElement(tag);
  for (const part of rest.match(/[.#][\w-]+/g) || []) {
    if (part[0] === ".") node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) node.append(c);
  return node;
}

/** A labelled form input with an optional hint and a slot for its inline error. */
export function field(label, input, hint) {
  return h("label.field", {}, h("span", {}, label), input, hint ? h("small.hint", {}, hint) : null,
           h("small.error", { "data-error-for": input.name }));
}

let toastTimer = null;
/** A short message at the bottom of the screen. */
export function toast(text, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.className = ""; }, 4000);
}

export function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KB", "MB", "GB", "TB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return `${(n / 1024 ** i).toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "—";
  s = Math.round(s);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

export function badge(state) {
  return h(`span.badge.state-${state || "unknown"}`, {}, state || "unknown");
}

/** Poll fn every ms while `alive()` holds; errors are shown, not fatal. */
export function poll(fn, ms, alive) {
  let timer = null;
  const tick = async () => {
    if (!alive()) return;
    try { await fn(); } catch (err) { console.warn(err); }
    if (alive()) timer = setTimeout(tick, ms);
  };
  tick();
  return () => clearTimeout(timer);
}
