// Distill dashboard: vanilla JS over the REST API (no build step). The key lives in sessionStorage.
"use strict";

const KEY = "distill.key";
const COLORS = { student: "#2457c5", baseline: "#d9822b", teacher: "#2e9e57", val: "#8e44ad" };
const EXAMPLE_SPEC = {
  name: "digits-mlp",
  data: { train: { builtin: "digits" } },
  model: { arch: "mlp", hidden: [64] },
  training: { epochs: 5, batch_size: 64, learning_rate: 0.005 },
};
const $ = (sel) => document.querySelector(sel);
let viewTimer = null;
let stream = null;

// ---------------------------------------------------------------------------------------- API calls

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.field = err.field;
  }
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}`, ...(options.headers || {}) };
  if (options.body && typeof options.body === "string") headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    location.hash = "#/signin";
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -------------------------------------------------------------------------------------------- views

function show(name) {
  document.querySelectorAll(".view").forEach((el) => { el.hidden = el.id !== `view-${name}`; });
  $("#nav").hidden = name === "signin";
}

function route() {
  clearInterval(viewTimer);
  if (stream) { stream.abort(); stream = null; }
  const hash = location.hash || "#/jobs";
  if (!sessionStorage.getItem(KEY)) { show("signin"); return; }
  const job = hash.match(/^#\/jobs\/([\w-]+)$/);
  if (job) { showJob(job[1]); return; }
  if (hash === "#/submit") { show("submit"); return; }
  showJobs();
}

function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
function pct(x) { return typeof x === "number" ? `${(100 * x).toFixed(1)}%` : ""; }

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function showJobs() {
  show("jobs");
  const load = async () => {
    const status = $("#filter-status").value;
    const query = new URLSearchParams({ limit: "100" });
    if (status) query.set("status", status);
    const page = await api(`/v1/jobs?${query}`);
    const needle = $("#filter-name").value.trim().toLowerCase();
    const body = $("#jobs-table tbody");
    body.replaceChildren();
    for (const job of page.data) {
      if (needle && !(job.name || "").toLowerCase().includes(needle) && !job.id.includes(needle)) continue;
      const row = body.insertRow();
      row.dataset.id = job.id;
      const link = document.createElement("a");
      link.href = `#/jobs/${job.id}`;
      link.textContent = job.id;
      row.insertCell().append(link);
      cell(row, job.name || "");
      cell(row, job.status, `status ${job.status}`);
      const p = job.progress || {};
      cell(row, p.epochs ? `epoch ${p.epoch}/${p.epochs}` : "");
      cell(row, pct((job.result || {}).test_accuracy));
      cell(row, fmtTime(job.created_at));
    }
  };
  await load().catch(() => {});
  viewTimer = setInterval(() => load().catch(() => {}), 3000);
}

// ------------------------------------------------------------------------------------------ the job

async function showJob(id) {
  show("job");
  $("#events").replaceChildren();
  $("#artifacts").replaceChildren();
  $("#job-result tbody").replaceChildren();
  ["#acc-chart", "#loss-chart"].forEach((s) => $(s).replaceChildren());
  let job;
  try {
    job = await api(`/v1/jobs/${id}`);
  } catch (e) {
    $("#job-title").textContent = id;
    $("#job-error").textContent = e.message;
    return;
  }
  renderJob(job);
  $("#job-spec").textContent = JSON.stringify(job.spec, null, 2);
  await refreshMetrics(id);
  let pending = null;
  const refresh = () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      const fresh = await api(`/v1/jobs/${id}`).catch(() => null);
      if (fresh) renderJob(fresh);
      await refreshMetrics(id);
      if (fresh && ["succeeded", "failed", "cancelled"].includes(fresh.status)) await refreshArtifacts(id);
    }, 200);
  };
  stream = followEvents(id, (event) => {
    addEvent(event);
    if (event.message.startsWith("epoch ") || event.message.startsWith("job ")) refresh();
  }, refresh);
  if (["succeeded", "failed", "cancelled"].includes(job.status)) await refreshArtifacts(id);
}

