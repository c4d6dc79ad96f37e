"""Chat service settings (section `chat`: environment `STREAMSIGHT_CHAT_*`, YAML `chat:`; see streamsight.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from streamsight.config import BaseServiceSettings


class ChatSettings(BaseServiceSettings):
    section = "chat"

    grpc_port: int = Field(50062, ge=0, le=65535, description="Port of the Chat control API")
    irc_host: str = Field("irc.chat.twitch.tv", min_length=1, description="Twitch IRC server for twitch:<channel> sources")
    irc_port: int = Field(6697, ge=1, le=65535, description="Port of irc_host")
    irc_tls: bool = Field(True, description="Use TLS to irc_host (Twitch: 6697 with TLS, 6667 without)")
    irc_ca_file: str = Field("", description="PEM file of extra CAs to trust for IRC over TLS; empty: the system's")
    irc_token: str = Field("", description="OAuth token for irc_host (sent to no other host); empty: anonymous justinfan login")
    irc_nick: str = Field("", description="Account name that goes with irc_token")
    max_streams: int = Field(64, ge=1, description="Chat readers this instance runs at once")
    resume_bucket: str = Field(
        "chat_streams", pattern=r"^[a-zA-Z0-9_-]*$",
        description="KV bucket of every chat reader's start, progress and status: any chat replica takes any call, and the replica "
        "that takes a stream's partition over (a restart, a dead replica) resumes its reader (empty: none kept, and run one replica only)",
    )
    replay_roots: list[str] = Field(default_factory=list, description="When set, replay files must lie under one of these folders")
    max_replay_mb: float = Field(512.0, gt=0, description="Largest replay file accepted, MB (a replay is held in memory)")
    forecast_model: Path = Field(Path(__file__).parent / "models" / "forecast.onnx", description="LSTM forecaster ONNX file")
    sentiment_backend: Literal["lexicon", "encoder"] = Field(
        "lexicon",
        description="Message sentiment: lexicon (VADER + Twitch lexicon, ~50k msg/s/core) or encoder "
        "(MiniLM + trained head, ONNX, needs the encoder extra; ~100x slower)",
    )
    finished_kept: int = Field(256, ge=0, description="Finished readers GetChat still reports (oldest forgotten first)")

    @field_validator("irc_nick")
    @classmethod
    def _nick_for_token(cls, nick: str, info: ValidationInfo) -> str:
        if info.data.get("irc_token") and not nick:
            raise ValueError("irc_token is set but irc_nick is empty: an OAuth token needs the account's nick")
        return nick

    @field_validator("irc_ca_file")
    @classmethod
    def _ca_file(cls, value: str) -> str:
        if value and not Path(value).is_file():
            raise ValueError("not a readable file")
        return value

    @field_validator("forecast_model")
    @classmethod
    def _model_file(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError("not a file")
        return value
