"""Fixtures for the platform tests: an in-process gateway on a real NATS server."""

from __future__ import annotations

import contextlib

import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from streamsight.natsd import free_port


@contextlib.asynccontextmanager
async def running_gateway(nats_url: str, **overrides):
    """The gateway service in this event loop, serving on a free port."""
    settings = GatewaySettings(
        nats_url=nats_url,
        grpc_host="127.0.0.1",
        grpc_port=overrides.pop("grpc_port", 0),  # 0: the OS picks a port, no race with other sockets
        ingest_address=overrides.pop("ingest_address", f"127.0.0.1:{free_port()}"),
        chat_address=overrides.pop("chat_address", f"127.0.0.1:{free_port()}"),
        dispatch_timeout_s=2.0,
        http_port=overrides.pop("http_port", 0),
        shutdown_grace_s=1.0,
        **overrides,
    )
    async with GatewayService(settings).serving() as service:
        yield service


@pytest.fixture
async def gateway(nats_server, tmp_path):
    async with running_gateway(nats_server.url, allow_local_files=True, local_roots=[str(tmp_path)]) as service:
        yield service
