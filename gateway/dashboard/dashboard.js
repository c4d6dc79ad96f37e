// The live dashboard: streams, one stream's timeline, sentiment and activity charts, clips and
// event feed, kept current over Server-Sent Events. Every event carries its sequence; the page
// applies each once, and a reconnect (the browser's own, or ours after a refused one) resumes
// after the last sequence applied, so nothing is missed and nothing is applied twice.
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const withToken = (path, extra) => {
  const q = [token ? `token=${encodeURIComponent(token)}` : "", extra || ""].filter(Boolean).join("&");
  return q ? `${path}?${q}` : path;
};
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const stateName = (s) => (s || "").replace("STREAM_STATE_", "");
const NS = "http://www.w3.org/2000/svg";
const svgNode = (tag, attrs) => { const e = document.createElementNS(NS, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; };

// What the page shows of the selected stream, built from its events.
let view = null, source = null, retry = null;
const drawn = [];  // {sequence, kind, published_ms, drawn_ms}: the page's own event latency, read by tests
window.streamsight = { drawn, view: () => view };

function fresh(id) {
  return { id, lastSeq: 0, windows: new Map(), highlights: new Map(), glitches: new Map(), sentiment: new Map(), forecast: null,
           health: new Map(), incidents: [], mediaTime: 0, stream: null };
}

async function loadStreams() {
  const r = await fetch(withToken("/api/streams"));
  if (!r.ok) return;
  const { streams } = await r.json();
  if (!streams.length) return;
  document.getElementById("streams").replaceChildren(...streams.slice().reverse().map((s) => {
    const d = el("div", "stream" + (view && s.id === view.id ? " selected" : ""));
    d.dataset.id = s.id;
    d.append(el("strong", "", s.id + " "), el("span", "state " + stateName(s.state), stateName(s.state)));
    d.append(el("div", "muted", s.source));
    d.onclick = () => select(s.id);
    return d;
  }));
}

async function loadDetail() {
  const r = await fetch(withToken(`/api/streams/${encodeURIComponent(view.id)}`));
  if (!r.ok) return;
  const doc = await r.json();
  view.stream = doc.stream;
  view.mediaTime = Math.max(view.mediaTime, doc.stream.media_time_s || 0);
  drawHeader();
}

function drawHeader() {
  const s = view.stream || { id: view.id };
  document.getElementById("title").textContent = view.id;
  document.getElementById("detail").textContent =
    `${stateName(s.state)} · ${view.mediaTime.toFixed(1)} s of media` + (s.duration_s ? ` of ${s.duration_s.toFixed(1)} s` : "") +
    ` · ${view.highlights.size} highlights · ${view.glitches.size} glitches` + (s.last_error ? ` · ${s.last_error}` : "");
}

function drawTimeline() {
  const svg = document.getElementById("timeline");
  const W = 900, H = 120, top = 10, bottom = 100;
  const ends = [view.mediaTime, ...[...view.windows.values()].map((w) => w.end_s || 0), ...[...view.highlights.values()].map((h) => h.end_s || 0)];
  const T = Math.max(30, ...ends);
  const x = (t) => 4 + (t / T) * (W - 8);
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  for (const w of view.windows.values()) {
    const hgt = Math.max(2, (w.score || 0) * (bottom - top));  // a window scored 0 still shows
    svg.append(svgNode("rect", { class: "win", x: x(w.start_s || 0) + 1, y: bottom - hgt, width: Math.max(1, x(w.end_s || 0) - x(w.start_s || 0) - 2), height: hgt, fill: w.missing && w.missing.length ? "#cbd5e1" : "#93c5fd" }));
  }
  for (const h of view.highlights.values()) svg.append(svgNode("rect", { class: "hl", x: x(h.start_s || 0), y: top, width: Math.max(2, x(h.end_s || 0) - x(h.start_s || 0)), height: bottom - top, fill: "#fbbf24", "fill-opacity": 0.45, stroke: "#d97706" }));
  for (const g of view.glitches.values()) svg.append(svgNode("rect", { class: "gl", x: x(g.start_s || 0), y: bottom + 4, width: Math.max(3, x(g.end_s || g.start_s || 0) - x(g.start_s || 0)), height: 8, fill: "#ef4444" }));
  for (const h of view.health.values()) {  // a HealthIncident from the health monitor, START to END
    const r = svgNode("rect", { class: "inc", x: x(h.start_s || 0), y: top, width: Math.max(3, x(h.end_s || h.start_s || 0) - x(h.start_s || 0)), height: bottom - top, fill: "#7c3aed", "fill-opacity": 0.3 });
    const t = svgNode("title", {}); t.textContent = `${(h.kind || "").replace("HEALTH_KIND_", "").toLowerCase()}: ${h.detail || ""}`; r.append(t);
    svg.append(r);
  }
  for (const i of view.incidents) svg.append(svgNode("rect", { class: "inc", x: x(i.at) - 1.5, y: top, width: 3, height: bottom - top, fill: "#7c3aed" }));
  svg.append(svgNode("line", { x1: 4, x2: W - 4, y1: bottom, y2: bottom, stroke: "#9ca3af" }));
  svg.dataset.windows = String(view.windows.size);
}

function sentimentDoc() {
  return { series: [...view.sentiment.values()].sort((a, b) => a.start_s - b.start_s), forecast: view.forecast };
}

function drawCharts() {
  SentimentChart.drawSentiment(document.getElementById("sentiment"), sentimentDoc());
  SentimentChart.drawActivity(document.getElementById("activity"), sentimentDoc());
}

function drawClips() {
  const box = document.getElementById("clips");
  const shown = new Set([...box.children].map((d) => d.dataset.id));
  const highlights = [...view.highlights.values()].filter((h) => h.clip && h.clip.clip_id).sort((a, b) => a.start_s - b.start_s);
  for (const h of highlights) {
    if (shown.has(h.highlight_id)) continue;  // a playing video is left alone
    const d = el("div");
    d.dataset.id = h.highlight_id;
    const v = el("video"); v.controls = true; v.preload = "auto"; v.muted = true;
    v.src = withToken(`/clips/${encodeURIComponent(view.id)}/${encodeURIComponent(h.clip.clip_id)}.mp4`);
    d.append(v, el("div", "muted", `#${h.rank || "?"} · ${(h.start_s || 0).toFixed(1)}–${(h.end_s || 0).toFixed(1)} s · score ${(h.score || 0).toFixed(2)}` + (h.reason ? ` · ${h.reason}` : "")));
    if (h.vertical_clip && h.vertical_clip.clip_id) {  // the 9:16 copy, when fusion's vertical_clips is on
      const a = el("a", "muted", "9:16 clip");
      a.href = withToken(`/clips/${encodeURIComponent(view.id)}/${encodeURIComponent(h.vertical_clip.clip_id)}.mp4`);
      d.append(a);
    }
    box.append(d);
  }
}

function describe(kind, p) {
  if (kind === "highlight") return `highlight ${(p.start_s || 0).toFixed(1)}–${(p.end_s || 0).toFixed(1)} s score ${(p.score || 0).toFixed(2)}`;
  if (kind === "glitch") return `glitch ${(p.phase || "").replace("PHASE_", "").toLowerCase()} ${(p.kind || "").replace("GLITCH_KIND_", "").toLowerCase()} at ${(p.start_s || 0).toFixed(1)} s`;
  if (kind === "status") return `status ${stateName(p.state)} ${p.reason || ""} ${p.detail || ""}`;
  if (kind === "health") return `health ${(p.phase || "").replace("PHASE_", "").toLowerCase()} ${(p.kind || "").replace("HEALTH_KIND_", "").toLowerCase()} at ${(p.start_s || 0).toFixed(1)} s ${p.detail || ""}`;
  if (kind === "score") return `window ${p.window || 0} score ${(p.score || 0).toFixed(2)}`;
  if (kind === "sentiment") return `sentiment ${(p.start_s || 0).toFixed(0)} s: ${(p.compound || 0).toFixed(2)} (${p.messages || 0} messages)`;
  if (kind === "forecast") return `forecast from ${(p.issued_at_s || 0).toFixed(0)} s: ${(p.points || []).map((q) => (q.compound || 0).toFixed(2)).join(", ")}${p.trustworthy ? "" : " (not trusted)"}`;
  return kind;
}

// Apply one event to the view; returns what must be redrawn.
function apply(kind, e) {
  const p = e[kind] || {};
  if (kind === "score") { view.windows.set(p.window || 0, p); view.mediaTime = Math.max(view.mediaTime, p.end_s || 0); return "timeline"; }
  if (kind === "highlight") { view.highlights.set(p.highlight_id, p); return "highlight"; }
  if (kind === "glitch") { view.glitches.set(p.glitch_id, p); return "timeline"; }
  if (kind === "health") { view.health.set(p.incident_id, p); return "timeline"; }
  if (kind === "sentiment") { view.sentiment.set(p.start_s || 0, p); return "charts"; }
  if (kind === "forecast") { view.forecast = p; return "charts"; }
  if (kind === "status") {
    view.mediaTime = Math.max(view.mediaTime, p.media_time_s || 0);
    if (p.gap_s || /reconnect|gap|stall|unreachable/.test(p.reason || "")) view.incidents.push({ at: p.media_time_s || 0, reason: p.reason });
    if (view.stream && p.state && p.state !== "STREAM_STATE_UNSPECIFIED") view.stream.state = p.state;
    return "status";
  }
  return "";
}

function onEvent(kind, msg) {
  const e = JSON.parse(msg.data);
  const seq = Number(e.sequence || 0);
  if (!view || e.stream_id !== view.id || seq <= view.lastSeq) return;  // a replayed duplicate
  view.lastSeq = seq;
  const what = apply(kind, e);
  if (what === "timeline" || what === "highlight" || what === "status") drawTimeline();
  if (what === "highlight") drawClips();
  if (what === "charts") drawCharts();
  drawHeader();
  document.getElementById("feed").prepend(el("div", kind, `#${seq} ${describe(kind, e[kind] || {})}`));
  if (what === "status") loadStreams();
  drawn.push({ sequence: seq, kind, published_ms: Date.parse(e.time), drawn_ms: Date.now() });
  if (drawn.length > 5000) drawn.splice(0, 1000);
}

function connect() {
  clearTimeout(retry);
  if (source) source.close();
  source = new EventSource(withToken("/api/events", `stream=${encodeURIComponent(view.id)}&after=${view.lastSeq}`));
  const live = document.getElementById("live");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => {
    live.textContent = "reconnecting"; live.className = "live off";
    // The browser retries by itself (with Last-Event-ID); a refused connection it gives up on.
    if (source.readyState === EventSource.CLOSED) retry = setTimeout(connect, 2000);
  };
  for (const kind of ["status", "highlight", "glitch", "health", "score", "sentiment", "forecast"]) source.addEventListener(kind, (msg) => onEvent(kind, msg));
}

function select(id) {
  view = fresh(id);
  document.getElementById("feed").replaceChildren();
  document.getElementById("clips").replaceChildren();
  drawTimeline(); drawCharts(); drawHeader();
  loadDetail(); loadStreams();
  connect();
  history.replaceState(null, "", withToken(location.pathname, `stream=${encodeURIComponent(id)}`));
}

loadStreams().then(() => performance.mark("streamsight-streams-drawn"));
setInterval(loadStreams, 3000);
if (params.get("stream")) select(params.get("stream"));
