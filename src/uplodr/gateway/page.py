"""The gateway's pages: the upload page, and /docs, which renders /openapi.json in the browser
without loading anything from another site (many deployments have no internet)."""

UPLOAD_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>uplodr</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 960px; margin: 2rem auto; padding: 0 1rem;
         color: #222; }
  h1 { font-size: 1.4rem; }
  form { display: flex; gap: .5rem; flex-wrap: wrap; align-items: end; }
  label { display: flex; flex-direction: column; font-size: .85rem; }
  input { font: inherit; padding: .3rem; }
  #drop { border: 2px dashed #999; border-radius: 8px; padding: 1.5rem; text-align: center;
          margin: 1rem 0; }
  #drop.over { border-color: #06c; background: #eef5ff; }
  .job { border-top: 1px solid #ddd; padding: .8rem 0; }
  .error { color: #b00020; }
  table { border-collapse: collapse; width: 100%; margin-top: .4rem; }
  td, th { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #eee; font-size: .85rem;
           white-space: nowrap; }
  td a { white-space: normal; word-break: break-all; }
  img.preview { max-width: 120px; max-height: 90px; }
</style>
</head>
<body>
<h1>uplodr — convert images to web variants</h1>
<form id="form">
  <label>Folder <input id="folder" name="folder" placeholder="e.g. blog/2026"></label>
  <label>Token (if the server needs one) <input id="token" type="password"></label>
  <label>Images <input id="files" type="file" accept="image/*" multiple></label>
  <button type="submit">Convert</button>
</form>
<div id="drop">…or drop images here</div>
<div id="results" aria-live="polite"></div>
<script>
const results = document.getElementById("results");
function fmt(n) { return n > 1e6 ? (n / 1e6).toFixed(2) + " MB" : (n / 1e3).toFixed(1) + " kB"; }
async function convert(file) {
  const box = document.createElement("div");
  box.className = "job";
  box.textContent = "Converting " + file.name + " (" + fmt(file.size) + ")…";
  results.prepend(box);
  const params = new URLSearchParams({ name: file.name, folder: document.getElementById("folder").value });
  const headers = { "content-type": "application/octet-stream" };
  const token = document.getElementById("token").value;
  if (token) headers["authorization"] = "Bearer " + token;
  try {
    const response = await fetch("/v1/images?" + params, { method: "POST", body: file, headers });
    const body = await response.json();
    if (!response.ok) {
      box.innerHTML = "";
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = file.name + ": " + body.error + " (HTTP " + response.status + ")";
      box.append(p);
      return;
    }
    box.innerHTML = "";
    const title = document.createElement("strong");
    title.textContent = body.file_name + (body.deduplicated ? " — already converted" : "")
      + " — " + (body.timings.total ?? 0).toFixed(2) + " s";
    const table = document.createElement("table");
    table.innerHTML = "<tr><th></th><th>type</th><th>size</th><th>dimensions</th><th>url</th></tr>";
    for (const v of body.variants) {
      const row = table.insertRow();
      const img = document.createElement("img");
      img.className = "preview"; img.src = v.url; img.alt = v.mime_type;
      row.insertCell().append(img);
      row.insertCell().textContent = v.mime_type;
      row.insertCell().textContent = fmt(v.size_bytes);
      row.insertCell().textContent = v.width + "×" + v.height;
      const a = document.createElement("a"); a.href = v.url; a.textContent = v.url;
      row.insertCell().append(a);
    }
    box.append(title, table);
  } catch (err) {
    box.className = "job error";
    box.textContent = file.name + ": " + err;
  }
}
document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault();
  for (const f of document.getElementById("files").files) convert(f);
});
const drop = document.getElementById("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  for (const f of e.dataTransfer.files) convert(f);
});
</script>
</body>
</html>
"""


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>uplodr API</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 960px; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h2 { border-top: 1px solid #ddd; padding-top: 1rem; font-size: 1.1rem; }
  code, pre { font: 13px ui-monospace, monospace; background: #f5f5f5; border-radius: 4px; }
  code { padding: 0 .25rem; }
  pre { padding: .6rem; overflow: auto; max-height: 24rem; }
  .method { font-weight: bold; text-transform: uppercase; margin-right: .5rem; }
  table { border-collapse: collapse; margin: .3rem 0 .8rem; }
  td, th { text-align: left; padding: .15rem .6rem .15rem 0; vertical-align: top; font-size: .9rem; }
</style>
</head>
<body>
<h1>uplodr API</h1>
<p>The machine-readable document is <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1).</p>
<div id="api">Loading…</div>
<script>
const el = (tag, text) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; };
fetch("/openapi.json").then((r) => r.json()).then((doc) => {
  const root = document.getElementById("api");
  root.textContent = "";
  root.append(el("p", doc.info.description));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const h = el("h2");
      h.append(el("span", method), el("code", path));
      h.firstChild.className = "method";
      root.append(h, el("p", op.summary));
      if (op.description) root.append(el("p", op.description));
      if (op.parameters) {
        const t = el("table");
        t.append(Object.assign(el("tr"), { innerHTML: "<th>parameter</th><th>in</th><th></th>" }));
        for (const p of op.parameters) {
          const row = t.insertRow();
          row.insertCell().append(el("code", p.name + (p.required ? " *" : "")));
          row.insertCell().textContent = p.in;
          row.insertCell().textContent = p.description || "";
        }
        root.append(t);
      }
      if (op.requestBody) root.append(el("p", "Body: " + Object.keys(op.requestBody.content).join(" or ")));
      const t = el("table");
      t.append(Object.assign(el("tr"), { innerHTML: "<th>status</th><th>answer</th>" }));
      for (const [status, response] of Object.entries(op.responses)) {
        const row = t.insertRow();
        row.insertCell().append(el("code", status));
        const types = Object.keys(response.content || {}).join(", ");
        row.insertCell().textContent = response.description + (types ? " (" + types + ")" : "")
          + (response.headers ? "; headers: " + Object.keys(response.headers).join(", ") : "");
      }
      root.append(t);
    }
  }
  const schemas = el("h2", "Schemas");
  root.append(schemas, el("pre", JSON.stringify(doc.components.schemas, null, 2)));
}).catch((err) => { document.getElementById("api").textContent = "Could not load /openapi.json: " + err; });
</script>
</body>
</html>
"""
