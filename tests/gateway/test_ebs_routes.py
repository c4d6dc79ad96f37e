"""The EBS on the gateway's aiohttp server: /ebs/v1/channel with test-signed Twitch JWTs (401 with
one and the same body for every bad token, 404 for a channel without a stream, the newest running
labelled stream served, 429 per viewer), and signed clip URLs."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from gateway.ebs.channel import CHANNEL_LABEL
from gateway.ebs.config import EbsConfig
from gateway.ebs.jwt import b64url_encode, sign
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel

from .http_helpers import gateway_with_http, http_get

KEY = b"extension-secret-for-tests-32byt"
ORIGIN = "https://abc123.ext-twitch.tv"


def token(channel_id: str = "4242", user: str = "U1", key: bytes = KEY, **over) -> str:
    claims = {"exp": int(time.time()) + 600, "opaque_user_id": user, "channel_id": channel_id, "role": "viewer", **over}
    return sign(claims, key)


async def _labelled_stream(gateway, stream_id: str, channel_id: str, state: int) -> None:
    async with channel(gateway.address, gateway.settings.auth_token) as ch:
        with pytest.raises(grpc.aio.AioRpcError):  # no ingest here: registered, then FAILED
            await gateway_pb2_grpc.StreamSightStub(ch).StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id=stream_id))

    def label(stream: gw.Stream) -> None:  # what StartStream's labels will carry once the API copies them
        stream.labels[CHANNEL_LABEL] = channel_id
        stream.state = state

    await gateway.registry.update(stream_id, label)


async def test_channel_view_and_refusals(nats_server):
    ebs = EbsConfig(secret=KEY, origin=ORIGIN, rate_per_s=0.01, burst=4)
    async with gateway_with_http(nats_server.url, auth_token="gateway-token", ebs=ebs) as (gateway, server):
        port = server.port
        await _labelled_stream(gateway, "old-run", "4242", common_pb2.STREAM_STATE_RUNNING)
        await _labelled_stream(gateway, "now-run", "4242", common_pb2.STREAM_STATE_RUNNING)
        await _labelled_stream(gateway, "newest-ended", "4242", common_pb2.STREAM_STATE_ENDED)
        await _labelled_stream(gateway, "other", "999", common_pb2.STREAM_STATE_RUNNING)
        bus = await Bus.connect(nats_server.url, "ebstest")
        for n, value in enumerate((0.2, -0.4, 0.6)):
            point = events_pb2.SentimentPoint(stream_id="now-run", start_s=30 * n, end_s=30 * n + 30, compound=value, messages=10 + n)
            await bus.publish_event("now-run", point, f"now-run:s{n}")
        forecast = events_pb2.SentimentForecast(stream_id="now-run", issued_at_s=90, trustworthy=True, model="lstm-test",
                                                points=[events_pb2.ForecastPoint(start_s=90, compound=0.5, baseline=0.1)], lower=[0.2], upper=[0.8])
        await bus.publish_event("now-run", forecast, "now-run:f1")
        clip, tall = common_pb2.ClipRef(clip_id="highlight-abc"), common_pb2.ClipRef(clip_id="highlight-abc-tall")
        await bus.publish_event("now-run", events_pb2.Highlight(stream_id="now-run", highlight_id="h1", start_s=12, end_s=17, score=0.9, clip=clip,
                                                                vertical_clip=tall), "now-run:h1")
        await bus.close()

        status, hdrs, body = await http_get(port, "/ebs/v1/channel", {"Authorization": f"Bearer {token()}", "Origin": ORIGIN})
        assert status == 200 and hdrs["access-control-allow-origin"] == ORIGIN
        view = json.loads(body)
        assert view["channel_id"] == "4242" and view["stream"]["id"] == "now-run", "the newest running stream of the channel"
        assert [p["compound"] for p in view["sentiment"]["series"]] == [0.2, -0.4, 0.6]
        assert view["sentiment"]["forecast"]["trustworthy"] is True and view["sentiment"]["forecast"]["points"][0]["compound"] == 0.5
        (highlight,) = view["highlights"]
        assert highlight["highlight_id"] == "h1" and "/ebs/v1/clips/now-run/highlight-abc.mp4?expires=" in highlight["clip_url"]
        assert highlight["clip_url"].startswith(f"http://localhost/ebs/v1/clips/")
        assert "/ebs/v1/clips/now-run/highlight-abc-tall.mp4?expires=" in highlight["vertical_clip_url"], "the 9:16 copy is signed too"

        # Every bad token gets the same 401 and body: nothing tells a forger what was wrong.
        head_none = b64url_encode(b'{"alg":"none","typ":"JWT"}')
        body_claims = b64url_encode(json.dumps({"exp": int(time.time()) + 600, "opaque_user_id": "U9", "channel_id": "4242", "role": "viewer"}).encode())
        bad = {
            "missing": {},
            "not bearer": {"Authorization": token()},
            "forged": {"Authorization": f"Bearer {token(key=b'another key')}"},
            "expired": {"Authorization": f"Bearer {token(exp=int(time.time()) - 5)}"},
            "alg none": {"Authorization": f"Bearer {head_none}.{body_claims}."},
            "gateway token": {"Authorization": "Bearer gateway-token"},
        }
        bodies = set()
        for why, headers in bad.items():
            status, _, body = await http_get(port, "/ebs/v1/channel", headers)
            assert status == 401, why
            bodies.add(body)
        assert bodies == {b'{"error": "unauthorized"}'}

        status, _, body = await http_get(port, "/ebs/v1/channel", {"Authorization": f"Bearer {token('31337', user='U2')}"})
        assert status == 404 and json.loads(body) == {"error": "no stream for this channel"}

        # The rate limit is per opaque_user_id: U1 has used 1 of 4, U3 is untouched.
        statuses = [(await http_get(port, "/ebs/v1/channel", {"Authorization": f"Bearer {token()}"}))[0] for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        status, hdrs, _ = await http_get(port, "/ebs/v1/channel", {"Authorization": f"Bearer {token()}"})
        assert status == 429 and int(hdrs["retry-after"]) >= 1
        assert (await http_get(port, "/ebs/v1/channel", {"Authorization": f"Bearer {token(user='U3')}"}))[0] == 200

        # A clip URL is good only as signed, and the gateway's own routes still want the gateway's token.
        path = highlight["clip_url"].removeprefix("http://localhost")
        assert (await http_get(port, path.replace("sig=", "sig=0")))[0] == 401
        assert (await http_get(port, path.replace("highlight-abc", "highlight-abd")))[0] == 401
        assert (await http_get(port, "/ebs/v1/clips/now-run/highlight-abc.mp4?expires=1&sig=00"))[0] == 401
        assert (await http_get(port, "/api/streams", {"Authorization": f"Bearer {token()}"}))[0] == 401


async def test_without_a_secret_the_ebs_is_off(nats_server):
    async with gateway_with_http(nats_server.url) as (_, server):
        status, _, body = await http_get(server.port, "/ebs/v1/channel", {"Authorization": f"Bearer {token()}"})
        assert status == 404 and "no Twitch extension" in json.loads(body)["error"]
