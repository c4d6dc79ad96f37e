// The live sentiment chart, shared by the dashboard (gateway/dashboard) and the Twitch extension
// (extension/ holds a byte-identical copy; tests/gateway/test_extension_files.py checks it).
// Plain SVG, no library: history solid, forecast dashed with its prediction band, and the
// forecast drawn in grey and labelled "not trusted" when the chat service says its backtest
// does not beat the baselines.
(function (root) {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const STEP_S = 30;

  function node(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // One panel: history [{t, v}] solid, forecast [{t, v, lo, hi}] dashed, y from lo to hi.
  function panel(svg, o) {
    const W = Number(svg.getAttribute("width")) || svg.clientWidth || 600;
    const H = Number(svg.getAttribute("height")) || svg.clientHeight || 220;
    const m = { l: 40, r: 12, t: 22, b: 24 };
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const all = o.history.concat(o.forecast);
    const t0 = all.length ? Math.min(...all.map((p) => p.t)) : 0;
    const t1 = all.length ? Math.max(...all.map((p) => p.t), t0 + STEP_S) : STEP_S;
    const x = (t) => m.l + ((t - t0) / (t1 - t0 || 1)) * (W - m.l - m.r);
    const y = (v) => m.t + (1 - (Math.max(o.lo, Math.min(o.hi, v)) - o.lo) / (o.hi - o.lo)) * (H - m.t - m.b);
    const axis = node("g", { class: "axis", fill: "#6b7280", "font-size": "11" });
    for (const v of o.ticks) {
      axis.append(node("line", { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v), stroke: v === 0 ? "#9ca3af" : "#e5e7eb" }));
      axis.append(node("text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, o.format(v)));
    }
    axis.append(node("text", { x: m.l, y: H - 6 }, `${Math.round(t0)} s`));
    axis.append(node("text", { x: W - m.r, y: H - 6, "text-anchor": "end" }, `${Math.round(t1)} s`));
    axis.append(node("text", { x: m.l, y: 14, fill: "#111827", "font-weight": "600" }, o.title));
    svg.append(axis);
    const line = (pts) => pts.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    const colour = o.trusted ? o.colour : "#9ca3af";
    if (o.forecast.length) {
      const band = o.forecast.filter((p) => p.lo !== undefined && p.hi !== undefined);
      if (band.length) {
        const upper = band.map((p) => ({ t: p.t, v: p.hi })), lower = band.map((p) => ({ t: p.t, v: p.lo })).reverse();
        svg.append(node("polygon", { class: "band", points: line(upper.concat(lower)), fill: colour, "fill-opacity": "0.15" }));
      }
      // The forecast leaves from the last interval it was issued on, not from later history.
      const before = o.history.filter((p) => p.t < o.forecast[0].t);
      const joined = (before.length ? [before[before.length - 1]] : []).concat(o.forecast);
      svg.append(node("polyline", { class: "forecast", points: line(joined), fill: "none", stroke: colour, "stroke-width": 2, "stroke-dasharray": "6 4" }));
      for (const p of o.forecast) svg.append(node("circle", { class: "fc", cx: x(p.t), cy: y(p.v), r: 3, fill: "#fff", stroke: colour }));
      const label = W < 500 ? (o.trusted ? "forecast: trusted" : "forecast: not trusted")
        : (o.trusted ? "forecast (trusted)" : "forecast (not trusted: a baseline does better)");
      svg.append(node("text", { class: "trust", x: W - m.r, y: 14, "text-anchor": "end", fill: colour, "font-size": "11" }, label));
    }
    if (o.history.length) {
      svg.append(node("polyline", { class: "history", points: line(o.history), fill: "none", stroke: o.colour, "stroke-width": 2 }));
      for (const p of o.history) {
        const c = node("circle", { class: "pt", cx: x(p.t), cy: y(p.v), r: 3, fill: o.colour });
        c.append(node("title", {}, `${Math.round(p.t)} s: ${o.format(p.v)}`));
        svg.append(c);
      }
    }
    svg.dataset.historyPoints = String(o.history.length);
    svg.dataset.forecastPoints = String(o.forecast.length);
    svg.dataset.trusted = String(o.trusted);
  }

  const mid = (p) => (p.start_s || 0) + STEP_S / 2;

  // sentiment: {series: [SentimentPoint], forecast: SentimentForecast} as the gateway's JSON has them.
  function drawSentiment(svg, sentiment) {
    const series = (sentiment && sentiment.series) || [];
    const f = (sentiment && sentiment.forecast) || {};
    const pts = f.points || [];
    panel(svg, {
      title: "Chat sentiment", colour: "#2563eb", lo: -1, hi: 1, ticks: [-1, -0.5, 0, 0.5, 1], format: (v) => v.toFixed(1),
      history: series.map((p) => ({ t: mid(p), v: p.compound || 0 })),
      forecast: pts.map((p, i) => ({ t: mid(p), v: p.compound || 0, lo: (f.lower || [])[i], hi: (f.upper || [])[i] })),
      trusted: !!f.trustworthy,
    });
  }

  // Chat activity in messages per second: history from each interval's count, forecast when the chat service gives one.
  function drawActivity(svg, sentiment) {
    const series = (sentiment && sentiment.series) || [];
    const f = (sentiment && sentiment.forecast) || {};
    const rate = (p) => (p.messages || 0) / Math.max(1, (p.end_s || 0) - (p.start_s || 0));
    const history = series.map((p) => ({ t: mid(p), v: rate(p) }));
    const forecast = (f.activity || []).map((v, i) => ({ t: mid((f.points || [])[i] || {}), v, lo: (f.activity_lower || [])[i], hi: (f.activity_upper || [])[i] }));
    const top = Math.max(1, ...history.map((p) => p.v), ...forecast.map((p) => p.hi || p.v)) * 1.1;
    panel(svg, {
      title: "Chat messages per second", colour: "#059669", lo: 0, hi: top, ticks: [0, top / 2, top], format: (v) => v.toFixed(1),
      history, forecast, trusted: !!f.activity_trustworthy,
    });
  }

  root.SentimentChart = { drawSentiment, drawActivity };
})(typeof window !== "undefined" ? window : this);
