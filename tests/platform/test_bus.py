"""The bus: ack after the work, dead letters, retries, deduplication, trace context in headers, stream provisioning."""

from __future__ import annotations

import asyncio

import pytest
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NoStreamResponseError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamsight import subjects
from streamsight.bus import MEDIA_MAX_AGE_S, MEDIA_MAX_BYTES, BadMessage, Bus, StreamSpec
from streamsight.telemetry import configure_tracing, tracer



async def _dead_letters(bus: Bus, service: str) -> list:
    sub = await bus.js.pull_subscribe(subjects.deadletter(service), durable=None, stream=subjects.DEADLETTER_STREAM)
    try:
        return await sub.fetch(100, timeout=2)
    except Exception:
        return []


async def test_handler_results_are_acked_bad_input_dead_lettered_and_failures_retried(bus):
    handled, attempts = [], {"flaky": 0, "broken": 0}
    done = asyncio.Event()

    async def handler(msg):
        body = msg.data.decode()
        if body == "garbage":
            raise BadMessage("not a feature record")
        if body in attempts:
            attempts[body] += 1
            if body == "broken" or attempts[body] < 2:
                raise RuntimeError(f"{body} failed")
        handled.append(body)
        if {"ok", "flaky"} <= set(handled):
            done.set()

    for body in ("garbage", "ok", "flaky", "broken"):
        await bus.publish(subjects.features("vision", "s1"), body.encode(), msg_id=f"s1:vision:{body}")
    bus.consume("bustest-vision", subjects.features("vision"), handler, subjects.FEATURES_STREAM, max_deliver=3)
    await asyncio.wait_for(done.wait(), 20)
    await asyncio.sleep(8)  # "broken" is retried with backoff (2 s, 4 s) before it is dead-lettered
    assert sorted(handled) == ["flaky", "ok"]
    assert attempts == {"flaky": 2, "broken": 3}
    letters = await _dead_letters(bus, bus.service)
    reasons = {m.data.decode(): m.headers["streamsight-dlq-reason"] for m in letters}
    assert set(reasons) == {"garbage", "broken"}
    assert reasons["garbage"].startswith("bad message: not a feature record")
    assert reasons["broken"].startswith("failed 3 times")
    assert all(m.headers["streamsight-dlq-subject"] == "streamsight.features.v1.vision.0.s1" for m in letters)
    info = await bus.js.consumer_info(subjects.FEATURES_STREAM, "bustest-vision")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_same_message_id_is_stored_once(bus):
    first = await bus.publish(subjects.features("audio", "s2"), b"a", msg_id=subjects.feature_msg_id("s2", "audio", 0))
    again = await bus.publish(subjects.features("audio", "s2"), b"a", msg_id=subjects.feature_msg_id("s2", "audio", 0))
    assert not first.duplicate and again.duplicate and again.seq == first.seq


async def test_trace_context_crosses_nats(bus):
    exporter = InMemorySpanExporter()
    configure_tracing("test", exporter=exporter)
    got = asyncio.Event()

    async def handler(msg):
        got.set()

    with tracer().start_as_current_span("producer") as span:
        trace_id = span.get_span_context().trace_id
        await bus.publish(subjects.features("chat", "s3"), b"x", msg_id="s3:chat:0")
    bus.consume("bustest-chat", subjects.features("chat"), handler, subjects.FEATURES_STREAM)
    await asyncio.wait_for(got.wait(), 10)
    await asyncio.sleep(0.2)
    handled = [s for s in exporter.get_finished_spans() if s.name.startswith("handle streamsight.features.v1.chat")]
    assert handled and handled[0].context.trace_id == trace_id
    assert handled[0].parent is not None and handled[0].parent.span_id == span.get_span_context().span_id


async def test_batches_are_handled_together_and_rejects_dead_lettered(bus):
    batches: list[list[str]] = []
    done = asyncio.Event()

    async def handler(msgs):
        bodies = [m.data.decode() for m in msgs]
        batches.append(bodies)
        if sum(len(b) for b in batches) >= 10:
            done.set()
        return {i: "not a frame" for i, m in enumerate(msgs) if m.data == b"bad"}

    # MEDIA keeps messages only for consumers that exist (interest retention): make it first.
    await bus.js.add_consumer(subjects.MEDIA_STREAM, ConsumerConfig(durable_name="batchtest", filter_subject=subjects.media("frames_flow")))
    for i in range(9):
        await bus.publish(subjects.media("frames_flow", "b1"), f"f{i}".encode())
    await bus.publish(subjects.media("frames_flow", "b1"), b"bad")
    bus.consume_batches("batchtest", subjects.media("frames_flow"), handler, subjects.MEDIA_STREAM, batch=32)
    await asyncio.wait_for(done.wait(), 10)
    assert [b for batch in batches for b in batch] == [f"f{i}" for i in range(9)] + ["bad"]
    assert len(batches) == 1, "one fetch hands the handler every waiting message"
    await asyncio.sleep(0.3)
    letters = await _dead_letters(bus, bus.service)
    assert b"bad" in [m.data for m in letters]
    assert await bus.backlog(subjects.MEDIA_STREAM, subjects.media("*", "b1")) == 0, "acked messages leave the interest stream"


