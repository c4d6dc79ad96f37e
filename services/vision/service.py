"""Vision service: ingest's flow and CNN frames in, one vision FeatureRecord per (stream, window) out.

At start the three ONNX models are opened once (CUDA provider when a GPU is visible, else
CPU; see streamsight.inference) and warmed up; the provider is logged and reported in health.
Then ONE durable batch consumer, "vision", reads

  streamsight.media.v1.frames_flow.*   gray flow frames (ingest: 5 fps, 320 px wide)
  streamsight.media.v1.frames_cnn.*    RGB 224x224 frames (ingest: 1 fps)
  streamsight.media.v1.windows.*       window records: the clock that finishes windows

in stored order. Each fetch (frames of many streams mixed) is analysed in one pass in a
worker thread (`VisionStreams.step`: one batched inference per fetch), the finished windows
are published on streamsight.features.v1.vision.<stream> with message id
`<stream>:vision:<i>`, and only then does the bus acknowledge the fetch. Bad messages are
returned as rejected and dead-lettered; other streams carry on.

A window that could not be published (NATS trouble) stays in an outbox and goes first on
the next fetch, so a finished window is never lost while the process lives; JetStream's
deduplication by message id keeps a re-sent one single.

Scaling: the per-stream state lives in this process, so one instance serves all streams
(the shared durable would split one stream's frames across instances).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from nats.aio.msg import Msg
from prometheus_client import Counter

from services.vision.runtime import FLOW_MODEL, FRAME_MODEL, MOTION_MODEL, VisionModels
from services.vision.settings import VisionSettings
from services.vision.streams import VisionStreams, WindowOut
from streamsight import subjects
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.features.v1 import features_pb2
from streamsight.inference import model_digest
from streamsight.service import Service
from streamsight.telemetry import HANDLE_LATENCY, current_trace_id

MODALITY = "vision"
PRODUCER_VERSION = "vision-features-1"  # bump when FEATURES.md's definitions change
CONSUMER = "vision"
CONSUMER_INACTIVE_S = 300.0  # a removed vision service stops holding MEDIA back after this

WINDOWS = Counter("streamsight_vision_windows_total", "Vision feature records published, by flag", ["flag"])
LATE_FRAMES = Counter("streamsight_vision_late_frames_total", "Frames dropped because their window was already finished")


def model_name(path: Path) -> str:
    """`<file>@sha256:<first 12 hex>`: which exact model made a record."""
    return f"{path.name}@sha256:{model_digest(path)}"


class VisionService(Service):
    name = "vision"
    Settings = VisionSettings
    settings: VisionSettings

    async def start(self) -> None:
        s = self.settings
        self.models, names = await asyncio.to_thread(self._open_models)
        self.info = {"provider": self.models.provider, **names}
        self.streams = VisionStreams(self.models, idle_s=s.stream_idle_s)
        self._lock = asyncio.Lock()  # one step (or idle flush) at a time: the state is not thread-safe
        self._outbox: list[WindowOut] = []
        self.log.info("vision models ready", model_dir=str(s.model_dir), **self.info, providers=self.models.providers)
        assert self.bus is not None
        media = [subjects.media("frames_flow"), subjects.media("frames_cnn"), subjects.media("windows")]
        self.bus.consume_batches(CONSUMER, media, self.on_batch, subjects.MEDIA_STREAM, batch=s.fetch_batch, inactive_threshold_s=CONSUMER_INACTIVE_S)
        self._idle_task = asyncio.create_task(self._flush_idle_streams(), name="vision:idle")

    def _open_models(self) -> tuple[VisionModels, dict[str, str]]:
        s = self.settings
        models = VisionModels(s.model_dir, s.intra_threads or None, s.max_batch)
        models.warm_up()
        names = {
            "flow_model": model_name(s.model_dir / FLOW_MODEL),
            "motion_model": model_name(s.model_dir / MOTION_MODEL),
            "frame_model": model_name(s.model_dir / FRAME_MODEL),
        }
        return models, names

    def health_info(self) -> dict[str, str]:
        s = self.settings
        return {**self.info, "intra_threads": str(s.intra_threads or "auto"), "max_batch": str(s.max_batch)}

    async def stop(self) -> None:
        self._idle_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._idle_task
        if len(self.streams.streams):
            # Their acknowledged frames are gone with this process; the next instance resumes
            # from the unacknowledged ones and flags the window it joins "partial".
            self.log.warning("vision stopping with streams in progress", streams=sorted(self.streams.streams))

    # ---- the consumer ---------------------------------------------------------------------

    async def on_batch(self, msgs: list[Msg]) -> dict[int, str]:
        async with self._lock:
            await self._publish_outbox()  # what a failed publish left behind goes first
            started = time.perf_counter()
            late = self.streams.late_frames
            result = await asyncio.to_thread(self.streams.step, [(m.subject, m.data) for m in msgs])
            LATE_FRAMES.inc(self.streams.late_frames - late)
            HANDLE_LATENCY.labels(self.name, "batch").observe(time.perf_counter() - started)
            self._outbox += result.windows
            await self._publish_outbox()
        return result.rejected

    async def _publish_outbox(self) -> None:
        assert self.bus is not None
        while self._outbox:
            w = self._outbox[0]
            record = features_pb2.FeatureRecord(
                stream_id=w.stream_id,
                window=w.window,
                modality=common_pb2.MODALITY_VISION,
                start_s=w.start_s,
                end_s=w.end_s,
                values=w.values,
                info=self.info,
                flags=list(w.flags),
                producer_version=PRODUCER_VERSION,
            )
            msg_id = subjects.feature_msg_id(w.stream_id, MODALITY, w.window)
            await self.bus.publish(subjects.features(MODALITY, w.stream_id), record, msg_id, kind="features")
            self._outbox.pop(0)
            for flag in w.flags or ("ok",):
                WINDOWS.labels(flag).inc()
            self.log.info(
                "window published",
                stream_id=w.stream_id,
                window=w.window,
                flags=list(w.flags),
                flow_pairs=int(w.values["flow_pairs"]),
                flow_mag_mean=round(w.values["flow_mag_mean"], 3),
                motion_prob_max=round(w.values["motion_prob_max"], 3),
                trace_id=current_trace_id(),
            )

    async def _flush_idle_streams(self) -> None:
        """Streams whose ingest vanished without a last window record are flushed, not kept forever."""
        period = min(30.0, self.settings.stream_idle_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                async with self._lock:
                    self._outbox += await asyncio.to_thread(self.streams.evict_idle)
                    await self._publish_outbox()
            except Exception as exc:  # NATS trouble: the outbox keeps the windows for the next try
                self.log.warning("idle flush failed; will retry", error=repr(exc))
