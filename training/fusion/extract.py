"""Feature records for a media file (and chat log) made offline by the analysers' own domain code.

The same code paths the services run: ingest's `IngestPipeline` decodes and samples the file,
vision's `StreamAnalyzer` (+ `VisionModels`), audio's `AudioAnalyzer` and chat's
`ChatAggregator` (chat read with the chat service's replay reader) make one FeatureRecord per
(window, modality), exactly as the services would publish them, without NATS.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from services.audio.analyzer import AudioAnalyzer
from services.chat.replay import load_replay
from services.chat.windows import ChatAggregator
from services.ingest.decode import DecodeConfig
from services.ingest.items import AudioChunk, SampledFrame, WindowRecord
from services.ingest.pipeline import IngestConfig, IngestPipeline
from services.ingest.sampling import SamplingConfig
from services.vision.analyzer import StreamAnalyzer, process_streams
from services.vision.runtime import VisionModels
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2

log = structlog.get_logger(__name__)
MODALITY = {"vision": common_pb2.MODALITY_VISION, "audio": common_pb2.MODALITY_AUDIO, "chat": common_pb2.MODALITY_CHAT}
_BATCH = 32  # flow/CNN frames queued before the models run (batched like the service)


def _record(stream_id: str, modality: str, window: int, start_s: float, end_s: float, values: dict[str, float]) -> features_pb2.FeatureRecord:
    return features_pb2.FeatureRecord(
        stream_id=stream_id, window=window, modality=MODALITY[modality], start_s=start_s, end_s=end_s,
        values={k: float(v) for k, v in values.items()}, producer_version="offline",
    )


async def _media_records(path: Path, stream_id: str, models: VisionModels) -> tuple[list[features_pb2.FeatureRecord], float]:
    config = IngestConfig(decode=DecodeConfig(sampling=SamplingConfig(glitch=None), decoder_threads=1))
    vision = StreamAnalyzer(models=models, stream_id=stream_id)
    audio = AudioAnalyzer(sample_rate=config.decode.audio_rate)
    out: list[features_pb2.FeatureRecord] = []
    queued = 0
    end = 0.0

    def add_vision(done) -> None:
        out.extend(_record(stream_id, "vision", w.window, w.start_s, w.end_s, w.features) for w in done)

    async for item in IngestPipeline(str(path), config, stream_id=stream_id).items():
        if isinstance(item, SampledFrame):
            if item.consumer == "flow":
                vision.submit_flow_frame(item.image, item.media_time)
            elif item.consumer == "cnn":
                vision.submit_cnn_frame(item.image, item.media_time)
            queued += 1
            if queued >= _BATCH:
                add_vision(process_streams([vision], models)[vision])
                queued = 0
        elif isinstance(item, AudioChunk):
            for w in audio.push(item.samples, item.media_time):
                out.append(_record(stream_id, "audio", w.window, w.start_s, w.end_s, w.features))
        elif isinstance(item, WindowRecord):
            end = max(end, item.end)
    add_vision(vision.flush(models))
    try:
        tail = audio.flush()
    except ValueError as exc:  # AudioAnalyzer cannot finish a last window of < 100 ms (an encoder's tail)
        log.warning("last audio window skipped", stream_id=stream_id, error=str(exc))
        tail = []
    for w in tail:
        out.append(_record(stream_id, "audio", w.window, w.start_s, w.end_s, w.features))
    return out, end


def chat_records(chat_path: Path, stream_id: str, end_s: float, aggregator: ChatAggregator | None = None) -> list[features_pb2.FeatureRecord]:
    """Chat FeatureRecords of a replay log up to the media's end."""
    agg = aggregator or ChatAggregator()
    agg.add_batch(m for m in load_replay(chat_path) if m.media_time < end_s)
    windows, _ = agg.finish(end_s)
    w = agg.window_s
    return [_record(stream_id, "chat", i, i * w, min((i + 1) * w, end_s), values) for i, values in windows]


def extract(path: Path, stream_id: str, models: VisionModels, chat_path: Path | None = None, aggregator: ChatAggregator | None = None) -> list[features_pb2.FeatureRecord]:
    """Every FeatureRecord the analysers make for `path` (and its chat log), window order per modality."""
    records, end = asyncio.run(_media_records(Path(path), stream_id, models))
    if chat_path is not None:
        records += chat_records(Path(chat_path), stream_id, end, aggregator)
    return records