async def test_an_existing_media_stream_is_brought_to_the_current_limits_and_keeps_its_messages(bus):
    # MEDIA as an older release made it: 120 s, the oldest messages silently discarded (and
    # other bytes: its 2 GiB would not fit this server's memory store).
    await bus.js.delete_stream(subjects.MEDIA_STREAM)
    await bus.js.add_stream(
        StreamConfig(
            name=subjects.MEDIA_STREAM, subjects=[f"{subjects.PREFIX}.media.v1.>"], storage=StorageType.MEMORY, max_age=120.0,
            max_bytes=256 * 1024**2, discard=DiscardPolicy.OLD, retention=RetentionPolicy.INTEREST,
        )
    )
    await bus.js.add_consumer(subjects.MEDIA_STREAM, ConsumerConfig(durable_name="upgradetest", inactive_threshold=30))
    await bus.publish(subjects.media("windows", "u1"), b"w0")
    await bus.ensure_streams()
    info = await bus.js.stream_info(subjects.MEDIA_STREAM)
    assert (info.config.discard, info.config.max_bytes, info.config.max_age) == (DiscardPolicy.NEW, MEDIA_MAX_BYTES, MEDIA_MAX_AGE_S)
    assert info.state.messages == 1, "the update keeps what MEDIA holds"
    await bus.js.delete_consumer(subjects.MEDIA_STREAM, "upgradetest")


async def test_a_stream_with_another_storage_is_named_not_silently_kept(bus):
    await bus.js.add_stream(StreamConfig(name="BUSTEST_STORAGE", subjects=["bustest.storage.>"], storage=StorageType.FILE))
    spec = StreamSpec("BUSTEST_STORAGE", ["bustest.storage.>"], StorageType.MEMORY, 60.0)
    with pytest.raises(RuntimeError, match="BUSTEST_STORAGE exists with another storage"):
        await bus.ensure_streams([spec])


async def test_a_full_media_stream_refuses_new_messages_and_keeps_the_old_ones(bus):
    small = StreamSpec("BUSTEST_FULL", ["bustest.full.>"], StorageType.MEMORY, 60.0, 64 * 1024, 30.0, RetentionPolicy.INTEREST, DiscardPolicy.NEW)
    await bus.ensure_streams([small])
    await bus.js.add_consumer("BUSTEST_FULL", ConsumerConfig(durable_name="holder", inactive_threshold=30))
    sent = 0
    with pytest.raises(APIError, match="maximum bytes exceeded"):
        while sent < 100:
            await bus.publish("bustest.full.x", sent.to_bytes(4, "big") + bytes(8 * 1024))
            sent += 1
    info = await bus.js.stream_info("BUSTEST_FULL")
    assert 0 < sent < 100 and info.state.messages == sent and info.state.first_seq == 1, "nothing old was dropped"


def test_event_payload_takes_the_kind_asked_for_and_refuses_the_rest():
    from types import SimpleNamespace

    from streamsight import events
    from streamsight.bus import BadMessage, event_payload
    from streamsight.gen.events.v1 import events_pb2

    glitch = events_pb2.Glitch(stream_id="s1", glitch_id="s1:glitch:0", start_s=1.0, end_s=2.0)
    ce = events.type_of(glitch)
    msg = SimpleNamespace(headers=events.headers_for(ce, "s1:glitch:0", "glitch", "s1"), data=glitch.SerializeToString())
    assert event_payload(msg, "glitch").glitch_id == "s1:glitch:0"
    with pytest.raises(BadMessage, match="on a health subject"):
        event_payload(msg, "health")
    with pytest.raises(BadMessage):
        event_payload(SimpleNamespace(headers={}, data=b"\xff"), "glitch")


async def test_kv_entries_lists_every_key_while_others_are_written(bus):
    """nats-py's own `keys()` drops keys while others are written (the chat replica test failed on
    it in CI); kv_entries, which resume points and ingest's replica list read with, must not."""
    from streamsight.bus import kv_entries

    kv = await bus.kv("kv_listing", history=1)
    keys = {f"k{i}" for i in range(4)}
    for key in keys:
        await kv.put(key, b"0")
    await kv.put("gone", b"0")
    await kv.delete("gone")
    writing = True

    async def write() -> None:
        i = 0
        while writing:
            await kv.put(f"k{i % 4}", str(i).encode())
            i += 1
            await asyncio.sleep(0.001)

    writer = asyncio.create_task(write())
    try:
        listings = [{e.key for e in await kv_entries(bus.js, "kv_listing")} for _ in range(150)]
    finally:
        writing = False
        await writer
    short = [got for got in listings if got != keys]
    assert not short, f"{len(short)} of {len(listings)} listings were not the live keys: {short[:3]}"


async def test_a_publish_waits_for_a_stream_that_is_not_answering_yet_and_then_stores_once(bus, monkeypatch):
    """A cluster's stream that was just made (or is electing a leader) answers "no responders" for
    a moment; publish tries again instead of failing the stream's data, and stores it once."""
    subject = "streamsight.bustest.late.s1"
    publishing = asyncio.ensure_future(bus.publish(subject, b"x", msg_id="late-1"))
    await asyncio.sleep(0.4)
    assert not publishing.done(), "no stream takes the subject yet: the publish is still trying"
    await bus.js.add_stream(StreamConfig(name="BUSTEST_LATE", subjects=[subject], storage=StorageType.MEMORY))
    try:
        ack = await asyncio.wait_for(publishing, 5)
        assert ack.stream == "BUSTEST_LATE" and ack.seq == 1
        assert (await bus.js.stream_info("BUSTEST_LATE")).state.messages == 1
        monkeypatch.setattr("streamsight.bus.NO_STREAM_WAIT_S", 0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(NoStreamResponseError):
            await bus.publish("streamsight.bustest.nobody.s1", b"y")
        assert 0.3 <= loop.time() - started < 3, "a subject no stream takes fails after the wait, not at once nor never"
    finally:
        await bus.js.delete_stream("BUSTEST_LATE")
