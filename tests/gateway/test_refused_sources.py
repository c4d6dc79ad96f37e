"""Through the public API: a source that would reach a refused address gets INVALID_ARGUMENT naming
the rule (ingest resolves and checks it), and the stream is recorded as failed."""

from __future__ import annotations

import grpc
import pytest

from gateway.service import GatewayService
from gateway.settings import GatewaySettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel


async def test_refused_sources_name_the_rule(nats_server, bus, tmp_path):
    common = dict(nats_url=nats_server.url, grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_s=1.0)
    ingest = IngestService(IngestSettings(data_dir=tmp_path / "ingest", **common))
    async with ingest.serving():
        settings = GatewaySettings(ingest_address=ingest.address, http_enabled=False, data_dir=tmp_path / "gateway", **common)
        async with GatewayService(settings).serving() as gateway, channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            for n, (source, rule) in enumerate([
                ("http://0x7f000001:8222/varz", "loopback"),
                ("http://[::1]:4222/", "loopback"),
                ("http://169.254.169.254/latest/meta-data/iam/", "metadata"),
                ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
                ("rtmp://192.168.0.10/live/x", "private"),
            ]):
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.StartStream(gw.StartStreamRequest(source=source, stream_id=f"ssrf{n}"))
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert f"rule '{rule}'" in err.value.details(), err.value.details()
                stream = await stub.GetStream(gw.GetStreamRequest(stream_id=f"ssrf{n}"))
                assert stream.state == common_pb2.STREAM_STATE_FAILED and rule in stream.last_error
    assert ingest.streams == {}, "ingest started nothing"
