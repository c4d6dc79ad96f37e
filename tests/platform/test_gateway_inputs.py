"""Inputs that once reached a handler's internals (INTERNAL) are refused as INVALID_ARGUMENT, and the
gateway's exposure rule: no serving beyond loopback without a token unless told so."""

from __future__ import annotations

import grpc
import pytest

from gateway.service import GatewayService, check_exposure
from gateway.settings import GatewaySettings
from streamsight.config import ConfigError
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel


@pytest.fixture
async def stub(gateway):
    async with channel(gateway.address) as ch:
        yield gateway_pb2_grpc.StreamSightStub(ch)


async def _refused(call) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.value.code(), err.value.details())
    return err.value.details()


@pytest.mark.parametrize(
    "request_kwargs, words",
    [
        ({"source": "http://[::1"}, "not a valid URL"),
        ({"source": "http://example.com/a\x00b.mp4"}, "control characters"),
        ({"source": "/tmp/a\x00b.mp4"}, "control characters"),
        ({"source": "https://example.com/a.m3u8", "chat_source": "replay\x00.json"}, "control characters"),
        ({"source": "/" + "a" * 100_000}, "at most 2048"),
        ({"source": "https://example.com/a.m3u8", "chat_source": "/" + "c" * 100_000}, "at most 2048"),
        ({"source": "https://example.com/a.m3u8", "stream_id": "s" * 100_000}, "is not valid"),
        ({"source": "https://example.com/a.m3u8", "chat_source": "ircs://[::1/#x"}, "not a valid URL"),
    ],
)
async def test_malformed_start_requests_are_invalid_argument(stub, request_kwargs, words):
    assert words in await _refused(stub.StartStream(gw.StartStreamRequest(**request_kwargs)))


async def test_a_9_mb_options_field_is_invalid_argument(stub):
    options = gw.StreamOptions(extra={"flow_fps": "5" * (9 * 1024 * 1024)})
    details = await _refused(stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", options=options)))
    assert "at most 256" in details
    many = gw.StreamOptions(extra={f"k{i}": "1" for i in range(100)})
    assert "at most 16" in await _refused(stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", options=many)))


async def test_after_sequence_at_the_top_of_uint64_is_invalid_argument(stub):
    call = stub.WatchEvents(gw.WatchEventsRequest(after_sequence=2**64 - 1))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in err.value.details()


async def test_the_gateway_keeps_serving_after_bad_inputs(stub):
    for source in ("http://[::1", "x\x00y"):
        await _refused(stub.StartStream(gw.StartStreamRequest(source=source)))
    assert (await stub.ListStreams(gw.ListStreamsRequest(), timeout=5)) is not None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "gateway.example.com"])
def test_a_gateway_beyond_loopback_needs_a_token_or_the_insecure_setting(host):
    with pytest.raises(ConfigError, match="STREAMSIGHT_GATEWAY_INSECURE_NO_AUTH"):
        check_exposure(GatewaySettings(grpc_host=host))
    check_exposure(GatewaySettings(grpc_host=host, auth_token="secret"))
    check_exposure(GatewaySettings(grpc_host=host, insecure_no_auth=True))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_a_loopback_gateway_needs_no_token(host):
    check_exposure(GatewaySettings(grpc_host=host))


async def test_the_service_refuses_to_start_exposed_without_auth(nats_server):
    settings = GatewaySettings(nats_url=nats_server.url, grpc_host="0.0.0.0", grpc_port=0, http_enabled=False, shutdown_grace_s=1.0)
    with pytest.raises(ConfigError, match="not loopback"):
        async with GatewayService(settings).serving():
            pass


def test_local_sources_default_to_the_data_folder(tmp_path):
    assert GatewaySettings(data_dir=tmp_path).local_folders() == [str(tmp_path)]
    assert GatewaySettings(data_dir=tmp_path, local_roots=["/srv/media"]).local_folders() == ["/srv/media"]


async def test_refusals_outside_the_allowed_folders_do_not_tell_whether_a_file_exists(stub, tmp_path):
    (tmp_path / "passwd-link.mp4").symlink_to("/etc/passwd")
    answers = {}
    for path in ("/etc/passwd", "/etc/no-such-file-here", "/proc/self/environ", str(tmp_path / "passwd-link.mp4"), "../../etc/passwd"):
        details = await _refused(stub.StartStream(gw.StartStreamRequest(source=path)))
        assert "outside the allowed folders" in details, details
        answers[path] = details.replace(repr(path), "PATH")
    assert len(set(answers.values())) == 1, answers
    details = await _refused(stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", chat_source="/etc/passwd")))
    assert "outside the allowed folders" in details


async def test_a_gateway_without_local_files_suggests_chat_sources_for_chat(nats_server):
    from .conftest import running_gateway

    async with running_gateway(nats_server.url) as gateway, channel(gateway.address) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        details = await _refused(stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", chat_source="/data/chat.json")))
    assert "twitch:<channel>" in details and "rtmp" not in details


async def test_clip_and_time_fields_are_invalid_argument(stub):
    from google.protobuf.timestamp_pb2 import Timestamp

    sid = "inputs-clip"
    with pytest.raises(grpc.aio.AioRpcError):  # registered, then failed: no ingest here
        await stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id=sid))
    for clip_id in ("../../etc/passwd", "a\x00b", "c" * 100_000):
        call = stub.GetClip(gw.GetClipRequest(stream_id=sid, clip_id=clip_id))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    call = stub.WatchEvents(gw.WatchEventsRequest(since_time=Timestamp(seconds=2**62)))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "since_time" in err.value.details()


@pytest.mark.parametrize("after", [str(2**64 - 1), "-5", "x"])
async def test_the_sse_route_refuses_bad_sequences(gateway, after):
    import urllib.error
    import urllib.request

    def get() -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{gateway.web.port}/api/events?after={after}", timeout=10) as r:
                return r.status
        except urllib.error.HTTPError as err:
            return err.code

    import asyncio

    assert await asyncio.get_running_loop().run_in_executor(None, get) == 400
