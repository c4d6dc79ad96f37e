"""The gateway places streams on ingest replicas and routes to them (real NATS, real gRPC, in-process services).

Two ingest replicas with room for one stream each: the first stream goes to ingest-a (equal room,
the smaller id), the second to ingest-b, a third is refused with RESOURCE_EXHAUSTED naming both
replicas; StopStream reaches the replica holding the stream, and once it has room again the
next stream goes there.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.app.synth import make_media
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from streamsight.ingestroute import IngestRoutes
from streamsight.rpc import channel


async def _until(check, what: str, timeout: float = 15.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await check()):
        assert loop.time() < deadline, what
        await asyncio.sleep(0.05)
    return found


async def test_streams_go_to_the_replica_with_room_and_a_full_set_is_refused(nats_server, bus, tmp_path, monkeypatch):
    (tmp_path / "media").mkdir()
    video = make_media(tmp_path / "media" / "long.mp4", duration=30.0, width=160, height=92, fps=10).path
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0)
    a, b = (IngestService(IngestSettings(data_dir=tmp_path / name, max_streams=1, replica_ttl_s=3.0, **common)) for name in "ab")
    routes = IngestRoutes(bus, seed_address="127.0.0.1:1")

    async def streams_counted(n: int) -> bool:
        return sum(len(r.streams) for r in await routes.replicas()) == n

    async with contextlib.AsyncExitStack() as services:
        for name, ingest in (("a", a), ("b", b)):
            monkeypatch.setenv("STREAMSIGHT_REPLICA_ID", f"ingest-{name}")  # read when the service starts
            await services.enter_async_context(ingest.serving())
        settings = GatewaySettings(ingest_address=a.address, http_enabled=False, allow_local_files=True,
                                   local_roots=[str(video.parent)], **common)
        async with GatewayService(settings).serving() as gateway, channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            live = gateway_pb2.StreamOptions(pacing=common_pb2.PACING_LIVE)

            async def start(sid: str):
                return await stub.StartStream(gateway_pb2.StartStreamRequest(stream_id=sid, source=str(video), options=live))

            await start("place1")
            await _until(lambda: streams_counted(1), "ingest-a counts its stream")
            await start("place2")
            await _until(lambda: streams_counted(2), "ingest-b counts its stream")
            assert set(a.streams) == {"place1"} and set(b.streams) == {"place2"}
            assert (await routes.placement("place2")).replica == "ingest-b"
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await start("place3")
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "every ingest replica is full (ingest-a 1/1, ingest-b 1/1)" in refused.value.details()
            failed = await stub.GetStream(gateway_pb2.GetStreamRequest(stream_id="place3"))
            assert failed.state == common_pb2.STREAM_STATE_FAILED, "a refused stream is recorded as failed"

            await stub.StopStream(gateway_pb2.StopStreamRequest(stream_id="place2"))  # goes to ingest-b
            assert b.streams["place2"].state == common_pb2.STREAM_STATE_STOPPED
            assert a.streams["place1"].state == common_pb2.STREAM_STATE_RUNNING
            await _until(lambda: streams_counted(1), "ingest-b's heartbeat says it has room")
            await start("place4")
            assert "place4" in b.streams
    await routes.close()
