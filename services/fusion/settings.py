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
    merge_gap: int = Field(1, ge=0, description="Low windows allowed inside one highlight run")
    max_highlight_windows: int = Field(6, ge=1, description="Longest highlight in windows (longer runs are split by NMS)")
    lead_in_s: float = Field(3.0, ge=0, description="Seconds of lead-in before a highlight in its clip")
    tail_s: float = Field(2.0, ge=0, description="Seconds after a highlight in its clip")
    clip_timeout_s: float = Field(30.0, gt=0, description="Seconds to wait for ingest to cut a clip")
    top_features: int = Field(5, ge=1, le=50, description="Contributions listed in a score's 'why'")
    state_bucket: str = Field("fusion", pattern=r"^[A-Za-z0-9_-]+$", description="JetStream KV bucket of the join state")
    state_ttl_s: float = Field(7 * 86400.0, gt=0, description="How long unfinished join state is kept")

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
