"""The stack survives a NATS restart.

- The supervisor of `up` watches nats-server: killed, it is started again on the same port and
  data folder, counted, and its own log (slow consumers included) is in the stack's log.
- A service's health is NOT_SERVING while its bus is unusable and SERVING once it recovers.
- End to end (slow): nats-server is SIGKILLed while a real file is analysed. The stack recovers by
  itself and a stream started afterwards is analysed in full. The stream in flight at the kill
  must end (it may fail or miss windows; see README, "Running it").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from streamsight.config import BaseServiceSettings
from streamsight.natsd import NatsServer
from streamsight.service import Service
from streamsight.supervisor import Supervisor

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _until(predicate, timeout_s: float, what: str):
    """Poll `predicate` (sync or async) until it is truthy; fail naming `what` (a hang guard, not a speed check)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _health(address: str) -> int | None:
    async with grpc.aio.insecure_channel(address) as ch:
        try:
            return (await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)).status
        except grpc.aio.AioRpcError:
            return None


@contextlib.asynccontextmanager
async def _nats_only_stack(tmp_path: Path):
    """The supervisor of `up` with no service: only the embedded nats-server, log in a buffer."""
    out = io.StringIO()
    sup = Supervisor(tmp_path / "var", free_ports=True, out=out, only=["no-such-service"])
    await sup.start()
    try:
        yield sup, out
    finally:
        await sup.stop()


async def test_supervisor_restarts_a_killed_nats_server_on_the_same_port_and_relays_its_log(tmp_path):
    async with _nats_only_stack(tmp_path) as (sup, out):
        first = sup.nats.process.pid
        port, url = sup.nats.port, sup.nats.url
        await _until(lambda: "Server is ready" in out.getvalue(), 10, "the server's own log to be relayed")
        assert any(line.startswith("nats    | [") for line in out.getvalue().splitlines()), "prefixed like a service's lines"
        os.kill(first, signal.SIGKILL)
        await _until(lambda: sup.nats_restarts == 1 and sup.nats.running and sup.nats.healthy(), 30, "nats-server restarted")
        assert sup.nats.process.pid != first and sup.nats.port == port and sup.nats.url == url
        await _until(lambda: "nats-server back at" in out.getvalue(), 10, "the restart to be logged")
        state = json.loads((tmp_path / "var" / "up.json").read_text())
        assert state["nats"]["restarts"] == 1 and state["nats"]["pid"] == sup.nats.process.pid
        log = out.getvalue()
        assert "nats-server exited with code -9; restarting in 1 s (restart 1)" in log
        assert log.count("Server is ready") == 2, "the restarted server's log is relayed too"
        # File-backed JetStream data lives in the same folder after the restart.
        assert (sup.nats.data_dir / "jetstream").is_dir()
    assert not sup.nats.running
    assert "nats-server exited" not in out.getvalue().split("restart 1)")[-1], "a clean stop is not a crash"


async def test_slow_consumer_lines_from_the_server_are_counted_per_client(tmp_path):
    """A real slow consumer: a client that subscribes and never reads, named like a service."""
    import nats

    async with _nats_only_stack(tmp_path) as (sup, out):
        reader, writer = await asyncio.open_connection("127.0.0.1", sup.nats.port)
        await reader.readline()  # INFO
        connect = {"verbose": False, "pedantic": False, "name": "streamsight-slowpoke", "lang": "raw", "version": "0"}
        writer.write(f"CONNECT {json.dumps(connect)}\r\nSUB slow.> 1\r\nPING\r\n".encode())
        await writer.drain()
        assert (await reader.readline()).startswith(b"PONG")
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        nc = await nats.connect(sup.nats.url)
        try:
            chunk = b"x" * (1024 * 1024)
            for _ in range(200):  # 200 MiB against the server's 64 MiB MaxPending: the idle client is cut
                await nc.publish("slow.data", chunk)
                if sup.slow_consumers:
                    break
            await nc.flush()
            await _until(lambda: sup.slow_consumers.get("slowpoke"), 30, "the slow consumer to be counted")
        finally:
            await nc.close()
            writer.close()
        log = out.getvalue()
        assert "Slow Consumer Detected" in log, "the server's own line is in the stack log"
        assert "nats-server cut slow consumer slowpoke" in log
        state = json.loads((tmp_path / "var" / "up.json").read_text())
        assert state["nats"]["slow_consumers"]["slowpoke"] >= 1


class _Plain(Service):
    name = "plain"


async def test_health_follows_the_bus_through_a_nats_restart(tmp_path):
    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    settings = BaseServiceSettings(nats_url=server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=0.5)
    try:
        async with _Plain(settings).serving() as service:
            assert await _health(service.address) == SERVING
            server.stop()  # the server is gone until we start it again: no race with the poll
            await _until(lambda: _health_is(service.address, NOT_SERVING), 30, "NOT_SERVING while NATS is down")
            server.start()
            await _until(lambda: _health_is(service.address, SERVING), 30, "SERVING once NATS is back")
    finally:
        server.stop()


async def _health_is(address: str, status: int) -> bool:
    return await _health(address) == status
