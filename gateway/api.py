"""The public gRPC API (streamsight.gateway.v1.StreamSight) on top of the registry and event log.

Ingest may run as several replicas (streamsight/ingestroute.py): StartStream places a new stream on
the live replica with the most room (ties by replica id; `ingest_address` when none is registered),
the replica records the placement, and StopStream and GetClip go to the replica its placement
names. A replica that turns out full (its record was stale) or unreachable (dead, its record not
expired yet) is passed over for the next one; when every replica is full the caller gets
RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import uuid

import grpc
import structlog

from gateway import eventlog, validation
from gateway.registry import TERMINAL, Registry, StreamExists, StreamMissing, apply_state
from gateway.settings import GatewaySettings
from gateway.watchers import Watchers
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.chat.v1 import chat_pb2, chat_pb2_grpc
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.gen.ingest.v1 import ingest_pb2
from streamsight.ingestroute import Full, IngestRoutes
from streamsight.rpc import StatusError, channel, exhausted, invalid, not_found, precondition, unavailable

log = structlog.get_logger(__name__)


class StreamSightApi(gateway_pb2_grpc.StreamSightServicer):
    def __init__(self, settings: GatewaySettings, bus: Bus, registry: Registry):
        self.settings = settings
        self.bus = bus
        self.registry = registry
        self.watchers = Watchers(bus.js)  # WatchEvents calls and the web page's SSE clients
        # Ingest and chat require the platform's service credential when one is set.
        self.ingest = IngestRoutes(bus, settings.ingest_address, settings.auth_token)
        self.chat = chat_pb2_grpc.ChatStub(channel(settings.chat_address, settings.auth_token))

    async def require_stream(self, stream_id: str) -> gateway_pb2.Stream:
        validation.stream_id(stream_id)
        try:
            return await self.registry.get(stream_id)
        except StreamMissing:
            raise not_found(f"no stream with id {stream_id!r}; ListStreams shows the registered ones") from None

    async def _set_state(self, stream_id: str, state: int, reason: str, detail: str = "", modalities: list[int] | None = None) -> gateway_pb2.Stream:
        stream = await self.registry.update(stream_id, lambda s: apply_state(s, state, detail if state == common_pb2.STREAM_STATE_FAILED else ""))
        status = events_pb2.StreamStatus(stream_id=stream_id, state=stream.state, reason=reason, detail=detail, reporter="gateway",
                                         modalities=modalities or [])
        await self.bus.publish_event(stream_id, status, f"{stream_id}:status:gateway:{reason}:{uuid.uuid4().hex[:8]}")
        return stream

    async def _dispatch(self, what: str, address: str, call) -> None:
        """Call a service; turn its failure into a clear status for our caller."""
        try:
            await call
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED):
                raise unavailable(f"the {what} service is not reachable at {address} ({code.name}); is it running?") from None
            if code in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                raise StatusError(code, f"{what}: {exc.details()}") from None
            raise unavailable(f"the {what} service failed: {code.name}: {exc.details()}") from None

    # StartStream / StopStream -------------------------------------------------
    async def StartStream(self, request, context):
        allow, roots = self.settings.allow_local_files, self.settings.local_folders()
        source = validation.media_source(request.source, allow, roots)
        chat_source = validation.chat_source(request.chat_source, allow, roots)
        validation.stream_options(request.options.extra)
        labels = validation.labels(request.labels)
        stream_id = validation.stream_id(request.stream_id) if request.stream_id else f"s-{uuid.uuid4().hex[:12]}"
        stream = gateway_pb2.Stream(
            id=stream_id, source=source, chat_source=chat_source, options=request.options, state=common_pb2.STREAM_STATE_PENDING, labels=labels
        )
        stream.created_at.GetCurrentTime()
        try:
            await self.registry.create(stream)
        except StreamExists:
            raise StatusError(grpc.StatusCode.ALREADY_EXISTS, f"stream id {stream_id!r} is already registered; choose another or omit it") from None
        log.info("stream registered", stream_id=stream_id)
        # Said before ingest starts, so fusion knows whether to wait for chat before it scores a window.
        modalities = [common_pb2.MODALITY_VISION, common_pb2.MODALITY_AUDIO] + ([common_pb2.MODALITY_CHAT] if chat_source else [])
        await self._set_state(stream_id, common_pb2.STREAM_STATE_PENDING, "registered", modalities=modalities)
        options = request.options
        start = ingest_pb2.StartIngestRequest(
            stream_id=stream_id, source=source, pacing=options.pacing, play_file_as_live=options.play_file_as_live, extra=options.extra
        )
        try:
            await self._start_ingest(start)
            if chat_source:
                start = stream.created_at
                await self._dispatch(
                    "chat",
                    self.settings.chat_address,
                    self.chat.StartChat(
                        chat_pb2.StartChatRequest(stream_id=stream_id, source=chat_source, media_start=start, pacing=options.pacing),
                        timeout=self.settings.dispatch_timeout_s,
                    ),
                )
        except StatusError as exc:
            await self._set_state(stream_id, common_pb2.STREAM_STATE_FAILED, "dispatch_failed", exc.message)
            if chat_source:
                await self._stop_ingest(stream_id)
            raise
        return await self._set_state(stream_id, common_pb2.STREAM_STATE_STARTING, "dispatched")

    async def _start_ingest(self, request: ingest_pb2.StartIngestRequest) -> None:
        """Start the stream on the replica with the most room; a full one (stale record) is passed over."""
        full: set[str] = set()
        while True:
            try:
                stub, address, replica = await self.ingest.place(frozenset(full))
            except Full as exc:
                raise exhausted(f"ingest: {exc}") from None
            try:
                await self._dispatch("ingest", address, stub.StartIngest(request, timeout=self.settings.dispatch_timeout_s))
            except StatusError as exc:
                if exc.code not in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE) or replica is None:
                    raise
                full.add(replica.id)  # full, or dead and its record not expired yet: the next one
                continue
            log.info("stream placed", stream_id=request.stream_id, replica=replica.id if replica else None, address=address)
            return

    async def _stop_ingest(self, stream_id: str) -> None:
        stub, _ = await self.ingest.stub_for(stream_id)
        try:
            await stub.StopIngest(ingest_pb2.StopIngestRequest(stream_id=stream_id), timeout=self.settings.dispatch_timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.warning("ingest did not stop the stream", stream_id=stream_id, code=exc.code().name)

    async def StopStream(self, request, context):
        stream = await self.require_stream(request.stream_id)
        if stream.state in TERMINAL:
            raise precondition(f"stream {stream.id!r} is already {common_pb2.StreamState.Name(stream.state)}; nothing to stop")
        await self._stop_ingest(stream.id)
        if stream.chat_source:
            try:
                await self.chat.StopChat(chat_pb2.StopChatRequest(stream_id=stream.id), timeout=self.settings.dispatch_timeout_s)
            except grpc.aio.AioRpcError as exc:
                log.warning("chat did not stop the stream", stream_id=stream.id, code=exc.code().name)
        return await self._set_state(stream.id, common_pb2.STREAM_STATE_STOPPED, "stopped_by_request")

    # Reads ---------------------------------------------------------------------
    async def GetStream(self, request, context):
        return await self.require_stream(request.stream_id)

    async def ListStreams(self, request, context):
        states = set(request.states)
        for state in states:
            if state not in common_pb2.StreamState.values():
                raise invalid(f"unknown stream state {state}")
        wanted = validation.labels(request.labels)
        streams = [
            s for s in await self.registry.list()
            if (not states or s.state in states) and all(s.labels.get(k) == v for k, v in wanted.items())
        ]
        return gateway_pb2.ListStreamsResponse(streams=streams)

    async def WatchEvents(self, request, context):
        types = set(request.types)
        unknown = types - set(subjects.EVENT_KINDS)
        if unknown:
            raise invalid(f"unknown event types {sorted(unknown)}; known: {sorted(subjects.EVENT_KINDS)}")
        stream_id = request.stream_id or "*"
        if request.stream_id:
            await self.require_stream(request.stream_id)
        kind = subjects.EVENT_KINDS[next(iter(types))] if len(types) == 1 else "*"
        start = request.WhichOneof("start")
        after = validation.after_sequence(request.after_sequence) if start == "after_sequence" else None
        since = validation.since_time(request.since_time) if start == "since_time" else None
        # A client that goes away cancels this call; leaving the block deletes the consumer.
        async with self.watchers.follow("grpc", subjects.event(kind, stream_id), types, after, since) as events:
            async for event in events:
                yield event

    async def _events(self, stream_id: str, kind: str) -> list[events_pb2.Event]:
        await self.require_stream(stream_id)
        return await eventlog.read_all(self.bus, subjects.event(kind, stream_id))

    async def ListHighlights(self, request, context):
        latest = {e.highlight.highlight_id: e.highlight for e in await self._events(request.stream_id, "highlight")}
        return gateway_pb2.ListHighlightsResponse(highlights=sorted(latest.values(), key=lambda h: h.start_s))

    async def ListGlitches(self, request, context):
        latest = {e.glitch.glitch_id: e.glitch for e in await self._events(request.stream_id, "glitch")}
        return gateway_pb2.ListGlitchesResponse(glitches=sorted(latest.values(), key=lambda g: g.start_s))

    async def GetSentiment(self, request, context):
        points = {e.sentiment.start_s: e.sentiment for e in await self._events(request.stream_id, "sentiment")}
        response = gateway_pb2.GetSentimentResponse(series=sorted(points.values(), key=lambda p: p.start_s))
        forecasts = await eventlog.read_all(self.bus, subjects.event("forecast", request.stream_id))
        if forecasts:
            response.forecast.CopyFrom(forecasts[-1].forecast)
        return response

    async def GetClip(self, request, context):
        await self.require_stream(request.stream_id)
        if not request.clip_id:
            raise invalid("clip_id is empty; take it from a highlight's clip")
        if not subjects.is_valid_stream_id(request.clip_id):
            raise invalid(f"clip_id {request.clip_id[:80]!r} is not valid; take it from a highlight's clip")
        stub, _ = await self.ingest.stub_for(request.stream_id)
        call = stub.ReadClip(ingest_pb2.ReadClipRequest(stream_id=request.stream_id, clip_id=request.clip_id))
        try:
            async for piece in call:
                yield gateway_pb2.ClipChunk(data=piece.data, offset=piece.offset, total_size=piece.total_size, content_type=piece.content_type)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise not_found(f"no clip {request.clip_id!r} for stream {request.stream_id!r}") from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise invalid(f"ingest: {exc.details()}") from None
            raise unavailable(f"the ingest service could not read the clip: {exc.code().name}") from None
        finally:
            call.cancel()  # a reader that went away (an HTTP client, say) stops ingest's reading too
