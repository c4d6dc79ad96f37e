"""The dashboard and the extension's panel in real headless Chromium, on a stream run through the
real stack (every service in its own process, as `up` runs them).

The new HTTP server (gateway/http) serves on the stack's gateway API: a StreamSightApi in this
process on the stack's NATS, while the stack's gateway process takes StartStream. The page must
draw every sentiment point and window, play a highlight clip (readyState >= 2), show events
published while it is open (a forecast, a health incident on the timeline), and after its server went away and came back show what was published
meanwhile exactly once. The panel runs with `window.Twitch.ext` stubbed to hand it a token this
test signs, on an origin of its own (so CORS is real), and draws the same chart from the EBS.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiohttp import web

from gateway.api import StreamSightApi
from gateway.ebs.channel import CHANNEL_LABEL
from gateway.ebs.config import EbsConfig
from gateway.ebs.jwt import sign
from gateway.http import HttpServer
from gateway.registry import Registry
from gateway.settings import GatewaySettings
from streamsight import subjects
from streamsight.app.demo import make_sample
from streamsight.app.stack import running_stack
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.natsd import free_port
from streamsight.rpc import channel

from .webdriver import browser_missing, chromium

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(browser_missing()), reason=browser_missing() or "ok")]
EXTENSION = Path(__file__).resolve().parents[2] / "extension"
KEY = b"extension-secret-for-page-tests!"
CHANNEL = "5151"
DONE = (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED, common_pb2.STREAM_STATE_STOPPED)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from ..conftest import free_port_block

    base = tmp_path_factory.mktemp("stack")
    with (base / "stack.log").open("w") as log, running_stack(base / "var", log, extra_env={"STREAMSIGHT_METRICS_BASE_PORT": str(free_port_block(7))}) as sup:
        yield sup


class Site:
    """The stack, an API object on its NATS, and the new HTTP server on that API."""

    def __init__(self, sup, bus: Bus, api: StreamSightApi, server: HttpServer, ebs: EbsConfig):
        self.sup, self.bus, self.api, self.server, self.ebs = sup, bus, api, server, ebs

    async def restart_server(self) -> None:
        port = self.server.port
        await self.server.stop()
        self.server = HttpServer(self.api, "127.0.0.1", port, ebs=self.ebs)
        await self.server.start()


async def _site(sup, ebs: EbsConfig) -> Site:
    bus = await Bus.connect(sup.nats.url, "page-test")
    addresses = sup.addresses()
    settings = GatewaySettings(nats_url=sup.nats.url, ingest_address=addresses["ingest"], chat_address=addresses["chat"], http_enabled=False)
    api = StreamSightApi(settings, bus, Registry(await bus.kv(subjects.REGISTRY_BUCKET)))
    server = HttpServer(api, "127.0.0.1", 0, ebs=ebs)
    await server.start()
    return Site(sup, bus, api, server, ebs)


async def _run_stream(site: Site, stream_id: str) -> None:
    folder = site.sup.data_dir / "gateway" / "media" / stream_id
    sample = make_sample(folder, duration=60.0)
    async with channel(site.sup.addresses()["gateway"]) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        await stub.StartStream(gw.StartStreamRequest(source=str(sample.video), chat_source=str(sample.chat), stream_id=stream_id))
        # What StartStream's labels will carry once the gateway's API copies them into Stream.
        await site.api.registry.update(stream_id, lambda s: s.labels.update({CHANNEL_LABEL: CHANNEL}))


async def _wait_done(site: Site, stream_id: str) -> gw.Stream:
    deadline = time.monotonic() + 300
    while (stream := await site.api.registry.get(stream_id)).state not in DONE:
        assert time.monotonic() < deadline, "the stream never finished"
        await asyncio.sleep(0.5)
    return stream


async def _wait_highlights(site: Site, stream_id: str) -> list:
    """Fusion decides the last highlights after ingest has ended the stream."""
    deadline = time.monotonic() + 180
    while not [h for h in (await site.api.ListHighlights(gw.ListHighlightsRequest(stream_id=stream_id), None)).highlights if h.clip.clip_id]:
        assert time.monotonic() < deadline, "no highlight with a clip"
        await asyncio.sleep(0.5)
    return list((await site.api.ListHighlights(gw.ListHighlightsRequest(stream_id=stream_id), None)).highlights)


def _in_thread(fn, *args):
    return asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_dashboard_draws_a_live_stream_plays_a_clip_and_misses_nothing(stack, tmp_path):
    site = await _site(stack, EbsConfig())
    sid = "dash1"
    try:
        await _run_stream(site, sid)
        with chromium() as browser:
            url = f"http://127.0.0.1:{site.server.port}/?stream={sid}"
            await _in_thread(browser.get, url)
            load = await _in_thread(browser.js, "const n = performance.getEntriesByType('navigation')[0]; return [n.domContentLoadedEventEnd, n.loadEventEnd];")
            stream = await _wait_done(site, sid)
            assert stream.state == common_pb2.STREAM_STATE_ENDED, stream.last_error
            highlights = await _wait_highlights(site, sid)
            sentiment = await site.api.GetSentiment(gw.GetSentimentRequest(stream_id=sid), None)
            assert sentiment.series and highlights, "the sample has chat and highlights"
            n_points = len(sentiment.series)
            await _in_thread(browser.wait_for, f"return document.getElementById('sentiment').dataset.historyPoints === '{n_points}' "
                             f"&& document.querySelectorAll('#sentiment circle.pt').length === {n_points}", "every sentiment point drawn")
            await _in_thread(browser.wait_for, "return document.getElementById('timeline').dataset.windows === '6'", "six windows on the timeline")
            deadline = time.monotonic() + 60
            while True:  # fusion may still decide one; the page must follow the log
                highlights = (await site.api.ListHighlights(gw.ListHighlightsRequest(stream_id=sid), None)).highlights
                shown = await _in_thread(browser.js, "return document.querySelectorAll('#timeline rect.hl').length")
                if shown == len(highlights):
                    break
                assert time.monotonic() < deadline, f"the timeline shows {shown} highlights, the log has {len(highlights)}"
                await asyncio.sleep(0.5)
            state = await _in_thread(browser.wait_for, "const v = document.querySelector('#clips video'); return v && v.readyState >= 2 && [v.readyState, v.duration, v.src]",
                                     "a highlight clip ready to play")
            played = await _in_thread(browser.js_async, "const v = document.querySelector('#clips video'), done = arguments[0];"
                                      "v.play().then(() => setTimeout(() => done([v.currentTime, v.paused, v.error && v.error.code]), 700), (e) => done(String(e)));")
            assert isinstance(played, list) and played[0] > 0 and played[2] is None, played
            assert state[1] > 1.0, f"clip duration {state[1]}"
            stream_state = await _in_thread(browser.wait_for, f"const d = document.querySelector('.stream[data-id=\"{sid}\"] .state'); return d && d.textContent", "the stream list")
            assert stream_state == "ENDED"

            # An event published while the page is open shows up; its latency is the page's own clock.
            forecast = events_pb2.SentimentForecast(stream_id=sid, issued_at_s=60, trustworthy=False, model="page-test",
                                                    points=[events_pb2.ForecastPoint(start_s=60 + 30 * k, compound=0.1 * k) for k in range(3)],
                                                    lower=[-0.3, -0.3, -0.3], upper=[0.5, 0.5, 0.5], activity=[1.0, 1.2, 1.1])
            await site.bus.publish_event(sid, forecast, f"{sid}:page-forecast")
            got = await _in_thread(browser.wait_for, "const d = window.streamsight.drawn.filter((x) => x.kind === 'forecast'); "
                                   "return d.length && document.getElementById('sentiment').dataset.trusted === 'false' && d[d.length - 1]", "the forecast drawn")
            assert await _in_thread(browser.js, "return document.getElementById('sentiment').dataset.forecastPoints") == "3"
            latency_live = got["drawn_ms"] - got["published_ms"]
            incident = events_pb2.HealthIncident(stream_id=sid, incident_id=f"{sid}:health:0", phase=events_pb2.PHASE_START, kind=events_pb2.HEALTH_KIND_FREEZE,
                                                 start_s=30, end_s=33, detail="frozen for 3 s")
            await site.bus.publish_event(sid, incident, f"{sid}:page-health")
            await _in_thread(browser.wait_for, "return [...document.querySelectorAll('#timeline rect.inc title')].some((t) => t.textContent === 'freeze: frozen for 3 s')", "the health incident on the timeline")

            # The server goes away; what is published meanwhile arrives once after the page reconnects.
            await site.server.stop()
            point = events_pb2.SentimentPoint(stream_id=sid, start_s=60, end_s=90, compound=0.75, messages=42)
            await site.bus.publish_event(sid, point, f"{sid}:page-late-point")
            await site.restart_server()
            await _in_thread(browser.wait_for, f"return document.getElementById('sentiment').dataset.historyPoints === '{n_points + 1}'",
                             "the point published while the server was away", 90)
            counts = await _in_thread(browser.js, "const s = {}; for (const d of window.streamsight.drawn) s[d.sequence] = (s[d.sequence] || 0) + 1;"
                                      "return Object.values(s).filter((n) => n > 1).length")
            assert counts == 0, "no event applied twice"
            (tmp_path / "dashboard.png").write_bytes(await _in_thread(browser.screenshot_png))
            print(f"\ndashboard: DOMContentLoaded {load[0]:.0f} ms, load {load[1]:.0f} ms; forecast published->drawn {latency_live} ms; "
                  f"{n_points} sentiment points, {len(highlights)} highlights; clip readyState {state[0]}, duration {state[1]:.1f} s; "
                  f"screenshot {tmp_path / 'dashboard.png'}")
    finally:
        await site.server.stop()
        await site.bus.close()


async def test_extension_panel_draws_the_channel_from_the_ebs(stack, tmp_path):
    # The panel's own origin, as ext-twitch.tv would serve it: the EBS admits that origin only.
    ext_port = free_port()
    origin = f"http://127.0.0.1:{ext_port}"
    site = await _site(stack, EbsConfig(secret=KEY, origin=origin, rate_per_s=5, burst=20))
    app = web.Application()
    app.router.add_static("/", EXTENSION, follow_symlinks=True)  # its chart is a link to the dashboard's
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ext_port).start()
    sid = "panel1"
    try:
        await _run_stream(site, sid)
        await _wait_done(site, sid)
        await _wait_highlights(site, sid)
        n_points = len((await site.api.GetSentiment(gw.GetSentimentRequest(stream_id=sid), None)).series)
        token = sign({"exp": int(time.time()) + 3600, "opaque_user_id": "U-page", "channel_id": CHANNEL, "role": "viewer"}, KEY)
        stub = (f"window.STREAMSIGHT_EBS = {json.dumps(f'http://localhost:{site.server.port}')};"
                "window.Twitch = {ext: {onAuthorized(cb) { setTimeout(() => cb({token: " + json.dumps(token) +
                ", channelId: " + json.dumps(CHANNEL) + ", clientId: 'test', userId: 'U-page'}), 0); }, onContext() {}, onError() {}}};")
        with chromium() as browser:
            await _in_thread(browser.cdp, "Page.addScriptToEvaluateOnNewDocument", {"source": stub})
            await _in_thread(browser.get, f"{origin}/panel.html")
            await _in_thread(browser.wait_for, f"return document.getElementById('sentiment').dataset.historyPoints === '{n_points}' "
                             f"&& document.querySelectorAll('#sentiment circle.pt').length === {n_points}", "the panel drew every point")
            ready = await _in_thread(browser.wait_for, "const v = document.querySelector('#clips video'); return v && v.readyState >= 2 && v.readyState",
                                     "a clip ready in the panel")
            assert ready >= 2
            text = await _in_thread(browser.js, "return document.getElementById('status').textContent")
            assert f"Last {n_points}" in text
            (tmp_path / "panel.png").write_bytes(await _in_thread(browser.screenshot_png))
            # The overlay page draws the same chart.
            await _in_thread(browser.get, f"{origin}/video_overlay.html")
            await _in_thread(browser.wait_for, f"return document.getElementById('sentiment').dataset.historyPoints === '{n_points}'", "the overlay drew")
            print(f"\npanel: {n_points} points, clip readyState {ready}; screenshot {tmp_path / 'panel.png'}")
    finally:
        await runner.cleanup()
        await site.server.stop()
        await site.bus.close()
