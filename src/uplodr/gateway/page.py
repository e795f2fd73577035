"""The gateway's pages, each one self-contained file that loads nothing from another site (many
deployments have no internet): the upload page — several files at once (3 in flight), each with
its upload progress (XHR upload events), its conversion state, then a gallery card with the
image's placeholder until its preview has loaded, its variants, sizes and copy buttons, and the
answer's `<picture>` markup to copy, or the server's error; a Delete button on each card (two
clicks: "Delete", then "Delete for good?"), which sends the answer's `delete_token` in its header
— or, for an image answered from storage, which has none, the token field's gateway token; a
preset picker when the gateway has named presets (GET /v1/presets) and an alt text field for the
markup — and /docs, which renders /openapi.json for people. The markup is shown as text (never
parsed into the page).

Browsers ask every site for /favicon.ico; `FAVICON` answers it (a tiny SVG), so a visit does
not leave a 404 in the log and the metrics."""

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#0a5bd3"/>'
    '<path d="M8 3 4 8h2.5v5h3V8H12z" fill="#fff"/></svg>'
)

UPLOAD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>uplodr</title>
<link rel="icon" href="/favicon.ico" type="image/svg+xml">
<style>
  :root { --line: #e2e2e2; --muted: #666; --accent: #0a5bd3; --bad: #b00020; --good: #1b7f3b; }
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  .lead { color: var(--muted); margin-top: 0; }
  form { display: flex; gap: .8rem; flex-wrap: wrap; align-items: end; }
  label { display: flex; flex-direction: column; font-size: .85rem; color: var(--muted); }
  /* `hidden` must win over the `display` of the rules above (an empty picker showed). */
  [hidden] { display: none !important; }
  input { font: inherit; padding: .3rem .4rem; }
  #drop { display: block; border: 2px dashed #aaa; border-radius: 10px; padding: 1.6rem; text-align: center; margin: 1rem 0; cursor: pointer; color: var(--muted); }
  #drop.over { border-color: var(--accent); background: #eef5ff; color: var(--accent); }
  #drop strong { color: #222; }
  #files { display: none; }
  #summary { color: var(--muted); font-size: .9rem; min-height: 1.3em; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 1rem; margin-top: .6rem; }
  .card { border: 1px solid var(--line); border-radius: 10px; padding: .8rem; display: flex; flex-direction: column; gap: .45rem; background: #fff; }
  .card header { display: flex; justify-content: space-between; gap: .5rem; align-items: baseline; }
  .card .name { font-weight: 600; overflow-wrap: anywhere; }
  .card .size { color: var(--muted); font-size: .85rem; white-space: nowrap; }
  .card progress { width: 100%; height: .55rem; }
  .card .state { font-size: .85rem; color: var(--muted); }
  .card[data-state="done"] .state { color: var(--good); }
  .card[data-state="error"] { border-color: #f0b8c0; background: #fff8f9; }
  .card[data-state="error"] .state { color: var(--bad); font-weight: 600; }
  .card[data-state="error"] progress { display: none; }
  .card .preview { width: 100%; height: 170px; object-fit: contain; border-radius: 6px; }
  .card .preview[data-loaded="true"] { background: repeating-conic-gradient(#f3f3f3 0 25%, #fff 0 50%) 0 0 / 16px 16px; }
  .card .dims { color: var(--muted); font-size: .85rem; }
  pre.markup { margin: 0; padding: .45rem .55rem; max-height: 8.5rem; overflow: auto; background: #f6f8fa; border: 1px solid var(--line); border-radius: 6px; font: 11.5px/1.4 ui-monospace, monospace; white-space: pre-wrap; overflow-wrap: anywhere; }
  select { font: inherit; padding: .28rem .3rem; }
  #alt { min-width: 18rem; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: .2rem .25rem; border-bottom: 1px solid #f0f0f0; font-size: .8rem; white-space: nowrap; }
  th { color: var(--muted); font-weight: normal; }
  td.num { text-align: right; }
  p.skipped { color: #666; font-size: .85rem; margin: .3rem 0; }
  button.copy { font: inherit; font-size: .78rem; padding: .1rem .45rem; border: 1px solid #bbb; border-radius: 5px; background: #f7f7f7; cursor: pointer; }
  button.copy.done { border-color: var(--good); color: var(--good); }
  .actions { display: flex; gap: .4rem; flex-wrap: wrap; }
  button.delete { font: inherit; font-size: .78rem; padding: .1rem .45rem; border: 1px solid #e3a1ab; border-radius: 5px; background: #fff; color: var(--bad); cursor: pointer; margin-left: auto; }
  button.delete.armed { background: var(--bad); color: #fff; }
  button.delete:disabled { opacity: .5; cursor: default; }
  .card[data-state="deleted"] { opacity: .6; }
  .card[data-state="deleted"] table, .card[data-state="deleted"] pre, .card[data-state="deleted"] .actions { display: none; }
</style>
</head>
<body>
<h1>uplodr</h1>
<p class="lead">Drop images — phone photos (HEIC) too — to convert them to WebP, AVIF, JPEG and a
PNG thumbnail, with <code>&lt;picture&gt;</code> markup ready to paste.</p>
<form id="form">
  <label>Folder <input id="folder" name="folder" placeholder="e.g. blog/2026"></label>
  <label id="preset-field" hidden>Preset <select id="preset"></select></label>
  <label>Alt text (for the next images) <input id="alt" maxlength="1000" placeholder="describe the picture"></label>
  <label>Token (if the server needs one) <input id="token" type="password" autocomplete="off"></label>
</form>
<label id="drop" for="files"><strong>Drop images here</strong> or click to pick several
  <input id="files" type="file" accept="image/*" multiple></label>
<div id="summary" aria-live="polite"></div>
<div id="results"></div>
<script>
"use strict";
const AT_ONCE = 3;  // uploads in flight; a default gateway queues 16 more for its machines
const results = document.getElementById("results");
const summary = document.getElementById("summary");
const queue = [];
let running = 0;
const counts = { done: 0, error: 0, total: 0 };

function fmt(n) { return n >= 1e6 ? (n / 1e6).toFixed(2) + " MB" : (n / 1e3).toFixed(1) + " kB"; }
function el(tag, props = {}, ...children) {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}
function showSummary() {
  const waiting = counts.total - counts.done - counts.error;
  summary.textContent = counts.total ? counts.done + " converted, " + counts.error + " failed"
    + (waiting ? ", " + waiting + " in progress" : "") : "";
}
async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {  // not a secure context: the old way
    const area = el("textarea", { value: text });
    document.body.append(area); area.select(); document.execCommand("copy"); area.remove();
  }
  const label = button.textContent;
  button.textContent = "Copied"; button.classList.add("done");
  setTimeout(() => { button.textContent = label; button.classList.remove("done"); }, 1500);
}
// The quality receipt of a variant: its score, and on hover the metric, setting and bytes saved.
function look(quality) {
  if (!quality) return el("td", { className: "num look" });
  const how = quality.source === "upload" ? "the upload, losslessly optimized"
    : "setting " + quality.setting + ", " + quality.encodes + " encodes";
  const saved = Math.round(quality.saved * 100);
  return el("td", { className: "num look", textContent: quality.score.toFixed(1),
    title: quality.metric.toUpperCase() + " " + quality.score.toFixed(1) + " (" + how + "; "
      + (saved >= 0 ? saved + " % fewer" : -saved + " % more") + " bytes than the fixed setting)" });
}

function copyButton(label, text) {
  const button = el("button", { type: "button", className: "copy", textContent: label });
  button.addEventListener("click", () => copy(text, button));
  return button;
}

// The gateway's named presets: a picker when it has more than its default.
fetch("/v1/presets").then((r) => r.ok ? r.json() : null).then((body) => {
  if (!body || body.presets.length < 2) return;
  const select = document.getElementById("preset");
  for (const p of body.presets) {
    const widths = p.widths.length ? " · " + p.widths.join("/") + " px" : "";
    select.append(el("option", { value: p.name, textContent: p.name + " — " + p.formats.join(", ") + widths
      + (p.keep_original ? " + original" : "") }));
  }
  document.getElementById("preset-field").hidden = false;
}).catch(() => {});

function card(file) {
  const progress = el("progress", { max: file.size || 1, value: 0 });
  const state = el("div", { className: "state", textContent: "waiting" });
  const box = el("article", { className: "card" },
    el("header", {}, el("span", { className: "name", textContent: file.name }),
                     el("span", { className: "size", textContent: fmt(file.size) })),
    progress, state);
  box.dataset.state = "waiting";
  box.dataset.sent = "0";
  results.append(box);
  return { box, progress, state };
}

function showError(view, message) {
  view.box.dataset.state = "error";
  view.state.textContent = message;
  counts.error++; showSummary();
}

function showConversion(view, body) {
  view.box.dataset.state = "done";
  view.state.textContent = body.deduplicated ? "already converted — answered from storage"
    : "converted in " + (body.timings.total ?? 0).toFixed(2) + " s";
  const variants = body.variants;
  if (body.width && body.height) {
    view.box.querySelector("header").append(el("span", { className: "dims", textContent: body.width + "×" + body.height }));
  }
  // The preview: the thumbnail, else the smallest variant a browser shows (never the original,
  // which may be HEIC). Until it has loaded, the placeholder fills the same box.
  const shown = variants.filter((v) => v.role !== "original");
  const thumb = shown.find((v) => v.role === "thumbnail")
    || shown.slice().sort((a, b) => a.width - b.width)[0];
  if (thumb) {
    const img = el("img", { className: "preview", src: thumb.url, alt: body.file_name });
    if (body.placeholder && body.placeholder.data_url) {
      img.style.background = "url(" + JSON.stringify(body.placeholder.data_url) + ") center / contain no-repeat";
    }
    img.addEventListener("load", () => { img.style.background = ""; img.dataset.loaded = "true"; });
    view.progress.replaceWith(img);
  } else {
    view.progress.remove();
  }
  const table = el("table", {}, el("tr", {}, el("th", { textContent: "format" }),
    el("th", { textContent: "dimensions" }), el("th", { textContent: "size" }),
    el("th", { textContent: "look" }), el("th")));
  for (const v of variants) {
    const format = v.format || v.mime_type.split("/").pop();
    const row = el("tr", { className: "variant" },
      el("td", {}, el("a", { href: v.url, target: "_blank", rel: "noopener", textContent: format + (v.role ? " · " + v.role : "") })),
      el("td", { textContent: v.width + "×" + v.height }),
      el("td", { className: "num", textContent: fmt(v.size_bytes) }),
      look(v.quality),
      el("td", {}, copyButton("Copy URL", v.url)));
    table.append(row);
  }
  view.box.append(table);
  for (const skip of body.skipped || []) {
    view.box.append(el("p", { className: "skipped", textContent: "not stored: " + skip.format + " — " + skip.reason }));
  }
  if (body.html) {
    view.box.append(el("pre", { className: "markup", textContent: body.html }),
      el("div", { className: "actions" }, copyButton("Copy <picture>", body.html)));
  }
  if (body.id) view.box.append(el("div", { className: "actions" }, deleteButton(view, body)));
  counts.done++; showSummary();
}

// Delete: the answer's own delete token (in a header, never the URL); an image answered from
// storage has none, and then only a gateway token in the token field can delete it.
function deleteButton(view, body) {
  const button = el("button", { type: "button", className: "delete", textContent: "Delete" });
  const token = () => document.getElementById("token").value;
  if (!body.delete_token) button.title = "answered from storage: deleting it needs a gateway token";
  button.addEventListener("click", () => {
    if (!button.classList.contains("armed")) {  // the first click only asks
      button.classList.add("armed"); button.textContent = "Delete for good?";
      return;
    }
    const headers = {};
    if (body.delete_token) headers["Uplodr-Delete-Token"] = body.delete_token;
    else if (token()) headers["authorization"] = "Bearer " + token();
    button.disabled = true;
    fetch("/v1/images/" + encodeURIComponent(body.id), { method: "DELETE", headers })
      .then(async (r) => {
        if (r.status === 204 || r.status === 404) {
          view.box.dataset.state = "deleted";
          view.state.textContent = r.status === 204 ? "deleted from every store" : "already deleted";
          const preview = view.box.querySelector("img.preview");
          if (preview) preview.remove();
          button.remove();
          return;
        }
        let message = "HTTP " + r.status;
        try { const e = await r.json(); message = e.error + " (" + e.code + ", HTTP " + r.status + ")"; } catch (err) {}
        view.state.textContent = "not deleted: " + message;
        button.disabled = false; button.classList.remove("armed"); button.textContent = "Delete";
      })
      .catch(() => {
        view.state.textContent = "not deleted: the server could not be reached";
        button.disabled = false; button.classList.remove("armed"); button.textContent = "Delete";
      });
  });
  return button;
}

// The form as it is when files are added: each keeps its folder, preset and alt text.
function options() {
  const chosen = {};
  const folder = document.getElementById("folder").value.trim();
  if (folder) chosen.folder = folder;
  if (!document.getElementById("preset-field").hidden) chosen.preset = document.getElementById("preset").value;
  const alt = document.getElementById("alt").value;
  if (alt) chosen.alt = alt;
  return chosen;
}

function upload(file, view, chosen) {
  return new Promise((resolve) => {
    const params = new URLSearchParams({ name: file.name, ...chosen });
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/images?" + params);
    xhr.setRequestHeader("content-type", "application/octet-stream");
    const token = document.getElementById("token").value;
    if (token) xhr.setRequestHeader("authorization", "Bearer " + token);
    view.box.dataset.state = "uploading";
    xhr.upload.addEventListener("progress", (e) => {
      view.progress.value = e.loaded;
      view.box.dataset.sent = String(e.loaded);
      const pct = e.lengthComputable && e.total ? Math.round(100 * e.loaded / e.total) : 0;
      view.state.textContent = "uploading " + pct + "% — " + fmt(e.loaded) + " of " + fmt(file.size);
    });
    xhr.upload.addEventListener("load", () => {
      view.progress.value = view.progress.max;
      view.box.dataset.sent = String(file.size);
      view.box.dataset.state = "converting";
      view.state.textContent = "sent " + fmt(file.size) + " — converting…";
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      if (xhr.status === 200 && body) showConversion(view, body);
      else if (body && body.error) showError(view, body.error + " (" + body.code + ", HTTP " + xhr.status + ")");
      else showError(view, "HTTP " + xhr.status + " " + xhr.statusText);
      resolve();
    });
    xhr.addEventListener("error", () => { showError(view, "the server could not be reached"); resolve(); });
    xhr.send(file);
  });
}

function pump() {
  while (running < AT_ONCE && queue.length) {
    const [file, view, chosen] = queue.shift();
    running++;
    upload(file, view, chosen).then(() => { running--; pump(); });
  }
}
function add(files) {
  for (const file of files) {
    queue.push([file, card(file), options()]);
    counts.total++;
  }
  showSummary();
  pump();
}
const input = document.getElementById("files");
input.addEventListener("change", () => { add(input.files); input.value = ""; });
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  add(e.dataTransfer.files);
});
</script>
</body>
</html>
"""
