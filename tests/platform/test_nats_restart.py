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

from streamsight.app.analyze import JobOptions, Progress, analyze
from streamsight import subjects
from streamsight.config import BaseServiceSettings, env_name
from streamsight.natsd import NatsServer
from streamsight.app.results import TERMINAL, StreamResults
from streamsight.service import Service
from streamsight.app.supervisor import Supervisor

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
    import nats
    from nats.js.api import StorageType, StreamConfig

    async with _nats_only_stack(tmp_path) as (sup, out):
        first = sup.nats.process.pid
        port, url = sup.nats.port, sup.nats.url
        await _until(lambda: "Server is ready" in out.getvalue(), 10, "the server's own log to be relayed")
        assert any(line.startswith("nats    | [") for line in out.getvalue().splitlines()), "prefixed like a service's lines"
        nc = await nats.connect(url)
        await nc.jetstream().add_stream(StreamConfig(name="KEEP", subjects=["keep"], storage=StorageType.FILE))
        await nc.jetstream().publish("keep", b"kept")
        await nc.close()
        os.kill(first, signal.SIGKILL)
        await _until(lambda: sup.nats_restarts == 1 and sup.nats.running and sup.nats.healthy(), 30, "nats-server restarted")
        assert sup.nats.process.pid != first and sup.nats.port == port and sup.nats.url == url
        await _until(lambda: "nats-server back at" in out.getvalue(), 10, "the restart to be logged")
        state = json.loads((tmp_path / "var" / "up.json").read_text())
        assert state["nats"]["restarts"] == 1 and state["nats"]["pid"] == sup.nats.process.pid
        log = out.getvalue()
        assert "nats-server exited with code -9; restarting in 1 s (restart 1)" in log
        assert log.count("Server is ready") == 2, "the restarted server's log is relayed too"
        assert log.index("nats-server back at") > log.rindex("Server is ready")
        nc = await nats.connect(url)  # the same data folder: file-backed streams are still there
        try:
            assert (await nc.jetstream().stream_info("KEEP")).state.messages == 1
        finally:
            await nc.close()
    assert not sup.nats.running
    assert "nats-server exited" not in out.getvalue().split("restart 1)")[-1], "a clean stop is not a crash"


async def test_a_restart_that_fails_is_retried_with_backoff(tmp_path):
    async with _nats_only_stack(tmp_path) as (sup, out):
        process = sup.nats.process
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        squatter = socket.socket()  # another program takes the port while the server is down
        squatter.bind(("127.0.0.1", sup.nats.port))
        squatter.listen()
        try:
            await _until(lambda: "nats-server did not start" in out.getvalue(), 30, "a failed restart to be logged")
        finally:
            squatter.close()
        await _until(lambda: sup.nats.running and sup.nats.healthy(), 60, "nats-server started once the port is free")
        log = out.getvalue()
        assert "retrying in 2 s" in log, "the backoff grows after a failed start"
        assert "address already in use" in log, "the server's own reason is relayed"
        assert sup.nats_restarts == 1, "one crash, one restart, however many tries it took"


async def test_slow_consumer_lines_from_the_server_are_counted_per_client(tmp_path):
    """A real slow consumer: a client that subscribes and never reads, named like a service."""
    import nats

    async with _nats_only_stack(tmp_path) as (sup, out):
        reader, writer = await asyncio.open_connection("127.0.0.1", sup.nats.port)
        await reader.readline()  # INFO
        admin = sup.nats.users["admin"]  # up's server refuses a client without a login
        connect = {"verbose": False, "pedantic": False, "name": "streamsight-slowpoke", "lang": "raw", "version": "0",
                   "user": "admin", "pass": admin.password}
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
        assert "nats-server reports a slow consumer: slowpoke" in log
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


class _Consumer(Service):
    """A service with one MEDIA consumer that keeps what it got."""

    name = "consumer"

    async def start(self) -> None:
        self.got: list[bytes] = []

        async def keep(msg) -> None:
            self.got.append(msg.data)

        self.bus.consume("restart-test", subjects.media("frame", "restart-test"), keep, subjects.MEDIA_STREAM)


async def test_serving_again_means_media_published_now_is_consumed(tmp_path):
    """Readiness is the promise a caller relies on: once health says SERVING after a NATS restart,
    a frame published at once must reach the consumer (MEDIA keeps a message only for the
    consumers that exist when it is stored)."""
    from streamsight.bus import Bus

    server = NatsServer(tmp_path / "nats", log_file=tmp_path / "nats.log").start()
    settings = BaseServiceSettings(nats_url=server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=0.5)
    try:
        async with _Consumer(settings).serving() as service:
            server.stop()
            await _until(lambda: _health_is(service.address, NOT_SERVING), 30, "NOT_SERVING while NATS is down")
            server.start()
            await _until(lambda: _health_is(service.address, SERVING), 30, "SERVING once NATS is back")
            publisher = await Bus.connect(server.url, "publisher")
            try:
                await publisher.publish(subjects.media("frame", "restart-test"), b"after the restart")
            finally:
                await publisher.close()
            await _until(lambda: service.got, 30, "the frame published once SERVING to be consumed")
            assert service.got == [b"after the restart"]
    finally:
        server.stop()


async def _health_is(address: str, status: int) -> bool:
    return await _health(address) == status


EVERY_SERVICE = {"ingest", "chat", "vision", "audio", "glitch", "fusion", "gateway"}
READY_LINES = ("bus unusable; health NOT_SERVING", "bus usable again; health SERVING")


