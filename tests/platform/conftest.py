"""Fixtures for the platform tests: an in-process gateway on a real NATS server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from streamsight.natsd import free_port


@contextlib.asynccontextmanager
async def running_gateway(nats_url: str, **overrides):
    """Start the gateway service in this event loop; yield it once it serves."""
    settings = GatewaySettings(
        nats_url=nats_url,
        grpc_host="127.0.0.1",
        grpc_port=overrides.pop("grpc_port", free_port()),
        ingest_address=overrides.pop("ingest_address", f"127.0.0.1:{free_port()}"),
        chat_address=overrides.pop("chat_address", f"127.0.0.1:{free_port()}"),
        dispatch_timeout_s=2.0,
        shutdown_grace_s=1.0,
        **overrides,
    )
    service = GatewayService(settings)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    assert ready.is_set(), "gateway did not become ready"
    service.address = f"127.0.0.1:{service.rpc.port}"
    try:
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@pytest.fixture
async def gateway(nats_server, tmp_path):
    async with running_gateway(nats_server.url, allow_local_files=True, local_roots=[str(tmp_path)]) as service:
        yield service
