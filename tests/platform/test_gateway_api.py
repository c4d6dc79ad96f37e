"""The gateway's public API on a real NATS server and a real gRPC server."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.common.v1 import common_pb2
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.gateway.v1 import gateway_pb2 as gw
from streamsight.gen.gateway.v1 import gateway_pb2_grpc
from streamsight.rpc import channel

from .conftest import running_gateway


@pytest.fixture
async def stub(gateway):
    async with channel(gateway.address) as ch:
        yield gateway_pb2_grpc.StreamSightStub(ch)



async def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details()


async def test_health_and_reflection_answer(gateway):
    async with grpc.aio.insecure_channel(gateway.address) as ch:
        health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="streamsight.gateway.v1.StreamSight"))
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = [s.name async for r in responses for s in r.list_services_response.service]
    assert "streamsight.gateway.v1.StreamSight" in names
    assert "grpc.health.v1.Health" in names


@pytest.mark.parametrize(
    "request_kwargs, code, words",
    [
        ({"source": ""}, grpc.StatusCode.INVALID_ARGUMENT, "source is empty"),
        ({"source": "ftp://example.com/v.mp4"}, grpc.StatusCode.INVALID_ARGUMENT, "scheme 'ftp' is not allowed"),
        ({"source": "https:///no-host.m3u8"}, grpc.StatusCode.INVALID_ARGUMENT, "has no host"),
        ({"source": "rtmp://host:99999/live"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid port"),
        ({"source": "https://example.com/a.m3u8", "stream_id": "Bad ID!"}, grpc.StatusCode.INVALID_ARGUMENT, "stream id 'Bad ID!' is not valid"),
        ({"source": "/etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT, "outside the allowed folders"),
        ({"source": "https://example.com/a.m3u8", "chat_source": "twitch:x"}, grpc.StatusCode.INVALID_ARGUMENT, "3-25 letters"),
        ({"source": "https://example.com/a.m3u8", "chat_source": "gopher://x/y"}, grpc.StatusCode.INVALID_ARGUMENT, "not allowed"),
        ({"source": "x" * 3000}, grpc.StatusCode.INVALID_ARGUMENT, "at most 2048"),
    ],
)
async def test_bad_start_requests_get_clear_errors(stub, request_kwargs, code, words):
    got, details = await _code(stub.StartStream(gw.StartStreamRequest(**request_kwargs)))
    assert got == code
    assert words in details


async def test_missing_local_file_and_unknown_stream(stub, tmp_path):
    code, details = await _code(stub.StartStream(gw.StartStreamRequest(source=str(tmp_path / "missing.mp4"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not exist" in details
    for call in (
        stub.GetStream(gw.GetStreamRequest(stream_id="nobody")),
        stub.StopStream(gw.StopStreamRequest(stream_id="nobody")),
        stub.ListHighlights(gw.ListHighlightsRequest(stream_id="nobody")),
    ):
        code, details = await _code(call)
        assert code == grpc.StatusCode.NOT_FOUND and "no stream with id 'nobody'" in details


async def test_start_without_ingest_fails_clearly_and_is_recorded(stub):
    code, details = await _code(stub.StartStream(gw.StartStreamRequest(source="https://example.com/live.m3u8", stream_id="noingest")))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "ingest service is not reachable" in details
    stream = await stub.GetStream(gw.GetStreamRequest(stream_id="noingest"))
    assert stream.state == common_pb2.STREAM_STATE_FAILED
    assert "ingest service is not reachable" in stream.last_error
    code, details = await _code(stub.StartStream(gw.StartStreamRequest(source="https://example.com/x.m3u8", stream_id="noingest")))
    assert code == grpc.StatusCode.ALREADY_EXISTS
    code, details = await _code(stub.StopStream(gw.StopStreamRequest(stream_id="noingest")))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "already STREAM_STATE_FAILED" in details
    listed = await stub.ListStreams(gw.ListStreamsRequest(states=[common_pb2.STREAM_STATE_FAILED]))
    assert "noingest" in [s.id for s in listed.streams]
    running = await stub.ListStreams(gw.ListStreamsRequest(states=[common_pb2.STREAM_STATE_RUNNING]))
    assert "noingest" not in [s.id for s in running.streams]


async def test_a_start_declares_the_streams_modalities_before_ingest_starts(stub, bus, tmp_path):
    """Fusion waits for chat only when the stream has one: the gateway says so first."""
    chat = tmp_path / "chat.jsonl"
    chat.write_text('{"t": 1.0, "user": "u", "text": "hi"}\n')
    await _code(stub.StartStream(gw.StartStreamRequest(source="https://example.com/a.m3u8", stream_id="declared-chat", chat_source=str(chat))))
    await _code(stub.StartStream(gw.StartStreamRequest(source="https://example.com/b.m3u8", stream_id="declared-plain")))
    for sid, expected in (("declared-chat", {"vision", "audio", "chat"}), ("declared-plain", {"vision", "audio"})):
        msgs = await bus.read_all(subjects.EVENTS_STREAM, subjects.event("status", sid))
        statuses = [events_pb2.StreamStatus.FromString(m.data) for m in msgs]
        first = statuses[0]
        assert (first.reason, first.reporter, first.state) == ("registered", "gateway", common_pb2.STREAM_STATE_PENDING)
        assert {common_pb2.Modality.Name(m).removeprefix("MODALITY_").lower() for m in first.modalities} == expected


async def _register(stub, stream_id: str) -> None:
    """A registered stream (its start fails for want of ingest, which these tests do not need)."""
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.StartStream(gw.StartStreamRequest(source="https://example.com/v.m3u8", stream_id=stream_id))


async def _collect(call, count: int, timeout: float = 10.0) -> list:
    out = []

    async def read():
        async for event in call:
            out.append(event)
            if len(out) == count:
                return

    await asyncio.wait_for(read(), timeout)
    call.cancel()
    return out


async def test_events_reach_watchers_in_order_and_replay_from_a_sequence(stub, bus):
    await _register(stub, "ordered")
    call = stub.WatchEvents(gw.WatchEventsRequest(stream_id="ordered", types=["streamsight.highlight.v1"]))
    await asyncio.sleep(0.3)  # the watch is "from now on": let it subscribe first
    for i in range(20):
        await bus.publish_event("ordered", events_pb2.Highlight(stream_id="ordered", highlight_id=f"h{i}", start_s=10.0 * i), f"ordered:h{i}")
    live = await _collect(call, 20)
    assert [e.highlight.highlight_id for e in live] == [f"h{i}" for i in range(20)]
    assert all(e.type == "streamsight.highlight.v1" and e.source == "/streamsight/test" for e in live)
    sequences = [e.sequence for e in live]
    assert sequences == sorted(sequences)

    resumed = await _collect(stub.WatchEvents(gw.WatchEventsRequest(stream_id="ordered", types=["streamsight.highlight.v1"], after_sequence=sequences[9])), 10)
    assert [e.highlight.highlight_id for e in resumed] == [f"h{i}" for i in range(10, 20)]

    # A redelivered event (same CloudEvents id) is deduplicated by JetStream.
    ack = await bus.publish_event("ordered", events_pb2.Highlight(stream_id="ordered", highlight_id="h0"), "ordered:h0")
    assert ack.duplicate
    listed = await stub.ListHighlights(gw.ListHighlightsRequest(stream_id="ordered"))
    assert [h.highlight_id for h in listed.highlights] == [f"h{i}" for i in range(20)]


async def test_watch_filters_by_type_and_skips_malformed_events(stub, bus):
    await _register(stub, "mixed")
    call = stub.WatchEvents(gw.WatchEventsRequest(stream_id="mixed", types=["streamsight.glitch.v1", "streamsight.sentiment.v1"], after_sequence=0))
    await bus.js.publish("streamsight.events.v1.glitch.3.mixed", b"garbage", headers={"ce-type": "nonsense"})
    await bus.publish_event("mixed", events_pb2.Highlight(stream_id="mixed", highlight_id="x"), "mixed:hx")
    await bus.publish_event("mixed", events_pb2.Glitch(stream_id="mixed", glitch_id="g1", phase=events_pb2.PHASE_START), "mixed:g1:start")
    await bus.publish_event("mixed", events_pb2.SentimentPoint(stream_id="mixed", start_s=0, compound=0.5, messages=3), "mixed:s0")
    await bus.publish_event("mixed", events_pb2.Glitch(stream_id="mixed", glitch_id="g1", phase=events_pb2.PHASE_END, end_s=4), "mixed:g1:end")
    got = await _collect(call, 3)
    assert [e.WhichOneof("payload") for e in got] == ["glitch", "sentiment", "glitch"]
    glitches = await stub.ListGlitches(gw.ListGlitchesRequest(stream_id="mixed"))
    assert len(glitches.glitches) == 1 and glitches.glitches[0].phase == events_pb2.PHASE_END
    sentiment = await stub.GetSentiment(gw.GetSentimentRequest(stream_id="mixed"))
    assert [p.compound for p in sentiment.series] == [0.5]
    code, details = await _code(_collect(stub.WatchEvents(gw.WatchEventsRequest(types=["streamsight.nope.v1"])), 1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown event types" in details


async def test_status_events_from_services_update_the_registry(stub, bus):
    await _register(stub, "lifecycle")
    # the registry entry is FAILED (no ingest here); a fresh one shows the transitions
    from gateway.registry import Registry

    registry = Registry(await bus.kv("streams"))
    stream = gw.Stream(id="fresh", source="https://example.com/v.m3u8", state=common_pb2.STREAM_STATE_STARTING)
    await registry.create(stream)
    running = events_pb2.StreamStatus(stream_id="fresh", state=common_pb2.STREAM_STATE_RUNNING, media_time_s=12.5, duration_s=60, reporter="ingest")
    await bus.publish_event("fresh", running, "fresh:status:1")
    for _ in range(50):
        got = await stub.GetStream(gw.GetStreamRequest(stream_id="fresh"))
        if got.state == common_pb2.STREAM_STATE_RUNNING:
            break
        await asyncio.sleep(0.1)
    assert got.state == common_pb2.STREAM_STATE_RUNNING and got.media_time_s == 12.5 and got.duration_s == 60
    assert got.HasField("started_at")
    stopped = await stub.StopStream(gw.StopStreamRequest(stream_id="fresh"))
    assert stopped.state == common_pb2.STREAM_STATE_STOPPED
    late = events_pb2.StreamStatus(stream_id="fresh", state=common_pb2.STREAM_STATE_RUNNING, media_time_s=20, reporter="ingest")
    await bus.publish_event("fresh", late, "fresh:status:2")
    await asyncio.sleep(0.5)
    got = await stub.GetStream(gw.GetStreamRequest(stream_id="fresh"))
    assert got.state == common_pb2.STREAM_STATE_STOPPED, "a finished stream must not come back to life"


async def test_gateway_restart_loses_no_event(nats_server, bus):
    async with running_gateway(nats_server.url) as gateway:
        async with channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            await _register(stub, "restart")
            await bus.publish_event("restart", events_pb2.Highlight(stream_id="restart", highlight_id="before"), "restart:before")
            seen = await _collect(stub.WatchEvents(gw.WatchEventsRequest(stream_id="restart", types=["streamsight.highlight.v1"], after_sequence=0)), 1)
    last = seen[-1].sequence
    # The gateway is down: events keep coming.
    for i in range(5):
        await bus.publish_event("restart", events_pb2.Highlight(stream_id="restart", highlight_id=f"during{i}"), f"restart:during{i}")
    async with running_gateway(nats_server.url) as gateway:
        async with channel(gateway.address) as ch:
            stub = gateway_pb2_grpc.StreamSightStub(ch)
            resumed = await _collect(stub.WatchEvents(gw.WatchEventsRequest(stream_id="restart", types=["streamsight.highlight.v1"], after_sequence=last)), 5)
    assert [e.highlight.highlight_id for e in resumed] == [f"during{i}" for i in range(5)]


async def test_bearer_token_is_required_when_configured(nats_server):
    async with running_gateway(nats_server.url, auth_token="s3cret") as gateway:
        async with channel(gateway.address) as ch:
            code, details = await _code(gateway_pb2_grpc.StreamSightStub(ch).ListStreams(gw.ListStreamsRequest()))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in details
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING, "health stays open for probes"
        async with channel(gateway.address, token="s3cret") as ch:
            authed = gateway_pb2_grpc.StreamSightStub(ch)
            await _register(authed, "with-token")
            reply = await authed.ListStreams(gw.ListStreamsRequest())
            assert "with-token" in [s.id for s in reply.streams]


async def test_watchers_that_hang_up_leave_no_consumer(gateway, stub, nats_server):
    from streamsight import subjects

    bus = await Bus.connect(nats_server.url, "watchtest")
    await bus.publish_event("w1", events_pb2.Highlight(stream_id="w1", highlight_id="h1"), "w1:h1")

    async def consumers() -> set[str]:
        return {c.name for c in await bus.js.consumers_info(subjects.EVENTS_STREAM)} - {"gateway-registry"}

    before = await consumers()
    calls = [stub.WatchEvents(gw.WatchEventsRequest(after_sequence=0)) for _ in range(20)]
    for call in calls:
        assert (await call.read()).sequence > 0  # a stored event came: the watcher is open
    watchers = gateway.api.watchers
    assert watchers.open["grpc"] == 20 and len(await consumers() - before) == 20
    for call in calls:
        call.cancel()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20  # only against a hang; the state is what is checked
    while watchers.count and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert watchers.count == 0, "every cancelled call closed its watcher"
    assert await consumers() == before, "and deleted its consumer"
    await bus.close()
