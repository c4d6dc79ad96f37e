"""Ingest settings (section `ingest`: environment `STREAMSIGHT_INGEST_*`, YAML `ingest:`; see streamsight.config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from streamsight.config import BaseServiceSettings

from .netguard import parse_networks


class IngestSettings(BaseServiceSettings):
    section = "ingest"

    grpc_port: int = Field(50061, ge=0, le=65535, description="Control API port")
    max_streams: int = Field(16, ge=1, description="Streams ingested at once; more are refused (a replica's capacity for placement)")
    advertise_address: str = Field(
        "", description="host:port other services reach this ingest replica's gRPC API at (empty: the address it listens on)"
    )
    replica_ttl_s: float = Field(
        6.0, ge=1.0, le=300.0,
        description="Seconds without a heartbeat after which an ingest replica counts as dead and a survivor takes over its streams",
    )
    max_backlog: int = Field(
        400, ge=10, description="Media messages a stream may have waiting for analysers: then a file waits, a live source drops frames"
    )
    media_max_bytes: int = Field(
        512 * 1024**2, ge=16 * 1024**2, description="Bytes the in-memory MEDIA stream may hold before files wait and live sources drop frames (nats-server memory)"
    )
    clip_store: Literal["local", "nats"] = Field("local", description="Where exported clips are kept: data_dir, or the NATS object store")
    clip_bucket: str = Field("clips", pattern=r"^[a-zA-Z0-9_-]+$", description="Object store bucket for clip_store=nats")
    resume_bucket: str = Field(
        "ingest_streams", pattern=r"^[a-zA-Z0-9_-]*$",
        description="KV bucket where each running stream keeps how far it got, so a restarted ingest resumes it (empty: none kept)",
    )
    buffer_seconds: float = Field(300.0, gt=0, description="Minutes of original packets kept for clips, in seconds")
    finished_keep_s: float = Field(1800.0, ge=0, description="Seconds a finished stream stays known, for its status and new clips")
    max_finished: int = Field(64, ge=0, description="Finished streams kept for clips at most; the oldest are forgotten first")
    flow_fps: float = Field(5.0, gt=0, description="Grayscale frames per second for optical flow")
    flow_width: int = Field(320, ge=32, description="Width of flow frames, pixels (aspect kept)")
    cnn_fps: float = Field(1.0, gt=0, description="RGB frames per second for the frame CNN")
    cnn_size: int = Field(224, ge=32, description="Side of the square CNN frames, pixels")
    glitch_fps: float = Field(2.0, gt=0, description="Frames per second for corruption detection (RGB, or a yuv420p source's YUV420P planes, which glitch converts to the same RGB)")
    glitch_max_width: int = Field(
        1280, ge=64,
        description="Largest glitch frame width (never enlarged). 640x360 costs about a quarter of the glitch CPU and memory but misses most pictures read with a too-small height (services/glitch/models/MODEL.md)",
    )
    glitch_max_height: int = Field(720, ge=64, description="Largest glitch frame height (never enlarged)")
    audio_rate: int = Field(32000, ge=8000, le=96000, description="Sample rate of the mono audio for analysers")
    audio_chunk_s: float = Field(
        1.0, ge=0.05, le=5.0,
        description="Length of the audio chunks sent to analysers, seconds. A chunk is known once whole: 0.25 s lets health decide loudness and av_drift within 1 s of a fault where its rules allow (1 s chunks: up to 1.5 s; services/glitch/health/HEALTH.md), but costs 4 audio messages a second per stream instead of 1, each a state snapshot of the audio stage: live, 5 streams on 2 cores, audio 0.08 -> 0.12 cores and nats-server 0.16 -> 0.18, and one of two rounds fell behind (bench/README.md). The audio stage's features do not depend on it",
    )
    open_timeout_s: float = Field(15.0, gt=0, description="Seconds to open and probe a source")
    read_timeout_s: float = Field(10.0, gt=0, description="Seconds a read may stall before a live source reconnects")
    live_give_up_s: float = Field(30.0, gt=0, description="Seconds without media after which a live stream has ended")
    allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs network sources may reach although refused by default (loopback, private, link-local), e.g. [\"127.0.0.0/8\"] for a lab; metadata addresses stay refused",
    )

    @field_validator("allow_networks")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value
