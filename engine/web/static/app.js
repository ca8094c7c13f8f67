// nst-engine's page: set up a run, watch it paint (server-sent events), compare results. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
// "upload:ID" or "sample:NAME": the photo, the painting, and the optional second painting and masks.
const chosen = { content: null, style: null, style2: null, region: null, keep: null };
const losses = new Map(); // job id -> [loss per step]
const previews = new Map(); // job id -> its latest preview event
const befores = new Map(); // job id -> its photo's thumbnail, for the before/after slider (jobs started here)
const rates = new Map(); // job id -> {step, t}: the first step this page saw, for it/s and the ETA
let jobs = new Map(); // job id -> its summary, in the order submitted
let watching = null; // the job whose preview, status and curve are shown (and that Stop acts on)
let started = null; // the job started from this page
let picked = null; // a job the user clicked in the list
// Milliseconds from a step finishing on the server to its preview arriving here (bench/web.py reads it).
window.nstLatencies = [];
window.nstPreviews = 0;

function say(text) { $("message").textContent = text || ""; }

function text(tag, value, cls) {
  const node = document.createElement(tag);
  node.textContent = value;
  if (cls) node.className = cls;
  return node;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error(body?.detail || `${response.status} ${response.statusText}`);
  return body;
}

async function loadInfo() {
  const info = await api("/api/info");
  const random = !info.pretrained && !/random/i.test(info.weights);
  $("weights").textContent = `weights: ${info.weights}` + (random ? " (random)" : "") +
    ` · precision: ${info.precision}`;
  $("random-warning").hidden = info.pretrained;
  for (const which of ["content", "style", "style2"]) {
    for (const name of info.samples) $(`${which}-sample`).append(new Option(name, name));
  }
  for (const mode of info.colors) $("colors").append(new Option(mode, mode));
  for (const [name, help] of Object.entries(info.style_losses)) {
    const option = new Option(name, name);
    option.title = help;
    $("style-loss").append(option);
  }
  for (const name of Object.keys(info.presets)) $("preset").append(new Option(name, name));
  for (const name of info.inits) $("init").append(new Option(name, name));
  $("scales").max = info.max_scales;
  $("size").max = info.limits.max_size;
  $("steps").max = info.limits.max_steps;
  fill(info.defaults);
  // A preset fills in the fields it sets (its style weight is in its own units); "none" puts the defaults back.
  $("preset").addEventListener("change", () => fill({ ...info.defaults, ...(info.presets[$("preset").value] || {}) }));
}

function fill(values) {
  if (values.size != null) $("size").value = Math.min(values.size, Number($("size").max));
  if (values.steps != null) $("steps").value = Math.min(values.steps, Number($("steps").max));
  if (values.style_weight != null) $("style-weight").value = values.style_weight;
  if (values.preserve_colors != null) $("colors").value = values.preserve_colors;
  if (values.style_loss != null) $("style-loss").value = values.style_loss;
  if (values.content_weight != null) $("content-weight").value = values.content_weight;
  if (values.init != null) $("init").value = values.init;
  if (values.seed != null) $("seed").value = values.seed;
  if (values.scales != null) $("scales").value = values.scales;
}

function showThumb(which, src) {
  const img = $(`${which}-thumb`);
  img.src = src;
  img.hidden = false;
}

async function upload(which) {
  const file = $(`${which}-file`).files[0];
  if (!file) return;
  say("");
  const form = new FormData();
  form.append("file", file);
  try {
    const item = await api("/api/uploads", { method: "POST", body: form });
    chosen[which] = `upload:${item.id}`;
    if ($(`${which}-sample`)) $(`${which}-sample`).value = "";
    showThumb(which, `/api/uploads/${item.id}/thumbnail.jpg`);
  } catch (error) {
    chosen[which] = null;
    $(`${which}-thumb`).hidden = true;
    $(`${which}-file`).value = "";
    say(`${which}: ${error.message}`);
  }
}

