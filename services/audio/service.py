"""Audio service: ingest's audio chunks in, one audio FeatureRecord per (stream, window) out.

At start the configured tagger (an AudioSet-ontology ONNX model, optional) is loaded and
warmed up; without one the service runs on loudness and spectral features and says so in
its log and health. The rest is the feature-stage runtime (streamsight.stage): one durable
batch consumer per partition this replica holds, "audio-p<k>", reads
streamsight.media.v1.audio.<k>.<stream> (AudioChunks) and streamsight.media.v1.windows.<k>.<stream>
(window records) in stored order, `AudioStreams` (streams.py) turns them into windows, and each
is published on streamsight.features.v1.audio.<k>.<stream> with message id `<stream>:audio:<i>`
before the fetch is acknowledged. Each stream's state is saved after every fetch
(`AudioStreams.export_state`), so a replica that takes a partition over (after a kill, a stop or
a rebalance) goes on with it: every window comes out once and as one replica would make it.

All number crunching (loudness, spectral features, tagger inference) runs in the runtime's
worker thread, one fetch at a time, so the event loop stays free.
"""

from __future__ import annotations

import asyncio

import numpy as np

from services.audio.settings import AudioSettings
from services.audio.streams import AudioStreams, producer_version, record_info
from services.audio.tagger import OnnxTagger, TaggerConfig, TaggerError
from streamsight.stage import FeatureStage
from streamsight.windows import WindowResult



def open_tagger(settings: AudioSettings) -> OnnxTagger | None:
    """The configured tagger, loaded and warmed up with one window of silence; None when none is set.

    Raises TaggerError, saying what is wrong, when the file does not load or run as a tagger.
    """
    if settings.tagger_path is None:
        return None
    config = TaggerConfig(
        path=settings.tagger_path,
        kind=settings.tagger_kind,
        classes=tuple(settings.tagger_classes),
        intra_threads=settings.intra_threads or None,
    )
    tagger = OnnxTagger(config)
    if not tagger.classes:
        raise TaggerError(f"{settings.tagger_path}: the model has none of the configured classes {settings.tagger_classes}")
    try:
        tagger.tag(np.zeros(int(settings.window_s * tagger.sample_rate), np.float32), tagger.sample_rate)
    except Exception as exc:  # onnxruntime's own error types: the graph loads but does not run
        raise TaggerError(f"{settings.tagger_path}: the tagger loads but fails on a test window: {exc}") from exc
    return tagger


class AudioService(FeatureStage):
    name = "audio"
    modality = "audio"
    media_kinds = ("audio", "windows")
    Settings = AudioSettings
    settings: AudioSettings

    async def open_logic(self) -> AudioStreams:
        s = self.settings
        self.tagger = await asyncio.to_thread(open_tagger, s)
        if self.tagger is None:
            self.log.warning("no tagger configured (STREAMSIGHT_AUDIO_TAGGER_PATH); loudness and spectral features only", tagger="none")
        self._producer = await asyncio.to_thread(producer_version, self.tagger)
        self.info = record_info(self.tagger)
        return AudioStreams(self.tagger, s.silence_dbfs, window_s=s.window_s, idle_s=s.stream_idle_s)

    def health_info(self) -> dict[str, str]:
        info = {"tagger": self.info["tagger"], "provider": self.info["provider"], "producer": self._producer,
                "intra_threads": str(self.settings.intra_threads), **super().health_info()}
        if self.tagger is not None:
            info["tagger_kind"] = self.settings.tagger_kind
            info["tagger_classes"] = str(len(self.tagger.classes))
            if self.tagger.missing_classes:
                info["tagger_missing_classes"] = ", ".join(self.tagger.missing_classes)
        return info

    def producer(self) -> str:
        return self._producer

    def record_info(self) -> dict[str, str]:
        return self.info

    def describe(self, w: WindowResult) -> dict[str, object]:
        return {"coverage": round(w.values.get("audio_coverage", 0.0), 3)}
