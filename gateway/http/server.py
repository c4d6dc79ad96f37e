"""The gateway's HTTP server (aiohttp): the same routes and token as the former gateway/web.py.

  GET /                        the live dashboard (gateway/dashboard/index.html); /static/... its files
  GET /api/streams             registered streams as JSON (?label=k=v, repeatable: only those labelled so)
  GET /api/streams/<id>        one stream with its highlights, glitches and sentiment
  GET /api/events?stream=<id>&after=<seq>   events as Server-Sent Events (JSON), replayable; a
                               browser's reconnect resumes after its Last-Event-ID
  GET /clips/<id>/<clip_id>    a clip's bytes streamed from ingest, with Range (206 / 416)
  GET /healthz                 200 "ok"
  GET /ebs/v1/channel          the Twitch extension's backend (gateway/ebs): Twitch JWT, CORS for
                               the extension's origin only, a rate limit per viewer
  GET /ebs/v1/clips/<id>/<clip_id>?expires=&sig=   a clip by the signed URL the EBS handed out

When the gateway has an auth token, every route but /, /static, /healthz and /ebs wants
`Authorization: Bearer <token>` or `?token=<token>` (EventSource and <video> cannot send headers).

HTTP parsing, header limits and idle connections are aiohttp's: request line and each header
at most 8190 bytes, at most 128 headers (400 beyond), and a connection that has not completed
a request within `header_timeout_s` is closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path

import grpc
import structlog
from aiohttp import web
from google.protobuf.json_format import MessageToDict
from prometheus_client import Counter

from gateway.ebs.channel import channel_view, clip_allowed
from gateway.ebs.config import EbsConfig
from gateway.ebs.jwt import InvalidToken, verify
from gateway.ebs.ratelimit import RateLimiter
from gateway.http.clips import send_clip
from gateway.validation import MAX_AFTER_SEQUENCE
from streamsight import subjects
from streamsight.gen.gateway.v1 import gateway_pb2
from streamsight.rpc import StatusError

log = structlog.get_logger(__name__)
DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"
SSE_KEEPALIVE_S = 15.0
EBS_CACHE_S = 2.0  # one channel's view is read from the event log at most this often
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.UNAVAILABLE: 503,
}
EBS_REFUSED = Counter("streamsight_gateway_ebs_refused_total", "EBS requests refused", ["reason"])
# The dashboard's own files only: no CDN, no inline code from elsewhere.
DASHBOARD_CSP = "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self'"


def _json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class HttpServer:
    """Start with `await start()` (returns the port), stop with `await stop()`."""

    def __init__(self, api, host: str, port: int, auth_token: str = "", ebs: EbsConfig | None = None, header_timeout_s: float = 10.0):
        self.api = api  # gateway.api.StreamSightApi
        self.host, self.port = host, port
        self.auth_token = auth_token
        self.ebs = ebs if ebs is not None else EbsConfig()
        self.limiter = RateLimiter(self.ebs.rate_per_s, self.ebs.burst)
        self.header_timeout_s = header_timeout_s
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task] = set()  # SSE handlers, ended first on stop
        self._ebs_cache: dict[str, tuple[float, dict | None]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._errors, self._cors, self._auth])
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", DASHBOARD, follow_symlinks=False)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/api/streams", self._streams_list)
        app.router.add_get("/api/streams/{stream_id}", self._stream_detail)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/clips/{stream_id}/{clip_id}", self._clip)
        app.router.add_get("/ebs/v1/channel", self._ebs_channel)
        app.router.add_get("/ebs/v1/clips/{stream_id}/{clip_id}", self._ebs_clip)
        app.router.add_route("OPTIONS", "/ebs/v1/{tail:.*}", self._preflight)
        return app

    async def start(self) -> int:
        # keepalive_timeout runs from the connection's start: it also ends one that trickles a request in.
        self._runner = web.AppRunner(
            self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=2.0,
            keepalive_timeout=self.header_timeout_s,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    # Middlewares ----------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler):
        try:
            return await handler(request)
        except StatusError as exc:
            return _error(_HTTP_STATUS.get(exc.code, 500), exc.message)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.content_type != "application/json":
                return _error(exc.status, exc.reason.lower(), headers={k: v for k, v in exc.headers.items() if k == "Allow"})
            raise
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as exc:
            log.error("http request failed", path=request.path, exc_info=exc)
            return _error(500, "internal error")

    @web.middleware
    async def _cors(self, request: web.Request, handler):
        response = await handler(request)
        origin = request.headers.get("Origin", "")
        if request.path.startswith("/ebs/") and self.ebs.origin and origin == self.ebs.origin and not response.prepared:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        path = request.path
        public = path in ("/", "/healthz") or path.startswith(("/static/", "/ebs/"))
        if public or not self.auth_token or self._token_ok(request):
            return await handler(request)
        return _error(401, "missing or wrong token")

    def _token_ok(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        given = given or request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.auth_token.encode())

    # Dashboard and API ------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(DASHBOARD / "index.html", headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _streams_list(self, request: web.Request) -> web.Response:
        wanted = {}
        for spec in request.query.getall("label", []):
            key, sep, value = spec.partition("=")
            if not sep or not key:
                return _error(400, "label filters are key=value")
            wanted[key] = value
        reply = await self.api.ListStreams(gateway_pb2.ListStreamsRequest(), None)
        streams = [s for s in reply.streams if all(s.labels.get(k) == v for k, v in wanted.items())]
        return web.json_response({"streams": [_json(s) for s in streams]})

    async def _stream_detail(self, request: web.Request) -> web.Response:
        stream_id = request.match_info["stream_id"]
        stream = await self.api.GetStream(gateway_pb2.GetStreamRequest(stream_id=stream_id), None)
        highlights = await self.api.ListHighlights(gateway_pb2.ListHighlightsRequest(stream_id=stream_id), None)
        glitches = await self.api.ListGlitches(gateway_pb2.ListGlitchesRequest(stream_id=stream_id), None)
        sentiment = await self.api.GetSentiment(gateway_pb2.GetSentimentRequest(stream_id=stream_id), None)
        return web.json_response({
            "stream": _json(stream),
            "highlights": [_json(h) for h in highlights.highlights],
            "glitches": [_json(g) for g in glitches.glitches],
            "sentiment": _json(sentiment),
        })

    async def _events(self, request: web.Request) -> web.StreamResponse:
        stream_id = request.query.get("stream", "")
        if stream_id:
            await self.api.require_stream(stream_id)  # NOT_FOUND for an unknown stream, before the stream starts
        try:
            # A browser's EventSource reconnects with the same URL and the last id it saw.
            given = [int(request.query.get("after", "0")), int(request.headers.get("Last-Event-ID", "0") or 0)]
        except ValueError:
            return _error(400, "after must be a sequence number")
        if not all(0 <= n <= MAX_AFTER_SEQUENCE for n in given):
            return _error(400, f"after must be a sequence number from 0 to {MAX_AFTER_SEQUENCE}")
        after = max(given)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b": streamsight events\n\n")
        task = asyncio.current_task()
        self._streams.add(task)
        subject = subjects.event("*", stream_id or "*")
        try:
            async with self.api.watchers.follow("sse", subject, set(), after_sequence=after) as events:
                forward = asyncio.create_task(_forward(events, response))
                try:
                    while not forward.done():
                        await asyncio.wait({forward}, timeout=SSE_KEEPALIVE_S)
                        if not forward.done():
                            await response.write(b": keep-alive\n\n")  # fails once a vanished peer's socket errors
                finally:
                    forward.cancel()
                    await asyncio.gather(forward, return_exceptions=True)
                if not forward.cancelled() and forward.exception() is not None:
                    raise forward.exception()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client went away (or the server stops): the watcher is closed either way
        finally:
            self._streams.discard(task)
        return response

    async def _clip(self, request: web.Request) -> web.StreamResponse:
        return await send_clip(request, self.api, request.match_info["stream_id"], request.match_info["clip_id"])

    # The Twitch extension's backend ------------------------------------------------------
    async def _preflight(self, request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        if not self.ebs.origin or origin != self.ebs.origin:
            return _error(403, "origin not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": "Authorization",
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        })

    async def _ebs_channel(self, request: web.Request) -> web.Response:
        if not self.ebs.enabled:
            return _error(404, "no Twitch extension is configured on this gateway")
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        try:
            viewer = verify(token, self.ebs.secret)
        except InvalidToken as exc:
            EBS_REFUSED.labels("token").inc()
            log.info("ebs token refused", reason=exc.reason)
            return _error(401, "unauthorized")  # no detail: why a token fails helps only a forger
        allowed, wait_s = self.limiter.allow(viewer.opaque_user_id)
        if not allowed:
            EBS_REFUSED.labels("rate").inc()
            return _error(429, "too many requests", headers={"Retry-After": str(max(1, round(wait_s + 0.5)))})
        now = time.monotonic()
        cached = self._ebs_cache.get(viewer.channel_id)
        if cached is not None and now - cached[0] < EBS_CACHE_S:
            view = cached[1]
        else:
            view = await channel_view(self.api, self.ebs.secret, viewer.channel_id, _origin_of(request))
            if len(self._ebs_cache) > 10_000:
                self._ebs_cache.clear()
            self._ebs_cache[viewer.channel_id] = (now, view)
        if view is None:
            return _error(404, "no stream for this channel")
        return web.json_response(view, headers={"Cache-Control": "no-store"})

    async def _ebs_clip(self, request: web.Request) -> web.StreamResponse:
        if not self.ebs.enabled:
            return _error(404, "no Twitch extension is configured on this gateway")
        stream_id, clip_file = request.match_info["stream_id"], request.match_info["clip_id"]
        clip_id = clip_file.rsplit(".", 1)[0]
        if not clip_allowed(self.ebs.secret, stream_id, clip_id, request.query.get("expires", ""), request.query.get("sig", "")):
            EBS_REFUSED.labels("clip_signature").inc()
            return _error(401, "unauthorized")
        return await send_clip(request, self.api, stream_id, clip_id)


def _origin_of(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def _forward(events, response: web.StreamResponse) -> None:
    async for event in events:
        data = json.dumps(_json(event), separators=(",", ":"))
        await response.write(f"id: {event.sequence}\nevent: {event.WhichOneof('payload')}\ndata: {data}\n\n".encode())
