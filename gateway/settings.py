"""Gateway settings (section `gateway`: environment `STREAMSIGHT_GATEWAY_*`, YAML `gateway:`; see streamsight.config)."""

from __future__ import annotations

from pydantic import Field

from streamsight.config import BaseServiceSettings


class GatewaySettings(BaseServiceSettings):
    section = "gateway"

    grpc_port: int = Field(50051, ge=0, le=65535, description="Port of the public API")
    allow_local_files: bool = Field(False, description="Accept local file paths as sources (embedded mode turns it on)")
    local_roots: list[str] = Field(
        default_factory=list, description="Folders local sources (media, chat replays) may lie under; empty: the data folder (data_dir) only"
    )
    ingest_address: str = Field("127.0.0.1:50061", description="gRPC address of the ingest service")
    chat_address: str = Field("127.0.0.1:50062", description="gRPC address of the chat service")
    http_enabled: bool = Field(True, description="Serve the web page and its HTTP API")
    http_port: int = Field(8080, ge=0, le=65535, description="Port of the web page (0 picks a free one)")
    dispatch_timeout_s: float = Field(10.0, gt=0, description="Deadline of calls to ingest and chat")
    insecure_no_auth: bool = Field(
        False, description="Serve on a non-loopback grpc_host without auth_token (refused otherwise): anyone who reaches it may start streams"
    )

    def local_folders(self) -> list[str]:
        """The folders local sources may come from."""
        return list(self.local_roots) or [str(self.data_dir)]
