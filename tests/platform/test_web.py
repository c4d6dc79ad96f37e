"""The gateway's web page and HTTP API: page, stream JSON, live events over SSE, errors, token."""

from __future__ import annotations

import asyncio
import contextlib
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
    # Connection: close, so the body ends where the connection does (a kept-alive one would wait for the server's idle timeout)
    lines = [f"GET {target} HTTP/1.1", "Host: localhost", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
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
        assert status == 200 and hdrs["content-type"].startswith("text/html") and b"/static/dashboard.js" in body
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
        assert (await reader.readline()).split(b" ", 2)[1] == b"400"
        writer.close()


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


async def _event_consumers(bus: Bus) -> set[str]:
    """The EVENTS stream's consumers other than the gateway's durable registry reader."""
    from streamsight import subjects

    return {c.name for c in await bus.js.consumers_info(subjects.EVENTS_STREAM)} - {"gateway-registry"}


async def _until(condition, what: str, timeout: float = 20.0) -> None:
    """Wait for a state to be reached (not a speed check: the deadline only stops a hang)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"never reached: {what}"
        await asyncio.sleep(0.05)


async def _sse_client(port: int, stream_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /api/events?stream={stream_id}&after=0 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"event: status\n"), 20)  # its consumer is delivering
    return reader, writer


async def test_sse_clients_that_go_away_leave_no_consumer_or_socket(nats_server):
    async with running_gateway(nats_server.url) as gateway:
        port, watchers = gateway.web.port, gateway.api.watchers
        await _register(gateway.address, "sse1")
        bus = await Bus.connect(nats_server.url, "ssetest")
        # One client first, so that what the gateway opens once (channels, pools) is not counted.
        _, writer = await _sse_client(port, "sse1")
        writer.close()
        await _until(lambda: watchers.count == 0, "the first client's watcher closed")
        before_consumers, before_fds = await _event_consumers(bus), _open_fds()

        clients = [await _sse_client(port, "sse1") for _ in range(50)]
        assert watchers.open["sse"] == 50
        assert len(await _event_consumers(bus) - before_consumers) == 50, "each SSE client has its own consumer"
        for n, (reader, writer) in enumerate(clients):
            if n % 2:
                writer.close()  # a polite close
            else:
                writer.transport.abort()  # a reset, as when a browser tab is killed
        await _until(lambda: watchers.count == 0, "every SSE watcher closed")
        left = await _event_consumers(bus)
        fds = _open_fds()
        await bus.close()
    assert left == before_consumers, f"consumers left behind: {sorted(left - before_consumers)}"
    # The test's own 50 client sockets are closed too: every fd the clients made is gone.
    assert fds <= before_fds, f"open files {before_fds} -> {fds}"


async def test_server_shutdown_removes_the_watchers_consumers(nats_server):
    bus = await Bus.connect(nats_server.url, "shutdowntest")
    async with contextlib.AsyncExitStack() as clients_open:  # the clients outlive the gateway
        async with running_gateway(nats_server.url) as gateway:
            await _register(gateway.address, "sse2")
            before = await _event_consumers(bus)
            clients = [await _sse_client(gateway.web.port, "sse2") for _ in range(5)]
            ch = await clients_open.enter_async_context(channel(gateway.address))
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            calls = [stub.WatchEvents(gw.WatchEventsRequest(stream_id="sse2", after_sequence=0)) for _ in range(5)]
            for call in calls:
                await call.read()
            watchers = gateway.api.watchers
            assert watchers.open == {"sse": 5, "grpc": 5}
            assert len(await _event_consumers(bus) - before) == 10
        assert watchers.count == 0, "the gateway stopped with every watcher closed"
        assert await _event_consumers(bus) == before, "stopping the gateway deleted the watchers' consumers"
        for reader, writer in clients:
            assert await asyncio.wait_for(reader.read(), 10) is not None  # the server closed the connection
            writer.close()
    await bus.close()
