"""report.json follows its schema and report.html shows what the stream produced."""

from __future__ import annotations

import json

import jsonschema

from streamsight.app import report
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.app.results import StreamResults


def _event(**payload) -> events_pb2.Event:
    return events_pb2.Event(**payload)


def _results() -> StreamResults:
    r = StreamResults("demo", "/media/game.mp4")
    r.add(_event(status=events_pb2.StreamStatus(state=common_pb2.STREAM_STATE_RUNNING, duration_s=25.0)))
    for i, score in enumerate([0.1, 0.92, 0.3]):
        why = [common_pb2.Contribution(feature="audio.onset_rate_hz", weight=1.2 * score, value=20.0)]
        missing = [common_pb2.MODALITY_CHAT] if i == 2 else []
        completion = "stage_done" if missing else "complete"
        r.add(_event(score=events_pb2.WindowScore(window=i, start_s=10 * i, end_s=min(10 * i + 10, 25), score=score, why=why, missing=missing,
                                                  features={"audio.onset_rate_hz": 20.0}, completion=completion)))
    clip = common_pb2.ClipRef(clip_id="c1", start_s=8.0, end_s=20.0)
    r.add(_event(highlight=events_pb2.Highlight(highlight_id="h1", start_s=10, end_s=20, score=0.92, clip=clip, windows=[1])))
    r.add(_event(glitch=events_pb2.Glitch(glitch_id="g1", phase=events_pb2.PHASE_START, kind=events_pb2.GLITCH_KIND_STRIPES, start_s=3)))
    r.add(_event(glitch=events_pb2.Glitch(glitch_id="g1", phase=events_pb2.PHASE_END, kind=events_pb2.GLITCH_KIND_STRIPES, start_s=3, end_s=4.5, severity=0.7)))
    r.add(_event(sentiment=events_pb2.SentimentPoint(start_s=0, end_s=30, compound=0.4, messages=12)))
    r.add(_event(forecast=events_pb2.SentimentForecast(points=[events_pb2.ForecastPoint(start_s=30, compound=0.3, baseline=0.4)])))
    r.add(_event(status=events_pb2.StreamStatus(state=common_pb2.STREAM_STATE_ENDED, media_time_s=25.0)))
    return r


def test_report_json_follows_its_schema(tmp_path):
    results = _results()
    assert results.finished and results.windows_expected == 3
    doc = report.build(results, {"c1": "clips/c1.mp4"}, ["ingest", "fusion"])
    report.write_json(doc, tmp_path / "report.json")
    loaded = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(loaded, json.loads(report.SCHEMA_PATH.read_text()))
    assert [w["index"] for w in loaded["windows"]] == [0, 1, 2]
    assert loaded["windows"][2]["missing"] == ["chat"] and not loaded["windows"][2]["complete"]
    assert loaded["windows"][2]["completion"] == "stage_done" and loaded["windows"][0]["complete"]
    assert loaded["windows_incomplete"] == 1 and loaded["windows_missing"] == {"vision": 0, "audio": 0, "chat": 1}
    assert loaded["highlights"][0]["clip"] == "clips/c1.mp4"
    assert loaded["glitches"] == [{"start_s": 3.0, "end_s": 4.5, "kind": "stripes", "severity": 0.7, "confidence": 0.0, "open": False}]
    assert loaded["state"] == "ended" and loaded["duration_s"] == 25.0


def test_schema_rejects_a_broken_report():
    doc = report.build(_results())
    doc["windows"][0]["score"] = 1.7
    try:
        jsonschema.validate(doc, json.loads(report.SCHEMA_PATH.read_text()))
    except jsonschema.ValidationError as exc:
        assert "1.7" in str(exc)
    else:
        raise AssertionError("a score above 1 must not validate")


