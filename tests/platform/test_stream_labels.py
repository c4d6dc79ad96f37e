"""Stream labels through the gateway's gRPC API: stored with the stream, a ListStreams filter,
bad labels refused; and `streamsight analyze --label` parsing."""

from __future__ import annotations

import argparse

import grpc
import pytest

from streamsight.app.cli import _label
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel


async def _start(stub, stream_id: str, labels: dict[str, str]) -> None:
    # No ingest listens here: the stream is registered with its labels, then marked failed.
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id=stream_id, labels=labels))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_labels_are_kept_and_filter_the_stream_list(gateway):
    async with channel(gateway.address) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        await _start(stub, "chan-a", {"twitch.channel_id": "1234", "team": "red"})
        await _start(stub, "chan-b", {"twitch.channel_id": "5678", "team": "red"})
        await _start(stub, "plain", {})

        everything = await stub.ListStreams(gw.ListStreamsRequest())
        assert dict(next(s for s in everything.streams if s.id == "chan-a").labels) == {"twitch.channel_id": "1234", "team": "red"}
        assert {"chan-a", "chan-b", "plain"} <= {s.id for s in everything.streams}

        red = await stub.ListStreams(gw.ListStreamsRequest(labels={"team": "red"}))
        assert {s.id for s in red.streams} == {"chan-a", "chan-b"}
        one = await stub.ListStreams(gw.ListStreamsRequest(labels={"team": "red", "twitch.channel_id": "5678"}))
        assert [s.id for s in one.streams] == ["chan-b"]
        failed_red = await stub.ListStreams(gw.ListStreamsRequest(labels={"team": "red"}, states=[common_pb2.STREAM_STATE_FAILED]))
        assert {s.id for s in failed_red.streams} == {"chan-a", "chan-b"}
        assert not (await stub.ListStreams(gw.ListStreamsRequest(labels={"team": "blue"}))).streams


@pytest.mark.parametrize(
    "labels, says",
    [
        ({"Team": "red"}, "label key"),
        ({"twitch.channel_id": "somechannel"}, "digits only"),
        ({"note": "a\x00b"}, "control characters"),
        ({f"k{i}": "v" for i in range(33)}, "at most 32"),
        ({"k": "v" * 300}, "at most 256"),
    ],
)
async def test_bad_labels_are_refused_before_anything_is_registered(gateway, labels, says):
    async with channel(gateway.address) as ch:
        stub = gateway_pb2_grpc.StreamSightStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id="labelled", labels=labels))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and says in refused.value.details()
        assert "labelled" not in {s.id for s in (await stub.ListStreams(gw.ListStreamsRequest())).streams}


def test_the_cli_label_option_splits_on_the_first_equals_sign():
    assert _label("twitch.channel_id=1234") == ("twitch.channel_id", "1234")
    assert _label("note=a=b") == ("note", "a=b")
    with pytest.raises(argparse.ArgumentTypeError):
        _label("no-equals-sign")
