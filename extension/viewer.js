// The extension's viewer side (panel and video overlay): authorize through the Twitch helper,
// ask the EBS for the channel's live view with the extension JWT, draw the sentiment chart
// (the dashboard's own, sentiment-chart.js) and, in the panel, the latest highlight clips.
"use strict";
(function () {
  const POLL_MS = 15000;
  const meta = document.querySelector('meta[name="streamsight-ebs"]');
  const ebs = (window.STREAMSIGHT_EBS || (meta && meta.content) || "").replace(/\/$/, "");
  const status = document.getElementById("status");
  const clipsBox = document.getElementById("clips");
  let auth = null, timer = null;
  window.streamsightExtension = { views: 0, lastError: "" };

  function say(text) { status.textContent = text; }

  async function refresh() {
    clearTimeout(timer);
    if (!auth) return;
    try {
      const r = await fetch(`${ebs}/ebs/v1/channel`, { headers: { Authorization: `Bearer ${auth.token}` }, cache: "no-store" });
      if (r.status === 404) { say("This channel is not being analysed right now."); return schedule(POLL_MS * 2); }
      if (r.status === 429) { return schedule(Number(r.headers.get("Retry-After") || 5) * 1000); }
      if (!r.ok) { say("streamsight is unavailable."); window.streamsightExtension.lastError = String(r.status); return schedule(POLL_MS); }
      draw(await r.json());
    } catch (err) {
      say("streamsight is unreachable.");
      window.streamsightExtension.lastError = String(err);
    }
    schedule(POLL_MS);
  }

  function schedule(ms) { timer = setTimeout(refresh, ms); }

  function draw(view) {
    window.streamsightExtension.views += 1;
    const n = (view.sentiment.series || []).length;
    const f = view.sentiment.forecast;
    say(n ? `Last ${n} × 30 s of chat` + (f && f.points && f.points.length ? (f.trustworthy ? ", with a forecast" : ", forecast uncertain") : "") : "No chat yet.");
    SentimentChart.drawSentiment(document.getElementById("sentiment"), view.sentiment);
    if (!clipsBox) return;
    const shown = new Set([...clipsBox.children].map((d) => d.dataset.id));
    for (const h of view.highlights || []) {
      if (!h.clip_url || shown.has(h.highlight_id)) continue;
      const d = document.createElement("div");
      d.className = "clip"; d.dataset.id = h.highlight_id;
      const v = document.createElement("video");
      v.controls = true; v.muted = true; v.preload = "auto"; v.src = h.clip_url;
      const caption = document.createElement("div");
      caption.textContent = `${Math.round(h.start_s || 0)}–${Math.round(h.end_s || 0)} s` + (h.reason ? ` · ${h.reason}` : "");
      d.append(v, caption);
      clipsBox.prepend(d);
    }
  }

  if (!window.Twitch || !window.Twitch.ext) { say("Open this page as a Twitch extension."); return; }
  window.Twitch.ext.onAuthorized((a) => { auth = a; refresh(); });
})();
