"""Helpers of the tests of the gateway's aiohttp server: a gateway with the new server started on
its API, and a raw HTTP/1.1 client over a socket (so malformed requests can be sent too)."""

from __future__ import annotations

import asyncio
import contextlib

from gateway.ebs.config import EbsConfig
from gateway.http import HttpServer
from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from streamsight.natsd import free_port


@contextlib.asynccontextmanager
async def gateway_with_http(nats_url: str, auth_token: str = "", ebs: EbsConfig | None = None, header_timeout_s: float = 10.0, **overrides):
    """The gateway service in this event loop (its old web page off) and the new HttpServer on its API."""
    settings = GatewaySettings(
        nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, http_enabled=False, shutdown_grace_s=1.0, dispatch_timeout_s=2.0,
        ingest_address=overrides.pop("ingest_address", f"127.0.0.1:{free_port()}"),
        chat_address=overrides.pop("chat_address", f"127.0.0.1:{free_port()}"),
        auth_token=auth_token, **overrides,
    )
    async with GatewayService(settings).serving() as gateway:
        server = HttpServer(gateway.api, "127.0.0.1", 0, auth_token, ebs=ebs, header_timeout_s=header_timeout_s)
        await server.start()
        try:
            yield gateway, server
        finally:
            await server.stop()


async def http_get(port: int, target: str, headers: dict[str, str] | None = None, read_until: bytes | None = None,
                   method: str = "GET") -> tuple[int, dict, bytes]:
    """Status, headers (lowercase names) and body, or the body up to `read_until`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items()), "", ""]
    writer.write("\r\n".join(lines).encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    status_line, *header_lines = head.decode().split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
    if read_until is not None:
        body = await asyncio.wait_for(reader.readuntil(read_until), 20)
    else:
        body = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return int(status_line.split()[1]), hdrs, body
