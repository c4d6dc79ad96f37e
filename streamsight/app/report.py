"""The analyze job's outputs: `report.json` (stable, documented in docs/report.md and checked
against streamsight/app/report.schema.json) and `report.html` (a self-contained page: score
timeline, sentiment series with forecast, glitch and stream-health marks, clip players; inline SVG, no script).
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.app.results import StreamResults, health_name, overlapping_health, overlaps_glitch, ranked

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def _why(contributions) -> list[dict]:
    return [{"feature": c.feature, "weight": round(c.weight, 4), "value": round(c.value, 4)} for c in contributions]


def _modalities(values) -> list[str]:
    return [common_pb2.Modality.Name(m).removeprefix("MODALITY_").lower() for m in values]


def missing_counts(scores) -> dict[str, int]:
    """Windows scored with each modality missing (imputed), from WindowScores."""
    counts = {"vision": 0, "audio": 0, "chat": 0}
    for s in scores:
        for m in _modalities(s.missing):
            counts[m] = counts.get(m, 0) + 1
    return counts


def summary_lines(results: StreamResults) -> list[str]:
    """The CLI's lines on how complete the scoring was: e.g. "windows scored without vision: 2 of 9"."""
    scores = list(results.scores.values())
    if not scores:
        return []
    counts = missing_counts(scores)
    lines = [f"windows scored without {m}: {n} of {len(scores)}" for m, n in counts.items() if n]
    return lines or [f"windows scored: {len(scores)}, every one with all its expected modalities"]


def build(results: StreamResults, clip_files: dict[str, str] | None = None, services: list[str] | None = None) -> dict:
    """The report as a JSON-ready dict; `clip_files` maps clip ids to paths relative to the report."""
    clip_files = clip_files or {}
    windows = [
        {
            "index": s.window,
            "start_s": round(s.start_s, 3),
            "end_s": round(s.end_s, 3),
            "score": round(s.score, 4),
            "missing": _modalities(s.missing),
            "complete": not s.missing,
            "completion": s.completion or None,
            "features": {k: round(v, 5) for k, v in sorted(s.features.items())},
            "why": _why(s.why),
            "glitch": overlaps_glitch(s.start_s, s.end_s, results.glitches.values()),
            "health": overlapping_health(s.start_s, s.end_s, results.health.values()),
        }
        for s in sorted(results.scores.values(), key=lambda s: s.window)
    ]
    highlights = [
        {
            "rank": rank,
            "reason": h.reason or None,
            "peak_s": round(h.peak_s, 3) if h.resolution == "moment" else None,
            "chat_lag_s": round(h.chat_lag_s, 3) if h.chat_lag_s else None,
            "latency_s": round(h.latency_s, 3),
            "resolution": h.resolution or "windows",
            "glitch": h.glitch or overlaps_glitch(h.start_s, h.end_s, results.glitches.values()),
            "start_s": round(h.start_s, 3),
            "end_s": round(h.end_s, 3),
            "score": round(h.score, 4),
            "clip": clip_files.get(h.clip.clip_id) if h.clip.clip_id else None,
            "clip_start_s": round(h.clip.start_s, 3) if h.clip.clip_id else None,
            "vertical_clip": clip_files.get(h.vertical_clip.clip_id) if h.vertical_clip.clip_id else None,
            "why": _why(h.why),
            "windows": list(h.windows),
            "missing": _modalities(h.missing),
        }
        for rank, h in ranked(results.highlights.values())
    ]
    glitches = [
        {
            "start_s": round(g.start_s, 3),
            "end_s": round(g.end_s, 3),
            "kind": events_pb2.GlitchKind.Name(g.kind).removeprefix("GLITCH_KIND_").lower(),
            "severity": round(g.severity, 4),
            "confidence": round(g.confidence, 4),
            "open": g.phase != events_pb2.PHASE_END,
        }
        for g in sorted(results.glitches.values(), key=lambda g: g.start_s)
    ]
    health = [
        {
            "kind": health_name(h.kind),
            "start_s": round(h.start_s, 3),
            "end_s": round(max(h.end_s, h.start_s), 3) if h.phase == events_pb2.PHASE_END else None,
            "severity": round(h.severity, 4),
            "detail": h.detail,
        }
        for h in sorted(results.health.values(), key=lambda h: (h.start_s, h.incident_id))
    ]
    forecast = results.forecast
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        "source": results.source,
        "stream_id": results.stream_id,
        "state": common_pb2.StreamState.Name(results.state).removeprefix("STREAM_STATE_").lower(),
        "error": results.last_error or None,
        "duration_s": round(results.duration_s or results.media_time_s, 3),
        "services": services or [],
        "windows": windows,
        "windows_incomplete": sum(1 for w in windows if w["missing"]),
        "windows_missing": missing_counts(results.scores.values()),
        "highlights": highlights,
        "glitches": glitches,
        "health": health,
        "sentiment": {
            "series": [
                {"start_s": round(p.start_s, 3), "compound": round(p.compound, 4), "messages": p.messages}
                for p in sorted(results.sentiment.values(), key=lambda p: p.start_s)
            ],
            "forecast": [
                {"start_s": round(p.start_s, 3), "compound": round(p.compound, 4), "baseline": round(p.baseline, 4)}
                for p in (forecast.points if forecast else [])
            ],
            "forecast_trustworthy": bool(forecast and forecast.trustworthy),
        },
    }


