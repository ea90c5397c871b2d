// A small, safe Markdown renderer for chat replies: all input is HTML-escaped first,
// then fences, headings, lists, quotes, rules, paragraphs and inline marks become tags.
// An unclosed ``` fence (a reply still streaming) renders as a code block so far.

export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function inline(text) {
  // Code spans first, so marks inside them stay literal: swap them out, then back in.
  const spans = [];
  let out = escapeHtml(text).replace(/`([^`]+)`/g, (_, code) => {
    spans.push(`<code>${code}</code>`);
    return `\u0000${spans.length - 1}\u0000`;
  });
  out = out
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/__([^_]+)__/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\s][^*]*)\*/g, "$1<em>$2</em>")
    .replace(/(^|\W)_([^_\s][^_]*)_(?=\W|$)/g, "$1<em>$2</em>")
    .replace(/~~([^~]+)~~/g, "<del>$1</del>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g,
      '<a href="$2" target="_blank" rel="noopener noreferrer">$1</a>');
  return out.replace(/\u0000(\d+)\u0000/g, (_, i) => spans[Number(i)]);
}

function codeBlock(lang, lines) {
  const cls = lang ? ` class="lang-${escapeHtml(lang)}"` : "";
  const label = lang ? `<span class="code-lang">${escapeHtml(lang)}</span>` : "";
  return `<pre class="code">${label}<code${cls}>${escapeHtml(lines.join("\n"))}</code></pre>`;
}

const LIST_ITEM = /^\s*([-*+]|\d+[.)])\s+(.*)$/;

function list(lines, start) {
  const ordered = /^\s*\d/.test(lines[start]);
  const items = [];
  let i = start;
  while (i < lines.length && LIST_ITEM.test(lines[i])) {
    let item = lines[i].match(LIST_ITEM)[2];
    i += 1;
    while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !LIST_ITEM.test(lines[i])) {
      item += " " + lines[i].trim(); // a wrapped continuation line
      i += 1;
    }
    items.push(`<li>${inline(item)}</li>`);
  }
  const tag = ordered ? "ol" : "ul";
  return [`<${tag}>${items.join("")}</${tag}>`, i];
}

function block(lines, i) {
  const line = lines[i];
  const fence = line.match(/^\s*```\s*([\w+-]*)/);
  if (fence) {
    let j = i + 1;
    while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j += 1;
    return [codeBlock(fence[1], lines.slice(i + 1, j)), j + 1];
  }
  const heading = line.match(/^(#{1,6})\s+(.*)$/);
  if (heading) return [`<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`, i + 1];
  if (/^\s*([-*_])(\s*\1){2,}\s*$/.test(line)) return ["<hr>", i + 1];
  if (LIST_ITEM.test(line)) return list(lines, i);
  if (/^\s*>/.test(line)) {
    let j = i;
    const quoted = [];
    while (j < lines.length && /^\s*>/.test(lines[j])) quoted.push(lines[j++].replace(/^\s*>\s?/, ""));
    return [`<blockquote>${render(quoted.join("\n"))}</blockquote>`, j];
  }
  return paragraph(lines, i);
}

function paragraph(lines, i) {
  const para = [];
  let j = i;
  while (j < lines.length && lines[j].trim() && !/^\s*(```|#{1,6}\s|>)/.test(lines[j])
         && !(j > i && LIST_ITEM.test(lines[j]))) {
    para.push(inline(lines[j]));
    j += 1;
  }
  return [`<p>${para.join("<br>")}</p>`, j];
}

/** Markdown text -> HTML string; safe to assign to innerHTML. */
export function render(text) {
  const lines = String(text || "").replace(/\r\n?/g, "\n").split("\n");
  const html = [];
  let i = 0;
  while (i < lines.length) {
    if (!lines[i].trim()) { i += 1; continue; }
    const [piece, next] = block(lines, i);
    html.push(piece);
    i = next;
  }
  return html.join("\n");
}
