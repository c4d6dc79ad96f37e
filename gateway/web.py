"""The gateway's web page and its small HTTP API (stdlib asyncio, no framework).

  GET /                        the live dashboard (static/index.html)
  GET /api/streams             registered streams as JSON
  GET /api/streams/<id>        one stream with its highlights, glitches and sentiment
  GET /api/events?stream=<id>&after=<seq>   events as Server-Sent Events (JSON), replayable
  GET /clips/<id>/<clip_id>    a clip's bytes (streamed from ingest), for <video>; Range requests
                               (206 with Content-Range, 416 past the end) as Safari and iOS need
  GET /healthz                 200 "ok"

When the gateway has an auth token, every route but /healthz and / wants
`Authorization: Bearer <token>` or `?token=<token>` (EventSource cannot send headers).

An SSE client holds a NATS consumer, so the gateway notices when it goes away even while no
event comes: it watches the connection for its end and sends a comment line every
`SSE_KEEPALIVE_S` (a peer that vanished without closing makes that write fail).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
import structlog
from google.protobuf.json_format import MessageToDict

from gateway import validation
from streamsight import subjects
from streamsight.gen.gateway.v1 import gateway_pb2
from streamsight.rpc import StatusError

log = structlog.get_logger(__name__)
INDEX = Path(__file__).with_name("static") / "index.html"
MAX_REQUEST_LINE = 8192
SSE_KEEPALIVE_S = 15.0
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "Bad Request"),
    grpc.StatusCode.NOT_FOUND: (404, "Not Found"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "Unauthorized"),
    grpc.StatusCode.UNAVAILABLE: (503, "Service Unavailable"),
}


def _json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


class _Request:
    def __init__(self, method: str, target: str, headers: dict[str, str]):
        parts = urlsplit(target)
        self.method = method
        self.path = unquote(parts.path)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.headers = headers


class WebServer:
    def __init__(self, api, host: str, port: int, auth_token: str = ""):
        self.api = api  # gateway.api.StreamSightApi
        self.host, self.port = host, port
        self.auth_token = auth_token
        self.server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_REQUEST_LINE * 2)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._clients.add(task)
        try:
            request = await self._read_request(reader)
            if request is None:
                await self._send(writer, 400, "Bad Request", b"malformed request\n", "text/plain")
            else:
                await self._route(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except StatusError as exc:
            status, reason = _HTTP_STATUS.get(exc.code, (500, "Internal Server Error"))
            await self._send(writer, status, reason, json.dumps({"error": exc.message}).encode(), "application/json")
        except Exception as exc:
            log.error("web request failed", exc_info=exc)
            await self._send(writer, 500, "Internal Server Error", b'{"error": "internal error"}', "application/json")
        finally:
            self._clients.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").strip()
            method, target, _ = line.split(" ", 2)
            headers = {}
            while True:
                raw = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1").strip()
                if not raw:
                    break
                name, _, value = raw.partition(":")
                headers[name.strip().lower()] = value.strip()
                if len(headers) > 100:
                    return None
        except (ValueError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            return None
        return _Request(method, target, headers)

    def _authorised(self, request: _Request) -> bool:
        if not self.auth_token:
            return True
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or request.query.get("token", "")
        return given == self.auth_token

    async def _route(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if request.method != "GET":
            await self._send(writer, 405, "Method Not Allowed", b"only GET\n", "text/plain")
            return
        path = request.path.rstrip("/") or "/"
        if path == "/healthz":
            await self._send(writer, 200, "OK", b"ok\n", "text/plain")
            return
        if path == "/":
            await self._send(writer, 200, "OK", INDEX.read_bytes(), "text/html; charset=utf-8")
            return
        if not self._authorised(request):
            await self._send(writer, 401, "Unauthorized", b'{"error": "missing or wrong token"}', "application/json")
            return
        parts = path.strip("/").split("/")
        if parts == ["api", "streams"]:
            reply = await self.api.ListStreams(gateway_pb2.ListStreamsRequest(), None)
            await self._send_json(writer, {"streams": [_json(s) for s in reply.streams]})
        elif len(parts) == 3 and parts[:2] == ["api", "streams"]:
            await self._send_json(writer, await self._stream_detail(parts[2]))
        elif parts == ["api", "events"]:
            await self._events(request, reader, writer)
        elif len(parts) == 3 and parts[0] == "clips":
            await self._clip(parts[1], parts[2], request.headers.get("range", ""), writer)
        else:
            await self._send(writer, 404, "Not Found", b'{"error": "no such page"}', "application/json")

    async def _stream_detail(self, stream_id: str) -> dict:
        stream = await self.api.GetStream(gateway_pb2.GetStreamRequest(stream_id=stream_id), None)
        highlights = await self.api.ListHighlights(gateway_pb2.ListHighlightsRequest(stream_id=stream_id), None)
        glitches = await self.api.ListGlitches(gateway_pb2.ListGlitchesRequest(stream_id=stream_id), None)
        sentiment = await self.api.GetSentiment(gateway_pb2.GetSentimentRequest(stream_id=stream_id), None)
        return {
            "stream": _json(stream),
            "highlights": [_json(h) for h in highlights.highlights],
            "glitches": [_json(g) for g in glitches.glitches],
            "sentiment": _json(sentiment),
        }

    async def _events(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id = request.query.get("stream", "")
        if stream_id:
            await self.api.require_stream(stream_id)  # NOT_FOUND for an unknown stream, before the stream starts
        try:
            after = validation.after_sequence(int(request.query.get("after", request.headers.get("last-event-id", "0"))))
        except ValueError:
            raise StatusError(grpc.StatusCode.INVALID_ARGUMENT, "after must be a sequence number") from None
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n: streamsight events\n\n"
        )
        await writer.drain()
        subject = subjects.event("*", stream_id or "*")
        async with self.api.watchers.follow("sse", subject, set(), after_sequence=after) as events:
            forward = asyncio.create_task(_forward(events, writer))
            peer = asyncio.create_task(_until_gone(reader, writer))
            try:
                await asyncio.wait({forward, peer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                forward.cancel()
                peer.cancel()
                await asyncio.gather(forward, peer, return_exceptions=True)
            if peer.done() and not peer.cancelled():
                writer.transport.abort()  # the peer is gone: do not wait to flush what it will not read
            elif not forward.cancelled() and forward.exception() is not None:
                raise forward.exception()

    async def _clip(self, stream_id: str, clip_id: str, range_header: str, writer: asyncio.StreamWriter) -> None:
        """Stream the clip (or the asked byte range of it) as ingest sends it: never whole in memory."""
        clip_id = clip_id.rsplit(".", 1)[0]
        chunks = self.api.GetClip(gateway_pb2.GetClipRequest(stream_id=stream_id, clip_id=clip_id), None)
        try:
            first = await anext(chunks, None)
            total = first.total_size if first is not None else 0
            content_type = first.content_type if first is not None else "video/mp4"
            wanted = byte_range(range_header, total)
            if wanted is None:
                head = f"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                writer.write(head.encode())
                await writer.drain()
                return
            start, end = wanted  # inclusive; (0, total - 1) without a Range header
            ranged = _single_range(range_header)
            status = "206 Partial Content" if ranged else "200 OK"
            extra = f"Content-Range: bytes {start}-{end}/{total}\r\n" if ranged else ""
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {max(0, end - start + 1)}\r\n{extra}"
                "Accept-Ranges: bytes\r\nCache-Control: private, max-age=3600\r\nConnection: close\r\n\r\n".encode()
            )
            chunk, offset = first, 0
            while chunk is not None and offset <= end:
                data = chunk.data
                lo, hi = max(start - offset, 0), min(end + 1 - offset, len(data))
                if lo < hi:
                    writer.write(data[lo:hi])
                    await writer.drain()
                offset += len(data)
                chunk = await anext(chunks, None) if offset <= end else None
        finally:
            await chunks.aclose()

    async def _send_json(self, writer: asyncio.StreamWriter, doc: dict) -> None:
        await self._send(writer, 200, "OK", json.dumps(doc).encode(), "application/json")

    async def _send(self, writer: asyncio.StreamWriter, status: int, reason: str, body: bytes, content_type: str) -> None:
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()


_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


def byte_range(header: str, total: int) -> tuple[int, int] | None:
    """The inclusive byte range a Range header asks of `total` bytes; the whole when there is none
    (or one this server ignores, as HTTP allows: several ranges, other units, malformed); None
    when it cannot be satisfied (416)."""
    match = _RANGE.match(header or "")
    if not match or not any(match.groups()):
        return 0, total - 1
    first, last = match.groups()
    if not first:  # the last N bytes
        n = int(last)
        return (max(total - n, 0), total - 1) if n > 0 and total else None
    start = int(first)
    end = min(int(last), total - 1) if last else total - 1
    if start >= total or end < start:
        return None
    return start, end


def _single_range(header: str) -> bool:
    match = _RANGE.match(header or "")
    return bool(match and any(match.groups()))


async def _forward(events, writer: asyncio.StreamWriter) -> None:
    async for event in events:
        data = json.dumps(_json(event), separators=(",", ":"))
        writer.write(f"id: {event.sequence}\nevent: {event.WhichOneof('payload')}\ndata: {data}\n\n".encode())
        await writer.drain()


async def _until_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Return when the SSE client has closed its side or a keep-alive write fails."""
    try:
        while True:
            try:
                if not await asyncio.wait_for(reader.read(1024), SSE_KEEPALIVE_S):
                    return  # end of file: the client closed the connection
            except asyncio.TimeoutError:
                writer.write(b": keep-alive\n\n")
                await writer.drain()
    except ConnectionError:
        return
