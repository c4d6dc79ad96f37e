"""Ingest service: sources in, frames / audio / signals / window records out on NATS, clips on request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import Servicer, precondition
from streamsight.service import Service
from streamsight.telemetry import ACTIVE_STREAMS

from .api import IngestApi
from .clipstore import ClipStore, LocalClipStore, NatsClipStore
from .settings import IngestSettings
from .source import resolve
from .streams import IngestedStream, pipeline_config


class IngestService(Service):
    name = "ingest"
    Settings = IngestSettings

    async def start(self) -> None:
        self.streams: dict[str, IngestedStream] = {}
        self.api = IngestApi(self)
        self.clip_store: ClipStore = (
            NatsClipStore(self.bus.js, self.settings.clip_bucket) if self.settings.clip_store == "nats" else LocalClipStore()
        )

    def servicers(self) -> list[Servicer]:
        name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
        return [Servicer(ingest_pb2_grpc.add_IngestServicer_to_server, self.api, name)]

    def clip_dir(self, stream_id: str) -> Path:
        return Path(self.settings.data_dir) / "clips" / stream_id

    async def start_stream(self, request: ingest_pb2.StartIngestRequest) -> IngestedStream:
        current = self.streams.get(request.stream_id)
        if current is not None and current.task is not None and not current.task.done():
            raise precondition(f"stream {request.stream_id!r} is already being ingested")
        active = sum(1 for s in self.streams.values() if s.task and not s.task.done())
        if active >= self.settings.max_streams:
            raise precondition(f"ingest is at its limit of {self.settings.max_streams} streams; stop one or add an instance")
        await asyncio.to_thread(resolve, request.source)  # IngestError now for a source it cannot use
        live = request.pacing == common_pb2.PACING_LIVE or request.play_file_as_live
        clip_dir = self.clip_dir(request.stream_id)
        clip_dir.mkdir(parents=True, exist_ok=True)
        config = pipeline_config(self.settings, clip_dir, live, dict(request.extra))
        stream = IngestedStream(request.stream_id, request.source, config, self.bus, self.settings, clip_dir)
        stream.task = asyncio.create_task(stream.run(), name=f"ingest:{request.stream_id}")
        stream.task.add_done_callback(lambda _: ACTIVE_STREAMS.labels("ingest").dec())
        ACTIVE_STREAMS.labels("ingest").inc()
        self.streams[request.stream_id] = stream
        self.log.info("stream started", stream_id=request.stream_id, live=live)
        return stream

    async def stop_stream(self, stream: IngestedStream) -> None:
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)

    async def stop(self) -> None:
        await asyncio.gather(*(self.stop_stream(s) for s in self.streams.values()))