function renderJob(job) {
  $("#job-title").textContent = job.name ? `${job.name} (${job.id})` : job.id;
  const status = $("#job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  const p = job.progress || {};
  $("#job-progress").textContent = p.epochs ? `epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.steps || "?"}` : "";
  $("#job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  const body = $("#job-result tbody");
  body.replaceChildren();
  for (const [key, value] of Object.entries(job.result || {})) {
    if (typeof value === "object") continue;
    const row = body.insertRow();
    cell(row, key);
    cell(row, typeof value === "number" ? String(Math.round(value * 10000) / 10000) : String(value));
  }
}

function addEvent(event) {
  const li = document.createElement("li");
  li.value = event.seq;
  li.textContent = `${new Date(event.created_at).toLocaleTimeString()}  ${event.message}`;
  if (event.level === "error") li.className = "error";
  $("#events").append(li);
  li.scrollIntoView({ block: "nearest" });
}

async function refreshArtifacts(id) {
  const list = $("#artifacts");
  const page = await api(`/v1/jobs/${id}/artifacts`).catch(() => ({ data: [] }));
  list.replaceChildren();
  for (const artifact of page.data) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = "#";
    a.dataset.name = artifact.name;
    a.textContent = artifact.name;
    a.addEventListener("click", (e) => { e.preventDefault(); download(id, artifact.name); });
    li.append(a, ` (${artifact.bytes.toLocaleString()} bytes)`);
    list.append(li);
  }
}

async function download(id, name) {
  const link = await api(`/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}/link`);
  let href = link.url;
  if (!href) {  // a folder store: fetch the bytes with the key, then hand them to the browser
    const response = await fetch(`/v1/jobs/${id}/artifacts/${encodeURIComponent(name)}`, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` },
    });
    href = URL.createObjectURL(await response.blob());
  }
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

// Server-sent events over fetch (EventSource cannot send the Authorization header). Resumes after the
// last seq it saw (Last-Event-ID) when the connection drops before the job ends.
function followEvents(id, onEvent, onEnd) {
  const controller = new AbortController();
  let lastId = 0;
  let ended = false;
  const connect = async () => {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` };
    if (lastId) headers["Last-Event-ID"] = String(lastId);
    const response = await fetch(`/v1/jobs/${id}/events?stream=true`, { headers, signal: controller.signal });
    if (!response.ok) throw new Error(`stream: HTTP ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let type = "message", data = "", seq = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("id:")) seq = Number(line.slice(3).trim());
          else if (line.startsWith("event:")) type = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (type === "end") { ended = true; onEnd(JSON.parse(data)); return; }
        if (type === "message" && data) {
          if (seq !== null) lastId = seq;
          onEvent(JSON.parse(data));
        }
      }
    }
  };
  const loop = async () => {
    while (!ended && !controller.signal.aborted) {
      try { await connect(); } catch (e) { if (controller.signal.aborted) return; }
      if (!ended) await new Promise((r) => setTimeout(r, 1000));
    }
  };
  loop();
  return controller;
}

// ------------------------------------------------------------------------------------------- charts

const ACC_METRICS = [
  { key: "val_accuracy", test: "test_accuracy", title: "Validation accuracy" },
  { key: "val_token_accuracy", test: "token_accuracy", title: "Validation token accuracy" },
  { key: "val_cosine", test: "test_cosine", title: "Validation cosine similarity" },
];

async function refreshMetrics(id) {
  const metrics = await api(`/v1/jobs/${id}/metrics`).catch(() => null);
  if (!metrics) return;
  const acc = [], loss = [], lines = [];
  // classifiers report val_accuracy, causal LMs val_token_accuracy, embedding students val_cosine
  const metric = ACC_METRICS.find((m) => metrics.series.some((s) => s.points.some((p) => typeof p[m.key] === "number")))
    || ACC_METRICS[0];
  $("#acc-title").textContent = metric.title;
  for (const s of metrics.series) {
    const color = COLORS[s.role] || "#555";
    if (s.role === "teacher") {
      const y = s.summary[metric.key] ?? s.summary[metric.test];
      if (typeof y === "number") lines.push({ name: s.name, role: s.role, color, y });
      continue;
    }
    const pts = (key) => s.points.filter((p) => typeof p[key] === "number").map((p) => ({ x: p.epoch, y: p[key] }));
    acc.push({ name: s.name, role: s.role, color, points: pts(metric.key) });
    loss.push({ name: `${s.name} train`, role: s.role, color, points: pts("train_loss") });
    if (s.role === "student") loss.push({ name: `${s.name} val`, role: "val", color: COLORS.val, points: pts("val_loss") });
  }
  drawChart($("#acc-chart"), acc, lines);
  drawChart($("#loss-chart"), loss, []);
  const legend = $("#legend");
  legend.replaceChildren();
  for (const s of [...acc, ...lines, ...loss.filter((l) => l.role === "val" && l.points.length)]) {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color;
    span.append(swatch, s.name);
    legend.append(span);
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawChart(svg, series, lines) {
  svg.replaceChildren();
  const W = 480, H = 260, L = 44, R = 10, T = 10, B = 28;
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const ys = [...series.flatMap((s) => s.points.map((p) => p.y)), ...lines.map((l) => l.y)];
  if (!ys.length) {
    const t = svgEl("text", { x: W / 2, y: H / 2, "text-anchor": "middle" });
    t.textContent = "waiting for the first epoch";
    svg.append(t);
    return;
  }
  const x0 = Math.min(1, ...xs), x1 = Math.max(x0 + 1, ...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.05;
  y0 = y0 >= 0 ? Math.max(0, y0 - pad) : y0 - pad;  // losses and accuracies never dip below zero
  y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    svg.append(svgEl("line", { class: "grid", x1: L, x2: W - R, y1: sy(y), y2: sy(y) }));
    const label = svgEl("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" });
    const span = y1 - y0;
    const digits = span < 2 ? 2 : span < 20 ? 1 : 0;
    label.textContent = (Math.abs(y) < 1e-9 ? 0 : y).toFixed(digits);
    svg.append(label);
  }
  const xt = svgEl("text", { x: W - R, y: H - 6, "text-anchor": "end" });
  xt.textContent = `epoch ${x1}`;
  const x0t = svgEl("text", { x: L, y: H - 6 });
  x0t.textContent = `epoch ${x0}`;
  svg.append(svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    svgEl("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }), xt, x0t);
  for (const l of lines) {
    svg.append(svgEl("line", {
      class: `series series-${l.role}`, x1: L, x2: W - R, y1: sy(l.y), y2: sy(l.y),
      stroke: l.color, "stroke-dasharray": "5 4",
    }));
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
    svg.append(svgEl("path", { class: `series series-${s.role}`, d, stroke: s.color, "data-points": s.points.length }));
    for (const p of s.points) svg.append(svgEl("circle", { cx: sx(p.x), cy: sy(p.y), r: 2.5, fill: s.color }));
  }
}

// ------------------------------------------------------------------------------------------- wiring

function setup() {
  $("#signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    try {
      await api("/v1/jobs?limit=1");
      $("#signin-error").textContent = "";
      location.hash = "#/jobs";
      route();
    } catch (err) {
      sessionStorage.removeItem(KEY);
      $("#signin-error").textContent = err.message;
    }
  });
  $("#signout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.hash = "#/signin"; });
  $("#filter-status").addEventListener("change", () => route());
  $("#filter-name").addEventListener("input", () => route());
  $("#spec").value = JSON.stringify(EXAMPLE_SPEC, null, 2);
  $("#submit").addEventListener("click", async () => {
    $("#submit-error").textContent = "";
    let spec;
    try { spec = JSON.parse($("#spec").value); } catch (e) { $("#submit-error").textContent = `spec: not JSON (${e.message})`; return; }
    try {
      const job = await api("/v1/jobs", { method: "POST", body: JSON.stringify(spec) });
      location.hash = `#/jobs/${job.id}`;
    } catch (err) {
      $("#submit-error").textContent = err.field ? `${err.message}` : err.message;
    }
  });
  const zone = $("#dropzone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) $("#spec").value = await file.text();
  });
  window.addEventListener("hashchange", route);
  route();
}

document.addEventListener("DOMContentLoaded", setup);
