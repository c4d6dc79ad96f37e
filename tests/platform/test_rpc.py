"""gRPC plumbing: trace context in metadata, no traceback to clients, clear statuses."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamsight.gen.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from streamsight.rpc import RpcServer, Servicer, channel, not_found
from streamsight.telemetry import configure_tracing, tracer


class _Ingest(ingest_pb2_grpc.IngestServicer):
    """A tiny real servicer to exercise the interceptor's paths."""

    async def GetIngest(self, request, context):
        if request.stream_id == "missing":
            raise not_found("no stream 'missing'")
        if request.stream_id == "boom":
            raise ZeroDivisionError("secret internals")
        return ingest_pb2.IngestStatus(stream_id=request.stream_id)


@pytest.fixture
async def server():
    name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
    rpc = RpcServer("rpctest", [Servicer(ingest_pb2_grpc.add_IngestServicer_to_server, _Ingest(), name)], "127.0.0.1", 0)
    await rpc.start()
    yield rpc
    await rpc.stop(0.5)


async def test_statuses_and_no_traceback(server):
    async with channel(f"127.0.0.1:{server.port}") as ch:
        stub = ingest_pb2_grpc.IngestStub(ch)
        assert (await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="ok"))).stream_id == "ok"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="missing"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and err.value.details() == "no stream 'missing'"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetIngest(ingest_pb2.GetIngestRequest(stream_id="boom"))
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert "secret internals" not in err.value.details() and "Traceback" not in err.value.details()
        assert "trace id" in err.value.details()


async def test_trace_context_crosses_grpc(server):
    exporter = InMemorySpanExporter()
    configure_tracing("test", exporter=exporter)
    async with channel(f"127.0.0.1:{server.port}") as ch:
        with tracer().start_as_current_span("client") as span:
            await ingest_pb2_grpc.IngestStub(ch).GetIngest(ingest_pb2.GetIngestRequest(stream_id="ok"))
    served = [s for s in exporter.get_finished_spans() if s.name == "/streamsight.ingest.v1.Ingest/GetIngest"]
    assert served and served[-1].context.trace_id == span.get_span_context().trace_id


async def test_graceful_stop_turns_health_not_serving():
    name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
    rpc = RpcServer("rpctest", [Servicer(ingest_pb2_grpc.add_IngestServicer_to_server, _Ingest(), name)], "127.0.0.1", 0)
    await rpc.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == health_pb2.HealthCheckResponse.SERVING
        await rpc.health.enter_graceful_shutdown()
        assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await rpc.stop(0.5)


async def test_health_follows_a_readiness_check():
    name = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name
    rpc = RpcServer("rpctest", [Servicer(ingest_pb2_grpc.add_IngestServicer_to_server, _Ingest(), name)], "127.0.0.1", 0)
    await rpc.start()
    ready = {"now": True}
    changes: list[bool] = []

    async def changed(now: bool) -> None:
        changes.append(now)

    def check() -> bool:
        if ready["now"] is None:
            raise ConnectionError("the check itself failed")
        return ready["now"]

    follower = asyncio.create_task(rpc.follow_readiness(check, 0.02, changed))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)

            async def status(service: str = "") -> int:
                return (await health.Check(health_pb2.HealthCheckRequest(service=service))).status

            for want, serving in ((False, health_pb2.HealthCheckResponse.NOT_SERVING), (True, health_pb2.HealthCheckResponse.SERVING),
                                  (None, health_pb2.HealthCheckResponse.NOT_SERVING)):
                ready["now"] = want
                for _ in range(500):  # a hang guard, not a speed check
                    if await status() == serving:
                        break
                    await asyncio.sleep(0.01)
                assert await status() == serving and await status(name) == serving, want
            assert changes == [False, True, False], "each change reported once"
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await rpc.stop(0.5)


async def test_health_replies_carry_the_services_facts_as_metadata():
    facts = {"partitions": "0,3,7", "provider": "cpu"}
    rpc = RpcServer("rpctest", [], "127.0.0.1", 0, facts=lambda: dict(facts))
    await rpc.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rpc.port}") as ch:
            call = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert (await call).status == health_pb2.HealthCheckResponse.SERVING
            metadata = dict(await call.initial_metadata())
            assert metadata["streamsight-partitions"] == "0,3,7" and metadata["streamsight-provider"] == "cpu"
            facts["partitions"] = ""  # read at each check
            call = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            await call
            assert dict(await call.initial_metadata())["streamsight-partitions"] == ""
    finally:
        await rpc.stop(0.5)
