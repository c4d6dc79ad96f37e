"""The glitch service on a real nats-server with the real ingest service in-process.

The glitch service starts before each stream (MEDIA keeps messages only for consumers that
exist when they are published); ingest decodes a generated clip with a planted 1 s green
band; the Glitch events are read back from the EVENTS stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.glitch.classifier import shipped_model
from services.glitch.service import GlitchService
from services.glitch.settings import GlitchSettings
from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from streamsight import events as ce
from streamsight import subjects
from streamsight.bus import Bus
from streamsight.gen.events.v1 import events_pb2
from streamsight.gen.ingest.v1 import ingest_pb2_grpc
from streamsight.gen.media.v1 import media_pb2
from streamsight.rpc import channel

from .conftest import TEST_SEEDS, encode, held_out_scene, plant



@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    frames = plant(held_out_scene(TEST_SEEDS[1], 9.0), "green", 4.0, seed=4)
    return encode(frames, tmp_path_factory.mktemp("glitch") / "planted.mkv")



@contextlib.asynccontextmanager
async def running(nats_url: str, data_dir: Path):
    glitch = GlitchService(GlitchSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, intra_threads=2))
    ingest = IngestService(IngestSettings(nats_url=nats_url, grpc_host="127.0.0.1", grpc_port=0, data_dir=data_dir))
    async with glitch.serving(), ingest.serving(), channel(ingest.address) as ch:
        yield glitch, ingest_pb2_grpc.IngestStub(ch)


async def read_all(bus: Bus, subject: str, stream: str, settle_s: float = 3.0) -> list:
    """Every message on `subject`, after the stream has been quiet for `settle_s`."""
    sub = await bus.js.pull_subscribe(subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
    got, quiet = [], 0.0
    try:
        while quiet < settle_s:
            try:
                msgs = await sub.fetch(64, timeout=0.5)
            except Exception:  # a timeout: nothing new
                msgs = []
            quiet = 0.0 if msgs else quiet + 0.5
            for m in msgs:
                await m.ack()
            got.extend(msgs)
    finally:
        await sub.unsubscribe()
    return got


async def glitches(bus: Bus, sid: str) -> list[events_pb2.Glitch]:
    msgs = await read_all(bus, subjects.event("glitch", sid), subjects.EVENTS_STREAM)
    for m in msgs:
        assert m.headers["ce-type"] == "streamsight.glitch.v1" and m.headers["Nats-Msg-Id"] == m.headers["ce-id"]
        ce.decode(m.headers, m.data)  # a valid CloudEvent
    return [events_pb2.Glitch.FromString(m.data) for m in msgs]


@pytest.mark.slow
async def test_a_planted_green_band_gives_one_start_and_one_end(nats_server, bus, tmp_path, planted, ingest_vod) -> None:
    async with running(nats_server.url, tmp_path) as (glitch, stub):
        assert glitch.health_info()["model"] == shipped_model().name == "glitch_cnn.int8.onnx"  # the default precision's model
        assert glitch.health_info()["stripes_verifier"] == "stripes_verifier.int8.onnx"  # glitch.stripes_verifier's default
        await ingest_vod(stub, {"green": planted, "again": planted})  # two streams at once
        await asyncio.sleep(1.0)
        for sid in ("green", "again"):
            events = await glitches(bus, sid)
            phases = [e.phase for e in events]
            assert phases == [events_pb2.PHASE_START, events_pb2.PHASE_END], [(e.phase, e.kind, e.start_s) for e in events]
            start, end = events
            assert start.kind == end.kind == events_pb2.GLITCH_KIND_GREEN
            assert start.glitch_id == end.glitch_id == f"{sid}:glitch:0"
            assert 4.0 <= start.start_s <= 4.5 and 4.4 <= end.end_s <= 5.0
            assert end.thumbnail_jpeg[:2] == b"\xff\xd8" and 0 < end.severity <= 1 and end.confidence >= 0.9
        assert len(glitch.streams) == 0, "the last window dropped the streams' state"


async def test_garbage_is_dead_lettered_and_the_service_keeps_going(nats_server, bus, tmp_path) -> None:
    async with running(nats_server.url, tmp_path) as (glitch, _):
        await bus.publish(subjects.media("frames_glitch", "junk"), b"\x08\x96\x01 not a protobuf \xff\xff")
        bad = media_pb2.VideoFrame(stream_id="junk", width=64, height=64, format=media_pb2.PIXEL_FORMAT_RGB24, data=b"\x00" * 100)
        await bus.publish(subjects.media("frames_glitch", "junk"), bad)
        bad_yuv = media_pb2.VideoFrame(stream_id="junk", width=64, height=64, format=media_pb2.PIXEL_FORMAT_YUV420P, data=b"\x00" * 64 * 64 * 3)
        await bus.publish(subjects.media("frames_glitch", "junk"), bad_yuv)
        dead = await read_all(bus, subjects.deadletter("glitch"), subjects.DEADLETTER_STREAM, settle_s=2.0)
        reasons = [m.headers["streamsight-dlq-reason"] for m in dead]
        assert len(dead) == 3, reasons
        assert any("needs 12288 bytes, got 100" in r for r in reasons), reasons
        assert any("frame of 64x64 YUV420P needs 6144 bytes, got 12288" in r for r in reasons), reasons
        ok = media_pb2.VideoFrame(stream_id="junk", width=64, height=64, format=media_pb2.PIXEL_FORMAT_RGB24, pts_s=0.0, data=b"\x00" * 64 * 64 * 3)
        await bus.publish(subjects.media("frames_glitch", "junk"), ok)
        ok_yuv = media_pb2.VideoFrame(stream_id="junk", width=64, height=64, format=media_pb2.PIXEL_FORMAT_YUV420P, pts_s=0.5, sample_index=1,
                                      color_space=1, color_range=1, data=b"\x10" * 64 * 64 + b"\x80" * (64 * 64 // 2))
        await bus.publish(subjects.media("frames_glitch", "junk"), ok_yuv)
        await bus.publish(subjects.media("windows", "junk"), media_pb2.WindowRecord(stream_id="junk", index=0, end_s=1.0, last=True))
        await asyncio.sleep(2.0)
        assert len(glitch.streams) == 0, "a good frame and the last window after the garbage were handled"
        late = media_pb2.VideoFrame(stream_id="junk", width=64, height=64, format=media_pb2.PIXEL_FORMAT_RGB24, pts_s=1.5,
                                    sample_index=3, data=b"\x00" * 64 * 64 * 3)
        await bus.publish(subjects.media("frames_glitch", "junk"), late)  # redelivered after the end
        await asyncio.sleep(2.0)
        assert len(glitch.streams) == 0, "a late frame after the last record makes no detector"
        assert glitch.streams.counts.get("late") == 1
        assert len(await read_all(bus, subjects.deadletter("glitch"), subjects.DEADLETTER_STREAM, settle_s=1.0)) == 3
