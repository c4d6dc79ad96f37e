"""Vision settings (section `vision`: environment `STREAMSIGHT_VISION_*`, YAML `vision:`; see streamsight.config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from services.vision.runtime import FLOW_MODEL, FRAME_MODEL, MODEL_DIR, MOTION_MODEL
from streamsight.config import StageSettings


class VisionSettings(StageSettings):
    section = "vision"

    grpc_port: int = Field(50063, ge=0, le=65535, description="gRPC port (health and reflection only)")
    model_dir: Path = Field(MODEL_DIR, description="Folder holding flow.onnx, motion_cnn.onnx and frame_cnn.onnx")
    intra_threads: int = Field(1, ge=0, le=256, description="Threads one inference may use; 0 lets onnxruntime decide (all cores). 1 by default: the stack's stages run side by side on the same cores, and one thread per inference cost vision 25 % less CPU in a whole file job on 2 cores (bench/README.md), with outputs bit for bit the same; 0 suits a pod with cores of its own")
    max_batch: int = Field(16, ge=1, le=1024, description="Most frames (or flow pairs) per model call; a fetch is split into calls of this size")
    fetch_batch: int = Field(64, ge=1, le=1024, description="MEDIA messages fetched at once; all of one fetch share one inference pass")
    max_flow_side: int = Field(640, ge=32, le=1920, description="Largest flow frame side accepted, pixels (ingest sends 320 px wide); larger ones are dead-lettered")

    @field_validator("model_dir")
    @classmethod
    def _models_present(cls, value: Path) -> Path:
        missing = [name for name in (FLOW_MODEL, MOTION_MODEL, FRAME_MODEL) if not (value / name).is_file()]
        if missing:
            raise ValueError(f"{value} lacks {', '.join(missing)}")
        return value