function pickSample(which) {
  const name = $(`${which}-sample`).value;
  if (!name) { // the picker reset: nothing is chosen, and no thumbnail says otherwise
    chosen[which] = null;
    $(`${which}-thumb`).hidden = true;
    return;
  }
  chosen[which] = `sample:${name}`;
  $(`${which}-file`).value = "";
  showThumb(which, `/api/samples/${encodeURIComponent(name)}`);
}

async function start(event) {
  event.preventDefault();
  say("");
  if (!chosen.content || !chosen.style) { say("Choose a content photo and a style painting first."); return; }
  const body = {
    content: chosen.content,
    style: chosen.style,
    size: Number($("size").value),
    steps: Number($("steps").value),
    style_weight: Number($("style-weight").value),
    preserve_colors: $("colors").value,
    style_loss: $("style-loss").value,
    content_weight: Number($("content-weight").value),
    init: $("init").value,
    seed: Number($("seed").value),
    scales: $("scales").value ? Number($("scales").value) : undefined, // empty: chosen by size (left out)
    preset: $("preset").value || null,
  };
  if (chosen.style2) {
    body.style2 = chosen.style2;
    if (chosen.region) body.region_mask = chosen.region;
    else body.blend = Number($("blend").value) / 100;
  } else if (chosen.region) { say("A region mask places two paintings: choose a second painting too."); return; }
  if (chosen.keep) body.keep_mask = chosen.keep;
  try {
    const job = await api("/api/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify(body) });
    started = job.id;
    picked = null;
    befores.set(job.id, $("content-thumb").src);
    losses.set(job.id, []);
    localStorage.setItem("nst-engine-watching", job.id);
    say(job.position > 1 ? `Queued: position ${job.position}.` : "");
  } catch (error) {
    say(error.message);
  }
}

// The job shown (preview, status, curve) is the one Stop acts on: the page never stops one it does not show.
async function act(job, action) {
  say("");
  try {
    if (action === "delete") await api(`/api/jobs/${job}`, { method: "DELETE" });
    else await api(`/api/jobs/${job}/stop`, { method: "POST" });
  } catch (error) { say(error.message); }
}

function stop() { if (watching) act(watching, "stop"); }

// Back to one painting and no masks.
function clearExtras() {
  for (const which of ["style2", "region", "keep"]) {
    chosen[which] = null;
    $(`${which}-file`).value = "";
    $(`${which}-thumb`).hidden = true;
  }
  $("style2-sample").value = "";
}

const ACTIVE = new Set(["queued", "running"]);

// Which job to show: one picked in the list, else the one started here while it waits or runs, else whatever
// runs (a page opened mid-run), else the latest.
function pickWatched() {
  const list = [...jobs.values()];
  if (picked && jobs.has(picked)) return picked;
  const mine = jobs.get(started);
  if (mine && ACTIVE.has(mine.state)) return mine.id;
  const running = list.find((j) => j.state === "running");
  if (running) return running.id;
  return mine ? mine.id : (list.length ? list[list.length - 1].id : null);
}

function watch(id) {
  if (id === watching) return;
  watching = id;
  const img = $("preview");
  const last = previews.get(id);
  if (last) img.src = last.image;
  img.hidden = !last;
  showBefore();
  drawLosses();
}

// The photo under the preview, uncovered from the left as far as the slider says (0: the result alone).
function showBefore() {
  const src = befores.get(watching);
  const shown = Boolean(src) && !$("preview").hidden;
  $("compare-label").hidden = !shown;
  const before = $("before");
  const uncovered = Number($("compare").value);
  if (shown && before.getAttribute("src") !== src) before.src = src;
  before.hidden = !shown || uncovered === 0;
  before.style.clipPath = `inset(0 ${100 - uncovered}% 0 0)`;
}

function renderJobs() {
  const list = $("jobs");
  list.replaceChildren();
  for (const job of jobs.values()) {
    const s = job.settings;
    const where = job.state === "running" ? `running, step ${job.step}/${job.total}`
      : job.state === "queued" ? `waiting, position ${job.position}` : job.state;
    const item = text("li", "", job.state);
    item.dataset.id = job.id;
    if (job.id === watching) item.classList.add("watched");
    const label = text("button", `${s.content} × ${s.style}, ${s.size} px: ${where}`, "show");
    label.title = "Show this job";
    label.addEventListener("click", () => { picked = job.id; renderJobs(); });
    const action = job.state === "running" ? "stop" : job.state === "queued" ? "cancel" : "delete";
    const button = text("button", action === "stop" ? "Stop" : action === "cancel" ? "Cancel" : "Delete", "act");
    button.dataset.action = action;
    button.addEventListener("click", () => act(job.id, action));
    item.append(label, button);
    list.append(item);
  }
  $("jobs-empty").hidden = jobs.size > 0;
  watch(pickWatched());
  const current = jobs.get(watching);
  const active = current && ACTIVE.has(current.state);
  $("stop").disabled = !active;
  $("stop").textContent = current && current.state === "queued" ? "Cancel" : "Stop";
  if (current) describe(current);
  renderResults();
}

function describe(job) {
  const status = $("status");
  if (job.state === "queued") status.textContent = `Waiting in the queue: position ${job.position}.`;
  else if (job.state === "running") {
    const loss = job.loss == null ? "" : `, loss ${job.loss.toPrecision(4)}`;
    const pace = rates.get(job.id);
    let speed = "";
    if (pace && job.step > pace.step) {
      const perSecond = (job.step - pace.step) / ((Date.now() - pace.t) / 1000);
      speed = `, ${perSecond.toFixed(2)} it/s, ETA ${Math.round((job.total - job.step) / perSecond)} s`;
    }
    status.textContent = `Step ${job.step} of ${job.total}${loss}${speed}`;
  } else {
    const time = job.seconds == null ? "" : ` in ${job.seconds.toFixed(1)} s`;
    status.textContent = `${job.state} after ${job.step} steps${time}` + (job.message ? `: ${job.message}` : "");
  }
  const links = $("links");
  links.replaceChildren();
  if (job.has_result) {
    for (const [label, file] of [["Download PNG", "result.png"], ["Download trace", "trace.json"]]) {
      const a = text("a", label);
      a.href = `/api/jobs/${job.id}/${file}`;
      a.id = file === "result.png" ? "download-png" : "download-trace";
      a.download = "";
      links.append(a);
    }
  }
}

function renderResults() {
  const gallery = $("results");
  const done = [...jobs.values()].filter((j) => j.has_result).reverse();
  const shown = new Set([...gallery.children].map((f) => f.dataset.id));
  if (done.length === shown.size && done.every((j) => shown.has(j.id))) return;
  gallery.replaceChildren();
  for (const job of done) {
    const s = job.settings;
    const figure = document.createElement("figure");
    figure.dataset.id = job.id;
    const img = document.createElement("img");
    img.src = `/api/jobs/${job.id}/result.png`;
    img.alt = `${s.content} in the style of ${s.style}`;
    figure.append(img, text("figcaption",
      `${s.content} × ${s.style} · ${s.size} px · ${job.step} steps · style weight ${s.style_weight}` +
      ` · colours ${s.preserve_colors}` + (s.style_loss ? ` · ${s.style_loss} loss` : "") + (s.preset ? ` · preset ${s.preset}` : "") +
      (job.state === "stopped" ? " · stopped" : "")));
    gallery.append(figure);
  }
}

function drawLosses() {
  const canvas = $("loss-chart");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const values = (losses.get(watching) || []).filter((v) => v > 0 && Number.isFinite(v));
  ctx.fillStyle = "#6a6f78";
  ctx.font = "12px system-ui, sans-serif";
  if (values.length < 2) { ctx.fillText("loss (log scale) appears here as the run goes", 12, 20); return; }
  const logs = values.map(Math.log10);
  const lo = Math.min(...logs), hi = Math.max(...logs), span = hi - lo || 1;
  const left = 64, right = 12, top = 14, bottom = 34;
  const w = canvas.width - left - right, h = canvas.height - top - bottom;
  // Axes: loss on a log scale at the left (three ticks), steps along the bottom, each with its label.
  ctx.strokeStyle = "#b8bcc4";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, top + h);
  ctx.lineTo(left + w, top + h);
  ctx.stroke();
  ctx.textAlign = "right";
  for (const f of [0, 0.5, 1]) {
    const y = top + h * (1 - f);
    ctx.fillText((10 ** (lo + f * span)).toPrecision(3), left - 6, y + 4);
    ctx.beginPath();
    ctx.moveTo(left - 3, y);
    ctx.lineTo(left, y);
    ctx.stroke();
  }
  ctx.textAlign = "center";
  ctx.fillText("1", left, top + h + 14);
  ctx.fillText(String(values.length), left + w, top + h + 14);
  ctx.fillText("step", left + w / 2, top + h + 28);
  ctx.save();
  ctx.translate(12, top + h / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.fillText("loss (log)", 0, 0);
  ctx.restore();
  ctx.textAlign = "left";
  ctx.strokeStyle = "#2456c9";
  ctx.lineWidth = 2;
  ctx.beginPath();
  logs.forEach((v, i) => {
    const x = left + (w * i) / (logs.length - 1), y = top + h * (1 - (v - lo) / span);
    if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
  });
  ctx.stroke();
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("jobs", (e) => {
    jobs = new Map(JSON.parse(e.data).jobs.map((j) => [j.id, j]));
    renderJobs();
  });
  events.addEventListener("job", (e) => { const j = JSON.parse(e.data).job; jobs.set(j.id, j); renderJobs(); });
  events.addEventListener("dropped", (e) => {
    const d = JSON.parse(e.data);
    jobs.delete(d.id);
    previews.delete(d.id);
    losses.delete(d.id);
    if (picked === d.id) picked = null;
    renderJobs();
  });
  events.addEventListener("history", (e) => { const d = JSON.parse(e.data); losses.set(d.id, d.losses); drawLosses(); });
  events.addEventListener("step", (e) => {
    const d = JSON.parse(e.data);
    if (!losses.has(d.id)) losses.set(d.id, []);
    if (d.loss != null) losses.get(d.id).push(d.loss);
    if (!rates.has(d.id)) rates.set(d.id, { step: d.step, t: Date.now() });
    const job = jobs.get(d.id);
    if (job) { job.step = d.step; job.loss = d.loss; renderJobs(); }
    if (d.id === watching) drawLosses();
  });
  events.addEventListener("preview", (e) => {
    const d = JSON.parse(e.data);
    previews.set(d.id, d);
    if (d.id !== watching) return;
    window.nstLatencies.push(Date.now() - d.t * 1000);
    window.nstPreviews += 1;
    const img = $("preview");
    img.src = d.image;
    img.hidden = false;
    // Sharp: at most twice the image's own size, each pixel a block (a 128 px preview is not smeared to 740).
    img.style.width = `${Math.min(img.closest(".frame").clientWidth - 2, d.width * 2)}px`;
    showBefore();
    $("status").dataset.step = d.step;
  });
  events.addEventListener("note", (e) => {
    const d = JSON.parse(e.data);
    if (d.id !== watching) return;
    if (d.level === "warning") say(d.text);
    else if (/^exporting/.test(d.text)) $("status").textContent = d.text; // a preset's pooling, once
  });
  events.addEventListener("closing", () => { say("The server is shutting down."); events.close(); });
}

window.addEventListener("DOMContentLoaded", async () => {
  started = localStorage.getItem("nst-engine-watching");
  try { await loadInfo(); } catch (error) { say(`cannot reach the server: ${error.message}`); return; }
  for (const which of ["content", "style", "style2"]) {
    $(`${which}-file`).addEventListener("change", () => upload(which));
    $(`${which}-sample`).addEventListener("change", () => pickSample(which));
  }
  for (const which of ["region", "keep"]) $(`${which}-file`).addEventListener("change", () => upload(which));
  $("blend").addEventListener("input", () => { $("blend-shown").textContent = $("blend").value; });
  $("clear-extras").addEventListener("click", clearExtras);
  $("form").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  $("compare").addEventListener("input", showBefore);
  drawLosses();
  listen();
});