def test_report_html_shows_highlights_glitches_and_clips(tmp_path):
    doc = report.build(_results(), {"c1": "clips/c1.mp4"})
    report.write_html(doc, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert '<video controls preload="metadata" src="clips/c1.mp4">' in page
    assert "10.0–20.0 s" in page and "stripes" in page
    assert page.count('class="bar') == 3 and 'class="bar missing"' in page
    assert 'class="forecast"' in page
    assert "3 windows scored (1 with a modality missing)" in page
    assert "1 of 3 windows were scored with a modality missing (chat 1)" in page
    assert "<td>2</td><td>20.0–25.0 s</td><td>chat</td><td>stage_done</td>" in page


def test_the_cli_summary_counts_windows_scored_without_a_modality():
    results = _results()
    assert report.summary_lines(results) == ["windows scored without chat: 1 of 3"]
    vision_lost = events_pb2.WindowScore(window=3, start_s=30, end_s=35, score=0.2, missing=[common_pb2.MODALITY_VISION, common_pb2.MODALITY_CHAT])
    results.add(_event(score=vision_lost))
    assert report.summary_lines(results) == ["windows scored without vision: 1 of 4", "windows scored without chat: 2 of 4"]
    whole = StreamResults("s", "x")
    whole.add(_event(score=events_pb2.WindowScore(window=0, end_s=10, score=0.5)))
    assert report.summary_lines(whole) == ["windows scored: 1, every one with all its expected modalities"]
    assert report.summary_lines(StreamResults("s", "x")) == []


def test_report_ranks_highlights_with_their_reasons_and_marks_glitch_windows(tmp_path):
    results = _results()
    moment = events_pb2.Highlight(highlight_id="h2", start_s=21, end_s=24, score=0.97, peak_s=21, rank=1, resolution="moment",
                                  reason="loud sound (+18 LU) + fast motion (x4) + chat spike (x6 rate) 4 s later", chat_lag_s=4.0,
                                  latency_s=1.0, windows=[2])
    marked = events_pb2.Highlight(highlight_id="h3", start_s=2, end_s=6, score=0.6, peak_s=3, rank=3, resolution="moment",
                                  reason="loud sound (+9 LU) + fast motion (x3)", glitch=True, windows=[0])
    results.add(_event(highlight=moment))
    results.add(_event(highlight=marked))
    doc = report.build(results, {"c1": "clips/c1.mp4"})
    jsonschema.validate(json.loads(json.dumps(doc)), json.loads(report.SCHEMA_PATH.read_text()))
    assert [(h["rank"], h["start_s"]) for h in doc["highlights"]] == [(1, 21.0), (2, 10.0), (3, 2.0)]
    first = doc["highlights"][0]
    assert first["reason"].startswith("loud sound") and first["chat_lag_s"] == 4.0 and first["peak_s"] == 21.0
    assert first["resolution"] == "moment" and not first["glitch"]
    assert doc["highlights"][1]["resolution"] == "windows" and doc["highlights"][1]["peak_s"] is None
    assert doc["highlights"][2]["glitch"]  # the event said so (fusion's glitch_highlights = mark)
    assert [w["glitch"] for w in doc["windows"]] == [True, False, False]  # the stripes at 3-4.5 s
    report.write_html(doc, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert page.index("21.0–24.0 s") < page.index("10.0–20.0 s") < page.index("2.0–6.0 s")
    assert "chat spike (x6 rate) 4 s later" in page and "(glitch)" in page


def _health(incident_id: str, phase, kind, start_s: float, end_s: float = 0.0, severity: float = 0.0, detail: str = "") -> events_pb2.Event:
    return _event(health=events_pb2.HealthIncident(incident_id=incident_id, phase=phase, kind=kind, start_s=start_s, end_s=end_s,
                                                   severity=severity, detail=detail))


def test_health_incidents_reach_the_report_its_windows_and_the_page(tmp_path):
    """Latest phase per incident (a late START does not reopen an ended one), sorted by start, end
    null while open, the overlapping kinds listed per window; none: empty lists, the rest unchanged."""
    plain = report.build(_results(), {"c1": "clips/c1.mp4"})
    assert plain["health"] == [] and all(w["health"] == [] for w in plain["windows"])
    results = _results()
    black, loud, quiet = "demo:health:0", "demo:health:1", "demo:health:2"
    results.add(_health(loud, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_LOUDNESS, 21.0, 21.4, 0.3, "momentary -2.0 LUFS, target -14 LUFS"))
    results.add(_health(black, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_BLACK, 8.0, 8.5, 0.9, "picture black (mean luma 3)"))
    results.add(_health(black, events_pb2.PHASE_UPDATE, events_pb2.HEALTH_KIND_BLACK, 8.0, 11.0, 0.9, "picture black (mean luma 3)"))
    results.add(_health(black, events_pb2.PHASE_END, events_pb2.HEALTH_KIND_BLACK, 8.0, 12.5, 0.95, "picture black (mean luma 2)"))
    results.add(_health(black, events_pb2.PHASE_UPDATE, events_pb2.HEALTH_KIND_BLACK, 8.0, 11.5, 0.9, "a redelivered update"))
    results.add(_health(quiet, events_pb2.PHASE_START, events_pb2.HEALTH_KIND_SILENCE, 9.0, 9.0, 0.5, "audio below -60 dBFS"))
    results.add(_health(quiet, events_pb2.PHASE_END, events_pb2.HEALTH_KIND_SILENCE, 9.0, 12.0, 0.5, "audio below -60 dBFS"))
    doc = report.build(results, {"c1": "clips/c1.mp4"})
    jsonschema.validate(json.loads(json.dumps(doc)), json.loads(report.SCHEMA_PATH.read_text()))
    assert doc["health"] == [
        {"kind": "black", "start_s": 8.0, "end_s": 12.5, "severity": 0.95, "detail": "picture black (mean luma 2)"},
        {"kind": "silence", "start_s": 9.0, "end_s": 12.0, "severity": 0.5, "detail": "audio below -60 dBFS"},
        {"kind": "loudness", "start_s": 21.0, "end_s": None, "severity": 0.3, "detail": "momentary -2.0 LUFS, target -14 LUFS"},
    ]
    assert [w["health"] for w in doc["windows"]] == [["black", "silence"], ["black", "silence"], ["loudness"]]
    assert [w["glitch"] for w in doc["windows"]] == [w["glitch"] for w in plain["windows"]]
    assert doc["glitches"] == plain["glitches"] and doc["highlights"] == plain["highlights"]
    report.write_html(doc, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="hp"') == 3 and "stream health" in page
    assert "<td>8.0–12.5 s</td><td>black</td><td>0.95</td><td>picture black (mean luma 2)</td>" in page
    assert "21.0 s–(still open)" in page
    broken = json.loads(json.dumps(doc))
    broken["health"][0]["kind"] = "HEALTH_KIND_BLACK"
    try:
        jsonschema.validate(broken, json.loads(report.SCHEMA_PATH.read_text()))
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("a health kind outside the list must not validate")
    report.write_html(plain, tmp_path / "plain.html")
    assert "No stream health incident." in (tmp_path / "plain.html").read_text()


def test_analyze_prints_health_starts_and_ends_like_glitches():
    from streamsight.app.analyze import describe

    start = _health("s:health:0", events_pb2.PHASE_START, events_pb2.HEALTH_KIND_BLACK, 12.0, 12.5, 0.9, "picture black (mean luma 3)")
    update = _health("s:health:0", events_pb2.PHASE_UPDATE, events_pb2.HEALTH_KIND_BLACK, 12.0, 14.0, 0.9)
    end = _health("s:health:0", events_pb2.PHASE_END, events_pb2.HEALTH_KIND_AUDIO_GAP, 12.0, 14.25, 0.75)
    assert describe("health", start) == "HEALTH       12.0 s  black  picture black (mean luma 3)"
    assert describe("health", update) is None
    assert describe("health", end) == "HEALTH       12.0-14.2 s  audio_gap ended, severity 0.75"
    glitch = _event(glitch=events_pb2.Glitch(glitch_id="g", phase=events_pb2.PHASE_START, kind=events_pb2.GLITCH_KIND_STRIPES, start_s=12.0,
                                             confidence=0.8))
    assert describe("glitch", glitch) == "GLITCH       12.0 s  stripes (confidence 0.80)"


def test_the_highlights_command_lists_a_report_best_first(tmp_path, capsys):
    import argparse

    from streamsight.app import highlights

    results = _results()
    results.add(_event(highlight=events_pb2.Highlight(highlight_id="h2", start_s=21, end_s=24, score=0.97, peak_s=21, resolution="moment",
                                                      reason="loud sound (+18 LU) + chat spike (x6 rate) 4 s later")))
    report.write_json(report.build(results, {"c1": "clips/c1.mp4"}), tmp_path / "report.json")
    parser = argparse.ArgumentParser()
    highlights.add_parser(parser.add_subparsers())
    args = parser.parse_args(["highlights", str(tmp_path), "--top", "1"])
    assert args.run(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["#1   0:21-0:24 peak 21 s  score 0.97  loud sound (+18 LU) + chat spike (x6 rate) 4 s later  no clip"]
    args = parser.parse_args(["highlights", str(tmp_path / "report.json"), "--json"])
    assert args.run(args) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["rank"], r["start_s"], r["clip"]) for r in rows] == [(1, 21.0, None), (2, 10.0, "clips/c1.mp4")]
    bad = parser.parse_args(["highlights", str(tmp_path / "nothing.json")])
    assert bad.run(bad) == 2 and "cannot read" in capsys.readouterr().err


def test_a_gateway_highlight_row_names_its_vertical_clip():
    from streamsight.app import highlights

    h = events_pb2.Highlight(highlight_id="h1", start_s=21, end_s=24, score=0.9, peak_s=21, resolution="moment", reason="loud sound",
                             clip=common_pb2.ClipRef(clip_id="c1", uri="/clips/s/c1.mp4"),
                             vertical_clip=common_pb2.ClipRef(clip_id="v1", uri="/clips/s/v1.mp4"))
    row = highlights.as_row(1, h)
    assert (row["clip"], row["vertical_clip"], row["vertical_clip_id"]) == ("/clips/s/c1.mp4", "/clips/s/v1.mp4", "v1")
    assert highlights.line(row).endswith("/clips/s/c1.mp4  (9:16: /clips/s/v1.mp4)")
    plain = highlights.as_row(2, events_pb2.Highlight(highlight_id="h2", start_s=1, end_s=2, score=0.5))
    assert plain["vertical_clip"] is None and "9:16" not in highlights.line(plain)


def test_a_vertical_clip_is_listed_beside_the_clip_and_null_without_one(tmp_path):
    results = _results()
    tall = common_pb2.ClipRef(clip_id="v2", start_s=19.0, end_s=27.0)
    results.add(_event(highlight=events_pb2.Highlight(highlight_id="h2", start_s=21, end_s=24, score=0.97, resolution="moment",
                                                      clip=common_pb2.ClipRef(clip_id="c2", start_s=19.0, end_s=27.0), vertical_clip=tall)))
    doc = report.build(results, {"c1": "clips/c1.mp4", "c2": "clips/c2.mp4", "v2": "clips/v2.mp4"})
    jsonschema.validate(json.loads(json.dumps(doc)), json.loads(report.SCHEMA_PATH.read_text()))
    assert [(h["clip"], h["vertical_clip"]) for h in doc["highlights"]] == [("clips/c2.mp4", "clips/v2.mp4"), ("clips/c1.mp4", None)]
    report.write_html(doc, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert '<video class="vertical" controls preload="metadata" src="clips/v2.mp4">' in page
    assert page.count('class="vertical"') == 1 and "vertical: clips/v2.mp4" in page


async def test_analyze_downloads_the_vertical_clip_the_gateway_lists(nats_server, bus, tmp_path, shared_data):
    """Real ingest and gateway: a highlight carrying a vertical clip is listed by ListHighlights and the
    HTTP API, and analyze's download saves both files, the vertical one 9:16."""
    import asyncio
    import urllib.request

    import av

    from gateway.service import GatewayService
    from gateway.settings import GatewaySettings
    from services.ingest.service import IngestService
    from services.ingest.settings import IngestSettings
    from streamsight.app.analyze import _download_clips
    from streamsight.gen.gateway.v1 import gateway_pb2 as gw
    from streamsight.gen.gateway.v1 import gateway_pb2_grpc
    from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
    from streamsight.rpc import channel

    sid = "tallreport"
    (tmp_path / "media").mkdir()
    source = tmp_path / "media" / "bunny.mp4"
    source.write_bytes((shared_data / "media" / "bigbuckbunny.mp4").read_bytes())
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0)
    ingest = IngestService(IngestSettings(data_dir=tmp_path / "ingest", **common))
    async with ingest.serving():
        settings = GatewaySettings(ingest_address=ingest.address, chat_address="127.0.0.1:9", http_port=0, allow_local_files=True,
                                   local_roots=[str(tmp_path / "media")], data_dir=tmp_path / "gateway", **common)
        async with GatewayService(settings).serving() as gateway, channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            await stub.StartStream(gw.StartStreamRequest(source=str(source), stream_id=sid))
            while (await stub.GetStream(gw.GetStreamRequest(stream_id=sid))).state not in (
                    common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED):
                await asyncio.sleep(0.1)
            async with channel(ingest.address) as ich:  # what fusion asks with vertical_clips on
                clip = await ingest_pb2_grpc.IngestStub(ich).ExportClip(
                    ingest_pb2.ExportClipRequest(stream_id=sid, start_s=1.0, end_s=4.0, clip_id="highlight-0", vertical=True))
            highlight = events_pb2.Highlight(stream_id=sid, highlight_id="highlight-0", start_s=1.0, end_s=4.0, score=0.9,
                                             clip=common_pb2.ClipRef(clip_id=clip.clip_id, uri=clip.uri, start_s=clip.start_s, end_s=clip.end_s,
                                                                     size_bytes=clip.size_bytes),
                                             vertical_clip=clip.vertical)
            await bus.publish_event(sid, highlight, f"{sid}:highlight:0")
            listed = (await stub.ListHighlights(gw.ListHighlightsRequest(stream_id=sid))).highlights
            url = f"http://127.0.0.1:{gateway.web.port}/api/streams/{sid}"
            detail = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=30).read()))
            results = StreamResults(sid, str(source))
            results.add(_event(highlight=listed[0]))
            files = await _download_clips(stub, results, tmp_path / "out")
    assert listed[0].vertical_clip.clip_id == clip.vertical.clip_id != ""
    assert detail["highlights"][0]["vertical_clip"]["clip_id"] == clip.vertical.clip_id
    assert files == {clip.clip_id: f"clips/{clip.clip_id}.mp4", clip.vertical.clip_id: f"clips/{clip.vertical.clip_id}.mp4"}
    doc = report.build(results, files)
    assert doc["highlights"][0]["vertical_clip"] == f"clips/{clip.vertical.clip_id}.mp4"
    with av.open(str(tmp_path / "out" / doc["highlights"][0]["vertical_clip"])) as c:
        v = c.streams.video[0]
        assert (v.codec_context.width, v.codec_context.height) == (404, 720)
