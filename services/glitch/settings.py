"""Glitch settings (section `glitch`: environment `STREAMSIGHT_GLITCH_*`, YAML `glitch:`; see streamsight.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from services.glitch.classifier import DEFAULT_PRECISION, shipped_model, shipped_verifier
from services.glitch.detector import DetectorConfig
from services.glitch.health.monitor import HealthConfig
from streamsight.config import BaseServiceSettings


class GlitchSettings(BaseServiceSettings):
    section = "glitch"

    grpc_port: int = Field(50065, ge=0, le=65535, description="gRPC port (health)")
    model_precision: Literal["int8", "fp32"] = Field(DEFAULT_PRECISION, description="Which shipped corruption classifier runs: int8 (glitch_cnn.int8.onnx, 1.5-1.7x the tiles per CPU second of fp32 here, the same incidents on the held-out footage; services/glitch/models/MODEL.md, section int8) or fp32 (glitch_cnn.onnx)")
    model_path: Path | None = Field(None, description="ONNX corruption classifier; unset: the shipped model of model_precision")
    intra_threads: int = Field(1, ge=0, le=64, description="onnxruntime intra-op threads; 0 lets onnxruntime choose (all cores). 1 by default: stages share the cores, and one thread cost glitch 10-16 % less CPU in a whole file job on 2 cores (bench/README.md), with the same probabilities bit for bit")
    fetch_batch: int = Field(64, ge=1, le=1024, description="Media messages fetched per batch (frames of all streams are classified together)")
    max_frame_width: int = Field(1920, ge=64, le=3840, description="Widest glitch frame accepted, pixels (ingest sends at most 1280); wider ones are dead-lettered")
    max_frame_height: int = Field(1080, ge=64, le=2160, description="Tallest glitch frame accepted, pixels (ingest sends at most 720)")
    open_score: float = Field(0.95, gt=0, le=1, description="Classifier score that opens an incident on one frame")
    suspect_score: float = Field(0.35, gt=0, le=1, description="Score enough while decoder evidence makes a frame suspect")
    close_after_s: float = Field(1.5, gt=0, description="Media seconds without a bad frame that end an incident")
    freeze_min_s: float = Field(10.0, gt=0, description="Frozen picture for this long is a freeze incident (a health event, no longer a glitch)")
    update_every_s: float = Field(10.0, gt=0, description="Media seconds between UPDATE events of a long incident")
    stripes_min_tile_rows: int = Field(2, ge=1, le=16, description="The classifier's stripes score opens an incident alone only when its stripes tiles (P >= stripes_tile_score) span this many tile rows or reach the top or bottom tile row: a wrong-stride read garbles the picture down to an edge or over many rows; a real game's scoreboard highlight bar lit one inner tile row (models/MODEL.md, Session 7). 1 turns the rule off")
    stripes_verifier: bool = Field(True, description="Ask a second model (stripes_verifier.int8.onnx, model 8) about every frame the classifier scores stripes at open_score or more, and count the lower stripes probability of the two: on 20 held-out real game takes it removed all 6 stripes false alarms of the classifier alone, for 2 fewer of 62 held-out stripes incidents found (models/MODEL.md, Session 12). false: the classifier alone")
    stripes_tile_score: float = Field(0.95, gt=0, le=1, description="A tile's stripes probability that counts it for stripes_min_tile_rows")
    stripes_min_tile_cols: int = Field(3, ge=1, le=16, description="And the classifier's stripes score opens an incident alone only when its tiles of stripes probability 0.5 or more lie in this many tile columns (of 6 on a 720p frame): a wrong-stride read shears whole rows; a real game's bright green acid pool lit two columns at the picture's edge (models/MODEL.md, Session 16). 1 turns the rule off")
    state_bucket: str = Field("glitch", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream KV bucket of each stream's detector and health state (a replica taking a partition over resumes from it)")
    state_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long a stream's saved glitch state (or a finished stream's mark) is kept")
    # stream health (health events beside glitch events; see services/glitch/health)
    health_black_luma: float = Field(24.0, ge=0, le=255, description="A pixel this dark or darker (luma 0-255) counts as black")
    health_black_ratio: float = Field(0.98, gt=0, le=1, description="Share of black pixels that makes a black picture")
    health_black_min_s: float = Field(0.5, gt=0, description="Black picture for this long is a black incident (glitch frames come at 2 per second)")
    health_silence_dbfs: float = Field(-60.0, le=0, description="Audio below this RMS level (dBFS) is silent")
    health_silence_min_s: float = Field(3.0, gt=0, description="Silent audio for this long is a silence incident")
    health_loudness_target: Literal["streaming", "broadcast"] = Field("streaming", description="Which loudness target applies: streaming (health_streaming_lufs) or broadcast (EBU R128, health_broadcast_lufs)")
    health_streaming_lufs: float = Field(-14.0, le=0, description="Loudness target of streaming platforms, LUFS")
    health_broadcast_lufs: float = Field(-23.0, le=0, description="EBU R128 broadcast loudness target, LUFS")
    health_loud_lu: float = Field(9.0, gt=0, description="Short-term loudness this far above the target (LU) is too loud")
    health_jump_lu: float = Field(20.0, gt=0, description="Short-term loudness this far above the stream's own level (LU, after 30 s of audio) is too loud")
    health_quiet_lu: float = Field(20.0, gt=0, description="Short-term loudness this far below the target (LU), not silent, is too quiet")
    health_quiet_min_s: float = Field(10.0, gt=0, description="Too quiet for this long is a loudness incident")
    health_audio_gap_min_s: float = Field(0.5, gt=0, description="A hole in the audio this long or longer, video going on, is an audio_gap incident")
    health_av_drift_max_s: float = Field(0.2, gt=0, description="Audio timestamps slipping this far against the audio delivered is an av_drift incident (measured on the source's own audio timestamps; from an older ingest without them, at 0.2 s resolution)")
    health_no_audio_after_s: float = Field(5.0, gt=0, description="No audio at all by this much video: the stream has no audio track (one no_audio incident)")

    @model_validator(mode="after")
    def _shipped_model(self) -> GlitchSettings:
        if self.model_path is None:
            self.model_path = shipped_model(self.model_precision)
        return self

    def verifier_path(self) -> Path | None:
        """The second opinion on stripes, or None when it is turned off."""
        return shipped_verifier() if self.stripes_verifier else None

    def detector_config(self) -> DetectorConfig:
        """The corruption detector's settings (freeze is left to the health checks)."""
        return DetectorConfig(open_score=self.open_score, suspect_score=self.suspect_score, close_after_s=self.close_after_s,
                              freeze_min_s=self.freeze_min_s, update_every_s=self.update_every_s, report_freeze=False,
                              stripes_min_tile_rows=self.stripes_min_tile_rows, stripes_tile_score=self.stripes_tile_score,
                              stripes_min_tile_cols=self.stripes_min_tile_cols)

    def health_config(self) -> HealthConfig:
        """The health checks' thresholds."""
        target = self.health_streaming_lufs if self.health_loudness_target == "streaming" else self.health_broadcast_lufs
        return HealthConfig(
            black_luma=self.health_black_luma, black_ratio=self.health_black_ratio, black_min_s=self.health_black_min_s,
            freeze_min_s=self.freeze_min_s, silence_dbfs=self.health_silence_dbfs, silence_min_s=self.health_silence_min_s,
            target_lufs=target, loud_lu=self.health_loud_lu, quiet_lu=self.health_quiet_lu, quiet_min_s=self.health_quiet_min_s,
            jump_lu=self.health_jump_lu, audio_gap_min_s=self.health_audio_gap_min_s, av_drift_max_s=self.health_av_drift_max_s,
            no_audio_after_s=self.health_no_audio_after_s, update_every_s=self.update_every_s,
        )
