"""A one-file upload page: pick or drop images, see each variant with its size."""

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
