// Talking to the tunelab server: same origin, API key sent as a Bearer token.
// The key is asked for once (on the first 401) and kept in localStorage.

const KEY = "tunelab.apiKey";

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field || null;
  }
}

export function apiKey() { return localStorage.getItem(KEY) || ""; }
export function setApiKey(key) { key ? localStorage.setItem(KEY, key) : localStorage.removeItem(KEY); }

function headers(extra) {
  const h = { ...(extra || {}) };
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

let keyPrompt = null;
/** Show the key dialog; resolves when the user saves a key. One dialog at a time. */
export function askForKey(message) {
  if (keyPrompt) return keyPrompt;
  const dlg = document.getElementById("key-dialog");
  document.getElementById("key-message").textContent = message || "This server needs an API key.";
  dlg.showModal();
  keyPrompt = new Promise((resolve) => {
    dlg.addEventListener("close", () => {
      setApiKey(document.getElementById("key-input").value.trim());
      keyPrompt = null;
      resolve();
    }, { once: true });
  });
  return keyPrompt;
}

async function errorOf(res) {
  let message = `${res.status} ${res.statusText}`, field = null;
  try {
    const body = await res.json();
    const err = body.error || body.detail || body;
    message = typeof err === "string" ? err : err.message || JSON.stringify(err);
    field = err.field || err.param || null;
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(res.status, message, field);
}

/** fetch with the key; retries once after asking for a key on 401. */
export async function request(path, opts = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const res = await fetch(path, { ...opts, headers: headers(opts.headers) });
    if (res.status === 401 && attempt === 0) {
      await askForKey((await errorOf(res)).message);
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }
}

/** JSON in, JSON out. */
export async function api(path, { method = "GET", body } = {}) {
  const opts = { method };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers = { "Content-Type": "application/json" };
  }
  return (await request(path, opts)).json();
}

const CHUNK = 512 * 1024; // under the server's request-body limit

/** Upload a File in chunks; returns {path, bytes} once the last chunk is in. */
export async function upload(file) {
  let id = "", result = null;
  for (let start = 0; start === 0 || start < file.size; start += CHUNK) {
    const last = start + CHUNK >= file.size;
    const query = `filename=${encodeURIComponent(file.name)}&upload=${id}&last=${last}`;
    const res = await request(`/ui/api/uploads?${query}`, {
      method: "POST", body: file.slice(start, start + CHUNK),
      headers: { "Content-Type": "application/octet-stream" },
    });
    result = await res.json();
    id = result.upload;
  }
  return result;
}

/** POST /v1/chat/completions with stream=true; calls onDelta(text) per chunk; returns usage. */
export async function streamChat(body, onDelta, signal) {
  const res = await request("/v1/chat/completions", {
    method: "POST", signal, headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "", usage = null, finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    const events = buf.split(/\r?\n\r?\n/);
    buf = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error.message || "stream error");
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.content || delta.reasoning_content) onDelta(delta.content || "", delta.reasoning_content || "");
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  return { usage, finish };
}

/** A link that downloads through the key (query parameter: a link cannot send headers). */
export function downloadUrl(path) {
  const key = apiKey();
  return key ? `${path}?key=${encodeURIComponent(key)}` : path;
}