def _said(log: str, service: str, text: str) -> list[int]:
    """Positions in the stack log of `service`'s lines that contain `text`."""
    found, at = [], 0
    for line in log.splitlines(keepends=True):
        if line.startswith(f"{service:<8}| ") and text in line:
            found.append(at)
        at += len(line)
    return found


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_the_stack_recovers_from_a_nats_kill_mid_stream(tmp_path, shared_data):
    import jsonschema

    from streamsight.app import report
    from streamsight.gen.common.v1 import common_pb2
    from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from streamsight.app.supervisor import built_services

    built = {s.name for s in built_services()}
    assert built == EVERY_SERVICE, f"the recovery test needs every service; built: {sorted(built)}"
    source = tmp_path / "vtest.avi"  # 79.5 s, 8 windows
    shutil.copy(shared_data / "media" / "vtest.avi", source)
    log_path = tmp_path / "stack.log"

    def job(sid: str, progress: Progress, **options) -> asyncio.Task:
        return asyncio.create_task(analyze(JobOptions(source=str(source), out=tmp_path / sid, gateway=gateway, stream_id=sid, **options), progress))

    with log_path.open("w") as log:
        readable = {env_name("gateway", "local_roots"): json.dumps([str(tmp_path)])}  # where the source was copied
        sup = Supervisor(tmp_path / "var", free_ports=True, out=log, extra_env=readable)
        jobs: list[asyncio.Task] = []
        await sup.start()
        try:
            await sup.wait_serving(timeout_s=240)
            gateway = sup.addresses()["gateway"]
            # Played as live (in real time), so the kill surely lands while ingest is reading it.
            watched = _Watched(io.StringIO())
            jobs.append(inflight := job("inflight", watched, live=True, wait_s=60))
            await _until(lambda: watched.results is not None and watched.results.scores, 240, "a first window scored")
            assert not watched.results.finished, "killed while the stream was running"
            killed = sup.nats.process.pid
            os.kill(killed, signal.SIGKILL)

            # The supervisor restarts nats-server; every service is SERVING again (the log, checked
            # below, shows each went NOT_SERVING in between).
            await _until(lambda: sup.nats_restarts == 1 and sup.nats.running and sup.nats.healthy(), 60, "nats-server restarted")
            await sup.wait_serving(timeout_s=120)

            # A new stream, started once the stack is back (while the first one plays on).
            jobs.append(after := job("after", Progress(io.StringIO()), wait_s=240))

            # The stream in flight at the kill ends, it is not left running: what was in the
            # in-memory MEDIA stream at the kill is lost, so it may miss windows or fail, but the
            # windows scored before the kill stay in its report.
            try:
                first = await asyncio.wait_for(inflight, 400)
            except grpc.aio.AioRpcError as exc:  # its watch may break with the gateway's connection
                first = None
                print(f"in-flight job: {exc.code().name}: {exc.details()}")
            async with grpc.aio.insecure_channel(gateway) as ch:
                stub = gateway_pb2_grpc.StreamSightStub(ch)
                ended = await _until(lambda: _terminal(stub, "inflight"), 240, "the in-flight stream to end")
            print(f"in-flight stream: {common_pb2.StreamState.Name(ended.state)} {ended.last_error!r}")
            assert ended.state in (common_pb2.STREAM_STATE_ENDED, common_pb2.STREAM_STATE_FAILED)
            if first is not None:
                doc = json.loads((tmp_path / "inflight" / "report.json").read_text())
                indexes = [w["index"] for w in doc["windows"]]
                print(f"in-flight report: {doc['state']}, windows {indexes}, missing {[w['missing'] for w in doc['windows']]}")
                assert 0 in indexes and set(indexes) <= set(range(8)) and len(indexes) == len(set(indexes))

            # The new stream is analysed in full.
            await asyncio.wait_for(after, 400)
            doc = json.loads((tmp_path / "after" / "report.json").read_text())
            jsonschema.validate(doc, json.loads(report.SCHEMA_PATH.read_text()))
            assert doc["state"] == "ended", doc.get("error")
            assert doc["duration_s"] == pytest.approx(79.5, abs=0.6)
            assert [w["index"] for w in doc["windows"]] == list(range(8)), "every window scored exactly once"
            assert all(not w["missing"] for w in doc["windows"]), [w["missing"] for w in doc["windows"]]
            assert sup.nats_restarts == 1 and sup.nats.process.pid != killed
        finally:
            for task in jobs:
                task.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await sup.stop()
    text = log_path.read_text()
    assert "nats-server exited with code -9; restarting" in text and "nats-server back at" in text
    assert "up      | all services SERVING again after nats-server restart 1" in text
    assert text.count("Server is ready") == 2, "both servers' own logs are in the stack log"
    for name in sorted(EVERY_SERVICE):
        down, up = (_said(text, name, line) for line in READY_LINES)
        assert down and up and down[0] < up[-1], f"{name}: health did not go NOT_SERVING and back to SERVING"


class _Watched(Progress):
    """A job's progress that keeps the job's latest results, so the test sees how far it got."""

    results: StreamResults | None = None

    def show(self, r: StreamResults, force: bool = False) -> None:
        self.results = r
        super().show(r, force)


async def _terminal(stub, stream_id: str):
    from streamsight.gen.gateway.v1 import gateway_pb2

    try:
        s = await stub.GetStream(gateway_pb2.GetStreamRequest(stream_id=stream_id), timeout=5)
    except grpc.aio.AioRpcError:
        return None
    return s if s.state in TERMINAL else None
