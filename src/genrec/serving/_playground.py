"""The playground page: pick a model and a user, see their history and recommendations.

One self-contained HTML page (no external scripts or fonts) that calls the JSON API. Query
parameters ``model``, ``user`` and ``k`` fill the form and run it on load, so a headless
browser can render a given user's page.
"""

from __future__ import annotations

__all__ = ["PLAYGROUND_HTML"]

PLAYGROUND_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>genrec playground</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1d2433; background: #f7f8fa; }
  h1 { font-size: 1.4rem; margin: 0 0 1rem; }
  form { display: flex; gap: .75rem; align-items: end; flex-wrap: wrap; margin-bottom: 1rem; }
  label { display: flex; flex-direction: column; font-size: .8rem; gap: .2rem; }
  input, select, button { font-size: .95rem; padding: .35rem .5rem; }
  button { background: #2457d6; color: white; border: 0; border-radius: 4px; cursor: pointer; }
  .cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1.5rem; }
  .panel { background: white; border: 1px solid #dde1e8; border-radius: 6px; padding: .8rem; }
  .panel h2 { font-size: 1rem; margin: 0 0 .5rem; }
  ol { margin: 0; padding-left: 1.6rem; }
  li { margin: .2rem 0; }
  .cats { color: #6b7385; font-size: .8rem; }
  .score { color: #2457d6; font-variant-numeric: tabular-nums; font-size: .8rem; }
  #status { margin: .5rem 0; font-size: .9rem; }
  .cold { color: #b25e00; font-weight: 600; }
  .error { color: #b00020; }
  a.item { color: inherit; text-decoration: none; border-bottom: 1px dotted #999; }
</style>
</head>
<body>
<h1>genrec playground</h1>
<form id="form">
  <label>Model <select id="model"></select></label>
  <label>User <input id="user" list="users" placeholder="raw user id" size="14"></label>
  <datalist id="users"></datalist>
  <label>k <input id="k" type="number" min="1" max="100" value="10" style="width:4.5rem"></label>
  <label>Block categories <input id="blocked" placeholder="Horror, Drama" size="18"></label>
  <label><span>Exclude seen</span><input id="exclude" type="checkbox" checked></label>
  <button type="submit">Recommend</button>
</form>
<div id="status"></div>
<div class="cols">
  <div class="panel"><h2 id="hist-title">History</h2><ol id="history"></ol></div>
  <div class="panel"><h2 id="recs-title">Recommendations</h2><ol id="recs"></ol></div>
</div>
<script>
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"}[c]));
}

function row(it) {
  const cats = it.categories && it.categories.length
    ? ` <span class="cats">${esc(it.categories.join(", "))}</span>` : "";
  const score = it.score !== undefined ? ` <span class="score">${it.score.toFixed(3)}</span>` : "";
  const id = esc(it.item);
  return `<li data-item="${id}"><a class="item" href="#" data-item="${id}">${esc(it.title)}</a>`
    + `${cats}${score}</li>`;
}

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {method: "POST",
    headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
  const data = await r.json();
  if (!r.ok) {
    throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
  }
  return data;
}

async function loadModels() {
  const {models} = await api("/models");
  $("model").innerHTML = models.map((m) => `<option value="${esc(m.name)}">`
    + `${esc(m.name)} (${esc(m.kind)}, ${esc(m.dataset)})</option>`).join("");
  if (params.get("model")) $("model").value = params.get("model");
  fillUsers(models);
  $("model").onchange = () => fillUsers(models);
}

function fillUsers(models) {
  const m = models.find((x) => x.name === $("model").value) || models[0];
  $("users").innerHTML = m.sample_users.map((u) => `<option value="${esc(u)}">`).join("");
  if (!$("user").value && m.sample_users.length) $("user").value = m.sample_users[0];
}

async function recommend() {
  $("status").textContent = "loading...";
  const blocked = $("blocked").value.split(",").map((s) => s.trim()).filter(Boolean);
  try {
    const res = await api("/recommend", {model: $("model").value, user: $("user").value,
      k: Number($("k").value), exclude_seen: $("exclude").checked,
      filters: {blocked_categories: blocked}, include_history: true});
    const hist = res.history || [];
    $("hist-title").textContent =
      `History of user ${res.user} (${hist.length} items, latest first)`;
    $("history").innerHTML = hist.slice().reverse().slice(0, 50).map(row).join("");
    $("recs-title").textContent = `Top ${res.items.length} from ${res.model}`;
    $("recs").innerHTML = res.items.map(row).join("");
    $("status").innerHTML = res.cold_start
      ? `<span class="cold">cold start (${esc(res.reason)}): most popular items</span>`
      : "personalised recommendations";
    document.body.dataset.ready = "1";
  } catch (e) {
    $("status").innerHTML = `<span class="error">${esc(e.message)}</span>`;
  }
}

async function similar(item) {
  try {
    const res = await api("/similar",
      {model: $("model").value, item: item, k: Number($("k").value)});
    $("recs-title").textContent = `Similar to ${res.item.title}`;
    $("recs").innerHTML = res.items.map(row).join("");
  } catch (e) {
    $("status").innerHTML = `<span class="error">${esc(e.message)}</span>`;
  }
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a.item");
  if (a) { ev.preventDefault(); similar(a.dataset.item); }
});
$("form").onsubmit = (ev) => { ev.preventDefault(); recommend(); };
(async () => {
  try {
    await loadModels();
    if (params.get("user")) $("user").value = params.get("user");
    if (params.get("k")) $("k").value = params.get("k");
    await recommend();
  } catch (e) {
    $("status").innerHTML = `<span class="error">${esc(e.message)}</span>`;
  }
})();
</script>
</body>
</html>
"""
