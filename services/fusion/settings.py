"""Fusion settings (section `fusion`: environment `STREAMSIGHT_FUSION_*`, YAML `fusion:`; see streamsight.config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from streamsight.config import BaseServiceSettings

MODELS = Path(__file__).resolve().parent / "models"


class FusionSettings(BaseServiceSettings):
    section = "fusion"

    grpc_port: int = Field(50066, ge=0, le=65535, description="gRPC port (health)")
    model_path: Path = Field(MODELS / "default.json", description="Fusion model JSON (all modalities)")
    model_av_path: Path | None = Field(MODELS / "default_av.json", description="Model for windows without chat (vision+audio); empty = none")
    ingest_address: str = Field("127.0.0.1:50061", description="gRPC address of the ingest service (clips)")
    expected_modalities: list[str] = Field(["vision", "audio"], description="Modalities every window waits for (chat joins when the stream declares it or sends it)")
    deadline_s: float = Field(15.0, gt=0, description="Live sources: media seconds past a window's end before it is scored with what is there (files: none)")
    stall_timeout_s: float = Field(600.0, ge=0, description="Last resort: wall seconds a stage may deliver nothing for a stream before windows are scored without it (0 = never)")
    max_ahead_windows: int = Field(30, ge=1, description="A record's window index may be at most this far past the stream's highest (and, live, past its wall clock)")
    threshold: float | None = Field(None, gt=0, lt=1, description="Highlight threshold; empty = the model's own")
    merge_gap: int = Field(1, ge=0, description="Records without 1 s values: low windows allowed inside one highlight run")
    max_highlight_windows: int = Field(6, ge=1, description="Records without 1 s values: longest highlight in windows (longer runs are split by NMS)")
    lead_in_s: float = Field(3.0, ge=0, description="Seconds of lead-in before a highlight in its clip")
    tail_s: float = Field(2.0, ge=0, description="Seconds after a highlight in its clip")
    min_clip_s: float = Field(8.0, gt=0, description="Shortest clip: a shorter moment's clip is widened around it")
    max_clip_s: float = Field(45.0, gt=0, description="Longest clip: a longer one is cut at this length from its start")
    chat_lag_min_s: float = Field(1.0, ge=0, description="Chat's reaction starts at least this long after a moment's peak (estimated from data: p5 1.65 s)")
    chat_lag_max_s: float = Field(12.0, ge=0, description="and at most this long after it (estimated from data: p95 10.35 s); files wait for it before deciding a moment")
    live_chat_wait_s: float = Field(10.0, ge=0, description="Live streams with chat: at most this many media seconds past a moment's peak its decision waits for chat (the event's latency_s); a live stream started without chat waits 3 s")
    moment_cues_alone: int = Field(3, ge=1, le=4, description="A moment with this many cues (sound, motion, chat's reaction) is a highlight whatever its windows' scores (4: never)")
    glitch_highlights: str = Field("suppress", pattern="^(suppress|mark)$", description="A moment overlapping a glitch or a black, freeze, silence or audio_gap health incident: suppress (no highlight) or mark (Highlight.glitch); loudness and av_drift incidents only mark")
    clip_timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for ingest to cut a clip")
    vertical_clips: bool = Field(False, description="Also ask ingest for a 9:16 vertical copy of each highlight's clip, cropped around the most motion (Highlight.vertical_clip)")
    vertical_timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for the vertical copy (re-encoded: about 0.7 s of CPU per second of 720p clip); the highlight waits for it")
    analysed_wait_s: float = Field(120.0, gt=0, description="After a stream's last score and highlight: longest wait for glitch and chat to be done with it before fusion's 'analysed' status (its last word on the stream); past it none is published and clients fall back to a quiet time")
    top_features: int = Field(5, ge=1, le=50, description="Contributions listed in a score's 'why'")
    state_bucket: str = Field("fusion", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream KV bucket of the join state")
    state_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long unfinished join state is kept")

    @field_validator("chat_lag_max_s")
    @classmethod
    def _lags(cls, value: float, info) -> float:
        low = info.data.get("chat_lag_min_s")
        if low is not None and value < low:
            raise ValueError(f"must be at least chat_lag_min_s ({low})")
        return value

    @field_validator("max_clip_s")
    @classmethod
    def _clips(cls, value: float, info) -> float:
        low = info.data.get("min_clip_s")
        if low is not None and value < low:
            raise ValueError(f"must be at least min_clip_s ({low})")
        return value

    @field_validator("expected_modalities")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        allowed = {"vision", "audio", "chat"}
        if not value or not set(value) <= allowed:
            raise ValueError(f"must be a non-empty list drawn from {sorted(allowed)}")
        return value

    @field_validator("model_av_path", "threshold", mode="before")
    @classmethod
    def _empty_path(cls, value):
        return None if value in ("", None) else value
