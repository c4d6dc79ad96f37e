"""The gateway's web page and HTTP API: page, stream JSON, live events over SSE, errors, token."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel

from .conftest import running_gateway


async def http_get(port: int, target: str, headers: dict[str, str] | None = None, read_until: bytes | None = None) -> tuple[int, dict, bytes]:
    """A real HTTP/1.1 client over a socket: status, headers, body (or the body up to `read_until`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
    if read_until is not None:
        body = await asyncio.wait_for(reader.readuntil(read_until), 10)
    else:
        body = await reader.read()
    writer.close()
    return int(status_line.split()[1]), hdrs, body


async def _register(address: str, stream_id: str) -> None:
    async with channel(address) as ch:
        with pytest.raises(grpc.aio.AioRpcError):  # no ingest here: registered, then FAILED
            await gateway_pb2_grpc.StreamSightStub(ch).StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id=stream_id))


async def test_page_streams_and_live_events(nats_server):
    async with running_gateway(nats_server.url) as gateway:
        port = gateway.web.port
        status, hdrs, body = await http_get(port, "/")
        assert status == 200 and hdrs["content-type"].startswith("text/html") and b"EventSource" in body
        await _register(gateway.address, "web1")
        status, _, body = await http_get(port, "/api/streams")
        assert status == 200 and "web1" in [s["id"] for s in json.loads(body)["streams"]]

        bus = await Bus.connect(nats_server.url, "webtest")
        await bus.publish_event("web1", events_pb2.Highlight(stream_id="web1", highlight_id="h1", start_s=30, end_s=40, score=0.8), "web1:h1")
        status, hdrs, body = await http_get(port, "/api/events?stream=web1&after=0", read_until=b"event: highlight\n")
        assert status == 200 and hdrs["content-type"] == "text/event-stream"
        rest = await http_get(port, "/api/events?stream=web1&after=0", read_until=b"}\n\n")
        await bus.close()
        assert b"event: status" in body and b"id: " in body
        first = json.loads(rest[2].split(b"data: ", 1)[1])
        assert first["stream_id"] == "web1" and "status" in first

        status, _, body = await http_get(port, "/api/streams/web1")
        detail = json.loads(body)
        assert detail["stream"]["state"] == "STREAM_STATE_FAILED" and detail["highlights"][0]["highlight_id"] == "h1"


async def test_errors_and_token(nats_server):
    async with running_gateway(nats_server.url, auth_token="tok") as gateway:
        port = gateway.web.port
        assert (await http_get(port, "/healthz"))[0] == 200
        assert (await http_get(port, "/api/streams"))[0] == 401
        assert (await http_get(port, "/api/streams?token=tok"))[0] == 200
        status, _, body = await http_get(port, "/api/streams/nobody", {"Authorization": "Bearer tok"})
        assert status == 404 and "no stream with id 'nobody'" in json.loads(body)["error"]
        status, _, body = await http_get(port, "/api/streams/Bad%20Id", {"Authorization": "Bearer tok"})
        assert status == 400
        assert (await http_get(port, "/nothing/here?token=tok"))[0] == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"garbage\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
