"""Glitch settings (section `glitch`: environment `STREAMSIGHT_GLITCH_*`, YAML `glitch:`; see streamsight.config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.glitch.classifier import MODEL_DIR, MODEL_FILE
from streamsight.config import BaseServiceSettings


class GlitchSettings(BaseServiceSettings):
    section = "glitch"

    grpc_port: int = Field(50065, ge=0, le=65535, description="gRPC port (health)")
    model_path: Path = Field(MODEL_DIR / MODEL_FILE, description="ONNX corruption classifier")
    intra_threads: int = Field(0, ge=0, le=64, description="onnxruntime intra-op threads; 0 lets onnxruntime choose")
    fetch_batch: int = Field(64, ge=1, le=1024, description="Media messages fetched per batch (frames of all streams are classified together)")
    max_frame_width: int = Field(1920, ge=64, le=3840, description="Widest glitch frame accepted, pixels (ingest sends at most 1280); wider ones are dead-lettered")
    max_frame_height: int = Field(1080, ge=64, le=2160, description="Tallest glitch frame accepted, pixels (ingest sends at most 720)")
    open_score: float = Field(0.95, gt=0, le=1, description="Classifier score that opens an incident on one frame")
    suspect_score: float = Field(0.35, gt=0, le=1, description="Score enough while decoder evidence makes a frame suspect")
    close_after_s: float = Field(1.5, gt=0, description="Media seconds without a bad frame that end an incident")
    freeze_min_s: float = Field(10.0, gt=0, description="Frozen picture for this long is a freeze incident")
    update_every_s: float = Field(10.0, gt=0, description="Media seconds between UPDATE events of a long incident")
