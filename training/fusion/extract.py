"""Feature records for a media file (and chat log), made offline by the services' own stage logic.

The same driver as the services, without NATS:

- ingest's `IngestPipeline` decodes and samples the file with the ingest service's settings
  (glitch frames off: nothing here reads them), and `services.ingest.outbound` turns its
  items into the MEDIA messages ingest publishes: the same bytes, sample indexes, and window
  records (one `last=True`, its end trimmed to the media's end);
- those messages go, in stored order and in fetches of the services' `fetch_batch`, to
  vision's `VisionStreams.step` and audio's `AudioStreams.step`, which close windows on the
  window records exactly as in the services;
- chat runs the chat service's `ChatSession` on the replay, following the same window records;
- every `WindowResult` becomes a FeatureRecord through `streamsight.windows.feature_record`
  with the producer version and info the services stamp.

So a fusion model is trained on the features it scores.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog

from services.audio.service import AudioService
from services.audio.settings import AudioSettings
from services.audio.streams import AudioStreams
from services.audio.streams import producer_version as audio_producer
from services.audio.streams import record_info as audio_info
from services.audio.tagger import OnnxTagger
from services.chat.service import make_products
from services.chat.session import ChatSession, Products
from services.chat.settings import ChatSettings
from services.chat.sources import load_replay_checked
from services.ingest.outbound import Outbound, OutboundEncoder
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.settings import IngestSettings
from services.ingest.streams import pipeline_config
from services.vision.runtime import MODEL_DIR, VisionModels
from services.vision.service import VisionService
from services.vision.settings import VisionSettings
from services.vision.streams import PRODUCER_VERSION as VISION_PRODUCER
from services.vision.streams import VisionStreams
from services.vision.streams import record_info as vision_info
from streamsight.gen.features.v1 import features_pb2
from streamsight.gen.media.v1 import media_pb2
from streamsight.stage import StepResult
from streamsight.windows import WindowResult, feature_record

log = structlog.get_logger(__name__)

def ingest_config(settings: IngestSettings | None = None) -> IngestConfig:
    """The ingest service's pipeline for a file, without glitch frames and without a clip buffer."""
    base = pipeline_config(settings or IngestSettings(), Path("."), live=False, extra={})
    decode = replace(base.decode, sampling=replace(base.decode.sampling, glitch=None), clip_buffer=None, decoder_threads=1)
    return replace(base, decode=decode)


class _Consumer:
    """One stage's durable consumer, offline: its kinds of messages, stepped `batch` at a time."""

    def __init__(self, name: str, logic: Any, kinds: tuple[str, ...], batch: int) -> None:
        self.name, self.logic, self.kinds, self.batch = name, logic, kinds, batch
        self.pending: list[tuple[str, bytes]] = []
        self.windows: list[WindowResult] = []
        self.rejected = 0

    def offer(self, message: Outbound) -> None:
        if message.subject.split(".")[3] in self.kinds:
            self.pending.append((message.subject, message.data))
            if len(self.pending) >= self.batch:
                self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        result: StepResult = self.logic.step(self.pending)
        self.pending = []
        self.windows += result.windows
        for position, reason in result.rejected.items():  # the service dead-letters these
            self.rejected += 1
            log.warning("message rejected", stage=self.name, position=position, reason=reason)


async def _media(path: Path, stream_id: str, config: IngestConfig, consumers: list[_Consumer]) -> list[media_pb2.WindowRecord]:
    """Run ingest on `path` and hand its MEDIA messages to `consumers`; ingest's window records."""
    pipeline = IngestPipeline(str(path), config, stream_id=stream_id)
    encoder = OutboundEncoder(stream_id, lambda: pipeline.stats.media_time, window_s=config.decode.window_seconds)
    records: list[media_pb2.WindowRecord] = []

    def send(messages: list[Outbound]) -> None:
        for m in messages:
            if m.kind == "window":
                records.append(media_pb2.WindowRecord.FromString(m.data))
            for c in consumers:
                c.offer(m)

    try:
        async for item in pipeline.items():
            send(encoder.encode(item))
    finally:
        pipeline.stop()
    send(encoder.finish())
    for c in consumers:
        c.flush()
    return records


def media_records(
    path: Path,
    stream_id: str,
    models: VisionModels,
    model_dir: Path = MODEL_DIR,
    tagger: OnnxTagger | None = None,
    ingest: IngestSettings | None = None,
) -> tuple[list[features_pb2.FeatureRecord], list[media_pb2.WindowRecord]]:
    """Vision and audio FeatureRecords of a media file, as the services publish them, and
    ingest's window records (the chat session follows them)."""
    config = ingest_config(ingest)
    window_s = config.decode.window_seconds  # the platform's window_s, as ingest cuts it
    vision_batch = VisionSettings.model_fields["fetch_batch"].default
    audio_batch = AudioSettings.model_fields["fetch_batch"].default
    silence = AudioSettings.model_fields["silence_dbfs"].default
    vision = _Consumer("vision", VisionStreams(models, window_s=window_s), VisionService.media_kinds, vision_batch)
    audio = _Consumer("audio", AudioStreams(tagger, silence, window_s=window_s), AudioService.media_kinds, audio_batch)
    windows = asyncio.run(_media(Path(path), stream_id, config, [vision, audio]))
    v_info, v_producer = vision_info(models.provider, model_dir), VISION_PRODUCER
    a_info, a_producer = audio_info(tagger), audio_producer(tagger)
    out = [feature_record("vision", w, v_info, v_producer) for w in vision.windows]
    out += [feature_record("audio", w, a_info, a_producer) for w in audio.windows]
    return out, windows


class _Collector:
    """The chat session's publisher, offline: keeps its feature records, drops its events."""

    def __init__(self) -> None:
        self.records: list[features_pb2.FeatureRecord] = []

    async def publish(self, subject: str, payload, msg_id: str | None = None, headers=None, kind: str = "data") -> None:
        if kind == "features":
            self.records.append(payload)

    async def publish_event(self, stream_id: str, payload, event_id: str) -> None:
        return None


def chat_products(settings: ChatSettings | None = None) -> Products:
    """What the chat service gives every session."""
    return make_products(settings or ChatSettings())


def chat_records(chat_path: Path, stream_id: str, windows: list[media_pb2.WindowRecord], products: Products | None = None) -> list[features_pb2.FeatureRecord]:
    """Chat FeatureRecords of a replay log, made by the chat service's session following the
    stream's window records."""
    collector = _Collector()
    session = ChatSession(stream_id, "offline", collector, products or chat_products(), replay=load_replay_checked(Path(chat_path)))
    for record in windows:
        session.media_window(record.index, record.end_s, record.last)
    if not any(r.last for r in windows):
        session.stop()

    async def run() -> None:
        await session.run()

    asyncio.run(run())
    return collector.records


def extract(path: Path, stream_id: str, models: VisionModels, chat_path: Path | None = None, model_dir: Path = MODEL_DIR) -> list[features_pb2.FeatureRecord]:
    """Every FeatureRecord the services make for `path` (and its chat log), window order per modality."""
    records, windows = media_records(Path(path), stream_id, models, model_dir)
    if chat_path is not None:
        records += chat_records(Path(chat_path), stream_id, windows)
    return records
