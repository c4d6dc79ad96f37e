"""The gateway's aiohttp server (gateway/http): the routes and token of the former web.py, SSE
with replay and resume, watchers cleaned up, and the parser's limits: malformed requests,
oversized headers and slow clients are answered or cut off while others are served."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from gateway.ebs.config import EbsConfig
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel

from .http_helpers import gateway_with_http, http_get

ORIGIN = "https://abc123.ext-twitch.tv"


async def _register(address: str, stream_id: str, token: str = "") -> None:
    async with channel(address, token) as ch:
        with pytest.raises(grpc.aio.AioRpcError):  # no ingest here: registered, then FAILED
            await gateway_pb2_grpc.StreamSightStub(ch).StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id=stream_id))


async def _event_consumers(bus: Bus) -> set[str]:
    return {c.name for c in await bus.js.consumers_info(subjects.EVENTS_STREAM)} - {"gateway-registry"}


async def _until(condition, what: str, timeout: float = 20.0) -> None:
    """Wait for a state (the deadline only stops a hang; nothing is timed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"never reached: {what}"
        await asyncio.sleep(0.05)


async def test_page_streams_detail_and_live_events(nats_server):
    async with gateway_with_http(nats_server.url) as (gateway, server):
        port = server.port
        status, hdrs, body = await http_get(port, "/")
        assert status == 200 and hdrs["content-type"].startswith("text/html") and b"dashboard.js" in body
        assert "default-src 'self'" in hdrs["content-security-policy"]
        status, hdrs, body = await http_get(port, "/static/sentiment-chart.js")
        assert status == 200 and b"SentimentChart" in body
        assert (await http_get(port, "/static/../server.py"))[0] == 404 or (await http_get(port, "/static/%2e%2e/server.py"))[0] == 404

        await _register(gateway.address, "web1")
        status, _, body = await http_get(port, "/api/streams")
        assert status == 200 and "web1" in [s["id"] for s in json.loads(body)["streams"]]

        bus = await Bus.connect(nats_server.url, "httptest")
        await bus.publish_event("web1", events_pb2.Highlight(stream_id="web1", highlight_id="h1", start_s=30, end_s=40, score=0.8), "web1:h1")
        status, hdrs, body = await http_get(port, "/api/events?stream=web1&after=0", read_until=b"event: highlight\n")
        assert status == 200 and hdrs["content-type"] == "text/event-stream"
        assert b"event: status" in body and b"id: " in body
        first = json.loads(body.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert first["stream_id"] == "web1" and "status" in first

        # A browser reconnecting sends Last-Event-ID: it resumes after it, whatever the URL's `after`.
        ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
        last_status = ids[-2]  # the highlight is the last; resume just before it
        status, _, body = await http_get(port, "/api/events?stream=web1&after=0", {"Last-Event-ID": str(last_status)}, read_until=b"}\n\n")
        resumed = json.loads(body.split(b"data: ", 1)[1].split(b"\n", 1)[0])
        assert resumed["sequence"] == str(ids[-1]) and resumed["highlight"]["highlight_id"] == "h1"
        await bus.close()

        status, _, body = await http_get(port, "/api/streams/web1")
        detail = json.loads(body)
        assert detail["stream"]["state"] == "STREAM_STATE_FAILED" and detail["highlights"][0]["highlight_id"] == "h1"


async def test_errors_and_token(nats_server):
    async with gateway_with_http(nats_server.url, auth_token="tok") as (gateway, server):
        port = server.port
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/"))[0] == 200, "the page itself is public; its data is not"
        status, hdrs, body = await http_get(port, "/api/streams")
        assert status == 401 and json.loads(body) == {"error": "missing or wrong token"}
        assert (await http_get(port, "/api/streams", {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await http_get(port, "/api/streams?token=tok"))[0] == 200
        assert (await http_get(port, "/api/events?stream=x"))[0] == 401
        assert (await http_get(port, "/clips/x/y.mp4"))[0] == 401
        auth = {"Authorization": "Bearer tok"}
        status, _, body = await http_get(port, "/api/streams/nobody", auth)
        assert status == 404 and "no stream with id 'nobody'" in json.loads(body)["error"]
        assert (await http_get(port, "/api/streams/Bad%20Id", auth))[0] == 400
        assert (await http_get(port, "/api/events?after=x", auth))[0] == 400
        assert (await http_get(port, "/api/events?stream=nobody", auth))[0] == 404
        status, _, body = await http_get(port, "/nothing/here?token=tok")
        assert status == 404 and "error" in json.loads(body)
        status, hdrs, _ = await http_get(port, "/api/streams", auth, method="POST")
        assert status == 405
        await _register(gateway.address, "lab1", "tok")
        await gateway.registry.update("lab1", lambda s: s.labels.update({"twitch.channel_id": "77"}))
        _, _, body = await http_get(port, "/api/streams?label=twitch.channel_id=77", auth)
        assert [s["id"] for s in json.loads(body)["streams"]] == ["lab1"]
        _, _, body = await http_get(port, "/api/streams?label=twitch.channel_id=78", auth)
        assert json.loads(body)["streams"] == []
        assert (await http_get(port, "/api/streams?label=novalue", auth))[0] == 400


async def _raw(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return answer


def _status(answer: bytes) -> bytes:
    assert answer.startswith(b"HTTP/1."), answer[:80]
    return answer.split(b" ", 2)[1]


async def test_malformed_and_oversized_requests_are_refused_and_the_server_keeps_serving(nats_server):
    async with gateway_with_http(nats_server.url) as (_, server):
        port = server.port
        assert _status(await _raw(port, b"garbage\r\n\r\n")) == b"400"
        assert _status(await _raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n")) == b"400"
        assert _status(await _raw(port, b"GET /\x00 HTTP/9.9\r\n\r\n")) == b"400"
        long_value = b"a" * 20_000
        answer = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + long_value + b"\r\n\r\n")
        assert _status(answer) in (b"400", b"431"), answer[:80]
        many = b"".join(b"X-H%d: v\r\n" % n for n in range(500))
        answer = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert _status(answer) in (b"400", b"431"), answer[:80]
        answer = await _raw(port, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(answer) in (b"400", b"414"), answer[:80]
        assert (await http_get(port, "/healthz"))[:1] == (200,), "still serving"


async def test_a_slow_client_is_cut_off_while_others_are_served(nats_server):
    async with gateway_with_http(nats_server.url, header_timeout_s=1.0) as (_, server):
        port = server.port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        await writer.drain()
        trickle = asyncio.create_task(_trickle(writer))
        assert (await http_get(port, "/healthz"))[0] == 200, "another client is served meanwhile"
        closed = await asyncio.wait_for(reader.read(), 30)  # the server ends it; a hang would time out
        trickle.cancel()
        await asyncio.gather(trickle, return_exceptions=True)
        writer.close()
        assert b"200" not in closed, "an unfinished request got no answer"
        # An idle connection that never sends a byte goes too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()


async def _trickle(writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await asyncio.sleep(0.3)
            writer.write(b"s")
            await writer.drain()
    except ConnectionError:
        pass


async def test_sse_clients_that_go_away_leave_no_consumer_and_stop_closes_the_rest(nats_server):
    async with gateway_with_http(nats_server.url) as (gateway, server):
        watchers = gateway.api.watchers
        await _register(gateway.address, "sse1")
        bus = await Bus.connect(nats_server.url, "ssetest")
        before = await _event_consumers(bus)
        clients = []
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /api/events?stream=sse1&after=0 HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.readuntil(b"event: status\n"), 20)
            clients.append((reader, writer))
        assert watchers.open["sse"] == 20 and len(await _event_consumers(bus) - before) == 20
        for n, (_, writer) in enumerate(clients[:10]):
            writer.close() if n % 2 else writer.transport.abort()
        await _until(lambda: watchers.open["sse"] == 10, "the closed clients' watchers ended")
        await server.stop()
        assert watchers.count == 0, "stopping the server closed every watcher"
        assert await _event_consumers(bus) == before, "and deleted their consumers"
        for reader, writer in clients[10:]:
            assert await asyncio.wait_for(reader.read(), 10) is not None
            writer.close()
        await bus.close()


async def test_cors_only_for_the_extension_origin(nats_server):
    ebs = EbsConfig(secret=b"k" * 32, origin=ORIGIN)
    async with gateway_with_http(nats_server.url, ebs=ebs) as (_, server):
        port = server.port
        preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
        status, hdrs, _ = await http_get(port, "/ebs/v1/channel", preflight, method="OPTIONS")
        assert status == 204 and hdrs["access-control-allow-origin"] == ORIGIN and "Authorization" in hdrs["access-control-allow-headers"]
        status, hdrs, _ = await http_get(port, "/ebs/v1/channel", {**preflight, "Origin": "https://evil.example"}, method="OPTIONS")
        assert status == 403 and "access-control-allow-origin" not in hdrs
        status, hdrs, _ = await http_get(port, "/ebs/v1/channel", {"Origin": ORIGIN})
        assert status == 401 and hdrs["access-control-allow-origin"] == ORIGIN, "the extension can read the refusal"
        status, hdrs, _ = await http_get(port, "/ebs/v1/channel", {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in hdrs
        status, hdrs, _ = await http_get(port, "/api/streams", {"Origin": ORIGIN})
        assert status == 200 and "access-control-allow-origin" not in hdrs, "the dashboard's API is same-origin only"
        status, hdrs, _ = await http_get(port, "/api/streams", {"Origin": ORIGIN}, method="OPTIONS")
        assert "access-control-allow-origin" not in hdrs
