"""Vision service: ingest's flow and CNN frames in, one vision FeatureRecord per (stream, window) out.

At start the three ONNX models are opened once (CUDA provider when a GPU is visible, else
CPU; see streamsight.inference) and warmed up; the provider is logged and reported in health.
The rest is the feature-stage runtime (streamsight.stage): one durable batch consumer per
partition k this replica holds, "vision-p<k>", reads

  streamsight.media.v1.frames_flow.<k>.*   gray flow frames (ingest: 5 fps, 320 px wide)
  streamsight.media.v1.frames_cnn.<k>.*    RGB 224x224 frames (ingest: 1 fps)
  streamsight.media.v1.windows.<k>.*       window records: the clock that finishes windows

in stored order; each fetch (frames of many streams mixed) is analysed in one pass
(`VisionStreams.step`: one batched inference per fetch), and each finished window is
published on streamsight.features.v1.vision.<k>.<stream> with message id `<stream>:vision:<i>`
before the fetch is acknowledged. Each stream's state (previous flow frame, window
accumulators) is saved after every fetch (`VisionStreams.export_state`), so a replica that takes
a partition over goes on with its streams exactly.
"""

from __future__ import annotations

import asyncio

from services.vision.runtime import VisionModels
from services.vision.settings import VisionSettings
from services.vision.streams import PRODUCER_VERSION, VisionStreams, record_info
from streamsight.stage import FeatureStage
from streamsight.windows import WindowResult

class VisionService(FeatureStage):
    name = "vision"
    modality = "vision"
    media_kinds = ("frames_flow", "frames_cnn", "windows")
    Settings = VisionSettings
    settings: VisionSettings

    async def open_logic(self) -> VisionStreams:
        s = self.settings
        self.models = await asyncio.to_thread(self._open_models)
        self.info = await asyncio.to_thread(record_info, self.models.provider, s.model_dir)
        self.log.info("vision models ready", model_dir=str(s.model_dir), **self.info, providers=self.models.providers)
        return VisionStreams(self.models, idle_s=s.stream_idle_s, window_s=s.window_s, max_flow_side=s.max_flow_side)

    def _open_models(self) -> VisionModels:
        s = self.settings
        models = VisionModels(s.model_dir, s.intra_threads or None, s.max_batch)
        models.warm_up()
        return models

    def health_info(self) -> dict[str, str]:
        s = self.settings
        return {**self.info, "intra_threads": str(s.intra_threads or "auto"), "max_batch": str(s.max_batch), **super().health_info()}

    def producer(self) -> str:
        return PRODUCER_VERSION

    def record_info(self) -> dict[str, str]:
        return self.info

    def describe(self, w: WindowResult) -> dict[str, object]:
        return {
            "flow_pairs": int(w.values["flow_pairs"]),
            "flow_mag_mean": round(w.values["flow_mag_mean"], 3),
            "motion_prob_max": round(w.values["motion_prob_max"], 3),
        }
