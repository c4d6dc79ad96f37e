"""Audio service settings (section `audio`: environment `STREAMSIGHT_AUDIO_*`, YAML `audio:`; see streamsight.config).

Without `tagger_path` the service runs on loudness and spectral features only and says
`tagger: none`. A configured path must exist; whether the file loads as a tagger of
`tagger_kind` is checked when the service starts (see __main__.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from services.audio.labels import find_label, labels_for
from services.audio.tagger import DEFAULT_CLASSES, KIND_DEFAULTS
from streamsight.config import StageSettings


class AudioSettings(StageSettings):
    section = "audio"

    grpc_port: int = Field(50064, ge=0, le=65535, description="gRPC port (health only)")
    tagger_path: Path | None = Field(
        None, description="ONNX sound-event tagger (see services/audio/README.md); empty: no tagger, loudness and spectral features only"
    )
    tagger_kind: str = Field("panns", description=f"What the tagger file is: one of {sorted(KIND_DEFAULTS)}")
    tagger_classes: list[str] = Field(
        list(DEFAULT_CLASSES), min_length=1, description="AudioSet class names reported as tag_<class>_mean/_max (JSON list in the env)"
    )
    intra_threads: int = Field(1, ge=0, le=64, description="Threads one tagger inference may use; 0: onnxruntime's default")
    silence_dbfs: float = Field(-60.0, ge=-120.0, le=0.0, description="100 ms blocks below this RMS level count as silence, dBFS")
    fetch_batch: int = Field(32, ge=1, le=1024, description="MEDIA messages fetched at once (audio chunks and window records of all streams)")

    @field_validator("tagger_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value in ("", None) else value

    @field_validator("tagger_path")
    @classmethod
    def _tagger_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file (leave it empty to run without a tagger)")
        return value

    @field_validator("tagger_kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value not in KIND_DEFAULTS:
            raise ValueError(f"unknown tagger kind; use one of {sorted(KIND_DEFAULTS)}")
        return value

    @field_validator("tagger_classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        # Checked against the full AudioSet list: YAMNet lacks a few of its classes, which the
        # tagger then leaves out with a warning; a name in neither list is a typo.
        audioset = labels_for("panns")
        unknown = [name for name in value if find_label(audioset, name) is None]
        if unknown:
            raise ValueError(f"not AudioSet class names: {unknown}")
        return value