def write_json(report: dict, path: Path) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


# -- HTML ------------------------------------------------------------------------------------
_W, _H, _PAD = 900, 180, 36


def _x(t: float, duration: float) -> float:
    return _PAD + (_W - 2 * _PAD) * (t / duration if duration else 0.0)


def _timeline_svg(report: dict) -> str:
    duration = max(report["duration_s"], 1.0)
    parts = [f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="highlight score per window">']
    base = _H - _PAD
    for h in report["highlights"]:
        x0, x1 = _x(h["start_s"], duration), _x(h["end_s"], duration)
        parts.append(f'<rect class="hl" x="{x0:.1f}" y="8" width="{max(x1 - x0, 2):.1f}" height="{base - 8}"/>')
    for g in report["glitches"]:
        x0, x1 = _x(g["start_s"], duration), _x(g["end_s"], duration)
        parts.append(f'<rect class="gl" x="{x0:.1f}" y="{base + 4}" width="{max(x1 - x0, 3):.1f}" height="8"><title>{html.escape(g["kind"])}</title></rect>')
    for h in report.get("health", []):
        end = h["end_s"] if h["end_s"] is not None else duration  # still open when the report was written
        x0, x1 = _x(h["start_s"], duration), _x(end, duration)
        parts.append(f'<rect class="hp" x="{x0:.1f}" y="{base + 14}" width="{max(x1 - x0, 3):.1f}" height="6"><title>{html.escape(h["kind"])}: {html.escape(h["detail"])}</title></rect>')
    for w in report["windows"]:
        x0, x1 = _x(w["start_s"], duration), _x(w["end_s"], duration)
        top = base - (base - 16) * w["score"]
        missing = " missing" if w["missing"] else ""
        parts.append(
            f'<rect class="bar{missing}" x="{x0 + 1:.1f}" y="{top:.1f}" width="{max(x1 - x0 - 2, 1):.1f}" height="{base - top:.1f}">'
            f'<title>window {w["index"]}: {w["score"]:.2f}{" (missing " + ", ".join(w["missing"]) + ")" if w["missing"] else ""}</title></rect>'
        )
    parts.append(f'<line class="axis" x1="{_PAD}" y1="{base}" x2="{_W - _PAD}" y2="{base}"/>')
    for i in range(0, int(duration) + 1, max(10, int(duration / 10) // 10 * 10 or 10)):
        parts.append(f'<text x="{_x(i, duration):.1f}" y="{_H - 6}">{i}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def _sentiment_svg(report: dict) -> str:
    series, forecast = report["sentiment"]["series"], report["sentiment"]["forecast"]
    if not series:
        return '<p class="none">No chat for this stream.</p>'
    end = max([p["start_s"] + 30 for p in series] + [p["start_s"] + 30 for p in forecast] + [report["duration_s"]])

    def y(v: float) -> float:
        return _H / 2 - (_H / 2 - 12) * max(-1.0, min(1.0, v))

    def path(points, key) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{_x(p['start_s'] + 15, end):.1f},{y(p[key]):.1f}" for i, p in enumerate(points))

    parts = [f'<svg viewBox="0 0 {_W} {_H}" role="img" aria-label="chat sentiment per 30 s">']
    parts.append(f'<line class="axis" x1="{_PAD}" y1="{_H / 2}" x2="{_W - _PAD}" y2="{_H / 2}"/>')
    parts.append(f'<path class="series" d="{path(series, "compound")}"/>')
    if forecast:
        parts.append(f'<path class="forecast" d="{path(series[-1:] + forecast, "compound")}"/>')
        parts.append(f'<path class="baseline" d="{path(forecast, "baseline")}"/>')
    parts.append(f'<text x="4" y="16">+1</text><text x="4" y="{_H - 4}">-1</text></svg>')
    return "".join(parts)


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:960px;color:#1d232a;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem}
.meta{color:#5b6670} svg{width:100%;height:auto;background:#f6f8fa;border-radius:6px}
svg text{font-size:11px;fill:#5b6670} .axis{stroke:#9aa5b1}
.bar{fill:#3b82f6} .bar.missing{fill:#93c5fd} .hl{fill:#fde68a} .gl{fill:#dc2626} .hp{fill:#f97316}
.series{fill:none;stroke:#059669;stroke-width:2} .forecast{fill:none;stroke:#7c3aed;stroke-width:2;stroke-dasharray:6 4}
.baseline{fill:none;stroke:#9aa5b1;stroke-dasharray:2 3}
table{border-collapse:collapse;width:100%} td,th{padding:.35rem .5rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
.clips{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:1rem}
.clip{background:#f6f8fa;border-radius:6px;padding:.6rem} video{width:100%;border-radius:4px} video.vertical{width:auto;max-width:100%;max-height:360px;display:block;margin:.4rem auto 0}
.none{color:#5b6670} .warn{color:#92400e;background:#fef3c7;padding:.4rem .6rem;border-radius:4px} .legend span{margin-right:1rem} .sw{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
"""


def _fmt_why(why: list[dict], n: int = 3) -> str:
    return ", ".join(f"{html.escape(w['feature'])} {w['weight']:+.2f}" for w in why[:n]) or "-"


def _span(start_s: float, end_s: float | None) -> str:
    return f"{start_s:.1f}–{end_s:.1f} s" if end_s is not None else f"{start_s:.1f} s–(still open)"


def _incomplete_html(report: dict) -> str:
    """How many windows were scored with a modality missing, and which (visible, not only a colour)."""
    incomplete = [w for w in report["windows"] if w["missing"]]
    total = len(report["windows"])
    if not incomplete:
        return f'<p class="meta">All {total} windows were scored with every expected modality.</p>' if total else ""
    e = html.escape
    by = ", ".join(f"{e(m)} {n}" for m, n in report.get("windows_missing", {}).items() if n)
    rows = "".join(
        f"<tr><td>{w['index']}</td><td>{w['start_s']:.1f}–{w['end_s']:.1f} s</td><td>{e(', '.join(w['missing']))}</td>"
        f"<td>{e(w.get('completion') or '-')}</td></tr>"
        for w in incomplete
    )
    return (
        f'<p class="warn">{len(incomplete)} of {total} windows were scored with a modality missing ({by}); '
        "their scores use the training mean for it.</p>"
        f"<table><tr><th>window</th><th>when</th><th>missing</th><th>why scored then</th></tr>{rows}</table>"
    )


def write_html(report: dict, path: Path) -> None:
    e = html.escape
    rows = "".join(
        f"<tr><td>{h.get('rank', '')}</td><td>{h['start_s']:.1f}–{h['end_s']:.1f} s</td><td>{h['score']:.2f}</td>"
        f"<td>{e(h.get('reason') or '')}{' <b>(glitch)</b>' if h.get('glitch') else ''}</td><td>{_fmt_why(h['why'])}</td>"
        f"<td>{e(h['clip']) if h['clip'] else 'no clip'}"
        f"{'<br>vertical: ' + e(h['vertical_clip']) if h.get('vertical_clip') else ''}</td></tr>"
        for h in report["highlights"]
    ) or '<tr><td colspan="6" class="none">No highlight above the threshold.</td></tr>'
    glitch_rows = "".join(
        f"<tr><td>{g['start_s']:.1f}–{g['end_s']:.1f} s</td><td>{e(g['kind'])}</td><td>{g['severity']:.2f}</td></tr>"
        for g in report["glitches"]
    ) or '<tr><td colspan="3" class="none">No corruption seen.</td></tr>'
    health_rows = "".join(
        f"<tr><td>{_span(h['start_s'], h['end_s'])}</td><td>{e(h['kind'])}</td>"
        f"<td>{h['severity']:.2f}</td><td>{e(h['detail'])}</td></tr>"
        for h in report.get("health", [])
    ) or '<tr><td colspan="4" class="none">No stream health incident.</td></tr>'
    clips = "".join(
        f'<div class="clip"><video controls preload="metadata" src="{e(h["clip"])}"></video>'
        + (f'<video class="vertical" controls preload="metadata" src="{e(h["vertical_clip"])}"></video>' if h.get("vertical_clip") else "")
        + f"<div>{h['start_s']:.1f}–{h['end_s']:.1f} s · score {h['score']:.2f}"
        + (" · with its 9:16 copy" if h.get("vertical_clip") else "") + "</div></div>"
        for h in report["highlights"]
        if h["clip"]
    ) or '<p class="none">No clips.</p>'
    trust = "trustworthy" if report["sentiment"]["forecast_trustworthy"] else "not yet trustworthy (its backtest does not beat the running mean)"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamsight report: {e(Path(report['source']).name)}</title>
<style>{_CSS}</style></head><body>
<h1>streamsight report</h1>
<p class="meta">{e(report['source'])} · {report['duration_s']:.1f} s · state {e(report['state'])}{' · error: ' + e(report['error']) if report['error'] else ''} · {len(report['windows'])} windows scored ({sum(1 for w in report['windows'] if w['missing'])} with a modality missing) · generated {e(report['generated_at'])}</p>
<h2>Highlight score per 10-second window</h2>
<p class="legend"><span><i class="sw" style="background:#3b82f6"></i>score</span><span><i class="sw" style="background:#93c5fd"></i>scored with a modality missing</span><span><i class="sw" style="background:#fde68a"></i>highlight</span><span><i class="sw" style="background:#dc2626"></i>glitch</span><span><i class="sw" style="background:#f97316"></i>stream health</span></p>
{_timeline_svg(report)}
{_incomplete_html(report)}
<h2>Highlights</h2>
<table><tr><th>rank</th><th>when</th><th>score</th><th>reason</th><th>why (top features)</th><th>clip</th></tr>{rows}</table>
<h2>Clips</h2><div class="clips">{clips}</div>
<h2>Chat sentiment (30 s means, forecast dashed)</h2>
{_sentiment_svg(report)}
<p class="meta">Forecast {trust}.</p>
<h2>Video corruption</h2>
<table><tr><th>when</th><th>kind</th><th>severity</th></tr>{glitch_rows}</table>
<h2>Stream health (black, freeze, silence, loudness, audio gaps, A/V drift, format changes)</h2>
<table><tr><th>when</th><th>kind</th><th>severity</th><th>detail</th></tr>{health_rows}</table>
</body></html>
"""
    path.write_text(page)
